/* engine/capture.c: the rule text, and install / remove / SO_ORIGINAL_DST
 * against the real iptables in a network namespace of the test's own (each
 * Criterion test runs in its own process, so the namespace dies with it). */
#include <criterion/criterion.h>

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/capture.h"

#define CAP_PORT 15001

struct fixture {
	struct em_config *cfg;
	struct em_cidr svc[4], excl[4];
	uint16_t ports[4];
	int host_ns;
	char *host_before;
};

static void add_cidr(struct em_cidr *arr, size_t *n, const char *s)
{
	cr_assert_eq(em_cidr_parse(s, &arr[*n]), 0, "parse %s", s);
	(*n)++;
}

static void fixture_init(struct fixture *f)
{
	memset(f, 0, sizeof(*f));
	f->host_ns = -1;
	f->cfg = calloc(1, sizeof(*f->cfg));
	cr_assert_not_null(f->cfg);
	f->cfg->capture.enabled = true;
	f->cfg->capture.port = CAP_PORT;
	f->cfg->capture.service_cidrs = f->svc;
	f->cfg->capture.exclude_cidrs = f->excl;
	f->cfg->capture.exclude_ports = f->ports;
}

static void fixture_v4(struct fixture *f)
{
	add_cidr(f->svc, &f->cfg->capture.n_service_cidrs, "10.96.0.0/12");
	add_cidr(f->excl, &f->cfg->capture.n_exclude_cidrs, "10.100.0.0/16");
	f->ports[f->cfg->capture.n_exclude_ports++] = 8443;
}

static const char *find_after(const char *text, const char *from, const char *needle)
{
	const char *p = strstr(from ? from : text, needle);
	cr_assert_not_null(p, "missing \"%s\" in:\n%s", needle, text);
	return p + strlen(needle);
}

static int count_lines(const char *text, const char *line)
{
	size_t n = strlen(line);
	int k = 0;
	for (const char *p = text; p && *p;) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		k += len == n && memcmp(p, line, n) == 0;
		p = nl ? nl + 1 : NULL;
	}
	return k;
}

/* ----- pure rule text -------------------------------------------------- */

Test(capture_rules, ipv4_excludes_before_redirects)
{
	struct fixture f;
	char buf[4096];
	const char *p;
	int n;

	fixture_init(&f);
	fixture_v4(&f);
	add_cidr(f.svc, &f.cfg->capture.n_service_cidrs, "fd00:10:96::/112");
	add_cidr(f.excl, &f.cfg->capture.n_exclude_cidrs, "fd00:10:96::100/120");
	f.ports[f.cfg->capture.n_exclude_ports++] = 22;

	n = em_capture_rules(f.cfg, AF_INET, buf, sizeof(buf));
	cr_assert_gt(n, 0);
	cr_assert_eq((size_t)n, strlen(buf));
	cr_assert(strncmp(buf, "*nat\n:EDGEMESH - [0:0]\n", 23) == 0, "%s", buf);
	p = find_after(buf, NULL, "\n-A EDGEMESH -d 10.100.0.0/16 -j RETURN\n");
	p = find_after(buf, p - 1, "\n-A EDGEMESH -p tcp --dport 8443 -j RETURN\n");
	p = find_after(buf, p - 1, "\n-A EDGEMESH -p tcp --dport 22 -j RETURN\n");
	p = find_after(buf, p - 1,
	               "\n-A EDGEMESH -d 10.96.0.0/12 -p tcp -j REDIRECT --to-ports 15001\n");
	find_after(buf, p - 1, "\n-I OUTPUT 1 -p tcp -j EDGEMESH\n");
	find_after(buf, p - 1, "\n-I PREROUTING 1 -p tcp -j EDGEMESH\n");
	cr_assert(strcmp(buf + n - 7, "COMMIT\n") == 0, "%s", buf);
	cr_assert_null(strstr(buf, "fd00"), "IPv6 CIDR in the IPv4 rules:\n%s", buf);
	cr_assert_eq(count_lines(buf, "-I OUTPUT 1 -p tcp -j EDGEMESH"), 1);
	cr_assert_eq(count_lines(buf, "-I PREROUTING 1 -p tcp -j EDGEMESH"), 1);
	free(f.cfg);
}

Test(capture_rules, ipv6_only_its_family)
{
	struct fixture f;
	char buf[4096];
	const char *p;
	int n;

	fixture_init(&f);
	fixture_v4(&f);
	add_cidr(f.svc, &f.cfg->capture.n_service_cidrs, "fd00:10:96::/112");
	add_cidr(f.excl, &f.cfg->capture.n_exclude_cidrs, "fd00:10:96::100/120");

	n = em_capture_rules(f.cfg, AF_INET6, buf, sizeof(buf));
	cr_assert_gt(n, 0);
	p = find_after(buf, NULL, "\n-A EDGEMESH -d fd00:10:96::100/120 -j RETURN\n");
	p = find_after(buf, p - 1, "\n-A EDGEMESH -p tcp --dport 8443 -j RETURN\n");
	find_after(buf, p - 1,
	           "\n-A EDGEMESH -d fd00:10:96::/112 -p tcp -j REDIRECT --to-ports 15001\n");
	cr_assert_null(strstr(buf, "10.96.0.0"), "IPv4 CIDR in the IPv6 rules:\n%s", buf);
	cr_assert_null(strstr(buf, "10.100.0.0"), "IPv4 CIDR in the IPv6 rules:\n%s", buf);
	free(f.cfg);
}

/* The mark of the daemon's own dials is returned before any other rule, in
 * both families; without a mark there is no such rule. */
Test(capture_rules, own_mark_returns_first)
{
	struct fixture f;
	char buf[4096];
	int fams[2] = {AF_INET, AF_INET6};

	fixture_init(&f);
	fixture_v4(&f);
	add_cidr(f.svc, &f.cfg->capture.n_service_cidrs, "fd00:10:96::/112");
	f.cfg->capture.mark = 0x1e4d;
	for (int i = 0; i < 2; i++) {
		cr_assert_gt(em_capture_rules(f.cfg, fams[i], buf, sizeof(buf)), 0);
		static const char head[] = "*nat\n:EDGEMESH - [0:0]\n"
		                           "-A EDGEMESH -m mark --mark 0x1e4d -j RETURN\n"
		                           "-A EDGEMESH ";
		cr_assert(strncmp(buf, head, sizeof(head) - 1) == 0, "%s", buf);
		cr_assert_eq(count_lines(buf, "-A EDGEMESH -m mark --mark 0x1e4d -j RETURN"), 1);
	}
	f.cfg->capture.mark = 0;
	cr_assert_gt(em_capture_rules(f.cfg, AF_INET, buf, sizeof(buf)), 0);
	cr_assert_null(strstr(buf, "mark"), "%s", buf);
	free(f.cfg);
}

Test(capture_rules, family_without_cidrs_is_empty)
{
	struct fixture f;
	char buf[256];

	fixture_init(&f);
	fixture_v4(&f);
	memset(buf, 'x', sizeof(buf));
	cr_assert_eq(em_capture_rules(f.cfg, AF_INET6, buf, sizeof(buf)), 0);
	cr_assert_eq(buf[0], 0);
	free(f.cfg);
}

Test(capture_rules, bad_input_and_every_short_buffer)
{
	struct fixture f;
	char full[4096], buf[4096];
	int n;

	fixture_init(&f);
	fixture_v4(&f);
	cr_assert_eq(em_capture_rules(f.cfg, AF_UNIX, buf, sizeof(buf)), -EINVAL);
	n = em_capture_rules(f.cfg, AF_INET, full, sizeof(full));
	cr_assert_gt(n, 0);
	/* Every buffer too short by even one byte (the NUL) is refused whole. */
	for (int len = 1; len <= n; len++)
		cr_assert_eq(em_capture_rules(f.cfg, AF_INET, buf, (size_t)len), -ENOSPC, "len %d",
		             len);
	cr_assert_eq(em_capture_rules(f.cfg, AF_INET, buf, (size_t)n + 1), n);
	cr_assert_str_eq(buf, full);
	f.cfg->capture.port = 0;
	cr_assert_eq(em_capture_rules(f.cfg, AF_INET, buf, sizeof(buf)), -EINVAL);
	free(f.cfg);
}

static char *run_capture(const char *cmd)
{
	FILE *p = popen(cmd, "r");
	char *out = NULL;
	size_t cap = 0, len = 0, n;

	cr_assert_not_null(p, "popen %s", cmd);
	do {
		if (cap - len < 4096) {
			cap = cap ? cap * 2 : 8192;
			out = realloc(out, cap);
			cr_assert_not_null(out);
		}
		n = fread(out + len, 1, cap - len - 1, p);
		len += n;
	} while (n > 0);
	out[len] = 0;
	pclose(p);
	return out;
}

/* ----- the tool protocol, with stand-in tools on PATH --------------------- */

struct fake_tools {
	char dir[64];
};

static void write_script(const struct fake_tools *t, const char *name, const char *body)
{
	char path[128];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", t->dir, name);
	fp = fopen(path, "w");
	cr_assert_not_null(fp);
	fprintf(fp, "#!/bin/sh\n%s\n", body);
	fclose(fp);
	cr_assert_eq(chmod(path, 0755), 0);
}

static char *read_text(const struct fake_tools *t, const char *name)
{
	char cmd[160];
	snprintf(cmd, sizeof(cmd), "/bin/cat %s/%s 2>/dev/null", t->dir, name);
	return run_capture(cmd);
}

/* iptables-save reports three OUTPUT jumps (the last line has no newline)
 * and a too-long line that must not count; ip6tables-save reports nothing.
 * iptables-restore records its input after a pause, so the caller has to
 * wait for a reader without blocking. */
static void fake_tools_init(struct fake_tools *t, const char *restore_body)
{
	char body[512];

	snprintf(t->dir, sizeof(t->dir), "/tmp/em-capture-XXXXXX");
	cr_assert_not_null(mkdtemp(t->dir));
	write_script(t, "iptables-save",
	             "printf '*nat\\n:EDGEMESH - [0:0]\\n'\n"
	             "printf -- '-A OUTPUT -p tcp -j EDGEMESH\\n-A OUTPUT -p tcp -j EDGEMESH\\n'\n"
	             "printf -- '-A OUTPUT -p tcp -j EDGEMESH%0600d\\n' 0\n"
	             "printf -- '-A OUTPUT -p tcp -j EDGEMESH'");
	write_script(t, "ip6tables-save", "exit 0");
	snprintf(body, sizeof(body), restore_body, t->dir, t->dir);
	write_script(t, "iptables-restore", body);
	write_script(t, "ip6tables-restore", "exit 3");
	cr_assert_eq(setenv("PATH", t->dir, 1), 0);
}

static void fake_tools_fini(struct fake_tools *t)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "/bin/rm -rf %s", t->dir);
	cr_assert_eq(system(cmd), 0);
}

Test(capture_tools, install_counts_existing_jumps_and_feeds_large_input, .timeout = 30)
{
	struct fixture f;
	struct fake_tools t;
	uint16_t many[3000];
	char *in, *args, line[64];

	fixture_init(&f);
	fixture_v4(&f);
	for (size_t i = 0; i < EM_ARRAY_SIZE(many); i++)
		many[i] = (uint16_t)(20000 + i);
	f.cfg->capture.exclude_ports = many;
	f.cfg->capture.n_exclude_ports = EM_ARRAY_SIZE(many);
	fake_tools_init(&t, "/bin/sleep 0.2; /bin/cat > %s/restore.in; echo \"$@\" > %s/args");

	cr_assert_eq(em_capture_install(f.cfg), 0);
	in = read_text(&t, "restore.in");
	args = read_text(&t, "args");
	cr_assert_str_eq(args, "-w 5 --noflush\n");
	/* Three jumps found: two deleted, none inserted; none in PREROUTING. */
	cr_assert_eq(count_lines(in, "-D OUTPUT -p tcp -j EDGEMESH"), 2, "%s", in);
	cr_assert_null(strstr(in, "-I OUTPUT"));
	cr_assert_eq(count_lines(in, "-I PREROUTING 1 -p tcp -j EDGEMESH"), 1);
	for (size_t i = 0; i < EM_ARRAY_SIZE(many); i++) {
		snprintf(line, sizeof(line), "-A EDGEMESH -p tcp --dport %u -j RETURN", many[i]);
		cr_assert_eq(count_lines(in, line), 1, "%s", line);
	}
	cr_assert(strlen(in) > 120000 && strcmp(in + strlen(in) - 7, "COMMIT\n") == 0);
	free(in);
	free(args);
	fake_tools_fini(&t);
	free(f.cfg);
}

Test(capture_tools, failing_restore_is_an_error, .timeout = 30)
{
	struct fixture f;
	struct fake_tools t;

	fixture_init(&f);
	fixture_v4(&f);
	fake_tools_init(&t, "echo \"iptables-restore: line 3 failed (%s %s)\" >&2; exit 2");
	cr_assert_eq(em_capture_install(f.cfg), -EIO);
	cr_assert_eq(em_capture_remove(f.cfg), -EIO);
	/* ip6tables-restore fails too, but nothing is installed in IPv6. */
	fake_tools_fini(&t);
	free(f.cfg);
}

Test(capture_tools, tool_that_ignores_stdin, .timeout = 30)
{
	struct fixture f;
	struct fake_tools t;
	uint16_t many[5000];

	fixture_init(&f);
	fixture_v4(&f);
	for (size_t i = 0; i < EM_ARRAY_SIZE(many); i++)
		many[i] = (uint16_t)(1 + i);
	f.cfg->capture.exclude_ports = many;
	f.cfg->capture.n_exclude_ports = EM_ARRAY_SIZE(many);
	/* Exits without reading more than the pipe holds: no SIGPIPE death. */
	fake_tools_init(&t, "exit 0 # %s %s");
	cr_assert_eq(em_capture_install(f.cfg), 0);
	fake_tools_fini(&t);
	free(f.cfg);
}

/* ----- in a network namespace ------------------------------------------ */

/* Chain counters change with traffic, the comment lines with the clock. */
static char *ruleset_snapshot(void)
{
	return run_capture("{ iptables-save; ip6tables-save; } 2>/dev/null | grep -v '^#' | "
	                   "sed -E 's/ \\[[0-9]+:[0-9]+\\]$//'");
}

static void sh(const char *cmd)
{
	cr_assert_eq(system(cmd), 0, "command failed: %s", cmd);
}

static void enter_netns(struct fixture *f)
{
	if (geteuid() != 0)
		cr_skip_test("needs root for network namespaces and iptables");
	f->host_before = ruleset_snapshot();
	f->host_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	cr_assert_geq(f->host_ns, 0);
	cr_assert_eq(unshare(CLONE_NEWNET), 0, "unshare: %s", strerror(errno));
	sh("ip link set lo up");
}

/* Back in the host's namespace, nothing of ours may be there. */
static void leave_netns(struct fixture *f)
{
	char *after;

	cr_assert_eq(setns(f->host_ns, CLONE_NEWNET), 0, "setns: %s", strerror(errno));
	close(f->host_ns);
	after = ruleset_snapshot();
	cr_assert_str_eq(after, f->host_before, "host ruleset changed");
	free(after);
	free(f->host_before);
	free(f->cfg);
}

static int listen_on(const char *ap)
{
	struct em_addr a;
	struct sockaddr_storage ss;
	socklen_t sl;
	int fd, one = 1;

	cr_assert_eq(em_addr_parse(ap, true, &a), 0, "%s", ap);
	sl = em_addr_to_sockaddr(&a, &ss);
	fd = socket(a.family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	cr_assert_eq(bind(fd, (struct sockaddr *)&ss, sl), 0, "bind %s: %s", ap, strerror(errno));
	cr_assert_eq(listen(fd, 16), 0);
	return fd;
}

/* SO_MARK that connect_to puts on its sockets; 0: none. */
static uint32_t connect_mark;

/* Connects within 2 s; returns the socket or -errno. */
static int connect_to(const char *ap)
{
	struct em_addr a;
	struct sockaddr_storage ss;
	struct pollfd pfd;
	socklen_t sl, el = sizeof(int);
	int fd, err = 0;

	cr_assert_eq(em_addr_parse(ap, true, &a), 0, "%s", ap);
	sl = em_addr_to_sockaddr(&a, &ss);
	fd = socket(a.family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	cr_assert_geq(fd, 0);
	if (connect_mark)
		cr_assert_eq(
		        setsockopt(fd, SOL_SOCKET, SO_MARK, &connect_mark, sizeof(connect_mark)), 0,
		        "SO_MARK: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&ss, sl) == -1) {
		if (errno != EINPROGRESS) {
			err = -errno;
			goto fail;
		}
		pfd = (struct pollfd){.fd = fd, .events = POLLOUT};
		if (poll(&pfd, 1, 2000) != 1) {
			err = -ETIMEDOUT;
			goto fail;
		}
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
		if (err) {
			err = -err;
			goto fail;
		}
	}
	return fd;
fail:
	close(fd);
	return err;
}

/* Accepts within <ms>; returns the socket or -ETIMEDOUT. */
static int accept_within(int lfd, int ms)
{
	struct pollfd pfd = {.fd = lfd, .events = POLLIN};
	int fd;

	if (poll(&pfd, 1, ms) != 1)
		return -ETIMEDOUT;
	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	cr_assert_geq(fd, 0, "accept: %s", strerror(errno));
	return fd;
}

static void expect_original_dst(int fd, int family, const char *want)
{
	struct em_addr got, exp;
	char gs[EM_ADDR_STRLEN];

	cr_assert_eq(em_addr_parse(want, true, &exp), 0);
	cr_assert_eq(em_capture_original_dst(fd, family, &got), 0, "original dst");
	cr_assert(em_addr_eq(&got, &exp), "original dst %s, want %s",
	          em_addr_format(&got, true, gs, sizeof(gs)), want);
}

/* A connection to <dst> lands on <want_l> and not on <other_l>. */
static int expect_lands(const char *dst, int want_l, int other_l)
{
	int c = connect_to(dst), s;

	cr_assert_geq(c, 0, "connect %s: %s", dst, strerror(-c));
	s = accept_within(want_l, 2000);
	cr_assert_geq(s, 0, "connection to %s did not arrive where expected", dst);
	cr_assert_eq(accept_within(other_l, 100), -ETIMEDOUT,
	             "connection to %s also arrived on the other listener", dst);
	close(c);
	return s;
}

static char *nat_save(int family)
{
	return run_capture(family == AF_INET6 ? "ip6tables-save -t nat 2>&1"
	                                      : "iptables-save -t nat 2>&1");
}

Test(capture_ns, redirects_service_cidr_and_spares_excludes, .timeout = 30)
{
	struct fixture f;
	int cap, direct80, direct8443, s;

	fixture_init(&f);
	fixture_v4(&f);
	enter_netns(&f);
	sh("ip route add local 10.96.0.0/12 dev lo");
	cap = listen_on("127.0.0.1:15001");
	direct80 = listen_on("0.0.0.0:80");
	direct8443 = listen_on("0.0.0.0:8443");

	/* Control: without the rules the cluster IP is just a local address. */
	close(expect_lands("10.96.0.10:80", direct80, cap));

	cr_assert_eq(em_capture_install(f.cfg), 0);
	s = expect_lands("10.96.0.10:80", cap, direct80);
	expect_original_dst(s, AF_INET, "10.96.0.10:80");
	expect_original_dst(s, 0, "10.96.0.10:80");
	close(s);
	s = expect_lands("10.111.255.254:5432", cap, direct80);
	expect_original_dst(s, AF_INET, "10.111.255.254:5432");
	close(s);

	/* Excluded port and excluded CIDR go straight to the real address. */
	close(expect_lands("10.96.0.10:8443", direct8443, cap));
	close(expect_lands("10.100.0.5:80", direct80, cap));

	cr_assert_eq(em_capture_remove(f.cfg), 0);
	close(expect_lands("10.96.0.10:80", direct80, cap));
	close(cap);
	close(direct80);
	close(direct8443);
	leave_netns(&f);
}

/* A socket carrying capture.mark (as the daemon's own dials do) reaches the
 * real address even inside a service CIDR; one with another mark is still
 * captured. em_capture_installed follows install and remove. */
Test(capture_ns, own_mark_is_not_captured, .timeout = 30)
{
	struct fixture f;
	int cap, direct80;

	fixture_init(&f);
	fixture_v4(&f);
	f.cfg->capture.mark = 0x1e4d;
	enter_netns(&f);
	sh("ip route add local 10.96.0.0/12 dev lo");
	cap = listen_on("127.0.0.1:15001");
	direct80 = listen_on("0.0.0.0:80");

	cr_assert_eq(em_capture_installed(f.cfg), 0);
	cr_assert_eq(em_capture_install(f.cfg), 0);
	cr_assert_eq(em_capture_installed(f.cfg), 1);
	connect_mark = 0x1e4d;
	close(expect_lands("10.96.0.10:80", direct80, cap));
	connect_mark = 0x1e4e;
	close(expect_lands("10.96.0.10:80", cap, direct80));
	connect_mark = 0;
	close(expect_lands("10.96.0.10:80", cap, direct80));

	cr_assert_eq(em_capture_remove(f.cfg), 0);
	cr_assert_eq(em_capture_installed(f.cfg), 0);
	close(cap);
	close(direct80);
	leave_netns(&f);
}

Test(capture_ns, install_is_idempotent_and_replaces_stale_rules, .timeout = 30)
{
	struct fixture f;
	char *save;

	fixture_init(&f);
	fixture_v4(&f);
	enter_netns(&f);

	cr_assert_eq(em_capture_install(f.cfg), 0);
	cr_assert_eq(em_capture_install(f.cfg), 0);
	save = nat_save(AF_INET);
	cr_assert_eq(count_lines(save, "-A OUTPUT -p tcp -j EDGEMESH"), 1, "%s", save);
	cr_assert_eq(count_lines(save, "-A PREROUTING -p tcp -j EDGEMESH"), 1, "%s", save);
	cr_assert_eq(count_lines(save, "-A EDGEMESH -d 10.96.0.0/12 -p tcp -j REDIRECT "
	                               "--to-ports 15001"),
	             1, "%s", save);
	free(save);

	/* What a crash between two runs can leave: duplicated jumps and a
	 * chain with rules of another config. Rules of other chains stay. */
	sh("iptables -t nat -A OUTPUT -p tcp -j EDGEMESH");
	sh("iptables -t nat -I PREROUTING -p tcp -j EDGEMESH");
	sh("iptables -t nat -A EDGEMESH -d 192.0.2.0/24 -p tcp -j REDIRECT --to-ports 1");
	sh("iptables -t nat -N OTHER && iptables -t nat -A OTHER -d 198.51.100.1 -j RETURN");
	f.cfg->capture.port = 15002;
	cr_assert_eq(em_capture_install(f.cfg), 0);
	save = nat_save(AF_INET);
	cr_assert_eq(count_lines(save, "-A OUTPUT -p tcp -j EDGEMESH"), 1, "%s", save);
	cr_assert_eq(count_lines(save, "-A PREROUTING -p tcp -j EDGEMESH"), 1, "%s", save);
	cr_assert_null(strstr(save, "192.0.2.0"), "stale rule kept:\n%s", save);
	cr_assert_null(strstr(save, "--to-ports 15001"), "old port kept:\n%s", save);
	cr_assert_eq(count_lines(save, "-A EDGEMESH -d 10.96.0.0/12 -p tcp -j REDIRECT "
	                               "--to-ports 15002"),
	             1, "%s", save);
	cr_assert_eq(count_lines(save, "-A OTHER -d 198.51.100.1/32 -j RETURN"), 1, "%s", save);
	free(save);

	cr_assert_eq(em_capture_remove(f.cfg), 0);
	save = nat_save(AF_INET);
	cr_assert_null(strstr(save, "EDGEMESH"), "left after remove:\n%s", save);
	cr_assert_eq(count_lines(save, "-A OTHER -d 198.51.100.1/32 -j RETURN"), 1, "%s", save);
	free(save);
	/* Removing what is not there is fine. */
	cr_assert_eq(em_capture_remove(f.cfg), 0);
	cr_assert_eq(em_capture_remove(NULL), 0);
	leave_netns(&f);
}

Test(capture_ns, disabled_touches_nothing, .timeout = 30)
{
	struct fixture f;
	char *save;

	fixture_init(&f);
	fixture_v4(&f);
	enter_netns(&f);
	f.cfg->capture.enabled = false;
	cr_assert_eq(em_capture_install(f.cfg), 0);
	save = nat_save(AF_INET);
	cr_assert_null(strstr(save, "EDGEMESH"), "%s", save);
	free(save);
	f.cfg->capture.enabled = true;
	f.cfg->capture.n_service_cidrs = 0;
	cr_assert_eq(em_capture_install(f.cfg), -EINVAL);
	leave_netns(&f);
}

static void need_ip6_nat(void)
{
	if (system("ip6tables -t nat -S >/dev/null 2>&1") != 0)
		cr_skip_test("ip6tables nat does not work here");
}

Test(capture_ns, ipv6_redirect_and_remove, .timeout = 30)
{
	struct fixture f;
	int cap, direct, s;
	char *save;

	fixture_init(&f);
	fixture_v4(&f);
	add_cidr(f.svc, &f.cfg->capture.n_service_cidrs, "fd00:10:96::/112");
	add_cidr(f.excl, &f.cfg->capture.n_exclude_cidrs, "fd00:10:96::100/120");
	enter_netns(&f);
	need_ip6_nat();
	sh("ip -6 route add local fd00:10:96::/112 dev lo");
	cap = listen_on("[::1]:15001");
	direct = listen_on("[::]:80");

	cr_assert_eq(em_capture_install(f.cfg), 0);
	cr_assert_eq(em_capture_install(f.cfg), 0);
	save = nat_save(AF_INET6);
	cr_assert_eq(count_lines(save, "-A OUTPUT -p tcp -j EDGEMESH"), 1, "%s", save);
	cr_assert_eq(count_lines(save, "-A PREROUTING -p tcp -j EDGEMESH"), 1, "%s", save);
	free(save);

	s = expect_lands("[fd00:10:96::10]:80", cap, direct);
	expect_original_dst(s, AF_INET6, "[fd00:10:96::10]:80");
	expect_original_dst(s, 0, "[fd00:10:96::10]:80");
	close(s);
	close(expect_lands("[fd00:10:96::105]:80", direct, cap));

	cr_assert_eq(em_capture_remove(f.cfg), 0);
	save = nat_save(AF_INET6);
	cr_assert_null(strstr(save, "EDGEMESH"), "left after remove:\n%s", save);
	free(save);
	save = nat_save(AF_INET);
	cr_assert_null(strstr(save, "EDGEMESH"), "left after remove:\n%s", save);
	free(save);
	close(cap);
	close(direct);
	leave_netns(&f);
}

Test(capture_ns, ipv4_only_config_cleans_stale_ipv6, .timeout = 30)
{
	struct fixture f;
	char *save;

	fixture_init(&f);
	fixture_v4(&f);
	add_cidr(f.svc, &f.cfg->capture.n_service_cidrs, "fd00:10:96::/112");
	enter_netns(&f);
	need_ip6_nat();
	cr_assert_eq(em_capture_install(f.cfg), 0);
	/* The next run has no IPv6 CIDR any more. */
	f.cfg->capture.n_service_cidrs = 1;
	cr_assert_eq(em_capture_install(f.cfg), 0);
	save = nat_save(AF_INET6);
	cr_assert_null(strstr(save, "EDGEMESH"), "stale IPv6 rules kept:\n%s", save);
	free(save);
	save = nat_save(AF_INET);
	cr_assert_eq(count_lines(save, "-A OUTPUT -p tcp -j EDGEMESH"), 1, "%s", save);
	free(save);
	cr_assert_eq(em_capture_remove(f.cfg), 0);
	leave_netns(&f);
}

Test(capture_dst, other_family_refused)
{
	struct em_addr a;
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	cr_assert_geq(fd, 0);
	cr_assert_eq(em_capture_original_dst(fd, 0, &a), -EAFNOSUPPORT);
	cr_assert_eq(em_capture_original_dst(fd, AF_UNIX, &a), -EAFNOSUPPORT);
	close(fd);
}

#include "engine/capture.h"

#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proto/clock.h"
#include "proto/log.h"

#define MOD "capture"

#define JUMP_RULE "-p tcp -j " EM_CAPTURE_CHAIN

/* Room for the tool's complaint in the log; the rest is dropped. */
#define STDERR_KEEP 1024
/* iptables-save lines we look for are short; longer ones are skipped. */
#define LINE_MAX_LEN 512

extern char **environ;

typedef void (*line_fn)(void *arg, const char *line, size_t len);

/* ----- rule text ------------------------------------------------------- */

struct text {
	char *buf;
	size_t len;
	size_t off;
	bool overflow;
};

__attribute__((format(printf, 2, 3))) static void text_add(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (t->overflow)
		return;
	va_start(ap, fmt);
	n = vsnprintf(t->buf + t->off, t->len - t->off, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= t->len - t->off) {
		t->overflow = true;
		return;
	}
	t->off += (size_t)n;
}

static size_t count_family(const struct em_cidr *c, size_t n, int family)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		k += c[i].addr.family == family;
	return k;
}

static void text_cidr(struct text *t, const struct em_cidr *c)
{
	char ip[EM_ADDR_STRLEN];
	text_add(t, "%s/%u", em_addr_format(&c->addr, false, ip, sizeof(ip)), c->prefix);
}

/* <have_out> / <have_pre>: jumps already in OUTPUT / PREROUTING. One is kept
 * where present (deleting and re-inserting it would only move it), surplus
 * copies from crashed runs are deleted, a missing one is inserted first. */
static int rules_text(const struct em_config *cfg, int family, unsigned have_out, unsigned have_pre,
                      char *buf, size_t len)
{
	const struct em_cidr *c;
	struct text t = {buf, len, 0, false};
	static const char *const hooks[2] = {"OUTPUT", "PREROUTING"};
	unsigned have[2] = {have_out, have_pre};

	if ((family != AF_INET && family != AF_INET6) || cfg->capture.port == 0)
		return -EINVAL;
	if (len == 0)
		return -ENOSPC;
	buf[0] = 0;
	if (count_family(cfg->capture.service_cidrs, cfg->capture.n_service_cidrs, family) == 0)
		return 0;

	text_add(&t, "*nat\n:%s - [0:0]\n", EM_CAPTURE_CHAIN);
	/* First: our own dials (engine/worker.h em_sock_mark) are never
	 * captured, whatever address an endpoint or node was given. */
	if (cfg->capture.mark)
		text_add(&t, "-A %s -m mark --mark 0x%" PRIx32 " -j RETURN\n", EM_CAPTURE_CHAIN,
		         cfg->capture.mark);
	for (size_t i = 0; i < cfg->capture.n_exclude_cidrs; i++) {
		c = &cfg->capture.exclude_cidrs[i];
		if (c->addr.family != family)
			continue;
		text_add(&t, "-A %s -d ", EM_CAPTURE_CHAIN);
		text_cidr(&t, c);
		text_add(&t, " -j RETURN\n");
	}
	for (size_t i = 0; i < cfg->capture.n_exclude_ports; i++)
		text_add(&t, "-A %s -p tcp --dport %u -j RETURN\n", EM_CAPTURE_CHAIN,
		         cfg->capture.exclude_ports[i]);
	for (size_t i = 0; i < cfg->capture.n_service_cidrs; i++) {
		c = &cfg->capture.service_cidrs[i];
		if (c->addr.family != family)
			continue;
		text_add(&t, "-A %s -d ", EM_CAPTURE_CHAIN);
		text_cidr(&t, c);
		text_add(&t, " -p tcp -j REDIRECT --to-ports %u\n", cfg->capture.port);
	}
	for (int h = 0; h < 2; h++) {
		if (have[h] == 0)
			text_add(&t, "-I %s 1 %s\n", hooks[h], JUMP_RULE);
		for (unsigned k = 1; k < have[h]; k++)
			text_add(&t, "-D %s %s\n", hooks[h], JUMP_RULE);
	}
	text_add(&t, "COMMIT\n");
	if (t.overflow) {
		buf[0] = 0;
		return -ENOSPC;
	}
	return (int)t.off;
}

int em_capture_rules(const struct em_config *cfg, int family, char *buf, size_t len)
{
	return rules_text(cfg, family, 0, 0, buf, len);
}

/* ----- running the tools ----------------------------------------------- */

struct line_reader {
	char buf[LINE_MAX_LEN];
	size_t len;
	bool skipping; /* inside a line longer than buf */
	line_fn fn;
	void *arg;
};

static void reader_feed(struct line_reader *r, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\n') {
			if (!r->skipping && r->fn)
				r->fn(r->arg, r->buf, r->len);
			r->len = 0;
			r->skipping = false;
		} else if (r->len < sizeof(r->buf) - 1) {
			r->buf[r->len++] = p[i];
			r->buf[r->len] = 0;
		} else {
			r->skipping = true;
		}
	}
}

static int spawn_tool(const char *tool, char *const argv[], posix_spawn_file_actions_t *fa,
                      posix_spawnattr_t *at, pid_t *pid)
{
	static const char *const dirs[] = {"/usr/sbin/", "/sbin/"};
	char path[PATH_MAX];
	int rc;

	rc = posix_spawnp(pid, tool, fa, at, argv, environ);
	/* A daemon started with a PATH lacking sbin still finds the tools. */
	for (size_t i = 0; rc == ENOENT && i < EM_ARRAY_SIZE(dirs); i++) {
		snprintf(path, sizeof(path), "%s%s", dirs[i], tool);
		rc = posix_spawn(pid, path, fa, at, argv, environ);
	}
	return -rc;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* Runs argv[0] with <in> on its stdin, handing each stdout line to <fn>.
 * Returns the exit status (0..255; 128+signal when killed by one), or -errno
 * (-ETIMEDOUT once EM_CAPTURE_TIMEOUT_MS has passed: the child is killed).
 * A non-zero status is logged with the tool's stderr unless <quiet>. */
static int run_tool(char *const argv[], const char *in, size_t inlen, line_fn fn, void *arg,
                    bool quiet)
{
	int p_in[2] = {-1, -1}, p_out[2] = {-1, -1}, p_err[2] = {-1, -1};
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, block, old, pending;
	struct line_reader *rd = NULL;
	char errbuf[STDERR_KEEP];
	size_t errlen = 0, inoff = 0;
	uint64_t deadline = em_now_ms() + EM_CAPTURE_TIMEOUT_MS;
	pid_t pid = -1;
	int rc, status = 0;
	bool have_fa = false, have_at = false, pipe_was_pending;

	/* A tool that exits before reading its stdin must not kill us with
	 * SIGPIPE; blocking it in this thread only keeps the process's
	 * disposition (which the daemon owns) untouched. */
	sigemptyset(&block);
	sigaddset(&block, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	sigpending(&pending);
	pipe_was_pending = sigismember(&pending, SIGPIPE);

	rd = calloc(1, sizeof(*rd));
	if (!rd) {
		rc = -ENOMEM;
		goto out;
	}
	rd->fn = fn;
	rd->arg = arg;

	if (pipe2(p_in, O_CLOEXEC) == -1 || pipe2(p_out, O_CLOEXEC) == -1 ||
	    pipe2(p_err, O_CLOEXEC) == -1) {
		rc = -errno;
		EM_ERR(MOD, "pipe for %s: %s", argv[0], strerror(-rc));
		goto out;
	}
	if ((rc = posix_spawn_file_actions_init(&fa))) {
		rc = -rc;
		goto out;
	}
	have_fa = true;
	if ((rc = posix_spawnattr_init(&at))) {
		rc = -rc;
		goto out;
	}
	have_at = true;
	/* dup2 clears O_CLOEXEC on the copies; the originals close at exec. */
	posix_spawn_file_actions_adddup2(&fa, p_in[0], STDIN_FILENO);
	posix_spawn_file_actions_adddup2(&fa, p_out[1], STDOUT_FILENO);
	posix_spawn_file_actions_adddup2(&fa, p_err[1], STDERR_FILENO);
	/* The child must not inherit our blocked SIGPIPE or an ignored one. */
	sigemptyset(&none);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &block);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

	rc = spawn_tool(argv[0], argv, &fa, &at, &pid);
	if (rc) {
		pid = -1;
		EM_ERR(MOD, "cannot run %s: %s", argv[0], strerror(-rc));
		goto out;
	}
	close_fd(&p_in[0]);
	close_fd(&p_out[1]);
	close_fd(&p_err[1]);
	if (inlen == 0)
		close_fd(&p_in[1]);
	else if (fcntl(p_in[1], F_SETFL, O_NONBLOCK) == -1) {
		rc = -errno;
		goto out;
	}

	while (p_in[1] >= 0 || p_out[0] >= 0 || p_err[0] >= 0) {
		struct pollfd pfd[3] = {
		        {.fd = p_in[1], .events = POLLOUT},
		        {.fd = p_out[0], .events = POLLIN},
		        {.fd = p_err[0], .events = POLLIN},
		};
		char chunk[4096];
		uint64_t now = em_now_ms();
		ssize_t n;

		if (now >= deadline) {
			rc = -ETIMEDOUT;
			EM_ERR(MOD, "%s did not finish within %u ms, killed", argv[0],
			       EM_CAPTURE_TIMEOUT_MS);
			goto out;
		}
		n = poll(pfd, 3, (int)(deadline - now));
		if (n == -1 && errno != EINTR) {
			rc = -errno;
			goto out;
		}
		if (n <= 0)
			continue;
		if (pfd[0].revents) {
			n = write(p_in[1], in + inoff, inlen - inoff);
			if (n > 0)
				inoff += (size_t)n;
			/* EPIPE: the tool is gone; its status says why. */
			if ((n == -1 && errno != EAGAIN && errno != EINTR) || inoff == inlen)
				close_fd(&p_in[1]);
		}
		if (pfd[1].revents) {
			n = read(p_out[0], chunk, sizeof(chunk));
			if (n > 0)
				reader_feed(rd, chunk, (size_t)n);
			else if (n == 0 || (errno != EAGAIN && errno != EINTR))
				close_fd(&p_out[0]);
		}
		if (pfd[2].revents) {
			n = read(p_err[0], chunk, sizeof(chunk));
			if (n > 0) {
				size_t keep = EM_MIN((size_t)n, sizeof(errbuf) - 1 - errlen);
				memcpy(errbuf + errlen, chunk, keep);
				errlen += keep;
			} else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
				close_fd(&p_err[0]);
			}
		}
	}
	/* All pipes closed: the tool has exited or is about to. */
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		if (w == -1 && errno != EINTR) {
			rc = -errno;
			pid = -1;
			goto out;
		}
		if (em_now_ms() >= deadline) {
			rc = -ETIMEDOUT;
			EM_ERR(MOD, "%s did not exit within %u ms, killed", argv[0],
			       EM_CAPTURE_TIMEOUT_MS);
			goto out;
		}
		nanosleep(&(struct timespec){0, 1000000}, NULL);
	}
	pid = -1;
	if (rd->len && !rd->skipping && fn)
		fn(arg, rd->buf, rd->len); /* last line without a newline */
	rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	if (rc != 0 && !quiet) {
		errbuf[errlen] = 0;
		while (errlen && (errbuf[errlen - 1] == '\n' || errbuf[errlen - 1] == ' '))
			errbuf[--errlen] = 0;
		EM_ERR(MOD, "%s failed (status %d): %s", argv[0], rc,
		       errlen ? errbuf : "no message");
	}

out:
	if (pid > 0) {
		kill(pid, SIGKILL);
		while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
			;
	}
	close_fd(&p_in[0]);
	close_fd(&p_in[1]);
	close_fd(&p_out[0]);
	close_fd(&p_out[1]);
	close_fd(&p_err[0]);
	close_fd(&p_err[1]);
	if (have_fa)
		posix_spawn_file_actions_destroy(&fa);
	if (have_at)
		posix_spawnattr_destroy(&at);
	free(rd);
	if (!pipe_was_pending) {
		sigpending(&pending);
		if (sigismember(&pending, SIGPIPE))
			sigtimedwait(&block, NULL, &(struct timespec){0, 0});
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}

/* ----- install / remove ------------------------------------------------ */

struct nat_state {
	bool chain;
	unsigned jumps[2]; /* OUTPUT, PREROUTING */
};

static void state_line(void *arg, const char *line, size_t len)
{
	struct nat_state *st = arg;
	struct em_slice l = {line, len};

	if (em_slice_eq(l, "-A OUTPUT " JUMP_RULE))
		st->jumps[0]++;
	else if (em_slice_eq(l, "-A PREROUTING " JUMP_RULE))
		st->jumps[1]++;
	else if (len > sizeof(":" EM_CAPTURE_CHAIN) &&
	         memcmp(line, ":" EM_CAPTURE_CHAIN " ", sizeof(":" EM_CAPTURE_CHAIN)) == 0)
		st->chain = true;
}

static const char *tool_name(int family, bool restore)
{
	if (family == AF_INET6)
		return restore ? "ip6tables-restore" : "ip6tables-save";
	return restore ? "iptables-restore" : "iptables-save";
}

static int read_state(int family, struct nat_state *st, bool quiet)
{
	char *argv[] = {(char *)tool_name(family, false), "-t", "nat", NULL};
	int rc;

	memset(st, 0, sizeof(*st));
	rc = run_tool(argv, NULL, 0, state_line, st, quiet);
	return rc > 0 ? -EIO : rc;
}

static int restore(int family, const char *text, size_t len, bool quiet)
{
	/* --noflush: only the chains named in <text> change. -w: wait for the
	 * xtables lock a concurrent iptables user (kubelet, docker) may hold. */
	char *argv[] = {(char *)tool_name(family, true), "-w", "5", "--noflush", NULL};
	int rc = run_tool(argv, text, len, NULL, NULL, quiet);
	return rc > 0 ? -EIO : rc;
}

/* The text grows from RULES_MIN until it fits; RULES_MAX (tens of thousands
 * of CIDRs and ports) refuses a config rather than truncating it. */
#define RULES_MIN (16 * 1024)
#define RULES_MAX (4 * 1024 * 1024)

static int remove_family(int family, bool quiet)
{
	struct nat_state st;
	char text[1024];
	struct text t = {text, sizeof(text), 0, false};
	int rc;

	rc = read_state(family, &st, quiet);
	if (rc)
		return rc;
	if (!st.chain && !st.jumps[0] && !st.jumps[1])
		return 0;
	/* Each run leaves at most one jump per hook, so more than a few means
	 * someone else's rules; a bounded count keeps the text small. */
	text_add(&t, "*nat\n");
	for (unsigned k = 0; k < st.jumps[0] && k < 16; k++)
		text_add(&t, "-D OUTPUT %s\n", JUMP_RULE);
	for (unsigned k = 0; k < st.jumps[1] && k < 16; k++)
		text_add(&t, "-D PREROUTING %s\n", JUMP_RULE);
	if (st.chain)
		text_add(&t, "-F %s\n-X %s\n", EM_CAPTURE_CHAIN, EM_CAPTURE_CHAIN);
	text_add(&t, "COMMIT\n");
	if (t.overflow)
		return -ENOSPC;
	rc = restore(family, text, t.off, quiet);
	if (rc == 0)
		EM_INFO(MOD, "removed %s chain %s", family == AF_INET6 ? "IPv6" : "IPv4",
		        EM_CAPTURE_CHAIN);
	return rc;
}

static bool has_family(const struct em_config *cfg, int family)
{
	return cfg &&
	       count_family(cfg->capture.service_cidrs, cfg->capture.n_service_cidrs, family);
}

static int install_family(const struct em_config *cfg, int family)
{
	struct nat_state st;
	char *text;
	int rc, n;

	rc = read_state(family, &st, false);
	if (rc)
		return rc;
	for (size_t cap = RULES_MIN;; cap *= 2) {
		text = malloc(cap);
		if (!text)
			return -ENOMEM;
		n = rules_text(cfg, family, st.jumps[0], st.jumps[1], text, cap);
		if (n != -ENOSPC || cap >= RULES_MAX)
			break;
		free(text);
	}
	if (n < 0) {
		rc = n;
		EM_ERR(MOD, "capture rules: %s", strerror(-n));
		goto out;
	}
	rc = restore(family, text, (size_t)n, false);
	if (rc == 0)
		EM_INFO(MOD, "%s capture to port %u installed in chain %s%s",
		        family == AF_INET6 ? "IPv6" : "IPv4", cfg->capture.port, EM_CAPTURE_CHAIN,
		        st.chain || st.jumps[0] || st.jumps[1] ? " (replaced an earlier one)" : "");
out:
	free(text);
	return rc;
}

int em_capture_install(const struct em_config *cfg)
{
	static const int fams[2] = {AF_INET, AF_INET6};
	int rc = 0;

	if (!cfg->capture.enabled)
		return 0;
	if (cfg->capture.port == 0 || cfg->capture.n_service_cidrs == 0) {
		EM_ERR(MOD, "capture needs a port and at least one service CIDR");
		return -EINVAL;
	}
	for (int i = 0; i < 2 && rc == 0; i++) {
		if (has_family(cfg, fams[i]))
			rc = install_family(cfg, fams[i]);
		else
			remove_family(fams[i], true);
	}
	if (rc)
		em_capture_remove(cfg);
	return rc;
}

int em_capture_remove(const struct em_config *cfg)
{
	int rc4 = remove_family(AF_INET, false);
	int rc6 = remove_family(AF_INET6, !has_family(cfg, AF_INET6));

	if (rc4)
		return rc4;
	return has_family(cfg, AF_INET6) ? rc6 : 0;
}

int em_capture_installed(const struct em_config *cfg)
{
	static const int fams[2] = {AF_INET, AF_INET6};
	struct nat_state st;
	int n = 0, rc;

	for (int i = 0; i < 2; i++) {
		bool quiet = fams[i] == AF_INET6 && !has_family(cfg, AF_INET6);
		rc = read_state(fams[i], &st, quiet);
		if (rc && !quiet)
			return rc;
		if (rc == 0 && (st.chain || st.jumps[0] || st.jumps[1]))
			n++;
	}
	return n;
}

/* ----- original destination -------------------------------------------- */

int em_capture_original_dst(int fd, int family, struct em_addr *out)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	memset(out, 0, sizeof(*out));
	if (family == 0 || family == AF_INET6) {
		/* The local address tells the family and, for a dual-stack
		 * socket, whether the peer is really IPv4. */
		if (getsockname(fd, (struct sockaddr *)&ss, &sl) == -1)
			return -errno;
		family = ss.ss_family;
		if (family == AF_INET6 &&
		    IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *)&ss)->sin6_addr))
			family = AF_INET;
	}
	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		sl = sizeof(struct sockaddr_in);
		if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &ss, &sl) == -1)
			return -errno;
		ss.ss_family = AF_INET;
	} else if (family == AF_INET6) {
		sl = sizeof(struct sockaddr_in6);
		if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &ss, &sl) == -1)
			return -errno;
		ss.ss_family = AF_INET6;
	} else {
		return -EAFNOSUPPORT;
	}
	return em_addr_from_sockaddr((struct sockaddr *)&ss, out);
}

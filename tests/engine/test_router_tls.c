/* The Router's TLS front in-process: a cloud engine with router.tls on
 * loopback, OpenSSL clients. No edge: the Router's own pages answer. */
#include <arpa/inet.h>
#include <criterion/criterion.h>

#include <dirent.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine.h"
#include "proto/clock.h"
#include "proto/log.h"
#include "store/config.h"
#include "store/table.h"
#include "tests/selfsigned.h"

static struct em_engine *eng;
static char dir[] = "/tmp/em-rtls-XXXXXX", crt[64], key[64];
static uint16_t port;

static int count_fds(void)
{
	int n = 0;
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n - 1;
}

static uint64_t counter(const char *name)
{
	struct em_api_counter c[128];
	size_t n = em_engine_counters(eng, c, 128);
	for (size_t i = 0; i < n; i++)
		if (strcmp(c[i].group, "router") == 0 && strcmp(c[i].name, name) == 0)
			return c[i].value;
	cr_assert_fail("no counter router.%s", name);
	return 0;
}

/* Waits (at most 3 s) for counter <name> to reach <v>. */
static bool counter_reaches(const char *name, uint64_t v)
{
	for (uint64_t end = em_now_ms() + 3000; em_now_ms() < end; usleep(5000))
		if (counter(name) >= v)
			return true;
	return counter(name) >= v;
}

static void write_cert(void)
{
	em_test_self_signed(crt, key);
}

static int fds_before;

/* read(2) of one byte, again when a signal interrupted it. */
static ssize_t read1(int fd, char *c)
{
	ssize_t n;
	while ((n = read(fd, c, 1)) == -1 && errno == EINTR)
		;
	return n;
}

static void up(void)
{
	char json[1024], err[512];
	em_table_init();
	if (getenv("EM_TEST_DEBUG"))
		em_log_level = EM_LOG_DEBUG;
	cr_assert_not_null(mkdtemp(dir));
	snprintf(crt, sizeof(crt), "%s/r.crt", dir);
	snprintf(key, sizeof(key), "%s/r.key", dir);
	write_cert();
	/* A port free now: the kernel's pick for a socket bound to port 0. */
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	int pfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert(pfd >= 0 && bind(pfd, (struct sockaddr *)&sa, sl) == 0 &&
	          getsockname(pfd, (struct sockaddr *)&sa, &sl) == 0);
	close(pfd);
	port = ntohs(sa.sin_port);
	snprintf(json, sizeof(json),
	         "{\"role\":\"cloud\",\"node_name\":\"c1\",\"workers\":2,\"data_dir\":\"%s\","
	         "\"capture\":{\"enabled\":false},\"tunnel\":{\"listen\":\"\"},"
	         "\"router\":{\"listen\":\"127.0.0.1:%u\",\"tls\":{\"cert_file\":\"%s\","
	         "\"key_file\":\"%s\",\"handshake_ms\":1000,\"max_connections\":4}}}",
	         dir, port, crt, key);
	struct em_config *cfg = NULL;
	cr_assert_eq(em_config_parse("test", json, strlen(json), &cfg, err, sizeof(err)), 0, "%s",
	             err);
	cr_assert_eq(em_config_check_host(cfg, err, sizeof(err)), 0, "%s", err);
	em_config_publish(cfg);
	fds_before = count_fds();
	cr_assert_eq(em_engine_start(cfg, &eng), 0);
}

static void down(void)
{
	if (eng) {
		uint64_t t0 = em_now_ms();
		em_engine_stop(eng, 200);
		eng = NULL;
		cr_expect_lt(em_now_ms() - t0, 1500, "stop took %llu ms",
		             (unsigned long long)(em_now_ms() - t0));
		cr_expect_leq(count_fds(), fds_before, "descriptors left after the stop");
	}
	unlink(crt);
	unlink(key);
	rmdir(dir);
}

TestSuite(router_tls, .init = up, .fini = down, .timeout = 30);

static int tcp_client(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
	                         .sin_port = htons(port),
	                         .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "connect: %s",
	             strerror(errno));
	struct timeval tv = {.tv_sec = 5};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* A blocking SSL call <r> interrupted by a signal (the test runner's):
 * OpenSSL reports EINTR as WANT_READ/WANT_WRITE or as SYSCALL. */
static bool interrupted(SSL *s, int r)
{
	int e = SSL_get_error(s, r);
	return r <= 0 && (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ||
	                  (e == SSL_ERROR_SYSCALL && errno == EINTR));
}

/* A blocking TLS client (the certificate is not verified: the front's
 * handshake and bytes are under test, not the chain). */
static SSL *tls_client(SSL_CTX **ctx, int *fd)
{
	cr_assert_not_null(*ctx = SSL_CTX_new(TLS_client_method()));
	*fd = tcp_client();
	SSL *s = SSL_new(*ctx);
	SSL_set_fd(s, *fd);
	int r;
	while ((r = SSL_connect(s)) != 1 && interrupted(s, r))
		;
	cr_assert_eq(r, 1, "handshake");
	return s;
}

/* Reads one response whose body ends with <tail> into <buf>. */
static void read_until(SSL *s, char *buf, size_t cap, const char *tail)
{
	size_t n = 0;
	buf[0] = 0;
	while (!strstr(buf, tail)) {
		int r = SSL_read(s, buf + n, (int)(cap - 1 - n));
		if (interrupted(s, r))
			continue;
		cr_assert_gt(r, 0, "read after %zu bytes (ssl error %d, %s): %s", n,
		             SSL_get_error(s, r), strerror(errno), buf);
		n += (size_t)r;
		buf[n] = 0;
	}
}

#define REQ  "GET /nowhere/default/x HTTP/1.1\r\nHost: r\r\n\r\n"
#define PAGE "no rule for this path (expected /<node>/<namespace>/<path>)\n"

/* The Router answers over TLS, and closes after an error page: the client
 * gets the page, then close_notify (not a bare FIN). */
Test(router_tls, pages_over_tls)
{
	for (int i = 0; i < 2; i++) {
		SSL_CTX *ctx;
		int fd;
		SSL *s = tls_client(&ctx, &fd);
		char buf[4096];
		cr_assert_eq(SSL_write(s, REQ, (int)strlen(REQ)), (int)strlen(REQ));
		read_until(s, buf, sizeof(buf), PAGE);
		cr_expect(strncmp(buf, "HTTP/1.1 404", 12) == 0, "%s", buf);
		int r;
		while ((r = SSL_read(s, buf, sizeof(buf))) <= 0 && interrupted(s, r))
			;
		cr_expect_eq(SSL_get_error(s, r), SSL_ERROR_ZERO_RETURN, "close_notify expected");
		SSL_free(s);
		SSL_CTX_free(ctx);
		close(fd);
	}
	cr_expect(counter_reaches("tls_handshakes", 2));
	for (uint64_t end = em_now_ms() + 3000; em_now_ms() < end && counter("tls_connections");)
		usleep(5000);
	cr_expect_eq(counter("tls_connections"), 0);
}

Test(router_tls, plain_http_and_silence)
{
	char c;
	int fd = tcp_client();
	cr_assert_eq(write(fd, REQ, strlen(REQ)), (ssize_t)strlen(REQ));
	ssize_t n = read1(fd, &c);
	cr_expect_leq(n, 0, "plain HTTP got an answer");
	close(fd);
	cr_expect(counter_reaches("tls_handshake_failures", 1));

	fd = tcp_client();
	uint64_t t0 = em_now_ms();
	n = read1(fd, &c);
	uint64_t ms = em_now_ms() - t0;
	cr_expect_eq(n, 0, "a silent client is closed (%zd: %s)", n, strerror(errno));
	cr_expect(ms >= 900 && ms < 3000, "closed after %llu ms (handshake_ms 1000)",
	          (unsigned long long)ms);
	close(fd);
	cr_expect(counter_reaches("tls_handshake_timeouts", 1));
}

Test(router_tls, cap_and_stop_with_connections_open)
{
	int held[4];
	char c;
	for (int i = 0; i < 4; i++)
		held[i] = tcp_client();
	int fd = tcp_client();
	cr_expect_eq(read1(fd, &c), 0, "the fifth connection is closed at once");
	close(fd);
	cr_expect(counter_reaches("tls_refused", 1));
	for (int i = 0; i < 4; i++)
		close(held[i]);
	/* One open with half a request head, one in its handshake: the stop
	 * ends both. */
	for (uint64_t end = em_now_ms() + 3000; em_now_ms() < end && counter("tls_connections");)
		usleep(5000);
	SSL_CTX *ctx;
	SSL *s = tls_client(&ctx, &fd);
	char buf[4096];
	cr_assert_eq(SSL_write(s, REQ, 20), 20);
	cr_expect(counter_reaches("tls_handshakes", 1));
	int silent = tcp_client();
	uint64_t t0 = em_now_ms();
	em_engine_stop(eng, 200);
	eng = NULL;
	cr_expect_lt(em_now_ms() - t0, 1500, "stop took %llu ms",
	             (unsigned long long)(em_now_ms() - t0));
	cr_expect_leq(SSL_read(s, buf, sizeof(buf)), 0, "the open connection ended");
	SSL_free(s);
	SSL_CTX_free(ctx);
	close(fd);
	close(silent);
	ERR_clear_error();
	cr_expect_leq(count_fds(), fds_before, "descriptors left after the stop");
}

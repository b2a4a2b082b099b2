/* emload: the benchmark's load generator for what wrk cannot do.
 *
 *   pingpong  request/response of -s bytes over -c keep-alive connections for
 *             -d seconds; every response must equal its request byte for byte
 *   connect   the same, but a new connection per request (connect, send,
 *             receive, close), -c of them in flight
 *   bulk      -c streams, each sends the hello "EMBULK01"+seed and then reads
 *             the counter pattern of embackend's source mode, checking every
 *             byte. Streams are opened one after another; the -d seconds
 *             measured start -w seconds (default 0.5) after the last one is
 *             open, so that neither the opening nor the bytes the streams
 *             buffered meanwhile count as throughput. Every byte, also
 *             those outside the window, is checked.
 *   http      HTTP/1.1 keep-alive GETs over -c connections for -d seconds, one
 *             in flight per connection: "GET <-u>/<conn>/<seq>"; every
 *             response must be a 200 with a Content-Length (no chunked, no
 *             "Connection: close") whose body is the target the backend saw,
 *             "<-x>/<conn>/<seq>" (-x defaults to -u), padded with '.' before
 *             the final '\n' to -s bytes: embackend's path mode. So a proxy
 *             that rewrites the path (-x) or mixes up responses is caught
 *   idle      opens -c connections, proves each works with one small round
 *             trip, prints "READY <n>" on stdout, holds them -H seconds (any
 *             byte or close from the far side during the hold is an error),
 *             round-trips on every one again, closes
 *   rate      open loop: -r requests/s of -s bytes in all, spread evenly
 *             over -c keep-alive connections for -d seconds, each echoed
 *             back and checked. Request k is due at start + k / rate on
 *             connection k mod -c, and is sent when due whether or not the
 *             earlier ones were answered (pipelined on the connection); its
 *             latency runs from when it was due, not from when it left, so a
 *             stall of the server (or of emload) counts for every request
 *             it delayed (no coordinated omission). lag_p99_us is how late
 *             emload itself sent (99th percentile), max_inflight the most
 *             requests waiting at once. Every request due before the end
 *             must be answered within 2 s after it. The first -w seconds
 *             (default 0.5) are sent and checked but not counted
 *   first     -c connections one after another: connect, send -s bytes,
 *             receive them back. first_us is the time from the connect()
 *             of the first to the first byte of its answer; next_us the
 *             median of the same for the others (set-up cost of a path
 *             that is already warm)
 *
 * Usage: emload -m MODE -a IP:PORT [-c CONNS] [-d SECS] [-s SIZE] [-t THREADS]
 *               [-H HOLD_SECS] [-w WARM_SECS] [-u PATH] [-x PATH] [-r RATE]
 * The last stdout line is "RESULT key=value ..." (mode, conns, secs, ops,
 * rps, gbps, p50_us, p90_us, p99_us, p999_us, errors, and for bulk open_ms: how long
 * opening every stream took, and gb_all: the GB received in the whole run,
 * the divisor of a proxy's CPU per GB measured over the whole run). Exit status 1 when any error
 * occurred, and the first error is named on stderr. Latency is kept in a
 * log-bucketed histogram (32 sub-buckets per power of two: about 3% error),
 * one per thread, merged at the end. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto/clock.h"
#include "proto/em.h"

#define LD_SUB_BITS 5
#define LD_SUB      (1u << LD_SUB_BITS)
#define LD_BUCKETS  (2 * LD_SUB + 45 * LD_SUB)
#define LD_RECV_BUF (256 * 1024)
#define LD_HTTP_REQ  512  /* request head (-u is limited to fit) */
#define LD_HTTP_HEAD 4096 /* response head */
#define LD_RATE_SPIN_NS 100000 /* rate: polled, not slept, before a request is due */

enum ld_mode { LD_PINGPONG, LD_CONNECT, LD_BULK, LD_IDLE, LD_HTTP, LD_RATE, LD_FIRST };
enum ld_state { LD_CONNECTING, LD_SENDING, LD_RECVING, LD_CLOSED };

struct ld_hist {
	uint64_t count[LD_BUCKETS];
	uint64_t n;
};

struct ld_thread;

struct ld_conn {
	int fd;
	enum ld_state state;
	uint32_t id;
	uint64_t seq;
	size_t sent, rcvd;
	size_t req_len, resp_cap; /* what is sent, what may be received */
	size_t need;              /* http: head + body, once the head is in */
	uint64_t t0;
	uint64_t seed, offset; /* bulk stream position */
	uint64_t due, sent_seq, rcvd_seq; /* rate: requests due, sent, answered */
	bool watch_out;        /* EPOLLOUT (instead of EPOLLIN) is registered */
	char *req, *resp;
	struct ld_thread *th;
};

struct ld_thread {
	pthread_t tid;
	int index;
	int ep;
	int nconns;
	struct ld_conn *conns;
	uint64_t ops, bytes, errors;
	uint64_t bytes_at; /* bulk: bytes when the measured window began */
	bool window;       /* bulk: bytes_at is set */
	uint64_t checked;  /* responses verified, also those after the deadline */
	char first_error[160];
	struct ld_hist hist;
	struct ld_hist lag;    /* rate: how late each request was sent */
	uint64_t max_inflight; /* rate */
	char *rbuf; /* bulk and rate receive buffer */
};

static enum ld_mode g_mode;
static struct sockaddr_storage g_target;
static socklen_t g_target_len;
static int g_conns = 50, g_threads = 1;
static double g_secs = 5, g_hold = 5, g_rate;
static size_t g_size = 100;
static const char *g_path = "", *g_expect; /* http: -u, -x */
static uint64_t g_deadline_ns;
/* bulk: every thread has opened its streams; the measured window */
static pthread_barrier_t g_opened;
static double g_warm = 0.5;
static uint64_t g_open_ns, g_window_ns;

static void fail(struct ld_thread *th, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Errors are counted, never fatal: the harness wants the full count. */
static void fail(struct ld_thread *th, const char *fmt, ...)
{
	if (th->errors++ == 0) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(th->first_error, sizeof(th->first_error), fmt, ap);
		va_end(ap);
	}
}

static unsigned hist_index(uint64_t v)
{
	if (v < 2 * LD_SUB)
		return (unsigned)v;
	unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= LD_SUB_BITS + 1 */
	unsigned sub = (unsigned)(v >> (e - LD_SUB_BITS)) & (LD_SUB - 1);
	unsigned i = 2 * LD_SUB + (e - LD_SUB_BITS - 1) * LD_SUB + sub;
	return i < LD_BUCKETS ? i : LD_BUCKETS - 1;
}

/* Middle of bucket <i>, the inverse of hist_index. */
static double hist_value(unsigned i)
{
	if (i < 2 * LD_SUB)
		return i;
	unsigned e = (i - 2 * LD_SUB) / LD_SUB + LD_SUB_BITS + 1;
	unsigned sub = (i - 2 * LD_SUB) % LD_SUB;
	double step = (double)(1ULL << (e - LD_SUB_BITS));
	return (double)(1ULL << e) + sub * step + step / 2;
}

static double hist_percentile(const struct ld_hist *h, double p)
{
	if (!h->n)
		return 0;
	/* libm is not linked into the bench programs: round up by hand. */
	double exact = p / 100.0 * (double)h->n;
	uint64_t want = (uint64_t)exact, seen = 0;
	if ((double)want < exact)
		want++;
	if (want == 0)
		want = 1;
	for (unsigned i = 0; i < LD_BUCKETS; i++) {
		seen += h->count[i];
		if (seen >= want)
			return hist_value(i);
	}
	return hist_value(LD_BUCKETS - 1);
}

static void hist_add(struct ld_hist *h, uint64_t ns)
{
	h->count[hist_index(ns)]++;
	h->n++;
}

static int open_socket(bool nonblock)
{
	int fd = socket(g_target.ss_family,
	                SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
	if (fd == -1)
		return -errno;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	return fl == -1 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1 ? -errno : 0;
}

/* Request bytes: an 8-byte sequence number, then a per-connection pattern, so
 * that a response routed to the wrong connection or reordered never matches. */
static void make_request(struct ld_conn *c)
{
	c->seq++;
	if (g_mode == LD_HTTP) {
		c->req_len = (size_t)snprintf(c->req, LD_HTTP_REQ,
		                              "GET %s/%u/%llu HTTP/1.1\r\nHost: bench\r\n\r\n", g_path,
		                              c->id, (unsigned long long)c->seq);
		c->need = 0;
		return;
	}
	uint64_t tag = ((uint64_t)c->id << 40) ^ c->seq;
	memcpy(c->req, &tag, EM_MIN(g_size, (size_t)8));
}

static void watch(struct ld_conn *c, bool out, int op)
{
	struct epoll_event ev = {.events = out ? EPOLLOUT : EPOLLIN | EPOLLRDHUP, .data.ptr = c};
	epoll_ctl(c->th->ep, op, c->fd, &ev);
	c->watch_out = out;
}

static void conn_close(struct ld_conn *c)
{
	if (c->fd >= 0) {
		epoll_ctl(c->th->ep, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	c->fd = -1;
	c->state = LD_CLOSED;
}

static bool running(void)
{
	return em_now_ns() < g_deadline_ns;
}

static void on_request_event(struct ld_conn *c);

/* The value of header <name> (lower case, with its ':') in the head
 * [h, e), or NULL; *len is its length without surrounding blanks. */
static const char *header(const char *h, const char *e, const char *name, size_t *len)
{
	size_t nl = strlen(name);
	for (const char *l = h; l < e;) {
		const char *le = memmem(l, (size_t)(e - l), "\r\n", 2);
		if (!le)
			le = e;
		if ((size_t)(le - l) >= nl && !strncasecmp(l, name, nl)) {
			const char *v = l + nl;
			while (v < le && (*v == ' ' || *v == '\t'))
				v++;
			const char *ve = le;
			while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
				ve--;
			*len = (size_t)(ve - v);
			return v;
		}
		l = le + 2;
	}
	return NULL;
}

/* http: 1 when c->resp holds exactly one correct response, 0 while more is
 * to come, -1 (error counted) when it is wrong. */
static int http_response(struct ld_conn *c)
{
	struct ld_thread *th = c->th;
	if (!c->need) {
		const char *end = memmem(c->resp, c->rcvd, "\r\n\r\n", 4);
		if (!end) {
			if (c->rcvd >= LD_HTTP_HEAD) {
				fail(th, "response head over %d bytes", LD_HTTP_HEAD);
				return -1;
			}
			return 0;
		}
		const char *le = memmem(c->resp, c->rcvd, "\r\n", 2);
		if ((size_t)(le - c->resp) < 13 || memcmp(c->resp, "HTTP/1.1 200 ", 13) != 0) {
			fail(th, "status line \"%.*s\" (connection %u, request %llu)",
			     (int)EM_MIN((size_t)(le - c->resp), (size_t)60), c->resp, c->id,
			     (unsigned long long)c->seq);
			return -1;
		}
		size_t vl;
		const char *v;
		if (header(le + 2, end + 2, "transfer-encoding:", &vl)) {
			fail(th, "a Transfer-Encoding response (only Content-Length is checked)");
			return -1;
		}
		if ((v = header(le + 2, end + 2, "connection:", &vl)) && vl >= 5 &&
		    !strncasecmp(v, "close", 5)) {
			fail(th, "\"Connection: close\" on a keep-alive connection (request %llu)",
			     (unsigned long long)c->seq);
			return -1;
		}
		if (!(v = header(le + 2, end + 2, "content-length:", &vl))) {
			fail(th, "a response without Content-Length");
			return -1;
		}
		size_t cl = (size_t)strtoull(v, NULL, 10);
		c->need = (size_t)(end + 4 - c->resp) + cl;
		if (cl == 0 || c->need > c->resp_cap) {
			fail(th, "Content-Length %zu", cl);
			return -1;
		}
	}
	if (c->rcvd < c->need)
		return 0;
	if (c->rcvd > c->need) {
		fail(th, "%zu bytes after the response (connection %u)", c->rcvd - c->need, c->id);
		return -1;
	}
	/* The body the backend writes for the rewritten target. */
	char want[LD_HTTP_REQ + LD_HTTP_HEAD];
	int tl = snprintf(want, sizeof(want), "%s/%u/%llu", g_expect, c->id,
	                  (unsigned long long)c->seq);
	size_t bl = EM_MAX(g_size, (size_t)tl + 1);
	const char *body = c->resp + c->need - bl;
	bool ok = c->need >= bl && !memcmp(body, want, (size_t)tl) && body[bl - 1] == '\n';
	for (size_t i = (size_t)tl; ok && i + 1 < bl; i++)
		ok = body[i] == '.';
	/* The head ends right before the body: the body is all of it. */
	if (ok && (c->need - bl < 4 || memcmp(body - 4, "\r\n\r\n", 4) != 0))
		ok = false;
	if (!ok) {
		fail(th, "wrong body for %s: \"%.*s\"", want,
		     (int)EM_MIN(c->need, (size_t)60), c->need >= bl ? body : c->resp);
		return -1;
	}
	return 1;
}

/* Starts a request on <c>: a new connection first in connect mode. */
static void start_request(struct ld_conn *c)
{
	c->sent = c->rcvd = 0;
	c->t0 = em_now_ns();
	make_request(c);
	if (g_mode == LD_CONNECT) {
		int fd = open_socket(true);
		if (fd < 0) {
			fail(c->th, "socket: %s", strerror(-fd));
			c->state = LD_CLOSED;
			return;
		}
		c->fd = fd;
		c->state = LD_CONNECTING;
		if (connect(fd, (struct sockaddr *)&g_target, g_target_len) == -1 &&
		    errno != EINPROGRESS) {
			fail(c->th, "connect: %s", strerror(errno));
			close(fd);
			c->fd = -1;
			c->state = LD_CLOSED;
			return;
		}
		watch(c, true, EPOLL_CTL_ADD);
		return;
	}
	/* Send at once: waiting for EPOLLOUT would cost two syscalls per
	 * request on the load generator's side. */
	c->state = LD_SENDING;
	on_request_event(c);
}

static void on_request_event(struct ld_conn *c)
{
	struct ld_thread *th = c->th;
	if (c->state == LD_CONNECTING) {
		int err = 0;
		socklen_t el = sizeof(err);
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
		if (err) {
			fail(th, "connect: %s", strerror(err));
			conn_close(c);
			return;
		}
		c->state = LD_SENDING;
	}
	if (c->state == LD_SENDING) {
		while (c->sent < c->req_len) {
			ssize_t n = send(c->fd, c->req + c->sent, c->req_len - c->sent, MSG_NOSIGNAL);
			if (n == -1) {
				if (errno == EAGAIN) {
					if (!c->watch_out)
						watch(c, true, EPOLL_CTL_MOD);
					return;
				}
				fail(th, "send: %s", strerror(errno));
				conn_close(c);
				return;
			}
			c->sent += (size_t)n;
		}
		c->state = LD_RECVING;
		if (c->watch_out)
			watch(c, false, EPOLL_CTL_MOD);
		return;
	}
	if (c->state != LD_RECVING)
		return;
	for (;;) {
		ssize_t n = recv(c->fd, c->resp + c->rcvd, c->resp_cap - c->rcvd, 0);
		if (n == -1) {
			if (errno == EAGAIN)
				return;
			fail(th, "recv: %s", strerror(errno));
			conn_close(c);
			return;
		}
		if (n == 0) {
			fail(th, "connection closed by peer after %zu response bytes (connection %u, request %llu)",
			     c->rcvd, c->id, (unsigned long long)c->seq);
			conn_close(c);
			return;
		}
		c->rcvd += (size_t)n;
		if (g_mode == LD_HTTP) {
			int rc = http_response(c);
			if (rc < 0) {
				conn_close(c);
				return;
			}
			if (rc == 1)
				break;
			continue;
		}
		if (c->rcvd == g_size)
			break;
	}
	uint64_t now = em_now_ns();
	if (g_mode != LD_HTTP && memcmp(c->req, c->resp, g_size) != 0) {
		fail(th, "response differs from request (connection %u, request %llu)", c->id,
		     (unsigned long long)c->seq);
		conn_close(c);
		return;
	}
	th->checked++;
	if (now <= g_deadline_ns) {
		th->ops++;
		hist_add(&th->hist, now - c->t0);
	}
	if (g_mode == LD_CONNECT)
		conn_close(c);
	if (now < g_deadline_ns)
		start_request(c);
	else if (g_mode != LD_CONNECT)
		conn_close(c);
}

/* Checks bulk bytes against the counter pattern; see embackend.c. */
static bool bulk_check(const char *buf, size_t len, uint64_t seed, uint64_t off)
{
	size_t i = 0;
	while (i < len && ((off + i) & 7)) {
		uint64_t w = ((off + i) >> 3) ^ seed;
		if (buf[i] != (char)(w >> (8 * ((off + i) & 7))))
			return false;
		i++;
	}
	uint64_t k = (off + i) >> 3, bad = 0;
	for (; i + 8 <= len; i += 8, k++) {
		uint64_t w;
		memcpy(&w, buf + i, 8);
		bad |= w ^ (k ^ seed);
	}
	if (bad)
		return false;
	for (; i < len; i++) {
		uint64_t w = ((off + i) >> 3) ^ seed;
		if (buf[i] != (char)(w >> (8 * ((off + i) & 7))))
			return false;
	}
	return true;
}

static void on_bulk_event(struct ld_conn *c)
{
	struct ld_thread *th = c->th;
	for (int rounds = 0; rounds < 8; rounds++) {
		ssize_t n = recv(c->fd, th->rbuf, LD_RECV_BUF, 0);
		if (n == -1) {
			if (errno != EAGAIN) {
				fail(th, "bulk recv: %s", strerror(errno));
				conn_close(c);
			}
			return;
		}
		if (n == 0) {
			fail(th, "bulk stream closed by peer after %llu bytes",
			     (unsigned long long)c->offset);
			conn_close(c);
			return;
		}
		if (!bulk_check(th->rbuf, (size_t)n, c->seed, c->offset)) {
			fail(th, "bulk stream %u: wrong bytes at offset %llu", c->id,
			     (unsigned long long)c->offset);
			conn_close(c);
			return;
		}
		c->offset += (uint64_t)n;
		th->bytes += (uint64_t)n;
	}
}

/* Blocking connect for the long-lived connections of pingpong, bulk, idle. */
static int connect_blocking(struct ld_thread *th)
{
	int fd = open_socket(false);
	if (fd < 0) {
		fail(th, "socket: %s", strerror(-fd));
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&g_target, g_target_len) == -1) {
		fail(th, "connect: %s", strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static void *thread_main(void *arg)
{
	struct ld_thread *th = arg;
	struct epoll_event evs[256];
	th->ep = epoll_create1(EPOLL_CLOEXEC);
	for (int i = 0; i < th->nconns; i++) {
		struct ld_conn *c = &th->conns[i];
		c->th = th;
		c->fd = -1;
		if (g_mode == LD_CONNECT) {
			start_request(c);
			continue;
		}
		c->fd = connect_blocking(th);
		if (c->fd < 0) {
			c->state = LD_CLOSED;
			continue;
		}
		set_nonblock(c->fd);
		if (g_mode == LD_BULK) {
			char hello[16] = "EMBULK01";
			c->seed = ((uint64_t)c->id << 32) * 0x9E3779B97F4A7C15ULL + 12345;
			memcpy(hello + 8, &c->seed, 8);
			if (send(c->fd, hello, sizeof(hello), MSG_NOSIGNAL) != sizeof(hello)) {
				fail(th, "bulk hello: %s", strerror(errno));
				close(c->fd);
				c->fd = -1;
				c->state = LD_CLOSED;
				continue;
			}
			c->state = LD_RECVING;
			watch(c, false, EPOLL_CTL_ADD);
			continue;
		}
		watch(c, false, EPOLL_CTL_ADD);
		start_request(c);
	}
	if (g_mode == LD_BULK) {
		/* The last thread to finish opening sets the window; the second
		 * wait publishes it to every thread. */
		if (pthread_barrier_wait(&g_opened) == PTHREAD_BARRIER_SERIAL_THREAD) {
			g_open_ns = em_now_ns();
			g_window_ns = g_open_ns + (uint64_t)(g_warm * 1e9);
			g_deadline_ns = g_window_ns + (uint64_t)(g_secs * 1e9);
		}
		pthread_barrier_wait(&g_opened);
	}
	/* After the deadline, requests in flight are still awaited (and checked)
	 * for up to 2 s; they do not count towards the rate. */
	uint64_t hard_stop = g_deadline_ns + 2000000000ULL;
	for (;;) {
		uint64_t now = em_now_ns();
		if (g_mode == LD_BULK && !th->window && now >= g_window_ns) {
			th->bytes_at = th->bytes;
			th->window = true;
		}
		if (g_mode == LD_BULK && now >= g_deadline_ns)
			break;
		int open = 0;
		for (int i = 0; i < th->nconns; i++)
			open += th->conns[i].state != LD_CLOSED;
		if (!open)
			break;
		if (now >= hard_stop) {
			fail(th, "%d requests got no response within 2 s", open);
			break;
		}
		int n = epoll_wait(th->ep, evs, EM_ARRAY_SIZE(evs), 50);
		for (int i = 0; i < n; i++) {
			struct ld_conn *c = evs[i].data.ptr;
			if (c->state == LD_CLOSED)
				continue;
			if (g_mode == LD_BULK)
				on_bulk_event(c);
			else
				on_request_event(c);
		}
		/* A connect-mode slot whose request failed is restarted, so
		 * that one error does not silently lower the load. */
		if (g_mode == LD_CONNECT && running())
			for (int i = 0; i < th->nconns; i++)
				if (th->conns[i].state == LD_CLOSED)
					start_request(&th->conns[i]);
	}
	for (int i = 0; i < th->nconns; i++)
		conn_close(&th->conns[i]);
	close(th->ep);
	return NULL;
}

/* ---- rate: open loop ---- */

static uint64_t g_rate_t0;  /* when request 0 is due */
static double g_rate_gap;   /* ns between two requests of one thread */

/* When request <seq> of connection <c> is due: the thread's k-th request,
 * k = seq * nconns + the connection's place in the thread; the threads'
 * schedules are interleaved. */
static uint64_t rate_due_k(const struct ld_thread *th, uint64_t k)
{
	return g_rate_t0 + (uint64_t)(((double)k + (double)th->index / g_threads) * g_rate_gap);
}

static uint64_t rate_due(const struct ld_conn *c, uint64_t seq)
{
	const struct ld_thread *th = c->th;
	return rate_due_k(th, seq * (uint64_t)th->nconns + (uint64_t)(c - th->conns));
}

static void rate_tag(const struct ld_conn *c, uint64_t seq, char tag[8])
{
	uint64_t t = ((uint64_t)c->id << 40) ^ (seq + 1);
	memcpy(tag, &t, 8);
}

static void rate_watch(struct ld_conn *c, bool out, int op)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (out ? EPOLLOUT : 0), .data.ptr = c};
	epoll_ctl(c->th->ep, op, c->fd, &ev);
	c->watch_out = out;
}

/* Sends every request of <c> that is due and not yet (fully) sent. */
static void rate_send(struct ld_conn *c)
{
	struct ld_thread *th = c->th;
	while (c->sent_seq < c->due) {
		if (c->sent == 0) {
			char tag[8];
			uint64_t now = em_now_ns(), due = rate_due(c, c->sent_seq);
			rate_tag(c, c->sent_seq, tag);
			memcpy(c->req, tag, EM_MIN(g_size, (size_t)8));
			if (due >= g_window_ns)
				hist_add(&th->lag, now > due ? now - due : 0);
		}
		ssize_t n = send(c->fd, c->req + c->sent, g_size - c->sent, MSG_NOSIGNAL);
		if (n == -1) {
			if (errno == EAGAIN) {
				if (!c->watch_out)
					rate_watch(c, true, EPOLL_CTL_MOD);
				return;
			}
			fail(th, "send: %s", strerror(errno));
			conn_close(c);
			return;
		}
		c->sent += (size_t)n;
		if (c->sent == g_size) {
			c->sent = 0;
			c->sent_seq++;
		}
	}
	if (c->watch_out)
		rate_watch(c, false, EPOLL_CTL_MOD);
}

/* Reads answers on <c>: each must be its request byte for byte, in order. */
static void rate_recv(struct ld_conn *c)
{
	struct ld_thread *th = c->th;
	for (;;) {
		ssize_t n = recv(c->fd, th->rbuf, LD_RECV_BUF, 0);
		uint64_t now = em_now_ns();
		if (n == -1) {
			if (errno == EAGAIN)
				return;
			fail(th, "recv: %s", strerror(errno));
			conn_close(c);
			return;
		}
		if (n == 0) {
			fail(th, "connection %u closed by peer with %llu requests unanswered", c->id,
			     (unsigned long long)(c->sent_seq - c->rcvd_seq));
			conn_close(c);
			return;
		}
		for (size_t i = 0; i < (size_t)n;) {
			size_t take = EM_MIN((size_t)n - i, g_size - c->rcvd);
			/* Never more than was sent: an echo answers sent bytes only. */
			if (c->rcvd_seq > c->sent_seq ||
			    (c->rcvd_seq == c->sent_seq && c->rcvd + take > c->sent)) {
				fail(th, "connection %u: bytes beyond what was sent", c->id);
				conn_close(c);
				return;
			}
			char tag[8];
			rate_tag(c, c->rcvd_seq, tag);
			const char *b = th->rbuf + i;
			bool ok = true;
			for (size_t k = c->rcvd; k < c->rcvd + take && k < 8; k++)
				ok &= b[k - c->rcvd] == tag[k];
			if (c->rcvd + take > 8) {
				size_t from = EM_MAX(c->rcvd, (size_t)8);
				ok &= !memcmp(b + (from - c->rcvd), c->req + from, c->rcvd + take - from);
			}
			if (!ok) {
				fail(th, "answer differs from request (connection %u, request %llu)", c->id,
				     (unsigned long long)c->rcvd_seq);
				conn_close(c);
				return;
			}
			c->rcvd += take;
			i += take;
			if (c->rcvd == g_size) {
				uint64_t due = rate_due(c, c->rcvd_seq);
				th->checked++;
				if (due >= g_window_ns) {
					th->ops++;
					hist_add(&th->hist, now > due ? now - due : 0);
				}
				c->rcvd = 0;
				c->rcvd_seq++;
			}
		}
	}
}

static void *rate_main(void *arg)
{
	struct ld_thread *th = arg;
	struct epoll_event evs[256];
	th->ep = epoll_create1(EPOLL_CLOEXEC);
	/* Wake-ups on time: the default 50 us of timer slack would be in
	 * every latency. */
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
	for (int i = 0; i < th->nconns; i++) {
		struct ld_conn *c = &th->conns[i];
		c->th = th;
		c->fd = connect_blocking(th);
		if (c->fd < 0) {
			c->state = LD_CLOSED;
			continue;
		}
		set_nonblock(c->fd);
		c->state = LD_RECVING;
		rate_watch(c, false, EPOLL_CTL_ADD);
	}
	if (pthread_barrier_wait(&g_opened) == PTHREAD_BARRIER_SERIAL_THREAD) {
		g_rate_t0 = em_now_ns() + 1000000;
		g_window_ns = g_rate_t0 + (uint64_t)(g_warm * 1e9);
		g_deadline_ns = g_window_ns + (uint64_t)(g_secs * 1e9);
	}
	pthread_barrier_wait(&g_opened);
	uint64_t k = 0, hard_stop = g_deadline_ns + 2000000000ULL;
	for (;;) {
		uint64_t now = em_now_ns(), next;
		while ((next = rate_due_k(th, k)) <= now && next < g_deadline_ns) {
			th->conns[k % (uint64_t)th->nconns].due++;
			k++;
		}
		uint64_t inflight = 0;
		bool waiting = false;
		for (int i = 0; i < th->nconns; i++) {
			struct ld_conn *c = &th->conns[i];
			if (c->state == LD_CLOSED)
				continue;
			if (c->sent_seq < c->due && !c->watch_out)
				rate_send(c);
			if (c->state == LD_CLOSED)
				continue;
			inflight += c->due - c->rcvd_seq;
			waiting |= c->rcvd_seq < c->due;
		}
		th->max_inflight = EM_MAX(th->max_inflight, inflight);
		if (next >= g_deadline_ns && !waiting)
			break;
		if (now >= hard_stop) {
			fail(th, "%llu requests got no answer within 2 s after the end",
			     (unsigned long long)inflight);
			break;
		}
		/* Sleep until shortly before the next request is due, then poll:
		 * waking from a sleep takes tens of microseconds here, which
		 * would be in every request's latency. */
		uint64_t until = next < g_deadline_ns ? next : now + 50000000ULL;
		until = until > now + LD_RATE_SPIN_NS ? until - LD_RATE_SPIN_NS : now;
		struct timespec ts = {0, 0};
		if (until > now)
			ts.tv_sec = (time_t)((until - now) / 1000000000ULL),
			ts.tv_nsec = (long)((until - now) % 1000000000ULL);
		int n = epoll_pwait2(th->ep, evs, EM_ARRAY_SIZE(evs), &ts, NULL);
		for (int i = 0; i < n; i++) {
			struct ld_conn *c = evs[i].data.ptr;
			if (c->state != LD_CLOSED && (evs[i].events & EPOLLOUT))
				rate_send(c);
			if (c->state != LD_CLOSED && (evs[i].events & ~EPOLLOUT))
				rate_recv(c);
		}
	}
	for (int i = 0; i < th->nconns; i++)
		conn_close(&th->conns[i]);
	close(th->ep);
	return NULL;
}

/* ---- first: set-up time of a new path ---- */

/* One connection: connect, send <req>, read it back; the ns from connect()
 * to the answer's first byte, or 0 (error counted). */
static uint64_t first_one(struct ld_thread *th, const char *req, char *resp, uint32_t id)
{
	struct timeval tv = {.tv_sec = 5};
	uint64_t t0 = em_now_ns(), t1 = 0;
	int fd = connect_blocking(th);
	if (fd < 0)
		return 0;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (send(fd, req, g_size, MSG_NOSIGNAL) != (ssize_t)g_size) {
		fail(th, "first send: %s", strerror(errno));
		close(fd);
		return 0;
	}
	size_t got = 0;
	while (got < g_size) {
		ssize_t n = recv(fd, resp + got, g_size - got, 0);
		if (n <= 0) {
			fail(th, "connection %u: %s after %zu bytes", id,
			     n == 0 ? "closed by peer" : strerror(errno), got);
			close(fd);
			return 0;
		}
		if (!got)
			t1 = em_now_ns();
		got += (size_t)n;
	}
	close(fd);
	if (memcmp(req, resp, g_size) != 0) {
		fail(th, "connection %u: answer differs from request", id);
		return 0;
	}
	return t1 - t0;
}

static uint64_t g_first_ns;

static uint64_t run_first(struct ld_thread *th, const char *req, char *resp)
{
	uint64_t ok = 0;
	for (int i = 0; i < g_conns; i++) {
		uint64_t ns = first_one(th, req, resp, (uint32_t)i);
		if (!ns)
			continue;
		ok++;
		if (i == 0)
			g_first_ns = ns;
		else
			hist_add(&th->hist, ns);
	}
	return ok;
}

/* One blocking round trip on <fd> with a 5 s timeout. */
static int idle_ping(struct ld_thread *th, int fd, uint32_t id, uint64_t round)
{
	char req[32], resp[32];
	uint64_t tag = ((uint64_t)id << 8) | round;
	memset(req, 'i', sizeof(req));
	memcpy(req, &tag, 8);
	if (send(fd, req, sizeof(req), MSG_NOSIGNAL) != sizeof(req)) {
		fail(th, "idle send: %s", strerror(errno));
		return -1;
	}
	size_t got = 0;
	while (got < sizeof(resp)) {
		ssize_t n = recv(fd, resp + got, sizeof(resp) - got, 0);
		if (n <= 0) {
			fail(th, "idle recv on connection %u: %s", id,
			     n == 0 ? "closed by peer" : strerror(errno));
			return -1;
		}
		got += (size_t)n;
	}
	if (memcmp(req, resp, sizeof(req)) != 0) {
		fail(th, "idle connection %u: response differs", id);
		return -1;
	}
	return 0;
}

static uint64_t run_idle(struct ld_thread *th)
{
	int *fds = calloc((size_t)g_conns, sizeof(int));
	int ep = epoll_create1(EPOLL_CLOEXEC);
	uint64_t ok = 0;
	struct timeval tv = {.tv_sec = 5};
	if (!fds) {
		fail(th, "out of memory");
		return 0;
	}
	for (int i = 0; i < g_conns; i++) {
		fds[i] = connect_blocking(th);
		if (fds[i] < 0)
			continue;
		setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		if (idle_ping(th, fds[i], (uint32_t)i, 1) < 0) {
			close(fds[i]);
			fds[i] = -1;
			continue;
		}
		struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)i};
		epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
		ok++;
	}
	printf("READY %llu\n", (unsigned long long)ok);
	fflush(stdout);
	uint64_t end = em_now_ns() + (uint64_t)(g_hold * 1e9);
	struct epoll_event evs[64];
	for (uint64_t now = em_now_ns(); now < end; now = em_now_ns()) {
		int n = epoll_wait(ep, evs, EM_ARRAY_SIZE(evs), (int)((end - now) / 1000000) + 1);
		for (int i = 0; i < n; i++) {
			uint32_t id = evs[i].data.u32;
			fail(th, "idle connection %u: unexpected %s during hold", id,
			     evs[i].events & (EPOLLRDHUP | EPOLLHUP) ? "close" : "data");
			epoll_ctl(ep, EPOLL_CTL_DEL, fds[id], NULL);
			close(fds[id]);
			fds[id] = -1;
			ok--;
		}
	}
	for (int i = 0; i < g_conns; i++) {
		if (fds[i] < 0)
			continue;
		if (idle_ping(th, fds[i], (uint32_t)i, 2) < 0)
			ok--;
		close(fds[i]);
	}
	close(ep);
	free(fds);
	return ok;
}

static void usage(void)
{
	fprintf(stderr, "usage: emload -m pingpong|connect|bulk|idle|http|rate|first -a IP:PORT "
	                "[-c CONNS] [-d SECS] [-s SIZE] [-t THREADS] [-H HOLD_SECS] "
	                "[-w WARM_SECS] [-u PATH] [-x PATH] [-r RATE]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct em_addr target;
	bool have_target = false;
	int opt;
	while ((opt = getopt(argc, argv, "m:a:c:d:s:t:H:w:u:x:r:")) != -1) {
		switch (opt) {
		case 'm':
			if (!strcmp(optarg, "pingpong"))
				g_mode = LD_PINGPONG;
			else if (!strcmp(optarg, "connect"))
				g_mode = LD_CONNECT;
			else if (!strcmp(optarg, "bulk"))
				g_mode = LD_BULK;
			else if (!strcmp(optarg, "idle"))
				g_mode = LD_IDLE;
			else if (!strcmp(optarg, "http"))
				g_mode = LD_HTTP;
			else if (!strcmp(optarg, "rate"))
				g_mode = LD_RATE;
			else if (!strcmp(optarg, "first"))
				g_mode = LD_FIRST;
			else
				usage();
			break;
		case 'a':
			if (em_addr_parse(optarg, true, &target) < 0)
				usage();
			have_target = true;
			break;
		case 'c':
			g_conns = atoi(optarg);
			break;
		case 'd':
			g_secs = atof(optarg);
			break;
		case 's':
			g_size = (size_t)atol(optarg);
			break;
		case 't':
			g_threads = atoi(optarg);
			break;
		case 'H':
			g_hold = atof(optarg);
			break;
		case 'w':
			g_warm = atof(optarg);
			break;
		case 'u':
			g_path = optarg;
			break;
		case 'x':
			g_expect = optarg;
			break;
		case 'r':
			g_rate = atof(optarg);
			break;
		default:
			usage();
		}
	}
	if (!have_target || g_conns < 1 || g_threads < 1 || g_threads > 64 || g_size < 1 ||
	    g_size > (1 << 20) || g_secs <= 0 || g_warm < 0 || strlen(g_path) > 256 ||
	    (g_expect && strlen(g_expect) > 256) || (g_mode == LD_RATE && g_rate <= 0))
		usage();
	if (!g_expect)
		g_expect = g_path;
	if (g_threads > g_conns)
		g_threads = g_conns;
	if (g_mode == LD_BULK || g_mode == LD_RATE)
		pthread_barrier_init(&g_opened, NULL, (unsigned)g_threads);
	if (g_mode == LD_RATE)
		g_rate_gap = 1e9 * g_threads / g_rate;
	g_target_len = em_addr_to_sockaddr(&target, &g_target);
	signal(SIGPIPE, SIG_IGN);
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	const char *mode_name[] = {"pingpong", "connect", "bulk", "idle", "http", "rate", "first"};
	struct ld_thread *ths = calloc((size_t)g_threads, sizeof(*ths));
	struct ld_conn *conns = calloc((size_t)g_conns, sizeof(*conns));
	if (!ths || !conns)
		return 2;
	uint64_t ops = 0, bytes = 0, bytes_all = 0, errors = 0, checked = 0;
	const char *first_error = NULL;
	uint64_t t_start = em_now_ns(), t_end;
	struct ld_hist *total = calloc(1, sizeof(*total));
	if (!total)
		return 2;
	struct ld_hist *lag = calloc(1, sizeof(*lag));
	uint64_t max_inflight = 0;
	if (!lag)
		return 2;
	if (g_mode == LD_IDLE || g_mode == LD_FIRST) {
		if (g_mode == LD_IDLE) {
			ops = run_idle(&ths[0]);
		} else {
			char *req = malloc(g_size), *resp = malloc(g_size);
			if (!req || !resp)
				return 2;
			for (size_t k = 0; k < g_size; k++)
				req[k] = (char)('a' + k % 26);
			ops = run_first(&ths[0], req, resp);
			*total = ths[0].hist;
		}
		t_end = em_now_ns();
		errors = ths[0].errors;
		if (errors)
			first_error = ths[0].first_error;
	} else {
		for (int i = 0; i < g_conns; i++) {
			conns[i].id = (uint32_t)i;
			size_t rq = g_size, rs = g_size;
			if (g_mode == LD_HTTP)
				rq = LD_HTTP_REQ, rs = LD_HTTP_HEAD + g_size + LD_HTTP_REQ;
			conns[i].req = malloc(rq);
			conns[i].resp = malloc(rs);
			conns[i].req_len = g_size;
			conns[i].resp_cap = rs;
			if (!conns[i].req || !conns[i].resp)
				return 2;
			for (size_t k = 0; k < rq; k++)
				conns[i].req[k] = (char)('a' + (k + (size_t)i) % 26);
		}
		g_deadline_ns = t_start + (uint64_t)(g_secs * 1e9);
		int per = g_conns / g_threads, extra = g_conns % g_threads, at = 0;
		for (int t = 0; t < g_threads; t++) {
			ths[t].index = t;
			ths[t].conns = conns + at;
			ths[t].nconns = per + (t < extra);
			at += ths[t].nconns;
			if ((g_mode == LD_BULK || g_mode == LD_RATE) && !(ths[t].rbuf = malloc(LD_RECV_BUF)))
				return 2;
			pthread_create(&ths[t].tid, NULL, g_mode == LD_RATE ? rate_main : thread_main,
			               &ths[t]);
		}
		for (int t = 0; t < g_threads; t++) {
			pthread_join(ths[t].tid, NULL);
			ops += ths[t].ops;
			checked += ths[t].checked;
			/* bulk: only the window's bytes (a thread whose loop ended
			 * before the window contributes none) */
			bytes_all += ths[t].bytes;
			if (g_mode == LD_BULK)
				bytes += ths[t].window ? ths[t].bytes - ths[t].bytes_at : 0;
			else
				bytes += ths[t].bytes;
			errors += ths[t].errors;
			if (ths[t].errors && !first_error)
				first_error = ths[t].first_error;
			for (unsigned b = 0; b < LD_BUCKETS; b++) {
				total->count[b] += ths[t].hist.count[b];
				lag->count[b] += ths[t].lag.count[b];
			}
			total->n += ths[t].hist.n;
			lag->n += ths[t].lag.n;
			max_inflight = EM_MAX(max_inflight, ths[t].max_inflight);
		}
		t_end = EM_MIN(em_now_ns(), g_deadline_ns);
	}
	double open_ms = 0;
	if (g_mode == LD_BULK) {
		open_ms = (double)(g_open_ns - t_start) / 1e6;
		t_start = g_window_ns;
	}
	if (g_mode == LD_RATE)
		t_start = g_window_ns;
	double secs = t_end > t_start ? (double)(t_end - t_start) / 1e9 : 0;
	if (g_mode == LD_IDLE)
		secs = g_hold;
	printf("RESULT mode=%s conns=%d secs=%.3f ops=%llu rps=%.0f gbps=%.3f p50_us=%.1f "
	       "p90_us=%.1f p99_us=%.1f p999_us=%.1f errors=%llu",
	       mode_name[g_mode], g_conns, secs, (unsigned long long)ops,
	       g_mode == LD_IDLE || g_mode == LD_FIRST || secs <= 0 ? 0.0 : (double)ops / secs,
	       secs > 0 ? (double)bytes * 8 / secs / 1e9 : 0.0, hist_percentile(total, 50) / 1e3,
	       hist_percentile(total, 90) / 1e3, hist_percentile(total, 99) / 1e3,
	       hist_percentile(total, 99.9) / 1e3, (unsigned long long)errors);
	if (g_mode == LD_BULK)
		printf(" open_ms=%.0f gb_all=%.4f", open_ms, (double)bytes_all / 1e9);
	if (g_mode == LD_RATE)
		printf(" rate=%.0f lag_p50_us=%.1f lag_p99_us=%.1f max_inflight=%llu", g_rate,
		       hist_percentile(lag, 50) / 1e3, hist_percentile(lag, 99) / 1e3,
		       (unsigned long long)max_inflight);
	if (g_mode == LD_FIRST)
		printf(" first_us=%.1f next_us=%.1f", (double)g_first_ns / 1e3,
		       hist_percentile(total, 50) / 1e3);
	printf("\n");
	if ((g_mode == LD_IDLE || g_mode == LD_FIRST) && ops != (uint64_t)g_conns && !errors)
		errors = 1, first_error = "fewer connections than asked";
	/* A slow first answer is not an error (the rate shows it); no answer
	 * at all is. */
	if (g_mode != LD_IDLE && g_mode != LD_BULK && g_mode != LD_FIRST && checked == 0 && !errors)
		errors = 1, first_error = "no request completed";
	if (g_mode == LD_BULK && bytes == 0 && !errors)
		errors = 1, first_error = "no bulk bytes received";
	if (errors) {
		fprintf(stderr, "emload: FAILED: %llu errors; first: %s\n",
		        (unsigned long long)errors, first_error);
		return 1;
	}
	return 0;
}

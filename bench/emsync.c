/* emsync: simulated edges for the control-plane benchmark (bench/run sync).
 *
 * One process, one thread, N sessions on epoll. Each dials the cloud's
 * tunnel address, runs a dialer tunnel session as node "sim-<i>" with the
 * cluster key, opens one CONTROL stream, registers as an edge that never
 * applied anything (epoch "", generation 0, tunnel_port 0), then reads the
 * messages (tunnel/PROTOCOL.md 9): counts the objects and acks every marker
 * (sync and snapshot-end) as the real edge does. Nothing is applied.
 *
 * Per session it records when the snapshot-end marker arrived; for the
 * probe object (--probe KEY, "<namespace>/<type>/<name>") every message's
 * arrival (CLOCK_REALTIME) and, from the object's annotations
 * bench.edgemesh.io/seq and bench.edgemesh.io/written-us, which write it
 * carries and when that write happened: the propagation delay is arrival
 * minus written-us. Only writes with seq >= 1 that arrive live (not in the
 * snapshot) count.
 *
 * Usage: emsync --cloud IP:PORT --key FILE|STRING [--edges N] [--probe KEY]
 *               [--duration S] [--out FILE] [--sources K] [--quiet-ms MS]
 *
 *   --sources K   session i dials from 127.0.0.(1 + i % K) (default 1)
 *   --quiet-ms    "in sync": every session got its snapshot-end, acked the
 *                 newest generation any session saw, and no message came for
 *                 this long (default 500); then "READY <n> <ms>" goes to
 *                 stdout (ms: since start); each later return to that
 *                 state prints "IDLE <ms>", the CLOCK_REALTIME ms of the
 *                 last message before it (when the edges had caught up)
 *   --duration    stop after S seconds (default 600); SIGTERM/SIGINT stop too
 *
 * At the end a JSON summary goes to --out (or stdout): sessions, how many
 * reached snapshot-end, the time until all did (all_synced_ms, from the
 * first dial), objects and bytes received, errors with the first one, and
 * the probe's delays (count, p50, p99, max in ms), how many of its versions
 * arrived and how many of those missed some edge, with the raw events.
 * Exit status 1 when any session failed, 2 on a usage error. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "proto/clock.h"
#include "proto/frame.h"
#include "tunnel/session.h"

#define SY_RBUF      (256 * 1024)
#define SY_MAX_LINE  (16u * 1024 * 1024)
#define SY_ANN_SEQ   "bench.edgemesh.io/seq"
#define SY_ANN_WRITE "bench.edgemesh.io/written-us"

enum sy_state { SY_CONNECTING, SY_TUNNEL, SY_DONE };

struct sy_sess {
	int fd;
	int index;
	enum sy_state state;
	struct em_tunnel_session *ts;
	uint32_t stream;
	bool stream_open;
	bool want_out; /* EPOLLOUT registered */
	uint64_t next_tick_ms;
	/* Received stream bytes not yet split into lines. */
	char *line;
	size_t line_len, line_cap;
	/* Stream bytes (register, acks) the window or ring did not take yet. */
	char *pend;
	size_t pend_len, pend_cap;
	uint64_t objects, msgs, bytes, acks;
	uint64_t gen_acked;
	int64_t snap_end_us; /* realtime of snapshot-end, 0 before */
	bool failed;
};

struct sy_event {
	int edge;
	int64_t arrival_us, written_us;
	long seq;
	uint64_t rv;
	char op[16];
};

static struct sy_sess *g_sess;
static int g_n = 1, g_sources = 1;
static int g_ep;
static struct sockaddr_in g_cloud;
static char *g_key;
static size_t g_key_len;
static const char *g_probe = "";
static const char *g_out;
static double g_duration = 600;
static uint64_t g_quiet_ms = 500;
static volatile sig_atomic_t g_stop;
static int64_t g_t0_us;
static uint64_t g_last_msg_ms;
static int64_t g_last_msg_us; /* realtime */
static uint64_t g_max_gen;
static int g_synced, g_failed, g_closed;
static char g_first_error[256];
static struct sy_event *g_ev;
static size_t g_nev, g_cap_ev;
static uint64_t g_id_seq;

static int64_t real_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t mono_us(void *ctx)
{
	(void)ctx;
	return em_now_ns() / 1000;
}

static void sess_fail(struct sy_sess *s, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

static void sess_fail(struct sy_sess *s, const char *fmt, ...)
{
	if (s->failed)
		return;
	s->failed = true;
	if (g_failed++ == 0) {
		char msg[200];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		snprintf(g_first_error, sizeof(g_first_error), "sim-%d: %s", s->index, msg);
	}
}

static int grow(char **buf, size_t *cap, size_t need)
{
	if (need <= *cap)
		return 0;
	size_t c = *cap ? *cap : 4096;
	while (c < need)
		c *= 2;
	char *n = realloc(*buf, c);
	if (!n)
		return -ENOMEM;
	*buf = n;
	*cap = c;
	return 0;
}

/* Queues <len> bytes on the control stream: what the stream takes now goes
 * at once, the rest waits in <pend> for a WINDOW event or ring room. */
static void stream_send(struct sy_sess *s, const char *data, size_t len)
{
	if (s->pend_len == 0 && s->stream_open) {
		int n = em_tunnel_session_write(s->ts, s->stream, data, len, false);
		if (n < 0) {
			sess_fail(s, "stream write: %s", strerror(-n));
			return;
		}
		data += n;
		len -= (size_t)n;
	}
	if (len == 0)
		return;
	if (grow(&s->pend, &s->pend_cap, s->pend_len + len)) {
		sess_fail(s, "out of memory");
		return;
	}
	memcpy(s->pend + s->pend_len, data, len);
	s->pend_len += len;
}

static void pend_flush(struct sy_sess *s)
{
	if (!s->pend_len || !s->stream_open)
		return;
	int n = em_tunnel_session_write(s->ts, s->stream, s->pend, s->pend_len, false);
	if (n < 0) {
		sess_fail(s, "stream write: %s", strerror(-n));
		return;
	}
	memmove(s->pend, s->pend + n, s->pend_len - (size_t)n);
	s->pend_len -= (size_t)n;
}

static void new_id(char id[40])
{
	uint64_t v = ++g_id_seq;
	snprintf(id, 40, "e5e5e5e5-0000-4000-8000-%012llx", (unsigned long long)v);
}

static void send_register(struct sy_sess *s)
{
	char id[40], buf[512];
	new_id(id);
	long long now = (long long)(real_us() / 1000);
	int n = snprintf(buf, sizeof(buf),
	                 "{\"header\":{\"msg_id\":\"%s\",\"timestamp\":%lld},\"route\":{\"source\":"
	                 "\"edgemesh\",\"group\":\"control\",\"operation\":\"query\",\"resource\":"
	                 "\"sync\"},\"content\":{\"node\":\"sim-%d\",\"tunnel_port\":0,\"version\":"
	                 "\"emsync\",\"start_time\":%lld,\"epoch\":\"\",\"generation\":0}}\n",
	                 id, now, s->index, (long long)(g_t0_us / 1000));
	stream_send(s, buf, (size_t)n);
}

static void send_ack(struct sy_sess *s, const char *parent, uint64_t gen)
{
	char id[40], buf[512];
	new_id(id);
	int n = snprintf(buf, sizeof(buf),
	                 "{\"header\":{\"msg_id\":\"%s\",\"parent_msg_id\":\"%.64s\",\"timestamp\":"
	                 "%lld},\"route\":{\"source\":\"edgemesh\",\"group\":\"control\","
	                 "\"operation\":\"response\",\"resource\":\"sync\"},\"content\":"
	                 "{\"generation\":%llu}}\n",
	                 id, parent, (long long)(real_us() / 1000), (unsigned long long)gen);
	stream_send(s, buf, (size_t)n);
	s->acks++;
	s->gen_acked = gen;
}

/* The string value of "<key>":"..." inside [p, end), copied to <out>.
 * Returns false when absent or too long (the caller falls back to cJSON). */
static bool find_str(const char *p, const char *end, const char *key, char *out, size_t cap)
{
	size_t kl = strlen(key);
	for (const char *q = p; q + kl + 3 < end; q++) {
		q = memchr(q, '"', (size_t)(end - q));
		if (!q || q + kl + 3 >= end)
			return false;
		if (memcmp(q + 1, key, kl) == 0 && q[kl + 1] == '"' && q[kl + 2] == ':' &&
		    q[kl + 3] == '"') {
			const char *v = q + kl + 4;
			const char *e = memchr(v, '"', (size_t)(end - v));
			if (!e || (size_t)(e - v) >= cap || memchr(v, '\\', (size_t)(e - v)))
				return false;
			memcpy(out, v, (size_t)(e - v));
			out[e - v] = 0;
			return true;
		}
	}
	return false;
}

struct sy_route {
	char group[32], op[16], resource[600], rv[32];
};

/* The cloud encodes header, route, then content (store/beehive.c): the
 * route lies before the first "content": and holds no nested objects, so
 * it is read without parsing the object that follows. */
static bool fast_route(const char *line, size_t len, struct sy_route *r)
{
	const char *end = line + len;
	const char *c = NULL;
	for (const char *q = line; q + 10 < end; q++) {
		q = memchr(q, '"', (size_t)(end - q));
		if (!q || q + 10 >= end)
			break;
		if (memcmp(q, "\"content\":", 10) == 0) {
			c = q;
			break;
		}
	}
	if (!c)
		return false;
	r->rv[0] = 0;
	find_str(line, c, "resourceversion", r->rv, sizeof(r->rv));
	return find_str(line, c, "group", r->group, sizeof(r->group)) &&
	       find_str(line, c, "operation", r->op, sizeof(r->op)) &&
	       find_str(line, c, "resource", r->resource, sizeof(r->resource));
}

static const char *jstr(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void probe_event(struct sy_sess *s, const char *line, size_t len, const struct sy_route *r,
                        int64_t now_us)
{
	cJSON *root = cJSON_ParseWithLength(line, len);
	const cJSON *ann = cJSON_GetObjectItemCaseSensitive(
	        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "content"),
	                                         "metadata"),
	        "annotations");
	const char *seq = jstr(ann, SY_ANN_SEQ), *wr = jstr(ann, SY_ANN_WRITE);
	if (g_nev == g_cap_ev) {
		size_t cap = g_cap_ev ? g_cap_ev * 2 : 4096;
		struct sy_event *n = realloc(g_ev, cap * sizeof(*n));
		if (!n) {
			cJSON_Delete(root);
			sess_fail(s, "out of memory");
			return;
		}
		g_ev = n;
		g_cap_ev = cap;
	}
	struct sy_event *e = &g_ev[g_nev++];
	*e = (struct sy_event){.edge = s->index,
	                       .arrival_us = now_us,
	                       .written_us = wr ? strtoll(wr, NULL, 10) : 0,
	                       .seq = seq ? strtol(seq, NULL, 10) : -1,
	                       .rv = strtoull(r->rv, NULL, 10)};
	snprintf(e->op, sizeof(e->op), "%s", r->op);
	cJSON_Delete(root);
}

static void on_marker(struct sy_sess *s, const char *line, size_t len)
{
	cJSON *root = cJSON_ParseWithLength(line, len);
	const cJSON *ct = cJSON_GetObjectItemCaseSensitive(root, "content");
	const cJSON *g = cJSON_GetObjectItemCaseSensitive(ct, "generation");
	const char *phase = jstr(ct, "phase");
	const char *id = jstr(cJSON_GetObjectItemCaseSensitive(root, "header"), "msg_id");
	if (!phase || !cJSON_IsNumber(g) || !id) {
		sess_fail(s, "bad marker: %.120s", line);
		cJSON_Delete(root);
		return;
	}
	uint64_t gen = (uint64_t)g->valuedouble;
	if (gen > g_max_gen)
		g_max_gen = gen;
	if (strcmp(phase, "snapshot-end") == 0 || strcmp(phase, "sync") == 0) {
		send_ack(s, id, gen);
		if (phase[1] == 'n' && !s->snap_end_us) {
			s->snap_end_us = real_us();
			g_synced++;
		}
	}
	cJSON_Delete(root);
}

static void on_line(struct sy_sess *s, const char *line, size_t len)
{
	struct sy_route r;
	int64_t now_us = real_us();
	s->msgs++;
	g_last_msg_ms = em_now_ms();
	g_last_msg_us = now_us;
	if (!fast_route(line, len, &r)) {
		cJSON *root = cJSON_ParseWithLength(line, len);
		const cJSON *rt = cJSON_GetObjectItemCaseSensitive(root, "route");
		const char *gr = jstr(rt, "group"), *op = jstr(rt, "operation"),
		           *res = jstr(rt, "resource");
		const char *rv =
		        jstr(cJSON_GetObjectItemCaseSensitive(root, "header"), "resourceversion");
		bool ok = gr && op && res;
		if (ok) {
			snprintf(r.group, sizeof(r.group), "%s", gr);
			snprintf(r.op, sizeof(r.op), "%s", op);
			snprintf(r.resource, sizeof(r.resource), "%s", res);
			snprintf(r.rv, sizeof(r.rv), "%s", rv ? rv : "");
		}
		cJSON_Delete(root);
		if (!ok) {
			sess_fail(s, "unreadable message: %.120s", line);
			return;
		}
	}
	if (strcmp(r.group, "resource") == 0) {
		s->objects++;
		if (r.rv[0]) {
			uint64_t g = strtoull(r.rv, NULL, 10);
			if (g > g_max_gen)
				g_max_gen = g;
		}
		if (g_probe[0] && strcmp(r.resource, g_probe) == 0)
			probe_event(s, line, len, &r, now_us);
	} else if (strcmp(r.group, "control") == 0 && strcmp(r.op, "response") == 0) {
		on_marker(s, line, len);
	} else if (strcmp(r.op, "error") == 0) {
		sess_fail(s, "cloud error: %.160s", line);
	}
}

static void on_data(struct sy_sess *s, const struct em_tunnel_event *ev, uint64_t now)
{
	size_t n = ev->data.len;
	s->bytes += n;
	if (grow(&s->line, &s->line_cap, s->line_len + n)) {
		sess_fail(s, "out of memory");
		return;
	}
	memcpy(s->line + s->line_len, ev->data.base, n);
	size_t old = s->line_len;
	s->line_len += n;
	size_t start = 0;
	const char *nl;
	/* Only the new bytes can hold a newline not seen before. */
	size_t from = old;
	while ((nl = memchr(s->line + from, '\n', s->line_len - from))) {
		size_t end = (size_t)(nl - s->line);
		on_line(s, s->line + start, end - start);
		start = from = end + 1;
	}
	if (start) {
		memmove(s->line, s->line + start, s->line_len - start);
		s->line_len -= start;
	}
	if (s->line_len > SY_MAX_LINE)
		sess_fail(s, "a message over 16 MiB");
	/* Copied out: the whole slice goes back as window at once. */
	em_tunnel_session_consume(s->ts, ev->stream_id, n, now);
}

static void on_event(void *ctx, const struct em_tunnel_event *ev)
{
	struct sy_sess *s = ctx;
	uint64_t now = em_now_ms();
	switch (ev->type) {
	case EM_TUNNEL_EV_HANDSHAKE_DONE: {
		struct em_frame_target tg = {.protocol = EM_FRAME_PROTO_CONTROL};
		int rc = em_tunnel_session_open(s->ts, &tg, NULL, 0, s, &s->stream);
		if (rc < 0) {
			sess_fail(s, "open CONTROL stream: %s", strerror(-rc));
			return;
		}
		s->stream_open = true;
		send_register(s);
		break;
	}
	case EM_TUNNEL_EV_HANDSHAKE_FAILED:
		sess_fail(s, "handshake failed: reason %u", ev->reason);
		break;
	case EM_TUNNEL_EV_STREAM_OPEN:
		em_tunnel_session_reset(s->ts, ev->stream_id, EM_REASON_REFUSED, "simulated edge");
		break;
	case EM_TUNNEL_EV_DATA:
		if (s->stream_open && ev->stream_id == s->stream)
			on_data(s, ev, now);
		break;
	case EM_TUNNEL_EV_WINDOW:
		pend_flush(s);
		break;
	case EM_TUNNEL_EV_FIN:
	case EM_TUNNEL_EV_RESET:
		if (ev->stream_id == s->stream && s->stream_open) {
			s->stream_open = false;
			if (!g_stop)
				sess_fail(s, "control stream ended (%s, reason %u: %.*s)",
				          ev->type == EM_TUNNEL_EV_FIN ? "FIN" : "RST", ev->reason,
				          (int)ev->data.len, (const char *)ev->data.base);
		}
		break;
	case EM_TUNNEL_EV_CLOSED:
		if (!g_stop)
			sess_fail(s, "tunnel closed: reason %u: %.*s", ev->reason,
			          (int)ev->data.len, (const char *)ev->data.base);
		break;
	default:
		break;
	}
}

static void sess_close(struct sy_sess *s)
{
	if (s->state == SY_DONE)
		return;
	if (s->fd >= 0) {
		epoll_ctl(g_ep, EPOLL_CTL_DEL, s->fd, NULL);
		close(s->fd);
	}
	s->fd = -1;
	s->state = SY_DONE;
	g_closed++;
}

static void set_out(struct sy_sess *s, bool want)
{
	if (want == s->want_out)
		return;
	struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = s};
	epoll_ctl(g_ep, EPOLL_CTL_MOD, s->fd, &ev);
	s->want_out = want;
}

static void flush_out(struct sy_sess *s)
{
	for (;;) {
		pend_flush(s);
		struct iovec iov[16];
		unsigned n = em_tunnel_session_output_iov(s->ts, iov, 16);
		if (n == 0)
			break;
		ssize_t w = writev(s->fd, iov, (int)n);
		if (w == -1) {
			if (errno == EAGAIN) {
				set_out(s, true);
				return;
			}
			if (errno == EINTR)
				continue;
			sess_fail(s, "write: %s", strerror(errno));
			sess_close(s);
			return;
		}
		em_tunnel_session_output_advance(s->ts, (size_t)w);
	}
	set_out(s, false);
	if (em_tunnel_session_should_close(s->ts))
		sess_close(s);
}

static int sess_start(struct sy_sess *s)
{
	s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->fd == -1)
		return -errno;
	int one = 1;
	setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (g_sources > 1) {
		struct sockaddr_in src = {.sin_family = AF_INET};
		src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(s->index % g_sources));
		if (bind(s->fd, (struct sockaddr *)&src, sizeof(src)) == -1)
			return -errno;
	}
	if (connect(s->fd, (struct sockaddr *)&g_cloud, sizeof(g_cloud)) == -1 &&
	    errno != EINPROGRESS)
		return -errno;
	s->state = SY_CONNECTING;
	char name[32];
	snprintf(name, sizeof(name), "sim-%d", s->index);
	struct em_tunnel_conf tc = {
	        .role = EM_TUNNEL_DIALER,
	        .node_name = name,
	        .key = g_key,
	        .key_len = g_key_len,
	        .on_event = on_event,
	        .clock_us = mono_us,
	        .ctx = s,
	        .max_streams = 4,
	        /* Only register and acks go out: a small ring. */
	        .send_buffer = 16 * 1024,
	        .ctrl_buffer = 4 * 1024,
	};
	int rc = em_tunnel_session_create(&tc, em_now_ms(), &s->ts);
	if (rc)
		return rc;
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = s};
	s->want_out = true;
	if (epoll_ctl(g_ep, EPOLL_CTL_ADD, s->fd, &ev) == -1)
		return -errno;
	return 0;
}

static void sess_io(struct sy_sess *s, uint32_t events, char *rbuf)
{
	if (s->state == SY_CONNECTING) {
		int err = 0;
		socklen_t l = sizeof(err);
		getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &l);
		if (err) {
			sess_fail(s, "connect: %s", strerror(err));
			sess_close(s);
			return;
		}
		if (!(events & (EPOLLOUT | EPOLLIN)))
			return;
		s->state = SY_TUNNEL;
	}
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		/* Bounded per turn so one busy session does not starve the rest. */
		for (int k = 0; k < 8; k++) {
			ssize_t r = read(s->fd, rbuf, SY_RBUF);
			if (r == -1) {
				if (errno == EAGAIN)
					break;
				if (errno == EINTR)
					continue;
				sess_fail(s, "read: %s", strerror(errno));
				sess_close(s);
				return;
			}
			if (r == 0) {
				if (!g_stop)
					sess_fail(s, "the cloud closed the connection");
				sess_close(s);
				return;
			}
			em_tunnel_session_input(s->ts, rbuf, (size_t)r, em_now_ms());
			if (r < SY_RBUF)
				break;
		}
	}
	flush_out(s);
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

static void on_signal(int sig)
{
	(void)sig;
	g_stop = 1;
}

static int read_key(const char *arg)
{
	struct stat sb;
	if (stat(arg, &sb) == 0 && S_ISREG(sb.st_mode)) {
		FILE *f = fopen(arg, "r");
		if (!f)
			return -errno;
		g_key = calloc(1, (size_t)sb.st_size + 1);
		if (!g_key) {
			fclose(f);
			return -ENOMEM;
		}
		g_key_len = fread(g_key, 1, (size_t)sb.st_size, f);
		fclose(f);
		while (g_key_len && (g_key[g_key_len - 1] == '\n' || g_key[g_key_len - 1] == '\r'))
			g_key[--g_key_len] = 0;
	} else {
		g_key = strdup(arg);
		if (!g_key)
			return -ENOMEM;
		g_key_len = strlen(g_key);
	}
	return g_key_len ? 0 : -EINVAL;
}

static int parse_cloud(const char *arg)
{
	char host[64];
	const char *c = strrchr(arg, ':');
	if (!c || (size_t)(c - arg) >= sizeof(host))
		return -EINVAL;
	memcpy(host, arg, (size_t)(c - arg));
	host[c - arg] = 0;
	g_cloud.sin_family = AF_INET;
	g_cloud.sin_port = htons((uint16_t)atoi(c + 1));
	return inet_pton(AF_INET, host, &g_cloud.sin_addr) == 1 ? 0 : -EINVAL;
}

static void usage(void)
{
	fprintf(stderr,
	        "usage: emsync --cloud IP:PORT --key FILE|STRING [--edges N] [--probe KEY]\n"
	        "              [--duration S] [--out FILE] [--sources K] [--quiet-ms MS]\n");
	exit(2);
}

static void write_summary(FILE *f, int64_t end_us)
{
	int64_t last_snap = 0;
	uint64_t objects = 0, msgs = 0, bytes = 0, acks = 0;
	for (int i = 0; i < g_n; i++) {
		struct sy_sess *s = &g_sess[i];
		if (s->snap_end_us > last_snap)
			last_snap = s->snap_end_us;
		objects += s->objects;
		msgs += s->msgs;
		bytes += s->bytes;
		acks += s->acks;
	}
	/* Propagation: live messages of the probe's writes (seq >= 1). */
	int64_t *d = calloc(g_nev ? g_nev : 1, sizeof(*d));
	size_t nd = 0, resent = 0;
	long max_seq = 0;
	for (size_t i = 0; d && i < g_nev; i++) {
		const struct sy_event *e = &g_ev[i];
		if (e->seq >= 1 && strcmp(e->op, "insert") == 0)
			resent++; /* in a snapshot: the edge fell behind the log */
		if (e->seq >= 1 && e->written_us && strcmp(e->op, "update") == 0) {
			d[nd++] = e->arrival_us - e->written_us;
			if (e->seq > max_seq)
				max_seq = e->seq;
		}
	}
	if (d)
		qsort(d, nd, sizeof(*d), cmp_i64);
	/* Versions: the writes the cloud read (one it read after the next
	 * write replaced it never existed for it); each must reach every edge,
	 * as an update or in a snapshot. */
	int64_t *pair = calloc(g_nev ? g_nev : 1, sizeof(*pair));
	size_t np = 0, versions = 0, incomplete = 0;
	for (size_t i = 0; pair && i < g_nev; i++)
		if (g_ev[i].seq >= 1)
			pair[np++] = ((int64_t)g_ev[i].seq << 24) | g_ev[i].edge;
	if (pair)
		qsort(pair, np, sizeof(*pair), cmp_i64);
	for (size_t i = 0; i < np;) {
		int64_t seq = pair[i] >> 24;
		int edges = 0;
		for (; i < np && pair[i] >> 24 == seq; i++)
			if (i == 0 || pair[i] != pair[i - 1])
				edges++;
		versions++;
		if (edges < g_n)
			incomplete++;
	}
	free(pair);
	double p50 = nd ? (double)d[(nd - 1) * 50 / 100] / 1000 : 0;
	double p99 = nd ? (double)d[(nd - 1) * 99 / 100] / 1000 : 0;
	double mx = nd ? (double)d[nd - 1] / 1000 : 0;
	fprintf(f, "{\"edges\": %d, \"synced\": %d, \"failed\": %d, \"first_error\": \"", g_n,
	        g_synced, g_failed);
	for (const char *p = g_first_error; *p; p++)
		fprintf(f, (*p == '"' || *p == '\\') ? "\\%c" : (*p < 0x20 ? "?" : "%c"), *p);
	fprintf(f,
	        "\",\n \"all_synced_ms\": %.1f, \"run_ms\": %.1f, \"max_generation\": %llu,\n"
	        " \"objects\": %llu, \"messages\": %llu, \"bytes\": %llu, \"acks\": %llu,\n"
	        " \"probe\": {\"key\": \"%s\", \"events\": %zu, \"max_seq\": %ld, \"p50_ms\": "
	        "%.2f, "
	        "\"p99_ms\": %.2f, \"max_ms\": %.2f, \"resent\": %zu, \"versions\": %zu, "
	        "\"incomplete\": %zu},\n",
	        g_synced == g_n ? (double)(last_snap - g_t0_us) / 1000 : -1.0,
	        (double)(end_us - g_t0_us) / 1000, (unsigned long long)g_max_gen,
	        (unsigned long long)objects, (unsigned long long)msgs, (unsigned long long)bytes,
	        (unsigned long long)acks, g_probe, nd, max_seq, p50, p99, mx, resent, versions,
	        incomplete);
	free(d);
	fprintf(f, " \"probe_events\": [");
	for (size_t i = 0; i < g_nev; i++) {
		const struct sy_event *e = &g_ev[i];
		fprintf(f, "%s\n  [%d, %lld, %lld, %ld, %llu, \"%s\"]", i ? "," : "", e->edge,
		        (long long)e->arrival_us, (long long)e->written_us, e->seq,
		        (unsigned long long)e->rv, e->op);
	}
	fprintf(f, "]}\n");
}

int main(int argc, char **argv)
{
	const char *key = NULL, *cloud = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v)
			usage();
		if (strcmp(a, "--cloud") == 0)
			cloud = v;
		else if (strcmp(a, "--key") == 0)
			key = v;
		else if (strcmp(a, "--edges") == 0)
			g_n = atoi(v);
		else if (strcmp(a, "--probe") == 0)
			g_probe = v;
		else if (strcmp(a, "--duration") == 0)
			g_duration = atof(v);
		else if (strcmp(a, "--out") == 0)
			g_out = v;
		else if (strcmp(a, "--sources") == 0)
			g_sources = atoi(v);
		else if (strcmp(a, "--quiet-ms") == 0)
			g_quiet_ms = (uint64_t)atoll(v);
		else
			usage();
		i++;
	}
	if (!cloud || !key || g_n < 1 || g_sources < 1 || g_sources > 254 || parse_cloud(cloud)) {
		usage();
	}
	if (read_key(key)) {
		fprintf(stderr, "emsync: no usable key in %s\n", key);
		return 2;
	}
	/* One descriptor per session, and some to spare. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)g_n + 64) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		if (rl.rlim_cur < (rlim_t)g_n + 64) {
			fprintf(stderr, "emsync: %d sessions need more descriptors than %llu\n",
			        g_n, (unsigned long long)rl.rlim_cur);
			return 2;
		}
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	setvbuf(stdout, NULL, _IOLBF, 0);

	g_ep = epoll_create1(EPOLL_CLOEXEC);
	g_sess = calloc((size_t)g_n, sizeof(*g_sess));
	char *rbuf = malloc(SY_RBUF);
	if (g_ep == -1 || !g_sess || !rbuf) {
		fprintf(stderr, "emsync: out of memory\n");
		return 2;
	}
	g_t0_us = real_us();
	for (int i = 0; i < g_n; i++) {
		g_sess[i].index = i;
		g_sess[i].fd = -1;
		int rc = sess_start(&g_sess[i]);
		if (rc) {
			sess_fail(&g_sess[i], "dial: %s", strerror(-rc));
			sess_close(&g_sess[i]);
		}
	}
	uint64_t t_end = em_now_ms() + (uint64_t)(g_duration * 1000);
	bool ready = false, idle = false;
	uint64_t idle_since = 0;
	struct epoll_event evs[256];
	while (!g_stop) {
		uint64_t now = em_now_ms();
		if (now >= t_end)
			break;
		int n = epoll_wait(g_ep, evs, 256, 20);
		if (n == -1 && errno != EINTR)
			break;
		for (int k = 0; k < n; k++)
			sess_io(evs[k].data.ptr, evs[k].events, rbuf);
		now = em_now_ms();
		for (int i = 0; i < g_n; i++) {
			struct sy_sess *s = &g_sess[i];
			if (s->state != SY_TUNNEL || now < s->next_tick_ms)
				continue;
			s->next_tick_ms = now + em_tunnel_session_tick(s->ts, now);
			flush_out(s);
		}
		/* idle_since is at least quiet_ms past the last message then. */
		if (idle && g_last_msg_ms >= idle_since)
			idle = false;
		if (!idle && g_synced == g_n && now - g_last_msg_ms >= g_quiet_ms) {
			bool all = true;
			for (int i = 0; i < g_n && all; i++)
				all = g_sess[i].gen_acked >= g_max_gen;
			if (all) {
				if (!ready)
					printf("READY %d %.0f\n", g_n,
					       (double)(real_us() - g_t0_us) / 1000);
				else
					printf("IDLE %lld\n", (long long)(g_last_msg_us / 1000));
				ready = idle = true;
				idle_since = now;
			}
		}
		if (g_closed == g_n)
			break;
	}
	int64_t end_us = real_us();
	FILE *f = g_out ? fopen(g_out, "w") : stdout;
	if (!f) {
		fprintf(stderr, "emsync: %s: %s\n", g_out, strerror(errno));
		return 2;
	}
	write_summary(f, end_us);
	if (f != stdout)
		fclose(f);
	if (g_failed)
		fprintf(stderr, "emsync: %d session(s) failed; first: %s\n", g_failed,
		        g_first_error);
	for (int i = 0; i < g_n; i++) {
		sess_close(&g_sess[i]);
		em_tunnel_session_destroy(g_sess[i].ts);
		free(g_sess[i].line);
		free(g_sess[i].pend);
	}
	free(g_sess);
	free(g_ev);
	free(rbuf);
	free(g_key);
	return g_failed ? 1 : 0;
}

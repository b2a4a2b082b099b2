/* The Kubernetes API watcher: one thread per kind doing blocking I/O with
 * deadlines (poll on the socket and a stop eventfd), batches handed to the
 * sync thread through a bounded queue. */
#include "store/kube.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "proto/clock.h"
#include "proto/log.h"
#include "store/file.h"
#include "store/json.h"
#include "store/kube_src.h"

#define CONNECT_MS     10000u
#define IO_MS          30000u /* a request's answer: longest silence */
#define BACKOFF_MIN_MS 200u
#define BACKOFF_MAX_MS 30000u
#define TOKEN_MAX      (64u * 1024)
#define ERR_BODY_MAX   (64u * 1024)
/* Queue bounds: batches, and their bytes (one batch is always let in). */
#define QUEUE_MAX_BATCHES 16u
#define QUEUE_MAX_BYTES   (64u * 1024 * 1024)
/* A watch batch is handed over when the socket has nothing more for now,
 * or at these sizes. */
#define BATCH_MAX_EVENTS 1000u
#define BATCH_MAX_BYTES  (16u * 1024 * 1024)

/* Results of the steps below besides 0 and -errno. */
#define R_GONE   (-ESTALE)    /* 410: list again */
#define R_STOP   (-ECANCELED) /* em_kube_stop */
#define R_RELIST (-ERESTART)  /* the sync thread asked for a list */
#define R_FAILED (-EPROTO)    /* failed; the reason is in <why> */

static const char *const kind_paths[EM_KIND__COUNT] = {
        [EM_KIND_SERVICE] = "/api/v1/services",
        [EM_KIND_ENDPOINTS] = "/api/v1/endpoints",
        [EM_KIND_ENDPOINTSLICE] = "/apis/discovery.k8s.io/v1/endpointslices",
        [EM_KIND_POD] = "/api/v1/pods",
        [EM_KIND_NODE] = "/api/v1/nodes",
        [EM_KIND_RULEENDPOINT] = "/apis/rules.kubeedge.io/v1/ruleendpoints",
        [EM_KIND_RULE] = "/apis/rules.kubeedge.io/v1/rules",
};

struct conn {
	int fd; /* -1: none */
	SSL_CTX *ctx;
	SSL *ssl;
	char *token; /* read at connect; NULL: none */
	char buf[65536];
	size_t off, len; /* unread: buf[off..len) */
};

struct kwatch {
	struct em_kube *k;
	enum em_kind kind;
	pthread_t thread;
	bool started;
	bool listed;  /* a list of this kind completed */
	char rv[256]; /* resume the watch from here */
	uint32_t backoff;
	uint64_t rng;
	char why[512];   /* reason of the step that failed */
	char state[512]; /* what was last logged as wrong, "" when fine */
	struct conn c;
	struct em_http1_head head;
	struct em_kube_lines lines;
	struct em_kube_batch *batch; /* watch events not yet handed over */
	bool progress;               /* the watch delivered something */
	bool fresh_list;             /* listed, and no watch event since */
};

struct em_kube {
	struct em_kube_url url;
	char token_file[PATH_MAX];
	char ca_file[PATH_MAX];
	unsigned watch_timeout_s;
	struct em_kube_src *src;
	int fd;      /* eventfd: batches are waiting */
	int stop_fd; /* eventfd: written once, at stop */
	atomic_bool stop;
	atomic_bool relist[EM_KIND__COUNT];
	pthread_mutex_t mu;
	pthread_cond_t not_full;
	struct em_kube_batch *head, *tail;
	size_t q_n, q_bytes;
	atomic_uint_fast64_t lists, relists, watches, events, errors;
	struct kwatch w[EM_KIND__COUNT];
};

static const char *kname(const struct kwatch *w)
{
	return strrchr(kind_paths[w->kind], '/') + 1;
}

static int fail(struct kwatch *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct kwatch *w, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(w->why, sizeof(w->why), fmt, ap);
	va_end(ap);
	/* Parts of it come from the server: one log line stays one line. */
	for (char *p = w->why; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	return R_FAILED;
}

/* Logs <w->why> once per change of what is wrong. */
static void log_state(struct kwatch *w)
{
	if (strcmp(w->state, w->why) == 0)
		return;
	snprintf(w->state, sizeof(w->state), "%s", w->why);
	EM_WARN("controller", "kubernetes: %s: %s (retrying)", kname(w), w->why);
}

static void log_healthy(struct kwatch *w, const char *what)
{
	if (!w->state[0])
		return;
	w->state[0] = 0;
	EM_INFO("controller", "kubernetes: %s: %s again", kname(w), what);
}

/* ---- I/O with deadlines ---- */

static bool stopping(const struct em_kube *k)
{
	return atomic_load(&k->stop);
}

/* Waits until <fd> has <ev>, in slices of a second at most so that a list
 * asked for by the sync thread interrupts a quiet watch. Returns 0,
 * -ETIMEDOUT, R_STOP or R_RELIST (only when <relist_ok>). */
static int wait_fd(struct kwatch *w, int fd, short ev, uint64_t deadline, bool relist_ok)
{
	for (;;) {
		uint64_t now = em_now_ms();
		if (stopping(w->k))
			return R_STOP;
		if (relist_ok && atomic_load(&w->k->relist[w->kind]))
			return R_RELIST;
		if (now >= deadline)
			return -ETIMEDOUT;
		uint64_t left = deadline - now;
		struct pollfd p[2] = {{.fd = fd, .events = ev},
		                      {.fd = w->k->stop_fd, .events = POLLIN}};
		int n = poll(p, 2, (int)(left > 1000 ? 1000 : left));
		if (n == -1 && errno != EINTR)
			return -errno;
		if (n > 0 && p[0].revents)
			return 0;
	}
}

static void conn_close(struct conn *c)
{
	if (c->ssl) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->ctx) {
		SSL_CTX_free(c->ctx);
		c->ctx = NULL;
	}
	if (c->fd != -1)
		close(c->fd);
	c->fd = -1;
	free(c->token);
	c->token = NULL;
	c->off = c->len = 0;
}

static const char *ssl_reason(const struct conn *c)
{
	static __thread char buf[256];
	long v = c->ssl ? SSL_get_verify_result(c->ssl) : X509_V_OK;
	unsigned long e = ERR_peek_last_error();
	if (v != X509_V_OK)
		snprintf(buf, sizeof(buf), "certificate verify failed: %s",
		         X509_verify_cert_error_string(v));
	else if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	else
		snprintf(buf, sizeof(buf), "%s", errno ? strerror(errno) : "connection closed");
	ERR_clear_error();
	return buf;
}

static int read_token(struct kwatch *w)
{
	const char *path = w->k->token_file;
	if (!path[0])
		return 0;
	size_t len = 0;
	int rc = 0;
	char why[200];
	char *t = em_file_read(AT_FDCWD, path, TOKEN_MAX, false, NULL, &len, &rc, why, sizeof(why));
	if (!t)
		return fail(w, "token_file %s: %s", path, why);
	while (len && (t[len - 1] == '\n' || t[len - 1] == '\r' || t[len - 1] == ' '))
		t[--len] = 0;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)t[i] < 0x21 || (unsigned char)t[i] > 0x7e) {
			free(t);
			return fail(w, "token_file %s: expected one line of printable characters",
			            path);
		}
	w->c.token = t;
	return 0;
}

static int tls_start(struct kwatch *w, uint64_t deadline)
{
	struct conn *c = &w->c;
	const struct em_kube_url *u = &w->k->url;
	const char *ca = w->k->ca_file;
	if (!(c->ctx = SSL_CTX_new(TLS_client_method())))
		return fail(w, "TLS: %s", ssl_reason(c));
	SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
	SSL_CTX_set_options(c->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
	if (ca[0] ? SSL_CTX_load_verify_locations(c->ctx, ca, NULL) != 1
	          : SSL_CTX_set_default_verify_paths(c->ctx) != 1)
		return fail(w, "ca_file %s: %s", ca[0] ? ca : "(system)", ssl_reason(c));
	if (!(c->ssl = SSL_new(c->ctx)) || SSL_set_fd(c->ssl, c->fd) != 1)
		return fail(w, "TLS: %s", ssl_reason(c));
	struct em_addr ip;
	bool is_ip = em_addr_parse(u->host, false, &ip) == 0;
	if (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), u->host) != 1
	          : SSL_set_tlsext_host_name(c->ssl, u->host) != 1 ||
	                    SSL_set1_host(c->ssl, u->host) != 1)
		return fail(w, "TLS: %s", ssl_reason(c));
	for (;;) {
		ERR_clear_error();
		int r = SSL_connect(c->ssl);
		if (r == 1)
			return 0;
		int e = SSL_get_error(c->ssl, r);
		int rc;
		if (e == SSL_ERROR_WANT_READ)
			rc = wait_fd(w, c->fd, POLLIN, deadline, false);
		else if (e == SSL_ERROR_WANT_WRITE)
			rc = wait_fd(w, c->fd, POLLOUT, deadline, false);
		else
			return fail(w, "TLS handshake with %s: %s", u->authority, ssl_reason(c));
		if (rc == -ETIMEDOUT)
			return fail(w, "TLS handshake with %s: timed out", u->authority);
		if (rc)
			return rc;
	}
}

/* Connects (token read again, TLS verified) unless a kept-alive connection
 * is open. */
static int conn_open(struct kwatch *w)
{
	struct conn *c = &w->c;
	const struct em_kube_url *u = &w->k->url;
	if (c->fd != -1)
		return 0;
	int rc = read_token(w);
	if (rc)
		return rc;
	char port[8];
	snprintf(port, sizeof(port), "%u", u->port);
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *ai;
	int g = getaddrinfo(u->host, port, &hints, &ai);
	if (g) {
		conn_close(c);
		return fail(w, "cannot resolve %s: %s", u->host, gai_strerror(g));
	}
	uint64_t deadline = em_now_ms() + CONNECT_MS;
	int err = ECONNREFUSED;
	for (struct addrinfo *a = ai; a && c->fd == -1; a = a->ai_next) {
		int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd == -1) {
			err = errno;
			continue;
		}
		if (connect(fd, a->ai_addr, a->ai_addrlen) == 0 || errno == EINPROGRESS) {
			socklen_t sl = sizeof(err);
			rc = wait_fd(w, fd, POLLOUT, deadline, false);
			if (rc == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) == 0 &&
			    !err) {
				c->fd = fd;
				break;
			}
			if (rc == -ETIMEDOUT)
				err = ETIMEDOUT;
			else if (rc) {
				close(fd);
				freeaddrinfo(ai);
				conn_close(c);
				return rc;
			}
		} else {
			err = errno;
		}
		close(fd);
	}
	freeaddrinfo(ai);
	if (c->fd == -1) {
		conn_close(c);
		return fail(w, "cannot connect to %s: %s", u->authority, strerror(err));
	}
	if (u->tls && (rc = tls_start(w, deadline)) != 0) {
		conn_close(c);
		return rc;
	}
	return 0;
}

static int conn_write(struct kwatch *w, const char *p, size_t len)
{
	struct conn *c = &w->c;
	uint64_t deadline = em_now_ms() + IO_MS;
	while (len) {
		ssize_t n;
		int rc;
		if (c->ssl) {
			ERR_clear_error();
			int r = SSL_write(c->ssl, p, (int)(len > INT_MAX ? INT_MAX : len));
			if (r > 0) {
				p += r;
				len -= (size_t)r;
				continue;
			}
			int e = SSL_get_error(c->ssl, r);
			if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
				return -EPIPE;
			rc = wait_fd(w, c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT,
			             deadline, false);
		} else {
			n = send(c->fd, p, len, MSG_NOSIGNAL);
			if (n > 0) {
				p += n;
				len -= (size_t)n;
				continue;
			}
			if (n == -1 && errno == EINTR)
				continue;
			if (n == -1 && errno != EAGAIN)
				return -EPIPE;
			rc = wait_fd(w, c->fd, POLLOUT, deadline, false);
		}
		if (rc)
			return rc;
	}
	return 0;
}

/* Reads more bytes into the buffer (moving unread ones to its start).
 * Returns bytes read, 0 at end of stream, -ENOBUFS when the buffer is full,
 * -ETIMEDOUT after <idle_ms> without a byte, R_STOP or R_RELIST. */
static ssize_t conn_fill(struct kwatch *w, uint64_t idle_ms, bool relist_ok)
{
	struct conn *c = &w->c;
	if (c->off) {
		memmove(c->buf, c->buf + c->off, c->len - c->off);
		c->len -= c->off;
		c->off = 0;
	}
	size_t room = sizeof(c->buf) - c->len;
	if (!room)
		return -ENOBUFS;
	uint64_t deadline = em_now_ms() + idle_ms;
	for (;;) {
		short ev = POLLIN;
		if (c->ssl) {
			ERR_clear_error();
			errno = 0; /* SSL_ERROR_SYSCALL with errno 0: the peer closed */
			int r = SSL_read(c->ssl, c->buf + c->len, (int)room);
			if (r > 0) {
				c->len += (size_t)r;
				return r;
			}
			int e = SSL_get_error(c->ssl, r);
			if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0))
				return 0;
			if (e == SSL_ERROR_WANT_WRITE)
				ev = POLLOUT;
			else if (e != SSL_ERROR_WANT_READ)
				return -ECONNRESET;
		} else {
			ssize_t n = recv(c->fd, c->buf + c->len, room, 0);
			if (n >= 0) {
				c->len += (size_t)n;
				return n;
			}
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				return -errno;
		}
		int rc = wait_fd(w, c->fd, ev, deadline, relist_ok);
		if (rc)
			return rc;
	}
}

/* Percent-encodes <s> into <out> for a query value. */
static void query_escape(const char *s, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	for (; *s && o + 4 < cap; s++) {
		unsigned char ch = (unsigned char)*s;
		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
			out[o++] = (char)ch;
		} else {
			out[o++] = '%';
			out[o++] = hex[ch >> 4];
			out[o++] = hex[ch & 15];
		}
	}
	out[o] = 0;
}

/* Sends GET <prefix><path><query> and reads the response head into
 * w->head; the body's first bytes stay in the buffer. A kept-alive
 * connection the server closed meanwhile is opened again once. */
static int request(struct kwatch *w, const char *query, const char *what)
{
	struct conn *c = &w->c;
	const struct em_kube_url *u = &w->k->url;
	for (int attempt = 0;; attempt++) {
		bool fresh = c->fd == -1;
		int rc = conn_open(w);
		if (rc)
			return rc;
		char req[8192];
		int n = snprintf(req, sizeof(req),
		                 "GET %s%s%s HTTP/1.1\r\nHost: %s\r\n%s%s%s"
		                 "Accept: application/json\r\nUser-Agent: edgemesh\r\n\r\n",
		                 u->prefix, kind_paths[w->kind], query, u->authority,
		                 c->token ? "Authorization: Bearer " : "", c->token ? c->token : "",
		                 c->token ? "\r\n" : "");
		if (n < 0 || (size_t)n >= sizeof(req)) {
			conn_close(c);
			return fail(w, "%s: request too long", what);
		}
		rc = conn_write(w, req, (size_t)n);
		if (rc == R_STOP)
			return rc;
		struct em_http1_parser p = {0};
		int hl = EM_PARTIAL;
		while (rc == 0) {
			if (c->len > c->off) {
				hl = em_http1_parse_response(&p, c->buf + c->off, c->len - c->off,
				                             0, NULL, &w->head);
				if (hl != EM_PARTIAL)
					break;
			}
			ssize_t got = conn_fill(w, IO_MS, false);
			if (got == 0 && !fresh && c->len == c->off && attempt == 0)
				rc = -EAGAIN; /* a kept-alive connection closed: once more */
			else if (got == 0)
				rc = -ECONNRESET;
			else if (got < 0)
				rc = (int)got;
		}
		if (rc == R_STOP)
			return rc;
		if ((rc == -EAGAIN || (rc == -EPIPE && !fresh)) && attempt == 0) {
			conn_close(c);
			continue;
		}
		if (rc) {
			conn_close(c);
			return fail(w, "%s: no answer from %s: %s", what, u->authority,
			            rc == -ENOBUFS ? "response head too long" : strerror(-rc));
		}
		if (hl < 0) {
			conn_close(c);
			return fail(w, "%s: bad response from %s: %s", what, u->authority,
			            w->head.error ? w->head.error : "malformed head");
		}
		c->off += (size_t)hl;
		return 0;
	}
}

/* Reads the body of w->head whole (decoded), at most <max> bytes, into a
 * new buffer (NUL-terminated). Returns 0, -EMSGSIZE, or an I/O error. The
 * connection may be reused afterwards when the response says so. */
static int read_body(struct kwatch *w, size_t max, char **out, size_t *out_len)
{
	struct conn *c = &w->c;
	struct em_http1_body b;
	char *buf = NULL;
	size_t len = 0, cap = 0;
	em_http1_body_init(&b, &w->head);
	int rc = 0;
	while (!em_http1_body_done(&b)) {
		if (c->off == c->len) {
			ssize_t got = conn_fill(w, IO_MS, false);
			if (got == 0 && b.framing == EM_HTTP1_BODY_CLOSE)
				break;
			if (got <= 0) {
				rc = got == 0 ? -ECONNRESET : (int)got;
				break;
			}
		}
		struct em_slice d = {0};
		ssize_t n = em_http1_body_step(&b, c->buf + c->off, c->len - c->off, &d);
		if (n < 0) {
			rc = -EBADMSG;
			break;
		}
		c->off += (size_t)n;
		if (!d.len)
			continue;
		if (len + d.len > max) {
			rc = -EMSGSIZE;
			break;
		}
		if (len + d.len + 1 > cap) {
			size_t nc = cap ? cap : 65536;
			while (nc < len + d.len + 1)
				nc *= 2;
			char *nb = realloc(buf, nc);
			if (!nb) {
				rc = -ENOMEM;
				break;
			}
			buf = nb;
			cap = nc;
		}
		memcpy(buf + len, d.base, d.len);
		len += d.len;
	}
	if (rc == 0 && !(w->head.flags & EM_HTTP1_F_KEEPALIVE))
		conn_close(c);
	if (rc) {
		free(buf);
		conn_close(c);
		return rc;
	}
	if (!buf && !(buf = malloc(1))) {
		conn_close(c);
		return -ENOMEM;
	}
	buf[len] = 0;
	*out = buf;
	*out_len = len;
	return 0;
}

/* A non-200 answer: its status and the Status object's message, then the
 * connection is dropped. */
static int http_error(struct kwatch *w, const char *what)
{
	char *body = NULL, msg[256] = "";
	size_t len = 0;
	int status = w->head.status;
	if (read_body(w, ERR_BODY_MAX, &body, &len) == 0) {
		size_t off;
		cJSON *st = em_json_parse(body, len, &off, NULL);
		const cJSON *m = cJSON_GetObjectItemCaseSensitive(st, "message");
		if (cJSON_IsString(m))
			snprintf(msg, sizeof(msg), ": %s", m->valuestring);
		cJSON_Delete(st);
	}
	free(body);
	conn_close(&w->c);
	if (status == 410) {
		fail(w, "resourceVersion too old (HTTP 410 Gone)");
		return R_GONE;
	}
	return fail(w, "%s: HTTP %d from %s%s", what, status, w->k->url.authority, msg);
}

/* ---- the queue ---- */

static int push(struct kwatch *w, struct em_kube_batch *b)
{
	struct em_kube *k = w->k;
	pthread_mutex_lock(&k->mu);
	while (!stopping(k) && k->q_n &&
	       (k->q_n >= QUEUE_MAX_BATCHES || k->q_bytes + b->bytes > QUEUE_MAX_BYTES))
		pthread_cond_wait(&k->not_full, &k->mu);
	if (stopping(k)) {
		pthread_mutex_unlock(&k->mu);
		em_kube_batch_free(b);
		return R_STOP;
	}
	b->next = NULL;
	if (k->tail)
		k->tail->next = b;
	else
		k->head = b;
	k->tail = b;
	k->q_n++;
	k->q_bytes += b->bytes;
	pthread_mutex_unlock(&k->mu);
	uint64_t one = 1;
	if (write(k->fd, &one, sizeof(one)) < 0)
		EM_DEBUG("controller", "kubernetes: wake: %s", strerror(errno));
	return 0;
}

static int flush(struct kwatch *w)
{
	struct em_kube_batch *b = w->batch;
	w->batch = NULL;
	if (!b)
		return 0;
	if (!b->n) {
		em_kube_batch_free(b);
		return 0;
	}
	return push(w, b);
}

/* ---- list ---- */

static void set_rv(struct kwatch *w, const char *rv)
{
	if (rv && rv[0] && strlen(rv) < sizeof(w->rv))
		snprintf(w->rv, sizeof(w->rv), "%s", rv);
}

/* Lists the kind page by page, each page handed over as one batch. */
static int do_list(struct kwatch *w)
{
	char cont[4096] = "", q[sizeof(cont) * 3 + 64];
	for (bool first = true;; first = false) {
		char esc[sizeof(cont) * 3];
		query_escape(cont, esc, sizeof(esc));
		snprintf(q, sizeof(q), "?limit=%u%s%s", EM_KUBE_PAGE_SIZE,
		         cont[0] ? "&continue=" : "", cont[0] ? esc : "");
		int rc = request(w, q, "list");
		if (rc)
			return rc;
		if (w->head.status != 200) {
			rc = http_error(w, "list");
			return rc == R_GONE ? fail(w, "list: HTTP 410 (continue token expired)")
			                    : rc;
		}
		char *text = NULL;
		size_t len = 0, off = 0;
		if ((rc = read_body(w, EM_KUBE_MAX_PAGE, &text, &len)) != 0)
			return rc == R_STOP ? rc
			                    : fail(w, "list: reading the response: %s",
			                           rc == -EMSGSIZE ? "larger than 64 MiB"
			                                           : strerror(-rc));
		cJSON *root = em_json_parse(text, len, &off, NULL);
		free(text);
		const cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "metadata");
		const cJSON *rv = cJSON_GetObjectItemCaseSensitive(meta, "resourceVersion");
		const cJSON *next = cJSON_GetObjectItemCaseSensitive(meta, "continue");
		cJSON *items = cJSON_DetachItemFromObjectCaseSensitive(root, "items");
		if (!cJSON_IsString(rv) ||
		    (items && !cJSON_IsArray(items) && !cJSON_IsNull(items))) {
			cJSON_Delete(root);
			cJSON_Delete(items);
			return fail(w, "list: expected a %sList with metadata.resourceVersion",
			            em_kind_name(w->kind));
		}
		bool last = !cJSON_IsString(next) || !next->valuestring[0];
		if (!last && strlen(next->valuestring) >= sizeof(cont)) {
			cJSON_Delete(root);
			cJSON_Delete(items);
			return fail(w, "list: continue token longer than %zu bytes", sizeof(cont));
		}
		struct em_kube_batch *b = em_kube_batch_new(
		        w->kind, EM_KUBE_LIST | (first ? EM_KUBE_LIST_FIRST : 0u) |
		                         (last ? EM_KUBE_LIST_LAST : 0u));
		size_t n = (size_t)cJSON_GetArraySize(items), per = n ? len / n : 0;
		cJSON *it;
		while (b && cJSON_IsArray(items) && (it = cJSON_DetachItemFromArray(items, 0))) {
			if (!cJSON_IsObject(it)) {
				cJSON_Delete(it);
				continue;
			}
			if (em_kube_batch_upsert(b, it, per)) {
				em_kube_batch_free(b);
				b = NULL;
			}
		}
		cJSON_Delete(items);
		if (!last)
			snprintf(cont, sizeof(cont), "%s", next->valuestring);
		else
			set_rv(w, rv->valuestring);
		cJSON_Delete(root);
		if (!b)
			return fail(w, "list: out of memory");
		if ((rc = push(w, b)) != 0)
			return rc;
		if (last)
			return 0;
	}
}

/* ---- watch ---- */

static int on_line(void *arg, const char *line, size_t len)
{
	struct kwatch *w = arg;
	struct em_kube_event ev;
	char err[256];
	atomic_fetch_add(&w->k->events, 1);
	if (em_kube_event_parse(line, len, &ev, err, sizeof(err)) != 0)
		return fail(w, "watch: %s", err);
	w->progress = true;
	int rc = 0;
	if (ev.type == EM_KUBE_ERROR) {
		if (ev.code == 410) {
			fail(w, "resourceVersion too old (ERROR event 410 Gone)");
			rc = R_GONE;
		} else
			rc = fail(w, "watch: ERROR event, code %d: %.200s", ev.code, ev.message);
		cJSON_Delete(ev.root);
		return rc;
	}
	if (ev.type == EM_KUBE_BOOKMARK) {
		set_rv(w, ev.rv);
		cJSON_Delete(ev.root);
		return 0;
	}
	const cJSON *meta = cJSON_GetObjectItemCaseSensitive(ev.object, "metadata");
	const cJSON *ns = cJSON_GetObjectItemCaseSensitive(meta, "namespace");
	const cJSON *name = cJSON_GetObjectItemCaseSensitive(meta, "name");
	if (!cJSON_IsString(name)) {
		cJSON_Delete(ev.root);
		return fail(w, "watch: an event's object has no metadata.name");
	}
	const char *nss = cJSON_IsString(ns) ? ns->valuestring : NULL;
	/* One change per key per batch: the store applies deletes first. */
	if (w->batch &&
	    (w->batch->n >= BATCH_MAX_EVENTS || w->batch->bytes >= BATCH_MAX_BYTES ||
	     em_kube_batch_has(w->batch, nss, name->valuestring)) &&
	    (rc = flush(w)) != 0) {
		cJSON_Delete(ev.root);
		return rc;
	}
	if (!w->batch && !(w->batch = em_kube_batch_new(w->kind, 0))) {
		cJSON_Delete(ev.root);
		return fail(w, "watch: out of memory");
	}
	set_rv(w, ev.rv);
	if (ev.type == EM_KUBE_DELETED) {
		rc = em_kube_batch_delete(w->batch, nss, name->valuestring);
		cJSON_Delete(ev.root);
	} else {
		cJSON *obj = cJSON_DetachItemFromObjectCaseSensitive(ev.root, "object");
		cJSON_Delete(ev.root);
		rc = em_kube_batch_upsert(w->batch, obj, len);
	}
	return rc ? fail(w, "watch: out of memory") : 0;
}

static unsigned watch_timeout(struct kwatch *w)
{
	if (w->k->watch_timeout_s)
		return w->k->watch_timeout_s;
	w->rng ^= w->rng << 13;
	w->rng ^= w->rng >> 7;
	w->rng ^= w->rng << 17;
	return 300 + (unsigned)(w->rng % 301);
}

/* Watches from w->rv until the server ends the watch (0), or it fails. */
static int do_watch(struct kwatch *w)
{
	struct conn *c = &w->c;
	char rv[sizeof(w->rv) * 3], q[1024];
	unsigned t = watch_timeout(w);
	query_escape(w->rv, rv, sizeof(rv));
	snprintf(q, sizeof(q),
	         "?watch=1&resourceVersion=%s&allowWatchBookmarks=true&timeoutSeconds=%u", rv, t);
	int rc = request(w, q, "watch");
	if (rc)
		return rc;
	if (w->head.status != 200)
		return http_error(w, "watch");
	atomic_fetch_add(&w->k->watches, 1);
	log_healthy(w, "watching");
	em_kube_lines_init(&w->lines, &w->head, EM_KUBE_MAX_LINE);
	w->progress = false;
	uint64_t started = em_now_ms();
	for (;;) {
		if (c->len > c->off) {
			ssize_t n = em_kube_lines_feed(&w->lines, c->buf + c->off, c->len - c->off,
			                               on_line, w);
			if (n < 0) {
				rc = (int)n;
				break;
			}
			c->off += (size_t)n;
		}
		if (em_kube_lines_done(&w->lines))
			break;
		/* Nothing more at hand: what was read goes to the store before
		 * waiting for more. */
		if ((rc = flush(w)) != 0)
			break;
		/* The server ends the watch after <t> seconds; silence well past
		 * that is a dead connection. */
		ssize_t got = conn_fill(w, (uint64_t)(t + 30) * 1000, true);
		if (got == 0 && w->lines.body.framing == EM_HTTP1_BODY_CLOSE)
			break;
		if (got <= 0) {
			rc = got == 0 ? -ECONNRESET : (int)got;
			break;
		}
	}
	/* Whole events read before a failure are good: hand them over. */
	int frc = flush(w);
	if (!rc && frc)
		rc = frc;
	bool cut = em_kube_lines_partial(&w->lines) > 0;
	/* A watch the server ends at once, again and again, must not become
	 * a tight loop of requests. */
	if (rc == 0 && !w->progress && em_now_ms() - started < 1000)
		rc = fail(w, "watch: the server ended it at once");
	if (rc == 0 && !(w->head.flags & EM_HTTP1_F_KEEPALIVE))
		conn_close(c);
	if (rc)
		conn_close(c);
	if (w->progress || rc == 0) {
		w->backoff = 0;
		w->fresh_list = false;
	}
	switch (rc) {
	case 0:
	case R_GONE:
	case R_STOP:
	case R_RELIST:
	case R_FAILED:
		return rc;
	case -EMSGSIZE:
		/* The event is lost: only a list can catch up. */
		fail(w, "an event longer than %u bytes was lost", EM_KUBE_MAX_LINE);
		return R_GONE;
	case -EBADMSG:
		return fail(w, "watch: bad chunked framing");
	case -ETIMEDOUT:
		return fail(w, "watch: silent for %u s", t + 30);
	default:
		return fail(w, "watch: stream cut%s: %s", cut ? " inside an event" : "",
		            strerror(-rc));
	}
}

/* ---- the thread ---- */

static void pause_ms(struct kwatch *w, uint32_t ms)
{
	struct pollfd p = {.fd = w->k->stop_fd, .events = POLLIN};
	uint64_t end = em_now_ms() + ms;
	for (uint64_t now = em_now_ms(); now < end && !stopping(w->k); now = em_now_ms())
		if (poll(&p, 1, (int)(end - now)) == -1 && errno != EINTR)
			break;
}

static void *watch_main(void *arg)
{
	struct kwatch *w = arg;
	struct em_kube *k = w->k;
	bool need_list = true;
	while (!stopping(k)) {
		int rc;
		if (atomic_exchange(&k->relist[w->kind], false) && !need_list) {
			need_list = true;
			EM_INFO("controller",
			        "kubernetes: %s: listing again: the store did not take "
			        "a batch",
			        kname(w));
		}
		if (need_list) {
			rc = do_list(w);
			if (rc == 0) {
				need_list = false;
				atomic_fetch_add(&k->lists, 1);
				if (w->listed)
					atomic_fetch_add(&k->relists, 1);
				w->listed = true;
				w->fresh_list = true;
				log_healthy(w, "listing");
				EM_DEBUG("controller",
				         "kubernetes: %s: listed at resourceVersion %s", kname(w),
				         w->rv);
				continue;
			}
		} else {
			rc = do_watch(w);
		}
		if (rc == R_STOP)
			break;
		if (rc == 0 || rc == R_RELIST)
			continue;
		if (rc == R_GONE) {
			need_list = true;
			EM_INFO("controller", "kubernetes: %s: listing again: %s", kname(w),
			        w->why);
			continue;
		}
		if (rc != R_GONE) {
			atomic_fetch_add(&k->errors, 1);
			log_state(w);
		}
		w->rng ^= w->rng << 13;
		w->rng ^= w->rng >> 7;
		w->rng ^= w->rng << 17;
		pause_ms(w, em_backoff(&w->backoff, BACKOFF_MIN_MS, BACKOFF_MAX_MS, w->rng));
	}
	em_kube_batch_free(w->batch);
	w->batch = NULL;
	em_kube_lines_free(&w->lines);
	conn_close(&w->c);
	return NULL;
}

/* ---- the sync thread's side ---- */

static int resolve_server(const struct em_kube_conf *conf, struct em_kube *k)
{
	const char *tok = conf->token_file ? conf->token_file : "";
	const char *ca = conf->ca_file ? conf->ca_file : "";
	char url[300];
	if (strcmp(conf->server, EM_KUBE_IN_CLUSTER) == 0) {
		const char *h = getenv("KUBERNETES_SERVICE_HOST");
		const char *p = getenv("KUBERNETES_SERVICE_PORT");
		if (!h || !h[0]) {
			EM_ERR("controller", "controller.kubernetes.server \"in-cluster\": "
			                     "KUBERNETES_SERVICE_HOST is not set (not in a pod?)");
			return -EINVAL;
		}
		bool v6 = strchr(h, ':') != NULL;
		snprintf(url, sizeof(url), "https://%s%s%s:%s", v6 ? "[" : "", h, v6 ? "]" : "",
		         p && p[0] ? p : "443");
		if (!tok[0])
			tok = EM_KUBE_IN_CLUSTER_TOKEN;
		if (!ca[0])
			ca = EM_KUBE_IN_CLUSTER_CA;
	} else {
		snprintf(url, sizeof(url), "%s", conf->server);
	}
	if (em_kube_url_parse(url, &k->url)) {
		EM_ERR("controller",
		       "controller.kubernetes.server %s: not a URL the watcher can use", url);
		return -EINVAL;
	}
	snprintf(k->token_file, sizeof(k->token_file), "%s", tok);
	snprintf(k->ca_file, sizeof(k->ca_file), "%s", ca);
	return 0;
}

int em_kube_start(const struct em_kube_conf *conf, struct em_store *st, struct em_kube **out)
{
	struct em_kube *k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	k->fd = k->stop_fd = -1;
	int rc = resolve_server(conf, k);
	if (rc) {
		free(k);
		return rc;
	}
	k->watch_timeout_s = conf->watch_timeout_s;
	pthread_mutex_init(&k->mu, NULL);
	pthread_cond_init(&k->not_full, NULL);
	if (!(k->src = em_kube_src_new(st))) {
		rc = -ENOMEM;
		goto fail;
	}
	if ((k->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) == -1 ||
	    (k->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) == -1) {
		rc = -errno;
		goto fail;
	}
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	for (int i = 0; i < EM_KIND__COUNT; i++) {
		struct kwatch *w = &k->w[i];
		w->k = k;
		w->kind = (enum em_kind)i;
		w->c.fd = -1;
		w->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^
		         ((uint64_t)(i + 1) * 0x9e3779b97f4a7c15ULL) ^ (uint64_t)(uintptr_t)w;
		if (!w->rng)
			w->rng = 1;
		if ((rc = pthread_create(&w->thread, NULL, watch_main, w)) != 0) {
			rc = -rc;
			EM_ERR("controller", "kubernetes: cannot start a thread: %s",
			       strerror(-rc));
			goto fail;
		}
		w->started = true;
	}
	EM_INFO("controller", "kubernetes: watching %s://%s%s (token %s, CA %s)",
	        k->url.tls ? "https" : "http", k->url.authority, k->url.prefix,
	        k->token_file[0] ? k->token_file : "none",
	        k->url.tls ? (k->ca_file[0] ? k->ca_file : "system") : "-");
	*out = k;
	return 0;
fail:
	em_kube_stop(k);
	return rc;
}

int em_kube_fd(const struct em_kube *k)
{
	return k->fd;
}

void em_kube_handle(struct em_kube *k)
{
	uint64_t v;
	if (read(k->fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		EM_DEBUG("controller", "kubernetes: eventfd read: %s", strerror(errno));
	pthread_mutex_lock(&k->mu);
	struct em_kube_batch *b = k->head;
	k->head = k->tail = NULL;
	k->q_n = k->q_bytes = 0;
	pthread_cond_broadcast(&k->not_full);
	pthread_mutex_unlock(&k->mu);
	while (b) {
		struct em_kube_batch *next = b->next;
		enum em_kind kind = b->kind;
		if (em_kube_src_apply(k->src, b) != 0)
			atomic_store(&k->relist[kind], true);
		b = next;
	}
}

void em_kube_stats(const struct em_kube *k, struct em_kube_stats *out)
{
	struct em_kube_src_stats s;
	em_kube_src_stats(k->src, &s);
	*out = (struct em_kube_stats){
	        .lists = atomic_load(&k->lists),
	        .relists = atomic_load(&k->relists),
	        .watches = atomic_load(&k->watches),
	        .events = atomic_load(&k->events),
	        .errors = atomic_load(&k->errors),
	        .objects = s.objects,
	        .refused = s.refused,
	};
}

void em_kube_stop(struct em_kube *k)
{
	if (!k)
		return;
	pthread_mutex_lock(&k->mu);
	atomic_store(&k->stop, true);
	pthread_cond_broadcast(&k->not_full);
	pthread_mutex_unlock(&k->mu);
	uint64_t one = 1;
	if (k->stop_fd != -1 && write(k->stop_fd, &one, sizeof(one)) < 0)
		EM_DEBUG("controller", "kubernetes: stop: %s", strerror(errno));
	for (int i = 0; i < EM_KIND__COUNT; i++)
		if (k->w[i].started)
			pthread_join(k->w[i].thread, NULL);
	for (struct em_kube_batch *b = k->head, *next; b; b = next) {
		next = b->next;
		em_kube_batch_free(b);
	}
	if (k->fd != -1)
		close(k->fd);
	if (k->stop_fd != -1)
		close(k->stop_fd);
	em_kube_src_free(k->src);
	pthread_mutex_destroy(&k->mu);
	pthread_cond_destroy(&k->not_full);
	free(k);
}

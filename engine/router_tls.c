/* The Router's TLS front: a thread with an epoll of its own that terminates
 * TLS and moves the plaintext to and from the workers over socketpairs. */
#include "engine/router_tls.h"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine/list.h"
#include "proto/clock.h"
#include "proto/log.h"

#define TLS_BUF        16384u /* bytes per direction per connection */
#define TLS_EVENTS     64
#define TLS_ACCEPTS    64u   /* accepts per turn of the loop */
#define TLS_PAUSE_MS   100u  /* out of descriptors: accepting resumes after */
#define TLS_STOP_GRACE 1000u /* past the workers' drain, to flush the rest */
#define TLS_CACHE      1024L /* TLS 1.2 sessions kept for resumption */

/* epoll tags: a connection's TCP socket is the connection's address, its
 * socketpair end that address | TAG_PAIR (connections are 8-byte aligned,
 * never at 0 or 2). */
#define TAG_LISTEN 0u
#define TAG_STOP   2u
#define TAG_PAIR   1u

/* One client. <in> holds plaintext read from the client for the worker,
 * <out> the worker's bytes for the client; [off, len) is what waits. */
struct tconn {
	struct em_dlist timer; /* on t->timers while a deadline runs */
	struct em_dlist node;  /* on t->conns, or t->dead once closed */
	SSL *ssl;
	int tcp, pair; /* pair: the front's end, -1 until the handshake is done */
	uint64_t deadline_ms;
	bool open;         /* handshake done, handed to a worker */
	bool dead;         /* closed; freed after this batch of events */
	bool in_eof;       /* the client sent close_notify or FIN */
	bool pair_wr_shut; /* the worker was sent FIN */
	bool pair_eof;     /* the worker sent FIN: all its bytes were read */
	bool pair_closed;  /* the worker closed its end: it takes no more */
	bool notify_sent;  /* close_notify (and FIN) sent to the client */
	/* Readiness, edge-triggered: set by an event on the socket, cleared
	 * when a call would block, so no call is made only to learn that. */
	bool tcp_in, tcp_out, pair_in, pair_out;
	/* The pair's EPOLLOUT is watched only while bytes wait for room in
	 * it: else each read by the worker would wake the front. */
	bool pair_out_watched;
	bool pair_rdhup;            /* the worker's FIN (or close) was signalled: read to EOF */
	uint8_t rd_wants, wr_wants; /* what SSL_read, SSL_write/shutdown wait for */
	uint32_t in_off, in_len, out_off, out_len;
	char in[TLS_BUF], out[TLS_BUF];
};

struct em_router_tls {
	struct em_engine *eng;
	SSL_CTX *ctx;
	int lfd, epfd, stop_fd;
	pthread_t thread;
	bool thread_up;
	uint32_t hs_ms, max_conns;
	atomic_bool quit;
	atomic_uint drain_ms;
	/* the front thread's own */
	struct em_dlist timers; /* deadline order: every deadline is now + hs_ms */
	struct em_dlist conns, dead;
	size_t n_conns;
	unsigned next_worker;
	uint64_t now_ms, stop_at_ms, resume_at_ms; /* resume_at_ms 0: listening */
	bool stopping;
	/* counters, read by the stats thread */
	atomic_uint_fast64_t c_handshakes, c_failed, c_timeouts, c_refused, c_active;
};

/* ---- connections ---- */

static void conn_timer(struct em_router_tls *t, struct tconn *c)
{
	c->deadline_ms = t->now_ms + t->hs_ms;
	em_dlist_push_tail(&t->timers, &c->timer);
}

/* Closes <c>'s sockets (which leaves the epoll) at once; the memory goes
 * after the current batch of events, which may still name it. */
static void conn_close(struct em_router_tls *t, struct tconn *c)
{
	if (c->dead)
		return;
	c->dead = true;
	em_dlist_del(&c->timer);
	em_dlist_push_tail(&t->dead, &c->node);
	SSL_free(c->ssl);
	c->ssl = NULL;
	close(c->tcp);
	if (c->pair >= 0)
		close(c->pair);
	t->n_conns--;
	atomic_fetch_sub(&t->c_active, 1);
}

static void reap(struct em_router_tls *t)
{
	struct em_dlist *n;
	while ((n = em_dlist_first(&t->dead))) {
		em_dlist_del(n);
		free(em_container_of(n, struct tconn, node));
	}
}

/* The OpenSSL reason of the last failure, for a debug line. */
static const char *ssl_reason(char *buf, size_t len)
{
	unsigned long e = ERR_peek_last_error();
	if (!e)
		return "connection closed";
	ERR_error_string_n(e, buf, len);
	return buf;
}

#define W_READ  1
#define W_WRITE 2

/* A failed SSL call of <c> with result <r>: true when it only waits for
 * the socket (WANT_READ, WANT_WRITE: noted in <*want>, and the socket is
 * not ready that way until its next event); false on anything else. */
static bool ssl_waits(struct tconn *c, int r, uint8_t *want)
{
	int e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ) {
		*want = W_READ;
		c->tcp_in = false;
		return true;
	}
	if (e == SSL_ERROR_WANT_WRITE) {
		*want = W_WRITE;
		c->tcp_out = false;
		return true;
	}
	return false;
}

/* An SSL call that last waited for <want> may go on. */
static bool ssl_may(const struct tconn *c, uint8_t want)
{
	return want == W_READ ? c->tcp_in : want == W_WRITE ? c->tcp_out : true;
}

#define PAIR_EVENTS (EPOLLIN | EPOLLRDHUP | EPOLLET)

static void pair_watch_out(struct em_router_tls *t, struct tconn *c, bool on)
{
	if (on == c->pair_out_watched)
		return;
	struct epoll_event ev = {.events = PAIR_EVENTS | (on ? EPOLLOUT : 0),
	                         .data.u64 = (uint64_t)(uintptr_t)c | TAG_PAIR};
	if (epoll_ctl(t->epfd, EPOLL_CTL_MOD, c->pair, &ev) == 0)
		c->pair_out_watched = on;
}

/* Moves what can move, both ways, until nothing does; closes <c> once both
 * sides are done, or at once on an error. */
static void conn_step(struct em_router_tls *t, struct tconn *c)
{
	bool moved;
	do {
		moved = false;
		/* client -> worker */
		if (!c->in_eof && !c->pair_closed && c->in_len < TLS_BUF &&
		    (ssl_may(c, c->rd_wants) || SSL_has_pending(c->ssl))) {
			if (c->in_off) {
				memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
				c->in_len -= c->in_off;
				c->in_off = 0;
			}
			ERR_clear_error();
			int r = SSL_read(c->ssl, c->in + c->in_len, (int)(TLS_BUF - c->in_len));
			if (r > 0) {
				c->in_len += (uint32_t)r;
				c->rd_wants = 0;
				moved = true;
			} else if (SSL_get_error(c->ssl, r) == SSL_ERROR_ZERO_RETURN) {
				c->in_eof = true;
				moved = true;
			} else if (!ssl_waits(c, r, &c->rd_wants)) {
				char why[160];
				EM_DEBUG("router", "TLS read: %s", ssl_reason(why, sizeof(why)));
				conn_close(t, c);
				return;
			}
		}
		if (c->in_off < c->in_len && c->pair_out) {
			ssize_t n = send(c->pair, c->in + c->in_off, c->in_len - c->in_off,
			                 MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n > 0) {
				c->in_off += (uint32_t)n;
				if (c->in_off == c->in_len)
					c->in_off = c->in_len = 0;
				else /* full: its next event says when it is not */
					c->pair_out = false;
				moved = true;
			} else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
				c->pair_out = errno == EINTR;
			} else if (n < 0) {
				/* The worker closed: what the client sends is dropped. */
				c->pair_closed = true;
				c->in_off = c->in_len = 0;
				moved = true;
			}
		}
		if (c->in_eof && !c->in_len && !c->pair_wr_shut && !c->pair_closed) {
			shutdown(c->pair, SHUT_WR);
			c->pair_wr_shut = true;
		}
		/* worker -> client */
		if (!c->pair_eof && c->out_len < TLS_BUF && c->pair_in) {
			if (c->out_off) {
				memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
				c->out_len -= c->out_off;
				c->out_off = 0;
			}
			ssize_t n = recv(c->pair, c->out + c->out_len, TLS_BUF - c->out_len,
			                 MSG_DONTWAIT);
			if (n > 0) {
				/* A short read took all there was: the next bytes
				 * come with an event. */
				if ((uint32_t)n < TLS_BUF - c->out_len && !c->pair_rdhup)
					c->pair_in = false;
				c->out_len += (uint32_t)n;
				moved = true;
			} else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
				c->pair_in = errno == EINTR;
			} else {
				c->pair_eof = true;
				if (!em_dlist_linked(&c->timer))
					conn_timer(t, c);
				moved = true;
			}
		}
		if (c->out_off < c->out_len && ssl_may(c, c->wr_wants)) {
			ERR_clear_error();
			int r = SSL_write(c->ssl, c->out + c->out_off,
			                  (int)(c->out_len - c->out_off));
			if (r > 0) {
				c->out_off += (uint32_t)r;
				if (c->out_off == c->out_len)
					c->out_off = c->out_len = 0;
				c->wr_wants = 0;
				moved = true;
			} else if (!ssl_waits(c, r, &c->wr_wants)) {
				char why[160];
				EM_DEBUG("router", "TLS write: %s", ssl_reason(why, sizeof(why)));
				conn_close(t, c);
				return;
			}
		}
		if (c->pair_eof && !c->out_len && !c->notify_sent && ssl_may(c, c->wr_wants)) {
			ERR_clear_error();
			int r = SSL_shutdown(c->ssl);
			if (r >= 0) {
				c->notify_sent = true;
				c->wr_wants = 0;
				shutdown(c->tcp, SHUT_WR);
				moved = true;
			} else if (!ssl_waits(c, r, &c->wr_wants)) {
				conn_close(t, c);
				return;
			}
		}
	} while (moved);
	pair_watch_out(t, c, c->in_off < c->in_len);
	/* Done: the client got all the worker sent, and no byte more can go
	 * from the client to the worker. */
	if (c->notify_sent && (c->pair_closed || (c->in_eof && c->pair_wr_shut)))
		conn_close(t, c);
}

/* The handshake is done: a socketpair, one end to a worker. */
static void conn_open(struct em_router_tls *t, struct tconn *c)
{
	int sv[2];
	atomic_fetch_add(&t->c_handshakes, 1);
	em_dlist_del(&c->timer);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1) {
		EM_WARN("router", "TLS connection: socketpair: %s", strerror(errno));
		conn_close(t, c);
		return;
	}
	c->pair = sv[0];
	struct epoll_event ev = {.events = PAIR_EVENTS,
	                         .data.u64 = (uint64_t)(uintptr_t)c | TAG_PAIR};
	if (fcntl(sv[0], F_SETFL, O_NONBLOCK) == -1 ||
	    epoll_ctl(t->epfd, EPOLL_CTL_ADD, sv[0], &ev) == -1) {
		EM_WARN("router", "TLS connection: socketpair: %s", strerror(errno));
		close(sv[1]);
		conn_close(t, c);
		return;
	}
	c->open = true;
	c->tcp_in = c->tcp_out = c->pair_in = c->pair_out = true;
	struct em_engine *e = t->eng;
	unsigned k = t->next_worker++ % e->n_workers;
	if (em_worker_post_conn(&e->workers[k], sv[1], EM_LISTENER_ROUTER)) {
		conn_close(t, c);
		return;
	}
	/* The client's first request may have come with its Finished. */
	conn_step(t, c);
}

static void conn_handshake(struct em_router_tls *t, struct tconn *c)
{
	ERR_clear_error();
	int r = SSL_accept(c->ssl);
	if (r == 1) {
		conn_open(t, c);
		return;
	}
	uint8_t want;
	if (ssl_waits(c, r, &want))
		return;
	char why[160];
	EM_DEBUG("router", "TLS handshake failed: %s", ssl_reason(why, sizeof(why)));
	atomic_fetch_add(&t->c_failed, 1);
	conn_close(t, c);
}

static void conn_new(struct em_router_tls *t, int fd)
{
	struct tconn *c = malloc(sizeof(*c)); /* the buffers are written before read */
	if (!c) {
		close(fd);
		atomic_fetch_add(&t->c_refused, 1);
		return;
	}
	memset(c, 0, offsetof(struct tconn, in));
	c->tcp = fd;
	c->pair = -1;
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
	                         .data.u64 = (uint64_t)(uintptr_t)c};
	if (!(c->ssl = SSL_new(t->ctx)) || !SSL_set_fd(c->ssl, fd) ||
	    epoll_ctl(t->epfd, EPOLL_CTL_ADD, fd, &ev) == -1) {
		EM_WARN("router", "TLS connection: out of memory or descriptors");
		SSL_free(c->ssl);
		close(fd);
		free(c);
		atomic_fetch_add(&t->c_refused, 1);
		return;
	}
	SSL_set_accept_state(c->ssl);
	em_dlist_push_tail(&t->conns, &c->node);
	conn_timer(t, c);
	t->n_conns++;
	atomic_fetch_add(&t->c_active, 1);
}

/* ---- the loop ---- */

static void listen_pause(struct em_router_tls *t, int err)
{
	EM_WARN("router", "TLS accept: %s; pausing %u ms", strerror(err), TLS_PAUSE_MS);
	epoll_ctl(t->epfd, EPOLL_CTL_DEL, t->lfd, NULL);
	t->resume_at_ms = t->now_ms + TLS_PAUSE_MS;
}

static void on_listen(struct em_router_tls *t)
{
	for (unsigned i = 0; i < TLS_ACCEPTS && t->lfd >= 0 && !t->resume_at_ms; i++) {
		int fd = accept4(t->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			int err = errno;
			if (err == ECONNABORTED || err == EINTR)
				continue;
			if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM)
				listen_pause(t, err);
			else if (err != EAGAIN)
				EM_WARN("router", "TLS accept: %s", strerror(err));
			return;
		}
		if (t->n_conns >= t->max_conns) {
			close(fd);
			atomic_fetch_add(&t->c_refused, 1);
			continue;
		}
		conn_new(t, fd);
	}
}

/* The engine stops: no more accepts or handshakes; the open connections
 * end as the workers close their ends, or at the deadline. */
static void on_stop(struct em_router_tls *t)
{
	uint64_t v;
	if (read(t->stop_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		EM_WARN("router", "TLS front: stop read: %s", strerror(errno));
	if (t->stopping)
		return;
	t->stopping = true;
	t->stop_at_ms = t->now_ms + atomic_load(&t->drain_ms) + TLS_STOP_GRACE;
	if (t->lfd >= 0) {
		close(t->lfd);
		t->lfd = -1;
	}
	struct em_dlist *n, *next;
	for (n = t->conns.next; n != &t->conns; n = next) {
		next = n->next;
		struct tconn *c = em_container_of(n, struct tconn, node);
		if (!c->open)
			conn_close(t, c);
	}
}

static void on_event(struct em_router_tls *t, const struct epoll_event *ev)
{
	uint64_t tag = ev->data.u64;
	if (tag == TAG_LISTEN) {
		on_listen(t);
		return;
	}
	if (tag == TAG_STOP) {
		on_stop(t);
		return;
	}
	struct tconn *c = (struct tconn *)(uintptr_t)(tag & ~(uint64_t)TAG_PAIR);
	if (c->dead)
		return;
	bool in = ev->events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR);
	bool out = ev->events & (EPOLLOUT | EPOLLHUP | EPOLLERR);
	if (tag & TAG_PAIR) {
		c->pair_in |= in;
		c->pair_out |= out;
		c->pair_rdhup |= (ev->events & (EPOLLRDHUP | EPOLLHUP)) != 0;
	} else {
		c->tcp_in |= in;
		c->tcp_out |= out;
	}
	if (tag & TAG_PAIR) {
		/* Both directions shut: the worker closed its end (what it
		 * wrote before is still read). */
		if (ev->events & EPOLLHUP) {
			c->pair_closed = true;
			c->in_off = c->in_len = 0;
			if (!em_dlist_linked(&c->timer))
				conn_timer(t, c);
		}
	} else if (ev->events & EPOLLERR) {
		conn_close(t, c); /* reset: nothing more can reach the client */
		return;
	}
	if (!c->open)
		conn_handshake(t, c);
	else
		conn_step(t, c);
}

/* Handshakes past their time, and connections whose worker closed but
 * whose client does not take the rest. */
static void expire(struct em_router_tls *t)
{
	struct em_dlist *n;
	while ((n = em_dlist_first(&t->timers))) {
		struct tconn *c = em_container_of(n, struct tconn, timer);
		if (c->deadline_ms > t->now_ms)
			break;
		if (!c->open) {
			atomic_fetch_add(&t->c_timeouts, 1);
			EM_DEBUG("router", "TLS handshake timed out after %u ms", t->hs_ms);
		}
		conn_close(t, c);
	}
}

static int wait_ms(const struct em_router_tls *t)
{
	uint64_t until = UINT64_MAX;
	struct em_dlist *n = em_dlist_first(&t->timers);
	if (n)
		until = em_container_of(n, struct tconn, timer)->deadline_ms;
	if (t->resume_at_ms && t->resume_at_ms < until)
		until = t->resume_at_ms;
	if (t->stopping && t->stop_at_ms < until)
		until = t->stop_at_ms;
	if (until == UINT64_MAX)
		return -1;
	return until <= t->now_ms ? 0 : (int)EM_MIN(until - t->now_ms, 60000u);
}

static void *front_main(void *arg)
{
	struct em_router_tls *t = arg;
	struct epoll_event evs[TLS_EVENTS];
	for (;;) {
		t->now_ms = em_now_ms();
		expire(t);
		reap(t);
		if (t->stopping && (!t->n_conns || t->now_ms >= t->stop_at_ms))
			break;
		if (t->resume_at_ms && t->now_ms >= t->resume_at_ms) {
			struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_LISTEN};
			t->resume_at_ms = 0;
			if (t->lfd >= 0 && epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->lfd, &ev) == -1)
				t->resume_at_ms = t->now_ms + TLS_PAUSE_MS;
		}
		int n = epoll_wait(t->epfd, evs, TLS_EVENTS, wait_ms(t));
		if (n == -1) {
			if (errno == EINTR)
				continue;
			EM_ERR("router", "TLS front: epoll_wait: %s", strerror(errno));
			break;
		}
		t->now_ms = em_now_ms();
		for (int i = 0; i < n; i++)
			on_event(t, &evs[i]);
		reap(t);
	}
	struct em_dlist *n;
	while ((n = em_dlist_first(&t->conns)))
		conn_close(t, em_container_of(n, struct tconn, node));
	reap(t);
	return NULL;
}

/* ---- start and stop ---- */

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char h11[] = "\x08http/1.1";
	unsigned char *sel;
	EM_UNUSED(ssl);
	EM_UNUSED(arg);
	if (SSL_select_next_proto(&sel, outlen, h11, sizeof(h11) - 1, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK; /* no ALPN: HTTP/1.1 all the same */
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	EM_UNUSED(buf);
	EM_UNUSED(size);
	EM_UNUSED(rwflag);
	EM_UNUSED(u);
	return 0;
}

static SSL_CTX *make_ctx(const struct em_config *cfg)
{
	static const unsigned char sid[] = "edgemesh-router";
	const char *cert = cfg->router.tls.cert_file, *key = cfg->router.tls.key_file;
	char why[160];
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		EM_ERR("router", "TLS: %s", ssl_reason(why, sizeof(why)));
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
	                                 SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF);
	/* Reads take whole socket buffers, not a record header, then its body. */
	SSL_CTX_set_read_ahead(ctx, 1);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
	                              SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
	SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
	SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid) - 1);
	SSL_CTX_sess_set_cache_size(ctx, TLS_CACHE);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		EM_ERR("router", "%s: router.tls.cert_file: %s: %s", cfg->path, cert,
		       ssl_reason(why, sizeof(why)));
	} else if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	           SSL_CTX_check_private_key(ctx) != 1) {
		EM_ERR("router", "%s: router.tls.key_file: %s: %s", cfg->path, key,
		       ssl_reason(why, sizeof(why)));
	} else {
		ERR_clear_error();
		return ctx;
	}
	ERR_clear_error();
	SSL_CTX_free(ctx);
	return NULL;
}

int em_router_tls_start(struct em_engine *e, int lfd, const struct em_config *cfg,
                        struct em_router_tls **out)
{
	struct em_router_tls *t = calloc(1, sizeof(*t));
	int rc = -ENOMEM;
	if (!t) {
		close(lfd);
		return rc;
	}
	t->eng = e;
	t->lfd = lfd;
	t->epfd = t->stop_fd = -1;
	t->hs_ms = cfg->router.tls.handshake_ms;
	t->max_conns = cfg->router.tls.max_connections;
	em_dlist_init(&t->timers);
	em_dlist_init(&t->conns);
	em_dlist_init(&t->dead);
	if (!(t->ctx = make_ctx(cfg))) {
		rc = -EINVAL;
		goto fail;
	}
	struct epoll_event lev = {.events = EPOLLIN, .data.u64 = TAG_LISTEN};
	struct epoll_event sev = {.events = EPOLLIN, .data.u64 = TAG_STOP};
	if (fcntl(lfd, F_SETFL, O_NONBLOCK) == -1 ||
	    (t->epfd = epoll_create1(EPOLL_CLOEXEC)) == -1 ||
	    (t->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) == -1 ||
	    epoll_ctl(t->epfd, EPOLL_CTL_ADD, lfd, &lev) == -1 ||
	    epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->stop_fd, &sev) == -1) {
		rc = -errno;
		EM_ERR("router", "TLS front: %s", strerror(-rc));
		goto fail;
	}
	/* The front takes no signal: a write to a client gone away (OpenSSL
	 * writes without MSG_NOSIGNAL) must fail with EPIPE, not raise
	 * SIGPIPE, whatever the process does with it. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = -pthread_create(&t->thread, NULL, front_main, t);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc) {
		EM_ERR("router", "TLS front: thread: %s", strerror(-rc));
		goto fail;
	}
	t->thread_up = true;
	*out = t;
	return 0;
fail:
	em_router_tls_free(t);
	return rc;
}

void em_router_tls_quit(struct em_router_tls *t, uint32_t drain_ms)
{
	if (!t || atomic_exchange(&t->quit, true))
		return;
	atomic_store(&t->drain_ms, drain_ms);
	uint64_t one = 1;
	if (write(t->stop_fd, &one, sizeof(one)) == -1)
		EM_WARN("router", "TLS front: stop: %s", strerror(errno));
}

void em_router_tls_free(struct em_router_tls *t)
{
	if (!t)
		return;
	if (t->thread_up) {
		em_router_tls_quit(t, 0);
		pthread_join(t->thread, NULL);
	}
	if (t->lfd >= 0)
		close(t->lfd);
	if (t->stop_fd >= 0)
		close(t->stop_fd);
	if (t->epfd >= 0)
		close(t->epfd);
	SSL_CTX_free(t->ctx);
	free(t);
}

size_t em_router_tls_counters(struct em_router_tls *t, struct em_api_counter *out, size_t cap)
{
	const struct em_api_counter all[] = {
	        {"router", "tls_handshakes", atomic_load(&t->c_handshakes)},
	        {"router", "tls_handshake_failures", atomic_load(&t->c_failed)},
	        {"router", "tls_handshake_timeouts", atomic_load(&t->c_timeouts)},
	        {"router", "tls_refused", atomic_load(&t->c_refused)},
	        {"router", "tls_connections", atomic_load(&t->c_active)},
	};
	size_t n = EM_MIN(cap, EM_ARRAY_SIZE(all));
	memcpy(out, all, n * sizeof(*out));
	return n;
}

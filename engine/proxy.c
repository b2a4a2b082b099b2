/* Connections: accept, sniff, route, connect, forward both ways, close.
 *
 * Data flows from a socket's ring buffers into the queue of its peer: a
 * buffer received on A is queued on B and sent from where the kernel put it,
 * then handed back to the ring. While B's queue holds EM_Q_HIGH buffers A's
 * multishot recv is cancelled; it is re-armed when B's queue is down to
 * EM_Q_LOW, so a connection holds a few buffers per direction whatever the
 * peers do. The CQEs already posted when the cancel went in (at most
 * EM_RECV_CAP and one buffer where the kernel caps multishot recvs) queue
 * too, but past the queue's share of the ring their bytes are copied to the
 * heap and the buffers go back at once (em_sock_enqueue). */
#include <netinet/tcp.h>
#include <stdlib.h>
#include <unistd.h>

#include "engine/capture.h"
#include "engine/http.h"
#include "engine/tunnel.h"
#include "engine/worker.h"
#include "proto/log.h"
#include "proto/sniff.h"

#define EM_NO_BID 0x10000u

static void queue_drop(struct em_worker *w, struct em_sock *s)
{
	while (s->q_len) {
		uint16_t e = s->q_first;
		s->q_first = w->q_next[e];
		s->q_len--;
		em_worker_entry_put(w, e);
	}
	s->q_first = s->q_last = EM_Q_NONE;
	s->q_off = 0;
	em_sock_kept_drop(w, s);
}

void em_sock_kept_drop(struct em_worker *w, struct em_sock *s)
{
	s->flags &= ~EM_SF_REPLAY;
	while (s->k_len) {
		uint16_t e = s->k_first;
		s->k_first = w->q_next[e];
		s->k_len--;
		em_worker_entry_put(w, e);
	}
}

/* A request on a reused upstream failed before any response byte: a new
 * connection gets it again, once. True when that replay took over. */
static bool try_replay(struct em_worker *w, struct em_sock *s)
{
	if (!(s->flags & EM_SF_REPLAY) || (s->flags & EM_SF_CLIENT) || !s->http || !s->peer)
		return false;
	return em_http_replay(w, s);
}

static void sock_finalize(struct em_worker *w, struct em_sock *s)
{
	queue_drop(w, s);
	if (s->http)
		em_http_free(w, s);
	if (s->state == EM_SK_POOLED)
		em_http_unpool(w, s);
	if (s->ep) {
		if (s->ep->active)
			s->ep->active--;
		s->ep->last_ms = w->now_ms;
		s->ep = NULL;
	}
	if (s->fd >= 0) {
		if (s->flags & EM_SF_ABORT) {
			struct linger lg = {.l_onoff = 1, .l_linger = 0};
			setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		}
		close(s->fd);
	}
	em_sock_release(w, s);
}

void em_sock_close(struct em_worker *w, struct em_sock *s, bool abort)
{
	if (s->flags & EM_SF_CLOSING)
		return;
	s->flags |= EM_SF_CLOSING | (abort ? EM_SF_ABORT : 0);
	if (s->ts)
		em_tun_sock_detach(w, s);
	em_sock_timer(w, s, EM_T_NONE, 0);
	em_dlist_del(&s->snode);
	s->flags &= ~EM_SF_STARVED;
	if (s->peer) {
		s->peer->peer = NULL;
		s->peer = NULL;
	}
	if (s->inflight == 0) {
		sock_finalize(w, s);
		return;
	}
	struct io_uring_sqe *sqe = em_worker_sqe(w);
	io_uring_prep_cancel_fd(sqe, s->fd, IORING_ASYNC_CANCEL_ALL);
	io_uring_sqe_set_data64(sqe, em_ud(s, EM_OP_CANCEL));
	s->inflight++;
}

void em_conn_close(struct em_worker *w, struct em_sock *s, bool abort)
{
	struct em_sock *p = s->peer;
	em_sock_close(w, s, abort);
	if (p)
		em_sock_close(w, p, abort);
}

void em_sock_arm_recv(struct em_worker *w, struct em_sock *s)
{
	struct io_uring_sqe *sqe = em_worker_sqe(w);
	/* While the ring runs low, a socket whose peer had bytes spilled since
	 * its queue was last empty (the peer does not keep up) reads one buffer
	 * per arm: a multishot read keeps filling buffers until its cancel
	 * lands, and those completions would go to the heap. Other sockets keep
	 * multishot, which saves a re-arm per read: with a thousand busy
	 * streams on one worker the ring is always low, and single-shot recvs
	 * for all of them cost up to twice the CPU per byte. */
	if (em_worker_buf_pressure(w) && s->peer && (s->peer->flags & EM_SF_SPILLED)) {
		io_uring_prep_recv(sqe, s->fd, NULL, 0, 0);
	} else {
		io_uring_prep_recv_multishot(sqe, s->fd, NULL, 0, 0);
		/* The total byte cap shares the SQE field of file_index. */
		if (w->recv_cap)
			sqe->file_index = EM_RECV_CAP;
	}
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = EM_BGID;
	io_uring_sqe_set_data64(sqe, em_ud(s, EM_OP_RECV));
	s->flags |= EM_SF_RECV_ARMED;
	s->inflight++;
}

/* Re-arms <s>'s recv unless it is armed, finished, starved, or its peer's
 * queue is still above the low-water mark. */
void em_sock_maybe_rearm(struct em_worker *w, struct em_sock *s)
{
	if (s->flags & (EM_SF_RECV_ARMED | EM_SF_CLOSING | EM_SF_RD_EOF | EM_SF_STARVED))
		return;
	if (s->peer && s->peer->q_len > EM_Q_LOW)
		return;
	if (s->ts && em_tun_recv_blocked(s))
		return;
	em_sock_arm_recv(w, s);
}

void em_proxy_unstarve(struct em_worker *w, struct em_sock *s)
{
	em_sock_maybe_rearm(w, s);
}

void em_sock_shutdown(struct em_worker *w, struct em_sock *s)
{
	struct io_uring_sqe *sqe = em_worker_sqe(w);
	io_uring_prep_shutdown(sqe, s->fd, SHUT_WR);
	io_uring_sqe_set_data64(sqe, em_ud(s, EM_OP_SHUTDOWN));
	s->flags |= EM_SF_WR_SHUT;
	s->inflight++;
}

void em_sock_send_next(struct em_worker *w, struct em_sock *s)
{
	struct em_sock *src = s->peer;
	s->flags &= ~EM_SF_SEND_BUSY;
	if (s->q_len == 0) {
		s->flags &= ~EM_SF_SPILLED;
		if (s->flags & EM_SF_CLOSE_AFTER) {
			if (s->http && em_http_linger(w, s))
				return;
			em_conn_close(w, s, false);
			return;
		}
		if (s->ts) {
			em_tun_sock_drained(w, s);
			return;
		}
		if (!src)
			return;
		if ((src->flags & EM_SF_RD_EOF) && !(s->flags & EM_SF_WR_SHUT))
			em_sock_shutdown(w, s);
		em_sock_maybe_rearm(w, src);
		return;
	}
	uint16_t e = s->q_first;
	const char *base = em_worker_entry(w, e);
	if (s->q_len > 1 && w->n_sendv == EM_SENDV_SLOTS)
		em_worker_submit(w);
	struct io_uring_sqe *sqe = em_worker_sqe(w);
	if (s->q_len > 1 && w->n_sendv < EM_SENDV_SLOTS) {
		/* Several entries queued: one sendmsg for up to EM_SENDV_IOV. */
		struct em_sendv *v = &w->sendv[w->n_sendv++];
		unsigned n = 0;
		v->iov[n++] = (struct iovec){(void *)(base + s->q_off), w->q_bytes[e] - s->q_off};
		for (uint16_t x = w->q_next[e]; x != EM_Q_NONE && n < EM_SENDV_IOV;
		     x = w->q_next[x])
			v->iov[n++] = (struct iovec){(void *)em_worker_entry(w, x), w->q_bytes[x]};
		v->mh = (struct msghdr){.msg_iov = v->iov, .msg_iovlen = n};
		io_uring_prep_sendmsg(sqe, s->fd, &v->mh, MSG_NOSIGNAL | MSG_WAITALL);
	} else {
		io_uring_prep_send(sqe, s->fd, base + s->q_off, w->q_bytes[e] - s->q_off,
		                   MSG_NOSIGNAL | MSG_WAITALL);
	}
	io_uring_sqe_set_data64(sqe, em_ud(s, EM_OP_SEND));
	s->flags |= EM_SF_SEND_BUSY;
	s->inflight++;
	if (src && s->q_len <= EM_Q_LOW)
		em_sock_maybe_rearm(w, src);
}

/* Queues <len> bytes of entry <e> for sending on <dst>. A ring buffer over
 * the queue's share (em_worker_buf_share) is copied to the heap and goes
 * back to the ring at once, so a peer that stops reading pins at most that
 * many buffers, whatever completions its source already had posted. */
void em_sock_enqueue(struct em_worker *w, struct em_sock *dst, uint16_t e, uint32_t len)
{
	if (e < EM_BUF_COUNT && EM_UNLIKELY(dst->q_len >= em_worker_buf_share(w)) &&
	    em_worker_spill(w, &dst->q_first, &dst->q_last, &dst->q_len, e, len)) {
		dst->flags |= EM_SF_SPILLED;
		/* The bytes may have joined the tail entry: nothing new to
		 * send while a send is in flight (its completion goes on). */
	} else {
		w->q_bytes[e] = len;
		em_q_append(w, &dst->q_first, &dst->q_last, &dst->q_len, e);
	}
	if ((dst->state == EM_SK_OPEN || dst->state == EM_SK_HTTP) &&
	    !(dst->flags & EM_SF_SEND_BUSY))
		em_sock_send_next(w, dst);
}

bool em_sock_enqueue_static(struct em_worker *w, struct em_sock *dst, const char *p, uint32_t len,
                            bool owned)
{
	uint16_t e = em_worker_static_get(w, p, owned ? EM_ST_MALLOC : EM_ST_BORROWED);
	if (e == EM_Q_NONE) {
		if (owned)
			free((void *)p);
		return false;
	}
	em_sock_enqueue(w, dst, e, len);
	return true;
}

/* Pauses <src> when its peer's queue reached the high-water mark. */
void em_sock_backpressure(struct em_worker *w, struct em_sock *src, struct em_sock *dst)
{
	if (dst->q_len < EM_Q_HIGH || !(src->flags & EM_SF_RECV_ARMED) ||
	    (src->flags & EM_SF_RECV_CANCEL))
		return;
	struct io_uring_sqe *sqe = em_worker_sqe(w);
	io_uring_prep_cancel64(sqe, em_ud(src, EM_OP_RECV), 0);
	io_uring_sqe_set_data64(sqe, em_ud(src, EM_OP_CANCEL));
	src->flags |= EM_SF_RECV_CANCEL;
	src->inflight++;
}

/* The idle timer lives on the client socket; moving it on every CQE would be
 * wasted work, so it moves only once it is a second stale. */
static void conn_touch(struct em_worker *w, struct em_sock *s)
{
	struct em_sock *c = (s->flags & EM_SF_CLIENT) ? s : s->peer;
	if (c && c->tclass == EM_T_IDLE && c->deadline_ms < w->now_ms + w->idle_ms - 1000)
		em_sock_timer(w, c, EM_T_IDLE, w->idle_ms);
}

const struct em_svc_port *em_proxy_route(const struct em_sock *c)
{
	const struct em_table *t = em_table_current();
	if (!t)
		return NULL;
	if (c->listener == UINT16_MAX)
		return em_table_lookup(t, &c->dst, IPPROTO_TCP);
	/* The live config names the listener's service: a reload may change it
	 * (a reload keeps the listeners' number and addresses). A config is
	 * published for as long as the engine runs. */
	const struct em_config *cfg = em_config_current();
	if (!cfg || c->listener >= cfg->n_listeners)
		return NULL;
	const struct em_listener_conf *l = &cfg->listeners[c->listener];
	const struct em_service *svc = em_table_service(t, l->service_ns, l->service_name);
	return svc ? em_service_port(svc, l->port, IPPROTO_TCP) : NULL;
}

bool em_proxy_via_tunnel(const struct em_endpoint *ep)
{
	if (ep->local)
		return false;
	const struct em_config *cfg = em_config_current();
	return cfg && cfg->tunnel.cluster_key[0];
}

const struct em_endpoint *em_proxy_pick(struct em_worker *w, const struct em_sock *c,
                                        const struct em_svc_port *sp, const struct em_addr *avoid)
{
	struct em_addr peer, *pp = NULL;
	if (sp->svc && sp->svc->affinity_client_ip) {
		/* Only affinity needs the client address: ask for it only then. */
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		if (getpeername(c->fd, (struct sockaddr *)&ss, &sl) == 0 &&
		    em_addr_from_sockaddr((struct sockaddr *)&ss, &peer) == 0)
			pp = &peer;
	}
	return em_lb_pick(&w->lb, sp, pp, avoid, w->now_ms);
}

/* Opens a socket to <ep> in <u> and submits connect + link timeout. */
int em_upstream_connect(struct em_worker *w, struct em_sock *u, const struct em_endpoint *ep)
{
	struct sockaddr_storage ss;
	socklen_t sl = em_addr_to_sockaddr(&ep->addr, &ss);
	int fd = socket(ep->addr.family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	int rc = em_sock_mark(w, fd);
	if (rc) {
		close(fd);
		return rc;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	u->fd = fd;
	u->family = ep->addr.family;
	memcpy(&u->sa6, &ss, EM_MIN((size_t)sl, sizeof(u->sa6)));
	u->ep = em_lb_ep_get(&w->lb, &ep->addr);
	if (u->ep) {
		u->ep->active++;
		u->ep->last_ms = w->now_ms;
	}
	u->state = EM_SK_CONNECTING;
	/* Connect and its timeout must reach the kernel in one submission. */
	if (io_uring_sq_space_left(&w->ring) < 2)
		em_worker_submit(w);
	struct io_uring_sqe *sqe = em_worker_sqe(w);
	io_uring_prep_connect(sqe, fd, (struct sockaddr *)&u->sa6, sl);
	sqe->flags |= IOSQE_IO_LINK;
	io_uring_sqe_set_data64(sqe, em_ud(u, EM_OP_CONNECT));
	sqe = em_worker_sqe(w);
	io_uring_prep_link_timeout(sqe, &w->connect_ts, 0);
	io_uring_sqe_set_data64(sqe, em_ud(u, EM_OP_LTIMEOUT));
	u->inflight += 2;
	return 0;
}

/* Raw TCP: pick an endpoint and connect; the client's first buffer <bid>
 * (EM_NO_BID if none) waits in the upstream's queue. */
static void start_raw(struct em_worker *w, struct em_sock *c, uint32_t bid, uint32_t len)
{
	const struct em_svc_port *sp = em_proxy_route(c);
	const struct em_endpoint *ep = sp ? em_proxy_pick(w, c, sp, NULL) : NULL;
	if (ep && em_proxy_via_tunnel(ep)) {
		em_tun_start_raw(w, c, sp, ep, bid, len);
		return;
	}
	struct em_sock *u = ep ? em_sock_alloc(w) : NULL;
	if (!u)
		goto fail;
	if (em_upstream_connect(w, u, ep) < 0) {
		em_sock_release(w, u);
		goto fail;
	}
	c->peer = u;
	u->peer = c;
	c->state = EM_SK_OPEN;
	em_sock_timer(w, c, EM_T_IDLE, w->idle_ms);
	if (bid != EM_NO_BID)
		em_sock_enqueue(w, u, (uint16_t)bid, len);
	return;
fail:
	w->n_no_endpoint++;
	if (bid != EM_NO_BID)
		em_worker_buf_put(w, (uint16_t)bid);
	em_sock_close(w, c, true);
}

/* The client's first bytes (or the sniff timeout with EM_NO_BID). */
static void start_conn(struct em_worker *w, struct em_sock *c, uint32_t bid, uint32_t len)
{
	em_sock_timer(w, c, EM_T_NONE, 0);
	if (bid != EM_NO_BID) {
		struct em_sniff_result r;
		int p = em_sniff(em_worker_buf(w, (uint16_t)bid), len, EM_SNIFF_F_FINAL, &r);
		if (p == EM_SNIFF_HTTP1) {
			em_http_start(w, c, (uint16_t)bid, len);
			return;
		}
	}
	start_raw(w, c, bid, len);
}

void em_proxy_accept(struct em_worker *w, struct em_listener *l, int fd)
{
	struct em_sock *c = em_sock_alloc(w);
	if (!c) {
		close(fd);
		return;
	}
	c->fd = fd;
	c->flags = EM_SF_CLIENT;
	c->listener = l->idx;
	c->state = EM_SK_SNIFF;
	if (l->idx == UINT16_MAX) {
		c->flags |= EM_SF_CAPTURED;
		int rc = em_capture_original_dst(fd, 0, &c->dst);
		if (rc < 0) {
			EM_DEBUG("engine", "original destination: %s", strerror(-rc));
			em_sock_close(w, c, true);
			return;
		}
	}
	if (w->sniff_ms == 0) {
		start_conn(w, c, EM_NO_BID, 0);
		if (!(c->flags & EM_SF_CLOSING))
			em_sock_arm_recv(w, c);
		return;
	}
	em_sock_timer(w, c, EM_T_SNIFF, w->sniff_ms);
	em_sock_arm_recv(w, c);
}

static void check_done(struct em_worker *w, struct em_sock *s)
{
	struct em_sock *p = s->peer;
	const unsigned both = EM_SF_RD_EOF | EM_SF_WR_DONE;
	if (s->ts) {
		em_tun_sock_check_done(w, s);
		return;
	}
	if (p && (s->flags & both) == both && (p->flags & both) == both)
		em_conn_close(w, s, false);
}

static void on_recv(struct em_worker *w, struct em_sock *s, int res, uint32_t cflags)
{
	if (res > 0) {
		uint16_t bid = (uint16_t)(cflags >> IORING_CQE_BUFFER_SHIFT);
		if (s->ts) {
			em_tun_sock_recv(w, s, bid, (uint32_t)res);
			return;
		}
		switch (s->state) {
		case EM_SK_SNIFF:
			start_conn(w, s, bid, (uint32_t)res);
			return;
		case EM_SK_HTTP:
		case EM_SK_POOLED:
			em_http_recv(w, s, bid, (uint32_t)res);
			return;
		default:
			break;
		}
		struct em_sock *dst = s->peer;
		if (s->http && !(s->flags & EM_SF_CLIENT)) {
			em_http_recv(w, s, bid, (uint32_t)res);
			return;
		}
		if (!dst) {
			em_worker_buf_put(w, bid);
			em_conn_close(w, s, true);
			return;
		}
		em_sock_enqueue(w, dst, bid, (uint32_t)res);
		conn_touch(w, s);
		em_sock_backpressure(w, s, dst);
		if (!(s->flags & EM_SF_RECV_ARMED))
			em_sock_maybe_rearm(w, s);
		return;
	}
	if (res == -ENOBUFS) {
		w->n_nobufs++;
		em_bufring_dry(&w->rb); /* the loop refills and re-arms */
		if (!(s->flags & EM_SF_RECV_ARMED)) {
			s->flags |= EM_SF_STARVED;
			em_dlist_push_tail(&w->starved, &s->snode);
		}
		return;
	}
	if (res == -ECANCELED) {
		em_sock_maybe_rearm(w, s);
		return;
	}
	if (res == 0) {
		if (try_replay(w, s))
			return;
		s->flags |= EM_SF_RD_EOF;
		if (s->ts) {
			em_tun_sock_eof(w, s);
			return;
		}
		struct em_sock *dst = s->peer;
		if (s->state == EM_SK_SNIFF || s->state == EM_SK_HTTP || s->state == EM_SK_POOLED ||
		    (s->http && !(s->flags & EM_SF_CLIENT))) {
			if (s->http || s->state == EM_SK_POOLED)
				em_http_eof(w, s);
			else
				em_sock_close(w, s, false);
			return;
		}
		if (!dst) {
			em_sock_close(w, s, false);
			return;
		}
		if (dst->state == EM_SK_OPEN && dst->q_len == 0 &&
		    !(dst->flags & EM_SF_SEND_BUSY) && !(dst->flags & EM_SF_WR_SHUT))
			em_sock_shutdown(w, dst);
		return;
	}
	if (try_replay(w, s))
		return;
	em_conn_close(w, s, true);
}

static void on_send(struct em_worker *w, struct em_sock *s, int res)
{
	if (res < 0) {
		if (try_replay(w, s))
			return;
		em_conn_close(w, s, true);
		return;
	}
	/* One send may have covered several entries (em_sock_send_next). */
	uint32_t left = (uint32_t)res;
	for (unsigned k = 0; k <= EM_SENDV_IOV && s->q_len; k++) {
		uint16_t e = s->q_first;
		uint32_t rest = w->q_bytes[e] - s->q_off;
		if (left < rest) {
			s->q_off += left;
			break;
		}
		left -= rest;
		s->q_first = w->q_next[e];
		if (--s->q_len == 0)
			s->q_first = s->q_last = EM_Q_NONE;
		s->q_off = 0;
		if ((s->flags & EM_SF_REPLAY) && s->k_len < EM_REPLAY_KEEP) {
			/* q_bytes[e] stays: the replay sends the entry whole. */
			em_q_append(w, &s->k_first, &s->k_last, &s->k_len, e);
		} else {
			em_sock_kept_drop(w, s);
			em_worker_entry_put(w, e);
		}
		if (left == 0)
			break;
	}
	conn_touch(w, s);
	em_sock_send_next(w, s);
}

static void on_connect(struct em_worker *w, struct em_sock *u, int res)
{
	struct em_sock *c = u->peer;
	if (res == 0) {
		u->state = EM_SK_OPEN;
		em_sock_arm_recv(w, u);
		if (u->q_len || u->ts)
			em_sock_send_next(w, u);
		return;
	}
	w->n_connect_fail++;
	if (!c) {
		em_sock_close(w, u, true);
		return;
	}
	/* -ECANCELED here means the linked timeout fired. */
	bool timeout = res == -ECANCELED;
	if (!timeout && c->retries == 0) {
		c->retries = 1;
		const struct em_svc_port *sp = em_proxy_route(c);
		struct em_addr prev = u->ep ? u->ep->addr : (struct em_addr){0};
		const struct em_endpoint *ep = sp ? em_proxy_pick(w, c, sp, &prev) : NULL;
		if (ep) {
			close(u->fd);
			u->fd = -1;
			if (u->ep && u->ep->active)
				u->ep->active--;
			u->ep = NULL;
			if (em_upstream_connect(w, u, ep) == 0)
				return;
		}
	}
	if (c->http) {
		em_http_connect_failed(w, c, u, timeout ? 504 : 502);
		return;
	}
	em_conn_close(w, u, true);
}

void em_proxy_cqe(struct em_worker *w, struct em_sock *s, enum em_op op, int res, uint32_t cflags)
{
	if (op == EM_OP_RECV && (cflags & IORING_CQE_F_BUFFER)) {
		w->n_bufs_held++;
		em_bufring_taken(&w->rb);
	}
	if (op != EM_OP_RECV || !(cflags & IORING_CQE_F_MORE)) {
		s->inflight--;
		if (op == EM_OP_RECV)
			s->flags &= ~(EM_SF_RECV_ARMED | EM_SF_RECV_CANCEL);
	}
	if (EM_UNLIKELY(s->flags & EM_SF_CLOSING)) {
		if (op == EM_OP_RECV && (cflags & IORING_CQE_F_BUFFER))
			em_worker_buf_put(w, (uint16_t)(cflags >> IORING_CQE_BUFFER_SHIFT));
		if (s->inflight == 0)
			sock_finalize(w, s);
		return;
	}
	switch (op) {
	case EM_OP_RECV:
		on_recv(w, s, res, cflags);
		break;
	case EM_OP_SEND:
		on_send(w, s, res);
		break;
	case EM_OP_CONNECT:
		on_connect(w, s, res);
		break;
	case EM_OP_SHUTDOWN:
		s->flags |= EM_SF_WR_DONE;
		if (res < 0)
			em_conn_close(w, s, true);
		else
			check_done(w, s);
		break;
	default: /* link timeouts and cancels only count */
		break;
	}
}

void em_proxy_expire(struct em_worker *w, struct em_sock *s)
{
	enum em_timer_class tc = s->tclass;
	s->tclass = EM_T_NONE;
	switch (tc) {
	case EM_T_SNIFF:
		if (s->state == EM_SK_SNIFF)
			start_conn(w, s, EM_NO_BID, 0);
		break;
	case EM_T_HEAD:
		em_http_expire(w, s);
		break;
	default:
		em_conn_close(w, s, false);
		break;
	}
}

void em_proxy_close_idle(struct em_worker *w, bool all)
{
	for (int tc = EM_T_SNIFF; tc < EM_T__COUNT; tc++) {
		struct em_dlist *h = &w->timers[tc], *n = h->next;
		/* Closing a socket never unlinks another entry of the same
		 * list (peers are never on the same list), so <next> stays. */
		while (n != h) {
			struct em_dlist *next = n->next;
			struct em_sock *s = em_container_of(n, struct em_sock, tnode);
			if (tc != EM_T_IDLE || all || em_http_idle(s))
				em_conn_close(w, s, all);
			n = next;
		}
	}
}

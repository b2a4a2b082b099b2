/* The socket layer: alloc and free, timers, recv arming and pausing, the
 * send queue and its batching, shutdown, connect, and the one close
 * sequence. Modes are reached only through s->ops (engine/sock.h). */
#include "engine/sock.h"

#include <poll.h>

#include <netinet/tcp.h>
#include <stdlib.h>
#include <unistd.h>

#define EM_SLAB_SOCKS 64u

struct em_sock *em_sock_alloc(struct em_worker *w, const struct em_sock_ops *ops)
{
	if (EM_UNLIKELY(!w->free_socks)) {
		if (w->n_slabs == w->cap_slabs) {
			size_t cap = w->cap_slabs ? w->cap_slabs * 2 : 16;
			void **ns = realloc(w->slabs, cap * sizeof(*ns));
			if (!ns)
				return NULL;
			w->slabs = ns;
			w->cap_slabs = cap;
		}
		struct em_sock *slab = aligned_alloc(64, EM_SLAB_SOCKS * sizeof(*slab));
		if (!slab)
			return NULL;
		w->slabs[w->n_slabs++] = slab;
		for (unsigned i = 0; i < EM_SLAB_SOCKS; i++) {
			slab[i].peer = w->free_socks;
			w->free_socks = &slab[i];
		}
	}
	struct em_sock *s = w->free_socks;
	w->free_socks = s->peer;
	memset(s, 0, sizeof(*s));
	s->fd = -1;
	s->ops = ops;
	w->n_live++;
	return s;
}

void em_sock_release(struct em_worker *w, struct em_sock *s)
{
	s->peer = w->free_socks;
	w->free_socks = s;
	w->n_live--;
}

/* Each timer list stays in deadline order, so that em_sock_run_timers may
 * stop at the first entry not due. Mostly a new deadline is the latest of
 * its list (one timeout per class), and the search from the tail ends at
 * once. It is not when a class mixes timeouts (a stream waiting for a
 * tunnel slot has connect_ms on the idle list) or a reload changed one: the
 * search then runs from both ends at once and costs twice the distance to
 * the nearer end. Equal deadlines keep their insertion order. */
void em_sock_timer(struct em_worker *w, struct em_sock *s, enum em_timer_class tc, uint32_t ms)
{
	s->tclass = (uint8_t)tc;
	em_dlist_del(&s->tnode);
	if (tc == EM_T_NONE)
		return;
	uint64_t d = w->now_ms + ms;
	s->deadline_ms = d;
	struct em_dlist *h = &w->timers[tc], *back = h->prev, *front = h->next, *after = NULL;
	for (;;) {
		if (back == h || em_container_of(back, struct em_sock, tnode)->deadline_ms <= d) {
			after = back;
			break;
		}
		if (front == h || em_container_of(front, struct em_sock, tnode)->deadline_ms > d) {
			after = front->prev;
			break;
		}
		back = back->prev;
		front = front->next;
	}
	s->tnode.prev = after;
	s->tnode.next = after->next;
	after->next->prev = &s->tnode;
	after->next = &s->tnode;
}

/* The idle timer lives on the client socket; moving it on every CQE would be
 * wasted work, so it moves only once it is a second stale. */
void em_sock_touch(struct em_worker *w, struct em_sock *s)
{
	struct em_sock *c = (s->flags & EM_SF_CLIENT) ? s : s->peer;
	if (c && c->tclass == EM_T_IDLE && c->deadline_ms < w->now_ms + w->idle_ms - 1000)
		em_sock_timer(w, c, EM_T_IDLE, w->idle_ms);
}

int em_sock_mark(const struct em_worker *w, int fd)
{
	uint32_t mark = w->eng->mark;

	if (mark && setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) == -1)
		return -errno;
	return 0;
}

void em_sock_bufsizes(int fd, uint32_t sndbuf, uint32_t rcvbuf)
{
	int v;
	if (sndbuf) {
		v = (int)sndbuf;
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
	}
	if (rcvbuf) {
		v = (int)rcvbuf;
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
	}
}

int em_sock_connect(struct em_worker *w, struct em_sock *u, const struct em_addr *addr)
{
	struct sockaddr_storage ss;
	socklen_t sl = em_addr_to_sockaddr(addr, &ss);
	int fd = socket(addr->family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	int rc = em_sock_mark(w, fd);
	if (rc) {
		close(fd);
		return rc;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	em_sock_bufsizes(fd, w->upstream_sndbuf, w->upstream_rcvbuf);
	u->fd = fd;
	u->family = addr->family;
	memcpy(&u->sa6, &ss, EM_MIN((size_t)sl, sizeof(u->sa6)));
	u->state = EM_SK_CONNECTING;
	u->t_us = (uint32_t)(w->now_ns / 1000u);
	em_worker_connect(w, fd, (struct sockaddr *)&u->sa6, sl, em_ud(u, EM_OP_CONNECT),
	                  em_ud(u, EM_OP_LTIMEOUT));
	u->inflight += 2;
	return 0;
}

/* ---- receiving ---- */

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

void em_sock_maybe_rearm(struct em_worker *w, struct em_sock *s)
{
	if (s->flags & (EM_SF_RECV_ARMED | EM_SF_CLOSING | EM_SF_RD_EOF | EM_SF_STARVED))
		return;
	if (s->peer && s->peer->q_len > EM_Q_LOW)
		return;
	if (s->ops->recv_blocked && s->ops->recv_blocked(s))
		return;
	em_sock_arm_recv(w, s);
}

void em_sock_pause(struct em_worker *w, struct em_sock *s)
{
	if (!(s->flags & EM_SF_RECV_ARMED) || (s->flags & EM_SF_RECV_CANCEL))
		return;
	struct io_uring_sqe *sqe = em_worker_sqe(w);
	io_uring_prep_cancel64(sqe, em_ud(s, EM_OP_RECV), 0);
	io_uring_sqe_set_data64(sqe, em_ud(s, EM_OP_CANCEL));
	s->flags |= EM_SF_RECV_CANCEL;
	s->inflight++;
}

void em_sock_backpressure(struct em_worker *w, struct em_sock *src, struct em_sock *dst)
{
	if (dst->q_len >= EM_Q_HIGH)
		em_sock_pause(w, src);
}

bool em_sock_unstarve_one(struct em_worker *w)
{
	struct em_dlist *n = em_dlist_first(&w->starved);
	if (EM_LIKELY(n == NULL))
		return false;
	struct em_sock *s = em_container_of(n, struct em_sock, snode);
	em_dlist_del(n);
	s->flags &= ~EM_SF_STARVED;
	em_sock_maybe_rearm(w, s);
	return true;
}

/* ---- sending ---- */

void em_sock_shutdown(struct em_worker *w, struct em_sock *s)
{
	struct io_uring_sqe *sqe = em_worker_sqe(w);
	io_uring_prep_shutdown(sqe, s->fd, SHUT_WR);
	io_uring_sqe_set_data64(sqe, em_ud(s, EM_OP_SHUTDOWN));
	s->flags |= EM_SF_WR_SHUT;
	s->inflight++;
}

void em_sock_drained_default(struct em_worker *w, struct em_sock *s)
{
	struct em_sock *src = s->peer;
	if (!src)
		return;
	if ((src->flags & EM_SF_RD_EOF) && !(s->flags & EM_SF_WR_SHUT))
		em_sock_shutdown(w, s);
	em_sock_maybe_rearm(w, src);
}

void em_sock_send_next(struct em_worker *w, struct em_sock *s)
{
	struct em_sock *src = s->peer;
	s->flags &= ~EM_SF_SEND_BUSY;
	if (s->q_len == 0) {
		s->flags &= ~EM_SF_SPILLED;
		if (s->ops->drained)
			s->ops->drained(w, s);
		else
			em_sock_drained_default(w, s);
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
	if (dst->state == EM_SK_OPEN && !(dst->flags & EM_SF_SEND_BUSY))
		em_sock_send_next(w, dst);
}

bool em_sock_enqueue_static(struct em_worker *w, struct em_sock *dst, const char *p, uint32_t len,
                            em_entry_release_fn *release)
{
	uint16_t e = em_worker_static_get(w, p, release);
	if (e == EM_Q_NONE) {
		if (release)
			release(w, p);
		return false;
	}
	em_sock_enqueue(w, dst, e, len);
	return true;
}

static void queue_drop(struct em_worker *w, struct em_sock *s)
{
	em_q_drop(w, &s->q_first, &s->q_last, &s->q_len);
	s->q_off = 0;
	em_sock_kept_drop(w, s);
}

void em_sock_kept_drop(struct em_worker *w, struct em_sock *s)
{
	s->flags &= ~EM_SF_REPLAY;
	em_q_drop(w, &s->k_first, &s->k_last, &s->k_len);
}

/* ---- closing ---- */

static void sock_finalize(struct em_worker *w, struct em_sock *s)
{
	queue_drop(w, s);
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
	if (s->ops->detach)
		s->ops->detach(w, s);
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

/* ---- completions ---- */

static void on_recv(struct em_worker *w, struct em_sock *s, int res, uint32_t cflags)
{
	if (EM_LIKELY(res > 0)) {
		if (s->flags & EM_SF_CLIENT)
			em_svcstat_add(&em_worker_svc(w, s->mslot)->rx_bytes, (uint32_t)res);
		s->ops->recv(w, s, (uint16_t)(cflags >> IORING_CQE_BUFFER_SHIFT), (uint32_t)res);
		return;
	}
	if (res == -ENOBUFS) {
		w->cnt[EM_C_NOBUFS]++;
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
		s->flags |= EM_SF_RD_EOF;
		if (s->ops->eof)
			s->ops->eof(w, s);
		else
			em_conn_close(w, s, false);
		return;
	}
	if (!s->ops->error || !s->ops->error(w, s, res))
		em_conn_close(w, s, true);
}

static void on_send(struct em_worker *w, struct em_sock *s, int res)
{
	if (res < 0) {
		if (!s->ops->error || !s->ops->error(w, s, res))
			em_conn_close(w, s, true);
		return;
	}
	if (s->flags & EM_SF_CLIENT)
		em_svcstat_add(&em_worker_svc(w, s->mslot)->tx_bytes, (uint32_t)res);
	/* One send may have covered several entries (em_sock_send_next): at
	 * most EM_SENDV_IOV, the first of them maybe in part. */
	uint32_t left = (uint32_t)res;
	while (s->q_len) {
		uint16_t e = s->q_first;
		uint32_t rest = w->q_bytes[e] - s->q_off;
		if (left < rest) {
			s->q_off += left;
			left = 0;
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
	EM_ASSERT(left == 0); /* the kernel sent no more than was queued */
	em_sock_touch(w, s);
	em_sock_send_next(w, s);
}

static void on_connect(struct em_worker *w, struct em_sock *u, int res)
{
	if (res < 0) {
		if (u->ops->connect_failed) {
			u->ops->connect_failed(w, u, res);
			return;
		}
		w->cnt[EM_C_CONNECT_FAIL]++;
		em_conn_close(w, u, true);
		return;
	}
	if (u->ops->connected)
		u->ops->connected(w, u);
	u->state = EM_SK_OPEN;
	em_sock_arm_recv(w, u);
	/* An empty queue runs the mode's drained operation: a FIN that came
	 * while connecting passes on. */
	em_sock_send_next(w, u);
}

static void on_shutdown(struct em_worker *w, struct em_sock *s, int res)
{
	s->flags |= EM_SF_WR_DONE;
	if (res < 0) {
		em_conn_close(w, s, true);
		return;
	}
	if (s->ops->shut) {
		s->ops->shut(w, s);
		return;
	}
	struct em_sock *p = s->peer;
	const unsigned both = EM_SF_RD_EOF | EM_SF_WR_DONE;
	if (p && (s->flags & both) == both && (p->flags & both) == both)
		em_conn_close(w, s, false);
}

void em_sock_cqe(struct em_worker *w, struct em_sock *s, enum em_op op, int res, uint32_t cflags)
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
		on_shutdown(w, s, res);
		break;
	default: /* link timeouts and cancels only count */
		break;
	}
}

/* ---- timers ---- */

void em_sock_run_timers(struct em_worker *w)
{
	for (int tc = EM_T_SNIFF; tc < EM_T__COUNT; tc++) {
		struct em_dlist *n;
		/* Each list is in deadline order, so stop at the first live
		 * entry. Bounded per tick to keep latency flat. */
		for (unsigned k = 0; k < 4096 && (n = em_dlist_first(&w->timers[tc])); k++) {
			struct em_sock *s = em_container_of(n, struct em_sock, tnode);
			if (s->deadline_ms > w->now_ms)
				break;
			em_dlist_del(&s->tnode);
			s->tclass = EM_T_NONE;
			if (s->ops->expire)
				s->ops->expire(w, s, (enum em_timer_class)tc);
			else
				em_conn_close(w, s, false);
		}
	}
}

void em_sock_close_idle(struct em_worker *w, bool all)
{
	for (int tc = EM_T_SNIFF; tc < EM_T__COUNT; tc++) {
		struct em_dlist *h = &w->timers[tc], *n = h->next;
		/* Closing a socket never unlinks another entry of the same
		 * list (peers are never on the same list), so <next> stays. */
		while (n != h) {
			struct em_dlist *next = n->next;
			struct em_sock *s = em_container_of(n, struct em_sock, tnode);
			if (tc != EM_T_IDLE || all || (s->ops->idle && s->ops->idle(s)))
				em_conn_close(w, s, all);
			n = next;
		}
	}
}

bool em_sock_pair_hung_up(const struct em_sock *s)
{
	if (s->family != AF_UNIX || (s->flags & EM_SF_WR_SHUT))
		return false;
	/* With this end open for writing the kernel reports a hang-up only
	 * once the other end is closed. */
	struct pollfd p = {.fd = s->fd, .events = POLLOUT};
	return poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR));
}

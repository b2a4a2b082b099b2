/* The worker loop: ring setup, probes, listeners, the tick, dispatch. */
#include "engine/worker.h"

#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "engine/sock.h"
#include "engine/tunnel.h"
#include "proto/clock.h"
#include "proto/log.h"
#include "store/rcu.h"

#define EM_TICK_MS   50u
#define EM_CQE_BATCH 256u

/* Buffers the last CQEs took come back from the stack, one starved
 * socket re-armed for each. */
static void refill(struct em_worker *w)
{
	for (unsigned n = em_bufring_refill(&w->rb); n && em_sock_unstarve_one(w); n--)
		;
}

static void arm_accept(struct em_worker *w, struct em_listener *l)
{
	struct io_uring_sqe *sqe = em_worker_sqe(w);
	io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, em_ud(l, EM_OP_ACCEPT));
	l->armed = true;
}

static void arm_tick(struct em_worker *w)
{
	struct io_uring_sqe *sqe = em_worker_sqe(w);
	io_uring_prep_timeout(sqe, &w->tick_ts, 0, 0);
	io_uring_sqe_set_data64(sqe, em_ud(w, EM_OP_TICK));
}

static void arm_wake(struct em_worker *w)
{
	struct io_uring_sqe *sqe = em_worker_sqe(w);
	io_uring_prep_read(sqe, w->wake_fd, &w->wake_val, sizeof(w->wake_val), 0);
	io_uring_sqe_set_data64(sqe, em_ud(w, EM_OP_WAKE));
}

/* Timeouts and the balancer follow the live config (SIGHUP); read it here,
 * once per tick, rather than on every connection. */
static void refresh_config(struct em_worker *w)
{
	const struct em_config *cfg = em_worker_config();
	w->connect_ms = cfg->timeouts.connect_ms;
	w->idle_ms = cfg->timeouts.idle_ms;
	w->head_ms = cfg->timeouts.request_head_ms;
	w->sniff_ms = cfg->timeouts.sniff_ms;
	w->client_sndbuf = cfg->sockets.client_sndbuf;
	w->client_rcvbuf = cfg->sockets.client_rcvbuf;
	w->upstream_sndbuf = cfg->sockets.upstream_sndbuf;
	w->upstream_rcvbuf = cfg->sockets.upstream_rcvbuf;
	w->lb.algo = cfg->balancer;
	w->connect_ts.tv_sec = w->connect_ms / 1000;
	w->connect_ts.tv_nsec = (long long)(w->connect_ms % 1000) * 1000000;
}

static void stop_listeners(struct em_worker *w)
{
	for (size_t i = 0; i < w->n_listeners; i++) {
		struct em_listener *l = &w->listeners[i];
		if (l->armed) {
			struct io_uring_sqe *sqe = em_worker_sqe(w);
			io_uring_prep_cancel64(sqe, em_ud(l, EM_OP_ACCEPT), 0);
			io_uring_sqe_set_data64(sqe, em_ud(NULL, EM_OP_NONE));
		}
	}
}

void em_worker_publish(struct em_worker *w)
{
	uint64_t v[EM_C__COUNT];
	memcpy(v, w->cnt, sizeof(v));
	v[EM_C_ACTIVE] = w->n_live;
	em_tun_counters(w, v);
	for (unsigned i = 0; i < EM_C__COUNT; i++)
		__atomic_store_n(&w->pub[i], v[i], __ATOMIC_RELAXED);
	em_tun_publish_peers(w);
}

bool em_worker_at_exit(struct em_worker *w, void (*fn)(struct em_worker *w))
{
	if (w->n_at_exit == EM_ARRAY_SIZE(w->at_exit))
		return false;
	w->at_exit[w->n_at_exit++] = fn;
	return true;
}

/* No buffer was taken for EM_TRIM_IDLE_MS: the pages of those not held go
 * back to the kernel. Only this thread's reads fill them (io_uring completes
 * socket reads in this task's context), so none is written meanwhile. */
static void trim(struct em_worker *w)
{
	if (w->n_bufs_held || !em_tun_trim(w))
		return;
	em_bufring_trim(&w->rb);
	em_worker_spill_pool_free(w);
	w->bufs_resident = false;
}

static void on_tick(struct em_worker *w)
{
	w->now_ns = em_now_ns();
	w->now_ms = w->now_ns / 1000000u;
	refresh_config(w);
	em_sock_run_timers(w);
	/* Buffers may have come back without a send completing (closes). */
	for (unsigned k = 0; k < 64 && em_sock_unstarve_one(w); k++)
		;
	em_bufring_tick(&w->rb);
	for (size_t i = 0; i < w->n_listeners; i++) {
		struct em_listener *l = &w->listeners[i];
		if (!l->armed && !l->closed && !w->stopping)
			arm_accept(w, l);
	}
	if (w->stopping && w->now_ms >= w->drain_deadline_ms)
		em_sock_close_idle(w, true);
	em_tun_tick(w);
	em_lb_gc(&w->lb, w->now_ms, 60000);
	if (w->bufs_resident && w->now_ms - w->buf_used_ms >= EM_TRIM_IDLE_MS)
		trim(w);
	em_worker_publish(w);
	arm_tick(w);
}

/* A connection another thread handed to a worker (em_worker_post_conn). */
struct em_conn_post {
	struct em_conn_post *next;
	int fd;
	uint16_t listener;
};

int em_worker_post_conn(struct em_worker *w, int fd, uint16_t listener)
{
	struct em_conn_post *p = malloc(sizeof(*p));
	if (!p) {
		close(fd);
		return -ENOMEM;
	}
	p->fd = fd;
	p->listener = listener;
	pthread_mutex_lock(&w->inbox_mu);
	bool closed = w->inbox_closed;
	if (!closed) {
		p->next = w->inbox;
		w->inbox = p;
	}
	pthread_mutex_unlock(&w->inbox_mu);
	if (closed) {
		close(fd);
		free(p);
		return -ESHUTDOWN;
	}
	uint64_t one = 1;
	if (write(w->wake_fd, &one, sizeof(one)) == -1) /* stays queued: next wake, or the stop */
		EM_WARN("engine", "wake worker %u: %s", w->id, strerror(errno));
	return 0;
}

/* The posted connections, oldest first; the inbox is empty after. */
static struct em_conn_post *inbox_take(struct em_worker *w, bool close_it)
{
	pthread_mutex_lock(&w->inbox_mu);
	struct em_conn_post *l = w->inbox, *r = NULL;
	w->inbox = NULL;
	if (close_it)
		w->inbox_closed = true;
	pthread_mutex_unlock(&w->inbox_mu);
	while (l) {
		struct em_conn_post *n = l->next;
		l->next = r;
		r = l;
		l = n;
	}
	return r;
}

void em_worker_inbox_close(struct em_worker *w)
{
	for (struct em_conn_post *p = inbox_take(w, true), *n; p; p = n) {
		n = p->next;
		close(p->fd);
		free(p);
	}
}

static void take_conns(struct em_worker *w)
{
	for (struct em_conn_post *p = inbox_take(w, false), *n; p; p = n) {
		n = p->next;
		w->cnt[EM_C_ACCEPTED]++;
		if (w->serve_conn)
			w->serve_conn(w, p->fd, p->listener);
		else
			close(p->fd);
		free(p);
	}
}

static void on_wake(struct em_worker *w)
{
	if (!atomic_load(&w->eng->stop)) {
		if (w->id == 0)
			em_tun_control_take(w);
		em_tun_take_handoffs(w);
		take_conns(w);
		arm_wake(w);
		return;
	}
	if (w->stopping)
		return;
	w->stopping = true;
	em_worker_inbox_close(w);
	w->drain_deadline_ms = em_now_ms() + atomic_load(&w->eng->drain_ms);
	stop_listeners(w);
	for (size_t i = 0; i < w->n_listeners; i++) {
		if (w->listeners[i].fd >= 0)
			close(w->listeners[i].fd);
		w->listeners[i].fd = -1;
		w->listeners[i].closed = true;
	}
	em_sock_close_idle(w, false);
}

static void on_accept(struct em_worker *w, struct em_listener *l, int res, uint32_t cflags)
{
	if (!(cflags & IORING_CQE_F_MORE))
		l->armed = false;
	if (res >= 0) {
		w->cnt[EM_C_ACCEPTED]++;
		if (w->stopping) {
			close(res);
			return;
		}
		l->accept(w, l, res);
		return;
	}
	if (res == -ECANCELED)
		return;
	/* EMFILE/ENFILE/ENOBUFS: the tick re-arms, which paces retries. */
	if (!l->armed)
		EM_WARN("engine", "worker %u: accept: %s", w->id, strerror(-res));
}

static void dispatch(struct em_worker *w, const struct io_uring_cqe *cqe)
{
	if (cqe->flags & IORING_CQE_F_BUFFER) {
		w->buf_used_ms = w->now_ms;
		w->bufs_resident = true;
	}
	uint64_t ud = cqe->user_data;
	enum em_op op = (enum em_op)(ud & EM_UD_OP_MASK);
	void *p = (void *)(uintptr_t)(ud & ~(uint64_t)EM_UD_OP_MASK);
	switch (op) {
	case EM_OP_NONE:
		break;
	case EM_OP_ACCEPT:
		on_accept(w, p, cqe->res, cqe->flags);
		break;
	case EM_OP_TICK:
		on_tick(w);
		break;
	case EM_OP_WAKE:
		on_wake(w);
		break;
	case EM_OP_TRECV:
	case EM_OP_TSEND:
	case EM_OP_TCONNECT:
	case EM_OP_TCOUNT:
		em_tun_cqe(w, p, op, cqe->res, cqe->flags);
		break;
	default:
		em_sock_cqe(w, p, op, cqe->res, cqe->flags);
		break;
	}
}

static int setup_ring(struct em_worker *w)
{
	struct io_uring_params p;
	static const unsigned tries[] = {
	        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
	        IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
	        0,
	};
	int rc = -EINVAL;
	for (size_t i = 0; i < EM_ARRAY_SIZE(tries); i++) {
		memset(&p, 0, sizeof(p));
		p.flags = tries[i] | IORING_SETUP_CQSIZE;
		p.cq_entries = 16384;
		rc = io_uring_queue_init_params(4096, &w->ring, &p);
		if (rc == 0) {
			/* Spares io_uring_enter the file lookup and its shared
			 * refcount on every loop turn; optional (5.18+). */
			io_uring_register_ring_fd(&w->ring);
			if (w->id == 0)
				w->eng->ring_flags = tries[i];
			return 0;
		}
	}
	return rc;
}

/* Hands a buffer the probe below received back to the ring. */
static void probe_buf_return(struct em_worker *w, const struct io_uring_cqe *cqe)
{
	if (!(cqe->flags & IORING_CQE_F_BUFFER))
		return;
	em_bufring_taken(&w->rb);
	em_bufring_put(&w->rb, (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT));
}

#define PROBE_RECV   (1u << 4 | EM_OP_NONE)
#define PROBE_CANCEL (2u << 4 | EM_OP_NONE)

/* Whether a multishot recv takes a total byte cap (Linux 6.17): two bytes
 * wait on a socketpair and a recv capped at one byte is armed. A kernel
 * with the cap ends the recv after its first completion (which may fill a
 * whole buffer: the cap is checked after each read); one without refuses
 * the SQE (the field is file_index there) or keeps the recv armed. */
static bool probe_recv_cap(struct em_worker *w)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return false;
	bool ok = false;
	struct io_uring_sqe *sqe;
	if (write(sv[1], "xy", 2) == 2 && (sqe = io_uring_get_sqe(&w->ring))) {
		io_uring_prep_recv_multishot(sqe, sv[0], NULL, 0, 0);
		sqe->flags |= IOSQE_BUFFER_SELECT;
		sqe->buf_group = EM_BGID;
		sqe->file_index = 1;
		io_uring_sqe_set_data64(sqe, PROBE_RECV);
		io_uring_submit(&w->ring);
		/* Waits for the recv's last CQE, and for the cancel's if one
		 * had to go in. Both carry EM_OP_NONE, so that one arriving
		 * after a timeout is ignored by the worker's dispatch. */
		bool recv_live = true, first = true, cancel_live = false;
		struct __kernel_timespec ts = {.tv_sec = 1};
		while (recv_live || cancel_live) {
			struct io_uring_cqe *cqe;
			if (io_uring_wait_cqe_timeout(&w->ring, &cqe, &ts) < 0)
				break;
			if (io_uring_cqe_get_data64(cqe) == PROBE_RECV) {
				recv_live = cqe->flags & IORING_CQE_F_MORE;
				if (first)
					ok = cqe->res > 0 && !recv_live;
				first = false;
				probe_buf_return(w, cqe);
			} else {
				cancel_live = false;
			}
			io_uring_cqe_seen(&w->ring, cqe);
			if (recv_live && !cancel_live && (sqe = io_uring_get_sqe(&w->ring))) {
				io_uring_prep_cancel64(sqe, PROBE_RECV, 0);
				io_uring_sqe_set_data64(sqe, PROBE_CANCEL);
				io_uring_submit(&w->ring);
				cancel_live = true;
			}
		}
	}
	close(sv[0]);
	close(sv[1]);
	return ok;
}

static void teardown(struct em_worker *w, bool ring_up)
{
	if (ring_up)
		io_uring_queue_exit(&w->ring);
	em_bufring_free(&w->rb);
	em_worker_spill_pool_free(w);
	for (size_t i = 0; i < w->n_slabs; i++)
		free(w->slabs[i]);
	free(w->slabs);
	em_lb_destroy(&w->lb);
	em_worker_inbox_close(w);
	for (unsigned i = 0; i < w->n_at_exit; i++)
		w->at_exit[i](w);
	w->n_at_exit = 0;
	em_tun_worker_free(w);
	w->slabs = NULL;
	w->n_slabs = 0;
}

static bool finished(struct em_worker *w)
{
	if (!w->stopping || w->n_live || !em_tun_idle(w))
		return false;
	for (size_t i = 0; i < w->n_listeners; i++)
		if (w->listeners[i].armed)
			return false;
	return true;
}

void *em_worker_main(void *arg)
{
	struct em_worker *w = arg;
	bool ring_up = false;
	for (int tc = 0; tc < EM_T__COUNT; tc++)
		em_dlist_init(&w->timers[tc]);
	em_worker_queues_init(w);
	w->unstarve = em_sock_unstarve_one;
	w->now_ns = em_now_ns();
	w->now_ms = w->now_ns / 1000000u;
	int rc =
	        em_lb_init(&w->lb, em_worker_config()->balancer, em_now_ns() ^ (w->id * 0x9e37ULL));
	if (rc)
		goto fail;
	rc = em_tun_worker_init(w);
	if (rc)
		goto fail;
	rc = setup_ring(w);
	if (rc)
		goto fail;
	ring_up = true;
	rc = em_bufring_init(&w->rb, &w->ring, EM_BGID, EM_BUF_COUNT, EM_BUF_SIZE);
	if (rc)
		goto fail;
	/* The kernel's answer holds for every ring: worker 0 asks (workers
	 * start one after another), the others read it. */
	if (w->id == 0)
		w->eng->recv_cap = !w->eng->recv_cap_off && probe_recv_cap(w);
	w->recv_cap = w->eng->recv_cap;
	w->tick_ts.tv_nsec = EM_TICK_MS * 1000000LL;
	em_rcu_register();
	refresh_config(w);
	for (size_t i = 0; i < w->n_listeners; i++)
		arm_accept(w, &w->listeners[i]);
	arm_tick(w);
	arm_wake(w);
	w->init_rc = 0;
	sem_post(&w->eng->ready);

	struct io_uring_cqe *cqes[EM_CQE_BATCH];
	while (!finished(w)) {
		if (io_uring_cq_ready(&w->ring)) {
			em_worker_submit(w);
		} else {
			em_rcu_offline();
			io_uring_submit_and_wait(&w->ring, 1);
			em_rcu_online();
			if (io_uring_sq_ready(&w->ring) == 0)
				w->n_sendv = 0;
		}
		unsigned n = io_uring_peek_batch_cqe(&w->ring, cqes, EM_CQE_BATCH);
		if (n) {
			w->now_ns = em_now_ns();
			w->now_ms = w->now_ns / 1000000u;
		}
		for (unsigned i = 0; i < n; i++)
			dispatch(w, cqes[i]);
		io_uring_cq_advance(&w->ring, n);
		refill(w);
		em_tun_flush(w);
		em_rcu_quiescent();
	}
	em_rcu_unregister();
	teardown(w, ring_up);
	return NULL;
fail:
	EM_ERR("engine", "worker %u: setup: %s", w->id, strerror(-rc));
	teardown(w, ring_up);
	w->init_rc = rc;
	sem_post(&w->eng->ready);
	return NULL;
}

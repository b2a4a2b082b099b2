/* The worker loop: ring setup, buffer ring, listeners, timers, dispatch. */
#include "engine/worker.h"

#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "engine/http.h"
#include "engine/tunnel.h"
#include "proto/clock.h"
#include "proto/log.h"
#include "store/rcu.h"

#define EM_SLAB_SOCKS 64u
#define EM_TICK_MS    50u
#define EM_CQE_BATCH  256u

void em_worker_submit(struct em_worker *w)
{
	io_uring_submit(&w->ring);
	if (io_uring_sq_ready(&w->ring) == 0)
		w->n_sendv = 0;
}

struct io_uring_sqe *em_worker_sqe(struct em_worker *w)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
	while (EM_UNLIKELY(!sqe)) {
		em_worker_submit(w);
		sqe = io_uring_get_sqe(&w->ring);
	}
	return sqe;
}

struct em_sock *em_sock_alloc(struct em_worker *w)
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
	w->n_live++;
	return s;
}

/* Called by proxy.c through em_sock_free (declared there). */
void em_sock_release(struct em_worker *w, struct em_sock *s);
void em_sock_release(struct em_worker *w, struct em_sock *s)
{
	s->peer = w->free_socks;
	w->free_socks = s;
	w->n_live--;
}

/* Each timer list stays in deadline order, so that run_timers() may stop at
 * the first entry not due. Mostly a new deadline is the latest of its list
 * (one timeout per class), and the search from the tail ends at once. It is
 * not when a class mixes timeouts (a stream waiting for a tunnel slot has
 * connect_ms on the idle list) or a reload changed one: the search then
 * runs from both ends at once and costs twice the distance to the nearer
 * end. Equal deadlines keep their insertion order. */
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

void em_worker_queues_init(struct em_worker *w)
{
	em_dlist_init(&w->starved);
	w->st_free = EM_Q_NONE;
	for (unsigned e = EM_QSLOTS; e-- > EM_BUF_COUNT;) {
		w->q_next[e] = w->st_free;
		w->st_free = (uint16_t)e;
	}
	w->st_nfree = EM_STATIC_SLOTS;
}

uint16_t em_worker_static_get(struct em_worker *w, const char *ptr, uint8_t kind)
{
	uint16_t e = w->st_free;
	if (e == EM_Q_NONE || (kind != EM_ST_BORROWED && w->st_nfree <= EM_ST_RESERVE))
		return EM_Q_NONE;
	w->st_free = w->q_next[e];
	w->st_nfree--;
	w->st_ptr[e - EM_BUF_COUNT] = ptr;
	w->st_owned[e - EM_BUF_COUNT] = kind;
	return e;
}

/* A spill block: <cap> bytes at <data>, which queue entries point at. */
struct spill_block {
	struct spill_block *next; /* on w->spill_free */
	uint32_t cap;
	uint32_t pad_;
	char data[];
};

static struct spill_block *spill_of(const char *p)
{
	return (struct spill_block *)(uintptr_t)(p - offsetof(struct spill_block, data));
}

static void spill_block_put(struct em_worker *w, char *p)
{
	struct spill_block *b = spill_of(p);
	bool big = b->cap == EM_SPILL_BYTES;
	unsigned *n = big ? &w->n_spill_free : &w->n_spill_free_small;
	if (*n >= (big ? EM_SPILL_POOL : EM_SPILL_POOL_SMALL)) {
		free(b);
		return;
	}
	struct spill_block **fl = big ? &w->spill_free : &w->spill_free_small;
	b->next = *fl;
	*fl = b;
	(*n)++;
}

/* A block of <cap> bytes (EM_SPILL_BYTES or EM_BUF_SIZE), pooled ones
 * first: blocks of one ring buffer come and go at the rate of buffers when
 * many busy connections share a short ring. */
static char *spill_block_get(struct em_worker *w, uint32_t cap)
{
	bool big = cap == EM_SPILL_BYTES;
	struct spill_block **fl = big ? &w->spill_free : &w->spill_free_small;
	struct spill_block *b = *fl;
	if (b) {
		*fl = b->next;
		(*(big ? &w->n_spill_free : &w->n_spill_free_small))--;
		return b->data;
	}
	b = malloc(sizeof(*b) + cap);
	if (!b)
		return NULL;
	b->cap = cap;
	return b->data;
}

static void spill_pool_free(struct em_worker *w)
{
	struct spill_block **lists[2] = {&w->spill_free, &w->spill_free_small};
	for (int i = 0; i < 2; i++) {
		while (*lists[i]) {
			struct spill_block *b = *lists[i];
			*lists[i] = b->next;
			free(b);
		}
	}
	w->n_spill_free = w->n_spill_free_small = 0;
}

void em_worker_entry_put(struct em_worker *w, uint16_t e)
{
	if (e < EM_BUF_COUNT) {
		em_worker_buf_put(w, e);
		return;
	}
	uint8_t kind = w->st_owned[e - EM_BUF_COUNT];
	if (kind == EM_ST_TCHUNK)
		em_tun_chunk_put(w, w->st_ptr[e - EM_BUF_COUNT]);
	else if (kind == EM_ST_SPILL)
		spill_block_put(w, (char *)(uintptr_t)w->st_ptr[e - EM_BUF_COUNT]);
	else if (kind == EM_ST_MALLOC)
		free((void *)w->st_ptr[e - EM_BUF_COUNT]);
	w->st_ptr[e - EM_BUF_COUNT] = NULL;
	w->q_next[e] = w->st_free;
	w->st_free = e;
	w->st_nfree++;
}

bool em_worker_spill(struct em_worker *w, uint16_t *first, uint16_t *last, uint16_t *len,
                     uint16_t bid, uint32_t n)
{
	const char *src = em_worker_buf(w, bid);
	uint16_t t = *len ? *last : EM_Q_NONE;
	uint32_t room = 0;
	bool tail_spill =
	        t != EM_Q_NONE && t >= EM_BUF_COUNT && w->st_owned[t - EM_BUF_COUNT] == EM_ST_SPILL;
	if (tail_spill)
		room = spill_of(w->st_ptr[t - EM_BUF_COUNT])->cap - w->q_bytes[t];
	/* A new block is needed when the tail has too little room: take it
	 * first, so that failing changes nothing. A queue that spills on and
	 * on gets large blocks. */
	uint16_t ne = EM_Q_NONE;
	char *blk = NULL;
	if (room < n) {
		blk = spill_block_get(w, tail_spill ? EM_SPILL_BYTES : EM_BUF_SIZE);
		ne = blk ? em_worker_static_get(w, blk, EM_ST_SPILL) : EM_Q_NONE;
		if (ne == EM_Q_NONE) {
			if (blk)
				spill_block_put(w, blk);
			return false;
		}
	}
	uint32_t k = EM_MIN(room, n);
	if (k) {
		char *tail = (char *)(uintptr_t)w->st_ptr[t - EM_BUF_COUNT];
		memcpy(tail + w->q_bytes[t], src, k);
		w->q_bytes[t] += k;
	}
	if (ne != EM_Q_NONE) {
		memcpy(blk, src + k, n - k);
		w->q_bytes[ne] = n - k;
		em_q_append(w, first, last, len, ne);
	}
	w->n_spilled++;
	em_worker_buf_put(w, bid);
	return true;
}

/* Re-arms the socket that has waited longest for a buffer, if any. */
static bool unstarve_one(struct em_worker *w)
{
	struct em_dlist *n = em_dlist_first(&w->starved);
	if (EM_LIKELY(n == NULL))
		return false;
	struct em_sock *s = em_container_of(n, struct em_sock, snode);
	em_dlist_del(n);
	s->flags &= ~EM_SF_STARVED;
	em_proxy_unstarve(w, s);
	return true;
}

void em_worker_buf_put(struct em_worker *w, uint16_t bid)
{
	w->n_bufs_held--;
	em_bufring_put(&w->rb, bid);
	unstarve_one(w);
}

/* Buffers the last CQEs took come back from the stack, one starved
 * socket re-armed for each. */
static void refill(struct em_worker *w)
{
	for (unsigned n = em_bufring_refill(&w->rb); n && unstarve_one(w); n--)
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

int em_sock_mark(const struct em_worker *w, int fd)
{
	uint32_t mark = w->eng->mark;

	if (mark && setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) == -1)
		return -errno;
	return 0;
}

/* Timeouts and the balancer follow the live config (SIGHUP); read it here,
 * once per tick, rather than on every connection. */
static void refresh_config(struct em_worker *w)
{
	const struct em_config *cfg = em_config_current();
	struct em_engine *e = w->eng;
	if (cfg) {
		w->connect_ms = cfg->timeouts.connect_ms ? cfg->timeouts.connect_ms : 5000;
		w->idle_ms = cfg->timeouts.idle_ms ? cfg->timeouts.idle_ms : 300000;
		w->head_ms = cfg->timeouts.request_head_ms ? cfg->timeouts.request_head_ms : 10000;
		w->sniff_ms = cfg->timeouts.sniff_ms;
		w->lb.algo = cfg->balancer;
	} else {
		w->connect_ms = e->defaults.connect_ms;
		w->idle_ms = e->defaults.idle_ms;
		w->head_ms = e->defaults.request_head_ms;
		w->sniff_ms = e->defaults.sniff_ms;
		w->lb.algo = e->defaults.balancer;
	}
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

static void run_timers(struct em_worker *w)
{
	for (int tc = EM_T_SNIFF; tc < EM_T__COUNT; tc++) {
		struct em_dlist *n;
		/* Each list is in deadline order (one timeout per class), so stop
		 * at the first live entry. Bounded per tick to keep latency flat. */
		for (unsigned k = 0; k < 4096 && (n = em_dlist_first(&w->timers[tc])); k++) {
			struct em_sock *s = em_container_of(n, struct em_sock, tnode);
			if (s->deadline_ms > w->now_ms)
				break;
			em_dlist_del(&s->tnode); /* em_proxy_expire reads tclass */
			em_proxy_expire(w, s);
		}
	}
}

void em_worker_publish(struct em_worker *w)
{
	uint64_t v[EM_C__COUNT] = {0};
	v[EM_C_ACCEPTED] = w->n_accepted;
	v[EM_C_ACTIVE] = w->n_live;
	v[EM_C_REQUESTS] = w->n_requests;
	v[EM_C_REPLAYS] = w->n_replays;
	v[EM_C_CONNECT_FAIL] = w->n_connect_fail;
	v[EM_C_NO_ENDPOINT] = w->n_no_endpoint;
	v[EM_C_NOBUFS] = w->n_nobufs;
	v[EM_C_SPILLED] = w->n_spilled;
	em_tun_counters(w, v);
	for (unsigned i = 0; i < EM_C__COUNT; i++)
		__atomic_store_n(&w->pub[i], v[i], __ATOMIC_RELAXED);
}

/* No buffer was taken for EM_TRIM_IDLE_MS: the pages of those not held go
 * back to the kernel. Only this thread's reads fill them (io_uring completes
 * socket reads in this task's context), so none is written meanwhile. */
static void trim(struct em_worker *w)
{
	if (w->n_bufs_held || !em_tun_trim(w))
		return;
	em_bufring_trim(&w->rb);
	spill_pool_free(w);
	w->bufs_resident = false;
}

static void on_tick(struct em_worker *w)
{
	w->now_ms = em_now_ms();
	refresh_config(w);
	run_timers(w);
	/* Buffers may have come back without a send completing (closes). */
	for (unsigned k = 0; k < 64 && unstarve_one(w); k++)
		;
	em_bufring_tick(&w->rb);
	for (size_t i = 0; i < w->n_listeners; i++) {
		struct em_listener *l = &w->listeners[i];
		if (!l->armed && !l->closed && !w->stopping)
			arm_accept(w, l);
	}
	if (w->stopping && w->now_ms >= w->drain_deadline_ms)
		em_proxy_close_idle(w, true);
	em_tun_tick(w);
	em_lb_gc(&w->lb, w->now_ms, 60000);
	if (w->bufs_resident && w->now_ms - w->buf_used_ms >= EM_TRIM_IDLE_MS)
		trim(w);
	em_worker_publish(w);
	arm_tick(w);
}

static void on_wake(struct em_worker *w)
{
	if (!atomic_load(&w->eng->stop)) {
		arm_wake(w);
		return;
	}
	if (w->stopping)
		return;
	w->stopping = true;
	w->drain_deadline_ms = em_now_ms() + atomic_load(&w->eng->drain_ms);
	stop_listeners(w);
	for (size_t i = 0; i < w->n_listeners; i++) {
		if (w->listeners[i].fd >= 0)
			close(w->listeners[i].fd);
		w->listeners[i].fd = -1;
		w->listeners[i].closed = true;
	}
	em_proxy_close_idle(w, false);
}

static void on_accept(struct em_worker *w, struct em_listener *l, int res, uint32_t cflags)
{
	if (!(cflags & IORING_CQE_F_MORE))
		l->armed = false;
	if (res >= 0) {
		w->n_accepted++;
		if (w->stopping) {
			close(res);
			return;
		}
		if (l->idx == EM_LISTENER_TUNNEL) {
			em_tun_accept(w, res);
			return;
		}
		em_proxy_accept(w, l, res);
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
		em_proxy_cqe(w, p, op, cqe->res, cqe->flags);
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
	spill_pool_free(w);
	for (size_t i = 0; i < w->n_slabs; i++)
		free(w->slabs[i]);
	free(w->slabs);
	em_lb_destroy(&w->lb);
	em_http_worker_free(w);
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
	w->now_ms = em_now_ms();
	int rc = em_lb_init(&w->lb, w->eng->defaults.balancer, em_now_ns() ^ (w->id * 0x9e37ULL));
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
		if (n)
			w->now_ms = em_now_ms();
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

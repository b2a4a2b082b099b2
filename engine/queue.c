/* The worker's ring, its buffers and the queue entries sockets and streams
 * hold: SQEs, ring buffers, static entries with their release functions,
 * and the spill blocks bytes over a queue's share are copied into. */
#include <stdlib.h>

#include "engine/io.h"
#include "engine/worker.h"

void em_entry_free(struct em_worker *w, const char *p)
{
	EM_UNUSED(w);
	free((void *)(uintptr_t)p);
}

void em_worker_submit(struct em_worker *w)
{
	if (w->epoll) {
		w->n_sendv = 0;
		return;
	}
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

uint16_t em_worker_static_get(struct em_worker *w, const char *ptr, em_entry_release_fn *release)
{
	uint16_t e = w->st_free;
	if (e == EM_Q_NONE || (release && w->st_nfree <= EM_ST_RESERVE))
		return EM_Q_NONE;
	w->st_free = w->q_next[e];
	w->st_nfree--;
	w->st_ptr[e - EM_BUF_COUNT] = ptr;
	w->st_release[e - EM_BUF_COUNT] = release;
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

static void spill_block_put(struct em_worker *w, const char *p)
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

static void spill_release(struct em_worker *w, const char *p)
{
	spill_block_put(w, p);
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

void em_worker_spill_pool_free(struct em_worker *w)
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
	em_entry_release_fn *release = w->st_release[e - EM_BUF_COUNT];
	if (release)
		release(w, w->st_ptr[e - EM_BUF_COUNT]);
	w->st_release[e - EM_BUF_COUNT] = NULL;
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
	bool tail_spill = t != EM_Q_NONE && em_worker_entry_owner(w, t) == spill_release;
	if (tail_spill)
		room = spill_of(w->st_ptr[t - EM_BUF_COUNT])->cap - w->q_bytes[t];
	/* A new block is needed when the tail has too little room: take it
	 * first, so that failing changes nothing. A queue that spills on and
	 * on gets large blocks. */
	uint16_t ne = EM_Q_NONE;
	char *blk = NULL;
	if (room < n) {
		blk = spill_block_get(w, tail_spill ? EM_SPILL_BYTES : EM_BUF_SIZE);
		ne = blk ? em_worker_static_get(w, blk, spill_release) : EM_Q_NONE;
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
	w->cnt[EM_C_SPILLED]++;
	em_worker_buf_put(w, bid);
	return true;
}

void em_worker_buf_put(struct em_worker *w, uint16_t bid)
{
	w->n_bufs_held--;
	em_bufring_put(&w->rb, bid);
	if (w->unstarve)
		w->unstarve(w);
}

void em_worker_connect(struct em_worker *w, int fd, const struct sockaddr *sa, socklen_t sl,
                       uint64_t ud_connect, uint64_t ud_timeout)
{
	if (w->epoll) {
		em_epoll_connect(w->ep, fd, sa, sl, w->connect_ms, ud_connect, ud_timeout);
		return;
	}
	if (io_uring_sq_space_left(&w->ring) < 2)
		em_worker_submit(w);
	struct io_uring_sqe *sqe = em_worker_sqe(w);
	io_uring_prep_connect(sqe, fd, sa, sl);
	sqe->flags |= IOSQE_IO_LINK;
	io_uring_sqe_set_data64(sqe, ud_connect);
	sqe = em_worker_sqe(w);
	io_uring_prep_link_timeout(sqe, &w->connect_ts, 0);
	io_uring_sqe_set_data64(sqe, ud_timeout);
}

void em_q_drop(struct em_worker *w, uint16_t *first, uint16_t *last, uint16_t *len)
{
	while (*len) {
		uint16_t e = *first;
		*first = w->q_next[e];
		(*len)--;
		em_worker_entry_put(w, e);
	}
	*first = *last = EM_Q_NONE;
}

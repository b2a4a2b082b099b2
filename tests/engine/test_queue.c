/* Queue entries of a worker (engine/queue.c): the static slots kept for
 * error pages, the ring share of one queue, and spill blocks, against a
 * real buffer ring. */
#include <criterion/criterion.h>

#include <stdlib.h>

#include "engine/worker.h"

static struct em_worker *w;

static void setup(void)
{
	w = calloc(1, sizeof(*w));
	cr_assert_not_null(w);
	cr_assert_eq(io_uring_queue_init(8, &w->ring, 0), 0);
	cr_assert_eq(em_bufring_init(&w->rb, &w->ring, EM_BGID, EM_BUF_COUNT, EM_BUF_SIZE), 0);
	em_worker_queues_init(w);
}

static void teardown(void)
{
	io_uring_queue_exit(&w->ring);
	em_bufring_free(&w->rb);
	free(w);
}

/* Takes buffer <bid> as a recv completion would and fills it with <fill>. */
static void take(uint16_t bid, char fill, uint32_t n)
{
	w->n_bufs_held++;
	em_bufring_taken(&w->rb);
	memset(em_worker_buf(w, bid), fill, n);
}

static unsigned n_released;

static void count_release(struct em_worker *wk, const char *p)
{
	EM_UNUSED(wk);
	EM_UNUSED(p);
	n_released++;
}

/* Streams that queue entries cannot take the last EM_ST_RESERVE slots; an
 * error page (borrowed) still can. Fails when the streams can take them all
 * (an HTTP client then gets a reset instead of its error page). */
Test(queue, error_pages_keep_their_slots, .init = setup, .fini = teardown)
{
	static const char page[] = "HTTP/1.1 503 Service Unavailable\r\n\r\n";
	unsigned got = 0;
	uint16_t taken[EM_STATIC_SLOTS];
	for (;;) {
		uint16_t e = em_worker_static_get(w, NULL, count_release);
		if (e == EM_Q_NONE)
			break;
		cr_assert_lt(got, EM_STATIC_SLOTS);
		taken[got++] = e;
	}
	cr_assert_eq(got, EM_STATIC_SLOTS - EM_ST_RESERVE, "streams took %u slots", got);
	uint16_t pe = em_worker_static_get(w, page, NULL);
	cr_assert_neq(pe, EM_Q_NONE, "no slot left for an error page");
	cr_assert_eq(em_worker_entry(w, pe), page);
	n_released = 0;
	for (unsigned i = 0; i < got; i++)
		em_worker_entry_put(w, taken[i]);
	cr_assert_eq(n_released, got, "each owned entry is released once");
	em_worker_entry_put(w, pe);
	cr_assert_eq(n_released, got, "a borrowed entry runs no release");
	cr_assert_eq(w->st_nfree, EM_STATIC_SLOTS);
}

/* The share of one queue shrinks as the ring empties, to none at the
 * reserve. */
Test(queue, share_follows_ring_fill, .init = setup, .fini = teardown)
{
	w->n_bufs_held = 0;
	cr_assert_eq(em_worker_buf_share(w), 24);
	w->n_bufs_held = EM_BUF_COUNT / 2 + 1;
	cr_assert_eq(em_worker_buf_share(w), 3);
	w->n_bufs_held = EM_BUF_COUNT * 3 / 4 + 1;
	cr_assert_eq(em_worker_buf_share(w), 1);
	w->n_bufs_held = EM_BUF_COUNT - EM_BUF_RESERVE + 1;
	cr_assert_eq(em_worker_buf_share(w), 0);
	w->n_bufs_held = 0;
}

/* Spilled buffers go back to the ring at once and their bytes, in order,
 * fill a first block of one buffer, then large blocks one after another. */
Test(queue, spill_copies_and_returns_buffers, .init = setup, .fini = teardown)
{
	uint16_t first = EM_Q_NONE, last = EM_Q_NONE, len = 0;
	const unsigned per_block = EM_SPILL_BYTES / EM_BUF_SIZE;
	for (unsigned i = 0; i <= per_block; i++) {
		uint16_t bid = (uint16_t)i;
		take(bid, (char)('a' + i), EM_BUF_SIZE);
		cr_assert(em_worker_spill(w, &first, &last, &len, bid, EM_BUF_SIZE));
		cr_assert_eq(w->n_bufs_held, 0, "buffer %u not given back", i);
	}
	cr_assert_eq(len, 2, "%u entries for %u buffers", len, per_block + 1);
	cr_assert_eq(w->q_bytes[first], EM_BUF_SIZE);
	cr_assert_eq(w->q_bytes[last], EM_SPILL_BYTES);
	cr_assert_eq(em_worker_entry(w, first)[7], 'a');
	const char *p = em_worker_entry(w, last);
	for (unsigned i = 1; i <= per_block; i++)
		cr_assert_eq(p[(size_t)(i - 1) * EM_BUF_SIZE + 7], (char)('a' + i));

	/* The tail is full: a short buffer starts a large block, and the next
	 * joins it in place. */
	take(9, 'y', 100);
	cr_assert(em_worker_spill(w, &first, &last, &len, 9, 100));
	take(10, 'z', 50);
	cr_assert(em_worker_spill(w, &first, &last, &len, 10, 50));
	cr_assert_eq(len, 3);
	cr_assert_eq(w->q_bytes[last], 150);
	cr_assert_eq(em_worker_entry(w, last)[99], 'y');
	cr_assert_eq(em_worker_entry(w, last)[149], 'z');

	uint16_t mid = w->q_next[first];
	em_worker_entry_put(w, last);
	em_worker_entry_put(w, mid);
	em_worker_entry_put(w, first);
	cr_assert_eq(w->n_spill_free, 2, "large blocks not pooled");
	cr_assert_eq(w->st_nfree, EM_STATIC_SLOTS);
	cr_assert_eq(w->n_spill_free_small, 1, "small block not pooled");
	void *lists[2] = {w->spill_free, w->spill_free_small};
	for (int i = 0; i < 2; i++) {
		while (lists[i]) {
			void *b = lists[i];
			lists[i] = *(void **)b;
			free(b);
		}
	}
}

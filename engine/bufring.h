/* A provided-buffer group whose reads land in recently used memory.
 *
 * The kernel takes buffers from a provided-buffer ring in FIFO order, so a
 * ring that holds every free buffer walks reads through all of them: at
 * 256 x 32 KiB that is 8 MiB per worker, far more than a core's L2, and each
 * recv then copies into memory the cache has long dropped. Here the ring
 * holds only <target> buffers. The other free buffers wait on a LIFO stack,
 * and the most recently returned go back into the ring first.
 *
 * <target> starts at the floor (about 1 MiB of buffers). It doubles when a
 * recv finds the ring empty while the stack still has buffers (many busy
 * sockets read at once), and halves back toward the floor after a tick in
 * which the ring never fell below half of it. All buffers stay usable: a
 * reader can hold up to <count> of them, as with a plain ring.
 *
 * A plain group (em_bufring_init without a ring, for the epoll backend)
 * has no ring: every free buffer is on the stack, em_bufring_take hands
 * out the most recently returned, and the target, refill, dry and tick
 * do nothing. The buffers, their number and size are the same.
 *
 * One thread (the worker owning the io_uring) calls every function. */
#ifndef EM_ENGINE_BUFRING_H
#define EM_ENGINE_BUFRING_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

/* Bytes of buffers the floor of the ring holds: about a core's L2. */
#define EM_BUFRING_HOT_BYTES (1u << 20)

struct em_bufring {
	struct io_uring_buf_ring *br; /* NULL until em_bufring_init succeeds */
	char *base;                   /* count * size bytes */
	size_t br_bytes;
	uint32_t size;    /* bytes per buffer */
	uint16_t count;   /* buffers in all; a power of two */
	uint16_t in_ring; /* buffers the kernel can take now */
	uint16_t low;     /* lowest in_ring since the last tick (0: it ran dry) */
	uint16_t target;  /* in_ring is topped up to this from the stack */
	uint16_t floor;   /* target never goes below this */
	uint16_t n_stack; /* free buffers waiting on the stack */
	uint16_t *stack;  /* count entries; top at n_stack - 1 */
};

/* Allocates <count> buffers of <size> bytes (count a power of two, at most
 * 32768) and registers them with <ring> as buffer group <bgid>; the floor
 * of them go into the ring, the rest onto the stack. With <ring> NULL the
 * group is plain (all on the stack, <bgid> unused). Returns 0 or -errno,
 * leaving <r> all-zero on failure. */
int em_bufring_init(struct em_bufring *r, struct io_uring *ring, uint16_t bgid, uint16_t count,
                    uint32_t size);

/* Frees <r>'s memory. The group itself goes with the io_uring: call this
 * after io_uring_queue_exit, or before it once nothing can read into the
 * group any more. An all-zero <r> is fine. */
void em_bufring_free(struct em_bufring *r);

static inline char *em_bufring_buf(const struct em_bufring *r, uint16_t bid)
{
	return r->base + (size_t)bid * r->size;
}

/* A CQE carried buffer <bid> of this group: the kernel took it from the
 * ring. The caller owns it until em_bufring_put. */
static inline void em_bufring_taken(struct em_bufring *r)
{
	if (!r->br)
		return; /* plain: em_bufring_take took it */
	r->in_ring--;
	if (r->in_ring < r->low)
		r->low = r->in_ring;
}

/* True once em_bufring_init succeeded (and until em_bufring_free). */
static inline bool em_bufring_ready(const struct em_bufring *r)
{
	return r->base != NULL;
}

/* Plain group: takes the most recently returned free buffer, or returns -1
 * when none is free. The caller owns it until em_bufring_put. */
static inline int em_bufring_take(struct em_bufring *r)
{
	return r->n_stack ? r->stack[--r->n_stack] : -1;
}

/* Gives buffer <bid> back: into the ring when it is below target, else on
 * top of the stack. */
void em_bufring_put(struct em_bufring *r, uint16_t bid);

/* Tops the ring up to its target from the top of the stack. Returns how
 * many buffers went in (readers starved of buffers may now be re-armed). */
unsigned em_bufring_refill(struct em_bufring *r);

/* A recv of this group failed with -ENOBUFS: the ring was empty. Doubles
 * the target if the stack had buffers to give; call em_bufring_refill
 * before re-arming the recv. */
void em_bufring_dry(struct em_bufring *r);

/* Gives the pages of all <r>'s buffers back to the kernel (they fault in
 * again when next read into). Only while the caller holds none of them,
 * and from the thread that owns the ring: reads complete in its context,
 * so no buffer is being written meanwhile. */
void em_bufring_trim(struct em_bufring *r);

/* Once per worker tick: halves the target toward the floor when the ring
 * was never below half of it since the last tick. */
void em_bufring_tick(struct em_bufring *r);

#endif

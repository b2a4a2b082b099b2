#include "engine/bufring.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static void ring_add(struct em_bufring *r, uint16_t bid, int off)
{
	io_uring_buf_ring_add(r->br, em_bufring_buf(r, bid), r->size, bid,
	                      io_uring_buf_ring_mask(r->count), off);
}

int em_bufring_init(struct em_bufring *r, struct io_uring *ring, uint16_t bgid, uint16_t count,
                    uint32_t size)
{
	memset(r, 0, sizeof(*r));
	if (!count || (count & (count - 1)) || count > 32768 || !size)
		return -EINVAL;
	if (!ring) {
		r->base = aligned_alloc(4096, (size_t)count * size);
		r->stack = malloc(count * sizeof(*r->stack));
		if (!r->base || !r->stack) {
			em_bufring_free(r);
			return -ENOMEM;
		}
		r->size = size;
		r->count = r->floor = r->target = count;
		/* Buffer 0 on top. */
		for (uint16_t i = count; i-- > 0;)
			r->stack[r->n_stack++] = i;
		return 0;
	}
	size_t br_bytes = (size_t)count * sizeof(struct io_uring_buf);
	void *mem =
	        mmap(NULL, br_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (mem == MAP_FAILED)
		return -errno;
	char *base = aligned_alloc(4096, (size_t)count * size);
	uint16_t *stack = malloc(count * sizeof(*stack));
	int rc = -ENOMEM;
	if (!base || !stack)
		goto fail;
	struct io_uring_buf_reg reg = {
	        .ring_addr = (uint64_t)(uintptr_t)mem,
	        .ring_entries = count,
	        .bgid = bgid,
	};
	rc = io_uring_register_buf_ring(ring, &reg, 0);
	if (rc < 0)
		goto fail;
	r->br = mem;
	r->br_bytes = br_bytes;
	r->base = base;
	r->stack = stack;
	r->size = size;
	r->count = count;
	uint32_t hot = EM_BUFRING_HOT_BYTES / size;
	if (hot < 8)
		hot = 8;
	r->floor = (uint16_t)(hot > count ? count : hot);
	r->target = r->floor;
	io_uring_buf_ring_init(r->br);
	/* Highest ids at the bottom of the stack, so buffer 0 comes next. */
	for (uint16_t i = count; i-- > r->floor;)
		r->stack[r->n_stack++] = i;
	for (uint16_t i = 0; i < r->floor; i++)
		ring_add(r, i, i);
	io_uring_buf_ring_advance(r->br, r->floor);
	r->in_ring = r->low = r->floor;
	return 0;
fail:
	free(stack);
	free(base);
	munmap(mem, br_bytes);
	return rc;
}

void em_bufring_free(struct em_bufring *r)
{
	if (r->br)
		munmap(r->br, r->br_bytes);
	free(r->base);
	free(r->stack);
	memset(r, 0, sizeof(*r));
}

void em_bufring_put(struct em_bufring *r, uint16_t bid)
{
	if (r->br && r->in_ring < r->target) {
		ring_add(r, bid, 0);
		io_uring_buf_ring_advance(r->br, 1);
		r->in_ring++;
		return;
	}
	r->stack[r->n_stack++] = bid;
}

void em_bufring_trim(struct em_bufring *r)
{
	if (r->base)
		madvise(r->base, (size_t)r->count * r->size, MADV_DONTNEED);
}

unsigned em_bufring_refill(struct em_bufring *r)
{
	unsigned n = 0;
	if (!r->br)
		return 0;
	while (r->in_ring + n < r->target && r->n_stack) {
		ring_add(r, r->stack[--r->n_stack], (int)n);
		n++;
	}
	if (n) {
		io_uring_buf_ring_advance(r->br, (int)n);
		r->in_ring = (uint16_t)(r->in_ring + n);
	}
	return n;
}

void em_bufring_dry(struct em_bufring *r)
{
	r->low = 0;
	if (r->n_stack && r->target < r->count)
		r->target = (uint16_t)(r->target * 2u > r->count ? r->count : r->target * 2u);
}

void em_bufring_tick(struct em_bufring *r)
{
	if (r->low >= r->target / 2 && r->target > r->floor)
		r->target = (uint16_t)(r->target / 2 < r->floor ? r->floor : r->target / 2);
	r->low = r->in_ring;
}

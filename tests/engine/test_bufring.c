/* engine/bufring.c against the kernel: recvs on a socketpair take buffers
 * of a real io_uring buffer group. */
#include <criterion/criterion.h>

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine/bufring.h"

#define BGID 3

struct rig {
	struct io_uring ring;
	struct em_bufring rb;
	int sv[2];
};

static void rig_init(struct rig *g, uint16_t count, uint32_t size)
{
	cr_assert_eq(io_uring_queue_init(16, &g->ring, 0), 0);
	cr_assert_eq(em_bufring_init(&g->rb, &g->ring, BGID, count, size), 0);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, g->sv), 0);
}

static void rig_fini(struct rig *g)
{
	close(g->sv[0]);
	close(g->sv[1]);
	io_uring_queue_exit(&g->ring);
	em_bufring_free(&g->rb);
}

/* Sends <len> bytes of <fill> and reads them with one recv of the group.
 * Returns the buffer id (noting the take) or -errno of the recv. */
static int read_one(struct rig *g, char fill, size_t len)
{
	char msg[256];
	cr_assert_leq(len, sizeof(msg));
	memset(msg, fill, len);
	cr_assert_eq(write(g->sv[1], msg, len), (ssize_t)len);
	struct io_uring_sqe *sqe = io_uring_get_sqe(&g->ring);
	cr_assert_not_null(sqe);
	if (!sqe)
		return -EBUSY;
	io_uring_prep_recv(sqe, g->sv[0], NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = BGID;
	cr_assert_eq(io_uring_submit(&g->ring), 1);
	struct io_uring_cqe *cqe;
	cr_assert_eq(io_uring_wait_cqe(&g->ring, &cqe), 0);
	int res = cqe->res;
	uint32_t flags = cqe->flags;
	io_uring_cqe_seen(&g->ring, cqe);
	if (res < 0) {
		/* The bytes stay queued: drain them for the next read. */
		cr_assert_eq(read(g->sv[0], msg, len), (ssize_t)len);
		return res;
	}
	cr_assert(flags & IORING_CQE_F_BUFFER);
	cr_assert_eq(res, (int)len);
	em_bufring_taken(&g->rb);
	int bid = (int)(flags >> IORING_CQE_BUFFER_SHIFT);
	cr_assert_lt(bid, g->rb.count);
	const char *b = em_bufring_buf(&g->rb, (uint16_t)bid);
	for (size_t i = 0; i < len; i++)
		cr_assert_eq(b[i], fill, "byte %zu of buffer %d", i, bid);
	return bid;
}

Test(bufring, the_floor_is_about_a_megabyte_of_buffers)
{
	struct rig g;
	rig_init(&g, 256, 32768);
	cr_expect_eq(g.rb.floor, 32);
	cr_expect_eq(g.rb.target, 32);
	cr_expect_eq(g.rb.in_ring, 32);
	cr_expect_eq(g.rb.n_stack, 224);
	rig_fini(&g);
	rig_init(&g, 4, 65536);
	cr_expect_eq(g.rb.floor, 4, "never more than there are");
	cr_expect_eq(g.rb.n_stack, 0);
	rig_fini(&g);
	struct em_bufring bad;
	struct io_uring ring;
	cr_assert_eq(io_uring_queue_init(4, &ring, 0), 0);
	cr_expect_eq(em_bufring_init(&bad, &ring, BGID, 100, 4096), -EINVAL, "not a power of two");
	cr_expect_null(bad.br);
	em_bufring_free(&bad);
	io_uring_queue_exit(&ring);
}

/* The point of the module: a reader that returns each buffer after use
 * keeps reading into the same few, not into all of them in turn. */
Test(bufring, reads_cycle_through_recently_used_buffers_only)
{
	struct rig g;
	rig_init(&g, 256, 32768);
	bool seen[256] = {0};
	unsigned distinct = 0;
	for (int i = 0; i < 600; i++) {
		int bid = read_one(&g, (char)('a' + i % 26), 100);
		cr_assert_geq(bid, 0, "read %d: %s", i, strerror(-bid));
		distinct += !seen[bid];
		seen[bid] = true;
		em_bufring_put(&g.rb, (uint16_t)bid);
		em_bufring_refill(&g.rb);
		if (i % 50 == 0)
			em_bufring_tick(&g.rb);
	}
	cr_expect_leq(distinct, 32, "%u buffers read into, not 1 MiB of them", distinct);
	cr_expect_eq(g.rb.target, g.rb.floor);
	rig_fini(&g);
}

/* A reader may hold every buffer: the refill feeds the ring from the
 * stack, the most recently returned first. */
Test(bufring, every_buffer_can_be_held)
{
	struct rig g;
	rig_init(&g, 64, 32768);
	bool seen[64] = {0};
	for (int i = 0; i < 64; i++) {
		int bid = read_one(&g, 'x', 10);
		cr_assert_geq(bid, 0, "read %d: %s", i, strerror(-bid));
		cr_assert_not(seen[bid], "buffer %d handed out twice", bid);
		seen[bid] = true;
		em_bufring_refill(&g.rb);
	}
	cr_expect_eq(g.rb.in_ring, 0);
	cr_expect_eq(g.rb.n_stack, 0);
	cr_expect_eq(read_one(&g, 'y', 10), -ENOBUFS);
	em_bufring_dry(&g.rb);
	cr_expect_leq(g.rb.target, 64);
	/* Back in order 0..63: the ring refills from the top of the stack. */
	for (uint16_t b = 0; b < 64; b++)
		em_bufring_put(&g.rb, b);
	cr_expect_eq(g.rb.in_ring + g.rb.n_stack, 64);
	cr_expect_eq(g.rb.n_stack, 64 - g.rb.target);
	while (g.rb.in_ring) {
		int bid = read_one(&g, 'z', 10);
		cr_assert_geq(bid, 0);
		cr_assert_lt(bid, g.rb.target, "the first returned went into the ring");
	}
	em_bufring_refill(&g.rb);
	cr_expect_eq(read_one(&g, 'w', 10), 63, "then the last returned");
	rig_fini(&g);
}

/* Many busy readers drain the ring faster than it is topped up: the target
 * grows while the stack has buffers, and shrinks again once the ring stays
 * at least half full for a tick. */
Test(bufring, an_empty_ring_grows_then_shrinks_back)
{
	struct rig g;
	rig_init(&g, 256, 32768);
	int held[32];
	for (int i = 0; i < 32; i++) {
		held[i] = read_one(&g, 'h', 10);
		cr_assert_geq(held[i], 0);
	}
	cr_expect_eq(g.rb.in_ring, 0);
	cr_expect_eq(read_one(&g, 'e', 10), -ENOBUFS);
	em_bufring_dry(&g.rb);
	cr_expect_eq(g.rb.target, 64);
	cr_expect_eq(em_bufring_refill(&g.rb), 64);
	int bid = read_one(&g, 'r', 10);
	cr_assert_geq(bid, 0, "the refill ended the shortage");
	em_bufring_put(&g.rb, (uint16_t)bid);
	em_bufring_tick(&g.rb);
	cr_expect_eq(g.rb.target, 64, "no shrink in the tick that ran dry");
	em_bufring_tick(&g.rb);
	cr_expect_eq(g.rb.target, 32, "a quiet tick halves it");
	em_bufring_tick(&g.rb);
	cr_expect_eq(g.rb.target, 32, "never below the floor");
	for (int i = 0; i < 32; i++)
		em_bufring_put(&g.rb, (uint16_t)held[i]);
	cr_expect_eq(g.rb.in_ring + g.rb.n_stack, 256);
	rig_fini(&g);
}

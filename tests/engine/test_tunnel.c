/* Pure logic of engine/tunnel.c: the redial backoff. */
#include <criterion/criterion.h>

#include "engine/tunnel.h"
#include "proto/clock.h"

TestSuite(tunnel_backoff, .timeout = 10);

Test(tunnel_backoff, doubles_from_min_to_max)
{
	uint32_t base = 0;
	uint32_t want[] = {100, 200, 400, 800, 1000, 1000};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		uint32_t d = em_backoff(&base, 100, 1000, 0);
		cr_expect_eq(base, want[i], "step %zu: base %u", i, base);
		cr_expect_eq(d, want[i] / 2, "step %zu: rnd 0 gives the lower bound", i);
	}
}

Test(tunnel_backoff, jitter_stays_in_half_to_full)
{
	uint64_t x = 88172645463325252ULL;
	uint32_t lo_seen = UINT32_MAX, hi_seen = 0;
	for (int i = 0; i < 10000; i++) {
		uint32_t base = 800;
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		uint32_t d = em_backoff(&base, 100, 30000, x);
		cr_assert_eq(base, 1600);
		cr_assert(d >= 800 && d <= 1600, "delay %u outside [800, 1600]", d);
		lo_seen = d < lo_seen ? d : lo_seen;
		hi_seen = d > hi_seen ? d : hi_seen;
	}
	/* The draw really spreads: both ends of the range are approached. */
	cr_expect_lt(lo_seen, 850);
	cr_expect_gt(hi_seen, 1550);
}

Test(tunnel_backoff, odd_bounds_and_overflow)
{
	uint32_t base = 0;
	cr_expect_eq(em_backoff(&base, 0, 0, 7), 1, "min 0 acts as 1");
	base = 0x90000000u;
	uint32_t d = em_backoff(&base, 10, 0xa0000000u, 0);
	cr_expect_eq(base, 0xa0000000u, "doubling is capped, never wraps");
	cr_expect_eq(d, 0x50000000u);
	base = 5000;
	em_backoff(&base, 100, 300, 0);
	cr_expect_eq(base, 300, "a lowered max takes effect at once");
	base = 0;
	d = em_backoff(&base, 500, 100, 123);
	cr_expect_eq(base, 500, "max below min: min wins");
	cr_expect(d >= 250 && d <= 500);
}

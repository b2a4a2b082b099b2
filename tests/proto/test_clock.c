/* The monotonic clocks agree with each other and never go back. */
#include <criterion/criterion.h>

#include "proto/clock.h"

Test(clock, monotonic_and_consistent)
{
	uint64_t ns0 = em_now_ns(), ms = em_now_ms(), ns1 = em_now_ns();

	cr_assert_leq(ns0, ns1);
	cr_assert_leq(ns0 / 1000000, ms);
	cr_assert_leq(ms, ns1 / 1000000);
}

/* Monotonic clock readings for timeouts and rates (CLOCK_MONOTONIC: never
 * jumps with the wall clock). Thread-safe, no allocation. */
#ifndef EM_PROTO_CLOCK_H
#define EM_PROTO_CLOCK_H

#include <stdint.h>

/* Milliseconds / nanoseconds since an arbitrary fixed point (boot). */
uint64_t em_now_ms(void);
uint64_t em_now_ns(void);

/* Delay before the next retry of something that failed (a tunnel redial,
 * a watch, the control stream): doubles <*base> (starting at <min_ms>, 0
 * acting as 1, capped at <max_ms>, which is raised to <min_ms> if below)
 * and returns a value drawn from [base/2, base] with <rnd> ("equal
 * jitter"), so that many nodes that lost the same peer do not retry in
 * step. */
uint32_t em_backoff(uint32_t *base, uint32_t min_ms, uint32_t max_ms, uint64_t rnd);

#endif

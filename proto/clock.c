/* Monotonic clock: see proto/clock.h. */
#include "proto/clock.h"

#include <time.h>

uint64_t em_now_ms(void)
{
	return em_now_ns() / 1000000ULL;
}

uint64_t em_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint32_t em_backoff(uint32_t *base, uint32_t min_ms, uint32_t max_ms, uint64_t rnd)
{
	if (min_ms == 0)
		min_ms = 1;
	if (max_ms < min_ms)
		max_ms = min_ms;
	uint32_t b = *base;
	b = b < min_ms ? min_ms : (b > max_ms / 2 ? max_ms : b * 2);
	*base = b;
	return b / 2 + (uint32_t)(rnd % ((uint64_t)(b - b / 2) + 1));
}

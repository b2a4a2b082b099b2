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

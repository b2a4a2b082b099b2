/* Monotonic clock readings for timeouts and rates (CLOCK_MONOTONIC: never
 * jumps with the wall clock). Thread-safe, no allocation. */
#ifndef EM_PROTO_CLOCK_H
#define EM_PROTO_CLOCK_H

#include <stdint.h>

/* Milliseconds / nanoseconds since an arbitrary fixed point (boot). */
uint64_t em_now_ms(void);
uint64_t em_now_ns(void);

#endif

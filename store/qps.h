/* Server-side QPS limits per Service (annotations edgemesh.io/qps and
 * edgemesh.io/qps-burst): one token bucket per limited Service, shared by
 * every worker of the node.
 *
 * The bucket is GCRA in one word: <tat> is the "theoretical arrival time"
 * in nanoseconds, the moment the bucket would be full again. A take at
 * <now> is allowed when max(tat, now) + interval - now <= burst * interval
 * and then moves <tat> on by one interval with a compare-and-swap; nothing
 * else is written on the allowed path but one counter on the same cache
 * line. So N workers taking from one bucket contend on one line and never
 * lock.
 *
 * Buckets live in a registry keyed by "namespace/name" that outlives table
 * snapshots (store/table.c): a rebuild finds the bucket of a Service again,
 * sets its new rate in place (keeping how full it is), and the snapshot's
 * service points at it. Buckets no published snapshot references are freed
 * once the snapshot that dropped them is gone (em_qps_sweep). The registry
 * is the sync thread's: em_qps_get, em_qps_sweep and em_qps_each run there
 * only; em_qps_take runs on any thread. */
#ifndef EM_STORE_QPS_H
#define EM_STORE_QPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EM_QPS_ANNOTATION       "edgemesh.io/qps"
#define EM_QPS_BURST_ANNOTATION "edgemesh.io/qps-burst"

/* Highest rate and burst an annotation may ask for. */
#define EM_QPS_MAX_RATE  1e9
#define EM_QPS_MAX_BURST 1e9
/* Default burst: this many milliseconds' worth of the rate, at least 1, so
 * that over 5 s what passes stays within 2% of the limit. */
#define EM_QPS_BURST_DEFAULT_MS 100u

struct em_qps {
	/* Written by every worker: first cache line. */
	uint64_t tat;      /* ns; 0: full */
	uint64_t allowed;  /* takes allowed */
	uint64_t rejected; /* takes refused */
	/* Written by the sync thread when the rate changes; read relaxed by
	 * takers (a take that mixes an old interval with a new tau errs by
	 * one token at most). */
	uint64_t interval_ns; /* 1e9 / rate, at least 1 */
	uint64_t tau_ns;      /* burst * interval */
	char pad_[24];
	/* Sync thread only. */
	double rate, burst;
	uint64_t mark; /* last build that referenced it */
	uint64_t hash;
	struct em_qps *next;
	char key[]; /* "namespace/name" */
} __attribute__((aligned(64)));

/* Default burst for <rate>: EM_QPS_BURST_DEFAULT_MS worth, at least 1. */
double em_qps_default_burst(double rate);

/* Parses an annotation value: decimal digits with an optional fraction
 * ("10", "0.5"), in (0, <max>]. Returns 0 and the value in <*out>, or
 * -EINVAL. */
int em_qps_parse(const char *s, double max, double *out);

/* Sets the rate of <q> to <rate> per second with a bucket of <burst>
 * tokens, at <now_ns>: the bucket stays as full (as a fraction) as it was,
 * so a new rate applies from the next take. */
void em_qps_set(struct em_qps *q, double rate, double burst, uint64_t now_ns);

/* Takes one token at <now_ns> (monotonic). Returns true when allowed;
 * false when the bucket is empty, with <*retry_ns> (may be NULL) set to
 * the time until the next token. Counts either way. Any thread, lock-free. */
bool em_qps_take(struct em_qps *q, uint64_t now_ns, uint64_t *retry_ns);

/* The bucket of Service <ns>/<name>, made when new (full), with rate
 * <rate> and burst <burst> (set with em_qps_set when they changed) and
 * marked as referenced by build <mark>. NULL when out of memory. */
struct em_qps *em_qps_get(const char *ns, const char *name, double rate, double burst,
                          uint64_t mark);

/* A new build number for em_qps_get, higher than every one before. */
uint64_t em_qps_next_mark(void);

/* Frees the buckets whose last reference is older than build <mark>: the
 * snapshot of build <mark> is published and no older one is read any more. */
void em_qps_sweep(uint64_t mark);

/* Frees every bucket (at exit, after every reader stopped). */
void em_qps_clear(void);

/* Calls <fn> for each bucket, in no set order. */
void em_qps_each(void (*fn)(void *ctx, const struct em_qps *q), void *ctx);

#endif

/* One QPS bucket taken from by several threads at once, as the workers of a
 * node do: the compare-and-swap loses no token and grants none twice. The
 * threads share a fake clock that one of them moves on, so the count that
 * may pass is known exactly. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "store/qps.h"
#include "tests/conc.h"

#define N_THREADS 4
#define N_TAKES   200000
#define SEC       1000000000ull
#define T0        (1000 * SEC)

static struct em_qps *q;
static atomic_ullong fake_now;
static atomic_ulong granted;

static void *taker(void *arg)
{
	unsigned long mine = 0;
	bool ticker = arg != NULL;
	for (unsigned i = 0; i < N_TAKES; i++) {
		/* The ticker moves the clock 1 ms every 100 takes: 2 s in all. */
		if (ticker && i % 100 == 99)
			atomic_fetch_add(&fake_now, SEC / 1000);
		mine += em_qps_take(q, atomic_load(&fake_now), NULL);
	}
	atomic_fetch_add(&granted, mine);
	return NULL;
}

/* 500/s with a burst of 50 over 2 s of fake time: exactly 50 + 1000, the
 * clock's last step being a whole token. */
static void shared_bucket_exact(void)
{
	pthread_t th[N_THREADS];
	q = aligned_alloc(64, sizeof(*q));
	memset(q, 0, sizeof(*q));
	em_qps_set(q, 500, 50, T0);
	atomic_store(&fake_now, T0);
	atomic_store(&granted, 0);
	for (int i = 0; i < N_THREADS; i++)
		pthread_create(&th[i], NULL, taker, i == 0 ? (void *)1 : NULL);
	for (int i = 0; i < N_THREADS; i++)
		pthread_join(th[i], NULL);
	unsigned long g = atomic_load(&granted);
	CONC_CHECK(g == 50 + 1000, "granted %lu", g);
	CONC_CHECK(q->allowed == g, "allowed %llu", (unsigned long long)q->allowed);
	CONC_CHECK(q->allowed + q->rejected == (unsigned long long)N_THREADS * N_TAKES,
	           "takes %llu", (unsigned long long)(q->allowed + q->rejected));
	free(q);
}

int main(void)
{
	CONC_RUN(shared_bucket_exact);
	CONC_SUMMARY();
}

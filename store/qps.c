/* Per-Service token buckets (GCRA) and their registry across snapshots. */
#include "store/qps.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/clock.h"
#include "proto/em.h"

double em_qps_default_burst(double rate)
{
	double b = rate * EM_QPS_BURST_DEFAULT_MS / 1000.0;
	return b < 1 ? 1 : b;
}

int em_qps_parse(const char *s, double max, double *out)
{
	size_t n = strspn(s, "0123456789");
	if (n == 0)
		return -EINVAL;
	if (s[n] == '.') {
		size_t f = strspn(s + n + 1, "0123456789");
		if (f == 0)
			return -EINVAL;
		n += 1 + f;
	}
	if (s[n] || n > 32)
		return -EINVAL;
	double v = strtod(s, NULL);
	if (!(v > 0) || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

static uint64_t load(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

void em_qps_set(struct em_qps *q, double rate, double burst, uint64_t now_ns)
{
	double iv = 1e9 / rate;
	uint64_t interval = iv < 1 ? 1 : (uint64_t)(iv + 0.5);
	double t = burst * (double)interval;
	uint64_t tau = t > 0x1p62 ? (uint64_t)1 << 62 : (uint64_t)(t + 0.5);
	uint64_t old_tau = load(&q->tau_ns);
	if (tau < interval)
		tau = interval;

	/* Keep the fill level: the bucket's debt (tat - now, at most tau)
	 * scaled from the old size to the new one. */
	uint64_t tat = load(&q->tat);
	for (;;) {
		uint64_t nt = 0;
		if (old_tau && tat > now_ns) {
			double debt = (double)(tat - now_ns) / (double)old_tau;
			nt = now_ns + (uint64_t)(EM_MIN(debt, 1.0) * (double)tau);
		}
		if (__atomic_compare_exchange_n(&q->tat, &tat, nt, false, __ATOMIC_RELAXED,
		                                __ATOMIC_RELAXED))
			break;
	}
	__atomic_store_n(&q->interval_ns, interval, __ATOMIC_RELAXED);
	__atomic_store_n(&q->tau_ns, tau, __ATOMIC_RELAXED);
	q->rate = rate;
	q->burst = burst;
}

bool em_qps_take(struct em_qps *q, uint64_t now_ns, uint64_t *retry_ns)
{
	uint64_t interval = load(&q->interval_ns), tau = load(&q->tau_ns);
	uint64_t tat = load(&q->tat);
	for (;;) {
		uint64_t next = (tat > now_ns ? tat : now_ns) + interval;
		if (next - now_ns > tau) {
			if (retry_ns)
				*retry_ns = next - now_ns - tau;
			__atomic_fetch_add(&q->rejected, 1, __ATOMIC_RELAXED);
			return false;
		}
		if (__atomic_compare_exchange_n(&q->tat, &tat, next, true, __ATOMIC_RELAXED,
		                                __ATOMIC_RELAXED))
			break;
	}
	__atomic_fetch_add(&q->allowed, 1, __ATOMIC_RELAXED);
	return true;
}

/* Registry ---------------------------------------------------------------- */

static struct em_qps **slots;
static size_t n_slots, n_buckets;
static uint64_t last_mark;

static uint64_t key_hash(const char *ns, const char *name)
{
	uint64_t h = em_hash64(ns, strlen(ns), EM_HASH_SEED);
	h = em_hash64("/", 1, h);
	return em_hash64(name, strlen(name), h);
}

static bool key_eq(const struct em_qps *q, const char *ns, const char *name)
{
	size_t n = strlen(ns);
	return strncmp(q->key, ns, n) == 0 && q->key[n] == '/' && strcmp(q->key + n + 1, name) == 0;
}

static int grow(void)
{
	size_t cap = n_slots ? n_slots * 2 : 64;
	struct em_qps **v = calloc(cap, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < n_slots; i++)
		while (slots[i]) {
			struct em_qps *q = slots[i];
			slots[i] = q->next;
			q->next = v[q->hash & (cap - 1)];
			v[q->hash & (cap - 1)] = q;
		}
	free(slots);
	slots = v;
	n_slots = cap;
	return 0;
}

uint64_t em_qps_next_mark(void)
{
	return ++last_mark;
}

struct em_qps *em_qps_get(const char *ns, const char *name, double rate, double burst,
                          uint64_t mark)
{
	uint64_t h = key_hash(ns, name);
	struct em_qps *q = NULL;
	if (n_slots)
		for (q = slots[h & (n_slots - 1)]; q; q = q->next)
			if (q->hash == h && key_eq(q, ns, name))
				break;
	if (!q) {
		if (n_buckets + 1 > n_slots && grow())
			return NULL;
		size_t klen = strlen(ns) + 1 + strlen(name) + 1;
		size_t size = (sizeof(*q) + klen + 63) & ~(size_t)63;
		if (!(q = aligned_alloc(64, size)))
			return NULL;
		memset(q, 0, size);
		snprintf(q->key, klen, "%s/%s", ns, name);
		q->hash = h;
		q->next = slots[h & (n_slots - 1)];
		slots[h & (n_slots - 1)] = q;
		n_buckets++;
	}
	if (q->rate != rate || q->burst != burst)
		em_qps_set(q, rate, burst, em_now_ns());
	q->mark = mark;
	return q;
}

void em_qps_sweep(uint64_t mark)
{
	for (size_t i = 0; i < n_slots; i++)
		for (struct em_qps **pp = &slots[i]; *pp;) {
			struct em_qps *q = *pp;
			if (q->mark < mark) {
				*pp = q->next;
				free(q);
				n_buckets--;
			} else {
				pp = &q->next;
			}
		}
}

void em_qps_clear(void)
{
	em_qps_sweep(UINT64_MAX);
	free(slots);
	slots = NULL;
	n_slots = 0;
}

void em_qps_each(void (*fn)(void *ctx, const struct em_qps *q), void *ctx)
{
	for (size_t i = 0; i < n_slots; i++)
		for (const struct em_qps *q = slots[i]; q; q = q->next)
			fn(ctx, q);
}

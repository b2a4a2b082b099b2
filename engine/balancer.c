/* Round robin, random, least-requests and ClientIP affinity; see balancer.h. */
#include "engine/balancer.h"

#include <stdlib.h>

static uint64_t lb_rand(struct em_lb *lb)
{
	/* xorshift64*: quality is ample for spreading load. */
	uint64_t x = lb->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	lb->rng = x;
	return x * 0x2545f4914f6cdd1dULL;
}

static uint64_t addr_hash(const struct em_addr *a)
{
	uint64_t h = em_hash64(&a->family, 1, EM_HASH_SEED);
	return em_hash64(a->b, 16, h);
}

static bool ip_eq(const struct em_addr *a, const struct em_addr *b)
{
	return a->family == b->family && memcmp(a->b, b->b, 16) == 0;
}

int em_lb_init(struct em_lb *lb, enum em_balancer algo, uint64_t seed)
{
	memset(lb, 0, sizeof(*lb));
	lb->algo = algo;
	lb->rng = seed | 1;
	lb->svc = calloc(EM_LB_SVC_SLOTS, sizeof(*lb->svc));
	lb->aff = calloc(EM_LB_AFF_SLOTS, sizeof(*lb->aff));
	lb->buckets = calloc(EM_LB_EP_BUCKETS, sizeof(*lb->buckets));
	if (!lb->svc || !lb->aff || !lb->buckets) {
		em_lb_destroy(lb);
		return -ENOMEM;
	}
	return 0;
}

void em_lb_destroy(struct em_lb *lb)
{
	if (lb->buckets) {
		for (size_t i = 0; i < EM_LB_EP_BUCKETS; i++) {
			struct em_lb_ep *e = lb->buckets[i];
			while (e) {
				struct em_lb_ep *next = e->next;
				free(e);
				e = next;
			}
		}
	}
	free(lb->buckets);
	free(lb->aff);
	free(lb->svc);
	memset(lb, 0, sizeof(*lb));
}

static struct em_lb_ep *ep_find(struct em_lb *lb, const struct em_addr *addr, size_t *bucket)
{
	size_t b = addr_hash(addr) ^ addr->port;
	b &= EM_LB_EP_BUCKETS - 1;
	*bucket = b;
	for (struct em_lb_ep *e = lb->buckets[b]; e; e = e->next)
		if (em_addr_eq(&e->addr, addr))
			return e;
	return NULL;
}

struct em_lb_ep *em_lb_ep_get(struct em_lb *lb, const struct em_addr *addr)
{
	size_t b;
	struct em_lb_ep *e = ep_find(lb, addr, &b);
	if (e)
		return e;
	e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->addr = *addr;
	em_dlist_init(&e->idle);
	e->next = lb->buckets[b];
	lb->buckets[b] = e;
	lb->n_eps++;
	return e;
}

void em_lb_gc(struct em_lb *lb, uint64_t now_ms, uint64_t idle_ms)
{
	for (size_t i = 0; i < EM_LB_EP_BUCKETS; i++) {
		struct em_lb_ep **pp = &lb->buckets[i];
		while (*pp) {
			struct em_lb_ep *e = *pp;
			if (e->active == 0 && e->n_idle == 0 && e->last_ms + idle_ms <= now_ms) {
				*pp = e->next;
				free(e);
				lb->n_eps--;
			} else {
				pp = &e->next;
			}
		}
	}
}

/* Index in [0, n) of a client's hash. FNV-1a's low bits depend only on the
 * low bits of each input byte (2 endpoints would split clients by the parity
 * of their address bytes), so the index comes from the well-mixed high half. */
static uint32_t hash_index(uint64_t h, uint32_t n)
{
	return (uint32_t)(((h >> 32) * n) >> 32);
}

/* Next index of the rotation of <s> in [0, n). The counter stays below <n>:
 * letting it wrap at 2^32 would repeat an index when <n> is not a power of 2. */
static uint32_t rr_next(struct em_lb_svc *s, uint32_t n)
{
	uint32_t i = s->rr % n;
	s->rr = i + 1;
	return i;
}

/* Index in [0, n) different from <avoid_i> when n > 1. */
static uint32_t skip_avoid(uint32_t i, uint32_t n, int64_t avoid_i)
{
	if (n > 1 && (int64_t)i == avoid_i)
		i = (i + 1) % n;
	return i;
}

static int64_t find_ready(const struct em_svc_port *sp, const struct em_addr *a)
{
	if (!a)
		return -1;
	for (uint32_t i = 0; i < sp->n_ready; i++)
		if (em_addr_eq(&sp->endpoints[i].addr, a))
			return i;
	return -1;
}

static uint32_t pick_least(struct em_lb *lb, const struct em_svc_port *sp, uint32_t start,
                           int64_t avoid_i)
{
	uint32_t n = sp->n_ready, best = UINT32_MAX, best_active = UINT32_MAX;
	/* Few endpoints: scan all, starting at a rotating index so ties spread.
	 * Many: two random choices, which is nearly as good and O(1). */
	uint32_t tries = n <= 8 ? n : 2;
	for (uint32_t k = 0; k < tries; k++) {
		uint32_t i = n <= 8 ? (start + k) % n : (uint32_t)(lb_rand(lb) % n);
		if ((int64_t)i == avoid_i && n > 1)
			continue;
		struct em_lb_ep *e = em_lb_ep_get(lb, &sp->endpoints[i].addr);
		uint32_t act = e ? e->active : 0;
		if (act < best_active) {
			best_active = act;
			best = i;
		}
	}
	return best == UINT32_MAX ? skip_avoid(start % n, n, avoid_i) : best;
}

const struct em_endpoint *em_lb_pick(struct em_lb *lb, const struct em_svc_port *sp,
                                     const struct em_addr *client, const struct em_addr *avoid,
                                     uint64_t now_ms)
{
	uint32_t n = sp->n_ready;
	if (n == 0)
		return NULL;
	int64_t avoid_i = find_ready(sp, avoid);
	const struct em_service *svc = sp->svc;

	if (svc && svc->affinity_client_ip && client) {
		uint64_t ch = addr_hash(client);
		struct em_lb_aff *a = &lb->aff[(ch ^ sp->key) & (EM_LB_AFF_SLOTS - 1)];
		if (a->key == sp->key && ip_eq(&a->client, client) && a->expires_ms > now_ms) {
			int64_t i = find_ready(sp, &a->ep);
			if (i >= 0 && (i != avoid_i || n == 1)) {
				a->expires_ms = now_ms + (uint64_t)svc->affinity_timeout_s * 1000;
				return &sp->endpoints[i];
			}
		}
		uint32_t i = skip_avoid(hash_index(ch, n), n, avoid_i);
		a->key = sp->key;
		a->client = *client;
		a->client.port = 0;
		a->ep = sp->endpoints[i].addr;
		a->expires_ms = now_ms + (uint64_t)svc->affinity_timeout_s * 1000;
		return &sp->endpoints[i];
	}

	struct em_lb_svc *s = &lb->svc[sp->key & (EM_LB_SVC_SLOTS - 1)];
	if (s->key != sp->key) {
		s->key = sp->key;
		s->rr = (uint32_t)lb_rand(lb);
	}
	uint32_t i;
	switch (lb->algo) {
	case EM_LB_RANDOM:
		i = skip_avoid((uint32_t)(lb_rand(lb) % n), n, avoid_i);
		break;
	case EM_LB_LEAST_REQUESTS:
		i = pick_least(lb, sp, rr_next(s, n), avoid_i);
		break;
	case EM_LB_ROUND_ROBIN:
	default:
		i = skip_avoid(rr_next(s, n), n, avoid_i);
		break;
	}
	return &sp->endpoints[i];
}

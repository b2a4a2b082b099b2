/* Balancer (engine/balancer.c): exact round-robin order, least-requests
 * picks for given in-flight counts, random spread, ClientIP affinity and its
 * expiry, and the endpoint entries' life cycle. */
#include <criterion/criterion.h>
#include <stdio.h>

#include "engine/balancer.h"

#define MAX_EPS 32

struct fixture {
	struct em_lb lb;
	struct em_endpoint eps[MAX_EPS];
	struct em_svc_port sp;
	struct em_service svc;
};

/* <n> endpoints 10.0.0.1..n:8080, the first <ready> of them ready, in a port
 * of key <key>; balancer <algo>, seed 1. */
static void setup(struct fixture *f, enum em_balancer algo, uint32_t n, uint32_t ready,
                  uint64_t key)
{
	memset(f, 0, sizeof(*f));
	cr_assert_eq(em_lb_init(&f->lb, algo, 1), 0);
	for (uint32_t i = 0; i < n; i++) {
		f->eps[i].addr.family = AF_INET;
		f->eps[i].addr.b[0] = 10;
		f->eps[i].addr.b[3] = (uint8_t)(i + 1);
		f->eps[i].addr.port = 8080;
		f->eps[i].ready = i < ready;
	}
	f->sp.svc = &f->svc;
	f->sp.endpoints = f->eps;
	f->sp.n_endpoints = n;
	f->sp.n_ready = ready;
	f->sp.key = key;
}

static int pick(struct fixture *f, const struct em_addr *client, const struct em_addr *avoid,
                uint64_t now)
{
	const struct em_endpoint *e = em_lb_pick(&f->lb, &f->sp, client, avoid, now);
	cr_assert_not_null(e);
	cr_assert(e >= f->sp.endpoints && e < f->sp.endpoints + f->sp.n_ready,
	          "picked outside the ready endpoints");
	return (int)(e - f->sp.endpoints);
}

static struct em_addr client_ip(const char *s)
{
	struct em_addr a;
	cr_assert_eq(em_addr_parse(s, false, &a), 0, "%s", s);
	return a;
}

/* Round robin ---------------------------------------------------------------- */

Test(round_robin, strict_rotation)
{
	for (uint32_t n = 1; n <= 7; n++) {
		struct fixture f;
		setup(&f, EM_LB_ROUND_ROBIN, n, n, 42);
		int counts[MAX_EPS] = {0};
		int prev = pick(&f, NULL, NULL, 0);
		counts[prev]++;
		for (uint32_t k = 1; k < 100 * n; k++) {
			int i = pick(&f, NULL, NULL, 0);
			cr_assert_eq(i, (prev + 1) % (int)n, "n=%u pick %u: %d after %d", n, k, i, prev);
			counts[i]++;
			prev = i;
		}
		for (uint32_t i = 0; i < n; i++)
			cr_assert_eq(counts[i], 100, "n=%u endpoint %u: %d picks", n, i, counts[i]);
		em_lb_destroy(&f.lb);
	}
}

Test(round_robin, only_ready_endpoints)
{
	struct fixture f;
	setup(&f, EM_LB_ROUND_ROBIN, 6, 2, 42);
	int counts[MAX_EPS] = {0};
	for (int k = 0; k < 200; k++)
		counts[pick(&f, NULL, NULL, 0)]++;
	cr_assert_eq(counts[0], 100);
	cr_assert_eq(counts[1], 100);
	f.sp.n_ready = 0;
	cr_assert_null(em_lb_pick(&f.lb, &f.sp, NULL, NULL, 0));
	em_lb_destroy(&f.lb);
}

/* The counter belongs to the port's key: another port in between does not
 * disturb it, and a new snapshot of the same port carries on from it. */
Test(round_robin, per_port_state_survives_swap)
{
	struct fixture f, g;
	setup(&f, EM_LB_ROUND_ROBIN, 5, 5, 42);
	setup(&g, EM_LB_ROUND_ROBIN, 3, 3, 43);
	em_lb_destroy(&g.lb);
	g.lb = f.lb; /* one worker's balancer serves both ports */
	int prev = pick(&f, NULL, NULL, 0);
	for (int k = 0; k < 50; k++) {
		pick(&g, NULL, NULL, 0);
		pick(&g, NULL, NULL, 0);
		int i = pick(&f, NULL, NULL, 0);
		cr_assert_eq(i, (prev + 1) % 5, "port 42 disturbed by port 43");
		prev = i;
	}
	/* Same key, a new endpoint array (a table swap): the rotation goes on. */
	struct em_endpoint copy[5];
	memcpy(copy, f.eps, sizeof(copy));
	f.sp.endpoints = copy;
	cr_assert_eq(pick(&f, NULL, NULL, 0), (prev + 1) % 5);
	em_lb_destroy(&f.lb);
}

/* The counter is 32 bits and starts at a random value; wrapping must not
 * repeat an endpoint (2^32 is not a multiple of 3). The slot is set by hand
 * to reach the wrap without 4 billion picks. */
Test(round_robin, counter_wrap)
{
	struct fixture f;
	setup(&f, EM_LB_ROUND_ROBIN, 3, 3, 42);
	struct em_lb_svc *s = &f.lb.svc[42 & (EM_LB_SVC_SLOTS - 1)];
	s->key = 42;
	s->rr = UINT32_MAX - 3;
	int prev = pick(&f, NULL, NULL, 0);
	for (int k = 0; k < 8; k++) {
		int i = pick(&f, NULL, NULL, 0);
		cr_assert_eq(i, (prev + 1) % 3, "pick %d: %d after %d", k, i, prev);
		prev = i;
	}
	em_lb_destroy(&f.lb);
}

Test(round_robin, avoid)
{
	struct fixture f;
	setup(&f, EM_LB_ROUND_ROBIN, 4, 4, 42);
	int counts[MAX_EPS] = {0};
	for (int k = 0; k < 300; k++) {
		int i = pick(&f, NULL, &f.eps[2].addr, 0);
		cr_assert_neq(i, 2);
		counts[i]++;
	}
	cr_assert_eq(counts[0] + counts[1] + counts[3], 300);
	cr_assert(counts[0] > 0 && counts[1] > 0 && counts[3] > 0, "%d %d %d", counts[0],
	          counts[1], counts[3]);
	/* An address that is not a ready endpoint changes nothing. */
	struct em_addr other = client_ip("10.0.0.99:8080");
	int prev = pick(&f, NULL, &other, 0);
	for (int k = 0; k < 8; k++) {
		int i = pick(&f, NULL, &other, 0);
		cr_assert_eq(i, (prev + 1) % 4);
		prev = i;
	}
	/* The only ready endpoint is returned even when it is to be avoided. */
	f.sp.n_ready = 1;
	cr_assert_eq(pick(&f, NULL, &f.eps[0].addr, 0), 0);
	em_lb_destroy(&f.lb);
}

/* Random --------------------------------------------------------------------- */

Test(random, spread_and_avoid)
{
	struct fixture f;
	setup(&f, EM_LB_RANDOM, 5, 4, 42);
	int counts[MAX_EPS] = {0};
	for (int k = 0; k < 40000; k++)
		counts[pick(&f, NULL, NULL, 0)]++;
	/* 10,000 expected each; 4 standard deviations is about 350. */
	for (int i = 0; i < 4; i++)
		cr_assert(counts[i] > 9500 && counts[i] < 10500, "endpoint %d: %d of 40000", i,
		          counts[i]);
	for (int k = 0; k < 1000; k++)
		cr_assert_neq(pick(&f, NULL, &f.eps[1].addr, 0), 1);
	em_lb_destroy(&f.lb);
}

Test(random, not_a_rotation)
{
	struct fixture f;
	setup(&f, EM_LB_RANDOM, 4, 4, 42);
	int prev = pick(&f, NULL, NULL, 0), rotations = 0, repeats = 0;
	for (int k = 0; k < 4000; k++) {
		int i = pick(&f, NULL, NULL, 0);
		rotations += i == (prev + 1) % 4;
		repeats += i == prev;
		prev = i;
	}
	/* About 1,000 each for independent picks. */
	cr_assert(rotations > 800 && rotations < 1200, "%d successors", rotations);
	cr_assert(repeats > 800 && repeats < 1200, "%d repeats", repeats);
	em_lb_destroy(&f.lb);
}

Test(random, seed_decides_sequence)
{
	struct fixture f, g, h;
	setup(&f, EM_LB_RANDOM, 8, 8, 42);
	setup(&g, EM_LB_RANDOM, 8, 8, 42);
	setup(&h, EM_LB_RANDOM, 8, 8, 42);
	em_lb_destroy(&h.lb);
	cr_assert_eq(em_lb_init(&h.lb, EM_LB_RANDOM, 2), 0);
	int same = 0, differ = 0;
	for (int k = 0; k < 200; k++) {
		int a = pick(&f, NULL, NULL, 0), b = pick(&g, NULL, NULL, 0);
		int c = pick(&h, NULL, NULL, 0);
		same += a == b;
		differ += a != c;
	}
	cr_assert_eq(same, 200, "same seed, different picks");
	cr_assert_gt(differ, 100, "seeds 1 and 2 agree on %d of 200 picks", 200 - differ);
	em_lb_destroy(&f.lb);
	em_lb_destroy(&g.lb);
	em_lb_destroy(&h.lb);
}

/* Least requests ------------------------------------------------------------- */

static void set_active(struct fixture *f, const uint32_t *active, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		struct em_lb_ep *e = em_lb_ep_get(&f->lb, &f->eps[i].addr);
		cr_assert_not_null(e);
		e->active = active[i];
	}
}

static uint32_t active_of(struct fixture *f, uint32_t i)
{
	return em_lb_ep_get(&f->lb, &f->eps[i].addr)->active;
}

Test(least_requests, picks_fewest)
{
	struct fixture f;
	setup(&f, EM_LB_LEAST_REQUESTS, 4, 4, 42);
	set_active(&f, (uint32_t[]){7, 3, 9, 4}, 4);
	for (int k = 0; k < 20; k++)
		cr_assert_eq(pick(&f, NULL, NULL, 0), 1);
	/* Avoiding the least loaded: the next least. */
	for (int k = 0; k < 20; k++)
		cr_assert_eq(pick(&f, NULL, &f.eps[1].addr, 0), 3);
	/* Not-ready endpoints are never candidates, however idle. */
	set_active(&f, (uint32_t[]){7, 3, 9, 0}, 4);
	f.sp.n_ready = 3;
	for (int k = 0; k < 20; k++)
		cr_assert_eq(pick(&f, NULL, NULL, 0), 1);
	em_lb_destroy(&f.lb);
}

/* What the engine does: a pick adds one in flight. From {4, 0, 1}, the next
 * seven picks go to the two others until all three hold 4; then the load
 * spreads evenly. */
Test(least_requests, fills_the_gaps)
{
	struct fixture f;
	setup(&f, EM_LB_LEAST_REQUESTS, 3, 3, 42);
	set_active(&f, (uint32_t[]){4, 0, 1}, 3);
	for (int k = 0; k < 7; k++) {
		int i = pick(&f, NULL, NULL, 0);
		cr_assert_neq(i, 0, "pick %d went to the busiest endpoint", k);
		em_lb_ep_get(&f.lb, &f.eps[i].addr)->active++;
	}
	for (uint32_t i = 0; i < 3; i++)
		cr_assert_eq(active_of(&f, i), 4, "endpoint %u: %u in flight", i, active_of(&f, i));
	for (int k = 0; k < 30; k++) {
		int i = pick(&f, NULL, NULL, 0);
		em_lb_ep_get(&f.lb, &f.eps[i].addr)->active++;
	}
	for (uint32_t i = 0; i < 3; i++)
		cr_assert_eq(active_of(&f, i), 14, "endpoint %u: %u in flight", i, active_of(&f, i));
	em_lb_destroy(&f.lb);
}

/* Equal counts (nothing held): ties rotate, an exact round robin. */
Test(least_requests, ties_rotate)
{
	struct fixture f;
	setup(&f, EM_LB_LEAST_REQUESTS, 5, 5, 42);
	int counts[MAX_EPS] = {0};
	int prev = pick(&f, NULL, NULL, 0);
	counts[prev]++;
	for (int k = 1; k < 500; k++) {
		int i = pick(&f, NULL, NULL, 0);
		cr_assert_eq(i, (prev + 1) % 5);
		counts[i]++;
		prev = i;
	}
	for (int i = 0; i < 5; i++)
		cr_assert_eq(counts[i], 100);
	/* Entries were made for the addresses seen, once each. */
	cr_assert_eq(f.lb.n_eps, 5);
	em_lb_destroy(&f.lb);
}

/* Above 8 endpoints two random candidates are compared: a busy endpoint is
 * picked only when both draws land on it, an idle one whenever drawn. */
Test(least_requests, two_choices_when_many)
{
	struct fixture f;
	setup(&f, EM_LB_LEAST_REQUESTS, 16, 16, 42);
	uint32_t act[16];
	for (int i = 0; i < 16; i++)
		act[i] = 10;
	act[3] = 1000;
	act[7] = 0;
	set_active(&f, act, 16);
	int counts[MAX_EPS] = {0};
	for (int k = 0; k < 16000; k++)
		counts[pick(&f, NULL, NULL, 0)]++;
	/* Endpoint 3: (1/16)^2 = 62 expected. Endpoint 7: 1 - (15/16)^2, 1,937
	 * expected, against 1,000 for a uniform pick. */
	cr_assert_lt(counts[3], 150, "busiest endpoint picked %d times", counts[3]);
	cr_assert(counts[7] > 1700 && counts[7] < 2200, "idle endpoint picked %d times",
	          counts[7]);
	for (int k = 0; k < 2000; k++)
		cr_assert_neq(pick(&f, NULL, &f.eps[7].addr, 0), 7);
	em_lb_destroy(&f.lb);
}

/* ClientIP affinity ------------------------------------------------------------ */

static void affinity(struct fixture *f, uint32_t timeout_s)
{
	f->svc.affinity_client_ip = true;
	f->svc.affinity_timeout_s = timeout_s;
}

Test(affinity, sticks_per_client_ip)
{
	struct fixture f;
	setup(&f, EM_LB_ROUND_ROBIN, 4, 4, 42);
	affinity(&f, 10);
	int counts[MAX_EPS] = {0};
	for (int c = 0; c < 400; c++) {
		char s[32];
		snprintf(s, sizeof(s), "192.168.%d.%d:%d", c / 200, c % 200 + 1, 40000 + c);
		struct em_addr cl = client_ip(s);
		int first = pick(&f, &cl, NULL, 1000);
		counts[first]++;
		for (int k = 0; k < 5; k++) {
			cl.port = (uint16_t)(1000 + k); /* the port plays no part */
			cr_assert_eq(pick(&f, &cl, NULL, 1000 + (uint64_t)k), first, "client %s moved", s);
		}
	}
	/* Clients spread over the endpoints: 100 expected each. */
	for (int i = 0; i < 4; i++)
		cr_assert(counts[i] > 60 && counts[i] < 140, "endpoint %d: %d of 400 clients", i,
		          counts[i]);
	/* Without a client address the service's port falls back to round robin. */
	int prev = pick(&f, NULL, NULL, 2000);
	for (int k = 0; k < 8; k++) {
		int i = pick(&f, NULL, NULL, 2000);
		cr_assert_eq(i, (prev + 1) % 4);
		prev = i;
	}
	em_lb_destroy(&f.lb);
}

/* Clients whose addresses differ only in bits above the lowest of each
 * byte (every other or every fourth address, as nodes or pods often get)
 * still spread over 2 and 4 endpoints. */
Test(affinity, spread_of_strided_clients)
{
	for (uint32_t n = 2; n <= 4; n += 2) {
		struct fixture f;
		setup(&f, EM_LB_ROUND_ROBIN, n, n, 42);
		affinity(&f, 60);
		int counts[MAX_EPS] = {0}, clients = 0;
		for (int a = 0; a < 256; a += 4) {
			for (int b = 0; b < 256; b += (int)n) {
				char s[32];
				snprintf(s, sizeof(s), "10.244.%d.%d", a, b);
				struct em_addr cl = client_ip(s);
				counts[pick(&f, &cl, NULL, 1000)]++;
				clients++;
			}
		}
		for (uint32_t i = 0; i < n; i++)
			cr_assert(counts[i] > clients / (int)n * 3 / 4,
			          "%u endpoints: endpoint %u has %d of %d clients", n, i, counts[i], clients);
		em_lb_destroy(&f.lb);
	}
}

/* A client's first endpoint <home> leaves, so it moves to <away>; when <home>
 * is back the client stays on <away> for the timeout, counted from its last
 * pick, and returns to <home> once that has run out with no pick. */
Test(affinity, expiry)
{
	struct fixture f;
	setup(&f, EM_LB_RANDOM, 5, 5, 42);
	affinity(&f, 10);
	struct em_addr cl = client_ip("172.16.0.9");
	int home = pick(&f, &cl, NULL, 1000);

	struct em_endpoint full[5], without[4];
	memcpy(full, f.eps, sizeof(full));
	for (int i = 0, j = 0; i < 5; i++)
		if (i != home)
			without[j++] = full[i];
	f.sp.endpoints = without;
	f.sp.n_ready = f.sp.n_endpoints = 4;
	const struct em_endpoint *e = em_lb_pick(&f.lb, &f.sp, &cl, NULL, 2000);
	cr_assert_not(em_addr_eq(&e->addr, &full[home].addr));
	struct em_addr away = e->addr;

	f.sp.endpoints = full;
	f.sp.n_ready = f.sp.n_endpoints = 5;
	/* Timeout 10 s from 2000: each pick before the end renews it. */
	uint64_t t = 2000;
	for (int k = 0; k < 5; k++) {
		t += 9999;
		e = em_lb_pick(&f.lb, &f.sp, &cl, NULL, t);
		cr_assert(em_addr_eq(&e->addr, &away), "pick at %llu left before the timeout",
		          (unsigned long long)t);
	}
	/* Exactly the timeout since the last pick: expired, back home. */
	t += 10000;
	cr_assert_eq(pick(&f, &cl, NULL, t), home, "still away %llu ms after the last pick",
	             10000ULL);
	em_lb_destroy(&f.lb);
}

/* Avoiding the client's endpoint (a retry) moves it to another one, and it
 * stays there. */
Test(affinity, avoid_moves_the_client)
{
	struct fixture f;
	setup(&f, EM_LB_ROUND_ROBIN, 3, 3, 42);
	affinity(&f, 60);
	struct em_addr cl = client_ip("[fd00::77]:999");
	int first = pick(&f, &cl, NULL, 1000);
	int second = pick(&f, &cl, &f.eps[first].addr, 1001);
	cr_assert_neq(second, first);
	for (int k = 0; k < 5; k++)
		cr_assert_eq(pick(&f, &cl, NULL, 1002 + (uint64_t)k), second);
	/* A single endpoint is kept even when it is to be avoided. */
	f.sp.n_ready = 1;
	cr_assert_eq(pick(&f, &cl, &f.eps[0].addr, 1100), 0);
	em_lb_destroy(&f.lb);
}

/* Two services: a client's entry in one does not leak into the other. */
Test(affinity, per_service_port)
{
	struct fixture f, g;
	setup(&f, EM_LB_ROUND_ROBIN, 4, 4, 42);
	setup(&g, EM_LB_ROUND_ROBIN, 4, 4, 42 + EM_LB_SVC_SLOTS * 7);
	affinity(&f, 60);
	affinity(&g, 60);
	em_lb_destroy(&g.lb);
	g.lb = f.lb;
	struct em_addr cl = client_ip("10.1.1.1");
	int a = pick(&f, &cl, NULL, 1000), b = pick(&g, &cl, NULL, 1000);
	/* Move the client in f only (avoid its endpoint), then check g kept b. */
	int a2 = pick(&f, &cl, &f.eps[a].addr, 1001);
	cr_assert_neq(a2, a);
	cr_assert_eq(pick(&g, &cl, NULL, 1002), b);
	cr_assert_eq(pick(&f, &cl, NULL, 1003), a2);
	em_lb_destroy(&f.lb);
}

/* Endpoint entries -------------------------------------------------------------- */

Test(entries, get_and_gc)
{
	struct em_lb lb;
	cr_assert_eq(em_lb_init(&lb, EM_LB_LEAST_REQUESTS, 7), 0);
	struct em_addr a = client_ip("10.0.0.1:80"), b = client_ip("10.0.0.1:81");
	struct em_addr c = client_ip("[fd00::1]:80");
	struct em_lb_ep *ea = em_lb_ep_get(&lb, &a);
	cr_assert_not_null(ea);
	cr_assert_eq(em_lb_ep_get(&lb, &a), ea, "same address, new entry");
	struct em_lb_ep *eb = em_lb_ep_get(&lb, &b), *ec = em_lb_ep_get(&lb, &c);
	cr_assert(eb != ea && ec != ea && ec != eb, "port or family ignored");
	cr_assert_eq(lb.n_eps, 3);
	cr_assert(em_addr_eq(&ea->addr, &a));
	cr_assert(em_dlist_empty(&ea->idle));

	ea->last_ms = 1000;
	eb->last_ms = 1000;
	ec->last_ms = 5000;
	eb->active = 1;
	em_lb_gc(&lb, 1999, 1000); /* nothing idle for 1000 ms yet */
	cr_assert_eq(lb.n_eps, 3);
	em_lb_gc(&lb, 2000, 1000); /* a: idle long enough; b: busy; c: recent */
	cr_assert_eq(lb.n_eps, 2);
	cr_assert_eq(em_lb_ep_get(&lb, &b), eb);
	cr_assert_eq(em_lb_ep_get(&lb, &c), ec);
	cr_assert_eq(lb.n_eps, 2);
	eb->active = 0;
	eb->n_idle = 1; /* pooled connections keep it too */
	em_lb_gc(&lb, 100000, 1000);
	cr_assert_eq(lb.n_eps, 1);
	cr_assert_eq(em_lb_ep_get(&lb, &b), eb);
	eb->n_idle = 0;
	em_lb_gc(&lb, 100000, 1000);
	cr_assert_eq(lb.n_eps, 0);
	/* Gone means a fresh entry next time. */
	struct em_lb_ep *fresh = em_lb_ep_get(&lb, &a);
	cr_assert_eq(fresh->active, 0);
	cr_assert_eq(lb.n_eps, 1);
	em_lb_destroy(&lb);
}

/* Many addresses: all found again, all freed by one pass. */
Test(entries, many)
{
	struct em_lb lb;
	cr_assert_eq(em_lb_init(&lb, EM_LB_ROUND_ROBIN, 7), 0);
	static struct em_lb_ep *got[5000];
	for (int i = 0; i < 5000; i++) {
		struct em_addr a = {.family = AF_INET, .port = (uint16_t)(1 + i % 3)};
		a.b[0] = 10, a.b[2] = (uint8_t)(i >> 8), a.b[3] = (uint8_t)i;
		got[i] = em_lb_ep_get(&lb, &a);
		cr_assert_not_null(got[i]);
	}
	cr_assert_eq(lb.n_eps, 5000);
	for (int i = 0; i < 5000; i++) {
		struct em_addr a = {.family = AF_INET, .port = (uint16_t)(1 + i % 3)};
		a.b[0] = 10, a.b[2] = (uint8_t)(i >> 8), a.b[3] = (uint8_t)i;
		cr_assert_eq(em_lb_ep_get(&lb, &a), got[i], "address %d not found again", i);
	}
	em_lb_gc(&lb, 1000000, 10);
	cr_assert_eq(lb.n_eps, 0);
	em_lb_destroy(&lb);
}

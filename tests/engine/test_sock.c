/* Timer lists of the socket layer (engine/sock.c): em_sock_timer keeps each list in deadline
 * order, whatever mix of timeouts goes on it, so that the expiry scan may
 * stop at the first entry not yet due. */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "engine/sock.h"

#define NS 2000

static struct em_worker *w;
static struct em_sock *socks;

static void setup(void)
{
	w = calloc(1, sizeof(*w));
	cr_assert_not_null(w);
	for (int tc = 0; tc < EM_T__COUNT; tc++)
		em_dlist_init(&w->timers[tc]);
	socks = aligned_alloc(16, NS * sizeof(*socks));
	cr_assert_not_null(socks);
	memset(socks, 0, NS * sizeof(*socks));
	w->now_ms = 1000000;
}

static void teardown(void)
{
	free(socks);
	free(w);
}

TestSuite(timers, .init = setup, .fini = teardown, .timeout = 20);

static uint32_t rng = 2463534242u;
static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 17;
	rng ^= rng << 5;
	return rng;
}

/* Checks list <tc> is in deadline order and holds <n> entries. */
static void check_order(enum em_timer_class tc, size_t n)
{
	const struct em_dlist *h = &w->timers[tc];
	uint64_t last = 0;
	size_t k = 0;
	for (const struct em_dlist *i = h->next; i != h && k <= n; i = i->next, k++) {
		const struct em_sock *s = em_container_of(i, struct em_sock, tnode);
		cr_assert_geq(s->deadline_ms, last, "entry %zu: deadline %lu before %lu", k,
		              (unsigned long)s->deadline_ms, (unsigned long)last);
		cr_assert_eq(i->next->prev, i, "links broken at %zu", k);
		last = s->deadline_ms;
	}
	cr_assert_eq(k, n, "%zu entries, expected %zu", k, n);
}

/* The expiry scan of the worker: pops the due entries from the head, stops
 * at the first one not due. Returns how many it popped; each must be due,
 * and none due may stay behind. */
static size_t expire(enum em_timer_class tc, uint64_t *last_deadline)
{
	size_t n = 0;
	struct em_dlist *i;
	while ((i = em_dlist_first(&w->timers[tc]))) {
		struct em_sock *s = em_container_of(i, struct em_sock, tnode);
		if (s->deadline_ms > w->now_ms)
			break;
		cr_assert_geq(s->deadline_ms, *last_deadline, "expiry out of deadline order");
		*last_deadline = s->deadline_ms;
		em_sock_timer(w, s, EM_T_NONE, 0);
		n++;
	}
	for (i = w->timers[tc].next; i != &w->timers[tc]; i = i->next)
		cr_assert_gt(em_container_of(i, struct em_sock, tnode)->deadline_ms, w->now_ms,
		             "a due entry stayed behind one not due");
	return n;
}

Test(timers, mixed_timeouts_expire_in_deadline_order)
{
	/* Idle streams (long timeout) interleaved with streams waiting for a
	 * tunnel slot (connect timeout), as time goes on. */
	for (int i = 0; i < NS; i++) {
		uint32_t ms = (i % 3 == 0) ? 5000 : 300000;
		em_sock_timer(w, &socks[i], EM_T_IDLE, ms);
		if (i % 10 == 9)
			w->now_ms += rnd() % 50;
	}
	check_order(EM_T_IDLE, NS);
	uint64_t last = 0, start = w->now_ms;
	size_t total = 0;
	/* Every connect-timeout entry is gone by now + 5 s, none of the others. */
	w->now_ms = start + 5000;
	total += expire(EM_T_IDLE, &last);
	cr_assert_eq(total, (NS + 2) / 3, "entries due at connect_ms expired: %zu", total);
	for (int step = 0; step < 400; step++) {
		w->now_ms += 1000;
		total += expire(EM_T_IDLE, &last);
	}
	cr_assert_eq(total, NS);
}

Test(timers, random_deadlines_and_moves_stay_ordered)
{
	for (int i = 0; i < NS; i++)
		em_sock_timer(w, &socks[i], EM_T_IDLE, rnd() % 100000);
	check_order(EM_T_IDLE, NS);
	/* Moving an entry (a touch) and taking some off keeps the order. */
	for (int k = 0; k < NS; k++) {
		struct em_sock *s = &socks[rnd() % NS];
		if (k % 7 == 0)
			em_sock_timer(w, s, EM_T_NONE, 0);
		else
			em_sock_timer(w, s, EM_T_IDLE, rnd() % 100000);
	}
	size_t n = 0;
	for (struct em_dlist *i = w->timers[EM_T_IDLE].next; i != &w->timers[EM_T_IDLE];
	     i = i->next)
		n++;
	check_order(EM_T_IDLE, n);
	uint64_t last = 0;
	size_t total = 0;
	for (int step = 0; step < 200; step++) {
		w->now_ms += 997;
		total += expire(EM_T_IDLE, &last);
	}
	cr_assert_eq(total, n);
}

Test(timers, a_reload_that_shortens_a_timeout_keeps_the_order)
{
	/* idle_ms 300 s, then a SIGHUP makes it 10 s: later entries expire
	 * first and must be found first. */
	for (int i = 0; i < NS / 2; i++)
		em_sock_timer(w, &socks[i], EM_T_IDLE, 300000);
	w->now_ms += 1000;
	for (int i = NS / 2; i < NS; i++)
		em_sock_timer(w, &socks[i], EM_T_IDLE, 10000);
	check_order(EM_T_IDLE, NS);
	uint64_t last = 0;
	w->now_ms += 10000;
	cr_assert_eq(expire(EM_T_IDLE, &last), NS / 2, "the 10 s entries expire at 10 s");
	w->now_ms += 300000;
	cr_assert_eq(expire(EM_T_IDLE, &last), NS / 2);
}

Test(timers, equal_deadlines_keep_insertion_order_and_classes_are_apart)
{
	for (int i = 0; i < 10; i++)
		em_sock_timer(w, &socks[i], EM_T_POOL, 100);
	em_sock_timer(w, &socks[10], EM_T_HEAD, 5);
	em_sock_timer(w, &socks[4], EM_T_POOL, 100); /* re-set: goes behind its equals */
	em_sock_timer(w, &socks[11], EM_T_POOL, 50); /* shorter: goes first */
	check_order(EM_T_POOL, 11);
	check_order(EM_T_HEAD, 1);
	int want[] = {11, 0, 1, 2, 3, 5, 6, 7, 8, 9, 4}, k = 0;
	for (struct em_dlist *i = w->timers[EM_T_POOL].next; i != &w->timers[EM_T_POOL];
	     i = i->next, k++)
		cr_assert_eq(em_container_of(i, struct em_sock, tnode), &socks[want[k]],
		             "position %d", k);
	cr_assert_eq(socks[4].tclass, EM_T_POOL);
	em_sock_timer(w, &socks[4], EM_T_NONE, 0);
	cr_assert_eq(socks[4].tclass, EM_T_NONE);
	cr_assert(!em_dlist_linked(&socks[4].tnode));
	check_order(EM_T_POOL, 10);
}

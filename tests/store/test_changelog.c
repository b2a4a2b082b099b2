/* The cloud's change log (store/changelog.c): "since G" returns exactly the
 * changes after G, oldest first; bounds drop whole generations; a "since"
 * the log cannot answer asks for a snapshot. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "store/changelog.h"

struct seen {
	char keys[64][32];
	uint64_t gens[64];
	size_t n;
};

static int collect(void *arg, const struct em_clog_entry *e)
{
	struct seen *s = arg;
	cr_assert_lt(s->n, 64);
	snprintf(s->keys[s->n], sizeof(s->keys[0]), "%s", e->key);
	s->gens[s->n++] = e->generation;
	return 0;
}

static struct seen since(struct em_clog *c, uint64_t g, int want_rc)
{
	struct seen s = {0};
	cr_assert_eq(em_clog_since(c, g, collect, &s), want_rc, "since %llu",
	             (unsigned long long)g);
	return s;
}

Test(changelog, since_returns_what_came_after)
{
	struct em_clog *c = em_clog_new(10, 100, 1 << 20);
	cr_assert_eq(em_clog_append(c, 11, EM_BH_INSERT, "default/service/a", "{}"), 0);
	cr_assert_eq(em_clog_append(c, 11, EM_BH_INSERT, "default/endpoints/a", "{}"), 0);
	cr_assert_eq(em_clog_append(c, 12, EM_BH_UPDATE, "default/service/a", "{\"x\":1}"), 0);
	cr_assert_eq(em_clog_append(c, 13, EM_BH_DELETE, "default/endpoints/a", NULL), 0);
	struct seen s = since(c, 10, 0);
	cr_assert_eq(s.n, 4);
	cr_assert_str_eq(s.keys[0], "default/service/a");
	cr_assert_eq(s.gens[3], 13);
	s = since(c, 12, 0);
	cr_assert_eq(s.n, 1);
	cr_assert_str_eq(s.keys[0], "default/endpoints/a");
	s = since(c, 13, 0);
	cr_assert_eq(s.n, 0, "up to date: nothing");
	since(c, 9, -ERANGE);  /* before the log started: snapshot */
	since(c, 14, -ERANGE); /* ahead of the log: the cloud restarted */
	em_clog_free(c);
}

Test(changelog, bounds_drop_whole_generations)
{
	struct em_clog *c = em_clog_new(0, 3, 1 << 20);
	em_clog_append(c, 1, EM_BH_INSERT, "a/service/1", "{}");
	em_clog_append(c, 1, EM_BH_INSERT, "a/service/2", "{}");
	em_clog_append(c, 2, EM_BH_INSERT, "a/service/3", "{}");
	/* A fourth entry: generation 1 goes, both of its changes. */
	em_clog_append(c, 3, EM_BH_INSERT, "a/service/4", "{}");
	struct em_clog_stats st;
	em_clog_stats(c, &st);
	cr_assert_eq(st.entries, 2);
	cr_assert_eq(st.floor, 1);
	cr_assert_eq(st.dropped, 2);
	since(c, 0, -ERANGE);
	struct seen s = since(c, 1, 0);
	cr_assert_eq(s.n, 2);
	cr_assert_str_eq(s.keys[0], "a/service/3");
	em_clog_free(c);

	/* The byte bound: keys and JSON count. */
	c = em_clog_new(0, 100, 40);
	em_clog_append(c, 1, EM_BH_INSERT, "a/service/1", "{\"aaaaaaaa\":1}"); /* 25 bytes */
	em_clog_append(c, 2, EM_BH_INSERT, "a/service/2", "{\"bbbbbbbb\":1}");
	em_clog_stats(c, &st);
	cr_assert_eq(st.entries, 1);
	cr_assert_eq(st.bytes, 25);
	since(c, 0, -ERANGE);
	cr_assert_eq(since(c, 1, 0).n, 1);
	/* Larger than the whole bound: the log empties, everyone needs a snapshot. */
	char big[64];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	cr_assert_eq(em_clog_append(c, 3, EM_BH_INSERT, "a/service/3", big), 0);
	em_clog_stats(c, &st);
	cr_assert_eq(st.entries, 0);
	since(c, 2, -ERANGE);
	cr_assert_eq(since(c, 3, 0).n, 0);
	em_clog_free(c);
}

Test(changelog, refusals)
{
	struct em_clog *c = em_clog_new(5, 10, 1000);
	cr_assert_eq(em_clog_append(c, 4, EM_BH_INSERT, "a/service/1", "{}"), -EINVAL,
	             "going back");
	cr_assert_eq(em_clog_append(c, 6, EM_BH_DELETE, "a/service/1", "{}"), -EINVAL);
	cr_assert_eq(em_clog_append(c, 6, EM_BH_INSERT, "a/service/1", NULL), -EINVAL);
	cr_assert_eq(em_clog_append(c, 6, EM_BH_QUERY, "a/service/1", "{}"), -EINVAL);
	cr_assert_eq(em_clog_append(c, 6, EM_BH_INSERT, NULL, "{}"), -EINVAL);
	em_clog_free(c);
}

static int stop_at_two(void *arg, const struct em_clog_entry *e)
{
	(void)e;
	return ++*(int *)arg == 2 ? 7 : 0;
}

Test(changelog, callback_stops_the_walk)
{
	struct em_clog *c = em_clog_new(0, 10, 1000);
	for (int i = 1; i <= 5; i++)
		em_clog_append(c, (uint64_t)i, EM_BH_DELETE, "a/service/x", NULL);
	int calls = 0;
	cr_assert_eq(em_clog_since(c, 0, stop_at_two, &calls), 7);
	cr_assert_eq(calls, 2);
	em_clog_free(c);
}

Test(changelog, reset_forgets_and_moves_on)
{
	struct em_clog *c = em_clog_new(0, 10, 1000);
	em_clog_append(c, 1, EM_BH_DELETE, "a/service/x", NULL);
	em_clog_append(c, 2, EM_BH_DELETE, "a/service/y", NULL);
	em_clog_reset(c, 2);
	since(c, 1, -ERANGE);
	cr_assert_eq(since(c, 2, 0).n, 0);
	em_clog_append(c, 3, EM_BH_DELETE, "a/service/z", NULL);
	cr_assert_eq(since(c, 2, 0).n, 1);
	em_clog_free(c);
}

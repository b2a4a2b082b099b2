/* QPS buckets on a fake clock, the annotations' parsing, and buckets across
 * table builds. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "proto/clock.h"
#include "store/k8s.h"
#include "store/qps.h"
#include "store/table.h"

#define SEC 1000000000ull
#define T0  (1000 * SEC) /* a fake clock well past 0 */

static struct em_qps *bucket(double rate, double burst)
{
	struct em_qps *q = aligned_alloc(64, sizeof(*q));
	cr_assert_not_null(q);
	memset(q, 0, sizeof(*q));
	em_qps_set(q, rate, burst, T0);
	return q;
}

/* Takes at every <step_ns> from <from> for <n> steps: how many passed. */
static unsigned run(struct em_qps *q, uint64_t from, uint64_t step_ns, unsigned n)
{
	unsigned ok = 0;
	for (unsigned i = 0; i < n; i++)
		ok += em_qps_take(q, from + i * step_ns, NULL);
	return ok;
}

Test(qps, burst_then_exact_rate)
{
	struct em_qps *q = bucket(10, 3);
	/* A full bucket: 3 at once, then none. */
	cr_assert_eq(run(q, T0, 0, 10), 3);
	cr_assert_eq(q->allowed, 3);
	cr_assert_eq(q->rejected, 7);
	/* One token per 100 ms from there. */
	cr_assert(!em_qps_take(q, T0 + 99 * SEC / 1000, NULL));
	cr_assert(em_qps_take(q, T0 + 100 * SEC / 1000, NULL));
	cr_assert(!em_qps_take(q, T0 + 100 * SEC / 1000, NULL));
	free(q);
}

Test(qps, exact_count_under_flood)
{
	/* 1000 takes a second against 100/s over 10 s: 100 * 10 plus the burst. */
	struct em_qps *q = bucket(100, 10);
	unsigned ok = run(q, T0, SEC / 1000, 10000);
	cr_assert_eq(ok, 10 + 999, "allowed %u", ok);
	cr_assert_eq(q->allowed + q->rejected, 10000);
	free(q);
}

Test(qps, under_the_limit_all_pass)
{
	struct em_qps *q = bucket(50, 1);
	cr_assert_eq(run(q, T0, SEC / 50, 500), 500);
	cr_assert_eq(q->rejected, 0);
	free(q);
}

Test(qps, fractional_rate)
{
	/* 0.5/s with a bucket of 1: one every 2 s. */
	struct em_qps *q = bucket(0.5, 1);
	cr_assert_eq(run(q, T0, SEC / 10, 200), 10); /* 20 s */
	uint64_t retry = 0;
	cr_assert(em_qps_take(q, T0 + 20 * SEC, NULL));
	cr_assert(!em_qps_take(q, T0 + 20 * SEC + SEC / 2, &retry));
	cr_assert_eq(retry, 3 * SEC / 2);
	free(q);

	/* 2.5/s: 25 in 10 s (the first at once). */
	q = bucket(2.5, 1);
	cr_assert_eq(run(q, T0, SEC / 1000, 10000), 25);
	free(q);
}

Test(qps, retry_is_time_to_next_token)
{
	struct em_qps *q = bucket(4, 1);
	uint64_t retry = 0;
	cr_assert(em_qps_take(q, T0, &retry));
	cr_assert(!em_qps_take(q, T0 + SEC / 8, &retry));
	cr_assert_eq(retry, SEC / 8);
	cr_assert(em_qps_take(q, T0 + SEC / 4, NULL));
	free(q);
}

Test(qps, rate_change_applies_at_once)
{
	struct em_qps *q = bucket(1, 1);
	cr_assert(em_qps_take(q, T0, NULL));
	cr_assert(!em_qps_take(q, T0 + SEC / 2, NULL));
	/* A bucket of 1/s half refilled becomes one of 100/s (burst 10) half
	 * full: 5 at once, then one every 10 ms, not one at T0 + 1 s. */
	em_qps_set(q, 100, 10, T0 + SEC / 2);
	cr_assert_eq(run(q, T0 + SEC / 2, 0, 10), 5);
	cr_assert(em_qps_take(q, T0 + SEC / 2 + SEC / 100, NULL));
	/* Over a further second: 100 pass. */
	cr_assert_eq(run(q, T0 + SEC / 2 + 2 * SEC / 100, SEC / 1000, 1000), 100);
	/* Down to 1/s: a full bucket of 100/s maps to a full one of 1/s. */
	em_qps_set(q, 1, 1, T0 + 100 * SEC);
	cr_assert_eq(run(q, T0 + 100 * SEC, SEC / 100, 100), 1);
	cr_assert_eq(q->rate, 1);
	free(q);
}

Test(qps, high_rate)
{
	struct em_qps *q = bucket(10000, 1000);
	cr_assert_eq(run(q, T0, SEC / 100000, 500000), 1000 + 49999); /* 5 s at 10x */
	free(q);
}

Test(qps, default_burst)
{
	cr_assert_eq(em_qps_default_burst(1), 1);
	cr_assert_eq(em_qps_default_burst(5), 1);
	cr_assert_eq(em_qps_default_burst(100), 10);
	cr_assert_eq(em_qps_default_burst(10000), 1000);
}

Test(qps, parse)
{
	double v = 0;
	cr_assert_eq(em_qps_parse("10", 1e9, &v), 0);
	cr_assert_eq(v, 10);
	cr_assert_eq(em_qps_parse("0.5", 1e9, &v), 0);
	cr_assert_eq(v, 0.5);
	cr_assert_eq(em_qps_parse("1000000000", 1e9, &v), 0);
	const char *bad[] = {"",   "0",  "0.0",        "-1",   "1e3", "abc", "1.", ".5",
	                     " 1", "1 ", "1000000001", "0x10", "nan", "inf", "1,5"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(em_qps_parse(bad[i], 1e9, &v), -EINVAL, "accepted \"%s\"", bad[i]);
}

static struct em_k8s_object *service(const char *ann, const char *ports)
{
	char buf[2048];
	struct em_k8s_object *o = NULL;
	char err[256];
	snprintf(buf, sizeof(buf),
	         "{\"kind\":\"Service\",\"metadata\":{\"name\":\"web\",\"namespace\":\"default\""
	         "%s%s%s},\"spec\":{\"clusterIP\":\"10.96.0.10\",\"ports\":%s}}",
	         ann ? ",\"annotations\":{" : "", ann ? ann : "", ann ? "}" : "",
	         ports ? ports : "[{\"port\":80}]");
	cr_assert_eq(em_k8s_decode(buf, strlen(buf), -1, &o, err, sizeof(err)), 0, "%s", err);
	return o;
}

Test(qps, annotations_decoded)
{
	struct em_k8s_object *o =
	        service("\"edgemesh.io/qps\":\"2.5\",\"edgemesh.io/qps-burst\":\"4\"", NULL);
	cr_assert_eq(o->svc.qps, 2.5);
	cr_assert_eq(o->svc.qps_burst, 4);
	cr_assert_null(o->svc.qps_warn);
	em_k8s_free(o);

	o = service(NULL, NULL);
	cr_assert_eq(o->svc.qps, 0);
	cr_assert_null(o->svc.qps_warn);
	em_k8s_free(o);
}

Test(qps, bad_annotation_ignored_with_reason)
{
	struct em_k8s_object *o = service("\"edgemesh.io/qps\":\"fast\"", NULL);
	cr_assert_eq(o->svc.qps, 0);
	cr_assert_not_null(o->svc.qps_warn);
	cr_assert(strstr(o->svc.qps_warn, "edgemesh.io/qps"));
	cr_assert(strstr(o->svc.qps_warn, "\"fast\""));
	cr_assert(strstr(o->svc.qps_warn, "expected a positive number"));
	em_k8s_free(o);

	o = service("\"edgemesh.io/qps\":\"10\",\"edgemesh.io/qps-burst\":\"0.5\"", NULL);
	cr_assert_eq(o->svc.qps, 10);
	cr_assert_eq(o->svc.qps_burst, 0);
	cr_assert(strstr(o->svc.qps_warn, "edgemesh.io/qps-burst"));
	em_k8s_free(o);

	o = service("\"edgemesh.io/qps\":7", NULL);
	cr_assert_eq(o->svc.qps, 0);
	cr_assert(strstr(o->svc.qps_warn, "a non-string"));
	em_k8s_free(o);
}

static struct em_table *build(struct em_k8s_object *o)
{
	const struct em_k8s_object *objs[] = {o};
	struct em_table_input in = {.objs = objs, .n_objs = 1, .local_node = "n1"};
	struct em_table *t = em_table_build(&in, 1);
	cr_assert_not_null(t);
	return t;
}

static void count(void *ctx, const struct em_qps *q)
{
	(void)q;
	++*(unsigned *)ctx;
}

Test(qps, table_ports_and_bucket_across_builds)
{
	struct em_k8s_object *o =
	        service("\"edgemesh.io/qps\":\"100\"",
	                "[{\"name\":\"http-api\",\"port\":80},{\"name\":\"db\",\"port\":5432},"
	                "{\"name\":\"web\",\"port\":81,\"appProtocol\":\"http\"},"
	                "{\"name\":\"http\",\"port\":82,\"appProtocol\":\"tcp\"},"
	                "{\"name\":\"grpc\",\"port\":83}]");
	em_table_init();
	struct em_table *t1 = build(o);
	const struct em_service *svc = em_table_service(t1, "default", "web");
	cr_assert_not_null(svc);
	cr_assert_eq(svc->qps_rate, 100);
	cr_assert_eq(svc->qps_burst, 10);
	cr_assert_not_null(svc->qps);
	bool http[] = {true, false, true, false, true};
	for (uint32_t i = 0; i < svc->n_ports; i++) {
		cr_assert_eq(svc->ports[i].http, http[i], "port %u", svc->ports[i].port);
		cr_assert_eq(svc->ports[i].qps, svc->qps);
		cr_assert_eq(em_table_port_by_key(t1, svc->ports[i].key), &svc->ports[i]);
	}
	cr_assert_null(em_table_port_by_key(t1, 12345));
	struct em_qps *q = svc->qps;
	em_table_publish(t1);
	unsigned n = 0;
	em_qps_each(count, &n);
	cr_assert_eq(n, 1);
	cr_assert(em_qps_take(q, em_now_ns(), NULL));

	/* A rebuild keeps the bucket and its counts; a new rate is set in it. */
	em_k8s_free(o);
	o = service("\"edgemesh.io/qps\":\"5\"", NULL);
	struct em_table *t2 = build(o);
	svc = em_table_service(t2, "default", "web");
	cr_assert_eq(svc->qps, q);
	cr_assert_eq(q->rate, 5);
	cr_assert_eq(q->burst, 1);
	cr_assert_eq(q->allowed, 1);
	em_table_publish(t2);

	/* The limit removed: no bucket, and the registry lets it go. */
	em_k8s_free(o);
	o = service(NULL, NULL);
	struct em_table *t3 = build(o);
	svc = em_table_service(t3, "default", "web");
	cr_assert_null(svc->qps);
	cr_assert_null(svc->ports[0].qps);
	em_table_publish(t3);
	n = 0;
	em_qps_each(count, &n);
	cr_assert_eq(n, 0);
	em_k8s_free(o);
	em_table_shutdown();
}

/* Per Service port counters: slots across builds, sweep and reuse with a
 * baseline, sums over workers, and their Prometheus text. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto/clock.h"
#include "proto/em.h"
#include "store/admin.h"
#include "store/svcstat.h"

static void fini(void)
{
	em_svcstat_clear();
	em_svcstat_set_reuse_ms(0);
}

TestSuite(svcstat, .fini = fini);

/* The index of the port labelled <labels> in <v>; fails the test when none. */
static size_t find(const struct em_svcstat_view *v, const char *labels)
{
	for (size_t i = 0; i < v->n; i++)
		if (strcmp(v->labels[i], labels) == 0)
			return i;
	cr_assert_fail("no port %s among %zu", labels, v->n);
	return 0;
}

Test(svcstat, buckets_and_classes)
{
	cr_assert_eq(em_svcstat_bucket(0), 0);
	cr_assert_eq(em_svcstat_bucket(500000), 0); /* le is inclusive */
	cr_assert_eq(em_svcstat_bucket(500001), 1);
	cr_assert_eq(em_svcstat_bucket(3000000), 3);
	cr_assert_eq(em_svcstat_bucket(10000000000ull), 13);
	cr_assert_eq(em_svcstat_bucket(10000000001ull), EM_SVCSTAT_LAT_BOUNDS);
	struct em_svcstat s = {0};
	em_svcstat_status(&s, 200);
	em_svcstat_status(&s, 204);
	em_svcstat_status(&s, 101);
	em_svcstat_status(&s, 429);
	em_svcstat_status(&s, 503);
	em_svcstat_status(&s, 0);
	em_svcstat_status(&s, 600);
	cr_assert_eq(s.responses[0], 1);
	cr_assert_eq(s.responses[1], 2);
	cr_assert_eq(s.responses[2], 0);
	cr_assert_eq(s.responses[3], 1);
	cr_assert_eq(s.responses[4], 1);
	em_svcstat_observe(&s, 700000);
	em_svcstat_observe(&s, 20000000000ull);
	cr_assert_eq(s.lat[1], 1);
	cr_assert_eq(s.lat[EM_SVCSTAT_LAT_BOUNDS], 1);
	cr_assert_eq(s.lat_sum_ns, 20000700000ull);
}

Test(svcstat, slots_sum_over_workers)
{
	cr_assert_eq(em_svcstat_workers(3), 0);
	uint32_t a = em_svcstat_get(11, "default", "web", 80, 1);
	uint32_t b = em_svcstat_get(12, "default", "web", 8080, 1);
	cr_assert_neq(a, EM_SVCSTAT_SINK);
	cr_assert_neq(b, EM_SVCSTAT_SINK);
	cr_assert_neq(a, b);
	/* The next build finds the same slots. */
	cr_assert_eq(em_svcstat_get(11, "default", "web", 80, 2), a);
	cr_assert_eq(em_svcstat_get(12, "default", "web", 8080, 2), b);
	cr_assert_eq(em_svcstat_count(), 2);
	for (unsigned w = 0; w < 3; w++) {
		struct em_svcstat *s = em_svcstat_at(em_svcstat_set(w), a);
		em_svcstat_add(&s->connections, w + 1);
		em_svcstat_add(&s->rx_bytes, 100);
		/* The sink counts and is never shown. */
		em_svcstat_add(&em_svcstat_at(em_svcstat_set(w), EM_SVCSTAT_SINK)->connections, 1);
	}
	struct em_svcstat_view v;
	cr_assert_eq(em_svcstat_view(&v), 0);
	/* <b> had no traffic: there too, with zero counts. */
	cr_assert_eq(v.n, 2);
	size_t ia =
	        strcmp(v.labels[0], "namespace=\"default\",service=\"web\",port=\"80\"") ? 1 : 0;
	cr_assert_str_eq(v.labels[ia], "namespace=\"default\",service=\"web\",port=\"80\"");
	cr_assert_str_eq(v.labels[1 - ia], "namespace=\"default\",service=\"web\",port=\"8080\"");
	cr_assert_eq(v.labels_bytes, v.labels_len[0] + v.labels_len[1]);
	cr_assert_eq(v.sum[ia].connections, 6);
	cr_assert_eq(v.sum[ia].rx_bytes, 300);
	static const struct em_svcstat zero;
	cr_assert_eq(memcmp(&v.sum[1 - ia], &zero, sizeof(zero)), 0);
	em_svcstat_add(&em_svcstat_at(em_svcstat_set(2), b)->qps_rejected, 1);
	cr_assert_eq(em_svcstat_view(&v), 0);
	cr_assert_eq(v.n, 2);
	cr_assert_eq(v.sum[1 - ia].qps_rejected, 1);
}

Test(svcstat, sweep_then_reuse_with_baseline)
{
	cr_assert_eq(em_svcstat_workers(2), 0);
	em_svcstat_set_reuse_ms(50);
	uint32_t a = em_svcstat_get(21, "ns", "gone", 80, 1);
	em_svcstat_add(&em_svcstat_at(em_svcstat_set(0), a)->connections, 5);
	em_svcstat_add(&em_svcstat_at(em_svcstat_set(1), a)->requests, 7);
	/* Build 2 no longer has it: dropped, its series gone. */
	em_svcstat_sweep(2, em_now_ms());
	cr_assert_eq(em_svcstat_count(), 0);
	struct em_svcstat_view v;
	cr_assert_eq(em_svcstat_view(&v), 0);
	cr_assert_eq(v.n, 0);
	/* Too soon for reuse: a new slot. */
	uint32_t b = em_svcstat_get(22, "ns", "new", 80, 3);
	cr_assert_neq(b, a);
	usleep(60000);
	/* Late counts of a connection of the dropped port. */
	em_svcstat_add(&em_svcstat_at(em_svcstat_set(0), a)->connections, 1);
	uint32_t c = em_svcstat_get(23, "ns", "newer", 80, 3);
	cr_assert_eq(c, a);
	/* Its counts start at zero whatever the slot held. */
	static const struct em_svcstat zero;
	cr_assert_eq(em_svcstat_view(&v), 0);
	cr_assert_eq(v.n, 2);
	const char *lc = "namespace=\"ns\",service=\"newer\",port=\"80\"";
	cr_assert_eq(memcmp(&v.sum[find(&v, lc)], &zero, sizeof(zero)), 0);
	em_svcstat_add(&em_svcstat_at(em_svcstat_set(1), c)->connections, 2);
	cr_assert_eq(em_svcstat_view(&v), 0);
	cr_assert_eq(v.n, 2);
	cr_assert_eq(v.sum[find(&v, lc)].connections, 2);
	cr_assert_eq(v.sum[find(&v, lc)].requests, 0);
}

Test(svcstat, labels_escaped)
{
	cr_assert_eq(em_svcstat_workers(1), 0);
	uint32_t a = em_svcstat_get(31, "a\"b", "c\\d\ne", 1, 1);
	em_svcstat_add(&em_svcstat_at(em_svcstat_set(0), a)->connections, 1);
	struct em_svcstat_view v;
	cr_assert_eq(em_svcstat_view(&v), 0);
	cr_assert_eq(v.n, 1);
	cr_assert_str_eq(v.labels[0], "namespace=\"a\\\"b\",service=\"c\\\\d\\ne\",port=\"1\"");
}

Test(svcstat, many_slots_cross_chunks)
{
	cr_assert_eq(em_svcstat_workers(2), 0);
	uint32_t last = 0;
	for (uint32_t i = 0; i < 3 * EM_SVCSTAT_CHUNK; i++) {
		char name[32];
		snprintf(name, sizeof(name), "s%u", i);
		last = em_svcstat_get(1000 + i, "default", name, 80, 1);
		cr_assert_neq(last, EM_SVCSTAT_SINK);
	}
	cr_assert_geq(last, 2 * EM_SVCSTAT_CHUNK);
	em_svcstat_add(&em_svcstat_at(em_svcstat_set(1), last)->tx_bytes, 9);
	em_svcstat_add(&em_svcstat_at(em_svcstat_set(1), last)->connections, 1);
	struct em_svcstat_view v;
	cr_assert_eq(em_svcstat_view(&v), 0);
	cr_assert_eq(v.n, 3 * EM_SVCSTAT_CHUNK);
	char want[64];
	/* In slot order: here, the order the ports came in. */
	for (uint32_t i = 0; i < v.n; i += 517) {
		snprintf(want, sizeof(want), "namespace=\"default\",service=\"s%u\",port=\"80\"", i);
		cr_assert_str_eq(v.labels[i], want);
	}
	snprintf(want, sizeof(want), "namespace=\"default\",service=\"s%u\",port=\"80\"",
	         3 * EM_SVCSTAT_CHUNK - 1);
	cr_assert_eq(v.sum[find(&v, want)].tx_bytes, 9);
	/* Sets made later cover the slots given before. */
	cr_assert_eq(em_svcstat_workers(4), 0);
	em_svcstat_add(&em_svcstat_at(em_svcstat_set(3), last)->connections, 1);
	cr_assert_eq(em_svcstat_view(&v), 0);
	cr_assert_eq(v.sum[find(&v, want)].connections, 1);
	cr_assert_eq(v.sum[find(&v, want)].tx_bytes, 0);
}

Test(svcstat, prometheus_text)
{
	cr_assert_eq(em_svcstat_workers(2), 0);
	uint32_t a = em_svcstat_get(41, "default", "web", 80, 1);
	struct em_svcstat *s0 = em_svcstat_at(em_svcstat_set(0), a);
	struct em_svcstat *s1 = em_svcstat_at(em_svcstat_set(1), a);
	em_svcstat_add(&s0->connections, 1);
	em_svcstat_add(&s0->requests, 2);
	em_svcstat_add(&s1->requests, 1);
	em_svcstat_status(s0, 200);
	em_svcstat_status(s1, 200);
	em_svcstat_status(s1, 503);
	em_svcstat_add(&s1->qps_rejected, 4);
	em_svcstat_observe(s0, 2000000);  /* 2 ms */
	em_svcstat_observe(s1, 30000000); /* 30 ms */
	struct em_buf b = {0};
	cr_assert_eq(em_admin_metrics_services(&b), 0);
	const char *l = "{namespace=\"default\",service=\"web\",port=\"80\"";
	char want[256];
#define HAS(fmt, ...)                                                                              \
	do {                                                                                       \
		snprintf(want, sizeof(want), fmt, __VA_ARGS__);                                    \
		cr_assert_not_null(strstr(b.data, want), "missing %s in\n%s", want, b.data);       \
	} while (0)
	HAS("# TYPE edgemesh_service_requests_total counter\nedgemesh_service_requests_total%s} 3\n", l);
	HAS("edgemesh_service_connections_total%s} 1\n", l);
	HAS("edgemesh_service_qps_rejected_total%s} 4\n", l);
	HAS("edgemesh_service_responses_total%s,code=\"2xx\"} 2\n", l);
	HAS("edgemesh_service_responses_total%s,code=\"5xx\"} 1\n", l);
	cr_assert_null(strstr(b.data, "code=\"4xx\""));
	HAS("# TYPE edgemesh_service_upstream_latency_seconds histogram\n%s", "");
	HAS("edgemesh_service_upstream_latency_seconds_bucket%s,le=\"0.001\"} 0\n", l);
	HAS("edgemesh_service_upstream_latency_seconds_bucket%s,le=\"0.0025\"} 1\n", l);
	HAS("edgemesh_service_upstream_latency_seconds_bucket%s,le=\"0.05\"} 2\n", l);
	HAS("edgemesh_service_upstream_latency_seconds_bucket%s,le=\"+Inf\"} 2\n", l);
	HAS("edgemesh_service_upstream_latency_seconds_sum%s} 0.032\n", l);
	HAS("edgemesh_service_upstream_latency_seconds_count%s} 2\n", l);
	em_buf_free(&b);
}

/* A port that never had traffic is listed from the moment its Service is
 * in the table: every counter at 0, the histogram with every bucket, its
 * sum and count at 0, and no response class. */
Test(svcstat, zero_traffic_ports_listed)
{
	cr_assert_eq(em_svcstat_workers(2), 0);
	em_svcstat_get(51, "default", "idle", 80, 1);
	uint32_t busy = em_svcstat_get(52, "default", "busy", 8080, 1);
	em_svcstat_observe(em_svcstat_at(em_svcstat_set(1), busy), 1000000001ull);
	struct em_buf b = {0};
	cr_assert_eq(em_admin_metrics_services(&b), 0);
	cr_assert_not_null(b.data, "nothing rendered");
	const char *l = "{namespace=\"default\",service=\"idle\",port=\"80\"";
	char want[256];
	static const char *const fams[] = {
	        "connections_total",
	        "requests_total",
	        "received_bytes_total",
	        "sent_bytes_total",
	        "upstream_connect_failures_total",
	        "qps_rejected_total",
	        "upstream_latency_seconds_sum",
	        "upstream_latency_seconds_count",
	};
	for (size_t i = 0; i < EM_ARRAY_SIZE(fams); i++)
		HAS("\nedgemesh_service_%s%s} 0\n", fams[i], l);
	for (int k = 0; k < EM_SVCSTAT_LAT_BOUNDS; k++)
		HAS("\nedgemesh_service_upstream_latency_seconds_bucket%s,le=\"%s\"} 0\n", l,
		    em_svcstat_lat_le[k]);
	HAS("\nedgemesh_service_upstream_latency_seconds_bucket%s,le=\"+Inf\"} 0\n", l);
	cr_assert_null(strstr(b.data, "service=\"idle\",port=\"80\",code="));
	/* The other port's sum is exact seconds. */
	HAS("\nedgemesh_service_upstream_latency_seconds_sum{namespace=\"default\",service="
	    "\"busy\",port=\"8080\"} 1.000000001\n%s", "");
	/* 2 ports x (6 counters + 15 buckets + sum + count), 8 HELP and 8 TYPE. */
	size_t lines = 0;
	for (const char *c = b.data; *c; c++)
		lines += *c == '\n';
	cr_assert_eq(lines, 2 * 23 + 16, "%zu lines:\n%s", lines, b.data);
	/* A second scrape into the same buffer (emptied) fits without growing. */
	size_t cap = b.cap, len = b.len;
	b.len = 0;
	cr_assert_eq(em_admin_metrics_services(&b), 0);
	cr_assert_eq(b.cap, cap);
	cr_assert_eq(b.len, len);
	em_buf_free(&b);
}

/* Not a timing assertion: prints what a scrape of 10,000 ports that all
 * had traffic costs here (bench/RESULTS.md). */
Test(svcstat, scrape_10000_ports)
{
	cr_assert_eq(em_svcstat_workers(2), 0);
	for (uint32_t i = 0; i < 10000; i++) {
		char name[32];
		snprintf(name, sizeof(name), "service-%05u", i);
		uint32_t s = em_svcstat_get(5000 + i, "default", name, 80, 1);
		for (unsigned w = 0; w < 2; w++) {
			struct em_svcstat *c = em_svcstat_at(em_svcstat_set(w), s);
			em_svcstat_add(&c->connections, 1000 + i);
			em_svcstat_add(&c->requests, 100000 + i);
			em_svcstat_add(&c->rx_bytes, 123456789);
			em_svcstat_status(c, 200);
			em_svcstat_observe(c, 1234567);
		}
	}
	struct em_buf b = {0};
	uint64_t t0 = em_now_ns();
	cr_assert_eq(em_admin_metrics_services(&b), 0);
	uint64_t t1 = em_now_ns();
	/* What a scrape costs with the buffer of the previous one (the admin
	 * listener keeps it). */
	b.len = 0;
	uint64_t t2 = em_now_ns();
	cr_assert_eq(em_admin_metrics_services(&b), 0);
	uint64_t t3 = em_now_ns();
	fprintf(stderr,
	        "svcstat: 10000 ports with traffic: %zu bytes of text in %.1f ms, %.1f ms into "
	        "the same buffer again\n",
	        b.len, (double)(t1 - t0) / 1e6, (double)(t3 - t2) / 1e6);
	em_buf_free(&b);
}

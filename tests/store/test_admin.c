/* Prometheus text of a stats reply (store/admin.c): the fast path's
 * families, on, off and absent, rendered from synthetic stats replies. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto/clock.h"
#include "proto/em.h"
#include "store/admin.h"

/* <json> rendered by em_admin_metrics into <b> (emptied first). */
static void render(const char *json, struct em_buf *b)
{
	cJSON *stats = cJSON_Parse(json);
	cr_assert_not_null(stats, "bad test JSON: %s", json);
	b->len = 0;
	cr_assert_eq(em_admin_metrics(stats, b), 0);
	cr_assert_not_null(b->data, "nothing rendered");
	cJSON_Delete(stats);
}

#define HAS(b, s)     cr_expect_not_null(strstr((b)->data, s), "missing %s in\n%s", s, (b)->data)
#define HAS_NOT(b, s) cr_expect_null(strstr((b)->data, s), "%s in\n%s", s, (b)->data)

/* Lines of <b> that start with <prefix>. */
static size_t lines_with(const struct em_buf *b, const char *prefix)
{
	size_t n = 0, pl = strlen(prefix);
	for (const char *l = b->data; l && *l;) {
		n += strncmp(l, prefix, pl) == 0;
		l = strchr(l, '\n');
		l = l ? l + 1 : NULL;
	}
	return n;
}

/* promtool check metrics on <b> when the Makefile fetched it into the
 * build tree (make build/tools/promtool); skipped otherwise. */
static void promtool_check(const struct em_buf *b)
{
	static const char tool[] = EM_BINARY_DIR "/tools/promtool";
	if (access(tool, X_OK) != 0)
		return;
	char path[] = "/tmp/em-test-admin-XXXXXX";
	int fd = mkstemp(path);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, b->data, b->len), (ssize_t)b->len);
	close(fd);
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "'%s' check metrics <'%s' >'%s.out' 2>&1", tool, path, path);
	int rc = system(cmd);
	char out[1024] = "";
	snprintf(cmd, sizeof(cmd), "%s.out", path);
	FILE *f = fopen(cmd, "r");
	if (f) {
		size_t n = fread(out, 1, sizeof(out) - 1, f);
		out[n] = 0;
		fclose(f);
	}
	unlink(cmd);
	unlink(path);
	cr_expect_eq(rc, 0, "promtool check metrics: %s", out);
}

static const char on_stats[] =
        "{\"generation\": 4, \"services\": 3,"
        " \"engine\": {\"connections_accepted\": 9, \"fastpath_handoffs_taken\": 7},"
        " \"fastpath\": {\"state\": \"on\", \"cgroup\": \"/sys/fs/cgroup/unified\","
        "  \"ports\": 3, \"publishes\": 12, \"publish_us\": 1500, \"write_failures\": 2,"
        "  \"connections\": 1000042, \"handoffs\": 7,"
        "  \"services\": ["
        "   {\"service\": \"default/db\", \"cluster_ip\": \"10.96.0.10\", \"port\": 5432,"
        "    \"endpoints\": 3, \"policy\": \"round_robin\", \"connections\": 1000000,"
        "    \"handoffs\": 5},"
        "   {\"service\": \"default/db\", \"cluster_ip\": \"fd00::10\", \"port\": 5432,"
        "    \"endpoints\": 3, \"policy\": \"round_robin\", \"connections\": 42,"
        "    \"handoffs\": 2},"
        "   {\"service\": \"odd\\\"ns/we\\\\b\\nx\", \"cluster_ip\": \"10.96.0.11\","
        "    \"port\": 7, \"endpoints\": 0, \"policy\": \"client_ip\", \"connections\": 0,"
        "    \"handoffs\": 0}]}}";

Test(admin, fastpath_on)
{
	struct em_buf b = {0};
	render(on_stats, &b);
	HAS(&b, "# TYPE edgemesh_fastpath_up gauge\nedgemesh_fastpath_up 1\n");
	HAS(&b, "# TYPE edgemesh_fastpath_ports gauge\nedgemesh_fastpath_ports 3\n");
	HAS(&b, "# TYPE edgemesh_fastpath_publishes_total counter\n"
	        "edgemesh_fastpath_publishes_total 12\n");
	HAS(&b, "# TYPE edgemesh_fastpath_publish_seconds gauge\n"
	        "edgemesh_fastpath_publish_seconds 0.0015\n");
	HAS(&b, "# TYPE edgemesh_fastpath_write_failures_total counter\n"
	        "edgemesh_fastpath_write_failures_total 2\n");
	/* Per cluster IP and port, in the order of the reply. */
	HAS(&b, "# TYPE edgemesh_fastpath_connections_total counter\n"
	        "edgemesh_fastpath_connections_total{namespace=\"default\",service=\"db\","
	        "cluster_ip=\"10.96.0.10\",port=\"5432\"} 1000000\n"
	        "edgemesh_fastpath_connections_total{namespace=\"default\",service=\"db\","
	        "cluster_ip=\"fd00::10\",port=\"5432\"} 42\n");
	HAS(&b, "# TYPE edgemesh_fastpath_handoffs_total counter\n"
	        "edgemesh_fastpath_handoffs_total{namespace=\"default\",service=\"db\","
	        "cluster_ip=\"10.96.0.10\",port=\"5432\"} 5\n");
	HAS(&b, "# TYPE edgemesh_fastpath_endpoints gauge\n"
	        "edgemesh_fastpath_endpoints{namespace=\"default\",service=\"db\","
	        "cluster_ip=\"10.96.0.10\",port=\"5432\"} 3\n");
	/* Label values escaped; a port without connects listed with 0. */
	HAS(&b, "edgemesh_fastpath_handoffs_total{namespace=\"odd\\\"ns\",service=\"we\\\\b\\nx\","
	        "cluster_ip=\"10.96.0.11\",port=\"7\"} 0\n");
	cr_expect_eq(lines_with(&b, "edgemesh_fastpath_connections_total{"), 3);
	cr_expect_eq(lines_with(&b, "edgemesh_fastpath_handoffs_total{"), 3);
	cr_expect_eq(lines_with(&b, "edgemesh_fastpath_endpoints{"), 3);
	/* The engine's counter of kernel picks it took. */
	HAS(&b, "\nedgemesh_engine_fastpath_handoffs_taken_total 7\n");
	/* Neither the free text nor the sums over ports, nor the object as a
	 * counter group. */
	HAS_NOT(&b, "cgroup");
	HAS_NOT(&b, "policy");
	HAS_NOT(&b, "1000042");
	HAS_NOT(&b, "edgemesh_fastpath_state");
	promtool_check(&b);
	/* A second scrape into the same buffer (emptied) fits without growing. */
	size_t cap = b.cap, len = b.len;
	render(on_stats, &b);
	cr_expect_eq(b.cap, cap);
	cr_expect_eq(b.len, len);
	em_buf_free(&b);
}

/* Off (as the integration tests run it: EDGEMESH_FASTPATH=off): the levels
 * at 0, no per port family, the reason not a label. */
Test(admin, fastpath_off)
{
	struct em_buf b = {0};
	render("{\"engine\": {\"fastpath_handoffs_taken\": 0},"
	       " \"fastpath\": {\"state\": \"off\", \"reason\": \"off by EDGEMESH_FASTPATH\","
	       "  \"cgroup\": \"/sys/fs/cgroup/unified\", \"ports\": 0, \"publishes\": 0,"
	       "  \"publish_us\": 0, \"write_failures\": 0, \"connections\": 0,"
	       "  \"handoffs\": 0, \"services\": []}}",
	       &b);
	HAS(&b, "\nedgemesh_fastpath_up 0\n");
	HAS(&b, "\nedgemesh_fastpath_ports 0\n");
	HAS(&b, "\nedgemesh_fastpath_publishes_total 0\n");
	HAS(&b, "\nedgemesh_fastpath_publish_seconds 0\n");
	HAS(&b, "\nedgemesh_fastpath_write_failures_total 0\n");
	HAS(&b, "\nedgemesh_engine_fastpath_handoffs_taken_total 0\n");
	HAS_NOT(&b, "edgemesh_fastpath_connections_total");
	HAS_NOT(&b, "edgemesh_fastpath_handoffs_total");
	HAS_NOT(&b, "edgemesh_fastpath_endpoints");
	HAS_NOT(&b, "EDGEMESH_FASTPATH");
	promtool_check(&b);
	/* Not started (no members but state and reason): off, levels at 0. */
	render("{\"fastpath\": {\"state\": \"off\", \"reason\": \"not started\"}}", &b);
	HAS(&b, "\nedgemesh_fastpath_up 0\n");
	HAS(&b, "\nedgemesh_fastpath_ports 0\n");
	HAS_NOT(&b, "edgemesh_fastpath_connections_total");
	/* A "services" array without an object in it: no per port family. */
	render("{\"fastpath\": {\"state\": \"on\", \"services\": [1, \"x\", null]}}", &b);
	HAS(&b, "\nedgemesh_fastpath_up 1\n");
	HAS_NOT(&b, "edgemesh_fastpath_connections_total");
	em_buf_free(&b);
}

/* A reply without the object (no engine behind the store): no family. */
Test(admin, fastpath_absent)
{
	struct em_buf b = {0};
	render("{\"generation\": 1, \"engine\": {\"connections_accepted\": 1}}", &b);
	HAS(&b, "\nedgemesh_table_generation 1\n");
	HAS_NOT(&b, "edgemesh_fastpath_");
	em_buf_free(&b);
}

/* Not a timing assertion: prints what rendering 10,000 fast path ports
 * from a stats reply costs here, and checks that every one is listed. */
Test(admin, fastpath_10000_ports)
{
	cJSON *stats = cJSON_CreateObject();
	cJSON *fp = cJSON_AddObjectToObject(stats, "fastpath");
	cJSON_AddStringToObject(fp, "state", "on");
	cJSON_AddNumberToObject(fp, "ports", 10000);
	cJSON *list = cJSON_AddArrayToObject(fp, "services");
	cr_assert_not_null(list);
	for (int i = 0; i < 10000; i++) {
		char name[64], ip[32];
		snprintf(name, sizeof(name), "ns-%d/service-%05d", i % 50, i);
		snprintf(ip, sizeof(ip), "10.96.%d.%d", i / 250, i % 250 + 1);
		cJSON *s = cJSON_CreateObject();
		cr_assert_not_null(s);
		cJSON_AddItemToArray(list, s);
		cJSON_AddStringToObject(s, "service", name);
		cJSON_AddStringToObject(s, "cluster_ip", ip);
		cJSON_AddNumberToObject(s, "port", 5432);
		cJSON_AddNumberToObject(s, "endpoints", 3);
		cJSON_AddStringToObject(s, "policy", "round_robin");
		cJSON_AddNumberToObject(s, "connections", 1000000 + i);
		cJSON_AddNumberToObject(s, "handoffs", i);
	}
	struct em_buf b = {0};
	uint64_t t0 = em_now_ns();
	cr_assert_eq(em_admin_metrics(stats, &b), 0);
	uint64_t t1 = em_now_ns();
	b.len = 0;
	uint64_t t2 = em_now_ns();
	cr_assert_eq(em_admin_metrics(stats, &b), 0);
	uint64_t t3 = em_now_ns();
	cr_expect_eq(lines_with(&b, "edgemesh_fastpath_connections_total{"), 10000);
	cr_expect_eq(lines_with(&b, "edgemesh_fastpath_handoffs_total{"), 10000);
	cr_expect_eq(lines_with(&b, "edgemesh_fastpath_endpoints{"), 10000);
	HAS(&b, "edgemesh_fastpath_connections_total{namespace=\"ns-49\",service=\"service-09999\","
	        "cluster_ip=\"10.96.39.250\",port=\"5432\"} 1009999\n");
	fprintf(stderr,
	        "admin: 10000 fast path ports: %zu bytes of text in %.1f ms, %.1f ms into the "
	        "same buffer again\n",
	        b.len, (double)(t1 - t0) / 1e6, (double)(t3 - t2) / 1e6);
	em_buf_free(&b);
	cJSON_Delete(stats);
}

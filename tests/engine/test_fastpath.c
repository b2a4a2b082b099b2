/* Fast path (engine/fastpath.c): which service ports qualify (HTTP ports,
 * QPS, the annotation, headless, UDP), the annotation's decoding, the
 * table's port walk, and, as root on a kernel that allows it, the start
 * against a child cgroup: maps that follow published tables (a port added,
 * changed, unchanged, removed), the refusals (no such directory, not a
 * cgroup v2 directory, mode "off", EDGEMESH_FASTPATH=off). */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/fastpath.h"
#include "proto/clock.h"
#include "store/admin.h"
#include "store/k8s.h"
#include "store/table.h"

#define CGROUP_ROOT "/sys/fs/cgroup/unified"

static struct em_k8s_object *decode(const char *json)
{
	struct em_k8s_object *o = NULL;
	char err[256] = "";
	cr_assert_eq(em_k8s_decode(json, strlen(json), -1, &o, err, sizeof(err)), 0, "%s", err);
	return o;
}

/* A Service "default/<name>" at <ip> with annotations <ann> (JSON members or
 * "") and ports <ports> (a JSON array). */
static struct em_k8s_object *service(const char *name, const char *ip, const char *ann,
                                     const char *ports)
{
	char buf[2048];
	snprintf(buf, sizeof(buf),
	         "{\"kind\":\"Service\",\"metadata\":{\"name\":\"%s\",\"namespace\":\"default\","
	         "\"annotations\":{%s}},\"spec\":{\"clusterIP\":\"%s\",\"ports\":%s}}",
	         name, ann, ip, ports);
	return decode(buf);
}

/* Endpoints of "default/<name>": ready addresses <ips> (JSON array of
 * address objects) on port <port>. */
static struct em_k8s_object *endpoints(const char *name, const char *addrs, int port)
{
	char buf[2048];
	snprintf(buf, sizeof(buf),
	         "{\"kind\":\"Endpoints\",\"metadata\":{\"name\":\"%s\",\"namespace\":\"default\"},"
	         "\"subsets\":[{\"addresses\":%s,\"ports\":[{\"port\":%d}]}]}",
	         name, addrs, port);
	return decode(buf);
}

static struct em_table *build(struct em_k8s_object **objs, size_t n, uint64_t gen)
{
	struct em_table_input in = {.objs = (const struct em_k8s_object *const *)objs,
	                            .n_objs = n,
	                            .local_node = "n1"};
	struct em_table *t = em_table_build(&in, gen);
	cr_assert_not_null(t);
	return t;
}

static const struct em_svc_port *port_of(const struct em_table *t, const char *name,
                                         uint16_t port)
{
	const struct em_service *svc = em_table_service(t, "default", name);
	cr_assert_not_null(svc, "service %s", name);
	const struct em_svc_port *sp = em_service_port(svc, port, IPPROTO_TCP);
	cr_assert_not_null(sp, "%s port %u", name, port);
	return sp;
}

Test(fastpath, which_ports_qualify)
{
	struct em_k8s_object *objs[] = {
	        service("tcp", "10.96.0.1", "", "[{\"port\":7},{\"name\":\"db\",\"port\":5432}]"),
	        service("mixed", "10.96.0.2", "", "[{\"port\":7},{\"name\":\"http-api\",\"port\":80}]"),
	        service("app", "10.96.0.3", "", "[{\"port\":7},{\"port\":81,\"appProtocol\":\"http\"}]"),
	        service("grpc", "10.96.0.4", "", "[{\"name\":\"grpc\",\"port\":9000}]"),
	        service("limited", "10.96.0.5", "\"edgemesh.io/qps\":\"10\"", "[{\"port\":7}]"),
	        service("offsvc", "10.96.0.6", "\"edgemesh.io/fastpath\":\"off\"", "[{\"port\":7}]"),
	        service("onsvc", "10.96.0.7", "\"edgemesh.io/fastpath\":\"on\"", "[{\"port\":7}]"),
	        service("headless", "None", "", "[{\"port\":7}]"),
	        service("udp", "10.96.0.9", "", "[{\"port\":53,\"protocol\":\"UDP\"},{\"port\":7}]"),
	};
	size_t n = sizeof(objs) / sizeof(objs[0]);
	em_table_init();
	struct em_table *t = build(objs, n, 1);

	cr_expect(em_fastpath_port_ok(port_of(t, "tcp", 7)));
	cr_expect(em_fastpath_port_ok(port_of(t, "tcp", 5432)));
	/* One HTTP port keeps the whole service on the engine. */
	cr_expect_not(em_fastpath_port_ok(port_of(t, "mixed", 7)));
	cr_expect_not(em_fastpath_port_ok(port_of(t, "mixed", 80)));
	cr_expect_not(em_fastpath_port_ok(port_of(t, "app", 7)));
	cr_expect_not(em_fastpath_port_ok(port_of(t, "grpc", 9000)));
	cr_expect_not(em_fastpath_port_ok(port_of(t, "limited", 7)));
	cr_expect_not(em_fastpath_port_ok(port_of(t, "offsvc", 7)));
	cr_expect(em_fastpath_port_ok(port_of(t, "onsvc", 7)));
	cr_expect_not(em_fastpath_port_ok(port_of(t, "headless", 7)));
	const struct em_service *udp = em_table_service(t, "default", "udp");
	cr_assert_not_null(udp);
	const struct em_svc_port *u53 = em_service_port(udp, 53, IPPROTO_UDP);
	cr_assert_not_null(u53);
	cr_expect_not(em_fastpath_port_ok(u53));
	cr_expect(em_fastpath_port_ok(port_of(t, "udp", 7)));

	/* The walk sees every port once. */
	size_t cursor = 0, count = 0;
	while (em_table_next_port(t, &cursor))
		count++;
	cr_expect_eq(count, 2 + 2 + 2 + 1 + 1 + 1 + 1 + 1 + 2, "walked %zu ports", count);

	em_table_free(t);
	for (size_t i = 0; i < n; i++)
		em_k8s_free(objs[i]);
}

Test(fastpath, annotation_values)
{
	struct em_k8s_object *o = service("a", "10.96.0.1", "\"edgemesh.io/fastpath\":\"off\"",
	                                  "[{\"port\":7}]");
	cr_expect(o->svc.fastpath_off);
	cr_expect_null(o->svc.qps_warn);
	em_k8s_free(o);

	o = service("a", "10.96.0.1", "\"edgemesh.io/fastpath\":\"on\"", "[{\"port\":7}]");
	cr_expect_not(o->svc.fastpath_off);
	cr_expect_null(o->svc.qps_warn);
	em_k8s_free(o);

	o = service("a", "10.96.0.1", "\"edgemesh.io/fastpath\":\"Off\"", "[{\"port\":7}]");
	cr_expect_not(o->svc.fastpath_off);
	cr_assert_not_null(o->svc.qps_warn);
	cr_expect(strstr(o->svc.qps_warn, "edgemesh.io/fastpath: expected \"on\" or \"off\""),
	          "%s", o->svc.qps_warn);
	em_k8s_free(o);

	o = service("a", "10.96.0.1", "\"edgemesh.io/fastpath\":false", "[{\"port\":7}]");
	cr_expect_not(o->svc.fastpath_off);
	cr_expect_not_null(o->svc.qps_warn);
	em_k8s_free(o);
}

static struct em_config *config(enum em_fastpath_mode mode, const char *cgroup)
{
	struct em_config *c = calloc(1, sizeof(*c));
	cr_assert_not_null(c);
	c->fastpath.mode = mode;
	snprintf(c->fastpath.cgroup, sizeof(c->fastpath.cgroup), "%s", cgroup);
	return c;
}

/* The "fastpath" object of a stats reply. */
static cJSON *stats(struct em_fastpath *fp)
{
	cJSON *root = cJSON_CreateObject();
	cr_assert_eq(em_fastpath_stats(fp, root), 0);
	return root;
}

static const char *str_of(cJSON *root, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(
	        cJSON_GetObjectItemCaseSensitive(root, "fastpath"), key);
	return cJSON_IsString(v) ? v->valuestring : "";
}

static double num_of(cJSON *root, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(
	        cJSON_GetObjectItemCaseSensitive(root, "fastpath"), key);
	cr_assert(cJSON_IsNumber(v), "no number %s", key);
	return v->valuedouble;
}

Test(fastpath, refusals_say_why)
{
	struct {
		enum em_fastpath_mode mode;
		const char *cgroup;
		const char *why;
	} cases[] = {
	        {EM_FASTPATH_OFF, CGROUP_ROOT, "off in the config (fastpath.mode)"},
	        {EM_FASTPATH_AUTO, "/nonexistent-em-cgroup", "/nonexistent-em-cgroup: No such file"},
	        {EM_FASTPATH_AUTO, "/tmp", "/tmp: not a cgroup v2 directory"},
	};
	unsetenv("EDGEMESH_FASTPATH");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct em_config *c = config(cases[i].mode, cases[i].cgroup);
		struct em_fastpath *fp = em_fastpath_start(c);
		cr_assert_not_null(fp);
		cr_expect_not(em_fastpath_on(fp));
		cJSON *s = stats(fp);
		cr_expect_str_eq(str_of(s, "state"), "off");
		cr_expect(strstr(str_of(s, "reason"), cases[i].why), "case %zu: reason \"%s\"", i,
		          str_of(s, "reason"));
		cJSON_Delete(s);
		em_fastpath_free(fp);
		free(c);
	}
	setenv("EDGEMESH_FASTPATH", "off", 1);
	struct em_config *c = config(EM_FASTPATH_AUTO, CGROUP_ROOT);
	struct em_fastpath *fp = em_fastpath_start(c);
	cJSON *s = stats(fp);
	cr_expect_str_eq(str_of(s, "reason"), "off by EDGEMESH_FASTPATH");
	cJSON_Delete(s);
	em_fastpath_free(fp);
	free(c);
	unsetenv("EDGEMESH_FASTPATH");
}

/* The cgroup this test attaches to: a child of the unified root, removed at
 * the end. Skips when there is none or no privilege. */
static char cg[256];

static void cg_fini(void)
{
	if (cg[0])
		rmdir(cg);
}

/* The fast path on in a child cgroup of this test (cg), its config in
 * <*cfg>; skips the test without root, a cgroup v2 hierarchy or a kernel
 * that takes the programs. */
static struct em_fastpath *fastpath_on(struct em_config **cfg)
{
	snprintf(cg, sizeof(cg), CGROUP_ROOT "/em-unit-%d", (int)getpid());
	if (geteuid() != 0 || mkdir(cg, 0755) != 0) {
		cg[0] = '\0';
		cr_skip_test("needs root and a cgroup v2 hierarchy at " CGROUP_ROOT);
	}
	unsetenv("EDGEMESH_FASTPATH");
	*cfg = config(EM_FASTPATH_AUTO, cg);
	struct em_fastpath *fp = em_fastpath_start(*cfg);
	cr_assert_not_null(fp);
	if (!em_fastpath_on(fp)) {
		cJSON *s = stats(fp);
		cr_log_warn("fast path off: %s", str_of(s, "reason"));
		cJSON_Delete(s);
		em_fastpath_free(fp);
		free(*cfg);
		cr_skip_test("the kernel refuses the programs here");
	}
	return fp;
}

Test(fastpath, maps_follow_tables, .fini = cg_fini)
{
	struct em_config *c;
	struct em_fastpath *fp = fastpath_on(&c);
	em_table_init();
	struct em_k8s_object *objs[] = {
	        service("db", "10.96.0.1", "", "[{\"port\":5432,\"targetPort\":5432}]"),
	        endpoints("db", "[{\"ip\":\"10.1.0.1\",\"nodeName\":\"n1\"},"
	                        "{\"ip\":\"10.1.0.2\",\"nodeName\":\"n2\"}]",
	                  5432),
	        service("web", "10.96.0.2", "", "[{\"name\":\"http\",\"port\":80}]"),
	        endpoints("web", "[{\"ip\":\"10.1.0.3\"}]", 80),
	        service("empty", "10.96.0.3", "", "[{\"port\":7}]"),
	};
	struct em_table *t1 = build(objs, 5, 1);
	em_fastpath_publish(fp, t1);
	cJSON *s = stats(fp);
	cr_expect_str_eq(str_of(s, "state"), "on");
	/* db only: web is HTTP, empty has no ready endpoint. */
	cr_expect_eq(num_of(s, "ports"), 1);
	cr_expect_eq(num_of(s, "publishes"), 1);
	cr_expect_eq(num_of(s, "write_failures"), 0);
	const cJSON *list = cJSON_GetObjectItemCaseSensitive(
	        cJSON_GetObjectItemCaseSensitive(s, "fastpath"), "services");
	cr_assert_eq(cJSON_GetArraySize(list), 1);
	const cJSON *e = cJSON_GetArrayItem(list, 0);
	cr_expect_str_eq(cJSON_GetObjectItemCaseSensitive(e, "service")->valuestring, "default/db");
	cr_expect_str_eq(cJSON_GetObjectItemCaseSensitive(e, "cluster_ip")->valuestring,
	                 "10.96.0.1");
	cr_expect_eq(cJSON_GetObjectItemCaseSensitive(e, "endpoints")->valuedouble, 2);
	cJSON_Delete(s);

	/* An older table arriving late is not written. */
	struct em_k8s_object *more[] = {objs[0], objs[1],
	                                service("db2", "10.96.0.4", "", "[{\"port\":1}]"),
	                                endpoints("db2", "[{\"ip\":\"10.1.0.9\"}]", 1)};
	struct em_table *t2 = build(more, 4, 2);
	em_fastpath_publish(fp, t2);
	em_fastpath_publish(fp, t1);
	s = stats(fp);
	cr_expect_eq(num_of(s, "ports"), 2);
	cr_expect_eq(num_of(s, "publishes"), 2);
	cJSON_Delete(s);

	/* db2 removed, db's endpoints changed to one. */
	em_k8s_free(objs[1]);
	objs[1] = endpoints("db", "[{\"ip\":\"10.1.0.7\"}]", 5432);
	struct em_table *t3 = build(objs, 2, 3);
	em_fastpath_publish(fp, t3);
	s = stats(fp);
	cr_expect_eq(num_of(s, "ports"), 1);
	list = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(s, "fastpath"),
	                                        "services");
	cr_assert_eq(cJSON_GetArraySize(list), 1);
	cr_expect_eq(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(list, 0), "endpoints")
	                     ->valuedouble,
	             1);
	cJSON_Delete(s);

	/* An empty table empties the maps. */
	struct em_table *t4 = build(objs, 0, 4);
	em_fastpath_publish(fp, t4);
	s = stats(fp);
	cr_expect_eq(num_of(s, "ports"), 0);
	cJSON_Delete(s);

	em_fastpath_free(fp);
	free(c);
	em_table_free(t1);
	em_table_free(t2);
	em_table_free(t3);
	em_table_free(t4);
	for (size_t i = 0; i < 5; i++)
		em_k8s_free(objs[i]);
	em_k8s_free(more[2]);
	em_k8s_free(more[3]);
}

/* Not a timing assertion: prints what the fast path's part of a /metrics
 * scrape costs with 10,000 ports in the maps (the stats object read from
 * the kernel, then rendered: store/admin.c), and checks every port is on
 * the page. Root and a cgroup v2 hierarchy, as maps_follow_tables. */
Test(fastpath, scrape_10000_ports, .fini = cg_fini)
{
	enum { N = 10000 };
	struct em_config *c;
	struct em_fastpath *fp = fastpath_on(&c);
	em_table_init();
	struct em_k8s_object **objs = calloc(2 * N, sizeof(*objs));
	cr_assert_not_null(objs);
	for (int i = 0; i < N; i++) {
		char name[32], ip[32], addr[64];
		snprintf(name, sizeof(name), "svc-%05d", i);
		snprintf(ip, sizeof(ip), "10.96.%d.%d", i / 250, i % 250 + 1);
		snprintf(addr, sizeof(addr), "[{\"ip\":\"10.1.%d.%d\",\"nodeName\":\"n1\"}]",
		         i / 250, i % 250 + 1);
		objs[2 * i] = service(name, ip, "", "[{\"port\":5432}]");
		objs[2 * i + 1] = endpoints(name, addr, 5432);
	}
	struct em_table *t = build(objs, 2 * N, 1);
	em_fastpath_publish(fp, t);
	uint64_t t0 = em_now_ns();
	cJSON *s = stats(fp);
	uint64_t t1 = em_now_ns();
	struct em_buf b = {0};
	cr_assert_eq(em_admin_metrics(s, &b), 0);
	uint64_t t2 = em_now_ns();
	size_t lines = 0;
	for (const char *l = strstr(b.data, "\nedgemesh_fastpath_connections_total{"); l;
	     l = strstr(l + 1, "\nedgemesh_fastpath_connections_total{"))
		lines++;
	cr_expect_eq(lines, N);
	cr_expect_not_null(strstr(b.data, "\nedgemesh_fastpath_ports 10000\n"));
	cr_expect_not_null(strstr(b.data, "\nedgemesh_fastpath_connections_total{namespace="
	                                  "\"default\",service=\"svc-09999\",cluster_ip=\"10.96."
	                                  "39.250\",port=\"5432\"} 0\n"));
	fprintf(stderr,
	        "fastpath: 10000 ports: stats object in %.1f ms, rendered in %.1f ms "
	        "(%zu bytes)\n",
	        (double)(t1 - t0) / 1e6, (double)(t2 - t1) / 1e6, b.len);
	em_buf_free(&b);
	cJSON_Delete(s);
	em_fastpath_free(fp);
	free(c);
	em_table_free(t);
	for (int i = 0; i < 2 * N; i++)
		em_k8s_free(objs[i]);
	free(objs);
}

/* Router objects: decoding and checks, the table's Rule match, the Rules'
 * counters and their rows in sqlite. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "proto/clock.h"
#include "store/k8s.h"
#include "store/rcu.h"
#include "store/router.h"
#include "store/store.h"
#include "store/table.h"
#include "tmpdb.h"

#define RE(ns, name, type, props)                                                                  \
	"{\"apiVersion\":\"rules.kubeedge.io/v1\",\"kind\":\"RuleEndpoint\",\"metadata\":{"        \
	"\"name\":\"" name "\",\"namespace\":\"" ns "\"},\"spec\":{\"ruleEndpointType\":\"" type   \
	"\",\"properties\":" props "}}"

#define RULE(ns, name, src, srcres, tgt, tgtres)                                                   \
	"{\"apiVersion\":\"rules.kubeedge.io/"                                                     \
	"v1\",\"kind\":\"Rule\",\"metadata\":{\"name\":\"" name "\",\"namespace\":\"" ns           \
	"\"},\"spec\":{\"source\":\"" src "\",\"sourceResource\":" srcres ",\"target\":\"" tgt     \
	"\",\"targetResource\":" tgtres "}}"

static int decode(const char *json, struct em_k8s_object **o, char *err, size_t len)
{
	return em_k8s_decode(json, strlen(json), -1, o, err, len);
}

static struct em_k8s_object *must(const char *json)
{
	struct em_k8s_object *o;
	char err[256];
	cr_assert_eq(decode(json, &o, err, sizeof(err)), 0, "%s\n%s", err, json);
	return o;
}

/* Decoding must fail with a message holding <want>. */
static void refused(const char *json, const char *want)
{
	struct em_k8s_object *o = NULL;
	char err[256];
	cr_assert_eq(decode(json, &o, err, sizeof(err)), -EINVAL, "accepted: %s", json);
	cr_assert_null(o);
	cr_assert(strstr(err, want), "error \"%s\" lacks \"%s\"", err, want);
}

Test(router, decode_fields)
{
	struct em_k8s_object *re =
	        must(RE("shop", "edge", "servicebus", "{\"service_port\":\"8080\"}"));
	cr_assert_eq(re->kind, EM_KIND_RULEENDPOINT);
	cr_assert_eq(re->re.type, EM_RE_SERVICEBUS);
	cr_assert_eq(re->re.service_port, 8080);
	cr_assert_str_eq(em_k8s_map_get(&re->re.properties, "service_port"), "8080");
	em_k8s_free(re);

	struct em_k8s_object *r =
	        must(RULE("shop", "r1", "rest", "{\"path\":\"/a\"}", "edge",
	                  "{\"path\":\"/b\",\"service\":\"ns2/web\",\"port\":\"80\"}"));
	cr_assert_eq(r->kind, EM_KIND_RULE);
	cr_assert_str_eq(r->ns, "shop");
	cr_assert_str_eq(r->rule.source, "rest");
	cr_assert_str_eq(r->rule.target, "edge");
	cr_assert_str_eq(r->rule.source_path, "/a");
	cr_assert_str_eq(r->rule.target_path, "/b");
	cr_assert_str_eq(r->rule.svc_ns, "ns2");
	cr_assert_str_eq(r->rule.svc_name, "web");
	cr_assert_eq(r->rule.svc_port, 80);
	em_k8s_free(r);
}

Test(router, decode_refusals_name_the_field)
{
	refused(RE("d", "x", "eventbus", "{}"),
	        "spec.ruleEndpointType: \"eventbus\" is not supported");
	refused(RE("d", "x", "mqtt", "{}"), "expected rest or servicebus");
	refused(RE("d", "x", "servicebus", "{\"service_port\":8080}"),
	        "spec.properties.service_port: expected string, got number");
	refused(RE("d", "x", "servicebus", "{\"service_port\":\"0\"}"),
	        "spec.properties.service_port: expected a port");
	refused(RE("d", "x", "servicebus", "{\"service_port\":\"70000\"}"), "expected a port");
	refused(RE("d", "x", "rest", "[]"), "spec.properties");
	refused("{\"apiVersion\":\"rules.kubeedge.io/v1\",\"kind\":\"RuleEndpoint\","
	        "\"metadata\":{\"name\":\"x\"}}",
	        "spec: missing");
	refused("{\"apiVersion\":\"example.com/"
	        "v1\",\"kind\":\"Rule\",\"metadata\":{\"name\":\"x\"},"
	        "\"spec\":{}}",
	        "apiVersion: expected rules.kubeedge.io/v1");
	refused(RULE("d", "r", "a", "{\"path\":\"/a\"}", "b", "{\"port\":80}"),
	        "spec.targetResource.port: expected string, got number");
	refused(RULE("d", "r", "a", "{\"path\":\"a\"}", "b", "{}"),
	        "spec.sourceResource.path: expected a path starting with \"/\"");
	refused(RULE("d", "r", "a", "{\"path\":\"/a b\"}", "b", "{}"), "invalid character");
	refused(RULE("d", "r", "a", "{\"path\":\"/a?x\"}", "b", "{}"), "invalid character");
	refused(RULE("d", "r", "a", "{}", "b", "{\"path\":\"x\"}"), "spec.targetResource.path");
	refused(RULE("d", "r", "a", "{}", "b", "{\"service\":\"web\",\"port\":\"80\"}"),
	        "spec.targetResource.service: expected \"namespace/name\"");
	refused(RULE("d", "r", "a", "{}", "b", "{\"service\":\"a/b/c\",\"port\":\"80\"}"),
	        "expected \"namespace/name\"");
	refused(RULE("d", "r", "a", "{}", "b", "{\"service\":\"ns/web\"}"),
	        "spec.targetResource.port: missing");
	refused(RULE("d", "r", "a", "{}", "b", "{\"port\":\"80\"}"), "without \"service\"");
	refused(RULE("d", "r", "", "{}", "b", "{}"), "spec.source: expected non-empty string");
	refused(RULE("d", "r", "a/b", "{}", "b", "{}"), "spec.source: invalid character");
	refused("{\"apiVersion\":\"rules.kubeedge.io/v1\",\"kind\":\"Rule\",\"metadata\":{"
	        "\"name\":\"r\"},\"spec\":{\"source\":\"a\",\"target\":\"b\",\"targetResource\":{}}"
	        "}",
	        "spec.sourceResource: missing");
	refused("{\"apiVersion\":\"rules.kubeedge.io/v1\",\"kind\":\"Rule\",\"metadata\":{"
	        "\"name\":\"r\"},\"spec\":{\"source\":7,\"target\":\"b\"}}",
	        "spec.source");
}

/* Every prefix of a valid object either decodes or fails cleanly. */
Test(router, decode_every_prefix)
{
	static const char *const docs[] = {
	        RE("d", "x", "servicebus", "{\"service_port\":\"8080\",\"k\":\"v\"}"),
	        RULE("d", "r", "a", "{\"path\":\"/a\"}", "b",
	             "{\"path\":\"/b\",\"service\":\"n/s\",\"port\":\"80\"}"),
	};
	for (size_t d = 0; d < 2; d++)
		for (size_t n = 0; n < strlen(docs[d]); n++) {
			struct em_k8s_object *o = NULL;
			char err[256];
			char *copy = malloc(n + 1);
			memcpy(copy, docs[d], n);
			int rc = em_k8s_decode(copy, n, -1, &o, err, sizeof(err));
			cr_assert_eq(rc, -EINVAL, "prefix %zu decoded", n);
			cr_assert_null(o);
			free(copy);
		}
}

/* ---- the table ---- */

static struct em_table *build(struct em_k8s_object **objs, size_t n)
{
	struct em_table_input in = {.objs = (const struct em_k8s_object *const *)objs, .n_objs = n};
	struct em_table *t = em_table_build(&in, 1);
	cr_assert_not_null(t);
	return t;
}

static const char *match(const struct em_table *t, const char *ns, const char *path, size_t *m)
{
	const struct em_rule *r = em_table_rule_match(t, ns, path, strlen(path), m);
	return r ? r->name : NULL;
}

Test(router, match_prefix_boundary_and_longest)
{
	struct em_k8s_object *objs[] = {
	        must(RE("d", "rest", "rest", "{}")),
	        must(RE("d", "edge", "servicebus", "{\"service_port\":\"9000\"}")),
	        must(RULE("d", "ra", "rest", "{\"path\":\"/a\"}", "edge", "{\"path\":\"/x\"}")),
	        must(RULE("d", "rab", "rest", "{\"path\":\"/a/b\"}", "edge", "{\"path\":\"/y\"}")),
	        must(RULE("d", "rslash", "rest", "{\"path\":\"/s/\"}", "edge", "{\"path\":\"/\"}")),
	        must(RE("other", "rest", "rest", "{}")),
	        must(RE("other", "edge", "servicebus", "{\"service_port\":\"1\"}")),
	        must(RULE("other", "root", "rest", "{\"path\":\"/\"}", "edge", "{\"path\":\"/\"}")),
	};
	struct em_table *t = build(objs, EM_ARRAY_SIZE(objs));
	size_t m = 0;

	cr_expect_str_eq(match(t, "d", "/a", &m), "ra");
	cr_expect_eq(m, 2);
	cr_expect_str_eq(match(t, "d", "/a/", &m), "ra");
	cr_expect_str_eq(match(t, "d", "/a?x=1", &m), "ra");
	cr_expect_str_eq(match(t, "d", "/a#f", &m), "ra");
	cr_expect_str_eq(match(t, "d", "/a/c/d", &m), "ra");
	cr_expect_null(match(t, "d", "/ab", &m), "no match inside a segment");
	cr_expect_null(match(t, "d", "/", &m));
	cr_expect_null(match(t, "d", "", &m));
	cr_expect_null(match(t, "d", "a", &m));
	cr_expect_str_eq(match(t, "d", "/a/b", &m), "rab");
	cr_expect_eq(m, 4);
	cr_expect_str_eq(match(t, "d", "/a/b/c?q=/a/b/c/d", &m), "rab");
	cr_expect_eq(m, 4);
	cr_expect_str_eq(match(t, "d", "/a/bc", &m), "ra", "longest on a boundary");
	cr_expect_eq(m, 2);
	cr_expect_str_eq(match(t, "d", "/s/x", &m), "rslash");
	cr_expect_eq(m, 3);
	cr_expect_str_eq(match(t, "d", "/s/", &m), "rslash");
	cr_expect_null(match(t, "d", "/s", &m), "\"/s/\" needs its slash");
	cr_expect_null(match(t, "nope", "/a", &m), "namespaces are apart");
	cr_expect_str_eq(match(t, "other", "/a/b", &m), "root");
	cr_expect_eq(m, 1);
	cr_expect_str_eq(match(t, "other", "/", &m), "root");

	const struct em_rule *r = em_table_rule_match(t, "d", "/a/b/zz", 7, NULL);
	cr_assert_not_null(r);
	cr_expect_eq(r->local_port, 9000);
	cr_expect_str_eq(r->target_path, "/y");
	cr_expect_null(r->svc_name);
	cr_expect(r->active);
	cr_expect_eq(r->key, em_rule_key("d", "rab"));
	cr_expect_eq(em_table_rule_by_key(t, r->key), r);
	cr_expect_eq(em_table_rule(t, "d", "rab"), r);
	/* A long path of many segments: one pass, the longest rule found. */
	size_t big = 1 << 20;
	char *p = malloc(big);
	memcpy(p, "/a/b", 4);
	for (size_t i = 4; i < big; i++)
		p[i] = i % 2 ? 'x' : '/';
	cr_expect_str_eq(em_table_rule_match(t, "d", p, big, &m)->name, "rab");
	cr_expect_eq(m, 4);
	p[3] = 0; /* a NUL inside: no rule holds one */
	cr_expect_str_eq(em_table_rule_match(t, "d", p, big, &m)->name, "ra");
	free(p);
	/* The path is not terminated: only <path_len> bytes count. */
	cr_expect_str_eq(em_table_rule_match(t, "d", "/a/bXYZ", 4, &m)->name, "rab");
	em_table_free(t);
	for (size_t i = 0; i < EM_ARRAY_SIZE(objs); i++)
		em_k8s_free(objs[i]);
}

Test(router, inactive_rules_are_not_matched)
{
	struct em_k8s_object *objs[] = {
	        must(RE("d", "rest", "rest", "{}")),
	        must(RE("d", "edge", "servicebus", "{}")),
	        must(RULE("d", "missing", "rest", "{\"path\":\"/m\"}", "nope", "{\"path\":\"/\"}")),
	        must(RULE("d", "nosvc", "rest", "{\"path\":\"/n\"}", "edge", "{\"path\":\"/\"}")),
	        must(RULE("d", "svc", "rest", "{\"path\":\"/s\"}", "edge",
	                  "{\"path\":\"/\",\"service\":\"d/web\",\"port\":\"80\"}")),
	        must(RULE("d", "backwards", "edge", "{\"path\":\"/b\"}", "rest", "{}")),
	        /* Two rules, one path: the name sorting first wins. */
	        must(RULE("d", "zz", "rest", "{\"path\":\"/dup\"}", "edge",
	                  "{\"path\":\"/\",\"service\":\"d/web\",\"port\":\"80\"}")),
	        must(RULE("d", "aa", "rest", "{\"path\":\"/dup\"}", "edge",
	                  "{\"path\":\"/\",\"service\":\"d/web\",\"port\":\"81\"}")),
	};
	struct em_table *t = build(objs, EM_ARRAY_SIZE(objs));
	const struct em_rule *r;

	cr_expect_null(match(t, "d", "/m", NULL));
	r = em_table_rule(t, "d", "missing");
	cr_assert_not_null(r);
	cr_expect(!r->active);
	cr_expect(strstr(r->inactive_reason, "ruleendpoint d/nope not found"), "%s",
	          r->inactive_reason);
	cr_expect_null(match(t, "d", "/n", NULL));
	cr_expect(strstr(em_table_rule(t, "d", "nosvc")->inactive_reason, "no edge service"));
	r = em_table_rule_match(t, "d", "/s/1", 4, NULL);
	cr_assert_not_null(r);
	cr_expect_str_eq(r->svc_ns, "d");
	cr_expect_str_eq(r->svc_name, "web");
	cr_expect_eq(r->svc_port, 80);
	cr_expect_eq(r->local_port, 0);
	cr_expect(strstr(em_table_rule(t, "d", "backwards")->inactive_reason, "not supported"));
	cr_expect_str_eq(match(t, "d", "/dup", NULL), "aa");
	cr_expect(!em_table_rule(t, "d", "zz")->active);
	cr_expect(strstr(em_table_rule(t, "d", "zz")->inactive_reason, "served by rule aa"));
	em_table_free(t);
	for (size_t i = 0; i < EM_ARRAY_SIZE(objs); i++)
		em_k8s_free(objs[i]);
}

/* ---- counters ---- */

Test(router, error_ring_wraps_at_32)
{
	struct em_rule_status *s = em_rule_status_new(NULL);
	struct em_rule_error_slot errs[EM_K8S_RULE_ERRORS];
	uint64_t ok, fail, v;
	char why[300];

	for (int i = 0; i < 40; i++) {
		snprintf(why, sizeof(why), "e%d", i);
		em_rule_status_add(s, false, why, 1000 + i);
	}
	em_rule_status_add(s, true, NULL, 0);
	memset(why, 'x', sizeof(why) - 1);
	why[sizeof(why) - 1] = 0;
	em_rule_status_add(s, false, why, 2000);
	size_t n = em_rule_status_read(s, &ok, &fail, errs, &v);
	cr_assert_eq(n, 32);
	cr_expect_eq(ok, 1);
	cr_expect_eq(fail, 41);
	cr_expect_eq(v, 42);
	cr_expect_str_eq(errs[0].reason, "e9", "oldest kept");
	cr_expect_eq(errs[0].time, 1009);
	cr_expect_str_eq(errs[30].reason, "e39");
	cr_expect_eq(strlen(errs[31].reason), EM_K8S_RULE_REASON_MAX, "cut to 200 bytes");
	em_rule_status_free(s);
}

struct reporter {
	uint64_t key;
	int n;
};

static void *report_thread(void *arg)
{
	struct reporter *r = arg;
	em_rcu_register();
	for (int i = 0; i < r->n; i++) {
		em_rule_report(r->key, i % 4 != 0, i % 4 ? NULL : "upstream refused");
		if (i % 1000 == 0)
			em_rcu_quiescent();
	}
	em_rcu_unregister();
	return NULL;
}

/* ---- through the store ---- */

static struct tmpdb db;
static struct em_store *st;

static void setup(void)
{
	tmpdb_make(&db, "em-router");
	em_table_init();
	cr_assert_eq(em_store_open(db.dir, "cloud", &st), 0);
}

static void teardown(void)
{
	em_store_close(st);
	em_table_shutdown();
	tmpdb_remove(&db);
}

static int apply(const char *json, char *err, size_t len)
{
	cJSON *o = cJSON_Parse(json);
	cr_assert_not_null(o, "%s", json);
	const cJSON *v[] = {o};
	int rc = em_store_apply(st, v, 1, err, len);
	cJSON_Delete(o);
	return rc;
}

static void apply_ok(const char *json)
{
	char err[512];
	cr_assert_eq(apply(json, err, sizeof(err)), 0, "%s", err);
}

static void row_cb(void *arg, const char *json)
{
	cJSON **out = arg;
	cJSON_Delete(*out);
	*out = cJSON_Parse(json);
}

/* The stored row of <kind> d/<name>, parsed; NULL when none. */
static cJSON *row(enum em_kind kind, const char *name)
{
	cJSON *j = NULL;
	em_store_list(st, kind, "d", name, row_cb, &j);
	return j;
}

static double num_at(const cJSON *j, const char *a, const char *b)
{
	const cJSON *v =
	        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, a), b);
	cr_assert(cJSON_IsNumber(v), "%s.%s is not a number", a, b);
	return v->valuedouble;
}

static bool in_use(const char *name)
{
	cJSON *j = row(EM_KIND_RULE, name);
	cr_assert_not_null(j);
	bool r = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
	        cJSON_GetObjectItemCaseSensitive(j, "router"), "in_use"));
	cJSON_Delete(j);
	return r;
}

#define REST RE("d", "rest", "rest", "{}")
#define EDGE RE("d", "edge", "servicebus", "{\"service_port\":\"8080\"}")
#define R1   RULE("d", "r1", "rest", "{\"path\":\"/a\"}", "edge", "{\"path\":\"/b\"}")

Test(router, stored_row_carries_the_router_fields, .init = setup, .fini = teardown)
{
	apply_ok(REST);
	apply_ok(EDGE);
	apply_ok(R1);
	cJSON *e = row(EM_KIND_RULEENDPOINT, "edge"), *r = row(EM_KIND_RULE, "r1");
	cr_assert_not_null(e);
	cr_assert_not_null(r);
	static const char *const ep_fields[] = {"id",         "type",      "name",
	                                        "project_id", "is_shared", "properties",
	                                        "created_at", "updated_at"};
	static const char *const rule_fields[] = {"id",
	                                          "name",
	                                          "project_id",
	                                          "domain_id",
	                                          "source",
	                                          "source_resource",
	                                          "target",
	                                          "target_resource",
	                                          "in_use",
	                                          "is_deleted",
	                                          "created_at",
	                                          "updated_at",
	                                          "success_messages",
	                                          "fail_messages",
	                                          "errors"};
	const cJSON *er = cJSON_GetObjectItemCaseSensitive(e, "router");
	const cJSON *rr = cJSON_GetObjectItemCaseSensitive(r, "router");
	for (size_t i = 0; i < EM_ARRAY_SIZE(ep_fields); i++)
		cr_expect(cJSON_HasObjectItem(er, ep_fields[i]), "endpoint lacks %s", ep_fields[i]);
	for (size_t i = 0; i < EM_ARRAY_SIZE(rule_fields); i++)
		cr_expect(cJSON_HasObjectItem(rr, rule_fields[i]), "rule lacks %s", rule_fields[i]);
	cr_expect_str_eq(cJSON_GetObjectItem(er, "type")->valuestring, "servicebus");
	cr_expect_str_eq(cJSON_GetObjectItem(rr, "project_id")->valuestring, "d");
	cr_expect(cJSON_IsTrue(cJSON_GetObjectItem(rr, "in_use")));
	cr_expect_eq(num_at(r, "status", "successMessages"), 0);
	char id[64];
	snprintf(id, sizeof(id), "%s", cJSON_GetObjectItem(rr, "id")->valuestring);
	cr_expect_eq(strlen(id), 36, "a UUID: %s", id);
	cJSON_Delete(e);
	cJSON_Delete(r);
	/* An update keeps the id. */
	apply_ok(RULE("d", "r1", "rest", "{\"path\":\"/a2\"}", "edge", "{\"path\":\"/b\"}"));
	r = row(EM_KIND_RULE, "r1");
	cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "router"), "id")->valuestring,
	                 id);
	cJSON_Delete(r);
}

Test(router, apply_checks_and_loses_nothing, .init = setup, .fini = teardown)
{
	char err[512];
	apply_ok(REST);
	apply_ok(EDGE);
	apply_ok(R1);
	/* servicebus -> rest: refused, naming the object. */
	cr_assert_eq(apply(RULE("d", "back", "edge", "{\"path\":\"/x\"}", "rest", "{}"), err,
	                   sizeof(err)),
	             -EINVAL);
	cr_expect(strstr(err, "Rule d/back") && strstr(err, "not supported"), "%s", err);
	cr_assert_eq(apply(RULE("d", "nopath", "rest", "{}", "edge", "{\"path\":\"/x\"}"), err,
	                   sizeof(err)),
	             -EINVAL);
	cr_expect(strstr(err, "spec.sourceResource.path: missing"), "%s", err);
	cr_assert_eq(
	        apply(RULE("d", "r1", "rest", "{\"path\":\"/a\"}", "edge", "{}"), err, sizeof(err)),
	        -EINVAL);
	cr_expect(strstr(err, "spec.targetResource.path: missing"), "%s", err);
	cr_assert_eq(apply(RE("d", "edge", "eventbus", "{}"), err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "RuleEndpoint d/edge") && strstr(err, "not supported"), "%s", err);
	/* Nothing was lost. */
	cr_expect(em_store_has(st, EM_KIND_RULE, "d", "r1"));
	cr_expect(!em_store_has(st, EM_KIND_RULE, "d", "back"));
	cr_expect(in_use("r1"));
	cJSON *r = row(EM_KIND_RULE, "r1");
	cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "router"), "target_resource")
	                         ->child->valuestring,
	                 "/b");
	cJSON_Delete(r);
	r = row(EM_KIND_RULEENDPOINT, "edge");
	cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "router"), "type")->valuestring,
	                 "servicebus");
	cJSON_Delete(r);
}

Test(router, missing_endpoint_stored_not_in_use, .init = setup, .fini = teardown)
{
	apply_ok(REST);
	apply_ok(R1);
	cr_expect(em_store_has(st, EM_KIND_RULE, "d", "r1"));
	cr_expect(!in_use("r1"));
	cJSON *r = row(EM_KIND_RULE, "r1");
	const cJSON *why = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "router"), "in_use_reason");
	cr_expect(cJSON_IsString(why) && strstr(why->valuestring, "ruleendpoint d/edge not found"));
	cJSON_Delete(r);
	cr_expect_null(em_table_rule_match(em_table_current(), "d", "/a", 2, NULL));
	/* The endpoint arrives: the rule is served, and its row says so. */
	apply_ok(EDGE);
	cr_expect(in_use("r1"));
	cr_expect_not_null(em_table_rule_match(em_table_current(), "d", "/a", 2, NULL));
	/* ... and leaves. */
	cr_assert_eq(em_store_delete(st, EM_KIND_RULEENDPOINT, "d", "edge"), 1);
	cr_expect(!in_use("r1"));
}

Test(router, report_from_two_threads_exact_counts, .init = setup, .fini = teardown)
{
	apply_ok(REST);
	apply_ok(EDGE);
	apply_ok(R1);
	const struct em_rule *r = em_table_rule(em_table_current(), "d", "r1");
	cr_assert_not_null(r);
	struct reporter rep = {r->key, 100000};
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, report_thread, &rep), 0);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	em_rule_report(r->key ^ 1, true, NULL); /* no such rule: ignored */
	cr_assert_eq(em_store_flush_status(st, em_now_ms() + 10 * EM_STORE_FLUSH_MS), 0);
	cJSON *j = row(EM_KIND_RULE, "r1");
	cr_expect_eq(num_at(j, "status", "successMessages"), 2 * 75000);
	cr_expect_eq(num_at(j, "status", "failMessages"), 2 * 25000);
	cr_expect_eq(num_at(j, "router", "success_messages"), 2 * 75000);
	const cJSON *errs = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "status"), "errors");
	cr_expect_eq(cJSON_GetArraySize(errs), 32);
	cr_expect(strstr(cJSON_GetArrayItem(errs, 0)->valuestring, ": upstream refused"));
	errs = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "router"), "errors");
	cr_expect_eq(cJSON_GetArraySize(errs), 32);
	cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(errs, 31), "reason")->valuestring,
	                 "upstream refused");
	cJSON_Delete(j);
}

Test(router, counts_flush_once_a_second_survive_restart_and_restart_on_recreate, .init = setup,
     .fini = teardown)
{
	apply_ok(REST);
	apply_ok(EDGE);
	apply_ok(R1);
	uint64_t key = em_rule_key("d", "r1");
	uint64_t now = em_now_ms() + 10 * EM_STORE_FLUSH_MS;

	em_rcu_register();
	em_rule_report(key, true, NULL);
	em_rule_report(key, false, "timeout");
	em_rcu_unregister();
	cr_assert_eq(em_store_flush_status(st, now), 0);
	cJSON *j = row(EM_KIND_RULE, "r1");
	cr_expect_eq(num_at(j, "status", "successMessages"), 1);
	cr_expect_eq(num_at(j, "status", "failMessages"), 1);
	cJSON_Delete(j);
	/* Within the second: not written yet. */
	em_rcu_register();
	em_rule_report(key, true, NULL);
	em_rcu_unregister();
	cr_assert_eq(em_store_flush_status(st, now + EM_STORE_FLUSH_MS / 2), 0);
	j = row(EM_KIND_RULE, "r1");
	cr_expect_eq(num_at(j, "status", "successMessages"), 1);
	cJSON_Delete(j);
	/* An update of the rule keeps its counts. */
	apply_ok(RULE("d", "r1", "rest", "{\"path\":\"/a\"}", "edge", "{\"path\":\"/c\"}"));
	j = row(EM_KIND_RULE, "r1");
	cr_expect_eq(num_at(j, "status", "successMessages"), 2);
	cJSON_Delete(j);
	/* Closing writes what is left; a restart reads it back. */
	em_rcu_register();
	em_rule_report(key, true, NULL);
	em_rcu_unregister();
	em_store_close(st);
	cr_assert_eq(em_store_open(db.dir, "cloud", &st), 0);
	j = row(EM_KIND_RULE, "r1");
	cr_expect_eq(num_at(j, "status", "successMessages"), 3);
	cr_expect_eq(num_at(j, "status", "failMessages"), 1);
	cJSON_Delete(j);
	em_rcu_register();
	em_rule_report(key, false, "again");
	em_rcu_unregister();
	cr_assert_eq(em_store_flush_status(st, now + 5 * EM_STORE_FLUSH_MS), 0);
	j = row(EM_KIND_RULE, "r1");
	cr_expect_eq(num_at(j, "status", "failMessages"), 2);
	cr_expect_eq(
	        cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "status"), "errors")),
	        2, "the errors survived the restart");
	cJSON_Delete(j);
	/* Deleted and made again: from zero. */
	cr_assert_eq(em_store_delete(st, EM_KIND_RULE, "d", "r1"), 1);
	apply_ok(R1);
	j = row(EM_KIND_RULE, "r1");
	cr_expect_eq(num_at(j, "status", "successMessages"), 0);
	cr_expect_eq(num_at(j, "status", "failMessages"), 0);
	cJSON_Delete(j);
}

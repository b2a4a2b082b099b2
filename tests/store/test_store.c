/* The object store's refusals at apply: endpoint addresses that cannot be
 * endpoints, and those inside the captured service ranges; and the sync
 * thread's refusal to bind over a file that is not a socket. */
#include <criterion/criterion.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "store/config.h"
#include "store/store.h"
#include "store/sync.h"
#include "store/table.h"
#include "tmpdb.h"

static struct tmpdb db;
static struct em_store *st;

static void setup(void)
{
	tmpdb_make(&db, "em-store");
	em_table_init();
	cr_assert_eq(em_store_open(db.dir, "n1", &st), 0);
}

static void teardown(void)
{
	em_store_close(st);
	em_table_shutdown();
	tmpdb_remove(&db);
}

TestSuite(store, .init = setup, .fini = teardown, .timeout = 30);

/* Applies the objects of JSON array <json>; returns em_store_apply's code. */
static int apply(const char *json, char *err, size_t errlen)
{
	cJSON *arr = cJSON_Parse(json);
	const cJSON *objs[8];
	size_t n = 0;
	const cJSON *it;
	int rc;

	cr_assert_not_null(arr, "%s", json);
	cJSON_ArrayForEach(it, arr)
	{
		cr_assert_lt(n, 8);
		objs[n++] = it;
	}
	err[0] = 0;
	rc = em_store_apply(st, objs, n, err, errlen);
	cJSON_Delete(arr);
	return rc;
}

static void count_cb(void *arg, const char *json)
{
	(void)json;
	(*(size_t *)arg)++;
}

static size_t stored(enum em_kind kind)
{
	size_t n = 0;
	em_store_list(st, kind, NULL, NULL, count_cb, &n);
	return n;
}

#define EP(name, ip)                                                                               \
	"{\"kind\":\"Endpoints\",\"metadata\":{\"name\":\"" name "\",\"namespace\":\"shop\"},"     \
	"\"subsets\":[{\"addresses\":[{\"ip\":\"10.1.0.5\"}],\"notReadyAddresses\":[{\"ip\":\"" ip \
	"\"}],\"ports\":[{\"port\":8080}]}]}"
#define SLICE(name, type, ip)                                                                      \
	"{\"kind\":\"EndpointSlice\",\"metadata\":{\"name\":\"" name "\",\"namespace\":\"shop\","  \
	"\"labels\":{\"kubernetes.io/service-name\":\"web\"}},\"addressType\":\"" type "\","       \
	"\"endpoints\":[{\"addresses\":[\"" ip "\"]}],\"ports\":[{\"port\":8080}]}"

static void refused(const char *json, const char *want)
{
	char err[512];
	cr_expect_eq(apply(json, err, sizeof(err)), -EINVAL, "%s", json);
	cr_expect_str_eq(err, want, "%s", json);
}

Test(store, has)
{
	char err[512];
	cr_expect(!em_store_has(st, EM_KIND_ENDPOINTS, "shop", "web"));
	cr_assert_eq(apply("[" EP("web", "10.1.0.6") "]", err, sizeof(err)), 0, "%s", err);
	cr_expect(em_store_has(st, EM_KIND_ENDPOINTS, "shop", "web"));
	cr_expect(!em_store_has(st, EM_KIND_SERVICE, "shop", "web"));
	cr_expect(!em_store_has(st, EM_KIND_ENDPOINTS, "default", "web"));
	cr_assert_eq(em_store_delete(st, EM_KIND_ENDPOINTS, "shop", "web"), 1);
	cr_expect(!em_store_has(st, EM_KIND_ENDPOINTS, "shop", "web"));
}

Test(store, endpoint_addresses_that_are_no_endpoints)
{
	refused("[" EP("web", "0.0.0.0") "]",
	        "items[0] Endpoints shop/web: subsets[0].notReadyAddresses[0].ip: 0.0.0.0 is the "
	        "unspecified address; expected a pod or host address");
	refused("[" EP("web", "224.0.0.251") "]",
	        "items[0] Endpoints shop/web: subsets[0].notReadyAddresses[0].ip: 224.0.0.251 is a "
	        "multicast address; expected a pod or host address");
	refused("[" EP("web", "255.255.255.255") "]",
	        "items[0] Endpoints shop/web: subsets[0].notReadyAddresses[0].ip: 255.255.255.255 "
	        "is the broadcast address; expected a pod or host address");
	refused("[" EP("web", "::") "]",
	        "items[0] Endpoints shop/web: subsets[0].notReadyAddresses[0].ip: :: is the "
	        "unspecified address; expected a pod or host address");
	refused("[" EP("web", "::ffff:0.0.0.0") "]",
	        "items[0] Endpoints shop/web: subsets[0].notReadyAddresses[0].ip: ::ffff:0.0.0.0 "
	        "is "
	        "the unspecified address; expected a pod or host address");
	refused("[" SLICE("web-a", "IPv6", "ff02::1") "]",
	        "items[0] EndpointSlice shop/web-a: endpoints[0].addresses[0]: ff02::1 is a "
	        "multicast address; expected a pod or host address");
	refused("[" SLICE("web-a", "IPv4", "239.1.2.3") "]",
	        "items[0] EndpointSlice shop/web-a: endpoints[0].addresses[0]: 239.1.2.3 is a "
	        "multicast address; expected a pod or host address");
	cr_expect_eq(stored(EM_KIND_ENDPOINTS), 0);
	cr_expect_eq(stored(EM_KIND_ENDPOINTSLICE), 0);
}

Test(store, endpoint_inside_service_ranges)
{
	struct em_cidr r[2];
	char err[512];

	/* Without ranges (capture off) a cluster IP is just an address. */
	cr_assert_eq(apply("[" EP("old", "10.96.0.10") "]", err, sizeof(err)), 0, "%s", err);

	cr_assert_eq(em_cidr_parse("10.96.0.0/12", &r[0]), 0);
	cr_assert_eq(em_cidr_parse("fd00:10:96::/112", &r[1]), 0);
	cr_assert_eq(em_store_set_service_cidrs(st, r, 2), 0);
	refused("[" EP("web", "10.96.0.10") "]",
	        "items[0] Endpoints shop/web: subsets[0].notReadyAddresses[0].ip: 10.96.0.10 is "
	        "inside capture.service_cidrs 10.96.0.0/12, a service address; expected a pod or "
	        "host address");
	refused("[" SLICE("web-a", "IPv6", "fd00:10:96::a") "]",
	        "items[0] EndpointSlice shop/web-a: endpoints[0].addresses[0]: fd00:10:96::a is "
	        "inside capture.service_cidrs fd00:10:96::/112, a service address; expected a pod "
	        "or host address");
	/* All or nothing: a good object before a bad one is not stored either. */
	refused("[" EP("good", "10.1.0.6") "," EP("bad", "10.111.0.1") "]",
	        "items[1] Endpoints shop/bad: subsets[0].notReadyAddresses[0].ip: 10.111.0.1 is "
	        "inside capture.service_cidrs 10.96.0.0/12, a service address; expected a pod or "
	        "host address");
	cr_expect_eq(stored(EM_KIND_ENDPOINTS), 1, "only the object applied before the ranges");
	cr_expect_eq(stored(EM_KIND_ENDPOINTSLICE), 0);

	/* Just outside the range is fine. */
	cr_expect_eq(
	        apply("[" EP("good", "10.112.0.1") "," SLICE("web-b", "IPv4", "10.95.255.255") "]",
	              err, sizeof(err)),
	        0, "%s", err);
	cr_expect_eq(stored(EM_KIND_ENDPOINTS), 2);
	cr_expect_eq(stored(EM_KIND_ENDPOINTSLICE), 1);

	cr_assert_eq(em_store_set_service_cidrs(st, NULL, 0), 0);
	cr_expect_eq(apply("[" EP("web", "10.96.0.10") "]", err, sizeof(err)), 0, "%s", err);
}

/* The sync thread binds api_socket: a regular file there (here the database
 * itself) is refused and left as it was. */
Test(store, api_socket_over_a_file_is_refused)
{
	char path[PATH_MAX + 32], text[3 * PATH_MAX], err[512];
	struct em_config *cfg;
	struct em_sync *sync = NULL;
	struct stat before, after;

	snprintf(path, sizeof(path), "%s/edge.json", db.dir);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	fprintf(f,
	        "{\"role\":\"edge\",\"node_name\":\"n1\",\"data_dir\":\"%s\",\"api_socket\":\"%s\","
	        "\"workers\":1,\"log_level\":\"error\",\"tunnel\":{\"listen\":\"\"}}",
	        db.dir, db.path);
	fclose(f);
	cr_assert_eq(stat(db.path, &before), 0);
	/* The config check refuses it first... */
	cr_expect_eq(em_config_load(path, &cfg, err, sizeof(err)), -EEXIST);
	cr_expect(strstr(err, "api_socket: ") != NULL && strstr(err, "is a regular file"), "%s",
	          err);
	/* ...and binding refuses it too, should the file appear after the check. */
	snprintf(
	        text, sizeof(text),
	        "{\"role\":\"edge\",\"node_name\":\"n1\",\"data_dir\":\"%s\",\"api_socket\":\"%s\","
	        "\"workers\":1,\"log_level\":\"error\",\"tunnel\":{\"listen\":\"\"}}",
	        db.dir, db.path);
	cr_assert_eq(em_config_parse(path, text, strlen(text), &cfg, err, sizeof(err)), 0, "%s",
	             err);
	em_store_close(st);
	st = NULL;
	cr_expect_eq(em_sync_start(cfg, &sync), -EEXIST);
	em_config_publish(NULL);
	cr_assert_eq(stat(db.path, &after), 0, "the database is gone");
	cr_expect(S_ISREG(after.st_mode));
	cr_expect_eq(after.st_ino, before.st_ino);
	cr_assert_eq(em_store_open(db.dir, "n1", &st), 0);
	unlink(path);
}

/* Upserts and deletes in one call are one transaction and one snapshot; a
 * refused object leaves the deletes undone too. */
Test(store, change_upserts_and_deletes_together)
{
	char err[512];
	cr_assert_eq(apply("[" EP("a", "10.1.0.6") "," EP("b", "10.1.0.7") "]", err, sizeof(err)),
	             0, "%s", err);
	struct em_store_stats s0, s1;
	em_store_stats(st, &s0);

	cJSON *c = cJSON_Parse(EP("c", "10.1.0.8"));
	const cJSON *objs[] = {c};
	const struct em_store_key del[] = {{EM_KIND_ENDPOINTS, "shop", "a"},
	                                   {EM_KIND_ENDPOINTS, "shop", "nope"}};
	size_t gone = 99;
	cr_assert_eq(em_store_change(st, objs, 1, del, 2, &gone, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(gone, 1, "only the existing object counts as deleted");
	em_store_stats(st, &s1);
	cr_assert_eq(s1.generation, s0.generation + 1, "one snapshot for the whole change");
	cr_assert_eq(stored(EM_KIND_ENDPOINTS), 2); /* b and c */

	/* A refused object: b is not deleted either. */
	cJSON *bad = cJSON_Parse(EP("d", "0.0.0.0"));
	const cJSON *objs2[] = {bad};
	const struct em_store_key del2[] = {{EM_KIND_ENDPOINTS, "shop", "b"}};
	cr_assert_eq(em_store_change(st, objs2, 1, del2, 1, &gone, err, sizeof(err)), -EINVAL);
	cr_assert_eq(gone, 0);
	cr_assert_eq(stored(EM_KIND_ENDPOINTS), 2, "nothing changed");
	cJSON_Delete(c);
	cJSON_Delete(bad);
}

struct obs {
	char log[8][64];
	size_t n;
	uint64_t gen[8];
};

static void observe(void *ctx, uint64_t generation, enum em_bh_op op, const char *key,
                    const char *json)
{
	struct obs *o = ctx;
	cr_assert_lt(o->n, 8);
	cr_assert((op == EM_BH_DELETE) == (json == NULL), "json only for upserts");
	snprintf(o->log[o->n], sizeof(o->log[0]), "%s %s", em_bh_op_name(op), key);
	o->gen[o->n++] = generation;
}

/* The observer hears each change once, after it is published, as insert,
 * update or delete, with the snapshot's generation. */
Test(store, observer_hears_inserts_updates_deletes)
{
	struct obs o = {0};
	char err[512];
	em_store_set_observer(st, observe, &o);
	cr_assert_eq(apply("[" EP("a", "10.1.0.6") "]", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(apply("[" EP("a", "10.1.0.7") "," EP("b", "10.1.0.8") "]", err, sizeof(err)),
	             0, "%s", err);
	cr_assert_eq(em_store_delete(st, EM_KIND_ENDPOINTS, "shop", "a"), 1);
	cr_assert_eq(em_store_delete(st, EM_KIND_ENDPOINTS, "shop", "a"), 0, "already gone");
	const struct em_store_key del[] = {{EM_KIND_ENDPOINTS, "shop", "b"}};
	cr_assert_eq(em_store_change(st, NULL, 0, del, 1, NULL, err, sizeof(err)), 0, "%s", err);
	struct em_store_stats s;
	em_store_stats(st, &s);
	cr_assert_eq(o.n, 5, "heard %zu", o.n);
	cr_assert_str_eq(o.log[0], "insert shop/endpoints/a");
	cr_assert_str_eq(o.log[1], "update shop/endpoints/a");
	cr_assert_str_eq(o.log[2], "insert shop/endpoints/b");
	cr_assert_str_eq(o.log[3], "delete shop/endpoints/a");
	cr_assert_str_eq(o.log[4], "delete shop/endpoints/b");
	cr_assert_eq(o.gen[1], o.gen[2], "one batch, one generation");
	cr_assert_lt(o.gen[0], o.gen[1]);
	cr_assert_eq(o.gen[4], s.generation);
	em_store_set_observer(st, NULL, NULL);
}

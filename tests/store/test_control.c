/* The control stream's two sides in one process: a cloud and an edge, each
 * with a store of its own, joined by a socketpair in place of the tunnel
 * stream the engine would bridge. Covers the snapshot, live pushes, resync
 * from a generation, the snapshot after a cloud restart with stale objects
 * deleted and local ones kept, the registration Node, and hostile edges. */
#include <criterion/criterion.h>

#include <cjson/cJSON.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto/clock.h"
#include "store/api.h"
#include "store/beehive.h"
#include "store/changelog.h"
#include "store/config.h"
#include "store/control.h"
#include "store/store.h"
#include "store/table.h"
#include "tmpdb.h"

#define KEY "0123456789abcdef0123456789abcdef"

struct side {
	struct tmpdb db;
	struct em_store *st;
	struct em_clog *clog;
	struct em_ctl *ctl;
	struct em_config *cfg;
};

static struct side cloud, edge;
static int dials; /* streams the edge asked for */
static const char *cloud_address = "127.0.0.1:20006";

static void log_change(void *ctx, uint64_t gen, enum em_bh_op op, const char *key,
                       const char *json)
{
	struct side *s = ctx;
	cr_assert_eq(em_clog_append(s->clog, gen, op, key, json), 0);
}

static struct em_config *config(const char *json)
{
	struct em_config *cfg = NULL;
	char err[256];
	cr_assert_eq(em_config_parse("test", json, strlen(json), &cfg, err, sizeof(err)), 0, "%s",
	             err);
	return cfg;
}

static void cloud_up(void)
{
	char json[PATH_MAX + 512];
	snprintf(json, sizeof(json),
	         "{\"role\":\"cloud\",\"node_name\":\"c1\",\"data_dir\":\"%s\","
	         "\"tunnel\":{\"cluster_key\":\"" KEY "\",\"encryption\":\"none\"}}",
	         cloud.db.dir);
	cloud.cfg = config(json);
	cr_assert_eq(em_store_open(cloud.db.dir, "c1", &cloud.st), 0);
	struct em_store_stats ss;
	em_store_stats(cloud.st, &ss);
	cloud.clog = em_clog_new(ss.generation, 100000, 64u << 20);
	em_store_set_observer(cloud.st, log_change, &cloud);
	cloud.ctl = em_ctl_new(cloud.cfg, cloud.st, cloud.clog);
	cr_assert_not_null(cloud.ctl);
}

static void cloud_down(void)
{
	em_ctl_free(cloud.ctl);
	em_store_close(cloud.st);
	em_clog_free(cloud.clog);
	em_config_free(cloud.cfg);
	cloud.ctl = NULL;
}

/* The edge's stream goes straight to the cloud's side. */
static int dial(void *ctx, int fd, const struct em_addr *a)
{
	EM_UNUSED(ctx);
	cr_assert_eq(a->port, 20006);
	dials++;
	if (!cloud.ctl) {
		close(fd); /* the cloud is down: the stream ends at once */
		return -ECONNREFUSED;
	}
	struct em_addr src;
	em_addr_parse("192.0.2.7", false, &src);
	em_ctl_accept(cloud.ctl, fd, "e1", &src, false);
	return 0;
}

static void edge_up(void)
{
	char json[PATH_MAX + 512];
	snprintf(json, sizeof(json),
	         "{\"role\":\"edge\",\"node_name\":\"e1\",\"data_dir\":\"%s\","
	         "\"tunnel\":{\"listen\":\"0.0.0.0:20007\",\"cluster_key\":\"" KEY "\","
	         "\"reconnect_min_ms\":10,\"reconnect_max_ms\":20},"
	         "\"cloud\":{\"address\":\"%s\"}}",
	         edge.db.dir, cloud_address);
	edge.cfg = config(json);
	cr_assert_eq(em_store_open(edge.db.dir, "e1", &edge.st), 0);
	edge.ctl = em_ctl_new(edge.cfg, edge.st, NULL);
	cr_assert_not_null(edge.ctl);
	em_ctl_set_dialer(edge.ctl, dial, NULL);
}

static void edge_down(void)
{
	em_ctl_free(edge.ctl);
	em_store_close(edge.st);
	em_config_free(edge.cfg);
	edge.ctl = NULL;
}

/* One turn of a side's loop, as the sync thread runs it. */
static void turn(struct em_ctl *c)
{
	struct pollfd pfd[8];
	int timeout = 0;
	size_t n = em_ctl_pollfds(c, pfd, 8, &timeout);
	poll(pfd, n, 0);
	em_ctl_run(c, pfd, n);
}

/* Runs both sides until <cond> holds, for at most 5 s. */
#define RUN_UNTIL(cond)                                                                            \
	do {                                                                                       \
		uint64_t t0_ = em_now_ms();                                                        \
		while (!(cond)) {                                                                  \
			cr_assert_lt(em_now_ms() - t0_, 5000, "timed out waiting for %s", #cond);  \
			if (cloud.ctl)                                                             \
				turn(cloud.ctl);                                                   \
			if (edge.ctl)                                                              \
				turn(edge.ctl);                                                    \
			usleep(1000);                                                              \
		}                                                                                  \
	} while (0)

static void count_cb(void *arg, const char *json)
{
	EM_UNUSED(json);
	(*(size_t *)arg)++;
}

static size_t count(struct em_store *st, enum em_kind k, const char *name)
{
	size_t n = 0;
	em_store_list(st, k, NULL, name, count_cb, &n);
	return n;
}

static void ip_cb(void *arg, const char *json)
{
	cJSON *o = cJSON_Parse(json);
	const cJSON *ip = cJSON_GetObjectItem(cJSON_GetObjectItem(o, "spec"), "clusterIP");
	snprintf(arg, 64, "%s", cJSON_IsString(ip) ? ip->valuestring : "?");
	cJSON_Delete(o);
}

static void copy_cb(void *arg, const char *json)
{
	snprintf(arg, 2048, "%s", json);
}

static const char *cluster_ip(struct em_store *st, const char *name)
{
	static char ip[64];
	strcpy(ip, "none");
	em_store_list(st, EM_KIND_SERVICE, NULL, name, ip_cb, ip);
	return ip;
}

static void put_service(struct em_store *st, const char *name, const char *ip)
{
	char json[512], err[256];
	snprintf(json, sizeof(json),
	         "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"%s\","
	         "\"namespace\":\"default\"},\"spec\":{\"clusterIP\":\"%s\",\"ports\":[{\"port\":80,"
	         "\"protocol\":\"TCP\"}]}}",
	         name, ip);
	cJSON *o = cJSON_Parse(json);
	const cJSON *v[] = {o};
	cr_assert_eq(em_store_apply(st, v, 1, err, sizeof(err)), 0, "%s", err);
	cJSON_Delete(o);
}

static uint64_t acked(void)
{
	cJSON *r = cJSON_CreateObject();
	cr_assert_eq(em_ctl_status(cloud.ctl, r), 0);
	const cJSON *e = cJSON_GetArrayItem(cJSON_GetObjectItem(r, "edges"), 0);
	uint64_t g = e ? (uint64_t)cJSON_GetObjectItem(e, "generation_acked")->valuedouble : 0;
	cJSON_Delete(r);
	return g;
}

static uint64_t cloud_gen(void)
{
	struct em_store_stats ss;
	em_store_stats(cloud.st, &ss);
	return ss.generation;
}

static uint64_t counter(struct em_ctl *c, const char *name)
{
	struct em_api_counter v[32];
	size_t n = em_ctl_counters(c, v, 32);
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i].name, name) == 0)
			return v[i].value;
	cr_assert_fail("no counter %s", name);
	return 0;
}

static void setup(void)
{
	tmpdb_make(&cloud.db, "em-ctl-cloud");
	tmpdb_make(&edge.db, "em-ctl-edge");
	em_table_init();
	dials = 0;
	cloud_address = "127.0.0.1:20006";
}

static void teardown(void)
{
	if (edge.ctl)
		edge_down();
	if (cloud.ctl)
		cloud_down();
	em_table_shutdown();
	tmpdb_remove(&cloud.db);
	tmpdb_remove(&edge.db);
}

TestSuite(control, .init = setup, .fini = teardown, .timeout = 30);

Test(control, snapshot_push_resync_and_restart)
{
	cloud_up();
	put_service(cloud.st, "web", "10.96.0.10");
	put_service(cloud.st, "api", "10.96.0.11");
	edge_up();
	/* A local object on the edge, not from the cloud. */
	put_service(edge.st, "local", "10.96.0.99");

	/* Snapshot, then the registration Node (a later generation). */
	RUN_UNTIL(count(edge.st, EM_KIND_NODE, "e1") == 1 && acked() == cloud_gen());
	cr_assert_str_eq(cluster_ip(edge.st, "web"), "10.96.0.10");
	cr_assert_str_eq(cluster_ip(edge.st, "api"), "10.96.0.11");
	cr_assert_eq(counter(cloud.ctl, "snapshots"), 1);
	cr_assert_eq(count(cloud.st, EM_KIND_NODE, "e1"), 1);

	/* Live: an update and a delete at the cloud reach the edge. */
	put_service(cloud.st, "web", "10.96.0.20");
	cr_assert_eq(em_store_delete(cloud.st, EM_KIND_SERVICE, "default", "api"), 1);
	RUN_UNTIL(acked() == cloud_gen());
	cr_assert_str_eq(cluster_ip(edge.st, "web"), "10.96.0.20");
	cr_assert_eq(count(edge.st, EM_KIND_SERVICE, "api"), 0);

	/* The edge restarts; meanwhile the cloud changes: it gets only the
	 * changes (no second snapshot). */
	edge_down();
	put_service(cloud.st, "web", "10.96.0.21");
	put_service(cloud.st, "new", "10.96.0.22");
	edge_up();
	RUN_UNTIL(acked() == cloud_gen() && count(edge.st, EM_KIND_SERVICE, "new") == 1);
	cr_assert_str_eq(cluster_ip(edge.st, "web"), "10.96.0.21");
	cr_assert_eq(counter(cloud.ctl, "snapshots"), 1);
	cr_assert_eq(dials, 2);

	/* The cloud restarts (a new epoch) without "new": a snapshot, after
	 * which the edge holds nothing stale, and its local object stays. */
	edge_down();
	cloud_down();
	cloud_up();
	cr_assert_eq(em_store_delete(cloud.st, EM_KIND_SERVICE, "default", "new"), 1);
	edge_up();
	RUN_UNTIL(counter(cloud.ctl, "snapshots") == 1 && acked() == cloud_gen() &&
	          count(edge.st, EM_KIND_SERVICE, "new") == 0);
	cr_assert_str_eq(cluster_ip(edge.st, "web"), "10.96.0.21");
	cr_assert_str_eq(cluster_ip(edge.st, "local"), "10.96.0.99");
	cr_assert_eq(count(edge.st, EM_KIND_NODE, "e1"), 1);
}

/* The edge keeps serving from its store with the cloud gone, across its own
 * restart, and converges when the cloud returns. */
Test(control, autonomy_and_return)
{
	cloud_up();
	put_service(cloud.st, "web", "10.96.0.10");
	edge_up();
	RUN_UNTIL(acked() == cloud_gen() && count(edge.st, EM_KIND_SERVICE, "web") == 1);
	cloud_down();
	RUN_UNTIL(counter(edge.ctl, "edges_connected") == 0);
	edge_down();
	edge_up();
	int before = dials;
	RUN_UNTIL(dials >= before + 3); /* redialling, refused */
	cr_assert_str_eq(cluster_ip(edge.st, "web"), "10.96.0.10");
	/* The cloud returns with a change; the edge redials on its own. */
	cloud_up();
	put_service(cloud.st, "web", "10.96.0.30");
	RUN_UNTIL(acked() == cloud_gen() && strcmp(cluster_ip(edge.st, "web"), "10.96.0.30") == 0);
}

/* A Node the source of truth has is not replaced by the registration. */
Test(control, source_node_wins)
{
	cloud_up();
	char err[256];
	cJSON *n = cJSON_Parse("{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":{\"name\":"
	                       "\"e1\"},\"status\":{\"addresses\":[{\"type\":\"InternalIP\","
	                       "\"address\":\"198.51.100.1\"}]}}");
	const cJSON *v[] = {n};
	cr_assert_eq(em_store_apply(cloud.st, v, 1, err, sizeof(err)), 0, "%s", err);
	cJSON_Delete(n);
	edge_up();
	RUN_UNTIL(acked() == cloud_gen() && count(edge.st, EM_KIND_NODE, "e1") == 1);
	/* Still the source's Node, not one made from the dialling address,
	 * on both sides. */
	char j[2048] = "";
	em_store_list(cloud.st, EM_KIND_NODE, NULL, "e1", copy_cb, j);
	cr_assert_not_null(strstr(j, "198.51.100.1"), "%s", j);
	cr_assert_null(strstr(j, "registered"), "%s", j);
	j[0] = 0;
	em_store_list(edge.st, EM_KIND_NODE, NULL, "e1", copy_cb, j);
	cr_assert_not_null(strstr(j, "198.51.100.1"), "%s", j);
}

/* Bytes from a hostile edge: garbage, a register naming another node, a
 * message before registering. Each gets an error and the stream ends; the
 * cloud carries on. */
static void hostile(const char *line, const char *expect)
{
	int sv[2];
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	struct em_addr src;
	em_addr_parse("192.0.2.8", false, &src);
	em_ctl_accept(cloud.ctl, sv[1], "e9", &src, false);
	cr_assert_eq(write(sv[0], line, strlen(line)), (ssize_t)strlen(line));
	char buf[4096];
	size_t have = 0;
	uint64_t t0 = em_now_ms();
	for (;;) {
		turn(cloud.ctl);
		ssize_t r = recv(sv[0], buf + have, sizeof(buf) - 1 - have, MSG_DONTWAIT);
		if (r == 0)
			break;
		if (r > 0)
			have += (size_t)r;
		cr_assert_lt(em_now_ms() - t0, 5000, "stream not closed after %s", line);
		usleep(1000);
	}
	buf[have] = 0;
	cr_assert_not_null(strstr(buf, "\"operation\":\"error\""), "no error for %s: %s", line,
	                   buf);
	cr_assert_not_null(strstr(buf, expect), "%s: %s", line, buf);
	close(sv[0]);
}

Test(control, hostile_edges)
{
	cloud_up();
	hostile("not json\n", "bad message");
	hostile("{\"header\":{\"msg_id\":\"x\",\"timestamp\":1},\"route\":{\"group\":\"control\","
	        "\"operation\":\"query\",\"resource\":\"sync\"},\"content\":{\"node\":\"e1\","
	        "\"tunnel_port\":1,\"epoch\":\"\",\"generation\":0}}\n",
	        "authenticated");
	hostile("{\"header\":{\"msg_id\":\"x\",\"timestamp\":1},\"route\":{\"group\":\"control\","
	        "\"operation\":\"response\",\"resource\":\"sync\"},\"content\":{\"generation\":5}}\n",
	        "before register");
	hostile("{\"header\":{\"msg_id\":\"x\",\"timestamp\":1},\"route\":{\"group\":\"control\","
	        "\"operation\":\"query\",\"resource\":\"sync\"},\"content\":{\"node\":\"e9\","
	        "\"tunnel_port\":70000,\"epoch\":\"\",\"generation\":0}}\n",
	        "tunnel_port");
	cr_assert_eq(counter(cloud.ctl, "registrations"), 0);
	cr_assert_eq(counter(cloud.ctl, "protocol_errors"), 4);
	cr_assert_eq(count(cloud.st, EM_KIND_NODE, "e9"), 0);
}

/* A generation larger than the cloud's per-edge buffer (5,000 Services in
 * one change) goes out in parts as the edge reads, resumed where each part
 * ended: every object arrives once the marker is acknowledged. */
Test(control, large_generation_in_parts)
{
	enum { N = 5000 };
	cloud_up();
	edge_up();
	RUN_UNTIL(acked() == cloud_gen() && count(edge.st, EM_KIND_NODE, "e1") == 1);
	cJSON **objs = calloc(N, sizeof(*objs));
	for (int i = 0; i < N; i++) {
		char json[512];
		snprintf(json, sizeof(json),
		         "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"s%d\","
		         "\"namespace\":\"bulk\",\"annotations\":{\"pad\":\"%0200d\"}},\"spec\":{"
		         "\"clusterIP\":\"10.97.%d.%d\",\"ports\":[{\"port\":80,\"protocol\":\"TCP\"}]}}",
		         i, i, i / 250, i % 250 + 1);
		objs[i] = cJSON_Parse(json);
	}
	char err[256];
	cr_assert_eq(em_store_apply(cloud.st, (const cJSON *const *)objs, N, err, sizeof(err)), 0,
	             "%s", err);
	for (int i = 0; i < N; i++)
		cJSON_Delete(objs[i]);
	free(objs);
	RUN_UNTIL(acked() == cloud_gen());
	size_t n = 0;
	em_store_list(edge.st, EM_KIND_SERVICE, "bulk", NULL, count_cb, &n);
	cr_assert_eq(n, N);
	cr_assert_eq(counter(cloud.ctl, "snapshots"), 1, "a snapshot instead of the changes");
	cr_assert_gt(counter(cloud.ctl, "bytes_out"), 1u << 20);
}

/* A cloud.address that is a name is looked up without blocking the sync
 * thread (localhost: /etc/hosts, no network). */
Test(control, address_by_name)
{
	cloud_address = "localhost:20006";
	cloud_up();
	put_service(cloud.st, "web", "10.96.0.10");
	edge_up();
	RUN_UNTIL(acked() == cloud_gen() && count(edge.st, EM_KIND_SERVICE, "web") == 1);
	cr_assert_eq(dials, 1);
}

static void put_json(struct em_store *st, const char *json)
{
	char err[512];
	cJSON *o = cJSON_Parse(json);
	const cJSON *v[] = {o};
	cr_assert_not_null(o);
	cr_assert_eq(em_store_apply(st, v, 1, err, sizeof(err)), 0, "%s", err);
	cJSON_Delete(o);
}

static void id_cb(void *arg, const char *json)
{
	cJSON *o = cJSON_Parse(json);
	const cJSON *id = cJSON_GetObjectItem(cJSON_GetObjectItem(o, "router"), "id");
	snprintf(arg, 64, "%s", cJSON_IsString(id) ? id->valuestring : "?");
	cJSON_Delete(o);
}

#define ROUTER_RE(name, type, props)                                                               \
	"{\"apiVersion\":\"rules.kubeedge.io/v1\",\"kind\":\"RuleEndpoint\",\"metadata\":{"        \
	"\"name\":\"" name "\",\"namespace\":\"default\"},\"spec\":{\"ruleEndpointType\":\"" type  \
	"\",\"properties\":" props "}}"
#define ROUTER_RULE(path)                                                                          \
	"{\"apiVersion\":\"rules.kubeedge.io/v1\",\"kind\":\"Rule\",\"metadata\":{\"name\":\"r\"," \
	"\"namespace\":\"default\"},\"spec\":{\"source\":\"rest\",\"sourceResource\":{\"path\":"   \
	"\"" path "\"},\"target\":\"edge\",\"targetResource\":{\"path\":\"/b\"}}}"

/* Router objects are pushed like every stored kind: in the snapshot, live,
 * and deleted; the edge keeps the cloud's ids and serves the Rule too. */
Test(control, router_objects_reach_the_edge)
{
	char cid[64], eid[64];

	cloud_up();
	put_json(cloud.st, ROUTER_RE("rest", "rest", "{}"));
	put_json(cloud.st, ROUTER_RE("edge", "servicebus", "{\"service_port\":\"8080\"}"));
	put_json(cloud.st, ROUTER_RULE("/a"));
	edge_up();
	RUN_UNTIL(acked() == cloud_gen() && count(edge.st, EM_KIND_RULE, "r") == 1);
	cr_assert_eq(count(edge.st, EM_KIND_RULEENDPOINT, NULL), 2);
	em_store_list(cloud.st, EM_KIND_RULE, "default", "r", id_cb, cid);
	em_store_list(edge.st, EM_KIND_RULE, "default", "r", id_cb, eid);
	cr_assert_eq(strlen(cid), 36);
	cr_assert_str_eq(eid, cid, "the edge keeps the cloud's id");
	const struct em_rule *r = em_table_rule(em_table_current(), "default", "r");
	cr_assert(r && r->active && r->local_port == 8080);

	put_json(cloud.st, ROUTER_RULE("/z"));
	RUN_UNTIL(acked() == cloud_gen());
	r = em_table_rule_match(em_table_current(), "default", "/z/1", 4, NULL);
	cr_assert(r && strcmp(r->name, "r") == 0, "the edge's table has the update");
	cr_assert_eq(em_store_delete(cloud.st, EM_KIND_RULE, "default", "r"), 1);
	RUN_UNTIL(acked() == cloud_gen() && count(edge.st, EM_KIND_RULE, "r") == 0);
}

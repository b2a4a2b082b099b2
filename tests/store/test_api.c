/* API socket and meshctl end to end: the sync thread runs in the test
 * process on a temporary data dir; requests go over the real Unix socket,
 * and meshctl (built beside this test) is run against it. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto/em.h"
#include "store/config.h"
#include "store/store.h"
#include "store/sync.h"
#include "store/table.h"

static char dir[64], sock[128], cfg_path[128];
static struct em_sync *sync_thread;

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);
}

static void start(void)
{
	char text[1024], err[512];
	struct em_config *cfg;

	strcpy(dir, "/tmp/em-api-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(sock, sizeof(sock), "%s/api.sock", dir);
	snprintf(cfg_path, sizeof(cfg_path), "%s/edge.json", dir);
	snprintf(
	        text, sizeof(text),
	        "{\"role\":\"edge\",\"node_name\":\"n1\",\"data_dir\":\"%s\",\"api_socket\":\"%s\","
	        "\"workers\":1,\"log_level\":\"error\",\"tunnel\":{\"listen\":\"\"}}",
	        dir, sock);
	write_file(cfg_path, text);
	cr_assert_eq(em_config_load(cfg_path, &cfg, err, sizeof(err)), 0, "%s", err);
	em_table_init();
	cr_assert_eq(em_sync_start(cfg, &sync_thread), 0);
}

static void stop(void)
{
	char cmd[160];
	em_sync_stop(sync_thread);
	em_config_publish(NULL);
	em_table_shutdown();
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

static int dial(void)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct timeval tv = {.tv_sec = 10};
	strcpy(sa.sun_path, sock);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "connect: %s",
	             strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* Sends <req> (a newline is added) and returns the reply line (static). */
static const char *rpc(const char *req)
{
	static char reply[1 << 20];
	size_t n = 0;
	int fd = dial();
	cr_assert_eq(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
	cr_assert_eq(send(fd, "\n", 1, MSG_NOSIGNAL), 1);
	while (n < sizeof(reply) - 1) {
		ssize_t r = recv(fd, reply + n, sizeof(reply) - 1 - n, 0);
		cr_assert_gt(r, 0, "no complete reply to %s", req);
		n += (size_t)r;
		if (reply[n - 1] == '\n')
			break;
	}
	reply[n] = 0;
	close(fd);
	return reply;
}

static const char svc_web[] =
        "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"web\","
        "\"namespace\":\"default\",\"managedFields\":[{\"manager\":\"kubectl\"}]},\"spec\":{"
        "\"clusterIP\":\"10.96.0.80\",\"ports\":[{\"name\":\"http\",\"port\":80,"
        "\"targetPort\":8080}]}}";
static const char ep_web[] =
        "{\"apiVersion\":\"v1\",\"kind\":\"Endpoints\",\"metadata\":{\"name\":\"web\","
        "\"namespace\":\"default\"},\"subsets\":[{\"addresses\":[{\"ip\":\"127.0.0.2\"}],"
        "\"ports\":[{\"name\":\"http\",\"port\":8080}]}]}";

Test(api, apply_list_get_delete_stats, .init = start, .fini = stop, .timeout = 30)
{
	char req[4096];
	snprintf(req, sizeof(req), "{\"op\":\"apply\",\"items\":[%s,%s]}", svc_web, ep_web);
	cr_assert(strstr(rpc(req), "\"ok\":true"), "apply: %s", rpc(req));

	/* the table serves the new service at once */
	struct em_addr dst;
	em_addr_parse("10.96.0.80:80", true, &dst);
	const struct em_svc_port *sp = em_table_lookup(em_table_current(), &dst, IPPROTO_TCP);
	cr_assert_not_null(sp);
	cr_assert_eq(sp->n_ready, 1);

	const char *r = rpc("{\"op\":\"list\",\"kind\":\"services\",\"namespace\":\"default\"}");
	cr_assert(strstr(r, "\"ok\":true") && strstr(r, "\"name\":\"web\""), "%s", r);
	cr_assert(strstr(r, "managedFields"), "objects are returned whole: %s", r);
	r = rpc("{\"op\":\"list\",\"kind\":\"services\",\"namespace\":\"other\"}");
	cr_assert(strstr(r, "\"items\":[]"), "%s", r);
	r = rpc("{\"op\":\"get\",\"kind\":\"endpoints\",\"namespace\":\"default\",\"name\":"
	        "\"web\"}");
	cr_assert(strstr(r, "127.0.0.2"), "%s", r);
	r = rpc("{\"op\":\"get\",\"kind\":\"svc\",\"namespace\":\"default\",\"name\":\"nope\"}");
	cr_assert(strstr(r, "\"ok\":false") && strstr(r, "not found"), "%s", r);
	r = rpc("{\"op\":\"stats\"}");
	cr_assert(strstr(r, "\"services\":1"), "%s", r);
	r = rpc("{\"op\":\"delete\",\"kind\":\"service\",\"namespace\":\"default\",\"name\":"
	        "\"web\"}");
	cr_assert(strstr(r, "\"ok\":true"), "%s", r);
	cr_assert_null(em_table_lookup(em_table_current(), &dst, IPPROTO_TCP));
	r = rpc("{\"op\":\"delete\",\"kind\":\"service\",\"namespace\":\"default\",\"name\":"
	        "\"web\"}");
	cr_assert(strstr(r, "not found"), "%s", r);
}

Test(api, malformed_requests_get_error_replies, .init = start, .fini = stop, .timeout = 30)
{
	static const char *const bad[][2] = {
	        {"not json", "not valid JSON"},
	        {"[1,2]", "must be an object"},
	        {"{\"op\":5}", "must be an object"},
	        {"{\"op\":\"explode\"}", "unknown op"},
	        {"{\"op\":\"list\"}", "missing"},
	        {"{\"op\":\"list\",\"kind\":\"secrets\"}", "unknown kind"},
	        {"{\"op\":\"list\",\"kind\":7}", "non-empty strings"},
	        {"{\"op\":\"get\",\"kind\":\"pods\"}", "get needs"},
	        {"{\"op\":\"apply\"}", "apply needs"},
	        {"{\"op\":\"apply\",\"items\":[{\"kind\":\"Service\",\"metadata\":{}}]}",
	         "items[0]"},
	        {"{\"op\":\"apply\",\"items\":[{\"kind\":\"Service\",\"metadata\":{\"name\":\"a\"},"
	         "\"spec\":{\"ports\":[{\"port\":99999}]}}]}",
	         "port"},
	        {"{\"op\":\"delete\",\"kind\":\"service\"}", "delete needs"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *r = rpc(bad[i][0]);
		cr_assert(strstr(r, "\"ok\":false"), "%s -> %s", bad[i][0], r);
		cr_assert(strstr(r, bad[i][1]), "%s -> %s (wanted \"%s\")", bad[i][0], r,
		          bad[i][1]);
	}
	/* a failed batch applies nothing */
	char req[4096];
	snprintf(req, sizeof(req), "{\"op\":\"apply\",\"items\":[%s,{\"kind\":\"Pod\"}]}", svc_web);
	cr_assert(strstr(rpc(req), "items[1]"));
	cr_assert(strstr(rpc("{\"op\":\"list\",\"kind\":\"services\"}"), "\"items\":[]"));
}

Test(api, peer_disconnecting_mid_request_and_many_clients, .init = start, .fini = stop,
     .timeout = 60)
{
	/* half a request, then gone */
	int fd = dial();
	cr_assert_eq(send(fd, "{\"op\":\"li", 9, MSG_NOSIGNAL), 9);
	close(fd);
	/* a request that is never finished, while others are served */
	int slow = dial();
	cr_assert_eq(send(slow, "{\"op\":", 6, MSG_NOSIGNAL), 6);
	/* a stream of garbage without newline beyond the request limit */
	fd = dial();
	char junk[65536];
	memset(junk, 'x', sizeof(junk));
	for (int i = 0; i < 300; i++)
		if (send(fd, junk, sizeof(junk), MSG_NOSIGNAL) < 0)
			break;
	close(fd);
	/* more clients than the server keeps at once */
	int many[80];
	for (int i = 0; i < 80; i++)
		many[i] = dial();
	for (int i = 0; i < 80; i++)
		close(many[i]);
	close(slow);
	cr_assert(strstr(rpc("{\"op\":\"stats\"}"), "\"ok\":true"), "server still answers");
}

static int run(const char *cmd, char *out, size_t len)
{
	FILE *p = popen(cmd, "r");
	size_t n;
	cr_assert_not_null(p);
	n = fread(out, 1, len - 1, p);
	out[n] = 0;
	int st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(api, meshctl_end_to_end, .init = start, .fini = stop, .timeout = 60)
{
	char cmd[1024], out[65536], file[160];
	const char *ctl = EM_BINARY_DIR "/meshctl";

	if (access(ctl, X_OK) != 0)
		cr_skip_test("%s not built", ctl);
	snprintf(file, sizeof(file), "%s/list.json", dir);
	snprintf(out, sizeof(out), "{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[%s,%s]}",
	         svc_web, ep_web);
	write_file(file, out);

	snprintf(cmd, sizeof(cmd), "%s -s %s apply -f %s 2>&1", ctl, sock, file);
	cr_assert_eq(run(cmd, out, sizeof(out)), 0, "%s", out);
	cr_assert(strstr(out, "applied 2 objects"), "%s", out);

	snprintf(cmd, sizeof(cmd), "%s -s %s get services 2>&1", ctl, sock);
	cr_assert_eq(run(cmd, out, sizeof(out)), 0, "%s", out);
	cr_assert(strstr(out, "web") && strstr(out, "10.96.0.80") && strstr(out, "80/TCP"), "%s",
	          out);

	snprintf(cmd, sizeof(cmd), "%s -s %s get services -n kube-system 2>&1", ctl, sock);
	cr_assert_eq(run(cmd, out, sizeof(out)), 0, "%s", out);
	cr_assert(strstr(out, "No resources found"), "%s", out);

	snprintf(cmd, sizeof(cmd), "%s -s %s get ep -A 2>&1", ctl, sock);
	cr_assert_eq(run(cmd, out, sizeof(out)), 0, "%s", out);
	cr_assert(strstr(out, "NAMESPACE") && strstr(out, "127.0.0.2:8080"), "%s", out);

	snprintf(cmd, sizeof(cmd), "%s -s %s get services -o json", ctl, sock);
	cr_assert_eq(run(cmd, out, sizeof(out)), 0, "%s", out);
	cr_assert_eq(out[0], '[', "a JSON array: %s", out);
	cr_assert(strstr(out, "\"clusterIP\":\t\"10.96.0.80\"") || strstr(out, "10.96.0.80"));

	snprintf(cmd, sizeof(cmd), "%s -s %s delete service default/web 2>&1", ctl, sock);
	cr_assert_eq(run(cmd, out, sizeof(out)), 0, "%s", out);
	snprintf(cmd, sizeof(cmd), "%s -s %s delete service default/web 2>&1", ctl, sock);
	cr_assert_eq(run(cmd, out, sizeof(out)), 1, "deleting twice fails: %s", out);
	cr_assert(strstr(out, "not found"), "%s", out);

	/* a file that is not JSON, and a bad object, are refused with a reason */
	write_file(file, "{ nope");
	snprintf(cmd, sizeof(cmd), "%s -s %s apply -f %s 2>&1", ctl, sock, file);
	cr_assert_eq(run(cmd, out, sizeof(out)), 1, "%s", out);
	cr_assert(strstr(out, "not valid JSON"), "%s", out);
	write_file(file, "{\"kind\":\"Service\",\"metadata\":{\"name\":\"x\"},\"spec\":{"
	                 "\"clusterIP\":\"999.1.1.1\"}}");
	cr_assert_eq(run(cmd, out, sizeof(out)), 1, "%s", out);
	cr_assert(strstr(out, "clusterIP"), "%s", out);

	/* no daemon at the socket */
	snprintf(cmd, sizeof(cmd), "%s -s %s/none.sock get pods 2>&1", ctl, dir);
	cr_assert_eq(run(cmd, out, sizeof(out)), 1, "%s", out);
	cr_assert(strstr(out, "cannot connect"), "%s", out);
}

Test(api, data_survives_restart, .init = start, .fini = stop, .timeout = 30)
{
	char req[4096], err[512];
	struct em_config *cfg;
	snprintf(req, sizeof(req), "{\"op\":\"apply\",\"object\":%s}", svc_web);
	cr_assert(strstr(rpc(req), "\"ok\":true"));
	em_sync_stop(sync_thread);
	cr_assert_eq(em_config_load(cfg_path, &cfg, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(em_sync_start(cfg, &sync_thread), 0);
	cr_assert(strstr(rpc("{\"op\":\"list\",\"kind\":\"services\"}"), "\"name\":\"web\""));
}

Test(api, reload_valid_and_invalid, .init = start, .fini = stop, .timeout = 30)
{
	char text[1024];
	uint64_t ok, refused;
	const struct em_config *cfg = em_config_current();
	cr_assert_eq(cfg->timeouts.connect_ms, 5000);

	snprintf(
	        text, sizeof(text),
	        "{\"role\":\"edge\",\"node_name\":\"n1\",\"data_dir\":\"%s\",\"api_socket\":\"%s\","
	        "\"workers\":1,\"log_level\":\"error\",\"tunnel\":{\"listen\":\"\"},\"timeouts\":{"
	        "\"connect_ms\":1234}}",
	        dir, sock);
	write_file(cfg_path, text);
	em_sync_reload(sync_thread);
	for (int i = 0; i < 200; i++) {
		em_sync_reload_counts(sync_thread, &ok, &refused);
		if (ok + refused >= 1)
			break;
		usleep(10000);
	}
	cr_assert_eq(ok, 1);
	cr_assert_eq(em_config_current()->timeouts.connect_ms, 1234);

	write_file(cfg_path, "{\"role\":\"edge\", \"bogus\": 1}");
	em_sync_reload(sync_thread);
	for (int i = 0; i < 200; i++) {
		em_sync_reload_counts(sync_thread, &ok, &refused);
		if (ok + refused >= 2)
			break;
		usleep(10000);
	}
	cr_assert_eq(refused, 1);
	cr_assert_eq(em_config_current()->timeouts.connect_ms, 1234, "old config keeps serving");
}

/* A counters source standing in for the engine: two groups, one value that
 * changes between calls, and an entry without a name (skipped). */
static size_t fake_calls;
static size_t fake_counters(void *ctx, struct em_api_counter *out, size_t cap)
{
	const uint64_t *base = ctx;
	struct em_api_counter c[] = {
	        {"engine", "connections_accepted", *base + fake_calls++},
	        {"tunnel", "tunnels_up", 3},
	        {"tunnel", NULL, 9},
	};
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]) && i < cap; i++)
		out[i] = c[i];
	return sizeof(c) / sizeof(c[0]);
}

Test(api, stats_reports_data_plane_counters, .init = start, .fini = stop, .timeout = 30)
{
	const char *r = rpc("{\"op\":\"stats\"}");
	cr_assert(strstr(r, "\"ok\":true") && !strstr(r, "\"engine\""), "no source: no groups: %s",
	          r);

	static uint64_t base = 41;
	em_sync_set_counters(sync_thread, fake_counters, &base);
	r = rpc("{\"op\":\"stats\"}");
	cr_assert(strstr(r, "\"engine\":{\"connections_accepted\":41}"), "%s", r);
	cr_assert(strstr(r, "\"tunnel\":{\"tunnels_up\":3}"), "%s", r);
	r = rpc("{\"op\":\"stats\"}");
	cr_assert(strstr(r, "\"connections_accepted\":42"), "read at each request: %s", r);

	em_sync_set_counters(sync_thread, NULL, NULL);
	size_t calls = fake_calls;
	r = rpc("{\"op\":\"stats\"}");
	cr_assert(!strstr(r, "\"engine\""), "source removed: %s", r);
	cr_assert_eq(fake_calls, calls, "a removed source is not called");
}

/* The request loop on its own, as the sync thread drives it: a client that
 * pipelines list requests and reads nothing is served only until 1 MiB of
 * replies waits, is not to be read meanwhile, and gets the rest of its
 * replies, one per request, as it reads. */
Test(api, serve_pauses_at_the_reply_backlog, .timeout = 60)
{
	char tmp[] = "/tmp/em-api-serve-XXXXXX", cmd[96], req[160];
	struct em_store *st;
	struct em_buf in = {0}, out = {0};
	size_t out_off = 0, replies = 0;
	const size_t n_req = 20000;

	cr_assert_not_null(mkdtemp(tmp));
	em_table_init();
	cr_assert_eq(em_store_open(tmp, "n1", &st), 0);
	char apply[512];
	struct em_buf scratch = {0};
	snprintf(apply, sizeof(apply), "{\"op\":\"apply\",\"object\":%s}", svc_web);
	cr_assert_eq(em_api_handle(st, NULL, apply, strlen(apply), &scratch), 0);
	cr_assert_not_null(strstr(scratch.data, "\"ok\":true"), "%s", scratch.data);
	em_buf_free(&scratch);
	snprintf(req, sizeof(req), "{\"op\":\"list\",\"kind\":\"service\"}\n");
	for (size_t i = 0; i < n_req; i++)
		cr_assert_eq(em_buf_append(&in, req, strlen(req)), 0);

	cr_assert_eq(em_api_serve(st, NULL, &in, &out, &out_off), 0);
	cr_assert_geq(out.len, EM_API_MAX_BACKLOG, "served up to the backlog");
	cr_assert_lt(out.len, EM_API_MAX_BACKLOG + 4096, "and stopped there (%zu bytes)", out.len);
	cr_assert_gt(in.len, 0, "later requests wait");
	cr_assert(!em_api_may_read(&in, &out, out_off), "a backlogged client is not read");
	cr_assert(!em_api_has_work(&in, &out, out_off));

	/* The client reads a little at a time; every reply arrives whole. */
	for (int turn = 0; turn < 100000 && (out.len > out_off || in.len); turn++) {
		size_t take = EM_MIN(out.len - out_off, (size_t)300000);
		for (size_t i = out_off; i < out_off + take; i++)
			replies += out.data[i] == '\n';
		out_off += take;
		cr_assert_leq(out.len - out_off, (size_t)EM_API_MAX_BACKLOG + 4096);
		if (em_api_has_work(&in, &out, out_off))
			cr_assert_eq(em_api_serve(st, NULL, &in, &out, &out_off), 0);
		cr_assert_leq(out.cap, (size_t)4 * EM_API_MAX_BACKLOG,
		              "the reply buffer stays bounded");
	}
	cr_assert_eq(replies, n_req, "one reply per request (%zu)", replies);
	cr_assert(em_api_may_read(&in, &out, out_off), "drained: read again");

	/* A line over the limit: an error reply, and the connection is to close. */
	em_buf_free(&in);
	char *big = malloc(EM_API_MAX_REQUEST + 2);
	cr_assert_not_null(big);
	memset(big, 'x', EM_API_MAX_REQUEST + 1);
	cr_assert_eq(em_buf_append(&in, big, EM_API_MAX_REQUEST + 1), 0);
	free(big);
	cr_assert(!em_api_may_read(&in, &out, out_off));
	cr_assert_eq(em_api_serve(st, NULL, &in, &out, &out_off), 1);
	cr_assert_eq(in.len, 0);
	cr_assert_not_null(strstr(out.data, "request too large"));

	em_buf_free(&in);
	em_buf_free(&out);
	em_store_close(st);
	em_table_shutdown();
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
	cr_assert_eq(system(cmd), 0);
}

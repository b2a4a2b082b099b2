/* The Kubernetes API source's pieces without a network: the server URL,
 * watch streams cut into events (chunked framing split at every byte, the
 * line bound), events decoded, the backoff, and batches applied to a real
 * store as diffs (store/kube_wire.c, store/kube_src.c). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "proto/clock.h"
#include "store/kube_src.h"
#include "store/kube_wire.h"
#include "store/store.h"
#include "tmpdb.h"

/* ---- URL ---- */

Test(kube_url, accepted)
{
	struct em_kube_url u;
	cr_assert_eq(em_kube_url_parse("https://api.example.com:6443", &u), 0);
	cr_expect(u.tls);
	cr_expect_str_eq(u.host, "api.example.com");
	cr_expect_eq(u.port, 6443);
	cr_expect_str_eq(u.prefix, "");
	cr_expect_str_eq(u.authority, "api.example.com:6443");

	cr_assert_eq(em_kube_url_parse("http://127.0.0.1:8001/", &u), 0);
	cr_expect(!u.tls);
	cr_expect_str_eq(u.host, "127.0.0.1");
	cr_expect_eq(u.port, 8001);
	cr_expect_str_eq(u.prefix, "");

	cr_assert_eq(em_kube_url_parse("https://[fd00::1]/k8s/clusters/c-1/", &u), 0);
	cr_expect_str_eq(u.host, "fd00::1");
	cr_expect_eq(u.port, 443);
	cr_expect_str_eq(u.prefix, "/k8s/clusters/c-1");
	cr_expect_str_eq(u.authority, "[fd00::1]:443");

	cr_assert_eq(em_kube_url_parse("http://localhost", &u), 0);
	cr_expect_eq(u.port, 80);
}

Test(kube_url, refused)
{
	static const char *const bad[] = {
	        "",
	        "ftp://host",
	        "https://",
	        "https://:443",
	        "https://host:0",
	        "https://host:65536",
	        "https://host:12x",
	        "https://host:",
	        "https://user@host",
	        "https://ho st",
	        "https://host/a?b=c",
	        "https://host/a#frag",
	        "https://[::1",
	        "https://[10.0.0.1]:80",
	        "https://[::1]x",
	        "HTTPS://host",
	        "in-cluster",
	};
	struct em_kube_url u;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_expect_eq(em_kube_url_parse(bad[i], &u), -EINVAL, "accepted \"%s\"", bad[i]);
}

/* ---- lines of a watch stream ---- */

struct got {
	char text[8192];
	size_t len;
	int lines;
	int stop_at; /* return -EINTR on this line (1-based), 0: never */
};

static int collect(void *arg, const char *line, size_t len)
{
	struct got *g = arg;
	g->lines++;
	cr_assert_lt(g->len + len + 1, sizeof(g->text));
	memcpy(g->text + g->len, line, len);
	g->len += len;
	g->text[g->len++] = '|';
	g->text[g->len] = 0;
	return g->lines == g->stop_at ? -EINTR : 0;
}

static void head_of(const char *resp, struct em_http1_head *h, size_t *hl)
{
	int n = em_http1_parse_response(NULL, resp, strlen(resp), 0, NULL, h);
	cr_assert_gt(n, 0, "head: %d", n);
	*hl = (size_t)n;
}

#define CHUNKED_HEAD "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"

/* The body: events across chunk boundaries, a chunk holding two events,
 * CRLF line ends, an empty line, a chunk extension, and the last chunk. */
static const char chunked_body[] = "5\r\n{\"a\":\r\n"
                                   "c\r\n1}\n{\"b\":2}\r\n\r\n"
                                   "3;ext=1\r\n\n\n{\r\n"
                                   "7\r\n\"c\":3}\n\r\n"
                                   "0\r\n\r\n";
static const char want_lines[] = "{\"a\":1}|{\"b\":2}|{\"c\":3}|";

/* Feeds <parts> of the body in order; every part must be consumed whole. */
static void feed_parts(const char *body, const size_t *cuts, size_t n_cuts, struct got *g,
                       struct em_kube_lines *l)
{
	size_t start = 0, total = strlen(body);
	for (size_t i = 0; i <= n_cuts; i++) {
		size_t end = i < n_cuts ? cuts[i] : total;
		ssize_t n = em_kube_lines_feed(l, body + start, end - start, collect, g);
		cr_assert_eq(n, (ssize_t)(end - start), "cut %zu..%zu: consumed %zd", start, end,
		             n);
		start = end;
	}
}

Test(kube_lines, chunked_split_at_every_byte)
{
	struct em_http1_head h;
	size_t hl, total = strlen(chunked_body);
	head_of(CHUNKED_HEAD, &h, &hl);
	for (size_t cut = 0; cut <= total; cut++) {
		struct got g = {0};
		struct em_kube_lines l = {0};
		em_kube_lines_init(&l, &h, 64);
		feed_parts(chunked_body, &cut, 1, &g, &l);
		cr_expect_str_eq(g.text, want_lines, "cut at %zu", cut);
		cr_expect(em_kube_lines_done(&l), "cut at %zu: not done", cut);
		cr_expect_eq(em_kube_lines_partial(&l), 0);
		em_kube_lines_free(&l);
	}
	/* Byte by byte, and every pair of cuts. */
	struct got g = {0};
	struct em_kube_lines l = {0};
	em_kube_lines_init(&l, &h, 64);
	for (size_t i = 0; i < total; i++)
		cr_assert_eq(em_kube_lines_feed(&l, chunked_body + i, 1, collect, &g), 1);
	cr_expect_str_eq(g.text, want_lines);
	em_kube_lines_free(&l);
	for (size_t a = 0; a <= total; a++)
		for (size_t b = a; b <= total; b++) {
			struct got g2 = {0};
			struct em_kube_lines l2 = {0};
			size_t cuts[2] = {a, b};
			em_kube_lines_init(&l2, &h, 64);
			feed_parts(chunked_body, cuts, 2, &g2, &l2);
			cr_assert_str_eq(g2.text, want_lines, "cuts %zu, %zu", a, b);
			em_kube_lines_free(&l2);
		}
}

Test(kube_lines, body_end_and_next_bytes)
{
	struct em_http1_head h;
	size_t hl;
	head_of(CHUNKED_HEAD, &h, &hl);
	struct got g = {0};
	struct em_kube_lines l = {0};
	em_kube_lines_init(&l, &h, 64);
	/* The body ends inside the buffer: the rest is not consumed. */
	const char in[] = "4\r\n{}\n\n\r\n0\r\n\r\nHTTP/1.1";
	ssize_t n = em_kube_lines_feed(&l, in, strlen(in), collect, &g);
	cr_expect_eq(n, (ssize_t)(strlen(in) - strlen("HTTP/1.1")));
	cr_expect_str_eq(g.text, "{}|");
	em_kube_lines_free(&l);

	/* A cut inside an event: the half event is held, never passed. */
	em_kube_lines_init(&l, &h, 64);
	struct got g2 = {0};
	const char cut[] = "9\r\n{\"x\":1}\n{\r\n";
	cr_expect_eq(em_kube_lines_feed(&l, cut, strlen(cut), collect, &g2), (ssize_t)strlen(cut));
	cr_expect_str_eq(g2.text, "{\"x\":1}|");
	cr_expect_eq(em_kube_lines_partial(&l), 1);
	cr_expect(!em_kube_lines_done(&l));
	em_kube_lines_free(&l);
}

Test(kube_lines, content_length_and_until_close)
{
	struct em_http1_head h;
	size_t hl;
	head_of("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", &h, &hl);
	struct got g = {0};
	struct em_kube_lines l = {0};
	em_kube_lines_init(&l, &h, 64);
	cr_expect_eq(em_kube_lines_feed(&l, "{\"a\":1}\n{}EXTRA", 15, collect, &g), 10);
	cr_expect(em_kube_lines_done(&l));
	cr_expect_str_eq(g.text, "{\"a\":1}|");
	cr_expect_eq(em_kube_lines_partial(&l), 2); /* "{}" never finished */
	em_kube_lines_free(&l);

	head_of("HTTP/1.0 200 OK\r\n\r\n", &h, &hl);
	struct got g2 = {0};
	em_kube_lines_init(&l, &h, 64);
	cr_expect_eq(em_kube_lines_feed(&l, "{}\n{}\n", 6, collect, &g2), 6);
	cr_expect(!em_kube_lines_done(&l));
	cr_expect_eq(g2.lines, 2);
	em_kube_lines_free(&l);
}

Test(kube_lines, bounded)
{
	struct em_http1_head h;
	size_t hl;
	head_of(CHUNKED_HEAD, &h, &hl);
	struct em_kube_lines l = {0};
	struct got g = {0};
	/* A line of exactly the limit passes, split or whole. */
	em_kube_lines_init(&l, &h, 8);
	const char *whole = "9\r\n12345678\n\r\n", *split = "4\r\n1234\r\n4\r\n5678\r\n1\r\n\n\r\n";
	cr_expect_eq(em_kube_lines_feed(&l, whole, strlen(whole), collect, &g),
	             (ssize_t)strlen(whole));
	cr_expect_eq(em_kube_lines_feed(&l, split, strlen(split), collect, &g),
	             (ssize_t)strlen(split));
	cr_expect_str_eq(g.text, "12345678|12345678|");
	/* One more byte, whole or across chunks: refused, and no more held. */
	cr_expect_eq(em_kube_lines_feed(&l, "a\r\n123456789\n\r\n", 16, collect, &g), -EMSGSIZE);
	cr_expect_leq(l.cap, 8);
	em_kube_lines_free(&l);
	em_kube_lines_init(&l, &h, 8);
	cr_expect_eq(em_kube_lines_feed(&l, "5\r\n12345\r\n", 10, collect, &g), 10);
	cr_expect_eq(em_kube_lines_feed(&l, "5\r\n67890\r\n", 10, collect, &g), -EMSGSIZE);
	cr_expect_leq(l.cap, 8);
	em_kube_lines_free(&l);
	/* Bad framing. */
	em_kube_lines_init(&l, &h, 8);
	cr_expect_eq(em_kube_lines_feed(&l, "zz\r\n", 4, collect, &g), -EBADMSG);
	em_kube_lines_free(&l);
	/* The callback's code stops the feed. */
	struct got g3 = {.stop_at = 1};
	em_kube_lines_init(&l, &h, 8);
	cr_expect_eq(em_kube_lines_feed(&l, "6\r\n1\n2\n3\n\r\n", 11, collect, &g3), -EINTR);
	cr_expect_eq(g3.lines, 1);
	em_kube_lines_free(&l);
}

/* ---- events ---- */

static struct em_kube_event ev;
static char err[256];

static void parse_ok(const char *line)
{
	int rc = em_kube_event_parse(line, strlen(line), &ev, err, sizeof(err));
	cr_assert_eq(rc, 0, "%s: %s", line, err);
}

Test(kube_event, types)
{
	parse_ok(
	        "{\"type\":\"ADDED\",\"object\":{\"kind\":\"Service\",\"metadata\":{\"name\":\"a\","
	        "\"resourceVersion\":\"12\"}}}");
	cr_expect_eq(ev.type, EM_KUBE_ADDED);
	cr_expect_str_eq(ev.rv, "12");
	cJSON_Delete(ev.root);
	parse_ok("{\"type\":\"MODIFIED\",\"object\":{}}");
	cr_expect_eq(ev.type, EM_KUBE_MODIFIED);
	cr_expect_null(ev.rv);
	cJSON_Delete(ev.root);
	parse_ok("{\"type\":\"DELETED\",\"object\":{\"metadata\":{\"name\":\"a\"}}}");
	cr_expect_eq(ev.type, EM_KUBE_DELETED);
	cJSON_Delete(ev.root);
	parse_ok("{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Pod\",\"metadata\":"
	         "{\"resourceVersion\":\"777\"}}}");
	cr_expect_eq(ev.type, EM_KUBE_BOOKMARK);
	cr_expect_str_eq(ev.rv, "777");
	cJSON_Delete(ev.root);
	parse_ok("{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"code\":410,"
	         "\"message\":\"too old resource version: 1 (5)\"}}");
	cr_expect_eq(ev.type, EM_KUBE_ERROR);
	cr_expect_eq(ev.code, 410);
	cr_expect_str_eq(ev.message, "too old resource version: 1 (5)");
	cJSON_Delete(ev.root);
}

Test(kube_event, refused)
{
	static const char *const bad[] = {
	        "",
	        "{",
	        "[]",
	        "{\"type\":\"ADDED\"}",
	        "{\"type\":\"ADDED\",\"object\":[]}",
	        "{\"type\":\"SYNC\",\"object\":{}}",
	        "{\"object\":{}}",
	        "{\"type\":1,\"object\":{}}",
	        "{\"type\":\"ADDED\",\"object\":{}} x",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ev.root = (cJSON *)1;
		cr_expect_eq(em_kube_event_parse(bad[i], strlen(bad[i]), &ev, err, sizeof(err)),
		             -EINVAL, "accepted %s", bad[i]);
		cr_expect_null(ev.root);
	}
}

Test(kube_backoff, doubles_with_jitter_within_bounds)
{
	uint32_t base = 0;
	uint32_t want[] = {200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		uint32_t d = em_backoff(&base, 200, 30000, (uint64_t)i * 7919);
		cr_expect_eq(base, want[i]);
		cr_expect(d >= want[i] / 2 && d <= want[i], "step %zu: %u", i, d);
	}
}

/* ---- batches applied as diffs ---- */

static struct tmpdb db;
static struct em_store *st;
static struct em_kube_src *src;

static void setup(void)
{
	tmpdb_make(&db, "em-kube");
	cr_assert_eq(em_store_open(db.dir, "n1", &st), 0);
	cr_assert_not_null(src = em_kube_src_new(st));
}

static void teardown(void)
{
	em_kube_src_free(src);
	em_store_close(st);
	tmpdb_remove(&db);
}

/* A list item: no kind, no apiVersion (as list responses give them). */
static cJSON *svc(const char *ns, const char *name, const char *rv, int port)
{
	char text[512];
	snprintf(text, sizeof(text),
	         "{\"metadata\":{\"name\":\"%s\",\"namespace\":\"%s\",\"resourceVersion\":\"%s\","
	         "\"managedFields\":[{\"manager\":\"kubectl\"}]},"
	         "\"spec\":{\"clusterIP\":\"10.96.0.10\",\"ports\":[{\"port\":%d}]}}",
	         name, ns, rv, port);
	cJSON *o = cJSON_Parse(text);
	cr_assert_not_null(o);
	return o;
}

static size_t count(enum em_kind k)
{
	struct em_store_stats ss;
	em_store_stats(st, &ss);
	return ss.objects[k];
}

static void ignore(void *arg, const char *json)
{
	(void)arg;
	(void)json;
}

static bool has(enum em_kind k, const char *ns, const char *name)
{
	return em_store_list(st, k, ns, name, ignore, NULL) == 1;
}

static uint64_t generation(void)
{
	struct em_store_stats ss;
	em_store_stats(st, &ss);
	return ss.generation;
}

static void list(unsigned flags, int n, ...)
{
	struct em_kube_batch *b = em_kube_batch_new(EM_KIND_SERVICE, EM_KUBE_LIST | flags);
	va_list ap;
	va_start(ap, n);
	for (int i = 0; i < n; i++) {
		const char *name = va_arg(ap, const char *);
		const char *rv = va_arg(ap, const char *);
		cr_assert_eq(em_kube_batch_upsert(b, svc("default", name, rv, 80), 100), 0);
	}
	va_end(ap);
	cr_assert_eq(em_kube_src_apply(src, b), 0);
}

TestSuite(kube_src, .init = setup, .fini = teardown);

Test(kube_src, relist_deletes_what_the_list_lacks)
{
	list(EM_KUBE_LIST_FIRST | EM_KUBE_LIST_LAST, 3, "a", "1", "b", "2", "c", "3");
	cr_expect_eq(count(EM_KIND_SERVICE), 3);
	/* Another source's object of the same kind. */
	cJSON *other = svc("default", "manual", "9", 80);
	cJSON_AddStringToObject(other, "kind", "Service");
	const cJSON *objs[] = {other};
	cr_assert_eq(em_store_apply(st, objs, 1, err, sizeof(err)), 0, "%s", err);
	cJSON_Delete(other);

	list(EM_KUBE_LIST_FIRST | EM_KUBE_LIST_LAST, 2, "a", "1", "c", "4");
	cr_expect(has(EM_KIND_SERVICE, "default", "a"));
	cr_expect(!has(EM_KIND_SERVICE, "default", "b"));
	cr_expect(has(EM_KIND_SERVICE, "default", "c"));
	cr_expect(has(EM_KIND_SERVICE, "default", "manual"), "another source's object went");
	struct em_kube_src_stats s;
	em_kube_src_stats(src, &s);
	cr_expect_eq(s.objects, 2);
	cr_expect_eq(s.deleted, 1);
	cr_expect_eq(s.applied, 4, "unchanged a applied again: %llu",
	             (unsigned long long)s.applied);
}

Test(kube_src, pages_delete_only_when_the_list_completes)
{
	list(EM_KUBE_LIST_FIRST | EM_KUBE_LIST_LAST, 3, "a", "1", "b", "2", "c", "3");
	list(EM_KUBE_LIST_FIRST, 1, "a", "1");
	cr_expect(has(EM_KIND_SERVICE, "default", "b"), "deleted before the list ended");
	/* That list was cut short; a new one starts over. */
	list(EM_KUBE_LIST_FIRST, 1, "b", "2");
	list(0, 1, "d", "5");
	cr_expect_eq(count(EM_KIND_SERVICE), 4);
	list(EM_KUBE_LIST_LAST, 1, "e", "6");
	cr_expect(!has(EM_KIND_SERVICE, "default", "a"));
	cr_expect(has(EM_KIND_SERVICE, "default", "b"));
	cr_expect(!has(EM_KIND_SERVICE, "default", "c"));
	cr_expect(has(EM_KIND_SERVICE, "default", "d"));
	cr_expect(has(EM_KIND_SERVICE, "default", "e"));
}

Test(kube_src, unchanged_versions_change_nothing)
{
	list(EM_KUBE_LIST_FIRST | EM_KUBE_LIST_LAST, 2, "a", "1", "b", "2");
	uint64_t g = generation();
	list(EM_KUBE_LIST_FIRST | EM_KUBE_LIST_LAST, 2, "a", "1", "b", "2");
	cr_expect_eq(generation(), g, "a re-list of the same versions published a snapshot");
	list(EM_KUBE_LIST_FIRST | EM_KUBE_LIST_LAST, 2, "a", "1", "b", "3");
	cr_expect_eq(generation(), g + 1);
	/* Deleted behind the source's back: the next list puts it back. */
	cr_assert_eq(em_store_delete(st, EM_KIND_SERVICE, "default", "a"), 1);
	list(EM_KUBE_LIST_FIRST | EM_KUBE_LIST_LAST, 2, "a", "1", "b", "3");
	cr_expect(has(EM_KIND_SERVICE, "default", "a"));
}

Test(kube_src, events_and_other_sources)
{
	struct em_kube_batch *b = em_kube_batch_new(EM_KIND_SERVICE, 0);
	cr_assert_eq(em_kube_batch_upsert(b, svc("ns1", "w", "10", 80), 10), 0);
	cr_assert_eq(em_kube_batch_upsert(b, svc("ns1", "x", "11", 80), 10), 0);
	cr_expect(em_kube_batch_has(b, "ns1", "w"));
	cr_expect(!em_kube_batch_has(b, "ns2", "w"));
	cr_assert_eq(em_kube_src_apply(src, b), 0);
	cr_expect(has(EM_KIND_SERVICE, "ns1", "w"));

	cJSON *other = svc("ns1", "manual", "9", 80);
	cJSON_AddStringToObject(other, "kind", "Service");
	const cJSON *objs[] = {other};
	cr_assert_eq(em_store_apply(st, objs, 1, err, sizeof(err)), 0, "%s", err);
	cJSON_Delete(other);

	b = em_kube_batch_new(EM_KIND_SERVICE, 0);
	cr_assert_eq(em_kube_batch_delete(b, "ns1", "w"), 0);
	cr_assert_eq(em_kube_batch_delete(b, "ns1", "manual"), 0); /* never ours */
	cr_assert_eq(em_kube_src_apply(src, b), 0);
	cr_expect(!has(EM_KIND_SERVICE, "ns1", "w"));
	cr_expect(has(EM_KIND_SERVICE, "ns1", "manual"), "deleted another source's object");
	cr_expect(has(EM_KIND_SERVICE, "ns1", "x"));
	/* A list of the kind leaves the other source alone too. */
	list(EM_KUBE_LIST_FIRST | EM_KUBE_LIST_LAST, 0);
	cr_expect(!has(EM_KIND_SERVICE, "ns1", "x"));
	cr_expect(has(EM_KIND_SERVICE, "ns1", "manual"));
}

Test(kube_src, refused_objects_are_skipped)
{
	struct em_kube_batch *b = em_kube_batch_new(
	        EM_KIND_SERVICE, EM_KUBE_LIST | EM_KUBE_LIST_FIRST | EM_KUBE_LIST_LAST);
	cr_assert_eq(em_kube_batch_upsert(b, svc("default", "a", "1", 80), 10), 0);
	cr_assert_eq(em_kube_batch_upsert(b, svc("default", "bad", "2", 70000), 10), 0);
	cr_assert_eq(em_kube_batch_upsert(b, svc("default", "c", "3", 80), 10), 0);
	cr_assert_eq(em_kube_src_apply(src, b), 0);
	cr_expect(has(EM_KIND_SERVICE, "default", "a"));
	cr_expect(!has(EM_KIND_SERVICE, "default", "bad"));
	cr_expect(has(EM_KIND_SERVICE, "default", "c"));
	struct em_kube_src_stats s;
	em_kube_src_stats(src, &s);
	cr_expect_eq(s.refused, 1);
	cr_expect_eq(s.objects, 2);
}

/* Refused by the store itself (an endpoint inside the service ranges), not
 * by the decoder: the batch is retried without it. */
Test(kube_src, store_refusals_retry_the_rest)
{
	struct em_cidr r;
	cr_assert_eq(em_cidr_parse("10.96.0.0/12", &r), 0);
	cr_assert_eq(em_store_set_service_cidrs(st, &r, 1), 0);
	struct em_kube_batch *b = em_kube_batch_new(EM_KIND_ENDPOINTS, 0);
	const char *ips[] = {"10.0.0.1", "10.96.0.5", "10.0.0.2"};
	for (int i = 0; i < 3; i++) {
		char text[300];
		snprintf(text, sizeof(text),
		         "{\"metadata\":{\"name\":\"e%d\",\"namespace\":\"default\"},"
		         "\"subsets\":[{\"addresses\":[{\"ip\":\"%s\"}],\"ports\":[{\"port\":80}]}]"
		         "}",
		         i, ips[i]);
		cr_assert_eq(em_kube_batch_upsert(b, cJSON_Parse(text), 10), 0);
	}
	cr_assert_eq(em_kube_src_apply(src, b), 0);
	cr_expect(has(EM_KIND_ENDPOINTS, "default", "e0"));
	cr_expect(!has(EM_KIND_ENDPOINTS, "default", "e1"));
	cr_expect(has(EM_KIND_ENDPOINTS, "default", "e2"));
}

/* What list items lack is filled in, and managedFields are not stored. */
static void find_text(void *arg, const char *json)
{
	char *out = arg;
	snprintf(out, 2048, "%s", json);
}

Test(kube_src, list_items_get_their_kind)
{
	list(EM_KUBE_LIST_FIRST | EM_KUBE_LIST_LAST, 1, "a", "1");
	char json[2048] = "";
	cr_assert_eq(em_store_list(st, EM_KIND_SERVICE, "default", "a", find_text, json), 1);
	cr_expect(strstr(json, "\"kind\":\"Service\""), "%s", json);
	cr_expect(strstr(json, "\"apiVersion\":\"v1\""), "%s", json);
	cr_expect(!strstr(json, "managedFields"), "%s", json);
}

/* Nodes are cluster-scoped: deletes name them without a namespace. */
Test(kube_src, node_deletes)
{
	struct em_kube_batch *b = em_kube_batch_new(EM_KIND_NODE, 0);
	cr_assert_eq(em_kube_batch_upsert(
	                     b,
	                     cJSON_Parse("{\"metadata\":{\"name\":\"edge-1\"},\"status\":"
	                                 "{\"addresses\":[{\"type\":\"InternalIP\",\"address\":"
	                                 "\"192.0.2.1\"}]}}"),
	                     10),
	             0);
	cr_assert_eq(em_kube_src_apply(src, b), 0);
	cr_expect(has(EM_KIND_NODE, EM_NODE_NAMESPACE, "edge-1"));
	b = em_kube_batch_new(EM_KIND_NODE, 0);
	cr_assert_eq(em_kube_batch_delete(b, "", "edge-1"), 0);
	cr_assert_eq(em_kube_src_apply(src, b), 0);
	cr_expect(!has(EM_KIND_NODE, EM_NODE_NAMESPACE, "edge-1"));
}

/* Many objects: the key table grows and a list of 3000 is one change. */
Test(kube_src, many)
{
	struct em_kube_batch *b = em_kube_batch_new(
	        EM_KIND_SERVICE, EM_KUBE_LIST | EM_KUBE_LIST_FIRST | EM_KUBE_LIST_LAST);
	for (int i = 0; i < 3000; i++) {
		char name[32];
		snprintf(name, sizeof(name), "s%d", i);
		cr_assert_eq(em_kube_batch_upsert(b, svc("default", name, "1", 80), 10), 0);
	}
	uint64_t g = generation();
	cr_assert_eq(em_kube_src_apply(src, b), 0);
	cr_expect_eq(generation(), g + 1);
	cr_expect_eq(count(EM_KIND_SERVICE), 3000);
	list(EM_KUBE_LIST_FIRST | EM_KUBE_LIST_LAST, 1, "s7", "1");
	cr_expect_eq(count(EM_KIND_SERVICE), 1);
	cr_expect(has(EM_KIND_SERVICE, "default", "s7"));
}

/* Prometheus text from the stats reply, and the admin listener's HTTP. */
#include "store/admin.h"

#include "proto/em.h"
#include "store/qps.h"
#include "store/svcstat.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Rendering stops at the first failed append: <rc> keeps it. */
struct out {
	struct em_buf *b;
	int rc;
};

static void put(struct out *o, const char *s, size_t n)
{
	if (!o->rc)
		o->rc = em_buf_append(o->b, s, n);
}

static void putf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct out *o, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	put(o, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* A label value: backslash, quote and newline escaped. */
static void put_label(struct out *o, const char *v)
{
	for (const char *p = v;;) {
		size_t n = strcspn(p, "\\\"\n");
		put(o, p, n);
		p += n;
		if (!*p)
			return;
		put(o, *p == '\n' ? "\\n" : *p == '"' ? "\\\"" : "\\\\", 2);
		p++;
	}
}

static void family(struct out *o, const char *name, const char *type, const char *help)
{
	putf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One sample: <name>{<k1>="<v1>",...} <value>; <labels> pairs end at NULL. */
static void sample(struct out *o, const char *name, const char *const *labels, double v)
{
	put(o, name, strlen(name));
	if (labels && labels[0]) {
		put(o, "{", 1);
		for (size_t i = 0; labels[i]; i += 2) {
			putf(o, "%s%s=\"", i ? "," : "", labels[i]);
			put_label(o, labels[i + 1] ? labels[i + 1] : "");
			put(o, "\"", 1);
		}
		put(o, "}", 1);
	}
	/* Counters and levels are integers; the rest prints exactly enough. */
	if (v == (double)(long long)v && v < 9.0e15 && v > -9.0e15)
		putf(o, " %lld\n", (long long)v);
	else
		putf(o, " %.9g\n", v);
}

static double num(const cJSON *obj, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
	return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static const char *str(const cJSON *obj, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
	return cJSON_IsString(v) && v->valuestring ? v->valuestring : "";
}

/* Members of the counter groups that are levels, not counts. */
static bool is_gauge(const char *group, const char *name)
{
	static const char *const gauges[] = {
	        "engine.connections_active", "tunnel.tunnels_up",       "tunnel.streams_active",
	        "tunnel.handshakes_pending", "control.edges_connected", "control.edges_known",
	        "control.generation", "router.tls_connections", "controller.changelog_entries",
	        "controller.changelog_bytes", "controller.changelog_floor",
	        "controller.changelog_newest", "controller.manifest_files",
	        "controller.manifest_objects", "controller.kube_objects",
	};
	char key[128];
	snprintf(key, sizeof(key), "%s.%s", group, name);
	for (size_t i = 0; i < sizeof(gauges) / sizeof(gauges[0]); i++)
		if (strcmp(key, gauges[i]) == 0)
			return true;
	return false;
}

/* A name part Prometheus accepts: [a-z0-9_] only (the groups and counter
 * names are the daemon's own, so this only guards the format). */
static bool plain(const char *s)
{
	if (!*s)
		return false;
	for (const char *p = s; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
			return false;
	return true;
}

/* Every object of <stats> whose members are all numbers: a counter group. */
static void groups(struct out *o, const cJSON *stats)
{
	const cJSON *g;
	cJSON_ArrayForEach(g, stats)
	{
		if (!cJSON_IsObject(g) || !g->string || !plain(g->string) ||
		    strcmp(g->string, "objects") == 0 || strcmp(g->string, "fastpath") == 0)
			continue;
		const cJSON *m;
		bool all = g->child != NULL;
		cJSON_ArrayForEach(m, g) all = all && cJSON_IsNumber(m) && m->string && plain(m->string);
		if (!all)
			continue;
		cJSON_ArrayForEach(m, g)
		{
			char name[160], help[192];
			bool gauge = is_gauge(g->string, m->string);
			snprintf(name, sizeof(name), "edgemesh_%s_%s%s", g->string, m->string,
			         gauge ? "" : "_total");
			snprintf(help, sizeof(help), "%s %s (meshctl stats: %s.%s)",
			         gauge ? "Level of" : "Count of", m->string, g->string, m->string);
			family(o, name, gauge ? "gauge" : "counter", help);
			sample(o, name, NULL, m->valuedouble);
		}
	}
}

static void table(struct out *o, const cJSON *stats)
{
	family(o, "edgemesh_config_reloads_total", "counter", "Configuration reloads applied.");
	sample(o, "edgemesh_config_reloads_total", NULL, num(stats, "reloads"));
	family(o, "edgemesh_config_reload_failures_total", "counter",
	       "Configuration reloads refused (the running config kept).");
	sample(o, "edgemesh_config_reload_failures_total", NULL, num(stats, "reload_failures"));
	family(o, "edgemesh_table_generation", "gauge", "Generation of the published table.");
	sample(o, "edgemesh_table_generation", NULL, num(stats, "generation"));
	family(o, "edgemesh_table_services", "gauge", "Services in the published table.");
	sample(o, "edgemesh_table_services", NULL, num(stats, "services"));
	family(o, "edgemesh_table_bytes", "gauge", "Bytes of the published table.");
	sample(o, "edgemesh_table_bytes", NULL, num(stats, "table_bytes"));
	family(o, "edgemesh_table_build_seconds", "gauge", "Time the last table build took.");
	sample(o, "edgemesh_table_build_seconds", NULL, num(stats, "last_build_us") / 1e6);
	family(o, "edgemesh_store_objects_skipped_total", "counter",
	       "Stored objects left out of the table, by reason.");
	const char *mal[] = {"reason", "malformed", NULL};
	const char *unr[] = {"reason", "unreadable", NULL};
	sample(o, "edgemesh_store_objects_skipped_total", mal, num(stats, "skipped_malformed"));
	sample(o, "edgemesh_store_objects_skipped_total", unr, num(stats, "skipped_unreadable"));
	const cJSON *objs = cJSON_GetObjectItemCaseSensitive(stats, "objects");
	if (cJSON_IsObject(objs)) {
		family(o, "edgemesh_store_objects", "gauge", "Stored objects, by kind.");
		const cJSON *k;
		cJSON_ArrayForEach(k, objs)
		{
			if (!cJSON_IsNumber(k) || !k->string)
				continue;
			const char *l[] = {"kind", k->string, NULL};
			sample(o, "edgemesh_store_objects", l, k->valuedouble);
		}
	}
}

/* A family over the objects of array <arr>: one sample each, labelled by
 * the string members <l1> (and <l2> when not NULL), valued by <member>. */
static void per_item(struct out *o, const cJSON *arr, const char *name, const char *type,
                     const char *help, const char *member, const char *l1, const char *l2)
{
	if (!cJSON_IsArray(arr) || !arr->child)
		return;
	family(o, name, type, help);
	const cJSON *e;
	cJSON_ArrayForEach(e, arr)
	{
		const char *l[] = {l1, str(e, l1), l2, l2 ? str(e, l2) : NULL, NULL};
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, member);
		sample(o, name, l, cJSON_IsBool(v) ? (cJSON_IsTrue(v) ? 1 : 0) : num(e, member));
	}
}

static void arrays(struct out *o, const cJSON *stats)
{
	const cJSON *q = cJSON_GetObjectItemCaseSensitive(stats, "qps");
	per_item(o, q, "edgemesh_qps_limit", "gauge",
	         "A Service's QPS limit on this node (edgemesh.io/qps).", "limit", "service", NULL);
	per_item(o, q, "edgemesh_qps_burst", "gauge",
	         "A Service's QPS burst on this node (edgemesh.io/qps-burst).", "burst", "service",
	         NULL);
	per_item(o, q, "edgemesh_qps_allowed_total", "counter",
	         "Requests or connections a Service's QPS limit let through.", "allowed", "service",
	         NULL);
	per_item(o, q, "edgemesh_qps_rejected_total", "counter",
	         "Requests or connections refused over a Service's QPS limit.", "rejected",
	         "service", NULL);
	const cJSON *r = cJSON_GetObjectItemCaseSensitive(stats, "relay");
	per_item(o, r, "edgemesh_relay_streams_total", "counter",
	         "Streams the cloud relayed from one edge to another.", "streams", "from", "to");
	per_item(o, r, "edgemesh_relay_refused_total", "counter",
	         "Relays the cloud refused from one edge to another.", "refused", "from", "to");
	per_item(o, r, "edgemesh_relay_sent_bytes_total", "counter",
	         "Bytes the cloud relayed from the opening edge to the other.", "bytes_from_to",
	         "from", "to");
	per_item(o, r, "edgemesh_relay_returned_bytes_total", "counter",
	         "Bytes the cloud relayed back to the opening edge.", "bytes_to_from", "from", "to");
	const cJSON *p = cJSON_GetObjectItemCaseSensitive(stats, "peers");
	per_item(o, p, "edgemesh_peer_up", "gauge",
	         "Whether a tunnel to or from a peer node is up on this node (1) or not (0).", "up",
	         "peer", NULL);
	per_item(o, p, "edgemesh_peer_tunnels_up", "gauge",
	         "Tunnels to or from a peer node up on this node (each worker dials its own).",
	         "tunnels_up", "peer", NULL);
	per_item(o, p, "edgemesh_peer_tls", "gauge",
	         "Whether every tunnel up with a peer node runs TLS (1) or not, or none is up "
	         "(0).",
	         "tls", "peer", NULL);
	per_item(o, p, "edgemesh_peer_received_bytes_total", "counter",
	         "Tunnel frame bytes received from a peer node (inside TLS).", "bytes_received",
	         "peer", NULL);
	per_item(o, p, "edgemesh_peer_sent_bytes_total", "counter",
	         "Tunnel frame bytes sent to a peer node (inside TLS).", "bytes_sent", "peer", NULL);
	per_item(o, p, "edgemesh_peer_streams", "gauge",
	         "Streams open on the tunnels with a peer node.", "streams", "peer", NULL);
	const cJSON *e = cJSON_GetObjectItemCaseSensitive(stats, "edges");
	per_item(o, e, "edgemesh_edge_connected", "gauge",
	         "Whether an edge's control stream is connected to this cloud (1) or not (0).",
	         "connected", "node", NULL);
	per_item(o, e, "edgemesh_edge_generation_acked", "gauge",
	         "The last generation an edge acknowledged.", "generation_acked", "node", NULL);
	const cJSON *c = cJSON_GetObjectItemCaseSensitive(stats, "cloud");
	if (cJSON_IsObject(c)) {
		const char *l[] = {"address", str(c, "address"), NULL};
		const cJSON *up = cJSON_GetObjectItemCaseSensitive(c, "connected");
		family(o, "edgemesh_cloud_connected", "gauge",
		       "Whether this edge's control stream to the cloud is up (1) or not (0).");
		sample(o, "edgemesh_cloud_connected", l, cJSON_IsTrue(up) ? 1 : 0);
		family(o, "edgemesh_cloud_generation", "gauge",
		       "The generation of the cloud's objects this edge applied.");
		sample(o, "edgemesh_cloud_generation", l, num(c, "generation"));
	}
}

struct qps_walk {
	struct out *o;
	int field; /* 0 limit, 1 burst, 2 allowed, 3 rejected */
	bool any;
};

static void qps_one(void *ctx, const struct em_qps *q)
{
	static const char *const names[] = {"edgemesh_qps_limit", "edgemesh_qps_burst",
	                                    "edgemesh_qps_allowed_total",
	                                    "edgemesh_qps_rejected_total"};
	struct qps_walk *k = ctx;
	double v = k->field == 0   ? q->rate
	           : k->field == 1 ? q->burst
	           : k->field == 2 ? (double)__atomic_load_n(&q->allowed, __ATOMIC_RELAXED)
	                           : (double)__atomic_load_n(&q->rejected, __ATOMIC_RELAXED);
	const char *l[] = {"service", q->key, NULL};
	k->any = true;
	sample(k->o, names[k->field], l, v);
}

static void qps_count(void *ctx, const struct em_qps *q)
{
	EM_UNUSED(q);
	*(bool *)ctx = true;
}

int em_admin_metrics_qps(struct em_buf *out)
{
	static const char *const fam[][3] = {
	        {"edgemesh_qps_limit", "gauge",
	         "A Service's QPS limit on this node (edgemesh.io/qps)."},
	        {"edgemesh_qps_burst", "gauge",
	         "A Service's QPS burst on this node (edgemesh.io/qps-burst)."},
	        {"edgemesh_qps_allowed_total", "counter",
	         "Requests or connections a Service's QPS limit let through."},
	        {"edgemesh_qps_rejected_total", "counter",
	         "Requests or connections refused over a Service's QPS limit."},
	};
	struct out o = {.b = out};
	bool any = false;
	em_qps_each(qps_count, &any);
	if (!any)
		return 0;
	for (int f = 0; f < 4; f++) {
		family(&o, fam[f][0], fam[f][1], fam[f][2]);
		struct qps_walk k = {.o = &o, .field = f};
		em_qps_each(qps_one, &k);
	}
	return o.rc;
}

/* The per Service port families are most of a large page (10,000 ports:
 * 24 MB): they are written without snprintf or a bounds check per line,
 * into room reserved once per family from the view's sizes. */

/* Bytes a line takes at most besides its name, labels and extra labels:
 * '{', "} ", '\n' and a value of up to 30 characters (a count's 20 digits,
 * or seconds: 20 digits, '.' and 9 decimals). */
#define SVC_LINE_FIXED 34u

static char *put_u64(char *p, uint64_t v)
{
	char tmp[20];
	int n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		*p++ = tmp[--n];
	return p;
}

/* <ns> nanoseconds as seconds, exactly: "0.032", "12", "1.000000001". */
static char *put_seconds(char *p, uint64_t ns)
{
	p = put_u64(p, ns / 1000000000u);
	uint32_t f = (uint32_t)(ns % 1000000000u);
	if (!f)
		return p;
	char d[9];
	for (int k = 8; k >= 0; k--, f /= 10)
		d[k] = (char)('0' + f % 10);
	size_t n = 9;
	while (d[n - 1] == '0')
		n--;
	*p++ = '.';
	memcpy(p, d, n);
	return p + n;
}

/* "<name>{<labels><extra>} " at <p>; returns the end. */
static inline char *svc_head(char *p, const char *name, size_t nlen, const char *labels,
                             size_t llen, const char *extra, size_t elen)
{
	memcpy(p, name, nlen);
	p += nlen;
	*p++ = '{';
	memcpy(p, labels, llen);
	p += llen;
	memcpy(p, extra, elen);
	p += elen;
	*p++ = '}';
	*p++ = ' ';
	return p;
}

/* Room for <k> lines per port of <v>, of a name of <nlen> bytes and extra
 * labels of at most <elen>: the write position, or NULL. */
static char *svc_room(struct em_buf *b, const struct em_svcstat_view *v, size_t k, size_t nlen,
                      size_t elen)
{
	return em_buf_reserve(b, k * (v->n * (nlen + elen + SVC_LINE_FIXED) + v->labels_bytes));
}

static void svc_done(struct em_buf *b, char *p)
{
	/* svc_room's bound held (a line longer than it says is a bug). */
	EM_ASSERT((size_t)(p - b->data) < b->cap);
	b->len = (size_t)(p - b->data);
	b->data[b->len] = 0;
}

int em_admin_metrics_services(struct em_buf *out)
{
	static const struct {
		const char *name, *help;
		size_t off;
	} fams[] = {
	        {"edgemesh_service_connections_total",
	         "Client connections to a Service port through this node.",
	         offsetof(struct em_svcstat, connections)},
	        {"edgemesh_service_requests_total",
	         "HTTP requests to a Service port through this node (heads the proxy answered "
	         "with 400, 408 or 431 included).",
	         offsetof(struct em_svcstat, requests)},
	        {"edgemesh_service_received_bytes_total",
	         "Bytes received from the clients of a Service port.",
	         offsetof(struct em_svcstat, rx_bytes)},
	        {"edgemesh_service_sent_bytes_total", "Bytes sent to the clients of a Service port.",
	         offsetof(struct em_svcstat, tx_bytes)},
	        {"edgemesh_service_upstream_connect_failures_total",
	         "Connects to a Service port's endpoints that failed (refused or timed out).",
	         offsetof(struct em_svcstat, connect_fail)},
	        {"edgemesh_service_qps_rejected_total",
	         "Requests (HTTP ports) or connections refused over the Service's QPS limit.",
	         offsetof(struct em_svcstat, qps_rejected)},
	};
	static const char rname[] = "edgemesh_service_responses_total";
	static const char *const codes[] = {",code=\"1xx\"", ",code=\"2xx\"", ",code=\"3xx\"",
	                                    ",code=\"4xx\"", ",code=\"5xx\""};
	enum { CODE_LEN = 11 };
	static const char hname[] = "edgemesh_service_upstream_latency_seconds";
	static const char bname[] = "edgemesh_service_upstream_latency_seconds_bucket";
	static const char sname[] = "edgemesh_service_upstream_latency_seconds_sum";
	static const char cname[] = "edgemesh_service_upstream_latency_seconds_count";
	struct em_svcstat_view v;
	int rc = em_svcstat_view(&v);
	if (rc || !v.n)
		return rc;
	char le[EM_SVCSTAT_LAT_BOUNDS + 1][24];
	size_t le_len[EM_SVCSTAT_LAT_BOUNDS + 1], le_max = 0;
	for (int k = 0; k <= EM_SVCSTAT_LAT_BOUNDS; k++) {
		int n = snprintf(le[k], sizeof(le[k]), ",le=\"%s\"",
		                 k < EM_SVCSTAT_LAT_BOUNDS ? em_svcstat_lat_le[k] : "+Inf");
		le_len[k] = (size_t)n;
		le_max = EM_MAX(le_max, le_len[k]);
	}
	/* The whole section's room at once: the buffer grows (and copies)
	 * once, not once per doubling. */
	size_t total = 4096;
	for (size_t f = 0; f < EM_ARRAY_SIZE(fams); f++)
		total += v.n * (strlen(fams[f].name) + SVC_LINE_FIXED) + v.labels_bytes;
	total += 5 * (v.n * (sizeof(rname) + CODE_LEN + SVC_LINE_FIXED) + v.labels_bytes);
	total += (EM_SVCSTAT_LAT_BOUNDS + 3) *
	         (v.n * (sizeof(bname) + le_max + SVC_LINE_FIXED) + v.labels_bytes);
	if (!em_buf_reserve(out, total))
		return -ENOMEM;

	struct out o = {.b = out};
	for (size_t f = 0; f < EM_ARRAY_SIZE(fams) && !o.rc; f++) {
		family(&o, fams[f].name, "counter", fams[f].help);
		size_t nlen = strlen(fams[f].name);
		char *p = o.rc ? NULL : svc_room(out, &v, 1, nlen, 0);
		if (!p)
			return -ENOMEM;
		for (size_t i = 0; i < v.n; i++) {
			uint64_t val;
			memcpy(&val, (const char *)&v.sum[i] + fams[f].off, sizeof(val));
			p = svc_head(p, fams[f].name, nlen, v.labels[i], v.labels_len[i], "", 0);
			p = put_u64(p, val);
			*p++ = '\n';
		}
		svc_done(out, p);
	}
	family(&o, rname, "counter",
	       "HTTP responses to a Service port's clients by status class, the proxy's own "
	       "(400, 408, 429, 431, 502, 503, 504) included; a class shows once it occurred.");
	char *p = o.rc ? NULL : svc_room(out, &v, 5, sizeof(rname) - 1, CODE_LEN);
	if (!p)
		return -ENOMEM;
	/* A class shows once it occurred (as promhttp's codes do). */
	for (size_t i = 0; i < v.n; i++)
		for (int k = 0; k < 5; k++)
			if (v.sum[i].responses[k]) {
				p = svc_head(p, rname, sizeof(rname) - 1, v.labels[i],
				             v.labels_len[i], codes[k], CODE_LEN);
				p = put_u64(p, v.sum[i].responses[k]);
				*p++ = '\n';
			}
	svc_done(out, p);
	family(&o, hname, "histogram",
	       "Upstream round trip of a Service port: HTTP, from the request head handed to "
	       "the upstream connection (its connect included when new) to the response head; "
	       "plain TCP, the time to connect to the endpoint (not observed through a tunnel).");
	p = o.rc ? NULL : svc_room(out, &v, EM_SVCSTAT_LAT_BOUNDS + 3, sizeof(bname) - 1, le_max);
	if (!p)
		return -ENOMEM;
	for (size_t i = 0; i < v.n; i++) {
		const struct em_svcstat *s = &v.sum[i];
		const char *l = v.labels[i];
		size_t llen = v.labels_len[i];
		uint64_t cum = 0;
		for (int k = 0; k <= EM_SVCSTAT_LAT_BOUNDS; k++) {
			cum += s->lat[k];
			p = svc_head(p, bname, sizeof(bname) - 1, l, llen, le[k], le_len[k]);
			p = put_u64(p, cum);
			*p++ = '\n';
		}
		p = svc_head(p, sname, sizeof(sname) - 1, l, llen, "", 0);
		p = put_seconds(p, s->lat_sum_ns);
		*p++ = '\n';
		p = svc_head(p, cname, sizeof(cname) - 1, l, llen, "", 0);
		p = put_u64(p, cum);
		*p++ = '\n';
	}
	svc_done(out, p);
	return 0;
}

/* A label value at <p>, escaped (at most twice its length); returns the end. */
static char *esc(char *p, const char *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = v[i];
		if (c == '\\' || c == '"' || c == '\n') {
			*p++ = '\\';
			c = c == '\n' ? 'n' : c;
		}
		*p++ = c;
	}
	return p;
}

/* A member as a count: not a number, or negative, is 0. */
static uint64_t u64_of(const cJSON *m)
{
	return cJSON_IsNumber(m) && m->valuedouble > 0 && m->valuedouble < 1.8e19
	               ? (uint64_t)m->valuedouble
	               : 0;
}

/* The fast path's ports (the "services" array of the "fastpath" object):
 * each port's members are read in one walk (a lookup by name per member
 * was most of the time) and its label text made once per scrape; then its
 * families are written like the per Service port families, in room
 * reserved once per family. */
static void fastpath_ports(struct out *o, const cJSON *list)
{
	static const struct {
		const char *name, *type, *help;
	} fams[] = {
	        {"edgemesh_fastpath_connections_total", "counter",
	         "Connects to a Service's cluster IP and port the fast path sent straight to an "
	         "endpoint (this node's pick, nothing relays)."},
	        {"edgemesh_fastpath_handoffs_total", "counter",
	         "Connects to a Service's cluster IP and port whose kernel pick was not local, "
	         "left to the engine with that pick."},
	        {"edgemesh_fastpath_endpoints", "gauge",
	         "Ready endpoints of a Service's cluster IP and port in the fast path's maps."},
	};
	enum { NF = 3, CONNS = 0, HANDS = 1, EPS = 2 };
	struct line {
		const char *svc, *ip;
		size_t off, len; /* of its label text in <text> */
		uint64_t port, val[NF];
	} *ln = NULL;
	char *text = NULL;
	size_t n = (size_t)cJSON_GetArraySize(list), room = 0, i = 0;
	if (!n || o->rc)
		return;
	ln = calloc(n, sizeof(*ln));
	if (!ln) {
		o->rc = -ENOMEM;
		return;
	}
	const cJSON *e;
	cJSON_ArrayForEach(e, list)
	{
		if (!cJSON_IsObject(e))
			continue;
		struct line *l = &ln[i++];
		l->svc = l->ip = "";
		for (const cJSON *m = e->child; m; m = m->next) {
			const char *k = m->string;
			if (!k)
				continue;
			if (cJSON_IsString(m) && m->valuestring) {
				if (strcmp(k, "service") == 0)
					l->svc = m->valuestring;
				else if (strcmp(k, "cluster_ip") == 0)
					l->ip = m->valuestring;
				continue;
			}
			if (strcmp(k, "port") == 0)
				l->port = u64_of(m) & 0xffff;
			else if (strcmp(k, "connections") == 0)
				l->val[CONNS] = u64_of(m);
			else if (strcmp(k, "handoffs") == 0)
				l->val[HANDS] = u64_of(m);
			else if (strcmp(k, "endpoints") == 0)
				l->val[EPS] = u64_of(m);
		}
		room += 2 * (strlen(l->svc) + strlen(l->ip)) + 64;
	}
	if (!(n = i))
		goto out;
	text = malloc(room);
	if (!text) {
		o->rc = -ENOMEM;
		goto out;
	}
	size_t bytes = 0;
	char *p = text;
	for (i = 0; i < n; i++) {
		struct line *l = &ln[i];
		/* "ns/name": a namespace has no '/'. */
		const char *slash = strchr(l->svc, '/');
		const char *name = slash ? slash + 1 : l->svc;
		l->off = (size_t)(p - text);
		memcpy(p, "namespace=\"", 11);
		p = esc(p + 11, l->svc, slash ? (size_t)(slash - l->svc) : 0);
		memcpy(p, "\",service=\"", 11);
		p = esc(p + 11, name, strlen(name));
		memcpy(p, "\",cluster_ip=\"", 14);
		p = esc(p + 14, l->ip, strlen(l->ip));
		memcpy(p, "\",port=\"", 8);
		p = put_u64(p + 8, l->port);
		*p++ = '"';
		l->len = (size_t)(p - text) - l->off;
		bytes += l->len;
	}
	for (int f = 0; f < NF && !o->rc; f++) {
		family(o, fams[f].name, fams[f].type, fams[f].help);
		size_t nlen = strlen(fams[f].name);
		char *w = o->rc ? NULL : em_buf_reserve(o->b, n * (nlen + SVC_LINE_FIXED) + bytes);
		if (!w) {
			o->rc = -ENOMEM;
			break;
		}
		for (i = 0; i < n; i++) {
			w = svc_head(w, fams[f].name, nlen, text + ln[i].off, ln[i].len, "", 0);
			w = put_u64(w, ln[i].val[f]);
			*w++ = '\n';
		}
		svc_done(o->b, w);
	}
out:
	free(ln);
	free(text);
}

/* The fast path (engine/fastpath.h): whether it is on, its maps and
 * publishes; the reason it is off stays out (free text: meshctl stats and
 * the start's log line say it). */
static void fastpath(struct out *o, const cJSON *stats)
{
	const cJSON *fp = cJSON_GetObjectItemCaseSensitive(stats, "fastpath");
	if (!cJSON_IsObject(fp))
		return;
	family(o, "edgemesh_fastpath_up", "gauge",
	       "Whether connect-time balancing in the kernel is on (1) or off (0; meshctl stats "
	       "says why).");
	sample(o, "edgemesh_fastpath_up", NULL, strcmp(str(fp, "state"), "on") == 0 ? 1 : 0);
	family(o, "edgemesh_fastpath_ports", "gauge",
	       "Cluster IPs and ports in the fast path's maps.");
	sample(o, "edgemesh_fastpath_ports", NULL, num(fp, "ports"));
	family(o, "edgemesh_fastpath_publishes_total", "counter",
	       "Tables written to the fast path's maps.");
	sample(o, "edgemesh_fastpath_publishes_total", NULL, num(fp, "publishes"));
	family(o, "edgemesh_fastpath_publish_seconds", "gauge",
	       "Time the last write of a table to the fast path's maps took.");
	sample(o, "edgemesh_fastpath_publish_seconds", NULL, num(fp, "publish_us") / 1e6);
	family(o, "edgemesh_fastpath_write_failures_total", "counter",
	       "Ports whose map write failed (left to the engine).");
	sample(o, "edgemesh_fastpath_write_failures_total", NULL, num(fp, "write_failures"));
	const cJSON *list = cJSON_GetObjectItemCaseSensitive(fp, "services");
	if (cJSON_IsArray(list))
		fastpath_ports(o, list);
}

int em_admin_metrics(const cJSON *stats, struct em_buf *out)
{
	struct out o = {.b = out};
	if (!cJSON_IsObject(stats))
		return -EINVAL;
	table(&o, stats);
	groups(&o, stats);
	arrays(&o, stats);
	fastpath(&o, stats);
	return o.rc;
}

enum em_admin_parse em_admin_parse(const char *buf, size_t len, char *path, size_t cap,
                                   bool *head)
{
	size_t scan = len < EM_ADMIN_MAX_HEAD ? len : EM_ADMIN_MAX_HEAD;
	const char *end = NULL;
	for (size_t i = 0; i + 1 < scan && !end; i++)
		if (buf[i] == '\n' && (buf[i + 1] == '\n' ||
		                       (buf[i + 1] == '\r' && i + 2 < scan && buf[i + 2] == '\n')))
			end = buf + i;
	if (!end)
		return len >= EM_ADMIN_MAX_HEAD ? EM_ADMIN_TOO_LONG : EM_ADMIN_INCOMPLETE;
	const char *sp = memchr(buf, ' ', (size_t)(end - buf));
	if (!sp || sp == buf)
		return EM_ADMIN_BAD;
	size_t mlen = (size_t)(sp - buf);
	const char *t = sp + 1;
	const char *sp2 = memchr(t, ' ', (size_t)(end - t));
	if (!sp2 || sp2 == t || *t != '/' || (size_t)(end - sp2) < 9 ||
	    memcmp(sp2 + 1, "HTTP/1.", 7) != 0)
		return EM_ADMIN_BAD;
	size_t plen = 0;
	while (t + plen < sp2 && t[plen] != '?')
		plen++;
	for (size_t i = 0; i < plen; i++)
		if ((unsigned char)t[i] <= ' ' || (unsigned char)t[i] >= 0x7f)
			return EM_ADMIN_BAD;
	if (plen >= cap)
		return EM_ADMIN_BAD;
	bool is_get = mlen == 3 && memcmp(buf, "GET", 3) == 0;
	bool is_head = mlen == 4 && memcmp(buf, "HEAD", 4) == 0;
	for (size_t i = 0; i < mlen; i++)
		if (buf[i] < 'A' || buf[i] > 'Z')
			return EM_ADMIN_BAD;
	if (!is_get && !is_head)
		return EM_ADMIN_METHOD;
	memcpy(path, t, plen);
	path[plen] = 0;
	*head = is_head;
	return EM_ADMIN_OK;
}

static const char *reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 431: return "Request Header Fields Too Large";
	case 503: return "Service Unavailable";
	default: return "Internal Server Error";
	}
}

int em_admin_response(struct em_buf *out, int status, const char *ctype, const char *body,
                      size_t blen, bool head_only)
{
	char h[256];
	int n = snprintf(h, sizeof(h),
	                 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
	                 "%sConnection: close\r\n\r\n",
	                 status, reason(status), ctype, blen,
	                 status == 405 ? "Allow: GET, HEAD\r\n" : "");
	if (n < 0 || (size_t)n >= sizeof(h))
		return -EINVAL;
	int rc = em_buf_append(out, h, (size_t)n);
	if (!rc && !head_only && blen)
		rc = em_buf_append(out, body, blen);
	return rc;
}

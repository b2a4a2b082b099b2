#include "store/api.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>

#include "proto/em.h"
#include "store/k8s.h"
#include "store/qps.h"
#include "store/store.h"

char *em_buf_reserve(struct em_buf *b, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *d = realloc(b->data, cap);
		if (!d)
			return NULL;
		b->data = d;
		b->cap = cap;
	}
	return b->data + b->len;
}

int em_buf_append(struct em_buf *b, const void *p, size_t n)
{
	if (!em_buf_reserve(b, n))
		return -ENOMEM;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = 0;
	return 0;
}

void em_buf_free(struct em_buf *b)
{
	free(b->data);
	*b = (struct em_buf){0};
}

static int reply_json(struct em_buf *out, cJSON *reply)
{
	char *s = reply ? cJSON_PrintUnformatted(reply) : NULL;
	int rc;
	cJSON_Delete(reply);
	if (!s)
		return em_buf_append(out, "{\"ok\":false,\"error\":\"out of memory\"}\n", 37);
	rc = em_buf_append(out, s, strlen(s));
	cJSON_free(s);
	return rc ? rc : em_buf_append(out, "\n", 1);
}

static int reply_error(struct em_buf *out, const char *fmt, const char *arg)
{
	char msg[1024];
	cJSON *r = cJSON_CreateObject();
	snprintf(msg, sizeof(msg), fmt, arg ? arg : "");
	cJSON_AddFalseToObject(r, "ok");
	cJSON_AddStringToObject(r, "error", msg);
	return reply_json(out, r);
}

/* Items are appended as stored. Stored JSON is compact when we wrote it; a
 * row written by another tool may be pretty-printed, and a raw newline in
 * JSON can only be whitespace, so it is blanked to keep one reply per line. */
struct list_out {
	struct em_buf *out;
	size_t n;
	int rc;
};

static void list_item(void *arg, const char *json)
{
	struct list_out *lo = arg;
	size_t start = lo->out->len;
	if (lo->rc)
		return;
	if (lo->n++ && (lo->rc = em_buf_append(lo->out, ",", 1)))
		return;
	start = lo->out->len;
	if ((lo->rc = em_buf_append(lo->out, json, strlen(json))))
		return;
	for (size_t i = start; i < lo->out->len; i++)
		if (lo->out->data[i] == '\n' || lo->out->data[i] == '\r')
			lo->out->data[i] = ' ';
}

static const char *str_field(const cJSON *req, const char *name, bool *bad)
{
	const cJSON *f = cJSON_GetObjectItemCaseSensitive(req, name);
	if (!f || cJSON_IsNull(f))
		return NULL;
	if (!cJSON_IsString(f) || !f->valuestring[0]) {
		*bad = true;
		return NULL;
	}
	return f->valuestring;
}

/* Appends the control stream's members (em_api_info.control) to a reply
 * being written as text: ,"edges":[...] or ,"cloud":{...}. */
static int append_control(const struct em_api_info *info, struct em_buf *out)
{
	cJSON *tmp = cJSON_CreateObject();
	int rc = tmp ? info->control(info->control_ctx, tmp) : -ENOMEM;
	const cJSON *m;
	cJSON_ArrayForEach(m, tmp)
	{
		char *t = rc ? NULL : cJSON_PrintUnformatted(m);
		if (!t) {
			rc = -ENOMEM;
			break;
		}
		rc = em_buf_append(out, ",\"", 2);
		rc = rc ? rc : em_buf_append(out, m->string, strlen(m->string));
		rc = rc ? rc : em_buf_append(out, "\":", 2);
		rc = rc ? rc : em_buf_append(out, t, strlen(t));
		cJSON_free(t);
		if (rc)
			break;
	}
	cJSON_Delete(tmp);
	return rc;
}

static int do_list(struct em_store *st, const struct em_api_info *info, const cJSON *req,
                   bool single, struct em_buf *out)
{
	bool bad = false;
	const char *kind_s = str_field(req, "kind", &bad);
	const char *ns = str_field(req, "namespace", &bad);
	const char *name = str_field(req, "name", &bad);
	int kind;
	size_t mark = out->len;
	struct list_out lo = {.out = out};
	static const char head[] = "{\"ok\":true,\"items\":[";

	if (bad)
		return reply_error(out, "kind, namespace and name must be non-empty strings", NULL);
	if (!kind_s)
		return reply_error(out, "missing \"kind\"", NULL);
	if ((kind = em_kind_from_type(kind_s)) < 0)
		return reply_error(out, "unknown kind \"%s\"", kind_s);
	if (single && (!ns || !name))
		return reply_error(out, "get needs \"namespace\" and \"name\"", NULL);
	if (kind == EM_KIND_NODE && ns && !single)
		ns = NULL; /* nodes are cluster-scoped */
	if (em_buf_append(out, head, sizeof(head) - 1))
		return -ENOMEM;
	em_store_list(st, (enum em_kind)kind, ns, name, list_item, &lo);
	if (lo.rc)
		return lo.rc;
	if (single && lo.n == 0) {
		out->len = mark;
		char what[700];
		snprintf(what, sizeof(what), "%s %s/%s not found", em_kind_type(kind), ns, name);
		return reply_error(out, "%s", what);
	}
	if (em_buf_append(out, "]", 1))
		return -ENOMEM;
	if (kind == EM_KIND_NODE && !single && info && info->control && append_control(info, out))
		return -ENOMEM;
	return em_buf_append(out, "}\n", 2);
}

static int do_apply(struct em_store *st, const cJSON *req, struct em_buf *out)
{
	const cJSON *items = cJSON_GetObjectItemCaseSensitive(req, "items");
	const cJSON *obj = cJSON_GetObjectItemCaseSensitive(req, "object");
	const cJSON **v = NULL;
	size_t n = 0;
	char err[512];
	int rc;

	if (items && cJSON_IsArray(items)) {
		n = (size_t)cJSON_GetArraySize(items);
		v = calloc(n ? n : 1, sizeof(*v));
		if (!v)
			return -ENOMEM;
		size_t i = 0;
		const cJSON *it;
		cJSON_ArrayForEach(it, items) v[i++] = it;
	} else if (obj && cJSON_IsObject(obj)) {
		n = 1;
		v = calloc(1, sizeof(*v));
		if (!v)
			return -ENOMEM;
		v[0] = obj;
	} else {
		return reply_error(out, "apply needs \"items\" (array) or \"object\"", NULL);
	}
	rc = em_store_apply(st, v, n, err, sizeof(err));
	free(v);
	if (rc)
		return reply_error(out, "%s", err);
	struct em_store_stats s;
	em_store_stats(st, &s);
	cJSON *r = cJSON_CreateObject();
	cJSON_AddTrueToObject(r, "ok");
	cJSON_AddNumberToObject(r, "applied", (double)n);
	cJSON_AddNumberToObject(r, "generation", (double)s.generation);
	return reply_json(out, r);
}

static int do_delete(struct em_store *st, const cJSON *req, struct em_buf *out)
{
	bool bad = false;
	const char *kind_s = str_field(req, "kind", &bad);
	const char *ns = str_field(req, "namespace", &bad);
	const char *name = str_field(req, "name", &bad);
	int kind, rc;

	if (bad || !kind_s || !name)
		return reply_error(out, "delete needs \"kind\", \"namespace\" and \"name\" strings",
		                   NULL);
	if ((kind = em_kind_from_type(kind_s)) < 0)
		return reply_error(out, "unknown kind \"%s\"", kind_s);
	if (kind == EM_KIND_NODE || !ns)
		ns = kind == EM_KIND_NODE ? EM_NODE_NAMESPACE : "default";
	rc = em_store_delete(st, (enum em_kind)kind, ns, name);
	if (rc < 0)
		return reply_error(out, "database write failed (see log)", NULL);
	if (rc == 0) {
		char what[700];
		snprintf(what, sizeof(what), "%s %s/%s not found", em_kind_type(kind), ns, name);
		return reply_error(out, "%s", what);
	}
	cJSON *r = cJSON_CreateObject();
	cJSON_AddTrueToObject(r, "ok");
	cJSON_AddNumberToObject(r, "deleted", 1);
	return reply_json(out, r);
}

static void add_qps(void *ctx, const struct em_qps *q)
{
	cJSON *e = cJSON_CreateObject();
	cJSON_AddStringToObject(e, "service", q->key);
	cJSON_AddNumberToObject(e, "limit", q->rate);
	cJSON_AddNumberToObject(e, "burst", q->burst);
	cJSON_AddNumberToObject(e, "allowed",
	                        (double)__atomic_load_n(&q->allowed, __ATOMIC_RELAXED));
	cJSON_AddNumberToObject(e, "rejected",
	                        (double)__atomic_load_n(&q->rejected, __ATOMIC_RELAXED));
	cJSON_AddItemToArray(ctx, e);
}

cJSON *em_api_stats(struct em_store *st, const struct em_api_info *info, bool qps)
{
	struct em_store_stats s;
	cJSON *o = cJSON_CreateObject(), *objs;
	if (!o)
		return NULL;

	em_store_stats(st, &s);
	if (info) {
		cJSON_AddStringToObject(o, "node", info->node_name ? info->node_name : "");
		cJSON_AddStringToObject(o, "config", info->config_path ? info->config_path : "");
		cJSON_AddNumberToObject(o, "reloads", (double)info->reloads);
		cJSON_AddNumberToObject(o, "reload_failures", (double)info->reload_failures);
	}
	cJSON_AddNumberToObject(o, "generation", (double)s.generation);
	cJSON_AddNumberToObject(o, "services", (double)s.services);
	cJSON_AddNumberToObject(o, "table_bytes", (double)s.table_bytes);
	cJSON_AddNumberToObject(o, "last_build_us", (double)(s.last_build_ns / 1000));
	cJSON_AddNumberToObject(o, "skipped_malformed", (double)s.skipped);
	cJSON_AddNumberToObject(o, "skipped_unreadable", (double)s.unreadable);
	objs = cJSON_AddObjectToObject(o, "objects");
	for (int k = 0; k < EM_KIND__COUNT; k++)
		cJSON_AddNumberToObject(objs, em_kind_type(k), (double)s.objects[k]);
	if (info && info->counters) {
		struct em_api_counter c[EM_API_MAX_COUNTERS];
		size_t n = info->counters(info->counters_ctx, c, EM_API_MAX_COUNTERS);
		n = EM_MIN(n, (size_t)EM_API_MAX_COUNTERS);
		for (size_t i = 0; i < n; i++) {
			if (!c[i].group || !c[i].name)
				continue;
			cJSON *g = cJSON_GetObjectItemCaseSensitive(o, c[i].group);
			if (!g)
				g = cJSON_AddObjectToObject(o, c[i].group);
			if (cJSON_IsObject(g) && !cJSON_GetObjectItemCaseSensitive(g, c[i].name))
				cJSON_AddNumberToObject(g, c[i].name, (double)c[i].value);
		}
	}
	/* Services with a QPS limit on this node; the registry is this
	 * thread's (store/qps.h). */
	if (qps)
		em_qps_each(add_qps, cJSON_AddArrayToObject(o, "qps"));
	if (info && info->control)
		info->control(info->control_ctx, o);
	if (info && info->stats)
		info->stats(info->stats_ctx, o);
	return o;
}

static int do_stats(struct em_store *st, const struct em_api_info *info, struct em_buf *out)
{
	cJSON *r = cJSON_CreateObject();
	cJSON *o = em_api_stats(st, info, true);
	if (!r || !o) {
		cJSON_Delete(r);
		cJSON_Delete(o);
		return reply_error(out, "out of memory", NULL);
	}
	cJSON_AddTrueToObject(r, "ok");
	cJSON_AddItemToObject(r, "stats", o);
	return reply_json(out, r);
}

static int do_revoke(const struct em_api_info *info, const cJSON *req, struct em_buf *out)
{
	const cJSON *node = cJSON_GetObjectItemCaseSensitive(req, "node");
	char err[256];
	if (!cJSON_IsString(node))
		return reply_error(out, "cert-revoke needs a string \"node\"", NULL);
	if (!info->revoke)
		return reply_error(out, "only the cloud revokes certificates", NULL);
	if (info->revoke(info->revoke_ctx, node->valuestring, err, sizeof(err)))
		return reply_error(out, "%s", err);
	cJSON *r = cJSON_CreateObject();
	if (!r || !cJSON_AddTrueToObject(r, "ok") ||
	    !cJSON_AddStringToObject(r, "revoked", node->valuestring)) {
		cJSON_Delete(r);
		return reply_error(out, "out of memory", NULL);
	}
	return reply_json(out, r);
}

int em_api_handle(struct em_store *st, const struct em_api_info *info, const char *req, size_t len,
                  struct em_buf *out)
{
	cJSON *j = cJSON_ParseWithLength(req, len);
	const cJSON *op;
	int rc;

	if (!j)
		return reply_error(out, "request is not valid JSON", NULL);
	op = cJSON_GetObjectItemCaseSensitive(j, "op");
	if (!cJSON_IsObject(j) || !cJSON_IsString(op))
		rc = reply_error(out, "request must be an object with a string \"op\"", NULL);
	else if (strcmp(op->valuestring, "list") == 0)
		rc = do_list(st, info, j, false, out);
	else if (strcmp(op->valuestring, "get") == 0)
		rc = do_list(st, info, j, true, out);
	else if (strcmp(op->valuestring, "apply") == 0)
		rc = do_apply(st, j, out);
	else if (strcmp(op->valuestring, "delete") == 0)
		rc = do_delete(st, j, out);
	else if (strcmp(op->valuestring, "stats") == 0)
		rc = do_stats(st, info, out);
	else if (strcmp(op->valuestring, "cert-revoke") == 0)
		rc = do_revoke(info, j, out);
	else
		rc = reply_error(out, "unknown op \"%s\"", op->valuestring);
	cJSON_Delete(j);
	return rc;
}

/* Buffers past this size are given back once empty, so one large reply or
 * request does not pin its memory for the client's whole life. */
#define API_KEEP_CAP (EM_API_MAX_BACKLOG * 2)

static bool backlogged(const struct em_buf *out, size_t out_off)
{
	return out->len - out_off >= EM_API_MAX_BACKLOG;
}

int em_api_serve(struct em_store *st, const struct em_api_info *info, struct em_buf *in,
                 struct em_buf *out, size_t *out_off)
{
	size_t start = 0;
	int close = 0;

	if (*out_off) {
		memmove(out->data, out->data + *out_off, out->len - *out_off);
		out->len -= *out_off;
		*out_off = 0;
	}
	if (out->len == 0 && out->cap > API_KEEP_CAP)
		em_buf_free(out);
	while (start < in->len && !backlogged(out, 0)) {
		char *nl = memchr(in->data + start, '\n', in->len - start);
		if (!nl)
			break;
		size_t len = (size_t)(nl - (in->data + start));
		if (em_api_handle(st, info, in->data + start, len, out)) {
			/* Out of memory: what follows is dropped with the client. */
			start = in->len;
			close = 1;
			break;
		}
		start += len + 1;
	}
	if (start) {
		memmove(in->data, in->data + start, in->len - start);
		in->len -= start;
	}
	if (!close && in->len > EM_API_MAX_REQUEST && !memchr(in->data, '\n', in->len)) {
		char msg[160];
		snprintf(msg, sizeof(msg),
		         "{\"ok\":false,\"error\":\"request too large (more than %u bytes)\"}\n",
		         EM_API_MAX_REQUEST);
		em_buf_append(out, msg, strlen(msg));
		in->len = 0;
		close = 1;
	}
	if (in->len == 0 && in->cap > API_KEEP_CAP)
		em_buf_free(in);
	return close;
}

bool em_api_may_read(const struct em_buf *in, const struct em_buf *out, size_t out_off)
{
	return !backlogged(out, out_off) && in->len <= EM_API_MAX_REQUEST;
}

bool em_api_has_work(const struct em_buf *in, const struct em_buf *out, size_t out_off)
{
	return in->len && !backlogged(out, out_off) && memchr(in->data, '\n', in->len);
}

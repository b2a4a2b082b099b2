/* Beehive-shaped control-stream messages: decode, encode, ids, resources. */
#include "store/beehive.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <cjson/cJSON.h>

#include "store/json.h"
#include "store/k8s.h"

static const char *const op_names[EM_BH__OPS] = {
        [EM_BH_INSERT] = "insert", [EM_BH_UPDATE] = "update",     [EM_BH_DELETE] = "delete",
        [EM_BH_QUERY] = "query",   [EM_BH_RESPONSE] = "response", [EM_BH_ERROR] = "error",
};

const char *em_bh_op_name(enum em_bh_op op)
{
	return (unsigned)op < EM_BH__OPS ? op_names[op] : "?";
}

int em_bh_new_id(char id[37])
{
	uint8_t b[16];
	size_t got = 0;
	while (got < sizeof(b)) {
		ssize_t n = getrandom(b + got, sizeof(b) - got, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		got += (size_t)n;
	}
	b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
	b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
	snprintf(id, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
	         b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
	         b[13], b[14], b[15]);
	return 0;
}

/* A string member into <dst> (<cap> bytes with the NUL); absent: "" unless
 * <required>. */
static int str_into(struct em_json *j, const cJSON *obj, const char *field, bool required,
                    char *dst, size_t cap)
{
	const char *s = "";
	int rc = em_json_string(j, em_json_get(obj, field), field, required, &s);
	if (rc)
		return rc;
	size_t n = strlen(s);
	if (n >= cap)
		return em_json_fail(j, field, "expected string of at most %zu bytes", cap - 1);
	memcpy(dst, s, n + 1);
	return 0;
}

int em_bh_decode(const char *text, size_t len, struct em_bh_msg *out, char *err, size_t errlen)
{
	struct em_json j = {.top = "message", .err = err, .errlen = errlen};
	memset(out, 0, sizeof(*out));
	if (len > EM_BH_MAX_MESSAGE)
		return em_json_fail(&j, NULL, "larger than %u bytes", EM_BH_MAX_MESSAGE);
	size_t off = 0;
	cJSON *root = em_json_parse(text, len, &off, NULL);
	if (!root)
		return off == SIZE_MAX ? em_json_oom(&j)
		                       : em_json_fail(&j, NULL, "invalid JSON at byte %zu", off);
	const cJSON *hdr = NULL, *route = NULL;
	const char *op = NULL;
	long long ts = 0;
	int rc = em_json_object(&j, root, NULL, true, &hdr);
	if (rc == 0)
		rc = em_json_object(&j, em_json_get(root, "header"), "header", true, &hdr);
	size_t mark = em_json_push_key(&j, "header");
	if (rc == 0)
		rc = str_into(&j, hdr, "msg_id", true, out->msg_id, sizeof(out->msg_id));
	if (rc == 0)
		rc = str_into(&j, hdr, "parent_msg_id", false, out->parent_id,
		              sizeof(out->parent_id));
	if (rc == 0)
		rc = em_json_int(&j, em_json_get(hdr, "timestamp"), "timestamp", true, 0,
		                 (1LL << 53), &ts);
	if (rc == 0)
		rc = str_into(&j, hdr, "resourceversion", false, out->resource_version,
		              sizeof(out->resource_version));
	if (rc == 0)
		rc = em_json_bool(&j, em_json_get(hdr, "sync"), "sync", &out->sync);
	em_json_pop(&j, mark);
	if (rc == 0)
		rc = em_json_object(&j, em_json_get(root, "route"), "route", true, &route);
	mark = em_json_push_key(&j, "route");
	if (rc == 0)
		rc = str_into(&j, route, "source", false, out->source, sizeof(out->source));
	if (rc == 0)
		rc = str_into(&j, route, "group", false, out->group, sizeof(out->group));
	if (rc == 0)
		rc = em_json_string(&j, em_json_get(route, "operation"), "operation", true, &op);
	if (rc == 0) {
		int k = em_json_pick(op, op_names, EM_BH__OPS);
		if (k < 0)
			rc = em_json_fail(
			        &j, "operation",
			        "expected insert, update, delete, query, response or error");
		else
			out->op = (enum em_bh_op)k;
	}
	if (rc == 0)
		rc = str_into(&j, route, "resource", false, out->resource, sizeof(out->resource));
	em_json_pop(&j, mark);
	if (rc == 0) {
		cJSON *content = cJSON_DetachItemFromObjectCaseSensitive(root, "content");
		if (content && cJSON_IsNull(content)) {
			cJSON_Delete(content);
			content = NULL;
		}
		out->content = content;
		out->timestamp_ms = ts;
	}
	cJSON_Delete(root);
	if (rc)
		memset(out, 0, sizeof(*out));
	return rc;
}

char *em_bh_encode(const struct em_bh_msg *m, size_t *len)
{
	cJSON *root = cJSON_CreateObject();
	cJSON *hdr = cJSON_AddObjectToObject(root, "header");
	cJSON *route = cJSON_AddObjectToObject(root, "route");
	bool ok = hdr && route && cJSON_AddStringToObject(hdr, "msg_id", m->msg_id);
	if (ok && m->parent_id[0])
		ok = cJSON_AddStringToObject(hdr, "parent_msg_id", m->parent_id) != NULL;
	if (ok)
		ok = cJSON_AddNumberToObject(hdr, "timestamp", (double)m->timestamp_ms) != NULL;
	if (ok && m->resource_version[0])
		ok = cJSON_AddStringToObject(hdr, "resourceversion", m->resource_version) != NULL;
	if (ok && m->sync)
		ok = cJSON_AddTrueToObject(hdr, "sync") != NULL;
	if (ok && m->source[0])
		ok = cJSON_AddStringToObject(route, "source", m->source) != NULL;
	if (ok && m->group[0])
		ok = cJSON_AddStringToObject(route, "group", m->group) != NULL;
	if (ok)
		ok = cJSON_AddStringToObject(route, "operation", em_bh_op_name(m->op)) != NULL;
	if (ok && m->resource[0])
		ok = cJSON_AddStringToObject(route, "resource", m->resource) != NULL;
	if (ok) {
		cJSON *c = m->content ? cJSON_Duplicate(m->content, true) : cJSON_CreateNull();
		ok = c && cJSON_AddItemToObject(root, "content", c);
		if (c && !ok)
			cJSON_Delete(c);
	}
	char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
	cJSON_Delete(root);
	if (text)
		*len = strlen(text);
	return text;
}

void em_bh_free(struct em_bh_msg *m)
{
	cJSON_Delete(m->content);
	m->content = NULL;
}

int em_bh_resource_split(const char *res, int *kind, char *ns, char *name, size_t cap)
{
	const char *a = strchr(res, '/');
	const char *b = a ? strchr(a + 1, '/') : NULL;
	if (!a || !b || strchr(b + 1, '/') || a == res || b == a + 1 || !b[1])
		return -EINVAL;
	size_t nl = (size_t)(a - res), tl = (size_t)(b - a - 1), ml = strlen(b + 1);
	char type[32];
	if (nl >= cap || ml >= cap || tl >= sizeof(type))
		return -EINVAL;
	memcpy(type, a + 1, tl);
	type[tl] = 0;
	int k = em_kind_from_type(type);
	if (k < 0 || strcmp(em_kind_type((enum em_kind)k), type) != 0)
		return -EINVAL; /* the metamanager's type, not a plural or short name */
	memcpy(ns, res, nl);
	ns[nl] = 0;
	memcpy(name, b + 1, ml + 1);
	*kind = k;
	return 0;
}

/* Router objects: cross-object checks, stored rows, Rule counters. */
#include "store/router.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "store/table.h"

/* ---- counters ---- */

struct em_rule_status *em_rule_status_new(const struct em_k8s_rule *seed)
{
	struct em_rule_status *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	pthread_mutex_init(&s->mu, NULL);
	if (!seed)
		return s;
	atomic_store(&s->success, seed->success);
	atomic_store(&s->fail, seed->fail);
	for (size_t i = 0; i < seed->n_errors && i < EM_K8S_RULE_ERRORS; i++) {
		struct em_rule_error_slot *e = &s->ring[s->ring_head];
		e->time = seed->errors[i].time;
		snprintf(e->reason, sizeof(e->reason), "%s", seed->errors[i].reason);
		s->ring_head = (s->ring_head + 1) % EM_K8S_RULE_ERRORS;
		s->ring_n++;
	}
	return s;
}

void em_rule_status_free(struct em_rule_status *s)
{
	if (!s)
		return;
	pthread_mutex_destroy(&s->mu);
	free(s);
}

void em_rule_status_add(struct em_rule_status *s, bool ok, const char *reason, int64_t now)
{
	if (ok) {
		atomic_fetch_add_explicit(&s->success, 1, memory_order_relaxed);
	} else {
		pthread_mutex_lock(&s->mu);
		struct em_rule_error_slot *e = &s->ring[s->ring_head];
		size_t n = reason ? strnlen(reason, EM_K8S_RULE_REASON_MAX) : 0;
		e->time = now;
		if (n)
			memcpy(e->reason, reason, n);
		e->reason[n] = 0;
		s->ring_head = (s->ring_head + 1) % EM_K8S_RULE_ERRORS;
		if (s->ring_n < EM_K8S_RULE_ERRORS)
			s->ring_n++;
		/* Counted under the lock so that a reader of the ring sees the
		 * count of the errors it copied. */
		atomic_fetch_add_explicit(&s->fail, 1, memory_order_relaxed);
		pthread_mutex_unlock(&s->mu);
	}
	/* Release: a flush that reads this version sees the count above. */
	atomic_fetch_add_explicit(&s->version, 1, memory_order_release);
}

size_t em_rule_status_read(struct em_rule_status *s, uint64_t *success, uint64_t *fail,
                           struct em_rule_error_slot *errs, uint64_t *version)
{
	size_t n;

	/* The version first: a report after this load bumps it again, so the
	 * change it makes is written by the next flush at the latest. */
	*version = atomic_load_explicit(&s->version, memory_order_acquire);
	pthread_mutex_lock(&s->mu);
	n = s->ring_n;
	for (size_t i = 0; i < n; i++)
		errs[i] = s->ring[(s->ring_head + EM_K8S_RULE_ERRORS - n + i) % EM_K8S_RULE_ERRORS];
	*fail = atomic_load_explicit(&s->fail, memory_order_relaxed);
	pthread_mutex_unlock(&s->mu);
	*success = atomic_load_explicit(&s->success, memory_order_relaxed);
	return n;
}

void em_rule_report(uint64_t key, bool ok, const char *reason)
{
	const struct em_table *t = em_table_current();
	const struct em_rule *r = t ? em_table_rule_by_key(t, key) : NULL;

	if (r && r->status)
		em_rule_status_add(r->status, ok, reason, ok ? 0 : (int64_t)time(NULL));
}

/* ---- checks ---- */

int em_router_check(const struct em_k8s_object *rule, const struct em_k8s_object *src,
                    const struct em_k8s_object *tgt, char *why, size_t len)
{
	const struct em_k8s_rule *r = &rule->rule;

	if (!src || !tgt) {
		snprintf(why, len, "spec.%s: ruleendpoint %s/%s not found",
		         src ? "target" : "source", rule->ns, src ? r->target : r->source);
		return -ENOENT;
	}
	if (src->re.type == EM_RE_SERVICEBUS && tgt->re.type == EM_RE_REST) {
		snprintf(why, len,
		         "spec: servicebus -> rest (%s -> %s) is not supported by the Router; "
		         "expected a rest source and a servicebus target",
		         r->source, r->target);
		return -EINVAL;
	}
	if (src->re.type != EM_RE_REST || tgt->re.type != EM_RE_SERVICEBUS) {
		snprintf(why, len,
		         "spec: source %s is %s and target %s is %s; expected a rest source and a "
		         "servicebus target",
		         r->source, src->re.type == EM_RE_REST ? "rest" : "servicebus", r->target,
		         tgt->re.type == EM_RE_REST ? "rest" : "servicebus");
		return -EINVAL;
	}
	if (!r->source_path) {
		snprintf(why, len,
		         "spec.sourceResource.path: missing; the rest source %s needs the path it "
		         "serves (\"/...\")",
		         r->source);
		return -EINVAL;
	}
	if (!r->target_path) {
		snprintf(why, len,
		         "spec.targetResource.path: missing; the servicebus target %s needs the "
		         "path to call (\"/...\")",
		         r->target);
		return -EINVAL;
	}
	if (!tgt->re.service_port && !r->svc_name) {
		snprintf(why, len,
		         "spec.targetResource: no edge service: expected properties.service_port "
		         "on ruleendpoint %s, or targetResource.service \"namespace/name\" with "
		         "targetResource.port",
		         r->target);
		return -EINVAL;
	}
	return 0;
}

/* ---- stored rows ---- */

static void fmt_time(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;
	if (!gmtime_r(&tt, &tm) || !strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, len, "1970-01-01T00:00:00Z");
}

static void new_uuid(char *buf, size_t len)
{
	uint8_t b[16] = {0};
	size_t got = 0;

	while (got < sizeof(b)) {
		ssize_t n = getrandom(b + got, sizeof(b) - got, 0);
		if (n <= 0) {
			/* No entropy source: the time keeps ids apart well enough for
			 * a row id that is never a secret. */
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			uint64_t x = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
			memcpy(b, &x, sizeof(x));
			memcpy(b + 8, &ts, 8);
			break;
		}
		got += (size_t)n;
	}
	b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
	b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
	snprintf(buf, len, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
	         b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
	         b[13], b[14], b[15]);
}

static const char *meta_string(const cJSON *obj, const char *name)
{
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, name);
	return cJSON_IsString(v) && v->valuestring[0] && strlen(v->valuestring) <= 64
	               ? v->valuestring
	               : NULL;
}

static struct em_k8s_router_meta *meta_of(struct em_k8s_object *o)
{
	return o->kind == EM_KIND_RULE ? &o->rule.meta : &o->re.meta;
}

/* id and created_at: metadata, else the object's own, else <prev>'s, else
 * new; kept in <o> so that the stored object has them. */
static int identity(const cJSON *obj, struct em_k8s_object *o, const struct em_k8s_object *prev,
                    int64_t now)
{
	struct em_k8s_router_meta *m = meta_of(o);
	const struct em_k8s_router_meta *pm =
	        prev && prev->kind == o->kind ? meta_of((struct em_k8s_object *)prev) : NULL;
	const char *id = meta_string(obj, "uid"), *ca = meta_string(obj, "creationTimestamp");
	char buf[64];

	if (!id)
		id = m->id ? m->id : pm && pm->id ? pm->id : NULL;
	if (!id) {
		new_uuid(buf, sizeof(buf));
		id = buf;
	}
	if (id != m->id && !(m->id = em_arena_strdup(&o->arena, id)))
		return -ENOMEM;
	if (!ca)
		ca = m->created_at ? m->created_at : pm && pm->created_at ? pm->created_at : NULL;
	if (!ca) {
		fmt_time(now, buf, sizeof(buf));
		ca = buf;
	}
	if (ca != m->created_at && !(m->created_at = em_arena_strdup(&o->arena, ca)))
		return -ENOMEM;
	return 0;
}

static cJSON *map_json(const struct em_k8s_map *m)
{
	cJSON *o = cJSON_CreateObject();
	for (size_t i = 0; o && i < m->n; i++)
		if (!cJSON_AddStringToObject(o, m->items[i].key, m->items[i].value)) {
			cJSON_Delete(o);
			return NULL;
		}
	return o;
}

/* Adds the Rule's status and counters to <status> and <row>. */
static bool add_counts(cJSON *status, cJSON *row, struct em_rule_status *s)
{
	struct em_rule_error_slot errs[EM_K8S_RULE_ERRORS];
	uint64_t ok = 0, fail = 0, version;
	size_t n = s ? em_rule_status_read(s, &ok, &fail, errs, &version) : 0;
	cJSON *a = cJSON_AddArrayToObject(status, "errors");
	cJSON *b = cJSON_AddArrayToObject(row, "errors");
	char line[EM_K8S_RULE_REASON_MAX + 40], tm[32];

	if (!a || !b || !cJSON_AddNumberToObject(status, "successMessages", (double)ok) ||
	    !cJSON_AddNumberToObject(status, "failMessages", (double)fail) ||
	    !cJSON_AddNumberToObject(row, "success_messages", (double)ok) ||
	    !cJSON_AddNumberToObject(row, "fail_messages", (double)fail))
		return false;
	for (size_t i = 0; i < n; i++) {
		cJSON *e = cJSON_CreateObject();
		fmt_time(errs[i].time, tm, sizeof(tm));
		snprintf(line, sizeof(line), "%s: %s", tm, errs[i].reason);
		if (!e || !cJSON_AddItemToArray(b, e) ||
		    !cJSON_AddNumberToObject(e, "time", (double)errs[i].time) ||
		    !cJSON_AddStringToObject(e, "reason", errs[i].reason) ||
		    !cJSON_AddItemToArray(a, cJSON_CreateString(line)))
			return false;
	}
	return true;
}

char *em_router_stored_json(const cJSON *obj, struct em_k8s_object *o,
                            const struct em_k8s_object *prev, struct em_rule_status *status,
                            bool in_use, const char *reason, int64_t now)
{
	struct em_k8s_router_meta *m = meta_of(o);
	cJSON *out = NULL, *row, *st;
	char now_s[32];
	char *text = NULL;
	bool ok;

	if (identity(obj, o, prev, now) || !(out = cJSON_Duplicate(obj, true)))
		goto done;
	fmt_time(now, now_s, sizeof(now_s));
	cJSON_DeleteItemFromObjectCaseSensitive(out, "router");
	if (!(row = cJSON_AddObjectToObject(out, "router")))
		goto done;
	ok = cJSON_AddStringToObject(row, "id", m->id) &&
	     cJSON_AddStringToObject(row, "name", o->name) &&
	     cJSON_AddStringToObject(row, "project_id", o->ns);
	if (o->kind == EM_KIND_RULEENDPOINT) {
		ok = ok &&
		     cJSON_AddStringToObject(row, "type",
		                             o->re.type == EM_RE_REST ? "rest" : "servicebus") &&
		     cJSON_AddBoolToObject(row, "is_shared", o->re.is_shared) &&
		     cJSON_AddItemToObject(row, "properties", map_json(&o->re.properties));
	} else {
		cJSON_DeleteItemFromObjectCaseSensitive(out, "status");
		st = cJSON_AddObjectToObject(out, "status");
		ok = ok && st && cJSON_AddStringToObject(row, "domain_id", o->ns) &&
		     cJSON_AddStringToObject(row, "source", o->rule.source) &&
		     cJSON_AddItemToObject(row, "source_resource",
		                           map_json(&o->rule.source_resource)) &&
		     cJSON_AddStringToObject(row, "target", o->rule.target) &&
		     cJSON_AddItemToObject(row, "target_resource",
		                           map_json(&o->rule.target_resource)) &&
		     cJSON_AddBoolToObject(row, "in_use", in_use) &&
		     (in_use ||
		      cJSON_AddStringToObject(row, "in_use_reason", reason ? reason : "")) &&
		     cJSON_AddFalseToObject(row, "is_deleted") && add_counts(st, row, status);
	}
	ok = ok && cJSON_AddStringToObject(row, "created_at", m->created_at) &&
	     cJSON_AddStringToObject(row, "updated_at", now_s);
	if (ok)
		text = cJSON_PrintUnformatted(out);
done:
	cJSON_Delete(out);
	return text;
}

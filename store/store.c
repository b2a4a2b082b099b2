/* Object store: sqlite is the source of truth for what is kept; memory holds
 * only the decoded objects the snapshot builder needs (not their JSON, which
 * is read back from sqlite on the rare list/get), so the footprint stays that
 * of the decoded structs. */
#include "store/store.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "proto/clock.h"
#include "proto/log.h"
#include "store/db.h"
#include "store/router.h"
#include "store/table.h"

struct entry {
	char *key;
	struct em_k8s_object *obj;
	struct em_rule_status *status; /* a Rule's counters, else NULL */
};

#define TOMBSTONE ((struct entry *)1)

struct em_store {
	struct em_db *db;
	char *local_node;
	struct entry **slots; /* open addressing by key */
	size_t cap, used, live;
	size_t per_kind[EM_KIND__COUNT];
	uint64_t generation;
	uint64_t last_build_ns;
	uint64_t skipped;
	uint64_t unreadable; /* rows or rowid runs a damaged file kept from the load */
	const struct em_k8s_object **scratch; /* builder input, reused */
	size_t scratch_cap;
	struct em_cidr *service_cidrs; /* endpoint addresses refused at apply */
	size_t n_service_cidrs;
	em_store_observer_fn observer;
	void *observer_ctx;
	em_store_published_fn published;
	void *published_ctx;
	bool defer; /* em_store_defer_publish: changes leave the table to ... */
	bool dirty; /* ... em_store_publish_pending, which builds it once */
	/* Rules: their entries (status->index is the place), the counters of
	 * deleted ones (freed once a published table no longer has them), and
	 * the builder's counters input. */
	struct entry **rules;
	size_t n_rules, rules_cap;
	struct em_rule_status **retired;
	size_t n_retired, retired_cap;
	struct em_rule_status **scratch_status;
	uint64_t last_flush_ms;
};

void em_store_set_published(struct em_store *st, em_store_published_fn fn, void *ctx)
{
	st->published = fn;
	st->published_ctx = ctx;
}

void em_store_set_observer(struct em_store *st, em_store_observer_fn fn, void *ctx)
{
	st->observer = fn;
	st->observer_ctx = ctx;
}

static uint64_t key_hash(const char *key)
{
	return em_hash64(key, strlen(key), EM_HASH_SEED);
}

static size_t find_slot(const struct em_store *st, const char *key, bool for_insert)
{
	size_t mask = st->cap - 1, i = key_hash(key) & mask, first_free = SIZE_MAX;
	for (;;) {
		struct entry *e = st->slots[i];
		if (!e)
			return for_insert && first_free != SIZE_MAX ? first_free : i;
		if (e == TOMBSTONE) {
			if (first_free == SIZE_MAX)
				first_free = i;
		} else if (strcmp(e->key, key) == 0) {
			return i;
		}
		i = (i + 1) & mask;
	}
}

static int grow(struct em_store *st)
{
	size_t cap = st->cap ? st->cap * 2 : 1024;
	struct entry **old = st->slots;
	size_t old_cap = st->cap;

	while (cap < (st->live + 1) * 2)
		cap *= 2;
	st->slots = calloc(cap, sizeof(*st->slots));
	if (!st->slots) {
		st->slots = old;
		return -ENOMEM;
	}
	st->cap = cap;
	st->used = st->live;
	for (size_t i = 0; i < old_cap; i++)
		if (old[i] && old[i] != TOMBSTONE)
			st->slots[find_slot(st, old[i]->key, true)] = old[i];
	free(old);
	return 0;
}

static int push_ptr(void ***v, size_t *n, size_t *cap, void *p)
{
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 16;
		void **nv = realloc(*v, c * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		*v = nv;
		*cap = c;
	}
	(*v)[(*n)++] = p;
	return 0;
}

/* A new Rule entry gets its counters: zeros, or its stored ones (<seed>). */
static int rule_attach(struct em_store *st, struct entry *e, bool seed)
{
	struct em_rule_status *s = em_rule_status_new(seed ? &e->obj->rule : NULL);
	if (!s)
		return -ENOMEM;
	s->index = st->n_rules;
	s->flushed_version = 0;
	if (push_ptr((void ***)&st->rules, &st->n_rules, &st->rules_cap, e)) {
		em_rule_status_free(s);
		return -ENOMEM;
	}
	e->status = s;
	return 0;
}

/* A deleted Rule's counters wait for a table without it. */
static void rule_detach(struct em_store *st, struct entry *e)
{
	struct em_rule_status *s = e->status;
	size_t i = s->index;

	st->rules[i] = st->rules[--st->n_rules];
	st->rules[i]->status->index = i;
	e->status = NULL;
	/* The live table still points to them: without room to remember
	 * them, they are left allocated (a few KiB) rather than freed early. */
	if (push_ptr((void ***)&st->retired, &st->n_retired, &st->retired_cap, s))
		EM_WARN("store", "out of memory: the counters of deleted rule %s are leaked",
		        e->key);
}

static void entry_free(struct entry *e)
{
	em_rule_status_free(e->status);
	em_k8s_free(e->obj);
	free(e->key);
	free(e);
}

/* Takes ownership of <obj>; replaces an entry of the same key (a Rule
 * keeps its counters). A new Rule's counters start from its stored ones
 * when <seed>, else from zero. */
static int cache_put(struct em_store *st, const char *key, struct em_k8s_object *obj, bool seed)
{
	size_t i;
	struct entry *e;

	if ((st->used + 1) * 4 >= st->cap * 3 && grow(st))
		return -ENOMEM;
	/* Said once per arrival of the object, not per table build. */
	if (obj->kind == EM_KIND_SERVICE && obj->svc.qps_warn)
		EM_WARN("store", "service %s/%s: %s", obj->ns, obj->name, obj->svc.qps_warn);
	i = find_slot(st, key, true);
	e = st->slots[i];
	if (e && e != TOMBSTONE) {
		st->per_kind[e->obj->kind]--;
		em_k8s_free(e->obj);
		e->obj = obj;
		st->per_kind[obj->kind]++;
		return 0;
	}
	e = calloc(1, sizeof(*e));
	if (!e || !(e->key = strdup(key))) {
		free(e);
		return -ENOMEM;
	}
	e->obj = obj;
	if (obj->kind == EM_KIND_RULE && rule_attach(st, e, seed)) {
		free(e->key);
		free(e);
		return -ENOMEM;
	}
	if (!st->slots[i])
		st->used++;
	st->slots[i] = e;
	st->live++;
	st->per_kind[obj->kind]++;
	return 0;
}

static struct entry *cache_get(const struct em_store *st, const char *key)
{
	struct entry *e = st->cap ? st->slots[find_slot(st, key, false)] : NULL;
	return e && e != TOMBSTONE ? e : NULL;
}

static bool cache_has(const struct em_store *st, const char *key)
{
	return cache_get(st, key) != NULL;
}

static bool cache_del(struct em_store *st, const char *key)
{
	if (!st->cap)
		return false;
	size_t i = find_slot(st, key, false);
	struct entry *e = st->slots[i];
	if (!e || e == TOMBSTONE)
		return false;
	st->per_kind[e->obj->kind]--;
	if (e->status)
		rule_detach(st, e);
	entry_free(e);
	st->slots[i] = TOMBSTONE;
	st->live--;
	return true;
}

static int build(struct em_store *st);
static int flush_rules(struct em_store *st, const struct em_table *t, bool counts);

/* A change was made: a new generation, and a snapshot of everything in the
 * cache built and published now, or, while deferred, at the next
 * em_store_publish_pending. */
static int republish(struct em_store *st)
{
	st->generation++;
	st->dirty = true;
	return st->defer ? 0 : build(st);
}

void em_store_defer_publish(struct em_store *st, bool on)
{
	st->defer = on;
}

int em_store_publish_pending(struct em_store *st)
{
	return st->dirty ? build(st) : 0;
}

static int build(struct em_store *st)
{
	struct em_table_input in = {.local_node = st->local_node};
	size_t n = 0;
	uint64_t t0 = em_now_ns();
	struct em_table *t;

	if (st->scratch_cap < st->live + 1) {
		size_t cap = (st->live + 1) * 2;
		void *p = realloc(st->scratch, cap * sizeof(*st->scratch));
		if (!p)
			return -ENOMEM;
		st->scratch = p;
		p = realloc(st->scratch_status, cap * sizeof(*st->scratch_status));
		if (!p)
			return -ENOMEM;
		st->scratch_status = p;
		st->scratch_cap = cap;
	}
	for (size_t i = 0; i < st->cap; i++)
		if (st->slots[i] && st->slots[i] != TOMBSTONE) {
			st->scratch_status[n] = st->slots[i]->status;
			st->scratch[n++] = st->slots[i]->obj;
		}
	in.objs = st->scratch;
	in.n_objs = n;
	in.rule_status = st->scratch_status;
	t = em_table_build(&in, st->generation);
	if (!t)
		return -ENOMEM; /* still dirty: the next change or flush tries again */
	st->last_build_ns = em_now_ns() - t0;
	st->dirty = false;
	em_table_publish(t);
	if (st->published)
		st->published(st->published_ctx, t);
	/* The published table has none of the retired counters, and the old
	 * one is gone with its readers. */
	for (size_t i = 0; i < st->n_retired; i++)
		em_rule_status_free(st->retired[i]);
	st->n_retired = 0;
	/* Rows whose in_use the new table changed are written now, so that a
	 * reply after this build shows it. <t> stays ours until the next
	 * publication, which only this thread makes. */
	flush_rules(st, t, false);
	return 0;
}

struct load_ctx {
	struct em_store *st;
	int rc;
};

static int load_row(void *arg, const char *key, const char *type, const char *value)
{
	struct load_ctx *lc = arg;
	struct em_k8s_object *obj;
	char err[256];
	int kind = -1;

	for (int k = 0; k < EM_KIND__COUNT && kind < 0; k++)
		if (strcmp(type, em_kind_type(k)) == 0)
			kind = k;
	if (kind < 0)
		return 0; /* another program's row (an edgecore database holds many) */
	if (em_k8s_decode(value, strlen(value), kind, &obj, err, sizeof(err))) {
		EM_WARN("store", "skipping malformed object %s: %s", key, err);
		lc->st->skipped++;
		return 0;
	}
	if (cache_put(lc->st, key, obj, true)) {
		em_k8s_free(obj);
		lc->rc = -ENOMEM;
		return 1;
	}
	return 0;
}

static bool is_router(enum em_kind k)
{
	return k == EM_KIND_RULE || k == EM_KIND_RULEENDPOINT;
}

static int copy_row(void *arg, const char *key, const char *type, const char *value)
{
	EM_UNUSED(key);
	EM_UNUSED(type);
	char **out = arg;
	*out = strdup(value);
	return 0;
}

/* One Rule row to rewrite. */
struct rule_write {
	struct em_rule_status *s;
	uint64_t version;
	bool in_use;
	const char *why;
};

/* Rewrites, in one transaction, the rows of the Rules whose in_use (per
 * table <t>; NULL: unchanged) or, with <counts>, whose counters changed
 * since written. */
static int flush_rules(struct em_store *st, const struct em_table *t, bool counts)
{
	size_t n = st->n_rules, k = 0;
	struct em_db_op *ops = calloc(n ? n : 1, sizeof(*ops));
	struct rule_write *w = calloc(n ? n : 1, sizeof(*w));
	char **vals = calloc(n ? n : 1, sizeof(*vals));
	int64_t now = (int64_t)time(NULL);
	int rc = 0;

	if (!ops || !w || !vals) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		struct entry *e = st->rules[i];
		struct em_rule_status *s = e->status;
		const struct em_rule *r = t ? em_table_rule(t, e->obj->ns, e->obj->name) : NULL;
		bool in_use = r ? r->active : s->stored_in_use;
		const char *why = r ? r->inactive_reason : s->stored_reason;
		uint64_t v = atomic_load_explicit(&s->version, memory_order_acquire);
		char *json = NULL;
		cJSON *obj;

		if (in_use == s->stored_in_use && (in_use || strcmp(why, s->stored_reason) == 0) &&
		    !(counts && v != s->flushed_version))
			continue;
		if (em_db_get(st->db, e->key, copy_row, &json) < 0 || !json)
			continue;
		obj = cJSON_Parse(json);
		free(json);
		if (!obj)
			continue;
		vals[k] = em_router_stored_json(obj, e->obj, NULL, s, in_use, why, now);
		cJSON_Delete(obj);
		if (!vals[k]) {
			rc = -ENOMEM;
			goto out;
		}
		ops[k] = (struct em_db_op){
		        .op = EM_DB_UPSERT, .key = e->key, .type = "rule", .value = vals[k]};
		w[k++] = (struct rule_write){s, v, in_use, why};
	}
	if (k && (rc = em_db_apply(st->db, ops, k)) == 0)
		for (size_t i = 0; i < k; i++) {
			w[i].s->flushed_version = w[i].version;
			w[i].s->stored_in_use = w[i].in_use;
			snprintf(w[i].s->stored_reason, sizeof(w[i].s->stored_reason), "%s",
			         w[i].in_use ? "" : w[i].why);
		}
out:
	for (size_t i = 0; vals && i < k; i++)
		cJSON_free(vals[i]);
	free(vals);
	free(ops);
	free(w);
	return rc;
}

int em_store_flush_status(struct em_store *st, uint64_t now_ms)
{
	if (!st->n_rules || now_ms - st->last_flush_ms < EM_STORE_FLUSH_MS)
		return 0;
	st->last_flush_ms = now_ms;
	return flush_rules(st, NULL, true);
}

/* RuleEndpoint <ns>/<name> as it will be once a change is made: upserted
 * by it (<objs>, the last one wins), deleted by it (<dkeys>), or stored. */
static const struct em_k8s_object *endpoint_after(const struct em_store *st,
                                                  struct em_k8s_object *const *objs, size_t n,
                                                  char *const *dkeys, size_t n_del, const char *ns,
                                                  const char *name)
{
	char key[600];

	for (size_t i = n; i-- > 0;)
		if (objs[i]->kind == EM_KIND_RULEENDPOINT && strcmp(objs[i]->ns, ns) == 0 &&
		    strcmp(objs[i]->name, name) == 0)
			return objs[i];
	if (em_k8s_key(EM_KIND_RULEENDPOINT, ns, name, key, sizeof(key)) < 0)
		return NULL;
	for (size_t i = 0; i < n_del; i++)
		if (strcmp(dkeys[i], key) == 0)
			return NULL;
	struct entry *e = cache_get(st, key);
	return e ? e->obj : NULL;
}

int em_store_open(const char *data_dir, const char *local_node, struct em_store **out)
{
	char path[PATH_MAX];
	struct em_store *st = calloc(1, sizeof(*st));
	struct load_ctx lc = {.st = st};
	int rc, problems;

	if (!st)
		return -ENOMEM;
	if (snprintf(path, sizeof(path), "%s/edgemesh.db", data_dir) >= (int)sizeof(path)) {
		free(st);
		return -ENAMETOOLONG;
	}
	st->local_node = strdup(local_node ? local_node : "");
	if (!st->local_node || grow(st)) {
		rc = -ENOMEM;
		goto fail;
	}
	if ((rc = em_db_open(path, &st->db)))
		goto fail;
	/* A damaged file is reported, then whatever can be read is served: an
	 * edge node without its cloud has no better copy. The file is never
	 * rewritten or removed here; repairing it is the operator's call. */
	problems = em_db_quick_check(st->db);
	if (problems)
		EM_ERR("store",
		       "%s is damaged (%s); loading the rows that can be read, leaving the "
		       "file as it is",
		       path, problems < 0 ? "the check stopped" : "see the lines above");
	rc = em_db_scan(st->db, NULL, load_row, &lc);
	if (lc.rc) {
		rc = lc.rc;
		goto fail;
	}
	if (rc < 0)
		EM_ERR("store",
		       "%s: rows after the damage could not be reached; serving what was "
		       "read",
		       path);
	st->unreadable = em_db_unreadable(st->db);
	if ((rc = republish(st)))
		goto fail;
	EM_INFO("store",
	        "loaded %zu objects from %s (%zu services, %llu malformed skipped, %llu "
	        "unreadable skipped)",
	        st->live, path, st->per_kind[EM_KIND_SERVICE], (unsigned long long)st->skipped,
	        (unsigned long long)st->unreadable);
	*out = st;
	return 0;
fail:
	em_store_close(st);
	return rc;
}

void em_store_close(struct em_store *st)
{
	if (!st)
		return;
	/* The counters reach the disk before they go. */
	if (st->db && st->n_rules)
		flush_rules(st, NULL, true);
	for (size_t i = 0; i < st->cap; i++)
		if (st->slots[i] && st->slots[i] != TOMBSTONE)
			entry_free(st->slots[i]);
	free(st->slots);
	free(st->scratch);
	free(st->scratch_status);
	free(st->rules);
	for (size_t i = 0; i < st->n_retired; i++)
		em_rule_status_free(st->retired[i]);
	free(st->retired);
	free(st->service_cidrs);
	free(st->local_node);
	em_db_close(st->db);
	free(st);
}

int em_store_set_service_cidrs(struct em_store *st, const struct em_cidr *cidrs, size_t n)
{
	struct em_cidr *copy = NULL;

	if (n && !(copy = malloc(n * sizeof(*copy))))
		return -ENOMEM;
	if (n)
		memcpy(copy, cidrs, n * sizeof(*copy));
	free(st->service_cidrs);
	st->service_cidrs = copy;
	st->n_service_cidrs = n;
	return 0;
}

/* "Kind namespace/name" of an object that did not decode, read from its JSON
 * as far as it goes, so that the error names the object. */
static void object_label(const cJSON *obj, char *buf, size_t len)
{
	const cJSON *kind = cJSON_GetObjectItemCaseSensitive(obj, "kind");
	const cJSON *meta = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
	const cJSON *ns = cJSON_GetObjectItemCaseSensitive(meta, "namespace");
	const cJSON *name = cJSON_GetObjectItemCaseSensitive(meta, "name");

	snprintf(buf, len, "%.32s %.63s/%.253s",
	         cJSON_IsString(kind) && kind->valuestring ? kind->valuestring : "?",
	         cJSON_IsString(ns) && ns->valuestring ? ns->valuestring : "default",
	         cJSON_IsString(name) && name->valuestring ? name->valuestring : "?");
}

int em_store_change(struct em_store *st, const cJSON *const *objs, size_t n,
                    const struct em_store_key *del, size_t n_del, size_t *deleted, char *err,
                    size_t errlen)
{
	return em_store_change_from(st, objs, n, del, n_del, NULL, deleted, err, errlen);
}

int em_store_change_from(struct em_store *st, const cJSON *const *objs, size_t n,
                         const struct em_store_key *del, size_t n_del,
                         const struct em_store_src *src, size_t *deleted, char *err,
                         size_t errlen)
{
	struct em_k8s_limits lim = {.service_cidrs = st->service_cidrs,
	                            .n_service_cidrs = st->n_service_cidrs};
	bool mark = src && src->origin;
	bool kv = src && src->kv_key && src->kv_value;
	size_t n_ops = n_del + n * (mark ? 2 : 1) + (kv ? 1 : 0);
	struct em_db_op *all = calloc(n_ops ? n_ops : 1, sizeof(*all));
	struct em_db_op *ops = all ? all + n_del : NULL;
	struct em_k8s_object **decoded = calloc(n ? n : 1, sizeof(*decoded));
	char **keys = calloc(n ? n : 1, sizeof(*keys));
	char **values = calloc(n ? n : 1, sizeof(*values));
	char **dkeys = calloc(n_del ? n_del : 1, sizeof(*dkeys));
	/* Per change: whether its key was there before (delete: it went). */
	bool *was = calloc(n + n_del ? n + n_del : 1, sizeof(*was));
	char(*rule_why)[400] = NULL; /* per Rule upserted: why it is not in use */
	size_t gone = 0;
	int rc = 0;

	if (!all || !decoded || !keys || !values || !dkeys || !was) {
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n_del; i++) {
		char key[600];
		if (em_k8s_key(del[i].kind, del[i].ns, del[i].name, key, sizeof(key)) < 0) {
			snprintf(err, errlen, "deletes[%zu]: name too long", i);
			rc = -EINVAL;
			goto out;
		}
		if (!(dkeys[i] = strdup(key))) {
			snprintf(err, errlen, "out of memory");
			rc = -ENOMEM;
			goto out;
		}
		all[i] = (struct em_db_op){.op = EM_DB_DELETE, .key = dkeys[i]};
	}
	for (size_t i = 0; i < n; i++) {
		char why[256], key[600], label[360];
		if (em_k8s_decode_json_lim(objs[i], -1, &lim, &decoded[i], why, sizeof(why))) {
			object_label(objs[i], label, sizeof(label));
			snprintf(err, errlen, "items[%zu] %s: %s", i, label, why);
			rc = -EINVAL;
			goto out;
		}
		if (em_k8s_key(decoded[i]->kind, decoded[i]->ns, decoded[i]->name, key,
		               sizeof(key)) < 0) {
			snprintf(err, errlen, "items[%zu]: name too long", i);
			rc = -EINVAL;
			goto out;
		}
		keys[i] = strdup(key);
		/* Router objects are written below, once the batch is known. */
		values[i] = is_router(decoded[i]->kind) ? NULL : cJSON_PrintUnformatted(objs[i]);
		if (!keys[i] || (!values[i] && !is_router(decoded[i]->kind))) {
			snprintf(err, errlen, "out of memory");
			rc = -ENOMEM;
			goto out;
		}
		ops[i] = (struct em_db_op){.op = EM_DB_UPSERT,
		                           .key = keys[i],
		                           .type = em_kind_type(decoded[i]->kind),
		                           .value = values[i]};
	}
	for (size_t i = 0; i < n; i++) {
		struct em_k8s_object *o = decoded[i];
		struct entry *prev;
		char why[400] = "";
		int c = 0;

		if (!is_router(o->kind))
			continue;
		if (o->kind == EM_KIND_RULE) {
			const struct em_k8s_object *from, *to;
			from = endpoint_after(st, decoded, n, dkeys, n_del, o->ns, o->rule.source);
			to = endpoint_after(st, decoded, n, dkeys, n_del, o->ns, o->rule.target);
			/* A missing endpoint may come later: stored, not in use. */
			if ((c = em_router_check(o, from, to, why, sizeof(why))) == -EINVAL) {
				snprintf(err, errlen, "items[%zu] Rule %s/%s: %s", i, o->ns,
				         o->name, why);
				rc = -EINVAL;
				goto out;
			}
		}
		prev = cache_get(st, keys[i]);
		for (size_t d = 0; prev && d < n_del; d++)
			if (strcmp(dkeys[d], keys[i]) == 0)
				prev = NULL; /* deleted and made again: a new one */
		values[i] = em_router_stored_json(objs[i], o, prev ? prev->obj : NULL,
		                                  prev ? prev->status : NULL, c == 0, why,
		                                  (int64_t)time(NULL));
		if (!values[i]) {
			snprintf(err, errlen, "out of memory");
			rc = -ENOMEM;
			goto out;
		}
		ops[i].value = values[i];
		if (o->kind == EM_KIND_RULE) {
			/* What the row says ("": in use), for the entry's counters. */
			if (!rule_why && !(rule_why = calloc(n, sizeof(*rule_why)))) {
				snprintf(err, errlen, "out of memory");
				rc = -ENOMEM;
				goto out;
			}
			snprintf(rule_why[i], sizeof(rule_why[i]), "%s", c == 0 ? "" : why);
		}
	}
	if (mark)
		for (size_t i = 0; i < n; i++)
			ops[n + i] = (struct em_db_op){
			        .op = EM_DB_ORIGIN, .key = keys[i], .value = src->origin};
	if (kv)
		all[n_ops - 1] = (struct em_db_op){
		        .op = EM_DB_KV, .key = src->kv_key, .value = src->kv_value};
	if (em_db_apply(st->db, all, n_ops)) {
		snprintf(err, errlen, "database write failed (see log)");
		rc = -EIO;
		goto out;
	}
	for (size_t i = 0; i < n_del; i++)
		gone += (was[i] = cache_del(st, dkeys[i]));
	for (size_t i = 0; i < n; i++) {
		bool rule = decoded[i]->kind == EM_KIND_RULE;
		struct entry *e;
		was[n_del + i] = cache_has(st, keys[i]);
		if (cache_put(st, keys[i], decoded[i], false)) {
			/* The disk has it; the next start will load it. */
			snprintf(err, errlen, "out of memory");
			rc = -ENOMEM;
			goto out;
		}
		decoded[i] = NULL;
		if (rule && (e = cache_get(st, keys[i])) && e->status) {
			e->status->stored_in_use = rule_why[i][0] == 0;
			snprintf(e->status->stored_reason, sizeof(e->status->stored_reason), "%s",
			         rule_why[i]);
		}
	}
	if (republish(st)) {
		snprintf(err, errlen, "out of memory building the service table");
		rc = -ENOMEM;
	}
	/* Stored either way (a failed build is retried by the next change). */
	for (size_t i = 0; st->observer && i < n_del; i++)
		if (was[i])
			st->observer(st->observer_ctx, st->generation, EM_BH_DELETE, dkeys[i],
			             NULL);
	for (size_t i = 0; st->observer && i < n; i++)
		st->observer(st->observer_ctx, st->generation,
		             was[n_del + i] ? EM_BH_UPDATE : EM_BH_INSERT, keys[i], values[i]);
out:
	for (size_t i = 0; i < n && decoded && keys && values; i++) {
		em_k8s_free(decoded[i]);
		free(keys[i]);
		cJSON_free(values[i]);
	}
	for (size_t i = 0; i < n_del && dkeys; i++)
		free(dkeys[i]);
	free(was);
	free(rule_why);
	free(all);
	free(decoded);
	free(keys);
	free(values);
	free(dkeys);
	if (deleted)
		*deleted = rc ? 0 : gone;
	return rc;
}

int em_store_apply(struct em_store *st, const cJSON *const *objs, size_t n, char *err,
                   size_t errlen)
{
	return em_store_change(st, objs, n, NULL, 0, NULL, err, errlen);
}

int em_store_delete(struct em_store *st, enum em_kind kind, const char *ns, const char *name)
{
	char key[600];
	int rc;

	if (em_k8s_key(kind, ns, name, key, sizeof(key)) < 0)
		return 0;
	/* The row goes even when it is not in memory: one that did not decode
	 * at load (skipped, logged) can only be removed this way. */
	if ((rc = em_db_delete(st->db, key)) < 0)
		return -EIO;
	if (!cache_del(st, key))
		return rc;
	rc = republish(st) ? -ENOMEM : 1;
	if (st->observer)
		st->observer(st->observer_ctx, st->generation, EM_BH_DELETE, key, NULL);
	return rc;
}

bool em_store_has(const struct em_store *st, enum em_kind kind, const char *ns, const char *name)
{
	char key[600];
	return em_k8s_key(kind, ns, name, key, sizeof(key)) > 0 && cache_has(st, key);
}

struct list_ctx {
	const struct em_store *st;
	const char *ns, *name;
	em_store_visit_cb cb;
	void *arg;
	size_t count;
};

static int list_row(void *arg, const char *key, const char *type, const char *value)
{
	struct list_ctx *lc = arg;
	struct em_slice ns, name;
	EM_UNUSED(type);

	if (em_k8s_key_split(key, &ns, &name) < 0)
		return 0;
	if (lc->ns && !em_slice_eq(ns, lc->ns))
		return 0;
	if (lc->name && !em_slice_eq(name, lc->name))
		return 0;
	/* A row that did not decode at load (skipped, logged) is not served. */
	if (!cache_has(lc->st, key))
		return 0;
	lc->cb(lc->arg, value);
	lc->count++;
	return 0;
}

struct scan_after_ctx {
	int (*cb)(void *arg, const char *key, const char *json);
	void *arg;
};

static int scan_after_row(void *arg, const char *key, const char *type, const char *value)
{
	EM_UNUSED(type);
	struct scan_after_ctx *c = arg;
	return c->cb(c->arg, key, value);
}

int em_store_kv_get(struct em_store *st, const char *k, char *buf, size_t cap)
{
	return em_db_kv_get(st->db, k, buf, cap);
}

int em_store_kv_set(struct em_store *st, const char *k, const char *v)
{
	struct em_db_op op = {.op = EM_DB_KV, .key = k, .value = v};
	return em_db_apply(st->db, &op, 1);
}

int em_store_origin_scan(struct em_store *st, const char *origin,
                         int (*cb)(void *arg, const char *key), void *arg)
{
	return em_db_origin_scan(st->db, origin, cb, arg);
}

int em_store_scan_after(struct em_store *st, enum em_kind kind, const char *after, unsigned limit,
                        int (*cb)(void *arg, const char *key, const char *json), void *arg)
{
	struct scan_after_ctx c = {cb, arg};
	return em_db_scan_after(st->db, em_kind_type(kind), after, limit, scan_after_row, &c);
}

size_t em_store_list(struct em_store *st, enum em_kind kind, const char *ns, const char *name,
                     em_store_visit_cb cb, void *arg)
{
	struct list_ctx lc = {.st = st, .ns = ns, .name = name, .cb = cb, .arg = arg};
	em_db_scan(st->db, em_kind_type(kind), list_row, &lc);
	return lc.count;
}

void em_store_stats(const struct em_store *st, struct em_store_stats *out)
{
	const struct em_table *t = em_table_current();
	memset(out, 0, sizeof(*out));
	out->generation = st->generation;
	memcpy(out->objects, st->per_kind, sizeof(out->objects));
	out->services = t ? em_table_service_count(t) : 0;
	out->table_bytes = t ? em_table_bytes(t) : 0;
	out->last_build_ns = st->last_build_ns;
	out->skipped = st->skipped;
	out->unreadable = st->unreadable;
}

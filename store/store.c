/* Object store: sqlite is the source of truth for what is kept; memory holds
 * only the decoded objects the snapshot builder needs (not their JSON, which
 * is read back from sqlite on the rare list/get), so the footprint stays that
 * of the decoded structs. */
#include "store/store.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "proto/clock.h"
#include "proto/log.h"
#include "store/db.h"
#include "store/table.h"

struct entry {
	char *key;
	struct em_k8s_object *obj;
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
	bool defer; /* em_store_defer_publish: changes leave the table to ... */
	bool dirty; /* ... em_store_publish_pending, which builds it once */
};

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

static void entry_free(struct entry *e)
{
	em_k8s_free(e->obj);
	free(e->key);
	free(e);
}

/* Takes ownership of <obj>; replaces an entry of the same key. */
static int cache_put(struct em_store *st, const char *key, struct em_k8s_object *obj)
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
	if (!st->slots[i])
		st->used++;
	st->slots[i] = e;
	st->live++;
	st->per_kind[obj->kind]++;
	return 0;
}

static bool cache_has(const struct em_store *st, const char *key)
{
	struct entry *e = st->cap ? st->slots[find_slot(st, key, false)] : NULL;
	return e && e != TOMBSTONE;
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
	entry_free(e);
	st->slots[i] = TOMBSTONE;
	st->live--;
	return true;
}

static int build(struct em_store *st);

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
		st->scratch_cap = cap;
	}
	for (size_t i = 0; i < st->cap; i++)
		if (st->slots[i] && st->slots[i] != TOMBSTONE)
			st->scratch[n++] = st->slots[i]->obj;
	in.objs = st->scratch;
	in.n_objs = n;
	t = em_table_build(&in, st->generation);
	if (!t)
		return -ENOMEM; /* still dirty: the next change or flush tries again */
	st->last_build_ns = em_now_ns() - t0;
	st->dirty = false;
	em_table_publish(t);
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
	if (cache_put(lc->st, key, obj)) {
		em_k8s_free(obj);
		lc->rc = -ENOMEM;
		return 1;
	}
	return 0;
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
	for (size_t i = 0; i < st->cap; i++)
		if (st->slots[i] && st->slots[i] != TOMBSTONE)
			entry_free(st->slots[i]);
	free(st->slots);
	free(st->scratch);
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
		values[i] = cJSON_PrintUnformatted(objs[i]);
		if (!keys[i] || !values[i]) {
			snprintf(err, errlen, "out of memory");
			rc = -ENOMEM;
			goto out;
		}
		ops[i] = (struct em_db_op){.op = EM_DB_UPSERT,
		                           .key = keys[i],
		                           .type = em_kind_type(decoded[i]->kind),
		                           .value = values[i]};
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
		was[n_del + i] = cache_has(st, keys[i]);
		if (cache_put(st, keys[i], decoded[i])) {
			/* The disk has it; the next start will load it. */
			snprintf(err, errlen, "out of memory");
			rc = -ENOMEM;
			goto out;
		}
		decoded[i] = NULL;
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

/* Batches of the Kubernetes API source applied as diffs. */
#include "store/kube_src.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "proto/em.h"
#include "proto/log.h"
#include "store/store.h"

/* ---- batches ---- */

struct em_kube_batch *em_kube_batch_new(enum em_kind kind, unsigned flags)
{
	struct em_kube_batch *b = calloc(1, sizeof(*b));
	if (b) {
		b->kind = kind;
		b->flags = flags;
	}
	return b;
}

static struct em_kube_item *batch_slot(struct em_kube_batch *b)
{
	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 16;
		struct em_kube_item *ni = realloc(b->items, cap * sizeof(*ni));
		if (!ni)
			return NULL;
		b->items = ni;
		b->cap = cap;
	}
	return &b->items[b->n];
}

static const char *ns_of(enum em_kind kind, const char *ns)
{
	return kind == EM_KIND_NODE || !ns || !ns[0] ? EM_NODE_NAMESPACE : ns;
}

int em_kube_batch_upsert(struct em_kube_batch *b, cJSON *obj, size_t bytes)
{
	struct em_kube_item *it = batch_slot(b);
	if (!it) {
		cJSON_Delete(obj);
		return -ENOMEM;
	}
	/* List items carry neither; the store decodes by "kind". */
	if (!cJSON_HasObjectItem(obj, "kind"))
		cJSON_AddStringToObject(obj, "kind", em_kind_name(b->kind));
	if (!cJSON_HasObjectItem(obj, "apiVersion"))
		cJSON_AddStringToObject(obj, "apiVersion", em_kind_api_version(b->kind));
	cJSON_DeleteItemFromObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(obj, "metadata"),
	                                        "managedFields");
	*it = (struct em_kube_item){.obj = obj};
	b->n++;
	b->bytes += bytes;
	return 0;
}

int em_kube_batch_delete(struct em_kube_batch *b, const char *ns, const char *name)
{
	struct em_kube_item *it = batch_slot(b);
	if (!it)
		return -ENOMEM;
	char *n = strdup(ns_of(b->kind, ns)), *m = strdup(name);
	if (!n || !m) {
		free(n);
		free(m);
		return -ENOMEM;
	}
	*it = (struct em_kube_item){.ns = n, .name = m};
	b->n++;
	b->bytes += strlen(n) + strlen(m);
	return 0;
}

/* The key of an item as given (not decoded): metadata of an upsert. */
static void item_key(enum em_kind kind, const struct em_kube_item *it, const char **ns,
                     const char **name)
{
	if (!it->obj) {
		*ns = it->ns;
		*name = it->name;
		return;
	}
	const cJSON *meta = cJSON_GetObjectItemCaseSensitive(it->obj, "metadata");
	const cJSON *n = cJSON_GetObjectItemCaseSensitive(meta, "namespace");
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(meta, "name");
	*ns = ns_of(kind, cJSON_IsString(n) ? n->valuestring : NULL);
	*name = cJSON_IsString(m) ? m->valuestring : "";
}

bool em_kube_batch_has(const struct em_kube_batch *b, const char *ns, const char *name)
{
	ns = ns_of(b->kind, ns);
	for (size_t i = 0; i < b->n; i++) {
		const char *a, *c;
		item_key(b->kind, &b->items[i], &a, &c);
		if (strcmp(c, name) == 0 && strcmp(a, ns) == 0)
			return true;
	}
	return false;
}

void em_kube_batch_free(struct em_kube_batch *b)
{
	if (!b)
		return;
	for (size_t i = 0; i < b->n; i++) {
		cJSON_Delete(b->items[i].obj);
		free(b->items[i].ns);
		free(b->items[i].name);
	}
	free(b->items);
	free(b);
}

/* ---- what the source gave: one entry per key, chained hash table ---- */

struct entry {
	struct entry *next;
	uint64_t hash;
	uint64_t rvh;      /* resourceVersion applied (hashed), 0: none known */
	uint64_t mark;     /* the last list that had it */
	bool in_store;     /* a version of ours is in the store */
	bool logged;       /* its refusal was logged */
	bool dying;        /* to be deleted by the change under way */
	enum em_kind kind; /* key: kind, "<ns>/<name>" */
	char key[];
};

struct em_kube_src {
	struct em_store *st;
	struct entry **buckets;
	size_t n_buckets, n_entries;
	uint64_t lists;                 /* lists begun, all kinds */
	uint64_t epoch[EM_KIND__COUNT]; /* the list under way or last done, per kind */
	struct em_kube_src_stats stats;
};

static uint64_t key_hash(enum em_kind kind, const char *ns, const char *name)
{
	uint8_t k = (uint8_t)kind;
	uint64_t h = em_hash64(&k, 1, EM_HASH_SEED);
	h = em_hash64(ns, strlen(ns), h);
	h = em_hash64("/", 1, h);
	return em_hash64(name, strlen(name), h);
}

static bool entry_is(const struct entry *e, enum em_kind kind, const char *ns, const char *name)
{
	size_t nl = strlen(ns);
	return e->kind == kind && strncmp(e->key, ns, nl) == 0 && e->key[nl] == '/' &&
	       strcmp(e->key + nl + 1, name) == 0;
}

static struct entry *entry_find(struct em_kube_src *s, enum em_kind kind, const char *ns,
                                const char *name)
{
	uint64_t h = key_hash(kind, ns, name);
	for (struct entry *e = s->buckets[h & (s->n_buckets - 1)]; e; e = e->next)
		if (e->hash == h && entry_is(e, kind, ns, name))
			return e;
	return NULL;
}

static int grow(struct em_kube_src *s)
{
	size_t nb = s->n_buckets * 2;
	struct entry **b = calloc(nb, sizeof(*b));
	if (!b)
		return -ENOMEM;
	for (size_t i = 0; i < s->n_buckets; i++)
		for (struct entry *e = s->buckets[i], *next; e; e = next) {
			next = e->next;
			e->next = b[e->hash & (nb - 1)];
			b[e->hash & (nb - 1)] = e;
		}
	free(s->buckets);
	s->buckets = b;
	s->n_buckets = nb;
	return 0;
}

static struct entry *entry_get(struct em_kube_src *s, enum em_kind kind, const char *ns,
                               const char *name)
{
	struct entry *e = entry_find(s, kind, ns, name);
	if (e)
		return e;
	if (s->n_entries >= s->n_buckets && grow(s))
		return NULL;
	size_t nl = strlen(ns), ml = strlen(name);
	if (!(e = calloc(1, sizeof(*e) + nl + ml + 2)))
		return NULL;
	e->kind = kind;
	e->hash = key_hash(kind, ns, name);
	memcpy(e->key, ns, nl);
	e->key[nl] = '/';
	memcpy(e->key + nl + 1, name, ml + 1);
	struct entry **head = &s->buckets[e->hash & (s->n_buckets - 1)];
	e->next = *head;
	*head = e;
	s->n_entries++;
	return e;
}

static void entry_remove(struct em_kube_src *s, struct entry *e)
{
	for (struct entry **pp = &s->buckets[e->hash & (s->n_buckets - 1)]; *pp; pp = &(*pp)->next)
		if (*pp == e) {
			*pp = e->next;
			if (e->in_store)
				s->stats.objects--;
			free(e);
			s->n_entries--;
			return;
		}
}

struct em_kube_src *em_kube_src_new(struct em_store *st)
{
	struct em_kube_src *s = calloc(1, sizeof(*s));
	if (!s || !(s->buckets = calloc(s->n_buckets = 1024, sizeof(*s->buckets)))) {
		free(s);
		return NULL;
	}
	s->st = st;
	return s;
}

void em_kube_src_free(struct em_kube_src *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n_buckets; i++)
		for (struct entry *e = s->buckets[i], *next; e; e = next) {
			next = e->next;
			free(e);
		}
	free(s->buckets);
	free(s);
}

void em_kube_src_stats(const struct em_kube_src *s, struct em_kube_src_stats *out)
{
	*out = s->stats;
}

/* ---- applying ---- */

/* One upsert going into the store change. */
struct pend {
	struct entry *e;
	uint64_t rvh;
};

static void refuse(struct em_kube_src *s, struct entry *e, enum em_kind kind, const char *key,
                   const char *why)
{
	s->stats.refused++;
	if (e && e->logged)
		return;
	if (e)
		e->logged = true;
	EM_WARN("controller", "kubernetes: %s %s: refused, skipped: %s", em_kind_name(kind), key,
	        why);
}

/* The index in <err> of em_store_change's "items[<i>] ..." message, or
 * SIZE_MAX when it names no item. */
static size_t refused_item(const char *err, const char **why)
{
	size_t i;
	int end = 0;
	if (sscanf(err, "items[%zu]%n", &i, &end) != 1 || end == 0)
		return SIZE_MAX;
	/* Past the label "<Kind> <ns>/<name>: ". */
	const char *colon = strstr(err + end, ": ");
	*why = colon ? colon + 2 : err + end;
	return i;
}

int em_kube_src_apply(struct em_kube_src *s, struct em_kube_batch *b)
{
	enum em_kind kind = b->kind;
	bool list = b->flags & EM_KUBE_LIST;
	size_t cap = b->n + (b->flags & EM_KUBE_LIST_LAST ? s->n_entries : 0) + 1;
	const cJSON **objs = calloc(cap, sizeof(*objs));
	struct pend *pend = calloc(cap, sizeof(*pend));
	struct entry **dying = calloc(cap, sizeof(*dying));
	size_t n = 0, n_dying = 0;
	int rc = 0;

	if (!objs || !pend || !dying) {
		rc = -ENOMEM;
		EM_ERR("controller", "kubernetes: %s: out of memory applying a batch",
		       em_kind_name(kind));
		goto out;
	}
	if (b->flags & EM_KUBE_LIST_FIRST)
		s->epoch[kind] = ++s->lists;
	for (size_t i = 0; i < b->n; i++) {
		const struct em_kube_item *it = &b->items[i];
		const char *ns, *name;
		struct entry *e;
		if (!it->obj) {
			e = entry_find(s, kind, it->ns, it->name);
			if (e && e->in_store && !e->dying) {
				e->dying = true;
				dying[n_dying++] = e;
			} else if (e && !e->in_store) {
				entry_remove(s, e);
			}
			continue;
		}
		struct em_k8s_object *o = NULL;
		char why[256];
		if (em_k8s_decode_json(it->obj, (int)kind, &o, why, sizeof(why)) != 0) {
			item_key(kind, it, &ns, &name);
			char key[600];
			snprintf(key, sizeof(key), "%.250s/%.300s", ns, name);
			e = name[0] ? entry_get(s, kind, ns, name) : NULL;
			if (e && list)
				e->mark = s->epoch[kind];
			refuse(s, e, kind, key, why);
			continue;
		}
		e = entry_get(s, kind, o->ns, o->name);
		uint64_t rvh = o->resource_version
		                       ? em_hash64(o->resource_version, strlen(o->resource_version),
		                                   EM_HASH_SEED) |
		                                 1
		                       : 0;
		if (!e) {
			em_k8s_free(o);
			rc = -ENOMEM;
			EM_ERR("controller", "kubernetes: %s: out of memory applying a batch",
			       em_kind_name(kind));
			goto undo;
		}
		if (list)
			e->mark = s->epoch[kind];
		e->dying = false;
		/* This version is what the store has (unless someone else
		 * deleted it since). */
		bool same = e->in_store && rvh && e->rvh == rvh &&
		            em_store_has(s->st, kind, o->ns, o->name);
		em_k8s_free(o);
		if (same)
			continue;
		objs[n] = it->obj;
		pend[n++] = (struct pend){e, rvh};
	}
	if (b->flags & EM_KUBE_LIST_LAST) {
		/* Walk a copy of the chains' heads: entry_remove unlinks. */
		for (size_t i = 0; i < s->n_buckets; i++)
			for (struct entry *e = s->buckets[i], *next; e; e = next) {
				next = e->next;
				if (e->kind != kind || e->mark == s->epoch[kind] || e->dying)
					continue;
				if (!e->in_store) {
					entry_remove(s, e);
					continue;
				}
				e->dying = true;
				dying[n_dying++] = e;
			}
	}
	struct em_store_key *del = calloc(n_dying + 1, sizeof(*del));
	if (!del) {
		rc = -ENOMEM;
		goto undo;
	}
	/* Split copies of the keys: the entries keep "<ns>/<name>" whole. */
	size_t n_del = 0;
	for (size_t i = 0; i < n_dying; i++) {
		struct entry *e = dying[i];
		if (!e->dying)
			continue; /* upserted again later in the batch */
		char *k = strdup(e->key);
		if (!k) {
			rc = -ENOMEM;
			break;
		}
		char *slash = strchr(k, '/');
		*slash = 0;
		del[n_del++] = (struct em_store_key){kind, k, slash + 1};
	}
	for (;;) {
		char err[512];
		size_t gone = 0;
		if (rc)
			break;
		if (!n && !n_del)
			break;
		rc = em_store_change(s->st, objs, n, del, n_del, &gone, err, sizeof(err));
		const char *why = err;
		size_t bad = rc == -EINVAL ? refused_item(err, &why) : SIZE_MAX;
		if (rc == 0) {
			s->stats.deleted += gone;
			break;
		}
		if (bad >= n) {
			EM_ERR("controller",
			       "kubernetes: %s: the store did not take %zu change(s): %s "
			       "(listing again)",
			       em_kind_name(kind), n + n_del, err);
			s->stats.failures++;
			if (rc == -EINVAL)
				rc = -EIO;
			break;
		}
		/* Without the refused object, the rest of the batch again. */
		refuse(s, pend[bad].e, kind, pend[bad].e->key, why);
		memmove(&objs[bad], &objs[bad + 1], (n - bad - 1) * sizeof(*objs));
		memmove(&pend[bad], &pend[bad + 1], (n - bad - 1) * sizeof(*pend));
		n--;
		rc = 0;
	}
	for (size_t i = 0; i < n_del; i++)
		free((char *)del[i].ns);
	free(del);
	if (rc)
		goto undo;
	for (size_t i = 0; i < n; i++) {
		struct entry *e = pend[i].e;
		if (!e->in_store)
			s->stats.objects++;
		e->in_store = true;
		e->rvh = pend[i].rvh;
		e->logged = false;
		s->stats.applied++;
	}
	for (size_t i = 0; i < n_dying; i++)
		if (dying[i]->dying)
			entry_remove(s, dying[i]);
	goto out;
undo:
	for (size_t i = 0; i < n_dying; i++)
		dying[i]->dying = false;
out:
	free(objs);
	free(pend);
	free(dying);
	em_kube_batch_free(b);
	return rc;
}

/* The sync thread's half of the Kubernetes API source: batches of objects
 * the watcher (store/kube.h) read, applied to the store as the source's
 * diffs.
 *
 * The source remembers which objects it put in the store (kind, namespace,
 * name and the resourceVersion applied). A DELETED event, or a list that no
 * longer has an object, deletes only what this source put there: objects of
 * other sources (manifests, meshctl apply) with other keys are never
 * touched. An object whose resourceVersion is the one already applied is
 * not applied again (a re-list of an unchanged cluster changes nothing and
 * sends edges nothing).
 *
 * An object the store refuses is skipped, the rest of its batch applied,
 * and the reason logged once per object key (again only after it applied
 * once). What the store held of it before stays.
 *
 * Owned by the sync thread; nothing here is thread-safe, except that a
 * batch may be built on one thread and applied on another. */
#ifndef EM_STORE_KUBE_SRC_H
#define EM_STORE_KUBE_SRC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/k8s.h"

struct cJSON;
struct em_store;

/* Batch flags. A list is one or more batches (its pages), the first with
 * LIST_FIRST, the last with LIST_LAST; objects this source gave of the
 * kind that no page of the list had are deleted with the last page. A list
 * cut short (no LIST_LAST) deletes nothing. */
#define EM_KUBE_LIST       0x1u /* a page of a list (every page has it) */
#define EM_KUBE_LIST_FIRST 0x2u
#define EM_KUBE_LIST_LAST  0x4u

struct em_kube_item {
	struct cJSON *obj; /* upsert: the object (owned), NULL for a delete */
	char *ns, *name;   /* delete: the key (owned); upsert: NULL */
};

/* Changes of one kind, in order. Built by the watcher, consumed by
 * em_kube_src_apply. */
struct em_kube_batch {
	struct em_kube_batch *next; /* queue link */
	enum em_kind kind;
	unsigned flags;
	struct em_kube_item *items;
	size_t n, cap;
	size_t bytes; /* the objects' size as read, for queue bounds */
};

struct em_kube_batch *em_kube_batch_new(enum em_kind kind, unsigned flags);
/* Adds an upsert of <obj> (ownership passes, also on failure) that took
 * <bytes> on the wire. Sets the object's "kind" (and "apiVersion") when it
 * lacks them, as list items do, and drops metadata.managedFields (large,
 * and nothing reads it). Returns 0 or -ENOMEM. */
int em_kube_batch_upsert(struct em_kube_batch *b, struct cJSON *obj, size_t bytes);
/* Adds a delete of <ns>/<name> (copied; <ns> "" or NULL is "default", and
 * always so for Nodes). Returns 0 or -ENOMEM. */
int em_kube_batch_delete(struct em_kube_batch *b, const char *ns, const char *name);
/* True when the batch already has a change of <ns>/<name>. */
bool em_kube_batch_has(const struct em_kube_batch *b, const char *ns, const char *name);
void em_kube_batch_free(struct em_kube_batch *b);

struct em_kube_src;

struct em_kube_src_stats {
	uint64_t objects;  /* objects of this source in the store now */
	uint64_t applied;  /* objects upserted */
	uint64_t deleted;  /* objects deleted (events and list diffs) */
	uint64_t refused;  /* objects the store refused */
	uint64_t failures; /* batches the store could not write at all */
};

/* A source writing to <st>. Returns NULL when out of memory. */
struct em_kube_src *em_kube_src_new(struct em_store *st);

/* Applies <b> (consumed) in one store change: its upserts and deletes, and
 * for LIST_LAST the list's diff. Objects the store refuses are skipped (see
 * above). Returns 0, or -EIO / -ENOMEM when the store could not take the
 * batch at all (logged): then the source no longer knows what the store
 * holds of this kind and the caller must list it again. */
int em_kube_src_apply(struct em_kube_src *s, struct em_kube_batch *b);

void em_kube_src_stats(const struct em_kube_src *s, struct em_kube_src_stats *out);
/* Frees the source; its objects stay in the store. NULL is fine. */
void em_kube_src_free(struct em_kube_src *s);

#endif

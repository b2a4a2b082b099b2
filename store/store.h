/* The metamanager's object store: sqlite on disk, decoded objects in memory,
 * and the service table snapshot built from them.
 *
 * Owned by the sync thread: no function here is thread-safe. Every change is
 * written to sqlite in one transaction first, then applied in memory, then
 * published as one new snapshot, so readers and the disk never disagree for
 * longer than one publication. */
#ifndef EM_STORE_STORE_H
#define EM_STORE_STORE_H

#include "store/beehive.h"
#include "store/k8s.h"

struct cJSON;
struct em_store;

/* Opens <data_dir>/edgemesh.db (created if missing), loads every row of a
 * stored kind (a malformed row is skipped with a log line naming its key) and
 * publishes the first snapshot. <local_node> names this node. A damaged file
 * (PRAGMA quick_check, or a read error while loading) is logged with its path
 * and what was skipped, and the readable rows still load; the file is not
 * written. Returns 0 or -errno (logged): the file cannot be opened at all, or
 * memory ran out. */
int em_store_open(const char *data_dir, const char *local_node, struct em_store **out);
/* Writes the Rules' counters that changed (em_store_flush_status) and frees
 * everything. The live table's Rules point to counters freed here: call it
 * once no thread reports into them (em_rule_report) any more. */
void em_store_close(struct em_store *st);

/* Sets the service ranges (capture.service_cidrs while capture is enabled,
 * else none) inside which em_store_apply refuses endpoint addresses. Copies
 * <cidrs>; objects already stored are not re-checked. Returns 0 or -ENOMEM
 * (the previous ranges stay). */
int em_store_set_service_cidrs(struct em_store *st, const struct em_cidr *cidrs, size_t n);

/* Upserts <n> objects (Kubernetes JSON, each with its "kind") in one
 * transaction and publishes one snapshot. All or nothing: the first object
 * that does not decode, or has an endpoint address that is unspecified,
 * multicast, broadcast or inside the service ranges, or a Rule whose two
 * RuleEndpoints are known (stored or in the batch) and do not fit it
 * (store/router.h em_router_check), fails the batch with
 * -EINVAL and "items[i] <Kind> <namespace>/<name>: <field path>: <reason>" in
 * <err>, nothing stored; -EIO when sqlite fails. */
int em_store_apply(struct em_store *st, const struct cJSON *const *objs, size_t n, char *err,
                   size_t errlen);

/* Told of every change once it is stored and published: <generation> is
 * the snapshot that holds it, <op> EM_BH_INSERT (the key was not there),
 * EM_BH_UPDATE or EM_BH_DELETE, <key> "<namespace>/<type>/<name>", <json>
 * the object as stored (NULL for a delete). Called synchronously from
 * em_store_change, em_store_apply and em_store_delete, in the order of the
 * changes (a batch's deletes first). Must not call back into the store. */
typedef void (*em_store_observer_fn)(void *ctx, uint64_t generation, enum em_bh_op op,
                                     const char *key, const char *json);
/* Sets the observer (NULL: none). */
void em_store_set_observer(struct em_store *st, em_store_observer_fn fn, void *ctx);

/* Told of every snapshot this store publishes, right after
 * em_table_publish, on the thread that made the change: <t> stays valid for
 * the call (only that thread publishes). Must not call back into the store. */
struct em_table;
typedef void (*em_store_published_fn)(void *ctx, const struct em_table *t);
/* Sets the receiver (NULL: none). */
void em_store_set_published(struct em_store *st, em_store_published_fn fn, void *ctx);

/* An object named for deletion. */
struct em_store_key {
	enum em_kind kind;
	const char *ns, *name;
};

/* As em_store_apply, and in the same transaction and snapshot deletes the
 * <n_del> objects of <del> (absent ones are fine; the deletes come before
 * the upserts, so an object in both stays). <*deleted> (when given) counts
 * the deleted objects that existed. All or nothing, as em_store_apply. */
int em_store_change(struct em_store *st, const struct cJSON *const *objs, size_t n,
                    const struct em_store_key *del, size_t n_del, size_t *deleted, char *err,
                    size_t errlen);

/* With <on>, changes (em_store_change*, em_store_apply, em_store_delete)
 * are stored and numbered at once but the service table is built and
 * published only by em_store_publish_pending: a thread that makes many
 * changes in a row (the sync thread, one turn of its loop) pays for one
 * build. Off by default. */
void em_store_defer_publish(struct em_store *st, bool on);

/* Builds and publishes the table when a change since the last build is not
 * in it. Returns 0 or -ENOMEM (the change stays pending; the next call tries
 * again). */
int em_store_publish_pending(struct em_store *st);

/* Where a change comes from, for em_store_change_from. */
struct em_store_src {
	/* Non-NULL: the upserted objects are marked as coming from this
	 * source (em_store_origin_scan finds them). NULL: marks stay as they
	 * are. A deleted object loses its mark either way. */
	const char *origin;
	/* Both non-NULL: named value <kv_key> is set to <kv_value> in the same
	 * transaction (em_store_kv_get reads it). */
	const char *kv_key, *kv_value;
};

/* As em_store_change, with <src> (NULL: as em_store_change). The marks and
 * the named value are written in the objects' transaction: all or none. */
int em_store_change_from(struct em_store *st, const struct cJSON *const *objs, size_t n,
                         const struct em_store_key *del, size_t n_del,
                         const struct em_store_src *src, size_t *deleted, char *err,
                         size_t errlen);

/* Copies named value <k> into <buf>. Returns 1 when set, 0 when not, -EIO. */
int em_store_kv_get(struct em_store *st, const char *k, char *buf, size_t cap);

/* Sets named value <k> to <v> in a transaction of its own (no object
 * changes, no new generation). Returns 0 or -EIO. */
int em_store_kv_set(struct em_store *st, const char *k, const char *v);

/* Calls <cb> with the key of every object marked as coming from <origin>,
 * in key order; a non-zero return stops it and is returned. -EIO on a read
 * error. <cb> must not call back into the store. */
int em_store_origin_scan(struct em_store *st, const char *origin,
                         int (*cb)(void *arg, const char *key), void *arg);

/* Calls <cb> with the key and stored JSON of at most <limit> objects of
 * <kind> whose key sorts after <after> ("" for the first), in key order: a
 * cursor to send a large store a page at a time. Returns 0, <cb>'s non-zero
 * return, or -EIO. <cb> must not call back into the store. */
int em_store_scan_after(struct em_store *st, enum em_kind kind, const char *after, unsigned limit,
                        int (*cb)(void *arg, const char *key, const char *json), void *arg);

/* Deletes one object, from the database and from memory. A row that is in
 * the database but was skipped at load (malformed) is deleted too. Returns 1
 * when it existed in either, 0 when not, -EIO (logged) when sqlite fails. */
int em_store_delete(struct em_store *st, enum em_kind kind, const char *ns, const char *name);

/* True when the store holds (and serves) the object <kind> <ns>/<name>.
 * Constant time: for sources that skip writing what is already there. */
bool em_store_has(const struct em_store *st, enum em_kind kind, const char *ns, const char *name);

/* Calls <cb> with the compact JSON of each object of <kind> in namespace <ns>
 * (every namespace when NULL) and name <name> (every name when NULL), in key
 * order. Returns the number of objects visited. */
typedef void (*em_store_visit_cb)(void *arg, const char *json);
size_t em_store_list(struct em_store *st, enum em_kind kind, const char *ns, const char *name,
                     em_store_visit_cb cb, void *arg);

/* Writes the Rules' counters that changed (store/router.h) into their rows,
 * when EM_STORE_FLUSH_MS passed since the last write at <now_ms>
 * (em_now_ms); called by the sync thread once per turn of its loop. A Rule
 * whose in_use changed is written at once by the build of the table
 * instead, and em_store_close writes what is left. Returns 0, -ENOMEM or
 * -EIO (the counters are written by a later call). */
#define EM_STORE_FLUSH_MS 1000
int em_store_flush_status(struct em_store *st, uint64_t now_ms);

struct em_store_stats {
	uint64_t generation; /* of the live snapshot */
	size_t objects[EM_KIND__COUNT];
	size_t services; /* in the snapshot */
	size_t table_bytes;
	uint64_t last_build_ns; /* time to build the last snapshot */
	uint64_t skipped;       /* malformed rows skipped at load */
	uint64_t unreadable;    /* rows (or rowid runs) of damaged pages skipped at load */
};
void em_store_stats(const struct em_store *st, struct em_store_stats *out);

#endif

/* The cloud's recent changes, numbered: what an edge that reconnects after
 * applying generation G is sent ("the changes since G"), or, when G is older
 * than what is kept, the sign that it needs a full snapshot instead.
 *
 * Each change carries the store generation it was published in, its
 * operation (insert, update, delete), the object's metamanager key
 * ("<namespace>/<type>/<name>") and, but for a delete, the object's JSON.
 * The log keeps the newest changes within <max_entries> and <max_bytes>
 * (keys and JSON counted); older ones are dropped, whole generations at a
 * time, so that "since G" never returns part of a generation.
 *
 * Owned by one thread (the sync thread); nothing here is thread-safe. */
#ifndef EM_STORE_CHANGELOG_H
#define EM_STORE_CHANGELOG_H

#include <stddef.h>
#include <stdint.h>

#include "store/beehive.h"

struct em_clog;

struct em_clog_entry {
	uint64_t generation;
	enum em_bh_op op; /* EM_BH_INSERT, EM_BH_UPDATE or EM_BH_DELETE */
	const char *key;
	const char *json; /* NULL for a delete */
};

/* A log bounded by <max_entries> (at least 1) and <max_bytes>, starting at
 * store generation <start>: changes up to <start> are not in it (an edge
 * behind <start> needs a snapshot). NULL when out of memory. */
struct em_clog *em_clog_new(uint64_t start, size_t max_entries, size_t max_bytes);
void em_clog_free(struct em_clog *c);

/* Appends a change of <generation>, which must not be below the last one
 * appended. <key> and <json> are copied. Returns 0, -EINVAL for a bad
 * operation, a NULL key, JSON on a delete or none on an insert or update,
 * or a generation going back, and -ENOMEM. A change larger than the whole
 * byte bound empties the log and is not kept: every edge then needs a
 * snapshot, which is safe. */
int em_clog_append(struct em_clog *c, uint64_t generation, enum em_bh_op op, const char *key,
                   const char *json);

/* Forgets every change and starts again at <generation>: an edge behind it
 * gets a snapshot. For when a change could not be logged. */
void em_clog_reset(struct em_clog *c, uint64_t generation);

/* Calls <cb> for each change kept whose generation is above <since>, oldest
 * first, synchronously; stops early when <cb> returns non-zero and returns
 * that. Returns 0 when every change after <since> was passed (none is fine),
 * or -ERANGE when some were dropped already (the caller sends a snapshot).
 * A <since> above the newest generation appended is -ERANGE too: the edge
 * knows a history this log does not (the cloud restarted). */
typedef int (*em_clog_cb)(void *arg, const struct em_clog_entry *e);
int em_clog_since(const struct em_clog *c, uint64_t since, em_clog_cb cb, void *arg);

struct em_clog_stats {
	size_t entries, bytes;
	uint64_t floor;  /* "since" below this needs a snapshot */
	uint64_t newest; /* generation of the newest change appended, or the start */
	uint64_t dropped;
};
void em_clog_stats(const struct em_clog *c, struct em_clog_stats *out);

#endif

/* The metamanager's sqlite store, in KubeEdge's schema:
 *   meta(key TEXT PRIMARY KEY, type TEXT, value TEXT)
 * key "<namespace>/<type>/<name>", type one of em_kind_type(), value the
 * object's Kubernetes JSON. Rows of other types are kept but ignored.
 *
 * A handle is used by one thread at a time (the sync thread owns it). */
#ifndef EM_STORE_DB_H
#define EM_STORE_DB_H

#include <stddef.h>
#include <stdint.h>

struct em_db;

/* Opens or creates the database at <path>: WAL journal, synchronous=NORMAL,
 * a busy timeout, wal_autocheckpoint and journal_size_limit so the WAL stays
 * bounded. Creates the meta table if missing, and accepts one created by
 * KubeEdge's edgecore. Returns 0, or -errno / -EIO with a log line naming the
 * path and sqlite's message. */
int em_db_open(const char *path, struct em_db **out);
void em_db_close(struct em_db *db);

/* Beside meta, the database holds two tables of our own: edgemesh_kv (named
 * values, such as what the edge last applied from the cloud) and
 * edgemesh_origin (which meta keys came from which source). */
enum em_db_op_kind {
	EM_DB_UPSERT = 0, /* meta row <key> = <type>, <value> */
	EM_DB_DELETE,     /* meta row <key>, and its origin, are gone */
	EM_DB_KV,         /* named value <key> = <value> */
	EM_DB_ORIGIN,     /* meta key <key> came from <value> (NULL: from none) */
};

struct em_db_op {
	enum em_db_op_kind op;
	const char *key;   /* "<ns>/<type>/<name>", or the name of a value */
	const char *type;  /* upsert only */
	const char *value; /* upsert: the object's JSON; kv: the value; origin */
};

/* Applies <n> operations in one transaction: all or none. Returns 0 or -EIO
 * (logged). A delete of a missing key is not an error. An op without a key,
 * or an upsert without type or value, fails the batch with -EINVAL (logged). */
int em_db_apply(struct em_db *db, const struct em_db_op *ops, size_t n);

/* Deletes the row of <key> whatever its type or value, in a transaction of
 * its own. Returns 1 when a row was removed, 0 when there was none, -EINVAL
 * for an empty key, -EIO (logged) when sqlite fails. */
int em_db_delete(struct em_db *db, const char *key);

/* Calls <cb> for each row whose type is <type> (every row when NULL), in key
 * order. A non-zero return from <cb> stops the scan and is returned. The
 * strings passed to <cb> live only for that call (NULL columns are passed as
 * ""); <cb> must not call back into <db>.
 *
 * A read error (a damaged page: SQLITE_CORRUPT, or an I/O error) does not end
 * the scan: it is logged with the file, the scan resumes after the last row
 * passed, and the rows that cannot be read are skipped, each logged with its
 * key (counted by em_db_unreadable). Returns 0 then; -EIO only when nothing
 * past the damage could be reached. When the key index itself is damaged,
 * the rows after it come in rowid order. Nothing is ever written back. */
typedef int (*em_db_row_cb)(void *arg, const char *key, const char *type, const char *value);
int em_db_scan(struct em_db *db, const char *type, em_db_row_cb cb, void *arg);

/* Calls <cb> for at most <limit> rows of type <type> whose key sorts after
 * <after> ("" for the first), in key order: a cursor over a large table, one
 * page at a time. A read error ends it with -EIO (logged); a non-zero return
 * from <cb> stops it and is returned; else 0. */
int em_db_scan_after(struct em_db *db, const char *type, const char *after, unsigned limit,
                     em_db_row_cb cb, void *arg);

/* Calls <cb> once with the row of <key> when there is one. Returns 1 when
 * it was called (or <cb>'s non-zero return), 0 when there is no such row,
 * -EIO (logged) on a read error. */
int em_db_get(struct em_db *db, const char *key, em_db_row_cb cb, void *arg);

/* Copies named value <k> into <buf> (cut to <cap> - 1 bytes). Returns 1
 * when it is set, 0 when not, -EIO (logged) when sqlite fails. */
int em_db_kv_get(struct em_db *db, const char *k, char *buf, size_t cap);

/* Calls <cb> with each meta key marked as coming from <origin>, in key
 * order; a non-zero return stops the scan and is returned. -EIO (logged)
 * on a read error. <cb> must not call back into <db>. */
int em_db_origin_scan(struct em_db *db, const char *origin, int (*cb)(void *arg, const char *key),
                      void *arg);

/* Rows (or runs of rowids) that scans of <db> skipped as unreadable so far. */
uint64_t em_db_unreadable(const struct em_db *db);

/* Runs PRAGMA quick_check and logs each problem it reports (the first few)
 * with the file. Returns the number of problems (0: none), or -EIO when the
 * check cannot run. Writes nothing. */
int em_db_quick_check(struct em_db *db);

/* Runs PRAGMA integrity_check. Returns 0 when "ok", else -EIO. */
int em_db_check(struct em_db *db);

#endif

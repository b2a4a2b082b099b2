/* The metamanager's sqlite store, in KubeEdge's schema:
 *   meta(key TEXT PRIMARY KEY, type TEXT, value TEXT)
 * key "<namespace>/<type>/<name>", type one of em_kind_type(), value the
 * object's Kubernetes JSON. Rows of other types are kept but ignored.
 *
 * A handle is used by one thread at a time (the sync thread owns it). */
#ifndef EM_STORE_DB_H
#define EM_STORE_DB_H

#include <stddef.h>

struct em_db;

/* Opens or creates the database at <path>: WAL journal, synchronous=NORMAL,
 * a busy timeout, wal_autocheckpoint and journal_size_limit so the WAL stays
 * bounded. Creates the meta table if missing, and accepts one created by
 * KubeEdge's edgecore. Returns 0, or -errno / -EIO with a log line naming the
 * path and sqlite's message. */
int em_db_open(const char *path, struct em_db **out);
void em_db_close(struct em_db *db);

enum em_db_op_kind { EM_DB_UPSERT = 0, EM_DB_DELETE };

struct em_db_op {
	enum em_db_op_kind op;
	const char *key;   /* "<ns>/<type>/<name>" */
	const char *type;  /* upsert only */
	const char *value; /* upsert only: the object's JSON */
};

/* Applies <n> operations in one transaction: all or none. Returns 0 or -EIO
 * (logged). A delete of a missing key is not an error. An op without a key,
 * or an upsert without type or value, fails the batch with -EINVAL (logged). */
int em_db_apply(struct em_db *db, const struct em_db_op *ops, size_t n);

/* Calls <cb> for each row whose type is <type> (every row when NULL), in key
 * order. A non-zero return from <cb> stops the scan and is returned; -EIO on
 * a read error. The strings passed to <cb> live only for that call (NULL
 * columns are passed as ""); <cb> must not call back into <db>. */
typedef int (*em_db_row_cb)(void *arg, const char *key, const char *type, const char *value);
int em_db_scan(struct em_db *db, const char *type, em_db_row_cb cb, void *arg);

/* Runs PRAGMA integrity_check. Returns 0 when "ok", else -EIO. */
int em_db_check(struct em_db *db);

#endif

#include "store/db.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "proto/log.h"

#define MOD "db"

/* A writer waits this long for another connection (a KubeEdge tool, sqlite3
 * shell) holding the write lock before the batch fails. */
#define EM_DB_BUSY_MS 5000
/* Checkpoint every 512 pages (2 MiB with 4 KiB pages) and cut the WAL back to
 * 4 MiB when it is reset, so a long-running node does not grow the -wal file
 * after a burst of updates. */
#define EM_DB_AUTOCHECKPOINT 512
#define EM_DB_JOURNAL_LIMIT  4194304
#define EM_DB_STR_(x)        #x
#define EM_DB_STR(x)         EM_DB_STR_(x)

/* KubeEdge's metamanager table; edgecore creates a compatible one (varchar
 * columns), so only create it when missing. */
static const char create_sql[] =
        "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, type TEXT, value TEXT)";
/* Tables of our own beside it, which KubeEdge's tools ignore: named values
 * (what the edge last applied from the cloud) and which meta rows came from
 * which source. Made on the first write that needs them, so that opening a
 * database (a damaged one, one of edgecore's) writes nothing. */
static const char create_kv_sql[] =
        "CREATE TABLE IF NOT EXISTS edgemesh_kv(k TEXT PRIMARY KEY, v TEXT NOT NULL)";
static const char create_origin_sql[] = "CREATE TABLE IF NOT EXISTS edgemesh_origin("
                                        "key TEXT PRIMARY KEY, origin TEXT NOT NULL)";

struct em_db {
	sqlite3 *h;
	sqlite3_stmt *begin;
	sqlite3_stmt *commit;
	sqlite3_stmt *rollback;
	sqlite3_stmt *upsert;
	sqlite3_stmt *del;
	sqlite3_stmt *scan_all;
	sqlite3_stmt *scan_type;
	sqlite3_stmt *scan_after;
	sqlite3_stmt *kv_set, *kv_get;
	sqlite3_stmt *origin_set, *origin_del, *origin_scan;
	bool own; /* our tables exist and their statements are prepared */
	uint64_t unreadable; /* rows scans had to skip */
	char path[PATH_MAX];
};

/* Rows named one by one in the log when a scan skips unreadable ones; the
 * rest are counted in one line, so a broken interior page cannot flood it. */
#define EM_DB_SKIP_LOG 10

static int db_fail(struct em_db *db, const char *what)
{
	EM_ERR(MOD, "%s: %s: %s", db->path, what, sqlite3_errmsg(db->h));
	return -EIO;
}

static int db_exec(struct em_db *db, const char *sql)
{
	char *msg = NULL;
	if (sqlite3_exec(db->h, sql, NULL, NULL, &msg) != SQLITE_OK) {
		EM_ERR(MOD, "%s: %s: %s", db->path, sql, msg ? msg : sqlite3_errmsg(db->h));
		sqlite3_free(msg);
		return -EIO;
	}
	return 0;
}

/* Runs a pragma that answers with one text row and returns it in <buf>. */
static int db_pragma(struct em_db *db, const char *sql, char *buf, size_t len)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(db->h, sql, -1, &st, NULL) != SQLITE_OK)
		return db_fail(db, sql);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const unsigned char *t = sqlite3_column_text(st, 0);
		snprintf(buf, len, "%s", t ? (const char *)t : "");
		rc = 0;
	} else if (rc == SQLITE_DONE) {
		buf[0] = 0;
		rc = 0;
	} else {
		rc = db_fail(db, sql);
	}
	sqlite3_finalize(st);
	return rc;
}

static int own_tables(struct em_db *db, bool create);

static int db_prepare(struct em_db *db, const char *sql, sqlite3_stmt **st)
{
	if (sqlite3_prepare_v3(db->h, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK)
		return db_fail(db, sql);
	return 0;
}

int em_db_open(const char *path, struct em_db **out)
{
	struct em_db *db;
	char mode[32];
	int rc;

	*out = NULL;
	if (!path || !*path || strlen(path) >= sizeof(db->path))
		return -EINVAL;
	db = calloc(1, sizeof(*db));
	if (!db)
		return -ENOMEM;
	snprintf(db->path, sizeof(db->path), "%s", path);

	/* NOMUTEX: one thread owns the handle, sqlite's own mutexes buy nothing. */
	rc = sqlite3_open_v2(path, &db->h,
	                     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
	                     NULL);
	if (rc != SQLITE_OK) {
		int sys = db->h ? sqlite3_system_errno(db->h) : 0;
		if (db->h)
			db_fail(db, "open");
		else
			EM_ERR(MOD, "%s: open: %s", path, sqlite3_errstr(rc));
		rc = sys > 0 ? -sys : (rc == SQLITE_NOMEM ? -ENOMEM : -EIO);
		goto fail;
	}
	sqlite3_extended_result_codes(db->h, 1);
	sqlite3_busy_timeout(db->h, EM_DB_BUSY_MS);

	rc = db_pragma(db, "PRAGMA journal_mode=WAL", mode, sizeof(mode));
	if (rc)
		goto fail;
	if (strcmp(mode, "wal") != 0) {
		EM_ERR(MOD, "%s: cannot use WAL journal (got \"%s\")", path, mode);
		rc = -EIO;
		goto fail;
	}
	/* In WAL mode NORMAL still survives a process crash; only an OS crash or
	 * power loss can lose the last commits, which the cloud re-sends. */
	if ((rc = db_exec(db, "PRAGMA synchronous=NORMAL")) != 0)
		goto fail;
	/* Up to 32 MiB of pages kept (grown only as read): a cloud sends each
	 * edge's snapshot from here, and with the default 2 MiB a large store
	 * is read from the file again for every edge. */
	if ((rc = db_exec(db, "PRAGMA cache_size=-32768")) != 0)
		goto fail;
	rc = db_pragma(db, "PRAGMA wal_autocheckpoint=" EM_DB_STR(EM_DB_AUTOCHECKPOINT), mode,
	               sizeof(mode));
	if (rc)
		goto fail;
	rc = db_pragma(db, "PRAGMA journal_size_limit=" EM_DB_STR(EM_DB_JOURNAL_LIMIT), mode,
	               sizeof(mode));
	if (rc)
		goto fail;
	if ((rc = db_exec(db, create_sql)) != 0)
		goto fail;

	if ((rc = db_prepare(db, "BEGIN IMMEDIATE", &db->begin)) != 0 ||
	    (rc = db_prepare(db, "COMMIT", &db->commit)) != 0 ||
	    (rc = db_prepare(db, "ROLLBACK", &db->rollback)) != 0 ||
	    (rc = db_prepare(db,
	                     "INSERT INTO meta(key, type, value) VALUES(?1, ?2, ?3) "
	                     "ON CONFLICT(key) DO UPDATE SET type = excluded.type, "
	                     "value = excluded.value",
	                     &db->upsert)) != 0 ||
	    (rc = db_prepare(db, "DELETE FROM meta WHERE key = ?1", &db->del)) != 0 ||
	    (rc = db_prepare(db, "SELECT key, type, value FROM meta ORDER BY key",
	                     &db->scan_all)) != 0 ||
	    (rc = db_prepare(db, "SELECT key, type, value FROM meta WHERE type = ?1 ORDER BY key",
	                     &db->scan_type)) != 0 ||
	    (rc = db_prepare(db,
	                     "SELECT key, type, value FROM meta WHERE type = ?1 AND key > ?2 "
	                     "ORDER BY key LIMIT ?3",
	                     &db->scan_after)) != 0)
		goto fail;
	char have[16];
	if ((rc = db_pragma(db,
	                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN "
	                    "('edgemesh_kv', 'edgemesh_origin')",
	                    have, sizeof(have))) != 0 ||
	    (strcmp(have, "2") == 0 && (rc = own_tables(db, false)) != 0))
		goto fail;

	*out = db;
	return 0;
fail:
	em_db_close(db);
	return rc;
}

void em_db_close(struct em_db *db)
{
	if (!db)
		return;
	sqlite3_finalize(db->begin);
	sqlite3_finalize(db->commit);
	sqlite3_finalize(db->rollback);
	sqlite3_finalize(db->upsert);
	sqlite3_finalize(db->del);
	sqlite3_finalize(db->scan_all);
	sqlite3_finalize(db->scan_type);
	sqlite3_finalize(db->scan_after);
	sqlite3_finalize(db->kv_set);
	sqlite3_finalize(db->kv_get);
	sqlite3_finalize(db->origin_set);
	sqlite3_finalize(db->origin_del);
	sqlite3_finalize(db->origin_scan);
	/* The last connection to close checkpoints and removes the -wal file. */
	if (db->h && sqlite3_close(db->h) != SQLITE_OK)
		db_fail(db, "close");
	free(db);
}

/* Makes our tables (with <create>; else they exist) and prepares their
 * statements. */
static int own_tables(struct em_db *db, bool create)
{
	int rc;
	if (create &&
	    ((rc = db_exec(db, create_kv_sql)) != 0 || (rc = db_exec(db, create_origin_sql)) != 0))
		return rc;
	if ((rc = db_prepare(db,
	                     "INSERT INTO edgemesh_kv(k, v) VALUES(?1, ?2) "
	                     "ON CONFLICT(k) DO UPDATE SET v = excluded.v",
	                     &db->kv_set)) != 0 ||
	    (rc = db_prepare(db, "SELECT v FROM edgemesh_kv WHERE k = ?1", &db->kv_get)) != 0 ||
	    (rc = db_prepare(db,
	                     "INSERT INTO edgemesh_origin(key, origin) VALUES(?1, ?2) "
	                     "ON CONFLICT(key) DO UPDATE SET origin = excluded.origin",
	                     &db->origin_set)) != 0 ||
	    (rc = db_prepare(db, "DELETE FROM edgemesh_origin WHERE key = ?1", &db->origin_del)) !=
	            0 ||
	    (rc = db_prepare(db, "SELECT key FROM edgemesh_origin WHERE origin = ?1 ORDER BY key",
	                     &db->origin_scan)) != 0)
		return rc;
	db->own = true;
	return 0;
}

/* Steps a statement that returns no rows, then resets it for its next use. */
static int db_step_done(struct em_db *db, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st);
	int ret = rc == SQLITE_DONE ? 0 : db_fail(db, what);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return ret;
}

static int db_apply_one(struct em_db *db, const struct em_db_op *op, size_t i)
{
	sqlite3_stmt *st;

	/* SQLite accepts NULL in a TEXT primary key, so reject it here. */
	if (!op->key || !*op->key) {
		EM_ERR(MOD, "%s: op %zu: no key", db->path, i);
		return -EINVAL;
	}
	if (op->op == EM_DB_DELETE || (op->op == EM_DB_ORIGIN && !op->value)) {
		/* A deleted row has no origin any more either. The meta row
		 * goes last: em_db_delete reads its change count. */
		int rc;
		st = db->origin_del;
		if (db->own) {
			if (sqlite3_bind_text(st, 1, op->key, -1, SQLITE_STATIC) != SQLITE_OK)
				return db_fail(db, op->key);
			if ((rc = db_step_done(db, st, op->key)))
				return rc;
		}
		if (op->op != EM_DB_DELETE)
			return 0;
		st = db->del;
		if (sqlite3_bind_text(st, 1, op->key, -1, SQLITE_STATIC) != SQLITE_OK)
			return db_fail(db, op->key);
		return db_step_done(db, st, op->key);
	}
	if (op->op == EM_DB_KV || op->op == EM_DB_ORIGIN) {
		st = op->op == EM_DB_KV ? db->kv_set : db->origin_set;
		if (!op->value) {
			EM_ERR(MOD, "%s: %s: a named value needs a value", db->path, op->key);
			return -EINVAL;
		}
		if (sqlite3_bind_text(st, 1, op->key, -1, SQLITE_STATIC) != SQLITE_OK ||
		    sqlite3_bind_text(st, 2, op->value, -1, SQLITE_STATIC) != SQLITE_OK) {
			sqlite3_clear_bindings(st);
			return db_fail(db, op->key);
		}
		return db_step_done(db, st, op->key);
	}
	if (op->op != EM_DB_UPSERT || !op->type || !op->value) {
		EM_ERR(MOD, "%s: %s: invalid operation (needs upsert with type and value)",
		       db->path, op->key);
		return -EINVAL;
	}
	st = db->upsert;
	if (sqlite3_bind_text(st, 1, op->key, -1, SQLITE_STATIC) != SQLITE_OK ||
	    sqlite3_bind_text(st, 2, op->type, -1, SQLITE_STATIC) != SQLITE_OK ||
	    sqlite3_bind_text(st, 3, op->value, -1, SQLITE_STATIC) != SQLITE_OK) {
		sqlite3_clear_bindings(st);
		return db_fail(db, op->key);
	}
	return db_step_done(db, st, op->key);
}

int em_db_apply(struct em_db *db, const struct em_db_op *ops, size_t n)
{
	int rc;

	for (size_t i = 0; i < n && !db->own; i++)
		if ((ops[i].op == EM_DB_KV || ops[i].op == EM_DB_ORIGIN) && ops[i].value &&
		    (rc = own_tables(db, true)) != 0)
			return rc;
	if ((rc = db_step_done(db, db->begin, "BEGIN IMMEDIATE")) != 0)
		return rc;
	for (size_t i = 0; i < n; i++)
		if ((rc = db_apply_one(db, &ops[i], i)) != 0)
			goto rollback;
	if ((rc = db_step_done(db, db->commit, "COMMIT")) != 0)
		goto rollback;
	return 0;
rollback:
	/* A failed COMMIT (SQLITE_BUSY, I/O error) can leave the transaction
	 * open, or sqlite may already have rolled it back itself. */
	if (!sqlite3_get_autocommit(db->h))
		db_step_done(db, db->rollback, "ROLLBACK");
	return rc;
}

int em_db_delete(struct em_db *db, const char *key)
{
	struct em_db_op op = {.op = EM_DB_DELETE, .key = key};
	int rc;

	if (!key || !*key)
		return -EINVAL;
	if ((rc = em_db_apply(db, &op, 1)))
		return rc;
	return sqlite3_changes(db->h) > 0;
}

/* The key a scan passed last, kept to resume after damage; the buffer grows
 * only for a longer key, so a scan allocates once or twice, not per row. */
struct last_key {
	char *s;
	size_t cap;
	bool set;
};

static void last_key_set(struct last_key *l, const char *key)
{
	size_t n = strlen(key) + 1;
	if (n > l->cap) {
		char *p = realloc(l->s, n);
		if (!p)
			return; /* resuming from the older key only repeats rows */
		l->s = p;
		l->cap = n;
	}
	memcpy(l->s, key, n);
	l->set = true;
}

/* Why sqlite could not go on, with the file named: a scan logs this before
 * it tries to carry on past the damage. */
static void scan_error(struct em_db *db, int rc, const char *where)
{
	EM_ERR(MOD, "%s: reading rows %s: %s (%s)", db->path, where, sqlite3_errstr(rc),
	       sqlite3_errmsg(db->h));
}

static void skip_row(struct em_db *db, size_t *logged, const char *key, int rc)
{
	db->unreadable++;
	if ((*logged)++ < EM_DB_SKIP_LOG)
		EM_ERR(MOD, "%s: row %s is unreadable (%s), skipped", db->path, key,
		       sqlite3_errstr(rc));
}

/* Calls <cb> for the rows of <type> whose key sorts after <last> (all when
 * <last> is NULL), walking the key index and fetching each row by rowid, so
 * that a damaged table page costs only the rows stored on it, each logged by
 * key. Returns what em_db_scan returns; -EIO when the index itself cannot be
 * read on. <last> is updated to the last key passed. */
static int scan_by_key(struct em_db *db, const char *type, em_db_row_cb cb, void *arg,
                       struct last_key *last, size_t *logged)
{
	sqlite3_stmt *keys = NULL, *row = NULL;
	int rc, ret = 0;

	if (sqlite3_prepare_v2(db->h,
	                       last->set ? "SELECT key, rowid FROM meta WHERE key > ?1 ORDER BY key"
	                                 : "SELECT key, rowid FROM meta ORDER BY key",
	                       -1, &keys, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db->h, "SELECT type, value FROM meta WHERE rowid = ?1", -1, &row,
	                       NULL) != SQLITE_OK) {
		ret = db_fail(db, "scan by key");
		goto out;
	}
	if (last->set && sqlite3_bind_text(keys, 1, last->s, -1, SQLITE_TRANSIENT) != SQLITE_OK) {
		ret = db_fail(db, "scan by key");
		goto out;
	}
	while ((rc = sqlite3_step(keys)) == SQLITE_ROW) {
		const unsigned char *k = sqlite3_column_text(keys, 0);
		const char *key = k ? (const char *)k : "";
		int r;

		sqlite3_bind_int64(row, 1, sqlite3_column_int64(keys, 1));
		r = sqlite3_step(row);
		if (r == SQLITE_ROW) {
			const unsigned char *t = sqlite3_column_text(row, 0);
			const unsigned char *v = sqlite3_column_text(row, 1);
			const char *ts = t ? (const char *)t : "";
			if (!type || strcmp(ts, type) == 0)
				ret = cb(arg, key, ts, v ? (const char *)v : "");
		} else if (r != SQLITE_DONE) {
			skip_row(db, logged, key, r);
		}
		sqlite3_reset(row);
		if (ret)
			break;
		last_key_set(last, key);
	}
	if (!ret && rc != SQLITE_DONE) {
		scan_error(db, rc, "by the key index");
		ret = -EIO;
	}
out:
	sqlite3_finalize(keys);
	sqlite3_finalize(row);
	return ret;
}

/* Probes whether reading rows after rowid <after> gets past the damage. */
static bool rowid_readable_after(sqlite3_stmt *probe, sqlite3_int64 after)
{
	int rc;
	sqlite3_bind_int64(probe, 1, after);
	rc = sqlite3_step(probe);
	sqlite3_reset(probe);
	return rc == SQLITE_ROW || rc == SQLITE_DONE;
}

/* The last resort when the key index is damaged: rows in rowid order, the
 * ones whose key sorts after <last> only (the key walk passed the others).
 * A run of rowids that cannot be read (one damaged page) is stepped over: the
 * smallest rowid after which reading works again is searched for. */
static int scan_by_rowid(struct em_db *db, const char *type, em_db_row_cb cb, void *arg,
                         const struct last_key *last, size_t *logged)
{
	sqlite3_stmt *rows = NULL, *probe = NULL;
	sqlite3_int64 after = INT64_MIN;
	int rc, ret = 0;

	if (sqlite3_prepare_v2(db->h,
	                       "SELECT rowid, key, type, value FROM meta WHERE rowid > ?1 "
	                       "ORDER BY rowid",
	                       -1, &rows, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db->h,
	                       "SELECT rowid FROM meta WHERE rowid > ?1 ORDER BY rowid LIMIT 1", -1,
	                       &probe, NULL) != SQLITE_OK) {
		ret = db_fail(db, "scan by rowid");
		goto out;
	}
	/* Each turn either reaches the end or steps over one damaged run; the
	 * count bounds a file damaged everywhere. */
	for (int turn = 0; turn < 4096; turn++) {
		sqlite3_bind_int64(rows, 1, after);
		while ((rc = sqlite3_step(rows)) == SQLITE_ROW) {
			const unsigned char *k = sqlite3_column_text(rows, 1);
			const unsigned char *t = sqlite3_column_text(rows, 2);
			const unsigned char *v = sqlite3_column_text(rows, 3);
			const char *key = k ? (const char *)k : "", *ts = t ? (const char *)t : "";
			after = sqlite3_column_int64(rows, 0);
			if ((!last->set || strcmp(key, last->s) > 0) &&
			    (!type || strcmp(ts, type) == 0))
				if ((ret = cb(arg, key, ts, v ? (const char *)v : "")))
					break;
		}
		sqlite3_reset(rows);
		if (ret || rc == SQLITE_DONE)
			goto out;
		/* Exponential then binary search for the first readable rowid. */
		sqlite3_int64 bad = after, step = 1, good;
		for (;;) {
			good = bad > INT64_MAX - step ? INT64_MAX : bad + step;
			if (good == INT64_MAX || rowid_readable_after(probe, good))
				break;
			bad = good;
			step = step > INT64_MAX / 2 ? INT64_MAX : step * 2;
		}
		while ((uint64_t)good - (uint64_t)bad > 1) {
			sqlite3_int64 mid =
			        bad + (sqlite3_int64)(((uint64_t)good - (uint64_t)bad) / 2);
			if (rowid_readable_after(probe, mid))
				good = mid;
			else
				bad = mid;
		}
		char what[80];
		snprintf(what, sizeof(what), "rowid %lld to %lld", (long long)after + 1,
		         (long long)good);
		skip_row(db, logged, what, rc);
		if (good == INT64_MAX)
			goto out;
		after = good;
	}
	ret = -EIO;
out:
	sqlite3_finalize(rows);
	sqlite3_finalize(probe);
	return ret;
}

int em_db_scan(struct em_db *db, const char *type, em_db_row_cb cb, void *arg)
{
	sqlite3_stmt *st = type ? db->scan_type : db->scan_all;
	struct last_key last = {0};
	size_t logged = 0;
	int rc, ret = 0;

	if (type && sqlite3_bind_text(st, 1, type, -1, SQLITE_STATIC) != SQLITE_OK)
		return db_fail(db, "scan");
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const unsigned char *k = sqlite3_column_text(st, 0);
		const unsigned char *t = sqlite3_column_text(st, 1);
		const unsigned char *v = sqlite3_column_text(st, 2);
		/* Rows written by other tools may hold NULLs: present them as "". */
		ret = cb(arg, k ? (const char *)k : "", t ? (const char *)t : "",
		         v ? (const char *)v : "");
		if (ret)
			break;
		last_key_set(&last, k ? (const char *)k : "");
	}
	if (!ret && rc != SQLITE_DONE) {
		/* A damaged page (SQLITE_CORRUPT) or a read error: carry on past
		 * it, so one bad page costs its rows and not the whole table. */
		scan_error(db, rc, "in key order");
		sqlite3_reset(st);
		ret = scan_by_key(db, type, cb, arg, &last, &logged);
		if (ret == -EIO)
			ret = scan_by_rowid(db, type, cb, arg, &last, &logged);
		if (logged > EM_DB_SKIP_LOG)
			EM_ERR(MOD, "%s: %zu unreadable rows or runs skipped in all", db->path,
			       logged);
		if (ret == 0)
			EM_WARN(MOD,
			        "%s: the readable rows were read; the file is left as it is "
			        "(sqlite3 %s .recover makes a repaired copy)",
			        db->path, db->path);
	}
	free(last.s);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return ret;
}

int em_db_scan_after(struct em_db *db, const char *type, const char *after, unsigned limit,
                     em_db_row_cb cb, void *arg)
{
	sqlite3_stmt *st = db->scan_after;
	int rc, ret = 0;

	if (sqlite3_bind_text(st, 1, type, -1, SQLITE_STATIC) != SQLITE_OK ||
	    sqlite3_bind_text(st, 2, after, -1, SQLITE_STATIC) != SQLITE_OK ||
	    sqlite3_bind_int64(st, 3, limit) != SQLITE_OK) {
		sqlite3_clear_bindings(st);
		return db_fail(db, "scan");
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const unsigned char *k = sqlite3_column_text(st, 0);
		const unsigned char *t = sqlite3_column_text(st, 1);
		const unsigned char *v = sqlite3_column_text(st, 2);
		if ((ret = cb(arg, k ? (const char *)k : "", t ? (const char *)t : "",
		              v ? (const char *)v : "")))
			break;
	}
	if (!ret && rc != SQLITE_DONE) {
		scan_error(db, rc, "after a key");
		ret = -EIO;
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return ret;
}

int em_db_get(struct em_db *db, const char *key, em_db_row_cb cb, void *arg)
{
	static const char sql[] = "SELECT key, type, value FROM meta WHERE key = ?1";
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(db->h, sql, -1, &st, NULL) != SQLITE_OK)
		return db_fail(db, sql);
	if (sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC) != SQLITE_OK) {
		rc = db_fail(db, sql);
	} else if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const unsigned char *t = sqlite3_column_text(st, 1);
		const unsigned char *v = sqlite3_column_text(st, 2);
		rc = cb(arg, key, t ? (const char *)t : "", v ? (const char *)v : "");
		rc = rc ? rc : 1;
	} else {
		rc = rc == SQLITE_DONE ? 0 : db_fail(db, sql);
	}
	sqlite3_finalize(st);
	return rc;
}

int em_db_kv_get(struct em_db *db, const char *k, char *buf, size_t cap)
{
	sqlite3_stmt *st = db->kv_get;
	int ret = 0;

	if (!db->own)
		return 0;
	if (sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC) != SQLITE_OK)
		return db_fail(db, k);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const unsigned char *v = sqlite3_column_text(st, 0);
		snprintf(buf, cap, "%s", v ? (const char *)v : "");
		ret = 1;
	} else if (rc != SQLITE_DONE) {
		ret = db_fail(db, k);
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return ret;
}

int em_db_origin_scan(struct em_db *db, const char *origin, int (*cb)(void *arg, const char *key),
                      void *arg)
{
	sqlite3_stmt *st = db->origin_scan;
	int rc, ret = 0;

	if (!db->own)
		return 0;
	if (sqlite3_bind_text(st, 1, origin, -1, SQLITE_STATIC) != SQLITE_OK)
		return db_fail(db, origin);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const unsigned char *k = sqlite3_column_text(st, 0);
		if (k && (ret = cb(arg, (const char *)k)))
			break;
	}
	if (!ret && rc != SQLITE_DONE) {
		scan_error(db, rc, "of origins");
		ret = -EIO;
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return ret;
}

uint64_t em_db_unreadable(const struct em_db *db)
{
	return db->unreadable;
}

/* Runs a check pragma; returns the number of problem lines, each of the
 * first EM_DB_SKIP_LOG logged, or -EIO when it cannot run (or stops before
 * naming any). */
static int db_check(struct em_db *db, const char *pragma)
{
	sqlite3_stmt *st;
	int rc, problems = 0;

	if (sqlite3_prepare_v2(db->h, pragma, -1, &st, NULL) != SQLITE_OK)
		return db_fail(db, pragma);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const unsigned char *t = sqlite3_column_text(st, 0);
		if (t && strcmp((const char *)t, "ok") == 0)
			continue;
		if (problems++ < EM_DB_SKIP_LOG)
			EM_ERR(MOD, "%s: %s: %s", db->path, pragma, t ? (const char *)t : "?");
	}
	if (rc != SQLITE_DONE) {
		/* The check stops at damage it cannot walk past: that is a problem
		 * found too. */
		EM_ERR(MOD, "%s: %s stopped: %s", db->path, pragma, sqlite3_errmsg(db->h));
		sqlite3_finalize(st);
		return problems ? problems : -EIO;
	}
	sqlite3_finalize(st);
	return problems;
}

int em_db_quick_check(struct em_db *db)
{
	return db_check(db, "PRAGMA quick_check");
}

int em_db_check(struct em_db *db)
{
	return db_check(db, "PRAGMA integrity_check") == 0 ? 0 : -EIO;
}

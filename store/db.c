#include "store/db.h"

#include <errno.h>
#include <limits.h>
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

struct em_db {
	sqlite3 *h;
	sqlite3_stmt *begin;
	sqlite3_stmt *commit;
	sqlite3_stmt *rollback;
	sqlite3_stmt *upsert;
	sqlite3_stmt *del;
	sqlite3_stmt *scan_all;
	sqlite3_stmt *scan_type;
	char path[PATH_MAX];
};

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
	                     &db->scan_type)) != 0)
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
	/* The last connection to close checkpoints and removes the -wal file. */
	if (db->h && sqlite3_close(db->h) != SQLITE_OK)
		db_fail(db, "close");
	free(db);
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
	if (op->op == EM_DB_DELETE) {
		st = db->del;
		if (sqlite3_bind_text(st, 1, op->key, -1, SQLITE_STATIC) != SQLITE_OK)
			return db_fail(db, op->key);
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

int em_db_scan(struct em_db *db, const char *type, em_db_row_cb cb, void *arg)
{
	sqlite3_stmt *st = type ? db->scan_type : db->scan_all;
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
	}
	if (!ret && rc != SQLITE_DONE)
		ret = db_fail(db, "scan");
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return ret;
}

int em_db_check(struct em_db *db)
{
	sqlite3_stmt *st;
	int rc, rows = 0, ok = 0;

	if (sqlite3_prepare_v2(db->h, "PRAGMA integrity_check", -1, &st, NULL) != SQLITE_OK)
		return db_fail(db, "integrity_check");
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const unsigned char *t = sqlite3_column_text(st, 0);
		rows++;
		if (t && strcmp((const char *)t, "ok") == 0)
			ok = 1;
		else
			EM_ERR(MOD, "%s: integrity_check: %s", db->path, t ? (const char *)t : "?");
	}
	if (rc != SQLITE_DONE) {
		sqlite3_finalize(st);
		return db_fail(db, "integrity_check");
	}
	sqlite3_finalize(st);
	return rows == 1 && ok ? 0 : -EIO;
}

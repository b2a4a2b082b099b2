/* The metamanager store: KubeEdge schema compatibility, round trips, batch
 * atomicity, bounded WAL. */
#include <criterion/criterion.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "proto/em.h"
#include "store/db.h"
#include "tests/store/tmpdb.h"

static struct tmpdb tdb;

static void setup(void)
{
	tmpdb_make(&tdb, "em-test-db");
}

static void teardown(void)
{
	tmpdb_remove(&tdb);
}

TestSuite(db, .init = setup, .fini = teardown, .timeout = 60);

/* Builds a database with plain sqlite3 calls, as edgecore would leave it. */
static void raw_exec(const char *p, const char *sql)
{
	sqlite3 *h;
	char *msg = NULL;
	cr_assert_eq(sqlite3_open(p, &h), SQLITE_OK);
	int rc = sqlite3_exec(h, sql, NULL, NULL, &msg);
	cr_assert_eq(rc, SQLITE_OK, "%s: %s", sql, msg ? msg : "");
	sqlite3_close(h);
}

static int raw_count(const char *p, const char *sql)
{
	sqlite3 *h;
	sqlite3_stmt *st;
	int n = -1;
	cr_assert_eq(sqlite3_open(p, &h), SQLITE_OK);
	cr_assert_eq(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK, "%s", sqlite3_errmsg(h));
	if (sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(h);
	return n;
}

struct rows {
	size_t n;
	char key[64][128];
	char type[64][32];
	char value[64][256];
};

static int collect(void *arg, const char *key, const char *type, const char *value)
{
	struct rows *r = arg;
	cr_assert_lt(r->n, 64);
	snprintf(r->key[r->n], sizeof(r->key[0]), "%s", key);
	snprintf(r->type[r->n], sizeof(r->type[0]), "%s", type);
	snprintf(r->value[r->n], sizeof(r->value[0]), "%s", value);
	r->n++;
	return 0;
}

static const char *find(const struct rows *r, const char *key)
{
	for (size_t i = 0; i < r->n; i++)
		if (strcmp(r->key[i], key) == 0)
			return r->value[i];
	return NULL;
}

static const char *const our_types[] = {"service", "endpoints", "endpointslice", "pod", "node"};

static void seed_kubeedge(const char *schema)
{
	raw_exec(tdb.path, schema);
	raw_exec(tdb.path, "INSERT INTO meta(key, type, value) VALUES"
	                   "('default/configmap/x', 'configmap', '{\"kind\":\"ConfigMap\"}'),"
	                   "('default/secret/y', 'secret', '{\"kind\":\"Secret\"}'),"
	                   "('default/service/web', 'service', '{\"kind\":\"Service\"}'),"
	                   "('default/endpoints/web', 'endpoints', '{\"kind\":\"Endpoints\"}'),"
	                   "('kube-system/pod/dns-1', 'pod', '{\"kind\":\"Pod\"}')");
}

static void check_kubeedge_db(void)
{
	struct em_db *db;
	struct rows r = {0};

	cr_assert_eq(em_db_open(tdb.path, &db), 0);
	cr_assert_eq(em_db_scan(db, "service", collect, &r), 0);
	cr_assert_eq(r.n, 1);
	cr_assert_str_eq(r.key[0], "default/service/web");
	cr_assert_str_eq(r.value[0], "{\"kind\":\"Service\"}");

	memset(&r, 0, sizeof(r));
	cr_assert_eq(em_db_scan(db, "pod", collect, &r), 0);
	cr_assert_eq(r.n, 1);
	cr_assert_str_eq(r.key[0], "kube-system/pod/dns-1");

	/* Every row, in key order, other types included. */
	memset(&r, 0, sizeof(r));
	cr_assert_eq(em_db_scan(db, NULL, collect, &r), 0);
	cr_assert_eq(r.n, 5);
	for (size_t i = 1; i < r.n; i++)
		cr_assert_lt(strcmp(r.key[i - 1], r.key[i]), 0);

	struct em_db_op ops[] = {
	        {EM_DB_UPSERT, "default/service/web", "service", "{\"v\":2}"},
	        {EM_DB_UPSERT, "default/node/n1", "node", "{\"kind\":\"Node\"}"},
	        {EM_DB_DELETE, "default/endpoints/web", NULL, NULL},
	};
	cr_assert_eq(em_db_apply(db, ops, 3), 0);
	cr_assert_eq(em_db_check(db), 0);
	em_db_close(db);

	/* Rows of other types survive our writes untouched. */
	cr_assert_eq(raw_count(tdb.path,
	                       "SELECT count(*) FROM meta WHERE key = 'default/configmap/x' "
	                       "AND type = 'configmap' AND value = '{\"kind\":\"ConfigMap\"}'"),
	             1);
	cr_assert_eq(raw_count(tdb.path, "SELECT count(*) FROM meta WHERE key = 'default/secret/y' "
	                                 "AND type = 'secret' AND value = '{\"kind\":\"Secret\"}'"),
	             1);
	cr_assert_eq(raw_count(tdb.path, "SELECT count(*) FROM meta WHERE key = "
	                                 "'default/service/web' AND value = '{\"v\":2}'"),
	             1);
	cr_assert_eq(raw_count(tdb.path, "SELECT count(*) FROM meta"), 5);
	/* Still one table: we did not create a second meta, and ours
	 * (edgemesh_kv, edgemesh_origin) come only with the first write that
	 * needs them. */
	cr_assert_eq(raw_count(tdb.path, "SELECT count(*) FROM sqlite_master WHERE type = 'table'"),
	             1);
}

static int collect_key(void *arg, const char *key)
{
	char *out = arg;
	strcat(out, key);
	strcat(out, ";");
	return 0;
}

static int collect_row(void *arg, const char *key, const char *type, const char *value)
{
	EM_UNUSED(type);
	EM_UNUSED(value);
	return collect_key(arg, key);
}

/* Named values and origins are written in the transaction of the objects;
 * a delete drops the origin; a failed batch writes neither. */
Test(db, kv_and_origin)
{
	struct em_db *db;
	char buf[256] = "";
	cr_assert_eq(em_db_open(tdb.path, &db), 0);
	cr_assert_eq(em_db_kv_get(db, "cloud", buf, sizeof(buf)), 0);
	struct em_db_op ops[] = {
	        {EM_DB_UPSERT, "a/service/x", "service", "{}"},
	        {EM_DB_ORIGIN, "a/service/x", NULL, "cloud"},
	        {EM_DB_UPSERT, "a/service/y", "service", "{}"},
	        {EM_DB_ORIGIN, "a/service/y", NULL, "cloud"},
	        {EM_DB_UPSERT, "a/service/z", "service", "{}"},
	        {EM_DB_KV, "cloud", NULL, "e1 7"},
	};
	cr_assert_eq(em_db_apply(db, ops, 6), 0);
	cr_assert_eq(raw_count(tdb.path, "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
	                                 "AND name IN ('edgemesh_kv', 'edgemesh_origin')"),
	             2);
	cr_assert_eq(em_db_kv_get(db, "cloud", buf, sizeof(buf)), 1);
	cr_assert_str_eq(buf, "e1 7");
	buf[0] = 0;
	cr_assert_eq(em_db_origin_scan(db, "cloud", collect_key, buf), 0);
	cr_assert_str_eq(buf, "a/service/x;a/service/y;");

	struct em_db_op del[] = {
	        {EM_DB_DELETE, "a/service/x", NULL, NULL},
	        {EM_DB_ORIGIN, "a/service/y", NULL, NULL},
	};
	cr_assert_eq(em_db_apply(db, del, 2), 0);
	buf[0] = 0;
	cr_assert_eq(em_db_origin_scan(db, "cloud", collect_key, buf), 0);
	cr_assert_str_eq(buf, "");
	/* The origin went, the object stays. */
	cr_assert_eq(em_db_delete(db, "a/service/y"), 1);

	struct em_db_op bad[] = {
	        {EM_DB_KV, "cloud", NULL, "e1 8"},
	        {EM_DB_UPSERT, "a/service/w", NULL, NULL},
	};
	cr_assert_neq(em_db_apply(db, bad, 2), 0);
	cr_assert_eq(em_db_kv_get(db, "cloud", buf, sizeof(buf)), 1);
	cr_assert_str_eq(buf, "e1 7");
	em_db_close(db);
}

/* A cursor over one type, a page at a time. */
Test(db, scan_after_pages)
{
	struct em_db *db;
	cr_assert_eq(em_db_open(tdb.path, &db), 0);
	struct em_db_op ops[] = {
	        {EM_DB_UPSERT, "a/service/1", "service", "{}"},
	        {EM_DB_UPSERT, "a/service/2", "service", "{}"},
	        {EM_DB_UPSERT, "a/node/n", "node", "{}"},
	        {EM_DB_UPSERT, "b/service/3", "service", "{}"},
	};
	cr_assert_eq(em_db_apply(db, ops, 4), 0);
	char buf[256] = "";
	cr_assert_eq(em_db_scan_after(db, "service", "", 2, collect_row, buf), 0);
	cr_assert_str_eq(buf, "a/service/1;a/service/2;");
	buf[0] = 0;
	cr_assert_eq(em_db_scan_after(db, "service", "a/service/2", 2, collect_row, buf), 0);
	cr_assert_str_eq(buf, "b/service/3;");
	buf[0] = 0;
	cr_assert_eq(em_db_scan_after(db, "service", "b/service/3", 2, collect_row, buf), 0);
	cr_assert_str_eq(buf, "");
	em_db_close(db);
}

Test(db, opens_kubeedge_schema)
{
	seed_kubeedge("CREATE TABLE meta(key TEXT PRIMARY KEY, type TEXT, value TEXT)");
	check_kubeedge_db();
}

/* The DDL edgecore's ORM emits for the same table: sized varchar columns,
 * NOT NULL with defaults, quoted names. */
Test(db, opens_edgecore_orm_schema)
{
	seed_kubeedge("CREATE TABLE \"meta\" (\"key\" varchar(256) NOT NULL PRIMARY KEY, "
	              "\"type\" varchar(32) NOT NULL DEFAULT '', \"value\" text)");
	check_kubeedge_db();
}

Test(db, creates_schema_and_wal)
{
	struct em_db *db;
	cr_assert_eq(em_db_open(tdb.path, &db), 0);
	em_db_close(db);
	cr_assert_eq(raw_count(tdb.path,
	                       "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
	                       "name = 'meta' AND sql = 'CREATE TABLE meta(key TEXT PRIMARY "
	                       "KEY, type TEXT, value TEXT)'"),
	             1);
	/* WAL is persistent in the file header: a plain connection sees it. */
	sqlite3 *h;
	sqlite3_stmt *st;
	cr_assert_eq(sqlite3_open(tdb.path, &h), SQLITE_OK);
	cr_assert_eq(sqlite3_prepare_v2(h, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
	cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
	cr_assert_str_eq((const char *)sqlite3_column_text(st, 0), "wal");
	sqlite3_finalize(st);
	sqlite3_close(h);
}

Test(db, round_trip_every_type)
{
	struct em_db *db;
	char key[5][64], val[5][64];
	struct em_db_op ops[5];
	struct rows r;

	cr_assert_eq(em_db_open(tdb.path, &db), 0);
	for (size_t i = 0; i < 5; i++) {
		snprintf(key[i], sizeof(key[i]), "ns1/%s/obj", our_types[i]);
		snprintf(val[i], sizeof(val[i]), "{\"t\":\"%s\",\"v\":1}", our_types[i]);
		ops[i] = (struct em_db_op){EM_DB_UPSERT, key[i], our_types[i], val[i]};
	}
	cr_assert_eq(em_db_apply(db, ops, 5), 0);

	for (size_t i = 0; i < 5; i++) {
		memset(&r, 0, sizeof(r));
		cr_assert_eq(em_db_scan(db, our_types[i], collect, &r), 0);
		cr_assert_eq(r.n, 1, "type %s", our_types[i]);
		cr_assert_str_eq(r.key[0], key[i]);
		cr_assert_str_eq(r.type[0], our_types[i]);
		cr_assert_str_eq(r.value[0], val[i]);
	}

	/* Update in place, then survive a reopen. */
	for (size_t i = 0; i < 5; i++) {
		snprintf(val[i], sizeof(val[i]), "{\"t\":\"%s\",\"v\":2}", our_types[i]);
		ops[i].value = val[i];
	}
	cr_assert_eq(em_db_apply(db, ops, 5), 0);
	em_db_close(db);
	cr_assert_eq(em_db_open(tdb.path, &db), 0);
	memset(&r, 0, sizeof(r));
	cr_assert_eq(em_db_scan(db, NULL, collect, &r), 0);
	cr_assert_eq(r.n, 5);
	for (size_t i = 0; i < 5; i++)
		cr_assert_str_eq(find(&r, key[i]), val[i]);

	/* Delete each; deleting a missing key is no error. */
	for (size_t i = 0; i < 5; i++)
		ops[i] = (struct em_db_op){.op = EM_DB_DELETE, .key = key[i]};
	cr_assert_eq(em_db_apply(db, ops, 5), 0);
	cr_assert_eq(em_db_apply(db, ops, 5), 0);
	memset(&r, 0, sizeof(r));
	cr_assert_eq(em_db_scan(db, NULL, collect, &r), 0);
	cr_assert_eq(r.n, 0);
	/* An empty batch commits nothing and succeeds. */
	cr_assert_eq(em_db_apply(db, NULL, 0), 0);
	em_db_close(db);
}

static int stop_at_two(void *arg, const char *key, const char *type, const char *value)
{
	int *n = arg;
	(void)key, (void)type, (void)value;
	return ++*n == 2 ? 42 : 0;
}

Test(db, scan_stops_on_callback_value)
{
	struct em_db *db;
	struct em_db_op ops[] = {
	        {EM_DB_UPSERT, "a/pod/1", "pod", "{}"},
	        {EM_DB_UPSERT, "a/pod/2", "pod", "{}"},
	        {EM_DB_UPSERT, "a/pod/3", "pod", "{}"},
	};
	int n = 0;
	cr_assert_eq(em_db_open(tdb.path, &db), 0);
	cr_assert_eq(em_db_apply(db, ops, 3), 0);
	cr_assert_eq(em_db_scan(db, "pod", stop_at_two, &n), 42);
	cr_assert_eq(n, 2);
	/* The statement was reset: a new scan starts from the beginning. */
	n = 0;
	cr_assert_eq(em_db_scan(db, "pod", stop_at_two, &n), 42);
	em_db_close(db);
}

Test(db, batch_is_atomic)
{
	struct em_db *db;
	struct rows r = {0};
	struct em_db_op ok[] = {
	        {EM_DB_UPSERT, "default/service/a", "service", "{\"v\":1}"},
	};
	struct em_db_op bad[] = {
	        {EM_DB_UPSERT, "default/service/a", "service", "{\"v\":2}"},
	        {EM_DB_UPSERT, "default/service/b", "service", "{\"v\":1}"},
	        {EM_DB_DELETE, "default/service/a", NULL, NULL},
	        {EM_DB_UPSERT, NULL, "service", "{}"},
	};
	struct em_db_op bad_upsert[] = {
	        {EM_DB_UPSERT, "default/service/c", "service", "{}"},
	        {EM_DB_UPSERT, "default/service/d", "service", NULL},
	};

	cr_assert_eq(em_db_open(tdb.path, &db), 0);
	cr_assert_eq(em_db_apply(db, ok, 1), 0);
	cr_assert_lt(em_db_apply(db, bad, 4), 0);
	cr_assert_lt(em_db_apply(db, bad_upsert, 2), 0);
	cr_assert_eq(em_db_scan(db, NULL, collect, &r), 0);
	cr_assert_eq(r.n, 1);
	cr_assert_str_eq(r.value[0], "{\"v\":1}");

	/* The handle is usable after a rollback. */
	cr_assert_eq(em_db_apply(db, bad, 3), 0);
	memset(&r, 0, sizeof(r));
	cr_assert_eq(em_db_scan(db, NULL, collect, &r), 0);
	cr_assert_eq(r.n, 1);
	cr_assert_str_eq(r.key[0], "default/service/b");
	em_db_close(db);
}

/* A failure raised by sqlite itself in the middle of a batch (here a trigger,
 * standing in for a constraint or I/O error) rolls back the earlier ops. */
Test(db, sqlite_error_rolls_back)
{
	struct em_db *db;
	struct rows r = {0};
	struct em_db_op ops[] = {
	        {EM_DB_UPSERT, "default/service/a", "service", "{}"},
	        {EM_DB_UPSERT, "default/service/boom", "service", "{}"},
	        {EM_DB_UPSERT, "default/service/z", "service", "{}"},
	};

	cr_assert_eq(em_db_open(tdb.path, &db), 0);
	raw_exec(tdb.path, "CREATE TRIGGER boom BEFORE INSERT ON meta WHEN NEW.key = "
	                   "'default/service/boom' BEGIN SELECT RAISE(ABORT, 'boom'); END");
	cr_assert_eq(em_db_apply(db, ops, 3), -EIO);
	cr_assert_eq(em_db_scan(db, NULL, collect, &r), 0);
	cr_assert_eq(r.n, 0);
	cr_assert_eq(em_db_apply(db, ops, 1), 0);
	em_db_close(db);
}

/* Another connection holding the write lock: the batch waits out the busy
 * timeout and fails cleanly instead of corrupting anything. */
Test(db, busy_writer_fails_cleanly, .timeout = 30)
{
	struct em_db *db;
	sqlite3 *h;
	struct em_db_op ops[] = {{EM_DB_UPSERT, "default/pod/p", "pod", "{}"}};

	cr_assert_eq(em_db_open(tdb.path, &db), 0);
	cr_assert_eq(sqlite3_open(tdb.path, &h), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(h, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	cr_assert_eq(em_db_apply(db, ops, 1), -EIO);
	cr_assert_eq(sqlite3_exec(h, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(h);
	cr_assert_eq(em_db_apply(db, ops, 1), 0);
	em_db_close(db);
}

Test(db, wal_stays_bounded)
{
	struct em_db *db;
	char wal[PATH_MAX + 32];
	char *value = malloc(2048 + 1);
	char key[8][64];
	struct em_db_op ops[8];
	struct stat st;
	off_t max_wal = 0;

	cr_assert_not_null(value);
	snprintf(wal, sizeof(wal), "%s-wal", tdb.path);
	cr_assert_eq(em_db_open(tdb.path, &db), 0);
	/* 250 batches of 8: 2,000 upserts of 2 KiB values, keys cycling over
	 * 400 objects so the table itself stays small while the WAL sees
	 * about 8 MiB of page writes. */
	for (int b = 0; b < 250; b++) {
		for (int i = 0; i < 8; i++) {
			snprintf(key[i], sizeof(key[i]), "default/pod/p%03d", (b * 8 + i) % 400);
			ops[i] = (struct em_db_op){EM_DB_UPSERT, key[i], "pod", value};
		}
		memset(value, 'a' + b % 26, 2048);
		value[2048] = 0;
		cr_assert_eq(em_db_apply(db, ops, 8), 0);
		if (stat(wal, &st) == 0 && st.st_size > max_wal)
			max_wal = st.st_size;
	}
	cr_log_info("largest -wal file: %lld bytes", (long long)max_wal);
	cr_assert_gt(max_wal, 0, "no -wal file: not in WAL mode");
	/* wal_autocheckpoint of 512 pages: about 2 MiB plus one batch. */
	cr_assert_lt(max_wal, 3 * 1024 * 1024, "WAL grew to %lld bytes", (long long)max_wal);
	cr_assert_eq(em_db_check(db), 0);
	em_db_close(db);
	free(value);
	cr_assert_eq(raw_count(tdb.path, "SELECT count(*) FROM meta WHERE type = 'pod'"), 400);
}

Test(db, open_errors)
{
	struct em_db *db = (struct em_db *)1;
	char p[PATH_MAX + 32];

	snprintf(p, sizeof(p), "%s/missing-dir/edgemesh.db", tdb.dir);
	cr_assert_lt(em_db_open(p, &db), 0);
	cr_assert_null(db);

	/* A file that is not a database. */
	snprintf(p, sizeof(p), "%s/garbage.db", tdb.dir);
	FILE *f = fopen(p, "w");
	cr_assert_not_null(f);
	for (int i = 0; i < 200; i++)
		fputs("this is not an sqlite database at all. ", f);
	fclose(f);
	cr_assert_eq(em_db_open(p, &db), -EIO);
	unlink(p);

	/* A meta table without the columns we need. */
	raw_exec(tdb.path, "CREATE TABLE meta(k TEXT PRIMARY KEY, v TEXT)");
	cr_assert_eq(em_db_open(tdb.path, &db), -EIO);
}

Test(db, check_ok)
{
	struct em_db *db;
	cr_assert_eq(em_db_open(tdb.path, &db), 0);
	cr_assert_eq(em_db_check(db), 0);
	em_db_close(db);
}

Test(db, delete_reports_whether_a_row_went)
{
	struct em_db *db;
	cr_assert_eq(em_db_open(tdb.path, &db), 0);
	raw_exec(tdb.path, "INSERT INTO meta VALUES ('default/service/bad', 'service', '{')");
	cr_assert_eq(em_db_delete(db, "default/service/bad"), 1);
	cr_assert_eq(em_db_delete(db, "default/service/bad"), 0);
	cr_assert_eq(em_db_delete(db, ""), -EINVAL);
	cr_assert_eq(raw_count(tdb.path, "SELECT count(*) FROM meta"), 0);
	em_db_close(db);
}

/* 600 rows of about 300 bytes: a few dozen table leaf pages. */
static void seed_many(void)
{
	raw_exec(tdb.path,
	         "PRAGMA journal_mode=WAL;"
	         "CREATE TABLE meta(key TEXT PRIMARY KEY, type TEXT, value TEXT);"
	         "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 599)"
	         " INSERT INTO meta SELECT printf('default/service/s%04d', i), 'service',"
	         " printf('{\"n\":%d,\"pad\":\"%.300c\"}', i, 'x') FROM n;"
	         "PRAGMA wal_checkpoint(TRUNCATE);");
}

/* Zeroes the <nth> leaf page of b-tree <tree>; returns its cell count. */
static int zero_leaf(const char *tree, int nth)
{
	char sql[256];
	int page, cells, psize = raw_count(tdb.path, "PRAGMA page_size");
	snprintf(sql, sizeof(sql),
	         "SELECT pageno FROM dbstat WHERE name = '%s' AND pagetype = 'leaf' ORDER BY "
	         "pageno LIMIT 1 OFFSET %d",
	         tree, nth);
	page = raw_count(tdb.path, sql);
	snprintf(sql, sizeof(sql), "SELECT ncell FROM dbstat WHERE pageno = %d", page);
	cells = raw_count(tdb.path, sql);
	cr_assert_gt(page, 1, "no leaf page %d of %s", nth, tree);
	cr_assert_gt(cells, 0);
	FILE *f = fopen(tdb.path, "r+b");
	char zero[65536] = {0};
	cr_assert_not_null(f);
	cr_assert_eq(fseek(f, (long)(page - 1) * psize, SEEK_SET), 0);
	cr_assert_eq(fwrite(zero, 1, (size_t)psize, f), (size_t)psize);
	fclose(f);
	return cells;
}

struct count {
	size_t n;
	char last[64];
	bool ordered;
};

static int count_rows(void *arg, const char *key, const char *type, const char *value)
{
	struct count *c = arg;
	(void)type;
	(void)value;
	if (c->n && strcmp(key, c->last) <= 0)
		c->ordered = false;
	snprintf(c->last, sizeof(c->last), "%s", key);
	c->n++;
	return 0;
}

Test(db, scan_skips_a_damaged_table_page)
{
	struct em_db *db;
	struct count c = {.ordered = true};
	int lost;

	seed_many();
	lost = zero_leaf("meta", 10);
	cr_assert_eq(em_db_open(tdb.path, &db), 0);
	cr_assert_gt(em_db_quick_check(db), 0);
	cr_assert_eq(em_db_scan(db, "service", count_rows, &c), 0);
	cr_assert_eq(c.n, 600u - (size_t)lost, "read %zu of %d", c.n, 600 - lost);
	cr_assert(c.ordered, "rows still come in key order");
	cr_assert_eq(em_db_unreadable(db), (uint64_t)lost);
	c = (struct count){.ordered = true};
	cr_assert_eq(em_db_scan(db, NULL, count_rows, &c), 0);
	cr_assert_eq(c.n, 600u - (size_t)lost);
	em_db_close(db);
}

Test(db, scan_gets_past_a_damaged_index_page)
{
	struct em_db *db;
	struct count c = {.ordered = true};

	seed_many();
	zero_leaf("sqlite_autoindex_meta_1", 2);
	cr_assert_eq(em_db_open(tdb.path, &db), 0);
	cr_assert_eq(em_db_scan(db, "service", count_rows, &c), 0);
	cr_assert_eq(c.n, 600u, "every row of the intact table is read (got %zu)", c.n);
	em_db_close(db);
}

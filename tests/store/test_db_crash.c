/* Crash safety of the metamanager store: a child commits numbered batches
 * and acknowledges each after em_db_apply returns; the parent SIGKILLs it at
 * random moments and checks that the file is intact and that every
 * acknowledged batch is there whole, and no batch is there in part. */
#include <criterion/criterion.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "proto/clock.h"
#include "proto/em.h"
#include "store/db.h"
#include "tests/store/tmpdb.h"

#define ROWS_PER_BATCH 6
#define KILLS          15
#define MAX_DELAY_MS   30
#define FIRST_ACK_MS   5000 /* bound on the wait for a child's first ack */
#define MAX_BATCHES    2000000

static struct tmpdb tdb;

static void setup(void)
{
	tmpdb_make(&tdb, "em-test-dbcrash");
}

static void teardown(void)
{
	tmpdb_remove(&tdb);
}

TestSuite(db_crash, .init = setup, .fini = teardown, .timeout = 60);

/* Keys "crash/service/b<batch:08>-<row>": key order is batch order. */
static int parse_key(const char *key, unsigned *batch, unsigned *row)
{
	return sscanf(key, "crash/service/b%8u-%u", batch, row) == 2 ? 0 : -1;
}

static int last_batch_cb(void *arg, const char *key, const char *type, const char *value)
{
	unsigned b, r;
	(void)type, (void)value;
	if (parse_key(key, &b, &r) == 0)
		*(unsigned *)arg = b;
	return 0;
}

/* The child: resume after the last batch on disk, commit batches until
 * killed. Only plain libc and the store here; no Criterion calls. */
static void child(int ackfd)
{
	struct em_db *db;
	unsigned last = 0;
	char keys[ROWS_PER_BATCH][64], vals[ROWS_PER_BATCH][160];
	struct em_db_op ops[ROWS_PER_BATCH];

	if (em_db_open(tdb.path, &db) != 0)
		_exit(2);
	if (em_db_scan(db, "service", last_batch_cb, &last) != 0)
		_exit(3);
	for (unsigned b = last + 1; b < MAX_BATCHES; b++) {
		for (unsigned r = 0; r < ROWS_PER_BATCH; r++) {
			snprintf(keys[r], sizeof(keys[r]), "crash/service/b%08u-%u", b, r);
			snprintf(vals[r], sizeof(vals[r]),
			         "{\"batch\":%u,\"row\":%u,\"pad\":\"%0*u\"}", b, r, 96, b);
			ops[r] = (struct em_db_op){EM_DB_UPSERT, keys[r], "service", vals[r]};
		}
		if (em_db_apply(db, ops, ROWS_PER_BATCH) != 0)
			_exit(4);
		if (write(ackfd, &b, sizeof(b)) != sizeof(b))
			_exit(5);
	}
	em_db_close(db);
	_exit(0);
}

struct verify {
	unsigned rows[1 << 18]; /* rows seen per batch */
	unsigned max_batch;
	int bad;
};

static int verify_cb(void *arg, const char *key, const char *type, const char *value)
{
	struct verify *v = arg;
	unsigned b, r, vb, vr;
	(void)type;
	if (parse_key(key, &b, &r) != 0 || r >= ROWS_PER_BATCH || b >= EM_ARRAY_SIZE(v->rows)) {
		v->bad++;
		return 0;
	}
	if (sscanf(value, "{\"batch\":%u,\"row\":%u,", &vb, &vr) != 2 || vb != b || vr != r) {
		v->bad++;
		return 0;
	}
	v->rows[b]++;
	if (b > v->max_batch)
		v->max_batch = b;
	return 0;
}

static void check_disk(unsigned acked, unsigned *on_disk)
{
	static struct verify v;
	struct em_db *db;

	memset(&v, 0, sizeof(v));
	cr_assert_eq(em_db_open(tdb.path, &db), 0);
	cr_assert_eq(em_db_check(db), 0, "integrity_check failed");
	cr_assert_eq(em_db_scan(db, "service", verify_cb, &v), 0);
	em_db_close(db);

	cr_assert_eq(v.bad, 0, "%d malformed rows", v.bad);
	cr_assert_geq(v.max_batch, acked, "acknowledged batch %u lost (disk has up to %u)", acked,
	              v.max_batch);
	/* Batches 1..max all whole: acknowledged ones present, none partial. */
	for (unsigned b = 1; b <= v.max_batch; b++)
		cr_assert_eq(v.rows[b], ROWS_PER_BATCH, "batch %u has %u of %u rows (acked %u)", b,
		             v.rows[b], ROWS_PER_BATCH, acked);
	*on_disk = v.max_batch;
}

Test(db_crash, sigkill_keeps_acknowledged_batches)
{
	unsigned acked = 0, on_disk = 0, rounds_with_acks = 0;
	uint64_t t0 = em_now_ms();

	srand((unsigned)time(NULL) ^ (unsigned)getpid());
	for (int k = 0; k < KILLS; k++) {
		int fds[2], status;
		unsigned round_acks = 0, b;
		pid_t pid;

		cr_assert_eq(pipe(fds), 0);
		pid = fork();
		cr_assert_neq(pid, -1);
		if (pid == 0) {
			close(fds[0]);
			child(fds[1]);
		}
		close(fds[1]);

		/* Odd rounds start the kill delay at the child's first ack, so that
		 * a loaded machine (a slow fork, a slow first commit) still gives
		 * rounds that kill a child in the middle of acknowledged work; even
		 * rounds count from the fork and may kill it before any commit. */
		uint64_t delay = (uint64_t)(rand() % (MAX_DELAY_MS + 1));
		bool wait_first = k & 1;
		uint64_t deadline = em_now_ms() + (wait_first ? FIRST_ACK_MS : delay);
		for (;;) {
			uint64_t now = em_now_ms();
			struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
			if (now >= deadline)
				break;
			int n = poll(&pfd, 1, (int)(deadline - now));
			if (n <= 0)
				continue;
			ssize_t got = read(fds[0], &b, sizeof(b));
			if (got != sizeof(b))
				break; /* child died on its own: caught below */
			cr_assert_eq(b, acked + 1, "ack %u out of order after %u", b, acked);
			acked = b;
			round_acks++;
			if (wait_first) {
				wait_first = false;
				deadline = em_now_ms() + delay;
			}
		}
		cr_assert_eq(kill(pid, SIGKILL), 0);
		cr_assert_eq(waitpid(pid, &status, 0), pid);
		/* Acks already in the pipe were sent before the kill: they count. */
		while (read(fds[0], &b, sizeof(b)) == sizeof(b)) {
			cr_assert_eq(b, acked + 1, "ack %u out of order after %u", b, acked);
			acked = b;
			round_acks++;
		}
		close(fds[0]);
		cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
		          "child exited by itself (status 0x%x)", status);
		rounds_with_acks += round_acks > 0;

		check_disk(acked, &on_disk);
		/* The next child resumes from on_disk + 1: a batch committed but
		 * not acknowledged before the kill is a valid outcome. */
		acked = on_disk;
		cr_assert_lt(em_now_ms() - t0, 30000, "test ran over its time budget");
	}
	cr_log_info("%u batches on disk after %d kills, %u rounds acknowledged work", on_disk,
	            KILLS, rounds_with_acks);
	cr_assert_gt(rounds_with_acks, 0, "no round committed anything: the test proved nothing");
}

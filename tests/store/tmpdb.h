/* A database file in a fresh temporary directory, for the store's tests. */
#ifndef EM_TESTS_STORE_TMPDB_H
#define EM_TESTS_STORE_TMPDB_H

#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

struct tmpdb {
	char dir[PATH_MAX];
	char path[PATH_MAX + 16]; /* <dir>/edgemesh.db */
};

/* Makes /tmp/<prefix>-XXXXXX and names the database file in it. */
static inline void tmpdb_make(struct tmpdb *t, const char *prefix)
{
	snprintf(t->dir, sizeof(t->dir), "/tmp/%s-XXXXXX", prefix);
	cr_assert_not_null(mkdtemp(t->dir));
	snprintf(t->path, sizeof(t->path), "%s/edgemesh.db", t->dir);
}

/* Removes the database with its WAL, shared-memory and journal files, then
 * the directory. */
static inline void tmpdb_remove(const struct tmpdb *t)
{
	char p[PATH_MAX + 32];
	static const char *const sfx[] = {"", "-wal", "-shm", "-journal"};
	for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
		snprintf(p, sizeof(p), "%s%s", t->path, sfx[i]);
		unlink(p);
	}
	rmdir(t->dir);
}

#endif

/* Reading a whole file, bounded, for the files a node is told to read
 * (its config, manifest files, state files). */
#ifndef EM_STORE_FILE_H
#define EM_STORE_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

/* Reads regular file <name> (relative to directory <dirfd>, or AT_FDCWD)
 * whole, when it is at most <max> bytes; a symbolic link is not followed
 * when <nofollow>. A file that shrinks while read yields what was there (an
 * editor saving: the parser judges it). Returns a new buffer (free()) of
 * <*len> bytes plus a NUL, with the file's stat in <*sb> when given; or
 * NULL with -errno in <*rc> and the reason in <why> (no path): "cannot
 * open: <error>", "expected a regular file of at most <max> bytes",
 * "cannot read: <error>" or "out of memory". */
char *em_file_read(int dirfd, const char *name, size_t max, bool nofollow, struct stat *sb,
                   size_t *len, int *rc, char *why, size_t whylen);

#endif

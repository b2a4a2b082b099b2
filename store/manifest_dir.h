/* A directory of manifest files as a source of objects (the cloud role's
 * controller.manifests_dir).
 *
 * Every *.json, *.yaml and *.yml file directly in the directory is read
 * (store/manifest.h) and applied to the store. The directory is watched with
 * inotify: a file written (closed after writing) or moved in is applied as a
 * diff against what that file gave before, so objects gone from it are
 * deleted, all in one store transaction and one snapshot; a file removed or moved out deletes its objects. A file that
 * does not parse, or whose objects the store refuses, changes nothing: the
 * objects it gave before stay, and the reason is logged once with the file
 * and line (again only after the file changed).
 *
 * Which file gave which object is kept in a state file (JSON, replaced
 * atomically after each change), so that a file removed or edited while the
 * daemon was down has its objects deleted at the next start, as if the
 * change had been seen.
 *
 * Owned by the sync thread; nothing here is thread-safe. */
#ifndef EM_STORE_MANIFEST_DIR_H
#define EM_STORE_MANIFEST_DIR_H

#include <stddef.h>
#include <stdint.h>

struct em_store;
struct em_mdir;

/* Files larger than this are refused (logged) rather than read. */
#define EM_MDIR_MAX_FILE (16u * 1024 * 1024)
/* Files the directory may hold; more are refused (logged). */
#define EM_MDIR_MAX_FILES 4096u

/* Starts watching <dir> and applies every manifest file in it to <st>,
 * against what <state_path> says the files gave before (objects of files
 * gone since are deleted). Returns 0 and the watcher in <*out>, or -errno
 * (logged with the path) when the directory cannot be watched. A file that
 * fails is logged and skipped, and so is a state file that cannot be read
 * (then objects of files removed while the daemon was down stay); neither
 * fails the start. */
int em_mdir_open(const char *dir, const char *state_path, struct em_store *st,
                 struct em_mdir **out);

/* The inotify descriptor to poll for POLLIN. */
int em_mdir_fd(const struct em_mdir *d);

/* Reads the pending inotify events and applies the files they name (each
 * at most once per call). Never blocks. */
void em_mdir_handle(struct em_mdir *d);

struct em_mdir_stats {
	uint64_t files;   /* manifest files whose objects are applied now */
	uint64_t objects; /* objects they give */
	uint64_t applied; /* file (re)loads applied since start */
	uint64_t failed;  /* file loads refused (parse or store error) */
	uint64_t deleted; /* objects deleted because their file dropped them */
};
void em_mdir_stats(const struct em_mdir *d, struct em_mdir_stats *out);

/* Stops watching; the objects stay in the store. NULL is fine. */
void em_mdir_close(struct em_mdir *d);

#endif

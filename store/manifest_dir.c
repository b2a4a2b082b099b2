/* A watched directory of manifest files applied to the store as diffs. */
#include "store/manifest_dir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "proto/em.h"
#include "proto/log.h"
#include "store/file.h"
#include "store/json.h"
#include "store/k8s.h"
#include "store/manifest.h"
#include "store/store.h"

/* One object a file gave. */
struct okey {
	enum em_kind kind;
	char *ns, *name;
};

/* A manifest file and what it gave when last applied. */
struct mfile {
	char *name; /* inside the directory */
	struct okey *keys;
	size_t n_keys;
	uint64_t failed_sig;   /* size and mtime of the last version that failed */
	uint64_t applied_hash; /* of the text last applied, 0 before */
	bool seen;             /* still in the directory (rescan) */
};

struct em_mdir {
	char dir[PATH_MAX];
	char state[PATH_MAX];
	bool dirty; /* the state file is behind */
	int fd;
	struct em_store *st;
	struct mfile *files;
	size_t n_files, cap_files;
	struct em_mdir_stats stats;
};

static void keys_free(struct okey *k, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(k[i].ns);
		free(k[i].name);
	}
	free(k);
}

static struct mfile *file_find(struct em_mdir *d, const char *name)
{
	for (size_t i = 0; i < d->n_files; i++)
		if (strcmp(d->files[i].name, name) == 0)
			return &d->files[i];
	return NULL;
}

static struct mfile *file_add(struct em_mdir *d, const char *name)
{
	if (d->n_files == d->cap_files) {
		size_t cap = d->cap_files ? d->cap_files * 2 : 16;
		struct mfile *nf = realloc(d->files, cap * sizeof(*nf));
		if (!nf)
			return NULL;
		d->files = nf;
		d->cap_files = cap;
	}
	char *copy = strdup(name);
	if (!copy)
		return NULL;
	struct mfile *f = &d->files[d->n_files++];
	*f = (struct mfile){.name = copy};
	return f;
}

/* Applies <objs> (<n>, the file's new objects; may be none) and deletes
 * the objects of <f> that <keep> (<n_keep> keys) no longer has, in one
 * transaction and one snapshot. Returns 0 or what em_store_change does,
 * with its message in <err>. */
static int change(struct em_mdir *d, const struct mfile *f, const cJSON *const *objs, size_t n,
                  const struct okey *keep, size_t n_keep, char *err, size_t errlen)
{
	struct em_store_key *del = calloc(f->n_keys ? f->n_keys : 1, sizeof(*del));
	size_t n_del = 0, gone = 0;
	if (!del) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	for (size_t i = 0; i < f->n_keys; i++) {
		const struct okey *k = &f->keys[i];
		bool kept = false;
		for (size_t j = 0; j < n_keep && !kept; j++)
			kept = keep[j].kind == k->kind && strcmp(keep[j].ns, k->ns) == 0 &&
			       strcmp(keep[j].name, k->name) == 0;
		if (!kept)
			del[n_del++] = (struct em_store_key){k->kind, k->ns, k->name};
	}
	int rc = em_store_change(d->st, objs, n, del, n_del, &gone, err, errlen);
	d->stats.deleted += gone;
	free(del);
	return rc;
}

/* The file is gone (removed, moved out): its objects go with it. */
static void file_gone(struct em_mdir *d, struct mfile *f)
{
	if (f->n_keys)
		EM_INFO("controller", "%s/%s: removed, deleting its %zu object(s)", d->dir, f->name,
		        f->n_keys);
	char err[256];
	if (change(d, f, NULL, 0, NULL, 0, err, sizeof(err)))
		EM_WARN("controller", "%s/%s: deleting its objects: %s", d->dir, f->name, err);
	d->dirty = true;
	keys_free(f->keys, f->n_keys);
	free(f->name);
	*f = d->files[--d->n_files];
}

/* File <name> of the directory whole, and a signature of its version (size
 * and mtime) to log a refused version once. */
static char *read_file(int dfd, const char *name, size_t max, size_t *len, uint64_t *sig, char *why,
                       size_t whylen)
{
	struct stat sb;
	int rc;
	char *text = em_file_read(dfd, name, max, true, &sb, len, &rc, why, whylen);
	*sig = text ? ((uint64_t)sb.st_size << 32) ^ (uint64_t)sb.st_mtim.tv_sec ^
	                       (uint64_t)sb.st_mtim.tv_nsec
	            : 0;
	return text;
}

/* The keys of <objs> (a cJSON array of objects), decoded as the store will
 * decode them. Returns 0, or -EINVAL with the reason in <err>. */
static int keys_of(const cJSON *objs, struct okey **out, size_t *n, char *err, size_t errlen)
{
	size_t cnt = (size_t)cJSON_GetArraySize(objs), i = 0;
	struct okey *k = calloc(cnt ? cnt : 1, sizeof(*k));
	if (!k) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	const cJSON *o;
	cJSON_ArrayForEach(o, objs)
	{
		struct em_k8s_object *obj = NULL;
		char why[200];
		if (em_k8s_decode_json(o, -1, &obj, why, sizeof(why)) != 0) {
			snprintf(err, errlen, "object %zu: %s", i + 1, why);
			keys_free(k, i);
			return -EINVAL;
		}
		k[i] = (struct okey){obj->kind, strdup(obj->ns), strdup(obj->name)};
		em_k8s_free(obj);
		if (!k[i].ns || !k[i].name) {
			keys_free(k, i + 1);
			snprintf(err, errlen, "out of memory");
			return -ENOMEM;
		}
		i++;
	}
	*out = k;
	*n = i;
	return 0;
}

/* (Re)applies file <name>: all its objects in one batch, then deletes
 * those it no longer gives. On any failure nothing changes. */
static void file_load(struct em_mdir *d, int dfd, const char *name)
{
	enum em_manifest_format fmt = em_manifest_format_of(name);
	if (fmt == EM_MANIFEST_NONE || name[0] == '.')
		return;
	struct mfile *f = file_find(d, name);
	if (!f && d->n_files >= EM_MDIR_MAX_FILES) {
		EM_WARN("controller", "%s/%s: ignored, more than %u manifest files", d->dir, name,
		        EM_MDIR_MAX_FILES);
		return;
	}
	if (!f && !(f = file_add(d, name))) {
		EM_ERR("controller", "%s/%s: out of memory", d->dir, name);
		return;
	}
	f->seen = true;
	/* <msg>: what is logged when the file is refused, naming it. */
	char path[PATH_MAX + 64], why[256], msg[600];
	snprintf(path, sizeof(path), "%s/%s", d->dir, name);
	size_t len = 0;
	uint64_t sig = 0;
	char *text = read_file(dfd, name, EM_MDIR_MAX_FILE, &len, &sig, why, sizeof(why));
	cJSON *objs = NULL;
	struct okey *keys = NULL;
	size_t n_keys = 0;
	int rc = -EIO;
	uint64_t hash = text ? em_hash64(text, len, EM_HASH_SEED) | 1 : 0;
	if (text && hash == f->applied_hash) {
		/* Written again as it was (a touch, an editor's second write):
		 * nothing to apply, and nothing for the edges. */
		free(text);
		f->failed_sig = 0;
		return;
	}
	if (!text)
		snprintf(msg, sizeof(msg), "%.300s: %s", path, why);
	else if ((rc = em_manifest_parse(path, text, len, fmt, &objs, msg, sizeof(msg))) == 0 &&
	         (rc = keys_of(objs, &keys, &n_keys, why, sizeof(why))) != 0)
		snprintf(msg, sizeof(msg), "%.300s: %s", path, why);
	free(text);
	if (rc == 0) {
		const cJSON **v = malloc((n_keys ? n_keys : 1) * sizeof(*v));
		size_t i = 0;
		const cJSON *o;
		cJSON_ArrayForEach(o, objs)
		{
			if (v)
				v[i++] = o;
		}
		rc = v ? change(d, f, v, n_keys, keys, n_keys, why, sizeof(why)) : -ENOMEM;
		if (rc)
			snprintf(msg, sizeof(msg), "%.300s: %s", path, v ? why : "out of memory");
		free(v);
	}
	cJSON_Delete(objs);
	if (rc) {
		d->stats.failed++;
		keys_free(keys, n_keys);
		if (sig != f->failed_sig)
			EM_WARN("controller",
			        "%s (nothing changed: the objects it gave before stay)", msg);
		f->failed_sig = sig;
		return;
	}
	f->failed_sig = 0;
	f->applied_hash = hash;
	d->dirty = true;
	keys_free(f->keys, f->n_keys);
	f->keys = keys;
	f->n_keys = n_keys;
	d->stats.applied++;
	EM_INFO("controller", "%s: applied %zu object(s)", path, n_keys);
}

/* ---- the state file: {"dir": ..., "files": {"<file>": ["<ns>/<type>/<name>", ...]}} */

#define STATE_MAX (64u * 1024 * 1024)

static void state_save(struct em_mdir *d)
{
	if (!d->dirty)
		return;
	cJSON *root = cJSON_CreateObject(), *files = cJSON_AddObjectToObject(root, "files");
	bool ok = root && files && cJSON_AddStringToObject(root, "dir", d->dir);
	for (size_t i = 0; ok && i < d->n_files; i++) {
		const struct mfile *f = &d->files[i];
		cJSON *keys = cJSON_AddArrayToObject(files, f->name);
		for (size_t k = 0; keys && k < f->n_keys; k++) {
			char key[600];
			if (em_k8s_key(f->keys[k].kind, f->keys[k].ns, f->keys[k].name, key,
			               sizeof(key)) > 0)
				cJSON_AddItemToArray(keys, cJSON_CreateString(key));
		}
		ok = keys != NULL;
	}
	char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
	cJSON_Delete(root);
	char tmp[PATH_MAX + 8];
	snprintf(tmp, sizeof(tmp), "%s.new", d->state);
	FILE *fp = text ? fopen(tmp, "we") : NULL;
	bool written = fp && fputs(text, fp) >= 0 && fflush(fp) == 0 && fsync(fileno(fp)) == 0;
	if (fp && fclose(fp) != 0)
		written = false;
	if (written && rename(tmp, d->state) == 0) {
		d->dirty = false;
	} else {
		EM_WARN("controller", "%s: cannot write the manifests state: %s", d->state,
		        text ? strerror(errno) : "out of memory");
		if (fp)
			unlink(tmp);
	}
	free(text);
}

/* What the state file says each file gave: entries with their keys, not
 * yet seen. A missing file is a first start; an unreadable one is logged. */
static void state_load(struct em_mdir *d)
{
	if (access(d->state, F_OK) != 0)
		return; /* a first start */
	size_t len = 0;
	uint64_t sig;
	char why[256];
	char *text = read_file(AT_FDCWD, d->state, STATE_MAX, &len, &sig, why, sizeof(why));
	size_t off = 0;
	cJSON *root = text ? em_json_parse(text, len, &off, NULL) : NULL;
	free(text);
	const cJSON *files = cJSON_GetObjectItemCaseSensitive(root, "files");
	if (!cJSON_IsObject(files)) {
		EM_WARN("controller",
		        "%s: unreadable, ignored (objects of files removed while stopped stay)",
		        d->state);
		cJSON_Delete(root);
		return;
	}
	const cJSON *e;
	cJSON_ArrayForEach(e, files)
	{
		if (!cJSON_IsArray(e) || !e->string || strchr(e->string, '/') ||
		    file_find(d, e->string))
			continue;
		struct mfile *f = file_add(d, e->string);
		size_t n = (size_t)cJSON_GetArraySize(e);
		if (!f || !(f->keys = calloc(n ? n : 1, sizeof(*f->keys))))
			break;
		const cJSON *k;
		cJSON_ArrayForEach(k, e)
		{
			char buf[600];
			if (!cJSON_IsString(k) || strlen(k->valuestring) >= sizeof(buf))
				continue;
			snprintf(buf, sizeof(buf), "%s", k->valuestring);
			char *type = strchr(buf, '/'), *name = type ? strchr(type + 1, '/') : NULL;
			if (!name)
				continue;
			*type++ = 0;
			*name++ = 0;
			int kind = em_kind_from_type(type);
			if (kind < 0 || !*name)
				continue;
			struct okey *o = &f->keys[f->n_keys];
			o->kind = (enum em_kind)kind;
			o->ns = strdup(buf);
			o->name = strdup(name);
			if (!o->ns || !o->name) {
				free(o->ns);
				free(o->name);
				continue;
			}
			f->n_keys++;
		}
	}
	cJSON_Delete(root);
}

static void totals(struct em_mdir *d)
{
	d->stats.files = d->n_files;
	d->stats.objects = 0;
	for (size_t i = 0; i < d->n_files; i++)
		d->stats.objects += d->files[i].n_keys;
}

int em_mdir_open(const char *dir, const char *state_path, struct em_store *st, struct em_mdir **out)
{
	struct em_mdir *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	snprintf(d->dir, sizeof(d->dir), "%s", dir);
	snprintf(d->state, sizeof(d->state), "%s", state_path);
	d->st = st;
	d->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	int rc = 0;
	if (d->fd == -1 ||
	    inotify_add_watch(d->fd, dir,
	                      IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE |
	                              IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR) == -1) {
		rc = -errno;
		EM_ERR("controller", "controller.manifests_dir %s: cannot watch it: %s", dir,
		       strerror(-rc));
		if (d->fd != -1)
			close(d->fd);
		free(d);
		return rc;
	}
	state_load(d);
	/* Watched first, then read: a file written meanwhile is read again. */
	DIR *dh = opendir(dir);
	if (!dh) {
		rc = -errno;
		EM_ERR("controller", "controller.manifests_dir %s: %s", dir, strerror(-rc));
		close(d->fd);
		free(d);
		return rc;
	}
	/* In name order, so that a start applies files the same way each time. */
	struct dirent **names = NULL;
	int n = scandir(dir, &names, NULL, alphasort);
	for (int i = 0; i < n; i++) {
		file_load(d, dirfd(dh), names[i]->d_name);
		free(names[i]);
	}
	free(names);
	closedir(dh);
	/* What the state names and the directory no longer has went while the
	 * daemon was down. Walk backwards: file_gone moves the last entry. */
	for (size_t i = d->n_files; i-- > 0;)
		if (!d->files[i].seen)
			file_gone(d, &d->files[i]);
	state_save(d);
	totals(d);
	EM_INFO("controller", "watching %s: %zu manifest file(s), %llu object(s)", dir, d->n_files,
	        (unsigned long long)d->stats.objects);
	*out = d;
	return 0;
}

int em_mdir_fd(const struct em_mdir *d)
{
	return d->fd;
}

void em_mdir_handle(struct em_mdir *d)
{
	char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
	int dfd = open(d->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	for (;;) {
		ssize_t n = read(d->fd, buf, sizeof(buf));
		if (n <= 0)
			break;
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)(void *)p;
			p += sizeof(*ev) + ev->len;
			if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF))
				EM_WARN("controller",
				        "%s: the directory was removed or moved: its objects stay, "
				        "nothing more is watched",
				        d->dir);
			if (ev->mask & IN_Q_OVERFLOW)
				EM_WARN("controller", "%s: inotify queue overflow: events lost",
				        d->dir);
			if (!ev->len || em_manifest_format_of(ev->name) == EM_MANIFEST_NONE)
				continue;
			if (ev->mask & (IN_DELETE | IN_MOVED_FROM)) {
				struct mfile *f = file_find(d, ev->name);
				if (f)
					file_gone(d, f);
			} else if (dfd != -1 && (ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO))) {
				file_load(d, dfd, ev->name);
			}
		}
	}
	if (dfd != -1)
		close(dfd);
	state_save(d);
	totals(d);
}

void em_mdir_stats(const struct em_mdir *d, struct em_mdir_stats *out)
{
	*out = d->stats;
}

void em_mdir_close(struct em_mdir *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->n_files; i++) {
		keys_free(d->files[i].keys, d->files[i].n_keys);
		free(d->files[i].name);
	}
	free(d->files);
	close(d->fd);
	free(d);
}

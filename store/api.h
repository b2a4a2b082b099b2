/* The local API: one JSON request per line on a Unix socket, one JSON reply
 * per line. Documented in README.md ("API socket").
 *
 *   {"op":"list","kind":"services","namespace":"default"}  namespace absent: all
 *   {"op":"get","kind":"service","namespace":"default","name":"web"}
 *   {"op":"apply","items":[{...k8s object...}, ...]}      or "object":{...}
 *   {"op":"delete","kind":"service","namespace":"default","name":"web"}
 *   {"op":"stats"}
 *
 * Replies: {"ok":true,...} or {"ok":false,"error":"<one line>"}. */
#ifndef EM_STORE_API_H
#define EM_STORE_API_H

#include <stddef.h>
#include <stdint.h>

struct em_store;

/* Requests larger than this are refused without being read further. */
#define EM_API_MAX_REQUEST (16u << 20)

struct em_buf {
	char *data;
	size_t len, cap;
};

/* Appends <n> bytes; returns 0 or -ENOMEM. */
int em_buf_append(struct em_buf *b, const void *p, size_t n);
void em_buf_free(struct em_buf *b);

/* Daemon facts the stats reply reports besides the store's own. */
struct em_api_info {
	const char *config_path;
	const char *node_name;
	uint64_t reloads, reload_failures;
};

/* Handles one request of <len> bytes (no newline) and appends exactly one
 * reply line, newline included, to <out>. Any input, however malformed, gets
 * an error reply. Returns 0, or -ENOMEM when even the reply can't be built. */
int em_api_handle(struct em_store *st, const struct em_api_info *info, const char *req, size_t len,
                  struct em_buf *out);

#endif

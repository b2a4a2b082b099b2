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
/* Most data-plane counters one stats reply carries. */
#define EM_API_MAX_COUNTERS 128u

struct em_buf {
	char *data;
	size_t len, cap;
};

/* Appends <n> bytes; returns 0 or -ENOMEM. */
int em_buf_append(struct em_buf *b, const void *p, size_t n);
void em_buf_free(struct em_buf *b);

/* One counter of another part of the daemon (the data plane), reported by
 * stats as stats.<group>.<name>. Names are static strings. */
struct em_api_counter {
	const char *group;
	const char *name;
	uint64_t value;
};

/* Fills up to <cap> counters and returns how many there are. */
typedef size_t (*em_api_counters_fn)(void *ctx, struct em_api_counter *out, size_t cap);

/* Daemon facts the stats reply reports besides the store's own. */
struct em_api_info {
	const char *config_path;
	const char *node_name;
	uint64_t reloads, reload_failures;
	em_api_counters_fn counters; /* NULL: none */
	void *counters_ctx;
};

/* Handles one request of <len> bytes (no newline) and appends exactly one
 * reply line, newline included, to <out>. Any input, however malformed, gets
 * an error reply. Returns 0, or -ENOMEM when even the reply can't be built. */
int em_api_handle(struct em_store *st, const struct em_api_info *info, const char *req, size_t len,
                  struct em_buf *out);

#endif

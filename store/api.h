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

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct em_store;
struct cJSON;

/* Requests larger than this are refused without being read further: the
 * client gets an error reply and is closed. */
#define EM_API_MAX_REQUEST (16u << 20)
/* Reply bytes a client may leave unread: past this, its further requests are
 * neither handled nor read until it reads (the socket's own buffers hold
 * them), so a client that only writes costs at most this plus one reply. */
#define EM_API_MAX_BACKLOG (1u << 20)
/* Most data-plane counters one stats reply carries. */
#define EM_API_MAX_COUNTERS 128u

struct em_buf {
	char *data;
	size_t len, cap;
};

/* Room for <n> more bytes (and a terminator) at the end of <b>: returns
 * where they go (b->data + b->len; the caller advances b->len), or NULL
 * when out of memory. */
char *em_buf_reserve(struct em_buf *b, size_t n);
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
	/* Adds the control stream's state to a reply (store/control.h
	 * em_ctl_status): to "list nodes" and to stats. NULL: none. */
	int (*control)(void *ctx, struct cJSON *reply);
	void *control_ctx;
	/* Adds other parts' structured figures to the stats reply (the data
	 * plane's per-pair relay counters, say). NULL: none. */
	int (*stats)(void *ctx, struct cJSON *reply);
	void *stats_ctx;
	/* Op "cert-revoke" {"node"} (the cloud's control side,
	 * em_ctl_revoke). NULL: refused, only the cloud revokes. */
	int (*revoke)(void *ctx, const char *node, char *err, size_t errlen);
	void *revoke_ctx;
};

/* The "stats" object of a stats reply (the caller deletes it), without the
 * per-Service "qps" array unless <qps>; NULL when out of memory. Runs on
 * the sync thread, as em_api_handle does. */
struct cJSON *em_api_stats(struct em_store *st, const struct em_api_info *info, bool qps);

/* Handles one request of <len> bytes (no newline) and appends exactly one
 * reply line, newline included, to <out>. Any input, however malformed, gets
 * an error reply. Returns 0, or -ENOMEM when even the reply can't be built. */
int em_api_handle(struct em_store *st, const struct em_api_info *info, const char *req, size_t len,
                  struct em_buf *out);

/* Serves one client's buffered input: handles the complete request lines at
 * the start of <in> (removing them) and appends their replies to <out>, whose
 * first <*out_off> bytes were already sent (they are dropped here, so <out>
 * holds only what is still to send). Stops while the unsent replies reach
 * EM_API_MAX_BACKLOG; the requests after that wait in <in> for a later call,
 * made once the client has read. Returns 0, or 1 when the connection is to
 * be closed once <out> is sent: a line longer than EM_API_MAX_REQUEST (it
 * gets an error reply and <in> is emptied), or memory ran out. */
int em_api_serve(struct em_store *st, const struct em_api_info *info, struct em_buf *in,
                 struct em_buf *out, size_t *out_off);

/* Whether more bytes should be read from a client in this state: false while
 * its unsent replies are at EM_API_MAX_BACKLOG or its buffered input exceeds
 * EM_API_MAX_REQUEST. It does not look for complete lines (that would scan a
 * large partial request on every read): a caller that appends input serves
 * it (em_api_serve) when the new bytes hold a newline, so lines wait in <in>
 * only while the client is backlogged, and <in> stays bounded. */
bool em_api_may_read(const struct em_buf *in, const struct em_buf *out, size_t out_off);

/* Whether em_api_serve would handle a request now: <in> holds a complete
 * line and the unsent replies are under EM_API_MAX_BACKLOG. */
bool em_api_has_work(const struct em_buf *in, const struct em_buf *out, size_t out_off);

#endif

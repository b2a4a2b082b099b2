/* The admin listener's pieces (admin.listen): Prometheus metrics rendered
 * from the stats reply, and the little HTTP/1.1 it speaks. The sync thread
 * (store/sync.c) owns the socket and its clients; everything here is pure.
 *
 *   GET /metrics   text exposition format 0.0.4 of the stats reply
 *   GET /healthz   200 "ok": the process answers
 *   GET /readyz    200 "ready", or 503 with the reason: the table is not
 *                  published yet, or an edge with cloud.address never synced
 *
 * One request per connection (the answer carries Connection: close). */
#ifndef EM_STORE_ADMIN_H
#define EM_STORE_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

#include "store/api.h"

struct cJSON;

#define EM_ADMIN_MAX_CLIENTS 16    /* more wait in the listen backlog */
#define EM_ADMIN_MAX_HEAD    8192u /* a longer request head gets 431 */
#define EM_ADMIN_IDLE_MS     5000u /* a client silent this long is closed */

/* Appends the Prometheus text of <stats> (the "stats" object of an API stats
 * reply, store/api.h) to <out>: every counter as edgemesh_<group>_<name>_total,
 * the levels as gauges, the per-Service QPS buckets, the cloud's relay pairs
 * and edges, an edge's cloud link, and the fast path ("fastpath": whether it
 * is on, its maps, and per cluster IP and port its connects, labelled
 * namespace, service, cluster_ip and port; the per port lines are written
 * like em_admin_metrics_services', its label text made once per call).
 * Members it does not know are left out. Returns 0 or -ENOMEM. */
int em_admin_metrics(const struct cJSON *stats, struct em_buf *out);

/* Appends the per-Service QPS families straight from the registry
 * (store/qps.h; the sync thread's, as is the caller): what
 * em_admin_metrics renders from a stats object's "qps" array, without
 * building one. Returns 0 or -ENOMEM. */
int em_admin_metrics_qps(struct em_buf *out);

/* Appends the per Service port families (store/svcstat.h) summed over the
 * workers' sets: every TCP port of the table's Services, those without
 * traffic with zero counts and an empty histogram, labelled namespace,
 * service and port (a response class shows once it occurred). Reserves
 * the room of the whole section in <out> at once: a buffer kept from an
 * earlier call is reused without growing. The caller is the registry's
 * thread (the sync thread). Returns 0 or -ENOMEM. */
int em_admin_metrics_services(struct em_buf *out);

enum em_admin_parse {
	EM_ADMIN_INCOMPLETE, /* no end of head yet, and under EM_ADMIN_MAX_HEAD */
	EM_ADMIN_OK,         /* a GET or HEAD: <path> holds the path, no query */
	EM_ADMIN_BAD,        /* not an HTTP/1.x request line: 400 */
	EM_ADMIN_METHOD,     /* another method: 405 */
	EM_ADMIN_TOO_LONG,   /* no end of head within EM_ADMIN_MAX_HEAD: 431 */
};

/* Looks at the <len> bytes a client sent so far. On EM_ADMIN_OK, <path>
 * (<cap> bytes) holds the request path without its query, and <*head> says
 * whether the method was HEAD. A path longer than <cap> is EM_ADMIN_BAD. */
enum em_admin_parse em_admin_parse(const char *buf, size_t len, char *path, size_t cap,
                                   bool *head);

/* Appends a whole response: status line, Content-Type <ctype>, the length
 * of <body>, Connection: close, and the body unless <head_only>. Returns 0
 * or -ENOMEM. */
int em_admin_response(struct em_buf *out, int status, const char *ctype, const char *body,
                      size_t blen, bool head_only);

#endif

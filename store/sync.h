/* The metamanager sync thread: owns the store (sqlite + snapshots), serves
 * the API socket, and applies config reloads. */
#ifndef EM_STORE_SYNC_H
#define EM_STORE_SYNC_H

#include "store/api.h"
#include "store/config.h"

struct em_sync;

/* Publishes <cfg> as the live config (ownership passes), opens the store
 * under cfg->data_dir (loading what is on disk and publishing the first
 * snapshot before returning), binds cfg->api_socket (mode 0600; a stale
 * socket file of a dead process is replaced, a live one is an error, and a
 * path that is not a socket is -EEXIST and left alone) and starts the thread.
 * The store refuses endpoint addresses inside cfg's capture.service_cidrs
 * while capture is enabled (em_store_set_service_cidrs), from start and after
 * every applied reload. Returns 0 or -errno (logged). <cfg> stays the live
 * config either way, until em_config_publish(NULL) at exit frees it. */
int em_sync_start(struct em_config *cfg, struct em_sync **out);

/* Asks the thread to re-read the config file. Any thread may call it. A valid
 * file is published; an invalid one, or one changing a key that needs a
 * restart, is refused with a log line and the running config stays. */
void em_sync_reload(struct em_sync *s);

/* Number of reloads applied / refused so far. */
void em_sync_reload_counts(struct em_sync *s, uint64_t *applied, uint64_t *refused);

/* Sets the source of the data-plane counters that stats reports (NULL: none).
 * Returns once no call of the previous source is running, so the caller may
 * free what the previous <ctx> points to. Any thread may call it. */
void em_sync_set_counters(struct em_sync *s, em_api_counters_fn fn, void *ctx);

/* Sets what adds structured figures of other parts to the stats reply
 * (em_api_info.stats), or NULL; same rules as em_sync_set_counters. */
struct cJSON;
void em_sync_set_stats(struct em_sync *s, int (*fn)(void *ctx, struct cJSON *reply), void *ctx);

/* Sets what is told of every snapshot published from now on (NULL: none),
 * and of the current one again after every applied reload, called on the
 * sync thread with the snapshot, valid for the call. Returns
 * once no call of the previous receiver is running. Any thread may call it;
 * the receiver gets only later snapshots, so a caller that needs the
 * current one reads it itself (em_table_current) after this call. */
struct em_table;
void em_sync_set_published(struct em_sync *s, void (*fn)(void *ctx, const struct em_table *t),
                           void *ctx);

/* The control stream's side of this node (store/control.h): the cloud's,
 * or an edge's with cloud.address set; NULL otherwise. Lives until
 * em_sync_stop; only its thread-safe calls (em_ctl_accept,
 * em_ctl_set_dialer) may be made from other threads. */
struct em_ctl *em_sync_control(struct em_sync *s);

/* Stops the thread, closes the socket (and removes its file) and the store. */
void em_sync_stop(struct em_sync *s);

#endif

/* The data plane: one io_uring worker thread per configured core. */
#ifndef EM_ENGINE_ENGINE_H
#define EM_ENGINE_ENGINE_H

#include <stdbool.h>
#include <time.h>

#include "store/api.h"
#include "store/config.h"

struct em_engine;

/* Opens the listeners of <cfg> (capture port, explicit listeners, tunnel
 * listener, the Router's) on every worker with SO_REUSEPORT and starts
 * cfg->workers worker threads; with router.tls, the Router's listener is
 * opened once and served by the TLS front thread instead
 * (engine/router_tls.h), which loads the certificate and key (a failure
 * fails the start). Each worker registers as an RCU reader and reads the live service
 * table and config (em_table_current, em_config_current): a config must be
 * published before this call and stay published (reloads replace it) until
 * em_engine_stop returns; -EINVAL without one. <cfg> is borrowed for the
 * duration of the call. Returns 0 or -errno (logged). */
int em_engine_start(const struct em_config *cfg, struct em_engine **out);

/* Data-plane counters for the stats reply (an em_api_counters_fn; <eng> is a
 * struct em_engine): connection, request and tunnel counts summed over the
 * workers, as each published them at its last tick (at most 50 ms ago),
 * then with router.tls the TLS front's (group "router", current). */
size_t em_engine_counters(void *eng, struct em_api_counter *out, size_t cap);

/* Adds "relay", the cloud's counters of streams relayed between edges (per
 * pair: streams, refused, bytes each way), to the stats object <stats>
 * (a struct cJSON; <eng> is a struct em_engine). Returns 0 or -ENOMEM. */
int em_engine_relay_stats(void *eng, struct cJSON *stats);

/* Adds "relay" (em_engine_relay_stats) and "peers", this node's tunnels by
 * peer node summed over the workers as each published them at its last
 * tick: {"peer", "up" (a tunnel is up), "tunnels_up", "tls" (every tunnel
 * up runs TLS), "bytes_received", "bytes_sent" (tunnel frames, those of
 * closed tunnels included), "streams" (open)}, by name. Returns 0 or
 * -ENOMEM. */
int em_engine_stats(void *eng, struct cJSON *stats);

/* Adds "peers" alone (em_engine_stats): an edge's. */
int em_engine_peer_stats(void *eng, struct cJSON *stats);

/* Adds "io_backend" ("io_uring" or "epoll", the backend the workers run)
 * to the stats object <stats>, "fastpath" (em_fastpath_stats) when one is
 * set (em_engine_set_fastpath), then what em_engine_stats adds on a cloud
 * and em_engine_peer_stats on an edge. Returns 0 or -ENOMEM. */
int em_engine_node_stats(void *eng, struct cJSON *stats);

/* The cloud role's receiver of control streams (tunnel/PROTOCOL.md 9): an
 * edge opened one, and <fd> is one end of a socketpair whose other end is
 * bridged to it, so bytes written to <fd> reach the edge and the edge's
 * bytes are read from it; closing <fd> ends the stream, and the stream or
 * its tunnel ending shows as EOF on <fd>. <node> is the edge's node name
 * as its tunnel handshake authenticated it, <src> the address its tunnel
 * came from. Runs on a worker thread and must not block. Takes <fd>
 * whatever it returns. */
typedef void (*em_engine_control_fn)(void *ctx, int fd, const char *node,
                                     const struct em_addr *src, bool enroll_only);

/* Sets the receiver of control streams (NULL: streams are refused with
 * REFUSED "no controller here"). Returns once no call of the previous one
 * runs, so the caller may free what its <ctx> points to. Any thread. */
void em_engine_set_control(struct em_engine *e, em_engine_control_fn fn, void *ctx);

/* Makes the workers take the kernel's pick for captured connections that
 * the fast path handed over (em_fastpath_handoff); NULL stops that. <fp>
 * must outlive em_engine_stop or a later call with NULL. Any thread. */
struct em_fastpath;
void em_engine_set_fastpath(struct em_engine *e, struct em_fastpath *fp);

/* An edge's control stream: worker 0 opens a stream of protocol CONTROL to
 * the cloud at <cloud> over its tunnel there (dialled at that address, with
 * the redial backoff of peer tunnels, whatever node name the cloud has) and
 * bridges it to <fd>, one end of a socketpair the caller made. The engine
 * takes <fd>: when the tunnel cannot be had, or dies, or the cloud ends the
 * stream, the caller's end sees EOF; closing the caller's end ends the
 * stream. A request not yet taken by the worker is replaced by a newer one
 * (its fd closed). Any thread. Returns 0, or -errno with <fd> closed. */
int em_engine_control_open(struct em_engine *e, int fd, const struct em_addr *cloud);

/* ---- tunnel TLS (tunnel.encryption "tls") ---- */
struct em_tls_pipe_ctx;
struct em_tls_pipe;
struct em_ctl_revocation;

/* Replaces the context new tunnels' TLS pipes are made from (takes <ctx>;
 * the old one is freed, pipes made from it keep working) and sets the
 * engine's revocation check on it. Within a tick, each worker closes its
 * unencrypted enrollment tunnel (the edge then dials the cloud again with
 * TLS), and tunnels made with an older context drain (GOAWAY: new streams
 * take a new tunnel, those under way finish) once this node's certificate
 * they were made with is past half its lifetime. Any thread. */
void em_engine_tls_set(struct em_engine *e, struct em_tls_pipe_ctx *ctx);

/* Whether new tunnels can run TLS (false on an edge still enrolling, and
 * without tunnel TLS). Any thread. */
bool em_engine_tls_ready(struct em_engine *e);

/* Sets the certificate revocations in force (<n> entries, copied): a
 * certificate of a listed node whose notBefore is within EM_PKI_SKEW_S of
 * the revocation time or earlier (issued then or before) fails new
 * handshakes, and the workers close live tunnels of one within a tick.
 * Any thread. */
void em_engine_tls_revoke(struct em_engine *e, const struct em_ctl_revocation *list, size_t n);

/* Internal to engine/ (workers): a new pipe from the current context (NULL
 * when there is none or out of memory); the revocation check; this node's
 * certificate's half-life and the context generation. */
struct em_tls_pipe *em_engine_tls_pipe(struct em_engine *e, bool dialer, const char *peer);
const char *em_engine_tls_check(void *arg, const char *node, time_t not_before);
void em_engine_tls_lifetime(struct em_engine *e, int64_t *half, uint32_t *gen);

/* Stops accepting, lets live connections finish for up to <drain_ms>, closes
 * the rest, joins the workers (and the TLS front, which may take one second
 * more to hand clients what the workers last sent) and frees everything. */
void em_engine_stop(struct em_engine *eng, uint32_t drain_ms);

#endif

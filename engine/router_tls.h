/* Internal to engine/: TLS on the Router's listener (router.tls).
 *
 * With router.tls set, the Router's listening socket belongs to one thread
 * of its own, the TLS front, instead of the workers. It accepts, runs each
 * handshake without blocking (TLS 1.2 or 1.3, ALPN http/1.1), then makes a
 * socketpair per connection and hands one end to a worker, in turn, as a
 * client of the Router's listener (em_worker_post_conn, EM_LISTENER_ROUTER),
 * so requests, pages and timeouts are those of plain HTTP. It keeps the
 * other end and moves the bytes: TLS records in, plaintext out to the
 * worker, and back, through 16 KiB per direction per connection; a side
 * whose buffer is full is not read (backpressure). A handshake must finish
 * within router.tls.handshake_ms, and a connection whose worker closed its
 * end has as long again to take the rest; past router.tls.max_connections
 * (handshaking or open) a new connection is closed at once. A close_notify
 * or FIN from the client becomes a FIN toward the worker; the worker's FIN
 * becomes a close_notify and a FIN toward the client. */
#ifndef EM_ENGINE_ROUTER_TLS_H
#define EM_ENGINE_ROUTER_TLS_H

#include "engine/worker.h"
#include "store/api.h"

struct em_router_tls;

/* Loads router.tls's certificate chain and key from <cfg> (borrowed for the
 * call) and starts the front on <lfd>, a listening socket of
 * cfg->router.listen, which it takes (closed on failure too). Connections
 * go to the workers of <e>, which must be running. Returns 0 with the
 * front in <*out>, or -errno (logged). */
int em_router_tls_start(struct em_engine *e, int lfd, const struct em_config *cfg,
                        struct em_router_tls **out);

/* Any thread: the front stops accepting and closes the connections still in
 * their handshake; the others go on until they end (the workers close their
 * ends as they stop) or <drain_ms> plus one second have passed. Returns at
 * once; idempotent. */
void em_router_tls_quit(struct em_router_tls *t, uint32_t drain_ms);

/* Quits (with no drain unless em_router_tls_quit came first), waits for the
 * front to end, and frees it with every connection it still held. NULL is
 * a no-op. */
void em_router_tls_free(struct em_router_tls *t);

/* The front's counters for `meshctl stats` (group "router"): handshakes
 * done, failed, timed out, connections refused past the cap, and
 * connections held now. Fills at most <cap>; returns how many it filled. */
size_t em_router_tls_counters(struct em_router_tls *t, struct em_api_counter *out, size_t cap);

#endif

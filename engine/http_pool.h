/* Internal to engine/: idle upstream connections kept between HTTP
 * exchanges.
 *
 * Each endpoint (its balancer entry, struct em_lb_ep) keeps up to
 * EM_HTTP_POOL_MAX idle upstreams, each for at most EM_HTTP_POOL_IDLE_MS
 * (or the idle timeout when shorter). A pooled socket is in the pool mode:
 * whatever its backend sends, or its EOF, closes it; a stopping worker
 * closes it at once. */
#ifndef EM_ENGINE_HTTP_POOL_H
#define EM_ENGINE_HTTP_POOL_H

#include "engine/sock.h"

#define EM_HTTP_POOL_MAX     64u    /* idle upstream connections per endpoint */
#define EM_HTTP_POOL_IDLE_MS 30000u /* ... kept at most this long */

/* Upstream <u> (open, no peer, nothing queued or in flight but its recv)
 * finished an exchange cleanly: it goes to its endpoint's pool, or is
 * closed when the pool is full, the worker is stopping or it has no
 * endpoint entry. Either way the caller no longer owns it. */
void em_http_pool_put(struct em_worker *w, struct em_sock *u);

/* An idle upstream of endpoint <addr> taken out of the pool, now in mode
 * <ops> and counted active on its endpoint again; NULL when none waits. */
struct em_sock *em_http_pool_take(struct em_worker *w, const struct em_addr *addr,
                                  const struct em_sock_ops *ops);

/* The same for the entry <e> itself (one not in the balancer, such as a
 * Router destination's). */
struct em_sock *em_http_pool_take_ep(struct em_worker *w, struct em_lb_ep *e,
                                     const struct em_sock_ops *ops);

#endif

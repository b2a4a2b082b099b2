/* Internal to engine/: HTTP/1.x mode of a client connection.
 *
 * A client in HTTP mode is served one request at a time. Each request is
 * routed and balanced on its own and sent on an upstream connection taken
 * from the per-worker pool of its endpoint (or a new one); heads and bodies
 * are forwarded from the ring buffers they arrived in, with boundaries from
 * proto/http1.h. When the response ends the upstream goes back to the pool
 * (when both sides allow keep-alive) and the next request starts. Interim
 * responses (1xx) are forwarded as they come, several in one read included.
 * Upgrade (101) and CONNECT (2xx) turn both sockets into the L4 relay
 * (engine/relay.h). The mode's per-worker state lives in w->http, made on
 * the first request and freed at worker exit. */
#ifndef EM_ENGINE_HTTP_H
#define EM_ENGINE_HTTP_H

#include "engine/sock.h"

/* When the upstream answers before the request body has been read (a 401 or
 * 413 to an upload), the rest of that body is never parsed as a request. Up
 * to EM_HTTP_DISCARD_MAX bytes of it (a Content-Length remainder known to
 * be larger is not tried, nor the body of a request that expected a 100
 * it did not get) are read and dropped after the response so the
 * connection is kept; beyond that, and after any error page the proxy
 * writes itself, the client is closed gracefully: once the response is
 * sent its write side is shut, and what it still sends is read and dropped
 * for at most EM_HTTP_LINGER_MS or EM_HTTP_LINGER_MAX bytes before the
 * close, so it reads the response instead of a reset. */
#define EM_HTTP_DISCARD_MAX (256u * 1024u)
#define EM_HTTP_LINGER_MS   5000u
#define EM_HTTP_LINGER_MAX  (8u * 1024u * 1024u)

/* Client <c> (accepted, open, on no timer) sent its first bytes (ring
 * buffer <bid>, <len> bytes) and they start an HTTP/1.x request: <c> enters
 * the HTTP client mode. Takes ownership of the buffer. May close <c> before
 * returning (out of memory, a malformed head answered with its error
 * page). */
void em_http_start(struct em_worker *w, struct em_sock *c, uint16_t bid, uint32_t len);

#endif

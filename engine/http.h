/* Internal to engine/: HTTP/1.x mode of a client connection.
 *
 * A client in HTTP mode is served one request at a time. Each request is
 * routed and balanced on its own and sent on an upstream connection taken
 * from the per-worker pool of its endpoint (or a new one); heads and bodies
 * are forwarded from the ring buffers they arrived in, with boundaries from
 * proto/http1.h. When the response ends the upstream goes back to the pool
 * (when both sides allow keep-alive) and the next request starts. Interim
 * responses (1xx) are forwarded as they come, several in one read included.
 * Upgrade (101) and CONNECT (2xx) turn both sockets into raw forwarding. */
#ifndef EM_ENGINE_HTTP_H
#define EM_ENGINE_HTTP_H

#include "engine/worker.h"

#define EM_HTTP_POOL_MAX     64u    /* idle upstream connections per endpoint */
#define EM_HTTP_POOL_IDLE_MS 30000u /* ... kept at most this long */

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

/* Client <c> sent its first bytes (ring buffer <bid>, <len> bytes) and they
 * start an HTTP/1.x request. Takes ownership of the buffer. */
void em_http_start(struct em_worker *w, struct em_sock *c, uint16_t bid, uint32_t len);

/* Bytes for an HTTP client, an HTTP upstream, or a pooled upstream. Takes
 * ownership of the buffer. May close sockets. */
void em_http_recv(struct em_worker *w, struct em_sock *s, uint16_t bid, uint32_t len);

/* <s> (HTTP client, HTTP upstream or pooled upstream) read EOF. */
void em_http_eof(struct em_worker *w, struct em_sock *s);

/* The connect of <u> for client <c> failed for good: answers <status>. */
void em_http_connect_failed(struct em_worker *w, struct em_sock *c, struct em_sock *u, int status);

/* Client <c> (EM_SF_CLOSE_AFTER) has sent its whole queue. Returns true when
 * it is an HTTP client that closes gracefully (see EM_HTTP_LINGER_MS): its
 * write side is then shut and it stays open until the client closes, the
 * time or byte bound is reached, or an error. False: the caller closes it
 * now. */
bool em_http_linger(struct em_worker *w, struct em_sock *c);

/* The request-head timer of client <c> fired: 408. */
void em_http_expire(struct em_worker *w, struct em_sock *c);

/* True when client <c> is an HTTP connection between requests (nothing of
 * the next request received): safe to close when stopping. */
bool em_http_idle(const struct em_sock *c);

/* Releases <s>'s HTTP state (the client owns it; an upstream only refers). */
void em_http_free(struct em_worker *w, struct em_sock *s);

/* Upstream <u> (EM_SF_REPLAY: reused from the pool, no response byte yet)
 * failed: its backend had closed the idle connection as the request went
 * out. Moves the whole request (entries kept by the sends, then the queue)
 * to a new connection to an endpoint picked again, closes <u> and returns
 * true; false when no new upstream could be had (the caller fails as
 * before). The new connection is never reused, so a request is replayed
 * at most once, and its connect keeps the client's refused-retry budget. */
bool em_http_replay(struct em_worker *w, struct em_sock *u);

/* Takes pooled upstream <u> out of its endpoint's pool. */
void em_http_unpool(struct em_worker *w, struct em_sock *u);

/* At worker exit: frees the per-worker free list and scratch. */
void em_http_worker_free(struct em_worker *w);

#endif

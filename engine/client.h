/* Internal to engine/: accepted client connections.
 *
 * A client accepted on the capture port or an explicit listener learns its
 * original destination (capture), then waits for its first bytes (the sniff
 * mode, at most timeouts.sniff_ms): HTTP/1.x goes to the HTTP mode
 * (engine/http.h), anything else, or silence, to the L4 relay
 * (engine/relay.h). */
#ifndef EM_ENGINE_CLIENT_H
#define EM_ENGINE_CLIENT_H

#include "engine/sock.h"

/* The accept callback of client listeners (em_listener.accept): takes
 * <fd>, which is closed when no socket can be had for it. */
void em_client_accept(struct em_worker *w, struct em_listener *l, int fd);

/* Client made of <fd>, the local end of a socketpair whose other end
 * serves a tunnel stream a peer opened to <sp>, an HTTP port of a service
 * with a QPS limit (em_worker.serve_http): it is sniffed as if accepted,
 * and routed to <sp> and its local endpoints only (EM_LISTENER_SERVED), so
 * each of its requests meets the limit. Takes <fd> (closed when no socket
 * can be had for it, which the stream sees as EOF). */
void em_client_serve(struct em_worker *w, int fd, const struct em_svc_port *sp);

/* Client made of <fd>, a connection accepted elsewhere and handed to <w>
 * (em_worker.serve_conn): the local end of a socketpair whose other end
 * carries the client's bytes (the Router's TLS front, engine/router_tls.h).
 * It is sniffed and served exactly as a client accepted on the listener of
 * index <listener> (EM_LISTENER_ROUTER: the Router's requests, pages and
 * timeouts). Takes <fd> (closed when no socket can be had for it). */
void em_client_take(struct em_worker *w, int fd, uint16_t listener);

#endif

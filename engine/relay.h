/* Internal to engine/: the L4 relay mode.
 *
 * Both sockets of a plain TCP connection (the accepted client and its
 * upstream), and both sockets of an HTTP connection after an upgrade (101)
 * or a CONNECT, relay bytes as they come: each buffer received on one side
 * is queued on the other (engine/sock.h), a FIN is passed on once the other
 * side's queue is sent, and the pair closes when both directions ended. */
#ifndef EM_ENGINE_RELAY_H
#define EM_ENGINE_RELAY_H

#include "engine/sock.h"

/* The relay mode's operations, for sockets switching to it. */
extern const struct em_sock_ops em_relay_ops;

/* Client <c> (accepted, open) is relayed to an endpoint of <sp>: picks one
 * and connects an upstream to it (over a tunnel when it lives on another
 * node). A local endpoint first takes the connection against the service's
 * QPS limit (em_route_admit). <bid>/<len> are the client's first bytes, or
 * EM_NO_BUF; the buffer is taken either way. On failure or over the limit
 * <c> is reset before this returns. */
void em_relay_start(struct em_worker *w, struct em_sock *c, const struct em_svc_port *sp,
                    uint32_t bid, uint32_t len);

#endif

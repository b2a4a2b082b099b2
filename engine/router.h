/* Internal to engine/: the Router of the cloud role (flow F4).
 *
 * A caller sends HTTP/1.1 to router.listen with a request-target of
 * /<node>/<namespace>/<path>. The Rule of that namespace whose rest source
 * path is the longest prefix of <path> (store/table.h em_table_rule_match)
 * names where it goes: the request is sent over node <node>'s tunnel to the
 * cloud, with the rule's target path in place of the matched prefix, to
 * 127.0.0.1:<service_port> on that edge (KubeEdge's servicebus) or to an
 * endpoint of a Service there. The edge's response comes back as it is.
 * Each call counts as a success or a failure on its Rule (em_rule_report). */
#ifndef EM_ENGINE_ROUTER_H
#define EM_ENGINE_ROUTER_H

#include "engine/http_page.h"
#include "engine/sock.h"
#include "proto/http1.h"

/* Routes the request whose head <hd> was parsed from base[0, hl); <fwd>
 * bytes from <base> (head and the body bytes that came with it) are to go
 * to the edge. On success returns the upstream, a socket in mode <ops>
 * (an open socketpair end bridged to a stream toward the edge, possibly by
 * another worker; one kept idle from an earlier call to the same node and
 * target when there is one, then marked EM_SF_REPLAY), with the request as the edge must get it in <*out>
 * (malloc'd, <*out_len> bytes, for the caller to queue on it) and the
 * Rule's key in <*rule_key> for the report of the call's outcome. On
 * failure returns NULL with the page to answer in <*page>: 404 (no such
 * rule, or not /<node>/<namespace>/...), 503 (the edge is not connected),
 * 500-class on local trouble; a matched rule's failure is reported here. */
struct em_sock *em_router_route(struct em_worker *w, const struct em_http1_head *hd,
                                const char *base, uint32_t hl, uint32_t fwd,
                                const struct em_sock_ops *ops, char **out, uint32_t *out_len,
                                uint64_t *rule_key, enum em_http_page *page);

/* A new stream toward the destination of upstream <u> (one em_router_route
 * returned, reused from its pool, whose request must go out again), in mode
 * <ops>; NULL when the edge is gone or <u> has no destination entry. */
struct em_sock *em_router_reopen(struct em_worker *w, struct em_sock *u,
                                 const struct em_sock_ops *ops);

/* The outcome of a routed call (<rule_key> from em_router_route): <ok>, or
 * a failure with its one-line reason. */
void em_router_report(uint64_t rule_key, bool ok, const char *reason);

#endif

/* Internal to engine/: where a client's connection or request goes.
 *
 * One place for the routing decisions every mode makes: the service port a
 * client is for, the endpoint the balancer picks, and how it is reached
 * (dialled directly, or over a tunnel stream to the endpoint's node). */
#ifndef EM_ENGINE_ROUTE_H
#define EM_ENGINE_ROUTE_H

#include "engine/sock.h"
#include "proto/clock.h"

/* The service port client <c> is for, in the current table: by original
 * destination (captured), by its listener's service in the live config, or
 * by key (EM_LISTENER_SERVED). NULL when there is none. The result points into the table snapshot,
 * valid until the worker's next quiescent point. */
const struct em_svc_port *em_route_lookup(const struct em_sock *c);

/* An endpoint of <sp> for client <c>, from the worker's balancer, avoiding
 * <avoid> (may be NULL) unless it is the only ready one. ClientIP affinity
 * asks the kernel for the client's address. A client of EM_LISTENER_SERVED
 * gets local endpoints only (its stream came over a tunnel: it never goes
 * back over one). NULL when <sp> has no ready endpoint (for it). */
const struct em_endpoint *em_route_pick(struct em_worker *w, const struct em_sock *c,
                                        const struct em_svc_port *sp, const struct em_addr *avoid);

/* True when <ep> is reached through a tunnel to its node: it is on another
 * node and tunnels are configured (a cluster key). Without a key the mesh
 * runs without tunnels and every endpoint is dialed directly, as on a flat
 * pod network. */
bool em_route_via_tunnel(const struct em_endpoint *ep);

/* Connects <u> (state EM_SK_NEW, no fd) to <ep> directly and counts it on
 * <ep>'s balancer entry (u->ep); a failure goes to u->ops->connect_failed.
 * Returns 0, or -errno with <u> unchanged. */
int em_route_connect(struct em_worker *w, struct em_sock *u, const struct em_endpoint *ep);

/* Connects <u> again, to another endpoint of client <c>'s service than the
 * one that refused it, once per client (c->retries): the connect of <u>
 * failed with <res>. Returns true when a new connect is under way; false
 * when there is none to try (a timeout, a second failure, no other
 * endpoint): <u> is then as it was, for the caller to fail. Counts the
 * failure (upstream_connect_failures) either way. */
bool em_route_retry(struct em_worker *w, struct em_sock *c, struct em_sock *u, int res);

/* The QPS limit of <sp>'s service, for one request (HTTP port) or one
 * connection (other ports) that a local endpoint serves: true when it may
 * go on (always, without a limit: one test of a pointer). A refusal is
 * counted (qps_rejected) and <*retry_ns> set to the time until the next
 * token. Lock-free; the bucket is shared by the node's workers. */
static inline bool em_route_admit(struct em_worker *w, const struct em_svc_port *sp,
                                  uint64_t *retry_ns)
{
	if (EM_LIKELY(!sp->qps))
		return true;
	if (em_qps_take(sp->qps, em_now_ns(), retry_ns))
		return true;
	w->cnt[EM_C_QPS_REJECTED]++;
	em_svcstat_add(&em_worker_svc(w, sp->mslot)->qps_rejected, 1);
	return false;
}

#endif

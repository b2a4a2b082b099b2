/* Internal to engine/: the worker's tunnels to peer nodes (edgehub).
 *
 * Each worker keeps one dialled tunnel per peer node it sends traffic to,
 * and serves the tunnels its SO_REUSEPORT tunnel listener accepted. A tunnel
 * is a TCP socket driven by a sans-I/O session (tunnel/session.h): received
 * bytes go to em_tunnel_session_input(), its output is sent one slice at a
 * time, its timers run from the worker's tick.
 *
 * A stream is bridged to one local socket (struct em_sock in the bridge
 * mode, its stream in s->ctx):
 *   - a raw TCP client whose endpoint lives on another node (dialling side),
 *   - one end of a socketpair whose other end is an HTTP upstream, so that a
 *     remote request exchange is parsed like any upstream connection,
 *   - the connection to the local endpoint (accepting side).
 * Bytes from the socket are written into the session (what the window does
 * not take waits in the socket's ring buffers, and its recv is paused); bytes
 * from the session are copied into pooled chunks queued on the socket, and
 * their window is returned once the socket has sent them. A stream whose
 * tunnel dies fails at once: a raw client is reset, an HTTP exchange sees its
 * upstream close (502). */
#ifndef EM_ENGINE_TUNNEL_H
#define EM_ENGINE_TUNNEL_H

#include "engine/sock.h"


/* Makes and frees e->hub, the tunnel state the workers share (at engine
 * start, and after the workers stopped: what is still queued for a worker
 * is closed). Init returns 0 or -ENOMEM. */
int em_tun_hub_init(struct em_engine *e);
void em_tun_hub_free(struct em_engine *e);

/* Allocates <w>'s tunnel state. Returns 0 or -ENOMEM. */
int em_tun_worker_init(struct em_worker *w);

/* At worker exit, after the ring is gone: frees everything left. */
void em_tun_worker_free(struct em_worker *w);

/* The accept callback of the tunnel listener (em_listener.accept). Takes
 * <fd>: closed at once past the handshake caps (tunnel.max_handshakes,
 * max_handshakes_per_source) or without a cluster key. */
void em_tun_accept(struct em_worker *w, struct em_listener *l, int fd);

/* Completion of a tunnel socket operation (EM_OP_TRECV ... EM_OP_TCOUNT). */
void em_tun_cqe(struct em_worker *w, void *p, enum em_op op, int res, uint32_t cflags);

/* Once per worker tick: session timers, redials, re-arming, stop. */
void em_tun_tick(struct em_worker *w);

/* After each batch of completions: sends what sessions queued meanwhile. */
void em_tun_flush(struct em_worker *w);

/* Idle worker: gives back the pages of the tunnels' receive buffers and the
 * pooled chunks. Returns false when buffers are held (try again later). */
bool em_tun_trim(struct em_worker *w);

/* Adds to <v> (indexed by EM_COUNTERS) what w->cnt does not hold: the
 * tunnel gauges and the counters kept by <w>'s sessions, live and freed. */
void em_tun_counters(const struct em_worker *w, uint64_t *v);

/* Publishes <w>'s figures per peer node (w->peers, under w->peers_mu):
 * once per tick, with the counters. */
void em_tun_publish_peers(struct em_worker *w);

/* True when no tunnel socket is open (the worker may exit). */
bool em_tun_idle(const struct em_worker *w);

/* Worker 0, woken: opens the control stream em_engine_control_open asked
 * for, if one waits. */
void em_tun_control_take(struct em_worker *w);

/* Client <c> (accepted, open) whose pick <ep> (of <sp>) lives on another
 * node: <c> enters the bridge mode, its bytes go over a stream to
 * ep->node (directly, or through the cloud when that node cannot be
 * dialled). <bid>/<len> are its first bytes (EM_NO_BUF if none; the buffer
 * is taken either way). On failure <c> is reset before this returns.
 * Returns false, having done nothing, when the tunnel the stream needs is
 * held by another worker: the caller then relays <c> to em_tun_pair. */
bool em_tun_bridge(struct em_worker *w, struct em_sock *c, const struct em_svc_port *sp,
                   const struct em_endpoint *ep, uint32_t bid, uint32_t len);

/* Whether a stream to <node> can be had from <w> now: on the cloud, a
 * tunnel from that node is up on some worker; elsewhere, true (a dial or
 * the relay is tried). */
bool em_tun_reachable(struct em_worker *w, const char *node);

/* Woken: bridges the streams other workers handed to this one (their
 * tunnel is here) to streams on it. Any worker. */
void em_tun_take_handoffs(struct em_worker *w);

/* A socket in mode <ops> for one exchange with remote endpoint <ep> of
 * <sp>: an open socketpair end (state EM_SK_OPEN, <ep>'s balancer entry
 * counted) whose other end is bridged to a stream, so that the exchange is
 * parsed like any upstream connection's. When the stream fails the other
 * end half-closes: <ops> sees EOF before any response; with <raw> (bytes
 * relayed as they are) it closes, and a reset of the stream is told from
 * its FIN by em_sock_pair_hung_up after the EOF; a full close of the
 * returned end resets the stream, with <raw>. The stream may be
 * opened by another worker, the one holding the tunnel it needs (then the
 * other end is handed to it). NULL when out of memory or descriptors, or
 * when no tunnel to ep->node can be had from here. */
struct em_sock *em_tun_pair(struct em_worker *w, const struct em_svc_port *sp,
                            const struct em_endpoint *ep, const struct em_sock_ops *ops,
                            bool raw);

#endif

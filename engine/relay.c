/* The L4 relay mode: bytes both ways between a client and its upstream. */
#include "engine/relay.h"

#include "engine/route.h"
#include "engine/tunnel.h"

static void relay_recv(struct em_worker *w, struct em_sock *s, uint16_t bid, uint32_t len)
{
	struct em_sock *dst = s->peer;
	if (!dst) {
		em_worker_buf_put(w, bid);
		em_conn_close(w, s, true);
		return;
	}
	em_sock_enqueue(w, dst, bid, len);
	em_sock_touch(w, s);
	em_sock_backpressure(w, s, dst);
	if (!(s->flags & EM_SF_RECV_ARMED))
		em_sock_maybe_rearm(w, s);
}

/* The FIN goes on once the other side sent what it has queued (else
 * em_sock_drained_default passes it on when the queue empties). A stream's
 * socketpair end closed without a FIN is a reset: both sides are reset. */
static void relay_eof(struct em_worker *w, struct em_sock *s)
{
	struct em_sock *dst = s->peer;
	if (!dst) {
		em_sock_close(w, s, false);
		return;
	}
	if (em_sock_pair_hung_up(s)) {
		em_conn_close(w, s, true);
		return;
	}
	if (dst->state == EM_SK_OPEN && dst->q_len == 0 && !(dst->flags & EM_SF_SEND_BUSY) &&
	    !(dst->flags & EM_SF_WR_SHUT))
		em_sock_shutdown(w, dst);
}

/* A refused connect is tried once more on another endpoint; else the
 * client is reset. */
static void relay_connect_failed(struct em_worker *w, struct em_sock *u, int res)
{
	if (em_route_retry(w, u->peer, u, res))
		return;
	em_conn_close(w, u, true);
}

/* The upstream's connect time is the latency a plain TCP port reports. */
static void relay_connected(struct em_worker *w, struct em_sock *u)
{
	uint32_t us = (uint32_t)(w->now_ns / 1000u) - u->t_us;
	if (u->peer)
		em_svcstat_observe(em_worker_svc(w, u->peer->mslot), us * 1000ull);
}

const struct em_sock_ops em_relay_ops = {
        .name = "relay",
        .recv = relay_recv,
        .eof = relay_eof,
        .connected = relay_connected,
        .connect_failed = relay_connect_failed,
};

void em_relay_start(struct em_worker *w, struct em_sock *c, const struct em_svc_port *sp,
                    uint32_t bid, uint32_t len)
{
	const struct em_endpoint *ep = sp ? em_route_pick(w, c, sp, NULL) : NULL;
	struct em_sock *u = NULL;
	if (ep && em_route_via_tunnel(ep)) {
		if (em_tun_bridge(w, c, sp, ep, bid, len))
			return;
		/* The tunnel is another worker's: relayed to a stream it opens. */
		if (!(u = em_tun_pair(w, sp, ep, &em_relay_ops, true)))
			goto fail;
	} else {
		/* Served here: one connection against the service's limit (a
		 * remote endpoint's node counts it). Over it, the client is
		 * reset. */
		if (ep && !em_route_admit(w, sp, NULL)) {
			if (bid != EM_NO_BUF)
				em_worker_buf_put(w, (uint16_t)bid);
			em_sock_close(w, c, true);
			return;
		}
		u = ep ? em_sock_alloc(w, &em_relay_ops) : NULL;
		if (!u)
			goto fail;
		if (em_route_connect(w, u, ep) < 0) {
			em_sock_release(w, u);
			goto fail;
		}
	}
	c->ops = &em_relay_ops;
	c->peer = u;
	u->peer = c;
	em_sock_timer(w, c, EM_T_IDLE, w->idle_ms);
	if (bid != EM_NO_BUF)
		em_sock_enqueue(w, u, (uint16_t)bid, len);
	if (u->state == EM_SK_OPEN && !(u->flags & EM_SF_RECV_ARMED))
		em_sock_maybe_rearm(w, u); /* a socketpair end: open at once */
	return;
fail:
	w->cnt[EM_C_NO_ENDPOINT]++;
	if (bid != EM_NO_BUF)
		em_worker_buf_put(w, (uint16_t)bid);
	em_sock_close(w, c, true);
}

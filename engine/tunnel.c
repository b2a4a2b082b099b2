/* Tunnels between nodes: peers and dialing, the session glue (events,
 * handshakes, accepted tunnels), the tick. */
#include "engine/tunnel_int.h"

#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "proto/clock.h"
#include "proto/log.h"
#include "tunnel/tls_pipe.h"


static uint64_t rng_next(struct em_tun_worker *t)
{
	uint64_t x = t->rng;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return t->rng = x;
}

/* The peer for node <name>, made on first use: on the cloud an inbound one
 * (the node's tunnels to us), elsewhere one we dial. NULL for a bad name or
 * out of memory. */
/* The peer named <name>, NULL when this worker has none. */
static struct tpeer *peer_find(struct em_worker *w, const char *name)
{
	struct em_tun_worker *t = w->tun;
	uint64_t h = em_hash64(name, strlen(name), EM_HASH_SEED);
	for (struct tpeer *tp = t->by_name[h % TUN_PEER_BUCKETS]; tp; tp = tp->hnext)
		if (strcmp(tp->name, name) == 0)
			return tp;
	return NULL;
}

/* The peer named <name>, made on first use; NULL for a name no node can
 * have, or out of memory. */
static struct tpeer *peer_get(struct em_worker *w, const char *name)
{
	struct em_tun_worker *t = w->tun;
	bool inbound = em_worker_config()->role == EM_ROLE_CLOUD;
	struct tpeer *found = peer_find(w, name);
	if (found)
		return found;
	size_t len = strlen(name);
	if (len == 0 || len > EM_FRAME_MAX_NAME)
		return NULL;
	struct tpeer *tp = calloc(1, sizeof(*tp));
	if (!tp)
		return NULL;
	memcpy(tp->name, name, len + 1);
	tp->inbound = inbound;
	em_dlist_init(&tp->waitq);
	em_dlist_push_tail(&t->peers, &tp->node);
	struct tpeer **head = &t->by_name[em_hash64(name, len, EM_HASH_SEED) % TUN_PEER_BUCKETS];
	tp->hnext = *head;
	*head = tp;
	return tp;
}

static struct tpeer *cloud_peer(struct em_worker *w, const struct em_addr *a);
static void ts_submit(struct em_worker *w, struct tpeer *tp, struct em_tstream *ts);

/* Edge: the peer that is the cloud, made with the address the control
 * stream gave (NULL on a node without a cloud). */
static struct tpeer *edge_cloud(struct em_worker *w)
{
	struct em_engine *e = w->eng;
	if (w->tun->cloud)
		return w->tun->cloud;
	pthread_mutex_lock(&e->ctl_mu);
	bool have = e->has_cloud;
	struct em_addr a = e->ctl_addr;
	pthread_mutex_unlock(&e->ctl_mu);
	return have && !w->stopping ? cloud_peer(w, &a) : NULL;
}

/* <tp> has no tunnel: streams waiting for it fail, the redial is scheduled. */
static void peer_down(struct em_worker *w, struct tpeer *tp)
{
	tp->state = TP_DOWN;
	tp->conn = NULL;
	/* An edge whose dial to a peer failed reaches it through the cloud:
	 * what waited goes there (PROTOCOL.md 10). */
	struct tpeer *cl = !tp->cloud && !tp->inbound ? edge_cloud(w) : NULL;
	while (cl && !em_dlist_empty(&tp->waitq)) {
		struct em_tstream *ts = em_container_of(tp->waitq.next, struct em_tstream, node);
		em_dlist_del(&ts->node);
		ts->tp = NULL;
		w->cnt[EM_C_T_VIA_CLOUD]++;
		ts_submit(w, cl, ts);
	}
	if (tp->inbound) {
		while (!em_dlist_empty(&tp->waitq)) {
			struct em_tstream *ts =
			        em_container_of(tp->waitq.next, struct em_tstream, node);
			tun_ts_fail(w, ts);
		}
		return;
	}
	const struct em_config *cfg = em_worker_config();
	uint32_t lo = cfg->tunnel.reconnect_min_ms;
	uint32_t hi = cfg->tunnel.reconnect_max_ms;
	tp->next_dial_ms = w->now_ms + em_backoff(&tp->backoff_ms, lo, hi, rng_next(w->tun));
	while (!em_dlist_empty(&tp->waitq)) {
		struct em_tstream *ts = em_container_of(tp->waitq.next, struct em_tstream, node);
		tun_ts_fail(w, ts);
	}
}

static void dial_failed(struct em_worker *w, struct tpeer *tp, bool replace)
{
	if (!replace) {
		peer_down(w, tp);
		return;
	}
	const struct em_config *cfg = em_worker_config();
	tp->next_dial_ms =
	        w->now_ms + em_backoff(&tp->backoff_ms, cfg->tunnel.reconnect_min_ms,
	                                   cfg->tunnel.reconnect_max_ms, rng_next(w->tun));
}

/* <tp>'s tunnel drains on its own: new streams dial a new one at once. */
static void peer_detach(struct em_worker *w, struct tpeer *tp)
{
	if (tp->next) {
		/* A replacement is being dialled already: it takes over. */
		tp->conn = tp->next;
		tp->next = NULL;
		tp->state = TP_DIALING;
		return;
	}
	tp->conn = NULL;
	tp->state = TP_DOWN;
	tp->next_dial_ms = w->now_ms;
	tp->backoff_ms = 0;
}

/* Who may be at the other end: a Node of the table; on the cloud any node
 * with the cluster key (edges register over the tunnel: they are Nodes only
 * after); the cloud, whatever its name, on the tunnel dialled to it. */
static bool allow_node(void *ctx, struct em_slice name)
{
	struct em_tconn *tc = ctx;
	char buf[EM_FRAME_MAX_NAME + 1];
	if (name.len == 0 || name.len > EM_FRAME_MAX_NAME)
		return false;
	if (tc->tls) {
		/* The name in HELLO must be the one the certificate gives: a
		 * node can only be itself. */
		memcpy(buf, name.base, name.len);
		buf[name.len] = 0;
		if (em_tls_pipe_check_peer(tc->tls, buf) != 0) {
			struct em_worker *w = tc->w;
			w->cnt[EM_C_T_TLS_FAIL]++;
			uint32_t quiet;
			if (tun_hs_log_ok(w->tun, w->now_ms, &quiet))
				EM_WARN("tunnel",
				        "worker %u: tunnel %s (%s) refused: %s (%u more handshake "
				        "refusals and failures not logged)",
				        w->id, tc->tp ? "to" : "from", tc->addr,
				        em_tls_pipe_error(tc->tls), quiet);
			return false;
		}
	}
	if ((tc->tp && tc->tp->cloud) || em_worker_config()->role == EM_ROLE_CLOUD)
		return true;
	memcpy(buf, name.base, name.len);
	buf[name.len] = 0;
	const struct em_table *t = em_table_current();
	return t && em_table_node(t, buf) != NULL;
}

/* A payload the session sent without copying (write_ref) is done with. */
static void on_release(void *ctx, uint64_t token)
{
	struct em_tconn *tc = ctx;
	if (!tc->w->tun->exiting)
		em_worker_entry_put(tc->w, (uint16_t)token);
}

static uint64_t clock_us(void *ctx)
{
	EM_UNUSED(ctx);
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Session events (below): the session calls it from input, tick and the
 * write calls. */
static void on_event(void *ctx, const struct em_tunnel_event *ev);

static int session_new(struct em_worker *w, struct em_tconn *tc, enum em_tunnel_role role)
{
	const struct em_config *cfg = em_worker_config();
	if (!cfg->tunnel.cluster_key[0])
		return -ENOKEY;
	struct em_tunnel_conf c = {
	        .role = role,
	        .node_name = cfg->node_name,
	        .key = cfg->tunnel.cluster_key,
	        .key_len = strlen(cfg->tunnel.cluster_key),
	        .peer_name = tc->tp && !tc->tp->cloud ? tc->tp->name : "",
	        .allow_node = allow_node,
	        .on_event = on_event,
	        .on_release = on_release,
	        .clock_us = clock_us,
	        .ctx = tc,
	        .max_streams = cfg->tunnel.max_streams,
	        .initial_window = cfg->tunnel.stream_window,
	        .max_window = cfg->tunnel.stream_window_max,
	        .tunnel_window = cfg->tunnel.window_cap,
	        .send_buffer = TUN_SEND_RING,
	        .keepalive_ms = cfg->tunnel.keepalive_ms,
	        .dead_ms = cfg->tunnel.dead_after_ms,
	        .handshake_ms = cfg->tunnel.handshake_ms,
	};
	int rc = em_tunnel_session_create(&c, w->now_ms, &tc->sess);
	if (rc)
		return rc;
	struct em_engine *e = w->eng;
	if (e->tls_on && role == EM_TUNNEL_ACCEPTOR && e->tls_signer) {
		/* An edge without a certificate may come to enroll: the first
		 * byte tells (tun_conn_sniff). */
		tc->flags |= TC_SNIFF;
	} else if (e->tls_on) {
		/* A dialled node must show its own certificate; the cloud and
		 * an accepted peer are known by theirs, checked against HELLO. */
		const char *want = tc->tp && !tc->tp->cloud ? tc->tp->name : NULL;
		em_engine_tls_lifetime(e, &tc->tls_half, &tc->tls_gen);
		tc->tls = em_engine_tls_pipe(e, role == EM_TUNNEL_DIALER, want);
		if (!tc->tls) {
			if (em_engine_tls_ready(e))
				return -ENOMEM;
			/* No certificate yet: only the cloud, to enroll. */
			if (!(tc->tp && tc->tp->cloud))
				return -EKEYREJECTED;
			tc->flags |= TC_ENROLL;
		}
	}
	tc->next_tick_ms = w->now_ms;
	if (w->tun->test_first_id &&
	    (role == EM_TUNNEL_DIALER || em_worker_config()->role == EM_ROLE_CLOUD)) {
		/* The acceptor's ids are the even ones below. */
		em_tunnel_session_test_set_next_id(tc->sess, w->tun->test_first_id -
		                                                     (role == EM_TUNNEL_DIALER ? 0 : 1));
		w->tun->test_first_id = 0;
	}
	return 0;
}

/* Where <ni>'s tunnel listens: its InternalIP at its annotated port, else at
 * our own tunnel port (the same on every node), else the default. */
static struct em_addr peer_addr(const struct em_node_info *ni, const struct em_config *cfg)
{
	struct em_addr a = ni->internal_ip;
	a.port = ni->tunnel_port             ? ni->tunnel_port
	         : cfg->tunnel.listen.family ? cfg->tunnel.listen.port
	                                     : EM_CONFIG_TUNNEL_PORT;
	return a;
}

/* Dials <tp>: its tunnel, or with <replace> a replacement for the one it
 * has (tp->next; a failure then leaves <tp> as it was, but for the backoff
 * of the next try). */
static int peer_dial_as(struct em_worker *w, struct tpeer *tp, bool replace)
{
	const struct em_table *t = em_table_current();
	const struct em_config *cfg = em_worker_config();
	const struct em_node_info *ni = t && !tp->cloud ? em_table_node(t, tp->name) : NULL;
	if (!tp->cloud && (!ni || !ni->internal_ip.family)) {
		if (tp->fails++ == 0)
			EM_WARN("tunnel", "worker %u: tunnel to %s: no such node or no InternalIP",
			        w->id, tp->name);
		dial_failed(w, tp, replace);
		return -EHOSTUNREACH;
	}
	struct em_addr a = tp->cloud ? tp->fixed : peer_addr(ni, cfg);
	int fd = socket(a.family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int mrc = fd == -1 ? -errno : em_sock_mark(w, fd);
	if (mrc) {
		if (fd != -1)
			close(fd);
		dial_failed(w, tp, replace);
		return mrc;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct em_tconn *tc = tun_conn_alloc(w, fd);
	if (!tc) {
		close(fd);
		dial_failed(w, tp, replace);
		return -ENOMEM;
	}
	tc->tp = tp;
	tc->dialed = a;
	em_addr_format(&a, true, tc->addr, sizeof(tc->addr));
	int rc = session_new(w, tc, EM_TUNNEL_DIALER);
	if (rc) {
		if (tp->fails++ == 0)
			EM_WARN("tunnel", "worker %u: tunnel to %s: %s", w->id, tp->name,
			        rc == -ENOKEY         ? "no cluster key"
			        : rc == -EKEYREJECTED ? "no tunnel certificate yet (enrolling with "
			                                "the cloud)"
			                              : strerror(-rc));
		w->tun->n_conns--;
		tun_conn_free(tc);
		dial_failed(w, tp, replace);
		return rc;
	}
	socklen_t sl = em_addr_to_sockaddr(&a, &tc->sa);
	w->cnt[EM_C_T_DIALED]++;
	if (replace) {
		tp->next = tc;
	} else {
		tp->conn = tc;
		tp->state = TP_DIALING;
	}
	tc->flags |= TC_CONNECTING;
	em_worker_connect(w, fd, (struct sockaddr *)&tc->sa, sl, em_ud(tc, EM_OP_TCONNECT),
	                  em_ud(tc, EM_OP_TCOUNT));
	tc->inflight += 2;
	return 0;
}

static int peer_dial(struct em_worker *w, struct tpeer *tp)
{
	return peer_dial_as(w, tp, false);
}

static void inbound_gone(struct em_worker *w, struct em_tconn *tc);

/* Stream ids are never reused: a tunnel that has EM_TUNNEL_ID_RESERVE or
 * fewer left gets a replacement dialled while the reserve carries new
 * streams; once the replacement is up it takes them and this one drains
 * (conn_up). The cloud dials no edge: an edge's tunnel running low drains
 * at once (GOAWAY), which makes the edge dial a new one (peer_draining);
 * meanwhile the node's streams go to another of its tunnels, or fail. */
static void maybe_replace(struct em_worker *w, struct em_tconn *tc)
{
	if (tc->ip && !(tc->flags & (TC_GOAWAY | TC_DEAD)) &&
	    em_tunnel_session_ids_left(tc->sess) <= EM_TUNNEL_ID_RESERVE) {
		EM_INFO("tunnel",
		        "worker %u: tunnel from %s (%s): %u stream ids left, draining it so that "
		        "the node dials a new one",
		        w->id, tun_tc_name(tc), tc->addr, em_tunnel_session_ids_left(tc->sess));
		em_tunnel_session_goaway(tc->sess, EM_REASON_NO_ERROR, TUN_IDS_EXHAUSTED);
		tc->flags |= TC_GOAWAY;
		tun_mark_dirty(w, tc);
		inbound_gone(w, tc);
		return;
	}
	struct tpeer *tp = tc->tp;
	if (!tp || tp->conn != tc || tp->next || w->stopping || w->now_ms < tp->next_dial_ms ||
	    em_tunnel_session_ids_left(tc->sess) > EM_TUNNEL_ID_RESERVE)
		return;
	EM_INFO("tunnel",
	        "worker %u: tunnel to %s (%s): %u stream ids left, dialling a replacement", w->id,
	        tp->name, tc->addr, em_tunnel_session_ids_left(tc->sess));
	peer_dial_as(w, tp, true);
}

/* Opens the streams that waited for the tunnel or for send ring space. */
static void open_waiting(struct em_worker *w, struct em_tconn *tc)
{
	struct tpeer *tp = tc->tp ? tc->tp : tc->ip;
	while (!em_dlist_empty(&tp->waitq)) {
		struct em_tstream *ts = em_container_of(tp->waitq.next, struct em_tstream, node);
		if (!tun_ts_open(w, tc, ts))
			break; /* send ring full or stream limit: the rest waits */
	}
	maybe_replace(w, tc);
}

/* Sends <ts> toward <tp>: at once when the tunnel is up, after the dial when
 * one is under way; fails it at once while the peer waits for its redial. */
static void ts_submit(struct em_worker *w, struct tpeer *tp, struct em_tstream *ts)
{
	tp->wanted = true;
	if (tp->state == TP_DOWN && w->now_ms >= tp->next_dial_ms && !w->stopping && !tp->inbound)
		peer_dial(w, tp);
	if (tp->state == TP_DOWN) {
		tun_ts_fail(w, ts);
		return;
	}
	ts->tp = tp;
	em_dlist_push_tail(&tp->waitq, &ts->node);
	if (tp->state == TP_UP)
		if (tun_ts_open(w, tp->conn, ts))
			maybe_replace(w, tp->conn);
}

/* Edge: whether streams to <tp>'s node go through the cloud: its Node asks
 * for it (or cannot be dialled: no such Node, no InternalIP), or its last
 * dial failed and the redial waits. */
static bool must_relay(struct em_worker *w, const struct tpeer *tp)
{
	const struct em_table *t = em_table_current();
	const struct em_node_info *ni = t ? em_table_node(t, tp->name) : NULL;
	if (!ni || !ni->internal_ip.family || ni->relay)
		return true;
	return tp->state == TP_DOWN && tp->fails > 0 && w->now_ms < tp->next_dial_ms;
}

/* Where a stream to <node> goes from <w>: returns -1 with the peer to send
 * it to in <*out> (NULL: nowhere), or the id of the worker holding the
 * tunnel it needs (cloud role: the node's tunnel was accepted there). */
static int stream_way(struct em_worker *w, const char *node, struct tpeer **out)
{
	struct em_engine *e = w->eng;
	*out = NULL;
	if (em_worker_config()->role == EM_ROLE_CLOUD) {
		/* A node that never dialled here has no peer: none is made for
		 * a name an edge or a caller sent. */
		struct tpeer *tp = peer_find(w, node);
		if (tp && tp->state == TP_UP)
			*out = tp;
		else {
			int k = tun_hub_find(e, node, w->id);
			if (k >= 0 && (unsigned)k != w->id)
				return k;
			*out = tp; /* not connected: the stream fails */
		}
		return -1;
	}
	struct tpeer *cl = edge_cloud(w);
	if (cl && tun_hub_is_cloud(e, node)) {
		*out = cl;
		return -1;
	}
	struct tpeer *tp = peer_get(w, node);
	if (tp && cl && must_relay(w, tp)) {
		w->cnt[EM_C_T_VIA_CLOUD]++;
		tp = cl;
	}
	*out = tp;
	return -1;
}

bool em_tun_bridge(struct em_worker *w, struct em_sock *c, const struct em_svc_port *sp,
                   const struct em_endpoint *ep, uint32_t bid, uint32_t len)
{
	struct tpeer *tp;
	if (stream_way(w, ep->node, &tp) >= 0)
		return false;
	struct em_tstream *ts = tp ? tun_ts_new(w, sp, ep) : NULL;
	if (!ts) {
		w->cnt[EM_C_NO_ENDPOINT]++;
		if (bid != EM_NO_BUF)
			em_worker_buf_put(w, (uint16_t)bid);
		em_sock_close(w, c, true);
		return true;
	}
	c->ops = &tun_bridge_ops;
	c->ctx = ts;
	ts->s = c;
	em_sock_timer(w, c, EM_T_IDLE, w->idle_ms);
	if (bid != EM_NO_BUF)
		tun_pending_push(w, ts, (uint16_t)bid, len);
	ts_submit(w, tp, ts);
	if (c->ctx == ts && ts->p_len)
		tun_ts_pause(w, ts);
	return true;
}

/* Socketpair end <fd> becomes the bridge of a new stream <ts> (target set)
 * sent toward <tp>. <fd> is taken: closed when nothing can be had. */
static void pair_submit(struct em_worker *w, struct tpeer *tp, struct em_tstream *ts, int fd)
{
	struct em_sock *b = tp ? em_sock_alloc(w, &tun_bridge_ops) : NULL;
	if (!b) {
		tun_ts_free(w, ts);
		close(fd);
		return;
	}
	b->fd = fd;
	b->family = AF_UNIX;
	b->state = EM_SK_OPEN;
	b->ctx = ts;
	ts->flags |= TS_PAIR;
	ts->s = b;
	em_sock_arm_recv(w, b);
	em_sock_timer(w, b, EM_T_IDLE, w->idle_ms);
	ts_submit(w, tp, ts);
}

/* Hands <fd> with the target of <ts> to worker <k>, which bridges it to a
 * stream on its tunnel (em_tun_take_handoffs); <ts> is freed. False when it
 * could not be queued (<fd> is closed). */
static bool handoff(struct em_worker *w, unsigned k, struct em_tstream *ts, int fd)
{
	struct tun_handoff *o = malloc(sizeof(*o));
	if (!o) {
		tun_ts_free(w, ts);
		close(fd);
		return false;
	}
	o->next = NULL;
	o->fd = fd;
	o->port = ts->port;
	o->dst = ts->dst;
	o->rp = ts->rp;
	o->rp_dir = ts->rp_dir;
	o->relay = ts->flags & TS_RELAY;
	memcpy(o->node, ts->node_name, sizeof(o->node));
	memcpy(o->ns, ts->ns, sizeof(o->ns));
	memcpy(o->svc, ts->svc, sizeof(o->svc));
	tun_ts_free(w, ts);
	w->cnt[EM_C_T_HANDOFFS]++;
	tun_hub_post(w->eng, k, o); /* a failed wake is retried by the next one */
	return true;
}

void em_tun_take_handoffs(struct em_worker *w)
{
	struct tun_handoff *o = tun_hub_take(w->eng, w->id);
	while (o) {
		struct tun_handoff *next = o->next;
		struct tpeer *tp = w->stopping ? NULL : peer_get(w, o->node);
		struct em_tstream *ts = tp ? tun_ts_alloc(w) : NULL;
		if (!ts) {
			close(o->fd); /* the other end sees EOF: 502, or a reset */
		} else {
			ts->port = o->port;
			ts->dst = o->dst;
			ts->rp = o->rp;
			ts->rp_dir = o->rp_dir;
			if (o->relay)
				ts->flags |= TS_RELAY;
			memcpy(ts->node_name, o->node, sizeof(ts->node_name));
			memcpy(ts->ns, o->ns, sizeof(ts->ns));
			memcpy(ts->svc, o->svc, sizeof(ts->svc));
			pair_submit(w, tp, ts, o->fd);
		}
		free(o);
		o = next;
	}
}

struct em_sock *em_tun_pair(struct em_worker *w, const struct em_svc_port *sp,
                            const struct em_endpoint *ep, const struct em_sock_ops *ops,
                            bool raw)
{
	int sv[2];
	struct tpeer *tp;
	int k = stream_way(w, ep->node, &tp);
	if (k < 0 && !tp)
		return NULL;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
		return NULL;
	struct em_sock *u = em_sock_alloc(w, ops);
	struct em_tstream *ts = u ? tun_ts_new(w, sp, ep) : NULL;
	if (!ts) {
		if (u)
			em_sock_release(w, u);
		close(sv[0]);
		close(sv[1]);
		return NULL;
	}
	u->fd = sv[0];
	u->family = AF_UNIX;
	u->state = EM_SK_OPEN;
	/* A balancer entry for a Service's endpoint; none for the Router's
	 * loopback targets, which are no endpoint of the table. */
	u->ep = sp->svc && ep->addr.family ? em_lb_ep_get(&w->lb, &ep->addr) : NULL;
	if (u->ep) {
		u->ep->active++;
		u->ep->last_ms = w->now_ms;
	}
	if (raw)
		ts->flags |= TS_RELAY;
	if (k >= 0)
		handoff(w, (unsigned)k, ts, sv[1]);
	else
		pair_submit(w, tp, ts, sv[1]);
	return u;
}

static bool node_reachable(struct em_worker *w, const char *node)
{
	struct tpeer *tp = peer_find(w, node);
	return (tp && tp->state == TP_UP) || tun_hub_find(w->eng, node, w->id) >= 0;
}

bool em_tun_reachable(struct em_worker *w, const char *node)
{
	if (em_worker_config()->role != EM_ROLE_CLOUD)
		return true;
	return node_reachable(w, node);
}

static bool relay_open(struct em_worker *w, struct em_tstream *in, int fd)
{
	struct tpeer *tp;
	struct em_tstream *ts = tun_ts_alloc(w);
	if (!ts) {
		close(fd);
		return false;
	}
	ts->port = in->port;
	ts->dst = in->dst;
	ts->rp = in->rp;
	ts->rp_dir = 1;
	ts->flags |= TS_RELAY;
	memcpy(ts->node_name, in->node_name, sizeof(ts->node_name));
	memcpy(ts->ns, in->ns, sizeof(ts->ns));
	memcpy(ts->svc, in->svc, sizeof(ts->svc));
	int k = stream_way(w, in->node_name, &tp);
	if (k >= 0)
		return handoff(w, (unsigned)k, ts, fd);
	pair_submit(w, tp, ts, fd);
	return true;
}

/* The peer that is the cloud at <a>, made on first use. A new address
 * (cloud.address changed) drains the tunnel to the old one. */
static struct tpeer *cloud_peer(struct em_worker *w, const struct em_addr *a)
{
	struct em_tun_worker *t = w->tun;
	struct tpeer *tp = t->cloud;
	if (!tp) {
		if (!(tp = calloc(1, sizeof(*tp))))
			return NULL;
		tp->cloud = true;
		strcpy(tp->name, "cloud");
		em_dlist_init(&tp->waitq);
		em_dlist_push_tail(&t->peers, &tp->node);
		t->cloud = tp;
	}
	if (!em_addr_eq(&tp->fixed, a)) {
		tp->fixed = *a;
		struct em_tconn *tc = tp->conn;
		if (tc && tp->state == TP_UP) {
			em_tunnel_session_goaway(tc->sess, EM_REASON_NO_ERROR, "cloud address changed");
			tc->flags |= TC_GOAWAY;
			tun_mark_dirty(w, tc);
			peer_detach(w, tp);
		}
	}
	return tp;
}

void em_tun_control_take(struct em_worker *w)
{
	struct em_engine *e = w->eng;
	pthread_mutex_lock(&e->ctl_mu);
	int fd = e->ctl_fd;
	struct em_addr a = e->ctl_addr;
	e->ctl_fd = -1;
	pthread_mutex_unlock(&e->ctl_mu);
	if (fd < 0)
		return;
	struct tpeer *tp = w->stopping ? NULL : cloud_peer(w, &a);
	struct em_sock *b = tp ? em_sock_alloc(w, &tun_bridge_ops) : NULL;
	struct em_tstream *ts = b ? tun_ts_alloc(w) : NULL;
	if (!ts) {
		if (b)
			em_sock_release(w, b);
		close(fd); /* the caller sees EOF and tries again later */
		return;
	}
	b->fd = fd;
	b->family = AF_UNIX;
	b->state = EM_SK_OPEN;
	b->ctx = ts;
	ts->flags |= TS_PAIR | TS_CONTROL;
	ts->s = b;
	em_sock_arm_recv(w, b);
	em_sock_timer(w, b, EM_T_IDLE, TUN_CONTROL_IDLE_MS);
	ts_submit(w, tp, ts);
}

/* Cloud: accepted tunnel <tc> is up. Its node's streams from this worker
 * can use it (the first one up carries them), and the other workers learn
 * it is here. */
static void inbound_up(struct em_worker *w, struct em_tconn *tc)
{
	struct tpeer *ip = peer_get(w, em_tunnel_session_peer_name(tc->sess));
	if (!ip)
		return;
	tc->ip = ip;
	tc->flags |= TC_HUB;
	tun_hub_count(w->eng, ip->name, w->id, 1);
	if (ip->state != TP_UP) {
		ip->conn = tc;
		ip->state = TP_UP;
		open_waiting(w, tc);
	}
}

/* Cloud: accepted tunnel <tc> takes no new streams (dead or draining).
 * Another up tunnel of the same node on this worker takes its place;
 * without one the streams waiting for the node fail. */
static void inbound_gone(struct em_worker *w, struct em_tconn *tc)
{
	struct tpeer *ip = tc->ip;
	if (!ip)
		return;
	tc->ip = NULL;
	if (tc->flags & TC_HUB) {
		tc->flags &= ~TC_HUB;
		tun_hub_count(w->eng, ip->name, w->id, -1);
	}
	if (ip->conn != tc)
		return;
	ip->conn = NULL;
	ip->state = TP_DOWN;
	struct em_tun_worker *t = w->tun;
	for (struct em_dlist *n = t->conns.next; n != &t->conns; n = n->next) {
		struct em_tconn *o = em_container_of(n, struct em_tconn, node);
		if (o->ip == ip && (o->flags & TC_UP) && !(o->flags & (TC_DEAD | TC_GOAWAY))) {
			ip->conn = o;
			ip->state = TP_UP;
			open_waiting(w, o);
			return;
		}
	}
	peer_down(w, ip);
}

static void conn_up(struct em_worker *w, struct em_tconn *tc)
{
	tc->flags |= TC_UP;
	tun_hs_end(tc);
	struct tpeer *tp = tc->tp;
	if (!tp) {
		EM_INFO("tunnel", "worker %u: tunnel from %s (%s) up", w->id, tun_tc_name(tc),
		        tc->addr);
		/* An enrollment tunnel is never the way to its node. */
		if (em_worker_config()->role == EM_ROLE_CLOUD && !(tc->flags & TC_ENROLL))
			inbound_up(w, tc);
		return;
	}
	if (tp->cloud)
		tun_hub_set_cloud(w->eng, em_tunnel_session_peer_name(tc->sess));
	if (tp->next == tc) {
		/* The replacement is up: new streams go here, the tunnel that
		 * ran low on stream ids drains (its streams finish there). */
		struct em_tconn *old = tp->conn;
		tp->next = NULL;
		tp->conn = tc;
		if (old) {
			EM_INFO("tunnel",
			        "worker %u: tunnel to %s (%s) is running out of stream ids: "
			        "draining it, %u stream(s) finishing",
			        w->id, tp->name, old->addr, em_tunnel_session_streams(old->sess));
			em_tunnel_session_goaway(old->sess, EM_REASON_NO_ERROR,
			                         TUN_IDS_EXHAUSTED);
			old->flags |= TC_GOAWAY;
			tun_mark_dirty(w, old);
		}
	} else if (tp->conn != tc) {
		/* Dialled for a peer that has another tunnel by now. */
		em_tunnel_session_goaway(tc->sess, EM_REASON_NO_ERROR, "not needed");
		tc->flags |= TC_GOAWAY;
		return;
	}
	EM_INFO("tunnel", "worker %u: tunnel to %s (%s) up", w->id, tp->name, tc->addr);
	tp->state = TP_UP;
	tp->fails = 0;
	tp->backoff_ms = 0;
	open_waiting(w, tc);
}

/* The peer is stopping (GOAWAY without error): its streams on <tc> finish
 * there, new ones need a new tunnel. A dialled tunnel leaves its peer, which
 * redials for the streams still waiting (the peer may be back already, as in
 * a rolling restart; if not, they fail fast). */
static void peer_draining(struct em_worker *w, struct em_tconn *tc, bool renew)
{
	EM_INFO("tunnel", "worker %u: tunnel %s %s (%s): peer is stopping, %u stream(s) finishing",
	        w->id, tc->tp ? "to" : "from", tun_tc_name(tc), tc->addr,
	        em_tunnel_session_streams(tc->sess));
	inbound_gone(w, tc);
	struct tpeer *tp = tc->tp;
	if (!tp || tp->conn != tc)
		return;
	peer_detach(w, tp);
	/* The cloud reaches this node only over a tunnel the node dials: when
	 * the cloud drains it for its stream ids (not when it stops), it is
	 * dialled again at once, also with nothing waiting. */
	if (tp->state != TP_DOWN || (em_dlist_empty(&tp->waitq) && !(tp->cloud && renew)))
		return;
	if (w->stopping)
		peer_down(w, tp); /* fails the waiting streams */
	else
		peer_dial(w, tp); /* on failure it fails them */
}

/* The tunnel is over: every stream fails at once, a dialled peer schedules
 * its redial. <why> is for the log. */
static void conn_dead(struct em_worker *w, struct em_tconn *tc, const char *why)
{
	if (tc->flags & TC_DEAD)
		return;
	tc->flags |= TC_DEAD;
	/* An accepted tunnel that never came up was logged by its failure. */
	if (why && (tc->tp || (tc->flags & TC_UP)))
		EM_WARN("tunnel", "worker %u: tunnel %s %s (%s) closed: %s", w->id,
		        tc->tp ? "to" : "from", tun_tc_name(tc), tc->addr, why);
	inbound_gone(w, tc);
	if (tc->tp && tc->tp->next == tc) {
		/* The replacement failed: the old tunnel goes on with its
		 * reserve; the next open past the backoff tries again. */
		tc->tp->next = NULL;
		dial_failed(w, tc->tp, true);
	}
	while (!em_dlist_empty(&tc->streams)) {
		struct em_tstream *ts = em_container_of(tc->streams.next, struct em_tstream, node);
		if ((ts->flags & (TS_FIN_SENT | TS_REMOTE_FIN)) == (TS_FIN_SENT | TS_REMOTE_FIN)) {
			/* Done on the tunnel (the last streams of a drained one):
			 * its socket still sends what arrived, then closes as
			 * usual; it no longer needs the tunnel. */
			em_dlist_del(&ts->node);
			em_dlist_del(&ts->bnode);
			ts->tc = NULL;
			ts->id = 0;
			continue;
		}
		tun_ts_fail(w, ts);
	}
	if (tc->tp && tc->tp->conn == tc) {
		if (tc->tp->next)
			peer_detach(w, tc->tp); /* the replacement takes the waiting */
		else {
			tc->tp->conn = NULL;
			peer_down(w, tc->tp);
		}
	}
	tun_conn_close(w, tc);
}

static void on_event(void *ctx, const struct em_tunnel_event *ev)
{
	struct em_tconn *tc = ctx;
	struct em_worker *w = tc->w;
	struct em_tstream *ts = ev->stream_user;
	switch (ev->type) {
	case EM_TUNNEL_EV_HANDSHAKE_DONE:
		conn_up(w, tc);
		break;
	case EM_TUNNEL_EV_HANDSHAKE_FAILED: {
		uint32_t quiet = 0;
		if (tc->tp || tun_hs_log_ok(w->tun, w->now_ms, &quiet))
			EM_WARN("tunnel",
			        "worker %u: tunnel %s %s (%s): handshake refused: %s%s%.*s "
			        "(%u more handshake failures not logged)",
			        w->id, tc->tp ? "to" : "from", tun_tc_name(tc), tc->addr,
			        em_reason_str(ev->reason), ev->data.len ? ": " : "",
			        (int)EM_MIN(ev->data.len, 128), ev->data.base, quiet);
		break;
	}
	case EM_TUNNEL_EV_STREAM_OPEN:
		tun_serve_open(w, tc, ev);
		break;
	case EM_TUNNEL_EV_DATA:
		if (ts)
			tun_ts_data(w, tc, ts, ev->stream_id, ev->data);
		else
			em_tunnel_session_consume(tc->sess, ev->stream_id, ev->data.len, w->now_ms);
		break;
	case EM_TUNNEL_EV_FIN:
		if (ts)
			tun_ts_remote_fin(w, ts);
		break;
	case EM_TUNNEL_EV_RESET:
		if (ev->reason == EM_REASON_REFUSED || ev->reason == EM_REASON_UNREACHABLE) {
			/* The peer would not serve a stream we opened. */
			w->cnt[EM_C_T_REFUSED]++;
			uint32_t quiet;
			if (tun_refuse_log_ok(w, &quiet))
				EM_WARN("tunnel",
				        "worker %u: %s refused a stream to %s/%s: %s%s%.*s "
				        "(%u more refusals not logged)",
				        w->id, tun_tc_name(tc), ts ? ts->ns : "?",
				        ts ? ts->svc : "?", em_reason_str(ev->reason),
				        ev->data.len ? ": " : "", (int)EM_MIN(ev->data.len, 128),
				        ev->data.base, quiet);
		}
		if (ts) {
			ts->id = 0;
			tun_ts_fail(w, ts);
		}
		break;
	case EM_TUNNEL_EV_WINDOW:
		if (ts)
			tun_ts_flush(w, ts);
		break;
	case EM_TUNNEL_EV_GOAWAY:
		if (ev->reason != EM_REASON_NO_ERROR)
			EM_WARN("tunnel", "worker %u: tunnel %s %s (%s): peer sent goaway: %s",
			        w->id, tc->tp ? "to" : "from", tun_tc_name(tc), tc->addr,
			        em_reason_str(ev->reason));
		else
			peer_draining(w, tc,
			              ev->data.len == sizeof(TUN_IDS_EXHAUSTED) - 1 &&
			                      memcmp(ev->data.base, TUN_IDS_EXHAUSTED,
			                             ev->data.len) == 0);
		break;
	case EM_TUNNEL_EV_CLOSED:
	case EM_TUNNEL_EV_PONG:
		break;
	}
	tun_mark_dirty(w, tc);
}

/* The tunnel's send ring has room again: bytes and opens that waited for
 * it, in turn (a stream still blocked goes to the back), until the ring is
 * full again: with many streams blocked, a completion must not walk them
 * all for nothing. Each stream set receiving again may bring a ring
 * buffer's worth: that much room is set aside for it. */
static void on_sent(struct em_worker *w, struct em_tconn *tc)
{
	uint32_t nb = 0, promised = 0;
	while (!em_dlist_empty(&tc->blocked) && nb < 2 &&
	       em_tunnel_session_send_room(tc->sess) >= TUN_ARM_ROOM + promised) {
		struct em_tstream *ts = em_container_of(tc->blocked.next, struct em_tstream, bnode);
		em_dlist_del(&ts->bnode);
		tun_ts_flush(w, ts);
		if (em_dlist_linked(&ts->bnode))
			nb++; /* ring full (or nearly): the rest waits */
		else
			promised += EM_BUF_SIZE;
	}
	struct tpeer *tp = tc->tp ? tc->tp : tc->ip;
	if (tp && tp->conn == tc && tp->state == TP_UP && !em_dlist_empty(&tp->waitq))
		open_waiting(w, tc);
}

int em_tun_worker_init(struct em_worker *w)
{
	struct em_tun_worker *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	em_dlist_init(&t->peers);
	em_dlist_init(&t->conns);
	em_dlist_init(&t->dirty);
	em_dlist_init(&t->hs);
	/* Test only: lets a test reach stream id exhaustion in a few streams. */
	const char *fid = getenv("EDGEMESH_TEST_TUNNEL_FIRST_ID");
	if (fid && fid[0])
		t->test_first_id = (uint32_t)strtoul(fid, NULL, 10) | 1u;
	t->cur_bid = EM_NO_BUF;
	t->dead = conn_dead;
	t->sent = on_sent;
	t->reachable = node_reachable;
	t->relay_open = relay_open;
	t->rng = em_now_ns() ^ (0x9e3779b97f4a7c15ULL * (w->id + 1));
	if (!t->rng)
		t->rng = 1;
	w->tun = t;
	return 0;
}

void em_tun_worker_free(struct em_worker *w)
{
	struct em_tun_worker *t = w->tun;
	if (!t)
		return;
	t->exiting = true;
	while (!em_dlist_empty(&t->conns)) {
		struct em_tconn *tc = em_container_of(t->conns.next, struct em_tconn, node);
		tun_conn_free(tc);
	}
	tun_buf_free(w); /* after the conns: slices of its ring may still be dropped */
	while (!em_dlist_empty(&t->peers)) {
		struct tpeer *tp = em_container_of(t->peers.next, struct tpeer, node);
		em_dlist_del(&tp->node);
		free(tp);
	}
	while (t->free_ts) {
		struct em_tstream *ts = t->free_ts;
		t->free_ts = ts->next_free;
		free(ts);
	}
	free(t->ps);
	free(t);
	w->tun = NULL;
}

void em_tun_accept(struct em_worker *w, struct em_listener *l, int fd)
{
	EM_UNUSED(l);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct em_addr a = {0};
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0 ||
	    em_addr_from_sockaddr((struct sockaddr *)&ss, &a) != 0)
		a.family = 0;
	if (!tun_hs_admit(w, &a)) {
		close(fd);
		return;
	}
	struct em_tconn *tc = tun_conn_alloc(w, fd);
	if (!tc) {
		close(fd);
		return;
	}
	tc->src = a;
	if (a.family)
		em_addr_format(&a, true, tc->addr, sizeof(tc->addr));
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	int rc = session_new(w, tc, EM_TUNNEL_ACCEPTOR);
	if (rc) {
		EM_WARN("tunnel", "worker %u: tunnel from %s refused: %s", w->id, tc->addr,
		        rc == -ENOKEY         ? "no cluster key"
		        : rc == -EKEYREJECTED ? "no tunnel certificate yet (enrolling with the cloud)"
		                              : strerror(-rc));
		w->tun->n_conns--;
		tun_conn_free(tc);
		return;
	}
	w->cnt[EM_C_T_ACCEPTED]++;
	tc->flags |= TC_HS;
	em_dlist_push_tail(&w->tun->hs, &tc->hnode);
	w->tun->n_hs++;
	tun_conn_arm_recv(w, tc);
	tun_mark_dirty(w, tc);
}

/* The table changed: a peer whose Node now gives another tunnel address
 * (or is gone) gets a new tunnel for new streams; the old one drains (our
 * GOAWAY, its streams finish). */
static void peers_recheck(struct em_worker *w, const struct em_table *tab)
{
	const struct em_config *cfg = em_worker_config();
	struct em_tun_worker *t = w->tun;
	for (struct em_dlist *n = t->peers.next; n != &t->peers; n = n->next) {
		struct tpeer *tp = em_container_of(n, struct tpeer, node);
		struct em_tconn *tc = tp->conn;
		if (!tc || tp->state != TP_UP || tp->cloud || tp->inbound)
			continue;
		const struct em_node_info *ni = em_table_node(tab, tp->name);
		struct em_addr a =
		        ni && ni->internal_ip.family ? peer_addr(ni, cfg) : (struct em_addr){0};
		if (a.family && em_addr_eq(&a, &tc->dialed))
			continue;
		char now[EM_ADDR_STRLEN] = "none";
		if (a.family)
			em_addr_format(&a, true, now, sizeof(now));
		EM_INFO("tunnel",
		        "worker %u: node %s moved from %s to %s: new streams use a new tunnel",
		        w->id, tp->name, tc->addr, now);
		em_tunnel_session_goaway(tc->sess, EM_REASON_NO_ERROR, "peer address changed");
		tc->flags |= TC_GOAWAY;
		tun_mark_dirty(w, tc);
		peer_detach(w, tp);
	}
}

/* The engine's TLS context or revocations changed: the enrollment tunnel
 * closes once a certificate is here, tunnels of a revoked peer close, and
 * tunnels made with an older certificate of ours drain once it is past half
 * its lifetime. */
static void tls_recheck(struct em_worker *w, bool ctx_changed, bool revs_changed)
{
	struct em_engine *e = w->eng;
	struct em_tun_worker *t = w->tun;
	bool ready = em_engine_tls_ready(e);
	int64_t now = (int64_t)time(NULL);
	for (struct em_dlist *n = t->conns.next, *next; n != &t->conns; n = next) {
		next = n->next;
		struct em_tconn *tc = em_container_of(n, struct em_tconn, node);
		if (tc->flags & (TC_CLOSING | TC_DEAD))
			continue;
		if ((tc->flags & TC_ENROLL) && ready && tc->tp) {
			EM_INFO("tunnel", "worker %u: certificate installed: the unencrypted tunnel "
			                  "to the cloud closes, TLS from now on", w->id);
			em_tunnel_session_goaway(tc->sess, EM_REASON_NO_ERROR, "certificate installed");
			if (tc->tp->conn == tc)
				peer_detach(w, tc->tp); /* redialled at once, with TLS */
			conn_dead(w, tc, NULL);
			continue;
		}
		if (revs_changed && tc->tls && em_tls_pipe_state(tc->tls) == EM_TLS_PIPE_OPEN) {
			const char *peer = em_tls_pipe_peer_name(tc->tls);
			const char *why =
			        em_engine_tls_check(e, peer, em_tls_pipe_peer_not_before(tc->tls));
			if (why) {
				w->cnt[EM_C_T_TLS_FAIL]++;
				EM_WARN("tunnel", "worker %u: tunnel %s %s (%s) closed: its certificate %s",
				        w->id, tc->tp ? "to" : "from", peer, tc->addr, why);
				em_tunnel_session_goaway(tc->sess, EM_REASON_AUTH_FAILED,
				                         "certificate revoked");
				conn_dead(w, tc, NULL);
				continue;
			}
		}
		if (ctx_changed && tc->tls && tc->tls_gen != atomic_load(&e->tls_gen) &&
		    now >= tc->tls_half && (tc->flags & TC_UP) && !(tc->flags & TC_GOAWAY)) {
			EM_INFO("tunnel",
			        "worker %u: tunnel %s %s (%s) runs on a certificate past half its "
			        "lifetime: draining it, new streams take a new tunnel",
			        w->id, tc->tp ? "to" : "from", tun_tc_name(tc), tc->addr);
			em_tunnel_session_goaway(tc->sess, EM_REASON_NO_ERROR, "certificate renewed");
			tc->drain_until_ms = w->now_ms + em_worker_config()->timeouts.shutdown_ms;
			tc->flags |= TC_GOAWAY;
			tun_mark_dirty(w, tc);
			inbound_gone(w, tc);
			if (tc->tp && tc->tp->conn == tc)
				peer_detach(w, tc->tp);
		}
	}
}

void em_tun_tick(struct em_worker *w)
{
	struct em_tun_worker *t = w->tun;
	em_bufring_tick(&t->rb);
	unsigned tg = atomic_load(&w->eng->tls_gen), rg = atomic_load(&w->eng->revs_gen);
	if (tg != t->tls_gen || rg != t->revs_gen) {
		bool ctx_changed = tg != t->tls_gen, revs_changed = rg != t->revs_gen;
		t->tls_gen = tg;
		t->revs_gen = rg;
		tls_recheck(w, ctx_changed, revs_changed);
	}
	for (struct em_dlist *n = t->conns.next, *next; n != &t->conns; n = next) {
		next = n->next;
		struct em_tconn *tc = em_container_of(n, struct em_tconn, node);
		if (tc->flags & (TC_CLOSING | TC_DEAD | TC_CONNECTING))
			continue;
		if (w->stopping && w->n_live == 0) {
			em_tunnel_session_goaway(tc->sess, EM_REASON_NO_ERROR, "stopping");
			conn_dead(w, tc, NULL);
			continue;
		}
		if (w->stopping && (tc->flags & TC_UP) && !(tc->flags & TC_GOAWAY)) {
			/* Draining: peers open no new streams here; those under
			 * way finish until the drain deadline. */
			tc->flags |= TC_GOAWAY;
			em_tunnel_session_goaway(tc->sess, EM_REASON_NO_ERROR, "stopping");
			tun_mark_dirty(w, tc);
		}
		if (tc->drain_until_ms && w->now_ms >= tc->drain_until_ms) {
			EM_INFO("tunnel",
			        "worker %u: tunnel %s %s (%s) drained for a renewed certificate: "
			        "closing it with %u stream(s) left (timeouts.shutdown_ms)",
			        w->id, tc->tp ? "to" : "from", tun_tc_name(tc), tc->addr,
			        em_tunnel_session_streams(tc->sess));
			conn_dead(w, tc, NULL);
			continue;
		}
		if (!(tc->flags & TC_RECV))
			tun_conn_arm_recv(w, tc);
		struct tpeer *tp = tc->tp ? tc->tp : tc->ip;
		if (tp && tp->conn == tc && tp->state == TP_UP && !em_dlist_empty(&tp->waitq))
			open_waiting(w, tc);
		if (w->now_ms >= tc->next_tick_ms) {
			uint64_t d = em_tunnel_session_tick(tc->sess, w->now_ms);
			tc->next_tick_ms = w->now_ms + d;
			tun_mark_dirty(w, tc);
		}
	}
	if (w->stopping)
		return;
	const struct em_table *tab = em_table_current();
	if (tab && em_table_generation(tab) != t->table_gen) {
		t->table_gen = em_table_generation(tab);
		peers_recheck(w, tab);
	}
	for (struct em_dlist *n = t->peers.next; n != &t->peers; n = n->next) {
		struct tpeer *tp = em_container_of(n, struct tpeer, node);
		if (tp->wanted && tp->state == TP_DOWN && w->now_ms >= tp->next_dial_ms &&
		    !tp->inbound)
			peer_dial(w, tp);
	}
	em_tun_flush(w);
}

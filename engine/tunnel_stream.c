/* Bridged streams: the socket mode whose bytes go to and come from a
 * tunnel stream, and the streams the peer opens toward local endpoints. */
#include "engine/tunnel_int.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/route.h"
#include "proto/log.h"

struct em_tstream *tun_ts_alloc(struct em_worker *w)
{
	struct em_tun_worker *t = w->tun;
	struct em_tstream *ts = t->free_ts;
	uint32_t gen = 0;
	if (ts) {
		t->free_ts = ts->next_free;
		gen = ts->gen;
	} else if (!(ts = malloc(sizeof(*ts)))) {
		return NULL;
	}
	memset(ts, 0, offsetof(struct em_tstream, ns));
	ts->ns[0] = ts->svc[0] = 0;
	ts->gen = gen + 1;
	ts->p_first = ts->p_last = EM_Q_NONE; /* lists: all-zero reads as unlinked */
	return ts;
}

static void pending_drop(struct em_worker *w, struct em_tstream *ts)
{
	em_q_drop(w, &ts->p_first, &ts->p_last, &ts->p_len);
	ts->p_off = 0;
}

void tun_ts_free(struct em_worker *w, struct em_tstream *ts)
{
	em_dlist_del(&ts->node);
	em_dlist_del(&ts->bnode);
	pending_drop(w, ts);
	ts->gen++; /* chunks still queued no longer return window */
	ts->tc = NULL;
	ts->tp = NULL;
	ts->s = NULL;
	ts->next_free = w->tun->free_ts;
	w->tun->free_ts = ts;
}

/* Bytes moved: the idle timer moves on, but for a stream still waiting for
 * a stream slot, whose deadline is the connect timeout. */
static void touch(struct em_worker *w, struct em_tstream *ts, struct em_sock *s)
{
	if (ts->flags & TS_WAIT_SLOT)
		return;
	if (s->tclass == EM_T_IDLE && s->deadline_ms < w->now_ms + w->idle_ms - 1000)
		em_sock_timer(w, s, EM_T_IDLE, w->idle_ms);
}

void tun_pending_push(struct em_worker *w, struct em_tstream *ts, uint16_t e, uint32_t len)
{
	w->q_bytes[e] = len;
	em_q_append(w, &ts->p_first, &ts->p_last, &ts->p_len, e);
}

/* Pauses the socket's recv while its bytes wait for window. */
void tun_ts_pause(struct em_worker *w, struct em_tstream *ts)
{
	if (ts->s)
		em_sock_pause(w, ts->s);
}

static void ts_check_done(struct em_worker *w, struct em_tstream *ts)
{
	struct em_sock *s = ts->s;
	if (s && (ts->flags & TS_FIN_SENT) && (ts->flags & TS_REMOTE_FIN) &&
	    (s->flags & EM_SF_WR_DONE))
		em_sock_close(w, s, false);
}

/* The stream waits for window with bytes in ring buffers while the ring
 * runs low: the bytes move to the heap and the buffers go back, so that
 * streams waiting on their peers do not starve the sockets that could go
 * on. Entries that cannot move stay where they are. */
static void ts_unpin(struct em_worker *w, struct em_tstream *ts)
{
	uint16_t prev = EM_Q_NONE;
	for (uint16_t e = ts->p_first, k = 0; e != EM_Q_NONE && k < ts->p_len; k++) {
		uint16_t next = w->q_next[e];
		if (e < EM_BUF_COUNT) {
			uint32_t off = e == ts->p_first ? ts->p_off : 0;
			uint32_t len = w->q_bytes[e] - off;
			char *p = malloc(len ? len : 1);
			uint16_t ne = p ? em_worker_static_get(w, p, em_entry_free) : EM_Q_NONE;
			if (ne == EM_Q_NONE) {
				free(p);
				return;
			}
			memcpy(p, em_worker_buf(w, e) + off, len);
			w->q_bytes[ne] = len;
			w->q_next[ne] = next;
			if (prev == EM_Q_NONE) {
				ts->p_first = ne;
				ts->p_off = 0;
			} else {
				w->q_next[prev] = ne;
			}
			if (ts->p_last == e)
				ts->p_last = ne;
			em_worker_buf_put(w, e);
			e = ne;
		}
		prev = e;
		e = next;
	}
}

/* Writes the socket's waiting bytes into the session, then its FIN. */
void tun_ts_flush(struct em_worker *w, struct em_tstream *ts)
{
	struct em_tconn *tc = ts->tc;
	if (!tc || !ts->id)
		return;
	while (ts->p_len) {
		uint16_t e = ts->p_first;
		uint32_t len = w->q_bytes[e] - ts->p_off;
		const char *p = em_worker_entry(w, e) + ts->p_off;
		/* A whole ring buffer's worth goes out from the buffer itself
		 * (the session hands it back once sent); else it is copied. */
		int n = e < EM_BUF_COUNT && len >= TUN_REF_MIN
		                ? em_tunnel_session_write_ref(tc->sess, ts->id, p, len, e)
		                : 0;
		bool ref = n > 0;
		if (n == 0)
			n = em_tunnel_session_write(tc->sess, ts->id, p, len, false);
		if (n < 0) {
			em_tunnel_session_reset(tc->sess, ts->id, EM_REASON_INTERNAL, NULL);
			ts->id = 0;
			tun_ts_fail(w, ts);
			return;
		}
		if (n > 0)
			tun_mark_dirty(w, tc);
		if ((uint32_t)n < len) {
			ts->p_off += (uint32_t)n;
			/* Out of window: the WINDOW event flushes it. Out of ring
			 * room: the next send completion does, in turn. */
			struct em_tunnel_stream_info si;
			if (em_tunnel_session_stream_info(tc->sess, ts->id, &si) == 0 &&
			    si.send_credit == 0) {
				em_dlist_del(&ts->bnode);
				if (em_worker_buf_pressure(w))
					ts_unpin(w, ts);
			} else if (!em_dlist_linked(&ts->bnode))
				em_dlist_push_tail(&tc->blocked, &ts->bnode);
			return;
		}
		ts->p_first = w->q_next[e];
		if (--ts->p_len == 0)
			ts->p_first = ts->p_last = EM_Q_NONE;
		ts->p_off = 0;
		if (!ref)
			em_worker_entry_put(w, e);
	}
	em_dlist_del(&ts->bnode);
	if ((ts->flags & (TS_LOCAL_EOF | TS_FIN_SENT)) == TS_LOCAL_EOF) {
		if (em_tunnel_session_shutdown(tc->sess, ts->id) == 0)
			tun_mark_dirty(w, tc);
		ts->flags |= TS_FIN_SENT;
		ts_check_done(w, ts);
		return;
	}
	if (ts->s)
		em_sock_maybe_rearm(w, ts->s);
}

/* The stream cannot go on. A raw client or a local endpoint connection is
 * reset; a socketpair end half-closes so its HTTP upstream reads EOF before
 * any response (502) and then closes it; a relay leg's end closes at once,
 * so the other leg resets its stream (bridge_eof) instead of sending a FIN
 * and its node's bytes are not read and dropped here. */
void tun_ts_fail(struct em_worker *w, struct em_tstream *ts)
{
	struct em_sock *s = ts->s;
	em_dlist_del(&ts->node);
	em_dlist_del(&ts->bnode);
	pending_drop(w, ts);
	ts->tc = NULL;
	ts->tp = NULL;
	ts->id = 0;
	ts->gen++;
	if (!s) {
		tun_ts_free(w, ts);
		return;
	}
	if ((ts->flags & TS_RELAY) && ts->rp)
		w->cnt[EM_C_T_RELAY_RESETS]++;
	if ((ts->flags & (TS_PAIR | TS_RELAY)) == TS_PAIR && !(s->flags & EM_SF_CLOSING)) {
		ts->flags |= TS_DEAD;
		if (!(s->flags & EM_SF_WR_SHUT)) {
			s->flags |= EM_SF_WR_SHUT;
			shutdown(s->fd, SHUT_WR);
		}
		em_sock_timer(w, s, EM_T_IDLE, w->idle_ms);
		em_sock_maybe_rearm(w, s);
		return;
	}
	em_sock_close(w, s, true);
}

bool tun_ts_open(struct em_worker *w, struct em_tconn *tc, struct em_tstream *ts)
{
	struct em_frame_target tg = {
	        .protocol = EM_FRAME_PROTO_TCP,
	        .port = ts->port,
	        .dst = ts->dst,
	        .node = {ts->node_name, strlen(ts->node_name)},
	        .ns = {ts->ns, strlen(ts->ns)},
	        .service = {ts->svc, strlen(ts->svc)},
	};
	if (ts->flags & TS_CONTROL)
		tg = (struct em_frame_target){.protocol = EM_FRAME_PROTO_CONTROL};
	const char *data = NULL;
	uint32_t len = 0;
	if (ts->p_len) {
		data = em_worker_entry(w, ts->p_first) + ts->p_off;
		len = w->q_bytes[ts->p_first] - ts->p_off;
	}
	uint32_t id = 0;
	int n = em_tunnel_session_open(tc->sess, &tg, data, len, ts, &id);
	if (n == -ENOBUFS)
		return false; /* stays waiting: retried when the send ring drains */
	if (n == -EBUSY) {
		/* At the stream limit: wait for streams to end (retried after sends
		 * and on the tick), for at most the connect timeout, as a connect
		 * to a busy endpoint would. */
		if (ts->s && !(ts->flags & TS_WAIT_SLOT)) {
			ts->flags |= TS_WAIT_SLOT;
			em_sock_timer(w, ts->s, EM_T_IDLE, w->connect_ms);
		}
		return false;
	}
	if ((ts->flags & TS_WAIT_SLOT) && ts->s) {
		ts->flags &= ~TS_WAIT_SLOT;
		em_sock_timer(w, ts->s, EM_T_IDLE,
		              ts->flags & TS_CONTROL ? TUN_CONTROL_IDLE_MS : w->idle_ms);
	}
	em_dlist_del(&ts->node);
	ts->tp = NULL;
	if (n < 0) {
		tun_ts_fail(w, ts);
		return true;
	}
	ts->tc = tc;
	ts->id = id;
	em_dlist_push_tail(&tc->streams, &ts->node);
	tun_mark_dirty(w, tc);
	if (len) {
		ts->p_off += (uint32_t)n;
		if ((uint32_t)n == len) {
			uint16_t e = ts->p_first;
			ts->p_first = w->q_next[e];
			if (--ts->p_len == 0)
				ts->p_first = ts->p_last = EM_Q_NONE;
			ts->p_off = 0;
			em_worker_entry_put(w, e);
		}
	}
	tun_ts_flush(w, ts);
	return true;
}

struct em_tstream *tun_ts_new(struct em_worker *w, const struct em_svc_port *sp,
                              const struct em_endpoint *ep)
{
	struct em_tstream *ts = tun_ts_alloc(w);
	if (!ts)
		return NULL;
	ts->port = sp->port;
	ts->dst = ep->addr;
	snprintf(ts->node_name, sizeof(ts->node_name), "%s", ep->node);
	ts->ns[0] = ts->svc[0] = 0;
	if (sp->svc) {
		snprintf(ts->ns, sizeof(ts->ns), "%s", sp->svc->ns);
		snprintf(ts->svc, sizeof(ts->svc), "%s", sp->svc->name);
	}
	return ts;
}

/* True while bytes of the stream's socket wait for window: its recv stays
 * paused. */
static bool bridge_recv_blocked(struct em_sock *s)
{
	struct em_tstream *ts = s->ctx;
	if (ts->flags & TS_DEAD)
		return false;
	if (ts->p_len > 0)
		return true;
	struct em_tconn *tc = ts->tc;
	if (!tc || !ts->id)
		return false;
	/* While the peer's window is shut, or the session's send buffer is
	 * mostly full, the bytes wait in the socket's kernel buffer (TCP
	 * pushes back on the sender) instead of in ring buffers, which a
	 * thousand waiting streams would take from everyone else. A window
	 * update re-arms the first kind, a send completion the second. */
	struct em_tunnel_stream_info si;
	if (em_tunnel_session_stream_info(tc->sess, ts->id, &si) == 0 && si.send_credit == 0 &&
	    !si.local_fin)
		return true;
	if (em_tunnel_session_send_room(tc->sess) < TUN_ARM_ROOM) {
		if (!em_dlist_linked(&ts->bnode))
			em_dlist_push_tail(&tc->blocked, &ts->bnode);
		return true;
	}
	return false;
}

static void bridge_recv(struct em_worker *w, struct em_sock *s, uint16_t bid, uint32_t len)
{
	struct em_tstream *ts = s->ctx;
	if (ts->flags & TS_DEAD) {
		/* Drained until its EOF (one read per arm). */
		em_worker_buf_put(w, bid);
		em_sock_maybe_rearm(w, s);
		return;
	}
	touch(w, ts, s);
	tun_pending_push(w, ts, bid, len);
	if (ts->tc && ts->id && ts->p_len == 1) {
		tun_ts_flush(w, ts);
		if (s->ctx != ts || (s->flags & EM_SF_CLOSING))
			return;
	}
	if (bridge_recv_blocked(s))
		tun_ts_pause(w, ts);
	else if (!(s->flags & EM_SF_RECV_ARMED))
		em_sock_maybe_rearm(w, s);
}

static void bridge_eof(struct em_worker *w, struct em_sock *s)
{
	struct em_tstream *ts = s->ctx;
	if (ts->flags & TS_DEAD) {
		em_sock_close(w, s, false);
		return;
	}
	if ((ts->flags & TS_RELAY) && em_sock_pair_hung_up(s)) {
		/* The other leg closed its end without a FIN: it was reset. */
		em_sock_close(w, s, true);
		return;
	}
	ts->flags |= TS_LOCAL_EOF;
	if (ts->tc && ts->id && ts->p_len == 0)
		tun_ts_flush(w, ts);
}

/* The socket sent all the stream gave it: the stream's FIN goes on. */
static void bridge_drained(struct em_worker *w, struct em_sock *s)
{
	struct em_tstream *ts = s->ctx;
	if ((ts->flags & TS_REMOTE_FIN) && !(s->flags & EM_SF_WR_SHUT) && s->state == EM_SK_OPEN)
		em_sock_shutdown(w, s);
}

static void bridge_shut(struct em_worker *w, struct em_sock *s)
{
	ts_check_done(w, s->ctx);
}

/* The socket is closing: its stream is reset (or forgotten when both sides
 * ended). */
static void bridge_detach(struct em_worker *w, struct em_sock *s)
{
	struct em_tstream *ts = s->ctx;
	s->ctx = NULL;
	ts->s = NULL;
	struct em_tconn *tc = ts->tc;
	if (tc && ts->id) {
		if ((ts->flags & (TS_FIN_SENT | TS_REMOTE_FIN)) == (TS_FIN_SENT | TS_REMOTE_FIN) &&
		    !(s->flags & EM_SF_ABORT)) {
			em_tunnel_session_set_user(tc->sess, ts->id, NULL);
		} else {
			bool unreachable = s->state == EM_SK_CONNECTING;
			em_tunnel_session_reset(
			        tc->sess, ts->id,
			        unreachable ? EM_REASON_UNREACHABLE : EM_REASON_CANCEL,
			        unreachable ? "connect to the endpoint failed" : NULL);
		}
		tun_mark_dirty(w, tc);
	}
	tun_ts_free(w, ts);
}

void tun_ts_data(struct em_worker *w, struct em_tconn *tc, struct em_tstream *ts, uint32_t id,
                 struct em_slice d)
{
	struct em_sock *s = ts->s;
	if (ts->rp)
		atomic_fetch_add_explicit(&ts->rp->bytes[ts->rp_dir], d.len, memory_order_relaxed);
	if (!s) {
		em_tunnel_session_consume(tc->sess, id, d.len, w->now_ms);
		return;
	}
	unsigned cap = w->st_nfree < TS_QTIGHT_FREE ? TS_QCAP_TIGHT : TS_QCAP;
	if (s->q_len < cap && tun_ref_enqueue(w, ts, s, d)) {
		if (s->ctx == ts)
			touch(w, ts, s);
		return;
	}
	/* Small DATA joins the tail chunk: the entry grows in place (a send
	 * in flight covers its old length; on_send leaves the rest queued). */
	struct tchunk *tail = tun_tail_chunk(w, ts, s);
	if (tail) {
		uint32_t n = (uint32_t)EM_MIN(d.len, (size_t)(tail->cap - tail->len));
		memcpy(tail->data + tail->len, d.base, n);
		tail->len += n;
		w->q_bytes[s->q_last] += n;
		d.base += n;
		d.len -= n;
		if (s->state == EM_SK_OPEN && !(s->flags & EM_SF_SEND_BUSY))
			em_sock_send_next(w, s);
		if (s->ctx != ts)
			return; /* the send failed and closed the socket */
	}
	while (d.len) {
		size_t want = d.len;
		if (s->q_len >= cap)
			want = CH_HUGE;
		else if (want > CH_BIG)
			want = CH_BIG; /* pooled chunks, as many as it takes */
		else if (s->q_len >= 4 && want <= CH_SMALL)
			want = CH_BIG; /* a run of small DATA: room for many */
		struct tchunk *c =
		        s->q_len < cap * TS_QMAX_MUL ? tun_chunk_get(w->tun, want) : NULL;
		uint16_t e = c ? em_worker_static_get(w, c->data, tun_chunk_release) : EM_Q_NONE;
		if (e == EM_Q_NONE) {
			if (c) {
				c->ts = NULL;
				tun_chunk_release(w, c->data);
			}
			em_tunnel_session_reset(tc->sess, id, EM_REASON_INTERNAL,
			                        s->q_len >= cap * TS_QMAX_MUL ? "stream queue limit"
			                                                      : "out of buffers");
			ts->id = 0;
			tun_ts_fail(w, ts);
			return;
		}
		uint32_t n = (uint32_t)EM_MIN(d.len, (size_t)c->cap);
		memcpy(c->data, d.base, n);
		c->ts = ts;
		c->gen = ts->gen;
		c->len = n;
		d.base += n;
		d.len -= n;
		em_sock_enqueue(w, s, e, n);
		if (s->ctx != ts)
			return; /* the send failed and closed the socket */
	}
	touch(w, ts, s);
}

static void slice_str(char *dst, size_t cap, struct em_slice s)
{
	size_t n = EM_MIN(s.len, cap - 1);
	memcpy(dst, s.base, n);
	dst[n] = 0;
}

/* True when a per-stream refusal may be logged now; sets <*quiet> to the
 * number not logged since the last line. */
bool tun_refuse_log_ok(struct em_worker *w, uint32_t *quiet)
{
	struct em_tun_worker *t = w->tun;
	if (t->refuse_log_ms && w->now_ms < t->refuse_log_ms + 1000) {
		t->refuse_quiet++;
		return false;
	}
	t->refuse_log_ms = w->now_ms;
	*quiet = t->refuse_quiet;
	t->refuse_quiet = 0;
	return true;
}

/* An edge opened its control stream: bridged to a socketpair whose other end
 * goes to the controller (em_engine_set_control), or refused when this node
 * has none. */
static void serve_control(struct em_worker *w, struct em_tconn *tc,
                          const struct em_tunnel_event *ev)
{
	struct em_engine *e = w->eng;
	int sv[2] = {-1, -1};
	struct em_sock *b = NULL;
	struct em_tstream *ts = NULL;
	pthread_mutex_lock(&e->ctl_mu);
	bool have = e->ctl_fn != NULL;
	pthread_mutex_unlock(&e->ctl_mu);
	const char *why = "no controller on this node";
	if (have) {
		why = "out of memory or descriptors";
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0 &&
		    (b = em_sock_alloc(w, &tun_bridge_ops)))
			ts = tun_ts_alloc(w);
	}
	if (!ts) {
		if (b)
			em_sock_release(w, b);
		if (sv[0] >= 0) {
			close(sv[0]);
			close(sv[1]);
		}
		w->cnt[EM_C_T_OPEN_REFUSED]++;
		em_tunnel_session_reset(tc->sess, ev->stream_id, EM_REASON_REFUSED, why);
		return;
	}
	b->fd = sv[1];
	b->family = AF_UNIX;
	b->state = EM_SK_OPEN;
	b->ctx = ts;
	ts->flags |= TS_PAIR | TS_CONTROL;
	ts->s = b;
	ts->tc = tc;
	ts->id = ev->stream_id;
	em_dlist_push_tail(&tc->streams, &ts->node);
	em_tunnel_session_set_user(tc->sess, ev->stream_id, ts);
	em_sock_arm_recv(w, b);
	em_sock_timer(w, b, EM_T_IDLE, TUN_CONTROL_IDLE_MS);
	pthread_mutex_lock(&e->ctl_mu);
	if (e->ctl_fn)
		e->ctl_fn(e->ctl_ctx, sv[0], em_tunnel_session_peer_name(tc->sess), &tc->src,
		          (tc->flags & TC_ENROLL) != 0);
	else
		close(sv[0]); /* gone meanwhile: the stream ends (EOF) */
	pthread_mutex_unlock(&e->ctl_mu);
}

static void refuse_open(struct em_worker *w, struct em_tconn *tc, uint32_t id, uint32_t reason,
                        const char *why, const struct em_frame_target *tg)
{
	w->cnt[EM_C_T_OPEN_REFUSED]++;
	uint32_t quiet;
	if (tun_refuse_log_ok(w, &quiet))
		EM_WARN("tunnel",
		        "worker %u: stream from %s for node %.*s, %.*s/%.*s port %u refused: %s "
		        "(%u more refusals not logged)",
		        w->id, tun_tc_name(tc), (int)tg->node.len, tg->node.base, (int)tg->ns.len,
		        tg->ns.base, (int)tg->service.len, tg->service.base, tg->port, why, quiet);
	em_tunnel_session_reset(tc->sess, id, reason, why);
}

/* Cloud: an edge opened a stream for another node (<node>, which it cannot
 * reach directly). It is served by splicing it to a stream toward that
 * node over the node's own tunnel here: each leg is bridged to one end of
 * a socketpair, so each keeps its tunnel's flow control and what waits
 * between them is the socketpair's kernel buffers, never more. */
static void serve_relay(struct em_worker *w, struct em_tconn *tc, const struct em_tunnel_event *ev,
                        const char *node)
{
	const struct em_frame_target *tg = ev->target;
	const char *from = em_tunnel_session_peer_name(tc->sess);
	const char *why = NULL;
	if (em_worker_config()->role != EM_ROLE_CLOUD)
		why = "not this node (only the cloud relays)";
	else if (tg->protocol != EM_FRAME_PROTO_TCP)
		why = "only TCP streams are relayed";
	else if (strcmp(from, node) == 0)
		why = "relay back to the opener";
	else if (!w->tun->reachable(w, node))
		why = "that node has no tunnel to the cloud";
	/* Counted per pair when the node is known: a name an edge made up
	 * takes no pair (their number is capped). */
	const struct em_table *t = em_table_current();
	struct tun_relay_pair *rp = !why || (t && em_table_node(t, node))
	                                    ? tun_hub_pair(w->eng, from, node)
	                                    : NULL;
	if (why) {
		if (rp)
			atomic_fetch_add_explicit(&rp->refused, 1, memory_order_relaxed);
		w->cnt[EM_C_T_RELAY_REFUSED]++;
		refuse_open(w, tc, ev->stream_id, EM_REASON_UNREACHABLE, why, tg);
		return;
	}
	int sv[2] = {-1, -1};
	struct em_sock *b = NULL;
	struct em_tstream *ts = NULL;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0 &&
	    (b = em_sock_alloc(w, &tun_bridge_ops)))
		ts = tun_ts_alloc(w);
	if (!ts) {
		if (b)
			em_sock_release(w, b);
		if (sv[0] >= 0) {
			close(sv[0]);
			close(sv[1]);
		}
		refuse_open(w, tc, ev->stream_id, EM_REASON_INTERNAL, "out of memory or descriptors",
		            tg);
		return;
	}
	b->fd = sv[0];
	b->family = AF_UNIX;
	b->state = EM_SK_OPEN;
	b->ctx = ts;
	ts->flags |= TS_PAIR | TS_RELAY;
	ts->s = b;
	ts->tc = tc;
	ts->id = ev->stream_id;
	ts->port = tg->port;
	ts->dst = tg->dst;
	ts->rp = rp;
	ts->rp_dir = 0;
	slice_str(ts->node_name, sizeof(ts->node_name), tg->node);
	slice_str(ts->ns, sizeof(ts->ns), tg->ns);
	slice_str(ts->svc, sizeof(ts->svc), tg->service);
	em_dlist_push_tail(&tc->streams, &ts->node);
	em_tunnel_session_set_user(tc->sess, ev->stream_id, ts);
	em_sock_arm_recv(w, b);
	em_sock_timer(w, b, EM_T_IDLE, w->idle_ms);
	w->cnt[EM_C_T_RELAYED]++;
	if (rp)
		atomic_fetch_add_explicit(&rp->streams, 1, memory_order_relaxed);
	w->tun->relay_open(w, ts, sv[1]);
}

/* A stream a peer opened to <sp>, whose service has a QPS limit. Returns
 * false when it goes on as any other stream (a plain TCP port under its
 * limit: one connection taken); true when handled here: a TCP port over
 * its limit is refused with "rate limited" (the opener resets its client),
 * and an HTTP port's stream is bridged to a socketpair whose other end is
 * a client of that port (w->serve_http), so that each request is counted. */
static bool serve_limited(struct em_worker *w, struct em_tconn *tc,
                          const struct em_tunnel_event *ev, const struct em_svc_port *sp)
{
	if (!sp->http || !w->serve_http) {
		if (em_route_admit(w, sp, NULL))
			return false;
		w->cnt[EM_C_T_OPEN_REFUSED]++;
		em_tunnel_session_reset(tc->sess, ev->stream_id, EM_REASON_REFUSED, "rate limited");
		return true;
	}
	int sv[2] = {-1, -1};
	struct em_sock *b = NULL;
	struct em_tstream *ts = NULL;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0 &&
	    (b = em_sock_alloc(w, &tun_bridge_ops)))
		ts = tun_ts_alloc(w);
	if (!ts) {
		if (b)
			em_sock_release(w, b);
		if (sv[0] >= 0) {
			close(sv[0]);
			close(sv[1]);
		}
		w->cnt[EM_C_T_OPEN_REFUSED]++;
		em_tunnel_session_reset(tc->sess, ev->stream_id, EM_REASON_UNREACHABLE,
		                        "out of memory or descriptors");
		return true;
	}
	b->fd = sv[1];
	b->family = AF_UNIX;
	b->state = EM_SK_OPEN;
	b->ctx = ts;
	ts->flags |= TS_PAIR;
	ts->s = b;
	ts->tc = tc;
	ts->id = ev->stream_id;
	em_dlist_push_tail(&tc->streams, &ts->node);
	em_tunnel_session_set_user(tc->sess, ev->stream_id, ts);
	em_sock_arm_recv(w, b);
	em_sock_timer(w, b, EM_T_IDLE, w->idle_ms);
	w->serve_http(w, sv[0], sp);
	return true;
}

static bool is_loopback(const struct em_addr *a)
{
	if (a->family == AF_INET)
		return (ntohl(a->v4.s_addr) >> 24) == 127 && a->port;
	return a->family == AF_INET6 && IN6_IS_ADDR_LOOPBACK(&a->v6) && a->port;
}

/* The peer opened a stream: serve it from a local endpoint of the named
 * service, the very one the opener picked, or refuse it; a stream for
 * another node is relayed (cloud) or refused. */
void tun_serve_open(struct em_worker *w, struct em_tconn *tc, const struct em_tunnel_event *ev)
{
	const struct em_frame_target *tg = ev->target;
	if (tg->protocol == EM_FRAME_PROTO_CONTROL) {
		serve_control(w, tc, ev);
		return;
	}
	if (tc->flags & TC_ENROLL) {
		refuse_open(w, tc, ev->stream_id, EM_REASON_REFUSED,
		            "tunnel not encrypted: it carries a certificate request only", tg);
		return;
	}
	char node[EM_FRAME_MAX_NAME + 1];
	slice_str(node, sizeof(node), tg->node);
	if (node[0] && strcmp(node, em_worker_config()->node_name) != 0) {
		serve_relay(w, tc, ev, node);
		return;
	}
	char ns[EM_FRAME_MAX_NS + 1], name[EM_FRAME_MAX_NAME + 1];
	const struct em_endpoint *ep = NULL;
	const struct em_table *t = em_table_current();
	slice_str(ns, sizeof(ns), tg->ns);
	slice_str(name, sizeof(name), tg->service);
	const struct em_service *svc = t && ns[0] ? em_table_service(t, ns, name) : NULL;
	const struct em_svc_port *sp = svc && tg->protocol == EM_FRAME_PROTO_TCP
	                                       ? em_service_port(svc, tg->port, IPPROTO_TCP)
	                                       : NULL;
	uint32_t n_local = 0;
	for (uint32_t i = 0; sp && i < sp->n_ready; i++) {
		if (!sp->endpoints[i].local)
			continue;
		n_local++;
		if (em_addr_eq(&sp->endpoints[i].addr, &tg->dst)) {
			ep = &sp->endpoints[i];
			break;
		}
	}
	if (!ep && n_local) {
		/* The opener's pick is no longer here (its table is behind
		 * ours), or it named none (the cloud's Router): another local
		 * endpoint of the service serves it, in turn (an opener's ids
		 * go up by two). */
		uint32_t k = (ev->stream_id >> 1) % n_local;
		for (uint32_t i = 0; i < sp->n_ready && !ep; i++)
			if (sp->endpoints[i].local && k-- == 0)
				ep = &sp->endpoints[i];
		if (tg->dst.family)
			w->cnt[EM_C_T_OPEN_REPICKED]++;
	}
	/* The cloud's Router names no Service but a port of this node's
	 * loopback (KubeEdge's servicebus): served only on our tunnel to the
	 * cloud, and only there. */
	struct em_endpoint lo;
	if (!ep && !ns[0] && tc->tp && tc->tp->cloud && tg->protocol == EM_FRAME_PROTO_TCP &&
	    is_loopback(&tg->dst)) {
		lo = (struct em_endpoint){.addr = tg->dst, .node = "", .pod = "", .ready = true,
		                          .local = true};
		ep = &lo;
	}
	if (!ep) {
		w->cnt[EM_C_T_OPEN_REFUSED]++;
		uint32_t quiet;
		if (tun_refuse_log_ok(w, &quiet)) {
			char dst[EM_ADDR_STRLEN];
			em_addr_format(&tg->dst, true, dst, sizeof(dst));
			EM_WARN("tunnel",
			        "worker %u: stream from %s to %s/%s port %u (%s) refused: %s "
			        "(%u more refusals not logged)",
			        w->id, tun_tc_name(tc), ns, name, tg->port, dst,
			        !sp ? "no such service port here" : "no local endpoint here",
			        quiet);
		}
		em_tunnel_session_reset(tc->sess, ev->stream_id, EM_REASON_REFUSED,
		                        "not a local endpoint of that service here");
		return;
	}
	if (sp && EM_UNLIKELY(sp->qps) && serve_limited(w, tc, ev, sp))
		return;
	struct em_tstream *ts = tun_ts_alloc(w);
	struct em_sock *u = ts ? em_sock_alloc(w, &tun_bridge_ops) : NULL;
	if (!u || em_route_connect(w, u, ep) < 0) {
		if (u)
			em_sock_release(w, u);
		if (ts)
			tun_ts_free(w, ts);
		w->cnt[EM_C_T_OPEN_REFUSED]++;
		em_tunnel_session_reset(tc->sess, ev->stream_id, EM_REASON_UNREACHABLE,
		                        "cannot connect to the endpoint");
		return;
	}
	if (em_tunnel_session_streams(tc->sess) > TUN_MANY_STREAMS) {
		/* Set before the connect is submitted, so the SYN already
		 * carries the small window. */
		int rb = TUN_MANY_RCVBUF;
		setsockopt(u->fd, SOL_SOCKET, SO_RCVBUF, &rb, sizeof(rb));
	}
	ts->tc = tc;
	ts->id = ev->stream_id;
	ts->s = u;
	u->ctx = ts;
	em_dlist_push_tail(&tc->streams, &ts->node);
	em_tunnel_session_set_user(tc->sess, ev->stream_id, ts);
	em_sock_timer(w, u, EM_T_IDLE, w->idle_ms);
}

/* Only the control stream is idle at stop; other streams drain. */
static bool bridge_idle(const struct em_sock *s)
{
	const struct em_tstream *ts = s->ctx;
	return ts && (ts->flags & TS_CONTROL);
}

const struct em_sock_ops tun_bridge_ops = {
        .name = "tunnel-bridge",
        .recv = bridge_recv,
        .eof = bridge_eof,
        .drained = bridge_drained,
        .shut = bridge_shut,
        .detach = bridge_detach,
        .recv_blocked = bridge_recv_blocked,
        .idle = bridge_idle,
};

void tun_ts_remote_fin(struct em_worker *w, struct em_tstream *ts)
{
	ts->flags |= TS_REMOTE_FIN;
	struct em_sock *s = ts->s;
	if (s && s->q_len == 0 && !(s->flags & EM_SF_SEND_BUSY))
		bridge_drained(w, s);
}

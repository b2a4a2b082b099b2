/* Tunnel connections: their sockets' recv and send, completions, the
 * admission of handshakes, and the counters of their sessions. */
#include "engine/tunnel_int.h"

#include "engine/io.h"

#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "proto/log.h"
#include "tunnel/tls_pipe.h"

/* The counters (EM_COUNTERS) each session keeps: counter, field of struct
 * em_tunnel_stats. */
#define EM_TUN_SESSION_COUNTERS(X)                                                                 \
	X(T_OPENED_LOCAL, streams_opened_local)                                                    \
	X(T_OPENED_REMOTE, streams_opened_remote)                                                  \
	X(T_RESETS_IN, resets_in)                                                                  \
	X(T_RESETS_OUT, resets_out)                                                                \
	X(T_BYTES_IN, bytes_in)                                                                    \
	X(T_BYTES_OUT, bytes_out)                                                                  \
	X(T_LIMIT_STREAMS, limit_streams)                                                          \
	X(T_LIMIT_PINGS, limit_pings)                                                              \
	X(T_LIMIT_UPDATES, limit_window_updates)                                                   \
	X(T_LIMIT_EMPTY, limit_empty_data)                                                         \
	X(T_LIMIT_RESETS, limit_resets)                                                            \
	X(T_LIMIT_CTRL, limit_ctrl_queue)                                                          \
	X(T_LIMIT_FLOW, limit_flow_control)                                                        \
	X(T_AUTH_FAIL, auth_failures)                                                              \
	X(T_UNKNOWN_NODE, unknown_nodes)                                                           \
	X(T_PROTO_ERR, protocol_errors)                                                            \
	X(T_TIMEOUTS, timeouts)

/* Adds the session counters of <st> to <v> (indexed by EM_COUNTERS). */
static void stats_add(uint64_t *v, const struct em_tunnel_stats *st)
{
#define EM_X_ADD(id, field) v[EM_C_##id] += st->field;
	EM_TUN_SESSION_COUNTERS(EM_X_ADD)
#undef EM_X_ADD
}

/* The record of peer <name> on this worker, made when new; -1 past
 * TUN_MAX_PEERSTATS or out of memory. A linear search: it runs once per
 * tunnel, and a worker has tunnels to few peers. */
static int32_t peer_find(struct em_tun_worker *t, const char *name)
{
	for (uint32_t i = 0; i < t->n_ps; i++)
		if (strcmp(t->ps[i].name, name) == 0)
			return (int32_t)i;
	if (t->n_ps >= TUN_MAX_PEERSTATS)
		return -1;
	if (t->n_ps == t->cap_ps) {
		uint32_t cap = t->cap_ps ? t->cap_ps * 2 : 8;
		void *p = realloc(t->ps, cap * sizeof(*t->ps));
		if (!p)
			return -1;
		t->ps = p;
		t->cap_ps = cap;
	}
	struct tun_peerstat *p = &t->ps[t->n_ps];
	memset(p, 0, sizeof(*p));
	snprintf(p->name, sizeof(p->name), "%s", name);
	return (int32_t)t->n_ps++;
}

/* The peer record of <tc> once it is up; -1 before (or none to be had). */
static int32_t peer_of(struct em_tun_worker *t, struct em_tconn *tc)
{
	if (tc->pidx < 0 && tc->sess && (tc->flags & TC_UP)) {
		const char *n = em_tunnel_session_peer_name(tc->sess);
		if (n[0])
			tc->pidx = peer_find(t, n);
	}
	return tc->pidx;
}

/* <tc> is being freed: its peer keeps its bytes. */
static void peer_retire(struct em_tun_worker *t, struct em_tconn *tc)
{
	int32_t i = peer_of(t, tc);
	if (i < 0)
		return;
	const struct em_tunnel_stats *st = em_tunnel_session_stats(tc->sess);
	t->ps[i].rx_retired += st->bytes_in;
	t->ps[i].tx_retired += st->bytes_out;
}

/* True when a handshake refusal or failure may be logged now; sets
 * <*quiet> to the number not logged since the last line. A flood of
 * strangers must not turn into a flood of log lines. */
bool tun_hs_log_ok(struct em_tun_worker *t, uint64_t now_ms, uint32_t *quiet)
{
	if (t->hs_log_ms && now_ms < t->hs_log_ms + 1000) {
		t->hs_quiet++;
		return false;
	}
	t->hs_log_ms = now_ms;
	*quiet = t->hs_quiet;
	t->hs_quiet = 0;
	return true;
}

/* <tc>'s handshake is over (done, failed or closed): its slot is free. */
void tun_hs_end(struct em_tconn *tc)
{
	if (!(tc->flags & TC_HS))
		return;
	tc->flags &= ~TC_HS;
	em_dlist_del(&tc->hnode);
	tc->w->tun->n_hs--;
}

void tun_conn_free(struct em_tconn *tc)
{
	struct em_tun_worker *t = tc->w->tun;
	if (tc->sess) {
		stats_add(t->retired, em_tunnel_session_stats(tc->sess));
		peer_retire(t, tc);
		if (tc->flags & TC_UP)
			tc->w->cnt[EM_C_T_CLOSED]++;
	}
	tun_hs_end(tc);
	em_dlist_del(&tc->node);
	em_dlist_del(&tc->dnode);
	if (tc->fd >= 0)
		em_io_close(tc->w, tc->fd);
	em_tunnel_session_destroy(tc->sess);
	em_tls_pipe_free(tc->tls);
	free(tc);
}

void tun_conn_close(struct em_worker *w, struct em_tconn *tc)
{
	if (tc->flags & TC_CLOSING)
		return;
	tc->flags |= TC_CLOSING;
	tun_hs_end(tc);
	if (tc->inflight == 0) {
		w->tun->n_conns--;
		tun_conn_free(tc);
		return;
	}
	em_io_cancel_fd(w, tc->fd, em_ud(tc, EM_OP_TCOUNT));
	tc->inflight++;
}

void tun_conn_arm_recv(struct em_worker *w, struct em_tconn *tc)
{
	em_io_recv(w, tc->fd, &w->tun->rb, TUN_BGID, true, 0, em_ud(tc, EM_OP_TRECV));
	tc->flags |= TC_RECV;
	tc->inflight++;
}

/* TLS: moves what the session has to send into the pipe (encrypted, as
 * much as its output ring takes), then sends the pipe's next slice. */
static void tls_kick(struct em_worker *w, struct em_tconn *tc)
{
	struct iovec iov[EM_SENDV_IOV];
	for (;;) {
		unsigned n = em_tunnel_session_output_iov(tc->sess, iov, EM_SENDV_IOV);
		size_t moved = 0;
		bool full = n == 0;
		for (unsigned i = 0; i < n && !full; i++) {
			ssize_t k = em_tls_pipe_write(tc->tls, iov[i].iov_base, iov[i].iov_len);
			if (k > 0)
				moved += (size_t)k;
			full = k <= 0 || (size_t)k < iov[i].iov_len;
		}
		if (moved)
			em_tunnel_session_output_advance(tc->sess, moved);
		if (full)
			break;
	}
	const uint8_t *d;
	size_t len = em_tls_pipe_output(tc->tls, &d);
	if (len == 0) {
		if (em_tunnel_session_should_close(tc->sess) &&
		    em_tunnel_session_output_iov(tc->sess, iov, 1) == 0) {
			uint32_t r = em_tunnel_session_close_reason(tc->sess);
			w->tun->dead(w, tc, r == EM_REASON_NO_ERROR ? NULL : em_reason_str(r));
		}
		return;
	}
	em_io_send(w, tc->fd, d, (uint32_t)len, MSG_NOSIGNAL, em_ud(tc, EM_OP_TSEND));
	tc->flags |= TC_SEND;
	tc->inflight++;
}

/* TLS: feeds received ciphertext to the pipe and its plaintext to the
 * session, a record at a time. A pipe that fails (a refused certificate,
 * a forged or broken record, bytes that are not TLS) ends the tunnel. */
static void tls_input(struct em_worker *w, struct em_tconn *tc, const uint8_t *d, size_t len)
{
	struct em_tun_worker *t = w->tun;
	size_t off = 0;
	ssize_t k = 0;
	for (;;) {
		ssize_t n = 0;
		if (off < len && (n = em_tls_pipe_input(tc->tls, d + off, len - off)) > 0)
			off += (size_t)n;
		bool got = false;
		while ((k = em_tls_pipe_read(tc->tls, t->tls_plain, sizeof(t->tls_plain))) > 0) {
			got = true;
			em_tunnel_session_input(tc->sess, t->tls_plain, (size_t)k, w->now_ms);
			if (tc->flags & TC_DEAD)
				return;
		}
		if (k < 0 || n < 0 || off >= len)
			break;
		if (!got && n == 0) {
			/* Neither fed nor read: the pipe waits for its output to
			 * leave, which only a send can do. */
			k = -EPROTO;
			break;
		}
	}
	if (k == -EPIPE) {
		w->tun->dead(w, tc, "peer ended TLS");
	} else if (k < 0 || em_tls_pipe_state(tc->tls) == EM_TLS_PIPE_FAILED) {
		w->cnt[EM_C_T_TLS_FAIL]++;
		const char *why = em_tls_pipe_error(tc->tls);
		char msg[EM_TLS_PIPE_ERR_LEN + 8];
		snprintf(msg, sizeof(msg), "TLS: %s", why[0] ? why : "input stalled");
		/* The close logs only tunnels dialled or up: a refused inbound
		 * handshake (an expired certificate, another CA) says why here,
		 * as rate-limited as the other refusals. */
		uint32_t quiet;
		if (!tc->tp && !(tc->flags & TC_UP) && tun_hs_log_ok(t, w->now_ms, &quiet))
			EM_WARN("tunnel",
			        "worker %u: tunnel from %s refused: %s (%u more handshake refusals "
			        "and failures not logged)",
			        w->id, tc->addr, msg, quiet);
		w->tun->dead(w, tc, msg);
	}
}

/* Sends the session's next output slice (one send in flight). */
static void tun_conn_kick(struct em_worker *w, struct em_tconn *tc)
{
	if (tc->flags & (TC_SEND | TC_CONNECTING | TC_CLOSING | TC_SNIFF))
		return;
	if (tc->tls) {
		tls_kick(w, tc);
		return;
	}
	struct iovec iov[EM_SENDV_IOV];
	unsigned n = em_tunnel_session_output_iov(tc->sess, iov, EM_SENDV_IOV);
	if (n == 0) {
		if (em_tunnel_session_should_close(tc->sess)) {
			uint32_t r = em_tunnel_session_close_reason(tc->sess);
			w->tun->dead(w, tc, r == EM_REASON_NO_ERROR ? NULL : em_reason_str(r));
		}
		return;
	}
	if (n > 1 && w->n_sendv == EM_SENDV_SLOTS)
		em_worker_submit(w);
	if (n > 1 && w->n_sendv < EM_SENDV_SLOTS) {
		struct em_sendv *v = &w->sendv[w->n_sendv++];
		memcpy(v->iov, iov, n * sizeof(iov[0]));
		v->mh = (struct msghdr){.msg_iov = v->iov, .msg_iovlen = n};
		em_io_sendmsg(w, tc->fd, &v->mh, MSG_NOSIGNAL, em_ud(tc, EM_OP_TSEND));
	} else {
		em_io_send(w, tc->fd, iov[0].iov_base, (uint32_t)iov[0].iov_len, MSG_NOSIGNAL,
		           em_ud(tc, EM_OP_TSEND));
	}
	tc->flags |= TC_SEND;
	tc->inflight++;
}

struct em_tconn *tun_conn_alloc(struct em_worker *w, int fd)
{
	int rc = em_bufring_ready(&w->tun->rb)
	                 ? 0
	                 : em_bufring_init(&w->tun->rb, w->epoll ? NULL : &w->ring, TUN_BGID,
	                                   TUN_BUF_COUNT, TUN_BUF_SIZE);
	if (rc) {
		EM_WARN("tunnel", "worker %u: tunnel buffer ring: %s", w->id, strerror(-rc));
		return NULL;
	}
	struct em_tconn *tc = aligned_alloc(16, sizeof(*tc));
	if (!tc)
		return NULL;
	memset(tc, 0, sizeof(*tc));
	tc->w = w;
	tc->fd = fd;
	tc->pidx = -1;
	em_dlist_init(&tc->streams);
	em_dlist_init(&tc->blocked);
	em_dlist_init(&tc->dnode);
	em_dlist_push_tail(&w->tun->conns, &tc->node);
	w->tun->n_conns++;
	return tc;
}

/* Handshakes in progress from <a>'s host (any port). */
static uint32_t hs_from(const struct em_tun_worker *t, const struct em_addr *a)
{
	uint32_t n = 0;
	for (const struct em_dlist *i = t->hs.next; i != &t->hs; i = i->next) {
		const struct em_tconn *tc = em_container_of(i, struct em_tconn, hnode);
		if (tc->src.family == a->family && memcmp(tc->src.b, a->b, sizeof(a->b)) == 0)
			n++;
	}
	return n;
}

/* Until a peer proves it knows the cluster key it may hold only a few KiB
 * (the session allocates the rest after AUTH; with TLS, the pipe's fixed
 * buffers too: then at most TUN_TLS_MAX_HS), and only so many of those:
 * past max_handshakes in progress on this worker, or
 * max_handshakes_per_source from one address, a new connection is closed
 * at once, and each must finish within handshake_ms. Returns true when
 * <fd> (from <a>) may go on. */
bool tun_hs_admit(struct em_worker *w, const struct em_addr *a)
{
	struct em_tun_worker *t = w->tun;
	const struct em_config *cfg = em_worker_config();
	uint32_t max = cfg->tunnel.max_handshakes;
	uint32_t per_src = cfg->tunnel.max_handshakes_per_source;
	const char *why = NULL;
	/* A TLS pipe (about 120 KiB) exists from the accept on: fewer of
	 * them may wait for their handshake. */
	bool tls_cap = w->eng->tls_on && max > TUN_TLS_MAX_HS;
	if (tls_cap)
		max = TUN_TLS_MAX_HS;
	if (t->n_hs >= max)
		why = tls_cap ? "TLS handshakes in progress at their cap (128 a worker)"
		              : "handshakes in progress at tunnel.max_handshakes";
	else if (a->family && hs_from(t, a) >= per_src)
		why = "handshakes from this address at tunnel.max_handshakes_per_source";
	if (!why)
		return true;
	w->cnt[EM_C_T_HS_REFUSED]++;
	uint32_t quiet;
	if (tun_hs_log_ok(t, w->now_ms, &quiet)) {
		char as[EM_ADDR_STRLEN] = "?";
		if (a->family)
			em_addr_format(a, true, as, sizeof(as));
		EM_WARN("tunnel",
		        "worker %u: tunnel from %s closed at once: %s (%u) "
		        "(%u more handshake refusals and failures not logged)",
		        w->id, as, why, t->n_hs >= max ? max : per_src, quiet);
	}
	return false;
}

/* A cloud that signs certificates accepted <tc>: a TLS record (a
 * ClientHello: content type 22) starts TLS as on every other tunnel;
 * anything else is an edge without a certificate, whose tunnel runs in
 * clear for its certificate request only (TC_ENROLL). Returns false when
 * the tunnel is over. */
static bool tun_conn_sniff(struct em_worker *w, struct em_tconn *tc, uint8_t first)
{
	tc->flags &= ~TC_SNIFF;
	if (first != 22) {
		tc->flags |= TC_ENROLL;
		return true;
	}
	em_engine_tls_lifetime(w->eng, &tc->tls_half, &tc->tls_gen);
	tc->tls = em_engine_tls_pipe(w->eng, false, NULL);
	if (!tc->tls) {
		w->tun->dead(w, tc, "out of memory for TLS");
		return false;
	}
	return true;
}

static void on_trecv(struct em_worker *w, struct em_tconn *tc, int res, uint32_t cflags)
{
	if (res > 0) {
		uint16_t bid = (uint16_t)(cflags >> IORING_CQE_BUFFER_SHIFT);
		struct em_tun_worker *t = w->tun;
		if ((tc->flags & TC_SNIFF) && !(tc->flags & TC_DEAD))
			tun_conn_sniff(w, tc, *(const uint8_t *)em_bufring_buf(&t->rb, bid));
		if (!(tc->flags & TC_DEAD) && tc->tls) {
			tls_input(w, tc, (const uint8_t *)em_bufring_buf(&t->rb, bid), (size_t)res);
		} else if (!(tc->flags & TC_DEAD)) {
			t->cur_bid = bid;
			em_tunnel_session_input(tc->sess, em_bufring_buf(&t->rb, bid), (size_t)res,
			                        w->now_ms);
			t->cur_bid = EM_NO_BUF;
		}
		if (t->hold[bid].refs)
			t->hold[bid].held = true;
		else
			em_bufring_put(&t->rb, bid);
		tun_mark_dirty(w, tc);
		if (!(tc->flags & TC_RECV) && !(tc->flags & TC_DEAD))
			tun_conn_arm_recv(w, tc);
		return;
	}
	if (res == -ENOBUFS) {
		/* The buffers the recv filled came back as their CQEs were
		 * handled, but for at most TUN_HOLD_MAX held ones: the
		 * refill puts them in the ring before the re-arm. */
		w->cnt[EM_C_NOBUFS]++;
		em_bufring_dry(&w->tun->rb);
		em_bufring_refill(&w->tun->rb);
		if (!(tc->flags & (TC_RECV | TC_DEAD)))
			tun_conn_arm_recv(w, tc);
		return;
	}
	if (res == -ECANCELED)
		return; /* the tick re-arms */
	if (tc->flags & TC_DEAD)
		return;
	w->tun->dead(w, tc, res == 0 ? "peer closed the connection" : strerror(-res));
}

void em_tun_cqe(struct em_worker *w, void *p, enum em_op op, int res, uint32_t cflags)
{
	struct em_tconn *tc = p;
	if (op == EM_OP_TRECV && (cflags & IORING_CQE_F_BUFFER))
		em_bufring_taken(&w->tun->rb);
	if (op != EM_OP_TRECV || !(cflags & IORING_CQE_F_MORE)) {
		tc->inflight--;
		if (op == EM_OP_TRECV)
			tc->flags &= ~TC_RECV;
	}
	if (tc->flags & TC_CLOSING) {
		if (op == EM_OP_TRECV && (cflags & IORING_CQE_F_BUFFER))
			em_bufring_put(&w->tun->rb, (uint16_t)(cflags >> IORING_CQE_BUFFER_SHIFT));
		if (tc->inflight == 0) {
			w->tun->n_conns--;
			tun_conn_free(tc);
		}
		return;
	}
	switch (op) {
	case EM_OP_TRECV:
		on_trecv(w, tc, res, cflags);
		break;
	case EM_OP_TSEND:
		tc->flags &= ~TC_SEND;
		if (res < 0) {
			w->tun->dead(w, tc, strerror(-res));
			break;
		}
		if (tc->tls)
			em_tls_pipe_output_advance(tc->tls, (size_t)res);
		else
			em_tunnel_session_output_advance(tc->sess, (size_t)res);
		w->tun->sent(w, tc);
		tun_mark_dirty(w, tc);
		break;
	case EM_OP_TCONNECT:
		tc->flags &= ~TC_CONNECTING;
		if (res < 0) {
			struct tpeer *tp = tc->tp;
			bool first = tp && tp->fails++ == 0;
			if (first)
				w->tun->dead(w, tc,
				             res == -ECANCELED ? "connect timed out"
				                               : strerror(-res));
			else
				w->tun->dead(w, tc, NULL);
			break;
		}
		tun_conn_arm_recv(w, tc);
		tun_mark_dirty(w, tc);
		break;
	default:
		break;
	}
}

void em_tun_flush(struct em_worker *w)
{
	struct em_tun_worker *t = w->tun;
	em_bufring_refill(&t->rb);
	while (!em_dlist_empty(&t->dirty)) {
		struct em_tconn *tc = em_container_of(t->dirty.next, struct em_tconn, dnode);
		em_dlist_del(&tc->dnode);
		tc->flags &= ~TC_DIRTY;
		tun_conn_kick(w, tc);
	}
}

void em_tun_counters(const struct em_worker *w, uint64_t *v)
{
	const struct em_tun_worker *t = w->tun;
	if (!t)
		return;
	uint64_t up = 0, streams = 0;
	for (unsigned i = 0; i < EM_C__COUNT; i++)
		v[i] += t->retired[i];
	for (const struct em_dlist *n = t->conns.next; n != &t->conns; n = n->next) {
		const struct em_tconn *tc = em_container_of(n, struct em_tconn, node);
		if (tc->sess)
			stats_add(v, em_tunnel_session_stats(tc->sess));
		if ((tc->flags & TC_UP) && !(tc->flags & (TC_DEAD | TC_CLOSING))) {
			up++;
			streams += em_tunnel_session_streams(tc->sess);
		}
	}
	v[EM_C_T_UP] += up;
	v[EM_C_T_STREAMS] += streams;
	v[EM_C_T_HS_PENDING] += t->n_hs;
}

void em_tun_publish_peers(struct em_worker *w)
{
	struct em_tun_worker *t = w->tun;
	if (!t || (!t->n_ps && !t->n_conns))
		return;
	for (struct em_dlist *n = t->conns.next; n != &t->conns; n = n->next)
		peer_of(t, em_container_of(n, struct em_tconn, node));
	pthread_mutex_lock(&w->peers_mu);
	if (w->cap_peers < t->n_ps) {
		void *p = realloc(w->peers, t->cap_ps * sizeof(*w->peers));
		if (!p) {
			pthread_mutex_unlock(&w->peers_mu);
			return; /* the previous figures stay */
		}
		w->peers = p;
		w->cap_peers = t->cap_ps;
	}
	for (uint32_t i = 0; i < t->n_ps; i++) {
		struct em_peer_figures *f = &w->peers[i];
		f->rx_bytes = t->ps[i].rx_retired;
		f->tx_bytes = t->ps[i].tx_retired;
		f->up = f->up_tls = f->streams = 0;
		memcpy(f->name, t->ps[i].name, sizeof(f->name));
	}
	for (const struct em_dlist *n = t->conns.next; n != &t->conns; n = n->next) {
		const struct em_tconn *tc = em_container_of(n, struct em_tconn, node);
		if (tc->pidx < 0)
			continue;
		struct em_peer_figures *f = &w->peers[tc->pidx];
		const struct em_tunnel_stats *st = em_tunnel_session_stats(tc->sess);
		f->rx_bytes += st->bytes_in;
		f->tx_bytes += st->bytes_out;
		if ((tc->flags & TC_UP) && !(tc->flags & (TC_DEAD | TC_CLOSING))) {
			f->up++;
			f->up_tls += tc->tls != NULL;
			f->streams += em_tunnel_session_streams(tc->sess);
		}
	}
	w->n_peers = t->n_ps;
	pthread_mutex_unlock(&w->peers_mu);
}

bool em_tun_idle(const struct em_worker *w)
{
	return !w->tun || w->tun->n_conns == 0;
}

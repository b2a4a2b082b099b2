/* Tunnel session state machine; the policy is written up in PROTOCOL.md.
 *
 * Output is two rings of encoded frames. The send ring holds the frames
 * whose order relative to a stream's data matters (OPEN, DATA, FIN, RST);
 * the control ring holds the rest and is served first at every frame
 * boundary, so a PING or WINDOW_UPDATE never waits behind bulk data for more
 * than one output slice. Ring bytes never move: the slice handed out by
 * output() may sit in an SQE until output_advance().
 *
 * Input is parsed in place. DATA payload is streamed to the callback as it
 * arrives, so a frame is never reassembled; only a control frame split
 * across two reads is copied, into a buffer of EM_FRAME_MAX_CONTROL bytes. */
#include "tunnel/session.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#define SEND_SLICE_MAX (256u * 1024)
/* A DATA frame whose payload stays in the caller's memory (write_ref) sits
 * in the send ring as its header, with this flag set, followed by EXT_DESC
 * bytes: the payload's address and the caller's token. The flag never goes
 * on the wire: output() hands out a copy of the header without it. */
#define FLAG_EXT       0x8000u
#define EXT_DESC       16u
#define EXT_PER_OUTPUT 8u
/* A GOAWAY always fits in the control ring: other frames leave this free. */
#define GOAWAY_RESERVE (EM_FRAME_HEADER_LEN + 8 + EM_FRAME_MAX_TEXT)
/* Before AUTH succeeds the control ring is this buffer inside the session:
 * our HELLO, our AUTH and a GOAWAY are all it ever holds then. The stream
 * table, the send ring and the full control ring are allocated once the
 * peer proved it knows the key (see grow()), so that a connection that
 * never authenticates costs the size of the session and no more. */
#define HS_CTRL                                                                                    \
	(EM_FRAME_HEADER_LEN + EM_FRAME_HELLO_FIXED + EM_FRAME_MAX_NAME + EM_FRAME_HEADER_LEN +    \
	 EM_FRAME_MAC_LEN + GOAWAY_RESERVE)
/* Floor of the RTT used for window growth: the resolution of the clock
 * (1 ms from the callers' timestamps), or with conf.clock_us a LAN's RTT. */
#define MIN_RTT_US       1000u
#define MIN_RTT_US_CLOCK 50u
/* While streams are open, the RTT is sampled (a PING) this often. */
#define RTT_SAMPLE_MS 5000u

enum {
	ST_LOCAL_FIN = 1 << 0,      /* our FIN is queued or pending */
	ST_REMOTE_FIN = 1 << 1,     /* peer's FIN received */
	ST_FIN_PENDING = 1 << 2,    /* FIN waits for send ring room */
	ST_RST_PENDING = 1 << 3,    /* reset by us, RST waits for room */
	ST_UPDATE_PENDING = 1 << 4, /* WINDOW_UPDATE waits for control room */
	ST_REMOTE_OPENED = 1 << 5,
	ST_DATA_OUT = 1 << 6, /* we have written DATA bytes on it */
};
#define ST_PENDING (ST_FIN_PENDING | ST_RST_PENDING | ST_UPDATE_PENDING)

struct stream {
	uint32_t id; /* 0: free slot */
	uint32_t next_free;
	uint8_t flags;
	uint32_t rst_reason;
	void *user;
	uint64_t send_credit;
	uint32_t recv_window;
	uint32_t recv_credit;
	uint32_t unconsumed;
	uint32_t pending_update;
	uint64_t last_update_us;
	/* With conf.clock_us: bytes returned since meas_start_us, the interval
	 * (at least one RTT) over which the stream's rate is judged. */
	uint64_t meas_start_us, meas_bytes;
	uint64_t opened_ms;
};

struct ring {
	uint8_t *buf;
	uint32_t cap, head, used;
};

enum { SRC_NONE = 0, SRC_CTRL, SRC_SEND };

struct em_tunnel_session {
	struct em_tunnel_conf conf;
	char node_name[EM_FRAME_MAX_NAME + 1];
	char peer_expect[EM_FRAME_MAX_NAME + 1];
	char peer_name[EM_FRAME_MAX_NAME + 1];
	uint8_t *key;

	enum em_tunnel_state state;
	uint32_t close_reason;
	bool hello_in, goaway_out, discard_send;
	uint8_t nonce_local[EM_FRAME_NONCE_LEN], nonce_peer[EM_FRAME_NONCE_LEN];
	uint32_t peer_window, peer_max_data, peer_max_streams;

	struct ring ctrl, send;
	uint8_t hs_ctrl[HS_CTRL]; /* the control ring until grow() */
	uint8_t out_src;
	uint32_t out_left; /* wire bytes of the current output frame still to go */
	/* EXT frames (see FLAG_EXT): how many are queued, their payload bytes
	 * (counted against the send buffer like ring bytes), and the current
	 * output frame when it is one. */
	uint32_t n_ext;
	uint64_t ext_bytes;
	bool out_ext;
	const uint8_t *out_ext_p;
	uint64_t out_ext_token;
	uint8_t ext_hdr[EXT_PER_OUTPUT][EM_FRAME_HEADER_LEN];

	uint8_t hdr[EM_FRAME_HEADER_LEN];
	uint32_t hdr_have;
	bool hdr_done; /* <cur> parsed, control payload being collected */
	struct em_frame_header cur;
	uint32_t data_left;
	uint8_t ctl[EM_FRAME_MAX_CONTROL];
	uint32_t ctl_have;

	struct stream *pool;
	uint32_t pool_cap, free_head;
	uint32_t *idx; /* slot + 1, 0 = empty; linear probing */
	uint32_t mask;
	uint32_t n_local, n_remote;
	uint32_t next_id, max_remote_id, last_goaway_id;
	bool maybe_pending;
	uint64_t granted_total;
	uint64_t orphan_credit;

	uint64_t now, created, last_rx, interval_start;
	uint32_t cnt_pings, cnt_updates, cnt_empty, cnt_resets;
	bool ping_out;
	uint64_t ping_seq, ping_sent_ms, ping_sent_us;
	uint32_t srtt;    /* ms, as reported */
	uint64_t srtt_us; /* for window growth (see now_us) */

	struct em_tunnel_stats st;
};

/* Microseconds for window growth: the caller's clock when it gave one,
 * else the millisecond timestamps of its calls. */
static uint64_t now_us(const struct em_tunnel_session *s)
{
	return s->conf.clock_us ? s->conf.clock_us(s->conf.ctx) : s->now * 1000;
}

/* ---- rings ---- */

static uint32_t ring_free(const struct ring *r)
{
	return r->cap - r->used;
}

static void ring_put(struct ring *r, const void *data, uint32_t n)
{
	uint32_t tail = (r->head + r->used) % r->cap;
	uint32_t first = EM_MIN(n, r->cap - tail);
	memcpy(r->buf + tail, data, first);
	memcpy(r->buf, (const uint8_t *)data + first, n - first);
	r->used += n;
}

/* Copies <n> bytes at <off> past the head. */
static void ring_peek(const struct ring *r, uint32_t off, void *dst, uint32_t n)
{
	uint8_t *d = dst;
	for (uint32_t i = 0; i < n; i++)
		d[i] = r->buf[(r->head + off + i) % r->cap];
}

static uint32_t hdr_len(const uint8_t *h)
{
	return (uint32_t)h[8] << 24 | (uint32_t)h[9] << 16 | (uint32_t)h[10] << 8 | h[11];
}

static bool hdr_ext(const uint8_t *h)
{
	return ((uint32_t)h[2] << 8 | h[3]) & FLAG_EXT;
}

/* Wire length of the frame at <off> past the head, and whether it is EXT
 * (its ring footprint is then header + EXT_DESC). */
static uint32_t ring_frame_at(const struct ring *r, uint32_t off, bool *ext)
{
	uint8_t h[EM_FRAME_HEADER_LEN];
	ring_peek(r, off, h, sizeof(h));
	*ext = hdr_ext(h);
	return EM_FRAME_HEADER_LEN + hdr_len(h);
}

static void ring_skip(struct ring *r, uint32_t n)
{
	r->head = (r->head + n) % r->cap;
	r->used -= n;
	if (r->used == 0)
		r->head = 0;
}

static bool ctrl_put(struct em_tunnel_session *s, const void *frame, uint32_t n, bool goaway)
{
	uint32_t room = ring_free(&s->ctrl);
	if (!goaway)
		room = room > GOAWAY_RESERVE ? room - GOAWAY_RESERVE : 0;
	if (n > room)
		return false;
	ring_put(&s->ctrl, frame, n);
	s->st.ctrl_hwm = EM_MAX(s->st.ctrl_hwm, s->ctrl.used);
	return true;
}

/* Send ring room, EXT payloads counted as if they were in the ring. */
static uint32_t send_free(const struct em_tunnel_session *s)
{
	uint32_t f = ring_free(&s->send);
	return s->ext_bytes >= f ? 0 : f - (uint32_t)s->ext_bytes;
}

static bool send_put(struct em_tunnel_session *s, const void *frame, uint32_t n)
{
	if (n > send_free(s))
		return false;
	ring_put(&s->send, frame, n);
	s->st.send_hwm = EM_MAX(s->st.send_hwm, s->send.used);
	return true;
}

/* ---- stream table ---- */

static uint32_t home(const struct em_tunnel_session *s, uint32_t id)
{
	return (id * 0x9e3779b1u) & s->mask;
}

static uint32_t find_pos(const struct em_tunnel_session *s, uint32_t id)
{
	for (uint32_t i = home(s, id);; i = (i + 1) & s->mask) {
		uint32_t v = s->idx[i];
		if (v == 0 || s->pool[v - 1].id == id)
			return i;
	}
}

static struct stream *find_any(const struct em_tunnel_session *s, uint32_t id)
{
	if (!s->idx)
		return NULL; /* no table before the handshake */
	uint32_t v = s->idx[find_pos(s, id)];
	return v ? &s->pool[v - 1] : NULL;
}

/* A stream the application may still use: not reset by us. */
static struct stream *find_live(const struct em_tunnel_session *s, uint32_t id)
{
	struct stream *st = find_any(s, id);
	return st && !(st->flags & ST_RST_PENDING) ? st : NULL;
}

static bool own_parity(const struct em_tunnel_session *s, uint32_t id)
{
	return (id & 1) == (s->conf.role == EM_TUNNEL_DIALER ? 1u : 0u);
}

/* An id that was open once and is not any more, as opposed to one that was
 * never opened (a frame for it is a protocol error). */
static bool was_opened(const struct em_tunnel_session *s, uint32_t id)
{
	return own_parity(s, id) ? id < s->next_id : id <= s->max_remote_id;
}

static struct stream *stream_new(struct em_tunnel_session *s, uint32_t id, bool remote)
{
	if (s->free_head == UINT32_MAX)
		return NULL;
	uint32_t slot = s->free_head;
	struct stream *st = &s->pool[slot];
	s->free_head = st->next_free;
	memset(st, 0, sizeof(*st));
	st->id = id;
	st->flags = remote ? ST_REMOTE_OPENED : 0;
	st->send_credit = s->peer_window;
	st->recv_window = s->conf.initial_window;
	st->recv_credit = s->conf.initial_window;
	st->opened_ms = s->now;
	st->last_update_us = st->meas_start_us = now_us(s);
	st->meas_bytes = 0;
	s->idx[find_pos(s, id)] = slot + 1;
	s->granted_total += st->recv_window;
	if (remote)
		s->n_remote++;
	else
		s->n_local++;
	return st;
}

static void stream_free(struct em_tunnel_session *s, struct stream *st)
{
	uint32_t i = find_pos(s, st->id), j = i;
	for (;;) {
		j = (j + 1) & s->mask;
		uint32_t v = s->idx[j];
		if (!v)
			break;
		uint32_t k = home(s, s->pool[v - 1].id);
		/* Entries whose home lies cyclically in (i, j] stay put. */
		if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
			continue;
		s->idx[i] = v;
		i = j;
	}
	s->idx[i] = 0;
	s->granted_total -= st->recv_window;
	if (st->flags & ST_REMOTE_OPENED)
		s->n_remote--;
	else
		s->n_local--;
	st->id = 0;
	st->next_free = s->free_head;
	s->free_head = (uint32_t)(st - s->pool);
}

/* ---- events ---- */

static void emit(struct em_tunnel_session *s, struct em_tunnel_event *ev)
{
	if (s->conf.on_event)
		s->conf.on_event(s->conf.ctx, ev);
}

static void emit_simple(struct em_tunnel_session *s, enum em_tunnel_event_type type,
                        uint32_t reason, struct em_slice text)
{
	struct em_tunnel_event ev = {.type = type, .reason = reason, .data = text};
	emit(s, &ev);
}

/* ---- frame builders ---- */

static uint32_t build(const struct em_frame *f, uint8_t *buf, size_t cap)
{
	int n = em_frame_encode(f, buf, cap);
	return n > 0 ? (uint32_t)n : 0;
}

static struct em_slice text_slice(const char *text)
{
	if (!text)
		return (struct em_slice){"", 0};
	size_t n = strnlen(text, EM_FRAME_MAX_TEXT);
	for (size_t i = 0; i < n; i++)
		if ((uint8_t)text[i] < 0x20 || (uint8_t)text[i] > 0x7e)
			return (struct em_slice){text, i};
	return (struct em_slice){text, n};
}

static bool queue_goaway(struct em_tunnel_session *s, uint32_t reason, const char *text)
{
	uint8_t b[GOAWAY_RESERVE];
	struct em_frame f = {.type = EM_FRAME_GOAWAY};
	f.u.goaway.last_stream_id = s->max_remote_id;
	f.u.goaway.reason = reason;
	f.u.goaway.text = text_slice(text);
	uint32_t n = build(&f, b, sizeof(b));
	if (!n || !ctrl_put(s, b, n, true))
		return false;
	s->goaway_out = true;
	s->last_goaway_id = s->max_remote_id;
	s->st.goaway_reason_out = reason;
	return true;
}

static bool queue_rst(struct em_tunnel_session *s, uint32_t id, uint32_t reason, const char *text)
{
	uint8_t b[EM_FRAME_HEADER_LEN + 4 + EM_FRAME_MAX_TEXT];
	struct em_frame f = {.type = EM_FRAME_RST, .stream_id = id};
	f.u.rst.reason = reason;
	f.u.rst.text = text_slice(text);
	uint32_t n = build(&f, b, sizeof(b));
	if (!n || !send_put(s, b, n))
		return false;
	s->st.resets_out++;
	return true;
}

static bool queue_fin(struct em_tunnel_session *s, uint32_t id)
{
	uint8_t b[EM_FRAME_HEADER_LEN];
	em_frame_write_header(b, EM_FRAME_DATA, EM_FRAME_FLAG_FIN, id, 0);
	return send_put(s, b, sizeof(b));
}

static bool queue_ping(struct em_tunnel_session *s, bool ack, const uint8_t *opaque)
{
	uint8_t b[EM_FRAME_HEADER_LEN + EM_FRAME_PING_LEN];
	em_frame_write_header(b, EM_FRAME_PING, ack ? EM_FRAME_FLAG_ACK : 0, 0, EM_FRAME_PING_LEN);
	memcpy(b + EM_FRAME_HEADER_LEN, opaque, EM_FRAME_PING_LEN);
	return ctrl_put(s, b, sizeof(b), false);
}

static bool queue_update(struct em_tunnel_session *s, uint32_t id, uint32_t inc)
{
	uint8_t b[EM_FRAME_HEADER_LEN + 4];
	em_frame_write_header(b, EM_FRAME_WINDOW_UPDATE, 0, id, 4);
	b[12] = (uint8_t)(inc >> 24);
	b[13] = (uint8_t)(inc >> 16);
	b[14] = (uint8_t)(inc >> 8);
	b[15] = (uint8_t)inc;
	return ctrl_put(s, b, sizeof(b), false);
}

static int send_ping(struct em_tunnel_session *s)
{
	uint8_t op[EM_FRAME_PING_LEN];
	uint64_t seq = ++s->ping_seq;
	for (int i = 0; i < 8; i++)
		op[i] = (uint8_t)(seq >> (56 - 8 * i));
	if (!queue_ping(s, false, op))
		return -ENOBUFS;
	s->ping_out = true;
	s->ping_sent_ms = s->now;
	s->ping_sent_us = now_us(s);
	return 0;
}

/* ---- flow control ---- */

/* Returns consumed bytes to the peer once half the window is free. The
 * window doubles when the peer used that half within two smoothed RTTs of the
 * previous update: the sender is then limited by the window, not by the
 * link or by our reader, so the window is below the bandwidth-delay product.
 * Growth stops at max_window per stream and at tunnel_window for the sum of
 * all windows; initial windows are always granted, so a stream never gets
 * less than that because its siblings grew. */
static void maybe_update(struct em_tunnel_session *s, struct stream *st)
{
	if ((st->flags & (ST_REMOTE_FIN | ST_RST_PENDING)) ||
	    st->pending_update < st->recv_window / 2) {
		st->flags &= (uint8_t)~ST_UPDATE_PENDING;
		return;
	}
	uint32_t delta = 0;
	uint64_t t = now_us(s);
	bool limited, judged = false;
	if (s->conf.clock_us) {
		/* Judged over at least one RTT, so that a burst of returns (one
		 * large send completing) does not look like a fast stream: the
		 * window is the limit while the rate reaches half of W / RTT,
		 * so W settles near twice the bandwidth-delay product. */
		uint64_t rtt = EM_MAX(s->srtt_us, MIN_RTT_US_CLOCK);
		uint64_t el = t - st->meas_start_us;
		uint64_t bytes = st->meas_bytes + st->pending_update;
		judged = el >= rtt;
		limited = judged && bytes * rtt * 2 >= (uint64_t)st->recv_window * el;
	} else {
		limited = t - st->last_update_us < 2 * EM_MAX(s->srtt_us, MIN_RTT_US);
	}
	if (limited && st->recv_window < s->conf.max_window) {
		uint32_t w = (uint32_t)EM_MIN((uint64_t)st->recv_window * 2, s->conf.max_window);
		if (s->granted_total + (w - st->recv_window) <= s->conf.tunnel_window)
			delta = w - st->recv_window;
	}
	uint32_t inc = st->pending_update + delta;
	if (!queue_update(s, st->id, inc)) {
		st->flags |= ST_UPDATE_PENDING;
		s->maybe_pending = true;
		return;
	}
	st->flags &= (uint8_t)~ST_UPDATE_PENDING;
	if (delta) {
		st->recv_window += delta;
		s->granted_total += delta;
		s->st.windows_grown++;
	}
	st->recv_credit += inc;
	st->pending_update = 0;
	st->last_update_us = t;
	if (judged) {
		st->meas_start_us = t;
		st->meas_bytes = 0;
	} else {
		st->meas_bytes += inc - delta;
	}
}

/* Both directions finished: nothing more can arrive or leave. */
static void maybe_retire(struct em_tunnel_session *s, struct stream *st)
{
	if ((st->flags & (ST_LOCAL_FIN | ST_REMOTE_FIN)) == (ST_LOCAL_FIN | ST_REMOTE_FIN) &&
	    !(st->flags & ST_FIN_PENDING))
		stream_free(s, st);
}

/* Queues what waited for ring room: RSTs first (they free slots), then FINs
 * and WINDOW_UPDATEs. Runs only while something is pending. */
static void flush_pending(struct em_tunnel_session *s)
{
	if (!s->maybe_pending || s->state == EM_TUNNEL_CLOSED)
		return;
	bool left = false;
	for (uint32_t i = 0; i < s->pool_cap; i++) {
		struct stream *st = &s->pool[i];
		if (!st->id || !(st->flags & ST_PENDING))
			continue;
		if (st->flags & ST_RST_PENDING) {
			if (queue_rst(s, st->id, st->rst_reason, NULL))
				stream_free(s, st);
			else
				left = true;
			continue;
		}
		if (st->flags & ST_FIN_PENDING) {
			if (queue_fin(s, st->id)) {
				st->flags &= (uint8_t)~ST_FIN_PENDING;
				if (!(st->flags & ST_UPDATE_PENDING)) {
					maybe_retire(s, st);
					continue;
				}
			} else {
				left = true;
			}
		}
		if (st->flags & ST_UPDATE_PENDING) {
			maybe_update(s, st);
			if (st->flags & ST_UPDATE_PENDING)
				left = true;
			else
				maybe_retire(s, st);
		}
	}
	s->maybe_pending = left;
}

/* ---- closing ---- */

static void count_reason(struct em_tunnel_session *s, uint32_t reason)
{
	switch (reason) {
	case EM_REASON_TOO_MANY_STREAMS:
		s->st.limit_streams++;
		break;
	case EM_REASON_PING_FLOOD:
		s->st.limit_pings++;
		break;
	case EM_REASON_WINDOW_UPDATE_FLOOD:
		s->st.limit_window_updates++;
		break;
	case EM_REASON_EMPTY_DATA_FLOOD:
		s->st.limit_empty_data++;
		break;
	case EM_REASON_RESET_FLOOD:
		s->st.limit_resets++;
		break;
	case EM_REASON_FLOW_CONTROL:
		s->st.limit_flow_control++;
		break;
	case EM_REASON_AUTH_FAILED:
		s->st.auth_failures++;
		break;
	case EM_REASON_UNKNOWN_NODE:
		s->st.unknown_nodes++;
		break;
	case EM_REASON_TIMEOUT:
		s->st.timeouts++;
		break;
	case EM_REASON_PROTOCOL:
	case EM_REASON_STREAM_CLOSED:
	case EM_REASON_VERSION:
	case EM_REASON_FRAME_SIZE:
		s->st.protocol_errors++;
		break;
	}
}

/* Ends the session: optional GOAWAY, RESET for every live stream, then
 * HANDSHAKE_FAILED (if it never opened) and CLOSED. */
static void die(struct em_tunnel_session *s, uint32_t reason, const char *text, bool goaway)
{
	if (s->state == EM_TUNNEL_CLOSED)
		return;
	bool handshake = s->state == EM_TUNNEL_HANDSHAKE;
	s->state = EM_TUNNEL_CLOSED;
	s->close_reason = reason;
	s->discard_send = reason != EM_REASON_NO_ERROR;
	if (goaway) {
		/* Only limits and checks of this side count; a peer's GOAWAY
		 * is recorded in goaway_reason_in. */
		count_reason(s, reason);
		queue_goaway(s, reason, text);
	}

	struct em_slice t = text_slice(text);
	for (uint32_t i = 0; i < s->pool_cap; i++) {
		struct stream *st = &s->pool[i];
		if (!st->id)
			continue;
		bool live = !(st->flags & ST_RST_PENDING);
		struct em_tunnel_event ev = {.type = EM_TUNNEL_EV_RESET,
		                             .stream_id = st->id,
		                             .stream_user = st->user,
		                             .reason = reason,
		                             .data = t};
		stream_free(s, st);
		if (live)
			emit(s, &ev);
	}
	if (handshake)
		emit_simple(s, EM_TUNNEL_EV_HANDSHAKE_FAILED, reason, t);
	emit_simple(s, EM_TUNNEL_EV_CLOSED, reason, t);
}

static void maybe_drained(struct em_tunnel_session *s)
{
	if (s->state == EM_TUNNEL_DRAINING && s->n_local + s->n_remote == 0)
		die(s, EM_REASON_NO_ERROR, NULL, false);
}

/* ---- handshake ---- */

static void auth_mac(const struct em_tunnel_session *s, uint8_t author,
                     uint8_t out[EM_FRAME_MAC_LEN])
{
	uint8_t msg[12 + 1 + 2 * EM_FRAME_NONCE_LEN + 2 * (1 + EM_FRAME_MAX_NAME)];
	bool dialer = s->conf.role == EM_TUNNEL_DIALER;
	const char *nd = dialer ? s->node_name : s->peer_name;
	const char *na = dialer ? s->peer_name : s->node_name;
	size_t ld = strlen(nd), la = strlen(na), n = 0;

	memcpy(msg, "em-tunnel-v1", 12);
	n = 12;
	msg[n++] = author;
	memcpy(msg + n, dialer ? s->nonce_local : s->nonce_peer, EM_FRAME_NONCE_LEN);
	n += EM_FRAME_NONCE_LEN;
	memcpy(msg + n, dialer ? s->nonce_peer : s->nonce_local, EM_FRAME_NONCE_LEN);
	n += EM_FRAME_NONCE_LEN;
	msg[n++] = (uint8_t)ld;
	memcpy(msg + n, nd, ld);
	n += ld;
	msg[n++] = (uint8_t)la;
	memcpy(msg + n, na, la);
	n += la;

	unsigned int outlen = EM_FRAME_MAC_LEN;
	if (!HMAC(EVP_sha256(), s->key, (int)s->conf.key_len, msg, n, out, &outlen))
		memset(out, 0, EM_FRAME_MAC_LEN); /* never matches a real MAC */
}

static void on_hello(struct em_tunnel_session *s, const struct em_frame_hello *h)
{
	if (s->hello_in || h->role == (uint8_t)s->conf.role) {
		die(s, EM_REASON_PROTOCOL, "unexpected hello", true);
		return;
	}
	memcpy(s->peer_name, h->name.base, h->name.len);
	s->peer_name[h->name.len] = 0;
	s->hello_in = true;
	if ((s->peer_expect[0] && strcmp(s->peer_expect, s->peer_name) != 0) ||
	    (s->conf.allow_node && !s->conf.allow_node(s->conf.ctx, h->name))) {
		die(s, EM_REASON_UNKNOWN_NODE, "unknown node", true);
		return;
	}
	s->peer_window = h->initial_window;
	s->peer_max_data = h->max_data;
	s->peer_max_streams = h->max_streams;
	memcpy(s->nonce_peer, h->nonce, EM_FRAME_NONCE_LEN);

	uint8_t b[EM_FRAME_HEADER_LEN + EM_FRAME_MAC_LEN];
	em_frame_write_header(b, EM_FRAME_AUTH, 0, 0, EM_FRAME_MAC_LEN);
	auth_mac(s, (uint8_t)s->conf.role, b + EM_FRAME_HEADER_LEN);
	if (!ctrl_put(s, b, sizeof(b), false))
		die(s, EM_REASON_INTERNAL, "control queue full", true);
}

/* The peer is authenticated: the stream table and the full rings. The
 * control bytes not yet sent move to the new ring in order; a slice of them
 * that output() already handed out still points into hs_ctrl, which is
 * never written again and lives as long as the session, so it stays valid
 * and unchanged as output() promises. Returns 0 or -ENOMEM (nothing
 * changed then). */
static int grow(struct em_tunnel_session *s)
{
	const struct em_tunnel_conf *c = &s->conf;
	uint32_t pool_cap = 2 * c->max_streams, hsize = 4;
	while (hsize < 2 * pool_cap)
		hsize *= 2;
	struct stream *pool = calloc(pool_cap, sizeof(*pool));
	uint32_t *idx = calloc(hsize, sizeof(*idx));
	uint8_t *cbuf = malloc(c->ctrl_buffer);
	uint8_t *sbuf = malloc(c->send_buffer);
	if (!pool || !idx || !cbuf || !sbuf) {
		free(pool);
		free(idx);
		free(cbuf);
		free(sbuf);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < pool_cap; i++)
		pool[i].next_free = i + 1 < pool_cap ? i + 1 : UINT32_MAX;
	s->pool = pool;
	s->pool_cap = pool_cap;
	s->free_head = 0;
	s->idx = idx;
	s->mask = hsize - 1;
	ring_peek(&s->ctrl, 0, cbuf, s->ctrl.used);
	s->ctrl =
	        (struct ring){.buf = cbuf, .cap = c->ctrl_buffer, .head = 0, .used = s->ctrl.used};
	s->send = (struct ring){.buf = sbuf, .cap = c->send_buffer};
	return 0;
}

static void on_auth(struct em_tunnel_session *s, const uint8_t *mac)
{
	uint8_t want[EM_FRAME_MAC_LEN];
	if (!s->hello_in) {
		die(s, EM_REASON_PROTOCOL, "auth before hello", true);
		return;
	}
	auth_mac(s,
	         s->conf.role == EM_TUNNEL_DIALER ? EM_FRAME_ROLE_ACCEPTOR : EM_FRAME_ROLE_DIALER,
	         want);
	if (CRYPTO_memcmp(want, mac, EM_FRAME_MAC_LEN) != 0) {
		die(s, EM_REASON_AUTH_FAILED, "authentication failed", true);
		return;
	}
	if (grow(s) < 0) {
		die(s, EM_REASON_INTERNAL, "out of memory", true);
		return;
	}
	s->state = EM_TUNNEL_OPEN;
	send_ping(s); /* first RTT sample for window growth */
	struct em_tunnel_event ev = {.type = EM_TUNNEL_EV_HANDSHAKE_DONE,
	                             .data = {s->peer_name, strlen(s->peer_name)}};
	emit(s, &ev);
}

/* ---- input ---- */

static void roll_interval(struct em_tunnel_session *s)
{
	if (s->now - s->interval_start >= s->conf.limit_interval_ms) {
		s->interval_start = s->now;
		s->cnt_pings = s->cnt_updates = s->cnt_empty = s->cnt_resets = 0;
	}
}

static bool over(struct em_tunnel_session *s, uint32_t *cnt, uint32_t max, uint32_t reason,
                 const char *text)
{
	if (++*cnt <= max)
		return false;
	die(s, reason, text, true);
	return true;
}

static void begin_data(struct em_tunnel_session *s)
{
	const struct em_frame_header *h = &s->cur;
	struct stream *st = find_live(s, h->stream_id);

	if (s->state == EM_TUNNEL_HANDSHAKE) {
		die(s, EM_REASON_PROTOCOL, "data before handshake", true);
		return;
	}
	if (h->length == 0 && !(h->flags & EM_FRAME_FLAG_FIN)) {
		s->st.empty_data_in++;
		if (over(s, &s->cnt_empty, s->conf.max_empty_data, EM_REASON_EMPTY_DATA_FLOOD,
		         "empty data flood"))
			return;
	}
	if (st) {
		if (st->flags & ST_REMOTE_FIN) {
			die(s, EM_REASON_STREAM_CLOSED, "data after fin", true);
			return;
		}
		if (h->length > st->recv_credit) {
			die(s, EM_REASON_FLOW_CONTROL, "data beyond window", true);
			return;
		}
		st->recv_credit -= h->length;
		st->unconsumed += h->length;
	} else {
		if (!was_opened(s, h->stream_id)) {
			die(s, EM_REASON_PROTOCOL, "data on unopened stream", true);
			return;
		}
		/* In flight before our RST reached the peer: bounded by the
		 * credit those streams had left. */
		if (h->length > s->orphan_credit) {
			die(s, EM_REASON_FLOW_CONTROL, "data beyond window", true);
			return;
		}
		s->orphan_credit -= h->length;
		s->st.discarded_in += h->length;
	}
	s->data_left = h->length;
}

static void data_chunk(struct em_tunnel_session *s, const uint8_t *p, uint32_t n)
{
	struct stream *st = find_live(s, s->cur.stream_id);
	if (!st)
		return;
	s->st.data_in += n;
	struct em_tunnel_event ev = {.type = EM_TUNNEL_EV_DATA,
	                             .stream_id = st->id,
	                             .stream_user = st->user,
	                             .data = {(const char *)p, n}};
	emit(s, &ev);
}

static void end_data(struct em_tunnel_session *s)
{
	if (!(s->cur.flags & EM_FRAME_FLAG_FIN))
		return;
	struct stream *st = find_live(s, s->cur.stream_id);
	if (!st)
		return;
	st->flags |= ST_REMOTE_FIN;
	struct em_tunnel_event ev = {
	        .type = EM_TUNNEL_EV_FIN, .stream_id = st->id, .stream_user = st->user};
	uint32_t id = st->id;
	emit(s, &ev);
	st = find_live(s, id);
	if (st)
		maybe_retire(s, st);
	maybe_drained(s);
}

static void on_open(struct em_tunnel_session *s, const struct em_frame *f)
{
	uint32_t id = f->stream_id;
	if (own_parity(s, id) || id <= s->max_remote_id) {
		die(s, EM_REASON_PROTOCOL, "bad stream id", true);
		return;
	}
	s->max_remote_id = id;
	if (s->n_remote >= s->conf.max_streams) {
		die(s, EM_REASON_TOO_MANY_STREAMS, "too many streams", true);
		return;
	}
	struct stream *st = stream_new(s, id, true);
	if (!st) {
		die(s, EM_REASON_INTERNAL, "stream table full", true);
		return;
	}
	s->st.streams_opened_remote++;
	if (s->goaway_out) {
		em_tunnel_session_reset(s, id, EM_REASON_REFUSED, "going away");
		return;
	}
	struct em_tunnel_event ev = {
	        .type = EM_TUNNEL_EV_STREAM_OPEN, .stream_id = id, .target = &f->u.open};
	emit(s, &ev);
}

static void on_rst(struct em_tunnel_session *s, const struct em_frame *f)
{
	struct stream *st = find_any(s, f->stream_id);
	if (!st) {
		if (!was_opened(s, f->stream_id))
			die(s, EM_REASON_PROTOCOL, "reset of unopened stream", true);
		return;
	}
	if (st->flags & ST_RST_PENDING) {
		/* Both sides reset: ours need not go out any more. */
		stream_free(s, st);
		maybe_drained(s);
		return;
	}
	s->st.resets_in++;
	/* Open-then-reset churn is what costs the receiver (a connect per OPEN
	 * with no use): only streams reset within EM_TUNNEL_CHURN_MS of their
	 * OPEN, before we wrote them a byte, count. A client closing many
	 * long-lived streams at once is no flood, nor are clients that give
	 * up on streams already answering (a reset then costs the opener a
	 * round trip per stream, and concurrency bounds it). */
	if ((st->flags & (ST_REMOTE_OPENED | ST_DATA_OUT)) == ST_REMOTE_OPENED &&
	    s->now - st->opened_ms < EM_TUNNEL_CHURN_MS &&
	    over(s, &s->cnt_resets, s->conf.max_resets, EM_REASON_RESET_FLOOD, "reset flood"))
		return;
	struct em_tunnel_event ev = {.type = EM_TUNNEL_EV_RESET,
	                             .stream_id = st->id,
	                             .stream_user = st->user,
	                             .reason = f->u.rst.reason,
	                             .data = f->u.rst.text};
	stream_free(s, st);
	emit(s, &ev);
	maybe_drained(s);
}

static void on_window_update(struct em_tunnel_session *s, const struct em_frame *f)
{
	s->st.window_updates_in++;
	if (over(s, &s->cnt_updates, s->conf.max_window_updates, EM_REASON_WINDOW_UPDATE_FLOOD,
	         "window update flood"))
		return;
	struct stream *st = find_live(s, f->stream_id);
	if (!st) {
		if (!was_opened(s, f->stream_id))
			die(s, EM_REASON_PROTOCOL, "window update of unopened stream", true);
		return;
	}
	st->send_credit += f->u.increment;
	if (st->send_credit > EM_FRAME_MAX_WINDOW) {
		die(s, EM_REASON_FLOW_CONTROL, "window overflow", true);
		return;
	}
	if (st->flags & ST_LOCAL_FIN)
		return;
	struct em_tunnel_event ev = {.type = EM_TUNNEL_EV_WINDOW,
	                             .stream_id = st->id,
	                             .stream_user = st->user,
	                             .credit = st->send_credit};
	emit(s, &ev);
}

static void on_ping(struct em_tunnel_session *s, const struct em_frame *f)
{
	if (!(f->flags & EM_FRAME_FLAG_ACK)) {
		s->st.pings_in++;
		if (over(s, &s->cnt_pings, s->conf.max_pings, EM_REASON_PING_FLOOD, "ping flood"))
			return;
		if (!queue_ping(s, true, f->u.opaque)) {
			/* The peer asks faster than it reads our answers. */
			s->st.limit_ctrl_queue++;
			die(s, EM_REASON_PING_FLOOD, "control queue full", true);
		}
		return;
	}
	s->st.pongs_in++;
	uint64_t seq = 0;
	for (int i = 0; i < 8; i++)
		seq = seq << 8 | f->u.opaque[i];
	if (!s->ping_out || seq != s->ping_seq)
		return;
	s->ping_out = false;
	uint32_t sample = (uint32_t)EM_MIN(s->now - s->ping_sent_ms, UINT32_MAX / 8);
	s->srtt = s->st.pongs_in == 1 ? sample : (7 * s->srtt + sample) / 8;
	uint64_t sample_us = now_us(s) - s->ping_sent_us;
	s->srtt_us = s->st.pongs_in == 1 ? sample_us : (7 * s->srtt_us + sample_us) / 8;
	struct em_tunnel_event ev = {.type = EM_TUNNEL_EV_PONG, .credit = sample};
	emit(s, &ev);
}

static void on_goaway(struct em_tunnel_session *s, const struct em_frame *f)
{
	uint32_t reason = f->u.goaway.reason;
	s->st.goaway_reason_in = reason;
	if (reason != EM_REASON_NO_ERROR || s->state == EM_TUNNEL_HANDSHAKE) {
		struct em_tunnel_event ev = {.type = EM_TUNNEL_EV_GOAWAY,
		                             .reason = reason,
		                             .last_stream_id = f->u.goaway.last_stream_id,
		                             .data = f->u.goaway.text};
		emit(s, &ev);
		/* The peer's text is only valid here: the close reports its code. */
		die(s, reason ? reason : EM_REASON_INTERNAL, "peer went away", false);
		return;
	}
	s->state = EM_TUNNEL_DRAINING;
	/* Streams we opened that the peer never saw will not be served. */
	for (uint32_t i = 0; i < s->pool_cap; i++) {
		struct stream *st = &s->pool[i];
		if (!st->id || !own_parity(s, st->id) || st->id <= f->u.goaway.last_stream_id)
			continue;
		bool live = !(st->flags & ST_RST_PENDING);
		struct em_tunnel_event ev = {.type = EM_TUNNEL_EV_RESET,
		                             .stream_id = st->id,
		                             .stream_user = st->user,
		                             .reason = EM_REASON_REFUSED};
		stream_free(s, st);
		if (live)
			emit(s, &ev);
	}
	struct em_tunnel_event ev = {.type = EM_TUNNEL_EV_GOAWAY,
	                             .reason = reason,
	                             .last_stream_id = f->u.goaway.last_stream_id,
	                             .data = f->u.goaway.text};
	emit(s, &ev);
	maybe_drained(s);
}

static void on_control(struct em_tunnel_session *s, const struct em_frame *f)
{
	if (s->state == EM_TUNNEL_HANDSHAKE) {
		switch (f->type) {
		case EM_FRAME_HELLO:
			on_hello(s, &f->u.hello);
			return;
		case EM_FRAME_AUTH:
			on_auth(s, f->u.mac);
			return;
		case EM_FRAME_GOAWAY:
			on_goaway(s, f);
			return;
		default:
			die(s, EM_REASON_PROTOCOL, "frame before handshake", true);
			return;
		}
	}
	switch (f->type) {
	case EM_FRAME_WINDOW_UPDATE:
		on_window_update(s, f);
		return;
	case EM_FRAME_PING:
		on_ping(s, f);
		return;
	case EM_FRAME_GOAWAY:
		on_goaway(s, f);
		return;
	case EM_FRAME_OPEN:
		on_open(s, f);
		return;
	case EM_FRAME_RST:
		on_rst(s, f);
		return;
	default:
		die(s, EM_REASON_PROTOCOL, "unexpected frame", true);
		return;
	}
}

int em_tunnel_session_input(struct em_tunnel_session *s, const void *buf, size_t len,
                            uint64_t now_ms)
{
	const uint8_t *p = buf;

	if (s->state == EM_TUNNEL_CLOSED)
		return -EPROTO;
	s->now = now_ms;
	if (len)
		s->last_rx = now_ms;
	roll_interval(s);
	s->st.bytes_in += len;

	while (len && s->state != EM_TUNNEL_CLOSED) {
		if (s->data_left) {
			uint32_t n = (uint32_t)EM_MIN(len, s->data_left);
			s->data_left -= n;
			data_chunk(s, p, n);
			p += n;
			len -= n;
			if (!s->data_left)
				end_data(s);
			continue;
		}
		if (!s->hdr_done) {
			uint32_t n = (uint32_t)EM_MIN(len, EM_FRAME_HEADER_LEN - s->hdr_have);
			memcpy(s->hdr + s->hdr_have, p, n);
			s->hdr_have += n;
			p += n;
			len -= n;
			if (s->hdr_have < EM_FRAME_HEADER_LEN)
				continue;
			s->hdr_have = 0;
			if (em_frame_decode_header(s->hdr, EM_FRAME_HEADER_LEN, s->conf.max_frame,
			                           &s->cur) < 0) {
				if (s->hdr[0] != EM_FRAME_VERSION)
					die(s, EM_REASON_VERSION, "unsupported version", true);
				else if (s->hdr[1] == EM_FRAME_DATA)
					die(s, EM_REASON_FRAME_SIZE, "bad data header", true);
				else
					die(s, EM_REASON_PROTOCOL, "bad frame header", true);
				break;
			}
			s->st.frames_in++;
			if (s->cur.type == EM_FRAME_DATA) {
				begin_data(s);
				if (s->state != EM_TUNNEL_CLOSED && !s->data_left)
					end_data(s);
				continue;
			}
			s->hdr_done = true;
			s->ctl_have = 0;
		}
		const uint8_t *payload;
		uint32_t need = s->cur.length;
		if (s->ctl_have == 0 && len >= need) {
			payload = p;
			p += need;
			len -= need;
		} else {
			uint32_t n = (uint32_t)EM_MIN(len, need - s->ctl_have);
			memcpy(s->ctl + s->ctl_have, p, n);
			s->ctl_have += n;
			p += n;
			len -= n;
			if (s->ctl_have < need)
				continue;
			payload = s->ctl;
			s->ctl_have = 0;
		}
		s->hdr_done = false;
		struct em_frame f;
		if (em_frame_decode_payload(&s->cur, payload, &f) < 0) {
			die(s, EM_REASON_PROTOCOL, "bad frame payload", true);
			break;
		}
		on_control(s, &f);
	}
	return 0;
}

/* ---- output ---- */

/* Starts the output frame at the head of <r>. */
static void start_frame(struct em_tunnel_session *s, const struct ring *r)
{
	bool ext;
	s->out_left = ring_frame_at(r, 0, &ext);
	s->out_ext = ext;
	if (ext) {
		uint8_t d[EXT_DESC];
		ring_peek(r, EM_FRAME_HEADER_LEN, d, sizeof(d));
		memcpy(&s->out_ext_p, d, sizeof(s->out_ext_p));
		memcpy(&s->out_ext_token, d + 8, sizeof(s->out_ext_token));
	}
}

/* Appends ring bytes [off, off + len) of <r> to <iov>, merged with the last
 * entry when contiguous. Returns the bytes added (less when <max> is hit). */
static uint32_t add_ring(const struct ring *r, uint32_t off, uint32_t len, struct iovec *iov,
                         unsigned *n, unsigned max)
{
	uint32_t added = 0;
	while (added < len) {
		uint32_t pos = (r->head + off + added) % r->cap;
		uint32_t k = EM_MIN(len - added, r->cap - pos);
		uint8_t *p = r->buf + pos;
		if (*n && (uint8_t *)iov[*n - 1].iov_base + iov[*n - 1].iov_len == p) {
			iov[*n - 1].iov_len += k;
		} else {
			if (*n == max)
				break;
			iov[(*n)++] = (struct iovec){p, k};
		}
		added += k;
	}
	return added;
}

/* The send ring's next bytes: frames from the current one on, up to about
 * SEND_SLICE_MAX bytes (only the current frame once the session failed). */
static unsigned output_send(struct em_tunnel_session *s, struct iovec *iov, unsigned max)
{
	const struct ring *r = &s->send;
	uint32_t budget = s->discard_send ? s->out_left : EM_MAX(SEND_SLICE_MAX, s->out_left);
	uint32_t off = 0, total = 0;
	unsigned n = 0, hx = 0;
	while (off < r->used && total < budget && n < max) {
		bool cur = off == 0, ext;
		uint32_t wire = cur ? s->out_left : ring_frame_at(r, off, &ext);
		if (cur)
			ext = s->out_ext;
		if (!ext) {
			/* A partly sent frame starts at the head: the ring moves
			 * along with output_advance(). */
			uint32_t k = add_ring(r, off, wire, iov, &n, max);
			total += k;
			if (k < wire)
				break;
			off += wire;
		} else {
			uint8_t h[EM_FRAME_HEADER_LEN], d[EXT_DESC];
			ring_peek(r, off, h, sizeof(h));
			ring_peek(r, off + EM_FRAME_HEADER_LEN, d, sizeof(d));
			uint32_t len = hdr_len(h);
			uint32_t done = EM_FRAME_HEADER_LEN + len - (cur ? s->out_left : wire);
			if (hx == EXT_PER_OUTPUT || n + 2 > max)
				break;
			uint8_t *hc = s->ext_hdr[hx++];
			memcpy(hc, h, sizeof(h));
			hc[2] &= (uint8_t) ~(FLAG_EXT >> 8);
			if (done < EM_FRAME_HEADER_LEN)
				iov[n++] = (struct iovec){hc + done, EM_FRAME_HEADER_LEN - done};
			const uint8_t *p;
			memcpy(&p, d, sizeof(p));
			uint32_t pdone =
			        done > EM_FRAME_HEADER_LEN ? done - EM_FRAME_HEADER_LEN : 0;
			if (len > pdone)
				iov[n++] =
				        (struct iovec){(void *)(uintptr_t)(p + pdone), len - pdone};
			total += EM_FRAME_HEADER_LEN + len - done;
			off += EM_FRAME_HEADER_LEN + EXT_DESC;
		}
		if (s->discard_send)
			break;
	}
	return n;
}

unsigned em_tunnel_session_output_iov(struct em_tunnel_session *s, struct iovec *iov, unsigned max)
{
	if (max == 0)
		return 0;
	if (s->out_left == 0) {
		if (s->ctrl.used)
			s->out_src = SRC_CTRL;
		else if (s->send.used && !s->discard_send)
			s->out_src = SRC_SEND;
		else
			return 0;
		start_frame(s, s->out_src == SRC_CTRL ? &s->ctrl : &s->send);
	}
	if (s->out_src == SRC_SEND)
		return output_send(s, iov, max);
	const struct ring *r = &s->ctrl;
	iov[0] = (struct iovec){r->buf + r->head, EM_MIN(r->used, r->cap - r->head)};
	return 1;
}

struct em_slice em_tunnel_session_output(struct em_tunnel_session *s)
{
	struct iovec v;
	if (em_tunnel_session_output_iov(s, &v, 1) == 0)
		return (struct em_slice){NULL, 0};
	return (struct em_slice){v.iov_base, v.iov_len};
}

/* The EXT frame at the head of the send ring is done with: its payload goes
 * back to the caller. */
static void ext_done(struct em_tunnel_session *s, uint32_t len, uint64_t token)
{
	ring_skip(&s->send, EM_FRAME_HEADER_LEN + EXT_DESC);
	s->n_ext--;
	s->ext_bytes -= len;
	if (s->conf.on_release)
		s->conf.on_release(s->conf.ctx, token);
}

void em_tunnel_session_output_advance(struct em_tunnel_session *s, size_t n)
{
	struct ring *r = s->out_src == SRC_CTRL ? &s->ctrl : &s->send;
	if (s->out_src == SRC_NONE)
		return;
	size_t n0 = n;
	while (n && (s->out_left || r->used)) {
		if (s->out_left == 0)
			start_frame(s, r);
		uint32_t take = (uint32_t)EM_MIN(n, s->out_left);
		EM_ASSERT(take > 0); /* a queued frame is never empty */
		s->out_left -= take;
		n -= take;
		if (!s->out_ext) {
			ring_skip(r, take);
		} else if (s->out_left == 0) {
			uint8_t h[EM_FRAME_HEADER_LEN];
			ring_peek(r, 0, h, sizeof(h));
			s->out_ext = false;
			ext_done(s, hdr_len(h), s->out_ext_token);
		}
	}
	s->st.bytes_out += n0 - n;
	if (s->out_left == 0)
		s->out_src = SRC_NONE;
	flush_pending(s);
}

/* ---- local API ---- */

static bool usable(const struct em_tunnel_session *s)
{
	return s->state == EM_TUNNEL_OPEN || s->state == EM_TUNNEL_DRAINING;
}

/* The stream <id> may be written: the session is usable, the stream live
 * and not yet half-closed by us. Sets *out, or returns -errno. */
static int writable(struct em_tunnel_session *s, uint32_t id, struct stream **out)
{
	if (!usable(s))
		return -ENOTCONN;
	struct stream *st = find_live(s, id);
	if (!st)
		return -ENOENT;
	if (st->flags & ST_LOCAL_FIN)
		return -EPIPE;
	*out = st;
	return 0;
}

int em_tunnel_session_write(struct em_tunnel_session *s, uint32_t id, const void *data, size_t len,
                            bool fin)
{
	struct stream *st;
	int rc = writable(s, id, &st);
	if (rc)
		return rc;

	const uint8_t *p = data;
	size_t total = 0;
	len = EM_MIN(len, (size_t)INT32_MAX);
	while (total < len) {
		uint32_t room = send_free(s);
		if (room <= EM_FRAME_HEADER_LEN)
			break;
		uint64_t chunk = EM_MIN((uint64_t)(len - total), st->send_credit);
		chunk = EM_MIN(chunk, (uint64_t)s->peer_max_data);
		chunk = EM_MIN(chunk, (uint64_t)(room - EM_FRAME_HEADER_LEN));
		if (chunk == 0)
			break;
		bool last = fin && total + chunk == len;
		uint8_t h[EM_FRAME_HEADER_LEN];
		em_frame_write_header(h, EM_FRAME_DATA, last ? EM_FRAME_FLAG_FIN : 0, id,
		                      (uint32_t)chunk);
		ring_put(&s->send, h, sizeof(h));
		ring_put(&s->send, p + total, (uint32_t)chunk);
		s->st.send_hwm = EM_MAX(s->st.send_hwm, s->send.used);
		st->send_credit -= chunk;
		total += chunk;
		if (last)
			st->flags |= ST_LOCAL_FIN;
	}
	s->st.data_out += total;
	if (total)
		st->flags |= ST_DATA_OUT;
	if (fin && total == len && !(st->flags & ST_LOCAL_FIN)) {
		/* Nothing to carry the flag (len 0): a bare FIN. */
		st->flags |= ST_LOCAL_FIN;
		if (!queue_fin(s, id)) {
			st->flags |= ST_FIN_PENDING;
			s->maybe_pending = true;
		}
	}
	if (st->flags & ST_LOCAL_FIN)
		maybe_retire(s, st);
	return (int)total;
}

int em_tunnel_session_write_ref(struct em_tunnel_session *s, uint32_t id, const void *data,
                                size_t len, uint64_t token)
{
	struct stream *st;
	int rc = writable(s, id, &st);
	if (rc)
		return rc;
	if (len == 0 || len > s->peer_max_data || len > st->send_credit ||
	    (uint64_t)send_free(s) < EM_FRAME_HEADER_LEN + EXT_DESC + (uint64_t)len)
		return 0;
	uint8_t h[EM_FRAME_HEADER_LEN], d[EXT_DESC];
	em_frame_write_header(h, EM_FRAME_DATA, FLAG_EXT, id, (uint32_t)len);
	memcpy(d, &data, sizeof(data));
	memcpy(d + 8, &token, sizeof(token));
	ring_put(&s->send, h, sizeof(h));
	ring_put(&s->send, d, sizeof(d));
	s->n_ext++;
	s->ext_bytes += len;
	s->st.send_hwm = EM_MAX(s->st.send_hwm, s->send.used + (uint32_t)s->ext_bytes);
	st->send_credit -= len;
	st->flags |= ST_DATA_OUT;
	s->st.data_out += len;
	return (int)len;
}

int em_tunnel_session_shutdown(struct em_tunnel_session *s, uint32_t id)
{
	struct stream *st;
	int rc = writable(s, id, &st);
	if (rc)
		return rc;
	return em_tunnel_session_write(s, id, NULL, 0, true) < 0 ? -EIO : 0;
}

int em_tunnel_session_open(struct em_tunnel_session *s, const struct em_frame_target *target,
                           const void *data, size_t len, void *user, uint32_t *id)
{
	if (s->state == EM_TUNNEL_DRAINING)
		return -ESHUTDOWN;
	if (s->state != EM_TUNNEL_OPEN)
		return -ENOTCONN;
	if (s->n_local >= EM_MIN(s->peer_max_streams, s->conf.max_streams))
		return -EBUSY;
	if (s->next_id > UINT32_MAX - 2)
		return -EBUSY;

	uint8_t b[EM_FRAME_MAX_CONTROL];
	struct em_frame f = {.type = EM_FRAME_OPEN, .stream_id = s->next_id};
	f.u.open = *target;
	int n = em_frame_encode(&f, b, sizeof(b));
	if (n < 0)
		return -EINVAL;
	if ((uint32_t)n > send_free(s))
		return -ENOBUFS;
	struct stream *st = stream_new(s, s->next_id, false);
	if (!st)
		return -EBUSY;
	send_put(s, b, (uint32_t)n);
	st->user = user;
	*id = s->next_id;
	s->next_id += 2;
	s->st.streams_opened_local++;
	if (!len)
		return 0;
	return em_tunnel_session_write(s, *id, data, len, false);
}

int em_tunnel_session_reset(struct em_tunnel_session *s, uint32_t id, uint32_t reason,
                            const char *text)
{
	struct stream *st = find_live(s, id);
	if (!st || s->state == EM_TUNNEL_CLOSED)
		return -ENOENT;
	/* The peer may have sent up to the credit it still had before our RST
	 * arrives; that much DATA on a closed stream stays legal. */
	s->orphan_credit += st->recv_credit;
	if (queue_rst(s, id, reason, text)) {
		stream_free(s, st);
		return 0;
	}
	st->flags |= ST_RST_PENDING;
	st->rst_reason = reason;
	s->maybe_pending = true;
	return 0;
}

int em_tunnel_session_consume(struct em_tunnel_session *s, uint32_t id, size_t n, uint64_t now_ms)
{
	struct stream *st = find_live(s, id);
	if (!st)
		return -ENOENT;
	if (n > st->unconsumed)
		return -EINVAL;
	if (now_ms > s->now)
		s->now = now_ms;
	st->unconsumed -= (uint32_t)n;
	st->pending_update += (uint32_t)n;
	if (usable(s) && !(st->flags & ST_UPDATE_PENDING))
		maybe_update(s, st);
	return 0;
}

int em_tunnel_session_set_user(struct em_tunnel_session *s, uint32_t id, void *user)
{
	struct stream *st = find_live(s, id);
	if (!st)
		return -ENOENT;
	st->user = user;
	return 0;
}

int em_tunnel_session_ping(struct em_tunnel_session *s)
{
	if (!usable(s))
		return -ENOTCONN;
	if (s->ping_out)
		return -EALREADY;
	return send_ping(s);
}

int em_tunnel_session_goaway(struct em_tunnel_session *s, uint32_t reason, const char *text)
{
	if (s->state == EM_TUNNEL_CLOSED)
		return -ENOTCONN;
	if (reason != EM_REASON_NO_ERROR) {
		/* The caller knows its streams: close without events. */
		s->conf.on_event = NULL;
		die(s, reason, text, true);
		return 0;
	}
	if (s->goaway_out)
		return 0;
	queue_goaway(s, reason, text);
	if (s->state == EM_TUNNEL_OPEN)
		s->state = EM_TUNNEL_DRAINING;
	return 0;
}

/* ---- timers ---- */

uint64_t em_tunnel_session_tick(struct em_tunnel_session *s, uint64_t now_ms)
{
	const struct em_tunnel_conf *c = &s->conf;
	if (s->state == EM_TUNNEL_CLOSED)
		return 60000;
	s->now = now_ms;
	roll_interval(s);
	if (s->state == EM_TUNNEL_HANDSHAKE && now_ms - s->created >= c->handshake_ms) {
		die(s, EM_REASON_TIMEOUT, "handshake timeout", true);
		return 60000;
	}
	if (now_ms - s->last_rx >= c->dead_ms) {
		die(s, EM_REASON_TIMEOUT, "peer silent", true);
		return 60000;
	}
	if (s->state != EM_TUNNEL_HANDSHAKE && !s->ping_out &&
	    (now_ms - s->last_rx >= c->keepalive_ms ||
	     (s->n_local + s->n_remote && now_ms - s->ping_sent_ms >= RTT_SAMPLE_MS)))
		send_ping(s); /* keepalive, or a fresh RTT for window growth */
	flush_pending(s);
	maybe_drained(s);

	uint64_t next = s->last_rx + c->dead_ms;
	if (s->state == EM_TUNNEL_HANDSHAKE)
		next = EM_MIN(next, s->created + c->handshake_ms);
	else if (!s->ping_out)
		next = EM_MIN(next,
		              EM_MIN(s->last_rx + c->keepalive_ms,
		                     s->n_local + s->n_remote ? s->ping_sent_ms + RTT_SAMPLE_MS
		                                              : UINT64_MAX));
	next = EM_MIN(next, s->interval_start + c->limit_interval_ms);
	return next > now_ms ? next - now_ms : 1;
}

/* ---- life cycle ---- */

static bool name_valid(const char *n)
{
	size_t len = n ? strlen(n) : 0;
	if (len == 0 || len > EM_FRAME_MAX_NAME)
		return false;
	for (size_t i = 0; i < len; i++) {
		char ch = n[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_'))
			return false;
	}
	return true;
}

#define DEFAULT(field, v)                                                                          \
	do {                                                                                       \
		if (!c->field)                                                                     \
			c->field = (v);                                                            \
	} while (0)

int em_tunnel_session_create(const struct em_tunnel_conf *conf, uint64_t now_ms,
                             struct em_tunnel_session **out)
{
	int rc = -ENOMEM;
	struct em_tunnel_session *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	struct em_tunnel_conf *c = &s->conf;
	*c = *conf;
	DEFAULT(max_streams, 1024);
	DEFAULT(initial_window, 256u * 1024);
	DEFAULT(max_window, 16u * 1024 * 1024);
	DEFAULT(tunnel_window, 64ull * 1024 * 1024);
	DEFAULT(max_frame, 64u * 1024);
	DEFAULT(send_buffer, 256u * 1024);
	DEFAULT(ctrl_buffer, 16u * 1024);
	DEFAULT(limit_interval_ms, 1000);
	DEFAULT(max_pings, 30);
	DEFAULT(max_window_updates, 20000);
	DEFAULT(max_empty_data, 100);
	DEFAULT(max_resets, 500);
	DEFAULT(handshake_ms, 10000);
	DEFAULT(keepalive_ms, 10000);
	DEFAULT(dead_ms, 30000);
	DEFAULT(rtt_initial_ms, 100);

	rc = -EINVAL;
	if (!name_valid(conf->node_name) || !conf->key || conf->key_len == 0 ||
	    conf->key_len > INT32_MAX)
		goto fail;
	if (conf->peer_name && conf->peer_name[0] && !name_valid(conf->peer_name))
		goto fail;
	if (c->role != EM_TUNNEL_DIALER && c->role != EM_TUNNEL_ACCEPTOR)
		goto fail;
	if (c->initial_window < EM_FRAME_MIN_WINDOW || c->max_window > EM_FRAME_MAX_WINDOW ||
	    c->initial_window > c->max_window)
		goto fail;
	if (c->max_frame < EM_FRAME_MIN_MAX_DATA || c->max_frame > EM_FRAME_MAX_DATA)
		goto fail;
	if (c->send_buffer < 2 * EM_FRAME_MAX_CONTROL || c->ctrl_buffer < 1024 ||
	    c->max_streams > (1u << 24))
		goto fail;
	strcpy(s->node_name, conf->node_name);
	if (conf->peer_name)
		strcpy(s->peer_expect, conf->peer_name);
	c->node_name = s->node_name;
	c->peer_name = s->peer_expect;

	rc = -ENOMEM;
	s->key = malloc(conf->key_len);
	if (!s->key)
		goto fail;
	memcpy(s->key, conf->key, conf->key_len);
	c->key = s->key;
	s->ctrl.buf = s->hs_ctrl;
	s->ctrl.cap = HS_CTRL;
	s->free_head = UINT32_MAX;

	s->now = s->created = s->last_rx = s->interval_start = now_ms;
	s->srtt = c->rtt_initial_ms;
	s->srtt_us = (uint64_t)c->rtt_initial_ms * 1000;
	s->next_id = c->role == EM_TUNNEL_DIALER ? 1 : 2;

	rc = -EIO;
	if (RAND_bytes(s->nonce_local, EM_FRAME_NONCE_LEN) != 1)
		goto fail;
	uint8_t b[EM_FRAME_HEADER_LEN + EM_FRAME_HELLO_FIXED + EM_FRAME_MAX_NAME];
	struct em_frame f = {.type = EM_FRAME_HELLO};
	f.u.hello.role = (uint8_t)c->role;
	f.u.hello.initial_window = c->initial_window;
	f.u.hello.max_data = c->max_frame;
	f.u.hello.max_streams = c->max_streams;
	memcpy(f.u.hello.nonce, s->nonce_local, EM_FRAME_NONCE_LEN);
	f.u.hello.name = (struct em_slice){s->node_name, strlen(s->node_name)};
	int n = em_frame_encode(&f, b, sizeof(b));
	if (n < 0 || !ctrl_put(s, b, (uint32_t)n, false))
		goto fail;
	*out = s;
	return 0;
fail:
	em_tunnel_session_destroy(s);
	return rc;
}

void em_tunnel_session_destroy(struct em_tunnel_session *s)
{
	if (!s)
		return;
	/* Payloads still referenced go back to the caller. */
	struct ring *r = &s->send;
	if (s->out_src == SRC_SEND && s->out_left && !s->out_ext)
		ring_skip(r, s->out_left); /* rest of a plain frame */
	s->out_left = 0;
	while (s->n_ext && r->used) { /* every turn skips one frame */
		uint8_t h[EM_FRAME_HEADER_LEN];
		ring_peek(r, 0, h, sizeof(h));
		if (!hdr_ext(h)) {
			ring_skip(r, EM_FRAME_HEADER_LEN + hdr_len(h));
			continue;
		}
		uint8_t d[EXT_DESC];
		uint64_t token;
		ring_peek(r, EM_FRAME_HEADER_LEN, d, sizeof(d));
		memcpy(&token, d + 8, sizeof(token));
		ext_done(s, hdr_len(h), token);
	}
	if (s->key)
		OPENSSL_cleanse(s->key, s->conf.key_len);
	free(s->key);
	free(s->pool);
	free(s->idx);
	if (s->ctrl.buf != s->hs_ctrl)
		free(s->ctrl.buf);
	free(s->send.buf);
	free(s);
}

/* ---- accessors ---- */

enum em_tunnel_state em_tunnel_session_state(const struct em_tunnel_session *s)
{
	return s->state;
}

bool em_tunnel_session_should_close(const struct em_tunnel_session *s)
{
	return s->state == EM_TUNNEL_CLOSED && s->out_left == 0 && s->ctrl.used == 0 &&
	       (s->discard_send || s->send.used == 0);
}

uint32_t em_tunnel_session_close_reason(const struct em_tunnel_session *s)
{
	return s->close_reason;
}

const char *em_tunnel_session_peer_name(const struct em_tunnel_session *s)
{
	return s->peer_name;
}

uint32_t em_tunnel_session_rtt_ms(const struct em_tunnel_session *s)
{
	return s->srtt;
}

uint32_t em_tunnel_session_streams(const struct em_tunnel_session *s)
{
	return s->n_local + s->n_remote;
}

uint32_t em_tunnel_session_send_room(const struct em_tunnel_session *s)
{
	return send_free(s);
}

void em_tunnel_session_queued(const struct em_tunnel_session *s, uint32_t *ctrl, uint32_t *send)
{
	*ctrl = s->ctrl.used;
	*send = s->send.used;
}

int em_tunnel_session_stream_info(const struct em_tunnel_session *s, uint32_t id,
                                  struct em_tunnel_stream_info *out)
{
	const struct stream *st = find_live(s, id);
	if (!st)
		return -ENOENT;
	out->send_credit = st->send_credit;
	out->recv_window = st->recv_window;
	out->recv_credit = st->recv_credit;
	out->unconsumed = st->unconsumed;
	out->local_fin = st->flags & ST_LOCAL_FIN;
	out->remote_fin = st->flags & ST_REMOTE_FIN;
	return 0;
}

uint32_t em_tunnel_session_ids_left(const struct em_tunnel_session *s)
{
	if (s->next_id > UINT32_MAX - 2)
		return 0;
	return (UINT32_MAX - 2 - s->next_id) / 2 + 1;
}

int em_tunnel_session_test_set_next_id(struct em_tunnel_session *s, uint32_t id)
{
	if (!own_parity(s, id) || id < s->next_id)
		return -EINVAL;
	s->next_id = id;
	return 0;
}

const struct em_tunnel_stats *em_tunnel_session_stats(const struct em_tunnel_session *s)
{
	return &s->st;
}

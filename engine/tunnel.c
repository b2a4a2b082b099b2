/* Tunnels between nodes: dial, accept, drive sessions, bridge streams. */
#include "engine/tunnel.h"

#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "proto/clock.h"
#include "proto/log.h"
#include "tunnel/session.h"

#define TUN_DEFAULT_PORT 20006

/* Tunnel sockets receive into a buffer group of their own. Stream bytes that
 * wait for window hold ring buffers of the main group; if the tunnels drew
 * from it too, those buffers could starve the very recv that brings the
 * WINDOW_UPDATE releasing them. Tunnel buffers go back right after input. */
#define TUN_BGID      1
#define TUN_BUF_COUNT 64u
#define TUN_BUF_SIZE  65536u
/* Bulk DATA is queued on the local socket straight from the tunnel buffer it
 * arrived in (no copy); the buffer returns to the ring once every such slice
 * was sent. Only up to TUN_HOLD_MAX buffers are held at a time, so slow
 * readers can never starve the tunnel's recv (which carries the window
 * updates freeing them): past that, and for small slices, DATA is copied. */
#define TUN_HOLD_MAX (TUN_BUF_COUNT / 2)
#define TUN_REFS     8u
#define TUN_REF_MIN  4096u
/* Session send ring: room for several large output slices, so that one
 * bulk stream keeps a send in flight while the next slice fills. */
#define TUN_SEND_RING (1024u * 1024)
/* Stream sockets keep receiving while the session has this much room;
 * below it a socket pauses after its current read and waits, with its bytes
 * in the kernel, for sends to make room (see em_tun_recv_blocked). */
#define TUN_ARM_ROOM (TUN_SEND_RING / 4)

/* Endpoint sockets of peer-opened streams beyond the first TUN_MANY_STREAMS
 * get a fixed kernel receive buffer. Their bytes leave only as fast as the
 * tunnel window allows, and a thousand autotuned buffers (a megabyte or more
 * each behind a fast backend) push the host past net.ipv4.tcp_mem's pressure
 * mark, where the kernel clamps the receive window of every socket above its
 * fair share to a few segments: the one tunnel socket carrying all streams
 * is such a socket, and the whole tunnel crawls. A few streams keep
 * autotuning (a fixed buffer costs one stream about a seventh). */
#define TUN_MANY_STREAMS 16u
#define TUN_MANY_RCVBUF  (128 * 1024)

/* DATA is copied into chunks of two sizes: request/response traffic is small,
 * bulk arrives in ring-buffer-sized pieces. Free lists are capped so an
 * idle worker gives memory back. */
#define CH_SMALL      2048u
#define CH_BIG        EM_BUF_SIZE
#define CH_FREE_SMALL 4096u
#define CH_FREE_BIG   256u
/* What one stream may queue on its socket: small DATA joins the tail chunk
 * while it has room; past TS_QCAP entries a stream's bytes are copied into
 * chunks of CH_HUGE (never pooled), so a stream's window fits in few
 * entries; a stream at TS_QMAX_MUL times the cap (more bytes than any
 * sane window) is reset, it alone: the worker's entries stay for the
 * others. The cap drops to TS_QCAP_TIGHT while fewer than TS_QTIGHT_FREE
 * static slots are free. */
#define CH_HUGE        (128u * 1024)
#define TS_QCAP        64u
#define TS_QCAP_TIGHT  8u
#define TS_QMAX_MUL    4u
#define TS_QTIGHT_FREE (EM_STATIC_SLOTS / 4)

struct tchunk {
	struct tchunk *next;
	struct em_tstream *ts;
	uint32_t gen;
	uint32_t len;
	uint32_t cap;
	uint32_t pad_;
	char data[];
};

/* A slice of a held tunnel buffer queued on a socket. */
struct tref {
	struct em_tstream *ts; /* NULL: free record */
	uint32_t gen;
	uint32_t off;
	uint32_t len;
};

struct tbufhold {
	uint16_t refs;
	bool held; /* input is done with it: back to the ring at refs 0 */
	struct tref r[TUN_REFS];
};

enum { TP_DOWN = 0, TP_DIALING, TP_UP };

struct tpeer {
	struct em_dlist node;
	struct em_dlist waitq; /* streams waiting for the tunnel */
	struct em_tconn *conn; /* dialled tunnel while DIALING/UP */
	/* Replacement being dialled while <conn> runs out of stream ids: it
	 * becomes <conn> once up, and the old one drains. */
	struct em_tconn *next;
	uint64_t next_dial_ms;
	uint32_t backoff_ms;
	uint32_t fails;
	uint8_t state;
	bool wanted; /* traffic went to it: keep the tunnel up */
	char name[EM_FRAME_MAX_NAME + 1];
};

enum {
	TC_RECV = 1u << 0,
	TC_SEND = 1u << 1,
	TC_CONNECTING = 1u << 2,
	TC_CLOSING = 1u << 3,
	TC_DIRTY = 1u << 4,
	TC_UP = 1u << 5,
	TC_DEAD = 1u << 6,   /* streams failed; closing once output is done */
	TC_GOAWAY = 1u << 7, /* our GOAWAY (stopping) is queued */
	TC_HS = 1u << 8,     /* accepted, handshake in progress (tun->hs) */
};

struct em_tconn {
	struct em_dlist node;    /* tun->conns */
	struct em_dlist hnode;   /* tun->hs while TC_HS */
	struct em_dlist dnode;   /* tun->dirty */
	struct em_dlist streams; /* every attached stream */
	struct em_dlist blocked; /* streams with bytes waiting for send ring room */
	struct em_worker *w;
	struct tpeer *tp; /* dialled: its peer; accepted: NULL */
	struct em_tunnel_session *sess;
	uint64_t next_tick_ms;
	int fd;
	uint16_t inflight;
	uint16_t flags;
	struct sockaddr_storage sa;
	struct em_addr dialed; /* dialled: the peer address it was dialled at */
	struct em_addr src;    /* accepted: the peer's address */
	char addr[EM_ADDR_STRLEN];
} __attribute__((aligned(16)));

enum {
	TS_LOCAL_EOF = 1u << 0,
	TS_FIN_SENT = 1u << 1,
	TS_REMOTE_FIN = 1u << 2,
	TS_DEAD = 1u << 3,      /* tunnel side gone; socketpair end drains */
	TS_WAIT_SLOT = 1u << 4, /* waiting for a stream slot at the peer's limit */
};

struct em_tstream {
	struct em_dlist node;  /* tc->streams or tp->waitq */
	struct em_dlist bnode; /* tc->blocked */
	struct em_tconn *tc;
	struct tpeer *tp; /* while waiting */
	struct em_sock *s;
	struct em_tstream *next_free;
	uint32_t id;
	uint32_t gen;
	uint32_t p_off; /* pending: socket bytes not yet taken by the session */
	uint16_t p_first, p_last, p_len;
	uint16_t flags;
	uint16_t port;
	struct em_addr dst;
	char ns[EM_FRAME_MAX_NS + 1];
	char svc[EM_FRAME_MAX_NAME + 1];
};

struct em_tun_worker {
	struct em_dlist peers;
	struct em_dlist conns;
	struct em_dlist hs; /* accepted tunnels not yet authenticated */
	uint32_t n_hs;
	uint64_t n_hs_refused;
	uint64_t hs_log_ms; /* handshake refusals and failures: one line a second */
	uint32_t hs_quiet;
	/* Test only (EDGEMESH_TEST_TUNNEL_FIRST_ID): the first stream id of the
	 * first tunnel this worker dials, 0 = normal. */
	uint32_t test_first_id;
	struct em_dlist dirty;
	struct em_tstream *free_ts;
	struct tchunk *free_small, *free_big;
	uint32_t n_free_small, n_free_big;
	uint32_t n_conns;
	uint64_t rng;
	struct em_bufring rb; /* group TUN_BGID, set up with the first tunnel */
	struct tbufhold hold[TUN_BUF_COUNT];
	uint32_t n_held;  /* buffers with refs */
	uint32_t cur_bid; /* buffer being parsed by input(), or UINT32_MAX */
	bool exiting;     /* worker exit: the buffer ring is gone */
	/* Counters: sessions already freed, and tunnel-level events. */
	struct em_tunnel_stats retired;
	uint64_t n_dialed, n_accepted, n_closed, n_open_refused, n_open_repicked, n_refused;
	/* Per-stream refusals are logged at most once a second per worker. */
	uint64_t refuse_log_ms;
	uint32_t refuse_quiet; /* refusals not logged since the last line */
	uint64_t table_gen;    /* table generation peers' addresses were checked at */
};

/* ---- pure logic ---- */

uint32_t em_tun_backoff(uint32_t *base, uint32_t min_ms, uint32_t max_ms, uint64_t rnd)
{
	if (min_ms == 0)
		min_ms = 1;
	if (max_ms < min_ms)
		max_ms = min_ms;
	uint32_t b = *base;
	b = b < min_ms ? min_ms : (b > max_ms / 2 ? max_ms : b * 2);
	*base = b;
	return b / 2 + (uint32_t)(rnd % ((uint64_t)(b - b / 2) + 1));
}

static uint64_t rng_next(struct em_tun_worker *t)
{
	uint64_t x = t->rng;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return t->rng = x;
}

/* ---- allocation ---- */

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
	t->cur_bid = UINT32_MAX;
	t->rng = em_now_ns() ^ (0x9e3779b97f4a7c15ULL * (w->id + 1));
	if (!t->rng)
		t->rng = 1;
	w->tun = t;
	return 0;
}

/* Adds the counters of <src> that stats reports to <dst>. */
static void stats_add(struct em_tunnel_stats *dst, const struct em_tunnel_stats *src)
{
	dst->bytes_in += src->bytes_in;
	dst->bytes_out += src->bytes_out;
	dst->streams_opened_local += src->streams_opened_local;
	dst->streams_opened_remote += src->streams_opened_remote;
	dst->resets_in += src->resets_in;
	dst->resets_out += src->resets_out;
	dst->limit_streams += src->limit_streams;
	dst->limit_pings += src->limit_pings;
	dst->limit_window_updates += src->limit_window_updates;
	dst->limit_empty_data += src->limit_empty_data;
	dst->limit_resets += src->limit_resets;
	dst->limit_ctrl_queue += src->limit_ctrl_queue;
	dst->limit_flow_control += src->limit_flow_control;
	dst->auth_failures += src->auth_failures;
	dst->unknown_nodes += src->unknown_nodes;
	dst->protocol_errors += src->protocol_errors;
	dst->timeouts += src->timeouts;
}

bool em_tun_trim(struct em_worker *w)
{
	struct em_tun_worker *t = w->tun;
	if (!t)
		return true;
	if (t->n_held)
		return false;
	em_bufring_trim(&t->rb);
	while (t->free_small) {
		struct tchunk *c = t->free_small;
		t->free_small = c->next;
		free(c);
	}
	while (t->free_big) {
		struct tchunk *c = t->free_big;
		t->free_big = c->next;
		free(c);
	}
	t->n_free_small = t->n_free_big = 0;
	return true;
}

void em_tun_counters(const struct em_worker *w, uint64_t *v)
{
	const struct em_tun_worker *t = w->tun;
	if (!t)
		return;
	struct em_tunnel_stats sum = t->retired;
	uint64_t up = 0, streams = 0;
	for (const struct em_dlist *n = t->conns.next; n != &t->conns; n = n->next) {
		const struct em_tconn *tc = em_container_of(n, struct em_tconn, node);
		if (tc->sess)
			stats_add(&sum, em_tunnel_session_stats(tc->sess));
		if ((tc->flags & TC_UP) && !(tc->flags & (TC_DEAD | TC_CLOSING))) {
			up++;
			streams += em_tunnel_session_streams(tc->sess);
		}
	}
	v[EM_C_T_UP] += up;
	v[EM_C_T_DIALED] += t->n_dialed;
	v[EM_C_T_ACCEPTED] += t->n_accepted;
	v[EM_C_T_CLOSED] += t->n_closed;
	v[EM_C_T_STREAMS] += streams;
	v[EM_C_T_OPENED_LOCAL] += sum.streams_opened_local;
	v[EM_C_T_OPENED_REMOTE] += sum.streams_opened_remote;
	v[EM_C_T_OPEN_REFUSED] += t->n_open_refused;
	v[EM_C_T_OPEN_REPICKED] += t->n_open_repicked;
	v[EM_C_T_REFUSED] += t->n_refused;
	v[EM_C_T_RESETS_IN] += sum.resets_in;
	v[EM_C_T_RESETS_OUT] += sum.resets_out;
	v[EM_C_T_BYTES_IN] += sum.bytes_in;
	v[EM_C_T_BYTES_OUT] += sum.bytes_out;
	v[EM_C_T_LIMIT_STREAMS] += sum.limit_streams;
	v[EM_C_T_LIMIT_PINGS] += sum.limit_pings;
	v[EM_C_T_LIMIT_UPDATES] += sum.limit_window_updates;
	v[EM_C_T_LIMIT_EMPTY] += sum.limit_empty_data;
	v[EM_C_T_LIMIT_RESETS] += sum.limit_resets;
	v[EM_C_T_LIMIT_CTRL] += sum.limit_ctrl_queue;
	v[EM_C_T_LIMIT_FLOW] += sum.limit_flow_control;
	v[EM_C_T_AUTH_FAIL] += sum.auth_failures;
	v[EM_C_T_UNKNOWN_NODE] += sum.unknown_nodes;
	v[EM_C_T_PROTO_ERR] += sum.protocol_errors;
	v[EM_C_T_TIMEOUTS] += sum.timeouts;
	v[EM_C_T_HS_PENDING] += t->n_hs;
	v[EM_C_T_HS_REFUSED] += t->n_hs_refused;
}

/* True when a handshake refusal or failure may be logged now; sets
 * <*quiet> to the number not logged since the last line. A flood of
 * strangers must not turn into a flood of log lines. */
static bool hs_log_ok(struct em_tun_worker *t, uint64_t now_ms, uint32_t *quiet)
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
static void hs_end(struct em_tconn *tc)
{
	if (!(tc->flags & TC_HS))
		return;
	tc->flags &= ~TC_HS;
	em_dlist_del(&tc->hnode);
	tc->w->tun->n_hs--;
}

static void conn_free(struct em_tconn *tc)
{
	struct em_tun_worker *t = tc->w->tun;
	if (tc->sess) {
		stats_add(&t->retired, em_tunnel_session_stats(tc->sess));
		if (tc->flags & TC_UP)
			t->n_closed++;
	}
	hs_end(tc);
	em_dlist_del(&tc->node);
	em_dlist_del(&tc->dnode);
	if (tc->fd >= 0)
		close(tc->fd);
	em_tunnel_session_destroy(tc->sess);
	free(tc);
}

void em_tun_worker_free(struct em_worker *w)
{
	struct em_tun_worker *t = w->tun;
	if (!t)
		return;
	t->exiting = true;
	while (!em_dlist_empty(&t->conns)) {
		struct em_tconn *tc = em_container_of(t->conns.next, struct em_tconn, node);
		conn_free(tc);
	}
	em_bufring_free(&t->rb); /* after the conns: slices of it may still be dropped */
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
	struct tchunk *lists[2] = {t->free_small, t->free_big};
	for (int i = 0; i < 2; i++)
		while (lists[i]) {
			struct tchunk *c = lists[i];
			lists[i] = c->next;
			free(c);
		}
	free(t);
	w->tun = NULL;
}

static struct em_tstream *ts_alloc(struct em_worker *w)
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
	while (ts->p_len) {
		uint16_t e = ts->p_first;
		ts->p_first = w->q_next[e];
		ts->p_len--;
		em_worker_entry_put(w, e);
	}
	ts->p_first = ts->p_last = EM_Q_NONE;
	ts->p_off = 0;
}

static void ts_free(struct em_worker *w, struct em_tstream *ts)
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

/* A chunk of CH_SMALL or CH_BIG bytes (the smallest <want> fits), or of
 * CH_HUGE for <want> beyond CH_BIG. */
static struct tchunk *chunk_get(struct em_tun_worker *t, size_t want)
{
	if (want > CH_BIG) {
		struct tchunk *h = malloc(sizeof(*h) + CH_HUGE);
		if (h)
			h->cap = CH_HUGE;
		return h;
	}
	bool small = want <= CH_SMALL;
	struct tchunk **fl = small ? &t->free_small : &t->free_big;
	struct tchunk *c = *fl;
	if (c) {
		*fl = c->next;
		if (small)
			t->n_free_small--;
		else
			t->n_free_big--;
		return c;
	}
	uint32_t cap = small ? CH_SMALL : CH_BIG;
	c = malloc(sizeof(*c) + cap);
	if (c)
		c->cap = cap;
	return c;
}

static void mark_dirty(struct em_worker *w, struct em_tconn *tc)
{
	if (!(tc->flags & TC_DIRTY)) {
		tc->flags |= TC_DIRTY;
		em_dlist_push_tail(&w->tun->dirty, &tc->dnode);
	}
}

/* A held slice was sent or dropped: its window goes back, and the buffer
 * to the ring when it was the last slice of a buffer input is done with. */
static void ref_put(struct em_worker *w, const char *p)
{
	struct em_tun_worker *t = w->tun;
	size_t at = (size_t)(p - t->rb.base);
	uint16_t bid = (uint16_t)(at / TUN_BUF_SIZE);
	uint32_t off = (uint32_t)(at % TUN_BUF_SIZE);
	struct tbufhold *h = &t->hold[bid];
	for (unsigned i = 0; i < TUN_REFS; i++) {
		struct tref *r = &h->r[i];
		if (!r->ts || r->off != off)
			continue;
		struct em_tstream *ts = r->ts;
		if (ts->gen == r->gen && ts->tc && ts->id) {
			em_tunnel_session_consume(ts->tc->sess, ts->id, r->len, w->now_ms);
			mark_dirty(w, ts->tc);
		}
		r->ts = NULL;
		if (--h->refs == 0) {
			t->n_held--;
			if (h->held) {
				h->held = false;
				em_bufring_put(&t->rb, bid);
			}
		}
		return;
	}
}

/* Queues <d> (a slice of the buffer being parsed) on <s> without copying.
 * Returns false when it must be copied instead. */
static bool ref_enqueue(struct em_worker *w, struct em_tstream *ts, struct em_sock *s,
                        struct em_slice d)
{
	struct em_tun_worker *t = w->tun;
	if (d.len < TUN_REF_MIN || t->cur_bid == UINT32_MAX)
		return false;
	const char *b = em_bufring_buf(&t->rb, (uint16_t)t->cur_bid);
	if (d.base < b || d.base + d.len > b + TUN_BUF_SIZE)
		return false;
	struct tbufhold *h = &t->hold[t->cur_bid];
	if (h->refs == 0 && t->n_held >= TUN_HOLD_MAX)
		return false;
	struct tref *r = NULL;
	for (unsigned i = 0; i < TUN_REFS && !r; i++)
		if (!h->r[i].ts)
			r = &h->r[i];
	if (!r)
		return false;
	uint16_t e = em_worker_static_get(w, d.base, EM_ST_TCHUNK);
	if (e == EM_Q_NONE)
		return false;
	r->ts = ts;
	r->gen = ts->gen;
	r->off = (uint32_t)(d.base - b);
	r->len = (uint32_t)d.len;
	if (h->refs++ == 0)
		t->n_held++;
	em_sock_enqueue(w, s, e, (uint32_t)d.len);
	return true;
}

void em_tun_chunk_put(struct em_worker *w, const char *p)
{
	struct em_tun_worker *t = w->tun;
	if (t->rb.base && p >= t->rb.base &&
	    p < t->rb.base + (size_t)TUN_BUF_COUNT * TUN_BUF_SIZE) {
		ref_put(w, p);
		return;
	}
	struct tchunk *c = (struct tchunk *)(void *)(p - offsetof(struct tchunk, data));
	struct em_tstream *ts = c->ts;
	if (ts && ts->gen == c->gen && ts->tc && ts->id) {
		em_tunnel_session_consume(ts->tc->sess, ts->id, c->len, w->now_ms);
		mark_dirty(w, ts->tc);
	}
	if (c->cap == CH_SMALL && t->n_free_small < CH_FREE_SMALL) {
		c->next = t->free_small;
		t->free_small = c;
		t->n_free_small++;
	} else if (c->cap == CH_BIG && t->n_free_big < CH_FREE_BIG) {
		c->next = t->free_big;
		t->free_big = c;
		t->n_free_big++;
	} else {
		free(c);
	}
}

/* ---- peers ---- */

static struct tpeer *peer_get(struct em_worker *w, const char *name)
{
	struct em_tun_worker *t = w->tun;
	for (struct em_dlist *n = t->peers.next; n != &t->peers; n = n->next) {
		struct tpeer *tp = em_container_of(n, struct tpeer, node);
		if (strcmp(tp->name, name) == 0)
			return tp;
	}
	size_t len = strlen(name);
	if (len == 0 || len > EM_FRAME_MAX_NAME)
		return NULL;
	struct tpeer *tp = calloc(1, sizeof(*tp));
	if (!tp)
		return NULL;
	memcpy(tp->name, name, len + 1);
	em_dlist_init(&tp->waitq);
	em_dlist_push_tail(&t->peers, &tp->node);
	return tp;
}

/* ---- streams ---- */

static void ts_fail(struct em_worker *w, struct em_tstream *ts);
static void ts_flush(struct em_worker *w, struct em_tstream *ts);

static const char *tc_name(const struct em_tconn *tc)
{
	const char *n = tc->sess ? em_tunnel_session_peer_name(tc->sess) : "";
	return n[0] ? n : (tc->tp ? tc->tp->name : "?");
}

/* Bytes moved: the idle timer moves on, but for a stream still waiting for
 * a stream slot, whose deadline is the connect timeout. */
static void touch(struct em_worker *w, struct em_sock *s)
{
	if (s->ts && (s->ts->flags & TS_WAIT_SLOT))
		return;
	if (s->tclass == EM_T_IDLE && s->deadline_ms < w->now_ms + w->idle_ms - 1000)
		em_sock_timer(w, s, EM_T_IDLE, w->idle_ms);
}

static void pending_push(struct em_worker *w, struct em_tstream *ts, uint16_t e, uint32_t len)
{
	w->q_bytes[e] = len;
	em_q_append(w, &ts->p_first, &ts->p_last, &ts->p_len, e);
}

/* Pauses the socket's recv while its bytes wait for window. */
static void ts_pause(struct em_worker *w, struct em_tstream *ts)
{
	struct em_sock *s = ts->s;
	if (!s || !(s->flags & EM_SF_RECV_ARMED) || (s->flags & EM_SF_RECV_CANCEL))
		return;
	struct io_uring_sqe *sqe = em_worker_sqe(w);
	io_uring_prep_cancel64(sqe, em_ud(s, EM_OP_RECV), 0);
	io_uring_sqe_set_data64(sqe, em_ud(s, EM_OP_CANCEL));
	s->flags |= EM_SF_RECV_CANCEL;
	s->inflight++;
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
			uint16_t ne = p ? em_worker_static_get(w, p, EM_ST_MALLOC) : EM_Q_NONE;
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
static void ts_flush(struct em_worker *w, struct em_tstream *ts)
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
			ts_fail(w, ts);
			return;
		}
		if (n > 0)
			mark_dirty(w, tc);
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
			mark_dirty(w, tc);
		ts->flags |= TS_FIN_SENT;
		ts_check_done(w, ts);
		return;
	}
	if (ts->s)
		em_sock_maybe_rearm(w, ts->s);
}

/* The stream cannot go on. A raw client or a local endpoint connection is
 * reset; a socketpair end half-closes so its HTTP upstream reads EOF before
 * any response (502) and then closes it. */
static void ts_fail(struct em_worker *w, struct em_tstream *ts)
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
		ts_free(w, ts);
		return;
	}
	if ((s->flags & EM_SF_TPAIR) && !(s->flags & EM_SF_CLOSING)) {
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

static int peer_dial_as(struct em_worker *w, struct tpeer *tp, bool replace);
static void dial_failed(struct em_worker *w, struct tpeer *tp, bool replace);

/* Stream ids are never reused: a tunnel that has EM_TUNNEL_ID_RESERVE or
 * fewer left gets a replacement dialled while the reserve carries new
 * streams; once the replacement is up it takes them and this one drains
 * (conn_up). */
static void maybe_replace(struct em_worker *w, struct em_tconn *tc)
{
	struct tpeer *tp = tc->tp;
	if (!tp || tp->conn != tc || tp->next || w->stopping || w->now_ms < tp->next_dial_ms ||
	    em_tunnel_session_ids_left(tc->sess) > EM_TUNNEL_ID_RESERVE)
		return;
	EM_INFO("tunnel",
	        "worker %u: tunnel to %s (%s): %u stream ids left, dialling a replacement", w->id,
	        tp->name, tc->addr, em_tunnel_session_ids_left(tc->sess));
	peer_dial_as(w, tp, true);
}

static void ts_open(struct em_worker *w, struct em_tconn *tc, struct em_tstream *ts)
{
	struct em_frame_target tg = {
	        .protocol = EM_FRAME_PROTO_TCP,
	        .port = ts->port,
	        .dst = ts->dst,
	        .node = {tc->tp->name, strlen(tc->tp->name)},
	        .ns = {ts->ns, strlen(ts->ns)},
	        .service = {ts->svc, strlen(ts->svc)},
	};
	const char *data = NULL;
	uint32_t len = 0;
	if (ts->p_len) {
		data = em_worker_entry(w, ts->p_first) + ts->p_off;
		len = w->q_bytes[ts->p_first] - ts->p_off;
	}
	uint32_t id = 0;
	int n = em_tunnel_session_open(tc->sess, &tg, data, len, ts, &id);
	if (n == -ENOBUFS)
		return; /* stays waiting: retried when the send ring drains */
	if (n == -EBUSY) {
		/* At the stream limit: wait for streams to end (retried after sends
		 * and on the tick), for at most the connect timeout, as a connect
		 * to a busy endpoint would. */
		if (ts->s && !(ts->flags & TS_WAIT_SLOT)) {
			ts->flags |= TS_WAIT_SLOT;
			em_sock_timer(w, ts->s, EM_T_IDLE, w->connect_ms);
		}
		return;
	}
	if ((ts->flags & TS_WAIT_SLOT) && ts->s) {
		ts->flags &= ~TS_WAIT_SLOT;
		em_sock_timer(w, ts->s, EM_T_IDLE, w->idle_ms);
	}
	em_dlist_del(&ts->node);
	ts->tp = NULL;
	if (n < 0) {
		ts_fail(w, ts);
		return;
	}
	ts->tc = tc;
	ts->id = id;
	em_dlist_push_tail(&tc->streams, &ts->node);
	mark_dirty(w, tc);
	maybe_replace(w, tc);
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
	ts_flush(w, ts);
}

static void peer_down(struct em_worker *w, struct tpeer *tp);
static int peer_dial(struct em_worker *w, struct tpeer *tp);

/* Sends <ts> toward <tp>: at once when the tunnel is up, after the dial when
 * one is under way; fails it at once while the peer waits for its redial. */
static void ts_submit(struct em_worker *w, struct tpeer *tp, struct em_tstream *ts)
{
	tp->wanted = true;
	if (tp->state == TP_DOWN && w->now_ms >= tp->next_dial_ms && !w->stopping)
		peer_dial(w, tp);
	if (tp->state == TP_DOWN) {
		ts_fail(w, ts);
		return;
	}
	ts->tp = tp;
	em_dlist_push_tail(&tp->waitq, &ts->node);
	if (tp->state == TP_UP)
		ts_open(w, tp->conn, ts);
}

static struct em_tstream *ts_new(struct em_worker *w, const struct em_svc_port *sp,
                                 const struct em_endpoint *ep)
{
	struct em_tstream *ts = ts_alloc(w);
	if (!ts)
		return NULL;
	ts->port = sp->port;
	ts->dst = ep->addr;
	if (sp->svc) {
		snprintf(ts->ns, sizeof(ts->ns), "%s", sp->svc->ns);
		snprintf(ts->svc, sizeof(ts->svc), "%s", sp->svc->name);
	}
	return ts;
}

void em_tun_start_raw(struct em_worker *w, struct em_sock *c, const struct em_svc_port *sp,
                      const struct em_endpoint *ep, uint32_t bid, uint32_t len)
{
	struct tpeer *tp = peer_get(w, ep->node);
	struct em_tstream *ts = tp ? ts_new(w, sp, ep) : NULL;
	if (!ts) {
		w->n_no_endpoint++;
		if (bid != EM_TUN_NO_BID)
			em_worker_buf_put(w, (uint16_t)bid);
		em_sock_close(w, c, true);
		return;
	}
	c->ts = ts;
	ts->s = c;
	c->state = EM_SK_OPEN;
	em_sock_timer(w, c, EM_T_IDLE, w->idle_ms);
	if (bid != EM_TUN_NO_BID)
		pending_push(w, ts, (uint16_t)bid, len);
	ts_submit(w, tp, ts);
	if (c->ts == ts && ts->p_len)
		ts_pause(w, ts);
}

struct em_sock *em_tun_http_upstream(struct em_worker *w, const struct em_svc_port *sp,
                                     const struct em_endpoint *ep)
{
	int sv[2];
	struct tpeer *tp = peer_get(w, ep->node);
	if (!tp)
		return NULL;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
		return NULL;
	struct em_sock *u = em_sock_alloc(w);
	struct em_sock *b = u ? em_sock_alloc(w) : NULL;
	struct em_tstream *ts = b ? ts_new(w, sp, ep) : NULL;
	if (!ts) {
		if (b)
			em_sock_release(w, b);
		if (u)
			em_sock_release(w, u);
		close(sv[0]);
		close(sv[1]);
		return NULL;
	}
	u->fd = sv[0];
	u->family = AF_UNIX;
	u->state = EM_SK_OPEN;
	u->ep = em_lb_ep_get(&w->lb, &ep->addr);
	if (u->ep) {
		u->ep->active++;
		u->ep->last_ms = w->now_ms;
	}
	b->fd = sv[1];
	b->family = AF_UNIX;
	b->state = EM_SK_OPEN;
	b->flags = EM_SF_TPAIR;
	b->ts = ts;
	ts->s = b;
	em_sock_arm_recv(w, b);
	ts_submit(w, tp, ts);
	return u;
}

/* ---- stream hooks of proxy.c ---- */

bool em_tun_recv_blocked(const struct em_sock *s)
{
	struct em_tstream *ts = s->ts;
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

void em_tun_sock_recv(struct em_worker *w, struct em_sock *s, uint16_t bid, uint32_t len)
{
	struct em_tstream *ts = s->ts;
	if (ts->flags & TS_DEAD) {
		/* Drained until its EOF (one read per arm). */
		em_worker_buf_put(w, bid);
		em_sock_maybe_rearm(w, s);
		return;
	}
	touch(w, s);
	pending_push(w, ts, bid, len);
	if (ts->tc && ts->id && ts->p_len == 1) {
		ts_flush(w, ts);
		if (s->ts != ts || (s->flags & EM_SF_CLOSING))
			return;
	}
	if (em_tun_recv_blocked(s))
		ts_pause(w, ts);
	else if (!(s->flags & EM_SF_RECV_ARMED))
		em_sock_maybe_rearm(w, s);
}

void em_tun_sock_eof(struct em_worker *w, struct em_sock *s)
{
	struct em_tstream *ts = s->ts;
	if (ts->flags & TS_DEAD) {
		em_sock_close(w, s, false);
		return;
	}
	ts->flags |= TS_LOCAL_EOF;
	if (ts->tc && ts->id && ts->p_len == 0)
		ts_flush(w, ts);
}

void em_tun_sock_drained(struct em_worker *w, struct em_sock *s)
{
	struct em_tstream *ts = s->ts;
	if ((ts->flags & TS_REMOTE_FIN) && !(s->flags & EM_SF_WR_SHUT) && s->state == EM_SK_OPEN)
		em_sock_shutdown(w, s);
}

void em_tun_sock_check_done(struct em_worker *w, struct em_sock *s)
{
	ts_check_done(w, s->ts);
}

void em_tun_sock_detach(struct em_worker *w, struct em_sock *s)
{
	struct em_tstream *ts = s->ts;
	s->ts = NULL;
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
		mark_dirty(w, tc);
	}
	ts_free(w, ts);
}

/* ---- session events ---- */

/* The chunk behind socket <s>'s last queue entry when it is a heap chunk of
 * stream <ts> with room left, else NULL. */
static struct tchunk *tail_chunk(struct em_worker *w, struct em_tstream *ts, struct em_sock *s)
{
	uint16_t e = s->q_len ? s->q_last : EM_Q_NONE;
	if (e == EM_Q_NONE || e < EM_BUF_COUNT || w->st_owned[e - EM_BUF_COUNT] != EM_ST_TCHUNK)
		return NULL;
	const char *p = w->st_ptr[e - EM_BUF_COUNT];
	const struct em_tun_worker *t = w->tun;
	if (t->rb.base && p >= t->rb.base && p < t->rb.base + (size_t)TUN_BUF_COUNT * TUN_BUF_SIZE)
		return NULL; /* a slice of a tunnel buffer */
	struct tchunk *c = (struct tchunk *)(void *)(p - offsetof(struct tchunk, data));
	if (c->ts != ts || c->gen != ts->gen || c->len >= c->cap || w->q_bytes[e] != c->len)
		return NULL;
	return c;
}

static void ts_data(struct em_worker *w, struct em_tconn *tc, struct em_tstream *ts, uint32_t id,
                    struct em_slice d)
{
	struct em_sock *s = ts->s;
	if (!s) {
		em_tunnel_session_consume(tc->sess, id, d.len, w->now_ms);
		return;
	}
	unsigned cap = w->st_nfree < TS_QTIGHT_FREE ? TS_QCAP_TIGHT : TS_QCAP;
	if (s->q_len < cap && ref_enqueue(w, ts, s, d)) {
		if (s->ts == ts)
			touch(w, s);
		return;
	}
	/* Small DATA joins the tail chunk: the entry grows in place (a send
	 * in flight covers its old length; on_send leaves the rest queued). */
	struct tchunk *tail = tail_chunk(w, ts, s);
	if (tail) {
		uint32_t n = (uint32_t)EM_MIN(d.len, (size_t)(tail->cap - tail->len));
		memcpy(tail->data + tail->len, d.base, n);
		tail->len += n;
		w->q_bytes[s->q_last] += n;
		d.base += n;
		d.len -= n;
		if (s->state == EM_SK_OPEN && !(s->flags & EM_SF_SEND_BUSY))
			em_sock_send_next(w, s);
		if (s->ts != ts)
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
		struct tchunk *c = s->q_len < cap * TS_QMAX_MUL ? chunk_get(w->tun, want) : NULL;
		uint16_t e = c ? em_worker_static_get(w, c->data, EM_ST_TCHUNK) : EM_Q_NONE;
		if (e == EM_Q_NONE) {
			if (c) {
				c->ts = NULL;
				em_tun_chunk_put(w, c->data);
			}
			em_tunnel_session_reset(tc->sess, id, EM_REASON_INTERNAL,
			                        s->q_len >= cap * TS_QMAX_MUL ? "stream queue limit"
			                                                      : "out of buffers");
			ts->id = 0;
			ts_fail(w, ts);
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
		if (s->ts != ts)
			return; /* the send failed and closed the socket */
	}
	touch(w, s);
}

static bool allow_node(void *ctx, struct em_slice name)
{
	EM_UNUSED(ctx);
	char buf[EM_FRAME_MAX_NAME + 1];
	if (name.len == 0 || name.len > EM_FRAME_MAX_NAME)
		return false;
	memcpy(buf, name.base, name.len);
	buf[name.len] = 0;
	const struct em_table *t = em_table_current();
	return t && em_table_node(t, buf) != NULL;
}

static void slice_str(char *dst, size_t cap, struct em_slice s)
{
	size_t n = EM_MIN(s.len, cap - 1);
	memcpy(dst, s.base, n);
	dst[n] = 0;
}

/* True when a per-stream refusal may be logged now; sets <*quiet> to the
 * number not logged since the last line. */
static bool refuse_log_ok(struct em_worker *w, uint32_t *quiet)
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

/* The peer opened a stream: serve it from a local endpoint of the named
 * service, the very one the opener picked, or refuse it. */
static void serve_open(struct em_worker *w, struct em_tconn *tc, const struct em_tunnel_event *ev)
{
	const struct em_frame_target *tg = ev->target;
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
		 * ours): another local endpoint of the service serves it. */
		uint32_t k = ev->stream_id % n_local;
		for (uint32_t i = 0; i < sp->n_ready && !ep; i++)
			if (sp->endpoints[i].local && k-- == 0)
				ep = &sp->endpoints[i];
		w->tun->n_open_repicked++;
	}
	if (!ep) {
		w->tun->n_open_refused++;
		uint32_t quiet;
		if (refuse_log_ok(w, &quiet)) {
			char dst[EM_ADDR_STRLEN];
			em_addr_format(&tg->dst, true, dst, sizeof(dst));
			EM_WARN("tunnel",
			        "worker %u: stream from %s to %s/%s port %u (%s) refused: %s "
			        "(%u more refusals not logged)",
			        w->id, tc_name(tc), ns, name, tg->port, dst,
			        !sp ? "no such service port here" : "no local endpoint here",
			        quiet);
		}
		em_tunnel_session_reset(tc->sess, ev->stream_id, EM_REASON_REFUSED,
		                        "not a local endpoint of that service here");
		return;
	}
	struct em_tstream *ts = ts_alloc(w);
	struct em_sock *u = ts ? em_sock_alloc(w) : NULL;
	if (!u || em_upstream_connect(w, u, ep) < 0) {
		if (u)
			em_sock_release(w, u);
		if (ts)
			ts_free(w, ts);
		w->tun->n_open_refused++;
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
	u->ts = ts;
	em_dlist_push_tail(&tc->streams, &ts->node);
	em_tunnel_session_set_user(tc->sess, ev->stream_id, ts);
	em_sock_timer(w, u, EM_T_IDLE, w->idle_ms);
}

static void open_waiting(struct em_worker *w, struct em_tconn *tc);

static void conn_up(struct em_worker *w, struct em_tconn *tc)
{
	tc->flags |= TC_UP;
	hs_end(tc);
	struct tpeer *tp = tc->tp;
	if (!tp) {
		EM_INFO("tunnel", "worker %u: tunnel from %s (%s) up", w->id, tc_name(tc),
		        tc->addr);
		return;
	}
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
			                         "stream ids exhausted");
			old->flags |= TC_GOAWAY;
			mark_dirty(w, old);
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

/* Opens the streams that waited for the tunnel or for send ring space. */
static void open_waiting(struct em_worker *w, struct em_tconn *tc)
{
	struct tpeer *tp = tc->tp;
	for (unsigned k = 0; k < 100000 && !em_dlist_empty(&tp->waitq); k++) {
		struct em_tstream *ts = em_container_of(tp->waitq.next, struct em_tstream, node);
		ts_open(w, tc, ts);
		if (ts->tp == tp)
			break; /* send ring full: the rest waits for it to drain */
	}
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

/* The peer is stopping (GOAWAY without error): its streams on <tc> finish
 * there, new ones need a new tunnel. A dialled tunnel leaves its peer, which
 * redials for the streams still waiting (the peer may be back already, as in
 * a rolling restart; if not, they fail fast). */
static void peer_draining(struct em_worker *w, struct em_tconn *tc)
{
	EM_INFO("tunnel", "worker %u: tunnel %s %s (%s): peer is stopping, %u stream(s) finishing",
	        w->id, tc->tp ? "to" : "from", tc_name(tc), tc->addr,
	        em_tunnel_session_streams(tc->sess));
	struct tpeer *tp = tc->tp;
	if (!tp || tp->conn != tc)
		return;
	peer_detach(w, tp);
	if (tp->state != TP_DOWN || em_dlist_empty(&tp->waitq))
		return;
	if (w->stopping)
		peer_down(w, tp); /* fails the waiting streams */
	else
		peer_dial(w, tp); /* on failure it fails them */
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
		if (tc->tp || hs_log_ok(w->tun, w->now_ms, &quiet))
			EM_WARN("tunnel",
			        "worker %u: tunnel %s %s (%s): handshake refused: %s%s%.*s "
			        "(%u more handshake failures not logged)",
			        w->id, tc->tp ? "to" : "from", tc_name(tc), tc->addr,
			        em_reason_str(ev->reason), ev->data.len ? ": " : "",
			        (int)EM_MIN(ev->data.len, 128), ev->data.base, quiet);
		break;
	}
	case EM_TUNNEL_EV_STREAM_OPEN:
		serve_open(w, tc, ev);
		break;
	case EM_TUNNEL_EV_DATA:
		if (ts)
			ts_data(w, tc, ts, ev->stream_id, ev->data);
		else
			em_tunnel_session_consume(tc->sess, ev->stream_id, ev->data.len, w->now_ms);
		break;
	case EM_TUNNEL_EV_FIN:
		if (ts) {
			ts->flags |= TS_REMOTE_FIN;
			struct em_sock *s = ts->s;
			if (s && s->q_len == 0 && !(s->flags & EM_SF_SEND_BUSY))
				em_tun_sock_drained(w, s);
		}
		break;
	case EM_TUNNEL_EV_RESET:
		if (ev->reason == EM_REASON_REFUSED || ev->reason == EM_REASON_UNREACHABLE) {
			/* The peer would not serve a stream we opened. */
			w->tun->n_refused++;
			uint32_t quiet;
			if (refuse_log_ok(w, &quiet))
				EM_WARN("tunnel",
				        "worker %u: %s refused a stream to %s/%s: %s%s%.*s "
				        "(%u more refusals not logged)",
				        w->id, tc_name(tc), ts ? ts->ns : "?", ts ? ts->svc : "?",
				        em_reason_str(ev->reason), ev->data.len ? ": " : "",
				        (int)EM_MIN(ev->data.len, 128), ev->data.base, quiet);
		}
		if (ts) {
			ts->id = 0;
			ts_fail(w, ts);
		}
		break;
	case EM_TUNNEL_EV_WINDOW:
		if (ts)
			ts_flush(w, ts);
		break;
	case EM_TUNNEL_EV_GOAWAY:
		if (ev->reason != EM_REASON_NO_ERROR)
			EM_WARN("tunnel", "worker %u: tunnel %s %s (%s): peer sent goaway: %s",
			        w->id, tc->tp ? "to" : "from", tc_name(tc), tc->addr,
			        em_reason_str(ev->reason));
		else
			peer_draining(w, tc);
		break;
	case EM_TUNNEL_EV_CLOSED:
	case EM_TUNNEL_EV_PONG:
		break;
	}
	mark_dirty(w, tc);
}

/* ---- tunnel sockets ---- */

static void conn_close(struct em_worker *w, struct em_tconn *tc)
{
	if (tc->flags & TC_CLOSING)
		return;
	tc->flags |= TC_CLOSING;
	hs_end(tc);
	if (tc->inflight == 0) {
		w->tun->n_conns--;
		conn_free(tc);
		return;
	}
	struct io_uring_sqe *sqe = em_worker_sqe(w);
	io_uring_prep_cancel_fd(sqe, tc->fd, IORING_ASYNC_CANCEL_ALL);
	io_uring_sqe_set_data64(sqe, em_ud(tc, EM_OP_TCOUNT));
	tc->inflight++;
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
		        tc->tp ? "to" : "from", tc_name(tc), tc->addr, why);
	if (tc->tp && tc->tp->next == tc) {
		/* The replacement failed: the old tunnel goes on with its
		 * reserve; the next open past the backoff tries again. */
		tc->tp->next = NULL;
		dial_failed(w, tc->tp, true);
	}
	for (unsigned k = 0; k < 1000000 && !em_dlist_empty(&tc->streams); k++) {
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
		ts_fail(w, ts);
	}
	if (tc->tp && tc->tp->conn == tc) {
		if (tc->tp->next)
			peer_detach(w, tc->tp); /* the replacement takes the waiting */
		else {
			tc->tp->conn = NULL;
			peer_down(w, tc->tp);
		}
	}
	conn_close(w, tc);
}

static void conn_arm_recv(struct em_worker *w, struct em_tconn *tc)
{
	struct io_uring_sqe *sqe = em_worker_sqe(w);
	io_uring_prep_recv_multishot(sqe, tc->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = TUN_BGID;
	io_uring_sqe_set_data64(sqe, em_ud(tc, EM_OP_TRECV));
	tc->flags |= TC_RECV;
	tc->inflight++;
}

/* Sends the session's next output slice (one send in flight). */
static void conn_kick(struct em_worker *w, struct em_tconn *tc)
{
	if (tc->flags & (TC_SEND | TC_CONNECTING | TC_CLOSING))
		return;
	struct iovec iov[EM_SENDV_IOV];
	unsigned n = em_tunnel_session_output_iov(tc->sess, iov, EM_SENDV_IOV);
	if (n == 0) {
		if (em_tunnel_session_should_close(tc->sess)) {
			uint32_t r = em_tunnel_session_close_reason(tc->sess);
			conn_dead(w, tc, r == EM_REASON_NO_ERROR ? NULL : em_reason_str(r));
		}
		return;
	}
	if (n > 1 && w->n_sendv == EM_SENDV_SLOTS)
		em_worker_submit(w);
	struct io_uring_sqe *sqe = em_worker_sqe(w);
	if (n > 1 && w->n_sendv < EM_SENDV_SLOTS) {
		struct em_sendv *v = &w->sendv[w->n_sendv++];
		memcpy(v->iov, iov, n * sizeof(iov[0]));
		v->mh = (struct msghdr){.msg_iov = v->iov, .msg_iovlen = n};
		io_uring_prep_sendmsg(sqe, tc->fd, &v->mh, MSG_NOSIGNAL);
	} else {
		io_uring_prep_send(sqe, tc->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
	}
	io_uring_sqe_set_data64(sqe, em_ud(tc, EM_OP_TSEND));
	tc->flags |= TC_SEND;
	tc->inflight++;
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

static int session_new(struct em_worker *w, struct em_tconn *tc, enum em_tunnel_role role)
{
	const struct em_config *cfg = em_config_current();
	if (!cfg || !cfg->tunnel.cluster_key[0])
		return -ENOKEY;
	struct em_tunnel_conf c = {
	        .role = role,
	        .node_name = cfg->node_name,
	        .key = cfg->tunnel.cluster_key,
	        .key_len = strlen(cfg->tunnel.cluster_key),
	        .peer_name = tc->tp ? tc->tp->name : "",
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
	tc->next_tick_ms = w->now_ms;
	if (role == EM_TUNNEL_DIALER && w->tun->test_first_id) {
		em_tunnel_session_test_set_next_id(tc->sess, w->tun->test_first_id);
		w->tun->test_first_id = 0;
	}
	return 0;
}

static struct em_tconn *conn_alloc(struct em_worker *w, int fd)
{
	int rc = w->tun->rb.br ? 0
	                       : em_bufring_init(&w->tun->rb, &w->ring, TUN_BGID, TUN_BUF_COUNT,
	                                         TUN_BUF_SIZE);
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
 * (the session allocates the rest after AUTH), and only so many of those:
 * past max_handshakes in progress on this worker, or
 * max_handshakes_per_source from one address, a new connection is closed
 * at once, and each must finish within handshake_ms. Returns true when
 * <fd> (from <a>) may go on. */
static bool hs_admit(struct em_worker *w, const struct em_addr *a)
{
	struct em_tun_worker *t = w->tun;
	const struct em_config *cfg = em_config_current();
	uint32_t max = cfg ? cfg->tunnel.max_handshakes : 1024;
	uint32_t per_src = cfg ? cfg->tunnel.max_handshakes_per_source : 64;
	const char *why = NULL;
	if (t->n_hs >= max)
		why = "handshakes in progress at tunnel.max_handshakes";
	else if (a->family && hs_from(t, a) >= per_src)
		why = "handshakes from this address at tunnel.max_handshakes_per_source";
	if (!why)
		return true;
	t->n_hs_refused++;
	uint32_t quiet;
	if (hs_log_ok(t, w->now_ms, &quiet)) {
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

void em_tun_accept(struct em_worker *w, int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct em_addr a = {0};
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0 ||
	    em_addr_from_sockaddr((struct sockaddr *)&ss, &a) != 0)
		a.family = 0;
	if (!hs_admit(w, &a)) {
		close(fd);
		return;
	}
	struct em_tconn *tc = conn_alloc(w, fd);
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
		        rc == -ENOKEY ? "no cluster key" : strerror(-rc));
		w->tun->n_conns--;
		conn_free(tc);
		return;
	}
	w->tun->n_accepted++;
	tc->flags |= TC_HS;
	em_dlist_push_tail(&w->tun->hs, &tc->hnode);
	w->tun->n_hs++;
	conn_arm_recv(w, tc);
	mark_dirty(w, tc);
}

/* Where <ni>'s tunnel listens: its InternalIP at its annotated port, else at
 * our own tunnel port (the same on every node), else the default. */
static struct em_addr peer_addr(const struct em_node_info *ni, const struct em_config *cfg)
{
	struct em_addr a = ni->internal_ip;
	a.port = ni->tunnel_port                    ? ni->tunnel_port
	         : cfg && cfg->tunnel.listen.family ? cfg->tunnel.listen.port
	                                            : TUN_DEFAULT_PORT;
	return a;
}

static void dial_failed(struct em_worker *w, struct tpeer *tp, bool replace)
{
	if (!replace) {
		peer_down(w, tp);
		return;
	}
	const struct em_config *cfg = em_config_current();
	tp->next_dial_ms = w->now_ms + em_tun_backoff(&tp->backoff_ms,
	                                              cfg ? cfg->tunnel.reconnect_min_ms : 200,
	                                              cfg ? cfg->tunnel.reconnect_max_ms : 30000,
	                                              rng_next(w->tun));
}

/* Dials <tp>: its tunnel, or with <replace> a replacement for the one it
 * has (tp->next; a failure then leaves <tp> as it was, but for the backoff
 * of the next try). */
static int peer_dial_as(struct em_worker *w, struct tpeer *tp, bool replace)
{
	const struct em_table *t = em_table_current();
	const struct em_config *cfg = em_config_current();
	const struct em_node_info *ni = t ? em_table_node(t, tp->name) : NULL;
	if (!ni || !ni->internal_ip.family) {
		if (tp->fails++ == 0)
			EM_WARN("tunnel", "worker %u: tunnel to %s: no such node or no InternalIP",
			        w->id, tp->name);
		dial_failed(w, tp, replace);
		return -EHOSTUNREACH;
	}
	struct em_addr a = peer_addr(ni, cfg);
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
	struct em_tconn *tc = conn_alloc(w, fd);
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
			        rc == -ENOKEY ? "no cluster key" : strerror(-rc));
		w->tun->n_conns--;
		conn_free(tc);
		dial_failed(w, tp, replace);
		return rc;
	}
	socklen_t sl = em_addr_to_sockaddr(&a, &tc->sa);
	w->tun->n_dialed++;
	if (replace) {
		tp->next = tc;
	} else {
		tp->conn = tc;
		tp->state = TP_DIALING;
	}
	tc->flags |= TC_CONNECTING;
	if (io_uring_sq_space_left(&w->ring) < 2)
		em_worker_submit(w);
	struct io_uring_sqe *sqe = em_worker_sqe(w);
	io_uring_prep_connect(sqe, fd, (struct sockaddr *)&tc->sa, sl);
	sqe->flags |= IOSQE_IO_LINK;
	io_uring_sqe_set_data64(sqe, em_ud(tc, EM_OP_TCONNECT));
	sqe = em_worker_sqe(w);
	io_uring_prep_link_timeout(sqe, &w->connect_ts, 0);
	io_uring_sqe_set_data64(sqe, em_ud(tc, EM_OP_TCOUNT));
	tc->inflight += 2;
	return 0;
}

static int peer_dial(struct em_worker *w, struct tpeer *tp)
{
	return peer_dial_as(w, tp, false);
}

/* <tp> has no tunnel: streams waiting for it fail, the redial is scheduled. */
static void peer_down(struct em_worker *w, struct tpeer *tp)
{
	tp->state = TP_DOWN;
	tp->conn = NULL;
	const struct em_config *cfg = em_config_current();
	uint32_t lo = cfg ? cfg->tunnel.reconnect_min_ms : 200;
	uint32_t hi = cfg ? cfg->tunnel.reconnect_max_ms : 30000;
	tp->next_dial_ms = w->now_ms + em_tun_backoff(&tp->backoff_ms, lo, hi, rng_next(w->tun));
	for (unsigned k = 0; k < 1000000 && !em_dlist_empty(&tp->waitq); k++) {
		struct em_tstream *ts = em_container_of(tp->waitq.next, struct em_tstream, node);
		ts_fail(w, ts);
	}
}

static void on_trecv(struct em_worker *w, struct em_tconn *tc, int res, uint32_t cflags)
{
	if (res > 0) {
		uint16_t bid = (uint16_t)(cflags >> IORING_CQE_BUFFER_SHIFT);
		struct em_tun_worker *t = w->tun;
		if (!(tc->flags & TC_DEAD)) {
			t->cur_bid = bid;
			em_tunnel_session_input(tc->sess, em_bufring_buf(&t->rb, bid), (size_t)res,
			                        w->now_ms);
			t->cur_bid = UINT32_MAX;
		}
		if (t->hold[bid].refs)
			t->hold[bid].held = true;
		else
			em_bufring_put(&t->rb, bid);
		mark_dirty(w, tc);
		if (!(tc->flags & TC_RECV) && !(tc->flags & TC_DEAD))
			conn_arm_recv(w, tc);
		return;
	}
	if (res == -ENOBUFS) {
		/* The buffers the recv filled came back as their CQEs were
		 * handled, but for at most TUN_HOLD_MAX held ones: the
		 * refill puts them in the ring before the re-arm. */
		w->n_nobufs++;
		em_bufring_dry(&w->tun->rb);
		em_bufring_refill(&w->tun->rb);
		if (!(tc->flags & (TC_RECV | TC_DEAD)))
			conn_arm_recv(w, tc);
		return;
	}
	if (res == -ECANCELED)
		return; /* the tick re-arms */
	if (tc->flags & TC_DEAD)
		return;
	conn_dead(w, tc, res == 0 ? "peer closed the connection" : strerror(-res));
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
			conn_free(tc);
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
			conn_dead(w, tc, strerror(-res));
			break;
		}
		em_tunnel_session_output_advance(tc->sess, (size_t)res);
		/* Ring space came back: bytes and opens that waited for it, in
		 * turn (a stream still blocked goes to the back), until the ring
		 * is full again: with many streams blocked, a completion must not
		 * walk them all for nothing. */
		/* Each stream set receiving again may bring a ring buffer's
		 * worth: that much room is set aside for it. */
		for (uint32_t k = 0, nb = 0, promised = 0;
		     k < 100000 && !em_dlist_empty(&tc->blocked); k++) {
			if (em_tunnel_session_send_room(tc->sess) < TUN_ARM_ROOM + promised ||
			    nb == 2)
				break;
			struct em_tstream *ts =
			        em_container_of(tc->blocked.next, struct em_tstream, bnode);
			em_dlist_del(&ts->bnode);
			ts_flush(w, ts);
			if (em_dlist_linked(&ts->bnode))
				nb++; /* ring full (or nearly): the rest waits */
			else
				promised += EM_BUF_SIZE;
		}
		if (tc->tp && tc->tp->conn == tc && tc->tp->state == TP_UP &&
		    !em_dlist_empty(&tc->tp->waitq))
			open_waiting(w, tc);
		mark_dirty(w, tc);
		break;
	case EM_OP_TCONNECT:
		tc->flags &= ~TC_CONNECTING;
		if (res < 0) {
			struct tpeer *tp = tc->tp;
			bool first = tp && tp->fails++ == 0;
			if (first)
				conn_dead(w, tc,
				          res == -ECANCELED ? "connect timed out" : strerror(-res));
			else
				conn_dead(w, tc, NULL);
			break;
		}
		conn_arm_recv(w, tc);
		mark_dirty(w, tc);
		break;
	default:
		break;
	}
}

void em_tun_flush(struct em_worker *w)
{
	struct em_tun_worker *t = w->tun;
	em_bufring_refill(&t->rb);
	for (unsigned k = 0; k < 100000 && !em_dlist_empty(&t->dirty); k++) {
		struct em_tconn *tc = em_container_of(t->dirty.next, struct em_tconn, dnode);
		em_dlist_del(&tc->dnode);
		tc->flags &= ~TC_DIRTY;
		conn_kick(w, tc);
	}
}

/* The table changed: a peer whose Node now gives another tunnel address
 * (or is gone) gets a new tunnel for new streams; the old one drains (our
 * GOAWAY, its streams finish). */
static void peers_recheck(struct em_worker *w, const struct em_table *tab)
{
	const struct em_config *cfg = em_config_current();
	struct em_tun_worker *t = w->tun;
	for (struct em_dlist *n = t->peers.next; n != &t->peers; n = n->next) {
		struct tpeer *tp = em_container_of(n, struct tpeer, node);
		struct em_tconn *tc = tp->conn;
		if (!tc || tp->state != TP_UP)
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
		mark_dirty(w, tc);
		peer_detach(w, tp);
	}
}

void em_tun_tick(struct em_worker *w)
{
	struct em_tun_worker *t = w->tun;
	em_bufring_tick(&t->rb);
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
			mark_dirty(w, tc);
		}
		if (!(tc->flags & TC_RECV))
			conn_arm_recv(w, tc);
		if (tc->tp && tc->tp->conn == tc && tc->tp->state == TP_UP &&
		    !em_dlist_empty(&tc->tp->waitq))
			open_waiting(w, tc);
		if (w->now_ms >= tc->next_tick_ms) {
			uint64_t d = em_tunnel_session_tick(tc->sess, w->now_ms);
			tc->next_tick_ms = w->now_ms + d;
			mark_dirty(w, tc);
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
		if (tp->wanted && tp->state == TP_DOWN && w->now_ms >= tp->next_dial_ms)
			peer_dial(w, tp);
	}
	em_tun_flush(w);
}

bool em_tun_idle(const struct em_worker *w)
{
	return !w->tun || w->tun->n_conns == 0;
}

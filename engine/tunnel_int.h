/* Internal to engine/tunnel*.c: the types and functions the tunnel files
 * share. Layers, bottom up:
 *   tunnel_buf.c     tunnel buffers: the receive ring, held slices, chunks
 *   tunnel_conn.c    tunnel connections: socket I/O, handshake admission,
 *                    counters; events go up through em_tun_worker.dead/sent
 *   tunnel_stream.c  bridged streams: the bridge socket mode, DATA to the
 *                    socket and socket bytes to the session, serving opens
 *   tunnel.c         peers, dialing, session events, the tick
 * Each file calls by name only the files listed before it. */
#ifndef EM_ENGINE_TUNNEL_INT_H
#define EM_ENGINE_TUNNEL_INT_H

#include <stdatomic.h>

#include "engine/tunnel.h"
#include "tunnel/session.h"

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
 * in the kernel, for sends to make room (see bridge_recv_blocked). */
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

#define TUN_PEER_BUCKETS 512u /* a worker's peers by name */
/* With tunnel TLS, handshakes in progress per worker are capped here too
 * (each holds a TLS pipe of about 120 KiB: 15 MiB at most). */
#define TUN_TLS_MAX_HS 128u
/* The GOAWAY text of a tunnel drained for its stream ids: a node whose
 * cloud tunnel gets it dials a new one at once. */
#define TUN_IDS_EXHAUSTED "stream ids exhausted"

struct tpeer {
	struct em_dlist node;
	struct tpeer *hnext; /* em_tun_worker.by_name chain (not the cloud peer) */
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
	/* Cloud role: the node's tunnels it dialled to us. <conn> is one of
	 * them, up, on this worker; never dialled (an edge may be behind NAT),
	 * DOWN while there is none here. */
	bool inbound;
	/* The edge's tunnel to the cloud: dialled at <fixed> (cloud.address),
	 * whatever node name the cloud gives; never found by name. */
	bool cloud;
	struct em_addr fixed;
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
	TC_HUB = 1u << 9,    /* counted in the hub (tun_hub_count) */
	/* Accepted by a cloud that signs certificates: TLS or not is decided
	 * by the first byte (a TLS record or a tunnel HELLO); nothing is sent
	 * until then. */
	TC_SNIFF = 1u << 10,
	/* Unencrypted tunnel of a node whose tunnels run TLS: an edge that has
	 * no certificate yet and the cloud it enrolls with. Only the control
	 * stream (a certificate request) may run on it. */
	TC_ENROLL = 1u << 11,
};

/* A peer node's tunnels on one worker, for em_tun_publish_peers: bytes of
 * the tunnels already freed, and the totals as last published. Records
 * are never dropped (a worker keeps at most TUN_MAX_PEERSTATS). */
#define TUN_MAX_PEERSTATS 4096u
struct tun_peerstat {
	uint64_t rx_retired, tx_retired;
	char name[EM_FRAME_MAX_NAME + 1];
};

struct em_tconn {
	struct em_dlist node;    /* tun->conns */
	struct em_dlist hnode;   /* tun->hs while TC_HS */
	struct em_dlist dnode;   /* tun->dirty */
	struct em_dlist streams; /* every attached stream */
	struct em_dlist blocked; /* streams with bytes waiting for send ring room */
	struct em_worker *w;
	struct tpeer *tp; /* dialled: its peer; accepted: NULL */
	struct tpeer *ip; /* accepted on the cloud, once up: its inbound peer */
	struct em_tunnel_session *sess;
	/* tunnel.encryption "tls": the TLS 1.3 pipe between the socket and the
	 * session (ciphertext on the socket, the session's bytes inside). */
	struct em_tls_pipe *tls;
	uint32_t tls_gen; /* the engine's tls_gen when the pipe was made */
	int64_t tls_half; /* this node's certificate then: half its lifetime */
	uint64_t next_tick_ms;
	/* Drained for a renewed certificate: closed at this time (timeouts.
	 * shutdown_ms after its GOAWAY) with whatever streams are left. */
	uint64_t drain_until_ms;
	int fd;
	uint16_t inflight;
	uint16_t flags;
	int32_t pidx; /* its peer's tun_peerstat once up (authenticated), else -1 */
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
	TS_PAIR = 1u << 5,      /* the socket is a socketpair end (em_tun_pair) */
	TS_CONTROL = 1u << 6,   /* the control stream (PROTOCOL.md 9) */
	TS_RELAY = 1u << 7,     /* TS_PAIR carrying raw bytes (a leg of the
	                         * cloud's relay, or a raw client's stream opened
	                         * by another worker): the socketpair carries a
	                         * reset as a full close, a FIN as a half close */
};

/* Relayed streams between two edges, counted on the cloud per pair
 * (meshctl stats, "relay"): bytes[0] went from <a> to <b>, bytes[1] back. */
struct tun_relay_pair {
	char a[EM_FRAME_MAX_NAME + 1];
	char b[EM_FRAME_MAX_NAME + 1];
	_Atomic uint64_t streams, refused;
	_Atomic uint64_t bytes[2];
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
	uint8_t rp_dir; /* which of rp->bytes its DATA from the tunnel counts in */
	struct em_addr dst;
	struct tun_relay_pair *rp; /* a leg of a relayed stream (cloud), else NULL */
	char node_name[EM_FRAME_MAX_NAME + 1]; /* the node that serves it */
	char ns[EM_FRAME_MAX_NS + 1];
	char svc[EM_FRAME_MAX_NAME + 1];
};

/* A stream handed to the worker that holds a tunnel to its node: <fd> is a
 * socketpair end to bridge to a new stream with this target. */
struct tun_handoff {
	struct tun_handoff *next;
	int fd;
	uint16_t port;
	uint8_t rp_dir;
	bool relay; /* TS_RELAY */
	struct em_addr dst;
	struct tun_relay_pair *rp;
	char node[EM_FRAME_MAX_NAME + 1];
	char ns[EM_FRAME_MAX_NS + 1];
	char svc[EM_FRAME_MAX_NAME + 1];
};

struct em_tun_worker {
	struct em_dlist peers;
	struct tpeer *cloud; /* in <peers> too; NULL until a control stream asks */
	struct tpeer *by_name[TUN_PEER_BUCKETS]; /* <peers> but the cloud, by name */
	struct em_dlist conns;
	struct em_dlist hs; /* accepted tunnels not yet authenticated */
	uint32_t n_hs;
	uint64_t hs_log_ms; /* handshake refusals and failures: one line a second */
	uint32_t hs_quiet;
	/* Test only (EDGEMESH_TEST_TUNNEL_FIRST_ID): the first stream id of the
	 * first tunnel this worker dials (on the cloud: also accepts, that id
	 * less one), 0 = normal. */
	uint32_t test_first_id;
	/* Plaintext out of a tunnel's TLS pipe, on its way to the session:
	 * one record at a time. */
	uint8_t tls_plain[16384];
	struct em_dlist dirty;
	struct em_tstream *free_ts;
	struct tchunk *free_small, *free_big;
	uint32_t n_free_small, n_free_big;
	uint32_t n_conns;
	uint64_t rng;
	struct em_bufring rb; /* group TUN_BGID, set up with the first tunnel */
	struct tbufhold hold[TUN_BUF_COUNT];
	uint32_t n_held;  /* buffers with refs */
	uint32_t cur_bid; /* buffer being parsed by input(), or EM_NO_BUF */
	bool exiting;     /* worker exit: the buffer ring is gone */
	/* Session counters of the sessions already freed (EM_TUN_SESSION_COUNTERS). */
	uint64_t retired[EM_C__COUNT];
	/* Per peer node (em_tun_publish_peers). */
	struct tun_peerstat *ps;
	uint32_t n_ps, cap_ps;
	/* Per-stream refusals are logged at most once a second per worker. */
	uint64_t refuse_log_ms;
	uint32_t refuse_quiet; /* refusals not logged since the last line */
	uint64_t table_gen;    /* table generation peers' addresses were checked at */
	uint32_t tls_gen, revs_gen; /* the engine's, as last acted on */
	/* Events of tunnel connections for the layer above them (tunnel.c):
	 * <tc> is over (every stream fails, a dialled peer redials; <why>
	 * for the log, or NULL), and the send ring of <tc> has room again. */
	void (*dead)(struct em_worker *w, struct em_tconn *tc, const char *why);
	void (*sent)(struct em_worker *w, struct em_tconn *tc);
	/* For serving relayed streams (cloud, tunnel_stream.c): whether a
	 * tunnel from <node> is up here or on another worker; and the second
	 * leg of a relayed stream: <in> is the first (served here, target
	 * copied from its OPEN, rp set), <fd> a socketpair end, taken, bridged
	 * to a new stream with the same target toward in->node_name, opened by
	 * the worker holding that node's tunnel. False when it could not be
	 * started (<fd> closed: the first leg sees EOF). */
	bool (*reachable)(struct em_worker *w, const char *node);
	bool (*relay_open)(struct em_worker *w, struct em_tstream *in, int fd);
};

/* Queues <tc> for the flush after this batch of completions (em_tun_flush
 * sends what its session has to say). */
static inline void tun_mark_dirty(struct em_worker *w, struct em_tconn *tc)
{
	if (!(tc->flags & TC_DIRTY)) {
		tc->flags |= TC_DIRTY;
		em_dlist_push_tail(&w->tun->dirty, &tc->dnode);
	}
}

/* The peer's node name for logs: authenticated, dialled, or "?". */
static inline const char *tun_tc_name(const struct em_tconn *tc)
{
	const char *n = tc->sess ? em_tunnel_session_peer_name(tc->sess) : "";
	return n[0] ? n : (tc->tp ? tc->tp->name : "?");
}

/* tunnel_hub.c: state shared by the workers, under one mutex -------------- */

/* Worker <worker> has one more (<delta> 1) or one less (-1) up accepted
 * tunnel from <node>. */
void tun_hub_count(struct em_engine *e, const char *node, unsigned worker, int delta);

/* A worker other than <from> holding an up accepted tunnel from <node>
 * (the first after <from> in turn), or -1. */
int tun_hub_find(struct em_engine *e, const char *node, unsigned from);

/* Queues <o> (malloc'd, taken) for worker <worker> and wakes it; it takes
 * them all at its wake (tun_hub_take). Returns 0, or -errno when the wake
 * could not be written (the item stays queued). */
int tun_hub_post(struct em_engine *e, unsigned worker, struct tun_handoff *o);

/* Everything queued for <worker>, oldest first; the caller owns the list. */
struct tun_handoff *tun_hub_take(struct em_engine *e, unsigned worker);

/* Edge: the cloud's node name as its tunnel's handshake told it. */
void tun_hub_set_cloud(struct em_engine *e, const char *name);
bool tun_hub_is_cloud(struct em_engine *e, const char *name);

/* The counters of relayed streams from <a> to <b>, made on first use;
 * NULL past the hub's cap or out of memory. Valid until tun_hub_free. */
struct tun_relay_pair *tun_hub_pair(struct em_engine *e, const char *a, const char *b);

/* tunnel_buf.c -------------------------------------------------------------- */

/* A chunk of CH_SMALL or CH_BIG bytes (the smallest <want> fits; pooled ones
 * first), or of CH_HUGE for <want> beyond CH_BIG. NULL when out of memory.
 * Goes back through tun_chunk_release once queued, or directly with its
 * <ts> NULL. */
struct tchunk *tun_chunk_get(struct em_tun_worker *t, size_t want);

/* The release function of queue entries holding a chunk or a slice of a
 * tunnel buffer: returns the bytes' window to their stream when it is still
 * the same one (gen), and the memory to its pool. */
void tun_chunk_release(struct em_worker *w, const char *p);

/* Queues DATA <d> (a slice of the tunnel buffer being parsed) on socket
 * <s> of stream <ts> without copying: the buffer is held until the slice
 * is sent. Returns false, changing nothing, when it must be copied instead
 * (small, not in the buffer, too many buffers or slices held, no slot). */
bool tun_ref_enqueue(struct em_worker *w, struct em_tstream *ts, struct em_sock *s,
                     struct em_slice d);

/* The chunk behind socket <s>'s last queue entry when it is a heap chunk of
 * stream <ts> with room left, else NULL. */
struct tchunk *tun_tail_chunk(struct em_worker *w, struct em_tstream *ts, struct em_sock *s);

/* At worker exit, after the connections: frees the pooled chunks and the
 * tunnel buffer ring. */
void tun_buf_free(struct em_worker *w);

/* tunnel_conn.c ------------------------------------------------------------- */

/* A tunnel connection for socket <fd> (not taken on failure), linked on
 * the worker's list; sets up the tunnel buffer ring with the first one.
 * NULL when out of memory or the ring cannot be had (logged). */
struct em_tconn *tun_conn_alloc(struct em_worker *w, int fd);

/* Frees <tc> (nothing in flight), its session (its counters are kept) and
 * closes its fd. The caller unlinks nothing and decrements n_conns. */
void tun_conn_free(struct em_tconn *tc);

/* Starts closing <tc>: cancels what is in flight, frees it once the last
 * completion is in. Streams must have been failed before (t->dead). */
void tun_conn_close(struct em_worker *w, struct em_tconn *tc);

/* Arms the multishot recv of <tc> (none may be armed). */
void tun_conn_arm_recv(struct em_worker *w, struct em_tconn *tc);

/* <tc>'s handshake is over (done, failed or closed): its slot is free. */
void tun_hs_end(struct em_tconn *tc);

/* True when a handshake refusal or failure may be logged now (one line a
 * second); sets <*quiet> to the number not logged since the last line. */
bool tun_hs_log_ok(struct em_tun_worker *t, uint64_t now_ms, uint32_t *quiet);

/* Whether a connection accepted from <a> may start a handshake: under
 * tunnel.max_handshakes on this worker and max_handshakes_per_source from
 * its address. A refusal is counted and logged (at most once a second). */
bool tun_hs_admit(struct em_worker *w, const struct em_addr *a);

/* tunnel_stream.c ----------------------------------------------------------- */

/* The bridge socket mode: a socket whose bytes go to and come from stream
 * s->ctx (struct em_tstream). The control stream's socketpair end
 * (TS_CONTROL) is idle to a stopping worker, which closes it at once (the
 * controller resyncs an edge from what it acknowledged). */
extern const struct em_sock_ops tun_bridge_ops;
/* The control stream's idle timeout: it is quiet between changes and the
 * tunnel's keepalive finds a dead peer, but a stopping worker finds its
 * sockets on the idle timer list (and closes them at once, see above). */
#define TUN_CONTROL_IDLE_MS (24u * 3600 * 1000)

/* A zeroed stream (gen moved on, lists unlinked), pooled ones first; NULL
 * when out of memory. */
struct em_tstream *tun_ts_alloc(struct em_worker *w);

/* A stream toward endpoint <ep> of <sp> (target filled in), not attached
 * to anything yet. NULL when out of memory. */
struct em_tstream *tun_ts_new(struct em_worker *w, const struct em_svc_port *sp,
                              const struct em_endpoint *ep);

/* Unlinks <ts>, drops its pending bytes and puts it back in the pool:
 * chunks of it still queued no longer return window. */
void tun_ts_free(struct em_worker *w, struct em_tstream *ts);

/* Appends socket bytes (entry <e>, <len> bytes, taken) to the bytes of
 * <ts> waiting for the session. */
void tun_pending_push(struct em_worker *w, struct em_tstream *ts, uint16_t e, uint32_t len);

/* Pauses the recv of <ts>'s socket while its bytes wait for window. */
void tun_ts_pause(struct em_worker *w, struct em_tstream *ts);

/* Writes the socket's waiting bytes into the session, then its FIN; what
 * the window does not take waits (the WINDOW event or a send completion
 * flushes again). May fail the stream (and close its socket). */
void tun_ts_flush(struct em_worker *w, struct em_tstream *ts);

/* The stream cannot go on: unlinked from its tunnel or peer; a raw client
 * or a local endpoint connection is reset, a socketpair end half-closes so
 * that its HTTP upstream reads EOF before any response (502). The caller
 * has reset it on the session, if it had an id. May close the socket. */
void tun_ts_fail(struct em_worker *w, struct em_tstream *ts);

/* Opens waiting stream <ts> (on its peer's waitq) on <tc> with the first
 * of its bytes. Returns true when opened (moved to tc->streams) or failed
 * for good (gone from the waitq); false when it keeps waiting: the send
 * ring is full (retried when it drains) or the peer's stream limit is
 * reached (retried after sends and on the tick, for at most the connect
 * timeout). */
bool tun_ts_open(struct em_worker *w, struct em_tconn *tc, struct em_tstream *ts);

/* DATA <d> of stream <ts> (id <id> on <tc>) for its socket: queued
 * without copy when it can be, else copied into chunks (small DATA joins
 * the tail chunk). A stream over its queue cap is reset, it alone. */
void tun_ts_data(struct em_worker *w, struct em_tconn *tc, struct em_tstream *ts, uint32_t id,
                 struct em_slice d);

/* The peer sent FIN on <ts>: once its socket sent what it queued, the
 * socket's write side is shut. */
void tun_ts_remote_fin(struct em_worker *w, struct em_tstream *ts);

/* True when a per-stream refusal may be logged now (one line a second);
 * sets <*quiet> to the number not logged since the last line. */
bool tun_refuse_log_ok(struct em_worker *w, uint32_t *quiet);

/* The peer opened stream <ev> on <tc>: it is served from a local endpoint
 * of the named service, the very one the opener picked if it is still
 * here, or refused (reset with a reason, counted, logged). */
void tun_serve_open(struct em_worker *w, struct em_tconn *tc, const struct em_tunnel_event *ev);

#endif

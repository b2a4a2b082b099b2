/* Internal to engine/: the worker thread, its ring, its sockets.
 *
 * Every object an SQE points to carries the operation in the low 4 bits of
 * user_data (objects are 16-byte aligned); em_worker_dispatch in worker.c is
 * the one place that decodes it. A socket counts its requests in flight
 * (<inflight>, a multishot request counts once until its last CQE); closing
 * is cancel -> drain completions -> close the fd -> free. */
#ifndef EM_ENGINE_WORKER_H
#define EM_ENGINE_WORKER_H

#include <liburing.h>
#include <sys/socket.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>

#include "engine/balancer.h"
#include "engine/bufring.h"
#include "engine/engine.h"
#include "engine/list.h"

enum em_op {
	EM_OP_NONE = 0, /* result ignored (cancels of listeners) */
	EM_OP_ACCEPT,   /* struct em_listener */
	EM_OP_RECV,     /* struct em_sock ... */
	EM_OP_SEND,
	EM_OP_CONNECT,
	EM_OP_LTIMEOUT,
	EM_OP_SHUTDOWN,
	EM_OP_CANCEL,
	EM_OP_TICK, /* struct em_worker */
	EM_OP_WAKE,
	EM_OP_TRECV, /* struct em_tconn (engine/tunnel.c) */
	EM_OP_TSEND,
	EM_OP_TCONNECT,
	EM_OP_TCOUNT, /* link timeouts and cancels of a tunnel socket: only counted */
};
#define EM_UD_OP_MASK 15u

static inline uint64_t em_ud(const void *p, enum em_op op)
{
	return (uint64_t)(uintptr_t)p | op;
}

/* Ring buffers: one group per worker. Sized for bulk throughput while
 * keeping a worker's buffer memory at EM_BUF_COUNT * EM_BUF_SIZE; reads
 * land in the most recently used of them (engine/bufring.h). */
#define EM_BUF_SIZE  32768u
#define EM_BUF_COUNT 256u
#define EM_BGID      0
/* Buffers no single queue may take: with fewer free, every received buffer
 * is copied to the heap and handed straight back, so new connections and
 * the sockets not stalled always find one (em_worker_buf_share). */
#define EM_BUF_RESERVE 32u
/* Heap blocks bytes over a queue's share are copied into; a queue's tail
 * block takes further bytes until full. A queue's first block holds one
 * ring buffer, later ones EM_SPILL_BYTES; up to EM_SPILL_POOL_SMALL and
 * EM_SPILL_POOL free blocks of each size are kept per worker (given back
 * with the idle trim). */
#define EM_SPILL_BYTES      (128u * 1024)
#define EM_SPILL_POOL       16u
#define EM_SPILL_POOL_SMALL 128u
/* Receive buffers unused this long give their pages back (em_worker.c). */
#define EM_TRIM_IDLE_MS 3000u

/* Queued bytes are lists of entries threaded through per-worker arrays: an
 * entry below EM_BUF_COUNT is a ring buffer, above it a "static" slot that
 * points at other memory (error pages, heads assembled across buffers).
 * When the peer's queue holds EM_Q_HIGH entries the source's multishot recv
 * is cancelled; it is re-armed at EM_Q_LOW. CQEs already posted before the
 * cancel still queue: past the queue's share of the ring
 * (em_worker_buf_share) their bytes are copied to spill blocks on the heap,
 * so what one queue holds of the ring is bounded by that share. */
/* Tunnel streams queue a chunk per DATA event (small ones join the last
 * chunk of their stream): room for many streams. */
#define EM_STATIC_SLOTS 8192u
#define EM_QSLOTS       (EM_BUF_COUNT + EM_STATIC_SLOTS)
#define EM_Q_NONE       0xffffu
#define EM_Q_HIGH       3u
#define EM_Q_LOW        1u
/* Static slots only borrowed entries (error pages) may take, so an error
 * page can be sent whatever the streams queued. */
#define EM_ST_RESERVE 256u
/* Where the kernel supports it (6.17+, probed at start), a multishot recv
 * ends by itself once it has read this many bytes (plus at most one
 * buffer) and is re-armed: a source whose peer stalls then overshoots by a
 * few buffers before its cancel lands, instead of up to 32 per run of the
 * recv. */
#define EM_RECV_CAP (16u * EM_BUF_SIZE)

enum em_timer_class {
	EM_T_NONE = 0,
	EM_T_SNIFF, /* client silent so far */
	EM_T_HEAD,  /* HTTP: waiting for a request head */
	EM_T_IDLE,  /* forwarding: no bytes either way */
	EM_T_POOL,  /* pooled idle upstream connection */
	/* HTTP client answered and its write side shut: dropping what it
	 * still sends until it closes (engine/http.h EM_HTTP_LINGER_MS) */
	EM_T_LINGER,
	EM_T__COUNT
};

enum em_sock_state {
	EM_SK_SNIFF = 0,  /* client: waiting for its first bytes */
	EM_SK_CONNECTING, /* upstream: connect in flight */
	EM_SK_OPEN,       /* forwarding to/from <peer> */
	EM_SK_HTTP,       /* client: HTTP/1.x, one request at a time */
	EM_SK_POOLED,     /* upstream: idle in its endpoint's pool */
};

enum {
	EM_SF_CLIENT = 1u << 0,
	EM_SF_RECV_ARMED = 1u << 1,
	EM_SF_RECV_CANCEL = 1u << 2, /* cancel of the recv in flight */
	EM_SF_RD_EOF = 1u << 3,      /* peer sent FIN */
	EM_SF_WR_SHUT = 1u << 4,     /* shutdown(SHUT_WR) submitted */
	EM_SF_WR_DONE = 1u << 5,     /* ... and completed */
	EM_SF_SEND_BUSY = 1u << 6,
	EM_SF_CLOSING = 1u << 7,
	EM_SF_ABORT = 1u << 8,        /* close with RST */
	EM_SF_STARVED = 1u << 9,      /* waits on w->starved for buffers */
	EM_SF_CLOSE_AFTER = 1u << 10, /* close once the queue is sent */
	EM_SF_CAPTURED = 1u << 11,    /* client came through the capture port */
	EM_SF_TPAIR = 1u << 12,       /* socketpair end bridging an HTTP upstream to a stream */
	/* HTTP upstream reused from the pool with nothing of the response seen
	 * yet: the keep-alive close of the backend may have raced the request,
	 * so sent entries are kept (k_*) to replay it on a new connection. */
	EM_SF_REPLAY = 1u << 13,
	/* Bytes for this socket went to spill blocks since its queue was last
	 * empty: its peer is reading faster than this socket sends, so the
	 * peer's recvs read one buffer per arm while the ring runs low. */
	EM_SF_SPILLED = 1u << 14,
};

/* Entries kept for a replay at most; a request longer than that is sent
 * without a safety net (its start is released). */
#define EM_REPLAY_KEEP 4u

/* st_owned kinds of a static entry: borrowed memory that outlives the
 * queue (error pages), malloc'd, a tunnel chunk or slice (engine/tunnel.c),
 * a spill block (em_worker_spill). */
enum { EM_ST_BORROWED = 0, EM_ST_MALLOC = 1, EM_ST_TCHUNK = 2, EM_ST_SPILL = 3 };

/* em_listener.idx of the tunnel listener (capture is UINT16_MAX). */
#define EM_LISTENER_TUNNEL (UINT16_MAX - 1)

struct em_http;
struct em_http1_head;
struct em_tstream;
struct em_tun_worker;

struct em_sock {
	struct em_dlist tnode; /* w->timers[tclass] membership */
	struct em_dlist snode; /* w->starved membership */
	struct em_dlist pnode; /* upstream: its endpoint's idle pool */
	struct em_sock *peer;  /* the other side while forwarding */
	struct em_lb_ep *ep;   /* upstream: endpoint state (counts, pool) */
	struct em_http *http;  /* client in HTTP mode */
	struct em_tstream *ts; /* bridged to a tunnel stream (engine/tunnel.c) */
	uint64_t deadline_ms;
	int fd;
	uint16_t flags;
	uint8_t state;
	uint8_t tclass;
	uint16_t inflight;
	uint16_t q_first, q_last, q_len; /* entries queued for sending on this socket */
	uint32_t q_off;                  /* bytes of the first entry already sent */
	uint16_t k_first, k_last, k_len; /* sent entries kept while EM_SF_REPLAY */
	uint16_t listener; /* client: index in the config's listeners, UINT16_MAX = capture */
	uint8_t retries;
	uint8_t family;
	union {
		struct em_addr dst;      /* client: original destination */
		struct sockaddr_in6 sa6; /* upstream: connect address until submit */
		struct sockaddr_in sa4;
	};
} __attribute__((aligned(16)));

struct em_listener {
	struct em_worker *w;
	int fd;
	uint16_t idx; /* index in the config's listeners, UINT16_MAX for capture */
	bool armed;
	bool closed;
} __attribute__((aligned(16)));

/* Counters `meshctl stats` reports (group, name). Each worker publishes its
 * values once per tick with relaxed atomic stores (em_worker_publish); the
 * stats reader sums them over the workers. */
#define EM_COUNTERS(X)                                                                             \
	X(ACCEPTED, "engine", "connections_accepted")                                              \
	X(ACTIVE, "engine", "connections_active")                                                  \
	X(REQUESTS, "engine", "http_requests")                                                     \
	X(REPLAYS, "engine", "http_replays")                                                       \
	X(CONNECT_FAIL, "engine", "upstream_connect_failures")                                     \
	X(NO_ENDPOINT, "engine", "no_endpoint")                                                    \
	X(NOBUFS, "engine", "recv_buffer_shortages")                                               \
	X(SPILLED, "engine", "recv_buffers_spilled")                                               \
	X(T_UP, "tunnel", "tunnels_up")                                                            \
	X(T_DIALED, "tunnel", "tunnels_dialed")                                                    \
	X(T_ACCEPTED, "tunnel", "tunnels_accepted")                                                \
	X(T_CLOSED, "tunnel", "tunnels_closed")                                                    \
	X(T_STREAMS, "tunnel", "streams_active")                                                   \
	X(T_OPENED_LOCAL, "tunnel", "streams_opened")                                              \
	X(T_OPENED_REMOTE, "tunnel", "streams_served")                                             \
	X(T_OPEN_REFUSED, "tunnel", "opens_refused")                                               \
	X(T_OPEN_REPICKED, "tunnel", "opens_repicked")                                             \
	X(T_REFUSED, "tunnel", "streams_refused_by_peer")                                          \
	X(T_RESETS_IN, "tunnel", "resets_received")                                                \
	X(T_RESETS_OUT, "tunnel", "resets_sent")                                                   \
	X(T_BYTES_IN, "tunnel", "bytes_received")                                                  \
	X(T_BYTES_OUT, "tunnel", "bytes_sent")                                                     \
	X(T_LIMIT_STREAMS, "tunnel", "limit_streams")                                              \
	X(T_LIMIT_PINGS, "tunnel", "limit_pings")                                                  \
	X(T_LIMIT_UPDATES, "tunnel", "limit_window_updates")                                       \
	X(T_LIMIT_EMPTY, "tunnel", "limit_empty_data")                                             \
	X(T_LIMIT_RESETS, "tunnel", "limit_resets")                                                \
	X(T_LIMIT_CTRL, "tunnel", "limit_control_queue")                                           \
	X(T_LIMIT_FLOW, "tunnel", "flow_control_errors")                                           \
	X(T_AUTH_FAIL, "tunnel", "auth_failures")                                                  \
	X(T_UNKNOWN_NODE, "tunnel", "unknown_nodes")                                               \
	X(T_PROTO_ERR, "tunnel", "protocol_errors")                                                \
	X(T_TIMEOUTS, "tunnel", "keepalive_timeouts")                                              \
	X(T_HS_PENDING, "tunnel", "handshakes_pending")                                            \
	X(T_HS_REFUSED, "tunnel", "handshakes_refused")

enum em_counter {
#define EM_X_ENUM(id, group, name) EM_C_##id,
	EM_COUNTERS(EM_X_ENUM)
#undef EM_X_ENUM
	        EM_C__COUNT
};

/* A gathered send: several queued entries of one socket in one sendmsg. The
 * kernel copies the header and vectors when it takes the SQE (IORING_FEAT_
 * SUBMIT_STABLE), so the worker's slots are reused after each submit. */
#define EM_SENDV_SLOTS 64u
#define EM_SENDV_IOV   16u
struct em_sendv {
	struct msghdr mh;
	struct iovec iov[EM_SENDV_IOV];
};

struct em_worker {
	struct io_uring ring;
	struct em_engine *eng;
	unsigned id;
	pthread_t thread;
	int init_rc;
	int wake_fd;
	uint64_t wake_val;
	struct em_bufring rb; /* group EM_BGID */
	struct em_listener *listeners;
	size_t n_listeners;
	struct em_dlist timers[EM_T__COUNT];
	struct em_dlist starved;
	struct em_sock *free_socks;
	void **slabs;
	size_t n_slabs, cap_slabs;
	size_t n_live;
	struct em_lb lb;
	uint16_t q_next[EM_QSLOTS];
	uint32_t q_bytes[EM_QSLOTS];
	const char *st_ptr[EM_STATIC_SLOTS];
	uint8_t st_owned[EM_STATIC_SLOTS];
	uint16_t st_free;
	uint16_t st_nfree; /* static slots on st_free */
	/* pooled spill blocks (worker.c) */
	struct spill_block *spill_free, *spill_free_small;
	unsigned n_spill_free, n_spill_free_small;
	uint64_t n_spilled; /* buffers copied to the heap over a queue's share */
	struct em_http *free_http;
	struct em_http1_head *head; /* parse scratch */
	struct em_tun_worker *tun;  /* tunnels and streams (engine/tunnel.c) */
	struct __kernel_timespec connect_ts, tick_ts;
	uint32_t connect_ms, idle_ms, head_ms, sniff_ms;
	uint64_t now_ms;
	bool stopping, done;
	uint64_t drain_deadline_ms;
	/* counters, read only at exit and by tests */
	uint64_t n_accepted, n_connect_fail, n_no_endpoint, n_nobufs, n_requests, n_replays;
	/* Ring buffers of group EM_BGID held by userspace (queued or being
	 * parsed); backpressure keeps it far below EM_BUF_COUNT. */
	uint32_t n_bufs_held;
	bool recv_cap;             /* multishot recv takes a byte cap (see EM_RECV_CAP) */
	uint64_t pub[EM_C__COUNT]; /* published counters, see EM_COUNTERS */
	/* Idle trim: pages of buffers not used for EM_TRIM_IDLE_MS go back to
	 * the kernel (they fault in again on the next read). */
	uint64_t buf_used_ms;
	bool bufs_resident;
	unsigned n_sendv; /* slots of sendv used by unsubmitted SQEs */
	struct em_sendv sendv[EM_SENDV_SLOTS];
};

struct em_engine {
	unsigned n_workers;
	struct em_worker *workers;
	/* listener fds: per worker, capture v4, capture v6, then each of the
	 * config's listeners (a reload keeps their number and addresses) */
	int *lfds;
	size_t n_lfds_per_worker;
	unsigned ring_flags; /* setup flags every worker got */
	bool recv_cap;       /* multishot recvs are capped (EM_RECV_CAP) */
	bool recv_cap_off;   /* EDGEMESH_RECV_CAP=0: never cap them (kill switch) */
	uint32_t mark;       /* SO_MARK of outgoing sockets; 0: none (no capture) */
	struct {
		uint32_t connect_ms, idle_ms, request_head_ms, sniff_ms;
		enum em_balancer balancer;
	} defaults;
	sem_t ready; /* posted by each worker once set up (or failed) */
	atomic_bool stop;
	atomic_uint drain_ms;
};

/* worker.c ---------------------------------------------------------------- */

/* Worker thread body. Sets w->init_rc before entering its loop. */
void *em_worker_main(void *arg);

/* Puts the engine's SO_MARK (capture.mark, when capture is on) on <fd>, a
 * socket about to connect out, so the capture chain lets it pass; every
 * upstream and tunnel dial calls it before connect. Does nothing when the
 * engine has no mark. Returns 0 or -errno of setsockopt (-EPERM without
 * CAP_NET_ADMIN); <fd> stays open either way, the caller closes it. */
int em_sock_mark(const struct em_worker *w, int fd);

/* Submits the SQ; once the kernel took every SQE, the sendv slots are free. */
void em_worker_submit(struct em_worker *w);

/* An SQE from <w>'s ring; flushes the SQ when it is full. Never NULL. */
struct io_uring_sqe *em_worker_sqe(struct em_worker *w);

/* Publishes <w>'s counters for the stats reader (worker thread only). */
void em_worker_publish(struct em_worker *w);

/* Returns ring buffer <bid> to the kernel and re-arms one starved socket. */
void em_worker_buf_put(struct em_worker *w, uint16_t bid);

/* Appends entry <e> to the list (*first, *last, *len) threaded through
 * w->q_next: a socket's send queue, its replay list, a stream's pending. */
static inline void em_q_append(struct em_worker *w, uint16_t *first, uint16_t *last, uint16_t *len,
                               uint16_t e)
{
	w->q_next[e] = EM_Q_NONE;
	if ((*len)++)
		w->q_next[*last] = e;
	else
		*first = e;
	*last = e;
}

static inline char *em_worker_buf(struct em_worker *w, uint16_t bid)
{
	return em_bufring_buf(&w->rb, bid);
}

/* Bytes of queue entry <e>. */
static inline const char *em_worker_entry(struct em_worker *w, uint16_t e)
{
	return e < EM_BUF_COUNT ? em_worker_buf(w, e) : w->st_ptr[e - EM_BUF_COUNT];
}

/* Puts every static slot on the free list and empties the starved list
 * (worker start; tests). */
void em_worker_queues_init(struct em_worker *w);

/* A static entry for <ptr> of kind <kind> (EM_ST_*): EM_ST_MALLOC is freed
 * once released. Only EM_ST_BORROWED may take the last EM_ST_RESERVE slots.
 * Returns EM_Q_NONE when no slot is left for <kind> (the caller closes or
 * fails the stream). */
uint16_t em_worker_static_get(struct em_worker *w, const char *ptr, uint8_t kind);

/* Ring buffers one queue (a socket's send queue, a stream's pending bytes)
 * may hold now, counting every entry of it: 24 while at least half of the
 * ring is free, then 3, then 1, and 0 once fewer than EM_BUF_RESERVE
 * buffers are free. A received buffer beyond that goes through
 * em_worker_spill. */
static inline unsigned em_worker_buf_share(const struct em_worker *w)
{
	uint32_t free_bufs = EM_BUF_COUNT - w->n_bufs_held;
	if (EM_LIKELY(free_bufs >= EM_BUF_COUNT / 2))
		return 24;
	if (free_bufs >= EM_BUF_COUNT / 4)
		return 3;
	return free_bufs >= EM_BUF_RESERVE ? 1 : 0;
}

/* True while fewer than half of the ring buffers are free: recvs whose
 * peer spilled (EM_SF_SPILLED) then read one buffer per arm (a multishot
 * recv fills buffers until its cancel lands). */
static inline bool em_worker_buf_pressure(const struct em_worker *w)
{
	return w->n_bufs_held > EM_BUF_COUNT / 2;
}

/* Appends <n> bytes of ring buffer <bid> to the list (*first, *last, *len)
 * as heap bytes: into the tail entry when it is a spill block with room
 * (the entry grows in place; a send in flight covers its old length only,
 * see on_send), else into new spill blocks. On success the buffer goes back
 * to the ring and true is returned; on failure (no slot, no memory) nothing
 * changed and the caller still owns <bid>. */
bool em_worker_spill(struct em_worker *w, uint16_t *first, uint16_t *last, uint16_t *len,
                     uint16_t bid, uint32_t n);

/* Releases entry <e>: a ring buffer goes back to the kernel. */
void em_worker_entry_put(struct em_worker *w, uint16_t e);

struct em_sock *em_sock_alloc(struct em_worker *w);

/* Puts <s> on timer list <tc> with deadline now + <ms>, in deadline order
 * (after entries with the same deadline), whatever timeouts the list mixes;
 * EM_T_NONE unlinks. */
void em_sock_timer(struct em_worker *w, struct em_sock *s, enum em_timer_class tc, uint32_t ms);

void em_sock_release(struct em_worker *w, struct em_sock *s);

/* proxy.c ----------------------------------------------------------------- */

void em_proxy_accept(struct em_worker *w, struct em_listener *l, int fd);
void em_proxy_cqe(struct em_worker *w, struct em_sock *s, enum em_op op, int res, uint32_t cflags);
/* A timer of <s> (class s->tclass) expired. */
void em_proxy_expire(struct em_worker *w, struct em_sock *s);
/* Re-arms the recv of a socket that ran out of ring buffers. */
void em_proxy_unstarve(struct em_worker *w, struct em_sock *s);
/* Stop: closes connections that carry nothing (silent, idle keep-alive,
 * pooled); with <all> every connection. */
void em_proxy_close_idle(struct em_worker *w, bool all);

/* Shared with http.c. */
void em_sock_close(struct em_worker *w, struct em_sock *s, bool abort);
void em_conn_close(struct em_worker *w, struct em_sock *s, bool abort);
void em_sock_arm_recv(struct em_worker *w, struct em_sock *s);
void em_sock_maybe_rearm(struct em_worker *w, struct em_sock *s);
void em_sock_send_next(struct em_worker *w, struct em_sock *s);
void em_sock_enqueue(struct em_worker *w, struct em_sock *dst, uint16_t e, uint32_t len);
bool em_sock_enqueue_static(struct em_worker *w, struct em_sock *dst, const char *p, uint32_t len,
                            bool owned);
/* Clears EM_SF_REPLAY of <s> and releases the entries it kept. */
void em_sock_kept_drop(struct em_worker *w, struct em_sock *s);
/* Submits shutdown(SHUT_WR) of <s>. */
void em_sock_shutdown(struct em_worker *w, struct em_sock *s);
void em_sock_backpressure(struct em_worker *w, struct em_sock *src, struct em_sock *dst);
/* The service port client <c> is for, in the current table: by original
 * destination (capture) or by its listener's service in the live config.
 * NULL when there is none. */
const struct em_svc_port *em_proxy_route(const struct em_sock *c);
/* True when <ep> is reached through a tunnel to its node: it is on another
 * node and tunnels are configured (a cluster key). Without a key the mesh
 * runs without tunnels and every endpoint is dialed directly, as on a flat
 * pod network. */
bool em_proxy_via_tunnel(const struct em_endpoint *ep);
const struct em_endpoint *em_proxy_pick(struct em_worker *w, const struct em_sock *c,
                                        const struct em_svc_port *sp, const struct em_addr *avoid);
int em_upstream_connect(struct em_worker *w, struct em_sock *u, const struct em_endpoint *ep);

#endif

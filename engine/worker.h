/* Internal to engine/: a worker thread's ring, buffers and queue entries.
 *
 * Every object an SQE points to carries the operation in the low 4 bits of
 * user_data (objects are 16-byte aligned); dispatch() in worker.c is the one
 * place that decodes it. Sockets are engine/sock.h, tunnels
 * engine/tunnel.h. */
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
#include "store/control.h"
#include "store/svcstat.h"

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
	EM_OP_TRECV, /* struct em_tconn (engine/tunnel_conn.c) */
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
/* In place of a ring buffer id (uint32_t): no buffer. */
#define EM_NO_BUF UINT32_MAX
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
/* Receive buffers unused this long give their pages back (worker.c trim). */
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

struct em_worker;

/* Timer classes of sockets: one deadline-ordered list each (w->timers). */
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

/* Releases the memory of a static queue entry once its bytes were sent or
 * dropped (the entry's owner passes it with the bytes, see
 * em_worker_static_get). */
typedef void em_entry_release_fn(struct em_worker *w, const char *p);

/* Release of entries malloc'd by their owner: free(). */
em_entry_release_fn em_entry_free;

/* Listener indexes that are not an index in the config's listeners. */
#define EM_LISTENER_CAPTURE UINT16_MAX
#define EM_LISTENER_TUNNEL  (UINT16_MAX - 1)
/* Not accepted: the local end of a tunnel stream a peer opened to an HTTP
 * port with a QPS limit (em_worker.serve_http); routed by its service
 * port's key (em_sock.svc_key), to local endpoints only. */
#define EM_LISTENER_SERVED (UINT16_MAX - 2)
#define EM_LISTENER_ROUTER (UINT16_MAX - 3)

struct em_listener;
/* A connection accepted on <l>: takes <fd>. */
typedef void em_accept_fn(struct em_worker *w, struct em_listener *l, int fd);

struct em_listener {
	struct em_worker *w;
	em_accept_fn *accept;
	int fd;
	uint16_t idx; /* index in the config's listeners, or EM_LISTENER_* */
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
	X(QPS_REJECTED, "engine", "qps_rejected")                                                  \
	X(FASTPATH_HANDOFF, "engine", "fastpath_handoffs_taken")                                   \
	X(T_UP, "tunnel", "tunnels_up")                                                            \
	X(T_DIALED, "tunnel", "tunnels_dialed")                                                    \
	X(T_ACCEPTED, "tunnel", "tunnels_accepted")                                                \
	X(T_CLOSED, "tunnel", "tunnels_closed")                                                    \
	X(T_STREAMS, "tunnel", "streams_active")                                                   \
	X(T_OPENED_LOCAL, "tunnel", "streams_opened")                                              \
	X(T_OPENED_REMOTE, "tunnel", "streams_served")                                             \
	X(T_VIA_CLOUD, "tunnel", "streams_via_cloud")                                              \
	X(T_HANDOFFS, "tunnel", "streams_handed_to_worker")                                        \
	X(T_RELAYED, "tunnel", "streams_relayed")                                                  \
	X(T_RELAY_REFUSED, "tunnel", "relays_refused")                                             \
	X(T_RELAY_RESETS, "tunnel", "relay_resets_passed")                                         \
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
	X(T_TLS_FAIL, "tunnel", "tls_failures")                                                    \
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

struct em_epoll;

/* One peer node's tunnels on one worker, as the worker last published them
 * (em_worker.peers): the bytes of its tunnels' frames, those already
 * closed included, and, of its tunnels up now, how many, how many of them
 * run TLS, and their open streams. */
struct em_peer_figures {
	uint64_t rx_bytes, tx_bytes;
	uint32_t up, up_tls, streams;
	char name[254]; /* EM_FRAME_MAX_NAME + 1 */
};

struct em_worker {
	struct io_uring ring; /* unused with the epoll backend */
	/* The epoll backend (engine/io.h) when <epoll>, else the ring. */
	bool epoll;
	struct em_epoll *ep;
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
	struct em_sock *free_socks; /* engine/sock.c */
	void **slabs;
	size_t n_slabs, cap_slabs;
	size_t n_live;
	struct em_lb lb;
	uint16_t q_next[EM_QSLOTS];
	uint32_t q_bytes[EM_QSLOTS];
	const char *st_ptr[EM_STATIC_SLOTS];
	em_entry_release_fn *st_release[EM_STATIC_SLOTS]; /* NULL: borrowed */
	uint16_t st_free;
	uint16_t st_nfree; /* static slots on st_free */
	/* pooled spill blocks (queue.c) */
	struct spill_block *spill_free, *spill_free_small;
	unsigned n_spill_free, n_spill_free_small;
	struct em_http_worker *http;     /* HTTP mode state (engine/http.c), made on first use */
	struct em_router_worker *router; /* the Router's destinations (engine/router.c) */
	struct em_tun_worker *tun;       /* tunnels and streams (engine/tunnel_*.c) */
	/* Takes <fd>, the local end of a socketpair whose other end serves a
	 * stream a peer opened to HTTP port <sp> of a service with a QPS limit:
	 * it becomes a client of that port (engine/client.h em_client_serve),
	 * so each request is counted. Set by the engine for the tunnel layer,
	 * which sits below the client modes. */
	void (*serve_http)(struct em_worker *w, int fd, const struct em_svc_port *sp);
	/* Takes <fd>, a connection another thread handed over
	 * (em_worker_post_conn): it becomes a client as if accepted on the
	 * listener of index <listener> (engine/client.h em_client_take). Set by
	 * the engine, as serve_http. */
	void (*serve_conn)(struct em_worker *w, int fd, uint16_t listener);
	/* Connections handed over and not yet taken, newest first, under
	 * <inbox_mu>; once <inbox_closed> (the worker stops) none is taken. */
	pthread_mutex_t inbox_mu;
	struct em_conn_post *inbox;
	bool inbox_closed;
	/* Re-arms one socket waiting on <starved> (the socket layer's
	 * em_sock_unstarve_one); false when none waits. */
	bool (*unstarve)(struct em_worker *w);
	/* Called at worker exit, after the ring is gone, in order (modes free
	 * their per-worker state; see em_worker_at_exit). */
	void (*at_exit[4])(struct em_worker *w);
	unsigned n_at_exit;
	struct __kernel_timespec connect_ts, tick_ts;
	uint32_t connect_ms, idle_ms, head_ms, sniff_ms;
	/* sockets.*: SO_SNDBUF/SO_RCVBUF of accepted clients and of upstream
	 * dials, 0 = the kernel's autotuning. */
	uint32_t client_sndbuf, client_rcvbuf, upstream_sndbuf, upstream_rcvbuf;
	uint64_t now_ms;
	uint64_t now_ns; /* when <now_ms> was read, in ns */
	/* This worker's per Service port counters (store/svcstat.h): only
	 * this thread writes them; /metrics sums the workers' sets. */
	struct em_svcstat_set *svc;
	bool stopping, done;
	uint64_t drain_deadline_ms;
	/* Counters (EM_COUNTERS), written by this thread only; gauges are
	 * filled in when published. Readers use <pub>. */
	uint64_t cnt[EM_C__COUNT];
	/* Ring buffers of group EM_BGID held by userspace (queued or being
	 * parsed); backpressure keeps it far below EM_BUF_COUNT. */
	uint32_t n_bufs_held;
	bool recv_cap;             /* multishot recv takes a byte cap (see EM_RECV_CAP) */
	uint64_t pub[EM_C__COUNT]; /* published counters, see EM_COUNTERS */
	/* Per peer figures, published with the counters (em_tun_publish_peers)
	 * under <peers_mu>, which the reader (em_engine_stats) takes too. */
	pthread_mutex_t peers_mu;
	struct em_peer_figures *peers;
	size_t n_peers, cap_peers;
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
	/* Every worker runs the epoll backend (io_backend "epoll", or "auto"
	 * where io_uring_setup failed) instead of an io_uring. */
	bool epoll;
	bool cloud;        /* role "cloud": stats carry the relay figures */
	bool recv_cap;     /* multishot recvs are capped (EM_RECV_CAP) */
	bool recv_cap_off; /* EDGEMESH_RECV_CAP=0: never cap them (kill switch) */
	uint32_t mark;     /* SO_MARK of outgoing sockets; 0: none (no capture) */
	sem_t ready;       /* posted by each worker once set up (or failed) */
	/* Connect-time balancing (engine/fastpath.h), or NULL: read with
	 * __atomic_load_n, set by em_engine_set_fastpath. */
	struct em_fastpath *fastpath;
	atomic_bool stop;
	atomic_uint drain_ms;
	/* Control streams (em_engine_set_control, em_engine_control_open):
	 * <ctl_mu> guards the receiver and its calls, and the one open request
	 * waiting for worker 0 (<ctl_fd>, -1 when none). */
	pthread_mutex_t ctl_mu;
	em_engine_control_fn ctl_fn;
	void *ctl_ctx;
	int ctl_fd;
	struct em_addr ctl_addr;
	bool has_cloud; /* an edge with a cloud: ctl_addr is its address */
	/* Tunnels across workers (engine/tunnel_hub.c). */
	struct em_hub *hub;
	/* tunnel.encryption "tls" (<tls_on>): <tls_mu> guards <tls>, the
	 * context new tunnels' pipes are made from (NULL while this edge has
	 * no certificate yet: it enrolls with the cloud), replaced on
	 * enrollment, renewal and reload, and <revs>, the certificate
	 * revocations in force. <tls_gen> and <revs_gen> count their changes;
	 * workers read them without the lock and act on a change in their
	 * tick. <tls_signer>: a cloud that signs certificates, so unencrypted
	 * tunnels may come to enroll. */
	bool tls_on, tls_signer;
	pthread_mutex_t tls_mu;
	struct em_tls_pipe_ctx *tls;
	struct em_ctl_revocation *revs;
	size_t n_revs;
	atomic_uint tls_gen, revs_gen;
	/* The Router's TLS front (engine/router_tls.h), NULL without
	 * router.tls. */
	struct em_router_tls *rtls;
};

/* The live config. One is published for as long as the engine runs
 * (em_engine_start), so a worker never sees NULL; every default lives in
 * the config module. */
static inline const struct em_config *em_worker_config(void)
{
	const struct em_config *cfg = em_config_current();
	EM_ASSERT(cfg);
	return cfg;
}

/* worker.c: the loop ----------------------------------------------------- */

/* Worker thread body. Sets w->init_rc before entering its loop. */
void *em_worker_main(void *arg);

/* Publishes <w>'s counters for the stats reader (worker thread only): the
 * gauges are computed, then every value is stored with a relaxed atomic. */
void em_worker_publish(struct em_worker *w);

/* Any thread: hands <fd> to <w>, which serves it as a client accepted on
 * its listener of index <listener> (w->serve_conn), at its next wake (one
 * is posted through w->wake_fd). Takes <fd>: returns 0, or -ESHUTDOWN once
 * <w> stopped taking connections, -ENOMEM, with <fd> closed. */
int em_worker_post_conn(struct em_worker *w, int fd, uint16_t listener);

/* Closes the connections posted to <w> and not taken, and takes no more
 * (the worker's stop; idempotent). <w>'s inbox_mu must have been
 * initialised (the engine does it for every worker). */
void em_worker_inbox_close(struct em_worker *w);

/* Registers <fn> to run at worker exit, after the ring is gone. At most
 * four per worker; returns false when full (the caller then frees its
 * state itself). */
bool em_worker_at_exit(struct em_worker *w, void (*fn)(struct em_worker *w));

/* queue.c: ring, buffers and queue entries --------------------------------- */

/* Submits the SQ; once the kernel took every SQE, the sendv slots are free
 * (epoll: they are free at once). */
void em_worker_submit(struct em_worker *w);

/* An SQE from <w>'s ring; flushes the SQ when it is full. Never NULL.
 * io_uring backend only: operations go through engine/io.h. */
struct io_uring_sqe *em_worker_sqe(struct em_worker *w);

/* Returns ring buffer <bid> to the kernel and re-arms one starved socket
 * (w->unstarve). <bid> must be held (received, not yet returned). */
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

/* The worker's counters of Service port slot <slot> (em_svc_port.mslot,
 * em_sock.mslot). */
static inline struct em_svcstat *em_worker_svc(struct em_worker *w, uint32_t slot)
{
	return em_svcstat_at(w->svc, slot);
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

/* A static entry for <ptr>, whose bytes (w->q_bytes[e]) the caller sets:
 * borrowed when <release> is NULL, else <release>(w, ptr) runs when the
 * entry is released. Only borrowed entries may take the last EM_ST_RESERVE
 * slots. Returns EM_Q_NONE when no slot is left for it (nothing was
 * called; the caller still owns <ptr> and closes or fails its stream). */
uint16_t em_worker_static_get(struct em_worker *w, const char *ptr, em_entry_release_fn *release);

/* The release function of static entry <e>, NULL for a ring buffer or a
 * borrowed entry: lets an owner recognise its own entries. */
static inline em_entry_release_fn *em_worker_entry_owner(const struct em_worker *w, uint16_t e)
{
	return e < EM_BUF_COUNT ? NULL : w->st_release[e - EM_BUF_COUNT];
}

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

/* Submits a connect of <fd> to <sa> (<sl> bytes, which must live until the
 * completion) with the worker's connect timeout linked to it, both in one
 * submission (epoll: the backend's connect with that timeout): the connect completes with
 * <ud_connect> (-ECANCELED when the timeout fired), the timeout with <ud_timeout>. Two requests are
 * then in flight for the caller to count. */
void em_worker_connect(struct em_worker *w, int fd, const struct sockaddr *sa, socklen_t sl,
                       uint64_t ud_connect, uint64_t ud_timeout);

/* Releases every entry of the list (*first, *last, *len) and empties it. */
void em_q_drop(struct em_worker *w, uint16_t *first, uint16_t *last, uint16_t *len);

/* Frees the pooled spill blocks (idle trim, worker exit). */
void em_worker_spill_pool_free(struct em_worker *w);

/* Releases entry <e>: a ring buffer goes back to the kernel, a static
 * entry runs its release function and its slot is free again. */
void em_worker_entry_put(struct em_worker *w, uint16_t e);

#endif

/* Internal to engine/: the socket layer.
 *
 * A struct em_sock is one TCP (or socketpair) connection of a worker: its
 * fd, its requests in flight, its send queue, its timer. What the bytes mean
 * is decided by the socket's mode, a table of operations (struct
 * em_sock_ops) set by the code that owns the socket: the L4 relay and sniff
 * of engine/relay.c, the HTTP client, upstream and pool of engine/http.c,
 * the tunnel bridge of engine/tunnel_stream.c. This layer calls a mode only
 * through its table, never by name.
 *
 * Data flows from a socket's ring buffers into the queue of its peer: a
 * buffer received on A is queued on B and sent from where the kernel put it,
 * then handed back to the ring. While B's queue holds EM_Q_HIGH entries A's
 * multishot recv is cancelled; it is re-armed when B's queue is down to
 * EM_Q_LOW, so a connection holds a few buffers per direction whatever the
 * peers do. The CQEs already posted when the cancel went in (at most
 * EM_RECV_CAP and one buffer where the kernel caps multishot recvs) queue
 * too, but past the queue's share of the ring their bytes are copied to the
 * heap and the buffers go back at once (em_sock_enqueue).
 *
 * Closing is one sequence for every mode: em_sock_close() detaches the mode
 * (ops->detach), cancels what is in flight, and once the last completion is
 * in drops the queue, closes the fd and frees the socket. A socket counts
 * its requests in flight (<inflight>; a multishot request counts once until
 * its last CQE). Every function here runs on the socket's worker thread. */
#ifndef EM_ENGINE_SOCK_H
#define EM_ENGINE_SOCK_H

#include "engine/worker.h"

enum em_sock_state {
	EM_SK_NEW = 0,    /* no fd yet, or nothing submitted */
	EM_SK_CONNECTING, /* connect in flight: nothing is sent */
	EM_SK_OPEN,       /* queued bytes are sent */
};

enum {
	EM_SF_CLIENT = 1u << 0, /* accepted: holds the connection's idle timer */
	EM_SF_RECV_ARMED = 1u << 1,
	EM_SF_RECV_CANCEL = 1u << 2, /* cancel of the recv in flight */
	EM_SF_RD_EOF = 1u << 3,      /* peer sent FIN */
	EM_SF_WR_SHUT = 1u << 4,     /* shutdown(SHUT_WR) submitted */
	EM_SF_WR_DONE = 1u << 5,     /* ... and completed */
	EM_SF_SEND_BUSY = 1u << 6,
	EM_SF_CLOSING = 1u << 7,
	EM_SF_ABORT = 1u << 8,        /* close with RST */
	EM_SF_STARVED = 1u << 9,      /* waits on w->starved for buffers */
	EM_SF_CLOSE_AFTER = 1u << 10, /* the mode closes it once the queue is sent */
	/* Sent entries are kept (k_*) so that the mode may send them again on
	 * another connection (an HTTP request on a reused upstream whose
	 * backend closed it as the request went out). */
	EM_SF_REPLAY = 1u << 11,
	/* Bytes for this socket went to spill blocks since its queue was last
	 * empty: its peer is reading faster than this socket sends, so the
	 * peer's recvs read one buffer per arm while the ring runs low. */
	EM_SF_SPILLED = 1u << 12,
};

/* Entries kept for a replay at most; a request longer than that is sent
 * without a safety net (its start is released). */
#define EM_REPLAY_KEEP 4u

struct em_sock;

/* What a mode does with its socket's events. Every operation runs on the
 * worker thread with <s> not closing, and may close <s> and its peer
 * (em_sock_close) before it returns; the socket layer touches neither
 * afterwards. An operation left NULL takes the default named with it. */
struct em_sock_ops {
	const char *name; /* for logs and tests */
	/* <len> bytes arrived in ring buffer <bid>: the mode owns the buffer
	 * (queues it, or gives it back with em_worker_buf_put). Required. */
	void (*recv)(struct em_worker *w, struct em_sock *s, uint16_t bid, uint32_t len);
	/* The peer sent FIN (EM_SF_RD_EOF is set). Default: the connection
	 * closes. */
	void (*eof)(struct em_worker *w, struct em_sock *s);
	/* A recv or send failed with <err> (-errno). Returns true when the mode
	 * took over (the connection is replaced or closed); false lets the
	 * layer reset <s> and its peer. Default: false. */
	bool (*error)(struct em_worker *w, struct em_sock *s, int err);
	/* The connect of <s> succeeded; the layer then opens it as below.
	 * Default: nothing. */
	void (*connected)(struct em_worker *w, struct em_sock *s);
	/* The connect of <s> failed: <res> is -ECANCELED (the connect timeout
	 * fired) or -errno. Default: the failure is counted and <s> and its
	 * peer are reset. (A connect that succeeds opens <s>, arms its recv and
	 * sends its queue, whatever the mode.) */
	void (*connect_failed)(struct em_worker *w, struct em_sock *s, int res);
	/* The send queue of <s> is empty (EM_SF_SPILLED already cleared).
	 * Default: em_sock_drained_default. */
	void (*drained)(struct em_worker *w, struct em_sock *s);
	/* shutdown(SHUT_WR) of <s> completed (EM_SF_WR_DONE is set). Default:
	 * the connection closes once both sockets read EOF and shut. */
	void (*shut)(struct em_worker *w, struct em_sock *s);
	/* The timer of class <tc> expired (s->tclass is EM_T_NONE again).
	 * Default: the connection closes. */
	void (*expire)(struct em_worker *w, struct em_sock *s, enum em_timer_class tc);
	/* <s> is closing (EM_SF_CLOSING, and EM_SF_ABORT when reset, are set;
	 * its peer link is still there): the mode lets go of <s>. Must not
	 * close sockets. Default: nothing. */
	void (*detach)(struct em_worker *w, struct em_sock *s);
	/* True while the mode keeps the recv of <s> paused (its bytes wait
	 * elsewhere). Default: false. */
	bool (*recv_blocked)(struct em_sock *s);
	/* True when <s> carries nothing now (between requests): a stopping
	 * worker closes it at once. Default: false (it drains). */
	bool (*idle)(const struct em_sock *s);
};

struct em_sock {
	struct em_dlist tnode; /* w->timers[tclass] membership */
	struct em_dlist snode; /* w->starved membership */
	struct em_dlist pnode; /* the mode's list (HTTP: its endpoint's idle pool) */
	const struct em_sock_ops *ops;
	void *ctx;            /* the mode's state */
	struct em_sock *peer; /* the other side while forwarding */
	struct em_lb_ep *ep;  /* upstream: endpoint state (counts, pool) */
	uint64_t deadline_ms;
	int fd;
	uint16_t flags;
	uint8_t state;
	uint8_t tclass;
	uint16_t inflight;
	uint16_t q_first, q_last, q_len; /* entries queued for sending on this socket */
	uint32_t q_off;                  /* bytes of the first entry already sent */
	uint16_t k_first, k_last, k_len; /* sent entries kept while EM_SF_REPLAY */
	uint16_t listener; /* client: index in the config's listeners, EM_LISTENER_* */
	uint8_t retries;
	uint8_t family;
	union {
		struct em_addr dst;      /* client: original destination */
		uint64_t svc_key;        /* client of EM_LISTENER_SERVED: em_svc_port.key */
		struct sockaddr_in6 sa6; /* upstream: connect address until submit */
		struct sockaddr_in sa4;
	};
	/* Client: the counter slot of its Service port (store/svcstat.h),
	 * EM_SVCSTAT_SINK (0) when it has none; its bytes are counted there. */
	uint32_t mslot;
	/* Upstream: when its connect was submitted, in microseconds (the low
	 * 32 bits: differences up to an hour). */
	uint32_t t_us;
} __attribute__((aligned(16)));

/* A zeroed socket (fd -1, state EM_SK_NEW) in mode <ops>, counted in the
 * worker's live sockets. NULL when out of memory. */
struct em_sock *em_sock_alloc(struct em_worker *w, const struct em_sock_ops *ops);

/* Gives back a socket that never had anything submitted (its fd, if any,
 * is the caller's to close). For every other socket use em_sock_close. */
void em_sock_release(struct em_worker *w, struct em_sock *s);

/* Puts <s> on timer list <tc> with deadline now + <ms>, in deadline order
 * (after entries with the same deadline), whatever timeouts the list mixes;
 * EM_T_NONE unlinks. */
void em_sock_timer(struct em_worker *w, struct em_sock *s, enum em_timer_class tc, uint32_t ms);

/* Moves the connection's idle timer (on the client side, EM_SF_CLIENT) on,
 * at most once a second. Bytes moved on <s>. */
void em_sock_touch(struct em_worker *w, struct em_sock *s);

/* Puts the engine's SO_MARK (capture.mark, when capture is on) on <fd>, a
 * socket about to connect out, so the capture chain lets it pass; every
 * upstream and tunnel dial calls it before connect. Does nothing when the
 * engine has no mark. Returns 0 or -errno of setsockopt (-EPERM without
 * CAP_NET_ADMIN); <fd> stays open either way, the caller closes it. */
int em_sock_mark(const struct em_worker *w, int fd);

/* Sets SO_SNDBUF to <sndbuf> and SO_RCVBUF to <rcvbuf> on <fd>, each only
 * when non-zero (zero leaves the kernel's autotuning). Errors are ignored:
 * the kernel clamps sizes to net.core.[rw]mem_max and the socket works
 * either way. Accepted clients get sockets.client_*, upstream dials
 * sockets.upstream_*. */
void em_sock_bufsizes(int fd, uint32_t sndbuf, uint32_t rcvbuf);

/* Opens a socket to <addr> in <u> (state EM_SK_NEW, no fd) and submits the
 * connect with the worker's connect timeout linked to it; a failure goes to
 * u->ops->connect_failed. Returns 0, or -errno with <u> unchanged (no fd
 * left open). */
int em_sock_connect(struct em_worker *w, struct em_sock *u, const struct em_addr *addr);

/* Arms a recv of <s> (multishot, or one buffer while the ring runs low and
 * <s>'s peer spilled). The caller checked that none is armed. */
void em_sock_arm_recv(struct em_worker *w, struct em_sock *s);

/* Re-arms <s>'s recv unless it is armed, closing, at EOF, starved, its
 * peer's queue is above EM_Q_LOW, or its mode blocks it (recv_blocked). */
void em_sock_maybe_rearm(struct em_worker *w, struct em_sock *s);

/* Cancels the recv of <s> if one is armed (and no cancel is under way):
 * its bytes wait in the kernel until em_sock_maybe_rearm. */
void em_sock_pause(struct em_worker *w, struct em_sock *s);

/* Pauses <src> when the queue of <dst> reached EM_Q_HIGH. */
void em_sock_backpressure(struct em_worker *w, struct em_sock *src, struct em_sock *dst);

/* Queues <len> bytes of entry <e> for sending on <dst> and starts a send if
 * none is in flight and <dst> is open. Takes ownership of <e>. A ring
 * buffer over the queue's share (em_worker_buf_share) is copied to the heap
 * and goes back to the ring at once, so a peer that stops reading pins at
 * most that many buffers. May close <dst> (a send that fails at once does
 * not: failures arrive as completions), so the caller may go on with it. */
void em_sock_enqueue(struct em_worker *w, struct em_sock *dst, uint16_t e, uint32_t len);

/* Queues <len> bytes at <p> on <dst> through a static entry: borrowed when
 * <release> is NULL (the bytes outlive the queue, as error pages do), else
 * <release> is called with <p> once they are sent or dropped. Returns false
 * when no slot is left; <release> has then been called already. */
bool em_sock_enqueue_static(struct em_worker *w, struct em_sock *dst, const char *p, uint32_t len,
                            em_entry_release_fn *release);

/* Sends the head of <s>'s queue, or when it is empty runs the mode's
 * drained operation. May close <s> (through the mode). */
void em_sock_send_next(struct em_worker *w, struct em_sock *s);

/* The default drained operation: shuts the write side of <s> once its
 * peer read EOF, and re-arms the peer's recv. */
void em_sock_drained_default(struct em_worker *w, struct em_sock *s);

/* Clears EM_SF_REPLAY of <s> and releases the entries it kept. */
void em_sock_kept_drop(struct em_worker *w, struct em_sock *s);

/* True when <s> is one end of a socketpair whose other end is closed, not
 * only shut for writing (asked after its EOF, while <s> may still write):
 * over a socketpair a full close carries a reset, a half close a FIN. */
bool em_sock_pair_hung_up(const struct em_sock *s);

/* Submits shutdown(SHUT_WR) of <s>; its completion runs ops->shut. */
void em_sock_shutdown(struct em_worker *w, struct em_sock *s);

/* Starts closing <s> (a no-op when it is closing already): the mode
 * detaches, the peer link is cut, timers and the starved list let go of it,
 * what is in flight is cancelled; once the last completion is in, the queue
 * is dropped, the fd closed (with RST when <abort>) and <s> freed. <s> must
 * not be used by the caller afterwards. */
void em_sock_close(struct em_worker *w, struct em_sock *s, bool abort);

/* Closes <s> and its peer, if any. */
void em_conn_close(struct em_worker *w, struct em_sock *s, bool abort);

/* Completion <op> (EM_OP_RECV ... EM_OP_CANCEL) of <s>: bookkeeping, then
 * the mode's operation. */
void em_sock_cqe(struct em_worker *w, struct em_sock *s, enum em_op op, int res, uint32_t cflags);

/* Runs the expired timers of every class, in deadline order, at most 4096
 * per class per call. */
void em_sock_run_timers(struct em_worker *w);

/* Re-arms the socket that waited longest for a ring buffer. Returns false
 * when none waits. (Set as w->unstarve by the worker.) */
bool em_sock_unstarve_one(struct em_worker *w);

/* Stop: closes the sockets that carry nothing (on the sniff, head, pool and
 * linger timers, and idle ones whose mode says so); with <all> every one. */
void em_sock_close_idle(struct em_worker *w, bool all);

#endif

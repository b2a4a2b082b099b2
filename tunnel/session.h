/* One tunnel connection between two nodes, as a sans-I/O state machine.
 *
 * The session owns no socket and no timer. The caller (the engine's worker)
 *   - feeds every received byte to em_tunnel_session_input(),
 *   - sends what em_tunnel_session_output() exposes and reports it with
 *     em_tunnel_session_output_advance(),
 *   - calls em_tunnel_session_tick() no later than the deadline it returns,
 *   - receives events through the <on_event> callback of its config.
 * Times are caller-supplied milliseconds of a monotonic clock.
 *
 * Memory is bounded by the config and allocated in two steps. Until the
 * peer's AUTH checks out, a session is the struct itself (a few KiB: names,
 * one partial control frame and a handshake control buffer of under 1 KiB),
 * so connections that never authenticate cost little. Once it checks out,
 * em_tunnel_session_input() allocates a stream table of 2 * max_streams
 * slots, a send ring of <send_buffer> bytes (OPEN, DATA, FIN, RST: frames
 * whose order matters) and a control ring of <ctrl_buffer> bytes (PING,
 * WINDOW_UPDATE, GOAWAY); if that fails the session closes with INTERNAL
 * ("out of memory"). Received DATA is never buffered:
 * it is handed to the callback as a slice of the caller's input, and the
 * peer may only send what the receive windows allow; the application
 * returns window with em_tunnel_session_consume(). PROTOCOL.md documents the
 * wire format, flow control and limits.
 *
 * Not thread-safe: one session belongs to one worker. */
#ifndef EM_TUNNEL_SESSION_H
#define EM_TUNNEL_SESSION_H

#include <sys/uio.h>

#include "proto/frame.h"

/* A peer-opened stream reset within this time of its OPEN counts as churn. */
#define EM_TUNNEL_CHURN_MS 1000u

struct em_tunnel_session;

enum em_tunnel_role {
	EM_TUNNEL_DIALER = EM_FRAME_ROLE_DIALER,     /* opens odd stream ids */
	EM_TUNNEL_ACCEPTOR = EM_FRAME_ROLE_ACCEPTOR, /* opens even stream ids */
};

enum em_tunnel_event_type {
	/* Both HELLOs and AUTHs checked; <data> is the peer's node name. Streams
	 * may be opened from now on. */
	EM_TUNNEL_EV_HANDSHAKE_DONE = 1,
	/* The peer was refused (<reason> AUTH_FAILED, UNKNOWN_NODE, VERSION,
	 * TIMEOUT, PROTOCOL) or refused us (it sent GOAWAY). Followed by CLOSED. */
	EM_TUNNEL_EV_HANDSHAKE_FAILED,
	/* The peer opened <stream_id> toward <target> (slices valid during the
	 * callback only). Accept by writing to it, refuse with
	 * em_tunnel_session_reset(..., EM_REASON_REFUSED or UNREACHABLE). */
	EM_TUNNEL_EV_STREAM_OPEN,
	/* <data> bytes arrived on <stream_id>; the slice points into the input
	 * buffer and is valid during the callback only. They occupy the stream's
	 * receive window until em_tunnel_session_consume() returns them. */
	EM_TUNNEL_EV_DATA,
	/* The peer half-closed <stream_id>: no more DATA on it. */
	EM_TUNNEL_EV_FIN,
	/* <stream_id> is gone: the peer reset it (<reason>, <data> = its text)
	 * or the tunnel died (<reason> of the tunnel). No more events for it. */
	EM_TUNNEL_EV_RESET,
	/* The peer granted more window on <stream_id>; <credit> is what
	 * em_tunnel_session_write() may now send on it (ring space aside). */
	EM_TUNNEL_EV_WINDOW,
	/* The peer sent GOAWAY (<reason>, <data> = text, <last_stream_id>).
	 * With NO_ERROR streams up to <last_stream_id> go on, later ones were
	 * reset before this event; otherwise CLOSED follows. */
	EM_TUNNEL_EV_GOAWAY,
	/* A PING answer arrived; <credit> holds the round trip in ms. */
	EM_TUNNEL_EV_PONG,
	/* The session is over (<reason>, <data> = text; NO_ERROR after a
	 * graceful drain). Every live stream got a RESET event first. Keep
	 * sending output until em_tunnel_session_should_close(), then close. */
	EM_TUNNEL_EV_CLOSED,
};

struct em_tunnel_event {
	enum em_tunnel_event_type type;
	uint32_t stream_id;
	void *stream_user; /* as set by open() or em_tunnel_session_set_user() */
	uint32_t reason;   /* enum em_reason */
	uint32_t last_stream_id;
	uint64_t credit;
	struct em_slice data;
	const struct em_frame_target *target;
};

/* Every field may be left zero for its default (in brackets). Strings and the
 * key are copied by em_tunnel_session_create(). */
struct em_tunnel_conf {
	enum em_tunnel_role role;
	const char *node_name; /* our name, sent in HELLO (required) */
	const void *key;       /* tunnel.cluster_key (required, >= 1 byte) */
	size_t key_len;
	const char *peer_name; /* dialer: the node we meant to reach, "" = any */
	/* Decides whether a peer name is a known node; NULL accepts any. Called
	 * synchronously from input(). */
	bool (*allow_node)(void *ctx, struct em_slice name);
	void (*on_event)(void *ctx, const struct em_tunnel_event *ev);
	/* A payload queued with em_tunnel_session_write_ref() was sent, or
	 * dropped (failed session, destroy): <token> as given there. Called
	 * from output_advance() and destroy(). */
	void (*on_release)(void *ctx, uint64_t token);
	/* A monotonic clock in microseconds, optional: with it, RTTs and the
	 * window growth rule resolve a LAN's sub-millisecond round trips (the
	 * millisecond timestamps of the calls cannot), so windows stay near
	 * the bandwidth-delay product instead of growing to max_window. */
	uint64_t (*clock_us)(void *ctx);
	void *ctx;

	uint32_t max_streams;        /* concurrent streams per direction [1024] */
	uint32_t initial_window;     /* receive window of a new stream [256 KiB] */
	uint32_t max_window;         /* a stream's window may grow to [16 MiB] */
	uint64_t tunnel_window;      /* sum of grown windows [64 MiB], see .c */
	uint32_t max_frame;          /* largest DATA payload we accept [64 KiB] */
	uint32_t send_buffer;        /* send ring bytes [256 KiB] */
	uint32_t ctrl_buffer;        /* control ring bytes [16 KiB] */
	uint32_t limit_interval_ms;  /* window of the rate limits below [1000] */
	uint32_t max_pings;          /* PINGs from the peer per interval [30] */
	uint32_t max_window_updates; /* WINDOW_UPDATEs per interval [20000] */
	uint32_t max_empty_data;     /* DATA without bytes nor FIN per interval [100] */
	uint32_t max_resets;         /* peer RSTs of streams it opened less than
	                                EM_TUNNEL_CHURN_MS before and we had not
	                                written a byte on, per interval [500] */
	uint32_t handshake_ms;       /* HELLO+AUTH must complete within [10000] */
	uint32_t keepalive_ms;       /* PING after this long without input [10000] */
	uint32_t dead_ms;            /* peer dead after this long silent [30000] */
	uint32_t rtt_initial_ms;     /* RTT assumed before measured [100] */
};

enum em_tunnel_state {
	EM_TUNNEL_HANDSHAKE = 0,
	EM_TUNNEL_OPEN,
	EM_TUNNEL_DRAINING, /* GOAWAY NO_ERROR sent or received */
	EM_TUNNEL_CLOSED,
};

/* Counters of one session; the engine sums them over sessions. */
struct em_tunnel_stats {
	uint64_t bytes_in, bytes_out;
	uint64_t frames_in;
	uint64_t data_in, data_out; /* DATA payload bytes */
	uint64_t streams_opened_local, streams_opened_remote;
	uint64_t resets_in, resets_out;
	uint64_t pings_in, pongs_in, window_updates_in, empty_data_in;
	uint64_t windows_grown;
	uint64_t discarded_in; /* DATA for streams we had reset */
	/* Limits crossed (each closes the tunnel with the matching reason). */
	uint64_t limit_streams, limit_pings, limit_window_updates, limit_empty_data, limit_resets,
	        limit_ctrl_queue, limit_flow_control;
	uint64_t auth_failures, unknown_nodes, protocol_errors, timeouts;
	/* High-water marks of the two rings, bytes. */
	uint32_t ctrl_hwm, send_hwm;
	uint32_t goaway_reason_in, goaway_reason_out; /* last ones, or 0 */
};

struct em_tunnel_stream_info {
	uint64_t send_credit; /* bytes the peer lets us send now */
	uint32_t recv_window; /* current window size we grant */
	uint32_t recv_credit; /* bytes the peer may still send */
	uint32_t unconsumed;  /* delivered, not yet consumed */
	bool local_fin, remote_fin;
};

/* Allocates a session (the small handshake part, see above) and queues its
 * HELLO (fresh nonce from RAND_bytes).
 * Returns 0 and <*out>, -EINVAL for a bad config (no name or key, a name
 * the wire format refuses, windows out of range), -ENOMEM, or -EIO when
 * no random bytes are available. */
int em_tunnel_session_create(const struct em_tunnel_conf *conf, uint64_t now_ms,
                             struct em_tunnel_session **out);

/* Frees <s> (NULL is fine). No events fire. Slices from output() die. */
void em_tunnel_session_destroy(struct em_tunnel_session *s);

/* Processes <len> received bytes; any split of the byte stream is fine.
 * Events fire synchronously from here; callbacks may call every local API
 * below but not input(), tick() or destroy(). Returns 0, or -EPROTO once the
 * session is CLOSED (after the CLOSED event; later input is ignored). */
int em_tunnel_session_input(struct em_tunnel_session *s, const void *buf, size_t len,
                            uint64_t now_ms);

/* The next contiguous bytes to send; len 0 when there is nothing. The slice
 * stays valid and unchanged until the next output_advance() or destroy(),
 * whatever else is called meanwhile (it may sit in an SQE). */
struct em_slice em_tunnel_session_output(struct em_tunnel_session *s);

/* The next bytes to send as up to <max> vectors (returns how many; 0 when
 * there is nothing): several frames at once, payloads queued with
 * write_ref() in place. Same validity as output()'s slice; output() is the
 * first vector of this. */
unsigned em_tunnel_session_output_iov(struct em_tunnel_session *s, struct iovec *iov, unsigned max);

/* Reports that the first <n> bytes of the last output() slice (or output
 * vectors) were sent.
 * Freed ring space may let deferred FIN/RST/WINDOW_UPDATE frames in and
 * lets a short write() be retried. */
void em_tunnel_session_output_advance(struct em_tunnel_session *s, size_t n);

/* Runs timers: handshake timeout, keepalive PING, dead peer (CLOSED with
 * TIMEOUT), limit interval roll-over. Events may fire as from input().
 * Returns the ms after <now_ms> by which tick() must run again. */
uint64_t em_tunnel_session_tick(struct em_tunnel_session *s, uint64_t now_ms);

/* Opens a stream toward <target> (which must pass the OPEN encoder) and
 * queues up to <len> bytes of <data> after the OPEN in the same output, as
 * far as the initial window and the send ring allow. <user> comes back in
 * this stream's events. Returns the bytes of <data> queued (>= 0) and the
 * new id in <*id>, -ENOTCONN before the handshake or after CLOSED,
 * -ESHUTDOWN after a GOAWAY, -EBUSY at the peer's max_streams or ours,
 * -ENOBUFS when the send ring has no room for the OPEN, -EINVAL for a bad
 * target. Never fires events. */
int em_tunnel_session_open(struct em_tunnel_session *s, const struct em_frame_target *target,
                           const void *data, size_t len, void *user, uint32_t *id);

/* Queues up to <len> bytes on <id>: as much as the peer's window and the
 * send ring allow, split into frames of the peer's max DATA size. With <fin>
 * and every byte accepted, the last frame also half-closes the stream.
 * Returns the bytes accepted (0 when blocked: wait for a WINDOW event or an
 * output_advance()), -ENOENT for an unknown stream, -EPIPE after our FIN,
 * -ENOTCONN when the session is closed. Never fires events. */
int em_tunnel_session_write(struct em_tunnel_session *s, uint32_t id, const void *data, size_t len,
                            bool fin);

/* Queues all <len> bytes of <data> on <id> as one DATA frame without copying
 * them: <data> must stay valid and unchanged until conf.on_release(<token>).
 * All or nothing: returns <len>, or 0 when the peer's window, its max DATA
 * size or the send buffer (payloads count against it as if in the ring)
 * does not take all of it (write() may then take part). Errors as write(). */
int em_tunnel_session_write_ref(struct em_tunnel_session *s, uint32_t id, const void *data,
                                size_t len, uint64_t token);

/* Half-closes <id> (FIN). Queued at once or, when the send ring is full,
 * as soon as it has room. Returns 0, -ENOENT, or -EPIPE if already closed. */
int em_tunnel_session_shutdown(struct em_tunnel_session *s, uint32_t id);

/* Resets <id> with <reason> and optional printable <text> (NULL, cut to
 * EM_FRAME_MAX_TEXT). The stream is gone for the caller at once (no more
 * events); the RST follows any of its queued frames. Returns 0 or -ENOENT. */
int em_tunnel_session_reset(struct em_tunnel_session *s, uint32_t id, uint32_t reason,
                            const char *text);

/* The application is done with <n> bytes of <id> delivered by DATA events
 * (written to the local socket, say) at <now_ms>: returns them to the peer
 * as window (WINDOW_UPDATE once half the window is free, growing the window
 * when the peer is window-limited, which is judged from <now_ms>). Returns
 * 0, -ENOENT (a stream gone is not an error worth acting on), -EINVAL when
 * <n> exceeds the unconsumed bytes. */
int em_tunnel_session_consume(struct em_tunnel_session *s, uint32_t id, size_t n, uint64_t now_ms);

/* Sets the pointer reported as <stream_user> in <id>'s events (for streams
 * the peer opened). Returns 0 or -ENOENT. */
int em_tunnel_session_set_user(struct em_tunnel_session *s, uint32_t id, void *user);

/* Sends a PING (RTT measurement; keepalive does this itself). Returns 0,
 * -EALREADY when one is outstanding, -ENOBUFS, -ENOTCONN. */
int em_tunnel_session_ping(struct em_tunnel_session *s);

/* Graceful close: GOAWAY NO_ERROR; the peer's streams up to the last one
 * seen go on, new OPENs are refused; CLOSED once no stream is left.
 * Returns 0 or -ENOTCONN. */
int em_tunnel_session_goaway(struct em_tunnel_session *s, uint32_t reason, const char *text);

enum em_tunnel_state em_tunnel_session_state(const struct em_tunnel_session *s);

/* True once CLOSED and the GOAWAY (if any) has been handed out by output():
 * the caller may close the socket. */
bool em_tunnel_session_should_close(const struct em_tunnel_session *s);

/* Why the session closed (enum em_reason), meaningful once CLOSED. */
uint32_t em_tunnel_session_close_reason(const struct em_tunnel_session *s);

/* Peer's node name once HELLO arrived, else "". */
const char *em_tunnel_session_peer_name(const struct em_tunnel_session *s);

/* Smoothed round-trip time in ms (the configured initial value until a
 * PING was answered). */
uint32_t em_tunnel_session_rtt_ms(const struct em_tunnel_session *s);

/* Live streams (both directions). */
uint32_t em_tunnel_session_streams(const struct em_tunnel_session *s);

/* Bytes write() or write_ref() could queue now, the peer's windows aside
 * (send buffer room, referenced payloads counted as queued). */
uint32_t em_tunnel_session_send_room(const struct em_tunnel_session *s);

/* Bytes in the control and send rings now (for memory checks). */
void em_tunnel_session_queued(const struct em_tunnel_session *s, uint32_t *ctrl, uint32_t *send);

/* Flow-control state of <id>. Returns 0 or -ENOENT. */
int em_tunnel_session_stream_info(const struct em_tunnel_session *s, uint32_t id,
                                  struct em_tunnel_stream_info *out);

const struct em_tunnel_stats *em_tunnel_session_stats(const struct em_tunnel_session *s);

/* Stream ids this side may still open (they are never reused: once none is
 * left, open() returns -EBUSY for good). A caller that keeps a tunnel for
 * long should start a replacement while EM_TUNNEL_ID_RESERVE or fewer are
 * left and drain this one (goaway(NO_ERROR)) once the replacement is up;
 * the reserve carries new streams meanwhile. */
#define EM_TUNNEL_ID_RESERVE 1024u
uint32_t em_tunnel_session_ids_left(const struct em_tunnel_session *s);

/* TEST ONLY: makes <id> the next stream id open() uses, so that tests reach
 * id exhaustion without opening four billion streams. <id> must have this
 * side's parity and not be below the current next id. Returns 0 or
 * -EINVAL. Production code never calls it. */
int em_tunnel_session_test_set_next_id(struct em_tunnel_session *s, uint32_t id);

#endif

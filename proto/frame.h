/* Tunnel frame codec (tunnel/PROTOCOL.md is the normative description).
 *
 * Every frame is a 12-byte header in network byte order
 *   version u8 | type u8 | flags u16 | stream id u32 | length u32
 * followed by <length> payload bytes. The decoder validates everything it
 * can without session state (version, type, flags, stream id zero/non-zero,
 * exact payload sizes, OPEN/HELLO field ranges), copies nothing, allocates
 * nothing: decoded strings are slices into the caller's buffer. The encoder
 * writes into a caller buffer. libc only. */
#ifndef EM_PROTO_FRAME_H
#define EM_PROTO_FRAME_H

#include "proto/em.h"

#define EM_FRAME_VERSION    1
#define EM_FRAME_HEADER_LEN 12

/* Limits of the wire format itself. A receiver announces in HELLO the largest
 * DATA payload it accepts, between the two bounds below. */
#define EM_FRAME_MIN_MAX_DATA (16u * 1024)
#define EM_FRAME_MAX_DATA     (1u << 20)
#define EM_FRAME_MAX_TEXT     128 /* GOAWAY / RST text */
#define EM_FRAME_MAX_NAME     253 /* node name, service name (DNS subdomain) */
#define EM_FRAME_MAX_NS       63  /* namespace (DNS label) */
#define EM_FRAME_NONCE_LEN    32
#define EM_FRAME_MAC_LEN      32
#define EM_FRAME_PING_LEN     8
#define EM_FRAME_OPEN_FIXED   28
#define EM_FRAME_HELLO_FIXED  48
#define EM_FRAME_MAX_WINDOW   0x7fffffffu /* window and increment ceiling */
#define EM_FRAME_MIN_WINDOW   (16u * 1024)
/* Largest non-DATA frame (an OPEN with three maximal names), header included. */
#define EM_FRAME_MAX_CONTROL                                                                       \
	(EM_FRAME_HEADER_LEN + EM_FRAME_OPEN_FIXED + 2 * EM_FRAME_MAX_NAME + EM_FRAME_MAX_NS)

enum em_frame_type {
	EM_FRAME_DATA = 0,
	EM_FRAME_WINDOW_UPDATE = 1,
	EM_FRAME_PING = 2,
	EM_FRAME_GOAWAY = 3,
	EM_FRAME_OPEN = 4,
	EM_FRAME_RST = 5,
	EM_FRAME_HELLO = 6,
	EM_FRAME_AUTH = 7,
	EM_FRAME_TYPE_COUNT_
};

/* Flags; every type other than DATA and PING must carry flags 0. */
#define EM_FRAME_FLAG_FIN 0x0001 /* DATA: last bytes of this direction */
#define EM_FRAME_FLAG_ACK 0x0001 /* PING: this is the answer */

/* Reason codes of RST and GOAWAY. Receivers treat unknown codes like
 * EM_REASON_INTERNAL. */
enum em_reason {
	EM_REASON_NO_ERROR = 0,
	EM_REASON_PROTOCOL = 1,
	EM_REASON_INTERNAL = 2,
	EM_REASON_FLOW_CONTROL = 3,
	EM_REASON_STREAM_CLOSED = 4,
	EM_REASON_REFUSED = 5,
	EM_REASON_CANCEL = 6,
	EM_REASON_UNREACHABLE = 7,
	EM_REASON_TOO_MANY_STREAMS = 8,
	EM_REASON_PING_FLOOD = 9,
	EM_REASON_WINDOW_UPDATE_FLOOD = 10,
	EM_REASON_EMPTY_DATA_FLOOD = 11,
	EM_REASON_RESET_FLOOD = 12,
	EM_REASON_AUTH_FAILED = 13,
	EM_REASON_UNKNOWN_NODE = 14,
	EM_REASON_VERSION = 15,
	EM_REASON_TIMEOUT = 16,
	EM_REASON_FRAME_SIZE = 17,
	EM_REASON_COUNT_
};

/* Returns a short lower-case name ("ping_flood"), "unknown" for other codes. */
const char *em_reason_str(uint32_t reason);

/* Transport protocol of an OPEN's target. CONTROL opens the node's control
 * stream to the peer itself (the edge's link to the cloud's controller,
 * PROTOCOL.md 9): no service, no destination, port 0. */
enum em_frame_proto {
	EM_FRAME_PROTO_TCP = 1,
	EM_FRAME_PROTO_UDP = 2,
	EM_FRAME_PROTO_CONTROL = 3,
};

enum em_frame_role { EM_FRAME_ROLE_DIALER = 0, EM_FRAME_ROLE_ACCEPTOR = 1 };

struct em_frame_header {
	uint8_t version;
	uint8_t type;
	uint16_t flags;
	uint32_t stream_id;
	uint32_t length; /* payload bytes after the header */
};

/* What an OPEN asks the peer to connect to. <node> is the node that should
 * serve the stream ("" = the peer itself); <ns>/<service> name the Service
 * (both empty or both set); <port> is the service port; <dst> the original
 * destination the client dialled (family 0 = none). At least a service or a
 * destination is present, but for EM_FRAME_PROTO_CONTROL, which has neither
 * (and port 0). */
struct em_frame_target {
	uint8_t protocol; /* enum em_frame_proto */
	uint16_t port;
	struct em_addr dst;
	struct em_slice node;
	struct em_slice ns;
	struct em_slice service;
};

struct em_frame_hello {
	uint8_t role;            /* enum em_frame_role of the sender */
	uint32_t initial_window; /* receive window of every new stream, bytes */
	uint32_t max_data;       /* largest DATA payload the sender accepts */
	uint32_t max_streams;    /* streams the peer may have open toward the sender */
	uint8_t nonce[EM_FRAME_NONCE_LEN];
	struct em_slice name; /* sender's node name */
};

struct em_frame {
	uint8_t type; /* enum em_frame_type */
	uint16_t flags;
	uint32_t stream_id;
	union {
		struct em_slice data; /* DATA */
		uint32_t increment;   /* WINDOW_UPDATE */
		uint8_t opaque[EM_FRAME_PING_LEN];
		struct {
			uint32_t last_stream_id;
			uint32_t reason;
			struct em_slice text;
		} goaway;
		struct em_frame_target open;
		struct {
			uint32_t reason;
			struct em_slice text;
		} rst;
		struct em_frame_hello hello;
		uint8_t mac[EM_FRAME_MAC_LEN]; /* AUTH */
	} u;
};

/* Decodes the header at <buf>. DATA longer than <max_data> (clamped to
 * EM_FRAME_MAX_DATA) is rejected, as is any non-DATA length outside the
 * type's fixed range. Returns EM_FRAME_HEADER_LEN, EM_PARTIAL when
 * <len> < 12, or EM_EBADMSG (bad version, unknown type, flags, stream id or
 * length). */
int em_frame_decode_header(const void *buf, size_t len, uint32_t max_data,
                           struct em_frame_header *h);

/* Validates the payload of a frame whose header <h> was accepted by
 * em_frame_decode_header; <payload> holds exactly h->length bytes and must
 * outlive the slices stored in <f>. Returns 0 or EM_EBADMSG. */
int em_frame_decode_payload(const struct em_frame_header *h, const void *payload,
                            struct em_frame *f);

/* Decodes one whole frame from <buf>. Returns the bytes it occupies
 * (header + payload), EM_PARTIAL when <buf> holds only a prefix of a
 * frame whose header is valid so far, or EM_EBADMSG. Slices in <f> point
 * into <buf>. */
int em_frame_decode(const void *buf, size_t len, uint32_t max_data, struct em_frame *f);

/* Writes only the 12-byte header, for callers that place the payload
 * themselves (DATA from a ring). <buf> must hold EM_FRAME_HEADER_LEN bytes. */
void em_frame_write_header(void *buf, uint8_t type, uint16_t flags, uint32_t stream_id,
                           uint32_t length);

/* Payload length <f> encodes to (without the header), or -EINVAL when a
 * field is out of range (a string too long, a bad family). */
int em_frame_payload_len(const struct em_frame *f);

/* Encodes <f> into <buf>. Returns the bytes written, -ENOBUFS when <cap> is
 * too small (nothing useful written), or -EINVAL when <f> would not pass the
 * decoder (the encoder never produces what the decoder refuses, except for
 * DATA longer than a peer's announced max_data, which the caller checks). */
int em_frame_encode(const struct em_frame *f, void *buf, size_t cap);

#endif

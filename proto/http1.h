/* HTTP/1.x message heads and body framing (RFC 9112), sans-I/O: libc only,
 * no allocation, nothing copied. Every slice points into the caller's buffer
 * and stays valid as long as those bytes stay where they are.
 *
 * Use on one connection, for each message:
 *   1. Keep the head's bytes contiguous from its first byte and call
 *      em_http1_parse_request() (or _response()) with the whole buffer each
 *      time bytes arrive, until it returns the head's length or an error.
 *      The struct em_http1_parser carried between calls makes this linear:
 *      bytes already scanned are not parsed again.
 *   2. em_http1_body_init() from the head, then em_http1_body_feed() (or
 *      _step()) on the bytes after the head and on every later buffer. It
 *      says how many bytes belong to the body; the rest starts the next
 *      pipelined message. Body bytes are forwarded as they are, chunk framing
 *      included: the decoder only finds boundaries.
 * Per-connection state is struct em_http1_parser + struct em_http1_body
 * (32 bytes). struct em_http1_head is large (the header slices): keep one per
 * worker as scratch, it is needed only until the head has been acted on.
 *
 * Strictness (errors are distinct negative HTTP status codes, see below):
 * a request that two implementations could frame differently is refused. */
#ifndef EM_HTTP1_H
#define EM_HTTP1_H

#include <sys/types.h>

#include "proto/em.h"

/* Errors: the negated HTTP status a server answers with before closing.
 * For responses (the upstream is at fault) every error means "send 502". */
#define EM_HTTP1_E400 (-400) /* malformed or ambiguous message */
#define EM_HTTP1_E414 (-414) /* request line longer than max_line */
#define EM_HTTP1_E431 (-431) /* header section larger than max_head or too many fields */
#define EM_HTTP1_E501 (-501) /* request Transfer-Encoding other than chunked */
#define EM_HTTP1_E505 (-505) /* HTTP/x.y other than 1.0 and 1.1 */

/* Converts an error above into its status code (400...505), other values to
 * 400. */
static inline int em_http1_status(int rc)
{
	return rc <= -400 && rc >= -599 ? -rc : 400;
}

#define EM_HTTP1_MAX_HEADERS 100   /* hard cap, and the default */
#define EM_HTTP1_MAX_LINE    8192  /* default request/status line limit */
#define EM_HTTP1_MAX_HEAD    16384 /* default header section limit */

/* Limits; a NULL pointer or a 0 field means the default. <max_line> counts
 * the request (or status) line without its CRLF, <max_head> the header
 * section after it including the final empty line, <max_headers> the fields
 * (capped at EM_HTTP1_MAX_HEADERS). A head never needs more than
 * max_line + 2 + max_head buffered bytes: at that length the parser has
 * returned a result or an error. */
struct em_http1_limits {
	uint32_t max_line;
	uint32_t max_head;
	uint32_t max_headers;
};

enum em_http1_framing {
	EM_HTTP1_BODY_NONE = 0, /* no body: the next message follows the head */
	EM_HTTP1_BODY_LENGTH,   /* content_length bytes */
	EM_HTTP1_BODY_CHUNKED,  /* chunked, up to and including the trailer section */
	EM_HTTP1_BODY_CLOSE,    /* response body runs until the server closes */
	EM_HTTP1_BODY_TUNNEL,   /* after 101 or a 2xx to CONNECT: raw bytes both ways */
};

/* Flags of a parsed head (<flags>). */
#define EM_HTTP1_F_KEEPALIVE 0x01 /* connection may carry another message after this one */
#define EM_HTTP1_F_UPGRADE   0x02 /* request: Upgrade header + "upgrade" in Connection */
#define EM_HTTP1_F_CONNECT   0x04 /* request method CONNECT */
#define EM_HTTP1_F_HEAD      0x08 /* request method HEAD */
#define EM_HTTP1_F_EXPECT    0x10 /* request: Expect: 100-continue */
#define EM_HTTP1_F_CHUNKED   0x20 /* Transfer-Encoding present and ends in chunked */

struct em_http1_header {
	struct em_slice name;  /* a token, case as sent */
	struct em_slice value; /* without leading/trailing SP/HT; may be empty */
};

struct em_http1_head {
	struct em_slice method; /* request: a token */
	struct em_slice target; /* request: visible ASCII, as sent */
	struct em_slice reason; /* response: may be empty */
	uint16_t status;        /* response: 100..599 */
	uint8_t minor_version;  /* 0 or 1 */
	uint8_t framing;        /* enum em_http1_framing */
	uint16_t flags;         /* EM_HTTP1_F_* */
	uint16_t num_headers;
	uint64_t content_length; /* with EM_HTTP1_BODY_LENGTH */
	/* Values of Host, Connection, Upgrade (the first field of each name;
	 * Host is never repeated in a valid request); base NULL when absent. */
	struct em_slice host;
	struct em_slice connection;
	struct em_slice upgrade;
	/* On error: a static one-line reason for the error page and the log,
	 * e.g. "both Content-Length and Transfer-Encoding". NULL otherwise. */
	const char *error;
	struct em_http1_header headers[EM_HTTP1_MAX_HEADERS];
};

/* Scan state between calls on one head. All-zero is the initial state; the
 * parse functions reset it when they return anything but EM_PARTIAL. Zero it
 * yourself to abandon a head. */
struct em_http1_parser {
	uint32_t scanned;  /* bytes known to hold no end of head */
	uint32_t first_lf; /* end of the start line + 1, or 0 */
	uint32_t lines;
	uint32_t pad_;
};

/* Parses the request head at the start of <buf> (<len> bytes: everything
 * received for this head so far, starting at its first byte; <buf> may move
 * between calls, its content may not). <p> may be NULL for a one-shot parse
 * (then each call rescans from the start, and reports a bad byte as soon as
 * it arrives; with <p>, errors inside a line are reported when the head
 * ends, a bare CR or LF arrives, or a limit is crossed). Fills <out> (only meaningful on
 * success, except <error>).
 * Returns the length of the head (request line, fields and the empty line,
 * plus any empty lines before the request line) on success, EM_PARTIAL when
 * more bytes are needed, or an EM_HTTP1_E* code:
 *   400: bad method token, target, CR/LF/NUL or other controls where they do
 *        not belong, bare LF, obs-fold (line starting with SP/HT), space
 *        before the colon, bad field-name token, HTTP/1.1 without Host or
 *        with two Host fields, invalid or conflicting Content-Length (equal
 *        duplicates are accepted), both Content-Length and Transfer-Encoding,
 *        Transfer-Encoding in HTTP/1.0, chunked repeated or not last;
 *   414, 431: limits above, detected as soon as they are exceeded;
 *   501: a Transfer-Encoding coding other than chunked (checked after the
 *        400 cases);
 *   505: HTTP/d.d other than 1.0 and 1.1.
 * Request framing: chunked if Transfer-Encoding, else length if
 * Content-Length, else none. Keep-alive: HTTP/1.1 unless "Connection: close",
 * HTTP/1.0 only with "Connection: keep-alive". CONNECT and Upgrade requests
 * are flagged; the caller switches to raw forwarding when the response is
 * 2xx (CONNECT) or 101. Reads nothing past buf[len - 1]. */
int em_http1_parse_request(struct em_http1_parser *p, const char *buf, size_t len,
                           const struct em_http1_limits *lim, struct em_http1_head *out);

/* Parses a response head, as em_http1_parse_request() does. <req_flags> are
 * the <flags> of the request it answers (EM_HTTP1_F_HEAD, _CONNECT and
 * _UPGRADE matter). Any error means the upstream is broken: answer 502.
 * Framing (RFC 9112 6.3): none for 1xx (except 101 to an upgrade request:
 * tunnel), 204, 304 and answers to HEAD; tunnel for 2xx to CONNECT; chunked
 * when Transfer-Encoding ends in chunked, read-until-close when it does not;
 * else Content-Length; else read-until-close. Both Content-Length and
 * Transfer-Encoding, a 101 without an upgrade request, and a bad or
 * conflicting Content-Length are errors (-400). A 1xx other than 101 is
 * followed by the real response: parse again after it. Keep-alive as for
 * requests, never with read-until-close. Host is not required. */
int em_http1_parse_response(struct em_http1_parser *p, const char *buf, size_t len,
                            unsigned req_flags, const struct em_http1_limits *lim,
                            struct em_http1_head *out);

/* First field named <name> (case-insensitive) of <h>: stores its value in
 * <value> and returns true, or returns false. */
bool em_http1_find_header(const struct em_http1_head *h, const char *name, struct em_slice *value);

/* True when the comma-separated list <list> (e.g. a Connection value)
 * contains <token>, compared case-insensitively. */
bool em_http1_list_has(struct em_slice list, const char *token);

/* Body decoder: boundaries only. All-zero is "no body, done". */
struct em_http1_body {
	uint64_t remaining; /* bytes left of the Content-Length body or current chunk */
	uint32_t line;      /* bytes of the current chunk-size line / trailer section */
	uint16_t trailers;  /* trailer fields seen */
	uint8_t framing;    /* enum em_http1_framing */
	uint8_t state;      /* internal */
};

/* Chunk-size line (with extensions) and trailer section limits: longer is an
 * error (400), so a peer cannot keep the decoder busy without sending data. */
#define EM_HTTP1_MAX_CHUNK_LINE 4096

/* Starts the body of the message whose head is <h>. */
void em_http1_body_init(struct em_http1_body *b, const struct em_http1_head *h);

/* Same with an explicit framing and length, e.g. to re-arm after a 1xx. */
void em_http1_body_init_framing(struct em_http1_body *b, enum em_http1_framing framing,
                                uint64_t content_length);

/* True once the body has ended (always true for BODY_NONE, never for CLOSE
 * and TUNNEL, which end with the connection). */
bool em_http1_body_done(const struct em_http1_body *b);

/* Consumes the body's bytes at the start of <buf>. Returns how many of the
 * <len> bytes belong to the body (framing included): fewer than <len> only
 * when the body ended there, and the rest is the next message. Returns
 * EM_HTTP1_E400 on a bad chunk size, extension, CRLF after the data, or
 * trailer field (the body state is then unusable). Resumable at any byte. */
ssize_t em_http1_body_feed(struct em_http1_body *b, const char *buf, size_t len);

/* As em_http1_body_feed(), but stops after at most one run of payload bytes
 * and stores that run in <data> (len 0 when the consumed bytes were framing
 * only), for a caller that needs the decoded content. Returns bytes consumed
 * (0 only when <len> is 0 or the body is done) or EM_HTTP1_E400. */
ssize_t em_http1_body_step(struct em_http1_body *b, const char *buf, size_t len,
                           struct em_slice *data);

#endif

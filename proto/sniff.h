/* Protocol sniffing: classifies a client stream from its first bytes, so the
 * engine knows whether to parse HTTP/1.x, route TLS by SNI, or forward raw
 * bytes. Sans-I/O, libc only, no allocation, stateless: the caller keeps the
 * bytes received so far (it forwards them later anyway) and calls em_sniff()
 * again on the longer buffer when more arrive. */
#ifndef EM_SNIFF_H
#define EM_SNIFF_H

#include "proto/em.h"
#include "proto/tls.h"

enum em_sniff_proto {
	/* Anything else, including server-speaks-first protocols (the caller
	 * gives up waiting after timeouts.sniff_ms). */
	EM_SNIFF_TCP = 0,
	/* One of GET HEAD POST PUT DELETE CONNECT OPTIONS TRACE PATCH followed
	 * by a space. Other methods (WebDAV, ...) are forwarded as TCP. */
	EM_SNIFF_HTTP1 = 1,
	/* The HTTP/2 prior-knowledge preface, all 24 bytes. */
	EM_SNIFF_HTTP2 = 2,
	/* A TLS handshake record (0x16, version 0x03 0x00..0x04, length
	 * 1..16384) whose first message is a ClientHello (type 1). */
	EM_SNIFF_TLS = 3,
};

/* Bytes after which em_sniff() always decides: a whole TLS record. Smaller
 * caller buffers work too: see EM_SNIFF_F_FINAL. */
#define EM_SNIFF_MAX EM_TLS_MAX_HELLO

/* No more bytes will come for sniffing (timeout, EOF, or the caller's buffer
 * is full): decide with what there is, never return EM_PARTIAL. */
#define EM_SNIFF_F_FINAL 0x1u

struct em_sniff_result {
	enum em_sniff_proto proto;
	/* For EM_SNIFF_TLS: the ClientHello's SNI and ALPN (see struct
	 * em_tls_hello), slices into the caller's buffer; empty when the hello
	 * was cut short by EM_SNIFF_F_FINAL, spread over records, or malformed
	 * (<tls_rc> then says which). */
	struct em_slice sni;
	struct em_slice alpn;
	/* For EM_SNIFF_TLS: the result of em_tls_parse_client_hello() (bytes of
	 * the first record, EM_PARTIAL, EM_TLS_EFRAG or EM_EBADMSG). */
	int tls_rc;
};

/* Classifies the stream that starts with <buf> (<len> bytes). <out> is
 * always filled (zeroed, then set on a decision).
 * Returns the enum em_sniff_proto value (>= 0), or EM_PARTIAL when the bytes
 * so far are still a strict prefix of more than one possibility and more
 * bytes could settle it. Decides as early as is safe: "X" is TCP at once,
 * "GET " is HTTP/1 at its 4th byte, "GE" waits; a TLS record waits until the
 * whole first record is there (at most EM_SNIFF_MAX bytes) so that the SNI
 * can be read. With EM_SNIFF_F_FINAL in <flags> the answer is TCP unless the
 * bytes already prove HTTP/1, HTTP/2, or a TLS ClientHello record header (6
 * bytes), which then is TLS without SNI. A prefix of a valid stream of one
 * kind is never classified as another kind. Reads nothing past
 * buf[len - 1]. */
int em_sniff(const void *buf, size_t len, unsigned flags, struct em_sniff_result *out);

/* Name of a protocol for logs and metrics: "tcp", "http1", "http2", "tls". */
const char *em_sniff_name(enum em_sniff_proto p);

#endif

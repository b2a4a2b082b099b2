/* TLS ClientHello parser: finds the SNI host name and the ALPN list in the
 * first record a client sends, so that a connection can be routed without
 * terminating TLS. Sans-I/O, libc only, no allocation, no copying: every
 * slice it returns points into the caller's buffer.
 *
 * Only a ClientHello that fits in the first TLS record is parsed. A handshake
 * message spread over several records (legal, but no common client does it:
 * a record holds 16 KiB and real ClientHellos are below 2 KiB) would need the
 * fragments copied together; em_tls_parse_client_hello() reports it as
 * EM_TLS_EFRAG and the caller treats the connection as TLS without SNI. */
#ifndef EM_TLS_H
#define EM_TLS_H

#include "proto/em.h"

/* Largest TLS plaintext record body (RFC 8446 5.1) and the most bytes the
 * parser ever looks at: one record header plus one such body. */
#define EM_TLS_MAX_RECORD 16384
#define EM_TLS_MAX_HELLO  (5 + EM_TLS_MAX_RECORD)

/* The ClientHello's handshake message is longer than its first record. */
#define EM_TLS_EFRAG (-EMSGSIZE)

struct em_tls_hello {
	/* First host_name of the server_name extension (RFC 6066 3), as sent:
	 * printable ASCII without spaces, 1..255 bytes, not NUL-terminated.
	 * base NULL, len 0 when the extension or a host_name is absent. */
	struct em_slice sni;
	/* Body of the ALPN extension's ProtocolNameList (RFC 7301 3.1): a
	 * sequence of 1-byte-length-prefixed names, already validated; walk it
	 * with em_tls_alpn_next(). base NULL, len 0 when absent. */
	struct em_slice alpn;
	/* legacy_version of the record and of the ClientHello, e.g. 0x0301 and
	 * 0x0303 (TLS 1.3 also says 0x0303 here). */
	uint16_t record_version;
	uint16_t hello_version;
};

/* Parses the ClientHello at the start of <buf> (<len> bytes, the first bytes
 * the client sent). <out> is zeroed first, then filled on success.
 * Returns:
 *   > 0           bytes of the first record (5 + its length); the caller
 *                 forwards them unchanged;
 *   EM_PARTIAL    the first record is not complete yet (never returned once
 *                 <len> >= EM_TLS_MAX_HELLO);
 *   EM_TLS_EFRAG  the handshake message continues in a later record;
 *   EM_EBADMSG    not a TLS handshake record carrying a well-formed
 *                 ClientHello (every length is checked against its
 *                 container; duplicate server_name or ALPN extensions and
 *                 trailing bytes are errors).
 * Reads nothing past buf[len - 1]. */
int em_tls_parse_client_hello(const void *buf, size_t len, struct em_tls_hello *out);

/* Iterates a validated ALPN list: stores the next protocol name in <name>,
 * advances <*it>, and returns true; returns false at the end. */
bool em_tls_alpn_next(struct em_slice *it, struct em_slice *name);

/* True when the ALPN list <alpn> offers the protocol <proto> (e.g. "h2"). */
bool em_tls_alpn_has(struct em_slice alpn, const char *proto);

#endif

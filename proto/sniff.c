/* Protocol sniffing. Each candidate is a fixed byte pattern (or the TLS
 * record header), so "strict prefix of some candidate" is the only reason to
 * wait; everything that already deviates from all of them is TCP. */
#include "proto/sniff.h"

static const struct em_slice methods[] = {
        EM_SLICE_LIT("GET "),     EM_SLICE_LIT("HEAD "),   EM_SLICE_LIT("POST "),
        EM_SLICE_LIT("PUT "),     EM_SLICE_LIT("DELETE "), EM_SLICE_LIT("CONNECT "),
        EM_SLICE_LIT("OPTIONS "), EM_SLICE_LIT("TRACE "),  EM_SLICE_LIT("PATCH "),
};

static const struct em_slice h2_preface = EM_SLICE_LIT("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

enum match { NO, PREFIX, FULL };

static enum match match_lit(const char *b, size_t len, struct em_slice lit)
{
	size_t n = EM_MIN(len, lit.len);
	if (memcmp(b, lit.base, n) != 0)
		return NO;
	return len >= lit.len ? FULL : PREFIX;
}

/* The TLS record header (5 bytes) plus the handshake type: decided at 6 bytes
 * whether this is a ClientHello record at all. */
static enum match match_tls(const uint8_t *b, size_t len)
{
	if (len >= 1 && b[0] != 0x16)
		return NO;
	if (len >= 2 && b[1] != 0x03)
		return NO;
	if (len >= 3 && b[2] > 0x04)
		return NO;
	if (len >= 5) {
		uint32_t rlen = (uint32_t)b[3] << 8 | b[4];
		if (rlen == 0 || rlen > EM_TLS_MAX_RECORD)
			return NO;
	}
	if (len >= 6 && b[5] != 0x01)
		return NO;
	return len >= 6 ? FULL : PREFIX;
}

int em_sniff(const void *buf, size_t len, unsigned flags, struct em_sniff_result *out)
{
	const char *b = buf;
	bool final = flags & EM_SNIFF_F_FINAL;
	bool maybe = false;
	enum match m;
	struct em_tls_hello hello;

	memset(out, 0, sizeof(*out));
	out->proto = EM_SNIFF_TCP;
	/* An empty buffer is a prefix of everything. */
	if (len == 0)
		return final ? EM_SNIFF_TCP : EM_PARTIAL;
	for (size_t i = 0; i < EM_ARRAY_SIZE(methods); i++) {
		m = match_lit(b, len, methods[i]);
		if (m == FULL)
			return out->proto = EM_SNIFF_HTTP1;
		maybe |= m == PREFIX;
	}
	m = match_lit(b, len, h2_preface);
	if (m == FULL)
		return out->proto = EM_SNIFF_HTTP2;
	maybe |= m == PREFIX;

	m = match_tls(buf, len);
	if (m == FULL) {
		out->tls_rc = em_tls_parse_client_hello(buf, len, &hello);
		if (out->tls_rc == EM_PARTIAL && !final)
			return EM_PARTIAL;
		out->sni = hello.sni;
		out->alpn = hello.alpn;
		return out->proto = EM_SNIFF_TLS;
	}
	maybe |= m == PREFIX;
	if (maybe && !final)
		return EM_PARTIAL;
	return EM_SNIFF_TCP;
}

const char *em_sniff_name(enum em_sniff_proto p)
{
	switch (p) {
	case EM_SNIFF_HTTP1:
		return "http1";
	case EM_SNIFF_HTTP2:
		return "http2";
	case EM_SNIFF_TLS:
		return "tls";
	case EM_SNIFF_TCP:
		break;
	}
	return "tcp";
}

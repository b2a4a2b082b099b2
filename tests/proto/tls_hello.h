/* Builds real-looking TLS ClientHello records for the tests and fuzz seeds:
 * the layout of RFC 8446 4.1.2 with the extensions browsers send first. */
#ifndef EM_TESTS_TLS_HELLO_H
#define EM_TESTS_TLS_HELLO_H

#include <stdint.h>
#include <string.h>

struct hello_opts {
	const char *sni;     /* NULL: no server_name extension */
	const char *alpn[4]; /* NULL-terminated; alpn[0] NULL: no ALPN */
	size_t padding;      /* bytes of a padding extension (21), 0: none */
	int no_extensions;   /* stop after compression methods */
};

static void put16(uint8_t *p, size_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* Writes the record into <out> (room for 5 + 16384 bytes) and returns its
 * length. */
static size_t build_hello(uint8_t *out, const struct hello_opts *o)
{
	uint8_t *p = out + 9; /* record header (5) + handshake header (4) */
	size_t n, ext_start;

	*p++ = 0x03;
	*p++ = 0x03;
	for (int i = 0; i < 32; i++)
		*p++ = (uint8_t)(i * 7 + 1); /* random */
	*p++ = 32;
	for (int i = 0; i < 32; i++)
		*p++ = (uint8_t)(0xa0 + i); /* session id */
	put16(p, 6);
	p += 2;
	memcpy(p, "\x13\x01\x13\x02\xc0\x2f", 6);
	p += 6;
	*p++ = 1;
	*p++ = 0;
	if (!o->no_extensions) {
		uint8_t *ext_len = p;
		p += 2;
		ext_start = (size_t)(p - out);
		/* supported_versions: TLS 1.3, 1.2 */
		memcpy(p, "\x00\x2b\x00\x05\x04\x03\x04\x03\x03", 9);
		p += 9;
		if (o->sni) {
			n = strlen(o->sni);
			put16(p, 0);
			put16(p + 2, n + 5);
			put16(p + 4, n + 3);
			p[6] = 0;
			put16(p + 7, n);
			memcpy(p + 9, o->sni, n);
			p += 9 + n;
		}
		if (o->alpn[0]) {
			uint8_t *e = p;
			p += 6;
			for (int i = 0; i < 4 && o->alpn[i]; i++) {
				n = strlen(o->alpn[i]);
				*p++ = (uint8_t)n;
				memcpy(p, o->alpn[i], n);
				p += n;
			}
			n = (size_t)(p - e) - 6;
			put16(e, 16);
			put16(e + 2, n + 2);
			put16(e + 4, n);
		}
		/* supported_groups: x25519 */
		memcpy(p, "\x00\x0a\x00\x04\x00\x02\x00\x1d", 8);
		p += 8;
		if (o->padding) {
			put16(p, 21);
			put16(p + 2, o->padding);
			memset(p + 4, 0, o->padding);
			p += 4 + o->padding;
		}
		put16(ext_len, (size_t)(p - out) - ext_start);
	}
	n = (size_t)(p - out);
	out[0] = 0x16;
	out[1] = 0x03;
	out[2] = 0x01;
	put16(out + 3, n - 5);
	out[5] = 0x01;
	out[6] = (uint8_t)((n - 9) >> 16);
	put16(out + 7, n - 9);
	return n;
}

#endif

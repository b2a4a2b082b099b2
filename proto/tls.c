/* TLS ClientHello parsing (RFC 8446 4.1.2, RFC 6066 3, RFC 7301 3.1). Every
 * read goes through the bounded reader below, so a lying length can only
 * make a read fail, never run past the buffer. */
#include "proto/tls.h"

struct rd {
	const uint8_t *p;
	const uint8_t *end;
};

static bool rd_u8(struct rd *r, uint32_t *v)
{
	if (r->end - r->p < 1)
		return false;
	*v = r->p[0];
	r->p += 1;
	return true;
}

static bool rd_u16(struct rd *r, uint32_t *v)
{
	if (r->end - r->p < 2)
		return false;
	*v = (uint32_t)r->p[0] << 8 | r->p[1];
	r->p += 2;
	return true;
}

static bool rd_u24(struct rd *r, uint32_t *v)
{
	if (r->end - r->p < 3)
		return false;
	*v = (uint32_t)r->p[0] << 16 | (uint32_t)r->p[1] << 8 | r->p[2];
	r->p += 3;
	return true;
}

/* Splits the next <n> bytes off <r> into <sub>. */
static bool rd_sub(struct rd *r, size_t n, struct rd *sub)
{
	if ((size_t)(r->end - r->p) < n)
		return false;
	sub->p = r->p;
	sub->end = r->p + n;
	r->p += n;
	return true;
}

/* Reads a vector with a <width>-byte length prefix into <sub>. */
static bool rd_vec(struct rd *r, int width, struct rd *sub)
{
	uint32_t n;
	bool ok = width == 1 ? rd_u8(r, &n) : rd_u16(r, &n);
	return ok && rd_sub(r, n, sub);
}

static bool rd_empty(const struct rd *r)
{
	return r->p == r->end;
}

static struct em_slice rd_slice(const struct rd *r)
{
	return (struct em_slice){(const char *)r->p, (size_t)(r->end - r->p)};
}

/* Host names are DNS names: anything outside printable ASCII (NUL above all,
 * which would truncate a C string later) marks the hello as malformed. */
static bool host_name_ok(const struct rd *name)
{
	size_t n = (size_t)(name->end - name->p);
	if (n == 0 || n > 255)
		return false;
	for (size_t i = 0; i < n; i++)
		if (name->p[i] <= 0x20 || name->p[i] >= 0x7f)
			return false;
	return true;
}

static int parse_sni(struct rd ext, struct em_tls_hello *out)
{
	struct rd list, name;
	uint32_t type;
	if (!rd_vec(&ext, 2, &list) || !rd_empty(&ext) || rd_empty(&list))
		return EM_EBADMSG;
	while (!rd_empty(&list)) {
		if (!rd_u8(&list, &type) || !rd_vec(&list, 2, &name))
			return EM_EBADMSG;
		/* RFC 6066 allows one name per type; only host_name (0) exists. */
		if (type != 0)
			continue;
		if (out->sni.base || !host_name_ok(&name))
			return EM_EBADMSG;
		out->sni = rd_slice(&name);
	}
	return 0;
}

static int parse_alpn(struct rd ext, struct em_tls_hello *out)
{
	struct rd list, walk, name;
	if (!rd_vec(&ext, 2, &list) || !rd_empty(&ext) || rd_empty(&list))
		return EM_EBADMSG;
	walk = list;
	while (!rd_empty(&walk))
		if (!rd_vec(&walk, 1, &name) || rd_empty(&name))
			return EM_EBADMSG;
	out->alpn = rd_slice(&list);
	return 0;
}

static int parse_hello(const void *buf, size_t len, struct em_tls_hello *out)
{
	const uint8_t *b = buf;
	struct rd rec, body, exts, ext, skip;
	uint32_t rlen, hlen, v, type;
	bool seen_sni = false, seen_alpn = false;
	int rc;

	memset(out, 0, sizeof(*out));
	/* Judge the header bytes that have arrived before waiting for more, so
	 * that a non-TLS stream is refused as early as possible. */
	if (len >= 1 && b[0] != 0x16)
		return EM_EBADMSG;
	if (len >= 2 && b[1] != 0x03)
		return EM_EBADMSG;
	if (len >= 3 && b[2] > 0x04)
		return EM_EBADMSG;
	if (len < 5)
		return EM_PARTIAL;
	rlen = (uint32_t)b[3] << 8 | b[4];
	if (rlen == 0 || rlen > EM_TLS_MAX_RECORD)
		return EM_EBADMSG;
	if (len >= 6 && b[5] != 0x01)
		return EM_EBADMSG;
	if (len < 5 + (size_t)rlen)
		return EM_PARTIAL;
	out->record_version = (uint16_t)(b[1] << 8 | b[2]);

	rec.p = b + 5;
	rec.end = rec.p + rlen;
	if (!rd_u8(&rec, &type) || !rd_u24(&rec, &hlen))
		return EM_TLS_EFRAG; /* even the handshake header is split */
	if (hlen > (size_t)(rec.end - rec.p))
		return EM_TLS_EFRAG;
	if (!rd_sub(&rec, hlen, &body))
		return EM_EBADMSG;

	if (!rd_u16(&body, &v) || (v >> 8) != 0x03)
		return EM_EBADMSG;
	out->hello_version = (uint16_t)v;
	if (!rd_sub(&body, 32, &skip))
		return EM_EBADMSG; /* random */
	if (!rd_vec(&body, 1, &skip) || skip.end - skip.p > 32)
		return EM_EBADMSG; /* legacy_session_id */
	if (!rd_vec(&body, 2, &skip) || rd_empty(&skip) || ((skip.end - skip.p) & 1))
		return EM_EBADMSG; /* cipher_suites */
	if (!rd_vec(&body, 1, &skip) || rd_empty(&skip))
		return EM_EBADMSG; /* legacy_compression_methods */
	if (rd_empty(&body))
		return (int)(5 + rlen); /* a pre-extensions hello: no SNI */
	if (!rd_vec(&body, 2, &exts) || !rd_empty(&body))
		return EM_EBADMSG;
	while (!rd_empty(&exts)) {
		if (!rd_u16(&exts, &type) || !rd_vec(&exts, 2, &ext))
			return EM_EBADMSG;
		if (type == 0) {
			if (seen_sni)
				return EM_EBADMSG;
			seen_sni = true;
			if ((rc = parse_sni(ext, out)) < 0)
				return rc;
		} else if (type == 16) {
			if (seen_alpn)
				return EM_EBADMSG;
			seen_alpn = true;
			if ((rc = parse_alpn(ext, out)) < 0)
				return rc;
		}
	}
	return (int)(5 + rlen);
}

int em_tls_parse_client_hello(const void *buf, size_t len, struct em_tls_hello *out)
{
	int rc = parse_hello(buf, len, out);
	/* A half-filled result must not look like an answer. */
	if (rc < 0)
		memset(out, 0, sizeof(*out));
	return rc;
}

bool em_tls_alpn_next(struct em_slice *it, struct em_slice *name)
{
	size_t n;
	if (it->len == 0)
		return false;
	n = (uint8_t)it->base[0];
	if (n + 1 > it->len)
		return false;
	name->base = it->base + 1;
	name->len = n;
	it->base += n + 1;
	it->len -= n + 1;
	return true;
}

bool em_tls_alpn_has(struct em_slice alpn, const char *proto)
{
	struct em_slice name;
	while (em_tls_alpn_next(&alpn, &name))
		if (em_slice_eq(name, proto))
			return true;
	return false;
}

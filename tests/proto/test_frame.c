#include <criterion/criterion.h>
#include <arpa/inet.h>

#include "proto/frame.h"

#define MAXD EM_FRAME_MAX_DATA

static uint8_t buf[EM_FRAME_HEADER_LEN + 4096];
static const char payload[] = "hello, tunnel";

static struct em_frame mk(uint8_t type, uint16_t flags, uint32_t id)
{
	struct em_frame f;
	memset(&f, 0, sizeof(f));
	f.type = type;
	f.flags = flags;
	f.stream_id = id;
	return f;
}

static struct em_slice sl(const char *s)
{
	return (struct em_slice){s, strlen(s)};
}

static bool slice_is(struct em_slice a, struct em_slice b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.base, b.base, a.len) == 0);
}

/* One sample of every type, with its interesting variants. */
static size_t samples(struct em_frame *out)
{
	size_t n = 0;
	struct em_frame f;

	f = mk(EM_FRAME_DATA, 0, 1);
	f.u.data = sl(payload);
	out[n++] = f;
	f = mk(EM_FRAME_DATA, EM_FRAME_FLAG_FIN, 0xfffffffe);
	f.u.data = (struct em_slice){"", 0};
	out[n++] = f;
	f = mk(EM_FRAME_WINDOW_UPDATE, 0, 3);
	f.u.increment = EM_FRAME_MAX_WINDOW;
	out[n++] = f;
	f = mk(EM_FRAME_PING, 0, 0);
	memcpy(f.u.opaque, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
	out[n++] = f;
	f = mk(EM_FRAME_PING, EM_FRAME_FLAG_ACK, 0);
	memcpy(f.u.opaque, "abcdefgh", 8);
	out[n++] = f;
	f = mk(EM_FRAME_GOAWAY, 0, 0);
	f.u.goaway.last_stream_id = 77;
	f.u.goaway.reason = EM_REASON_PING_FLOOD;
	f.u.goaway.text = sl("too many pings");
	out[n++] = f;
	f = mk(EM_FRAME_GOAWAY, 0, 0);
	f.u.goaway.reason = 12345; /* unknown codes pass the codec */
	out[n++] = f;
	f = mk(EM_FRAME_OPEN, 0, 5);
	f.u.open.protocol = EM_FRAME_PROTO_TCP;
	f.u.open.port = 80;
	f.u.open.node = sl("edge-node-2");
	f.u.open.ns = sl("default");
	f.u.open.service = sl("nginx");
	em_addr_parse("10.96.0.10:80", true, &f.u.open.dst);
	out[n++] = f;
	f = mk(EM_FRAME_OPEN, 0, 6);
	f.u.open.protocol = EM_FRAME_PROTO_UDP;
	em_addr_parse("[fd00::1]:5353", true, &f.u.open.dst);
	out[n++] = f;
	f = mk(EM_FRAME_OPEN, 0, 7);
	f.u.open.protocol = EM_FRAME_PROTO_TCP;
	f.u.open.port = 443;
	f.u.open.ns = sl("kube-system");
	f.u.open.service = sl("metrics.server_x");
	out[n++] = f;
	f = mk(EM_FRAME_RST, 0, 9);
	f.u.rst.reason = EM_REASON_REFUSED;
	f.u.rst.text = sl("target not local");
	out[n++] = f;
	f = mk(EM_FRAME_RST, 0, 10);
	f.u.rst.reason = EM_REASON_CANCEL;
	out[n++] = f;
	f = mk(EM_FRAME_HELLO, 0, 0);
	f.u.hello.role = EM_FRAME_ROLE_ACCEPTOR;
	f.u.hello.initial_window = 256 * 1024;
	f.u.hello.max_data = 64 * 1024;
	f.u.hello.max_streams = 1024;
	for (int i = 0; i < EM_FRAME_NONCE_LEN; i++)
		f.u.hello.nonce[i] = (uint8_t)(i * 7 + 1);
	f.u.hello.name = sl("cloud-0");
	out[n++] = f;
	f = mk(EM_FRAME_AUTH, 0, 0);
	for (int i = 0; i < EM_FRAME_MAC_LEN; i++)
		f.u.mac[i] = (uint8_t)(255 - i);
	out[n++] = f;
	return n;
}

static void expect_same(const struct em_frame *a, const struct em_frame *b)
{
	cr_assert_eq(a->type, b->type);
	cr_assert_eq(a->flags, b->flags);
	cr_assert_eq(a->stream_id, b->stream_id);
	switch (a->type) {
	case EM_FRAME_DATA:
		cr_assert(slice_is(a->u.data, b->u.data));
		break;
	case EM_FRAME_WINDOW_UPDATE:
		cr_assert_eq(a->u.increment, b->u.increment);
		break;
	case EM_FRAME_PING:
		cr_assert_arr_eq(a->u.opaque, b->u.opaque, 8);
		break;
	case EM_FRAME_GOAWAY:
		cr_assert_eq(a->u.goaway.last_stream_id, b->u.goaway.last_stream_id);
		cr_assert_eq(a->u.goaway.reason, b->u.goaway.reason);
		cr_assert(slice_is(a->u.goaway.text, b->u.goaway.text));
		break;
	case EM_FRAME_OPEN:
		cr_assert_eq(a->u.open.protocol, b->u.open.protocol);
		cr_assert_eq(a->u.open.port, b->u.open.port);
		cr_assert(em_addr_eq(&a->u.open.dst, &b->u.open.dst));
		cr_assert(slice_is(a->u.open.node, b->u.open.node));
		cr_assert(slice_is(a->u.open.ns, b->u.open.ns));
		cr_assert(slice_is(a->u.open.service, b->u.open.service));
		break;
	case EM_FRAME_RST:
		cr_assert_eq(a->u.rst.reason, b->u.rst.reason);
		cr_assert(slice_is(a->u.rst.text, b->u.rst.text));
		break;
	case EM_FRAME_HELLO:
		cr_assert_eq(a->u.hello.role, b->u.hello.role);
		cr_assert_eq(a->u.hello.initial_window, b->u.hello.initial_window);
		cr_assert_eq(a->u.hello.max_data, b->u.hello.max_data);
		cr_assert_eq(a->u.hello.max_streams, b->u.hello.max_streams);
		cr_assert_arr_eq(a->u.hello.nonce, b->u.hello.nonce, EM_FRAME_NONCE_LEN);
		cr_assert(slice_is(a->u.hello.name, b->u.hello.name));
		break;
	case EM_FRAME_AUTH:
		cr_assert_arr_eq(a->u.mac, b->u.mac, EM_FRAME_MAC_LEN);
		break;
	default:
		cr_assert_fail("type %u", a->type);
	}
}

Test(frame, every_type_round_trips)
{
	struct em_frame in[32], out;
	size_t n = samples(in);
	bool seen[EM_FRAME_TYPE_COUNT_] = {0};

	for (size_t i = 0; i < n; i++) {
		int len = em_frame_encode(&in[i], buf, sizeof(buf));
		cr_assert_gt(len, 0, "sample %zu type %u: %d", i, in[i].type, len);
		cr_assert_eq(len, EM_FRAME_HEADER_LEN + em_frame_payload_len(&in[i]));
		memset(&out, 0xa5, sizeof(out));
		cr_assert_eq(em_frame_decode(buf, (size_t)len, MAXD, &out), len, "sample %zu", i);
		expect_same(&in[i], &out);
		seen[in[i].type] = true;

		/* Trailing bytes of the next frame are not consumed. */
		buf[len] = EM_FRAME_VERSION;
		cr_assert_eq(em_frame_decode(buf, (size_t)len + 1, MAXD, &out), len);
	}
	for (int t = 0; t < EM_FRAME_TYPE_COUNT_; t++)
		cr_assert(seen[t], "type %d not sampled", t);
}

Test(frame, every_strict_prefix_is_partial)
{
	struct em_frame in[32], out;
	size_t n = samples(in);

	for (size_t i = 0; i < n; i++) {
		int len = em_frame_encode(&in[i], buf, sizeof(buf));
		cr_assert_gt(len, 0);
		/* Each prefix is copied to the end of a heap block so that a read
		 * past it is caught by the address sanitizer. */
		for (int k = 0; k < len; k++) {
			uint8_t *copy = malloc((size_t)k + 1);
			memcpy(copy + 1, buf, (size_t)k);
			cr_assert_eq(em_frame_decode(copy + 1, (size_t)k, MAXD, &out), EM_PARTIAL,
			             "sample %zu prefix %d", i, k);
			free(copy);
		}
	}
}

Test(frame, data_header_only)
{
	struct em_frame_header h;
	em_frame_write_header(buf, EM_FRAME_DATA, EM_FRAME_FLAG_FIN, 42, 1000);
	cr_assert_eq(em_frame_decode_header(buf, 12, 65536, &h), 12);
	cr_assert_eq(h.type, EM_FRAME_DATA);
	cr_assert_eq(h.flags, EM_FRAME_FLAG_FIN);
	cr_assert_eq(h.stream_id, 42);
	cr_assert_eq(h.length, 1000);
	/* network byte order on the wire */
	cr_assert_eq(buf[7], 42);
	cr_assert_eq(buf[10], 1000 >> 8);
	cr_assert_eq(buf[11], 1000 & 0xff);
}

static int decode_hdr(uint8_t v, uint8_t type, uint16_t flags, uint32_t id, uint32_t len)
{
	struct em_frame_header h;
	em_frame_write_header(buf, type, flags, id, len);
	buf[0] = v;
	return em_frame_decode_header(buf, EM_FRAME_HEADER_LEN, 65536, &h);
}

Test(frame, malformed_headers_rejected)
{
	cr_assert_eq(decode_hdr(1, EM_FRAME_DATA, 0, 1, 10), 12);
	cr_assert_eq(decode_hdr(0, EM_FRAME_DATA, 0, 1, 10), EM_EBADMSG, "version 0");
	cr_assert_eq(decode_hdr(2, EM_FRAME_DATA, 0, 1, 10), EM_EBADMSG, "version 2");
	cr_assert_eq(decode_hdr(1, EM_FRAME_TYPE_COUNT_, 0, 1, 10), EM_EBADMSG, "type");
	cr_assert_eq(decode_hdr(1, 0xff, 0, 1, 10), EM_EBADMSG, "type ff");
	cr_assert_eq(decode_hdr(1, EM_FRAME_DATA, 0, 1, 65536), 12);
	cr_assert_eq(decode_hdr(1, EM_FRAME_DATA, 0, 1, 65537), EM_EBADMSG, "oversize");
	cr_assert_eq(decode_hdr(1, EM_FRAME_DATA, 0, 1, 0xffffffff), EM_EBADMSG, "huge");
	cr_assert_eq(decode_hdr(1, EM_FRAME_DATA, 0x8000, 1, 1), EM_EBADMSG, "unknown flag");
	cr_assert_eq(decode_hdr(1, EM_FRAME_DATA, 0, 0, 1), EM_EBADMSG, "data on stream 0");
	cr_assert_eq(decode_hdr(1, EM_FRAME_PING, 0, 1, 8), EM_EBADMSG, "ping on stream");
	cr_assert_eq(decode_hdr(1, EM_FRAME_PING, 0, 0, 7), EM_EBADMSG, "ping size");
	cr_assert_eq(decode_hdr(1, EM_FRAME_PING, 2, 0, 8), EM_EBADMSG, "ping flag");
	cr_assert_eq(decode_hdr(1, EM_FRAME_WINDOW_UPDATE, 0, 0, 4), EM_EBADMSG, "wu stream 0");
	cr_assert_eq(decode_hdr(1, EM_FRAME_WINDOW_UPDATE, 0, 1, 5), EM_EBADMSG, "wu size");
	cr_assert_eq(decode_hdr(1, EM_FRAME_WINDOW_UPDATE, 1, 1, 4), EM_EBADMSG, "wu flag");
	cr_assert_eq(decode_hdr(1, EM_FRAME_GOAWAY, 0, 0, 7), EM_EBADMSG, "goaway short");
	cr_assert_eq(decode_hdr(1, EM_FRAME_GOAWAY, 0, 0, 8 + EM_FRAME_MAX_TEXT + 1), EM_EBADMSG);
	cr_assert_eq(decode_hdr(1, EM_FRAME_RST, 0, 0, 4), EM_EBADMSG, "rst stream 0");
	cr_assert_eq(decode_hdr(1, EM_FRAME_OPEN, 0, 1, 27), EM_EBADMSG, "open short");
	cr_assert_eq(decode_hdr(1, EM_FRAME_OPEN, 0, 1, 2000), EM_EBADMSG, "open long");
	cr_assert_eq(decode_hdr(1, EM_FRAME_HELLO, 0, 0, 48), EM_EBADMSG, "hello no name");
	cr_assert_eq(decode_hdr(1, EM_FRAME_AUTH, 0, 0, 31), EM_EBADMSG, "auth size");
	cr_assert_eq(decode_hdr(1, EM_FRAME_AUTH, 0, 5, 32), EM_EBADMSG, "auth on stream");

	/* A bad version or type is refused before the header is complete. */
	struct em_frame_header h;
	cr_assert_eq(em_frame_decode_header("\x02", 1, 65536, &h), EM_EBADMSG);
	cr_assert_eq(em_frame_decode_header("\x01\x09", 2, 65536, &h), EM_EBADMSG);
}

/* Encodes a valid OPEN, lets <mutate> damage its payload, and decodes. */
static int open_mutated(void (*mutate)(uint8_t *p, uint32_t *len))
{
	struct em_frame f = mk(EM_FRAME_OPEN, 0, 5), out;
	f.u.open.protocol = EM_FRAME_PROTO_TCP;
	f.u.open.port = 80;
	f.u.open.node = sl("n1");
	f.u.open.ns = sl("ns");
	f.u.open.service = sl("svc");
	em_addr_parse("10.0.0.1:8080", true, &f.u.open.dst);
	int len = em_frame_encode(&f, buf, sizeof(buf));
	cr_assert_gt(len, 0);
	uint32_t plen = (uint32_t)len - 12;
	mutate(buf + 12, &plen);
	em_frame_write_header(buf, EM_FRAME_OPEN, 0, 5, plen);
	return em_frame_decode(buf, 12 + plen, MAXD, &out);
}

static void m_none(uint8_t *p, uint32_t *len)
{
	EM_UNUSED(p);
	EM_UNUSED(len);
}
static void m_proto(uint8_t *p, uint32_t *len)
{
	EM_UNUSED(len);
	p[0] = 3;
}
static void m_family(uint8_t *p, uint32_t *len)
{
	EM_UNUSED(len);
	p[1] = 5;
}
static void m_v4pad(uint8_t *p, uint32_t *len)
{
	EM_UNUSED(len);
	p[12 + 7] = 1;
}
static void m_reserved(uint8_t *p, uint32_t *len)
{
	EM_UNUSED(len);
	p[10] = 1;
}
static void m_lens(uint8_t *p, uint32_t *len)
{
	EM_UNUSED(len);
	p[6] = 3; /* node length no longer adds up */
}
static void m_trailing(uint8_t *p, uint32_t *len)
{
	p[*len] = 'x';
	(*len)++;
}
static void m_badchar(uint8_t *p, uint32_t *len)
{
	EM_UNUSED(len);
	p[EM_FRAME_OPEN_FIXED] = '/';
}
static void m_nul(uint8_t *p, uint32_t *len)
{
	EM_UNUSED(len);
	p[*len - 1] = 0;
}
static void m_ns_only(uint8_t *p, uint32_t *len)
{
	p[8] = 0; /* service dropped, namespace kept */
	*len -= 3;
}
static void m_dport0(uint8_t *p, uint32_t *len)
{
	EM_UNUSED(len);
	p[4] = p[5] = 0;
}
static void m_no_target(uint8_t *p, uint32_t *len)
{
	p[1] = 0;
	p[4] = p[5] = 0;
	memset(p + 12, 0, 16);
	p[7] = p[8] = 0;
	*len -= 5;
}

Test(frame, bad_open_fields_rejected)
{
	cr_assert_gt(open_mutated(m_none), 0);
	cr_assert_eq(open_mutated(m_proto), EM_EBADMSG);
	cr_assert_eq(open_mutated(m_family), EM_EBADMSG);
	cr_assert_eq(open_mutated(m_v4pad), EM_EBADMSG);
	cr_assert_eq(open_mutated(m_reserved), EM_EBADMSG);
	cr_assert_eq(open_mutated(m_lens), EM_EBADMSG);
	cr_assert_eq(open_mutated(m_trailing), EM_EBADMSG);
	cr_assert_eq(open_mutated(m_badchar), EM_EBADMSG);
	cr_assert_eq(open_mutated(m_nul), EM_EBADMSG);
	cr_assert_eq(open_mutated(m_ns_only), EM_EBADMSG);
	cr_assert_eq(open_mutated(m_dport0), EM_EBADMSG);
	cr_assert_eq(open_mutated(m_no_target), EM_EBADMSG);
}

Test(frame, bad_control_payloads_rejected)
{
	struct em_frame f, out;
	int len;

	f = mk(EM_FRAME_WINDOW_UPDATE, 0, 1);
	f.u.increment = 0;
	cr_assert_eq(em_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "zero increment");
	em_frame_write_header(buf, EM_FRAME_WINDOW_UPDATE, 0, 1, 4);
	memcpy(buf + 12, "\x80\x00\x00\x00", 4);
	cr_assert_eq(em_frame_decode(buf, 16, MAXD, &out), EM_EBADMSG, "increment > 2^31-1");

	f = mk(EM_FRAME_RST, 0, 1);
	f.u.rst.text = sl("bad\ntext");
	cr_assert_eq(em_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "control char");

	f = mk(EM_FRAME_HELLO, 0, 0);
	f.u.hello.initial_window = 65536;
	f.u.hello.max_data = 65536;
	f.u.hello.max_streams = 1;
	f.u.hello.name = sl("a");
	len = em_frame_encode(&f, buf, sizeof(buf));
	cr_assert_gt(len, 0);
	buf[12] = 2; /* role */
	cr_assert_eq(em_frame_decode(buf, (size_t)len, MAXD, &out), EM_EBADMSG, "role");
	f.u.hello.max_data = EM_FRAME_MAX_DATA + 1;
	cr_assert_eq(em_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "max_data");
	f.u.hello.max_data = 65536;
	f.u.hello.initial_window = 100;
	cr_assert_eq(em_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "tiny window");
	f.u.hello.initial_window = 65536;
	f.u.hello.max_streams = 0;
	cr_assert_eq(em_frame_encode(&f, buf, sizeof(buf)), -EINVAL, "max_streams");

	f = mk(EM_FRAME_PING, 0, 0);
	cr_assert_eq(em_frame_encode(&f, buf, 19), -ENOBUFS);
	cr_assert_eq(em_frame_encode(&f, buf, 20), 20);
}

Test(frame, reason_names)
{
	cr_assert_str_eq(em_reason_str(EM_REASON_PING_FLOOD), "ping_flood");
	cr_assert_str_eq(em_reason_str(EM_REASON_NO_ERROR), "no_error");
	cr_assert_str_eq(em_reason_str(999), "unknown");
	for (uint32_t r = 0; r < EM_REASON_COUNT_; r++)
		cr_assert_not_null(em_reason_str(r));
}

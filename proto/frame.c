#include "proto/frame.h"

static inline uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static const char *const reason_names[EM_REASON_COUNT_] = {
        [EM_REASON_NO_ERROR] = "no_error",
        [EM_REASON_PROTOCOL] = "protocol",
        [EM_REASON_INTERNAL] = "internal",
        [EM_REASON_FLOW_CONTROL] = "flow_control",
        [EM_REASON_STREAM_CLOSED] = "stream_closed",
        [EM_REASON_REFUSED] = "refused",
        [EM_REASON_CANCEL] = "cancel",
        [EM_REASON_UNREACHABLE] = "unreachable",
        [EM_REASON_TOO_MANY_STREAMS] = "too_many_streams",
        [EM_REASON_PING_FLOOD] = "ping_flood",
        [EM_REASON_WINDOW_UPDATE_FLOOD] = "window_update_flood",
        [EM_REASON_EMPTY_DATA_FLOOD] = "empty_data_flood",
        [EM_REASON_RESET_FLOOD] = "reset_flood",
        [EM_REASON_AUTH_FAILED] = "auth_failed",
        [EM_REASON_UNKNOWN_NODE] = "unknown_node",
        [EM_REASON_VERSION] = "version",
        [EM_REASON_TIMEOUT] = "timeout",
        [EM_REASON_FRAME_SIZE] = "frame_size",
};

const char *em_reason_str(uint32_t reason)
{
	return reason < EM_REASON_COUNT_ ? reason_names[reason] : "unknown";
}

/* Names on the wire are Kubernetes object names: a restricted alphabet keeps
 * them safe to log and to use as keys without escaping. */
static bool name_ok(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t c = p[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '.' || c == '_'))
			return false;
	}
	return true;
}

static bool text_ok(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] < 0x20 || p[i] > 0x7e)
			return false;
	return true;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

int em_frame_decode_header(const void *buf, size_t len, uint32_t max_data,
                           struct em_frame_header *h)
{
	const uint8_t *p = buf;

	/* The version byte alone can already be judged: a peer speaking
	 * something else is told so without waiting for more bytes. */
	if (len >= 1 && p[0] != EM_FRAME_VERSION)
		return EM_EBADMSG;
	if (len >= 2 && p[1] >= EM_FRAME_TYPE_COUNT_)
		return EM_EBADMSG;
	if (len < EM_FRAME_HEADER_LEN)
		return EM_PARTIAL;
	h->version = p[0];
	h->type = p[1];
	h->flags = get16(p + 2);
	h->stream_id = get32(p + 4);
	h->length = get32(p + 8);

	if (max_data > EM_FRAME_MAX_DATA)
		max_data = EM_FRAME_MAX_DATA;
	bool need_stream = false;
	uint32_t lo = 0, hi = 0, flags_ok = 0;
	switch (h->type) {
	case EM_FRAME_DATA:
		need_stream = true;
		hi = max_data;
		flags_ok = EM_FRAME_FLAG_FIN;
		break;
	case EM_FRAME_WINDOW_UPDATE:
		need_stream = true;
		lo = hi = 4;
		break;
	case EM_FRAME_PING:
		lo = hi = EM_FRAME_PING_LEN;
		flags_ok = EM_FRAME_FLAG_ACK;
		break;
	case EM_FRAME_GOAWAY:
		lo = 8;
		hi = 8 + EM_FRAME_MAX_TEXT;
		break;
	case EM_FRAME_OPEN:
		need_stream = true;
		lo = EM_FRAME_OPEN_FIXED;
		hi = EM_FRAME_OPEN_FIXED + 2 * EM_FRAME_MAX_NAME + EM_FRAME_MAX_NS;
		break;
	case EM_FRAME_RST:
		need_stream = true;
		lo = 4;
		hi = 4 + EM_FRAME_MAX_TEXT;
		break;
	case EM_FRAME_HELLO:
		lo = EM_FRAME_HELLO_FIXED + 1;
		hi = EM_FRAME_HELLO_FIXED + EM_FRAME_MAX_NAME;
		break;
	case EM_FRAME_AUTH:
		lo = hi = EM_FRAME_MAC_LEN;
		break;
	}
	if (h->flags & ~flags_ok)
		return EM_EBADMSG;
	if (need_stream != (h->stream_id != 0))
		return EM_EBADMSG;
	if (h->length < lo || h->length > hi)
		return EM_EBADMSG;
	return EM_FRAME_HEADER_LEN;
}

static int decode_open(const uint8_t *p, uint32_t len, struct em_frame_target *t)
{
	t->protocol = p[0];
	uint8_t fam = p[1];
	t->port = get16(p + 2);
	uint16_t dport = get16(p + 4);
	uint8_t nl = p[6], nsl = p[7], sl = p[8];

	if (t->protocol != EM_FRAME_PROTO_TCP && t->protocol != EM_FRAME_PROTO_UDP &&
	    t->protocol != EM_FRAME_PROTO_CONTROL)
		return EM_EBADMSG;
	if (t->protocol == EM_FRAME_PROTO_CONTROL && (fam || t->port || dport || nsl || sl))
		return EM_EBADMSG;
	if (p[9] || p[10] || p[11])
		return EM_EBADMSG;
	if (nl > EM_FRAME_MAX_NAME || nsl > EM_FRAME_MAX_NS || sl > EM_FRAME_MAX_NAME)
		return EM_EBADMSG;
	if ((uint32_t)EM_FRAME_OPEN_FIXED + nl + nsl + sl != len)
		return EM_EBADMSG;
	if ((nsl == 0) != (sl == 0))
		return EM_EBADMSG;

	memset(&t->dst, 0, sizeof(t->dst));
	const uint8_t *a = p + 12;
	switch (fam) {
	case 0:
		if (dport || !all_zero(a, 16))
			return EM_EBADMSG;
		break;
	case 4:
		if (dport == 0 || !all_zero(a + 4, 12))
			return EM_EBADMSG;
		t->dst.family = AF_INET;
		break;
	case 6:
		if (dport == 0)
			return EM_EBADMSG;
		t->dst.family = AF_INET6;
		break;
	default:
		return EM_EBADMSG;
	}
	memcpy(t->dst.b, a, 16);
	t->dst.port = dport;
	if (sl == 0 && fam == 0 && t->protocol != EM_FRAME_PROTO_CONTROL)
		return EM_EBADMSG; /* nothing to connect to */
	if (sl && t->port == 0)
		return EM_EBADMSG;

	const uint8_t *s = p + EM_FRAME_OPEN_FIXED;
	if (!name_ok(s, nl) || !name_ok(s + nl, nsl) || !name_ok(s + nl + nsl, sl))
		return EM_EBADMSG;
	t->node = (struct em_slice){(const char *)s, nl};
	t->ns = (struct em_slice){(const char *)s + nl, nsl};
	t->service = (struct em_slice){(const char *)s + nl + nsl, sl};
	return 0;
}

static int decode_hello(const uint8_t *p, uint32_t len, struct em_frame_hello *hl)
{
	hl->role = p[0];
	uint8_t nl = p[1];
	if (hl->role > EM_FRAME_ROLE_ACCEPTOR || p[2] || p[3])
		return EM_EBADMSG;
	if (nl == 0 || (uint32_t)EM_FRAME_HELLO_FIXED + nl != len)
		return EM_EBADMSG;
	hl->initial_window = get32(p + 4);
	hl->max_data = get32(p + 8);
	hl->max_streams = get32(p + 12);
	if (hl->initial_window < EM_FRAME_MIN_WINDOW || hl->initial_window > EM_FRAME_MAX_WINDOW)
		return EM_EBADMSG;
	if (hl->max_data < EM_FRAME_MIN_MAX_DATA || hl->max_data > EM_FRAME_MAX_DATA)
		return EM_EBADMSG;
	if (hl->max_streams == 0)
		return EM_EBADMSG;
	memcpy(hl->nonce, p + 16, EM_FRAME_NONCE_LEN);
	if (!name_ok(p + EM_FRAME_HELLO_FIXED, nl))
		return EM_EBADMSG;
	hl->name = (struct em_slice){(const char *)p + EM_FRAME_HELLO_FIXED, nl};
	return 0;
}

int em_frame_decode_payload(const struct em_frame_header *h, const void *payload,
                            struct em_frame *f)
{
	const uint8_t *p = payload;
	uint32_t n = h->length;

	f->type = h->type;
	f->flags = h->flags;
	f->stream_id = h->stream_id;
	switch (h->type) {
	case EM_FRAME_DATA:
		f->u.data = (struct em_slice){(const char *)p, n};
		return 0;
	case EM_FRAME_WINDOW_UPDATE:
		f->u.increment = get32(p);
		if (f->u.increment == 0 || f->u.increment > EM_FRAME_MAX_WINDOW)
			return EM_EBADMSG;
		return 0;
	case EM_FRAME_PING:
		memcpy(f->u.opaque, p, EM_FRAME_PING_LEN);
		return 0;
	case EM_FRAME_GOAWAY:
		f->u.goaway.last_stream_id = get32(p);
		f->u.goaway.reason = get32(p + 4);
		if (!text_ok(p + 8, n - 8))
			return EM_EBADMSG;
		f->u.goaway.text = (struct em_slice){(const char *)p + 8, n - 8};
		return 0;
	case EM_FRAME_OPEN:
		return decode_open(p, n, &f->u.open);
	case EM_FRAME_RST:
		f->u.rst.reason = get32(p);
		if (!text_ok(p + 4, n - 4))
			return EM_EBADMSG;
		f->u.rst.text = (struct em_slice){(const char *)p + 4, n - 4};
		return 0;
	case EM_FRAME_HELLO:
		return decode_hello(p, n, &f->u.hello);
	case EM_FRAME_AUTH:
		memcpy(f->u.mac, p, EM_FRAME_MAC_LEN);
		return 0;
	}
	return EM_EBADMSG;
}

int em_frame_decode(const void *buf, size_t len, uint32_t max_data, struct em_frame *f)
{
	struct em_frame_header h;
	int rc = em_frame_decode_header(buf, len, max_data, &h);
	if (rc < 0)
		return rc;
	if (len - EM_FRAME_HEADER_LEN < h.length)
		return EM_PARTIAL;
	rc = em_frame_decode_payload(&h, (const uint8_t *)buf + EM_FRAME_HEADER_LEN, f);
	if (rc < 0)
		return rc;
	return EM_FRAME_HEADER_LEN + (int)h.length;
}

void em_frame_write_header(void *buf, uint8_t type, uint16_t flags, uint32_t stream_id,
                           uint32_t length)
{
	uint8_t *p = buf;
	p[0] = EM_FRAME_VERSION;
	p[1] = type;
	put16(p + 2, flags);
	put32(p + 4, stream_id);
	put32(p + 8, length);
}

int em_frame_payload_len(const struct em_frame *f)
{
	switch (f->type) {
	case EM_FRAME_DATA:
		return f->u.data.len <= EM_FRAME_MAX_DATA ? (int)f->u.data.len : -EINVAL;
	case EM_FRAME_WINDOW_UPDATE:
		return 4;
	case EM_FRAME_PING:
		return EM_FRAME_PING_LEN;
	case EM_FRAME_GOAWAY:
		return f->u.goaway.text.len <= EM_FRAME_MAX_TEXT ? 8 + (int)f->u.goaway.text.len
		                                                 : -EINVAL;
	case EM_FRAME_OPEN: {
		const struct em_frame_target *t = &f->u.open;
		if (t->node.len > EM_FRAME_MAX_NAME || t->ns.len > EM_FRAME_MAX_NS ||
		    t->service.len > EM_FRAME_MAX_NAME)
			return -EINVAL;
		return EM_FRAME_OPEN_FIXED + (int)(t->node.len + t->ns.len + t->service.len);
	}
	case EM_FRAME_RST:
		return f->u.rst.text.len <= EM_FRAME_MAX_TEXT ? 4 + (int)f->u.rst.text.len
		                                              : -EINVAL;
	case EM_FRAME_HELLO:
		return f->u.hello.name.len <= EM_FRAME_MAX_NAME
		               ? EM_FRAME_HELLO_FIXED + (int)f->u.hello.name.len
		               : -EINVAL;
	case EM_FRAME_AUTH:
		return EM_FRAME_MAC_LEN;
	}
	return -EINVAL;
}

static int encode_open(const struct em_frame_target *t, uint8_t *p)
{
	uint8_t fam;
	switch (t->dst.family) {
	case 0:
		fam = 0;
		break;
	case AF_INET:
		fam = 4;
		break;
	case AF_INET6:
		fam = 6;
		break;
	default:
		return -EINVAL;
	}
	p[0] = t->protocol;
	p[1] = fam;
	put16(p + 2, t->port);
	put16(p + 4, fam ? t->dst.port : 0);
	p[6] = (uint8_t)t->node.len;
	p[7] = (uint8_t)t->ns.len;
	p[8] = (uint8_t)t->service.len;
	p[9] = p[10] = p[11] = 0;
	memset(p + 12, 0, 16);
	if (fam == 4)
		memcpy(p + 12, t->dst.b, 4);
	else if (fam == 6)
		memcpy(p + 12, t->dst.b, 16);
	uint8_t *s = p + EM_FRAME_OPEN_FIXED;
	if (t->node.len)
		memcpy(s, t->node.base, t->node.len);
	s += t->node.len;
	if (t->ns.len)
		memcpy(s, t->ns.base, t->ns.len);
	s += t->ns.len;
	if (t->service.len)
		memcpy(s, t->service.base, t->service.len);
	return 0;
}

int em_frame_encode(const struct em_frame *f, void *buf, size_t cap)
{
	int plen = em_frame_payload_len(f);
	if (plen < 0)
		return plen;
	if (cap < (size_t)EM_FRAME_HEADER_LEN + (size_t)plen)
		return -ENOBUFS;
	uint8_t *p = (uint8_t *)buf + EM_FRAME_HEADER_LEN;
	const struct em_frame_hello *hl = &f->u.hello;

	em_frame_write_header(buf, f->type, f->flags, f->stream_id, (uint32_t)plen);
	switch (f->type) {
	case EM_FRAME_DATA:
		if (plen)
			memcpy(p, f->u.data.base, (size_t)plen);
		break;
	case EM_FRAME_WINDOW_UPDATE:
		put32(p, f->u.increment);
		break;
	case EM_FRAME_PING:
		memcpy(p, f->u.opaque, EM_FRAME_PING_LEN);
		break;
	case EM_FRAME_GOAWAY:
		put32(p, f->u.goaway.last_stream_id);
		put32(p + 4, f->u.goaway.reason);
		if (f->u.goaway.text.len)
			memcpy(p + 8, f->u.goaway.text.base, f->u.goaway.text.len);
		break;
	case EM_FRAME_OPEN:
		if (encode_open(&f->u.open, p) < 0)
			return -EINVAL;
		break;
	case EM_FRAME_RST:
		put32(p, f->u.rst.reason);
		if (f->u.rst.text.len)
			memcpy(p + 4, f->u.rst.text.base, f->u.rst.text.len);
		break;
	case EM_FRAME_HELLO:
		p[0] = hl->role;
		p[1] = (uint8_t)hl->name.len;
		p[2] = p[3] = 0;
		put32(p + 4, hl->initial_window);
		put32(p + 8, hl->max_data);
		put32(p + 12, hl->max_streams);
		memcpy(p + 16, hl->nonce, EM_FRAME_NONCE_LEN);
		if (hl->name.len)
			memcpy(p + EM_FRAME_HELLO_FIXED, hl->name.base, hl->name.len);
		break;
	case EM_FRAME_AUTH:
		memcpy(p, f->u.mac, EM_FRAME_MAC_LEN);
		break;
	}

	/* Re-reading what was written guarantees that the encoder never emits a
	 * frame the decoder refuses; DATA is exempt because its ceiling is the
	 * peer's, which only the caller knows. */
	struct em_frame_header h;
	struct em_frame chk;
	if (em_frame_decode_header(buf, EM_FRAME_HEADER_LEN, EM_FRAME_MAX_DATA, &h) < 0 ||
	    em_frame_decode_payload(&h, p, &chk) < 0)
		return -EINVAL;
	return EM_FRAME_HEADER_LEN + plen;
}

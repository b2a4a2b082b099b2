/* HTTP/1.x head parser and body framing (RFC 9112). Strict by design: a
 * proxy that accepts what its upstream frames differently is a request
 * smuggling vector, so anything ambiguous is refused rather than repaired. */
#include "proto/http1.h"

/* tchar of RFC 9110 5.6.2 */
static const uint8_t tchar[256] = {
        ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1,         ['&'] = 1,         ['\''] = 1,
        ['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1,         ['^'] = 1,         ['_'] = 1,
        ['`'] = 1, ['|'] = 1, ['~'] = 1, ['0' ... '9'] = 1, ['A' ... 'Z'] = 1, ['a' ... 'z'] = 1,
};

/* field-value bytes: VCHAR, obs-text, SP, HTAB */
static inline bool value_char(uint8_t c)
{
	return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static inline bool ows(uint8_t c)
{
	return c == ' ' || c == '\t';
}

struct lims {
	size_t line;
	size_t head;
	size_t headers;
};

static void get_lims(const struct em_http1_limits *l, struct lims *o)
{
	o->line = l && l->max_line ? l->max_line : EM_HTTP1_MAX_LINE;
	o->head = l && l->max_head ? l->max_head : EM_HTTP1_MAX_HEAD;
	o->headers = l && l->max_headers ? EM_MIN(l->max_headers, EM_HTTP1_MAX_HEADERS)
	                                 : EM_HTTP1_MAX_HEADERS;
}

static int fail(struct em_http1_head *h, int code, const char *why)
{
	h->error = why;
	return code;
}

static struct em_slice mk(const uint8_t *p, size_t n)
{
	return (struct em_slice){(const char *)p, n};
}

static bool ci_eq(struct em_slice s, const char *lit)
{
	size_t n = strlen(lit);
	if (s.len != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		uint8_t c = (uint8_t)s.base[i];
		if (c >= 'A' && c <= 'Z')
			c += 'a' - 'A';
		if (c != (uint8_t)lit[i])
			return false;
	}
	return true;
}

/* Splits the next element off a comma-separated list <*l> (RFC 9110 5.6.1),
 * trimmed of OWS. Returns false at the end. Empty elements come out empty. */
static bool list_next(struct em_slice *l, struct em_slice *elem)
{
	const char *p = l->base, *end = l->base + l->len, *s, *e;
	if (l->base == NULL)
		return false;
	while (p < end && ows((uint8_t)*p))
		p++;
	s = p;
	while (p < end && *p != ',')
		p++;
	e = p;
	while (e > s && ows((uint8_t)e[-1]))
		e--;
	*elem = (struct em_slice){s, (size_t)(e - s)};
	if (p < end) {
		l->base = p + 1;
		l->len = (size_t)(end - p - 1);
	} else {
		l->base = NULL;
		l->len = 0;
	}
	return true;
}

bool em_http1_list_has(struct em_slice list, const char *token)
{
	struct em_slice e;
	if (list.len == 0)
		return false;
	while (list_next(&list, &e))
		if (ci_eq(e, token))
			return true;
	return false;
}

bool em_http1_find_header(const struct em_http1_head *h, const char *name, struct em_slice *value)
{
	for (size_t i = 0; i < h->num_headers; i++) {
		if (ci_eq(h->headers[i].name, name)) {
			*value = h->headers[i].value;
			return true;
		}
	}
	return false;
}

/* "HTTP/d.d", judged on the bytes available so that "XTTP" fails at once. */
static int parse_version(const uint8_t *b, size_t avail, struct em_http1_head *h)
{
	static const char pat[] = "HTTP/1.1";
	for (size_t i = 0; i < 8 && i < avail; i++) {
		bool ok = i == 5 || i == 7 ? b[i] >= '0' && b[i] <= '9' : b[i] == (uint8_t)pat[i];
		if (!ok)
			return fail(h, EM_HTTP1_E400, "bad HTTP version");
	}
	if (avail < 8)
		return EM_PARTIAL;
	if (b[5] != '1' || b[7] > '1')
		return fail(h, EM_HTTP1_E505, "HTTP version not supported");
	h->minor_version = (uint8_t)(b[7] - '0');
	return 0;
}

/* CRLF at <*pos>; a lone CR or LF is refused (RFC 9112 2.2 allows a server
 * to accept bare LF; a proxy must not, its upstream may disagree). */
static int eol(const uint8_t *b, size_t len, size_t *pos, struct em_http1_head *h)
{
	if (*pos == len)
		return EM_PARTIAL;
	if (b[*pos] == '\n')
		return fail(h, EM_HTTP1_E400, "bare LF");
	if (b[*pos] != '\r')
		return fail(h, EM_HTTP1_E400, "bad character at end of line");
	if (*pos + 1 == len)
		return EM_PARTIAL;
	if (b[*pos + 1] != '\n')
		return fail(h, EM_HTTP1_E400, "CR without LF");
	*pos += 2;
	return 0;
}

/* The start line is still incomplete at <len>: too long already? */
static int line_partial(size_t len, const struct lims *L, struct em_http1_head *h)
{
	if (len >= L->line + 2)
		return fail(h, EM_HTTP1_E414, "request line too long");
	return EM_PARTIAL;
}

static int parse_request_line(const uint8_t *b, size_t len, size_t *ppos, const struct lims *L,
                              struct em_http1_head *h)
{
	size_t pos = 0, s;
	int rc;

	/* RFC 9112 2.2: empty lines before a request line are ignored, which
	 * forgives the CRLF some clients add after a POST body. */
	while (pos < len && b[pos] == '\r') {
		if (pos + 1 == len)
			return line_partial(len, L, h);
		if (b[pos + 1] != '\n')
			return fail(h, EM_HTTP1_E400, "CR without LF");
		pos += 2;
	}
	s = pos;
	while (pos < len && tchar[b[pos]])
		pos++;
	if (pos == len)
		return line_partial(len, L, h);
	if (pos == s || b[pos] != ' ')
		return fail(h, EM_HTTP1_E400, "bad method");
	h->method = mk(b + s, pos - s);
	s = ++pos;
	while (pos < len && b[pos] > 0x20 && b[pos] < 0x7f)
		pos++;
	if (pos == len)
		return line_partial(len, L, h);
	if (pos == s || b[pos] != ' ')
		return fail(h, EM_HTTP1_E400, "bad request target");
	h->target = mk(b + s, pos - s);
	pos++;
	rc = parse_version(b + pos, len - pos, h);
	if (rc == EM_PARTIAL)
		return line_partial(len, L, h);
	if (rc < 0)
		return rc;
	pos += 8;
	rc = eol(b, len, &pos, h);
	if (rc == EM_PARTIAL)
		return line_partial(len, L, h);
	if (rc < 0)
		return rc;
	if (pos > L->line + 2)
		return fail(h, EM_HTTP1_E414, "request line too long");
	*ppos = pos;
	return 0;
}

static int parse_status_line(const uint8_t *b, size_t len, size_t *ppos, const struct lims *L,
                             struct em_http1_head *h)
{
	size_t pos = 0, s;
	int rc = parse_version(b, len, h);

	if (rc == EM_PARTIAL)
		return line_partial(len, L, h);
	if (rc < 0)
		return rc;
	pos = 8;
	for (size_t i = 0; i < 4; i++, pos++) {
		if (pos == len)
			return line_partial(len, L, h);
		bool ok = i == 0 ? b[pos] == ' ' : b[pos] >= '0' && b[pos] <= '9';
		if (!ok)
			return fail(h, EM_HTTP1_E400, "bad status code");
		if (i > 0)
			h->status = (uint16_t)(h->status * 10 + (b[pos] - '0'));
	}
	if (h->status < 100 || h->status > 599)
		return fail(h, EM_HTTP1_E400, "bad status code");
	/* The SP before an empty reason is often missing; harmless to allow. */
	if (pos < len && b[pos] == ' ') {
		s = ++pos;
		while (pos < len && value_char(b[pos]))
			pos++;
		h->reason = mk(b + s, pos - s);
	}
	rc = eol(b, len, &pos, h);
	if (rc == EM_PARTIAL)
		return line_partial(len, L, h);
	if (rc < 0)
		return rc;
	if (pos > L->line + 2)
		return fail(h, EM_HTTP1_E414, "status line too long");
	*ppos = pos;
	return 0;
}

static int head_partial(size_t len, size_t hs, const struct lims *L, struct em_http1_head *h)
{
	if (len - hs >= L->head)
		return fail(h, EM_HTTP1_E431, "header section too large");
	return EM_PARTIAL;
}

/* Field lines from <pos> up to and including the empty line. Returns the
 * head's total length. */
static int parse_fields(const uint8_t *b, size_t len, size_t pos, const struct lims *L,
                        struct em_http1_head *h)
{
	const size_t hs = pos;
	size_t s, vs, ve;
	uint8_t c;

	for (;;) {
		if (pos == len)
			return head_partial(len, hs, L, h);
		c = b[pos];
		if (c == '\r') {
			int rc = eol(b, len, &pos, h);
			if (rc == EM_PARTIAL)
				return head_partial(len, hs, L, h);
			if (rc < 0)
				return rc;
			if (pos - hs > L->head)
				return fail(h, EM_HTTP1_E431, "header section too large");
			return (int)pos;
		}
		if (c == '\n')
			return fail(h, EM_HTTP1_E400, "bare LF");
		if (ows(c))
			return fail(h, EM_HTTP1_E400, "obsolete line folding");
		if (h->num_headers == L->headers)
			return fail(h, EM_HTTP1_E431, "too many header fields");
		s = pos;
		while (pos < len && tchar[b[pos]])
			pos++;
		if (pos == len)
			return head_partial(len, hs, L, h);
		if (ows(b[pos]))
			return fail(h, EM_HTTP1_E400, "whitespace before colon");
		if (pos == s || b[pos] != ':')
			return fail(h, EM_HTTP1_E400, "bad field name");
		h->headers[h->num_headers].name = mk(b + s, pos - s);
		pos++;
		while (pos < len && ows(b[pos]))
			pos++;
		vs = ve = pos;
		while (pos < len && value_char(b[pos])) {
			if (!ows(b[pos]))
				ve = pos + 1;
			pos++;
		}
		if (pos == len)
			return head_partial(len, hs, L, h);
		if (b[pos] == 0)
			return fail(h, EM_HTTP1_E400, "NUL in field value");
		if (b[pos] == '\n')
			return fail(h, EM_HTTP1_E400, "bare LF");
		if (b[pos] != '\r')
			return fail(h, EM_HTTP1_E400, "control character in field value");
		if (pos + 1 == len)
			return head_partial(len, hs, L, h);
		if (b[pos + 1] != '\n')
			return fail(h, EM_HTTP1_E400, "CR in field value");
		pos += 2;
		if (pos - hs > L->head)
			return fail(h, EM_HTTP1_E431, "header section too large");
		h->headers[h->num_headers++].value = mk(b + vs, ve - vs);
	}
}

/* Content-Length: 1*DIGIT, or a list of equal ones (RFC 9110 8.6 lets a
 * recipient accept "42, 42"; anything else is a conflict). */
static int parse_cl(struct em_slice v, bool *seen, uint64_t *out, struct em_http1_head *h)
{
	struct em_slice e;
	while (list_next(&v, &e)) {
		uint64_t n = 0;
		if (e.len == 0)
			return fail(h, EM_HTTP1_E400, "invalid Content-Length");
		for (size_t i = 0; i < e.len; i++) {
			uint8_t c = (uint8_t)e.base[i];
			if (c < '0' || c > '9' || n > (UINT64_C(1) << 58))
				return fail(h, EM_HTTP1_E400, "invalid Content-Length");
			n = n * 10 + (c - '0');
		}
		if (*seen && n != *out)
			return fail(h, EM_HTTP1_E400, "conflicting Content-Length");
		*seen = true;
		*out = n;
	}
	return 0;
}

struct te {
	bool seen, chunked, chunked_last, unknown, not_last;
};

/* Transfer-Encoding, possibly over several fields, in order. Only bare
 * codings: a parameter or an empty element is refused (no coding we accept
 * has parameters, and a lenient split is where parsers start to disagree). */
static int parse_te(struct em_slice v, struct te *t, struct em_http1_head *h)
{
	struct em_slice e;
	t->seen = true;
	while (list_next(&v, &e)) {
		size_t n = 0;
		while (n < e.len && tchar[(uint8_t)e.base[n]])
			n++;
		if (n == 0 || n != e.len)
			return fail(h, EM_HTTP1_E400, "invalid Transfer-Encoding");
		if (ci_eq(e, "chunked")) {
			if (t->chunked)
				return fail(h, EM_HTTP1_E400, "chunked applied twice");
			t->chunked = t->chunked_last = true;
		} else {
			t->not_last |= t->chunked_last;
			t->chunked_last = false;
			t->unknown = true;
		}
	}
	return 0;
}

/* What the fields mean for framing and the connection. */
static int interpret(struct em_http1_head *h, bool req, unsigned req_flags)
{
	struct te te = {0};
	bool cl_seen = false, ka = false, close = false;
	unsigned hosts = 0;
	int rc;

	for (size_t i = 0; i < h->num_headers; i++) {
		struct em_slice n = h->headers[i].name, v = h->headers[i].value;
		switch (n.len) {
		case 4:
			if (ci_eq(n, "host") && hosts++ == 0)
				h->host = v;
			break;
		case 6:
			if (ci_eq(n, "expect") && ci_eq(v, "100-continue"))
				h->flags |= EM_HTTP1_F_EXPECT;
			break;
		case 7:
			if (ci_eq(n, "upgrade") && !h->upgrade.base)
				h->upgrade = v;
			break;
		case 10:
			if (ci_eq(n, "connection")) {
				if (!h->connection.base)
					h->connection = v;
				close |= em_http1_list_has(v, "close");
				ka |= em_http1_list_has(v, "keep-alive");
				if (em_http1_list_has(v, "upgrade"))
					h->flags |= EM_HTTP1_F_UPGRADE;
			}
			break;
		case 14:
			if (ci_eq(n, "content-length") &&
			    (rc = parse_cl(v, &cl_seen, &h->content_length, h)) < 0)
				return rc;
			break;
		case 17:
			if (ci_eq(n, "transfer-encoding") && (rc = parse_te(v, &te, h)) < 0)
				return rc;
			break;
		}
	}
	if (!h->upgrade.base)
		h->flags &= (uint16_t)~EM_HTTP1_F_UPGRADE;
	if (h->minor_version == 1 ? !close : ka && !close)
		h->flags |= EM_HTTP1_F_KEEPALIVE;
	if (te.chunked_last)
		h->flags |= EM_HTTP1_F_CHUNKED;
	if (cl_seen && te.seen)
		return fail(h, EM_HTTP1_E400, "both Content-Length and Transfer-Encoding");

	if (req) {
		if (hosts > 1)
			return fail(h, EM_HTTP1_E400, "more than one Host");
		if (hosts == 0 && h->minor_version == 1)
			return fail(h, EM_HTTP1_E400, "HTTP/1.1 request without Host");
		if (te.seen && h->minor_version == 0)
			return fail(h, EM_HTTP1_E400, "Transfer-Encoding in HTTP/1.0");
		if (te.not_last || (te.seen && !te.chunked_last))
			return fail(h, EM_HTTP1_E400, "chunked is not the last transfer coding");
		if (te.unknown)
			return fail(h, EM_HTTP1_E501, "unsupported transfer coding");
		if (em_slice_eq(h->method, "CONNECT"))
			h->flags |= EM_HTTP1_F_CONNECT;
		if (em_slice_eq(h->method, "HEAD"))
			h->flags |= EM_HTTP1_F_HEAD;
		h->framing = te.seen   ? EM_HTTP1_BODY_CHUNKED
		             : cl_seen ? EM_HTTP1_BODY_LENGTH
		                       : EM_HTTP1_BODY_NONE;
		return 0;
	}

	h->flags &= (uint16_t) ~(EM_HTTP1_F_UPGRADE | EM_HTTP1_F_EXPECT);
	if (h->status == 101) {
		if (!(req_flags & EM_HTTP1_F_UPGRADE))
			return fail(h, EM_HTTP1_E400, "101 without an upgrade request");
		h->framing = EM_HTTP1_BODY_TUNNEL;
	} else if (h->status < 200 || h->status == 204 || h->status == 304 ||
	           (req_flags & EM_HTTP1_F_HEAD)) {
		h->framing = EM_HTTP1_BODY_NONE;
	} else if ((req_flags & EM_HTTP1_F_CONNECT) && h->status < 300) {
		h->framing = EM_HTTP1_BODY_TUNNEL;
	} else if (te.seen) {
		h->framing = te.chunked_last ? EM_HTTP1_BODY_CHUNKED : EM_HTTP1_BODY_CLOSE;
	} else if (cl_seen) {
		h->framing = EM_HTTP1_BODY_LENGTH;
	} else {
		h->framing = EM_HTTP1_BODY_CLOSE;
	}
	if (h->framing == EM_HTTP1_BODY_CLOSE || h->framing == EM_HTTP1_BODY_TUNNEL)
		h->flags &= (uint16_t)~EM_HTTP1_F_KEEPALIVE;
	return 0;
}

/* One full pass over the head; works on any prefix. */
static int parse_head(const uint8_t *b, size_t len, bool req, unsigned req_flags,
                      const struct lims *L, struct em_http1_head *h)
{
	size_t pos = 0;
	int rc;

	/* Everything but the header array, which num_headers guards. */
	memset(h, 0, offsetof(struct em_http1_head, headers));
	rc = req ? parse_request_line(b, len, &pos, L, h) : parse_status_line(b, len, &pos, L, h);
	if (rc < 0)
		return rc;
	rc = parse_fields(b, len, pos, L, h);
	if (rc < 0)
		return rc;
	pos = (size_t)rc;
	rc = interpret(h, req, req_flags);
	return rc < 0 ? rc : (int)pos;
}

/* Looks at the new bytes only, for the cheap events that make a full pass
 * worth it: the empty line ending the head, a bare CR or LF (an error), or a
 * limit crossed. A byte-at-a-time client thus costs O(n), not O(n^2). */
static bool worth_parsing(struct em_http1_parser *p, const uint8_t *b, size_t len,
                          const struct lims *L)
{
	size_t i;
	bool need = false;

	for (i = p->scanned; i < len && !need; i++) {
		if (b[i] == '\r') {
			if (i + 1 == len)
				break; /* look at it again with its successor */
			need = b[i + 1] != '\n';
			continue;
		}
		if (b[i] != '\n')
			continue;
		if (i == 0 || b[i - 1] != '\r') {
			need = true;
		} else if (i == 1 || b[i - 2] == '\n') {
			need = p->first_lf != 0; /* empty line: before or after the start line */
		} else if (!p->first_lf) {
			p->first_lf = (uint32_t)(i + 1);
		} else if (++p->lines > L->headers) {
			need = true;
		}
	}
	p->scanned = (uint32_t)i;
	if (!p->first_lf ? len >= L->line + 2 : len - p->first_lf >= L->head)
		need = true;
	return need;
}

static int parse_resumable(struct em_http1_parser *p, const char *buf, size_t len, bool req,
                           unsigned req_flags, const struct em_http1_limits *lim,
                           struct em_http1_head *out)
{
	const uint8_t *b = (const uint8_t *)buf;
	struct lims L;
	int rc;

	get_lims(lim, &L);
	if (p && p->scanned > len)
		memset(p, 0, sizeof(*p)); /* misuse: a shorter buffer, start over */
	if (p && !worth_parsing(p, b, len, &L)) {
		out->error = NULL;
		return EM_PARTIAL;
	}
	rc = parse_head(b, len, req, req_flags, &L, out);
	if (p && rc != EM_PARTIAL)
		memset(p, 0, sizeof(*p));
	return rc;
}

int em_http1_parse_request(struct em_http1_parser *p, const char *buf, size_t len,
                           const struct em_http1_limits *lim, struct em_http1_head *out)
{
	return parse_resumable(p, buf, len, true, 0, lim, out);
}

int em_http1_parse_response(struct em_http1_parser *p, const char *buf, size_t len,
                            unsigned req_flags, const struct em_http1_limits *lim,
                            struct em_http1_head *out)
{
	return parse_resumable(p, buf, len, false, req_flags, lim, out);
}

/* Body decoder states. */
enum {
	S_DONE = 0,
	S_DATA,    /* Content-Length body or chunk data: <remaining> bytes */
	S_RAW,     /* until the connection closes */
	S_SIZE0,   /* first hex digit of a chunk size */
	S_SIZE,    /* more hex digits, ';', BWS or CR */
	S_SIZE_WS, /* BWS before ';' */
	S_EXT,     /* chunk extensions up to CR */
	S_SIZE_LF, /* LF ending the chunk-size line */
	S_DATA_CR, /* CRLF after chunk data */
	S_DATA_LF,
	S_TRL_START, /* start of a trailer field or of the final empty line */
	S_TRL_NAME,
	S_TRL_VALUE,
	S_TRL_LF,
	S_END_LF, /* LF of the final empty line */
};

void em_http1_body_init_framing(struct em_http1_body *b, enum em_http1_framing framing,
                                uint64_t content_length)
{
	memset(b, 0, sizeof(*b));
	b->framing = (uint8_t)framing;
	switch (framing) {
	case EM_HTTP1_BODY_LENGTH:
		b->remaining = content_length;
		b->state = content_length ? S_DATA : S_DONE;
		break;
	case EM_HTTP1_BODY_CHUNKED:
		b->state = S_SIZE0;
		break;
	case EM_HTTP1_BODY_CLOSE:
	case EM_HTTP1_BODY_TUNNEL:
		b->state = S_RAW;
		break;
	case EM_HTTP1_BODY_NONE:
		b->state = S_DONE;
		break;
	}
}

void em_http1_body_init(struct em_http1_body *b, const struct em_http1_head *h)
{
	em_http1_body_init_framing(b, (enum em_http1_framing)h->framing, h->content_length);
}

bool em_http1_body_done(const struct em_http1_body *b)
{
	return b->state == S_DONE;
}

static int hexval(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static ssize_t bad(struct em_http1_body *b)
{
	b->state = S_DONE;
	b->framing = EM_HTTP1_BODY_NONE;
	return EM_HTTP1_E400;
}

ssize_t em_http1_body_step(struct em_http1_body *b, const char *buf, size_t len,
                           struct em_slice *data)
{
	const uint8_t *p = (const uint8_t *)buf;
	size_t i = 0, n;
	int v;

	*data = (struct em_slice){NULL, 0};
	while (i < len) {
		uint8_t c = p[i];
		switch (b->state) {
		case S_DONE:
			return (ssize_t)i;
		case S_RAW:
			*data = (struct em_slice){buf + i, len - i};
			return (ssize_t)len;
		case S_DATA:
			n = (size_t)EM_MIN(b->remaining, (uint64_t)(len - i));
			*data = (struct em_slice){buf + i, n};
			b->remaining -= n;
			if (b->remaining == 0)
				b->state = b->framing == EM_HTTP1_BODY_CHUNKED ? S_DATA_CR : S_DONE;
			return (ssize_t)(i + n);
		case S_SIZE0:
			if ((v = hexval(c)) < 0)
				return bad(b);
			b->remaining = (uint64_t)v;
			b->state = S_SIZE;
			break;
		case S_SIZE:
			if ((v = hexval(c)) >= 0) {
				if (b->remaining >> 58)
					return bad(b); /* no one sends 2^58-byte chunks */
				b->remaining = b->remaining << 4 | (uint64_t)v;
			} else if (c == ';') {
				b->state = S_EXT;
			} else if (ows(c)) {
				b->state = S_SIZE_WS;
			} else if (c == '\r') {
				b->state = S_SIZE_LF;
			} else {
				return bad(b);
			}
			break;
		case S_SIZE_WS:
			if (c == ';')
				b->state = S_EXT;
			else if (!ows(c))
				return bad(b);
			break;
		case S_EXT:
			if (c == '\r')
				b->state = S_SIZE_LF;
			else if (!value_char(c))
				return bad(b);
			break;
		case S_SIZE_LF:
			if (c != '\n')
				return bad(b);
			b->line = 0;
			b->state = b->remaining ? S_DATA : S_TRL_START;
			i++;
			continue;
		case S_DATA_CR:
			if (c != '\r')
				return bad(b);
			b->state = S_DATA_LF;
			break;
		case S_DATA_LF:
			if (c != '\n')
				return bad(b);
			b->state = S_SIZE0;
			b->line = 0;
			i++;
			continue;
		case S_TRL_START:
			if (c == '\r') {
				b->state = S_END_LF;
			} else if (tchar[c] && b->trailers < EM_HTTP1_MAX_HEADERS) {
				b->trailers++;
				b->state = S_TRL_NAME;
			} else {
				return bad(b);
			}
			break;
		case S_TRL_NAME:
			if (c == ':')
				b->state = S_TRL_VALUE;
			else if (!tchar[c])
				return bad(b);
			break;
		case S_TRL_VALUE:
			if (c == '\r')
				b->state = S_TRL_LF;
			else if (!value_char(c))
				return bad(b);
			break;
		case S_TRL_LF:
			if (c != '\n')
				return bad(b);
			b->state = S_TRL_START;
			break;
		case S_END_LF:
			if (c != '\n')
				return bad(b);
			b->state = S_DONE;
			return (ssize_t)(i + 1);
		default:
			return bad(b);
		}
		/* Framing bytes only: a size line, or the trailer section. */
		if (++b->line >
		    (b->state >= S_TRL_START ? EM_HTTP1_MAX_HEAD : EM_HTTP1_MAX_CHUNK_LINE))
			return bad(b);
		i++;
	}
	return (ssize_t)i;
}

ssize_t em_http1_body_feed(struct em_http1_body *b, const char *buf, size_t len)
{
	struct em_slice data;
	size_t off = 0;
	while (off < len && b->state != S_DONE) {
		ssize_t n = em_http1_body_step(b, buf + off, len - off, &data);
		if (n < 0)
			return n;
		off += (size_t)n;
	}
	return (ssize_t)off;
}

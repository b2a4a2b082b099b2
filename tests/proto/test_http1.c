/* HTTP/1.x parser: every prefix of a valid message is partial, each bad input
 * gets its status, inputs end at a guard page, chunked bodies split at every
 * byte give the same boundaries, pipelined requests. */
#include <criterion/criterion.h>
#include <stdio.h>

#include "proto/http1.h"
#include "tests/proto/guard.h"

static struct em_http1_head head;

static int req_n(const char *s, size_t n, const struct em_http1_limits *lim)
{
	return em_http1_parse_request(NULL, guard_put(s, n), n, lim, &head);
}

static int req(const char *s)
{
	return req_n(s, strlen(s), NULL);
}

static int resp(const char *s, unsigned req_flags)
{
	size_t n = strlen(s);
	return em_http1_parse_response(NULL, guard_put(s, n), n, req_flags, NULL, &head);
}

/* Feeds every prefix of <s>, both one-shot and through one resumable parser;
 * all must be EM_PARTIAL until the whole message gives <want>. */
static void every_prefix(const char *s, bool request, unsigned req_flags, int want)
{
	size_t n = strlen(s);
	struct em_http1_parser p = {0};
	for (size_t k = 0; k <= n; k++) {
		const char *b = guard_put(s, k);
		int one = request ? em_http1_parse_request(NULL, b, k, NULL, &head)
		                  : em_http1_parse_response(NULL, b, k, req_flags, NULL, &head);
		int res = request ? em_http1_parse_request(&p, b, k, NULL, &head)
		                  : em_http1_parse_response(&p, b, k, req_flags, NULL, &head);
		int exp = k < n ? EM_PARTIAL : want;
		cr_assert_eq(one, exp, "one-shot prefix %zu of %zu: %d (%s)", k, n, one,
		             head.error ? head.error : "");
		cr_assert_eq(res, exp, "resumable prefix %zu of %zu: %d", k, n, res);
	}
}

static const char *valid_requests[] = {
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /p?q=1#f HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: x/1 (y)\r\n"
        "Accept: */*\r\nX-Empty:\r\nX-Tab:\tv\t\r\n\r\n",
        "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
        "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
        "\r\nGET / HTTP/1.1\r\nhost: a\r\n\r\n",
        "CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n",
        "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: a\r\nX: \x80\xff obs-text\r\n\r\n",
};

Test(http1, every_prefix_of_valid_requests)
{
	for (size_t i = 0; i < EM_ARRAY_SIZE(valid_requests); i++)
		every_prefix(valid_requests[i], true, 0, (int)strlen(valid_requests[i]));
}

Test(http1, every_prefix_of_valid_responses)
{
	static const char *r[] = {
	        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
	        "HTTP/1.1 204 No Content\r\n\r\n",
	        "HTTP/1.0 200\r\nServer: s\r\n\r\n",
	        "HTTP/1.1 404 \r\nTransfer-Encoding: chunked\r\n\r\n",
	        "HTTP/1.1 100 Continue\r\n\r\n",
	};
	for (size_t i = 0; i < EM_ARRAY_SIZE(r); i++)
		every_prefix(r[i], false, 0, (int)strlen(r[i]));
}

Test(http1, request_fields_are_slices)
{
	const char *s = valid_requests[1];
	size_t n = strlen(s);
	const char *b = guard_put(s, n);
	cr_assert_eq(em_http1_parse_request(NULL, b, n, NULL, &head), (int)n);
	cr_assert(em_slice_eq(head.method, "GET"));
	cr_assert(em_slice_eq(head.target, "/p?q=1#f"));
	cr_assert_eq(head.target.base, b + 4);
	cr_assert_eq(head.minor_version, 1);
	cr_assert_eq(head.num_headers, 5);
	cr_assert(em_slice_eq(head.headers[1].name, "User-Agent"));
	cr_assert(em_slice_eq(head.headers[1].value, "x/1 (y)"));
	cr_assert(em_slice_eq(head.headers[3].value, ""));
	cr_assert(em_slice_eq(head.headers[4].value, "v"), "OWS trimmed");
	cr_assert(em_slice_eq(head.host, "example.com:8080"));
	cr_assert_null(head.connection.base);
	cr_assert_null(head.upgrade.base);
	cr_assert_eq(head.framing, EM_HTTP1_BODY_NONE);
	cr_assert_eq(head.flags, EM_HTTP1_F_KEEPALIVE);
	cr_assert_null(head.error);

	struct em_slice v;
	cr_assert(em_http1_find_header(&head, "accept", &v) && em_slice_eq(v, "*/*"));
	cr_assert(!em_http1_find_header(&head, "Cookie", &v));
}

static const struct {
	const char *msg;
	int want;
} bad_requests[] = {
        {"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
         EM_HTTP1_E400},
        {"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
         EM_HTTP1_E400},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", EM_HTTP1_E400},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", EM_HTTP1_E400},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
         "gzip\r\n\r\n",
         EM_HTTP1_E400},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
         EM_HTTP1_E400},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", EM_HTTP1_E501},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked x\r\n\r\n", EM_HTTP1_E400},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", EM_HTTP1_E400},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", EM_HTTP1_E400},
        {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", EM_HTTP1_E400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n", EM_HTTP1_E400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", EM_HTTP1_E400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n", EM_HTTP1_E400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", EM_HTTP1_E400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", EM_HTTP1_E400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
         EM_HTTP1_E400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
         EM_HTTP1_E400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n", EM_HTTP1_E400},
        {"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", EM_HTTP1_E400},
        {"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", EM_HTTP1_E400},
        {"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n", EM_HTTP1_E400},
        {"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", EM_HTTP1_E400},
        {"GET / HTTP/1.1\nHost: a\r\n\r\n", EM_HTTP1_E400},
        {"GET / HTTP/1.1\r\nHost: a\r\n\n", EM_HTTP1_E400},
        {"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n", EM_HTTP1_E400},
        {"GET / HTTP/1.1\r\nHost: a\r\n\tX: b\r\n\r\n", EM_HTTP1_E400},
        {"GET / HTTP/1.1\r\nHost : a\r\n\r\n", EM_HTTP1_E400},
        {"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", EM_HTTP1_E400},
        {"GET / HTTP/1.1\r\nHo(st: a\r\n\r\n", EM_HTTP1_E400},
        {"GET / HTTP/1.1\r\n: a\r\n\r\n", EM_HTTP1_E400},
        {"GET / HTTP/1.1\r\nHost a\r\n\r\n", EM_HTTP1_E400},
        {"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", EM_HTTP1_E400},
        {" GET / HTTP/1.1\r\nHost: a\r\n\r\n", EM_HTTP1_E400},
        {"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", EM_HTTP1_E400},
        {"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", EM_HTTP1_E400},
        {"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", EM_HTTP1_E400},
        {"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", EM_HTTP1_E400},
        {"GET / http/1.1\r\nHost: a\r\n\r\n", EM_HTTP1_E400},
        {"GET /\r\n\r\n", EM_HTTP1_E400},
        {"GET / HTTP/2.0\r\nHost: a\r\n\r\n", EM_HTTP1_E505},
        {"GET / HTTP/1.2\r\nHost: a\r\n\r\n", EM_HTTP1_E505},
        {"GET / HTTP/1.1\r\n\r\n", EM_HTTP1_E400},
        {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", EM_HTTP1_E400},
        {"\n", EM_HTTP1_E400},
        {"\r\r", EM_HTTP1_E400},
};

Test(http1, bad_requests_get_their_status)
{
	for (size_t i = 0; i < EM_ARRAY_SIZE(bad_requests); i++) {
		/* strlen would stop at the embedded NUL: size by the literal */
		const char *m = bad_requests[i].msg;
		size_t n = strlen(m);
		const char *x = strstr(m, "X: a");
		if (x && x[4] == 0)
			n += 1 + strlen(x + 5);
		int rc = req_n(m, n, NULL);
		cr_assert_eq(rc, bad_requests[i].want, "case %zu: %d (%s)", i, rc,
		             head.error ? head.error : "no reason");
		cr_assert_not_null(head.error);
		cr_assert_eq(em_http1_status(rc), -bad_requests[i].want);
		/* The resumable path gives the same answer, fed in two parts. */
		struct em_http1_parser p = {0};
		const char *b = guard_put(m, n);
		int a = em_http1_parse_request(&p, b, n / 2, NULL, &head);
		cr_assert(a == EM_PARTIAL || a == bad_requests[i].want, "case %zu half: %d", i, a);
		if (a == EM_PARTIAL)
			cr_assert_eq(em_http1_parse_request(&p, b, n, NULL, &head),
			             bad_requests[i].want, "case %zu resumable", i);
	}
}

Test(http1, content_length_and_duplicates)
{
	cr_assert_gt(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n"), 0);
	cr_assert_eq(head.framing, EM_HTTP1_BODY_LENGTH);
	cr_assert_eq(head.content_length, 42);
	cr_assert_gt(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42, 42\r\n"
	                 "content-length: 042\r\n\r\n"),
	             0);
	cr_assert_eq(head.content_length, 42);
	cr_assert_gt(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"), 0);
	cr_assert_eq(head.framing, EM_HTTP1_BODY_LENGTH);
	cr_assert_eq(head.content_length, 0);
	cr_assert_gt(req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"), 0);
	cr_assert_eq(head.framing, EM_HTTP1_BODY_CHUNKED);
	cr_assert(head.flags & EM_HTTP1_F_CHUNKED);
}

static void fill_line(char *buf, size_t target_len)
{
	memcpy(buf, "GET /", 5);
	memset(buf + 5, 'a', target_len);
	memcpy(buf + 5 + target_len, " HTTP/1.1\r\nHost: a\r\n\r\n", 23);
}

Test(http1, request_line_limit_414)
{
	static char buf[20000];
	/* line of exactly 8192 bytes is fine, 8193 is not */
	size_t t = EM_HTTP1_MAX_LINE - 5 - 9;
	fill_line(buf, t);
	cr_assert_eq(req(buf), (int)strlen(buf));
	fill_line(buf, t + 1);
	cr_assert_eq(req(buf), EM_HTTP1_E414);
	/* Detected without the line end: the caller's buffer never needs more. */
	cr_assert_eq(req_n(buf, EM_HTTP1_MAX_LINE + 1, NULL), EM_PARTIAL);
	cr_assert_eq(req_n(buf, EM_HTTP1_MAX_LINE + 2, NULL), EM_HTTP1_E414);
	struct em_http1_parser p = {0};
	const char *b = guard_put(buf, EM_HTTP1_MAX_LINE + 2);
	cr_assert_eq(em_http1_parse_request(&p, b, 100, NULL, &head), EM_PARTIAL);
	cr_assert_eq(em_http1_parse_request(&p, b, EM_HTTP1_MAX_LINE + 2, NULL, &head),
	             EM_HTTP1_E414);
	struct em_http1_limits lim = {.max_line = 64};
	fill_line(buf, 64);
	cr_assert_eq(req_n(buf, strlen(buf), &lim), EM_HTTP1_E414);
	cr_assert_eq(req_n(buf, 70, &lim), EM_HTTP1_E414);
	cr_assert_eq(req_n(buf, 65, &lim), EM_PARTIAL);
}

Test(http1, header_limits_431)
{
	static char buf[40000];
	size_t n = (size_t)sprintf(buf, "GET / HTTP/1.1\r\nHost: a\r\n");
	while (n < EM_HTTP1_MAX_HEAD + 10)
		n += (size_t)sprintf(buf + n, "X-Long: %0200d\r\n", 0);
	memcpy(buf + n, "\r\n", 3);
	cr_assert_eq(req(buf), EM_HTTP1_E431);
	/* Without the end: decided at max_line + 2 + max_head bytes at most. */
	cr_assert_eq(req_n(buf, EM_HTTP1_MAX_HEAD + 16, NULL), EM_HTTP1_E431);
	struct em_http1_parser p = {0};
	const char *b = guard_put(buf, n);
	cr_assert_eq(em_http1_parse_request(&p, b, 1000, NULL, &head), EM_PARTIAL);
	cr_assert_eq(em_http1_parse_request(&p, b, n, NULL, &head), EM_HTTP1_E431);

	/* 100 fields pass, 101 do not; also fed resumably. */
	for (int count = 100; count <= 101; count++) {
		n = (size_t)sprintf(buf, "GET / HTTP/1.1\r\nHost: a\r\n");
		for (int i = 1; i < count; i++)
			n += (size_t)sprintf(buf + n, "X%d: v\r\n", i);
		n += (size_t)sprintf(buf + n, "\r\n");
		int want = count == 100 ? (int)n : EM_HTTP1_E431;
		cr_assert_eq(req(buf), want, "%d fields", count);
		memset(&p, 0, sizeof(p));
		b = guard_put(buf, n);
		int rc = EM_PARTIAL;
		for (size_t k = 1; k <= n && rc == EM_PARTIAL; k += 7)
			rc = em_http1_parse_request(&p, b, k, NULL, &head);
		if (rc == EM_PARTIAL)
			rc = em_http1_parse_request(&p, b, n, NULL, &head);
		cr_assert_eq(rc, want, "%d fields resumable: %d", count, rc);
	}
	struct em_http1_limits lim = {.max_headers = 2};
	cr_assert_eq(req_n("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n", 40, &lim),
	             EM_HTTP1_E431);
}

Test(http1, keep_alive)
{
	static const struct {
		const char *msg;
		bool ka;
	} c[] = {
	        {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true},
	        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", false},
	        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, CLOSE\r\n\r\n", false},
	        {"GET / HTTP/1.0\r\n\r\n", false},
	        {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true},
	        {"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", false},
	};
	for (size_t i = 0; i < EM_ARRAY_SIZE(c); i++) {
		cr_assert_gt(req(c[i].msg), 0, "case %zu", i);
		cr_assert_eq(!!(head.flags & EM_HTTP1_F_KEEPALIVE), c[i].ka, "case %zu", i);
	}
	cr_assert_gt(resp("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0), 0);
	cr_assert(head.flags & EM_HTTP1_F_KEEPALIVE);
	cr_assert_gt(resp("HTTP/1.1 200 OK\r\n\r\n", 0), 0);
	cr_assert_eq(head.framing, EM_HTTP1_BODY_CLOSE);
	cr_assert(!(head.flags & EM_HTTP1_F_KEEPALIVE), "read-until-close is never keep-alive");
	cr_assert_gt(resp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", 0), 0);
	cr_assert(!(head.flags & EM_HTTP1_F_KEEPALIVE));
}

Test(http1, upgrade_and_connect)
{
	cr_assert_gt(req(valid_requests[7]), 0);
	cr_assert(head.flags & EM_HTTP1_F_UPGRADE);
	cr_assert(em_slice_eq(head.upgrade, "websocket"));
	cr_assert(em_http1_list_has(head.connection, "upgrade"));
	unsigned rf = head.flags;
	cr_assert_gt(resp("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
	                  "Connection: Upgrade\r\n\r\n",
	                  rf),
	             0);
	cr_assert_eq(head.framing, EM_HTTP1_BODY_TUNNEL);
	cr_assert_eq(resp("HTTP/1.1 101 Switching Protocols\r\n\r\n", 0), EM_HTTP1_E400);

	/* Upgrade without the Connection token is not an upgrade request. */
	cr_assert_gt(req("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n"), 0);
	cr_assert(!(head.flags & EM_HTTP1_F_UPGRADE));

	cr_assert_gt(req(valid_requests[6]), 0);
	cr_assert(head.flags & EM_HTTP1_F_CONNECT);
	cr_assert(em_slice_eq(head.target, "db:5432"));
	rf = head.flags;
	cr_assert_gt(resp("HTTP/1.1 200 Connection established\r\n\r\n", rf), 0);
	cr_assert_eq(head.framing, EM_HTTP1_BODY_TUNNEL);
	cr_assert_gt(resp("HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\n", rf), 0);
	cr_assert_eq(head.framing, EM_HTTP1_BODY_LENGTH);
}

Test(http1, response_framing)
{
	static const struct {
		const char *msg;
		unsigned rf;
		int framing;
	} c[] = {
	        {"HTTP/1.1 100 Continue\r\n\r\n", 0, EM_HTTP1_BODY_NONE},
	        {"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", 0, EM_HTTP1_BODY_NONE},
	        {"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", 0,
	         EM_HTTP1_BODY_NONE},
	        {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", EM_HTTP1_F_HEAD,
	         EM_HTTP1_BODY_NONE},
	        {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 0, EM_HTTP1_BODY_LENGTH},
	        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0, EM_HTTP1_BODY_CHUNKED},
	        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 0,
	         EM_HTTP1_BODY_CHUNKED},
	        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 0, EM_HTTP1_BODY_CLOSE},
	        {"HTTP/1.1 200 OK\r\n\r\n", 0, EM_HTTP1_BODY_CLOSE},
	};
	for (size_t i = 0; i < EM_ARRAY_SIZE(c); i++) {
		cr_assert_eq(resp(c[i].msg, c[i].rf), (int)strlen(c[i].msg), "case %zu: %s", i,
		             head.error ? head.error : "");
		cr_assert_eq(head.framing, c[i].framing, "case %zu", i);
	}
	cr_assert_eq(head.status, 200);
	cr_assert(em_slice_eq(head.reason, "OK"));

	static const char *bad[] = {
	        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
	        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
	        "HTTP/1.1 20 OK\r\n\r\n",
	        "HTTP/1.1 2000 OK\r\n\r\n",
	        "HTTP/1.1 099 OK\r\n\r\n",
	        "HTTP/1.1 200 O\x01K\r\n\r\n",
	        "HTTP/1.1 200 OK\nServer: x\r\n\r\n",
	        "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
	        "ICY 200 OK\r\n\r\n",
	};
	for (size_t i = 0; i < EM_ARRAY_SIZE(bad); i++)
		cr_assert_lt(resp(bad[i], 0), 0, "bad response %zu", i);
}

/* Runs the decoder over <s> cut at <split>; returns the body length it
 * found and appends the payload to <out>. */
static size_t decode_split(const char *s, size_t n, size_t split, char *out, size_t *outn, int *err)
{
	struct em_http1_body b;
	struct em_slice d;
	size_t used = 0;
	size_t cuts[2] = {split, n};
	*outn = 0;
	*err = 0;
	em_http1_body_init_framing(&b, EM_HTTP1_BODY_CHUNKED, 0);
	for (int part = 0; part < 2 && !em_http1_body_done(&b); part++) {
		size_t end = cuts[part];
		const char *g = guard_put(s + used, end - used);
		size_t off = 0;
		while (off < end - used && !em_http1_body_done(&b)) {
			ssize_t r = em_http1_body_step(&b, g + off, end - used - off, &d);
			if (r < 0) {
				*err = (int)r;
				return used + off;
			}
			cr_assert(r > 0);
			memcpy(out + *outn, d.base ? d.base : "", d.len);
			*outn += d.len;
			off += (size_t)r;
		}
		used += off;
	}
	return used;
}

Test(http1, chunked_split_at_every_byte)
{
	static const char body[] = "5;name=\"v a\"\r\nhello\r\n"
	                           "1A\r\nabcdefghijklmnopqrstuvwxyz\r\n"
	                           "00a ; x\r\n0123456789\r\n"
	                           "0\r\nX-Trailer: t\r\nX-Other:\r\n\r\n";
	static const char next[] = "GET /next HTTP/1.1\r\nHost: a\r\n\r\n";
	char msg[512], out[512];
	size_t blen = sizeof(body) - 1, n = (size_t)sprintf(msg, "%s%s", body, next), outn;
	int err;
	for (size_t split = 0; split <= n; split++) {
		size_t used = decode_split(msg, n, split, out, &outn, &err);
		cr_assert_eq(err, 0, "split %zu", split);
		cr_assert_eq(used, blen, "split %zu: body ends at %zu", split, used);
		cr_assert_eq(outn, 5 + 26 + 10);
		cr_assert(memcmp(out, "helloabcdefghijklmnopqrstuvwxyz0123456789", outn) == 0);
	}
	/* feed() reports the same boundary in one call. */
	struct em_http1_body b;
	em_http1_body_init_framing(&b, EM_HTTP1_BODY_CHUNKED, 0);
	cr_assert_eq(em_http1_body_feed(&b, guard_put(msg, n), n), (ssize_t)blen);
	cr_assert(em_http1_body_done(&b));
}

Test(http1, bad_chunked_bodies)
{
	static const char *bad[] = {
	        "x\r\n",
	        "\r\n",
	        "5 x\r\nhello\r\n0\r\n\r\n",
	        "5\nhello\r\n0\r\n\r\n",
	        "5\r\nhelloX\r\n0\r\n\r\n",
	        "5\r\nhello\n0\r\n\r\n",
	        "5;a\x01\r\nhello\r\n0\r\n\r\n",
	        "-5\r\nhello\r\n",
	        "0x5\r\nhello\r\n",
	        "10000000000000000\r\n",
	        "0\r\n X: y\r\n\r\n",
	        "0\r\nX : y\r\n\r\n",
	        "0\r\nX: \0\r\n\r\n",
	        "0\r\n\n",
	        "0\r\n\r\r",
	};
	char out[64];
	size_t outn;
	int err;
	for (size_t i = 0; i < EM_ARRAY_SIZE(bad); i++) {
		size_t n = strlen(bad[i]);
		if (i == 12)
			n = 11;
		decode_split(bad[i], n, n, out, &outn, &err);
		cr_assert_eq(err, EM_HTTP1_E400, "case %zu: %d", i, err);
	}
	/* An endless extension is cut off rather than scanned for ever. */
	static char ext[EM_HTTP1_MAX_CHUNK_LINE + 16];
	memset(ext, 'a', sizeof(ext));
	memcpy(ext, "5;", 2);
	decode_split(ext, sizeof(ext), sizeof(ext), out, &outn, &err);
	cr_assert_eq(err, EM_HTTP1_E400);
}

Test(http1, content_length_body)
{
	struct em_http1_body b;
	const char *s = "0123456789GET";
	em_http1_body_init_framing(&b, EM_HTTP1_BODY_LENGTH, 10);
	cr_assert_eq(em_http1_body_feed(&b, guard_put(s, 4), 4), 4);
	cr_assert(!em_http1_body_done(&b));
	cr_assert_eq(em_http1_body_feed(&b, guard_put(s + 4, 9), 9), 6);
	cr_assert(em_http1_body_done(&b));
	cr_assert_eq(em_http1_body_feed(&b, s, 3), 0);

	em_http1_body_init_framing(&b, EM_HTTP1_BODY_CLOSE, 0);
	cr_assert_eq(em_http1_body_feed(&b, s, 13), 13);
	cr_assert(!em_http1_body_done(&b));
	struct em_http1_body zero = {0};
	cr_assert(em_http1_body_done(&zero));
}

Test(http1, pipelined_requests)
{
	static const char stream[] =
	        "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
	        "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
	        "POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
	        "3\r\nxyz\r\n0\r\n\r\n"
	        "\r\nHEAD /4 HTTP/1.1\r\nHost: a\r\n\r\n";
	static const char *targets[] = {"/1", "/2", "/3", "/4"};
	size_t n = sizeof(stream) - 1, off = 0;
	const char *b = guard_put(stream, n);
	struct em_http1_parser p = {0};
	struct em_http1_body body;
	for (size_t i = 0; i < EM_ARRAY_SIZE(targets); i++) {
		int rc = em_http1_parse_request(&p, b + off, n - off, NULL, &head);
		cr_assert_gt(rc, 0, "request %zu: %d", i, rc);
		cr_assert(em_slice_eq(head.target, targets[i]), "request %zu", i);
		off += (size_t)rc;
		em_http1_body_init(&body, &head);
		ssize_t used = em_http1_body_feed(&body, b + off, n - off);
		cr_assert_geq(used, 0);
		cr_assert(em_http1_body_done(&body));
		off += (size_t)used;
	}
	cr_assert_eq(off, n);
	cr_assert(head.flags & EM_HTTP1_F_HEAD);
}

Test(http1, list_has)
{
	cr_assert(em_http1_list_has(EM_SLICE_LIT("keep-alive, Upgrade"), "upgrade"));
	cr_assert(em_http1_list_has(EM_SLICE_LIT(" close "), "close"));
	cr_assert(!em_http1_list_has(EM_SLICE_LIT("closed"), "close"));
	cr_assert(!em_http1_list_has(EM_SLICE_LIT(""), "close"));
	cr_assert(!em_http1_list_has((struct em_slice){NULL, 0}, "close"));
}

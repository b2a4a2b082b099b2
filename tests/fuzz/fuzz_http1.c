/* libFuzzer harness: HTTP/1.x request and response heads and the chunked
 * decoder. The first byte picks the mode; the checks are the invariants the
 * engine relies on (slices inside the input, resumable == one-shot, body
 * boundaries independent of how the bytes were split). */
#include <stdlib.h>

#include "proto/http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct em_http1_head h1, h2;

static void check_slice(struct em_slice s, const char *b, size_t n)
{
	if (s.len && (s.base < b || s.base + s.len > b + n))
		abort();
}

static void head(const char *b, size_t n, bool req, unsigned rf)
{
	struct em_http1_parser p = {0};
	int one = req ? em_http1_parse_request(NULL, b, n, NULL, &h1)
	              : em_http1_parse_response(NULL, b, n, rf, NULL, &h1);
	int half = req ? em_http1_parse_request(&p, b, n / 2, NULL, &h2)
	               : em_http1_parse_response(&p, b, n / 2, rf, NULL, &h2);
	int res = half;
	if (half == EM_PARTIAL)
		res = req ? em_http1_parse_request(&p, b, n, NULL, &h2)
		          : em_http1_parse_response(&p, b, n, rf, NULL, &h2);
	if (one >= 0) {
		if ((size_t)one > n || res != one)
			abort();
		for (size_t i = 0; i < h1.num_headers; i++) {
			check_slice(h1.headers[i].name, b, (size_t)one);
			check_slice(h1.headers[i].value, b, (size_t)one);
		}
		check_slice(h1.method, b, (size_t)one);
		check_slice(h1.target, b, (size_t)one);
		check_slice(h1.host, b, (size_t)one);
		struct em_http1_body body;
		em_http1_body_init(&body, &h1);
		(void)em_http1_body_feed(&body, b + one, n - (size_t)one);
	} else if (one != EM_PARTIAL && !h1.error) {
		abort();
	}
	if (res != EM_PARTIAL && res != one)
		abort();
	if (n >= EM_HTTP1_MAX_LINE + 2 + EM_HTTP1_MAX_HEAD && one == EM_PARTIAL)
		abort();
}

static void chunked(const char *b, size_t n, size_t split)
{
	struct em_http1_body a, c;
	struct em_slice d;
	em_http1_body_init_framing(&a, EM_HTTP1_BODY_CHUNKED, 0);
	em_http1_body_init_framing(&c, EM_HTTP1_BODY_CHUNKED, 0);
	ssize_t whole = em_http1_body_feed(&a, b, n);
	if (whole > (ssize_t)n)
		abort();
	split = split % (n + 1);
	ssize_t x = em_http1_body_feed(&c, b, split);
	ssize_t y = 0;
	if (x >= 0 && (size_t)x == split && !em_http1_body_done(&c))
		y = em_http1_body_feed(&c, b + split, n - split);
	if (whole >= 0) {
		/* Same boundary whatever the split, and the same verdict. */
		if (x < 0 || y < 0 || x + y != whole ||
		    em_http1_body_done(&a) != em_http1_body_done(&c))
			abort();
	} else if (x >= 0 && y >= 0) {
		abort();
	}
	em_http1_body_init_framing(&a, EM_HTTP1_BODY_CHUNKED, 0);
	for (size_t off = 0; off < n && !em_http1_body_done(&a);) {
		ssize_t r = em_http1_body_step(&a, b + off, n - off, &d);
		if (r <= 0)
			break;
		check_slice(d, b + off, (size_t)r);
		off += (size_t)r;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	/* A copy of exactly <size> bytes, so ASan sees any over-read. */
	size_t n = size - 2;
	char *b = malloc(n ? n : 1);
	if (!b)
		return 0;
	memcpy(b, data + 2, n);
	switch (data[0] % 3) {
	case 0:
		head(b, n, true, 0);
		break;
	case 1:
		head(b, n, false,
		     data[1] & (EM_HTTP1_F_HEAD | EM_HTTP1_F_CONNECT | EM_HTTP1_F_UPGRADE));
		break;
	case 2:
		chunked(b, n, (size_t)data[1] * 3);
		break;
	}
	free(b);
	return 0;
}

/* TLS ClientHello parser: SNI and ALPN from real-looking hellos, every
 * truncation, every corrupted byte, all against a guard page. */
#include <criterion/criterion.h>

#include "proto/tls.h"
#include "tests/proto/guard.h"
#include "tests/proto/tls_hello.h"

static uint8_t rec[EM_TLS_MAX_HELLO];

static size_t std_hello(void)
{
	struct hello_opts o = {.sni = "api.example.com", .alpn = {"h2", "http/1.1", NULL}};
	return build_hello(rec, &o);
}

/* Offset of the server_name host name inside <rec>, found by content. */
static size_t find_bytes(size_t n, const char *s)
{
	size_t k = strlen(s);
	for (size_t i = 0; i + k <= n; i++)
		if (memcmp(rec + i, s, k) == 0)
			return i;
	cr_assert_fail("%s not in hello", s);
	return 0;
}

Test(tls, sni_and_alpn)
{
	struct em_tls_hello h;
	size_t n = std_hello();
	const char *b = guard_put(rec, n);
	cr_assert_eq(em_tls_parse_client_hello(b, n, &h), (int)n);
	cr_assert(em_slice_eq(h.sni, "api.example.com"));
	cr_assert_eq(h.sni.base, b + find_bytes(n, "api.example.com"),
	             "SNI must point into the input");
	cr_assert_eq(h.record_version, 0x0301);
	cr_assert_eq(h.hello_version, 0x0303);
	cr_assert(em_tls_alpn_has(h.alpn, "h2"));
	cr_assert(em_tls_alpn_has(h.alpn, "http/1.1"));
	cr_assert(!em_tls_alpn_has(h.alpn, "h3"));
	cr_assert(!em_tls_alpn_has(h.alpn, "h"));

	struct em_slice it = h.alpn, name;
	cr_assert(em_tls_alpn_next(&it, &name) && em_slice_eq(name, "h2"));
	cr_assert(em_tls_alpn_next(&it, &name) && em_slice_eq(name, "http/1.1"));
	cr_assert(!em_tls_alpn_next(&it, &name));
}

Test(tls, without_sni_or_extensions)
{
	struct em_tls_hello h;
	struct hello_opts o = {.alpn = {"h2", NULL}};
	size_t n = build_hello(rec, &o);
	cr_assert_eq(em_tls_parse_client_hello(guard_put(rec, n), n, &h), (int)n);
	cr_assert_eq(h.sni.len, 0);
	cr_assert_null(h.sni.base);
	cr_assert(em_tls_alpn_has(h.alpn, "h2"));

	struct hello_opts bare = {.no_extensions = 1};
	n = build_hello(rec, &bare);
	cr_assert_eq(em_tls_parse_client_hello(guard_put(rec, n), n, &h), (int)n);
	cr_assert_eq(h.sni.len, 0);
	cr_assert_eq(h.alpn.len, 0);
}

Test(tls, large_hello_with_padding)
{
	struct em_tls_hello h;
	struct hello_opts o = {.sni = "x.y", .alpn = {"h2", NULL}, .padding = 3000};
	size_t n = build_hello(rec, &o);
	cr_assert_gt(n, 3000);
	cr_assert_eq(em_tls_parse_client_hello(guard_put(rec, n), n, &h), (int)n);
	cr_assert(em_slice_eq(h.sni, "x.y"));
}

Test(tls, trailing_bytes_after_record_are_not_read)
{
	struct em_tls_hello h;
	size_t n = std_hello();
	memcpy(rec + n, "\x17\x03\x03garbage", 10);
	cr_assert_eq(em_tls_parse_client_hello(guard_put(rec, n + 10), n + 10, &h), (int)n);
	cr_assert(em_slice_eq(h.sni, "api.example.com"));
}

Test(tls, every_truncation_is_partial)
{
	struct em_tls_hello h;
	size_t n = std_hello();
	for (size_t k = 0; k < n; k++) {
		const char *b = guard_put(rec, k);
		cr_assert_eq(em_tls_parse_client_hello(b, k, &h), EM_PARTIAL, "prefix %zu", k);
		cr_assert_eq(h.sni.len, 0);
	}
}

Test(tls, not_tls)
{
	struct em_tls_hello h;
	cr_assert_eq(em_tls_parse_client_hello("GET / HTTP/1.1\r\n", 16, &h), EM_EBADMSG);
	cr_assert_eq(em_tls_parse_client_hello("\x16\x02", 2, &h), EM_EBADMSG);
	cr_assert_eq(em_tls_parse_client_hello("\x16\x03\x05", 3, &h), EM_EBADMSG);
	cr_assert_eq(em_tls_parse_client_hello("\x16\x03\x01\x00\x00", 5, &h), EM_EBADMSG);
	cr_assert_eq(em_tls_parse_client_hello("\x16\x03\x01\x40\x01", 5, &h), EM_EBADMSG);
	/* A ServerHello (type 2) is not what a client sends first. */
	cr_assert_eq(em_tls_parse_client_hello("\x16\x03\x01\x00\x10\x02", 6, &h), EM_EBADMSG);
	/* Alert record */
	cr_assert_eq(em_tls_parse_client_hello("\x15\x03\x03\x00\x02\x02\x28", 7, &h), EM_EBADMSG);
}

/* Each length field one too long or too short: a definite error, never a
 * read outside the field's container. */
Test(tls, corrupted_lengths)
{
	struct em_tls_hello h;
	size_t n = std_hello();
	size_t sni = find_bytes(n, "api.example.com");
	struct {
		size_t off;
		int delta;
		int want;
	} cases[] = {
	        {4, -1, EM_TLS_EFRAG},     /* record shorter than the handshake */
	        {8, +1, EM_TLS_EFRAG},     /* handshake longer than the record */
	        {8, -1, EM_EBADMSG},       /* hello body ends inside the extensions */
	        {43, +1, EM_EBADMSG},      /* session id length 33 */
	        {sni - 1, +1, EM_EBADMSG}, /* host name runs into the next extension */
	        {sni - 1, -1, EM_EBADMSG}, /* host name leaves a stray byte */
	        {sni - 4, +1, EM_EBADMSG}, /* server name list */
	        {sni - 6, +1, EM_EBADMSG}, /* extension length */
	        {sni - 6, -1, EM_EBADMSG}, /* extension length */
	};
	for (size_t i = 0; i < EM_ARRAY_SIZE(cases); i++) {
		std_hello();
		/* <off> is the low byte of the field */
		rec[cases[i].off] = (uint8_t)(rec[cases[i].off] + cases[i].delta);
		int rc = em_tls_parse_client_hello(guard_put(rec, n), n, &h);
		cr_assert_eq(rc, cases[i].want, "case %zu: rc %d", i, rc);
		cr_assert_eq(h.sni.len, 0, "no SNI on error");
	}
}

Test(tls, bad_host_names)
{
	struct em_tls_hello h;
	size_t n = std_hello();
	size_t sni = find_bytes(n, "api.example.com");
	const uint8_t bad[] = {0, ' ', '\n', 0x7f, 0xc3};
	for (size_t i = 0; i < sizeof(bad); i++) {
		std_hello();
		rec[sni + 3] = bad[i];
		cr_assert_eq(em_tls_parse_client_hello(guard_put(rec, n), n, &h), EM_EBADMSG);
	}
}

Test(tls, duplicate_sni_extension)
{
	struct em_tls_hello h;
	struct hello_opts o = {.sni = "a.b", .alpn = {"h2", NULL}};
	size_t n = build_hello(rec, &o);
	/* Rename ALPN (16) to server_name (0) with a valid-looking body? Its
	 * body is not a server name list: the duplicate is refused first. */
	size_t alpn = find_bytes(n, "h2") - 7;
	cr_assert_eq(rec[alpn], 0);
	cr_assert_eq(rec[alpn + 1], 16);
	rec[alpn + 1] = 0;
	cr_assert_eq(em_tls_parse_client_hello(guard_put(rec, n), n, &h), EM_EBADMSG);
}

/* Every byte set to a few hostile values: any result is acceptable except a
 * crash, a slice outside the input, or a partial answer on a whole record. */
Test(tls, every_byte_corrupted)
{
	static const uint8_t vals[] = {0x00, 0x01, 0x7f, 0x80, 0xff};
	struct em_tls_hello h;
	size_t n = std_hello();
	for (size_t i = 0; i < n; i++) {
		for (size_t v = 0; v < sizeof(vals); v++) {
			std_hello();
			rec[i] = vals[v];
			const char *b = guard_put(rec, n);
			int rc = em_tls_parse_client_hello(b, n, &h);
			cr_assert(rc == (int)n || rc == EM_EBADMSG || rc == EM_TLS_EFRAG ||
			                  (rc == EM_PARTIAL && (i == 3 || i == 4)),
			          "byte %zu = %#x: rc %d", i, vals[v], rc);
			if (h.sni.len) {
				cr_assert(h.sni.base >= b && h.sni.base + h.sni.len <= b + n);
				cr_assert_gt(rc, 0);
			}
		}
	}
}

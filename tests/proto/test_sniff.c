/* Sniffing: every protocol at every prefix length. A strict prefix may be
 * EM_PARTIAL or already the right answer, never another protocol. */
#include <criterion/criterion.h>
#include <stdio.h>

#include "proto/sniff.h"
#include "tests/proto/guard.h"
#include "tests/proto/tls_hello.h"

static uint8_t rec[EM_TLS_MAX_HELLO];

/* Feeds every prefix of <msg> against the guard page; the answer must be
 * EM_PARTIAL before byte <decide> and <want> from there on. With
 * EM_SNIFF_F_FINAL a prefix must never be EM_PARTIAL. */
static void every_prefix(const void *msg, size_t n, size_t decide, int want)
{
	struct em_sniff_result r;
	for (size_t k = 0; k <= n; k++) {
		const char *b = guard_put(msg, k);
		int rc = em_sniff(b, k, 0, &r);
		if (k < decide)
			cr_assert_eq(rc, EM_PARTIAL, "prefix %zu: %d, want partial", k, rc);
		else
			cr_assert_eq(rc, want, "prefix %zu: %d, want %d", k, rc, want);
		rc = em_sniff(b, k, EM_SNIFF_F_FINAL, &r);
		cr_assert_neq(rc, EM_PARTIAL, "final prefix %zu", k);
		if (k >= decide)
			cr_assert_eq(rc, want, "final prefix %zu", k);
		else
			cr_assert(rc == EM_SNIFF_TCP || rc == want, "final prefix %zu: %d", k, rc);
	}
}

Test(sniff, http1_methods)
{
	static const char *m[] = {"GET",     "HEAD",    "POST",  "PUT",  "DELETE",
	                          "CONNECT", "OPTIONS", "TRACE", "PATCH"};
	char msg[128];
	for (size_t i = 0; i < EM_ARRAY_SIZE(m); i++) {
		int n = snprintf(msg, sizeof(msg), "%s /x HTTP/1.1\r\nHost: a\r\n\r\n", m[i]);
		every_prefix(msg, (size_t)n, strlen(m[i]) + 1, EM_SNIFF_HTTP1);
	}
}

Test(sniff, http2_preface)
{
	static const char msg[] =
	        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
	struct em_sniff_result r;
	every_prefix(msg, sizeof(msg) - 1, 24, EM_SNIFF_HTTP2);
	/* PRI is a method token, but not one of HTTP/1's. */
	cr_assert_eq(em_sniff("PRI / HTTP/1.1\r\n", 16, 0, &r), EM_SNIFF_TCP);
	cr_assert_eq(em_sniff("PRI * HTTP/1.1\r\n", 16, 0, &r), EM_SNIFF_TCP);
}

Test(sniff, tls_with_sni)
{
	struct em_sniff_result r;
	struct hello_opts o = {.sni = "svc.ns.example", .alpn = {"h2", "http/1.1", NULL}};
	size_t n = build_hello(rec, &o);
	every_prefix(rec, n, n, EM_SNIFF_TLS);
	const char *b = guard_put(rec, n);
	cr_assert_eq(em_sniff(b, n, 0, &r), EM_SNIFF_TLS);
	cr_assert_eq(r.proto, EM_SNIFF_TLS);
	cr_assert(em_slice_eq(r.sni, "svc.ns.example"));
	cr_assert(em_tls_alpn_has(r.alpn, "h2"));
	cr_assert_eq(r.tls_rc, (int)n);

	/* FINAL on a cut hello: TLS once the record header proves it, no SNI. */
	cr_assert_eq(em_sniff(guard_put(rec, 6), 6, EM_SNIFF_F_FINAL, &r), EM_SNIFF_TLS);
	cr_assert_eq(r.sni.len, 0);
	cr_assert_eq(r.tls_rc, EM_PARTIAL);
	cr_assert_eq(em_sniff(guard_put(rec, 5), 5, EM_SNIFF_F_FINAL, &r), EM_SNIFF_TCP);
}

Test(sniff, tls_without_sni_and_malformed)
{
	struct em_sniff_result r;
	struct hello_opts o = {.alpn = {"h2", NULL}};
	size_t n = build_hello(rec, &o);
	every_prefix(rec, n, n, EM_SNIFF_TLS);
	cr_assert_eq(em_sniff(guard_put(rec, n), n, 0, &r), EM_SNIFF_TLS);
	cr_assert_eq(r.sni.len, 0);
	/* A ClientHello record whose body is garbage is still TLS to forward. */
	memset(rec + 9, 0xee, n - 9);
	cr_assert_eq(em_sniff(guard_put(rec, n), n, 0, &r), EM_SNIFF_TLS);
	cr_assert_eq(r.tls_rc, EM_EBADMSG);
	cr_assert_eq(r.sni.len, 0);
}

Test(sniff, tcp_decided_early)
{
	static const struct {
		const char *s;
		size_t n;
		size_t decide; /* first prefix length that is TCP */
	} cases[] = {
	        {"SSH-2.0-OpenSSH_9.2\r\n", 21, 1},
	        {"*1\r\n$4\r\nPING\r\n", 14, 1},
	        {"get / HTTP/1.1\r\n", 16, 1},
	        {"GET\t/ HTTP/1.1\r\n", 16, 4},
	        {"GETX", 4, 4},
	        {"PROPFIND / HTTP/1.1\r\n", 21, 3},
	        {"POSTX", 5, 5},
	        {"PRI * HTTP/1.1\r\n\r\n", 18, 12},
	        {"\x16\x02", 2, 2},
	        {"\x16\x03\x05", 3, 3},
	        {"\x16\x03\x01\x00\x00\x01", 6, 5},
	        {"\x16\x03\x01\x40\x01\x01", 6, 5},
	        {"\x16\x03\x01\x00\x30\x02", 6, 6},
	        {"\x00\x00\x00\x00", 4, 1},
	        {"\r\nGET / HTTP/1.1\r\n", 18, 1},
	};
	for (size_t i = 0; i < EM_ARRAY_SIZE(cases); i++)
		every_prefix(cases[i].s, cases[i].n, cases[i].decide, EM_SNIFF_TCP);
}

Test(sniff, empty_and_names)
{
	struct em_sniff_result r;
	cr_assert_eq(em_sniff(NULL, 0, 0, &r), EM_PARTIAL);
	cr_assert_eq(em_sniff(NULL, 0, EM_SNIFF_F_FINAL, &r), EM_SNIFF_TCP);
	cr_assert_str_eq(em_sniff_name(EM_SNIFF_HTTP1), "http1");
	cr_assert_str_eq(em_sniff_name(EM_SNIFF_HTTP2), "http2");
	cr_assert_str_eq(em_sniff_name(EM_SNIFF_TLS), "tls");
	cr_assert_str_eq(em_sniff_name(EM_SNIFF_TCP), "tcp");
}

/* libFuzzer harness: protocol sniffing and the TLS ClientHello parser. Checks
 * that slices stay inside the input and that a decision, once made on a
 * prefix, does not change when more bytes arrive. */
#include <stdlib.h>

#include "proto/sniff.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_slice(struct em_slice s, const uint8_t *b, size_t n)
{
	if (s.len && ((const uint8_t *)s.base < b || (const uint8_t *)s.base + s.len > b + n))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct em_sniff_result r, rp, rf;
	struct em_tls_hello h;
	uint8_t *b = malloc(size ? size : 1);
	if (!b)
		return 0;
	memcpy(b, data, size);

	int rc = em_sniff(b, size, 0, &r);
	int fin = em_sniff(b, size, EM_SNIFF_F_FINAL, &rf);
	if (fin == EM_PARTIAL || (rc != EM_PARTIAL && rc != fin))
		abort();
	check_slice(r.sni, b, size);
	check_slice(r.alpn, b, size);
	check_slice(rf.sni, b, size);
	if (size > 0) {
		int pre = em_sniff(b, size - 1, 0, &rp);
		if (pre != EM_PARTIAL && pre != rc)
			abort();
	}
	if (size >= EM_SNIFF_MAX && rc == EM_PARTIAL)
		abort();

	int t = em_tls_parse_client_hello(b, size, &h);
	if (t > 0) {
		if ((size_t)t > size)
			abort();
		check_slice(h.sni, b, (size_t)t);
		check_slice(h.alpn, b, (size_t)t);
		struct em_slice it = h.alpn, name;
		while (em_tls_alpn_next(&it, &name))
			check_slice(name, b, (size_t)t);
	} else if (h.sni.len || h.alpn.len) {
		abort();
	}
	free(b);
	return 0;
}

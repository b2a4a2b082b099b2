/* libFuzzer harness for the address and CIDR parsers (proto/addr.c): any
 * bytes as the string, through every entry point. What parses must format
 * and parse back to the same value, and a CIDR must contain its own address. */
#include <stdlib.h>
#include <string.h>

#include "proto/em.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void round_trip(const struct em_addr *a, bool with_port)
{
	char buf[EM_ADDR_STRLEN];
	struct em_addr b;

	em_addr_format(a, with_port, buf, sizeof(buf));
	if (em_addr_parse(buf, with_port, &b) || !em_addr_eq(a, &b))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct em_addr a;
	struct em_cidr c;
	char *s;

	if (size > 4096)
		return 0;
	s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = 0;

	if (em_addr_parse(s, true, &a) == 0) {
		if (!a.port)
			abort();
		round_trip(&a, true);
	}
	if (em_addr_parse(s, false, &a) == 0)
		round_trip(&a, a.port != 0);
	static const int families[] = {0, AF_INET, AF_INET6};
	for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
		int fam = families[i];
		/* The length given, not the terminator, bounds the read. */
		if (em_ip_parse((const char *)data, size, fam, &a) == 0) {
			if (a.port || (fam && a.family != fam))
				abort();
			round_trip(&a, false);
		}
	}
	if (em_cidr_parse(s, &c) == 0) {
		if (c.prefix > (c.addr.family == AF_INET ? 32 : 128) ||
		    !em_cidr_contains(&c, &c.addr))
			abort();
		round_trip(&c.addr, false);
	}
	free(s);
	return 0;
}

/* Addresses and CIDR prefixes (proto/addr.c): what parses, what does not,
 * and prefix containment checked bit by bit against a reference. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <sys/un.h>

#include "proto/em.h"
#include "tests/proto/guard.h"

/* <s> parsed with <need_port> must give <family>, the 4 or 16 bytes <bytes>
 * (rest zero) and <port>. */
static void parses_to(const char *s, bool need_port, int family, const uint8_t *bytes,
                      uint16_t port)
{
	struct em_addr a;
	memset(&a, 0xa5, sizeof(a));
	/* Against the guard page, terminator included: no read past it. */
	int rc = em_addr_parse(guard_put(s, strlen(s) + 1), need_port, &a);
	cr_assert_eq(rc, 0, "'%s' (need_port %d): %d", s, need_port, rc);
	cr_assert_eq(a.family, family, "'%s': family %d", s, a.family);
	cr_assert_eq(a.port, port, "'%s': port %u, want %u", s, a.port, port);
	size_t n = family == AF_INET ? 4 : 16;
	cr_assert_arr_eq(a.b, bytes, n, "'%s': address bytes", s);
	for (size_t i = n; i < 16; i++)
		cr_assert_eq(a.b[i], 0, "'%s': byte %zu of an IPv4 address not zero", s, i);
}

/* <s> must be refused and <out> left as it was. */
static void refused(const char *s, bool need_port)
{
	struct em_addr a, before;
	memset(&a, 0x5a, sizeof(a));
	before = a;
	int rc = em_addr_parse(guard_put(s, strlen(s) + 1), need_port, &a);
	cr_assert_eq(rc, -EINVAL, "'%s' (need_port %d) accepted (%d)", s, need_port, rc);
	cr_assert_arr_eq(&a, &before, sizeof(a), "'%s': output written on failure", s);
}

static struct em_addr addr_of(const char *s)
{
	struct em_addr a;
	cr_assert_eq(em_addr_parse(s, false, &a), 0, "'%s'", s);
	return a;
}

static struct em_cidr cidr_of(const char *s)
{
	struct em_cidr c;
	cr_assert_eq(em_cidr_parse(guard_put(s, strlen(s) + 1), &c), 0, "'%s'", s);
	return c;
}

Test(addr, ipv4_with_and_without_port)
{
	static const uint8_t a1234[] = {1, 2, 3, 4};
	static const uint8_t a0[] = {0, 0, 0, 0};
	static const uint8_t abcast[] = {255, 255, 255, 255};
	parses_to("1.2.3.4", false, AF_INET, a1234, 0);
	parses_to("1.2.3.4:80", false, AF_INET, a1234, 80);
	parses_to("1.2.3.4:80", true, AF_INET, a1234, 80);
	parses_to("0.0.0.0", false, AF_INET, a0, 0);
	parses_to("255.255.255.255:65535", true, AF_INET, abcast, 65535);
	parses_to("1.2.3.4:1", true, AF_INET, a1234, 1);
	parses_to("1.2.3.4:00080", true, AF_INET, a1234, 80); /* leading zeros: still 80 */
}

Test(addr, ipv6_and_brackets)
{
	uint8_t lo[16] = {0}, all[16], svc[16] = {0xfd, 0x00, 0x00, 0x10, 0x00, 0x96};
	lo[15] = 1;
	memset(all, 0xff, sizeof(all));
	svc[15] = 7;
	parses_to("::1", false, AF_INET6, lo, 0);
	parses_to("[::1]:80", false, AF_INET6, lo, 80);
	parses_to("[::1]:80", true, AF_INET6, lo, 80);
	parses_to("fd00:10:96::7", false, AF_INET6, svc, 0);
	parses_to("[fd00:10:96::7]:65535", true, AF_INET6, svc, 65535);
	/* The longest textual form there is (45 characters). */
	parses_to("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", false, AF_INET6, all, 0);
	parses_to("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:1", true, AF_INET6, all, 1);
	uint8_t zero[16] = {0};
	parses_to("::", false, AF_INET6, zero, 0); /* family set: not "no address" */
}

/* An IPv4-mapped address stays IPv6 when parsed from text; only a peer's
 * sockaddr (a dual-stack socket) is folded to IPv4. */
Test(addr, ipv4_mapped)
{
	uint8_t m[16] = {0};
	m[10] = m[11] = 0xff;
	m[12] = 10, m[13] = 0, m[14] = 0, m[15] = 1;
	parses_to("::ffff:10.0.0.1", false, AF_INET6, m, 0);
	parses_to("[::ffff:10.0.0.1]:443", true, AF_INET6, m, 443);

	struct sockaddr_in6 s6 = {.sin6_family = AF_INET6, .sin6_port = htons(5555)};
	memcpy(&s6.sin6_addr, m, 16);
	struct em_addr a;
	cr_assert_eq(em_addr_from_sockaddr((struct sockaddr *)&s6, &a), 0);
	struct em_addr want = addr_of("10.0.0.1:5555");
	cr_assert(em_addr_eq(&a, &want), "mapped peer not folded to 10.0.0.1:5555");

	/* A v4 prefix does not contain the mapped form; ::ffff:0:0/96 does. */
	struct em_cidr c4 = cidr_of("10.0.0.0/8"), c6 = cidr_of("::ffff:0:0/96");
	struct em_addr mapped = addr_of("::ffff:10.0.0.1");
	cr_assert_not(em_cidr_contains(&c4, &mapped));
	cr_assert(em_cidr_contains(&c6, &mapped));
}

Test(addr, port_required)
{
	refused("1.2.3.4", true);
	refused("::1", true);
	refused("fd00::1", true);
	refused("::ffff:1.2.3.4", true);
}

Test(addr, bad_input)
{
	static const char *bad[] = {
	        "", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.-1", "01.2.3.4", " 1.2.3.4", "1.2.3.4 ",
	        "1.2.3.4/32", "a.b.c.d", "localhost", "1.2.3.4:", "1.2.3.4:0", "1.2.3.4:65536",
	        "1.2.3.4:99999999999999999999", "1.2.3.4:-1", "1.2.3.4:+80", "1.2.3.4: 80",
	        "1.2.3.4:80 ", "1.2.3.4:8o", "1.2.3.4:80:90", ":80", "::1::2", "1:2:3:4:5:6:7:8:9",
	        "fe80::1%eth0", "gggg::1", "[::1]", "[::1]:", "[::1]:0", "[::1]:65536", "[::1]:x",
	        "[::1]80", "[::1]x:80", "[::1:80", "::1]:80", "[]:80", "[1.2.3.4]:80",
	        "[[::1]]:80", "[::1]:80]", "[ ::1]:80", "[fe80::1%eth0]:80",
	        "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.2555", /* one past the longest */
	};
	for (size_t i = 0; i < EM_ARRAY_SIZE(bad); i++) {
		refused(bad[i], false);
		refused(bad[i], true);
	}
	struct em_addr a;
	cr_assert_eq(em_addr_parse(NULL, false, &a), -EINVAL);
}

/* em_ip_parse reads exactly <n> bytes: no terminator, no port, and the
 * family filter holds. */
Test(addr, ip_parse_slice)
{
	struct em_addr a;
	const char *s = guard_put("10.1.2.34", 9);
	cr_assert_eq(em_ip_parse(s, 9, 0, &a), 0);
	cr_assert(em_addr_eq(&a, &(struct em_addr){.family = AF_INET, .b = {10, 1, 2, 34}}));
	cr_assert_eq(em_ip_parse(s, 8, AF_INET, &a), 0); /* "10.1.2.3" */
	cr_assert_eq(a.b[3], 3);

	s = guard_put("fd00::1", 7);
	cr_assert_eq(em_ip_parse(s, 7, AF_INET6, &a), 0);
	cr_assert_eq(a.family, AF_INET6);

	static const struct {
		const char *s;
		int family;
	} bad[] = {
	        {"fd00::1", AF_INET}, {"10.0.0.1", AF_INET6}, {"10.0.0.1:80", 0},
	        {"[::1]", 0},         {"", 0},                {"1.2.3.4\n", 0},
	        {"0123456789012345678901234567890123456789012345678", 0},
	};
	for (size_t i = 0; i < EM_ARRAY_SIZE(bad); i++) {
		size_t n = strlen(bad[i].s);
		memset(&a, 0x77, sizeof(a));
		cr_assert_eq(em_ip_parse(guard_put(bad[i].s, n), n, bad[i].family, &a), -EINVAL,
		             "'%s' family %d accepted", bad[i].s, bad[i].family);
		cr_assert_arr_eq(&a, &(struct em_addr){0}, sizeof(a), "'%s': out not zeroed",
		                 bad[i].s);
	}
	/* Zero bytes of a longer string. */
	cr_assert_eq(em_ip_parse(guard_put("1.2.3.4", 7), 0, 0, &a), -EINVAL);
}

Test(addr, format_round_trip)
{
	static const struct {
		const char *in, *ip, *ip_port;
	} cases[] = {
	        {"1.2.3.4:80", "1.2.3.4", "1.2.3.4:80"},
	        {"[::1]:443", "::1", "[::1]:443"},
	        {"[fd00:10:96::7]:65535", "fd00:10:96::7", "[fd00:10:96::7]:65535"},
	        {"[::ffff:10.0.0.1]:1", "::ffff:10.0.0.1", "[::ffff:10.0.0.1]:1"},
	};
	char buf[EM_ADDR_STRLEN];
	for (size_t i = 0; i < EM_ARRAY_SIZE(cases); i++) {
		struct em_addr a = addr_of(cases[i].in), b;
		cr_assert_str_eq(em_addr_format(&a, false, buf, sizeof(buf)), cases[i].ip);
		cr_assert_str_eq(em_addr_format(&a, true, buf, sizeof(buf)), cases[i].ip_port);
		cr_assert_eq(em_addr_parse(buf, true, &b), 0, "'%s'", buf);
		cr_assert(em_addr_eq(&a, &b), "'%s' does not parse back", buf);
	}
	struct em_addr none = {0};
	cr_assert_str_eq(em_addr_format(&none, false, buf, sizeof(buf)), "-");
	/* A short buffer is truncated, still terminated. */
	struct em_addr a = addr_of("[fd00:10:96::7]:65535");
	char small[8];
	memset(small, 'x', sizeof(small));
	cr_assert_str_eq(em_addr_format(&a, true, small, sizeof(small)), "[fd00:1");
}

Test(addr, sockaddr_round_trip)
{
	const char *in[] = {"1.2.3.4:80", "[fd00::9]:8080"};
	for (size_t i = 0; i < EM_ARRAY_SIZE(in); i++) {
		struct em_addr a = addr_of(in[i]), b;
		struct sockaddr_storage ss;
		socklen_t len = em_addr_to_sockaddr(&a, &ss);
		if (a.family == AF_INET) {
			cr_assert_eq(len, sizeof(struct sockaddr_in));
			cr_assert_eq(((struct sockaddr_in *)&ss)->sin_port, htons(80));
		} else {
			cr_assert_eq(len, sizeof(struct sockaddr_in6));
			cr_assert_eq(((struct sockaddr_in6 *)&ss)->sin6_port, htons(8080));
		}
		cr_assert_eq(em_addr_from_sockaddr((struct sockaddr *)&ss, &b), 0);
		cr_assert(em_addr_eq(&a, &b), "%s does not come back", in[i]);
	}
	struct sockaddr_un un = {.sun_family = AF_UNIX};
	struct em_addr b;
	memset(&b, 0x33, sizeof(b));
	cr_assert_eq(em_addr_from_sockaddr((struct sockaddr *)&un, &b), -EAFNOSUPPORT);
	cr_assert_arr_eq(&b, &(struct em_addr){0}, sizeof(b));
}

Test(cidr, parse)
{
	static const struct {
		const char *s, *addr;
		uint8_t prefix;
	} good[] = {
	        {"10.96.0.0/12", "10.96.0.0", 12},
	        {"0.0.0.0/0", "0.0.0.0", 0},
	        {"1.2.3.4/32", "1.2.3.4", 32},
	        {"10.96.0.1/12", "10.96.0.1", 12}, /* host bits kept, masked when matching */
	        {"10.0.0.0/08", "10.0.0.0", 8},
	        {"fd00:10:96::/112", "fd00:10:96::", 112},
	        {"fd00::/108", "fd00::", 108},
	        {"::/0", "::", 0},
	        {"::1/128", "::1", 128},
	        {"::ffff:10.0.0.0/104", "::ffff:10.0.0.0", 104},
	};
	for (size_t i = 0; i < EM_ARRAY_SIZE(good); i++) {
		struct em_cidr c = cidr_of(good[i].s);
		struct em_addr a = addr_of(good[i].addr);
		cr_assert(em_addr_eq(&c.addr, &a), "'%s': address", good[i].s);
		cr_assert_eq(c.prefix, good[i].prefix, "'%s': prefix %u", good[i].s, c.prefix);
	}
	static const char *bad[] = {
	        "",
	        "10.0.0.0",
	        "10.0.0.0/",
	        "/8",
	        "10.0.0.0/33",
	        "10.0.0.0/255",
	        "10.0.0.0/256",
	        "10.0.0.0/4294967304", /* 2^32 + 8 */
	        "10.0.0.0/99999999999999999999999",
	        "::/129",
	        "::/264",
	        "10.0.0.0/-1",
	        "10.0.0.0/+8",
	        "10.0.0.0/ 8",
	        "10.0.0.0/8 ",
	        "10.0.0.0/8/8",
	        "10.0.0.0/0x8",
	        "10.0.0/8",
	        "10.0.0.0:80/8",
	        "[fd00::]/8",
	        "fe80::%eth0/64",
	};
	for (size_t i = 0; i < EM_ARRAY_SIZE(bad); i++) {
		struct em_cidr c, before;
		memset(&c, 0x42, sizeof(c));
		before = c;
		int rc = em_cidr_parse(guard_put(bad[i], strlen(bad[i]) + 1), &c);
		cr_assert_eq(rc, -EINVAL, "'%s' accepted (%d), prefix %u", bad[i], rc, c.prefix);
		cr_assert_arr_eq(&c, &before, sizeof(c), "'%s': output written on failure", bad[i]);
	}
}

static bool contains(const char *cidr, const char *addr)
{
	struct em_cidr c = cidr_of(cidr);
	struct em_addr a = addr_of(addr);
	return em_cidr_contains(&c, &a);
}

Test(cidr, edges)
{
	/* /0 holds its whole family, nothing of the other. */
	cr_assert(contains("0.0.0.0/0", "0.0.0.0"));
	cr_assert(contains("0.0.0.0/0", "255.255.255.255:9"));
	cr_assert(contains("1.2.3.4/0", "200.1.1.1")); /* host bits of a /0 ignored */
	cr_assert_not(contains("0.0.0.0/0", "::"));
	cr_assert(contains("::/0", "ffff::1"));
	cr_assert_not(contains("::/0", "1.2.3.4"));
	/* /32 and /128: the one address, whatever the port. */
	cr_assert(contains("1.2.3.4/32", "1.2.3.4:80"));
	cr_assert_not(contains("1.2.3.4/32", "1.2.3.5"));
	cr_assert_not(contains("1.2.3.4/32", "1.2.3.3"));
	cr_assert_not(contains("1.2.3.4/32", "129.2.3.4"));
	cr_assert(contains("fd00::1/128", "[fd00::1]:80"));
	cr_assert_not(contains("fd00::1/128", "fd00::"));
	cr_assert_not(contains("fd00::1/128", "fd00::3"));
	cr_assert_not(contains("fd00::1/128", "fd00::1:0:0:1"));
	/* Prefixes that end inside a byte. */
	cr_assert(contains("10.96.0.0/12", "10.96.0.0"));
	cr_assert(contains("10.96.0.0/12", "10.111.255.255"));
	cr_assert_not(contains("10.96.0.0/12", "10.112.0.0"));
	cr_assert_not(contains("10.96.0.0/12", "10.95.255.255"));
	cr_assert(contains("10.96.0.1/12", "10.100.0.0")); /* host bits of the prefix ignored */
	cr_assert(contains("128.0.0.0/1", "255.255.255.255"));
	cr_assert_not(contains("128.0.0.0/1", "127.255.255.255"));
	cr_assert(contains("192.168.1.128/25", "192.168.1.255"));
	cr_assert_not(contains("192.168.1.128/25", "192.168.1.127"));
	cr_assert(contains("192.168.1.2/31", "192.168.1.3"));
	cr_assert_not(contains("192.168.1.2/31", "192.168.1.4"));
	cr_assert(contains("fd00:10:96::/108", "fd00:10:96::f:ffff"));
	cr_assert_not(contains("fd00:10:96::/108", "fd00:10:96::10:0"));
	cr_assert(contains("fd00::/7", "fc00::1"));
	cr_assert_not(contains("fd00::/7", "fe00::1"));
	cr_assert(contains("::/127", "::1"));
	cr_assert_not(contains("::/127", "::2"));
	cr_assert(contains("1:2:3:4:8000::/65", "1:2:3:4:ffff::"));
	cr_assert_not(contains("1:2:3:4:8000::/65", "1:2:3:4:7fff::"));
	/* An address without a family is in no prefix. */
	struct em_cidr c = cidr_of("0.0.0.0/0");
	struct em_addr none = {0};
	cr_assert_not(em_cidr_contains(&c, &none));
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* Bit <i> (0 = most significant) of the 16 bytes <b>. */
static int bit(const uint8_t *b, unsigned i)
{
	return (b[i / 8] >> (7 - i % 8)) & 1;
}

/* Every prefix length of both families, against addresses that differ from
 * the prefix's address in exactly one bit, and random ones: contained iff the
 * first <prefix> bits agree. */
Test(cidr, every_prefix_length)
{
	for (int fam = 0; fam < 2; fam++) {
		unsigned bits = fam ? 128 : 32;
		for (unsigned p = 0; p <= bits; p++) {
			char s[80], ip[INET6_ADDRSTRLEN];
			struct em_addr base = {.family = fam ? AF_INET6 : AF_INET};
			uint64_t r0 = next_rand(), r1 = next_rand();
			memcpy(base.b, &r0, 8);
			if (fam)
				memcpy(base.b + 8, &r1, 8);
			else
				memset(base.b + 4, 0, 12);
			inet_ntop(base.family, base.b, ip, sizeof(ip));
			snprintf(s, sizeof(s), "%s/%u", ip, p);
			struct em_cidr c = cidr_of(s);
			cr_assert_eq(c.prefix, p);
			cr_assert(em_cidr_contains(&c, &base), "%s does not contain its address", s);
			for (unsigned flip = 0; flip < bits; flip++) {
				struct em_addr a = base;
				a.b[flip / 8] ^= (uint8_t)(0x80 >> (flip % 8));
				cr_assert_eq(em_cidr_contains(&c, &a), flip >= p, "%s, bit %u flipped", s,
				             flip);
			}
			for (int k = 0; k < 64; k++) {
				struct em_addr a = {.family = base.family};
				uint64_t x = next_rand(), y = next_rand();
				memcpy(a.b, &x, 8);
				if (fam)
					memcpy(a.b + 8, &y, 8);
				else
					memset(a.b + 4, 0, 12);
				/* Copy a random number of leading bits from the prefix. */
				unsigned keep = (unsigned)(next_rand() % (bits + 1));
				for (unsigned i = 0; i < keep; i++)
					if (bit(a.b, i) != bit(base.b, i))
						a.b[i / 8] ^= (uint8_t)(0x80 >> (i % 8));
				bool want = true;
				for (unsigned i = 0; i < p; i++)
					if (bit(a.b, i) != bit(base.b, i))
						want = false;
				cr_assert_eq(em_cidr_contains(&c, &a), want, "%s, random address %d", s, k);
			}
		}
	}
}

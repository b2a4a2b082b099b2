/* Shared vocabulary of every module: byte slices, addresses, return codes.
 * libc only, no allocation. */
#ifndef EM_EM_H
#define EM_EM_H

#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

/* Parsers return bytes consumed (>= 0), EM_PARTIAL when more input is needed,
 * or another negative errno-style code (EM_EBADMSG for malformed input). */
#define EM_PARTIAL (-EAGAIN)
#define EM_EBADMSG (-EBADMSG)

#define EM_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define EM_MIN(a, b)     ((a) < (b) ? (a) : (b))
#define EM_MAX(a, b)     ((a) > (b) ? (a) : (b))
/* Release of this tree, as edges report it when they register. */
#define EM_VERSION "0.4.0-dev"

#define EM_UNUSED(x)     ((void)(x))
#define EM_LIKELY(x)     __builtin_expect(!!(x), 1)
#define EM_UNLIKELY(x)   __builtin_expect(!!(x), 0)

/* An invariant of the code, checked in every build: when it does not hold
 * the process reports where and aborts (a bug, never bad input). */
#define EM_ASSERT(x)                                                                               \
	do {                                                                                       \
		if (EM_UNLIKELY(!(x)))                                                             \
			em_assert_fail(#x, __FILE__, __LINE__);                                    \
	} while (0)
_Noreturn void em_assert_fail(const char *what, const char *file, int line);

/* A borrowed byte range; never owns <base>. */
struct em_slice {
	const char *base;
	size_t len;
};

#define EM_SLICE_LIT(s) ((struct em_slice){(s), sizeof(s) - 1})

static inline bool em_slice_eq(struct em_slice a, const char *lit)
{
	size_t n = strlen(lit);
	return a.len == n && memcmp(a.base, lit, n) == 0;
}

/* An IPv4 or IPv6 address with a port in host byte order. An IPv4 address
 * occupies the first 4 bytes of <b>; the rest are zero, so two em_addr can be
 * compared and hashed bytewise. All-zero is "no address". */
struct em_addr {
	uint8_t family; /* AF_INET, AF_INET6, or 0 */
	uint8_t pad_;
	uint16_t port;
	union {
		uint8_t b[16];
		struct in_addr v4;
		struct in6_addr v6;
	};
};

/* Parses "1.2.3.4", "::1", "1.2.3.4:80", "[::1]:80" into <out>. With
 * <need_port> a port is required. Returns 0 or -EINVAL. */
int em_addr_parse(const char *s, bool need_port, struct em_addr *out);

/* Parses a bare IP address of <n> bytes at <s> (no port, no zone) of
 * <family> (AF_INET, AF_INET6, or 0 for either) into <out>, port 0. Returns 0
 * or -EINVAL with <out> zeroed. */
int em_ip_parse(const char *s, size_t n, int family, struct em_addr *out);

/* Formats <a> as "ip" (with_port false) or "ip:port" / "[ip]:port" into <buf>
 * (at least EM_ADDR_STRLEN bytes). Returns <buf>. */
#define EM_ADDR_STRLEN 56
char *em_addr_format(const struct em_addr *a, bool with_port, char *buf, size_t len);

/* Converts between em_addr and sockaddr. em_addr_to_sockaddr returns the
 * sockaddr length used. em_addr_from_sockaddr returns 0 or -EAFNOSUPPORT. */
socklen_t em_addr_to_sockaddr(const struct em_addr *a, struct sockaddr_storage *ss);
int em_addr_from_sockaddr(const struct sockaddr *sa, struct em_addr *out);

static inline bool em_addr_eq(const struct em_addr *a, const struct em_addr *b)
{
	return a->family == b->family && a->port == b->port && memcmp(a->b, b->b, 16) == 0;
}

/* A CIDR prefix, e.g. 10.96.0.0/12. */
struct em_cidr {
	struct em_addr addr;
	uint8_t prefix;
};

/* Parses "10.96.0.0/12" or "fd00::/108". Returns 0 or -EINVAL. */
int em_cidr_parse(const char *s, struct em_cidr *out);
bool em_cidr_contains(const struct em_cidr *c, const struct em_addr *a);

/* 64-bit FNV-1a, for table keys. */
static inline uint64_t em_hash64(const void *data, size_t len, uint64_t h)
{
	const uint8_t *p = data;
	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}
#define EM_HASH_SEED 0xcbf29ce484222325ULL

#endif

#include "proto/em.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>

static int parse_port(const char *s, uint16_t *out)
{
	char *end;
	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || v == 0 || v > 65535)
		return -EINVAL;
	*out = (uint16_t)v;
	return 0;
}

int em_ip_parse(const char *s, size_t n, int family, struct em_addr *out)
{
	char buf[INET6_ADDRSTRLEN + 1];
	memset(out, 0, sizeof(*out));
	if (n == 0 || n >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, s, n);
	buf[n] = 0;
	if ((family == 0 || family == AF_INET) && inet_pton(AF_INET, buf, &out->v4) == 1) {
		out->family = AF_INET;
		return 0;
	}
	if ((family == 0 || family == AF_INET6) && inet_pton(AF_INET6, buf, &out->v6) == 1) {
		out->family = AF_INET6;
		return 0;
	}
	memset(out, 0, sizeof(*out));
	return -EINVAL;
}

static int parse_ip(const char *s, size_t n, struct em_addr *out)
{
	return em_ip_parse(s, n, 0, out);
}

int em_addr_parse(const char *s, bool need_port, struct em_addr *out)
{
	struct em_addr a = {0};
	const char *colon;
	int rc;

	if (!s)
		return -EINVAL;
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		rc = parse_ip(s + 1, (size_t)(close - s - 1), &a);
		if (rc || a.family != AF_INET6)
			return -EINVAL;
		if (parse_port(close + 2, &a.port))
			return -EINVAL;
		*out = a;
		return 0;
	}
	colon = strchr(s, ':');
	if (colon && !strchr(colon + 1, ':')) {
		/* exactly one colon: IPv4 with port */
		if (parse_ip(s, (size_t)(colon - s), &a) || a.family != AF_INET)
			return -EINVAL;
		if (parse_port(colon + 1, &a.port))
			return -EINVAL;
		*out = a;
		return 0;
	}
	if (need_port)
		return -EINVAL;
	if (parse_ip(s, strlen(s), &a))
		return -EINVAL;
	*out = a;
	return 0;
}

char *em_addr_format(const struct em_addr *a, bool with_port, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];
	if (a->family == AF_INET)
		inet_ntop(AF_INET, &a->v4, ip, sizeof(ip));
	else if (a->family == AF_INET6)
		inet_ntop(AF_INET6, &a->v6, ip, sizeof(ip));
	else
		snprintf(ip, sizeof(ip), "-");
	if (!with_port)
		snprintf(buf, len, "%s", ip);
	else if (a->family == AF_INET6)
		snprintf(buf, len, "[%s]:%u", ip, a->port);
	else
		snprintf(buf, len, "%s:%u", ip, a->port);
	return buf;
}

socklen_t em_addr_to_sockaddr(const struct em_addr *a, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (a->family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(a->port);
		s6->sin6_addr = a->v6;
		return sizeof(*s6);
	}
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	s4->sin_family = AF_INET;
	s4->sin_port = htons(a->port);
	s4->sin_addr = a->v4;
	return sizeof(*s4);
}

int em_addr_from_sockaddr(const struct sockaddr *sa, struct em_addr *out)
{
	memset(out, 0, sizeof(*out));
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
		out->family = AF_INET;
		out->port = ntohs(s4->sin_port);
		out->v4 = s4->sin_addr;
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		/* An IPv4-mapped address is the IPv4 peer of a dual-stack socket. */
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
			out->family = AF_INET;
			memcpy(out->b, &s6->sin6_addr.s6_addr[12], 4);
		} else {
			out->family = AF_INET6;
			out->v6 = s6->sin6_addr;
		}
		out->port = ntohs(s6->sin6_port);
		return 0;
	}
	return -EAFNOSUPPORT;
}

int em_cidr_parse(const char *s, struct em_cidr *out)
{
	const char *slash = strchr(s, '/');
	struct em_cidr c = {0};
	char *end;
	unsigned long p;

	if (!slash)
		return -EINVAL;
	if (parse_ip(s, (size_t)(slash - s), &c.addr))
		return -EINVAL;
	if (slash[1] < '0' || slash[1] > '9')
		return -EINVAL;
	p = strtoul(slash + 1, &end, 10);
	if (*end || p > (c.addr.family == AF_INET ? 32u : 128u))
		return -EINVAL;
	c.prefix = (uint8_t)p;
	*out = c;
	return 0;
}

bool em_cidr_contains(const struct em_cidr *c, const struct em_addr *a)
{
	unsigned bits = c->prefix, i;
	if (c->addr.family != a->family)
		return false;
	for (i = 0; bits >= 8; i++, bits -= 8)
		if (c->addr.b[i] != a->b[i])
			return false;
	if (bits) {
		uint8_t mask = (uint8_t)(0xff << (8 - bits));
		if ((c->addr.b[i] & mask) != (a->b[i] & mask))
			return false;
	}
	return true;
}

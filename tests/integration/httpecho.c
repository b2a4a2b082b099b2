/* httpecho: test peer for the integration scripts, built by lib.sh with cc
 * into the test's temp dir (it is not part of the CMake build).
 *
 *   httpecho serve -l IP:PORT [-l IP:PORT ...]
 *       HTTP/1.1 keep-alive server. Every request gets 200 whose body is the
 *       request body (Content-Length or chunked; a chunked request gets a
 *       chunked response) and the header "X-Backend: <n>", <n> being the index
 *       of the -l address. A request with "Upgrade:" gets 101 and from then on
 *       every byte is echoed raw. Prints "ready" once every address listens.
 *
 *   httpecho upgrade -a IP:PORT [-n BYTES]
 *       Client: sends an Upgrade request, expects 101, then sends BYTES
 *       (default 1 MiB) of a pattern and checks that the same bytes come back.
 *       Exit 0 when they do.
 *
 *   httpecho hold -a IP:PORT [-T SECS]
 *       Client: connects, round-trips "ping\n" (raw echo), prints "connected",
 *       then waits for the far side to close. Prints "eof" or "reset" and
 *       exits 0 when it does; prints "hang" and exits 2 after SECS (default 10).
 *
 * Addresses: "1.2.3.4:80" or "[fd00::1]:80". Errors go to stderr, exit 1. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HE_MAX_LISTEN 8
#define HE_HEAD_MAX   65536
#define HE_BODY_MAX   (64u << 20)
#define HE_IO_TIMEOUT 30000

struct he_conn {
	int fd;
	int index;
	char head[HE_HEAD_MAX];
	size_t have; /* bytes in head[] not consumed yet */
};

static void die(const char *what)
{
	fprintf(stderr, "httpecho: %s: %s\n", what, errno ? strerror(errno) : "failed");
	exit(1);
}

static int parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[128];
	const char *colon;
	size_t hl;

	memset(ss, 0, sizeof(*ss));
	if (s[0] == '[') {
		const char *end = strchr(s, ']');
		if (!end || end[1] != ':')
			return -1;
		hl = (size_t)(end - s - 1);
		if (hl >= sizeof(host))
			return -1;
		memcpy(host, s + 1, hl);
		host[hl] = 0;
		colon = end + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -1;
		hl = (size_t)(colon - s);
		if (hl >= sizeof(host))
			return -1;
		memcpy(host, s, hl);
		host[hl] = 0;
	}
	int port = atoi(colon + 1);
	if (port <= 0 || port > 65535)
		return -1;
	struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)port);
		*len = sizeof(*a4);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*a6);
		return 0;
	}
	return -1;
}

/* Blocking I/O with a poll timeout, so a stuck peer fails the test instead of
 * hanging it. Returns bytes, 0 on EOF, -1 on error or timeout. */
static ssize_t rd(int fd, void *buf, size_t n)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	int r = poll(&p, 1, HE_IO_TIMEOUT);
	if (r <= 0)
		return -1;
	return recv(fd, buf, n, 0);
}

static int wr_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;
	while (n) {
		struct pollfd pf = {.fd = fd, .events = POLLOUT};
		if (poll(&pf, 1, HE_IO_TIMEOUT) <= 0)
			return -1;
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Makes sure <need> bytes are buffered in c->head; 0, or -1 on EOF/error. */
static int fill(struct he_conn *c, size_t need)
{
	while (c->have < need) {
		if (c->have == sizeof(c->head))
			return -1;
		ssize_t r = rd(c->fd, c->head + c->have, sizeof(c->head) - c->have);
		if (r <= 0)
			return -1;
		c->have += (size_t)r;
	}
	return 0;
}

static void consume(struct he_conn *c, size_t n)
{
	memmove(c->head, c->head + n, c->have - n);
	c->have -= n;
}

/* Reads one CRLF-terminated line into <line> (without CRLF) and consumes it. */
static int read_line(struct he_conn *c, char *line, size_t cap)
{
	for (;;) {
		char *nl = memmem(c->head, c->have, "\r\n", 2);
		if (nl) {
			size_t n = (size_t)(nl - c->head);
			if (n >= cap)
				return -1;
			memcpy(line, c->head, n);
			line[n] = 0;
			consume(c, n + 2);
			return 0;
		}
		if (fill(c, c->have + 1))
			return -1;
	}
}

/* Appends up to <n> body bytes to <body>, taking what is buffered first. */
static int read_body(struct he_conn *c, char *body, size_t n)
{
	size_t take = c->have < n ? c->have : n;
	memcpy(body, c->head, take);
	consume(c, take);
	while (take < n) {
		ssize_t r = rd(c->fd, body + take, n - take);
		if (r <= 0)
			return -1;
		take += (size_t)r;
	}
	return 0;
}

static const char *header(const char *headers, const char *name, char *val, size_t cap)
{
	size_t nl = strlen(name);
	for (const char *p = headers; p && *p;) {
		const char *eol = strstr(p, "\r\n");
		if (!eol)
			break;
		if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			const char *v = p + nl + 1;
			while (*v == ' ' || *v == '\t')
				v++;
			size_t vl = (size_t)(eol - v);
			if (vl >= cap)
				vl = cap - 1;
			memcpy(val, v, vl);
			val[vl] = 0;
			return val;
		}
		p = eol + 2;
	}
	return NULL;
}

static void raw_echo(struct he_conn *c)
{
	char buf[65536];
	if (c->have && wr_all(c->fd, c->head, c->have))
		return;
	c->have = 0;
	for (;;) {
		ssize_t r = rd(c->fd, buf, sizeof(buf));
		if (r <= 0 || wr_all(c->fd, buf, (size_t)r))
			return;
	}
}

/* One request; returns 1 to keep the connection, 0 to close it. */
static int serve_one(struct he_conn *c)
{
	char *end, hdrs[HE_HEAD_MAX + 1], val[256], out[512];
	char *body = NULL;
	size_t blen = 0, hlen;
	bool chunked = false, keep = true;
	int ret = 0;

	while (!(end = memmem(c->head, c->have, "\r\n\r\n", 4)))
		if (fill(c, c->have + 1))
			return 0;
	hlen = (size_t)(end - c->head) + 4;
	memcpy(hdrs, c->head, hlen);
	hdrs[hlen] = 0;
	consume(c, hlen);
	if (strstr(hdrs, "HTTP/1.0\r\n"))
		keep = false;
	if (header(hdrs, "Connection", val, sizeof(val)) && strcasestr(val, "close"))
		keep = false;
	if (header(hdrs, "Upgrade", val, sizeof(val))) {
		int n = snprintf(out, sizeof(out),
		                 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\n"
		                 "Connection: Upgrade\r\nX-Backend: %d\r\n\r\n",
		                 val, c->index);
		if (wr_all(c->fd, out, (size_t)n) == 0)
			raw_echo(c);
		return 0;
	}
	if (header(hdrs, "Transfer-Encoding", val, sizeof(val))) {
		if (strcasecmp(val, "chunked"))
			return 0;
		chunked = true;
	}
	if (!chunked && header(hdrs, "Content-Length", val, sizeof(val))) {
		unsigned long long cl = strtoull(val, NULL, 10);
		if (cl > HE_BODY_MAX)
			return 0;
		blen = (size_t)cl;
	}
	/* The whole body is read before answering so that a client that sends
	 * first and reads later never deadlocks against us. */
	body = malloc(chunked ? HE_BODY_MAX : blen + 1);
	if (!body)
		return 0;
	if (chunked) {
		char line[256];
		for (;;) {
			if (read_line(c, line, sizeof(line)))
				goto out;
			size_t n = strtoul(line, NULL, 16);
			if (n == 0)
				break;
			if (n > HE_BODY_MAX - blen || read_body(c, body + blen, n) ||
			    read_line(c, line, sizeof(line)) || line[0])
				goto out;
			blen += n;
		}
		do { /* trailers up to the empty line */
			if (read_line(c, line, sizeof(line)))
				goto out;
		} while (line[0]);
	} else if (blen && read_body(c, body, blen)) {
		goto out;
	}
	if (chunked) {
		int n = snprintf(
		        out, sizeof(out),
		        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Backend: %d\r\n"
		        "%s\r\n",
		        c->index, keep ? "" : "Connection: close\r\n");
		if (wr_all(c->fd, out, (size_t)n))
			goto out;
		/* Uneven chunk sizes exercise the proxy's chunk boundary handling. */
		for (size_t off = 0, step = 1; off < blen; step = step * 7 % 65521 + 1) {
			size_t k = blen - off < step ? blen - off : step;
			n = snprintf(out, sizeof(out), "%zx\r\n", k);
			if (wr_all(c->fd, out, (size_t)n) || wr_all(c->fd, body + off, k) ||
			    wr_all(c->fd, "\r\n", 2))
				goto out;
			off += k;
		}
		if (wr_all(c->fd, "0\r\n\r\n", 5))
			goto out;
	} else {
		int n = snprintf(
		        out, sizeof(out),
		        "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nX-Backend: %d\r\n%s\r\n", blen,
		        c->index, keep ? "" : "Connection: close\r\n");
		if (wr_all(c->fd, out, (size_t)n) || wr_all(c->fd, body, blen))
			goto out;
	}
	ret = keep;
out:
	free(body);
	return ret;
}

static void *serve_conn(void *arg)
{
	struct he_conn *c = arg;
	while (serve_one(c))
		;
	close(c->fd);
	free(c);
	return NULL;
}

struct he_listener {
	int fd;
	int index;
};

static void *accept_loop(void *arg)
{
	struct he_listener *l = arg;
	for (;;) {
		int fd = accept(l->fd, NULL, NULL);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			die("accept");
		}
		struct he_conn *c = malloc(sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->index = l->index;
		c->have = 0;
		pthread_t t;
		if (pthread_create(&t, NULL, serve_conn, c)) {
			close(fd);
			free(c);
			continue;
		}
		pthread_detach(t);
	}
	return NULL;
}

static int cmd_serve(int n, char **addrs)
{
	static struct he_listener ls[HE_MAX_LISTEN];
	pthread_t t[HE_MAX_LISTEN];

	for (int i = 0; i < n; i++) {
		struct sockaddr_storage ss;
		socklen_t sl;
		int one = 1;
		if (parse_addr(addrs[i], &ss, &sl))
			die("bad address");
		ls[i].index = i;
		ls[i].fd = socket(ss.ss_family, SOCK_STREAM, 0);
		if (ls[i].fd < 0)
			die("socket");
		setsockopt(ls[i].fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(ls[i].fd, (struct sockaddr *)&ss, sl) || listen(ls[i].fd, 512))
			die(addrs[i]);
	}
	for (int i = 0; i < n; i++)
		if (pthread_create(&t[i], NULL, accept_loop, &ls[i]))
			die("pthread_create");
	printf("ready\n");
	fflush(stdout);
	pthread_join(t[0], NULL);
	return 0;
}

static int dial(const char *addr)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	if (parse_addr(addr, &ss, &sl))
		die("bad address");
	int fd = socket(ss.ss_family, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&ss, sl))
		die("connect");
	return fd;
}

static int cmd_upgrade(const char *addr, size_t total)
{
	static const char req[] = "GET /chat HTTP/1.1\r\nHost: echo\r\nUpgrade: websocket\r\n"
	                          "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
	struct he_conn *c = calloc(1, sizeof(*c));
	char *end, buf[65536], pat[65536];
	size_t sent = 0, got = 0;

	if (!c)
		die("calloc");
	c->fd = dial(addr);
	if (wr_all(c->fd, req, sizeof(req) - 1))
		die("send request");
	while (!(end = memmem(c->head, c->have, "\r\n\r\n", 4)))
		if (fill(c, c->have + 1))
			die("read 101 head");
	if (strncmp(c->head, "HTTP/1.1 101", 12)) {
		fprintf(stderr, "httpecho: expected 101, got: %.*s\n", (int)(end - c->head),
		        c->head);
		return 1;
	}
	consume(c, (size_t)(end - c->head) + 4);
	if (c->have) {
		fprintf(stderr, "httpecho: %zu unexpected bytes after the 101\n", c->have);
		return 1;
	}
	for (size_t i = 0; i < sizeof(pat); i++)
		pat[i] = (char)(i * 131 + 7);
	/* Send and receive interleaved so neither direction fills up. */
	while (got < total) {
		struct pollfd p = {.fd = c->fd, .events = POLLIN | (sent < total ? POLLOUT : 0)};
		if (poll(&p, 1, HE_IO_TIMEOUT) <= 0) {
			fprintf(stderr, "httpecho: timeout after %zu sent, %zu received\n", sent,
			        got);
			return 1;
		}
		if ((p.revents & POLLOUT) && sent < total) {
			size_t off = sent % sizeof(pat), k = sizeof(pat) - off;
			if (k > total - sent)
				k = total - sent;
			ssize_t w = send(c->fd, pat + off, k, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (w < 0 && errno != EAGAIN)
				die("send");
			if (w > 0)
				sent += (size_t)w;
		}
		if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t r = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
			if (r == 0) {
				fprintf(stderr, "httpecho: EOF after %zu of %zu bytes\n", got,
				        total);
				return 1;
			}
			if (r < 0 && errno != EAGAIN)
				die("recv");
			for (ssize_t i = 0; i < r; i++, got++)
				if (buf[i] != pat[got % sizeof(pat)]) {
					fprintf(stderr, "httpecho: byte %zu differs\n", got);
					return 1;
				}
		}
	}
	printf("upgrade ok: %zu bytes echoed\n", got);
	close(c->fd);
	free(c);
	return 0;
}

static int cmd_hold(const char *addr, int secs)
{
	char buf[64];
	int fd = dial(addr);
	size_t got = 0;

	if (wr_all(fd, "ping\n", 5))
		die("send");
	while (got < 5) {
		ssize_t r = rd(fd, buf + got, sizeof(buf) - got);
		if (r <= 0)
			die("echo of ping");
		got += (size_t)r;
	}
	printf("connected\n");
	fflush(stdout);
	struct pollfd p = {.fd = fd, .events = POLLIN};
	int r = poll(&p, 1, secs * 1000);
	if (r == 0) {
		printf("hang\n");
		return 2;
	}
	ssize_t n = recv(fd, buf, sizeof(buf), 0);
	if (n == 0)
		printf("eof\n");
	else if (n < 0 && errno == ECONNRESET)
		printf("reset\n");
	else {
		printf("unexpected: %zd bytes, %s\n", n, n < 0 ? strerror(errno) : "data");
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	char *addrs[HE_MAX_LISTEN];
	const char *addr = NULL;
	size_t bytes = 1u << 20;
	int n = 0, secs = 10;

	if (argc < 2) {
		fprintf(stderr, "usage: httpecho serve|upgrade|hold ...\n");
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	for (int i = 2; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "-l") && n < HE_MAX_LISTEN)
			addrs[n++] = argv[i + 1];
		else if (!strcmp(argv[i], "-a"))
			addr = argv[i + 1];
		else if (!strcmp(argv[i], "-n"))
			bytes = strtoull(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "-T"))
			secs = atoi(argv[i + 1]);
		else {
			fprintf(stderr, "httpecho: bad argument %s\n", argv[i]);
			return 1;
		}
	}
	if (!strcmp(argv[1], "serve") && n > 0)
		return cmd_serve(n, addrs);
	if (!strcmp(argv[1], "upgrade") && addr)
		return cmd_upgrade(addr, bytes);
	if (!strcmp(argv[1], "hold") && addr)
		return cmd_hold(addr, secs);
	fprintf(stderr, "httpecho: bad command line\n");
	return 1;
}

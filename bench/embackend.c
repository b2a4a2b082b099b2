/* embackend: the benchmark's backend. A multi-threaded epoll server with one
 * SO_REUSEPORT listening socket per thread per address, so that it is never
 * the bottleneck of the proxies measured in front of it.
 *
 * Modes (-m):
 *   echo    every byte received is sent back (raw TCP ping-pong, connect, idle)
 *   http    HTTP/1.1 keep-alive responder: every request gets 200 with a fixed
 *           body "backend-<n>\n" padded with '.' to -b bytes, <n> being the
 *           index of the -l address the connection came in on
 *   path    the same, but the body is the request's target as it arrived
 *           (padded with '.' before the final '\n' to -b bytes), so that a
 *           client can check that a proxy rewrote the path as configured and
 *           that every response belongs to its request
 *   source  bulk: after the client's 16-byte hello "EMBULK01" + 8-byte seed,
 *           sends the checked pattern of bench/emload.c until the peer closes
 *   sink    bulk upload: reads and discards everything
 *
 * Usage: embackend -m MODE -l IP:PORT [-l IP:PORT ...] [-t THREADS] [-b BODY]
 * Prints "ready" on stdout once every socket listens. SIGUSR1 prints a line
 * "served l0=N l1=N ... bad=N" with the requests served per listener (http)
 * or connections accepted (other modes), so the harness can check that
 * balancing happened and that the load generator's count is real. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto/em.h"

#define BK_MAX_LISTEN 8
#define BK_BUF        65536
#define BK_HTTP_IN    8192
#define BK_BULK_HELLO 16

enum bk_mode { BK_ECHO, BK_HTTP, BK_SOURCE, BK_SINK };

struct bk_conn {
	int fd;
	int listener;
	/* echo: bytes received but not yet sent back; http: request head bytes */
	size_t in_len;
	size_t out_off, out_len; /* pending output (echo / http responses) */
	uint64_t seed, offset;   /* source mode stream position */
	bool hello_done;
	bool want_out;
	char *in;
	char *out;
};

static enum bk_mode g_mode = BK_ECHO;
static struct em_addr g_listen[BK_MAX_LISTEN];
static int g_nlisten;
static char g_response[BK_MAX_LISTEN][512 + 65536];
static size_t g_response_len[BK_MAX_LISTEN];
static _Atomic uint64_t g_served[BK_MAX_LISTEN];
static _Atomic uint64_t g_bad;
static size_t g_out_cap;
static size_t g_body;    /* -b */
static bool g_echo_path; /* mode path: BK_HTTP with the target as the body */
static volatile sig_atomic_t g_stop, g_report;

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		g_report = 1;
	else
		g_stop = 1;
}

static int listen_on(const struct em_addr *a)
{
	struct sockaddr_storage ss;
	socklen_t sl = em_addr_to_sockaddr(a, &ss);
	int one = 1;
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sl) == -1 || listen(fd, 4096) == -1) {
		int e = -errno;
		close(fd);
		return e;
	}
	return fd;
}

/* The bulk pattern: 64-bit little-endian word k of a stream is k ^ seed.
 * A counter finds dropped, repeated, reordered and corrupted bytes alike and
 * is cheap enough to write at tens of Gbit/s. */
static void fill_pattern(char *buf, size_t len, uint64_t seed, uint64_t off)
{
	size_t i = 0;
	while (i < len && ((off + i) & 7)) {
		uint64_t w = ((off + i) >> 3) ^ seed;
		buf[i] = (char)(w >> (8 * ((off + i) & 7)));
		i++;
	}
	for (; i + 8 <= len; i += 8) {
		uint64_t w = ((off + i) >> 3) ^ seed;
		memcpy(buf + i, &w, 8);
	}
	for (; i < len; i++) {
		uint64_t w = ((off + i) >> 3) ^ seed;
		buf[i] = (char)(w >> (8 * ((off + i) & 7)));
	}
}

static void conn_free(int ep, struct bk_conn *c)
{
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c->in);
	free(c->out);
	free(c);
}

static void set_out_interest(int ep, struct bk_conn *c, bool want)
{
	if (c->want_out == want)
		return;
	/* While output is pending, input is not read: level-triggered EPOLLIN
	 * would spin, and an unread peer must not grow our buffers. */
	struct epoll_event ev = {.events = want ? EPOLLOUT : EPOLLIN | EPOLLRDHUP, .data.ptr = c};
	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
	c->want_out = want;
}

/* Returns 0 while the connection lives, -1 when it must be freed. */
static int flush_out(int ep, struct bk_conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
		if (n == -1) {
			if (errno == EAGAIN) {
				set_out_interest(ep, c, true);
				return 0;
			}
			return -1;
		}
		c->out_off += (size_t)n;
	}
	c->out_off = c->out_len = 0;
	set_out_interest(ep, c, false);
	return 0;
}

/* Mode path: a 200 whose body is the target <t>, padded with '.' before the
 * final '\n' to g_body bytes. <buf> holds 512 + BK_HTTP_IN + 65536 bytes. */
static size_t path_response(char *buf, const char *t, size_t tl)
{
	size_t bl = EM_MAX(g_body, tl + 1);
	int hl = snprintf(buf, 512,
	                  "HTTP/1.1 200 OK\r\nServer: embackend\r\nContent-Type: "
	                  "text/plain\r\nContent-Length: %zu\r\n\r\n",
	                  bl);
	char *b = buf + hl;
	memcpy(b, t, tl);
	memset(b + tl, '.', bl - tl - 1);
	b[bl - 1] = '\n';
	return (size_t)hl + bl;
}

/* Answers every complete request head in c->in. Requests carry no body in
 * this benchmark; one with a body is counted as bad and closed. */
static int http_serve(int ep, struct bk_conn *c)
{
	size_t pos = 0;
	for (;;) {
		char *start = c->in + pos;
		size_t avail = c->in_len - pos;
		char *end = memmem(start, avail, "\r\n\r\n", 4);
		if (!end)
			break;
		size_t head = (size_t)(end - start) + 4;
		if (avail < 14 || memcmp(start, "GET ", 4) != 0 ||
		    memmem(start, head, "ontent-Length: ", 15) != NULL) {
			atomic_fetch_add_explicit(&g_bad, 1, memory_order_relaxed);
			return -1;
		}
		const char *resp = g_response[c->listener];
		size_t rl = g_response_len[c->listener];
		char pbuf[512 + BK_HTTP_IN + 65536];
		if (g_echo_path) {
			/* "GET <target> HTTP/1.x": the target is up to the next space. */
			const char *t = start + 4, *te = memchr(t, ' ', head - 4);
			if (!te) {
				atomic_fetch_add_explicit(&g_bad, 1, memory_order_relaxed);
				return -1;
			}
			rl = path_response(pbuf, t, (size_t)(te - t));
			resp = pbuf;
		}
		if (c->out_len + rl > g_out_cap) {
			if (flush_out(ep, c) < 0)
				return -1;
			if (c->out_len + rl > g_out_cap)
				break; /* peer is not reading; resume on EPOLLOUT */
		}
		memcpy(c->out + c->out_len, resp, rl);
		c->out_len += rl;
		atomic_fetch_add_explicit(&g_served[c->listener], 1, memory_order_relaxed);
		pos += head;
	}
	memmove(c->in, c->in + pos, c->in_len - pos);
	c->in_len -= pos;
	if (c->in_len == BK_HTTP_IN) {
		atomic_fetch_add_explicit(&g_bad, 1, memory_order_relaxed);
		return -1;
	}
	return flush_out(ep, c);
}

static int source_send(int ep, struct bk_conn *c)
{
	for (int rounds = 0; rounds < 16; rounds++) {
		fill_pattern(c->out, BK_BUF, c->seed, c->offset);
		ssize_t n = send(c->fd, c->out, BK_BUF, MSG_NOSIGNAL);
		if (n == -1) {
			if (errno == EAGAIN) {
				set_out_interest(ep, c, true);
				return 0;
			}
			return -1;
		}
		c->offset += (uint64_t)n;
	}
	set_out_interest(ep, c, true);
	return 0;
}

static int on_readable(int ep, struct bk_conn *c)
{
	for (int rounds = 0; rounds < 16; rounds++) {
		ssize_t n;
		switch (g_mode) {
		case BK_ECHO:
			if (c->out_len)
				return 0; /* back-pressure: wait until the echo is out */
			n = recv(c->fd, c->out, g_out_cap, 0);
			if (n > 0) {
				c->out_len = (size_t)n;
				c->out_off = 0;
				if (flush_out(ep, c) < 0)
					return -1;
			}
			break;
		case BK_HTTP:
			n = recv(c->fd, c->in + c->in_len, BK_HTTP_IN - c->in_len, 0);
			if (n > 0) {
				c->in_len += (size_t)n;
				if (http_serve(ep, c) < 0)
					return -1;
			}
			break;
		case BK_SOURCE:
			if (c->hello_done) {
				char scratch[256];
				n = recv(c->fd, scratch, sizeof(scratch), 0);
				break;
			}
			n = recv(c->fd, c->in + c->in_len, BK_BULK_HELLO - c->in_len, 0);
			if (n > 0) {
				c->in_len += (size_t)n;
				if (c->in_len == BK_BULK_HELLO) {
					if (memcmp(c->in, "EMBULK01", 8) != 0) {
						atomic_fetch_add_explicit(&g_bad, 1,
						                          memory_order_relaxed);
						return -1;
					}
					memcpy(&c->seed, c->in + 8, 8);
					c->hello_done = true;
					if (source_send(ep, c) < 0)
						return -1;
				}
			}
			break;
		default:
			n = recv(c->fd, c->out, g_out_cap, 0);
			break;
		}
		if (n == 0)
			return -1;
		if (n == -1)
			return errno == EAGAIN ? 0 : -1;
	}
	return 0;
}

static void *worker(void *arg)
{
	EM_UNUSED(arg);
	int lfd[BK_MAX_LISTEN];
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep == -1) {
		perror("embackend: epoll_create1");
		exit(2);
	}
	for (int i = 0; i < g_nlisten; i++) {
		char buf[EM_ADDR_STRLEN];
		lfd[i] = listen_on(&g_listen[i]);
		if (lfd[i] < 0) {
			fprintf(stderr, "embackend: listen %s: %s\n",
			        em_addr_format(&g_listen[i], true, buf, sizeof(buf)),
			        strerror(-lfd[i]));
			exit(2);
		}
		/* Listener events carry a small integer, connections a pointer. */
		struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)i};
		epoll_ctl(ep, EPOLL_CTL_ADD, lfd[i], &ev);
	}
	struct epoll_event evs[256];
	while (!g_stop) {
		int n = epoll_wait(ep, evs, EM_ARRAY_SIZE(evs), 200);
		for (int i = 0; i < n; i++) {
			if (evs[i].data.u64 < BK_MAX_LISTEN) {
				int li = (int)evs[i].data.u64;
				for (int k = 0; k < 64; k++) {
					int fd = accept4(lfd[li], NULL, NULL,
					                 SOCK_NONBLOCK | SOCK_CLOEXEC);
					if (fd == -1)
						break;
					int one = 1;
					setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					/* Buffers only for the modes that need them, so
					 * idle connections stay small. */
					struct bk_conn *c = calloc(1, sizeof(*c));
					if (c) {
						c->out = malloc(g_out_cap);
						if (g_mode == BK_HTTP || g_mode == BK_SOURCE)
							c->in = malloc(BK_HTTP_IN);
					}
					if (!c || !c->out ||
					    ((g_mode == BK_HTTP || g_mode == BK_SOURCE) &&
					     !c->in)) {
						if (c) {
							free(c->in);
							free(c->out);
							free(c);
						}
						close(fd);
						continue;
					}
					c->fd = fd;
					c->listener = li;
					if (g_mode != BK_HTTP)
						atomic_fetch_add_explicit(&g_served[li], 1,
						                          memory_order_relaxed);
					struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP,
					                          .data.ptr = c};
					epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
				}
				continue;
			}
			struct bk_conn *c = evs[i].data.ptr;
			int rc = 0;
			if (evs[i].events & EPOLLOUT) {
				if (g_mode == BK_SOURCE)
					rc = source_send(ep, c);
				else {
					rc = flush_out(ep, c);
					if (rc == 0 && g_mode == BK_HTTP && c->in_len)
						rc = http_serve(ep, c);
				}
			}
			if (rc == 0 &&
			    (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
				rc = on_readable(ep, c);
			if (rc == 0 && (evs[i].events & (EPOLLHUP | EPOLLERR)))
				rc = -1;
			if (rc < 0)
				conn_free(ep, c);
		}
	}
	return NULL;
}

static void usage(void)
{
	fprintf(stderr, "usage: embackend -m echo|http|path|source|sink -l IP:PORT [-l IP:PORT ...] "
	                "[-t THREADS] [-b BODY_BYTES]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	int threads = 1, opt;
	size_t body = 0;
	while ((opt = getopt(argc, argv, "m:l:t:b:")) != -1) {
		switch (opt) {
		case 'm':
			if (!strcmp(optarg, "echo"))
				g_mode = BK_ECHO;
			else if (!strcmp(optarg, "http"))
				g_mode = BK_HTTP;
			else if (!strcmp(optarg, "path"))
				g_mode = BK_HTTP, g_echo_path = true;
			else if (!strcmp(optarg, "source"))
				g_mode = BK_SOURCE;
			else if (!strcmp(optarg, "sink"))
				g_mode = BK_SINK;
			else
				usage();
			break;
		case 'l':
			if (g_nlisten == BK_MAX_LISTEN ||
			    em_addr_parse(optarg, true, &g_listen[g_nlisten]) < 0)
				usage();
			g_nlisten++;
			break;
		case 't':
			threads = atoi(optarg);
			break;
		case 'b':
			body = (size_t)atol(optarg);
			break;
		default:
			usage();
		}
	}
	if (!g_nlisten || threads < 1 || threads > 64 || body > 65536)
		usage();
	g_body = body;
	for (int i = 0; i < g_nlisten; i++) {
		char id[32];
		int idl = snprintf(id, sizeof(id), "backend-%d\n", i);
		size_t bl = EM_MAX(body, (size_t)idl);
		int hl = snprintf(g_response[i], 512,
		                  "HTTP/1.1 200 OK\r\nServer: embackend\r\nContent-Type: "
		                  "text/plain\r\nContent-Length: %zu\r\n\r\n",
		                  bl);
		char *b = g_response[i] + hl;
		/* The id is the body's first line; padding goes before the final
		 * newline so the body stays one line a reader can compare. */
		memcpy(b, id, (size_t)idl - 1);
		memset(b + idl - 1, '.', bl - (size_t)idl);
		b[bl - 1] = '\n';
		g_response_len[i] = (size_t)hl + bl;
	}

	switch (g_mode) {
	case BK_HTTP:
		g_out_cap = 0;
		for (int i = 0; i < g_nlisten; i++)
			g_out_cap = EM_MAX(g_out_cap, 4 * g_response_len[i]);
		if (g_echo_path)
			g_out_cap = EM_MAX(g_out_cap, 2 * (512 + BK_HTTP_IN + g_body));
		g_out_cap = EM_MAX(g_out_cap, (size_t)16384);
		break;
	case BK_SOURCE:
		g_out_cap = BK_BUF;
		break;
	default:
		g_out_cap = 16384;
	}

	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	pthread_t tid[64];
	for (int i = 0; i < threads; i++)
		pthread_create(&tid[i], NULL, worker, NULL);
	/* Threads bind in parallel; a short pause lets every socket exist before
	 * the harness is told to go. Bind errors exit the process. */
	usleep(100 * 1000);
	printf("ready\n");
	fflush(stdout);
	while (!g_stop) {
		pause();
		if (g_report) {
			g_report = 0;
			char line[512];
			int len = snprintf(line, sizeof(line), "served");
			for (int i = 0; i < g_nlisten; i++)
				len += snprintf(line + len, sizeof(line) - (size_t)len, " l%d=%llu",
				                i, (unsigned long long)atomic_load(&g_served[i]));
			len += snprintf(line + len, sizeof(line) - (size_t)len, " bad=%llu\n",
			                (unsigned long long)atomic_load(&g_bad));
			fputs(line, stdout);
			fflush(stdout);
		}
	}
	for (int i = 0; i < threads; i++)
		pthread_join(tid[i], NULL);
	return 0;
}

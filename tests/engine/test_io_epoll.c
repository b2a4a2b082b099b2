/* engine/io_epoll.c against the kernel: operations on socketpairs and
 * loopback sockets complete as io_uring's would (results, flags, buffers,
 * cancels, the connect timeout), and never during the call. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine/io_epoll.h"
#include "proto/clock.h"

struct rig {
	struct em_epoll *e;
	struct em_bufring rb;
	int sv[2];
};

static void rig_init(struct rig *g, uint16_t bufs)
{
	cr_assert_eq(em_epoll_new(&g->e), 0);
	cr_assert_eq(em_bufring_init(&g->rb, NULL, 0, bufs, 4096), 0);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, g->sv), 0);
}

static void rig_fini(struct rig *g)
{
	em_epoll_close(g->e, g->sv[0]);
	close(g->sv[1]);
	em_epoll_free(g->e);
	em_bufring_free(&g->rb);
}

/* The next completion, waiting up to 2 s. */
static struct em_cqe next(struct rig *g)
{
	struct em_cqe c;
	uint64_t until = em_now_ms() + 2000;
	while (em_now_ms() < until)
		if (em_epoll_wait(g->e, &c, 1, true) == 1)
			return c;
	cr_assert_fail("no completion within 2 s");
	return c;
}

/* No completion is waiting (after one turn that does not block). */
static void none(struct rig *g)
{
	struct em_cqe c;
	cr_assert_eq(em_epoll_wait(g->e, &c, 1, false), 0, "unexpected completion %#lx res %d",
	             (unsigned long)c.ud, c.res);
}

Test(io_epoll, multishot_recv_buffers_and_eof)
{
	struct rig g;
	rig_init(&g, 8);
	em_epoll_recv(g.e, g.sv[0], &g.rb, true, 7);
	none(&g);
	cr_assert_eq(write(g.sv[1], "hello", 5), 5);
	struct em_cqe c = next(&g);
	cr_assert_eq(c.ud, 7);
	cr_assert_eq(c.res, 5);
	cr_assert(c.flags & IORING_CQE_F_MORE);
	cr_assert(c.flags & IORING_CQE_F_BUFFER);
	uint16_t bid = (uint16_t)(c.flags >> IORING_CQE_BUFFER_SHIFT);
	cr_assert_eq(memcmp(em_bufring_buf(&g.rb, bid), "hello", 5), 0);
	cr_assert_eq(g.rb.n_stack, 7, "the buffer is the caller's");
	em_bufring_put(&g.rb, bid);
	/* Still armed: more bytes, then EOF ends it. */
	cr_assert_eq(write(g.sv[1], "ab", 2), 2);
	shutdown(g.sv[1], SHUT_WR);
	c = next(&g);
	cr_assert_eq(c.res, 2);
	em_bufring_put(&g.rb, (uint16_t)(c.flags >> IORING_CQE_BUFFER_SHIFT));
	c = next(&g);
	cr_assert_eq(c.ud, 7);
	cr_assert_eq(c.res, 0);
	cr_assert_not(c.flags & (IORING_CQE_F_MORE | IORING_CQE_F_BUFFER));
	cr_assert_eq(g.rb.n_stack, 8, "EOF holds no buffer");
	rig_fini(&g);
}

Test(io_epoll, single_recv_and_nobufs)
{
	struct rig g;
	rig_init(&g, 1);
	cr_assert_eq(write(g.sv[1], "x", 1), 1);
	em_epoll_recv(g.e, g.sv[0], &g.rb, false, 1);
	struct em_cqe c = next(&g);
	cr_assert_eq(c.res, 1);
	cr_assert_not(c.flags & IORING_CQE_F_MORE, "one buffer: ended");
	/* The only buffer is held: the next recv ends with -ENOBUFS and the
	 * bytes stay in the socket. */
	cr_assert_eq(write(g.sv[1], "y", 1), 1);
	em_epoll_recv(g.e, g.sv[0], &g.rb, true, 2);
	c = next(&g);
	cr_assert_eq(c.ud, 2);
	cr_assert_eq(c.res, -ENOBUFS);
	em_bufring_put(&g.rb, 0);
	em_epoll_recv(g.e, g.sv[0], &g.rb, true, 3);
	c = next(&g);
	cr_assert_eq(c.ud, 3);
	cr_assert_eq(c.res, 1);
	cr_assert_eq(*em_bufring_buf(&g.rb, 0), 'y');
	em_bufring_put(&g.rb, 0);
	rig_fini(&g);
}

Test(io_epoll, send_waits_for_room_and_completes_whole)
{
	struct rig g;
	rig_init(&g, 8);
	int sz = 4096;
	setsockopt(g.sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	size_t len = 1u << 20;
	char *big = malloc(len), *sink = malloc(len);
	memset(big, 'z', len);
	em_epoll_send(g.e, g.sv[0], big, (uint32_t)len, MSG_NOSIGNAL | MSG_WAITALL, 9);
	none(&g); /* the socket took a part: the rest waits */
	size_t got = 0;
	struct em_cqe c = {0};
	bool done = false;
	while (!done || got < len) {
		ssize_t k = read(g.sv[1], sink, len);
		if (k > 0)
			got += (size_t)k;
		struct em_cqe x;
		if (em_epoll_wait(g.e, &x, 1, false) == 1) {
			c = x;
			done = true;
		}
	}
	cr_assert_eq(c.ud, 9);
	cr_assert_eq(c.res, (int32_t)len);
	cr_assert_eq(got, len);
	free(big);
	free(sink);
	rig_fini(&g);
}

Test(io_epoll, sendmsg_vectors_and_send_error)
{
	struct rig g;
	rig_init(&g, 8);
	struct iovec v[3] = {{"ab", 2}, {"cde", 3}, {"f", 1}};
	struct msghdr mh = {.msg_iov = v, .msg_iovlen = 3};
	em_epoll_sendmsg(g.e, g.sv[0], &mh, MSG_NOSIGNAL, 4);
	struct em_cqe c = next(&g); /* sent at once, delivered by the wait */
	cr_assert_eq(c.ud, 4);
	cr_assert_eq(c.res, 6);
	char buf[8];
	cr_assert_eq(read(g.sv[1], buf, sizeof(buf)), 6);
	cr_assert_eq(memcmp(buf, "abcdef", 6), 0);
	close(g.sv[1]);
	em_epoll_send(g.e, g.sv[0], "x", 1, MSG_NOSIGNAL, 5);
	c = next(&g);
	cr_assert_eq(c.res, -EPIPE);
	g.sv[1] = open("/dev/null", O_RDONLY | O_CLOEXEC);
	rig_fini(&g);
}

Test(io_epoll, cancel_recv_and_cancel_fd)
{
	struct rig g;
	rig_init(&g, 8);
	em_epoll_recv(g.e, g.sv[0], &g.rb, true, 11);
	em_epoll_cancel(g.e, g.sv[0], 11, 12);
	struct em_cqe c = next(&g);
	cr_assert_eq(c.ud, 11);
	cr_assert_eq(c.res, -ECANCELED);
	cr_assert_not(c.flags & IORING_CQE_F_MORE);
	c = next(&g);
	cr_assert_eq(c.ud, 12);
	cr_assert_eq(c.res, 0);
	em_epoll_cancel(g.e, g.sv[0], 11, 13);
	c = next(&g);
	cr_assert_eq(c.res, -ENOENT);
	/* The bytes written after the cancel are not read. */
	cr_assert_eq(write(g.sv[1], "q", 1), 1);
	none(&g);
	em_epoll_recv(g.e, g.sv[0], &g.rb, true, 14);
	em_epoll_cancel_fd(g.e, g.sv[0], 15);
	c = next(&g);
	cr_assert_eq(c.ud, 14);
	cr_assert_eq(c.res, -ECANCELED);
	c = next(&g);
	cr_assert_eq(c.ud, 15);
	cr_assert_eq(c.res, 1);
	none(&g);
	rig_fini(&g);
}

static int listener(struct sockaddr_in *sa, int backlog)
{
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	*sa = (struct sockaddr_in){.sin_family = AF_INET,
	                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(*sa);
	cr_assert_eq(bind(l, (struct sockaddr *)sa, sl), 0);
	cr_assert_eq(listen(l, backlog), 0);
	cr_assert_eq(getsockname(l, (struct sockaddr *)sa, &sl), 0);
	return l;
}

Test(io_epoll, accept_and_connect)
{
	struct rig g;
	rig_init(&g, 8);
	struct sockaddr_in sa;
	int l = listener(&sa, 16);
	em_epoll_accept(g.e, l, 20);
	int a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int b = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	em_epoll_connect(g.e, a, (struct sockaddr *)&sa, sizeof(sa), 2000, 21, 22);
	em_epoll_connect(g.e, b, (struct sockaddr *)&sa, sizeof(sa), 2000, 23, 24);
	int accepted = 0, connected = 0, timeouts = 0;
	int fds[2];
	while (accepted < 2 || connected < 2 || timeouts < 2) {
		struct em_cqe c = next(&g);
		if (c.ud == 20) {
			cr_assert_geq(c.res, 0);
			cr_assert(c.flags & IORING_CQE_F_MORE);
			cr_assert(fcntl(c.res, F_GETFL) & O_NONBLOCK);
			fds[accepted++] = c.res;
		} else if (c.ud == 21 || c.ud == 23) {
			cr_assert_eq(c.res, 0);
			connected++;
		} else {
			cr_assert(c.ud == 22 || c.ud == 24);
			cr_assert_eq(c.res, -ECANCELED, "the timeout did not fire");
			timeouts++;
		}
	}
	close(fds[0]);
	close(fds[1]);
	em_epoll_close(g.e, a);
	em_epoll_close(g.e, b);
	/* Refused: the error, then the timeout's -ECANCELED. */
	int port = ntohs(sa.sin_port);
	em_epoll_cancel_fd(g.e, l, 25);
	struct em_cqe c = next(&g);
	cr_assert_eq(c.ud, 20);
	cr_assert_eq(c.res, -ECANCELED);
	c = next(&g);
	cr_assert_eq(c.ud, 25);
	em_epoll_close(g.e, l);
	int r = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	sa.sin_port = htons((uint16_t)port);
	em_epoll_connect(g.e, r, (struct sockaddr *)&sa, sizeof(sa), 2000, 26, 27);
	c = next(&g);
	cr_assert_eq(c.ud, 26);
	cr_assert_eq(c.res, -ECONNREFUSED);
	c = next(&g);
	cr_assert_eq(c.ud, 27);
	cr_assert_eq(c.res, -ECANCELED);
	em_epoll_close(g.e, r);
	rig_fini(&g);
}

Test(io_epoll, connect_timeout_and_tick)
{
	struct rig g;
	rig_init(&g, 8);
	/* A listener never accepting, its queue full: further SYNs are
	 * dropped and the connect hangs until its timeout. */
	struct sockaddr_in sa;
	int l = listener(&sa, 0);
	int fill[4];
	for (int i = 0; i < 4; i++) {
		fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		connect(fill[i], (struct sockaddr *)&sa, sizeof(sa));
	}
	usleep(100000);
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	uint64_t t0 = em_now_ms();
	em_epoll_timeout(g.e, 50, 30);
	em_epoll_connect(g.e, s, (struct sockaddr *)&sa, sizeof(sa), 300, 31, 32);
	struct em_cqe c = next(&g);
	cr_assert_eq(c.ud, 30);
	cr_assert_eq(c.res, -ETIME);
	cr_assert_geq(em_now_ms() - t0, 50);
	c = next(&g);
	cr_assert_eq(c.ud, 31);
	cr_assert_eq(c.res, -ECANCELED, "connect: %d", c.res);
	cr_assert_geq(em_now_ms() - t0, 300);
	c = next(&g);
	cr_assert_eq(c.ud, 32);
	cr_assert_eq(c.res, -ETIME);
	em_epoll_close(g.e, s);
	for (int i = 0; i < 4; i++)
		close(fill[i]);
	close(l);
	rig_fini(&g);
}

Test(io_epoll, close_forgets_the_descriptor)
{
	struct rig g;
	rig_init(&g, 8);
	em_epoll_recv(g.e, g.sv[0], &g.rb, true, 40);
	cr_assert_eq(em_epoll_nfds(g.e), 1);
	em_epoll_cancel_fd(g.e, g.sv[0], 41);
	next(&g);
	next(&g);
	int n = g.sv[0];
	em_epoll_close(g.e, n);
	cr_assert_eq(em_epoll_nfds(g.e), 0);
	/* The same number, a new socket: registered afresh and read. */
	int sv[2];
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	cr_assert_eq(sv[0], n);
	em_epoll_recv(g.e, sv[0], &g.rb, true, 42);
	cr_assert_eq(write(sv[1], "k", 1), 1);
	struct em_cqe c = next(&g);
	cr_assert_eq(c.ud, 42);
	cr_assert_eq(c.res, 1);
	em_bufring_put(&g.rb, (uint16_t)(c.flags >> IORING_CQE_BUFFER_SHIFT));
	close(g.sv[1]);
	g.sv[0] = sv[0];
	g.sv[1] = sv[1];
	em_epoll_cancel_fd(g.e, g.sv[0], 43);
	next(&g);
	next(&g);
	rig_fini(&g);
}

/* With SIGPIPE ignored the sends of a turn go to the kernel in one
 * io_submit: the same results as send(2) gives, in submission order. */
Test(io_epoll, sends_of_a_turn_together)
{
	signal(SIGPIPE, SIG_IGN);
	struct rig g;
	rig_init(&g, 8);
	cr_assert(em_epoll_aio(g.e), "io_setup failed here: the batched path is not tested");
	int a[2], b[2], c[2];
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a), 0);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, b), 0);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, c), 0);
	close(c[1]);
	struct iovec v[2] = {{"one ", 4}, {"two", 3}};
	struct msghdr mh = {.msg_iov = v, .msg_iovlen = 2};
	em_epoll_send(g.e, g.sv[0], "first", 5, MSG_NOSIGNAL | MSG_WAITALL, 1);
	em_epoll_sendmsg(g.e, a[0], &mh, MSG_NOSIGNAL | MSG_WAITALL, 2);
	em_epoll_send(g.e, c[0], "x", 1, MSG_NOSIGNAL, 3);
	em_epoll_send(g.e, b[0], "gone", 4, MSG_NOSIGNAL, 4);
	em_epoll_cancel_fd(g.e, b[0], 5); /* before its turn: nothing went */
	char buf[16];
	cr_assert_eq(recv(g.sv[1], buf, sizeof(buf), MSG_DONTWAIT), -1, "sent during the call");
	uint64_t order[5];
	int32_t res[5];
	for (int i = 0; i < 5; i++) {
		struct em_cqe x = next(&g);
		order[i] = x.ud;
		res[i] = x.res;
	}
	/* The cancel's two first; then the tries in submission order. */
	cr_assert_eq(order[0], 4);
	cr_assert_eq(res[0], -ECANCELED);
	cr_assert_eq(order[1], 5);
	cr_assert_eq(res[1], 1);
	cr_assert_eq(order[2], 1);
	cr_assert_eq(res[2], 5);
	cr_assert_eq(order[3], 2);
	cr_assert_eq(res[3], 7);
	cr_assert_eq(order[4], 3);
	cr_assert_eq(res[4], -EPIPE);
	cr_assert_eq(read(g.sv[1], buf, sizeof(buf)), 5);
	cr_assert_eq(read(a[1], buf, sizeof(buf)), 7);
	cr_assert_eq(memcmp(buf, "one two", 7), 0);
	cr_assert_eq(recv(b[1], buf, sizeof(buf), MSG_DONTWAIT), -1);
	/* A shutdown after a send: the bytes, then the end. */
	em_epoll_send(g.e, a[0], "last", 4, MSG_NOSIGNAL | MSG_WAITALL, 6);
	em_epoll_shutdown(g.e, a[0], SHUT_WR, 7);
	struct em_cqe x = next(&g);
	cr_assert_eq(x.ud, 6);
	cr_assert_eq(x.res, 4);
	x = next(&g);
	cr_assert_eq(x.ud, 7);
	cr_assert_eq(x.res, 0);
	cr_assert_eq(read(a[1], buf, sizeof(buf)), 4);
	cr_assert_eq(read(a[1], buf, sizeof(buf)), 0);
	/* A send the socket takes part of: the rest waits for room. */
	int sz = 4096;
	setsockopt(b[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	size_t len = 1u << 20;
	char *big = malloc(len), *sink = malloc(len);
	memset(big, 'q', len);
	em_epoll_send(g.e, b[0], big, (uint32_t)len, MSG_NOSIGNAL | MSG_WAITALL, 8);
	none(&g);
	size_t got = 0;
	bool done = false;
	while (!done || got < len) {
		ssize_t k = recv(b[1], sink, len, MSG_DONTWAIT);
		if (k > 0)
			got += (size_t)k;
		if (em_epoll_wait(g.e, &x, 1, false) == 1) {
			cr_assert_eq(x.ud, 8);
			cr_assert_eq(x.res, (int32_t)len);
			done = true;
		}
	}
	cr_assert_eq(got, len);
	free(big);
	free(sink);
	for (int i = 0; i < 2; i++) {
		em_epoll_close(g.e, i ? a[0] : b[0]);
		close(i ? a[1] : b[1]);
	}
	em_epoll_close(g.e, c[0]);
	rig_fini(&g);
}

/* Without SIGPIPE ignored, or with EDGEMESH_EPOLL_NO_AIO, each send is a
 * send(2) of its own (MSG_NOSIGNAL kept). */
Test(io_epoll, no_aio_without_sigpipe_ignored)
{
	signal(SIGPIPE, SIG_DFL);
	struct rig g;
	rig_init(&g, 8);
	cr_assert_not(em_epoll_aio(g.e));
	rig_fini(&g);
	signal(SIGPIPE, SIG_IGN);
	setenv("EDGEMESH_EPOLL_NO_AIO", "1", 1);
	rig_init(&g, 8);
	cr_assert_not(em_epoll_aio(g.e));
	rig_fini(&g);
	unsetenv("EDGEMESH_EPOLL_NO_AIO");
}

/* The epoll backend (engine/io_epoll.h): descriptors registered
 * edge-triggered, each with the operations armed on it; readiness runs
 * them, and what they complete goes to a FIFO of completions that the
 * worker takes with em_epoll_wait. */
#include "engine/io_epoll.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <liburing.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "engine/list.h"
#include "proto/clock.h"
#include "proto/em.h"

/* A send: submitted, then tried with the others of its turn, then what is
 * left of it while the socket has no room. */
struct esend {
	struct esend *next; /* on the free list */
	uint64_t ud;
	int flags;
	bool all;   /* MSG_WAITALL: completes once every byte went */
	bool tried; /* sent from (else it waits on e->pend) */
	uint32_t done;
	unsigned iov_i, n_iov;
	struct iovec iov[EM_EPOLL_IOV];
};

/* What few descriptors need, allocated on first use: listeners (accept),
 * the wake eventfd (read), and sockets while they connect (freed once the
 * connect is over). */
struct eslow {
	struct em_dlist cnode; /* e->conns while a connect waits */
	uint64_t deadline_ms;  /* of the connect */
	uint64_t acc_ud, rd_ud, con_ud, con_to_ud;
	void *rd_buf;
	uint32_t rd_len;
	int fd;
	bool acc, rd, con;
};

/* A descriptor's state, 32 bytes: what an idle connection costs on top of
 * the io_uring backend. All-zero: not registered, nothing armed. */
struct efd {
	uint64_t recv_ud;
	struct esend *snd;
	struct eslow *x;
	uint8_t recv;  /* 0: none, 1: one buffer, 2: multishot */
	uint8_t group; /* of the recv: e->groups[group] */
	bool added;    /* in the epoll set (and non-blocking) */
	bool nb;       /* known non-blocking */
	bool readable; /* last seen readable and not drained since */
	bool writable;
	bool hup;    /* EOF, hang-up or error seen: stays readable */
	bool queued; /* on the run list */
};
_Static_assert(sizeof(struct efd) <= 32, "struct efd grew: memory per idle connection");

#define CHUNK_SHIFT 8u
#define CHUNK       (1u << CHUNK_SHIFT)
#define EVENTS      256
#define SEND_POOL   256u
/* Sends per io_submit, and the events of the AIO context. */
#define AIO_BATCH 128u
#define AIO_NR    256u

/* The head of the completion ring an AIO context maps into the process
 * (fs/aio.c's struct aio_ring): events are reaped from it without a
 * system call when its magic and features are the ones known here. */
struct aio_ring_hdr {
	unsigned id, nr, head, tail;
	unsigned magic, compat_features, incompat_features, header_length;
	struct io_event events[];
};
#define AIO_RING_MAGIC 0xa10a10a1u

struct em_epoll {
	int epfd;
	struct efd **chunks;
	unsigned n_chunks;
	unsigned nfds;
	/* completions waiting: a ring of q_cap (a power of two) */
	struct em_cqe *q;
	unsigned q_cap, q_head, q_tail;
	/* descriptors to run on the next turn (armed while ready, or out of
	 * budget); swapped with run2 while they run */
	int *run, *run2;
	unsigned n_run, cap_run;
	/* descriptors whose send was submitted and not tried yet, in
	 * submission order */
	int *pend;
	unsigned n_pend, cap_pend;
	struct em_dlist conns; /* connects waiting, deadline order */
	bool tick_on;
	uint64_t tick_at, tick_ud;
	struct esend *send_free;
	unsigned n_send_free;
	/* Linux AIO, where io_setup works and SIGPIPE is ignored: a turn's
	 * sends go to the kernel in one io_submit (0: one send(2) each) */
	aio_context_t aio;
	bool aio_ring; /* reap from the mapped ring */
	struct iocb *cbs;
	struct iocb **cbp;
	struct em_bufring *groups[8]; /* the buffer groups recvs took */
	unsigned n_groups;
	unsigned skips; /* turns in a row that did not ask the kernel */
};

/* Socket writes through AIO complete during io_submit, as send(2) with
 * MSG_DONTWAIT would (the sockets are non-blocking), but without
 * MSG_NOSIGNAL: only where SIGPIPE is ignored (edgemesh's main ignores it).
 * Without AIO (a seccomp filter, fs.aio-max-nr reached) each send is its
 * own send(2). */
static void aio_init(struct em_epoll *e)
{
	struct sigaction sa;
	if (getenv("EDGEMESH_EPOLL_NO_AIO") || sigaction(SIGPIPE, NULL, &sa) == -1 ||
	    sa.sa_handler != SIG_IGN)
		return;
	e->cbs = calloc(AIO_BATCH, sizeof(*e->cbs));
	e->cbp = calloc(AIO_BATCH, sizeof(*e->cbp));
	aio_context_t ctx = 0;
	if (!e->cbs || !e->cbp || syscall(SYS_io_setup, AIO_NR, &ctx) == -1) {
		free(e->cbs);
		free(e->cbp);
		e->cbs = NULL;
		e->cbp = NULL;
		return;
	}
	e->aio = ctx;
	const struct aio_ring_hdr *rg = (const struct aio_ring_hdr *)(uintptr_t)ctx;
	e->aio_ring = rg->magic == AIO_RING_MAGIC && rg->incompat_features == 0 &&
	              rg->header_length == sizeof(*rg);
}

int em_epoll_new(struct em_epoll **out)
{
	struct em_epoll *e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (e->epfd == -1) {
		int rc = -errno;
		free(e);
		return rc;
	}
	e->q_cap = 1024;
	e->q = malloc(e->q_cap * sizeof(*e->q));
	if (!e->q) {
		em_epoll_free(e);
		return -ENOMEM;
	}
	em_dlist_init(&e->conns);
	aio_init(e);
	*out = e;
	return 0;
}

void em_epoll_free(struct em_epoll *e)
{
	if (!e)
		return;
	for (unsigned i = 0; i < e->n_chunks; i++) {
		if (!e->chunks[i])
			continue;
		for (unsigned k = 0; k < CHUNK; k++) {
			free(e->chunks[i][k].snd);
			free(e->chunks[i][k].x);
		}
		free(e->chunks[i]);
	}
	while (e->send_free) {
		struct esend *s = e->send_free;
		e->send_free = s->next;
		free(s);
	}
	free(e->chunks);
	free(e->q);
	free(e->run);
	free(e->run2);
	free(e->pend);
	if (e->aio)
		syscall(SYS_io_destroy, e->aio);
	free(e->cbs);
	free(e->cbp);
	if (e->epfd >= 0)
		close(e->epfd);
	free(e);
}

/* ---- state ---- */

static struct efd *rec_get(const struct em_epoll *e, int fd)
{
	unsigned c = (unsigned)fd >> CHUNK_SHIFT;
	if (fd < 0 || c >= e->n_chunks || !e->chunks[c])
		return NULL;
	return &e->chunks[c][(unsigned)fd & (CHUNK - 1)];
}

/* <fd>'s state, made on first use; NULL when out of memory. */
static struct efd *rec(struct em_epoll *e, int fd)
{
	struct efd *r = rec_get(e, fd);
	if (EM_LIKELY(r != NULL))
		return r;
	unsigned c = (unsigned)fd >> CHUNK_SHIFT;
	if (fd < 0)
		return NULL;
	if (c >= e->n_chunks) {
		unsigned n = e->n_chunks ? e->n_chunks : 4;
		while (n <= c)
			n *= 2;
		struct efd **nc = realloc(e->chunks, n * sizeof(*nc));
		if (!nc)
			return NULL;
		memset(nc + e->n_chunks, 0, (n - e->n_chunks) * sizeof(*nc));
		e->chunks = nc;
		e->n_chunks = n;
	}
	e->chunks[c] = calloc(CHUNK, sizeof(struct efd));
	if (!e->chunks[c])
		return NULL;
	return &e->chunks[c][(unsigned)fd & (CHUNK - 1)];
}

static void send_free(struct em_epoll *e, struct esend *s)
{
	if (e->n_send_free >= SEND_POOL) {
		free(s);
		return;
	}
	s->next = e->send_free;
	e->send_free = s;
	e->n_send_free++;
}

/* Drops what <r> holds and zeroes it. */
static void forget(struct em_epoll *e, struct efd *r)
{
	if (r->snd)
		send_free(e, r->snd);
	if (r->x) {
		em_dlist_del(&r->x->cnode);
		free(r->x);
	}
	if (r->added)
		e->nfds--;
	memset(r, 0, sizeof(*r));
}

/* <r>'s rare state, made on first use; NULL when out of memory. */
static struct eslow *slow(struct efd *r, int fd)
{
	if (!r->x && (r->x = calloc(1, sizeof(*r->x))))
		r->x->fd = fd;
	return r->x;
}

/* The connect of <r> is over: its rare state goes unless a listener's or
 * a read's needs it. */
static void con_over(struct efd *r)
{
	struct eslow *x = r->x;
	x->con = false;
	em_dlist_del(&x->cnode);
	if (!x->acc && !x->rd) {
		free(x);
		r->x = NULL;
	}
}

/* The completion FIFO grows as needed: losing one would leave an operation
 * in flight for ever, so running out of memory for it is fatal. */
static void push(struct em_epoll *e, uint64_t ud, int32_t res, uint32_t flags)
{
	if (EM_UNLIKELY(e->q_tail - e->q_head == e->q_cap)) {
		unsigned n = e->q_tail - e->q_head;
		struct em_cqe *nq = malloc(2 * e->q_cap * sizeof(*nq));
		EM_ASSERT(nq);
		for (unsigned i = 0; i < n; i++)
			nq[i] = e->q[(e->q_head + i) & (e->q_cap - 1)];
		free(e->q);
		e->q = nq;
		e->q_cap *= 2;
		e->q_head = 0;
		e->q_tail = n;
	}
	e->q[e->q_tail++ & (e->q_cap - 1)] = (struct em_cqe){ud, res, flags};
}

static void mark_run(struct em_epoll *e, int fd, struct efd *r)
{
	if (r->queued)
		return;
	if (e->n_run == e->cap_run) {
		unsigned n = e->cap_run ? e->cap_run * 2 : 256;
		int *a = realloc(e->run, n * sizeof(*a)), *b;
		if (a)
			e->run = a;
		b = a ? realloc(e->run2, n * sizeof(*b)) : NULL;
		if (b)
			e->run2 = b;
		EM_ASSERT(a && b); /* a ready descriptor left unrun would stall */
		e->cap_run = n;
	}
	e->run[e->n_run++] = fd;
	r->queued = true;
}

/* Into the epoll set (edge-triggered, every event) and non-blocking. */
static int reg(struct em_epoll *e, int fd, struct efd *r)
{
	if (EM_LIKELY(r->added))
		return 0;
	if (!r->nb) {
		int fl = fcntl(fd, F_GETFL);
		if (fl == -1 || (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1))
			return -errno;
		r->nb = true;
	}
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
	                         .data.u64 = (uint64_t)fd};
	if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) == -1)
		return -errno;
	r->added = true;
	e->nfds++;
	return 0;
}

/* ---- running the operations of a ready descriptor ---- */

static void do_accept(struct em_epoll *e, int fd, struct efd *r)
{
	struct eslow *x = r->x;
	for (unsigned budget = 4 * EM_EPOLL_BUDGET; x->acc && r->readable;) {
		if (budget-- == 0) {
			mark_run(e, fd, r);
			return;
		}
		int nfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (nfd >= 0) {
			/* A new descriptor has nothing armed. (Not marked
			 * non-blocking: its taker may close it with close(2).) */
			struct efd *n = rec_get(e, nfd);
			if (n)
				forget(e, n);
			push(e, x->acc_ud, nfd, IORING_CQE_F_MORE);
			continue;
		}
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			r->readable = false;
			return;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		x->acc = false;
		push(e, x->acc_ud, -errno, 0);
	}
}

static void do_read(struct em_epoll *e, struct efd *r, int fd)
{
	struct eslow *x = r->x;
	ssize_t n = read(fd, x->rd_buf, x->rd_len);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		r->readable = false;
		return;
	}
	if (n < 0 && errno == EINTR) {
		mark_run(e, fd, r);
		return;
	}
	x->rd = false;
	push(e, x->rd_ud, n < 0 ? -errno : (int32_t)n, 0);
}

static void do_recv(struct em_epoll *e, int fd, struct efd *r)
{
	unsigned budget = r->recv == 2 ? EM_EPOLL_BUDGET : 1;
	while (r->recv && r->readable) {
		if (budget-- == 0) {
			mark_run(e, fd, r);
			return;
		}
		struct em_bufring *rb = e->groups[r->group];
		int bid = em_bufring_take(rb);
		if (bid < 0) {
			r->recv = 0;
			push(e, r->recv_ud, -ENOBUFS, 0);
			return;
		}
		ssize_t n = recv(fd, em_bufring_buf(rb, (uint16_t)bid), rb->size, 0);
		if (n > 0) {
			uint32_t fl = IORING_CQE_F_BUFFER | (uint32_t)bid
			                                            << IORING_CQE_BUFFER_SHIFT;
			if (r->recv == 2)
				fl |= IORING_CQE_F_MORE;
			else
				r->recv = 0;
			/* A short read drained the socket: what comes later
			 * raises a new edge. Not after EOF or an error, which
			 * raise none: the next recv must see them. */
			if ((size_t)n < rb->size && !r->hup)
				r->readable = false;
			push(e, r->recv_ud, (int32_t)n, fl);
			continue;
		}
		int err = n == 0 ? 0 : errno;
		em_bufring_put(rb, (uint16_t)bid);
		if (err == EAGAIN || err == EWOULDBLOCK) {
			r->readable = false;
			return;
		}
		if (err == EINTR)
			continue;
		r->recv = 0;
		push(e, r->recv_ud, -err, 0);
	}
}

static void send_done(struct em_epoll *e, struct efd *r, int32_t res)
{
	struct esend *s = r->snd;
	r->snd = NULL;
	push(e, s->ud, res, 0);
	send_free(e, s);
}

/* Moves <s>'s vectors on by <n> bytes sent. */
static void iov_advance(struct esend *s, size_t n)
{
	while (n && s->iov_i < s->n_iov) {
		struct iovec *v = &s->iov[s->iov_i];
		if (n < v->iov_len) {
			v->iov_base = (char *)v->iov_base + n;
			v->iov_len -= n;
			return;
		}
		n -= v->iov_len;
		s->iov_i++;
	}
	while (s->iov_i < s->n_iov && s->iov[s->iov_i].iov_len == 0)
		s->iov_i++;
}

static void do_send(struct em_epoll *e, int fd, struct efd *r)
{
	struct esend *s = r->snd;
	s->tried = true;
	for (;;) {
		struct msghdr mh = {.msg_iov = s->iov + s->iov_i,
		                    .msg_iovlen = s->n_iov - s->iov_i};
		ssize_t n = sendmsg(fd, &mh, s->flags);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				r->writable = false;
				return;
			}
			send_done(e, r, s->done ? (int32_t)s->done : -errno);
			return;
		}
		s->done += (uint32_t)n;
		iov_advance(s, (size_t)n);
		if (s->iov_i == s->n_iov || !s->all) {
			send_done(e, r, (int32_t)s->done);
			return;
		}
	}
}

static void do_connect(struct em_epoll *e, int fd, struct efd *r)
{
	int err = 0;
	socklen_t l = sizeof(err);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) == -1)
		err = errno;
	uint64_t ud = r->x->con_ud, to = r->x->con_to_ud;
	con_over(r);
	push(e, ud, -err, 0);
	push(e, to, -ECANCELED, 0);
}

static void run_fd(struct em_epoll *e, int fd, struct efd *r)
{
	if (r->readable) {
		if (r->x && r->x->acc)
			do_accept(e, fd, r);
		if (r->x && r->x->rd)
			do_read(e, r, fd);
		if (r->recv)
			do_recv(e, fd, r);
	}
	if (r->writable) {
		if (r->x && r->x->con)
			do_connect(e, fd, r);
		else if (r->snd)
			do_send(e, fd, r);
	}
}

/* ---- submitting ---- */

/* <fd>'s state, registered; NULL (with the error in <*rc>) on failure. */
static struct efd *armable(struct em_epoll *e, int fd, int *rc)
{
	struct efd *r = rec(e, fd);
	if (!r) {
		*rc = -ENOMEM;
		return NULL;
	}
	*rc = reg(e, fd, r);
	return *rc ? NULL : r;
}

void em_epoll_accept(struct em_epoll *e, int fd, uint64_t ud)
{
	int rc;
	struct efd *r = armable(e, fd, &rc);
	if (!r) {
		push(e, ud, rc, 0);
		return;
	}
	struct eslow *x = slow(r, fd);
	if (!x) {
		push(e, ud, -ENOMEM, 0);
		return;
	}
	x->acc = true;
	x->acc_ud = ud;
	if (r->readable)
		mark_run(e, fd, r);
}

void em_epoll_recv(struct em_epoll *e, int fd, struct em_bufring *rb, bool multishot, uint64_t ud)
{
	int rc;
	struct efd *r = armable(e, fd, &rc);
	if (!r) {
		push(e, ud, rc, 0);
		return;
	}
	EM_ASSERT(!r->recv);
	unsigned g = 0;
	while (g < e->n_groups && e->groups[g] != rb)
		g++;
	if (g == e->n_groups) {
		EM_ASSERT(g < EM_ARRAY_SIZE(e->groups));
		e->groups[e->n_groups++] = rb;
	}
	r->recv = multishot ? 2 : 1;
	r->recv_ud = ud;
	r->group = (uint8_t)g;
	if (r->readable)
		mark_run(e, fd, r);
}

void em_epoll_read(struct em_epoll *e, int fd, void *buf, uint32_t len, uint64_t ud)
{
	int rc;
	struct efd *r = armable(e, fd, &rc);
	if (!r) {
		push(e, ud, rc, 0);
		return;
	}
	struct eslow *x = slow(r, fd);
	if (!x) {
		push(e, ud, -ENOMEM, 0);
		return;
	}
	x->rd = true;
	x->rd_ud = ud;
	x->rd_buf = buf;
	x->rd_len = len;
	if (r->readable)
		mark_run(e, fd, r);
}

/* The first try of <r>'s send, with the other sends of its turn: completes
 * it when it may, else leaves the rest waiting for EPOLLOUT. */
/* The outcome of the first try of <r>'s send: <k> bytes, or -errno. */
static void send_result(struct em_epoll *e, int fd, struct efd *r, long k)
{
	struct esend *s = r->snd;
	if (k < 0) {
		if (k == -EINTR) {
			r->writable = true;
			mark_run(e, fd, r);
		} else if (k == -EAGAIN || k == -EWOULDBLOCK) {
			r->writable = false;
		} else {
			send_done(e, r, (int32_t)k);
		}
		return;
	}
	s->done = (uint32_t)k;
	iov_advance(s, (size_t)k);
	if (s->iov_i == s->n_iov || !s->all)
		send_done(e, r, (int32_t)k);
	else
		r->writable = false;
}

static void send_try(struct em_epoll *e, int fd, struct efd *r)
{
	struct esend *s = r->snd;
	s->tried = true;
	ssize_t k;
	if (s->n_iov == 1) {
		k = send(fd, s->iov[0].iov_base, s->iov[0].iov_len, s->flags);
	} else {
		struct msghdr mh = {.msg_iov = s->iov, .msg_iovlen = s->n_iov};
		k = sendmsg(fd, &mh, s->flags);
	}
	send_result(e, fd, r, k < 0 ? -errno : k);
}

/* Sends wait for the end of the turn, as SQEs wait for the next submit: the
 * sends of a turn then go one after another, so that a peer woken by the
 * first finds the next ones' bytes when it runs, instead of one wake-up
 * (and, on a shared core, one preemption of this thread) per send. */
static void send_start(struct em_epoll *e, int fd, const struct iovec *v, unsigned n, int flags,
                       uint64_t ud)
{
	int rc;
	struct efd *r = armable(e, fd, &rc);
	if (!r) {
		push(e, ud, rc, 0);
		return;
	}
	EM_ASSERT(!r->snd && n <= EM_EPOLL_IOV);
	if (e->n_pend == e->cap_pend) {
		unsigned c = e->cap_pend ? e->cap_pend * 2 : 256;
		int *a = realloc(e->pend, c * sizeof(*a));
		if (!a) {
			push(e, ud, -ENOMEM, 0);
			return;
		}
		e->pend = a;
		e->cap_pend = c;
	}
	struct esend *s = e->send_free;
	if (s) {
		e->send_free = s->next;
		e->n_send_free--;
	} else if (!(s = malloc(sizeof(*s)))) {
		push(e, ud, -ENOMEM, 0);
		return;
	}
	s->ud = ud;
	s->all = flags & MSG_WAITALL;
	s->flags = (flags & ~MSG_WAITALL) | MSG_DONTWAIT;
	s->tried = false;
	s->done = 0;
	s->iov_i = 0;
	s->n_iov = n;
	memcpy(s->iov, v, n * sizeof(*v));
	r->snd = s;
	e->pend[e->n_pend++] = fd;
}

/* Reaps <n> completions of sends, in <ev> when the ring is not read. */
static void aio_reap(struct em_epoll *e, unsigned n)
{
	struct aio_ring_hdr *rg = (struct aio_ring_hdr *)(uintptr_t)e->aio;
	struct io_event ev[AIO_BATCH];
	unsigned got = 0;
	while (got < n) {
		const struct io_event *v;
		unsigned k;
		unsigned head = rg->head, tail = __atomic_load_n(&rg->tail, __ATOMIC_ACQUIRE);
		if (e->aio_ring && head != tail && head < rg->nr && tail < rg->nr) {
			/* Up to the ring's end; the rest on the next round. */
			k = (tail > head ? tail : rg->nr) - head;
			v = rg->events + head;
		} else {
			/* Socket writes complete within io_submit: this does
			 * not block. */
			long m = syscall(SYS_io_getevents, e->aio, 1L, (long)(n - got), ev, NULL);
			if (m <= 0) {
				EM_ASSERT(m == -1 && errno == EINTR);
				continue;
			}
			k = (unsigned)m;
			v = ev;
			head = UINT32_MAX;
		}
		for (unsigned j = 0; j < k; j++) {
			int fd = (int)v[j].data;
			struct efd *r = rec_get(e, fd);
			EM_ASSERT(r && r->snd);
			send_result(e, fd, r, (long)v[j].res);
		}
		if (head != UINT32_MAX)
			__atomic_store_n(&rg->head, (head + k) % rg->nr, __ATOMIC_RELEASE);
		got += k;
	}
}

/* Submits the untried sends of e->pend from <i> on, up to AIO_BATCH of
 * them, in one io_submit, and hands out their results. Returns the index
 * after the last one it took (those the kernel refused were tried with
 * send(2)). */
static unsigned aio_flush(struct em_epoll *e, unsigned i)
{
	unsigned n = 0;
	for (; i < e->n_pend && n < AIO_BATCH; i++) {
		int fd = e->pend[i];
		struct efd *r = rec_get(e, fd);
		if (!r || !r->snd || r->snd->tried)
			continue;
		struct esend *s = r->snd;
		/* A write(2) is a send(2) of MSG_DONTWAIT on a non-blocking
		 * socket, and with SIGPIPE ignored also of MSG_NOSIGNAL. */
		if (!r->nb || (s->flags & ~(MSG_DONTWAIT | MSG_NOSIGNAL))) {
			send_try(e, fd, r);
			continue;
		}
		s->tried = true;
		struct iocb *cb = &e->cbs[n];
		*cb = (struct iocb){.aio_data = (uint64_t)fd,
		                    .aio_fildes = (uint32_t)fd,
		                    .aio_lio_opcode = IOCB_CMD_PWRITE,
		                    .aio_buf = (uint64_t)(uintptr_t)s->iov[0].iov_base,
		                    .aio_nbytes = s->iov[0].iov_len};
		if (s->n_iov > 1) {
			cb->aio_lio_opcode = IOCB_CMD_PWRITEV;
			cb->aio_buf = (uint64_t)(uintptr_t)s->iov;
			cb->aio_nbytes = s->n_iov;
		}
		e->cbp[n++] = cb;
	}
	long m = n ? syscall(SYS_io_submit, e->aio, (long)n, e->cbp) : 0;
	if (m < 0)
		m = 0;
	if (m)
		aio_reap(e, (unsigned)m);
	for (unsigned k = (unsigned)m; k < n; k++) {
		int fd = (int)e->cbs[k].aio_data;
		send_try(e, fd, rec_get(e, fd));
	}
	return i;
}

/* The first tries of the sends submitted since the last turn. A descriptor
 * whose send was cancelled (or that was closed) since has none untried. */
static void send_flush(struct em_epoll *e)
{
	unsigned i = 0;
	while (e->aio && i < e->n_pend)
		i = aio_flush(e, i);
	for (; i < e->n_pend; i++) {
		struct efd *r = rec_get(e, e->pend[i]);
		if (r && r->snd && !r->snd->tried)
			send_try(e, e->pend[i], r);
	}
	e->n_pend = 0;
}

void em_epoll_send(struct em_epoll *e, int fd, const void *p, uint32_t len, int flags, uint64_t ud)
{
	struct iovec v = {(void *)(uintptr_t)p, len};
	send_start(e, fd, &v, 1, flags, ud);
}

void em_epoll_sendmsg(struct em_epoll *e, int fd, const struct msghdr *mh, int flags, uint64_t ud)
{
	send_start(e, fd, mh->msg_iov, (unsigned)mh->msg_iovlen, flags, ud);
}

void em_epoll_connect(struct em_epoll *e, int fd, const struct sockaddr *sa, socklen_t sl,
                      uint32_t timeout_ms, uint64_t ud, uint64_t ud_timeout)
{
	struct efd *r = rec(e, fd);
	int rc = -ENOMEM;
	if (!r)
		goto fail;
	if (!r->nb) {
		int fl = fcntl(fd, F_GETFL);
		if (fl == -1 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1) {
			rc = -errno;
			goto fail;
		}
		r->nb = true;
	}
	/* Registered after the connect starts: a socket not yet connecting
	 * reads as hung up and writable. */
	if (connect(fd, sa, sl) == -1 && errno != EINPROGRESS) {
		rc = -errno;
		goto fail;
	}
	if ((rc = reg(e, fd, r)))
		goto fail;
	struct eslow *x = slow(r, fd);
	if (!x) {
		rc = -ENOMEM;
		goto fail;
	}
	x->con = true;
	x->con_ud = ud;
	x->con_to_ud = ud_timeout;
	x->deadline_ms = em_now_ms() + timeout_ms;
	/* Mostly the latest deadline: the search from the tail ends at once. */
	struct em_dlist *after = e->conns.prev;
	while (after != &e->conns &&
	       em_container_of(after, struct eslow, cnode)->deadline_ms > x->deadline_ms)
		after = after->prev;
	x->cnode.prev = after;
	x->cnode.next = after->next;
	after->next->prev = &x->cnode;
	after->next = &x->cnode;
	/* An edge that came before the registration was seen by it. */
	if (r->writable)
		mark_run(e, fd, r);
	return;
fail:
	push(e, ud, rc, 0);
	push(e, ud_timeout, -ECANCELED, 0);
}

void em_epoll_shutdown(struct em_epoll *e, int fd, int how, uint64_t ud)
{
	/* After the bytes of a send submitted before it. */
	struct efd *r = rec_get(e, fd);
	if (r && r->snd && !r->snd->tried)
		send_try(e, fd, r);
	push(e, ud, shutdown(fd, how) == -1 ? -errno : 0, 0);
}

void em_epoll_cancel(struct em_epoll *e, int fd, uint64_t target, uint64_t ud)
{
	struct efd *r = rec_get(e, fd);
	int32_t res = -ENOENT;
	if (r && r->recv && r->recv_ud == target) {
		r->recv = 0;
		push(e, target, -ECANCELED, 0);
		res = 0;
	} else if (r && r->x && r->x->acc && r->x->acc_ud == target) {
		r->x->acc = false;
		push(e, target, -ECANCELED, 0);
		res = 0;
	}
	push(e, ud, res, 0);
}

void em_epoll_cancel_fd(struct em_epoll *e, int fd, uint64_t ud)
{
	struct efd *r = rec_get(e, fd);
	int32_t n = 0;
	if (r) {
		if (r->recv) {
			r->recv = 0;
			push(e, r->recv_ud, -ECANCELED, 0);
			n++;
		}
		struct eslow *x = r->x;
		if (x && x->acc) {
			x->acc = false;
			push(e, x->acc_ud, -ECANCELED, 0);
			n++;
		}
		if (x && x->rd) {
			x->rd = false;
			push(e, x->rd_ud, -ECANCELED, 0);
			n++;
		}
		if (r->snd) {
			send_done(e, r, r->snd->done ? (int32_t)r->snd->done : -ECANCELED);
			n++;
		}
		if (x && x->con) {
			uint64_t cud = x->con_ud, to = x->con_to_ud;
			con_over(r);
			push(e, cud, -ECANCELED, 0);
			push(e, to, -ECANCELED, 0);
			n++;
		}
	}
	push(e, ud, n ? n : -ENOENT, 0);
}

void em_epoll_timeout(struct em_epoll *e, uint32_t ms, uint64_t ud)
{
	e->tick_on = true;
	e->tick_at = em_now_ms() + ms;
	e->tick_ud = ud;
}

void em_epoll_close(struct em_epoll *e, int fd)
{
	struct efd *r = rec_get(e, fd);
	if (r)
		forget(e, r);
	close(fd);
}

/* ---- the wait ---- */

/* Turns in a row that may hand out completions already queued (sends done
 * at once, the runs of ready descriptors) without asking the kernel for
 * new readiness: saves an epoll_wait per turn under load while every
 * descriptor still has its turn soon. */
#define SKIP_MAX 4u

bool em_epoll_ready(const struct em_epoll *e)
{
	return e->q_tail != e->q_head || e->n_run || e->n_pend;
}

bool em_epoll_aio(const struct em_epoll *e)
{
	return e->aio != 0;
}

unsigned em_epoll_nfds(const struct em_epoll *e)
{
	return e->nfds;
}

static void run_list(struct em_epoll *e)
{
	unsigned n = e->n_run;
	int *l = e->run;
	e->run = e->run2;
	e->run2 = l;
	e->n_run = 0;
	for (unsigned i = 0; i < n; i++) {
		struct efd *r = rec_get(e, l[i]);
		if (r && r->queued) {
			r->queued = false;
			run_fd(e, l[i], r);
		}
	}
}

static void run_timers(struct em_epoll *e, uint64_t now)
{
	if (e->tick_on && now >= e->tick_at) {
		e->tick_on = false;
		push(e, e->tick_ud, -ETIME, 0);
	}
	while (!em_dlist_empty(&e->conns)) {
		struct eslow *x = em_container_of(e->conns.next, struct eslow, cnode);
		if (x->deadline_ms > now)
			break;
		uint64_t ud = x->con_ud, to = x->con_to_ud;
		con_over(rec_get(e, x->fd));
		push(e, ud, -ECANCELED, 0);
		push(e, to, -ETIME, 0);
	}
}

/* Milliseconds until the next timer, -1 for none. */
static int next_timer(const struct em_epoll *e, uint64_t now)
{
	uint64_t at = UINT64_MAX;
	if (e->tick_on)
		at = e->tick_at;
	if (!em_dlist_empty(&e->conns)) {
		uint64_t c = em_container_of(e->conns.next, struct eslow, cnode)->deadline_ms;
		at = c < at ? c : at;
	}
	if (at == UINT64_MAX)
		return -1;
	return at <= now ? 0 : (int)EM_MIN(at - now, (uint64_t)60000);
}

unsigned em_epoll_wait(struct em_epoll *e, struct em_cqe *out, unsigned max, bool block)
{
	if (e->n_pend)
		send_flush(e);
	if (e->n_run)
		run_list(e);
	int timeout = 0;
	bool queued = e->q_tail != e->q_head;
	if (block && !queued && !e->n_run)
		timeout = next_timer(e, em_now_ms());
	struct epoll_event ev[EVENTS];
	int n = 0;
	if (queued && e->skips < SKIP_MAX) {
		e->skips++;
	} else {
		e->skips = 0;
		n = epoll_wait(e->epfd, ev, EVENTS, timeout);
	}
	for (int i = 0; i < n; i++) {
		int fd = (int)ev[i].data.u64;
		struct efd *r = rec_get(e, fd);
		if (!r || !r->added)
			continue;
		uint32_t m = ev[i].events;
		if (m & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
			r->hup = true;
		if (m & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
			r->readable = true;
		if (m & (EPOLLOUT | EPOLLHUP | EPOLLERR))
			r->writable = true;
		run_fd(e, fd, r);
	}
	run_timers(e, em_now_ms());
	unsigned k = 0;
	while (k < max && e->q_head != e->q_tail)
		out[k++] = e->q[e->q_head++ & (e->q_cap - 1)];
	return k;
}

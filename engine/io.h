/* Internal to engine/: the operations a worker submits, on its backend.
 *
 * With io_uring (the default) each call prepares an SQE of the worker's
 * ring, submitted with the next em_worker_submit or loop turn; with epoll
 * (io_backend "epoll", or "auto" where io_uring_setup fails) it goes to
 * the worker's em_epoll (engine/io_epoll.h), which carries it out when its
 * descriptor is ready. Either way the operation completes later, never
 * during the call, with a completion of the same user data, result and
 * flags that the worker's dispatch hands to the same handlers. The data an
 * operation points at must stay valid until its completion.
 *
 * A descriptor that had an operation submitted is closed with em_io_close,
 * and only once nothing is in flight on it. */
#ifndef EM_ENGINE_IO_H
#define EM_ENGINE_IO_H

#include <unistd.h>

#include "engine/io_epoll.h"
#include "engine/worker.h"

/* Multishot accept on listener <fd>: each connection completes with its
 * descriptor and IORING_CQE_F_MORE; without the flag the accept ended. */
static inline void em_io_accept(struct em_worker *w, int fd, uint64_t ud)
{
	if (w->epoll) {
		em_epoll_accept(w->ep, fd, ud);
		return;
	}
	struct io_uring_sqe *sqe = em_worker_sqe(w);
	io_uring_prep_multishot_accept(sqe, fd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, ud);
}

/* A recv of <fd> into a buffer of group <bgid>, whose buffers <rb> holds:
 * one buffer, or with <multishot> one completion per buffer until it ends
 * (IORING_CQE_F_MORE while it goes on); with <cap> (io_uring only, where
 * the kernel supports it, see EM_RECV_CAP) a multishot recv ends by itself
 * after that many bytes. */
static inline void em_io_recv(struct em_worker *w, int fd, struct em_bufring *rb, uint16_t bgid,
                              bool multishot, uint32_t cap, uint64_t ud)
{
	if (w->epoll) {
		em_epoll_recv(w->ep, fd, rb, multishot, ud);
		return;
	}
	struct io_uring_sqe *sqe = em_worker_sqe(w);
	if (multishot) {
		io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
		/* The total byte cap shares the SQE field of file_index. */
		if (cap)
			sqe->file_index = cap;
	} else {
		io_uring_prep_recv(sqe, fd, NULL, 0, 0);
	}
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = bgid;
	io_uring_sqe_set_data64(sqe, ud);
}

/* One read of at most <len> bytes of <fd> (the wake eventfd) into <buf>. */
static inline void em_io_read(struct em_worker *w, int fd, void *buf, uint32_t len, uint64_t ud)
{
	if (w->epoll) {
		em_epoll_read(w->ep, fd, buf, len, ud);
		return;
	}
	struct io_uring_sqe *sqe = em_worker_sqe(w);
	io_uring_prep_read(sqe, fd, buf, len, 0);
	io_uring_sqe_set_data64(sqe, ud);
}

/* Sends <len> bytes at <p> on <fd> with send(2) <flags> (MSG_WAITALL: the
 * completion comes once all went, or with the error that stopped them). */
static inline void em_io_send(struct em_worker *w, int fd, const void *p, uint32_t len, int flags,
                              uint64_t ud)
{
	if (w->epoll) {
		em_epoll_send(w->ep, fd, p, len, flags, ud);
		return;
	}
	struct io_uring_sqe *sqe = em_worker_sqe(w);
	io_uring_prep_send(sqe, fd, p, len, flags);
	io_uring_sqe_set_data64(sqe, ud);
}

/* As em_io_send for the vectors of <mh>, a slot of w->sendv (at most
 * EM_SENDV_IOV vectors): the slot is free again after the next
 * em_worker_submit (epoll: at once). */
static inline void em_io_sendmsg(struct em_worker *w, int fd, struct msghdr *mh, int flags,
                                 uint64_t ud)
{
	if (w->epoll) {
		em_epoll_sendmsg(w->ep, fd, mh, flags, ud);
		w->n_sendv = 0;
		return;
	}
	struct io_uring_sqe *sqe = em_worker_sqe(w);
	io_uring_prep_sendmsg(sqe, fd, mh, flags);
	io_uring_sqe_set_data64(sqe, ud);
}

/* shutdown(SHUT_WR) of <fd>. */
static inline void em_io_shutdown(struct em_worker *w, int fd, uint64_t ud)
{
	if (w->epoll) {
		em_epoll_shutdown(w->ep, fd, SHUT_WR, ud);
		return;
	}
	struct io_uring_sqe *sqe = em_worker_sqe(w);
	io_uring_prep_shutdown(sqe, fd, SHUT_WR);
	io_uring_sqe_set_data64(sqe, ud);
}

/* Cancels the operation of user data <target> (a recv or accept on <fd>):
 * it completes with -ECANCELED, the cancel itself with <ud>. */
static inline void em_io_cancel(struct em_worker *w, int fd, uint64_t target, uint64_t ud)
{
	if (w->epoll) {
		em_epoll_cancel(w->ep, fd, target, ud);
		return;
	}
	struct io_uring_sqe *sqe = em_worker_sqe(w);
	io_uring_prep_cancel64(sqe, target, 0);
	io_uring_sqe_set_data64(sqe, ud);
}

/* Cancels every operation on <fd>; the cancel completes with <ud>. */
static inline void em_io_cancel_fd(struct em_worker *w, int fd, uint64_t ud)
{
	if (w->epoll) {
		em_epoll_cancel_fd(w->ep, fd, ud);
		return;
	}
	struct io_uring_sqe *sqe = em_worker_sqe(w);
	io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
	io_uring_sqe_set_data64(sqe, ud);
}

/* A timer of <ts> (which must live until it fires), completing with
 * -ETIME. One at a time per worker (its tick). */
static inline void em_io_timeout(struct em_worker *w, struct __kernel_timespec *ts, uint64_t ud)
{
	if (w->epoll) {
		em_epoll_timeout(w->ep, (uint32_t)(ts->tv_sec * 1000 + ts->tv_nsec / 1000000), ud);
		return;
	}
	struct io_uring_sqe *sqe = em_worker_sqe(w);
	io_uring_prep_timeout(sqe, ts, 0, 0);
	io_uring_sqe_set_data64(sqe, ud);
}

/* Closes <fd>, on which nothing may be in flight any more. */
static inline void em_io_close(struct em_worker *w, int fd)
{
	if (w->epoll && w->ep)
		em_epoll_close(w->ep, fd);
	else
		close(fd);
}

#endif

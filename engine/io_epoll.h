/* The epoll backend of a worker: the operations the worker would submit to
 * an io_uring, carried out when their descriptor is ready, with the results
 * handed back as completions of the same shape as io_uring's CQEs.
 *
 * Each operation is "submitted" by a call below and completes later: its
 * completion is never delivered during the call, only by em_epoll_wait, in
 * submission order for the operations that complete at once. A completion
 * carries the operation's user data, its result (bytes, a descriptor, 0, or
 * -errno; -ECANCELED when cancelled) and io_uring's flags: IORING_CQE_F_MORE
 * while a multishot operation stays armed, IORING_CQE_F_BUFFER with the
 * buffer id above IORING_CQE_BUFFER_SHIFT when a recv took a buffer. So the
 * worker's handlers run unchanged whichever backend feeds them.
 *
 * Descriptors are registered edge-triggered once, at their first operation,
 * and made non-blocking then. Every descriptor an operation was submitted on
 * must be closed with em_epoll_close (which forgets its state before the
 * number can be reused), and only once no operation on it is in flight.
 * Sends wait for the next em_epoll_wait, as SQEs wait for the next submit,
 * and the sends of a turn then go to the kernel together: in one io_submit
 * of socket writes where Linux AIO works (io_setup) and SIGPIPE is ignored
 * when the backend is made (edgemesh's main ignores it; the environment
 * variable EDGEMESH_EPOLL_NO_AIO turns this off), else one send(2) each.
 * The data must stay valid until the completion, as with io_uring; what
 * the socket did not take waits for EPOLLOUT. A shutdown goes after the
 * bytes of a send submitted before it.
 * Receives take buffers from a plain em_bufring (em_bufring_init without a
 * ring): the same buffers and the same bounds as the io_uring groups.
 *
 * One thread (the worker) calls every function of one em_epoll. */
#ifndef EM_ENGINE_IO_EPOLL_H
#define EM_ENGINE_IO_EPOLL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "engine/bufring.h"

/* A completion: io_uring's user_data, res and flags. */
struct em_cqe {
	uint64_t ud;
	int32_t res;
	uint32_t flags;
};

/* Vectors one em_epoll_sendmsg may carry. */
#define EM_EPOLL_IOV 16u
/* Buffers a multishot recv (and descriptors a multishot accept) takes per
 * readiness before the other ready descriptors have their turn; the rest
 * is read on the next turn of the loop. */
#define EM_EPOLL_BUDGET 16u

struct em_epoll;

/* A new backend (its epoll instance). Returns 0 or -errno. */
int em_epoll_new(struct em_epoll **out);

/* Frees <e>, its epoll instance and any state left; closes no descriptor
 * but its own. NULL is fine. */
void em_epoll_free(struct em_epoll *e);

/* Multishot accept on listening socket <fd>: each connection completes with
 * its descriptor (non-blocking, close-on-exec) and IORING_CQE_F_MORE; an
 * error (EMFILE, ...) completes without it and ends the accept. */
void em_epoll_accept(struct em_epoll *e, int fd, uint64_t ud);

/* Receive on <fd> into buffers of <rb>: one completion with the bytes and
 * the buffer (which the caller then owns and gives back with
 * em_bufring_put), and with <multishot> more of them, flagged
 * IORING_CQE_F_MORE, until EOF (0), an error, -ENOBUFS (<rb> had no free
 * buffer) or a cancel ends it without the flag. At most one recv per
 * descriptor. */
void em_epoll_recv(struct em_epoll *e, int fd, struct em_bufring *rb, bool multishot, uint64_t ud);

/* One read(2) of at most <len> bytes into <buf> (an eventfd), once <fd> is
 * readable. */
void em_epoll_read(struct em_epoll *e, int fd, void *buf, uint32_t len, uint64_t ud);

/* Sends <len> bytes at <p> on <fd> with send(2) <flags> (MSG_NOSIGNAL and
 * MSG_WAITALL; any other flag makes it a send(2) of its own). With MSG_WAITALL
 * the completion comes once all of them went (or with the error that
 * stopped them, or the bytes sent before a cancel); without it, with what
 * the first send that took anything took. At most one send per
 * descriptor. */
void em_epoll_send(struct em_epoll *e, int fd, const void *p, uint32_t len, int flags, uint64_t ud);

/* As em_epoll_send, for the vectors of <mh> (at most EM_EPOLL_IOV; the
 * header and vectors are copied when needed, so the caller may reuse them
 * once the call returns; the bytes must stay). */
void em_epoll_sendmsg(struct em_epoll *e, int fd, const struct msghdr *mh, int flags, uint64_t ud);

/* Connects <fd> to <sa> (which must live until the completion) with a
 * timeout of <timeout_ms>, as io_uring's connect with a linked timeout:
 * the connect completes with <ud> (0, -errno, or -ECANCELED when the
 * timeout fired or it was cancelled), then the timeout with <ud_timeout>
 * (-ETIME when it fired, else -ECANCELED). */
void em_epoll_connect(struct em_epoll *e, int fd, const struct sockaddr *sa, socklen_t sl,
                      uint32_t timeout_ms, uint64_t ud, uint64_t ud_timeout);

/* shutdown(2) of <fd> with <how>; completes with 0 or -errno. */
void em_epoll_shutdown(struct em_epoll *e, int fd, int how, uint64_t ud);

/* Cancels the recv or accept of user data <target> on <fd>: it completes
 * with -ECANCELED, then the cancel with 0, or with -ENOENT when no such
 * operation was armed. */
void em_epoll_cancel(struct em_epoll *e, int fd, uint64_t target, uint64_t ud);

/* Cancels every operation on <fd> (each completes with -ECANCELED), then
 * completes with how many there were, or -ENOENT for none. */
void em_epoll_cancel_fd(struct em_epoll *e, int fd, uint64_t ud);

/* A timer: completes with -ETIME after <ms> milliseconds. One at a time
 * (the worker's tick). */
void em_epoll_timeout(struct em_epoll *e, uint32_t ms, uint64_t ud);

/* Forgets <fd>'s state and closes it. Nothing may be in flight on it. */
void em_epoll_close(struct em_epoll *e, int fd);

/* True when completions wait, so that em_epoll_wait will not block. */
bool em_epoll_ready(const struct em_epoll *e);

/* Carries out what the ready descriptors and due timers allow and returns
 * up to <max> completions in <out>. With <block>, and none waiting, it
 * first waits until a descriptor is ready or a timer is due (and with no
 * timer armed, indefinitely). */
unsigned em_epoll_wait(struct em_epoll *e, struct em_cqe *out, unsigned max, bool block);

/* True when <e> hands a turn's sends to the kernel with one io_submit. */
bool em_epoll_aio(const struct em_epoll *e);

/* Descriptors <e> holds state for (tests). */
unsigned em_epoll_nfds(const struct em_epoll *e);

#endif

/* Accepted clients: original destination, sniffing, choosing the mode. */
#include "engine/client.h"

#include <unistd.h>

#include "engine/capture.h"
#include "engine/http.h"
#include "engine/relay.h"
#include "engine/route.h"
#include "proto/log.h"
#include "proto/sniff.h"

/* The client's first bytes (or the sniff timeout with EM_NO_BUF). */
static void start_conn(struct em_worker *w, struct em_sock *c, uint32_t bid, uint32_t len)
{
	em_sock_timer(w, c, EM_T_NONE, 0);
	/* The connection's Service port does not change with its requests:
	 * its bytes, and what precedes routing, count on it. */
	const struct em_svc_port *sp = em_route_lookup(c);
	c->mslot = sp ? sp->mslot : EM_SVCSTAT_SINK;
	em_svcstat_add(&em_worker_svc(w, c->mslot)->connections, 1);
	/* What came before the sniff ended was counted in the sink. */
	if (bid != EM_NO_BUF)
		em_svcstat_add(&em_worker_svc(w, c->mslot)->rx_bytes, len);
	if (bid != EM_NO_BUF) {
		struct em_sniff_result r;
		int p = em_sniff(em_worker_buf(w, (uint16_t)bid), len, EM_SNIFF_F_FINAL, &r);
		if (p == EM_SNIFF_HTTP1) {
			em_http_start(w, c, (uint16_t)bid, len);
			return;
		}
	}
	em_relay_start(w, c, sp, bid, len);
}

static void sniff_recv(struct em_worker *w, struct em_sock *c, uint16_t bid, uint32_t len)
{
	start_conn(w, c, bid, len);
}

static void sniff_expire(struct em_worker *w, struct em_sock *c, enum em_timer_class tc)
{
	if (tc == EM_T_SNIFF)
		start_conn(w, c, EM_NO_BUF, 0);
	else
		em_sock_close(w, c, false);
}

static void sniff_eof(struct em_worker *w, struct em_sock *c)
{
	em_sock_close(w, c, false);
}

static const struct em_sock_ops sniff_ops = {
        .name = "sniff",
        .recv = sniff_recv,
        .eof = sniff_eof,
        .expire = sniff_expire,
};

/* Sniffs new client <c> (open), or starts it at once without a sniff
 * timeout. */
static void sniff_start(struct em_worker *w, struct em_sock *c)
{
	if (w->sniff_ms == 0) {
		start_conn(w, c, EM_NO_BUF, 0);
		if (!(c->flags & EM_SF_CLOSING))
			em_sock_arm_recv(w, c);
		return;
	}
	em_sock_timer(w, c, EM_T_SNIFF, w->sniff_ms);
	em_sock_arm_recv(w, c);
}

/* A client made of <fd>, the local end of a socketpair, as if accepted on
 * <listener>; <svc_key> for EM_LISTENER_SERVED. */
static void adopt(struct em_worker *w, int fd, uint16_t listener, uint64_t svc_key)
{
	struct em_sock *c = em_sock_alloc(w, &sniff_ops);
	if (!c) {
		close(fd);
		return;
	}
	c->fd = fd;
	c->family = AF_UNIX;
	c->flags = EM_SF_CLIENT;
	c->listener = listener;
	c->svc_key = svc_key;
	c->state = EM_SK_OPEN;
	sniff_start(w, c);
}

void em_client_serve(struct em_worker *w, int fd, const struct em_svc_port *sp)
{
	adopt(w, fd, EM_LISTENER_SERVED, sp->key);
}

void em_client_take(struct em_worker *w, int fd, uint16_t listener)
{
	adopt(w, fd, listener, 0);
}

void em_client_accept(struct em_worker *w, struct em_listener *l, int fd)
{
	struct em_sock *c = em_sock_alloc(w, &sniff_ops);
	if (!c) {
		close(fd);
		return;
	}
	c->fd = fd;
	em_sock_bufsizes(fd, w->client_sndbuf, w->client_rcvbuf);
	c->flags = EM_SF_CLIENT;
	c->listener = l->idx;
	c->state = EM_SK_OPEN;
	if (l->idx == EM_LISTENER_CAPTURE) {
		int rc = em_capture_original_dst(fd, 0, &c->dst);
		if (rc < 0) {
			EM_DEBUG("engine", "original destination: %s", strerror(-rc));
			em_sock_close(w, c, true);
			return;
		}
	}
	sniff_start(w, c);
}

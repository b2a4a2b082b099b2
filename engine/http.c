/* HTTP/1.x mode: per-request routing, upstream pools, response framing. */
#include "engine/http.h"

#include <stdio.h>
#include <stdlib.h>

#include "engine/http_page.h"
#include "engine/http_pool.h"
#include "engine/relay.h"
#include "engine/route.h"
#include "engine/router.h"
#include "engine/tunnel.h"
#include "proto/http1.h"
#include "proto/log.h"

/* A head that does not fit one ring buffer is assembled here; the parser
 * decides within this many bytes. Rare, so allocated on demand. */
#define EM_HTTP_HBUF (EM_HTTP1_MAX_LINE + 2 + EM_HTTP1_MAX_HEAD)

/* Answers to requests over their QPS limit a client may leave unread before
 * it is reset: pipelined requests must not take the worker's queue entries. */
#define EM_HTTP_429_QUEUED 64u

/* In place of a ring buffer id: the bytes are in a copy. */
#define FROM_COPY EM_NO_BUF

/* Phases of a client. H_DISCARD: the response came before the request body
 * ended, what is left of the body is read and dropped. H_LINGER: answered,
 * to be closed; input is read and dropped (see EM_HTTP_LINGER_MS). */
enum { H_HEAD = 0, H_EXCHANGE, H_DISCARD, H_LINGER };

struct em_http {
	struct em_http1_parser rqp, rsp;
	struct em_http1_body rqb, rsb;
	struct em_sock *up; /* upstream of the current exchange */
	char *hbuf;         /* request head being assembled */
	char *rbuf;         /* response head being assembled */
	char *pbuf;         /* bytes after the current request (pipelining) */
	uint32_t hlen, rlen, plen;
	uint32_t dropped; /* input bytes dropped in H_DISCARD or H_LINGER */
	uint16_t req_flags;
	uint8_t phase;
	bool req_done, resp_head, keepalive, up_dirty;
	bool continued; /* a 100 (Continue) went to the client for this request */
	uint64_t rule_key; /* Router: the Rule of the call under way, 0 if none */
	/* The connection was taken against the QPS limit of a non-HTTP port
	 * (em_svc_port.http false counts connections, not requests). */
	bool admitted;
	/* The counter slot of the current request's Service port
	 * (store/svcstat.h), and when its head went to the upstream (ns). */
	uint32_t mslot;
	uint64_t sent_ns;
	struct em_http *next_free;
};

/* Per-worker state of the mode (w->http): the free list of exchange
 * states and the parse scratch. */
struct em_http_worker {
	struct em_http *free;
	struct em_http1_head head;
};

static void http_worker_free(struct em_worker *w)
{
	struct em_http_worker *hw = w->http;
	if (!hw)
		return;
	while (hw->free) {
		struct em_http *h = hw->free;
		hw->free = h->next_free;
		free(h);
	}
	free(hw);
	w->http = NULL;
}

static struct em_http *http_alloc(struct em_worker *w)
{
	struct em_http *h = w->http->free;
	if (h) {
		w->http->free = h->next_free;
		memset(h, 0, sizeof(*h));
		return h;
	}
	return calloc(1, sizeof(*h));
}

static const struct em_sock_ops client_ops, up_ops;

/* Frees the exchange state of client <c>. */
static void http_release(struct em_worker *w, struct em_sock *c)
{
	struct em_http *h = c->ctx;
	c->ctx = NULL;
	if (!h)
		return;
	if (h->up && h->up->ctx == h)
		h->up->ctx = NULL;
	em_router_report(h->rule_key, false, "the caller closed before the answer");
	h->rule_key = 0;
	free(h->hbuf);
	free(h->rbuf);
	free(h->pbuf);
	h->next_free = w->http->free;
	w->http->free = h;
}

/* Client <c> is between requests (nothing of the next one received): a
 * stopping worker may close it. */
static bool client_idle(const struct em_sock *c)
{
	const struct em_http *h = c->ctx;
	return h && h->phase == H_HEAD && h->hlen == 0;
}

/* Client <c> is to be closed once its queue is sent, gracefully (see
 * linger()); what it sends meanwhile is dropped. */
static bool linger(struct em_worker *w, struct em_sock *c);

static void linger_close(struct em_worker *w, struct em_sock *c)
{
	struct em_http *h = c->ctx;
	h->phase = H_LINGER;
	h->dropped = 0;
	c->flags |= EM_SF_CLOSE_AFTER;
	if (c->q_len == 0 && !(c->flags & EM_SF_SEND_BUSY))
		linger(w, c);
}

/* Client <c> (EM_SF_CLOSE_AFTER) has sent its whole queue. Returns true when
 * it closes gracefully (see EM_HTTP_LINGER_MS): its write side is then shut
 * and it stays open until the client closes, the time or byte bound is
 * reached, or an error. False: the caller closes it now. */
static bool linger(struct em_worker *w, struct em_sock *c)
{
	struct em_http *h = c->ctx;
	if (!h || h->phase != H_LINGER)
		return false;
	c->flags &= ~EM_SF_CLOSE_AFTER;
	if (c->flags & EM_SF_RD_EOF) {
		/* Nothing more can arrive: a plain close resets nothing. */
		em_sock_close(w, c, false);
		return true;
	}
	/* A close with unread input sends a reset, and the client's stack may
	 * then throw away the response before its reader saw it. */
	em_sock_shutdown(w, c);
	em_sock_timer(w, c, EM_T_LINGER, EM_HTTP_LINGER_MS);
	em_sock_maybe_rearm(w, c);
	return true;
}

/* Answers <page> on client <c> and closes it once sent. After part of a
 * response went out only a reset is honest. */
/* The status line's code of <page>. */
static unsigned page_status(enum em_http_page page)
{
	uint32_t len;
	const char *t = em_http_page(page, &len);
	unsigned s = 0;
	for (uint32_t i = 9; i < 12 && i < len && t[i] >= '0' && t[i] <= '9'; i++)
		s = s * 10 + (unsigned)(t[i] - '0');
	return s;
}

static void http_error(struct em_worker *w, struct em_sock *c, enum em_http_page page)
{
	struct em_http *h = c->ctx;
	if (!h->resp_head) {
		struct em_svcstat *st = em_worker_svc(w, h->mslot);
		/* A head that never made a request (malformed, too large,
		 * too slow) is counted as one here. */
		if (h->phase == H_HEAD)
			em_svcstat_add(&st->requests, 1);
		em_svcstat_status(st, page_status(page));
	}
	if (h->rule_key) {
		em_router_report(h->rule_key, false, em_http_page_reason(page));
		h->rule_key = 0;
	}
	h->phase = H_LINGER;
	h->dropped = 0;
	if (h->up) {
		struct em_sock *u = h->up;
		h->up = NULL;
		u->ctx = NULL;
		em_sock_close(w, u, true);
	}
	if (h->resp_head) {
		em_sock_close(w, c, true);
		return;
	}
	c->flags |= EM_SF_CLOSE_AFTER;
	em_sock_timer(w, c, EM_T_IDLE, w->idle_ms);
	uint32_t len;
	const char *text = em_http_page(page, &len);
	if (!em_sock_enqueue_static(w, c, text, len, NULL))
		em_sock_close(w, c, true);
}

static bool append(char **buf, uint32_t *len, const char *src, uint32_t n)
{
	if (!*buf && !(*buf = malloc(EM_HTTP_HBUF)))
		return false;
	if (n > EM_HTTP_HBUF - *len)
		return false;
	memcpy(*buf + *len, src, n);
	*len += n;
	return true;
}

static void head_from_copy(struct em_worker *w, struct em_sock *c);
static void next_request(struct em_worker *w, struct em_sock *c);
static void request_answered(struct em_worker *w, struct em_sock *c);
static struct em_sock *upstream_new(struct em_worker *w, const struct em_svc_port *sp,
                                    const struct em_endpoint *ep);

/* Takes an idle upstream of <ep> from the pool or connects a new one. */
static struct em_sock *upstream_get(struct em_worker *w, const struct em_svc_port *sp,
                                    const struct em_endpoint *ep)
{
	struct em_sock *u = em_http_pool_take(w, &ep->addr, &up_ops);
	if (u) {
		u->flags |= EM_SF_REPLAY;
		return u;
	}
	return upstream_new(w, sp, ep);
}

/* Upstream <u> (EM_SF_REPLAY: reused from the pool, no response byte yet)
 * failed: its backend had closed the idle connection as the request went
 * out. Moves the whole request (entries kept by the sends, then the queue)
 * to a new connection to an endpoint picked again, closes <u> and returns
 * true; false when no new upstream could be had (the caller fails as
 * before). The new connection is never reused, so a request is replayed
 * at most once, and its connect keeps the client's refused-retry budget. */
static bool replay(struct em_worker *w, struct em_sock *u)
{
	struct em_http *h = u->ctx;
	struct em_sock *c = u->peer;
	if (!(u->flags & EM_SF_REPLAY) || !h || !c || h->up != u || h->resp_head || h->rlen)
		return false;
	struct em_sock *n;
	if (c->listener == EM_LISTENER_ROUTER) {
		n = em_router_reopen(w, u, &up_ops);
	} else {
		const struct em_svc_port *sp = em_route_lookup(c);
		const struct em_endpoint *ep = sp ? em_route_pick(w, c, sp, NULL) : NULL;
		n = ep ? upstream_new(w, sp, ep) : NULL;
	}
	if (!n)
		return false;
	u->ctx = NULL;
	u->peer = NULL;
	h->up = n;
	n->ctx = h;
	c->peer = n;
	n->peer = c;
	/* Kept entries went out whole or in part: all is sent again from the
	 * start, then what was still queued. */
	uint16_t e = u->k_first, k = u->k_len;
	u->k_len = 0;
	u->flags &= ~EM_SF_REPLAY;
	w->cnt[EM_C_REPLAYS]++;
	while (k--) {
		uint16_t next = w->q_next[e];
		em_sock_enqueue(w, n, e, w->q_bytes[e]);
		e = next;
	}
	e = u->q_first;
	k = u->q_len;
	u->q_len = 0;
	u->q_first = u->q_last = EM_Q_NONE;
	u->q_off = 0;
	while (k--) {
		uint16_t next = w->q_next[e];
		em_sock_enqueue(w, n, e, w->q_bytes[e]);
		e = next;
	}
	em_sock_close(w, u, true);
	if (n->state == EM_SK_OPEN && !(n->flags & EM_SF_RECV_ARMED))
		em_sock_maybe_rearm(w, n);
	return true;
}

/* Connects a new upstream to <ep>: directly, or a socketpair end whose
 * other end is bridged to a tunnel stream (then it is open at once). */
static struct em_sock *upstream_new(struct em_worker *w, const struct em_svc_port *sp,
                                    const struct em_endpoint *ep)
{
	if (em_route_via_tunnel(ep))
		return em_tun_pair(w, sp, ep, &up_ops, false);
	struct em_sock *u = em_sock_alloc(w, &up_ops);
	if (!u)
		return NULL;
	if (em_route_connect(w, u, ep) < 0) {
		em_sock_release(w, u);
		return NULL;
	}
	return u;
}

/* A local endpoint would serve the current request of client <c> to <sp>,
 * whose service has a QPS limit: an HTTP port counts every request, other
 * ports their connection's first. True when it may go on; false with
 * <*retry_ns> the time until the next token. */
static bool admit(struct em_worker *w, struct em_sock *c, const struct em_svc_port *sp,
                  uint64_t *retry_ns)
{
	struct em_http *h = c->ctx;
	if (!sp->http && h->admitted)
		return true;
	if (!em_route_admit(w, sp, retry_ns))
		return false;
	h->admitted = true;
	return true;
}

/* Answers a request over its service's QPS limit (admit() refused it): an
 * HTTP port gets 429 with the seconds until the next token in Retry-After
 * and the connection goes on; another port's connection is reset, as a
 * relayed one would be. So is a client that does not read its answers. */
static void over_limit(struct em_worker *w, struct em_sock *c, const struct em_svc_port *sp,
                       uint64_t retry_ns)
{
	struct em_http *h = c->ctx;
	if (!sp->http || c->q_len >= EM_HTTP_429_QUEUED) {
		em_conn_close(w, c, true);
		return;
	}
	uint64_t secs = (retry_ns + 999999999u) / 1000000000u;
	uint32_t len;
	bool owned;
	const char *page = em_http_page_429(secs > UINT32_MAX ? UINT32_MAX : (uint32_t)secs,
	                                    h->keepalive, &len, &owned);
	if (h->req_flags & EM_HTTP1_F_HEAD) /* the head alone: no body answers HEAD */
		len = (uint32_t)(strstr(page, "\r\n\r\n") + 4 - page);
	/* A failed enqueue has freed an owned page already. */
	if (!page || !em_sock_enqueue_static(w, c, page, len, owned ? em_entry_free : NULL)) {
		em_conn_close(w, c, true);
		return;
	}
	h->resp_head = true;
	em_svcstat_status(em_worker_svc(w, h->mslot), 429);
	request_answered(w, c);
}

/* A request on the Router's listener: the head is rewritten for the edge
 * (em_router_route), so the bytes go out as a copy; the upstream, a stream
 * toward the edge, is kept for the next call to the same destination when
 * the exchange ends cleanly, as any upstream is. */
static void router_request(struct em_worker *w, struct em_sock *c, uint32_t bid, const char *base,
                           uint32_t hl, uint32_t fwd)
{
	struct em_http *h = c->ctx;
	char *out = NULL;
	uint32_t out_len = 0;
	enum em_http_page page;
	struct em_sock *u = em_router_route(w, &w->http->head, base, hl, fwd, &up_ops, &out,
	                                    &out_len, &h->rule_key, &page);
	if (bid != FROM_COPY)
		em_worker_buf_put(w, (uint16_t)bid);
	else {
		free(h->hbuf);
		h->hbuf = NULL;
	}
	if (!u) {
		http_error(w, c, page);
		return;
	}
	h->phase = H_EXCHANGE;
	h->up = u;
	u->ctx = h;
	c->peer = u;
	u->peer = c;
	em_sock_timer(w, c, EM_T_IDLE, w->idle_ms);
	/* The edge's deadline for its response head, on the upstream: the
	 * client's timer moves on with every byte it sends. */
	em_sock_timer(w, u, EM_T_IDLE, em_worker_config()->router.timeout_ms);
	if (!em_sock_enqueue_static(w, u, out, out_len, em_entry_free)) {
		em_conn_close(w, c, true);
		return;
	}
	if (u->state == EM_SK_OPEN && !(u->flags & EM_SF_RECV_ARMED))
		em_sock_maybe_rearm(w, u);
	em_sock_backpressure(w, c, u);
}

/* The request head is the first <hl> of <avail> bytes at <base>, which is
 * ring buffer <bid> or, with FROM_COPY, h->hbuf. */
static void start_request(struct em_worker *w, struct em_sock *c, uint32_t bid, const char *base,
                          uint32_t hl, uint32_t avail)
{
	struct em_http *h = c->ctx;
	const struct em_http1_head *hd = &w->http->head;
	h->req_flags = hd->flags;
	h->keepalive = (hd->flags & EM_HTTP1_F_KEEPALIVE) && !w->stopping;
	em_http1_body_init(&h->rqb, hd);
	ssize_t n = em_http1_body_feed(&h->rqb, base + hl, avail - hl);
	if (n < 0) {
		if (bid != FROM_COPY)
			em_worker_buf_put(w, (uint16_t)bid);
		http_error(w, c, EM_PAGE_400);
		return;
	}
	uint32_t fwd = hl + (uint32_t)n;
	h->req_done = em_http1_body_done(&h->rqb);
	if (fwd < avail && !append(&h->pbuf, &h->plen, base + fwd, avail - fwd)) {
		if (bid != FROM_COPY)
			em_worker_buf_put(w, (uint16_t)bid);
		http_error(w, c, EM_PAGE_431);
		return;
	}
	w->cnt[EM_C_REQUESTS]++;
	c->retries = 0;
	h->resp_head = false;
	h->up_dirty = false;
	h->continued = false;
	memset(&h->rsp, 0, sizeof(h->rsp));
	h->rlen = 0;

	if (c->listener == EM_LISTENER_ROUTER) {
		router_request(w, c, bid, base, hl, fwd);
		return;
	}
	const struct em_svc_port *sp = em_route_lookup(c);
	h->mslot = sp ? sp->mslot : c->mslot;
	em_svcstat_add(&em_worker_svc(w, h->mslot)->requests, 1);
	const struct em_endpoint *ep = sp ? em_route_pick(w, c, sp, NULL) : NULL;
	uint64_t retry_ns = 0;
	if (EM_UNLIKELY(ep && sp->qps) && !em_route_via_tunnel(ep) && !admit(w, c, sp, &retry_ns)) {
		if (bid != FROM_COPY)
			em_worker_buf_put(w, (uint16_t)bid);
		over_limit(w, c, sp, retry_ns);
		return;
	}
	struct em_sock *u = ep ? upstream_get(w, sp, ep) : NULL;
	if (!u) {
		if (bid != FROM_COPY)
			em_worker_buf_put(w, (uint16_t)bid);
		w->cnt[EM_C_NO_ENDPOINT]++;
		http_error(w, c, !sp ? EM_PAGE_503_NOSVC : EM_PAGE_503_NOEP);
		return;
	}
	h->phase = H_EXCHANGE;
	h->up = u;
	u->ctx = h;
	c->peer = u;
	u->peer = c;
	h->sent_ns = w->now_ns;
	em_sock_timer(w, c, EM_T_IDLE, w->idle_ms);
	if (bid == FROM_COPY) {
		/* The head copy now belongs to the queue. */
		char *copy = h->hbuf;
		h->hbuf = NULL;
		if (!em_sock_enqueue_static(w, u, copy, fwd, em_entry_free)) {
			em_conn_close(w, c, true);
			return;
		}
	} else {
		em_sock_enqueue(w, u, (uint16_t)bid, fwd);
	}
	if (u->state == EM_SK_OPEN && !(u->flags & EM_SF_RECV_ARMED))
		em_sock_maybe_rearm(w, u);
	em_sock_backpressure(w, c, u);
}

static void head_from_copy(struct em_worker *w, struct em_sock *c)
{
	struct em_http *h = c->ctx;
	int rc = em_http1_parse_request(&h->rqp, h->hbuf, h->hlen, NULL, &w->http->head);
	if (rc == EM_PARTIAL) {
		if (c->tclass != EM_T_HEAD)
			em_sock_timer(w, c, EM_T_HEAD, w->head_ms);
		return;
	}
	if (rc < 0) {
		http_error(w, c, em_http_page_for(em_http1_status(rc)));
		return;
	}
	uint32_t avail = h->hlen;
	h->hlen = 0; /* the bytes stay in hbuf until the upstream sent them */
	start_request(w, c, FROM_COPY, h->hbuf, (uint32_t)rc, avail);
}

static void client_data(struct em_worker *w, struct em_sock *c, uint16_t bid, uint32_t len)
{
	struct em_http *h = c->ctx;
	const char *buf = em_worker_buf(w, bid);
	switch (h->phase) {
	case H_HEAD:
		if (h->hlen == 0 && h->plen == 0) {
			int rc = em_http1_parse_request(&h->rqp, buf, len, NULL, &w->http->head);
			if (rc > 0) {
				start_request(w, c, bid, buf, (uint32_t)rc, len);
				return;
			}
			if (rc != EM_PARTIAL) {
				em_worker_buf_put(w, bid);
				http_error(w, c, em_http_page_for(em_http1_status(rc)));
				return;
			}
			memset(&h->rqp, 0, sizeof(h->rqp));
		}
		/* The head spans buffers: assemble it. */
		if (!append(&h->hbuf, &h->hlen, buf, len)) {
			em_worker_buf_put(w, bid);
			http_error(w, c, EM_PAGE_431);
			return;
		}
		em_worker_buf_put(w, bid);
		head_from_copy(w, c);
		return;
	case H_EXCHANGE:
		if (!h->req_done) {
			ssize_t n = em_http1_body_feed(&h->rqb, buf, len);
			if (n < 0) {
				em_worker_buf_put(w, bid);
				em_conn_close(w, c, true);
				return;
			}
			h->req_done = em_http1_body_done(&h->rqb);
			if ((uint32_t)n < len &&
			    !append(&h->pbuf, &h->plen, buf + n, len - (uint32_t)n)) {
				em_worker_buf_put(w, bid);
				em_conn_close(w, c, true);
				return;
			}
			if (n == 0) {
				em_worker_buf_put(w, bid);
				return;
			}
			if (!h->up) {
				em_worker_buf_put(w, bid);
				em_conn_close(w, c, true);
				return;
			}
			em_sock_enqueue(w, h->up, bid, (uint32_t)n);
			em_sock_backpressure(w, c, h->up);
			return;
		}
		/* Pipelined: keep it for when this exchange ends. */
		if (!append(&h->pbuf, &h->plen, buf, len)) {
			em_worker_buf_put(w, bid);
			em_conn_close(w, c, true);
			return;
		}
		em_worker_buf_put(w, bid);
		return;
	case H_DISCARD: {
		ssize_t n = em_http1_body_feed(&h->rqb, buf, len);
		if (n < 0 || (h->dropped += (uint32_t)n) > EM_HTTP_DISCARD_MAX) {
			em_worker_buf_put(w, bid);
			linger_close(w, c);
			return;
		}
		if (!em_http1_body_done(&h->rqb)) {
			em_worker_buf_put(w, bid);
			return;
		}
		bool ok = (uint32_t)n == len ||
		          append(&h->pbuf, &h->plen, buf + n, len - (uint32_t)n);
		em_worker_buf_put(w, bid);
		if (!ok) {
			em_conn_close(w, c, true);
			return;
		}
		h->req_done = true;
		next_request(w, c);
		return;
	}
	case H_LINGER:
		em_worker_buf_put(w, bid);
		h->dropped += len;
		if (h->dropped > EM_HTTP_LINGER_MAX)
			em_sock_close(w, c, false);
		return;
	default:
		em_worker_buf_put(w, bid);
		return;
	}
}

/* The exchange of client <c> is over, its request read whole: the next
 * request may start (pipelined bytes first), or the connection ends. */
static void next_request(struct em_worker *w, struct em_sock *c)
{
	struct em_http *h = c->ctx;
	h->phase = H_HEAD;
	h->resp_head = false; /* an error page for the next head may go out */
	memset(&h->rqp, 0, sizeof(h->rqp));
	if (!h->keepalive || (c->flags & EM_SF_RD_EOF)) {
		if (h->plen && !(c->flags & EM_SF_RD_EOF)) {
			/* More was sent after the last request: do not reset it. */
			linger_close(w, c);
			return;
		}
		c->flags |= EM_SF_CLOSE_AFTER;
		if (c->q_len == 0 && !(c->flags & EM_SF_SEND_BUSY))
			em_sock_close(w, c, false);
		return;
	}
	em_sock_timer(w, c, EM_T_IDLE, w->idle_ms);
	if (h->plen) {
		/* Pipelined bytes become the next head. */
		char *tmp = h->hbuf;
		h->hbuf = h->pbuf;
		h->hlen = h->plen;
		h->pbuf = tmp;
		h->plen = 0;
		head_from_copy(w, c);
		if (c->flags & EM_SF_CLOSING)
			return;
	}
	em_sock_maybe_rearm(w, c);
}

/* The response ended on the wire (its last byte is queued on the client). */
static void finish_exchange(struct em_worker *w, struct em_sock *c)
{
	struct em_http *h = c->ctx;
	struct em_sock *u = h->up;
	bool reuse = h->keepalive && h->req_done && !h->up_dirty && u->q_len == 0 &&
	             !(u->flags & (EM_SF_SEND_BUSY | EM_SF_RD_EOF));
	h->up = NULL;
	u->ctx = NULL;
	u->peer = NULL;
	c->peer = NULL;
	if (reuse)
		em_http_pool_put(w, u);
	else
		em_sock_close(w, u, false);
	request_answered(w, c);
}

/* The whole response to the current request of client <c> is queued on it
 * (no upstream is left): the next request may start. */
static void request_answered(struct em_worker *w, struct em_sock *c)
{
	struct em_http *h = c->ctx;
	if (h->req_done) {
		next_request(w, c);
		return;
	}
	/* The answer came before the request body ended. The rest of
	 * the body is never read as a request: when it may be small it is
	 * read and dropped to keep the connection, else the client is closed
	 * once the response is out. So is a client that asked for a 100
	 * and did not get one: it may never send the body at all. */
	bool may_withhold = (h->req_flags & EM_HTTP1_F_EXPECT) && !h->continued;
	if (h->keepalive && !(c->flags & EM_SF_RD_EOF) && !may_withhold &&
	    !(h->rqb.framing == EM_HTTP1_BODY_LENGTH && h->rqb.remaining > EM_HTTP_DISCARD_MAX)) {
		h->phase = H_DISCARD;
		h->dropped = 0;
		em_sock_timer(w, c, EM_T_IDLE, w->idle_ms);
		em_sock_maybe_rearm(w, c);
		return;
	}
	linger_close(w, c);
}

/* Queues <n> response bytes for the client: from ring buffer <bid>, or from
 * the assembled copy <own> (then its ownership passes to the queue). */
static bool to_client(struct em_worker *w, struct em_sock *c, uint32_t bid, char **own, uint32_t n)
{
	if (bid != FROM_COPY) {
		em_sock_enqueue(w, c, (uint16_t)bid, n);
		return true;
	}
	char *p = *own;
	*own = NULL;
	return em_sock_enqueue_static(w, c, p, n, em_entry_free);
}

static void drop(struct em_worker *w, uint32_t bid, char **own)
{
	if (bid != FROM_COPY)
		em_worker_buf_put(w, (uint16_t)bid);
	free(*own);
	*own = NULL;
}

/* Response bytes <base>[0, avail) from upstream <u>, in ring buffer <bid>. */
static void response_bytes(struct em_worker *w, struct em_sock *u, uint32_t bid, const char *base,
                           uint32_t avail)
{
	struct em_http *h = u->ctx;
	struct em_sock *c = u->peer;
	char *own = NULL; /* the bytes when bid is FROM_COPY: assembled head or 1xx tail */
	uint32_t off = 0, fwd;
	if (u->flags & EM_SF_REPLAY)
		em_sock_kept_drop(w, u); /* the backend answers: no replay */
	while (!h->resp_head) {
		int rc = EM_PARTIAL;
		if (h->rlen == 0) {
			rc = em_http1_parse_response(&h->rsp, base, avail, h->req_flags, NULL,
			                             &w->http->head);
			if (rc == EM_PARTIAL)
				memset(&h->rsp, 0, sizeof(h->rsp));
		}
		if (rc == EM_PARTIAL) {
			bool ok = append(&h->rbuf, &h->rlen, base, avail);
			drop(w, bid, &own);
			if (!ok) {
				http_error(w, c, EM_PAGE_502_BAD);
				return;
			}
			rc = em_http1_parse_response(&h->rsp, h->rbuf, h->rlen, h->req_flags, NULL,
			                             &w->http->head);
			if (rc == EM_PARTIAL)
				return;
			bid = FROM_COPY;
			own = h->rbuf;
			base = own;
			avail = h->rlen;
			h->rbuf = NULL;
			h->rlen = 0;
		}
		if (rc < 0) {
			drop(w, bid, &own);
			http_error(w, c, EM_PAGE_502_BAD);
			return;
		}
		const struct em_http1_head *hd = &w->http->head;
		off = (uint32_t)rc;
		memset(&h->rsp, 0, sizeof(h->rsp));
		if (hd->status < 200 && hd->framing != EM_HTTP1_BODY_TUNNEL) {
			/* Interim response: forward it; what follows in the same
			 * read (more of them, the real one, its body) is parsed
			 * from a copy, as queue entries start at their buffer's
			 * first byte. */
			uint32_t tl = avail - off;
			char *tail = tl ? malloc(tl) : NULL;
			if (tl && !tail) {
				drop(w, bid, &own);
				em_conn_close(w, c, true);
				return;
			}
			if (tl)
				memcpy(tail, base + off, tl);
			if (hd->status == 100)
				h->continued = true;
			if (!to_client(w, c, bid, &own, off)) {
				free(tail);
				em_conn_close(w, c, true);
				return;
			}
			if (!tl)
				return;
			bid = FROM_COPY;
			own = tail;
			base = tail;
			avail = tl;
			off = 0;
			continue;
		}
		h->resp_head = true;
		struct em_svcstat *st = em_worker_svc(w, h->mslot);
		em_svcstat_status(st, hd->status);
		em_svcstat_observe(st, w->now_ns - h->sent_ns);
		if (h->rule_key) {
			char why[48];
			snprintf(why, sizeof(why), "the edge answered %u", hd->status);
			em_router_report(h->rule_key, hd->status < 500, why);
			h->rule_key = 0;
			em_sock_timer(w, u, EM_T_NONE, 0);
		}
		if (!(hd->flags & EM_HTTP1_F_KEEPALIVE))
			h->keepalive = false;
		em_http1_body_init(&h->rsb, hd);
		if (hd->framing == EM_HTTP1_BODY_TUNNEL) {
			/* 101 or CONNECT 2xx: raw bytes both ways from here on. */
			bool extra = h->plen != 0; /* client bytes after the request: not kept */
			u->ctx = NULL;
			h->up = NULL;
			http_release(w, c);
			c->ops = &em_relay_ops;
			u->ops = &em_relay_ops;
			if (!to_client(w, c, bid, &own, avail) || extra) {
				em_conn_close(w, c, true);
				return;
			}
			em_sock_timer(w, c, EM_T_IDLE, w->idle_ms);
			em_sock_maybe_rearm(w, c);
			em_sock_maybe_rearm(w, u);
			return;
		}
	}
	ssize_t n = em_http1_body_feed(&h->rsb, base + off, avail - off);
	if (n < 0) {
		drop(w, bid, &own);
		em_conn_close(w, c, true);
		return;
	}
	fwd = off + (uint32_t)n;
	if (fwd < avail)
		h->up_dirty = true; /* bytes after the response: never reuse */
	if (fwd == 0) {
		drop(w, bid, &own);
	} else if (!to_client(w, c, bid, &own, fwd)) {
		em_conn_close(w, c, true);
		return;
	}
	if (em_http1_body_done(&h->rsb)) {
		finish_exchange(w, c);
		return;
	}
	em_sock_backpressure(w, u, c);
	if (!(u->flags & EM_SF_RECV_ARMED))
		em_sock_maybe_rearm(w, u);
}

/* ---- the client's operations ---- */

static void client_recv(struct em_worker *w, struct em_sock *c, uint16_t bid, uint32_t len)
{
	client_data(w, c, bid, len);
	if (!(c->flags & (EM_SF_CLOSING | EM_SF_RECV_ARMED)))
		em_sock_maybe_rearm(w, c);
}

static void client_eof(struct em_worker *w, struct em_sock *c)
{
	struct em_http *h = c->ctx;
	if (h && h->phase == H_EXCHANGE && h->req_done) {
		h->keepalive = false; /* answer, then close */
		return;
	}
	if (h && h->phase == H_DISCARD) {
		linger_close(w, c); /* closes once the response is out */
		return;
	}
	if (h && h->phase == H_LINGER) {
		if (!(c->flags & EM_SF_CLOSE_AFTER))
			em_sock_close(w, c, false); /* the lingering close is done */
		return;
	}
	em_conn_close(w, c, h && h->phase == H_EXCHANGE);
}

static void client_drained(struct em_worker *w, struct em_sock *c)
{
	if (c->flags & EM_SF_CLOSE_AFTER) {
		if (!linger(w, c))
			em_conn_close(w, c, false);
		return;
	}
	em_sock_drained_default(w, c);
}

static void client_expire(struct em_worker *w, struct em_sock *c, enum em_timer_class tc)
{
	struct em_http *h = c->ctx;
	if (tc == EM_T_HEAD && h && h->hlen)
		http_error(w, c, EM_PAGE_408);
	else if (tc == EM_T_HEAD)
		em_sock_close(w, c, false);
	else
		em_conn_close(w, c, false);
}

static void client_detach(struct em_worker *w, struct em_sock *c)
{
	http_release(w, c);
}

static const struct em_sock_ops client_ops = {
        .name = "http-client",
        .recv = client_recv,
        .eof = client_eof,
        .drained = client_drained,
        .expire = client_expire,
        .detach = client_detach,
        .idle = client_idle,
};

/* ---- an upstream's operations, during an exchange ---- */

static void up_recv(struct em_worker *w, struct em_sock *u, uint16_t bid, uint32_t len)
{
	if (!u->ctx || !u->peer) {
		/* No exchange: it has nothing to say. */
		em_worker_buf_put(w, bid);
		em_sock_close(w, u, true);
		return;
	}
	response_bytes(w, u, bid, em_worker_buf(w, bid), len);
}

static void up_eof(struct em_worker *w, struct em_sock *u)
{
	if (replay(w, u))
		return;
	struct em_http *h = u->ctx;
	struct em_sock *c = u->peer;
	if (!h || !c) {
		em_sock_close(w, u, false);
		return;
	}
	if (h->resp_head && h->rsb.framing == EM_HTTP1_BODY_CLOSE) {
		h->keepalive = false;
		finish_exchange(w, c);
		return;
	}
	http_error(w, c, h->rule_key ? EM_PAGE_502_EDGE : EM_PAGE_502_BAD);
}

static bool up_error(struct em_worker *w, struct em_sock *u, int err)
{
	EM_UNUSED(err);
	return replay(w, u);
}

static void up_connect_failed(struct em_worker *w, struct em_sock *u, int res)
{
	struct em_sock *c = u->peer;
	if (em_route_retry(w, c, u, res))
		return;
	if (c && c->ctx)
		http_error(w, c, res == -ECANCELED ? EM_PAGE_504 : EM_PAGE_502_REFUSED);
	else
		em_conn_close(w, u, true);
}

/* Only a Router call sets a timer on its upstream: the edge's deadline for
 * the response head. */
static void up_expire(struct em_worker *w, struct em_sock *u, enum em_timer_class tc)
{
	EM_UNUSED(tc);
	struct em_http *h = u->ctx;
	struct em_sock *c = u->peer;
	if (h && c && h->up == u && !h->resp_head)
		http_error(w, c, EM_PAGE_504_EDGE);
	else
		em_conn_close(w, u, false);
}

static void up_detach(struct em_worker *w, struct em_sock *u)
{
	EM_UNUSED(w);
	struct em_http *h = u->ctx;
	u->ctx = NULL;
	if (h && h->up == u)
		h->up = NULL;
}

static const struct em_sock_ops up_ops = {
        .name = "http-upstream",
        .recv = up_recv,
        .eof = up_eof,
        .error = up_error,
        .connect_failed = up_connect_failed,
        .expire = up_expire,
        .detach = up_detach,
};

void em_http_start(struct em_worker *w, struct em_sock *c, uint16_t bid, uint32_t len)
{
	if (!w->http) {
		w->http = calloc(1, sizeof(*w->http));
		if (w->http && !em_worker_at_exit(w, http_worker_free)) {
			free(w->http);
			w->http = NULL;
		}
	}
	c->ctx = w->http ? http_alloc(w) : NULL;
	if (!c->ctx) {
		em_worker_buf_put(w, bid);
		em_sock_close(w, c, true);
		return;
	}
	c->ops = &client_ops;
	((struct em_http *)c->ctx)->mslot = c->mslot;
	client_data(w, c, bid, len);
}

/* Idle HTTP upstreams, pooled per endpoint. */
#include "engine/http_pool.h"

/* Takes pooled <u> out of its endpoint's pool. */
static void unpool(struct em_worker *w, struct em_sock *u)
{
	em_dlist_del(&u->pnode);
	if (u->ep) {
		if (u->ep->n_idle)
			u->ep->n_idle--;
		u->ep->active++;
	}
	em_sock_timer(w, u, EM_T_NONE, 0);
}

static void pool_recv(struct em_worker *w, struct em_sock *u, uint16_t bid, uint32_t len)
{
	EM_UNUSED(len);
	/* An idle upstream has nothing to say: drop it. */
	em_worker_buf_put(w, bid);
	em_sock_close(w, u, true);
}

static void pool_eof(struct em_worker *w, struct em_sock *u)
{
	em_sock_close(w, u, false);
}

static bool pool_idle(const struct em_sock *u)
{
	EM_UNUSED(u);
	return true;
}

static const struct em_sock_ops pool_ops = {
        .name = "http-pooled",
        .recv = pool_recv,
        .eof = pool_eof,
        .detach = unpool,
        .idle = pool_idle,
};

void em_http_pool_put(struct em_worker *w, struct em_sock *u)
{
	struct em_lb_ep *e = u->ep;
	if (!e || e->n_idle >= EM_HTTP_POOL_MAX || w->stopping) {
		em_sock_close(w, u, false);
		return;
	}
	u->ops = &pool_ops;
	if (e->active)
		e->active--;
	e->last_ms = w->now_ms;
	e->n_idle++;
	em_dlist_push_tail(&e->idle, &u->pnode);
	em_sock_timer(w, u, EM_T_POOL, EM_MIN(w->idle_ms, EM_HTTP_POOL_IDLE_MS));
	em_sock_maybe_rearm(w, u);
}

struct em_sock *em_http_pool_take(struct em_worker *w, const struct em_addr *addr,
                                  const struct em_sock_ops *ops)
{
	struct em_lb_ep *e = em_lb_ep_get(&w->lb, addr);
	return e ? em_http_pool_take_ep(w, e, ops) : NULL;
}

struct em_sock *em_http_pool_take_ep(struct em_worker *w, struct em_lb_ep *e,
                                     const struct em_sock_ops *ops)
{
	struct em_dlist *n = em_dlist_first(&e->idle);
	if (!n)
		return NULL;
	struct em_sock *u = em_container_of(n, struct em_sock, pnode);
	unpool(w, u);
	u->ops = ops;
	return u;
}

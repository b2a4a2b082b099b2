/* Routing: service lookup, balancer pick, direct or tunnelled, connect. */
#include "engine/route.h"

#include "engine/fastpath.h"
#include "engine/io.h"

#include <unistd.h>

const struct em_svc_port *em_route_lookup(const struct em_sock *c)
{
	const struct em_table *t = em_table_current();
	if (!t)
		return NULL;
	if (c->listener == EM_LISTENER_CAPTURE)
		return em_table_lookup(t, &c->dst, IPPROTO_TCP);
	if (c->listener == EM_LISTENER_SERVED)
		return em_table_port_by_key(t, c->svc_key);
	/* The live config names the listener's service: a reload may change it
	 * (a reload keeps the listeners' number and addresses). */
	const struct em_config *cfg = em_worker_config();
	if (c->listener >= cfg->n_listeners)
		return NULL;
	const struct em_listener_conf *l = &cfg->listeners[c->listener];
	const struct em_service *svc = em_table_service(t, l->service_ns, l->service_name);
	return svc ? em_service_port(svc, l->port, IPPROTO_TCP) : NULL;
}

bool em_route_via_tunnel(const struct em_endpoint *ep)
{
	if (ep->local)
		return false;
	return em_worker_config()->tunnel.cluster_key[0] != 0;
}

/* A ready local endpoint of <sp>, avoiding <avoid> unless it is the only
 * one, in turn; NULL when none. For the rare service whose endpoints are
 * spread over nodes and whose balancer picked a remote one. */
static const struct em_endpoint *pick_local(struct em_worker *w, const struct em_svc_port *sp,
                                            const struct em_addr *avoid)
{
	uint32_t n = 0, k;
	const struct em_endpoint *last = NULL;
	for (uint32_t i = 0; i < sp->n_ready; i++)
		n += sp->endpoints[i].local;
	if (n == 0)
		return NULL;
	/* In turn with the requests this worker sees: no state to keep. */
	k = (uint32_t)(w->cnt[EM_C_REQUESTS] % n);
	for (uint32_t i = 0; i < sp->n_ready; i++) {
		const struct em_endpoint *ep = &sp->endpoints[i];
		if (!ep->local)
			continue;
		if (k-- == 0 && (n == 1 || !avoid || !em_addr_eq(&ep->addr, avoid)))
			return ep;
		if (!avoid || !em_addr_eq(&ep->addr, avoid))
			last = ep;
	}
	return last;
}

const struct em_endpoint *em_route_pick(struct em_worker *w, const struct em_sock *c,
                                        const struct em_svc_port *sp, const struct em_addr *avoid)
{
	struct em_addr peer;
	bool have_peer = false; /* <peer> holds the client's address */
	bool handoff = false;
	struct em_fastpath *fp = __atomic_load_n(&w->eng->fastpath, __ATOMIC_ACQUIRE);
	if (fp && !avoid && c->listener == EM_LISTENER_CAPTURE && em_fastpath_on(fp) &&
	    em_fastpath_port_ok(sp))
		handoff = true;
	/* The client's address: for the kernel's pick and for affinity only,
	 * asked for once. */
	if (handoff || (sp->svc && sp->svc->affinity_client_ip)) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		have_peer = getpeername(c->fd, (struct sockaddr *)&ss, &sl) == 0 &&
		            em_addr_from_sockaddr((struct sockaddr *)&ss, &peer) == 0;
	}
	if (handoff && have_peer) {
		/* The kernel picked a remote endpoint at connect(): take the
		 * same one, or the spread would be skewed by a second pick. */
		const struct em_endpoint *ep = em_fastpath_handoff(fp, sp, &peer, &c->dst);
		if (ep) {
			w->cnt[EM_C_FASTPATH_HANDOFF]++;
			return ep;
		}
	}
	const struct em_addr *pp =
	        have_peer && sp->svc && sp->svc->affinity_client_ip ? &peer : NULL;
	const struct em_endpoint *ep = em_lb_pick(&w->lb, sp, pp, avoid, w->now_ms);
	if (!ep || ep->local || c->listener != EM_LISTENER_SERVED)
		return ep;
	return pick_local(w, sp, avoid);
}

int em_route_connect(struct em_worker *w, struct em_sock *u, const struct em_endpoint *ep)
{
	int rc = em_sock_connect(w, u, &ep->addr);
	if (rc)
		return rc;
	u->ep = em_lb_ep_get(&w->lb, &ep->addr);
	if (u->ep) {
		u->ep->active++;
		u->ep->last_ms = w->now_ms;
	}
	return 0;
}

bool em_route_retry(struct em_worker *w, struct em_sock *c, struct em_sock *u, int res)
{
	w->cnt[EM_C_CONNECT_FAIL]++;
	if (c)
		em_svcstat_add(&em_worker_svc(w, c->mslot)->connect_fail, 1);
	/* -ECANCELED means the linked timeout fired: no second wait. */
	if (!c || res == -ECANCELED || c->retries)
		return false;
	c->retries = 1;
	const struct em_svc_port *sp = em_route_lookup(c);
	struct em_addr prev = u->ep ? u->ep->addr : (struct em_addr){0};
	const struct em_endpoint *ep = sp ? em_route_pick(w, c, sp, &prev) : NULL;
	if (!ep)
		return false;
	em_io_close(w, u->fd); /* its connect completed */
	u->fd = -1;
	u->state = EM_SK_NEW;
	if (u->ep && u->ep->active)
		u->ep->active--;
	u->ep = NULL;
	return em_route_connect(w, u, ep) == 0;
}

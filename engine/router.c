/* The Router: request-target to Rule to a stream toward the edge. */
#include "engine/router.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/http_pool.h"
#include "engine/tunnel.h"
#include "engine/worker.h"
#include "proto/frame.h"
#include "store/router.h"

#define ROUTER_BUCKETS   256u
#define ROUTER_DESTS_MAX 4096u /* per worker; calls past it are not pooled */

/* Where calls go: a node and its loopback port or one of its Services.
 * Its entry holds the idle streams toward it between calls (http_pool.h),
 * as a balancer entry holds an endpoint's idle connections. */
struct router_dest {
	struct em_lb_ep ep; /* the u->ep of its upstreams */
	struct router_dest *next;
	uint64_t hash;
	uint16_t port; /* the Service's port, or the loopback port */
	bool svc;
	char node[EM_FRAME_MAX_NAME + 1];
	char ns[EM_FRAME_MAX_NS + 1];
	char name[EM_FRAME_MAX_NAME + 1];
};

struct em_router_worker {
	struct router_dest *b[ROUTER_BUCKETS];
	unsigned n;
};

/* Frees the destinations once the worker's sockets are gone. */
static void router_worker_free(struct em_worker *w)
{
	struct em_router_worker *rw = w->router;
	if (!rw)
		return;
	for (unsigned i = 0; i < ROUTER_BUCKETS; i++)
		while (rw->b[i]) {
			struct router_dest *d = rw->b[i];
			rw->b[i] = d->next;
			free(d);
		}
	free(rw);
	w->router = NULL;
}

static bool copy_name(char *dst, size_t cap, const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n >= cap)
		return false;
	memcpy(dst, s ? s : "", n + 1);
	return true;
}

/* The destination of <node> and <r>'s target, made on first use; NULL when
 * none can be had (out of memory, at the cap, or names too long). */
static struct router_dest *dest_get(struct em_worker *w, const char *node,
                                    const struct em_rule *r)
{
	struct em_router_worker *rw = w->router;
	if (!rw) {
		if (!(rw = calloc(1, sizeof(*rw))))
			return NULL;
		if (!em_worker_at_exit(w, router_worker_free)) {
			free(rw);
			return NULL;
		}
		w->router = rw;
	}
	bool svc = r->svc_name != NULL;
	uint16_t port = svc ? r->svc_port : r->local_port;
	uint64_t h = em_hash64(node, strlen(node) + 1, EM_HASH_SEED);
	if (svc) {
		h = em_hash64(r->svc_ns, strlen(r->svc_ns) + 1, h);
		h = em_hash64(r->svc_name, strlen(r->svc_name) + 1, h);
	}
	h = em_hash64(&port, sizeof(port), h ^ svc);
	struct router_dest **head = &rw->b[h % ROUTER_BUCKETS];
	for (struct router_dest *d = *head; d; d = d->next)
		if (d->hash == h && d->port == port && d->svc == svc && strcmp(d->node, node) == 0 &&
		    (!svc || (strcmp(d->ns, r->svc_ns) == 0 && strcmp(d->name, r->svc_name) == 0)))
			return d;
	if (rw->n >= ROUTER_DESTS_MAX)
		return NULL;
	struct router_dest *d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	if (!copy_name(d->node, sizeof(d->node), node) ||
	    (svc && (!copy_name(d->ns, sizeof(d->ns), r->svc_ns) ||
	             !copy_name(d->name, sizeof(d->name), r->svc_name)))) {
		free(d);
		return NULL;
	}
	em_dlist_init(&d->ep.idle);
	d->hash = h;
	d->port = port;
	d->svc = svc;
	d->next = *head;
	*head = d;
	rw->n++;
	return d;
}

/* A new stream toward <d>, counted on its entry. */
static struct em_sock *dest_open(struct em_worker *w, struct router_dest *d,
                                 const struct em_sock_ops *ops)
{
	struct em_service svc = {.ns = d->ns, .name = d->name};
	struct em_svc_port sp = {.svc = d->svc ? &svc : NULL, .port = d->port,
	                         .protocol = IPPROTO_TCP};
	struct em_endpoint ep = {.node = d->node};
	if (!d->svc) {
		ep.addr.family = AF_INET;
		ep.addr.port = d->port;
		ep.addr.v4.s_addr = htonl(INADDR_LOOPBACK);
	}
	struct em_sock *u = em_tun_pair(w, &sp, &ep, ops);
	if (u) {
		u->ep = &d->ep;
		d->ep.active++;
		d->ep.last_ms = w->now_ms;
	}
	return u;
}

struct em_sock *em_router_reopen(struct em_worker *w, struct em_sock *u,
                                 const struct em_sock_ops *ops)
{
	if (!u->ep)
		return NULL;
	struct router_dest *d = em_container_of(u->ep, struct router_dest, ep);
	return em_tun_reachable(w, d->node) ? dest_open(w, d, ops) : NULL;
}

void em_router_report(uint64_t rule_key, bool ok, const char *reason)
{
	if (rule_key)
		em_rule_report(rule_key, ok, reason);
}

/* The next path segment of <s> (after its leading '/'), and what follows
 * it (from its '/', or empty). False when <s> does not start with '/' or
 * the segment is empty or too long for a name. */
static bool segment(struct em_slice s, struct em_slice *seg, struct em_slice *rest, size_t max)
{
	if (s.len < 2 || s.base[0] != '/')
		return false;
	size_t i = 1;
	while (i < s.len && s.base[i] != '/' && s.base[i] != '?')
		i++;
	if (i == 1 || i - 1 > max)
		return false;
	*seg = (struct em_slice){s.base + 1, i - 1};
	*rest = (struct em_slice){s.base + i, s.len - i};
	return true;
}

struct em_sock *em_router_route(struct em_worker *w, const struct em_http1_head *hd,
                                const char *base, uint32_t hl, uint32_t fwd,
                                const struct em_sock_ops *ops, char **out, uint32_t *out_len,
                                uint64_t *rule_key, enum em_http_page *page)
{
	struct em_slice node_s, ns_s, after_node, rest;
	char node[EM_FRAME_MAX_NAME + 1], ns[EM_FRAME_MAX_NS + 1];
	*rule_key = 0;
	*out = NULL;
	*page = EM_PAGE_404_ROUTE;
	if (!segment(hd->target, &node_s, &after_node, EM_FRAME_MAX_NAME) ||
	    !segment(after_node, &ns_s, &rest, EM_FRAME_MAX_NS) ||
	    (rest.len && rest.base[0] == '?'))
		return NULL;
	memcpy(node, node_s.base, node_s.len);
	node[node_s.len] = 0;
	memcpy(ns, ns_s.base, ns_s.len);
	ns[ns_s.len] = 0;
	if (rest.len == 0)
		rest = (struct em_slice){"/", 1};
	size_t plen = 0; /* the path, without the query */
	while (plen < rest.len && rest.base[plen] != '?')
		plen++;
	const struct em_table *t = em_table_current();
	size_t matched = 0;
	const struct em_rule *r = t ? em_table_rule_match(t, ns, rest.base, plen, &matched) : NULL;
	if (!r)
		return NULL;
	if (!em_tun_reachable(w, node)) {
		em_rule_report(r->key, false, "edge not connected");
		*page = EM_PAGE_503_EDGE;
		return NULL;
	}
	/* The new request line: the target path, then what followed the
	 * matched prefix, then the rest of the head and the body bytes. */
	const char *tp = r->target_path ? r->target_path : "";
	size_t tpl = strlen(tp);
	struct em_slice tail = {rest.base + matched, rest.len - matched};
	/* Joined with one '/' between them (a rule path ending in '/' leaves
	 * none at the start of the tail). */
	bool t_slash = tpl && tp[tpl - 1] == '/';
	bool tail_slash = tail.len && tail.base[0] == '/';
	if (t_slash && tail_slash) {
		tail.base++;
		tail.len--;
	}
	bool mid = !t_slash && !tail_slash && tail.len && tail.base[0] != '?';
	const char *after_target = hd->target.base + hd->target.len; /* " HTTP/1.x\r\n..." */
	size_t head_rest = (size_t)(base + fwd - after_target);
	size_t mlen = hd->method.len;
	bool slash = tpl == 0 && !tail_slash;
	size_t n = mlen + 1 + (slash ? 1 : 0) + tpl + (mid && tpl ? 1 : 0) + tail.len + head_rest;
	char *buf = malloc(n);
	if (!buf) {
		em_rule_report(r->key, false, "out of memory");
		*page = EM_PAGE_503_NOEP;
		return NULL;
	}
	char *p = buf;
	memcpy(p, hd->method.base, mlen);
	p += mlen;
	*p++ = ' ';
	if (slash)
		*p++ = '/';
	memcpy(p, tp, tpl);
	p += tpl;
	if (mid && tpl)
		*p++ = '/';
	memcpy(p, tail.base, tail.len);
	p += tail.len;
	memcpy(p, after_target, head_rest);
	EM_UNUSED(hl);

	/* The stream: an idle one toward the same destination (a Service of
	 * the edge, or its loopback port), else a new one. */
	struct router_dest *d = dest_get(w, node, r);
	struct em_sock *u = d ? em_http_pool_take_ep(w, &d->ep, ops) : NULL;
	if (u) {
		u->flags |= EM_SF_REPLAY;
	} else if (d) {
		u = dest_open(w, d, ops);
	} else {
		struct em_service svc = {.ns = r->svc_ns, .name = r->svc_name};
		struct em_svc_port sp = {.svc = r->svc_name ? &svc : NULL,
		                         .port = r->svc_name ? r->svc_port : r->local_port,
		                         .protocol = IPPROTO_TCP};
		struct em_endpoint ep = {.node = node};
		if (!r->svc_name) {
			ep.addr.family = AF_INET;
			ep.addr.port = r->local_port;
			ep.addr.v4.s_addr = htonl(INADDR_LOOPBACK);
		}
		u = em_tun_pair(w, &sp, &ep, ops);
	}
	if (!u) {
		free(buf);
		em_rule_report(r->key, false, "no stream to the edge");
		*page = EM_PAGE_503_EDGE;
		return NULL;
	}
	*out = buf;
	*out_len = (uint32_t)n;
	*rule_key = r->key;
	return u;
}

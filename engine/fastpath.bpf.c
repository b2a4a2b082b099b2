/* Connect-time balancing (engine/fastpath.h), run by the kernel for the
 * processes of one cgroup:
 *  - connect4/connect6: a TCP connect to a cluster IP and port found in
 *    fp_svcs picks one of its ready endpoints (affinity, then random or
 *    round robin). A local pick rewrites the destination; a remote pick
 *    leaves it, so capture hands the connection to the engine, and the
 *    socket's storage remembers the pick for sockops below.
 *  - getpeername4/6: a rewritten socket shows the cluster IP as its peer.
 *  - sockops (TCP_CONNECT_CB): once the source address and port are known,
 *    a remote pick is written to fp_hands under the 4-tuple the engine's
 *    accepted socket will see, so the engine connects to the same endpoint.
 * Every program returns 1 (allow): a miss anywhere means "as without the
 * fast path". */
#include <linux/bpf.h>
#include <linux/in.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "engine/fastpath_maps.h"

#define FP_SOCK_STREAM 1 /* the socket type, as socket(2) takes it */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, FP_SVC_ENTRIES);
	__type(key, struct fp_svc_key);
	__type(value, struct fp_svc);
} fp_svcs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, FP_EP_ENTRIES);
	__type(key, struct fp_ep_key);
	__type(value, struct fp_ep);
} fp_eps SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, FP_SVC_ENTRIES);
	__type(key, struct fp_svc_key);
	__type(value, struct fp_count);
} fp_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FP_AFF_ENTRIES);
	__type(key, struct fp_aff_key);
	__type(value, struct fp_aff);
} fp_affs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FP_HAND_ENTRIES);
	__type(key, struct fp_hand_key);
	__type(value, struct fp_ep);
} fp_hands SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct fp_sk);
} fp_sks SEC(".maps");

static __always_inline int same_ep(const struct fp_ep *a, const struct fp_ep *b)
{
	return a->ip[0] == b->ip[0] && a->ip[1] == b->ip[1] && a->ip[2] == b->ip[2] &&
	       a->ip[3] == b->ip[3] && a->port == b->port && a->family == b->family;
}

/* The endpoint of the affinity entry <a> if the current set <s> still has
 * it (the index is tried first: the set seldom changes), else NULL. */
static __always_inline const struct fp_ep *aff_ep(const struct fp_svc *s, const struct fp_aff *a)
{
	struct fp_ep_key ek = {.slot = s->slot, .ver = s->ver};
	const struct fp_ep *ep;

	if (a->slot == s->slot && a->ver == s->ver)
		return &a->ep;
	for (__u32 i = 0; i < FP_MAX_EPS && i < s->n; i++) {
		ek.idx = i;
		ep = bpf_map_lookup_elem(&fp_eps, &ek);
		if (ep && same_ep(ep, &a->ep))
			return ep;
	}
	return 0;
}

/* Picks for <ctx> a ready endpoint of the service at <k> into <out>.
 * Returns 1 with a pick, 0 when the service is not in the maps or has no
 * ready endpoint (then the connect goes on as it is). */
static __always_inline int pick(struct bpf_sock_addr *ctx, const struct fp_svc_key *k,
                                struct fp_ep *out)
{
	struct fp_svc *s = bpf_map_lookup_elem(&fp_svcs, k);
	const struct fp_ep *ep = 0;
	struct fp_count *c;
	struct fp_aff_key ak;
	__u64 now = 0;
	__u32 n, idx;

	if (!s || s->n == 0 || s->n > FP_MAX_EPS)
		return 0;
	n = s->n;
	c = bpf_map_lookup_elem(&fp_counts, k);
	if (s->flags & FP_AFFINITY) {
		const struct fp_aff *a;
		ak.netns = bpf_get_netns_cookie(ctx);
		ak.id = s->id;
		now = bpf_ktime_get_ns();
		a = bpf_map_lookup_elem(&fp_affs, &ak);
		if (a && now - a->last_ns <= s->affinity_ns)
			ep = aff_ep(s, a);
	}
	if (!ep) {
		struct fp_ep_key ek = {.slot = s->slot, .ver = s->ver};
		if (s->flags & FP_RANDOM)
			idx = bpf_get_prandom_u32() % n;
		else
			idx = __sync_fetch_and_add(&s->rr, 1) % n;
		ek.idx = idx;
		ep = bpf_map_lookup_elem(&fp_eps, &ek);
		if (!ep)
			return 0;
	}
	*out = *ep;
	if (s->flags & FP_AFFINITY) {
		struct fp_aff na = {.ep = *ep, .slot = s->slot, .ver = s->ver, .last_ns = now};
		bpf_map_update_elem(&fp_affs, &ak, &na, BPF_ANY);
	}
	if (c) {
		if (out->local)
			c->conns++;
		else
			c->handoffs++;
	}
	return 1;
}

/* Remembers the connect in the socket's storage. Returns 1 when the
 * destination may be rewritten (a local pick that is remembered, so that
 * getpeername can show the cluster IP). */
static __always_inline int remember(struct bpf_sock_addr *ctx, const struct fp_svc_key *k,
                                    const struct fp_ep *ep)
{
	struct fp_sk *sk;

	if (!ctx->sk)
		return 0;
	sk = bpf_sk_storage_get(&fp_sks, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!sk)
		return 0;
	sk->svc = *k;
	sk->pick = *ep;
	sk->handoff = !ep->local;
	return ep->local;
}

SEC("cgroup/connect4")
int fp_connect4(struct bpf_sock_addr *ctx)
{
	struct fp_svc_key k = {};
	struct fp_ep ep;

	if (ctx->type != FP_SOCK_STREAM || (ctx->protocol && ctx->protocol != IPPROTO_TCP))
		return 1;
	k.ip[0] = ctx->user_ip4;
	k.port = (__u16)ctx->user_port;
	k.family = 4;
	if (!pick(ctx, &k, &ep) || ep.family != 4)
		return 1;
	if (remember(ctx, &k, &ep)) {
		ctx->user_ip4 = ep.ip[0];
		ctx->user_port = ep.port;
	}
	return 1;
}

SEC("cgroup/connect6")
int fp_connect6(struct bpf_sock_addr *ctx)
{
	struct fp_svc_key k = {};
	struct fp_ep ep;

	if (ctx->type != FP_SOCK_STREAM || (ctx->protocol && ctx->protocol != IPPROTO_TCP))
		return 1;
	k.ip[0] = ctx->user_ip6[0];
	k.ip[1] = ctx->user_ip6[1];
	k.ip[2] = ctx->user_ip6[2];
	k.ip[3] = ctx->user_ip6[3];
	k.port = (__u16)ctx->user_port;
	k.family = 6;
	if (!pick(ctx, &k, &ep) || ep.family != 6)
		return 1;
	if (remember(ctx, &k, &ep)) {
		ctx->user_ip6[0] = ep.ip[0];
		ctx->user_ip6[1] = ep.ip[1];
		ctx->user_ip6[2] = ep.ip[2];
		ctx->user_ip6[3] = ep.ip[3];
		ctx->user_port = ep.port;
	}
	return 1;
}

SEC("cgroup/getpeername4")
int fp_getpeername4(struct bpf_sock_addr *ctx)
{
	const struct fp_sk *sk;

	if (!ctx->sk)
		return 1;
	sk = bpf_sk_storage_get(&fp_sks, ctx->sk, 0, 0);
	if (sk && !sk->handoff && sk->svc.family == 4) {
		ctx->user_ip4 = sk->svc.ip[0];
		ctx->user_port = sk->svc.port;
	}
	return 1;
}

SEC("cgroup/getpeername6")
int fp_getpeername6(struct bpf_sock_addr *ctx)
{
	const struct fp_sk *sk;

	if (!ctx->sk)
		return 1;
	sk = bpf_sk_storage_get(&fp_sks, ctx->sk, 0, 0);
	if (sk && !sk->handoff && sk->svc.family == 6) {
		ctx->user_ip6[0] = sk->svc.ip[0];
		ctx->user_ip6[1] = sk->svc.ip[1];
		ctx->user_ip6[2] = sk->svc.ip[2];
		ctx->user_ip6[3] = sk->svc.ip[3];
		ctx->user_port = sk->svc.port;
	}
	return 1;
}

SEC("sockops")
int fp_sockops(struct bpf_sock_ops *ctx)
{
	struct fp_hand_key hk = {};
	const struct fp_sk *sk;
	struct bpf_sock *s;

	if (ctx->op != BPF_SOCK_OPS_TCP_CONNECT_CB)
		return 1;
	s = ctx->sk;
	if (!s)
		return 1;
	sk = bpf_sk_storage_get(&fp_sks, s, 0, 0);
	if (!sk || !sk->handoff)
		return 1;
	hk.family = sk->svc.family;
	if (hk.family == 4) {
		hk.src[0] = ctx->local_ip4;
	} else {
		hk.src[0] = ctx->local_ip6[0];
		hk.src[1] = ctx->local_ip6[1];
		hk.src[2] = ctx->local_ip6[2];
		hk.src[3] = ctx->local_ip6[3];
	}
	hk.sport = bpf_htons((__u16)ctx->local_port);
	hk.dst[0] = sk->svc.ip[0];
	hk.dst[1] = sk->svc.ip[1];
	hk.dst[2] = sk->svc.ip[2];
	hk.dst[3] = sk->svc.ip[3];
	hk.dport = sk->svc.port;
	bpf_map_update_elem(&fp_hands, &hk, &sk->pick, BPF_ANY);
	return 1;
}

char LICENSE[] SEC("license") = "GPL";

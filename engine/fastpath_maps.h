/* The maps shared by the connect-time balancer's BPF programs
 * (engine/fastpath.bpf.c) and the daemon that fills them (engine/fastpath.c).
 * Every address and port is in network byte order; an IPv4 address is in
 * ip[0] with ip[1..3] zero. Plain fixed-width types only: this header is
 * compiled for the BPF target too. */
#ifndef EM_ENGINE_FASTPATH_MAPS_H
#define EM_ENGINE_FASTPATH_MAPS_H

#include <linux/types.h>

#define FP_MAX_EPS      256u    /* ready endpoints of one port; more: engine path */
#define FP_SVC_ENTRIES  65536u  /* cluster IP x port entries */
#define FP_EP_ENTRIES   262144u /* endpoint entries, both versions of a port */
#define FP_AFF_ENTRIES  16384u  /* ClientIP affinity entries (LRU) */
#define FP_HAND_ENTRIES 16384u  /* connections handed to the engine (LRU) */

/* fp_svc.flags */
#define FP_RANDOM   1u /* balancer "random", else round robin */
#define FP_AFFINITY 2u /* sessionAffinity ClientIP */

/* A cluster IP and service port (TCP). */
struct fp_svc_key {
	__u32 ip[4];
	__u16 port;
	__u8 family; /* 4 or 6 */
	__u8 pad;
};

/* Replaced whole on every change, so a program sees the old set or the new
 * one: the endpoints live under (slot, ver) and a change writes the new
 * version's endpoints before this value, and deletes the old ones after. */
struct fp_svc {
	__u64 id;   /* the port's key (em_svc_port.key): affinity */
	__u32 slot; /* names this entry's endpoints */
	__u32 ver;
	__u32 n;    /* ready endpoints 0 .. n-1 */
	__u32 flags;
	__u32 rr;          /* round-robin position, shared by every CPU */
	__u32 pad;
	__u64 affinity_ns; /* affinity timeout */
};

struct fp_ep_key {
	__u32 slot;
	__u32 ver;
	__u32 idx;
};

struct fp_ep {
	__u32 ip[4];
	__u16 port;
	__u8 family;
	__u8 local; /* on this node: the connect goes straight to it */
};

/* Per CPU, per fp_svc_key: what the programs did. */
struct fp_count {
	__u64 conns;    /* connects sent straight to a local endpoint */
	__u64 handoffs; /* connects left to the engine with the kernel's pick */
};

/* ClientIP affinity: a client is its network namespace (a pod). */
struct fp_aff_key {
	__u64 netns;
	__u64 id;
};

struct fp_aff {
	struct fp_ep ep;
	__u32 slot, ver; /* the endpoint set <ep> was picked from */
	__u64 last_ns;   /* last connect that used it */
};

/* What a client socket's storage keeps from its connect. */
struct fp_sk {
	struct fp_svc_key svc; /* the cluster IP and port it asked for */
	struct fp_ep pick;
	__u8 handoff; /* pick is remote: the engine receives the connection */
	__u8 pad[3];
};

/* A connection handed to the engine, as the engine's accepted socket sees
 * it: the client's address and port, the cluster IP and port. */
struct fp_hand_key {
	__u32 src[4];
	__u32 dst[4];
	__u16 sport;
	__u16 dport;
	__u8 family;
	__u8 pad[3];
};

#endif

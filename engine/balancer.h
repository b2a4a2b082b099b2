/* Per-worker load balancing over a service port's ready endpoints.
 *
 * Every worker owns one struct em_lb: no sharing, no locks. State is keyed by
 * em_svc_port.key and by endpoint address, never by table pointers, so it
 * survives table swaps. ClientIP affinity starts from a hash of the client
 * address, so every worker picks the same endpoint for a client without
 * talking to the others; each worker then keeps that choice for the service's
 * timeout while the endpoint stays ready. */
#ifndef EM_ENGINE_BALANCER_H
#define EM_ENGINE_BALANCER_H

#include "engine/list.h"
#include "store/config.h"
#include "store/table.h"

#define EM_LB_SVC_SLOTS  1024u /* direct-mapped round-robin counters */
#define EM_LB_AFF_SLOTS  4096u /* direct-mapped ClientIP affinity entries */
#define EM_LB_EP_BUCKETS 1024u

/* What this worker knows about one endpoint address. */
struct em_lb_ep {
	struct em_addr addr;
	uint32_t active;      /* connections or requests in flight to it */
	uint32_t n_idle;      /* entries of <idle> */
	struct em_dlist idle; /* pooled idle upstream connections (engine's) */
	uint64_t last_ms;     /* last pick or release */
	struct em_lb_ep *next;
};

struct em_lb_svc {
	uint64_t key;
	uint32_t rr;
};

struct em_lb_aff {
	uint64_t key; /* svc port key; 0 = empty */
	struct em_addr client;
	struct em_addr ep;
	uint64_t expires_ms;
};

struct em_lb {
	enum em_balancer algo; /* default for services without affinity */
	uint64_t rng;
	struct em_lb_svc *svc;
	struct em_lb_aff *aff;
	struct em_lb_ep **buckets;
	size_t n_eps;
};

/* Allocates the tables of <lb> (about 300 KiB). <seed> seeds the random
 * balancer. Returns 0 or -ENOMEM. */
int em_lb_init(struct em_lb *lb, enum em_balancer algo, uint64_t seed);

/* Frees everything, including endpoint entries; the caller must have emptied
 * their idle pools first. */
void em_lb_destroy(struct em_lb *lb);

/* Finds or creates the entry of <addr>. Returns NULL only on ENOMEM. */
struct em_lb_ep *em_lb_ep_get(struct em_lb *lb, const struct em_addr *addr);

/* Picks a ready endpoint of <sp> for a client at <client> (port ignored),
 * avoiding <avoid> (may be NULL) unless it is the only ready one. Uses the
 * service's ClientIP affinity when set, else lb->algo. Allocates only the
 * first time an address is seen (least-requests). Returns NULL when <sp> has
 * no ready endpoint. The result points into the table snapshot. */
const struct em_endpoint *em_lb_pick(struct em_lb *lb, const struct em_svc_port *sp,
                                     const struct em_addr *client, const struct em_addr *avoid,
                                     uint64_t now_ms);

/* Frees endpoint entries with nothing active or pooled that were unused for
 * <idle_ms>. Bounded work: call from a periodic tick. */
void em_lb_gc(struct em_lb *lb, uint64_t now_ms, uint64_t idle_ms);

#endif

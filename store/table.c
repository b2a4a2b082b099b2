/* Service table snapshots: built in one arena by the sync thread, published
 * with one pointer swap, freed after a QSBR grace period. */
#include "store/table.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include "store/arena.h"
#include "store/rcu.h"
#include "store/router.h"

#include "proto/clock.h"
#include "proto/log.h"

/* Lookup slots. The key is stored inline so that a probe touches one cache
 * line per slot and never chases a pointer for a miss. */
struct ip_slot {
	struct em_addr addr; /* cluster ip + service port */
	uint8_t protocol;
	const struct em_svc_port *sp; /* NULL: empty */
};

struct name_slot {
	uint64_t hash;
	const struct em_service *svc;
};

struct key_slot {
	const struct em_svc_port *sp; /* NULL: empty */
};

struct node_slot {
	uint64_t hash;
	const struct em_node_info *node;
};

/* Rules by key, and active Rules by namespace and source path. */
struct rule_slot {
	uint64_t hash;
	const struct em_rule *rule;
};

struct em_table {
	struct em_arena arena;
	struct rule_slot *rule_keys, *rule_paths;
	size_t rule_mask;
	size_t n_rules;
	uint64_t generation;
	struct ip_slot *ip_slots;
	size_t ip_mask;
	struct name_slot *name_slots;
	size_t name_mask;
	struct node_slot *node_slots;
	size_t node_mask;
	struct key_slot *key_slots;
	size_t key_mask;
	size_t n_services;
	uint64_t qps_mark; /* build number for the QPS registry */
};

static inline uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

static inline uint64_t ip_hash(const struct em_addr *a, uint8_t protocol)
{
	uint64_t w0, w1;
	memcpy(&w0, a->b, 8);
	memcpy(&w1, a->b + 8, 8);
	return mix64(w0 ^
	             mix64(w1 ^ ((uint64_t)a->port << 16 | (uint64_t)a->family << 8 | protocol)));
}

static uint64_t name_hash(const char *ns, const char *name)
{
	uint64_t h = em_hash64(ns, strlen(ns), EM_HASH_SEED);
	h = em_hash64("/", 1, h);
	return em_hash64(name, strlen(name), h);
}

static size_t pow2_at_least(size_t n)
{
	size_t c = 8;
	while (c < n)
		c <<= 1;
	return c;
}

/* Reader side ------------------------------------------------------------- */

static struct em_table *live_table;

#ifdef EM_TSAN
char em_rcu_tsan_token;
#endif

/* The pointer is read with an acquire load and swapped with acq_rel: what
 * rcu_dereference/rcu_xchg_pointer do on this architecture, spelled so that
 * ThreadSanitizer also sees the ordering. Grace periods stay liburcu's. */
const struct em_table *em_table_current(void)
{
	return __atomic_load_n(&live_table, __ATOMIC_ACQUIRE);
}

const struct em_svc_port *em_table_lookup(const struct em_table *t, const struct em_addr *dst,
                                          uint8_t protocol)
{
	size_t i = ip_hash(dst, protocol) & t->ip_mask;
	for (;;) {
		const struct ip_slot *s = &t->ip_slots[i];
		if (!s->sp)
			return NULL;
		if (s->protocol == protocol && em_addr_eq(&s->addr, dst))
			return s->sp;
		i = (i + 1) & t->ip_mask;
	}
}

const struct em_service *em_table_service(const struct em_table *t, const char *ns,
                                          const char *name)
{
	uint64_t h = name_hash(ns, name);
	size_t i = h & t->name_mask;
	for (;;) {
		const struct name_slot *s = &t->name_slots[i];
		if (!s->svc)
			return NULL;
		if (s->hash == h && strcmp(s->svc->ns, ns) == 0 && strcmp(s->svc->name, name) == 0)
			return s->svc;
		i = (i + 1) & t->name_mask;
	}
}

const struct em_svc_port *em_service_port(const struct em_service *svc, uint16_t port,
                                          uint8_t protocol)
{
	for (uint32_t i = 0; i < svc->n_ports; i++)
		if (svc->ports[i].port == port && svc->ports[i].protocol == protocol)
			return &svc->ports[i];
	return NULL;
}

const struct em_svc_port *em_table_next_port(const struct em_table *t, size_t *cursor)
{
	if (!t->key_slots)
		return NULL;
	while (*cursor <= t->key_mask) {
		const struct em_svc_port *sp = t->key_slots[(*cursor)++].sp;
		if (sp)
			return sp;
	}
	return NULL;
}

const struct em_svc_port *em_table_port_by_key(const struct em_table *t, uint64_t key)
{
	size_t i = mix64(key) & t->key_mask;
	for (;;) {
		const struct key_slot *s = &t->key_slots[i];
		if (!s->sp)
			return NULL;
		if (s->sp->key == key)
			return s->sp;
		i = (i + 1) & t->key_mask;
	}
}

const struct em_node_info *em_table_node(const struct em_table *t, const char *name)
{
	uint64_t h = em_hash64(name, strlen(name), EM_HASH_SEED);
	size_t i = h & t->node_mask;
	for (;;) {
		const struct node_slot *s = &t->node_slots[i];
		if (!s->node)
			return NULL;
		if (s->hash == h && strcmp(s->node->name, name) == 0)
			return s->node;
		i = (i + 1) & t->node_mask;
	}
}

/* Seeds that keep the rule hashes apart from the service names'. */
#define RULE_KEY_SEED  (EM_HASH_SEED ^ 0x72756c656b6579ULL)
#define RULE_PATH_SEED (EM_HASH_SEED ^ 0x72756c6570617468ULL)

uint64_t em_rule_key(const char *ns, const char *name)
{
	uint64_t h = em_hash64(ns, strlen(ns), RULE_KEY_SEED);
	h = em_hash64("/", 1, h);
	return em_hash64(name, strlen(name), h);
}

const struct em_rule *em_table_rule_by_key(const struct em_table *t, uint64_t key)
{
	for (size_t i = key & t->rule_mask;; i = (i + 1) & t->rule_mask) {
		const struct rule_slot *s = &t->rule_keys[i];
		if (!s->rule || s->hash == key)
			return s->rule;
	}
}

const struct em_rule *em_table_rule(const struct em_table *t, const char *ns, const char *name)
{
	uint64_t key = em_rule_key(ns, name);
	for (size_t i = key & t->rule_mask;; i = (i + 1) & t->rule_mask) {
		const struct rule_slot *s = &t->rule_keys[i];
		if (!s->rule)
			return NULL;
		if (s->hash == key && strcmp(s->rule->ns, ns) == 0 &&
		    strcmp(s->rule->name, name) == 0)
			return s->rule;
	}
}

/* Paths are hashed piece by piece, a piece starting at each '/' ("/a/b/"
 * is "/a", "/b", "/"), so that a request's prefixes on segment boundaries
 * are hashed in one pass over it: a match costs O(path) hashing and one
 * probe per segment, whatever the path holds. */
static uint64_t path_hash(uint64_t h_ns, const char *path, size_t len)
{
	uint64_t h = h_ns;
	for (size_t i = 0, j; i < len; i = j) {
		for (j = i + 1; j < len && path[j] != '/'; j++)
			;
		h = em_hash64(path + i, j - i, h);
	}
	return h;
}

static const struct em_rule *rule_path_find(const struct em_table *t, const char *ns, uint64_t h,
                                            const char *path, size_t len)
{
	for (size_t i = h & t->rule_mask;; i = (i + 1) & t->rule_mask) {
		const struct rule_slot *s = &t->rule_paths[i];
		if (!s->rule)
			return NULL;
		if (s->hash == h && strlen(s->rule->source_path) == len &&
		    memcmp(s->rule->source_path, path, len) == 0 && strcmp(s->rule->ns, ns) == 0)
			return s->rule;
	}
}

const struct em_rule *em_table_rule_match(const struct em_table *t, const char *ns,
                                          const char *path, size_t path_len, size_t *matched)
{
	const struct em_rule *r, *best = NULL;
	uint64_t h_ns, h;
	size_t end = 0, i, j;

	if (!t->n_rules || !path_len || path[0] != '/')
		return NULL;
	while (end < path_len && path[end] != '?' && path[end] != '#')
		end++;
	h_ns = em_hash64(ns, strlen(ns), RULE_PATH_SEED);
	/* The candidates, shortest first (the last hit is the longest): "/",
	 * then at the end of each piece the prefix up to there (a '/' or the
	 * end follows it) and, before a '/', the prefix with it (a rule path
	 * ending in '/'). */
	best = rule_path_find(t, ns, em_hash64("/", 1, h_ns), path, 1);
	for (i = 0, h = h_ns; i < end; i = j) {
		for (j = i + 1; j < end && path[j] != '/'; j++)
			;
		h = em_hash64(path + i, j - i, h);
		if ((r = rule_path_find(t, ns, h, path, j)))
			best = r;
		if (j < end && (r = rule_path_find(t, ns, em_hash64("/", 1, h), path, j + 1)))
			best = r;
	}
	if (best && matched)
		*matched = strlen(best->source_path);
	return best;
}

uint64_t em_table_generation(const struct em_table *t)
{
	return t->generation;
}

size_t em_table_service_count(const struct em_table *t)
{
	return t->n_services;
}

size_t em_table_bytes(const struct em_table *t)
{
	return t->arena.bytes;
}

/* Builder ----------------------------------------------------------------- */

/* Temporary index from "ns/name" to a chain of object indices, used to find
 * the Endpoints/EndpointSlices of a Service and the Pod of an address. */
struct group_index {
	struct {
		uint64_t hash;
		const char *ns, *name;
		size_t len_ns, len_name;
		ssize_t head;
	} * slots;
	size_t mask;
	ssize_t *next;
};

static uint64_t name_hash_n(const char *ns, size_t nns, const char *name, size_t nname)
{
	uint64_t h = em_hash64(ns, nns, EM_HASH_SEED);
	h = em_hash64("/", 1, h);
	return em_hash64(name, nname, h);
}

static int group_init(struct group_index *g, size_t n_keys, size_t n_objs)
{
	size_t cap = pow2_at_least(n_keys * 2 + 1);
	g->slots = calloc(cap, sizeof(*g->slots));
	g->next = malloc((n_objs ? n_objs : 1) * sizeof(*g->next));
	g->mask = cap - 1;
	return g->slots && g->next ? 0 : -ENOMEM;
}

static void group_free(struct group_index *g)
{
	free(g->slots);
	free(g->next);
}

static size_t group_find(const struct group_index *g, const char *ns, size_t nns, const char *name,
                         size_t nname, uint64_t h)
{
	size_t i = h & g->mask;
	while (g->slots[i].ns) {
		if (g->slots[i].hash == h && g->slots[i].len_ns == nns &&
		    g->slots[i].len_name == nname && memcmp(g->slots[i].ns, ns, nns) == 0 &&
		    memcmp(g->slots[i].name, name, nname) == 0)
			return i;
		i = (i + 1) & g->mask;
	}
	return i;
}

static void group_add(struct group_index *g, const char *ns, const char *name, size_t idx)
{
	size_t nns = strlen(ns), nname = strlen(name);
	uint64_t h = name_hash_n(ns, nns, name, nname);
	size_t i = group_find(g, ns, nns, name, nname, h);
	if (!g->slots[i].ns) {
		g->slots[i].hash = h;
		g->slots[i].ns = ns;
		g->slots[i].name = name;
		g->slots[i].len_ns = nns;
		g->slots[i].len_name = nname;
		g->slots[i].head = -1;
	}
	g->next[idx] = g->slots[i].head;
	g->slots[i].head = (ssize_t)idx;
}

static ssize_t group_head(const struct group_index *g, const char *ns, size_t nns, const char *name,
                          size_t nname)
{
	uint64_t h = name_hash_n(ns, nns, name, nname);
	size_t i = group_find(g, ns, nns, name, nname, h);
	return g->slots[i].ns ? g->slots[i].head : -1;
}

/* A growable scratch vector of endpoints, reused for every service port. */
struct ep_vec {
	struct em_endpoint *v;
	size_t n, cap;
};

static int ep_push(struct ep_vec *vec, const struct em_endpoint *e)
{
	if (vec->n == vec->cap) {
		size_t cap = vec->cap ? vec->cap * 2 : 64;
		void *p = realloc(vec->v, cap * sizeof(*vec->v));
		if (!p)
			return -ENOMEM;
		vec->v = p;
		vec->cap = cap;
	}
	vec->v[vec->n++] = *e;
	return 0;
}

struct builder {
	const struct em_table_input *in;
	struct em_table *t;
	struct group_index res;  /* RuleEndpoints by ns/name */
	struct group_index eps;  /* Endpoints and EndpointSlices by service */
	struct group_index pods; /* Pods by ns/name */
	struct ep_vec vec;
	/* Node names are interned: a few nodes serve many endpoints. */
	const char **nodes;
	size_t nodes_mask, n_nodes;
};

static const char *intern_node(struct builder *b, const char *name)
{
	if (!name[0])
		return "";
	if ((b->n_nodes + 1) * 2 > b->nodes_mask) {
		size_t cap = b->nodes_mask ? (b->nodes_mask + 1) * 2 : 64;
		const char **v = calloc(cap, sizeof(*v));
		if (!v)
			return NULL;
		for (size_t i = 0; i <= b->nodes_mask && b->nodes; i++) {
			if (!b->nodes[i])
				continue;
			size_t j = em_hash64(b->nodes[i], strlen(b->nodes[i]), EM_HASH_SEED) &
			           (cap - 1);
			while (v[j])
				j = (j + 1) & (cap - 1);
			v[j] = b->nodes[i];
		}
		free(b->nodes);
		b->nodes = v;
		b->nodes_mask = cap - 1;
	}
	size_t i = em_hash64(name, strlen(name), EM_HASH_SEED) & b->nodes_mask;
	for (; b->nodes[i]; i = (i + 1) & b->nodes_mask)
		if (strcmp(b->nodes[i], name) == 0)
			return b->nodes[i];
	b->nodes[i] = em_arena_strdup(&b->t->arena, name);
	if (b->nodes[i])
		b->n_nodes++;
	return b->nodes[i];
}

static bool port_matches(const struct em_k8s_svc_port *sp, const struct em_k8s_ep_port *ep)
{
	return ep->protocol == sp->protocol && strcmp(ep->name ? ep->name : "", sp->name) == 0;
}

/* Target port of <sp> on the pod behind <addr> when the endpoint object
 * gives no port: numeric targetPort, else the pod's container port of that
 * name. 0 when it cannot be resolved. */
static uint16_t resolve_target(struct builder *b, const struct em_k8s_svc_port *sp,
                               const struct em_k8s_ep_addr *addr)
{
	if (!sp->target_port_name)
		return sp->target_port ? sp->target_port : sp->port;
	if (!addr->pod_name || !addr->pod_namespace)
		return 0;
	ssize_t i = group_head(&b->pods, addr->pod_namespace, strlen(addr->pod_namespace),
	                       addr->pod_name, strlen(addr->pod_name));
	for (; i >= 0; i = b->pods.next[i]) {
		const struct em_k8s_pod *pod = &b->in->objs[i]->pod;
		for (size_t k = 0; k < pod->n_ports; k++)
			if (pod->ports[k].protocol == sp->protocol &&
			    strcmp(pod->ports[k].name, sp->target_port_name) == 0)
				return pod->ports[k].port;
	}
	return 0;
}

static int add_endpoint(struct builder *b, const struct em_k8s_ep_addr *a, uint16_t port)
{
	struct em_endpoint e = {0};
	const char *local = b->in->local_node ? b->in->local_node : "";

	if (!port || !a->ip.family)
		return 0;
	e.addr = a->ip;
	e.addr.port = port;
	e.ready = a->ready;
	e.node = a->node_name ? a->node_name : "";
	e.local = !a->node_name || !a->node_name[0] || strcmp(a->node_name, local) == 0;
	if (a->pod_name) {
		const char *ns = a->pod_namespace ? a->pod_namespace : "";
		size_t n1 = strlen(ns), n2 = strlen(a->pod_name);
		char *p = em_arena_alloc(&b->t->arena, n1 + n2 + 2);
		if (!p)
			return -ENOMEM;
		memcpy(p, ns, n1);
		p[n1] = '/';
		memcpy(p + n1 + 1, a->pod_name, n2 + 1);
		e.pod = p;
	} else {
		e.pod = "";
	}
	e.node = intern_node(b, e.node);
	if (!e.node)
		return -ENOMEM;
	return ep_push(&b->vec, &e);
}

/* Endpoints of one service port, from slices if the service has any, else
 * from its Endpoints object(s). */
static int collect_endpoints(struct builder *b, const struct em_k8s_object *svc,
                             const struct em_k8s_svc_port *sp)
{
	ssize_t head = group_head(&b->eps, svc->ns, strlen(svc->ns), svc->name, strlen(svc->name));
	bool have_slices = false;
	int rc;

	for (ssize_t i = head; i >= 0; i = b->eps.next[i])
		if (b->in->objs[i]->kind == EM_KIND_ENDPOINTSLICE)
			have_slices = true;

	for (ssize_t i = head; i >= 0; i = b->eps.next[i]) {
		const struct em_k8s_object *o = b->in->objs[i];
		if (have_slices && o->kind == EM_KIND_ENDPOINTSLICE) {
			const struct em_k8s_endpointslice *s = &o->slice;
			if (!s->address_type)
				continue;
			for (size_t p = 0; p < s->n_ports; p++) {
				if (!port_matches(sp, &s->ports[p]))
					continue;
				for (size_t k = 0; k < s->n_addrs; k++)
					if ((rc = add_endpoint(b, &s->addrs[k], s->ports[p].port)))
						return rc;
			}
			if (s->n_ports == 0)
				for (size_t k = 0; k < s->n_addrs; k++)
					if ((rc = add_endpoint(
					             b, &s->addrs[k],
					             resolve_target(b, sp, &s->addrs[k]))))
						return rc;
		} else if (!have_slices && o->kind == EM_KIND_ENDPOINTS) {
			for (size_t j = 0; j < o->ep.n_subsets; j++) {
				const struct em_k8s_subset *sub = &o->ep.subsets[j];
				for (size_t p = 0; p < sub->n_ports; p++) {
					if (!port_matches(sp, &sub->ports[p]))
						continue;
					for (size_t k = 0; k < sub->n_addrs; k++)
						if ((rc = add_endpoint(b, &sub->addrs[k],
						                       sub->ports[p].port)))
							return rc;
				}
				if (sub->n_ports == 0)
					for (size_t k = 0; k < sub->n_addrs; k++)
						if ((rc = add_endpoint(
						             b, &sub->addrs[k],
						             resolve_target(b, sp,
						                            &sub->addrs[k]))))
							return rc;
			}
		}
	}
	return 0;
}

static bool is_http_port(const struct em_k8s_svc_port *kp)
{
	if (kp->app_protocol)
		return strcmp(kp->app_protocol, "http") == 0 ||
		       strcmp(kp->app_protocol, "kubernetes.io/h2c") == 0;
	return strcmp(kp->name, "http") == 0 || strncmp(kp->name, "http-", 5) == 0 ||
	       strcmp(kp->name, "grpc") == 0 || strcmp(kp->name, "h2c") == 0;
}

static void insert_key(struct em_table *t, const struct em_svc_port *sp)
{
	size_t i = mix64(sp->key) & t->key_mask;
	while (t->key_slots[i].sp) {
		if (t->key_slots[i].sp->key == sp->key)
			return; /* a 64-bit collision: the first port keeps the key */
		i = (i + 1) & t->key_mask;
	}
	t->key_slots[i].sp = sp;
}

static int build_service(struct builder *b, const struct em_k8s_object *o, struct em_service *svc)
{
	const struct em_k8s_service *ks = &o->svc;
	struct em_svc_port *ports;
	struct em_addr *ips;
	struct em_arena *a = &b->t->arena;
	int rc;

	svc->ns = em_arena_strdup(a, o->ns);
	svc->name = em_arena_strdup(a, o->name);
	svc->type = ks->type;
	svc->headless = ks->headless;
	svc->affinity_client_ip = ks->affinity_client_ip;
	svc->affinity_timeout_s = ks->affinity_timeout_s;
	svc->fastpath_off = ks->fastpath_off;
	svc->qps_rate = 0;
	svc->qps_burst = 0;
	svc->qps = NULL;
	if (ks->qps > 0) {
		svc->qps_rate = ks->qps;
		svc->qps_burst = ks->qps_burst > 0 ? ks->qps_burst : em_qps_default_burst(ks->qps);
		svc->qps =
		        em_qps_get(o->ns, o->name, svc->qps_rate, svc->qps_burst, b->t->qps_mark);
		if (!svc->qps)
			return -ENOMEM;
	}
	ips = em_arena_alloc(a, (ks->n_cluster_ips + 1) * sizeof(*ips));
	ports = em_arena_alloc(a, (ks->n_ports + 1) * sizeof(*ports));
	if (!svc->ns || !svc->name || !ips || !ports)
		return -ENOMEM;
	if (ks->n_cluster_ips)
		memcpy(ips, ks->cluster_ips, ks->n_cluster_ips * sizeof(*ips));
	svc->cluster_ips = ips;
	svc->n_cluster_ips = (uint32_t)ks->n_cluster_ips;

	for (size_t i = 0; i < ks->n_ports; i++) {
		const struct em_k8s_svc_port *kp = &ks->ports[i];
		struct em_svc_port *p = &ports[i];
		struct em_endpoint *eps;
		size_t n_ready = 0, w = 0;
		char keybuf[16];

		b->vec.n = 0;
		if ((rc = collect_endpoints(b, o, kp)))
			return rc;
		eps = em_arena_alloc(a, (b->vec.n + 1) * sizeof(*eps));
		if (!eps)
			return -ENOMEM;
		/* ready endpoints first, each group in the source order */
		for (size_t k = 0; k < b->vec.n; k++)
			if (b->vec.v[k].ready)
				eps[w++] = b->vec.v[k];
		n_ready = w;
		for (size_t k = 0; k < b->vec.n; k++)
			if (!b->vec.v[k].ready)
				eps[w++] = b->vec.v[k];

		p->svc = svc;
		p->name = em_arena_strdup(a, kp->name);
		if (!p->name)
			return -ENOMEM;
		p->port = kp->port;
		p->protocol = kp->protocol;
		p->http = is_http_port(kp);
		p->qps = svc->qps;
		p->endpoints = eps;
		p->n_endpoints = (uint32_t)w;
		p->n_ready = (uint32_t)n_ready;
		p->key = name_hash(o->ns, o->name);
		snprintf(keybuf, sizeof(keybuf), "/%u/%u", kp->port, kp->protocol);
		p->key = em_hash64(keybuf, strlen(keybuf), p->key);
		p->mslot = kp->protocol == IPPROTO_TCP
		                   ? em_svcstat_get(p->key, o->ns, o->name, kp->port, b->t->qps_mark)
		                   : EM_SVCSTAT_SINK;
	}
	svc->ports = ports;
	svc->n_ports = (uint32_t)ks->n_ports;
	return 0;
}

static void insert_ip(struct em_table *t, const struct em_addr *ip, const struct em_svc_port *sp)
{
	struct em_addr key = *ip;
	key.port = sp->port;
	size_t i = ip_hash(&key, sp->protocol) & t->ip_mask;
	while (t->ip_slots[i].sp) {
		if (t->ip_slots[i].protocol == sp->protocol &&
		    em_addr_eq(&t->ip_slots[i].addr, &key))
			return; /* two services claim one cluster IP: first wins */
		i = (i + 1) & t->ip_mask;
	}
	t->ip_slots[i].addr = key;
	t->ip_slots[i].protocol = sp->protocol;
	t->ip_slots[i].sp = sp;
}

static void insert_name(struct em_table *t, const struct em_service *svc)
{
	uint64_t h = name_hash(svc->ns, svc->name);
	size_t i = h & t->name_mask;
	while (t->name_slots[i].svc) {
		if (t->name_slots[i].hash == h && strcmp(t->name_slots[i].svc->ns, svc->ns) == 0 &&
		    strcmp(t->name_slots[i].svc->name, svc->name) == 0)
			return;
		i = (i + 1) & t->name_mask;
	}
	t->name_slots[i].hash = h;
	t->name_slots[i].svc = svc;
}

static int build_node(struct em_table *t, const struct em_k8s_object *o)
{
	struct em_node_info *n = em_arena_alloc(&t->arena, sizeof(*n));
	if (!n)
		return -ENOMEM;
	memset(n, 0, sizeof(*n));
	n->name = em_arena_strdup(&t->arena, o->name);
	if (!n->name)
		return -ENOMEM;
	for (size_t i = 0; i < o->node.n_addrs; i++)
		if (o->node.addrs[i].ip.family &&
		    strcmp(o->node.addrs[i].type, "InternalIP") == 0) {
			n->internal_ip = o->node.addrs[i].ip;
			break;
		}
	n->tunnel_port = o->node.tunnel_port;
	n->relay = o->node.relay;

	uint64_t h = em_hash64(n->name, strlen(n->name), EM_HASH_SEED);
	size_t i = h & t->node_mask;
	while (t->node_slots[i].node) {
		if (t->node_slots[i].hash == h && strcmp(t->node_slots[i].node->name, n->name) == 0)
			return 0;
		i = (i + 1) & t->node_mask;
	}
	t->node_slots[i].hash = h;
	t->node_slots[i].node = n;
	return 0;
}

/* The RuleEndpoint <ns>/<name>, or NULL. */
static const struct em_k8s_object *rule_endpoint(const struct builder *b, const char *ns,
                                                 const char *name)
{
	ssize_t i = group_head(&b->res, ns, strlen(ns), name, strlen(name));
	return i >= 0 ? b->in->objs[i] : NULL;
}

static char *arena_printf(struct em_arena *a, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
static char *arena_printf(struct em_arena *a, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return em_arena_strdup(a, buf);
}

/* Indexes active Rule <r> by its source path. Of two Rules of a namespace
 * with one path, the name sorting first is served, whatever the order of
 * the store, and the other is inactive. */
static int insert_rule_path(struct em_table *t, struct em_rule *r)
{
	uint64_t h = path_hash(em_hash64(r->ns, strlen(r->ns), RULE_PATH_SEED), r->source_path,
	                       strlen(r->source_path));
	size_t i = h & t->rule_mask;
	struct em_rule *loser;

	for (; t->rule_paths[i].rule; i = (i + 1) & t->rule_mask) {
		struct em_rule *o = (struct em_rule *)t->rule_paths[i].rule;
		if (t->rule_paths[i].hash != h || strcmp(o->source_path, r->source_path) != 0 ||
		    strcmp(o->ns, r->ns) != 0)
			continue;
		loser = strcmp(r->name, o->name) < 0 ? o : r;
		if (loser == o)
			t->rule_paths[i].rule = r;
		loser->active = false;
		loser->inactive_reason = arena_printf(
		        &t->arena, "spec.sourceResource.path: \"%s\" is served by rule %s",
		        r->source_path, loser == o ? r->name : o->name);
		return loser->inactive_reason ? 0 : -ENOMEM;
	}
	t->rule_paths[i].hash = h;
	t->rule_paths[i].rule = r;
	return 0;
}

static int build_rule(struct builder *b, size_t idx, struct em_rule *r)
{
	const struct em_k8s_object *o = b->in->objs[idx];
	const struct em_k8s_rule *kr = &o->rule;
	const struct em_k8s_object *src = rule_endpoint(b, o->ns, kr->source);
	const struct em_k8s_object *tgt = rule_endpoint(b, o->ns, kr->target);
	struct em_table *t = b->t;
	struct em_arena *a = &t->arena;
	char why[400];
	size_t i;

	r->ns = em_arena_strdup(a, o->ns);
	r->name = em_arena_strdup(a, o->name);
	r->source = em_arena_strdup(a, kr->source);
	r->target = em_arena_strdup(a, kr->target);
	r->source_path = kr->source_path ? em_arena_strdup(a, kr->source_path) : NULL;
	r->target_path = kr->target_path ? em_arena_strdup(a, kr->target_path) : NULL;
	r->svc_ns = kr->svc_ns ? em_arena_strdup(a, kr->svc_ns) : NULL;
	r->svc_name = kr->svc_name ? em_arena_strdup(a, kr->svc_name) : NULL;
	r->svc_port = kr->svc_port;
	r->local_port = tgt && tgt->re.type == EM_RE_SERVICEBUS ? tgt->re.service_port : 0;
	r->status = b->in->rule_status ? b->in->rule_status[idx] : NULL;
	r->active = em_router_check(o, src, tgt, why, sizeof(why)) == 0;
	r->inactive_reason = em_arena_strdup(a, r->active ? "" : why);
	if (!r->ns || !r->name || !r->source || !r->target || !r->inactive_reason ||
	    (kr->source_path && !r->source_path) || (kr->target_path && !r->target_path) ||
	    (kr->svc_ns && !r->svc_ns) || (kr->svc_name && !r->svc_name))
		return -ENOMEM;
	r->key = em_rule_key(r->ns, r->name);
	for (i = r->key & t->rule_mask; t->rule_keys[i].rule; i = (i + 1) & t->rule_mask)
		;
	t->rule_keys[i].hash = r->key;
	t->rule_keys[i].rule = r;
	t->n_rules++;
	return r->active ? insert_rule_path(t, r) : 0;
}

struct em_table *em_table_build(const struct em_table_input *in, uint64_t generation)
{
	struct builder b = {.in = in};
	size_t n_svc = 0, n_ep = 0, n_pod = 0, n_node = 0, n_ips = 0, n_re = 0, n_rule = 0;
	size_t n_ports = 0;
	struct em_table *t = calloc(1, sizeof(*t));
	struct em_service *svcs;
	struct em_rule *rules;

	if (!t)
		return NULL;
	b.t = t;
	t->generation = generation;
	t->qps_mark = em_qps_next_mark();
	/* A snapshot holds the whole cluster: start with large blocks. */
	t->arena.block = EM_ARENA_BLOCK_MAX;

	for (size_t i = 0; i < in->n_objs; i++) {
		const struct em_k8s_object *o = in->objs[i];
		switch (o->kind) {
		case EM_KIND_SERVICE:
			n_svc++;
			n_ips += o->svc.n_cluster_ips * (o->svc.n_ports ? o->svc.n_ports : 1);
			n_ports += o->svc.n_ports;
			break;
		case EM_KIND_ENDPOINTS:
		case EM_KIND_ENDPOINTSLICE:
			n_ep++;
			break;
		case EM_KIND_POD:
			n_pod++;
			break;
		case EM_KIND_NODE:
			n_node++;
			break;
		case EM_KIND_RULEENDPOINT:
			n_re++;
			break;
		case EM_KIND_RULE:
			n_rule++;
			break;
		default:
			break;
		}
	}

	t->ip_mask = pow2_at_least(n_ips * 2 + 1) - 1;
	t->name_mask = pow2_at_least(n_svc * 2 + 1) - 1;
	t->node_mask = pow2_at_least(n_node * 2 + 1) - 1;
	t->key_mask = pow2_at_least(n_ports * 2 + 1) - 1;
	t->ip_slots = em_arena_alloc(&t->arena, (t->ip_mask + 1) * sizeof(*t->ip_slots));
	t->name_slots = em_arena_alloc(&t->arena, (t->name_mask + 1) * sizeof(*t->name_slots));
	t->node_slots = em_arena_alloc(&t->arena, (t->node_mask + 1) * sizeof(*t->node_slots));
	t->key_slots = em_arena_alloc(&t->arena, (t->key_mask + 1) * sizeof(*t->key_slots));
	svcs = em_arena_alloc(&t->arena, (n_svc + 1) * sizeof(*svcs));
	t->rule_mask = pow2_at_least(n_rule * 2 + 1) - 1;
	t->rule_keys = em_arena_calloc(&t->arena, t->rule_mask + 1, sizeof(*t->rule_keys));
	t->rule_paths = em_arena_calloc(&t->arena, t->rule_mask + 1, sizeof(*t->rule_paths));
	rules = em_arena_calloc(&t->arena, n_rule + 1, sizeof(*rules));
	if (!t->ip_slots || !t->name_slots || !t->node_slots || !t->key_slots || !svcs ||
	    !t->rule_keys || !t->rule_paths || !rules)
		goto fail;
	memset(t->key_slots, 0, (t->key_mask + 1) * sizeof(*t->key_slots));
	memset(t->ip_slots, 0, (t->ip_mask + 1) * sizeof(*t->ip_slots));
	memset(t->name_slots, 0, (t->name_mask + 1) * sizeof(*t->name_slots));
	memset(t->node_slots, 0, (t->node_mask + 1) * sizeof(*t->node_slots));

	if (group_init(&b.eps, n_ep, in->n_objs) || group_init(&b.pods, n_pod, in->n_objs) ||
	    group_init(&b.res, n_re, in->n_objs))
		goto fail;
	for (size_t i = 0; i < in->n_objs; i++) {
		const struct em_k8s_object *o = in->objs[i];
		if (o->kind == EM_KIND_ENDPOINTS)
			group_add(&b.eps, o->ns, o->name, i);
		else if (o->kind == EM_KIND_ENDPOINTSLICE && o->slice.service_name)
			group_add(&b.eps, o->ns, o->slice.service_name, i);
		else if (o->kind == EM_KIND_POD)
			group_add(&b.pods, o->ns, o->name, i);
		else if (o->kind == EM_KIND_RULEENDPOINT)
			group_add(&b.res, o->ns, o->name, i);
	}

	for (size_t i = 0; i < in->n_objs; i++) {
		const struct em_k8s_object *o = in->objs[i];
		if (o->kind == EM_KIND_NODE) {
			if (build_node(t, o))
				goto fail;
			continue;
		}
		if (o->kind == EM_KIND_RULE) {
			if (build_rule(&b, i, &rules[t->n_rules]))
				goto fail;
			continue;
		}
		if (o->kind != EM_KIND_SERVICE)
			continue;
		struct em_service *svc = &svcs[t->n_services++];
		if (build_service(&b, o, svc))
			goto fail;
		insert_name(t, svc);
		for (uint32_t p = 0; p < svc->n_ports; p++)
			insert_key(t, &svc->ports[p]);
		for (uint32_t k = 0; k < svc->n_cluster_ips; k++)
			for (uint32_t p = 0; p < svc->n_ports; p++)
				insert_ip(t, &svc->cluster_ips[k], &svc->ports[p]);
	}
	group_free(&b.eps);
	group_free(&b.pods);
	group_free(&b.res);
	free(b.vec.v);
	free(b.nodes);
	return t;
fail:
	EM_ERR("table", "out of memory building snapshot %llu", (unsigned long long)generation);
	group_free(&b.eps);
	group_free(&b.pods);
	group_free(&b.res);
	free(b.vec.v);
	free(b.nodes);
	em_table_free(t);
	return NULL;
}

void em_table_free(struct em_table *t)
{
	if (!t)
		return;
	em_arena_free(&t->arena);
	free(t);
}

void em_table_init(void)
{
	struct em_table_input in = {0};
	struct em_table *t = em_table_build(&in, 0);
	if (!t)
		abort(); /* nothing can run without a table, and this is startup */
	__atomic_store_n(&live_table, t, __ATOMIC_RELEASE);
}

void em_table_publish(struct em_table *t)
{
	struct em_table *old = __atomic_exchange_n(&live_table, t, __ATOMIC_ACQ_REL);
	em_rcu_synchronize();
	em_table_free(old);
	/* No reader holds the old snapshot's buckets any more. */
	em_qps_sweep(t->qps_mark);
	em_svcstat_sweep(t->qps_mark, em_now_ms());
}

void em_table_shutdown(void)
{
	struct em_table *old = __atomic_exchange_n(&live_table, NULL, __ATOMIC_ACQ_REL);
	em_table_free(old);
	em_qps_clear();
	em_svcstat_clear();
}

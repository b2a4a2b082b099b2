/* Connect-time balancing: loading the programs and keeping their maps equal
 * to the published service table. See engine/fastpath.h. */
#include "engine/fastpath.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "engine/fastpath_maps.h"
#include "fastpath.skel.h"
#include "proto/clock.h"
#include "proto/log.h"

#define CGROUP2_MAGIC 0x63677270u

/* One cluster IP and port in the maps, as this process last wrote it. */
struct fp_ent {
	struct fp_svc_key key;
	uint64_t hash; /* of what was written: id, flags, endpoints */
	uint64_t id;
	uint32_t slot, ver, n;
	uint32_t flags; /* fp_svc.flags written */
	uint16_t port;  /* service port, host order */
	char *name;    /* "ns/name" */
	/* Only during a publish: the snapshot's port and what to write. */
	const struct em_svc_port *sp;
	struct fp_svc val;
};

struct em_fastpath {
	pthread_mutex_t mu;
	struct fastpath *skel; /* NULL when off */
	bool on;
	char reason[256];
	char cgroup[PATH_MAX];
	int cg_fd;
	int fd_svcs, fd_eps, fd_counts, fd_hands;
	int ncpus;
	/* Entries sorted by key (memcmp order). */
	struct fp_ent *ents;
	size_t n_ents;
	/* Endpoint slots: every slot below <next_slot> not on the free list is
	 * an entry's. */
	uint32_t *free_slots;
	size_t n_free, cap_free;
	uint32_t next_slot;
	uint32_t ver_clock; /* the last endpoint-set version written */
	uint64_t publishes;
	uint64_t publish_ns;
	uint64_t generation; /* of the last table written */
	uint64_t write_failures;
	uint64_t failed_now; /* write failures of the publish running */
	struct fp_ep *eps; /* scratch: endpoints of one port, FP_MAX_EPS */
};

bool em_fastpath_port_ok(const struct em_svc_port *sp)
{
	const struct em_service *svc = sp->svc;

	if (sp->protocol != IPPROTO_TCP || !svc || svc->headless || !svc->n_cluster_ips ||
	    svc->qps || svc->qps_rate > 0 || svc->fastpath_off)
		return false;
	for (uint32_t i = 0; i < svc->n_ports; i++)
		if (svc->ports[i].http)
			return false;
	return true;
}

bool em_fastpath_on(const struct em_fastpath *fp)
{
	return fp && fp->on;
}

/* libbpf's own lines (a verifier log among them) are for debugging only: the
 * daemon logs the outcome once. */
static int libbpf_quiet(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char line[512];

	if (em_log_level < EM_LOG_DEBUG || level == LIBBPF_DEBUG)
		return 0;
	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\n")] = '\0';
	EM_DEBUG("fastpath", "libbpf: %s", line);
	return 0;
}

static void set_off(struct em_fastpath *fp, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(fp->reason, sizeof(fp->reason), fmt, ap);
	va_end(ap);
	fp->on = false;
}

/* Loads and attaches; on failure says why in fp->reason. */
static void attach(struct em_fastpath *fp)
{
	struct statfs sf;
	int err;

	fp->cg_fd = open(fp->cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fp->cg_fd < 0) {
		set_off(fp, "%s: %s", fp->cgroup, strerror(errno));
		return;
	}
	if (fstatfs(fp->cg_fd, &sf) != 0 || (uint32_t)sf.f_type != CGROUP2_MAGIC) {
		set_off(fp, "%s: not a cgroup v2 directory", fp->cgroup);
		return;
	}
	libbpf_set_print(libbpf_quiet);
	fp->skel = fastpath__open();
	if (!fp->skel) {
		set_off(fp, "cannot open the BPF programs: %s", strerror(errno));
		return;
	}
	if ((err = fastpath__load(fp->skel))) {
		set_off(fp, "cannot load the BPF programs: %s", strerror(-err));
		return;
	}
	struct {
		struct bpf_program *prog;
		struct bpf_link **link;
	} progs[] = {
	        {fp->skel->progs.fp_connect4, &fp->skel->links.fp_connect4},
	        {fp->skel->progs.fp_connect6, &fp->skel->links.fp_connect6},
	        {fp->skel->progs.fp_getpeername4, &fp->skel->links.fp_getpeername4},
	        {fp->skel->progs.fp_getpeername6, &fp->skel->links.fp_getpeername6},
	        {fp->skel->progs.fp_sockops, &fp->skel->links.fp_sockops},
	};
	for (size_t i = 0; i < sizeof(progs) / sizeof(progs[0]); i++) {
		*progs[i].link = bpf_program__attach_cgroup(progs[i].prog, fp->cg_fd);
		if (!*progs[i].link) {
			err = errno;
			set_off(fp, "cannot attach %s to %s: %s", bpf_program__name(progs[i].prog),
			        fp->cgroup, strerror(err));
			return;
		}
	}
	fp->fd_svcs = bpf_map__fd(fp->skel->maps.fp_svcs);
	fp->fd_eps = bpf_map__fd(fp->skel->maps.fp_eps);
	fp->fd_counts = bpf_map__fd(fp->skel->maps.fp_counts);
	fp->fd_hands = bpf_map__fd(fp->skel->maps.fp_hands);
	fp->ncpus = libbpf_num_possible_cpus();
	if (fp->ncpus <= 0) {
		set_off(fp, "cannot count the possible CPUs");
		return;
	}
	fp->on = true;
}

struct em_fastpath *em_fastpath_start(const struct em_config *cfg)
{
	struct em_fastpath *fp = calloc(1, sizeof(*fp));

	if (!fp || !(fp->eps = calloc(FP_MAX_EPS, sizeof(*fp->eps)))) {
		free(fp);
		return NULL;
	}
	pthread_mutex_init(&fp->mu, NULL);
	fp->cg_fd = -1;
	snprintf(fp->cgroup, sizeof(fp->cgroup), "%s", cfg->fastpath.cgroup);
	const char *env = getenv("EDGEMESH_FASTPATH");
	if (env && strcmp(env, "off") == 0)
		set_off(fp, "off by EDGEMESH_FASTPATH");
	else if (cfg->fastpath.mode == EM_FASTPATH_OFF)
		set_off(fp, "off in the config (fastpath.mode)");
	else
		attach(fp);
	if (fp->on) {
		EM_INFO("fastpath", "fastpath: on: cgroup %s", fp->cgroup);
	} else {
		EM_INFO("fastpath", "fastpath: off: %s", fp->reason);
		if (fp->skel) {
			fastpath__destroy(fp->skel);
			fp->skel = NULL;
		}
		if (fp->cg_fd >= 0)
			close(fp->cg_fd);
		fp->cg_fd = -1;
	}
	return fp;
}

/* ---- publish ------------------------------------------------------------ */

/* Orders entries by key: word by word, a total order that is all the merge
 * needs (not memcmp's byte order, and cheaper than its call). */
static int key_cmp(const void *a, const void *b)
{
	const struct fp_svc_key *x = &((const struct fp_ent *)a)->key;
	const struct fp_svc_key *y = &((const struct fp_ent *)b)->key;
	for (int i = 0; i < 4; i++)
		if (x->ip[i] != y->ip[i])
			return x->ip[i] < y->ip[i] ? -1 : 1;
	if (x->port != y->port)
		return x->port < y->port ? -1 : 1;
	return (int)x->family - (int)y->family;
}

/* A 64-bit digest of <len> bytes (a multiple of 4) of what is written for
 * an entry: word at a time, so that comparing with the last publish costs
 * little next to building the table. */
static uint64_t digest(const void *p, size_t len, uint64_t h)
{
	const uint8_t *b = p;
	for (size_t i = 0; i + 4 <= len; i += 4) {
		uint32_t w;
		memcpy(&w, b + i, 4);
		h = (h ^ w) * 0x9e3779b97f4a7c15ull;
		h ^= h >> 29;
	}
	return h;
}

static void key_of(const struct em_addr *ip, uint16_t port, struct fp_svc_key *k)
{
	memset(k, 0, sizeof(*k));
	k->family = ip->family == AF_INET6 ? 6 : 4;
	memcpy(k->ip, ip->b, ip->family == AF_INET6 ? 16 : 4);
	k->port = htons(port);
}

/* The ready endpoints of <sp> of <family> into fp->eps. Returns their
 * number, or -1 when there are more than FP_MAX_EPS. */
static int collect_eps(struct em_fastpath *fp, const struct em_svc_port *sp, uint8_t family)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < sp->n_ready; i++) {
		const struct em_endpoint *e = &sp->endpoints[i];
		if (e->addr.family != family)
			continue;
		if (n == FP_MAX_EPS)
			return -1;
		struct fp_ep *o = &fp->eps[n++];
		memset(o, 0, sizeof(*o));
		memcpy(o->ip, e->addr.b, family == AF_INET6 ? 16 : 4);
		o->port = htons(e->addr.port);
		o->family = family == AF_INET6 ? 6 : 4;
		o->local = e->local;
	}
	return (int)n;
}

static uint32_t slot_get(struct em_fastpath *fp)
{
	return fp->n_free ? fp->free_slots[--fp->n_free] : fp->next_slot++;
}

static void slot_put(struct em_fastpath *fp, uint32_t slot)
{
	if (fp->n_free == fp->cap_free) {
		size_t cap = fp->cap_free ? fp->cap_free * 2 : 256;
		uint32_t *p = realloc(fp->free_slots, cap * sizeof(*p));
		if (!p)
			return; /* the slot is lost, not reused: harmless */
		fp->free_slots = p;
		fp->cap_free = cap;
	}
	fp->free_slots[fp->n_free++] = slot;
}

static void del_eps(struct em_fastpath *fp, uint32_t slot, uint32_t ver, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		struct fp_ep_key ek = {.slot = slot, .ver = ver, .idx = i};
		bpf_map_delete_elem(fp->fd_eps, &ek);
	}
}

static void remove_ent(struct em_fastpath *fp, struct fp_ent *e)
{
	bpf_map_delete_elem(fp->fd_svcs, &e->key);
	del_eps(fp, e->slot, e->ver, e->n);
	bpf_map_delete_elem(fp->fd_counts, &e->key);
	slot_put(fp, e->slot);
	free(e->name);
	e->name = NULL;
}

/* Writes the new state of <ne> (endpoints in fp->eps, <ne>->val filled but
 * for slot and ver), <old> being what the maps hold for its key or NULL.
 * Returns 0, or -1 when a write failed (the key is then out of the maps). */
static int write_ent(struct em_fastpath *fp, struct fp_ent *ne, const struct fp_ent *old)
{
	ne->slot = old ? old->slot : slot_get(fp);
	/* Versions are never reused, slots are: a program that read a removed
	 * port's entry just before it went must not find another port's
	 * endpoints under the same (slot, version). */
	ne->ver = ++fp->ver_clock;
	ne->val.slot = ne->slot;
	ne->val.ver = ne->ver;
	for (uint32_t i = 0; i < ne->n; i++) {
		struct fp_ep_key ek = {.slot = ne->slot, .ver = ne->ver, .idx = i};
		if (bpf_map_update_elem(fp->fd_eps, &ek, &fp->eps[i], BPF_ANY))
			goto fail;
	}
	if (!old) {
		size_t sz = (size_t)fp->ncpus * sizeof(struct fp_count);
		void *zero = calloc(1, sz);
		int rc = zero ? bpf_map_update_elem(fp->fd_counts, &ne->key, zero, BPF_ANY) : -1;
		free(zero);
		if (rc)
			goto fail;
	}
	if (bpf_map_update_elem(fp->fd_svcs, &ne->key, &ne->val, BPF_ANY))
		goto fail;
	if (old)
		del_eps(fp, old->slot, old->ver, old->n);
	return 0;
fail:
	/* One line per publish: a full map would otherwise log every port. */
	if (fp->failed_now++ == 0)
		EM_WARN("fastpath", "service %s port %u: map write failed (%s); left to the engine",
		        ne->name ? ne->name : "?", ne->port, strerror(errno));
	fp->write_failures++;
	bpf_map_delete_elem(fp->fd_svcs, &ne->key);
	del_eps(fp, ne->slot, ne->ver, ne->n);
	if (old)
		del_eps(fp, old->slot, old->ver, old->n);
	bpf_map_delete_elem(fp->fd_counts, &ne->key);
	slot_put(fp, ne->slot);
	return -1;
}

/* The entries <t> asks for, sorted, with <sp> set and nothing written. */
static struct fp_ent *wanted(const struct em_table *t, size_t *n_out)
{
	size_t cap = 0, n = 0, cursor = 0;
	struct fp_ent *v = NULL;
	const struct em_svc_port *sp;

	while ((sp = em_table_next_port(t, &cursor))) {
		if (!em_fastpath_port_ok(sp))
			continue;
		for (uint32_t i = 0; i < sp->svc->n_cluster_ips; i++) {
			const struct em_addr *ip = &sp->svc->cluster_ips[i];
			if (ip->family != AF_INET && ip->family != AF_INET6)
				continue;
			if (n == cap) {
				cap = cap ? cap * 2 : 256;
				struct fp_ent *p = realloc(v, cap * sizeof(*p));
				if (!p) {
					free(v);
					return NULL;
				}
				v = p;
			}
			memset(&v[n], 0, sizeof(v[n]));
			key_of(ip, sp->port, &v[n].key);
			v[n].sp = sp;
			v[n].port = sp->port;
			v[n].id = sp->key;
			n++;
		}
	}
	if (n)
		qsort(v, n, sizeof(*v), key_cmp);
	*n_out = n;
	return v ? v : calloc(1, sizeof(*v));
}

/* Fills <e>'s value, endpoints (fp->eps) and hash from its port. Returns
 * false when it cannot be balanced in the kernel (no ready endpoint of the
 * family, or too many). */
static bool prepare(struct em_fastpath *fp, struct fp_ent *e, enum em_balancer algo)
{
	const struct em_service *svc = e->sp->svc;
	int n = collect_eps(fp, e->sp, e->key.family == 6 ? AF_INET6 : AF_INET);

	if (n <= 0)
		return false;
	e->n = (uint32_t)n;
	memset(&e->val, 0, sizeof(e->val));
	e->val.id = e->id;
	e->val.n = e->n;
	e->val.flags = (algo == EM_LB_RANDOM ? FP_RANDOM : 0) |
	               (svc->affinity_client_ip ? FP_AFFINITY : 0);
	e->val.affinity_ns = (uint64_t)svc->affinity_timeout_s * 1000000000ull;
	/* rr is the programs' to move: not part of what changed. */
	_Static_assert(sizeof(e->val) % 4 == 0 && sizeof(struct fp_ep) % 4 == 0,
	               "digest takes whole words");
	uint64_t h = digest(&e->val, sizeof(e->val), EM_HASH_SEED);
	e->hash = digest(fp->eps, e->n * sizeof(*fp->eps), h);
	return true;
}

void em_fastpath_publish(struct em_fastpath *fp, const struct em_table *t)
{
	if (!fp || !fp->on || !t)
		return;
	uint64_t t0 = em_now_ns();
	const struct em_config *cfg = em_config_current();
	enum em_balancer algo = cfg ? cfg->balancer : EM_LB_ROUND_ROBIN;
	size_t n_new = 0, kept = 0, i = 0, j = 0;
	struct fp_ent *nv = NULL;

	pthread_mutex_lock(&fp->mu);
	/* The first table comes from the main thread, later ones from the
	 * sync thread: an older one arriving last is not written. */
	if (fp->publishes && em_table_generation(t) < fp->generation) {
		pthread_mutex_unlock(&fp->mu);
		return;
	}
	fp->generation = em_table_generation(t);
	fp->failed_now = 0;
	if (algo != EM_LB_LEAST_REQUESTS)
		nv = wanted(t, &n_new);
	else
		nv = calloc(1, sizeof(*nv));
	if (!nv) {
		EM_WARN("fastpath", "publish: out of memory; the maps keep the last table");
		pthread_mutex_unlock(&fp->mu);
		return;
	}
	/* Merge walk: both arrays are sorted by key. Kept entries are
	 * compacted to the front of <nv>. */
	while (i < n_new || j < fp->n_ents) {
		int c = i == n_new       ? 1
		        : j == fp->n_ents ? -1
		                          : key_cmp(&nv[i], &fp->ents[j]);
		if (c > 0) { /* gone */
			remove_ent(fp, &fp->ents[j++]);
			continue;
		}
		struct fp_ent *ne = &nv[i++];
		struct fp_ent *old = c == 0 ? &fp->ents[j++] : NULL;
		if (!prepare(fp, ne, algo)) {
			if (old)
				remove_ent(fp, old);
			continue;
		}
		ne->flags = ne->val.flags;
		if (old && old->hash == ne->hash) {
			ne->slot = old->slot;
			ne->ver = old->ver;
			ne->name = old->name;
			old->name = NULL;
		} else {
			char name[512];
			snprintf(name, sizeof(name), "%s/%s", ne->sp->svc->ns, ne->sp->svc->name);
			ne->name = strdup(name);
			if (write_ent(fp, ne, old)) {
				free(ne->name);
				if (old) {
					free(old->name);
					old->name = NULL;
				}
				continue;
			}
			if (old) {
				free(old->name);
				old->name = NULL;
			}
		}
		ne->sp = NULL;
		nv[kept++] = *ne;
	}
	free(fp->ents);
	fp->ents = nv;
	fp->n_ents = kept;
	if (fp->failed_now > 1)
		EM_WARN("fastpath", "%" PRIu64 " ports could not be written; left to the engine",
		        fp->failed_now);
	fp->publishes++;
	fp->publish_ns = em_now_ns() - t0;
	pthread_mutex_unlock(&fp->mu);
}

/* ---- workers ------------------------------------------------------------ */

const struct em_endpoint *em_fastpath_handoff(struct em_fastpath *fp,
                                              const struct em_svc_port *sp,
                                              const struct em_addr *client,
                                              const struct em_addr *dst)
{
	struct fp_hand_key k;
	struct fp_ep v;
	struct em_addr a;

	if (!fp || !fp->on || client->family != dst->family)
		return NULL;
	memset(&k, 0, sizeof(k));
	k.family = client->family == AF_INET6 ? 6 : 4;
	memcpy(k.src, client->b, client->family == AF_INET6 ? 16 : 4);
	memcpy(k.dst, dst->b, dst->family == AF_INET6 ? 16 : 4);
	k.sport = htons(client->port);
	k.dport = htons(dst->port);
	if (bpf_map_lookup_and_delete_elem(fp->fd_hands, &k, &v))
		return NULL;
	memset(&a, 0, sizeof(a));
	a.family = v.family == 6 ? AF_INET6 : AF_INET;
	memcpy(a.b, v.ip, v.family == 6 ? 16 : 4);
	a.port = ntohs(v.port);
	for (uint32_t i = 0; i < sp->n_ready; i++)
		if (em_addr_eq(&sp->endpoints[i].addr, &a))
			return &sp->endpoints[i];
	return NULL;
}

/* ---- stats -------------------------------------------------------------- */

/* Adds <v> (NULL: out of memory) to <o> under the constant name <k>, not
 * copied: a stats reply with 10,000 ports makes 80,000 fewer allocations
 * (every scrape of /metrics builds one; the policy is a constant too). */
static bool add(cJSON *o, const char *k, cJSON *v)
{
	if (!v)
		return false;
	cJSON_AddItemToObjectCS(o, k, v);
	return true;
}

int em_fastpath_stats(struct em_fastpath *fp, struct cJSON *stats)
{
	cJSON *o = cJSON_AddObjectToObject(stats, "fastpath");
	if (!o)
		return -ENOMEM;
	if (!cJSON_AddStringToObject(o, "state", fp && fp->on ? "on" : "off"))
		return -ENOMEM;
	if (!fp)
		return cJSON_AddStringToObject(o, "reason", "not started") ? 0 : -ENOMEM;
	if (!fp->on && !cJSON_AddStringToObject(o, "reason", fp->reason))
		return -ENOMEM;
	if (!cJSON_AddStringToObject(o, "cgroup", fp->cgroup))
		return -ENOMEM;
	pthread_mutex_lock(&fp->mu);
	uint64_t conns = 0, hands = 0;
	int rc = -ENOMEM;
	struct fp_count *pc = fp->on ? calloc((size_t)fp->ncpus, sizeof(*pc)) : NULL;
	cJSON *list = cJSON_CreateArray();
	if (!list || (fp->on && !pc))
		goto out;
	for (size_t i = 0; i < fp->n_ents; i++) {
		const struct fp_ent *e = &fp->ents[i];
		uint64_t c = 0, h = 0;
		if (bpf_map_lookup_elem(fp->fd_counts, &e->key, pc) == 0)
			for (int k = 0; k < fp->ncpus; k++) {
				c += pc[k].conns;
				h += pc[k].handoffs;
			}
		conns += c;
		hands += h;
		char ip[64];
		struct em_addr a = {.family = e->key.family == 6 ? AF_INET6 : AF_INET};
		memcpy(a.b, e->key.ip, e->key.family == 6 ? 16 : 4);
		cJSON *s = cJSON_CreateObject();
		if (!s)
			goto out;
		cJSON_AddItemToArray(list, s);
		if (!add(s, "service", cJSON_CreateString(e->name ? e->name : "")) ||
		    !add(s, "cluster_ip",
		         cJSON_CreateString(em_addr_format(&a, false, ip, sizeof(ip)))) ||
		    !add(s, "port", cJSON_CreateNumber(e->port)) ||
		    !add(s, "endpoints", cJSON_CreateNumber(e->n)) ||
		    !add(s, "policy",
		         cJSON_CreateStringReference(e->flags & FP_AFFINITY ? "client_ip"
		                                     : e->flags & FP_RANDOM ? "random"
		                                                            : "round_robin")) ||
		    !add(s, "connections", cJSON_CreateNumber((double)c)) ||
		    !add(s, "handoffs", cJSON_CreateNumber((double)h)))
			goto out;
	}
	if (!cJSON_AddNumberToObject(o, "ports", (double)fp->n_ents) ||
	    !cJSON_AddNumberToObject(o, "publishes", (double)fp->publishes) ||
	    !cJSON_AddNumberToObject(o, "publish_us", (double)(fp->publish_ns / 1000)) ||
	    !cJSON_AddNumberToObject(o, "write_failures", (double)fp->write_failures) ||
	    !cJSON_AddNumberToObject(o, "connections", (double)conns) ||
	    !cJSON_AddNumberToObject(o, "handoffs", (double)hands))
		goto out;
	cJSON_AddItemToObject(o, "services", list);
	list = NULL;
	rc = 0;
out:
	pthread_mutex_unlock(&fp->mu);
	cJSON_Delete(list);
	free(pc);
	return rc;
}

/* ---- teardown ----------------------------------------------------------- */

void em_fastpath_detach(struct em_fastpath *fp)
{
	if (!fp || !fp->skel)
		return;
	struct bpf_link **links[] = {
	        &fp->skel->links.fp_connect4,     &fp->skel->links.fp_connect6,
	        &fp->skel->links.fp_getpeername4, &fp->skel->links.fp_getpeername6,
	        &fp->skel->links.fp_sockops,
	};
	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
		bpf_link__destroy(*links[i]);
		*links[i] = NULL;
	}
}

void em_fastpath_free(struct em_fastpath *fp)
{
	if (!fp)
		return;
	em_fastpath_detach(fp);
	if (fp->skel)
		fastpath__destroy(fp->skel);
	if (fp->cg_fd >= 0)
		close(fp->cg_fd);
	for (size_t i = 0; i < fp->n_ents; i++)
		free(fp->ents[i].name);
	free(fp->ents);
	free(fp->free_slots);
	free(fp->eps);
	pthread_mutex_destroy(&fp->mu);
	free(fp);
}

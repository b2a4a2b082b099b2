/* The node's tunnels seen from every worker: which workers hold an accepted
 * tunnel from which node, the streams handed from one worker to another,
 * the cloud's node name, and the relay's counters per pair of edges. */
#include "engine/tunnel_int.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "engine/engine.h"
#include "proto/log.h"

/* Nodes the hub keeps: beyond this many distinct names a node's accepted
 * tunnels are usable only by the worker holding them. Pairs likewise: past
 * HUB_MAX_PAIRS relayed streams are counted only in the worker counters. */
#define HUB_MAX_NODES 65536u
#define HUB_MAX_PAIRS 65536u

struct hub_node {
	uint64_t hash;
	uint16_t *count; /* per worker: its up accepted tunnels from the node */
	char name[EM_FRAME_MAX_NAME + 1];
};

struct em_hub {
	pthread_mutex_t mu;
	unsigned n_workers;
	struct hub_node *nodes; /* open addressing, never removed */
	size_t node_mask, n_nodes;
	struct tun_handoff **inbox; /* per worker, newest first */
	struct tun_relay_pair **pairs;
	size_t n_pairs, cap_pairs;
	char cloud_name[EM_FRAME_MAX_NAME + 1];
};

int em_tun_hub_init(struct em_engine *e)
{
	struct em_hub *h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	pthread_mutex_init(&h->mu, NULL);
	h->n_workers = e->n_workers;
	h->inbox = calloc(e->n_workers, sizeof(*h->inbox));
	if (!h->inbox) {
		free(h);
		return -ENOMEM;
	}
	e->hub = h;
	return 0;
}

void em_tun_hub_free(struct em_engine *e)
{
	struct em_hub *h = e->hub;
	if (!h)
		return;
	for (size_t i = 0; h->nodes && i <= h->node_mask; i++)
		free(h->nodes[i].count);
	free(h->nodes);
	for (unsigned k = 0; k < h->n_workers; k++)
		while (h->inbox[k]) {
			struct tun_handoff *o = h->inbox[k];
			h->inbox[k] = o->next;
			close(o->fd);
			free(o);
		}
	free(h->inbox);
	for (size_t i = 0; i < h->n_pairs; i++)
		free(h->pairs[i]);
	free(h->pairs);
	pthread_mutex_destroy(&h->mu);
	free(h);
	e->hub = NULL;
}

static struct hub_node *node_slot(struct em_hub *h, const char *name, bool make)
{
	uint64_t hash = em_hash64(name, strlen(name), EM_HASH_SEED);
	if (h->nodes) {
		for (size_t i = hash & h->node_mask;; i = (i + 1) & h->node_mask) {
			struct hub_node *n = &h->nodes[i];
			if (!n->count)
				break;
			if (n->hash == hash && strcmp(n->name, name) == 0)
				return n;
		}
	}
	if (!make || h->n_nodes >= HUB_MAX_NODES || strlen(name) > EM_FRAME_MAX_NAME)
		return NULL;
	if (!h->nodes || (h->n_nodes + 1) * 2 > h->node_mask + 1) {
		size_t cap = h->nodes ? (h->node_mask + 1) * 2 : 64;
		struct hub_node *nn = calloc(cap, sizeof(*nn));
		if (!nn)
			return NULL;
		for (size_t i = 0; h->nodes && i <= h->node_mask; i++) {
			if (!h->nodes[i].count)
				continue;
			size_t j = h->nodes[i].hash & (cap - 1);
			while (nn[j].count)
				j = (j + 1) & (cap - 1);
			nn[j] = h->nodes[i];
		}
		free(h->nodes);
		h->nodes = nn;
		h->node_mask = cap - 1;
	}
	uint16_t *count = calloc(h->n_workers, sizeof(*count));
	if (!count)
		return NULL;
	size_t i = hash & h->node_mask;
	while (h->nodes[i].count)
		i = (i + 1) & h->node_mask;
	struct hub_node *n = &h->nodes[i];
	n->hash = hash;
	n->count = count;
	snprintf(n->name, sizeof(n->name), "%s", name);
	h->n_nodes++;
	return n;
}

void tun_hub_count(struct em_engine *e, const char *node, unsigned worker, int delta)
{
	struct em_hub *h = e->hub;
	pthread_mutex_lock(&h->mu);
	struct hub_node *n = node_slot(h, node, delta > 0);
	if (n && worker < h->n_workers) {
		if (delta > 0 && n->count[worker] < UINT16_MAX)
			n->count[worker]++;
		else if (delta < 0 && n->count[worker] > 0)
			n->count[worker]--;
	}
	pthread_mutex_unlock(&h->mu);
}

int tun_hub_find(struct em_engine *e, const char *node, unsigned from)
{
	struct em_hub *h = e->hub;
	int found = -1;
	pthread_mutex_lock(&h->mu);
	struct hub_node *n = node_slot(h, node, false);
	/* Start after <from> so that several workers spread over the holders. */
	for (unsigned i = 1; n && i <= h->n_workers; i++) {
		unsigned k = (from + i) % h->n_workers;
		if (n->count[k]) {
			found = (int)k;
			break;
		}
	}
	pthread_mutex_unlock(&h->mu);
	return found;
}

int tun_hub_post(struct em_engine *e, unsigned worker, struct tun_handoff *o)
{
	struct em_hub *h = e->hub;
	pthread_mutex_lock(&h->mu);
	o->next = h->inbox[worker];
	h->inbox[worker] = o;
	pthread_mutex_unlock(&h->mu);
	uint64_t one = 1;
	if (write(e->workers[worker].wake_fd, &one, sizeof(one)) == -1)
		return -errno; /* stays queued: taken at the next wake, or freed at stop */
	return 0;
}

struct tun_handoff *tun_hub_take(struct em_engine *e, unsigned worker)
{
	struct em_hub *h = e->hub;
	pthread_mutex_lock(&h->mu);
	struct tun_handoff *l = h->inbox[worker], *r = NULL;
	h->inbox[worker] = NULL;
	pthread_mutex_unlock(&h->mu);
	while (l) { /* oldest first */
		struct tun_handoff *n = l->next;
		l->next = r;
		r = l;
		l = n;
	}
	return r;
}

void tun_hub_set_cloud(struct em_engine *e, const char *name)
{
	struct em_hub *h = e->hub;
	pthread_mutex_lock(&h->mu);
	snprintf(h->cloud_name, sizeof(h->cloud_name), "%s", name);
	pthread_mutex_unlock(&h->mu);
}

bool tun_hub_is_cloud(struct em_engine *e, const char *name)
{
	struct em_hub *h = e->hub;
	pthread_mutex_lock(&h->mu);
	bool yes = h->cloud_name[0] && strcmp(h->cloud_name, name) == 0;
	pthread_mutex_unlock(&h->mu);
	return yes;
}

struct tun_relay_pair *tun_hub_pair(struct em_engine *e, const char *a, const char *b)
{
	struct em_hub *h = e->hub;
	struct tun_relay_pair *p = NULL;
	pthread_mutex_lock(&h->mu);
	for (size_t i = 0; i < h->n_pairs; i++)
		if (strcmp(h->pairs[i]->a, a) == 0 && strcmp(h->pairs[i]->b, b) == 0) {
			p = h->pairs[i];
			break;
		}
	if (!p && h->n_pairs < HUB_MAX_PAIRS) {
		if (h->n_pairs == h->cap_pairs) {
			size_t cap = h->cap_pairs ? h->cap_pairs * 2 : 16;
			void *np = realloc(h->pairs, cap * sizeof(*h->pairs));
			if (np) {
				h->pairs = np;
				h->cap_pairs = cap;
			}
		}
		if (h->n_pairs < h->cap_pairs && (p = calloc(1, sizeof(*p)))) {
			snprintf(p->a, sizeof(p->a), "%s", a);
			snprintf(p->b, sizeof(p->b), "%s", b);
			h->pairs[h->n_pairs++] = p;
		}
	}
	pthread_mutex_unlock(&h->mu);
	return p;
}

int em_engine_relay_stats(void *eng, struct cJSON *stats)
{
	struct em_engine *e = eng;
	struct em_hub *h = e->hub;
	cJSON *arr = cJSON_AddArrayToObject(stats, "relay");
	if (!arr)
		return -ENOMEM;
	pthread_mutex_lock(&h->mu);
	int rc = 0;
	for (size_t i = 0; i < h->n_pairs && !rc; i++) {
		const struct tun_relay_pair *p = h->pairs[i];
		cJSON *o = cJSON_CreateObject();
		if (!o || !cJSON_AddItemToArray(arr, o) || !cJSON_AddStringToObject(o, "from", p->a) ||
		    !cJSON_AddStringToObject(o, "to", p->b) ||
		    !cJSON_AddNumberToObject(o, "streams", (double)atomic_load(&p->streams)) ||
		    !cJSON_AddNumberToObject(o, "refused", (double)atomic_load(&p->refused)) ||
		    !cJSON_AddNumberToObject(o, "bytes_from_to",
		                             (double)atomic_load(&p->bytes[0])) ||
		    !cJSON_AddNumberToObject(o, "bytes_to_from", (double)atomic_load(&p->bytes[1])))
			rc = -ENOMEM;
	}
	pthread_mutex_unlock(&h->mu);
	return rc;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct em_peer_figures *)a)->name,
	              ((const struct em_peer_figures *)b)->name);
}

/* "peers": the workers' published figures merged by peer name. */
int em_engine_peer_stats(void *eng, cJSON *stats)
{
	struct em_engine *e = eng;
	size_t n = 0, cap = 0;
	struct em_peer_figures *all = NULL;
	int rc = 0;
	for (unsigned k = 0; k < e->n_workers && !rc; k++) {
		struct em_worker *w = &e->workers[k];
		pthread_mutex_lock(&w->peers_mu);
		if (n + w->n_peers > cap) {
			size_t nc = (n + w->n_peers) * 2;
			void *p = realloc(all, nc * sizeof(*all));
			if (p) {
				all = p;
				cap = nc;
			} else {
				rc = -ENOMEM;
			}
		}
		if (!rc && w->n_peers) {
			memcpy(all + n, w->peers, w->n_peers * sizeof(*all));
			n += w->n_peers;
		}
		pthread_mutex_unlock(&w->peers_mu);
	}
	cJSON *arr = rc ? NULL : cJSON_AddArrayToObject(stats, "peers");
	if (!arr)
		rc = -ENOMEM;
	if (n)
		qsort(all, n, sizeof(*all), by_name);
	for (size_t i = 0; i < n && !rc;) {
		struct em_peer_figures f = all[i];
		for (i++; i < n && strcmp(all[i].name, f.name) == 0; i++) {
			f.rx_bytes += all[i].rx_bytes;
			f.tx_bytes += all[i].tx_bytes;
			f.up += all[i].up;
			f.up_tls += all[i].up_tls;
			f.streams += all[i].streams;
		}
		cJSON *o = cJSON_CreateObject();
		if (!o || !cJSON_AddItemToArray(arr, o) || !cJSON_AddStringToObject(o, "peer", f.name) ||
		    !cJSON_AddBoolToObject(o, "up", f.up > 0) ||
		    !cJSON_AddNumberToObject(o, "tunnels_up", f.up) ||
		    !cJSON_AddBoolToObject(o, "tls", f.up && f.up_tls == f.up) ||
		    !cJSON_AddNumberToObject(o, "bytes_received", (double)f.rx_bytes) ||
		    !cJSON_AddNumberToObject(o, "bytes_sent", (double)f.tx_bytes) ||
		    !cJSON_AddNumberToObject(o, "streams", f.streams))
			rc = -ENOMEM;
	}
	free(all);
	return rc;
}

int em_engine_stats(void *eng, struct cJSON *stats)
{
	int rc = em_engine_relay_stats(eng, stats);
	return rc ? rc : em_engine_peer_stats(eng, stats);
}

/* A bounded, generation-ordered log of the cloud's recent changes. */
#include "store/changelog.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct rec {
	uint64_t generation;
	enum em_bh_op op;
	char *key, *json;
	size_t bytes;
};

struct em_clog {
	struct rec *ring;
	size_t cap, head, n; /* entries ring[head .. head + n) modulo cap */
	size_t bytes, max_bytes;
	uint64_t floor, newest, dropped;
};

struct em_clog *em_clog_new(uint64_t start, size_t max_entries, size_t max_bytes)
{
	struct em_clog *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->cap = max_entries ? max_entries : 1;
	c->ring = calloc(c->cap, sizeof(*c->ring));
	if (!c->ring) {
		free(c);
		return NULL;
	}
	c->max_bytes = max_bytes;
	c->floor = c->newest = start;
	return c;
}

static void drop_oldest(struct em_clog *c)
{
	struct rec *r = &c->ring[c->head];
	c->floor = r->generation;
	c->bytes -= r->bytes;
	free(r->key);
	free(r->json);
	*r = (struct rec){0};
	c->head = (c->head + 1) % c->cap;
	c->n--;
	c->dropped++;
}

/* Drops the oldest changes, whole generations, until one more entry of
 * <need> bytes fits. */
static void make_room(struct em_clog *c, size_t need)
{
	while (c->n && (c->n == c->cap || c->bytes + need > c->max_bytes)) {
		uint64_t g = c->ring[c->head].generation;
		while (c->n && c->ring[c->head].generation == g)
			drop_oldest(c);
	}
}

void em_clog_reset(struct em_clog *c, uint64_t generation)
{
	while (c->n)
		drop_oldest(c);
	if (generation > c->newest)
		c->newest = generation;
	c->floor = c->newest;
}

int em_clog_append(struct em_clog *c, uint64_t generation, enum em_bh_op op, const char *key,
                   const char *json)
{
	bool del = op == EM_BH_DELETE;
	if ((op != EM_BH_INSERT && op != EM_BH_UPDATE && !del) || !key || del != !json ||
	    generation < c->newest)
		return -EINVAL;
	size_t bytes = strlen(key) + (json ? strlen(json) : 0);
	if (bytes > c->max_bytes) {
		/* Cannot be kept: whoever is behind it needs a snapshot. */
		while (c->n)
			drop_oldest(c);
		c->floor = c->newest = generation;
		c->dropped++;
		return 0;
	}
	make_room(c, bytes);
	struct rec r = {.generation = generation, .op = op, .bytes = bytes, .key = strdup(key)};
	r.json = json ? strdup(json) : NULL;
	if (!r.key || (json && !r.json)) {
		free(r.key);
		free(r.json);
		return -ENOMEM;
	}
	c->ring[(c->head + c->n) % c->cap] = r;
	c->n++;
	c->bytes += bytes;
	c->newest = generation;
	return 0;
}

int em_clog_since(const struct em_clog *c, uint64_t since, em_clog_cb cb, void *arg)
{
	if (since < c->floor || since > c->newest)
		return -ERANGE;
	for (size_t i = 0; i < c->n; i++) {
		const struct rec *r = &c->ring[(c->head + i) % c->cap];
		if (r->generation <= since)
			continue;
		struct em_clog_entry e = {r->generation, r->op, r->key, r->json};
		int rc = cb(arg, &e);
		if (rc)
			return rc;
	}
	return 0;
}

void em_clog_stats(const struct em_clog *c, struct em_clog_stats *out)
{
	*out = (struct em_clog_stats){.entries = c->n,
	                              .bytes = c->bytes,
	                              .floor = c->floor,
	                              .newest = c->newest,
	                              .dropped = c->dropped};
}

void em_clog_free(struct em_clog *c)
{
	if (!c)
		return;
	while (c->n)
		drop_oldest(c);
	free(c->ring);
	free(c);
}

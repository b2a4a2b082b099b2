/* Per Service port counters: the slot registry and the workers' sets. */
#include "store/svcstat.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "proto/clock.h"

const uint64_t em_svcstat_lat_ns[EM_SVCSTAT_LAT_BOUNDS] = {
        500000ull,     1000000ull,    2500000ull,    5000000ull,     10000000ull,
        25000000ull,   50000000ull,   100000000ull,  250000000ull,   500000000ull,
        1000000000ull, 2500000000ull, 5000000000ull, 10000000000ull,
};
const char *const em_svcstat_lat_le[EM_SVCSTAT_LAT_BOUNDS] = {
        "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
        "0.1",    "0.25",  "0.5",    "1",     "2.5",  "5",     "10",
};

#define CHUNK_BYTES (EM_SVCSTAT_CHUNK * sizeof(struct em_svcstat))

struct reg {
	struct reg *next;
	uint64_t key;
	uint64_t mark;
	uint32_t slot;
	uint16_t port;
	char *ns, *name;
	char *labels;
	size_t labels_len;
	struct em_svcstat *base; /* a reused slot's counts when it was given: its zero */
	uint64_t base_epoch;     /* <base> holds for the sets of this epoch only */
};

struct freed {
	uint32_t slot;
	uint64_t since_ms;
};

/* <mu> guards the sets, the chunk count and <n_slots> against engine start
 * (em_svcstat_workers), which may run on another thread than the
 * registry's. The workers never take it. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct em_svcstat_set **sets;
static unsigned n_sets;
static uint32_t n_slots = 1; /* slot 0: the sink */
static uint32_t n_chunks;     /* chunks every set has */
static uint64_t epoch;        /* em_svcstat_workers calls so far */

/* Registry: sync thread only. */
static struct reg **buckets;
static size_t n_buckets, n_regs;
static struct freed *fifo;
static size_t fifo_head, fifo_len, fifo_cap;
static uint32_t reuse_ms = EM_SVCSTAT_REUSE_MS;
/* The port holding each slot (NULL: free or the sink), so that a scrape
 * walks the workers' counters in memory order. */
static struct reg **owner;
static uint32_t owner_cap;
/* em_svcstat_view's arrays, kept from one scrape to the next. */
static const char **view_labels;
static size_t *view_len;
static struct em_svcstat *view_sum;
static size_t view_cap;

static void view_free(void)
{
	free(view_labels);
	free(view_len);
	free(view_sum);
	view_labels = NULL;
	view_len = NULL;
	view_sum = NULL;
	view_cap = 0;
}

void em_svcstat_set_reuse_ms(uint32_t ms)
{
	reuse_ms = ms ? ms : EM_SVCSTAT_REUSE_MS;
}

/* Gives every set chunks up to <want>. Under <mu>. */
static int grow_chunks(uint32_t want)
{
	while (n_chunks < want) {
		for (unsigned i = 0; i < n_sets; i++) {
			if (sets[i]->chunk[n_chunks])
				continue;
			/* Mapped, not calloc'd (which may clear heap pages):
			 * pages come in as the worker writes them, so the slots
			 * of ports without traffic cost no memory. */
			void *p = mmap(NULL, CHUNK_BYTES, PROT_READ | PROT_WRITE,
			               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (p == MAP_FAILED)
				return -ENOMEM;
			sets[i]->chunk[n_chunks] = p;
		}
		n_chunks++;
	}
	return 0;
}

static void free_sets(void)
{
	for (unsigned i = 0; i < n_sets; i++) {
		for (uint32_t c = 0; c < EM_SVCSTAT_MAX_CHUNKS; c++)
			if (sets[i]->chunk[c])
				munmap(sets[i]->chunk[c], CHUNK_BYTES);
		free(sets[i]);
	}
	free(sets);
	sets = NULL;
	n_sets = 0;
	n_chunks = 0;
}

int em_svcstat_workers(unsigned n)
{
	pthread_mutex_lock(&mu);
	free_sets();
	int rc = 0;
	sets = calloc(n ? n : 1, sizeof(*sets));
	if (!sets)
		rc = -ENOMEM;
	for (unsigned i = 0; !rc && i < n; i++) {
		if (!(sets[i] = calloc(1, sizeof(*sets[i]))))
			rc = -ENOMEM;
		else
			n_sets = i + 1;
	}
	if (!rc)
		rc = grow_chunks((n_slots + EM_SVCSTAT_CHUNK - 1) >> EM_SVCSTAT_CHUNK_SHIFT);
	if (rc)
		free_sets();
	/* New sets count from zero: no baseline of the old ones applies. */
	epoch++;
	pthread_mutex_unlock(&mu);
	return rc;
}

struct em_svcstat_set *em_svcstat_set(unsigned i)
{
	pthread_mutex_lock(&mu);
	struct em_svcstat_set *s = i < n_sets ? sets[i] : NULL;
	pthread_mutex_unlock(&mu);
	return s;
}

/* The sum of <slot> over the sets. Under <mu>. */
static void sum_slot(uint32_t slot, struct em_svcstat *out)
{
	uint64_t *o = (uint64_t *)out;
	memset(out, 0, sizeof(*out));
	for (unsigned i = 0; i < n_sets; i++) {
		const uint64_t *c = (const uint64_t *)em_svcstat_at(sets[i], slot);
		for (size_t k = 0; k < EM_SVCSTAT_WORDS; k++)
			o[k] += __atomic_load_n(&c[k], __ATOMIC_RELAXED);
	}
}

/* Appends <v> to <p>, escaped as a label value; returns the new end. */
static char *esc(char *p, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"') {
			*p++ = '\\';
			*p++ = *v;
		} else if (*v == '\n') {
			*p++ = '\\';
			*p++ = 'n';
		} else {
			*p++ = *v;
		}
	}
	return p;
}

static char *make_labels(const char *ns, const char *name, uint16_t port, size_t *len)
{
	char *l = malloc(2 * (strlen(ns) + strlen(name)) + 64);
	if (!l)
		return NULL;
	char *p = l;
	memcpy(p, "namespace=\"", 11);
	p = esc(p + 11, ns);
	memcpy(p, "\",service=\"", 11);
	p = esc(p + 11, name);
	p += sprintf(p, "\",port=\"%u\"", port);
	*len = (size_t)(p - l);
	return l;
}

static int rehash(void)
{
	size_t nb = n_buckets ? n_buckets * 2 : 256;
	struct reg **b = calloc(nb, sizeof(*b));
	if (!b)
		return -ENOMEM;
	for (size_t i = 0; i < n_buckets; i++)
		for (struct reg *r = buckets[i], *n; r; r = n) {
			n = r->next;
			r->next = b[r->key & (nb - 1)];
			b[r->key & (nb - 1)] = r;
		}
	free(buckets);
	buckets = b;
	n_buckets = nb;
	return 0;
}

/* A slot for a new port: a dropped one that waited long enough, with its
 * counts as the baseline, else a new one. */
static uint32_t new_slot(struct em_svcstat **base, uint64_t *base_epoch)
{
	*base = NULL;
	if (fifo_len && em_now_ms() - fifo[fifo_head].since_ms >= reuse_ms) {
		struct em_svcstat *b = malloc(sizeof(*b));
		if (!b)
			return EM_SVCSTAT_SINK;
		uint32_t slot = fifo[fifo_head].slot;
		fifo_head = (fifo_head + 1) % fifo_cap;
		fifo_len--;
		pthread_mutex_lock(&mu);
		sum_slot(slot, b);
		*base_epoch = epoch;
		pthread_mutex_unlock(&mu);
		*base = b;
		return slot;
	}
	pthread_mutex_lock(&mu);
	uint32_t slot = EM_SVCSTAT_SINK;
	if (n_slots < EM_SVCSTAT_MAX_SLOTS &&
	    grow_chunks(((n_slots + 1) + EM_SVCSTAT_CHUNK - 1) >> EM_SVCSTAT_CHUNK_SHIFT) == 0)
		slot = n_slots++;
	pthread_mutex_unlock(&mu);
	return slot;
}

/* Room in <owner> for every slot below <n>. */
static int owner_room(uint32_t n)
{
	if (n <= owner_cap)
		return 0;
	uint32_t cap = owner_cap ? owner_cap : 1024;
	while (cap < n)
		cap *= 2;
	struct reg **o = realloc(owner, cap * sizeof(*o));
	if (!o)
		return -ENOMEM;
	memset(o + owner_cap, 0, (cap - owner_cap) * sizeof(*o));
	owner = o;
	owner_cap = cap;
	return 0;
}

uint32_t em_svcstat_get(uint64_t key, const char *ns, const char *name, uint16_t port,
                        uint64_t mark)
{
	if (n_buckets) {
		for (struct reg *r = buckets[key & (n_buckets - 1)]; r; r = r->next)
			if (r->key == key && r->port == port && strcmp(r->ns, ns) == 0 &&
			    strcmp(r->name, name) == 0) {
				r->mark = mark;
				return r->slot;
			}
	}
	if ((n_regs + 1 > n_buckets && rehash()) || owner_room(n_slots + 1))
		return EM_SVCSTAT_SINK;
	struct reg *r = calloc(1, sizeof(*r));
	if (!r)
		return EM_SVCSTAT_SINK;
	r->ns = strdup(ns);
	r->name = strdup(name);
	r->labels = make_labels(ns, name, port, &r->labels_len);
	if (!r->ns || !r->name || !r->labels)
		goto fail;
	r->slot = new_slot(&r->base, &r->base_epoch);
	if (r->slot == EM_SVCSTAT_SINK)
		goto fail;
	r->key = key;
	r->port = port;
	r->mark = mark;
	r->next = buckets[key & (n_buckets - 1)];
	buckets[key & (n_buckets - 1)] = r;
	owner[r->slot] = r;
	n_regs++;
	return r->slot;
fail:
	free(r->ns);
	free(r->name);
	free(r->labels);
	free(r);
	return EM_SVCSTAT_SINK;
}

static void reg_free(struct reg *r)
{
	free(r->ns);
	free(r->name);
	free(r->labels);
	free(r->base);
	free(r);
}

/* Queues <slot> for reuse; a slot that finds no room is lost (counted
 * nowhere, its memory stays with the chunk). */
static void fifo_push(uint32_t slot, uint64_t now_ms)
{
	if (fifo_len == fifo_cap) {
		size_t cap = fifo_cap ? fifo_cap * 2 : 64;
		struct freed *f = malloc(cap * sizeof(*f));
		if (!f)
			return;
		for (size_t i = 0; i < fifo_len; i++)
			f[i] = fifo[(fifo_head + i) % fifo_cap];
		free(fifo);
		fifo = f;
		fifo_cap = cap;
		fifo_head = 0;
	}
	fifo[(fifo_head + fifo_len) % fifo_cap] = (struct freed){slot, now_ms};
	fifo_len++;
}

void em_svcstat_sweep(uint64_t mark, uint64_t now_ms)
{
	for (size_t b = 0; b < n_buckets; b++) {
		struct reg **pp = &buckets[b];
		while (*pp) {
			struct reg *r = *pp;
			if (r->mark >= mark) {
				pp = &r->next;
				continue;
			}
			*pp = r->next;
			owner[r->slot] = NULL;
			fifo_push(r->slot, now_ms);
			reg_free(r);
			n_regs--;
		}
	}
}

void em_svcstat_clear(void)
{
	for (size_t b = 0; b < n_buckets; b++)
		for (struct reg *r = buckets[b], *n; r; r = n) {
			n = r->next;
			reg_free(r);
		}
	free(buckets);
	buckets = NULL;
	n_buckets = n_regs = 0;
	free(fifo);
	fifo = NULL;
	fifo_head = fifo_len = fifo_cap = 0;
	view_free();
	free(owner);
	owner = NULL;
	owner_cap = 0;
	pthread_mutex_lock(&mu);
	free_sets();
	n_slots = 1;
	pthread_mutex_unlock(&mu);
}

size_t em_svcstat_count(void)
{
	return n_regs;
}

int em_svcstat_view(struct em_svcstat_view *v)
{
	memset(v, 0, sizeof(*v));
	if (n_regs > view_cap) {
		size_t cap = n_regs + n_regs / 4;
		free(view_labels);
		free(view_len);
		free(view_sum);
		view_labels = malloc(cap * sizeof(*view_labels));
		view_len = malloc(cap * sizeof(*view_len));
		view_sum = malloc(cap * sizeof(*view_sum));
		view_cap = cap;
		if (!view_labels || !view_len || !view_sum) {
			view_free();
			return -ENOMEM;
		}
	}
	size_t n = 0, bytes = 0;
	pthread_mutex_lock(&mu);
	/* In slot order: the sets' chunks are read front to back, and a
	 * port keeps its place in the page from one scrape to the next. */
	for (uint32_t slot = 1; slot < n_slots && slot < owner_cap; slot++) {
		const struct reg *r = owner[slot];
		if (!r)
			continue;
		struct em_svcstat *s = &view_sum[n];
		sum_slot(slot, s);
		if (r->base && r->base_epoch == epoch) {
			uint64_t *o = (uint64_t *)s;
			const uint64_t *z = (const uint64_t *)r->base;
			for (size_t k = 0; k < EM_SVCSTAT_WORDS; k++)
				o[k] = o[k] >= z[k] ? o[k] - z[k] : 0;
		}
		view_labels[n] = r->labels;
		view_len[n] = r->labels_len;
		bytes += r->labels_len;
		n++;
	}
	pthread_mutex_unlock(&mu);
	v->n = n;
	v->labels = view_labels;
	v->labels_len = view_len;
	v->sum = view_sum;
	v->labels_bytes = bytes;
	return 0;
}

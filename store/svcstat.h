/* Per Service port traffic counters for /metrics, counted by the workers in
 * memory of their own and summed by the scrape.
 *
 * Every TCP port of a Service in the table gets a slot, an index stored in
 * the snapshot (em_svc_port.mslot). Each worker has a set of counters per
 * slot (struct em_svcstat_set) that only it writes, with relaxed stores of
 * its own values: no atomic read-modify-write, no lock, no cache line
 * shared with another worker on the request path. The scrape (sync thread)
 * reads every worker's set with relaxed loads and sums them.
 *
 * Slots live in a registry keyed by the port's key (em_svc_port.key) that
 * outlives snapshots, like the QPS buckets (store/qps.h): a rebuild finds
 * a port's slot again, so its counters go on. A port no published snapshot
 * references any more is dropped from the registry at the sweep after the
 * publication (its series leave /metrics at once); its slot is handed to a
 * new port only after EM_SVCSTAT_REUSE_MS, with the counts it holds then
 * as that port's zero (the baseline), so counts of connections that
 * outlived their Service by more than that are credited to the new port.
 * Slot 0 is a sink that is never reported: a connection of no Service
 * counts there, so the workers never test for "no slot".
 *
 * Counter memory comes in chunks of EM_SVCSTAT_CHUNK slots per worker,
 * allocated before a snapshot using them is published and freed only at
 * em_svcstat_clear: a worker may keep a slot number past its snapshot (in
 * a connection) and still count into valid memory. */
#ifndef EM_STORE_SVCSTAT_H
#define EM_STORE_SVCSTAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Upper bounds of the upstream latency histogram buckets, in nanoseconds
 * (0.5 ms to 10 s); one more bucket counts what is above the last. */
#define EM_SVCSTAT_LAT_BOUNDS 14
extern const uint64_t em_svcstat_lat_ns[EM_SVCSTAT_LAT_BOUNDS];
/* The same bounds as Prometheus "le" label values. */
extern const char *const em_svcstat_lat_le[EM_SVCSTAT_LAT_BOUNDS];

#define EM_SVCSTAT_CHUNK_SHIFT 10
#define EM_SVCSTAT_CHUNK       (1u << EM_SVCSTAT_CHUNK_SHIFT)
#define EM_SVCSTAT_MAX_SLOTS   (1u << 20) /* past this, ports count in the sink */
#define EM_SVCSTAT_MAX_CHUNKS  (EM_SVCSTAT_MAX_SLOTS / EM_SVCSTAT_CHUNK)
#define EM_SVCSTAT_SINK        0u
#define EM_SVCSTAT_REUSE_MS    60000u

/* One worker's counters of one slot. */
struct em_svcstat {
	uint64_t connections;   /* client connections of the port */
	uint64_t requests;      /* HTTP requests */
	uint64_t responses[5];  /* HTTP responses by class, 1xx .. 5xx */
	uint64_t rx_bytes;      /* received from clients */
	uint64_t tx_bytes;      /* sent to clients */
	uint64_t connect_fail;  /* upstream connects that failed */
	uint64_t qps_rejected;  /* requests or connections over the QPS limit */
	uint64_t lat_sum_ns;    /* sum of the observed latencies */
	uint64_t lat[EM_SVCSTAT_LAT_BOUNDS + 1]; /* per bucket, not cumulative */
};
#define EM_SVCSTAT_WORDS (sizeof(struct em_svcstat) / sizeof(uint64_t))

/* A worker's counters of every slot. */
struct em_svcstat_set {
	struct em_svcstat *chunk[EM_SVCSTAT_MAX_CHUNKS];
};

/* The counters of <slot> in <set>: a slot of a snapshot the caller read,
 * or kept from one. */
static inline struct em_svcstat *em_svcstat_at(struct em_svcstat_set *set, uint32_t slot)
{
	return &set->chunk[slot >> EM_SVCSTAT_CHUNK_SHIFT][slot & (EM_SVCSTAT_CHUNK - 1)];
}

/* Adds <n> to a counter of the calling worker's own set: a plain load and
 * store (the scrape reads it concurrently, hence relaxed atomics). */
static inline void em_svcstat_add(uint64_t *c, uint64_t n)
{
	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

/* Index of the histogram bucket of <ns>. */
static inline unsigned em_svcstat_bucket(uint64_t ns)
{
	unsigned i = 0;
	while (i < EM_SVCSTAT_LAT_BOUNDS && ns > em_svcstat_lat_ns[i])
		i++;
	return i;
}

static inline void em_svcstat_observe(struct em_svcstat *s, uint64_t ns)
{
	em_svcstat_add(&s->lat[em_svcstat_bucket(ns)], 1);
	em_svcstat_add(&s->lat_sum_ns, ns);
}

/* Counts one response of HTTP status <status> (100 .. 599; others are
 * not counted). */
static inline void em_svcstat_status(struct em_svcstat *s, unsigned status)
{
	unsigned c = status / 100;
	if (c >= 1 && c <= 5)
		em_svcstat_add(&s->responses[c - 1], 1);
}

/* Registry (sync thread, as the table builds). ----------------------------- */

/* The slot of TCP port <port> of Service <ns>/<name>, whose key
 * (em_svc_port.key) is <key>, made when new, marked as referenced by build
 * <mark> (store/qps.h em_qps_next_mark). EM_SVCSTAT_SINK when the registry
 * is full or out of memory (the port is then not reported). */
uint32_t em_svcstat_get(uint64_t key, const char *ns, const char *name, uint16_t port,
                        uint64_t mark);

/* Drops the ports whose last reference is older than build <mark> (its
 * snapshot is published, no older one is read), at <now_ms>: their slots
 * may be reused from now_ms + EM_SVCSTAT_REUSE_MS on. */
void em_svcstat_sweep(uint64_t mark, uint64_t now_ms);

/* Sets how long a dropped slot waits before reuse (tests); 0 restores
 * EM_SVCSTAT_REUSE_MS. */
void em_svcstat_set_reuse_ms(uint32_t ms);

/* Drops every port and frees every set (at exit, once no worker runs). */
void em_svcstat_clear(void);

/* Workers (engine start and stop). ------------------------------------------ */

/* Makes the counter sets of <n> workers, empty (counts start at 0 for
 * every port); the sets of a previous call are freed, so no worker of it
 * may run. Any thread. Returns 0 or -ENOMEM. */
int em_svcstat_workers(unsigned n);

/* Worker <i>'s set (valid until the next em_svcstat_workers or
 * em_svcstat_clear); NULL when there is none. */
struct em_svcstat_set *em_svcstat_set(unsigned i);

/* Scrape (sync thread). ----------------------------------------------------- */

/* Every port of the registry (the TCP ports of the published table's
 * Services, with or without traffic): its label text
 * ("namespace=\"..\",service=\"..\",port=\"..\"", escaped, made once
 * when the port entered the registry) and its counters summed over the
 * workers, in slot order (a port keeps its place while it stays). The
 * arrays belong to the registry and are reused from one call to the next
 * (a scrape does not fault in fresh memory): valid until the next
 * registry call. */
struct em_svcstat_view {
	size_t n;
	const char *const *labels;
	const size_t *labels_len;
	const struct em_svcstat *sum;
	size_t labels_bytes; /* sum of labels_len */
};

/* Fills <v>. Returns 0 or -ENOMEM (then <v> is empty). */
int em_svcstat_view(struct em_svcstat_view *v);

/* Ports in the registry (the sink not counted). */
size_t em_svcstat_count(void);

#endif

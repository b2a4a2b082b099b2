/* The control stream between an edge and the cloud (tunnel/PROTOCOL.md 9),
 * the application side: what the messages say and what each side does with
 * them. The bytes travel over a tunnel stream that the engine bridges to one
 * end of a socketpair; this module sees only that socket.
 *
 * Cloud: every edge that opens the stream registers (node name, tunnel
 * port, version, start time, the cloud epoch and generation it applied
 * last). It is sent the changes since then from the change log, or, when
 * the log no longer has them (or the epoch is another: the cloud
 * restarted), a snapshot of every object, a page at a time as the edge
 * reads, closed by an end marker. From then on every change the store
 * makes is pushed, each run of them closed by a sync marker; the edge
 * acknowledges each marker. A registered edge becomes a Node (InternalIP:
 * the address its tunnel came from; edgemesh.io/tunnel-port: its port)
 * unless the store has that Node from another source. What each edge sends
 * is bounded (one message of EM_BH_MAX_MESSAGE); what it is sent waits in a
 * buffer of at most about EM_CTL_OUT_HIGH, filled only as it drains.
 *
 * Edge: keeps the stream open (asking the engine for it through the dial
 * callback, redialling with the tunnel's jittered backoff), applies what
 * arrives through the store in one transaction per run (a snapshot in
 * pages), marks those objects as coming from the cloud, and writes the
 * cloud's epoch and generation in the same transaction. After a snapshot's
 * end marker, objects marked as from the cloud that the snapshot lacked are
 * deleted; objects from elsewhere (meshctl apply on the edge) stay unless
 * the cloud sends the same key.
 *
 * Owned by the sync thread; only em_ctl_accept may be called from others. */
#ifndef EM_STORE_CONTROL_H
#define EM_STORE_CONTROL_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/em.h"

struct em_store;
struct em_clog;
struct em_config;
struct cJSON;

/* Unsent bytes past which a cloud session stops filling its buffer. */
#define EM_CTL_OUT_HIGH (64u << 10)
/* Objects per snapshot page and per edge transaction during a snapshot. */
#define EM_CTL_PAGE 256u
/* Longest node name (a DNS subdomain). */
#define EM_CTL_NODE_MAX 253
/* Edges the cloud serves at once; more are refused (the stream ends). */
#define EM_CTL_MAX_EDGES 16384u

struct em_ctl;

/* Edge: asks the engine to bridge a control stream to the cloud at
 * <cloud> to <fd> (em_engine_control_open). Takes <fd>. Returns 0 or
 * -errno. */
typedef int (*em_ctl_dial_fn)(void *ctx, int fd, const struct em_addr *cloud);

/* A control side for <cfg>'s role on store <st>: the cloud with change log
 * <clog> (required there), an edge with cfg->cloud.address set (else an
 * edge's side does nothing). Reads the edge's last applied epoch and
 * generation from the store. NULL when out of memory. */
struct em_ctl *em_ctl_new(const struct em_config *cfg, struct em_store *st, struct em_clog *clog);
void em_ctl_free(struct em_ctl *c);

/* Edge: the function that opens streams (NULL: the edge stays down). Any
 * thread; returns once no call of the previous one runs. */
void em_ctl_set_dialer(struct em_ctl *c, em_ctl_dial_fn fn, void *ctx);

/* Cloud, any thread: an edge's stream arrived (an em_engine_control_fn).
 * <enroll_only>: it came over an unencrypted tunnel of a cloud whose
 * tunnels run TLS (the edge proved the cluster key only): the stream may
 * only ask for a certificate (PROTOCOL.md 9). Takes <fd>; the sync thread picks it up at its next turn
 * (<wake_fd> is written to wake it). */
void em_ctl_accept(struct em_ctl *c, int fd, const char *node, const struct em_addr *src,
                   bool enroll_only);

/* A certificate revocation: certificates of <node> issued at or before
 * <at> (seconds since the epoch) are refused. */
struct em_ctl_revocation {
	char node[EM_CTL_NODE_MAX + 1];
	int64_t at;
};

/* Tunnel certificates over the control stream (PROTOCOL.md 9). This module
 * carries requests, answers and revocations and keeps their records in the
 * store; the cryptography is the caller's. Every function is called on the
 * sync thread; any may be NULL. */
struct em_ctl_cert_ops {
	/* Cloud: signs the PEM request <csr> (<len> bytes) of <node> as of
	 * time <now>. Returns 0 with the certificate and the CA's in <*cert>
	 * and <*ca> (malloc'd PEM), or -errno with a one-line reason in
	 * <err>. NULL: this cloud signs nothing. */
	int (*sign)(void *ctx, const char *node, const char *csr, size_t len, int64_t now,
	            char **cert, char **ca, char *err, size_t errlen);
	/* Edge: a request to send now (malloc'd PEM), or NULL when none is
	 * due. <*enrolling> is set when this node has no certificate yet: the
	 * stream then asks for one and nothing else. Asked when the stream
	 * opens and about once a minute while it is up. */
	char *(*request)(void *ctx, bool *enrolling);
	/* Edge: the cloud's answer. Returns 0, or -errno with why in <err>. */
	int (*install)(void *ctx, const char *cert, const char *ca, char *err, size_t errlen);
	/* Both: the revocations in force (<n> of them, valid during the call):
	 * at em_ctl_set_cert (what the store kept) and at each change. */
	void (*revoked)(void *ctx, const struct em_ctl_revocation *list, size_t n);
	void *ctx;
};

/* Sets the certificate operations (copied). Sync thread, or before it
 * runs. */
void em_ctl_set_cert(struct em_ctl *c, const struct em_ctl_cert_ops *ops);

/* Cloud: revokes the certificates of <node> issued so far: recorded in the
 * store, pushed to every edge, applied here through ops->revoked; the node
 * may enroll again. Sync thread. Returns 0, or -EINVAL / -EIO with why in
 * <err>. */
int em_ctl_revoke(struct em_ctl *c, const char *node, char *err, size_t errlen);

/* The eventfd em_ctl_accept writes to; the owner polls it. */
int em_ctl_wake_fd(const struct em_ctl *c);

/* Poll set: fills up to <cap> entries (returns how many) and the longest
 * the caller may wait in <*timeout_ms> (lowered, never raised). */
size_t em_ctl_pollfds(struct em_ctl *c, struct pollfd *pfd, size_t cap, int *timeout_ms);

/* After poll: serves the entries em_ctl_pollfds filled (same order, <n> of
 * them), takes streams em_ctl_accept queued, redials, and pushes what the
 * change log got since. Call once per turn even without events. */
void em_ctl_run(struct em_ctl *c, const struct pollfd *pfd, size_t n);

/* Most pollfd entries em_ctl_pollfds may fill now. */
size_t em_ctl_max_pollfds(const struct em_ctl *c);

/* Edge: whether this node ever applied the cloud's objects (in this run or
 * one whose store it keeps). Cloud: always true. */
bool em_ctl_synced(const struct em_ctl *c);

/* Counters for stats (group "control"): up to <cap>, returns how many. */
struct em_api_counter;
size_t em_ctl_counters(const struct em_ctl *c, struct em_api_counter *out, size_t cap);

/* Cloud: adds "edges": [{node, connected, address, since_ms, last_seen_ms,
 * generation_sent, generation_acked, version, tunnel_port}] to <reply>,
 * one per edge seen since start. Edge: adds "cloud": {address, connected,
 * epoch, generation}. Returns 0 or -ENOMEM. */
int em_ctl_status(const struct em_ctl *c, struct cJSON *reply);

#endif

/* The Kubernetes API as a source of objects (the cloud role's
 * controller.kubernetes).
 *
 * For each stored kind (Services, Endpoints, EndpointSlices, Pods, Nodes,
 * and KubeEdge's RuleEndpoints and Rules under /apis/rules.kubeedge.io/v1) a
 * thread of its own LISTs the kind (pages of 500, "continue"), then WATCHes
 * it from the list's resourceVersion with bookmarks. A watch that ends is
 * resumed from the last resourceVersion seen (an event's or a bookmark's);
 * 410 Gone (the status, or an ERROR event with code 410) lists again, and the
 * new list is applied as a diff (objects gone from it are deleted). Failures
 * wait a jittered exponential backoff (200 ms doubling to 30 s) and are
 * logged once per change of state. The bearer token is read again at each
 * connection, so a rotated token is picked up.
 *
 * The threads never touch the store: they hand batches to the sync thread
 * through a bounded queue (they wait while it is full) and an eventfd; the
 * sync thread applies them with em_kube_handle (store/kube_src.h says how).
 * Memory held per thread: one watch event (at most EM_KUBE_MAX_LINE bytes)
 * or one list page (at most EM_KUBE_MAX_PAGE), plus the queue's bound. */
#ifndef EM_STORE_KUBE_H
#define EM_STORE_KUBE_H

#include <stdint.h>

#include "store/kube_wire.h"

struct em_store;
struct em_kube;

#define EM_KUBE_MAX_PAGE  (64u * 1024 * 1024) /* one list response */
#define EM_KUBE_PAGE_SIZE 500                 /* objects asked for per list page */

struct em_kube_conf {
	const char *server;     /* URL or EM_KUBE_IN_CLUSTER (kube_wire.h) */
	const char *token_file; /* "" or NULL: none (in-cluster: the SA token) */
	const char *ca_file;    /* "" or NULL: the system's CAs (in-cluster: the SA CA) */
	/* The watch's timeoutSeconds; 0: a random 300..600 per watch. */
	unsigned watch_timeout_s;
};

/* Starts the watcher threads writing to <st> through em_kube_handle. The
 * strings are copied. Returns 0 and the watcher in <*out>, or -EINVAL
 * (logged) when the server is not a URL (in-cluster: the environment names
 * none), or -errno when threads or descriptors cannot be had. A server that
 * cannot be reached fails nothing: it is retried. Any thread may call it;
 * the store is only touched by em_kube_handle. */
int em_kube_start(const struct em_kube_conf *conf, struct em_store *st, struct em_kube **out);

/* The eventfd to poll for POLLIN: batches are waiting. */
int em_kube_fd(const struct em_kube *k);

/* Sync thread: applies every batch waiting, in order, each in one store
 * change (store/kube_src.h). Never blocks on the network. */
void em_kube_handle(struct em_kube *k);

struct em_kube_stats {
	uint64_t lists;   /* lists completed (every page read) */
	uint64_t relists; /* lists after the first of their kind */
	uint64_t watches; /* watch requests answered 200 */
	uint64_t events;  /* watch events read (bookmarks included) */
	uint64_t errors;  /* failed connections, requests and streams */
	uint64_t objects; /* objects of this source in the store */
	uint64_t refused; /* objects the store refused */
};
/* Sync thread (objects and refused are its own; the rest are read
 * atomically). */
void em_kube_stats(const struct em_kube *k, struct em_kube_stats *out);

/* Stops and joins the threads (each returns within about a second), drops
 * the batches not applied, frees everything; the objects stay in the
 * store. NULL is fine. */
void em_kube_stop(struct em_kube *k);

#endif

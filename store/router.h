/* KubeEdge's Router objects in the store: the RuleEndpoint / Rule checks
 * that need both kinds, the row each is stored as, and the Rules' message
 * counters that the Router (engine side) reports into.
 *
 * Stored rows. Router objects live in the metamanager's meta table like the
 * other kinds (types "ruleendpoint" and "rule"); the value is the object's
 * Kubernetes JSON plus a member "router" holding the Router's own row, with
 * the field names of KubeEdge's router model:
 *   RuleEndpoint: router{id, type, name, project_id, is_shared, properties,
 *                 created_at, updated_at}
 *   Rule:         router{id, name, project_id, domain_id, source,
 *                 source_resource, target, target_resource, in_use,
 *                 in_use_reason, is_deleted, created_at, updated_at,
 *                 success_messages, fail_messages,
 *                 errors[{time, reason}]}   (the last 32, oldest first)
 *   and a Rule's status{successMessages, failMessages, errors[]} as
 *   KubeEdge's RuleStatus has them ("<RFC 3339 time>: <reason>" strings).
 * id is metadata.uid when the object has one, else a UUID made when first
 * stored; created_at is metadata.creationTimestamp, else the time first
 * stored; both are kept by later writes. project_id and domain_id are the
 * namespace. is_deleted is always false (a deleted object's row is gone).
 * in_use tells whether the Router serves the Rule (in_use_reason says why
 * not).
 *
 * Counters. Each stored Rule has an em_rule_status, created with it (zeros,
 * or the counts of its stored row when loaded at start) and freed with it:
 * a Rule deleted and created again starts over. Workers report into it by
 * the Rule's key; the store writes changed counts to the row at most once a
 * second (em_store_flush_status, store/store.h). */
#ifndef EM_STORE_ROUTER_H
#define EM_STORE_ROUTER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "store/k8s.h"

struct cJSON;

/* Reports one message routed by the Rule of <key> (struct em_rule.key,
 * store/table.h): <ok> counts a success, else a failure whose <reason> (cut
 * to EM_K8S_RULE_REASON_MAX bytes; NULL is "") goes into the Rule's ring of
 * its last EM_K8S_RULE_ERRORS errors with the current time. A key of no
 * Rule in the live table is ignored.
 *
 * Any registered RCU reader thread (a worker) may call it, concurrently with
 * others and with table swaps; it looks the key up in em_table_current().
 * Never blocks on the success path (two atomic additions); a failure takes
 * the Rule's own mutex for the copy of the reason. */
void em_rule_report(uint64_t key, bool ok, const char *reason);

/* One Rule's counters. The atomics and the ring are shared with reporting
 * threads; the fields below them belong to the store's sync thread. */
struct em_rule_status {
	atomic_uint_fast64_t success, fail;
	atomic_uint_fast64_t version; /* bumped after each report */
	pthread_mutex_t mu;           /* the ring */
	struct em_rule_error_slot {
		int64_t time;
		char reason[EM_K8S_RULE_REASON_MAX + 1];
	} ring[EM_K8S_RULE_ERRORS];
	unsigned ring_head, ring_n; /* next slot written; slots used */

	/* Sync thread only: what the stored row says. */
	uint64_t flushed_version;
	bool stored_in_use;
	char stored_reason[400];
	size_t index; /* the store's own bookkeeping */
};

/* A new status: zeros, or <seed>'s stored counts and errors when non-NULL.
 * Returns NULL when out of memory. */
struct em_rule_status *em_rule_status_new(const struct em_k8s_rule *seed);
void em_rule_status_free(struct em_rule_status *s);

/* Adds one report to <s> (what em_rule_report does once the key is found),
 * at unix time <now>. */
void em_rule_status_add(struct em_rule_status *s, bool ok, const char *reason, int64_t now);

/* A consistent copy of <s>'s counts and errors (oldest first) for writing:
 * <*version> is the version the copy is at least as new as. Returns the
 * number of errors copied into <errs> (room for EM_K8S_RULE_ERRORS). */
size_t em_rule_status_read(struct em_rule_status *s, uint64_t *success, uint64_t *fail,
                           struct em_rule_error_slot *errs, uint64_t *version);

/* Whether Rule <rule> can be served with RuleEndpoints <src> and <tgt>
 * (its spec.source and spec.target in its namespace; NULL: not stored).
 * Returns 0, -ENOENT when an endpoint is missing, or -EINVAL when the
 * combination is wrong (a pair other than rest -> servicebus, a rest source
 * without sourceResource.path, a servicebus target without
 * targetResource.path, or without an edge service: properties.service_port
 * of the endpoint or targetResource.service). <why> gets one line naming the
 * field and what was expected. */
int em_router_check(const struct em_k8s_object *rule, const struct em_k8s_object *src,
                    const struct em_k8s_object *tgt, char *why, size_t len);

/* The value to store for Router object <o> (decoded from <obj>): <obj> with
 * its "router" member (and, for a Rule, "status") written as the header
 * says. Identity comes from <o>'s metadata, else <o>'s own router member,
 * else <prev> (the object stored under the same key, or NULL), else is made
 * now; it is written back into <o>->…meta (in <o>'s arena) so the stored
 * object keeps it. <status> (a Rule's, may be NULL: zeros), <in_use> and
 * <reason> fill the Rule's state; <now> is unix time. Returns text to free
 * with cJSON_free, or NULL when out of memory. */
char *em_router_stored_json(const struct cJSON *obj, struct em_k8s_object *o,
                            const struct em_k8s_object *prev, struct em_rule_status *status,
                            bool in_use, const char *reason, int64_t now);

#endif

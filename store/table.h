/* The service table: an immutable snapshot of every Service, its ports and
 * their endpoints, built by the sync thread and read lock-free by workers.
 *
 * Publication uses liburcu's QSBR flavour. A reader thread must be registered
 * (rcu_register_thread), report rcu_quiescent_state() once per event-loop turn
 * and go offline around blocking waits; everything it got from a snapshot is
 * valid until its next quiescent state. Lookups take no lock and allocate
 * nothing. */
#ifndef EM_STORE_TABLE_H
#define EM_STORE_TABLE_H

#include "proto/em.h"
#include "store/k8s.h"
#include "store/qps.h"
#include "store/svcstat.h"

struct em_service;

struct em_endpoint {
	struct em_addr addr; /* pod ip and target port */
	const char *node;    /* nodeName, "" when unknown */
	const char *pod;     /* "ns/name" of the target pod, "" when unknown */
	bool ready;
	bool local; /* node is this node (or unknown): dial directly */
};

struct em_svc_port {
	const struct em_service *svc;
	const char *name; /* port name, "" when unnamed */
	uint16_t port;    /* service port */
	uint8_t protocol; /* IPPROTO_TCP, ... */
	/* An HTTP port: appProtocol "http" or "kubernetes.io/h2c", or, without
	 * an appProtocol, a name "http", "http-*", "grpc" or "h2c". Its QPS
	 * limit counts requests; other ports count connections. */
	bool http;
	/* The service's bucket (em_service.qps), here so that the fast path
	 * tests one pointer: NULL when the service has no limit. */
	struct em_qps *qps;
	/* Ready endpoints first: endpoints[0 .. n_ready) are ready. */
	const struct em_endpoint *endpoints;
	uint32_t n_endpoints;
	uint32_t n_ready;
	/* Stable across snapshots for the same ns/name/port: keys per-worker
	 * balancer state that must survive a table swap. */
	uint64_t key;
	/* The port's counters in the workers' sets (store/svcstat.h), stable
	 * across snapshots too; EM_SVCSTAT_SINK for a port not TCP. */
	uint32_t mslot;
};

struct em_service {
	const char *ns;
	const char *name;
	enum em_svc_type type;
	bool headless;
	bool affinity_client_ip;
	uint32_t affinity_timeout_s;
	const struct em_addr *cluster_ips;
	uint32_t n_cluster_ips;
	const struct em_svc_port *ports;
	uint32_t n_ports;
	/* Server-side limit (annotations edgemesh.io/qps, edgemesh.io/qps-burst):
	 * requests or connections per second, 0 when none; bucket size, the
	 * default (em_qps_default_burst) when the annotation is absent. */
	double qps_rate;
	double qps_burst;
	struct em_qps *qps; /* shared bucket, NULL when qps_rate is 0 */
	bool fastpath_off;  /* annotation edgemesh.io/fastpath "off" */
};

struct em_node_info {
	const char *name;
	struct em_addr internal_ip; /* first InternalIP, family 0 if none */
	uint16_t tunnel_port;       /* 0: use the local tunnel.listen port */
	bool relay;                 /* reached only through the cloud */
};

struct em_rule_status;

/* A Router Rule (KubeEdge rules.kubeedge.io Rule with its RuleEndpoints,
 * store/router.h): a REST path served on the cloud, mapped to an HTTP
 * service on an edge. */
struct em_rule {
	const char *ns, *name;
	/* Stable across snapshots for the same ns/name: em_rule_report's key. */
	uint64_t key;
	const char *source, *target; /* RuleEndpoint names */
	const char *source_path;     /* sourceResource.path, NULL when none */
	const char *target_path;     /* targetResource.path, NULL when none */
	/* The edge service, one of two ways: KubeEdge's servicebus
	 * properties.service_port (the edge calls 127.0.0.1:<port>), else 0;
	 * or a Service targetResource.service "ns/name" with
	 * targetResource.port (NULL/0 when none). */
	uint16_t local_port;
	const char *svc_ns, *svc_name;
	uint16_t svc_port;
	/* Served by the Router: both endpoints exist, rest -> servicebus, the
	 * paths and the service are given, and no other Rule of the namespace
	 * with a name sorting first has the same source path. Else
	 * <inactive_reason> says why ("" when active). */
	bool active;
	const char *inactive_reason;
	struct em_rule_status *status; /* counters; NULL when built without */
};

struct em_table;

/* Reader side. ------------------------------------------------------------ */

/* The live snapshot (never NULL once em_table_init ran); valid until the
 * calling thread's next quiescent state. */
const struct em_table *em_table_current(void);

/* Service port whose cluster IP is <dst>'s address and port is <dst>->port,
 * for <protocol>; NULL when none. */
const struct em_svc_port *em_table_lookup(const struct em_table *t, const struct em_addr *dst,
                                          uint8_t protocol);

/* Service by namespace and name; NULL when none. */
const struct em_service *em_table_service(const struct em_table *t, const char *ns,
                                          const char *name);

/* Port <port>/<protocol> of <svc>; NULL when none. */
const struct em_svc_port *em_service_port(const struct em_service *svc, uint16_t port,
                                          uint8_t protocol);

/* Service port whose key (em_svc_port.key) is <key>; NULL when none. */
const struct em_svc_port *em_table_port_by_key(const struct em_table *t, uint64_t key);

/* Every service port of <t> once, in no particular order: call with
 * <*cursor> 0, then again with the cursor it left, until it returns NULL.
 * Allocates nothing. */
const struct em_svc_port *em_table_next_port(const struct em_table *t, size_t *cursor);

/* Node by name; NULL when none. */
const struct em_node_info *em_table_node(const struct em_table *t, const char *name);

/* The active rest -> servicebus Rule of namespace <ns> whose
 * sourceResource.path is the longest prefix of <path> (<path_len> bytes, a
 * request target: a query "?..." or fragment "#..." ends its path) on a
 * segment boundary: "/a" matches "/a", "/a/b", "/a?x" but not "/ab"; a rule
 * path ending in "/" matches whatever follows it. <*matched> (when given)
 * gets the rule path's length. NULL when none. Allocates nothing. */
const struct em_rule *em_table_rule_match(const struct em_table *t, const char *ns,
                                          const char *path, size_t path_len, size_t *matched);

/* Rule by key (struct em_rule.key), active or not; NULL when none. */
const struct em_rule *em_table_rule_by_key(const struct em_table *t, uint64_t key);

/* Rule by namespace and name, active or not; NULL when none. */
const struct em_rule *em_table_rule(const struct em_table *t, const char *ns, const char *name);

/* The key em_table_rule_by_key finds the Rule <ns>/<name> by. */
uint64_t em_rule_key(const char *ns, const char *name);

uint64_t em_table_generation(const struct em_table *t);
size_t em_table_service_count(const struct em_table *t);
size_t em_table_bytes(const struct em_table *t); /* memory of the snapshot */

/* Writer side (sync thread only). ---------------------------------------- */

/* Objects a snapshot is built from: borrowed, read during em_table_build only. */
struct em_table_input {
	const struct em_k8s_object *const *objs;
	size_t n_objs;
	const char *local_node; /* this node's name */
	/* Per object, parallel to <objs>: a Rule's counters (NULL: none). The
	 * array itself may be NULL. */
	struct em_rule_status *const *rule_status;
};

/* Builds a new snapshot from <in>. Endpoints of a service come from its
 * EndpointSlices when it has any, else from its Endpoints; a named targetPort
 * is resolved through the endpoint port of the same name, else the target
 * pod's container port of that name. Rules are checked against their
 * RuleEndpoints (em_router_check). A service with a QPS limit gets its
 * bucket from the registry (store/qps.h), its new rate set there at once;
 * every TCP port gets its counter slot (store/svcstat.h).
 * Returns NULL on allocation failure. */
struct em_table *em_table_build(const struct em_table_input *in, uint64_t generation);

/* Installs the empty snapshot. Call once before any reader starts. */
void em_table_init(void);

/* Publishes <t> and frees the previous snapshot after a grace period, then
 * the QPS buckets and counter slots no longer referenced. The caller must not be an online
 * RCU reader. */
void em_table_publish(struct em_table *t);

/* Frees a snapshot never published. */
void em_table_free(struct em_table *t);

/* At exit, after every reader stopped: frees the live snapshot, the QPS
 * buckets and the counter slots and sets (store/svcstat.h). */
void em_table_shutdown(void);

#endif

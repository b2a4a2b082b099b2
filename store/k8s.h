/* Decoding of Kubernetes objects as `kubectl get -o json` prints them
 * (managedFields, annotations and all) into plain C structs.
 *
 * Runs on the sync thread only (allocates). A decoded object, its strings
 * and its arrays live in one arena, released whole by em_k8s_free; strings
 * and arrays may be shared between items of the object (an EndpointSlice
 * endpoint's node name and targetRef are shared by its addresses). */
#ifndef EM_STORE_K8S_H
#define EM_STORE_K8S_H

#include "proto/em.h"
#include "store/arena.h"

struct cJSON;

/* The kinds the metamanager stores; the lower-case names are KubeEdge's
 * metamanager resource types, used in keys "<namespace>/<type>/<name>". */
enum em_kind {
	EM_KIND_SERVICE = 0,
	EM_KIND_ENDPOINTS,
	EM_KIND_ENDPOINTSLICE,
	EM_KIND_POD,
	EM_KIND_NODE,
	/* KubeEdge's Router objects, rules.kubeedge.io/v1 (namespaced). */
	EM_KIND_RULEENDPOINT,
	EM_KIND_RULE,
	EM_KIND__COUNT
};

/* "service", "endpoints", "endpointslice", "pod", "node", "ruleendpoint",
 * "rule". */
const char *em_kind_type(enum em_kind k);
/* Kubernetes "kind" field: "Service", "Endpoints", "EndpointSlice", "Pod",
 * "Node", "RuleEndpoint", "Rule". */
const char *em_kind_name(enum em_kind k);
/* "apiVersion" of the kind: "v1", "discovery.k8s.io/v1", "rules.kubeedge.io/v1". */
const char *em_kind_api_version(enum em_kind k);
/* Inverse of em_kind_type; also accepts plurals ("services", "endpointslices",
 * "ruleendpoints", "rules") and the short names ("svc", "ep", "po", "no",
 * "re"). Returns kind or -EINVAL. */
int em_kind_from_type(const char *type);
/* Inverse of em_kind_name. Returns kind or -EINVAL. */
int em_kind_from_name(const char *kind);

/* Nodes are cluster-scoped; they are stored under this namespace, as
 * KubeEdge's metamanager does. */
#define EM_NODE_NAMESPACE "default"

/* Node annotation giving the node's tunnel port when it differs from the
 * local tunnel.listen port. */
#define EM_NODE_TUNNEL_PORT_ANNOTATION "edgemesh.io/tunnel-port"
/* Node annotation "true": other nodes reach it only through the cloud (its
 * tunnel port cannot be dialled). The cloud sets it on the Node of an edge
 * that registers without a tunnel listener. */
#define EM_NODE_RELAY_ANNOTATION "edgemesh.io/relay"

enum em_svc_type {
	EM_SVC_CLUSTER_IP = 0,
	EM_SVC_NODE_PORT,
	EM_SVC_LOAD_BALANCER,
	EM_SVC_EXTERNAL_NAME,
};

struct em_k8s_svc_port {
	char *name;       /* "" when unnamed */
	uint8_t protocol; /* IPPROTO_TCP (default), IPPROTO_UDP, IPPROTO_SCTP */
	uint16_t port;
	uint16_t target_port;   /* numeric targetPort; 0 when named */
	char *target_port_name; /* named targetPort, else NULL */
	uint16_t node_port;     /* 0 when none */
	char *app_protocol;     /* appProtocol, NULL when absent */
};

struct em_k8s_service {
	enum em_svc_type type;
	bool headless;               /* clusterIP "None" */
	struct em_addr *cluster_ips; /* clusterIPs, else clusterIP; port 0 */
	size_t n_cluster_ips;
	char *external_name;         /* ExternalName services, else NULL */
	bool affinity_client_ip;     /* sessionAffinity: ClientIP */
	uint32_t affinity_timeout_s; /* sessionAffinityConfig timeout, default 10800 */
	struct em_k8s_svc_port *ports;
	size_t n_ports;
	/* Annotations edgemesh.io/qps and edgemesh.io/qps-burst (store/qps.h):
	 * the limit per second, 0 when none, and the bucket size, 0 for the
	 * default. A value that does not parse is not an error of the object:
	 * it is left at 0 and <qps_warn> says why, for the store to log with
	 * the service's name. */
	double qps;
	double qps_burst;
	char *qps_warn; /* NULL when both are fine or absent */
	/* Annotation edgemesh.io/fastpath "off": connects to this Service are
	 * never balanced in the kernel (engine/fastpath.h). "on" or absent:
	 * false; another value is ignored with a word in <qps_warn>. */
	bool fastpath_off;
};

#define EM_FASTPATH_ANNOTATION "edgemesh.io/fastpath"


/* An endpoint address of an Endpoints subset or an EndpointSlice. */
struct em_k8s_ep_addr {
	struct em_addr ip;   /* port 0 */
	char *node_name;     /* NULL when absent */
	char *pod_name;      /* targetRef.name when targetRef.kind is Pod, else NULL */
	char *pod_namespace; /* targetRef.namespace, else NULL */
	bool ready;          /* Endpoints: addresses vs notReadyAddresses;
	                        EndpointSlice: conditions.ready (absent = ready) */
};

struct em_k8s_ep_port {
	char *name;       /* "" when unnamed */
	uint8_t protocol; /* IPPROTO_TCP default */
	uint16_t port;
};

struct em_k8s_subset {
	struct em_k8s_ep_addr *addrs; /* ready ones, then not-ready ones */
	size_t n_addrs;
	struct em_k8s_ep_port *ports;
	size_t n_ports;
};

struct em_k8s_endpoints {
	struct em_k8s_subset *subsets;
	size_t n_subsets;
};

/* discovery.k8s.io/v1. Each endpoint of a slice may carry several addresses
 * of the slice's family; they are flattened into <addrs>, one per address. */
struct em_k8s_endpointslice {
	char *service_name;   /* label kubernetes.io/service-name; NULL if absent */
	uint8_t address_type; /* AF_INET, AF_INET6, or 0 for FQDN (ignored) */
	struct em_k8s_ep_addr *addrs;
	size_t n_addrs;
	struct em_k8s_ep_port *ports;
	size_t n_ports;
};

struct em_k8s_container_port {
	char *name; /* "" when unnamed */
	uint8_t protocol;
	uint16_t port;
};

struct em_k8s_label {
	char *key;
	char *value;
};

struct em_k8s_pod {
	struct em_addr *ips; /* podIPs, else podIP */
	size_t n_ips;
	char *node_name; /* spec.nodeName, NULL if unscheduled */
	char *phase;     /* status.phase, NULL if absent */
	struct em_k8s_label *labels;
	size_t n_labels;
	struct em_k8s_container_port *ports; /* of all containers */
	size_t n_ports;
};

struct em_k8s_node_addr {
	char *type;        /* "InternalIP", "ExternalIP", "Hostname", ... */
	char *address;     /* as given */
	struct em_addr ip; /* parsed when it is an IP, else family 0 */
};

struct em_k8s_node {
	struct em_k8s_node_addr *addrs;
	size_t n_addrs;
	uint16_t tunnel_port; /* EM_NODE_TUNNEL_PORT_ANNOTATION, 0 if absent */
	bool relay;           /* EM_NODE_RELAY_ANNOTATION is "true" */
};

/* RuleEndpoint spec.ruleEndpointType. KubeEdge's "eventbus" (MQTT) is
 * refused: the mesh has no broker. */
enum em_re_type {
	EM_RE_REST = 0,   /* a REST path served by the cloud's Router */
	EM_RE_SERVICEBUS, /* an HTTP service on an edge node */
};

/* Key/value pairs of a string map (properties, sourceResource, ...), in the
 * document's order. */
struct em_k8s_map {
	struct em_k8s_label *items;
	size_t n;
};

/* The value of <key> in <m>, or NULL. */
const char *em_k8s_map_get(const struct em_k8s_map *m, const char *key);

/* What edgemesh stores beside a Router object's Kubernetes fields: the
 * Router's own row ("router" member of the stored JSON, store/router.h).
 * Read back when present so that a stored object keeps them. */
struct em_k8s_router_meta {
	char *id;         /* router.id, else NULL */
	char *created_at; /* router.created_at, else NULL */
};

struct em_k8s_ruleendpoint {
	enum em_re_type type;
	struct em_k8s_map properties;
	uint16_t service_port; /* servicebus: properties.service_port, else 0 */
	bool is_shared;        /* router.is_shared, default false */
	struct em_k8s_router_meta meta;
};

/* A Rule keeps its last EM_K8S_RULE_ERRORS errors, each reason cut to
 * EM_K8S_RULE_REASON_MAX bytes. */
#define EM_K8S_RULE_ERRORS     32
#define EM_K8S_RULE_REASON_MAX 200

/* One error of a Rule's status: when and why a message failed. */
struct em_k8s_rule_error {
	int64_t time; /* unix seconds */
	char *reason;
};

struct em_k8s_rule {
	char *source, *target; /* RuleEndpoint names, same namespace */
	struct em_k8s_map source_resource, target_resource;
	char *source_path;       /* sourceResource.path ("/..."), else NULL */
	char *target_path;       /* targetResource.path ("/..."), else NULL */
	char *svc_ns, *svc_name; /* targetResource.service "ns/name", else NULL */
	uint16_t svc_port;       /* targetResource.port, with service only */
	/* Status as stored (read leniently: a value of the wrong type is 0). */
	uint64_t success, fail;
	struct em_k8s_rule_error *errors; /* router.errors, oldest first */
	size_t n_errors;
	struct em_k8s_router_meta meta;
};

struct em_k8s_object {
	enum em_kind kind;
	char *ns;               /* metadata.namespace; EM_NODE_NAMESPACE for nodes,
	                           "default" when absent on a namespaced kind */
	char *name;             /* metadata.name */
	char *resource_version; /* metadata.resourceVersion, NULL if absent */
	struct em_arena arena;  /* holds this object and all it points to */
	union {
		struct em_k8s_service svc;
		struct em_k8s_endpoints ep;
		struct em_k8s_endpointslice slice;
		struct em_k8s_pod pod;
		struct em_k8s_node node;
		struct em_k8s_ruleendpoint re;
		struct em_k8s_rule rule;
	};
};

/* Decodes one object. <kind> is the expected kind, or -1 to take it from the
 * object's "kind" field. Returns 0 and a new object in <*out>, or -EINVAL with
 * a one-line reason in <err> (e.g. "spec.ports[1].port: expected integer
 * 1..65535") and nothing allocated. Unknown fields are ignored; fields of the
 * wrong type that the mesh uses are errors. An endpoint address that is
 * unspecified (0.0.0.0, ::), multicast or the IPv4 broadcast address is an
 * error, as in the Kubernetes API.
 *
 * Router objects (RuleEndpoint, Rule) must carry apiVersion
 * rules.kubeedge.io/v1 when they give one. A RuleEndpoint's type is rest or
 * servicebus ("eventbus" is refused as not supported); its properties and a
 * Rule's sourceResource / targetResource are maps whose values must be
 * strings (the message names the key); properties.service_port of a
 * servicebus endpoint is a port as a string; Rule paths start with "/" and
 * hold no space, control byte, '?' or '#'; targetResource.service is
 * "namespace/name" and comes with targetResource.port. What needs both
 * endpoints is checked by the store (store/router.h em_router_check). A
 * Rule's status and the "router" member are read leniently (a wrong type
 * reads as absent): they are the Router's output, not input. */
int em_k8s_decode_json(const struct cJSON *obj, int kind, struct em_k8s_object **out, char *err,
                       size_t errlen);

/* What the store refuses beyond the decoder's own rules. */
struct em_k8s_limits {
	const struct em_cidr *service_cidrs; /* endpoint addresses inside: refused */
	size_t n_service_cidrs;
};

/* As em_k8s_decode_json, and an endpoint address (Endpoints subsets' ip,
 * EndpointSlice endpoints' addresses) inside one of <lim>'s service ranges is
 * refused with the path of the field. <lim> may be NULL and is only read
 * during the call. */
int em_k8s_decode_json_lim(const struct cJSON *obj, int kind, const struct em_k8s_limits *lim,
                           struct em_k8s_object **out, char *err, size_t errlen);

/* As em_k8s_decode_json, from text of <len> bytes (need not be terminated). */
int em_k8s_decode(const char *json, size_t len, int kind, struct em_k8s_object **out, char *err,
                  size_t errlen);

/* Frees <obj> (NULL is fine) and everything it points to, in one call. */
void em_k8s_free(struct em_k8s_object *obj);

/* Writes "<namespace>/<type>/<name>" into <buf>. Returns its length, or
 * -ENOSPC when it does not fit. */
int em_k8s_key(enum em_kind kind, const char *ns, const char *name, char *buf, size_t len);

/* Splits a key into its parts (pointers into <key>, lengths in the slices).
 * Returns the kind, or -EINVAL when the key is not of a stored kind. */
int em_k8s_key_split(const char *key, struct em_slice *ns, struct em_slice *name);

#endif

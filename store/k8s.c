/* Kubernetes object decoding. The decoder is strict about the fields the
 * mesh routes on and blind to everything else, so that a real `kubectl get -o
 * json` dump (managedFields, annotations, status conditions...) decodes while
 * a mistyped port or address is refused with the JSON path that is wrong. */
#include "store/k8s.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "store/json.h"
#include "store/qps.h"

/* Longest metadata.name / namespace we accept: DNS subdomain limit. */
#define K8S_NAME_MAX 253
/* Kubernetes caps sessionAffinityConfig.clientIP.timeoutSeconds at one day. */
#define K8S_AFFINITY_MAX_S     86400
#define K8S_AFFINITY_DEFAULT_S 10800

static const char *const kind_types[EM_KIND__COUNT] = {
        [EM_KIND_SERVICE] = "service",
        [EM_KIND_ENDPOINTS] = "endpoints",
        [EM_KIND_ENDPOINTSLICE] = "endpointslice",
        [EM_KIND_POD] = "pod",
        [EM_KIND_NODE] = "node",
        [EM_KIND_RULEENDPOINT] = "ruleendpoint",
        [EM_KIND_RULE] = "rule",
};

static const char *const kind_names[EM_KIND__COUNT] = {
        [EM_KIND_SERVICE] = "Service",
        [EM_KIND_ENDPOINTS] = "Endpoints",
        [EM_KIND_ENDPOINTSLICE] = "EndpointSlice",
        [EM_KIND_POD] = "Pod",
        [EM_KIND_NODE] = "Node",
        [EM_KIND_RULEENDPOINT] = "RuleEndpoint",
        [EM_KIND_RULE] = "Rule",
};

static const char *const kind_api_versions[EM_KIND__COUNT] = {
        [EM_KIND_SERVICE] = "v1",
        [EM_KIND_ENDPOINTS] = "v1",
        [EM_KIND_ENDPOINTSLICE] = "discovery.k8s.io/v1",
        [EM_KIND_POD] = "v1",
        [EM_KIND_NODE] = "v1",
        [EM_KIND_RULEENDPOINT] = "rules.kubeedge.io/v1",
        [EM_KIND_RULE] = "rules.kubeedge.io/v1",
};

const char *em_kind_api_version(enum em_kind k)
{
	return (unsigned)k < EM_KIND__COUNT ? kind_api_versions[k] : "v1";
}

const char *em_kind_type(enum em_kind k)
{
	return (unsigned)k < EM_KIND__COUNT ? kind_types[k] : "unknown";
}

const char *em_kind_name(enum em_kind k)
{
	return (unsigned)k < EM_KIND__COUNT ? kind_names[k] : "Unknown";
}

int em_kind_from_type(const char *type)
{
	static const struct {
		const char *s;
		enum em_kind k;
	} alias[] = {
	        {"service", EM_KIND_SERVICE},
	        {"services", EM_KIND_SERVICE},
	        {"svc", EM_KIND_SERVICE},
	        {"endpoints", EM_KIND_ENDPOINTS},
	        {"ep", EM_KIND_ENDPOINTS},
	        {"endpointslice", EM_KIND_ENDPOINTSLICE},
	        {"endpointslices", EM_KIND_ENDPOINTSLICE},
	        {"pod", EM_KIND_POD},
	        {"pods", EM_KIND_POD},
	        {"po", EM_KIND_POD},
	        {"node", EM_KIND_NODE},
	        {"nodes", EM_KIND_NODE},
	        {"no", EM_KIND_NODE},
	        {"ruleendpoint", EM_KIND_RULEENDPOINT},
	        {"ruleendpoints", EM_KIND_RULEENDPOINT},
	        {"re", EM_KIND_RULEENDPOINT},
	        {"rule", EM_KIND_RULE},
	        {"rules", EM_KIND_RULE},
	};

	if (!type)
		return -EINVAL;
	/* kubectl matches resource names case-insensitively ("Services" works). */
	for (size_t i = 0; i < EM_ARRAY_SIZE(alias); i++)
		if (strcasecmp(type, alias[i].s) == 0)
			return (int)alias[i].k;
	return -EINVAL;
}

int em_kind_from_name(const char *kind)
{
	if (!kind)
		return -EINVAL;
	for (int k = 0; k < EM_KIND__COUNT; k++)
		if (strcmp(kind, kind_names[k]) == 0)
			return k;
	return -EINVAL;
}

int em_k8s_key(enum em_kind kind, const char *ns, const char *name, char *buf, size_t len)
{
	if ((unsigned)kind >= EM_KIND__COUNT || !ns || !name || !buf)
		return -EINVAL;
	int n = snprintf(buf, len, "%s/%s/%s", ns, kind_types[kind], name);
	if (n < 0)
		return -EINVAL;
	if ((size_t)n >= len)
		return -ENOSPC;
	return n;
}

int em_k8s_key_split(const char *key, struct em_slice *ns, struct em_slice *name)
{
	const char *s1, *s2;
	char type[32];
	int kind;

	if (!key)
		return -EINVAL;
	s1 = strchr(key, '/');
	if (!s1 || s1 == key)
		return -EINVAL;
	s2 = strchr(s1 + 1, '/');
	if (!s2 || (size_t)(s2 - s1 - 1) >= sizeof(type) || s2[1] == 0)
		return -EINVAL;
	memcpy(type, s1 + 1, (size_t)(s2 - s1 - 1));
	type[s2 - s1 - 1] = 0;
	/* Stored keys carry exactly the metamanager type, never an alias. */
	kind = -EINVAL;
	for (int k = 0; k < EM_KIND__COUNT; k++)
		if (strcmp(type, kind_types[k]) == 0)
			kind = k;
	if (kind < 0)
		return -EINVAL;
	if (ns)
		*ns = (struct em_slice){key, (size_t)(s1 - key)};
	if (name)
		*name = (struct em_slice){s2 + 1, strlen(s2 + 1)};
	return kind;
}

void em_k8s_free(struct em_k8s_object *obj)
{
	if (obj) {
		/* The arena holds <obj> itself: free from a copy. */
		struct em_arena a = obj->arena;
		em_arena_free(&a);
	}
}

/* Decoder state. Everything decoded goes into the object's arena, so an
 * error anywhere is cleaned up by freeing the arena. */
struct dec {
	struct em_json j;                /* first: array callbacks get it back (dec_of) */
	const struct em_k8s_limits *lim; /* NULL: no service ranges to refuse */
	struct em_arena *a;
};

static struct dec *dec_of(struct em_json *j)
{
	return (struct dec *)j;
}

#define FAIL(d, field, ...) em_json_fail(&(d)->j, field, __VA_ARGS__)

static int get_object(struct dec *d, const cJSON *parent, const char *name, bool required,
                      const cJSON **out)
{
	return em_json_object(&d->j, em_json_get(parent, name), name, required, out);
}

static int get_string(struct dec *d, const cJSON *parent, const char *name, bool required,
                      const char **out)
{
	*out = NULL;
	return em_json_string(&d->j, em_json_get(parent, name), name, required, out);
}

/* <s> copied into the arena (NULL stays NULL). */
static int dup_str(struct dec *d, const char *s, char **out)
{
	if (!s)
		return 0;
	*out = em_arena_strdup(d->a, s);
	return *out ? 0 : em_json_oom(&d->j);
}

/* An optional string member copied into <*out> (left NULL when absent). */
static int dup_string(struct dec *d, const cJSON *parent, const char *name, char **out)
{
	const char *s;
	int rc = get_string(d, parent, name, false, &s);
	return rc ? rc : dup_str(d, s, out);
}

/* An optional name that defaults to "" (port names). */
static int dup_name(struct dec *d, const cJSON *parent, const char *name, char **out)
{
	int rc = dup_string(d, parent, name, out);
	return rc || *out ? rc : dup_str(d, "", out);
}

static int get_port(struct dec *d, const cJSON *parent, const char *name, bool required,
                    uint16_t *out)
{
	return em_json_port(&d->j, em_json_get(parent, name), name, required, out);
}

/* Decodes one item of an array into <item>; <i> is its index. */
typedef int (*item_fn)(struct dec *d, const cJSON *it, size_t i, void *item, void *ctx);

struct list {
	item_fn fn;
	char *items;
	size_t size;
	void *ctx;
};

static int list_item(struct em_json *j, const cJSON *it, size_t i, void *arg)
{
	struct list *l = arg;
	return l->fn(dec_of(j), it, i, l->items + i * l->size, l->ctx);
}

/* Array member <name> of <parent> decoded item by item with <fn> into
 * <*n> zeroed items of <size> bytes in the arena. <items> is the address of
 * the caller's typed pointer to them, left NULL when the array is absent or
 * empty. */
static int decode_list(struct dec *d, const cJSON *parent, const char *name, size_t size,
                       item_fn fn, void *ctx, void *items, size_t *n)
{
	const cJSON *arr = em_json_get(parent, name);
	struct list l = {fn, NULL, size, ctx};
	int rc = em_json_array(&d->j, arr, name, 0, NULL, n);

	if (rc || *n == 0)
		return rc;
	if (!(l.items = em_arena_calloc(d->a, *n, size)))
		return em_json_oom(&d->j);
	memcpy(items, &l.items, sizeof(l.items));
	return em_json_each(&d->j, arr, name, list_item, &l);
}

/* Items of the arrays <name> inside the objects of array <arr>: the size of
 * the flat list a decoder fills from all of them. */
static size_t count_nested(const cJSON *arr, const char *name)
{
	const cJSON *it;
	size_t total = 0;

	cJSON_ArrayForEach(it, arr)
	{
		const cJSON *a = em_json_get(it, name);
		if (cJSON_IsArray(a))
			total += (size_t)cJSON_GetArraySize(a);
	}
	return total;
}

/* A string of decimal digits as a number (0 past five digits), or -1 when
 * <s> is empty or holds anything else. */
static long digits_value(const char *s)
{
	size_t n = strspn(s, "0123456789");
	if (n == 0 || s[n])
		return -1;
	return n <= 5 ? (long)strtoul(s, NULL, 10) : 0;
}

/* Protocol of a port; Kubernetes defaults it to TCP. */
static int get_protocol(struct dec *d, const cJSON *parent, uint8_t *out)
{
	static const char *const names[] = {"TCP", "UDP", "SCTP"};
	static const uint8_t protos[] = {IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP};
	const char *s;
	int rc = get_string(d, parent, "protocol", false, &s), k;

	if (rc)
		return rc;
	if ((k = s ? em_json_pick(s, names, 3) : 0) < 0)
		return FAIL(d, "protocol", "expected TCP, UDP or SCTP, got \"%.32s\"", s);
	*out = protos[k];
	return 0;
}

/* A bare IP address (no port, no zone). <family> 0 accepts either. */
static int parse_ip(const char *s, int family, struct em_addr *out)
{
	return em_ip_parse(s, strlen(s), family, out);
}

static const char *family_name(int family)
{
	return family == AF_INET ? "IPv4" : family == AF_INET6 ? "IPv6" : "IP";
}

/* String <it> as an IP address; the error names <name> under the current
 * path (or the path alone when <name> is NULL). */
static int ip_value(struct dec *d, const cJSON *it, const char *name, int family,
                    struct em_addr *out)
{
	const char *s;
	int rc = em_json_string(&d->j, it, name, true, &s);

	if (!rc && parse_ip(s, family, out))
		rc = FAIL(d, name, "invalid %s address \"%.64s\"", family_name(family), s);
	return rc;
}

/* Why <a> cannot be an endpoint address, or NULL when it can. The API
 * server refuses these too; here they would also make the proxy connect to
 * nothing, to a group, or (inside a service range it captures) to itself
 * until it runs out of descriptors. */
static const char *bad_endpoint_ip(const struct em_addr *a)
{
	static const uint8_t zero[16];
	const uint8_t *v4 = NULL;

	if (a->family == AF_INET)
		v4 = a->b;
	else if (IN6_IS_ADDR_V4MAPPED(&a->v6))
		v4 = a->b + 12;
	else if (memcmp(a->b, zero, 16) == 0)
		return "the unspecified address";
	else if (a->b[0] == 0xff)
		return "a multicast address";
	if (!v4)
		return NULL;
	if (memcmp(v4, zero, 4) == 0)
		return "the unspecified address";
	if ((v4[0] & 0xf0) == 0xe0)
		return "a multicast address";
	if (v4[0] == 255 && v4[1] == 255 && v4[2] == 255 && v4[3] == 255)
		return "the broadcast address";
	return NULL;
}

/* Endpoint address <it> of field <name> (NULL: the current path) into
 * <out>, refused when it cannot be an endpoint. */
static int endpoint_ip(struct dec *d, const cJSON *it, const char *name, int family,
                       struct em_addr *out)
{
	char ip[EM_ADDR_STRLEN], net[EM_ADDR_STRLEN];
	const char *why;
	int rc = ip_value(d, it, name, family, out);

	if (rc)
		return rc;
	if ((why = bad_endpoint_ip(out)))
		return FAIL(d, name, "%s is %s; expected a pod or host address",
		            em_addr_format(out, false, ip, sizeof(ip)), why);
	for (size_t i = 0; d->lim && i < d->lim->n_service_cidrs; i++) {
		const struct em_cidr *r = &d->lim->service_cidrs[i];
		if (em_cidr_contains(r, out))
			return FAIL(d, name,
			            "%s is inside capture.service_cidrs %s/%u, a service address; "
			            "expected a pod or host address",
			            em_addr_format(out, false, ip, sizeof(ip)),
			            em_addr_format(&r->addr, false, net, sizeof(net)), r->prefix);
	}
	return 0;
}

static int check_object_name(struct dec *d, const char *field_name, const char *s)
{
	size_t n = strlen(s);
	if (n == 0)
		return FAIL(d, field_name, "expected non-empty string");
	if (n > K8S_NAME_MAX)
		return FAIL(d, field_name, "longer than %d characters", K8S_NAME_MAX);
	/* '/' would make the store key "<ns>/<type>/<name>" ambiguous. */
	for (size_t i = 0; i < n; i++)
		if (s[i] == '/' || (unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return FAIL(d, field_name, "invalid character in \"%.64s\"", s);
	return 0;
}

static int decode_metadata(struct dec *d, const cJSON *root, struct em_k8s_object *o)
{
	const cJSON *meta;
	const char *name, *ns;
	size_t mark;
	int rc;

	rc = get_object(d, root, "metadata", true, &meta);
	if (rc)
		return rc;
	mark = em_json_push_key(&d->j, "metadata");
	rc = get_string(d, meta, "name", true, &name);
	if (!rc)
		rc = check_object_name(d, "name", name);
	if (!rc)
		rc = get_string(d, meta, "namespace", false, &ns);
	if (!rc && ns && o->kind != EM_KIND_NODE)
		rc = check_object_name(d, "namespace", ns);
	if (!rc)
		rc = dup_string(d, meta, "resourceVersion", &o->resource_version);
	em_json_pop(&d->j, mark);
	if (rc)
		return rc;
	/* Nodes are cluster-scoped: whatever namespace they carry is noise. */
	if (o->kind == EM_KIND_NODE || !ns)
		ns = o->kind == EM_KIND_NODE ? EM_NODE_NAMESPACE : "default";
	rc = dup_str(d, name, &o->name);
	return rc ? rc : dup_str(d, ns, &o->ns);
}

/* targetPort: an integer, a numeric string, or a named port of the pods. */
static int decode_target_port(struct dec *d, const cJSON *port, struct em_k8s_svc_port *p)
{
	static const char expect[] = "expected integer 1..65535 or port name";
	const cJSON *it = em_json_get(port, "targetPort");
	long v;

	if (!it) {
		/* The API server defaults targetPort to port. */
		p->target_port = p->port;
		return 0;
	}
	if (cJSON_IsNumber(it)) {
		uint32_t n;
		if (em_json_u32(&d->j, it, "targetPort", true, 1, 65535, &n))
			return FAIL(d, "targetPort", expect);
		p->target_port = (uint16_t)n;
		return 0;
	}
	if (!cJSON_IsString(it) || !it->valuestring || !it->valuestring[0])
		return FAIL(d, "targetPort", expect);
	if ((v = digits_value(it->valuestring)) >= 0) {
		if (v < 1 || v > 65535)
			return FAIL(d, "targetPort", expect);
		p->target_port = (uint16_t)v;
		return 0;
	}
	/* IANA service names are at most 15 characters; leave room for laxer
	 * producers but keep names bounded. */
	if (strlen(it->valuestring) > 63)
		return FAIL(d, "targetPort", "port name longer than 63 characters");
	return dup_str(d, it->valuestring, &p->target_port_name);
}

static int decode_svc_port(struct dec *d, const cJSON *it, size_t i, void *item, void *ctx)
{
	struct em_k8s_svc_port *p = item;
	int rc;

	(void)i, (void)ctx;
	if (!cJSON_IsObject(it))
		return FAIL(d, NULL, "expected object");
	rc = dup_name(d, it, "name", &p->name);
	if (!rc)
		rc = get_protocol(d, it, &p->protocol);
	if (!rc)
		rc = get_port(d, it, "port", true, &p->port);
	if (!rc)
		rc = decode_target_port(d, it, p);
	if (!rc)
		rc = get_port(d, it, "nodePort", false, &p->node_port);
	if (!rc)
		rc = dup_string(d, it, "appProtocol", &p->app_protocol);
	return rc;
}

static int decode_cluster_ip(struct dec *d, const cJSON *it, size_t i, void *item, void *ctx)
{
	(void)i, (void)ctx;
	return ip_value(d, it, NULL, 0, item);
}

/* Singular field <name> ("clusterIP", "podIP") as a list of one address
 * in <*ips>, <*n>; nothing when absent or "". "None" sets <*none> when
 * given. */
static int decode_one_ip(struct dec *d, const cJSON *parent, const char *name, bool *none,
                         struct em_addr **ips, size_t *n)
{
	const cJSON *one = em_json_get(parent, name);
	const char *s = NULL;
	int rc = em_json_string(&d->j, one, name, false, &s);

	if (rc || !s || !s[0])
		return rc;
	if (none && strcmp(s, "None") == 0) {
		*none = true;
		return 0;
	}
	if (!(*ips = em_arena_calloc(d->a, 1, sizeof(**ips))))
		return em_json_oom(&d->j);
	*n = 1;
	return ip_value(d, one, name, 0, *ips);
}

static int decode_svc_ips(struct dec *d, const cJSON *spec, struct em_k8s_service *s)
{
	const cJSON *ips = em_json_get(spec, "clusterIPs");
	size_t n;
	int rc = em_json_array(&d->j, ips, "clusterIPs", 0, NULL, &n);

	if (rc)
		return rc;
	const cJSON *first = n ? cJSON_GetArrayItem(ips, 0) : NULL;
	if (cJSON_IsString(first) && first->valuestring &&
	    strcmp(first->valuestring, "None") == 0) {
		s->headless = true;
		return 0;
	}
	if (n)
		return decode_list(d, spec, "clusterIPs", sizeof(*s->cluster_ips),
		                   decode_cluster_ip, NULL, &s->cluster_ips, &s->n_cluster_ips);
	/* Older API servers print only the singular field. */
	return decode_one_ip(d, spec, "clusterIP", &s->headless, &s->cluster_ips,
	                     &s->n_cluster_ips);
}

static int decode_affinity(struct dec *d, const cJSON *spec, struct em_k8s_service *s)
{
	const cJSON *cfg, *cip;
	const char *str;
	size_t mark;
	int rc;

	rc = get_string(d, spec, "sessionAffinity", false, &str);
	if (rc || !str || strcmp(str, "None") == 0)
		return rc;
	if (strcmp(str, "ClientIP") != 0)
		return FAIL(d, "sessionAffinity", "expected None or ClientIP, got \"%.32s\"", str);
	s->affinity_client_ip = true;
	rc = get_object(d, spec, "sessionAffinityConfig", false, &cfg);
	if (rc || !cfg)
		return rc;
	mark = em_json_push_key(&d->j, "sessionAffinityConfig");
	rc = get_object(d, cfg, "clientIP", false, &cip);
	if (!rc && cip) {
		em_json_push_key(&d->j, "clientIP");
		rc = em_json_u32(&d->j, em_json_get(cip, "timeoutSeconds"), "timeoutSeconds", false,
		                 1, K8S_AFFINITY_MAX_S, &s->affinity_timeout_s);
	}
	em_json_pop(&d->j, mark);
	return rc;
}

static int decode_service_spec(struct dec *d, const cJSON *spec, struct em_k8s_service *s)
{
	static const char *const types[] = {
	        [EM_SVC_CLUSTER_IP] = "ClusterIP",
	        [EM_SVC_NODE_PORT] = "NodePort",
	        [EM_SVC_LOAD_BALANCER] = "LoadBalancer",
	        [EM_SVC_EXTERNAL_NAME] = "ExternalName",
	};
	const char *str;
	int rc, t;

	rc = get_string(d, spec, "type", false, &str);
	if (rc)
		return rc;
	if ((t = str ? em_json_pick(str, types, EM_ARRAY_SIZE(types)) : EM_SVC_CLUSTER_IP) < 0)
		return FAIL(d, "type", "unknown service type \"%.32s\"", str);
	s->type = (enum em_svc_type)t;
	if (s->type == EM_SVC_EXTERNAL_NAME) {
		rc = get_string(d, spec, "externalName", true, &str);
		if (!rc && !str[0])
			rc = FAIL(d, "externalName", "expected non-empty string");
		if (!rc)
			rc = dup_str(d, str, &s->external_name);
	} else {
		rc = decode_svc_ips(d, spec, s);
	}
	if (!rc)
		rc = decode_affinity(d, spec, s);
	if (!rc)
		rc = decode_list(d, spec, "ports", sizeof(*s->ports), decode_svc_port, NULL,
		                 &s->ports, &s->n_ports);
	return rc;
}

/* One QPS annotation: 0 and nothing said when absent; a bad value leaves
 * <*out> 0 and appends why to <why>. */
static void qps_annotation(const cJSON *ann, const char *key, double max, const char *expect,
                           double *out, char *why, size_t len)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(ann, key);
	size_t used = strlen(why);

	if (!v)
		return;
	if (cJSON_IsString(v) && v->valuestring && em_qps_parse(v->valuestring, max, out) == 0)
		return;
	*out = 0;
	snprintf(why + used, len - used, "%sannotation %s: expected %s, got %s%.32s%s; ignored",
	         used ? "; " : "", key, expect, cJSON_IsString(v) ? "\"" : "",
	         cJSON_IsString(v) && v->valuestring ? v->valuestring : "a non-string",
	         cJSON_IsString(v) ? "\"" : "");
}

/* The QPS annotations are advice to this node, not part of the Service's
 * routing: a bad one never refuses the object (see em_k8s_service.qps_warn). */
static int decode_qps(struct dec *d, const cJSON *root, struct em_k8s_service *s)
{
	const cJSON *ann = em_json_get(em_json_get(root, "metadata"), "annotations");
	char why[256] = "";

	if (!cJSON_IsObject(ann))
		return 0;
	qps_annotation(ann, EM_QPS_ANNOTATION, EM_QPS_MAX_RATE,
	               "a positive number of requests (or connections) per second such as "
	               "\"100\" or \"0.5\", at most 1e9",
	               &s->qps, why, sizeof(why));
	qps_annotation(ann, EM_QPS_BURST_ANNOTATION, EM_QPS_MAX_BURST,
	               "a number of requests of at least 1 such as \"20\"", &s->qps_burst, why,
	               sizeof(why));
	if (s->qps_burst && s->qps_burst < 1) {
		size_t used = strlen(why);
		snprintf(why + used, sizeof(why) - used,
		         "%sannotation %s: expected at least 1; ignored", used ? "; " : "",
		         EM_QPS_BURST_ANNOTATION);
		s->qps_burst = 0;
	}
	const cJSON *fp = em_json_get(ann, EM_FASTPATH_ANNOTATION);
	if (cJSON_IsString(fp) && fp->valuestring && strcmp(fp->valuestring, "off") == 0) {
		s->fastpath_off = true;
	} else if (fp && !(cJSON_IsString(fp) && fp->valuestring &&
	                   strcmp(fp->valuestring, "on") == 0)) {
		size_t used = strlen(why);
		snprintf(why + used, sizeof(why) - used,
		         "%sannotation %s: expected \"on\" or \"off\"; ignored", used ? "; " : "",
		         EM_FASTPATH_ANNOTATION);
	}
	return why[0] ? dup_str(d, why, &s->qps_warn) : 0;
}

static int decode_service(struct dec *d, const cJSON *root, struct em_k8s_service *s)
{
	const cJSON *spec;
	size_t mark;
	int rc;

	s->affinity_timeout_s = K8S_AFFINITY_DEFAULT_S;
	if ((rc = decode_qps(d, root, s)))
		return rc;
	rc = get_object(d, root, "spec", false, &spec);
	if (rc || !spec)
		return rc;
	mark = em_json_push_key(&d->j, "spec");
	rc = decode_service_spec(d, spec, s);
	em_json_pop(&d->j, mark);
	return rc;
}

/* targetRef is kept only when it names a Pod: that is what named ports and
 * affinity to local pods are resolved against. */
static int decode_target_ref(struct dec *d, const cJSON *parent, struct em_k8s_ep_addr *a)
{
	const cJSON *ref;
	const char *kind, *name, *ns;
	size_t mark;
	int rc;

	rc = get_object(d, parent, "targetRef", false, &ref);
	if (rc || !ref)
		return rc;
	mark = em_json_push_key(&d->j, "targetRef");
	rc = get_string(d, ref, "kind", false, &kind);
	if (!rc)
		rc = get_string(d, ref, "name", false, &name);
	if (!rc)
		rc = get_string(d, ref, "namespace", false, &ns);
	em_json_pop(&d->j, mark);
	if (rc || !kind || strcmp(kind, "Pod") != 0)
		return rc;
	rc = dup_str(d, name, &a->pod_name);
	return rc ? rc : dup_str(d, ns, &a->pod_namespace);
}

/* Endpoints addresses: ready ones, then not-ready ones, into one list. */
struct ep_addrs {
	struct em_k8s_ep_addr *next;
	bool ready;
};

static int decode_ep_address(struct em_json *j, const cJSON *it, size_t i, void *arg)
{
	struct dec *d = dec_of(j);
	struct ep_addrs *ea = arg;
	struct em_k8s_ep_addr *a = ea->next++;
	int rc;

	(void)i;
	if (!cJSON_IsObject(it))
		return FAIL(d, NULL, "expected object");
	a->ready = ea->ready;
	rc = endpoint_ip(d, em_json_get(it, "ip"), "ip", 0, &a->ip);
	if (!rc)
		rc = dup_string(d, it, "nodeName", &a->node_name);
	if (!rc)
		rc = decode_target_ref(d, it, a);
	return rc;
}

/* A port object of Endpoints, EndpointSlices and containers: name,
 * protocol and the number under <key>. A slice may leave port out (or null)
 * to mean every port, which is stored as 0. */
static int decode_named_port(struct dec *d, const cJSON *it, const char *key, bool required,
                             char **name, uint8_t *protocol, uint16_t *port)
{
	int rc;

	if (!cJSON_IsObject(it))
		return FAIL(d, NULL, "expected object");
	rc = dup_name(d, it, "name", name);
	if (!rc)
		rc = get_protocol(d, it, protocol);
	if (!rc)
		rc = get_port(d, it, key, required, port);
	return rc;
}

static int decode_ep_port(struct dec *d, const cJSON *it, size_t i, void *item, void *ctx)
{
	struct em_k8s_ep_port *p = item;
	const bool *port_required = ctx;

	(void)i;
	return decode_named_port(d, it, "port", *port_required, &p->name, &p->protocol, &p->port);
}

static int decode_ep_ports(struct dec *d, const cJSON *parent, bool port_required,
                           struct em_k8s_ep_port **out, size_t *n_out)
{
	return decode_list(d, parent, "ports", sizeof(**out), decode_ep_port, &port_required, out,
	                   n_out);
}

static int decode_subset(struct dec *d, const cJSON *it, size_t i, void *item, void *ctx)
{
	static const char *const lists[2] = {"addresses", "notReadyAddresses"};
	struct em_k8s_subset *ss = item;
	struct ep_addrs ea;
	size_t n[2];
	int rc;

	(void)i, (void)ctx;
	if (!cJSON_IsObject(it))
		return FAIL(d, NULL, "expected object");
	for (int l = 0; l < 2; l++)
		if ((rc = em_json_array(&d->j, em_json_get(it, lists[l]), lists[l], 0, NULL,
		                        &n[l])))
			return rc;
	if (n[0] + n[1] && !(ss->addrs = em_arena_calloc(d->a, n[0] + n[1], sizeof(*ss->addrs))))
		return em_json_oom(&d->j);
	ss->n_addrs = n[0] + n[1];
	ea.next = ss->addrs;
	for (int l = 0; l < 2; l++) {
		ea.ready = l == 0;
		if ((rc = em_json_each(&d->j, em_json_get(it, lists[l]), lists[l],
		                       decode_ep_address, &ea)))
			return rc;
	}
	return decode_ep_ports(d, it, true, &ss->ports, &ss->n_ports);
}

static int decode_endpoints(struct dec *d, const cJSON *root, struct em_k8s_endpoints *ep)
{
	return decode_list(d, root, "subsets", sizeof(*ep->subsets), decode_subset, NULL,
	                   &ep->subsets, &ep->n_subsets);
}

/* One slice endpoint being decoded: its addresses are appended to the
 * slice's flat list, each a copy of <proto>. */
struct slice_ep {
	struct em_k8s_endpointslice *sl;
	struct em_k8s_ep_addr proto;
	int family;
};

static int decode_slice_address(struct em_json *j, const cJSON *it, size_t i, void *arg)
{
	struct slice_ep *se = arg;
	struct em_k8s_ep_addr *ea;

	(void)i;
	/* FQDN slices name hosts, not addresses: type-checked only. */
	if (se->family == 0)
		return cJSON_IsString(it) ? 0 : em_json_fail(j, NULL, "expected string");
	ea = &se->sl->addrs[se->sl->n_addrs++];
	*ea = se->proto;
	return endpoint_ip(dec_of(j), it, NULL, se->family, &ea->ip);
}

/* One slice endpoint: every address of it becomes one em_k8s_ep_addr. */
static int decode_slice_endpoint(struct em_json *j, const cJSON *it, size_t i, void *arg)
{
	struct dec *d = dec_of(j);
	struct slice_ep se = {.sl = arg, .proto.ready = true};
	const cJSON *cond, *topo;
	const char *host = NULL;
	size_t n, mark;
	int rc;

	(void)i;
	if (!cJSON_IsObject(it))
		return FAIL(d, NULL, "expected object");
	se.family = se.sl->address_type;
	rc = em_json_array(&d->j, em_json_get(it, "addresses"), "addresses", 0, NULL, &n);
	if (!rc && !em_json_get(it, "addresses"))
		rc = FAIL(d, "addresses", "missing");
	if (!rc)
		rc = get_object(d, it, "conditions", false, &cond);
	if (!rc && cond) {
		mark = em_json_push_key(&d->j, "conditions");
		rc = em_json_bool(&d->j, em_json_get(cond, "ready"), "ready", &se.proto.ready);
		em_json_pop(&d->j, mark);
	}
	if (!rc)
		rc = get_string(d, it, "nodeName", false, &host);
	/* v1beta1 slices carried the node only in the hostname topology key. */
	if (!rc && !host) {
		rc = get_object(d, it, "topology", false, &topo);
		if (!rc && topo) {
			const cJSON *h = em_json_get(topo, "kubernetes.io/hostname");
			if (cJSON_IsString(h))
				host = h->valuestring;
		}
	}
	/* The endpoint's node and targetRef apply to each of its addresses:
	 * decoded once into <proto>, shared in the arena. */
	if (!rc && se.family && n)
		rc = dup_str(d, host, &se.proto.node_name);
	if (!rc && se.family && n)
		rc = decode_target_ref(d, it, &se.proto);
	if (!rc)
		rc = em_json_each(&d->j, em_json_get(it, "addresses"), "addresses",
		                  decode_slice_address, &se);
	return rc;
}

static int decode_slice(struct dec *d, const cJSON *root, struct em_k8s_endpointslice *sl)
{
	static const char *const types[] = {"IPv4", "IPv6", "FQDN"};
	static const uint8_t families[] = {AF_INET, AF_INET6, 0};
	const cJSON *labels, *eps;
	const char *at;
	size_t n, total, mark;
	int rc, t;

	/* Service name: label on the slice's metadata (decode_metadata already
	 * checked metadata is an object). */
	mark = em_json_push_key(&d->j, "metadata");
	rc = get_object(d, em_json_get(root, "metadata"), "labels", false, &labels);
	if (!rc && labels) {
		em_json_push_key(&d->j, "labels");
		rc = dup_string(d, labels, "kubernetes.io/service-name", &sl->service_name);
	}
	em_json_pop(&d->j, mark);
	if (!rc)
		rc = get_string(d, root, "addressType", true, &at);
	if (rc)
		return rc;
	if ((t = em_json_pick(at, types, 3)) < 0)
		return FAIL(d, "addressType", "expected IPv4, IPv6 or FQDN, got \"%.32s\"", at);
	sl->address_type = families[t];

	eps = em_json_get(root, "endpoints");
	if ((rc = em_json_array(&d->j, eps, "endpoints", 0, NULL, &n)))
		return rc;
	/* Size the flat address array up front so decoding never reallocates. */
	total = count_nested(eps, "addresses");
	if (sl->address_type && total &&
	    !(sl->addrs = em_arena_calloc(d->a, total, sizeof(*sl->addrs))))
		return em_json_oom(&d->j);
	rc = em_json_each(&d->j, eps, "endpoints", decode_slice_endpoint, sl);
	return rc ? rc : decode_ep_ports(d, root, false, &sl->ports, &sl->n_ports);
}

static int decode_pod_ip(struct dec *d, const cJSON *it, size_t i, void *item, void *ctx)
{
	(void)i, (void)ctx;
	if (!cJSON_IsObject(it))
		return FAIL(d, NULL, "expected object");
	return ip_value(d, em_json_get(it, "ip"), "ip", 0, item);
}

static int decode_pod_ips(struct dec *d, const cJSON *status, struct em_k8s_pod *p)
{
	int rc = decode_list(d, status, "podIPs", sizeof(*p->ips), decode_pod_ip, NULL, &p->ips,
	                     &p->n_ips);

	if (rc || p->n_ips)
		return rc;
	return decode_one_ip(d, status, "podIP", NULL, &p->ips, &p->n_ips);
}

static int decode_pod_labels(struct dec *d, const cJSON *root, struct em_k8s_pod *p)
{
	const cJSON *labels, *it;
	size_t mark = em_json_push_key(&d->j, "metadata");
	int rc = get_object(d, em_json_get(root, "metadata"), "labels", false, &labels);
	size_t n = labels && !rc ? (size_t)cJSON_GetArraySize(labels) : 0;

	if (n && !(p->labels = em_arena_calloc(d->a, n, sizeof(*p->labels))))
		rc = em_json_oom(&d->j);
	if (n && !rc)
		em_json_push_key(&d->j, "labels");
	for (it = n && !rc ? labels->child : NULL; it; it = it->next) {
		struct em_k8s_label *l = &p->labels[p->n_labels++];
		const char *key = it->string ? it->string : "?", *value;
		if ((rc = em_json_string(&d->j, it, key, true, &value)) ||
		    (rc = dup_str(d, key, &l->key)) || (rc = dup_str(d, value, &l->value)))
			break;
	}
	em_json_pop(&d->j, mark);
	return rc;
}

static int decode_container_port(struct em_json *j, const cJSON *it, size_t i, void *arg)
{
	struct em_k8s_pod *p = arg;
	struct em_k8s_container_port *cp = &p->ports[p->n_ports++];

	(void)i;
	return decode_named_port(dec_of(j), it, "containerPort", true, &cp->name, &cp->protocol,
	                         &cp->port);
}

static int decode_container(struct em_json *j, const cJSON *it, size_t i, void *arg)
{
	const cJSON *ports = em_json_get(it, "ports");
	size_t n;
	int rc;

	(void)i;
	if (!cJSON_IsObject(it))
		return em_json_fail(j, NULL, "expected object");
	rc = em_json_array(j, ports, "ports", 0, NULL, &n);
	return rc ? rc : em_json_each(j, ports, "ports", decode_container_port, arg);
}

/* The ports of all containers, in one list. */
static int decode_pod_ports(struct dec *d, const cJSON *spec, struct em_k8s_pod *p)
{
	const cJSON *ctrs = em_json_get(spec, "containers");
	size_t n, total;
	int rc = em_json_array(&d->j, ctrs, "containers", 0, NULL, &n);

	if (rc || n == 0)
		return rc;
	total = count_nested(ctrs, "ports");
	if (total && !(p->ports = em_arena_calloc(d->a, total, sizeof(*p->ports))))
		return em_json_oom(&d->j);
	return em_json_each(&d->j, ctrs, "containers", decode_container, p);
}

static int decode_pod(struct dec *d, const cJSON *root, struct em_k8s_pod *p)
{
	const cJSON *spec = NULL, *status = NULL;
	size_t mark;
	int rc;

	rc = decode_pod_labels(d, root, p);
	if (!rc)
		rc = get_object(d, root, "spec", false, &spec);
	if (!rc && spec) {
		mark = em_json_push_key(&d->j, "spec");
		rc = dup_string(d, spec, "nodeName", &p->node_name);
		if (!rc)
			rc = decode_pod_ports(d, spec, p);
		em_json_pop(&d->j, mark);
	}
	if (!rc)
		rc = get_object(d, root, "status", false, &status);
	if (!rc && status) {
		mark = em_json_push_key(&d->j, "status");
		rc = dup_string(d, status, "phase", &p->phase);
		if (!rc)
			rc = decode_pod_ips(d, status, p);
		em_json_pop(&d->j, mark);
	}
	return rc;
}

static int decode_node_addr(struct dec *d, const cJSON *it, size_t i, void *item, void *ctx)
{
	struct em_k8s_node_addr *na = item;
	const char *type = NULL, *addr = NULL;
	int rc = 0;

	(void)i, (void)ctx;
	if (!cJSON_IsObject(it))
		return FAIL(d, NULL, "expected object");
	if ((rc = get_string(d, it, "type", true, &type)) ||
	    (rc = get_string(d, it, "address", true, &addr)) ||
	    (rc = dup_str(d, type, &na->type)) || (rc = dup_str(d, addr, &na->address)))
		return rc;
	/* Hostname entries are not addresses; leave ip at family 0. */
	if (parse_ip(addr, 0, &na->ip) &&
	    (strcmp(type, "InternalIP") == 0 || strcmp(type, "ExternalIP") == 0))
		return FAIL(d, "address", "invalid IP address \"%.64s\"", addr);
	return 0;
}

/* The node annotations the mesh reads (tunnel port, relay), strings since
 * annotation values always are. */
static int decode_node_annotations(struct dec *d, const cJSON *root, struct em_k8s_node *nd)
{
	const cJSON *ann, *v;
	size_t mark = em_json_push_key(&d->j, "metadata");
	int rc = get_object(d, em_json_get(root, "metadata"), "annotations", false, &ann);
	long port;

	if (!rc && ann && (v = em_json_get(ann, EM_NODE_TUNNEL_PORT_ANNOTATION))) {
		size_t m2 = em_json_push(&d->j, ".annotations[\"%s\"]", EM_NODE_TUNNEL_PORT_ANNOTATION);
		if (!cJSON_IsString(v) || !v->valuestring)
			rc = FAIL(d, NULL, "expected string holding a port 1..65535");
		else if ((port = digits_value(v->valuestring)) < 1 || port > 65535)
			rc = FAIL(d, NULL, "expected port 1..65535, got \"%.32s\"", v->valuestring);
		else
			nd->tunnel_port = (uint16_t)port;
		em_json_pop(&d->j, m2);
	}
	if (!rc && ann && (v = em_json_get(ann, EM_NODE_RELAY_ANNOTATION))) {
		em_json_push(&d->j, ".annotations[\"%s\"]", EM_NODE_RELAY_ANNOTATION);
		if (!cJSON_IsString(v) || !v->valuestring ||
		    (strcmp(v->valuestring, "true") != 0 && strcmp(v->valuestring, "false") != 0))
			rc = FAIL(d, NULL, "expected \"true\" or \"false\"");
		else
			nd->relay = strcmp(v->valuestring, "true") == 0;
	}
	em_json_pop(&d->j, mark);
	return rc;
}

static int decode_node(struct dec *d, const cJSON *root, struct em_k8s_node *nd)
{
	const cJSON *status;
	size_t mark;
	int rc;

	rc = decode_node_annotations(d, root, nd);
	if (!rc)
		rc = get_object(d, root, "status", false, &status);
	if (rc || !status)
		return rc;
	mark = em_json_push_key(&d->j, "status");
	rc = decode_list(d, status, "addresses", sizeof(*nd->addrs), decode_node_addr, NULL,
	                 &nd->addrs, &nd->n_addrs);
	em_json_pop(&d->j, mark);
	return rc;
}

/* ---- Router objects (rules.kubeedge.io/v1) ---- */

/* Bounds of a Router string map: the seed's columns hold 1 KiB of resources
 * and 10 KiB of properties. */
#define MAP_MAX_ITEMS 64
#define MAP_MAX_VALUE 1024
#define PATH_MAX_LEN  1024

const char *em_k8s_map_get(const struct em_k8s_map *m, const char *key)
{
	for (size_t i = 0; m && i < m->n; i++)
		if (strcmp(m->items[i].key, key) == 0)
			return m->items[i].value;
	return NULL;
}

/* The JSON type of <v> as a message says it. */
static const char *json_type(const cJSON *v)
{
	if (cJSON_IsNumber(v))
		return "number";
	if (cJSON_IsBool(v))
		return "boolean";
	if (cJSON_IsArray(v))
		return "array";
	if (cJSON_IsObject(v))
		return "object";
	return cJSON_IsNull(v) ? "null" : "string";
}

/* Object member <name> of <parent> as a map of strings: every value must be
 * a JSON string ("port": "80", never 80), as in KubeEdge's map[string]string. */
static int decode_string_map(struct dec *d, const cJSON *parent, const char *name, bool required,
                             struct em_k8s_map *m)
{
	const cJSON *obj, *it;
	size_t n = 0, mark;
	int rc = get_object(d, parent, name, required, &obj);

	if (rc || !obj)
		return rc;
	cJSON_ArrayForEach(it, obj) n++;
	if (n > MAP_MAX_ITEMS)
		return FAIL(d, name, "expected at most %d entries, got %zu", MAP_MAX_ITEMS, n);
	if (n && !(m->items = em_arena_calloc(d->a, n, sizeof(*m->items))))
		return em_json_oom(&d->j);
	mark = em_json_push_key(&d->j, name);
	cJSON_ArrayForEach(it, obj)
	{
		const char *key = it->string ? it->string : "";
		struct em_k8s_label *l = &m->items[m->n];
		if (!cJSON_IsString(it) || !it->valuestring) {
			rc = FAIL(d, key, "expected string, got %s (write \"%s\": \"...\")",
			          json_type(it), key);
			break;
		}
		if (!key[0]) {
			rc = FAIL(d, NULL, "empty key");
			break;
		}
		if (strlen(it->valuestring) > MAP_MAX_VALUE) {
			rc = FAIL(d, key, "longer than %d characters", MAP_MAX_VALUE);
			break;
		}
		if ((rc = dup_str(d, key, &l->key)) ||
		    (rc = dup_str(d, it->valuestring, &l->value)))
			break;
		m->n++;
	}
	em_json_pop(&d->j, mark);
	return rc;
}

/* A port written as a string of digits (map values are strings). */
static int map_port(struct dec *d, const char *field, const char *v, uint16_t *out)
{
	long port = digits_value(v);
	if (port < 1 || port > 65535)
		return FAIL(d, field, "expected a port \"1\"..\"65535\", got \"%.32s\"", v);
	*out = (uint16_t)port;
	return 0;
}

/* An HTTP path the Router matches or calls: "/" then printable bytes other
 * than space, '?' and '#' (a query belongs to the request, not the rule). */
static int check_path(struct dec *d, const char *field, const char *v)
{
	size_t n = strlen(v);
	if (v[0] != '/')
		return FAIL(d, field, "expected a path starting with \"/\", got \"%.64s\"", v);
	if (n > PATH_MAX_LEN)
		return FAIL(d, field, "longer than %d characters", PATH_MAX_LEN);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)v[i] <= 0x20 || v[i] == 0x7f || v[i] == '?' || v[i] == '#')
			return FAIL(d, field, "invalid character in path \"%.64s\"", v);
	return 0;
}

/* The "router" member edgemesh stores beside the object (store/router.h):
 * read leniently, it is ours and only carries identity across writes. */
static int decode_router_meta(struct dec *d, const cJSON *router, struct em_k8s_router_meta *m)
{
	const cJSON *id = em_json_get(router, "id"), *ca = em_json_get(router, "created_at");
	int rc = 0;

	if (cJSON_IsString(id) && id->valuestring[0] && strlen(id->valuestring) <= 64)
		rc = dup_str(d, id->valuestring, &m->id);
	if (!rc && cJSON_IsString(ca) && ca->valuestring[0] && strlen(ca->valuestring) <= 64)
		rc = dup_str(d, ca->valuestring, &m->created_at);
	return rc;
}

static int decode_ruleendpoint(struct dec *d, const cJSON *root, struct em_k8s_ruleendpoint *re)
{
	static const char *const types[] = {"rest", "servicebus"};
	const cJSON *spec, *router = em_json_get(root, "router");
	const char *type, *sp;
	size_t mark;
	int rc, t;

	if ((rc = get_object(d, root, "spec", true, &spec)))
		return rc;
	mark = em_json_push_key(&d->j, "spec");
	rc = get_string(d, spec, "ruleEndpointType", true, &type);
	if (!rc && strcmp(type, "eventbus") == 0)
		rc = FAIL(d, "ruleEndpointType",
		          "\"eventbus\" is not supported (edgemesh has no MQTT broker); expected "
		          "rest or servicebus");
	else if (!rc && (t = em_json_pick(type, types, 2)) < 0)
		rc = FAIL(d, "ruleEndpointType", "expected rest or servicebus, got \"%.32s\"",
		          type);
	else if (!rc)
		re->type = (enum em_re_type)t;
	if (!rc)
		rc = decode_string_map(d, spec, "properties", false, &re->properties);
	if (!rc && re->type == EM_RE_SERVICEBUS &&
	    (sp = em_k8s_map_get(&re->properties, "service_port"))) {
		em_json_push_key(&d->j, "properties");
		rc = map_port(d, "service_port", sp, &re->service_port);
	}
	em_json_pop(&d->j, mark);
	if (!rc && cJSON_IsObject(router)) {
		const cJSON *sh = em_json_get(router, "is_shared");
		re->is_shared = cJSON_IsTrue(sh);
		rc = decode_router_meta(d, router, &re->meta);
	}
	return rc;
}

/* A status counter: a non-negative integer, else 0 (status is the Router's
 * output; a bad one is not worth refusing the rule for). */
static uint64_t counter(const cJSON *v)
{
	if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0) || v->valuedouble > 9.0e15)
		return 0;
	return (uint64_t)v->valuedouble;
}

/* router.errors: [{"time": unix seconds, "reason": "..."}], the last
 * EM_K8S_RULE_ERRORS kept; malformed entries are skipped. */
static int decode_rule_errors(struct dec *d, const cJSON *router, struct em_k8s_rule *r)
{
	const cJSON *errs = em_json_get(router, "errors"), *it;
	size_t n = 0, skip;

	if (!cJSON_IsArray(errs))
		return 0;
	cJSON_ArrayForEach(it, errs) n++;
	skip = n > EM_K8S_RULE_ERRORS ? n - EM_K8S_RULE_ERRORS : 0;
	if (n - skip && !(r->errors = em_arena_calloc(d->a, n - skip, sizeof(*r->errors))))
		return em_json_oom(&d->j);
	cJSON_ArrayForEach(it, errs)
	{
		const cJSON *tm = em_json_get(it, "time"), *why = em_json_get(it, "reason");
		if (skip) {
			skip--;
			continue;
		}
		if (!cJSON_IsNumber(tm) || !cJSON_IsString(why))
			continue;
		struct em_k8s_rule_error *e = &r->errors[r->n_errors];
		e->time = (int64_t)counter(tm);
		if (dup_str(d, why->valuestring, &e->reason))
			return em_json_oom(&d->j);
		if (strlen(e->reason) > EM_K8S_RULE_REASON_MAX)
			e->reason[EM_K8S_RULE_REASON_MAX] = 0;
		r->n_errors++;
	}
	return 0;
}

/* targetResource.service "namespace/name" and targetResource.port. */
static int decode_rule_service(struct dec *d, struct em_k8s_rule *r)
{
	const char *svc = em_k8s_map_get(&r->target_resource, "service");
	const char *port = em_k8s_map_get(&r->target_resource, "port");
	const char *slash = NULL;
	size_t mark;
	int rc = 0;

	if (!svc && !port)
		return 0;
	mark = em_json_push_key(&d->j, "targetResource");
	if (!svc)
		rc = FAIL(d, "port",
		          "given without \"service\" (expected \"service\": "
		          "\"namespace/name\" beside it)");
	else if (!port)
		rc = FAIL(d, "port", "missing: \"service\" needs the Service's port, as a string");
	else if (!(slash = strchr(svc, '/')) || slash == svc || !slash[1] ||
	         strchr(slash + 1, '/') || slash - svc > K8S_NAME_MAX ||
	         strlen(slash + 1) > K8S_NAME_MAX)
		rc = FAIL(d, "service", "expected \"namespace/name\", got \"%.64s\"", svc);
	if (!rc)
		rc = map_port(d, "port", port, &r->svc_port);
	if (!rc) {
		size_t nl = (size_t)(slash - svc);
		if (!(r->svc_ns = em_arena_alloc(d->a, nl + 1)))
			rc = em_json_oom(&d->j);
		else {
			memcpy(r->svc_ns, svc, nl);
			r->svc_ns[nl] = 0;
			rc = dup_str(d, slash + 1, &r->svc_name);
		}
	}
	em_json_pop(&d->j, mark);
	return rc;
}

static int decode_rule(struct dec *d, const cJSON *root, struct em_k8s_rule *r)
{
	const cJSON *spec, *status = em_json_get(root, "status"), *router;
	const char *src, *tgt, *p;
	size_t mark;
	int rc;

	if ((rc = get_object(d, root, "spec", true, &spec)))
		return rc;
	mark = em_json_push_key(&d->j, "spec");
	if (!(rc = get_string(d, spec, "source", true, &src)) &&
	    !(rc = check_object_name(d, "source", src)) &&
	    !(rc = get_string(d, spec, "target", true, &tgt)) &&
	    !(rc = check_object_name(d, "target", tgt)) && !(rc = dup_str(d, src, &r->source)))
		rc = dup_str(d, tgt, &r->target);
	if (!rc)
		rc = decode_string_map(d, spec, "sourceResource", true, &r->source_resource);
	if (!rc)
		rc = decode_string_map(d, spec, "targetResource", true, &r->target_resource);
	if (!rc && (p = em_k8s_map_get(&r->source_resource, "path"))) {
		size_t m2 = em_json_push_key(&d->j, "sourceResource");
		if (!(rc = check_path(d, "path", p)))
			r->source_path = (char *)p; /* in the arena already */
		em_json_pop(&d->j, m2);
	}
	if (!rc && (p = em_k8s_map_get(&r->target_resource, "path"))) {
		size_t m2 = em_json_push_key(&d->j, "targetResource");
		if (!(rc = check_path(d, "path", p)))
			r->target_path = (char *)p;
		em_json_pop(&d->j, m2);
	}
	if (!rc)
		rc = decode_rule_service(d, r);
	em_json_pop(&d->j, mark);
	if (rc)
		return rc;
	if (cJSON_IsObject(status)) {
		r->success = counter(em_json_get(status, "successMessages"));
		r->fail = counter(em_json_get(status, "failMessages"));
	}
	router = em_json_get(root, "router");
	if (!cJSON_IsObject(router))
		return 0;
	rc = decode_router_meta(d, router, &r->meta);
	return rc ? rc : decode_rule_errors(d, router, r);
}

int em_k8s_decode_json(const struct cJSON *root, int kind, struct em_k8s_object **out, char *err,
                       size_t errlen)
{
	return em_k8s_decode_json_lim(root, kind, NULL, out, err, errlen);
}

/* The kind to decode: <kind> checked against the object's "kind" field,
 * which may be absent when <kind> is given (the store's values may lack
 * TypeMeta). */
static int decode_kind(struct dec *d, const cJSON *root, int kind)
{
	const char *kname;
	int rc, k;

	if (kind < -1 || kind >= EM_KIND__COUNT)
		return FAIL(d, "kind", "unsupported kind %d", kind);
	if (!cJSON_IsObject(root))
		return FAIL(d, NULL, "expected a JSON object");
	if ((rc = get_string(d, root, "kind", kind < 0, &kname)) || !kname)
		return rc ? rc : kind;
	if ((k = em_kind_from_name(kname)) < 0)
		return FAIL(d, "kind", "unsupported kind \"%.32s\"", kname);
	if (kind >= 0 && k != kind)
		return FAIL(d, "kind", "expected %s, got \"%.32s\"", kind_names[kind], kname);
	/* Rule and RuleEndpoint are common CRD names: only KubeEdge's group. */
	if (k == EM_KIND_RULE || k == EM_KIND_RULEENDPOINT) {
		const char *av;
		if ((rc = get_string(d, root, "apiVersion", false, &av)))
			return rc;
		if (av && strcmp(av, kind_api_versions[k]) != 0)
			return FAIL(d, "apiVersion", "expected %s for %s, got \"%.64s\"",
			            kind_api_versions[k], kind_names[k], av);
	}
	return k;
}

int em_k8s_decode_json_lim(const struct cJSON *root, int kind, const struct em_k8s_limits *lim,
                           struct em_k8s_object **out, char *err, size_t errlen)
{
	struct dec d = {.j = {.err = err, .errlen = errlen}, .lim = lim};
	struct em_arena a = {0};
	struct em_k8s_object *o;
	int rc;

	*out = NULL;
	if (err && errlen)
		err[0] = 0;
	if ((kind = decode_kind(&d, root, kind)) < 0)
		return kind;
	if (!(o = em_arena_calloc(&a, 1, sizeof(*o))))
		return em_json_oom(&d.j);
	o->arena = a;
	d.a = &o->arena;
	o->kind = (enum em_kind)kind;
	rc = decode_metadata(&d, root, o);
	if (rc)
		goto fail;
	switch (o->kind) {
	case EM_KIND_SERVICE:
		rc = decode_service(&d, root, &o->svc);
		break;
	case EM_KIND_ENDPOINTS:
		rc = decode_endpoints(&d, root, &o->ep);
		break;
	case EM_KIND_ENDPOINTSLICE:
		rc = decode_slice(&d, root, &o->slice);
		break;
	case EM_KIND_POD:
		rc = decode_pod(&d, root, &o->pod);
		break;
	case EM_KIND_NODE:
		rc = decode_node(&d, root, &o->node);
		break;
	case EM_KIND_RULEENDPOINT:
		rc = decode_ruleendpoint(&d, root, &o->re);
		break;
	case EM_KIND_RULE:
		rc = decode_rule(&d, root, &o->rule);
		break;
	default:
		rc = FAIL(&d, "kind", "unsupported kind");
		break;
	}
	if (rc)
		goto fail;
	*out = o;
	return 0;
fail:
	em_k8s_free(o);
	return rc;
}

int em_k8s_decode(const char *json, size_t len, int kind, struct em_k8s_object **out, char *err,
                  size_t errlen)
{
	struct em_json j = {.err = err, .errlen = errlen};
	cJSON *root;
	size_t off;
	bool trailing;
	int rc;

	*out = NULL;
	if (!json)
		return em_json_fail(&j, NULL, "no input");
	if (!(root = em_json_parse(json, len, &off, &trailing)))
		return off == SIZE_MAX ? em_json_oom(&j)
		                       : em_json_fail(&j, NULL, "malformed JSON at offset %zu%s",
		                                      off, trailing ? ": trailing data" : "");
	rc = em_k8s_decode_json(root, kind, out, err, errlen);
	cJSON_Delete(root);
	return rc;
}

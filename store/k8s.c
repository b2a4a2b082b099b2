/* Kubernetes object decoding. The decoder is strict about the fields the
 * mesh routes on and blind to everything else, so that a real `kubectl get -o
 * json` dump (managedFields, annotations, status conditions...) decodes while
 * a mistyped port or address is refused with the JSON path that is wrong. */
#include "store/k8s.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

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
};

static const char *const kind_names[EM_KIND__COUNT] = {
        [EM_KIND_SERVICE] = "Service",
        [EM_KIND_ENDPOINTS] = "Endpoints",
        [EM_KIND_ENDPOINTSLICE] = "EndpointSlice",
        [EM_KIND_POD] = "Pod",
        [EM_KIND_NODE] = "Node",
};

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
	if (!obj)
		return;
	switch (obj->kind) {
	case EM_KIND_SERVICE:
		free(obj->svc.cluster_ips);
		free(obj->svc.external_name);
		for (size_t i = 0; obj->svc.ports && i < obj->svc.n_ports; i++) {
			free(obj->svc.ports[i].name);
			free(obj->svc.ports[i].target_port_name);
		}
		free(obj->svc.ports);
		break;
	case EM_KIND_ENDPOINTS:
		for (size_t i = 0; obj->ep.subsets && i < obj->ep.n_subsets; i++) {
			struct em_k8s_subset *ss = &obj->ep.subsets[i];
			for (size_t j = 0; ss->addrs && j < ss->n_addrs; j++) {
				free(ss->addrs[j].node_name);
				free(ss->addrs[j].pod_name);
				free(ss->addrs[j].pod_namespace);
			}
			free(ss->addrs);
			for (size_t j = 0; ss->ports && j < ss->n_ports; j++)
				free(ss->ports[j].name);
			free(ss->ports);
		}
		free(obj->ep.subsets);
		break;
	case EM_KIND_ENDPOINTSLICE:
		free(obj->slice.service_name);
		for (size_t i = 0; obj->slice.addrs && i < obj->slice.n_addrs; i++) {
			free(obj->slice.addrs[i].node_name);
			free(obj->slice.addrs[i].pod_name);
			free(obj->slice.addrs[i].pod_namespace);
		}
		free(obj->slice.addrs);
		for (size_t i = 0; obj->slice.ports && i < obj->slice.n_ports; i++)
			free(obj->slice.ports[i].name);
		free(obj->slice.ports);
		break;
	case EM_KIND_POD:
		free(obj->pod.ips);
		free(obj->pod.node_name);
		free(obj->pod.phase);
		for (size_t i = 0; obj->pod.labels && i < obj->pod.n_labels; i++) {
			free(obj->pod.labels[i].key);
			free(obj->pod.labels[i].value);
		}
		free(obj->pod.labels);
		for (size_t i = 0; obj->pod.ports && i < obj->pod.n_ports; i++)
			free(obj->pod.ports[i].name);
		free(obj->pod.ports);
		break;
	case EM_KIND_NODE:
		for (size_t i = 0; obj->node.addrs && i < obj->node.n_addrs; i++) {
			free(obj->node.addrs[i].type);
			free(obj->node.addrs[i].address);
		}
		free(obj->node.addrs);
		break;
	default:
		break;
	}
	free(obj->ns);
	free(obj->name);
	free(obj->resource_version);
	free(obj);
}

/* Decoder state: where we are in the object, for error messages. The path
 * is a stack of ".field" and "[i]" segments; a segment is popped by
 * restoring the length returned when it was pushed. */
struct dec {
	char *err;
	size_t errlen;
	const struct em_k8s_limits *lim; /* NULL: no service ranges to refuse */
	size_t plen;
	char path[256];
};

static size_t path_push(struct dec *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static size_t path_push(struct dec *d, const char *fmt, ...)
{
	size_t old = d->plen;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(d->path + d->plen, sizeof(d->path) - d->plen, fmt, ap);
	va_end(ap);
	if (n > 0)
		d->plen = EM_MIN(d->plen + (size_t)n, sizeof(d->path) - 1);
	return old;
}

static size_t path_field(struct dec *d, const char *field)
{
	return path_push(d, d->plen ? ".%s" : "%s", field);
}

static size_t path_index(struct dec *d, size_t i)
{
	return path_push(d, "[%zu]", i);
}

static void path_pop(struct dec *d, size_t old)
{
	d->plen = old;
	d->path[old] = 0;
}

/* Reports "<path>[.<field>]: <reason>" and returns -EINVAL. */
static int fail(struct dec *d, const char *field, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static int fail(struct dec *d, const char *field, const char *fmt, ...)
{
	va_list ap;
	int n = 0;

	if (!d->err || d->errlen == 0)
		return -EINVAL;
	if (d->plen && field)
		n = snprintf(d->err, d->errlen, "%s.%s: ", d->path, field);
	else if (d->plen || field)
		n = snprintf(d->err, d->errlen, "%s: ", d->plen ? d->path : field);
	if (n < 0)
		n = 0;
	if ((size_t)n < d->errlen) {
		va_start(ap, fmt);
		vsnprintf(d->err + n, d->errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static int oom(struct dec *d)
{
	if (d->err && d->errlen)
		snprintf(d->err, d->errlen, "out of memory");
	return -ENOMEM;
}

/* Kubernetes prints omitted optional fields either not at all or as null
 * (e.g. "subsets": null); both mean absent. */
static const cJSON *field(const cJSON *obj, const char *name)
{
	const cJSON *it = obj ? cJSON_GetObjectItemCaseSensitive(obj, name) : NULL;
	return it && !cJSON_IsNull(it) ? it : NULL;
}

static int get_object(struct dec *d, const cJSON *parent, const char *name, bool required,
                      const cJSON **out)
{
	const cJSON *it = field(parent, name);
	*out = NULL;
	if (!it)
		return required ? fail(d, name, "missing") : 0;
	if (!cJSON_IsObject(it))
		return fail(d, name, "expected object");
	*out = it;
	return 0;
}

static int get_array(struct dec *d, const cJSON *parent, const char *name, const cJSON **out,
                     size_t *n)
{
	const cJSON *it = field(parent, name);
	*out = NULL;
	*n = 0;
	if (!it)
		return 0;
	if (!cJSON_IsArray(it))
		return fail(d, name, "expected array");
	*out = it;
	*n = (size_t)cJSON_GetArraySize(it);
	return 0;
}

static int get_string(struct dec *d, const cJSON *parent, const char *name, bool required,
                      const char **out)
{
	const cJSON *it = field(parent, name);
	*out = NULL;
	if (!it)
		return required ? fail(d, name, "missing") : 0;
	if (!cJSON_IsString(it) || !it->valuestring)
		return fail(d, name, "expected string");
	*out = it->valuestring;
	return 0;
}

/* An optional string copied into <*out> (left NULL when absent). */
static int dup_string(struct dec *d, const cJSON *parent, const char *name, char **out)
{
	const char *s;
	int rc = get_string(d, parent, name, false, &s);
	if (rc || !s)
		return rc;
	*out = strdup(s);
	return *out ? 0 : oom(d);
}

/* An optional name that defaults to "" (port names). */
static int dup_name(struct dec *d, const cJSON *parent, const char *name, char **out)
{
	int rc = dup_string(d, parent, name, out);
	if (rc || *out)
		return rc;
	*out = strdup("");
	return *out ? 0 : oom(d);
}

static bool json_int_in(const cJSON *it, double lo, double hi)
{
	if (!cJSON_IsNumber(it))
		return false;
	double v = it->valuedouble;
	/* The range test also rejects NaN; the cast test rejects fractions. */
	return v >= lo && v <= hi && (double)(int64_t)v == v;
}

/* An integer field in [lo, hi]. Absent leaves <*out> alone and sets
 * <*present> false (when given). */
static int get_uint(struct dec *d, const cJSON *parent, const char *name, bool required,
                    uint32_t lo, uint32_t hi, uint32_t *out, bool *present)
{
	const cJSON *it = field(parent, name);
	if (present)
		*present = it != NULL;
	if (!it)
		return required ? fail(d, name, "missing, expected integer %u..%u", lo, hi) : 0;
	if (!json_int_in(it, lo, hi))
		return fail(d, name, "expected integer %u..%u", lo, hi);
	*out = (uint32_t)it->valuedouble;
	return 0;
}

static int get_port(struct dec *d, const cJSON *parent, const char *name, bool required,
                    uint16_t *out)
{
	uint32_t v = 0;
	int rc = get_uint(d, parent, name, required, 1, 65535, &v, NULL);
	if (!rc)
		*out = (uint16_t)v;
	return rc;
}

/* Protocol of a port; Kubernetes defaults it to TCP. */
static int get_protocol(struct dec *d, const cJSON *parent, uint8_t *out)
{
	const char *s;
	int rc = get_string(d, parent, "protocol", false, &s);
	if (rc)
		return rc;
	if (!s || strcmp(s, "TCP") == 0)
		*out = IPPROTO_TCP;
	else if (strcmp(s, "UDP") == 0)
		*out = IPPROTO_UDP;
	else if (strcmp(s, "SCTP") == 0)
		*out = IPPROTO_SCTP;
	else
		return fail(d, "protocol", "expected TCP, UDP or SCTP, got \"%.32s\"", s);
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

/* Parses string <it> as an IP address; the error names <name> under the
 * current path (or the path alone when <name> is NULL). */
static int ip_value(struct dec *d, const cJSON *it, const char *name, int family,
                    struct em_addr *out)
{
	if (!cJSON_IsString(it) || !it->valuestring)
		return fail(d, name, "expected string");
	if (parse_ip(it->valuestring, family, out))
		return fail(d, name, "invalid %s address \"%.64s\"", family_name(family),
		            it->valuestring);
	return 0;
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

/* Refuses endpoint address <a> of field <name> (NULL: the current path). */
static int check_endpoint_ip(struct dec *d, const char *name, const struct em_addr *a)
{
	char ip[EM_ADDR_STRLEN], net[EM_ADDR_STRLEN];
	const char *why = bad_endpoint_ip(a);

	if (why)
		return fail(d, name, "%s is %s; expected a pod or host address",
		            em_addr_format(a, false, ip, sizeof(ip)), why);
	for (size_t i = 0; d->lim && i < d->lim->n_service_cidrs; i++) {
		const struct em_cidr *r = &d->lim->service_cidrs[i];
		if (em_cidr_contains(r, a))
			return fail(d, name,
			            "%s is inside capture.service_cidrs %s/%u, a service address; "
			            "expected a pod or host address",
			            em_addr_format(a, false, ip, sizeof(ip)),
			            em_addr_format(&r->addr, false, net, sizeof(net)), r->prefix);
	}
	return 0;
}

static int check_object_name(struct dec *d, const char *field_name, const char *s)
{
	size_t n = strlen(s);
	if (n == 0)
		return fail(d, field_name, "expected non-empty string");
	if (n > K8S_NAME_MAX)
		return fail(d, field_name, "longer than %d characters", K8S_NAME_MAX);
	/* '/' would make the store key "<ns>/<type>/<name>" ambiguous. */
	for (size_t i = 0; i < n; i++)
		if (s[i] == '/' || (unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return fail(d, field_name, "invalid character in \"%.64s\"", s);
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
	mark = path_field(d, "metadata");
	rc = get_string(d, meta, "name", true, &name);
	if (!rc)
		rc = check_object_name(d, "name", name);
	if (!rc)
		rc = get_string(d, meta, "namespace", false, &ns);
	if (!rc && ns && o->kind != EM_KIND_NODE)
		rc = check_object_name(d, "namespace", ns);
	if (!rc)
		rc = dup_string(d, meta, "resourceVersion", &o->resource_version);
	path_pop(d, mark);
	if (rc)
		return rc;
	/* Nodes are cluster-scoped: whatever namespace they carry is noise. */
	if (o->kind == EM_KIND_NODE || !ns)
		ns = o->kind == EM_KIND_NODE ? EM_NODE_NAMESPACE : "default";
	o->name = strdup(name);
	o->ns = strdup(ns);
	if (!o->name || !o->ns)
		return oom(d);
	return 0;
}

/* targetPort: an integer, a numeric string, or a named port of the pods. */
static int decode_target_port(struct dec *d, const cJSON *port, struct em_k8s_svc_port *p)
{
	const cJSON *it = field(port, "targetPort");

	if (!it) {
		/* The API server defaults targetPort to port. */
		p->target_port = p->port;
		return 0;
	}
	if (cJSON_IsNumber(it)) {
		if (!json_int_in(it, 1, 65535))
			return fail(d, "targetPort", "expected integer 1..65535 or port name");
		p->target_port = (uint16_t)it->valuedouble;
		return 0;
	}
	if (!cJSON_IsString(it) || !it->valuestring || !it->valuestring[0])
		return fail(d, "targetPort", "expected integer 1..65535 or port name");

	const char *s = it->valuestring;
	size_t n = strspn(s, "0123456789");
	if (s[n] == 0) {
		unsigned long v = n <= 5 ? strtoul(s, NULL, 10) : 0;
		if (v < 1 || v > 65535)
			return fail(d, "targetPort", "expected integer 1..65535 or port name");
		p->target_port = (uint16_t)v;
		return 0;
	}
	/* IANA service names are at most 15 characters; leave room for laxer
	 * producers but keep names bounded. */
	if (strlen(s) > 63)
		return fail(d, "targetPort", "port name longer than 63 characters");
	p->target_port_name = strdup(s);
	return p->target_port_name ? 0 : oom(d);
}

static int decode_svc_port(struct dec *d, const cJSON *port, struct em_k8s_svc_port *p)
{
	int rc;

	if (!cJSON_IsObject(port))
		return fail(d, NULL, "expected object");
	rc = dup_name(d, port, "name", &p->name);
	if (!rc)
		rc = get_protocol(d, port, &p->protocol);
	if (!rc)
		rc = get_port(d, port, "port", true, &p->port);
	if (!rc)
		rc = decode_target_port(d, port, p);
	if (!rc)
		rc = get_port(d, port, "nodePort", false, &p->node_port);
	return rc;
}

static int decode_svc_ips(struct dec *d, const cJSON *spec, struct em_k8s_service *s)
{
	const cJSON *arr, *it;
	const char *one;
	size_t n, i = 0, mark;
	int rc;

	rc = get_array(d, spec, "clusterIPs", &arr, &n);
	if (rc)
		return rc;
	if (n == 0) {
		/* Older API servers print only the singular field. */
		rc = get_string(d, spec, "clusterIP", false, &one);
		if (rc || !one || !one[0])
			return rc;
		if (strcmp(one, "None") == 0) {
			s->headless = true;
			return 0;
		}
		s->cluster_ips = calloc(1, sizeof(*s->cluster_ips));
		if (!s->cluster_ips)
			return oom(d);
		s->n_cluster_ips = 1;
		return ip_value(d, field(spec, "clusterIP"), "clusterIP", 0, &s->cluster_ips[0]);
	}

	s->cluster_ips = calloc(n, sizeof(*s->cluster_ips));
	if (!s->cluster_ips)
		return oom(d);
	s->n_cluster_ips = n;
	mark = path_field(d, "clusterIPs");
	cJSON_ArrayForEach(it, arr)
	{
		size_t m = path_index(d, i);
		if (i == 0 && cJSON_IsString(it) && it->valuestring &&
		    strcmp(it->valuestring, "None") == 0) {
			s->headless = true;
			path_pop(d, m);
			break;
		}
		rc = ip_value(d, it, NULL, 0, &s->cluster_ips[i]);
		path_pop(d, m);
		if (rc)
			break;
		i++;
	}
	path_pop(d, mark);
	if (s->headless)
		s->n_cluster_ips = 0;
	return rc;
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
		return fail(d, "sessionAffinity", "expected None or ClientIP, got \"%.32s\"", str);
	s->affinity_client_ip = true;
	rc = get_object(d, spec, "sessionAffinityConfig", false, &cfg);
	if (rc || !cfg)
		return rc;
	mark = path_field(d, "sessionAffinityConfig");
	rc = get_object(d, cfg, "clientIP", false, &cip);
	if (!rc && cip) {
		path_field(d, "clientIP");
		rc = get_uint(d, cip, "timeoutSeconds", false, 1, K8S_AFFINITY_MAX_S,
		              &s->affinity_timeout_s, NULL);
	}
	path_pop(d, mark);
	return rc;
}

static int decode_service(struct dec *d, const cJSON *root, struct em_k8s_service *s)
{
	const cJSON *spec, *ports, *it;
	const char *str;
	size_t n, i = 0, mark;
	int rc;

	s->affinity_timeout_s = K8S_AFFINITY_DEFAULT_S;
	rc = get_object(d, root, "spec", false, &spec);
	if (rc || !spec)
		return rc;
	mark = path_field(d, "spec");

	rc = get_string(d, spec, "type", false, &str);
	if (rc)
		goto out;
	if (!str || strcmp(str, "ClusterIP") == 0)
		s->type = EM_SVC_CLUSTER_IP;
	else if (strcmp(str, "NodePort") == 0)
		s->type = EM_SVC_NODE_PORT;
	else if (strcmp(str, "LoadBalancer") == 0)
		s->type = EM_SVC_LOAD_BALANCER;
	else if (strcmp(str, "ExternalName") == 0)
		s->type = EM_SVC_EXTERNAL_NAME;
	else {
		rc = fail(d, "type", "unknown service type \"%.32s\"", str);
		goto out;
	}

	if (s->type == EM_SVC_EXTERNAL_NAME) {
		rc = get_string(d, spec, "externalName", true, &str);
		if (!rc && !str[0])
			rc = fail(d, "externalName", "expected non-empty string");
		if (rc)
			goto out;
		s->external_name = strdup(str);
		if (!s->external_name) {
			rc = oom(d);
			goto out;
		}
	} else {
		rc = decode_svc_ips(d, spec, s);
		if (rc)
			goto out;
	}

	rc = decode_affinity(d, spec, s);
	if (rc)
		goto out;

	rc = get_array(d, spec, "ports", &ports, &n);
	if (rc || n == 0)
		goto out;
	s->ports = calloc(n, sizeof(*s->ports));
	if (!s->ports) {
		rc = oom(d);
		goto out;
	}
	s->n_ports = n;
	size_t m = path_field(d, "ports");
	cJSON_ArrayForEach(it, ports)
	{
		size_t m2 = path_index(d, i);
		rc = decode_svc_port(d, it, &s->ports[i++]);
		path_pop(d, m2);
		if (rc)
			break;
	}
	path_pop(d, m);
out:
	path_pop(d, mark);
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
	mark = path_field(d, "targetRef");
	rc = get_string(d, ref, "kind", false, &kind);
	if (!rc)
		rc = get_string(d, ref, "name", false, &name);
	if (!rc)
		rc = get_string(d, ref, "namespace", false, &ns);
	path_pop(d, mark);
	if (rc || !kind || strcmp(kind, "Pod") != 0)
		return rc;
	if (name) {
		a->pod_name = strdup(name);
		if (!a->pod_name)
			return oom(d);
	}
	if (ns) {
		a->pod_namespace = strdup(ns);
		if (!a->pod_namespace)
			return oom(d);
	}
	return 0;
}

static int decode_ep_address(struct dec *d, const cJSON *it, bool ready, struct em_k8s_ep_addr *a)
{
	const cJSON *ip;
	int rc;

	if (!cJSON_IsObject(it))
		return fail(d, NULL, "expected object");
	a->ready = ready;
	ip = field(it, "ip");
	if (!ip)
		return fail(d, "ip", "missing");
	rc = ip_value(d, ip, "ip", 0, &a->ip);
	if (!rc)
		rc = check_endpoint_ip(d, "ip", &a->ip);
	if (!rc)
		rc = dup_string(d, it, "nodeName", &a->node_name);
	if (!rc)
		rc = decode_target_ref(d, it, a);
	return rc;
}

/* Endpoints ports and EndpointSlice ports share a shape; a slice may leave
 * port out (or null) to mean every port, which is stored as 0. */
static int decode_ep_port(struct dec *d, const cJSON *it, bool port_required,
                          struct em_k8s_ep_port *p)
{
	int rc;

	if (!cJSON_IsObject(it))
		return fail(d, NULL, "expected object");
	rc = dup_name(d, it, "name", &p->name);
	if (!rc)
		rc = get_protocol(d, it, &p->protocol);
	if (!rc)
		rc = get_port(d, it, "port", port_required, &p->port);
	return rc;
}

static int decode_ep_ports(struct dec *d, const cJSON *parent, bool port_required,
                           struct em_k8s_ep_port **out, size_t *n_out)
{
	const cJSON *arr, *it;
	size_t n, i = 0, mark;
	int rc;

	rc = get_array(d, parent, "ports", &arr, &n);
	if (rc || n == 0)
		return rc;
	*out = calloc(n, sizeof(**out));
	if (!*out)
		return oom(d);
	*n_out = n;
	mark = path_field(d, "ports");
	cJSON_ArrayForEach(it, arr)
	{
		size_t m = path_index(d, i);
		rc = decode_ep_port(d, it, port_required, &(*out)[i++]);
		path_pop(d, m);
		if (rc)
			break;
	}
	path_pop(d, mark);
	return rc;
}

static int decode_subset(struct dec *d, const cJSON *it, struct em_k8s_subset *ss)
{
	static const char *const lists[2] = {"addresses", "notReadyAddresses"};
	const cJSON *arr[2], *a;
	size_t n[2], k = 0;
	int rc;

	if (!cJSON_IsObject(it))
		return fail(d, NULL, "expected object");
	for (int l = 0; l < 2; l++) {
		rc = get_array(d, it, lists[l], &arr[l], &n[l]);
		if (rc)
			return rc;
	}
	if (n[0] + n[1]) {
		ss->addrs = calloc(n[0] + n[1], sizeof(*ss->addrs));
		if (!ss->addrs)
			return oom(d);
		ss->n_addrs = n[0] + n[1];
	}
	for (int l = 0; l < 2; l++) {
		size_t mark = path_field(d, lists[l]), i = 0;
		cJSON_ArrayForEach(a, arr[l])
		{
			size_t m = path_index(d, i++);
			rc = decode_ep_address(d, a, l == 0, &ss->addrs[k++]);
			path_pop(d, m);
			if (rc)
				return rc;
		}
		path_pop(d, mark);
	}
	return decode_ep_ports(d, it, true, &ss->ports, &ss->n_ports);
}

static int decode_endpoints(struct dec *d, const cJSON *root, struct em_k8s_endpoints *ep)
{
	const cJSON *arr, *it;
	size_t n, i = 0, mark;
	int rc;

	rc = get_array(d, root, "subsets", &arr, &n);
	if (rc || n == 0)
		return rc;
	ep->subsets = calloc(n, sizeof(*ep->subsets));
	if (!ep->subsets)
		return oom(d);
	ep->n_subsets = n;
	mark = path_field(d, "subsets");
	cJSON_ArrayForEach(it, arr)
	{
		size_t m = path_index(d, i);
		rc = decode_subset(d, it, &ep->subsets[i++]);
		path_pop(d, m);
		if (rc)
			break;
	}
	path_pop(d, mark);
	return rc;
}

/* One slice endpoint: every address of it becomes one em_k8s_ep_addr. */
static int decode_slice_endpoint(struct dec *d, const cJSON *it, int family,
                                 struct em_k8s_endpointslice *sl)
{
	const cJSON *addrs, *a, *cond, *topo;
	struct em_k8s_ep_addr proto = {.ready = true};
	const char *host = NULL;
	size_t n, i = 0, first = sl->n_addrs, mark;
	int rc;

	if (!cJSON_IsObject(it))
		return fail(d, NULL, "expected object");
	rc = get_array(d, it, "addresses", &addrs, &n);
	if (rc)
		return rc;
	if (!addrs)
		return fail(d, "addresses", "missing");

	rc = get_object(d, it, "conditions", false, &cond);
	if (!rc && cond) {
		const cJSON *ready = field(cond, "ready");
		if (ready && !cJSON_IsBool(ready)) {
			size_t m = path_field(d, "conditions");
			rc = fail(d, "ready", "expected boolean");
			path_pop(d, m);
		} else if (ready) {
			proto.ready = cJSON_IsTrue(ready);
		}
	}
	if (!rc)
		rc = get_string(d, it, "nodeName", false, &host);
	/* v1beta1 slices carried the node only in the hostname topology key. */
	if (!rc && !host) {
		rc = get_object(d, it, "topology", false, &topo);
		if (!rc && topo) {
			const cJSON *h = field(topo, "kubernetes.io/hostname");
			if (cJSON_IsString(h))
				host = h->valuestring;
		}
	}
	if (rc)
		return rc;

	mark = path_field(d, "addresses");
	cJSON_ArrayForEach(a, addrs)
	{
		size_t m = path_index(d, i++);
		if (family == 0) {
			/* FQDN slices name hosts, not addresses: type-checked only. */
			if (!cJSON_IsString(a))
				rc = fail(d, NULL, "expected string");
		} else {
			struct em_k8s_ep_addr *ea = &sl->addrs[sl->n_addrs];
			*ea = proto;
			sl->n_addrs++;
			rc = ip_value(d, a, NULL, family, &ea->ip);
			if (!rc)
				rc = check_endpoint_ip(d, NULL, &ea->ip);
			if (!rc && host && !(ea->node_name = strdup(host)))
				rc = oom(d);
		}
		path_pop(d, m);
		if (rc)
			break;
	}
	path_pop(d, mark);
	if (rc || family == 0 || sl->n_addrs == first)
		return rc;
	/* targetRef applies to every address of the endpoint. */
	rc = decode_target_ref(d, it, &sl->addrs[first]);
	for (size_t j = first + 1; !rc && j < sl->n_addrs; j++) {
		if (sl->addrs[first].pod_name &&
		    !(sl->addrs[j].pod_name = strdup(sl->addrs[first].pod_name)))
			rc = oom(d);
		else if (sl->addrs[first].pod_namespace &&
		         !(sl->addrs[j].pod_namespace = strdup(sl->addrs[first].pod_namespace)))
			rc = oom(d);
	}
	return rc;
}

static int decode_slice(struct dec *d, const cJSON *root, struct em_k8s_endpointslice *sl)
{
	const cJSON *meta, *labels, *eps, *it;
	const char *at;
	size_t n, total = 0, i = 0, mark;
	int family, rc;

	/* Service name: label on the slice's metadata (decode_metadata already
	 * checked metadata is an object). */
	meta = field(root, "metadata");
	mark = path_field(d, "metadata");
	rc = get_object(d, meta, "labels", false, &labels);
	if (!rc && labels) {
		size_t m = path_field(d, "labels");
		rc = dup_string(d, labels, "kubernetes.io/service-name", &sl->service_name);
		path_pop(d, m);
	}
	path_pop(d, mark);
	if (rc)
		return rc;

	rc = get_string(d, root, "addressType", true, &at);
	if (rc)
		return rc;
	if (strcmp(at, "IPv4") == 0)
		family = AF_INET;
	else if (strcmp(at, "IPv6") == 0)
		family = AF_INET6;
	else if (strcmp(at, "FQDN") == 0)
		family = 0;
	else
		return fail(d, "addressType", "expected IPv4, IPv6 or FQDN, got \"%.32s\"", at);
	sl->address_type = (uint8_t)family;

	rc = get_array(d, root, "endpoints", &eps, &n);
	if (rc)
		return rc;
	/* Size the flat address array up front so decoding never reallocates. */
	cJSON_ArrayForEach(it, eps)
	{
		const cJSON *a = cJSON_IsObject(it) ? field(it, "addresses") : NULL;
		if (cJSON_IsArray(a))
			total += (size_t)cJSON_GetArraySize(a);
	}
	if (family && total) {
		sl->addrs = calloc(total, sizeof(*sl->addrs));
		if (!sl->addrs)
			return oom(d);
	}
	mark = path_field(d, "endpoints");
	cJSON_ArrayForEach(it, eps)
	{
		size_t m = path_index(d, i++);
		rc = decode_slice_endpoint(d, it, family, sl);
		path_pop(d, m);
		if (rc)
			break;
	}
	path_pop(d, mark);
	if (rc)
		return rc;
	return decode_ep_ports(d, root, false, &sl->ports, &sl->n_ports);
}

static int decode_pod_ips(struct dec *d, const cJSON *status, struct em_k8s_pod *p)
{
	const cJSON *arr, *it, *ip;
	const char *one;
	size_t n, i = 0, mark;
	int rc;

	rc = get_array(d, status, "podIPs", &arr, &n);
	if (rc)
		return rc;
	if (n == 0) {
		rc = get_string(d, status, "podIP", false, &one);
		if (rc || !one || !one[0])
			return rc;
		p->ips = calloc(1, sizeof(*p->ips));
		if (!p->ips)
			return oom(d);
		p->n_ips = 1;
		return ip_value(d, field(status, "podIP"), "podIP", 0, &p->ips[0]);
	}
	p->ips = calloc(n, sizeof(*p->ips));
	if (!p->ips)
		return oom(d);
	p->n_ips = n;
	mark = path_field(d, "podIPs");
	cJSON_ArrayForEach(it, arr)
	{
		size_t m = path_index(d, i);
		if (!cJSON_IsObject(it))
			rc = fail(d, NULL, "expected object");
		else if (!(ip = field(it, "ip")))
			rc = fail(d, "ip", "missing");
		else
			rc = ip_value(d, ip, "ip", 0, &p->ips[i]);
		path_pop(d, m);
		if (rc)
			break;
		i++;
	}
	path_pop(d, mark);
	return rc;
}

static int decode_pod_labels(struct dec *d, const cJSON *root, struct em_k8s_pod *p)
{
	const cJSON *meta = field(root, "metadata"), *labels, *it;
	size_t n, i = 0, mark;
	int rc;

	mark = path_field(d, "metadata");
	rc = get_object(d, meta, "labels", false, &labels);
	if (rc || !labels)
		goto out;
	n = (size_t)cJSON_GetArraySize(labels);
	if (n == 0)
		goto out;
	p->labels = calloc(n, sizeof(*p->labels));
	if (!p->labels) {
		rc = oom(d);
		goto out;
	}
	p->n_labels = n;
	path_field(d, "labels");
	cJSON_ArrayForEach(it, labels)
	{
		if (!cJSON_IsString(it) || !it->valuestring || !it->string) {
			rc = fail(d, it->string ? it->string : "?", "expected string");
			break;
		}
		p->labels[i].key = strdup(it->string);
		p->labels[i].value = strdup(it->valuestring);
		if (!p->labels[i].key || !p->labels[i].value) {
			rc = oom(d);
			break;
		}
		i++;
	}
out:
	path_pop(d, mark);
	return rc;
}

static int decode_pod_ports(struct dec *d, const cJSON *spec, struct em_k8s_pod *p)
{
	const cJSON *ctrs, *c, *ports, *it;
	size_t n, total = 0, ci = 0, mark;
	int rc;

	rc = get_array(d, spec, "containers", &ctrs, &n);
	if (rc || n == 0)
		return rc;
	cJSON_ArrayForEach(c, ctrs)
	{
		const cJSON *a = cJSON_IsObject(c) ? field(c, "ports") : NULL;
		if (cJSON_IsArray(a))
			total += (size_t)cJSON_GetArraySize(a);
	}
	if (total) {
		p->ports = calloc(total, sizeof(*p->ports));
		if (!p->ports)
			return oom(d);
	}
	mark = path_field(d, "containers");
	cJSON_ArrayForEach(c, ctrs)
	{
		size_t m = path_index(d, ci++), pi = 0;
		if (!cJSON_IsObject(c)) {
			rc = fail(d, NULL, "expected object");
			break;
		}
		rc = get_array(d, c, "ports", &ports, &n);
		if (rc)
			break;
		size_t m2 = path_field(d, "ports");
		cJSON_ArrayForEach(it, ports)
		{
			size_t m3 = path_index(d, pi++);
			struct em_k8s_container_port *cp = &p->ports[p->n_ports++];
			if (!cJSON_IsObject(it))
				rc = fail(d, NULL, "expected object");
			if (!rc)
				rc = dup_name(d, it, "name", &cp->name);
			if (!rc)
				rc = get_protocol(d, it, &cp->protocol);
			if (!rc)
				rc = get_port(d, it, "containerPort", true, &cp->port);
			path_pop(d, m3);
			if (rc)
				break;
		}
		path_pop(d, m2);
		path_pop(d, m);
		if (rc)
			break;
	}
	path_pop(d, mark);
	return rc;
}

static int decode_pod(struct dec *d, const cJSON *root, struct em_k8s_pod *p)
{
	const cJSON *spec, *status;
	size_t mark;
	int rc;

	rc = decode_pod_labels(d, root, p);
	if (rc)
		return rc;
	rc = get_object(d, root, "spec", false, &spec);
	if (!rc && spec) {
		mark = path_field(d, "spec");
		rc = dup_string(d, spec, "nodeName", &p->node_name);
		if (!rc)
			rc = decode_pod_ports(d, spec, p);
		path_pop(d, mark);
	}
	if (!rc)
		rc = get_object(d, root, "status", false, &status);
	if (!rc && status) {
		mark = path_field(d, "status");
		rc = dup_string(d, status, "phase", &p->phase);
		if (!rc)
			rc = decode_pod_ips(d, status, p);
		path_pop(d, mark);
	}
	return rc;
}

static int decode_node(struct dec *d, const cJSON *root, struct em_k8s_node *nd)
{
	const cJSON *meta = field(root, "metadata"), *ann, *status, *arr, *it;
	const char *tp;
	size_t n, i = 0, mark;
	int rc;

	mark = path_field(d, "metadata");
	rc = get_object(d, meta, "annotations", false, &ann);
	if (!rc && ann) {
		const cJSON *v = field(ann, EM_NODE_TUNNEL_PORT_ANNOTATION);
		size_t m = path_push(d, ".annotations[\"%s\"]", EM_NODE_TUNNEL_PORT_ANNOTATION);
		/* Annotation values are always strings in the API. */
		if (v && (!cJSON_IsString(v) || !v->valuestring)) {
			rc = fail(d, NULL, "expected string holding a port 1..65535");
		} else if (v) {
			tp = v->valuestring;
			size_t digits = strspn(tp, "0123456789");
			unsigned long port =
			        digits && digits <= 5 && !tp[digits] ? strtoul(tp, NULL, 10) : 0;
			if (port < 1 || port > 65535)
				rc = fail(d, NULL, "expected port 1..65535, got \"%.32s\"", tp);
			else
				nd->tunnel_port = (uint16_t)port;
		}
		path_pop(d, m);
	}
	path_pop(d, mark);
	if (rc)
		return rc;

	rc = get_object(d, root, "status", false, &status);
	if (rc || !status)
		return rc;
	mark = path_field(d, "status");
	rc = get_array(d, status, "addresses", &arr, &n);
	if (rc || n == 0)
		goto out;
	nd->addrs = calloc(n, sizeof(*nd->addrs));
	if (!nd->addrs) {
		rc = oom(d);
		goto out;
	}
	nd->n_addrs = n;
	path_field(d, "addresses");
	cJSON_ArrayForEach(it, arr)
	{
		struct em_k8s_node_addr *na = &nd->addrs[i];
		const char *type = NULL, *addr = NULL;
		size_t m = path_index(d, i++);

		if (!cJSON_IsObject(it))
			rc = fail(d, NULL, "expected object");
		if (!rc)
			rc = get_string(d, it, "type", true, &type);
		if (!rc)
			rc = get_string(d, it, "address", true, &addr);
		if (!rc) {
			na->type = strdup(type);
			na->address = strdup(addr);
			if (!na->type || !na->address)
				rc = oom(d);
		}
		/* Hostname entries are not addresses; leave ip at family 0. */
		if (!rc && parse_ip(addr, 0, &na->ip) &&
		    (strcmp(type, "InternalIP") == 0 || strcmp(type, "ExternalIP") == 0))
			rc = fail(d, "address", "invalid IP address \"%.64s\"", addr);
		path_pop(d, m);
		if (rc)
			break;
	}
out:
	path_pop(d, mark);
	return rc;
}

int em_k8s_decode_json(const struct cJSON *root, int kind, struct em_k8s_object **out, char *err,
                       size_t errlen)
{
	return em_k8s_decode_json_lim(root, kind, NULL, out, err, errlen);
}

int em_k8s_decode_json_lim(const struct cJSON *root, int kind, const struct em_k8s_limits *lim,
                           struct em_k8s_object **out, char *err, size_t errlen)
{
	struct dec d = {.err = err, .errlen = errlen, .lim = lim};
	struct em_k8s_object *o;
	const char *kname;
	int rc;

	*out = NULL;
	if (err && errlen)
		err[0] = 0;
	if (kind < -1 || kind >= EM_KIND__COUNT)
		return fail(&d, "kind", "unsupported kind %d", kind);
	if (!cJSON_IsObject(root))
		return fail(&d, NULL, "expected a JSON object");

	rc = get_string(&d, root, "kind", kind < 0, &kname);
	if (rc)
		return rc;
	/* The store's values may lack TypeMeta; then the caller's kind stands. */
	if (kname) {
		int k = em_kind_from_name(kname);
		if (k < 0)
			return fail(&d, "kind", "unsupported kind \"%.32s\"", kname);
		if (kind >= 0 && k != kind)
			return fail(&d, "kind", "expected %s, got \"%.32s\"", kind_names[kind],
			            kname);
		kind = k;
	}

	o = calloc(1, sizeof(*o));
	if (!o)
		return oom(&d);
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
	default:
		rc = fail(&d, "kind", "unsupported kind");
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
	const char *end = NULL;
	cJSON *root;
	char *copy;
	int rc;

	*out = NULL;
	if (!json) {
		if (err && errlen)
			snprintf(err, errlen, "no input");
		return -EINVAL;
	}
	/* A terminated private copy: cJSON must never read past <len> even
	 * when the caller's buffer is not terminated. */
	copy = malloc(len + 1);
	if (!copy) {
		if (err && errlen)
			snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	memcpy(copy, json, len);
	copy[len] = 0;
	root = cJSON_ParseWithLengthOpts(copy, len, &end, false);
	if (!root) {
		size_t off = end && end >= copy && end <= copy + len ? (size_t)(end - copy) : 0;
		if (err && errlen)
			snprintf(err, errlen, "malformed JSON at offset %zu", off);
		rc = -EINVAL;
		goto out;
	}
	if (end) {
		while (end < copy + len &&
		       (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
			end++;
		if (end < copy + len) {
			if (err && errlen)
				snprintf(err, errlen, "malformed JSON at offset %zu: trailing data",
				         (size_t)(end - copy));
			rc = -EINVAL;
			goto out;
		}
	}
	rc = em_k8s_decode_json(root, kind, out, err, errlen);
out:
	cJSON_Delete(root);
	free(copy);
	return rc;
}

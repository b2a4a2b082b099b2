/* Configuration file parsing and validation. Every key is documented with its
 * type and default in conf/README.md; keep the two in step. */
#include "store/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "proto/frame.h"
#include "proto/log.h"
#include "store/file.h"
#include "store/json.h"
#include "store/kube_wire.h"

#define EM_CONFIG_MAX_BYTES        (1024 * 1024)
#define EM_CONFIG_MAX_WORKERS      256
#define EM_CONFIG_MAX_ITEMS        256 /* per array */
#define EM_STRINGIFY_(x)           #x
#define EM_STRINGIFY(x)            EM_STRINGIFY_(x)
#define EM_CONFIG_TUNNEL_DEFAULT   "0.0.0.0:" EM_STRINGIFY(EM_CONFIG_TUNNEL_PORT)
#define EM_CONFIG_CIDR_DEFAULT     "10.96.0.0/12"
#define EM_CONFIG_DATA_DIR_DEFAULT "/var/lib/edgemesh"
#define EM_CONFIG_SOCKET_NAME      "/edgemesh.sock"
/* The key shipped in conf/edge.json and conf/cloud.json: known to everyone,
 * so it authenticates no one. */
#define EM_CONFIG_PLACEHOLDER_KEY "change-me-to-a-long-random-cluster-key"
#define EM_CONFIG_KEY_MIN         32
#define EM_CONFIG_KEY_HOWTO       "make one with `openssl rand -hex 32`"
/* Shortest service range prefixes: anything wider captures traffic that is
 * not the cluster's (a /0 takes every connection of the host, SSH included). */
#define EM_CONFIG_CIDR4_MIN_PREFIX 8
#define EM_CONFIG_CIDR6_MIN_PREFIX 32
/* data_dir must leave room for the files the daemon keeps in it. */
#define EM_CONFIG_DATA_DIR_MAX 4000
_Static_assert(EM_CONFIG_DATA_DIR_MAX + 64 <= PATH_MAX, "data_dir limit exceeds PATH_MAX");

/* SO_MARK of edgemesh's own outgoing sockets; clear of the bits kube-proxy
 * (0x4000, 0x8000) and Calico (upper 16) use. */
#define EM_CONFIG_MARK_DEFAULT 0x1e4du

struct pctx {
	struct em_json j; /* first: array callbacks get it back (pctx_of) */
	struct em_config *cfg;
};

static struct pctx *pctx_of(struct em_json *j)
{
	return (struct pctx *)j;
}

#define FAIL_EXPECTED(c, ...) em_json_fail(&(c)->j, NULL, "expected " __VA_ARGS__)

/* ---- name syntax ---- */

static bool dns_char(char ch, bool dots)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
	       (dots && ch == '.');
}

/* A DNS-1123 label (<dots> false) or subdomain (<dots> true) of 1..<max>
 * bytes in s[0..n): what Kubernetes accepts for namespace and object names. */
static bool dns_name(const char *s, size_t n, size_t max, bool dots)
{
	if (n == 0 || n > max || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!dns_char(s[i], dots))
			return false;
	return true;
}

/* An absolute path without "..": fastpath.cgroup names a directory the
 * daemon attaches to, never one reached by a detour. */
static bool abs_path_ok(const char *s)
{
	size_t n = strlen(s);

	return s[0] == '/' && !strstr(s, "/../") && !(n >= 3 && strcmp(s + n - 3, "/..") == 0);
}

static bool node_name_ok(const char *s)
{
	return dns_name(s, strlen(s), 253, true);
}

/* "host:port" with a DNS name, IPv4 address or bracketed IPv6 address, or
 * "" (none). */
static bool host_port_or_empty(const char *s)
{
	struct em_addr a;
	const char *colon = strrchr(s, ':');
	char *end;
	unsigned long port;

	if (!s[0])
		return true;
	if (s[0] == '[')
		return em_addr_parse(s, true, &a) == 0;
	if (!colon || colon == s || colon[1] < '0' || colon[1] > '9')
		return false;
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (errno || *end || port == 0 || port > 65535)
		return false;
	for (const char *p = s; p < colon; p++)
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.')
			return false;
	return true;
}

/* ---- keys: a table per JSON object, one row per key ---- */

enum key_type {
	K_INT,    /* integer lo..hi stored in a member of <size> 1, 2, 4 or 8 bytes */
	K_BOOL,   /* true or false */
	K_ENUM,   /* one of <names>, stored as int: its index */
	K_STR,    /* string of lo..hi bytes accepted by <check> (when set) */
	K_ADDR,   /* "ip:port" into a struct em_addr */
	K_LIST,   /* array of at most EM_CONFIG_MAX_ITEMS, each read by <item> */
	K_OBJECT, /* object of keys <sub> */
	K_FN,     /* read by <fn>: keys no row type describes */
};

struct key;
typedef int (*key_fn)(struct pctx *c, const struct key *k, const cJSON *v, void *base);
typedef int (*item_fn)(struct pctx *c, const cJSON *v, void *out);

struct key {
	const char *name;
	enum key_type type;
	bool required;
	size_t off, size;    /* of the member in the struct the table describes */
	long long lo, hi;    /* K_INT: bounds; K_STR: length in bytes */
	long long def;       /* K_INT, K_BOOL, K_ENUM: value when the key is absent */
	const char *def_str; /* K_STR: value when the key is absent, NULL: "" */
	const char *expect;  /* all but K_INT, K_BOOL and K_OBJECT: "expected <expect>" */
	bool (*check)(const char *s);
	const char *const *names; /* K_ENUM */
	size_t n;                 /* K_ENUM: names; K_OBJECT: rows of <sub> */
	const struct key *sub;
	size_t off_n, item_size; /* K_LIST: the member counting items; one item's size */
	item_fn item;
	key_fn fn;
};

#define AT(type, m) .off = offsetof(type, m), .size = sizeof(((type *)0)->m)
#define CFG(m)      AT(struct em_config, m)
#define LIS(m)      AT(struct em_listener_conf, m)
#define NAMES(...)                                                                                 \
	.names = (const char *const[]){__VA_ARGS__},                                               \
	.n = EM_ARRAY_SIZE(((const char *[]){__VA_ARGS__}))
#define ROWS(a) .sub = a, .n = EM_ARRAY_SIZE(a)
#define INT(k, at, min, max, def_)                                                                 \
	{                                                                                          \
		.name = k, .type = K_INT, at, .lo = (min), .hi = (max), .def = (def_)              \
	}
#define STR(k, at, min, max, what)                                                                 \
	{                                                                                          \
		.name = k, .type = K_STR, at, .lo = (min), .hi = (max), .expect = what             \
	}
#define LIST(k, at, count, item_type, fn_, what)                                                   \
	{                                                                                          \
		.name = k, .type = K_LIST, at, .off_n = offsetof(struct em_config, count),         \
		.item_size = sizeof(item_type), .item = fn_, .expect = what                        \
	}

static int read_key(struct pctx *c, const struct key *k, const cJSON *v, void *base);

/* Walks the members of object <obj> in file order so that the first error
 * reported is the first one in the file; unknown and repeated keys are
 * errors (cJSON keeps duplicates, a reader would silently take the first).
 * A table has at most 64 <keys>, the width of <seen>. */
static int walk_object(struct pctx *c, const cJSON *obj, const struct key *keys, size_t n,
                       void *base)
{
	uint64_t seen = 0;
	const cJSON *m;
	int rc;

	if (!cJSON_IsObject(obj))
		return FAIL_EXPECTED(c, "object");
	cJSON_ArrayForEach(m, obj)
	{
		size_t i, mark = em_json_push_key(&c->j, m->string);
		for (i = 0; i < n; i++)
			if (m->string && strcmp(m->string, keys[i].name) == 0)
				break;
		if (i == n)
			return em_json_fail(&c->j, NULL, "unknown key");
		if (seen & (1ULL << i))
			return em_json_fail(&c->j, NULL, "duplicate key");
		seen |= 1ULL << i;
		if ((rc = read_key(c, &keys[i], m, base)) != 0)
			return rc;
		em_json_pop(&c->j, mark);
	}
	for (size_t i = 0; i < n; i++) {
		const struct key *k = &keys[i];
		if (!k->required || (seen & (1ULL << i)))
			continue;
		if (k->type == K_INT)
			return em_json_fail(&c->j, k->name,
			                    "expected integer %lld..%lld (required key is missing)",
			                    k->lo, k->hi);
		return em_json_fail(&c->j, k->name, "expected %s (required key is missing)",
		                    k->expect);
	}
	return 0;
}

/* Integer members are read and written by size (1, 2, 4 or 8 bytes). */
static uint64_t load_uint(const void *p, size_t size)
{
	switch (size) {
	case 1:
		return *(const uint8_t *)p;
	case 2:
		return *(const uint16_t *)p;
	case 4:
		return *(const uint32_t *)p;
	default:
		return *(const uint64_t *)p;
	}
}

static void store_uint(void *p, size_t size, uint64_t v)
{
	if (size == 1)
		*(uint8_t *)p = (uint8_t)v;
	else if (size == 2)
		*(uint16_t *)p = (uint16_t)v;
	else if (size == 4)
		*(uint32_t *)p = (uint32_t)v;
	else
		*(uint64_t *)p = v;
}

static int read_int(struct pctx *c, const struct key *k, const cJSON *v, void *p)
{
	long long n;
	int rc = em_json_int(&c->j, v, NULL, true, k->lo, k->hi, &n);

	if (!rc)
		store_uint(p, k->size, (uint64_t)n);
	return rc;
}

static int read_str(struct pctx *c, const struct key *k, const cJSON *v, char *p)
{
	const char *s = cJSON_IsString(v) ? v->valuestring : NULL;
	size_t n = s ? strlen(s) : 0;

	if (!s || n < (size_t)k->lo || n > (size_t)k->hi || n >= k->size ||
	    (k->check && !k->check(s)))
		return FAIL_EXPECTED(c, "%s", k->expect);
	memcpy(p, s, n + 1);
	return 0;
}

struct list {
	const struct key *k;
	char *items;
};

static int list_item(struct em_json *j, const cJSON *it, size_t i, void *arg)
{
	struct list *l = arg;
	return l->k->item(pctx_of(j), it, l->items + i * l->k->item_size);
}

/* The list replaces the one in <base> (a default) when every item reads. */
static int read_list(struct pctx *c, const struct key *k, const cJSON *v, void *base)
{
	struct list l = {k, NULL};
	char *slot = (char *)base + k->off; /* a pointer to the item type */
	void *old;
	size_t n;
	int rc = em_json_array(&c->j, v, NULL, EM_CONFIG_MAX_ITEMS, k->expect, &n);

	if (rc)
		return rc;
	if (n && !(l.items = calloc(n, k->item_size)))
		return em_json_oom(&c->j);
	if ((rc = em_json_each(&c->j, v, NULL, list_item, &l))) {
		free(l.items);
		return rc;
	}
	/* Through memcpy: the member is a pointer of another type. */
	memcpy(&old, slot, sizeof(old));
	free(old);
	memcpy(slot, &l.items, sizeof(l.items));
	*(size_t *)((char *)base + k->off_n) = n;
	return 0;
}

static int read_key(struct pctx *c, const struct key *k, const cJSON *v, void *base)
{
	char *p = (char *)base + k->off;
	int i;

	switch (k->type) {
	case K_INT:
		return read_int(c, k, v, p);
	case K_BOOL:
		return em_json_bool(&c->j, v, NULL, (bool *)p);
	case K_ENUM:
		if ((i = em_json_pick(cJSON_IsString(v) ? v->valuestring : NULL, k->names, k->n)) <
		    0)
			return FAIL_EXPECTED(c, "%s", k->expect);
		*(int *)p = i;
		return 0;
	case K_STR:
		return read_str(c, k, v, p);
	case K_ADDR:
		if (!cJSON_IsString(v) || !v->valuestring ||
		    em_addr_parse(v->valuestring, true, (struct em_addr *)p))
			return FAIL_EXPECTED(c, "%s", k->expect);
		return 0;
	case K_LIST:
		return read_list(c, k, v, base);
	case K_OBJECT:
		return walk_object(c, v, k->sub, k->n, base);
	case K_FN:
		return k->fn(c, k, v, base);
	}
	return em_json_fail(&c->j, NULL, "internal error: no reader for this key");
}

/* ---- keys no row type describes ---- */

static int item_cidr(struct pctx *c, const cJSON *v, void *out)
{
	if (!cJSON_IsString(v) || !v->valuestring || em_cidr_parse(v->valuestring, out))
		return FAIL_EXPECTED(c, "CIDR string like \"10.96.0.0/12\" or \"fd00::/108\"");
	return 0;
}

static int item_port(struct pctx *c, const cJSON *v, void *out)
{
	return em_json_port(&c->j, v, NULL, true, out);
}

static int lis_service(struct pctx *c, const struct key *k, const cJSON *v, void *base)
{
	struct em_listener_conf *l = base;
	const char *s = cJSON_IsString(v) ? v->valuestring : NULL;
	const char *slash = s ? strchr(s, '/') : NULL;
	size_t ns_len, name_len;

	if (!slash)
		return FAIL_EXPECTED(c, "%s", k->expect);
	ns_len = (size_t)(slash - s);
	name_len = strlen(slash + 1);
	if (!dns_name(s, ns_len, 63, false) || !dns_name(slash + 1, name_len, 253, true))
		return FAIL_EXPECTED(c, "%s", k->expect);
	memcpy(l->service_ns, s, ns_len);
	l->service_ns[ns_len] = 0;
	memcpy(l->service_name, slash + 1, name_len + 1);
	return 0;
}

#define ADDR_EXPECT "\"ip:port\" (IPv4) or \"[ip]:port\" (IPv6)"

static const struct key listener_keys[] = {
        {.name = "listen", .type = K_ADDR, .required = true, LIS(listen), .expect = ADDR_EXPECT},
        {.name = "service",
         .type = K_FN,
         .required = true,
         .expect = "\"namespace/name\"",
         .fn = lis_service},
        {.name = "port", .type = K_INT, .required = true, LIS(port), .lo = 1, .hi = 65535},
};

static int item_listener(struct pctx *c, const cJSON *v, void *out)
{
	return walk_object(c, v, listener_keys, EM_ARRAY_SIZE(listener_keys), out);
}

/* "" turns tunnels off: the node neither accepts nor needs a key. */
static int tunnel_listen(struct pctx *c, const struct key *k, const cJSON *v, void *base)
{
	struct em_config *cfg = base;

	if (cJSON_IsString(v) && v->valuestring && !v->valuestring[0]) {
		memset(&cfg->tunnel.listen, 0, sizeof(cfg->tunnel.listen));
		return 0;
	}
	if (!cJSON_IsString(v) || !v->valuestring ||
	    em_addr_parse(v->valuestring, true, &cfg->tunnel.listen))
		return FAIL_EXPECTED(c, "%s", k->expect);
	return 0;
}

static int router_listen(struct pctx *c, const struct key *k, const cJSON *v, void *base)
{
	struct em_config *cfg = base;

	cfg->router.listen_set = true;
	if (cJSON_IsString(v) && v->valuestring && !v->valuestring[0]) {
		memset(&cfg->router.listen, 0, sizeof(cfg->router.listen));
		return 0;
	}
	if (!cJSON_IsString(v) || !v->valuestring ||
	    em_addr_parse(v->valuestring, true, &cfg->router.listen))
		return FAIL_EXPECTED(c, "%s", k->expect);
	return 0;
}

static int admin_listen(struct pctx *c, const struct key *k, const cJSON *v, void *base)
{
	struct em_config *cfg = base;

	cfg->admin.listen_set = true;
	if (cJSON_IsString(v) && v->valuestring && !v->valuestring[0]) {
		memset(&cfg->admin.listen, 0, sizeof(cfg->admin.listen));
		return 0;
	}
	if (!cJSON_IsString(v) || !v->valuestring ||
	    em_addr_parse(v->valuestring, true, &cfg->admin.listen))
		return FAIL_EXPECTED(c, "%s", k->expect);
	return 0;
}

#define MS_MAX_10MIN 600000LL
#define MS_MAX_DAY   86400000LL
#define CIDR_ITEMS   "CIDR strings"

static const struct key capture_keys[] = {
        {.name = "enabled", .type = K_BOOL, CFG(capture.enabled)},
        INT("port", CFG(capture.port), 1, 65535, 15001),
        LIST("service_cidrs", CFG(capture.service_cidrs), capture.n_service_cidrs, struct em_cidr,
             item_cidr, CIDR_ITEMS),
        LIST("exclude_cidrs", CFG(capture.exclude_cidrs), capture.n_exclude_cidrs, struct em_cidr,
             item_cidr, CIDR_ITEMS),
        LIST("exclude_ports", CFG(capture.exclude_ports), capture.n_exclude_ports, uint16_t,
             item_port, "ports"),
        INT("mark", CFG(capture.mark), 1, UINT32_MAX, EM_CONFIG_MARK_DEFAULT),
};

#define PEM_PATH "path of a PEM file, at most 4000 bytes, or \"\" (none)"
static const struct key tunnel_tls_keys[] = {
        STR("ca_file", CFG(tunnel.tls.ca_file), 0, EM_CONFIG_DATA_DIR_MAX, PEM_PATH),
        STR("cert_file", CFG(tunnel.tls.cert_file), 0, EM_CONFIG_DATA_DIR_MAX, PEM_PATH),
        STR("key_file", CFG(tunnel.tls.key_file), 0, EM_CONFIG_DATA_DIR_MAX, PEM_PATH),
        STR("ca_dir", CFG(tunnel.tls.ca_dir), 0, EM_CONFIG_DATA_DIR_MAX,
            "directory of a cluster CA (meshctl ca init), at most 4000 bytes, or \"\" (none)"),
        INT("cert_days", CFG(tunnel.tls.cert_days), 1, 36500, 365),
};

/* Window bounds are those of the wire format (tunnel/PROTOCOL.md, 5). */
static const struct key tunnel_keys[] = {
        {.name = "listen",
         .type = K_FN,
         .expect = "\"ip:port\", \"[ip]:port\" or \"\" (off)",
         .fn = tunnel_listen},
        STR("cluster_key", CFG(tunnel.cluster_key), 0, 255, "string of at most 255 bytes"),
        INT("max_streams", CFG(tunnel.max_streams), 1, 65536, 1024),
        INT("stream_window", CFG(tunnel.stream_window), EM_FRAME_MIN_WINDOW, EM_FRAME_MAX_WINDOW,
            256 * 1024),
        INT("stream_window_max", CFG(tunnel.stream_window_max), EM_FRAME_MIN_WINDOW,
            EM_FRAME_MAX_WINDOW, 16 * 1024 * 1024),
        INT("window_cap", CFG(tunnel.window_cap), EM_FRAME_MIN_WINDOW, 1LL << 40,
            64LL * 1024 * 1024),
        INT("keepalive_ms", CFG(tunnel.keepalive_ms), 100, MS_MAX_10MIN, 10000),
        INT("dead_after_ms", CFG(tunnel.dead_after_ms), 200, MS_MAX_10MIN, 30000),
        INT("reconnect_min_ms", CFG(tunnel.reconnect_min_ms), 10, MS_MAX_10MIN, 200),
        INT("reconnect_max_ms", CFG(tunnel.reconnect_max_ms), 10, MS_MAX_10MIN, 30000),
        INT("max_handshakes", CFG(tunnel.max_handshakes), 1, 1000000, 1024),
        INT("max_handshakes_per_source", CFG(tunnel.max_handshakes_per_source), 1, 1000000, 64),
        INT("handshake_ms", CFG(tunnel.handshake_ms), 100, MS_MAX_10MIN, 10000),
        {.name = "encryption",
         .type = K_ENUM,
         CFG(tunnel.encryption),
         .def = EM_TUNNEL_TLS,
         NAMES("none", "tls"),
         .expect = "\"none\" or \"tls\""},
        {.name = "tls", .type = K_OBJECT, ROWS(tunnel_tls_keys)},
};

static const struct key cloud_keys[] = {
        {.name = "address",
         .type = K_STR,
         CFG(cloud.address),
         .lo = 0,
         .hi = 255,
         .expect = "\"host:port\" or \"\"",
         .check = host_port_or_empty},
};

static const struct key router_tls_keys[] = {
        STR("cert_file", CFG(router.tls.cert_file), 0, EM_CONFIG_DATA_DIR_MAX,
            "path of a PEM certificate file, at most 4000 bytes, or \"\" (plain HTTP)"),
        STR("key_file", CFG(router.tls.key_file), 0, EM_CONFIG_DATA_DIR_MAX,
            "path of a PEM private key file, at most 4000 bytes, or \"\" (plain HTTP)"),
        INT("handshake_ms", CFG(router.tls.handshake_ms), 100, MS_MAX_10MIN, 10000),
        INT("max_connections", CFG(router.tls.max_connections), 1, 1000000, 1024),
};

static const struct key router_keys[] = {
        {.name = "listen",
         .type = K_FN,
         .expect = "\"ip:port\", \"[ip]:port\" or \"\" (off)",
         .fn = router_listen},
        INT("timeout_ms", CFG(router.timeout_ms), 1, MS_MAX_10MIN, 30000),
        {.name = "tls", .type = K_OBJECT, ROWS(router_tls_keys)},
};

static const struct key admin_keys[] = {
        {.name = "listen",
         .type = K_FN,
         .expect = "\"ip:port\", \"[ip]:port\" or \"\" (off)",
         .fn = admin_listen},
};

/* "" (off), "in-cluster", or a URL the watcher can use. */
static bool kube_server_ok(const char *s)
{
	struct em_kube_url u;
	return !s[0] || strcmp(s, EM_KUBE_IN_CLUSTER) == 0 || em_kube_url_parse(s, &u) == 0;
}

static const struct key kube_keys[] = {
        {.name = "server",
         .type = K_STR,
         CFG(controller.kubernetes.server),
         .lo = 0,
         .hi = 255,
         .expect = "\"https://host[:port]\", \"http://host[:port]\", \"in-cluster\" or \"\" "
                   "(off), at most 255 bytes",
         .check = kube_server_ok},
        STR("token_file", CFG(controller.kubernetes.token_file), 0, EM_CONFIG_DATA_DIR_MAX,
            "path of a file, at most 4000 bytes, or \"\" (none)"),
        STR("ca_file", CFG(controller.kubernetes.ca_file), 0, EM_CONFIG_DATA_DIR_MAX,
            "path of a file, at most 4000 bytes, or \"\" (none)"),
};

static const struct key controller_keys[] = {
        STR("manifests_dir", CFG(controller.manifests_dir), 0, EM_CONFIG_DATA_DIR_MAX,
            "path of a directory, at most 4000 bytes, or \"\" (none)"),
        {.name = "kubernetes", .type = K_OBJECT, ROWS(kube_keys)},
};

#define SOCKBUF_MAX (256LL << 20)

static const struct key socket_keys[] = {
        INT("client_sndbuf", CFG(sockets.client_sndbuf), 0, SOCKBUF_MAX, 0),
        INT("client_rcvbuf", CFG(sockets.client_rcvbuf), 0, SOCKBUF_MAX, 0),
        INT("upstream_sndbuf", CFG(sockets.upstream_sndbuf), 0, SOCKBUF_MAX, 0),
        INT("upstream_rcvbuf", CFG(sockets.upstream_rcvbuf), 0, SOCKBUF_MAX, 0),
};

static const struct key fastpath_keys[] = {
        {.name = "mode",
         .type = K_ENUM,
         CFG(fastpath.mode),
         NAMES("auto", "off"),
         .expect = "\"auto\" or \"off\""},
        {.name = "cgroup",
         .type = K_STR,
         CFG(fastpath.cgroup),
         .lo = 1,
         .hi = EM_CONFIG_DATA_DIR_MAX,
         .def_str = EM_CONFIG_FASTPATH_CGROUP_DEFAULT,
         .check = abs_path_ok,
         .expect = "absolute path of a cgroup v2 directory, at most 4000 bytes"},
};

static const struct key timeout_keys[] = {
        INT("connect_ms", CFG(timeouts.connect_ms), 1, MS_MAX_10MIN, 5000),
        INT("idle_ms", CFG(timeouts.idle_ms), 1, MS_MAX_DAY, 300000),
        INT("request_head_ms", CFG(timeouts.request_head_ms), 1, MS_MAX_10MIN, 10000),
        INT("sniff_ms", CFG(timeouts.sniff_ms), 1, 10000, 100),
        INT("shutdown_ms", CFG(timeouts.shutdown_ms), 0, MS_MAX_10MIN, 5000),
};

/* Enums are read as int: the index of the name, in the enum's order. */
_Static_assert(sizeof(enum em_role) == sizeof(int) && sizeof(enum em_balancer) == sizeof(int) &&
                       sizeof(enum em_tunnel_encryption) == sizeof(int) &&
                       sizeof(enum em_io_backend) == sizeof(int) &&
                       sizeof(enum em_fastpath_mode) == sizeof(int),
               "enum keys are stored as int");

static const struct key top_keys[] = {
        {.name = "role",
         .type = K_ENUM,
         .required = true,
         CFG(role),
         NAMES("edge", "cloud"),
         .expect = "\"edge\" or \"cloud\""},
        {.name = "node_name",
         .type = K_STR,
         .required = true,
         CFG(node_name),
         .lo = 1,
         .hi = 253,
         .check = node_name_ok,
         .expect = "DNS-1123 name (lower-case letters, digits, '-', '.'), 1..253 bytes"},
        {.name = "data_dir",
         .type = K_STR,
         CFG(data_dir),
         .lo = 1,
         .hi = EM_CONFIG_DATA_DIR_MAX,
         .def_str = EM_CONFIG_DATA_DIR_DEFAULT,
         .expect = "non-empty path of at most 4000 bytes"},
        STR("api_socket", CFG(api_socket), 1, 107,
            "non-empty path of at most 107 bytes (sun_path)"),
        INT("workers", CFG(workers), 0, EM_CONFIG_MAX_WORKERS, 0),
        /* Same order as enum em_log_level; em_log_level_parse agrees. */
        {.name = "log_level",
         .type = K_ENUM,
         CFG(log_level),
         .def = EM_LOG_INFO,
         NAMES("error", "warn", "info", "debug"),
         .expect = "\"error\", \"warn\", \"info\" or \"debug\""},
        {.name = "balancer",
         .type = K_ENUM,
         CFG(balancer),
         NAMES("round_robin", "random", "least_requests"),
         .expect = "\"round_robin\", \"random\" or \"least_requests\""},
        {.name = "io_backend",
         .type = K_ENUM,
         CFG(io_backend),
         NAMES("auto", "io_uring", "epoll"),
         .expect = "\"auto\", \"io_uring\" or \"epoll\""},
        {.name = "capture", .type = K_OBJECT, ROWS(capture_keys)},
        LIST("listeners", CFG(listeners), n_listeners, struct em_listener_conf, item_listener,
             "listener objects"),
        {.name = "tunnel", .type = K_OBJECT, ROWS(tunnel_keys)},
        {.name = "cloud", .type = K_OBJECT, ROWS(cloud_keys)},
        {.name = "router", .type = K_OBJECT, ROWS(router_keys)},
        {.name = "admin", .type = K_OBJECT, ROWS(admin_keys)},
        {.name = "fastpath", .type = K_OBJECT, ROWS(fastpath_keys)},
        {.name = "controller", .type = K_OBJECT, ROWS(controller_keys)},
        {.name = "sockets", .type = K_OBJECT, ROWS(socket_keys)},
        {.name = "timeouts", .type = K_OBJECT, ROWS(timeout_keys)},
};

/* Writes the default of every key of <keys> into <base>. */
static void set_row_defaults(const struct key *keys, size_t n, void *base)
{
	for (const struct key *k = keys; k < keys + n; k++) {
		char *p = (char *)base + k->off;
		if (k->type == K_INT)
			store_uint(p, k->size, (uint64_t)k->def);
		else if (k->type == K_BOOL)
			*(bool *)p = k->def;
		else if (k->type == K_ENUM)
			*(int *)p = (int)k->def;
		else if (k->type == K_STR && k->def_str)
			snprintf(p, k->size, "%s", k->def_str);
		else if (k->type == K_OBJECT)
			set_row_defaults(k->sub, k->n, base);
	}
}

static int set_defaults(struct em_config *cfg)
{
	set_row_defaults(top_keys, EM_ARRAY_SIZE(top_keys), cfg);
	em_addr_parse(EM_CONFIG_TUNNEL_DEFAULT, true, &cfg->tunnel.listen);
	/* Replaced when the file sets capture.service_cidrs. */
	if (!(cfg->capture.service_cidrs = calloc(1, sizeof(struct em_cidr))))
		return -ENOMEM;
	em_cidr_parse(EM_CONFIG_CIDR_DEFAULT, cfg->capture.service_cidrs);
	cfg->capture.n_service_cidrs = 1;
	return 0;
}

/* Reports <fmt> at key path <key>, for rules that tie keys together. */
static int fail_at(struct pctx *c, const char *key, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static int fail_at(struct pctx *c, const char *key, const char *fmt, ...)
{
	char what[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	em_json_pop(&c->j, 0);
	em_json_push(&c->j, "%s", key);
	return em_json_fail(&c->j, NULL, "%s", what);
}

/* Integer keys bounded below by another: <key> >= <min> (> when <strict>).
 * Keys are named as the members that hold them. */
static const struct order {
	const char *key, *min;
	size_t off, size, off_min, size_min;
	bool strict;
} orders[] = {
#define ORDER(k, m, gt)                                                                            \
	{                                                                                          \
#k, #m, offsetof(struct em_config, k), sizeof(((struct em_config *)0)->k),         \
		        offsetof(struct em_config, m), sizeof(((struct em_config *)0)->m), gt      \
	}
        ORDER(tunnel.stream_window_max, tunnel.stream_window, false),
        ORDER(tunnel.window_cap, tunnel.stream_window_max, false),
        ORDER(tunnel.dead_after_ms, tunnel.keepalive_ms, true),
        ORDER(tunnel.reconnect_max_ms, tunnel.reconnect_min_ms, false),
#undef ORDER
};

/* Rules that tie keys together, and values derived from others. */
static int finish(struct pctx *c)
{
	struct em_config *cfg = c->cfg;

	if (cfg->controller.manifests_dir[0] && cfg->role != EM_ROLE_CLOUD)
		return fail_at(c, "controller.manifests_dir",
		               "expected \"\" on an edge: only role \"cloud\" reads manifests");
	if (cfg->controller.kubernetes.server[0] && cfg->role != EM_ROLE_CLOUD)
		return fail_at(c, "controller.kubernetes.server",
		               "expected \"\" on an edge: only role \"cloud\" watches the "
		               "Kubernetes API");
	if (cfg->capture.enabled && cfg->capture.n_service_cidrs == 0)
		return fail_at(c, "capture.service_cidrs",
		               "expected at least one CIDR when capture.enabled is true");
	/* The ranges matter only while capture is on: off, they capture nothing. */
	for (size_t i = 0; cfg->capture.enabled && i < cfg->capture.n_service_cidrs; i++) {
		const struct em_cidr *r = &cfg->capture.service_cidrs[i];
		unsigned min = r->addr.family == AF_INET ? EM_CONFIG_CIDR4_MIN_PREFIX
		                                         : EM_CONFIG_CIDR6_MIN_PREFIX;
		char ip[EM_ADDR_STRLEN], key[64];
		if (r->prefix >= min)
			continue;
		snprintf(key, sizeof(key), "capture.service_cidrs[%zu]", i);
		return fail_at(c, key,
		               "%s/%u would capture far more than the cluster's services; "
		               "expected an %s prefix of /%u or longer, the cluster's service "
		               "range (e.g. \"10.96.0.0/12\")",
		               em_addr_format(&r->addr, false, ip, sizeof(ip)), r->prefix,
		               r->addr.family == AF_INET ? "IPv4" : "IPv6", min);
	}

	/* Set, api_socket is not empty. */
	if (!cfg->api_socket[0]) {
		size_t n = strlen(cfg->data_dir) + strlen(EM_CONFIG_SOCKET_NAME);
		if (n >= sizeof(cfg->api_socket))
			return fail_at(c, "api_socket",
			               "expected path of at most 107 bytes (sun_path): the "
			               "default <data_dir>%s is too long, set api_socket",
			               EM_CONFIG_SOCKET_NAME);
		/* Length checked above. */
		memcpy(cfg->api_socket, cfg->data_dir, strlen(cfg->data_dir));
		memcpy(cfg->api_socket + strlen(cfg->data_dir), EM_CONFIG_SOCKET_NAME,
		       sizeof(EM_CONFIG_SOCKET_NAME));
	}

	for (size_t i = 0; i < cfg->n_listeners; i++)
		for (size_t j = 0; j < i; j++)
			if (em_addr_eq(&cfg->listeners[i].listen, &cfg->listeners[j].listen)) {
				char key[64];
				snprintf(key, sizeof(key), "listeners[%zu].listen", i);
				return fail_at(c, key,
				               "expected an address not used by listeners[%zu]", j);
			}

	if (cfg->role != EM_ROLE_CLOUD && cfg->router.listen.family)
		return fail_at(c, "router.listen",
		               "expected \"\" on an edge: only role \"cloud\" runs the Router");
	if (cfg->role == EM_ROLE_CLOUD && !cfg->router.listen_set)
		em_addr_parse(EM_CONFIG_ROUTER_DEFAULT, true, &cfg->router.listen);
	if (cfg->router.listen.family) {
		for (size_t i = 0; i < cfg->n_listeners; i++)
			if (em_addr_eq(&cfg->router.listen, &cfg->listeners[i].listen))
				return fail_at(c, "router.listen",
				               "expected an address not used by listeners[%zu]", i);
		if (em_addr_eq(&cfg->router.listen, &cfg->tunnel.listen))
			return fail_at(c, "router.listen",
			               "expected an address other than tunnel.listen's");
	}
	if (!cfg->admin.listen_set)
		em_addr_parse(EM_CONFIG_ADMIN_DEFAULT, true, &cfg->admin.listen);
	if (cfg->admin.listen.family) {
		for (size_t i = 0; i < cfg->n_listeners; i++)
			if (em_addr_eq(&cfg->admin.listen, &cfg->listeners[i].listen))
				return fail_at(c, "admin.listen",
				               "expected an address not used by listeners[%zu]", i);
		if (em_addr_eq(&cfg->admin.listen, &cfg->tunnel.listen))
			return fail_at(c, "admin.listen",
			               "expected an address other than tunnel.listen's");
		if (em_addr_eq(&cfg->admin.listen, &cfg->router.listen))
			return fail_at(c, "admin.listen",
			               "expected an address other than router.listen's");
	}
	/* TLS on the Router: both files or neither, and a Router to serve. */
	const char *cert = cfg->router.tls.cert_file, *key = cfg->router.tls.key_file;
	if (cfg->role != EM_ROLE_CLOUD && (cert[0] || key[0]))
		return fail_at(c, cert[0] ? "router.tls.cert_file" : "router.tls.key_file",
		               "expected \"\" on an edge: only role \"cloud\" runs the Router");
	if (cert[0] && !key[0])
		return fail_at(c, "router.tls.key_file",
		               "expected the path of the certificate's private key: "
		               "router.tls.cert_file is set (both or neither)");
	if (key[0] && !cert[0])
		return fail_at(c, "router.tls.cert_file",
		               "expected the path of the certificate: router.tls.key_file is set "
		               "(both or neither)");
	if (cert[0] && !cfg->router.listen.family)
		return fail_at(
		        c, "router.tls.cert_file",
		        "expected \"\" while router.listen is \"\" (no Router to serve TLS)");
	if (cfg->role == EM_ROLE_CLOUD && cfg->cloud.address[0])
		return fail_at(c, "cloud.address", "expected \"\" for role \"cloud\"");
	/* Tunnels authenticate with the cluster key: no key, no tunnel. */
	if (!cfg->tunnel.cluster_key[0]) {
		if (cfg->tunnel.listen.family)
			return fail_at(c, "tunnel.cluster_key",
			               "expected non-empty string when tunnel.listen is on "
			               "(default \"%s\"; \"\" turns it off)",
			               EM_CONFIG_TUNNEL_DEFAULT);
		if (cfg->cloud.address[0])
			return fail_at(c, "tunnel.cluster_key",
			               "expected non-empty string when cloud.address is set");
	}

	if (strcmp(cfg->tunnel.cluster_key, EM_CONFIG_PLACEHOLDER_KEY) == 0)
		return fail_at(
		        c, "tunnel.cluster_key",
		        "the placeholder key shipped with edgemesh is public and is refused; "
		        "expected a secret of at least %d bytes shared by the cluster's "
		        "nodes: " EM_CONFIG_KEY_HOWTO,
		        EM_CONFIG_KEY_MIN);
	if (cfg->tunnel.cluster_key[0] && strlen(cfg->tunnel.cluster_key) < EM_CONFIG_KEY_MIN)
		return fail_at(c, "tunnel.cluster_key",
		               "expected at least %d bytes, got %zu: " EM_CONFIG_KEY_HOWTO,
		               EM_CONFIG_KEY_MIN, strlen(cfg->tunnel.cluster_key));
	if (cfg->tunnel.tls.ca_dir[0] && cfg->role != EM_ROLE_CLOUD)
		return fail_at(c, "tunnel.tls.ca_dir",
		               "expected \"\" on an edge: only role \"cloud\" holds the CA and signs");
	/* Without a cluster key this node has no tunnels: nothing to encrypt. */
	if (cfg->tunnel.encryption == EM_TUNNEL_TLS && cfg->tunnel.cluster_key[0]) {
		static const char *const keys[] = {"tunnel.tls.ca_file", "tunnel.tls.cert_file",
		                                   "tunnel.tls.key_file"};
		char *have[] = {cfg->tunnel.tls.ca_file, cfg->tunnel.tls.cert_file,
		                cfg->tunnel.tls.key_file};
		size_t set = 0;
		for (size_t i = 0; i < 3; i++)
			set += have[i][0] != 0;
		for (size_t i = 0; set && set < 3; i++)
			if (!have[i][0])
				return fail_at(c, keys[i],
				               "expected a PEM file: set all three of ca_file, "
				               "cert_file and key_file, or none (certificates kept "
				               "under data_dir)");
		if (!set) {
			/* Managed: the node's certificate and key in one file under
			 * data_dir, enrolled from the cloud (or issued by the CA
			 * here) and renewed. */
			cfg->tunnel.tls.managed = true;
			int n1 = snprintf(have[1], PATH_MAX, "%s/tls/node.pem", cfg->data_dir);
			int n2 = snprintf(have[2], PATH_MAX, "%s/tls/node.pem", cfg->data_dir);
			int n0 = cfg->tunnel.tls.ca_dir[0]
			                 ? snprintf(have[0], PATH_MAX, "%s/ca.crt", cfg->tunnel.tls.ca_dir)
			                 : snprintf(have[0], PATH_MAX, "%s/tls/ca.crt", cfg->data_dir);
			if (n0 >= PATH_MAX || n1 >= PATH_MAX || n2 >= PATH_MAX)
				return fail_at(c, "data_dir", "expected a shorter path");
		}
		if (cfg->tunnel.tls.managed && cfg->role != EM_ROLE_CLOUD && !cfg->cloud.address[0])
			return fail_at(c, "tunnel.tls",
			               "expected ca_file, cert_file and key_file on an edge without "
			               "cloud.address (it has no cloud to enroll with), or "
			               "tunnel.encryption \"none\"");
		if (cfg->tunnel.tls.managed && cfg->role == EM_ROLE_CLOUD && !cfg->tunnel.tls.ca_dir[0])
			return fail_at(c, "tunnel.tls.ca_dir",
			               "expected the CA directory (made at first start when empty, or "
			               "by meshctl ca init) on the cloud when ca_file, cert_file and "
			               "key_file are not set");
	}

	for (size_t i = 0; i < EM_ARRAY_SIZE(orders); i++) {
		const struct order *o = &orders[i];
		uint64_t v = load_uint((const char *)cfg + o->off, o->size);
		uint64_t min = load_uint((const char *)cfg + o->off_min, o->size_min);
		if (v < min || (o->strict && v == min))
			return fail_at(c, o->key, "expected integer %s %s (%llu)",
			               o->strict ? ">" : ">=", o->min, (unsigned long long)min);
	}

	if (cfg->workers == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		cfg->workers = n < 1                       ? 1
		               : n > EM_CONFIG_MAX_WORKERS ? EM_CONFIG_MAX_WORKERS
		                                           : (unsigned)n;
	}
	return 0;
}

/* Reports a syntax error at <off> of <text> with its line number and the
 * text there, so that an operator can find it without a JSON tool. */
static void syntax_error(const char *name, const char *text, size_t len, size_t off, char *err,
                         size_t errlen)
{
	unsigned line = 1;
	char near[24];
	size_t n = 0;

	for (size_t i = 0; i < off; i++)
		line += text[i] == '\n';
	while (off + n < len && n < 16 && text[off + n] != '\n' && text[off + n] != '\r') {
		unsigned char ch = (unsigned char)text[off + n];
		near[n++] = (char)(ch >= 0x20 && ch < 0x7f ? ch : '?');
	}
	near[n] = 0;
	if (off >= len)
		snprintf(err, errlen, "%s:%u: JSON syntax error at end of file", name, line);
	else if (n)
		snprintf(err, errlen, "%s:%u: JSON syntax error near '%s'", name, line, near);
	else
		snprintf(err, errlen, "%s:%u: JSON syntax error near end of line", name, line);
}

int em_config_parse(const char *name, const char *text, size_t len, struct em_config **out,
                    char *err, size_t errlen)
{
	struct pctx c = {.j = {.name = name, .top = "top level", .err = err, .errlen = errlen}};
	cJSON *root = NULL;
	size_t off;
	int rc;

	*out = NULL;
	if (errlen)
		err[0] = 0;
	if (!(c.cfg = calloc(1, sizeof(*c.cfg))) || set_defaults(c.cfg) ||
	    (!(root = em_json_parse(text, len, &off, NULL)) && off == SIZE_MAX)) {
		rc = em_json_oom(&c.j);
		goto out;
	}
	if (!root) {
		syntax_error(name, text, len, off, err, errlen);
		rc = -EINVAL;
		goto out;
	}
	snprintf(c.cfg->path, sizeof(c.cfg->path), "%s", name);
	if ((rc = walk_object(&c, root, top_keys, EM_ARRAY_SIZE(top_keys), c.cfg)) != 0 ||
	    (rc = finish(&c)) != 0)
		goto out;
	*out = c.cfg;
	c.cfg = NULL;
out:
	em_config_free(c.cfg);
	cJSON_Delete(root);
	return rc;
}

static const char *file_type(mode_t m)
{
	return S_ISREG(m)    ? "a regular file"
	       : S_ISDIR(m)  ? "a directory"
	       : S_ISLNK(m)  ? "a symbolic link"
	       : S_ISFIFO(m) ? "a FIFO"
	       : S_ISCHR(m)  ? "a character device"
	       : S_ISBLK(m)  ? "a block device"
	                     : "not a socket";
}

/* PEM passphrase callback giving none: an encrypted key fails to read. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	EM_UNUSED(buf);
	EM_UNUSED(size);
	EM_UNUSED(rwflag);
	EM_UNUSED(u);
	return 0;
}

/* router.tls: the certificate file starts with a certificate (a chain may
 * follow it) and the key file holds its private key, as the engine will
 * load them (engine/router_tls.c). */
static int check_router_tls(const struct em_config *cfg, char *err, size_t errlen)
{
	const char *cert = cfg->router.tls.cert_file, *key = cfg->router.tls.key_file;
	X509 *x = NULL;
	EVP_PKEY *k = NULL;
	FILE *f;
	int rc = -EINVAL;

	if (!cert[0])
		return 0;
	if (!(f = fopen(cert, "re"))) {
		rc = -errno;
		snprintf(err, errlen,
		         "%s: router.tls.cert_file: cannot read %s: %s; expected a readable PEM "
		         "certificate file",
		         cfg->path, cert, strerror(-rc));
		return rc;
	}
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (!x) {
		snprintf(err, errlen,
		         "%s: router.tls.cert_file: %s holds no PEM certificate; expected the "
		         "server's certificate (\"-----BEGIN CERTIFICATE-----\"), then any "
		         "intermediates",
		         cfg->path, cert);
		goto out;
	}
	if (!(f = fopen(key, "re"))) {
		rc = -errno;
		snprintf(err, errlen,
		         "%s: router.tls.key_file: cannot read %s: %s; expected a readable PEM "
		         "private key file",
		         cfg->path, key, strerror(-rc));
		goto out;
	}
	k = PEM_read_PrivateKey(f, NULL, no_passphrase, NULL);
	fclose(f);
	if (!k) {
		snprintf(err, errlen,
		         "%s: router.tls.key_file: %s holds no PEM private key that can be read; "
		         "expected an unencrypted one (\"-----BEGIN PRIVATE KEY-----\"), without "
		         "a passphrase",
		         cfg->path, key);
		goto out;
	}
	if (X509_check_private_key(x, k) != 1) {
		snprintf(err, errlen,
		         "%s: router.tls.key_file: the key in %s does not match the certificate "
		         "in %s (router.tls.cert_file); expected that certificate's private key",
		         cfg->path, key, cert);
		goto out;
	}
	rc = 0;
out:
	ERR_clear_error();
	EVP_PKEY_free(k);
	X509_free(x);
	return rc;
}

int em_config_check_host(const struct em_config *cfg, char *err, size_t errlen)
{
	struct ifaddrs *ifs = NULL;
	struct stat st;
	int rc;

	/* The daemon replaces a stale socket at start; anything else there
	 * (the database, a config file) is an operator's mistake to report, not
	 * a file to delete. */
	if (lstat(cfg->api_socket, &st) == 0 && !S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen,
		         "%s: api_socket: %s exists and is %s; expected a free path or a unix "
		         "socket (edgemesh never replaces other files)",
		         cfg->path, cfg->api_socket, file_type(st.st_mode));
		return -EEXIST;
	}
	if ((rc = check_router_tls(cfg, err, errlen)))
		return rc;
	if (!cfg->capture.enabled || !cfg->capture.n_service_cidrs)
		return 0;
	if (getifaddrs(&ifs) == -1) {
		int e = errno;
		snprintf(err, errlen,
		         "%s: capture.service_cidrs: cannot list this node's addresses to check "
		         "them: getifaddrs: %s",
		         cfg->path, strerror(e));
		return -e;
	}
	/* A range holding one of our own addresses would redirect connections
	 * to this node itself (API clients, the tunnel port, SSH) into the mesh. */
	for (const struct ifaddrs *ifa = ifs; ifa; ifa = ifa->ifa_next) {
		struct em_addr a;
		if (!ifa->ifa_addr || em_addr_from_sockaddr(ifa->ifa_addr, &a))
			continue;
		a.port = 0;
		for (size_t i = 0; i < cfg->capture.n_service_cidrs; i++) {
			const struct em_cidr *r = &cfg->capture.service_cidrs[i];
			char rip[EM_ADDR_STRLEN], aip[EM_ADDR_STRLEN];
			if (!em_cidr_contains(r, &a))
				continue;
			snprintf(err, errlen,
			         "%s: capture.service_cidrs[%zu]: %s/%u contains %s, an address of "
			         "this node (interface %s); expected the cluster's service range, "
			         "which no interface may use",
			         cfg->path, i, em_addr_format(&r->addr, false, rip, sizeof(rip)),
			         r->prefix, em_addr_format(&a, false, aip, sizeof(aip)),
			         ifa->ifa_name ? ifa->ifa_name : "?");
			freeifaddrs(ifs);
			return -EINVAL;
		}
	}
	freeifaddrs(ifs);
	return 0;
}

int em_config_load(const char *path, struct em_config **out, char *err, size_t errlen)
{
	char why[200];
	size_t got = 0;
	int rc = 0;

	*out = NULL;
	char *text = em_file_read(AT_FDCWD, path, EM_CONFIG_MAX_BYTES, false, NULL, &got, &rc, why,
	                          sizeof(why));
	if (!text) {
		snprintf(err, errlen, "%s: %s", path, why);
		return rc;
	}
	rc = em_config_parse(path, text, got, out, err, errlen);
	if (!rc && (rc = em_config_check_host(*out, err, errlen)) != 0) {
		em_config_free(*out);
		*out = NULL;
	}
	free(text);
	return rc;
}

void em_config_free(struct em_config *cfg)
{
	if (!cfg)
		return;
	free(cfg->capture.service_cidrs);
	free(cfg->capture.exclude_cidrs);
	free(cfg->capture.exclude_ports);
	free(cfg->listeners);
	free(cfg);
}

static bool cidrs_eq(const struct em_cidr *a, size_t na, const struct em_cidr *b, size_t nb)
{
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (a[i].prefix != b[i].prefix || !em_addr_eq(&a[i].addr, &b[i].addr))
			return false;
	return true;
}

const char *em_config_restart_key(const struct em_config *cur, const struct em_config *next)
{
	if (cur->role != next->role)
		return "role";
	if (strcmp(cur->node_name, next->node_name) != 0)
		return "node_name";
	if (strcmp(cur->data_dir, next->data_dir) != 0)
		return "data_dir";
	if (strcmp(cur->api_socket, next->api_socket) != 0)
		return "api_socket";
	if (cur->workers != next->workers)
		return "workers";
	if (cur->io_backend != next->io_backend)
		return "io_backend";
	if (cur->fastpath.mode != next->fastpath.mode)
		return "fastpath.mode";
	if (strcmp(cur->fastpath.cgroup, next->fastpath.cgroup) != 0)
		return "fastpath.cgroup";
	if (cur->capture.enabled != next->capture.enabled)
		return "capture.enabled";
	if (cur->capture.port != next->capture.port)
		return "capture.port";
	if (!cidrs_eq(cur->capture.service_cidrs, cur->capture.n_service_cidrs,
	              next->capture.service_cidrs, next->capture.n_service_cidrs))
		return "capture.service_cidrs";
	if (!cidrs_eq(cur->capture.exclude_cidrs, cur->capture.n_exclude_cidrs,
	              next->capture.exclude_cidrs, next->capture.n_exclude_cidrs))
		return "capture.exclude_cidrs";
	if (cur->capture.n_exclude_ports != next->capture.n_exclude_ports ||
	    (cur->capture.n_exclude_ports &&
	     memcmp(cur->capture.exclude_ports, next->capture.exclude_ports,
	            cur->capture.n_exclude_ports * sizeof(uint16_t)) != 0))
		return "capture.exclude_ports";
	if (cur->capture.mark != next->capture.mark)
		return "capture.mark";
	/* A listener's target (service, port) may change live; its socket not. */
	if (cur->n_listeners != next->n_listeners)
		return "listeners";
	for (size_t i = 0; i < cur->n_listeners; i++)
		if (!em_addr_eq(&cur->listeners[i].listen, &next->listeners[i].listen))
			return "listeners.listen";
	if (!em_addr_eq(&cur->tunnel.listen, &next->tunnel.listen))
		return "tunnel.listen";
	if (!em_addr_eq(&cur->router.listen, &next->router.listen))
		return "router.listen";
	if (!em_addr_eq(&cur->admin.listen, &next->admin.listen))
		return "admin.listen";
	if (cur->tunnel.encryption != next->tunnel.encryption)
		return "tunnel.encryption";
	if (strcmp(cur->tunnel.tls.ca_file, next->tunnel.tls.ca_file) != 0 ||
	    strcmp(cur->tunnel.tls.cert_file, next->tunnel.tls.cert_file) != 0 ||
	    strcmp(cur->tunnel.tls.key_file, next->tunnel.tls.key_file) != 0 ||
	    strcmp(cur->tunnel.tls.ca_dir, next->tunnel.tls.ca_dir) != 0)
		return "tunnel.tls";
	if (strcmp(cur->router.tls.cert_file, next->router.tls.cert_file) != 0)
		return "router.tls.cert_file";
	if (strcmp(cur->router.tls.key_file, next->router.tls.key_file) != 0)
		return "router.tls.key_file";
	if (cur->router.tls.handshake_ms != next->router.tls.handshake_ms)
		return "router.tls.handshake_ms";
	if (cur->router.tls.max_connections != next->router.tls.max_connections)
		return "router.tls.max_connections";
	if (strcmp(cur->controller.manifests_dir, next->controller.manifests_dir) != 0)
		return "controller.manifests_dir";
	if (strcmp(cur->cloud.address, next->cloud.address) != 0)
		return "cloud.address";
	if (strcmp(cur->controller.kubernetes.server, next->controller.kubernetes.server) != 0)
		return "controller.kubernetes.server";
	if (strcmp(cur->controller.kubernetes.token_file, next->controller.kubernetes.token_file) !=
	    0)
		return "controller.kubernetes.token_file";
	if (strcmp(cur->controller.kubernetes.ca_file, next->controller.kubernetes.ca_file) != 0)
		return "controller.kubernetes.ca_file";
	return NULL;
}

/* Configuration file parsing and validation. Every key is documented with its
 * type and default in conf/README.md; keep the two in step. */
#include "store/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "proto/log.h"

#define EM_CONFIG_MAX_BYTES        (1024 * 1024)
#define EM_CONFIG_MAX_WORKERS      256
#define EM_CONFIG_MAX_ITEMS        256 /* per array */
#define EM_CONFIG_TUNNEL_DEFAULT   "0.0.0.0:20006"
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
	const char *name;
	char *err;
	size_t errlen;
	struct em_config *cfg;
	struct em_listener_conf *cur_listener;
	bool api_socket_set;
	bool tunnel_listen_set;
	bool service_cidrs_set;
	char path[256]; /* key path of the value being read */
};

typedef int (*field_fn)(struct pctx *c, const cJSON *v);

struct field {
	const char *name;
	field_fn fn;
	const char *missing; /* expectation reported when a required key is absent */
};

/* ---- messages and key paths ---- */

static int fail_msg(struct pctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail_msg(struct pctx *c, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!c->errlen)
		return -EINVAL;
	n = snprintf(c->err, c->errlen, "%s: %s: ", c->name, c->path[0] ? c->path : "top level");
	if (n >= 0 && (size_t)n < c->errlen) {
		va_start(ap, fmt);
		vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

#define FAIL_EXPECTED(c, ...) fail_msg(c, "expected " __VA_ARGS__)

/* Keys come from the file and are echoed in messages: control bytes (cJSON
 * lets raw newlines into strings) become '?' so that a message stays one
 * line. */
static size_t path_push_key(struct pctx *c, const char *key)
{
	size_t len = strlen(c->path), n;
	snprintf(c->path + len, sizeof(c->path) - len, "%s%s", len ? "." : "", key);
	for (n = len; c->path[n]; n++)
		if ((unsigned char)c->path[n] < 0x20 || c->path[n] == 0x7f)
			c->path[n] = '?';
	return len;
}

static size_t path_push_index(struct pctx *c, size_t i)
{
	size_t len = strlen(c->path);
	snprintf(c->path + len, sizeof(c->path) - len, "[%zu]", i);
	return len;
}

static void path_pop(struct pctx *c, size_t len)
{
	c->path[len] = 0;
}

/* ---- typed readers: each checks the JSON type and range ---- */

static int get_int(struct pctx *c, const cJSON *v, long long lo, long long hi, long long *out)
{
	double d;

	if (!cJSON_IsNumber(v))
		return FAIL_EXPECTED(c, "integer %lld..%lld", lo, hi);
	d = v->valuedouble;
	if (!(d >= (double)lo && d <= (double)hi) || d != (double)(long long)d)
		return FAIL_EXPECTED(c, "integer %lld..%lld", lo, hi);
	*out = (long long)d;
	return 0;
}

static int get_port(struct pctx *c, const cJSON *v, uint16_t *out)
{
	long long n = 0;
	int rc = get_int(c, v, 1, 65535, &n);
	if (!rc)
		*out = (uint16_t)n;
	return rc;
}

static int get_ms(struct pctx *c, const cJSON *v, long long lo, long long hi, uint32_t *out)
{
	long long n = 0;
	int rc = get_int(c, v, lo, hi, &n);
	if (!rc)
		*out = (uint32_t)n;
	return rc;
}

/* A string of 0..<max> bytes (1..<max> unless <empty_ok>) copied into <buf>. */
static int get_str(struct pctx *c, const cJSON *v, char *buf, size_t max, bool empty_ok,
                   const char *what)
{
	size_t n;

	if (!cJSON_IsString(v) || !v->valuestring)
		return FAIL_EXPECTED(c, "%s", what);
	n = strlen(v->valuestring);
	if (n > max || (n == 0 && !empty_ok))
		return FAIL_EXPECTED(c, "%s", what);
	memcpy(buf, v->valuestring, n + 1);
	return 0;
}

static int get_enum(struct pctx *c, const cJSON *v, const char *const *names, size_t n,
                    const char *what, int *out)
{
	if (cJSON_IsString(v) && v->valuestring)
		for (size_t i = 0; i < n; i++)
			if (strcmp(v->valuestring, names[i]) == 0) {
				*out = (int)i;
				return 0;
			}
	return FAIL_EXPECTED(c, "%s", what);
}

static int get_bool(struct pctx *c, const cJSON *v, bool *out)
{
	if (!cJSON_IsBool(v))
		return FAIL_EXPECTED(c, "true or false");
	*out = cJSON_IsTrue(v);
	return 0;
}

/* Walks the members of object <obj> in file order so that the first error
 * reported is the first one in the file; unknown and repeated keys are
 * errors (cJSON keeps duplicates, a reader would silently take the first). */
static int walk_object(struct pctx *c, const cJSON *obj, const struct field *fields, size_t nf)
{
	uint64_t seen = 0;
	const cJSON *m;
	size_t len;
	int rc;

	if (!cJSON_IsObject(obj))
		return FAIL_EXPECTED(c, "object");
	cJSON_ArrayForEach(m, obj)
	{
		size_t i;
		len = path_push_key(c, m->string ? m->string : "");
		for (i = 0; i < nf; i++)
			if (m->string && strcmp(m->string, fields[i].name) == 0)
				break;
		if (i == nf)
			return fail_msg(c, "unknown key");
		if (seen & (1ULL << i))
			return fail_msg(c, "duplicate key");
		seen |= 1ULL << i;
		if ((rc = fields[i].fn(c, m)) != 0)
			return rc;
		path_pop(c, len);
	}
	for (size_t i = 0; i < nf; i++) {
		if (!fields[i].missing || (seen & (1ULL << i)))
			continue;
		path_push_key(c, fields[i].name);
		return FAIL_EXPECTED(c, "%s (required key is missing)", fields[i].missing);
	}
	return 0;
}

/* Reads array <v> of at most EM_CONFIG_MAX_ITEMS items of <size> bytes each,
 * converting each with <item>. */
static int get_array(struct pctx *c, const cJSON *v, size_t size, const char *what,
                     int (*item)(struct pctx *, const cJSON *, void *), void **out, size_t *n_out)
{
	const cJSON *e;
	char *arr = NULL;
	size_t n = 0, i = 0, len;
	int rc;

	if (!cJSON_IsArray(v) || (n = (size_t)cJSON_GetArraySize(v)) > EM_CONFIG_MAX_ITEMS)
		return FAIL_EXPECTED(c, "array of at most %d %s", EM_CONFIG_MAX_ITEMS, what);
	if (n && !(arr = calloc(n, size)))
		return fail_msg(c, "out of memory");
	cJSON_ArrayForEach(e, v)
	{
		len = path_push_index(c, i);
		if ((rc = item(c, e, arr + i * size)) != 0) {
			free(arr);
			return rc;
		}
		path_pop(c, len);
		i++;
	}
	free(*out);
	*out = arr;
	*n_out = n;
	return 0;
}

static int item_cidr(struct pctx *c, const cJSON *v, void *out)
{
	if (!cJSON_IsString(v) || !v->valuestring || em_cidr_parse(v->valuestring, out))
		return FAIL_EXPECTED(c, "CIDR string like \"10.96.0.0/12\" or \"fd00::/108\"");
	return 0;
}

static int item_port(struct pctx *c, const cJSON *v, void *out)
{
	return get_port(c, v, out);
}

static int get_addr(struct pctx *c, const cJSON *v, struct em_addr *out)
{
	if (!cJSON_IsString(v) || !v->valuestring || em_addr_parse(v->valuestring, true, out))
		return FAIL_EXPECTED(c, "\"ip:port\" (IPv4) or \"[ip]:port\" (IPv6)");
	return 0;
}

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

/* "host:port" with a DNS name, IPv4 address or bracketed IPv6 address. */
static bool host_port(const char *s)
{
	struct em_addr a;
	const char *colon = strrchr(s, ':');
	char *end;
	unsigned long port;

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

/* ---- top-level keys ---- */

static int f_role(struct pctx *c, const cJSON *v)
{
	static const char *const names[] = {"edge", "cloud"};
	int r = 0;
	int rc = get_enum(c, v, names, 2, "\"edge\" or \"cloud\"", &r);
	c->cfg->role = (enum em_role)r;
	return rc;
}

#define NODE_NAME_EXPECT "DNS-1123 name (lower-case letters, digits, '-', '.'), 1..253 bytes"

static int f_node_name(struct pctx *c, const cJSON *v)
{
	char *b = c->cfg->node_name;
	if (get_str(c, v, b, sizeof(c->cfg->node_name) - 1, false, NODE_NAME_EXPECT))
		return -EINVAL;
	if (!dns_name(b, strlen(b), 253, true))
		return FAIL_EXPECTED(c, NODE_NAME_EXPECT);
	return 0;
}

static int f_data_dir(struct pctx *c, const cJSON *v)
{
	return get_str(c, v, c->cfg->data_dir, EM_CONFIG_DATA_DIR_MAX, false,
	               "non-empty path of at most 4000 bytes");
}

static int f_api_socket(struct pctx *c, const cJSON *v)
{
	c->api_socket_set = true;
	return get_str(c, v, c->cfg->api_socket, sizeof(c->cfg->api_socket) - 1, false,
	               "non-empty path of at most 107 bytes (sun_path)");
}

static int f_workers(struct pctx *c, const cJSON *v)
{
	long long n = 0;
	int rc = get_int(c, v, 0, EM_CONFIG_MAX_WORKERS, &n);
	c->cfg->workers = (unsigned)n;
	return rc;
}

static int f_log_level(struct pctx *c, const cJSON *v)
{
	static const char *const names[] = {"error", "warn", "info", "debug"};
	int r = 0;
	int rc = get_enum(c, v, names, 4, "\"error\", \"warn\", \"info\" or \"debug\"", &r);
	/* Same order as enum em_log_level; em_log_level_parse agrees. */
	c->cfg->log_level = r;
	return rc;
}

static int f_balancer(struct pctx *c, const cJSON *v)
{
	static const char *const names[] = {"round_robin", "random", "least_requests"};
	int r = 0;
	int rc = get_enum(c, v, names, 3, "\"round_robin\", \"random\" or \"least_requests\"", &r);
	c->cfg->balancer = (enum em_balancer)r;
	return rc;
}

static int f_cap_enabled(struct pctx *c, const cJSON *v)
{
	return get_bool(c, v, &c->cfg->capture.enabled);
}

static int f_cap_port(struct pctx *c, const cJSON *v)
{
	return get_port(c, v, &c->cfg->capture.port);
}

static int f_cap_service_cidrs(struct pctx *c, const cJSON *v)
{
	c->service_cidrs_set = true;
	return get_array(c, v, sizeof(struct em_cidr), "CIDR strings", item_cidr,
	                 (void **)&c->cfg->capture.service_cidrs, &c->cfg->capture.n_service_cidrs);
}

static int f_cap_exclude_cidrs(struct pctx *c, const cJSON *v)
{
	return get_array(c, v, sizeof(struct em_cidr), "CIDR strings", item_cidr,
	                 (void **)&c->cfg->capture.exclude_cidrs, &c->cfg->capture.n_exclude_cidrs);
}

static int f_cap_exclude_ports(struct pctx *c, const cJSON *v)
{
	return get_array(c, v, sizeof(uint16_t), "ports", item_port,
	                 (void **)&c->cfg->capture.exclude_ports, &c->cfg->capture.n_exclude_ports);
}

static int f_cap_mark(struct pctx *c, const cJSON *v)
{
	long long n = 0;
	int rc = get_int(c, v, 1, UINT32_MAX, &n);
	c->cfg->capture.mark = (uint32_t)n;
	return rc;
}

static const struct field capture_fields[] = {
        {"enabled", f_cap_enabled, NULL},
        {"port", f_cap_port, NULL},
        {"service_cidrs", f_cap_service_cidrs, NULL},
        {"exclude_cidrs", f_cap_exclude_cidrs, NULL},
        {"exclude_ports", f_cap_exclude_ports, NULL},
        {"mark", f_cap_mark, NULL},
};

static int f_capture(struct pctx *c, const cJSON *v)
{
	return walk_object(c, v, capture_fields, EM_ARRAY_SIZE(capture_fields));
}

static int f_lis_listen(struct pctx *c, const cJSON *v)
{
	return get_addr(c, v, &c->cur_listener->listen);
}

static int f_lis_service(struct pctx *c, const cJSON *v)
{
	struct em_listener_conf *l = c->cur_listener;
	const char *s = cJSON_IsString(v) ? v->valuestring : NULL;
	const char *slash = s ? strchr(s, '/') : NULL;
	size_t ns_len, name_len;

	if (!slash)
		return FAIL_EXPECTED(c, "\"namespace/name\"");
	ns_len = (size_t)(slash - s);
	name_len = strlen(slash + 1);
	if (!dns_name(s, ns_len, 63, false) || !dns_name(slash + 1, name_len, 253, true))
		return FAIL_EXPECTED(c, "\"namespace/name\"");
	memcpy(l->service_ns, s, ns_len);
	l->service_ns[ns_len] = 0;
	memcpy(l->service_name, slash + 1, name_len + 1);
	return 0;
}

static int f_lis_port(struct pctx *c, const cJSON *v)
{
	return get_port(c, v, &c->cur_listener->port);
}

static const struct field listener_fields[] = {
        {"listen", f_lis_listen, "\"ip:port\" (IPv4) or \"[ip]:port\" (IPv6)"},
        {"service", f_lis_service, "\"namespace/name\""},
        {"port", f_lis_port, "integer 1..65535"},
};

static int item_listener(struct pctx *c, const cJSON *v, void *out)
{
	c->cur_listener = out;
	return walk_object(c, v, listener_fields, EM_ARRAY_SIZE(listener_fields));
}

static int f_listeners(struct pctx *c, const cJSON *v)
{
	return get_array(c, v, sizeof(struct em_listener_conf), "listener objects", item_listener,
	                 (void **)&c->cfg->listeners, &c->cfg->n_listeners);
}

#define MS_MAX_10MIN 600000LL
#define MS_MAX_DAY   86400000LL

static int f_tun_listen(struct pctx *c, const cJSON *v)
{
	c->tunnel_listen_set = true;
	/* "" turns tunnels off: the node neither accepts nor needs a key. */
	if (cJSON_IsString(v) && v->valuestring && !v->valuestring[0]) {
		memset(&c->cfg->tunnel.listen, 0, sizeof(c->cfg->tunnel.listen));
		return 0;
	}
	if (!cJSON_IsString(v) || !v->valuestring ||
	    em_addr_parse(v->valuestring, true, &c->cfg->tunnel.listen))
		return FAIL_EXPECTED(c, "\"ip:port\", \"[ip]:port\" or \"\" (off)");
	return 0;
}

static int f_tun_key(struct pctx *c, const cJSON *v)
{
	return get_str(c, v, c->cfg->tunnel.cluster_key, sizeof(c->cfg->tunnel.cluster_key) - 1,
	               true, "string of at most 255 bytes");
}

static int f_tun_max_streams(struct pctx *c, const cJSON *v)
{
	return get_ms(c, v, 1, 65536, &c->cfg->tunnel.max_streams);
}

/* Window bounds are those of the wire format (tunnel/PROTOCOL.md, 5). */
static int f_tun_stream_window(struct pctx *c, const cJSON *v)
{
	return get_ms(c, v, 16384, 0x7fffffffLL, &c->cfg->tunnel.stream_window);
}

static int f_tun_stream_window_max(struct pctx *c, const cJSON *v)
{
	return get_ms(c, v, 16384, 0x7fffffffLL, &c->cfg->tunnel.stream_window_max);
}

static int f_tun_window_cap(struct pctx *c, const cJSON *v)
{
	long long n = 0;
	int rc = get_int(c, v, 16384, 1LL << 40, &n);
	if (!rc)
		c->cfg->tunnel.window_cap = (uint64_t)n;
	return rc;
}

static int f_tun_keepalive(struct pctx *c, const cJSON *v)
{
	return get_ms(c, v, 100, MS_MAX_10MIN, &c->cfg->tunnel.keepalive_ms);
}

static int f_tun_dead_after(struct pctx *c, const cJSON *v)
{
	return get_ms(c, v, 200, MS_MAX_10MIN, &c->cfg->tunnel.dead_after_ms);
}

static int f_tun_reconnect_min(struct pctx *c, const cJSON *v)
{
	return get_ms(c, v, 10, MS_MAX_10MIN, &c->cfg->tunnel.reconnect_min_ms);
}

static int f_tun_reconnect_max(struct pctx *c, const cJSON *v)
{
	return get_ms(c, v, 10, MS_MAX_10MIN, &c->cfg->tunnel.reconnect_max_ms);
}

static int f_tun_max_handshakes(struct pctx *c, const cJSON *v)
{
	return get_ms(c, v, 1, 1000000, &c->cfg->tunnel.max_handshakes);
}

static int f_tun_max_handshakes_src(struct pctx *c, const cJSON *v)
{
	return get_ms(c, v, 1, 1000000, &c->cfg->tunnel.max_handshakes_per_source);
}

static int f_tun_handshake_ms(struct pctx *c, const cJSON *v)
{
	return get_ms(c, v, 100, MS_MAX_10MIN, &c->cfg->tunnel.handshake_ms);
}

static const struct field tunnel_fields[] = {
        {"listen", f_tun_listen, NULL},
        {"cluster_key", f_tun_key, NULL},
        {"max_streams", f_tun_max_streams, NULL},
        {"stream_window", f_tun_stream_window, NULL},
        {"stream_window_max", f_tun_stream_window_max, NULL},
        {"window_cap", f_tun_window_cap, NULL},
        {"keepalive_ms", f_tun_keepalive, NULL},
        {"dead_after_ms", f_tun_dead_after, NULL},
        {"reconnect_min_ms", f_tun_reconnect_min, NULL},
        {"reconnect_max_ms", f_tun_reconnect_max, NULL},
        {"max_handshakes", f_tun_max_handshakes, NULL},
        {"max_handshakes_per_source", f_tun_max_handshakes_src, NULL},
        {"handshake_ms", f_tun_handshake_ms, NULL},
};

static int f_tunnel(struct pctx *c, const cJSON *v)
{
	return walk_object(c, v, tunnel_fields, EM_ARRAY_SIZE(tunnel_fields));
}

static int f_cloud_address(struct pctx *c, const cJSON *v)
{
	char *b = c->cfg->cloud.address;
	if (get_str(c, v, b, sizeof(c->cfg->cloud.address) - 1, true, "\"host:port\" or \"\""))
		return -EINVAL;
	if (b[0] && !host_port(b))
		return FAIL_EXPECTED(c, "\"host:port\" or \"\"");
	return 0;
}

static const struct field cloud_fields[] = {
        {"address", f_cloud_address, NULL},
};

static int f_cloud(struct pctx *c, const cJSON *v)
{
	return walk_object(c, v, cloud_fields, EM_ARRAY_SIZE(cloud_fields));
}

static int f_to_connect(struct pctx *c, const cJSON *v)
{
	return get_ms(c, v, 1, MS_MAX_10MIN, &c->cfg->timeouts.connect_ms);
}

static int f_to_idle(struct pctx *c, const cJSON *v)
{
	return get_ms(c, v, 1, MS_MAX_DAY, &c->cfg->timeouts.idle_ms);
}

static int f_to_head(struct pctx *c, const cJSON *v)
{
	return get_ms(c, v, 1, MS_MAX_10MIN, &c->cfg->timeouts.request_head_ms);
}

static int f_to_sniff(struct pctx *c, const cJSON *v)
{
	return get_ms(c, v, 1, 10000, &c->cfg->timeouts.sniff_ms);
}

static int f_to_shutdown(struct pctx *c, const cJSON *v)
{
	return get_ms(c, v, 0, MS_MAX_10MIN, &c->cfg->timeouts.shutdown_ms);
}

static const struct field timeout_fields[] = {
        {"connect_ms", f_to_connect, NULL},   {"idle_ms", f_to_idle, NULL},
        {"request_head_ms", f_to_head, NULL}, {"sniff_ms", f_to_sniff, NULL},
        {"shutdown_ms", f_to_shutdown, NULL},
};

static int f_timeouts(struct pctx *c, const cJSON *v)
{
	return walk_object(c, v, timeout_fields, EM_ARRAY_SIZE(timeout_fields));
}

static const struct field top_fields[] = {
        {"role", f_role, "\"edge\" or \"cloud\""},
        {"node_name", f_node_name, NODE_NAME_EXPECT},
        {"data_dir", f_data_dir, NULL},
        {"api_socket", f_api_socket, NULL},
        {"workers", f_workers, NULL},
        {"log_level", f_log_level, NULL},
        {"balancer", f_balancer, NULL},
        {"capture", f_capture, NULL},
        {"listeners", f_listeners, NULL},
        {"tunnel", f_tunnel, NULL},
        {"cloud", f_cloud, NULL},
        {"timeouts", f_timeouts, NULL},
};

static void set_defaults(struct em_config *cfg)
{
	cfg->role = EM_ROLE_EDGE;
	snprintf(cfg->data_dir, sizeof(cfg->data_dir), "%s", EM_CONFIG_DATA_DIR_DEFAULT);
	cfg->workers = 0;
	cfg->log_level = EM_LOG_INFO;
	cfg->balancer = EM_LB_ROUND_ROBIN;
	cfg->capture.enabled = false;
	cfg->capture.port = 15001;
	cfg->capture.mark = EM_CONFIG_MARK_DEFAULT;
	em_addr_parse(EM_CONFIG_TUNNEL_DEFAULT, true, &cfg->tunnel.listen);
	cfg->tunnel.max_streams = 1024;
	cfg->tunnel.stream_window = 256 * 1024;
	cfg->tunnel.stream_window_max = 16 * 1024 * 1024;
	cfg->tunnel.window_cap = 64ull * 1024 * 1024;
	cfg->tunnel.keepalive_ms = 10000;
	cfg->tunnel.dead_after_ms = 30000;
	cfg->tunnel.reconnect_min_ms = 200;
	cfg->tunnel.reconnect_max_ms = 30000;
	cfg->tunnel.max_handshakes = 1024;
	cfg->tunnel.max_handshakes_per_source = 64;
	cfg->tunnel.handshake_ms = 10000;
	cfg->timeouts.connect_ms = 5000;
	cfg->timeouts.idle_ms = 300000;
	cfg->timeouts.request_head_ms = 10000;
	cfg->timeouts.sniff_ms = 100;
	cfg->timeouts.shutdown_ms = 5000;
}

static int fail_at(struct pctx *c, const char *key, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static int fail_at(struct pctx *c, const char *key, const char *fmt, ...)
{
	char what[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	snprintf(c->path, sizeof(c->path), "%s", key);
	return fail_msg(c, "%s", what);
}

/* Rules that tie keys together, and values derived from others. */
static int finish(struct pctx *c)
{
	struct em_config *cfg = c->cfg;

	if (!c->service_cidrs_set) {
		cfg->capture.service_cidrs = calloc(1, sizeof(struct em_cidr));
		if (!cfg->capture.service_cidrs)
			return fail_at(c, "capture.service_cidrs", "out of memory");
		em_cidr_parse(EM_CONFIG_CIDR_DEFAULT, cfg->capture.service_cidrs);
		cfg->capture.n_service_cidrs = 1;
	}
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

	if (!c->api_socket_set) {
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

	if (cfg->tunnel.stream_window_max < cfg->tunnel.stream_window)
		return fail_at(c, "tunnel.stream_window_max",
		               "expected integer >= tunnel.stream_window (%u)",
		               cfg->tunnel.stream_window);
	if (cfg->tunnel.window_cap < cfg->tunnel.stream_window_max)
		return fail_at(c, "tunnel.window_cap",
		               "expected integer >= tunnel.stream_window_max (%u)",
		               cfg->tunnel.stream_window_max);
	if (cfg->tunnel.dead_after_ms <= cfg->tunnel.keepalive_ms)
		return fail_at(c, "tunnel.dead_after_ms",
		               "expected integer > tunnel.keepalive_ms (%u)",
		               cfg->tunnel.keepalive_ms);
	if (cfg->tunnel.reconnect_max_ms < cfg->tunnel.reconnect_min_ms)
		return fail_at(c, "tunnel.reconnect_max_ms",
		               "expected integer >= tunnel.reconnect_min_ms (%u)",
		               cfg->tunnel.reconnect_min_ms);

	if (cfg->workers == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		cfg->workers = n < 1                       ? 1
		               : n > EM_CONFIG_MAX_WORKERS ? EM_CONFIG_MAX_WORKERS
		                                           : (unsigned)n;
	}
	return 0;
}

/* Reports a syntax error at <pos> of <text> with its line number and the
 * text there, so that an operator can find it without a JSON tool. */
static void syntax_error(const char *name, const char *text, size_t len, const char *pos, char *err,
                         size_t errlen)
{
	size_t off = pos && pos >= text && pos <= text + len ? (size_t)(pos - text) : len;
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
	struct pctx c = {.name = name, .err = err, .errlen = errlen};
	const char *end = NULL;
	char *buf = NULL;
	cJSON *root = NULL;
	int rc;

	*out = NULL;
	if (errlen)
		err[0] = 0;
	/* cJSON wants a terminated string and stops at the first NUL; copy so
	 * that a NUL inside the text is reported as the syntax error it is. */
	if (!(buf = malloc(len + 1)) || !(c.cfg = calloc(1, sizeof(*c.cfg)))) {
		snprintf(err, errlen, "%s: out of memory", name);
		rc = -ENOMEM;
		goto out;
	}
	memcpy(buf, text, len);
	buf[len] = 0;
	root = cJSON_ParseWithOpts(buf, &end, 0);
	if (root && end) {
		while (end < buf + len &&
		       (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
			end++;
	}
	if (!root || !end || end != buf + len) {
		syntax_error(name, buf, len, root ? end : (end ? end : cJSON_GetErrorPtr()), err,
		             errlen);
		rc = -EINVAL;
		goto out;
	}

	snprintf(c.cfg->path, sizeof(c.cfg->path), "%s", name);
	set_defaults(c.cfg);
	if ((rc = walk_object(&c, root, top_fields, EM_ARRAY_SIZE(top_fields))) != 0 ||
	    (rc = finish(&c)) != 0)
		goto out;
	*out = c.cfg;
	c.cfg = NULL;
out:
	em_config_free(c.cfg);
	cJSON_Delete(root);
	free(buf);
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

int em_config_check_host(const struct em_config *cfg, char *err, size_t errlen)
{
	struct ifaddrs *ifs = NULL;
	struct stat st;

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
	struct stat st;
	char *text = NULL;
	size_t got = 0;
	int fd, rc;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1 || fstat(fd, &st) == -1) {
		rc = -errno;
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > EM_CONFIG_MAX_BYTES) {
		snprintf(err, errlen, "%s: expected a regular file of at most %d bytes", path,
		         EM_CONFIG_MAX_BYTES);
		rc = -EINVAL;
		goto out;
	}
	if (!(text = malloc((size_t)st.st_size + 1))) {
		snprintf(err, errlen, "%s: out of memory", path);
		rc = -ENOMEM;
		goto out;
	}
	/* The file may change under us (an editor saving): read what is there
	 * up to the size seen, and let the parser judge it. */
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, text + got, (size_t)st.st_size - got);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			rc = -errno;
			snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	rc = em_config_parse(path, text, got, out, err, errlen);
	if (!rc && (rc = em_config_check_host(*out, err, errlen)) != 0) {
		em_config_free(*out);
		*out = NULL;
	}
out:
	if (fd != -1)
		close(fd);
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
	return NULL;
}

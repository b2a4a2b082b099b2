/* The daemon's configuration: a JSON file (conf/edge.json, conf/cloud.json),
 * every key documented with its default in conf/README.md.
 *
 * A config is immutable once loaded. The live one is published with RCU
 * (em_config_current) so that SIGHUP can swap it while workers read it. */
#ifndef EM_STORE_CONFIG_H
#define EM_STORE_CONFIG_H

#include <limits.h>

#include "proto/em.h"

enum em_role { EM_ROLE_EDGE = 0, EM_ROLE_CLOUD };

/* The tunnel port of a node whose Node object names none (annotation
 * edgemesh.io/tunnel-port) and whose peers run without tunnel.listen; the
 * default of tunnel.listen uses it too. */
#define EM_CONFIG_TUNNEL_PORT 20006
/* The Router's listener on the cloud role unless router.listen says
 * otherwise (KubeEdge's router REST port). */
#define EM_CONFIG_ROUTER_DEFAULT "0.0.0.0:9443"
/* The admin listener (/metrics, /healthz, /readyz) unless admin.listen says
 * otherwise. */
#define EM_CONFIG_ADMIN_DEFAULT "127.0.0.1:15000"

enum em_tunnel_encryption {
	EM_TUNNEL_PLAIN = 0, /* "none" */
	EM_TUNNEL_TLS,       /* "tls" */
};

/* io_backend: how the engine's workers wait for their sockets. */
enum em_io_backend {
	EM_IO_AUTO = 0, /* "auto": io_uring where io_uring_setup works, else epoll */
	EM_IO_URING,    /* "io_uring" */
	EM_IO_EPOLL,    /* "epoll" */
};

/* fastpath.mode: connect-time balancing in the kernel (engine/fastpath.h). */
enum em_fastpath_mode {
	EM_FASTPATH_AUTO = 0, /* "auto": on where the kernel and privileges allow */
	EM_FASTPATH_OFF,      /* "off" */
};

#define EM_CONFIG_FASTPATH_CGROUP_DEFAULT "/sys/fs/cgroup/unified"

enum em_balancer {
	EM_LB_ROUND_ROBIN = 0,
	EM_LB_RANDOM,
	EM_LB_LEAST_REQUESTS,
};

struct em_listener_conf {
	struct em_addr listen; /* ip:port */
	char service_ns[64];
	char service_name[254];
	uint16_t port; /* service port */
};

struct em_config {
	char path[PATH_MAX]; /* file it was read from */
	enum em_role role;
	char node_name[254];
	char data_dir[PATH_MAX];
	char api_socket[108]; /* sun_path */
	unsigned workers;     /* resolved: 0 in the file means one per core */
	int log_level;        /* enum em_log_level */
	enum em_balancer balancer;
	enum em_io_backend io_backend; /* restart-only */

	struct {
		bool enabled;
		uint16_t port;
		struct em_cidr *service_cidrs;
		size_t n_service_cidrs;
		struct em_cidr *exclude_cidrs;
		size_t n_exclude_cidrs;
		uint16_t *exclude_ports;
		size_t n_exclude_ports;
		uint32_t mark; /* SO_MARK of our outgoing sockets, RETURNed first */
	} capture;

	struct em_listener_conf *listeners;
	size_t n_listeners;

	struct {
		struct em_addr listen; /* family 0 when tunnels are off */
		char cluster_key[256];
		uint32_t max_streams;       /* streams a peer may open at once */
		uint32_t stream_window;     /* initial receive window of a stream */
		uint32_t stream_window_max; /* a stream's window may grow to */
		uint64_t window_cap;        /* sum of grown windows per tunnel */
		uint32_t keepalive_ms;      /* PING after this long without input */
		uint32_t dead_after_ms;     /* peer dead after this long silent */
		uint32_t reconnect_min_ms;  /* first redial delay (jittered) */
		uint32_t reconnect_max_ms;  /* redial delay ceiling */
		/* Accepted tunnels not yet authenticated, per worker: at most
		 * <max_handshakes>, at most <max_handshakes_per_source> from one
		 * address; each must finish within <handshake_ms>. */
		uint32_t max_handshakes;
		uint32_t max_handshakes_per_source;
		uint32_t handshake_ms;
		/* EM_TUNNEL_TLS: every tunnel runs TLS 1.3 with mutual node
		 * certificates of <tls> (tunnel/tls_pipe.h) around the session,
		 * whose HMAC handshake still runs inside; EM_TUNNEL_PLAIN: the HMAC
		 * handshake only, frames in clear. */
		enum em_tunnel_encryption encryption;
		struct {
			char ca_file[PATH_MAX];
			char cert_file[PATH_MAX];
			char key_file[PATH_MAX];
			/* Role cloud: the cluster CA (ca.key, ca.crt) this node
			 * signs edges' certificates with, for <cert_days> days. */
			char ca_dir[PATH_MAX];
			uint32_t cert_days;
			/* None of the three files was set: they are
			 * <data_dir>/tls/node.pem (certificate and key) and
			 * <data_dir>/tls/ca.crt (<ca_dir>/ca.crt on the cloud),
			 * enrolled from the cloud and renewed by this node. */
			bool managed;
		} tls;
	} tunnel;

	struct {
		char address[256]; /* "host:port" of the cloud node, "" if none */
	} cloud;

	/* Cloud role: the Router (KubeEdge's rules.kubeedge.io Rules) serves
	 * HTTP/1.1 on <listen> (family 0: off; set by the file or, on the
	 * cloud, EM_CONFIG_ROUTER_DEFAULT) and gives an edge <timeout_ms>
	 * without a byte before answering 504. With <tls.cert_file> set (and
	 * <tls.key_file>: both or neither, cloud role only) <listen> serves
	 * HTTPS instead: at most <tls.max_connections> TLS connections at once,
	 * each with <tls.handshake_ms> to finish its handshake (and, once the
	 * Router closed its side, to take what is left of the response). */
	struct {
		struct em_addr listen;
		bool listen_set; /* the file named router.listen */
		uint32_t timeout_ms;
		struct {
			char cert_file[PATH_MAX]; /* PEM chain, leaf first; "" = plain HTTP */
			char key_file[PATH_MAX];  /* PEM private key, unencrypted */
			uint32_t handshake_ms;
			uint32_t max_connections;
		} tls;
	} router;

	/* The admin listener: Prometheus /metrics, /healthz and /readyz over
	 * HTTP on <listen> (family 0: off). Defaulted, an address in use is
	 * logged and the daemon goes on without it; named in the file
	 * (<listen_set>), it is an error at start. */
	struct {
		struct em_addr listen;
		bool listen_set;
	} admin;

	/* Connect-time balancing (engine/fastpath.h), restart-only: <mode>, and
	 * the cgroup v2 directory whose processes' connects it acts on. */
	struct {
		enum em_fastpath_mode mode;
		char cgroup[PATH_MAX];
	} fastpath;

	struct {
		/* Cloud role: a directory of manifest files watched and applied
		 * (store/manifest_dir.h); "" for none. */
		char manifests_dir[PATH_MAX];
		/* Cloud role: the Kubernetes API watched (store/kube.h). <server>
		 * "" is off; "in-cluster" means the service account's address,
		 * token and CA (store/kube.h says which). <token_file>, <ca_file>
		 * "" for none. */
		struct {
			char server[256];
			char token_file[PATH_MAX];
			char ca_file[PATH_MAX];
		} kubernetes;
	} controller;

	/* Kernel socket buffer sizes (SO_SNDBUF, SO_RCVBUF) of data-path
	 * sockets, 0 = left to the kernel's autotuning. They bound what a
	 * stalled peer parks in kernel memory per connection. */
	struct {
		uint32_t client_sndbuf, client_rcvbuf;
		uint32_t upstream_sndbuf, upstream_rcvbuf;
	} sockets;
	struct {
		uint32_t connect_ms;      /* upstream connect */
		uint32_t idle_ms;         /* no bytes either way */
		uint32_t request_head_ms; /* HTTP request head must arrive within */
		uint32_t sniff_ms;        /* client silent this long: raw TCP */
		uint32_t shutdown_ms;     /* drain on exit */
	} timeouts;
};

/* Reads and validates <path>: em_config_parse, then em_config_check_host.
 * Returns 0 and a new config in <*out>, or -errno (-EINVAL for a bad value)
 * with a one-line message in <err> naming the file, the key and what was
 * expected, e.g. "conf/edge.json: capture.port: expected integer 1..65535".
 * A JSON syntax error names the line. Unknown keys are errors. The daemon's
 * -t, its start and every SIGHUP reload go through here. */
int em_config_load(const char *path, struct em_config **out, char *err, size_t errlen);

/* As em_config_load from text in memory; <name> is used in messages. Checks
 * the text alone (no file system, no interfaces), so it refuses: a
 * tunnel.cluster_key shorter than 32 bytes or equal to the placeholder of
 * the shipped configs; with capture.enabled, a service range shorter than
 * /8 (IPv4) or /32 (IPv6). */
int em_config_parse(const char *name, const char *text, size_t len, struct em_config **out,
                    char *err, size_t errlen);

/* Checks <cfg> against this host: api_socket must not name an existing file
 * that is not a unix socket (it would otherwise be unlinked to bind); with
 * capture.enabled, no capture.service_cidrs range may contain an address
 * of one of this node's interfaces (getifaddrs); with router.tls.cert_file
 * set, that file must be readable and start with a PEM certificate, and
 * router.tls.key_file must hold an unencrypted PEM private key matching
 * it. Returns 0, or -EEXIST / -EINVAL / -errno of getifaddrs or of opening
 * a file, with a one-line message in <err> naming cfg->path, the key and
 * the reason. Reads only. */
int em_config_check_host(const struct em_config *cfg, char *err, size_t errlen);

void em_config_free(struct em_config *cfg);

/* Config values a reload cannot change without a restart (role, node_name,
 * data_dir, api_socket, workers, every capture key, listeners' addresses,
 * tunnel.listen, router.listen, every router.tls key: the certificate
 * files are read at start only, so a renewed certificate under the same
 * names needs a restart too).
 * Returns NULL when <next> may replace <cur>, else the name of the first key
 * that differs. */
const char *em_config_restart_key(const struct em_config *cur, const struct em_config *next);

/* The live config, published with RCU like the service table (same reader
 * rules, see store/table.h). em_config_current is never NULL once the daemon
 * has published its first config. */
const struct em_config *em_config_current(void);
/* Sync thread only: publishes <cfg> and frees the previous one after a grace
 * period. The caller must not be an online RCU reader. */
void em_config_publish(struct em_config *cfg);

#endif

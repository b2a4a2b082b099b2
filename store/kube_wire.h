/* What the Kubernetes API watcher (store/kube.h) reads, without the I/O: the
 * server URL, a watch response's body cut into events (one JSON object per
 * line, inside chunked framing), and one event decoded.
 *
 * Sans-I/O and bounded: a line longer than its limit is an error, never a
 * reason to grow. Runs on any thread; nothing here is shared. */
#ifndef EM_STORE_KUBE_WIRE_H
#define EM_STORE_KUBE_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto/http1.h"

struct cJSON;

/* controller.kubernetes.server's value for the pod's own service account:
 * https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT with the token
 * and CA below (unless token_file / ca_file say otherwise). */
#define EM_KUBE_IN_CLUSTER       "in-cluster"
#define EM_KUBE_SA_DIR           "/var/run/secrets/kubernetes.io/serviceaccount"
#define EM_KUBE_IN_CLUSTER_TOKEN EM_KUBE_SA_DIR "/token"
#define EM_KUBE_IN_CLUSTER_CA    EM_KUBE_SA_DIR "/ca.crt"

/* One event (one line of a watch stream) may be at most this long; longer
 * is an error and the stream is dropped. */
#define EM_KUBE_MAX_LINE (16u * 1024 * 1024)

struct em_kube_url {
	bool tls;            /* https */
	char host[254];      /* DNS name or IP address, IPv6 without brackets */
	uint16_t port;       /* 443 / 80 when the URL names none */
	char prefix[256];    /* path before /api, without a trailing '/' ("" mostly) */
	char authority[264]; /* Host header: host[:port], IPv6 in brackets */
};

/* Parses "http[s]://host[:port][/path]": host a DNS name, an IPv4 address or
 * an IPv6 address in brackets; no user info, query or fragment. Returns 0,
 * or -EINVAL (nothing else said: the config names what it expects). */
int em_kube_url_parse(const char *s, struct em_kube_url *out);

/* A watch response body cut into lines. All-zero plus em_kube_lines_init is
 * the initial state; em_kube_lines_free releases the line buffer. */
struct em_kube_lines {
	struct em_http1_body body;
	char *buf;
	size_t len, cap;
	size_t max; /* longest line */
};

void em_kube_lines_init(struct em_kube_lines *l, const struct em_http1_head *h, size_t max);
void em_kube_lines_free(struct em_kube_lines *l);

/* Called with each complete line, without its "\n" (and "\r"); <line> is
 * valid only during the call. Returns 0 to go on, or a negative code that
 * stops em_kube_lines_feed, which returns it. */
typedef int (*em_kube_line_fn)(void *arg, const char *line, size_t len);

/* Consumes response body bytes (<len> of <buf>, framing included: chunked,
 * Content-Length or until close) and calls <fn> for every line they
 * complete; empty lines are skipped. Resumable at any byte. Returns the
 * bytes consumed (fewer than <len> only when the body ended there), or
 * -EBADMSG (bad chunk framing), -EMSGSIZE (a line longer than <max>),
 * -ENOMEM, or <fn>'s code. Bytes of a line not yet complete are kept (at
 * most <max>) until the next call; a body that ends inside a line drops
 * them (em_kube_lines_partial tells). */
ssize_t em_kube_lines_feed(struct em_kube_lines *l, const char *buf, size_t len, em_kube_line_fn fn,
                           void *arg);

/* True once the body's framing says it ended (never for until-close). */
bool em_kube_lines_done(const struct em_kube_lines *l);
/* Bytes of an unfinished line held. */
size_t em_kube_lines_partial(const struct em_kube_lines *l);

enum em_kube_ev {
	EM_KUBE_ADDED = 0,
	EM_KUBE_MODIFIED,
	EM_KUBE_DELETED,
	EM_KUBE_BOOKMARK,
	EM_KUBE_ERROR,
};

struct em_kube_event {
	enum em_kube_ev type;
	struct cJSON *root;   /* the whole event; the caller frees it */
	struct cJSON *object; /* its "object", inside <root> */
	const char *rv;       /* object's metadata.resourceVersion, NULL if none */
	int code;             /* ERROR: the Status's "code" (410: Gone), else 0 */
	const char *message;  /* ERROR: the Status's "message", or "" */
};

/* Decodes one watch event line {"type": ..., "object": {...}}. Returns 0
 * with <ev> filled, or -EINVAL with the reason in <err> (not JSON, unknown
 * type, object missing or not an object) and nothing allocated. */
int em_kube_event_parse(const char *line, size_t len, struct em_kube_event *ev, char *err,
                        size_t errlen);


#endif

/* The control stream's two sides (store/control.h, tunnel/PROTOCOL.md 9). */
#include "store/control.h"

#include <cjson/cJSON.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "proto/clock.h"
#include "proto/log.h"
#include "store/api.h"
#include "store/beehive.h"
#include "store/changelog.h"
#include "store/config.h"
#include "store/k8s.h"
#include "store/store.h"

#define MOD "control"
/* An edge must register this soon after its stream opens. */
#define REGISTER_MS 10000u
/* Streams handed over by the workers and not yet taken. */
#define MAX_PENDING 1024u
/* The edge's objects from the cloud are marked with this origin, and its
 * last applied epoch and generation kept under this name. */
#define ORIGIN    "cloud"
#define KV_CLOUD  "cloud.applied"
#define REG_LABEL "edgemesh.io/registered"
/* Longest node name, namespace or name (a DNS subdomain). */
#define EM_K8S_NAME_MAX 253

enum { S_REGISTER, S_SNAPSHOT, S_LIVE };

struct edge;

/* Cloud: one edge's open stream. */
struct sess {
	int fd;
	int state;
	bool closing;   /* close once <out> is sent */
	bool need_mark; /* a sync marker is owed (registration answer) */
	/* The tunnel is a TLS cloud's unencrypted one: only a certificate
	 * request (an enrollment) is served on it. */
	bool enroll_only;
	const char *gone; /* the stream ended or failed (why), set while reading */
	struct edge *e; /* after registration */
	char node[EM_K8S_NAME_MAX + 1];
	struct em_addr src;
	struct em_buf in, out;
	size_t out_off;
	uint64_t deadline_ms; /* S_REGISTER */
	uint64_t sent_gen;    /* changes through this generation are queued */
	/* Changes after <sent_gen> already queued: a large generation is sent
	 * in parts as the edge reads, and resumed after these. */
	uint64_t sent_skip;
	char reg_id[64];      /* msg_id of the registration, the markers' parent */
	/* S_SNAPSHOT: the kind being sent and the last key sent of it. */
	int snap_kind;
	char snap_after[600];
	uint64_t snap_gen;
};

/* Cloud: what is known of an edge, kept after it disconnects. */
struct edge {
	char node[EM_K8S_NAME_MAX + 1];
	struct em_addr addr;
	uint16_t tunnel_port;
	char version[64];
	int64_t start_time;
	int64_t since_ms, last_seen_ms; /* wall clock */
	uint64_t sent, acked;
	struct sess *s;
};

struct pending {
	int fd;
	bool enroll_only;
	char node[EM_K8S_NAME_MAX + 1];
	struct em_addr src;
};

/* Edge: a delete waiting in the current run. */
struct del {
	int kind;
	char *ns, *name;
};

/* A snapshot page as text, shared by the edges that resync at the same
 * time: the messages of at most EM_CTL_PAGE objects of <kind> after key
 * <after>, read at store generation <gen> (valid while the store is at
 * it). */
struct page {
	int kind;
	char after[600], last[600];
	uint64_t gen;
	uint64_t used; /* for the least recently used */
	unsigned n;
	struct em_buf text;
};

struct em_ctl {
	bool cloud;
	struct em_store *st;
	struct em_clog *clog;
	char node[EM_K8S_NAME_MAX + 1];
	char epoch[40]; /* cloud: this run's; edge: of the generation applied */
	uint64_t msg_seq;
	int wake_fd;
	uint64_t now_ms;

	/* cloud */
	pthread_mutex_t mu; /* guards <pend> */
	struct pending *pend;
	size_t n_pend;
	struct sess **sess;
	size_t n_sess, cap_sess;
	struct edge **edges;
	size_t n_edges, cap_edges;
	cJSON **reg; /* Nodes of this turn's registrations (store_reg_nodes) */
	size_t n_reg, cap_reg;
	struct page pages[32]; /* snapshot pages, shared by edges resyncing together */
	uint64_t page_clock;

	/* edge */
	char address[256];
	bool resolving; /* a lookup of cloud.address runs (getaddrinfo_a) */
	struct gaicb gai;
	struct addrinfo gai_hints;
	char gai_host[256], gai_port[8];
	uint16_t tunnel_port;
	int64_t start_time;
	uint32_t rc_min, rc_max, backoff;
	uint64_t rng;
	em_ctl_dial_fn dial;
	void *dial_ctx;
	int fd;
	struct em_buf in, out;
	size_t out_off;
	uint64_t next_dial_ms;
	bool up; /* a marker arrived on this stream */
	uint64_t gen;
	cJSON **objs;
	size_t n_objs, cap_objs;
	struct del *dels;
	size_t n_dels, cap_dels;
	bool in_snap;
	char **snap_keys;
	size_t n_snap, cap_snap;
	uint64_t logged_refusals;

	/* certificates */
	struct em_ctl_cert_ops cert; /* guarded by <mu>, as are its calls */
	bool revs_dirty;             /* ops changed: tell them the list (under <mu>) */
	struct em_ctl_revocation *revs;
	size_t n_revs;
	bool cert_pending;     /* edge: a request is out on this stream */
	bool enrolling;        /* edge: the request out is an enrollment */
	uint64_t next_cert_ms; /* edge: when to ask ops->request again */
	uint64_t c_certs_signed, c_certs_refused, c_certs_installed;

	/* counters */
	uint64_t c_sessions, c_registered, c_refused, c_snapshots, c_msgs_in, c_msgs_out;
	uint64_t c_bytes_out, c_protocol_errors, c_applied, c_apply_failures, c_acks;
	uint64_t c_page_hits;
};

/* Wakes the sync thread's poll (any thread). */
static void wake(struct em_ctl *c)
{
	uint64_t one = 1;
	if (write(c->wake_fd, &one, sizeof(one)) < 0)
		EM_DEBUG(MOD, "wake: %s", strerror(errno));
}

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Message ids: the run's UUID with its last 12 digits counting. */
static void next_id(struct em_ctl *c, char id[40])
{
	snprintf(id, 40, "%.24s%012llx", c->epoch, (unsigned long long)(++c->msg_seq & 0xffffffffffffULL));
}

/* Appends <m> and a newline to <out> (the control messages: registers,
 * markers, acks, errors; object changes go through append_change). */
static int append_msg(struct em_ctl *c, struct em_buf *out, struct em_bh_msg *m)
{
	if (!m->msg_id[0])
		next_id(c, m->msg_id);
	m->timestamp_ms = wall_ms();
	size_t len;
	char *text = em_bh_encode(m, &len);
	if (!text)
		return -ENOMEM;
	int rc = em_buf_append(out, text, len);
	rc = rc ? rc : em_buf_append(out, "\n", 1);
	cJSON_free(text);
	c->c_msgs_out++;
	return rc;
}

/* Appends <s> as the body of a JSON string (quotes and backslashes escaped,
 * control bytes as \u00XX). Store keys are DNS names and never need it; a
 * key read back from a damaged or foreign database might. */
static int append_escaped(struct em_buf *out, const char *s)
{
	const char *run = s;
	int rc = 0;
	for (; *s && !rc; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch >= 0x20 && ch != '"' && ch != '\\')
			continue;
		char esc[8];
		int n = snprintf(esc, sizeof(esc), ch == '"' || ch == '\\' ? "\\%c" : "\\u%04x", ch);
		rc = em_buf_append(out, run, (size_t)(s - run));
		rc = rc ? rc : em_buf_append(out, esc, (size_t)n);
		run = s + 1;
	}
	return rc ? rc : em_buf_append(out, run, (size_t)(s - run));
}

/* An object change, written straight as text (the snapshot and the pushes
 * send millions of these; building a tree for each would cost more than the
 * rest of the work): the same members in the same order as em_bh_encode
 * gives, with <raw>, the stored compact JSON ("null" for a delete), as the
 * content. */
static int append_change(struct em_ctl *c, struct em_buf *out, enum em_bh_op op, const char *key,
                         uint64_t gen, const char *raw, int64_t now)
{
	char id[40], head[256];
	next_id(c, id);
	int n = snprintf(head, sizeof(head),
	                 "{\"header\":{\"msg_id\":\"%s\",\"timestamp\":%lld,\"resourceversion\":"
	                 "\"%llu\"},\"route\":{\"source\":\"edgecontroller\",\"group\":"
	                 "\"resource\",\"operation\":\"%s\",\"resource\":\"",
	                 id, (long long)now, (unsigned long long)gen, em_bh_op_name(op));
	int rc = em_buf_append(out, head, (size_t)n);
	rc = rc ? rc : append_escaped(out, key);
	rc = rc ? rc : em_buf_append(out, "\"},\"content\":", 13);
	rc = rc ? rc : em_buf_append(out, raw, strlen(raw));
	rc = rc ? rc : em_buf_append(out, "}\n", 2);
	c->c_msgs_out++;
	return rc;
}

/* A marker: route control/response/sync, content {epoch, generation, phase}. */
static int append_mark(struct em_ctl *c, struct sess *s, const char *phase, uint64_t gen)
{
	struct em_bh_msg m = {.op = EM_BH_RESPONSE};
	snprintf(m.source, sizeof(m.source), "edgecontroller");
	snprintf(m.group, sizeof(m.group), "control");
	snprintf(m.resource, sizeof(m.resource), "sync");
	snprintf(m.parent_id, sizeof(m.parent_id), "%s", s->reg_id);
	snprintf(m.resource_version, sizeof(m.resource_version), "%llu", (unsigned long long)gen);
	m.content = cJSON_CreateObject();
	if (!m.content || !cJSON_AddStringToObject(m.content, "epoch", c->epoch) ||
	    !cJSON_AddNumberToObject(m.content, "generation", (double)gen) ||
	    !cJSON_AddStringToObject(m.content, "phase", phase)) {
		cJSON_Delete(m.content);
		return -ENOMEM;
	}
	int rc = append_msg(c, &s->out, &m);
	cJSON_Delete(m.content);
	return rc;
}

static int append_error(struct em_ctl *c, struct em_buf *out, const char *parent, const char *text)
{
	struct em_bh_msg m = {.op = EM_BH_ERROR};
	snprintf(m.source, sizeof(m.source), "%s", c->cloud ? "edgecontroller" : "edgemesh");
	snprintf(m.group, sizeof(m.group), "control");
	snprintf(m.parent_id, sizeof(m.parent_id), "%s", parent ? parent : "");
	m.content = cJSON_CreateString(text);
	int rc = m.content ? append_msg(c, out, &m) : -ENOMEM;
	cJSON_Delete(m.content);
	return rc;
}

/* Sends what <out> holds past <*off>; false when the socket failed. */
static bool flush_out(int fd, struct em_buf *out, size_t *off, uint64_t *bytes)
{
	while (*off < out->len) {
		ssize_t n = send(fd, out->data + *off, out->len - *off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			*off += (size_t)n;
			*bytes += (uint64_t)n;
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		return false;
	}
	if (*off == out->len) {
		/* Drained: a buffer grown for a snapshot or a burst goes back. */
		if (out->cap > (64u << 10))
			em_buf_free(out);
		out->len = 0;
		*off = 0;
	} else if (*off > out->len / 2) {
		memmove(out->data, out->data + *off, out->len - *off);
		out->len -= *off;
		*off = 0;
	}
	return true;
}

/* Reads what <fd> has into <in>, bounded by one message and its newline.
 * Returns 1 on progress or nothing to read, 0 on EOF, -1 on error or a
 * message too long. */
static int read_in(int fd, struct em_buf *in)
{
	char buf[65536];
	for (int k = 0; k < 16; k++) {
		if (in->len > EM_BH_MAX_MESSAGE + 1)
			return -1;
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n > 0) {
			if (em_buf_append(in, buf, (size_t)n))
				return -1;
			continue;
		}
		if (n == 0)
			return 0;
		if (errno == EINTR)
			continue;
		return errno == EAGAIN || errno == EWOULDBLOCK ? 1 : -1;
	}
	return 1;
}

/* Calls <fn> for each complete line of <in> and drops them; stops at the
 * first non-zero return. A line over the bound fails. */
static int each_line(struct em_buf *in, int (*fn)(void *arg, const char *line, size_t len),
                     void *arg)
{
	size_t off = 0;
	int rc = 0;
	while (off < in->len) {
		char *nl = memchr(in->data + off, '\n', in->len - off);
		if (!nl)
			break;
		size_t len = (size_t)(nl - (in->data + off));
		if (len && (rc = fn(arg, in->data + off, len)))
			break;
		off += len + 1;
	}
	if (!rc && in->len - off > EM_BH_MAX_MESSAGE)
		rc = -EMSGSIZE;
	if (off && in->len > off) /* nothing to move (or no buffer yet): no call */
		memmove(in->data, in->data + off, in->len - off);
	in->len -= off;
	return rc;
}

static int grow(void **v, size_t *cap, size_t need, size_t size);

/* ---- cloud ---------------------------------------------------------------- */

static struct edge *edge_get(struct em_ctl *c, const char *node)
{
	for (size_t i = 0; i < c->n_edges; i++)
		if (strcmp(c->edges[i]->node, node) == 0)
			return c->edges[i];
	if (c->n_edges == c->cap_edges) {
		size_t cap = c->cap_edges ? c->cap_edges * 2 : 16;
		struct edge **v = realloc(c->edges, cap * sizeof(*v));
		if (!v)
			return NULL;
		c->edges = v;
		c->cap_edges = cap;
	}
	struct edge *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	snprintf(e->node, sizeof(e->node), "%s", node);
	c->edges[c->n_edges++] = e;
	return e;
}

static void sess_close(struct em_ctl *c, size_t i, const char *why)
{
	struct sess *s = c->sess[i];
	if (s->e) {
		EM_INFO(MOD, "edge %s (%s) disconnected: %s", s->node,
		        em_addr_format(&s->src, false, (char[EM_ADDR_STRLEN]){0}, EM_ADDR_STRLEN),
		        why ? why : "closed here");
		s->e->s = NULL;
		s->e->last_seen_ms = wall_ms();
	} else if (why) {
		EM_WARN(MOD, "control stream of %s closed before it registered: %s", s->node, why);
	}
	close(s->fd);
	em_buf_free(&s->in);
	em_buf_free(&s->out);
	free(s);
	c->sess[i] = c->sess[--c->n_sess];
}

/* The edge's Node: made (or brought up to date) from its registration,
 * unless the store has that Node from another source. */
struct node_seen {
	bool found, ours;
	char ip[EM_ADDR_STRLEN];
	char port[8];
};

static void node_visit(void *arg, const char *json)
{
	struct node_seen *ns = arg;
	cJSON *o = cJSON_Parse(json);
	ns->found = true;
	const cJSON *md = cJSON_GetObjectItemCaseSensitive(o, "metadata");
	const cJSON *lb = cJSON_GetObjectItemCaseSensitive(md, "labels");
	const cJSON *l = cJSON_GetObjectItemCaseSensitive(lb, REG_LABEL);
	ns->ours = cJSON_IsString(l) && strcmp(l->valuestring, "true") == 0;
	const cJSON *an = cJSON_GetObjectItemCaseSensitive(md, "annotations");
	const cJSON *p = cJSON_GetObjectItemCaseSensitive(an, EM_NODE_TUNNEL_PORT_ANNOTATION);
	if (cJSON_IsString(p))
		snprintf(ns->port, sizeof(ns->port), "%s", p->valuestring);
	const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "status");
	const cJSON *addrs = cJSON_GetObjectItemCaseSensitive(st, "addresses");
	const cJSON *a;
	cJSON_ArrayForEach(a, addrs)
	{
		const cJSON *t = cJSON_GetObjectItemCaseSensitive(a, "type");
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(a, "address");
		if (cJSON_IsString(t) && strcmp(t->valuestring, "InternalIP") == 0 &&
		    cJSON_IsString(v))
			snprintf(ns->ip, sizeof(ns->ip), "%s", v->valuestring);
	}
	cJSON_Delete(o);
}

static void register_node(struct em_ctl *c, struct sess *s)
{
	struct node_seen seen = {0};
	char ip[EM_ADDR_STRLEN], port[8] = "";
	em_addr_format(&s->src, false, ip, sizeof(ip));
	if (s->e->tunnel_port)
		snprintf(port, sizeof(port), "%u", s->e->tunnel_port);
	em_store_list(c->st, EM_KIND_NODE, NULL, s->node, node_visit, &seen);
	if (seen.found && !seen.ours)
		return; /* the source of truth has it */
	if (seen.found && strcmp(seen.ip, ip) == 0 && strcmp(seen.port, port) == 0)
		return;
	cJSON *o = cJSON_CreateObject();
	cJSON *md = cJSON_AddObjectToObject(o, "metadata");
	cJSON *lb = cJSON_AddObjectToObject(md, "labels");
	cJSON *st = cJSON_AddObjectToObject(o, "status");
	cJSON *addrs = cJSON_AddArrayToObject(st, "addresses");
	cJSON *a = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "apiVersion", "v1");
	cJSON_AddStringToObject(o, "kind", "Node");
	cJSON_AddStringToObject(md, "name", s->node);
	cJSON_AddStringToObject(lb, REG_LABEL, "true");
	/* An edge without a tunnel listener is reached through the cloud. */
	cJSON *an = cJSON_AddObjectToObject(md, "annotations");
	if (port[0])
		cJSON_AddStringToObject(an, EM_NODE_TUNNEL_PORT_ANNOTATION, port);
	else
		cJSON_AddStringToObject(an, EM_NODE_RELAY_ANNOTATION, "true");
	cJSON_AddStringToObject(a, "type", "InternalIP");
	cJSON_AddStringToObject(a, "address", ip);
	cJSON_AddItemToArray(addrs, a);
	/* Two registrations of one node in a turn: the later one counts. */
	for (size_t i = 0; i < c->n_reg; i++) {
		const cJSON *nm = cJSON_GetObjectItem(cJSON_GetObjectItem(c->reg[i], "metadata"),
		                                      "name");
		if (strcmp(nm->valuestring, s->node) == 0) {
			cJSON_Delete(c->reg[i]);
			c->reg[i] = c->reg[--c->n_reg];
			break;
		}
	}
	if (grow((void **)&c->reg, &c->cap_reg, c->n_reg + 1, sizeof(*c->reg))) {
		cJSON_Delete(o);
		return;
	}
	c->reg[c->n_reg++] = o;
	EM_INFO(MOD, "edge %s: Node %s at %s%s%s", s->node, seen.found ? "updated" : "made", ip,
	        port[0] ? ", tunnel port " : "", port);
}

static int sess_fail(struct em_ctl *c, struct sess *s, const char *why)
{
	c->c_protocol_errors++;
	append_error(c, &s->out, s->reg_id, why);
	s->closing = true;
	EM_WARN(MOD, "control stream of %s: %s", s->node, why);
	return 1;
}

static int append_revs(struct em_ctl *c, struct em_buf *out);

static void on_register(struct em_ctl *c, struct sess *s, struct em_bh_msg *m)
{
	const cJSON *ct = m->content;
	const cJSON *node = cJSON_GetObjectItemCaseSensitive(ct, "node");
	const cJSON *port = cJSON_GetObjectItemCaseSensitive(ct, "tunnel_port");
	const cJSON *ver = cJSON_GetObjectItemCaseSensitive(ct, "version");
	const cJSON *start = cJSON_GetObjectItemCaseSensitive(ct, "start_time");
	const cJSON *ep = cJSON_GetObjectItemCaseSensitive(ct, "epoch");
	const cJSON *gen = cJSON_GetObjectItemCaseSensitive(ct, "generation");
	snprintf(s->reg_id, sizeof(s->reg_id), "%s", m->msg_id);
	if (!cJSON_IsString(node) || strcmp(node->valuestring, s->node) != 0) {
		sess_fail(c, s, "register: content.node must be the node name the tunnel "
		                "authenticated");
		return;
	}
	if (!cJSON_IsNumber(port) || port->valuedouble < 0 || port->valuedouble > 65535 ||
	    !cJSON_IsString(ep) || strlen(ep->valuestring) > 36 || !cJSON_IsNumber(gen) ||
	    gen->valuedouble < 0 || gen->valuedouble > 9007199254740992.0) {
		sess_fail(c, s, "register: content needs tunnel_port (0..65535), epoch (string) "
		                "and generation (integer)");
		return;
	}
	struct edge *e = edge_get(c, s->node);
	if (!e) {
		s->closing = true;
		return;
	}
	if (e->s && e->s != s) {
		/* A newer stream of the same edge (it redialled) wins. */
		for (size_t i = 0; i < c->n_sess; i++)
			if (c->sess[i] == e->s) {
				e->s->e = NULL;
				e->s->closing = true;
				e->s->out.len = e->s->out_off = 0;
			}
	}
	e->s = s;
	s->e = e;
	e->addr = s->src;
	e->tunnel_port = (uint16_t)port->valuedouble;
	snprintf(e->version, sizeof(e->version), "%s",
	         cJSON_IsString(ver) ? ver->valuestring : "");
	e->start_time = cJSON_IsNumber(start) ? (int64_t)start->valuedouble : 0;
	e->since_ms = e->last_seen_ms = wall_ms();
	e->acked = 0;
	c->c_registered++;
	uint64_t g = (uint64_t)gen->valuedouble;
	bool same = strcmp(ep->valuestring, c->epoch) == 0;
	struct em_clog_stats cs;
	em_clog_stats(c->clog, &cs);
	char ip[EM_ADDR_STRLEN];
	if (same && g >= cs.floor && g <= cs.newest) {
		s->state = S_LIVE;
		s->sent_gen = g;
		s->need_mark = true;
		EM_INFO(MOD, "edge %s (%s) registered at generation %llu: sending %llu later ones",
		        s->node, em_addr_format(&s->src, false, ip, sizeof(ip)),
		        (unsigned long long)g, (unsigned long long)(cs.newest - g));
	} else {
		s->state = S_SNAPSHOT;
		s->snap_kind = 0;
		s->snap_after[0] = 0;
		s->snap_gen = cs.newest;
		c->c_snapshots++;
		EM_INFO(MOD, "edge %s (%s) registered (%s): sending a snapshot of generation %llu",
		        s->node, em_addr_format(&s->src, false, ip, sizeof(ip)),
		        !same ? "new to this cloud run" : "behind the change log",
		        (unsigned long long)cs.newest);
		append_mark(c, s, "snapshot-begin", s->snap_gen);
	}
	if (append_revs(c, &s->out))
		s->closing = true;
	register_node(c, s);
}


/* ---- certificates and revocations (both sides) ---------------------------- */

#define KV_REVOKED "tls.revoked"
#define KV_CERT    "tls.issued/" /* + node: when the cloud last signed for it */
/* Revocations kept at most (the named value holds them all as JSON). */
#define MAX_REVS 4096u

static struct em_ctl_revocation *rev_find(struct em_ctl *c, const char *node)
{
	for (size_t i = 0; i < c->n_revs; i++)
		if (strcmp(c->revs[i].node, node) == 0)
			return &c->revs[i];
	return NULL;
}

static cJSON *revs_json(const struct em_ctl *c)
{
	cJSON *o = cJSON_CreateObject();
	cJSON *a = o ? cJSON_AddArrayToObject(o, "revoked") : NULL;
	for (size_t i = 0; a && i < c->n_revs; i++) {
		cJSON *e = cJSON_CreateObject();
		if (!e || !cJSON_AddItemToArray(a, e) ||
		    !cJSON_AddStringToObject(e, "node", c->revs[i].node) ||
		    !cJSON_AddNumberToObject(e, "at", (double)c->revs[i].at))
			a = NULL;
	}
	if (!a) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

/* Replaces the list with the one of <o> ({"revoked": [{node, at}]}).
 * Returns 0 or -EINVAL (the list stays). */
static int revs_from_json(struct em_ctl *c, const cJSON *o)
{
	const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "revoked");
	int n = cJSON_GetArraySize(a);
	if (!cJSON_IsArray(a) || n < 0 || (unsigned)n > MAX_REVS)
		return -EINVAL;
	struct em_ctl_revocation *v = n ? calloc((size_t)n, sizeof(*v)) : NULL;
	if (n && !v)
		return -ENOMEM;
	size_t k = 0;
	const cJSON *e;
	cJSON_ArrayForEach(e, a)
	{
		const cJSON *node = cJSON_GetObjectItemCaseSensitive(e, "node");
		const cJSON *at = cJSON_GetObjectItemCaseSensitive(e, "at");
		if (!cJSON_IsString(node) || !node->valuestring[0] ||
		    strlen(node->valuestring) > EM_CTL_NODE_MAX || !cJSON_IsNumber(at) ||
		    at->valuedouble < 0 || at->valuedouble > 1e15) {
			free(v);
			return -EINVAL;
		}
		snprintf(v[k].node, sizeof(v[k].node), "%s", node->valuestring);
		v[k++].at = (int64_t)at->valuedouble;
	}
	free(c->revs);
	c->revs = v;
	c->n_revs = k;
	return 0;
}

static int revs_save(struct em_ctl *c)
{
	cJSON *o = revs_json(c);
	char *t = o ? cJSON_PrintUnformatted(o) : NULL;
	int rc = t ? em_store_kv_set(c->st, KV_REVOKED, t) : -ENOMEM;
	cJSON_free(t);
	cJSON_Delete(o);
	return rc;
}

static void revs_load(struct em_ctl *c)
{
	static char buf[MAX_REVS * (EM_CTL_NODE_MAX + 40) + 64];
	if (em_store_kv_get(c->st, KV_REVOKED, buf, sizeof(buf)) != 1)
		return;
	cJSON *o = cJSON_Parse(buf);
	if (!o || revs_from_json(c, o))
		EM_WARN(MOD, "the stored certificate revocations do not parse: ignored");
	cJSON_Delete(o);
}

static void revs_tell(struct em_ctl *c)
{
	pthread_mutex_lock(&c->mu);
	if (c->cert.revoked)
		c->cert.revoked(c->cert.ctx, c->revs, c->n_revs);
	pthread_mutex_unlock(&c->mu);
}

/* Cloud: route control/update/revocations with the whole list. */
static int append_revs(struct em_ctl *c, struct em_buf *out)
{
	struct em_bh_msg m = {.op = EM_BH_UPDATE};
	snprintf(m.source, sizeof(m.source), "edgecontroller");
	snprintf(m.group, sizeof(m.group), "control");
	snprintf(m.resource, sizeof(m.resource), "revocations");
	if (!(m.content = revs_json(c)))
		return -ENOMEM;
	int rc = append_msg(c, out, &m);
	cJSON_Delete(m.content);
	return rc;
}

void em_ctl_set_cert(struct em_ctl *c, const struct em_ctl_cert_ops *ops)
{
	pthread_mutex_lock(&c->mu);
	c->cert = ops ? *ops : (struct em_ctl_cert_ops){0};
	c->revs_dirty = ops != NULL;
	pthread_mutex_unlock(&c->mu);
	wake(c);
}

int em_ctl_revoke(struct em_ctl *c, const char *node, char *err, size_t errlen)
{
	if (!c->cloud) {
		snprintf(err, errlen, "only the cloud revokes certificates");
		return -EINVAL;
	}
	if (!node[0] || strlen(node) > EM_CTL_NODE_MAX) {
		snprintf(err, errlen, "expected a node name of 1..%d bytes", EM_CTL_NODE_MAX);
		return -EINVAL;
	}
	struct em_ctl_revocation *r = rev_find(c, node);
	if (!r) {
		if (c->n_revs >= MAX_REVS) {
			snprintf(err, errlen, "%u revocations kept already", MAX_REVS);
			return -ENOSPC;
		}
		struct em_ctl_revocation *v = realloc(c->revs, (c->n_revs + 1) * sizeof(*v));
		if (!v) {
			snprintf(err, errlen, "out of memory");
			return -ENOMEM;
		}
		c->revs = v;
		r = &v[c->n_revs++];
		snprintf(r->node, sizeof(r->node), "%s", node);
	}
	r->at = (int64_t)time(NULL);
	char key[sizeof(KV_CERT) + EM_CTL_NODE_MAX];
	snprintf(key, sizeof(key), KV_CERT "%s", node);
	if (revs_save(c) || em_store_kv_set(c->st, key, "")) {
		snprintf(err, errlen, "the store could not record it");
		return -EIO;
	}
	EM_INFO(MOD, "certificates of %s issued until now are revoked; it may enroll again", node);
	revs_tell(c);
	for (size_t i = 0; i < c->n_sess; i++) {
		struct sess *s = c->sess[i];
		if (s->e && !s->closing && append_revs(c, &s->out))
			s->closing = true;
	}
	return 0;
}

/* Cloud: an edge asks for a certificate: its first over an unencrypted
 * tunnel (enrollment: once per node until revoked), or a renewal over its
 * TLS tunnel (the certificate it has proved the name already). */
static void on_cert(struct em_ctl *c, struct sess *s, struct em_bh_msg *m)
{
	const cJSON *node = cJSON_GetObjectItemCaseSensitive(m->content, "node");
	const cJSON *csr = cJSON_GetObjectItemCaseSensitive(m->content, "csr");
	char err[300], why[900], key[sizeof(KV_CERT) + EM_CTL_NODE_MAX], had[32] = "";
	if (!cJSON_IsString(node) || strcmp(node->valuestring, s->node) != 0 ||
	    !cJSON_IsString(csr)) {
		c->c_certs_refused++;
		sess_fail(c, s, "certificate: content needs node (the name the tunnel "
		                "authenticated) and csr (PEM)");
		return;
	}
	pthread_mutex_lock(&c->mu);
	bool signer = c->cert.sign != NULL;
	pthread_mutex_unlock(&c->mu);
	if (!signer) {
		c->c_certs_refused++;
		sess_fail(c, s, "certificate: this cloud signs no certificates (no tunnel.tls.ca_dir "
		                "or tunnels not encrypted)");
		return;
	}
	snprintf(key, sizeof(key), KV_CERT "%s", s->node);
	if (s->enroll_only && em_store_kv_get(c->st, key, had, sizeof(had)) == 1 && had[0]) {
		c->c_certs_refused++;
		EM_WARN(MOD, "enrollment of %s (%s) refused: it was issued a certificate already",
		        s->node, s->src.family ? "over the cluster key" : "?");
		snprintf(why, sizeof(why),
		         "certificate: node %s was issued a certificate already; renewals go over "
		         "its TLS tunnel, and `meshctl cert revoke %s` on the cloud lets it "
		         "enroll again",
		         s->node, s->node);
		sess_fail(c, s, why);
		return;
	}
	int64_t now = (int64_t)time(NULL);
	const struct em_ctl_revocation *r = rev_find(c, s->node);
	if (r && now <= r->at)
		now = r->at + 1; /* strictly after the revocation */
	char *cert = NULL, *ca = NULL;
	int rc = -ENOTSUP;
	snprintf(err, sizeof(err), "this cloud signs no certificates");
	pthread_mutex_lock(&c->mu);
	if (c->cert.sign)
		rc = c->cert.sign(c->cert.ctx, s->node, csr->valuestring, strlen(csr->valuestring),
		                  now, &cert, &ca, err, sizeof(err));
	pthread_mutex_unlock(&c->mu);
	if (rc) {
		c->c_certs_refused++;
		EM_WARN(MOD, "certificate request of %s refused: %s", s->node, err);
		snprintf(why, sizeof(why), "certificate: %s", err);
		sess_fail(c, s, why);
		return;
	}
	char when[32];
	snprintf(when, sizeof(when), "%lld", (long long)now);
	if (em_store_kv_set(c->st, key, when)) {
		free(cert);
		free(ca);
		sess_fail(c, s, "certificate: the cloud's store failed");
		return;
	}
	struct em_bh_msg a = {.op = EM_BH_RESPONSE};
	snprintf(a.source, sizeof(a.source), "edgecontroller");
	snprintf(a.group, sizeof(a.group), "control");
	snprintf(a.resource, sizeof(a.resource), "certificate");
	snprintf(a.parent_id, sizeof(a.parent_id), "%s", m->msg_id);
	a.content = cJSON_CreateObject();
	if (!a.content || !cJSON_AddStringToObject(a.content, "cert", cert) ||
	    !cJSON_AddStringToObject(a.content, "ca", ca) || append_msg(c, &s->out, &a))
		s->closing = true;
	cJSON_Delete(a.content);
	free(cert);
	free(ca);
	c->c_certs_signed++;
	EM_INFO(MOD, "signed a certificate for %s (%s)", s->node,
	        s->enroll_only ? "enrollment over the cluster key" : "renewal over its TLS tunnel");
}

/* Edge: a certificate request when one is due. */
static int edge_cert_request(struct em_ctl *c)
{
	c->next_cert_ms = c->now_ms + 60000;
	if (c->cert_pending)
		return 0;
	bool enrolling = false;
	char *csr = NULL;
	pthread_mutex_lock(&c->mu);
	if (c->cert.request)
		csr = c->cert.request(c->cert.ctx, &enrolling);
	pthread_mutex_unlock(&c->mu);
	if (!csr)
		return 0;
	struct em_bh_msg m = {.op = EM_BH_QUERY};
	snprintf(m.source, sizeof(m.source), "edgemesh");
	snprintf(m.group, sizeof(m.group), "control");
	snprintf(m.resource, sizeof(m.resource), "certificate");
	m.content = cJSON_CreateObject();
	int rc = m.content && cJSON_AddStringToObject(m.content, "node", c->node) &&
	                         cJSON_AddStringToObject(m.content, "csr", csr)
	                 ? append_msg(c, &c->out, &m)
	                 : -ENOMEM;
	cJSON_Delete(m.content);
	free(csr);
	if (!rc) {
		c->cert_pending = true;
		c->enrolling = enrolling;
		EM_INFO(MOD, "asked the cloud for a certificate (%s)",
		        enrolling ? "enrollment with the cluster key" : "renewal");
	}
	return rc;
}

/* Edge: the cloud's answer to the request. */
static int edge_cert_answer(struct em_ctl *c, const struct em_bh_msg *m)
{
	const cJSON *cert = cJSON_GetObjectItemCaseSensitive(m->content, "cert");
	const cJSON *ca = cJSON_GetObjectItemCaseSensitive(m->content, "ca");
	char err[300];
	if (!c->cert_pending || !cJSON_IsString(cert) || !cJSON_IsString(ca)) {
		EM_WARN(MOD, "certificate answer from the cloud %s",
		        c->cert_pending ? "without cert and ca" : "that was not asked for");
		return -EINVAL;
	}
	c->cert_pending = false;
	int rc = -ENOTSUP;
	snprintf(err, sizeof(err), "no installer");
	pthread_mutex_lock(&c->mu);
	if (c->cert.install)
		rc = c->cert.install(c->cert.ctx, cert->valuestring, ca->valuestring, err,
		                     sizeof(err));
	pthread_mutex_unlock(&c->mu);
	if (rc) {
		EM_WARN(MOD, "the cloud's certificate was not installed: %s", err);
		return rc;
	}
	c->c_certs_installed++;
	if (c->enrolling) {
		/* The tunnel this came over is closing (the engine moves to
		 * TLS): dial again at once. */
		c->backoff = 0;
	}
	return 0;
}

/* Edge: the cloud's revocation list. */
static int edge_revs(struct em_ctl *c, const struct em_bh_msg *m)
{
	int rc = revs_from_json(c, m->content);
	if (rc) {
		EM_WARN(MOD, "bad revocation list from the cloud");
		return rc;
	}
	if (revs_save(c))
		EM_WARN(MOD, "the revocation list could not be stored");
	revs_tell(c);
	return 0;
}

struct cloud_line_ctx {
	struct em_ctl *c;
	struct sess *s;
};

static int cloud_msg(void *arg, const char *line, size_t len)
{
	struct cloud_line_ctx *x = arg;
	struct em_ctl *c = x->c;
	struct sess *s = x->s;
	struct em_bh_msg m;
	char err[256], why[320];
	if (s->closing)
		return 1;
	c->c_msgs_in++;
	if (s->e)
		s->e->last_seen_ms = wall_ms();
	if (em_bh_decode(line, len, &m, err, sizeof(err))) {
		snprintf(why, sizeof(why), "bad message: %s", err);
		return sess_fail(c, s, why);
	}
	bool ctl = strcmp(m.group, "control") == 0 && strcmp(m.resource, "sync") == 0;
	if (strcmp(m.group, "control") == 0 && strcmp(m.resource, "certificate") == 0 &&
	    m.op == EM_BH_QUERY) {
		on_cert(c, s, &m);
	} else if (s->enroll_only && m.op != EM_BH_ERROR) {
		em_bh_free(&m);
		return sess_fail(c, s, "this tunnel is not encrypted: it serves a certificate "
		                       "request only");
	} else if (ctl && m.op == EM_BH_QUERY && s->state == S_REGISTER) {
		on_register(c, s, &m);
	} else if (ctl && m.op == EM_BH_RESPONSE && s->e) {
		const cJSON *g = cJSON_GetObjectItemCaseSensitive(m.content, "generation");
		if (!cJSON_IsNumber(g) || g->valuedouble < 0) {
			em_bh_free(&m);
			return sess_fail(c, s, "ack: content.generation must be an integer");
		}
		s->e->acked = (uint64_t)g->valuedouble;
		s->e->last_seen_ms = wall_ms();
		c->c_acks++;
	} else if (m.op == EM_BH_ERROR) {
		char *t = cJSON_IsString(m.content) ? m.content->valuestring : "?";
		EM_WARN(MOD, "edge %s reports: %.200s", s->node, t);
	} else {
		snprintf(why, sizeof(why), "unexpected message %s %.60s/%.100s%s", em_bh_op_name(m.op),
		         m.group, m.resource, s->state == S_REGISTER ? " before register" : "");
		em_bh_free(&m);
		return sess_fail(c, s, why);
	}
	em_bh_free(&m);
	return s->closing;
}

struct page_ctx {
	struct em_ctl *c;
	struct page *pg;
	int64_t now;
	int rc;
};

static int page_row(void *arg, const char *key, const char *json)
{
	struct page_ctx *p = arg;
	snprintf(p->pg->last, sizeof(p->pg->last), "%s", key);
	p->pg->n++;
	return p->rc = append_change(p->c, &p->pg->text, EM_BH_INSERT, key, p->pg->gen,
	                             json[0] ? json : "null", p->now);
}

/* The page of <kind> after <after>, from the cache or read now. NULL when
 * the store cannot be read or memory ran out. */
static const struct page *page_get(struct em_ctl *c, int kind, const char *after)
{
	struct em_store_stats ss;
	em_store_stats(c->st, &ss);
	struct page *victim = &c->pages[0];
	for (size_t i = 0; i < EM_ARRAY_SIZE(c->pages); i++) {
		struct page *pg = &c->pages[i];
		if (pg->text.data && pg->gen == ss.generation && pg->kind == kind &&
		    strcmp(pg->after, after) == 0) {
			pg->used = ++c->page_clock;
			c->c_page_hits++;
			return pg;
		}
		if (pg->used < victim->used)
			victim = pg;
	}
	struct page *pg = victim;
	pg->kind = kind;
	pg->gen = ss.generation;
	pg->n = 0;
	pg->last[0] = 0;
	pg->text.len = 0;
	pg->used = ++c->page_clock;
	snprintf(pg->after, sizeof(pg->after), "%s", after);
	struct page_ctx p = {c, pg, wall_ms(), 0};
	int rc = em_store_scan_after(c->st, (enum em_kind)kind, after, EM_CTL_PAGE, page_row, &p);
	if (rc || p.rc || (!pg->text.data && em_buf_append(&pg->text, "", 0))) {
		em_buf_free(&pg->text);
		pg->used = 0;
		return NULL;
	}
	return pg;
}

struct since_ctx {
	struct em_ctl *c;
	struct sess *s;
	uint64_t skip;       /* entries at the start that were queued already */
	uint64_t last_whole; /* generations through this one are queued whole */
	uint64_t cur;        /* generation of the entry being looked at */
	uint64_t in_cur;     /* entries of <cur> queued, before or now */
	int64_t now;
	int rc;
};

static int since_entry(void *arg, const struct em_clog_entry *e)
{
	struct since_ctx *x = arg;
	struct sess *s = x->s;
	if (e->generation != x->cur) {
		if (x->cur)
			x->last_whole = x->cur;
		x->cur = e->generation;
		x->in_cur = 0;
	}
	if (x->skip) {
		x->skip--;
		x->in_cur++;
		return 0;
	}
	if (s->out.len - s->out_off >= EM_CTL_OUT_HIGH)
		return 1; /* the rest when the edge has read this */
	x->in_cur++;
	return x->rc = append_change(x->c, &s->out, e->op, e->key, e->generation,
	                             e->json ? e->json : "null", x->now);
}

/* Fills <s>'s buffer up to EM_CTL_OUT_HIGH: the snapshot's next pages, or
 * the changes the log has past what was sent. */
static void sess_pump(struct em_ctl *c, struct sess *s)
{
	while (s->state == S_SNAPSHOT && s->out.len - s->out_off < EM_CTL_OUT_HIGH) {
		if (s->snap_kind >= EM_KIND__COUNT) {
			append_mark(c, s, "snapshot-end", s->snap_gen);
			s->state = S_LIVE;
			s->sent_gen = s->snap_gen;
			if (s->e)
				s->e->sent = s->snap_gen;
			break;
		}
		const struct page *pg = page_get(c, s->snap_kind, s->snap_after);
		if (!pg || em_buf_append(&s->out, pg->text.data, pg->text.len)) {
			s->closing = true;
			return;
		}
		c->c_msgs_out += pg->n;
		if (pg->n < EM_CTL_PAGE) {
			s->snap_kind++;
			s->snap_after[0] = 0;
		} else {
			snprintf(s->snap_after, sizeof(s->snap_after), "%s", pg->last);
		}
	}
	if (s->state != S_LIVE || s->out.len - s->out_off >= EM_CTL_OUT_HIGH)
		return;
	struct em_clog_stats cs;
	em_clog_stats(c->clog, &cs);
	if (cs.newest > s->sent_gen) {
		struct since_ctx x = {.c = c, .s = s, .skip = s->sent_skip, .now = wall_ms()};
		int rc = em_clog_since(c->clog, s->sent_gen, since_entry, &x);
		if (rc == -ERANGE) {
			EM_INFO(MOD, "edge %s fell behind the change log: sending a snapshot",
			        s->node);
			/* What was queued past the last marker is resent in the
			 * snapshot. */
			s->state = S_SNAPSHOT;
			s->snap_kind = 0;
			s->snap_after[0] = 0;
			s->snap_gen = cs.newest;
			s->sent_skip = 0;
			c->c_snapshots++;
			append_mark(c, s, "snapshot-begin", s->snap_gen);
			return;
		}
		if (x.rc) {
			s->closing = true;
			return;
		}
		if (rc == 0) {
			/* All sent: through the newest generation. */
			if (x.cur > s->sent_gen) {
				s->sent_gen = x.cur;
				s->need_mark = true;
			}
			s->sent_skip = 0;
		} else if (x.last_whole > s->sent_gen) {
			/* Stopped inside generation <cur>: the marker covers the
			 * whole ones, the next pump resumes after what of <cur>
			 * is queued. */
			s->sent_gen = x.last_whole;
			s->sent_skip = x.in_cur;
			s->need_mark = true;
		} else {
			s->sent_skip = x.in_cur; /* still inside the first one */
		}
	}
	if (s->need_mark) {
		s->need_mark = false;
		append_mark(c, s, "sync", s->sent_gen);
		if (s->e)
			s->e->sent = s->sent_gen;
	}
}

static void cloud_take_pending(struct em_ctl *c)
{
	pthread_mutex_lock(&c->mu);
	struct pending *p = c->pend;
	size_t n = c->n_pend;
	c->pend = NULL;
	c->n_pend = 0;
	pthread_mutex_unlock(&c->mu);
	for (size_t i = 0; i < n; i++) {
		if (c->n_sess >= EM_CTL_MAX_EDGES) {
			EM_WARN(MOD, "control stream of %s refused: %u edges connected already",
			        p[i].node, EM_CTL_MAX_EDGES);
			c->c_refused++;
			close(p[i].fd);
			continue;
		}
		if (c->n_sess == c->cap_sess) {
			size_t cap = c->cap_sess ? c->cap_sess * 2 : 16;
			struct sess **v = realloc(c->sess, cap * sizeof(*v));
			if (!v) {
				close(p[i].fd);
				continue;
			}
			c->sess = v;
			c->cap_sess = cap;
		}
		struct sess *s = calloc(1, sizeof(*s));
		if (!s) {
			close(p[i].fd);
			continue;
		}
		s->fd = p[i].fd;
		s->src = p[i].src;
		s->enroll_only = p[i].enroll_only;
		snprintf(s->node, sizeof(s->node), "%s", p[i].node);
		s->deadline_ms = c->now_ms + REGISTER_MS;
		c->sess[c->n_sess++] = s;
		c->c_sessions++;
	}
	free(p);
}

void em_ctl_accept(struct em_ctl *c, int fd, const char *node, const struct em_addr *src,
                   bool enroll_only)
{
	if (!c->cloud) {
		close(fd);
		return;
	}
	pthread_mutex_lock(&c->mu);
	struct pending *v = c->n_pend < MAX_PENDING
	                            ? realloc(c->pend, (c->n_pend + 1) * sizeof(*v))
	                            : NULL;
	if (v) {
		c->pend = v;
		v[c->n_pend].fd = fd;
		v[c->n_pend].src = *src;
		v[c->n_pend].enroll_only = enroll_only;
		snprintf(v[c->n_pend].node, sizeof(v->node), "%s", node);
		c->n_pend++;
	}
	pthread_mutex_unlock(&c->mu);
	if (!v) {
		close(fd);
		return;
	}
	wake(c);
}

/* The Nodes of this turn's registrations, in one store change (one
 * generation: each edge then gets them with one marker, not one each). */
static void store_reg_nodes(struct em_ctl *c)
{
	if (!c->n_reg)
		return;
	char err[512];
	if (em_store_change(c->st, (const cJSON *const *)c->reg, c->n_reg, NULL, 0, NULL, err,
	                    sizeof(err)))
		EM_WARN(MOD, "%zu registration Node(s) could not be stored: %s", c->n_reg, err);
	for (size_t i = 0; i < c->n_reg; i++)
		cJSON_Delete(c->reg[i]);
	c->n_reg = 0;
}

static void cloud_run(struct em_ctl *c, const struct pollfd *pfd, size_t n)
{
	/* First every session's input (registrations queue their Nodes),
	 * then the Nodes, then every session's output. Entries are in session
	 * order; sessions closed in the second pass move the last one into
	 * their slot, so it walks backwards. */
	for (size_t i = EM_MIN(n, c->n_sess); i-- > 0;) {
		struct sess *s = c->sess[i];
		if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		int r = read_in(s->fd, &s->in);
		struct cloud_line_ctx x = {c, s};
		int lr = each_line(&s->in, cloud_msg, &x);
		if (lr == -EMSGSIZE)
			sess_fail(c, s, "message over 16 MiB");
		if (r == 0)
			s->gone = "end of stream";
		else if (r < 0)
			s->gone = "read failed or message too long";
	}
	store_reg_nodes(c);
	for (size_t i = EM_MIN(n, c->n_sess); i-- > 0;) {
		struct sess *s = c->sess[i];
		const char *why = s->gone;
		if (!why && s->state == S_REGISTER && c->now_ms > s->deadline_ms) {
			sess_fail(c, s, "no register within 10 s");
		}
		if (!why && !s->closing && s->state != S_REGISTER)
			sess_pump(c, s);
		uint64_t b = 0;
		if (!why && !flush_out(s->fd, &s->out, &s->out_off, &b))
			why = "write failed";
		c->c_bytes_out += b;
		if (!why && s->closing && s->out.len == s->out_off)
			why = s->e ? "closed" : NULL;
		if (why || (s->closing && s->out.len == s->out_off))
			sess_close(c, i, why);
	}
	/* Sessions added this turn get their entries next turn; those past
	 * <n> were added by cloud_take_pending after the poll. */
	for (size_t i = n; i < c->n_sess; i++) {
		struct sess *s = c->sess[i];
		if (s->state != S_REGISTER)
			sess_pump(c, s);
	}
	cloud_take_pending(c);
}

/* ---- edge ----------------------------------------------------------------- */

static uint64_t rng_next(struct em_ctl *c)
{
	uint64_t x = c->rng;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return c->rng = x;
}

static uint32_t next_backoff(struct em_ctl *c)
{
	return em_backoff(&c->backoff, c->rc_min, c->rc_max, rng_next(c));
}

static void run_free(struct em_ctl *c)
{
	for (size_t i = 0; i < c->n_objs; i++)
		cJSON_Delete(c->objs[i]);
	c->n_objs = 0;
	for (size_t i = 0; i < c->n_dels; i++) {
		free(c->dels[i].ns);
		free(c->dels[i].name);
	}
	c->n_dels = 0;
}

static void snap_free(struct em_ctl *c)
{
	for (size_t i = 0; i < c->n_snap; i++)
		free(c->snap_keys[i]);
	c->n_snap = 0;
	c->in_snap = false;
}

static void edge_down(struct em_ctl *c, const char *why)
{
	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
		if (c->up)
			EM_WARN(MOD, "control stream to the cloud (%s) lost: %s", c->address, why);
	}
	em_buf_free(&c->in);
	em_buf_free(&c->out);
	c->out_off = 0;
	run_free(c);
	snap_free(c);
	c->up = false;
	c->next_dial_ms = c->now_ms + next_backoff(c);
}

/* cloud.address, "host:port" or "[v6]:port": a literal at once (0), else
 * the lookup of the name starts (1: edge_resolved finishes it; the sync
 * thread never waits for a resolver), or -errno. */
static int resolve_start(struct em_ctl *c, struct em_addr *out)
{
	if (em_addr_parse(c->address, true, out) == 0)
		return 0;
	const char *colon = strrchr(c->address, ':');
	if (!colon || colon == c->address || (size_t)(colon - c->address) >= sizeof(c->gai_host))
		return -EINVAL;
	memcpy(c->gai_host, c->address, (size_t)(colon - c->address));
	c->gai_host[colon - c->address] = 0;
	snprintf(c->gai_port, sizeof(c->gai_port), "%s", colon + 1);
	c->gai_hints = (struct addrinfo){.ai_socktype = SOCK_STREAM};
	c->gai = (struct gaicb){.ar_name = c->gai_host,
	                        .ar_service = c->gai_port,
	                        .ar_request = &c->gai_hints};
	struct gaicb *list[] = {&c->gai};
	if (getaddrinfo_a(GAI_NOWAIT, list, 1, NULL))
		return -EAGAIN;
	c->resolving = true;
	return 1;
}

/* The lookup's answer: 0 with <out>, 1 while it runs, -EHOSTUNREACH. */
static int resolve_done(struct em_ctl *c, struct em_addr *out)
{
	int rc = gai_error(&c->gai);
	if (rc == EAI_INPROGRESS)
		return 1;
	c->resolving = false;
	struct addrinfo *res = c->gai.ar_result;
	c->gai.ar_result = NULL;
	rc = rc == 0 && res && em_addr_from_sockaddr(res->ai_addr, out) == 0 ? 0 : -EHOSTUNREACH;
	if (res)
		freeaddrinfo(res);
	return rc;
}

/* A lookup still running when the edge's side goes: cancelled, or waited
 * for (glibc cannot cancel one its thread has started). */
static void resolve_stop(struct em_ctl *c)
{
	if (!c->resolving)
		return;
	if (gai_cancel(&c->gai) != EAI_CANCELED) {
		const struct gaicb *list[] = {&c->gai};
		while (gai_error(&c->gai) == EAI_INPROGRESS)
			gai_suspend(list, 1, NULL);
	}
	if (c->gai.ar_result)
		freeaddrinfo(c->gai.ar_result);
	c->resolving = false;
}

static void edge_dial(struct em_ctl *c)
{
	struct em_addr a;
	int rc = c->resolving ? resolve_done(c, &a) : resolve_start(c, &a);
	if (rc == 1)
		return; /* looking the name up: polled at 50 ms */
	if (rc) {
		EM_WARN(MOD, "cloud.address %s: cannot resolve it; trying again", c->address);
		edge_down(c, "unresolved");
		return;
	}
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) == -1) {
		edge_down(c, strerror(errno));
		return;
	}
	pthread_mutex_lock(&c->mu);
	rc = c->dial ? c->dial(c->dial_ctx, sv[1], &a) : -ENOTCONN;
	pthread_mutex_unlock(&c->mu);
	if (rc == -ENOTCONN)
		close(sv[1]);
	if (rc) {
		close(sv[0]);
		edge_down(c, strerror(-rc));
		return;
	}
	c->fd = sv[0];
	c->cert_pending = c->enrolling = false;
	if (edge_cert_request(c)) {
		edge_down(c, "out of memory");
		return;
	}
	if (c->enrolling)
		return; /* the answer moves the tunnels to TLS; register then */
	struct em_bh_msg m = {.op = EM_BH_QUERY};
	snprintf(m.source, sizeof(m.source), "edgemesh");
	snprintf(m.group, sizeof(m.group), "control");
	snprintf(m.resource, sizeof(m.resource), "sync");
	em_bh_new_id(m.msg_id);
	m.content = cJSON_CreateObject();
	cJSON_AddStringToObject(m.content, "node", c->node);
	cJSON_AddNumberToObject(m.content, "tunnel_port", c->tunnel_port);
	cJSON_AddStringToObject(m.content, "version", EM_VERSION);
	cJSON_AddNumberToObject(m.content, "start_time", (double)c->start_time);
	cJSON_AddStringToObject(m.content, "epoch", c->epoch);
	cJSON_AddNumberToObject(m.content, "generation", (double)c->gen);
	rc = append_msg(c, &c->out, &m);
	cJSON_Delete(m.content);
	if (rc)
		edge_down(c, "out of memory");
}

static int grow(void **v, size_t *cap, size_t need, size_t size)
{
	if (need <= *cap)
		return 0;
	size_t nc = *cap ? *cap * 2 : 64;
	while (nc < need)
		nc *= 2;
	void *p = realloc(*v, nc * size);
	if (!p)
		return -ENOMEM;
	*v = p;
	*cap = nc;
	return 0;
}

/* Applies the run: the objects and deletes received since the last
 * marker, and with <kv> (the marker's "epoch generation") the applied
 * point, all in one transaction. Objects the store refuses are skipped,
 * each logged, and the rest applied. Returns 0 or -errno. */
static int edge_apply(struct em_ctl *c, const char *kv)
{
	struct em_store_key *keys = calloc(c->n_dels ? c->n_dels : 1, sizeof(*keys));
	if (!keys)
		return -ENOMEM;
	for (size_t i = 0; i < c->n_dels; i++)
		keys[i] = (struct em_store_key){c->dels[i].kind, c->dels[i].ns, c->dels[i].name};
	struct em_store_src src = {.origin = ORIGIN, .kv_key = kv ? KV_CLOUD : NULL, .kv_value = kv};
	char err[512];
	int rc = em_store_change_from(c->st, (const cJSON *const *)c->objs, c->n_objs, keys,
	                              c->n_dels, &src, NULL, err, sizeof(err));
	if (rc == -EINVAL) {
		/* One at a time: the refused ones are named and skipped. */
		struct em_store_src one = {.origin = ORIGIN};
		for (size_t i = 0; i < c->n_objs; i++) {
			const cJSON *o[] = {c->objs[i]};
			if (em_store_change_from(c->st, o, 1, NULL, 0, &one, NULL, err, sizeof(err))) {
				c->c_apply_failures++;
				if (c->logged_refusals++ < 100)
					EM_WARN(MOD, "object from the cloud refused here: %s", err);
			}
		}
		rc = em_store_change_from(c->st, NULL, 0, keys, c->n_dels, &src, NULL, err,
		                          sizeof(err));
	}
	if (rc)
		EM_WARN(MOD, "applying changes from the cloud failed: %s", err);
	else
		c->c_applied += c->n_objs + c->n_dels;
	free(keys);
	run_free(c);
	return rc;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* After a snapshot's end: objects from the cloud the snapshot lacked. */
static int stale_key(void *arg, const char *key)
{
	struct em_ctl *c = arg;
	const char *k = key;
	if (c->n_snap && bsearch(&k, c->snap_keys, c->n_snap, sizeof(char *), cmp_str))
		return 0;
	int kind;
	char ns[EM_K8S_NAME_MAX + 1], name[EM_K8S_NAME_MAX + 1];
	if (em_bh_resource_split(key, &kind, ns, name, sizeof(ns)))
		return 0;
	if (grow((void **)&c->dels, &c->cap_dels, c->n_dels + 1, sizeof(*c->dels)))
		return -ENOMEM;
	struct del *d = &c->dels[c->n_dels];
	d->kind = kind;
	d->ns = strdup(ns);
	d->name = strdup(name);
	if (!d->ns || !d->name) {
		free(d->ns);
		free(d->name);
		return -ENOMEM;
	}
	c->n_dels++;
	return 0;
}

static int edge_mark(struct em_ctl *c, struct em_bh_msg *m)
{
	const cJSON *ep = cJSON_GetObjectItemCaseSensitive(m->content, "epoch");
	const cJSON *g = cJSON_GetObjectItemCaseSensitive(m->content, "generation");
	const cJSON *ph = cJSON_GetObjectItemCaseSensitive(m->content, "phase");
	if (!cJSON_IsString(ep) || strlen(ep->valuestring) > 36 || !cJSON_IsNumber(g) ||
	    g->valuedouble < 0 || !cJSON_IsString(ph))
		return -EINVAL;
	uint64_t gen = (uint64_t)g->valuedouble;
	const char *phase = ph->valuestring;
	if (strcmp(phase, "snapshot-begin") == 0) {
		/* What came before belongs to an older run: apply it as such. */
		if (c->n_objs || c->n_dels)
			edge_apply(c, NULL);
		snap_free(c);
		c->in_snap = true;
		EM_INFO(MOD, "cloud %s sends a snapshot (generation %llu)", c->address,
		        (unsigned long long)gen);
		return 0;
	}
	bool end = strcmp(phase, "snapshot-end") == 0;
	if (!end && strcmp(phase, "sync") != 0)
		return -EINVAL;
	if (end) {
		if (!c->in_snap)
			return -EINVAL;
		qsort(c->snap_keys, c->n_snap, sizeof(char *), cmp_str);
		if (em_store_origin_scan(c->st, ORIGIN, stale_key, c))
			return -EIO;
	}
	char kv[80];
	snprintf(kv, sizeof(kv), "%s %llu", ep->valuestring, (unsigned long long)gen);
	size_t stale = end ? c->n_dels : 0;
	int rc = edge_apply(c, kv);
	if (rc)
		return rc;
	if (end) {
		EM_INFO(MOD, "snapshot applied: %zu objects, %zu stale ones deleted", c->n_snap,
		        stale);
		snap_free(c);
	}
	snprintf(c->epoch, sizeof(c->epoch), "%s", ep->valuestring);
	c->gen = gen;
	if (!c->up)
		EM_INFO(MOD, "in sync with the cloud %s at generation %llu", c->address,
		        (unsigned long long)gen);
	c->up = true;
	c->backoff = 0;
	/* Acknowledge. */
	struct em_bh_msg a = {.op = EM_BH_RESPONSE};
	snprintf(a.source, sizeof(a.source), "edgemesh");
	snprintf(a.group, sizeof(a.group), "control");
	snprintf(a.resource, sizeof(a.resource), "sync");
	snprintf(a.parent_id, sizeof(a.parent_id), "%s", m->msg_id);
	a.content = cJSON_CreateObject();
	cJSON_AddNumberToObject(a.content, "generation", (double)gen);
	rc = a.content ? append_msg(c, &c->out, &a) : -ENOMEM;
	cJSON_Delete(a.content);
	c->c_acks++;
	return rc;
}

static int edge_msg(void *arg, const char *line, size_t len)
{
	struct em_ctl *c = arg;
	struct em_bh_msg m;
	char err[256];
	c->c_msgs_in++;
	if (em_bh_decode(line, len, &m, err, sizeof(err))) {
		EM_WARN(MOD, "bad message from the cloud: %s", err);
		return -EINVAL;
	}
	int rc = 0;
	if (strcmp(m.group, "resource") == 0 &&
	    (m.op == EM_BH_INSERT || m.op == EM_BH_UPDATE || m.op == EM_BH_DELETE)) {
		int kind;
		char ns[EM_K8S_NAME_MAX + 1], name[EM_K8S_NAME_MAX + 1];
		if (em_bh_resource_split(m.resource, &kind, ns, name, sizeof(ns))) {
			EM_WARN(MOD, "bad resource from the cloud: %.200s", m.resource);
			rc = -EINVAL;
		} else if (m.op == EM_BH_DELETE) {
			rc = grow((void **)&c->dels, &c->cap_dels, c->n_dels + 1, sizeof(*c->dels));
			if (!rc) {
				c->dels[c->n_dels] = (struct del){kind, strdup(ns), strdup(name)};
				c->n_dels++;
			}
		} else if (!cJSON_IsObject(m.content)) {
			EM_WARN(MOD, "%s from the cloud has no object", m.resource);
			rc = -EINVAL;
		} else {
			rc = grow((void **)&c->objs, &c->cap_objs, c->n_objs + 1, sizeof(*c->objs));
			if (!rc) {
				c->objs[c->n_objs++] = m.content;
				m.content = NULL;
			}
			if (!rc && c->in_snap) {
				rc = grow((void **)&c->snap_keys, &c->cap_snap, c->n_snap + 1,
				          sizeof(char *));
				char *k = rc ? NULL : strdup(m.resource);
				if (k)
					c->snap_keys[c->n_snap++] = k;
				else
					rc = -ENOMEM;
			}
		}
		/* A snapshot, or a large generation, is applied a page at a time
		 * (the marker's epoch and generation go with the last page). */
		if (!rc && c->n_objs + c->n_dels >= EM_CTL_PAGE)
			rc = edge_apply(c, NULL);
	} else if (strcmp(m.group, "control") == 0 && m.op == EM_BH_RESPONSE &&
	           strcmp(m.resource, "sync") == 0) {
		rc = edge_mark(c, &m);
		if (rc == -EINVAL)
			EM_WARN(MOD, "bad marker from the cloud");
	} else if (strcmp(m.group, "control") == 0 && m.op == EM_BH_RESPONSE &&
	           strcmp(m.resource, "certificate") == 0) {
		rc = edge_cert_answer(c, &m);
	} else if (strcmp(m.group, "control") == 0 && m.op == EM_BH_UPDATE &&
	           strcmp(m.resource, "revocations") == 0) {
		rc = edge_revs(c, &m);
	} else if (m.op == EM_BH_ERROR) {
		EM_WARN(MOD, "the cloud refused this edge: %.300s",
		        cJSON_IsString(m.content) ? m.content->valuestring : "?");
		rc = -EPROTO;
	} else {
		EM_WARN(MOD, "unexpected message from the cloud: %s %s/%s", em_bh_op_name(m.op),
		        m.group, m.resource);
		rc = -EINVAL;
	}
	em_bh_free(&m);
	if (rc)
		c->c_protocol_errors++;
	return rc;
}

static void edge_run(struct em_ctl *c, const struct pollfd *pfd, size_t n)
{
	if (!c->address[0])
		return;
	if (c->fd < 0) {
		pthread_mutex_lock(&c->mu);
		bool have = c->dial != NULL;
		pthread_mutex_unlock(&c->mu);
		if (have && (c->resolving || c->now_ms >= c->next_dial_ms))
			edge_dial(c);
		if (c->fd < 0)
			return;
	}
	if (n && (pfd[0].revents & (POLLIN | POLLHUP | POLLERR))) {
		int r = read_in(c->fd, &c->in);
		int lr = each_line(&c->in, edge_msg, c);
		if (lr) {
			edge_down(c, lr == -EMSGSIZE ? "message over 16 MiB" : "bad message");
			return;
		}
		if (r <= 0) {
			edge_down(c, r == 0 ? "the stream ended" : "read failed");
			return;
		}
	}
	if (c->up && c->now_ms >= c->next_cert_ms && edge_cert_request(c)) {
		edge_down(c, "out of memory");
		return;
	}
	uint64_t b = 0;
	if (!flush_out(c->fd, &c->out, &c->out_off, &b))
		edge_down(c, "write failed");
	c->c_bytes_out += b;
}

/* ---- both ----------------------------------------------------------------- */

struct em_ctl *em_ctl_new(const struct em_config *cfg, struct em_store *st, struct em_clog *clog)
{
	struct em_ctl *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->cloud = cfg->role == EM_ROLE_CLOUD;
	c->st = st;
	c->clog = clog;
	c->fd = -1;
	c->now_ms = em_now_ms();
	snprintf(c->node, sizeof(c->node), "%s", cfg->node_name);
	pthread_mutex_init(&c->mu, NULL);
	c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->wake_fd == -1 || (c->cloud && !clog)) {
		em_ctl_free(c);
		return NULL;
	}
	revs_load(c);
	if (c->cloud) {
		if (em_bh_new_id(c->epoch)) {
			em_ctl_free(c);
			return NULL;
		}
		return c;
	}
	snprintf(c->address, sizeof(c->address), "%s", cfg->cloud.address);
	c->tunnel_port = cfg->tunnel.listen.family ? cfg->tunnel.listen.port : 0;
	c->start_time = wall_ms();
	c->rc_min = cfg->tunnel.reconnect_min_ms;
	c->rc_max = cfg->tunnel.reconnect_max_ms;
	c->rng = em_now_ns() | 1;
	char kv[80];
	if (em_store_kv_get(st, KV_CLOUD, kv, sizeof(kv)) == 1) {
		char ep[40];
		unsigned long long g;
		if (sscanf(kv, "%39s %llu", ep, &g) == 2) {
			snprintf(c->epoch, sizeof(c->epoch), "%s", ep);
			c->gen = g;
		}
	}
	return c;
}

void em_ctl_free(struct em_ctl *c)
{
	if (!c)
		return;
	while (c->n_sess)
		sess_close(c, c->n_sess - 1, NULL);
	free(c->sess);
	for (size_t i = 0; i < c->n_edges; i++)
		free(c->edges[i]);
	free(c->edges);
	for (size_t i = 0; i < c->n_reg; i++)
		cJSON_Delete(c->reg[i]);
	free(c->reg);
	for (size_t i = 0; i < EM_ARRAY_SIZE(c->pages); i++)
		em_buf_free(&c->pages[i].text);
	for (size_t i = 0; i < c->n_pend; i++)
		close(c->pend[i].fd);
	free(c->pend);
	resolve_stop(c);
	if (c->fd >= 0)
		close(c->fd);
	em_buf_free(&c->in);
	em_buf_free(&c->out);
	run_free(c);
	snap_free(c);
	free(c->objs);
	free(c->dels);
	free(c->snap_keys);
	free(c->revs);
	if (c->wake_fd >= 0)
		close(c->wake_fd);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

void em_ctl_set_dialer(struct em_ctl *c, em_ctl_dial_fn fn, void *ctx)
{
	pthread_mutex_lock(&c->mu);
	c->dial = fn;
	c->dial_ctx = ctx;
	pthread_mutex_unlock(&c->mu);
	wake(c);
}

int em_ctl_wake_fd(const struct em_ctl *c)
{
	return c->wake_fd;
}

size_t em_ctl_max_pollfds(const struct em_ctl *c)
{
	return c->cloud ? c->n_sess : 1;
}

size_t em_ctl_pollfds(struct em_ctl *c, struct pollfd *pfd, size_t cap, int *timeout_ms)
{
	c->now_ms = em_now_ms();
	if (!c->cloud) {
		if (c->resolving && *timeout_ms > 50)
			*timeout_ms = 50;
		if (c->fd < 0 || cap == 0) {
			if (c->address[0]) {
				uint64_t wait = c->next_dial_ms > c->now_ms ? c->next_dial_ms - c->now_ms : 0;
				if ((int64_t)wait < *timeout_ms)
					*timeout_ms = (int)wait;
			}
			return 0;
		}
		pfd[0] = (struct pollfd){.fd = c->fd,
		                         .events = (short)(POLLIN | (c->out.len > c->out_off ? POLLOUT : 0))};
		return 1;
	}
	size_t n = EM_MIN(cap, c->n_sess);
	struct em_clog_stats cs;
	em_clog_stats(c->clog, &cs);
	for (size_t i = 0; i < n; i++) {
		struct sess *s = c->sess[i];
		short ev = s->closing ? 0 : POLLIN;
		/* Writable is the cue for more: what is queued, the rest of a
		 * snapshot, or changes not yet queued (the buffer was full). */
		if (s->out.len > s->out_off ||
		    (!s->closing && (s->state == S_SNAPSHOT ||
		                     (s->state == S_LIVE && cs.newest > s->sent_gen))))
			ev |= POLLOUT;
		pfd[i] = (struct pollfd){.fd = s->fd, .events = ev};
		if (s->state == S_REGISTER && *timeout_ms > 1000)
			*timeout_ms = 1000;
	}
	return n;
}

void em_ctl_run(struct em_ctl *c, const struct pollfd *pfd, size_t n)
{
	uint64_t v;
	if (read(c->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		EM_DEBUG(MOD, "wake read: %s", strerror(errno));
	c->now_ms = em_now_ms();
	pthread_mutex_lock(&c->mu);
	bool tell = c->revs_dirty;
	c->revs_dirty = false;
	pthread_mutex_unlock(&c->mu);
	if (tell)
		revs_tell(c);
	if (c->cloud)
		cloud_run(c, pfd, n);
	else
		edge_run(c, pfd, n);
}

size_t em_ctl_counters(const struct em_ctl *c, struct em_api_counter *out, size_t cap)
{
	size_t connected = 0;
	for (size_t i = 0; i < c->n_edges; i++)
		connected += c->edges[i]->s != NULL;
	struct em_api_counter all[] = {
	        {"control", "edges_connected", c->cloud ? connected : (uint64_t)c->up},
	        {"control", "edges_known", c->n_edges},
	        {"control", "streams_opened", c->c_sessions},
	        {"control", "registrations", c->c_registered},
	        {"control", "streams_refused", c->c_refused},
	        {"control", "snapshots", c->c_snapshots},
	        {"control", "snapshot_pages_shared", c->c_page_hits},
	        {"control", "messages_in", c->c_msgs_in},
	        {"control", "messages_out", c->c_msgs_out},
	        {"control", "bytes_out", c->c_bytes_out},
	        {"control", "protocol_errors", c->c_protocol_errors},
	        {"control", "acks", c->c_acks},
	        {"control", "objects_applied", c->c_applied},
	        {"control", "objects_refused", c->c_apply_failures},
	        {"control", "generation", c->gen},
	        {"control", "certificates_signed", c->c_certs_signed},
	        {"control", "certificate_requests_refused", c->c_certs_refused},
	        {"control", "certificates_installed", c->c_certs_installed},
	        {"control", "revocations", c->n_revs},
	};
	size_t n = EM_MIN(cap, EM_ARRAY_SIZE(all));
	memcpy(out, all, n * sizeof(*out));
	return n;
}

bool em_ctl_synced(const struct em_ctl *c)
{
	return c->cloud || c->gen > 0;
}

int em_ctl_status(const struct em_ctl *c, cJSON *reply)
{
	char a[EM_ADDR_STRLEN];
	if (!c->cloud) {
		cJSON *o = cJSON_AddObjectToObject(reply, "cloud");
		if (!o || !cJSON_AddStringToObject(o, "address", c->address) ||
		    !cJSON_AddBoolToObject(o, "connected", c->up) ||
		    !cJSON_AddStringToObject(o, "epoch", c->epoch) ||
		    !cJSON_AddNumberToObject(o, "generation", (double)c->gen))
			return -ENOMEM;
		return 0;
	}
	cJSON *arr = cJSON_AddArrayToObject(reply, "edges");
	if (!arr)
		return -ENOMEM;
	for (size_t i = 0; i < c->n_edges; i++) {
		const struct edge *e = c->edges[i];
		cJSON *o = cJSON_CreateObject();
		if (!o)
			return -ENOMEM;
		cJSON_AddItemToArray(arr, o);
		if (!cJSON_AddStringToObject(o, "node", e->node) ||
		    !cJSON_AddBoolToObject(o, "connected", e->s != NULL) ||
		    !cJSON_AddStringToObject(o, "address", em_addr_format(&e->addr, false, a, sizeof(a))) ||
		    !cJSON_AddNumberToObject(o, "tunnel_port", e->tunnel_port) ||
		    !cJSON_AddStringToObject(o, "version", e->version) ||
		    !cJSON_AddNumberToObject(o, "since_ms", (double)e->since_ms) ||
		    !cJSON_AddNumberToObject(o, "last_seen_ms", (double)e->last_seen_ms) ||
		    !cJSON_AddNumberToObject(o, "generation_sent", (double)e->sent) ||
		    !cJSON_AddNumberToObject(o, "generation_acked", (double)e->acked))
			return -ENOMEM;
	}
	return 0;
}

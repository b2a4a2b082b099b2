/* meshctl: command-line client of a node's API socket (see store/api.h).
 *
 *   meshctl [-s SOCKET] get KIND [NAME] [-n NS | -A] [-o json|wide]
 *   meshctl [-s SOCKET] apply -f FILE        (one object or a kubectl List; - is stdin)
 *   meshctl [-s SOCKET] delete KIND NS/NAME  (or NAME with -n NS)
 *   meshctl [-s SOCKET] stats
 *   meshctl ca init DIR [--days N]
 *   meshctl cert issue NODE --ca DIR [--out DIR] [--days N] [--force]
 *   meshctl [-s SOCKET] cert revoke NODE     (on the cloud's socket)
 *
 * The socket defaults to $EDGEMESH_SOCKET, else /var/lib/edgemesh/edgemesh.sock.
 * `ca` and `cert issue` work on files only (tunnel/pki.h), no daemon
 * needed; `cert revoke` asks the cloud's daemon. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "store/api.h"
#include "store/k8s.h"
#include "tunnel/pki.h"

#define DEFAULT_SOCKET  "/var/lib/edgemesh/edgemesh.sock"
#define REPLY_TIMEOUT_S 30

static void usage(FILE *f)
{
	fprintf(f, "usage: meshctl [-s SOCKET] COMMAND\n"
	           "  get KIND [NAME] [-n NS | -A] [-o json|wide]\n"
	           "      KIND: services|endpoints|endpointslices|pods|nodes (svc, ep, po, no),\n"
	           "            ruleendpoints|rules (re)\n"
	           "  apply -f FILE          apply one object or a List (FILE - reads stdin)\n"
	           "  delete KIND NS/NAME    (or: delete KIND NAME -n NS)\n"
	           "  stats                  store and table statistics\n"
	           "  ca init DIR [--days N]\n"
	           "      make a cluster CA: DIR/ca.key (mode 0600) and DIR/ca.crt,\n"
	           "      valid N days (default 3650); never replaces an existing CA\n"
	           "  cert issue NODE --ca DIR [--out DIR] [--days N] [--force]\n"
	           "      issue NODE's tunnel certificate from the CA in --ca DIR:\n"
	           "      OUT/NODE.key (mode 0600) and OUT/NODE.crt, valid N days\n"
	           "      (default 365); OUT defaults to the current directory;\n"
	           "      --force replaces NODE's existing files\n"
	           "  cert revoke NODE       (cloud) refuse NODE's certificates issued so\n"
	           "      far on every node, close its tunnels, let it enroll again\n"
	           "SOCKET defaults to $EDGEMESH_SOCKET, else " DEFAULT_SOCKET "\n");
}

static void die(const char *fmt, const char *arg)
{
	fprintf(stderr, "meshctl: ");
	fprintf(stderr, fmt, arg);
	fputc('\n', stderr);
	exit(1);
}

/* Sends one request line and returns the parsed reply; exits on failure. */
static cJSON *call(const char *sock, cJSON *req)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct timeval tv = {.tv_sec = REPLY_TIMEOUT_S};
	struct em_buf in = {0};
	char *line = cJSON_PrintUnformatted(req);
	size_t len, off = 0;
	cJSON *reply;
	int fd;

	cJSON_Delete(req);
	if (!line)
		die("%s", "out of memory");
	if (strlen(sock) >= sizeof(sa.sun_path))
		die("socket path too long: %s", sock);
	strcpy(sa.sun_path, sock);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
		fprintf(stderr, "meshctl: cannot connect to %s: %s (is edgemesh running?)\n", sock,
		        strerror(errno));
		exit(1);
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	len = strlen(line);
	line[len] = '\n'; /* replaces the terminator; sent as len + 1 bytes */
	while (off < len + 1) {
		ssize_t n = send(fd, line + off, len + 1 - off, MSG_NOSIGNAL);
		if (n <= 0)
			die("sending the request failed: %s", strerror(errno));
		off += (size_t)n;
	}
	cJSON_free(line);
	for (;;) {
		char buf[65536];
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n < 0)
			die("no reply: %s", strerror(errno));
		if (n == 0)
			die("%s", "the daemon closed the connection without a reply");
		if (em_buf_append(&in, buf, (size_t)n))
			die("%s", "out of memory");
		if (memchr(buf, '\n', (size_t)n))
			break;
	}
	close(fd);
	reply = cJSON_ParseWithLength(in.data, in.len);
	em_buf_free(&in);
	if (!reply)
		die("%s", "the daemon sent a reply that is not JSON");
	const cJSON *ok = cJSON_GetObjectItemCaseSensitive(reply, "ok");
	if (!cJSON_IsTrue(ok)) {
		const cJSON *e = cJSON_GetObjectItemCaseSensitive(reply, "error");
		die("error: %s", cJSON_IsString(e) ? e->valuestring : "unknown error");
	}
	return reply;
}

static void print_row(bool all_ns, const struct em_k8s_object *o, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void print_row(bool all_ns, const struct em_k8s_object *o, const char *fmt, ...)
{
	va_list ap;
	if (all_ns && o)
		printf("%-16s ", o->kind == EM_KIND_NODE ? "" : o->ns);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

static const char *svc_type_name(enum em_svc_type t)
{
	switch (t) {
	case EM_SVC_NODE_PORT:
		return "NodePort";
	case EM_SVC_LOAD_BALANCER:
		return "LoadBalancer";
	case EM_SVC_EXTERNAL_NAME:
		return "ExternalName";
	default:
		return "ClusterIP";
	}
}

static const char *proto_name(uint8_t p)
{
	return p == IPPROTO_UDP ? "UDP" : p == IPPROTO_SCTP ? "SCTP" : "TCP";
}

/* Appends "<a>,<b>" style lists into a bounded line buffer; a list too long
 * for a terminal row is cut. */
static void cat(char *buf, size_t len, const char *s)
{
	size_t n = strlen(buf), k = strlen(s);
	if (n && n + 1 < len)
		buf[n++] = ',';
	if (n + k >= len)
		k = len - n - 1;
	memcpy(buf + n, s, k);
	buf[n + k] = 0;
}

/* The cloud's record of edge <name> (the "edges" of a node list), or NULL. */
static const cJSON *edge_of(const cJSON *edges, const char *name)
{
	const cJSON *e;
	cJSON_ArrayForEach(e, edges)
	{
		const cJSON *n = cJSON_GetObjectItemCaseSensitive(e, "node");
		if (cJSON_IsString(n) && strcmp(n->valuestring, name) == 0)
			return e;
	}
	return NULL;
}

static double num(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* "now" while connected, else the age of <ms> (wall clock) as kubectl
 * prints ages: 42s, 5m, 3h, 2d. */
static void age(const cJSON *e, char *buf, size_t len)
{
	const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "connected");
	if (cJSON_IsTrue(c)) {
		snprintf(buf, len, "now");
		return;
	}
	struct timeval tv;
	gettimeofday(&tv, NULL);
	double d = ((double)tv.tv_sec * 1000 + tv.tv_usec / 1000 - num(e, "last_seen_ms")) / 1000;
	if (d < 0)
		d = 0;
	if (d < 120)
		snprintf(buf, len, "%.0fs", d);
	else if (d < 7200)
		snprintf(buf, len, "%.0fm", d / 60);
	else if (d < 172800)
		snprintf(buf, len, "%.0fh", d / 3600);
	else
		snprintf(buf, len, "%.0fd", d / 86400);
}

static void print_table(int kind, const cJSON *items, bool all_ns, const cJSON *edges)
{
	const cJSON *it;
	static const char *const headers[] = {
	        [EM_KIND_SERVICE] =
	                "NAME                     TYPE          CLUSTER-IP        PORT(S)",
	        [EM_KIND_ENDPOINTS] = "NAME                     ENDPOINTS",
	        [EM_KIND_ENDPOINTSLICE] =
	                "NAME                     ADDRESSTYPE  PORTS     ENDPOINTS",
	        [EM_KIND_POD] =
	                "NAME                     IP                NODE             STATUS",
	        [EM_KIND_NODE] = "NAME                     INTERNAL-IP       TUNNEL-PORT",
	        [EM_KIND_RULEENDPOINT] = "NAME                     TYPE        SERVICE-PORT",
	        [EM_KIND_RULE] =
	                "NAME                     SOURCE           TARGET           PATH         "
	                "        TARGET-PATH          SUCCESS    FAIL       ACTIVE",
	};
	char notes[4096] = "";

	if (cJSON_GetArraySize(items) == 0) {
		fprintf(stderr, "No resources found.\n");
		return;
	}
	if (all_ns && kind != EM_KIND_NODE)
		printf("%-16s ", "NAMESPACE");
	if (kind == EM_KIND_NODE && edges)
		printf("%s  CONTROL       LAST-SEEN  ACKED\n", headers[kind]);
	else
		printf("%s\n", headers[kind]);
	cJSON_ArrayForEach(it, items)
	{
		struct em_k8s_object *o;
		char err[256], a[EM_ADDR_STRLEN], col[512] = "", tmp[128];
		if (em_k8s_decode_json(it, kind, &o, err, sizeof(err))) {
			printf("(undecodable object: %s)\n", err);
			continue;
		}
		bool ns_col = all_ns && kind != EM_KIND_NODE;
		switch (kind) {
		case EM_KIND_SERVICE:
			for (size_t i = 0; i < o->svc.n_ports; i++) {
				snprintf(tmp, sizeof(tmp), "%u/%s", o->svc.ports[i].port,
				         proto_name(o->svc.ports[i].protocol));
				cat(col, sizeof(col), tmp);
			}
			print_row(ns_col, o, "%-24s %-13s %-17s %s", o->name,
			          svc_type_name(o->svc.type),
			          o->svc.headless        ? "None"
			          : o->svc.n_cluster_ips ? em_addr_format(&o->svc.cluster_ips[0],
			                                                  false, a, sizeof(a))
			                                 : "<none>",
			          col[0] ? col : "<none>");
			break;
		case EM_KIND_ENDPOINTS:
			for (size_t s = 0; s < o->ep.n_subsets; s++)
				for (size_t i = 0; i < o->ep.subsets[s].n_addrs; i++)
					for (size_t p = 0; p < o->ep.subsets[s].n_ports; p++) {
						struct em_addr x = o->ep.subsets[s].addrs[i].ip;
						if (!o->ep.subsets[s].addrs[i].ready)
							continue;
						x.port = o->ep.subsets[s].ports[p].port;
						cat(col, sizeof(col),
						    em_addr_format(&x, true, a, sizeof(a)));
					}
			print_row(ns_col, o, "%-24s %s", o->name, col[0] ? col : "<none>");
			break;
		case EM_KIND_ENDPOINTSLICE: {
			char ports[64] = "";
			for (size_t p = 0; p < o->slice.n_ports; p++) {
				snprintf(tmp, sizeof(tmp), "%u", o->slice.ports[p].port);
				cat(ports, sizeof(ports), tmp);
			}
			for (size_t i = 0; i < o->slice.n_addrs; i++)
				cat(col, sizeof(col),
				    em_addr_format(&o->slice.addrs[i].ip, false, a, sizeof(a)));
			print_row(ns_col, o, "%-24s %-12s %-9s %s", o->name,
			          o->slice.address_type == AF_INET6  ? "IPv6"
			          : o->slice.address_type == AF_INET ? "IPv4"
			                                             : "FQDN",
			          ports[0] ? ports : "<unset>", col[0] ? col : "<unset>");
			break;
		}
		case EM_KIND_POD:
			print_row(ns_col, o, "%-24s %-17s %-16s %s", o->name,
			          o->pod.n_ips ? em_addr_format(&o->pod.ips[0], false, a, sizeof(a))
			                       : "<none>",
			          o->pod.node_name ? o->pod.node_name : "<none>",
			          o->pod.phase ? o->pod.phase : "Unknown");
			break;
		case EM_KIND_NODE: {
			const char *ip = "<none>";
			for (size_t i = 0; i < o->node.n_addrs; i++)
				if (strcmp(o->node.addrs[i].type, "InternalIP") == 0) {
					ip = o->node.addrs[i].address;
					break;
				}
			snprintf(tmp, sizeof(tmp), "%u", o->node.tunnel_port);
			if (!edges) {
				print_row(false, o, "%-24s %-17s %s", o->name, ip,
				          o->node.tunnel_port ? tmp : "<default>");
				break;
			}
			/* On the cloud: each edge's control stream. */
			const cJSON *e = edge_of(edges, o->name);
			char seen[32] = "-", acked[32] = "-";
			if (e) {
				age(e, seen, sizeof(seen));
				snprintf(acked, sizeof(acked), "%.0f", num(e, "generation_acked"));
			}
			print_row(false, o, "%-24s %-17s %-13s %-13s %-10s %s", o->name, ip,
			          o->node.tunnel_port ? tmp : "<default>",
			          !e                                                   ? "-"
			          : cJSON_IsTrue(cJSON_GetObjectItem(e, "connected")) ? "connected"
			                                                               : "disconnected",
			          seen, acked);
			break;
		}
		case EM_KIND_RULEENDPOINT:
			snprintf(tmp, sizeof(tmp), "%u", o->re.service_port);
			print_row(ns_col, o, "%-24s %-11s %s", o->name,
			          o->re.type == EM_RE_REST ? "rest" : "servicebus",
			          o->re.service_port ? tmp : "<none>");
			break;
		case EM_KIND_RULE: {
			/* Whether the Router serves it, as the store last wrote. */
			const cJSON *row = cJSON_GetObjectItemCaseSensitive(it, "router");
			const cJSON *in_use = cJSON_GetObjectItemCaseSensitive(row, "in_use");
			const cJSON *why = cJSON_GetObjectItemCaseSensitive(row, "in_use_reason");
			char target[300];
			if (o->rule.svc_name)
				snprintf(target, sizeof(target), "%s (%s/%s:%u)", o->rule.target,
				         o->rule.svc_ns, o->rule.svc_name, o->rule.svc_port);
			else
				snprintf(target, sizeof(target), "%s", o->rule.target);
			print_row(ns_col, o, "%-24s %-16s %-16s %-20s %-20s %-10llu %-10llu %s",
			          o->name, o->rule.source, target,
			          o->rule.source_path ? o->rule.source_path : "<none>",
			          o->rule.target_path ? o->rule.target_path : "<none>",
			          (unsigned long long)o->rule.success,
			          (unsigned long long)o->rule.fail,
			          cJSON_IsTrue(in_use) ? "yes" : "no");
			if (!cJSON_IsTrue(in_use)) {
				char line[700];
				snprintf(line, sizeof(line), "rule %s/%s is not active: %s\n",
				         o->ns, o->name,
				         cJSON_IsString(why) && why->valuestring[0]
				                 ? why->valuestring
				                 : "not checked yet");
				if (strlen(notes) + strlen(line) < sizeof(notes))
					strcat(notes, line);
			}
			break;
		}
		}
		em_k8s_free(o);
	}
	if (notes[0])
		printf("\n%s", notes);
}

static int cmd_get(const char *sock, int argc, char **argv)
{
	const char *ns = "default", *out = NULL, *name = NULL;
	bool all = false;
	int opt, kind;

	optind = 1;
	while ((opt = getopt(argc, argv, "+n:Ao:")) != -1) {
		switch (opt) {
		case 'n':
			ns = optarg;
			break;
		case 'A':
			all = true;
			break;
		case 'o':
			out = optarg;
			break;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	if ((kind = em_kind_from_type(argv[optind])) < 0)
		die("unknown resource type \"%s\"", argv[optind]);
	/* kubectl accepts flags after the positional arguments too. */
	for (int i = optind + 1; i < argc; i++) {
		if (strcmp(argv[i], "-A") == 0 || strcmp(argv[i], "--all-namespaces") == 0)
			all = true;
		else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
			ns = argv[++i];
		else if (strcmp(argv[i], "-o") == 0 && i + 1 < argc)
			out = argv[++i];
		else if (argv[i][0] == '-')
			die("unknown flag %s", argv[i]);
		else if (!name)
			name = argv[i];
		else
			die("unexpected argument %s", argv[i]);
	}
	if (out && strcmp(out, "json") != 0 && strcmp(out, "wide") != 0)
		die("unsupported output format \"%s\" (json or wide)", out);

	cJSON *req = cJSON_CreateObject();
	cJSON_AddStringToObject(req, "op", "list");
	cJSON_AddStringToObject(req, "kind", em_kind_type(kind));
	if (kind == EM_KIND_NODE)
		all = false;
	else if (!all)
		cJSON_AddStringToObject(req, "namespace", ns);
	if (name)
		cJSON_AddStringToObject(req, "name", name);
	cJSON *reply = call(sock, req);
	const cJSON *items = cJSON_GetObjectItemCaseSensitive(reply, "items");
	if (!cJSON_IsArray(items))
		die("%s", "malformed reply: no items");
	if (name && cJSON_GetArraySize(items) == 0) {
		fprintf(stderr, "meshctl: %s \"%s\" not found\n", em_kind_type(kind), name);
		cJSON_Delete(reply);
		return 1;
	}
	if (out && strcmp(out, "json") == 0) {
		char *s = cJSON_Print(items);
		printf("%s\n", s);
		cJSON_free(s);
	} else {
		print_table(kind, items, all,
		            cJSON_GetObjectItemCaseSensitive(reply, "edges"));
		/* On an edge: its control stream to the cloud. */
		const cJSON *cl = cJSON_GetObjectItemCaseSensitive(reply, "cloud");
		const cJSON *addr = cJSON_GetObjectItemCaseSensitive(cl, "address");
		if (cJSON_IsString(addr))
			printf("cloud %s: %s, applied generation %.0f\n", addr->valuestring,
			       cJSON_IsTrue(cJSON_GetObjectItem(cl, "connected")) ? "connected"
			                                                          : "disconnected",
			       num(cl, "generation"));
	}
	cJSON_Delete(reply);
	return 0;
}

static char *read_all(const char *path, size_t *len)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	struct em_buf b = {0};
	char buf[65536];
	size_t n;

	if (!f)
		die("cannot open %s", path);
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		if (em_buf_append(&b, buf, n))
			die("%s", "out of memory");
	if (ferror(f))
		die("cannot read %s", path);
	if (f != stdin)
		fclose(f);
	*len = b.len;
	return b.data ? b.data : strdup("");
}

static int cmd_apply(const char *sock, int argc, char **argv)
{
	const char *file = NULL;
	size_t len;
	int opt;

	optind = 1;
	while ((opt = getopt(argc, argv, "f:")) != -1) {
		if (opt != 'f') {
			usage(stderr);
			return 2;
		}
		file = optarg;
	}
	if (!file || optind != argc) {
		usage(stderr);
		return 2;
	}
	char *text = read_all(file, &len);
	cJSON *doc = cJSON_ParseWithLength(text, len);
	if (!doc) {
		fprintf(stderr, "meshctl: %s: not valid JSON (near byte %ld)\n", file,
		        cJSON_GetErrorPtr() ? (long)(cJSON_GetErrorPtr() - text) : -1L);
		free(text);
		return 1;
	}
	free(text);
	const cJSON *kind = cJSON_GetObjectItemCaseSensitive(doc, "kind");
	cJSON *req = cJSON_CreateObject();
	cJSON_AddStringToObject(req, "op", "apply");
	size_t n = 1;
	if (cJSON_IsString(kind) && strcmp(kind->valuestring, "List") == 0) {
		cJSON *items = cJSON_DetachItemFromObjectCaseSensitive(doc, "items");
		if (!cJSON_IsArray(items))
			die("%s: a List needs an \"items\" array", file);
		n = (size_t)cJSON_GetArraySize(items);
		cJSON_AddItemToObject(req, "items", items);
		cJSON_Delete(doc);
	} else if (cJSON_IsArray(doc)) {
		n = (size_t)cJSON_GetArraySize(doc);
		cJSON_AddItemToObject(req, "items", doc);
	} else {
		cJSON_AddItemToObject(req, "object", doc);
	}
	cJSON *reply = call(sock, req);
	const cJSON *gen = cJSON_GetObjectItemCaseSensitive(reply, "generation");
	printf("applied %zu object%s (table generation %.0f)\n", n, n == 1 ? "" : "s",
	       cJSON_IsNumber(gen) ? gen->valuedouble : 0.0);
	cJSON_Delete(reply);
	return 0;
}

static int cmd_delete(const char *sock, int argc, char **argv)
{
	const char *ns = NULL;
	int opt, kind;

	optind = 1;
	while ((opt = getopt(argc, argv, "+n:")) != -1) {
		if (opt != 'n') {
			usage(stderr);
			return 2;
		}
		ns = optarg;
	}
	if (argc - optind < 2) {
		usage(stderr);
		return 2;
	}
	if ((kind = em_kind_from_type(argv[optind])) < 0)
		die("unknown resource type \"%s\"", argv[optind]);
	char *arg = argv[optind + 1], *slash = strchr(arg, '/');
	const char *name = arg;
	for (int i = optind + 2; i < argc; i++)
		if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
			ns = argv[++i];
	if (slash) {
		*slash = 0;
		ns = arg;
		name = slash + 1;
	}
	if (!ns)
		ns = kind == EM_KIND_NODE ? EM_NODE_NAMESPACE : "default";
	cJSON *req = cJSON_CreateObject();
	cJSON_AddStringToObject(req, "op", "delete");
	cJSON_AddStringToObject(req, "kind", em_kind_type(kind));
	cJSON_AddStringToObject(req, "namespace", ns);
	cJSON_AddStringToObject(req, "name", name);
	cJSON_Delete(call(sock, req));
	printf("%s \"%s/%s\" deleted\n", em_kind_type(kind), ns, name);
	return 0;
}

static int cmd_stats(const char *sock)
{
	cJSON *req = cJSON_CreateObject();
	cJSON_AddStringToObject(req, "op", "stats");
	cJSON *reply = call(sock, req);
	char *s = cJSON_Print(cJSON_GetObjectItemCaseSensitive(reply, "stats"));
	printf("%s\n", s ? s : "{}");
	cJSON_free(s);
	cJSON_Delete(reply);
	return 0;
}

/* "--days N" as 1..EM_PKI_MAX_DAYS; exits with a message otherwise. */
static unsigned parse_days(const char *s)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < 1 || v > EM_PKI_MAX_DAYS) {
		fprintf(stderr, "meshctl: --days \"%s\": expected a number of days, 1..%d\n", s,
		        EM_PKI_MAX_DAYS);
		exit(2);
	}
	return (unsigned)v;
}

static int cmd_ca(int argc, char **argv)
{
	unsigned days = EM_PKI_CA_DAYS;
	const char *dir = NULL;
	char err[512];

	if (argc < 2 || strcmp(argv[1], "init") != 0) {
		usage(stderr);
		return 2;
	}
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--days") == 0 && i + 1 < argc) {
			days = parse_days(argv[++i]);
		} else if (argv[i][0] != '-' && !dir) {
			dir = argv[i];
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (!dir) {
		usage(stderr);
		return 2;
	}
	if (em_pki_ca_init(dir, days, err, sizeof(err))) {
		fprintf(stderr, "meshctl: ca init: %s\n", err);
		return 1;
	}
	printf("cluster CA made: %s/ca.crt (certificate), %s/ca.key (private key, mode 0600: "
	       "keep it on the cloud node only), valid %u days\n",
	       dir, dir, days);
	return 0;
}

static int cmd_cert(const char *sock, int argc, char **argv)
{
	struct em_pki_issue req = {.days = EM_PKI_NODE_DAYS};
	char err[512];

	if (argc == 3 && strcmp(argv[1], "revoke") == 0) {
		cJSON *r = cJSON_CreateObject();
		cJSON_AddStringToObject(r, "op", "cert-revoke");
		cJSON_AddStringToObject(r, "node", argv[2]);
		cJSON_Delete(call(sock, r));
		printf("certificates of node %s revoked: its tunnels close, it may enroll again\n",
		       argv[2]);
		return 0;
	}
	if (argc < 2 || strcmp(argv[1], "issue") != 0) {
		usage(stderr);
		return 2;
	}
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--days") == 0 && i + 1 < argc) {
			req.days = parse_days(argv[++i]);
		} else if (strcmp(argv[i], "--ca") == 0 && i + 1 < argc) {
			req.ca_dir = argv[++i];
		} else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
			req.out_dir = argv[++i];
		} else if (strcmp(argv[i], "--force") == 0) {
			req.force = true;
		} else if (argv[i][0] != '-' && !req.node) {
			req.node = argv[i];
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (!req.node || !req.ca_dir) {
		fprintf(stderr, "meshctl: cert issue needs a NODE name and --ca DIR\n");
		usage(stderr);
		return 2;
	}
	int rc = em_pki_cert_issue(&req, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "meshctl: cert issue: %s%s\n", err,
		        rc == -EEXIST ? " (--force replaces it)" : "");
		return 1;
	}
	const char *out = req.out_dir ? req.out_dir : ".";
	printf("certificate of node %s: %s/%s.crt, private key %s/%s.key (mode 0600), valid %u "
	       "days\n",
	       req.node, out, req.node, out, req.node, req.days);
	return 0;
}

int main(int argc, char **argv)
{
	const char *sock = getenv("EDGEMESH_SOCKET");
	int i = 1;

	if (!sock || !*sock)
		sock = DEFAULT_SOCKET;
	while (i < argc && argv[i][0] == '-') {
		if (strcmp(argv[i], "-s") == 0 && i + 1 < argc) {
			sock = argv[i + 1];
			i += 2;
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (i >= argc) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[i];
	argc -= i;
	argv += i;
	if (strcmp(cmd, "get") == 0)
		return cmd_get(sock, argc, argv);
	if (strcmp(cmd, "apply") == 0)
		return cmd_apply(sock, argc, argv);
	if (strcmp(cmd, "delete") == 0)
		return cmd_delete(sock, argc, argv);
	if (strcmp(cmd, "stats") == 0)
		return cmd_stats(sock);
	if (strcmp(cmd, "ca") == 0)
		return cmd_ca(argc, argv);
	if (strcmp(cmd, "cert") == 0)
		return cmd_cert(sock, argc, argv);
	fprintf(stderr, "meshctl: unknown command \"%s\"\n", cmd);
	usage(stderr);
	return 2;
}

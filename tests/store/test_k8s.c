/* Decoding of Kubernetes objects: realistic kubectl output in
 * tests/store/fixtures/, the demo manifests in conf/examples/, and a table of
 * malformed objects whose error must name the JSON path at fault. */
#include "store/k8s.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>

#define FIXTURES EM_SOURCE_DIR "/tests/store/fixtures/"
#define EXAMPLES EM_SOURCE_DIR "/conf/examples/"

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n;

	cr_assert_not_null(f, "cannot open %s", path);
	cr_assert_eq(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	cr_assert_geq(n, 0);
	rewind(f);
	buf = malloc((size_t)n + 1);
	cr_assert_not_null(buf);
	cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = 0;
	fclose(f);
	*len = (size_t)n;
	return buf;
}

static struct em_k8s_object *decode_fixture(const char *name, int kind)
{
	char path[512], err[256] = "";
	struct em_k8s_object *o = NULL;
	size_t len;

	snprintf(path, sizeof(path), FIXTURES "%s", name);
	char *json = read_file(path, &len);
	int rc = em_k8s_decode(json, len, kind, &o, err, sizeof(err));
	free(json);
	cr_assert_eq(rc, 0, "%s: rc %d: %s", name, rc, err);
	cr_assert_not_null(o);
	return o;
}

static void expect_ip(const struct em_addr *a, const char *text)
{
	char buf[EM_ADDR_STRLEN];
	struct em_addr want = {0};
	int fam = strchr(text, ':') ? AF_INET6 : AF_INET;

	want.family = (uint8_t)fam;
	cr_assert_eq(inet_pton(fam, text, want.b), 1, "bad test address %s", text);
	inet_ntop(a->family ? a->family : AF_INET, a->b, buf, sizeof(buf));
	cr_expect(em_addr_eq(a, &want), "address %s (family %d), want %s", buf, a->family, text);
}

Test(k8s, service_named_and_numeric_target_ports)
{
	struct em_k8s_object *o = decode_fixture("service-web.json", -1);
	const struct em_k8s_service *s = &o->svc;

	cr_expect_eq(o->kind, EM_KIND_SERVICE);
	cr_expect_str_eq(o->name, "web");
	cr_expect_str_eq(o->ns, "shop");
	cr_expect_str_eq(o->resource_version, "48213");
	cr_expect_eq(s->type, EM_SVC_CLUSTER_IP);
	cr_expect_not(s->headless);
	cr_assert_eq(s->n_cluster_ips, 1);
	expect_ip(&s->cluster_ips[0], "10.96.12.34");
	cr_expect_null(s->external_name);
	cr_expect(s->affinity_client_ip);
	cr_expect_eq(s->affinity_timeout_s, 3600);
	cr_assert_eq(s->n_ports, 3);

	cr_expect_str_eq(s->ports[0].name, "http");
	cr_expect_eq(s->ports[0].protocol, IPPROTO_TCP);
	cr_expect_eq(s->ports[0].port, 80);
	cr_expect_eq(s->ports[0].target_port, 0);
	cr_assert_not_null(s->ports[0].target_port_name);
	cr_expect_str_eq(s->ports[0].target_port_name, "http");
	cr_expect_eq(s->ports[0].node_port, 0);

	/* "9091" is a number written as a string. */
	cr_expect_str_eq(s->ports[1].name, "metrics");
	cr_expect_eq(s->ports[1].port, 9090);
	cr_expect_eq(s->ports[1].target_port, 9091);
	cr_expect_null(s->ports[1].target_port_name);

	cr_expect_eq(s->ports[2].port, 8443);
	cr_expect_eq(s->ports[2].target_port, 50051);
	em_k8s_free(o);
}

Test(k8s, service_dual_stack_node_port)
{
	struct em_k8s_object *o = decode_fixture("service-dualstack.json", EM_KIND_SERVICE);
	const struct em_k8s_service *s = &o->svc;

	cr_expect_str_eq(o->ns, "default");
	cr_expect_eq(s->type, EM_SVC_NODE_PORT);
	cr_assert_eq(s->n_cluster_ips, 2);
	expect_ip(&s->cluster_ips[0], "10.96.0.20");
	expect_ip(&s->cluster_ips[1], "fd00:10:96::20");
	cr_expect(s->affinity_client_ip);
	cr_expect_eq(s->affinity_timeout_s, 10800, "default timeout, got %u",
	             s->affinity_timeout_s);
	cr_assert_eq(s->n_ports, 1);
	cr_expect_str_eq(s->ports[0].name, "");
	cr_expect_eq(s->ports[0].port, 8080);
	cr_expect_eq(s->ports[0].target_port, 8080);
	cr_expect_eq(s->ports[0].node_port, 30080);
	em_k8s_free(o);
}

Test(k8s, service_ipv6_protocols)
{
	struct em_k8s_object *o = decode_fixture("service-ipv6.json", -1);
	const struct em_k8s_service *s = &o->svc;

	cr_expect_str_eq(o->ns, "kube-system");
	cr_assert_eq(s->n_cluster_ips, 1);
	expect_ip(&s->cluster_ips[0], "fd00:10:96::a");
	cr_expect_not(s->affinity_client_ip);
	cr_assert_eq(s->n_ports, 3);
	cr_expect_eq(s->ports[0].protocol, IPPROTO_UDP);
	cr_expect_eq(s->ports[1].protocol, IPPROTO_TCP);
	cr_expect_eq(s->ports[2].protocol, IPPROTO_SCTP);
	cr_expect_str_eq(s->ports[1].name, "dns-tcp");
	em_k8s_free(o);
}

Test(k8s, service_headless)
{
	struct em_k8s_object *o = decode_fixture("service-headless.json", -1);

	cr_expect(o->svc.headless);
	cr_expect_eq(o->svc.n_cluster_ips, 0);
	cr_assert_eq(o->svc.n_ports, 1);
	cr_expect_eq(o->svc.ports[0].port, 5432);
	em_k8s_free(o);
}

Test(k8s, service_external_name)
{
	struct em_k8s_object *o = decode_fixture("service-externalname.json", -1);

	cr_expect_eq(o->svc.type, EM_SVC_EXTERNAL_NAME);
	cr_assert_not_null(o->svc.external_name);
	cr_expect_str_eq(o->svc.external_name, "search.example.com");
	cr_expect_eq(o->svc.n_cluster_ips, 0);
	cr_expect_eq(o->svc.n_ports, 0);
	em_k8s_free(o);
}

Test(k8s, endpoints_ready_then_not_ready)
{
	struct em_k8s_object *o = decode_fixture("endpoints-web.json", -1);
	const struct em_k8s_endpoints *ep = &o->ep;

	cr_expect_eq(o->kind, EM_KIND_ENDPOINTS);
	cr_assert_eq(ep->n_subsets, 2);
	const struct em_k8s_subset *ss = &ep->subsets[0];
	cr_assert_eq(ss->n_addrs, 3);
	expect_ip(&ss->addrs[0].ip, "10.244.1.7");
	cr_expect(ss->addrs[0].ready);
	cr_expect_str_eq(ss->addrs[0].node_name, "edge-node-1");
	cr_expect_str_eq(ss->addrs[0].pod_name, "web-7c9d8-abcde");
	cr_expect_str_eq(ss->addrs[0].pod_namespace, "shop");
	expect_ip(&ss->addrs[1].ip, "10.244.2.9");
	cr_expect(ss->addrs[1].ready);
	expect_ip(&ss->addrs[2].ip, "10.244.2.10");
	cr_expect_not(ss->addrs[2].ready);
	cr_expect_str_eq(ss->addrs[2].pod_name, "web-7c9d8-klmno");
	cr_assert_eq(ss->n_ports, 2);
	cr_expect_str_eq(ss->ports[0].name, "http");
	cr_expect_eq(ss->ports[0].port, 8080);
	cr_expect_eq(ss->ports[0].protocol, IPPROTO_TCP);
	cr_expect_eq(ss->ports[1].port, 9091);

	/* A targetRef to something other than a Pod is not a pod. */
	ss = &ep->subsets[1];
	cr_assert_eq(ss->n_addrs, 1);
	expect_ip(&ss->addrs[0].ip, "fd00:10:244::5");
	cr_expect_null(ss->addrs[0].pod_name);
	cr_expect_null(ss->addrs[0].pod_namespace);
	cr_expect_null(ss->addrs[0].node_name);
	cr_assert_eq(ss->n_ports, 1);
	cr_expect_str_eq(ss->ports[0].name, "");
	em_k8s_free(o);
}

Test(k8s, endpointslice_conditions)
{
	struct em_k8s_object *o = decode_fixture("endpointslice-web.json", EM_KIND_ENDPOINTSLICE);
	const struct em_k8s_endpointslice *sl = &o->slice;

	cr_expect_str_eq(o->name, "web-x7k2p");
	cr_assert_not_null(sl->service_name);
	cr_expect_str_eq(sl->service_name, "web");
	cr_expect_eq(sl->address_type, AF_INET);
	cr_assert_eq(sl->n_addrs, 3);
	expect_ip(&sl->addrs[0].ip, "10.244.1.7");
	cr_expect(sl->addrs[0].ready);
	cr_expect_str_eq(sl->addrs[0].node_name, "edge-node-1");
	cr_expect_str_eq(sl->addrs[0].pod_name, "web-7c9d8-abcde");
	expect_ip(&sl->addrs[1].ip, "10.244.2.10");
	cr_expect_not(sl->addrs[1].ready, "conditions.ready false");
	cr_expect(sl->addrs[2].ready, "conditions without ready means ready");
	cr_assert_eq(sl->n_ports, 2);
	cr_expect_str_eq(sl->ports[0].name, "http");
	cr_expect_eq(sl->ports[0].port, 8080);
	cr_expect_str_eq(sl->ports[1].name, "metrics");
	em_k8s_free(o);
}

Test(k8s, endpointslice_ipv6_multi_address_and_null_port)
{
	struct em_k8s_object *o = decode_fixture("endpointslice-ipv6.json", -1);
	const struct em_k8s_endpointslice *sl = &o->slice;

	cr_expect_eq(sl->address_type, AF_INET6);
	cr_expect_str_eq(sl->service_name, "api");
	cr_assert_eq(sl->n_addrs, 3);
	expect_ip(&sl->addrs[0].ip, "fd00:10:244::7");
	expect_ip(&sl->addrs[1].ip, "fd00:10:244::8");
	for (int i = 0; i < 2; i++) {
		cr_expect(sl->addrs[i].ready);
		cr_expect_str_eq(sl->addrs[i].node_name, "edge-node-1");
		cr_expect_str_eq(sl->addrs[i].pod_name, "api-6d5c4-qrstu");
	}
	expect_ip(&sl->addrs[2].ip, "fd00:10:244::9");
	cr_expect(sl->addrs[2].ready);
	cr_expect_null(sl->addrs[2].node_name);
	cr_expect_null(sl->addrs[2].pod_name);
	cr_assert_eq(sl->n_ports, 2);
	cr_expect_str_eq(sl->ports[0].name, "");
	cr_expect_eq(sl->ports[0].port, 0, "null port means all ports");
	cr_expect_eq(sl->ports[1].protocol, IPPROTO_UDP);
	cr_expect_eq(sl->ports[1].port, 8080);
	em_k8s_free(o);
}

Test(k8s, endpointslice_fqdn)
{
	struct em_k8s_object *o = decode_fixture("endpointslice-fqdn.json", -1);

	cr_expect_eq(o->slice.address_type, 0);
	cr_expect_eq(o->slice.n_addrs, 0);
	cr_expect_str_eq(o->slice.service_name, "search");
	cr_assert_eq(o->slice.n_ports, 1);
	cr_expect_eq(o->slice.ports[0].port, 443);
	em_k8s_free(o);
}

Test(k8s, pod_running)
{
	struct em_k8s_object *o = decode_fixture("pod-web.json", -1);
	const struct em_k8s_pod *p = &o->pod;
	bool saw_app = false;

	cr_expect_eq(o->kind, EM_KIND_POD);
	cr_assert_eq(p->n_ips, 2);
	expect_ip(&p->ips[0], "10.244.1.7");
	expect_ip(&p->ips[1], "fd00:10:244::7");
	cr_expect_str_eq(p->node_name, "edge-node-1");
	cr_expect_str_eq(p->phase, "Running");
	cr_assert_eq(p->n_labels, 3);
	for (size_t i = 0; i < p->n_labels; i++)
		if (strcmp(p->labels[i].key, "app") == 0)
			saw_app = strcmp(p->labels[i].value, "web") == 0;
	cr_expect(saw_app);
	cr_assert_eq(p->n_ports, 3);
	cr_expect_str_eq(p->ports[0].name, "http");
	cr_expect_eq(p->ports[0].port, 8080);
	cr_expect_str_eq(p->ports[1].name, "metrics");
	cr_expect_str_eq(p->ports[2].name, "");
	cr_expect_eq(p->ports[2].protocol, IPPROTO_UDP);
	cr_expect_eq(p->ports[2].port, 5353);
	em_k8s_free(o);
}

Test(k8s, pod_pending_has_no_ip)
{
	struct em_k8s_object *o = decode_fixture("pod-pending.json", EM_KIND_POD);

	cr_expect_str_eq(o->ns, "jobs");
	cr_expect_eq(o->pod.n_ips, 0);
	cr_expect_null(o->pod.node_name);
	cr_expect_str_eq(o->pod.phase, "Pending");
	cr_expect_eq(o->pod.n_ports, 0);
	cr_expect_eq(o->pod.n_labels, 0);
	em_k8s_free(o);
}

Test(k8s, node_addresses_and_tunnel_port)
{
	struct em_k8s_object *o = decode_fixture("node-edge.json", -1);
	const struct em_k8s_node *n = &o->node;

	cr_expect_eq(o->kind, EM_KIND_NODE);
	cr_expect_str_eq(o->name, "edge-node-2");
	cr_expect_str_eq(o->ns, EM_NODE_NAMESPACE);
	cr_expect_eq(n->tunnel_port, 20006);
	cr_assert_eq(n->n_addrs, 3);
	cr_expect_str_eq(n->addrs[0].type, "InternalIP");
	expect_ip(&n->addrs[0].ip, "192.0.2.12");
	expect_ip(&n->addrs[1].ip, "2001:db8::12");
	cr_expect_str_eq(n->addrs[2].type, "Hostname");
	cr_expect_str_eq(n->addrs[2].address, "edge-node-2");
	cr_expect_eq(n->addrs[2].ip.family, 0);
	em_k8s_free(o);
}

Test(k8s, kind_from_caller_when_object_has_none)
{
	static const char json[] = "{\"metadata\":{\"name\":\"n1\",\"namespace\":\"x\"}}";
	struct em_k8s_object *o = NULL;
	char err[128] = "";

	cr_assert_eq(em_k8s_decode(json, sizeof(json) - 1, EM_KIND_NODE, &o, err, sizeof(err)), 0,
	             "%s", err);
	cr_expect_eq(o->kind, EM_KIND_NODE);
	cr_expect_str_eq(o->ns, "default", "nodes are stored under the default namespace");
	cr_expect_eq(o->node.n_addrs, 0);
	em_k8s_free(o);

	cr_expect_eq(em_k8s_decode(json, sizeof(json) - 1, -1, &o, err, sizeof(err)), -EINVAL);
	cr_expect_null(o);
	cr_expect(strstr(err, "kind") != NULL, "err: %s", err);
}

Test(k8s, decode_json_tree)
{
	cJSON *root = cJSON_Parse("{\"kind\":\"Service\",\"metadata\":{\"name\":\"a\"},"
	                          "\"spec\":{\"clusterIP\":\"10.0.0.1\"}}");
	struct em_k8s_object *o = NULL;
	char err[128] = "";

	cr_assert_not_null(root);
	cr_assert_eq(em_k8s_decode_json(root, -1, &o, err, sizeof(err)), 0, "%s", err);
	cr_expect_str_eq(o->ns, "default");
	cr_expect_null(o->resource_version);
	cr_assert_eq(o->svc.n_cluster_ips, 1);
	expect_ip(&o->svc.cluster_ips[0], "10.0.0.1");
	em_k8s_free(o);
	cJSON_Delete(root);
}

/* Input that is not terminated must never be read past its length (ASan
 * watches the byte after the exact-size copy). */
Test(k8s, unterminated_input_and_every_prefix)
{
	static const char *const names[] = {"service-web.json", "endpointslice-web.json",
	                                    "node-edge.json"};
	for (size_t f = 0; f < EM_ARRAY_SIZE(names); f++) {
		char path[512], err[256];
		struct em_k8s_object *o = NULL;
		size_t len;

		snprintf(path, sizeof(path), FIXTURES "%s", names[f]);
		char *json = read_file(path, &len);
		char *exact = malloc(len);
		cr_assert_not_null(exact);
		memcpy(exact, json, len);
		cr_expect_eq(em_k8s_decode(exact, len, -1, &o, err, sizeof(err)), 0, "%s", err);
		em_k8s_free(o);
		/* Every strict prefix of an object is incomplete JSON. */
		for (size_t n = 0; n < len; n++) {
			size_t trimmed = len;
			while (trimmed && strchr(" \n\r\t", json[trimmed - 1]))
				trimmed--;
			if (n >= trimmed)
				break;
			o = NULL;
			int rc = em_k8s_decode(exact, n, -1, &o, err, sizeof(err));
			cr_assert_eq(rc, -EINVAL, "%s prefix %zu: rc %d", names[f], n, rc);
			cr_assert_null(o);
			cr_assert(strstr(err, "malformed JSON") != NULL, "prefix %zu: %s", n, err);
		}
		free(exact);
		free(json);
	}
}

struct bad_case {
	int kind;
	const char *json; /* single quotes stand for double quotes */
	const char *want; /* substring of the error */
};

static const struct bad_case bad_cases[] = {
        {-1, "{", "malformed JSON"},
        {-1, "", "malformed JSON"},
        {-1, "{'kind':'Service','metadata':{'name':'a'}} x", "trailing"},
        {-1, "[]", "expected a JSON object"},
        {-1, "{'kind':'Service'}", "metadata: missing"},
        {-1, "{'kind':'Service','metadata':[]}", "metadata: expected object"},
        {-1, "{'kind':'Service','metadata':{}}", "metadata.name: missing"},
        {-1, "{'kind':'Service','metadata':{'name':5}}", "metadata.name: expected string"},
        {-1, "{'kind':'Service','metadata':{'name':''}}", "metadata.name: expected non-empty"},
        {-1, "{'kind':'Service','metadata':{'name':'a/b'}}", "metadata.name: invalid character"},
        {-1, "{'kind':'Service','metadata':{'name':'a','namespace':3}}", "metadata.namespace"},
        {-1, "{'kind':'Deployment','metadata':{'name':'a'}}", "kind: unsupported kind"},
        {-1, "{'kind':7,'metadata':{'name':'a'}}", "kind: expected string"},
        {-1, "{'kind':'List','items':[]}", "kind: unsupported kind"},
        {EM_KIND_POD, "{'kind':'Service','metadata':{'name':'a'}}", "kind: expected Pod"},
        /* Service */
        {-1, "{'kind':'Service','metadata':{'name':'a'},'spec':'x'}", "spec: expected object"},
        {-1, "{'kind':'Service','metadata':{'name':'a'},'spec':{'ports':{}}}",
         "spec.ports: expected array"},
        {-1, "{'kind':'Service','metadata':{'name':'a'},'spec':{'ports':[{'port':80},{'port':0}]}}",
         "spec.ports[1].port: expected integer 1..65535"},
        {-1, "{'kind':'Service','metadata':{'name':'a'},'spec':{'ports':[{'port':65536}]}}",
         "spec.ports[0].port: expected integer 1..65535"},
        {-1, "{'kind':'Service','metadata':{'name':'a'},'spec':{'ports':[{'port':-1}]}}",
         "spec.ports[0].port: expected integer"},
        {-1, "{'kind':'Service','metadata':{'name':'a'},'spec':{'ports':[{'port':'80'}]}}",
         "spec.ports[0].port: expected integer"},
        {-1, "{'kind':'Service','metadata':{'name':'a'},'spec':{'ports':[{'port':80.5}]}}",
         "spec.ports[0].port: expected integer"},
        {-1, "{'kind':'Service','metadata':{'name':'a'},'spec':{'ports':[{'port':1e400}]}}",
         "spec.ports[0].port: expected integer"},
        {-1, "{'kind':'Service','metadata':{'name':'a'},'spec':{'ports':[{'name':'x'}]}}",
         "spec.ports[0].port: missing"},
        {-1, "{'kind':'Service','metadata':{'name':'a'},'spec':{'ports':[7]}}",
         "spec.ports[0]: expected object"},
        {-1, "{'kind':'Service','metadata':{'name':'a'},'spec':{'ports':[{'port':80,'name':1}]}}",
         "spec.ports[0].name: expected string"},
        {-1,
         "{'kind':'Service','metadata':{'name':'a'},'spec':{'ports':[{'port':80,'targetPort':0}]}}",
         "spec.ports[0].targetPort"},
        {-1,
         "{'kind':'Service','metadata':{'name':'a'},'spec':{'ports':[{'port':80,"
         "'targetPort':'70000'}]}}",
         "spec.ports[0].targetPort"},
        {-1,
         "{'kind':'Service','metadata':{'name':'a'},'spec':{'ports':[{'port':80,"
         "'targetPort':true}]}}",
         "spec.ports[0].targetPort"},
        {-1,
         "{'kind':'Service','metadata':{'name':'a'},'spec':{'ports':[{'port':80,"
         "'targetPort':''}]}}",
         "spec.ports[0].targetPort"},
        {-1,
         "{'kind':'Service','metadata':{'name':'a'},'spec':{'ports':[{'port':80,"
         "'nodePort':65536}]}}",
         "spec.ports[0].nodePort: expected integer 1..65535"},
        {-1,
         "{'kind':'Service','metadata':{'name':'a'},'spec':{'ports':[{'port':80,"
         "'protocol':'HTTP'}]}}",
         "spec.ports[0].protocol"},
        {-1, "{'kind':'Service','metadata':{'name':'a'},'spec':{'clusterIP':'10.96.0.300'}}",
         "spec.clusterIP: invalid IP address"},
        {-1, "{'kind':'Service','metadata':{'name':'a'},'spec':{'clusterIP':'10.96.0.1:80'}}",
         "spec.clusterIP: invalid IP address"},
        {-1, "{'kind':'Service','metadata':{'name':'a'},'spec':{'clusterIP':10}}",
         "spec.clusterIP: expected string"},
        {-1, "{'kind':'Service','metadata':{'name':'a'},'spec':{'clusterIPs':['10.0.0.1','nope']}}",
         "spec.clusterIPs[1]: invalid IP address"},
        {-1, "{'kind':'Service','metadata':{'name':'a'},'spec':{'clusterIPs':[1]}}",
         "spec.clusterIPs[0]: expected string"},
        {-1, "{'kind':'Service','metadata':{'name':'a'},'spec':{'clusterIPs':'10.0.0.1'}}",
         "spec.clusterIPs: expected array"},
        {-1, "{'kind':'Service','metadata':{'name':'a'},'spec':{'type':'Foo'}}",
         "spec.type: unknown service type"},
        {-1, "{'kind':'Service','metadata':{'name':'a'},'spec':{'type':'ExternalName'}}",
         "spec.externalName: missing"},
        {-1, "{'kind':'Service','metadata':{'name':'a'},'spec':{'sessionAffinity':'Sticky'}}",
         "spec.sessionAffinity"},
        {-1,
         "{'kind':'Service','metadata':{'name':'a'},'spec':{'sessionAffinity':'ClientIP',"
         "'sessionAffinityConfig':{'clientIP':{'timeoutSeconds':0}}}}",
         "spec.sessionAffinityConfig.clientIP.timeoutSeconds: expected integer"},
        {-1,
         "{'kind':'Service','metadata':{'name':'a'},'spec':{'sessionAffinity':'ClientIP',"
         "'sessionAffinityConfig':{'clientIP':{'timeoutSeconds':'60'}}}}",
         "spec.sessionAffinityConfig.clientIP.timeoutSeconds"},
        /* Endpoints */
        {-1, "{'kind':'Endpoints','metadata':{'name':'a'},'subsets':{}}",
         "subsets: expected array"},
        {-1,
         "{'kind':'Endpoints','metadata':{'name':'a'},'subsets':[{'addresses':[{'ip':'1.2.3.4'},"
         "{'ip':'1.2.3'}]}]}",
         "subsets[0].addresses[1].ip: invalid IP address"},
        {-1,
         "{'kind':'Endpoints','metadata':{'name':'a'},'subsets':[{},{'notReadyAddresses':[{}]}]}",
         "subsets[1].notReadyAddresses[0].ip: missing"},
        {-1,
         "{'kind':'Endpoints','metadata':{'name':'a'},'subsets':[{'addresses':[{'ip':'::1'}],"
         "'ports':[{'port':65536}]}]}",
         "subsets[0].ports[0].port: expected integer 1..65535"},
        {-1, "{'kind':'Endpoints','metadata':{'name':'a'},'subsets':[{'ports':[{'name':'x'}]}]}",
         "subsets[0].ports[0].port: missing"},
        {-1,
         "{'kind':'Endpoints','metadata':{'name':'a'},'subsets':[{'addresses':[{'ip':'::1',"
         "'nodeName':5}]}]}",
         "subsets[0].addresses[0].nodeName: expected string"},
        {-1,
         "{'kind':'Endpoints','metadata':{'name':'a'},'subsets':[{'addresses':[{'ip':'::1',"
         "'targetRef':'pod'}]}]}",
         "subsets[0].addresses[0].targetRef: expected object"},
        /* EndpointSlice */
        {-1, "{'kind':'EndpointSlice','metadata':{'name':'a'}}", "addressType: missing"},
        {-1, "{'kind':'EndpointSlice','metadata':{'name':'a'},'addressType':'IPv5'}",
         "addressType: expected IPv4, IPv6 or FQDN"},
        {-1,
         "{'kind':'EndpointSlice','metadata':{'name':'a'},'addressType':'IPv4',"
         "'endpoints':[{'addresses':['fd00::1']}]}",
         "endpoints[0].addresses[0]: invalid IPv4 address"},
        {-1,
         "{'kind':'EndpointSlice','metadata':{'name':'a'},'addressType':'IPv6',"
         "'endpoints':[{'addresses':['::1']},{'addresses':['10.0.0.1']}]}",
         "endpoints[1].addresses[0]: invalid IPv6 address"},
        {-1,
         "{'kind':'EndpointSlice','metadata':{'name':'a'},'addressType':'IPv4',"
         "'endpoints':[{'addresses':['10.0.0.1'],'conditions':{'ready':'yes'}}]}",
         "endpoints[0].conditions.ready: expected true or false"},
        {-1,
         "{'kind':'EndpointSlice','metadata':{'name':'a'},'addressType':'IPv4',"
         "'endpoints':[{'conditions':{}}]}",
         "endpoints[0].addresses: missing"},
        {-1,
         "{'kind':'EndpointSlice','metadata':{'name':'a'},'addressType':'IPv4',"
         "'ports':[{'port':0}]}",
         "ports[0].port: expected integer 1..65535"},
        {-1,
         "{'kind':'EndpointSlice','metadata':{'name':'a'},'addressType':'FQDN',"
         "'endpoints':[{'addresses':[5]}]}",
         "endpoints[0].addresses[0]: expected string"},
        {-1,
         "{'kind':'EndpointSlice','metadata':{'name':'a','labels':"
         "{'kubernetes.io/service-name':5}},'addressType':'IPv4'}",
         "metadata.labels.kubernetes.io/service-name: expected string"},
        /* Pod */
        {-1, "{'kind':'Pod','metadata':{'name':'a'},'status':{'podIP':'x'}}",
         "status.podIP: invalid IP address"},
        {-1,
         "{'kind':'Pod','metadata':{'name':'a'},'status':{'podIPs':[{'ip':'::1'},{'ip':'1::2::3'}]}"
         "}",
         "status.podIPs[1].ip: invalid IP address"},
        {-1, "{'kind':'Pod','metadata':{'name':'a'},'status':{'podIPs':['10.0.0.1']}}",
         "status.podIPs[0]: expected object"},
        {-1,
         "{'kind':'Pod','metadata':{'name':'a'},'spec':{'containers':[{'ports':[{'containerPort':"
         "80},{'containerPort':0}]}]}}",
         "spec.containers[0].ports[1].containerPort: expected integer 1..65535"},
        {-1,
         "{'kind':'Pod','metadata':{'name':'a'},'spec':{'containers':[{},{'ports':[{'name':'x'}]}]}"
         "}",
         "spec.containers[1].ports[0].containerPort: missing"},
        {-1, "{'kind':'Pod','metadata':{'name':'a','labels':{'app':1}}}",
         "metadata.labels.app: expected string"},
        {-1, "{'kind':'Pod','metadata':{'name':'a','labels':['app']}}",
         "metadata.labels: expected object"},
        {-1, "{'kind':'Pod','metadata':{'name':'a'},'spec':{'nodeName':1}}",
         "spec.nodeName: expected string"},
        {-1, "{'kind':'Pod','metadata':{'name':'a'},'status':{'phase':false}}",
         "status.phase: expected string"},
        /* Node */
        {-1,
         "{'kind':'Node','metadata':{'name':'a','annotations':{'edgemesh.io/tunnel-port':'x'}}}",
         "metadata.annotations[\"edgemesh.io/tunnel-port\"]: expected port"},
        {-1,
         "{'kind':'Node','metadata':{'name':'a','annotations':{'edgemesh.io/tunnel-port':'0'}}}",
         "metadata.annotations[\"edgemesh.io/tunnel-port\"]: expected port"},
        {-1,
         "{'kind':'Node','metadata':{'name':'a','annotations':{'edgemesh.io/tunnel-port':"
         "'65536'}}}",
         "metadata.annotations[\"edgemesh.io/tunnel-port\"]: expected port"},
        {-1, "{'kind':'Node','metadata':{'name':'a','annotations':{'edgemesh.io/tunnel-port':80}}}",
         "metadata.annotations[\"edgemesh.io/tunnel-port\"]: expected string"},
        {-1,
         "{'kind':'Node','metadata':{'name':'a'},'status':{'addresses':[{'type':'InternalIP',"
         "'address':'bad'}]}}",
         "status.addresses[0].address: invalid IP address"},
        {-1, "{'kind':'Node','metadata':{'name':'a'},'status':{'addresses':[{'address':'::1'}]}}",
         "status.addresses[0].type: missing"},
};

static char *unquote(const char *s)
{
	char *r = strdup(s);
	cr_assert_not_null(r);
	for (char *p = r; *p; p++)
		if (*p == '\'')
			*p = '"';
	return r;
}

Test(k8s, malformed_objects_name_the_path)
{
	for (size_t i = 0; i < EM_ARRAY_SIZE(bad_cases); i++) {
		const struct bad_case *c = &bad_cases[i];
		struct em_k8s_object *o = (struct em_k8s_object *)1;
		char err[256] = "";
		char *json = unquote(c->json);
		/* Exact-size copy, so ASan catches reads past the input. */
		size_t len = strlen(json);
		char *exact = malloc(len ? len : 1);
		cr_assert_not_null(exact);
		memcpy(exact, json, len);

		int rc = em_k8s_decode(exact, len, c->kind, &o, err, sizeof(err));
		cr_expect_eq(rc, -EINVAL, "case %zu (%s): rc %d", i, json, rc);
		cr_expect_null(o, "case %zu: output set on error", i);
		cr_expect(strstr(err, c->want) != NULL, "case %zu (%s): error \"%s\" lacks \"%s\"",
		          i, json, err, c->want);
		cr_expect(strchr(err, '\n') == NULL, "case %zu: error is not one line", i);
		if (rc == 0)
			em_k8s_free(o);
		free(exact);
		free(json);
	}
}

Test(k8s, small_error_buffer_is_truncated_safely)
{
	static const char json[] = "{\"kind\":\"Service\",\"metadata\":{\"name\":\"a\"},"
	                           "\"spec\":{\"ports\":[{\"port\":0}]}}";
	struct em_k8s_object *o = NULL;
	char err[8];

	memset(err, 'x', sizeof(err));
	cr_expect_eq(em_k8s_decode(json, sizeof(json) - 1, -1, &o, err, sizeof(err)), -EINVAL);
	cr_expect_eq(strnlen(err, sizeof(err)), sizeof(err) - 1);
	cr_expect_eq(em_k8s_decode(json, sizeof(json) - 1, -1, &o, NULL, 0), -EINVAL);
}

Test(k8s, kind_helpers)
{
	for (int k = 0; k < EM_KIND__COUNT; k++) {
		cr_expect_eq(em_kind_from_type(em_kind_type((enum em_kind)k)), k);
		cr_expect_eq(em_kind_from_name(em_kind_name((enum em_kind)k)), k);
	}
	cr_expect_str_eq(em_kind_type(EM_KIND_ENDPOINTSLICE), "endpointslice");
	cr_expect_str_eq(em_kind_name(EM_KIND_ENDPOINTSLICE), "EndpointSlice");
	cr_expect_eq(em_kind_from_type("svc"), EM_KIND_SERVICE);
	cr_expect_eq(em_kind_from_type("services"), EM_KIND_SERVICE);
	cr_expect_eq(em_kind_from_type("ep"), EM_KIND_ENDPOINTS);
	cr_expect_eq(em_kind_from_type("endpointslices"), EM_KIND_ENDPOINTSLICE);
	cr_expect_eq(em_kind_from_type("po"), EM_KIND_POD);
	cr_expect_eq(em_kind_from_type("pods"), EM_KIND_POD);
	cr_expect_eq(em_kind_from_type("no"), EM_KIND_NODE);
	cr_expect_eq(em_kind_from_type("Nodes"), EM_KIND_NODE);
	cr_expect_eq(em_kind_from_type("deployments"), -EINVAL);
	cr_expect_eq(em_kind_from_type(NULL), -EINVAL);
	cr_expect_eq(em_kind_from_name("service"), -EINVAL, "kind names are case-sensitive");
	cr_expect_eq(em_kind_from_name("List"), -EINVAL);
}

Test(k8s, keys)
{
	char buf[64];
	struct em_slice ns, name;

	cr_expect_eq(em_k8s_key(EM_KIND_SERVICE, "default", "web", buf, sizeof(buf)), 19);
	cr_expect_str_eq(buf, "default/service/web");
	cr_expect_eq(em_k8s_key(EM_KIND_ENDPOINTSLICE, "shop", "web-x7k2p", buf, sizeof(buf)),
	             (int)strlen("shop/endpointslice/web-x7k2p"));
	cr_expect_eq(em_k8s_key(EM_KIND_POD, "default", "web", buf, 15), -ENOSPC);
	cr_expect_eq(em_k8s_key(EM_KIND_POD, "default", "web", buf, 16), 15);
	cr_expect_eq(em_k8s_key(EM_KIND__COUNT, "default", "web", buf, sizeof(buf)), -EINVAL);

	cr_expect_eq(em_k8s_key_split("shop/endpointslice/web-x7k2p", &ns, &name),
	             EM_KIND_ENDPOINTSLICE);
	cr_expect(em_slice_eq(ns, "shop"));
	cr_expect(em_slice_eq(name, "web-x7k2p"));
	cr_expect_eq(em_k8s_key_split("default/node/edge-node-1", &ns, &name), EM_KIND_NODE);
	cr_expect(em_slice_eq(name, "edge-node-1"));
	cr_expect_eq(em_k8s_key_split("default/configmap/x", &ns, &name), -EINVAL);
	cr_expect_eq(em_k8s_key_split("default/services/x", &ns, &name), -EINVAL);
	cr_expect_eq(em_k8s_key_split("default/service/", &ns, &name), -EINVAL);
	cr_expect_eq(em_k8s_key_split("/service/x", &ns, &name), -EINVAL);
	cr_expect_eq(em_k8s_key_split("default/service", &ns, &name), -EINVAL);
	cr_expect_eq(em_k8s_key_split("", &ns, &name), -EINVAL);
}

/* The demo manifests must stay decodable: each file is one object or a
 * kubectl List of objects. */
static int decode_item(const cJSON *item, const char *file, struct em_k8s_object **o)
{
	char err[256] = "";
	int rc = em_k8s_decode_json(item, -1, o, err, sizeof(err));
	cr_expect_eq(rc, 0, "%s: %s", file, err);
	return rc;
}

static void check_example(const struct em_k8s_object *o, int *seen)
{
	seen[o->kind]++;
	if (o->kind == EM_KIND_SERVICE && strcmp(o->name, "web") == 0) {
		cr_assert_eq(o->svc.n_ports, 1);
		cr_expect_eq(o->svc.ports[0].port, 80);
		cr_expect_str_eq(o->svc.ports[0].target_port_name, "http");
	}
	if (o->kind == EM_KIND_SERVICE && strcmp(o->name, "echo") == 0) {
		cr_assert_eq(o->svc.n_ports, 1);
		cr_expect_eq(o->svc.ports[0].port, 7);
		cr_expect_eq(o->svc.ports[0].target_port, 7007);
	}
	/* Endpoint addresses of the demo are loopback only. */
	if (o->kind == EM_KIND_ENDPOINTS)
		for (size_t i = 0; i < o->ep.n_subsets; i++)
			for (size_t j = 0; j < o->ep.subsets[i].n_addrs; j++)
				cr_expect_eq(o->ep.subsets[i].addrs[j].ip.b[0], 127);
	if (o->kind == EM_KIND_ENDPOINTSLICE)
		for (size_t i = 0; i < o->slice.n_addrs; i++)
			cr_expect_eq(o->slice.addrs[i].ip.b[0], 127);
	if (o->kind == EM_KIND_POD)
		for (size_t i = 0; i < o->pod.n_ips; i++)
			cr_expect_eq(o->pod.ips[i].b[0], 127);
	if (o->kind == EM_KIND_NODE)
		for (size_t i = 0; i < o->node.n_addrs; i++)
			if (o->node.addrs[i].ip.family)
				cr_expect_eq(o->node.addrs[i].ip.b[0], 127);
}

Test(k8s, examples_decode)
{
	DIR *dir = opendir(EXAMPLES);
	struct dirent *de;
	int seen[EM_KIND__COUNT] = {0}, files = 0;

	cr_assert_not_null(dir, "cannot open " EXAMPLES);
	while ((de = readdir(dir))) {
		size_t nl = strlen(de->d_name), len;
		char path[512];
		if (nl < 6 || strcmp(de->d_name + nl - 5, ".json") != 0)
			continue;
		snprintf(path, sizeof(path), EXAMPLES "%s", de->d_name);
		char *text = read_file(path, &len);
		cJSON *root = cJSON_ParseWithLength(text, len);
		cr_assert_not_null(root, "%s: malformed JSON", path);
		const cJSON *kind = cJSON_GetObjectItemCaseSensitive(root, "kind");
		const cJSON *items = cJSON_GetObjectItemCaseSensitive(root, "items");
		const cJSON *it;
		struct em_k8s_object *o;

		if (cJSON_IsString(kind) && strcmp(kind->valuestring, "List") == 0) {
			cr_assert(cJSON_IsArray(items), "%s: List without items", path);
			cJSON_ArrayForEach(it, items)
			{
				if (decode_item(it, path, &o) == 0) {
					check_example(o, seen);
					em_k8s_free(o);
				}
			}
		} else if (decode_item(root, path, &o) == 0) {
			check_example(o, seen);
			em_k8s_free(o);
		}
		cJSON_Delete(root);
		free(text);
		files++;
	}
	closedir(dir);
	cr_expect_gt(files, 0);
	cr_expect_eq(seen[EM_KIND_NODE], 2);
	cr_expect_eq(seen[EM_KIND_SERVICE], 2);
	cr_expect_eq(seen[EM_KIND_ENDPOINTS], 2);
	cr_expect_geq(seen[EM_KIND_ENDPOINTSLICE], 1);
	cr_expect_geq(seen[EM_KIND_POD], 2);
}

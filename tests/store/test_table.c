/* Service table snapshots: building and lookups. Publication under
 * concurrent readers is tests/store/conc_table.c. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "store/k8s.h"
#include "store/table.h"

static struct em_k8s_object *decode(const char *json)
{
	struct em_k8s_object *o = NULL;
	char err[256];
	int rc = em_k8s_decode(json, strlen(json), -1, &o, err, sizeof(err));
	cr_assert_eq(rc, 0, "decode failed: %s\n%s", err, json);
	return o;
}

static struct em_k8s_object *service(const char *ns, const char *name, const char *ip,
                                     const char *ports_json, const char *extra)
{
	char buf[4096];
	snprintf(buf, sizeof(buf),
	         "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"%s\","
	         "\"namespace\":\"%s\"},\"spec\":{\"clusterIP\":\"%s\",\"ports\":%s%s}}",
	         name, ns, ip, ports_json, extra ? extra : "");
	return decode(buf);
}

static struct em_addr addr(const char *s)
{
	struct em_addr a;
	cr_assert_eq(em_addr_parse(s, true, &a), 0, "bad address %s", s);
	return a;
}

static struct em_table *build(struct em_k8s_object **objs, size_t n, const char *node, uint64_t gen)
{
	struct em_table_input in = {
	        .objs = (const struct em_k8s_object *const *)objs, .n_objs = n, .local_node = node};
	struct em_table *t = em_table_build(&in, gen);
	cr_assert_not_null(t);
	return t;
}

static void free_all(struct em_k8s_object **objs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		em_k8s_free(objs[i]);
}

Test(table, endpoints_from_endpoints_object_ready_first)
{
	struct em_k8s_object *objs[] = {
	        service("default", "web", "10.96.0.10",
	                "[{\"name\":\"http\",\"port\":80,\"targetPort\":\"http\"},"
	                "{\"name\":\"admin\",\"port\":9000,\"targetPort\":9001}]",
	                NULL),
	        decode("{\"kind\":\"Endpoints\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":"
	               "\"web\","
	               "\"namespace\":\"default\"},\"subsets\":[{\"addresses\":[{\"ip\":\"10.0.0."
	               "1\","
	               "\"nodeName\":\"n1\"},{\"ip\":\"10.0.0.2\",\"nodeName\":\"n2\"}],"
	               "\"notReadyAddresses\":[{\"ip\":\"10.0.0.3\",\"nodeName\":\"n1\"}],"
	               "\"ports\":[{\"name\":\"http\",\"port\":8080},{\"name\":\"admin\","
	               "\"port\":9001}]}]}"),
	};
	struct em_table *t = build(objs, 2, "n1", 7);
	struct em_addr dst = addr("10.96.0.10:80");
	const struct em_svc_port *sp = em_table_lookup(t, &dst, IPPROTO_TCP);

	cr_assert_eq(em_table_generation(t), 7);
	cr_assert_not_null(sp);
	cr_assert_str_eq(sp->name, "http");
	cr_assert_eq(sp->n_endpoints, 3);
	cr_assert_eq(sp->n_ready, 2);
	cr_assert_eq(sp->endpoints[0].addr.port, 8080);
	cr_assert(sp->endpoints[0].ready && sp->endpoints[1].ready && !sp->endpoints[2].ready);
	cr_assert(sp->endpoints[0].local, "n1 is the local node");
	cr_assert(!sp->endpoints[1].local, "n2 is remote");
	cr_assert_str_eq(sp->endpoints[1].node, "n2");

	dst.port = 9000;
	const struct em_svc_port *admin = em_table_lookup(t, &dst, IPPROTO_TCP);
	cr_assert_not_null(admin);
	cr_assert_eq(admin->endpoints[0].addr.port, 9001);
	cr_assert_null(em_table_lookup(t, &dst, IPPROTO_UDP));
	dst.port = 81;
	cr_assert_null(em_table_lookup(t, &dst, IPPROTO_TCP));

	const struct em_service *svc = em_table_service(t, "default", "web");
	cr_assert_not_null(svc);
	cr_assert_eq(svc->n_ports, 2);
	cr_assert_eq(em_service_port(svc, 9000, IPPROTO_TCP), admin);
	cr_assert_null(em_service_port(svc, 9001, IPPROTO_TCP));
	cr_assert_null(em_table_service(t, "other", "web"));
	em_table_free(t);
	free_all(objs, 2);
}

Test(table, slices_win_over_endpoints_and_dual_stack)
{
	struct em_k8s_object *objs[] = {
	        service("ns1", "api", "10.96.1.1",
	                "[{\"name\":\"\",\"port\":443,\"targetPort\":8443}]",
	                ",\"clusterIPs\":[\"10.96.1.1\",\"fd00::1:1\"]"),
	        decode("{\"kind\":\"Endpoints\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":"
	               "\"api\","
	               "\"namespace\":\"ns1\"},\"subsets\":[{\"addresses\":[{\"ip\":\"10.9.9.9\"}],"
	               "\"ports\":[{\"port\":8443}]}]}"),
	        decode("{\"kind\":\"EndpointSlice\",\"apiVersion\":\"discovery.k8s.io/v1\","
	               "\"metadata\":{\"name\":\"api-abc\",\"namespace\":\"ns1\",\"labels\":{"
	               "\"kubernetes.io/service-name\":\"api\"}},\"addressType\":\"IPv4\","
	               "\"endpoints\":[{\"addresses\":[\"10.1.0.1\"],\"conditions\":{\"ready\":"
	               "true}},"
	               "{\"addresses\":[\"10.1.0.2\"],\"conditions\":{\"ready\":false}}],"
	               "\"ports\":[{\"name\":\"\",\"port\":8443,\"protocol\":\"TCP\"}]}"),
	};
	struct em_table *t = build(objs, 3, "n1", 1);
	struct em_addr v4 = addr("10.96.1.1:443"), v6 = addr("[fd00::1:1]:443");
	const struct em_svc_port *a = em_table_lookup(t, &v4, IPPROTO_TCP);
	const struct em_svc_port *b = em_table_lookup(t, &v6, IPPROTO_TCP);

	cr_assert_not_null(a);
	cr_assert_eq(a, b, "both cluster IPs reach the same service port");
	cr_assert_eq(a->n_endpoints, 2, "the slice's endpoints, not the Endpoints object's");
	cr_assert_eq(a->n_ready, 1);
	struct em_addr want = addr("10.1.0.1:8443");
	cr_assert(em_addr_eq(&a->endpoints[0].addr, &want));
	em_table_free(t);
	free_all(objs, 3);
}

Test(table, named_target_port_through_pod_and_nodes)
{
	struct em_k8s_object *objs[] = {
	        service("default", "web", "10.96.0.20",
	                "[{\"name\":\"http\",\"port\":80,\"targetPort\":\"web\"}]", NULL),
	        /* no ports in the subset: the pod's container port named "web" */
	        decode("{\"kind\":\"Endpoints\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":"
	               "\"web\","
	               "\"namespace\":\"default\"},\"subsets\":[{\"addresses\":[{\"ip\":\"10.0.0."
	               "5\","
	               "\"targetRef\":{\"kind\":\"Pod\",\"name\":\"web-1\",\"namespace\":"
	               "\"default\"}}]}]}"),
	        decode("{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"web-1\","
	               "\"namespace\":\"default\"},\"spec\":{\"nodeName\":\"n1\",\"containers\":[{"
	               "\"name\":\"c\",\"ports\":[{\"name\":\"web\",\"containerPort\":8081}]}]},"
	               "\"status\":{\"phase\":\"Running\",\"podIP\":\"10.0.0.5\"}}"),
	        decode("{\"kind\":\"Node\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"n2\","
	               "\"annotations\":{\"edgemesh.io/tunnel-port\":\"20007\"}},\"status\":{"
	               "\"addresses\":[{\"type\":\"Hostname\",\"address\":\"n2\"},{\"type\":"
	               "\"InternalIP\",\"address\":\"192.0.2.7\"}]}}"),
	};
	struct em_table *t = build(objs, 4, "n1", 1);
	struct em_addr dst = addr("10.96.0.20:80");
	const struct em_svc_port *sp = em_table_lookup(t, &dst, IPPROTO_TCP);
	cr_assert_not_null(sp);
	cr_assert_eq(sp->n_ready, 1);
	cr_assert_eq(sp->endpoints[0].addr.port, 8081);
	cr_assert_str_eq(sp->endpoints[0].pod, "default/web-1");

	const struct em_node_info *n = em_table_node(t, "n2");
	cr_assert_not_null(n);
	cr_assert_eq(n->tunnel_port, 20007);
	struct em_addr ip;
	cr_assert_eq(em_addr_parse("192.0.2.7", false, &ip), 0);
	cr_assert(memcmp(n->internal_ip.b, ip.b, 16) == 0);
	cr_assert_null(em_table_node(t, "n3"));
	em_table_free(t);
	free_all(objs, 4);
}

Test(table, empty_and_headless)
{
	struct em_k8s_object *objs[] = {
	        service("default", "db", "None", "[{\"port\":5432}]", NULL),
	};
	struct em_table *t = build(objs, 1, "n1", 1);
	cr_assert_eq(em_table_service_count(t), 1);
	const struct em_service *svc = em_table_service(t, "default", "db");
	cr_assert_not_null(svc);
	cr_assert(svc->headless);
	cr_assert_eq(svc->ports[0].n_endpoints, 0);
	em_table_free(t);
	free_all(objs, 1);
}

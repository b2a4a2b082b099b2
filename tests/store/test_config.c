/* Configuration: shipped files, defaults, every error message, reload rules. */
#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proto/log.h"
#include "store/config.h"
#include "tests/selfsigned.h"

TestSuite(config, .timeout = 30);

#define NAME "conf/edge.json"
/* Keys must be at least 32 bytes. */
#define K32 "k0123456789abcdef0123456789abcde"
#define KEY "'tunnel':{'cluster_key':'" K32 "','encryption':'none'}"
/* The smallest valid edge config, as a prefix for the cases below. */
#define BASE "{'role':'edge','node_name':'n1'," KEY

/* Test inputs use ' for " to stay readable. */
static char *dq(const char *s)
{
	char *t = strdup(s);
	cr_assert_not_null(t);
	for (char *p = t; *p; p++)
		if (*p == '\'')
			*p = '"';
	return t;
}

static struct em_config *parse_ok(const char *json)
{
	char err[512] = "";
	struct em_config *cfg = NULL;
	char *t = dq(json);
	int rc = em_config_parse(NAME, t, strlen(t), &cfg, err, sizeof(err));
	cr_assert_eq(rc, 0, "%s: %s", json, err);
	cr_assert_not_null(cfg);
	free(t);
	return cfg;
}

static void expect_error(const char *json, const char *msg)
{
	char err[512] = "";
	struct em_config *cfg = (struct em_config *)1;
	char *t = dq(json);
	int rc = em_config_parse(NAME, t, strlen(t), &cfg, err, sizeof(err));
	cr_expect_eq(rc, -EINVAL, "%s: rc %d", json, rc);
	cr_expect_null(cfg, "%s", json);
	cr_expect_str_eq(err, msg, "input: %s", json);
	free(t);
}

#define PLACEHOLDER "change-me-to-a-long-random-cluster-key"

/* The shipped files carry a public placeholder key that the daemon refuses;
 * with a real key put in its place they must be valid as they are. */
static void load_shipped(const char *file, struct em_config **out)
{
	char path[512], err[512] = "", text[8192], *at;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "%s/conf/%s", EM_SOURCE_DIR, file);
	cr_assert_eq(em_config_load(path, out, err, sizeof(err)), -EINVAL);
	cr_assert_null(*out);
	cr_assert(strstr(err, ": tunnel.cluster_key: the placeholder key") != NULL, "%s", err);
	cr_assert(strstr(err, "openssl rand -hex 32") != NULL, "%s", err);

	cr_assert_not_null(f = fopen(path, "r"));
	n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = 0;
	cr_assert_not_null(at = strstr(text, PLACEHOLDER));
	memcpy(at, K32 "------", strlen(PLACEHOLDER));
	cr_assert_eq(em_config_parse(path, text, n, out, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq((*out)->path, path);
}

Test(config, shipped_edge)
{
	struct em_config *cfg;
	struct em_cidr want;
	char buf[EM_ADDR_STRLEN];

	load_shipped("edge.json", &cfg);
	cr_assert_eq(cfg->role, EM_ROLE_EDGE);
	cr_assert_str_eq(cfg->node_name, "edge-node-1");
	cr_assert_str_eq(cfg->data_dir, "/var/lib/edgemesh");
	cr_assert_str_eq(cfg->api_socket, "/var/lib/edgemesh/edgemesh.sock");
	cr_assert(cfg->capture.enabled);
	cr_assert_eq(cfg->capture.port, 15001);
	cr_assert_eq(cfg->capture.n_service_cidrs, 1);
	cr_assert_eq(em_cidr_parse("10.96.0.0/12", &want), 0);
	cr_assert_eq(cfg->capture.service_cidrs[0].prefix, 12);
	cr_assert(em_addr_eq(&cfg->capture.service_cidrs[0].addr, &want.addr));
	cr_assert_str_eq(em_addr_format(&cfg->tunnel.listen, true, buf, sizeof(buf)),
	                 "0.0.0.0:20006");
	cr_assert_gt(cfg->workers, 0);
	em_config_free(cfg);
}

Test(config, shipped_cloud)
{
	struct em_config *cfg;
	load_shipped("cloud.json", &cfg);
	cr_assert_eq(cfg->role, EM_ROLE_CLOUD);
	cr_assert_str_neq(cfg->node_name, "");
	cr_assert_not(cfg->capture.enabled);
	cr_assert_eq(cfg->tunnel.listen.family, AF_INET);
	cr_assert_str_eq(cfg->cloud.address, "");
	em_config_free(cfg);
}

Test(config, defaults)
{
	struct em_config *cfg = parse_ok(BASE "}");
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	char buf[EM_ADDR_STRLEN];

	cr_assert_str_eq(cfg->path, NAME);
	cr_assert_eq(cfg->role, EM_ROLE_EDGE);
	cr_assert_str_eq(cfg->data_dir, "/var/lib/edgemesh");
	cr_assert_str_eq(cfg->api_socket, "/var/lib/edgemesh/edgemesh.sock");
	cr_assert_eq(cfg->workers, (unsigned)(ncpu < 1 ? 1 : ncpu > 256 ? 256 : ncpu));
	cr_assert_eq(cfg->log_level, EM_LOG_INFO);
	cr_assert_eq(cfg->balancer, EM_LB_ROUND_ROBIN);
	cr_assert_eq(cfg->io_backend, EM_IO_AUTO);
	cr_assert_eq(cfg->fastpath.mode, EM_FASTPATH_AUTO);
	cr_assert_str_eq(cfg->fastpath.cgroup, "/sys/fs/cgroup/unified");
	cr_assert_not(cfg->capture.enabled);
	cr_assert_eq(cfg->capture.port, 15001);
	cr_assert_eq(cfg->capture.n_service_cidrs, 1);
	cr_assert_str_eq(
	        em_addr_format(&cfg->capture.service_cidrs[0].addr, false, buf, sizeof(buf)),
	        "10.96.0.0");
	cr_assert_eq(cfg->capture.service_cidrs[0].prefix, 12);
	cr_assert_eq(cfg->capture.n_exclude_cidrs, 0);
	cr_assert_eq(cfg->capture.n_exclude_ports, 0);
	cr_assert_eq(cfg->n_listeners, 0);
	cr_assert_str_eq(em_addr_format(&cfg->tunnel.listen, true, buf, sizeof(buf)),
	                 "0.0.0.0:20006");
	cr_assert_str_eq(cfg->tunnel.cluster_key, K32);
	cr_assert_str_eq(cfg->cloud.address, "");
	cr_assert_eq(cfg->timeouts.connect_ms, 5000);
	cr_assert_eq(cfg->timeouts.idle_ms, 300000);
	cr_assert_eq(cfg->timeouts.request_head_ms, 10000);
	cr_assert_eq(cfg->timeouts.sniff_ms, 100);
	cr_assert_eq(cfg->timeouts.shutdown_ms, 5000);
	cr_assert_eq(cfg->sockets.client_sndbuf, 0);
	cr_assert_eq(cfg->sockets.client_rcvbuf, 0);
	cr_assert_eq(cfg->sockets.upstream_sndbuf, 0);
	cr_assert_eq(cfg->sockets.upstream_rcvbuf, 0);
	em_config_free(cfg);

	/* api_socket follows data_dir; tunnels off need no key. */
	cfg = parse_ok("{'role':'cloud','node_name':'c.example','data_dir':'/tmp/em',"
	               "'tunnel':{'encryption':'none','listen':''}}");
	cr_assert_eq(cfg->role, EM_ROLE_CLOUD);
	cr_assert_str_eq(cfg->api_socket, "/tmp/em/edgemesh.sock");
	cr_assert_eq(cfg->tunnel.listen.family, 0);
	em_config_free(cfg);
}

Test(config, every_key_set)
{
	struct em_config *cfg = parse_ok(
	        "{'role':'edge','node_name':'edge-2','data_dir':'/d','api_socket':'/run/em.sock',"
	        "'workers':3,'log_level':'debug','balancer':'least_requests','io_backend':'epoll',"
	        "'fastpath':{'mode':'off','cgroup':'/sys/fs/cgroup/pods'},"
	        "'capture':{'enabled':true,'port':15006,'service_cidrs':['10.96.0.0/12','fd00::/"
	        "108'],"
	        "'exclude_cidrs':['10.96.0.1/32'],'exclude_ports':[22,6443]},"
	        "'listeners':[{'listen':'127.0.0.1:8080','service':'default/web','port':80}],"
	        "'tunnel':{'encryption':'none','listen':'[::]:20007','cluster_key':'secret-" K32 "'},"
	        "'cloud':{'address':'cloud.example.com:20006'},"
	        "'timeouts':{'connect_ms':1,'idle_ms':2,'request_head_ms':3,'sniff_ms':4,"
	        "'shutdown_ms':0},'sockets':{'client_sndbuf':65536,'client_rcvbuf':4096,"
	        "'upstream_sndbuf':268435456,'upstream_rcvbuf':1}}");
	cr_assert_str_eq(cfg->api_socket, "/run/em.sock");
	cr_assert_eq(cfg->workers, 3);
	cr_assert_eq(cfg->log_level, EM_LOG_DEBUG);
	cr_assert_eq(cfg->balancer, EM_LB_LEAST_REQUESTS);
	cr_assert_eq(cfg->io_backend, EM_IO_EPOLL);
	cr_assert_eq(cfg->fastpath.mode, EM_FASTPATH_OFF);
	cr_assert_str_eq(cfg->fastpath.cgroup, "/sys/fs/cgroup/pods");
	cr_assert_eq(cfg->capture.port, 15006);
	cr_assert_eq(cfg->capture.n_service_cidrs, 2);
	cr_assert_eq(cfg->capture.service_cidrs[1].addr.family, AF_INET6);
	cr_assert_eq(cfg->capture.service_cidrs[1].prefix, 108);
	cr_assert_eq(cfg->capture.n_exclude_cidrs, 1);
	cr_assert_eq(cfg->capture.exclude_cidrs[0].prefix, 32);
	cr_assert_eq(cfg->capture.n_exclude_ports, 2);
	cr_assert_eq(cfg->capture.exclude_ports[0], 22);
	cr_assert_eq(cfg->capture.exclude_ports[1], 6443);
	cr_assert_eq(cfg->n_listeners, 1);
	cr_assert_str_eq(cfg->listeners[0].service_ns, "default");
	cr_assert_str_eq(cfg->listeners[0].service_name, "web");
	cr_assert_eq(cfg->listeners[0].port, 80);
	cr_assert_eq(cfg->listeners[0].listen.port, 8080);
	cr_assert_eq(cfg->tunnel.listen.family, AF_INET6);
	cr_assert_eq(cfg->tunnel.listen.port, 20007);
	cr_assert_str_eq(cfg->cloud.address, "cloud.example.com:20006");
	cr_assert_eq(cfg->timeouts.connect_ms, 1);
	cr_assert_eq(cfg->timeouts.idle_ms, 2);
	cr_assert_eq(cfg->timeouts.request_head_ms, 3);
	cr_assert_eq(cfg->timeouts.sniff_ms, 4);
	cr_assert_eq(cfg->timeouts.shutdown_ms, 0);
	cr_assert_eq(cfg->sockets.client_sndbuf, 65536);
	cr_assert_eq(cfg->sockets.client_rcvbuf, 4096);
	cr_assert_eq(cfg->sockets.upstream_sndbuf, 268435456);
	cr_assert_eq(cfg->sockets.upstream_rcvbuf, 1);
	em_config_free(cfg);
}

Test(config, ipv6_listener)
{
	struct em_config *cfg =
	        parse_ok(BASE ",'listeners':["
	                      "{'listen':'[::1]:8080','service':'ns-a/svc.b','port':443},"
	                      "{'listen':'[fd00::1]:8080','service':'ns-a/svc','port':1},"
	                      "{'listen':'127.0.0.1:8080','service':'ns-a/svc','port':2}]}");
	struct in6_addr lo6 = IN6ADDR_LOOPBACK_INIT;
	cr_assert_eq(cfg->n_listeners, 3);
	cr_assert_eq(cfg->listeners[0].listen.family, AF_INET6);
	cr_assert_eq(cfg->listeners[0].listen.port, 8080);
	cr_assert_eq(memcmp(&cfg->listeners[0].listen.v6, &lo6, sizeof(lo6)), 0);
	cr_assert_str_eq(cfg->listeners[0].service_ns, "ns-a");
	cr_assert_str_eq(cfg->listeners[0].service_name, "svc.b");
	cr_assert_eq(cfg->listeners[0].port, 443);
	cr_assert_eq(cfg->listeners[1].listen.family, AF_INET6);
	cr_assert_eq(cfg->listeners[2].listen.family, AF_INET);
	em_config_free(cfg);

	/* An IPv6 address needs brackets before its port. */
	expect_error(BASE ",'listeners':[{'listen':'::1:8080','service':'a/b','port':1}]}",
	             NAME ": listeners[0].listen: expected \"ip:port\" (IPv4) or \"[ip]:port\" "
	                  "(IPv6)");
	expect_error(BASE ",'listeners':[{'listen':'[::1]','service':'a/b','port':1}]}",
	             NAME ": listeners[0].listen: expected \"ip:port\" (IPv4) or \"[ip]:port\" "
	                  "(IPv6)");
}

Test(config, unknown_and_duplicate_keys)
{
	expect_error(BASE ",'bogus':1}", NAME ": bogus: unknown key");
	expect_error(BASE ",'capture':{'enabled':false,'prot':1}}",
	             NAME ": capture.prot: unknown key");
	expect_error(BASE ",'listeners':[{'listen':'127.0.0.1:1','service':'a/b','port':1,'x':1}]}",
	             NAME ": listeners[0].x: unknown key");
	expect_error(BASE ",'timeouts':{'connect':5}}", NAME ": timeouts.connect: unknown key");
	expect_error(BASE ",'cloud':{'addr':'x:1'}}", NAME ": cloud.addr: unknown key");
	expect_error("{'role':'edge','role':'cloud','node_name':'n1'," KEY "}",
	             NAME ": role: duplicate key");
	expect_error(BASE ",'tunnel':{}}", NAME ": tunnel: duplicate key");
}

Test(config, top_level_errors)
{
	expect_error("[1,2]", NAME ": top level: expected object");
	expect_error("{'node_name':'n1'," KEY "}",
	             NAME ": role: expected \"edge\" or \"cloud\" (required key is missing)");
	expect_error("{'role':'Edge','node_name':'n1'," KEY "}",
	             NAME ": role: expected \"edge\" or \"cloud\"");
	expect_error("{'role':'edge'," KEY "}",
	             NAME ": node_name: expected DNS-1123 name (lower-case letters, digits, '-', "
	                  "'.'), 1..253 bytes (required key is missing)");
	expect_error("{'role':'edge','node_name':'Edge_1'," KEY "}",
	             NAME ": node_name: expected DNS-1123 name (lower-case letters, digits, '-', "
	                  "'.'), 1..253 bytes");
	expect_error("{'role':'edge','node_name':7," KEY "}",
	             NAME ": node_name: expected DNS-1123 name (lower-case letters, digits, '-', "
	                  "'.'), 1..253 bytes");
	expect_error(BASE ",'data_dir':''}",
	             NAME ": data_dir: expected non-empty path of at most 4000 bytes");
	expect_error(BASE ",'api_socket':''}",
	             NAME ": api_socket: expected non-empty path of at most 107 bytes (sun_path)");
	expect_error(BASE
	             ",'api_socket':'/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock'}",
	             NAME ": api_socket: expected non-empty path of at most 107 bytes (sun_path)");
	expect_error(
	        BASE ",'data_dir':'/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'}",
	        NAME ": api_socket: expected path of at most 107 bytes (sun_path): the default "
	             "<data_dir>/edgemesh.sock is too long, set api_socket");
	expect_error(BASE ",'workers':-1}", NAME ": workers: expected integer 0..256");
	expect_error(BASE ",'workers':257}", NAME ": workers: expected integer 0..256");
	expect_error(BASE ",'workers':1.5}", NAME ": workers: expected integer 0..256");
	expect_error(BASE ",'workers':'4'}", NAME ": workers: expected integer 0..256");
	expect_error(BASE ",'log_level':'verbose'}",
	             NAME ": log_level: expected \"error\", \"warn\", \"info\" or \"debug\"");
	expect_error(BASE ",'balancer':'weighted'}",
	             NAME ": balancer: expected \"round_robin\", \"random\" or \"least_requests\"");
	expect_error(BASE ",'io_backend':'poll'}",
	             NAME ": io_backend: expected \"auto\", \"io_uring\" or \"epoll\"");
	expect_error(BASE ",'fastpath':{'mode':'on'}}",
	             NAME ": fastpath.mode: expected \"auto\" or \"off\"");
	expect_error(BASE ",'fastpath':{'cgroup':'sys/fs/cgroup'}}",
	             NAME ": fastpath.cgroup: expected absolute path of a cgroup v2 directory, "
	                  "at most 4000 bytes");
	expect_error(BASE ",'fastpath':{'cgroup':'/sys/fs/cgroup/../../etc'}}",
	             NAME ": fastpath.cgroup: expected absolute path of a cgroup v2 directory, "
	                  "at most 4000 bytes");
	expect_error(BASE ",'fastpath':{'cgroup':'/sys/fs/cgroup/a/..'}}",
	             NAME ": fastpath.cgroup: expected absolute path of a cgroup v2 directory, "
	                  "at most 4000 bytes");
	expect_error(BASE ",'fastpath':{'cgroups':'/sys'}}", NAME ": fastpath.cgroups: unknown key");
	expect_error(BASE ",'io_backend':1}",
	             NAME ": io_backend: expected \"auto\", \"io_uring\" or \"epoll\"");
}

Test(config, capture_errors)
{
	expect_error(BASE ",'capture':true}", NAME ": capture: expected object");
	expect_error(BASE ",'capture':{'enabled':'yes'}}",
	             NAME ": capture.enabled: expected true or false");
	expect_error(BASE ",'capture':{'port':0}}",
	             NAME ": capture.port: expected integer 1..65535");
	expect_error(BASE ",'capture':{'port':65536}}",
	             NAME ": capture.port: expected integer 1..65535");
	expect_error(BASE ",'capture':{'port':'15001'}}",
	             NAME ": capture.port: expected integer 1..65535");
	expect_error(BASE ",'capture':{'service_cidrs':'10.96.0.0/12'}}",
	             NAME ": capture.service_cidrs: expected array of at most 256 CIDR strings");
	expect_error(BASE ",'capture':{'service_cidrs':['10.96.0.0/12','10.300.0.0/16']}}",
	             NAME ": capture.service_cidrs[1]: expected CIDR string like \"10.96.0.0/12\" "
	                  "or \"fd00::/108\"");
	expect_error(BASE ",'capture':{'service_cidrs':['10.96.0.0/33']}}",
	             NAME ": capture.service_cidrs[0]: expected CIDR string like \"10.96.0.0/12\" "
	                  "or \"fd00::/108\"");
	expect_error(BASE ",'capture':{'exclude_cidrs':[10]}}",
	             NAME ": capture.exclude_cidrs[0]: expected CIDR string like \"10.96.0.0/12\" "
	                  "or \"fd00::/108\"");
	expect_error(BASE ",'capture':{'exclude_ports':[22,0]}}",
	             NAME ": capture.exclude_ports[1]: expected integer 1..65535");
	expect_error(BASE ",'capture':{'exclude_ports':22}}",
	             NAME ": capture.exclude_ports: expected array of at most 256 ports");
	expect_error(BASE ",'capture':{'enabled':true,'service_cidrs':[]}}",
	             NAME ": capture.service_cidrs: expected at least one CIDR when "
	                  "capture.enabled is true");
	/* An empty list is fine while capture is off. */
	em_config_free(parse_ok(BASE ",'capture':{'enabled':false,'service_cidrs':[]}}"));
}

Test(config, listener_errors)
{
	expect_error(BASE ",'listeners':{}}",
	             NAME ": listeners: expected array of at most 256 listener objects");
	expect_error(BASE ",'listeners':[5]}", NAME ": listeners[0]: expected object");
	expect_error(BASE ",'listeners':[{'listen':'127.0.0.1:80','service':'a/b','port':1},"
	                  "{'listen':'localhost:80','service':'a/b','port':1}]}",
	             NAME ": listeners[1].listen: expected \"ip:port\" (IPv4) or \"[ip]:port\" "
	                  "(IPv6)");
	expect_error(BASE ",'listeners':[{'listen':'127.0.0.1:80','service':'web','port':1}]}",
	             NAME ": listeners[0].service: expected \"namespace/name\"");
	expect_error(BASE ",'listeners':[{'listen':'127.0.0.1:80','service':'Default/web',"
	                  "'port':1}]}",
	             NAME ": listeners[0].service: expected \"namespace/name\"");
	expect_error(BASE ",'listeners':[{'listen':'127.0.0.1:80','service':'a/','port':1}]}",
	             NAME ": listeners[0].service: expected \"namespace/name\"");
	expect_error(BASE ",'listeners':[{'listen':'127.0.0.1:80','service':'a/b/c','port':1}]}",
	             NAME ": listeners[0].service: expected \"namespace/name\"");
	expect_error(BASE ",'listeners':[{'listen':'127.0.0.1:80','service':'a/b','port':0}]}",
	             NAME ": listeners[0].port: expected integer 1..65535");
	expect_error(BASE ",'listeners':[{'service':'a/b','port':1}]}",
	             NAME ": listeners[0].listen: expected \"ip:port\" (IPv4) or \"[ip]:port\" "
	                  "(IPv6) (required key is missing)");
	expect_error(BASE ",'listeners':[{'listen':'127.0.0.1:80','port':1}]}",
	             NAME ": listeners[0].service: expected \"namespace/name\" (required key is "
	                  "missing)");
	expect_error(BASE ",'listeners':[{'listen':'127.0.0.1:80','service':'a/b'}]}",
	             NAME ": listeners[0].port: expected integer 1..65535 (required key is "
	                  "missing)");
	expect_error(BASE ",'listeners':[{'listen':'127.0.0.1:80','service':'a/b','port':1},"
	                  "{'listen':'127.0.0.1:80','service':'a/c','port':2}]}",
	             NAME ": listeners[1].listen: expected an address not used by listeners[0]");
}

Test(config, tunnel_cloud_timeout_errors)
{
	expect_error("{'role':'edge','node_name':'n1'}",
	             NAME ": tunnel.cluster_key: expected non-empty string when tunnel.listen is "
	                  "on (default \"0.0.0.0:20006\"; \"\" turns it off)");
	expect_error("{'role':'edge','node_name':'n1','tunnel':{'encryption':'none','listen':'','cluster_key':''},"
	             "'cloud':{'address':'cloud:20006'}}",
	             NAME
	             ": tunnel.cluster_key: expected non-empty string when cloud.address is set");
	expect_error(BASE ",'tunnel':{'encryption':'none','listen':'0.0.0.0'}}", NAME ": tunnel: duplicate key");
	expect_error(
	        "{'role':'edge','node_name':'n1','tunnel':{'encryption':'none','listen':'0.0.0.0','cluster_key':'" K32
	        "'}}",
	        NAME ": tunnel.listen: expected \"ip:port\", \"[ip]:port\" or \"\" (off)");
	expect_error("{'role':'edge','node_name':'n1','tunnel':{'encryption':'none','cluster_key':5}}",
	             NAME ": tunnel.cluster_key: expected string of at most 255 bytes");
	expect_error(BASE ",'cloud':{'address':'cloud'}}",
	             NAME ": cloud.address: expected \"host:port\" or \"\"");
	expect_error(BASE ",'cloud':{'address':'cloud:0'}}",
	             NAME ": cloud.address: expected \"host:port\" or \"\"");
	expect_error(BASE ",'cloud':{'address':'bad host:80'}}",
	             NAME ": cloud.address: expected \"host:port\" or \"\"");
	expect_error("{'role':'cloud','node_name':'n1'," KEY ",'cloud':{'address':'x:1'}}",
	             NAME ": cloud.address: expected \"\" for role \"cloud\"");
	em_config_free(parse_ok(BASE ",'cloud':{'address':'[fd00::1]:20006'}}"));
	em_config_free(parse_ok(BASE ",'cloud':{'address':'10.0.0.1:20006'}}"));

	expect_error(BASE ",'timeouts':{'connect_ms':0}}",
	             NAME ": timeouts.connect_ms: expected integer 1..600000");
	expect_error(BASE ",'timeouts':{'idle_ms':86400001}}",
	             NAME ": timeouts.idle_ms: expected integer 1..86400000");
	expect_error(BASE ",'timeouts':{'request_head_ms':null}}",
	             NAME ": timeouts.request_head_ms: expected integer 1..600000");
	expect_error(BASE ",'timeouts':{'sniff_ms':20000}}",
	             NAME ": timeouts.sniff_ms: expected integer 1..10000");
	expect_error(BASE ",'sockets':{'client_sndbuf':268435457}}",
	             NAME ": sockets.client_sndbuf: expected integer 0..268435456");
	expect_error(BASE ",'sockets':{'upstream_rcvbuf':-1}}",
	             NAME ": sockets.upstream_rcvbuf: expected integer 0..268435456");
	expect_error(BASE ",'sockets':{'client_sendbuf':1}}",
	             NAME ": sockets.client_sendbuf: unknown key");
	expect_error(BASE ",'timeouts':{'shutdown_ms':-1}}",
	             NAME ": timeouts.shutdown_ms: expected integer 0..600000");
	expect_error(BASE ",'timeouts':[]}", NAME ": timeouts: expected object");
}

/* The first error in file order is the one reported. */
Test(config, first_error_wins)
{
	expect_error(BASE ",'workers':-1,'bogus':1}", NAME ": workers: expected integer 0..256");
	expect_error(BASE ",'bogus':1,'workers':-1}", NAME ": bogus: unknown key");
}

Test(config, syntax_errors)
{
	expect_error("{\n  'role': 'edge',\n  'node_name': edge-node\n}",
	             NAME ":3: JSON syntax error near 'edge-node'");
	/* A missing comma shows where the next key starts. */
	expect_error("{\n'role':'edge'\n'node_name':'n1'}",
	             NAME ":3: JSON syntax error near '\"node_name\":\"n1\"'");
	expect_error("{'role':'edge',\n\n\n'listeners':[1,2,]}",
	             NAME ":4: JSON syntax error near ']}'");
	expect_error("{'role':'edge'}\n\nx", NAME ":3: JSON syntax error near 'x'");
	expect_error("", NAME ":1: JSON syntax error at end of file");
	expect_error("{'role':\n", NAME ":2: JSON syntax error at end of file");

	/* A NUL inside the text is an error, not the end of the file. */
	char err[256];
	struct em_config *cfg;
	static const char nul[] = "{\"role\":\"edge\"}\0{}";
	cr_assert_eq(em_config_parse(NAME, nul, sizeof(nul) - 1, &cfg, err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, NAME ":1: JSON syntax error near '?{}'");
}

Test(config, load_errors)
{
	char err[256], path[] = "/tmp/em-test-config-XXXXXX";
	struct em_config *cfg;
	int fd;

	cr_assert_eq(em_config_load("/nonexistent/edge.json", &cfg, err, sizeof(err)), -ENOENT);
	cr_assert_str_eq(err, "/nonexistent/edge.json: cannot open: No such file or directory");
	cr_assert_eq(em_config_load("/tmp", &cfg, err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, "/tmp: expected a regular file of at most 1048576 bytes");

	fd = mkstemp(path);
	cr_assert_neq(fd, -1);
	static const char text[] =
	        "{\"role\": \"edge\",\n \"node_name\": \"n1\",\n \"workers\": 999,\n"
	        " \"tunnel\": {\"listen\": \"\"}}\n";
	cr_assert_eq(write(fd, text, sizeof(text) - 1), (ssize_t)sizeof(text) - 1);
	close(fd);
	cr_assert_eq(em_config_load(path, &cfg, err, sizeof(err)), -EINVAL);
	char want[128];
	snprintf(want, sizeof(want), "%s: workers: expected integer 0..256", path);
	cr_assert_str_eq(err, want);
	unlink(path);
}

static struct em_config *with(const char *extra)
{
	char buf[1024];
	snprintf(buf, sizeof(buf), "{'role':'edge','node_name':'n1'%s}", extra);
	return parse_ok(buf);
}

static void restart(const char *a, const char *b, const char *key)
{
	struct em_config *x = with(a), *y = with(b);
	const char *got = em_config_restart_key(x, y);
	if (key)
		cr_expect(got && strcmp(got, key) == 0, "%s -> %s: got %s, want %s", a, b,
		          got ? got : "NULL", key);
	else
		cr_expect_null(got, "%s -> %s: got %s", a, b, got);
	em_config_free(x);
	em_config_free(y);
}

Test(config, restart_key)
{
	static const char *L1 = ",'listeners':[{'listen':'127.0.0.1:80','service':'a/b','port':1}]";
	static const char *L1b =
	        ",'listeners':[{'listen':'127.0.0.1:80','service':'a/c','port':2}]";
	static const char *L1c =
	        ",'listeners':[{'listen':'127.0.0.1:81','service':'a/b','port':1}]";
	static const char *L2 = ",'listeners':[{'listen':'127.0.0.1:80','service':'a/b','port':1},"
	                        "{'listen':'[::1]:80','service':'a/b','port':1}]";

	/* Live changes. */
	restart("," KEY, "," KEY, NULL);
	restart("," KEY ",'log_level':'info'", "," KEY ",'log_level':'debug'", NULL);
	restart("," KEY, "," KEY ",'balancer':'random'", NULL);
	restart("," KEY, ",'tunnel':{'encryption':'none','cluster_key':'other-" K32 "'}", NULL);
	restart("," KEY, "," KEY ",'timeouts':{'connect_ms':100,'sniff_ms':5}", NULL);
	restart("," KEY, "," KEY ",'cloud':{'address':'c:1'}", "cloud.address");
	restart("," KEY, "," KEY ",'io_backend':'epoll'", "io_backend");
	restart("," KEY ",'io_backend':'auto'", "," KEY, NULL);
	restart("," KEY, "," KEY ",'fastpath':{'mode':'off'}", "fastpath.mode");
	restart("," KEY, "," KEY ",'fastpath':{'cgroup':'/sys/fs/cgroup/x'}", "fastpath.cgroup");
	restart("," KEY ",'fastpath':{'mode':'auto'}", "," KEY, NULL);
	restart("," KEY ",'cloud':{'address':'c:1'}", "," KEY ",'cloud':{'address':'c:1'}", NULL);
	{
		char a[512], b[512];
		snprintf(a, sizeof(a), ",%s%s", KEY, L1);
		snprintf(b, sizeof(b), ",%s%s", KEY, L1b);
		restart(a, b, NULL);
		snprintf(b, sizeof(b), ",%s%s", KEY, L1c);
		restart(a, b, "listeners.listen");
		snprintf(b, sizeof(b), ",%s%s", KEY, L2);
		restart(a, b, "listeners");
	}

	/* Restart needed. */
	struct em_config *x = with("," KEY), *y = with("," KEY);
	snprintf(y->node_name, sizeof(y->node_name), "n2");
	cr_expect_str_eq(em_config_restart_key(x, y), "node_name");
	y->role = EM_ROLE_CLOUD;
	cr_expect_str_eq(em_config_restart_key(x, y), "role");
	em_config_free(x);
	em_config_free(y);
	restart("," KEY, "," KEY ",'data_dir':'/srv/em'", "data_dir");
	restart("," KEY, "," KEY ",'api_socket':'/run/em.sock'", "api_socket");
	restart("," KEY ",'workers':1", "," KEY ",'workers':2", "workers");
	restart("," KEY, "," KEY ",'capture':{'enabled':true}", "capture.enabled");
	restart("," KEY, "," KEY ",'capture':{'port':15002}", "capture.port");
	restart("," KEY, "," KEY ",'capture':{'service_cidrs':['10.96.0.0/16']}",
	        "capture.service_cidrs");
	restart("," KEY, "," KEY ",'capture':{'exclude_cidrs':['10.96.0.1/32']}",
	        "capture.exclude_cidrs");
	restart("," KEY, "," KEY ",'capture':{'exclude_ports':[22]}", "capture.exclude_ports");
	restart("," KEY, ",'tunnel':{'encryption':'none','listen':'0.0.0.0:20007','cluster_key':'" K32 "'}",
	        "tunnel.listen");
	restart("," KEY, ",'tunnel':{'encryption':'none','listen':''}", "tunnel.listen");
}

#define TKEY(x) "{'role':'edge','node_name':'n1','tunnel':{'encryption':'none','cluster_key':'" K32 "'," x "}}"

Test(config, tunnel_session_keys)
{
	struct em_config *cfg = parse_ok(BASE "}");
	cr_expect_eq(cfg->tunnel.max_streams, 1024);
	cr_expect_eq(cfg->tunnel.stream_window, 256 * 1024);
	cr_expect_eq(cfg->tunnel.stream_window_max, 16 * 1024 * 1024);
	cr_expect_eq(cfg->tunnel.window_cap, 64ull * 1024 * 1024);
	cr_expect_eq(cfg->tunnel.keepalive_ms, 10000);
	cr_expect_eq(cfg->tunnel.dead_after_ms, 30000);
	cr_expect_eq(cfg->tunnel.reconnect_min_ms, 200);
	cr_expect_eq(cfg->tunnel.reconnect_max_ms, 30000);
	em_config_free(cfg);

	cfg = parse_ok(TKEY("'max_streams':2000,'stream_window':65536,'stream_window_max':1048576,"
	                    "'window_cap':8388608,'keepalive_ms':500,'dead_after_ms':1500,"
	                    "'reconnect_min_ms':50,'reconnect_max_ms':2000"));
	cr_expect_eq(cfg->tunnel.max_streams, 2000);
	cr_expect_eq(cfg->tunnel.stream_window, 65536);
	cr_expect_eq(cfg->tunnel.stream_window_max, 1048576);
	cr_expect_eq(cfg->tunnel.window_cap, 8388608);
	cr_expect_eq(cfg->tunnel.keepalive_ms, 500);
	cr_expect_eq(cfg->tunnel.dead_after_ms, 1500);
	cr_expect_eq(cfg->tunnel.reconnect_min_ms, 50);
	cr_expect_eq(cfg->tunnel.reconnect_max_ms, 2000);
	em_config_free(cfg);

	expect_error(TKEY("'max_streams':0"),
	             NAME ": tunnel.max_streams: expected integer 1..65536");
	expect_error(TKEY("'stream_window':1000"),
	             NAME ": tunnel.stream_window: expected integer 16384..2147483647");
	expect_error(TKEY("'stream_window_max':'big'"),
	             NAME ": tunnel.stream_window_max: expected integer 16384..2147483647");
	expect_error(TKEY("'window_cap':1.5"),
	             NAME ": tunnel.window_cap: expected integer 16384..1099511627776");
	expect_error(TKEY("'keepalive_ms':50"),
	             NAME ": tunnel.keepalive_ms: expected integer 100..600000");
	expect_error(TKEY("'dead_after_ms':100"),
	             NAME ": tunnel.dead_after_ms: expected integer 200..600000");
	expect_error(TKEY("'reconnect_min_ms':0"),
	             NAME ": tunnel.reconnect_min_ms: expected integer 10..600000");
	expect_error(TKEY("'reconnect_max_ms':true"),
	             NAME ": tunnel.reconnect_max_ms: expected integer 10..600000");
	expect_error(TKEY("'stream_window':1048576,'stream_window_max':65536"),
	             NAME ": tunnel.stream_window_max: expected integer >= tunnel.stream_window "
	                  "(1048576)");
	expect_error(TKEY("'window_cap':65536"),
	             NAME ": tunnel.window_cap: expected integer >= tunnel.stream_window_max "
	                  "(16777216)");
	expect_error(TKEY("'keepalive_ms':5000,'dead_after_ms':5000"),
	             NAME ": tunnel.dead_after_ms: expected integer > tunnel.keepalive_ms (5000)");
	expect_error(TKEY("'reconnect_min_ms':500,'reconnect_max_ms':100"),
	             NAME ": tunnel.reconnect_max_ms: expected integer >= tunnel.reconnect_min_ms "
	                  "(500)");
	expect_error(TKEY("'max_stream':5"), NAME ": tunnel.max_stream: unknown key");
}

/* capture.mark: the SO_MARK of the daemon's own dials and the first RETURN
 * of the capture chain. */
Test(config, capture_mark)
{
	struct em_config *cfg = parse_ok(BASE "}");
	cr_expect_eq(cfg->capture.mark, 0x1e4du);
	em_config_free(cfg);
	cfg = parse_ok(BASE ",'capture':{'mark':4294967295}}");
	cr_expect_eq(cfg->capture.mark, 0xffffffffu);
	em_config_free(cfg);
	expect_error(BASE ",'capture':{'mark':0}}",
	             NAME ": capture.mark: expected integer 1..4294967295");
	expect_error(BASE ",'capture':{'mark':4294967296}}",
	             NAME ": capture.mark: expected integer 1..4294967295");
	expect_error(BASE ",'capture':{'mark':'0x1e4d'}}",
	             NAME ": capture.mark: expected integer 1..4294967295");
	restart("," KEY, "," KEY ",'capture':{'mark':1}", "capture.mark");
}

Test(config, cluster_key_strength)
{
	expect_error("{'role':'edge','node_name':'n1','tunnel':{'encryption':'none','cluster_key':'short'}}",
	             NAME ": tunnel.cluster_key: expected at least 32 bytes, got 5: make one "
	                  "with `openssl rand -hex 32`");
	/* One byte short of the minimum, then the minimum. */
	expect_error("{'role':'edge','node_name':'n1','tunnel':{'encryption':'none','cluster_key':"
	             "'k0123456789abcdef0123456789abcd'}}",
	             NAME ": tunnel.cluster_key: expected at least 32 bytes, got 31: make one "
	                  "with `openssl rand -hex 32`");
	em_config_free(parse_ok(BASE "}"));
	/* A node that only dials the cloud needs a strong key as well. */
	expect_error("{'role':'edge','node_name':'n1','tunnel':{'encryption':'none','listen':'','cluster_key':'k'},"
	             "'cloud':{'address':'cloud:20006'}}",
	             NAME ": tunnel.cluster_key: expected at least 32 bytes, got 1: make one "
	                  "with `openssl rand -hex 32`");
	expect_error("{'role':'edge','node_name':'n1','tunnel':{'encryption':'none','cluster_key':'" PLACEHOLDER "'}}",
	             NAME ": tunnel.cluster_key: the placeholder key shipped with edgemesh is "
	                  "public and is refused; expected a secret of at least 32 bytes shared "
	                  "by the cluster's nodes: make one with `openssl rand -hex 32`");
}

#define CAP(cidrs) BASE ",'capture':{'enabled':true,'service_cidrs':[" cidrs "]}}"

Test(config, service_cidrs_too_wide)
{
	expect_error(CAP("'0.0.0.0/0'"),
	             NAME ": capture.service_cidrs[0]: 0.0.0.0/0 would capture far more than the "
	                  "cluster's services; expected an IPv4 prefix of /8 or longer, the "
	                  "cluster's service range (e.g. \"10.96.0.0/12\")");
	expect_error(CAP("'10.96.0.0/12','::/0'"),
	             NAME ": capture.service_cidrs[1]: ::/0 would capture far more than the "
	                  "cluster's services; expected an IPv6 prefix of /32 or longer, the "
	                  "cluster's service range (e.g. \"10.96.0.0/12\")");
	expect_error(CAP("'10.0.0.0/7'"),
	             NAME ": capture.service_cidrs[0]: 10.0.0.0/7 would capture far more than the "
	                  "cluster's services; expected an IPv4 prefix of /8 or longer, the "
	                  "cluster's service range (e.g. \"10.96.0.0/12\")");
	expect_error(CAP("'fd00::/31'"),
	             NAME ": capture.service_cidrs[0]: fd00::/31 would capture far more than the "
	                  "cluster's services; expected an IPv6 prefix of /32 or longer, the "
	                  "cluster's service range (e.g. \"10.96.0.0/12\")");
	em_config_free(parse_ok(CAP("'10.0.0.0/8','fd00::/32'")));
	/* With capture off the ranges capture nothing and are not judged. */
	em_config_free(
	        parse_ok(BASE ",'capture':{'enabled':false,'service_cidrs':['0.0.0.0/0']}}"));
}

Test(config, service_cidrs_own_address)
{
	char err[512] = "";
	struct em_config *cfg;

	/* Loopback is an address of every node. */
	cfg = parse_ok(CAP("'10.96.0.0/12','127.0.0.0/8'"));
	snprintf(cfg->api_socket, sizeof(cfg->api_socket), "/nonexistent-%d/em.sock", getpid());
	cr_expect_eq(em_config_check_host(cfg, err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, NAME ": capture.service_cidrs[1]: 127.0.0.0/8 contains 127.") != NULL,
	          "%s", err);
	cr_expect(strstr(err, "an address of this node (interface lo)") != NULL, "%s", err);
	em_config_free(cfg);

	cfg = parse_ok(BASE ",'capture':{'enabled':false,'service_cidrs':['127.0.0.0/8']}}");
	snprintf(cfg->api_socket, sizeof(cfg->api_socket), "/nonexistent-%d/em.sock", getpid());
	cr_expect_eq(em_config_check_host(cfg, err, sizeof(err)), 0, "%s", err);
	em_config_free(cfg);
}

Test(config, api_socket_not_a_socket)
{
	char err[512] = "", dir[] = "/tmp/em-cfg-XXXXXX", path[64], back[8] = "";
	struct em_config *cfg = parse_ok(BASE "}");
	FILE *f;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/edgemesh.db", dir);
	snprintf(cfg->api_socket, sizeof(cfg->api_socket), "%s", path);
	cr_expect_eq(em_config_check_host(cfg, err, sizeof(err)), 0, "absent: %s", err);

	cr_assert_not_null(f = fopen(path, "w"));
	fputs("data", f);
	fclose(f);
	cr_expect_eq(em_config_check_host(cfg, err, sizeof(err)), -EEXIST);
	cr_expect(strstr(err, NAME ": api_socket: ") == err, "%s", err);
	cr_expect(strstr(err, "exists and is a regular file") != NULL, "%s", err);
	cr_assert_not_null(f = fopen(path, "r"));
	cr_expect(fgets(back, sizeof(back), f) != NULL);
	fclose(f);
	cr_expect_str_eq(back, "data");
	unlink(path);

	cr_assert_eq(mkdir(path, 0700), 0);
	cr_expect_eq(em_config_check_host(cfg, err, sizeof(err)), -EEXIST);
	cr_expect(strstr(err, "exists and is a directory") != NULL, "%s", err);
	rmdir(path);
	rmdir(dir);
	em_config_free(cfg);
}

/* cJSON lets raw control bytes into strings; a key echoed in a message must
 * not split it into several lines (found by tests/fuzz/fuzz_config.c). */
Test(config, control_bytes_in_keys_stay_on_one_line)
{
	expect_error(BASE ",'timeouts':{'shutdown_m\n\ns':5}}",
	             NAME ": timeouts.shutdown_m??s: unknown key");
}

Test(config, tunnel_handshake_keys)
{
	struct em_config *cfg = parse_ok(BASE "}");
	cr_expect_eq(cfg->tunnel.max_handshakes, 1024);
	cr_expect_eq(cfg->tunnel.max_handshakes_per_source, 64);
	cr_expect_eq(cfg->tunnel.handshake_ms, 10000);
	em_config_free(cfg);

	cfg = parse_ok(TKEY("'max_handshakes':5000,'max_handshakes_per_source':8,"
	                    "'handshake_ms':2500"));
	cr_expect_eq(cfg->tunnel.max_handshakes, 5000);
	cr_expect_eq(cfg->tunnel.max_handshakes_per_source, 8);
	cr_expect_eq(cfg->tunnel.handshake_ms, 2500);
	em_config_free(cfg);

	expect_error(TKEY("'max_handshakes':0"),
	             NAME ": tunnel.max_handshakes: expected integer 1..1000000");
	expect_error(TKEY("'max_handshakes_per_source':'many'"),
	             NAME ": tunnel.max_handshakes_per_source: expected integer 1..1000000");
	expect_error(TKEY("'handshake_ms':50"),
	             NAME ": tunnel.handshake_ms: expected integer 100..600000");
}

/* controller.manifests_dir is the cloud role's; a change needs a restart. */
Test(config, controller_manifests_dir)
{
	struct em_config *c =
	        parse_ok("{'role':'cloud','node_name':'n1'," KEY
	                 ",'controller':{'manifests_dir':'/etc/edgemesh/manifests'}}");
	cr_assert_str_eq(c->controller.manifests_dir, "/etc/edgemesh/manifests");
	em_config_free(c);
	c = parse_ok(BASE "}");
	cr_assert_str_eq(c->controller.manifests_dir, "");
	em_config_free(c);
	expect_error(BASE ",'controller':{'manifests_dir':'/m'}}", NAME
	             ": controller.manifests_dir: expected \"\" on an edge: only role \"cloud\" "
	             "reads manifests");
	expect_error(BASE ",'controller':{'manifests_dir':5}}",
	             NAME ": controller.manifests_dir: expected path of a directory, at most 4000 "
	                  "bytes, or \"\" (none)");
	expect_error(BASE ",'controller':{'manifest_dir':''}}",
	             NAME ": controller.manifest_dir: unknown key");
	struct em_config *a = parse_ok("{'role':'cloud','node_name':'n1'," KEY
	                               ",'controller':{'manifests_dir':'/a'}}");
	struct em_config *b = parse_ok("{'role':'cloud','node_name':'n1'," KEY
	                               ",'controller':{'manifests_dir':'/b'}}");
	const char *key = em_config_restart_key(a, b);
	cr_assert(key && strcmp(key, "controller.manifests_dir") == 0, "%s", key ? key : "NULL");
	em_config_free(a);
	em_config_free(b);
}

/* controller.kubernetes: the cloud role's, a URL or "in-cluster", restart. */
Test(config, controller_kubernetes)
{
	struct em_config *c =
	        parse_ok("{'role':'cloud','node_name':'n1'," KEY
	                 ",'controller':{'kubernetes':{'server':'https://10.0.0.1:6443',"
	                 "'token_file':'/t','ca_file':'/ca.crt'}}}");
	cr_expect_str_eq(c->controller.kubernetes.server, "https://10.0.0.1:6443");
	cr_expect_str_eq(c->controller.kubernetes.token_file, "/t");
	cr_expect_str_eq(c->controller.kubernetes.ca_file, "/ca.crt");
	em_config_free(c);
	c = parse_ok("{'role':'cloud','node_name':'n1'," KEY
	             ",'controller':{'kubernetes':{'server':'in-cluster'}}}");
	cr_expect_str_eq(c->controller.kubernetes.server, "in-cluster");
	em_config_free(c);
	c = parse_ok(BASE "}");
	cr_expect_str_eq(c->controller.kubernetes.server, "");
	cr_expect_str_eq(c->controller.kubernetes.token_file, "");
	em_config_free(c);
	expect_error(BASE ",'controller':{'kubernetes':{'server':'http://127.0.0.1:8001'}}}",
	             NAME ": controller.kubernetes.server: expected \"\" on an edge: only role "
	                  "\"cloud\" watches the Kubernetes API");
	expect_error("{'role':'cloud','node_name':'n1'," KEY
	             ",'controller':{'kubernetes':{'server':'ftp://x'}}}",
	             NAME
	             ": controller.kubernetes.server: expected \"https://host[:port]\", "
	             "\"http://host[:port]\", \"in-cluster\" or \"\" (off), at most 255 bytes");
	expect_error("{'role':'cloud','node_name':'n1'," KEY
	             ",'controller':{'kubernetes':{'token_file':5}}}",
	             NAME
	             ": controller.kubernetes.token_file: expected path of a file, at most 4000 "
	             "bytes, or \"\" (none)");
	expect_error("{'role':'cloud','node_name':'n1'," KEY
	             ",'controller':{'kubernetes':{'sever':''}}}",
	             NAME ": controller.kubernetes.sever: unknown key");
	struct em_config *a = parse_ok("{'role':'cloud','node_name':'n1'," KEY
	                               ",'controller':{'kubernetes':{'server':'http://a:1'}}}");
	struct em_config *b = parse_ok("{'role':'cloud','node_name':'n1'," KEY
	                               ",'controller':{'kubernetes':{'server':'http://a:1',"
	                               "'ca_file':'/x'}}}");
	const char *key = em_config_restart_key(a, b);
	cr_expect(key && strcmp(key, "controller.kubernetes.ca_file") == 0, "%s",
	          key ? key : "NULL");
	em_config_free(a);
	em_config_free(b);
}

/* A FIFO named as the config is refused at once, not waited on. */
Test(config, fifo_is_refused_without_blocking, .timeout = 5)
{
	char path[] = "/tmp/em-config-fifo-XXXXXX";
	cr_assert_not_null(mkdtemp(path));
	char fifo[64];
	snprintf(fifo, sizeof(fifo), "%s/edge.json", path);
	cr_assert_eq(mkfifo(fifo, 0600), 0);
	char err[256];
	struct em_config *cfg = NULL;
	cr_assert_eq(em_config_load(fifo, &cfg, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "expected a regular file"), "%s", err);
	unlink(fifo);
	rmdir(path);
}

static void write_cert(const char *crt, const char *key)
{
	em_test_self_signed(crt, key);
}

#define CLOUD "{'role':'cloud','node_name':'c1'," KEY

/* router.tls: both files or neither, the cloud's only, restart-only. */
Test(config, router_tls_keys)
{
	struct em_config *c = parse_ok(CLOUD "}");
	cr_expect_str_eq(c->router.tls.cert_file, "");
	cr_expect_str_eq(c->router.tls.key_file, "");
	cr_expect_eq(c->router.tls.handshake_ms, 10000);
	cr_expect_eq(c->router.tls.max_connections, 1024);
	em_config_free(c);
	c = parse_ok(CLOUD ",'router':{'tls':{'cert_file':'/c.pem','key_file':'/k.pem',"
	                   "'handshake_ms':500,'max_connections':7}}}");
	cr_expect_str_eq(c->router.tls.cert_file, "/c.pem");
	cr_expect_str_eq(c->router.tls.key_file, "/k.pem");
	cr_expect_eq(c->router.tls.handshake_ms, 500);
	cr_expect_eq(c->router.tls.max_connections, 7);
	em_config_free(c);

	expect_error(CLOUD ",'router':{'tls':{'cert_file':'/c.pem'}}}",
	             NAME ": router.tls.key_file: expected the path of the certificate's private "
	                  "key: router.tls.cert_file is set (both or neither)");
	expect_error(CLOUD ",'router':{'tls':{'key_file':'/k.pem'}}}",
	             NAME ": router.tls.cert_file: expected the path of the certificate: "
	                  "router.tls.key_file is set (both or neither)");
	expect_error(BASE ",'router':{'tls':{'cert_file':'/c.pem','key_file':'/k.pem'}}}",
	             NAME ": router.tls.cert_file: expected \"\" on an edge: only role \"cloud\" "
	                  "runs the Router");
	expect_error(CLOUD ",'router':{'listen':'','tls':{'cert_file':'/c','key_file':'/k'}}}",
	             NAME ": router.tls.cert_file: expected \"\" while router.listen is \"\" (no "
	                  "Router to serve TLS)");
	expect_error(CLOUD ",'router':{'tls':{'cert_file':5}}}",
	             NAME ": router.tls.cert_file: expected path of a PEM certificate file, at "
	                  "most 4000 bytes, or \"\" (plain HTTP)");
	expect_error(CLOUD ",'router':{'tls':{'handshake_ms':99}}}",
	             NAME ": router.tls.handshake_ms: expected integer 100..600000");
	expect_error(CLOUD ",'router':{'tls':{'max_connections':0}}}",
	             NAME ": router.tls.max_connections: expected integer 1..1000000");
	expect_error(CLOUD ",'router':{'tls':{'cert':'/c'}}}",
	             NAME ": router.tls.cert: unknown key");

	struct em_config *a = parse_ok(CLOUD "}");
	struct em_config *b =
	        parse_ok(CLOUD ",'router':{'tls':{'cert_file':'/c.pem','key_file':'/k.pem'}}}");
	const char *key = em_config_restart_key(a, b);
	cr_expect(key && strcmp(key, "router.tls.cert_file") == 0, "%s", key ? key : "NULL");
	em_config_free(a);
	a = parse_ok(CLOUD ",'router':{'tls':{'cert_file':'/c.pem','key_file':'/k.pem',"
	                   "'max_connections':9}}}");
	key = em_config_restart_key(a, b);
	cr_expect(key && strcmp(key, "router.tls.max_connections") == 0, "%s", key ? key : "NULL");
	em_config_free(a);
	em_config_free(b);
}

/* The files: readable, a certificate, its own key; each failure names the
 * config file, the key and the file. */
Test(config, router_tls_files)
{
	char dir[] = "/tmp/em-cfg-tls-XXXXXX", crt[64], k[64], crt2[64], k2[64], err[768] = "";
	cr_assert_not_null(mkdtemp(dir));
	snprintf(crt, sizeof(crt), "%s/a.crt", dir);
	snprintf(k, sizeof(k), "%s/a.key", dir);
	snprintf(crt2, sizeof(crt2), "%s/b.crt", dir);
	snprintf(k2, sizeof(k2), "%s/b.key", dir);
	write_cert(crt, k);
	write_cert(crt2, k2);
	struct em_config *c =
	        parse_ok(CLOUD ",'router':{'tls':{'cert_file':'/c.pem','key_file':'/k.pem'}}}");
	snprintf(c->api_socket, sizeof(c->api_socket), "%s/em.sock", dir);
	struct {
		const char *cert, *key;
		int rc;
		const char *want;
	} cases[] = {
	        {crt, k, 0, ""},
	        {crt2, k2, 0, ""},
	        {"/nonexistent/c.pem", k, -ENOENT,
	         NAME ": router.tls.cert_file: cannot read /nonexistent/c.pem: No such file or "
	              "directory; expected a readable PEM certificate file"},
	        {crt, "/nonexistent/k.pem", -ENOENT,
	         NAME ": router.tls.key_file: cannot read /nonexistent/k.pem: No such file or "
	              "directory; expected a readable PEM private key file"},
	        {k, k, -EINVAL, ": router.tls.cert_file: "},
	        {crt, crt, -EINVAL, ": router.tls.key_file: "},
	        {crt, k2, -EINVAL, ": router.tls.key_file: the key in "},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(c->router.tls.cert_file, sizeof(c->router.tls.cert_file), "%s",
		         cases[i].cert);
		snprintf(c->router.tls.key_file, sizeof(c->router.tls.key_file), "%s",
		         cases[i].key);
		err[0] = 0;
		int rc = em_config_check_host(c, err, sizeof(err));
		cr_expect_eq(rc, cases[i].rc, "case %zu: rc %d: %s", i, rc, err);
		if (cases[i].want[0] == ':')
			cr_expect(strncmp(err, NAME, strlen(NAME)) == 0 &&
			                  strstr(err, cases[i].want) != NULL,
			          "case %zu: %s", i, err);
		else
			cr_expect_str_eq(err, cases[i].want, "case %zu", i);
	}
	/* The mismatch names both files. */
	snprintf(c->router.tls.cert_file, sizeof(c->router.tls.cert_file), "%s", crt);
	snprintf(c->router.tls.key_file, sizeof(c->router.tls.key_file), "%s", k2);
	em_config_check_host(c, err, sizeof(err));
	cr_expect(strstr(err, k2) && strstr(err, crt), "%s", err);
	em_config_free(c);
	unlink(crt);
	unlink(k);
	unlink(crt2);
	unlink(k2);
	rmdir(dir);
}

/* tunnel.tls: all three files or none; none is "managed" (files under
 * data_dir), which an edge may only use with a cloud to enroll with and a
 * cloud only with its CA (ca_dir); ca_dir is the cloud's only. */
#define TLS_TUN(x) "'tunnel':{'cluster_key':'" K32 "','encryption':'tls'" x "}"
Test(config, tunnel_tls_managed)
{
	struct em_config *c = parse_ok("{'role':'edge','node_name':'n1','data_dir':'/d',"
	                               "'cloud':{'address':'10.0.0.1:20006'}," TLS_TUN("") "}");
	cr_expect(c->tunnel.tls.managed);
	cr_expect_str_eq(c->tunnel.tls.cert_file, "/d/tls/node.pem");
	cr_expect_str_eq(c->tunnel.tls.key_file, "/d/tls/node.pem");
	cr_expect_str_eq(c->tunnel.tls.ca_file, "/d/tls/ca.crt");
	cr_expect_eq(c->tunnel.tls.cert_days, 365);
	em_config_free(c);
	c = parse_ok("{'role':'cloud','node_name':'c1','data_dir':'/d',"
	             TLS_TUN(",'tls':{'ca_dir':'/ca','cert_days':7}") "}");
	cr_expect(c->tunnel.tls.managed);
	cr_expect_str_eq(c->tunnel.tls.ca_file, "/ca/ca.crt");
	cr_expect_eq(c->tunnel.tls.cert_days, 7);
	em_config_free(c);
	c = parse_ok("{'role':'edge','node_name':'n1'," TLS_TUN(
	        ",'tls':{'ca_file':'/a','cert_file':'/b','key_file':'/c'}") "}");
	cr_expect(!c->tunnel.tls.managed);
	cr_expect_str_eq(c->tunnel.tls.cert_file, "/b");
	em_config_free(c);

	/* "tls" is the default; a node without a cluster key has no tunnels
	 * and needs no certificate. */
	c = parse_ok("{'role':'edge','node_name':'n1','cloud':{'address':'c:1'},"
	             "'tunnel':{'cluster_key':'" K32 "'}}");
	cr_expect_eq(c->tunnel.encryption, EM_TUNNEL_TLS);
	cr_expect(c->tunnel.tls.managed);
	em_config_free(c);
	c = parse_ok("{'role':'edge','node_name':'n1','tunnel':{'listen':''}}");
	cr_expect_eq(c->tunnel.encryption, EM_TUNNEL_TLS);
	cr_expect(!c->tunnel.tls.managed);
	em_config_free(c);

	expect_error("{'role':'edge','node_name':'n1'," TLS_TUN("") "}",
	             NAME ": tunnel.tls: expected ca_file, cert_file and key_file on an edge "
	                  "without cloud.address (it has no cloud to enroll with), or tunnel.encryption "
	                  "\"none\"");
	expect_error("{'role':'cloud','node_name':'c1'," TLS_TUN("") "}",
	             NAME ": tunnel.tls.ca_dir: expected the CA directory (made at first start "
	                  "when empty, or by meshctl ca init) on the cloud when ca_file, cert_file "
	                  "and key_file are not set");
	expect_error("{'role':'edge','node_name':'n1'," TLS_TUN(",'tls':{'ca_file':'/a'}") "}",
	             NAME ": tunnel.tls.cert_file: expected a PEM file: set all three of "
	                  "ca_file, cert_file and key_file, or none (certificates kept under "
	                  "data_dir)");
	expect_error("{'role':'edge','node_name':'n1','cloud':{'address':'a:1'}," TLS_TUN(
	                     ",'tls':{'ca_dir':'/ca'}") "}",
	             NAME ": tunnel.tls.ca_dir: expected \"\" on an edge: only role \"cloud\" "
	                  "holds the CA and signs");
	expect_error("{'role':'cloud','node_name':'c1'," TLS_TUN(",'tls':{'cert_days':0}") "}",
	             NAME ": tunnel.tls.cert_days: expected integer 1..36500");
}

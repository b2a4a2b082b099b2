/* The engine's workers read the service table and the config through RCU
 * while the writer publishes new ones: client threads run echo traffic
 * through two workers while snapshots (endpoint sets changing) and configs
 * are published hundreds of times. Every byte must come back and nothing
 * may fail; under TSan, no race may be reported. */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine/engine.h"
#include "store/config.h"
#include "store/k8s.h"
#include "store/table.h"
#include "tests/conc.h"

#define N_CLIENTS 4
#define N_ROUNDS  400
#define N_PUBLISH 300

static atomic_bool stop;
static atomic_long failures, round_trips;
static uint16_t backend_port[2], listen_port;

static int listen_any(uint16_t *port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 128) ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl))
		return -1;
	*port = ntohs(sa.sin_port);
	return fd;
}

static void *echo_conn(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[4096];
	ssize_t n;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		if (write(fd, buf, (size_t)n) != n)
			break;
	close(fd);
	return NULL;
}

static void *echo_server(void *arg)
{
	int lfd = (int)(intptr_t)arg;
	for (;;) {
		int fd = accept(lfd, NULL, NULL);
		if (fd < 0)
			return NULL;
		pthread_t t;
		pthread_create(&t, NULL, echo_conn, (void *)(intptr_t)fd);
		pthread_detach(t);
	}
}

static int dial(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
	                         .sin_port = htons(listen_port),
	                         .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct timeval tv = {.tv_sec = 5};
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		close(fd);
		return -1;
	}
	return fd;
}

/* One connection per client, many round trips; a new connection every 50. */
static void *client(void *arg)
{
	int id = (int)(intptr_t)arg, fd = -1;
	char out[64], in[64];
	for (int r = 0; r < N_ROUNDS && !atomic_load(&stop); r++) {
		if (r % 50 == 0) {
			if (fd >= 0)
				close(fd);
			if ((fd = dial()) < 0) {
				atomic_fetch_add(&failures, 1);
				continue;
			}
		}
		int n = snprintf(out, sizeof(out), "client %d round %d\n", id, r);
		size_t got = 0;
		if (write(fd, out, (size_t)n) != n) {
			atomic_fetch_add(&failures, 1);
			continue;
		}
		while (got < (size_t)n) {
			ssize_t k = read(fd, in + got, (size_t)n - got);
			if (k <= 0)
				break;
			got += (size_t)k;
		}
		if (got != (size_t)n || memcmp(in, out, (size_t)n) != 0)
			atomic_fetch_add(&failures, 1);
		else
			atomic_fetch_add(&round_trips, 1);
	}
	if (fd >= 0)
		close(fd);
	return NULL;
}

static struct em_k8s_object *decode(const char *json)
{
	struct em_k8s_object *o;
	char err[256];
	if (em_k8s_decode(json, strlen(json), -1, &o, err, sizeof(err))) {
		fprintf(stderr, "decode: %s\n", err);
		exit(2);
	}
	return o;
}

static struct em_config *config(void)
{
	char text[512], err[256];
	struct em_config *cfg;
	snprintf(text, sizeof(text),
	         "{\"role\":\"edge\",\"node_name\":\"n1\",\"data_dir\":\"/tmp\",\"workers\":2,"
	         "\"log_level\":\"error\",\"tunnel\":{\"listen\":\"\"},\"listeners\":[{\"listen\":"
	         "\"127.0.0.1:%u\",\"service\":\"default/echo\",\"port\":7}]}",
	         listen_port);
	if (em_config_parse("conc_engine.json", text, strlen(text), &cfg, err, sizeof(err))) {
		fprintf(stderr, "config: %s\n", err);
		exit(2);
	}
	return cfg;
}

static void workers_follow_published_tables_and_configs(void)
{
	struct em_k8s_object *svc, *eps[2];
	char json[1024];
	pthread_t th[N_CLIENTS];
	struct em_engine *eng = NULL;

	for (int i = 0; i < 2; i++) {
		int lfd = listen_any(&backend_port[i]);
		CONC_CHECK(lfd >= 0, "backend listen");
		pthread_t t;
		pthread_create(&t, NULL, echo_server, (void *)(intptr_t)lfd);
		pthread_detach(t);
	}
	int probe = listen_any(&listen_port); /* a free port for the engine */
	close(probe);

	svc = decode("{\"kind\":\"Service\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"echo\","
	             "\"namespace\":\"default\"},\"spec\":{\"clusterIP\":\"10.96.0.7\",\"ports\":"
	             "[{\"port\":7}]}}");
	/* variant 0: one endpoint; variant 1: both */
	snprintf(json, sizeof(json),
	         "{\"kind\":\"Endpoints\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"echo\","
	         "\"namespace\":\"default\"},\"subsets\":[{\"addresses\":[{\"ip\":\"127.0.0.1\"}],"
	         "\"ports\":[{\"port\":%u}]}]}",
	         backend_port[0]);
	eps[0] = decode(json);
	snprintf(json, sizeof(json),
	         "{\"kind\":\"Endpoints\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"echo\","
	         "\"namespace\":\"default\"},\"subsets\":[{\"addresses\":[{\"ip\":\"127.0.0.1\"}],"
	         "\"ports\":[{\"port\":%u}]},{\"addresses\":[{\"ip\":\"127.0.0.1\"}],\"ports\":"
	         "[{\"port\":%u}]}]}",
	         backend_port[0], backend_port[1]);
	eps[1] = decode(json);

	em_table_init();
	em_config_publish(config());
	const struct em_k8s_object *objs[2] = {svc, eps[1]};
	struct em_table_input in = {.objs = objs, .n_objs = 2, .local_node = "n1"};
	em_table_publish(em_table_build(&in, 1));
	CONC_CHECK(em_engine_start(em_config_current(), &eng) == 0, "engine start");
	if (!eng)
		return;

	for (int i = 0; i < N_CLIENTS; i++)
		pthread_create(&th[i], NULL, client, (void *)(intptr_t)i);
	uint64_t accepted = 0;
	for (uint64_t g = 2; g < 2 + N_PUBLISH; g++) {
		objs[1] = eps[g & 1];
		em_table_publish(em_table_build(&in, g));
		if (g % 15 == 0)
			em_config_publish(config());
		/* The stats reader sums the workers' published counters while
		 * they run (under TSan: no race with the workers' stores). */
		struct em_api_counter c[EM_API_MAX_COUNTERS];
		size_t n = em_engine_counters(eng, c, EM_API_MAX_COUNTERS);
		for (size_t i = 0; i < n; i++)
			if (strcmp(c[i].name, "connections_accepted") == 0)
				accepted = c[i].value;
		usleep(1000);
	}
	atomic_store(&stop, true);
	for (int i = 0; i < N_CLIENTS; i++)
		pthread_join(th[i], NULL);
	CONC_CHECK(accepted >= N_CLIENTS, "counters read while running: %lu connections accepted",
	           (unsigned long)accepted);
	em_engine_stop(eng, 1000);
	em_config_publish(NULL);
	em_table_shutdown();
	em_k8s_free(svc);
	em_k8s_free(eps[0]);
	em_k8s_free(eps[1]);
	CONC_CHECK(atomic_load(&failures) == 0, "%ld failed round trips", atomic_load(&failures));
	CONC_CHECK(atomic_load(&round_trips) > 100, "only %ld round trips",
	           atomic_load(&round_trips));
}

int main(void)
{
	CONC_RUN(workers_follow_published_tables_and_configs);
	CONC_SUMMARY();
}

/* Service table benchmark: snapshot rebuild time and memory for S services
 * with E endpoints each, and lookup cost on 1..T threads.
 *
 *   bench_table [-s SERVICES] [-e ENDPOINTS] [-t THREADS] [-n LOOKUPS_PER_THREAD]
 *
 * Lookups go to cluster IPs in random order (a precomputed sequence larger
 * than the caches' working set would hide), and every lookup's result is
 * checked, so the loop cannot be optimised away or measure a miss path. */
#include <getopt.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "proto/clock.h"
#include "store/k8s.h"
#include "store/rcu.h"
#include "store/table.h"

static int n_svc = 10000, n_ep = 10, n_threads = 2;
static long n_lookups = 20000000;
static struct em_addr *dsts;
static size_t n_dsts = 1 << 20;

static struct em_k8s_object *decode(const char *json)
{
	struct em_k8s_object *o;
	char err[256];
	if (em_k8s_decode(json, strlen(json), -1, &o, err, sizeof(err))) {
		fprintf(stderr, "bench_table: decode: %s\n", err);
		exit(1);
	}
	return o;
}

static void svc_ip(int s, struct em_addr *a)
{
	memset(a, 0, sizeof(*a));
	a->family = AF_INET;
	a->b[0] = 10;
	a->b[1] = (uint8_t)(96 + (s >> 16));
	a->b[2] = (uint8_t)(s >> 8);
	a->b[3] = (uint8_t)s;
	a->port = 80;
}

static struct em_k8s_object **make_objects(size_t *n)
{
	struct em_k8s_object **objs = calloc((size_t)n_svc * 2, sizeof(*objs));
	char *json = malloc(64 * 1024), ip[64];
	for (int s = 0; s < n_svc; s++) {
		struct em_addr a;
		svc_ip(s, &a);
		em_addr_format(&a, false, ip, sizeof(ip));
		snprintf(json, 64 * 1024,
		         "{\"kind\":\"Service\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":"
		         "\"svc-%d\",\"namespace\":\"ns-%d\"},\"spec\":{\"clusterIP\":\"%s\","
		         "\"ports\":[{\"name\":\"http\",\"port\":80,\"targetPort\":8080}]}}",
		         s, s % 50, ip);
		objs[2 * s] = decode(json);
		int off = snprintf(json, 64 * 1024,
		                   "{\"kind\":\"Endpoints\",\"apiVersion\":\"v1\",\"metadata\":{"
		                   "\"name\":\"svc-%d\",\"namespace\":\"ns-%d\"},\"subsets\":[{"
		                   "\"addresses\":[",
		                   s, s % 50);
		for (int e = 0; e < n_ep; e++)
			off += snprintf(json + off, (size_t)(64 * 1024 - off),
			                "%s{\"ip\":\"172.16.%d.%d\",\"nodeName\":\"node-%d\"}",
			                e ? "," : "", (s * n_ep + e) / 250 % 256,
			                (s * n_ep + e) % 250 + 1, e % 4);
		snprintf(json + off, (size_t)(64 * 1024 - off),
		         "],\"ports\":[{\"name\":\"http\",\"port\":8080}]}]}");
		objs[2 * s + 1] = decode(json);
	}
	free(json);
	*n = (size_t)n_svc * 2;
	return objs;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static atomic_int go;
static atomic_long misses;

struct lookup_arg {
	long n;
	uint64_t ns;
	uint64_t sum;
};

static void *lookup_thread(void *p)
{
	struct lookup_arg *a = p;
	size_t i = (size_t)a->n * 7919; /* each thread starts elsewhere */
	uint64_t sum = 0;
	em_rcu_register();
	while (!atomic_load(&go))
		;
	uint64_t t0 = em_now_ns();
	const struct em_table *t = em_table_current();
	for (long k = 0; k < a->n; k++) {
		const struct em_svc_port *sp =
		        em_table_lookup(t, &dsts[i++ & (n_dsts - 1)], IPPROTO_TCP);
		if (EM_UNLIKELY(!sp)) {
			atomic_fetch_add(&misses, 1);
			continue;
		}
		sum += sp->n_ready;
		if ((k & 1023) == 0) {
			em_rcu_quiescent();
			t = em_table_current();
		}
	}
	a->ns = em_now_ns() - t0;
	a->sum = sum;
	em_rcu_unregister();
	return NULL;
}

static double run_lookups(int threads)
{
	pthread_t th[64];
	struct lookup_arg args[64];
	uint64_t max_ns = 0;
	atomic_store(&go, 0);
	for (int i = 0; i < threads; i++) {
		args[i] = (struct lookup_arg){.n = n_lookups};
		pthread_create(&th[i], NULL, lookup_thread, &args[i]);
	}
	atomic_store(&go, 1);
	for (int i = 0; i < threads; i++) {
		pthread_join(th[i], NULL);
		if (args[i].ns > max_ns)
			max_ns = args[i].ns;
		if (args[i].sum != (uint64_t)n_lookups * (uint64_t)n_ep)
			fprintf(stderr, "bench_table: wrong results in thread %d\n", i);
	}
	/* aggregate throughput: lookups per second over all threads */
	return (double)threads * (double)n_lookups / ((double)max_ns / 1e9);
}

static long rss_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long v = -1;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld", &v) == 1)
			break;
	if (f)
		fclose(f);
	return v;
}

int main(int argc, char **argv)
{
	int opt;
	while ((opt = getopt(argc, argv, "s:e:t:n:")) != -1) {
		switch (opt) {
		case 's':
			n_svc = atoi(optarg);
			break;
		case 'e':
			n_ep = atoi(optarg);
			break;
		case 't':
			n_threads = atoi(optarg);
			break;
		case 'n':
			n_lookups = atol(optarg);
			break;
		default:
			fprintf(stderr, "usage: bench_table [-s N] [-e N] [-t N] [-n N]\n");
			return 2;
		}
	}
	if (n_svc < 1 || n_svc > 1000000 || n_ep < 1 || n_ep > 200 || n_threads < 1 ||
	    n_threads > 64 || n_lookups < 1) {
		fprintf(stderr, "bench_table: argument out of range\n");
		return 2;
	}

	size_t n_objs;
	uint64_t t0 = em_now_ns();
	struct em_k8s_object **objs = make_objects(&n_objs);
	uint64_t decode_ns = em_now_ns() - t0;

	em_table_init();
	struct em_table_input in = {.objs = (const struct em_k8s_object *const *)objs,
	                            .n_objs = n_objs,
	                            .local_node = "node-0"};
	uint64_t builds[11];
	size_t bytes = 0;
	malloc_trim(0);
	long rss0 = rss_kib();
	for (int r = 0; r < 11; r++) {
		t0 = em_now_ns();
		struct em_table *t = em_table_build(&in, (uint64_t)r + 1);
		builds[r] = em_now_ns() - t0;
		if (!t) {
			fprintf(stderr, "bench_table: build failed\n");
			return 1;
		}
		bytes = em_table_bytes(t);
		em_table_publish(t);
	}
	long rss1 = rss_kib();
	qsort(builds, 11, sizeof(builds[0]), cmp_u64);

	dsts = malloc(n_dsts * sizeof(*dsts));
	unsigned seed = 42;
	for (size_t i = 0; i < n_dsts; i++)
		svc_ip(rand_r(&seed) % n_svc, &dsts[i]);

	printf("services %d x endpoints %d (%zu objects; JSON decode of all: %.1f ms)\n", n_svc,
	       n_ep, n_objs, (double)decode_ns / 1e6);
	printf("rebuild: median %.2f ms, min %.2f ms, max %.2f ms (11 builds)\n",
	       (double)builds[5] / 1e6, (double)builds[0] / 1e6, (double)builds[10] / 1e6);
	printf("snapshot memory: %.2f MiB (arena), RSS after publish %+ld KiB\n",
	       (double)bytes / (1024.0 * 1024.0), rss1 - rss0);
	double one = 0;
	for (int th = 1; th <= n_threads; th++) {
		double lps = run_lookups(th);
		if (th == 1)
			one = lps;
		printf("lookup: %d thread%s: %.1f ns/lookup per thread, %.1f M lookups/s total "
		       "(%.2fx of 1 thread)\n",
		       th, th == 1 ? " " : "s", 1e9 * th / lps, lps / 1e6, lps / one);
	}
	if (atomic_load(&misses)) {
		fprintf(stderr, "bench_table: %ld lookups missed\n", atomic_load(&misses));
		return 1;
	}
	em_table_shutdown();
	for (size_t i = 0; i < n_objs; i++)
		em_k8s_free(objs[i]);
	free(objs);
	free(dsts);
	return 0;
}

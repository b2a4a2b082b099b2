/* RCU publication of service table snapshots: reader threads look up
 * continuously while snapshots are published thousands of times; every
 * lookup must see one complete snapshot, and every old snapshot is freed
 * (ASan) only after readers left it (TSan). */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "store/k8s.h"
#include "store/rcu.h"
#include "store/table.h"
#include "tests/conc.h"

#define N_SVC      64
#define N_VARIANTS 5
#define N_PUBLISH  3000
#define N_READERS  2

/* Variant v: every service has v+1 ready endpoints on port 8000+v. */
static struct em_k8s_object *variants[N_VARIANTS][N_SVC * 2];
static atomic_bool stop_readers;
static atomic_ulong reader_errors, reader_lookups;

static struct em_k8s_object *decode(const char *json)
{
	struct em_k8s_object *o = NULL;
	char err[256];
	if (em_k8s_decode(json, strlen(json), -1, &o, err, sizeof(err))) {
		fprintf(stderr, "decode failed: %s\n%s\n", err, json);
		exit(2);
	}
	return o;
}

static void make_variants(void)
{
	for (int v = 0; v < N_VARIANTS; v++)
		for (int s = 0; s < N_SVC; s++) {
			char eps[2048] = "", json[4096];
			snprintf(json, sizeof(json),
			         "{\"kind\":\"Service\",\"apiVersion\":\"v1\",\"metadata\":{"
			         "\"name\":\"svc-%d\",\"namespace\":\"default\"},\"spec\":{"
			         "\"clusterIP\":\"10.96.0.%d\",\"ports\":[{\"port\":80}]}}",
			         s, s + 1);
			variants[v][2 * s] = decode(json);
			for (int e = 0; e <= v; e++) {
				size_t n = strlen(eps);
				snprintf(eps + n, sizeof(eps) - n, "%s{\"ip\":\"10.1.%d.%d\"}",
				         e ? "," : "", s, e + 1);
			}
			snprintf(json, sizeof(json),
			         "{\"kind\":\"Endpoints\",\"apiVersion\":\"v1\",\"metadata\":{"
			         "\"name\":\"svc-%d\",\"namespace\":\"default\"},\"subsets\":[{"
			         "\"addresses\":[%s],\"ports\":[{\"port\":%d}]}]}",
			         s, eps, 8000 + v);
			variants[v][2 * s + 1] = decode(json);
		}
}

static void *reader(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg;
	em_rcu_register();
	while (!atomic_load(&stop_readers)) {
		const struct em_table *t = em_table_current();
		uint64_t gen = em_table_generation(t);
		int v = (int)(gen % N_VARIANTS);
		for (int k = 0; k < 16 && gen; k++) {
			int s = rand_r(&seed) % N_SVC;
			struct em_addr dst = {.family = AF_INET, .port = 80};
			dst.b[0] = 10, dst.b[1] = 96, dst.b[3] = (uint8_t)(s + 1);
			const struct em_svc_port *sp = em_table_lookup(t, &dst, IPPROTO_TCP);
			/* all of these come from the one snapshot <t> */
			if (!sp || sp->n_ready != (uint32_t)v + 1 ||
			    sp->endpoints[v].addr.port != 8000 + v ||
			    sp->endpoints[v].addr.b[2] != s)
				atomic_fetch_add(&reader_errors, 1);
			atomic_fetch_add(&reader_lookups, 1);
		}
		em_rcu_quiescent();
	}
	em_rcu_unregister();
	return NULL;
}

static void rcu_readers_see_complete_snapshots(void)
{
	pthread_t th[N_READERS];
	make_variants();
	em_table_init();
	for (int i = 0; i < N_READERS; i++)
		pthread_create(&th[i], NULL, reader, (void *)(uintptr_t)(i + 1));
	for (uint64_t g = 1; g <= N_PUBLISH; g++) {
		struct em_table_input in = {
		        .objs = (const struct em_k8s_object *const *)variants[g % N_VARIANTS],
		        .n_objs = N_SVC * 2,
		        .local_node = "n1"};
		struct em_table *t = em_table_build(&in, g);
		CONC_CHECK(t != NULL, "build %llu failed", (unsigned long long)g);
		if (!t)
			break;
		em_table_publish(t);
	}
	atomic_store(&stop_readers, true);
	for (int i = 0; i < N_READERS; i++)
		pthread_join(th[i], NULL);
	em_table_shutdown();
	for (int v = 0; v < N_VARIANTS; v++)
		for (int i = 0; i < N_SVC * 2; i++)
			em_k8s_free(variants[v][i]);
	CONC_CHECK(atomic_load(&reader_errors) == 0, "%lu of %lu lookups saw a torn snapshot",
	           atomic_load(&reader_errors), atomic_load(&reader_lookups));
	CONC_CHECK(atomic_load(&reader_lookups) > 1000, "readers barely ran (%lu lookups)",
	           atomic_load(&reader_lookups));
}

int main(void)
{
	CONC_RUN(rcu_readers_see_complete_snapshots);
	CONC_SUMMARY();
}

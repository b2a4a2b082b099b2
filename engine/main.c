/* edgemesh daemon: edge or cloud role, chosen by the config file.
 *
 *   edgemesh -c FILE        run
 *   edgemesh -c FILE -t     check FILE and exit 0 (valid) or 1
 *
 * Signals are blocked in every thread and taken here with sigwaitinfo, so no
 * handler ever runs inside a worker: SIGHUP reloads, SIGTERM/SIGINT stop. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/capture.h"
#include "engine/engine.h"
#include "proto/log.h"
#include "store/config.h"
#include "store/sync.h"
#include "store/table.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: edgemesh -c FILE [-t]\n"
	           "  -c FILE  configuration file (JSON, see conf/README.md)\n"
	           "  -t       check the configuration and exit\n"
	           "  -h       this help\n");
}

static int mkdir_p(const char *path)
{
	char buf[PATH_MAX];
	size_t n = strlen(path);
	if (n >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, n + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, 0700) == -1 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, 0700) == -1 && errno != EEXIST)
		return -errno;
	return 0;
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	bool test_only = false;
	struct em_config *cfg;
	struct em_sync *sync = NULL;
	struct em_engine *eng = NULL;
	const struct em_config *live = NULL;
	bool captured = false;
	char err[1024];
	sigset_t set;
	int opt, rc = 1;

	while ((opt = getopt(argc, argv, "c:th")) != -1) {
		switch (opt) {
		case 'c':
			path = optarg;
			break;
		case 't':
			test_only = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!path || optind != argc) {
		usage(stderr);
		return 2;
	}
	if (em_config_load(path, &cfg, err, sizeof(err))) {
		fprintf(stderr, "edgemesh: %s\n", err);
		if (test_only)
			fprintf(stderr, "edgemesh: configuration file %s test failed\n", path);
		return 1;
	}
	if (test_only) {
		printf("edgemesh: configuration file %s test is successful\n", path);
		em_config_free(cfg);
		return 0;
	}

	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	if ((rc = mkdir_p(cfg->data_dir))) {
		EM_ERR("main", "data_dir %s: %s", cfg->data_dir, strerror(-rc));
		em_config_free(cfg);
		return 1;
	}
	EM_INFO("main", "edgemesh starting: role %s, node %s, %u workers, config %s",
	        cfg->role == EM_ROLE_CLOUD ? "cloud" : "edge", cfg->node_name, cfg->workers, path);

	em_table_init();
	/* The sync thread owns cfg from here and publishes it. */
	rc = em_sync_start(cfg, &sync);
	cfg = NULL;
	if (rc)
		goto out;
	live = em_config_current();
	if ((rc = em_engine_start(live, &eng)))
		goto out;
	em_sync_set_counters(sync, em_engine_counters, eng);
	if (live->capture.enabled) {
		if ((rc = em_capture_install(live)))
			goto out;
		captured = true;
	}
	EM_INFO("main", "ready");

	for (;;) {
		siginfo_t si;
		int sig = sigwaitinfo(&set, &si);
		if (sig == SIGHUP) {
			EM_INFO("main", "SIGHUP: reloading configuration");
			em_sync_reload(sync);
		} else if (sig == SIGTERM || sig == SIGINT) {
			EM_INFO("main", "%s: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
			break;
		}
	}
	rc = 0;
out:
	live = em_config_current();
	if (captured)
		em_capture_remove(live);
	if (eng) {
		em_sync_set_counters(sync, NULL, NULL);
		em_engine_stop(eng, live ? live->timeouts.shutdown_ms : 0);
	}
	em_sync_stop(sync);
	em_config_publish(NULL);
	em_table_shutdown();
	if (cfg)
		em_config_free(cfg);
	EM_INFO("main", "stopped%s", rc ? " after an error" : "");
	return rc ? 1 : 0;
}

/* edgemesh daemon: edge or cloud role, chosen by the config file.
 *
 *   edgemesh -c FILE                   run
 *   edgemesh -c FILE -t                check FILE and exit 0 (valid) or 1
 *   edgemesh -c FILE --remove-capture  remove the capture rules a run left
 *
 * Signals are blocked in every thread and taken here with sigwaitinfo, so no
 * handler ever runs inside a worker: SIGHUP reloads, SIGTERM/SIGINT stop.
 *
 * The sync thread may replace (and free) the live config at any time after a
 * SIGHUP, also while this thread is shutting down. This thread is therefore
 * an RCU reader like the workers: online only while it reads the live config
 * (start-up and the first part of shutdown), offline while it waits for
 * signals, so reloads and table updates never wait for it there.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/capture.h"
#include "engine/certs.h"
#include "engine/engine.h"
#include "engine/fastpath.h"
#include "proto/log.h"
#include "store/config.h"
#include "store/control.h"
#include "store/rcu.h"
#include "store/sync.h"
#include "store/table.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: edgemesh -c FILE [-t | --remove-capture]\n"
	           "  -c FILE           configuration file (JSON, see conf/README.md)\n"
	           "  -t                check the configuration and exit\n"
	           "  --remove-capture  remove the iptables capture rules a run installed\n"
	           "                    (after a crash; idempotent) and exit\n"
	           "  -h                this help\n");
}

/* --remove-capture: the daemon need not run. The rules are removed whatever
 * the config says (it only decides whether IPv6 failures are errors), and
 * also when it does not load, so a unit's ExecStopPost still cleans up after
 * a config change broke the file; the exit status then says 1. */
static int remove_capture(const char *path)
{
	struct em_config *cfg = NULL;
	char err[1024];
	int bad = 0, n, rc;

	if (em_config_load(path, &cfg, err, sizeof(err))) {
		fprintf(stderr, "edgemesh: %s; removing the capture rules anyway\n", err);
		cfg = NULL;
		bad = 1;
	}
	n = em_capture_installed(cfg);
	if (n == 0) {
		printf("edgemesh: no capture rules (chain %s) installed, nothing to remove\n",
		       EM_CAPTURE_CHAIN);
		rc = 0;
	} else if (n < 0 || (rc = em_capture_remove(cfg)) != 0) {
		rc = n < 0 ? n : rc;
		fprintf(stderr, "edgemesh: cannot remove the capture rules (chain %s): %s\n",
		        EM_CAPTURE_CHAIN, strerror(-rc));
	} else {
		printf("edgemesh: capture rules (chain %s and its jumps) removed\n",
		       EM_CAPTURE_CHAIN);
	}
	if (cfg)
		em_config_free(cfg);
	return rc || bad ? 1 : 0;
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

static void control_accept(void *ctx, int fd, const char *node, const struct em_addr *src,
                           bool enroll_only)
{
	em_ctl_accept(ctx, fd, node, src, enroll_only);
}

static int control_dial(void *ctx, int fd, const struct em_addr *cloud)
{
	return em_engine_control_open(ctx, fd, cloud);
}

/* The sync thread's receiver of snapshots: the fast path's maps follow. */
static void fastpath_publish(void *ctx, const struct em_table *t)
{
	em_fastpath_publish(ctx, t);
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	bool test_only = false, remove_only = false, rcu_reader = false, rcu_online = false;
	uint32_t drain_ms = 0;
	struct em_config *cfg;
	struct em_sync *sync = NULL;
	struct em_engine *eng = NULL;
	struct em_certs *certs = NULL;
	struct em_fastpath *fp = NULL;
	const struct em_config *live = NULL;
	bool captured = false;
	char err[1024];
	sigset_t set;
	int opt, rc = 1;

	static const struct option longopts[] = {
	        {"remove-capture", no_argument, NULL, 'R'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};

	while ((opt = getopt_long(argc, argv, "c:th", longopts, NULL)) != -1) {
		switch (opt) {
		case 'R':
			remove_only = true;
			break;
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
	if (!path || optind != argc || (test_only && remove_only)) {
		usage(stderr);
		return 2;
	}
	if (remove_only)
		return remove_capture(path);
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
	/* Registered only now: em_sync_start publishes and waits for grace
	 * periods, which an online reader here would block. */
	em_rcu_register();
	rcu_reader = rcu_online = true;
	live = em_config_current();
	if ((rc = em_certs_new(live, &certs)))
		goto out;
	if ((rc = em_engine_start(live, &eng)))
		goto out;
	if (certs)
		em_certs_attach(certs, eng);
	/* The fast path: its maps follow every snapshot from here on, the
	 * current one written first (publish keeps the newer of the two). */
	if (!(fp = em_fastpath_start(live))) {
		rc = -ENOMEM;
		goto out;
	}
	if (em_fastpath_on(fp)) {
		em_sync_set_published(sync, fastpath_publish, fp);
		em_fastpath_publish(fp, em_table_current());
	}
	em_engine_set_fastpath(eng, fp);
	em_sync_set_counters(sync, em_engine_counters, eng);
	em_sync_set_stats(sync, em_engine_node_stats, eng);
	/* The control stream: the cloud's workers hand edges' streams to the
	 * sync thread; an edge's sync thread asks worker 0 for its stream. */
	struct em_ctl *ctl = em_sync_control(sync);
	if (ctl && live->role == EM_ROLE_CLOUD)
		em_engine_set_control(eng, control_accept, ctl);
	else if (ctl)
		em_ctl_set_dialer(ctl, control_dial, eng);
	if (ctl && certs) {
		struct em_ctl_cert_ops ops;
		em_certs_ops(certs, &ops);
		em_ctl_set_cert(ctl, &ops);
	}
	if (live->capture.enabled) {
		if ((rc = em_capture_install(live)))
			goto out;
		captured = true;
	}
	live = NULL;
	em_rcu_offline();
	rcu_online = false;
	EM_INFO("main", "ready");

	for (;;) {
		siginfo_t si;
		struct timespec minute = {.tv_sec = 60};
		int sig = sigtimedwait(&set, &si, &minute);
		if (sig == -1) {
			if (certs)
				em_certs_tick(certs);
			continue;
		}
		if (sig == SIGHUP) {
			EM_INFO("main", "SIGHUP: reloading configuration");
			em_sync_reload(sync);
			if (certs)
				em_certs_reload(certs);
		} else if (sig == SIGTERM || sig == SIGINT) {
			EM_INFO("main", "%s: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
			break;
		}
	}
	rc = 0;
out:
	/* Online while the live config is read: a reload that the sync thread
	 * performs meanwhile (a SIGHUP just before SIGTERM) frees the config it
	 * replaces only after this thread goes offline again. */
	if (rcu_reader && !rcu_online)
		em_rcu_online();
	live = em_config_current();
	if (captured)
		em_capture_remove(live);
	/* New connects take the engine's path while it drains; the maps stay
	 * for the handoffs of connections already captured. */
	if (sync)
		em_sync_set_published(sync, NULL, NULL);
	em_fastpath_detach(fp);
	drain_ms = live ? live->timeouts.shutdown_ms : 0;
	live = NULL;
	/* Unregistered before anything below waits for a grace period
	 * (em_sync_stop joins the sync thread, publish(NULL) synchronizes). */
	if (rcu_reader)
		em_rcu_unregister();
	if (eng) {
		em_sync_set_counters(sync, NULL, NULL);
		em_sync_set_stats(sync, NULL, NULL);
		struct em_ctl *c = sync ? em_sync_control(sync) : NULL;
		em_engine_set_control(eng, NULL, NULL);
		if (c) {
			em_ctl_set_dialer(c, NULL, NULL);
			em_ctl_set_cert(c, NULL);
		}
		em_engine_stop(eng, drain_ms);
	}
	em_sync_stop(sync);
	em_fastpath_free(fp);
	em_certs_free(certs);
	em_config_publish(NULL);
	em_table_shutdown();
	if (cfg)
		em_config_free(cfg);
	EM_INFO("main", "stopped%s", rc ? " after an error" : "");
	return rc ? 1 : 0;
}

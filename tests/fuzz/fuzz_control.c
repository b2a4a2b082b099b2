/* libFuzzer harness for the cloud's side of the control stream: the bytes
 * are what one edge sends on its stream, fed through a socketpair to a cloud
 * (store/control.h) with a store in a temporary directory (tmpfs), as the
 * engine would bridge them. The first byte picks the chunk size the bytes
 * arrive in. A valid register makes the cloud answer with a snapshot, which
 * the harness reads and drops. Checks: no crash, no leak, and the session
 * ends once the edge's side closes. */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto/log.h"
#include "store/api.h"
#include "store/changelog.h"
#include "store/config.h"
#include "store/control.h"
#include "store/store.h"
#include "store/table.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static char dir[64];
static struct em_store *st;
static struct em_clog *clog;
static struct em_ctl *ctl;
static struct em_config *cfg;

static void log_change(void *ctx, uint64_t gen, enum em_bh_op op, const char *key,
                       const char *json)
{
	(void)ctx;
	em_clog_append(clog, gen, op, key, json);
}

static void done(void)
{
	em_ctl_free(ctl);
	em_store_close(st);
	em_clog_free(clog);
	em_config_free(cfg);
	static const char *const files[] = {"edgemesh.db", "edgemesh.db-wal", "edgemesh.db-shm"};
	char p[128];
	for (size_t i = 0; i < 3; i++) {
		snprintf(p, sizeof(p), "%s/%s", dir, files[i]);
		unlink(p);
	}
	rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	em_log_level = EM_LOG_ERROR - 1; /* bad streams are the point: keep quiet */
	snprintf(dir, sizeof(dir), "/dev/shm/em-fuzz-ctl-XXXXXX");
	if (!mkdtemp(dir))
		abort();
	em_table_init();
	char json[512], err[256];
	snprintf(json, sizeof(json),
	         "{\"role\":\"cloud\",\"node_name\":\"c1\",\"data_dir\":\"%s\",\"tunnel\":{"
	         "\"cluster_key\":\"0123456789abcdef0123456789abcdef\",\"encryption\":\"none\"}}",
	         dir);
	if (em_config_parse("fuzz", json, strlen(json), &cfg, err, sizeof(err)) ||
	    em_store_open(dir, "c1", &st))
		abort();
	clog = em_clog_new(0, 10000, 8u << 20);
	em_store_set_observer(st, log_change, NULL);
	ctl = em_ctl_new(cfg, st, clog);
	if (!clog || !ctl)
		abort();
	atexit(done);
	return 0;
}

static void turn(void)
{
	struct pollfd pfd[64];
	int timeout = 0;
	size_t n = em_ctl_pollfds(ctl, pfd, 64, &timeout);
	poll(pfd, n, 0);
	em_ctl_run(ctl, pfd, n);
}

/* Reads and drops what the cloud sent; returns false at EOF. */
static bool drain(int fd)
{
	char buf[65536];
	for (;;) {
		ssize_t r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (r > 0)
			continue;
		return r != 0;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	size_t chunk = (size_t)data[0] * 16 + 1;
	data++;
	size--;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv))
		return 0;
	struct em_addr src;
	em_addr_parse("192.0.2.1", false, &src);
	em_ctl_accept(ctl, sv[1], "edge-f", &src, false);
	turn();
	bool open = true;
	for (size_t off = 0; off < size && open;) {
		size_t n = size - off < chunk ? size - off : chunk;
		ssize_t w = send(sv[0], data + off, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w > 0)
			off += (size_t)w;
		turn();
		open = drain(sv[0]) && w != -1;
	}
	/* The edge goes away: the cloud must let go of the session. */
	shutdown(sv[0], SHUT_WR);
	for (int i = 0; i < 200 && open; i++) {
		turn();
		open = drain(sv[0]);
	}
	if (open)
		abort(); /* the cloud kept a stream whose edge left */
	close(sv[0]);
	return 0;
}

/* libFuzzer harness for the API socket: the bytes are what one client sends,
 * fed to the server's request loop (em_api_serve) against a fresh store in a
 * temporary directory (tmpfs), as the sync thread does. The first byte picks how the
 * bytes arrive (chunk size) and how much of the replies the client reads
 * between chunks, so the pause at EM_API_MAX_BACKLOG and the resume are
 * exercised too. Checks: one reply line per request line handled, and no
 * request is left waiting that could be served. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto/log.h"
#include "store/api.h"
#include "store/store.h"
#include "store/table.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static char dir[64];

static void remove_dir(void);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	em_log_level = EM_LOG_ERROR - 1; /* bad requests are the point: keep quiet */
	snprintf(dir, sizeof(dir), "/dev/shm/em-fuzz-api-XXXXXX");
	if (!mkdtemp(dir))
		abort();
	atexit(remove_dir);
	em_table_init();
	return 0;
}

static void remove_db(void);

static void remove_dir(void)
{
	remove_db();
	rmdir(dir);
}

static void remove_db(void)
{
	static const char *const sfx[] = {"", "-wal", "-shm", "-journal"};
	char p[128];
	for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
		snprintf(p, sizeof(p), "%s/edgemesh.db%s", dir, sfx[i]);
		unlink(p);
	}
}

static size_t count_nl(const char *p, size_t n)
{
	size_t c = 0;
	for (size_t i = 0; i < n; i++)
		c += p[i] == '\n';
	return c;
}

/* Reply lines appended since <before> bytes were waiting. */
static size_t new_lines(const struct em_buf *out, size_t out_off, size_t before)
{
	size_t added = out->len - out_off - before;
	return added ? count_nl(out->data + out->len - added, added) : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct em_store *st;
	struct em_buf in = {0}, out = {0};
	size_t out_off = 0, off, chunk, read_step, lines_in = 0, lines_out = 0;
	int closed = 0;

	if (size < 1)
		return 0;
	chunk = (size_t)(data[0] & 0x0f) * 97 + 1;
	read_step = (data[0] >> 4) ? (size_t)(data[0] >> 4) << 16 : SIZE_MAX;
	data++;
	size--;
	remove_db();
	if (em_store_open(dir, "edge-node-1", &st))
		abort();
	for (off = 0; off < size && !closed;) {
		if (em_api_may_read(&in, &out, out_off)) {
			size_t n = size - off < chunk ? size - off : chunk;
			lines_in += count_nl((const char *)data + off, n);
			if (em_buf_append(&in, data + off, n))
				abort();
			off += n;
		}
		size_t before = out.len - out_off;
		closed = em_api_serve(st, NULL, &in, &out, &out_off);
		lines_out += new_lines(&out, out_off, before);
		if (!closed && em_api_has_work(&in, &out, out_off))
			abort(); /* a servable request left waiting */
		/* The client reads some of its replies. */
		size_t pending = out.len - out_off;
		out_off += pending < read_step ? pending : read_step;
	}
	/* The client reads the rest; what was held back is served. */
	for (int turn = 0; !closed && em_api_has_work(&in, &out, out_off); turn++) {
		size_t before = out.len - out_off;
		if (turn > 1 << 20)
			abort();
		closed = em_api_serve(st, NULL, &in, &out, &out_off);
		lines_out += new_lines(&out, out_off, before);
		out_off = out.len;
	}
	/* Every request line got exactly one reply line (a line over the size
	 * limit, which has no newline, gets one more). */
	if (!closed && lines_out != lines_in - count_nl(in.data ? in.data : "", in.len))
		abort();
	em_buf_free(&in);
	em_buf_free(&out);
	em_store_close(st);
	return 0;
}

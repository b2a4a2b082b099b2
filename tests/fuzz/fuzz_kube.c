/* libFuzzer harness for the Kubernetes API watcher's decoders
 * (store/kube_wire.c). First byte odd: the rest is a server URL. Even: the
 * rest is a chunked watch response body, fed in pieces whose sizes the
 * first byte picks, each line decoded as a watch event; the line bound
 * (256 bytes here) must hold at every step. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "store/kube_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_LINE 256

static int on_line(void *arg, const char *line, size_t len)
{
	struct em_kube_event ev;
	char err[256];
	(void)arg;
	if (len > FUZZ_MAX_LINE)
		abort();
	if (em_kube_event_parse(line, len, &ev, err, sizeof(err)) == 0)
		cJSON_Delete(ev.root);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	if (data[0] & 1) {
		char *s = malloc(size);
		struct em_kube_url u;
		if (!s)
			return 0;
		memcpy(s, data + 1, size - 1);
		s[size - 1] = 0;
		em_kube_url_parse(s, &u);
		free(s);
		return 0;
	}
	static const char head[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
	struct em_http1_head h;
	if (em_http1_parse_response(NULL, head, sizeof(head) - 1, 0, NULL, &h) <= 0)
		abort();
	struct em_kube_lines l = {0};
	em_kube_lines_init(&l, &h, FUZZ_MAX_LINE);
	size_t piece = (size_t)(data[0] >> 1) + 1, off = 1;
	while (off < size) {
		size_t n = size - off < piece ? size - off : piece;
		ssize_t got = em_kube_lines_feed(&l, (const char *)data + off, n, on_line, NULL);
		if (got < 0)
			break;
		if ((size_t)got > n || l.cap > FUZZ_MAX_LINE ||
		    em_kube_lines_partial(&l) > FUZZ_MAX_LINE)
			abort();
		if ((size_t)got < n || em_kube_lines_done(&l))
			break;
		off += n;
	}
	em_kube_lines_free(&l);
	return 0;
}

/* libFuzzer harness for the tunnels' TLS pipe: the input is fed, in pieces,
 * to an acceptor (as a stranger on the tunnel port would send it) and to a
 * dialer that has sent its ClientHello (as a stranger answering it would).
 * Whatever arrives, the pipe must not crash, must keep its output within
 * its ring, and must end FAILED or still waiting: no input without a
 * certificate of the cluster CA gets it to OPEN. The certificates are made
 * once, in a temporary directory removed at once after loading. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "tunnel/pki.h"
#include "tunnel/tls_pipe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct em_tls_pipe_ctx *ctx;

static void setup(void)
{
	char dir[] = "/tmp/em-fuzz-tls-XXXXXX", ca[PATH_MAX], crt[PATH_MAX], key[PATH_MAX],
	     err[512];
	if (!mkdtemp(dir))
		abort();
	snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
	snprintf(crt, sizeof(crt), "%s/node-a.crt", dir);
	snprintf(key, sizeof(key), "%s/node-a.key", dir);
	struct em_pki_issue req = {.ca_dir = dir, .node = "node-a", .out_dir = dir, .days = 2};
	if (em_pki_ca_init(dir, 2, err, sizeof(err)) || em_pki_cert_issue(&req, err, sizeof(err)))
		abort();
	struct em_tls_pipe_files f = {.ca_file = ca, .cert_file = crt, .key_file = key};
	ctx = em_tls_pipe_ctx_new(&f, err, sizeof(err));
	snprintf(key, sizeof(key), "%s/ca.key", dir);
	unlink(ca);
	unlink(crt);
	unlink(key);
	snprintf(key, sizeof(key), "%s/node-a.key", dir);
	unlink(key);
	rmdir(dir);
	if (!ctx)
		abort();
}

static void play(enum em_tls_pipe_role role, const uint8_t *data, size_t size)
{
	struct em_tls_pipe *p = em_tls_pipe_new(ctx, role, NULL);
	uint8_t buf[4096];
	size_t off = 0, step = 1 + (size ? data[0] % 97 : 0);

	if (!p)
		abort();
	while (off < size) {
		size_t n = step * 37;
		if (n > size - off)
			n = size - off;
		ssize_t took = em_tls_pipe_input(p, data + off, n);
		if (took < 0)
			break;
		off += (size_t)took;
		ssize_t r;
		while ((r = em_tls_pipe_read(p, buf, sizeof(buf))) > 0)
			;
		if (r < 0)
			break;
		const uint8_t *o;
		size_t q, total = 0;
		while ((q = em_tls_pipe_output(p, &o)) > 0) {
			total += q;
			if (total > EM_TLS_PIPE_BUF)
				abort();
			em_tls_pipe_output_advance(p, q);
		}
		if (took == 0 && r == 0)
			break; /* the ring is full and nothing is read: stuck input */
	}
	if (em_tls_pipe_state(p) == EM_TLS_PIPE_OPEN)
		abort();
	em_tls_pipe_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!ctx)
		setup();
	play(EM_TLS_PIPE_ACCEPTOR, data, size);
	play(EM_TLS_PIPE_DIALER, data, size);
	return 0;
}

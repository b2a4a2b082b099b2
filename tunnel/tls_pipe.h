/* TLS 1.3 for a tunnel, sans-I/O: one OpenSSL connection between the
 * network's ciphertext and the tunnel session's plaintext. The pipe owns no
 * socket: the caller (the engine's tunnel connection)
 *   - feeds every received byte to em_tls_pipe_input(),
 *   - takes the plaintext out with em_tls_pipe_read() (the bytes the tunnel
 *     session's em_tunnel_session_input() is fed),
 *   - hands plaintext to send (the session's output) to em_tls_pipe_write(),
 *   - sends what em_tls_pipe_output() exposes and reports it with
 *     em_tls_pipe_output_advance(),
 * and, after any of these, calls em_tls_pipe_read() until it returns 0, so
 * that a handshake or a read that waited for room goes on.
 *
 * Both ends present a certificate of the cluster CA (tunnel/pki.h) and check
 * the other's: TLS 1.3 only, no session resumption, no SNI (node names do
 * not travel in clear). A peer's node name is the only subjectAltName
 * dNSName of its certificate; a certificate with none, several, or one that
 * is not a node name (em_pki_node_name_check) is refused.
 *
 * Memory is bounded and allocated when the pipe is made: two rings of
 * EM_TLS_PIPE_BUF bytes (a BIO pair), one for received ciphertext not yet
 * decrypted and one for ciphertext not yet sent, plus OpenSSL's own read and
 * write record buffers (about 17 KiB each, allocated by OpenSSL during the
 * handshake and kept) and its connection state: 120 KiB per open pipe as
 * measured with OpenSSL 3.0 (heap in use after a handshake). Plaintext is never held
 * beyond the rest of one decrypted record (at most 16 KiB, inside OpenSSL)
 * when the caller's read buffer was smaller than the record. Nothing is
 * allocated per record after the handshake beyond what OpenSSL does itself.
 *
 * Not thread-safe: a pipe belongs to one worker. A context may be shared by
 * the pipes of every worker (OpenSSL's SSL_CTX is). */
#ifndef EM_TUNNEL_TLS_PIPE_H
#define EM_TUNNEL_TLS_PIPE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* Largest TLS 1.3 record on the wire: header, 2^14 bytes of plaintext and
 * at most 256 bytes of expansion (RFC 8446 5.2). */
#define EM_TLS_PIPE_MAX_RECORD (5 + 16384 + 256)
/* Each ring's size: two whole records. */
#define EM_TLS_PIPE_BUF (2 * EM_TLS_PIPE_MAX_RECORD)
/* Longest message of em_tls_pipe_error() and the context builder. */
#define EM_TLS_PIPE_ERR_LEN 256

struct em_tls_pipe_ctx;
struct em_tls_pipe;

enum em_tls_pipe_role {
	EM_TLS_PIPE_DIALER,   /* TLS client: opened the connection */
	EM_TLS_PIPE_ACCEPTOR, /* TLS server */
};

enum em_tls_pipe_state {
	EM_TLS_PIPE_HANDSHAKE, /* handshake under way; em_tls_pipe_write() takes nothing */
	/* Handshake done, the peer's certificate checked. A dialer gets here
	 * before the acceptor has checked the dialer's certificate (TLS 1.3):
	 * a refusal shows as FAILED at a later em_tls_pipe_read(). */
	EM_TLS_PIPE_OPEN,
	EM_TLS_PIPE_CLOSED, /* the peer ended the stream cleanly (close_notify) */
	EM_TLS_PIPE_FAILED, /* refused or broken: em_tls_pipe_error() says why */
};

struct em_tls_pipe_files {
	const char *ca_file;   /* PEM: the cluster CA certificate(s) peers are checked against */
	const char *cert_file; /* PEM: this node's certificate (chain) */
	const char *key_file;  /* PEM: its private key, unencrypted */
	/* If non-NULL, this node's name: the certificate must name it. */
	const char *node_name;
	/* 0: certificates (ours at build, peers' in handshakes) are checked
	 * against the clock. Tests set a fixed time here to load a certificate
	 * that has since expired. */
	time_t check_time;
};

/* Builds a context from the files: TLS 1.3 only, the peer's certificate
 * required and verified against <ca_file> on both ends. Checks at once what
 * would otherwise fail every handshake, each with a message naming the file:
 * a file missing or not PEM, the key not that of the certificate, the
 * certificate not issued by <ca_file>'s CA or not valid now (expired, not
 * yet valid), not naming exactly one node (or not <node_name>).
 * Returns the context, or NULL with the message in <err> (EM_TLS_PIPE_ERR_LEN
 * bytes suffice; may be NULL). Blocking file I/O: call at start or reload. */
struct em_tls_pipe_ctx *em_tls_pipe_ctx_new(const struct em_tls_pipe_files *files, char *err,
                                            size_t errlen);

/* This node's name, as its own certificate gives it; valid while <ctx> is. */
const char *em_tls_pipe_ctx_node_name(const struct em_tls_pipe_ctx *ctx);

/* A check of a peer's certificate beyond the CA's verdict (revocation):
 * called during each handshake of a pipe made from the context afterwards,
 * on that pipe's thread, with the node the certificate names and its
 * notBefore. Returns NULL to accept, or why it is refused (a string that
 * lives at least until the call returns; the handshake fails with it). */
typedef const char *(*em_tls_pipe_check_fn)(void *arg, const char *node, time_t not_before);

/* Sets <ctx>'s check (NULL: none). Pipes copy it when they are made: set
 * it before the first em_tls_pipe_new(); <arg> must outlive them. */
void em_tls_pipe_ctx_set_check(struct em_tls_pipe_ctx *ctx, em_tls_pipe_check_fn fn, void *arg);

/* This node's own certificate's validity (as loaded into <ctx>). */
void em_tls_pipe_ctx_lifetime(const struct em_tls_pipe_ctx *ctx, time_t *not_before,
                              time_t *not_after);

/* Frees <ctx>. Pipes made from it keep working: each holds a reference to
 * what it needs. NULL is ignored. */
void em_tls_pipe_ctx_free(struct em_tls_pipe_ctx *ctx);

/* Makes a pipe. <peer_name> is the node expected at the other end (copied),
 * or NULL to learn it from the certificate (an acceptor, before the peer
 * said who it is); a certificate that does not name <peer_name> fails the
 * handshake with a message naming both. A dialer's ClientHello is waiting
 * in em_tls_pipe_output() on return.
 * Returns the pipe, or NULL when out of memory or <peer_name> is not a node
 * name. */
struct em_tls_pipe *em_tls_pipe_new(struct em_tls_pipe_ctx *ctx, enum em_tls_pipe_role role,
                                    const char *peer_name);

/* Frees <p> and everything it holds (also unsent output). NULL is ignored. */
void em_tls_pipe_free(struct em_tls_pipe *p);

/* Feeds <len> received bytes. Takes as many as the receive ring has room
 * for and returns that count (0..len; fewer than <len> means: call
 * em_tls_pipe_read() to make room, then feed the rest). Returns -EPROTO
 * once the pipe has FAILED. Makes the handshake progress; a broken record
 * is found by the em_tls_pipe_read() that reaches it. */
ssize_t em_tls_pipe_input(struct em_tls_pipe *p, const void *data, size_t len);

/* Decrypts received bytes into <buf> (<cap> bytes) and returns how many,
 * or 0 when none can be had now: the handshake is still under way, more
 * input is needed, or the output must be sent first to make room.
 * Returns -EPIPE once the peer closed cleanly (state CLOSED) and -EPROTO
 * once the pipe FAILED (a refused certificate, a broken or forged record,
 * bytes that are not TLS, an alert from the peer): the tunnel is over; the
 * output may still hold an alert for the peer, worth a try to send. */
ssize_t em_tls_pipe_read(struct em_tls_pipe *p, void *buf, size_t cap);

/* Encrypts up to <len> bytes of plaintext and returns how many were taken:
 * 0 while the handshake is under way or when the output ring has no room
 * for another record (send output first), -EPROTO once FAILED and -EPIPE
 * after em_tls_pipe_close(). Whole records of up to 16 KiB are made; bytes
 * taken are in em_tls_pipe_output() at once. */
ssize_t em_tls_pipe_write(struct em_tls_pipe *p, const void *data, size_t len);

/* The ciphertext waiting to be sent: sets <*data> and returns its length
 * (0: nothing). The slice may be part of what waits (the ring wraps): call
 * again after em_tls_pipe_output_advance(). Valid until the next call on
 * <p>. */
size_t em_tls_pipe_output(struct em_tls_pipe *p, const uint8_t **data);

/* <n> bytes of the last em_tls_pipe_output() slice were sent. */
void em_tls_pipe_output_advance(struct em_tls_pipe *p, size_t n);

/* Queues a close_notify alert for the peer; later writes return -EPIPE. */
void em_tls_pipe_close(struct em_tls_pipe *p);

enum em_tls_pipe_state em_tls_pipe_state(const struct em_tls_pipe *p);

/* The peer's node name once the state is OPEN (its certificate's
 * subjectAltName), else "". Valid as long as <p>. */
const char *em_tls_pipe_peer_name(const struct em_tls_pipe *p);

/* The notBefore of the peer's certificate once the state is OPEN, else 0. */
time_t em_tls_pipe_peer_not_before(const struct em_tls_pipe *p);

/* Checks a name the peer claimed (the tunnel HELLO's node name) against its
 * certificate: 0 when the state is OPEN and they are equal, -EAGAIN before
 * the handshake is done, else -EACCES, and the pipe FAILED with a message
 * naming both. */
int em_tls_pipe_check_peer(struct em_tls_pipe *p, const char *claimed);

/* Why the pipe FAILED, one line ("" if it did not). Valid as long as <p>. */
const char *em_tls_pipe_error(const struct em_tls_pipe *p);

#endif

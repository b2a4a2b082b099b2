/* The cluster's certificates: a cluster CA and one certificate per node, for
 * the tunnels' mutual TLS (tunnel/tls_pipe.h). Used by `meshctl ca init` and
 * `meshctl cert issue`; blocking file I/O, not for a worker's loop.
 *
 * Keys are ECDSA P-256. A node's certificate names the node twice, as its
 * subject CN and as its only subjectAltName dNSName (the one the tunnels
 * check), and is good for both ends of a tunnel (extendedKeyUsage serverAuth
 * and clientAuth). Files are PEM: <dir>/ca.key + <dir>/ca.crt for the CA,
 * <out>/<node>.key + <out>/<node>.crt for a node. Keys are written mode 0600,
 * certificates 0644, each through a temporary file in the same directory,
 * fsync and rename (link when nothing may be replaced), so a reader sees the
 * old file or the whole new one, never a part.
 *
 * Every function returning int returns 0 or -errno and, on failure, writes a
 * one-line message naming the file or value at fault into <err> (<errlen>
 * bytes, NUL-terminated, may be NULL/0 when the caller does not want it). */
#ifndef EM_TUNNEL_PKI_H
#define EM_TUNNEL_PKI_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define EM_PKI_NODE_NAME_MAX 253
#define EM_PKI_CA_DAYS       3650 /* default lifetime of a cluster CA */
#define EM_PKI_NODE_DAYS     365  /* default lifetime of a node certificate */
#define EM_PKI_MAX_DAYS      36500
/* notBefore is set this far before the time of issue, so that a node whose
 * clock is a little behind the issuer's accepts a fresh certificate. */
#define EM_PKI_SKEW_S 300

/* Checks that <name> can be a node's name in a certificate: a lowercase
 * DNS-1123 subdomain as Kubernetes names nodes (labels of a-z, 0-9 and '-'
 * that start and end with a letter or digit, joined by single dots),
 * 1..253 bytes.
 * Returns 0, or -EINVAL with a message saying what was expected. */
int em_pki_node_name_check(const char *name, char *err, size_t errlen);

/* Makes a cluster CA in <dir> (created mode 0700 if missing, one level):
 * a new P-256 key in <dir>/ca.key (0600) and a self-signed certificate in
 * <dir>/ca.crt (0644): basicConstraints critical CA:TRUE pathlen:0,
 * keyUsage critical keyCertSign+cRLSign, subject CN "edgemesh CA <8 hex
 * digits>" (random: two clusters' CAs differ by name), valid from
 * EM_PKI_SKEW_S ago for <days> days (1..EM_PKI_MAX_DAYS).
 * Never replaces anything: -EEXIST (the message names the file) when either
 * file exists, also when one appears while this runs. On any failure no
 * new ca.key or ca.crt is left behind. */
int em_pki_ca_init(const char *dir, unsigned days, char *err, size_t errlen);

struct em_pki_issue {
	const char *ca_dir;  /* holds ca.key and ca.crt (em_pki_ca_init) */
	const char *node;    /* checked by em_pki_node_name_check() */
	const char *out_dir; /* where <node>.key and <node>.crt go; NULL: "." */
	unsigned days;       /* 1..EM_PKI_MAX_DAYS; 0 takes EM_PKI_NODE_DAYS */
	bool force;          /* replace an existing <node>.key / <node>.crt */
	/* Time of issue; 0 is now. Tests pass a past time to make a certificate
	 * that has already expired (now - 2 days with days 1). */
	time_t now;
};

/* Issues a node certificate: a new P-256 key in <out>/<node>.key (0600) and
 * a certificate signed by the CA of <ca_dir> in <out>/<node>.crt (0644):
 * subject CN=<node>, subjectAltName DNS:<node>, basicConstraints CA:FALSE,
 * keyUsage critical digitalSignature, extendedKeyUsage serverAuth+clientAuth,
 * random 159-bit serial, valid from EM_PKI_SKEW_S before <now> for <days>.
 * <out> is created mode 0700 if missing (one level).
 * Errors: -EINVAL bad name or days; -ENOENT / -EBADMSG a CA file missing or
 * unreadable; -EKEYREJECTED ca.key does not match ca.crt, or ca.crt is not a
 * CA; -EEXIST <node>.key or <node>.crt exists and !force; other -errno from
 * the file system. Without <force> nothing is replaced; with it the key and
 * certificate are replaced one after the other (key first). */
int em_pki_cert_issue(const struct em_pki_issue *req, char *err, size_t errlen);

#endif

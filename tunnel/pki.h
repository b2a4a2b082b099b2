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
#include <sys/types.h>
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

/* ---- enrollment: requests, a loaded CA, files written whole ----------- */

/* What a certificate says about its node and lifetime. */
struct em_pki_cert_info {
	char node[EM_PKI_NODE_NAME_MAX + 1]; /* its one subjectAltName dNSName, "" if none */
	char serial[48];                     /* hex, no leading zeros, "" if none */
	time_t not_before, not_after;
};

/* A request (CSR) of longest this many bytes of PEM is accepted. */
#define EM_PKI_CSR_MAX 4096
/* A PEM certificate, or CA certificate, of a node longer than this is refused. */
#define EM_PKI_PEM_MAX 8192

/* Makes a new P-256 key and a certificate signing request for <node>
 * (subject CN=<node>, signed by the key), both PEM, into <*key_pem> and
 * <*csr_pem> (malloc'd, NUL-terminated; the caller frees them). Returns 0,
 * -EINVAL for a bad name, -ENOMEM or -EIO, with a message in <err>. */
int em_pki_csr_new(const char *node, char **key_pem, char **csr_pem, char *err, size_t errlen);

struct em_pki_ca;

/* Loads the CA of <ca_dir> (ca.key, ca.crt, as em_pki_ca_init writes them)
 * and checks that the key is the certificate's and that it is a CA.
 * Returns it, or NULL with the reason (naming the file) in <err>. */
struct em_pki_ca *em_pki_ca_load(const char *ca_dir, char *err, size_t errlen);
void em_pki_ca_free(struct em_pki_ca *ca);
/* The CA certificate as PEM (NUL-terminated), valid as long as <ca>. */
const char *em_pki_ca_pem(const struct em_pki_ca *ca);

/* Signs a request for <node>: <csr_pem> (<len> bytes, at most
 * EM_PKI_CSR_MAX) must be one PEM certificate request whose own signature
 * verifies, with an EC P-256 key and subject CN equal to <node>. Whatever
 * else it asks for (other subject fields, extensions) is ignored: the
 * certificate is the one em_pki_cert_issue makes, for <days> days
 * (1..EM_PKI_MAX_DAYS) from <now> (0: the clock). Returns 0 with the PEM in
 * <*cert_pem> (malloc'd) and, if <info> is non-NULL, what it says; -EINVAL
 * (a bad request, with what was wrong in <err>), -ENOMEM or -EIO. */
int em_pki_ca_sign(const struct em_pki_ca *ca, const char *csr_pem, size_t len, const char *node,
                   unsigned days, time_t now, char **cert_pem, struct em_pki_cert_info *info,
                   char *err, size_t errlen);

/* As em_pki_ca_sign, for a key made here: <*pem> holds the certificate
 * then the new key (one file a node may use as both cert_file and
 * key_file). */
int em_pki_ca_issue_pem(const struct em_pki_ca *ca, const char *node, unsigned days, time_t now,
                        char **pem, struct em_pki_cert_info *info, char *err, size_t errlen);

/* Reads the first certificate of PEM text <pem> (<len> bytes) or of file
 * <path>. Returns 0, -ENOENT (no such file), -EBADMSG (no certificate) or
 * another -errno, with a message naming the file. */
int em_pki_cert_info_pem(const char *pem, size_t len, struct em_pki_cert_info *info, char *err,
                         size_t errlen);
int em_pki_cert_info_file(const char *path, struct em_pki_cert_info *info, char *err,
                          size_t errlen);

/* Whether a certificate should be replaced at <now>: two thirds of its
 * lifetime are over (or it is not valid at all). */
bool em_pki_renew_due(const struct em_pki_cert_info *info, time_t now);

/* Writes <len> bytes to <path> whole: a temporary file in the same
 * directory with <mode>, fsync, rename over <path>, fsync of the
 * directory. A reader sees the old file or the new one. The directory of
 * <path> is created mode 0700 when missing (one level). Returns 0 or
 * -errno with a message naming the file. */
int em_pki_write_file(const char *path, const void *data, size_t len, mode_t mode, char *err,
                      size_t errlen);

#endif

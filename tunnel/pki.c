/* Cluster CA and node certificates (pki.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "tunnel/pki.h"

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	ERR_clear_error();
	return rc;
}

/* OpenSSL's reason for the last failure, for messages; "" when none. */
static const char *ssl_reason(void)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;
	return r ? r : "unknown error";
}

static bool label_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

int em_pki_node_name_check(const char *name, char *err, size_t errlen)
{
	size_t n = name ? strlen(name) : 0;
	const char *what = "a lowercase DNS-1123 subdomain (a-z, 0-9, '-' and '.', each "
	                   "dot-separated label starting and ending with a letter or digit)";

	if (n == 0)
		return fail(err, errlen, -EINVAL, "node name is empty: expected %s", what);
	if (n > EM_PKI_NODE_NAME_MAX)
		return fail(err, errlen, -EINVAL,
		            "node name is %zu bytes long: expected at most %d bytes", n,
		            EM_PKI_NODE_NAME_MAX);
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		bool start = i == 0 || name[i - 1] == '.';
		bool end = i + 1 == n || name[i + 1] == '.';
		if (c == '.' && !start && !end)
			continue;
		if (c == '.' || !label_char(c) || ((start || end) && c == '-'))
			return fail(
			        err, errlen, -EINVAL,
			        "node name \"%.*s\" is not valid at byte %zu ('%c'): expected %s",
			        (int)(n > 80 ? 80 : n), name, i + 1,
			        (c >= 0x20 && c < 0x7f) ? c : '?', what);
	}
	return 0;
}

/* ---- files ---- */

static int ensure_dir(const char *dir, char *err, size_t errlen)
{
	struct stat st;
	if (mkdir(dir, 0700) == 0)
		return 0;
	if (errno != EEXIST)
		return fail(err, errlen, -errno, "cannot create directory %s: %s", dir,
		            strerror(errno));
	if (stat(dir, &st) == -1 || !S_ISDIR(st.st_mode))
		return fail(err, errlen, -ENOTDIR, "%s is not a directory", dir);
	return 0;
}

static int path_join(char *out, const char *dir, const char *name, const char *ext, char *err,
                     size_t errlen)
{
	int n = snprintf(out, PATH_MAX, "%s/%s%s", dir, name, ext);
	if (n < 0 || n >= PATH_MAX)
		return fail(err, errlen, -ENAMETOOLONG, "path too long: %s/%s%s", dir, name, ext);
	return 0;
}

static void sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd != -1) {
		fsync(fd); /* best effort: the file itself is already on disk */
		close(fd);
	}
}

/* Writes a key (<key> non-NULL) or a certificate to <path> with <mode>:
 * temporary file, fsync, then rename (<replace>) or link, which fails with
 * EEXIST rather than replace anything. */
static int write_pem(const char *dir, const char *path, mode_t mode, EVP_PKEY *key, X509 *crt,
                     bool replace, char *err, size_t errlen)
{
	char tmp[PATH_MAX];
	int fd, rc = 0;
	BIO *b;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp-XXXXXX", path) >= (int)sizeof(tmp))
		return fail(err, errlen, -ENAMETOOLONG, "path too long: %s", path);
	fd = mkstemp(tmp); /* mode 0600 whatever the umask */
	if (fd == -1)
		return fail(err, errlen, -errno, "cannot create a file in %s: %s", dir,
		            strerror(errno));
	b = BIO_new_fd(fd, BIO_NOCLOSE);
	if (!b ||
	    !(key ? PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL)
	          : PEM_write_bio_X509(b, crt)) ||
	    BIO_flush(b) != 1) {
		rc = fail(err, errlen, -EIO, "cannot write %s: %s", tmp, ssl_reason());
		goto out;
	}
	if (fchmod(fd, mode) == -1 || fsync(fd) == -1) {
		rc = fail(err, errlen, -errno, "cannot write %s: %s", tmp, strerror(errno));
		goto out;
	}
	if (replace ? rename(tmp, path) == -1 : link(tmp, path) == -1) {
		if (errno == EEXIST)
			rc = fail(err, errlen, -EEXIST, "%s already exists: not replacing it",
			          path);
		else
			rc = fail(err, errlen, -errno, "cannot create %s: %s", path,
			          strerror(errno));
		goto out;
	}
	if (!replace)
		unlink(tmp);
	sync_dir(dir);
out:
	BIO_free(b);
	close(fd);
	if (rc)
		unlink(tmp);
	return rc;
}

static int exists(const char *path, char *err, size_t errlen)
{
	if (access(path, F_OK) == 0)
		return fail(err, errlen, -EEXIST, "%s already exists: not replacing it", path);
	return 0;
}

/* ---- certificates ---- */

static int random_serial(X509 *x)
{
	BIGNUM *bn = BN_new();
	int ok = bn && BN_rand(bn, 159, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) &&
	         BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
	BN_free(bn);
	return ok ? 0 : -1;
}

static int add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
	int ok = e && X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	return ok ? 0 : -1;
}

/* A v3 certificate for <key> with subject CN=<cn>, valid from
 * now - EM_PKI_SKEW_S for <days>, signed by <ca>/<ca_key> (itself when <ca>
 * is NULL), with the CA's or a node's extensions. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *ca, EVP_PKEY *ca_key, time_t now,
                       unsigned days)
{
	X509 *x = X509_new();
	X509_NAME *name = X509_NAME_new();
	time_t from = now - EM_PKI_SKEW_S;
	X509V3_CTX ctx;
	char san[EM_PKI_NODE_NAME_MAX + 8];

	if (!x || !name || !X509_set_version(x, X509_VERSION_3) || random_serial(x) ||
	    !X509_time_adj_ex(X509_getm_notBefore(x), 0, 0, &from) ||
	    !X509_time_adj_ex(X509_getm_notAfter(x), (int)days, 0, &now) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1,
	                                -1, 0) ||
	    !X509_set_subject_name(x, name) ||
	    !X509_set_issuer_name(x, ca ? X509_get_subject_name(ca) : name) ||
	    !X509_set_pubkey(x, key))
		goto err;
	X509V3_set_ctx(&ctx, ca ? ca : x, x, NULL, NULL, 0);
	if (!ca) {
		if (add_ext(x, &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
		    add_ext(x, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign") ||
		    add_ext(x, &ctx, NID_subject_key_identifier, "hash") ||
		    add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always"))
			goto err;
	} else {
		/* <cn> passed em_pki_node_name_check(): no ',' or ':' to escape. */
		snprintf(san, sizeof(san), "DNS:%s", cn);
		if (add_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE") ||
		    add_ext(x, &ctx, NID_key_usage, "critical,digitalSignature") ||
		    add_ext(x, &ctx, NID_ext_key_usage, "serverAuth,clientAuth") ||
		    add_ext(x, &ctx, NID_subject_alt_name, san) ||
		    add_ext(x, &ctx, NID_subject_key_identifier, "hash") ||
		    add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always"))
			goto err;
	}
	if (!X509_sign(x, ca ? ca_key : key, EVP_sha256()))
		goto err;
	X509_NAME_free(name);
	return x;
err:
	X509_NAME_free(name);
	X509_free(x);
	return NULL;
}

int em_pki_ca_init(const char *dir, unsigned days, char *err, size_t errlen)
{
	char key_path[PATH_MAX], crt_path[PATH_MAX], cn[32];
	unsigned char rnd[4];
	EVP_PKEY *key = NULL;
	X509 *crt = NULL;
	int rc;

	if (days < 1 || days > EM_PKI_MAX_DAYS)
		return fail(err, errlen, -EINVAL, "CA lifetime of %u days: expected 1..%d", days,
		            EM_PKI_MAX_DAYS);
	if ((rc = path_join(key_path, dir, "ca", ".key", err, errlen)) ||
	    (rc = path_join(crt_path, dir, "ca", ".crt", err, errlen)) ||
	    (rc = ensure_dir(dir, err, errlen)) || (rc = exists(key_path, err, errlen)) ||
	    (rc = exists(crt_path, err, errlen)))
		return rc;
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		return fail(err, errlen, -EIO, "no random bytes: %s", ssl_reason());
	snprintf(cn, sizeof(cn), "edgemesh CA %02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3]);
	key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (!key)
		return fail(err, errlen, -EIO, "cannot make a P-256 key: %s", ssl_reason());
	crt = make_cert(key, cn, NULL, NULL, time(NULL), days);
	if (!crt) {
		rc = fail(err, errlen, -EIO, "cannot make the CA certificate: %s", ssl_reason());
		goto out;
	}
	if ((rc = write_pem(dir, key_path, 0600, key, NULL, false, err, errlen)))
		goto out;
	if ((rc = write_pem(dir, crt_path, 0644, NULL, crt, false, err, errlen)))
		unlink(key_path); /* ours: made a moment ago, no certificate for it */
out:
	X509_free(crt);
	EVP_PKEY_free(key);
	return rc;
}

static int load_ca(const char *ca_dir, X509 **crt, EVP_PKEY **key, char *err, size_t errlen)
{
	char key_path[PATH_MAX], crt_path[PATH_MAX];
	FILE *f;
	int rc;

	if ((rc = path_join(key_path, ca_dir, "ca", ".key", err, errlen)) ||
	    (rc = path_join(crt_path, ca_dir, "ca", ".crt", err, errlen)))
		return rc;
	if (!(f = fopen(crt_path, "re")))
		return fail(err, errlen, -errno, "cannot read the CA certificate %s: %s", crt_path,
		            strerror(errno));
	*crt = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (!*crt)
		return fail(err, errlen, -EBADMSG, "%s holds no PEM certificate: %s", crt_path,
		            ssl_reason());
	if (X509_check_ca(*crt) == 0)
		return fail(err, errlen, -EKEYREJECTED, "%s is not a CA certificate", crt_path);
	if (!(f = fopen(key_path, "re")))
		return fail(err, errlen, -errno, "cannot read the CA key %s: %s", key_path,
		            strerror(errno));
	*key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (!*key)
		return fail(err, errlen, -EBADMSG, "%s holds no PEM private key: %s", key_path,
		            ssl_reason());
	if (X509_check_private_key(*crt, *key) != 1)
		return fail(err, errlen, -EKEYREJECTED, "%s is not the key of %s", key_path,
		            crt_path);
	return 0;
}

int em_pki_cert_issue(const struct em_pki_issue *req, char *err, size_t errlen)
{
	const char *out = req->out_dir ? req->out_dir : ".";
	unsigned days = req->days ? req->days : EM_PKI_NODE_DAYS;
	char key_path[PATH_MAX], crt_path[PATH_MAX];
	EVP_PKEY *ca_key = NULL, *key = NULL;
	X509 *ca = NULL, *crt = NULL;
	int rc;

	if ((rc = em_pki_node_name_check(req->node, err, errlen)))
		return rc;
	if (days > EM_PKI_MAX_DAYS)
		return fail(err, errlen, -EINVAL, "certificate lifetime of %u days: expected 1..%d",
		            days, EM_PKI_MAX_DAYS);
	if ((rc = path_join(key_path, out, req->node, ".key", err, errlen)) ||
	    (rc = path_join(crt_path, out, req->node, ".crt", err, errlen)))
		return rc;
	if ((rc = load_ca(req->ca_dir, &ca, &ca_key, err, errlen)))
		goto out;
	if ((rc = ensure_dir(out, err, errlen)))
		goto out;
	if (!req->force &&
	    ((rc = exists(key_path, err, errlen)) || (rc = exists(crt_path, err, errlen))))
		goto out;
	key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (!key) {
		rc = fail(err, errlen, -EIO, "cannot make a P-256 key: %s", ssl_reason());
		goto out;
	}
	crt = make_cert(key, req->node, ca, ca_key, req->now ? req->now : time(NULL), days);
	if (!crt) {
		rc = fail(err, errlen, -EIO, "cannot make the certificate of %s: %s", req->node,
		          ssl_reason());
		goto out;
	}
	if ((rc = write_pem(out, key_path, 0600, key, NULL, req->force, err, errlen)))
		goto out;
	if ((rc = write_pem(out, crt_path, 0644, NULL, crt, req->force, err, errlen)) &&
	    !req->force)
		unlink(key_path); /* ours: made a moment ago, no certificate for it */
out:
	X509_free(crt);
	EVP_PKEY_free(key);
	X509_free(ca);
	EVP_PKEY_free(ca_key);
	return rc;
}

/* ---- enrollment ---- */

struct em_pki_ca {
	X509 *crt;
	EVP_PKEY *key;
	char *pem;
};

/* PEM of <key> (private) or <crt> into a malloc'd string. */
static char *to_pem(EVP_PKEY *key, X509 *crt, X509_REQ *req)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *out = NULL;
	long n;
	if (!b)
		return NULL;
	if ((key ? PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL)
	         : crt ? PEM_write_bio_X509(b, crt) : PEM_write_bio_X509_REQ(b, req)) &&
	    (n = BIO_get_mem_data(b, &data)) > 0 && (out = malloc((size_t)n + 1))) {
		memcpy(out, data, (size_t)n);
		out[n] = 0;
	}
	BIO_free(b);
	return out;
}

int em_pki_csr_new(const char *node, char **key_pem, char **csr_pem, char *err, size_t errlen)
{
	EVP_PKEY *key = NULL;
	X509_REQ *req = NULL;
	X509_NAME *name = NULL;
	int rc;

	*key_pem = *csr_pem = NULL;
	if ((rc = em_pki_node_name_check(node, err, errlen)))
		return rc;
	if (!(key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256")))
		return fail(err, errlen, -EIO, "cannot make a P-256 key: %s", ssl_reason());
	if (!(req = X509_REQ_new()) || !(name = X509_NAME_new()) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)node,
	                                -1, -1, 0) ||
	    !X509_REQ_set_subject_name(req, name) || !X509_REQ_set_pubkey(req, key) ||
	    !X509_REQ_sign(req, key, EVP_sha256())) {
		rc = fail(err, errlen, -EIO, "cannot make a request for %s: %s", node, ssl_reason());
		goto out;
	}
	if (!(*key_pem = to_pem(key, NULL, NULL)) || !(*csr_pem = to_pem(NULL, NULL, req))) {
		free(*key_pem);
		*key_pem = NULL;
		rc = fail(err, errlen, -ENOMEM, "out of memory");
	}
out:
	X509_NAME_free(name);
	X509_REQ_free(req);
	EVP_PKEY_free(key);
	return rc;
}

struct em_pki_ca *em_pki_ca_load(const char *ca_dir, char *err, size_t errlen)
{
	struct em_pki_ca *ca = calloc(1, sizeof(*ca));
	if (!ca) {
		fail(err, errlen, -ENOMEM, "out of memory");
		return NULL;
	}
	if (load_ca(ca_dir, &ca->crt, &ca->key, err, errlen)) {
		em_pki_ca_free(ca);
		return NULL;
	}
	if (!(ca->pem = to_pem(NULL, ca->crt, NULL))) {
		fail(err, errlen, -ENOMEM, "out of memory");
		em_pki_ca_free(ca);
		return NULL;
	}
	return ca;
}

void em_pki_ca_free(struct em_pki_ca *ca)
{
	if (!ca)
		return;
	X509_free(ca->crt);
	EVP_PKEY_free(ca->key);
	free(ca->pem);
	free(ca);
}

const char *em_pki_ca_pem(const struct em_pki_ca *ca)
{
	return ca->pem;
}

static time_t asn1_time(const ASN1_TIME *t)
{
	struct tm tm;
	if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
		return 0;
	return timegm(&tm);
}

static void cert_info(X509 *x, struct em_pki_cert_info *info)
{
	memset(info, 0, sizeof(*info));
	info->not_before = asn1_time(X509_get0_notBefore(x));
	info->not_after = asn1_time(X509_get0_notAfter(x));
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	char *hex = bn ? BN_bn2hex(bn) : NULL;
	if (hex) {
		snprintf(info->serial, sizeof(info->serial), "%s", hex);
		for (char *c = info->serial; *c; c++)
			if (*c >= 'A' && *c <= 'F')
				*c = (char)(*c - 'A' + 'a');
	}
	OPENSSL_free(hex);
	BN_free(bn);
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
		GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		if (g->type != GEN_DNS)
			continue;
		const unsigned char *d = ASN1_STRING_get0_data(g->d.dNSName);
		int n = ASN1_STRING_length(g->d.dNSName);
		if (n > 0 && n <= EM_PKI_NODE_NAME_MAX && !memchr(d, 0, (size_t)n)) {
			memcpy(info->node, d, (size_t)n);
			info->node[n] = 0;
		}
		break;
	}
	GENERAL_NAMES_free(gens);
}

/* The CN of <name>, or -1. */
static int subject_cn(X509_NAME *name, char *out, size_t cap)
{
	int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
	if (i < 0 || X509_NAME_get_index_by_NID(name, NID_commonName, i) >= 0)
		return -1;
	ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
	int n = ASN1_STRING_length(s);
	const unsigned char *d = ASN1_STRING_get0_data(s);
	if (n <= 0 || (size_t)n >= cap || memchr(d, 0, (size_t)n))
		return -1;
	memcpy(out, d, (size_t)n);
	out[n] = 0;
	return 0;
}

static int sign_key(const struct em_pki_ca *ca, EVP_PKEY *key, const char *node, unsigned days,
                    time_t now, char **cert_pem, EVP_PKEY *with_key, struct em_pki_cert_info *info,
                    char *err, size_t errlen)
{
	if (days < 1 || days > EM_PKI_MAX_DAYS)
		return fail(err, errlen, -EINVAL, "certificate lifetime of %u days: expected 1..%d",
		            days, EM_PKI_MAX_DAYS);
	X509 *crt = make_cert(key, node, ca->crt, ca->key, now ? now : time(NULL), days);
	if (!crt)
		return fail(err, errlen, -EIO, "cannot make the certificate of %s: %s", node,
		            ssl_reason());
	char *c = to_pem(NULL, crt, NULL), *k = with_key ? to_pem(with_key, NULL, NULL) : NULL;
	if (!c || (with_key && !k)) {
		free(c);
		free(k);
		X509_free(crt);
		return fail(err, errlen, -ENOMEM, "out of memory");
	}
	if (k) {
		size_t a = strlen(c), b = strlen(k);
		char *both = realloc(c, a + b + 1);
		if (!both) {
			free(c);
			free(k);
			X509_free(crt);
			return fail(err, errlen, -ENOMEM, "out of memory");
		}
		memcpy(both + a, k, b + 1);
		OPENSSL_cleanse(k, b);
		free(k);
		c = both;
	}
	if (info)
		cert_info(crt, info);
	X509_free(crt);
	*cert_pem = c;
	return 0;
}

int em_pki_ca_sign(const struct em_pki_ca *ca, const char *csr_pem, size_t len, const char *node,
                   unsigned days, time_t now, char **cert_pem, struct em_pki_cert_info *info,
                   char *err, size_t errlen)
{
	char cn[EM_PKI_NODE_NAME_MAX + 1];
	X509_REQ *req = NULL;
	EVP_PKEY *key;
	BIO *b;
	int rc;

	*cert_pem = NULL;
	if ((rc = em_pki_node_name_check(node, err, errlen)))
		return rc;
	if (len > EM_PKI_CSR_MAX)
		return fail(err, errlen, -EINVAL, "request of %zu bytes: at most %d expected", len,
		            EM_PKI_CSR_MAX);
	if (!(b = BIO_new_mem_buf(csr_pem, (int)len)))
		return fail(err, errlen, -ENOMEM, "out of memory");
	req = PEM_read_bio_X509_REQ(b, NULL, NULL, NULL);
	BIO_free(b);
	if (!req)
		return fail(err, errlen, -EINVAL, "not a PEM certificate request");
	key = X509_REQ_get0_pubkey(req);
	char group[32] = "";
	size_t glen = 0;
	if (!key || !EVP_PKEY_is_a(key, "EC") ||
	    !EVP_PKEY_get_utf8_string_param(key, "group", group, sizeof(group), &glen) ||
	    strcmp(group, "prime256v1") != 0) {
		rc = fail(err, errlen, -EINVAL, "the request's key is not an EC P-256 key");
		goto out;
	}
	if (X509_REQ_verify(req, key) != 1) {
		rc = fail(err, errlen, -EINVAL, "the request's signature does not verify");
		goto out;
	}
	if (subject_cn(X509_REQ_get_subject_name(req), cn, sizeof(cn)) || strcmp(cn, node) != 0) {
		rc = fail(err, errlen, -EINVAL, "the request is not for node %s (subject CN)", node);
		goto out;
	}
	rc = sign_key(ca, key, node, days, now, cert_pem, NULL, info, err, errlen);
out:
	X509_REQ_free(req);
	return rc;
}

int em_pki_ca_issue_pem(const struct em_pki_ca *ca, const char *node, unsigned days, time_t now,
                        char **pem, struct em_pki_cert_info *info, char *err, size_t errlen)
{
	int rc;
	*pem = NULL;
	if ((rc = em_pki_node_name_check(node, err, errlen)))
		return rc;
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (!key)
		return fail(err, errlen, -EIO, "cannot make a P-256 key: %s", ssl_reason());
	rc = sign_key(ca, key, node, days, now, pem, key, info, err, errlen);
	EVP_PKEY_free(key);
	return rc;
}

int em_pki_cert_info_pem(const char *pem, size_t len, struct em_pki_cert_info *info, char *err,
                         size_t errlen)
{
	BIO *b = BIO_new_mem_buf(pem, (int)len);
	if (!b)
		return fail(err, errlen, -ENOMEM, "out of memory");
	X509 *x = len <= INT_MAX ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	if (!x)
		return fail(err, errlen, -EBADMSG, "no PEM certificate");
	cert_info(x, info);
	X509_free(x);
	return 0;
}

int em_pki_cert_info_file(const char *path, struct em_pki_cert_info *info, char *err,
                          size_t errlen)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return fail(err, errlen, -errno, "cannot read %s: %s", path, strerror(errno));
	X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (!x)
		return fail(err, errlen, -EBADMSG, "%s holds no PEM certificate", path);
	cert_info(x, info);
	X509_free(x);
	return 0;
}

bool em_pki_renew_due(const struct em_pki_cert_info *info, time_t now)
{
	if (info->not_after <= info->not_before || now < info->not_before ||
	    now >= info->not_after)
		return true;
	return now - info->not_before >= (info->not_after - info->not_before) / 3 * 2;
}

int em_pki_write_file(const char *path, const void *data, size_t len, mode_t mode, char *err,
                      size_t errlen)
{
	char dir[PATH_MAX], tmp[PATH_MAX];
	int fd, rc = 0;

	if (snprintf(dir, sizeof(dir), "%s", path) >= (int)sizeof(dir) ||
	    snprintf(tmp, sizeof(tmp), "%s.tmp-XXXXXX", path) >= (int)sizeof(tmp))
		return fail(err, errlen, -ENAMETOOLONG, "path too long: %s", path);
	char *slash = strrchr(dir, '/');
	if (slash == dir)
		dir[1] = 0;
	else if (slash)
		*slash = 0;
	else
		strcpy(dir, ".");
	if ((rc = ensure_dir(dir, err, errlen)))
		return rc;
	if ((fd = mkstemp(tmp)) == -1)
		return fail(err, errlen, -errno, "cannot create a file in %s: %s", dir,
		            strerror(errno));
	const char *p = data;
	size_t left = len;
	while (left) {
		ssize_t n = write(fd, p, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = fail(err, errlen, n < 0 ? -errno : -EIO, "cannot write %s: %s", tmp,
			          n < 0 ? strerror(errno) : "short write");
			goto out;
		}
		p += n;
		left -= (size_t)n;
	}
	if (fchmod(fd, mode) == -1 || fsync(fd) == -1 || rename(tmp, path) == -1) {
		rc = fail(err, errlen, -errno, "cannot write %s: %s", path, strerror(errno));
		goto out;
	}
	sync_dir(dir);
out:
	close(fd);
	if (rc)
		unlink(tmp);
	return rc;
}

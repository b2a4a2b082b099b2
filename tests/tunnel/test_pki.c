/* Cluster CA and node certificates: files, modes, what a certificate says,
 * and what is refused. The issued certificates are checked with OpenSSL's
 * own verifier, as a peer's TLS stack would check them. */
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "tunnel/pki.h"

static char dir[PATH_MAX];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/em-pki-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(pki, .init = setup, .fini = teardown);

static const char *at(const char *rel)
{
	static char paths[4][PATH_MAX + 64];
	static int next;
	char *p = paths[next++ % 4];
	snprintf(p, PATH_MAX + 64, "%s/%s", dir, rel);
	return p;
}

static X509 *read_cert(const char *path)
{
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	cr_assert_not_null(x, "%s is no PEM certificate", path);
	return x;
}

static EVP_PKEY *read_key(const char *path)
{
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	cr_assert_not_null(k, "%s is no PEM key", path);
	return k;
}

static mode_t mode_of(const char *path)
{
	struct stat st;
	cr_assert_eq(stat(path, &st), 0, "%s: %s", path, strerror(errno));
	return st.st_mode & 07777;
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f);
	static char buf[2][8192];
	static int next;
	char *b = buf[next++ % 2];
	size_t n = fread(b, 1, sizeof(buf[0]) - 1, f);
	b[n] = 0;
	fclose(f);
	return b;
}

/* Days from now to <t>, rounded down. */
static int days_until(const ASN1_TIME *t)
{
	int days, secs;
	cr_assert(ASN1_TIME_diff(&days, &secs, NULL, t));
	return days;
}

/* Verifies <crt> against the CA certificate <ca> for <purpose>. */
static int verify(X509 *ca, X509 *crt, int purpose)
{
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	X509_STORE_add_cert(store, ca);
	X509_STORE_CTX_init(ctx, store, crt, NULL);
	X509_STORE_CTX_set_purpose(ctx, purpose);
	int ok = X509_verify_cert(ctx);
	int e = X509_STORE_CTX_get_error(ctx);
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	return ok == 1 ? 0 : e;
}

static void make_ca(const char *sub)
{
	char err[512];
	int rc = em_pki_ca_init(at(sub), EM_PKI_CA_DAYS, err, sizeof(err));
	cr_assert_eq(rc, 0, "ca init: %s", err);
}

static int issue(const char *ca, const char *node, const char *out, unsigned days, bool force,
                 char *err, size_t errlen)
{
	struct em_pki_issue req = {
	        .ca_dir = at(ca), .node = node, .out_dir = at(out), .days = days, .force = force};
	return em_pki_cert_issue(&req, err, errlen);
}

Test(pki, ca_init_and_issue_round_trip)
{
	char err[512];
	make_ca("ca");
	cr_assert_eq(mode_of(at("ca")), 0700);
	cr_assert_eq(mode_of(at("ca/ca.key")), 0600);
	cr_assert_eq(mode_of(at("ca/ca.crt")), 0644);

	X509 *ca = read_cert(at("ca/ca.crt"));
	EVP_PKEY *ca_key = read_key(at("ca/ca.key"));
	cr_assert_eq(X509_check_private_key(ca, ca_key), 1);
	cr_assert_eq(X509_check_ca(ca), 1);
	cr_assert(X509_get_extension_flags(ca) & EXFLAG_CA);
	cr_assert(X509_get_key_usage(ca) & KU_KEY_CERT_SIGN);
	cr_assert(EVP_PKEY_is_a(ca_key, "EC"));
	char group[32];
	cr_assert(EVP_PKEY_get_group_name(ca_key, group, sizeof(group), NULL));
	cr_assert_str_eq(group, "prime256v1");
	int d = days_until(X509_get0_notAfter(ca));
	cr_assert(d >= EM_PKI_CA_DAYS - 1 && d <= EM_PKI_CA_DAYS, "CA good for %d days", d);
	cr_assert_eq(X509_cmp_current_time(X509_get0_notBefore(ca)), -1);

	int rc = issue("ca", "edge-1.shop-7", "out", 0, false, err, sizeof(err));
	cr_assert_eq(rc, 0, "issue: %s", err);
	cr_assert_eq(mode_of(at("out")), 0700);
	cr_assert_eq(mode_of(at("out/edge-1.shop-7.key")), 0600);
	cr_assert_eq(mode_of(at("out/edge-1.shop-7.crt")), 0644);
	X509 *crt = read_cert(at("out/edge-1.shop-7.crt"));
	EVP_PKEY *key = read_key(at("out/edge-1.shop-7.key"));
	cr_assert_eq(X509_check_private_key(crt, key), 1);
	cr_assert(EVP_PKEY_get_group_name(key, group, sizeof(group), NULL));
	cr_assert_str_eq(group, "prime256v1");

	/* Signed by the CA, for both ends of a TLS connection. */
	cr_assert_eq(verify(ca, crt, X509_PURPOSE_SSL_CLIENT), 0);
	cr_assert_eq(verify(ca, crt, X509_PURPOSE_SSL_SERVER), 0);
	cr_assert_eq(X509_check_ca(crt), 0);
	uint32_t xku = X509_get_extended_key_usage(crt);
	cr_assert((xku & XKU_SSL_SERVER) && (xku & XKU_SSL_CLIENT));

	/* Named as the node: the one SAN and the CN; no other name matches. */
	GENERAL_NAMES *names = X509_get_ext_d2i(crt, NID_subject_alt_name, NULL, NULL);
	cr_assert_not_null(names);
	cr_assert_eq(sk_GENERAL_NAME_num(names), 1);
	const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, 0);
	cr_assert_eq(g->type, GEN_DNS);
	cr_assert_eq(g->d.dNSName->length, (int)strlen("edge-1.shop-7"));
	cr_assert_eq(memcmp(g->d.dNSName->data, "edge-1.shop-7", 13), 0);
	GENERAL_NAMES_free(names);
	char cn[64];
	X509_NAME_get_text_by_NID(X509_get_subject_name(crt), NID_commonName, cn, sizeof(cn));
	cr_assert_str_eq(cn, "edge-1.shop-7");
	cr_assert_eq(X509_check_host(crt, "edge-1.shop-7", 0, 0, NULL), 1);
	cr_assert_eq(X509_check_host(crt, "edge-2.shop-7", 0, 0, NULL), 0);
	d = days_until(X509_get0_notAfter(crt));
	cr_assert(d >= EM_PKI_NODE_DAYS - 1 && d <= EM_PKI_NODE_DAYS, "cert good for %d days", d);

	/* Another CA's node certificate does not verify against this CA. */
	make_ca("other");
	rc = issue("other", "edge-1.shop-7", "out2", 30, false, err, sizeof(err));
	cr_assert_eq(rc, 0, "%s", err);
	X509 *foreign = read_cert(at("out2/edge-1.shop-7.crt"));
	cr_assert_neq(verify(ca, foreign, X509_PURPOSE_SSL_CLIENT), 0);
	d = days_until(X509_get0_notAfter(foreign));
	cr_assert(d >= 29 && d <= 30);
	X509 *other_ca = read_cert(at("other/ca.crt"));
	char cn1[64], cn2[64];
	X509_NAME_get_text_by_NID(X509_get_subject_name(ca), NID_commonName, cn1, sizeof(cn1));
	X509_NAME_get_text_by_NID(X509_get_subject_name(other_ca), NID_commonName, cn2,
	                          sizeof(cn2));
	cr_assert_str_neq(cn1, cn2, "two CAs share the name %s", cn1);

	X509_free(other_ca);
	X509_free(foreign);
	X509_free(crt);
	EVP_PKEY_free(key);
	X509_free(ca);
	EVP_PKEY_free(ca_key);
}

Test(pki, backdated_certificate_has_expired)
{
	char err[512];
	make_ca("ca");
	struct em_pki_issue req = {.ca_dir = at("ca"),
	                           .node = "old",
	                           .out_dir = at("out"),
	                           .days = 1,
	                           .now = time(NULL) - 3 * 86400};
	cr_assert_eq(em_pki_cert_issue(&req, err, sizeof(err)), 0, "%s", err);
	X509 *ca = read_cert(at("ca/ca.crt")), *crt = read_cert(at("out/old.crt"));
	cr_assert_eq(verify(ca, crt, X509_PURPOSE_SSL_CLIENT), X509_V_ERR_CERT_HAS_EXPIRED);
	X509_free(crt);
	X509_free(ca);
}

Test(pki, node_names)
{
	static const char *const good[] = {"a", "0", "edge-1", "a.b.c", "x--y", "1.2.3.4"};
	static const char *const bad[] = {
	        "",  "Edge", "-a",  "a-",  "a..b", ".a",   "a.",   "a_b", "a b",
	        "é", "a/b",  "a,b", "a:b", "a.-b", "a-.b", "a\tb", "*",   "*.a",
	};
	char err[512];
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		cr_assert_eq(em_pki_node_name_check(good[i], err, sizeof(err)), 0, "%s: %s",
		             good[i], err);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		cr_assert_eq(em_pki_node_name_check(bad[i], err, sizeof(err)), -EINVAL,
		             "\"%s\" accepted", bad[i]);
		cr_assert(strstr(err, "expected"), "\"%s\": %s", bad[i], err);
	}
	cr_assert_eq(em_pki_node_name_check(NULL, NULL, 0), -EINVAL);

	char name[300];
	memset(name, 'a', sizeof(name));
	for (int i = 50; i < 300; i += 51)
		name[i] = '.';
	name[253] = 0;
	cr_assert_eq(em_pki_node_name_check(name, err, sizeof(err)), 0, "%s", err);
	name[253] = 'a';
	name[254] = 0;
	cr_assert_eq(em_pki_node_name_check(name, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "at most 253"), "%s", err);

	/* Refused before anything is read or written. */
	make_ca("ca");
	cr_assert_eq(issue("ca", "Bad_Name", "out", 0, false, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "Bad_Name") && strstr(err, "expected"), "%s", err);
	cr_assert_eq(access(at("out"), F_OK), -1);
	cr_assert_eq(issue("ca", "../x", "out", 0, false, err, sizeof(err)), -EINVAL);
	cr_assert_eq(issue("ca", "ok", "out", EM_PKI_MAX_DAYS + 1, false, err, sizeof(err)),
	             -EINVAL);
	cr_assert_eq(em_pki_ca_init(at("ca2"), 0, err, sizeof(err)), -EINVAL);
}

Test(pki, refuses_to_overwrite)
{
	char err[512];
	make_ca("ca");
	char *key = strdup(slurp(at("ca/ca.key"))), *crt = strdup(slurp(at("ca/ca.crt")));

	cr_assert_eq(em_pki_ca_init(at("ca"), 10, err, sizeof(err)), -EEXIST);
	cr_assert(strstr(err, at("ca/ca.key")), "%s", err);
	cr_assert_str_eq(slurp(at("ca/ca.key")), key);
	cr_assert_str_eq(slurp(at("ca/ca.crt")), crt);

	/* Either file alone is enough to refuse, and it is the one named. */
	cr_assert_eq(unlink(at("ca/ca.key")), 0);
	cr_assert_eq(em_pki_ca_init(at("ca"), 10, err, sizeof(err)), -EEXIST);
	cr_assert(strstr(err, at("ca/ca.crt")), "%s", err);
	cr_assert_eq(access(at("ca/ca.key"), F_OK), -1, "a key was left without certificate");
	free(key);
	free(crt);

	/* A node's files: refused unless forced, then replaced by new ones. */
	make_ca("ca3");
	cr_assert_eq(issue("ca3", "n1", "out", 0, false, err, sizeof(err)), 0, "%s", err);
	key = strdup(slurp(at("out/n1.key")));
	cr_assert_eq(issue("ca3", "n1", "out", 0, false, err, sizeof(err)), -EEXIST);
	cr_assert(strstr(err, at("out/n1.key")), "%s", err);
	cr_assert_str_eq(slurp(at("out/n1.key")), key);
	cr_assert_eq(issue("ca3", "n1", "out", 0, true, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_neq(slurp(at("out/n1.key")), key);
	cr_assert_eq(mode_of(at("out/n1.key")), 0600);
	free(key);

	/* No temporary file is left behind. */
	char cmd[2 * PATH_MAX + 64];
	snprintf(cmd, sizeof(cmd), "ls -A '%s/out' '%s/ca3' | grep -q '[.]tmp-'", dir, dir);
	cr_assert_neq(system(cmd), 0);
}

Test(pki, bad_ca)
{
	char err[512];
	cr_assert_eq(issue("none", "n1", "out", 0, false, err, sizeof(err)), -ENOENT);
	cr_assert(strstr(err, at("none/ca.crt")), "%s", err);

	/* A CA directory whose key belongs to another CA. */
	make_ca("a");
	make_ca("b");
	cr_assert_eq(rename(at("b/ca.key"), at("a/ca.key")), 0);
	cr_assert_eq(issue("a", "n1", "out", 0, false, err, sizeof(err)), -EKEYREJECTED);
	cr_assert(strstr(err, at("a/ca.key")) && strstr(err, "not the key"), "%s", err);

	/* A node certificate in the CA's place. */
	make_ca("c");
	cr_assert_eq(issue("c", "n1", "d", 0, false, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(rename(at("d/n1.crt"), at("d/ca.crt")), 0);
	cr_assert_eq(rename(at("d/n1.key"), at("d/ca.key")), 0);
	cr_assert_eq(issue("d", "n2", "out", 0, false, err, sizeof(err)), -EKEYREJECTED);
	cr_assert(strstr(err, "not a CA"), "%s", err);

	/* Garbage. */
	cr_assert_eq(mkdir(at("g"), 0700), 0);
	FILE *f = fopen(at("g/ca.crt"), "w");
	fputs("not a certificate\n", f);
	fclose(f);
	cr_assert_eq(issue("g", "n1", "out", 0, false, err, sizeof(err)), -EBADMSG);
	cr_assert(strstr(err, at("g/ca.crt")), "%s", err);
}

/* The command line, as an operator runs it. */
static int run(const char *args, char *out, size_t outlen)
{
	char cmd[3 * PATH_MAX];
	snprintf(cmd, sizeof(cmd), "cd '%s' && '%s/meshctl' %s 2>&1", dir, EM_BINARY_DIR, args);
	FILE *p = popen(cmd, "r");
	cr_assert_not_null(p);
	size_t n = fread(out, 1, outlen - 1, p);
	out[n] = 0;
	int st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(pki, meshctl_commands)
{
	char out[4096];
	char bin[PATH_MAX];
	snprintf(bin, sizeof(bin), "%s/meshctl", EM_BINARY_DIR);
	if (access(bin, X_OK) != 0)
		cr_skip_test("no meshctl in %s", EM_BINARY_DIR);

	cr_assert_eq(run("ca init cadir", out, sizeof(out)), 0, "%s", out);
	cr_assert(strstr(out, "cadir/ca.crt"), "%s", out);
	cr_assert_eq(mode_of(at("cadir/ca.key")), 0600);
	cr_assert_eq(run("ca init cadir", out, sizeof(out)), 1, "%s", out);
	cr_assert(strstr(out, "cadir/ca.key already exists"), "%s", out);

	cr_assert_eq(run("cert issue node-1 --ca cadir --days 30", out, sizeof(out)), 0, "%s", out);
	cr_assert_eq(mode_of(at("node-1.key")), 0600);
	X509 *crt = read_cert(at("node-1.crt"));
	int d = days_until(X509_get0_notAfter(crt));
	cr_assert(d >= 29 && d <= 30, "%d", d);
	X509_free(crt);
	cr_assert_eq(run("cert issue node-2 --ca cadir --out certs", out, sizeof(out)), 0, "%s",
	             out);
	cr_assert_eq(access(at("certs/node-2.crt"), F_OK), 0);

	cr_assert_eq(run("cert issue Node_3 --ca cadir", out, sizeof(out)), 1, "%s", out);
	cr_assert(strstr(out, "expected a lowercase DNS-1123 subdomain"), "%s", out);
	cr_assert_eq(run("cert issue node-3 --ca cadir --days 0", out, sizeof(out)), 2, "%s", out);
	cr_assert(strstr(out, "expected a number of days"), "%s", out);
	cr_assert_eq(run("cert issue node-3", out, sizeof(out)), 2, "%s", out);
	cr_assert(strstr(out, "--ca DIR"), "%s", out);
}

/* Enrollment: a request made here is signed by the CA for its node only;
 * a forged or foreign request is refused with what was wrong. */
Test(pki, request_signed_for_its_node_only)
{
	char err[512], *key = NULL, *csr = NULL, *cert = NULL;
	make_ca("ca");
	struct em_pki_ca *ca = em_pki_ca_load(at("ca"), err, sizeof(err));
	cr_assert_not_null(ca, "%s", err);
	cr_assert_eq(em_pki_csr_new("edge-a", &key, &csr, err, sizeof(err)), 0, "%s", err);
	cr_expect(strstr(key, "PRIVATE KEY") && strstr(csr, "CERTIFICATE REQUEST"));

	struct em_pki_cert_info info;
	cr_assert_eq(em_pki_ca_sign(ca, csr, strlen(csr), "edge-a", 30, 0, &cert, &info, err,
	                            sizeof(err)),
	             0, "%s", err);
	cr_expect_str_eq(info.node, "edge-a");
	cr_expect(info.serial[0]);
	cr_expect_eq(info.not_after - info.not_before, 30 * 86400 + EM_PKI_SKEW_S);
	cr_expect(!em_pki_renew_due(&info, time(NULL)));
	cr_expect(em_pki_renew_due(&info, info.not_before + 21 * 86400));
	cr_expect(em_pki_renew_due(&info, info.not_after + 1));
	/* The certificate verifies against the CA and carries the request's key. */
	BIO *b = BIO_new_mem_buf(cert, -1);
	X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	b = BIO_new_mem_buf(key, -1);
	EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
	BIO_free(b);
	X509 *cax = read_cert(at("ca/ca.crt"));
	cr_assert(x && k);
	cr_expect_eq(verify(cax, x, X509_PURPOSE_SSL_CLIENT), 0);
	cr_expect_eq(X509_check_private_key(x, k), 1);
	X509_free(x);
	X509_free(cax);
	EVP_PKEY_free(k);
	free(cert);

	/* Another node's request, a broken signature, not PEM, too long. */
	cert = NULL;
	cr_expect_eq(em_pki_ca_sign(ca, csr, strlen(csr), "edge-b", 30, 0, &cert, NULL, err,
	                            sizeof(err)),
	             -EINVAL);
	cr_expect(strstr(err, "not for node edge-b"), "%s", err);
	char *bad = strdup(csr);
	char *mid = bad + strlen(bad) / 2;
	*mid = *mid == 'A' ? 'B' : 'A';
	int rc = em_pki_ca_sign(ca, bad, strlen(bad), "edge-a", 30, 0, &cert, NULL, err, sizeof(err));
	cr_expect_eq(rc, -EINVAL, "a damaged request: %d %s", rc, err);
	free(bad);
	cr_expect_eq(em_pki_ca_sign(ca, "hello", 5, "edge-a", 30, 0, &cert, NULL, err, sizeof(err)),
	             -EINVAL);
	cr_expect_eq(em_pki_ca_sign(ca, csr, EM_PKI_CSR_MAX + 1, "edge-a", 30, 0, &cert, NULL, err,
	                            sizeof(err)),
	             -EINVAL);
	cr_expect_null(cert);
	free(key);
	free(csr);

	/* The CA's own issue: certificate then key in one PEM, usable as both. */
	char *pem = NULL;
	cr_assert_eq(em_pki_ca_issue_pem(ca, "cloud", 10, 0, &pem, &info, err, sizeof(err)), 0, "%s",
	             err);
	cr_expect(strstr(pem, "CERTIFICATE") < strstr(pem, "PRIVATE KEY"));
	cr_assert_eq(em_pki_write_file(at("out/node.pem"), pem, strlen(pem), 0600, err, sizeof(err)),
	             0, "%s", err);
	cr_expect_eq(mode_of(at("out/node.pem")), 0600);
	cr_expect_eq(mode_of(at("out")), 0700);
	struct em_pki_cert_info f;
	cr_assert_eq(em_pki_cert_info_file(at("out/node.pem"), &f, err, sizeof(err)), 0);
	cr_expect_str_eq(f.node, "cloud");
	cr_expect_str_eq(f.serial, info.serial);
	free(pem);
	em_pki_ca_free(ca);
}

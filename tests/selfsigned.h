/* Tests: a self-signed certificate (CN "router", one hour, EC P-256)
 * written to <crt> and its key to <key>, for the tests that need any
 * working certificate (the Router's TLS front, the config's file checks). */
#ifndef EM_TESTS_SELFSIGNED_H
#define EM_TESTS_SELFSIGNED_H

#include <criterion/criterion.h>
#include <stdio.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

static inline void em_test_self_signed(const char *crt, const char *key)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	FILE *f;
	cr_assert(k && x);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, k);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
	                           (const unsigned char *)"router", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	cr_assert(X509_sign(x, k, EVP_sha256()) > 0);
	cr_assert_not_null(f = fopen(crt, "w"));
	PEM_write_X509(f, x);
	fclose(f);
	cr_assert_not_null(f = fopen(key, "w"));
	PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	X509_free(x);
	EVP_PKEY_free(k);
}

#endif

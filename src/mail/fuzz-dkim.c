/*
 * libFuzzer target: the DKIM tag-list, DKIM-Signature and key-record
 * parsers, both canonicalizations (in chunks chosen by the input), and a
 * whole verification of the input as a message whose key lookups answer
 * with the input itself. Then a round trip: the input signed with a fixed
 * Ed25519 key must verify with our verifier.
 */
#include "mail/dkim.h"
#include "lib/xalloc.h"

#include <ctype.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct fuzz_ctx {
	const char *data;
	size_t size;
	const char *record; /* when set, answered instead of the input */
};

static int fuzz_txt(void *ctx, const char *name, struct dkim_txt *out)
{
	struct fuzz_ctx *f = ctx;
	if (f->record != NULL) {
		dkim_txt_add(out, f->record, strlen(f->record));
		return DKIM_DNS_OK;
	}
	if (f->size > 0 && f->data[0] == 'T')
		return DKIM_DNS_TEMPFAIL;
	dkim_txt_add(out, f->data, f->size);
	return DKIM_DNS_OK;
}

static void sink(void *ctx, const char *data, size_t len)
{
	size_t *n = ctx;
	*n += len;
}

static char *key_pem, *key_record;

static void init_key(void)
{
	unsigned char seed[32], pub[32];
	size_t pl = sizeof(pub);
	for (size_t i = 0; i < sizeof(seed); i++)
		seed[i] = (unsigned char)(i * 7 + 1);
	EVP_PKEY *pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, sizeof(seed));
	BIO *bio = BIO_new(BIO_s_mem());
	if (pk == NULL || bio == NULL ||
	    PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL) != 1 ||
	    EVP_PKEY_get_raw_public_key(pk, pub, &pl) != 1)
		abort();
	char *data;
	long dl = BIO_get_mem_data(bio, &data);
	key_pem = xstrndup(data, (size_t)dl);
	char b64[64];
	EVP_EncodeBlock((unsigned char *)b64, pub, sizeof(pub));
	key_record = xasprintf("v=DKIM1; k=ed25519; p=%s", b64);
	BIO_free(bio);
	EVP_PKEY_free(pk);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	const char *err;

	if (key_pem == NULL)
		init_key();
	struct dkim_taglist *tl = xmalloc(sizeof(*tl));
	dkim_taglist_parse(s, size, tl, &err);
	free(tl);
	struct dkim_signature sig;
	if (dkim_signature_parse(s, size, 1700000000, &sig, &err) == 0)
		dkim_signature_clear(&sig);
	struct dkim_key key;
	if (dkim_key_parse(s, size, &key, &err) == 0)
		dkim_key_clear(&key);

	size_t chunk = size > 0 ? (size_t)data[0] % 17 + 1 : 1;
	for (int c = 0; c < 2; c++) {
		struct dkim_body_canon bc;
		size_t n = 0;
		dkim_body_canon_init(&bc, c ? DKIM_CANON_RELAXED : DKIM_CANON_SIMPLE, sink, &n);
		for (size_t i = 0; i < size; i += chunk)
			dkim_body_canon_push(&bc, s + i, size - i < chunk ? size - i : chunk);
		dkim_body_canon_finish(&bc);
		char *out = NULL;
		size_t ol = 0, oc = 0;
		dkim_header_canon(c ? DKIM_CANON_RELAXED : DKIM_CANON_SIMPLE, s, size, true, &out,
		                  &ol, &oc);
		free(out);
	}

	struct fuzz_ctx fc = {.data = s, .size = size};
	struct dkim_key_resolver res = {.txt = fuzz_txt, .ctx = &fc};
	struct dkim_verifier *v = dkim_verifier_new(&res, 1700000000);
	for (size_t i = 0; i < size; i += chunk)
		dkim_verifier_push(v, s + i, size - i < chunk ? size - i : chunk);
	const struct dkim_sig_result *r;
	dkim_verifier_finish(v, &r);
	dkim_verifier_free(&v);

	/* round trip: what we sign, we verify (the input must start a header
	   field, or its first line would continue our signature field) */
	struct dkim_sign_params p = {
	    .domain = "example.org",
	    .selector = "fz",
	    .key_pem = key_pem,
	    .timestamp = 1700000000,
	};
	struct dkim_signer *sg = dkim_signer_new(&p, &err);
	if (sg == NULL)
		abort();
	dkim_signer_push(sg, s, size);
	char *h = dkim_signer_finish(sg, &err);
	dkim_signer_free(&sg);
	if (h != NULL && size > 0 && isalpha(data[0])) {
		fc.record = key_record;
		v = dkim_verifier_new(&res, 1700000000);
		dkim_verifier_push(v, h, strlen(h));
		dkim_verifier_push(v, s, size);
		size_t n = dkim_verifier_finish(v, &r);
		if (n == 0 || r[0].result != DKIM_PASS)
			abort();
		dkim_verifier_free(&v);
	}
	free(h);
	return 0;
}

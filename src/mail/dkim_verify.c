/*
 * DKIM verification (RFC 6376 6, RFC 8301, RFC 8463).
 *
 * Input: the message as received, pushed in chunks. The header section is
 * buffered (bounded); at the empty line every DKIM-Signature field is parsed
 * and gets its own body canonicalizer and hash, which then consume the body
 * as it arrives. At the end each signature is checked on its own: key
 * lookup through the blocking resolver, key checks, body hash, header hash.
 */
#include "mail/dkim.h"
#include "mail/dkim-private.h"
#include "lib/xalloc.h"

#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct vsig {
	struct dkim_signature sig;
	bool ok; /* parsed; false: result already decided */
	size_t field;
	struct dkim_body_canon bc;
	EVP_MD_CTX *bh_ctx;
	uint64_t body_len, hashed;
	struct dkim_sig_result *res;
};

struct dkim_verifier {
	const struct dkim_key_resolver *resolver;
	time_t now;
	unsigned min_rsa_bits;
	struct dkim_msg msg;
	bool headers_done, finished, too_big;
	struct vsig *sigs;
	struct dkim_sig_result *results;
	size_t nsigs;
};

static const char *alg_name(enum dkim_alg a)
{
	switch (a) {
	case DKIM_ALG_RSA_SHA1:
		return "rsa-sha1";
	case DKIM_ALG_RSA_SHA256:
		return "rsa-sha256";
	case DKIM_ALG_ED25519_SHA256:
		return "ed25519-sha256";
	}
	return NULL;
}

static const EVP_MD *alg_md(enum dkim_alg a)
{
	return a == DKIM_ALG_RSA_SHA1 ? EVP_sha1() : EVP_sha256();
}

static void body_emit(void *ctx, const char *data, size_t len)
{
	struct vsig *s = ctx;
	size_t take = len;
	s->body_len += len;
	if (s->sig.has_l) {
		uint64_t room = s->sig.l > s->hashed ? s->sig.l - s->hashed : 0;
		if (take > room)
			take = (size_t)room;
	}
	if (take > 0 && EVP_DigestUpdate(s->bh_ctx, data, take) != 1)
		fatal("EVP_DigestUpdate failed");
	s->hashed += take;
}

struct dkim_verifier *dkim_verifier_new(const struct dkim_key_resolver *resolver, time_t now)
{
	struct dkim_verifier *v = xcalloc(1, sizeof(*v));
	v->resolver = resolver;
	v->now = now;
	v->min_rsa_bits = DKIM_MIN_RSA_BITS;
	dkim_msg_init(&v->msg);
	return v;
}

void dkim_verifier_set_min_rsa_bits(struct dkim_verifier *v, unsigned bits)
{
	v->min_rsa_bits = bits;
}

/* The header section is complete: set up one body hash per signature. */
static void headers_done(struct dkim_verifier *v)
{
	struct dkim_msg *m = &v->msg;
	size_t n = 0;

	v->headers_done = true;
	if (m->overflow) {
		v->too_big = true;
		return;
	}
	for (size_t i = 0; i < m->nfields; i++)
		if (dkim_field_is(m, &m->fields[i], "DKIM-Signature") && n < DKIM_MAX_SIGNATURES)
			n++;
	v->sigs = xcalloc(n ? n : 1, sizeof(*v->sigs));
	v->results = xcalloc(n ? n : 1, sizeof(*v->results));
	for (size_t i = 0; i < m->nfields && v->nsigs < n; i++) {
		struct dkim_field *f = &m->fields[i];
		if (!dkim_field_is(m, f, "DKIM-Signature"))
			continue;
		struct vsig *s = &v->sigs[v->nsigs];
		struct dkim_sig_result *r = &v->results[v->nsigs];
		v->nsigs++;
		s->res = r;
		s->field = i;
		const char *fv = m->hdr + f->off + f->name_len;
		size_t fl = f->len - f->name_len;
		/* skip WSP before the colon and the colon itself */
		while (fl > 0 && *fv != ':') {
			fv++;
			fl--;
		}
		fv++;
		fl--;
		const char *err;
		if (dkim_signature_parse(fv, fl, v->now, &s->sig, &err) < 0) {
			r->result = DKIM_PERMERROR;
			r->reason = err;
			continue;
		}
		s->ok = true;
		r->domain = xstrdup(s->sig.domain);
		r->selector = xstrdup(s->sig.selector);
		r->identity = xstrdup(s->sig.identity);
		r->algorithm = alg_name(s->sig.alg);
		r->b_prefix = xstrndup(s->sig.b_text, strnlen(s->sig.b_text, 8));
		r->has_l = s->sig.has_l;
		s->bh_ctx = EVP_MD_CTX_new();
		if (s->bh_ctx == NULL ||
		    EVP_DigestInit_ex(s->bh_ctx, alg_md(s->sig.alg), NULL) != 1)
			fatal("EVP_DigestInit_ex failed");
		dkim_body_canon_init(&s->bc, s->sig.body_canon, body_emit, s);
	}
}

int dkim_verifier_push(struct dkim_verifier *v, const void *data, size_t len)
{
	const char *p = data;
	if (v->finished)
		return -1;
	if (!v->headers_done) {
		size_t used = dkim_msg_push(&v->msg, p, len);
		p += used;
		len -= used;
		if (!v->msg.in_body)
			return v->msg.overflow ? -1 : 0;
		headers_done(v);
	}
	if (v->too_big)
		return -1;
	for (size_t i = 0; i < v->nsigs; i++)
		if (v->sigs[i].ok)
			dkim_body_canon_push(&v->sigs[i].bc, p, len);
	return 0;
}

static bool g_match(const char *g, const char *local, size_t local_len)
{
	/* RFC 4871 3.6.1: one "*" matches any sequence; empty g= matches nothing */
	if (*g == '\0')
		return false;
	const char *star = strchr(g, '*');
	if (star == NULL)
		return strlen(g) == local_len && memcmp(g, local, local_len) == 0;
	size_t pre = (size_t)(star - g), post = strlen(star + 1);
	if (pre + post > local_len)
		return false;
	return memcmp(g, local, pre) == 0 && memcmp(star + 1, local + local_len - post, post) == 0;
}

static EVP_PKEY *load_key(const struct dkim_key *key)
{
	const unsigned char *pp = key->p;
	if (key->type == DKIM_KEY_ED25519) {
		if (key->p_len != 32)
			return NULL;
		return EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, key->p, key->p_len);
	}
	EVP_PKEY *pk = d2i_PUBKEY(NULL, &pp, (long)key->p_len);
	if (pk != NULL && (EVP_PKEY_get_base_id(pk) != EVP_PKEY_RSA || pp != key->p + key->p_len)) {
		EVP_PKEY_free(pk);
		return NULL;
	}
	if (pk == NULL) {
		/* a bare RSAPublicKey (PKCS#1), as some signers publish */
		pp = key->p;
		pk = d2i_PublicKey(EVP_PKEY_RSA, NULL, &pp, (long)key->p_len);
		if (pk != NULL && pp != key->p + key->p_len) {
			EVP_PKEY_free(pk);
			return NULL;
		}
	}
	return pk;
}

/* Hash the signed header fields (RFC 6376 5.4.2, bottom-up) and the
   signature field itself with an empty b= (3.7). */
static int header_hash(struct dkim_verifier *v, struct vsig *s, unsigned char *md, unsigned *md_len)
{
	struct dkim_msg *m = &v->msg;
	bool *used = xcalloc(m->nfields ? m->nfields : 1, sizeof(*used));
	char *buf = NULL;
	size_t blen = 0, bcap = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ret = -1;

	if (ctx == NULL || EVP_DigestInit_ex(ctx, alg_md(s->sig.alg), NULL) != 1)
		fatal("EVP_DigestInit_ex failed");
	for (size_t h = 0; h < s->sig.header_count; h++) {
		for (size_t k = m->nfields; k-- > 0;) {
			struct dkim_field *f = &m->fields[k];
			if (used[k] || !dkim_field_is(m, f, s->sig.headers[h]))
				continue;
			used[k] = true;
			blen = 0;
			dkim_header_canon(s->sig.header_canon, m->hdr + f->off, f->len, true, &buf,
			                  &blen, &bcap);
			EVP_DigestUpdate(ctx, buf, blen);
			break;
		}
	}
	/* the signature field with the b= value (and its surrounding FWS) removed */
	struct dkim_field *f = &m->fields[s->field];
	const char *ft = m->hdr + f->off;
	size_t colon = (size_t)((const char *)memchr(ft, ':', f->len) - ft);
	size_t cut = colon + 1 + s->sig.b_value_off, resume = colon + 1 + s->sig.b_value_end;
	char *tmp = xmalloc(f->len + 1);
	memcpy(tmp, ft, cut);
	memcpy(tmp + cut, ft + resume, f->len - resume);
	blen = 0;
	dkim_header_canon(s->sig.header_canon, tmp, cut + f->len - resume, false, &buf, &blen,
	                  &bcap);
	free(tmp);
	if (blen > 0)
		EVP_DigestUpdate(ctx, buf, blen);
	if (EVP_DigestFinal_ex(ctx, md, md_len) == 1)
		ret = 0;
	EVP_MD_CTX_free(ctx);
	free(buf);
	free(used);
	return ret;
}

static bool sig_verify(EVP_PKEY *pk, enum dkim_alg alg, const unsigned char *hash, size_t hlen,
                       const unsigned char *sig, size_t slen)
{
	bool ok = false;
	if (alg == DKIM_ALG_ED25519_SHA256) {
		/* RFC 8463 3: PureEdDSA over the SHA-256 hash of the headers */
		EVP_MD_CTX *mctx = EVP_MD_CTX_new();
		if (mctx != NULL && EVP_DigestVerifyInit(mctx, NULL, NULL, NULL, pk) == 1)
			ok = EVP_DigestVerify(mctx, sig, slen, hash, hlen) == 1;
		EVP_MD_CTX_free(mctx);
	} else {
		EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new(pk, NULL);
		if (pctx != NULL && EVP_PKEY_verify_init(pctx) == 1 &&
		    EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1 &&
		    EVP_PKEY_CTX_set_signature_md(pctx, alg_md(alg)) == 1)
			ok = EVP_PKEY_verify(pctx, sig, slen, hash, hlen) == 1;
		EVP_PKEY_CTX_free(pctx);
	}
	return ok;
}

static void check_one(struct dkim_verifier *v, struct vsig *s)
{
	struct dkim_sig_result *r = s->res;
	struct dkim_txt txt = {0};
	struct dkim_key key = {0};
	EVP_PKEY *pk = NULL;
	const char *err;
	unsigned char bh[EVP_MAX_MD_SIZE], hh[EVP_MAX_MD_SIZE];
	unsigned bh_len = 0, hh_len = 0;

#define RESULT(res_, why)                                                                          \
	do {                                                                                       \
		r->result = res_;                                                                  \
		r->reason = why;                                                                   \
		goto out;                                                                          \
	} while (0)
	dkim_body_canon_finish(&s->bc);
	r->body_length = s->body_len;
	r->body_unsigned = s->body_len - s->hashed;
	if (EVP_DigestFinal_ex(s->bh_ctx, bh, &bh_len) != 1)
		fatal("EVP_DigestFinal_ex failed");
	if (s->sig.has_l && s->sig.l > s->body_len)
		RESULT(DKIM_PERMERROR, "l= is larger than the body");

	char *name = xasprintf("%s._domainkey.%s", s->sig.selector, s->sig.domain);
	int rc =
	    strlen(name) > 253 ? DKIM_DNS_NXDOMAIN : v->resolver->txt(v->resolver->ctx, name, &txt);
	free(name);
	if (rc == DKIM_DNS_TEMPFAIL)
		RESULT(DKIM_TEMPERROR, "key lookup failed");
	if (rc != DKIM_DNS_OK || txt.count == 0)
		RESULT(DKIM_PERMERROR, "no key for signature");
	/* RFC 6376 3.6.2.2: with several records the first is used */
	if (dkim_key_parse(txt.records[0], txt.lens[0], &key, &err) < 0)
		RESULT(DKIM_PERMERROR, err);
	r->testing = key.testing;
	if (key.revoked)
		RESULT(DKIM_PERMERROR, "key revoked");
	if ((key.type == DKIM_KEY_ED25519) != (s->sig.alg == DKIM_ALG_ED25519_SHA256))
		RESULT(DKIM_PERMERROR, "key type does not match a=");
	if (s->sig.alg == DKIM_ALG_RSA_SHA1 ? !key.hash_sha1 : !key.hash_sha256)
		RESULT(DKIM_PERMERROR, "hash algorithm not allowed by key (h=)");
	const char *at = strrchr(s->sig.identity, '@');
	if (key.strict && strcasecmp(at + 1, s->sig.domain) != 0)
		RESULT(DKIM_PERMERROR, "key requires i= domain equal to d= (t=s)");
	if (key.has_g && !g_match(key.g, s->sig.identity, (size_t)(at - s->sig.identity)))
		RESULT(DKIM_PERMERROR, "i= local-part does not match key g=");
	pk = load_key(&key);
	if (pk == NULL)
		RESULT(DKIM_PERMERROR, "bad public key");
	r->key_bits = key.type == DKIM_KEY_ED25519 ? 256 : (unsigned)EVP_PKEY_get_bits(pk);
	if (key.type == DKIM_KEY_RSA && EVP_PKEY_get_bits(pk) < (int)v->min_rsa_bits)
		RESULT(DKIM_PERMERROR, "RSA key too short");
	if (key.type == DKIM_KEY_RSA && EVP_PKEY_get_bits(pk) > DKIM_MAX_RSA_BITS)
		RESULT(DKIM_PERMERROR, "RSA key too long");
	if (bh_len != s->sig.bh_len || memcmp(bh, s->sig.bh, bh_len) != 0) {
		if (key.testing)
			RESULT(DKIM_NEUTRAL, "body hash did not verify (key in testing mode)");
		RESULT(DKIM_FAIL, "body hash did not verify");
	}
	if (header_hash(v, s, hh, &hh_len) < 0)
		fatal("header hash failed");
	if (!sig_verify(pk, s->sig.alg, hh, hh_len, s->sig.b, s->sig.b_len)) {
		if (key.testing)
			RESULT(DKIM_NEUTRAL, "signature did not verify (key in testing mode)");
		RESULT(DKIM_FAIL, "signature did not verify");
	}
	if (s->sig.alg == DKIM_ALG_RSA_SHA1)
		RESULT(DKIM_POLICY, "rsa-sha1 is not accepted (RFC 8301)");
	RESULT(DKIM_PASS, "");
#undef RESULT
out:
	EVP_PKEY_free(pk);
	dkim_key_clear(&key);
	dkim_txt_clear(&txt);
}

size_t dkim_verifier_finish(struct dkim_verifier *v, const struct dkim_sig_result **results_r)
{
	static const struct dkim_sig_result too_big = {
	    .result = DKIM_PERMERROR,
	    .reason = "header section too large",
	};

	if (!v->finished) {
		v->finished = true;
		if (!v->headers_done) {
			dkim_msg_end_headers(&v->msg);
			headers_done(v);
		}
		if (!v->too_big) {
			for (size_t i = 0; i < v->nsigs; i++)
				if (v->sigs[i].ok)
					check_one(v, &v->sigs[i]);
		}
	}
	if (v->too_big) {
		*results_r = &too_big;
		return 1;
	}
	*results_r = v->results;
	return v->nsigs;
}

void dkim_verifier_free(struct dkim_verifier **vp)
{
	struct dkim_verifier *v = *vp;
	if (v == NULL)
		return;
	for (size_t i = 0; i < v->nsigs; i++) {
		struct dkim_sig_result *r = &v->results[i];
		free(r->domain);
		free(r->selector);
		free(r->identity);
		free(r->b_prefix);
		dkim_signature_clear(&v->sigs[i].sig);
		EVP_MD_CTX_free(v->sigs[i].bh_ctx);
	}
	free(v->sigs);
	free(v->results);
	dkim_msg_clear(&v->msg);
	free(v);
	*vp = NULL;
}

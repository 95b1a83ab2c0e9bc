/*
 * ARC chain validation (RFC 8617 5.2): see arc.h.
 *
 * Built on the DKIM module's pieces (header splitter, tag lists, key
 * records, canonicalization). The public-key operations are the same as
 * DKIM's (RSA PKCS#1 v1.5 with SHA-256, Ed25519 over the SHA-256 hash).
 */
#include "mail/arc.h"
#include "mail/dkim-private.h"
#include "lib/strutil.h"
#include "lib/xalloc.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { SET_AAR, SET_AMS, SET_AS, SET_KINDS };

struct arc_set {
	size_t field[SET_KINDS]; /* index in msg.fields */
	unsigned have[SET_KINDS]; /* how many fields of each kind claim this instance */
};

struct arc_verifier {
	const struct dkim_key_resolver *resolver;
	time_t now;
	struct dkim_msg msg;
	bool headers_done, too_big;
	const char *structure_error; /* decided at the end of the header section */
	struct arc_set *sets;         /* [1..n] */
	unsigned n;
	bool any;
	/* the body hash of AMS(N) */
	bool ams_ok;
	struct dkim_taglist ams;
	enum dkim_canon ams_hc, ams_bc;
	bool ams_ed25519;
	struct dkim_body_canon bc;
	EVP_MD_CTX *bh_ctx;
	bool has_l;
	uint64_t l, hashed;
};

const char *arc_result_name(enum arc_result r)
{
	return r == ARC_PASS ? "pass" : r == ARC_FAIL ? "fail" : "none";
}

static void body_emit(void *ctx, const char *data, size_t len)
{
	struct arc_verifier *v = ctx;
	size_t take = len;
	if (v->has_l) {
		uint64_t room = v->l > v->hashed ? v->l - v->hashed : 0;
		if (take > room)
			take = (size_t)room;
	}
	if (take > 0 && EVP_DigestUpdate(v->bh_ctx, data, take) != 1)
		fatal("EVP_DigestUpdate failed");
	v->hashed += take;
}

struct arc_verifier *arc_verifier_new(const struct dkim_key_resolver *resolver, time_t now)
{
	struct arc_verifier *v = xcalloc(1, sizeof(*v));
	v->resolver = resolver;
	v->now = now;
	dkim_msg_init(&v->msg);
	return v;
}

/* The field's value: after the name and the colon. */
static const char *field_value(const struct dkim_msg *m, const struct dkim_field *f, size_t *len_r)
{
	const char *p = m->hdr + f->off + f->name_len;
	size_t n = f->len - f->name_len;
	while (n > 0 && *p != ':') {
		p++;
		n--;
	}
	if (n > 0) {
		p++;
		n--;
	}
	*len_r = n;
	return p;
}

static int parse_instance(const char *s, size_t len, unsigned *i_r)
{
	unsigned v = 0;
	if (len == 0 || len > 3)
		return -1;
	for (size_t k = 0; k < len; k++) {
		if (!isdigit((unsigned char)s[k]))
			return -1;
		v = v * 10 + (unsigned)(s[k] - '0');
	}
	if (v < 1 || v > ARC_MAX_INSTANCES)
		return -1;
	*i_r = v;
	return 0;
}

/* ARC-Authentication-Results: "i=" N ";" first (RFC 8617 4.1.1). */
static int aar_instance(const char *s, size_t len, unsigned *i_r)
{
	size_t k = 0;
	while (k < len && (s[k] == ' ' || s[k] == '\t' || s[k] == '\r' || s[k] == '\n'))
		k++;
	if (k >= len || (s[k] != 'i' && s[k] != 'I'))
		return -1;
	k++;
	while (k < len && (s[k] == ' ' || s[k] == '\t'))
		k++;
	if (k >= len || s[k] != '=')
		return -1;
	k++;
	while (k < len && (s[k] == ' ' || s[k] == '\t'))
		k++;
	size_t d = k;
	while (k < len && isdigit((unsigned char)s[k]))
		k++;
	if (parse_instance(s + d, k - d, i_r) < 0)
		return -1;
	while (k < len && (s[k] == ' ' || s[k] == '\t' || s[k] == '\r' || s[k] == '\n'))
		k++;
	return k < len && s[k] == ';' ? 0 : -1;
}

static bool tag_is(const struct dkim_tag *t, const char *v)
{
	size_t n = strlen(v);
	return t != NULL && t->value_len == n && strncasecmp(t->value, v, n) == 0;
}

/* a= of an AMS or AS: rsa-sha256 or ed25519-sha256 (rsa-sha1 is not allowed, RFC 8301). */
static int parse_alg(const struct dkim_taglist *tl, bool *ed25519_r)
{
	const struct dkim_tag *a = dkim_taglist_get(tl, "a");
	if (tag_is(a, "rsa-sha256"))
		*ed25519_r = false;
	else if (tag_is(a, "ed25519-sha256"))
		*ed25519_r = true;
	else
		return -1;
	return 0;
}

static bool has_value(const struct dkim_taglist *tl, const char *name)
{
	const struct dkim_tag *t = dkim_taglist_get(tl, name);
	return t != NULL && t->value_len > 0;
}

/* The AMS(N): tags, canonicalization, and its body hash set up. */
static const char *ams_setup(struct arc_verifier *v)
{
	struct dkim_msg *m = &v->msg;
	size_t len;
	const char *val = field_value(m, &m->fields[v->sets[v->n].field[SET_AMS]], &len);
	const char *err = NULL;
	if (dkim_taglist_parse(val, len, &v->ams, &err) < 0)
		return "AMS: bad tag list";
	static const char *const req[] = {"a", "b", "bh", "d", "s"};
	for (size_t k = 0; k < ARRAY_SIZE(req); k++)
		if (!has_value(&v->ams, req[k]))
			return "AMS: a required tag is missing";
	if (dkim_taglist_get(&v->ams, "h") == NULL) /* present, may be empty */
		return "AMS: a required tag is missing";
	if (parse_alg(&v->ams, &v->ams_ed25519) < 0)
		return "AMS: unsupported algorithm";
	/* without c=, relaxed/relaxed: what ARC signers use, and what the ValiMail suite
	   (ams_fields_c_na) and dkimpy expect; RFC 8617 names no default */
	v->ams_hc = v->ams_bc = DKIM_CANON_RELAXED;
	const struct dkim_tag *c = dkim_taglist_get(&v->ams, "c");
	if (c != NULL) {
		const char *slash = memchr(c->value, '/', c->value_len);
		size_t hl = slash != NULL ? (size_t)(slash - c->value) : c->value_len;
		struct dkim_tag h = *c, b = *c;
		h.value_len = hl;
		if (tag_is(&h, "simple"))
			v->ams_hc = DKIM_CANON_SIMPLE;
		else if (!tag_is(&h, "relaxed"))
			return "AMS: bad c=";
		v->ams_bc = DKIM_CANON_SIMPLE; /* "c=relaxed" alone: body simple (RFC 6376 3.5) */
		if (slash != NULL) {
			b.value = slash + 1;
			b.value_len = c->value_len - hl - 1;
			if (tag_is(&b, "relaxed"))
				v->ams_bc = DKIM_CANON_RELAXED;
			else if (!tag_is(&b, "simple"))
				return "AMS: bad c=";
		}
	}
	/* h= must not sign ARC-Seal fields (RFC 8617 4.1.2) */
	const struct dkim_tag *h = dkim_taglist_get(&v->ams, "h");
	for (size_t k = 0; k < h->value_len;) {
		size_t e = k;
		while (e < h->value_len && h->value[e] != ':')
			e++;
		size_t s = k, t = e;
		while (s < t && isspace((unsigned char)h->value[s]))
			s++;
		while (t > s && isspace((unsigned char)h->value[t - 1]))
			t--;
		if (t - s == 8 && strncasecmp(h->value + s, "arc-seal", 8) == 0)
			return "AMS: h= signs ARC-Seal";
		k = e + 1;
	}
	const struct dkim_tag *l = dkim_taglist_get(&v->ams, "l");
	if (l != NULL) {
		uint64_t n = 0;
		if (l->value_len == 0 || l->value_len > 19)
			return "AMS: bad l=";
		for (size_t k = 0; k < l->value_len; k++) {
			if (!isdigit((unsigned char)l->value[k]))
				return "AMS: bad l=";
			n = n * 10 + (uint64_t)(l->value[k] - '0');
		}
		v->has_l = true;
		v->l = n;
	}
	v->bh_ctx = EVP_MD_CTX_new();
	if (v->bh_ctx == NULL || EVP_DigestInit_ex(v->bh_ctx, EVP_sha256(), NULL) != 1)
		fatal("EVP_DigestInit_ex failed");
	dkim_body_canon_init(&v->bc, v->ams_bc, body_emit, v);
	v->ams_ok = true;
	return NULL;
}

/* The header section is complete: find the sets, check their structure. */
static void headers_done(struct arc_verifier *v)
{
	struct dkim_msg *m = &v->msg;
	static const char *const names[SET_KINDS] = {"ARC-Authentication-Results",
						     "ARC-Message-Signature", "ARC-Seal"};
	v->headers_done = true;
	if (m->overflow) {
		v->too_big = true;
		return;
	}
	v->sets = xcalloc(ARC_MAX_INSTANCES + 1, sizeof(*v->sets));
	for (size_t i = 0; i < m->nfields; i++) {
		int kind = -1;
		for (int k = 0; k < SET_KINDS; k++)
			if (dkim_field_is(m, &m->fields[i], names[k]))
				kind = k;
		if (kind < 0)
			continue;
		v->any = true;
		size_t len;
		const char *val = field_value(m, &m->fields[i], &len);
		unsigned inst = 0;
		if (kind == SET_AAR) {
			if (aar_instance(val, len, &inst) < 0) {
				v->structure_error = "an ARC field without a valid instance";
				continue;
			}
		} else {
			struct dkim_taglist *tl = xmalloc(sizeof(*tl));
			const char *err = NULL;
			const struct dkim_tag *t;
			int rc = dkim_taglist_parse(val, len, tl, &err) < 0 ||
					 (t = dkim_taglist_get(tl, "i")) == NULL ||
					 parse_instance(t->value, t->value_len, &inst) < 0
				     ? -1
				     : 0;
			free(tl);
			if (rc < 0) {
				v->structure_error = "an ARC field without a valid instance";
				continue;
			}
		}
		if (v->sets[inst].have[kind]++ == 0)
			v->sets[inst].field[kind] = i;
		if (inst > v->n)
			v->n = inst;
	}
	if (!v->any || v->structure_error != NULL)
		return;
	for (unsigned i = 1; i <= v->n; i++)
		for (int k = 0; k < SET_KINDS; k++)
			if (v->sets[i].have[k] != 1) {
				v->structure_error = v->sets[i].have[k] == 0 ? "an ARC set is incomplete"
									      : "an ARC instance repeats";
				return;
			}
	v->structure_error = ams_setup(v);
}

int arc_verifier_push(struct arc_verifier *v, const void *data, size_t len)
{
	const char *p = data;
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
	if (v->ams_ok && len > 0)
		dkim_body_canon_push(&v->bc, p, len);
	return 0;
}

/* ---- crypto ---- */

static EVP_PKEY *load_key(const struct dkim_key *key)
{
	const unsigned char *pp = key->p;
	if (key->type == DKIM_KEY_ED25519)
		return key->p_len == 32 ? EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, key->p,
								      key->p_len)
					: NULL;
	EVP_PKEY *pk = d2i_PUBKEY(NULL, &pp, (long)key->p_len);
	if (pk != NULL && EVP_PKEY_get_base_id(pk) != EVP_PKEY_RSA) {
		EVP_PKEY_free(pk);
		return NULL;
	}
	if (pk == NULL) {
		pp = key->p;
		pk = d2i_PublicKey(EVP_PKEY_RSA, NULL, &pp, (long)key->p_len);
	}
	return pk;
}

/* Key of d=/s= in `tl`; verify `sig` over the SHA-256 `hash`. 1 ok, 0 bad, -1 temporary. */
static int verify_with_key(struct arc_verifier *v, const struct dkim_taglist *tl, bool ed25519,
			   const unsigned char *hash, size_t hlen, const char **why)
{
	const struct dkim_tag *d = dkim_taglist_get(tl, "d"), *s = dkim_taglist_get(tl, "s");
	const struct dkim_tag *b = dkim_taglist_get(tl, "b");
	if (d->value_len > 253 || s->value_len > 63) {
		*why = "bad d= or s=";
		return 0;
	}
	char *name = xasprintf("%.*s._domainkey.%.*s", (int)s->value_len, s->value, (int)d->value_len,
			       d->value);
	struct dkim_txt txt = {0};
	int rc = v->resolver->txt(v->resolver->ctx, name, &txt);
	free(name);
	int ret = 0;
	struct dkim_key key = {0};
	EVP_PKEY *pk = NULL;
	unsigned char *sig = NULL;
	if (rc == DKIM_DNS_TEMPFAIL) {
		*why = "key lookup failed";
		ret = -1;
		goto out;
	}
	bool parsed = false;
	for (size_t i = 0; i < txt.count && !parsed; i++) {
		const char *err;
		parsed = dkim_key_parse(txt.records[i], txt.lens[i], &key, &err) == 0;
		if (!parsed)
			dkim_key_clear(&key);
	}
	if (!parsed) {
		*why = "no usable key";
		goto out;
	}
	if (key.revoked || (key.type == DKIM_KEY_ED25519) != ed25519 || !key.hash_sha256) {
		*why = "key revoked or of another type";
		goto out;
	}
	pk = load_key(&key);
	if (pk == NULL || (!ed25519 && EVP_PKEY_get_bits(pk) < DKIM_MIN_RSA_BITS)) {
		*why = "unusable key";
		goto out;
	}
	/* b= without FWS, decoded */
	char *clean = xmalloc(b->value_len + 1);
	size_t n = 0;
	for (size_t i = 0; i < b->value_len; i++)
		if (!isspace((unsigned char)b->value[i]))
			clean[n++] = b->value[i];
	sig = xmalloc(3 * (n / 4) + 3);
	long slen = base64_decode(clean, n, sig);
	free(clean);
	if (slen <= 0) {
		*why = "bad b=";
		goto out;
	}
	bool ok = false;
	if (ed25519) {
		EVP_MD_CTX *mctx = EVP_MD_CTX_new();
		if (mctx != NULL && EVP_DigestVerifyInit(mctx, NULL, NULL, NULL, pk) == 1)
			ok = EVP_DigestVerify(mctx, sig, (size_t)slen, hash, hlen) == 1;
		EVP_MD_CTX_free(mctx);
	} else {
		EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new(pk, NULL);
		if (pctx != NULL && EVP_PKEY_verify_init(pctx) == 1 &&
		    EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1 &&
		    EVP_PKEY_CTX_set_signature_md(pctx, EVP_sha256()) == 1)
			ok = EVP_PKEY_verify(pctx, sig, (size_t)slen, hash, hlen) == 1;
		EVP_PKEY_CTX_free(pctx);
	}
	ret = ok ? 1 : 0;
	if (!ok)
		*why = "signature does not verify";
out:
	free(sig);
	EVP_PKEY_free(pk);
	dkim_key_clear(&key);
	dkim_txt_clear(&txt);
	return ret;
}

/* Canonicalize field `fi`, with the value of its b= emptied when `tl` is given. */
static void canon_field(const struct dkim_msg *m, size_t fi, enum dkim_canon canon,
			const struct dkim_taglist *tl, bool crlf, char **buf, size_t *blen,
			size_t *bcap)
{
	const struct dkim_field *f = &m->fields[fi];
	const char *ft = m->hdr + f->off;
	*blen = 0;
	if (tl == NULL) {
		dkim_header_canon(canon, ft, f->len, crlf, buf, blen, bcap);
		return;
	}
	const struct dkim_tag *b = dkim_taglist_get(tl, "b");
	size_t vlen;
	const char *val = field_value(m, f, &vlen);
	size_t voff = (size_t)(val - ft);
	size_t cut = voff + b->value_off, resume = voff + b->end_off;
	char *tmp = xmalloc(f->len + 1);
	memcpy(tmp, ft, cut);
	memcpy(tmp + cut, ft + resume, f->len - resume);
	dkim_header_canon(canon, tmp, cut + f->len - resume, crlf, buf, blen, bcap);
	free(tmp);
}

static void digest(EVP_MD_CTX *ctx, const char *p, size_t n)
{
	if (n > 0 && EVP_DigestUpdate(ctx, p, n) != 1)
		fatal("EVP_DigestUpdate failed");
}

/* RFC 8617 5.2 step 4 (and RFC 6376 3.7): the AMS(N) like a DKIM signature. */
static int check_ams(struct arc_verifier *v, const char **why)
{
	struct dkim_msg *m = &v->msg;
	unsigned char bh[EVP_MAX_MD_SIZE], hh[EVP_MAX_MD_SIZE];
	unsigned bh_len = 0, hh_len = 0;
	dkim_body_canon_finish(&v->bc);
	if (EVP_DigestFinal_ex(v->bh_ctx, bh, &bh_len) != 1)
		fatal("EVP_DigestFinal_ex failed");
	const struct dkim_tag *bht = dkim_taglist_get(&v->ams, "bh");
	char *clean = xmalloc(bht->value_len + 1);
	size_t n = 0;
	for (size_t i = 0; i < bht->value_len; i++)
		if (!isspace((unsigned char)bht->value[i]))
			clean[n++] = bht->value[i];
	unsigned char *want = xmalloc(3 * (n / 4) + 3);
	long wl = base64_decode(clean, n, want);
	free(clean);
	bool body_ok = wl == (long)bh_len && memcmp(want, bh, bh_len) == 0;
	free(want);
	if (!body_ok) {
		*why = "AMS body hash does not match";
		return 0;
	}
	/* header hash: h= fields bottom-up, then the AMS with b= empty */
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
		fatal("EVP_DigestInit_ex failed");
	bool *used = xcalloc(m->nfields ? m->nfields : 1, sizeof(*used));
	char *buf = NULL;
	size_t blen = 0, bcap = 0;
	const struct dkim_tag *h = dkim_taglist_get(&v->ams, "h");
	for (size_t k = 0; k < h->value_len;) {
		size_t e = k;
		while (e < h->value_len && h->value[e] != ':')
			e++;
		size_t s = k, t = e;
		while (s < t && isspace((unsigned char)h->value[s]))
			s++;
		while (t > s && isspace((unsigned char)h->value[t - 1]))
			t--;
		char name[128];
		if (t - s > 0 && t - s < sizeof(name)) {
			memcpy(name, h->value + s, t - s);
			name[t - s] = '\0';
			for (size_t fi = m->nfields; fi-- > 0;) {
				if (used[fi] || !dkim_field_is(m, &m->fields[fi], name))
					continue;
				used[fi] = true;
				canon_field(m, fi, v->ams_hc, NULL, true, &buf, &blen, &bcap);
				digest(ctx, buf, blen);
				break;
			}
		}
		k = e + 1;
	}
	canon_field(m, v->sets[v->n].field[SET_AMS], v->ams_hc, &v->ams, false, &buf, &blen, &bcap);
	digest(ctx, buf, blen);
	if (EVP_DigestFinal_ex(ctx, hh, &hh_len) != 1)
		fatal("EVP_DigestFinal_ex failed");
	EVP_MD_CTX_free(ctx);
	free(buf);
	free(used);
	return verify_with_key(v, &v->ams, v->ams_ed25519, hh, hh_len, why);
}

/* RFC 8617 5.1.1: AS(k) signs the sets 1..k (AAR, AMS, AS each), relaxed, its own b= empty. */
static int check_seal(struct arc_verifier *v, unsigned k, const char **why)
{
	struct dkim_msg *m = &v->msg;
	struct dkim_taglist *tl = xmalloc(sizeof(*tl));
	size_t len;
	const char *val = field_value(m, &m->fields[v->sets[k].field[SET_AS]], &len);
	const char *err = NULL;
	int ret = 0;
	bool ed25519 = false;
	if (dkim_taglist_parse(val, len, tl, &err) < 0) {
		*why = "AS: bad tag list";
		goto out;
	}
	static const char *const req[] = {"a", "b", "cv", "d", "s"};
	for (size_t q = 0; q < ARRAY_SIZE(req); q++) {
		if (!has_value(tl, req[q])) {
			*why = "AS: a required tag is missing";
			goto out;
		}
	}
	if (dkim_taglist_get(tl, "h") != NULL) {
		*why = "AS: h= is not allowed";
		goto out;
	}
	if (parse_alg(tl, &ed25519) < 0) {
		*why = "AS: unsupported algorithm";
		goto out;
	}
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
		fatal("EVP_DigestInit_ex failed");
	char *buf = NULL;
	size_t blen = 0, bcap = 0;
	for (unsigned i = 1; i <= k; i++) {
		canon_field(m, v->sets[i].field[SET_AAR], DKIM_CANON_RELAXED, NULL, true, &buf, &blen,
			    &bcap);
		digest(ctx, buf, blen);
		canon_field(m, v->sets[i].field[SET_AMS], DKIM_CANON_RELAXED, NULL, true, &buf, &blen,
			    &bcap);
		digest(ctx, buf, blen);
		canon_field(m, v->sets[i].field[SET_AS], DKIM_CANON_RELAXED, i == k ? tl : NULL,
			    i != k, &buf, &blen, &bcap);
		digest(ctx, buf, blen);
	}
	unsigned char hh[EVP_MAX_MD_SIZE];
	unsigned hh_len = 0;
	if (EVP_DigestFinal_ex(ctx, hh, &hh_len) != 1)
		fatal("EVP_DigestFinal_ex failed");
	EVP_MD_CTX_free(ctx);
	free(buf);
	ret = verify_with_key(v, tl, ed25519, hh, hh_len, why);
out:
	free(tl);
	return ret;
}

/* cv= of AS(i): RFC 8617 5.2 step 3. */
static const char *seal_cv(struct arc_verifier *v, unsigned i, bool *fail_r)
{
	struct dkim_taglist *tl = xmalloc(sizeof(*tl));
	size_t len;
	const char *val = field_value(&v->msg, &v->msg.fields[v->sets[i].field[SET_AS]], &len);
	const char *err = NULL, *ret = NULL;
	*fail_r = false;
	if (dkim_taglist_parse(val, len, tl, &err) < 0) {
		ret = "AS: bad tag list";
	} else {
		const struct dkim_tag *cv = dkim_taglist_get(tl, "cv");
		if (tag_is(cv, "fail"))
			*fail_r = true;
		else if (i == 1 && !tag_is(cv, "none"))
			ret = "AS(1) does not say cv=none";
		else if (i > 1 && !tag_is(cv, "pass"))
			ret = "an AS after the first does not say cv=pass";
	}
	free(tl);
	return ret;
}

static char *seal_domain(struct arc_verifier *v, unsigned i)
{
	struct dkim_taglist *tl = xmalloc(sizeof(*tl));
	size_t len;
	const char *val = field_value(&v->msg, &v->msg.fields[v->sets[i].field[SET_AS]], &len);
	const char *err = NULL;
	char *d = NULL;
	if (dkim_taglist_parse(val, len, tl, &err) == 0) {
		const struct dkim_tag *t = dkim_taglist_get(tl, "d");
		if (t != NULL && t->value_len > 0 && t->value_len <= 253)
			d = str_lower(xstrndup(t->value, t->value_len));
	}
	free(tl);
	return d;
}

enum arc_result arc_verifier_finish(struct arc_verifier *v, struct arc_outcome *out)
{
	memset(out, 0, sizeof(*out));
	out->reason = "";
	if (!v->headers_done) {
		dkim_msg_end_headers(&v->msg);
		headers_done(v);
	}
	const char *why = NULL;
	if (v->too_big) {
		out->result = ARC_FAIL;
		out->reason = "header section too large";
		return out->result;
	}
	if (!v->any)
		return out->result = ARC_NONE;
	out->instances = v->n;
	out->result = ARC_FAIL;
	if (v->structure_error != NULL) {
		out->reason = v->structure_error;
		return out->result;
	}
	out->domain = seal_domain(v, v->n);
	/* the newest AS says the chain already failed: fail without more work */
	bool failed;
	for (unsigned i = v->n; i >= 1; i--) {
		const char *e = seal_cv(v, i, &failed);
		if (failed) {
			out->reason = "a sealer found the chain failed (cv=fail)";
			return out->result;
		}
		if (e != NULL) {
			out->reason = e;
			return out->result;
		}
	}
	int r = check_ams(v, &why);
	if (r <= 0) {
		out->temporary = r < 0;
		out->reason = why;
		return out->result;
	}
	for (unsigned i = v->n; i >= 1; i--) {
		r = check_seal(v, i, &why);
		if (r <= 0) {
			out->temporary = r < 0;
			out->reason = why;
			return out->result;
		}
	}
	out->result = ARC_PASS;
	return out->result;
}

void arc_outcome_clear(struct arc_outcome *out)
{
	xfree(&out->domain);
}

void arc_verifier_free(struct arc_verifier **vp)
{
	struct arc_verifier *v = *vp;
	if (v == NULL)
		return;
	*vp = NULL;
	if (v->bh_ctx != NULL)
		EVP_MD_CTX_free(v->bh_ctx);
	dkim_msg_clear(&v->msg);
	free(v->sets);
	free(v);
}

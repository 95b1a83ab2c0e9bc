/*
 * ARC sealing (RFC 8617 5.1): see arc.h.
 *
 * The AMS is a DKIM signature under another name (RFC 8617 4.1.2): the
 * same signed header set as our DKIM signer plus DKIM-Signature, relaxed
 * canonicalization, no l=. The AS hashes the ARC sets 1..N in order (AAR,
 * AMS, AS of each, relaxed), its own b= empty (RFC 8617 5.1.1); when the
 * arriving chain failed, only the new set (5.1.2).
 */
#include "mail/arc.h"
#include "mail/dkim-private.h"
#include "lib/strutil.h"
#include "lib/xalloc.h"

#include <ctype.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>


enum { K_AAR, K_AMS, K_AS, K_KINDS };

static const char *const kind_names[K_KINDS] = {"ARC-Authentication-Results",
                                                "ARC-Message-Signature", "ARC-Seal"};

struct arc_sealer {
	/* the key of arc_sealer_new; NULL for an unkeyed sealer */
	char *domain, *selector;
	time_t timestamp;
	struct dkim_privkey *key;
	struct dkim_msg msg;
	struct dkim_body_canon bc;
	EVP_MD_CTX *bh_ctx;
};

/* A growing string. */
struct buf {
	char *s;
	size_t len, cap;
};

static void buf_add(struct buf *b, const char *p, size_t n)
{
	b->s = xgrow(b->s, &b->cap, b->len + n + 1, 1);
	memcpy(b->s + b->len, p, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *p)
{
	buf_add(b, p, strlen(p));
}

/* Append `piece`, folding first when the line would pass 78 columns. */
static void fold_add(struct buf *b, size_t *col, const char *piece, bool space)
{
	size_t n = strlen(piece);
	if (*col + n + (space ? 1 : 0) > 78) {
		buf_str(b, "\r\n\t");
		*col = 8;
	} else if (space) {
		buf_str(b, " ");
		(*col)++;
	}
	buf_add(b, piece, n);
	*col += n;
}

static bool plain_name(const char *s)
{
	if (s == NULL || *s == '\0' || strlen(s) > 253)
		return false;
	for (; *s != '\0'; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '.' && *s != '_')
			return false;
	return true;
}

static void seal_emit(void *ctx, const char *data, size_t len)
{
	struct arc_sealer *s = ctx;
	if (EVP_DigestUpdate(s->bh_ctx, data, len) != 1)
		fatal("EVP_DigestUpdate failed");
}

struct arc_sealer *arc_sealer_new_unkeyed(void)
{
	struct arc_sealer *s = xcalloc(1, sizeof(*s));
	dkim_msg_init(&s->msg);
	dkim_body_canon_init(&s->bc, DKIM_CANON_RELAXED, seal_emit, s);
	s->bh_ctx = EVP_MD_CTX_new();
	if (s->bh_ctx == NULL || EVP_DigestInit_ex(s->bh_ctx, EVP_sha256(), NULL) != 1)
		fatal("EVP_DigestInit_ex failed");
	return s;
}

/* The key of `p`: a new reference, or parsed from its PEM; NULL with *error_r. */
static struct dkim_privkey *params_key(const struct arc_seal_params *p, const char **error_r)
{
	if (!plain_name(p->domain) || !plain_name(p->selector)) {
		*error_r = "bad domain or selector";
		return NULL;
	}
	if (p->key != NULL)
		return dkim_privkey_ref(p->key);
	return dkim_privkey_parse(p->key_pem, error_r);
}

struct arc_sealer *arc_sealer_new(const struct arc_seal_params *p, const char **error_r)
{
	struct dkim_privkey *key = params_key(p, error_r);
	if (key == NULL)
		return NULL;
	struct arc_sealer *s = arc_sealer_new_unkeyed();
	s->domain = str_lower(xstrdup(p->domain));
	s->selector = xstrdup(p->selector);
	s->timestamp = p->timestamp;
	s->key = key;
	return s;
}

int arc_sealer_push(struct arc_sealer *s, const void *data, size_t len)
{
	const char *p = data;
	if (!s->msg.in_body) {
		size_t used = dkim_msg_push(&s->msg, p, len);
		p += used;
		len -= used;
	}
	if (s->msg.overflow)
		return -1;
	if (s->msg.in_body && len > 0)
		dkim_body_canon_push(&s->bc, p, len);
	return 0;
}

/* The field's value, after the name and the colon. */
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

static bool is_wsp(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* The instance of an ARC field: AAR starts "i=N;", AMS and AS carry an i= tag. 0 if none. */
static unsigned field_instance(const struct dkim_msg *m, size_t fi, int kind,
                               struct dkim_taglist *tl)
{
	size_t len;
	const char *v = field_value(m, &m->fields[fi], &len);
	const char *iv = NULL;
	size_t il = 0;
	if (kind == K_AAR) {
		size_t k = 0;
		while (k < len && is_wsp(v[k]))
			k++;
		if (k >= len || (v[k] != 'i' && v[k] != 'I'))
			return 0;
		k++;
		while (k < len && is_wsp(v[k]))
			k++;
		if (k >= len || v[k] != '=')
			return 0;
		k++;
		while (k < len && is_wsp(v[k]))
			k++;
		iv = v + k;
		while (k < len && isdigit((unsigned char)v[k]))
			k++;
		il = (size_t)(v + k - iv);
	} else {
		const char *err;
		if (dkim_taglist_parse(v, len, tl, &err) < 0)
			return 0;
		const struct dkim_tag *t = dkim_taglist_get(tl, "i");
		if (t == NULL)
			return 0;
		iv = t->value;
		il = t->value_len;
	}
	if (il == 0 || il > 3)
		return 0;
	unsigned n = 0;
	for (size_t k = 0; k < il; k++) {
		if (!isdigit((unsigned char)iv[k]))
			return 0;
		n = n * 10 + (unsigned)(iv[k] - '0');
	}
	return n <= ARC_MAX_INSTANCES ? n : 0;
}

/* Sign the SHA-256 `hash` (RSA PKCS#1 v1.5 or Ed25519 over the hash, as DKIM) and append
   the base64 signature to the field, filling lines to 78 columns. */
static int sign_append(const struct dkim_privkey *key, const unsigned char *hash, size_t hlen,
                       struct buf *f, size_t *col)
{
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	if (dkim_privkey_sign(key, hash, hlen, &sig, &sig_len) < 0)
		return -1;
	char *b64 = xmalloc(4 * ((sig_len + 2) / 3) + 1);
	size_t bl = base64_encode(sig, sig_len, b64);
	for (size_t i = 0; i < bl;) {
		if (*col >= 78) {
			buf_str(f, "\r\n\t");
			*col = 8;
			continue;
		}
		size_t n = bl - i < 78 - *col ? bl - i : 78 - *col;
		buf_add(f, b64 + i, n);
		*col += n;
		i += n;
	}
	free(b64);
	free(sig);
	return 0;
}

static void hash_canon(EVP_MD_CTX *ctx, const char *field, size_t len, bool crlf, struct buf *tmp)
{
	tmp->len = 0;
	dkim_header_canon(DKIM_CANON_RELAXED, field, len, crlf, &tmp->s, &tmp->len, &tmp->cap);
	if (tmp->len > 0 && EVP_DigestUpdate(ctx, tmp->s, tmp->len) != 1)
		fatal("EVP_DigestUpdate failed");
}

/* The results text: a value, or the value of the first Authentication-Results field given. */
static char *results_value(const char *ar)
{
	static const char name[] = "Authentication-Results:";
	const char *p = ar;
	if (strncasecmp(p, name, sizeof(name) - 1) == 0)
		p += sizeof(name) - 1;
	while (is_wsp(*p))
		p++;
	/* up to the end of the field: a CRLF (or LF) not followed by WSP */
	const char *e = p;
	while (*e != '\0') {
		const char *nl = *e == '\r' && e[1] == '\n' ? e + 2 : *e == '\n' ? e + 1 : NULL;
		if (nl != NULL && *nl != ' ' && *nl != '\t')
			break;
		e = nl != NULL ? nl : e + 1;
	}
	while (e > p && is_wsp(e[-1]))
		e--;
	return e > p ? xstrndup(p, (size_t)(e - p)) : NULL;
}

/* The set for `auth_results` and `cv`, signed with `key` as `domain` (lowercase) and `selector`. */
static char *seal_with(struct arc_sealer *s, const char *domain, const char *selector,
                       time_t timestamp, const struct dkim_privkey *key, const char *auth_results,
                       enum arc_result cv, const char **error_r)
{
	struct dkim_msg *m = &s->msg;
	struct buf aar = {0}, ams = {0}, as = {0}, tmp = {0};
	char piece[512];
	unsigned char bh[EVP_MAX_MD_SIZE], hh[EVP_MAX_MD_SIZE];
	unsigned bh_len = 0, hh_len = 0;
	char *ret = NULL, *results = NULL;
	size_t(*sets)[K_KINDS] = NULL;
	unsigned(*have)[K_KINDS] = NULL;
	struct dkim_taglist *tl = xmalloc(sizeof(*tl));
	EVP_MD_CTX *ctx = NULL;
	bool *used = NULL;

	dkim_msg_end_headers(m);
	if (m->overflow) {
		*error_r = "header section too large";
		goto out;
	}
	results = auth_results != NULL ? results_value(auth_results) : NULL;
	if (results == NULL) {
		*error_r = "no authentication results to seal";
		goto out;
	}

	/* the existing sets: the newest instance, and where each field is */
	sets = xcalloc(ARC_MAX_INSTANCES + 1, sizeof(*sets));
	have = xcalloc(ARC_MAX_INSTANCES + 1, sizeof(*have));
	unsigned newest = 0;
	bool any = false, malformed = false;
	for (size_t i = 0; i < m->nfields; i++) {
		for (int k = 0; k < K_KINDS; k++) {
			if (!dkim_field_is(m, &m->fields[i], kind_names[k]))
				continue;
			any = true;
			unsigned inst = field_instance(m, i, k, tl);
			if (inst == 0) {
				malformed = true;
				continue;
			}
			if (have[inst][k]++ == 0)
				sets[inst][k] = i;
			if (inst > newest)
				newest = inst;
		}
	}
	if (newest >= ARC_MAX_INSTANCES) {
		*error_r = "the chain already has the most ARC sets allowed";
		goto out;
	}
	if (newest > 0 && have[newest][K_AS] == 1) {
		size_t vl;
		const char *v = field_value(m, &m->fields[sets[newest][K_AS]], &vl);
		const char *err;
		const struct dkim_tag *t;
		if (dkim_taglist_parse(v, vl, tl, &err) == 0 &&
		    (t = dkim_taglist_get(tl, "cv")) != NULL && t->value_len == 4 &&
		    strncasecmp(t->value, "fail", 4) == 0) {
			*error_r = "the newest ARC-Seal already says cv=fail";
			goto out;
		}
	}
	for (unsigned i = 1; i <= newest && !malformed; i++)
		for (int k = 0; k < K_KINDS; k++)
			if (have[i][k] != 1)
				malformed = true;
	/* a chain we did not validate, or one that is not a sequence of whole sets, failed */
	const char *cvs = "none";
	bool failed = false;
	if (any) {
		failed = cv != ARC_PASS || malformed;
		cvs = failed ? "fail" : "pass";
	}
	unsigned n = newest + 1;

	/* ARC-Authentication-Results */
	snprintf(piece, sizeof(piece), "ARC-Authentication-Results: i=%u; ", n);
	buf_str(&aar, piece);
	buf_str(&aar, results);

	/* ARC-Message-Signature: body hash, then the header hash as for DKIM */
	dkim_body_canon_finish(&s->bc);
	if (EVP_DigestFinal_ex(s->bh_ctx, bh, &bh_len) != 1)
		fatal("EVP_DigestFinal_ex failed");
	size_t col = 0;
	fold_add(&ams, &col, "ARC-Message-Signature:", false);
	snprintf(piece, sizeof(piece), "i=%u;", n);
	fold_add(&ams, &col, piece, true);
	fold_add(&ams, &col, dkim_privkey_is_ed25519(key) ? "a=ed25519-sha256;" : "a=rsa-sha256;",
	         true);
	fold_add(&ams, &col, "c=relaxed/relaxed;", true);
	snprintf(piece, sizeof(piece), "d=%s;", domain);
	fold_add(&ams, &col, piece, true);
	snprintf(piece, sizeof(piece), "s=%s;", selector);
	fold_add(&ams, &col, piece, true);
	snprintf(piece, sizeof(piece), "t=%" PRIu64 ";", (uint64_t)timestamp);
	fold_add(&ams, &col, piece, true);
	/* what a forwarder must not change, as a DKIM signature of ours, and the DKIM
	   signatures the message arrived with */
	const char *hnames[DKIM_MAX_H_ENTRIES];
	size_t nh = dkim_sign_h_names(m, "DKIM-Signature", hnames);
	for (size_t i = 0; i < nh; i++) {
		snprintf(piece, sizeof(piece), "%s%s%s", i == 0 ? "h=" : "", hnames[i],
		         i + 1 == nh ? ";" : ":");
		fold_add(&ams, &col, piece, i == 0);
	}
	char b64[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];
	base64_encode(bh, bh_len, b64);
	snprintf(piece, sizeof(piece), "bh=%s;", b64);
	fold_add(&ams, &col, piece, true);
	fold_add(&ams, &col, "b=", true);

	ctx = EVP_MD_CTX_new();
	if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
		fatal("EVP_DigestInit_ex failed");
	used = xcalloc(m->nfields ? m->nfields : 1, sizeof(*used));
	for (size_t h = 0; h < nh; h++) {
		for (size_t k = m->nfields; k-- > 0;) {
			if (used[k] || !dkim_field_is(m, &m->fields[k], hnames[h]))
				continue;
			used[k] = true;
			hash_canon(ctx, m->hdr + m->fields[k].off, m->fields[k].len, true, &tmp);
			break;
		}
	}
	hash_canon(ctx, ams.s, ams.len, false, &tmp);
	if (EVP_DigestFinal_ex(ctx, hh, &hh_len) != 1)
		fatal("EVP_DigestFinal_ex failed");
	if (sign_append(key, hh, hh_len, &ams, &col) < 0) {
		*error_r = "signing failed";
		goto out;
	}

	/* ARC-Seal: the sets 1..N-1 (unless the chain failed), then the new one */
	col = 0;
	fold_add(&as, &col, "ARC-Seal:", false);
	snprintf(piece, sizeof(piece), "i=%u;", n);
	fold_add(&as, &col, piece, true);
	fold_add(&as, &col, dkim_privkey_is_ed25519(key) ? "a=ed25519-sha256;" : "a=rsa-sha256;",
	         true);
	snprintf(piece, sizeof(piece), "cv=%s;", cvs);
	fold_add(&as, &col, piece, true);
	snprintf(piece, sizeof(piece), "d=%s;", domain);
	fold_add(&as, &col, piece, true);
	snprintf(piece, sizeof(piece), "s=%s;", selector);
	fold_add(&as, &col, piece, true);
	snprintf(piece, sizeof(piece), "t=%" PRIu64 ";", (uint64_t)timestamp);
	fold_add(&as, &col, piece, true);
	fold_add(&as, &col, "b=", true);
	if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
		fatal("EVP_DigestInit_ex failed");
	for (unsigned i = 1; i < n && !failed; i++)
		for (int k = 0; k < K_KINDS; k++) {
			const struct dkim_field *f = &m->fields[sets[i][k]];
			hash_canon(ctx, m->hdr + f->off, f->len, true, &tmp);
		}
	hash_canon(ctx, aar.s, aar.len, true, &tmp);
	hash_canon(ctx, ams.s, ams.len, true, &tmp);
	hash_canon(ctx, as.s, as.len, false, &tmp);
	if (EVP_DigestFinal_ex(ctx, hh, &hh_len) != 1)
		fatal("EVP_DigestFinal_ex failed");
	if (sign_append(key, hh, hh_len, &as, &col) < 0) {
		*error_r = "signing failed";
		goto out;
	}

	buf_str(&as, "\r\n");
	buf_add(&as, ams.s, ams.len);
	buf_str(&as, "\r\n");
	buf_add(&as, aar.s, aar.len);
	buf_str(&as, "\r\n");
	ret = as.s;
	as.s = NULL;
out:
	EVP_MD_CTX_free(ctx);
	free(used);
	free(sets);
	free(have);
	free(tl);
	free(results);
	free(aar.s);
	free(ams.s);
	free(as.s);
	free(tmp.s);
	return ret;
}

char *arc_sealer_finish(struct arc_sealer *s, const char *auth_results, enum arc_result cv,
                        const char **error_r)
{
	if (s->key == NULL) {
		*error_r = "the sealer has no key";
		return NULL;
	}
	return seal_with(s, s->domain, s->selector, s->timestamp, s->key, auth_results, cv,
	                 error_r);
}

char *arc_sealer_seal(struct arc_sealer *s, const struct arc_seal_params *p,
                      const char *auth_results, enum arc_result cv, const char **error_r)
{
	struct dkim_privkey *key = params_key(p, error_r);
	if (key == NULL)
		return NULL;
	char *domain = str_lower(xstrdup(p->domain));
	char *set = seal_with(s, domain, p->selector, p->timestamp, key, auth_results, cv, error_r);
	free(domain);
	dkim_privkey_unref(&key);
	return set;
}

void arc_sealer_free(struct arc_sealer **sp)
{
	struct arc_sealer *s = *sp;
	if (s == NULL)
		return;
	*sp = NULL;
	free(s->domain);
	free(s->selector);
	dkim_privkey_unref(&s->key);
	EVP_MD_CTX_free(s->bh_ctx);
	dkim_msg_clear(&s->msg);
	free(s);
}

/*
 * DKIM parsers (tag lists, DKIM-Signature, key records) and the RFC 6376
 * 3.4 canonicalizations. Everything here reads peer input: every loop is
 * bounded by the input length and every list by a DKIM_MAX_* limit.
 */
#include "mail/dkim.h"
#include "mail/dkim-private.h"
#include "lib/strutil.h"
#include "lib/xalloc.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *dkim_result_name(enum dkim_result r)
{
	switch (r) {
	case DKIM_NONE:
		return "none";
	case DKIM_PASS:
		return "pass";
	case DKIM_FAIL:
		return "fail";
	case DKIM_NEUTRAL:
		return "neutral";
	case DKIM_POLICY:
		return "policy";
	case DKIM_TEMPERROR:
		return "temperror";
	case DKIM_PERMERROR:
		return "permerror";
	}
	return "permerror";
}

static bool is_wsp(int c)
{
	return c == ' ' || c == '\t';
}

/* FWS in a tag list: WSP, and CRLF (or bare LF) followed by WSP. */
static size_t skip_fws(const char *s, size_t len, size_t i)
{
	while (i < len) {
		if (is_wsp(s[i])) {
			i++;
		} else if (s[i] == '\r' && i + 2 < len && s[i + 1] == '\n' && is_wsp(s[i + 2])) {
			i += 3;
		} else if (s[i] == '\n' && i + 1 < len && is_wsp(s[i + 1])) {
			i += 2;
		} else {
			break;
		}
	}
	return i;
}

/* RFC 6376 3.2 */
int dkim_taglist_parse(const char *s, size_t len, struct dkim_taglist *tl, const char **error_r)
{
	size_t i = 0;

	tl->count = 0;
	for (;;) {
		i = skip_fws(s, len, i);
		if (i == len) {
			if (tl->count == 0) {
				*error_r = "empty tag list";
				return -1;
			}
			return 0; /* trailing ';' allowed */
		}
		/* tag-name = ALPHA *ALNUMPUNC */
		if (!isalpha((unsigned char)s[i])) {
			*error_r = "bad tag name";
			return -1;
		}
		size_t ns = i;
		while (i < len && (isalnum((unsigned char)s[i]) || s[i] == '_'))
			i++;
		size_t nl = i - ns;
		if (nl >= sizeof(tl->tags[0].name)) {
			*error_r = "tag name too long";
			return -1;
		}
		i = skip_fws(s, len, i);
		if (i == len || s[i] != '=') {
			*error_r = "tag without '='";
			return -1;
		}
		i++;
		if (tl->count == DKIM_MAX_TAGS) {
			*error_r = "too many tags";
			return -1;
		}
		struct dkim_tag *t = &tl->tags[tl->count];
		memcpy(t->name, s + ns, nl);
		t->name[nl] = '\0';
		t->name_len = nl;
		t->value_off = i;
		i = skip_fws(s, len, i);
		size_t vs = i, ve = i;
		/* tag-value = [ tval *( 1*(WSP / FWS) tval ) ], tval = 1*VALCHAR */
		while (i < len && s[i] != ';') {
			unsigned char c = (unsigned char)s[i];
			if (c >= 0x21 && c <= 0x7e) {
				i++;
				ve = i;
				continue;
			}
			size_t j = skip_fws(s, len, i);
			if (j == i) {
				*error_r = "bad character in tag value";
				return -1;
			}
			i = j;
		}
		t->value = s + vs;
		t->value_len = ve - vs;
		t->end_off = i;
		for (size_t k = 0; k < tl->count; k++) {
			if (strcmp(tl->tags[k].name, t->name) == 0) {
				*error_r = "duplicate tag";
				return -1;
			}
		}
		tl->count++;
		if (i == len)
			return 0;
		i++; /* ';' */
	}
}

const struct dkim_tag *dkim_taglist_get(const struct dkim_taglist *tl, const char *name)
{
	for (size_t i = 0; i < tl->count; i++)
		if (strcmp(tl->tags[i].name, name) == 0)
			return &tl->tags[i];
	return NULL;
}

static bool tag_is(const struct dkim_tag *t, const char *v)
{
	size_t n = strlen(v);
	return t->value_len == n && strncasecmp(t->value, v, n) == 0;
}

/* Decode base64 with FWS anywhere (RFC 6376 3.5 b=, bh=, 3.6.1 p=). */
static int b64_fws(const char *s, size_t len, unsigned char **out_r, size_t *out_len_r,
                   char **text_r)
{
	char *clean = xmalloc(len + 1);
	size_t n = 0;
	for (size_t i = 0; i < len; i++) {
		if (is_wsp(s[i]) || s[i] == '\r' || s[i] == '\n')
			continue;
		clean[n++] = s[i];
	}
	clean[n] = '\0';
	unsigned char *out = xmalloc(3 * (n / 4) + 3);
	long r = base64_decode(clean, n, out);
	if (r < 0) {
		free(clean);
		free(out);
		return -1;
	}
	*out_r = out;
	*out_len_r = (size_t)r;
	if (text_r != NULL)
		*text_r = clean;
	else
		free(clean);
	return 0;
}

static int parse_num(const struct dkim_tag *t, uint64_t *v_r)
{
	uint64_t v = 0;
	if (t->value_len == 0 || t->value_len > 19)
		return -1;
	for (size_t i = 0; i < t->value_len; i++) {
		if (!isdigit((unsigned char)t->value[i]))
			return -1;
		v = v * 10 + (uint64_t)(t->value[i] - '0');
	}
	*v_r = v;
	return 0;
}

/* A domain name as d= allows: LDH labels separated by dots. */
static bool valid_domain(const char *s, size_t len)
{
	if (len == 0 || len > 253 || s[0] == '.' || s[len - 1] == '.')
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '.') {
			if (s[i + 1] == '.')
				return false;
		} else if (!isalnum(c) && c != '-' && c != '_') {
			return false;
		}
	}
	return true;
}

/* The colon-separated h= list, FWS around each name. */
static int split_colon_list(const char *s, size_t len, char ***items_r, size_t *count_r, size_t max)
{
	char **items = NULL;
	size_t n = 0, cap = 0, i = 0;
	for (;;) {
		i = skip_fws(s, len, i);
		size_t st = i;
		while (i < len && s[i] != ':' && !is_wsp(s[i]) && s[i] != '\r' && s[i] != '\n')
			i++;
		size_t en = i;
		i = skip_fws(s, len, i);
		if (en == st || (i < len && s[i] != ':') || n == max) {
			for (size_t k = 0; k < n; k++)
				free(items[k]);
			free(items);
			return -1;
		}
		items = xgrow(items, &cap, n + 1, sizeof(*items));
		items[n++] = xstrndup(s + st, en - st);
		if (i == len)
			break;
		i++;
	}
	*items_r = items;
	*count_r = n;
	return 0;
}

static bool list_has(const char *s, size_t len, const char *item)
{
	char **items;
	size_t n;
	bool found = false;
	if (split_colon_list(s, len, &items, &n, DKIM_MAX_TAGS) < 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (strcasecmp(items[i], item) == 0)
			found = true;
		free(items[i]);
	}
	free(items);
	return found;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* dkim-quoted-printable (RFC 6376 2.11), FWS dropped. */
static char *qp_decode(const char *s, size_t len)
{
	char *out = xmalloc(len + 1);
	size_t n = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (is_wsp(c) || c == '\r' || c == '\n')
			continue;
		if (c == '=') {
			int h, l;
			if (i + 2 >= len || (h = hexval(s[i + 1])) < 0 ||
			    (l = hexval(s[i + 2])) < 0) {
				free(out);
				return NULL;
			}
			c = (unsigned char)(h * 16 + l);
			i += 2;
			if (c == '\0') {
				free(out);
				return NULL;
			}
		}
		out[n++] = (char)c;
	}
	out[n] = '\0';
	return out;
}

/* d= equals `dom` or `dom` is a subdomain of it, ignoring case. */
static bool domain_within(const char *dom, const char *d)
{
	size_t dl = strlen(dom), l = strlen(d);
	if (dl < l)
		return false;
	if (strcasecmp(dom + dl - l, d) != 0)
		return false;
	return dl == l || dom[dl - l - 1] == '.';
}

void dkim_signature_clear(struct dkim_signature *sig)
{
	free(sig->domain);
	free(sig->selector);
	free(sig->identity);
	for (size_t i = 0; i < sig->header_count; i++)
		free(sig->headers[i]);
	free(sig->headers);
	free(sig->bh);
	free(sig->b);
	free(sig->b_text);
	memset(sig, 0, sizeof(*sig));
}

static int sig_fail(struct dkim_signature *sig, const char *msg, const char **error_r)
{
	dkim_signature_clear(sig);
	*error_r = msg;
	return -1;
}

/* RFC 6376 3.5 */
int dkim_signature_parse(const char *value, size_t len, time_t now, struct dkim_signature *sig,
                         const char **error_r)
{
	struct dkim_taglist *tl = xmalloc(sizeof(*tl));
	const struct dkim_tag *t;
	const char *err;
	int ret = -1;

	memset(sig, 0, sizeof(*sig));
	if (len > DKIM_MAX_SIG_BYTES) {
		free(tl);
		*error_r = "signature too long";
		return -1;
	}
	if (dkim_taglist_parse(value, len, tl, &err) < 0) {
		free(tl);
		*error_r = err;
		return -1;
	}
#define FAIL(m)                                                                                    \
	do {                                                                                       \
		sig_fail(sig, m, error_r);                                                         \
		goto out;                                                                          \
	} while (0)
	if ((t = dkim_taglist_get(tl, "v")) == NULL)
		FAIL("missing v= tag");
	if (!tag_is(t, "1"))
		FAIL("unsupported version (v=)");
	if ((t = dkim_taglist_get(tl, "a")) == NULL)
		FAIL("missing a= tag");
	if (tag_is(t, "rsa-sha256"))
		sig->alg = DKIM_ALG_RSA_SHA256;
	else if (tag_is(t, "ed25519-sha256"))
		sig->alg = DKIM_ALG_ED25519_SHA256;
	else if (tag_is(t, "rsa-sha1"))
		sig->alg = DKIM_ALG_RSA_SHA1;
	else
		FAIL("unsupported algorithm (a=)");
	if ((t = dkim_taglist_get(tl, "b")) == NULL)
		FAIL("missing b= tag");
	if (b64_fws(t->value, t->value_len, &sig->b, &sig->b_len, &sig->b_text) < 0 ||
	    sig->b_len == 0)
		FAIL("bad b= value");
	sig->b_value_off = t->value_off;
	sig->b_value_end = t->end_off;
	if ((t = dkim_taglist_get(tl, "bh")) == NULL)
		FAIL("missing bh= tag");
	if (b64_fws(t->value, t->value_len, &sig->bh, &sig->bh_len, NULL) < 0 || sig->bh_len == 0)
		FAIL("bad bh= value");
	sig->header_canon = sig->body_canon = DKIM_CANON_SIMPLE;
	if ((t = dkim_taglist_get(tl, "c")) != NULL) {
		const char *slash = memchr(t->value, '/', t->value_len);
		size_t hl = slash ? (size_t)(slash - t->value) : t->value_len;
		for (int part = 0; part < (slash != NULL ? 2 : 1); part++) {
			const char *p = part == 0 ? t->value : slash + 1;
			size_t pl = part == 0 ? hl : t->value_len - hl - 1;
			enum dkim_canon c;
			if (pl == 6 && strncasecmp(p, "simple", 6) == 0)
				c = DKIM_CANON_SIMPLE;
			else if (pl == 7 && strncasecmp(p, "relaxed", 7) == 0)
				c = DKIM_CANON_RELAXED;
			else
				FAIL("unsupported canonicalization (c=)");
			if (part == 0)
				sig->header_canon = c;
			else
				sig->body_canon = c;
		}
	}
	if ((t = dkim_taglist_get(tl, "d")) == NULL)
		FAIL("missing d= tag");
	if (!valid_domain(t->value, t->value_len))
		FAIL("bad d= domain");
	sig->domain = str_lower(xstrndup(t->value, t->value_len));
	if ((t = dkim_taglist_get(tl, "h")) == NULL)
		FAIL("missing h= tag");
	if (split_colon_list(t->value, t->value_len, &sig->headers, &sig->header_count,
	                     DKIM_MAX_H_ENTRIES) < 0)
		FAIL("bad h= list");
	bool from = false;
	for (size_t i = 0; i < sig->header_count; i++)
		if (strcasecmp(sig->headers[i], "from") == 0)
			from = true;
	if (!from)
		FAIL("From is not signed (h=)");
	if ((t = dkim_taglist_get(tl, "i")) != NULL) {
		sig->identity = qp_decode(t->value, t->value_len);
		if (sig->identity == NULL)
			FAIL("bad i= value");
		const char *at = strrchr(sig->identity, '@');
		if (at == NULL || !domain_within(at + 1, sig->domain))
			FAIL("i= is not within d=");
	} else {
		sig->identity = xasprintf("@%s", sig->domain);
	}
	if ((t = dkim_taglist_get(tl, "l")) != NULL) {
		if (parse_num(t, &sig->l) < 0)
			FAIL("bad l= value");
		sig->has_l = true;
	}
	if ((t = dkim_taglist_get(tl, "q")) != NULL) {
		if (!list_has(t->value, t->value_len, "dns/txt"))
			FAIL("unsupported query method (q=)");
	}
	if ((t = dkim_taglist_get(tl, "s")) == NULL)
		FAIL("missing s= tag");
	if (!valid_domain(t->value, t->value_len))
		FAIL("bad s= selector");
	sig->selector = xstrndup(t->value, t->value_len);
	if ((t = dkim_taglist_get(tl, "t")) != NULL) {
		if (parse_num(t, &sig->t) < 0)
			FAIL("bad t= value");
		sig->has_t = true;
	}
	if ((t = dkim_taglist_get(tl, "x")) != NULL) {
		if (parse_num(t, &sig->x) < 0)
			FAIL("bad x= value");
		sig->has_x = true;
		if (sig->has_t && sig->x < sig->t)
			FAIL("x= is before t=");
		if (now != 0 && sig->x < (uint64_t)now)
			FAIL("signature expired (x=)");
	}
	ret = 0;
#undef FAIL
out:
	free(tl);
	return ret;
}

void dkim_key_clear(struct dkim_key *key)
{
	free(key->g);
	free(key->p);
	memset(key, 0, sizeof(*key));
}

/* RFC 6376 3.6.1 */
int dkim_key_parse(const char *rec, size_t len, struct dkim_key *key, const char **error_r)
{
	struct dkim_taglist *tl = xmalloc(sizeof(*tl));
	const struct dkim_tag *t;
	const char *err;
	int ret = -1;

	memset(key, 0, sizeof(*key));
	if (len > DKIM_MAX_KEY_BYTES) {
		*error_r = "key record too long";
		goto out;
	}
	if (dkim_taglist_parse(rec, len, tl, &err) < 0) {
		*error_r = err;
		goto out;
	}
#define FAIL(m)                                                                                    \
	do {                                                                                       \
		dkim_key_clear(key);                                                               \
		*error_r = m;                                                                      \
		goto out;                                                                          \
	} while (0)
	if ((t = dkim_taglist_get(tl, "v")) != NULL) {
		if (t != &tl->tags[0] || !tag_is(t, "DKIM1"))
			FAIL("unsupported key record version (v=)");
	}
	key->type = DKIM_KEY_RSA;
	if ((t = dkim_taglist_get(tl, "k")) != NULL) {
		if (tag_is(t, "rsa"))
			key->type = DKIM_KEY_RSA;
		else if (tag_is(t, "ed25519"))
			key->type = DKIM_KEY_ED25519;
		else
			FAIL("unsupported key type (k=)");
	}
	key->hash_sha1 = key->hash_sha256 = true;
	if ((t = dkim_taglist_get(tl, "h")) != NULL) {
		key->hash_sha1 = list_has(t->value, t->value_len, "sha1");
		key->hash_sha256 = list_has(t->value, t->value_len, "sha256");
	}
	if ((t = dkim_taglist_get(tl, "s")) != NULL) {
		if (!list_has(t->value, t->value_len, "*") &&
		    !list_has(t->value, t->value_len, "email"))
			FAIL("key not for email (s=)");
	}
	if ((t = dkim_taglist_get(tl, "t")) != NULL) {
		char **flags;
		size_t n;
		if (split_colon_list(t->value, t->value_len, &flags, &n, DKIM_MAX_TAGS) < 0)
			FAIL("bad t= flags");
		for (size_t i = 0; i < n; i++) {
			if (strcmp(flags[i], "y") == 0)
				key->testing = true;
			else if (strcmp(flags[i], "s") == 0)
				key->strict = true;
			free(flags[i]); /* unknown flags are ignored */
		}
		free(flags);
	}
	if ((t = dkim_taglist_get(tl, "g")) != NULL) {
		key->has_g = true;
		key->g = xstrndup(t->value, t->value_len);
	}
	if ((t = dkim_taglist_get(tl, "p")) == NULL)
		FAIL("missing p= tag");
	if (t->value_len == 0) {
		key->revoked = true;
	} else if (b64_fws(t->value, t->value_len, &key->p, &key->p_len, NULL) < 0) {
		FAIL("bad p= value");
	}
	ret = 0;
#undef FAIL
out:
	free(tl);
	return ret;
}

void dkim_txt_add(struct dkim_txt *out, const char *data, size_t len)
{
	size_t cap = out->cap;
	out->records = xgrow(out->records, &cap, out->count + 1, sizeof(*out->records));
	cap = out->cap;
	out->lens = xgrow(out->lens, &cap, out->count + 1, sizeof(*out->lens));
	out->cap = cap;
	out->records[out->count] = xstrndup(data, len);
	out->lens[out->count] = len;
	out->count++;
}

void dkim_txt_clear(struct dkim_txt *out)
{
	for (size_t i = 0; i < out->count; i++)
		free(out->records[i]);
	free(out->records);
	free(out->lens);
	memset(out, 0, sizeof(*out));
}

/* ---- canonicalization ---- */

void dkim_body_canon_init(struct dkim_body_canon *bc, enum dkim_canon canon,
                          void (*emit)(void *ctx, const char *data, size_t len), void *ctx)
{
	memset(bc, 0, sizeof(*bc));
	bc->canon = canon;
	bc->emit = emit;
	bc->ctx = ctx;
}

struct obuf {
	char buf[4096];
	size_t n;
	struct dkim_body_canon *bc;
};

static void ob_put(struct obuf *o, char c)
{
	if (o->n == sizeof(o->buf)) {
		o->bc->emit(o->bc->ctx, o->buf, o->n);
		o->n = 0;
	}
	o->buf[o->n++] = c;
}

static void ob_flush(struct obuf *o)
{
	if (o->n > 0)
		o->bc->emit(o->bc->ctx, o->buf, o->n);
	o->n = 0;
}

static void body_data(struct dkim_body_canon *bc, struct obuf *o, char c)
{
	for (; bc->pending_crlf > 0; bc->pending_crlf--) {
		ob_put(o, '\r');
		ob_put(o, '\n');
	}
	if (bc->pending_wsp) {
		ob_put(o, ' ');
		bc->pending_wsp = false;
	}
	ob_put(o, c);
	bc->emitted = true;
}

static void body_eol(struct dkim_body_canon *bc)
{
	bc->pending_wsp = false; /* relaxed: trailing WSP dropped */
	bc->pending_crlf++;
}

/* RFC 6376 3.4.3 and 3.4.4 */
void dkim_body_canon_push(struct dkim_body_canon *bc, const char *data, size_t len)
{
	struct obuf *o = xmalloc(sizeof(*o));
	o->n = 0;
	o->bc = bc;
	for (size_t i = 0; i < len; i++) {
		char c = data[i];
		if (bc->pending_cr) {
			bc->pending_cr = false;
			if (c == '\n') {
				body_eol(bc);
				continue;
			}
			body_data(bc, o, '\r');
		}
		if (c == '\r') {
			bc->pending_cr = true;
		} else if (c == '\n') {
			body_eol(bc);
		} else if (bc->canon == DKIM_CANON_RELAXED && is_wsp(c)) {
			bc->pending_wsp = true;
		} else {
			body_data(bc, o, c);
		}
	}
	ob_flush(o);
	free(o);
}

void dkim_body_canon_finish(struct dkim_body_canon *bc)
{
	struct obuf *o = xmalloc(sizeof(*o));
	o->n = 0;
	o->bc = bc;
	if (bc->pending_cr) {
		bc->pending_cr = false;
		body_data(bc, o, '\r');
	}
	if (bc->emitted || bc->canon == DKIM_CANON_SIMPLE) {
		/* simple: an empty body is one CRLF; otherwise end with exactly one CRLF */
		ob_put(o, '\r');
		ob_put(o, '\n');
	}
	bc->pending_crlf = 0;
	bc->pending_wsp = false;
	ob_flush(o);
	free(o);
}

static void out_put(char **out, size_t *len, size_t *cap, const char *s, size_t n)
{
	*out = xgrow(*out, cap, *len + n + 1, 1);
	memcpy(*out + *len, s, n);
	*len += n;
	(*out)[*len] = '\0';
}

/* RFC 6376 3.4.1 and 3.4.2 */
void dkim_header_canon(enum dkim_canon canon, const char *field, size_t len, bool crlf, char **out,
                       size_t *out_len, size_t *out_cap)
{
	if (canon == DKIM_CANON_SIMPLE) {
		out_put(out, out_len, out_cap, field, len);
	} else {
		const char *colon = memchr(field, ':', len);
		size_t nl = colon ? (size_t)(colon - field) : len;
		size_t ne = nl;
		while (ne > 0 &&
		       (is_wsp(field[ne - 1]) || field[ne - 1] == '\r' || field[ne - 1] == '\n'))
			ne--;
		*out = xgrow(*out, out_cap, *out_len + len + 4, 1);
		char *p = *out + *out_len;
		for (size_t i = 0; i < ne; i++)
			*p++ = (char)tolower((unsigned char)field[i]);
		if (colon != NULL) {
			*p++ = ':';
			bool wsp = false, any = false;
			for (size_t i = nl + 1; i < len; i++) {
				char c = field[i];
				if (c == '\r' || c == '\n')
					continue; /* unfold */
				if (is_wsp(c)) {
					wsp = true;
					continue;
				}
				if (wsp && any)
					*p++ = ' ';
				wsp = false;
				any = true;
				*p++ = c;
			}
		}
		*out_len = (size_t)(p - *out);
		(*out)[*out_len] = '\0';
	}
	if (crlf)
		out_put(out, out_len, out_cap, "\r\n", 2);
}

/* ---- the message splitter shared by verifier and signer ---- */

void dkim_msg_init(struct dkim_msg *m)
{
	memset(m, 0, sizeof(*m));
	m->line_start = true;
}

void dkim_msg_clear(struct dkim_msg *m)
{
	free(m->hdr);
	free(m->fields);
	memset(m, 0, sizeof(*m));
}

static void hdr_put(struct dkim_msg *m, const char *s, size_t n)
{
	if (m->overflow)
		return;
	if (m->hdr_len + n > DKIM_MAX_HEADER_BYTES) {
		m->overflow = true;
		return;
	}
	m->hdr = xgrow(m->hdr, &m->hdr_cap, m->hdr_len + n + 1, 1);
	memcpy(m->hdr + m->hdr_len, s, n);
	m->hdr_len += n;
	m->hdr[m->hdr_len] = '\0';
}

/* Split the buffered header section into fields. */
static void split_fields(struct dkim_msg *m)
{
	size_t i = 0, cap = 0;
	m->nfields = 0;
	while (i < m->hdr_len) {
		/* one line ends at CRLF (the buffer is normalised) */
		const char *nl = memchr(m->hdr + i, '\n', m->hdr_len - i);
		size_t le = nl ? (size_t)(nl - m->hdr) + 1 : m->hdr_len;
		if (is_wsp(m->hdr[i]) && m->nfields > 0) {
			struct dkim_field *f = &m->fields[m->nfields - 1];
			f->len = le - f->off;
		} else {
			if (m->nfields == DKIM_MAX_HEADER_FIELDS) {
				m->overflow = true;
				return;
			}
			m->fields = xgrow(m->fields, &cap, m->nfields + 1, sizeof(*m->fields));
			struct dkim_field *f = &m->fields[m->nfields++];
			f->off = i;
			f->len = le - i;
			const char *colon = memchr(m->hdr + i, ':', le - i);
			size_t n = colon ? (size_t)(colon - (m->hdr + i)) : 0;
			while (n > 0 && is_wsp(m->hdr[i + n - 1]))
				n--;
			f->name_len = n; /* 0: not a field (no colon), never selected */
		}
		i = le;
	}
	/* drop the CRLF ending each field */
	for (size_t k = 0; k < m->nfields; k++) {
		struct dkim_field *f = &m->fields[k];
		if (f->len >= 2 && m->hdr[f->off + f->len - 1] == '\n' &&
		    m->hdr[f->off + f->len - 2] == '\r')
			f->len -= 2;
	}
}

size_t dkim_msg_push(struct dkim_msg *m, const char *data, size_t len)
{
	size_t i = 0;
	while (i < len && !m->in_body) {
		char c = data[i++];
		if (m->pending_cr) {
			m->pending_cr = false;
			if (c != '\n') {
				hdr_put(m, "\r", 1);
				m->line_start = false;
			}
		}
		if (c == '\r') {
			m->pending_cr = true;
		} else if (c == '\n') {
			if (m->line_start) {
				m->in_body = true;
				split_fields(m);
			} else {
				hdr_put(m, "\r\n", 2);
				m->line_start = true;
			}
		} else {
			hdr_put(m, &c, 1);
			m->line_start = false;
		}
	}
	return i;
}

void dkim_msg_end_headers(struct dkim_msg *m)
{
	if (m->in_body)
		return;
	if (m->pending_cr)
		hdr_put(m, "\r", 1);
	m->pending_cr = false;
	if (!m->line_start)
		hdr_put(m, "\r\n", 2);
	m->in_body = true;
	split_fields(m);
}

bool dkim_field_is(const struct dkim_msg *m, const struct dkim_field *f, const char *name)
{
	size_t n = strlen(name);
	return f->name_len == n && strncasecmp(m->hdr + f->off, name, n) == 0;
}

/*
 * MIME header values: Content-Type style "type/subtype; name=value" syntax
 * (RFC 2045 5.1), RFC 2231 parameter continuations and charsets, RFC 2047
 * encoded-words, and charset conversion to UTF-8 through iconv.
 *
 * Input is untrusted header text; every loop is bounded by its length and
 * every decoder is best effort: it never fails, it replaces what it cannot
 * decode.
 */
#include "mail/address.h"
#include "mail/mime.h"

#include "lib/xalloc.h"

#include <errno.h>
#include <iconv.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A growing byte string. */
struct sbuf {
	char *s;
	size_t len, cap;
};

static void sb_add(struct sbuf *b, const void *data, size_t n)
{
	b->s = xgrow(b->s, &b->cap, b->len + n + 1, 1);
	memcpy(b->s + b->len, data, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static void sb_addc(struct sbuf *b, char c)
{
	sb_add(b, &c, 1);
}

/* Converter output: a NUL would cut the C string, so it becomes U+FFFD. */
static void sb_add_nonul(struct sbuf *b, const char *data, size_t n)
{
	size_t start = 0;
	for (size_t i = 0; i < n; i++) {
		if (data[i] == '\0') {
			sb_add(b, data + start, i - start);
			sb_add(b, "\xef\xbf\xbd", 3);
			start = i + 1;
		}
	}
	sb_add(b, data + start, n - start);
}

static char *sb_take(struct sbuf *b)
{
	if (b->s == NULL)
		return xstrdup("");
	char *s = b->s;
	b->s = NULL;
	return s;
}

/* ---- tokenizer (RFC 5322 3.2.2 CFWS, RFC 2045 5.1 token) ---- */

struct tok {
	const char *s, *end;
};

static void skip_cfws(struct tok *t)
{
	while (t->s < t->end) {
		char c = *t->s;
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			t->s++;
		} else if (c == '(') {
			/* comments nest (RFC 5322 3.2.2); an unclosed one runs to the end */
			unsigned depth = 0;
			while (t->s < t->end) {
				c = *t->s++;
				if (c == '\\' && t->s < t->end)
					t->s++;
				else if (c == '(')
					depth++;
				else if (c == ')' && --depth == 0)
					break;
			}
		} else {
			break;
		}
	}
}

static bool is_tspecial(char c)
{
	return strchr("()<>@,;:\\\"/[]?=", c) != NULL;
}

static bool is_token_char(unsigned char c)
{
	return c > ' ' && c != 0x7f && !is_tspecial((char)c);
}

static char *read_token(struct tok *t)
{
	const char *start = t->s;
	while (t->s < t->end && is_token_char((unsigned char)*t->s))
		t->s++;
	if (t->s == start)
		return NULL;
	return xstrndup(start, t->s - start);
}

/* Quoted string at t->s (which is '"'); NULL if unterminated. */
static char *read_quoted(struct tok *t)
{
	struct sbuf b = {0};
	bool closed = false;
	t->s++;
	while (t->s < t->end) {
		char c = *t->s++;
		if (c == '"') {
			closed = true;
			break;
		}
		if (c == '\\' && t->s < t->end)
			c = *t->s++;
		if (c == '\r' || c == '\n')
			continue; /* folding inside the string */
		sb_addc(&b, c);
	}
	if (!closed) {
		free(b.s);
		return NULL;
	}
	return sb_take(&b);
}

/* A parameter value: quoted-string, or (leniently) anything up to ';' or
   whitespace, as real mail has unquoted "=" and "/" in boundaries. */
static char *read_value(struct tok *t)
{
	if (t->s < t->end && *t->s == '"')
		return read_quoted(t);
	const char *start = t->s;
	while (t->s < t->end && *t->s != ';' && *t->s != ' ' && *t->s != '\t' && *t->s != '\r' &&
	       *t->s != '\n' && *t->s != '"' && *t->s != '(')
		t->s++;
	return xstrndup(start, t->s - start);
}

/* ---- RFC 2231 continuations ---- */

struct raw_param {
	char *name; /* base name */
	char *value;
	int section;   /* -1 when there is no *N */
	bool extended; /* trailing '*' */
};

static int cmp_base(const void *a, const void *b)
{
	const struct raw_param *x = a, *y = b;
	int r = strcmp(x->name, y->name);
	if (r != 0)
		return r;
	return x->section < y->section ? -1 : x->section > y->section;
}

/*
 * Like Dovecot: plain parameters first, in their order; then the RFC 2231
 * ones (anything with a '*'), merged per name and sorted by name.
 */
static void merge_params(struct raw_param *raw, unsigned nraw, unsigned max,
                         struct mime_param **out, unsigned *nout)
{
	struct mime_param *res = NULL;
	size_t cap = 0;
	unsigned n = 0, next = 0;
	for (unsigned i = 0; i < nraw; i++) {
		if (raw[i].section == -1 && !raw[i].extended) {
			if (n < max) {
				res = xgrow(res, &cap, n + 1, sizeof(*res));
				res[n].name = xstrdup(raw[i].name);
				res[n].value = xstrdup(raw[i].value);
				n++;
			}
		} else {
			if (raw[i].section == -1)
				raw[i].section = 0; /* "name*" is one encoded section */
			struct raw_param t = raw[next];
			raw[next] = raw[i];
			raw[i] = t;
			next++;
		}
	}
	struct raw_param *ext = raw;
	unsigned next_n = next;
	if (next_n > 1)
		qsort(ext, next_n, sizeof(*ext), cmp_base);
	for (unsigned i = 0; i < next_n && n < max;) {
		unsigned j = i;
		bool any_ext = false;
		while (j < next_n && strcmp(ext[j].name, ext[i].name) == 0) {
			any_ext |= ext[j].extended;
			j++;
		}
		/* RFC 2231 3: sections 0, 1, ... in order; stop at a gap or repeat */
		struct sbuf v = {0};
		if (any_ext && !(ext[i].section == 0 && ext[i].extended))
			sb_add(&v, "''", 2);
		int want = 0;
		for (unsigned k = i; k < j && ext[k].section == want; k++, want++) {
			const char *val = ext[k].value;
			if (any_ext && !ext[k].extended) {
				/* keep the merged value decodable: escape what %XX decoding would
				 * touch */
				for (const char *c = val; *c != '\0'; c++) {
					if (*c == '%')
						sb_add(&v, "%25", 3);
					else
						sb_addc(&v, *c);
				}
			} else {
				sb_add(&v, val, strlen(val));
			}
		}
		res = xgrow(res, &cap, n + 1, sizeof(*res));
		res[n].name = any_ext ? xasprintf("%s*", ext[i].name) : xstrdup(ext[i].name);
		res[n].value = sb_take(&v);
		n++;
		i = j;
	}
	*out = res;
	*nout = n;
}

bool mime_parse_content_value(const char *value, size_t len, bool with_subtype, unsigned max_params,
                              char **type_r, char **subtype_r, struct mime_param **params_r,
                              unsigned *nparams_r)
{
	struct tok t = {value, value + len};
	bool ok = true;
	*type_r = NULL;
	*subtype_r = NULL;
	*params_r = NULL;
	*nparams_r = 0;

	skip_cfws(&t);
	char *type = read_token(&t);
	char *subtype = NULL;
	if (type == NULL) {
		ok = false;
	} else if (with_subtype) {
		skip_cfws(&t);
		if (t.s < t.end && *t.s == '/') {
			t.s++;
			skip_cfws(&t);
			subtype = read_token(&t);
		}
		if (subtype == NULL)
			ok = false;
	}
	if (ok) {
		*type_r = type;
		*subtype_r = subtype;
	} else {
		free(type);
		free(subtype);
	}
	if (max_params == 0)
		return ok;

	struct raw_param *raw = NULL;
	size_t cap = 0;
	unsigned nraw = 0;
	/* parameters: *(";" name "=" value); junk up to the next ';' is skipped */
	while (t.s < t.end && nraw < max_params) {
		skip_cfws(&t);
		if (t.s >= t.end)
			break;
		if (*t.s != ';') {
			/* Dovecot stops at garbage after the type */
			break;
		}
		t.s++;
		skip_cfws(&t);
		char *name = read_token(&t);
		if (name == NULL)
			continue;
		skip_cfws(&t);
		if (t.s >= t.end || *t.s != '=') {
			free(name);
			continue;
		}
		t.s++;
		skip_cfws(&t);
		char *val = read_value(&t);
		if (val == NULL) {
			free(name);
			break; /* unterminated quoted string: Dovecot drops it */
		}
		raw = xgrow(raw, &cap, nraw + 1, sizeof(*raw));
		struct raw_param *r = &raw[nraw++];
		r->value = val;
		r->section = -1;
		r->extended = false;
		size_t nl = strlen(name);
		if (nl > 1 && name[nl - 1] == '*') {
			r->extended = true;
			name[--nl] = '\0';
		}
		char *star = strrchr(name, '*');
		if (star != NULL && star[1] != '\0' &&
		    strspn(star + 1, "0123456789") == strlen(star + 1) && strlen(star + 1) <= 4 &&
		    star != name) {
			r->section = atoi(star + 1);
			*star = '\0';
		} else if (r->extended && star == NULL) {
			r->section = -1;
		}
		r->name = name;
	}
	merge_params(raw, nraw, max_params, params_r, nparams_r);
	for (unsigned i = 0; i < nraw; i++) {
		free(raw[i].name);
		free(raw[i].value);
	}
	free(raw);
	return ok;
}

/* ---- charsets ---- */

static void add_replacement(struct sbuf *b)
{
	sb_add(b, "\xef\xbf\xbd", 3);
}

static void latin1_to_utf8(struct sbuf *b, const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\0') {
			add_replacement(b);
		} else if (s[i] < 0x80) {
			sb_addc(b, (char)s[i]);
		} else {
			sb_addc(b, (char)(0xc0 | (s[i] >> 6)));
			sb_addc(b, (char)(0x80 | (s[i] & 0x3f)));
		}
	}
}

/* Valid UTF-8 passes as is (NUL replaced); otherwise as ISO-8859-1. */
static void raw_to_utf8(struct sbuf *b, const unsigned char *s, size_t n)
{
	if (utf8_valid(s, n))
		sb_add_nonul(b, (const char *)s, n);
	else
		latin1_to_utf8(b, s, n); /* also replaces NULs */
}

static void convert(struct sbuf *b, const char *charset, const unsigned char *data, size_t len)
{
	char cs[64];
	size_t cl = strcspn(charset, "*"); /* RFC 2231 5: charset*language */
	if (cl >= sizeof(cs) || cl == 0) {
		raw_to_utf8(b, data, len);
		return;
	}
	memcpy(cs, charset, cl);
	cs[cl] = '\0';
	/* 8-bit text labelled us-ascii is common and usually Latin-1 or UTF-8;
	   a declared UTF-8 goes through iconv so that bad bytes become U+FFFD */
	if (strcasecmp(cs, "us-ascii") == 0 || strcasecmp(cs, "ascii") == 0) {
		raw_to_utf8(b, data, len);
		return;
	}
	iconv_t cd = iconv_open("UTF-8", cs);
	if (cd == (iconv_t)-1) {
		raw_to_utf8(b, data, len);
		return;
	}
	char *in = (char *)data;
	size_t inleft = len;
	char out[1024];
	/* each iteration consumes input or produces output; bounded anyway */
	for (size_t guard = 0; inleft > 0 && guard < 4 * len + 16; guard++) {
		char *o = out;
		size_t oleft = sizeof(out);
		size_t r = iconv(cd, &in, &inleft, &o, &oleft);
		sb_add_nonul(b, out, o - out);
		if (r != (size_t)-1)
			break;
		if (errno == E2BIG)
			continue;
		/* EILSEQ or EINVAL (truncated sequence): one replacement, skip a byte */
		add_replacement(b);
		in++;
		inleft--;
		iconv(cd, NULL, NULL, NULL, NULL);
	}
	/* flush shift state */
	char *o = out;
	size_t oleft = sizeof(out);
	iconv(cd, NULL, NULL, &o, &oleft);
	sb_add_nonul(b, out, o - out);
	iconv_close(cd);
}

char *mime_charset_to_utf8(const char *charset, const void *data, size_t len)
{
	struct sbuf b = {0};
	convert(&b, charset, data, len);
	/* NULs from a converter (e.g. UTF-16 input) would cut the C string */
	char *s = sb_take(&b);
	return s;
}

/* ---- RFC 2047 ---- */

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Parse one encoded-word at s (n bytes): "=?" charset "?" enc "?" text "?=".
 * On success return its length and fill the parts.
 */
static size_t encoded_word(const char *s, size_t n, const char **cs, size_t *cslen, char *enc,
                           const char **text, size_t *textlen)
{
	if (n < 8 || s[0] != '=' || s[1] != '?')
		return 0;
	size_t i = 2;
	while (i < n && s[i] != '?' && s[i] != ' ' && s[i] != '\t')
		i++;
	if (i >= n || s[i] != '?' || i == 2)
		return 0;
	*cs = s + 2;
	*cslen = i - 2;
	i++;
	if (i + 2 >= n || s[i + 1] != '?')
		return 0;
	*enc = s[i];
	if (*enc != 'B' && *enc != 'b' && *enc != 'Q' && *enc != 'q')
		return 0;
	i += 2;
	size_t start = i;
	/* RFC 2047 5: the text has no whitespace and no "?" ... but "?=" ends it */
	while (i + 1 < n && !(s[i] == '?' && s[i + 1] == '=')) {
		if (s[i] == ' ' || s[i] == '\t')
			return 0;
		i++;
	}
	if (i + 1 >= n)
		return 0;
	*text = s + start;
	*textlen = i - start;
	return i + 2;
}

static void decode_q(struct sbuf *b, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '_') {
			sb_addc(b, ' ');
		} else if (s[i] == '=' && i + 2 < n && hexval(s[i + 1]) >= 0 &&
		           hexval(s[i + 2]) >= 0) {
			sb_addc(b, (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2])));
			i += 2;
		} else {
			sb_addc(b, s[i]);
		}
	}
}

static void decode_b(struct sbuf *b, const char *s, size_t n)
{
	/* lenient: ignore characters outside the alphabet, decode what is there */
	static const char alpha[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	unsigned acc = 0, bits = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '=')
			break;
		const char *p = memchr(alpha, s[i], 64);
		if (p == NULL || s[i] == '\0')
			continue;
		acc = (acc << 6) | (unsigned)(p - alpha);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			sb_addc(b, (char)((acc >> bits) & 0xff));
		}
	}
}

char *mime_decode_header(const void *value, size_t len)
{
	const char *v = value;
	/* RFC 5322 2.2.3: unfolding removes the CRLF, keeps the whitespace */
	struct sbuf u = {0};
	for (size_t i = 0; i < len; i++) {
		if (v[i] != '\r' && v[i] != '\n')
			sb_addc(&u, v[i]);
	}
	const char *s = u.s != NULL ? u.s : "";
	size_t n = u.len;

	struct sbuf out = {0}, raw = {0}, pend = {0};
	char pend_cs[64] = "";
	bool last_was_word = false;
	size_t i = 0;
	while (i < n) {
		const char *cs, *text;
		size_t cslen, textlen;
		char enc;
		size_t wl = encoded_word(s + i, n - i, &cs, &cslen, &enc, &text, &textlen);
		if (wl > 0) {
			/* RFC 2047 6.2: whitespace between encoded words is dropped */
			if (!last_was_word && raw.len > 0) {
				raw_to_utf8(&out, (const unsigned char *)raw.s, raw.len);
				raw.len = 0;
			}
			raw.len = 0;
			char csbuf[64];
			size_t cl = cslen < sizeof(csbuf) - 1 ? cslen : sizeof(csbuf) - 1;
			memcpy(csbuf, cs, cl);
			csbuf[cl] = '\0';
			if (pend.len > 0 && strcasecmp(csbuf, pend_cs) != 0) {
				convert(&out, pend_cs, (const unsigned char *)pend.s, pend.len);
				pend.len = 0;
			}
			memcpy(pend_cs, csbuf, cl + 1);
			if (enc == 'B' || enc == 'b')
				decode_b(&pend, text, textlen);
			else
				decode_q(&pend, text, textlen);
			i += wl;
			last_was_word = true;
			continue;
		}
		if (s[i] == ' ' || s[i] == '\t') {
			sb_addc(&raw, s[i]);
			i++;
			continue;
		}
		/* ordinary text: flush a pending encoded run, then whitespace */
		if (pend.len > 0) {
			convert(&out, pend_cs, (const unsigned char *)pend.s, pend.len);
			pend.len = 0;
		}
		last_was_word = false;
		size_t j = i;
		while (j < n && s[j] != ' ' && s[j] != '\t' &&
		       !(s[j] == '=' && j + 1 < n && s[j + 1] == '?'))
			j++;
		if (j == i)
			j++; /* a lone "=?" that is not an encoded word */
		sb_add(&raw, s + i, j - i);
		raw_to_utf8(&out, (const unsigned char *)raw.s, raw.len);
		raw.len = 0;
		i = j;
	}
	if (pend.len > 0)
		convert(&out, pend_cs, (const unsigned char *)pend.s, pend.len);
	if (raw.len > 0)
		raw_to_utf8(&out, (const unsigned char *)raw.s, raw.len);
	free(u.s);
	free(raw.s);
	free(pend.s);
	return sb_take(&out);
}

char *mime_decode_param(const char *name, const char *value)
{
	size_t nl = strlen(name);
	if (nl == 0 || name[nl - 1] != '*')
		return mime_charset_to_utf8("utf-8", value, strlen(value));
	/* RFC 2231 4: charset'language'%XX-encoded */
	const char *q1 = strchr(value, '\'');
	const char *q2 = q1 != NULL ? strchr(q1 + 1, '\'') : NULL;
	char cs[64] = "";
	const char *text = value;
	if (q1 != NULL && q2 != NULL) {
		size_t cl = q1 - value;
		if (cl < sizeof(cs)) {
			memcpy(cs, value, cl);
			cs[cl] = '\0';
		}
		text = q2 + 1;
	}
	struct sbuf raw = {0};
	size_t tl = strlen(text);
	for (size_t i = 0; i < tl; i++) {
		if (text[i] == '%' && i + 2 < tl && hexval(text[i + 1]) >= 0 &&
		    hexval(text[i + 2]) >= 0) {
			sb_addc(&raw, (char)(hexval(text[i + 1]) * 16 + hexval(text[i + 2])));
			i += 2;
		} else {
			sb_addc(&raw, text[i]);
		}
	}
	struct sbuf out = {0};
	convert(&out, cs[0] != '\0' ? cs : "us-ascii", (const unsigned char *)(raw.s ? raw.s : ""),
	        raw.len);
	free(raw.s);
	return sb_take(&out);
}

/*
 * SPF check_host() (RFC 7208).
 *
 * What it trusts: nothing it reads from DNS. Records are parsed in full
 * before evaluation (a syntax error anywhere is a permerror, 4.6), every
 * expansion is bounded, and the DNS work of one check is bounded by the
 * RFC 4.6.4 limits plus SPF_MAX_DEPTH and a cap on queries.
 *
 * Evaluation is a recursive function over a blocking resolver interface
 * (see spf.h for why). One struct eval carries the counters shared by the
 * whole check, include and redirect included.
 */
#include "mail/spf.h"

#include "lib/xalloc.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

/* Belt and braces on top of the RFC limits: 10 DNS terms of at most 11
   queries each, the record lookups, %{p} and exp= stay far below this. */
#define SPF_MAX_QUERIES 200

const char *spf_result_name(enum spf_result r)
{
	switch (r) {
	case SPF_NONE:
		return "none";
	case SPF_NEUTRAL:
		return "neutral";
	case SPF_PASS:
		return "pass";
	case SPF_FAIL:
		return "fail";
	case SPF_SOFTFAIL:
		return "softfail";
	case SPF_TEMPERROR:
		return "temperror";
	case SPF_PERMERROR:
		return "permerror";
	}
	return "permerror";
}

static bool is_alpha(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(int c)
{
	return c >= '0' && c <= '9';
}

static bool is_alnum(int c)
{
	return is_alpha(c) || is_digit(c);
}

static int lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

/* ---- DNS answers ---- */

static struct spf_rr *answer_new(struct spf_answer *a, size_t bytes)
{
	if (a->count >= SPF_MAX_ANSWER_RR || bytes > SPF_MAX_ANSWER_BYTES - a->bytes) {
		a->overflow = true;
		return NULL;
	}
	a->rrs = xgrow(a->rrs, &a->cap, a->count + 1, sizeof(*a->rrs));
	struct spf_rr *rr = &a->rrs[a->count++];
	memset(rr, 0, sizeof(*rr));
	a->bytes += bytes;
	return rr;
}

void spf_answer_add_addr(struct spf_answer *a, const unsigned char *addr, size_t addr_len)
{
	if (addr_len != 4 && addr_len != 16)
		return;
	struct spf_rr *rr = answer_new(a, addr_len);
	if (rr == NULL)
		return;
	memcpy(rr->addr, addr, addr_len);
	rr->len = addr_len;
}

void spf_answer_add_name(struct spf_answer *a, const char *name)
{
	size_t n = strlen(name);
	if (n > 0 && name[n - 1] == '.')
		n--;
	struct spf_rr *rr = answer_new(a, n + 1);
	if (rr == NULL)
		return;
	rr->data = xstrndup(name, n);
	rr->len = n;
}

void spf_answer_add_txt(struct spf_answer *a, const char *const *strings, const size_t *lens,
			size_t n)
{
	size_t total = 0;
	for (size_t i = 0; i < n; i++) {
		if (lens[i] > SPF_MAX_ANSWER_BYTES) {
			a->overflow = true;
			return;
		}
		total += lens[i];
		if (total > SPF_MAX_ANSWER_BYTES) {
			a->overflow = true;
			return;
		}
	}
	struct spf_rr *rr = answer_new(a, total + 1);
	if (rr == NULL)
		return;
	rr->data = xmalloc(total + 1);
	size_t off = 0;
	for (size_t i = 0; i < n; i++) {
		memcpy(rr->data + off, strings[i], lens[i]);
		off += lens[i];
	}
	rr->data[off] = '\0';
	rr->len = total;
}

void spf_answer_clear(struct spf_answer *a)
{
	for (size_t i = 0; i < a->count; i++)
		free(a->rrs[i].data);
	free(a->rrs);
	memset(a, 0, sizeof(*a));
}

/* ---- bounded string builder ---- */

struct sbuf {
	char *s;
	size_t len, cap, max;
	bool over;
};

static void sb_putn(struct sbuf *b, const char *p, size_t n)
{
	if (b->over)
		return;
	if (n > b->max - b->len) {
		b->over = true;
		return;
	}
	b->s = xgrow(b->s, &b->cap, b->len + n + 1, 1);
	memcpy(b->s + b->len, p, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static void sb_putc(struct sbuf *b, char c)
{
	sb_putn(b, &c, 1);
}

/* ---- record syntax (RFC 7208 4.6.1, 5, 6, 7.1, 12) ---- */

enum term_kind {
	T_ALL,
	T_INCLUDE,
	T_A,
	T_MX,
	T_PTR,
	T_IP4,
	T_IP6,
	T_EXISTS,
	T_REDIRECT,
	T_EXP,
	T_UNKNOWN_MOD,
};

struct spf_term {
	enum term_kind kind;
	char qualifier;   /* '+', '-', '~', '?' */
	char *text;       /* the term as written */
	char *spec;       /* domain-spec, NULL if none */
	unsigned cidr4;   /* a, mx, ip4 */
	unsigned cidr6;   /* a, mx, ip6 */
	unsigned char net[16];
};

struct spf_record {
	struct spf_term *terms;
	size_t count, cap;
	int redirect; /* index or -1 */
	int exp;      /* index or -1 */
};

static const struct {
	const char *name;
	enum term_kind kind;
} mechanisms[] = {
	{"all", T_ALL}, {"include", T_INCLUDE}, {"a", T_A},	  {"mx", T_MX},
	{"ptr", T_PTR}, {"ip4", T_IP4},		{"ip6", T_IP6}, {"exists", T_EXISTS},
};

/* delimiter = "." / "-" / "+" / "," / "/" / "_" / "=" */
static bool is_delim(int c)
{
	return c != '\0' && strchr(".-+,/_=", c) != NULL;
}

static bool is_macro_letter(int c, bool explain)
{
	c = lower(c);
	if (c != '\0' && strchr("slodipvh", c) != NULL)
		return true;
	return explain && c != '\0' && strchr("crt", c) != NULL;
}

/*
 * Check a macro-string (or with `explain` an explain-string). On success
 * *lit_r is the offset where the final run of literal characters starts
 * (== len when the string ends with a macro-expand).
 */
static int check_macro_string(const char *s, size_t len, bool explain, size_t *lit_r,
			      const char **error_r)
{
	size_t lit = 0;
	for (size_t i = 0; i < len;) {
		unsigned char c = (unsigned char)s[i];
		if (c != '%') {
			/* macro-literal = %x21-24 / %x26-7E; explain-string adds SP */
			if (c > 0x7e || c < 0x20 || (c == ' ' && !explain)) {
				*error_r = "invalid character in macro-string";
				return -1;
			}
			i++;
			continue;
		}
		if (i + 1 >= len) {
			*error_r = "'%' at end of macro-string";
			return -1;
		}
		char c2 = s[i + 1];
		if (c2 == '%' || c2 == '_' || c2 == '-') {
			i += 2;
			lit = i;
			continue;
		}
		if (c2 != '{') {
			*error_r = "'%' not followed by '{', '%', '_' or '-'";
			return -1;
		}
		size_t j = i + 2;
		if (j >= len || !is_macro_letter(s[j], explain)) {
			*error_r = "invalid macro letter";
			return -1;
		}
		j++;
		size_t digits = 0;
		unsigned long value = 0;
		while (j < len && is_digit(s[j])) {
			if (value < 100000)
				value = value * 10 + (unsigned long)(s[j] - '0');
			digits++;
			j++;
		}
		if (digits > 0 && value == 0) {
			/* RFC 7208 7.3: the DIGIT transformer MUST be nonzero */
			*error_r = "macro transformer of zero parts";
			return -1;
		}
		if (j < len && (s[j] == 'r' || s[j] == 'R'))
			j++;
		while (j < len && is_delim(s[j]))
			j++;
		if (j >= len || s[j] != '}') {
			*error_r = "unterminated or malformed macro";
			return -1;
		}
		i = j + 1;
		lit = i;
	}
	*lit_r = lit;
	return 0;
}

/*
 * toplabel = ( *alphanum ALPHA *alphanum ) /
 *            ( 1*alphanum "-" *( alphanum / "-" ) alphanum )
 */
static bool toplabel_ok(const char *s, size_t n)
{
	if (n == 0)
		return false;
	bool alpha = false, dash = false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '-')
			dash = true;
		else if (is_alpha(s[i]))
			alpha = true;
		else if (!is_digit(s[i]))
			return false;
	}
	if (dash)
		return s[0] != '-' && s[n - 1] != '-';
	return alpha;
}

/* domain-spec = macro-string domain-end
   domain-end  = ( "." toplabel [ "." ] ) / macro-expand */
static int check_domain_spec(const char *s, size_t len, const char **error_r)
{
	size_t lit;
	if (len == 0) {
		*error_r = "empty domain-spec";
		return -1;
	}
	if (check_macro_string(s, len, false, &lit, error_r) < 0)
		return -1;
	if (lit == len)
		return 0; /* ends with a macro-expand */
	size_t end = len;
	if (s[end - 1] == '.')
		end--;
	size_t dot = end;
	while (dot > lit && s[dot - 1] != '.')
		dot--;
	if (dot == lit || !toplabel_ok(s + dot, end - dot)) {
		*error_r = "domain-spec does not end in a valid top label";
		return -1;
	}
	return 0;
}

/* 1*DIGIT without leading zeros, at most `max`. */
static int parse_prefix(const char *s, size_t n, unsigned max, unsigned *v_r)
{
	if (n == 0 || n > 3 || (n > 1 && s[0] == '0'))
		return -1;
	unsigned v = 0;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit(s[i]))
			return -1;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > max)
		return -1;
	*v_r = v;
	return 0;
}

/* ip4-network = qnum "." qnum "." qnum "." qnum; qnum without leading zeros */
static int parse_ip4(const char *s, size_t n, unsigned char out[4])
{
	size_t i = 0;
	for (int part = 0; part < 4; part++) {
		size_t start = i;
		while (i < n && is_digit(s[i]))
			i++;
		unsigned v;
		if (parse_prefix(s + start, i - start, 255, &v) < 0)
			return -1;
		out[part] = (unsigned char)v;
		if (part < 3) {
			if (i >= n || s[i] != '.')
				return -1;
			i++;
		}
	}
	return i == n ? 0 : -1;
}

static int parse_ip6(const char *s, size_t n, unsigned char out[16])
{
	char buf[INET6_ADDRSTRLEN + 1];
	if (n == 0 || n >= sizeof(buf))
		return -1;
	memcpy(buf, s, n);
	buf[n] = '\0';
	return inet_pton(AF_INET6, buf, out) == 1 ? 0 : -1;
}

/*
 * dual-cidr-length = [ ip4-cidr-length ] [ "/" ip6-cidr-length ], taken off
 * the end of `s`; *spec_len_r is what is left before it.
 */
static int split_dual_cidr(const char *s, size_t n, size_t *spec_len_r, unsigned *c4,
			   unsigned *c6)
{
	size_t end = n, d = n;
	while (d > 0 && is_digit(s[d - 1]))
		d--;
	if (d < end && d >= 2 && s[d - 1] == '/' && s[d - 2] == '/') {
		if (parse_prefix(s + d, end - d, 128, c6) < 0)
			return -1;
		end = d - 2;
		d = end;
		while (d > 0 && is_digit(s[d - 1]))
			d--;
	}
	if (d < end && d >= 1 && s[d - 1] == '/') {
		if (parse_prefix(s + d, end - d, 32, c4) < 0)
			return -1;
		end = d - 1;
	}
	*spec_len_r = end;
	return 0;
}

static void term_free(struct spf_term *t)
{
	free(t->text);
	free(t->spec);
}

void spf_record_free(struct spf_record **rec)
{
	if (*rec == NULL)
		return;
	for (size_t i = 0; i < (*rec)->count; i++)
		term_free(&(*rec)->terms[i]);
	free((*rec)->terms);
	xfree(rec);
}

static int parse_term(const char *s, size_t n, struct spf_term *t, const char **error_r)
{
	size_t i = 0;
	bool qualified = false;
	memset(t, 0, sizeof(*t));
	t->qualifier = '+';
	t->cidr4 = 32;
	t->cidr6 = 128;
	if (n > 0 && strchr("+-~?", s[0]) != NULL) {
		t->qualifier = s[0];
		qualified = true;
		i = 1;
	}
	size_t name = i;
	while (i < n && (is_alnum(s[i]) || s[i] == '-' || s[i] == '_' || s[i] == '.'))
		i++;
	size_t name_len = i - name;

	if (i < n && s[i] == '=') {
		/* modifier = redirect / explanation / unknown-modifier */
		const char *val = s + i + 1;
		size_t vlen = n - i - 1, lit;
		if (qualified) {
			*error_r = "qualifier on a modifier";
			return -1;
		}
		if (name_len == 0 || !is_alpha(s[name])) {
			*error_r = "invalid modifier name";
			return -1;
		}
		if (name_len == 8 && strncasecmp(s + name, "redirect", 8) == 0)
			t->kind = T_REDIRECT;
		else if (name_len == 3 && strncasecmp(s + name, "exp", 3) == 0)
			t->kind = T_EXP;
		else
			t->kind = T_UNKNOWN_MOD;
		if (t->kind == T_UNKNOWN_MOD) {
			if (check_macro_string(val, vlen, false, &lit, error_r) < 0)
				return -1;
		} else {
			if (check_domain_spec(val, vlen, error_r) < 0)
				return -1;
			t->spec = xstrndup(val, vlen);
		}
		t->text = xstrndup(s, n);
		return 0;
	}

	size_t k;
	for (k = 0; k < ARRAY_SIZE(mechanisms); k++) {
		if (strlen(mechanisms[k].name) == name_len &&
		    strncasecmp(s + name, mechanisms[k].name, name_len) == 0)
			break;
	}
	if (k == ARRAY_SIZE(mechanisms)) {
		*error_r = "unknown mechanism";
		return -1;
	}
	t->kind = mechanisms[k].kind;
	const char *rest = s + i;
	size_t rlen = n - i;
	bool colon = rlen > 0 && rest[0] == ':';
	const char *arg = rest + 1;
	size_t alen = rlen > 0 ? rlen - 1 : 0;
	size_t spec_len = 0;

	switch (t->kind) {
	case T_ALL:
		if (rlen != 0)
			goto syntax;
		break;
	case T_INCLUDE:
	case T_EXISTS:
		if (!colon)
			goto syntax;
		if (check_domain_spec(arg, alen, error_r) < 0)
			return -1;
		t->spec = xstrndup(arg, alen);
		break;
	case T_PTR:
		if (rlen == 0)
			break;
		if (!colon)
			goto syntax;
		if (check_domain_spec(arg, alen, error_r) < 0)
			return -1;
		t->spec = xstrndup(arg, alen);
		break;
	case T_A:
	case T_MX:
		if (rlen == 0)
			break;
		if (colon) {
			if (split_dual_cidr(arg, alen, &spec_len, &t->cidr4, &t->cidr6) < 0)
				goto cidr;
			if (check_domain_spec(arg, spec_len, error_r) < 0)
				return -1;
			t->spec = xstrndup(arg, spec_len);
		} else if (rest[0] == '/') {
			if (split_dual_cidr(rest, rlen, &spec_len, &t->cidr4, &t->cidr6) < 0)
				goto cidr;
			if (spec_len != 0)
				goto cidr;
		} else {
			goto syntax;
		}
		break;
	case T_IP4:
	case T_IP6: {
		if (!colon)
			goto syntax;
		size_t slash = 0;
		while (slash < alen && arg[slash] != '/')
			slash++;
		int r = t->kind == T_IP4 ? parse_ip4(arg, slash, t->net) : parse_ip6(arg, slash, t->net);
		if (r < 0) {
			*error_r = "invalid IP address";
			return -1;
		}
		if (slash < alen) {
			unsigned *c = t->kind == T_IP4 ? &t->cidr4 : &t->cidr6;
			if (parse_prefix(arg + slash + 1, alen - slash - 1,
					 t->kind == T_IP4 ? 32 : 128, c) < 0)
				goto cidr;
		}
		break;
	}
	default:
		goto syntax;
	}
	t->text = xstrndup(s, n);
	return 0;
syntax:
	term_free(t);
	*error_r = "mechanism syntax error";
	return -1;
cidr:
	term_free(t);
	*error_r = "invalid CIDR length";
	return -1;
}

bool spf_is_record(const char *txt, size_t len)
{
	/* RFC 7208 4.5: "v=spf1" exactly, then SP or the end; case-insensitive */
	return len >= 6 && strncasecmp(txt, "v=spf1", 6) == 0 && (len == 6 || txt[6] == ' ');
}

int spf_record_parse(const char *txt, size_t len, struct spf_record **rec_r,
		     const char **error_r)
{
	*rec_r = NULL;
	if (len > SPF_MAX_RECORD) {
		*error_r = "SPF record too long";
		return -1;
	}
	if (!spf_is_record(txt, len)) {
		*error_r = "not an SPF record";
		return -1;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)txt[i];
		/* RFC 7208 3.1 (7-bit ASCII), 4.6.1 (terms separated by SP only) */
		if (c < 0x20 || c > 0x7e) {
			*error_r = "control or non-ASCII character in SPF record";
			return -1;
		}
	}
	struct spf_record *rec = xcalloc(1, sizeof(*rec));
	rec->redirect = rec->exp = -1;
	size_t p = 6;
	while (p < len) {
		if (txt[p] == ' ') {
			p++;
			continue;
		}
		size_t q = p;
		while (q < len && txt[q] != ' ')
			q++;
		if (rec->count >= SPF_MAX_TERMS) {
			*error_r = "too many terms in SPF record";
			goto fail;
		}
		struct spf_term t;
		if (parse_term(txt + p, q - p, &t, error_r) < 0)
			goto fail;
		rec->terms = xgrow(rec->terms, &rec->cap, rec->count + 1, sizeof(*rec->terms));
		rec->terms[rec->count] = t;
		int idx = (int)rec->count++;
		if (t.kind == T_REDIRECT) {
			if (rec->redirect >= 0) {
				/* RFC 7208 6: at most once each */
				*error_r = "redirect= given more than once";
				goto fail;
			}
			rec->redirect = idx;
		} else if (t.kind == T_EXP) {
			if (rec->exp >= 0) {
				*error_r = "exp= given more than once";
				goto fail;
			}
			rec->exp = idx;
		}
		p = q;
	}
	*rec_r = rec;
	return 0;
fail:
	spf_record_free(&rec);
	return -1;
}

size_t spf_record_terms(const struct spf_record *rec)
{
	return rec->count;
}

const char *spf_record_term_text(const struct spf_record *rec, size_t i)
{
	return i < rec->count ? rec->terms[i].text : NULL;
}

/* ---- evaluation state ---- */

struct eval {
	const struct spf_resolver *res;
	const struct spf_request *req;
	int family; /* after unmapping IPv4-mapped IPv6 */
	unsigned char ip[16];
	char *sender; /* <sender> with "postmaster" substituted */
	const char *local, *sdomain;
	const char *helo;
	unsigned mech, voids, queries;
	const char *reason;
	char *mechanism;
	bool p_done;
	char **p_names; /* validated names of <ip> for %{p} */
	size_t p_count;
};

static void eval_init(struct eval *ev, const struct spf_resolver *res,
		      const struct spf_request *req, const char *domain)
{
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	memset(ev, 0, sizeof(*ev));
	ev->res = res;
	ev->req = req;
	ev->family = req->family;
	if (req->family == AF_INET6 && memcmp(req->ip, mapped, 12) == 0) {
		ev->family = AF_INET;
		memcpy(ev->ip, req->ip + 12, 4);
	} else if (req->family == AF_INET6) {
		memcpy(ev->ip, req->ip, 16);
	} else {
		ev->family = AF_INET;
		memcpy(ev->ip, req->ip, 4);
	}
	ev->helo = req->helo != NULL ? req->helo : "";

	/* RFC 7208 4.3: no local part means "postmaster" */
	const char *s = req->sender != NULL ? req->sender : "";
	const char *at = strrchr(s, '@');
	const char *dom = at != NULL ? at + 1 : s;
	if (*dom == '\0')
		dom = domain;
	size_t llen = at != NULL ? (size_t)(at - s) : 0;
	if (llen == 0)
		ev->sender = xasprintf("postmaster@%s", dom);
	else
		ev->sender = xasprintf("%.*s@%s", (int)llen, s, dom);
	char *sep = strrchr(ev->sender, '@');
	*sep = '\0';
	ev->local = ev->sender;
	ev->sdomain = sep + 1;
}

static void eval_free(struct eval *ev)
{
	for (size_t i = 0; i < ev->p_count; i++)
		free(ev->p_names[i]);
	free(ev->p_names);
	free(ev->sender);
	free(ev->mechanism);
}

static char *sender_string(const struct eval *ev)
{
	return xasprintf("%s@%s", ev->local, ev->sdomain);
}

static void query(struct eval *ev, enum spf_rrtype type, const char *name, struct spf_answer *a)
{
	memset(a, 0, sizeof(*a));
	a->rcode = SPF_DNS_OK;
	if (ev->res == NULL || ev->queries >= SPF_MAX_QUERIES) {
		a->rcode = SPF_DNS_TEMPFAIL;
		return;
	}
	ev->queries++;
	ev->res->lookup(ev->res->ctx, type, name, a);
	if (a->rcode != SPF_DNS_OK) {
		for (size_t i = 0; i < a->count; i++)
			free(a->rrs[i].data);
		a->count = 0;
	}
}

/*
 * A name we can send as a query: 1..253 octets (a trailing dot removed),
 * labels of 1..63 octets, printable ASCII (SP allowed: macros produce it).
 * With `initial`, RFC 7208 4.3 for the <domain> of check_host(): a
 * multi-label name, not an address literal.
 */
static bool name_ok(const char *name, bool initial)
{
	size_t len = strlen(name);
	if (len > 0 && name[len - 1] == '.')
		len--;
	if (len == 0 || len > 253)
		return false;
	if (initial && name[0] == '[')
		return false;
	size_t label = 0, labels = 1;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
			labels++;
			continue;
		}
		if (c < 0x20 || c > 0x7e || (initial && c == ' '))
			return false;
		if (++label > 63)
			return false;
	}
	if (label == 0)
		return false;
	return !initial || labels >= 2;
}

/* Copy of `name` without a trailing dot. */
static char *query_name(const char *name)
{
	size_t len = strlen(name);
	if (len > 0 && name[len - 1] == '.')
		len--;
	return xstrndup(name, len);
}

static bool addr_match(const unsigned char *a, const unsigned char *b, unsigned bits)
{
	size_t full = bits / 8;
	if (memcmp(a, b, full) != 0)
		return false;
	unsigned rem = bits % 8;
	if (rem == 0)
		return true;
	unsigned char mask = (unsigned char)(0xff << (8 - rem));
	return (a[full] & mask) == (b[full] & mask);
}

static void reverse_name(const struct eval *ev, char *buf, size_t size)
{
	static const char hex[] = "0123456789abcdef";
	if (ev->family == AF_INET) {
		snprintf(buf, size, "%u.%u.%u.%u.in-addr.arpa", ev->ip[3], ev->ip[2], ev->ip[1],
			 ev->ip[0]);
		return;
	}
	size_t o = 0;
	for (int i = 15; i >= 0; i--) {
		buf[o++] = hex[ev->ip[i] & 0xf];
		buf[o++] = '.';
		buf[o++] = hex[ev->ip[i] >> 4];
		buf[o++] = '.';
	}
	snprintf(buf + o, size - o, "ip6.arpa");
}

/* True if any A/AAAA record of `name` is <ip> (DNS errors: false). */
static bool name_has_ip(struct eval *ev, const char *name)
{
	struct spf_answer a;
	bool found = false;
	if (!name_ok(name, false))
		return false;
	query(ev, ev->family == AF_INET ? SPF_RR_A : SPF_RR_AAAA, name, &a);
	for (size_t i = 0; i < a.count && !found; i++) {
		size_t alen = ev->family == AF_INET ? 4 : 16;
		if (a.rrs[i].len == alen && memcmp(a.rrs[i].addr, ev->ip, alen) == 0)
			found = true;
	}
	spf_answer_clear(&a);
	return found;
}

/* RFC 7208 5.5 / 7.3: validated names of <ip>, at most SPF_MAX_PTR_NAMES tried. */
static void p_validate(struct eval *ev)
{
	char rev[80];
	struct spf_answer a;
	if (ev->p_done)
		return;
	ev->p_done = true;
	reverse_name(ev, rev, sizeof(rev));
	query(ev, SPF_RR_PTR, rev, &a);
	for (size_t i = 0; i < a.count && i < SPF_MAX_PTR_NAMES; i++) {
		if (a.rrs[i].data == NULL || !name_has_ip(ev, a.rrs[i].data))
			continue;
		ev->p_names = xrealloc(ev->p_names, (ev->p_count + 1) * sizeof(char *));
		ev->p_names[ev->p_count++] = xstrdup(a.rrs[i].data);
	}
	spf_answer_clear(&a);
}

/* `name` equals `domain` or is a subdomain of it (case-insensitive). */
static bool name_within(const char *name, const char *domain)
{
	size_t n = strlen(name), d = strlen(domain);
	if (d > 0 && domain[d - 1] == '.')
		d--;
	if (n > 0 && name[n - 1] == '.')
		n--;
	if (d == 0 || n < d || strncasecmp(name + n - d, domain, d) != 0)
		return false;
	return n == d || name[n - d - 1] == '.';
}

static const char *p_value(struct eval *ev, const char *domain)
{
	p_validate(ev);
	if (ev->p_count == 0)
		return "unknown";
	for (size_t i = 0; i < ev->p_count; i++) {
		if (name_within(ev->p_names[i], domain) &&
		    strlen(ev->p_names[i]) == strlen(domain))
			return ev->p_names[i];
	}
	for (size_t i = 0; i < ev->p_count; i++) {
		if (name_within(ev->p_names[i], domain))
			return ev->p_names[i];
	}
	return ev->p_names[0];
}

/* ---- macro expansion (RFC 7208 7) ---- */

static void macro_value(struct eval *ev, const char *domain, char letter, char *buf, size_t size,
			const char **value_r)
{
	static const char hex[] = "0123456789ABCDEF";
	switch (lower(letter)) {
	case 's':
		*value_r = NULL; /* built by the caller */
		break;
	case 'l':
		*value_r = ev->local;
		break;
	case 'o':
		*value_r = ev->sdomain;
		break;
	case 'd':
		*value_r = domain;
		break;
	case 'i':
		if (ev->family == AF_INET) {
			snprintf(buf, size, "%u.%u.%u.%u", ev->ip[0], ev->ip[1], ev->ip[2],
				 ev->ip[3]);
		} else {
			/* RFC 7208 7.3: dot-format nibbles (example in 7.4) */
			size_t o = 0;
			for (int i = 0; i < 16; i++) {
				buf[o++] = hex[ev->ip[i] >> 4];
				buf[o++] = '.';
				buf[o++] = hex[ev->ip[i] & 0xf];
				buf[o++] = i < 15 ? '.' : '\0';
			}
		}
		*value_r = buf;
		break;
	case 'p':
		*value_r = p_value(ev, domain);
		break;
	case 'v':
		*value_r = ev->family == AF_INET ? "in-addr" : "ip6";
		break;
	case 'h':
		*value_r = ev->helo;
		break;
	case 'c':
		inet_ntop(ev->family, ev->ip, buf, (socklen_t)size);
		*value_r = buf;
		break;
	case 'r':
		*value_r = ev->req->receiver != NULL && ev->req->receiver[0] != '\0'
				   ? ev->req->receiver
				   : "unknown";
		break;
	case 't':
		snprintf(buf, size, "%lld", (long long)ev->req->now);
		*value_r = buf;
		break;
	default:
		*value_r = "";
		break;
	}
}

static bool is_unreserved(int c)
{
	return is_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

/* Split on delimiters, reverse, keep the right-hand parts, join with '.'. */
static void transform(struct sbuf *out, const char *v, size_t parts_keep, bool reverse,
		      const char *delims, size_t ndelims, bool escape)
{
	size_t vlen = strlen(v), n = 0;
	if (vlen > out->max) {
		out->over = true; /* cannot fit: do not even split it */
		return;
	}
	size_t(*parts)[2] = xmalloc((vlen + 1) * sizeof(*parts));
	size_t start = 0;
	for (size_t i = 0; i <= vlen; i++) {
		bool d = false;
		if (i < vlen) {
			if (ndelims == 0)
				d = v[i] == '.';
			else
				d = memchr(delims, v[i], ndelims) != NULL;
		}
		if (i == vlen || d) {
			parts[n][0] = start;
			parts[n][1] = i - start;
			n++;
			start = i + 1;
		}
	}
	if (reverse) {
		for (size_t i = 0; i < n / 2; i++) {
			size_t t0 = parts[i][0], t1 = parts[i][1];
			parts[i][0] = parts[n - 1 - i][0];
			parts[i][1] = parts[n - 1 - i][1];
			parts[n - 1 - i][0] = t0;
			parts[n - 1 - i][1] = t1;
		}
	}
	size_t first = parts_keep > 0 && parts_keep < n ? n - parts_keep : 0;
	for (size_t i = first; i < n && !out->over; i++) {
		if (i > first)
			sb_putc(out, '.');
		const char *p = v + parts[i][0];
		for (size_t j = 0; j < parts[i][1]; j++) {
			unsigned char c = (unsigned char)p[j];
			if (escape && !is_unreserved(c)) {
				char esc[4];
				snprintf(esc, sizeof(esc), "%%%02X", c);
				sb_putn(out, esc, 3);
			} else {
				sb_putc(out, (char)c);
			}
		}
	}
	free(parts);
}

static char *expand(struct eval *ev, const char *domain, const char *s, size_t len, bool explain,
		    const char **error_r)
{
	size_t lit;
	if (check_macro_string(s, len, explain, &lit, error_r) < 0)
		return NULL;
	struct sbuf out = {.max = SPF_MAX_EXPAND};
	sb_putn(&out, "", 0);
	for (size_t i = 0; i < len && !out.over;) {
		if (s[i] != '%') {
			sb_putc(&out, s[i++]);
			continue;
		}
		char c2 = s[i + 1];
		if (c2 == '%' || c2 == '_' || c2 == '-') {
			sb_putn(&out, c2 == '%' ? "%" : c2 == '_' ? " " : "%20", c2 == '-' ? 3 : 1);
			i += 2;
			continue;
		}
		/* "%{" letter digits ["r"] delimiters "}" (syntax checked above) */
		size_t j = i + 2;
		char letter = s[j++];
		size_t keep = 0;
		while (is_digit(s[j])) {
			if (keep < 100000)
				keep = keep * 10 + (size_t)(s[j] - '0');
			j++;
		}
		bool reverse = false;
		if (s[j] == 'r' || s[j] == 'R') {
			reverse = true;
			j++;
		}
		size_t d0 = j;
		while (s[j] != '}')
			j++;
		char buf[128];
		const char *value;
		char *owned = NULL;
		macro_value(ev, domain, letter, buf, sizeof(buf), &value);
		if (value == NULL)
			value = owned = sender_string(ev);
		/* RFC 7208 7.3: an uppercase letter means URL-escape the value */
		transform(&out, value, keep, reverse, s + d0, j - d0,
			  letter >= 'A' && letter <= 'Z');
		free(owned);
		i = j + 1;
	}
	if (out.over) {
		free(out.s);
		*error_r = "macro expansion too long";
		return NULL;
	}
	return out.s;
}

char *spf_macro_expand(const struct spf_resolver *res, const struct spf_request *req,
		       const char *domain, const char *s, size_t len, bool explain,
		       const char **error_r)
{
	struct eval ev;
	eval_init(&ev, res, req, domain);
	char *r = expand(&ev, domain, s, len, explain, error_r);
	eval_free(&ev);
	return r;
}

/*
 * Expand a domain-spec into a name to query (RFC 7208 7.3: more than 253
 * octets loses labels on the left; a trailing dot is dropped). NULL with
 * *error_r if the expansion fails; the result may still be an invalid name.
 */
static char *target_name(struct eval *ev, const char *domain, const char *spec,
			 const char **error_r)
{
	if (spec == NULL)
		return query_name(domain);
	char *x = expand(ev, domain, spec, strlen(spec), false, error_r);
	if (x == NULL)
		return NULL;
	size_t len = strlen(x);
	if (len > 0 && x[len - 1] == '.')
		x[--len] = '\0';
	char *p = x;
	while (len > 253) {
		char *dot = strchr(p, '.');
		if (dot == NULL)
			break;
		len -= (size_t)(dot + 1 - p);
		p = dot + 1;
	}
	if (p != x)
		memmove(x, p, len + 1);
	return x;
}

/* ---- check_host() ---- */

enum match { MATCH, NO_MATCH, TEMP, PERM };

static enum match count_mech(struct eval *ev)
{
	/* RFC 7208 4.6.4: at most 10 terms that cause DNS queries */
	if (++ev->mech > SPF_MAX_DNS_MECH) {
		ev->reason = "more than 10 DNS-querying mechanisms";
		return PERM;
	}
	return NO_MATCH;
}

static enum match count_void(struct eval *ev)
{
	/* RFC 7208 4.6.4: more than 2 void lookups is a permerror */
	if (++ev->voids > SPF_MAX_VOID) {
		ev->reason = "more than 2 void DNS lookups";
		return PERM;
	}
	return NO_MATCH;
}

/* a, mx: any address of `name` within the CIDR. Address errors are temperror. */
static enum match match_addrs(struct eval *ev, const char *name, const struct spf_term *t,
			      bool primary)
{
	struct spf_answer a;
	enum spf_rrtype type = ev->family == AF_INET ? SPF_RR_A : SPF_RR_AAAA;
	size_t alen = ev->family == AF_INET ? 4 : 16;
	unsigned bits = ev->family == AF_INET ? t->cidr4 : t->cidr6;
	enum match m = NO_MATCH;
	query(ev, type, name, &a);
	if (a.rcode == SPF_DNS_TEMPFAIL) {
		ev->reason = "DNS error looking up an address";
		m = TEMP;
	} else if (a.count == 0) {
		if (primary)
			m = count_void(ev);
	} else {
		for (size_t i = 0; i < a.count; i++) {
			if (a.rrs[i].len == alen && addr_match(a.rrs[i].addr, ev->ip, bits)) {
				m = MATCH;
				break;
			}
		}
	}
	spf_answer_clear(&a);
	return m;
}

static enum spf_result check_host(struct eval *ev, const char *domain, unsigned depth,
				  bool want_exp, char **exp_r);

static enum match eval_mx(struct eval *ev, const char *name, const struct spf_term *t)
{
	struct spf_answer mx;
	enum match m = NO_MATCH;
	query(ev, SPF_RR_MX, name, &mx);
	if (mx.rcode == SPF_DNS_TEMPFAIL) {
		ev->reason = "DNS error looking up MX";
		m = TEMP;
	} else if (mx.count == 0) {
		m = count_void(ev);
	} else if (mx.count > SPF_MAX_MX_NAMES || mx.overflow) {
		/* RFC 7208 4.6.4 item 2 */
		ev->reason = "more than 10 MX records";
		m = PERM;
	} else {
		for (size_t i = 0; i < mx.count && m == NO_MATCH; i++) {
			const char *host = mx.rrs[i].data;
			if (host == NULL || host[0] == '\0' || !name_ok(host, false))
				continue; /* null MX (RFC 7505) or unusable name */
			m = match_addrs(ev, host, t, false);
		}
	}
	spf_answer_clear(&mx);
	return m;
}

static enum match eval_ptr(struct eval *ev, const char *target)
{
	char rev[80];
	struct spf_answer a;
	enum match m = NO_MATCH;
	reverse_name(ev, rev, sizeof(rev));
	query(ev, SPF_RR_PTR, rev, &a);
	if (a.rcode == SPF_DNS_TEMPFAIL) {
		/* RFC 7208 5.5: a DNS error on the PTR query is no match */
	} else if (a.count == 0) {
		m = count_void(ev);
	} else {
		/* only the first 10 names (4.6.4 item 3); a name outside the
		   target is not worth its address lookup */
		for (size_t i = 0; i < a.count && i < SPF_MAX_PTR_NAMES; i++) {
			const char *n = a.rrs[i].data;
			if (n == NULL || !name_within(n, target))
				continue;
			if (name_has_ip(ev, n)) {
				m = MATCH;
				break;
			}
		}
	}
	spf_answer_clear(&a);
	return m;
}

static enum match eval_term(struct eval *ev, const struct spf_term *t, const char *domain,
			    unsigned depth)
{
	const char *err = NULL;
	char *name = NULL;
	enum match m = NO_MATCH;

	switch (t->kind) {
	case T_ALL:
		return MATCH;
	case T_IP4:
		return ev->family == AF_INET && addr_match(ev->ip, t->net, t->cidr4) ? MATCH
										       : NO_MATCH;
	case T_IP6:
		return ev->family == AF_INET6 && addr_match(ev->ip, t->net, t->cidr6) ? MATCH
											: NO_MATCH;
	case T_INCLUDE:
	case T_A:
	case T_MX:
	case T_PTR:
	case T_EXISTS:
		break;
	default:
		return NO_MATCH; /* modifiers are not evaluated in order */
	}
	if (count_mech(ev) == PERM)
		return PERM;
	name = target_name(ev, domain, t->spec, &err);
	if (name == NULL) {
		ev->reason = err;
		return PERM;
	}
	if (t->kind == T_INCLUDE) {
		/* RFC 7208 5.2 */
		enum spf_result r = check_host(ev, name, depth + 1, false, NULL);
		switch (r) {
		case SPF_PASS:
			m = MATCH;
			break;
		case SPF_FAIL:
		case SPF_SOFTFAIL:
		case SPF_NEUTRAL:
			m = NO_MATCH;
			break;
		case SPF_TEMPERROR:
			m = TEMP;
			break;
		case SPF_NONE:
			ev->reason = "included domain has no SPF record";
			m = PERM;
			break;
		case SPF_PERMERROR:
			m = PERM;
			break;
		}
		free(name);
		return m;
	}
	if (!name_ok(name, false)) {
		/* An expansion that is no DNS name (empty or long label) matches
		   nothing, by analogy with RFC 7208 4.3 (the RFC leaves it open). */
		free(name);
		return NO_MATCH;
	}
	switch (t->kind) {
	case T_A:
		m = match_addrs(ev, name, t, true);
		break;
	case T_MX:
		m = eval_mx(ev, name, t);
		break;
	case T_PTR:
		m = eval_ptr(ev, name);
		break;
	case T_EXISTS: {
		/* RFC 7208 5.7: always an A query, whatever the connection */
		struct spf_answer a;
		query(ev, SPF_RR_A, name, &a);
		if (a.rcode == SPF_DNS_TEMPFAIL) {
			ev->reason = "DNS error in exists";
			m = TEMP;
		} else if (a.count == 0) {
			m = count_void(ev);
		} else {
			m = MATCH;
		}
		spf_answer_clear(&a);
		break;
	}
	default:
		break;
	}
	free(name);
	return m;
}

/* RFC 7208 6.2: any problem means "no explanation". */
static char *explain(struct eval *ev, const char *domain, const struct spf_term *t)
{
	const char *err;
	struct spf_answer a;
	char *text = NULL;
	char *name = target_name(ev, domain, t->spec, &err);
	if (name == NULL)
		return NULL;
	if (!name_ok(name, false)) {
		free(name);
		return NULL;
	}
	query(ev, SPF_RR_TXT, name, &a);
	free(name);
	if (a.rcode == SPF_DNS_OK && a.count == 1 && !a.overflow &&
	    a.rrs[0].len <= SPF_MAX_EXPLAIN) {
		text = expand(ev, domain, a.rrs[0].data, a.rrs[0].len, true, &err);
		if (text != NULL && strlen(text) > SPF_MAX_EXPLAIN)
			xfree(&text);
	}
	spf_answer_clear(&a);
	return text;
}

static void set_mechanism(struct eval *ev, const char *text)
{
	free(ev->mechanism);
	ev->mechanism = text != NULL ? xstrdup(text) : NULL;
}

static enum spf_result qualifier_result(char q)
{
	switch (q) {
	case '-':
		return SPF_FAIL;
	case '~':
		return SPF_SOFTFAIL;
	case '?':
		return SPF_NEUTRAL;
	default:
		return SPF_PASS;
	}
}

static enum spf_result check_host(struct eval *ev, const char *domain, unsigned depth,
				  bool want_exp, char **exp_r)
{
	struct spf_answer a;
	struct spf_record *rec = NULL;
	const char *err;
	const struct spf_rr *found = NULL;
	enum spf_result result;

	if (depth > SPF_MAX_DEPTH) {
		ev->reason = "include/redirect nested too deeply";
		return SPF_PERMERROR;
	}
	/* RFC 7208 4.3 */
	if (!name_ok(domain, true)) {
		ev->reason = "malformed domain";
		return SPF_NONE;
	}
	char *qname = query_name(domain);
	query(ev, SPF_RR_TXT, qname, &a);
	free(qname);
	if (a.rcode == SPF_DNS_TEMPFAIL) {
		ev->reason = "DNS error looking up the SPF record";
		spf_answer_clear(&a);
		return SPF_TEMPERROR;
	}
	/* RFC 7208 4.5: exactly one record that starts "v=spf1" */
	size_t n = 0;
	for (size_t i = 0; i < a.count; i++) {
		if (spf_is_record(a.rrs[i].data, a.rrs[i].len)) {
			found = &a.rrs[i];
			n++;
		}
	}
	if (n > 1 || (a.overflow && n > 0)) {
		ev->reason = "more than one SPF record";
		spf_answer_clear(&a);
		return SPF_PERMERROR;
	}
	if (n == 0) {
		ev->reason = a.rcode == SPF_DNS_NXDOMAIN ? "no such domain" : "no SPF record";
		spf_answer_clear(&a);
		return SPF_NONE;
	}
	if (spf_record_parse(found->data, found->len, &rec, &err) < 0) {
		ev->reason = err;
		spf_answer_clear(&a);
		return SPF_PERMERROR;
	}
	spf_answer_clear(&a);

	/* RFC 7208 4.6.2: mechanisms left to right */
	for (size_t i = 0; i < rec->count; i++) {
		const struct spf_term *t = &rec->terms[i];
		enum match m = eval_term(ev, t, domain, depth);
		if (m == NO_MATCH)
			continue;
		set_mechanism(ev, t->text);
		if (m == TEMP) {
			result = SPF_TEMPERROR;
			goto out;
		}
		if (m == PERM) {
			result = SPF_PERMERROR;
			goto out;
		}
		result = qualifier_result(t->qualifier);
		ev->reason = NULL;
		if (result == SPF_FAIL && want_exp && rec->exp >= 0)
			*exp_r = explain(ev, domain, &rec->terms[rec->exp]);
		goto out;
	}

	if (rec->redirect >= 0) {
		/* RFC 7208 6.1: the result is that of the target; exp= of this
		   record is not used */
		const struct spf_term *t = &rec->terms[rec->redirect];
		set_mechanism(ev, t->text);
		if (count_mech(ev) == PERM) {
			result = SPF_PERMERROR;
			goto out;
		}
		char *name = target_name(ev, domain, t->spec, &err);
		if (name == NULL) {
			ev->reason = err;
			result = SPF_PERMERROR;
			goto out;
		}
		result = check_host(ev, name, depth + 1, want_exp, exp_r);
		free(name);
		if (result == SPF_NONE) {
			set_mechanism(ev, t->text);
			ev->reason = "redirect target has no SPF record";
			result = SPF_PERMERROR;
		}
		goto out;
	}
	/* RFC 7208 4.7 */
	set_mechanism(ev, NULL);
	ev->reason = "no mechanism matched";
	result = SPF_NEUTRAL;
out:
	spf_record_free(&rec);
	return result;
}

enum spf_result spf_check_host(const struct spf_resolver *res, const struct spf_request *req,
			       const char *domain, struct spf_outcome *out)
{
	struct eval ev;
	char *exp = NULL;
	memset(out, 0, sizeof(*out));
	eval_init(&ev, res, req, domain);
	out->result = check_host(&ev, domain, 0, true, &exp);
	if (out->result == SPF_FAIL)
		out->explanation = exp;
	else
		free(exp);
	out->mechanism = ev.mechanism;
	ev.mechanism = NULL;
	out->reason = ev.reason;
	out->dns_mechanisms = ev.mech;
	out->void_lookups = ev.voids;
	out->queries = ev.queries;
	eval_free(&ev);
	return out->result;
}

enum spf_result spf_check_mailfrom(const struct spf_resolver *res, const struct spf_request *req,
				   const char *mailfrom, struct spf_outcome *out)
{
	struct spf_request r = *req;
	if (mailfrom == NULL || mailfrom[0] == '\0' || strcmp(mailfrom, "<>") == 0)
		return spf_check_helo(res, req, out);
	const char *at = strrchr(mailfrom, '@');
	r.sender = mailfrom;
	return spf_check_host(res, &r, at != NULL ? at + 1 : mailfrom, out);
}

enum spf_result spf_check_helo(const struct spf_resolver *res, const struct spf_request *req,
			       struct spf_outcome *out)
{
	struct spf_request r = *req;
	const char *helo = req->helo != NULL ? req->helo : "";
	char *sender = xasprintf("postmaster@%s", helo);
	r.sender = sender;
	enum spf_result result = spf_check_host(res, &r, helo, out);
	free(sender);
	return result;
}

void spf_outcome_free(struct spf_outcome *out)
{
	xfree(&out->explanation);
	xfree(&out->mechanism);
}

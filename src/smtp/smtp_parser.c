/*
 * SMTP command line parser (see smtp_parser.h). Untrusted input: lengths
 * are explicit, nothing relies on NUL termination, every field is bounded.
 */
#include "smtp/smtp_parser.h"

#include <string.h>
#include <strings.h>

static const struct {
	const char *name;
	enum smtp_verb verb;
} verbs[] = {
	{"HELO", SMTP_HELO}, {"EHLO", SMTP_EHLO}, {"MAIL", SMTP_MAIL},
	{"RCPT", SMTP_RCPT}, {"DATA", SMTP_DATA}, {"BDAT", SMTP_BDAT},
	{"RSET", SMTP_RSET}, {"NOOP", SMTP_NOOP}, {"QUIT", SMTP_QUIT},
	{"VRFY", SMTP_VRFY}, {"EXPN", SMTP_EXPN}, {"HELP", SMTP_HELP},
	{"STARTTLS", SMTP_STARTTLS}, {"AUTH", SMTP_AUTH},
};

const char *smtp_verb_name(enum smtp_verb verb)
{
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (verbs[i].verb == verb)
			return verbs[i].name;
	return "?";
}

int smtp_command_parse(const char *line, size_t len, struct smtp_command *cmd_r)
{
	if (len == 0 || memchr(line, '\0', len) != NULL)
		return -1;
	size_t vlen = 0;
	while (vlen < len && line[vlen] != ' ')
		vlen++;
	cmd_r->verb = SMTP_UNKNOWN;
	cmd_r->arg = line + len;
	cmd_r->arg_len = 0;
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		if (strlen(verbs[i].name) == vlen && strncasecmp(line, verbs[i].name, vlen) == 0) {
			cmd_r->verb = verbs[i].verb;
			break;
		}
	}
	if (cmd_r->verb == SMTP_UNKNOWN)
		return 0;
	size_t pos = vlen;
	if (cmd_r->verb == SMTP_MAIL || cmd_r->verb == SMTP_RCPT) {
		const char *kw = cmd_r->verb == SMTP_MAIL ? " FROM:" : " TO:";
		size_t kwlen = strlen(kw);
		if (len - pos < kwlen || strncasecmp(line + pos, kw, kwlen) != 0)
			return -1;
		pos += kwlen;
		/* tolerate the common "MAIL FROM: <a@b>" */
		if (pos < len && line[pos] == ' ')
			pos++;
	} else if (pos < len) {
		pos++; /* the SP */
	}
	cmd_r->arg = line + pos;
	cmd_r->arg_len = len - pos;
	return 0;
}

bool smtp_xtext_valid(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '+') {
			if (len - i < 3)
				return false;
			for (int k = 1; k <= 2; k++) {
				unsigned char h = (unsigned char)s[i + k];
				if (!((h >= '0' && h <= '9') || (h >= 'A' && h <= 'F')))
					return false;
			}
			i += 2;
		} else if (ch < 33 || ch > 126 || ch == '=') {
			return false;
		}
	}
	return true;
}

static void set_err(struct smtp_error *e, int code, const char *enhanced, const char *text)
{
	e->code = code;
	e->enhanced = enhanced;
	e->text = text;
}

/* One esmtp-param: keyword ["=" value]. */
struct param {
	const char *key, *value;
	size_t key_len, value_len;
	bool has_value;
};

/*
 * Walk SP-separated parameters starting at *pos. Returns 1 with a param,
 * 0 at the end, -1 on bad syntax.
 */
static int next_param(const char *s, size_t len, size_t *pos, struct param *p)
{
	size_t i = *pos;
	if (i >= len)
		return 0;
	if (s[i] != ' ')
		return -1;
	while (i < len && s[i] == ' ')
		i++;
	if (i >= len)
		return 0; /* trailing spaces */
	size_t start = i;
	while (i < len && s[i] != ' ')
		i++;
	const char *tok = s + start;
	size_t tlen = i - start;
	const char *eq = memchr(tok, '=', tlen);
	p->key = tok;
	p->key_len = eq != NULL ? (size_t)(eq - tok) : tlen;
	p->has_value = eq != NULL;
	p->value = eq != NULL ? eq + 1 : tok + tlen;
	p->value_len = eq != NULL ? tlen - p->key_len - 1 : 0;
	/* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
	if (p->key_len == 0)
		return -1;
	for (size_t k = 0; k < p->key_len; k++) {
		char c = p->key[k];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			  (c == '-' && k > 0);
		if (!ok)
			return -1;
	}
	/* esmtp-value = 1*(%d33-60 / %d62-126) */
	if (p->has_value) {
		if (p->value_len == 0)
			return -1;
		for (size_t k = 0; k < p->value_len; k++) {
			unsigned char c = (unsigned char)p->value[k];
			if (c < 33 || c > 126 || c == '=')
				return -1;
		}
	}
	*pos = i;
	return 1;
}

static bool key_is(const struct param *p, const char *name)
{
	return strlen(name) == p->key_len && strncasecmp(p->key, name, p->key_len) == 0;
}

static bool value_is(const struct param *p, const char *v)
{
	return strlen(v) == p->value_len && strncasecmp(p->value, v, p->value_len) == 0;
}

/* Locate the end of the path: the first '>' outside a quoted string. */
static size_t path_end(const char *s, size_t len)
{
	bool quoted = false;
	for (size_t i = 0; i < len; i++) {
		if (quoted && s[i] == '\\') {
			i++;
			continue;
		}
		if (s[i] == '"')
			quoted = !quoted;
		else if (s[i] == '>' && !quoted)
			return i + 1;
	}
	return len;
}

int smtp_parse_mail(const char *arg, size_t len, bool allow_utf8, struct smtp_mail_args *a,
		    struct smtp_error *err_r)
{
	memset(a, 0, sizeof(*a));
	size_t plen = path_end(arg, len);
	size_t pos = plen;
	struct param p;
	int r;
	enum { P_SIZE = 1, P_BODY = 2, P_UTF8 = 4, P_RET = 8, P_ENVID = 16, P_AUTH = 32 };
	unsigned seen = 0;
	while ((r = next_param(arg, len, &pos, &p)) > 0) {
		unsigned bit;
		if (key_is(&p, "SIZE")) {
			bit = P_SIZE;
			/* RFC 1870: size-value = 1*20DIGIT */
			if (!p.has_value || p.value_len > 20)
				goto bad_value;
			uint64_t v = 0;
			for (size_t k = 0; k < p.value_len; k++) {
				if (p.value[k] < '0' || p.value[k] > '9')
					goto bad_value;
				unsigned d = (unsigned)(p.value[k] - '0');
				if (v > (UINT64_MAX - d) / 10)
					v = UINT64_MAX;
				else
					v = v * 10 + d;
			}
			a->has_size = true;
			a->size = v;
		} else if (key_is(&p, "BODY")) {
			bit = P_BODY;
			if (value_is(&p, "7BIT"))
				a->body = SMTP_BODY_7BIT;
			else if (value_is(&p, "8BITMIME"))
				a->body = SMTP_BODY_8BITMIME;
			else if (value_is(&p, "BINARYMIME"))
				a->body = SMTP_BODY_BINARYMIME;
			else
				goto bad_value;
		} else if (key_is(&p, "SMTPUTF8")) {
			bit = P_UTF8;
			if (p.has_value || !allow_utf8)
				goto unknown;
			a->smtputf8 = true;
		} else if (key_is(&p, "RET")) {
			bit = P_RET;
			if (value_is(&p, "FULL"))
				memcpy(a->ret, "FULL", 5);
			else if (value_is(&p, "HDRS"))
				memcpy(a->ret, "HDRS", 5);
			else
				goto bad_value;
		} else if (key_is(&p, "ENVID")) {
			bit = P_ENVID;
			if (!p.has_value || p.value_len > SMTP_DSN_ENVID_MAX ||
			    !smtp_xtext_valid(p.value, p.value_len))
				goto bad_value;
			memcpy(a->envid, p.value, p.value_len);
			a->envid[p.value_len] = '\0';
		} else if (key_is(&p, "AUTH")) {
			/* RFC 4954 5: AUTH=<> or an xtext addr-spec */
			bit = P_AUTH;
			if (!p.has_value || p.value_len > SMTP_AUTH_PARAM_MAX ||
			    !smtp_xtext_valid(p.value, p.value_len))
				goto bad_value;
			memcpy(a->auth, p.value, p.value_len);
			a->auth[p.value_len] = '\0';
		} else {
			goto unknown;
		}
		if (seen & bit)
			goto unknown;
		seen |= bit;
	}
	if (r < 0) {
		set_err(err_r, 501, "5.5.4", "Syntax error in parameters");
		return -1;
	}
	unsigned opts = ADDRESS_ALLOW_NULL | (a->smtputf8 ? ADDRESS_ALLOW_UTF8 : 0);
	size_t used;
	const char *why;
	if (address_parse_path(arg, plen, opts, &a->addr, &used, &why) < 0 || used != plen) {
		set_err(err_r, 501, "5.1.7", "Bad sender address syntax");
		return -1;
	}
	return 0;
bad_value:
	set_err(err_r, 501, "5.5.4", "Invalid parameter value");
	return -1;
unknown:
	set_err(err_r, 555, "5.5.4", "Unsupported or duplicate parameter");
	return -1;
}

int smtp_parse_rcpt(const char *arg, size_t len, bool utf8, struct smtp_rcpt_args *a,
		    struct smtp_error *err_r)
{
	memset(a, 0, sizeof(*a));
	size_t plen = path_end(arg, len);
	size_t pos = plen;
	struct param p;
	int r;
	bool seen_notify = false, seen_orcpt = false;
	while ((r = next_param(arg, len, &pos, &p)) > 0) {
		if (key_is(&p, "NOTIFY")) {
			if (seen_notify || !p.has_value)
				goto unknown_or_bad;
			seen_notify = true;
			/* RFC 3461 4.1: "NEVER" / 1#("SUCCESS" / "FAILURE" / "DELAY") */
			size_t k = 0;
			while (k < p.value_len) {
				size_t e = k;
				while (e < p.value_len && p.value[e] != ',')
					e++;
				struct param item = {.value = p.value + k, .value_len = e - k};
				unsigned bit;
				if (value_is(&item, "NEVER"))
					bit = SMTP_NOTIFY_NEVER;
				else if (value_is(&item, "SUCCESS"))
					bit = SMTP_NOTIFY_SUCCESS;
				else if (value_is(&item, "FAILURE"))
					bit = SMTP_NOTIFY_FAILURE;
				else if (value_is(&item, "DELAY"))
					bit = SMTP_NOTIFY_DELAY;
				else
					goto bad_value;
				if (a->notify & bit)
					goto bad_value;
				a->notify |= bit;
				k = e + 1;
				if (e + 1 == p.value_len)
					goto bad_value; /* trailing comma */
			}
			if ((a->notify & SMTP_NOTIFY_NEVER) && a->notify != SMTP_NOTIFY_NEVER)
				goto bad_value;
		} else if (key_is(&p, "ORCPT")) {
			if (seen_orcpt || !p.has_value)
				goto unknown_or_bad;
			seen_orcpt = true;
			/* RFC 3461 4.2: addr-type ";" xtext */
			const char *semi = memchr(p.value, ';', p.value_len);
			if (semi == NULL || semi == p.value || p.value_len > SMTP_DSN_ORCPT_MAX)
				goto bad_value;
			for (const char *q = p.value; q < semi; q++) {
				char c = *q;
				if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
				      (c >= '0' && c <= '9') || c == '-'))
					goto bad_value;
			}
			size_t xl = p.value_len - (size_t)(semi + 1 - p.value);
			if (xl == 0 || !smtp_xtext_valid(semi + 1, xl))
				goto bad_value;
			memcpy(a->orcpt, p.value, p.value_len);
			a->orcpt[p.value_len] = '\0';
		} else {
			goto unknown;
		}
	}
	if (r < 0) {
		set_err(err_r, 501, "5.5.4", "Syntax error in parameters");
		return -1;
	}
	unsigned opts = ADDRESS_ALLOW_POSTMASTER | (utf8 ? ADDRESS_ALLOW_UTF8 : 0);
	size_t used;
	const char *why;
	if (address_parse_path(arg, plen, opts, &a->addr, &used, &why) < 0 || used != plen) {
		set_err(err_r, 501, "5.1.3", "Bad recipient address syntax");
		return -1;
	}
	return 0;
unknown_or_bad:
	if (!p.has_value)
		goto bad_value;
unknown:
	set_err(err_r, 555, "5.5.4", "Unsupported or duplicate parameter");
	return -1;
bad_value:
	set_err(err_r, 501, "5.5.4", "Invalid parameter value");
	return -1;
}

int smtp_parse_bdat(const char *arg, size_t len, uint64_t *size_r, bool *last_r)
{
	size_t i = 0;
	uint64_t v = 0;
	if (len == 0)
		return -1;
	while (i < len && arg[i] >= '0' && arg[i] <= '9') {
		unsigned d = (unsigned)(arg[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
		i++;
	}
	if (i == 0 || i > 20)
		return -1;
	*last_r = false;
	if (i < len) {
		if (arg[i] != ' ')
			return -1;
		while (i < len && arg[i] == ' ')
			i++;
		if (len - i == 4 && strncasecmp(arg + i, "LAST", 4) == 0)
			*last_r = true;
		else if (len - i != 0)
			return -1;
	}
	*size_r = v;
	return 0;
}

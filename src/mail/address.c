/*
 * RFC 5321 4.1.2 Path / Mailbox parser (see address.h). Input is untrusted
 * network data: every index is checked against `len`, every copy against
 * the fixed-size fields of struct address.
 */
#include "mail/address.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

struct cursor {
	const unsigned char *s;
	size_t len, pos;
	unsigned options;
};

static int peek(const struct cursor *c)
{
	return c->pos < c->len ? c->s[c->pos] : -1;
}

static bool is_alpha(int ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

static bool is_digit(int ch)
{
	return ch >= '0' && ch <= '9';
}

/* RFC 5322 atext */
static bool is_atext(int ch)
{
	return is_alpha(ch) || is_digit(ch) || (ch > 0 && ch < 0x80 && strchr("!#$%&'*+-/=?^_`{|}~", ch) != NULL);
}

/* Length of one UTF-8 sequence at s (0 if invalid). */
static size_t utf8_seq(const unsigned char *s, size_t len)
{
	unsigned char c = s[0];
	size_t n;
	unsigned cp;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	if (len < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

bool utf8_valid(const unsigned char *s, size_t len)
{
	size_t i = 0;
	while (i < len) {
		size_t n = utf8_seq(s + i, len - i);
		if (n == 0)
			return false;
		i += n;
	}
	return true;
}

/* Consume one UTF-8 non-ASCII character if allowed; returns its length or 0. */
static size_t take_utf8(struct cursor *c, unsigned *flags)
{
	if (!(c->options & ADDRESS_ALLOW_UTF8) || c->pos >= c->len || c->s[c->pos] < 0x80)
		return 0;
	size_t n = utf8_seq(c->s + c->pos, c->len - c->pos);
	if (n > 0) {
		c->pos += n;
		*flags |= ADDRESS_UTF8;
	}
	return n;
}

/*
 * RFC 5321 Domain = sub-domain *("." sub-domain); sub-domain = Let-dig
 * [Ldh-str]; with SMTPUTF8 also U-labels (RFC 6531 3.3). Or an
 * address-literal. Copies the lowercased text into out.
 */
static int parse_domain(struct cursor *c, char *out, unsigned *flags, const char **error_r)
{
	size_t start = c->pos;
	if (peek(c) == '[') {
		c->pos++;
		size_t inner = c->pos;
		while (c->pos < c->len && c->s[c->pos] != ']') {
			int ch = c->s[c->pos];
			/* dcontent: %d33-90 / %d94-126 */
			if (ch < 33 || ch > 126 || ch == '[' || ch == '\\') {
				*error_r = "bad character in address literal";
				return -1;
			}
			c->pos++;
		}
		if (peek(c) != ']') {
			*error_r = "unterminated address literal";
			return -1;
		}
		size_t ilen = c->pos - inner;
		c->pos++;
		char tmp[ADDRESS_DOMAIN_MAX + 1];
		if (ilen == 0 || ilen > ADDRESS_DOMAIN_MAX - 2) {
			*error_r = "bad address literal";
			return -1;
		}
		memcpy(tmp, c->s + inner, ilen);
		tmp[ilen] = '\0';
		unsigned char bin[16];
		if (strncasecmp(tmp, "IPv6:", 5) == 0) {
			if (inet_pton(AF_INET6, tmp + 5, bin) != 1) {
				*error_r = "bad IPv6 address literal";
				return -1;
			}
		} else if (is_digit((unsigned char)tmp[0])) {
			if (inet_pton(AF_INET, tmp, bin) != 1) {
				*error_r = "bad IPv4 address literal";
				return -1;
			}
		} else {
			/* General-address-literal = Standardized-tag ":" 1*dcontent */
			char *colon = strchr(tmp, ':');
			if (colon == NULL || colon == tmp || colon[1] == '\0') {
				*error_r = "bad address literal";
				return -1;
			}
			for (char *p = tmp; p < colon; p++)
				if (!is_alpha((unsigned char)*p) && !is_digit((unsigned char)*p) &&
				    *p != '-') {
					*error_r = "bad address literal tag";
					return -1;
				}
		}
		*flags |= ADDRESS_LITERAL;
	} else {
		for (;;) {
			/* one label */
			size_t lstart = c->pos;
			int last = -1;
			for (;;) {
				int ch = peek(c);
				if (is_alpha(ch) || is_digit(ch) || ch == '-') {
					if (ch == '-' && c->pos == lstart) {
						*error_r = "domain label starts with '-'";
						return -1;
					}
					last = ch;
					c->pos++;
				} else if (ch >= 0x80 && take_utf8(c, flags) > 0) {
					last = 0x80;
				} else {
					break;
				}
			}
			if (c->pos == lstart) {
				*error_r = "empty domain label";
				return -1;
			}
			if (last == '-') {
				*error_r = "domain label ends with '-'";
				return -1;
			}
			if (c->pos - lstart > 63) {
				*error_r = "domain label too long";
				return -1;
			}
			if (peek(c) != '.')
				break;
			c->pos++;
		}
	}
	size_t dlen = c->pos - start;
	if (dlen > ADDRESS_DOMAIN_MAX) {
		*error_r = "domain too long";
		return -1;
	}
	for (size_t i = 0; i < dlen; i++) {
		unsigned char ch = c->s[start + i];
		out[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : (char)ch;
	}
	out[dlen] = '\0';
	/* keep the IPv6 tag readable in its canonical spelling */
	if ((*flags & ADDRESS_LITERAL) && strncmp(out, "[ipv6:", 6) == 0)
		memcpy(out + 1, "IPv6", 4);
	return 0;
}

/* Local-part = Dot-string / Quoted-string; out gets the unquoted form. */
static int parse_local(struct cursor *c, char *out, unsigned *flags, const char **error_r)
{
	size_t start = c->pos, o = 0;
	if (peek(c) == '"') {
		c->pos++;
		*flags |= ADDRESS_QUOTED;
		for (;;) {
			int ch = peek(c);
			if (ch == -1) {
				*error_r = "unterminated quoted string";
				return -1;
			}
			if (ch == '"')
				break;
			if (ch == '\\') {
				c->pos++;
				ch = peek(c);
				/* quoted-pairSMTP = %d92 %d32-126 */
				if (ch < 32 || ch > 126) {
					*error_r = "bad quoted pair";
					return -1;
				}
			} else if (ch >= 0x80) {
				size_t n = take_utf8(c, flags);
				if (n == 0) {
					*error_r = "bad character in quoted string";
					return -1;
				}
				if (o + n > ADDRESS_LOCAL_MAX) {
					*error_r = "local part too long";
					return -1;
				}
				memcpy(out + o, c->s + c->pos - n, n);
				o += n;
				continue;
			} else if (ch < 32 || ch > 126) {
				/* qtextSMTP = %d32-33 / %d35-91 / %d93-126 */
				*error_r = "bad character in quoted string";
				return -1;
			}
			if (o >= ADDRESS_LOCAL_MAX) {
				*error_r = "local part too long";
				return -1;
			}
			if (ch == '@')
				*flags |= ADDRESS_QUOTED_AT;
			out[o++] = (char)ch;
			c->pos++;
		}
		c->pos++; /* closing quote */
	} else {
		bool need_atom = true;
		for (;;) {
			int ch = peek(c);
			if (is_atext(ch)) {
				c->pos++;
				need_atom = false;
			} else if (ch >= 0x80 && take_utf8(c, flags) > 0) {
				need_atom = false;
			} else if (ch == '.' && !need_atom) {
				c->pos++;
				need_atom = true;
			} else {
				break;
			}
		}
		if (need_atom) {
			*error_r = c->pos == start ? "empty local part" : "bad dot-string";
			return -1;
		}
		o = c->pos - start;
		if (o > ADDRESS_LOCAL_MAX) {
			*error_r = "local part too long";
			return -1;
		}
		memcpy(out, c->s + start, o);
	}
	if (c->pos - start > ADDRESS_LOCAL_MAX) {
		*error_r = "local part too long";
		return -1;
	}
	out[o] = '\0';
	if (memchr(out, '%', o) != NULL)
		*flags |= ADDRESS_PERCENT;
	if (memchr(out, '!', o) != NULL)
		*flags |= ADDRESS_BANG;
	return 0;
}

int address_parse_path(const char *s, size_t len, unsigned options, struct address *addr_r,
		       size_t *consumed_r, const char **error_r)
{
	struct cursor c = {(const unsigned char *)s, len, 0, options};
	struct address a;
	memset(&a, 0, sizeof(a));

	if (peek(&c) != '<') {
		*error_r = "path must be enclosed in <>";
		return -1;
	}
	c.pos++;
	if (peek(&c) == '>') {
		if (!(options & ADDRESS_ALLOW_NULL)) {
			*error_r = "null path not allowed here";
			return -1;
		}
		a.flags |= ADDRESS_NULL;
		c.pos++;
		goto done;
	}
	/* RFC 5321 4.1.2 A-d-l: parsed, then ignored (RFC 5321 C, 3.6.1) */
	if (peek(&c) == '@') {
		char scratch[ADDRESS_DOMAIN_MAX + 1];
		for (;;) {
			if (peek(&c) != '@') {
				*error_r = "bad source route";
				return -1;
			}
			c.pos++;
			if (parse_domain(&c, scratch, &a.flags, error_r) < 0)
				return -1;
			if (peek(&c) == ',') {
				c.pos++;
				continue;
			}
			if (peek(&c) != ':') {
				*error_r = "bad source route";
				return -1;
			}
			c.pos++;
			break;
		}
		/* a literal in the route says nothing about the mailbox */
		a.flags = (a.flags & ~ADDRESS_LITERAL) | ADDRESS_ROUTE;
	}
	unsigned lflags = 0;
	if (parse_local(&c, a.local, &lflags, error_r) < 0)
		return -1;
	a.flags |= lflags;
	if (peek(&c) == '>' && (options & ADDRESS_ALLOW_POSTMASTER) &&
	    !(a.flags & (ADDRESS_QUOTED | ADDRESS_ROUTE)) && strcasecmp(a.local, "postmaster") == 0) {
		a.flags |= ADDRESS_POSTMASTER;
		c.pos++;
		goto done;
	}
	if (peek(&c) != '@') {
		*error_r = "missing @domain";
		return -1;
	}
	c.pos++;
	unsigned dflags = 0;
	if (parse_domain(&c, a.domain, &dflags, error_r) < 0)
		return -1;
	a.flags |= dflags;
	if (peek(&c) != '>') {
		*error_r = "path must end with >";
		return -1;
	}
	c.pos++;
done:
	if (c.pos > ADDRESS_PATH_MAX) {
		*error_r = "path too long";
		return -1;
	}
	*addr_r = a;
	*consumed_r = c.pos;
	return 0;
}

static bool local_is_dot_string(const char *s)
{
	bool need_atom = true;
	for (; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;
		if (is_atext(ch) || ch >= 0x80)
			need_atom = false;
		else if (ch == '.' && !need_atom)
			need_atom = true;
		else
			return false;
	}
	return !need_atom;
}

char *address_format(const struct address *addr, char *buf, size_t bufsize)
{
	if (addr->flags & ADDRESS_NULL) {
		snprintf(buf, bufsize, "%s", "");
		return buf;
	}
	if (addr->flags & ADDRESS_POSTMASTER) {
		snprintf(buf, bufsize, "%s", addr->local);
		return buf;
	}
	if (local_is_dot_string(addr->local)) {
		snprintf(buf, bufsize, "%s@%s", addr->local, addr->domain);
		return buf;
	}
	/* re-quote: escape '"' and '\' (RFC 5321 quoted-pairSMTP) */
	size_t o = 0;
	if (bufsize < 4) {
		buf[0] = '\0';
		return buf;
	}
	buf[o++] = '"';
	for (const char *p = addr->local; *p != '\0' && o + 4 < bufsize; p++) {
		if (*p == '"' || *p == '\\')
			buf[o++] = '\\';
		buf[o++] = *p;
	}
	buf[o++] = '"';
	snprintf(buf + o, bufsize - o, "@%s", addr->domain);
	return buf;
}

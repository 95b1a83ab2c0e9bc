/*
 * RFC 5322 3.4 address lists (with groups and the obsolete forms of 4.4),
 * parsed best effort for the IMAP ENVELOPE. Untrusted header text; every
 * loop advances through the bounded input. Mirrors what Dovecot reports:
 * a missing domain is "MISSING_DOMAIN", a missing local part
 * "MISSING_MAILBOX", a display name may come from a trailing comment.
 */
#include "mail/mime.h"

#include "lib/xalloc.h"

#include <stdlib.h>
#include <string.h>

struct sb {
	char *s;
	size_t len, cap;
};

static void sb_add(struct sb *b, const char *d, size_t n)
{
	b->s = xgrow(b->s, &b->cap, b->len + n + 1, 1);
	memcpy(b->s + b->len, d, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static char *sb_take(struct sb *b)
{
	char *s = b->s != NULL ? b->s : xstrdup("");
	b->s = NULL;
	b->len = b->cap = 0;
	return s;
}

struct ap {
	const char *s, *end;
	struct sb comment; /* the last comment seen */
	bool have_comment;
};

static void skip_cfws(struct ap *p)
{
	while (p->s < p->end) {
		char c = *p->s;
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			p->s++;
			continue;
		}
		if (c != '(')
			break;
		/* RFC 5322 3.2.2: nested comments; keep the text of the outermost */
		unsigned depth = 0;
		p->comment.len = 0;
		if (p->comment.s != NULL)
			p->comment.s[0] = '\0';
		p->have_comment = true;
		while (p->s < p->end) {
			c = *p->s++;
			if (c == '\\' && p->s < p->end) {
				sb_add(&p->comment, p->s, 1);
				p->s++;
				continue;
			}
			if (c == '(') {
				if (depth++ == 0)
					continue;
			} else if (c == ')') {
				if (--depth == 0)
					break;
			}
			if (c == '\r' || c == '\n')
				continue;
			sb_add(&p->comment, &c, 1);
		}
	}
}

static bool is_atext(unsigned char c)
{
	/* RFC 5322 3.2.3 atext, plus '.' (obs-phrase, dot-atom) and 8-bit */
	return c > ' ' && c != 0x7f && strchr("()<>[]:;@\\,\"", c) == NULL;
}

/* One word: atom (with dots) or quoted-string. raw keeps quotes. */
static bool read_word(struct ap *p, struct sb *text, struct sb *raw)
{
	if (p->s >= p->end)
		return false;
	if (*p->s == '"') {
		/* a quoted local part is reported unquoted, like Dovecot */
		size_t before = text->len;
		p->s++;
		while (p->s < p->end) {
			char c = *p->s++;
			if (c == '"')
				break;
			if (c == '\\' && p->s < p->end)
				c = *p->s++;
			if (c == '\r' || c == '\n')
				continue;
			sb_add(text, &c, 1);
		}
		if (text->s == NULL)
			sb_add(text, "", 0);
		if (raw != NULL)
			sb_add(raw, text->s + before, text->len - before);
		return true;
	}
	const char *start = p->s;
	while (p->s < p->end && is_atext((unsigned char)*p->s))
		p->s++;
	if (p->s == start)
		return false;
	sb_add(text, start, p->s - start);
	if (raw != NULL)
		sb_add(raw, start, p->s - start);
	return true;
}

static void read_domain(struct ap *p, struct sb *d)
{
	skip_cfws(p);
	if (p->s < p->end && *p->s == '[') {
		/* domain-literal */
		const char *start = p->s;
		while (p->s < p->end && *p->s != ']')
			p->s++;
		if (p->s < p->end)
			p->s++;
		sb_add(d, start, p->s - start);
		return;
	}
	for (;;) {
		struct sb w = {0};
		if (!read_word(p, &w, NULL)) {
			free(w.s);
			break;
		}
		sb_add(d, w.s, w.len);
		free(w.s);
		skip_cfws(p);
		if (p->s < p->end && *p->s == '.') {
			sb_add(d, ".", 1);
			p->s++;
			skip_cfws(p);
		} else if (!(p->s < p->end && is_atext((unsigned char)*p->s))) {
			break;
		}
	}
}

static struct mime_address *new_addr(struct mime_address ***tail, unsigned *count)
{
	struct mime_address *a = xcalloc(1, sizeof(*a));
	**tail = a;
	*tail = &a->next;
	(*count)++;
	return a;
}

static void fill_missing(struct mime_address *a)
{
	if (a->mailbox == NULL || a->mailbox[0] == '\0') {
		free(a->mailbox);
		a->mailbox = xstrdup("MISSING_MAILBOX");
		a->invalid = true;
	}
	if (a->domain == NULL || a->domain[0] == '\0') {
		free(a->domain);
		a->domain = xstrdup("MISSING_DOMAIN");
		a->invalid = true;
	}
}

/* angle-addr after '<': [route ":"] addr-spec ">" */
static void read_angle(struct ap *p, struct mime_address *a)
{
	skip_cfws(p);
	if (p->s < p->end && *p->s == '@') {
		/* RFC 5322 4.4 obs-route */
		const char *start = p->s;
		while (p->s < p->end && *p->s != ':' && *p->s != '>')
			p->s++;
		a->route = xstrndup(start, p->s - start);
		if (p->s < p->end && *p->s == ':')
			p->s++;
	}
	skip_cfws(p);
	struct sb local = {0}, text = {0};
	for (;;) {
		if (!read_word(p, &text, &local))
			break;
		skip_cfws(p);
		if (p->s < p->end && *p->s == '.') {
			sb_add(&local, ".", 1);
			p->s++;
			skip_cfws(p);
		} else {
			break;
		}
	}
	free(text.s);
	a->mailbox = sb_take(&local);
	skip_cfws(p);
	if (p->s < p->end && *p->s == '@') {
		p->s++;
		struct sb d = {0};
		read_domain(p, &d);
		a->domain = sb_take(&d);
	}
	/* skip to '>' */
	while (p->s < p->end && *p->s != '>' && *p->s != ',' && *p->s != ';')
		p->s++;
	if (p->s < p->end && *p->s == '>')
		p->s++;
	fill_missing(a);
}

/*
 * One mailbox, or a group when allow_group. Returns false at the end of
 * the list (or of the group, at ';').
 */
static void read_mailbox(struct ap *p, struct mime_address ***tail, unsigned *count, unsigned max,
                         bool in_group)
{
	struct sb phrase = {0}, local = {0};
	bool words = false;
	p->have_comment = false;
	skip_cfws(p);
	/* phrase or local part: words, with dots between them for a local part */
	for (;;) {
		struct sb w = {0};
		if (!read_word(p, &w, &local)) {
			free(w.s);
			break;
		}
		if (phrase.len > 0)
			sb_add(&phrase, " ", 1);
		sb_add(&phrase, w.s != NULL ? w.s : "", w.len);
		free(w.s);
		words = true;
		skip_cfws(p);
	}
	if (p->s < p->end && *p->s == ':' && !in_group) {
		/* RFC 5322 3.4 group */
		p->s++;
		if (*count < max) {
			struct mime_address *g = new_addr(tail, count);
			g->group_start = true;
			g->mailbox = sb_take(&phrase);
		}
		for (unsigned guard = 0; p->s < p->end && guard < 100000; guard++) {
			skip_cfws(p);
			if (p->s >= p->end)
				break;
			if (*p->s == ';') {
				p->s++;
				break;
			}
			if (*p->s == ',') {
				p->s++;
				continue;
			}
			const char *before = p->s;
			read_mailbox(p, tail, count, max, true);
			if (p->s == before)
				p->s++; /* junk: step over it */
		}
		if (*count < max) {
			struct mime_address *g = new_addr(tail, count);
			g->group_end = true;
		}
		free(phrase.s);
		free(local.s);
		return;
	}
	if (p->s < p->end && *p->s == '<') {
		p->s++;
		if (*count < max) {
			struct mime_address *a = new_addr(tail, count);
			a->name = words ? sb_take(&phrase) : NULL;
			read_angle(p, a);
			skip_cfws(p);
		} else {
			struct mime_address tmp = {0};
			read_angle(p, &tmp);
			free(tmp.route);
			free(tmp.mailbox);
			free(tmp.domain);
		}
		free(phrase.s);
		free(local.s);
		return;
	}
	if (p->s < p->end && *p->s == '@') {
		p->s++;
		struct sb d = {0};
		read_domain(p, &d);
		skip_cfws(p);
		if (*count < max) {
			struct mime_address *a = new_addr(tail, count);
			a->mailbox = sb_take(&local);
			a->domain = sb_take(&d);
			if (p->have_comment && p->comment.s != NULL)
				a->name = xstrdup(p->comment.s);
			fill_missing(a);
		}
		free(d.s);
		free(phrase.s);
		free(local.s);
		return;
	}
	if (words && *count < max) {
		/* a bare word list: a local part without a domain */
		struct mime_address *a = new_addr(tail, count);
		a->mailbox = sb_take(&local);
		if (p->have_comment && p->comment.s != NULL)
			a->name = xstrdup(p->comment.s);
		fill_missing(a);
	}
	free(phrase.s);
	free(local.s);
}

struct mime_address *mime_address_parse(const char *value, size_t len, unsigned max)
{
	struct ap p = {value, value + len, {0}, false};
	struct mime_address *list = NULL, **tail = &list;
	unsigned count = 0;
	while (p.s < p.end && count < max) {
		skip_cfws(&p);
		if (p.s >= p.end)
			break;
		if (*p.s == ',' || *p.s == ';' || *p.s == '>') {
			p.s++;
			continue;
		}
		const char *before = p.s;
		read_mailbox(&p, &tail, &count, max, false);
		if (p.s == before)
			p.s++; /* a character no rule takes: skip it */
	}
	free(p.comment.s);
	return list;
}

void mime_address_free(struct mime_address **list)
{
	struct mime_address *a = *list;
	while (a != NULL) {
		struct mime_address *next = a->next;
		free(a->name);
		free(a->route);
		free(a->mailbox);
		free(a->domain);
		free(a);
		a = next;
	}
	*list = NULL;
}

/*
 * Message structure for IMAP: the part tree from the MIME parser, plus the
 * ENVELOPE of every message (RFC 3501 7.4.2), BODY/BODYSTRUCTURE strings
 * and section resolution for BODY[...] fetches (RFC 3501 6.4.5).
 *
 * The strings are meant to be sent as they are, so they follow what
 * Dovecot sends for the same message (defaults, NIL rules, MISSING_DOMAIN,
 * an empty multipart reported with one empty text part).
 */
#include "mail/mime.h"

#include "lib/xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct str {
	char *s;
	size_t len, cap;
};

static void str_add(struct str *b, const char *d, size_t n)
{
	b->s = xgrow(b->s, &b->cap, b->len + n + 1, 1);
	memcpy(b->s + b->len, d, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static void str_adds(struct str *b, const char *s)
{
	str_add(b, s, strlen(s));
}

static void str_printf(struct str *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void str_printf(struct str *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = xvasprintf(fmt, ap);
	va_end(ap);
	str_adds(b, s);
	free(s);
}

/*
 * An IMAP string (RFC 3501 4.3): quoted when it can be, a literal when it
 * holds CR, LF or 8-bit bytes. NULs cannot be sent at all and are dropped.
 */
static void imap_nstring(struct str *b, const char *s);

static void imap_string(struct str *b, const char *s)
{
	bool literal = false;
	size_t n = 0, escapes = 0;
	for (const unsigned char *c = (const unsigned char *)s; *c != '\0'; c++) {
		/* Dovecot also prefers a literal over many escapes */
		if (*c == '\r' || *c == '\n' || *c >= 0x80 ||
		    ((*c == '"' || *c == '\\') && ++escapes > 4))
			literal = true;
		n++;
	}
	if (literal) {
		str_printf(b, "{%zu}\r\n", n);
		str_add(b, s, n);
		return;
	}
	str_add(b, "\"", 1);
	for (const char *c = s; *c != '\0'; c++) {
		if (*c == '"' || *c == '\\')
			str_add(b, "\\", 1);
		str_add(b, c, 1);
	}
	str_add(b, "\"", 1);
}

/* Date, Message-ID, In-Reply-To: line breaks of folding removed, nothing else. */
static void imap_nstring_nolf(struct str *b, const char *s)
{
	if (s == NULL || strpbrk(s, "\r\n") == NULL) {
		imap_nstring(b, s);
		return;
	}
	struct str t = {0};
	for (const char *c = s; *c != '\0'; c++) {
		if (*c != '\r' && *c != '\n')
			str_add(&t, c, 1);
	}
	imap_nstring(b, t.s != NULL ? t.s : "");
	free(t.s);
}

/*
 * Subject and display names, the way Dovecot writes them for humans: runs
 * of whitespace (folding included) become one space, leading and trailing
 * whitespace goes, and anything that needed changing, quoting or has
 * 8-bit bytes is sent as a literal.
 */
static void imap_nstring_human(struct str *b, const char *s)
{
	if (s == NULL) {
		str_adds(b, "NIL");
		return;
	}
	bool modify = false, last_lwsp = true;
	size_t n = strlen(s);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\r' || c == '\n' || c == '\t' || c == ' ') {
			if (c != ' ' || last_lwsp)
				modify = true;
			last_lwsp = true;
		} else {
			if (c == '"' || c == '\\' || c >= 0x80)
				modify = true;
			last_lwsp = false;
		}
	}
	if (last_lwsp && n > 0)
		modify = true;
	if (!modify) {
		str_add(b, "\"", 1);
		str_add(b, s, n);
		str_add(b, "\"", 1);
		return;
	}
	struct str t = {0};
	last_lwsp = true;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '\r' || c == '\n' || c == '\t' || c == ' ') {
			if (!last_lwsp)
				str_add(&t, " ", 1);
			last_lwsp = true;
		} else {
			str_add(&t, &c, 1);
			last_lwsp = false;
		}
	}
	if (t.len > 0 && last_lwsp)
		t.s[--t.len] = '\0';
	if (t.len == 0)
		str_adds(b, "\"\"");
	else {
		str_printf(b, "{%zu}\r\n", t.len);
		str_add(b, t.s, t.len);
	}
	free(t.s);
}

static void imap_nstring(struct str *b, const char *s)
{
	if (s == NULL)
		str_adds(b, "NIL");
	else
		imap_string(b, s);
}

/* ---- envelope ---- */

enum env_field {
	ENV_DATE,
	ENV_SUBJECT,
	ENV_FROM,
	ENV_SENDER,
	ENV_REPLY_TO,
	ENV_TO,
	ENV_CC,
	ENV_BCC,
	ENV_IN_REPLY_TO,
	ENV_MESSAGE_ID,
	ENV_COUNT
};

static const char *const env_names[ENV_COUNT] = {
    "date", "subject", "from", "sender", "reply-to", "to", "cc", "bcc", "in-reply-to", "message-id",
};

/* Envelope header values need only a little of each header. */
#define ENV_VALUE_MAX (64 * 1024)
#define ENV_ADDR_MAX 1000

/* Raw value, folding kept, NULs dropped, bounded. */
static char *unfold(const unsigned char *v, size_t len)
{
	if (len > ENV_VALUE_MAX)
		len = ENV_VALUE_MAX;
	char *s = xmalloc(3 * len + 1);
	size_t j = 0;
	for (size_t i = 0; i < len; i++) {
		if (v[i] == '\0') {
			/* as Dovecot: a NUL in a header reads as U+FFFD */
			memcpy(s + j, "\xef\xbf\xbd", 3);
			j += 3;
		} else {
			s[j++] = (char)v[i];
		}
	}
	s[j] = '\0';
	return s;
}

static void env_addresses(struct str *b, const char *value)
{
	struct mime_address *list =
	    value != NULL ? mime_address_parse(value, strlen(value), ENV_ADDR_MAX) : NULL;
	if (list == NULL) {
		str_adds(b, "NIL");
		return;
	}
	str_add(b, "(", 1);
	for (struct mime_address *a = list; a != NULL; a = a->next) {
		str_add(b, "(", 1);
		if (a->group_end) {
			str_adds(b, "NIL NIL NIL NIL");
		} else if (a->group_start) {
			str_adds(b, "NIL NIL ");
			imap_string(b, a->mailbox);
			str_adds(b, " NIL");
		} else {
			imap_nstring_human(b, a->name);
			str_add(b, " ", 1);
			imap_nstring(b, a->route);
			str_add(b, " ", 1);
			imap_nstring(b, a->mailbox);
			str_add(b, " ", 1);
			imap_nstring(b, a->domain);
		}
		str_add(b, ")", 1);
	}
	str_add(b, ")", 1);
	mime_address_free(&list);
}

static bool addr_nonempty(const char *value)
{
	if (value == NULL)
		return false;
	struct mime_address *l = mime_address_parse(value, strlen(value), 1);
	bool r = l != NULL;
	mime_address_free(&l);
	return r;
}

static char *build_envelope(char *const v[ENV_COUNT])
{
	struct str b = {0};
	str_add(&b, "(", 1);
	imap_nstring_nolf(&b, v[ENV_DATE]);
	str_add(&b, " ", 1);
	imap_nstring_human(&b, v[ENV_SUBJECT]);
	str_add(&b, " ", 1);
	env_addresses(&b, v[ENV_FROM]);
	/* RFC 3501 7.4.2: absent or empty Sender/Reply-To default to From */
	str_add(&b, " ", 1);
	env_addresses(&b, addr_nonempty(v[ENV_SENDER]) ? v[ENV_SENDER] : v[ENV_FROM]);
	str_add(&b, " ", 1);
	env_addresses(&b, addr_nonempty(v[ENV_REPLY_TO]) ? v[ENV_REPLY_TO] : v[ENV_FROM]);
	for (int f = ENV_TO; f <= ENV_BCC; f++) {
		str_add(&b, " ", 1);
		env_addresses(&b, v[f]);
	}
	str_add(&b, " ", 1);
	imap_nstring_nolf(&b, v[ENV_IN_REPLY_TO]);
	str_add(&b, " ", 1);
	imap_nstring_nolf(&b, v[ENV_MESSAGE_ID]);
	str_add(&b, ")", 1);
	return b.s;
}

struct msg_state {
	struct mime_part *part;
	char *v[ENV_COUNT];
};

struct mime_builder {
	struct mime_parser *parser;
	/* envelope values of the message headers being read; a message's
	   header is complete before the next one starts, so one set is enough */
	struct msg_state cur;
};

static bool is_message_part(const struct mime_part *m)
{
	return m->parent == NULL || (m->parent->flags & MIME_PART_MESSAGE);
}

static void state_clear(struct msg_state *s)
{
	for (int i = 0; i < ENV_COUNT; i++)
		xfree(&s->v[i]);
	s->part = NULL;
}

static void builder_event(struct mime_builder *b, const struct mime_event *ev)
{
	switch (ev->type) {
	case MIME_EVENT_PART_BEGIN:
		state_clear(&b->cur);
		if (is_message_part(ev->part))
			b->cur.part = ev->part;
		break;
	case MIME_EVENT_HEADER:
		if (b->cur.part != ev->part || ev->name_len == 0)
			break;
		for (int i = 0; i < ENV_COUNT; i++) {
			if (strlen(env_names[i]) != ev->name_len ||
			    strncasecmp(ev->name, env_names[i], ev->name_len) != 0)
				continue;
			if (b->cur.v[i] == NULL) {
				b->cur.v[i] = unfold(ev->value, ev->value_len);
			} else if (i >= ENV_FROM && i <= ENV_BCC &&
			           strlen(b->cur.v[i]) < ENV_VALUE_MAX) {
				/* Dovecot: repeated address fields are one list */
				char *more = unfold(ev->value, ev->value_len);
				char *joined = xasprintf("%s, %s", b->cur.v[i], more);
				free(more);
				free(b->cur.v[i]);
				b->cur.v[i] = joined;
			}
			break;
		}
		break;
	case MIME_EVENT_HEADER_END:
		if (b->cur.part == ev->part) {
			free(ev->part->envelope);
			ev->part->envelope = build_envelope(b->cur.v);
			state_clear(&b->cur);
		}
		break;
	default:
		break;
	}
}

static void builder_drain(struct mime_builder *b)
{
	struct mime_event ev;
	while (mime_parser_next(b->parser, &ev) == 1)
		builder_event(b, &ev);
}

struct mime_builder *mime_builder_new(const struct mime_limits *limits)
{
	struct mime_builder *b = xcalloc(1, sizeof(*b));
	b->parser = mime_parser_new(limits);
	return b;
}

void mime_builder_push(struct mime_builder *b, const void *data, size_t len)
{
	if (len == 0)
		return;
	mime_parser_push(b->parser, data, len);
	builder_drain(b);
}

struct mime_part *mime_builder_finish(struct mime_builder **bp)
{
	struct mime_builder *b = *bp;
	mime_parser_push(b->parser, NULL, 0);
	builder_drain(b);
	struct mime_part *root = mime_parser_steal_root(b->parser);
	mime_parser_free(&b->parser);
	state_clear(&b->cur);
	xfree(bp);
	return root;
}

struct mime_part *mime_message_parse(const void *data, size_t len, const struct mime_limits *limits)
{
	struct mime_builder *b = mime_builder_new(limits);
	mime_builder_push(b, data, len);
	return mime_builder_finish(&b);
}

char *mime_envelope_string(const struct mime_part *m)
{
	if (m->envelope != NULL)
		return xstrdup(m->envelope);
	char *v[ENV_COUNT] = {0};
	return build_envelope(v);
}

/* ---- BODYSTRUCTURE ---- */

static void write_params(struct str *b, const struct mime_param *p, unsigned n)
{
	if (n == 0) {
		str_adds(b, "NIL");
		return;
	}
	str_add(b, "(", 1);
	for (unsigned i = 0; i < n; i++) {
		if (i > 0)
			str_add(b, " ", 1);
		imap_string(b, p[i].name);
		str_add(b, " ", 1);
		imap_string(b, p[i].value);
	}
	str_add(b, ")", 1);
}

/* body-fld-dsp, body-fld-lang, body-fld-loc (RFC 3501 9) */
static void write_ext_common(struct str *b, const struct mime_part *m)
{
	str_add(b, " ", 1);
	if (m->disposition == NULL) {
		str_adds(b, "NIL");
	} else {
		str_add(b, "(", 1);
		imap_string(b, m->disposition);
		str_add(b, " ", 1);
		write_params(b, m->disp_params, m->ndisp_params);
		str_add(b, ")", 1);
	}
	str_add(b, " ", 1);
	if (m->language == NULL) {
		str_adds(b, "NIL");
	} else {
		/* a comma-separated list of tags (RFC 3282) */
		str_add(b, "(", 1);
		const char *s = m->language;
		bool first = true;
		while (*s != '\0') {
			size_t skip = strspn(s, " \t,");
			s += skip;
			size_t l = strcspn(s, " \t,(");
			if (l == 0) {
				if (*s == '(') {
					const char *e = strchr(s, ')');
					s = e != NULL ? e + 1 : s + strlen(s);
				}
				continue;
			}
			char *tag = xstrndup(s, l);
			if (!first)
				str_add(b, " ", 1);
			imap_string(b, tag);
			free(tag);
			first = false;
			s += l;
		}
		if (first)
			str_adds(b, "\"\"");
		str_add(b, ")", 1);
	}
	str_add(b, " ", 1);
	imap_nstring(b, m->location);
}

static void write_part(struct str *b, const struct mime_part *m, bool ext);

static void write_empty_text(struct str *b, bool ext)
{
	str_adds(b, "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0");
	if (ext)
		str_adds(b, " NIL NIL NIL NIL");
	str_add(b, ")", 1);
}

static void write_part(struct str *b, const struct mime_part *m, bool ext)
{
	str_add(b, "(", 1);
	/* Dovecot: a multipart without usable boundary (or too deep to split)
	   is still a multipart, with one empty text part */
	if ((m->flags & MIME_PART_MULTIPART) ||
	    (m->type != NULL && strcasecmp(m->type, "multipart") == 0 && m->subtype != NULL &&
	     !(m->flags & MIME_PART_TOO_DEEP))) {
		if (m->children == NULL)
			write_empty_text(b, ext);
		for (const struct mime_part *c = m->children; c != NULL; c = c->next)
			write_part(b, c, ext);
		str_add(b, " ", 1);
		imap_string(b, m->subtype);
		if (ext) {
			str_add(b, " ", 1);
			write_params(b, m->params, m->nparams);
			write_ext_common(b, m);
		}
		str_add(b, ")", 1);
		return;
	}
	const char *type = m->type, *subtype = m->subtype;
	if (type == NULL) {
		const struct mime_part *pa = m->parent;
		if (pa != NULL && (pa->flags & MIME_PART_MULTIPART) && pa->subtype != NULL &&
		    strcasecmp(pa->subtype, "digest") == 0) {
			type = "message";
			subtype = "rfc822";
		} else {
			type = "text";
			subtype = "plain";
		}
	}
	if (m->flags & MIME_PART_MESSAGE) {
		type = "message";
		subtype = "rfc822";
	} else if (m->flags & MIME_PART_TOO_DEEP) {
		/* Dovecot: a container past the nesting limit is opaque data */
		type = "application";
		subtype = "octet-stream";
	}
	bool text = strcasecmp(type, "text") == 0;
	imap_string(b, type);
	str_add(b, " ", 1);
	imap_string(b, subtype);
	str_add(b, " ", 1);
	if (text && mime_param_get(m->params, m->nparams, "charset") == NULL) {
		/* Dovecot: a text part always shows a charset, us-ascii by default */
		struct str t = {0};
		write_params(&t, m->params, m->nparams);
		if (m->nparams == 0) {
			str_adds(b, "(\"charset\" \"us-ascii\")");
		} else {
			t.s[t.len - 1] = '\0';
			str_adds(b, t.s);
			str_adds(b, " \"charset\" \"us-ascii\")");
		}
		free(t.s);
	} else {
		write_params(b, m->params, m->nparams);
	}
	str_add(b, " ", 1);
	imap_nstring(b, m->id);
	str_add(b, " ", 1);
	imap_nstring(b, m->description);
	str_add(b, " ", 1);
	imap_string(b, m->encoding != NULL ? m->encoding : "7bit");
	str_printf(b, " %llu", (unsigned long long)m->body_vsize);
	if (text) {
		str_printf(b, " %llu", (unsigned long long)m->body_lines);
	} else if ((m->flags & MIME_PART_MESSAGE) && m->children != NULL) {
		str_add(b, " ", 1);
		char *env = mime_envelope_string(m->children);
		str_adds(b, env);
		free(env);
		str_add(b, " ", 1);
		write_part(b, m->children, ext);
		str_printf(b, " %llu", (unsigned long long)m->body_lines);
	}
	if (ext) {
		str_add(b, " ", 1);
		/* the Content-MD5 header as sent, as Dovecot does; never computed */
		imap_nstring(b, m->md5);
		write_ext_common(b, m);
	}
	str_add(b, ")", 1);
}

char *mime_bodystructure(const struct mime_part *part, bool extended)
{
	struct str b = {0};
	write_part(&b, part, extended);
	return b.s;
}

/* ---- sections ---- */

static void set_range(struct mime_section *s, const struct mime_part *m, bool header, bool body)
{
	s->part = m;
	if (header && body) {
		s->offset = m->header_offset;
		s->size = m->header_size + m->body_size;
		s->vsize = m->header_vsize + m->body_vsize;
	} else if (header) {
		s->offset = m->header_offset;
		s->size = m->header_size;
		s->vsize = m->header_vsize;
	} else {
		s->offset = m->body_offset;
		s->size = m->body_size;
		s->vsize = m->body_vsize;
	}
}

int mime_section_find(const struct mime_part *root, const char *spec, struct mime_section *r,
                      const char **error_r)
{
	const struct mime_part *node = root;
	bool at_message = true; /* node is a message whose body is being numbered */
	bool have_path = false;
	const char *s = spec;
	memset(r, 0, sizeof(*r));

	while (*s >= '0' && *s <= '9') {
		char *end;
		unsigned long n = strtoul(s, &end, 10);
		if (n == 0 || n > 1000000 || (*end != '.' && *end != '\0')) {
			*error_r = "bad part number";
			return -1;
		}
		if (!at_message && (node->flags & MIME_PART_MESSAGE)) {
			node = node->children;
			at_message = true;
		}
		if (node->flags & MIME_PART_MULTIPART) {
			const struct mime_part *c = node->children;
			for (unsigned long i = 1; c != NULL && i < n; i++)
				c = c->next;
			if (c == NULL) {
				*error_r = "no such part";
				return -1;
			}
			node = c;
		} else if (n != 1 || !at_message) {
			*error_r = "no such part";
			return -1;
		}
		at_message = false;
		have_path = true;
		s = end;
		if (*s != '.')
			break;
		s++;
		if (*s == '\0') {
			*error_r = "section ends with a dot";
			return -1;
		}
	}
	if (*s == '\0') {
		if (!have_path)
			set_range(r, root, true, true);
		else
			set_range(r, node, false, true);
		return 0;
	}
	if (strcasecmp(s, "MIME") == 0) {
		if (!have_path) {
			*error_r = "MIME needs a part number";
			return -1;
		}
		set_range(r, node, true, false);
		return 0;
	}
	bool hdr = strcasecmp(s, "HEADER") == 0 || strncasecmp(s, "HEADER.FIELDS ", 14) == 0 ||
	           strncasecmp(s, "HEADER.FIELDS.NOT ", 18) == 0;
	bool text = strcasecmp(s, "TEXT") == 0;
	if (!hdr && !text) {
		*error_r = "bad section text";
		return -1;
	}
	if (have_path) {
		if (!(node->flags & MIME_PART_MESSAGE) || node->children == NULL) {
			*error_r = "HEADER and TEXT need a message/rfc822 part";
			return -1;
		}
		node = node->children;
	}
	set_range(r, node, hdr, !hdr);
	return 0;
}

size_t mime_copy_crlf(const unsigned char *msg, uint64_t offset, uint64_t size, uint64_t skip,
                      unsigned char *out, size_t max)
{
	uint64_t vpos = 0;
	size_t n = 0;
	for (uint64_t i = offset; i < offset + size && n < max; i++) {
		if (msg[i] == '\n' && (i == 0 || msg[i - 1] != '\r')) {
			if (vpos >= skip && n < max)
				out[n++] = '\r';
			vpos++;
			if (n >= max)
				break;
		}
		if (vpos >= skip)
			out[n++] = msg[i];
		vpos++;
	}
	return n;
}

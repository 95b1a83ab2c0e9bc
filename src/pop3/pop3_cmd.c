/*
 * POP3 command lines. SECURITY: parses network input; never reads past
 * `len`, never allocates.
 */
#include "pop3/pop3_cmd.h"

#include "lib/xalloc.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

enum arg_kind {
	ARG_NONE,     /* nothing after the keyword */
	ARG_TEXT,     /* required text: the rest of the line */
	ARG_OPT_TEXT, /* optional text */
	ARG_OPT_NUM,  /* optional message number */
	ARG_NUM,      /* one message number */
	ARG_NUM2,     /* message number and line count */
};

static const struct {
	const char *name;
	enum pop3_verb verb;
	enum arg_kind args;
} verbs[] = {
	{"USER", POP3_USER, ARG_TEXT}, {"PASS", POP3_PASS, ARG_TEXT},
	{"APOP", POP3_APOP, ARG_TEXT}, {"AUTH", POP3_AUTH, ARG_OPT_TEXT},
	{"STLS", POP3_STLS, ARG_NONE}, {"CAPA", POP3_CAPA, ARG_NONE},
	{"QUIT", POP3_QUIT, ARG_NONE}, {"STAT", POP3_STAT, ARG_NONE},
	{"LIST", POP3_LIST, ARG_OPT_NUM}, {"RETR", POP3_RETR, ARG_NUM},
	{"DELE", POP3_DELE, ARG_NUM},  {"NOOP", POP3_NOOP, ARG_NONE},
	{"RSET", POP3_RSET, ARG_NONE}, {"TOP", POP3_TOP, ARG_NUM2},
	{"UIDL", POP3_UIDL, ARG_OPT_NUM},
};

const char *pop3_verb_name(enum pop3_verb v)
{
	for (size_t i = 0; i < ARRAY_SIZE(verbs); i++)
		if (verbs[i].verb == v)
			return verbs[i].name;
	return "?";
}

/* A decimal number of 1..10 digits that fits in 32 bits; advances *p. */
static bool parse_num(const char **p, const char *end, uint32_t *out)
{
	const char *s = *p;
	uint64_t v = 0;
	size_t digits = 0;
	while (s < end && *s >= '0' && *s <= '9') {
		if (++digits > 10)
			return false;
		v = v * 10 + (uint64_t)(*s - '0');
		s++;
	}
	if (digits == 0 || v > UINT32_MAX)
		return false;
	*out = (uint32_t)v;
	*p = s;
	return true;
}

enum pop3_parse_result pop3_cmd_parse(const char *line, size_t len, struct pop3_cmd *c)
{
	memset(c, 0, sizeof(*c));
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)line[i];
		if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
			return POP3_PARSE_BAD_CHAR;
	}
	size_t klen = 0;
	while (klen < len && line[klen] != ' ')
		klen++;
	if (klen < 3 || klen > 4)
		return POP3_PARSE_UNKNOWN;
	size_t vi;
	for (vi = 0; vi < ARRAY_SIZE(verbs); vi++)
		if (strlen(verbs[vi].name) == klen && strncasecmp(verbs[vi].name, line, klen) == 0)
			break;
	if (vi == ARRAY_SIZE(verbs))
		return POP3_PARSE_UNKNOWN;
	c->verb = verbs[vi].verb;
	const char *p = line + klen;
	const char *end = line + len;
	bool has_arg = p < end; /* then *p == ' ' */
	if (has_arg)
		p++;
	switch (verbs[vi].args) {
	case ARG_TEXT:
	case ARG_OPT_TEXT:
		/* the rest of the line as is: a password may contain spaces (RFC 1939 7) */
		if (!has_arg || p == end)
			return verbs[vi].args == ARG_TEXT ? POP3_PARSE_SYNTAX : POP3_PARSE_OK;
		c->arg = p;
		c->arg_len = (size_t)(end - p);
		return POP3_PARSE_OK;
	default:
		break;
	}
	/* numeric or no arguments: trailing blanks tolerated (some clients send them) */
	while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	unsigned want_min = 0, want_max = 0;
	switch (verbs[vi].args) {
	case ARG_OPT_NUM:
		want_max = 1;
		break;
	case ARG_NUM:
		want_min = want_max = 1;
		break;
	case ARG_NUM2:
		want_min = want_max = 2;
		break;
	default:
		break;
	}
	while (p < end) {
		if (c->nnum == want_max || !parse_num(&p, end, &c->num[c->nnum]))
			return POP3_PARSE_SYNTAX;
		c->nnum++;
		if (p < end) {
			if (*p != ' ')
				return POP3_PARSE_SYNTAX;
			p++;
			if (p == end)
				return POP3_PARSE_SYNTAX;
		}
	}
	if (c->nnum < want_min)
		return POP3_PARSE_SYNTAX;
	return POP3_PARSE_OK;
}

void pop3_xform_init(struct pop3_xform *x, int64_t top)
{
	*x = (struct pop3_xform){.bol = true, .line_empty = true, .top = top};
}

size_t pop3_xform_run(struct pop3_xform *x, const unsigned char *in, size_t n, char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < n && !x->done; i++) {
		unsigned char c = in[i];
		if (c == '\n') {
			if (!x->prev_cr)
				out[o++] = '\r';
			out[o++] = '\n';
			bool was_empty = x->line_empty;
			x->bol = true;
			x->line_empty = true;
			x->prev_cr = false;
			if (!x->in_body) {
				if (was_empty) {
					x->in_body = true;
					if (x->top == 0)
						x->done = true;
				}
			} else if (x->top >= 0 && ++x->body_lines >= (uint64_t)x->top) {
				x->done = true;
			}
			continue;
		}
		if (x->bol && c == '.')
			out[o++] = '.';
		x->bol = false;
		if (c != '\r')
			x->line_empty = false;
		x->prev_cr = c == '\r';
		out[o++] = (char)c;
	}
	return o;
}

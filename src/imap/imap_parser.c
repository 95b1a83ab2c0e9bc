/*
 * IMAP command syntax: the reader that collects one command (its lines and
 * the literals they announce) from the wire, and the parser that turns the
 * collected text into arguments. Both see untrusted octets before and after
 * login; neither lets a peer-declared size choose an allocation: literal
 * octets are buffered as they arrive, bounded by max_command.
 */
#include "imap/imap_parser.h"

#include "lib/xalloc.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The longest literal announcement "~{" 20 digits "+}" CR, with room. */
#define ANNOUNCE_TAIL 32
/* RFC 7888 4: LITERAL- allows non-synchronising literals up to 4096 octets. */
#define LITERAL_MINUS_MAX 4096

/* ---- argument helpers ---- */

bool imap_arg_is_string(const struct imap_arg *a)
{
	return a != NULL && (a->type == IMAP_ARG_ATOM || a->type == IMAP_ARG_STRING ||
			     a->type == IMAP_ARG_LITERAL);
}

const char *imap_arg_astring(const struct imap_arg *a)
{
	if (a == NULL)
		return NULL;
	/* astring = 1*ASTRING-CHAR / string: an unquoted NIL is the name "NIL" */
	if (imap_arg_is_string(a) || a->type == IMAP_ARG_NIL)
		return a->str;
	return NULL;
}

bool imap_arg_atom_eq(const struct imap_arg *a, const char *word)
{
	if (a == NULL || (a->type != IMAP_ARG_ATOM && a->type != IMAP_ARG_NIL))
		return false;
	return strlen(word) == a->len && strcasecmp(a->str, word) == 0;
}

/* ---- reader ---- */

static bool is_tag_char(unsigned char c);

/*
 * Remember the tag of the command being refused, from the start of the
 * command in buf or, if nothing is buffered yet, from the input.
 */
static void note_tag(struct imap_reader *r, struct evbuffer *in)
{
	char tmp[IMAP_READER_TAG_MAX + 2];
	size_t n;
	r->tag[0] = '\0';
	if (r->len > 0 && r->line_begin > 0) {
		n = r->len < sizeof(tmp) ? r->len : sizeof(tmp);
		memcpy(tmp, r->buf, n);
	} else if (r->len > 0) {
		n = r->len < sizeof(tmp) ? r->len : sizeof(tmp);
		memcpy(tmp, r->buf, n);
		if (n < sizeof(tmp) && in != NULL) {
			ev_ssize_t got = evbuffer_copyout(in, tmp + n, sizeof(tmp) - n);
			n += got > 0 ? (size_t)got : 0;
		}
	} else if (in != NULL) {
		ev_ssize_t got = evbuffer_copyout(in, tmp, sizeof(tmp));
		n = got > 0 ? (size_t)got : 0;
	} else {
		return;
	}
	size_t i = 0;
	while (i < n && i <= IMAP_READER_TAG_MAX && is_tag_char((unsigned char)tmp[i]))
		i++;
	if (i == 0 || i > IMAP_READER_TAG_MAX || i >= n || tmp[i] != ' ')
		return;
	memcpy(r->tag, tmp, i);
	r->tag[i] = '\0';
}

void imap_reader_init(struct imap_reader *r, size_t max_line, size_t max_literal,
		      size_t max_command)
{
	memset(r, 0, sizeof(*r));
	r->max_line = max_line;
	r->max_literal = max_literal;
	r->max_command = max_command;
	r->line_start = true;
}

void imap_reader_free(struct imap_reader *r)
{
	xfree(&r->buf);
	r->len = r->size = 0;
}

void imap_reader_reset(struct imap_reader *r)
{
	/* the skip state survives: it belongs to the input, not the command */
	r->len = 0;
	r->line_begin = 0;
	r->have_command = false;
	/* a big APPEND must not pin its buffer for the life of an idle session */
	if (r->size > 65536 && !r->skipping) {
		xfree(&r->buf);
		r->size = 0;
	}
	if (!r->skipping) {
		r->literal_left = 0;
		r->line_start = true;
	}
}

static void reserve(struct imap_reader *r, size_t extra)
{
	if (r->len + extra + 1 > r->size)
		r->buf = xgrow(r->buf, &r->size, r->len + extra + 1, 1);
}

/*
 * Does the line `s[0..len)` (CRLF removed) end with a literal announcement
 * {N}, {N+}, ~{N} or ~{N+}? N saturates at UINT64_MAX.
 */
static bool announcement(const char *s, size_t len, uint64_t *n_r, bool *nonsync_r,
			 bool *binary_r)
{
	if (len < 3 || s[len - 1] != '}')
		return false;
	size_t end = len - 1;
	*nonsync_r = false;
	if (s[end - 1] == '+') {
		*nonsync_r = true;
		end--;
	}
	size_t start = end;
	while (start > 0 && s[start - 1] >= '0' && s[start - 1] <= '9')
		start--;
	if (start == end || start == 0 || s[start - 1] != '{')
		return false;
	*binary_r = start >= 2 && s[start - 2] == '~';
	uint64_t n = 0;
	for (size_t i = start; i < end; i++) {
		unsigned d = (unsigned)(s[i] - '0');
		if (n > (UINT64_MAX - d) / 10) {
			n = UINT64_MAX;
			break;
		}
		n = n * 10 + d;
	}
	*n_r = n;
	return true;
}

/* Length of a line's content in buf[begin..end) without its final LF / CRLF. */
static size_t content_len(const char *buf, size_t begin, size_t end)
{
	size_t n = end - begin;
	if (n > 0 && buf[begin + n - 1] == '\n')
		n--;
	if (n > 0 && buf[begin + n - 1] == '\r')
		n--;
	return n;
}

/* Start discarding the current line: keep only its last octets (for the announcement). */
static void skip_line(struct imap_reader *r)
{
	size_t n = r->len - r->line_begin;
	if (n > ANNOUNCE_TAIL)
		n = ANNOUNCE_TAIL;
	if (n > 0)
		memmove(r->buf, r->buf + r->len - n, n);
	r->len = n;
	r->line_begin = 0;
	r->skipping = true;
	r->literal_left = 0;
	r->line_start = false;
}

/* A line of a too-long command ended: skip the octets of a non-synchronising literal. */
static void skipped_line_end(struct imap_reader *r, const char *line, size_t len)
{
	uint64_t n;
	bool nonsync, binary;
	r->len = 0;
	r->line_begin = 0;
	r->line_start = true;
	if (announcement(line, len, &n, &nonsync, &binary) && nonsync && n > 0) {
		/* the client sends it without waiting: discard it, then its next line */
		r->skipping = true;
		r->literal_left = n;
		r->line_start = false;
	} else {
		/* end of command; a refused synchronising literal is never sent */
		r->skipping = false;
		r->literal_left = 0;
	}
}

/* Discard input while skipping. Returns true when more input is needed. */
static bool skip_input(struct imap_reader *r, struct evbuffer *in)
{
	while (r->skipping) {
		size_t avail = evbuffer_get_length(in);
		if (avail == 0)
			return true;
		if (r->literal_left > 0) {
			size_t n = r->literal_left < avail ? (size_t)r->literal_left : avail;
			evbuffer_drain(in, n);
			r->literal_left -= n;
			if (r->literal_left == 0)
				r->len = 0; /* the line after the literal */
			continue;
		}
		struct evbuffer_ptr lf = evbuffer_search(in, "\n", 1, NULL);
		size_t take = lf.pos >= 0 ? (size_t)lf.pos + 1 : avail;
		if (take > 4096)
			take = 4096;
		char chunk[4096];
		evbuffer_remove(in, chunk, take);
		bool ended = chunk[take - 1] == '\n';
		/* keep the last ANNOUNCE_TAIL octets of the line in buf */
		reserve(r, ANNOUNCE_TAIL + 1);
		if (take >= ANNOUNCE_TAIL) {
			memcpy(r->buf, chunk + take - ANNOUNCE_TAIL, ANNOUNCE_TAIL);
			r->len = ANNOUNCE_TAIL;
		} else {
			size_t keep = r->len + take > ANNOUNCE_TAIL ? ANNOUNCE_TAIL - take : r->len;
			if (keep > 0)
				memmove(r->buf, r->buf + r->len - keep, keep);
			memcpy(r->buf + keep, chunk, take);
			r->len = keep + take;
		}
		if (ended) {
			size_t n = content_len(r->buf, 0, r->len);
			char tail[ANNOUNCE_TAIL];
			memcpy(tail, r->buf, n);
			skipped_line_end(r, tail, n);
		}
	}
	return false;
}

enum imap_reader_status imap_reader_feed(struct imap_reader *r, struct evbuffer *in)
{
	if (r->have_command)
		imap_reader_reset(r);
	for (;;) {
		if (r->skipping) {
			if (skip_input(r, in))
				return IMAP_READ_MORE;
			continue;
		}
		size_t avail = evbuffer_get_length(in);
		if (avail == 0)
			return IMAP_READ_MORE;
		if (r->literal_left > 0) {
			size_t n = r->literal_left < avail ? (size_t)r->literal_left : avail;
			reserve(r, n);
			evbuffer_remove(in, r->buf + r->len, n);
			r->len += n;
			r->literal_left -= n;
			if (r->literal_left == 0) {
				r->line_begin = r->len;
				r->line_start = true;
			}
			continue;
		}
		struct evbuffer_ptr lf = evbuffer_search(in, "\n", 1, NULL);
		size_t take = lf.pos >= 0 ? (size_t)lf.pos + 1 : avail;
		/* 2 octets of slack for the CRLF */
		if (r->len - r->line_begin + take > r->max_line + 2 ||
		    r->len + take > r->max_command + 2) {
			note_tag(r, in);
			skip_line(r);
			return IMAP_READ_TOO_LONG;
		}
		reserve(r, take);
		evbuffer_remove(in, r->buf + r->len, take);
		r->len += take;
		r->line_start = false;
		size_t clen = content_len(r->buf, r->line_begin, r->len);
		if (lf.pos < 0) {
			/* an incomplete line; a CR at its end may be half a CRLF */
			if (r->buf[r->len - 1] != '\r')
				clen = r->len - r->line_begin;
			if (clen > r->max_line || r->line_begin + clen > r->max_command) {
				note_tag(r, NULL);
				skip_line(r);
				return IMAP_READ_TOO_LONG;
			}
			return IMAP_READ_MORE;
		}
		const char *line = r->buf + r->line_begin;
		note_tag(r, NULL);
		if (clen > r->max_line || r->line_begin + clen > r->max_command) {
			char tail[ANNOUNCE_TAIL];
			size_t t = clen < ANNOUNCE_TAIL ? clen : ANNOUNCE_TAIL;
			memcpy(tail, line + clen - t, t);
			skipped_line_end(r, tail, t);
			return IMAP_READ_TOO_LONG;
		}
		uint64_t n;
		bool nonsync, binary;
		if (!announcement(line, clen, &n, &nonsync, &binary)) {
			/* the command is complete; its final line end is not kept */
			r->len = r->line_begin + clen;
			r->buf[r->len] = '\0';
			r->line_start = true;
			r->have_command = true;
			return IMAP_READ_COMMAND;
		}
		if (n > r->max_literal || n > r->max_command || r->len + n > r->max_command) {
			char tail[ANNOUNCE_TAIL];
			size_t t = clen < ANNOUNCE_TAIL ? clen : ANNOUNCE_TAIL;
			memcpy(tail, line + clen - t, t);
			skipped_line_end(r, tail, t);
			return IMAP_READ_TOO_LONG;
		}
		if (nonsync && r->literal_minus && n > LITERAL_MINUS_MAX) {
			char tail[ANNOUNCE_TAIL];
			size_t t = clen < ANNOUNCE_TAIL ? clen : ANNOUNCE_TAIL;
			memcpy(tail, line + clen - t, t);
			skipped_line_end(r, tail, t);
			return IMAP_READ_BAD_LITERAL;
		}
		r->literal_left = n;
		r->line_begin = r->len;
		r->line_start = n == 0;
		if (!nonsync)
			return IMAP_READ_CONTINUE;
	}
}

/* ---- parser ---- */

struct pool {
	void **ptrs;
	size_t n, cap;
};

static void *pool_keep(struct pool *p, void *ptr)
{
	p->ptrs = xgrow(p->ptrs, &p->cap, p->n + 1, sizeof(*p->ptrs));
	p->ptrs[p->n++] = ptr;
	return ptr;
}

static char *pool_strndup(struct pool *p, const char *s, size_t n)
{
	char *d = xmalloc(n + 1);
	memcpy(d, s, n);
	d[n] = '\0';
	return pool_keep(p, d);
}

struct parse {
	const char *s;
	size_t len, pos;
	struct pool *pool;
	size_t nargs;
	const char *error;
};

static bool is_ctl(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

/* ATOM-CHAR plus the list wildcards '%' '*' and '\' (flags) and ']' (astrings) */
static bool is_atom_char(unsigned char c)
{
	return c > 0x20 && c < 0x7f && c != '(' && c != ')' && c != '{' && c != '"';
}

/* tag = 1*<any ASTRING-CHAR except "+"> */
static bool is_tag_char(unsigned char c)
{
	return is_atom_char(c) && c != '%' && c != '*' && c != '\\' && c != '+';
}

static bool parse_atom(struct parse *p, struct imap_arg *a)
{
	size_t start = p->pos;
	while (p->pos < p->len) {
		unsigned char c = (unsigned char)p->s[p->pos];
		if (c == ' ' || c == ')')
			break;
		if (c == '[') {
			/*
			 * fetch-att section: up to the matching ']', spaces and lists
			 * included. '[' is also a plain ATOM-CHAR (a password "ab[c"):
			 * without a matching ']' on the line it is taken as one.
			 */
			size_t q = p->pos;
			unsigned depth = 0;
			bool closed = false;
			while (q < p->len) {
				c = (unsigned char)p->s[q];
				if (is_ctl(c) || c >= 0x80)
					break;
				q++;
				if (c == '[') {
					if (++depth > IMAP_MAX_DEPTH) {
						p->error = "Too deep";
						return false;
					}
				} else if (c == ']' && --depth == 0) {
					closed = true;
					break;
				}
			}
			p->pos = closed ? q : p->pos + 1;
			continue;
		}
		if (!is_atom_char(c)) {
			p->error = c >= 0x80 ? "8-bit octet in atom" : "Invalid character in atom";
			return false;
		}
		p->pos++;
	}
	if (p->pos == start) {
		p->error = "Invalid argument";
		return false;
	}
	a->len = p->pos - start;
	a->str = pool_strndup(p->pool, p->s + start, a->len);
	a->type = a->len == 3 && strncasecmp(a->str, "NIL", 3) == 0 ? IMAP_ARG_NIL : IMAP_ARG_ATOM;
	return true;
}

static bool parse_quoted(struct parse *p, struct imap_arg *a)
{
	p->pos++; /* the opening quote */
	size_t start = p->pos, n = 0;
	/* first pass: find the end and the unescaped length */
	for (;;) {
		if (p->pos >= p->len) {
			p->error = "Missing '\"'";
			return false;
		}
		char c = p->s[p->pos];
		if (c == '"')
			break;
		if (c == '\0' || c == '\r' || c == '\n') {
			p->error = "Invalid character in quoted string";
			return false;
		}
		if (c == '\\') {
			p->pos++;
			if (p->pos >= p->len || (p->s[p->pos] != '\\' && p->s[p->pos] != '"')) {
				p->error = "Invalid escape in quoted string";
				return false;
			}
		}
		p->pos++;
		n++;
	}
	char *d = xmalloc(n + 1);
	size_t j = 0;
	for (size_t i = start; i < p->pos; i++) {
		if (p->s[i] == '\\')
			i++;
		d[j++] = p->s[i];
	}
	d[j] = '\0';
	p->pos++; /* the closing quote */
	a->type = IMAP_ARG_STRING;
	a->str = pool_keep(p->pool, d);
	a->len = n;
	return true;
}

static bool parse_literal(struct parse *p, struct imap_arg *a)
{
	a->binary = false;
	if (p->s[p->pos] == '~') {
		a->binary = true;
		p->pos++;
		if (p->pos >= p->len || p->s[p->pos] != '{') {
			p->error = "Invalid argument";
			return false;
		}
	}
	p->pos++; /* '{' */
	uint64_t n = 0;
	size_t digits = 0;
	while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') {
		unsigned d = (unsigned)(p->s[p->pos] - '0');
		if (n > (UINT64_MAX - d) / 10) {
			p->error = "Literal size too large";
			return false;
		}
		n = n * 10 + d;
		digits++;
		p->pos++;
	}
	if (digits == 0) {
		p->error = "Invalid literal size";
		return false;
	}
	if (p->pos < p->len && p->s[p->pos] == '+')
		p->pos++;
	if (p->pos >= p->len || p->s[p->pos] != '}') {
		p->error = "Invalid literal size";
		return false;
	}
	p->pos++;
	if (p->pos < p->len && p->s[p->pos] == '\r')
		p->pos++;
	if (p->pos >= p->len || p->s[p->pos] != '\n') {
		p->error = "Missing CRLF after literal size";
		return false;
	}
	p->pos++;
	if (n > p->len - p->pos) {
		p->error = "Literal truncated";
		return false;
	}
	a->type = IMAP_ARG_LITERAL;
	a->len = (size_t)n;
	a->str = pool_strndup(p->pool, p->s + p->pos, a->len);
	p->pos += a->len;
	return true;
}

/*
 * Parse arguments up to the end of the text (top level) or the ')' closing
 * a list (depth > 0). Exactly one SP separates arguments; a single SP at
 * the very end of the command is tolerated, as Dovecot does.
 */
static bool parse_args(struct parse *p, unsigned depth, struct imap_arg **args_r, size_t *n_r)
{
	struct imap_arg *args = NULL;
	size_t n = 0, cap = 0;
	for (;;) {
		if (p->pos >= p->len) {
			if (depth > 0) {
				p->error = "Missing ')'";
				goto fail;
			}
			break;
		}
		char c = p->s[p->pos];
		if (c == ')') {
			if (depth == 0) {
				p->error = "Unexpected ')'";
				goto fail;
			}
			p->pos++;
			break;
		}
		if (n > 0) {
			if (c != ' ') {
				p->error = "Missing space between arguments";
				goto fail;
			}
			p->pos++;
			if (p->pos >= p->len && depth == 0)
				break; /* trailing SP */
			if (p->pos >= p->len || p->s[p->pos] == ' ' || p->s[p->pos] == ')') {
				p->error = "Unexpected space";
				goto fail;
			}
			c = p->s[p->pos];
		}
		if (++p->nargs > IMAP_MAX_ARGS) {
			p->error = "Too many arguments";
			goto fail;
		}
		args = xgrow(args, &cap, n + 1, sizeof(*args));
		struct imap_arg *a = &args[n];
		memset(a, 0, sizeof(*a));
		bool ok;
		if (c == '(') {
			if (depth + 1 > IMAP_MAX_DEPTH) {
				p->error = "Too deep";
				goto fail;
			}
			p->pos++;
			a->type = IMAP_ARG_LIST;
			ok = parse_args(p, depth + 1, &a->list, &a->nlist);
		} else if (c == '"') {
			ok = parse_quoted(p, a);
		} else if (c == '{' || c == '~') {
			ok = parse_literal(p, a);
		} else if (c == ' ') {
			p->error = "Unexpected space";
			ok = false;
		} else {
			ok = parse_atom(p, a);
		}
		if (!ok)
			goto fail;
		n++;
	}
	*args_r = n > 0 ? pool_keep(p->pool, args) : (free(args), NULL);
	*n_r = n;
	return true;
fail:
	free(args);
	return false;
}

int imap_parse_command(const char *text, size_t len, struct imap_command *cmd,
		       const char **error_r)
{
	memset(cmd, 0, sizeof(*cmd));
	struct pool *pool = xcalloc(1, sizeof(*pool));
	cmd->pool = pool;
	struct parse p = {.s = text, .len = len, .pool = pool};

	while (p.pos < len && is_tag_char((unsigned char)text[p.pos]))
		p.pos++;
	if (p.pos == 0 || (p.pos < len && text[p.pos] != ' ')) {
		*error_r = len == 0 ? "Empty command" : "Invalid tag";
		return -1;
	}
	cmd->tag = pool_strndup(pool, text, p.pos);
	if (p.pos >= len || p.pos + 1 >= len) {
		*error_r = "Missing command";
		return -1;
	}
	p.pos++;
	size_t start = p.pos;
	while (p.pos < len && text[p.pos] != ' ') {
		unsigned char c = (unsigned char)text[p.pos];
		if (!is_atom_char(c) || c == '[' || c == ']' || c == '%' || c == '*' ||
		    c == '\\') {
			*error_r = "Invalid command name";
			return -1;
		}
		p.pos++;
	}
	if (p.pos == start) {
		*error_r = "Missing command";
		return -1;
	}
	cmd->name = pool_strndup(pool, text + start, p.pos - start);
	for (char *s = cmd->name; *s; s++)
		if (*s >= 'a' && *s <= 'z')
			*s = (char)(*s - 'a' + 'A');
	if (p.pos < len) {
		p.pos++; /* SP; a trailing one is tolerated */
		if (p.pos < len && !parse_args(&p, 0, &cmd->args, &cmd->nargs)) {
			*error_r = p.error;
			return -1;
		}
	}
	return 0;
}

void imap_command_clear(struct imap_command *cmd)
{
	struct pool *p = cmd->pool;
	if (p != NULL) {
		for (size_t i = 0; i < p->n; i++)
			free(p->ptrs[i]);
		free(p->ptrs);
		free(p);
	}
	memset(cmd, 0, sizeof(*cmd));
}

/*
 * Streaming MIME parser (RFC 2045, 2046 5.1, 822/5322 header syntax).
 *
 * Trusts nothing: the input is a message from the network or the store.
 * The parser works on lines only where it must (header fields and the
 * first bytes of a body line, to recognise a boundary); everything else is
 * passed through as it arrives, so memory stays bounded by the limits
 * whatever the input.
 *
 * Boundary semantics follow Dovecot's message parser: a line starting with
 * "--" and one of the boundaries of the open multiparts (innermost first,
 * prefix match, anything may follow) is a boundary line; followed by "--"
 * it closes that multipart, whose epilogue then runs until an outer
 * boundary or the end. The newline before a boundary line belongs to the
 * boundary, not to the part before it. A boundary line inside a part's
 * header ends that header. A missing close boundary just lets the parts run
 * to the end of the message.
 */
#include "mail/mime.h"

#include "lib/xalloc.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

void mime_limits_default(struct mime_limits *l)
{
	l->max_depth = 100;
	l->max_parts = 10000;
	l->max_header_field = 64 * 1024;
	l->max_header_block = 1024 * 1024;
	l->max_params = 64;
	l->max_boundary = 200;
}

/* Position in the input with the line counts up to it. */
struct snap {
	uint64_t off, lf, bare_lf;
};

/* An open (not yet ended) part; open[d] is the one at depth d. */
struct open_part {
	struct mime_part *part;
	struct mime_part *last_child;
	struct snap header_start, body_start;
	bool boundary_active; /* multipart whose close boundary was not seen yet */
	size_t blen;
};

enum state {
	ST_PART_BEGIN,
	ST_HEADER,      /* at the start of a header line */
	ST_HEADER_LINE, /* inside a header line, copying to the field */
	ST_HEADER_END,
	ST_LINE_START, /* at the start of a body line; `hold` newline bytes before it */
	ST_BODY,       /* inside a body line */
	ST_CLOSE,      /* ending parts up to close_level after a boundary */
	ST_SKIP_LINE,  /* consuming the rest of a boundary line */
	ST_EOF_CLOSE,  /* ending every open part at the end of input */
	ST_DONE,
};

struct mime_parser {
	struct mime_limits lim;
	unsigned char *buf;
	size_t pos, len, cap;
	uint64_t buf_offset; /* input offset of buf[0] */
	bool eof;

	/* counts up to buf[pos] */
	uint64_t lf, bare_lf;
	unsigned char last; /* the byte before buf[pos] */

	enum state st;
	struct open_part *open;
	unsigned nopen;
	struct mime_part *root;
	bool root_stolen;
	unsigned nparts;
	bool limited;
	bool no_more_parts; /* max_parts reached: boundaries are no longer looked for */

	/* header field being collected */
	unsigned char *field;
	size_t field_len, field_cap;
	uint64_t field_offset;
	bool field_active, field_kept, field_trunc;
	size_t block_kept; /* bytes of fields kept in this header block */
	bool header_at_eof;

	size_t hold; /* ST_LINE_START: newline bytes at buf[pos] */

	/* Where the last header line's newline started: if a boundary line
	   ends the header, that newline belongs to the boundary. */
	struct snap eol;
	bool eol_valid;
	bool header_by_boundary;

	/* ST_CLOSE */
	unsigned close_level;
	bool close_is_end;
	struct snap close_at;
};

static struct snap snap_now(const struct mime_parser *p)
{
	struct snap s = {p->buf_offset + p->pos, p->lf, p->bare_lf};
	return s;
}

/* Move over n bytes, counting their line ends. */
static void consume(struct mime_parser *p, size_t n)
{
	const unsigned char *s = p->buf + p->pos;
	unsigned char last = p->last;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\n') {
			p->lf++;
			if (last != '\r')
				p->bare_lf++;
		}
		last = s[i];
	}
	if (n > 0)
		p->last = last;
	p->pos += n;
}

struct mime_parser *mime_parser_new(const struct mime_limits *limits)
{
	struct mime_parser *p = xcalloc(1, sizeof(*p));
	if (limits != NULL)
		p->lim = *limits;
	else
		mime_limits_default(&p->lim);
	if (p->lim.max_depth < 1)
		p->lim.max_depth = 1;
	if (p->lim.max_parts < 1)
		p->lim.max_parts = 1;
	if (p->lim.max_boundary < 1)
		p->lim.max_boundary = 1;
	p->open = xcalloc(p->lim.max_depth + 1, sizeof(*p->open));
	p->cap = 4096; /* never NULL: offsets into it are taken before any push */
	p->buf = xmalloc(p->cap);
	p->root = xcalloc(1, sizeof(*p->root));
	p->nparts = 1;
	p->no_more_parts = p->lim.max_parts <= 1;
	p->open[0].part = p->root;
	p->nopen = 1;
	p->st = ST_PART_BEGIN;
	return p;
}

int mime_parser_push(struct mime_parser *p, const void *data, size_t len)
{
	if (p->eof)
		return -1;
	if (data == NULL || len == 0) {
		if (data == NULL)
			p->eof = true;
		return 0;
	}
	if (p->pos > 0) {
		memmove(p->buf, p->buf + p->pos, p->len - p->pos);
		p->len -= p->pos;
		p->buf_offset += p->pos;
		p->pos = 0;
	}
	p->buf = xgrow(p->buf, &p->cap, p->len + len, 1);
	memcpy(p->buf + p->len, data, len);
	p->len += len;
	return 0;
}

bool mime_parser_done(const struct mime_parser *p)
{
	return p->st == ST_DONE;
}

struct mime_part *mime_parser_root(struct mime_parser *p)
{
	return p->root;
}

struct mime_part *mime_parser_steal_root(struct mime_parser *p)
{
	p->root_stolen = true;
	return p->root;
}

bool mime_parser_limited(const struct mime_parser *p)
{
	return p->limited;
}

void mime_params_free(struct mime_param **params, unsigned n)
{
	if (*params == NULL)
		return;
	for (unsigned i = 0; i < n; i++) {
		free((*params)[i].name);
		free((*params)[i].value);
	}
	xfree(params);
}

static void part_free_fields(struct mime_part *m)
{
	free(m->type);
	free(m->subtype);
	mime_params_free(&m->params, m->nparams);
	free(m->encoding);
	free(m->id);
	free(m->description);
	free(m->disposition);
	mime_params_free(&m->disp_params, m->ndisp_params);
	free(m->language);
	free(m->location);
	free(m->md5);
	free(m->envelope);
}

void mime_part_free(struct mime_part **rootp)
{
	struct mime_part *m = *rootp;
	/* Iterative: a hostile tree may be deep. Splice children into the
	   sibling list so that each node is visited once. */
	while (m != NULL) {
		if (m->children != NULL) {
			struct mime_part *last = m->children;
			while (last->next != NULL)
				last = last->next;
			last->next = m->next;
			m->next = m->children;
			m->children = NULL;
		}
		struct mime_part *next = m->next;
		part_free_fields(m);
		free(m);
		m = next;
	}
	*rootp = NULL;
}

void mime_parser_free(struct mime_parser **pp)
{
	struct mime_parser *p = *pp;
	if (p == NULL)
		return;
	if (!p->root_stolen)
		mime_part_free(&p->root);
	free(p->open);
	free(p->buf);
	free(p->field);
	xfree(pp);
}

const char *mime_param_get(const struct mime_param *params, unsigned n, const char *name)
{
	for (unsigned i = 0; i < n; i++) {
		if (strcasecmp(params[i].name, name) == 0)
			return params[i].value;
	}
	return NULL;
}

static struct open_part *top(struct mime_parser *p)
{
	return &p->open[p->nopen - 1];
}

/* Open a new child of the top part at the current position. */
static void open_child(struct mime_parser *p)
{
	struct open_part *o = top(p);
	struct mime_part *c = xcalloc(1, sizeof(*c));
	c->parent = o->part;
	c->depth = o->part->depth + 1;
	if (o->last_child == NULL)
		o->part->children = c;
	else
		o->last_child->next = c;
	o->last_child = c;
	o->part->nchildren++;
	p->nparts++;
	if (p->nparts >= p->lim.max_parts) {
		/* As Dovecot: no more boundaries, this part runs to the end. */
		p->no_more_parts = true;
		p->limited = true;
	}
	struct open_part *n = &p->open[p->nopen++];
	memset(n, 0, sizeof(*n));
	n->part = c;
	p->st = ST_PART_BEGIN;
}

static bool any_boundary(const struct mime_parser *p)
{
	if (p->no_more_parts)
		return false;
	for (unsigned i = p->nopen; i-- > 0;) {
		if (p->open[i].boundary_active)
			return true;
	}
	return false;
}

/*
 * Is the line at s (n bytes available) a boundary line of an open
 * multipart? 1 with *level_r and *end_r, 0 no, -1 need more input.
 */
static int match_boundary(struct mime_parser *p, const unsigned char *s, size_t n,
                          unsigned *level_r, bool *end_r)
{
	if (p->no_more_parts)
		return 0;
	if (n >= 1 && s[0] != '-')
		return 0;
	if (n >= 2 && s[1] != '-')
		return 0;
	/* Bytes of this line we can see: up to the LF, or all of them. */
	const unsigned char *lf = memchr(s, '\n', n);
	size_t line = lf != NULL ? (size_t)(lf - s) : n;
	bool complete = lf != NULL || p->eof;
	if (line < 2)
		return complete ? 0 : -1;
	for (unsigned i = p->nopen; i-- > 0;) {
		struct open_part *o = &p->open[i];
		if (!o->boundary_active)
			continue;
		if (line < 2 + o->blen) {
			if (!complete)
				return -1;
			continue;
		}
		if (memcmp(s + 2, o->part->boundary, o->blen) != 0)
			continue;
		/* RFC 2046 5.1.1: close delimiter is the boundary plus "--" */
		size_t rest = line - 2 - o->blen;
		if (rest < 2 && !complete)
			return -1;
		*level_r = i;
		*end_r = rest >= 2 && s[2 + o->blen] == '-' && s[3 + o->blen] == '-';
		return 1;
	}
	return 0;
}

static void finish_part(struct mime_parser *p, struct snap end)
{
	struct open_part *o = top(p);
	struct mime_part *m = o->part;
	m->body_offset = o->body_start.off;
	m->body_size = end.off - o->body_start.off;
	m->body_lines = end.lf - o->body_start.lf;
	m->body_vsize = m->body_size + (end.bare_lf - o->body_start.bare_lf);
	p->nopen--;
}

/* Header ended (blank line consumed, or EOF, or a boundary line). */
static void header_done_at(struct mime_parser *p, struct snap now)
{
	struct open_part *o = top(p);
	struct mime_part *m = o->part;
	m->header_offset = o->header_start.off;
	m->header_size = now.off - o->header_start.off;
	m->header_lines = now.lf - o->header_start.lf;
	m->header_vsize = m->header_size + (now.bare_lf - o->header_start.bare_lf);
	m->body_offset = now.off;
	o->body_start = now;
	p->st = ST_HEADER_END;
}

static void header_done(struct mime_parser *p)
{
	header_done_at(p, snap_now(p));
}

/* Decide what the part is now that its header is known. */
static void classify(struct mime_parser *p)
{
	struct open_part *o = top(p);
	struct mime_part *m = o->part;
	const char *type = m->type, *subtype = m->subtype;
	/* max_depth levels of parts: depths 0 .. max_depth-1 (as Dovecot counts) */
	bool container_room = m->depth + 2 <= p->lim.max_depth;

	if (type == NULL && m->parent != NULL && (m->parent->flags & MIME_PART_MULTIPART) &&
	    m->parent->subtype != NULL && strcasecmp(m->parent->subtype, "digest") == 0) {
		/* RFC 2046 5.1.5: the default in a digest is message/rfc822 */
		type = "message";
		subtype = "rfc822";
	}
	if (type == NULL || subtype == NULL)
		return;
	if (p->header_by_boundary)
		return; /* the body is empty: nothing to contain */
	if (strcasecmp(type, "multipart") == 0) {
		const char *b = mime_param_get(m->params, m->nparams, "boundary");
		if (b == NULL || *b == '\0' || strlen(b) > p->lim.max_boundary) {
			m->flags |= MIME_PART_NO_BOUNDARY;
			return;
		}
		if (!container_room) {
			m->flags |= MIME_PART_TOO_DEEP;
			p->limited = true;
			return;
		}
		m->boundary = (char *)b;
		m->flags |= MIME_PART_MULTIPART;
		o->boundary_active = true;
		o->blen = strlen(b);
	} else if (strcasecmp(type, "message") == 0 && strcasecmp(subtype, "rfc822") == 0) {
		if (!container_room) {
			m->flags |= MIME_PART_TOO_DEEP;
			p->limited = true;
			return;
		}
		if (p->nparts >= p->lim.max_parts) {
			p->limited = true;
			return;
		}
		m->flags |= MIME_PART_MESSAGE;
	}
}

static char *xstrndup_unfold(const unsigned char *v, size_t len)
{
	char *s = xmalloc(3 * len + 1);
	size_t j = 0;
	for (size_t i = 0; i < len; i++) {
		if (v[i] == '\r' || v[i] == '\n')
			continue;
		if (v[i] == '\0') {
			memcpy(s + j, "\xef\xbf\xbd", 3); /* U+FFFD, as Dovecot */
			j += 3;
			continue;
		}
		s[j++] = (char)v[i];
	}
	s[j] = '\0';
	/* trailing whitespace is not part of the value */
	while (j > 0 && (s[j - 1] == ' ' || s[j - 1] == '\t'))
		s[--j] = '\0';
	return s;
}

/* Remember a Content-* field of the part (the first of each kind wins). */
static void content_field(struct mime_parser *p, struct mime_part *m, const char *name, size_t nlen,
                          const unsigned char *v, size_t vlen)
{
	if (nlen < 9 || strncasecmp(name, "content-", 8) != 0)
		return;
	const char *n = name + 8;
	size_t l = nlen - 8;
#define IS(s) (l == sizeof(s) - 1 && strncasecmp(n, s, l) == 0)
	if (IS("type")) {
		if (m->type != NULL || (m->flags & MIME_PART_CONTENT_TYPE_BAD))
			return;
		char *type, *subtype;
		if (mime_parse_content_value((const char *)v, vlen, true, p->lim.max_params, &type,
		                             &subtype, &m->params, &m->nparams)) {
			m->type = type;
			m->subtype = subtype;
		} else {
			/* Dovecot: an unparsable type is reported as "" "" without parameters */
			m->flags |= MIME_PART_CONTENT_TYPE_BAD;
			mime_params_free(&m->params, m->nparams);
			m->nparams = 0;
			m->type = xstrdup("");
			m->subtype = xstrdup("");
		}
	} else if (IS("transfer-encoding")) {
		if (m->encoding != NULL)
			return;
		char *tok, *sub;
		struct mime_param *pp = NULL;
		unsigned np = 0;
		if (mime_parse_content_value((const char *)v, vlen, false, 0, &tok, &sub, &pp, &np))
			m->encoding = tok;
		mime_params_free(&pp, np);
	} else if (IS("id")) {
		if (m->id == NULL)
			m->id = xstrndup_unfold(v, vlen);
	} else if (IS("description")) {
		if (m->description == NULL)
			m->description = xstrndup_unfold(v, vlen);
	} else if (IS("disposition")) {
		if (m->disposition != NULL)
			return;
		char *tok, *sub;
		if (mime_parse_content_value((const char *)v, vlen, false, p->lim.max_params, &tok,
		                             &sub, &m->disp_params, &m->ndisp_params))
			m->disposition = tok;
		else
			mime_params_free(&m->disp_params, m->ndisp_params), m->ndisp_params = 0;
	} else if (IS("language")) {
		if (m->language == NULL)
			m->language = xstrndup_unfold(v, vlen);
	} else if (IS("location")) {
		if (m->location == NULL)
			m->location = xstrndup_unfold(v, vlen);
	} else if (IS("md5")) {
		if (m->md5 == NULL)
			m->md5 = xstrndup_unfold(v, vlen);
	}
#undef IS
}

/* Turn the collected field into an event. */
static void field_event(struct mime_parser *p, struct mime_event *ev)
{
	struct mime_part *m = top(p)->part;
	size_t len = p->field_len;
	const unsigned char *f = p->field;
	if (len > 0 && f[len - 1] == '\n')
		len--;
	if (len > 0 && f[len - 1] == '\r')
		len--;
	memset(ev, 0, sizeof(*ev));
	ev->type = MIME_EVENT_HEADER;
	ev->part = m;
	ev->offset = p->field_offset;
	ev->truncated = p->field_trunc;
	const unsigned char *colon = memchr(f, ':', len);
	const unsigned char *nl = memchr(f, '\n', len);
	if (colon == NULL || (nl != NULL && nl < colon)) {
		ev->name = (const char *)f;
		ev->name_len = 0;
		ev->value = f;
		ev->value_len = len;
	} else {
		size_t nlen = colon - f;
		while (nlen > 0 && (f[nlen - 1] == ' ' || f[nlen - 1] == '\t'))
			nlen--;
		size_t v = colon - f + 1;
		while (v < len && (f[v] == ' ' || f[v] == '\t'))
			v++;
		ev->name = (const char *)f;
		ev->name_len = nlen;
		ev->value = f + v;
		ev->value_len = len - v;
		content_field(p, m, ev->name, nlen, ev->value, ev->value_len);
	}
	p->field_active = false;
}

/* Flush the pending field: 1 if an event was produced. */
static int flush_field(struct mime_parser *p, struct mime_event *ev)
{
	if (!p->field_active)
		return 0;
	if (!p->field_kept) {
		p->field_active = false;
		return 0;
	}
	field_event(p, ev);
	return 1;
}

/* Copy header bytes [pos, pos+n) into the field (within limits), consume them. */
static void field_take(struct mime_parser *p, size_t n)
{
	struct mime_part *m = top(p)->part;
	const unsigned char *s = p->buf + p->pos;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\0')
			m->flags |= MIME_PART_HAS_NUL;
		else if (s[i] >= 0x80)
			m->flags |= MIME_PART_HEADER_8BIT;
	}
	if (p->field_kept) {
		size_t room = p->lim.max_header_field - p->field_len;
		size_t blk = p->lim.max_header_block - p->block_kept;
		if (blk < room)
			room = blk;
		size_t k = n < room ? n : room;
		if (k < n) {
			p->field_trunc = true;
			m->flags |= MIME_PART_HEADER_TRUNCATED;
			p->limited = true;
		}
		if (k > 0) {
			p->field = xgrow(p->field, &p->field_cap, p->field_len + k, 1);
			memcpy(p->field + p->field_len, s, k);
			p->field_len += k;
			p->block_kept += k;
		}
	}
	consume(p, n);
}

static int step_header(struct mime_parser *p, struct mime_event *ev)
{
	size_t n = p->len - p->pos;
	const unsigned char *s = p->buf + p->pos;
	if (n == 0) {
		if (!p->eof)
			return 0;
		/* header without an end: the body is empty */
		if (flush_field(p, ev))
			return 1;
		header_done(p);
		return -2;
	}
	/* blank line ends the header */
	if (s[0] == '\n' || s[0] == '\r') {
		if (s[0] == '\r' && n < 2 && !p->eof)
			return 0;
		if (s[0] == '\n' || (n >= 2 && s[1] == '\n')) {
			if (flush_field(p, ev))
				return 1;
			consume(p, s[0] == '\n' ? 1 : 2);
			header_done(p);
			return -2;
		}
	}
	/* a boundary line inside a part's header ends the header */
	if (s[0] == '-' && p->nopen > 1) {
		unsigned level;
		bool end;
		int r = match_boundary(p, s, n, &level, &end);
		if (r < 0)
			return 0;
		if (r > 0) {
			if (flush_field(p, ev))
				return 1;
			/* the header (and the empty body) end before the newline */
			p->header_by_boundary = true;
			header_done_at(p, p->eol_valid ? p->eol : snap_now(p));
			return -2;
		}
	}
	bool cont = s[0] == ' ' || s[0] == '\t';
	if (!cont || !p->field_active) {
		if (flush_field(p, ev))
			return 1;
		p->field_active = true;
		p->field_len = 0;
		p->field_trunc = false;
		p->field_offset = p->buf_offset + p->pos;
		p->field_kept = p->block_kept < p->lim.max_header_block;
		if (!p->field_kept) {
			top(p)->part->flags |= MIME_PART_HEADER_TRUNCATED;
			p->limited = true;
		}
	}
	p->st = ST_HEADER_LINE;
	return -2;
}

static void step_header_line(struct mime_parser *p)
{
	size_t n = p->len - p->pos;
	const unsigned char *lf = memchr(p->buf + p->pos, '\n', n);
	if (lf != NULL) {
		size_t i = lf - (p->buf + p->pos);
		bool crlf = i > 0 ? p->buf[p->pos + i - 1] == '\r' : p->last == '\r';
		field_take(p, i + 1);
		p->eol.off = p->buf_offset + p->pos - (crlf ? 2 : 1);
		p->eol.lf = p->lf - 1;
		p->eol.bare_lf = p->bare_lf - (crlf ? 0 : 1);
		p->eol_valid = true;
		p->st = ST_HEADER;
	} else {
		field_take(p, n);
		if (p->eof)
			p->st = ST_HEADER;
	}
}

static void body_event(struct mime_parser *p, struct mime_event *ev, size_t n)
{
	memset(ev, 0, sizeof(*ev));
	ev->type = MIME_EVENT_BODY;
	ev->part = top(p)->part;
	ev->offset = p->buf_offset + p->pos;
	ev->data = p->buf + p->pos;
	ev->len = n;
	consume(p, n);
}

/* One step; 1 event, 0 need input, -2 continue. */
static int step(struct mime_parser *p, struct mime_event *ev)
{
	switch (p->st) {
	case ST_PART_BEGIN: {
		struct open_part *o = top(p);
		o->header_start = snap_now(p);
		o->part->header_offset = o->header_start.off;
		p->block_kept = 0;
		p->field_active = false;
		p->eol_valid = false;
		p->header_by_boundary = false;
		memset(ev, 0, sizeof(*ev));
		ev->type = MIME_EVENT_PART_BEGIN;
		ev->part = o->part;
		ev->offset = o->header_start.off;
		p->st = ST_HEADER;
		return 1;
	}
	case ST_HEADER:
		return step_header(p, ev);
	case ST_HEADER_LINE:
		if (p->pos == p->len && !p->eof)
			return 0;
		step_header_line(p);
		return -2;
	case ST_HEADER_END: {
		classify(p);
		struct open_part *o = top(p);
		memset(ev, 0, sizeof(*ev));
		ev->type = MIME_EVENT_HEADER_END;
		ev->part = o->part;
		ev->offset = o->body_start.off;
		if (o->part->flags & MIME_PART_MESSAGE) {
			open_child(p);
		} else {
			p->st = ST_LINE_START;
			p->hold = 0;
		}
		return 1;
	}
	case ST_LINE_START: {
		size_t n = p->len - p->pos;
		if (!any_boundary(p)) {
			p->header_by_boundary = false;
			p->st = ST_BODY;
			if (p->hold > 0) {
				size_t h = p->hold;
				p->hold = 0;
				body_event(p, ev, h);
				return 1;
			}
			return -2;
		}
		unsigned level = 0;
		bool end = false;
		int r = match_boundary(p, p->buf + p->pos + p->hold, n - p->hold, &level, &end);
		if (r < 0) {
			if (!p->eof)
				return 0;
			r = 0;
		}
		if (r == 0) {
			p->header_by_boundary = false;
			p->st = ST_BODY;
			if (p->hold > 0) {
				size_t h = p->hold;
				p->hold = 0;
				body_event(p, ev, h);
				return 1;
			}
			return -2;
		}
		p->close_at = snap_now(p);
		if (p->header_by_boundary) {
			/* right after a header cut short by this boundary line */
			p->close_at = top(p)->body_start;
			p->header_by_boundary = false;
		}
		consume(p, p->hold);
		p->hold = 0;
		p->close_level = level;
		p->close_is_end = end;
		p->st = ST_CLOSE;
		return -2;
	}
	case ST_BODY: {
		size_t n = p->len - p->pos;
		if (n == 0) {
			if (!p->eof)
				return 0;
			p->st = ST_EOF_CLOSE;
			return -2;
		}
		if (!any_boundary(p)) {
			body_event(p, ev, n);
			return 1;
		}
		const unsigned char *s = p->buf + p->pos;
		const unsigned char *lf = memchr(s, '\n', n);
		if (lf != NULL) {
			size_t i = lf - s, nl = i;
			if (i > 0 && s[i - 1] == '\r')
				nl = i - 1;
			p->st = ST_LINE_START;
			p->hold = i + 1 - nl;
			if (nl > 0) {
				body_event(p, ev, nl);
				return 1;
			}
			return -2;
		}
		size_t k = n;
		if (!p->eof && s[n - 1] == '\r')
			k--; /* may be the start of the CRLF before a boundary */
		if (k == 0)
			return 0;
		body_event(p, ev, k);
		return 1;
	}
	case ST_CLOSE:
		if (p->nopen - 1 > p->close_level) {
			struct mime_part *m = top(p)->part;
			finish_part(p, p->close_at);
			memset(ev, 0, sizeof(*ev));
			ev->type = MIME_EVENT_PART_END;
			ev->part = m;
			ev->offset = p->close_at.off;
			return 1;
		}
		p->st = ST_SKIP_LINE;
		return -2;
	case ST_SKIP_LINE: {
		size_t n = p->len - p->pos;
		const unsigned char *lf = memchr(p->buf + p->pos, '\n', n);
		if (lf == NULL) {
			consume(p, n);
			if (!p->eof)
				return 0;
		} else {
			consume(p, (size_t)(lf - (p->buf + p->pos)) + 1);
		}
		struct open_part *o = top(p);
		if (p->close_is_end) {
			o->boundary_active = false;
			p->st = ST_LINE_START;
			p->hold = 0;
		} else if (p->nparts >= p->lim.max_parts) {
			p->no_more_parts = true;
			p->limited = true;
			p->st = ST_LINE_START;
			p->hold = 0;
		} else {
			open_child(p);
		}
		return -2;
	}
	case ST_EOF_CLOSE:
		if (p->nopen > 0) {
			struct mime_part *m = top(p)->part;
			finish_part(p, snap_now(p));
			memset(ev, 0, sizeof(*ev));
			ev->type = MIME_EVENT_PART_END;
			ev->part = m;
			ev->offset = p->buf_offset + p->pos;
			return 1;
		}
		p->st = ST_DONE;
		return 0;
	case ST_DONE:
		return 0;
	}
	return -1;
}

int mime_parser_next(struct mime_parser *p, struct mime_event *ev)
{
	/* Every step either consumes input, changes state towards the end of
	   the message, or returns; the bound only guards against a bug. */
	for (unsigned i = 0; i < 1000000; i++) {
		int r = step(p, ev);
		if (r != -2)
			return r;
	}
	fatal("mime parser made no progress (state %d)", (int)p->st);
}

/*
 * IMAP commands on messages: FETCH (with CONDSTORE CHANGEDSINCE), STORE
 * (UNCHANGEDSINCE), COPY and MOVE (UIDPLUS COPYUID), EXPUNGE and UID
 * EXPUNGE. Runs on worker threads (see imap-private.h).
 *
 * FETCH reads only the index for FLAGS, UID, INTERNALDATE, RFC822.SIZE,
 * MODSEQ, ENVELOPE, BODY and BODYSTRUCTURE; body sections open the file.
 */
#include "imap/imap-private.h"

#include "imap/imap_seqset.h"
#include "lib/config.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "mail/mime.h"

#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_FETCH_ITEMS 64
#define FETCH_BATCH 512 /* messages whose cache records are read in one index scan */

/* ------------------------------------------------------------------ */
/* sets */

int imap_resolve_set(struct imap_session *s, const char *text, bool uid, size_t **idx_r,
		     size_t *n_r)
{
	struct imap_view *v = &s->view;
	*idx_r = NULL;
	*n_r = 0;
	const uint32_t *uids = v->uids;
	struct imap_seqset set;
	const char *err;
	uint32_t max = uid ? (v->n > 0 ? uids[v->n - 1] : 0) : (uint32_t)v->n;
	if (imap_seqset_parse(text, max, &set, &err) < 0) {
		imap_seqset_free(&set);
		return -1;
	}
	if (set.saved) {
		/* SEARCHRES: the UIDs saved by the last SEARCH RETURN (SAVE) */
		imap_seqset_free(&set);
		set = (struct imap_seqset){0};
		for (size_t i = 0; i < v->saved_uids_n; i++)
			imap_seqset_add(&set, v->saved_uids[i], v->saved_uids[i]);
		uid = true;
	} else if (!uid && imap_seqset_last(&set) > v->n) {
		imap_seqset_free(&set);
		return -1; /* RFC 9051 6.4.4: an MSN beyond the mailbox is an error */
	}
	size_t *idx = xmalloc((v->n + 1) * sizeof(size_t));
	size_t n = 0;
	if (uid) {
		uint32_t *pos = xmalloc((v->n + 1) * sizeof(uint32_t));
		size_t k = imap_seqset_filter(&set, uids, v->n, true, pos);
		for (size_t i = 0; i < k; i++)
			idx[n++] = pos[i];
		free(pos);
	} else {
		uint64_t it = 0;
		uint32_t msn;
		while (imap_seqset_next(&set, &it, &msn))
			if (msn >= 1 && msn <= v->n)
				idx[n++] = msn - 1;
	}
	imap_seqset_free(&set);
	*idx_r = idx;
	*n_r = n;
	return 0;
}

/* ------------------------------------------------------------------ */
/* FETCH items */

enum item_kind {
	IT_FLAGS,
	IT_UID,
	IT_INTERNALDATE,
	IT_SIZE,
	IT_ENVELOPE,
	IT_BODY,          /* BODY without section: structure */
	IT_BODYSTRUCTURE,
	IT_MODSEQ,
	IT_SECTION,       /* BODY[...] / BODY.PEEK[...] / RFC822* */
	IT_BINARY,        /* BINARY[part] / BINARY.PEEK[part] (RFC 3516) */
	IT_BINARY_SIZE,   /* BINARY.SIZE[part] */
};

struct item {
	enum item_kind kind;
	bool peek;
	char *spec;        /* section spec without brackets, e.g. "1.HEADER" (upper-cased) */
	char **fields;     /* HEADER.FIELDS (.NOT) list */
	size_t nfields;
	bool fields_not;
	bool partial;
	uint64_t origin, count;
	const char *label; /* RFC822, RFC822.HEADER, RFC822.TEXT: response name; NULL: BODY[...] */
};

struct fetch {
	struct item items[MAX_FETCH_ITEMS];
	size_t n;
	bool need_cache, need_body, set_seen;
	bool unknown_cte; /* a BINARY section had an encoding we cannot decode */
	uint64_t changedsince;
	bool has_changedsince, vanished;
};

static void fetch_free(struct fetch *f)
{
	for (size_t i = 0; i < f->n; i++) {
		free(f->items[i].spec);
		for (size_t k = 0; k < f->items[i].nfields; k++)
			free(f->items[i].fields[k]);
		free(f->items[i].fields);
	}
}

static struct item *add_item(struct fetch *f, enum item_kind kind)
{
	if (f->n >= MAX_FETCH_ITEMS)
		return NULL;
	struct item *it = &f->items[f->n++];
	memset(it, 0, sizeof(*it));
	it->kind = kind;
	return it;
}

/* Parse "[spec]<o.c>" following BODY or BODY.PEEK. */
static int parse_section(struct item *it, const char *p, const char **error_r)
{
	const char *close = strrchr(p, ']');
	if (*p != '[' || close == NULL) {
		*error_r = "Invalid section";
		return -1;
	}
	char *spec = xstrndup(p + 1, (size_t)(close - p - 1));
	/* field list: "HEADER.FIELDS (A B)" */
	char *paren = strchr(spec, '(');
	if (paren != NULL) {
		char *end = strrchr(spec, ')');
		if (end == NULL || end < paren || end[1] != '\0' || paren == spec ||
		    paren[-1] != ' ') {
			free(spec);
			*error_r = "Invalid header field list";
			return -1;
		}
		*end = '\0';
		char *list = paren + 1;
		paren[-1] = '\0';
		for (char *tok = strtok(list, " "); tok != NULL; tok = strtok(NULL, " ")) {
			if (it->nfields >= 100) {
				free(spec);
				*error_r = "Too many header fields";
				return -1;
			}
			char *fld = tok;
			size_t fl = strlen(fld);
			if (fl >= 2 && fld[0] == '"' && fld[fl - 1] == '"') {
				fld[fl - 1] = '\0';
				fld++;
			}
			it->fields = xrealloc(it->fields, (it->nfields + 1) * sizeof(char *));
			it->fields[it->nfields++] = xstrdup(fld);
		}
		if (it->nfields == 0) {
			free(spec);
			*error_r = "Empty header field list";
			return -1;
		}
	}
	for (char *c = spec; *c != '\0'; c++)
		*c = (char)toupper((unsigned char)*c);
	size_t sl = strlen(spec);
	if (paren != NULL) {
		if (sl >= 17 && strcmp(spec + sl - 17, "HEADER.FIELDS.NOT") == 0)
			it->fields_not = true;
		else if (!(sl >= 13 && strcmp(spec + sl - 13, "HEADER.FIELDS") == 0)) {
			free(spec);
			*error_r = "Field list only after HEADER.FIELDS";
			return -1;
		}
	}
	it->spec = spec;
	const char *rest = close + 1;
	if (*rest == '<') {
		unsigned long long o, c;
		char tail;
		if (sscanf(rest, "<%llu.%llu%c", &o, &c, &tail) != 3 || tail != '>' || c == 0) {
			*error_r = "Invalid partial";
			return -1;
		}
		it->partial = true;
		it->origin = o;
		it->count = c;
		rest = strchr(rest, '>') + 1;
	}
	if (*rest != '\0') {
		*error_r = "Garbage after section";
		return -1;
	}
	return 0;
}

static int parse_item(struct fetch *f, const struct imap_arg *a, const char **error_r)
{
	if (a->type != IMAP_ARG_ATOM) {
		*error_r = "Invalid fetch item";
		return -1;
	}
	const char *w = a->str;
	struct item *it;
	static const struct {
		const char *name;
		enum item_kind kind;
	} simple[] = {
		{"FLAGS", IT_FLAGS},       {"UID", IT_UID},
		{"INTERNALDATE", IT_INTERNALDATE}, {"RFC822.SIZE", IT_SIZE},
		{"ENVELOPE", IT_ENVELOPE}, {"BODY", IT_BODY},
		{"BODYSTRUCTURE", IT_BODYSTRUCTURE}, {"MODSEQ", IT_MODSEQ},
	};
	for (size_t i = 0; i < sizeof(simple) / sizeof(simple[0]); i++) {
		if (strcasecmp(w, simple[i].name) == 0) {
			if ((it = add_item(f, simple[i].kind)) == NULL)
				goto toomany;
			if (it->kind == IT_ENVELOPE || it->kind == IT_BODY ||
			    it->kind == IT_BODYSTRUCTURE)
				f->need_cache = true;
			return 0;
		}
	}
	if (strcasecmp(w, "ALL") == 0 || strcasecmp(w, "FAST") == 0 || strcasecmp(w, "FULL") == 0) {
		enum item_kind k[] = {IT_FLAGS, IT_INTERNALDATE, IT_SIZE, IT_ENVELOPE, IT_BODY};
		size_t nk = strcasecmp(w, "FAST") == 0 ? 3 : strcasecmp(w, "ALL") == 0 ? 4 : 5;
		for (size_t i = 0; i < nk; i++)
			if (add_item(f, k[i]) == NULL)
				goto toomany;
		if (nk > 3)
			f->need_cache = true;
		return 0;
	}
	static const struct {
		const char *name, *spec;
		bool peek;
	} rfc822[] = {
		{"RFC822", "", false},
		{"RFC822.HEADER", "HEADER", true},
		{"RFC822.TEXT", "TEXT", false},
	};
	for (size_t i = 0; i < 3; i++) {
		if (strcasecmp(w, rfc822[i].name) == 0) {
			if ((it = add_item(f, IT_SECTION)) == NULL)
				goto toomany;
			it->spec = xstrdup(rfc822[i].spec);
			it->peek = rfc822[i].peek;
			it->label = rfc822[i].name;
			f->need_body = true;
			if (!it->peek)
				f->set_seen = true;
			return 0;
		}
	}
	bool bsize = strncasecmp(w, "BINARY.SIZE[", 12) == 0;
	bool bpeek = strncasecmp(w, "BINARY.PEEK[", 12) == 0;
	if (bsize || bpeek || strncasecmp(w, "BINARY[", 7) == 0) {
		if ((it = add_item(f, bsize ? IT_BINARY_SIZE : IT_BINARY)) == NULL)
			goto toomany;
		it->peek = bpeek || bsize;
		if (parse_section(it, w + (bsize || bpeek ? 11 : 6), error_r) < 0)
			return -1;
		for (const char *c = it->spec; *c != '\0'; c++) {
			if (!(*c >= '0' && *c <= '9') && *c != '.') {
				*error_r = "BINARY takes part numbers only";
				return -1;
			}
		}
		if (bsize && it->partial) {
			*error_r = "BINARY.SIZE takes no partial";
			return -1;
		}
		f->need_body = true;
		if (!it->peek)
			f->set_seen = true;
		return 0;
	}
	bool peek = strncasecmp(w, "BODY.PEEK[", 10) == 0;
	if (peek || strncasecmp(w, "BODY[", 5) == 0) {
		if ((it = add_item(f, IT_SECTION)) == NULL)
			goto toomany;
		it->peek = peek;
		if (parse_section(it, w + (peek ? 9 : 4), error_r) < 0)
			return -1;
		f->need_body = true;
		if (!peek)
			f->set_seen = true;
		return 0;
	}
	*error_r = "Unknown fetch item";
	return -1;
toomany:
	*error_r = "Too many fetch items";
	return -1;
}

static void write_date(struct evbuffer *out, int64_t t)
{
	static const char *const mon[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	evbuffer_add_printf(out, "\"%02d-%s-%04d %02d:%02d:%02d +0000\"", tm.tm_mday,
			    mon[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* A message loaded for body sections. */
struct loaded {
	unsigned char *data;
	size_t len;
	struct mime_part *root;
};

static int load_message(struct imap_session *s, uint32_t uid, struct loaded *l, char **err_r)
{
	memset(l, 0, sizeof(*l));
	int fd;
	if (mbox_msg_open(s->view.box, uid, &fd, err_r) < 0)
		return -1;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		close(fd);
		*err_r = xasprintf("fstat: %s", strerror(errno));
		errno = EIO;
		return -1;
	}
	size_t len = (size_t)st.st_size;
	l->data = xmalloc(len + 1);
	size_t got = 0;
	while (got < len) {
		ssize_t r = pread(fd, l->data + got, len - got, (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	l->len = got;
	l->data[got] = '\0';
	return 0;
}

static void loaded_free(struct loaded *l)
{
	free(l->data);
	mime_part_free(&l->root);
}

/* Does header line name (up to ':') match one of the fields? */
static bool field_listed(const struct item *it, const unsigned char *line, size_t len)
{
	const unsigned char *colon = memchr(line, ':', len);
	if (colon == NULL)
		return false;
	size_t nl = (size_t)(colon - line);
	while (nl > 0 && (line[nl - 1] == ' ' || line[nl - 1] == '\t'))
		nl--;
	for (size_t i = 0; i < it->nfields; i++)
		if (strlen(it->fields[i]) == nl && strncasecmp(it->fields[i], (const char *)line, nl) == 0)
			return true;
	return false;
}

/* Copy the header block [p, p+n) keeping (or dropping) the listed fields, CRLF line ends,
   and the final empty line. */
static void filter_header(const struct item *it, const unsigned char *p, size_t n,
			  struct evbuffer *dst)
{
	size_t i = 0;
	bool keep = false;
	while (i < n) {
		const unsigned char *nl = memchr(p + i, '\n', n - i);
		size_t end = nl != NULL ? (size_t)(nl - p) + 1 : n;
		const unsigned char *line = p + i;
		size_t len = end - i;
		size_t text = len;
		if (text > 0 && line[text - 1] == '\n')
			text--;
		if (text > 0 && line[text - 1] == '\r')
			text--;
		if (text == 0)
			break; /* the blank line ending the header */
		if (line[0] != ' ' && line[0] != '\t') {
			bool listed = field_listed(it, line, text);
			keep = it->fields_not ? !listed : listed;
		}
		if (keep) {
			evbuffer_add(dst, line, text);
			evbuffer_add(dst, "\r\n", 2);
		}
		i = end;
	}
	evbuffer_add(dst, "\r\n", 2);
}

static void write_section(struct imap_session *s, struct evbuffer *out, const struct item *it,
			  struct loaded *l)
{
	if (it->label != NULL)
		evbuffer_add_printf(out, "%s ", it->label);
	else
		evbuffer_add_printf(out, "BODY[%s%s", it->spec, it->nfields > 0 ? " (" : "");
	if (it->label == NULL) {
		for (size_t i = 0; i < it->nfields; i++)
			evbuffer_add_printf(out, "%s\"%s\"", i > 0 ? " " : "", it->fields[i]);
		evbuffer_add_printf(out, "%s]", it->nfields > 0 ? ")" : "");
		if (it->partial)
			evbuffer_add_printf(out, "<%llu>", (unsigned long long)it->origin);
		evbuffer_add(out, " ", 1);
	}
	/* the section's bytes, CRLF-normalised */
	struct evbuffer *content = evbuffer_new();
	if (it->spec[0] == '\0' && !it->partial) {
		/* the whole message: stored with CRLF already; normalise anyway */
		size_t cap = l->len * 2 + 2;
		unsigned char *buf = xmalloc(cap);
		size_t w = mime_copy_crlf(l->data, 0, l->len, 0, buf, cap);
		evbuffer_add(content, buf, w);
		free(buf);
	} else {
		if (l->root == NULL)
			l->root = mime_message_parse(l->data, l->len, NULL);
		struct mime_section sec;
		const char *err;
		char *spec = xstrdup(it->spec);
		/* mime_section_find() wants "HEADER.FIELDS (...)": the list itself is ours */
		char *full = it->nfields > 0 ? xasprintf("%s (X)", spec) : xstrdup(spec);
		if (mime_section_find(l->root, full, &sec, &err) == 0) {
			if (it->nfields > 0) {
				filter_header(it, l->data + sec.offset, sec.size, content);
			} else {
				size_t cap = sec.size * 2 + 2;
				unsigned char *buf = xmalloc(cap);
				size_t w = mime_copy_crlf(l->data, sec.offset, sec.size, 0, buf, cap);
				evbuffer_add(content, buf, w);
				free(buf);
			}
		}
		free(full);
		free(spec);
	}
	size_t len = evbuffer_get_length(content);
	size_t from = 0, n = len;
	if (it->partial) {
		from = it->origin < len ? (size_t)it->origin : len;
		n = len - from;
		if (n > it->count)
			n = (size_t)it->count;
	}
	evbuffer_add_printf(out, "{%zu}\r\n", n);
	if (from > 0)
		evbuffer_drain(content, from);
	evbuffer_remove_buffer(content, out, n);
	evbuffer_free(content);
}

/* ---- BINARY (RFC 3516): content-transfer-decoding of a part ---- */

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Lenient base64: line breaks and stray octets skipped, stops at '='. */
static size_t decode_base64(const unsigned char *in, size_t n, unsigned char *out)
{
	size_t w = 0;
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < n; i++) {
		if (in[i] == '=')
			break;
		int v = b64_value(in[i]);
		if (v < 0)
			continue;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[w++] = (unsigned char)(acc >> bits);
		}
	}
	return w;
}

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Quoted-printable (RFC 2045 6.7): =XX, soft line breaks; a bad '=' is kept. */
static size_t decode_qp(const unsigned char *in, size_t n, unsigned char *out)
{
	size_t w = 0;
	for (size_t i = 0; i < n; i++) {
		if (in[i] != '=') {
			out[w++] = in[i];
			continue;
		}
		size_t k = i + 1;
		while (k < n && (in[k] == ' ' || in[k] == '\t'))
			k++;
		if (k < n && (in[k] == '\r' || in[k] == '\n')) {
			/* soft line break */
			if (in[k] == '\r' && k + 1 < n && in[k + 1] == '\n')
				k++;
			i = k;
			continue;
		}
		if (i + 2 < n && hexval(in[i + 1]) >= 0 && hexval(in[i + 2]) >= 0) {
			out[w++] = (unsigned char)(hexval(in[i + 1]) << 4 | hexval(in[i + 2]));
			i += 2;
			continue;
		}
		out[w++] = '=';
	}
	return w;
}

/* The decoded content of a BINARY section into `content`; -1 for an unknown encoding. */
static int binary_content(const struct item *it, struct loaded *l, struct evbuffer *content)
{
	if (it->spec[0] == '\0') {
		evbuffer_add(content, l->data, l->len);
		return 0;
	}
	if (l->root == NULL)
		l->root = mime_message_parse(l->data, l->len, NULL);
	struct mime_section sec;
	const char *err;
	if (mime_section_find(l->root, it->spec, &sec, &err) < 0)
		return 0; /* no such part: empty */
	const char *enc = sec.part != NULL ? sec.part->encoding : NULL;
	const unsigned char *p = l->data + sec.offset;
	size_t n = (size_t)sec.size;
	bool leaf = sec.part != NULL && !(sec.part->flags & (MIME_PART_MULTIPART | MIME_PART_MESSAGE));
	if (!leaf || enc == NULL || strcasecmp(enc, "7bit") == 0 || strcasecmp(enc, "8bit") == 0 ||
	    strcasecmp(enc, "binary") == 0) {
		evbuffer_add(content, p, n);
		return 0;
	}
	unsigned char *buf = xmalloc(n + 1);
	size_t w;
	if (strcasecmp(enc, "base64") == 0)
		w = decode_base64(p, n, buf);
	else if (strcasecmp(enc, "quoted-printable") == 0)
		w = decode_qp(p, n, buf);
	else {
		free(buf);
		return -1;
	}
	evbuffer_add(content, buf, w);
	free(buf);
	return 0;
}

static void write_binary(struct imap_session *s, struct evbuffer *out, const struct item *it,
			 struct loaded *l, bool *unknown_cte)
{
	struct evbuffer *content = evbuffer_new();
	if (binary_content(it, l, content) < 0) {
		*unknown_cte = true;
		evbuffer_free(content);
		if (it->kind == IT_BINARY_SIZE)
			evbuffer_add_printf(out, "BINARY.SIZE[%s] 0", it->spec);
		else
			evbuffer_add_printf(out, "BINARY[%s] NIL", it->spec);
		return;
	}
	size_t len = evbuffer_get_length(content);
	if (it->kind == IT_BINARY_SIZE) {
		evbuffer_add_printf(out, "BINARY.SIZE[%s] %zu", it->spec, len);
		evbuffer_free(content);
		return;
	}
	size_t from = 0, n = len;
	if (it->partial) {
		from = it->origin < len ? (size_t)it->origin : len;
		n = len - from;
		if (n > it->count)
			n = (size_t)it->count;
	}
	if (from > 0)
		evbuffer_drain(content, from);
	/* literal8 when the data holds a NUL (RFC 3516 4.3) */
	bool nul = evbuffer_search(content, "\0", 1, NULL).pos >= 0 &&
		   (size_t)evbuffer_search(content, "\0", 1, NULL).pos < n;
	evbuffer_add_printf(out, "BINARY[%s]", it->spec);
	if (it->partial)
		evbuffer_add_printf(out, "<%llu>", (unsigned long long)it->origin);
	evbuffer_add_printf(out, " %s{%zu}\r\n", nul ? "~" : "", n);
	evbuffer_remove_buffer(content, out, n);
	evbuffer_free(content);
}

/* One message's FETCH response (m: its record). 0, or -1 if the message vanished meanwhile. */
static int fetch_one(struct imap_job *j, struct fetch *f, size_t idx, const struct mbox_msg *m,
                     bool add_flags, struct mbox_cache *preloaded)
{
	struct imap_session *s = j->s;
	struct mbox_cache cache = {0};
	bool have_cache = false;
	struct loaded l = {0};
	bool have_body = false;
	char *err = NULL;
	if (f->need_cache && preloaded != NULL && preloaded->envelope != NULL) {
		cache = *preloaded; /* taken over: cleared below */
		memset(preloaded, 0, sizeof(*preloaded));
		have_cache = true;
	} else if (f->need_cache) {
		if (mbox_msg_cache(s->view.box, m->uid, &cache, &err) < 0) {
			free(err);
			return -1;
		}
		have_cache = true;
	}
	if (f->need_body) {
		if (load_message(s, m->uid, &l, &err) < 0) {
			free(err);
			mbox_cache_clear(&cache);
			return -1;
		}
		have_body = true;
	}
	struct evbuffer *out = j->out;
	evbuffer_add_printf(out, "* %zu FETCH (", idx + 1);
	bool first = true;
	bool uid_done = false, flags_done = false, modseq_done = false;
#define SEP() (first ? (first = false, "") : " ")
	if (j->uid) {
		/* UID first, as Dovecot does: clients find it before any literal */
		evbuffer_add_printf(out, "%sUID %u", SEP(), m->uid);
		uid_done = true;
	}
	for (size_t i = 0; i < f->n; i++) {
		const struct item *it = &f->items[i];
		switch (it->kind) {
		case IT_FLAGS:
			if (flags_done)
				break;
			evbuffer_add_printf(out, "%sFLAGS ", SEP());
			imap_write_msg_flags(s, out, m->flags, m->keywords);
			flags_done = true;
			break;
		case IT_UID:
			if (uid_done)
				break;
			evbuffer_add_printf(out, "%sUID %u", SEP(), m->uid);
			uid_done = true;
			break;
		case IT_INTERNALDATE:
			evbuffer_add_printf(out, "%sINTERNALDATE ", SEP());
			write_date(out, m->internaldate);
			break;
		case IT_SIZE:
			evbuffer_add_printf(out, "%sRFC822.SIZE %llu", SEP(),
					    (unsigned long long)m->size);
			break;
		case IT_ENVELOPE:
			evbuffer_add_printf(out, "%sENVELOPE %s", SEP(),
					    have_cache && cache.envelope != NULL ? cache.envelope
										  : "NIL");
			break;
		case IT_BODY:
			evbuffer_add_printf(out, "%sBODY %s", SEP(),
					    have_cache && cache.body != NULL ? cache.body : "NIL");
			break;
		case IT_BODYSTRUCTURE:
			evbuffer_add_printf(out, "%sBODYSTRUCTURE %s", SEP(),
					    have_cache && cache.bodystructure != NULL
						    ? cache.bodystructure
						    : "NIL");
			break;
		case IT_MODSEQ:
			if (modseq_done)
				break;
			evbuffer_add_printf(out, "%sMODSEQ (%llu)", SEP(),
					    (unsigned long long)m->modseq);
			modseq_done = true;
			break;
		case IT_SECTION:
			evbuffer_add_printf(out, "%s", SEP());
			if (have_body)
				write_section(s, out, it, &l);
			break;
		case IT_BINARY:
		case IT_BINARY_SIZE:
			evbuffer_add_printf(out, "%s", SEP());
			if (have_body)
				write_binary(s, out, it, &l, &f->unknown_cte);
			break;
		}
	}
	if (add_flags && !flags_done) {
		evbuffer_add_printf(out, "%sFLAGS ", SEP());
		imap_write_msg_flags(s, out, m->flags, m->keywords);
	}
	if (s->condstore && !modseq_done)
		evbuffer_add_printf(out, "%sMODSEQ (%llu)", SEP(), (unsigned long long)m->modseq);
#undef SEP
	evbuffer_add(out, ")\r\n", 3);
	if (have_cache)
		mbox_cache_clear(&cache);
	if (have_body)
		loaded_free(&l);
	return 0;
}

/* Apply changed records from the store to the view (keeping \Recent). */
static void view_update(struct imap_view *v, const struct mbox_msg *ch, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		long idx = imap_view_find(v, ch[i].uid);
		if (idx >= 0)
			imap_view_set(v, (size_t)idx, &ch[i]);
	}
}

/* Does the FETCH need the index's records (sizes, dates, MODSEQ), not only the view's? */
static bool fetch_needs_records(const struct imap_session *s, const struct fetch *f)
{
	if (s->condstore || f->has_changedsince)
		return true;
	for (size_t i = 0; i < f->n; i++)
		if (f->items[i].kind == IT_INTERNALDATE || f->items[i].kind == IT_SIZE ||
		    f->items[i].kind == IT_MODSEQ)
			return true;
	return false;
}

/*
 * CHANGEDSINCE: the records of the messages changed since `since`, through the
 * index's MODSEQ order (a client polling a large folder reads only what changed);
 * the others get MODSEQ 0 and are skipped like any unchanged one.
 */
static struct mbox_msg *changed_records(struct imap_session *s, const size_t *idx, size_t n,
                                        uint64_t since, bool **gone_r)
{
	struct imap_view *v = &s->view;
	struct mbox_msg *ch = NULL;
	uint32_t *ex = NULL;
	size_t nch = 0, nex = 0;
	char *err = NULL;
	if (mbox_changes(v->box, since, &ch, &nch, &ex, &nex, &err) < 0) {
		free(err);
		return imap_view_records(s, idx, n, gone_r);
	}
	free(ex);
	struct mbox_msg *recs = xcalloc(n + 1, sizeof(*recs));
	*gone_r = xcalloc(n + 1, sizeof(bool));
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t uid = v->uids[idx[i]];
		while (k < nch && ch[k].uid < uid)
			k++;
		if (k < nch && ch[k].uid == uid) {
			recs[i] = ch[k];
			recs[i].flags =
			    (recs[i].flags & ~MBOX_F_RECENT) | (v->flags[idx[i]] & MBOX_F_RECENT);
		} else {
			imap_view_msg(v, idx[i], &recs[i]); /* modseq 0: not changed */
		}
	}
	free(ch);
	return recs;
}

void imap_cmd_fetch(struct imap_job *j)
{
	struct imap_session *s = j->s;
	struct fetch f = {0};
	const char *err = NULL;
	if (j->nargs < 2 || j->nargs > 3 || j->args[0].type != IMAP_ARG_ATOM) {
		imap_reply(j->out, "%s BAD Syntax: FETCH set items", j->tag);
		return;
	}
	const struct imap_arg *items = &j->args[1];
	if (items->type == IMAP_ARG_LIST) {
		for (size_t i = 0; i < items->nlist && err == NULL; i++)
			parse_item(&f, &items->list[i], &err);
		if (items->nlist == 0)
			err = "Empty fetch item list";
	} else {
		parse_item(&f, items, &err);
	}
	if (err == NULL && j->nargs == 3) {
		/* (CHANGEDSINCE n [VANISHED]) */
		const struct imap_arg *mod = &j->args[2];
		if (mod->type != IMAP_ARG_LIST || mod->nlist < 2 ||
		    !imap_arg_atom_eq(&mod->list[0], "CHANGEDSINCE") ||
		    mod->list[1].type != IMAP_ARG_ATOM) {
			err = "Unknown FETCH modifier";
		} else {
			char *end;
			f.changedsince = strtoull(mod->list[1].str, &end, 10);
			if (*end != '\0' || mod->nlist > 3)
				err = "Invalid CHANGEDSINCE";
			if (mod->nlist == 3) {
				/* RFC 7162 3.2.6: VANISHED, UID FETCH with QRESYNC enabled only */
				if (!imap_arg_atom_eq(&mod->list[2], "VANISHED") || !j->uid ||
				    !(s->enabled & IMAP_EN_QRESYNC))
					err = "VANISHED needs UID FETCH and ENABLE QRESYNC";
				f.vanished = true;
			}
			f.has_changedsince = true;
			s->condstore = true;
		}
	}
	if (err != NULL) {
		fetch_free(&f);
		imap_reply(j->out, "%s BAD %s", j->tag, err);
		return;
	}
	size_t *idx, n;
	if (imap_resolve_set(s, j->args[0].str, j->uid, &idx, &n) < 0) {
		fetch_free(&f);
		imap_reply(j->out, "%s BAD Invalid message set", j->tag);
		return;
	}
	/* non-PEEK body fetches set \Seen first (RFC 9051 6.4.5) */
	bool *seen_added = NULL;
	if (f.set_seen && !s->view.readonly) {
		uint32_t *uids = xmalloc((n + 1) * sizeof(uint32_t));
		size_t k = 0;
		for (size_t i = 0; i < n; i++)
			if (!(s->view.flags[idx[i]] & MBOX_F_SEEN))
				uids[k++] = s->view.uids[idx[i]];
		if (k > 0) {
			struct mbox_msg *ch = NULL;
			size_t nch = 0;
			char *serr = NULL;
			if (mbox_store(s->view.box, uids, k, MBOX_STORE_ADD, MBOX_F_SEEN, 0, 0, &ch,
				       &nch, NULL, NULL, &serr) == 0) {
				seen_added = xcalloc(s->view.n + 1, sizeof(bool));
				for (size_t i = 0; i < nch; i++) {
					long x = imap_view_find(&s->view, ch[i].uid);
					if (x >= 0)
						seen_added[x] = true;
				}
				view_update(&s->view, ch, nch);
				free(ch);
			} else {
				free(serr);
			}
		}
		free(uids);
	}
	if (f.vanished) {
		struct imap_seqset within;
		const char *serr;
		uint32_t max = s->view.n > 0 ? s->view.uids[s->view.n - 1] : 0;
		if (imap_seqset_parse(j->args[0].str, max, &within, &serr) == 0)
			imap_qresync_report(s, j->out, f.changedsince, NULL, &within);
		imap_seqset_free(&within);
	}
	bool vanished = false;
	/* sizes, dates, MODSEQ: from the index; FLAGS and UID alone: from the view. The
	   records are read after the \Seen update so that they carry it. */
	struct mbox_msg *recs = NULL;
	bool *gone = NULL;
	bool flags_item = false;
	for (size_t i = 0; i < f.n; i++)
		flags_item |= f.items[i].kind == IT_FLAGS;
	if (f.has_changedsince)
		recs = changed_records(s, idx, n, f.changedsince, &gone);
	else if (fetch_needs_records(s, &f))
		recs = imap_view_records(s, idx, n, &gone);
	/* record items only (FLAGS, UID, sizes, dates): the response is about 64 octets a
	   message; one buffer for it instead of growing chain after chain */
	if (!f.need_cache && !f.need_body && n > 64)
		evbuffer_expand(j->out, n * 64);
	/* ENVELOPE/BODYSTRUCTURE of a range: read in index scans of FETCH_BATCH messages */
	struct mbox_cache *pre = f.need_cache ? xcalloc(FETCH_BATCH, sizeof(*pre)) : NULL;
	uint32_t *batch_uids = f.need_cache ? xmalloc(FETCH_BATCH * sizeof(uint32_t)) : NULL;
	for (size_t start = 0; start < n; start += FETCH_BATCH) {
		size_t end = start + FETCH_BATCH < n ? start + FETCH_BATCH : n;
		bool have_pre = false;
		if (pre != NULL) {
			for (size_t i = start; i < end; i++)
				batch_uids[i - start] = s->view.uids[idx[i]];
			char *cerr = NULL;
			have_pre = mbox_msg_caches(s->view.box, batch_uids, end - start,
						   MBOX_CACHE_ENVELOPE | MBOX_CACHE_BODYSTRUCTURE,
						   pre, &cerr) == 0;
			free(cerr);
		}
		for (size_t i = start; i < end; i++) {
			struct mbox_msg own;
			const struct mbox_msg *m = &own;
			if (recs != NULL) {
				if (gone[i]) {
					/* its size, dates and MODSEQ are gone too */
					vanished = true;
					continue;
				}
				m = &recs[i];
			} else {
				imap_view_msg(&s->view, idx[i], &own);
			}
			if (f.has_changedsince && m->modseq <= f.changedsince)
				continue;
			if (fetch_one(j, &f, idx[i], m, seen_added != NULL && seen_added[idx[i]],
			              have_pre ? &pre[i - start] : NULL) < 0)
				vanished = true;
			else if (recs != NULL &&
			         (flags_item || (seen_added != NULL && seen_added[idx[i]])))
				/* the client now has these flags: the view too (no second FETCH) */
				imap_view_set(&s->view, idx[i], m);
		}
		if (have_pre)
			for (size_t i = 0; i < end - start; i++)
				mbox_cache_clear(&pre[i]);
	}
	free(pre);
	free(batch_uids);
	free(recs);
	free(gone);
	free(seen_added);
	free(idx);
	fetch_free(&f);
	imap_view_sync(s, j->out, j->expunge_ok);
	if (f.unknown_cte)
		imap_reply(j->out, "%s NO [UNKNOWN-CTE] A part has an unknown content transfer encoding",
			   j->tag);
	else if (vanished)
		imap_reply(j->out, "%s NO [EXPUNGEISSUED] Some messages were expunged meanwhile",
			   j->tag);
	else
		imap_reply(j->out, "%s OK %sFETCH completed", j->tag, j->uid ? "UID " : "");
}

/* ------------------------------------------------------------------ */
/* STORE */

void imap_cmd_store(struct imap_job *j)
{
	struct imap_session *s = j->s;
	const struct imap_arg *a = j->args;
	size_t na = j->nargs;
	uint64_t unchangedsince = 0;
	bool has_unchanged = false;
	if (na == 4 && a[1].type == IMAP_ARG_LIST) {
		const struct imap_arg *mod = &a[1];
		char *end = NULL;
		if (mod->nlist != 2 || !imap_arg_atom_eq(&mod->list[0], "UNCHANGEDSINCE") ||
		    mod->list[1].type != IMAP_ARG_ATOM ||
		    (unchangedsince = strtoull(mod->list[1].str, &end, 10), *end != '\0')) {
			imap_reply(j->out, "%s BAD Unknown STORE modifier", j->tag);
			return;
		}
		has_unchanged = true;
		s->condstore = true;
	}
	const struct imap_arg *set = &a[0];
	const struct imap_arg *item = has_unchanged ? &a[2] : &a[1];
	const struct imap_arg *flagsarg = has_unchanged ? &a[3] : &a[2];
	if ((has_unchanged ? na != 4 : na != 3) || set->type != IMAP_ARG_ATOM ||
	    item->type != IMAP_ARG_ATOM) {
		imap_reply(j->out, "%s BAD Syntax: STORE set [(UNCHANGEDSINCE n)] item flags",
			   j->tag);
		return;
	}
	if (s->view.readonly) {
		imap_reply(j->out, "%s NO [READ-ONLY] Mailbox is read-only", j->tag);
		return;
	}
	const char *w = item->str;
	enum mbox_store_mode mode = MBOX_STORE_SET;
	if (*w == '+') {
		mode = MBOX_STORE_ADD;
		w++;
	} else if (*w == '-') {
		mode = MBOX_STORE_REMOVE;
		w++;
	}
	bool silent = false;
	if (strcasecmp(w, "FLAGS.SILENT") == 0)
		silent = true;
	else if (strcasecmp(w, "FLAGS") != 0) {
		imap_reply(j->out, "%s BAD Unknown STORE item", j->tag);
		return;
	}
	uint32_t flags, keywords;
	const char *err = NULL;
	size_t nkw_before = 0;
	mbox_keywords(s->view.box, &nkw_before);
	if (imap_parse_flags(s, flagsarg, &flags, &keywords, NULL, NULL, &err) < 0) {
		imap_reply(j->out, "%s BAD %s", j->tag, err);
		return;
	}
	size_t *idx, n;
	if (imap_resolve_set(s, set->str, j->uid, &idx, &n) < 0) {
		imap_reply(j->out, "%s BAD Invalid message set", j->tag);
		return;
	}
	uint32_t *uids = xmalloc((n + 1) * sizeof(uint32_t));
	for (size_t i = 0; i < n; i++)
		uids[i] = s->view.uids[idx[i]];
	struct mbox_msg *ch = NULL;
	uint32_t *failed = NULL;
	size_t nch = 0, nfailed = 0;
	char *serr = NULL;
	/* a new keyword: announce it before the FETCH responses use it */
	size_t nkw_after = 0;
	mbox_keywords(s->view.box, &nkw_after);
	if (nkw_after != nkw_before) {
		imap_write_flags_list(s, j->out, false);
		imap_write_flags_list(s, j->out, true);
		s->view.nkeywords = nkw_after;
	}
	if (mbox_store(s->view.box, uids, n, mode, flags, keywords,
		       has_unchanged ? unchangedsince : 0, &ch, &nch,
		       &failed, &nfailed, &serr) < 0) {
		free(uids);
		free(idx);
		imap_store_error(j, "store", serr);
		return;
	}
	view_update(&s->view, ch, nch);
	/* MODSEQ of the messages STORE left as they were: from the index */
	struct mbox_msg *recs = NULL;
	if (s->condstore && nch < n)
		recs = imap_view_records(s, idx, n, NULL);
	if (!silent || s->condstore) {
		for (size_t i = 0; i < n; i++) {
			bool is_failed = false;
			for (size_t k = 0; k < nfailed && !is_failed; k++)
				is_failed = failed[k] == uids[i];
			if (is_failed)
				continue;
			const struct mbox_msg *changed = NULL;
			for (size_t k = 0; k < nch && changed == NULL; k++)
				if (ch[k].uid == uids[i])
					changed = &ch[k];
			if (silent && changed == NULL)
				continue;
			if (s->condstore && changed == NULL &&
			    (recs == NULL || recs[i].modseq == 0))
				continue; /* expunged meanwhile: no MODSEQ to give */
			uint32_t vf = s->view.flags[idx[i]];
			evbuffer_add_printf(j->out, "* %zu FETCH (", idx[i] + 1);
			bool sp = false;
			if (!silent) {
				evbuffer_add_printf(j->out, "FLAGS ");
				imap_write_msg_flags(s, j->out, IMAP_VF_FLAGS(vf),
				                     IMAP_VF_KEYWORDS(vf));
				sp = true;
			}
			if (j->uid) {
				evbuffer_add_printf(j->out, "%sUID %u", sp ? " " : "", uids[i]);
				sp = true;
			}
			if (s->condstore)
				evbuffer_add_printf(
				    j->out, "%sMODSEQ (%llu)", sp ? " " : "",
				    (unsigned long long)(changed != NULL ? changed->modseq
				                         : recs != NULL  ? recs[i].modseq
				                                         : 0));
			evbuffer_add(j->out, ")\r\n", 3);
		}
	}
	imap_view_sync(s, j->out, j->expunge_ok);
	if (nfailed > 0) {
		uint32_t *list = xmalloc(nfailed * sizeof(uint32_t));
		for (size_t i = 0; i < nfailed; i++) {
			long x = imap_view_find(&s->view, failed[i]);
			list[i] = j->uid ? failed[i] : (uint32_t)(x + 1);
		}
		char *str = imap_seqset_format(list, nfailed);
		imap_reply(j->out, "%s OK [MODIFIED %s] Conditional STORE failed for some", j->tag,
			   str);
		free(str);
		free(list);
	} else {
		imap_reply(j->out, "%s OK %sSTORE completed", j->tag, j->uid ? "UID " : "");
	}
	free(recs);
	free(ch);
	free(failed);
	free(uids);
	free(idx);
}

/* ------------------------------------------------------------------ */
/* COPY / MOVE / EXPUNGE */

/* Announce expunged UIDs now (MOVE, EXPUNGE): they leave the view. */
static void expunge_now(struct imap_session *s, struct evbuffer *out, const uint32_t *uids,
			size_t n)
{
	struct imap_view *v = &s->view;
	for (size_t i = 0; i < n; i++) {
		long idx = imap_view_find(v, uids[i]);
		if (idx < 0)
			continue;
		bool dup = false;
		for (size_t k = 0; k < v->nexpunged && !dup; k++)
			dup = v->expunged[k] == uids[i];
		if (dup)
			continue;
		if (v->nexpunged == v->expunged_cap) {
			v->expunged_cap = v->expunged_cap == 0 ? 16 : v->expunged_cap * 2;
			v->expunged = xrealloc(v->expunged, v->expunged_cap * sizeof(uint32_t));
		}
		v->expunged[v->nexpunged++] = uids[i];
	}
	imap_view_sync(s, out, true);
}

void imap_cmd_copy(struct imap_job *j)
{
	struct imap_session *s = j->s;
	bool move = strcmp(j->name, "MOVE") == 0;
	if (j->nargs != 2 || j->args[0].type != IMAP_ARG_ATOM) {
		imap_reply(j->out, "%s BAD Syntax: %s set mailbox", j->tag, j->name);
		return;
	}
	if (move && s->view.readonly) {
		imap_reply(j->out, "%s NO [READ-ONLY] Mailbox is read-only", j->tag);
		return;
	}
	char *dest = imap_mailbox_name(s, &j->args[1]);
	if (dest == NULL) {
		imap_reply(j->out, "%s BAD Invalid mailbox name", j->tag);
		return;
	}
	size_t *idx, n;
	if (imap_resolve_set(s, j->args[0].str, j->uid, &idx, &n) < 0) {
		free(dest);
		imap_reply(j->out, "%s BAD Invalid message set", j->tag);
		return;
	}
	if (n == 0) {
		free(dest);
		free(idx);
		imap_view_sync(s, j->out, j->expunge_ok);
		imap_reply(j->out, "%s OK No messages", j->tag);
		return;
	}
	uint32_t *uids = xmalloc(n * sizeof(uint32_t));
	for (size_t i = 0; i < n; i++)
		uids[i] = s->view.uids[idx[i]];
	free(idx);
	uint32_t uidvalidity = 0, *src = NULL, *dst = NULL;
	size_t np = 0;
	char *err = NULL;
	if (mbox_copy(s->view.box, uids, n, dest, move, &uidvalidity, &src, &dst, &np, &err) < 0) {
		if (errno == ENOENT) {
			imap_reply(j->out, "%s NO [TRYCREATE] Mailbox does not exist", j->tag);
			free(err);
		} else {
			imap_store_error(j, j->name, err);
		}
		free(uids);
		free(dest);
		return;
	}
	char *ss = imap_seqset_format(src, np), *ds = imap_seqset_format(dst, np);
	if (move) {
		if (np > 0)
			imap_reply(j->out, "* OK [COPYUID %u %s %s] Moved", uidvalidity, ss, ds);
		expunge_now(s, j->out, src, np);
		imap_reply(j->out, "%s OK %sMOVE completed", j->tag, j->uid ? "UID " : "");
	} else {
		imap_view_sync(s, j->out, j->expunge_ok);
		if (np > 0)
			imap_reply(j->out, "%s OK [COPYUID %u %s %s] %sCOPY completed", j->tag,
				   uidvalidity, ss, ds, j->uid ? "UID " : "");
		else
			imap_reply(j->out, "%s OK %sCOPY completed", j->tag, j->uid ? "UID " : "");
	}
	log_info("event=imap_%s user=%s from=\"%s\" to=\"%s\" messages=%zu", move ? "move" : "copy",
		 s->user, s->view.name, dest, np);
	free(ss);
	free(ds);
	free(src);
	free(dst);
	free(uids);
	free(dest);
}

void imap_cmd_expunge(struct imap_job *j)
{
	struct imap_session *s = j->s;
	if (s->view.readonly) {
		imap_reply(j->out, "%s NO [READ-ONLY] Mailbox is read-only", j->tag);
		return;
	}
	uint32_t *uids = NULL;
	size_t n = 0;
	if (j->uid) {
		if (j->nargs != 1 || j->args[0].type != IMAP_ARG_ATOM) {
			imap_reply(j->out, "%s BAD Syntax: UID EXPUNGE set", j->tag);
			return;
		}
		size_t *idx;
		if (imap_resolve_set(s, j->args[0].str, true, &idx, &n) < 0) {
			imap_reply(j->out, "%s BAD Invalid UID set", j->tag);
			return;
		}
		uids = xmalloc((n + 1) * sizeof(uint32_t));
		for (size_t i = 0; i < n; i++)
			uids[i] = s->view.uids[idx[i]];
		free(idx);
		if (n == 0) {
			free(uids);
			imap_view_sync(s, j->out, true);
			imap_reply(j->out, "%s OK UID EXPUNGE completed", j->tag);
			return;
		}
	} else if (j->nargs != 0) {
		imap_reply(j->out, "%s BAD Syntax: EXPUNGE", j->tag);
		return;
	}
	uint32_t *ex = NULL;
	size_t nex = 0;
	char *err = NULL;
	if (mbox_expunge(s->view.box, uids, n, &ex, &nex, &err) < 0) {
		free(uids);
		imap_store_error(j, "expunge", err);
		return;
	}
	if (nex > 0)
		log_info("event=imap_expunge user=%s folder=\"%s\" messages=%zu", s->user,
			 s->view.name, nex);
	expunge_now(s, j->out, ex, nex);
	imap_reply(j->out, "%s OK %sEXPUNGE completed", j->tag, j->uid ? "UID " : "");
	free(ex);
	free(uids);
}

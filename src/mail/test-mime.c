/*
 * Unit tests for the MIME parser and the IMAP message structure.
 *
 * Expected structures: src/mail/testdata/mime/dovecot-*.txt hold what
 * Dovecot 2.3.19 (Debian 12 dovecot-imapd) answers for BODYSTRUCTURE,
 * ENVELOPE and BODY[section] on the CPython email test messages
 * (../shared/vectors/mime-cpython-email/data) and on our own edge-case
 * messages (testdata/mime/edge/); see testdata/mime/README.md.
 */
#include "mail/mime.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* ---- helpers ---- */

static const char *source_dir(void)
{
	const char *d = getenv("POSTERN_SOURCE_DIR");
	return d != NULL ? d : ".";
}

static unsigned char *read_file(const char *path, size_t *len_r)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return NULL;
	size_t cap = 4096, len = 0;
	unsigned char *buf = malloc(cap);
	size_t n;
	while ((n = fread(buf + len, 1, cap - len, f)) > 0) {
		len += n;
		if (len == cap)
			buf = realloc(buf, cap *= 2);
	}
	fclose(f);
	*len_r = len;
	return buf;
}

struct dyn {
	char *s;
	size_t len, cap;
};

static void dyn_add(struct dyn *d, const void *data, size_t n)
{
	if (d->len + n + 1 > d->cap) {
		d->cap = (d->len + n + 1) * 2;
		d->s = realloc(d->s, d->cap);
	}
	memcpy(d->s + d->len, data, n);
	d->len += n;
	d->s[d->len] = '\0';
}

static void dyn_printf(struct dyn *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void dyn_printf(struct dyn *d, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	dyn_add(d, buf, n < (int)sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/*
 * Run the parser over msg in chunks of `chunk` bytes (0: pseudo-random
 * sizes from `seed`) and describe every event and the final tree, with
 * adjacent BODY events of one part joined, so that any two ways of feeding
 * the same message must describe it identically.
 */
struct trace {
	struct dyn d;
	const struct mime_part *body_part;
	uint64_t body_start, body_next;
	struct dyn body;
	const struct mime_part *ids[64];
	unsigned nids;
};

static unsigned part_id(struct trace *t, const struct mime_part *p)
{
	for (unsigned i = 0; i < t->nids; i++)
		if (t->ids[i] == p)
			return i;
	if (t->nids < 64)
		t->ids[t->nids++] = p;
	return t->nids - 1;
}

static void flush_body(struct trace *t)
{
	if (t->body_part == NULL)
		return;
	dyn_printf(&t->d, "B%u@%llu[%zu]:", part_id(t, t->body_part),
	           (unsigned long long)t->body_start, t->body.len);
	if (t->body.len > 0)
		dyn_add(&t->d, t->body.s, t->body.len);
	dyn_add(&t->d, "\n", 1);
	t->body_part = NULL;
	t->body.len = 0;
}

static void trace_event(struct trace *t, const struct mime_event *ev)
{
	if (ev->type == MIME_EVENT_BODY) {
		assert_true(ev->len > 0);
		if (t->body_part == ev->part && t->body_next == ev->offset) {
			dyn_add(&t->body, ev->data, ev->len);
		} else {
			flush_body(t);
			t->body_part = ev->part;
			t->body_start = ev->offset;
			dyn_add(&t->body, ev->data, ev->len);
		}
		t->body_next = ev->offset + ev->len;
		return;
	}
	flush_body(t);
	const struct mime_part *m = ev->part;
	switch (ev->type) {
	case MIME_EVENT_PART_BEGIN:
		dyn_printf(&t->d, "P%u@%llu d%u\n", part_id(t, m), (unsigned long long)ev->offset,
		           m->depth);
		break;
	case MIME_EVENT_HEADER:
		dyn_printf(&t->d, "H%u@%llu %d ", part_id(t, m), (unsigned long long)ev->offset,
		           ev->truncated);
		dyn_add(&t->d, ev->name, ev->name_len);
		dyn_add(&t->d, "=", 1);
		dyn_add(&t->d, ev->value, ev->value_len);
		dyn_add(&t->d, "\n", 1);
		break;
	case MIME_EVENT_HEADER_END:
		dyn_printf(&t->d, "E%u@%llu f%x %s/%s hs%llu hv%llu\n", part_id(t, m),
		           (unsigned long long)ev->offset, m->flags, m->type ? m->type : "-",
		           m->subtype ? m->subtype : "-", (unsigned long long)m->header_size,
		           (unsigned long long)m->header_vsize);
		break;
	case MIME_EVENT_PART_END:
		dyn_printf(&t->d, "X%u@%llu bo%llu bs%llu bv%llu bl%llu\n", part_id(t, m),
		           (unsigned long long)ev->offset, (unsigned long long)m->body_offset,
		           (unsigned long long)m->body_size, (unsigned long long)m->body_vsize,
		           (unsigned long long)m->body_lines);
		break;
	default:
		break;
	}
}

static char *run_parser(const unsigned char *msg, size_t len, size_t chunk, unsigned seed,
                        const struct mime_limits *lim)
{
	struct trace t = {0};
	struct mime_parser *p = mime_parser_new(lim);
	struct mime_event ev;
	size_t pos = 0;
	unsigned rnd = seed * 2654435761u + 1;
	while (pos < len) {
		size_t n = chunk;
		if (n == 0) {
			rnd = rnd * 1103515245u + 12345u;
			n = 1 + (rnd >> 16) % 97;
		}
		if (n > len - pos)
			n = len - pos;
		assert_int_equal(mime_parser_push(p, msg + pos, n), 0);
		pos += n;
		int r;
		while ((r = mime_parser_next(p, &ev)) == 1)
			trace_event(&t, &ev);
		assert_int_equal(r, 0);
	}
	mime_parser_push(p, NULL, 0);
	int r;
	while ((r = mime_parser_next(p, &ev)) == 1)
		trace_event(&t, &ev);
	assert_int_equal(r, 0);
	assert_true(mime_parser_done(p));
	assert_int_equal(mime_parser_push(p, "x", 1), -1);
	flush_body(&t);
	mime_parser_free(&p);
	assert_null(p);
	free(t.body.s);
	return t.d.s != NULL ? t.d.s : strdup("");
}

/* Structural invariants every tree must satisfy, whatever the input. */
static void check_tree(const struct mime_part *m, uint64_t start, uint64_t end, unsigned *count)
{
	(*count)++;
	assert_true(m->header_offset >= start);
	assert_int_equal(m->header_offset + m->header_size, m->body_offset);
	assert_true(m->body_offset + m->body_size <= end);
	assert_true(m->header_vsize >= m->header_size);
	assert_true(m->body_vsize >= m->body_size);
	assert_true(m->body_lines <= m->body_size);
	uint64_t prev = m->body_offset;
	unsigned n = 0;
	for (const struct mime_part *c = m->children; c != NULL; c = c->next) {
		assert_ptr_equal(c->parent, m);
		assert_int_equal(c->depth, m->depth + 1);
		assert_true(c->header_offset >= prev);
		check_tree(c, m->body_offset, m->body_offset + m->body_size, count);
		prev = c->body_offset + c->body_size;
		n++;
	}
	assert_int_equal(n, m->nchildren);
	if (m->flags & MIME_PART_MESSAGE)
		assert_true(n == 1);
}

/* Balanced parentheses outside quoted strings and literals. */
static void check_parens(const char *s)
{
	int depth = 0;
	bool q = false;
	for (const char *c = s; *c != '\0'; c++) {
		if (q) {
			if (*c == '\\')
				c++;
			else if (*c == '"')
				q = false;
			continue;
		}
		if (*c == '"') {
			q = true;
		} else if (*c == '{') {
			char *end;
			unsigned long n = strtoul(c + 1, &end, 10);
			assert_true(end[0] == '}' && end[1] == '\r' && end[2] == '\n');
			c = end + 2 + n;
		} else if (*c == '(') {
			depth++;
		} else if (*c == ')') {
			depth--;
			assert_true(depth >= 0);
		}
	}
	assert_false(q);
	assert_int_equal(depth, 0);
}

static char *structure_line(const unsigned char *msg, size_t len, bool bytewise, bool body_only)
{
	struct mime_part *root;
	if (bytewise) {
		struct mime_builder *b = mime_builder_new(NULL);
		for (size_t i = 0; i < len; i++)
			mime_builder_push(b, msg + i, 1);
		root = mime_builder_finish(&b);
		assert_null(b);
	} else {
		root = mime_message_parse(msg, len, NULL);
	}
	unsigned count = 0;
	check_tree(root, 0, len, &count);
	char *bs = mime_bodystructure(root, true);
	char *body = mime_bodystructure(root, false);
	char *env = mime_envelope_string(root);
	check_parens(bs);
	check_parens(body);
	check_parens(env);
	size_t n = strlen(bs) + strlen(body) + strlen(env) + 32;
	char *line = malloc(n);
	if (body_only)
		snprintf(line, n, "BODY %s", body);
	else
		snprintf(line, n, "BODYSTRUCTURE %s ENVELOPE %s", bs, env);
	free(bs);
	free(body);
	free(env);
	mime_part_free(&root);
	assert_null(root);
	return line;
}

/* Undo the \\, \r, \n escaping of the expectation files. */
static char *unescape(const char *s)
{
	char *out = malloc(strlen(s) + 1), *o = out;
	for (; *s != '\0'; s++) {
		if (*s == '\\' && s[1] != '\0') {
			s++;
			*o++ = *s == 'r' ? '\r' : *s == 'n' ? '\n' : *s;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
	return out;
}

static uint64_t fnv1a(const unsigned char *s, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ s[i]) * 0x100000001b3ull;
	return h;
}

/* ---- the CPython corpus and our edge cases against Dovecot ---- */

static unsigned check_structure_file(const char *expect_file, const char *msg_dir, unsigned *total)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/src/mail/testdata/mime/%s", source_dir(), expect_file);
	size_t len;
	char *data = (char *)read_file(path, &len);
	assert_non_null(data);
	data = realloc(data, len + 1);
	data[len] = '\0';
	unsigned ok = 0;
	char *save = NULL;
	for (char *line = strtok_r(data, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		char *tab = strchr(line, '\t');
		assert_non_null(tab);
		*tab = '\0';
		char mpath[1024];
		snprintf(mpath, sizeof(mpath), "%s/%s", msg_dir, line);
		size_t mlen;
		unsigned char *msg = read_file(mpath, &mlen);
		if (msg == NULL)
			fail_msg("cannot read %s", mpath);
		char *expect = unescape(tab + 1);
		bool body_only = strncmp(expect, "BODY (", 6) == 0;
		char *got = structure_line(msg, mlen, false, body_only);
		char *got_bytewise = structure_line(msg, mlen, true, body_only);
		assert_string_equal(got, got_bytewise);
		(*total)++;
		if (strcmp(got, expect) == 0)
			ok++;
		else
			print_message("%s:\n  dovecot %s\n  postern %s\n", line, expect, got);
		free(expect);
		free(got);
		free(got_bytewise);
		free(msg);
	}
	free(data);
	return ok;
}

static void vectors_dir(char *buf, size_t size)
{
	snprintf(buf, size, "%s/../shared/vectors/mime-cpython-email/data", source_dir());
}

static void test_cpython_structure(void **state)
{
	char dir[1024];
	vectors_dir(dir, sizeof(dir));
	unsigned total = 0;
	unsigned ok = check_structure_file("dovecot-structure.txt", dir, &total);
	print_message("cpython corpus: %u/%u BODYSTRUCTURE+ENVELOPE identical to Dovecot\n", ok,
	              total);
	assert_int_equal(total, 48);
	assert_int_equal(ok, total);
	total = 0;
	ok = check_structure_file("dovecot-body.txt", dir, &total);
	print_message("cpython corpus: %u/%u BODY identical to Dovecot\n", ok, total);
	assert_int_equal(total, 48);
	assert_int_equal(ok, total);
}

static void test_edge_structure(void **state)
{
	char dir[1024];
	snprintf(dir, sizeof(dir), "%s/src/mail/testdata/mime/edge", source_dir());
	unsigned total = 0;
	unsigned ok = check_structure_file("dovecot-edge.txt", dir, &total);
	print_message("edge cases: %u/%u BODYSTRUCTURE+ENVELOPE identical to Dovecot\n", ok, total);
	assert_true(total >= 20);
	assert_int_equal(ok, total);
	total = 0;
	ok = check_structure_file("dovecot-edge-body.txt", dir, &total);
	print_message("edge cases: %u/%u BODY identical to Dovecot\n", ok, total);
	assert_true(total >= 20);
	assert_int_equal(ok, total);
}

static unsigned check_sections_file(const char *expect_file, const char *msg_dir, unsigned *total)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/src/mail/testdata/mime/%s", source_dir(), expect_file);
	size_t len;
	char *data = (char *)read_file(path, &len);
	assert_non_null(data);
	data = realloc(data, len + 1);
	data[len] = '\0';
	unsigned ok = 0;
	char *save = NULL;
	for (char *line = strtok_r(data, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		char file[256], spec[256], hash[64] = "";
		unsigned long long elen = 0;
		char *f[4] = {0};
		int nf = 0;
		for (char *c = line; nf < 4; nf++) {
			f[nf] = c;
			c = strchr(c, '\t');
			if (c == NULL) {
				nf++;
				break;
			}
			*c++ = '\0';
		}
		assert_true(nf >= 3);
		snprintf(file, sizeof(file), "%s", f[0]);
		snprintf(spec, sizeof(spec), "%s", f[1]);
		bool nil = strcmp(f[2], "NIL") == 0;
		if (!nil) {
			elen = strtoull(f[2], NULL, 10);
			snprintf(hash, sizeof(hash), "%s", f[3]);
		}
		char mpath[1024];
		snprintf(mpath, sizeof(mpath), "%s/%s", msg_dir, file);
		size_t mlen;
		unsigned char *msg = read_file(mpath, &mlen);
		assert_non_null(msg);
		struct mime_part *root = mime_message_parse(msg, mlen, NULL);

		/* "1.2<5.30>": a partial fetch */
		uint64_t skip = 0, max = UINT64_MAX;
		char *lt = strchr(spec, '<');
		if (lt != NULL) {
			*lt = '\0';
			skip = strtoull(lt + 1, NULL, 10);
			max = strtoull(strchr(lt + 1, '.') + 1, NULL, 10);
		}
		struct mime_section sec;
		const char *err;
		unsigned char *out = NULL;
		size_t outlen = 0;
		if (mime_section_find(root, spec, &sec, &err) == 0) {
			size_t cap = sec.vsize + 1;
			out = malloc(cap);
			outlen = mime_copy_crlf(msg, sec.offset, sec.size, skip, out,
			                        max < cap ? (size_t)max : cap);
			if (skip == 0 && max == UINT64_MAX)
				assert_int_equal(outlen, sec.vsize);
		}
		char got[64];
		snprintf(got, sizeof(got), "%016llx", (unsigned long long)fnv1a(out, outlen));
		(*total)++;
		if (!nil && outlen == elen && strcmp(got, hash) == 0)
			ok++;
		else
			print_message("%s BODY[%s]: dovecot %llu bytes %s, postern %zu bytes %s\n",
			              file, spec, elen, hash, outlen, got);
		free(out);
		mime_part_free(&root);
		free(msg);
	}
	free(data);
	return ok;
}

static void test_cpython_sections(void **state)
{
	char dir[1024];
	vectors_dir(dir, sizeof(dir));
	unsigned total = 0;
	unsigned ok = check_sections_file("dovecot-sections.txt", dir, &total);
	print_message("cpython corpus: %u/%u BODY[section] fetches identical to Dovecot\n", ok,
	              total);
	assert_true(total >= 50);
	assert_int_equal(ok, total);
}

static void test_edge_sections(void **state)
{
	char dir[1024];
	snprintf(dir, sizeof(dir), "%s/src/mail/testdata/mime/edge", source_dir());
	unsigned total = 0;
	unsigned ok = check_sections_file("dovecot-edge-sections.txt", dir, &total);
	print_message("edge cases: %u/%u BODY[section] fetches identical to Dovecot\n", ok, total);
	assert_true(total >= 30);
	assert_int_equal(ok, total);
}

/* Every message of the corpus: whole, byte by byte and in random chunks
   give the same events and the same tree. */
static void test_chunking_identical(void **state)
{
	char dir[1024];
	vectors_dir(dir, sizeof(dir));
	char path[1200];
	snprintf(path, sizeof(path), "%s/src/mail/testdata/mime/dovecot-structure.txt",
	         source_dir());
	size_t len;
	char *list = (char *)read_file(path, &len);
	assert_non_null(list);
	list = realloc(list, len + 1);
	list[len] = '\0';
	unsigned n = 0;
	char *save = NULL;
	for (char *line = strtok_r(list, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		*strchr(line, '\t') = '\0';
		snprintf(path, sizeof(path), "%s/%s", dir, line);
		size_t mlen;
		unsigned char *msg = read_file(path, &mlen);
		assert_non_null(msg);
		char *whole = run_parser(msg, mlen, mlen > 0 ? mlen : 1, 0, NULL);
		char *bytes = run_parser(msg, mlen, 1, 0, NULL);
		assert_string_equal(whole, bytes);
		for (unsigned seed = 1; seed <= 3; seed++) {
			char *rnd = run_parser(msg, mlen, 0, seed, NULL);
			assert_string_equal(whole, rnd);
			free(rnd);
		}
		free(whole);
		free(bytes);
		free(msg);
		n++;
	}
	free(list);
	assert_int_equal(n, 48);
}

/* ---- broken input ---- */

static struct mime_part *parse_str(const char *s)
{
	return mime_message_parse(s, strlen(s), NULL);
}

static void test_missing_final_boundary(void **state)
{
	const char *m = "Content-Type: multipart/mixed; boundary=b\n\n--b\n\none\n--b\n\ntwo\n";
	struct mime_part *r = parse_str(m);
	assert_true(r->flags & MIME_PART_MULTIPART);
	assert_int_equal(r->nchildren, 2);
	const struct mime_part *two = r->children->next;
	/* the last part runs to the end, its final newline included */
	assert_int_equal(two->body_offset + two->body_size, strlen(m));
	assert_int_equal(two->body_size, 4);
	mime_part_free(&r);
}

static void test_nul_and_8bit(void **state)
{
	static const char m[] = "Subject: a\0b \xff\xfe\nContent-Type: text/plain\n\nx\0y\n";
	struct mime_part *r = mime_message_parse(m, sizeof(m) - 1, NULL);
	assert_true(r->flags & MIME_PART_HAS_NUL);
	assert_true(r->flags & MIME_PART_HEADER_8BIT);
	assert_int_equal(r->body_size, 4);
	char *env = mime_envelope_string(r);
	/* NUL became U+FFFD; 8-bit forces a literal */
	assert_non_null(strstr(env, "{8}\r\na\xef\xbf\xbd"
	                            "b \xff\xfe"));
	free(env);
	mime_part_free(&r);
}

static void test_odd_inputs(void **state)
{
	const char *inputs[] = {
	    "",
	    "\n",
	    "\r\n",
	    "\r",
	    "no header at all, no newline",
	    "Subject: x",
	    "Content-Type: multipart/mixed; boundary=\"\"\n\n--\n",
	    "Content-Type: multipart/mixed; boundary=a\n\n--a",
	    "Content-Type: multipart/mixed; boundary=a\n\n--a--",
	    "Content-Type: multipart/mixed; boundary=a\n\n--a\r",
	    "Content-Type: message/rfc822\n\n",
	    "Content-Type: message/rfc822\n\nContent-Type: message/rfc822\n\n",
	    "Content-Type: multipart/digest; boundary=x\n\n--x\n--x\n--x--\n--x\n",
	    "Content-Type: text/plain; charset=\"\n\n",
	    "Content-Type: text/plain; =x; ;; a=; b*0*=''%; b*1=%%; c*=''%GG\n\nz",
	    ":\n: :\n\t\n \n\n",
	    ("Content-Type: multipart/mixed; boundary=a\n\n--a\nContent-Type: multipart/mixed; "
	     "boundary=a\n\n--a\n--a--\n--a--\n--a--\n"),
	};
	for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
		size_t len = strlen(inputs[i]);
		char *a =
		    run_parser((const unsigned char *)inputs[i], len, len > 0 ? len : 1, 0, NULL);
		char *b = run_parser((const unsigned char *)inputs[i], len, 1, 0, NULL);
		assert_string_equal(a, b);
		free(a);
		free(b);
		char *s = structure_line((const unsigned char *)inputs[i], len, false, false);
		free(s);
	}
}

/* Dovecot's boundary rules: prefix match, innermost first, in headers too. */
static void test_boundary_rules(void **state)
{
	const char *m = "Content-Type: multipart/mixed; boundary=ab\n\n"
	                "--ab\n\n1\n"
	                "--abc this is still a boundary line (prefix)\n\n2\n"
	                "--a not one\n"
	                "--ab--\nepilogue\n--ab\nafter the close: epilogue text\n";
	struct mime_part *r = parse_str(m);
	assert_int_equal(r->nchildren, 2);
	assert_int_equal(r->children->next->body_size, strlen("2\n--a not one"));
	mime_part_free(&r);
}

/* ---- limits ---- */

static void test_deep_nesting(void **state)
{
	/* 200 nested multiparts */
	struct dyn d = {0};
	for (int i = 0; i < 200; i++)
		dyn_printf(&d, "Content-Type: multipart/mixed; boundary=\"lvl%03d\"\n\n--lvl%03d\n",
		           i, i);
	dyn_printf(&d, "\nleaf\n");
	for (int i = 199; i >= 0; i--)
		dyn_printf(&d, "--lvl%03d--\n", i);
	struct mime_parser *p = mime_parser_new(NULL);
	mime_parser_push(p, d.s, d.len);
	mime_parser_push(p, NULL, 0);
	struct mime_event ev;
	unsigned maxdepth = 0, begins = 0, ends = 0;
	while (mime_parser_next(p, &ev) == 1) {
		if (ev.part->depth > maxdepth)
			maxdepth = ev.part->depth;
		begins += ev.type == MIME_EVENT_PART_BEGIN;
		ends += ev.type == MIME_EVENT_PART_END;
	}
	assert_true(mime_parser_done(p));
	assert_true(mime_parser_limited(p));
	assert_int_equal(maxdepth, 99);
	assert_int_equal(begins, ends);
	mime_parser_free(&p);

	struct mime_part *r = mime_message_parse(d.s, d.len, NULL);
	unsigned count = 0;
	check_tree(r, 0, d.len, &count);
	assert_int_equal(count, 100);
	char *bs = mime_bodystructure(r, true);
	check_parens(bs);
	/* the innermost container past the limit is reported as opaque data */
	assert_non_null(strstr(bs, "(\"application\" \"octet-stream\" (\"boundary\" \"lvl099\")"));
	free(bs);
	mime_part_free(&r);

	/* 200 nested message/rfc822 */
	d.len = 0;
	for (int i = 0; i < 200; i++)
		dyn_printf(&d, "Subject: %d\nContent-Type: message/rfc822\n\n", i);
	dyn_printf(&d, "\nbottom\n");
	r = mime_message_parse(d.s, d.len, NULL);
	count = 0;
	check_tree(r, 0, d.len, &count);
	assert_int_equal(count, 100);
	bs = mime_bodystructure(r, false);
	check_parens(bs);
	free(bs);
	mime_part_free(&r);

	/* a custom, lower limit */
	struct mime_limits lim;
	mime_limits_default(&lim);
	lim.max_depth = 3;
	r = mime_message_parse(d.s, d.len, &lim);
	count = 0;
	check_tree(r, 0, d.len, &count);
	assert_int_equal(count, 3);
	mime_part_free(&r);
	free(d.s);
}

static void test_many_parts(void **state)
{
	struct dyn d = {0};
	dyn_printf(&d, "Content-Type: multipart/mixed; boundary=p\n\n");
	for (int i = 0; i < 20000; i++)
		dyn_printf(&d, "--p\n\n%d\n", i);
	dyn_printf(&d, "--p--\n");
	struct mime_part *r = mime_message_parse(d.s, d.len, NULL);
	unsigned count = 0;
	check_tree(r, 0, d.len, &count);
	assert_int_equal(count, 10000);
	assert_int_equal(r->nchildren, 9999);
	/* as Dovecot: the last part kept runs to the end of the message
	   (Dovecot 2.3.19 reports 140026 octets and 30005 lines for it) */
	const struct mime_part *last = r->children;
	while (last->next != NULL)
		last = last->next;
	assert_int_equal(last->body_offset + last->body_size, d.len);
	assert_int_equal(last->body_vsize, 140026);
	assert_int_equal(last->body_lines, 30005);
	char *bs = mime_bodystructure(r, true);
	check_parens(bs);
	free(bs);
	mime_part_free(&r);

	/* byte by byte gives the same */
	char *a = run_parser((unsigned char *)d.s, d.len, d.len, 0, NULL);
	char *b = run_parser((unsigned char *)d.s, d.len, 0, 7, NULL);
	assert_string_equal(a, b);
	free(a);
	free(b);
	free(d.s);
}

static void test_big_header(void **state)
{
	/* one 1 MB header field */
	size_t big = 1024 * 1024;
	struct dyn d = {0};
	dyn_printf(&d, "Subject: ");
	char *fill = malloc(big);
	memset(fill, 'x', big);
	dyn_add(&d, fill, big);
	dyn_printf(&d, "\nContent-Type: text/html\n\nbody\n");
	struct mime_parser *p = mime_parser_new(NULL);
	mime_parser_push(p, d.s, d.len);
	mime_parser_push(p, NULL, 0);
	struct mime_event ev;
	bool saw_trunc = false, saw_ct = false;
	while (mime_parser_next(p, &ev) == 1) {
		if (ev.type == MIME_EVENT_HEADER && ev.name_len == 7) {
			assert_true(ev.truncated);
			assert_true(ev.value_len <= 64 * 1024);
			saw_trunc = true;
		}
		if (ev.type == MIME_EVENT_HEADER_END) {
			assert_string_equal(ev.part->subtype, "html");
			saw_ct = true;
		}
	}
	assert_true(saw_trunc && saw_ct);
	struct mime_part *r = mime_parser_root(p);
	assert_true(r->flags & MIME_PART_HEADER_TRUNCATED);
	assert_int_equal(r->body_size, 5);
	assert_int_equal(r->header_size, d.len - 5);
	mime_parser_free(&p);

	/* 2 MB of small fields: the block limit stops keeping them */
	d.len = 0;
	for (int i = 0; i < 40000; i++)
		dyn_printf(&d, "X-Filler-%05d: %s\n", i,
		           "0123456789012345678901234567890123456789");
	dyn_printf(&d, "Content-Type: text/html\n\nbody\n");
	p = mime_parser_new(NULL);
	mime_parser_push(p, d.s, d.len);
	mime_parser_push(p, NULL, 0);
	unsigned fields = 0;
	while (mime_parser_next(p, &ev) == 1)
		fields += ev.type == MIME_EVENT_HEADER;
	r = mime_parser_root(p);
	assert_true(fields < 40000);
	assert_true(r->flags & MIME_PART_HEADER_TRUNCATED);
	assert_null(r->subtype); /* the Content-Type came after the limit */
	assert_int_equal(r->body_size, 5);
	mime_parser_free(&p);
	free(fill);
	free(d.s);
}

/* A 10 MB line without LF inside a part streams through: memory held by
   the parser does not grow with it. */
static void test_long_body_line(void **state)
{
	struct mime_parser *p = mime_parser_new(NULL);
	const char *head = "Content-Type: multipart/mixed; boundary=q\n\n--q\n\n";
	mime_parser_push(p, head, strlen(head));
	struct mime_event ev;
	while (mime_parser_next(p, &ev) == 1)
		;
	char chunk[65536];
	memset(chunk, 'z', sizeof(chunk));
	uint64_t body = 0;
	for (int i = 0; i < 160; i++) {
		mime_parser_push(p, chunk, sizeof(chunk));
		uint64_t got = 0;
		while (mime_parser_next(p, &ev) == 1)
			if (ev.type == MIME_EVENT_BODY)
				got += ev.len;
		/* everything pushed comes out at once (no line buffering) */
		assert_int_equal(got, sizeof(chunk));
		body += got;
	}
	const char *tail = "\n--q--\n";
	mime_parser_push(p, tail, strlen(tail));
	mime_parser_push(p, NULL, 0);
	while (mime_parser_next(p, &ev) == 1)
		;
	struct mime_part *r = mime_parser_root(p);
	assert_int_equal(r->children->body_size, body);
	assert_int_equal(r->children->body_lines, 0);
	mime_parser_free(&p);
}

/* ---- RFC 2047 / 2231 ---- */

static void expect_decode(const char *in, const char *want)
{
	char *got = mime_decode_header(in, strlen(in));
	if (strcmp(got, want) != 0)
		fail_msg("decode(%s) = [%s], want [%s]", in, got, want);
	free(got);
}

static void test_rfc2047(void **state)
{
	/* RFC 2047 8 examples */
	expect_decode("=?ISO-8859-1?Q?a?=", "a");
	expect_decode("=?ISO-8859-1?Q?a?= b", "a b");
	expect_decode("=?ISO-8859-1?Q?a?= =?ISO-8859-1?Q?b?=", "ab");
	expect_decode("=?ISO-8859-1?Q?a?=  =?ISO-8859-1?Q?b?=", "ab");
	expect_decode("=?ISO-8859-1?Q?a?=\r\n    =?ISO-8859-1?Q?b?=", "ab");
	expect_decode("=?ISO-8859-1?Q?a_b?=", "a b");
	expect_decode("=?ISO-8859-1?Q?a?= =?ISO-8859-2?Q?_b?=", "a b");
	expect_decode("=?US-ASCII?Q?Keith_Moore?=", "Keith Moore");
	expect_decode("=?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?=", "Keld J\xc3\xb8rn Simonsen");
	expect_decode("=?ISO-8859-1?Q?Andr=E9?= Pirard", "Andr\xc3\xa9 Pirard");
	expect_decode("=?iso-8859-1?q?this=20is=20some=20text?=", "this is some text");
	expect_decode("=?UTF-8?B?w6k=?=", "\xc3\xa9");
	/* a character split over two words (same charset) */
	expect_decode("=?UTF-8?B?ww==?= =?UTF-8?B?qQ==?=", "\xc3\xa9");
	expect_decode("=?koi8-r?B?8NLJ18XU?=", "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82");
	/* RFC 2231 5: language in the charset */
	expect_decode("=?US-ASCII*EN?Q?Keith_Moore?=", "Keith Moore");
	/* broken input, best effort */
	expect_decode("=?unknown-charset?Q?abc?=", "abc");
	expect_decode("=?UTF-8?X?abc?=", "=?UTF-8?X?abc?=");
	expect_decode("=?UTF-8?Q?unterminated", "=?UTF-8?Q?unterminated");
	expect_decode("=?UTF-8?B?!!!w6k=?=", "\xc3\xa9");
	expect_decode("=?UTF-8?Q?bad=ZZhex?=", "bad=ZZhex");
	expect_decode("=?UTF-8?B?/w==?=", "\xef\xbf\xbd");           /* 0xff is not UTF-8 */
	expect_decode("plain \xe9t\xe9", "plain \xc3\xa9t\xc3\xa9"); /* raw Latin-1 */
	expect_decode("plain \xc3\xa9", "plain \xc3\xa9");           /* raw UTF-8 */
	expect_decode("a=?", "a=?");
	expect_decode("", "");
}

static void expect_param(const char *ct, const char *name, const char *want)
{
	char *type, *subtype;
	struct mime_param *params;
	unsigned n;
	mime_parse_content_value(ct, strlen(ct), true, 64, &type, &subtype, &params, &n);
	const char *v = mime_param_get(params, n, name);
	if (v == NULL)
		fail_msg("%s: no parameter %s", ct, name);
	char *got = mime_decode_param(name, v);
	if (strcmp(got, want) != 0)
		fail_msg("%s: %s = [%s], want [%s]", ct, name, got, want);
	free(got);
	free(type);
	free(subtype);
	mime_params_free(&params, n);
}

static void test_rfc2231(void **state)
{
	/* RFC 2231 3, 4, 4.1 examples */
	expect_param("message/external-body; access-type=URL;\r\n URL*0=\"ftp://\";\r\n "
	             "URL*1=\"cs.utk.edu/pub/moore/bulk-mailer/bulk-mailer.tar\"",
	             "URL", "ftp://cs.utk.edu/pub/moore/bulk-mailer/bulk-mailer.tar");
	expect_param(
	    "application/x-stuff;\r\n title*=us-ascii'en-us'This%20is%20%2A%2A%2Afun%2A%2A%2A",
	    "title*", "This is ***fun***");
	expect_param(
	    "application/x-stuff;\r\n title*0*=us-ascii'en'This%20is%20even%20more%20;\r\n "
	    "title*1*=%2A%2A%2Afun%2A%2A%2A%20;\r\n title*2=\"isn't it!\"",
	    "title*", "This is even more ***fun*** isn't it!");
	expect_param("text/plain; name*=UTF-8''%E2%82%AC.txt", "name*", "\xe2\x82\xac.txt");
	expect_param("text/plain; name*=iso-8859-1''%E9t%E9", "name*", "\xc3\xa9t\xc3\xa9");
	/* sections out of order are put in order */
	expect_param("text/plain; n*1=b; n*0=a; n*2=c", "n", "abc");
	/* a gap stops the value */
	expect_param("text/plain; n*0=a; n*2=c", "n", "a");
	/* a plain section after an encoded one keeps its % literally */
	expect_param("text/plain; n*0*=utf-8''%41; n*1=100%", "n*", "A100%");
	/* bad %XX and an unknown charset: best effort */
	expect_param("text/plain; n*=bogus''%4%ZZ%41", "n*", "%4%ZZA");
	expect_param("text/plain; n*=x", "n*", "x");

	/* Dovecot order: plain parameters first, then RFC 2231 ones sorted */
	char *type, *subtype;
	struct mime_param *params;
	unsigned n;
	const char *ct = "multipart/signed; micalg*=a''b; z=1; boundary*=''c; protocol=x";
	assert_true(
	    mime_parse_content_value(ct, strlen(ct), true, 64, &type, &subtype, &params, &n));
	assert_string_equal(type, "multipart");
	assert_string_equal(subtype, "signed");
	assert_int_equal(n, 4);
	assert_string_equal(params[0].name, "z");
	assert_string_equal(params[1].name, "protocol");
	assert_string_equal(params[2].name, "boundary*");
	assert_string_equal(params[3].name, "micalg*");
	free(type);
	free(subtype);
	mime_params_free(&params, n);

	/* the parameter limit */
	struct dyn d = {0};
	dyn_printf(&d, "text/plain");
	for (int i = 0; i < 500; i++)
		dyn_printf(&d, "; p%d=v", i);
	assert_true(mime_parse_content_value(d.s, d.len, true, 64, &type, &subtype, &params, &n));
	assert_int_equal(n, 64);
	free(type);
	free(subtype);
	mime_params_free(&params, n);
	free(d.s);
}

static void test_charset(void **state)
{
	char *s = mime_charset_to_utf8("windows-1252", "\x80\x93", 2);
	assert_string_equal(s, "\xe2\x82\xac\xe2\x80\x9c");
	free(s);
	s = mime_charset_to_utf8("utf-16le", "a\0\0\0", 4);
	assert_string_equal(s, "a\xef\xbf\xbd");
	free(s);
	s = mime_charset_to_utf8("us-ascii", "\xe9", 1);
	assert_string_equal(s, "\xc3\xa9"); /* mislabelled 8-bit: Latin-1 */
	free(s);
	s = mime_charset_to_utf8("no-such-charset", "abc", 3);
	assert_string_equal(s, "abc");
	free(s);
	s = mime_charset_to_utf8("shift_jis", "\x82", 1); /* truncated sequence */
	assert_string_equal(s, "\xef\xbf\xbd");
	free(s);
}

/* ---- addresses ---- */

static void test_addresses(void **state)
{
	const char *v = "Group One: a@b.c, \"D. E\" <d@e.f>;, x@y.z (Comment Name), "
	                "<@r1,@r2:u@d.org>, bare, \"quoted local\"@q.q, Name <>, empty-group:;";
	struct mime_address *l = mime_address_parse(v, strlen(v), 100);
	struct mime_address *a = l;
	assert_true(a->group_start);
	assert_string_equal(a->mailbox, "Group One");
	a = a->next;
	assert_string_equal(a->mailbox, "a");
	assert_string_equal(a->domain, "b.c");
	a = a->next;
	assert_string_equal(a->name, "D. E");
	a = a->next;
	assert_true(a->group_end);
	a = a->next;
	assert_string_equal(a->name, "Comment Name");
	assert_string_equal(a->mailbox, "x");
	a = a->next;
	assert_string_equal(a->route, "@r1,@r2");
	assert_string_equal(a->domain, "d.org");
	a = a->next;
	assert_string_equal(a->mailbox, "bare");
	assert_string_equal(a->domain, "MISSING_DOMAIN");
	assert_true(a->invalid);
	a = a->next;
	assert_string_equal(a->mailbox, "quoted local");
	a = a->next;
	assert_string_equal(a->name, "Name");
	assert_string_equal(a->mailbox, "MISSING_MAILBOX");
	a = a->next;
	assert_true(a->group_start);
	a = a->next;
	assert_true(a->group_end);
	assert_null(a->next);
	mime_address_free(&l);
	assert_null(l);

	assert_null(mime_address_parse("", 0, 10));
	assert_null(mime_address_parse(" , ,, (just a comment)", 22, 10));
	/* the cap */
	struct dyn d = {0};
	for (int i = 0; i < 100; i++)
		dyn_printf(&d, "u%d@x, ", i);
	l = mime_address_parse(d.s, d.len, 10);
	unsigned n = 0;
	for (a = l; a != NULL; a = a->next)
		n++;
	assert_int_equal(n, 10);
	mime_address_free(&l);
	free(d.s);
}

/* ---- sections ---- */

static void test_section_errors(void **state)
{
	const char *m = "Content-Type: multipart/mixed; boundary=b\n\n--b\n\none\n--b--\n";
	struct mime_part *r = parse_str(m);
	struct mime_section s;
	const char *err;
	assert_int_equal(mime_section_find(r, "1", &s, &err), 0);
	assert_int_equal(s.size, 3);
	assert_int_equal(mime_section_find(r, "2", &s, &err), -1);
	assert_int_equal(mime_section_find(r, "0", &s, &err), -1);
	assert_int_equal(mime_section_find(r, "1.1", &s, &err), -1);
	assert_int_equal(mime_section_find(r, "1.HEADER", &s, &err), -1);
	assert_int_equal(mime_section_find(r, "MIME", &s, &err), -1);
	assert_int_equal(mime_section_find(r, "1.BOGUS", &s, &err), -1);
	assert_int_equal(mime_section_find(r, "99999999999", &s, &err), -1);
	assert_int_equal(mime_section_find(r, "HEADER.FIELDS (From)", &s, &err), 0);
	assert_int_equal(s.offset, 0);
	assert_int_equal(mime_section_find(r, "TEXT", &s, &err), 0);
	mime_part_free(&r);

	/* partial copies */
	const unsigned char lf[] = "ab\ncd\n";
	unsigned char out[16];
	assert_int_equal(mime_copy_crlf(lf, 0, 6, 0, out, sizeof(out)), 8);
	assert_memory_equal(out, "ab\r\ncd\r\n", 8);
	assert_int_equal(mime_copy_crlf(lf, 0, 6, 3, out, 2), 2);
	assert_memory_equal(out, "\nc", 2);
	assert_int_equal(mime_copy_crlf(lf, 0, 6, 2, out, 3), 3);
	assert_memory_equal(out, "\r\nc", 3);
	assert_int_equal(mime_copy_crlf(lf, 0, 6, 100, out, 3), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cpython_structure),
	    cmocka_unit_test(test_cpython_sections),
	    cmocka_unit_test(test_edge_structure),
	    cmocka_unit_test(test_edge_sections),
	    cmocka_unit_test(test_chunking_identical),
	    cmocka_unit_test(test_missing_final_boundary),
	    cmocka_unit_test(test_nul_and_8bit),
	    cmocka_unit_test(test_odd_inputs),
	    cmocka_unit_test(test_boundary_rules),
	    cmocka_unit_test(test_deep_nesting),
	    cmocka_unit_test(test_many_parts),
	    cmocka_unit_test(test_big_header),
	    cmocka_unit_test(test_long_body_line),
	    cmocka_unit_test(test_rfc2047),
	    cmocka_unit_test(test_rfc2231),
	    cmocka_unit_test(test_charset),
	    cmocka_unit_test(test_addresses),
	    cmocka_unit_test(test_section_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

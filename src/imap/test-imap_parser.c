/*
 * Unit tests for the IMAP command reader and parser: commands fed whole,
 * split at every point and one octet at a time give the same result;
 * literals of each kind; limits and the skipping of too-long commands;
 * nesting; quoted-string escapes; syntax errors.
 */
#include "imap/imap_parser.h"

#include <event2/buffer.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* ---- reader ---- */

/* A transcript of what the reader reported: "C[text]" "+" "TL" "BL". */
struct transcript {
	char s[65536];
	size_t len;
};

static void t_add(struct transcript *t, const char *tag, const char *data, size_t n)
{
	size_t tl = strlen(tag);
	assert_true(t->len + tl + n + 3 < sizeof(t->s));
	memcpy(t->s + t->len, tag, tl);
	t->len += tl;
	if (data != NULL) {
		t->s[t->len++] = '[';
		memcpy(t->s + t->len, data, n);
		t->len += n;
		t->s[t->len++] = ']';
	}
	t->s[t->len] = '\0';
}

/* Feed input in pieces cut at the positions in cuts[] (ascending). */
static void run_reader(const char *input, size_t len, const size_t *cuts, size_t ncuts,
		       size_t max_line, size_t max_literal, size_t max_command, bool minus,
		       struct transcript *t)
{
	struct evbuffer *in = evbuffer_new();
	struct imap_reader r;
	imap_reader_init(&r, max_line, max_literal, max_command);
	r.literal_minus = minus;
	memset(t, 0, sizeof(*t));
	size_t pos = 0;
	for (size_t c = 0; c <= ncuts; c++) {
		size_t end = c < ncuts ? cuts[c] : len;
		evbuffer_add(in, input + pos, end - pos);
		pos = end;
		for (int guard = 0; guard < 1000; guard++) {
			enum imap_reader_status st = imap_reader_feed(&r, in);
			if (st == IMAP_READ_MORE)
				break;
			if (st == IMAP_READ_COMMAND) {
				assert_int_equal(r.buf[r.len], '\0');
				t_add(t, "C", r.buf, r.len);
				imap_reader_reset(&r);
			} else if (st == IMAP_READ_CONTINUE) {
				t_add(t, "+", NULL, 0);
			} else if (st == IMAP_READ_TOO_LONG) {
				t_add(t, "TL", NULL, 0);
			} else {
				t_add(t, "BL", NULL, 0);
			}
		}
	}
	assert_int_equal(evbuffer_get_length(in), 0);
	imap_reader_free(&r);
	evbuffer_free(in);
}

static void check_splits(const char *input, const char *expect, size_t max_line,
			 size_t max_literal, size_t max_command, bool minus)
{
	size_t len = strlen(input);
	struct transcript *t = malloc(sizeof(*t));
	run_reader(input, len, NULL, 0, max_line, max_literal, max_command, minus, t);
	assert_string_equal(t->s, expect);
	for (size_t i = 1; i < len; i++) {
		run_reader(input, len, &i, 1, max_line, max_literal, max_command, minus, t);
		if (strcmp(t->s, expect) != 0)
			fail_msg("split at %zu: %s", i, t->s);
	}
	size_t *cuts = malloc(len * sizeof(*cuts));
	for (size_t i = 0; i + 1 < len; i++)
		cuts[i] = i + 1;
	run_reader(input, len, cuts, len ? len - 1 : 0, max_line, max_literal, max_command, minus,
		   t);
	assert_string_equal(t->s, expect);
	free(cuts);
	free(t);
}

static void test_reader_lines(void **state)
{
	check_splits("a1 NOOP\r\na2 CAPABILITY\nA3 LOGIN \"u\" \"p\"\r\n",
		     "C[a1 NOOP]C[a2 CAPABILITY]C[A3 LOGIN \"u\" \"p\"]", 100, 100, 1000, false);
	/* an empty line is a (bad) command of its own */
	check_splits("\r\nx NOOP\r\n", "C[]C[x NOOP]", 100, 100, 1000, false);
}

static void test_reader_literals(void **state)
{
	check_splits("a LOGIN {4}\r\nuser {5}\r\npa\r\ns\r\n",
		     "++C[a LOGIN {4}\r\nuser {5}\r\npa\r\ns]", 100, 100, 1000, false);
	/* LITERAL+: no continuation */
	check_splits("a LOGIN {4+}\r\nuser {2+}\npw\r\nb NOOP\r\n",
		     "C[a LOGIN {4+}\r\nuser {2+}\npw]C[b NOOP]", 100, 100, 1000, false);
	/* literal8 and empty literals */
	check_splits("a APPEND x ~{3}\r\nabc {0}\r\n\r\n", "++C[a APPEND x ~{3}\r\nabc {0}\r\n]",
		     100, 100, 1000, false);
	const char in8[] = "a APPEND x ~{3+}\r\nA\0B {0}\r\n\r\n";
	struct transcript *t = malloc(sizeof(*t));
	run_reader(in8, sizeof(in8) - 1, NULL, 0, 100, 100, 1000, false, t);
	assert_int_equal(t->len, strlen("+C[a APPEND x ~{3+}\r\nA") + 1 + strlen("B {0}\r\n]"));
	assert_memory_equal(t->s, "+C[a APPEND x ~{3+}\r\nA\0B {0}\r\n]", t->len);
	free(t);
	/* a literal that itself contains what looks like an announcement and CRLF */
	check_splits("a X {7+}\r\n{9}\r\n\r\n b\r\n", "C[a X {7+}\r\n{9}\r\n\r\n b]", 100, 100,
		     1000, false);
}

static void test_reader_limits(void **state)
{
	/* a too-long line: reported once, the rest of it discarded */
	check_splits("a NOOP 0123456789012345678901234567890123456789\r\nb NOOP\r\n",
		     "TLC[b NOOP]", 20, 100, 1000, false);
	/* exactly at the limit is fine, with either line end */
	check_splits("a NOOP 456789\r\nb NOOP 456789\n", "C[a NOOP 456789]C[b NOOP 456789]", 14,
		     100, 1000, false);
	/* a synchronising literal over the limit: refused, the client sends nothing */
	check_splits("a APPEND x {101}\r\nb NOOP\r\n", "TLC[b NOOP]", 100, 100, 1000, false);
	/* a non-synchronising one is sent anyway: its octets are skipped */
	check_splits("a APPEND x {12+}\r\nb NOOP\r\nxxx\r\nc NOOP\r\n", "TLC[c NOOP]", 100, 10,
		     1000, false);
	/* ... and so are the following literals of the same command */
	check_splits("a APPEND x {12+}\r\n0123456789ab {3+}\r\nabc\r\nc NOOP\r\n", "TLC[c NOOP]",
		     100, 10, 1000, false);
	/* a too-long line that ends with a non-synchronising literal */
	check_splits("a APPEND xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx {5+}\r\nb OK\r\nc NOOP\r\n",
		     "TLC[c NOOP]", 20, 100, 1000, false);
	/* the whole command over max_command */
	check_splits("a LOGIN {10}\r\n0123456789 {10}\r\nb NOOP\r\n",
		     "+TLC[b NOOP]", 100, 100, 30, false);
	check_splits("a LOGIN {10+}\r\n0123456789 {10+}\r\n0123456789\r\nb NOOP\r\n",
		     "TLC[b NOOP]", 100, 100, 30, false);
	/* an absurd size is just too long, nothing is allocated for it */
	check_splits("a APPEND x {99999999999999999999999}\r\nb NOOP\r\n", "TLC[b NOOP]", 100, 100,
		     1000, false);
	/* LITERAL-: non-synchronising literals over 4096 refused, skipped */
	char *big = malloc(5000 + 100);
	strcpy(big, "a APPEND x {4097+}\r\n");
	size_t n = strlen(big);
	memset(big + n, 'x', 4097);
	strcpy(big + n + 4097, "\r\nb NOOP\r\n");
	struct transcript *t = malloc(sizeof(*t));
	run_reader(big, strlen(big), NULL, 0, 100, 10000, 100000, true, t);
	assert_string_equal(t->s, "BLC[b NOOP]");
	run_reader(big, strlen(big), NULL, 0, 100, 10000, 100000, false, t);
	/* accepted without LITERAL- */
	assert_int_equal(t->len, strlen("C[]C[b NOOP]") + n + 4097);
	free(t);
	free(big);

	/* after a big command the buffer is released */
	struct evbuffer *in = evbuffer_new();
	struct imap_reader r;
	imap_reader_init(&r, 100, 200000, 300000);
	char *lit = malloc(100000);
	memset(lit, 'y', 100000);
	evbuffer_add_printf(in, "a APPEND x {100000+}\r\n");
	evbuffer_add(in, lit, 100000);
	evbuffer_add_printf(in, "\r\n");
	assert_int_equal(imap_reader_feed(&r, in), IMAP_READ_COMMAND);
	assert_true(r.size > 100000);
	imap_reader_reset(&r);
	assert_true(r.size == 0 && r.buf == NULL);
	evbuffer_add_printf(in, "b NOOP\r\n");
	assert_int_equal(imap_reader_feed(&r, in), IMAP_READ_COMMAND);
	assert_string_equal(r.buf, "b NOOP");
	imap_reader_free(&r);
	evbuffer_free(in);
	free(lit);
}

/* The tag reported with a refused command. */
static void check_tag(const char *input, size_t chunk, size_t max_line, size_t max_command,
		      const char *expect)
{
	struct evbuffer *in = evbuffer_new();
	struct imap_reader r;
	imap_reader_init(&r, max_line, 100, max_command);
	size_t len = strlen(input), pos = 0;
	bool seen = false;
	while (pos < len && !seen) {
		size_t n = chunk < len - pos ? chunk : len - pos;
		evbuffer_add(in, input + pos, n);
		pos += n;
		for (int guard = 0; guard < 100; guard++) {
			enum imap_reader_status st = imap_reader_feed(&r, in);
			if (st == IMAP_READ_MORE)
				break;
			if (st == IMAP_READ_TOO_LONG) {
				assert_string_equal(r.tag, expect);
				seen = true;
				break;
			}
		}
	}
	assert_true(seen);
	imap_reader_free(&r);
	evbuffer_free(in);
}

static void test_reader_tag(void **state)
{
	const char *longline = "tag1 NOOP 01234567890123456789012345678901234567890123456789\r\n";
	check_tag(longline, 1000, 20, 1000, "tag1");
	check_tag(longline, 1, 20, 1000, "tag1");
	check_tag(longline, 7, 20, 1000, "tag1");
	check_tag("a.b APPEND x {500}\r\n", 1000, 100, 1000, "a.b");
	check_tag("a.b APPEND x {5}\r\n", 1, 100, 10, "a.b");
	check_tag("c LOGIN {3+}\r\nabc {200+}\r\n", 1000, 100, 1000, "c");
	/* no usable tag: untagged BAD */
	check_tag("01234567890123456789012345678901234567890123456789\r\n", 1000, 20, 1000, "");
	check_tag("+x NOOP 01234567890123456789012345678901234567890123456789\r\n", 1000, 20,
		  1000, "");
}

/* ---- parser ---- */

static struct imap_command parse_ok(const char *text)
{
	struct imap_command cmd;
	const char *error = NULL;
	if (imap_parse_command(text, strlen(text), &cmd, &error) != 0)
		fail_msg("'%s': %s", text, error);
	return cmd;
}

static const char *parse_err(const char *text, size_t len, char *tag_r)
{
	struct imap_command cmd;
	const char *error = NULL;
	assert_int_equal(imap_parse_command(text, len, &cmd, &error), -1);
	assert_non_null(error);
	if (tag_r != NULL)
		strcpy(tag_r, cmd.tag != NULL ? cmd.tag : "-");
	imap_command_clear(&cmd);
	return error;
}

static void test_parse_basic(void **state)
{
	struct imap_command cmd = parse_ok("a001 login \"joe\" {6}\r\nse\"cr\\");
	assert_string_equal(cmd.tag, "a001");
	assert_string_equal(cmd.name, "LOGIN");
	assert_int_equal(cmd.nargs, 2);
	assert_int_equal(cmd.args[0].type, IMAP_ARG_STRING);
	assert_string_equal(imap_arg_astring(&cmd.args[0]), "joe");
	assert_int_equal(cmd.args[1].type, IMAP_ARG_LITERAL);
	assert_int_equal(cmd.args[1].len, 6);
	assert_string_equal(cmd.args[1].str, "se\"cr\\");
	imap_command_clear(&cmd);

	cmd = parse_ok("A2 NOOP");
	assert_int_equal(cmd.nargs, 0);
	assert_null(cmd.args);
	imap_command_clear(&cmd);

	cmd = parse_ok("t UID FETCH 1:*,7 (FLAGS BODY.PEEK[HEADER.FIELDS (From To)]<0.100> UID)");
	assert_string_equal(cmd.name, "UID");
	assert_int_equal(cmd.nargs, 3);
	assert_true(imap_arg_atom_eq(&cmd.args[0], "fetch"));
	assert_string_equal(cmd.args[1].str, "1:*,7");
	assert_int_equal(cmd.args[2].type, IMAP_ARG_LIST);
	assert_int_equal(cmd.args[2].nlist, 3);
	assert_string_equal(cmd.args[2].list[1].str, "BODY.PEEK[HEADER.FIELDS (From To)]<0.100>");
	assert_string_equal(cmd.args[2].list[2].str, "UID");
	imap_command_clear(&cmd);

	cmd = parse_ok("s STORE 1 +FLAGS.SILENT (\\Seen \\Deleted $Junk) ");
	assert_int_equal(cmd.nargs, 3);
	assert_int_equal(cmd.args[2].nlist, 3);
	assert_string_equal(cmd.args[2].list[0].str, "\\Seen");
	imap_command_clear(&cmd);

	cmd = parse_ok("l LIST \"\" % ");
	assert_int_equal(cmd.nargs, 2);
	assert_string_equal(cmd.args[0].str, "");
	assert_int_equal(cmd.args[0].len, 0);
	assert_string_equal(cmd.args[1].str, "%");
	imap_command_clear(&cmd);

	cmd = parse_ok("x SELECT NIL");
	assert_int_equal(cmd.args[0].type, IMAP_ARG_NIL);
	assert_string_equal(imap_arg_astring(&cmd.args[0]), "NIL");
	assert_false(imap_arg_is_string(&cmd.args[0]));
	imap_command_clear(&cmd);

	cmd = parse_ok("x ID (\"name\" \"t\\\\b\\\"\" \"version\" nil) () ((a) (b c ()))");
	assert_int_equal(cmd.nargs, 3);
	assert_string_equal(cmd.args[0].list[1].str, "t\\b\"");
	assert_int_equal(cmd.args[0].list[3].type, IMAP_ARG_NIL);
	assert_int_equal(cmd.args[1].type, IMAP_ARG_LIST);
	assert_int_equal(cmd.args[1].nlist, 0);
	assert_int_equal(cmd.args[2].list[1].nlist, 3);
	assert_int_equal(cmd.args[2].list[1].list[2].nlist, 0);
	imap_command_clear(&cmd);

	/* UTF-8 in quoted strings (RFC 9051) */
	cmd = parse_ok("c CREATE \"Ent\xc3\xa4rt\"");
	assert_string_equal(cmd.args[0].str, "Ent\xc3\xa4rt");
	imap_command_clear(&cmd);

	/* '[' without a matching ']' is a plain atom character */
	cmd = parse_ok("l LOGIN pa[ss wo[rd ");
	assert_int_equal(cmd.nargs, 2);
	assert_string_equal(cmd.args[0].str, "pa[ss");
	assert_string_equal(cmd.args[1].str, "wo[rd");
	imap_command_clear(&cmd);
	cmd = parse_ok("s SELECT INBOX.[Gmail].x [a[b]c]d");
	assert_string_equal(cmd.args[0].str, "INBOX.[Gmail].x");
	assert_string_equal(cmd.args[1].str, "[a[b]c]d");
	imap_command_clear(&cmd);
	cmd = parse_ok("f FETCH 1 BODY[HEADER");
	assert_string_equal(cmd.args[1].str, "BODY[HEADER");
	imap_command_clear(&cmd);

	/* ']' is an ASTRING-CHAR; a tag may hold it */
	cmd = parse_ok("t] SELECT a]b");
	assert_string_equal(cmd.tag, "t]");
	assert_string_equal(cmd.args[0].str, "a]b");
	imap_command_clear(&cmd);
}

static void test_parse_literals(void **state)
{
	static const char text[] = "a APPEND box (\\Seen) ~{5}\r\nA\0B\r\n {3+}\nxyz";
	struct imap_command cmd;
	const char *error;
	assert_int_equal(imap_parse_command(text, sizeof(text) - 1, &cmd, &error), 0);
	assert_int_equal(cmd.nargs, 4);
	assert_int_equal(cmd.args[2].type, IMAP_ARG_LITERAL);
	assert_true(cmd.args[2].binary);
	assert_int_equal(cmd.args[2].len, 5);
	assert_memory_equal(cmd.args[2].str, "A\0B\r\n", 6);
	assert_false(cmd.args[3].binary);
	assert_string_equal(cmd.args[3].str, "xyz");
	imap_command_clear(&cmd);

	cmd = parse_ok("a X ({0}\r\n {1}\r\n))");
	assert_int_equal(cmd.args[0].nlist, 2);
	assert_int_equal(cmd.args[0].list[0].len, 0);
	assert_string_equal(cmd.args[0].list[1].str, ")");
	imap_command_clear(&cmd);

	assert_string_equal(parse_err("a X {5}\r\nabc", 12, NULL), "Literal truncated");
	assert_string_equal(parse_err("a X {5} x", 9, NULL), "Missing CRLF after literal size");
	assert_string_equal(parse_err("a X {}\r\n", 8, NULL), "Invalid literal size");
	assert_string_equal(parse_err("a X {3}\r\nabcd", 13, NULL),
			    "Missing space between arguments");
	assert_string_equal(parse_err("a X ~x", 6, NULL), "Invalid argument");
}

static void test_parse_errors(void **state)
{
	char tag[64];
#define ERR(s) parse_err(s, sizeof(s) - 1, tag)
	assert_string_equal(ERR(""), "Empty command");
	assert_string_equal(ERR("+x NOOP"), "Invalid tag");
	assert_string_equal(ERR("a(b NOOP"), "Invalid tag");
	assert_string_equal(ERR("abc"), "Missing command");
	assert_string_equal(tag, "abc");
	assert_string_equal(ERR("abc "), "Missing command");
	assert_string_equal(ERR("abc  NOOP"), "Missing command");
	assert_string_equal(ERR("t X  a"), "Unexpected space");
	assert_string_equal(tag, "t");
	assert_string_equal(ERR("t X a  b"), "Unexpected space");
	assert_string_equal(ERR("t X a  "), "Unexpected space");
	assert_string_equal(ERR("t X (a )"), "Unexpected space");
	assert_string_equal(ERR("t X ( a)"), "Unexpected space");
	assert_string_equal(ERR("t X (a"), "Missing ')'");
	assert_string_equal(ERR("t X a)"), "Unexpected ')'");
	assert_string_equal(ERR("t X (a)(b)"), "Missing space between arguments");
	assert_string_equal(ERR("t X \"abc"), "Missing '\"'");
	assert_string_equal(ERR("t X \"a\\nb\""), "Invalid escape in quoted string");
	assert_string_equal(ERR("t X \"a\\"), "Invalid escape in quoted string");
	assert_string_equal(ERR("t X \"a\0b\""), "Invalid character in quoted string");
	assert_string_equal(ERR("t X \"a\rb\""), "Invalid character in quoted string");
	assert_string_equal(ERR("t X a\0b"), "Invalid character in atom");
	assert_string_equal(ERR("t X a\x01"), "Invalid character in atom");
	assert_string_equal(ERR("t X \xc3\xa4"), "8-bit octet in atom");
	assert_string_equal(ERR("t X a{b"), "Invalid character in atom");
	assert_string_equal(ERR("t X a\"b"), "Invalid character in atom");
	assert_string_equal(ERR("t X BODY[HEADER.FIELDS (A"), "Missing ')'");
	assert_string_equal(ERR("t X BODY[a\nb]"), "Invalid character in atom");
	assert_string_equal(ERR("t N\xc3\xa4"), "Invalid command name");
	assert_string_equal(tag, "t");
#undef ERR
}

static void test_parse_depth(void **state)
{
	char text[200];
	/* IMAP_MAX_DEPTH levels are fine, one more is refused */
	for (int depth = IMAP_MAX_DEPTH; depth <= IMAP_MAX_DEPTH + 1; depth++) {
		size_t n = (size_t)sprintf(text, "a X ");
		for (int i = 0; i < depth; i++)
			text[n++] = '(';
		text[n++] = 'z';
		for (int i = 0; i < depth; i++)
			text[n++] = ')';
		struct imap_command cmd;
		const char *error;
		int ret = imap_parse_command(text, n, &cmd, &error);
		if (depth == IMAP_MAX_DEPTH) {
			assert_int_equal(ret, 0);
			const struct imap_arg *a = &cmd.args[0];
			for (int i = 1; i < depth; i++)
				a = &a->list[0];
			assert_string_equal(a->list[0].str, "z");
		} else {
			assert_int_equal(ret, -1);
			assert_string_equal(error, "Too deep");
		}
		imap_command_clear(&cmd);
	}
	/* 100,000 '(' does not recurse 100,000 times */
	size_t n = 100000;
	char *deep = malloc(n + 5);
	memcpy(deep, "a X ", 4);
	memset(deep + 4, '(', n);
	struct imap_command cmd;
	const char *error;
	assert_int_equal(imap_parse_command(deep, n + 4, &cmd, &error), -1);
	assert_string_equal(error, "Too deep");
	imap_command_clear(&cmd);
	free(deep);
}

static void test_parse_many_args(void **state)
{
	size_t n = IMAP_MAX_ARGS + 10;
	char *text = malloc(2 * n + 10);
	size_t len = (size_t)sprintf(text, "a X");
	for (size_t i = 0; i < n; i++) {
		text[len++] = ' ';
		text[len++] = 'a';
	}
	struct imap_command cmd;
	const char *error;
	assert_int_equal(imap_parse_command(text, len, &cmd, &error), -1);
	assert_string_equal(error, "Too many arguments");
	imap_command_clear(&cmd);
	assert_int_equal(imap_parse_command(text, 3 + 2 * IMAP_MAX_ARGS, &cmd, &error), 0);
	assert_int_equal(cmd.nargs, IMAP_MAX_ARGS);
	imap_command_clear(&cmd);
	free(text);
}

/* Reader and parser together: every split point yields the same arguments. */
static void test_reader_then_parser(void **state)
{
	const char *input = "f1 FETCH 1:3 (BODY.PEEK[HEADER.FIELDS (SUBJECT)] FLAGS)\r\n"
			    "a2 APPEND Drafts (\\Draft) {11+}\r\nHello\r\nBody\r\n"
			    "s3 SEARCH CHARSET UTF-8 SUBJECT {3}\r\n\xc3\xa4x\r\n";
	size_t len = strlen(input);
	for (size_t cut = 0; cut <= len; cut++) {
		struct evbuffer *in = evbuffer_new();
		struct imap_reader r;
		imap_reader_init(&r, 200, 200, 1000);
		evbuffer_add(in, input, cut);
		int ncmd = 0;
		for (int round = 0; round < 2; round++) {
			if (round == 1)
				evbuffer_add(in, input + cut, len - cut);
			for (int guard = 0; guard < 100; guard++) {
				enum imap_reader_status st = imap_reader_feed(&r, in);
				if (st == IMAP_READ_MORE)
					break;
				if (st != IMAP_READ_COMMAND)
					continue;
				struct imap_command cmd;
				const char *error;
				assert_int_equal(imap_parse_command(r.buf, r.len, &cmd, &error), 0);
				if (ncmd == 0) {
					assert_string_equal(cmd.name, "FETCH");
					assert_int_equal(cmd.args[1].nlist, 2);
				} else if (ncmd == 1) {
					assert_int_equal(cmd.nargs, 3);
					assert_string_equal(cmd.args[2].str, "Hello\r\nBody");
				} else {
					assert_int_equal(cmd.nargs, 4);
					assert_string_equal(cmd.args[3].str, "\xc3\xa4x");
				}
				ncmd++;
				imap_command_clear(&cmd);
			}
		}
		assert_int_equal(ncmd, 3);
		imap_reader_free(&r);
		evbuffer_free(in);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reader_lines),      cmocka_unit_test(test_reader_literals),
		cmocka_unit_test(test_reader_limits),     cmocka_unit_test(test_parse_basic),
		cmocka_unit_test(test_parse_literals),    cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_parse_depth),       cmocka_unit_test(test_parse_many_args),
		cmocka_unit_test(test_reader_then_parser), cmocka_unit_test(test_reader_tag),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Unit tests for the POP3 command parser and the RETR/TOP wire conversion
 * (fed whole and one octet at a time).
 */
#include "pop3/pop3_cmd.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static enum pop3_parse_result parse(const char *line, struct pop3_cmd *c)
{
	return pop3_cmd_parse(line, strlen(line), c);
}

static void test_verbs(void **state)
{
	struct pop3_cmd c;
	assert_int_equal(parse("STAT", &c), POP3_PARSE_OK);
	assert_int_equal(c.verb, POP3_STAT);
	assert_int_equal(parse("stat", &c), POP3_PARSE_OK);
	assert_int_equal(parse("StAt ", &c), POP3_PARSE_OK); /* trailing blank tolerated */
	assert_int_equal(parse("CAPA", &c), POP3_PARSE_OK);
	assert_int_equal(c.verb, POP3_CAPA);
	assert_int_equal(parse("STLS", &c), POP3_PARSE_OK);
	assert_int_equal(parse("QUIT", &c), POP3_PARSE_OK);
	assert_int_equal(parse("NOOP", &c), POP3_PARSE_OK);
	assert_int_equal(parse("RSET", &c), POP3_PARSE_OK);
	assert_int_equal(parse("STAT 1", &c), POP3_PARSE_SYNTAX);
	assert_int_equal(parse("QUIT now", &c), POP3_PARSE_SYNTAX);
	assert_int_equal(parse("XTND", &c), POP3_PARSE_UNKNOWN);
	assert_int_equal(parse("STATS", &c), POP3_PARSE_UNKNOWN);
	assert_int_equal(parse("", &c), POP3_PARSE_UNKNOWN);
	assert_int_equal(parse(" STAT", &c), POP3_PARSE_UNKNOWN);
	assert_string_equal(pop3_verb_name(POP3_TOP), "TOP");
}

static void test_numbers(void **state)
{
	struct pop3_cmd c;
	assert_int_equal(parse("LIST", &c), POP3_PARSE_OK);
	assert_int_equal(c.nnum, 0);
	assert_int_equal(parse("LIST 12", &c), POP3_PARSE_OK);
	assert_int_equal(c.nnum, 1);
	assert_int_equal(c.num[0], 12);
	assert_int_equal(parse("UIDL 4294967295", &c), POP3_PARSE_OK);
	assert_int_equal(c.num[0], 4294967295u);
	assert_int_equal(parse("UIDL 4294967296", &c), POP3_PARSE_SYNTAX);
	assert_int_equal(parse("UIDL 00000000001", &c), POP3_PARSE_SYNTAX);
	assert_int_equal(parse("RETR", &c), POP3_PARSE_SYNTAX);
	assert_int_equal(parse("RETR ", &c), POP3_PARSE_SYNTAX);
	assert_int_equal(parse("RETR 1 2", &c), POP3_PARSE_SYNTAX);
	assert_int_equal(parse("RETR -1", &c), POP3_PARSE_SYNTAX);
	assert_int_equal(parse("RETR +1", &c), POP3_PARSE_SYNTAX);
	assert_int_equal(parse("RETR 1x", &c), POP3_PARSE_SYNTAX);
	assert_int_equal(parse("DELE 0", &c), POP3_PARSE_OK); /* range is the session's business */
	assert_int_equal(parse("TOP 3 0", &c), POP3_PARSE_OK);
	assert_int_equal(c.verb, POP3_TOP);
	assert_int_equal(c.nnum, 2);
	assert_int_equal(c.num[0], 3);
	assert_int_equal(c.num[1], 0);
	assert_int_equal(parse("TOP 3", &c), POP3_PARSE_SYNTAX);
	assert_int_equal(parse("TOP 3  4", &c), POP3_PARSE_SYNTAX);
	assert_int_equal(parse("TOP 3 4 5", &c), POP3_PARSE_SYNTAX);
}

static void test_text(void **state)
{
	struct pop3_cmd c;
	assert_int_equal(parse("USER a@example.test", &c), POP3_PARSE_OK);
	assert_int_equal(c.verb, POP3_USER);
	assert_int_equal(c.arg_len, 14);
	assert_memory_equal(c.arg, "a@example.test", 14);
	assert_int_equal(parse("PASS correct horse battery ", &c), POP3_PARSE_OK);
	assert_int_equal(c.arg_len, 22); /* spaces kept */
	assert_int_equal(parse("USER", &c), POP3_PARSE_SYNTAX);
	assert_int_equal(parse("PASS ", &c), POP3_PARSE_SYNTAX);
	assert_int_equal(parse("AUTH", &c), POP3_PARSE_OK);
	assert_null(c.arg);
	assert_int_equal(parse("AUTH PLAIN =", &c), POP3_PARSE_OK);
	assert_int_equal(c.arg_len, 7);
	/* NUL and control octets are refused before anything else */
	assert_int_equal(pop3_cmd_parse("USER a\0b", 8, &c), POP3_PARSE_BAD_CHAR);
	assert_int_equal(parse("USER a\x01", &c), POP3_PARSE_BAD_CHAR);
	assert_int_equal(parse("NOOP\x7f", &c), POP3_PARSE_BAD_CHAR);
}

/* Convert `in` whole and octet by octet; both must give `want`. */
static void xform_check(const char *in, int64_t top, const char *want)
{
	size_t n = strlen(in);
	char *out = malloc(2 * n + 4);
	for (int bytewise = 0; bytewise < 2; bytewise++) {
		struct pop3_xform x;
		pop3_xform_init(&x, top);
		size_t o = 0;
		if (bytewise) {
			for (size_t i = 0; i < n && !x.done; i++)
				o += pop3_xform_run(&x, (const unsigned char *)in + i, 1, out + o);
		} else {
			o = pop3_xform_run(&x, (const unsigned char *)in, n, out);
		}
		if (!x.bol && !x.done) {
			out[o++] = '\r';
			out[o++] = '\n';
		}
		out[o] = '\0';
		assert_string_equal(out, want);
	}
	free(out);
}

static void test_xform(void **state)
{
	xform_check("A: b\r\n\r\nbody\r\n", -1, "A: b\r\n\r\nbody\r\n");
	xform_check("A: b\n\nbody\n", -1, "A: b\r\n\r\nbody\r\n");
	xform_check("A: b\r\n\r\n.\r\n..x\r\n.", -1, "A: b\r\n\r\n..\r\n...x\r\n..\r\n");
	xform_check("A: b\r\n\r\nno end", -1, "A: b\r\n\r\nno end\r\n");
	xform_check("A: b\r\n\r\n1\r\n2\r\n3\r\n", 0, "A: b\r\n\r\n");
	xform_check("A: b\r\n\r\n1\r\n2\r\n3\r\n", 2, "A: b\r\n\r\n1\r\n2\r\n");
	xform_check("A: b\r\n\r\n1\r\n.2\r\n3\r\n", 2, "A: b\r\n\r\n1\r\n..2\r\n");
	xform_check("A: b\r\n\r\n1\r\n", 5, "A: b\r\n\r\n1\r\n");
	xform_check("A: b\r\nC: d\r\n", 3, "A: b\r\nC: d\r\n"); /* no body at all */
	xform_check("", -1, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_verbs),
		cmocka_unit_test(test_numbers),
		cmocka_unit_test(test_text),
		cmocka_unit_test(test_xform),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

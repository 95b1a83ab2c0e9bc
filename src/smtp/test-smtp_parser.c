/*
 * Unit tests for the SMTP command parser and the DATA decoder. Command lines
 * go through lib/linereader, fed whole and one octet at a time.
 */
#include "lib/linereader.h"
#include "smtp/smtp_data.h"
#include "smtp/smtp_parser.h"

#include <event2/buffer.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* Feed `input` through a line reader (whole or byte by byte) and parse every line. */
struct parsed {
	enum smtp_verb verb[16];
	char arg[16][SMTP_COMMAND_LINE_MAX + 1];
	int status[16]; /* 0 parsed, -1 not a command, 1 too long */
	int n;
};

static void run_lines(const char *input, size_t len, bool bytewise, struct parsed *p)
{
	struct evbuffer *in = evbuffer_new();
	struct line_reader lr;
	line_reader_init(&lr, SMTP_COMMAND_LINE_MAX);
	static char buf[SMTP_COMMAND_LINE_MAX + 1];
	memset(p, 0, sizeof(*p));
	size_t fed = 0;
	while (fed < len || evbuffer_get_length(in) > 0) {
		size_t chunk = bytewise ? 1 : len - fed;
		if (fed < len) {
			evbuffer_add(in, input + fed, chunk);
			fed += chunk;
		}
		for (;;) {
			size_t n;
			unsigned flags;
			enum line_status st = line_reader_read(&lr, in, buf, &n, &flags);
			if (st == LINE_MORE)
				break;
			assert_true(p->n < 16);
			if (st == LINE_TOO_LONG) {
				p->status[p->n++] = 1;
				continue;
			}
			struct smtp_command cmd;
			p->status[p->n] = smtp_command_parse(buf, n, &cmd);
			if (p->status[p->n] == 0) {
				p->verb[p->n] = cmd.verb;
				memcpy(p->arg[p->n], cmd.arg, cmd.arg_len);
				p->arg[p->n][cmd.arg_len] = '\0';
			}
			p->n++;
		}
		if (fed >= len)
			break;
	}
	evbuffer_free(in);
}

static void check_both(const char *input, void (*check)(const struct parsed *))
{
	struct parsed *p = malloc(sizeof(*p));
	run_lines(input, strlen(input), false, p);
	check(p);
	run_lines(input, strlen(input), true, p);
	check(p);
	free(p);
}

static void check_session(const struct parsed *p)
{
	assert_int_equal(p->n, 8);
	assert_int_equal(p->verb[0], SMTP_EHLO);
	assert_string_equal(p->arg[0], "client.example");
	assert_int_equal(p->verb[1], SMTP_MAIL);
	assert_string_equal(p->arg[1], "<a@b.example> SIZE=100");
	assert_int_equal(p->verb[2], SMTP_RCPT);
	assert_string_equal(p->arg[2], "<c@d.example>");
	assert_int_equal(p->verb[3], SMTP_DATA);
	assert_string_equal(p->arg[3], "");
	assert_int_equal(p->verb[4], SMTP_QUIT);
	assert_int_equal(p->verb[5], SMTP_UNKNOWN);
	assert_int_equal(p->status[6], -1); /* empty line */
	assert_int_equal(p->verb[7], SMTP_STARTTLS);
}

static void test_lines(void **state)
{
	check_both("EHLO client.example\r\nmail from:<a@b.example> SIZE=100\r\n"
		   "RCPT TO: <c@d.example>\r\nDATA\r\nquit\r\nFROB x\r\n\r\nStartTLS\r\n",
		   check_session);
}

static void check_too_long(const struct parsed *p)
{
	assert_int_equal(p->n, 3);
	assert_int_equal(p->verb[0], SMTP_NOOP);
	assert_int_equal(p->status[1], 1);
	assert_int_equal(p->verb[2], SMTP_RSET);
}

static void test_too_long(void **state)
{
	size_t n = SMTP_COMMAND_LINE_MAX + 100;
	char *s = malloc(n + 64);
	strcpy(s, "NOOP\r\nNOOP ");
	size_t l = strlen(s);
	memset(s + l, 'x', n);
	strcpy(s + l + n, "\r\nRSET\r\n");
	check_both(s, check_too_long);
	free(s);
}

static void test_verbs(void **state)
{
	struct smtp_command c;
	assert_int_equal(smtp_command_parse("MAIL FROM<a@b>", 14, &c), -1);
	assert_int_equal(smtp_command_parse("MAIL", 4, &c), -1);
	assert_int_equal(smtp_command_parse("RCPT TO:", 8, &c), 0);
	assert_int_equal(c.verb, SMTP_RCPT);
	assert_int_equal(c.arg_len, 0);
	assert_int_equal(smtp_command_parse("AUTH PLAIN AGFAYg==", 19, &c), 0);
	assert_int_equal(c.verb, SMTP_AUTH);
	assert_int_equal(c.arg_len, 14);
	assert_int_equal(smtp_command_parse("NOOP\0x", 6, &c), -1);
	assert_int_equal(smtp_command_parse("HELOX", 5, &c), 0);
	assert_int_equal(c.verb, SMTP_UNKNOWN);
	assert_string_equal(smtp_verb_name(SMTP_BDAT), "BDAT");
}

static int mail(const char *arg, bool utf8, struct smtp_mail_args *a, struct smtp_error *e)
{
	return smtp_parse_mail(arg, strlen(arg), utf8, a, e);
}

static int rcpt(const char *arg, bool utf8, struct smtp_rcpt_args *a, struct smtp_error *e)
{
	return smtp_parse_rcpt(arg, strlen(arg), utf8, a, e);
}

static void test_mail_params(void **state)
{
	struct smtp_mail_args a;
	struct smtp_error e;
	assert_int_equal(mail("<a@b.example>", true, &a, &e), 0);
	assert_false(a.has_size);
	assert_int_equal(mail("<>", true, &a, &e), 0);
	assert_true(a.addr.flags & ADDRESS_NULL);
	assert_int_equal(mail("<a@b.example> SIZE=12345 BODY=8BITMIME RET=HDRS ENVID=abc+2Bdef "
			      "AUTH=<>",
			      true, &a, &e),
			 0);
	assert_true(a.has_size);
	assert_int_equal(a.size, 12345);
	assert_int_equal(a.body, SMTP_BODY_8BITMIME);
	assert_string_equal(a.ret, "HDRS");
	assert_string_equal(a.envid, "abc+2Bdef");
	assert_string_equal(a.auth, "<>");
	assert_int_equal(mail("<a@b.example> body=binarymime smtputf8", true, &a, &e), 0);
	assert_int_equal(a.body, SMTP_BODY_BINARYMIME);
	assert_true(a.smtputf8);
	assert_int_equal(mail("<a@b.example> SIZE=99999999999999999999", true, &a, &e), 0);
	assert_int_equal(a.size, UINT64_MAX);

	/* unknown and duplicate parameters: 555 5.5.4 */
	assert_int_equal(mail("<a@b.example> FOO=bar", true, &a, &e), -1);
	assert_int_equal(e.code, 555);
	assert_string_equal(e.enhanced, "5.5.4");
	assert_int_equal(mail("<a@b.example> SIZE=1 SIZE=2", true, &a, &e), -1);
	assert_int_equal(e.code, 555);
	assert_int_equal(mail("<a@b.example> SMTPUTF8", false, &a, &e), -1);
	assert_int_equal(e.code, 555);
	/* bad values */
	assert_int_equal(mail("<a@b.example> SIZE=12a", true, &a, &e), -1);
	assert_int_equal(e.code, 501);
	assert_int_equal(mail("<a@b.example> BODY=9BIT", true, &a, &e), -1);
	assert_int_equal(mail("<a@b.example> RET=ALL", true, &a, &e), -1);
	assert_int_equal(mail("<a@b.example> ENVID=a+2b", true, &a, &e), -1); /* lowercase hex */
	assert_int_equal(mail("<a@b.example> ENVID=a+2", true, &a, &e), -1);
	assert_int_equal(mail("<a@b.example> SIZE=", true, &a, &e), -1);
	assert_int_equal(mail("<a@b.example>SIZE=1", true, &a, &e), -1);
	/* bad path */
	assert_int_equal(mail("a@b.example", true, &a, &e), -1);
	assert_int_equal(e.code, 501);
	assert_string_equal(e.enhanced, "5.1.7");
	/* UTF-8 sender only with the SMTPUTF8 parameter */
	assert_int_equal(mail("<j\xc3\xb6rg@b.example>", true, &a, &e), -1);
	assert_int_equal(mail("<j\xc3\xb6rg@b.example> SMTPUTF8", true, &a, &e), 0);
	/* quoted '>' inside the path */
	assert_int_equal(mail("<\"a>b\"@c.example> SIZE=5", true, &a, &e), 0);
	assert_string_equal(a.addr.local, "a>b");
	assert_int_equal(a.size, 5);
}

static void test_rcpt_params(void **state)
{
	struct smtp_rcpt_args a;
	struct smtp_error e;
	assert_int_equal(rcpt("<c@d.example>", false, &a, &e), 0);
	assert_int_equal(a.notify, 0);
	assert_int_equal(rcpt("<c@d.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c+40d.example",
			      false, &a, &e),
			 0);
	assert_int_equal(a.notify, SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE);
	assert_string_equal(a.orcpt, "rfc822;c+40d.example");
	assert_int_equal(rcpt("<c@d.example> NOTIFY=NEVER", false, &a, &e), 0);
	assert_int_equal(a.notify, SMTP_NOTIFY_NEVER);
	assert_int_equal(rcpt("<c@d.example> NOTIFY=NEVER,DELAY", false, &a, &e), -1);
	assert_int_equal(rcpt("<c@d.example> NOTIFY=SUCCESS,SUCCESS", false, &a, &e), -1);
	assert_int_equal(rcpt("<c@d.example> NOTIFY=SUCCESS,", false, &a, &e), -1);
	assert_int_equal(rcpt("<c@d.example> NOTIFY=SOMETIMES", false, &a, &e), -1);
	assert_int_equal(rcpt("<c@d.example> ORCPT=rfc822", false, &a, &e), -1);
	assert_int_equal(rcpt("<c@d.example> NOTIFY=DELAY NOTIFY=DELAY", false, &a, &e), -1);
	assert_int_equal(e.code, 555);
	assert_int_equal(rcpt("<c@d.example> SIZE=10", false, &a, &e), -1);
	assert_int_equal(e.code, 555);
	assert_int_equal(rcpt("<>", false, &a, &e), -1);
	assert_string_equal(e.enhanced, "5.1.3");
	assert_int_equal(rcpt("<postmaster>", false, &a, &e), 0);
	assert_true(a.addr.flags & ADDRESS_POSTMASTER);
	assert_int_equal(rcpt("<j\xc3\xb6rg@b.example>", false, &a, &e), -1);
	assert_int_equal(rcpt("<j\xc3\xb6rg@b.example>", true, &a, &e), 0);
}

static void test_bdat(void **state)
{
	uint64_t n;
	bool last;
	assert_int_equal(smtp_parse_bdat("100", 3, &n, &last), 0);
	assert_int_equal(n, 100);
	assert_false(last);
	assert_int_equal(smtp_parse_bdat("0 LAST", 6, &n, &last), 0);
	assert_int_equal(n, 0);
	assert_true(last);
	assert_int_equal(smtp_parse_bdat("10 last", 7, &n, &last), 0);
	assert_int_equal(smtp_parse_bdat("", 0, &n, &last), -1);
	assert_int_equal(smtp_parse_bdat("-1", 2, &n, &last), -1);
	assert_int_equal(smtp_parse_bdat("10 FIRST", 8, &n, &last), -1);
	assert_int_equal(smtp_parse_bdat("99999999999999999999999", 23, &n, &last), -1);
}

/* Run the DATA decoder whole and byte by byte; both must agree. */
static size_t decode(const char *in, size_t len, bool normalize, size_t max_line, char *out,
		     size_t *out_len, unsigned *flags, bool *done)
{
	size_t consumed[2], olen[2];
	unsigned fl[2];
	bool dn[2];
	char *buf[2] = {malloc(2 * len + 8), malloc(2 * len + 8)};
	for (int mode = 0; mode < 2; mode++) {
		struct smtp_data d;
		smtp_data_init(&d, max_line, normalize);
		size_t i = 0, o = 0;
		dn[mode] = false;
		while (i < len && !dn[mode]) {
			size_t chunk = mode == 0 ? len - i : 1;
			size_t ol;
			i += smtp_data_decode(&d, in + i, chunk, buf[mode] + o, &ol, &dn[mode]);
			o += ol;
		}
		consumed[mode] = i;
		olen[mode] = o;
		fl[mode] = d.flags;
	}
	assert_int_equal(consumed[0], consumed[1]);
	assert_int_equal(olen[0], olen[1]);
	assert_memory_equal(buf[0], buf[1], olen[0]);
	assert_int_equal(fl[0], fl[1]);
	assert_int_equal(dn[0], dn[1]);
	memcpy(out, buf[0], olen[0]);
	out[olen[0]] = '\0';
	*out_len = olen[0];
	*flags = fl[0];
	*done = dn[0];
	free(buf[0]);
	free(buf[1]);
	return consumed[0];
}

#define DECODE(s, norm)                                                                            \
	(used = decode(s, sizeof(s) - 1, norm, 1000, out, &olen, &flags, &done))

static void test_data_basic(void **state)
{
	char out[256];
	size_t olen, used;
	unsigned flags;
	bool done;
	DECODE("Subject: x\r\n\r\nbody\r\n..dot\r\n.\r\nQUIT\r\n", false);
	assert_true(done);
	assert_string_equal(out, "Subject: x\r\n\r\nbody\r\n.dot\r\n");
	assert_int_equal(used, sizeof("Subject: x\r\n\r\nbody\r\n..dot\r\n.\r\n") - 1);
	assert_int_equal(flags, 0);
	/* empty message */
	DECODE(".\r\n", false);
	assert_true(done);
	assert_int_equal(olen, 0);
	/* not finished */
	DECODE("abc\r\n.", false);
	assert_false(done);
	assert_string_equal(out, "abc\r\n");
}

static void test_data_smuggling(void **state)
{
	char out[256];
	size_t olen, used;
	unsigned flags;
	bool done;
	/* <LF>.<LF>, <LF>.<CRLF>, <CRLF>.<LF>, <CR>.<CR>: none of these ends DATA */
	DECODE("a\n.\nMAIL FROM:<x@y>\r\n", false);
	assert_false(done);
	assert_true(flags & SMTP_DATA_BARE_LF);
	DECODE("a\n.\r\nMAIL FROM:<x@y>\r\n", false);
	assert_false(done);
	assert_true(flags & SMTP_DATA_BARE_LF);
	DECODE("a\r\n.\nMAIL FROM:<x@y>\r\n", false);
	assert_false(done);
	assert_true(flags & SMTP_DATA_BARE_LF);
	DECODE("a\r.\rMAIL FROM:<x@y>\r\n", false);
	assert_false(done);
	assert_true(flags & SMTP_DATA_BARE_CR);
	DECODE("a\r.\r\nMAIL FROM:<x@y>\r\n", false);
	assert_false(done);
	DECODE("a\r\n.\r.\r\nX\r\n", false);
	assert_false(done);
	/* in normalize mode too, and the result has only CRLF */
	DECODE("a\n.\r\nb\r.\r\nc\r\n.\r\n", true);
	assert_true(done);
	assert_string_equal(out, "a\r\n.\r\nb\r\n.\r\nc\r\n");
	assert_true(flags & SMTP_DATA_BARE_LF);
	assert_true(flags & SMTP_DATA_BARE_CR);
	DECODE("a\r\n.\nb\r\n.\r\n", true);
	assert_true(done);
	assert_int_equal(used, sizeof("a\r\n.\nb\r\n.\r\n") - 1);
	assert_string_equal(out, "a\r\n.\r\nb\r\n");
	/* the real end still works after bare line endings */
	DECODE("a\nb\r\n.\r\n", false);
	assert_true(done);
	assert_true(flags & SMTP_DATA_BARE_LF);
}

static void test_data_line_length(void **state)
{
	char in[3000], out[6000];
	size_t olen;
	unsigned flags;
	bool done;
	/* 998 octets + CRLF is the limit (1000 with CRLF) */
	memset(in, 'x', 998);
	memcpy(in + 998, "\r\n.\r\n", 5);
	decode(in, 1003, false, 1000, out, &olen, &flags, &done);
	assert_true(done);
	assert_int_equal(flags, 0);
	assert_int_equal(olen, 1000);
	memset(in, 'x', 999);
	memcpy(in + 999, "\r\n.\r\n", 5);
	decode(in, 1004, false, 1000, out, &olen, &flags, &done);
	assert_true(done);
	assert_int_equal(flags, SMTP_DATA_LINE_TOO_LONG);
	/* nothing is truncated: the output has every octet */
	assert_int_equal(olen, 1001);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lines),       cmocka_unit_test(test_too_long),
		cmocka_unit_test(test_verbs),       cmocka_unit_test(test_mail_params),
		cmocka_unit_test(test_rcpt_params), cmocka_unit_test(test_bdat),
		cmocka_unit_test(test_data_basic),  cmocka_unit_test(test_data_smuggling),
		cmocka_unit_test(test_data_line_length),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

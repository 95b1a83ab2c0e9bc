/* Unit tests for the address-list parser of `postern sendmail` (cmd_sendmail.c). */
#include "cli/cli_common.h"
#include "mail/address.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#define HOST "host.example.test"

/* Parse `in`; expect success and exactly the `n` addresses of `want`, in order. */
static void expect_list(const char *in, const char *const *want, size_t n)
{
	struct cli_strlist l = {0};
	unsigned flags = 0;
	assert_int_equal(sendmail_address_list(in, HOST, &l, &flags), 0);
	if (l.n != n)
		fail_msg("%s: got %zu addresses, want %zu", in, l.n, n);
	for (size_t i = 0; i < n; i++)
		assert_string_equal(l.v[i], want[i]);
	cli_strlist_free(&l);
}

static void expect_bad(const char *in)
{
	struct cli_strlist l = {0};
	unsigned flags = 0;
	if (sendmail_address_list(in, HOST, &l, &flags) != -1)
		fail_msg("accepted malformed %s", in);
	cli_strlist_free(&l);
}

static void test_plain(void **state)
{
	(void)state;
	const char *const a[] = {"a@b.test"};
	expect_list("a@b.test", a, 1);
	expect_list("  a@b.test  ", a, 1);
	const char *const two[] = {"a@b.test", "c@d.test"};
	expect_list("a@b.test, c@d.test", two, 2);
	/* without commas two bare addresses are one malformed mailbox */
	expect_bad("a@b.test c@d.test");
}

static void test_display_names_and_comments(void **state)
{
	(void)state;
	const char *const want[] = {"alice@example.test", "jd@far.test"};
	expect_list("Alice <alice@example.test>, \"Doe, J\" <jd@far.test> (x)", want, 2);
	const char *const one[] = {"a@x.test"};
	expect_list("a@x.test (hi, (nested) there)", one, 1);
	expect_list("(lead) a@x.test", one, 1);
	expect_list("\"a@x.test\" <a@x.test>", one, 1);
}

static void test_groups(void **state)
{
	(void)state;
	const char *const want[] = {"c1@x.test", "c2@x.test", "d@y.test"};
	expect_list("grp: c1@x.test, c2@x.test;, d@y.test", want, 3);
	expect_list("undisclosed-recipients:;", NULL, 0);
	expect_list("", NULL, 0);
	expect_list(" , ,", NULL, 0);
}

static void test_canonical_and_local(void **state)
{
	(void)state;
	const char *const want[] = {"root@" HOST, "User@example.test"};
	expect_list("root, User@Example.TEST", want, 2);
	/* duplicates are kept once */
	const char *const dup[] = {"a@x.test"};
	expect_list("a@x.test, A <a@x.test>, a@X.test", dup, 1);
	/* an obsolete source route is dropped */
	expect_list("<@relay.test,@r2.test:a@x.test>", dup, 1);
	/* a quoted local part stays quoted */
	const char *const q[] = {"\"john doe\"@x.test"};
	expect_list("\"john doe\"@x.test", q, 1);
}

static void test_utf8_flag(void **state)
{
	(void)state;
	struct cli_strlist l = {0};
	unsigned flags = 0;
	assert_int_equal(sendmail_address_list("j\xc3\xb6rg@b\xc3\xbc" "cher.test", HOST, &l, &flags),
			 0);
	assert_int_equal(l.n, 1);
	assert_true(flags & ADDRESS_UTF8);
	cli_strlist_free(&l);
}

static void test_malformed(void **state)
{
	(void)state;
	expect_bad("a b@c.test");
	expect_bad("<unterminated@x.test");
	expect_bad("a@x.test (unclosed comment");
	expect_bad("\"unterminated@x.test");
	expect_bad("a@");
	expect_bad("<a@x.test> <b@x.test>");
	expect_bad("a@x..test");
	expect_bad("a@[1.2.3.4");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain),
		cmocka_unit_test(test_display_names_and_comments),
		cmocka_unit_test(test_groups),
		cmocka_unit_test(test_canonical_and_local),
		cmocka_unit_test(test_utf8_flag),
		cmocka_unit_test(test_malformed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

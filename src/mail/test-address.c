/* Unit tests for the RFC 5321 path parser. */
#include "mail/address.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static int parse(const char *s, unsigned opts, struct address *a)
{
	size_t used;
	const char *err;
	int r = address_parse_path(s, strlen(s), opts, a, &used, &err);
	if (r == 0 && used != strlen(s))
		return -2; /* trailing garbage: callers check the whole string */
	return r;
}

static void test_simple(void **state)
{
	struct address a;
	assert_int_equal(parse("<user@Example.COM>", 0, &a), 0);
	assert_string_equal(a.local, "user");
	assert_string_equal(a.domain, "example.com");
	assert_int_equal(a.flags, 0);
	assert_int_equal(parse("<First.Last+tag@sub.example.org>", 0, &a), 0);
	assert_string_equal(a.local, "First.Last+tag");
	assert_int_equal(parse("<a@b>", 0, &a), 0);
	assert_int_equal(parse("<x-y_z@a-b.c0>", 0, &a), 0);
}

static void test_null_and_postmaster(void **state)
{
	struct address a;
	assert_int_equal(parse("<>", ADDRESS_ALLOW_NULL, &a), 0);
	assert_true(a.flags & ADDRESS_NULL);
	assert_int_equal(parse("<>", 0, &a), -1);
	assert_int_equal(parse("<Postmaster>", ADDRESS_ALLOW_POSTMASTER, &a), 0);
	assert_true(a.flags & ADDRESS_POSTMASTER);
	assert_int_equal(parse("<postmaster>", ADDRESS_ALLOW_POSTMASTER, &a), 0);
	assert_int_equal(parse("<postmaster>", 0, &a), -1);
	assert_int_equal(parse("<bob>", ADDRESS_ALLOW_POSTMASTER, &a), -1);
}

static void test_bad_syntax(void **state)
{
	struct address a;
	const char *bad[] = {
		"user@example.com", "<user@example.com", "<@example.com>", "<user@>", "<user>",
		"<.user@example.com>", "<user.@example.com>", "<us..er@example.com>",
		"<user@-example.com>", "<user@example-.com>", "<user@example..com>",
		"<user@.example.com>", "<user@example.com.>", "<us er@example.com>",
		"<user@exa mple.com>", "<\"unterminated@example.com>", "<user@[1.2.3]>",
		"<user@[IPv6:zz::1]>", "<user@[]>", "<user@[1.2.3.4>", "<user@ex_ample.com>",
		"<user(comment)@example.com>", "<user@example.com>>", "<>", "",
		"<\"a\\\x01\"@example.com>", "<\"a\x7f\"@example.com>",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = parse(bad[i], 0, &a);
		if (r == 0)
			fail_msg("accepted: %s", bad[i]);
	}
}

static void test_quoted(void **state)
{
	struct address a;
	assert_int_equal(parse("<\"john doe\"@example.com>", 0, &a), 0);
	assert_string_equal(a.local, "john doe");
	assert_true(a.flags & ADDRESS_QUOTED);
	assert_false(a.flags & ADDRESS_QUOTED_AT);
	assert_int_equal(parse("<\"a\\\"b\\\\c\"@example.com>", 0, &a), 0);
	assert_string_equal(a.local, "a\"b\\c");
	assert_int_equal(parse("<\"user@remote.example\"@local.example>", 0, &a), 0);
	assert_true(a.flags & ADDRESS_QUOTED_AT);
	assert_string_equal(a.local, "user@remote.example");
	assert_string_equal(a.domain, "local.example");
	assert_int_equal(parse("<\"\"@example.com>", 0, &a), 0);
	assert_string_equal(a.local, "");

	char buf[ADDRESS_FORMAT_SIZE];
	assert_int_equal(parse("<\"a\\\"b c\"@example.com>", 0, &a), 0);
	assert_string_equal(address_format(&a, buf, sizeof(buf)), "\"a\\\"b c\"@example.com");
	assert_int_equal(parse("<\"plain\"@example.com>", 0, &a), 0);
	assert_string_equal(address_format(&a, buf, sizeof(buf)), "plain@example.com");
}

static void test_tricks(void **state)
{
	struct address a;
	assert_int_equal(parse("<user%remote.example@local.example>", 0, &a), 0);
	assert_true(a.flags & ADDRESS_PERCENT);
	assert_int_equal(parse("<remote.example!user@local.example>", 0, &a), 0);
	assert_true(a.flags & ADDRESS_BANG);
	assert_int_equal(parse("<@relay.example,@b.example:user@remote.example>", 0, &a), 0);
	assert_true(a.flags & ADDRESS_ROUTE);
	assert_false(a.flags & ADDRESS_LITERAL);
	assert_string_equal(a.local, "user");
	assert_string_equal(a.domain, "remote.example");
	assert_int_equal(parse("<@[10.0.0.1]:user@remote.example>", 0, &a), 0);
	assert_true(a.flags & ADDRESS_ROUTE);
	assert_false(a.flags & ADDRESS_LITERAL);
	assert_int_equal(parse("<@relay.example:user@>", 0, &a), -1);
	assert_int_equal(parse("<@relay.example user@remote.example>", 0, &a), -1);
	/* user@local@remote is not a mailbox at all */
	assert_int_equal(parse("<user@local.example@remote.example>", 0, &a), -1);
}

static void test_literals(void **state)
{
	struct address a;
	assert_int_equal(parse("<user@[192.0.2.1]>", 0, &a), 0);
	assert_true(a.flags & ADDRESS_LITERAL);
	assert_string_equal(a.domain, "[192.0.2.1]");
	assert_int_equal(parse("<user@[IPv6:2001:db8::1]>", 0, &a), 0);
	assert_string_equal(a.domain, "[IPv6:2001:db8::1]");
	assert_int_equal(parse("<user@[ipv6:::1]>", 0, &a), 0);
	assert_int_equal(parse("<user@[x-tag:stuff]>", 0, &a), 0);
	assert_int_equal(parse("<user@[256.1.1.1]>", 0, &a), -1);
}

static void test_lengths(void **state)
{
	struct address a;
	char buf[600];
	char local[70];
	memset(local, 'a', 64);
	local[64] = '\0';
	snprintf(buf, sizeof(buf), "<%s@example.com>", local);
	assert_int_equal(parse(buf, 0, &a), 0);
	local[64] = 'a';
	local[65] = '\0';
	snprintf(buf, sizeof(buf), "<%s@example.com>", local);
	assert_int_equal(parse(buf, 0, &a), -1);
	/* quoted local part: the limit counts the quoted form */
	memset(local, 'b', 63);
	local[63] = '\0';
	snprintf(buf, sizeof(buf), "<\"%s\"@example.com>", local);
	assert_int_equal(parse(buf, 0, &a), -1);

	/* domain label 63 ok, 64 not */
	char label[70];
	memset(label, 'c', 63);
	label[63] = '\0';
	snprintf(buf, sizeof(buf), "<u@%s.example>", label);
	assert_int_equal(parse(buf, 0, &a), 0);
	memset(label, 'c', 64);
	label[64] = '\0';
	snprintf(buf, sizeof(buf), "<u@%s.example>", label);
	assert_int_equal(parse(buf, 0, &a), -1);

	/* whole path over 256 octets */
	char dom[300];
	size_t n = 0;
	while (n + 11 < 250) {
		memcpy(dom + n, "abcdefghi.", 10);
		n += 10;
	}
	memcpy(dom + n, "com", 4);
	snprintf(buf, sizeof(buf), "<%s@%s>", "u", dom);
	assert_true(strlen(buf) <= 256);
	assert_int_equal(parse(buf, 0, &a), 0);
	snprintf(buf, sizeof(buf), "<%s@%s>", "uuuuuuuuuuuuuuuuuuuuuuuuuuu", dom);
	assert_true(strlen(buf) > 256);
	assert_int_equal(parse(buf, 0, &a), -1);
}

static void test_utf8(void **state)
{
	struct address a;
	const char *u = "<j\xc3\xb6rg@b\xc3\xbc"
			"cher.example>";
	assert_int_equal(parse(u, 0, &a), -1);
	assert_int_equal(parse(u, ADDRESS_ALLOW_UTF8, &a), 0);
	assert_true(a.flags & ADDRESS_UTF8);
	assert_string_equal(a.local, "j\xc3\xb6rg");
	/* invalid UTF-8: lone continuation, overlong, surrogate, truncated */
	assert_int_equal(parse("<j\x80rg@example.com>", ADDRESS_ALLOW_UTF8, &a), -1);
	assert_int_equal(parse("<j\xc0\xafrg@example.com>", ADDRESS_ALLOW_UTF8, &a), -1);
	assert_int_equal(parse("<j\xed\xa0\x80rg@example.com>", ADDRESS_ALLOW_UTF8, &a), -1);
	assert_int_equal(parse("<j\xe2\x82@example.com>", ADDRESS_ALLOW_UTF8, &a), -1);
	assert_int_equal(parse("<\"\xe2\x82\xac x\"@example.com>", ADDRESS_ALLOW_UTF8, &a), 0);
	assert_true(utf8_valid((const unsigned char *)"\xf0\x9f\x98\x80", 4));
	assert_false(utf8_valid((const unsigned char *)"\xf4\x90\x80\x80", 4));
}

static void test_prefix_consumed(void **state)
{
	struct address a;
	size_t used;
	const char *err;
	const char *s = "<a@b.c> SIZE=10";
	assert_int_equal(address_parse_path(s, strlen(s), 0, &a, &used, &err), 0);
	assert_int_equal(used, 7);
	/* embedded NUL is never part of an address */
	assert_int_equal(address_parse_path("<a\0b@c>", 7, 0, &a, &used, &err), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple),   cmocka_unit_test(test_null_and_postmaster),
		cmocka_unit_test(test_bad_syntax), cmocka_unit_test(test_quoted),
		cmocka_unit_test(test_tricks),   cmocka_unit_test(test_literals),
		cmocka_unit_test(test_lengths),  cmocka_unit_test(test_utf8),
		cmocka_unit_test(test_prefix_consumed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

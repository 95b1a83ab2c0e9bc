/* Modified UTF-7 mailbox names (RFC 3501 5.1.3). */
#include "mail/mutf7.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void roundtrip(const char *utf8, const char *mutf7)
{
	char *e = mutf7_encode(utf8);
	assert_non_null(e);
	assert_string_equal(e, mutf7);
	char *d = mutf7_decode(mutf7);
	assert_non_null(d);
	assert_string_equal(d, utf8);
	free(e);
	free(d);
}

static void test_roundtrip(void **state)
{
	roundtrip("INBOX", "INBOX");
	roundtrip("", "");
	roundtrip("a&b", "a&-b");
	roundtrip("&", "&-");
	/* RFC 3501 5.1.3 example */
	roundtrip("~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
	          "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
	roundtrip("Entw\xc3\xbc"
	          "rfe",
	          "Entw&APw-rfe");
	roundtrip("\xc3\x84rger", "&AMQ-rger");
	/* outside the BMP: a surrogate pair */
	roundtrip("mail \xf0\x9f\x93\xa7", "mail &2D3c5w-");
	/* control characters are encoded */
	roundtrip("a\tb", "a&AAk-b");
}

static void test_invalid(void **state)
{
	assert_null(mutf7_encode("bad \xff"));
	assert_null(mutf7_encode("\xc3"));
	assert_null(mutf7_encode("\xed\xa0\x80")); /* a surrogate in UTF-8 */
	assert_null(mutf7_encode("\xc0\x80"));     /* overlong */
	assert_null(mutf7_decode("&"));
	assert_null(mutf7_decode("&AMQ"));     /* unterminated */
	assert_null(mutf7_decode("&-AMQ-x&")); /* trailing & */
	assert_null(mutf7_decode("&AGE-"));    /* "a" encoded: not canonical */
	assert_null(mutf7_decode("&2D0-"));    /* lone high surrogate */
	assert_null(mutf7_decode("&3OU-"));    /* lone low surrogate */
	assert_null(mutf7_decode("&AM!-"));    /* bad base64 */
	assert_null(mutf7_decode("\xc3\xa4")); /* 8-bit */
	assert_null(mutf7_decode("&AMR-"));    /* non-zero padding bits */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roundtrip),
	    cmocka_unit_test(test_invalid),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

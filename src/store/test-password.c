/*
 * Password hashing and verification against hashes made by real tools.
 * Every hash below is of the password "Correct horse 1" and was generated
 * once on Debian 12:
 *   $y$ $6$ $5$ $2b$  mkpasswd (whois 5.5.17): -m yescrypt|sha512crypt|sha256crypt|bcrypt -R 5
 *   $2a$              mkpasswd -m bcrypt-a -R 5
 *   $2y$              the mkpasswd $2b$ hash with its prefix set to $2y$: PHP's and
 *                     Dovecot's bcrypt tag for the same algorithm (libxcrypt treats
 *                     $2b$ and $2y$ identically)
 *   $argon2id$ $argon2i$  argon2 CLI (0~20171227): argon2 SALT -id|-i -t 2 -m 10 -p 1 -e
 */
#include "store/password.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define PW "Correct horse 1"

static const char *const good[] = {
	"$y$j9T$usbHZZwhzzogXGzFZKsvw/$40EAOmX.j1VXmxoTHELtW9tBW/c6OH6dBdBf1tyEl46",
	"$6$awyb5nHFy48melRt$DdBP12TKHappWz9gOKQLfHHVFm4cAg4bdOuxIBZVFdsbL0UthFNXr2lyxgvMzHHULVNs5P"
	"sbiIVm7LSlKObmN/",
	"$5$vn3xzlwsAH26cGTP$DAkZObePec2uYwDgk0xj0tsdkpWAGTBjkjvzy5lWcN/",
	"$2b$05$RXigWQAO3RKC0FC/muxsO.Uw0HR/GiqGGatVtA.EP7PjKbKZyE5Sq",
	"$2y$05$RXigWQAO3RKC0FC/muxsO.Uw0HR/GiqGGatVtA.EP7PjKbKZyE5Sq",
	"$2a$05$ey8dDiQRjaFiSYEZhn6S3Ou5FIzPi59q6vKtzTo2qK3vfwcgZcVYS",
	"$argon2id$v=19$m=1024,t=2,p=1$c29tZXNhbHRzYWx0$/3Dn/w/aVi1eVotE6v3TnFMun29YaCRGRdc8xFfz0ig",
	"$argon2i$v=19$m=1024,t=2,p=1$c29tZXNhbHRzYWx0Mg$TjtuJzKg6RabWasgrm/LOOPWrPtfOWGIHcl5yxKFf84",
	/* Dovecot {SCHEME} prefixes over the same hashes */
	"{SHA512-CRYPT}$6$awyb5nHFy48melRt$DdBP12TKHappWz9gOKQLfHHVFm4cAg4bdOuxIBZVFdsbL0UthFNXr2lyx"
	"gvMzHHULVNs5PsbiIVm7LSlKObmN/",
	"{SHA256-CRYPT}$5$vn3xzlwsAH26cGTP$DAkZObePec2uYwDgk0xj0tsdkpWAGTBjkjvzy5lWcN/",
	"{BLF-CRYPT}$2y$05$RXigWQAO3RKC0FC/muxsO.Uw0HR/GiqGGatVtA.EP7PjKbKZyE5Sq",
	"{CRYPT}$y$j9T$usbHZZwhzzogXGzFZKsvw/$40EAOmX.j1VXmxoTHELtW9tBW/c6OH6dBdBf1tyEl46",
	"{ARGON2ID}$argon2id$v=19$m=1024,t=2,p=1$c29tZXNhbHRzYWx0$/3Dn/w/aVi1eVotE6v3TnFMun29YaCRGR"
	"dc8xFfz0ig",
	"{ARGON2I}$argon2i$v=19$m=1024,t=2,p=1$c29tZXNhbHRzYWx0Mg$TjtuJzKg6RabWasgrm/LOOPWrPtfOWGIHc"
	"l5yxKFf84",
	"{sha512-crypt}$6$awyb5nHFy48melRt$DdBP12TKHappWz9gOKQLfHHVFm4cAg4bdOuxIBZVFdsbL0UthFNXr2lyx"
	"gvMzHHULVNs5PsbiIVm7LSlKObmN/",
};

static void test_known_hashes(void **state)
{
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		if (!password_verify(PW, good[i]))
			fail_msg("hash %zu (%s) should match", i, good[i]);
		if (password_verify("Correct horse 2", good[i]))
			fail_msg("hash %zu (%s) matched a wrong password", i, good[i]);
		if (password_verify("", good[i]))
			fail_msg("hash %zu matched the empty password", i);
	}
}

static void test_hash_roundtrip(void **state)
{
	char *h = password_hash(PW);
	assert_non_null(h);
	assert_true(strncmp(h, "$y$", 3) == 0);
	assert_true(password_verify(PW, h));
	assert_false(password_verify("correct horse 1", h));
	char *h2 = password_hash(PW);
	assert_non_null(h2);
	assert_string_not_equal(h, h2); /* salted */
	free(h);
	free(h2);
}

static void test_rejected(void **state)
{
	/* wrong scheme behind a prefix, weak or unknown schemes, garbage */
	assert_false(password_verify(PW, "{SHA512-CRYPT}$5$vn3xzlwsAH26cGTP$DAkZObePec2uYwDgk0xj0ts"
					 "dkpWAGTBjkjvzy5lWcN/"));
	assert_false(password_verify(PW, "{PLAIN}Correct horse 1"));
	assert_false(password_verify(PW, "Correct horse 1"));
	assert_false(password_verify(PW, "{MD5-CRYPT}$1$abc$def"));
	assert_false(password_verify("password", "$1$saltsalt$qjXMvbEw8oaL.CzflDugX/"));
	assert_false(password_verify("x", "aaGbBd3rt6Ga."));
	assert_false(password_verify(PW, ""));
	assert_false(password_verify(PW, NULL));
	assert_false(password_verify(NULL, good[0]));
	assert_false(password_verify(PW, "$y$j9T$usbHZZwhzzogXGzFZKsvw/$40EAOmX.j1VXmxoTHELtW9tBW/"
					 "c6OH6dBdBf1tyEl47"));
	assert_false(password_verify(PW, "$argon2id$v=19$m=1024,t=2,p=1$broken"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_known_hashes),
		cmocka_unit_test(test_hash_roundtrip),
		cmocka_unit_test(test_rejected),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

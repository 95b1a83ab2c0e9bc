/*
 * The header filter of auth_msg (no DNS here): Authentication-Results
 * fields that carry our authserv-id are removed wherever the chunk
 * boundaries fall, everything else passes unchanged, and an oversized
 * header section is refused.
 */
#include "smtp/auth_msg.h"
#include "lib/xalloc.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

struct out {
	char *buf;
	size_t len, cap;
};

static void collect(void *ctx, const char *data, size_t len)
{
	struct out *o = ctx;
	o->buf = xgrow(o->buf, &o->cap, o->len + len + 1, 1);
	memcpy(o->buf + o->len, data, len);
	o->len += len;
	o->buf[o->len] = '\0';
}

/* Run `in` through a filter in chunks of `step` octets (0: all at once). */
static char *filter(const char *in, size_t step, bool *ok_r)
{
	struct auth_params p = {.hostname = "mx.example.test", .data_dir = "/nonexistent",
				.helo = "client.example", .mail_from = "a@example.org"};
	struct out o = {0};
	struct auth_msg *m = auth_msg_new(AUTH_MODE_VERIFY, &p, collect, &o);
	size_t len = strlen(in);
	for (size_t off = 0; off < len;) {
		size_t n = step == 0 || step > len - off ? len - off : step;
		auth_msg_push(m, in + off, n);
		off += n;
	}
	*ok_r = auth_msg_end(m);
	auth_msg_free(&m);
	if (o.buf == NULL)
		o.buf = xstrdup("");
	return o.buf;
}

static void check_all_steps(const char *in, const char *want)
{
	static const size_t steps[] = {0, 1, 2, 3, 7, 64};
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		bool ok;
		char *got = filter(in, steps[i], &ok);
		assert_true(ok);
		if (strcmp(got, want) != 0)
			fail_msg("step %zu:\n got: %s\nwant: %s", steps[i], got, want);
		free(got);
	}
}

static void test_forged_results_removed(void **state)
{
	(void)state;
	check_all_steps("Authentication-Results: mx.example.test; spf=pass\r\n"
			"From: a@example.org\r\n"
			"authentication-results:   (a comment (nested)) MX.Example.Test;\r\n"
			"\tdkim=pass header.d=example.org\r\n"
			"Authentication-Results: \"mx.example.test\"; dmarc=pass\r\n"
			"Authentication-Results: other.example; spf=pass\r\n"
			"Authentication-Results: mx.example.test.evil; spf=pass\r\n"
			"Subject: Authentication-Results: mx.example.test; x\r\n"
			"\r\n"
			"Authentication-Results: mx.example.test; in the body stays\r\n",
			"From: a@example.org\r\n"
			"Authentication-Results: other.example; spf=pass\r\n"
			"Authentication-Results: mx.example.test.evil; spf=pass\r\n"
			"Subject: Authentication-Results: mx.example.test; x\r\n"
			"\r\n"
			"Authentication-Results: mx.example.test; in the body stays\r\n");
}

static void test_line_ends_and_shapes(void **state)
{
	(void)state;
	/* bare LF line ends (BDAT may carry them) */
	check_all_steps("Authentication-Results: mx.example.test; spf=pass\nFrom: x@y\n\nbody\n",
			"From: x@y\n\nbody\n");
	/* no body, no empty line: flushed at the end */
	check_all_steps("From: x@y\r\nAuthentication-Results: mx.example.test; none\r\n",
			"From: x@y\r\n");
	/* no header at all */
	check_all_steps("\r\njust a body\r\n", "\r\njust a body\r\n");
	check_all_steps("", "");
}

static void test_header_too_large(void **state)
{
	(void)state;
	size_t n = AUTH_MAX_HEADER + 1000;
	char *big = xmalloc(n + 1);
	memset(big, 'a', n);
	memcpy(big, "X-Long: ", 8);
	big[n] = '\0';
	bool ok;
	char *got = filter(big, 4096, &ok);
	assert_false(ok);
	free(got);
	free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_forged_results_removed),
	    cmocka_unit_test(test_line_ends_and_shapes),
	    cmocka_unit_test(test_header_too_large),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Line reader: whole input, byte by byte, too-long lines, bare LF, NULs. */
#include "lib/linereader.h"

#include <event2/buffer.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

struct result {
	int status;
	char line[64];
	unsigned flags;
};

/* Feed `input` in chunks of `step` bytes; collect every non-MORE result. */
static size_t run(const char *input, size_t len, size_t step, size_t max, struct result *out,
		  size_t maxout)
{
	struct evbuffer *in = evbuffer_new();
	struct line_reader lr;
	line_reader_init(&lr, max);
	char buf[64];
	size_t n = 0;
	for (size_t off = 0; off < len; off += step) {
		size_t chunk = len - off < step ? len - off : step;
		evbuffer_add(in, input + off, chunk);
		for (;;) {
			size_t l;
			unsigned flags = 0;
			enum line_status st = line_reader_read(&lr, in, buf, &l, &flags);
			if (st == LINE_MORE)
				break;
			assert_true(n < maxout);
			out[n].status = st;
			out[n].flags = flags;
			if (st == LINE_OK)
				memcpy(out[n].line, buf, l + 1);
			n++;
		}
	}
	evbuffer_free(in);
	return n;
}

static void test_lines(void **state)
{
	static const char input[] = "HELO a\r\nMAIL FROM:<x>\nNOOP\r\n";
	for (size_t step = 1; step <= sizeof(input); step++) {
		struct result r[8];
		size_t n = run(input, sizeof(input) - 1, step, 32, r, 8);
		assert_int_equal(n, 3);
		assert_int_equal(r[0].status, LINE_OK);
		assert_string_equal(r[0].line, "HELO a");
		assert_int_equal(r[0].flags, 0);
		assert_string_equal(r[1].line, "MAIL FROM:<x>");
		assert_int_equal(r[1].flags, LINE_BARE_LF);
		assert_string_equal(r[2].line, "NOOP");
	}
}

static void test_too_long(void **state)
{
	char input[200];
	memset(input, 'x', 100);
	memcpy(input + 100, "\r\nQUIT\r\n", 8);
	for (size_t step = 1; step <= 108; step++) {
		struct result r[8];
		size_t n = run(input, 108, step, 16, r, 8);
		/* exactly one TOO_LONG, then QUIT intact */
		assert_int_equal(n, 2);
		assert_int_equal(r[0].status, LINE_TOO_LONG);
		assert_int_equal(r[1].status, LINE_OK);
		assert_string_equal(r[1].line, "QUIT");
	}
}

static void test_exact_limit(void **state)
{
	/* max=4: "ABCD\r\n" fits, "ABCDE\r\n" does not */
	struct result r[4];
	size_t n = run("ABCD\r\nABCDE\r\nAB\r\n", 17, 1, 4, r, 4);
	assert_int_equal(n, 3);
	assert_int_equal(r[0].status, LINE_OK);
	assert_string_equal(r[0].line, "ABCD");
	assert_int_equal(r[1].status, LINE_TOO_LONG);
	assert_int_equal(r[2].status, LINE_OK);
	assert_string_equal(r[2].line, "AB");
}

static void test_nul(void **state)
{
	struct result r[2];
	size_t n = run("A\0B\r\n", 5, 5, 16, r, 2);
	assert_int_equal(n, 1);
	assert_int_equal(r[0].flags & LINE_HAS_NUL, LINE_HAS_NUL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lines),
		cmocka_unit_test(test_too_long),
		cmocka_unit_test(test_exact_limit),
		cmocka_unit_test(test_nul),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

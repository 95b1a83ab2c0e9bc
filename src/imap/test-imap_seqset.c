/*
 * Unit tests for IMAP sequence sets: parsing with "*" resolution, merging,
 * limits, membership, iteration, filtering and formatting.
 */
#include "imap/imap_seqset.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static char *roundtrip(const char *s, uint32_t max)
{
	struct imap_seqset set;
	const char *error;
	if (imap_seqset_parse(s, max, &set, &error) < 0)
		return strdup(error);
	char *out = imap_seqset_string(&set);
	imap_seqset_free(&set);
	return out;
}

#define RT(s, max, expect)                                                                         \
	do {                                                                                       \
		char *o = roundtrip(s, max);                                                       \
		assert_string_equal(o, expect);                                                    \
		free(o);                                                                           \
	} while (0)

static void test_parse(void **state)
{
	RT("1", 10, "1");
	RT("1:5,7,9:*", 20, "1:5,7,9:20");
	RT("5:1", 20, "1:5");
	RT("3,1,2", 20, "1:3");
	RT("1:3,2:8,10,11,12", 20, "1:8,10:12");
	RT("*", 7, "7");
	RT("*:4", 7, "4:7");
	/* RFC 9051 6.4.8: n:* with n > max includes max */
	RT("100:*", 7, "7:100");
	RT("4294967295", 7, "4294967295");
	RT("1:4294967295,5", 7, "1:4294967295");
	/* an empty mailbox: '*' is 0 */
	RT("1:*", 0, "0:1");
	RT("0", 10, "Invalid sequence set");
	RT("", 10, "Invalid sequence set");
	RT("1,", 10, "Invalid sequence set");
	RT(",1", 10, "Invalid sequence set");
	RT("1::2", 10, "Invalid sequence set");
	RT("1:", 10, "Invalid sequence set");
	RT("01", 10, "Invalid sequence set");
	RT("4294967296", 10, "Invalid sequence set");
	RT("1 2", 10, "Invalid sequence set");
	RT("-1", 10, "Invalid sequence set");
	RT("1:2:3", 10, "Invalid sequence set");

	struct imap_seqset set;
	const char *error;
	assert_int_equal(imap_seqset_parse("$", 10, &set, &error), 0);
	assert_true(set.saved);
	assert_int_equal(set.n, 0);
	imap_seqset_free(&set);
	assert_true(imap_seqset_syntax("$"));
	assert_true(imap_seqset_syntax("1:*"));
	assert_false(imap_seqset_syntax("ALL"));
	assert_false(imap_seqset_syntax("1,$"));
}

static void test_limits(void **state)
{
	size_t n = IMAP_SEQSET_MAX_RANGES + 1;
	char *s = malloc(n * 12 + 1);
	size_t len = 0;
	for (size_t i = 0; i < n; i++)
		len += (size_t)sprintf(s + len, "%s%zu", i ? "," : "", 2 * i + 1);
	struct imap_seqset set;
	const char *error;
	assert_int_equal(imap_seqset_parse(s, 100, &set, &error), -1);
	assert_string_equal(error, "Too many ranges in sequence set");
	/* one range fewer is fine */
	*strrchr(s, ',') = '\0';
	assert_int_equal(imap_seqset_parse(s, 100, &set, &error), 0);
	assert_int_equal(set.n, IMAP_SEQSET_MAX_RANGES);
	assert_int_equal(imap_seqset_count(&set), IMAP_SEQSET_MAX_RANGES);
	imap_seqset_free(&set);
	free(s);
}

static void test_membership(void **state)
{
	struct imap_seqset set;
	const char *error;
	assert_int_equal(imap_seqset_parse("2:4,8,10:*,4294967295", 12, &set, &error), 0);
	assert_int_equal(set.n, 4);
	bool expect[14] = {[2] = 1, [3] = 1, [4] = 1, [8] = 1, [10] = 1, [11] = 1, [12] = 1};
	for (uint32_t i = 0; i < 14; i++)
		assert_int_equal(imap_seqset_contains(&set, i), expect[i]);
	assert_true(imap_seqset_contains(&set, UINT32_MAX));
	assert_int_equal(imap_seqset_count(&set), 8);
	assert_int_equal(imap_seqset_last(&set), UINT32_MAX);

	uint64_t it = 0;
	uint32_t v, got[10];
	size_t k = 0;
	while (imap_seqset_next(&set, &it, &v) && k < 10)
		got[k++] = v;
	assert_int_equal(k, 8);
	uint32_t want[] = {2, 3, 4, 8, 10, 11, 12, UINT32_MAX};
	assert_memory_equal(got, want, sizeof(want));

	uint32_t uids[] = {1, 3, 4, 5, 9, 10, 12, 13, 100};
	uint32_t out[9];
	size_t m = imap_seqset_filter(&set, uids, 9, false, out);
	uint32_t fw[] = {3, 4, 10, 12};
	assert_int_equal(m, 4);
	assert_memory_equal(out, fw, sizeof(fw));
	m = imap_seqset_filter(&set, uids, 9, true, out);
	uint32_t fi[] = {1, 2, 5, 6};
	assert_int_equal(m, 4);
	assert_memory_equal(out, fi, sizeof(fi));
	imap_seqset_free(&set);

	/* an empty set */
	memset(&set, 0, sizeof(set));
	assert_false(imap_seqset_contains(&set, 1));
	it = 0;
	assert_false(imap_seqset_next(&set, &it, &v));
	assert_int_equal(imap_seqset_filter(&set, uids, 9, false, out), 0);
	imap_seqset_add(&set, 9, 5);
	imap_seqset_add(&set, 10, 10);
	imap_seqset_add(&set, 1, 1);
	imap_seqset_add(&set, UINT32_MAX, UINT32_MAX);
	imap_seqset_add(&set, UINT32_MAX - 1, UINT32_MAX);
	char *s = imap_seqset_string(&set);
	assert_string_equal(s, "1,5:10,4294967294:4294967295");
	free(s);
	imap_seqset_free(&set);
}

static void test_format(void **state)
{
	uint32_t a[] = {1, 2, 3, 5, 9, 8, 10, 11, UINT32_MAX};
	char *s = imap_seqset_format(a, 9);
	assert_string_equal(s, "1:3,5,9,8,10:11,4294967295");
	free(s);
	s = imap_seqset_format(a, 0);
	assert_string_equal(s, "");
	free(s);
	uint32_t b[] = {7};
	s = imap_seqset_format(b, 1);
	assert_string_equal(s, "7");
	free(s);
	uint32_t c[] = {UINT32_MAX, 1};
	s = imap_seqset_format(c, 2);
	assert_string_equal(s, "4294967295,1");
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_membership),
		cmocka_unit_test(test_format),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Unit tests for SORT and THREAD (RFC 5256): base subject extraction rule by
 * rule, sort criteria, ORDEREDSUBJECT and REFERENCES threads in the wire
 * format, including the structures of the RFC's examples, dummies, loops,
 * duplicate Message-IDs and a reply chain 100,000 deep.
 */
#include "imap/imap_sort.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void check_base(const char *in, const char *expect, bool expect_reply)
{
	bool reply = !expect_reply;
	char *b = imap_base_subject(in, &reply);
	if (strcmp(b, expect) != 0 || reply != expect_reply)
		fail_msg("'%s' -> '%s' (%d), expected '%s' (%d)", in, b, reply, expect, expect_reply);
	free(b);
}

static void test_base_subject(void **state)
{
	check_base("Hello", "Hello", false);
	check_base("", "", false);
	check_base(NULL, "", false);
	/* (1) whitespace */
	check_base("  Hello \t  World\r\n ", "Hello World", false);
	/* (2) trailers */
	check_base("Hello (fwd)", "Hello", true);
	check_base("Hello (FWD) (fwd)  ", "Hello", true);
	check_base("Hello(fwd)", "Hello", true);
	check_base("Hello (fwd) x", "Hello (fwd) x", false);
	/* (3) leaders */
	check_base("Re: Hello", "Hello", true);
	check_base("RE: re: Re:Hello", "Hello", true);
	check_base("Fwd: Hello", "Hello", true);
	check_base("FW: Hello", "Hello", true);
	check_base("fw : Hello", "Hello", true);
	check_base("Re[2]: Hello", "Hello", true);
	check_base("Re [2] : Hello", "Hello", true);
	check_base("[list] Re: Hello", "Hello", true);
	check_base("[a][b] Re: [c] Fwd: Hello", "Hello", true);
	check_base("Reply to this", "Reply to this", false);
	check_base("Re Hello", "Re Hello", false);
	check_base("Ref: Hello", "Ref: Hello", false);
	check_base("Aw: Hello", "Aw: Hello", false); /* only re/fw/fwd are in the RFC */
	/* (4) a blob that leaves a non-empty subject */
	check_base("[list] Hello", "Hello", false);
	check_base("[list]", "[list]", false);
	check_base("[a] [b]", "[b]", false);
	check_base("[list]   ", "[list]", false);
	check_base("[a[b] x", "[a[b] x", false);
	/* (5) repeated */
	check_base("[list] [other] Re: [list] Hello", "Hello", true);
	/* (6) [fwd: ...] and back to (2) */
	check_base("[Fwd: Re: Hello (fwd)]", "Hello", true);
	check_base("[fwd: [fwd: x]]", "x", true);
	check_base("[fwd: x", "[fwd: x", false); /* no "]": neither subj-fwd nor a blob */
	check_base("Re: [fwd: hi] ", "hi", true);
	/* UTF-8 is left as is */
	check_base("Re: \xc3\x84rger", "\xc3\x84rger", true);
}

static struct imap_sort_msg M(uint32_t n, int64_t date, const char *subject)
{
	struct imap_sort_msg m = {0};
	m.msn = n;
	m.uid = n * 10;
	m.date = date;
	m.arrival = 1000 - n;
	m.size = n * 7 % 5;
	m.subject = subject;
	return m;
}

static char *order(struct imap_sort_msg *m, size_t n)
{
	static char out[256];
	out[0] = '\0';
	for (size_t i = 0; i < n; i++)
		sprintf(out + strlen(out), "%s%u", i ? " " : "", m[i].msn);
	return out;
}

static void sort_by(const char *crit, struct imap_sort_msg *m, size_t n)
{
	char text[256];
	snprintf(text, sizeof(text), "a SORT %s UTF-8 ALL", crit);
	struct imap_command cmd;
	const char *error;
	assert_int_equal(imap_parse_command(text, strlen(text), &cmd, &error), 0);
	struct imap_sort_program prog;
	if (imap_sort_parse(&cmd.args[0], &prog, &error) < 0)
		fail_msg("%s: %s", crit, error);
	imap_sort(&prog, m, n);
	imap_command_clear(&cmd);
}

static void test_sort(void **state)
{
	struct imap_sort_msg base[5];
	base[0] = M(1, 500, "Re: beta");
	base[1] = M(2, 0, "alpha");     /* no Date: arrival 998 */
	base[2] = M(3, 300, "[x] Beta");
	base[3] = M(4, 300, "\xc3\x84pfel");
	base[4] = M(5, 100, "ALPHA (fwd)");
	base[0].from = "zed";
	base[1].from = "Adam";
	base[2].from = "bob";
	base[3].from = NULL;
	base[4].from = "adam";
	base[0].display_from = "Zed Z";
	base[1].display_from = "alice";
	base[2].display_from = "Bob";
	base[3].display_from = "";
	base[4].display_from = "Carl";
	struct imap_sort_msg m[5];

	memcpy(m, base, sizeof(m));
	sort_by("(ARRIVAL)", m, 5);
	assert_string_equal(order(m, 5), "5 4 3 2 1");
	memcpy(m, base, sizeof(m));
	sort_by("(DATE)", m, 5);
	assert_string_equal(order(m, 5), "5 3 4 1 2");
	memcpy(m, base, sizeof(m));
	sort_by("(REVERSE DATE)", m, 5);
	assert_string_equal(order(m, 5), "2 1 3 4 5"); /* ties stay in UID order */
	memcpy(m, base, sizeof(m));
	sort_by("(SUBJECT)", m, 5);
	/* U+00C4 folds to "a" U+0308: after "alpha", before "beta" */
	assert_string_equal(order(m, 5), "2 5 4 1 3");
	memcpy(m, base, sizeof(m));
	sort_by("(SUBJECT REVERSE DATE)", m, 5);
	assert_string_equal(order(m, 5), "2 5 4 1 3");
	memcpy(m, base, sizeof(m));
	sort_by("(SUBJECT DATE)", m, 5);
	assert_string_equal(order(m, 5), "5 2 4 3 1");
	memcpy(m, base, sizeof(m));
	sort_by("(FROM)", m, 5);
	assert_string_equal(order(m, 5), "4 2 5 3 1");
	memcpy(m, base, sizeof(m));
	sort_by("(DISPLAYFROM)", m, 5);
	assert_string_equal(order(m, 5), "4 2 3 5 1");
	memcpy(m, base, sizeof(m));
	sort_by("(SIZE ARRIVAL)", m, 5);
	/* sizes: 2 4 1 3 0 */
	assert_string_equal(order(m, 5), "5 3 1 4 2");
	memcpy(m, base, sizeof(m));
	sort_by("(TO CC DISPLAYTO)", m, 5); /* all empty: UID order */
	assert_string_equal(order(m, 5), "1 2 3 4 5");

	struct imap_sort_program prog;
	const char *error;
	struct imap_arg bad[3] = {{.type = IMAP_ARG_ATOM, .str = "REVERSE", .len = 7},
				  {.type = IMAP_ARG_ATOM, .str = "FOO", .len = 3},
				  {.type = IMAP_ARG_ATOM, .str = "REVERSE", .len = 7}};
	struct imap_arg list = {.type = IMAP_ARG_LIST, .list = bad, .nlist = 1};
	assert_int_equal(imap_sort_parse(&list, &prog, &error), -1); /* REVERSE alone */
	list.list = bad + 1;
	assert_int_equal(imap_sort_parse(&list, &prog, &error), -1);
	list.list = bad;
	list.nlist = 0;
	assert_int_equal(imap_sort_parse(&list, &prog, &error), -1);
	assert_int_equal(imap_sort_parse(&bad[0], &prog, &error), -1); /* not a list */
}

/*
 * The radix sort of numeric-only criteria against the comparison sort: the
 * same criteria plus an empty string key (which takes the comparison path)
 * must give the same order, also with dates that tie, are negative or 0,
 * and with messages not in UID order.
 */
static void test_sort_numeric_same(void **state)
{
	enum { N = 3000 };
	static const char *const crits[][2] = {
	    {"(DATE)", "(DATE TO)"},
	    {"(REVERSE DATE)", "(REVERSE DATE TO)"},
	    {"(REVERSE ARRIVAL)", "(REVERSE ARRIVAL CC)"},
	    {"(SIZE REVERSE DATE)", "(SIZE REVERSE DATE TO)"},
	    {"(REVERSE SIZE ARRIVAL DATE)", "(REVERSE SIZE ARRIVAL DATE CC)"},
	};
	struct imap_sort_msg *base = calloc(N, sizeof(*base)), *a = calloc(N, sizeof(*a)),
			     *b = calloc(N, sizeof(*b));
	uint32_t seed = 12345;
	for (int shuffled = 0; shuffled < 2; shuffled++) {
		for (uint32_t i = 0; i < N; i++) {
			seed = seed * 1103515245 + 12345;
			base[i].msn = i + 1;
			base[i].uid = shuffled ? (i * 7919) % N + 1 : i * 3 + 1;
			int64_t r = (int64_t)(seed >> 8) % 50;
			base[i].date = r == 0 ? 0 : r == 1 ? -86400 * (int64_t)(seed % 9) : 1600000000 + r * 100000;
			base[i].arrival = 1500000000 + (int64_t)(seed % 13) * 977;
			base[i].size = seed % 7 == 0 ? UINT64_MAX : seed % 41;
		}
		for (size_t c = 0; c < sizeof(crits) / sizeof(crits[0]); c++) {
			memcpy(a, base, N * sizeof(*a));
			memcpy(b, base, N * sizeof(*b));
			sort_by(crits[c][0], a, N);
			sort_by(crits[c][1], b, N);
			for (size_t i = 0; i < N; i++)
				if (a[i].msn != b[i].msn)
					fail_msg("%s (shuffled %d): position %zu: %u, not %u", crits[c][0],
						 shuffled, i, a[i].msn, b[i].msn);
		}
	}
	free(base);
	free(a);
	free(b);
}

/* ---- THREAD ---- */

struct tmsg {
	uint32_t n;
	int64_t date;
	const char *subject, *id, *irt, *refs;
};

static char *thread(enum imap_thread_alg alg, const struct tmsg *t, size_t n)
{
	struct imap_sort_msg *m = calloc(n, sizeof(*m));
	for (size_t i = 0; i < n; i++) {
		m[i].msn = t[i].n;
		m[i].uid = t[i].n + 1000;
		m[i].date = t[i].date;
		m[i].arrival = 1;
		m[i].subject = t[i].subject;
		m[i].message_id = t[i].id;
		m[i].in_reply_to = t[i].irt;
		m[i].references = t[i].refs;
	}
	char *s = imap_thread(alg, m, n, false);
	free(m);
	return s;
}

#define THREAD_IS(alg, t, expect)                                                                  \
	do {                                                                                       \
		char *s_ = thread(alg, t, sizeof(t) / sizeof((t)[0]));                             \
		assert_string_equal(s_, expect);                                                   \
		free(s_);                                                                          \
	} while (0)

static void test_orderedsubject(void **state)
{
	/* the shapes of RFC 5256's ORDEREDSUBJECT example: (166)(174 (175)(176))(200 202) */
	static const struct tmsg t[] = {
		{166, 10, "one", NULL, NULL, NULL},     {174, 20, "two", NULL, NULL, NULL},
		{175, 30, "Re: two", NULL, NULL, NULL}, {176, 40, "RE: [x] two", NULL, NULL, NULL},
		{200, 50, "three", NULL, NULL, NULL},   {202, 60, "three (fwd)", NULL, NULL, NULL},
	};
	THREAD_IS(IMAP_THREAD_ORDEREDSUBJECT, t, "(166)(174 (175)(176))(200 202)");
	/* threads by the date of their first message; within by date; ties by number */
	static const struct tmsg u[] = {
		{1, 50, "b", NULL, NULL, NULL}, {2, 10, "a", NULL, NULL, NULL},
		{3, 5, "Re: b", NULL, NULL, NULL}, {4, 10, "Re: A", NULL, NULL, NULL},
		{5, 0, "c", NULL, NULL, NULL},
	};
	/* message 5 has no Date: its arrival (1) is used */
	THREAD_IS(IMAP_THREAD_ORDEREDSUBJECT, u, "(5)(3 1)(2 4)");
	char *s = imap_thread(IMAP_THREAD_ORDEREDSUBJECT, NULL, 0, false);
	assert_string_equal(s, "");
	free(s);
}

static void test_references(void **state)
{
	/* RFC 5256 4: "(3 6 (4 23)(44 7 96))" */
	static const struct tmsg a[] = {
		{3, 1, "s", "<3@x>", NULL, NULL},
		{4, 3, "Re: s", "<4@x>", NULL, "<3@x> <6@x>"},
		{6, 2, "Re: s", "<6@x>", "<3@x>", NULL},
		{7, 6, "Re: s", "<7@x>", NULL, "<3@x> <6@x> <44@x>"},
		{23, 4, "Re: s", "<23@x>", NULL, "<3@x> <6@x> <4@x>"},
		{44, 5, "Re: s", "<44@x>", NULL, "<3@x>\r\n <6@x>"},
		{96, 7, "Re: s", "<96@x>", "<7@x>", NULL},
	};
	THREAD_IS(IMAP_THREAD_REFERENCES, a, "(3 6 (4 23)(44 7 96))");

	/* a missing parent with two replies: a dummy root "((3)(5))"; the dummy sorts
	   by its first child; an unrelated message keeps its own thread */
	static const struct tmsg b[] = {
		{1, 50, "other", "<1@x>", NULL, NULL},
		{3, 10, "Re: lost", "<3@x>", NULL, "<gone@x>"},
		{5, 20, "Re: lost", "<5@x>", "<gone@x>", NULL},
	};
	THREAD_IS(IMAP_THREAD_REFERENCES, b, "((3)(5))(1)");

	/* a dummy with one child is replaced by the child */
	static const struct tmsg c[] = {
		{1, 10, "Re: lost", "<1@x>", NULL, "<gone@x>"},
		{2, 5, "hello", "<2@x>", NULL, NULL},
	};
	THREAD_IS(IMAP_THREAD_REFERENCES, c, "(2)(1)");

	/* subject merging: a reply without references joins the original;
	   two originals with the same subject get a dummy parent */
	static const struct tmsg d[] = {
		{1, 10, "meeting", "<1@x>", NULL, NULL},
		{2, 20, "Re: meeting", "<2@x>", NULL, NULL},
		{3, 30, "lunch", "<3@x>", NULL, NULL},
		{4, 40, "Lunch", "<4@x>", NULL, NULL},
		{5, 50, "", "<5@x>", NULL, NULL},
		{6, 60, "", "<6@x>", NULL, NULL},
	};
	THREAD_IS(IMAP_THREAD_REFERENCES, d, "(1 2)((3)(4))(5)(6)");

	/* loops and self references are ignored; duplicate and missing ids are distinct */
	static const struct tmsg e[] = {
		{1, 10, "a", "<a@x>", NULL, "<b@x>"},
		{2, 20, "b", "<b@x>", NULL, "<a@x>"},
		{3, 30, "c", "<c@x>", NULL, "<c@x>"},
		{4, 40, "d", "<c@x>", NULL, NULL},
		{5, 50, "e", NULL, NULL, "<c@x>"},
		{6, 60, "f", "garbage", "<>", "< >"},
	};
	THREAD_IS(IMAP_THREAD_REFERENCES, e, "(2 1)(3 5)(4)(6)");

	/* a later message's own References win over an earlier guess */
	static const struct tmsg f2[] = {
		{1, 10, "x", "<p@x>", NULL, NULL},
		{2, 20, "y", "<q@x>", NULL, NULL},
		{3, 30, "z", "<r@x>", NULL, "<p@x> <q@x>"},
		{4, 40, "w", "<s@x>", NULL, "<p@x> <r@x>"},
	};
	/* 3: p -> q -> r; 4's refs "p r" keep q under p and r under q (existing links stay) */
	THREAD_IS(IMAP_THREAD_REFERENCES, f2, "(1 2 3 4)");

	/* a reply stored before its original; a grandchild known only by In-Reply-To */
	static const struct tmsg g[] = {
		{1, 20, "Re: plan", "<r1@x>", "<orig@x>", NULL},
		{2, 10, "plan", "<orig@x>", NULL, NULL},
		{3, 30, "Re: plan", "<r2@x>", "<r1@x> (comment)", NULL},
		{4, 25, "Re: plan", "<r3@x>", NULL, "<orig@x>"},
	};
	THREAD_IS(IMAP_THREAD_REFERENCES, g, "(2 (1 3)(4))");
	THREAD_IS(IMAP_THREAD_ORDEREDSUBJECT, g, "(2 (1)(4)(3))");

	/* by UID */
	struct imap_sort_msg m[2] = {{.msn = 1, .uid = 7, .message_id = "<a@b>"},
				     {.msn = 2, .uid = 9, .references = "<a@b>"}};
	char *s = imap_thread(IMAP_THREAD_REFERENCES, m, 2, true);
	assert_string_equal(s, "(7 9)");
	free(s);

	/* filled from the store's records */
	struct mbox_msg rec = {.uid = 42, .size = 99, .internaldate = 1234};
	struct mbox_cache cache = {.subject = "Re: s", .sort_from = "f", .sort_to = "t", .sort_cc = "c",
			       .display_from = "F", .display_to = "T", .message_id = "<i@x>",
			       .in_reply_to = "<p@x>", .references = "<r@x>", .date = 77};
	struct imap_sort_msg fm;
	imap_sort_msg_fill(&fm, 3, &rec, &cache);
	assert_int_equal(fm.msn, 3);
	assert_int_equal(fm.uid, 42);
	assert_int_equal(fm.size, 99);
	assert_int_equal(fm.arrival, 1234);
	assert_int_equal(fm.date, 77);
	assert_string_equal(fm.from, "f");
	assert_string_equal(fm.display_to, "T");
	assert_string_equal(fm.references, "<r@x>");
	imap_sort_msg_fill(&fm, 3, &rec, NULL);
	assert_null(fm.subject);

	enum imap_thread_alg alg;
	assert_int_equal(imap_thread_alg_parse("references", &alg), 0);
	assert_int_equal(alg, IMAP_THREAD_REFERENCES);
	assert_int_equal(imap_thread_alg_parse("OrderedSubject", &alg), 0);
	assert_int_equal(alg, IMAP_THREAD_ORDEREDSUBJECT);
	assert_int_equal(imap_thread_alg_parse("X", &alg), -1);
}

static void test_deep_chain(void **state)
{
	/* each message replies to the previous: 100,000 deep, no recursion */
	size_t n = 100000;
	struct imap_sort_msg *m = calloc(n, sizeof(*m));
	char (*ids)[32] = calloc(n, 32);
	for (size_t i = 0; i < n; i++) {
		snprintf(ids[i], 32, "<%zu@x>", i);
		m[i].msn = (uint32_t)i + 1;
		m[i].uid = (uint32_t)i + 1;
		m[i].date = (int64_t)i + 1;
		m[i].subject = "deep";
		m[i].message_id = ids[i];
		m[i].in_reply_to = i > 0 ? ids[i - 1] : NULL;
	}
	char *s = imap_thread(IMAP_THREAD_REFERENCES, m, n, false);
	/* the chain is cut every IMAP_THREAD_MAX_DEPTH levels; cuts join by subject */
	assert_true(strlen(s) > n);
	/* the pieces share the subject "deep", so a dummy holds them together */
	assert_true(strncmp(s, "((1 2 3 ", 8) == 0);
	assert_non_null(strstr(s, " 4097)(4098 4099 "));
	free(s);
	s = imap_thread(IMAP_THREAD_ORDEREDSUBJECT, m, n, false);
	assert_true(strncmp(s, "(1 (2)(3)", 9) == 0);
	free(s);
	free(ids);
	free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_base_subject), cmocka_unit_test(test_sort),
		cmocka_unit_test(test_sort_numeric_same),
		cmocka_unit_test(test_orderedsubject), cmocka_unit_test(test_references),
		cmocka_unit_test(test_deep_chain),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Unit tests for IMAP SEARCH: i;unicode-casemap folding, program parsing
 * (every key, RETURN, CHARSET, limits, errors) and evaluation on messages
 * built here (flags, dates, sizes, cached headers, MIME bodies in
 * quoted-printable and base64 with charsets).
 */
#include "imap/imap_parser.h"
#include "imap/imap_search.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void test_casemap(void **state)
{
	struct {
		const char *hay, *needle;
		bool found;
	} cases[] = {
		{"Hello World", "WORLD", true},
		{"Stra\xc3\x9f" "e 1", "STRASSE", true},
		{"Caf\xc3\xa9 au lait", "cafe", true},
		{"Caf\xc3\xa9", "CAF\xc3\x89", true},
		{"CAFE", "caf\xc3\xa9", false},
		{"\xce\xa3\xce\x9f\xce\xa6\xce\x8a\xce\x91", "\xcf\x83\xce\xbf\xcf\x86\xce\xaf\xce\xb1", true},
		{"\xcf\x82", "\xce\xa3", true}, /* final sigma */
		{"\xd0\x9f\xd0\xa0\xd0\x98\xd0\x92\xd0\x95\xd0\xa2", "\xd0\xbf\xd1\x80\xd0\xb8", true},
		{"\xef\xbc\xa1\xef\xbc\xa2", "ab", true}, /* fullwidth */
		{"\xef\xac\x81le", "FILE", true},       /* ligature fi */
		{"\xff\xfe bad utf8", "BAD", true},
		{"abc", "", true},
		{"", "a", false},
		{"\xe6\x97\xa5\xe6\x9c\xac", "\xe6\x9c\xac", true},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *n = imap_casemap(cases[i].needle, strlen(cases[i].needle));
		bool f = imap_casemap_contains(cases[i].hay, strlen(cases[i].hay), n);
		if (f != cases[i].found)
			fail_msg("case %zu: '%s' in '%s'", i, cases[i].needle, cases[i].hay);
		free(n);
	}
}

/* ---- parsing ---- */

struct parsed {
	struct imap_command cmd;
	struct imap_search *s;
	struct imap_search_options opts;
};

static int parse(const char *args, struct parsed *p, const char **error_r,
		 enum imap_search_error *code_r)
{
	char text[4096];
	snprintf(text, sizeof(text), "a SEARCH %s", args);
	const char *error;
	if (imap_parse_command(text, strlen(text), &p->cmd, &error) < 0)
		fail_msg("command '%s': %s", text, error);
	int r = imap_search_parse(p->cmd.args, p->cmd.nargs, &p->s, &p->opts, error_r, code_r);
	return r;
}

static void done(struct parsed *p)
{
	imap_search_free(&p->s);
	imap_command_clear(&p->cmd);
}

static void parse_ok(const char *args)
{
	struct parsed p;
	const char *error = NULL;
	enum imap_search_error code;
	if (parse(args, &p, &error, &code) < 0)
		fail_msg("'%s': %s", args, error);
	done(&p);
}

static const char *parse_err(const char *args, enum imap_search_error *code_r)
{
	struct parsed p;
	const char *error = NULL;
	enum imap_search_error code;
	if (parse(args, &p, &error, &code) == 0)
		fail_msg("'%s' parsed", args);
	assert_null(p.s);
	if (code_r != NULL)
		*code_r = code;
	done(&p);
	return error;
}

static void test_parse(void **state)
{
	parse_ok("ALL");
	parse_ok("1:3,5 UID 4:* $ UID $");
	parse_ok("ANSWERED DELETED DRAFT FLAGGED SEEN RECENT NEW OLD UNANSWERED UNDELETED UNDRAFT "
		 "UNFLAGGED UNSEEN");
	parse_ok("KEYWORD $Junk UNKEYWORD work");
	parse_ok("BCC a CC b FROM \"c d\" TO {1}\r\ne SUBJECT x BODY y TEXT z");
	parse_ok("HEADER X-Spam-Flag YES HEADER Message-ID \"\"");
	parse_ok("BEFORE 1-Feb-2020 ON 29-Feb-2024 SINCE \"01-jan-1999\" SENTBEFORE 1-Jan-2020 "
		 "SENTON 1-Jan-2020 SENTSINCE 1-Jan-2020 SAVEDBEFORE 1-Jan-2020 SAVEDON 1-Jan-2020 "
		 "SAVEDSINCE 1-Jan-2020 SAVEDATESUPPORTED");
	parse_ok("LARGER 100 SMALLER 18446744073709551615 OLDER 60 YOUNGER 1");
	parse_ok("MODSEQ 5 MODSEQ \"/flags/\\\\draft\" all 620162338");
	parse_ok("NOT NOT SEEN OR SEEN (DELETED FLAGGED) (OR 1 2)");
	parse_ok("CHARSET UTF-8 SUBJECT \"\xc3\xa4\"");
	parse_ok("CHARSET us-ascii ALL");

	struct parsed p;
	const char *error;
	enum imap_search_error code;
	assert_int_equal(parse("RETURN (MIN MAX) CHARSET UTF-8 ALL", &p, &error, &code), 0);
	assert_true(p.opts.esearch);
	assert_int_equal(p.opts.ret, IMAP_SEARCH_RET_MIN | IMAP_SEARCH_RET_MAX);
	assert_false(imap_search_has_modseq(p.s));
	done(&p);
	assert_int_equal(parse("RETURN () MODSEQ 1", &p, &error, &code), 0);
	assert_int_equal(p.opts.ret, IMAP_SEARCH_RET_ALL);
	assert_true(imap_search_has_modseq(p.s));
	assert_false(imap_search_uses_saved(p.s));
	done(&p);
	assert_int_equal(parse("RETURN (COUNT ALL SAVE) NOT $", &p, &error, &code), 0);
	assert_int_equal(p.opts.ret,
			 IMAP_SEARCH_RET_COUNT | IMAP_SEARCH_RET_ALL | IMAP_SEARCH_RET_SAVE);
	assert_true(imap_search_uses_saved(p.s));
	done(&p);
	assert_int_equal(parse("SEEN", &p, &error, &code), 0);
	assert_false(p.opts.esearch);
	done(&p);

	assert_string_equal(parse_err("CHARSET ISO-8859-1 ALL", &code), "Unsupported charset");
	assert_int_equal(code, IMAP_SEARCH_ERR_BADCHARSET);
	assert_string_equal(parse_err("FOO", &code), "Unknown search key");
	assert_int_equal(code, IMAP_SEARCH_ERR_SYNTAX);
	assert_string_equal(parse_err("CHARSET", NULL), "Missing charset");
	assert_string_equal(parse_err("CHARSET UTF-8", NULL), "Missing search key");
	assert_string_equal(parse_err("RETURN (FOO) ALL", NULL), "Unknown RETURN option");
	assert_string_equal(parse_err("RETURN ALL", NULL), "Invalid RETURN options");
	assert_string_equal(parse_err("SUBJECT", NULL), "Missing search key argument");
	assert_string_equal(parse_err("SUBJECT (a)", NULL), "Invalid search key argument");
	assert_string_equal(parse_err("OR SEEN", NULL), "Missing search key argument");
	assert_string_equal(parse_err("()", NULL), "Missing search key");
	assert_string_equal(parse_err("\"ALL\"", NULL), "Invalid search key");
	assert_string_equal(parse_err("BEFORE 30-Feb-2020", NULL), "Invalid date");
	assert_string_equal(parse_err("BEFORE 29-Feb-2023", NULL), "Invalid date");
	assert_string_equal(parse_err("BEFORE 1-Foo-2020", NULL), "Invalid date");
	assert_string_equal(parse_err("BEFORE 1-Jan-20", NULL), "Invalid date");
	assert_string_equal(parse_err("BEFORE 001-Jan-2020", NULL), "Invalid date");
	assert_string_equal(parse_err("LARGER x", NULL), "Invalid number");
	assert_string_equal(parse_err("LARGER 18446744073709551616", NULL), "Invalid number");
	assert_string_equal(parse_err("OLDER 0", NULL), "Invalid interval");
	assert_string_equal(parse_err("UID x", NULL), "Invalid UID set");
	assert_string_equal(parse_err("KEYWORD \\Seen", NULL), "Invalid keyword");
	assert_string_equal(parse_err("HEADER \"a b\" x", NULL), "Invalid header field name");
	assert_string_equal(parse_err("MODSEQ \"/flags/x\" foo 1", NULL),
			    "Invalid MODSEQ entry type");
	assert_string_equal(parse_err("MODSEQ 9223372036854775808", NULL), "Invalid mod-sequence");
}

static void test_limits(void **state)
{
	/* NOT NOT NOT ... deeper than the limit */
	char *text = malloc(8 * 100 + 16);
	size_t n = 0;
	for (int i = 0; i < 100; i++)
		n += (size_t)sprintf(text + n, "NOT ");
	strcpy(text + n, "SEEN");
	const char *error;
	assert_string_equal(parse_err(text, NULL), "Search program too deep");
	/* parenthesised, within the parser's depth */
	n = 0;
	for (int i = 0; i < IMAP_SEARCH_MAX_DEPTH; i++)
		text[n++] = '(';
	n += (size_t)sprintf(text + n, "SEEN");
	for (int i = 0; i < IMAP_SEARCH_MAX_DEPTH; i++)
		text[n++] = ')';
	text[n] = '\0';
	parse_ok(text);
	free(text);

	/* too many keys */
	struct imap_arg *args = calloc(IMAP_SEARCH_MAX_KEYS + 1, sizeof(*args));
	for (size_t i = 0; i <= IMAP_SEARCH_MAX_KEYS; i++) {
		args[i].type = IMAP_ARG_ATOM;
		args[i].str = "SEEN";
		args[i].len = 4;
	}
	struct imap_search *s;
	assert_int_equal(imap_search_parse_keys(args, IMAP_SEARCH_MAX_KEYS + 1, &s, &error), -1);
	assert_string_equal(error, "Too many search keys");
	assert_int_equal(imap_search_parse_keys(args, IMAP_SEARCH_MAX_KEYS, &s, &error), 0);
	imap_search_free(&s);
	free(args);
}

/* ---- evaluation ---- */

#define DAY 86400
/* 2020-01-01 00:00:00 UTC */
#define T2020 1577836800

static const char *msg_texts[] = {
	/* 1: plain, QP with Latin-1 */
	"From: =?ISO-8859-1?Q?J=F6rg?= <jorg@example.org>\r\n"
	"To: team@example.org\r\n"
	"Subject: Quarterly report\r\n"
	"X-Spam-Flag: NO\r\n"
	"Content-Type: text/plain; charset=iso-8859-1\r\n"
	"Content-Transfer-Encoding: quoted-printable\r\n"
	"\r\n"
	"Die Stra=DFe ist gesperrt. Sehr lange Zeile mit weichem Umbr=\r\n"
	"uch dazwischen.\r\n",
	/* 2: multipart with base64 UTF-8 text and a binary attachment */
	"From: bob@example.com\r\n"
	"Subject: =?UTF-8?B?0J/RgNC40LLQtdGC?=\r\n"
	"MIME-Version: 1.0\r\n"
	"Content-Type: multipart/mixed; boundary=XX\r\n"
	"\r\n"
	"preamble secretpreamble\r\n"
	"--XX\r\n"
	"Content-Type: text/plain; charset=utf-8\r\n"
	"Content-Transfer-Encoding: base64\r\n"
	"\r\n"
	"0JrQvtC90YTQtdGA0LXQvdGG0LjRjyDQsiDQv9GP0YLQvdC40YbRgw==\r\n"
	"--XX\r\n"
	"Content-Type: application/octet-stream\r\n"
	"Content-Transfer-Encoding: base64\r\n"
	"\r\n"
	"aGlkZGVuYXR0YWNobWVudA==\r\n"
	"--XX\r\n"
	"Content-Type: message/rfc822\r\n"
	"\r\n"
	"Subject: inner subject line\r\n"
	"\r\n"
	"inner body words\r\n"
	"--XX--\r\n",
	/* 3: no Content-Type at all, bare LF */
	"Subject: hello\n"
	"\n"
	"Caf\xc3\xa9 crème\n",
};

static struct mbox_msg msgs[3];
static struct mbox_cache caches[3];
static int content_calls, cache_calls;

static int kw_index(void *arg, const char *name)
{
	static const char *const names[] = {"$Junk", "work"};
	for (int i = 0; i < 2; i++)
		if (strcasecmp(names[i], name) == 0)
			return i;
	return -1;
}

static const struct mbox_cache *get_cache(void *arg, const struct mbox_msg *m)
{
	cache_calls++;
	return &caches[m->uid / 10 - 1];
}

static int get_content(void *arg, const struct mbox_msg *m, const void **data_r, size_t *len_r)
{
	content_calls++;
	const char *t = msg_texts[m->uid / 10 - 1];
	*data_r = t;
	*len_r = strlen(t);
	return 0;
}

static void setup_msgs(void)
{
	memset(msgs, 0, sizeof(msgs));
	memset(caches, 0, sizeof(caches));
	for (int i = 0; i < 3; i++) {
		msgs[i].uid = (uint32_t)(i + 1) * 10;
		msgs[i].size = (uint64_t)strlen(msg_texts[i]);
		msgs[i].modseq = (uint64_t)(i + 1) * 100;
		msgs[i].internaldate = T2020 + i * DAY + 3600;
		msgs[i].savedate = T2020 + 10 * DAY;
		caches[i].subject = "";
		caches[i].from = caches[i].to = caches[i].cc = caches[i].bcc = "";
		caches[i].message_id = caches[i].in_reply_to = caches[i].references = "";
	}
	msgs[0].flags = MBOX_F_SEEN | MBOX_F_ANSWERED;
	msgs[0].keywords = 1; /* $Junk */
	msgs[1].flags = MBOX_F_FLAGGED | MBOX_F_RECENT;
	msgs[1].keywords = 2; /* work */
	msgs[2].flags = MBOX_F_DELETED | MBOX_F_DRAFT | MBOX_F_RECENT | MBOX_F_SEEN;
	msgs[2].savedate = 0;
	caches[0].subject = "Quarterly report";
	caches[0].from = "J\xc3\xb6rg <jorg@example.org>";
	caches[0].to = "team@example.org";
	caches[0].date = T2020 - 3600; /* 23:00 UTC on 31 Dec ... */
	caches[0].date_tz = 120;       /* ... is 1 Jan 01:00 +0200 */
	caches[1].subject = "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82";
	caches[1].from = "bob@example.com";
	caches[1].date = T2020 + 5 * DAY;
	caches[2].subject = "hello";
}

/* The MSNs (1-based) of the messages that match, as a string "1 3". */
static char *run(const char *keys)
{
	static char out[64];
	struct parsed p;
	const char *error;
	enum imap_search_error code;
	if (parse(keys, &p, &error, &code) < 0)
		fail_msg("'%s': %s", keys, error);
	struct imap_seqset saved = {0};
	imap_seqset_add(&saved, 20, 30);
	struct imap_search_ctx ctx = {
		.max_msn = 3,
		.max_uid = 30,
		.saved = &saved,
		.now = T2020 + 3 * DAY,
		.keyword_index = kw_index,
		.cache = get_cache,
		.content = get_content,
	};
	imap_search_prepare(p.s, &ctx);
	out[0] = '\0';
	for (uint32_t i = 0; i < 3; i++) {
		if (imap_search_match(p.s, &ctx, i + 1, &msgs[i]))
			sprintf(out + strlen(out), "%s%u", out[0] ? " " : "", i + 1);
	}
	imap_seqset_free(&saved);
	done(&p);
	return out;
}

static void test_eval_record(void **state)
{
	setup_msgs();
	assert_string_equal(run("ALL"), "1 2 3");
	assert_string_equal(run("SAVEDATESUPPORTED"), "1 2 3");
	assert_string_equal(run("2:*"), "2 3");
	assert_string_equal(run("*"), "3");
	assert_string_equal(run("UID 15:25"), "2");
	assert_string_equal(run("UID *"), "3");
	assert_string_equal(run("UID 100:*"), "3");
	assert_string_equal(run("$"), "2 3");
	assert_string_equal(run("UID $"), "2 3");
	assert_string_equal(run("SEEN"), "1 3");
	assert_string_equal(run("UNSEEN"), "2");
	assert_string_equal(run("ANSWERED"), "1");
	assert_string_equal(run("UNANSWERED"), "2 3");
	assert_string_equal(run("FLAGGED"), "2");
	assert_string_equal(run("UNFLAGGED"), "1 3");
	assert_string_equal(run("DELETED"), "3");
	assert_string_equal(run("UNDELETED"), "1 2");
	assert_string_equal(run("DRAFT"), "3");
	assert_string_equal(run("UNDRAFT"), "1 2");
	assert_string_equal(run("RECENT"), "2 3");
	assert_string_equal(run("NEW"), "2");
	assert_string_equal(run("OLD"), "1");
	assert_string_equal(run("KEYWORD $junk"), "1");
	assert_string_equal(run("KEYWORD WORK"), "2");
	assert_string_equal(run("KEYWORD nosuch"), "");
	assert_string_equal(run("UNKEYWORD nosuch"), "1 2 3");
	assert_string_equal(run("UNKEYWORD $Junk"), "2 3");
	assert_string_equal(run("BEFORE 2-Jan-2020"), "1");
	assert_string_equal(run("ON 2-Jan-2020"), "2");
	assert_string_equal(run("SINCE 2-Jan-2020"), "2 3");
	assert_string_equal(run("SAVEDON 11-Jan-2020"), "1 2");
	assert_string_equal(run("SAVEDON 3-Jan-2020"), "3"); /* no save date: INTERNALDATE */
	assert_string_equal(run("SAVEDBEFORE 11-Jan-2020"), "3");
	assert_string_equal(run("SAVEDSINCE 11-Jan-2020"), "1 2");
	char larger[64];
	sprintf(larger, "LARGER %zu", strlen(msg_texts[0]));
	assert_string_equal(run(larger), "2");
	sprintf(larger, "SMALLER %zu", strlen(msg_texts[0]));
	assert_string_equal(run(larger), "3");
	/* now = 4 Jan 00:00: ages are 3d-1h, 2d-1h, 1d-1h */
	assert_string_equal(run("OLDER 172800"), "1");
	assert_string_equal(run("YOUNGER 172800"), "2 3");
	assert_string_equal(run("MODSEQ 200"), "2 3");
	assert_string_equal(run("MODSEQ \"/flags/\\\\seen\" all 300"), "3");
	assert_string_equal(run("NOT SEEN"), "2");
	assert_string_equal(run("OR ANSWERED DRAFT"), "1 3");
	assert_string_equal(run("(SEEN RECENT)"), "3");
	assert_string_equal(run("SEEN NOT (DELETED OR 1 2)"), "1 3");
	assert_string_equal(run("OR (SEEN DELETED) FLAGGED"), "2 3");
}

static void test_eval_headers(void **state)
{
	setup_msgs();
	cache_calls = content_calls = 0;
	assert_string_equal(run("SUBJECT REPORT"), "1");
	assert_string_equal(run("SUBJECT \"\xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\""), "2");
	assert_string_equal(run("FROM \"J\xc3\x96RG\""), "1");
	assert_string_equal(run("FROM example"), "1 2");
	assert_string_equal(run("TO team"), "1");
	assert_string_equal(run("CC x"), "");
	assert_string_equal(run("HEADER Subject hello"), "3");
	/* the cache answered these; no message was read */
	assert_int_equal(content_calls, 0);
	assert_true(cache_calls > 0);
	/* Date: of message 1 is 1 Jan in its own zone, 31 Dec in UTC */
	assert_string_equal(run("SENTON 1-Jan-2020"), "1");
	assert_string_equal(run("SENTSINCE 6-Jan-2020"), "2");
	/* message 3 has no Date: its INTERNALDATE (3 Jan) is used */
	assert_string_equal(run("SENTON 3-Jan-2020"), "3");
	assert_string_equal(run("SENTBEFORE 3-Jan-2020"), "1");

	/* arbitrary fields read the message */
	assert_string_equal(run("HEADER X-Spam-Flag no"), "1");
	assert_string_equal(run("HEADER x-spam-flag \"\""), "1");
	assert_string_equal(run("HEADER Subject \"\""), "1 2 3");
	assert_string_equal(run("HEADER Content-Type multipart"), "2");
	assert_true(content_calls > 0);

	/* cheap keys first: a flag that fails stops before the message is read */
	content_calls = 0;
	assert_string_equal(run("BODY gesperrt DELETED"), "");
	assert_int_equal(content_calls, 1); /* only message 3 is deleted */
	content_calls = 0;
	assert_string_equal(run("OR BODY nothing-here SEEN"), "1 3");
	assert_int_equal(content_calls, 1); /* SEEN first; message 2 read */
	/* several content keys share one read per message */
	content_calls = 0;
	assert_string_equal(run("BODY gesperrt TEXT quarterly HEADER x-spam-flag no"), "1");
	assert_int_equal(content_calls, 3);
}

static void test_eval_body(void **state)
{
	setup_msgs();
	/* quoted-printable Latin-1 with a soft line break, folded */
	assert_string_equal(run("BODY \"STRASSE IST\""), "1");
	assert_string_equal(run("BODY Umbruch"), "1");
	/* base64 UTF-8 (Cyrillic "конференция") */
	assert_string_equal(
		run("BODY \"\xd0\x9a\xd0\x9e\xd0\x9d\xd0\xa4\xd0\x95\xd0\xa0\xd0\x95\xd0\x9d\""),
		"2");
	/* attachments and preambles are not searched; enclosed messages are */
	assert_string_equal(run("BODY hiddenattachment"), "");
	assert_string_equal(run("BODY secretpreamble"), "");
	assert_string_equal(run("BODY \"inner body\""), "2");
	assert_string_equal(run("BODY \"inner subject\""), "2");
	/* no Content-Type: text/plain, 8-bit UTF-8 */
	assert_string_equal(run("BODY CAFE"), "3");
	assert_string_equal(run("BODY \"CR\xc3\x88ME\""), "3");
	/* BODY does not look at the header, TEXT does (decoded) */
	assert_string_equal(run("BODY Quarterly"), "");
	assert_string_equal(run("TEXT Quarterly"), "1");
	assert_string_equal(run("TEXT \"j\xc3\xb6rg\""), "1");
	assert_string_equal(run("TEXT \"\xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82\""), "2");
	assert_string_equal(run("TEXT \"\""), "1 2 3");
	assert_string_equal(run("NOT BODY e"), "");
}

/* ---- the public MIME corpus ---- */

static char *corpus_msg;
static size_t corpus_len;

static int corpus_content(void *arg, const struct mbox_msg *m, const void **data_r, size_t *len_r)
{
	*data_r = corpus_msg;
	*len_r = corpus_len;
	return 0;
}

static bool corpus_match(const char *file, const char *keys)
{
	const char *src = getenv("POSTERN_SOURCE_DIR");
	char path[4096];
	snprintf(path, sizeof(path), "%s/../shared/vectors/mime-cpython-email/data/%s",
		 src != NULL ? src : ".", file);
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		fail_msg("%s: cannot open (POSTERN_SOURCE_DIR set?)", path);
	corpus_msg = malloc(1 << 20);
	corpus_len = fread(corpus_msg, 1, 1 << 20, f);
	fclose(f);
	struct parsed p;
	const char *error;
	enum imap_search_error code;
	if (parse(keys, &p, &error, &code) < 0)
		fail_msg("'%s': %s", keys, error);
	struct imap_search_ctx ctx = {.max_msn = 1, .max_uid = 1, .content = corpus_content};
	struct mbox_msg m = {.uid = 1, .size = corpus_len};
	imap_search_prepare(p.s, &ctx);
	bool r = imap_search_match(p.s, &ctx, 1, &m);
	done(&p);
	free(corpus_msg);
	return r;
}

static void test_corpus(void **state)
{
	/* every message: TEXT "" matches, content keys never crash */
	for (int i = 1; i <= 47; i++) {
		char name[32];
		snprintf(name, sizeof(name), "msg_%02d.txt", i);
		assert_true(corpus_match(name, "TEXT \"\""));
		corpus_match(name, "OR BODY zzz OR TEXT \"\xc3\xa4\" HEADER X-Nothing \"\"");
	}
	assert_true(corpus_match("msg_12a.txt", "TEXT \"\""));
	/* text parts are searched, a base64 image is not */
	assert_true(corpus_match("msg_07.txt", "BODY \"DINGUS FISH\""));
	assert_false(corpus_match("msg_07.txt", "BODY R0lGODdhAAEAAfAAAP"));
	assert_true(corpus_match("msg_07.txt", "TEXT \"your dingus\""));
	assert_true(corpus_match("msg_16.txt", "HEADER X-Mailman-Version 2.1A3"));
	assert_true(corpus_match("msg_16.txt", "HEADER list-id \"scr.socal\""));
	assert_true(corpus_match("msg_16.txt", "BODY \"relates to a message\""));
	/* only in the top-level header (From:); X-BeenThere is in the enclosed message too */
	assert_false(corpus_match("msg_16.txt", "BODY \"Internet Mail Delivery\""));
	assert_true(corpus_match("msg_16.txt", "TEXT \"internet mail delivery\""));
	assert_true(corpus_match("msg_16.txt", "BODY X-BeenThere"));
	assert_true(corpus_match("msg_23.txt", "BODY \"a message part\""));
}

static void test_responses(void **state)
{
	uint32_t nums[] = {2, 3, 4, 9, 11};
	char *r = imap_search_response(nums, 5, 0);
	assert_string_equal(r, "* SEARCH 2 3 4 9 11");
	free(r);
	r = imap_search_response(nums, 2, 917162500);
	assert_string_equal(r, "* SEARCH 2 3 (MODSEQ 917162500)");
	free(r);
	r = imap_search_response(NULL, 0, 5);
	assert_string_equal(r, "* SEARCH");
	free(r);

	unsigned all = IMAP_SEARCH_RET_MIN | IMAP_SEARCH_RET_MAX | IMAP_SEARCH_RET_COUNT |
		       IMAP_SEARCH_RET_ALL;
	r = imap_search_esearch_response("A282", false, all, nums, 5, 0);
	assert_string_equal(r, "* ESEARCH (TAG \"A282\") MIN 2 MAX 11 COUNT 5 ALL 2:4,9,11");
	free(r);
	r = imap_search_esearch_response("t", true, all, nums, 0, 7);
	assert_string_equal(r, "* ESEARCH (TAG \"t\") UID COUNT 0");
	free(r);
	r = imap_search_esearch_response("t", true, IMAP_SEARCH_RET_MAX, nums, 5, 7);
	assert_string_equal(r, "* ESEARCH (TAG \"t\") UID MAX 11 MODSEQ 7");
	free(r);
	assert_null(imap_search_esearch_response("t", true, IMAP_SEARCH_RET_SAVE, nums, 5, 0));
	r = imap_search_esearch_response("t", false, IMAP_SEARCH_RET_SAVE | IMAP_SEARCH_RET_MIN,
					 nums, 5, 0);
	assert_string_equal(r, "* ESEARCH (TAG \"t\") MIN 2");
	free(r);

	struct imap_seqset saved;
	imap_search_save_result(IMAP_SEARCH_RET_SAVE, nums, 5, &saved);
	char *s = imap_seqset_string(&saved);
	assert_string_equal(s, "2:4,9,11");
	free(s);
	imap_seqset_free(&saved);
	imap_search_save_result(IMAP_SEARCH_RET_SAVE | IMAP_SEARCH_RET_MIN | IMAP_SEARCH_RET_MAX,
				nums, 5, &saved);
	s = imap_seqset_string(&saved);
	assert_string_equal(s, "2,11");
	free(s);
	imap_seqset_free(&saved);
	imap_search_save_result(IMAP_SEARCH_RET_SAVE | IMAP_SEARCH_RET_MIN | IMAP_SEARCH_RET_COUNT,
				nums, 5, &saved);
	assert_int_equal(imap_seqset_count(&saved), 5);
	imap_seqset_free(&saved);
	imap_search_save_result(IMAP_SEARCH_RET_SAVE, nums, 0, &saved);
	assert_int_equal(saved.n, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_casemap),     cmocka_unit_test(test_parse),
		cmocka_unit_test(test_limits),      cmocka_unit_test(test_eval_record),
		cmocka_unit_test(test_eval_headers), cmocka_unit_test(test_eval_body),
		cmocka_unit_test(test_responses),   cmocka_unit_test(test_corpus),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

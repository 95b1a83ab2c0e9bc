/*
 * libFuzzer target: the input is an IMAP command; its arguments are parsed
 * as a SEARCH program (with RETURN/CHARSET) and as bare keys, and the
 * program is evaluated on two fixed messages (one multipart with base64 and
 * quoted-printable parts), with the cache and content callbacks. The
 * command's strings also become the subjects, Message-IDs, In-Reply-To
 * and References of a few messages that are threaded both ways and
 * sorted (with the first argument as sort criteria when it parses).
 */
#include "imap/imap_parser.h"
#include "imap/imap_search.h"
#include "imap/imap_sort.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const texts[] = {
	"From: =?UTF-8?Q?J=C3=B6rg?= <j@example.org>\r\nTo: a@b\r\nSubject: Hello there\r\n"
	"Content-Type: text/plain; charset=iso-8859-1\r\n"
	"Content-Transfer-Encoding: quoted-printable\r\n\r\nStra=DFe =\r\nwith soft break\r\n",
	"Subject: multi\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
	"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
	"PGI+SGVsbG88L2I+\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\n"
	"inner text\r\n--b--\r\n",
};

static int kw(void *arg, const char *name)
{
	return strcasecmp(name, "$Junk") == 0 ? 0 : strcasecmp(name, "work") == 0 ? 1 : -1;
}

static const struct mbox_cache *cache(void *arg, const struct mbox_msg *m)
{
	static struct mbox_cache c[2];
	static const char *subj[2] = {"Hello there", "multi"};
	struct mbox_cache *p = &c[m->uid - 1];
	p->subject = (char *)subj[m->uid - 1];
	p->from = p->to = p->cc = p->bcc = (char *)"x@example.org";
	p->message_id = p->in_reply_to = p->references = (char *)"";
	p->date = m->uid == 1 ? 1577836800 : 0;
	p->date_tz = -300;
	return p;
}

static int content(void *arg, const struct mbox_msg *m, const void **data_r, size_t *len_r)
{
	*data_r = texts[m->uid - 1];
	*len_r = strlen(texts[m->uid - 1]);
	return 0;
}

/* Collect up to `max` string values of the argument tree, depth first. */
static void strings(const struct imap_arg *args, size_t n, const char **out, size_t *k, size_t max)
{
	for (size_t i = 0; i < n && *k < max; i++) {
		if (args[i].type == IMAP_ARG_LIST)
			strings(args[i].list, args[i].nlist, out, k, max);
		else
			out[(*k)++] = args[i].str;
	}
}

static void sort_and_thread(const struct imap_command *cmd)
{
	enum { MAXS = 32, MSGS = 8 };
	const char *s[MAXS];
	size_t k = 0;
	strings(cmd->args, cmd->nargs, s, &k, MAXS);
	if (k == 0)
		return;
	struct imap_sort_msg m[MSGS];
	memset(m, 0, sizeof(m));
	for (size_t i = 0; i < MSGS; i++) {
		m[i].msn = (uint32_t)i + 1;
		m[i].uid = (uint32_t)i * 3 + 1;
		m[i].date = (int64_t)(i * 7919 % 5);
		m[i].arrival = (int64_t)i;
		m[i].size = i * 13 % 7;
		m[i].subject = s[(i * 4) % k];
		m[i].message_id = s[(i * 4 + 1) % k];
		m[i].in_reply_to = s[(i * 4 + 2) % k];
		m[i].references = s[(i * 4 + 3) % k];
		m[i].from = m[i].display_from = s[(i + 5) % k];
	}
	for (size_t i = 0; i < k; i++) {
		bool reply;
		char *b = imap_base_subject(s[i], &reply);
		if (strlen(b) > strlen(s[i]))
			abort();
		free(b);
	}
	for (int by_uid = 0; by_uid < 2; by_uid++) {
		char *t = imap_thread(IMAP_THREAD_REFERENCES, m, MSGS, by_uid);
		free(t);
		t = imap_thread(IMAP_THREAD_ORDEREDSUBJECT, m, MSGS, by_uid);
		free(t);
	}
	struct imap_sort_program prog;
	const char *error;
	if (cmd->nargs > 0 && imap_sort_parse(&cmd->args[0], &prog, &error) == 0) {
		imap_sort(&prog, m, MSGS);
		for (size_t i = 1; i < MSGS; i++)
			if (m[i].msn == m[i - 1].msn)
				abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct imap_command cmd;
	const char *error;
	if (imap_parse_command((const char *)data, size, &cmd, &error) < 0) {
		imap_command_clear(&cmd);
		return 0;
	}
	struct imap_seqset saved = {0};
	imap_seqset_add(&saved, 2, 2);
	struct imap_search_ctx ctx = {
		.max_msn = 2,
		.max_uid = 2,
		.saved = &saved,
		.now = 1600000000,
		.keyword_index = kw,
		.cache = cache,
		.content = content,
	};
	struct mbox_msg msgs[2] = {
		{.uid = 1, .flags = 0x01, .keywords = 1, .modseq = 5, .size = 100,
		 .internaldate = 1577836800, .savedate = 1577836900},
		{.uid = 2, .flags = 0x2a, .keywords = 2, .modseq = 9, .size = 300,
		 .internaldate = 1590000000},
	};
	for (int pass = 0; pass < 2; pass++) {
		struct imap_search *s = NULL;
		struct imap_search_options opts;
		enum imap_search_error code;
		int r = pass == 0 ? imap_search_parse(cmd.args, cmd.nargs, &s, &opts, &error, &code)
				  : imap_search_parse_keys(cmd.args, cmd.nargs, &s, &error);
		if (r < 0) {
			if (s != NULL || error == NULL)
				abort();
			continue;
		}
		imap_search_prepare(s, &ctx);
		for (uint32_t i = 0; i < 2; i++)
			(void)imap_search_match(s, &ctx, i + 1, &msgs[i]);
		imap_search_free(&s);
	}
	imap_seqset_free(&saved);
	sort_and_thread(&cmd);
	imap_command_clear(&cmd);
	return 0;
}

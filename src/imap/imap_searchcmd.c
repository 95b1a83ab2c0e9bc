/*
 * SEARCH (with ESEARCH RETURN options and SEARCHRES), SORT and THREAD:
 * the session side of imap_search.c and imap_sort.c. The program is
 * evaluated over the view; cheap keys read only the index records, header
 * keys the cached values, BODY/TEXT the message file (loaded on demand,
 * one message at a time).
 */
#include "imap/imap-private.h"

#include "imap/imap_search.h"
#include "imap/imap_seqset.h"
#include "imap/imap_sort.h"
#include "lib/xalloc.h"

#include <errno.h>
#include <event2/buffer.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct search_state {
	struct imap_session *s;
	struct mbox_cache cache;
	uint32_t cache_uid; /* 0: none loaded */
	/* the header caches of a window of the view, read in one index scan when a
	   key first needs one in it (one query per message costs ~10x more; the
	   whole view at once was 15 MB for 100,000 messages, mostly page faults) */
	struct mbox_cache *win;
	size_t win_start, win_n; /* view indexes [win_start, win_start + win_n) */
	bool win_failed;
	unsigned fields; /* MBOX_CACHE_* the program reads */
	size_t cur;      /* view index of the message being matched */
	unsigned char *data;
	size_t len;
	uint32_t data_uid;
};

static int kw_index(void *arg, const char *name)
{
	struct search_state *st = arg;
	return mbox_keyword_index(st->s->view.box, name, false);
}

/* " N" for each uint32_t at `off` in `n` records of `size` octets, in 4 KiB pieces (one
   printf per number was a good part of a SORT of 100,000 messages) */
static void add_numbers(struct evbuffer *out, const void *recs, size_t n, size_t size, size_t off)
{
	char buf[4096];
	size_t len = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t v;
		memcpy(&v, (const char *)recs + i * size + off, sizeof(v));
		char tmp[12];
		size_t k = sizeof(tmp);
		do {
			tmp[--k] = (char)('0' + v % 10);
			v /= 10;
		} while (v != 0);
		tmp[--k] = ' ';
		if (len + (sizeof(tmp) - k) > sizeof(buf)) {
			evbuffer_add(out, buf, len);
			len = 0;
		}
		memcpy(buf + len, tmp + k, sizeof(tmp) - k);
		len += sizeof(tmp) - k;
	}
	evbuffer_add(out, buf, len);
}

#define SEARCH_WINDOW 1024
#define SORT_WINDOW 1024

static void window_clear(struct search_state *st)
{
	for (size_t i = 0; i < st->win_n; i++)
		mbox_cache_clear(&st->win[i]);
	st->win_n = 0;
}

static const struct mbox_cache *get_cache(void *arg, const struct mbox_msg *msg)
{
	struct search_state *st = arg;
	struct imap_view *v = &st->s->view;
	if (!st->win_failed && st->cur < v->n && v->uids[st->cur] == msg->uid) {
		size_t i = st->cur;
		if (i < st->win_start || i >= st->win_start + st->win_n) {
			/* the program walks the view in order: the next window starts here */
			window_clear(st);
			if (st->win == NULL)
				st->win = xcalloc(SEARCH_WINDOW, sizeof(*st->win));
			size_t n = v->n - i < SEARCH_WINDOW ? v->n - i : SEARCH_WINDOW;
			uint32_t uids[SEARCH_WINDOW];
			memcpy(uids, v->uids + i, n * sizeof(uint32_t));
			char *err = NULL;
			if (mbox_msg_caches(v->box, uids, n, st->fields, st->win, &err) < 0) {
				free(err);
				st->win_failed = true;
			} else {
				st->win_start = i;
				st->win_n = n;
			}
		}
		if (!st->win_failed) {
			struct mbox_cache *c = &st->win[i - st->win_start];
			if (c->found)
				return c;
		}
		/* no cache row (expunged meanwhile, or never cached): one by one below */
	}
	if (st->cache_uid == msg->uid)
		return &st->cache;
	mbox_cache_clear(&st->cache);
	st->cache_uid = 0;
	char *err = NULL;
	if (mbox_msg_cache(st->s->view.box, msg->uid, &st->cache, &err) < 0) {
		free(err);
		return NULL;
	}
	st->cache_uid = msg->uid;
	return &st->cache;
}

static int get_content(void *arg, const struct mbox_msg *msg, const void **data_r, size_t *len_r)
{
	struct search_state *st = arg;
	if (st->data_uid != msg->uid) {
		free(st->data);
		st->data = NULL;
		st->data_uid = 0;
		int fd;
		char *err = NULL;
		if (mbox_msg_open(st->s->view.box, msg->uid, &fd, &err) < 0) {
			free(err);
			return -1;
		}
		struct stat sb;
		if (fstat(fd, &sb) < 0) {
			close(fd);
			return -1;
		}
		size_t len = (size_t)sb.st_size, got = 0;
		st->data = xmalloc(len + 1);
		while (got < len) {
			ssize_t r = pread(fd, st->data + got, len - got, (off_t)got);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			got += (size_t)r;
		}
		close(fd);
		st->len = got;
		st->data_uid = msg->uid;
	}
	*data_r = st->data;
	*len_r = st->len;
	return 0;
}

static void state_clear(struct search_state *st)
{
	mbox_cache_clear(&st->cache);
	free(st->data);
	window_clear(st);
	free(st->win);
}

/* Run the program over the view: indexes of the matching messages (allocated). */
static size_t run_search(struct imap_session *s, struct imap_search *search, size_t **hits_r,
			 uint64_t *maxmodseq_r)
{
	struct imap_view *v = &s->view;
	/* only the columns the keys look at: SEARCH SUBJECT on 100,000 messages copied 13
	   strings per message when it needs one */
	unsigned fields = imap_search_cache_fields(search);
	struct search_state st = {.s = s, .fields = fields != 0 ? fields : MBOX_CACHE_HEADERS};
	struct imap_seqset saved = {0};
	for (size_t i = 0; i < v->saved_uids_n; i++)
		imap_seqset_add(&saved, v->saved_uids[i], v->saved_uids[i]);
	struct imap_search_ctx ctx = {
	    .arg = &st,
	    .max_msn = (uint32_t)v->n,
	    .max_uid = v->n > 0 ? v->uids[v->n - 1] : 0,
	    .saved = &saved,
	    .now = (int64_t)time(NULL),
	    .keyword_index = kw_index,
	    .cache = get_cache,
	    .content = get_content,
	};
	imap_search_prepare(search, &ctx);
	size_t *hits = xmalloc((v->n + 1) * sizeof(size_t));
	size_t n = 0;
	uint64_t maxmod = 0;
	/* keys on sizes, dates or MODSEQ read the index's records; flags, keywords and
	   sets need only the view */
	struct mbox_msg *recs = NULL;
	if (imap_search_needs_record(search)) {
		for (size_t i = 0; i < v->n; i++)
			hits[i] = i;
		recs = imap_view_records(s, hits, v->n, NULL);
	}
	for (size_t i = 0; i < v->n; i++) {
		struct mbox_msg own;
		const struct mbox_msg *m = recs != NULL ? &recs[i] : &own;
		if (recs == NULL)
			imap_view_msg(v, i, &own);
		st.cur = i;
		if (imap_search_match(search, &ctx, (uint32_t)(i + 1), m)) {
			hits[n++] = i;
			if (m->modseq > maxmod)
				maxmod = m->modseq;
		}
	}
	free(recs);
	state_clear(&st);
	imap_seqset_free(&saved);
	*hits_r = hits;
	*maxmodseq_r = maxmod;
	return n;
}

static void cmd_search(struct imap_job *j)
{
	struct imap_session *s = j->s;
	struct imap_search *search = NULL;
	struct imap_search_options opts = {0};
	const char *err = NULL;
	enum imap_search_error code = IMAP_SEARCH_ERR_SYNTAX;
	if (imap_search_parse(j->args, j->nargs, &search, &opts, &err, &code) < 0) {
		if (code == IMAP_SEARCH_ERR_BADCHARSET)
			imap_reply(j->out, "%s NO [BADCHARSET (UTF-8 US-ASCII)] %s", j->tag,
				   err != NULL ? err : "Unsupported charset");
		else
			imap_reply(j->out, "%s BAD %s", j->tag, err != NULL ? err : "Syntax error");
		return;
	}
	bool modseq = imap_search_has_modseq(search);
	if (modseq)
		s->condstore = true;
	size_t *hits;
	uint64_t maxmod;
	size_t n = run_search(s, search, &hits, &maxmod);
	imap_search_free(&search);
	struct imap_view *v = &s->view;
	uint32_t *nums = xmalloc((n + 1) * sizeof(uint32_t));
	for (size_t i = 0; i < n; i++)
		nums[i] = j->uid ? v->uids[hits[i]] : (uint32_t)(hits[i] + 1);
	if (opts.ret & IMAP_SEARCH_RET_SAVE) {
		free(v->saved_uids);
		v->saved_uids = xmalloc((n + 1) * sizeof(uint32_t));
		for (size_t i = 0; i < n; i++)
			v->saved_uids[i] = v->uids[hits[i]];
		v->saved_uids_n = (uint32_t)n;
	}
	bool esearch = opts.esearch || (s->enabled & IMAP_EN_REV2);
	unsigned ret = opts.esearch ? opts.ret : IMAP_SEARCH_RET_ALL;
	if (esearch && ret == IMAP_SEARCH_RET_SAVE) {
		/* RFC 5182: SAVE alone produces no ESEARCH response */
	} else if (esearch) {
		evbuffer_add_printf(j->out, "* ESEARCH (TAG \"%s\")%s", j->tag, j->uid ? " UID" : "");
		if (n > 0) {
			if (ret & IMAP_SEARCH_RET_MIN)
				evbuffer_add_printf(j->out, " MIN %u", nums[0]);
			if (ret & IMAP_SEARCH_RET_MAX)
				evbuffer_add_printf(j->out, " MAX %u", nums[n - 1]);
		}
		if (ret & IMAP_SEARCH_RET_COUNT)
			evbuffer_add_printf(j->out, " COUNT %zu", n);
		if ((ret & IMAP_SEARCH_RET_ALL) && n > 0) {
			char *set = imap_seqset_format(nums, n);
			evbuffer_add_printf(j->out, " ALL %s", set);
			free(set);
		}
		if (modseq && n > 0)
			evbuffer_add_printf(j->out, " MODSEQ %llu", (unsigned long long)maxmod);
		evbuffer_add(j->out, "\r\n", 2);
	} else {
		evbuffer_add_printf(j->out, "* SEARCH");
		add_numbers(j->out, nums, n, sizeof(*nums), 0);
		if (modseq && n > 0)
			evbuffer_add_printf(j->out, " (MODSEQ %llu)", (unsigned long long)maxmod);
		evbuffer_add(j->out, "\r\n", 2);
	}
	free(nums);
	free(hits);
	imap_view_sync(s, j->out, j->expunge_ok);
	imap_reply(j->out, "%s OK %sSEARCH completed", j->tag, j->uid ? "UID " : "");
}

/* SORT (criteria) charset keys / THREAD algorithm charset keys (RFC 5256) */
static void cmd_sort_thread(struct imap_job *j, bool thread)
{
	struct imap_session *s = j->s;
	struct imap_sort_program prog;
	enum imap_thread_alg alg = IMAP_THREAD_REFERENCES;
	const char *err = NULL;
	if (j->nargs < 3) {
		imap_reply(j->out, "%s BAD Syntax: %s", j->tag,
			   thread ? "THREAD algorithm charset keys" : "SORT (criteria) charset keys");
		return;
	}
	if (thread) {
		if (j->args[0].type != IMAP_ARG_ATOM ||
		    imap_thread_alg_parse(j->args[0].str, &alg) < 0) {
			imap_reply(j->out, "%s BAD Unknown threading algorithm", j->tag);
			return;
		}
	} else if (imap_sort_parse(&j->args[0], &prog, &err) < 0) {
		imap_reply(j->out, "%s BAD %s", j->tag, err != NULL ? err : "Invalid sort criteria");
		return;
	}
	const char *charset = imap_arg_astring(&j->args[1]);
	if (charset == NULL || !imap_search_charset_ok(charset)) {
		imap_reply(j->out, "%s NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset", j->tag);
		return;
	}
	struct imap_search *search = NULL;
	if (imap_search_parse_keys(j->args + 2, j->nargs - 2, &search, &err) < 0) {
		imap_reply(j->out, "%s BAD %s", j->tag, err != NULL ? err : "Invalid search keys");
		return;
	}
	size_t *hits;
	uint64_t maxmod;
	size_t n = run_search(s, search, &hits, &maxmod);
	imap_search_free(&search);
	struct imap_view *v = &s->view;
	struct imap_sort_msg *msgs = xcalloc(n + 1, sizeof(*msgs));
	/* only what the criteria need: ARRIVAL and SIZE come from the view, DATE
	   needs the date alone, the others the header values */
	unsigned fields = thread ? MBOX_CACHE_HEADERS : 0;
	for (size_t k = 0; !thread && k < prog.n; k++) {
		enum imap_sort_key key = prog.crit[k].key;
		if (key == IMAP_SORT_DATE)
			fields |= MBOX_CACHE_DATE;
		else if (key != IMAP_SORT_ARRIVAL && key != IMAP_SORT_SIZE)
			fields |= MBOX_CACHE_HEADERS;
	}
	/* the records point into the caches, which then live until the end; a sort on
	   the date alone copies it out of windows of SORT_WINDOW caches (100,000 caches
	   at once were 15 MB, mostly page faults) */
	bool windowed = (fields & ~(unsigned)MBOX_CACHE_DATE) == 0;
	size_t ncache = windowed ? (n < SORT_WINDOW ? n : SORT_WINDOW) : n;
	struct mbox_cache *caches = xcalloc(ncache + 1, sizeof(*caches));
	uint32_t *uids = xmalloc((ncache + 1) * sizeof(uint32_t));
	/* ARRIVAL and SIZE from the index's records (and THREAD's date fallback); a sort
	   without them reads only the records of the messages without a Date: below */
	bool need_recs = thread;
	for (size_t k = 0; !thread && k < prog.n; k++)
		if (prog.crit[k].key == IMAP_SORT_ARRIVAL || prog.crit[k].key == IMAP_SORT_SIZE)
			need_recs = true;
	struct mbox_msg *recs = need_recs ? imap_view_records(s, hits, n, NULL) : NULL;
	char *cerr = NULL;
	for (size_t w = 0; w < n; w += ncache) {
		size_t wn = n - w < ncache ? n - w : ncache;
		for (size_t i = 0; i < wn; i++)
			uids[i] = v->uids[hits[w + i]];
		if (fields != 0 && mbox_msg_caches(v->box, uids, wn, fields, caches, &cerr) < 0) {
			/* the index failed: every message sorts as one without headers */
			free(cerr);
			cerr = NULL;
			memset(caches, 0, wn * sizeof(*caches));
		}
		for (size_t i = 0; i < wn; i++) {
			struct mbox_msg own;
			const struct mbox_msg *m = &own;
			if (recs != NULL)
				m = &recs[w + i];
			else
				imap_view_msg(v, hits[w + i], &own);
			struct mbox_cache *c = &caches[i];
			if (fields != 0 && !c->found) {
				/* no cache row: one by one (computed from the file if needed) */
				mbox_cache_clear(c);
				if (mbox_msg_cache(v->box, m->uid, c, &cerr) < 0) {
					free(cerr);
					cerr = NULL;
					memset(c, 0, sizeof(*c));
				}
			}
			if (windowed) {
				imap_sort_msg_fill(&msgs[w + i], (uint32_t)(hits[w + i] + 1), m, NULL);
				msgs[w + i].date = c->date;
				mbox_cache_clear(c);
			} else {
				imap_sort_msg_fill(&msgs[w + i], (uint32_t)(hits[w + i] + 1), m, c);
			}
		}
	}
	free(uids);
	free(recs);
	if (!need_recs && (fields & (MBOX_CACHE_DATE | MBOX_CACHE_HEADERS))) {
		/* DATE of a message without a usable Date: is its INTERNALDATE (RFC 5256) */
		size_t *late = xmalloc((n + 1) * sizeof(size_t));
		size_t nlate = 0;
		for (size_t i = 0; i < n; i++)
			if (msgs[i].date == 0)
				late[nlate++] = hits[i];
		if (nlate > 0) {
			struct mbox_msg *lr = imap_view_records(s, late, nlate, NULL);
			for (size_t i = 0, k = 0; i < n && k < nlate; i++)
				if (msgs[i].date == 0)
					msgs[i].arrival = lr[k++].internaldate;
			free(lr);
		}
		free(late);
	}
	if (thread) {
		char *t = imap_thread(alg, msgs, n, j->uid);
		evbuffer_add_printf(j->out, "* THREAD %s\r\n", t);
		free(t);
	} else {
		imap_sort(&prog, msgs, n);
		evbuffer_add_printf(j->out, "* SORT");
		add_numbers(j->out, msgs, n, sizeof(*msgs),
			    j->uid ? offsetof(struct imap_sort_msg, uid)
				   : offsetof(struct imap_sort_msg, msn));
		evbuffer_add(j->out, "\r\n", 2);
	}
	for (size_t i = 0; !windowed && i < n; i++)
		mbox_cache_clear(&caches[i]);
	free(caches);
	free(msgs);
	free(hits);
	imap_view_sync(s, j->out, j->expunge_ok);
	imap_reply(j->out, "%s OK %s%s completed", j->tag, j->uid ? "UID " : "", j->name);
}

void imap_cmd_search(struct imap_job *j)
{
	if (strcmp(j->name, "SORT") == 0)
		cmd_sort_thread(j, false);
	else if (strcmp(j->name, "THREAD") == 0)
		cmd_sort_thread(j, true);
	else
		cmd_search(j);
}

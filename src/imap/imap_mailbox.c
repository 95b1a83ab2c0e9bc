/*
 * IMAP commands on folders, and keeping the selected view in step with the
 * store: SELECT/EXAMINE, CLOSE/UNSELECT, CREATE, DELETE, RENAME,
 * (UN)SUBSCRIBE, LIST/LSUB (LIST-EXTENDED, LIST-STATUS, SPECIAL-USE),
 * NAMESPACE, STATUS, APPEND (MULTIAPPEND, UIDPLUS), GETQUOTA(ROOT), NOOP.
 *
 * Runs on worker threads (see imap-private.h).
 */
#include "imap/imap-private.h"

#include "imap/imap_seqset.h"
#include "lib/config.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "mail/address.h"
#include "mail/mutf7.h"

#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static const char *const flag_names[] = {"\\Seen", "\\Answered", "\\Flagged", "\\Deleted",
					 "\\Draft"};
static const uint32_t flag_bits[] = {MBOX_F_SEEN, MBOX_F_ANSWERED, MBOX_F_FLAGGED, MBOX_F_DELETED,
				     MBOX_F_DRAFT};

/* ------------------------------------------------------------------ */
/* strings and names */

void imap_write_string(struct evbuffer *out, const char *str, size_t len)
{
	bool quoted = len < 1024;
	for (size_t i = 0; i < len && quoted; i++) {
		unsigned char c = (unsigned char)str[i];
		if (c == '\0' || c == '\r' || c == '\n')
			quoted = false;
	}
	if (!quoted) {
		evbuffer_add_printf(out, "{%zu}\r\n", len);
		evbuffer_add(out, str, len);
		return;
	}
	evbuffer_add(out, "\"", 1);
	size_t start = 0;
	for (size_t i = 0; i < len; i++) {
		if (str[i] == '"' || str[i] == '\\') {
			evbuffer_add(out, str + start, i - start);
			evbuffer_add(out, "\\", 1);
			start = i;
		}
	}
	evbuffer_add(out, str + start, len - start);
	evbuffer_add(out, "\"", 1);
}

static bool is_inbox(const char *name)
{
	return strcasecmp(name, "INBOX") == 0;
}

char *imap_mailbox_name(struct imap_session *s, const struct imap_arg *a)
{
	const char *raw = imap_arg_astring(a);
	if (raw == NULL || strlen(raw) != a->len)
		return NULL;
	char *name;
	if (s->enabled & IMAP_EN_UTF8) {
		if (!utf8_valid((const unsigned char *)raw, strlen(raw)))
			return NULL;
		name = xstrdup(raw);
	} else {
		name = mutf7_decode(raw);
		if (name == NULL)
			return NULL;
	}
	if (is_inbox(name) || (strncasecmp(name, "INBOX/", 6) == 0)) {
		/* INBOX is case-insensitive, also as a parent */
		memcpy(name, "INBOX", 5);
	}
	return name;
}

void imap_write_mailbox(struct imap_session *s, struct evbuffer *out, const char *utf8)
{
	if (s->enabled & IMAP_EN_UTF8) {
		imap_write_string(out, utf8, strlen(utf8));
		return;
	}
	char *m = mutf7_encode(utf8);
	if (m == NULL)
		m = xstrdup(utf8);
	imap_write_string(out, m, strlen(m));
	free(m);
}

/* ------------------------------------------------------------------ */
/* flags */

void imap_write_msg_flags(struct imap_session *s, struct evbuffer *out, uint32_t flags,
                          uint32_t keywords)
{
	evbuffer_add(out, "(", 1);
	bool first = true;
	for (size_t i = 0; i < 5; i++) {
		if (flags & flag_bits[i]) {
			evbuffer_add_printf(out, "%s%s", first ? "" : " ", flag_names[i]);
			first = false;
		}
	}
	if (flags & MBOX_F_RECENT) {
		evbuffer_add_printf(out, "%s\\Recent", first ? "" : " ");
		first = false;
	}
	if (keywords != 0 && s->view.box != NULL) {
		size_t nkw;
		const char *const *kw = mbox_keywords(s->view.box, &nkw);
		for (size_t i = 0; i < nkw && i < 32; i++) {
			if (keywords & (1U << i)) {
				evbuffer_add_printf(out, "%s%s", first ? "" : " ", kw[i]);
				first = false;
			}
		}
	}
	evbuffer_add(out, ")", 1);
}

void imap_write_flags_list(struct imap_session *s, struct evbuffer *out, bool permanent)
{
	size_t nkw = 0;
	const char *const *kw = s->view.box != NULL ? mbox_keywords(s->view.box, &nkw) : NULL;
	if (!permanent) {
		evbuffer_add_printf(out, "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft");
		for (size_t i = 0; i < nkw; i++)
			evbuffer_add_printf(out, " %s", kw[i]);
		evbuffer_add(out, ")\r\n", 3);
		return;
	}
	if (s->view.readonly) {
		evbuffer_add_printf(out, "* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n");
		return;
	}
	evbuffer_add_printf(out, "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft");
	for (size_t i = 0; i < nkw; i++)
		evbuffer_add_printf(out, " %s", kw[i]);
	evbuffer_add_printf(out, "%s)] Flags permitted.\r\n",
			    nkw < MBOX_MAX_KEYWORDS ? " \\*" : "");
}

/* RFC 9051 atom characters for a keyword: no atom-specials, no '\\'. */
static bool keyword_valid(const char *k)
{
	if (*k == '\0' || strlen(k) > 64)
		return false;
	for (const char *p = k; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;
		if (c <= ' ' || c >= 0x7f || strchr("(){%*\"\\]", c) != NULL)
			return false;
	}
	return true;
}

int imap_parse_flags(struct imap_session *s, const struct imap_arg *a, uint32_t *flags_r,
		     uint32_t *keywords_r, const char ***names_r, size_t *nnames_r,
		     const char **error_r)
{
	*flags_r = 0;
	*keywords_r = 0;
	if (names_r != NULL) {
		*names_r = NULL;
		*nnames_r = 0;
	}
	const struct imap_arg *list = a;
	size_t n = 1;
	if (a->type == IMAP_ARG_LIST) {
		list = a->list;
		n = a->nlist;
	}
	for (size_t i = 0; i < n; i++) {
		if (list[i].type != IMAP_ARG_ATOM) {
			*error_r = "Flags must be atoms";
			goto bad;
		}
		const char *f = list[i].str;
		if (f[0] == '\\') {
			size_t k;
			for (k = 0; k < 5; k++)
				if (strcasecmp(f, flag_names[k]) == 0)
					break;
			if (k < 5) {
				*flags_r |= flag_bits[k];
				continue;
			}
			if (strcasecmp(f, "\\Recent") == 0) {
				*error_r = "\\Recent cannot be set";
				goto bad;
			}
			*error_r = "Unknown system flag";
			goto bad;
		}
		if (!keyword_valid(f)) {
			*error_r = "Invalid keyword";
			goto bad;
		}
		if (names_r != NULL) {
			*names_r = xrealloc(*names_r, (*nnames_r + 1) * sizeof(char *));
			(*names_r)[(*nnames_r)++] = f;
			continue;
		}
		if (s->view.box == NULL) {
			*error_r = "No mailbox selected";
			goto bad;
		}
		int idx = mbox_keyword_index(s->view.box, f, true);
		if (idx < 0) {
			*error_r = "Too many keywords in this mailbox";
			goto bad;
		}
		*keywords_r |= 1U << idx;
	}
	return 0;
bad:
	if (names_r != NULL) {
		free(*names_r);
		*names_r = NULL;
		*nnames_r = 0;
	}
	return -1;
}

void imap_store_error(struct imap_job *j, const char *what, char *err)
{
	const char *code = "";
	switch (errno) {
	case ENOENT:
		code = "[NONEXISTENT] ";
		break;
	case EEXIST:
		code = "[ALREADYEXISTS] ";
		break;
	case EDQUOT:
		code = "[OVERQUOTA] ";
		break;
	case ENOSPC:
		code = "[OVERQUOTA] ";
		break;
	case EPERM:
		code = "[NOPERM] ";
		break;
	case EINVAL:
		code = "[CANNOT] ";
		break;
	default:
		code = "[SERVERBUG] ";
		break;
	}
	if (errno == EIO || errno == 0) {
		char q[600];
		log_error("event=imap_store_error user=%s command=%s error=%s", j->s->user,
			  what, log_quote(q, sizeof(q), err != NULL ? err : "?", 500));
		imap_reply(j->out, "%s NO %sInternal error, try again later", j->tag, code);
	} else {
		imap_reply(j->out, "%s NO %s%s", j->tag, code, err != NULL ? err : "Failed");
	}
	free(err);
}

/* ------------------------------------------------------------------ */
/* the view */

void imap_view_clear(struct imap_view *v)
{
	mbox_close(&v->box);
	free(v->name);
	free(v->uids);
	free(v->flags);
	free(v->runs);
	free(v->fruns);
	free(v->expunged);
	free(v->saved_uids);
	memset(v, 0, sizeof(*v));
}

long imap_view_find(const struct imap_view *v, uint32_t uid)
{
	size_t lo = 0, hi = v->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (v->uids[mid] < uid)
			lo = mid + 1;
		else if (v->uids[mid] > uid)
			hi = mid;
		else
			return (long)mid;
	}
	return -1;
}

void imap_view_msg(const struct imap_view *v, size_t idx, struct mbox_msg *m_r)
{
	*m_r = (struct mbox_msg){.uid = v->uids[idx],
	                         .flags = IMAP_VF_FLAGS(v->flags[idx]),
	                         .keywords = IMAP_VF_KEYWORDS(v->flags[idx])};
}

void imap_view_set(struct imap_view *v, size_t idx, const struct mbox_msg *m)
{
	uint32_t recent = v->flags[idx] & MBOX_F_RECENT;
	v->flags[idx] = IMAP_VF_PACK((m->flags & ~MBOX_F_RECENT) | recent, m->keywords);
}

struct mbox_msg *imap_view_records(struct imap_session *s, const size_t *idx, size_t n,
                                   bool **gone_r)
{
	struct imap_view *v = &s->view;
	struct mbox_msg *recs = xcalloc(n + 1, sizeof(*recs));
	uint32_t *uids = xmalloc((n + 1) * sizeof(uint32_t));
	for (size_t i = 0; i < n; i++)
		uids[i] = v->uids[idx[i]];
	char *err = NULL;
	if (n > 0 && mbox_messages_get(v->box, uids, n, recs, &err) < 0) {
		char q[600];
		log_warn("event=imap_index_read_failed user=%s folder=%s error=%s", s->user,
		         v->name, log_quote(q, sizeof(q), err != NULL ? err : "?", 500));
		free(err);
		memset(recs, 0, n * sizeof(*recs));
	}
	free(uids);
	bool *gone = gone_r != NULL ? xcalloc(n + 1, sizeof(bool)) : NULL;
	for (size_t i = 0; i < n; i++) {
		if (recs[i].uid == 0) {
			imap_view_msg(v, idx[i], &recs[i]);
			if (gone != NULL)
				gone[i] = true;
		} else {
			/* \Recent as this session knows it */
			recs[i].flags =
			    (recs[i].flags & ~MBOX_F_RECENT) | (v->flags[idx[i]] & MBOX_F_RECENT);
		}
	}
	if (gone_r != NULL)
		*gone_r = gone;
	return recs;
}

void imap_view_pack(struct imap_view *v)
{
	if (v->packed || v->uids == NULL)
		return;
	v->packed = true;
	size_t n = v->n;
	if (n == 0)
		return;
	size_t nruns = 1, nfruns = 1;
	for (size_t i = 1; i < n; i++) {
		nruns += v->uids[i] != v->uids[i - 1] + 1;
		nfruns += v->flags[i] != v->flags[i - 1];
	}
	/* 8 bytes a run against 4 a message; otherwise only the growth slack goes */
	if (2 * nruns < n) {
		uint32_t *runs = xmalloc(2 * nruns * sizeof(*runs));
		size_t k = 0;
		runs[0] = v->uids[0];
		runs[1] = 1;
		for (size_t i = 1; i < n; i++) {
			if (v->uids[i] == v->uids[i - 1] + 1) {
				runs[2 * k + 1]++;
			} else {
				k++;
				runs[2 * k] = v->uids[i];
				runs[2 * k + 1] = 1;
			}
		}
		free(v->uids);
		v->uids = NULL;
		v->runs = runs;
		v->nruns = nruns;
	} else if (v->cap != n) {
		v->uids = xrealloc(v->uids, n * sizeof(*v->uids));
	}
	if (2 * nfruns < n) {
		uint32_t *fruns = xmalloc(2 * nfruns * sizeof(*fruns));
		size_t k = 0;
		fruns[0] = 1;
		fruns[1] = v->flags[0];
		for (size_t i = 1; i < n; i++) {
			if (v->flags[i] == v->flags[i - 1]) {
				fruns[2 * k]++;
			} else {
				k++;
				fruns[2 * k] = 1;
				fruns[2 * k + 1] = v->flags[i];
			}
		}
		free(v->flags);
		v->flags = NULL;
		v->fruns = fruns;
		v->nfruns = nfruns;
	} else if (v->cap != n) {
		v->flags = xrealloc(v->flags, n * sizeof(*v->flags));
	}
	v->cap = n;
}

void imap_view_unpack(struct imap_view *v)
{
	if (!v->packed)
		return;
	v->packed = false;
	if (v->runs != NULL) {
		uint32_t *uids = xmalloc((v->n + 1) * sizeof(*uids));
		size_t i = 0;
		for (size_t k = 0; k < v->nruns; k++)
			for (uint32_t c = 0; c < v->runs[2 * k + 1] && i < v->n; c++)
				uids[i++] = v->runs[2 * k] + c;
		xfree(&v->runs);
		v->nruns = 0;
		v->uids = uids;
	}
	if (v->fruns != NULL) {
		uint32_t *flags = xmalloc((v->n + 1) * sizeof(*flags));
		size_t i = 0;
		for (size_t k = 0; k < v->nfruns; k++)
			for (uint32_t c = 0; c < v->fruns[2 * k] && i < v->n; c++)
				flags[i++] = v->fruns[2 * k + 1];
		xfree(&v->fruns);
		v->nfruns = 0;
		v->flags = flags;
	}
	v->cap = v->n;
}

static bool pending_expunge(const struct imap_view *v, uint32_t uid)
{
	for (size_t i = 0; i < v->nexpunged; i++)
		if (v->expunged[i] == uid)
			return true;
	return false;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* Announce the expunges collected in v->expunged and drop them from the view. */
static void announce_expunges(struct imap_session *s, struct evbuffer *out)
{
	struct imap_view *v = &s->view;
	if (v->nexpunged == 0)
		return;
	qsort(v->expunged, v->nexpunged, sizeof(uint32_t), cmp_u32);
	bool vanished = (s->enabled & IMAP_EN_QRESYNC) != 0;
	uint32_t *gone = vanished ? xmalloc(v->nexpunged * sizeof(uint32_t)) : NULL;
	size_t ngone = 0;
	size_t w = 0, e = 0;
	for (size_t i = 0; i < v->n; i++) {
		while (e < v->nexpunged && v->expunged[e] < v->uids[i])
			e++;
		if (e < v->nexpunged && v->expunged[e] == v->uids[i]) {
			if (vanished)
				gone[ngone++] = v->uids[i];
			else
				evbuffer_add_printf(out, "* %zu EXPUNGE\r\n", w + 1);
			continue;
		}
		v->uids[w] = v->uids[i];
		v->flags[w++] = v->flags[i];
	}
	if (vanished) {
		/* RFC 7162 3.2.10: VANISHED instead of EXPUNGE once QRESYNC is enabled */
		if (ngone > 0) {
			char *set = imap_seqset_format(gone, ngone);
			evbuffer_add_printf(out, "* VANISHED %s\r\n", set);
			free(set);
		}
		free(gone);
	}
	v->n = w;
	v->nexpunged = 0;
}

static void add_expunged(struct imap_view *v, uint32_t uid)
{
	if (imap_view_find(v, uid) < 0 || pending_expunge(v, uid))
		return;
	if (v->nexpunged == v->expunged_cap) {
		v->expunged_cap = v->expunged_cap == 0 ? 16 : v->expunged_cap * 2;
		v->expunged = xrealloc(v->expunged, v->expunged_cap * sizeof(uint32_t));
	}
	v->expunged[v->nexpunged++] = uid;
}

static void view_append(struct imap_view *v, const struct mbox_msg *m)
{
	if (v->n == v->cap) {
		/* grown by a quarter: an idle session keeps the slack */
		v->cap = v->cap < 16 ? 16 : v->cap + v->cap / 4;
		v->uids = xrealloc(v->uids, v->cap * sizeof(*v->uids));
		v->flags = xrealloc(v->flags, v->cap * sizeof(*v->flags));
	}
	v->uids[v->n] = m->uid;
	v->flags[v->n++] = IMAP_VF_PACK(m->flags, m->keywords);
}

/* Unsolicited FETCH of a changed message: m is its store record (for MODSEQ). */
static void write_fetch_flags(struct imap_session *s, struct evbuffer *out, size_t idx,
                              const struct mbox_msg *m)
{
	uint32_t w = s->view.flags[idx];
	evbuffer_add_printf(out, "* %zu FETCH (UID %u FLAGS ", idx + 1, s->view.uids[idx]);
	imap_write_msg_flags(s, out, IMAP_VF_FLAGS(w), IMAP_VF_KEYWORDS(w));
	if (s->condstore)
		evbuffer_add_printf(out, " MODSEQ (%llu)", (unsigned long long)m->modseq);
	evbuffer_add(out, ")\r\n", 3);
}

static void view_sync(struct imap_session *s, struct evbuffer *out, bool expunge_ok);

void imap_view_sync(struct imap_session *s, struct evbuffer *out, bool expunge_ok)
{
	struct imap_view *v = &s->view;
	if (!s->selected || v->box == NULL)
		return;
	/* an idling session's view is packed (imap_view_pack) between changes */
	bool packed = v->packed;
	imap_view_unpack(v);
	view_sync(s, out, expunge_ok);
	if (packed)
		imap_view_pack(v);
}

static void view_sync(struct imap_session *s, struct evbuffer *out, bool expunge_ok)
{
	struct imap_view *v = &s->view;
	char *err = NULL;
	if (s->synced_before) {
		s->synced_before = false; /* the command ran after a sync (runs_here()) */
	} else if (mbox_sync(v->box, &err) < 0) {
		if (errno == EWOULDBLOCK) {
			/* on the loop, and the sync would have to wait for a writer: the
			   next command syncs */
			free(err);
			return;
		}
		char q[600];
		log_warn("event=imap_sync_failed user=%s folder=%s error=%s", s->user, v->name,
			 log_quote(q, sizeof(q), err != NULL ? err : "?", 500));
		free(err);
		return;
	}
	uint32_t uidvalidity, uidnext;
	uint64_t hms;
	mbox_get_ids(v->box, &uidvalidity, &uidnext, &hms);
	if (hms != v->modseq) {
		struct mbox_msg *ch = NULL;
		uint32_t *ex = NULL;
		size_t nch = 0, nex = 0;
		if (mbox_changes(v->box, v->modseq, &ch, &nch, &ex, &nex, &err) < 0) {
			char q[600];
			log_warn("event=imap_sync_failed user=%s folder=%s error=%s", s->user,
				 v->name, log_quote(q, sizeof(q), err != NULL ? err : "?", 500));
			free(err);
			return;
		}
		size_t old_n = v->n;
		uint64_t top = hms;
		for (size_t i = 0; i < nex; i++)
			add_expunged(v, ex[i]);
		size_t nkw = 0;
		mbox_keywords(v->box, &nkw);
		if (nkw != v->nkeywords) {
			imap_write_flags_list(s, out, false);
			imap_write_flags_list(s, out, true);
			v->nkeywords = nkw;
		}
		uint32_t last_uid = v->n > 0 ? v->uids[v->n - 1] : 0;
		for (size_t i = 0; i < nch; i++) {
			if (ch[i].modseq > top)
				top = ch[i].modseq;
			if (ch[i].uid > last_uid) {
				view_append(v, &ch[i]);
				last_uid = ch[i].uid;
				continue;
			}
			long idx = imap_view_find(v, ch[i].uid);
			if (idx < 0 || (size_t)idx >= old_n || pending_expunge(v, ch[i].uid))
				continue;
			uint32_t before = v->flags[idx];
			imap_view_set(v, (size_t)idx, &ch[i]);
			if (v->flags[idx] != before || s->condstore)
				write_fetch_flags(s, out, (size_t)idx, &ch[i]);
		}
		free(ch);
		free(ex);
		v->modseq = top;
		if (v->n != old_n) {
			evbuffer_add_printf(out, "* %zu EXISTS\r\n", v->n);
			if (!(s->enabled & IMAP_EN_REV2)) {
				size_t recent = 0;
				for (size_t i = 0; i < v->n; i++)
					if (v->flags[i] & MBOX_F_RECENT)
						recent++;
				evbuffer_add_printf(out, "* %zu RECENT\r\n", recent);
			}
		}
	}
	if (expunge_ok)
		announce_expunges(s, out);
}

/*
 * RFC 7162 3.2.5 / 3.2.6: what changed since `modseq` for a client that
 * knew the mailbox then: VANISHED (EARLIER) for expunged UIDs (within
 * `known`, a UID set, when given; within `within` when given), then
 * FETCH (UID FLAGS MODSEQ) for messages changed since.
 */
void imap_qresync_report(struct imap_session *s, struct evbuffer *out, uint64_t modseq,
			 const char *known, const struct imap_seqset *within)
{
	struct imap_view *v = &s->view;
	struct mbox_msg *ch = NULL;
	uint32_t *ex = NULL;
	size_t nch = 0, nex = 0;
	char *err = NULL;
	if (mbox_changes(v->box, modseq, &ch, &nch, &ex, &nex, &err) < 0) {
		free(err);
		return;
	}
	struct imap_seqset kset = {0};
	const char *kerr;
	bool have_known = known != NULL && imap_seqset_parse(known, UINT32_MAX, &kset, &kerr) == 0;
	size_t k = 0;
	for (size_t i = 0; i < nex; i++) {
		if (have_known && !imap_seqset_contains(&kset, ex[i]))
			continue;
		if (within != NULL && !imap_seqset_contains(within, ex[i]))
			continue;
		if (imap_view_find(v, ex[i]) >= 0)
			continue; /* still in this session's view: announced as it goes */
		ex[k++] = ex[i];
	}
	if (k > 0) {
		char *set = imap_seqset_format(ex, k);
		evbuffer_add_printf(out, "* VANISHED (EARLIER) %s\r\n", set);
		free(set);
	}
	imap_seqset_free(&kset);
	if (within == NULL) {
		for (size_t i = 0; i < nch; i++) {
			long idx = imap_view_find(v, ch[i].uid);
			if (idx < 0)
				continue;
			/* the store's record: its FLAGS and MODSEQ go together */
			imap_view_set(v, (size_t)idx, &ch[i]);
			uint32_t w = v->flags[idx];
			evbuffer_add_printf(out, "* %ld FETCH (UID %u FLAGS ", idx + 1, ch[i].uid);
			imap_write_msg_flags(s, out, IMAP_VF_FLAGS(w), IMAP_VF_KEYWORDS(w));
			evbuffer_add_printf(out, " MODSEQ (%llu))\r\n",
			                    (unsigned long long)ch[i].modseq);
		}
	}
	free(ch);
	free(ex);
}

/* ------------------------------------------------------------------ */
/* SELECT / EXAMINE / CLOSE / UNSELECT */

void imap_cmd_select(struct imap_job *j)
{
	struct imap_session *s = j->s;
	bool examine = strcmp(j->name, "EXAMINE") == 0;
	bool condstore = false;
	if (j->nargs < 1 || j->nargs > 2) {
		imap_reply(j->out, "%s BAD Syntax: %s mailbox [(CONDSTORE)]", j->tag, j->name);
		return;
	}
	const struct imap_arg *qresync = NULL;
	if (j->nargs == 2) {
		const struct imap_arg *p = &j->args[1];
		bool ok = p->type == IMAP_ARG_LIST && p->nlist >= 1;
		for (size_t i = 0; ok && i < p->nlist; i++) {
			if (imap_arg_atom_eq(&p->list[i], "CONDSTORE")) {
				condstore = true;
			} else if (imap_arg_atom_eq(&p->list[i], "QRESYNC") && i + 1 < p->nlist &&
				   p->list[i + 1].type == IMAP_ARG_LIST &&
				   (s->enabled & IMAP_EN_QRESYNC)) {
				qresync = &p->list[++i];
				condstore = true;
			} else {
				ok = false;
			}
		}
		if (!ok) {
			imap_reply(j->out, "%s BAD Unsupported %s parameters", j->tag, j->name);
			return;
		}
	}
	/* QRESYNC (uidvalidity modseq [known-uids [seq-match-data]]) */
	uint32_t q_uidvalidity = 0;
	uint64_t q_modseq = 0;
	const char *q_known = NULL;
	if (qresync != NULL) {
		char *e1 = NULL, *e2 = NULL;
		if (qresync->nlist < 2 || qresync->list[0].type != IMAP_ARG_ATOM ||
		    qresync->list[1].type != IMAP_ARG_ATOM ||
		    (q_uidvalidity = (uint32_t)strtoul(qresync->list[0].str, &e1, 10), *e1 != '\0') ||
		    (q_modseq = strtoull(qresync->list[1].str, &e2, 10), *e2 != '\0') ||
		    q_uidvalidity == 0 || q_modseq == 0 ||
		    (qresync->nlist >= 3 && qresync->list[2].type != IMAP_ARG_ATOM)) {
			imap_reply(j->out, "%s BAD Invalid QRESYNC parameters", j->tag);
			return;
		}
		if (qresync->nlist >= 3)
			q_known = qresync->list[2].str;
	}
	char *name = imap_mailbox_name(s, &j->args[0]);
	if (name == NULL) {
		imap_reply(j->out, "%s BAD Invalid mailbox name", j->tag);
		return;
	}
	char *err = NULL;
	struct mbox *box = NULL;
	int opened = mbox_open(s->acct, name, examine, &box, &err);
	if (opened < 0 && errno == EWOULDBLOCK && j->here) {
		/* on the loop, and the folder's sync would have to wait for another
		   thread: nothing changed, the command runs again on a worker */
		free(err);
		free(name);
		j->again = true;
		return;
	}
	/* a selected mailbox is closed, without expunge, whether the new one opened or not */
	bool was_selected = s->selected;
	if (s->selected) {
		imap_view_clear(&s->view);
		s->selected = false;
		s->state = IMAP_AUTH;
		j->watch_changed = true;
	}
	if (opened < 0) {
		free(name);
		if (was_selected && (s->enabled & IMAP_EN_REV2))
			imap_reply(j->out, "* OK [CLOSED] Previous mailbox closed.");
		imap_store_error(j, "select", err);
		return;
	}
	struct imap_view *v = &s->view;
	v->name = name;
	v->box = box;
	v->readonly = examine;
	struct mbox_msg *msgs = NULL;
	size_t n = 0;
	if (mbox_messages(box, &msgs, &n, &err) < 0) {
		imap_view_clear(v);
		imap_store_error(j, "select", err);
		return;
	}
	/* the view keeps UIDs and flags (8 bytes a message, not 48) */
	v->uids = xmalloc((n + 1) * sizeof(*v->uids));
	v->flags = xmalloc((n + 1) * sizeof(*v->flags));
	v->n = 0;
	v->cap = n + 1;
	/* no counts needed: EXISTS, RECENT and UNSEEN come from the view */
	struct mbox_status st = {0};
	mbox_get_ids(box, &st.uidvalidity, &st.uidnext, &st.highestmodseq);
	v->uidvalidity = st.uidvalidity;
	v->modseq = st.highestmodseq;
	for (size_t i = 0; i < n; i++) {
		view_append(v, &msgs[i]);
		if (msgs[i].modseq > v->modseq)
			v->modseq = msgs[i].modseq;
	}
	free(msgs);
	mbox_keywords(box, &v->nkeywords);
	if (condstore)
		s->condstore = true;
	s->selected = true;
	s->state = IMAP_SELECTED;
	j->watch_changed = true;

	struct evbuffer *out = j->out;
	if (was_selected && (s->enabled & IMAP_EN_REV2))
		imap_reply(out, "* OK [CLOSED] Previous mailbox closed.");
	imap_write_flags_list(s, out, false);
	imap_write_flags_list(s, out, true);
	evbuffer_add_printf(out, "* %zu EXISTS\r\n", n);
	if (!(s->enabled & IMAP_EN_REV2)) {
		size_t recent = 0, first_unseen = 0;
		for (size_t i = 0; i < n; i++) {
			if (v->flags[i] & MBOX_F_RECENT)
				recent++;
			if (first_unseen == 0 && !(v->flags[i] & MBOX_F_SEEN))
				first_unseen = i + 1;
		}
		evbuffer_add_printf(out, "* %zu RECENT\r\n", recent);
		if (first_unseen > 0)
			evbuffer_add_printf(out, "* OK [UNSEEN %zu] First unseen.\r\n", first_unseen);
	}
	evbuffer_add_printf(out, "* OK [UIDVALIDITY %u] UIDs valid\r\n", st.uidvalidity);
	evbuffer_add_printf(out, "* OK [UIDNEXT %u] Predicted next UID\r\n", st.uidnext);
	evbuffer_add_printf(out, "* OK [HIGHESTMODSEQ %llu] Highest\r\n",
			    (unsigned long long)v->modseq);
	if (s->enabled & IMAP_EN_REV2) {
		evbuffer_add_printf(out, "* LIST () \"/\" ");
		imap_write_mailbox(s, out, name);
		evbuffer_add(out, "\r\n", 2);
	}
	if (qresync != NULL && q_uidvalidity == st.uidvalidity)
		imap_qresync_report(s, out, q_modseq, q_known, NULL);
	imap_reply(out, "%s OK [%s] %s completed", j->tag, examine ? "READ-ONLY" : "READ-WRITE",
		   j->name);
}

void imap_cmd_close(struct imap_job *j)
{
	struct imap_session *s = j->s;
	if (j->nargs != 0) {
		imap_reply(j->out, "%s BAD Syntax: %s takes no arguments", j->tag, j->name);
		return;
	}
	bool close = strcmp(j->name, "CLOSE") == 0;
	if (close && !s->view.readonly) {
		/* CLOSE expunges silently */
		uint32_t *ex = NULL;
		size_t nex = 0;
		char *err = NULL;
		if (mbox_expunge(s->view.box, NULL, 0, &ex, &nex, &err) < 0) {
			char q[600];
			log_warn("event=imap_close_expunge_failed user=%s error=%s", s->user,
				 log_quote(q, sizeof(q), err != NULL ? err : "?", 500));
			free(err);
		}
		free(ex);
	}
	imap_view_clear(&s->view);
	s->selected = false;
	s->state = IMAP_AUTH;
	j->watch_changed = true;
	imap_reply(j->out, "%s OK %s completed", j->tag, j->name);
}

/* ------------------------------------------------------------------ */
/* CREATE / DELETE / RENAME / SUBSCRIBE */

static unsigned special_from_atom(const struct imap_arg *a)
{
	static const struct {
		const char *name;
		unsigned bit;
	} uses[] = {
		{"\\Drafts", MBOX_SPECIAL_DRAFTS}, {"\\Sent", MBOX_SPECIAL_SENT},
		{"\\Junk", MBOX_SPECIAL_JUNK},     {"\\Trash", MBOX_SPECIAL_TRASH},
		{"\\Archive", MBOX_SPECIAL_ARCHIVE},
	};
	for (size_t i = 0; i < sizeof(uses) / sizeof(uses[0]); i++)
		if (imap_arg_atom_eq(a, uses[i].name))
			return uses[i].bit;
	return 0;
}

static void sync_then_ok(struct imap_job *j, const char *text)
{
	imap_view_sync(j->s, j->out, j->expunge_ok);
	imap_reply(j->out, "%s OK %s", j->tag, text);
}

void imap_cmd_create(struct imap_job *j)
{
	struct imap_session *s = j->s;
	unsigned special = 0;
	if (j->nargs == 2) {
		/* CREATE name (USE (\Sent)) - RFC 6154 CREATE-SPECIAL-USE */
		const struct imap_arg *p = &j->args[1];
		if (p->type != IMAP_ARG_LIST || p->nlist != 2 || !imap_arg_atom_eq(&p->list[0], "USE") ||
		    p->list[1].type != IMAP_ARG_LIST) {
			imap_reply(j->out, "%s BAD Syntax: CREATE mailbox [(USE (attrs))]", j->tag);
			return;
		}
		for (size_t i = 0; i < p->list[1].nlist; i++) {
			unsigned b = special_from_atom(&p->list[1].list[i]);
			if (b == 0) {
				imap_reply(j->out, "%s NO [USEATTR] Unsupported special use", j->tag);
				return;
			}
			special |= b;
		}
	} else if (j->nargs != 1) {
		imap_reply(j->out, "%s BAD Syntax: CREATE mailbox", j->tag);
		return;
	}
	char *name = imap_mailbox_name(s, &j->args[0]);
	if (name == NULL) {
		imap_reply(j->out, "%s BAD Invalid mailbox name", j->tag);
		return;
	}
	/* a trailing separator only says a child will follow (RFC 9051 6.3.4) */
	size_t len = strlen(name);
	if (len > 1 && name[len - 1] == '/')
		name[len - 1] = '\0';
	char *err = NULL;
	if (is_inbox(name)) {
		imap_reply(j->out, "%s NO [ALREADYEXISTS] INBOX always exists", j->tag);
	} else if (mbox_folder_create(s->acct, name, special, &err) < 0) {
		imap_store_error(j, "create", err);
	} else {
		log_info("event=imap_create user=%s folder=\"%s\"", s->user, name);
		sync_then_ok(j, "CREATE completed");
	}
	free(name);
}

void imap_cmd_delete(struct imap_job *j)
{
	struct imap_session *s = j->s;
	if (j->nargs != 1) {
		imap_reply(j->out, "%s BAD Syntax: DELETE mailbox", j->tag);
		return;
	}
	char *name = imap_mailbox_name(s, &j->args[0]);
	if (name == NULL) {
		imap_reply(j->out, "%s BAD Invalid mailbox name", j->tag);
		return;
	}
	char *err = NULL;
	if (is_inbox(name)) {
		imap_reply(j->out, "%s NO [CANNOT] INBOX cannot be deleted", j->tag);
	} else if (s->selected && strcmp(s->view.name, name) == 0) {
		imap_reply(j->out, "%s NO [INUSE] Unselect the mailbox first", j->tag);
	} else if (mbox_folder_delete(s->acct, name, &err) < 0) {
		imap_store_error(j, "delete", err);
	} else {
		log_info("event=imap_delete user=%s folder=\"%s\"", s->user, name);
		sync_then_ok(j, "DELETE completed");
	}
	free(name);
}

void imap_cmd_rename(struct imap_job *j)
{
	struct imap_session *s = j->s;
	if (j->nargs != 2) {
		imap_reply(j->out, "%s BAD Syntax: RENAME from to", j->tag);
		return;
	}
	char *from = imap_mailbox_name(s, &j->args[0]);
	char *to = imap_mailbox_name(s, &j->args[1]);
	char *err = NULL;
	if (from == NULL || to == NULL) {
		imap_reply(j->out, "%s BAD Invalid mailbox name", j->tag);
	} else if (is_inbox(to)) {
		imap_reply(j->out, "%s NO [ALREADYEXISTS] INBOX exists", j->tag);
	} else if (mbox_folder_rename(s->acct, from, to, &err) < 0) {
		imap_store_error(j, "rename", err);
	} else {
		log_info("event=imap_rename user=%s from=\"%s\" to=\"%s\"", s->user, from, to);
		if (s->selected && strcmp(s->view.name, from) == 0) {
			free(s->view.name);
			s->view.name = xstrdup(to);
			j->watch_changed = true;
		}
		sync_then_ok(j, "RENAME completed");
	}
	free(from);
	free(to);
}

void imap_cmd_subscribe(struct imap_job *j)
{
	struct imap_session *s = j->s;
	bool sub = strcmp(j->name, "SUBSCRIBE") == 0;
	if (j->nargs != 1) {
		imap_reply(j->out, "%s BAD Syntax: %s mailbox", j->tag, j->name);
		return;
	}
	char *name = imap_mailbox_name(s, &j->args[0]);
	if (name == NULL) {
		imap_reply(j->out, "%s BAD Invalid mailbox name", j->tag);
		return;
	}
	char *err = NULL;
	if (mbox_folder_subscribe(s->acct, name, sub, &err) < 0)
		imap_store_error(j, j->name, err);
	else
		sync_then_ok(j, sub ? "SUBSCRIBE completed" : "UNSUBSCRIBE completed");
	free(name);
}

/* ------------------------------------------------------------------ */
/* LIST / LSUB */

/* IMAP LIST wildcard match: '*' anything, '%' anything but the separator. */
static bool wild_match(const char *pat, const char *name)
{
	for (; *pat != '\0'; pat++, name++) {
		if (*pat == '*' || *pat == '%') {
			bool star = *pat == '*';
			const char *p = pat + 1;
			for (const char *n = name;; n++) {
				if (wild_match(p, n))
					return true;
				if (*n == '\0' || (!star && *n == '/'))
					return false;
			}
		}
		if (*name == '\0' || *pat != *name)
			return false;
	}
	return *name == '\0';
}

/* Match with INBOX case-insensitive (the name is canonical "INBOX..."). */
static bool list_match(const char *pattern, const char *name)
{
	if (strncasecmp(pattern, "INBOX", 5) == 0 &&
	    (pattern[5] == '\0' || pattern[5] == '/' || pattern[5] == '*' || pattern[5] == '%')) {
		char *p = xstrdup(pattern);
		memcpy(p, "INBOX", 5);
		bool r = wild_match(p, name);
		free(p);
		return r;
	}
	return wild_match(pattern, name);
}

struct list_opts {
	bool subscribed_only; /* selection SUBSCRIBED or LSUB */
	bool special_only;    /* selection SPECIAL-USE */
	bool recursive;       /* RECURSIVEMATCH */
	bool ret_subscribed, ret_children, ret_special;
	const struct imap_arg *status; /* RETURN (STATUS (...)) items */
	bool lsub;
};

static void write_special(struct evbuffer *out, unsigned sp, bool *first)
{
	static const struct {
		unsigned bit;
		const char *name;
	} uses[] = {
		{MBOX_SPECIAL_DRAFTS, "\\Drafts"}, {MBOX_SPECIAL_SENT, "\\Sent"},
		{MBOX_SPECIAL_JUNK, "\\Junk"},     {MBOX_SPECIAL_TRASH, "\\Trash"},
		{MBOX_SPECIAL_ARCHIVE, "\\Archive"},
	};
	for (size_t i = 0; i < sizeof(uses) / sizeof(uses[0]); i++) {
		if (sp & uses[i].bit) {
			evbuffer_add_printf(out, "%s%s", *first ? "" : " ", uses[i].name);
			*first = false;
		}
	}
}

static int write_status(struct imap_session *s, struct evbuffer *out, const char *name,
			const struct imap_arg *items, size_t nitems, char **err_r);

static void list_one(struct imap_job *j, const struct list_opts *o, const struct mbox_folder *f,
		     bool child_subscribed)
{
	struct imap_session *s = j->s;
	struct evbuffer *out = j->out;
	evbuffer_add_printf(out, "* %s (", o->lsub ? "LSUB" : "LIST");
	bool first = true;
	if (f->nonexistent) {
		evbuffer_add_printf(out, o->lsub ? "\\Noselect" : "\\NonExistent");
		first = false;
	}
	if (!o->lsub && (o->ret_subscribed || o->subscribed_only) && f->subscribed) {
		evbuffer_add_printf(out, "%s\\Subscribed", first ? "" : " ");
		first = false;
	}
	if (!o->lsub) {
		evbuffer_add_printf(out, "%s%s", first ? "" : " ",
				    f->has_children ? "\\HasChildren" : "\\HasNoChildren");
		first = false;
		if (o->ret_special || o->special_only || !o->subscribed_only)
			write_special(out, f->special, &first);
	}
	evbuffer_add(out, ") \"/\" ", 6);
	imap_write_mailbox(s, out, f->name);
	if (o->recursive && child_subscribed && !f->subscribed)
		evbuffer_add_printf(out, " (\"CHILDINFO\" (\"SUBSCRIBED\"))");
	evbuffer_add(out, "\r\n", 2);
	if (o->status != NULL && !f->nonexistent) {
		char *err = NULL;
		if (write_status(s, out, f->name, o->status->list, o->status->nlist, &err) < 0)
			free(err); /* RFC 5819: no STATUS for a mailbox that cannot give one */
	}
}

void imap_cmd_list(struct imap_job *j)
{
	struct imap_session *s = j->s;
	struct list_opts o = {0};
	o.lsub = strcmp(j->name, "LSUB") == 0;
	const struct imap_arg *a = j->args;
	size_t n = j->nargs;
	if (!o.lsub && n > 0 && a[0].type == IMAP_ARG_LIST) {
		for (size_t i = 0; i < a[0].nlist; i++) {
			const struct imap_arg *opt = &a[0].list[i];
			if (imap_arg_atom_eq(opt, "SUBSCRIBED"))
				o.subscribed_only = true;
			else if (imap_arg_atom_eq(opt, "SPECIAL-USE"))
				o.special_only = true;
			else if (imap_arg_atom_eq(opt, "RECURSIVEMATCH"))
				o.recursive = true;
			else if (imap_arg_atom_eq(opt, "REMOTE"))
				;
			else {
				imap_reply(j->out, "%s BAD Unknown LIST selection option", j->tag);
				return;
			}
		}
		if (o.recursive && !o.subscribed_only) {
			imap_reply(j->out, "%s BAD RECURSIVEMATCH needs another selection option",
				   j->tag);
			return;
		}
		a++;
		n--;
	}
	if (n < 2) {
		imap_reply(j->out, "%s BAD Syntax: %s reference mailbox", j->tag, j->name);
		return;
	}
	const struct imap_arg *ref = &a[0], *pats = &a[1];
	if (!o.lsub && n == 4 && imap_arg_atom_eq(&a[2], "RETURN") && a[3].type == IMAP_ARG_LIST) {
		for (size_t i = 0; i < a[3].nlist; i++) {
			const struct imap_arg *opt = &a[3].list[i];
			if (imap_arg_atom_eq(opt, "SUBSCRIBED"))
				o.ret_subscribed = true;
			else if (imap_arg_atom_eq(opt, "CHILDREN"))
				o.ret_children = true;
			else if (imap_arg_atom_eq(opt, "SPECIAL-USE"))
				o.ret_special = true;
			else if (imap_arg_atom_eq(opt, "STATUS") && i + 1 < a[3].nlist &&
				 a[3].list[i + 1].type == IMAP_ARG_LIST)
				o.status = &a[3].list[++i];
			else {
				imap_reply(j->out, "%s BAD Unknown LIST return option", j->tag);
				return;
			}
		}
	} else if (n != 2) {
		imap_reply(j->out, "%s BAD Syntax: %s reference mailbox", j->tag, j->name);
		return;
	}
	if (o.lsub)
		o.subscribed_only = true;
	char *refname = imap_arg_astring(ref) != NULL ? imap_mailbox_name(s, ref) : NULL;
	if (refname == NULL) {
		imap_reply(j->out, "%s BAD Invalid reference", j->tag);
		return;
	}
	/* the patterns: one, or a parenthesised list (LIST-EXTENDED) */
	const struct imap_arg *plist = pats;
	size_t npat = 1;
	if (pats->type == IMAP_ARG_LIST) {
		if (o.lsub) {
			free(refname);
			imap_reply(j->out, "%s BAD Syntax: LSUB reference mailbox", j->tag);
			return;
		}
		plist = pats->list;
		npat = pats->nlist;
	}
	char **patterns = xcalloc(npat + 1, sizeof(char *));
	bool empty_only = false;
	for (size_t i = 0; i < npat; i++) {
		char *p = imap_mailbox_name(s, &plist[i]);
		if (p == NULL) {
			for (size_t k = 0; k < i; k++)
				free(patterns[k]);
			free(patterns);
			free(refname);
			imap_reply(j->out, "%s BAD Invalid mailbox pattern", j->tag);
			return;
		}
		if (*p == '\0' && npat == 1)
			empty_only = true;
		patterns[i] = *refname != '\0' && *p != '\0'
				      ? xasprintf("%s%s%s", refname,
						  refname[strlen(refname) - 1] == '/' ? "" : "/", p)
				      : xstrdup(*p != '\0' ? p : refname);
		free(p);
	}
	if (empty_only) {
		/* LIST "" "": the hierarchy delimiter and root */
		imap_reply(j->out, "* %s (\\Noselect) \"/\" \"\"", o.lsub ? "LSUB" : "LIST");
	} else {
		struct mbox_folder *fl = NULL;
		size_t nf = 0;
		char *err = NULL;
		if (mbox_folders(s->acct, &fl, &nf, &err) < 0) {
			for (size_t k = 0; k < npat; k++)
				free(patterns[k]);
			free(patterns);
			free(refname);
			imap_store_error(j, "list", err);
			return;
		}
		for (size_t i = 0; i < nf; i++) {
			const struct mbox_folder *f = &fl[i];
			bool match = false;
			for (size_t k = 0; k < npat && !match; k++)
				match = list_match(patterns[k], f->name);
			if (!match)
				continue;
			if (o.special_only && f->special == 0)
				continue;
			bool child_sub = false;
			if (o.subscribed_only && o.recursive) {
				size_t len = strlen(f->name);
				for (size_t k = 0; k < nf && !child_sub; k++)
					child_sub = fl[k].subscribed &&
						    strncmp(fl[k].name, f->name, len) == 0 &&
						    fl[k].name[len] == '/';
			}
			if (o.subscribed_only && !f->subscribed && !child_sub)
				continue;
			if (!o.subscribed_only && f->nonexistent && !f->has_children)
				continue; /* subscribed only, gone: shown only for SUBSCRIBED */
			list_one(j, &o, f, child_sub);
		}
		mbox_folders_free(&fl, nf);
	}
	for (size_t k = 0; k < npat; k++)
		free(patterns[k]);
	free(patterns);
	free(refname);
	sync_then_ok(j, o.lsub ? "LSUB completed" : "LIST completed");
}

void imap_cmd_namespace(struct imap_job *j)
{
	imap_reply(j->out, "* NAMESPACE ((\"\" \"/\")) NIL NIL");
	sync_then_ok(j, "NAMESPACE completed");
}

/* ------------------------------------------------------------------ */
/* STATUS */

static int write_status(struct imap_session *s, struct evbuffer *out, const char *name,
			const struct imap_arg *items, size_t nitems, char **err_r)
{
	struct mbox_status st;
	if (mbox_folder_status(s->acct, name, &st, err_r) < 0)
		return -1;
	evbuffer_add_printf(out, "* STATUS ");
	imap_write_mailbox(s, out, name);
	evbuffer_add_printf(out, " (");
	for (size_t i = 0; i < nitems; i++) {
		const char *sep = i > 0 ? " " : "";
		const struct imap_arg *it = &items[i];
		if (imap_arg_atom_eq(it, "MESSAGES"))
			evbuffer_add_printf(out, "%sMESSAGES %u", sep, st.messages);
		else if (imap_arg_atom_eq(it, "UIDNEXT"))
			evbuffer_add_printf(out, "%sUIDNEXT %u", sep, st.uidnext);
		else if (imap_arg_atom_eq(it, "UIDVALIDITY"))
			evbuffer_add_printf(out, "%sUIDVALIDITY %u", sep, st.uidvalidity);
		else if (imap_arg_atom_eq(it, "UNSEEN"))
			evbuffer_add_printf(out, "%sUNSEEN %u", sep, st.unseen);
		else if (imap_arg_atom_eq(it, "DELETED"))
			evbuffer_add_printf(out, "%sDELETED %u", sep, st.deleted);
		else if (imap_arg_atom_eq(it, "SIZE"))
			evbuffer_add_printf(out, "%sSIZE %llu", sep, (unsigned long long)st.size);
		else if (imap_arg_atom_eq(it, "RECENT"))
			evbuffer_add_printf(out, "%sRECENT %u", sep, st.recent);
		else if (imap_arg_atom_eq(it, "HIGHESTMODSEQ"))
			evbuffer_add_printf(out, "%sHIGHESTMODSEQ %llu", sep,
					    (unsigned long long)st.highestmodseq);
	}
	evbuffer_add(out, ")\r\n", 3);
	return 0;
}

static bool status_items_valid(const struct imap_arg *a)
{
	static const char *const known[] = {"MESSAGES", "UIDNEXT", "UIDVALIDITY",  "UNSEEN",
					    "DELETED",  "SIZE",    "RECENT", "HIGHESTMODSEQ"};
	if (a->type != IMAP_ARG_LIST || a->nlist == 0)
		return false;
	for (size_t i = 0; i < a->nlist; i++) {
		bool ok = false;
		for (size_t k = 0; k < sizeof(known) / sizeof(known[0]) && !ok; k++)
			ok = imap_arg_atom_eq(&a->list[i], known[k]);
		if (!ok)
			return false;
	}
	return true;
}

void imap_cmd_status(struct imap_job *j)
{
	struct imap_session *s = j->s;
	if (j->nargs != 2 || !status_items_valid(&j->args[1])) {
		imap_reply(j->out, "%s BAD Syntax: STATUS mailbox (items)", j->tag);
		return;
	}
	char *name = imap_mailbox_name(s, &j->args[0]);
	if (name == NULL) {
		imap_reply(j->out, "%s BAD Invalid mailbox name", j->tag);
		return;
	}
	for (size_t i = 0; i < j->args[1].nlist; i++)
		if (imap_arg_atom_eq(&j->args[1].list[i], "HIGHESTMODSEQ"))
			s->condstore = true;
	char *err = NULL;
	if (write_status(s, j->out, name, j->args[1].list, j->args[1].nlist, &err) < 0)
		imap_store_error(j, "status", err);
	else
		sync_then_ok(j, "STATUS completed");
	free(name);
}

/* ------------------------------------------------------------------ */
/* APPEND */

/* RFC 9051 date-time: "dd-Mon-yyyy hh:mm:ss +zzzz" (day may be " d"). */
static int parse_date_time(const char *s, int64_t *t_r)
{
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	int day, year, hh, mm, ss, zone;
	char mon[4], sign;
	if (strlen(s) != 26)
		return -1;
	if (sscanf(s, "%2d-%3s-%4d %2d:%2d:%2d %c%4d", &day, mon, &year, &hh, &mm, &ss, &sign,
		   &zone) != 8)
		return -1;
	if (sign != '+' && sign != '-')
		return -1;
	const char *m = NULL;
	for (int i = 0; i < 12; i++)
		if (strncasecmp(months + 3 * i, mon, 3) == 0)
			m = months + 3 * i;
	if (m == NULL || day < 1 || day > 31 || year < 1900 || hh > 23 || mm > 59 || ss > 60 ||
	    zone % 100 > 59)
		return -1;
	struct tm tm = {.tm_mday = day,
			.tm_mon = (int)((m - months) / 3),
			.tm_year = year - 1900,
			.tm_hour = hh,
			.tm_min = mm,
			.tm_sec = ss};
	time_t t = timegm(&tm);
	int off = (zone / 100) * 3600 + (zone % 100) * 60;
	*t_r = (int64_t)t - (sign == '+' ? off : -off);
	return 0;
}

void imap_cmd_append(struct imap_job *j)
{
	struct imap_session *s = j->s;
	if (j->nargs < 2) {
		imap_reply(j->out, "%s BAD Syntax: APPEND mailbox [(flags)] [date-time] literal",
			   j->tag);
		return;
	}
	char *name = imap_mailbox_name(s, &j->args[0]);
	if (name == NULL) {
		imap_reply(j->out, "%s BAD Invalid mailbox name", j->tag);
		return;
	}
	/* one or more (MULTIAPPEND) groups: [flags] [date-time] literal */
	size_t cap = 4, n = 0;
	struct mbox_append *msgs = xcalloc(cap, sizeof(*msgs));
	const char ***kwnames = xcalloc(cap, sizeof(*kwnames));
	const char *bad = NULL;
	for (size_t i = 1; i < j->nargs && bad == NULL;) {
		struct mbox_append m = {0};
		const char **names = NULL;
		size_t nnames = 0;
		if (j->args[i].type == IMAP_ARG_LIST) {
			uint32_t kw;
			if (imap_parse_flags(s, &j->args[i], &m.flags, &kw, &names, &nnames, &bad) < 0)
				break;
			i++;
		}
		if (i < j->nargs && j->args[i].type == IMAP_ARG_STRING) {
			if (parse_date_time(j->args[i].str, &m.internaldate) < 0) {
				bad = "Invalid date-time";
				free(names);
				break;
			}
			i++;
		}
		if (i >= j->nargs || j->args[i].type != IMAP_ARG_LITERAL) {
			bad = "Expected a message literal";
			free(names);
			break;
		}
		m.data = j->args[i].str;
		m.len = j->args[i].len;
		m.keywords = names;
		m.nkeywords = nnames;
		i++;
		if (m.len == 0) {
			free(names);
			bad = "Empty message";
			break;
		}
		if (n == cap) {
			cap *= 2;
			msgs = xrealloc(msgs, cap * sizeof(*msgs));
			kwnames = xrealloc(kwnames, cap * sizeof(*kwnames));
		}
		kwnames[n] = names;
		msgs[n++] = m;
	}
	if (bad != NULL) {
		imap_reply(j->out, "%s BAD %s", j->tag, bad);
	} else {
		uint32_t uidvalidity = 0;
		uint32_t *uids = xcalloc(n, sizeof(uint32_t));
		char *err = NULL;
		if (mbox_append(s->acct, name, msgs, n, &uidvalidity, uids, &err) < 0) {
			if (errno == ENOENT) {
				imap_reply(j->out, "%s NO [TRYCREATE] Mailbox does not exist", j->tag);
				free(err);
			} else {
				imap_store_error(j, "append", err);
			}
		} else {
			log_info("event=imap_append user=%s folder=\"%s\" messages=%zu", s->user,
				 name, n);
			imap_view_sync(s, j->out, j->expunge_ok);
			char *set = imap_seqset_format(uids, n);
			imap_reply(j->out, "%s OK [APPENDUID %u %s] APPEND completed", j->tag,
				   uidvalidity, set);
			free(set);
		}
		free(uids);
	}
	for (size_t i = 0; i < n; i++)
		free(kwnames[i]);
	free(kwnames);
	free(msgs);
	free(name);
}

/* ------------------------------------------------------------------ */
/* QUOTA (RFC 9208): one root "" per account, STORAGE in KiB */

void imap_cmd_getquota(struct imap_job *j)
{
	struct imap_session *s = j->s;
	bool root = strcmp(j->name, "GETQUOTAROOT") == 0;
	if (j->nargs != 1 || imap_arg_astring(&j->args[0]) == NULL) {
		imap_reply(j->out, "%s BAD Syntax: %s %s", j->tag, j->name,
			   root ? "mailbox" : "root");
		return;
	}
	if (!root && *imap_arg_astring(&j->args[0]) != '\0') {
		imap_reply(j->out, "%s NO [NONEXISTENT] No such quota root", j->tag);
		return;
	}
	uint64_t used, limit;
	char *err = NULL;
	if (mbox_quota(s->acct, &used, &limit, &err) < 0) {
		imap_store_error(j, "quota", err);
		return;
	}
	if (root) {
		char *name = imap_mailbox_name(s, &j->args[0]);
		if (name == NULL) {
			imap_reply(j->out, "%s BAD Invalid mailbox name", j->tag);
			return;
		}
		evbuffer_add_printf(j->out, "* QUOTAROOT ");
		imap_write_mailbox(s, j->out, name);
		evbuffer_add_printf(j->out, " \"\"\r\n");
		free(name);
	}
	if (limit > 0)
		imap_reply(j->out, "* QUOTA \"\" (STORAGE %llu %llu)",
			   (unsigned long long)(used / 1024), (unsigned long long)(limit / 1024));
	else
		imap_reply(j->out, "* QUOTA \"\" ()");
	sync_then_ok(j, root ? "GETQUOTAROOT completed" : "GETQUOTA completed");
}

/* NOOP, CHECK, and the IDLE wake-ups (no tag) */
void imap_cmd_noop(struct imap_job *j)
{
	imap_view_sync(j->s, j->out, true);
	if (j->tag != NULL)
		imap_reply(j->out, "%s OK %s completed", j->tag, j->name);
}

/*
 * RFC 5256 SORT and THREAD. Every traversal of the thread forest is
 * iterative (a hostile mailbox can hold a reply chain 100,000 deep), and
 * the loop check that linking needs is bounded by IMAP_THREAD_MAX_DEPTH.
 */
#include "imap/imap_sort.h"

#include "imap/imap_search.h"
#include "lib/xalloc.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- base subject (RFC 5256 2.1) ---- */

static bool is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* subj-blob = "[" *BLOBCHAR "]" *WSP; returns its length or 0 */
static size_t blob_len(const char *s)
{
	if (s[0] != '[')
		return 0;
	size_t i = 1;
	while (s[i] != '\0' && s[i] != '[' && s[i] != ']')
		i++;
	if (s[i] != ']')
		return 0;
	i++;
	while (is_wsp(s[i]))
		i++;
	return i;
}

/* subj-leader = (*subj-blob subj-refwd) / WSP; returns its length or 0 */
static size_t leader_len(const char *s, bool *reply)
{
	if (is_wsp(s[0]))
		return 1;
	size_t i = 0, b;
	while ((b = blob_len(s + i)) > 0)
		i += b;
	/* subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":" */
	if (strncasecmp(s + i, "re", 2) == 0)
		i += 2;
	else if (strncasecmp(s + i, "fwd", 3) == 0)
		i += 3;
	else if (strncasecmp(s + i, "fw", 2) == 0)
		i += 2;
	else
		return 0;
	while (is_wsp(s[i]))
		i++;
	i += blob_len(s + i);
	if (s[i] != ':')
		return 0;
	*reply = true;
	return i + 1;
}

static bool has_nonwsp(const char *s)
{
	for (; *s; s++)
		if (!is_wsp(*s))
			return true;
	return false;
}

char *imap_base_subject(const char *subject, bool *reply_r)
{
	bool reply = false;
	/* (1) tabs and line breaks become spaces, runs of spaces one space */
	size_t len = subject != NULL ? strlen(subject) : 0;
	char *s = xmalloc(len + 1);
	size_t n = 0;
	for (size_t i = 0; i < len; i++) {
		char c = subject[i];
		if (c == '\t' || c == '\r' || c == '\n')
			c = ' ';
		if (c == ' ' && n > 0 && s[n - 1] == ' ')
			continue;
		s[n++] = c;
	}
	s[n] = '\0';
	char *start = s;
	for (;;) {
		/* (2) subj-trailer = "(fwd)" / WSP, repeatedly */
		for (;;) {
			size_t l = strlen(start);
			if (l > 0 && is_wsp(start[l - 1])) {
				start[l - 1] = '\0';
			} else if (l >= 5 && strcasecmp(start + l - 5, "(fwd)") == 0) {
				start[l - 5] = '\0';
				reply = true;
			} else {
				break;
			}
		}
		/* (3) leaders and (4) a blob that leaves something, until neither applies */
		for (;;) {
			size_t l = leader_len(start, &reply);
			if (l > 0) {
				start += l;
				continue;
			}
			size_t b = blob_len(start);
			if (b > 0 && has_nonwsp(start + b)) {
				start += b;
				continue;
			}
			break;
		}
		/* (6) subj-fwd-hdr "[fwd:" ... subj-fwd-trl "]" */
		size_t l = strlen(start);
		if (l >= 6 && strncasecmp(start, "[fwd:", 5) == 0 && start[l - 1] == ']') {
			start[l - 1] = '\0';
			start += 5;
			reply = true;
			continue;
		}
		break;
	}
	char *out = xstrdup(start);
	free(s);
	if (reply_r != NULL)
		*reply_r = reply;
	return out;
}

/* ---- SORT ---- */

void imap_sort_msg_fill(struct imap_sort_msg *m_r, uint32_t msn, const struct mbox_msg *msg,
			const struct mbox_cache *c)
{
	memset(m_r, 0, sizeof(*m_r));
	m_r->msn = msn;
	m_r->uid = msg->uid;
	m_r->size = msg->size;
	m_r->arrival = msg->internaldate;
	if (c == NULL)
		return;
	m_r->date = c->date;
	m_r->subject = c->subject;
	m_r->from = c->sort_from;
	m_r->to = c->sort_to;
	m_r->cc = c->sort_cc;
	m_r->display_from = c->display_from;
	m_r->display_to = c->display_to;
	m_r->message_id = c->message_id;
	m_r->in_reply_to = c->in_reply_to;
	m_r->references = c->references;
}

int imap_sort_parse(const struct imap_arg *list, struct imap_sort_program *prog_r,
		    const char **error_r)
{
	static const struct {
		const char *name;
		enum imap_sort_key key;
	} keys[] = {
		{"ARRIVAL", IMAP_SORT_ARRIVAL},
		{"CC", IMAP_SORT_CC},
		{"DATE", IMAP_SORT_DATE},
		{"FROM", IMAP_SORT_FROM},
		{"SIZE", IMAP_SORT_SIZE},
		{"SUBJECT", IMAP_SORT_SUBJECT},
		{"TO", IMAP_SORT_TO},
		{"DISPLAYFROM", IMAP_SORT_DISPLAYFROM},
		{"DISPLAYTO", IMAP_SORT_DISPLAYTO},
	};
	memset(prog_r, 0, sizeof(*prog_r));
	if (list == NULL || list->type != IMAP_ARG_LIST || list->nlist == 0) {
		*error_r = "Invalid sort criteria";
		return -1;
	}
	bool reverse = false;
	for (size_t i = 0; i < list->nlist; i++) {
		const struct imap_arg *a = &list->list[i];
		if (imap_arg_atom_eq(a, "REVERSE")) {
			if (reverse)
				goto bad;
			reverse = true;
			continue;
		}
		size_t k;
		for (k = 0; k < ARRAY_SIZE(keys); k++)
			if (imap_arg_atom_eq(a, keys[k].name))
				break;
		if (k == ARRAY_SIZE(keys))
			goto bad;
		if (prog_r->n >= IMAP_SORT_MAX_CRITERIA) {
			*error_r = "Too many sort criteria";
			return -1;
		}
		prog_r->crit[prog_r->n].key = keys[k].key;
		prog_r->crit[prog_r->n].reverse = reverse;
		prog_r->n++;
		reverse = false;
	}
	if (!reverse)
		return 0;
bad:
	*error_r = "Invalid sort criteria";
	return -1;
}

/*
 * What qsort moves: a small entry per message (the messages themselves are
 * ~120 bytes; 100,000 of them copied through a merge sort were a good part of
 * SORT's time). Numeric keys are read from the message; string keys are
 * casemapped once, before sorting.
 */
struct sort_entry {
	int64_t key0; /* the first criterion when it is numeric */
	uint32_t idx; /* into msgs */
	char **str;   /* casemapped string keys by criterion, NULL without any */
};

struct sort_ctx {
	const struct imap_sort_program *prog;
	const struct imap_sort_msg *msgs;
};

static int64_t sent_date(const struct imap_sort_msg *m)
{
	return m->date != 0 ? m->date : m->arrival;
}

static int cmp_u64(uint64_t a, uint64_t b)
{
	return a < b ? -1 : a > b;
}

static int cmp_i64(int64_t a, int64_t b)
{
	return a < b ? -1 : a > b;
}

static bool key_numeric(enum imap_sort_key key)
{
	return key == IMAP_SORT_ARRIVAL || key == IMAP_SORT_DATE || key == IMAP_SORT_SIZE;
}

static int64_t numeric_key(const struct imap_sort_msg *m, enum imap_sort_key key)
{
	switch (key) {
	case IMAP_SORT_ARRIVAL:
		return m->arrival;
	case IMAP_SORT_DATE:
		return sent_date(m);
	default:
		return m->size > INT64_MAX ? INT64_MAX : (int64_t)m->size;
	}
}

static int sort_cmp(const void *pa, const void *pb, void *arg)
{
	const struct sort_ctx *ctx = arg;
	const struct imap_sort_program *prog = ctx->prog;
	const struct sort_entry *a = pa, *b = pb;
	const struct imap_sort_msg *ma = &ctx->msgs[a->idx], *mb = &ctx->msgs[b->idx];
	for (size_t i = 0; i < prog->n; i++) {
		enum imap_sort_key key = prog->crit[i].key;
		int r;
		if (i == 0 && key_numeric(key))
			r = cmp_i64(a->key0, b->key0);
		else if (key_numeric(key))
			r = cmp_i64(numeric_key(ma, key), numeric_key(mb, key));
		else
			r = strcmp(a->str[i], b->str[i]);
		if (r != 0)
			return prog->crit[i].reverse ? -r : r;
	}
	return cmp_u64(ma->uid, mb->uid);
}

static const char *sort_string(const struct imap_sort_msg *m, enum imap_sort_key key)
{
	switch (key) {
	case IMAP_SORT_CC:
		return m->cc;
	case IMAP_SORT_FROM:
		return m->from;
	case IMAP_SORT_TO:
		return m->to;
	case IMAP_SORT_DISPLAYFROM:
		return m->display_from;
	case IMAP_SORT_DISPLAYTO:
		return m->display_to;
	default:
		return NULL;
	}
}

/*
 * Put msgs in the order order[] gives (position j takes the message order[j]
 * names), in place, cycle by cycle (order[] marks the places already filled).
 */
static void apply_order(struct imap_sort_msg *msgs, uint32_t *order, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (order[i] == i)
			continue;
		struct imap_sort_msg tmp = msgs[i];
		size_t j = i;
		for (;;) {
			size_t k = order[j];
			order[j] = (uint32_t)j;
			if (k == i) {
				msgs[j] = tmp;
				break;
			}
			msgs[j] = msgs[k];
			j = k;
		}
	}
}

/*
 * One stable LSD radix sort of the permutation *perm (n message indexes) by
 * key[message], a byte at a time; bytes that are the same in every key (the
 * high ones of dates and sizes) cost one counting pass and no move.
 */
static void radix_by(uint32_t **perm, uint32_t **tmp, const uint64_t *key, size_t n)
{
	size_t count[8][256];
	memset(count, 0, sizeof(count));
	for (size_t i = 0; i < n; i++)
		for (unsigned b = 0; b < 8; b++)
			count[b][(key[i] >> (8 * b)) & 0xff]++;
	for (unsigned b = 0; b < 8; b++) {
		if (count[b][(key[0] >> (8 * b)) & 0xff] == n)
			continue;
		size_t sum = 0;
		for (unsigned v = 0; v < 256; v++) {
			size_t c = count[b][v];
			count[b][v] = sum;
			sum += c;
		}
		uint32_t *in = *perm, *out = *tmp;
		for (size_t i = 0; i < n; i++)
			out[count[b][(key[in[i]] >> (8 * b)) & 0xff]++] = in[i];
		*tmp = in;
		*perm = out;
	}
}

/*
 * A sort on numeric keys alone (SORT (DATE), (REVERSE ARRIVAL), (SIZE DATE)):
 * radix passes from the last criterion to the first over a stable order by
 * UID, which gives the order of sort_cmp() without its 1.7 million calls for
 * 100,000 messages. A key becomes unsigned with its sign bit flipped, and
 * REVERSE inverts it (ties stay by ascending UID, as in sort_cmp()).
 */
static void sort_numeric(const struct imap_sort_program *prog, struct imap_sort_msg *msgs, size_t n)
{
	uint32_t *perm = xmalloc(n * sizeof(*perm)), *tmp = xmalloc(n * sizeof(*tmp));
	uint64_t *key = xmalloc(n * sizeof(*key));
	bool by_uid = true;
	for (size_t i = 0; i < n; i++) {
		perm[i] = (uint32_t)i;
		key[i] = msgs[i].uid;
		if (i > 0 && msgs[i].uid < msgs[i - 1].uid)
			by_uid = false;
	}
	if (!by_uid)
		radix_by(&perm, &tmp, key, n);
	for (size_t c = prog->n; c-- > 0;) {
		for (size_t i = 0; i < n; i++) {
			uint64_t u = (uint64_t)numeric_key(&msgs[i], prog->crit[c].key) ^
			             (UINT64_C(1) << 63);
			key[i] = prog->crit[c].reverse ? ~u : u;
		}
		radix_by(&perm, &tmp, key, n);
	}
	free(key);
	free(tmp);
	apply_order(msgs, perm, n);
	free(perm);
}

void imap_sort(const struct imap_sort_program *prog, struct imap_sort_msg *msgs, size_t n)
{
	if (n < 2)
		return;
	bool strings = false;
	for (size_t c = 0; c < prog->n; c++)
		strings |= !key_numeric(prog->crit[c].key);
	if (!strings && n <= UINT32_MAX) {
		sort_numeric(prog, msgs, n);
		return;
	}
	struct sort_entry *e = xmalloc(n * sizeof(*e));
	for (size_t i = 0; i < n; i++) {
		e[i].idx = (uint32_t)i;
		e[i].key0 = prog->n > 0 && key_numeric(prog->crit[0].key)
				    ? numeric_key(&msgs[i], prog->crit[0].key)
				    : 0;
		e[i].str = strings ? xcalloc(prog->n, sizeof(char *)) : NULL;
		for (size_t c = 0; strings && c < prog->n; c++) {
			enum imap_sort_key key = prog->crit[c].key;
			if (key_numeric(key))
				continue;
			if (key == IMAP_SORT_SUBJECT) {
				char *base = imap_base_subject(msgs[i].subject, NULL);
				e[i].str[c] = imap_casemap(base, strlen(base));
				free(base);
			} else {
				const char *v = sort_string(&msgs[i], key);
				e[i].str[c] = imap_casemap(v != NULL ? v : "", v != NULL ? strlen(v) : 0);
			}
		}
	}
	struct sort_ctx ctx = {.prog = prog, .msgs = msgs};
	qsort_r(e, n, sizeof(*e), sort_cmp, &ctx);
	/* put the messages in that order in place, cycle by cycle: position j takes
	   the message e[j].idx names (order[] marks the places already filled) */
	uint32_t *order = xmalloc(n * sizeof(*order));
	for (size_t i = 0; i < n; i++) {
		order[i] = e[i].idx;
		for (size_t c = 0; e[i].str != NULL && c < prog->n; c++)
			free(e[i].str[c]);
		free(e[i].str);
	}
	free(e);
	apply_order(msgs, order, n);
	free(order);
}

/* ---- THREAD ---- */

int imap_thread_alg_parse(const char *name, enum imap_thread_alg *alg_r)
{
	if (strcasecmp(name, "ORDEREDSUBJECT") == 0)
		*alg_r = IMAP_THREAD_ORDEREDSUBJECT;
	else if (strcasecmp(name, "REFERENCES") == 0)
		*alg_r = IMAP_THREAD_REFERENCES;
	else
		return -1;
	return 0;
}

#define NONE (-1)
#define ROOT 0 /* the container that holds the root set */

struct cont {
	int msg; /* index into msgs, NONE for a dummy */
	int parent, first, last, prev, next;
	int nchildren;
};

struct forest {
	struct cont *c;
	size_t n, cap;
	const struct imap_sort_msg *msgs;
	bool by_uid;
};

static int new_cont(struct forest *f, int msg)
{
	f->c = xgrow(f->c, &f->cap, f->n + 1, sizeof(*f->c));
	struct cont *c = &f->c[f->n];
	c->msg = msg;
	c->parent = c->first = c->last = c->prev = c->next = NONE;
	c->nchildren = 0;
	return (int)f->n++;
}

static void unlink_cont(struct forest *f, int x)
{
	struct cont *c = &f->c[x];
	if (c->parent == NONE)
		return;
	struct cont *p = &f->c[c->parent];
	if (c->prev != NONE)
		f->c[c->prev].next = c->next;
	else
		p->first = c->next;
	if (c->next != NONE)
		f->c[c->next].prev = c->prev;
	else
		p->last = c->prev;
	p->nchildren--;
	c->parent = c->prev = c->next = NONE;
}

/* Append x to the children of p (x must be unlinked). */
static void append_child(struct forest *f, int p, int x)
{
	struct cont *c = &f->c[x], *pc = &f->c[p];
	c->parent = p;
	c->prev = pc->last;
	c->next = NONE;
	if (pc->last != NONE)
		f->c[pc->last].next = x;
	else
		pc->first = x;
	pc->last = x;
	pc->nchildren++;
}

/* Insert x (unlinked) before sibling `before` under the same parent. */
static void insert_before(struct forest *f, int before, int x)
{
	struct cont *b = &f->c[before], *c = &f->c[x];
	int p = b->parent;
	c->parent = p;
	c->next = before;
	c->prev = b->prev;
	if (b->prev != NONE)
		f->c[b->prev].next = x;
	else
		f->c[p].first = x;
	b->prev = x;
	f->c[p].nchildren++;
}

/* Would making x a child of p create a loop? Bounded walk up from p. */
static bool would_loop(struct forest *f, int p, int x)
{
	int depth = 0;
	for (int a = p; a != NONE; a = f->c[a].parent) {
		if (a == x || ++depth > IMAP_THREAD_MAX_DEPTH)
			return true;
	}
	return false;
}

/* Post-order list of the containers under ROOT, ROOT last; iterative. */
static int *post_order(struct forest *f, size_t *n_r)
{
	int *out = xmalloc(f->n * sizeof(*out));
	int *stack = xmalloc(f->n * sizeof(*stack));
	bool *expanded = xcalloc(f->n, sizeof(*expanded));
	size_t n = 0, sp = 0;
	stack[sp++] = ROOT;
	while (sp > 0) {
		int x = stack[sp - 1];
		if (!expanded[x]) {
			expanded[x] = true;
			for (int k = f->c[x].last; k != NONE; k = f->c[k].prev)
				stack[sp++] = k;
			continue;
		}
		sp--;
		out[n++] = x;
	}
	free(stack);
	free(expanded);
	*n_r = n;
	return out;
}

struct sib {
	int64_t date;
	uint32_t seq;
	int x;
};

static int sib_cmp(const void *pa, const void *pb)
{
	const struct sib *a = pa, *b = pb;
	if (a->date != b->date)
		return a->date < b->date ? -1 : 1;
	return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* The message that stands for x in date order: itself, or a dummy's first child. */
static int rep_msg(struct forest *f, int x)
{
	for (int guard = 0; x != NONE && f->c[x].msg == NONE && guard < 1000000; guard++)
		x = f->c[x].first;
	return x == NONE ? NONE : f->c[x].msg;
}

/* RFC 5256 2.2 sent date, and sequence order on ties; every level, children first. */
static void sort_siblings(struct forest *f, bool root_only)
{
	size_t n;
	int *order;
	int root_order[1] = {ROOT};
	if (root_only) {
		order = root_order;
		n = 1;
	} else {
		order = post_order(f, &n);
	}
	struct sib *s = NULL;
	size_t cap = 0;
	for (size_t i = 0; i < n; i++) {
		int p = order[i];
		if (f->c[p].nchildren < 2)
			continue;
		size_t k = 0;
		s = xgrow(s, &cap, (size_t)f->c[p].nchildren, sizeof(*s));
		for (int x = f->c[p].first; x != NONE; x = f->c[x].next) {
			int m = rep_msg(f, x);
			s[k].date = m != NONE ? sent_date(&f->msgs[m]) : 0;
			s[k].seq = m != NONE ? f->msgs[m].msn : 0;
			s[k].x = x;
			k++;
		}
		qsort(s, k, sizeof(*s), sib_cmp);
		f->c[p].first = f->c[p].last = NONE;
		f->c[p].nchildren = 0;
		for (size_t j = 0; j < k; j++) {
			f->c[s[j].x].parent = NONE;
			append_child(f, p, s[j].x);
		}
	}
	free(s);
	if (!root_only)
		free(order);
}

/* ---- message-id table ---- */

struct idmap {
	char **keys;
	int *vals;
	size_t cap; /* power of two */
};

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

static void idmap_init(struct idmap *m, size_t n)
{
	m->cap = 16;
	while (m->cap < 2 * n + 16)
		m->cap *= 2;
	m->keys = xcalloc(m->cap, sizeof(*m->keys));
	m->vals = xcalloc(m->cap, sizeof(*m->vals));
}

/* The slot of key: its value if present, or the empty slot to fill. */
static size_t idmap_slot(struct idmap *m, const char *key)
{
	size_t i = hash_str(key) & (m->cap - 1);
	while (m->keys[i] != NULL && strcmp(m->keys[i], key) != 0)
		i = (i + 1) & (m->cap - 1);
	return i;
}

static void idmap_grow(struct idmap *m)
{
	struct idmap n;
	n.cap = m->cap * 2;
	n.keys = xcalloc(n.cap, sizeof(*n.keys));
	n.vals = xcalloc(n.cap, sizeof(*n.vals));
	for (size_t i = 0; i < m->cap; i++) {
		if (m->keys[i] == NULL)
			continue;
		size_t s = idmap_slot(&n, m->keys[i]);
		n.keys[s] = m->keys[i];
		n.vals[s] = m->vals[i];
	}
	free(m->keys);
	free(m->vals);
	*m = n;
}

static int idmap_get(struct idmap *m, const char *key)
{
	size_t s = idmap_slot(m, key);
	return m->keys[s] != NULL ? m->vals[s] : NONE;
}

static void idmap_set(struct idmap *m, const char *key, int val, size_t *count)
{
	size_t s = idmap_slot(m, key);
	if (m->keys[s] == NULL) {
		if (2 * (*count + 1) > m->cap) {
			idmap_grow(m);
			s = idmap_slot(m, key);
		}
		m->keys[s] = xstrdup(key);
		(*count)++;
	}
	m->vals[s] = val;
}

static void idmap_free(struct idmap *m)
{
	for (size_t i = 0; i < m->cap; i++)
		free(m->keys[i]);
	free(m->keys);
	free(m->vals);
}

/*
 * The msg-ids "<...>" of a header value, in order, without the brackets
 * and with whitespace removed; at most `max`. Returns the count; ids[]
 * strings are allocated.
 */
static size_t parse_msgids(const char *v, char **ids, size_t max)
{
	size_t n = 0;
	if (v == NULL)
		return 0;
	while (*v != '\0' && n < max) {
		const char *lt = strchr(v, '<');
		if (lt == NULL)
			break;
		const char *gt = strchr(lt + 1, '>');
		if (gt == NULL)
			break;
		char *id = xmalloc((size_t)(gt - lt));
		size_t k = 0;
		bool bad = false;
		for (const char *p = lt + 1; p < gt; p++) {
			if (*p == '<')
				bad = true;
			if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
				id[k++] = *p;
		}
		id[k] = '\0';
		if (k == 0 || bad)
			free(id);
		else
			ids[n++] = id;
		v = gt + 1;
	}
	return n;
}

static int id_container(struct forest *f, struct idmap *m, size_t *count, const char *id)
{
	int x = idmap_get(m, id);
	if (x == NONE) {
		x = new_cont(f, NONE);
		idmap_set(m, id, x, count);
	}
	return x;
}

/* RFC 5256 4 steps 1-4: link by references, gather the root set, prune dummies. */
static void thread_links(struct forest *f, size_t n)
{
	struct idmap map;
	size_t count = 0;
	idmap_init(&map, n);
	enum { MAX_REFS = 1000 };
	char **ids = xmalloc(MAX_REFS * sizeof(*ids));
	for (size_t i = 0; i < n; i++) {
		const struct imap_sort_msg *m = &f->msgs[i];
		/* (1.A) the message's own container; no or duplicate Message-ID: unique */
		char *own_id[1];
		int own = NONE;
		if (parse_msgids(m->message_id, own_id, 1) == 1) {
			int x = idmap_get(&map, own_id[0]);
			if (x == NONE) {
				own = new_cont(f, (int)i);
				idmap_set(&map, own_id[0], own, &count);
			} else if (f->c[x].msg == NONE) {
				own = x;
				f->c[x].msg = (int)i;
			}
			free(own_id[0]);
		}
		if (own == NONE)
			own = new_cont(f, (int)i);
		/* References, or else the first msg-id of In-Reply-To */
		size_t nref = parse_msgids(m->references, ids, MAX_REFS);
		if (nref == 0)
			nref = parse_msgids(m->in_reply_to, ids, 1);
		int prev = NONE;
		for (size_t r = 0; r < nref; r++) {
			int x = id_container(f, &map, &count, ids[r]);
			free(ids[r]);
			if (x == own)
				continue; /* a self-reference */
			/* keep existing links; never make a loop */
			if (prev != NONE && f->c[x].parent == NONE && !would_loop(f, prev, x))
				append_child(f, prev, x);
			prev = x;
		}
		/* (1.B) the last reference is the parent; the message's own view wins */
		if (prev != NONE && f->c[own].parent != prev && !would_loop(f, prev, own)) {
			unlink_cont(f, own);
			append_child(f, prev, own);
		} else if (prev == NONE) {
			unlink_cont(f, own);
		}
	}
	free(ids);
	idmap_free(&map);
	/* (2) the root set */
	for (size_t x = 1; x < f->n; x++)
		if (f->c[x].parent == NONE)
			append_child(f, ROOT, (int)x);
	/* (3) prune dummies, children first */
	size_t no;
	int *order = post_order(f, &no);
	for (size_t i = 0; i < no; i++) {
		int x = order[i];
		struct cont *c = &f->c[x];
		if (x == ROOT || c->msg != NONE)
			continue;
		if (c->nchildren == 0) {
			unlink_cont(f, x);
		} else if (c->parent != ROOT || c->nchildren == 1) {
			/* promote the children to the dummy's place */
			while (c->first != NONE) {
				int k = c->first;
				unlink_cont(f, k);
				insert_before(f, x, k);
			}
			unlink_cont(f, x);
		}
	}
	free(order);
}

/* RFC 5256 4 step 5: merge root-level threads with the same base subject. */
static void thread_subjects(struct forest *f)
{
	size_t n = (size_t)f->c[ROOT].nchildren;
	if (n == 0)
		return;
	/* base subject per root container (a dummy: its first child's) */
	int *roots = xmalloc(n * sizeof(*roots));
	char **subj = xcalloc(n, sizeof(*subj));
	bool *reply = xcalloc(n, sizeof(*reply));
	size_t k = 0;
	for (int x = f->c[ROOT].first; x != NONE; x = f->c[x].next)
		roots[k++] = x;
	struct idmap map;
	size_t count = 0;
	idmap_init(&map, n);
	for (size_t i = 0; i < n; i++) {
		int m = rep_msg(f, roots[i]);
		char *base = imap_base_subject(m != NONE ? f->msgs[m].subject : NULL, &reply[i]);
		subj[i] = imap_casemap(base, strlen(base));
		free(base);
	}
	/* (B) one container per subject: prefer a dummy, then a non-reply */
	for (size_t i = 0; i < n; i++) {
		if (subj[i][0] == '\0')
			continue;
		int t = idmap_get(&map, subj[i]);
		if (t == NONE) {
			idmap_set(&map, subj[i], (int)i, &count);
			continue;
		}
		bool cur_dummy = f->c[roots[i]].msg == NONE;
		bool tab_dummy = f->c[roots[t]].msg == NONE;
		if (!tab_dummy && (cur_dummy || (reply[t] && !reply[i])))
			idmap_set(&map, subj[i], (int)i, &count);
	}
	/* (C) merge; the table holds indexes into roots[], whose entries may become new dummies */
	for (size_t i = 0; i < n; i++) {
		if (subj[i][0] == '\0')
			continue;
		int t = idmap_get(&map, subj[i]);
		if (t == (int)i)
			continue;
		int cur = roots[i], tab = roots[t];
		bool cur_dummy = f->c[cur].msg == NONE;
		bool tab_dummy = f->c[tab].msg == NONE;
		if (cur_dummy && tab_dummy) {
			while (f->c[cur].first != NONE) {
				int c = f->c[cur].first;
				unlink_cont(f, c);
				append_child(f, tab, c);
			}
			unlink_cont(f, cur);
		} else if (tab_dummy || (reply[i] && !reply[t] && !cur_dummy)) {
			unlink_cont(f, cur);
			append_child(f, tab, cur);
		} else {
			int d = new_cont(f, NONE);
			insert_before(f, tab, d);
			unlink_cont(f, tab);
			unlink_cont(f, cur);
			append_child(f, d, tab);
			append_child(f, d, cur);
			roots[t] = d;
			reply[t] = false;
		}
	}
	idmap_free(&map);
	for (size_t i = 0; i < n; i++)
		free(subj[i]);
	free(subj);
	free(reply);
	free(roots);
}

/* RFC 5256 3: ORDEREDSUBJECT. */
struct os_entry {
	char *subj;
	int64_t date;
	uint32_t seq;
	int idx;
};

static int os_cmp(const void *pa, const void *pb)
{
	const struct os_entry *a = pa, *b = pb;
	int r = strcmp(a->subj, b->subj);
	if (r != 0)
		return r;
	if (a->date != b->date)
		return a->date < b->date ? -1 : 1;
	return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static void thread_orderedsubject(struct forest *f, size_t n)
{
	struct os_entry *e = xmalloc((n ? n : 1) * sizeof(*e));
	for (size_t i = 0; i < n; i++) {
		char *base = imap_base_subject(f->msgs[i].subject, NULL);
		e[i].subj = imap_casemap(base, strlen(base));
		free(base);
		e[i].date = sent_date(&f->msgs[i]);
		e[i].seq = f->msgs[i].msn;
		e[i].idx = (int)i;
	}
	qsort(e, n, sizeof(*e), os_cmp);
	int parent = NONE;
	for (size_t i = 0; i < n; i++) {
		int x = new_cont(f, e[i].idx);
		if (i > 0 && strcmp(e[i].subj, e[i - 1].subj) == 0) {
			append_child(f, parent, x);
		} else {
			append_child(f, ROOT, x);
			parent = x;
		}
	}
	for (size_t i = 0; i < n; i++)
		free(e[i].subj);
	free(e);
	/* threads by the sent date of their first message */
	sort_siblings(f, true);
}

struct out {
	char *s;
	size_t len, cap;
};

static void out_add(struct out *o, const char *s, size_t n)
{
	o->s = xgrow(o->s, &o->cap, o->len + n + 1, 1);
	memcpy(o->s + o->len, s, n);
	o->len += n;
	o->s[o->len] = '\0';
}

/* RFC 5256 4 "thread-list": iterative, so any depth is fine. */
static char *format_forest(struct forest *f)
{
	struct out o = {0};
	out_add(&o, "", 0);
	/* tokens: >= 0 a container to print, -1 "(", -2 ")", -3 " " */
	enum { T_OPEN = -1, T_CLOSE = -2, T_SPACE = -3 };
	size_t cap = 0, sp = 0;
	int *stack = NULL;
#define PUSH(v)                                                                                    \
	do {                                                                                       \
		stack = xgrow(stack, &cap, sp + 1, sizeof(*stack));                                \
		stack[sp++] = (v);                                                                 \
	} while (0)
	for (int t = f->c[ROOT].last; t != NONE; t = f->c[t].prev) {
		PUSH(T_CLOSE);
		PUSH(t);
		PUSH(T_OPEN);
	}
	while (sp > 0) {
		int x = stack[--sp];
		if (x == T_OPEN) {
			out_add(&o, "(", 1);
			continue;
		}
		if (x == T_CLOSE) {
			out_add(&o, ")", 1);
			continue;
		}
		if (x == T_SPACE) {
			out_add(&o, " ", 1);
			continue;
		}
		struct cont *c = &f->c[x];
		if (c->msg != NONE) {
			char num[16];
			const struct imap_sort_msg *m = &f->msgs[c->msg];
			int w = snprintf(num, sizeof(num), "%u", f->by_uid ? m->uid : m->msn);
			out_add(&o, num, (size_t)w);
		}
		if (c->nchildren == 1 && c->msg != NONE) {
			PUSH(c->first);
			PUSH(T_SPACE);
		} else if (c->nchildren > 0) {
			for (int k = c->last; k != NONE; k = f->c[k].prev) {
				PUSH(T_CLOSE);
				PUSH(k);
				PUSH(T_OPEN);
			}
			if (c->msg != NONE)
				PUSH(T_SPACE);
		}
	}
#undef PUSH
	free(stack);
	return o.s;
}

char *imap_thread(enum imap_thread_alg alg, const struct imap_sort_msg *msgs, size_t n,
		  bool by_uid)
{
	struct forest f = {.msgs = msgs, .by_uid = by_uid};
	new_cont(&f, NONE); /* ROOT */
	if (alg == IMAP_THREAD_ORDEREDSUBJECT) {
		thread_orderedsubject(&f, n);
	} else {
		thread_links(&f, n);
		sort_siblings(&f, false); /* (4) */
		thread_subjects(&f);      /* (5) */
		sort_siblings(&f, false); /* (6) */
	}
	char *s = format_forest(&f);
	free(f.c);
	return s;
}

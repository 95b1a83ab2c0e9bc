/*
 * The event loop's resolver: libunbound lookups run on its background
 * thread; their answers come back through ub_fd, which a libevent event
 * watches, and ub_process() calls our callbacks on the loop thread.
 *
 * A dns_query is what a caller holds: one or more libunbound lookups
 * ("subs": AAAA and A for an address lookup; PTR then A/AAAA for FCrDNS),
 * one deadline timer, and the caller's callback. When the last sub of a
 * stage is in, the query either starts its next stage or finishes: it is
 * unlinked and freed, then the callback runs with the result. Cancelling
 * cancels every sub still in libunbound (ub_cancel guarantees its callback
 * will not run) and frees the query, so nothing can call back afterwards.
 *
 * Trusts: nothing in an answer beyond dns_rr_parse's length checks.
 */
#include "dns/dns-private.h"

#include "lib/log.h"
#include "lib/xalloc.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unbound.h>

enum query_kind { Q_SIMPLE, Q_ADDR, Q_FCRDNS };

struct dns_sub {
	struct dns_query *q;
	struct dns_sub *next; /* in start order */
	char *name;
	uint16_t qtype;
	bool active; /* in libunbound, callback pending */
	int async_id;
	struct dns_result *res; /* once in */
};

struct dns_query {
	struct dns_resolver *r;
	struct dns_query *prev, *next; /* resolver's list of live queries */
	enum query_kind kind;
	char *name;
	uint16_t qtype;
	struct event *deadline;
	struct event *defer; /* finishes a stage whose lookups all failed at once */
	struct dns_sub *subs, **subs_tail;
	unsigned active_subs;
	dns_callback *cb;
	dns_fcrdns_callback *fcb;
	void *arg;
	/* FCrDNS */
	int family;
	unsigned char addr[16];
	struct dns_result *ptr; /* stage 2 once set */
};

struct dns_resolver {
	struct event_base *base;
	struct ub_ctx *ctx;
	struct event *ev_fd;
	unsigned timeout_ms;
	struct dns_query *queries;
	unsigned pending;
};

static void query_step(struct dns_query *q, bool timed_out);

static void on_ub_fd(evutil_socket_t fd, short what, void *arg)
{
	struct dns_resolver *r = arg;
	int rc = ub_process(r->ctx);
	if (rc != 0)
		log_error("event=dns_process_failed error=\"%s\"", ub_strerror(rc));
}

struct dns_resolver *dns_resolver_new(struct event_base *base, const struct dns_options *opts,
				      const char **error_r)
{
	struct ub_ctx *ctx = dns_ctx_new(opts, error_r);
	if (ctx == NULL)
		return NULL;
	struct dns_resolver *r = xcalloc(1, sizeof(*r));
	r->base = base;
	r->ctx = ctx;
	r->timeout_ms = dns_timeout_ms(opts);
	r->ev_fd = event_new(base, ub_fd(ctx), EV_READ | EV_PERSIST, on_ub_fd, r);
	if (r->ev_fd == NULL || event_add(r->ev_fd, NULL) < 0)
		fatal("event=dns_event_failed");
	return r;
}

unsigned dns_resolver_pending(const struct dns_resolver *r)
{
	return r->pending;
}

/* Unlink and free a query; subs still in libunbound are cancelled first. */
static void query_free(struct dns_query *q)
{
	struct dns_resolver *r = q->r;

	for (struct dns_sub *s = q->subs, *next; s != NULL; s = next) {
		next = s->next;
		if (s->active)
			(void)ub_cancel(r->ctx, s->async_id);
		dns_result_free(&s->res);
		free(s->name);
		free(s);
	}
	if (q->prev != NULL)
		q->prev->next = q->next;
	else
		r->queries = q->next;
	if (q->next != NULL)
		q->next->prev = q->prev;
	r->pending--;
	event_free(q->deadline);
	event_free(q->defer);
	dns_result_free(&q->ptr);
	free(q->name);
	free(q);
}

void dns_resolver_free(struct dns_resolver **rp)
{
	struct dns_resolver *r = *rp;
	if (r == NULL)
		return;
	while (r->queries != NULL)
		query_free(r->queries);
	event_free(r->ev_fd);
	ub_ctx_delete(r->ctx);
	free(r);
	*rp = NULL;
}

void dns_cancel(struct dns_query **qp)
{
	if (*qp == NULL)
		return;
	query_free(*qp);
	*qp = NULL;
}

static void on_ub_answer(void *data, int err, struct ub_result *ub)
{
	struct dns_sub *s = data;
	struct dns_query *q = s->q;

	s->active = false;
	s->res = dns_result_from_ub(s->name, s->qtype, err, ub);
	if (--q->active_subs == 0)
		query_step(q, false);
}

static void sub_start(struct dns_query *q, const char *name, uint16_t qtype)
{
	struct dns_sub *s = xcalloc(1, sizeof(*s));
	s->q = q;
	s->name = xstrdup(name);
	s->qtype = qtype;
	*q->subs_tail = s;
	q->subs_tail = &s->next;
	int rc = ub_resolve_async(q->r->ctx, name, qtype, 1 /* IN */, s, on_ub_answer, &s->async_id);
	if (rc != 0) {
		s->res = dns_result_fail(name, qtype, DNS_SERVFAIL, ub_strerror(rc));
		return;
	}
	s->active = true;
	q->active_subs++;
}

/* After starting a stage: if every lookup failed at once, finish it from the loop. */
static void stage_started(struct dns_query *q)
{
	if (q->active_subs == 0)
		event_active(q->defer, EV_TIMEOUT, 0);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct dns_query *q = arg;

	for (struct dns_sub *s = q->subs; s != NULL; s = s->next) {
		if (!s->active)
			continue;
		(void)ub_cancel(q->r->ctx, s->async_id);
		s->active = false;
		s->res = dns_result_fail(s->name, s->qtype, DNS_TIMEOUT, "no answer in time");
	}
	q->active_subs = 0;
	query_step(q, true);
}

static void on_defer(evutil_socket_t fd, short what, void *arg)
{
	query_step(arg, false);
}

static struct dns_query *query_new(struct dns_resolver *r, enum query_kind kind, const char *name,
				   uint16_t qtype)
{
	struct dns_query *q = xcalloc(1, sizeof(*q));
	q->r = r;
	q->kind = kind;
	q->name = xstrdup(name);
	q->qtype = qtype;
	q->subs_tail = &q->subs;
	q->deadline = evtimer_new(r->base, on_deadline, q);
	q->defer = event_new(r->base, -1, 0, on_defer, q);
	if (q->deadline == NULL || q->defer == NULL)
		fatal("event=dns_event_failed");
	struct timeval tv = {r->timeout_ms / 1000, (r->timeout_ms % 1000) * 1000};
	evtimer_add(q->deadline, &tv);
	q->next = r->queries;
	if (r->queries != NULL)
		r->queries->prev = q;
	r->queries = q;
	r->pending++;
	return q;
}

static void log_result(const struct dns_result *res)
{
	char name[128];
	log_debug("event=dns_answer qname=%s qtype=%u status=%s count=%zu secure=%d ttl=%u",
		  log_quote(name, sizeof(name), res->qname, 100), res->qtype,
		  dns_status_name(res->status), res->count, res->secure, res->ttl);
}

/* Take a sub's result out of it. */
static struct dns_result *sub_take(struct dns_sub *s)
{
	struct dns_result *res = s->res;
	s->res = NULL;
	return res;
}

static bool temporary(enum dns_status s)
{
	return s == DNS_SERVFAIL || s == DNS_TIMEOUT;
}

/* AAAA then A, as documented for dns_lookup_addr. */
static struct dns_result *merge_addr(struct dns_query *q)
{
	struct dns_result *m = dns_result_fail(q->name, DNS_T_A, DNS_NOERROR, NULL);
	struct dns_result *temp = NULL;
	bool nx = false, first = true;
	size_t total = 0;

	for (struct dns_sub *s = q->subs; s != NULL; s = s->next)
		total += s->res->count;
	m->rrs = xcalloc(total > 0 ? total : 1, sizeof(*m->rrs));
	m->rcode = 0;
	m->secure = true;
	for (struct dns_sub *s = q->subs; s != NULL; s = s->next) {
		struct dns_result *res = s->res;
		if (res->count > 0)
			memcpy(m->rrs + m->count, res->rrs, res->count * sizeof(*res->rrs));
		m->count += res->count;
		res->count = 0;
		m->secure = m->secure && res->secure;
		m->bogus = m->bogus || res->bogus;
		if (res->status == DNS_NOERROR || res->status == DNS_NXDOMAIN) {
			if (first || res->ttl < m->ttl)
				m->ttl = res->ttl;
			first = false;
		}
		if (m->canonname == NULL && res->canonname != NULL)
			m->canonname = xstrdup(res->canonname);
		if (temporary(res->status) && temp == NULL)
			temp = res;
		if (res->status == DNS_NXDOMAIN)
			nx = true;
	}
	if (m->count > 0) {
		m->status = DNS_NOERROR;
	} else if (temp != NULL) {
		m->status = temp->status;
		m->rcode = temp->rcode;
		m->error = temp->error != NULL ? xstrdup(temp->error) : NULL;
	} else if (nx) {
		m->status = DNS_NXDOMAIN;
		m->rcode = 3;
	}
	if (m->status != DNS_NOERROR)
		m->secure = false;
	return m;
}

static bool addr_confirms(const struct dns_query *q, const struct dns_result *res)
{
	size_t len = q->family == AF_INET ? 4 : 16;
	for (size_t i = 0; i < res->count; i++)
		if (res->rrs[i].u.addr.family == q->family &&
		    memcmp(res->rrs[i].u.addr.addr, q->addr, len) == 0)
			return true;
	return false;
}

static void fcrdns_forward(struct dns_query *q)
{
	size_t n = q->ptr->count < DNS_FCRDNS_MAX_NAMES ? q->ptr->count : DNS_FCRDNS_MAX_NAMES;
	for (size_t i = 0; i < n; i++)
		sub_start(q, q->ptr->rrs[i].u.name, q->family == AF_INET ? DNS_T_A : DNS_T_AAAA);
	stage_started(q);
}

static struct dns_fcrdns_result *fcrdns_result(struct dns_query *q, bool timed_out)
{
	struct dns_fcrdns_result *fr = xcalloc(1, sizeof(*fr));
	const struct dns_result *ptr = q->ptr;

	if (ptr == NULL) {
		/* The PTR lookup itself did not finish in time. */
		fr->status = DNS_FCRDNS_TEMPERROR;
		fr->ptr_names = xcalloc(1, sizeof(char *));
		return fr;
	}
	fr->ptr_names = xcalloc(ptr->count + 1, sizeof(char *));
	for (size_t i = 0; i < ptr->count; i++)
		fr->ptr_names[i] = xstrdup(ptr->rrs[i].u.name);
	fr->ptr_count = ptr->count;
	if (temporary(ptr->status)) {
		fr->status = DNS_FCRDNS_TEMPERROR;
		return fr;
	}
	if (ptr->count == 0) {
		fr->status = DNS_FCRDNS_NONE;
		return fr;
	}
	bool temp = false;
	for (struct dns_sub *s = q->subs; s != NULL; s = s->next) {
		if (s->qtype == DNS_T_PTR)
			continue;
		if (s->res == NULL) /* timed out before it started */
			continue;
		if (addr_confirms(q, s->res)) {
			fr->status = DNS_FCRDNS_PASS;
			fr->name = xstrdup(s->name);
			return fr;
		}
		if (temporary(s->res->status))
			temp = true;
	}
	fr->status = temp || timed_out ? DNS_FCRDNS_TEMPERROR : DNS_FCRDNS_FAIL;
	return fr;
}

/* Every sub of the current stage is in (or the deadline passed). */
static void query_step(struct dns_query *q, bool timed_out)
{
	struct dns_result *res = NULL;
	struct dns_fcrdns_result *fr = NULL;

	switch (q->kind) {
	case Q_SIMPLE:
		res = q->subs != NULL ? sub_take(q->subs)
				      : dns_result_fail(q->name, q->qtype, DNS_SERVFAIL,
							"not an IP address");
		break;
	case Q_ADDR:
		res = merge_addr(q);
		break;
	case Q_FCRDNS:
		if (q->ptr == NULL && q->subs != NULL && !timed_out) {
			q->ptr = sub_take(q->subs);
			if (q->ptr->status == DNS_NOERROR && q->ptr->count > 0) {
				fcrdns_forward(q);
				return;
			}
		} else if (q->ptr == NULL && q->subs == NULL) {
			q->ptr = dns_result_fail(q->name, DNS_T_PTR, DNS_NXDOMAIN, "not an IP address");
		}
		fr = fcrdns_result(q, timed_out);
		break;
	}

	/* Free the query before the callback, so the callback may do anything. */
	dns_callback *cb = q->cb;
	dns_fcrdns_callback *fcb = q->fcb;
	void *arg = q->arg;
	char name[128];
	query_free(q);
	if (fr != NULL) {
		log_debug("event=dns_fcrdns status=%s name=%s", dns_fcrdns_status_name(fr->status),
			  log_quote(name, sizeof(name), fr->name != NULL ? fr->name : "", 100));
		fcb(fr, arg);
	} else {
		log_result(res);
		cb(res, arg);
	}
}

struct dns_query *dns_lookup(struct dns_resolver *r, const char *name, uint16_t qtype,
			     dns_callback *cb, void *arg)
{
	struct dns_query *q = query_new(r, Q_SIMPLE, name, qtype);
	q->cb = cb;
	q->arg = arg;
	sub_start(q, name, qtype);
	stage_started(q);
	return q;
}

struct dns_query *dns_lookup_mx(struct dns_resolver *r, const char *domain, dns_callback *cb,
				void *arg)
{
	return dns_lookup(r, domain, DNS_T_MX, cb, arg);
}

struct dns_query *dns_lookup_txt(struct dns_resolver *r, const char *name, dns_callback *cb,
				 void *arg)
{
	return dns_lookup(r, name, DNS_T_TXT, cb, arg);
}

struct dns_query *dns_lookup_tlsa(struct dns_resolver *r, const char *name, dns_callback *cb,
				  void *arg)
{
	return dns_lookup(r, name, DNS_T_TLSA, cb, arg);
}

struct dns_query *dns_lookup_addr(struct dns_resolver *r, const char *name, dns_callback *cb,
				  void *arg)
{
	struct dns_query *q = query_new(r, Q_ADDR, name, DNS_T_A);
	q->cb = cb;
	q->arg = arg;
	sub_start(q, name, DNS_T_AAAA);
	sub_start(q, name, DNS_T_A);
	stage_started(q);
	return q;
}

/* Address bytes of sa, v4-mapped v6 as v4. Returns the family or -1. */
static int sockaddr_bytes(const struct sockaddr *sa, unsigned char addr[16])
{
	if (sa->sa_family == AF_INET) {
		memcpy(addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return AF_INET;
	}
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *in6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(in6)) {
			memcpy(addr, in6->s6_addr + 12, 4);
			return AF_INET;
		}
		memcpy(addr, in6->s6_addr, 16);
		return AF_INET6;
	}
	return -1;
}

struct dns_query *dns_lookup_ptr(struct dns_resolver *r, const struct sockaddr *sa,
				 dns_callback *cb, void *arg)
{
	char rev[80];
	bool ok = dns_reverse_name(sa, rev, sizeof(rev)) == 0;
	struct dns_query *q = query_new(r, Q_SIMPLE, ok ? rev : "", DNS_T_PTR);
	q->cb = cb;
	q->arg = arg;
	if (ok)
		sub_start(q, rev, DNS_T_PTR);
	stage_started(q);
	return q;
}

struct dns_query *dns_fcrdns(struct dns_resolver *r, const struct sockaddr *sa,
			     dns_fcrdns_callback *cb, void *arg)
{
	char rev[80];
	bool ok = dns_reverse_name(sa, rev, sizeof(rev)) == 0;
	struct dns_query *q = query_new(r, Q_FCRDNS, ok ? rev : "", DNS_T_PTR);
	q->fcb = cb;
	q->arg = arg;
	q->family = sockaddr_bytes(sa, q->addr);
	if (ok)
		sub_start(q, rev, DNS_T_PTR);
	stage_started(q);
	return q;
}

void dns_fcrdns_result_free(struct dns_fcrdns_result **frp)
{
	struct dns_fcrdns_result *fr = *frp;
	if (fr == NULL)
		return;
	for (size_t i = 0; i < fr->ptr_count; i++)
		free(fr->ptr_names[i]);
	free(fr->ptr_names);
	free(fr->name);
	free(fr);
	*frp = NULL;
}

const char *dns_fcrdns_status_name(enum dns_fcrdns_status s)
{
	switch (s) {
	case DNS_FCRDNS_PASS:
		return "pass";
	case DNS_FCRDNS_FAIL:
		return "fail";
	case DNS_FCRDNS_NONE:
		return "none";
	case DNS_FCRDNS_TEMPERROR:
		return "temperror";
	}
	return "?";
}

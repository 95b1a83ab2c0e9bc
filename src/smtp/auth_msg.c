/*
 * Mail authentication of one message: see auth_msg.h.
 *
 * SECURITY: the header section and every DNS answer are peer input. The
 * header section is bounded (AUTH_MAX_HEADER), the DKIM, SPF and DMARC
 * modules bound what they parse; every peer-supplied value written into
 * Authentication-Results is reduced to a safe token first.
 */
#include "smtp/auth_msg.h"

#include "lib/log.h"
#include "lib/strutil.h"
#include "lib/xalloc.h"
#include "dns/dns.h"
#include "mail/arc.h"
#include "mail/dkim.h"
#include "mail/dmarc.h"
#include "mail/mime.h"
#include "mail/spf.h"
#include "store/dkimkeys.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_SIGNERS 4 /* keys of one domain used at once (ed25519 + rsa, and a rotation) */
/* All DNS of one message must be done within this; later lookups answer "temporary
   failure" at once, so a slow or hostile DNS holds a worker (and shutdown) this long at most. */
#define DNS_BUDGET_MS 6000
#define DNS_TIMEOUT_MS 3000 /* each lookup */
/* A lookup that found a domain without DKIM keys spares the hashing of its next messages for
   this long (known_keyless). */
#define KEYLESS_TRUST_MS 1000

/* A worker's resolver for one message: its dns_sync and the message's deadline. */
struct budget_dns {
	struct dns_sync *dns;
	struct timespec deadline;
};

/* The resolver to use now, or NULL when the budget is spent (or there is none). */
static struct dns_sync *budget_ok(const struct budget_dns *b)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (b->dns == NULL || now.tv_sec > b->deadline.tv_sec ||
	    (now.tv_sec == b->deadline.tv_sec && now.tv_nsec >= b->deadline.tv_nsec))
		return NULL;
	return b->dns;
}

struct auth_msg {
	enum auth_mode mode;
	struct auth_params p;
	void (*write)(void *ctx, const char *data, size_t len);
	void *ctx;

	/* header section, held until complete */
	char *hdr;
	size_t hdr_len, hdr_cap, line_start;
	bool in_header, too_big;
	char *from[AUTH_MAX_FROM]; /* distinct From domains, lowercase */
	size_t nfrom;
	unsigned from_fields;
	unsigned removed;

	/* verification */
	struct dkim_key_resolver keyres;
	struct dkim_verifier *verifier;
	struct arc_verifier *arc;
	struct arc_sealer *sealer; /* forwarded: our ARC set (RFC 8617 5.1), keyed at the end */

	/* signing: the message hashed once; the keys are chosen at the end (sign_work) */
	struct dkim_signer *signer;

	/* results */
	enum auth_verdict verdict;
	char *reject_text;
	char *prefix;
	char *summary;
};

/* ---- the blocking resolver of a worker thread ---- */

struct thread_dns {
	char *resolver;
	struct dns_sync *dns;
};

static pthread_key_t dns_key;
static pthread_once_t dns_key_once = PTHREAD_ONCE_INIT;

static void thread_dns_free(void *arg)
{
	struct thread_dns *t = arg;
	dns_sync_free(&t->dns);
	free(t->resolver);
	free(t);
}

static void dns_key_make(void)
{
	if (pthread_key_create(&dns_key, thread_dns_free) != 0)
		fatal("event=pthread_key_create_failed");
}

/* This thread's dns_sync for `resolver` (made on first use, remade when the config changes). */
static struct dns_sync *thread_dns(const char *resolver)
{
	pthread_once(&dns_key_once, dns_key_make);
	struct thread_dns *t = pthread_getspecific(dns_key);
	if (t != NULL && strcmp(t->resolver, resolver) == 0)
		return t->dns;
	if (t != NULL) {
		pthread_setspecific(dns_key, NULL);
		thread_dns_free(t);
	}
	struct dns_options o = {.resolver = resolver, .timeout_ms = DNS_TIMEOUT_MS};
	const char *err = NULL;
	struct dns_sync *s = dns_sync_new(&o, &err);
	if (s == NULL) {
		log_error("event=dns_sync_failed error=\"%s\"", err != NULL ? err : "?");
		return NULL;
	}
	t = xcalloc(1, sizeof(*t));
	t->resolver = xstrdup(resolver);
	t->dns = s;
	pthread_setspecific(dns_key, t);
	return s;
}

static void spf_lookup(void *ctx, enum spf_rrtype type, const char *name, struct spf_answer *a)
{
	struct dns_sync *s = budget_ok(ctx);
	if (s == NULL) {
		a->rcode = SPF_DNS_TEMPFAIL;
		return;
	}
	struct dns_result *res = dns_sync_lookup(s, name, (uint16_t)type);
	if (res->status == DNS_NXDOMAIN)
		a->rcode = SPF_DNS_NXDOMAIN;
	else if (res->status != DNS_NOERROR)
		a->rcode = SPF_DNS_TEMPFAIL;
	for (size_t i = 0; res->status == DNS_NOERROR && i < res->count; i++) {
		const struct dns_rr *rr = &res->rrs[i];
		switch (type) {
		case SPF_RR_A:
		case SPF_RR_AAAA:
			spf_answer_add_addr(a, rr->u.addr.addr, type == SPF_RR_A ? 4 : 16);
			break;
		case SPF_RR_MX:
			if (strcmp(rr->u.mx.host, ".") != 0)
				spf_answer_add_name(a, rr->u.mx.host);
			break;
		case SPF_RR_PTR:
			spf_answer_add_name(a, rr->u.name);
			break;
		case SPF_RR_TXT: {
			const char *strs[1] = {rr->u.txt.text};
			size_t lens[1] = {rr->u.txt.len};
			spf_answer_add_txt(a, strs, lens, 1);
			break;
		}
		}
	}
	dns_result_free(&res);
}

static int txt_lookup(void *ctx, const char *name, struct dkim_txt *out)
{
	struct dns_sync *s = budget_ok(ctx);
	if (s == NULL)
		return DKIM_DNS_TEMPFAIL;
	struct dns_result *res = dns_sync_lookup(s, name, DNS_T_TXT);
	int rc = res->status == DNS_NOERROR    ? DKIM_DNS_OK
		 : res->status == DNS_NXDOMAIN ? DKIM_DNS_NXDOMAIN
					       : DKIM_DNS_TEMPFAIL;
	for (size_t i = 0; rc == DKIM_DNS_OK && i < res->count; i++)
		dkim_txt_add(out, res->rrs[i].u.txt.text, res->rrs[i].u.txt.len);
	dns_result_free(&res);
	return rc;
}

/* ---- the message stream ---- */

struct auth_msg *auth_msg_new(enum auth_mode mode, const struct auth_params *p,
			      void (*write)(void *ctx, const char *data, size_t len), void *ctx)
{
	struct auth_msg *m = xcalloc(1, sizeof(*m));
	m->mode = mode;
	m->p = *p;
	m->p.hostname = xstrdup(p->hostname != NULL ? p->hostname : "");
	m->p.data_dir = xstrdup(p->data_dir != NULL ? p->data_dir : "");
	m->p.dns_resolver = xstrdup(p->dns_resolver != NULL ? p->dns_resolver : "");
	m->p.dmarc_reject = xstrdup(p->dmarc_reject != NULL ? p->dmarc_reject : "reject");
	m->p.arc_trusted = xstrdup(p->arc_trusted != NULL ? p->arc_trusted : "");
	m->p.arc_seal_domain = p->arc_seal_domain != NULL ? xstrdup(p->arc_seal_domain) : NULL;
	m->p.helo = xstrdup(p->helo != NULL ? p->helo : "");
	m->p.mail_from = xstrdup(p->mail_from != NULL ? p->mail_from : "");
	m->p.iprev = p->iprev != NULL ? xstrdup(p->iprev) : NULL;
	m->p.iprev_name = p->iprev_name != NULL ? xstrdup(p->iprev_name) : NULL;
	m->write = write;
	m->ctx = ctx;
	m->in_header = true;
	m->keyres.txt = txt_lookup;
	if (mode == AUTH_MODE_VERIFY) {
		m->verifier = dkim_verifier_new(&m->keyres, time(NULL));
		m->arc = arc_verifier_new(&m->keyres, time(NULL));
	}
	return m;
}

void auth_msg_free(struct auth_msg **mp)
{
	struct auth_msg *m = *mp;
	if (m == NULL)
		return;
	*mp = NULL;
	free((char *)m->p.hostname);
	free((char *)m->p.data_dir);
	free((char *)m->p.dns_resolver);
	free((char *)m->p.dmarc_reject);
	free((char *)m->p.arc_trusted);
	free((char *)m->p.arc_seal_domain);
	free((char *)m->p.helo);
	free((char *)m->p.mail_from);
	free((char *)m->p.iprev);
	free((char *)m->p.iprev_name);
	free(m->hdr);
	for (size_t i = 0; i < m->nfrom; i++)
		free(m->from[i]);
	if (m->verifier != NULL)
		dkim_verifier_free(&m->verifier);
	arc_verifier_free(&m->arc);
	arc_sealer_free(&m->sealer);
	dkim_signer_free(&m->signer);
	free(m->reject_text);
	free(m->prefix);
	free(m->summary);
	free(m);
}

/* Bytes that go on to the spool and to the signers. */
static void emit(struct auth_msg *m, const char *data, size_t len)
{
	if (len == 0)
		return;
	m->write(m->ctx, data, len);
	if (m->signer != NULL)
		dkim_signer_push(m->signer, data, len);
	if (m->sealer != NULL)
		arc_sealer_push(m->sealer, data, len);
}

static bool name_is(const char *f, size_t name_len, const char *name)
{
	return name_len == strlen(name) && strncasecmp(f, name, name_len) == 0;
}

/* RFC 8601 2.2: authserv-id after optional CFWS; true if it is ours. */
static bool ar_is_ours(const struct auth_msg *m, const char *v, size_t len)
{
	size_t i = 0;
	for (;;) {
		while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == '\r' || v[i] == '\n'))
			i++;
		if (i < len && v[i] == '(') {
			/* a comment, nested, with quoted-pairs */
			int depth = 0;
			for (; i < len; i++) {
				if (v[i] == '\\' && i + 1 < len) {
					i++;
				} else if (v[i] == '(') {
					depth++;
				} else if (v[i] == ')' && --depth == 0) {
					i++;
					break;
				}
			}
			continue;
		}
		break;
	}
	size_t s = i;
	while (i < len && v[i] != ';' && v[i] != ' ' && v[i] != '\t' && v[i] != '\r' &&
	       v[i] != '\n' && v[i] != '(')
		i++;
	size_t n = i - s;
	/* a quoted authserv-id is compared without its quotes */
	if (n >= 2 && v[s] == '"' && v[i - 1] == '"') {
		s++;
		n -= 2;
	}
	size_t hl = strlen(m->p.hostname);
	return n == hl && hl > 0 && strncasecmp(v + s, m->p.hostname, hl) == 0;
}

static void note_from(struct auth_msg *m, const char *v, size_t len)
{
	m->from_fields++;
	struct mime_address *list = mime_address_parse(v, len, 16);
	for (struct mime_address *a = list; a != NULL; a = a->next) {
		if (a->group_start || a->group_end || a->invalid || a->domain == NULL)
			continue;
		char *d = xstrdup(a->domain);
		str_lower(d);
		size_t n = strlen(d);
		if (n > 0 && d[n - 1] == '.')
			d[n - 1] = '\0';
		bool seen = false;
		for (size_t i = 0; i < m->nfrom && !seen; i++)
			seen = strcmp(m->from[i], d) == 0;
		if (!seen && m->nfrom < AUTH_MAX_FROM && d[0] != '\0')
			m->from[m->nfrom++] = d;
		else
			free(d);
	}
	mime_address_free(&list);
}

/* ---- our keys ---- */

/* The parsed DKIM keys of every domain, shared by the worker threads; made on first use. */
static struct dkimkeys_cache *key_cache;
static pthread_once_t key_cache_once = PTHREAD_ONCE_INIT;

static void key_cache_make(void)
{
	key_cache = dkimkeys_cache_new(DKIMKEYS_CACHE_DOMAINS);
}

/* The active keys of `domain` (worker thread: may read the key files); NULL on error
   (logged with `event`). */
static const struct dkimkeys_set *domain_keys(const struct auth_msg *m, const char *domain,
                                              const char *event)
{
	pthread_once(&key_cache_once, key_cache_make);
	const struct dkimkeys_set *set = NULL;
	char *err = NULL;
	if (dkimkeys_cache_get(key_cache, m->p.data_dir, domain, &set, &err) < 0) {
		log_error("event=%s domain=%s error=\"%s\"", event, domain, err);
		free(err);
		return NULL;
	}
	return set;
}

/* The domains that may sign the message, in order: the first From domain, then the envelope
   domain (lowercase; names that cannot have keys left out). */
static size_t sign_domains(const struct auth_msg *m, char out[2][DMARC_MAX_DOMAIN + 1])
{
	const char *cands[2];
	size_t nc = 0, n = 0;
	if (m->nfrom > 0)
		cands[nc++] = m->from[0];
	const char *at = strrchr(m->p.mail_from, '@');
	if (at != NULL && at[1] != '\0')
		cands[nc++] = at + 1;
	for (size_t c = 0; c < nc; c++) {
		if (strlen(cands[c]) > DMARC_MAX_DOMAIN)
			continue;
		snprintf(out[n], sizeof(out[n]), "%s", cands[c]);
		str_lower(out[n]);
		if (dkimkeys_name_ok(out[n], DMARC_MAX_DOMAIN))
			n++;
	}
	return n;
}

/*
 * On the loop thread, from memory: true when every domain in `doms` was
 * found without keys by a lookup less than KEYLESS_TRUST_MS ago, so hashing
 * the message for a signature is wasted work (mail of a server or a
 * trusted relay without DKIM keys). The lookup at the end still runs and
 * keeps that answer fresh; a domain's first key appearing in between goes
 * unused for the messages already under way (logged).
 */
static bool known_keyless(const struct auth_msg *m, char doms[][DMARC_MAX_DOMAIN + 1], size_t n)
{
	pthread_once(&key_cache_once, key_cache_make);
	for (size_t i = 0; i < n; i++)
		if (!dkimkeys_cache_known_keyless(key_cache, m->p.data_dir, doms[i],
		                                  KEYLESS_TRUST_MS))
			return false;
	return true;
}

/* The header section is complete (hdr holds it, with its empty line if any). */
static void header_done(struct auth_msg *m)
{
	m->in_header = false;
	/* pass 1: From domains (DMARC's, and the signing domain's candidates) */
	size_t i = 0;
	while (i < m->hdr_len) {
		size_t fs = i, colon = 0;
		/* a field: this line and the lines that start with WSP */
		do {
			while (i < m->hdr_len && m->hdr[i] != '\n')
				i++;
			if (i < m->hdr_len)
				i++;
		} while (i < m->hdr_len && (m->hdr[i] == ' ' || m->hdr[i] == '\t'));
		while (fs + colon < i && m->hdr[fs + colon] != ':')
			colon++;
		if (fs + colon < i && name_is(m->hdr + fs, colon, "From"))
			note_from(m, m->hdr + fs + colon + 1, i - fs - colon - 1);
	}
	/* the keys are looked up at the end, on the worker (they may need the disk, and
	   which domain signs is known only now); the message is hashed meanwhile, unless
	   no domain that may sign has keys */
	char doms[2][DMARC_MAX_DOMAIN + 1];
	if (m->mode == AUTH_MODE_SIGN) {
		size_t n = sign_domains(m, doms);
		if (n > 0 && !known_keyless(m, doms, n))
			m->signer = dkim_signer_new_unkeyed();
	} else if (m->p.arc_seal_domain != NULL &&
	           dkimkeys_name_ok(m->p.arc_seal_domain, DMARC_MAX_DOMAIN)) {
		snprintf(doms[0], sizeof(doms[0]), "%s", m->p.arc_seal_domain);
		if (!known_keyless(m, doms, 1))
			m->sealer = arc_sealer_new_unkeyed();
	}
	if (m->verifier != NULL)
		dkim_verifier_push(m->verifier, m->hdr, m->hdr_len);
	if (m->arc != NULL)
		arc_verifier_push(m->arc, m->hdr, m->hdr_len);
	/* pass 2: out, without Authentication-Results fields that claim to be ours */
	i = 0;
	size_t run = 0; /* start of fields not yet written */
	while (i < m->hdr_len) {
		size_t fs = i, colon = 0;
		do {
			while (i < m->hdr_len && m->hdr[i] != '\n')
				i++;
			if (i < m->hdr_len)
				i++;
		} while (i < m->hdr_len && (m->hdr[i] == ' ' || m->hdr[i] == '\t'));
		while (fs + colon < i && m->hdr[fs + colon] != ':')
			colon++;
		if (fs + colon < i && name_is(m->hdr + fs, colon, "Authentication-Results") &&
		    ar_is_ours(m, m->hdr + fs + colon + 1, i - fs - colon - 1)) {
			emit(m, m->hdr + run, fs - run);
			run = i;
			m->removed++;
		}
	}
	emit(m, m->hdr + run, m->hdr_len - run);
	xfree(&m->hdr);
	m->hdr_cap = m->hdr_len = 0;
}

void auth_msg_push(struct auth_msg *m, const char *data, size_t len)
{
	size_t i = 0;
	while (m->in_header && i < len) {
		if (m->hdr_len + 1 > AUTH_MAX_HEADER) {
			/* too large to filter: it is refused at the end; store nothing more */
			m->too_big = true;
			return;
		}
		char c = data[i++];
		m->hdr = xgrow(m->hdr, &m->hdr_cap, m->hdr_len + 1, 1);
		m->hdr[m->hdr_len++] = c;
		if (c != '\n')
			continue;
		size_t ll = m->hdr_len - m->line_start;
		bool empty = ll == 1 || (ll == 2 && m->hdr[m->line_start] == '\r');
		m->line_start = m->hdr_len;
		if (empty)
			header_done(m);
	}
	if (m->too_big || i >= len)
		return;
	if (m->verifier != NULL)
		dkim_verifier_push(m->verifier, data + i, len - i);
	if (m->arc != NULL)
		arc_verifier_push(m->arc, data + i, len - i);
	emit(m, data + i, len - i);
}

bool auth_msg_end(struct auth_msg *m)
{
	if (m->too_big)
		return false;
	if (m->in_header)
		header_done(m);
	return true;
}

/* ---- results ---- */

/* A peer-supplied value as an RFC 8601 token (RFC 2045 token chars minus a few); '?' else. */
static void safe_token(char *out, size_t size, const char *in)
{
	size_t o = 0;
	for (const char *p = in != NULL ? in : ""; *p != '\0' && o + 1 < size; p++) {
		unsigned char c = (unsigned char)*p;
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			  strchr(".-_+@!#$%&'*^`{|}~", c) != NULL;
		out[o++] = ok ? (char)c : '?';
	}
	out[o] = '\0';
}

/* Text for a comment: printable ASCII without parentheses and backslash. */
static void safe_comment(char *out, size_t size, const char *in)
{
	size_t o = 0;
	for (const char *p = in != NULL ? in : ""; *p != '\0' && o + 1 < size; p++) {
		unsigned char c = (unsigned char)*p;
		out[o++] = (c >= 0x20 && c < 0x7f && c != '(' && c != ')' && c != '\\') ? (char)c : '?';
	}
	out[o] = '\0';
}

struct strbuf {
	char *s;
	size_t len, cap;
};

static void sb_add(struct strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_add(struct strbuf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *t = xvasprintf(fmt, ap);
	va_end(ap);
	size_t n = strlen(t);
	b->s = xgrow(b->s, &b->cap, b->len + n + 1, 1);
	memcpy(b->s + b->len, t, n + 1);
	b->len += n;
	free(t);
}

/*
 * DKIM signatures with the active keys of the first From domain that has a
 * usable one, else of the envelope domain (RFC 8463: Ed25519 and RSA sign
 * together). The keys come from the cache here, on the worker, where the
 * signing is: the loop thread never reads a key file.
 */
static void sign_work(struct auth_msg *m)
{
	struct strbuf out = {0};
	struct strbuf names = {0};
	sb_add(&out, "%s", "");
	sb_add(&names, "%s", "");
	char doms[2][DMARC_MAX_DOMAIN + 1];
	size_t nd = sign_domains(m, doms);
	time_t now = time(NULL);
	size_t nkeys = 0; /* keys that made a signer (signing may still fail) */
	for (size_t c = 0; c < nd && nkeys == 0; c++) {
		const char *dom = doms[c];
		const struct dkimkeys_set *keys = domain_keys(m, dom, "dkim_keys_failed");
		if (keys != NULL && keys->n > 0 && m->signer == NULL) {
			/* known_keyless() said none at the end of the header section */
			log_info("event=dkim_unsigned domain=%s reason=\"its first key appeared "
			         "while the message was received\"",
			         dom);
			dkimkeys_set_release(&keys);
			break;
		}
		for (size_t i = 0; keys != NULL && i < keys->n && nkeys < MAX_SIGNERS; i++) {
			const struct dkimkeys_signkey *k = &keys->v[i];
			if (k->key == NULL) {
				log_error(
				    "event=dkim_key_unusable domain=%s selector=%s error=\"%s\"",
				    k->domain, k->selector, k->error != NULL ? k->error : "?");
				continue;
			}
			nkeys++;
			struct dkim_sign_params sp = {
			    .domain = k->domain,
			    .selector = k->selector,
			    .key = k->key,
			    .timestamp = now,
			};
			const char *err = NULL;
			char *sig = dkim_signer_sign(m->signer, &sp, &err);
			if (sig == NULL) {
				log_warn("event=dkim_sign_failed key=%s/%s error=\"%s\"", k->domain,
				         k->selector, err != NULL ? err : "?");
				continue;
			}
			sb_add(&out, "%s", sig);
			sb_add(&names, " key=%s/%s", k->domain, k->selector);
			free(sig);
		}
		dkimkeys_set_release(&keys);
	}
	struct strbuf sum = {0};
	sb_add(&sum, "dkim_signed=%zu%s", nkeys, names.s);
	free(names.s);
	m->prefix = out.s;
	m->summary = sum.s;
}

/*
 * Our ARC set for a forwarded message: the forwarding domain's active key,
 * RSA when it has one (what every ARC verifier understands today), else
 * Ed25519. No usable key: not sealed (logged). NULL when not sealed.
 */
static char *seal_work(struct auth_msg *m, const char *results, enum arc_result cv)
{
	const char *dom = m->p.arc_seal_domain;
	const struct dkimkeys_set *keys = domain_keys(m, dom, "arc_seal_keys_failed");
	if (keys == NULL)
		return NULL;
	const struct dkimkeys_signkey *k = NULL;
	for (size_t i = 0; i < keys->n; i++) {
		const struct dkimkeys_signkey *c = &keys->v[i];
		if (c->key == NULL) {
			log_error("event=arc_seal_key_unusable domain=%s selector=%s error=\"%s\"",
			          c->domain, c->selector, c->error != NULL ? c->error : "?");
			continue;
		}
		if (k == NULL ||
		    (dkim_privkey_is_ed25519(k->key) && !dkim_privkey_is_ed25519(c->key)))
			k = c;
	}
	char *set = NULL;
	if (k == NULL) {
		log_info("event=arc_seal_skipped domain=%s reason=\"no active DKIM key\"", dom);
	} else if (m->sealer == NULL) {
		/* known_keyless() said none at the end of the header section */
		log_info("event=arc_seal_skipped domain=%s reason=\"its first key appeared while "
		         "the message was received\"",
		         dom);
	} else {
		struct arc_seal_params sp = {
		    .domain = k->domain,
		    .selector = k->selector,
		    .key = k->key,
		    .timestamp = time(NULL),
		};
		const char *e = NULL;
		set = arc_sealer_seal(m->sealer, &sp, results, cv, &e);
		const char *cvs = set != NULL ? strstr(set, " cv=") : NULL;
		if (set != NULL)
			log_info("event=arc_sealed key=%s/%s cv=%.4s", k->domain, k->selector,
			         cvs != NULL ? cvs + 4 : "?");
		else
			log_info("event=arc_seal_skipped key=%s/%s reason=\"%s\"", k->domain,
			         k->selector, e != NULL ? e : "?");
	}
	dkimkeys_set_release(&keys);
	return set;
}

/* `domain` is one of the comma or space separated names of `list` (case-insensitive). */
static bool in_list(const char *list, const char *domain)
{
	size_t n = strlen(domain);
	for (const char *p = list; *p != '\0';) {
		while (*p == ',' || *p == ' ' || *p == '\t')
			p++;
		size_t k = strcspn(p, ", \t");
		if (k > 0 && k == n && strncasecmp(p, domain, n) == 0)
			return true;
		p += k;
	}
	return false;
}

static int dmarc_rank(enum dmarc_policy p)
{
	return p == DMARC_POLICY_REJECT ? 2 : p == DMARC_POLICY_QUARANTINE ? 1 : 0;
}

static void verify_work(struct auth_msg *m)
{
	struct budget_dns bd = {.dns = thread_dns(m->p.dns_resolver)};
	clock_gettime(CLOCK_MONOTONIC, &bd.deadline);
	bd.deadline.tv_sec += DNS_BUDGET_MS / 1000;
	bd.deadline.tv_nsec += (long)(DNS_BUDGET_MS % 1000) * 1000000L;
	if (bd.deadline.tv_nsec >= 1000000000L) {
		bd.deadline.tv_sec++;
		bd.deadline.tv_nsec -= 1000000000L;
	}
	struct spf_resolver sres = {spf_lookup, &bd};
	m->keyres.ctx = &bd;

	/* SPF: MAIL FROM, or the HELO identity for <> (RFC 7208 2.4) */
	struct spf_request req = {0};
	const struct sockaddr_storage *ss = &m->p.client;
	if (ss->ss_family == AF_INET) {
		req.family = AF_INET;
		memcpy(req.ip, &((const struct sockaddr_in *)ss)->sin_addr, 4);
	} else {
		req.family = AF_INET6;
		memcpy(req.ip, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
	}
	req.helo = m->p.helo;
	req.receiver = m->p.hostname;
	req.now = time(NULL);
	struct spf_outcome spf;
	bool null_sender = m->p.mail_from[0] == '\0';
	spf_check_mailfrom(&sres, &req, m->p.mail_from, &spf);
	const char *spf_domain = null_sender ? m->p.helo : strrchr(m->p.mail_from, '@');
	if (!null_sender)
		spf_domain = spf_domain != NULL ? spf_domain + 1 : m->p.mail_from;
	/* the HELO identity too (RFC 7208 2.3), when it is a name: one more TXT lookup,
	   reported only (DMARC uses the MAIL FROM identity) */
	struct spf_outcome spf_helo = {.result = SPF_NONE};
	bool helo_checked = !null_sender && strchr(m->p.helo, '.') != NULL && m->p.helo[0] != '[';
	if (helo_checked)
		spf_check_helo(&sres, &req, &spf_helo);

	/* DKIM */
	const struct dkim_sig_result *sigs = NULL;
	size_t nsigs = dkim_verifier_finish(m->verifier, &sigs);

	/* ARC (RFC 8617): reported; it does not override DMARC here */
	struct arc_outcome arc;
	arc_verifier_finish(m->arc, &arc);

	/* DMARC, for each From domain; the strictest outcome decides */
	struct dmarc_dkim dk[DKIM_MAX_SIGNATURES];
	size_t ndk = 0;
	for (size_t i = 0; i < nsigs && ndk < DKIM_MAX_SIGNATURES; i++) {
		dk[ndk].result = sigs[i].result;
		dk[ndk].domain = sigs[i].domain;
		ndk++;
	}
	struct dmarc_outcome dm[AUTH_MAX_FROM];
	uint32_t r = arc4random_uniform(100);
	int worst = -1;
	for (size_t f = 0; f < m->nfrom; f++) {
		struct dmarc_input in = {
		    .from_domain = m->from[f],
		    .spf = spf.result,
		    .spf_domain = spf_domain,
		    .dkim = dk,
		    .ndkim = ndk,
		    .sample = r,
		};
		dmarc_evaluate(&m->keyres, &in, &dm[f]);
		if (dm[f].result == DMARC_FAIL &&
		    (worst < 0 || dmarc_rank(dm[f].disposition) > dmarc_rank(dm[worst].disposition)))
			worst = (int)f;
	}

	/* RFC 7489 6.7 local policy: a valid ARC chain sealed last by a forwarder we trust
	   ([policy] arc_trusted_sealers) lets mail through that fails DMARC after forwarding */
	bool arc_override = worst >= 0 && arc.result == ARC_PASS && arc.domain != NULL &&
			    in_list(m->p.arc_trusted, arc.domain);

	/* Authentication-Results (RFC 8601) */
	struct strbuf ar = {0};
	char host[256], tok[600], com[300];
	safe_token(host, sizeof(host), m->p.hostname);
	sb_add(&ar, "Authentication-Results: %s", host);
	safe_comment(com, sizeof(com), spf.mechanism != NULL ? spf.mechanism : spf.reason);
	if (null_sender) {
		safe_token(tok, sizeof(tok), m->p.helo);
		sb_add(&ar, ";\r\n\tspf=%s%s%s%s smtp.helo=%s", spf_result_name(spf.result),
		       com[0] != '\0' ? " (" : "", com, com[0] != '\0' ? ")" : "", tok);
	} else {
		safe_token(tok, sizeof(tok), m->p.mail_from);
		if (strchr(tok, '?') != NULL)
			safe_token(tok, sizeof(tok), spf_domain);
		sb_add(&ar, ";\r\n\tspf=%s%s%s%s smtp.mailfrom=%s", spf_result_name(spf.result),
		       com[0] != '\0' ? " (" : "", com, com[0] != '\0' ? ")" : "", tok);
	}
	if (helo_checked) {
		safe_comment(com, sizeof(com),
			     spf_helo.mechanism != NULL ? spf_helo.mechanism : spf_helo.reason);
		safe_token(tok, sizeof(tok), m->p.helo);
		sb_add(&ar, ";\r\n\tspf=%s%s%s%s smtp.helo=%s", spf_result_name(spf_helo.result),
		       com[0] != '\0' ? " (" : "", com, com[0] != '\0' ? ")" : "", tok);
	}
	if (m->p.iprev != NULL) {
		char ip[64] = "", name[256] = "";
		const struct sockaddr_storage *cs = &m->p.client;
		if (cs->ss_family == AF_INET)
			inet_ntop(AF_INET, &((const struct sockaddr_in *)cs)->sin_addr, ip, sizeof(ip));
		else
			inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)cs)->sin6_addr, ip, sizeof(ip));
		if (m->p.iprev_name != NULL)
			safe_comment(name, sizeof(name), m->p.iprev_name);
		sb_add(&ar, ";\r\n\tiprev=%s%s%s%s policy.iprev=%s", m->p.iprev,
		       name[0] != '\0' ? " (" : "", name, name[0] != '\0' ? ")" : "", ip);
	}
	if (nsigs == 0)
		sb_add(&ar, "%s", ";\r\n\tdkim=none");
	for (size_t i = 0; i < nsigs; i++) {
		const struct dkim_sig_result *s = &sigs[i];
		sb_add(&ar, ";\r\n\tdkim=%s", dkim_result_name(s->result));
		if (s->result != DKIM_PASS && s->reason != NULL && s->reason[0] != '\0') {
			safe_comment(com, sizeof(com), s->reason);
			sb_add(&ar, " (%s)", com);
		} else if (s->result == DKIM_PASS && s->algorithm != NULL) {
			sb_add(&ar, " (%u-bit %s key)", s->key_bits, s->algorithm);
		}
		if (s->domain != NULL) {
			safe_token(tok, sizeof(tok), s->domain);
			sb_add(&ar, " header.d=%s", tok);
		}
		if (s->selector != NULL) {
			safe_token(tok, sizeof(tok), s->selector);
			sb_add(&ar, " header.s=%s", tok);
		}
		if (s->b_prefix != NULL) {
			safe_token(tok, sizeof(tok), s->b_prefix);
			sb_add(&ar, " header.b=%s", tok);
		}
	}
	sb_add(&ar, ";\r\n\tarc=%s", arc_result_name(arc.result));
	if (arc.result != ARC_NONE) {
		safe_comment(com, sizeof(com), arc.result == ARC_PASS ? "" : arc.reason);
		safe_token(tok, sizeof(tok), arc.domain != NULL ? arc.domain : "unknown");
		sb_add(&ar, " (i=%u d=%s%s%s)", arc.instances, tok, com[0] != '\0' ? ", " : "", com);
	}
	if (m->nfrom == 0)
		sb_add(&ar, "%s", ";\r\n\tdmarc=none (no From domain)");
	for (size_t f = 0; f < m->nfrom; f++) {
		safe_token(tok, sizeof(tok), m->from[f]);
		sb_add(&ar, ";\r\n\tdmarc=%s", dmarc_result_name(dm[f].result));
		if (dm[f].result == DMARC_PASS || dm[f].result == DMARC_FAIL)
			sb_add(&ar, " (p=%s dis=%s%s%s)", dmarc_policy_name(dm[f].policy),
			       dmarc_policy_name(arc_override ? DMARC_POLICY_NONE
							      : dm[f].disposition),
			       dm[f].sampled_out ? " pct" : "",
			       arc_override && dm[f].result == DMARC_FAIL ? " arc-override" : "");
		else if (dm[f].reason != NULL && dm[f].reason[0] != '\0') {
			safe_comment(com, sizeof(com), dm[f].reason);
			sb_add(&ar, " (%s)", com);
		}
		sb_add(&ar, " header.from=%s", tok);
	}
	sb_add(&ar, "%s", "\r\n");

	/* the verdict: [policy] dmarc_reject says what p=reject gets */
	m->verdict = AUTH_ACCEPT;
	const char *why = "none";
	if (worst >= 0 && !arc_override) {
		enum dmarc_policy d = dm[worst].disposition;
		if (d == DMARC_POLICY_REJECT) {
			if (strcmp(m->p.dmarc_reject, "reject") == 0)
				m->verdict = AUTH_REJECT;
			else if (strcmp(m->p.dmarc_reject, "quarantine") == 0)
				m->verdict = AUTH_QUARANTINE;
		} else if (d == DMARC_POLICY_QUARANTINE &&
			   strcmp(m->p.dmarc_reject, "mark") != 0) {
			m->verdict = AUTH_QUARANTINE;
		}
		why = dmarc_policy_name(d);
		safe_token(tok, sizeof(tok), m->from[worst]);
		m->reject_text = xasprintf("550 5.7.1 Message rejected: it fails the DMARC policy "
					   "of %s (p=%s)",
					   tok, dmarc_policy_name(dm[worst].policy));
	}
	/* forwarded outside: our ARC set, sealing these results (RFC 8617 5.1), above them and
	   below the quarantine mark (which must stay the first line) */
	char *set = NULL;
	if (m->p.arc_seal_domain != NULL && m->verdict != AUTH_REJECT &&
	    dkimkeys_name_ok(m->p.arc_seal_domain, DMARC_MAX_DOMAIN))
		set = seal_work(m, ar.s, arc.result);
	struct strbuf pre = {0};
	if (m->verdict == AUTH_QUARANTINE)
		sb_add(&pre, "X-Postern-Quarantine: dmarc policy=%s domain=%s\r\n", why, tok);
	sb_add(&pre, "%s%s", set != NULL ? set : "", ar.s);
	free(set);
	m->prefix = pre.s;
	free(ar.s);

	struct strbuf sum = {0};
	sb_add(&sum, "spf=%s dkim=", spf_result_name(spf.result));
	if (nsigs == 0)
		sb_add(&sum, "%s", "none");
	for (size_t i = 0; i < nsigs; i++)
		sb_add(&sum, "%s%s", i > 0 ? "," : "", dkim_result_name(sigs[i].result));
	sb_add(&sum, " arc=%s dmarc=", arc_result_name(arc.result));
	if (m->nfrom == 0)
		sb_add(&sum, "%s", "none");
	for (size_t f = 0; f < m->nfrom; f++)
		sb_add(&sum, "%s%s", f > 0 ? "," : "", dmarc_result_name(dm[f].result));
	sb_add(&sum, "%s removed_ar=%u verdict=%s", arc_override ? " arc_override=yes" : "",
	       m->removed,
	       m->verdict == AUTH_REJECT       ? "reject"
	       : m->verdict == AUTH_QUARANTINE ? "quarantine"
					       : "accept");
	m->summary = sum.s;
	spf_outcome_free(&spf);
	if (helo_checked)
		spf_outcome_free(&spf_helo);
	arc_outcome_clear(&arc);
	m->keyres.ctx = NULL; /* &bd dies here */
}

void auth_msg_work(struct auth_msg *m)
{
	if (m->mode == AUTH_MODE_SIGN)
		sign_work(m);
	else
		verify_work(m);
}

bool auth_msg_done_early(struct auth_msg *m)
{
	/*
	 * No signer: header_done() found every domain that may sign without keys
	 * (known_keyless) or none that could. sign_work() would look the keys up
	 * again, find none, and leave no header field and "dkim_signed=0": the
	 * same here, without the round trip to a worker. The cache's answer is
	 * then not refreshed by this message; after KEYLESS_TRUST_MS the next
	 * message goes to a worker again, which looks the domain up and renews
	 * it (so a first key is used within about a second, as before).
	 */
	if (m->mode != AUTH_MODE_SIGN || m->signer != NULL || m->too_big || m->in_header)
		return false;
	m->verdict = AUTH_ACCEPT;
	free(m->summary);
	m->summary = xstrdup("dkim_signed=0");
	return true;
}

enum auth_verdict auth_msg_verdict(const struct auth_msg *m)
{
	return m->verdict;
}

const char *auth_msg_reject_text(const struct auth_msg *m)
{
	return m->reject_text != NULL ? m->reject_text : "550 5.7.1 Message rejected";
}

const char *auth_msg_prefix(const struct auth_msg *m)
{
	return m->prefix != NULL ? m->prefix : "";
}

const char *auth_msg_summary(const struct auth_msg *m)
{
	return m->summary != NULL ? m->summary : "";
}

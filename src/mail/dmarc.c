/* DMARC (RFC 7489): see dmarc.h. */
#include "mail/dmarc.h"

#include "lib/strutil.h"
#include "lib/xalloc.h"

#include <libpsl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *dmarc_policy_name(enum dmarc_policy p)
{
	switch (p) {
	case DMARC_POLICY_QUARANTINE:
		return "quarantine";
	case DMARC_POLICY_REJECT:
		return "reject";
	case DMARC_POLICY_NONE:
	default:
		return "none";
	}
}

const char *dmarc_result_name(enum dmarc_result r)
{
	static const char *const names[] = {"none", "pass", "fail", "temperror", "permerror"};
	return (unsigned)r < ARRAY_SIZE(names) ? names[r] : "none";
}

static bool is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* RFC 7489 6.4: dmarc-version = "v" *WSP "=" *WSP %x44 %x4d %x41 %x52 %x43 %x31 */
bool dmarc_is_record(const char *txt, size_t len)
{
	size_t i = 0;
	if (len == 0 || txt[i++] != 'v')
		return false;
	while (i < len && is_wsp(txt[i]))
		i++;
	if (i >= len || txt[i++] != '=')
		return false;
	while (i < len && is_wsp(txt[i]))
		i++;
	if (len - i < 6 || memcmp(txt + i, "DMARC1", 6) != 0)
		return false;
	i += 6;
	return i == len || is_wsp(txt[i]) || txt[i] == ';';
}

static bool value_is(const struct dkim_tag *t, const char *s)
{
	return t->value_len == strlen(s) && strncasecmp(t->value, s, t->value_len) == 0;
}

static int parse_policy(const struct dkim_tag *t, enum dmarc_policy *p)
{
	if (value_is(t, "none"))
		*p = DMARC_POLICY_NONE;
	else if (value_is(t, "quarantine"))
		*p = DMARC_POLICY_QUARANTINE;
	else if (value_is(t, "reject"))
		*p = DMARC_POLICY_REJECT;
	else
		return -1;
	return 0;
}

static int parse_align(const struct dkim_tag *t, enum dmarc_align *a)
{
	if (value_is(t, "r"))
		*a = DMARC_ALIGN_RELAXED;
	else if (value_is(t, "s"))
		*a = DMARC_ALIGN_STRICT;
	else
		return -1;
	return 0;
}

int dmarc_record_parse(const char *txt, size_t len, struct dmarc_record *rec,
		       const char **error_r)
{
	memset(rec, 0, sizeof(*rec));
	rec->pct = 100;
	if (len > DMARC_MAX_RECORD) {
		*error_r = "record too long";
		return -1;
	}
	if (!dmarc_is_record(txt, len)) {
		*error_r = "record does not start with v=DMARC1";
		return -1;
	}
	struct dkim_taglist *tl = xmalloc(sizeof(*tl));
	const char *err = NULL;
	int ret = -1;
	if (dkim_taglist_parse(txt, len, tl, &err) < 0) {
		*error_r = err != NULL ? err : "bad tag list";
		goto out;
	}
	if (tl->count > DMARC_MAX_TAGS) {
		*error_r = "too many tags";
		goto out;
	}
	bool has_p = false, bad_p = false;
	const struct dkim_tag *t;
	if ((t = dkim_taglist_get(tl, "p")) != NULL) {
		if (parse_policy(t, &rec->p) == 0)
			has_p = true;
		else
			bad_p = true;
	}
	if ((t = dkim_taglist_get(tl, "rua")) != NULL && t->value_len > 0)
		rec->has_rua = true;
	if (!has_p) {
		/* RFC 7489 6.6.3 step 6: a valid rua= rescues a missing or bad p= */
		if (!rec->has_rua) {
			*error_r = bad_p ? "invalid p= value" : "no p= tag";
			goto out;
		}
		rec->p = DMARC_POLICY_NONE;
	}
	rec->sp = rec->p;
	if ((t = dkim_taglist_get(tl, "sp")) != NULL) {
		if (parse_policy(t, &rec->sp) < 0) {
			*error_r = "invalid sp= value";
			goto out;
		}
		rec->has_sp = true;
	}
	if ((t = dkim_taglist_get(tl, "adkim")) != NULL && parse_align(t, &rec->adkim) < 0) {
		*error_r = "invalid adkim= value";
		goto out;
	}
	if ((t = dkim_taglist_get(tl, "aspf")) != NULL && parse_align(t, &rec->aspf) < 0) {
		*error_r = "invalid aspf= value";
		goto out;
	}
	if ((t = dkim_taglist_get(tl, "pct")) != NULL) {
		unsigned v = 0;
		if (t->value_len == 0 || t->value_len > 3) {
			*error_r = "invalid pct= value";
			goto out;
		}
		for (size_t i = 0; i < t->value_len; i++) {
			if (t->value[i] < '0' || t->value[i] > '9') {
				*error_r = "invalid pct= value";
				goto out;
			}
			v = v * 10 + (unsigned)(t->value[i] - '0');
		}
		if (v > 100) {
			*error_r = "invalid pct= value";
			goto out;
		}
		rec->pct = v;
	}
	ret = 0;
out:
	free(tl);
	return ret;
}

/* ---- organizational domain ---- */

static psl_ctx_t *psl;
static pthread_once_t psl_once = PTHREAD_ONCE_INIT;

static void psl_load(void)
{
	/* the newer of the system's list (publicsuffix package) and libpsl's built-in data */
	psl = psl_latest(NULL);
}

/* Lowercase copy without a trailing dot; false for an empty name, empty labels or
   a name too long. */
static bool normalize(const char *domain, char *buf, size_t size)
{
	if (domain == NULL)
		return false;
	size_t n = strlen(domain);
	if (n > 0 && domain[n - 1] == '.')
		n--;
	if (n == 0 || n > DMARC_MAX_DOMAIN || n + 1 > size)
		return false;
	memcpy(buf, domain, n);
	buf[n] = '\0';
	str_lower(buf);
	if (buf[0] == '.' || strstr(buf, "..") != NULL)
		return false;
	return true;
}

const char *dmarc_registrable_domain(const char *domain, char *buf, size_t size)
{
	char name[DMARC_MAX_DOMAIN + 1];
	if (!normalize(domain, name, sizeof(name)))
		return NULL;
	pthread_once(&psl_once, psl_load);
	if (psl == NULL)
		return NULL;
	const char *r = psl_registrable_domain(psl, name);
	if (r == NULL || strlen(r) + 1 > size)
		return NULL;
	memmove(buf, r, strlen(r) + 1);
	return buf;
}

const char *dmarc_org_domain(const char *domain, char *buf, size_t size)
{
	if (dmarc_registrable_domain(domain, buf, size) != NULL)
		return buf;
	if (!normalize(domain, buf, size))
		return NULL;
	return buf;
}

bool dmarc_aligned(const char *from_domain, const char *auth_domain, enum dmarc_align mode)
{
	char a[DMARC_MAX_DOMAIN + 1], b[DMARC_MAX_DOMAIN + 1];
	if (!normalize(from_domain, a, sizeof(a)) || !normalize(auth_domain, b, sizeof(b)))
		return false;
	if (strcmp(a, b) == 0)
		return true;
	if (mode == DMARC_ALIGN_STRICT)
		return false;
	char oa[DMARC_MAX_DOMAIN + 1], ob[DMARC_MAX_DOMAIN + 1];
	if (dmarc_org_domain(a, oa, sizeof(oa)) == NULL || dmarc_org_domain(b, ob, sizeof(ob)) == NULL)
		return false;
	return strcmp(oa, ob) == 0;
}

/* ---- evaluation ---- */

enum lookup { L_FOUND, L_NONE, L_TEMP, L_BAD };

/* RFC 7489 6.6.3 steps 1-3 for one name: exactly one v=DMARC1 record. */
static enum lookup lookup_record(const struct dkim_key_resolver *res, const char *domain,
				 struct dmarc_record *rec, const char **reason_r)
{
	char name[DMARC_MAX_DOMAIN + 16];
	snprintf(name, sizeof(name), "_dmarc.%s", domain);
	struct dkim_txt txt = {0};
	int rc = res->txt(res->ctx, name, &txt);
	enum lookup ret = L_NONE;
	if (rc == DKIM_DNS_TEMPFAIL) {
		*reason_r = "policy lookup failed";
		ret = L_TEMP;
		goto out;
	}
	if (rc != DKIM_DNS_OK)
		goto out;
	size_t found = 0, which = 0;
	for (size_t i = 0; i < txt.count; i++) {
		if (dmarc_is_record(txt.records[i], txt.lens[i])) {
			found++;
			which = i;
		}
	}
	if (found == 0)
		goto out;
	if (found > 1) {
		/* step 5: several records end policy discovery */
		*reason_r = "several policy records";
		ret = L_BAD;
		goto out;
	}
	const char *err = NULL;
	if (dmarc_record_parse(txt.records[which], txt.lens[which], rec, &err) < 0) {
		*reason_r = err;
		ret = L_BAD;
		goto out;
	}
	ret = L_FOUND;
out:
	dkim_txt_clear(&txt);
	return ret;
}

enum dmarc_result dmarc_evaluate(const struct dkim_key_resolver *res,
				 const struct dmarc_input *in, struct dmarc_outcome *out)
{
	memset(out, 0, sizeof(*out));
	out->result = DMARC_NONE;
	out->reason = "no policy";
	char from[DMARC_MAX_DOMAIN + 1], org[DMARC_MAX_DOMAIN + 1];
	if (!normalize(in->from_domain, from, sizeof(from))) {
		out->result = DMARC_PERMERROR;
		out->reason = "no usable From domain";
		return out->result;
	}
	if (dmarc_org_domain(from, org, sizeof(org)) == NULL)
		snprintf(org, sizeof(org), "%s", from);

	struct dmarc_record rec;
	const char *reason = NULL;
	bool at_org = false;
	enum lookup l = lookup_record(res, from, &rec, &reason);
	if (l == L_NONE && strcmp(org, from) != 0) {
		l = lookup_record(res, org, &rec, &reason);
		at_org = true;
	}
	switch (l) {
	case L_NONE:
		return out->result;
	case L_TEMP:
		out->result = DMARC_TEMPERROR;
		out->reason = reason;
		return out->result;
	case L_BAD:
		out->result = DMARC_PERMERROR;
		out->reason = reason;
		return out->result;
	case L_FOUND:
		break;
	}
	snprintf(out->record_domain, sizeof(out->record_domain), "%s", at_org ? org : from);
	/* RFC 7489 6.3 sp: the policy for subdomains, when the record is the org domain's */
	out->policy = at_org ? rec.sp : rec.p;

	for (size_t i = 0; i < in->ndkim && !out->dkim_aligned; i++)
		if (in->dkim[i].result == DKIM_PASS && in->dkim[i].domain != NULL &&
		    dmarc_aligned(from, in->dkim[i].domain, rec.adkim))
			out->dkim_aligned = true;
	if (in->spf == SPF_PASS && in->spf_domain != NULL &&
	    dmarc_aligned(from, in->spf_domain, rec.aspf))
		out->spf_aligned = true;

	out->reason = "";
	if (out->spf_aligned || out->dkim_aligned) {
		out->result = DMARC_PASS;
		return out->result;
	}
	out->result = DMARC_FAIL;
	out->disposition = out->policy;
	if (in->sample >= rec.pct && out->disposition != DMARC_POLICY_NONE) {
		/* RFC 7489 6.6.4: not sampled, the next milder policy applies */
		out->disposition = out->disposition == DMARC_POLICY_REJECT ? DMARC_POLICY_QUARANTINE
									     : DMARC_POLICY_NONE;
		out->sampled_out = true;
	}
	return out->result;
}

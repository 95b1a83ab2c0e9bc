/*
 * The per-message cache of the mailbox index: ENVELOPE, BODYSTRUCTURE,
 * BODY and the decoded header values SEARCH and SORT use, computed once
 * from the message file (mail/mime.h does the parsing), plus the Date:
 * header parser.
 */
#include "lib/xalloc.h"
#include "mail/mime.h"
#include "store/mailbox-private.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void mbox_cache_clear(struct mbox_cache *c)
{
	xfree(&c->envelope);
	xfree(&c->bodystructure);
	xfree(&c->body);
	xfree(&c->subject);
	xfree(&c->from);
	xfree(&c->to);
	xfree(&c->cc);
	xfree(&c->bcc);
	xfree(&c->message_id);
	xfree(&c->in_reply_to);
	xfree(&c->references);
	xfree(&c->sort_from);
	xfree(&c->sort_to);
	xfree(&c->sort_cc);
	xfree(&c->display_from);
	xfree(&c->display_to);
	c->date = 0;
	c->date_tz = 0;
}

/* ---- Date: (RFC 5322 3.3 and 4.3) ---- */

static const char *skip_cfws(const char *p)
{
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
			p++;
		if (*p != '(')
			return p;
		int depth = 0;
		for (; *p != '\0'; p++) {
			if (*p == '\\' && p[1] != '\0')
				p++;
			else if (*p == '(')
				depth++;
			else if (*p == ')' && --depth == 0) {
				p++;
				break;
			}
		}
	}
}

static const char *parse_num(const char *p, int maxdigits, int *v_r, int *ndigits_r)
{
	int v = 0, n = 0;
	while (n < maxdigits && isdigit((unsigned char)p[n])) {
		v = v * 10 + (p[n] - '0');
		n++;
	}
	if (n == 0)
		return NULL;
	*v_r = v;
	if (ndigits_r != NULL)
		*ndigits_r = n;
	return p + n;
}

static int64_t days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static bool zone_name(const char *p, size_t n, int *tz_r)
{
	static const struct {
		const char *name;
		int minutes;
	} zones[] = {
	    {"UT", 0},     {"GMT", 0},    {"Z", 0},      {"EST", -300},
	    {"EDT", -240}, {"CST", -360}, {"CDT", -300}, {"MST", -420},
	    {"MDT", -360}, {"PST", -480}, {"PDT", -420},
	};
	for (size_t i = 0; i < ARRAY_SIZE(zones); i++)
		if (strlen(zones[i].name) == n && strncasecmp(p, zones[i].name, n) == 0) {
			*tz_r = zones[i].minutes;
			return true;
		}
	/* RFC 5322 4.3: other military zones "SHOULD all be considered equivalent to -0000" */
	if (n == 1 && isalpha((unsigned char)*p) && *p != 'j' && *p != 'J') {
		*tz_r = 0;
		return true;
	}
	return false;
}

int mbox_parse_date(const char *s, int64_t *t_r, int *tz_r)
{
	static const char months[] = "janfebmaraprmayjunjulaugsepoctnovdec";
	const char *p = skip_cfws(s);
	/* optional day name and comma */
	if (isalpha((unsigned char)*p)) {
		while (isalpha((unsigned char)*p))
			p++;
		p = skip_cfws(p);
		if (*p == ',')
			p = skip_cfws(p + 1);
	}
	int day, year, ydigits, hour, min, sec = 0;
	if ((p = parse_num(p, 2, &day, NULL)) == NULL)
		return -1;
	p = skip_cfws(p);
	if (*p == '-')
		p++;
	if (strlen(p) < 3)
		return -1;
	char mon[4] = {(char)tolower((unsigned char)p[0]), (char)tolower((unsigned char)p[1]),
	               (char)tolower((unsigned char)p[2]), 0};
	const char *m = strstr(months, mon);
	if (m == NULL || (m - months) % 3 != 0)
		return -1;
	int month = (int)(m - months) / 3 + 1;
	p += 3;
	while (isalpha((unsigned char)*p))
		p++; /* "March" */
	p = skip_cfws(p);
	if (*p == '-')
		p++;
	if ((p = parse_num(p, 4, &year, &ydigits)) == NULL)
		return -1;
	if (ydigits == 2)
		year += year < 50 ? 2000 : 1900;
	else if (ydigits == 3)
		year += 1900;
	p = skip_cfws(p);
	if ((p = parse_num(p, 2, &hour, NULL)) == NULL)
		return -1;
	p = skip_cfws(p);
	if (*p != ':')
		return -1;
	p = skip_cfws(p + 1);
	if ((p = parse_num(p, 2, &min, NULL)) == NULL)
		return -1;
	p = skip_cfws(p);
	if (*p == ':') {
		p = skip_cfws(p + 1);
		if ((p = parse_num(p, 2, &sec, NULL)) == NULL)
			return -1;
		p = skip_cfws(p);
	}
	int tz = 0;
	if (*p == '+' || *p == '-') {
		int v, nd;
		const char *e = parse_num(p + 1, 4, &v, &nd);
		if (e == NULL || nd != 4)
			return -1;
		tz = (v / 100) * 60 + v % 100;
		if (*p == '-')
			tz = -tz;
	} else if (isalpha((unsigned char)*p)) {
		size_t n = 0;
		while (isalpha((unsigned char)p[n]))
			n++;
		if (!zone_name(p, n, &tz))
			tz = 0; /* unknown zone: RFC 5322 4.3 treats it as -0000 */
	}
	if (day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60)
		return -1;
	int64_t t = days_from_civil(year, month, day) * 86400 + hour * 3600 + min * 60 + sec;
	*t_r = t - (int64_t)tz * 60;
	*tz_r = tz;
	return 0;
}

/* ---- header values ---- */

enum hdr {
	H_SUBJECT,
	H_FROM,
	H_TO,
	H_CC,
	H_BCC,
	H_MESSAGE_ID,
	H_IN_REPLY_TO,
	H_REFERENCES,
	H_DATE,
	H_COUNT
};

static const char *const hdr_names[H_COUNT] = {
    "subject", "from", "to", "cc", "bcc", "message-id", "in-reply-to", "references", "date",
};

/* The first occurrence of each wanted field in the header block [p, p+len): value (raw). */
static void find_headers(const char *p, size_t len, const char *val_r[H_COUNT],
                         size_t len_r[H_COUNT])
{
	const char *end = p + len;
	while (p < end) {
		const char *line_end = memchr(p, '\n', (size_t)(end - p));
		if (line_end == NULL)
			line_end = end;
		if (p == line_end || (*p == '\r' && p + 1 == line_end))
			break; /* blank line: end of header */
		/* the field runs over continuation lines */
		const char *fend = line_end;
		while (fend + 1 < end && (fend[1] == ' ' || fend[1] == '\t')) {
			const char *n = memchr(fend + 1, '\n', (size_t)(end - fend - 1));
			fend = n != NULL ? n : end;
		}
		const char *colon = memchr(p, ':', (size_t)(line_end - p));
		if (colon != NULL) {
			size_t nlen = (size_t)(colon - p);
			while (nlen > 0 && (p[nlen - 1] == ' ' || p[nlen - 1] == '\t'))
				nlen--;
			for (int h = 0; h < H_COUNT; h++) {
				if (val_r[h] == NULL && strlen(hdr_names[h]) == nlen &&
				    strncasecmp(p, hdr_names[h], nlen) == 0) {
					const char *v = colon + 1;
					while (v < fend && (*v == ' ' || *v == '\t'))
						v++;
					size_t vl = (size_t)(fend - v);
					if (vl > 0 && v[vl - 1] == '\r')
						vl--;
					val_r[h] = v;
					len_r[h] = vl;
				}
			}
		}
		p = fend < end ? fend + 1 : end;
	}
}

static char *dup_unfolded(const char *v, size_t len)
{
	char *s = xmalloc(len + 1), *o = s;
	for (size_t i = 0; i < len; i++) {
		if (v[i] == '\r' || v[i] == '\n')
			continue;
		*o++ = v[i] == '\0' ? ' ' : v[i];
	}
	*o = '\0';
	return s;
}

static char *lower_dup(const char *s)
{
	char *d = xstrdup(s != NULL ? s : "");
	for (char *p = d; *p != '\0'; p++)
		*p = (char)tolower((unsigned char)*p);
	return d;
}

/* SORT (RFC 5256) keys of an address list: mailbox of the first address, display name or addr-spec.
 */
static void address_keys(const char *v, size_t len, char **sort_r, char **display_r)
{
	struct mime_address *list = v != NULL ? mime_address_parse(v, len, 16) : NULL;
	const struct mime_address *a = list;
	while (a != NULL && (a->group_start || a->group_end))
		a = a->next;
	if (a == NULL) {
		*sort_r = xstrdup("");
		if (display_r != NULL)
			*display_r = xstrdup("");
	} else {
		*sort_r = lower_dup(a->mailbox);
		if (display_r != NULL) {
			if (a->name != NULL && a->name[0] != '\0')
				*display_r = mime_decode_header(a->name, strlen(a->name));
			else
				*display_r = xasprintf("%s@%s", a->mailbox ? a->mailbox : "",
				                       a->domain ? a->domain : "");
		}
	}
	mime_address_free(&list);
}

void mbox_cache_compute(const void *data, size_t len, struct mbox_cache *c, uint64_t *vsize_r)
{
	memset(c, 0, sizeof(*c));
	struct mime_part *root = mime_message_parse(data, len, NULL);
	c->envelope = root->envelope != NULL ? xstrdup(root->envelope) : mime_envelope_string(root);
	c->bodystructure = mime_bodystructure(root, true);
	c->body = mime_bodystructure(root, false);
	*vsize_r = root->header_vsize + root->body_vsize;

	const char *val[H_COUNT] = {0};
	size_t vlen[H_COUNT] = {0};
	find_headers(data, (size_t)root->header_size, val, vlen);
	mime_part_free(&root);

	char **dst[H_COUNT] = {&c->subject,    &c->from,        &c->to,         &c->cc, &c->bcc,
	                       &c->message_id, &c->in_reply_to, &c->references, NULL};
	for (int h = 0; h < H_COUNT; h++) {
		if (dst[h] == NULL)
			continue;
		if (val[h] == NULL)
			*dst[h] = xstrdup("");
		else if (h <= H_BCC)
			*dst[h] = mime_decode_header(val[h], vlen[h]);
		else
			*dst[h] = dup_unfolded(val[h], vlen[h]);
	}
	address_keys(val[H_FROM], vlen[H_FROM], &c->sort_from, &c->display_from);
	address_keys(val[H_TO], vlen[H_TO], &c->sort_to, &c->display_to);
	address_keys(val[H_CC], vlen[H_CC], &c->sort_cc, NULL);
	if (val[H_DATE] != NULL) {
		char *d = dup_unfolded(val[H_DATE], vlen[H_DATE]);
		if (mbox_parse_date(d, &c->date, &c->date_tz) < 0) {
			c->date = 0;
			c->date_tz = 0;
		}
		free(d);
	}
}

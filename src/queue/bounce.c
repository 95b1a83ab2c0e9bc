/*
 * Delivery status notifications (RFC 3464, RFC 3461 RET/ENVID/ORCPT, RFC
 * 6533 for internationalized addresses and headers): the
 * message a sender gets when a recipient failed (a bounce) or is still
 * deferred after [queue] warn_after (a delay notice).
 *
 * Pure text generation; the outbound agent injects the result into the
 * queue with the null envelope sender, so a DSN never causes another one.
 * Envelope values are copied into header fields only after every control
 * character was replaced, so nothing from a peer can add a header line.
 */
#include "lib/xalloc.h"
#include "queue/outbound.h"
#include "queue/queue.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct sbuf {
	char *s;
	size_t len, cap;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
	b->s = xgrow(b->s, &b->cap, b->len + n + 1, 1);
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = NULL;
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		abort();
	sb_add(b, s, (size_t)n);
	free(s);
}

static bool has_8bit(const char *s)
{
	for (; s != NULL && *s != '\0'; s++)
		if ((unsigned char)*s >= 0x80)
			return true;
	return false;
}

/* The header of the original (its first 64 KiB) has octets above 127. */
static bool original_header_8bit(int fd)
{
	char buf[65536];
	ssize_t n = pread(fd, buf, sizeof(buf), 0);
	int last = '\n', prev = '\r';
	for (ssize_t i = 0; i < n; i++) {
		int c = (unsigned char)buf[i];
		if (c >= 0x80)
			return true;
		if (c == '\n' && (last == '\n' || (last == '\r' && prev == '\n')))
			return false;
		prev = last;
		last = c;
	}
	return false;
}

/* A value safe for one header or DSN field line: controls become '?'. */
static char *field(const char *s)
{
	char *o = xstrdup(s != NULL ? s : "");
	for (char *p = o; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	return o;
}

static void rfc822_date(time_t t, char *buf, size_t size)
{
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, size, "%a, %d %b %Y %H:%M:%S +0000", &tm);
}

/* Append the original message (all, or up to its blank line) with CRLF lines. */
static void add_original(struct sbuf *b, int fd, bool header_only, uint64_t max)
{
	char buf[16384];
	uint64_t total = 0;
	int last = '\n', prev = '\r';
	bool done = false;
	if (lseek(fd, 0, SEEK_SET) < 0)
		return;
	while (!done && total < max) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		size_t take = (size_t)n;
		if (total + take > max)
			take = (size_t)(max - total);
		if (header_only) {
			/* stop after the empty line that ends the header */
			for (size_t i = 0; i < take; i++) {
				int c = (unsigned char)buf[i];
				if (c == '\n' && (last == '\n' || (last == '\r' && prev == '\n'))) {
					take = i + 1;
					done = true;
					break;
				}
				prev = last;
				last = c;
			}
		}
		sb_add(b, buf, take);
		total += take;
	}
	if (b->len >= 2 && !(b->s[b->len - 2] == '\r' && b->s[b->len - 1] == '\n'))
		sb_add(b, "\r\n", 2);
}

char *bounce_build(const struct bounce_input *in, size_t *len_r)
{
	struct sbuf b = {0};
	char date[64], arrival[64];
	rfc822_date(in->now, date, sizeof(date));
	rfc822_date(in->arrival, arrival, sizeof(arrival));
	bool delayed = in->nrcpts > 0;
	for (size_t i = 0; i < in->nrcpts; i++)
		delayed = delayed && in->rcpts[i].delayed;
	char boundary[96];
	snprintf(boundary, sizeof(boundary), "%s.%lld/%s", in->queue_id, (long long)in->now,
		 in->hostname);
	char *host = field(in->hostname), *to = field(in->sender);

	sb_printf(&b, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", host);
	sb_printf(&b, "To: <%s>\r\n", to);
	sb_printf(&b, "Subject: %s\r\n",
		  delayed ? "Delayed Mail (still being retried)"
			  : "Undelivered Mail Returned to Sender");
	sb_printf(&b, "Date: %s\r\n", date);
	sb_printf(&b, "Message-ID: <%s.%s.%lld@%s>\r\n", in->queue_id, delayed ? "delay" : "bounce",
		  (long long)in->now, host);
	sb_printf(&b, "Auto-Submitted: auto-replied\r\n");
	sb_printf(&b, "MIME-Version: 1.0\r\n");
	sb_printf(&b,
		  "Content-Type: multipart/report; report-type=delivery-status;\r\n"
		  "\tboundary=\"%s\"\r\n",
		  boundary);
	sb_printf(&b, "\r\nThis is a MIME-encapsulated message.\r\n\r\n");

	/* 1. for people */
	sb_printf(&b, "--%s\r\nContent-Type: text/plain; charset=utf-8\r\n"
		      "Content-Description: Notification\r\n\r\n", boundary);
	sb_printf(&b, "This is the mail system at host %s.\r\n\r\n", host);
	if (delayed)
		sb_printf(&b, "Your message could not be delivered yet to the recipients below.\r\n"
			      "It is still being retried; you do not need to send it again.\r\n\r\n");
	else
		sb_printf(&b, "Your message could not be delivered to the recipients below.\r\n"
			      "This is a permanent error; it will not be retried.\r\n\r\n");
	for (size_t i = 0; i < in->nrcpts; i++) {
		char *a = field(in->rcpts[i].address), *d = field(in->rcpts[i].diagnostic);
		sb_printf(&b, "<%s>: %s\r\n", a, d);
		free(a);
		free(d);
	}
	sb_printf(&b, "\r\n");

	/*
	 * 2. for programs (RFC 3464 2.2, 2.3). A non-ASCII address makes it a
	 * message/global-delivery-status with "utf-8" addresses (RFC 6533 3, 6).
	 */
	bool global = false;
	for (size_t i = 0; i < in->nrcpts; i++)
		global = global || has_8bit(in->rcpts[i].address);
	sb_printf(&b, "--%s\r\nContent-Type: message/%sdelivery-status\r\n"
		      "Content-Description: Delivery report\r\n\r\n", boundary,
		  global ? "global-" : "");
	sb_printf(&b, "Reporting-MTA: dns; %s\r\n", host);
	sb_printf(&b, "X-Postern-Queue-ID: %s\r\n", in->queue_id);
	if (in->envid != NULL) {
		char *e = field(in->envid);
		sb_printf(&b, "Original-Envelope-Id: %s\r\n", e);
		free(e);
	}
	sb_printf(&b, "Arrival-Date: %s\r\n", arrival);
	for (size_t i = 0; i < in->nrcpts; i++) {
		const struct bounce_rcpt *r = &in->rcpts[i];
		char *a = field(r->address), *d = field(r->diagnostic);
		sb_printf(&b, "\r\n");
		if (r->orcpt != NULL) {
			char *o = field(r->orcpt);
			sb_printf(&b, "Original-Recipient: %s\r\n", o);
			free(o);
		}
		sb_printf(&b, "Final-Recipient: %s; %s\r\n", has_8bit(a) ? "utf-8" : "rfc822", a);
		sb_printf(&b, "Action: %s\r\n", r->delayed ? "delayed" : "failed");
		sb_printf(&b, "Status: %s\r\n", r->status);
		if (r->remote_mta != NULL) {
			char *m = field(r->remote_mta);
			sb_printf(&b, "Remote-MTA: dns; %s\r\n", m);
			free(m);
		}
		/* a three-digit reply is an SMTP diagnostic (RFC 3464 2.3.6) */
		bool smtp = d[0] >= '2' && d[0] <= '5' && d[1] >= '0' && d[1] <= '9' &&
			    d[2] >= '0' && d[2] <= '9' && (d[3] == ' ' || d[3] == '\0');
		sb_printf(&b, "Diagnostic-Code: %s; %s\r\n", smtp ? "smtp" : "x-postern", d);
		sb_printf(&b, "Last-Attempt-Date: %s\r\n", date);
		free(a);
		free(d);
	}
	sb_printf(&b, "\r\n");

	/* 3. the original: RET=FULL the message, else its header (RFC 3461 4.3) */
	if (in->fd >= 0) {
		/* a UTF-8 header goes as message/global(-headers) (RFC 6532 3.7, RFC 6533 6.3) */
		bool utf8 = original_header_8bit(in->fd);
		sb_printf(&b, "--%s\r\nContent-Type: %s\r\nContent-Description: %s\r\n\r\n",
			  boundary,
			  in->full ? (utf8 ? "message/global" : "message/rfc822")
				   : (utf8 ? "message/global-headers" : "text/rfc822-headers"),
			  in->full ? "Undelivered Message" : "Undelivered Message Headers");
		add_original(&b, in->fd, !in->full, in->max_return);
	}
	sb_printf(&b, "\r\n--%s--\r\n", boundary);
	free(host);
	free(to);
	*len_r = b.len;
	return b.s;
}

/*
 * `postern sendmail`: the sendmail(8) interface for local programs (PHP's
 * `sendmail -t -i`, cron, mail(1)). Reads one message from stdin, completes
 * its header (From, Date, Message-ID), and submits it over SMTP to the
 * server's first `[listen] smtp` address, which trusts the loopback client.
 *
 * A small blocking SMTP client: no TLS (loopback only), no pipelining.
 * Recipients are all-or-nothing: if the server refuses any of them nothing
 * is sent, so a caller that retries never makes duplicates.
 *
 * Exit codes (sysexits.h): 0 sent, EX_USAGE bad options, EX_DATAERR no or
 * bad recipients / bad input, EX_UNAVAILABLE a 5xx refusal, EX_TEMPFAIL
 * server down or a 4xx answer, EX_PROTOCOL a reply that makes no sense,
 * EX_CONFIG a configuration error.
 *
 * SECURITY: runs as any local user, with that user's privileges only; the
 * message is untrusted text and is only copied, never interpreted beyond
 * its header fields.
 */
#include "cli/cli_common.h"
#include "lib/config.h"
#include "lib/netaddr.h"
#include "lib/strutil.h"
#include "lib/xalloc.h"
#include "mail/address.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#define CONNECT_TIMEOUT 30  /* seconds */
#define REPLY_TIMEOUT 600   /* seconds; RFC 5321 4.5.3.2.6: 10 min for the final DATA reply */
#define REPLY_LINE_MAX 2048 /* longer reply lines are a protocol error */
#define REPLY_LINES_MAX 100 /* lines in one multi-line reply */

/* ---- the message ---- */

struct line {
	char *s; /* without its line end; may hold any byte but LF */
	size_t len;
	bool removed; /* Bcc: and the mbox "From " line are dropped */
};

struct message {
	struct line *lines;
	size_t n, cap;
	size_t header_end; /* index of the first body line (after the blank line, if any) */
	bool has_blank;    /* the header ended with an empty line */
	bool eight_bit;    /* a byte >= 0x80 somewhere */
	uint64_t size;
};

static void strlist_add_unique(struct cli_strlist *l, const char *s)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->v[i], s) == 0)
			return;
	l->v = xgrow(l->v, &l->cap, l->n + 1, sizeof(*l->v));
	l->v[l->n++] = xstrdup(s);
}

void cli_strlist_free(struct cli_strlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

static void message_free(struct message *m)
{
	for (size_t i = 0; i < m->n; i++)
		free(m->lines[i].s);
	free(m->lines);
	memset(m, 0, sizeof(*m));
}

/*
 * Read the message from `in`. Without `dot_ends` (-i) only end of input
 * ends it; with it a line holding a single '.' does too. CRLF and LF line
 * ends are both accepted. More than `limit` bytes is an error.
 * 0 ok, -1 too large or read error (printed).
 */
static int message_read(FILE *in, bool dot_ends, uint64_t limit, struct message *m)
{
	char *buf = NULL;
	size_t cap = 0;
	ssize_t n;
	while ((n = getline(&buf, &cap, in)) > 0) {
		size_t len = (size_t)n;
		if (buf[len - 1] == '\n')
			len--;
		if (len > 0 && buf[len - 1] == '\r')
			len--;
		if (dot_ends && len == 1 && buf[0] == '.')
			break;
		m->size += len + 2;
		if (m->size > limit) {
			free(buf);
			cli_error("sendmail: the message is larger than the server accepts "
				  "([limits] max_message_size)");
			return -1;
		}
		for (size_t i = 0; i < len && !m->eight_bit; i++)
			if ((unsigned char)buf[i] >= 0x80)
				m->eight_bit = true;
		m->lines = xgrow(m->lines, &m->cap, m->n + 1, sizeof(*m->lines));
		char *copy = xmalloc(len + 1); /* not xstrndup: the line may hold NULs */
		memcpy(copy, buf, len);
		copy[len] = '\0';
		m->lines[m->n++] = (struct line){copy, len, false};
	}
	free(buf);
	if (ferror(in)) {
		cli_error("sendmail: reading the message: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* Length of the field name if `l` starts a header field ("Name:"), else 0. */
static size_t field_name_len(const struct line *l)
{
	size_t i = 0;
	while (i < l->len && l->s[i] > 32 && l->s[i] < 127 && l->s[i] != ':')
		i++;
	if (i == 0 || i >= l->len || l->s[i] != ':')
		return 0;
	return i;
}

static bool is_field(const struct line *l, const char *name)
{
	size_t n = field_name_len(l);
	return n != 0 && n == strlen(name) && strncasecmp(l->s, name, n) == 0;
}

/* Find where the header ends: at the first empty line, or the first line that is no field. */
static void message_split(struct message *m)
{
	size_t i = 0;
	if (m->n > 0 && m->lines[0].len >= 5 && memcmp(m->lines[0].s, "From ", 5) == 0) {
		m->lines[0].removed = true; /* an mbox separator, not part of the message */
		i = 1;
	}
	size_t first = i;
	for (; i < m->n; i++) {
		const struct line *l = &m->lines[i];
		if (l->len == 0) {
			m->has_blank = true;
			m->header_end = i + 1;
			return;
		}
		if ((l->s[0] == ' ' || l->s[0] == '\t') && i > first)
			continue; /* folded continuation */
		if (field_name_len(l) == 0)
			break;
	}
	m->header_end = i;
}

/* The unfolded value of the field starting at line i (continuations included). */
static char *field_value(const struct message *m, size_t i, size_t *next_r)
{
	size_t name = field_name_len(&m->lines[i]);
	size_t end = m->has_blank ? m->header_end - 1 : m->header_end;
	char *v = xstrdup(m->lines[i].s + name + 1);
	size_t j = i + 1;
	for (; j < end && (m->lines[j].s[0] == ' ' || m->lines[j].s[0] == '\t'); j++) {
		char *w = xasprintf("%s%s", v, m->lines[j].s);
		free(v);
		v = w;
	}
	*next_r = j;
	return v;
}

/* ---- addresses ---- */

/*
 * Check one address (local@domain, or a bare local part that gets
 * @hostname) and add it in canonical form. 0 ok, -1 bad (printed).
 */
static int add_address(const char *addr, const char *hostname, struct cli_strlist *out,
		       unsigned *flags_r)
{
	bool quoted = false;
	for (const char *p = addr; *p != '\0'; p++) {
		if (*p == '\\' && quoted && p[1] != '\0')
			p++;
		else if (*p == '"')
			quoted = !quoted;
		else if ((*p == ' ' || *p == '\t') && !quoted) {
			cli_error("sendmail: bad address %s: separate addresses with commas", addr);
			return -1;
		}
	}
	char *path = strchr(addr, '@') != NULL ? xasprintf("<%s>", addr)
					       : xasprintf("<%s@%s>", addr, hostname);
	struct address a;
	size_t consumed;
	const char *err;
	int ret = address_parse_path(path, strlen(path), ADDRESS_ALLOW_UTF8, &a, &consumed, &err);
	if (ret < 0 || consumed != strlen(path)) {
		cli_error("sendmail: bad address %s: %s", addr, ret < 0 ? err : "trailing text");
		free(path);
		return -1;
	}
	free(path);
	char buf[ADDRESS_FORMAT_SIZE];
	strlist_add_unique(out, address_format(&a, buf, sizeof(buf)));
	*flags_r |= a.flags;
	return 0;
}

/* A copy of the `len` bytes at `s` without surrounding blanks. */
static char *trimmed(const char *s, size_t len)
{
	while (len > 0 && (*s == ' ' || *s == '\t')) {
		s++;
		len--;
	}
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	return xstrndup(s, len);
}

/*
 * Parse an RFC 5322 address-list (display names, <angle-addr>, comments,
 * quoted strings, groups) as found in To/Cc/Bcc or on the command line,
 * adding each mailbox to `out`. 0 ok, -1 malformed (printed).
 */
int sendmail_address_list(const char *s, const char *hostname, struct cli_strlist *out,
			  unsigned *flags_r)
{
	size_t n = strlen(s);
	char *item = xmalloc(n + 1), *angle = NULL;
	size_t ilen = 0;
	int ret = 0;
	for (size_t i = 0; i <= n && ret == 0; i++) {
		char ch = i < n ? s[i] : ',';
		if (ch == '(') {
			/* comment, possibly nested, with quoted-pairs */
			int depth = 1;
			for (i++; i < n && depth > 0; i++) {
				if (s[i] == '\\' && i + 1 < n)
					i++;
				else if (s[i] == '(')
					depth++;
				else if (s[i] == ')')
					depth--;
			}
			if (depth > 0)
				goto bad;
			i--;
			item[ilen++] = ' ';
		} else if (ch == '"' || ch == '[') {
			/* quoted string or domain literal, copied whole */
			char close = ch == '"' ? '"' : ']';
			item[ilen++] = ch;
			for (i++; i < n && s[i] != close; i++) {
				if (s[i] == '\\' && i + 1 < n)
					item[ilen++] = s[i++];
				item[ilen++] = s[i];
			}
			if (i >= n)
				goto bad;
			item[ilen++] = close;
		} else if (ch == '<') {
			if (angle != NULL)
				goto bad;
			size_t start = i + 1;
			bool quoted = false;
			for (i++; i < n && (quoted || s[i] != '>'); i++) {
				if (s[i] == '\\' && i + 1 < n)
					i++;
				else if (s[i] == '"')
					quoted = !quoted;
			}
			if (i >= n)
				goto bad;
			angle = trimmed(s + start, i - start);
		} else if (ch == ':' && angle == NULL) {
			ilen = 0; /* "group name:" starts a group */
		} else if (ch == ',' || ch == ';') {
			char *addr = angle != NULL ? angle : trimmed(item, ilen);
			angle = NULL;
			ilen = 0;
			const char *a = addr;
			if (a[0] == '@') {
				/* obsolete source route "@a,@b:user@c" inside <> */
				const char *colon = strchr(a, ':');
				a = colon ? colon + 1 : a + strlen(a);
			}
			if (a[0] != '\0' && add_address(a, hostname, out, flags_r) < 0)
				ret = -1;
			free(addr);
		} else {
			item[ilen++] = ch;
		}
	}
	free(item);
	free(angle);
	return ret;
bad:
	cli_error("sendmail: malformed address list: %s", s);
	free(item);
	free(angle);
	return -1;
}

/* The user running us, for the envelope sender and From: */
static const char *login_name(void)
{
	const char *name = getenv("LOGNAME");
	if (name == NULL || *name == '\0')
		name = getenv("USER");
	if (name == NULL || *name == '\0') {
		struct passwd *pw = getpwuid(getuid());
		name = pw != NULL ? pw->pw_name : "nobody";
	}
	return name;
}

/* A display name as a quoted-string, or an RFC 2047 encoded-word if not ASCII. */
static char *display_name(const char *name)
{
	size_t n = strlen(name);
	bool ascii = true;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)name[i] >= 0x80 || (unsigned char)name[i] < 0x20)
			ascii = false;
	if (!ascii) {
		char *b64 = xmalloc(4 * ((n + 2) / 3) + 1);
		base64_encode((const unsigned char *)name, n, b64);
		char *r = xasprintf("=?UTF-8?B?%s?=", b64);
		free(b64);
		return r;
	}
	char *q = xmalloc(2 * n + 3), *p = q;
	*p++ = '"';
	for (size_t i = 0; i < n; i++) {
		if (name[i] == '"' || name[i] == '\\')
			*p++ = '\\';
		*p++ = name[i];
	}
	*p++ = '"';
	*p = '\0';
	return q;
}

/* ---- the SMTP client ---- */

struct smtp {
	int fd;
	char buf[4096];
	size_t off, len;
	int code;                 /* of the last reply */
	char text[REPLY_LINE_MAX]; /* its last line, for error messages */
	bool ext_8bitmime, ext_smtputf8, ext_size;
	bool dead; /* the connection failed: no QUIT */
	const char *where; /* host:port */
};

static int fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("postern: sendmail: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	return code;
}

static int connect_to(const char *host, uint16_t port, const char **error_r)
{
	char portstr[8];
	snprintf(portstr, sizeof(portstr), "%u", (unsigned)port);
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res;
	int gai = getaddrinfo(host, portstr, &hints, &res);
	if (gai != 0) {
		*error_r = gai_strerror(gai);
		return -1;
	}
	int fd = -1;
	*error_r = "no address";
	for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0) {
			*error_r = strerror(errno);
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
			*error_r = strerror(errno);
			close(fd);
			fd = -1;
			continue;
		}
		struct pollfd pfd = {.fd = fd, .events = POLLOUT};
		int err = 0;
		socklen_t elen = sizeof(err);
		int pr = poll(&pfd, 1, CONNECT_TIMEOUT * 1000);
		if (pr <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0 || err != 0) {
			*error_r = pr == 0 ? "connection timed out" : strerror(err ? err : errno);
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(res);
	if (fd >= 0) {
		int flags = fcntl(fd, F_GETFL);
		fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
		struct timeval tv = {.tv_sec = REPLY_TIMEOUT};
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	return fd;
}

static int smtp_send(struct smtp *c, const void *data, size_t len)
{
	const char *p = data;
	while (len > 0) {
		ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			c->dead = true;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* One reply line into `line` (CRLF removed). 0 ok, -1 I/O error or EOF, -2 too long. */
static int smtp_line(struct smtp *c, char *line, size_t size)
{
	size_t ll = 0;
	for (;;) {
		if (c->off == c->len) {
			ssize_t n = recv(c->fd, c->buf, sizeof(c->buf), 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				c->dead = true;
				return -1;
			}
			c->off = 0;
			c->len = (size_t)n;
		}
		char ch = c->buf[c->off++];
		if (ch == '\n') {
			if (ll > 0 && line[ll - 1] == '\r')
				ll--;
			line[ll] = '\0';
			return 0;
		}
		if (ll + 1 >= size)
			return -2;
		line[ll++] = ch;
	}
}

/*
 * Read a whole (possibly multi-line) reply; c->code and c->text get its
 * code and last line; with `ehlo` the extension keywords are noted.
 * Returns the code, -1 on I/O error (server gone), -2 on a malformed reply.
 */
static int smtp_reply(struct smtp *c, bool ehlo)
{
	char line[REPLY_LINE_MAX];
	for (int i = 0; i < REPLY_LINES_MAX; i++) {
		int r = smtp_line(c, line, sizeof(line));
		if (r < 0)
			return r;
		if (strlen(line) < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' ||
		    line[1] > '9' || line[2] < '0' || line[2] > '9' ||
		    (line[3] != '\0' && line[3] != ' ' && line[3] != '-'))
			return -2;
		int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
		if (i > 0 && code != c->code)
			return -2;
		c->code = code;
		snprintf(c->text, sizeof(c->text), "%s", line);
		if (ehlo && i > 0) {
			const char *kw = line + 4;
			if (strcasecmp(kw, "8BITMIME") == 0)
				c->ext_8bitmime = true;
			else if (strcasecmp(kw, "SMTPUTF8") == 0)
				c->ext_smtputf8 = true;
			else if (str_has_prefix_ci(kw, "SIZE"))
				c->ext_size = true;
		}
		if (line[3] != '-')
			return code;
	}
	return -2;
}

/* Map a failed exchange to an exit code with one line on stderr. */
static int smtp_fail(struct smtp *c, int r, const char *what)
{
	if (r == -1)
		return fail(EX_TEMPFAIL, "connection to %s lost during %s", c->where, what);
	if (r == -2)
		return fail(EX_PROTOCOL, "malformed reply from %s during %s", c->where, what);
	if (r >= 400 && r < 500)
		return fail(EX_TEMPFAIL, "%s refused, try again later: %s", what, c->text);
	if (r >= 500)
		return fail(EX_UNAVAILABLE, "%s refused: %s", what, c->text);
	return fail(EX_PROTOCOL, "unexpected reply during %s: %s", what, c->text);
}

/* Send a command and expect a reply of class `want` (2 or 3). 0 or an exit code. */
static int smtp_cmd(struct smtp *c, int want, const char *what, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int smtp_cmd(struct smtp *c, int want, const char *what, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *cmd = xvasprintf(fmt, ap);
	va_end(ap);
	int r = smtp_send(c, cmd, strlen(cmd));
	free(cmd);
	if (r < 0)
		return fail(EX_TEMPFAIL, "connection to %s lost during %s", c->where, what);
	r = smtp_reply(c, false);
	if (r / 100 == want)
		return 0;
	return smtp_fail(c, r, what);
}

/* The message as sent in DATA: CRLF line ends, dot-stuffed, ending with CRLF.CRLF. */
static char *build_data(const struct message *m, const char *added, size_t *len_r)
{
	size_t cap = m->size + 2 * m->n + strlen(added) + 16, len = 0;
	char *d = xmalloc(cap);
	size_t hend = m->has_blank ? m->header_end - 1 : m->header_end;
	for (size_t i = 0; i <= m->n; i++) {
		if (i == hend) {
			/* our header fields go last in the header, then the blank line */
			memcpy(d + len, added, strlen(added));
			len += strlen(added);
			memcpy(d + len, "\r\n", 2);
			len += 2;
			if (m->has_blank)
				continue;
		}
		if (i == m->n)
			break;
		const struct line *l = &m->lines[i];
		if (l->removed)
			continue;
		if (l->len > 0 && l->s[0] == '.')
			d[len++] = '.'; /* RFC 5321 4.5.2 */
		memcpy(d + len, l->s, l->len);
		len += l->len;
		memcpy(d + len, "\r\n", 2);
		len += 2;
	}
	memcpy(d + len, ".\r\n", 3);
	len += 3;
	*len_r = len;
	return d;
}

static int submit(struct config *cfg, const char *sender, const struct cli_strlist *rcpts,
		  bool utf8, bool eight_bit, const char *data, size_t dlen, uint64_t size)
{
	size_t count;
	char **listeners = strv_split_list(cfg->listen_smtp, &count);
	if (count == 0) {
		strv_free(&listeners);
		return fail(EX_CONFIG, "the smtp listener is off ([listen] smtp is empty)");
	}
	char *host;
	uint16_t port;
	if (hostport_parse(listeners[0], &host, &port) < 0) {
		strv_free(&listeners);
		return fail(EX_CONFIG, "bad [listen] smtp address");
	}
	strv_free(&listeners);
	/* a wildcard listener is reached over loopback */
	if (host[0] == '\0' || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "*") == 0 ||
	    strcmp(host, "::") == 0) {
		free(host);
		host = xstrdup("127.0.0.1");
	}
	struct smtp c = {.fd = -1};
	char where[300];
	snprintf(where, sizeof(where), strchr(host, ':') ? "[%s]:%u" : "%s:%u", host,
		 (unsigned)port);
	c.where = where;
	const char *err;
	c.fd = connect_to(host, port, &err);
	free(host);
	if (c.fd < 0)
		return fail(EX_TEMPFAIL, "cannot connect to %s: %s", where, err);

	int ret = 0, r = smtp_reply(&c, false);
	if (r != 220) {
		ret = smtp_fail(&c, r, "the greeting");
		goto out;
	}
	char *ehlo = xasprintf("EHLO %s\r\n", cfg->hostname);
	r = smtp_send(&c, ehlo, strlen(ehlo)) < 0 ? -1 : smtp_reply(&c, true);
	free(ehlo);
	if (r >= 500 && r < 600) {
		ret = smtp_cmd(&c, 2, "HELO", "HELO %s\r\n", cfg->hostname);
		if (ret != 0)
			goto out;
	} else if (r != 250) {
		ret = smtp_fail(&c, r, "EHLO");
		goto out;
	}
	if (utf8 && !c.ext_smtputf8) {
		ret = fail(EX_UNAVAILABLE, "the server does not offer SMTPUTF8 for the "
					   "non-ASCII addresses");
		goto out;
	}
	char params[96] = "";
	if (c.ext_size)
		snprintf(params, sizeof(params), " SIZE=%llu", (unsigned long long)size);
	if (eight_bit && c.ext_8bitmime)
		strncat(params, " BODY=8BITMIME", sizeof(params) - strlen(params) - 1);
	if (utf8)
		strncat(params, " SMTPUTF8", sizeof(params) - strlen(params) - 1);
	ret = smtp_cmd(&c, 2, "MAIL FROM", "MAIL FROM:<%s>%s\r\n", sender, params);
	if (ret != 0)
		goto out;
	for (size_t i = 0; i < rcpts->n; i++) {
		char *what = xasprintf("RCPT TO:<%s>", rcpts->v[i]);
		ret = smtp_cmd(&c, 2, what, "RCPT TO:<%s>\r\n", rcpts->v[i]);
		free(what);
		if (ret != 0)
			goto out; /* all or nothing: QUIT without DATA sends nothing */
	}
	ret = smtp_cmd(&c, 3, "DATA", "DATA\r\n");
	if (ret != 0)
		goto out;
	if (smtp_send(&c, data, dlen) < 0) {
		ret = fail(EX_TEMPFAIL, "connection to %s lost while sending the message", where);
		goto out;
	}
	r = smtp_reply(&c, false);
	if (r != 250) {
		ret = smtp_fail(&c, r, "end of data");
		goto out;
	}
out:
	if (!c.dead) {
		static const char quit[] = "QUIT\r\n";
		if (smtp_send(&c, quit, sizeof(quit) - 1) == 0)
			smtp_reply(&c, false);
	}
	close(c.fd);
	return ret;
}

/* ---- the command ---- */

static void sendmail_usage(FILE *out)
{
	fprintf(out,
		"usage: postern sendmail [-t] [-i] [-oi] [-f SENDER] [-F NAME] [-o...] [RCPT...]\n"
		"  Submit the message on stdin for delivery (sendmail-compatible)\n"
		"  -t         also take recipients from To:, Cc: and Bcc: (Bcc: is removed)\n"
		"  -i, -oi    a line with a single '.' does not end the message\n"
		"  -f SENDER  envelope sender (default: LOGIN@hostname); -r is the same\n"
		"  -F NAME    full name for a From: header that we add\n"
		"  -o...      other sendmail options, accepted and ignored\n"
		"  -c FILE    postern configuration file\n");
}

static int run_sendmail(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	bool opt_t = false, opt_i = false;
	const char *sender_opt = NULL, *fullname = NULL;
	int i = 0;
	for (; i < argc; i++) {
		const char *a = argv[i];
		if (a[0] != '-' || a[1] == '\0')
			break;
		if (strcmp(a, "--") == 0) {
			i++;
			break;
		}
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			sendmail_usage(stdout);
			return 0;
		}
		if (a[1] == 'o') {
			if (strcmp(a, "-oi") == 0)
				opt_i = true;
			continue; /* -oem, -odi, ...: meaningless here */
		}
		/* single-letter flags may be bundled (-ti); -f/-F/-r/-c take a value */
		for (const char *p = a + 1; *p != '\0'; p++) {
			if (*p == 't') {
				opt_t = true;
			} else if (*p == 'i') {
				opt_i = true;
			} else if (*p == 'f' || *p == 'r' || *p == 'F' || *p == 'c') {
				const char *v = p[1] != '\0' ? p + 1 : (i + 1 < argc ? argv[++i] : NULL);
				if (v == NULL) {
					fprintf(stderr, "postern: sendmail: -%c needs a value\n", *p);
					sendmail_usage(stderr);
					return EX_USAGE;
				}
				if (*p == 'F')
					fullname = v;
				else if (*p == 'c')
					cli->config_path = v;
				else
					sender_opt = v;
				break;
			} else {
				fprintf(stderr, "postern: sendmail: unknown option -%c\n", *p);
				sendmail_usage(stderr);
				return EX_USAGE;
			}
		}
	}

	struct config *cfg = cli_config(cli);
	if (cfg == NULL)
		return EX_CONFIG;

	int ret = 0;
	unsigned flags = 0;
	struct cli_strlist rcpts = {0}, senders = {0};
	struct message m = {0};
	char *added = NULL, *data = NULL;

	/* the envelope sender */
	const char *sender;
	if (sender_opt != NULL && (sender_opt[0] == '\0' || strcmp(sender_opt, "<>") == 0)) {
		sender = ""; /* null sender, for bounces and autoreplies */
	} else {
		const char *s = sender_opt != NULL ? sender_opt : login_name();
		if (sendmail_address_list(s, cfg->hostname, &senders, &flags) < 0) {
			ret = EX_DATAERR;
			goto out;
		}
		if (senders.n != 1) {
			ret = fail(EX_DATAERR, "bad sender address: %s", s);
			goto out;
		}
		sender = senders.v[0];
	}

	for (; i < argc; i++) {
		if (sendmail_address_list(argv[i], cfg->hostname, &rcpts, &flags) < 0) {
			ret = EX_DATAERR;
			goto out;
		}
	}

	if (message_read(stdin, !opt_i, cfg->max_message_size, &m) < 0) {
		ret = EX_DATAERR;
		goto out;
	}
	message_split(&m);

	bool has_from = false, has_date = false, has_msgid = false;
	size_t hend = m.has_blank ? m.header_end - 1 : m.header_end;
	for (size_t j = 0; j < hend;) {
		struct line *l = &m.lines[j];
		if (l->removed || field_name_len(l) == 0) {
			j++;
			continue;
		}
		has_from |= is_field(l, "From");
		has_date |= is_field(l, "Date");
		has_msgid |= is_field(l, "Message-ID");
		bool rcpt_field = is_field(l, "To") || is_field(l, "Cc") || is_field(l, "Bcc");
		bool bcc = is_field(l, "Bcc");
		size_t next;
		char *v = field_value(&m, j, &next);
		if (opt_t && rcpt_field && sendmail_address_list(v, cfg->hostname, &rcpts, &flags) < 0)
			ret = EX_DATAERR;
		free(v);
		if (ret != 0)
			goto out;
		if (bcc)
			for (size_t k = j; k < next; k++)
				m.lines[k].removed = true;
		j = next;
	}
	if (rcpts.n == 0) {
		ret = fail(EX_DATAERR, "no recipients (give them as arguments, or use -t)");
		goto out;
	}

	/* header fields the message lacks */
	char *add_from = NULL, *add_date = NULL, *add_id = NULL;
	if (!has_from) {
		const char *addr = sender[0] != '\0' ? sender : NULL;
		char *own = NULL;
		if (addr == NULL)
			addr = own = xasprintf("%s@%s", login_name(), cfg->hostname);
		if (fullname != NULL && fullname[0] != '\0') {
			char *dn = display_name(fullname);
			add_from = xasprintf("From: %s <%s>\r\n", dn, addr);
			free(dn);
		} else {
			add_from = xasprintf("From: %s\r\n", addr);
		}
		free(own);
	}
	time_t now = time(NULL);
	struct tm tm;
	localtime_r(&now, &tm);
	if (!has_date) {
		char date[64];
		strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm); /* RFC 5322 3.3 */
		add_date = xasprintf("Date: %s\r\n", date);
	}
	if (!has_msgid) {
		unsigned char rnd[9];
		char hex[sizeof(rnd) * 2 + 1], stamp[32];
		if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
			ret = fail(EX_OSERR, "getrandom: %s", strerror(errno));
			goto out;
		}
		hex_encode(rnd, sizeof(rnd), hex);
		strftime(stamp, sizeof(stamp), "%Y%m%d%H%M%S", &tm);
		add_id = xasprintf("Message-ID: <%s.%s@%s>\r\n", stamp, hex, cfg->hostname);
	}
	added = xasprintf("%s%s%s", add_from ? add_from : "", add_date ? add_date : "",
			  add_id ? add_id : "");
	free(add_from);
	free(add_date);
	free(add_id);

	size_t dlen;
	data = build_data(&m, added, &dlen);
	ret = submit(cfg, sender, &rcpts, (flags & ADDRESS_UTF8) != 0, m.eight_bit, data, dlen,
		     dlen > 3 ? dlen - 3 : 0);
out:
	free(data);
	free(added);
	message_free(&m);
	cli_strlist_free(&rcpts);
	cli_strlist_free(&senders);
	return ret;
}

const struct cli_cmd cmd_sendmail_cmds[] = {
	{"sendmail", NULL, "[-t] [-i] [-f SENDER] [-F NAME] [RCPT...]",
	 "Submit the message on stdin for delivery, like sendmail(8) (also as a `sendmail` "
	 "symlink)",
	 run_sendmail},
	{0},
};

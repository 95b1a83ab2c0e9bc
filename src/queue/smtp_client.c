/*
 * Blocking SMTP client for the outbound agent (see smtp_client.h).
 *
 * The socket is non-blocking underneath; every wait is a poll() bounded by
 * the deadline of the command in progress, so a stalled peer costs at most
 * command_ms per reply, and smtpc_abort() (shutdown of the socket) wakes a
 * blocked worker at once. Peer input is untrusted: replies are parsed with
 * fixed limits and anything malformed ends the session.
 */
#include "queue/smtp_client.h"

#include "lib/log.h"
#include "lib/strutil.h"
#include "lib/xalloc.h"
#include "queue/outbound.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SMTPC_IN_MAX 8192

struct smtpc {
	int fd;
	SSL_CTX *ctx;
	SSL *ssl;
	unsigned command_ms;
	char in[SMTPC_IN_MAX];
	size_t in_len;
	char *out;
	size_t out_len, out_cap;
	unsigned ext;
	uint64_t size_limit;
	size_t injected;
	volatile int aborted;
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for `events` until the deadline. 1 ready, 0 timeout, -1 error. */
static int wait_fd(struct smtpc *c, short events, int64_t deadline)
{
	for (;;) {
		if (c->aborted)
			return -1;
		int64_t left = deadline - now_ms();
		if (left <= 0)
			return 0;
		struct pollfd p = {.fd = c->fd, .events = events};
		int r = poll(&p, 1, left > 1000 ? 1000 : (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r > 0)
			return 1;
	}
}

struct smtpc *smtpc_connect(const struct sockaddr *sa, socklen_t salen, unsigned connect_ms,
			    unsigned command_ms, const char **error_r)
{
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*error_r = strerror(errno);
		return NULL;
	}
	/* the end of DATA (".\r\n", a write of its own) must not wait for the peer's
	   delayed ACK under Nagle: ~40 ms per message (found by bench/smtp-relay) */
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct smtpc *c = xcalloc(1, sizeof(*c));
	c->fd = fd;
	c->command_ms = command_ms;
	if (connect(fd, sa, salen) < 0) {
		if (errno != EINPROGRESS) {
			*error_r = strerror(errno);
			smtpc_free(&c);
			return NULL;
		}
		int w = wait_fd(c, POLLOUT, now_ms() + connect_ms);
		if (w <= 0) {
			*error_r = w == 0 ? "connection timed out" : "connection failed";
			smtpc_free(&c);
			return NULL;
		}
		int err = 0;
		socklen_t len = sizeof(err);
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
			*error_r = strerror(err != 0 ? err : errno);
			smtpc_free(&c);
			return NULL;
		}
	}
	return c;
}

struct smtpc *smtpc_from_fd(int fd, unsigned command_ms)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	struct smtpc *c = xcalloc(1, sizeof(*c));
	c->fd = fd;
	c->command_ms = command_ms;
	return c;
}

void smtpc_abort(struct smtpc *c)
{
	c->aborted = 1;
	shutdown(c->fd, SHUT_RDWR);
}

void smtpc_free(struct smtpc **cp)
{
	struct smtpc *c = *cp;
	if (c == NULL)
		return;
	if (c->ssl != NULL)
		SSL_free(c->ssl);
	if (c->ctx != NULL)
		SSL_CTX_free(c->ctx);
	if (c->fd >= 0)
		close(c->fd);
	free(c->out);
	free(c);
	*cp = NULL;
}

/* Read some bytes into c->in. 1 got some, 0 EOF/timeout/error. */
static int fill(struct smtpc *c, int64_t deadline)
{
	if (c->in_len >= sizeof(c->in))
		return 0;
	for (;;) {
		if (c->aborted)
			return 0;
		if (c->ssl != NULL) {
			ERR_clear_error();
			int n = SSL_read(c->ssl, c->in + c->in_len, (int)(sizeof(c->in) - c->in_len));
			if (n > 0) {
				c->in_len += (size_t)n;
				return 1;
			}
			int e = SSL_get_error(c->ssl, n);
			short ev = e == SSL_ERROR_WANT_READ ? POLLIN
				   : e == SSL_ERROR_WANT_WRITE ? POLLOUT
							       : 0;
			if (ev == 0 || wait_fd(c, ev, deadline) <= 0)
				return 0;
			continue;
		}
		ssize_t n = read(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len);
		if (n > 0) {
			c->in_len += (size_t)n;
			return 1;
		}
		if (n == 0)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN || wait_fd(c, POLLIN, deadline) <= 0)
			return 0;
	}
}

static bool write_all(struct smtpc *c, const char *p, size_t len, int64_t deadline)
{
	while (len > 0) {
		if (c->aborted)
			return false;
		if (c->ssl != NULL) {
			ERR_clear_error();
			int n = SSL_write(c->ssl, p, len > 65536 ? 65536 : (int)len);
			if (n > 0) {
				p += n;
				len -= (size_t)n;
				continue;
			}
			int e = SSL_get_error(c->ssl, n);
			short ev = e == SSL_ERROR_WANT_READ ? POLLIN
				   : e == SSL_ERROR_WANT_WRITE ? POLLOUT
							       : 0;
			if (ev == 0 || wait_fd(c, ev, deadline) <= 0)
				return false;
			continue;
		}
		ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN && wait_fd(c, POLLOUT, deadline) > 0)
			continue;
		return false;
	}
	return true;
}

void smtpc_write(struct smtpc *c, const void *data, size_t len)
{
	c->out = xgrow(c->out, &c->out_cap, c->out_len + len, 1);
	memcpy(c->out + c->out_len, data, len);
	c->out_len += len;
}

void smtpc_printf(struct smtpc *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = NULL;
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		fatal("event=out_of_memory");
	smtpc_write(c, s, (size_t)n);
	free(s);
}

bool smtpc_flush(struct smtpc *c)
{
	if (c->out_len == 0)
		return true;
	bool ok = write_all(c, c->out, c->out_len, now_ms() + c->command_ms);
	c->out_len = 0;
	return ok;
}

static void set_error(struct smtpc_reply *r, const char *what)
{
	r->code = 0;
	snprintf(r->text, sizeof(r->text), "%s", what);
}

/* Take one line (without CRLF) out of c->in into line[SMTPC_LINE_MAX]. 1 ok, 0 need more, -1 too long. */
static int take_line(struct smtpc *c, char *line)
{
	char *nl = memchr(c->in, '\n', c->in_len);
	if (nl == NULL)
		return c->in_len >= SMTPC_LINE_MAX ? -1 : 0;
	size_t n = (size_t)(nl - c->in);
	if (n >= SMTPC_LINE_MAX)
		return -1;
	size_t l = n > 0 && c->in[n - 1] == '\r' ? n - 1 : n;
	memcpy(line, c->in, l);
	line[l] = '\0';
	memmove(c->in, nl + 1, c->in_len - n - 1);
	c->in_len -= n + 1;
	return 1;
}

/* Remember EHLO keywords when `ehlo` (each line after the first). */
static void note_ext(struct smtpc *c, const char *kw)
{
	static const struct {
		const char *name;
		unsigned bit;
	} exts[] = {{"STARTTLS", SMTPC_EXT_STARTTLS}, {"PIPELINING", SMTPC_EXT_PIPELINING},
		    {"SIZE", SMTPC_EXT_SIZE},         {"8BITMIME", SMTPC_EXT_8BITMIME},
		    {"SMTPUTF8", SMTPC_EXT_SMTPUTF8}, {"DSN", SMTPC_EXT_DSN},
		    {"CHUNKING", SMTPC_EXT_CHUNKING}};
	size_t kl = strcspn(kw, " ");
	for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++) {
		if (kl == 4 && strncasecmp(kw, "AUTH", 4) == 0) {
			/* "AUTH LOGIN PLAIN": look for the PLAIN word */
			for (const char *p = kw + 4; *p != '\0';) {
				p += strspn(p, " ");
				size_t wl = strcspn(p, " ");
				if (wl == 5 && strncasecmp(p, "PLAIN", 5) == 0)
					c->ext |= SMTPC_EXT_AUTH_PLAIN;
				p += wl;
			}
		}
		if (strlen(exts[i].name) == kl && strncasecmp(kw, exts[i].name, kl) == 0) {
			c->ext |= exts[i].bit;
			if (exts[i].bit == SMTPC_EXT_SIZE && kw[kl] == ' ')
				c->size_limit = strtoull(kw + kl + 1, NULL, 10);
		}
	}
}

static bool read_reply(struct smtpc *c, struct smtpc_reply *r, bool ehlo)
{
	char line[SMTPC_LINE_MAX];
	int64_t deadline = now_ms() + c->command_ms;
	if (!smtpc_flush(c)) {
		set_error(r, "connection lost while sending");
		return false;
	}
	for (int nlines = 0; nlines < SMTPC_REPLY_LINES_MAX; nlines++) {
		int t;
		while ((t = take_line(c, line)) == 0) {
			if (now_ms() >= deadline) {
				set_error(r, "timeout waiting for the reply");
				return false;
			}
			if (!fill(c, deadline)) {
				set_error(r, now_ms() >= deadline ? "timeout waiting for the reply"
								  : "connection lost");
				return false;
			}
		}
		if (t < 0) {
			set_error(r, "reply line too long");
			return false;
		}
		if (!(line[0] >= '2' && line[0] <= '5' && line[1] >= '0' && line[1] <= '9' &&
		      line[2] >= '0' && line[2] <= '9' &&
		      (line[3] == ' ' || line[3] == '-' || line[3] == '\0'))) {
			set_error(r, "malformed reply");
			return false;
		}
		int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
		if (nlines == 0) {
			r->code = code;
			/* printable ASCII and UTF-8 only, for logs and DSNs */
			size_t o = 0;
			for (const char *p = line; *p != '\0' && o + 1 < sizeof(r->text); p++)
				r->text[o++] = (unsigned char)*p < 0x20 || *p == 0x7f ? '?' : *p;
			r->text[o] = '\0';
			if (ehlo)
				c->ext = 0, c->size_limit = 0;
		} else if (code != r->code) {
			set_error(r, "inconsistent multi-line reply");
			return false;
		} else if (ehlo) {
			note_ext(c, line + 4);
		}
		if (line[3] != '-')
			return true;
	}
	set_error(r, "reply has too many lines");
	return false;
}

bool smtpc_read_reply(struct smtpc *c, struct smtpc_reply *r)
{
	return read_reply(c, r, false);
}

bool smtpc_ehlo(struct smtpc *c, const char *helo_name, struct smtpc_reply *r)
{
	smtpc_printf(c, "EHLO %s\r\n", helo_name);
	if (!read_reply(c, r, true))
		return false;
	if (r->code / 100 == 5 && r->code != 554) {
		c->ext = 0;
		smtpc_printf(c, "HELO %s\r\n", helo_name);
		return read_reply(c, r, false);
	}
	return true;
}

unsigned smtpc_ext(const struct smtpc *c)
{
	return c->ext;
}

uint64_t smtpc_size_limit(const struct smtpc *c)
{
	return c->size_limit;
}

bool smtpc_tls(const struct smtpc *c)
{
	return c->ssl != NULL;
}

size_t smtpc_injected(const struct smtpc *c)
{
	return c->injected;
}

int smtpc_tls_handshake(struct smtpc *c, const char *servername, bool *verified_r,
			const char **verify_error_r)
{
	*verified_r = false;
	*verify_error_r = "no certificate";
	c->ctx = SSL_CTX_new(TLS_client_method());
	if (c->ctx == NULL)
		return -1;
	SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
	SSL_CTX_set_default_verify_paths(c->ctx);
	/* opportunistic: verify and report, never refuse (RFC 7435) */
	SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
	c->ssl = SSL_new(c->ctx);
	if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1)
		goto fail;
	SSL_set_tlsext_host_name(c->ssl, servername);
	SSL_set1_host(c->ssl, servername);
	int64_t deadline = now_ms() + c->command_ms;
	for (;;) {
		ERR_clear_error();
		int n = SSL_connect(c->ssl);
		if (n == 1)
			break;
		int e = SSL_get_error(c->ssl, n);
		short ev = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
		if (ev == 0 || wait_fd(c, ev, deadline) <= 0)
			goto fail;
	}
	long v = SSL_get_verify_result(c->ssl);
	X509 *cert = SSL_get1_peer_certificate(c->ssl);
	if (cert != NULL) {
		*verified_r = v == X509_V_OK;
		*verify_error_r = v == X509_V_OK ? "ok" : X509_verify_cert_error_string(v);
		X509_free(cert);
	}
	return 0;
fail:
	if (c->ssl != NULL) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	return -1;
}

int smtpc_starttls(struct smtpc *c, const char *servername, struct smtpc_reply *r,
		   bool *verified_r, const char **verify_error_r)
{
	*verified_r = false;
	*verify_error_r = "no certificate";
	smtpc_printf(c, "STARTTLS\r\n");
	if (!read_reply(c, r, false))
		return -1;
	if (r->code != 220)
		return 0;
	/* RFC 3207 5: anything the server sent before the handshake is discarded */
	c->injected = c->in_len;
	c->in_len = 0;
	if (smtpc_tls_handshake(c, servername, verified_r, verify_error_r) < 0) {
		set_error(r, "TLS handshake failed");
		return -1;
	}
	return 1;
}

bool smtpc_auth_plain(struct smtpc *c, const char *user, const char *password,
		      struct smtpc_reply *r)
{
	size_t ul = strlen(user), pl = strlen(password);
	size_t n = ul + pl + 2;
	unsigned char *raw = xmalloc(n);
	raw[0] = '\0';
	memcpy(raw + 1, user, ul);
	raw[1 + ul] = '\0';
	memcpy(raw + 2 + ul, password, pl);
	char *b64 = xmalloc(4 * ((n + 2) / 3) + 1);
	base64_encode(raw, n, b64);
	smtpc_printf(c, "AUTH PLAIN %s\r\n", b64);
	explicit_bzero(raw, n);
	explicit_bzero(b64, strlen(b64));
	free(raw);
	free(b64);
	bool ok = read_reply(c, r, false);
	/* the credentials were in the output buffer: wipe it */
	explicit_bzero(c->out, c->out_cap);
	return ok;
}

size_t smtpc_dot_stuff(const char *in, size_t len, char *out, bool *at_bol)
{
	size_t o = 0;
	bool bol = *at_bol;
	for (size_t i = 0; i < len; i++) {
		if (bol && in[i] == '.')
			out[o++] = '.';
		out[o++] = in[i];
		bol = in[i] == '\n';
	}
	*at_bol = bol;
	return o;
}

bool smtpc_trace_for(const char *h, size_t len, size_t *start_r, size_t *end_r)
{
	/* the first Received: field, with its continuation lines */
	size_t i = 0;
	while (i < len) {
		const char *eol = memchr(h + i, '\n', len - i);
		size_t ll = eol != NULL ? (size_t)(eol - (h + i)) + 1 : len - i;
		if (ll <= 2 && (h[i] == '\r' || h[i] == '\n'))
			return false; /* the end of the header */
		if (len - i >= 9 && strncasecmp(h + i, "Received:", 9) == 0)
			break;
		i += ll;
	}
	if (i >= len)
		return false;
	size_t fend = i;
	do {
		const char *eol = memchr(h + fend, '\n', len - fend);
		fend = eol != NULL ? (size_t)(eol - h) + 1 : len;
	} while (fend < len && (h[fend] == ' ' || h[fend] == '\t'));
	/* RFC 5321 4.4: "for" SP ( Path / Mailbox ); ours is "for <address>" */
	for (size_t k = i; k + 5 <= fend; k++) {
		if ((k == i || h[k - 1] == ' ' || h[k - 1] == '\t') &&
		    strncasecmp(h + k, "for <", 5) == 0) {
			const char *gt = memchr(h + k + 5, '>', fend - k - 5);
			if (gt == NULL)
				return false;
			*start_r = k + 5;
			*end_r = (size_t)(gt - h);
			return true;
		}
	}
	return false;
}

/*
 * The header of the message as it goes out: its From: field replaced by
 * `from` (unless NULL), and with `idna_trace` the address in the for-clause
 * of the first Received: field in A-labels. NULL (send the file unchanged)
 * when the header does not end within SMTPC_HEADER_MAX. *hlen_r: octets of
 * the original header (up to and including the empty line).
 */
static char *prepare_head(int fd, const char *from, bool idna_trace, size_t *hlen_r)
{
	char *h = xmalloc(SMTPC_HEADER_MAX + 1);
	size_t len = 0;
	while (len < SMTPC_HEADER_MAX) {
		ssize_t n = read(fd, h + len, SMTPC_HEADER_MAX - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	h[len] = '\0';
	char *end = memmem(h, len, "\r\n\r\n", 4);
	if (end == NULL || lseek(fd, 0, SEEK_SET) < 0) {
		free(h);
		return NULL;
	}
	size_t hl = (size_t)(end - h) + 4;
	*hlen_r = hl;
	char *out = xmalloc(hl + (from != NULL ? strlen(from) : 0) + 16);
	size_t o = 0;
	if (from == NULL) {
		memcpy(out, h, hl);
		o = hl - 2;
	} else {
		bool skipping = false, done = false;
		for (size_t i = 0; i < hl - 2;) {
			char *eol = memmem(h + i, hl - i, "\r\n", 2);
			size_t ll = (size_t)(eol - (h + i)) + 2;
			bool cont = h[i] == ' ' || h[i] == '\t';
			if (!cont)
				skipping = false;
			if (!cont && !done && ll >= 5 && strncasecmp(h + i, "From:", 5) == 0) {
				o += (size_t)sprintf(out + o, "From: <%s>\r\n", from);
				skipping = true;
				done = true;
			} else if (!skipping) {
				memcpy(out + o, h + i, ll);
				o += ll;
			}
			i += ll;
		}
		if (!done)
			o += (size_t)sprintf(out + o, "From: <%s>\r\n", from);
	}
	memcpy(out + o, "\r\n", 3);
	free(h);
	size_t a, b;
	if (idna_trace && smtpc_trace_for(out, o, &a, &b)) {
		char *addr = xstrndup(out + a, b - a);
		const char *err = NULL;
		char *ascii = outbound_address_ascii(addr, &err);
		if (ascii != NULL) {
			char *t = xasprintf("%.*s%s%s", (int)a, out, ascii, out + b);
			free(out);
			out = t;
		}
		free(ascii);
		free(addr);
	}
	return out;
}

/* DATA: dot-stuffed, ends with CRLF "." CRLF. */
static bool send_data(struct smtpc *c, int fd, const char *head)
{
	char buf[32768], out[65536 + 8];
	bool bol = true;
	char last = '\n', prev = '\r';
	int64_t deadline = now_ms() + c->command_ms;
	if (head != NULL) {
		size_t n = strlen(head);
		char *stuffed = xmalloc(2 * n + 1);
		size_t o = smtpc_dot_stuff(head, n, stuffed, &bol);
		bool ok = write_all(c, stuffed, o, deadline);
		free(stuffed);
		if (!ok)
			return false;
		if (n >= 2)
			prev = head[n - 2], last = head[n - 1];
	}
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return false;
		if (n == 0)
			break;
		if (n >= 2)
			prev = buf[n - 2];
		else
			prev = last;
		last = buf[n - 1];
		size_t o = smtpc_dot_stuff(buf, (size_t)n, out, &bol);
		/* a deadline per block of data, as a receiver's data timeout (RFC 5321 4.5.3.2.6) */
		deadline = now_ms() + c->command_ms;
		if (!write_all(c, out, o, deadline))
			return false;
	}
	const char *end = last == '\n' && prev == '\r' ? ".\r\n" : "\r\n.\r\n";
	return write_all(c, end, strlen(end), now_ms() + c->command_ms);
}

/*
 * BDAT (RFC 3030): the head, then the file from the current offset, in
 * chunks of SMTPC_CHUNK_SIZE octets, each "BDAT n" answered before the
 * next; a final CRLF added if missing, as with DATA. *r: the reply to the
 * last chunk, or the first that is not 250.
 */
static bool send_bdat(struct smtpc *c, int fd, const char *head, struct smtpc_reply *r)
{
	struct stat st;
	off_t off = lseek(fd, 0, SEEK_CUR);
	if (off < 0 || fstat(fd, &st) < 0) {
		set_error(r, "cannot read the spool file");
		return false;
	}
	size_t hn = head != NULL ? strlen(head) : 0;
	uint64_t rest = st.st_size > off ? (uint64_t)(st.st_size - off) : 0;
	char tail[2] = {0, 0};
	if (rest >= 2) {
		if (pread(fd, tail, 2, st.st_size - 2) != 2) {
			set_error(r, "cannot read the spool file");
			return false;
		}
	} else if (hn >= 2) {
		memcpy(tail, head + hn - 2, 2);
	}
	bool add_crlf = !(tail[0] == '\r' && tail[1] == '\n');
	uint64_t total = hn + rest + (add_crlf ? 2 : 0);
	char *buf = xmalloc(SMTPC_CHUNK_SIZE);
	uint64_t sent = 0, from_file = 0;
	bool ok = true;
	do {
		size_t n = 0;
		/* fill one chunk: head, then file, then the CRLF */
		while (n < SMTPC_CHUNK_SIZE && sent + n < total) {
			uint64_t pos = sent + n;
			if (pos < hn) {
				size_t k = hn - (size_t)pos;
				if (k > SMTPC_CHUNK_SIZE - n)
					k = SMTPC_CHUNK_SIZE - n;
				memcpy(buf + n, head + pos, k);
				n += k;
			} else if (from_file < rest) {
				uint64_t want = rest - from_file;
				if (want > SMTPC_CHUNK_SIZE - n)
					want = SMTPC_CHUNK_SIZE - n;
				ssize_t got = read(fd, buf + n, (size_t)want);
				if (got < 0 && errno == EINTR)
					continue;
				if (got <= 0) {
					/* the file shrank under us: cannot keep the size promised */
					set_error(r, "spool file changed while sending");
					ok = false;
					goto out;
				}
				n += (size_t)got;
				from_file += (uint64_t)got;
			} else {
				buf[n++] = "\r\n"[pos - hn - rest];
			}
		}
		bool last = sent + n >= total;
		smtpc_printf(c, "BDAT %zu%s\r\n", n, last ? " LAST" : "");
		if (!smtpc_flush(c) || !write_all(c, buf, n, now_ms() + c->command_ms) ||
		    !smtpc_read_reply(c, r)) {
			ok = false;
			goto out;
		}
		sent += n;
		if (r->code / 100 != 2)
			break;
	} while (sent < total);
out:
	free(buf);
	return ok;
}

bool smtpc_send_content(struct smtpc *c, int fd, const struct smtpc_content *o,
			struct smtpc_reply *r)
{
	if (lseek(fd, 0, SEEK_SET) < 0)
		return false;
	if (!smtpc_flush(c))
		return false;
	char *head = NULL;
	if (o->from_rewrite != NULL || o->idna_trace) {
		size_t hlen = 0;
		head = prepare_head(fd, o->from_rewrite, o->idna_trace, &hlen);
		if (head != NULL && lseek(fd, (off_t)hlen, SEEK_SET) < 0) {
			free(head);
			return false;
		}
	}
	bool ok = o->bdat ? send_bdat(c, fd, head, r) : send_data(c, fd, head);
	free(head);
	return ok;
}

bool smtpc_send_body(struct smtpc *c, int fd, const char *from_rewrite)
{
	struct smtpc_content o = {.from_rewrite = from_rewrite};
	return smtpc_send_content(c, fd, &o, NULL);
}

/*
 * bench-smtp-load: an SMTP load generator for bench/smtp-ingest.
 *
 *   bench-smtp-load -p PORT [-H 127.0.0.1] [-n MESSAGES] [-s BYTES] [-c CONNECTIONS]
 *                   [-m PER_CONNECTION] [-f SENDER] [-r RCPT[,RCPT...]] [-t TAG]
 *
 * C threads, each with one blocking socket at a time, send MESSAGES messages
 * of about BYTES octets in total, PER_CONNECTION messages per SMTP session
 * (MAIL, RCPT, DATA, wait for the 250 after each: no pipelining, so both
 * servers see the same conversation). Recipients rotate over the -r list.
 * Every message has a unique Subject "TAG-NNNNNNN" so the caller can find it
 * in the Maildirs. Prints one line of key=value results on stdout; exits 1
 * if any message was not accepted. Only for 127.0.0.0/8 test servers.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

struct opts {
	const char *host;
	int port;
	long messages;
	long size;
	long conns;
	long per_conn;
	const char *sender;
	char **rcpts;
	size_t nrcpts;
	const char *tag;
};

static struct opts o = {
    .host = "127.0.0.1",
    .port = 0,
    .messages = 1000,
    .size = 4096,
    .conns = 1,
    .per_conn = 1,
    .sender = "bench@load.test",
    .tag = "bench",
};

static atomic_long next_msg;
static atomic_long accepted;
static atomic_long failed;
static char *filler; /* body text shared by every message */
static size_t filler_len;

struct conn {
	int fd;
	char buf[8192];
	size_t len; /* bytes in buf */
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Read one whole (possibly multi-line) reply; returns its code, or -1. */
static int read_reply(struct conn *c)
{
	for (int guard = 0; guard < 10000; guard++) {
		/* consume complete lines already buffered */
		char *eol;
		while ((eol = memmem(c->buf, c->len, "\r\n", 2)) != NULL) {
			size_t linelen = (size_t)(eol - c->buf) + 2;
			int code = -1;
			bool last = false;
			if (linelen >= 6 && c->buf[0] >= '2' && c->buf[0] <= '5') {
				code = (c->buf[0] - '0') * 100 + (c->buf[1] - '0') * 10 +
				       (c->buf[2] - '0');
				last = c->buf[3] == ' ';
			} else if (linelen == 5) {
				code = (c->buf[0] - '0') * 100 + (c->buf[1] - '0') * 10 +
				       (c->buf[2] - '0');
				last = true;
			}
			memmove(c->buf, c->buf + linelen, c->len - linelen);
			c->len -= linelen;
			if (code < 0)
				return -1;
			if (last)
				return code;
		}
		if (c->len == sizeof(c->buf))
			return -1;
		ssize_t r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		c->len += (size_t)r;
	}
	return -1;
}

static int command(struct conn *c, const char *line, int expect)
{
	if (write_all(c->fd, line, strlen(line)) < 0)
		return -1;
	int code = read_reply(c);
	return code == expect ? 0 : -1;
}

static int conn_open(struct conn *c)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o.port)};
	if (inet_pton(AF_INET, o.host, &sa.sin_addr) != 1)
		return -1;
	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	if (c->fd < 0)
		return -1;
	struct timeval tv = {.tv_sec = 60};
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->len = 0;
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || read_reply(c) != 220 ||
	    command(c, "EHLO load.bench.test\r\n", 250) < 0) {
		close(c->fd);
		c->fd = -1;
		return -1;
	}
	return 0;
}

static int send_one(struct conn *c, long i)
{
	char line[1024];
	snprintf(line, sizeof(line), "MAIL FROM:<%s>\r\n", o.sender);
	if (command(c, line, 250) < 0)
		return -1;
	snprintf(line, sizeof(line), "RCPT TO:<%s>\r\n", o.rcpts[(size_t)i % o.nrcpts]);
	if (command(c, line, 250) < 0)
		return -1;
	if (command(c, "DATA\r\n", 354) < 0)
		return -1;
	char head[1024];
	int hl = snprintf(head, sizeof(head),
	                  "From: <%s>\r\nTo: <%s>\r\nSubject: %s-%07ld\r\n"
	                  "Message-ID: <%s-%07ld@load.bench.test>\r\n\r\n",
	                  o.sender, o.rcpts[(size_t)i % o.nrcpts], o.tag, i, o.tag, i);
	size_t body = o.size > hl + 5 ? (size_t)o.size - (size_t)hl - 5 : 0;
	if (body > filler_len)
		body = filler_len;
	/* end on a line boundary */
	while (body > 0 && filler[body - 1] != '\n')
		body--;
	if (write_all(c->fd, head, (size_t)hl) < 0 || write_all(c->fd, filler, body) < 0 ||
	    write_all(c->fd, ".\r\n", 3) < 0)
		return -1;
	return read_reply(c) == 250 ? 0 : -1;
}

static void *worker(void *arg)
{
	(void)arg;
	struct conn c = {.fd = -1};
	long sent_here = 0;
	for (;;) {
		long i = atomic_fetch_add(&next_msg, 1);
		if (i >= o.messages)
			break;
		if (c.fd >= 0 && sent_here >= o.per_conn) {
			command(&c, "QUIT\r\n", 221);
			close(c.fd);
			c.fd = -1;
		}
		if (c.fd < 0) {
			sent_here = 0;
			if (conn_open(&c) < 0) {
				atomic_fetch_add(&failed, 1);
				continue;
			}
		}
		if (send_one(&c, i) == 0) {
			atomic_fetch_add(&accepted, 1);
			sent_here++;
		} else {
			atomic_fetch_add(&failed, 1);
			close(c.fd);
			c.fd = -1;
		}
	}
	if (c.fd >= 0) {
		command(&c, "QUIT\r\n", 221);
		close(c.fd);
	}
	return NULL;
}

static void usage(void)
{
	fprintf(
	    stderr,
	    "usage: bench-smtp-load -p PORT [-H HOST] [-n MESSAGES] [-s BYTES] [-c CONNECTIONS]\n"
	    "                       [-m PER_CONNECTION] [-f SENDER] [-r RCPT[,RCPT...]] [-t "
	    "TAG]\n");
	exit(2);
}

static long number(const char *s, long min, long max)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		usage();
	return v;
}

int main(int argc, char **argv)
{
	char *rcpt_list = strdup("bench@example.test");
	int ch;
	while ((ch = getopt(argc, argv, "H:p:n:s:c:m:f:r:t:")) != -1) {
		switch (ch) {
		case 'H':
			o.host = optarg;
			break;
		case 'p':
			o.port = (int)number(optarg, 1, 65535);
			break;
		case 'n':
			o.messages = number(optarg, 1, 10000000);
			break;
		case 's':
			o.size = number(optarg, 64, 64 * 1024 * 1024);
			break;
		case 'c':
			o.conns = number(optarg, 1, 1000);
			break;
		case 'm':
			o.per_conn = number(optarg, 1, 1000000);
			break;
		case 'f':
			o.sender = optarg;
			break;
		case 'r':
			free(rcpt_list);
			rcpt_list = strdup(optarg);
			break;
		case 't':
			o.tag = optarg;
			break;
		default:
			usage();
		}
	}
	if (o.port == 0 || strncmp(o.host, "127.", 4) != 0)
		usage();
	for (char *save = NULL, *t = strtok_r(rcpt_list, ",", &save); t != NULL;
	     t = strtok_r(NULL, ",", &save)) {
		o.rcpts = realloc(o.rcpts, (o.nrcpts + 1) * sizeof(*o.rcpts));
		o.rcpts[o.nrcpts++] = t;
	}
	if (o.nrcpts == 0)
		usage();

	/* 80-octet lines of text, never starting with a dot */
	filler_len = (size_t)o.size;
	filler = malloc(filler_len + 128);
	size_t pos = 0;
	for (long line = 0; pos < filler_len; line++) {
		int n = snprintf(filler + pos, 128,
		                 "%06ld the quick brown fox jumps over the lazy dog "
		                 "0123456789 abcdefghijklmnop\r\n",
		                 line % 1000000);
		pos += (size_t)n;
	}
	filler_len = pos;

	pthread_t *th = calloc((size_t)o.conns, sizeof(*th));
	double t0 = now();
	for (long i = 0; i < o.conns; i++)
		if (pthread_create(&th[i], NULL, worker, NULL) != 0) {
			perror("pthread_create");
			return 1;
		}
	for (long i = 0; i < o.conns; i++)
		pthread_join(th[i], NULL);
	double secs = now() - t0;

	long ok = atomic_load(&accepted), bad = atomic_load(&failed);
	printf("messages=%ld accepted=%ld failed=%ld size=%ld connections=%ld per_connection=%ld "
	       "seconds=%.3f msgs_per_sec=%.1f\n",
	       o.messages, ok, bad, o.size, o.conns, o.per_conn, secs, secs > 0 ? ok / secs : 0.0);
	free(th);
	free(filler);
	free(o.rcpts);
	free(rcpt_list);
	return bad == 0 ? 0 : 1;
}

/*
 * bench-imap-load: an IMAP and POP3 load generator for bench/imap-bench.
 *
 *   bench-imap-load -p PORT -w WORKLOAD [-H 127.0.0.1] [-c CONNECTIONS] [-n COUNT]
 *                   [-m ROUNDS_PER_SESSION] [-u USER_FORMAT] [-U USERS] [-P PASSWORD]
 *                   [-s SEED] [-d SECONDS] [-S WORD] [-t LOOP_THREADS] [-i | -T]
 *
 * Every session goes through TLS before it logs in: STARTTLS (IMAP) or STLS
 * (POP3), or TLS from the first byte with -i (imaps/pop3s); certificates are
 * not verified (loopback test servers with self-signed certificates). -T:
 * no TLS at all, LOGIN in plaintext (IMAP; the server must allow it, Postern
 * with [imap] plaintext_auth = loopback), for the memory of a session
 * without OpenSSL's part. One command at a time per connection (no
 * pipelining), so every server sees the same conversation. The user of
 * connection K is USER_FORMAT with %d = K mod USERS.
 *
 * mix and login run their C connections on LOOP_THREADS event-loop threads
 * (-t, default 1): non-blocking sockets in one epoll set per thread (edge-
 * triggered), each connection's script a coroutine with its own stack that
 * yields to the loop where a blocking client would wait, so the script reads
 * as straight-line code and a response that arrives while the thread is busy
 * costs no wake-up. TLS there reads ahead (several records a read()) and
 * writes into memory, sent with one write() per command; the TLS records and
 * every octet the server gets are the same as with blocking sockets. -t 0:
 * the old way, one thread per connection with blocking sockets (for
 * comparison). large, pop3 (one connection) and idle (8 setup threads, then
 * held) use blocking sockets.
 *
 * Workloads (one line of key=value results on stdout; exit 1 on any failure):
 *   mix    C connections run COUNT rounds in total, ROUNDS_PER_SESSION rounds per
 *          login. A round: SELECT INBOX, FETCH 1:* (ENVELOPE), three
 *          FETCH n BODY.PEEK[], STORE n +/-FLAGS, SEARCH SUBJECT w,
 *          SEARCH UNSEEN, APPEND (LITERAL+), UID STORE +FLAGS (\Deleted) of
 *          the appended message, UID EXPUNGE of it. The mailbox ends as it
 *          began. Message numbers, flags and words come from a PRNG seeded with
 *          SEED and the connection number. Reports commands/s.
 *   login  C connections run COUNT sessions in total: connect, STARTTLS, LOGIN,
 *          LOGOUT. Reports logins/s.
 *   large  one session: the first SELECT INBOX (the server builds its index)
 *          timed alone, then COUNT times SELECT INBOX, FETCH 1:* (FLAGS),
 *          UID SEARCH SUBJECT WORD, SORT (DATE) UTF-8 ALL; medians and minima.
 *   idle   C sessions log in, SELECT INBOX and IDLE; prints "ready ..." once
 *          all are idling, then holds them until stdin is closed or SECONDS
 *          pass, then sends DONE and LOGOUT and closes them.
 *   pop3   COUNT sessions one after another: STLS, USER, PASS, UIDL, RETR of
 *          every message (at most ROUNDS_PER_SESSION when given), QUIT.
 *          Reports messages/s of the last session (UIDL + RETRs).
 *
 * Only talks to 127.0.0.0/8.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

enum workload { W_MIX, W_LOGIN, W_LARGE, W_IDLE, W_POP3 };

static struct {
	const char *host;
	int port;
	enum workload w;
	long conns;
	long count;
	long per_session;
	const char *user_fmt;
	long nusers;
	const char *password;
	unsigned long seed;
	long seconds;
	const char *word;
	bool implicit_tls;
	bool plaintext; /* -T: no STARTTLS */
	long loops;     /* -t: event-loop threads for mix/login; 0: a thread per connection */
} o = {
    .host = "127.0.0.1",
    .conns = 1,
    .count = 100,
    .per_session = 0,
    .user_fmt = "u%d@example.test",
    .nusers = 1,
    .password = "bench password",
    .seed = 1,
    .seconds = 600,
    .word = "kilo",
    .loops = 1,
};

/* The words the runner puts into Subject lines (bench/imap-bench WORDS). */
static const char *const words[] = {"alpha", "bravo",    "charlie", "delta",  "echo", "foxtrot",
                                    "golf",  "hotel",    "india",   "juliet", "kilo", "lima",
                                    "mike",  "november", "oscar",   "papa"};
#define NWORDS (sizeof(words) / sizeof(words[0]))

static SSL_CTX *ctx;
static double deadline;
static atomic_long next_unit;  /* rounds / logins handed out */
static atomic_long commands;   /* tagged commands completed OK */
static atomic_long units_done; /* rounds / logins completed */
static atomic_long failures;

/* Time spent per kind of command in the mix (average latency per kind). */
static const struct {
	const char *prefix;
	const char *name;
} kinds[] = {
    {"STARTTLS", "starttls"},
    {"LOGIN", "login"},
    {"SELECT", "select"},
    {"FETCH 1:* (ENVELOPE)", "fetch_envelope"},
    {"FETCH ", "fetch_body"},
    {"STORE", "store"},
    {"SEARCH SUBJECT", "search_subject"},
    {"SEARCH UNSEEN", "search_unseen"},
    {"APPEND", "append"},
    {"UID STORE", "uid_store"},
    {"UID EXPUNGE", "uid_expunge"},
    {"LOGOUT", "logout"},
};
#define NKINDS (sizeof(kinds) / sizeof(kinds[0]))
static _Thread_local double kind_secs[NKINDS];
static _Thread_local long kind_n[NKINDS];
static double total_secs[NKINDS];
static long total_n[NKINDS];
static pthread_mutex_t totals_lock = PTHREAD_MUTEX_INITIALIZER;

static void record(const char *cmd, double secs)
{
	for (size_t i = 0; i < NKINDS; i++)
		if (strncmp(cmd, kinds[i].prefix, strlen(kinds[i].prefix)) == 0) {
			kind_secs[i] += secs;
			kind_n[i]++;
			return;
		}
}

static void merge_totals(void)
{
	pthread_mutex_lock(&totals_lock);
	for (size_t i = 0; i < NKINDS; i++) {
		total_secs[i] += kind_secs[i];
		total_n[i] += kind_n[i];
	}
	pthread_mutex_unlock(&totals_lock);
}
static atomic_long reported; /* failure messages printed */

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((format(printf, 1, 2))) static void fail(const char *fmt, ...)
{
	atomic_fetch_add(&failures, 1);
	if (atomic_fetch_add(&reported, 1) >= 10)
		return;
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "bench-imap-load: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
}

static uint64_t rnd(uint64_t *s)
{
	/* xorshift64* */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ULL;
}

/* ---- event loop: a coroutine per connection, one epoll set per thread ---- */

/* Switching between a task's stack and the loop's. glibc's swapcontext()
 * saves and restores the signal mask, a system call each way (1.3-1.9 per
 * command of the mix); on x86-64 bench_ctx_switch() saves the callee-saved
 * registers on the old stack and continues on the new one, nothing else
 * (elsewhere swapcontext()). */
#if defined(__x86_64__)
struct coctx {
	void *sp;
};
__attribute__((visibility("hidden"))) void bench_ctx_switch(struct coctx *from, struct coctx *to);
__asm__(".text\n"
        ".globl bench_ctx_switch\n"
        ".hidden bench_ctx_switch\n"
        ".type bench_ctx_switch, @function\n"
        "bench_ctx_switch:\n"
        "\tpushq %rbp\n\tpushq %rbx\n\tpushq %r12\n\tpushq %r13\n\tpushq %r14\n\tpushq %r15\n"
        "\tmovq %rsp, (%rdi)\n"
        "\tmovq (%rsi), %rsp\n"
        "\tpopq %r15\n\tpopq %r14\n\tpopq %r13\n\tpopq %r12\n\tpopq %rbx\n\tpopq %rbp\n"
        "\tret\n"
        ".size bench_ctx_switch, .-bench_ctx_switch\n");
#define CTX_SWITCH(from, to) bench_ctx_switch(from, to)
#else
struct coctx {
	ucontext_t uc;
};
#define CTX_SWITCH(from, to) swapcontext(&(from)->uc, &(to)->uc)
#endif

struct loop;

struct task {
	struct coctx ctx;
	struct loop *loop;
	char *stack; /* mmap()ed, the lowest page a guard */
	void *(*fn)(void *);
	void *arg;
	uint32_t want; /* EPOLLIN/EPOLLOUT waited for; 0: running or not waiting */
	double since;  /* when the wait began, for the timeout */
	bool timed_out;
	bool done;
};

struct loop {
	int ep;
	struct coctx main;
	struct task *tasks;
	long live; /* tasks not done */
};

#define TASK_STACK (256 * 1024)
#define IO_TIMEOUT 120.0 /* seconds a connection may wait for the server (as SO_RCVTIMEO) */

/* The task running on this thread; NULL on a thread with blocking sockets. */
static _Thread_local struct task *cur_task;

/* Wait until fd is readable/writable (`want`): yield to the loop, which
 * resumes this task on an epoll event (the fd was registered edge-triggered
 * for both, with the task as its data). -1 on timeout; -1 at once with
 * blocking sockets (EAGAIN there means SO_RCVTIMEO/SO_SNDTIMEO expired). */
static int wait_io(uint32_t want)
{
	struct task *t = cur_task;
	if (t == NULL)
		return -1;
	t->want = want;
	t->since = now();
	CTX_SWITCH(&t->ctx, &t->loop->main);
	if (t->timed_out) {
		t->timed_out = false;
		errno = ETIMEDOUT;
		return -1;
	}
	return 0;
}

static void task_resume(struct loop *l, struct task *t)
{
	t->want = 0;
	cur_task = t;
	CTX_SWITCH(&l->main, &t->ctx);
	cur_task = NULL;
	if (t->done) {
		munmap(t->stack, TASK_STACK);
		t->stack = NULL;
		l->live--;
	}
}

/* The bottom of a task's stack: runs its function, then back to the loop for good. */
static void task_entry(void)
{
	struct task *t = cur_task;
	t->fn(t->arg);
	t->done = true;
	CTX_SWITCH(&t->ctx, &t->loop->main);
	abort(); /* not resumed once done */
}

struct loop_arg {
	void *(*fn)(void *);
	long first, step, n; /* tasks first, first + step, ... below n */
};

static void *loop_thread(void *arg)
{
	struct loop_arg *a = arg;
	struct loop l = {.ep = epoll_create1(EPOLL_CLOEXEC)};
	if (l.ep < 0) {
		fail("epoll_create1: %s", strerror(errno));
		return NULL;
	}
	long n = a->first < a->n ? (a->n - a->first + a->step - 1) / a->step : 0;
	l.tasks = calloc((size_t)(n > 0 ? n : 1), sizeof(*l.tasks));
	for (long i = 0; i < n; i++) {
		struct task *t = &l.tasks[i];
		t->loop = &l;
		t->fn = a->fn;
		t->arg = (void *)(intptr_t)(a->first + i * a->step);
		t->stack = mmap(NULL, TASK_STACK, PROT_READ | PROT_WRITE,
		                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
		if (t->stack == MAP_FAILED) {
			fail("mmap: %s", strerror(errno));
			t->stack = NULL;
			t->done = true;
			continue;
		}
		mprotect(t->stack, 4096, PROT_NONE);
#if defined(__x86_64__)
		/* what bench_ctx_switch() pops: six registers, then it returns into
		 * task_entry with the stack as after a call (a null return address) */
		uintptr_t *sp = (uintptr_t *)(void *)(t->stack + TASK_STACK);
		*--sp = 0;
		*--sp = (uintptr_t)task_entry;
		for (int r = 0; r < 6; r++)
			*--sp = 0;
		t->ctx.sp = sp;
#else
		getcontext(&t->ctx.uc);
		t->ctx.uc.uc_stack.ss_sp = t->stack;
		t->ctx.uc.uc_stack.ss_size = TASK_STACK;
		t->ctx.uc.uc_link = NULL;
		makecontext(&t->ctx.uc, task_entry, 0);
#endif
		l.live++;
	}
	/* every task runs until its first wait */
	for (long i = 0; i < n; i++)
		if (l.tasks[i].stack != NULL)
			task_resume(&l, &l.tasks[i]);
	struct epoll_event ev[256];
	double checked = now();
	while (l.live > 0) {
		int k = epoll_wait(l.ep, ev, 256, 1000);
		if (k < 0 && errno != EINTR) {
			fail("epoll_wait: %s", strerror(errno));
			break;
		}
		for (int i = 0; i < k; i++) {
			struct task *t = ev[i].data.ptr;
			uint32_t e = ev[i].events;
			if (e & (EPOLLERR | EPOLLHUP))
				e |= EPOLLIN | EPOLLOUT; /* let the read or write see the error */
			if (t->want & e)
				task_resume(&l, t);
		}
		double t1 = now();
		if (t1 - checked >= 1) {
			checked = t1;
			for (long i = 0; i < n; i++) {
				struct task *t = &l.tasks[i];
				if (!t->done && t->want != 0 && t1 - t->since > IO_TIMEOUT) {
					t->timed_out = true;
					task_resume(&l, t);
				}
			}
		}
	}
	close(l.ep);
	free(l.tasks);
	merge_totals();
	return NULL;
}

/* Register a new non-blocking socket of the running task with its loop. */
static int task_watch(int fd)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = cur_task};
	return epoll_ctl(cur_task->loop->ep, EPOLL_CTL_ADD, fd, &ev);
}

/* ---- connection: plain or TLS, buffered line reader ---- */

struct conn {
	int fd;
	SSL *ssl;
	char buf[65536];
	size_t off, len;
	char *line; /* last line read, NUL-terminated, without CRLF */
	size_t linecap;
	int tagn;
	char tag[16];
	char last[512]; /* last tagged reply */
	long exists;
	long fetches;  /* "* N FETCH" lines of the last command */
	long searched; /* numbers in the last SEARCH/SORT reply */
	bool sent;     /* a command went out and nothing was read since */
	bool hold;     /* conn_write() leaves TLS records in the out buffer */
	bool membio;   /* TLS through conn_bio (event loop), else the socket itself */
	/* conn_bio's buffers: TLS records read from the socket, and to be written */
	char *raw;
	size_t rawoff, rawlen;
	char *out;
	size_t outlen, outcap;
};

#define RAW_SIZE (64 * 1024)

/* The BIO under TLS on the event loop. Reads: one read() of up to 64 KiB
 * into c->raw, handed out to OpenSSL as it asks (a record's header, then its
 * body), so several records cost one system call and nothing is moved
 * (OpenSSL's own read-ahead moves what is left in its buffer to the front
 * before each record: against Dovecot's small records that was 10-55 KiB a
 * command). Writes: appended to c->out, sent by conn_flush(). */
static int conn_bio_read(BIO *b, char *dst, int len)
{
	struct conn *c = BIO_get_data(b);
	BIO_clear_retry_flags(b);
	if (c->rawoff == c->rawlen) {
		ssize_t r;
		do
			r = read(c->fd, c->raw, RAW_SIZE);
		while (r < 0 && errno == EINTR);
		if (r < 0 && errno == EAGAIN) {
			BIO_set_retry_read(b);
			return -1;
		}
		if (r <= 0)
			return (int)r;
		c->rawoff = 0;
		c->rawlen = (size_t)r;
	}
	size_t n = c->rawlen - c->rawoff;
	if (n > (size_t)len)
		n = (size_t)len;
	memcpy(dst, c->raw + c->rawoff, n);
	c->rawoff += n;
	return (int)n;
}

static int conn_bio_write(BIO *b, const char *src, int len)
{
	struct conn *c = BIO_get_data(b);
	BIO_clear_retry_flags(b);
	if (c->outlen + (size_t)len > c->outcap) {
		size_t cap = c->outcap ? c->outcap : 16384;
		while (cap < c->outlen + (size_t)len)
			cap *= 2;
		char *p = realloc(c->out, cap);
		if (p == NULL)
			return -1;
		c->out = p;
		c->outcap = cap;
	}
	memcpy(c->out + c->outlen, src, (size_t)len);
	c->outlen += (size_t)len;
	return len;
}

static long conn_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)b;
	(void)num;
	(void)ptr;
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static BIO_METHOD *conn_bio_method;

static int sock_write(struct conn *c, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(c->fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN) {
			if (wait_io(EPOLLOUT) < 0)
				return -1;
			continue;
		}
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* TLS writes its records into c->out (conn_bio); this sends them, so the
 * records of one command (APPEND's four writes) go out in one write(): the
 * same records and octets, fewer system calls. */
static int conn_flush(struct conn *c)
{
	if (!c->membio || c->outlen == 0)
		return 0;
	int r = sock_write(c, c->out, c->outlen);
	c->outlen = 0;
	return r;
}

/* After an SSL call returned r <= 0: send what it wrote, wait for what it
 * wants and return 0 to retry it, or -1. */
static int ssl_wait(struct conn *c, int r)
{
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		if (conn_flush(c) < 0)
			return -1;
		return wait_io(EPOLLIN);
	default: /* no WANT_WRITE: conn_bio takes everything */
		return -1;
	}
}

static int conn_write(struct conn *c, const char *p, size_t n)
{
	if (c->ssl == NULL)
		return sock_write(c, p, n);
	while (n > 0) {
		ERR_clear_error();
		int r = SSL_write(c->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
		if (r <= 0) {
			/* a retry after WANT_* passes the same buffer and length */
			if (ssl_wait(c, r) < 0)
				return -1;
			continue;
		}
		p += r;
		n -= (size_t)r;
	}
	return c->hold ? 0 : conn_flush(c);
}

__attribute__((format(printf, 2, 3))) static int conn_printf(struct conn *c, const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line))
		return -1;
	return conn_write(c, line, (size_t)n);
}

static int fill(struct conn *c)
{
	if (c->off > 0) {
		memmove(c->buf, c->buf + c->off, c->len - c->off);
		c->len -= c->off;
		c->off = 0;
	}
	if (c->len == sizeof(c->buf))
		return 0; /* caller copies out what it has */
	/* Right after a command its response cannot be there yet: wait for the
	 * socket's edge (which only data arriving after the write can be) rather
	 * than try a read() that fails with EAGAIN (0.7 system calls a command). */
	if (c->sent) {
		c->sent = false;
		if (cur_task != NULL && (c->ssl == NULL || !SSL_has_pending(c->ssl)) &&
		    c->rawoff == c->rawlen && wait_io(EPOLLIN) < 0)
			return -1;
	}
	ssize_t r;
	for (;;) {
		if (c->ssl != NULL) {
			ERR_clear_error();
			int n = SSL_read(c->ssl, c->buf + c->len, (int)(sizeof(c->buf) - c->len));
			if (n <= 0 && ssl_wait(c, n) == 0)
				continue;
			r = n;
		} else {
			r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0 && errno == EAGAIN && wait_io(EPOLLIN) == 0)
				continue;
		}
		break;
	}
	if (r <= 0)
		return -1;
	c->len += (size_t)r;
	return 0;
}

/* Read one line into c->line; returns its length or -1. */
static long read_line(struct conn *c)
{
	size_t n = 0;
	for (;;) {
		char *start = c->buf + c->off;
		char *nl = memchr(start, '\n', c->len - c->off);
		size_t take = nl != NULL ? (size_t)(nl - start) + 1 : c->len - c->off;
		if (n + take + 1 > c->linecap) {
			c->linecap = (n + take + 1) * 2;
			c->line = realloc(c->line, c->linecap);
			if (c->line == NULL)
				abort();
		}
		memcpy(c->line + n, start, take);
		n += take;
		c->off += take;
		if (nl != NULL)
			break;
		if (fill(c) < 0)
			return -1;
	}
	while (n > 0 && (c->line[n - 1] == '\n' || c->line[n - 1] == '\r'))
		n--;
	c->line[n] = '\0';
	return (long)n;
}

/* Skip `n` octets of literal data. */
static int skip_bytes(struct conn *c, size_t n)
{
	while (n > 0) {
		if (c->off == c->len && fill(c) < 0)
			return -1;
		size_t take = c->len - c->off < n ? c->len - c->off : n;
		c->off += take;
		n -= take;
	}
	return 0;
}

/* A literal announced at the end of the line: {N} or {N+}; returns N or -1. */
static long trailing_literal(const char *line, long len)
{
	if (len < 3 || line[len - 1] != '}')
		return -1;
	long i = len - 2;
	if (line[i] == '+')
		i--;
	long end = i;
	while (i >= 0 && line[i] >= '0' && line[i] <= '9')
		i--;
	if (i < 0 || line[i] != '{' || i == end)
		return -1;
	return strtol(line + i + 1, NULL, 10);
}

static void count_numbers(struct conn *c, const char *p)
{
	long n = 0;
	bool in = false;
	for (; *p != '\0'; p++) {
		bool d = *p >= '0' && *p <= '9';
		if (d && !in)
			n++;
		in = d;
	}
	c->searched = n;
}

/* Read responses up to the tagged one: 0 for OK, 1 for NO/BAD, -1 on I/O error. */
static int imap_wait(struct conn *c)
{
	size_t tl = strlen(c->tag);
	c->fetches = 0;
	for (long guard = 0; guard < 100000000; guard++) {
		long n = read_line(c);
		if (n < 0)
			return -1;
		const char *l = c->line;
		bool tagged = (size_t)n > tl && strncmp(l, c->tag, tl) == 0 && l[tl] == ' ';
		if (!tagged && l[0] == '*' && l[1] == ' ') {
			char *end;
			long num = strtol(l + 2, &end, 10);
			if (end != l + 2) {
				if (strncmp(end, " EXISTS", 7) == 0)
					c->exists = num;
				else if (strncmp(end, " FETCH", 6) == 0)
					c->fetches++;
			} else if (strncmp(l + 2, "SEARCH", 6) == 0 ||
			           strncmp(l + 2, "SORT", 4) == 0) {
				count_numbers(c, l + 6);
			}
		}
		/* literal data, then the rest of the same response on the next line */
		long lit;
		while ((lit = trailing_literal(c->line, n)) >= 0) {
			if (skip_bytes(c, (size_t)lit) < 0 || (n = read_line(c)) < 0)
				return -1;
		}
		if (tagged) {
			snprintf(c->last, sizeof(c->last), "%s", l);
			const char *st = l + tl + 1;
			return strncmp(st, "OK", 2) == 0 ? 0 : 1;
		}
	}
	return -1;
}

/* Send one tagged command (fmt without tag and CRLF) and wait for its reply. */
__attribute__((format(printf, 2, 3))) static int imap_cmd(struct conn *c, const char *fmt, ...)
{
	char cmd[1536];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(cmd))
		return -1;
	snprintf(c->tag, sizeof(c->tag), "a%d", ++c->tagn);
	if (conn_printf(c, "%s %s\r\n", c->tag, cmd) < 0)
		return -1;
	c->sent = true;
	double t0 = now();
	int r = imap_wait(c);
	record(cmd, now() - t0);
	if (r == 0)
		atomic_fetch_add(&commands, 1);
	else if (r > 0)
		fail("%s -> %s", cmd, c->last);
	return r;
}

static void conn_close(struct conn *c)
{
	if (c->ssl != NULL) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->off = c->len = 0;
	c->rawoff = c->rawlen = c->outlen = 0;
}

static int start_tls(struct conn *c)
{
	c->ssl = SSL_new(ctx);
	c->membio = cur_task != NULL;
	if (c->ssl == NULL)
		goto bad;
	/* With blocking sockets (large, pop3, idle) TLS reads and writes the
	 * socket: SSL_connect() would block reading before a flush. */
	if (!c->membio) {
		if (SSL_set_fd(c->ssl, c->fd) != 1)
			goto bad;
		if (SSL_connect(c->ssl) == 1)
			return 0;
		goto bad;
	}
	/* conn_bio both ways; it reads ahead itself */
	if (c->raw == NULL && (c->raw = malloc(RAW_SIZE)) == NULL)
		goto bad;
	BIO *b = BIO_new(conn_bio_method);
	if (b == NULL)
		goto bad;
	BIO_set_data(b, c);
	BIO_set_init(b, 1);
	SSL_set_bio(c->ssl, b, b);
	SSL_set_read_ahead(c->ssl, 0);
	for (;;) {
		ERR_clear_error();
		int r = SSL_connect(c->ssl);
		if (r == 1)
			return conn_flush(c) < 0 ? -1 : 0;
		if (ssl_wait(c, r) < 0)
			break;
	}
bad:;
	unsigned long e = ERR_get_error();
	fail("TLS handshake: %s", e ? ERR_error_string(e, NULL) : "failed");
	return -1;
}

static int tcp_connect(struct conn *c)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o.port)};
	inet_pton(AF_INET, o.host, &sa.sin_addr);
	c->fd = socket(AF_INET, SOCK_STREAM | (cur_task != NULL ? SOCK_NONBLOCK : 0), 0);
	c->off = c->len = 0;
	c->tagn = 0;
	c->exists = -1;
	if (c->fd < 0) {
		fail("socket: %s", strerror(errno));
		return -1;
	}
	if (cur_task == NULL) {
		struct timeval tv = {.tv_sec = o.w == W_LARGE ? 1800 : (long)IO_TIMEOUT};
		setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	} else if (task_watch(c->fd) < 0) {
		fail("epoll_ctl: %s", strerror(errno));
		conn_close(c);
		return -1;
	}
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	int r = connect(c->fd, (struct sockaddr *)&sa, sizeof(sa));
	if (r < 0 && errno == EINPROGRESS) {
		int err = 0;
		socklen_t len = sizeof(err);
		if (wait_io(EPOLLOUT) < 0)
			err = ETIMEDOUT;
		else if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		r = err == 0 ? 0 : -1;
		errno = err;
	}
	if (r < 0) {
		fail("connect: %s", strerror(errno));
		conn_close(c);
		return -1;
	}
	if (o.implicit_tls && start_tls(c) < 0) {
		conn_close(c);
		return -1;
	}
	return 0;
}

static void user_name(char *out, size_t size, long k)
{
	const char *pct = strstr(o.user_fmt, "%d");
	if (pct == NULL)
		snprintf(out, size, "%s", o.user_fmt);
	else
		snprintf(out, size, "%.*s%ld%s", (int)(pct - o.user_fmt), o.user_fmt, k % o.nusers,
		         pct + 2);
}

/* Connect, STARTTLS, LOGIN. */
static int imap_open(struct conn *c, long k)
{
	if (tcp_connect(c) < 0)
		return -1;
	if (read_line(c) < 0 || strncmp(c->line, "* OK", 4) != 0) {
		fail("greeting: %s", c->line ? c->line : "(none)");
		goto bad;
	}
	if (!o.implicit_tls && !o.plaintext && (imap_cmd(c, "STARTTLS") != 0 || start_tls(c) < 0))
		goto bad;
	char user[256];
	user_name(user, sizeof(user), k);
	if (imap_cmd(c, "LOGIN \"%s\" \"%s\"", user, o.password) != 0)
		goto bad;
	return 0;
bad:
	conn_close(c);
	return -1;
}

static void imap_logout(struct conn *c)
{
	imap_cmd(c, "LOGOUT");
	conn_close(c);
}

/* ---- mix ---- */

static char append_msg[4096];
static size_t append_len;

static int mix_round(struct conn *c, uint64_t *rs, long round)
{
	if (imap_cmd(c, "SELECT INBOX") != 0 || c->exists < 1)
		return -1;
	long ex = c->exists;
	if (imap_cmd(c, "FETCH 1:* (ENVELOPE)") != 0)
		return -1;
	if (c->fetches != ex) {
		fail("FETCH 1:* (ENVELOPE): %ld FETCH responses for %ld messages", c->fetches, ex);
		return -1;
	}
	for (int i = 0; i < 3; i++)
		if (imap_cmd(c, "FETCH %ld BODY.PEEK[]", (long)(rnd(rs) % (uint64_t)ex) + 1) != 0)
			return -1;
	static const char *const stores[] = {"+FLAGS (\\Seen)", "-FLAGS (\\Seen)",
	                                     "+FLAGS (\\Flagged)", "-FLAGS (\\Flagged)"};
	if (imap_cmd(c, "STORE %ld %s", (long)(rnd(rs) % (uint64_t)ex) + 1, stores[rnd(rs) % 4]) !=
	    0)
		return -1;
	if (imap_cmd(c, "SEARCH SUBJECT %s", words[rnd(rs) % NWORDS]) != 0)
		return -1;
	if (imap_cmd(c, "SEARCH UNSEEN") != 0)
		return -1;
	/* APPEND with a non-synchronizing literal (LITERAL+, offered by both servers) */
	char hdr[512];
	int hl =
	    snprintf(hdr, sizeof(hdr),
	             "Date: Mon, 23 Nov 2026 01:00:00 +0000\r\nFrom: Load <load@bench.test>\r\n"
	             "To: <user@example.test>\r\nSubject: appended %s %ld\r\n"
	             "Message-ID: <append-%ld-%llu@bench.test>\r\n\r\n",
	             words[rnd(rs) % NWORDS], round, round, (unsigned long long)(rnd(rs) >> 20));
	snprintf(c->tag, sizeof(c->tag), "a%d", ++c->tagn);
	double t0 = now();
	/* four TLS records as before, sent together by the last */
	c->hold = true;
	int w = conn_printf(c, "%s APPEND INBOX (\\Seen) {%zu+}\r\n", c->tag,
	                    (size_t)hl + append_len) < 0 ||
	        conn_write(c, hdr, (size_t)hl) < 0 || conn_write(c, append_msg, append_len) < 0;
	c->hold = false;
	if (w || conn_write(c, "\r\n", 2) < 0)
		return -1;
	c->sent = true;
	int r = imap_wait(c);
	record("APPEND", now() - t0);
	if (r != 0) {
		if (r > 0)
			fail("APPEND -> %s", c->last);
		return -1;
	}
	atomic_fetch_add(&commands, 1);
	const char *au = strstr(c->last, "[APPENDUID ");
	unsigned long uidv, uid;
	if (au == NULL || sscanf(au, "[APPENDUID %lu %lu]", &uidv, &uid) != 2) {
		fail("APPEND without APPENDUID: %s", c->last);
		return -1;
	}
	if (imap_cmd(c, "UID STORE %lu +FLAGS.SILENT (\\Deleted)", uid) != 0)
		return -1;
	if (imap_cmd(c, "UID EXPUNGE %lu", uid) != 0)
		return -1;
	return 0;
}

static void *mix_worker(void *arg)
{
	long k = (long)(intptr_t)arg;
	uint64_t rs = (o.seed * 1000003ULL + (uint64_t)k) | 1;
	struct conn *c = calloc(1, sizeof(*c));
	c->fd = -1;
	long in_session = 0;
	for (;;) {
		long r = atomic_fetch_add(&next_unit, 1);
		if (r >= o.count || now() > deadline)
			break;
		if (c->fd < 0) {
			if (imap_open(c, k) < 0)
				break;
			in_session = 0;
		}
		if (mix_round(c, &rs, r) != 0) {
			fail("round %ld of thread %ld failed", r, k);
			conn_close(c);
			break;
		}
		atomic_fetch_add(&units_done, 1);
		if (o.per_session > 0 && ++in_session >= o.per_session)
			imap_logout(c);
	}
	if (c->fd >= 0)
		imap_logout(c);
	free(c->line);
	free(c->raw);
	free(c->out);
	free(c);
	return NULL;
}

/* ---- login ---- */

static void *login_worker(void *arg)
{
	long k = (long)(intptr_t)arg;
	struct conn *c = calloc(1, sizeof(*c));
	c->fd = -1;
	for (;;) {
		long r = atomic_fetch_add(&next_unit, 1);
		if (r >= o.count || now() > deadline)
			break;
		if (imap_open(c, k + r) < 0)
			break;
		imap_logout(c);
		atomic_fetch_add(&units_done, 1);
	}
	free(c->line);
	free(c->raw);
	free(c->out);
	free(c);
	return NULL;
}

/* ---- idle ---- */

static struct conn **idlers;

static void *idle_worker(void *arg)
{
	(void)arg;
	for (;;) {
		long k = atomic_fetch_add(&next_unit, 1);
		if (k >= o.conns || now() > deadline)
			break;
		struct conn *c = calloc(1, sizeof(*c));
		c->fd = -1;
		if (imap_open(c, k) < 0 || imap_cmd(c, "SELECT INBOX") != 0) {
			conn_close(c);
			free(c->line);
			free(c);
			continue;
		}
		snprintf(c->tag, sizeof(c->tag), "a%d", ++c->tagn);
		if (conn_printf(c, "%s IDLE\r\n", c->tag) < 0 || read_line(c) < 0 ||
		    c->line[0] != '+') {
			fail("IDLE not accepted: %s", c->line ? c->line : "");
			conn_close(c);
			free(c->line);
			free(c);
			continue;
		}
		idlers[k] = c;
		atomic_fetch_add(&units_done, 1);
	}
	return NULL;
}

/* ---- pop3 ---- */

static int pop_cmd(struct conn *c, const char *cmd)
{
	if (conn_printf(c, "%s\r\n", cmd) < 0 || read_line(c) < 0)
		return -1;
	if (strncmp(c->line, "+OK", 3) != 0) {
		fail("%s -> %s", strncmp(cmd, "PASS", 4) == 0 ? "PASS" : cmd, c->line);
		return 1;
	}
	atomic_fetch_add(&commands, 1);
	return 0;
}

/* Read a multi-line response body up to "."; returns its lines or -1. */
static long pop_multiline(struct conn *c, long *bytes)
{
	long lines = 0;
	for (;;) {
		long n = read_line(c);
		if (n < 0)
			return -1;
		if (n == 1 && c->line[0] == '.')
			return lines;
		lines++;
		*bytes += n + 2;
	}
}

static int pop3_session(int pass, double *msgs_per_sec)
{
	struct conn *c = calloc(1, sizeof(*c));
	c->fd = -1;
	int rc = -1;
	long bytes = 0, n = 0;
	if (tcp_connect(c) < 0)
		goto out;
	if (read_line(c) < 0 || strncmp(c->line, "+OK", 3) != 0) {
		fail("pop3 greeting: %s", c->line ? c->line : "(none)");
		goto out;
	}
	if (!o.implicit_tls && (pop_cmd(c, "STLS") != 0 || start_tls(c) < 0))
		goto out;
	char line[512], user[256];
	user_name(user, sizeof(user), 0);
	snprintf(line, sizeof(line), "USER %s", user);
	if (pop_cmd(c, line) != 0)
		goto out;
	snprintf(line, sizeof(line), "PASS %s", o.password);
	if (pop_cmd(c, line) != 0)
		goto out;
	double t0 = now();
	long uidl_bytes = 0;
	if (pop_cmd(c, "UIDL") != 0 || (n = pop_multiline(c, &uidl_bytes)) < 0)
		goto out;
	double t1 = now();
	if (o.per_session > 0 && n > o.per_session)
		n = o.per_session;
	for (long i = 1; i <= n; i++) {
		snprintf(line, sizeof(line), "RETR %ld", i);
		if (pop_cmd(c, line) != 0 || pop_multiline(c, &bytes) < 0)
			goto out;
	}
	double t2 = now();
	pop_cmd(c, "QUIT");
	*msgs_per_sec = n / (t2 - t0);
	printf("pass=%d messages=%ld bytes=%ld uidl_seconds=%.4f retr_seconds=%.4f seconds=%.4f "
	       "msgs_per_sec=%.1f\n",
	       pass, n, bytes, t1 - t0, t2 - t1, t2 - t0, *msgs_per_sec);
	rc = n > 0 ? 0 : -1;
	if (n == 0)
		fail("pop3: empty maildrop");
out:
	conn_close(c);
	free(c->line);
	free(c);
	return rc;
}

/* ---- large ---- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static int run_large(void)
{
	struct conn *c = calloc(1, sizeof(*c));
	c->fd = -1;
	int rc = 1;
	if (imap_open(c, 0) < 0)
		goto out;
	double t0 = now();
	if (imap_cmd(c, "SELECT INBOX") != 0)
		goto out;
	double first = now() - t0;
	long ex = c->exists;
	enum { SEL, FETCH, SEARCH, SORT, NCMD };
	static const char *const names[NCMD] = {"select", "fetch_flags", "uid_search_subject",
	                                        "sort_date"};
	double *t[NCMD];
	for (int i = 0; i < NCMD; i++)
		t[i] = calloc((size_t)o.count, sizeof(double));
	long found = -1, sorted = -1;
	for (long it = 0; it < o.count; it++) {
		double a = now();
		if (imap_cmd(c, "SELECT INBOX") != 0)
			goto out;
		double b = now();
		if (imap_cmd(c, "FETCH 1:* (FLAGS)") != 0)
			goto out;
		if (c->fetches != ex) {
			fail("FETCH 1:* (FLAGS): %ld FETCH responses for %ld messages", c->fetches,
			     ex);
			goto out;
		}
		double d = now();
		c->searched = 0;
		if (imap_cmd(c, "UID SEARCH SUBJECT %s", o.word) != 0)
			goto out;
		found = c->searched;
		double e = now();
		c->searched = 0;
		if (imap_cmd(c, "SORT (DATE) UTF-8 ALL") != 0)
			goto out;
		sorted = c->searched;
		double f = now();
		t[SEL][it] = b - a;
		t[FETCH][it] = d - b;
		t[SEARCH][it] = e - d;
		t[SORT][it] = f - e;
	}
	if (sorted != ex) {
		fail("SORT returned %ld numbers for %ld messages", sorted, ex);
		goto out;
	}
	imap_logout(c);
	printf("messages=%ld iterations=%ld select_first=%.4f found=%ld", ex, o.count, first,
	       found);
	for (int i = 0; i < NCMD; i++) {
		qsort(t[i], (size_t)o.count, sizeof(double), cmp_double);
		printf(" %s=%.4f %s_min=%.4f", names[i], t[i][o.count / 2], names[i], t[i][0]);
	}
	printf("\n");
	for (int i = 0; i < NCMD; i++)
		free(t[i]);
	rc = 0;
out:
	conn_close(c);
	free(c->line);
	free(c);
	return rc;
}

/* ---- main ---- */

/* " ms_KIND=average" for every kind of command seen, then the end of the line. */
static void print_latencies(void)
{
	for (size_t i = 0; i < NKINDS; i++)
		if (total_n[i] > 0)
			printf(" ms_%s=%.3f", kinds[i].name, total_secs[i] * 1000 / total_n[i]);
	printf("\n");
}

static void usage(void)
{
	fprintf(stderr,
	        "usage: bench-imap-load -p PORT -w mix|login|large|idle|pop3 [-H HOST] [-c "
	        "CONNECTIONS]\n"
	        "                       [-n COUNT] [-m PER_SESSION] [-u USER_FORMAT] [-U USERS]\n"
	        "                       [-P PASSWORD] [-s SEED] [-d SECONDS] [-S WORD] [-t LOOPS]\n"
	        "                       [-i | -T]\n");
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

struct thread_arg {
	void *(*fn)(void *);
	long k;
};

static void *blocking_thread(void *arg)
{
	struct thread_arg *a = arg;
	a->fn((void *)(intptr_t)a->k);
	merge_totals();
	return NULL;
}

/* fn(0) .. fn(n - 1), each on a thread of its own with blocking sockets. */
static int run_threads(void *(*fn)(void *), long n)
{
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	pthread_t *th = calloc((size_t)n, sizeof(*th));
	struct thread_arg *args = calloc((size_t)n, sizeof(*args));
	long started = 0;
	for (long i = 0; i < n; i++, started++) {
		args[i] = (struct thread_arg){fn, i};
		if (pthread_create(&th[i], &attr, blocking_thread, &args[i]) != 0) {
			fail("pthread_create failed");
			break;
		}
	}
	for (long i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	free(th);
	free(args);
	pthread_attr_destroy(&attr);
	return 0;
}

/* fn(0) .. fn(n - 1) as coroutines on o.loops event-loop threads (connection
 * K on thread K mod o.loops); with -t 0 a thread each (run_threads). */
static int run_connections(void *(*fn)(void *), long n)
{
	if (o.loops == 0)
		return run_threads(fn, n);
	long nt = o.loops < n ? o.loops : n;
	pthread_t *th = calloc((size_t)nt, sizeof(*th));
	struct loop_arg *args = calloc((size_t)nt, sizeof(*args));
	long started = 0;
	for (long i = 0; i < nt; i++, started++) {
		args[i] = (struct loop_arg){fn, i, nt, n};
		if (pthread_create(&th[i], NULL, loop_thread, &args[i]) != 0) {
			fail("pthread_create failed");
			break;
		}
	}
	for (long i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	free(th);
	free(args);
	return 0;
}

int main(int argc, char **argv)
{
	const char *wname = NULL;
	int ch;
	while ((ch = getopt(argc, argv, "H:p:w:c:n:m:u:U:P:s:d:S:t:iT")) != -1) {
		switch (ch) {
		case 'H':
			o.host = optarg;
			break;
		case 'p':
			o.port = (int)number(optarg, 1, 65535);
			break;
		case 'w':
			wname = optarg;
			break;
		case 'c':
			o.conns = number(optarg, 1, 100000);
			break;
		case 'n':
			o.count = number(optarg, 1, 100000000);
			break;
		case 'm':
			o.per_session = number(optarg, 0, 100000000);
			break;
		case 'u':
			o.user_fmt = optarg;
			break;
		case 'U':
			o.nusers = number(optarg, 1, 1000000);
			break;
		case 'P':
			o.password = optarg;
			break;
		case 's':
			o.seed = (unsigned long)number(optarg, 0, 1L << 62);
			break;
		case 'd':
			o.seconds = number(optarg, 1, 86400);
			break;
		case 'S':
			o.word = optarg;
			break;
		case 't':
			o.loops = number(optarg, 0, 1024);
			break;
		case 'i':
			o.implicit_tls = true;
			break;
		case 'T':
			o.plaintext = true;
			break;
		default:
			usage();
		}
	}
	if (o.port == 0 || wname == NULL || strncmp(o.host, "127.", 4) != 0 ||
	    (o.plaintext && o.implicit_tls))
		usage();
	/* the user format takes exactly one %d */
	const char *pct = strchr(o.user_fmt, '%');
	if (pct != NULL && (pct[1] != 'd' || strchr(pct + 2, '%') != NULL))
		usage();
	if (strcmp(wname, "mix") == 0)
		o.w = W_MIX;
	else if (strcmp(wname, "login") == 0)
		o.w = W_LOGIN;
	else if (strcmp(wname, "large") == 0)
		o.w = W_LARGE;
	else if (strcmp(wname, "idle") == 0)
		o.w = W_IDLE;
	else if (strcmp(wname, "pop3") == 0)
		o.w = W_POP3;
	else
		usage();

	signal(SIGPIPE, SIG_IGN);
	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL)
		return 1;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	/* With blocking sockets: read the socket in pieces of up to a record's
	 * size (OpenSSL's default read buffer, about 16.7 KiB), several small
	 * records at once, rather than each record's 5-octet header and then its
	 * body: two read()s a record. The event loop's connections read ahead in
	 * conn_bio instead. The server sees no difference. */
	SSL_CTX_set_read_ahead(ctx, 1);
	conn_bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "bench conn");
	if (conn_bio_method == NULL || !BIO_meth_set_read(conn_bio_method, conn_bio_read) ||
	    !BIO_meth_set_write(conn_bio_method, conn_bio_write) ||
	    !BIO_meth_set_ctrl(conn_bio_method, conn_bio_ctrl))
		return 1;

	/* body of the appended message: 2 KiB of 72-octet lines */
	for (int i = 0; append_len + 80 < 2048; i++)
		append_len +=
		    (size_t)snprintf(append_msg + append_len, sizeof(append_msg) - append_len,
		                     "%04d appended line of the load generator, nothing to see "
		                     "here.\r\n",
		                     i);

	double t0 = now();
	deadline = t0 + (double)o.seconds;
	int rc = 0;
	switch (o.w) {
	case W_MIX: {
		run_connections(mix_worker, o.conns);
		double s = now() - t0;
		long cmds = atomic_load(&commands), done = atomic_load(&units_done);
		printf("workload=mix connections=%ld rounds=%ld rounds_done=%ld commands=%ld "
		       "failures=%ld "
		       "seconds=%.3f commands_per_sec=%.1f",
		       o.conns, o.count, done, cmds, atomic_load(&failures), s, cmds / s);
		print_latencies();
		rc = done == o.count && atomic_load(&failures) == 0 ? 0 : 1;
		break;
	}
	case W_LOGIN: {
		run_connections(login_worker, o.conns);
		double s = now() - t0;
		long done = atomic_load(&units_done);
		printf(
		    "workload=login connections=%ld logins=%ld done=%ld failures=%ld seconds=%.3f "
		    "logins_per_sec=%.1f",
		    o.conns, o.count, done, atomic_load(&failures), s, done / s);
		print_latencies();
		rc = done == o.count && atomic_load(&failures) == 0 ? 0 : 1;
		break;
	}
	case W_LARGE:
		rc = run_large();
		break;
	case W_IDLE: {
		idlers = calloc((size_t)o.conns, sizeof(*idlers));
		run_threads(idle_worker, o.conns < 8 ? o.conns : 8);
		long done = atomic_load(&units_done);
		printf("ready sessions=%ld idling=%ld failures=%ld setup_seconds=%.3f\n", o.conns,
		       done, atomic_load(&failures), now() - t0);
		fflush(stdout);
		/* hold until stdin closes or the time is up */
		for (;;) {
			double left = deadline - now();
			if (left <= 0)
				break;
			struct pollfd p = {.fd = 0, .events = POLLIN};
			int r = poll(&p, 1, left > 1 ? 1000 : (int)(left * 1000) + 1);
			if (r < 0 && errno != EINTR)
				break;
			if (r > 0) {
				char b[256];
				if (read(0, b, sizeof(b)) <= 0)
					break;
			}
		}
		for (long k = 0; k < o.conns; k++) {
			struct conn *c = idlers[k];
			if (c == NULL)
				continue;
			conn_printf(c, "DONE\r\nz LOGOUT\r\n");
			conn_close(c);
			free(c->line);
			free(c);
		}
		free(idlers);
		rc = done == o.conns && atomic_load(&failures) == 0 ? 0 : 1;
		break;
	}
	case W_POP3: {
		double mps = 0;
		for (long i = 1; i <= o.count && rc == 0; i++)
			if (pop3_session((int)i, &mps) != 0)
				rc = 1;
		break;
	}
	}
	SSL_CTX_free(ctx);
	BIO_meth_free(conn_bio_method);
	return rc;
}

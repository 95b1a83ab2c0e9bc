/*
 * The resolver against a real authoritative server: NSD on 127.0.0.1 on a
 * free port, started through tests/dns/testdns.sh and serving
 * tests/dns/zones/. Checks every answer of the test zones, MX ordering and
 * its randomisation among equal preferences, A+AAAA merging, CNAME chains,
 * TXT strings, TLSA, PTR and FCrDNS; timeouts (a UDP socket that never
 * answers) bounded by the lookup deadline; cancellation (a cancelled
 * lookup never calls back, also when the answer is already on its way);
 * the synchronous wrapper on another thread. Also the pure parts: RDATA
 * decoding of malformed records, MX sort, reverse names.
 */
#include "dns/dns.h"
#include "lib/log.h"
#include "lib/xalloc.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static char rundir[] = "/tmp/postern-test-dns-XXXXXX";
static char script[1024];
static char server[64];    /* "127.0.0.1:PORT" of NSD */
static char blackhole[64]; /* "127.0.0.1:PORT" of a socket that never answers */
static int blackhole_fd = -1;
static pid_t nsd_pid = -1;
static char zonedir[1024]; /* what NSD serves */
static char anchor[1100];  /* DS of signed.test, a trust anchor file */

/* ---- helpers ---- */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A UDP socket on 127.0.0.1 with a kernel-chosen port; TCP on the same port free too. */
static int udp_socket(uint16_t *port_r)
{
	struct sockaddr_in sin = {.sin_family = AF_INET};
	socklen_t len = sizeof(sin);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	*port_r = ntohs(sin.sin_port);
	return fd;
}

static bool tcp_free(uint16_t port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	bool ok = bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
	close(fd);
	return ok;
}

static int start_server(void **state)
{
	const char *src = getenv("POSTERN_SOURCE_DIR");
	if (src == NULL) {
		fprintf(stderr, "test-dns: POSTERN_SOURCE_DIR is not set (run through ctest)\n");
		return -1;
	}
	snprintf(script, sizeof(script), "%s/tests/dns/testdns.sh", src);
	if (mkdtemp(rundir) == NULL)
		return -1;
	log_set_level(LOG_WARN);

	/* NSD's own children are reaped here when NSD exits, not left to init. */
	prctl(PR_SET_CHILD_SUBREAPER, 1);

	/* A port nobody answers on: bound, never read. */
	uint16_t port;
	blackhole_fd = udp_socket(&port);
	snprintf(blackhole, sizeof(blackhole), "127.0.0.1:%u", port);

	/* The plain zones, and signed.test signed now with a fresh key. */
	char cmd[8192];
	snprintf(zonedir, sizeof(zonedir), "%s/zones", rundir);
	snprintf(anchor, sizeof(anchor), "%s/signed.test.ds", zonedir);
	snprintf(cmd, sizeof(cmd),
		 "mkdir '%s' && cp '%s'/tests/dns/zones/*.zone '%s' && "
		 "sh '%s' sign '%s/tests/dns/signed/signed.test.zone' signed.test '%s'",
		 zonedir, src, zonedir, script, src, zonedir);
	if (system(cmd) != 0) {
		fprintf(stderr, "test-dns: could not sign the test zone (is ldnsutils installed?)\n");
		return -1;
	}

	for (int attempt = 0; attempt < 5; attempt++) {
		int fd = udp_socket(&port);
		close(fd);
		if (!tcp_free(port))
			continue;
		char portstr[16];
		snprintf(portstr, sizeof(portstr), "%u", port);
		nsd_pid = fork();
		if (nsd_pid < 0)
			return -1;
		if (nsd_pid == 0) {
			/* NSD goes away with this process, even if a test crashes. */
			prctl(PR_SET_PDEATHSIG, SIGTERM);
			execl("/bin/sh", "sh", script, "run", rundir, portstr, zonedir, (char *)NULL);
			_exit(127);
		}
		snprintf(cmd, sizeof(cmd), "sh '%s' wait %u example.test", script, port);
		if (system(cmd) == 0) {
			snprintf(server, sizeof(server), "127.0.0.1:%u", port);
			return 0;
		}
		kill(nsd_pid, SIGTERM);
		waitpid(nsd_pid, NULL, 0);
		nsd_pid = -1;
	}
	fprintf(stderr, "test-dns: could not start nsd (is the nsd package installed?)\n");
	return -1;
}

static int stop_server(void **state)
{
	int status = 0;
	if (nsd_pid > 0) {
		kill(nsd_pid, SIGTERM);
		waitpid(nsd_pid, &status, 0);
	}
	/* NSD's server processes, now ours; at most 5 s */
	for (int i = 0; i < 500 && waitpid(-1, NULL, WNOHANG) >= 0; i++)
		usleep(10000);
	char cmd[8192];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", rundir);
	int rc = system(cmd);
	if (blackhole_fd >= 0)
		close(blackhole_fd);
	return rc == 0 ? 0 : -1;
}

struct fixture {
	struct event_base *base;
	struct event *tick; /* so that one loop iteration never blocks long */
	struct dns_resolver *r;
};

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
}

static struct dns_resolver *resolver_for(struct event_base *base, const char *addr,
					 unsigned timeout_ms)
{
	struct dns_options opts = {.resolver = addr, .timeout_ms = timeout_ms};
	const char *error = NULL;
	struct dns_resolver *r = dns_resolver_new(base, &opts, &error);
	if (r == NULL)
		fail_msg("dns_resolver_new: %s", error);
	return r;
}

static int fixture_setup(void **state)
{
	struct fixture *f = xcalloc(1, sizeof(*f));
	f->base = event_base_new();
	f->tick = event_new(f->base, -1, EV_PERSIST, on_tick, NULL);
	struct timeval tv = {0, 20000};
	event_add(f->tick, &tv);
	f->r = resolver_for(f->base, server, 10000); /* generous: a loaded CI machine */
	*state = f;
	return 0;
}

static int fixture_teardown(void **state)
{
	struct fixture *f = *state;
	dns_resolver_free(&f->r);
	assert_null(f->r);
	event_free(f->tick);
	event_base_free(f->base);
	free(f);
	return 0;
}

/* Run the loop until *counter reaches target or max_s passed. */
static void run_until(struct event_base *base, const unsigned *counter, unsigned target,
		      double max_s)
{
	double end = now_s() + max_s;
	while (*counter < target && now_s() < end)
		event_base_loop(base, EVLOOP_ONCE);
}

static void run_for(struct event_base *base, double secs)
{
	double end = now_s() + secs;
	while (now_s() < end)
		event_base_loop(base, EVLOOP_ONCE);
}

struct waiter {
	unsigned done;
	struct dns_result *res;
	struct dns_fcrdns_result *fr;
	double at;
};

static void got(struct dns_result *res, void *arg)
{
	struct waiter *w = arg;
	w->done++;
	w->at = now_s();
	dns_result_free(&w->res);
	w->res = res;
}

static void got_fcrdns(struct dns_fcrdns_result *fr, void *arg)
{
	struct waiter *w = arg;
	w->done++;
	dns_fcrdns_result_free(&w->fr);
	w->fr = fr;
}

/* Look up and wait; the caller frees the result. */
static struct dns_result *lookup(struct fixture *f, const char *name, uint16_t qtype)
{
	struct waiter w = {0};
	struct dns_query *q = qtype == 0 ? dns_lookup_addr(f->r, name, got, &w)
					 : dns_lookup(f->r, name, qtype, got, &w);
	assert_non_null(q);
	assert_int_equal(w.done, 0); /* never from inside dns_lookup */
	run_until(f->base, &w.done, 1, 10);
	assert_int_equal(w.done, 1);
	assert_int_equal(dns_resolver_pending(f->r), 0);
	return w.res;
}

static struct sockaddr_storage ip(const char *text)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, text, &sin->sin_addr) == 1)
		sin->sin_family = AF_INET;
	else if (inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1)
		sin6->sin6_family = AF_INET6;
	else
		fail_msg("bad address %s", text);
	return ss;
}

static const char *addr_text(const struct dns_rr *rr, char *buf, size_t size)
{
	return inet_ntop(rr->u.addr.family, rr->u.addr.addr, buf, (socklen_t)size);
}

static void assert_addrs(const struct dns_result *res, const char *const *want, size_t n)
{
	char buf[64];
	assert_int_equal(res->status, DNS_NOERROR);
	assert_int_equal(res->count, n);
	for (size_t i = 0; i < n; i++)
		assert_string_equal(addr_text(&res->rrs[i], buf, sizeof(buf)), want[i]);
}

/* ---- pure parts ---- */

static void test_rr_parse(void **state)
{
	struct dns_rr rr;

	static const unsigned char a[] = {192, 0, 2, 1};
	assert_int_equal(dns_rr_parse(DNS_T_A, a, 4, &rr), 0);
	assert_int_equal(rr.u.addr.family, AF_INET);
	assert_memory_equal(rr.u.addr.addr, a, 4);
	assert_int_equal(rr.rdlen, 4);
	dns_rr_clear(&rr);
	assert_int_equal(dns_rr_parse(DNS_T_A, a, 3, &rr), -1);
	assert_int_equal(dns_rr_parse(DNS_T_AAAA, a, 4, &rr), -1);

	/* MX 10 Mail.Example.TEST: lowercased, no trailing dot */
	static const unsigned char mx[] = {0, 10, 4, 'M', 'a', 'i', 'l', 7, 'E', 'x', 'a', 'm',
					   'p', 'l', 'e', 4, 'T', 'E', 'S', 'T', 0};
	assert_int_equal(dns_rr_parse(DNS_T_MX, mx, sizeof(mx), &rr), 0);
	assert_int_equal(rr.u.mx.preference, 10);
	assert_string_equal(rr.u.mx.host, "mail.example.test");
	dns_rr_clear(&rr);
	/* truncated, trailing garbage, compression pointer, label too long */
	assert_int_equal(dns_rr_parse(DNS_T_MX, mx, sizeof(mx) - 1, &rr), -1);
	unsigned char mx2[sizeof(mx) + 1];
	memcpy(mx2, mx, sizeof(mx));
	mx2[sizeof(mx)] = 0;
	assert_int_equal(dns_rr_parse(DNS_T_MX, mx2, sizeof(mx2), &rr), -1);
	static const unsigned char ptrc[] = {0xc0, 0x0c};
	assert_int_equal(dns_rr_parse(DNS_T_PTR, ptrc, 2, &rr), -1);
	unsigned char longlabel[70] = {64};
	assert_int_equal(dns_rr_parse(DNS_T_PTR, longlabel, sizeof(longlabel), &rr), -1);
	/* null MX */
	static const unsigned char nullmx[] = {0, 0, 0};
	assert_int_equal(dns_rr_parse(DNS_T_MX, nullmx, 3, &rr), 0);
	assert_string_equal(rr.u.mx.host, ".");
	dns_rr_clear(&rr);
	/* odd bytes in a label are escaped, so they never look like a dot */
	static const unsigned char odd[] = {3, 'a', '.', 'b', 1, ' ', 0};
	assert_int_equal(dns_rr_parse(DNS_T_PTR, odd, sizeof(odd), &rr), 0);
	assert_string_equal(rr.u.name, "a\\046b.\\032");
	dns_rr_clear(&rr);
	/* a name longer than 255 octets */
	unsigned char big[300];
	size_t p = 0;
	while (p + 11 < sizeof(big)) {
		big[p++] = 10;
		memset(big + p, 'x', 10);
		p += 10;
	}
	big[p++] = 0;
	assert_int_equal(dns_rr_parse(DNS_T_PTR, big, p, &rr), -1);

	/* TXT: strings concatenated; a length past the end is refused */
	static const unsigned char txt[] = {3, 'a', 'b', 'c', 0, 2, 'd', 'e'};
	assert_int_equal(dns_rr_parse(DNS_T_TXT, txt, sizeof(txt), &rr), 0);
	assert_int_equal(rr.u.txt.len, 5);
	assert_string_equal(rr.u.txt.text, "abcde");
	dns_rr_clear(&rr);
	static const unsigned char badtxt[] = {3, 'a', 'b', 'c', 5, 'd'};
	assert_int_equal(dns_rr_parse(DNS_T_TXT, badtxt, sizeof(badtxt), &rr), -1);
	assert_int_equal(dns_rr_parse(DNS_T_TXT, badtxt, 0, &rr), -1);

	/* TLSA */
	static const unsigned char tlsa[] = {3, 1, 1, 0xaa, 0xbb};
	assert_int_equal(dns_rr_parse(DNS_T_TLSA, tlsa, sizeof(tlsa), &rr), 0);
	assert_int_equal(rr.u.tlsa.usage, 3);
	assert_int_equal(rr.u.tlsa.selector, 1);
	assert_int_equal(rr.u.tlsa.matching, 1);
	assert_int_equal(rr.u.tlsa.len, 2);
	assert_memory_equal(rr.u.tlsa.data, tlsa + 3, 2);
	dns_rr_clear(&rr);
	assert_int_equal(dns_rr_parse(DNS_T_TLSA, tlsa, 2, &rr), -1);
}

static uint32_t seq_state;
/* A deterministic "random" source for the sort test. */
static uint32_t seq_below(uint32_t n)
{
	seq_state = seq_state * 1103515245u + 12345u;
	return (seq_state >> 16) % n;
}

static void test_mx_sort(void **state)
{
	unsigned seen_first[3] = {0};
	for (int round = 0; round < 60; round++) {
		struct dns_rr rrs[6];
		const uint16_t prefs[] = {20, 10, 30, 10, 10, 20};
		memset(rrs, 0, sizeof(rrs));
		for (int i = 0; i < 6; i++) {
			rrs[i].type = DNS_T_MX;
			rrs[i].u.mx.preference = prefs[i];
			rrs[i].u.mx.host = xasprintf("h%d", i);
		}
		dns_mx_sort(rrs, 6, round % 2 == 0 ? seq_below : NULL);
		const uint16_t want[] = {10, 10, 10, 20, 20, 30};
		for (int i = 0; i < 6; i++)
			assert_int_equal(rrs[i].u.mx.preference, want[i]);
		assert_string_equal(rrs[5].u.mx.host, "h2");
		/* hosts with preference 10 are h1, h3, h4 */
		int first = rrs[0].u.mx.host[1] - '0';
		assert_true(first == 1 || first == 3 || first == 4);
		seen_first[first == 1 ? 0 : first == 3 ? 1 : 2]++;
		for (int i = 0; i < 6; i++)
			free(rrs[i].u.mx.host);
	}
	/* each of the three equal hosts came first sometimes */
	for (int i = 0; i < 3; i++)
		assert_true(seen_first[i] > 0);
	dns_mx_sort(NULL, 0, NULL);
}

static void test_reverse_name(void **state)
{
	char buf[80];
	struct sockaddr_storage ss = ip("192.0.2.1");
	assert_int_equal(dns_reverse_name((struct sockaddr *)&ss, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "1.2.0.192.in-addr.arpa");
	ss = ip("::ffff:192.0.2.77");
	assert_int_equal(dns_reverse_name((struct sockaddr *)&ss, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "77.2.0.192.in-addr.arpa");
	ss = ip("2001:db8::1");
	assert_int_equal(dns_reverse_name((struct sockaddr *)&ss, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
	struct sockaddr un = {.sa_family = AF_UNIX};
	assert_int_equal(dns_reverse_name(&un, buf, sizeof(buf)), -1);
}

static void test_bad_options(void **state)
{
	struct event_base *base = event_base_new();
	const char *bad[] = {"not-an-ip", "127.0.0.1:0", "mx.example.test:53", "127.0.0.1:99999",
			     ":53", "1.2.3.4 5.6.7.8"};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct dns_options opts = {.resolver = bad[i]};
		const char *error = NULL;
		struct dns_resolver *r = dns_resolver_new(base, &opts, &error);
		assert_null(r);
		assert_non_null(error);
		struct dns_sync *s = dns_sync_new(&opts, &error);
		assert_null(s);
	}
	struct dns_options ta = {.resolver = "127.0.0.1", .trust_anchor_file = "/nonexistent/root.key"};
	const char *error = NULL;
	assert_null(dns_resolver_new(base, &ta, &error));
	assert_non_null(error);
	struct dns_options rc = {.resolver = "", .resolv_conf = "/nonexistent/resolv.conf"};
	assert_null(dns_resolver_new(base, &rc, &error));

	/* good forms */
	const char *good[] = {"127.0.0.1", "127.0.0.1:5353", "::1", "[::1]:5353"};
	for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
		struct dns_options opts = {.resolver = good[i]};
		struct dns_resolver *r = dns_resolver_new(base, &opts, &error);
		assert_non_null(r);
		dns_resolver_free(&r);
	}
	char conf[4200];
	snprintf(conf, sizeof(conf), "%s/resolv.conf", rundir);
	FILE *fp = fopen(conf, "w");
	assert_non_null(fp);
	fputs("nameserver 127.0.0.1\n", fp);
	fclose(fp);
	struct dns_options sys = {.resolver = "", .resolv_conf = conf};
	struct dns_resolver *r = dns_resolver_new(base, &sys, &error);
	assert_non_null(r);
	dns_resolver_free(&r);
	event_base_free(base);
}

/* ---- against the test server ---- */

static void test_mx_preferences(void **state)
{
	struct fixture *f = *state;
	struct dns_result *res = lookup(f, "example.test", DNS_T_MX);
	assert_int_equal(res->status, DNS_NOERROR);
	assert_int_equal(res->rcode, 0);
	assert_string_equal(res->qname, "example.test");
	assert_int_equal(res->qtype, DNS_T_MX);
	assert_false(res->secure);
	assert_false(res->bogus);
	assert_false(res->null_mx);
	assert_true(res->ttl > 0 && res->ttl <= 300);
	assert_int_equal(res->count, 3);
	const char *hosts[] = {"mx1.example.test", "mx2.example.test", "mx3.example.test"};
	for (int i = 0; i < 3; i++) {
		assert_int_equal(res->rrs[i].type, DNS_T_MX);
		assert_int_equal(res->rrs[i].u.mx.preference, 10 * (i + 1));
		assert_string_equal(res->rrs[i].u.mx.host, hosts[i]);
	}
	dns_result_free(&res);
	assert_null(res);

	/* trailing dot and case do not matter */
	res = lookup(f, "EXAMPLE.test.", DNS_T_MX);
	assert_int_equal(res->count, 3);
	assert_string_equal(res->rrs[0].u.mx.host, "mx1.example.test");
	dns_result_free(&res);
}

static void test_mx_equal_random(void **state)
{
	struct fixture *f = *state;
	unsigned a_first = 0, b_first = 0;
	for (int i = 0; i < 50; i++) {
		struct dns_result *res = lookup(f, "equal.example.test", DNS_T_MX);
		assert_int_equal(res->status, DNS_NOERROR);
		assert_int_equal(res->count, 3);
		assert_int_equal(res->rrs[0].u.mx.preference, 10);
		assert_int_equal(res->rrs[1].u.mx.preference, 10);
		assert_int_equal(res->rrs[2].u.mx.preference, 20);
		assert_string_equal(res->rrs[2].u.mx.host, "c.equal.example.test");
		const char *h0 = res->rrs[0].u.mx.host, *h1 = res->rrs[1].u.mx.host;
		if (strcmp(h0, "a.equal.example.test") == 0) {
			assert_string_equal(h1, "b.equal.example.test");
			a_first++;
		} else {
			assert_string_equal(h0, "b.equal.example.test");
			assert_string_equal(h1, "a.equal.example.test");
			b_first++;
		}
		dns_result_free(&res);
	}
	/* RFC 5321 5.1: both orders appear (each all-same outcome has p = 2^-50) */
	assert_true(a_first > 0);
	assert_true(b_first > 0);
}

static void test_mx_null_and_missing(void **state)
{
	struct fixture *f = *state;
	struct dns_result *res = lookup(f, "null.example.test", DNS_T_MX);
	assert_int_equal(res->status, DNS_NOERROR);
	assert_true(res->null_mx);
	assert_int_equal(res->count, 1);
	assert_string_equal(res->rrs[0].u.mx.host, ".");
	dns_result_free(&res);

	res = lookup(f, "twonull.example.test", DNS_T_MX);
	assert_true(res->null_mx);
	assert_int_equal(res->count, 1);
	assert_string_equal(res->rrs[0].u.mx.host, ".");
	dns_result_free(&res);

	/* "." beside a real MX is not a null MX; it is dropped */
	res = lookup(f, "mixnull.example.test", DNS_T_MX);
	assert_int_equal(res->status, DNS_NOERROR);
	assert_false(res->null_mx);
	assert_int_equal(res->count, 1);
	assert_string_equal(res->rrs[0].u.mx.host, "mx1.example.test");
	dns_result_free(&res);

	/* the name exists without MX: NOERROR, no records (fall back to A/AAAA) */
	res = lookup(f, "nomx.example.test", DNS_T_MX);
	assert_int_equal(res->status, DNS_NOERROR);
	assert_int_equal(res->count, 0);
	assert_false(res->null_mx);
	dns_result_free(&res);

	res = lookup(f, "nosuch.example.test", DNS_T_MX);
	assert_int_equal(res->status, DNS_NXDOMAIN);
	assert_int_equal(res->rcode, 3);
	assert_int_equal(res->count, 0);
	dns_result_free(&res);

	/* a zone the server does not serve: REFUSED, a temporary failure */
	res = lookup(f, "notserved.test", DNS_T_MX);
	assert_int_equal(res->status, DNS_SERVFAIL);
	assert_non_null(res->error);
	dns_result_free(&res);
}

static void test_addr(void **state)
{
	struct fixture *f = *state;
	struct dns_result *res = lookup(f, "dual.example.test", 0);
	const char *dual[] = {"2001:db8::1", "192.0.2.1"};
	assert_addrs(res, dual, 2);
	assert_int_equal(res->rrs[0].type, DNS_T_AAAA);
	assert_int_equal(res->rrs[1].type, DNS_T_A);
	assert_true(res->ttl > 0 && res->ttl <= 300);
	dns_result_free(&res);

	res = lookup(f, "v4only.example.test", 0);
	const char *v4[] = {"192.0.2.40"};
	assert_addrs(res, v4, 1);
	dns_result_free(&res);

	res = lookup(f, "v6only.example.test", 0);
	const char *v6[] = {"2001:db8::40"};
	assert_addrs(res, v6, 1);
	dns_result_free(&res);

	res = lookup(f, "multi.example.test", DNS_T_A);
	assert_int_equal(res->count, 2);
	char b0[64], b1[64];
	addr_text(&res->rrs[0], b0, sizeof(b0));
	addr_text(&res->rrs[1], b1, sizeof(b1));
	assert_true((strcmp(b0, "192.0.2.41") == 0 && strcmp(b1, "192.0.2.42") == 0) ||
		    (strcmp(b0, "192.0.2.42") == 0 && strcmp(b1, "192.0.2.41") == 0));
	dns_result_free(&res);

	res = lookup(f, "nosuch.example.test", 0);
	assert_int_equal(res->status, DNS_NXDOMAIN);
	assert_int_equal(res->count, 0);
	dns_result_free(&res);

	/* exists, but has no address */
	res = lookup(f, "txt.example.test", 0);
	assert_int_equal(res->status, DNS_NOERROR);
	assert_int_equal(res->count, 0);
	dns_result_free(&res);

	res = lookup(f, "v6only.example.test", DNS_T_A);
	assert_int_equal(res->status, DNS_NOERROR);
	assert_int_equal(res->count, 0);
	dns_result_free(&res);
}

static void test_cname(void **state)
{
	struct fixture *f = *state;
	struct dns_result *res = lookup(f, "c1.example.test", DNS_T_A);
	const char *a[] = {"192.0.2.30"};
	assert_addrs(res, a, 1);
	assert_string_equal(res->canonname, "c3.example.test");
	dns_result_free(&res);

	res = lookup(f, "c1.example.test", 0);
	const char *both[] = {"2001:db8::30", "192.0.2.30"};
	assert_addrs(res, both, 2);
	assert_string_equal(res->canonname, "c3.example.test");
	dns_result_free(&res);

	res = lookup(f, "c2.example.test", DNS_T_MX);
	assert_int_equal(res->status, DNS_NOERROR);
	assert_int_equal(res->count, 1);
	assert_int_equal(res->rrs[0].u.mx.preference, 5);
	assert_string_equal(res->rrs[0].u.mx.host, "mx1.example.test");
	dns_result_free(&res);

	/* a CNAME to nothing */
	res = lookup(f, "dangling.example.test", DNS_T_A);
	assert_int_equal(res->status, DNS_NXDOMAIN);
	assert_int_equal(res->count, 0);
	dns_result_free(&res);
}

static void test_txt(void **state)
{
	struct fixture *f = *state;
	struct dns_result *res = lookup(f, "txt.example.test", DNS_T_TXT);
	assert_int_equal(res->status, DNS_NOERROR);
	assert_int_equal(res->count, 2);
	assert_true(res->ttl > 300 && res->ttl <= 1234);
	bool spf = false, second = false;
	for (size_t i = 0; i < res->count; i++) {
		assert_int_equal(res->rrs[i].type, DNS_T_TXT);
		const char *t = res->rrs[i].u.txt.text;
		assert_int_equal(strlen(t), res->rrs[i].u.txt.len);
		if (strcmp(t, "v=spf1 ip4:192.0.2.0/24 -all") == 0)
			spf = true;
		else if (strcmp(t, "second record") == 0)
			second = true;
		else
			fail_msg("unexpected TXT %s", t);
	}
	assert_true(spf && second);
	dns_result_free(&res);

	res = lookup(f, "nul.example.test", DNS_T_TXT);
	assert_int_equal(res->count, 1);
	assert_int_equal(res->rrs[0].u.txt.len, 3);
	assert_memory_equal(res->rrs[0].u.txt.text, "a\0b", 3);
	dns_result_free(&res);

	res = lookup(f, "empty.example.test", DNS_T_TXT);
	assert_int_equal(res->count, 1);
	assert_int_equal(res->rrs[0].u.txt.len, 0);
	assert_string_equal(res->rrs[0].u.txt.text, "");
	dns_result_free(&res);

	res = lookup(f, "dual.example.test", DNS_T_TXT);
	assert_int_equal(res->status, DNS_NOERROR);
	assert_int_equal(res->count, 0);
	dns_result_free(&res);
}

static void test_tlsa(void **state)
{
	struct fixture *f = *state;
	struct waiter w = {0};
	assert_non_null(dns_lookup_tlsa(f->r, "_25._tcp.mx1.example.test", got, &w));
	run_until(f->base, &w.done, 1, 10);
	struct dns_result *res = w.res;
	assert_int_equal(res->status, DNS_NOERROR);
	assert_int_equal(res->count, 2);
	static const unsigned char want[32] = {
		0x0c, 0x72, 0xac, 0x70, 0xb7, 0x45, 0xac, 0x19, 0x99, 0x88, 0x11,
		0xb1, 0x31, 0xd6, 0x62, 0xc9, 0xac, 0x69, 0xdb, 0xdb, 0xe7, 0xcb,
		0x23, 0xe5, 0xb5, 0x14, 0xb5, 0x66, 0x64, 0xc5, 0xd3, 0xd6};
	bool found = false;
	for (size_t i = 0; i < res->count; i++) {
		const struct dns_rr *rr = &res->rrs[i];
		assert_int_equal(rr->rdlen, 35);
		assert_int_equal(rr->u.tlsa.len, 32);
		if (rr->u.tlsa.usage == 3) {
			assert_int_equal(rr->u.tlsa.selector, 1);
			assert_int_equal(rr->u.tlsa.matching, 1);
			assert_memory_equal(rr->u.tlsa.data, want, 32);
			assert_memory_equal(rr->rdata + 3, want, 32);
			found = true;
		} else {
			assert_int_equal(rr->u.tlsa.usage, 2);
			assert_int_equal(rr->u.tlsa.selector, 0);
		}
	}
	assert_true(found);
	assert_false(res->secure); /* no trust anchor: never secure, never bogus */
	assert_false(res->bogus);
	dns_result_free(&res);

	res = lookup(f, "_25._tcp.mx2.example.test", DNS_T_TLSA);
	assert_int_equal(res->status, DNS_NXDOMAIN);
	dns_result_free(&res);
}

static void test_ptr(void **state)
{
	struct fixture *f = *state;
	const struct {
		const char *ip;
		enum dns_status status;
		const char *name;
	} cases[] = {
		{"192.0.2.1", DNS_NOERROR, "dual.example.test"},
		{"::ffff:192.0.2.1", DNS_NOERROR, "dual.example.test"},
		{"2001:db8::1", DNS_NOERROR, "dual.example.test"},
		{"192.0.2.4", DNS_NXDOMAIN, NULL},
		{"2001:db8::2", DNS_NXDOMAIN, NULL},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct sockaddr_storage ss = ip(cases[i].ip);
		struct waiter w = {0};
		assert_non_null(dns_lookup_ptr(f->r, (struct sockaddr *)&ss, got, &w));
		run_until(f->base, &w.done, 1, 10);
		assert_int_equal(w.done, 1);
		assert_int_equal(w.res->status, cases[i].status);
		assert_int_equal(w.res->qtype, DNS_T_PTR);
		if (cases[i].name != NULL) {
			assert_int_equal(w.res->count, 1);
			assert_int_equal(w.res->rrs[0].type, DNS_T_PTR);
			assert_string_equal(w.res->rrs[0].u.name, cases[i].name);
		}
		dns_result_free(&w.res);
	}
	/* two PTR names */
	struct sockaddr_storage ss = ip("192.0.2.3");
	struct waiter w = {0};
	dns_lookup_ptr(f->r, (struct sockaddr *)&ss, got, &w);
	run_until(f->base, &w.done, 1, 10);
	assert_int_equal(w.res->count, 2);
	dns_result_free(&w.res);

	/* not an IP address: a failure, still through the callback */
	struct sockaddr un = {.sa_family = AF_UNIX};
	w.done = 0;
	dns_lookup_ptr(f->r, &un, got, &w);
	assert_int_equal(w.done, 0);
	run_until(f->base, &w.done, 1, 10);
	assert_int_equal(w.done, 1);
	assert_int_equal(w.res->status, DNS_SERVFAIL);
	dns_result_free(&w.res);
}

static void test_fcrdns(void **state)
{
	struct fixture *f = *state;
	const struct {
		const char *ip;
		enum dns_fcrdns_status status;
		const char *name;
		size_t ptrs;
	} cases[] = {
		{"192.0.2.1", DNS_FCRDNS_PASS, "dual.example.test", 1},
		{"::ffff:192.0.2.1", DNS_FCRDNS_PASS, "dual.example.test", 1},
		{"2001:db8::1", DNS_FCRDNS_PASS, "dual.example.test", 1},
		{"192.0.2.2", DNS_FCRDNS_FAIL, NULL, 1},
		{"192.0.2.3", DNS_FCRDNS_PASS, "three.example.test", 2},
		{"192.0.2.4", DNS_FCRDNS_NONE, NULL, 0},
		{"192.0.2.5", DNS_FCRDNS_FAIL, NULL, 1},
		{"192.0.2.6", DNS_FCRDNS_TEMPERROR, NULL, 1},
		{"2001:db8::2", DNS_FCRDNS_NONE, NULL, 0},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct sockaddr_storage ss = ip(cases[i].ip);
		struct waiter w = {0};
		assert_non_null(dns_fcrdns(f->r, (struct sockaddr *)&ss, got_fcrdns, &w));
		run_until(f->base, &w.done, 1, 10);
		assert_int_equal(w.done, 1);
		if (w.fr->status != cases[i].status)
			fail_msg("%s: %s, expected %s", cases[i].ip,
				 dns_fcrdns_status_name(w.fr->status),
				 dns_fcrdns_status_name(cases[i].status));
		if (cases[i].name != NULL)
			assert_string_equal(w.fr->name, cases[i].name);
		else
			assert_null(w.fr->name);
		assert_int_equal(w.fr->ptr_count, cases[i].ptrs);
		assert_null(w.fr->ptr_names[w.fr->ptr_count]);
		dns_fcrdns_result_free(&w.fr);
		assert_int_equal(dns_resolver_pending(f->r), 0);
	}
}

static void test_timeout(void **state)
{
	struct fixture *f = *state;
	struct dns_resolver *dead = resolver_for(f->base, blackhole, 700);
	struct waiter w1 = {0}, w2 = {0}, w3 = {0};
	struct sockaddr_storage ss = ip("192.0.2.1");
	double start = now_s();
	dns_lookup_mx(dead, "example.test", got, &w1);
	dns_lookup_addr(dead, "dual.example.test", got, &w2);
	dns_fcrdns(dead, (struct sockaddr *)&ss, got_fcrdns, &w3);
	assert_int_equal(dns_resolver_pending(dead), 3);
	unsigned total = 0;
	double end = now_s() + 5;
	while ((total = w1.done + w2.done + w3.done) < 3 && now_s() < end)
		event_base_loop(f->base, EVLOOP_ONCE);
	double took = now_s() - start;
	assert_int_equal(total, 3);
	assert_true(took >= 0.6);
	assert_true(took < 3.0);
	assert_int_equal(w1.res->status, DNS_TIMEOUT);
	assert_int_equal(w1.res->rcode, -1);
	assert_int_equal(w1.res->count, 0);
	assert_int_equal(w2.res->status, DNS_TIMEOUT);
	assert_int_equal(w3.fr->status, DNS_FCRDNS_TEMPERROR);
	assert_int_equal(dns_resolver_pending(dead), 0);
	dns_result_free(&w1.res);
	dns_result_free(&w2.res);
	dns_fcrdns_result_free(&w3.fr);
	dns_resolver_free(&dead);

	/* the good server still answers after that */
	struct dns_result *res = lookup(f, "example.test", DNS_T_MX);
	assert_int_equal(res->count, 3);
	dns_result_free(&res);
}

static void test_cancel(void **state)
{
	struct fixture *f = *state;

	/* pending at a dead server: cancel, then run past the deadline */
	struct dns_resolver *dead = resolver_for(f->base, blackhole, 500);
	struct waiter w = {0};
	struct dns_query *q = dns_lookup_mx(dead, "example.test", got, &w);
	run_for(f->base, 0.1);
	assert_int_equal(dns_resolver_pending(dead), 1);
	dns_cancel(&q);
	assert_null(q);
	dns_cancel(&q); /* NULL is fine */
	assert_int_equal(dns_resolver_pending(dead), 0);
	run_for(f->base, 0.8);
	assert_int_equal(w.done, 0);

	/* answers already on their way: cancel right after starting */
	struct waiter many[20];
	struct dns_query *qs[20];
	memset(many, 0, sizeof(many));
	for (int i = 0; i < 20; i++)
		qs[i] = i % 3 == 0   ? dns_lookup_addr(f->r, "dual.example.test", got, &many[i])
			: i % 3 == 1 ? dns_lookup_mx(f->r, "equal.example.test", got, &many[i])
				     : (struct dns_query *)NULL;
	struct sockaddr_storage ss = ip("192.0.2.3");
	for (int i = 2; i < 20; i += 3)
		qs[i] = dns_fcrdns(f->r, (struct sockaddr *)&ss, got_fcrdns, &many[i]);
	for (int i = 0; i < 20; i++)
		dns_cancel(&qs[i]);
	assert_int_equal(dns_resolver_pending(f->r), 0);
	struct dns_result *res = lookup(f, "equal.example.test", DNS_T_MX);
	dns_result_free(&res);
	run_for(f->base, 0.3);
	for (int i = 0; i < 20; i++)
		assert_int_equal(many[i].done, 0);

	/* cancelled in the middle of FCrDNS (after the PTR answer, during the A lookups) */
	struct waiter fw = {0};
	q = dns_fcrdns(f->r, (struct sockaddr *)&ss, got_fcrdns, &fw);
	for (int i = 0; i < 3; i++)
		event_base_loop(f->base, EVLOOP_NONBLOCK);
	dns_cancel(&q);
	run_for(f->base, 0.3);
	assert_int_equal(fw.done, 0);
	assert_int_equal(dns_resolver_pending(f->r), 0);

	/* a resolver freed with lookups pending never calls back */
	struct waiter lw = {0};
	dns_lookup_mx(dead, "example.test", got, &lw);
	dns_lookup_addr(dead, "example.test", got, &lw);
	dns_resolver_free(&dead);
	run_for(f->base, 0.7);
	assert_int_equal(lw.done, 0);
}

/* Cancelling one lookup from another one's callback. */
struct chain {
	struct dns_query *victim;
	unsigned done, victim_done;
	struct dns_result *res;
};

static void chain_first(struct dns_result *res, void *arg)
{
	struct chain *c = arg;
	c->done++;
	c->res = res;
	dns_cancel(&c->victim);
}

static void chain_victim(struct dns_result *res, void *arg)
{
	struct chain *c = arg;
	c->victim_done++;
	dns_result_free(&res);
}

static void test_cancel_from_callback(void **state)
{
	struct fixture *f = *state;
	struct dns_resolver *dead = resolver_for(f->base, blackhole, 500);
	struct chain c = {0};
	c.victim = dns_lookup_mx(dead, "example.test", chain_victim, &c);
	dns_lookup_mx(f->r, "example.test", chain_first, &c);
	run_until(f->base, &c.done, 1, 5);
	assert_int_equal(c.done, 1);
	assert_null(c.victim);
	run_for(f->base, 0.8);
	assert_int_equal(c.victim_done, 0);
	assert_int_equal(dns_resolver_pending(dead), 0);
	dns_result_free(&c.res);
	dns_resolver_free(&dead);
}

static void test_bad_name(void **state)
{
	struct fixture *f = *state;
	char longname[400];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	struct dns_result *res = lookup(f, longname, DNS_T_A);
	assert_int_equal(res->status, DNS_SERVFAIL);
	assert_non_null(res->error);
	dns_result_free(&res);
	res = lookup(f, "a..b", 0);
	assert_int_equal(res->status, DNS_SERVFAIL);
	dns_result_free(&res);
}

/* With a trust anchor for signed.test: secure, bogus, and insecure elsewhere. */
static void test_dnssec(void **state)
{
	struct fixture *f = *state;
	struct dns_options opts = {.resolver = server, .timeout_ms = 10000, .trust_anchor_file = anchor};
	const char *error = NULL;
	struct dns_resolver *v = dns_resolver_new(f->base, &opts, &error);
	assert_non_null(v);
	struct dns_resolver *plain = f->r;
	f->r = v;

	struct dns_result *res = lookup(f, "www.signed.test", DNS_T_A);
	const char *www[] = {"192.0.2.51"};
	assert_addrs(res, www, 1);
	assert_true(res->secure);
	assert_false(res->bogus);
	dns_result_free(&res);

	res = lookup(f, "_25._tcp.mx.signed.test", DNS_T_TLSA);
	assert_int_equal(res->status, DNS_NOERROR);
	assert_int_equal(res->count, 1);
	assert_true(res->secure);
	dns_result_free(&res);

	res = lookup(f, "signed.test", DNS_T_MX);
	assert_int_equal(res->count, 1);
	assert_true(res->secure);
	dns_result_free(&res);

	/* NSEC proves the name does not exist */
	res = lookup(f, "nosuch.signed.test", DNS_T_A);
	assert_int_equal(res->status, DNS_NXDOMAIN);
	assert_true(res->secure);
	dns_result_free(&res);

	/* changed after signing: bogus, and its data is never handed out */
	res = lookup(f, "bad.signed.test", DNS_T_A);
	assert_int_equal(res->status, DNS_SERVFAIL);
	assert_true(res->bogus);
	assert_false(res->secure);
	assert_int_equal(res->count, 0);
	assert_non_null(res->error);
	assert_non_null(strstr(res->error, "bogus"));
	dns_result_free(&res);
	res = lookup(f, "bad.signed.test", 0);
	assert_int_equal(res->status, DNS_SERVFAIL);
	assert_true(res->bogus);
	assert_int_equal(res->count, 0);
	dns_result_free(&res);

	/* outside the anchor: insecure but usable */
	res = lookup(f, "example.test", DNS_T_MX);
	assert_int_equal(res->status, DNS_NOERROR);
	assert_int_equal(res->count, 3);
	assert_false(res->secure);
	assert_false(res->bogus);
	dns_result_free(&res);

	/* without the anchor, the same signed answers are merely insecure */
	f->r = plain;
	res = lookup(f, "www.signed.test", DNS_T_A);
	assert_int_equal(res->count, 1);
	assert_false(res->secure);
	assert_false(res->bogus);
	dns_result_free(&res);
	res = lookup(f, "bad.signed.test", DNS_T_A);
	assert_int_equal(res->status, DNS_NOERROR);
	assert_false(res->bogus);
	dns_result_free(&res);

	/* the synchronous wrapper validates the same way */
	struct dns_sync *s = dns_sync_new(&opts, &error);
	assert_non_null(s);
	res = dns_sync_lookup(s, "www.signed.test", DNS_T_A);
	assert_true(res->secure);
	dns_result_free(&res);
	res = dns_sync_lookup(s, "bad.signed.test", DNS_T_A);
	assert_true(res->bogus);
	assert_int_equal(res->status, DNS_SERVFAIL);
	dns_result_free(&res);
	dns_sync_free(&s);

	dns_resolver_free(&v);
}

/* ---- synchronous wrapper ---- */

struct sync_job {
	const char *resolver;
	unsigned timeout_ms;
	struct dns_result *mx, *txt;
	double took;
};

static void *sync_thread(void *arg)
{
	struct sync_job *j = arg;
	struct dns_options opts = {.resolver = j->resolver, .timeout_ms = j->timeout_ms};
	const char *error;
	struct dns_sync *s = dns_sync_new(&opts, &error);
	if (s == NULL)
		return NULL;
	double start = now_s();
	j->mx = dns_sync_lookup(s, "example.test", DNS_T_MX);
	j->txt = dns_sync_lookup(s, "txt.example.test", DNS_T_TXT);
	j->took = now_s() - start;
	dns_sync_free(&s);
	return NULL;
}

static void test_sync(void **state)
{
	struct sync_job good = {.resolver = server, .timeout_ms = 10000};
	struct sync_job dead = {.resolver = blackhole, .timeout_ms = 400};
	pthread_t t1, t2;
	assert_int_equal(pthread_create(&t1, NULL, sync_thread, &good), 0);
	assert_int_equal(pthread_create(&t2, NULL, sync_thread, &dead), 0);
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);

	assert_non_null(good.mx);
	assert_int_equal(good.mx->status, DNS_NOERROR);
	assert_int_equal(good.mx->count, 3);
	assert_string_equal(good.mx->rrs[0].u.mx.host, "mx1.example.test");
	assert_string_equal(good.mx->rrs[2].u.mx.host, "mx3.example.test");
	assert_int_equal(good.txt->count, 2);

	assert_non_null(dead.mx);
	assert_int_equal(dead.mx->status, DNS_TIMEOUT);
	assert_int_equal(dead.txt->status, DNS_TIMEOUT);
	assert_true(dead.took >= 0.7 && dead.took < 3.0);

	dns_result_free(&good.mx);
	dns_result_free(&good.txt);
	dns_result_free(&dead.mx);
	dns_result_free(&dead.txt);

	/* null MX and NXDOMAIN the same way as on the loop */
	struct dns_options opts = {.resolver = server, .timeout_ms = 10000};
	const char *error;
	struct dns_sync *s = dns_sync_new(&opts, &error);
	assert_non_null(s);
	struct dns_result *res = dns_sync_lookup(s, "null.example.test", DNS_T_MX);
	assert_true(res->null_mx);
	dns_result_free(&res);
	res = dns_sync_lookup(s, "nosuch.example.test", DNS_T_A);
	assert_int_equal(res->status, DNS_NXDOMAIN);
	dns_result_free(&res);
	res = dns_sync_lookup(s, "a..b", DNS_T_A);
	assert_int_equal(res->status, DNS_SERVFAIL);
	dns_result_free(&res);
	dns_sync_free(&s);
	assert_null(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rr_parse),
		cmocka_unit_test(test_mx_sort),
		cmocka_unit_test(test_reverse_name),
		cmocka_unit_test(test_bad_options),
		cmocka_unit_test_setup_teardown(test_mx_preferences, fixture_setup, fixture_teardown),
		cmocka_unit_test_setup_teardown(test_mx_equal_random, fixture_setup, fixture_teardown),
		cmocka_unit_test_setup_teardown(test_mx_null_and_missing, fixture_setup,
						fixture_teardown),
		cmocka_unit_test_setup_teardown(test_addr, fixture_setup, fixture_teardown),
		cmocka_unit_test_setup_teardown(test_cname, fixture_setup, fixture_teardown),
		cmocka_unit_test_setup_teardown(test_txt, fixture_setup, fixture_teardown),
		cmocka_unit_test_setup_teardown(test_tlsa, fixture_setup, fixture_teardown),
		cmocka_unit_test_setup_teardown(test_ptr, fixture_setup, fixture_teardown),
		cmocka_unit_test_setup_teardown(test_fcrdns, fixture_setup, fixture_teardown),
		cmocka_unit_test_setup_teardown(test_timeout, fixture_setup, fixture_teardown),
		cmocka_unit_test_setup_teardown(test_cancel, fixture_setup, fixture_teardown),
		cmocka_unit_test_setup_teardown(test_cancel_from_callback, fixture_setup,
						fixture_teardown),
		cmocka_unit_test_setup_teardown(test_bad_name, fixture_setup, fixture_teardown),
		cmocka_unit_test_setup_teardown(test_dnssec, fixture_setup, fixture_teardown),
		cmocka_unit_test(test_sync),
	};
	return cmocka_run_group_tests(tests, start_server, stop_server);
}

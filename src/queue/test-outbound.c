/*
 * The outbound agent's pure parts and its SMTP client: retry backoff
 * bounds and jitter, routing from an MX answer (order kept, implicit MX,
 * null MX, NXDOMAIN, temporary failure), enhanced status extraction, dot
 * stuffing, and the client against a scripted peer on a socket: replies
 * split byte by byte, multi-line EHLO, garbage, overlong lines, a stall,
 * and plaintext injected after the STARTTLS 220.
 */
#include "dns/dns.h"
#include "lib/xalloc.h"
#include "queue/outbound.h"
#include "queue/smtp_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

static void test_backoff(void **state)
{
	(void)state;
	/* no jitter: doubling from retry_min, capped at retry_max */
	assert_int_equal(outbound_backoff(0, 300, 3600, 0), 300);
	assert_int_equal(outbound_backoff(1, 300, 3600, 0), 600);
	assert_int_equal(outbound_backoff(3, 300, 3600, 0), 2400);
	assert_int_equal(outbound_backoff(4, 300, 3600, 0), 3600);
	assert_int_equal(outbound_backoff(1000, 300, 3600, 0), 3600);
	/* full jitter takes off at most 20%, never below retry_min */
	assert_int_equal(outbound_backoff(4, 300, 3600, UINT32_MAX), 3600 - 720 + 1);
	assert_int_equal(outbound_backoff(0, 300, 3600, UINT32_MAX), 300);
	for (uint32_t r = 0; r < 1000; r++) {
		uint32_t rnd = r * 4294967u;
		for (unsigned a = 0; a < 12; a++) {
			uint64_t d = outbound_backoff(a, 1, 2, rnd);
			assert_true(d >= 1 && d <= 2);
			d = outbound_backoff(a, 300, 3600, rnd);
			assert_true(d >= 300 && d <= 3600);
		}
	}
	/* retry_max below retry_min: retry_min wins */
	assert_int_equal(outbound_backoff(5, 60, 10, 0), 60);
}

static struct dns_result *mx_result(enum dns_status st, bool null_mx, const char **hosts,
				    const uint16_t *prefs, size_t n)
{
	struct dns_result *r = xcalloc(1, sizeof(*r));
	r->status = st;
	r->null_mx = null_mx;
	r->qtype = DNS_T_MX;
	r->count = n;
	r->rrs = xcalloc(n + 1, sizeof(*r->rrs));
	for (size_t i = 0; i < n; i++) {
		r->rrs[i].type = DNS_T_MX;
		r->rrs[i].u.mx.preference = prefs[i];
		r->rrs[i].u.mx.host = xstrdup(hosts[i]);
	}
	return r;
}

static void free_mx(struct dns_result *r)
{
	for (size_t i = 0; i < r->count; i++)
		free(r->rrs[i].u.mx.host);
	free(r->rrs);
	free(r);
}

static uint32_t always_zero(uint32_t n)
{
	(void)n;
	return 0;
}

static void test_route(void **state)
{
	(void)state;
	char **hosts;
	size_t n;
	const char *err;
	/* dns sorts by preference; the route keeps that order */
	const char *names[] = {"c.example", "a.example", "b.example"};
	const uint16_t prefs[] = {30, 10, 20};
	struct dns_result *r = mx_result(DNS_NOERROR, false, names, prefs, 3);
	dns_mx_sort(r->rrs, r->count, always_zero);
	assert_int_equal(outbound_route(r, "example", &hosts, &n, &err), ROUTE_OK);
	assert_int_equal(n, 3);
	assert_string_equal(hosts[0], "a.example");
	assert_string_equal(hosts[1], "b.example");
	assert_string_equal(hosts[2], "c.example");
	outbound_hosts_free(&hosts, n);
	assert_null(hosts);
	free_mx(r);

	/* no MX: the domain itself */
	r = mx_result(DNS_NOERROR, false, NULL, NULL, 0);
	assert_int_equal(outbound_route(r, "plain.example", &hosts, &n, &err), ROUTE_OK);
	assert_int_equal(n, 1);
	assert_string_equal(hosts[0], "plain.example");
	outbound_hosts_free(&hosts, n);
	free_mx(r);

	/* null MX */
	const char *dot[] = {"."};
	const uint16_t zero[] = {0};
	r = mx_result(DNS_NOERROR, true, dot, zero, 1);
	assert_int_equal(outbound_route(r, "nomail.example", &hosts, &n, &err), ROUTE_PERM);
	assert_int_equal(n, 0);
	assert_non_null(strstr(err, "5.1.10"));
	free_mx(r);

	r = mx_result(DNS_NXDOMAIN, false, NULL, NULL, 0);
	assert_int_equal(outbound_route(r, "gone.example", &hosts, &n, &err), ROUTE_PERM);
	assert_non_null(strstr(err, "5.1.2"));
	free_mx(r);

	r = mx_result(DNS_SERVFAIL, false, NULL, NULL, 0);
	assert_int_equal(outbound_route(r, "flaky.example", &hosts, &n, &err), ROUTE_TEMP);
	assert_true(err[0] == '4');
	free_mx(r);
	r = mx_result(DNS_TIMEOUT, false, NULL, NULL, 0);
	assert_int_equal(outbound_route(r, "slow.example", &hosts, &n, &err), ROUTE_TEMP);
	free_mx(r);
}

static void test_status(void **state)
{
	(void)state;
	char st[16];
	outbound_status(550, "550 5.1.1 <x@y>: user unknown", st);
	assert_string_equal(st, "5.1.1");
	outbound_status(450, "450 4.2.0 try later", st);
	assert_string_equal(st, "4.2.0");
	outbound_status(554, "554 no enhanced code", st);
	assert_string_equal(st, "5.0.0");
	outbound_status(451, "451 4.7.1", st);
	assert_string_equal(st, "4.7.1");
	/* a class that disagrees with the reply code is not believed */
	outbound_status(550, "550 4.1.1 odd", st);
	assert_string_equal(st, "5.0.0");
	outbound_status(0, "5.1.10 null MX", st);
	assert_string_equal(st, "5.1.10");
	outbound_status(0, "connection refused", st);
	assert_string_equal(st, "4.4.1");
}

static void test_dot_stuff(void **state)
{
	(void)state;
	char out[64];
	bool bol = true;
	size_t n = smtpc_dot_stuff(".a\r\n..b\r\nc.\r\n.", 14, out, &bol);
	assert_int_equal(n, 17);
	assert_memory_equal(out, "..a\r\n...b\r\nc.\r\n..", 17);
	/* line state carries across calls: a dot right after a split CRLF */
	bol = true;
	n = smtpc_dot_stuff("x\r\n", 3, out, &bol);
	assert_true(bol);
	n = smtpc_dot_stuff(".y", 2, out, &bol);
	assert_int_equal(n, 3);
	assert_memory_equal(out, "..y", 3);
	bol = true;
	n = smtpc_dot_stuff("a", 1, out, &bol);
	n = smtpc_dot_stuff(".", 1, out, &bol);
	assert_int_equal(n, 1);
}

/* ---- the client against a scripted peer ---- */

struct peer {
	int listen_fd;
	struct sockaddr_in addr;
	const char *script; /* sent after accept, one byte at a time when bytewise */
	bool bytewise;
	bool hangup;        /* close right after the script */
	char got[4096];
	size_t got_len;
	pthread_t thread;
};

static void *peer_main(void *arg)
{
	struct peer *p = arg;
	int fd = accept(p->listen_fd, NULL, NULL);
	if (fd < 0)
		return NULL;
	size_t len = strlen(p->script);
	for (size_t i = 0; i < len;) {
		size_t k = p->bytewise ? 1 : len - i;
		if (write(fd, p->script + i, k) != (ssize_t)k)
			break;
		i += k;
	}
	if (p->hangup) {
		close(fd);
		return NULL;
	}
	/* read what the client says until it closes (bounded by the client's timeouts) */
	for (;;) {
		ssize_t n = read(fd, p->got + p->got_len, sizeof(p->got) - 1 - p->got_len);
		if (n <= 0)
			break;
		p->got_len += (size_t)n;
	}
	p->got[p->got_len] = '\0';
	close(fd);
	return NULL;
}

static void peer_start(struct peer *p, const char *script, bool bytewise, bool hangup)
{
	memset(p, 0, sizeof(*p));
	p->hangup = hangup;
	p->script = script;
	p->bytewise = bytewise;
	p->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(p->listen_fd >= 0);
	p->addr.sin_family = AF_INET;
	p->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(p->listen_fd, (struct sockaddr *)&p->addr, sizeof(p->addr)), 0);
	socklen_t l = sizeof(p->addr);
	getsockname(p->listen_fd, (struct sockaddr *)&p->addr, &l);
	assert_int_equal(listen(p->listen_fd, 1), 0);
	assert_int_equal(pthread_create(&p->thread, NULL, peer_main, p), 0);
}

static void peer_join(struct peer *p)
{
	pthread_join(p->thread, NULL);
	close(p->listen_fd);
}

static struct smtpc *connect_peer(struct peer *p, unsigned command_ms)
{
	const char *err = NULL;
	struct smtpc *c = smtpc_connect((struct sockaddr *)&p->addr, sizeof(p->addr), 2000,
					command_ms, &err);
	assert_non_null(c);
	return c;
}

static void test_client_ehlo_bytewise(void **state)
{
	(void)state;
	struct peer p;
	peer_start(&p,
		   "220 peer ESMTP\r\n"
		   "250-peer hello\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250-8BITMIME\r\n"
		   "250-DSN\r\n250-SMTPUTF8\r\n250 STARTTLS\r\n"
		   "250 2.1.0 Ok\r\n",
		   true, false);
	struct smtpc *c = connect_peer(&p, 5000);
	struct smtpc_reply r;
	assert_true(smtpc_read_reply(c, &r));
	assert_int_equal(r.code, 220);
	assert_true(smtpc_ehlo(c, "me.example", &r));
	assert_int_equal(r.code, 250);
	unsigned ext = smtpc_ext(c);
	assert_true(ext & SMTPC_EXT_PIPELINING);
	assert_true(ext & SMTPC_EXT_SIZE);
	assert_true(ext & SMTPC_EXT_8BITMIME);
	assert_true(ext & SMTPC_EXT_DSN);
	assert_true(ext & SMTPC_EXT_SMTPUTF8);
	assert_true(ext & SMTPC_EXT_STARTTLS);
	assert_int_equal(smtpc_size_limit(c), 1000000);
	smtpc_printf(c, "MAIL FROM:<a@b>\r\n");
	assert_true(smtpc_read_reply(c, &r));
	assert_string_equal(r.text, "250 2.1.0 Ok");
	smtpc_free(&c);
	peer_join(&p);
	assert_non_null(strstr(p.got, "EHLO me.example\r\nMAIL FROM:<a@b>\r\n"));
}

static void expect_failure(const char *script, const char *why)
{
	struct peer p;
	peer_start(&p, script, false, strcmp(why, "connection lost") == 0);
	struct smtpc *c = connect_peer(&p, 1000);
	struct smtpc_reply r;
	assert_false(smtpc_read_reply(c, &r));
	assert_int_equal(r.code, 0);
	if (strstr(r.text, why) == NULL)
		fail_msg("expected \"%s\", got \"%s\"", why, r.text);
	smtpc_free(&c);
	peer_join(&p);
}

static void test_client_bad_peers(void **state)
{
	(void)state;
	expect_failure("hello there\r\n", "malformed");
	expect_failure("220-a\r\n250 b\r\n", "inconsistent");
	/* a line longer than 1000 octets */
	char *lng = xmalloc(3000);
	memset(lng, 'x', 2998);
	memcpy(lng, "220 ", 4);
	lng[2998] = '\0';
	expect_failure(lng, "too long");
	free(lng);
	/* endless continuation lines */
	char *many = xmalloc(100 * 8 + 1);
	many[0] = '\0';
	for (int i = 0; i < 100; i++)
		strcat(many, "220-xx\r\n");
	expect_failure(many, "too many");
	free(many);
	/* half a line, then silence: the command deadline ends it */
	expect_failure("220 no end", "timeout");
	/* closes mid-reply */
	expect_failure("250-first line\r\n", "connection lost");
}

static void test_client_connect_refused(void **state)
{
	(void)state;
	struct peer p;
	peer_start(&p, "", false, false);
	struct sockaddr_in a = p.addr;
	/* connect to the listener, then close it, so the port refuses */
	const char *err = NULL;
	struct smtpc *c = smtpc_connect((struct sockaddr *)&a, sizeof(a), 1000, 1000, &err);
	assert_non_null(c);
	smtpc_free(&c);
	peer_join(&p);
	c = smtpc_connect((struct sockaddr *)&a, sizeof(a), 1000, 1000, &err);
	assert_null(c);
	assert_non_null(err);
}

static void test_client_starttls_refused(void **state)
{
	(void)state;
	/* plaintext after 220 Ready would be injection; here the server refuses STARTTLS */
	struct peer p;
	peer_start(&p, "454 4.7.0 TLS not available\r\n", false, false);
	struct smtpc *c = connect_peer(&p, 2000);
	struct smtpc_reply r;
	bool verified;
	const char *verr;
	assert_int_equal(smtpc_starttls(c, "peer", &r, &verified, &verr), 0);
	assert_int_equal(r.code, 454);
	assert_false(smtpc_tls(c));
	smtpc_free(&c);
	peer_join(&p);
}

static void test_client_starttls_injection_discarded(void **state)
{
	(void)state;
	/* the peer sends "220 Ready" and an injected reply in the same packet, then no TLS */
	struct peer p;
	peer_start(&p, "220 2.0.0 Ready\r\n250 injected\r\n", false, false);
	struct smtpc *c = connect_peer(&p, 1000);
	struct smtpc_reply r;
	bool verified;
	const char *verr;
	/* the handshake fails (the peer speaks no TLS) but the injected bytes were dropped */
	assert_int_equal(smtpc_starttls(c, "peer", &r, &verified, &verr), -1);
	assert_int_equal(smtpc_injected(c), strlen("250 injected\r\n"));
	smtpc_free(&c);
	peer_join(&p);
}

static int temp_message(const char *text)
{
	char path[] = "/tmp/postern-test-outbound-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	return fd;
}

static void send_and_expect(const char *msg, const char *rewrite, const char *expect)
{
	struct peer p;
	peer_start(&p, "", false, false);
	struct smtpc *c = connect_peer(&p, 2000);
	int fd = temp_message(msg);
	assert_true(smtpc_send_body(c, fd, rewrite));
	close(fd);
	smtpc_free(&c);
	peer_join(&p);
	assert_string_equal(p.got, expect);
}

static void test_client_body(void **state)
{
	(void)state;
	/* dot stuffing, and a final CRLF added when the message lacks one */
	send_and_expect("Subject: s\r\n\r\n.dot\r\nend", NULL,
			"Subject: s\r\n\r\n..dot\r\nend\r\n.\r\n");
	/* rewrite_sender: the From field with its continuation lines is replaced */
	send_and_expect("Subject: s\r\nFrom: Old\r\n <old@x.test>\r\nTo: t\r\n\r\nFrom: body\r\n.x\r\n",
			"new@y.test",
			"Subject: s\r\nFrom: <new@y.test>\r\nTo: t\r\n\r\nFrom: body\r\n..x\r\n.\r\n");
	/* no From at all: one is added */
	send_and_expect("Subject: s\r\n\r\nbody\r\n", "new@y.test",
			"Subject: s\r\nFrom: <new@y.test>\r\n\r\nbody\r\n.\r\n");
}

static void send_content_expect(const char *script, const char *msg, struct smtpc_content *o,
				bool ok, int code, const char *expect)
{
	struct peer p;
	peer_start(&p, script, false, false);
	struct smtpc *c = connect_peer(&p, 2000);
	int fd = temp_message(msg);
	struct smtpc_reply r = {0};
	assert_int_equal(smtpc_send_content(c, fd, o, &r), ok);
	if (o->bdat)
		assert_int_equal(r.code, code);
	close(fd);
	smtpc_free(&c);
	peer_join(&p);
	assert_string_equal(p.got, expect);
}

static void test_client_bdat_and_trace(void **state)
{
	(void)state;
	const char *msg = "Received: from a (b [1.2.3.4])\r\n\tby mx; for <j\xc3\xb6rg@b\xc3\xbc"
			  "cher.example>;\r\n\tSun, 1 Jan 2026\r\nFrom: x\r\n\r\n.body";
	/* BDAT: no dot-stuffing, the exact octet count, a final CRLF added */
	struct smtpc_content o = {.bdat = true};
	send_content_expect("250 2.0.0 ok\r\n", "Subject: s\r\n\r\n.dot", &o, true, 250,
			    "BDAT 20 LAST\r\nSubject: s\r\n\r\n.dot\r\n");
	/* a refused chunk is the outcome */
	send_content_expect("554 5.6.0 no\r\n", "Subject: s\r\n\r\nx\r\n", &o, true, 554,
			    "BDAT 17 LAST\r\nSubject: s\r\n\r\nx\r\n");
	/* the for-clause of our Received: in A-labels (the local part stays), with a From rewrite */
	o = (struct smtpc_content){.bdat = true, .idna_trace = true, .from_rewrite = "n@y.test"};
	send_content_expect("250 ok\r\n", msg, &o, true, 250,
			    "BDAT 121 LAST\r\nReceived: from a (b [1.2.3.4])\r\n\tby mx; for"
			    " <j\xc3\xb6rg@xn--bcher-kva.example>;\r\n\tSun, 1 Jan 2026\r\nFrom:"
			    " <n@y.test>\r\n\r\n.body\r\n");
	/* DATA with the trace converted */
	o = (struct smtpc_content){.idna_trace = true};
	send_content_expect("", msg, &o, true, 0,
			    "Received: from a (b [1.2.3.4])\r\n\tby mx; for"
			    " <j\xc3\xb6rg@xn--bcher-kva.example>;\r\n\tSun, 1 Jan 2026\r\nFrom:"
			    " x\r\n\r\n..body\r\n.\r\n");

	size_t a, b;
	const char *h = "X-A: 1\r\nReceived: from x\r\n\tfor <u@d.test>; now\r\n"
			"Received: for <v@e.test>\r\n\r\n";
	assert_true(smtpc_trace_for(h, strlen(h), &a, &b));
	assert_int_equal(b - a, 8);
	assert_memory_equal(h + a, "u@d.test", 8);
	h = "Subject: for <u@d.test>\r\n\r\nReceived: for <v@e.test>\r\n";
	assert_false(smtpc_trace_for(h, strlen(h), &a, &b));
	h = "Received: from x; before <u@d.test>\r\n\r\n";
	assert_false(smtpc_trace_for(h, strlen(h), &a, &b));
}

static void test_idna(void **state)
{
	(void)state;
	const char *err = NULL;
	char *a = outbound_domain_ascii("bücher.example", &err);
	assert_string_equal(a, "xn--bcher-kva.example");
	free(a);
	/* UTS #46 mapping: upper case and NFC */
	a = outbound_domain_ascii("B\xc3\x9c" "CHER.example", &err);
	assert_string_equal(a, "xn--bcher-kva.example");
	free(a);
	/* non-transitional: the sharp s stays (IDNA2008), not "ss" */
	a = outbound_domain_ascii("faß.de", &err);
	assert_string_equal(a, "xn--fa-hia.de");
	free(a);
	a = outbound_domain_ascii("ok.test", &err);
	assert_string_equal(a, "ok.test");
	free(a);
	a = outbound_domain_ascii("[127.0.0.1]", &err);
	assert_string_equal(a, "[127.0.0.1]");
	free(a);
	/* disallowed code point (U+2615 is fine in IDNA2003 only), broken UTF-8 */
	assert_null(outbound_domain_ascii("\xe2\x98\x95.example", &err));
	assert_non_null(err);
	assert_null(outbound_domain_ascii("a\xff.example", &err));

	a = outbound_address_ascii("jörg@bücher.example", &err);
	assert_string_equal(a, "jörg@xn--bcher-kva.example");
	free(a);
	a = outbound_address_ascii("x@y.test", &err);
	assert_string_equal(a, "x@y.test");
	free(a);
	assert_true(outbound_local_part_ascii("joe@bücher.example"));
	assert_false(outbound_local_part_ascii("jörg@example.test"));
	assert_true(outbound_local_part_ascii(""));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_route),
		cmocka_unit_test(test_status),
		cmocka_unit_test(test_dot_stuff),
		cmocka_unit_test(test_client_ehlo_bytewise),
		cmocka_unit_test(test_client_bad_peers),
		cmocka_unit_test(test_client_connect_refused),
		cmocka_unit_test(test_client_starttls_refused),
		cmocka_unit_test(test_client_starttls_injection_discarded),
		cmocka_unit_test(test_client_body),
		cmocka_unit_test(test_idna),
		cmocka_unit_test(test_client_bdat_and_trace),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

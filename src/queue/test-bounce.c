/*
 * DSN generation (RFC 3464): the multipart/report layout, the per-message
 * and per-recipient fields, RET=HDRS versus the whole message, delay
 * notices, and that envelope values cannot inject header lines.
 * (tests/test_bounce.py parses real DSNs back with Python's email module.)
 */
#include "lib/xalloc.h"
#include "queue/outbound.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static const char original[] = "Received: from x\r\nSubject: the original\r\nFrom: <s@local.test>\r\n"
			       "\r\nbody line one\r\nbody line two\r\n";

static int original_fd(void)
{
	char path[] = "/tmp/postern-test-bounce-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(write(fd, original, strlen(original)), (ssize_t)strlen(original));
	return fd;
}

static char *build(bool full, bool delayed, const char *rcpt, int fd, size_t *len)
{
	struct bounce_rcpt r[2] = {
		{.address = rcpt,
		 .orcpt = "rfc822;orig@remote.test",
		 .status = delayed ? "4.2.0" : "5.1.1",
		 .diagnostic = delayed ? "450 4.2.0 later" : "550 5.1.1 no such user",
		 .remote_mta = "mx.remote.test[192.0.2.1]",
		 .delayed = delayed},
		{.address = "second@remote.test",
		 .status = delayed ? "4.4.1" : "5.1.10",
		 .diagnostic = "5.1.10 the recipient's domain does not accept mail",
		 .delayed = delayed},
	};
	struct bounce_input in = {
		.hostname = "mx.local.test",
		.queue_id = "ABCDEF0123456789",
		.sender = "s@local.test",
		.envid = "env1",
		.full = full,
		.arrival = 1700000000,
		.now = 1700000100,
		.rcpts = r,
		.nrcpts = 2,
		.fd = fd,
		.max_return = 1024 * 1024,
	};
	return bounce_build(&in, len);
}

static void test_bounce_layout(void **state)
{
	(void)state;
	int fd = original_fd();
	size_t len;
	char *m = build(false, false, "rcpt@remote.test", fd, &len);
	assert_int_equal(strlen(m), len);
	assert_non_null(strstr(m, "\r\nTo: <s@local.test>\r\n"));
	assert_non_null(strstr(m, "Subject: Undelivered Mail Returned to Sender\r\n"));
	assert_non_null(strstr(m, "Auto-Submitted: auto-replied\r\n"));
	assert_non_null(strstr(m, "Content-Type: multipart/report; report-type=delivery-status;"));
	assert_non_null(strstr(m, "Date: Tue, 14 Nov 2023 22:15:00 +0000\r\n"));
	assert_non_null(strstr(m, "Content-Type: message/delivery-status\r\n"));
	assert_non_null(strstr(m, "Reporting-MTA: dns; mx.local.test\r\n"));
	assert_non_null(strstr(m, "Original-Envelope-Id: env1\r\n"));
	assert_non_null(strstr(m, "Arrival-Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"));
	assert_non_null(strstr(m, "\r\n\r\nOriginal-Recipient: rfc822;orig@remote.test\r\n"
				  "Final-Recipient: rfc822; rcpt@remote.test\r\n"
				  "Action: failed\r\nStatus: 5.1.1\r\n"
				  "Remote-MTA: dns; mx.remote.test[192.0.2.1]\r\n"
				  "Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n"));
	/* our own reason is not an SMTP reply */
	assert_non_null(strstr(m, "Final-Recipient: rfc822; second@remote.test\r\nAction: failed\r\n"
				  "Status: 5.1.10\r\nDiagnostic-Code: x-postern; 5.1.10"));
	/* RET=HDRS: the header, not the body */
	assert_non_null(strstr(m, "Content-Type: text/rfc822-headers\r\n"));
	assert_non_null(strstr(m, "Subject: the original\r\n"));
	assert_null(strstr(m, "body line"));
	/* closing boundary last */
	const char *b = strstr(m, "boundary=\"");
	assert_non_null(b);
	b += strlen("boundary=\"");
	size_t blen = strcspn(b, "\"");
	char *closing = xasprintf("\r\n--%.*s--\r\n", (int)blen, b);
	assert_true(len > strlen(closing));
	assert_string_equal(m + len - strlen(closing), closing);
	free(closing);
	free(m);
	close(fd);
}

static void test_bounce_full_and_delay(void **state)
{
	(void)state;
	int fd = original_fd();
	size_t len;
	char *m = build(true, false, "rcpt@remote.test", fd, &len);
	assert_non_null(strstr(m, "Content-Type: message/rfc822\r\n"));
	assert_non_null(strstr(m, "body line one\r\nbody line two\r\n"));
	free(m);
	m = build(true, true, "rcpt@remote.test", fd, &len);
	assert_non_null(strstr(m, "Subject: Delayed Mail (still being retried)\r\n"));
	assert_non_null(strstr(m, "Action: delayed\r\nStatus: 4.2.0\r\n"));
	assert_null(strstr(m, "Action: failed"));
	free(m);
	/* no original available: two parts only, still well formed */
	m = build(true, false, "rcpt@remote.test", -1, &len);
	assert_null(strstr(m, "message/rfc822"));
	assert_non_null(strstr(m, "Status: 5.1.1"));
	free(m);
	close(fd);
}

static void test_bounce_no_header_injection(void **state)
{
	(void)state;
	size_t len;
	char *m = build(false, false, "evil@remote.test\r\nBcc: victim@x.test", -1, &len);
	assert_null(strstr(m, "\r\nBcc:"));
	assert_non_null(strstr(m, "Final-Recipient: rfc822; evil@remote.test??Bcc: victim@x.test\r\n"));
	free(m);
}

static void test_bounce_utf8(void **state)
{
	(void)state;
	size_t len;
	/* an ASCII report stays RFC 3464 */
	char *t = build(false, false, "x@remote.test", -1, &len);
	assert_non_null(strstr(t, "Content-Type: message/delivery-status\r\n"));
	assert_non_null(strstr(t, "Final-Recipient: rfc822; x@remote.test\r\n"));
	free(t);
	/* a UTF-8 address: message/global-delivery-status, "utf-8" address type (RFC 6533) */
	t = build(false, false, "j\xc3\xb6rg@b\xc3\xbc" "cher.example", -1, &len);
	assert_non_null(strstr(t, "Content-Type: message/global-delivery-status\r\n"));
	assert_non_null(strstr(t, "Final-Recipient: utf-8; j\xc3\xb6rg@b\xc3\xbc" "cher.example\r\n"));
	assert_non_null(strstr(t, "Final-Recipient: rfc822; second@remote.test\r\n"));
	free(t);
	/* a UTF-8 header in the original: message/global-headers, message/global */
	char path[] = "/tmp/postern-test-bounce-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	const char *orig = "Subject: gr\xc3\xbc\xc3\x9f" "e\r\n\r\nbody\r\n";
	assert_int_equal(write(fd, orig, strlen(orig)), (ssize_t)strlen(orig));
	t = build(false, false, "x@remote.test", fd, &len);
	assert_non_null(strstr(t, "Content-Type: message/global-headers\r\n"));
	free(t);
	t = build(true, false, "x@remote.test", fd, &len);
	assert_non_null(strstr(t, "Content-Type: message/global\r\n"));
	free(t);
	close(fd);
	/* an 8-bit body alone does not make the original global */
	fd = original_fd();
	t = build(true, false, "x@remote.test", fd, &len);
	assert_non_null(strstr(t, "Content-Type: message/rfc822\r\n"));
	free(t);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bounce_layout),
		cmocka_unit_test(test_bounce_full_and_delay),
		cmocka_unit_test(test_bounce_no_header_injection),
		cmocka_unit_test(test_bounce_utf8),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * The parsers `postern dns --check` applies to DNS answers: SRV RDATA,
 * DMARC records, and the address filter that picks the server's public
 * addresses from the interfaces.
 */
#include "cli/cli_common.h"

#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

static bool global(const char *text)
{
	unsigned char a[16];
	if (inet_pton(AF_INET, text, a) == 1)
		return dnscmd_ip_global(AF_INET, a);
	assert_int_equal(inet_pton(AF_INET6, text, a), 1);
	return dnscmd_ip_global(AF_INET6, a);
}

static void test_ip_global(void **state)
{
	(void)state;
	assert_true(global("203.0.114.1"));
	assert_true(global("8.8.8.8"));
	assert_true(global("172.32.0.1"));
	assert_true(global("100.128.0.1"));
	assert_true(global("2a01:4f8::1"));
	assert_true(global("2600::1"));
	const char *special[] = {
	    "0.1.2.3",         "10.1.2.3",     "100.64.0.1",  "100.127.255.255",
	    "127.0.0.1",       "169.254.1.1",  "172.16.0.1",  "172.31.255.1",
	    "192.0.0.8",       "192.0.2.10",   "192.168.1.1", "198.18.0.1",
	    "198.19.255.1",    "198.51.100.7", "203.0.113.9", "224.0.0.1",
	    "255.255.255.255", "::1",          "::",          "fe80::1",
	    "fc00::1",         "fd12::1",      "ff02::1",     "2001:db8::10",
	    "::ffff:8.8.8.8",
	};
	for (size_t i = 0; i < sizeof(special) / sizeof(special[0]); i++)
		assert_false(global(special[i]));
}

static char *srv(const unsigned char *rdata, size_t len, unsigned *port_r)
{
	unsigned prio = 99, weight = 99;
	char *t = dnscmd_srv_parse(rdata, len, &prio, &weight, port_r);
	if (t != NULL) {
		assert_int_equal(prio, rdata[1]);
		assert_int_equal(weight, rdata[3]);
	}
	return t;
}

static void test_srv(void **state)
{
	(void)state;
	unsigned port = 0;
	static const unsigned char ok[] = {0,   1, 0,   2,   0x02, 0x4b, 2,   'M',
	                                   'x', 7, 'e', 'x', 'a',  'm',  'p', 'l',
	                                   'e', 4, 't', 'e', 's',  't',  0};
	char *t = srv(ok, sizeof(ok), &port);
	assert_string_equal(t, "mx.example.test");
	assert_int_equal(port, 587);
	free(t);
	static const unsigned char root[] = {0, 0, 0, 0, 0, 0, 0};
	t = srv(root, sizeof(root), &port);
	assert_string_equal(t, ".");
	assert_int_equal(port, 0);
	free(t);
	/* odd octets escaped, never raw */
	static const unsigned char odd[] = {0, 0, 0, 0, 0, 1, 3, 'a', 0x1b, '.', 0};
	t = srv(odd, sizeof(odd), &port);
	assert_string_equal(t, "a\\027\\046");
	free(t);
	/* malformed: short, compression pointer, label past the end, trailing bytes, no root */
	static const unsigned char shortr[] = {0, 0, 0, 0, 0, 0};
	assert_null(srv(shortr, sizeof(shortr), &port));
	static const unsigned char ptr[] = {0, 0, 0, 0, 0, 1, 0xc0, 0x0c};
	assert_null(srv(ptr, sizeof(ptr), &port));
	static const unsigned char past[] = {0, 0, 0, 0, 0, 1, 5, 'a', 'b', 0};
	assert_null(srv(past, sizeof(past), &port));
	static const unsigned char trail[] = {0, 0, 0, 0, 0, 1, 1, 'a', 0, 0};
	assert_null(srv(trail, sizeof(trail), &port));
	static const unsigned char noroot[] = {0, 0, 0, 0, 0, 1, 1, 'a'};
	assert_null(srv(noroot, sizeof(noroot), &port));
	/* a name longer than 255 octets */
	unsigned char big[6 + 5 * 64 + 1];
	memset(big, 0, sizeof(big));
	for (size_t i = 0; i < 5; i++) {
		big[6 + i * 64] = 63;
		memset(big + 7 + i * 64, 'a', 63);
	}
	assert_null(srv(big, sizeof(big), &port));
	/* the longest legal name: 3 labels of 63 and one of 61 = 255 octets with the root */
	unsigned char max[6 + 255];
	memset(max, 0, sizeof(max));
	size_t o = 6;
	const size_t labels[] = {63, 63, 63, 61};
	for (size_t i = 0; i < 4; i++) {
		max[o++] = (unsigned char)labels[i];
		memset(max + o, 'b', labels[i]);
		o += labels[i];
	}
	max[o++] = 0;
	assert_int_equal(o, sizeof(max));
	t = srv(max, sizeof(max), &port);
	assert_non_null(t);
	assert_int_equal(strlen(t), 253);
	free(t);
}

static const char *dmarc(const char *txt, int want)
{
	const char *p = "unset";
	assert_int_equal(dnscmd_dmarc_parse(txt, strlen(txt), &p), want);
	return p;
}

static void test_dmarc(void **state)
{
	(void)state;
	assert_string_equal(dmarc("v=DMARC1; p=none", 1), "none");
	assert_string_equal(dmarc("v=DMARC1;p=reject;rua=mailto:a@b.test", 1), "reject");
	assert_string_equal(dmarc("v=DMARC1 ; p = Quarantine ; pct=50", 1), "quarantine");
	assert_string_equal(dmarc("v=DMARC1; p=none;", 1), "none");
	/* DMARC records without a valid policy */
	assert_null(dmarc("v=DMARC1", 1));
	assert_null(dmarc("v=DMARC1;", 1));
	assert_null(dmarc("v=DMARC1; rua=mailto:a@b.test; p=none", 1));
	assert_null(dmarc("v=DMARC1; p=bogus", 1));
	assert_null(dmarc("v=DMARC1; p=none x", 1));
	assert_null(dmarc("v=DMARC1; p", 1));
	/* not DMARC records */
	assert_null(dmarc("v=spf1 -all", 0));
	assert_null(dmarc("v=DMARC10; p=none", 0));
	assert_null(dmarc("V=DMARC1; p=none", 0));
	assert_null(dmarc(" v=DMARC1; p=none", 0));
	assert_null(dmarc("", 0));
	/* length given, not NUL */
	const char *p;
	assert_int_equal(dnscmd_dmarc_parse("v=DMARC1; p=rejectXYZ", 18, &p), 1);
	assert_string_equal(p, "reject");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ip_global),
	    cmocka_unit_test(test_srv),
	    cmocka_unit_test(test_dmarc),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

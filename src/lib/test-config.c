/* Config loading: defaults, values, every kind of error with file:line. */
#include "lib/config.h"
#include "lib/strutil.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>

static char *write_conf(const char *text)
{
	static char path[64];
	strcpy(path, "/tmp/postern-test-config-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return path;
}

static void test_defaults(void **state)
{
	char *err = NULL;
	struct config *cfg = config_load(NULL, &err);
	assert_non_null(cfg);
	assert_int_equal(cfg->max_message_size, 50 * 1024 * 1024);
	assert_int_equal(cfg->idle_timeout, 300);
	assert_string_equal(cfg->listen_smtp, ":2525");
	assert_true(cfg->data_dir[0] == '/');
	assert_true(cfg->bare_newline_reject);
	assert_int_equal(cfg->trusted.count, 2);
	config_free(&cfg);
	assert_null(cfg);
}

static void test_values(void **state)
{
	char *path = write_conf("# comment\n[server]\nhostname = MX.Example.COM\ndata_dir = /srv/mail\n"
				"[limits]\nmax_message_size = 10M\nidle_timeout = 2m\n"
				"[relay]\ntrusted_networks = 10.0.0.0/8 192.168.1.1,::1\n"
				"[smtp]\nbare_newline = normalize\nauth_on_smtp = yes\n");
	char *err = NULL;
	struct config *cfg = config_load(path, &err);
	assert_null(err);
	assert_non_null(cfg);
	assert_string_equal(cfg->hostname, "mx.example.com");
	assert_string_equal(cfg->data_dir, "/srv/mail");
	assert_string_equal(cfg->tls_cert, "/srv/mail/tls/cert.pem");
	assert_int_equal(cfg->max_message_size, 10 * 1024 * 1024);
	assert_int_equal(cfg->idle_timeout, 120);
	assert_int_equal(cfg->trusted.count, 3);
	assert_false(cfg->bare_newline_reject);
	assert_true(cfg->auth_on_smtp);
	config_free(&cfg);
	unlink(path);
}

static void expect_error(const char *text, const char *needle)
{
	char *path = write_conf(text);
	char *err = NULL;
	struct config *cfg = config_load(path, &err);
	assert_null(cfg);
	assert_non_null(err);
	if (strstr(err, needle) == NULL)
		fail_msg("error '%s' lacks '%s'", err, needle);
	assert_non_null(strstr(err, path));
	free(err);
	unlink(path);
}

static void test_errors(void **state)
{
	expect_error("[server]\nbogus = 1\n", ":2: unknown key bogus");
	expect_error("[nosuch]\n", ":1: unknown section");
	expect_error("[limits]\n\nmax_message_size = lots\n", ":3:");
	expect_error("[limits]\nmax_recipients = 0\n", "out of range");
	expect_error("[listen]\nsmtp = 127.0.0.1\n", "host:port");
	expect_error("[relay]\ntrusted_networks = 10.0.0.0/33\n", "invalid network");
	expect_error("hostname = x\n", "outside of any section");
	expect_error("[smtp]\nbare_newline = maybe\n", "allowed values");
	expect_error("[server\n", "malformed section");
}

static void test_sizes_durations(void **state)
{
	uint64_t v;
	assert_int_equal(parse_size("10M", &v), 0);
	assert_int_equal(v, 10485760);
	assert_int_equal(parse_size("2g", &v), 0);
	assert_int_equal(v, 2147483648ULL);
	assert_int_equal(parse_size("", &v), -1);
	assert_int_equal(parse_size("M", &v), -1);
	assert_int_equal(parse_size("99999999999999999999", &v), -1);
	assert_int_equal(parse_duration("4d", &v), 0);
	assert_int_equal(v, 345600);
	assert_int_equal(parse_duration("30", &v), 0);
	assert_int_equal(v, 30);
	assert_int_equal(parse_duration("5x", &v), -1);
	char buf[32];
	format_size(50 * 1024 * 1024, buf, sizeof(buf));
	assert_string_equal(buf, "50M");
	format_duration(300, buf, sizeof(buf));
	assert_string_equal(buf, "5m");
}

static void test_netlist(void **state)
{
	struct netlist l;
	const char *err;
	assert_int_equal(netlist_parse("127.0.0.0/8, 2001:db8::/32", &l, &err), 0);
	struct sockaddr_in a = {.sin_family = AF_INET};
	inet_pton(AF_INET, "127.1.2.3", &a.sin_addr);
	assert_true(netlist_match(&l, (struct sockaddr *)&a));
	inet_pton(AF_INET, "128.0.0.1", &a.sin_addr);
	assert_false(netlist_match(&l, (struct sockaddr *)&a));
	struct sockaddr_in6 b = {.sin6_family = AF_INET6};
	inet_pton(AF_INET6, "2001:db8:1::5", &b.sin6_addr);
	assert_true(netlist_match(&l, (struct sockaddr *)&b));
	inet_pton(AF_INET6, "::ffff:127.0.0.1", &b.sin6_addr);
	assert_true(netlist_match(&l, (struct sockaddr *)&b));
	netlist_free(&l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),      cmocka_unit_test(test_values),
		cmocka_unit_test(test_errors),        cmocka_unit_test(test_sizes_durations),
		cmocka_unit_test(test_netlist),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Maildir++ creation, durable delivery, redelivery detection. */
#include "lib/xalloc.h"
#include "store/maildir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

static char tmpdir[] = "/tmp/postern-test-maildir-XXXXXX";

static int count_entries(const char *dir, char *name_r, size_t size)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return -1;
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (name_r != NULL)
			snprintf(name_r, size, "%s", de->d_name);
		n++;
	}
	closedir(d);
	return n;
}

static bool is_dir(const char *path, mode_t *mode_r)
{
	struct stat st;
	if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode))
		return false;
	if (mode_r != NULL)
		*mode_r = st.st_mode & 07777;
	return true;
}

static void test_create(void **state)
{
	char *path = maildir_path(tmpdir, "alice@example.test");
	char *want = xasprintf("%s/mail/example.test/alice", tmpdir);
	assert_string_equal(path, want);
	free(want);
	assert_int_equal(maildir_create(path), 0);
	assert_int_equal(maildir_create(path), 0); /* idempotent */
	static const char *const sub[] = {"",         "/cur",       "/new",          "/tmp",
					  "/.Drafts", "/.Sent/new", "/.Junk/cur",    "/.Trash/tmp",
					  "/.Archive"};
	for (size_t i = 0; i < sizeof(sub) / sizeof(sub[0]); i++) {
		char *p = xasprintf("%s%s", path, sub[i]);
		mode_t mode;
		if (!is_dir(p, &mode))
			fail_msg("%s missing", p);
		assert_int_equal(mode, 0700);
		free(p);
	}
	char *subs = xasprintf("%s/subscriptions", path);
	FILE *f = fopen(subs, "r");
	assert_non_null(f);
	char buf[256] = "";
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	assert_string_equal(buf, "Drafts\nSent\nJunk\nTrash\nArchive\n");
	free(subs);
	free(path);
}

static void test_deliver(void **state)
{
	char *path = maildir_path(tmpdir, "bob@example.test");
	assert_int_equal(maildir_create(path), 0);
	const char *body = "Subject: hi\r\n\r\nhello\r\n";
	const char *prefix = "Return-Path: <a@b>\r\nDelivered-To: bob@example.test\r\n";
	uint64_t size = 0;
	assert_int_equal(maildir_has(path, "Q1.7"), 0);
	assert_int_equal(maildir_deliver(path, "Q1.7", 1700000000, prefix, body, strlen(body), -1,
					 &size),
			 0);
	assert_int_equal(size, strlen(prefix) + strlen(body));
	assert_int_equal(maildir_has(path, "Q1.7"), 1);
	assert_int_equal(maildir_has(path, "Q1.70"), 0); /* prefix of another id */
	assert_int_equal(maildir_has(path, "Q1"), 0);

	char *newdir = xasprintf("%s/new", path), *tmp = xasprintf("%s/tmp", path);
	char name[512];
	assert_int_equal(count_entries(newdir, name, sizeof(name)), 1);
	assert_int_equal(count_entries(tmp, NULL, 0), 0);
	char suffix[64];
	snprintf(suffix, sizeof(suffix), ",S=%llu", (unsigned long long)size);
	assert_true(strncmp(name, "1700000000.Q1.7.", 16) == 0);
	assert_non_null(strstr(name, suffix));

	/* stored bytes: prefix + body, CRLF kept */
	char *file = xasprintf("%s/%s", newdir, name);
	FILE *f = fopen(file, "rb");
	assert_non_null(f);
	char buf[512];
	size_t n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	assert_int_equal(n, size);
	assert_memory_equal(buf, prefix, strlen(prefix));
	assert_memory_equal(buf + strlen(prefix), body, strlen(body));

	/* moved to cur/ with flags (as an IMAP server does): still found */
	char *cur = xasprintf("%s/cur/%s:2,S", path, name);
	assert_int_equal(rename(file, cur), 0);
	assert_int_equal(maildir_has(path, "Q1.7"), 1);

	/* from a file descriptor */
	char *src = xasprintf("%s/src", tmpdir);
	int fd = open(src, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, body, strlen(body)), (ssize_t)strlen(body));
	assert_int_equal(maildir_deliver(path, "Q2.7", 1700000001, NULL, NULL, 0, fd, &size), 0);
	assert_int_equal(size, strlen(body));
	close(fd);
	assert_int_equal(maildir_has(path, "Q2.7"), 1);
	assert_int_equal(count_entries(newdir, NULL, 0), 1);

	/* a crash during an earlier attempt left tmp/ content under the same name */
	/* (the name maildir_deliver will use; this host's name has no '/' or ':') */
	char host[256];
	gethostname(host, sizeof(host));
	char *stale = xasprintf("%s/tmp/1700000002.Q4.7.%s", path, host);
	int sfd = open(stale, O_WRONLY | O_CREAT, 0600);
	assert_true(sfd >= 0);
	assert_int_equal(write(sfd, "partial", 7), 7);
	close(sfd);
	free(stale);
	assert_int_equal(maildir_deliver(path, "Q4.7", 1700000002, NULL, body, strlen(body), -1,
					 &size),
			 0);
	assert_int_equal(size, strlen(body));
	assert_int_equal(maildir_has(path, "Q4.7"), 1);
	assert_int_equal(count_entries(tmp, NULL, 0), 0);

	/* failures leave nothing behind */
	assert_int_equal(maildir_deliver(path, "bad/unique", 1, NULL, "x", 1, -1, &size), -1);
	assert_int_equal(errno, EINVAL);
	char *gone = xasprintf("%s/nonexistent", tmpdir);
	assert_int_equal(maildir_deliver(gone, "Q3.1", 1, NULL, "x", 1, -1, &size), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(count_entries(tmp, NULL, 0), 0);

	assert_int_equal(maildir_remove(path), 0);
	assert_false(is_dir(path, NULL));
	assert_int_equal(maildir_remove(path), 0);
	unlink(src);
	free(gone);
	free(src);
	free(cur);
	free(file);
	free(newdir);
	free(tmp);
	free(path);
}

static int setup(void **state)
{
	return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
	char *cmd = xasprintf("rm -rf '%s'", tmpdir);
	int r = system(cmd);
	free(cmd);
	return r == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create),
		cmocka_unit_test(test_deliver),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}

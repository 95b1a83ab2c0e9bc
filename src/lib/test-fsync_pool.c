/* fsync pool: many files, per-descriptor errors, several callers at once, use after fork. */
#include "lib/fsync_pool.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

static char dir[] = "/tmp/postern-test-fsync-XXXXXX";

static int open_file(int i)
{
	char p[128];
	snprintf(p, sizeof(p), "%s/f%d", dir, i);
	int fd = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	char buf[4096];
	memset(buf, 'a' + i % 26, sizeof(buf));
	assert_int_equal(write(fd, buf, sizeof(buf)), (ssize_t)sizeof(buf));
	return fd;
}

static void test_many(void **state)
{
	int fds[40], errs[40];
	for (int i = 0; i < 40; i++)
		fds[i] = open_file(i);
	for (size_t n = 0; n <= 40; n += 13) {
		memset(errs, 0x55, sizeof(errs));
		assert_int_equal(fsync_all(fds, n, true, errs), 0);
		for (size_t i = 0; i < n; i++)
			assert_int_equal(errs[i], 0);
	}
	assert_int_equal(fsync_all(fds, 40, false, errs), 0);
	for (int i = 0; i < 40; i++)
		close(fds[i]);
}

static void test_errors(void **state)
{
	int fds[6], errs[6];
	for (int i = 0; i < 6; i++)
		fds[i] = open_file(100 + i);
	close(fds[1]);
	fds[1] = -1;
	close(fds[4]);
	fds[4] = 99999; /* not open */
	assert_int_equal(fsync_all(fds, 6, true, errs), 2);
	assert_int_equal(errs[0], 0);
	assert_int_equal(errs[1], EBADF);
	assert_int_equal(errs[2], 0);
	assert_int_equal(errs[3], 0);
	assert_int_equal(errs[4], EBADF);
	assert_int_equal(errs[5], 0);
	int one = -1, e1;
	assert_int_equal(fsync_all(&one, 1, false, &e1), 1);
	assert_int_equal(e1, EBADF);
	for (int i = 0; i < 6; i++)
		if (i != 1 && i != 4)
			close(fds[i]);
}

struct caller {
	int base;
	int failures;
};

static void *caller_main(void *p)
{
	struct caller *c = p;
	int fds[10], errs[10];
	for (int i = 0; i < 10; i++)
		fds[i] = open_file(c->base + i);
	for (int round = 0; round < 20; round++) {
		fds[round % 10] = -fds[round % 10] - 1; /* one bad descriptor per round */
		size_t nf = fsync_all(fds, 10, round % 2 == 0, errs);
		for (int i = 0; i < 10; i++)
			if ((errs[i] != 0) != (i == round % 10))
				c->failures++;
		if (nf != 1)
			c->failures++;
		fds[round % 10] = -fds[round % 10] - 1;
	}
	for (int i = 0; i < 10; i++)
		close(fds[i]);
	return NULL;
}

static void test_concurrent_callers(void **state)
{
	pthread_t th[4];
	struct caller c[4];
	for (int i = 0; i < 4; i++) {
		c[i] = (struct caller){.base = 200 + 20 * i};
		assert_int_equal(pthread_create(&th[i], NULL, caller_main, &c[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(c[i].failures, 0);
	}
}

static void test_fork(void **state)
{
	int fds[8], errs[8];
	for (int i = 0; i < 8; i++)
		fds[i] = open_file(300 + i);
	assert_int_equal(fsync_all(fds, 8, true, errs), 0); /* pool running in the parent */
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int e[8];
		for (int r = 0; r < 5; r++)
			if (fsync_all(fds, 8, true, e) != 0)
				_exit(1);
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_int_equal(fsync_all(fds, 8, false, errs), 0);
	for (int i = 0; i < 8; i++)
		close(fds[i]);
}

static int setup(void **state)
{
	return mkdtemp(dir) != NULL ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_many),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_concurrent_callers),
		cmocka_unit_test(test_fork),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}

/* log: held lines (log_hold/log_flush) come out whole, in order, once; other threads are not held. */
#include "lib/log.h"

#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static char path[] = "/tmp/postern-test-log-XXXXXX";

/* The log file's contents (static buffer), without the time stamps. */
static const char *contents(void)
{
	static char buf[1 << 20];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	assert_true(n >= 0);
	buf[n] = '\0';
	/* "2026-11-23T05:32:44.801Z info event=x" -> "info event=x" */
	char *o = buf;
	for (char *p = buf; *p != '\0';) {
		char *sp = strchr(p, ' ');
		char *nl = strchr(p, '\n');
		assert_non_null(sp);
		assert_non_null(nl);
		size_t len = (size_t)(nl - sp);
		memmove(o, sp + 1, len);
		o += len;
		p = nl + 1;
	}
	*o = '\0';
	return buf;
}

static int setup(void **state)
{
	int fd = mkstemp(path);
	if (fd < 0)
		return -1;
	close(fd);
	log_set_stderr(0);
	return log_open_file(path);
}

static int teardown(void **state)
{
	log_close_file();
	unlink(path);
	return 0;
}

static void truncate_log(void)
{
	assert_int_equal(truncate(path, 0), 0);
}

static void *other_thread(void *arg)
{
	log_info("event=other");
	return NULL;
}

static void test_hold_flush(void **state)
{
	truncate_log();
	log_hold();
	log_info("event=one n=%d", 1);
	log_warn("event=two");
	log_debug("event=below_level"); /* not written at all */
	/* another thread's lines are not held */
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, other_thread, NULL), 0);
	pthread_join(t, NULL);
	assert_string_equal(contents(), "info event=other\n");
	log_flush();
	assert_string_equal(contents(), "info event=other\ninfo event=one n=1\nwarn event=two\n");
	/* not holding any more: written at once */
	log_error("event=three");
	assert_string_equal(contents(),
			    "info event=other\ninfo event=one n=1\nwarn event=two\nerror event=three\n");
	log_flush(); /* nothing held: nothing written */
	assert_string_equal(contents(),
			    "info event=other\ninfo event=one n=1\nwarn event=two\nerror event=three\n");
}

static void test_hold_many(void **state)
{
	/* more than the held buffer takes: flushed on the way, every line once, in order */
	truncate_log();
	log_hold();
	for (int i = 0; i < 3000; i++)
		log_info("event=line i=%04d padding=%s", i, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
	log_flush();
	const char *c = contents();
	for (int i = 0; i < 3000; i++) {
		char want[128];
		snprintf(want, sizeof(want), "info event=line i=%04d padding=", i);
		assert_memory_equal(c, want, strlen(want));
		c = strchr(c, '\n');
		assert_non_null(c);
		c++;
	}
	assert_string_equal(c, "");
}

static int wakes;

static void count_wake(void *arg)
{
	assert_ptr_equal(arg, &wakes);
	wakes++;
}

static void test_defer(void **state)
{
	/* an event loop's mode: held for good, one wake per batch, flushed in order */
	truncate_log();
	wakes = 0;
	log_defer(count_wake, &wakes);
	log_info("event=a");
	log_info("event=b");
	assert_int_equal(wakes, 1);
	assert_string_equal(contents(), "");
	log_flush();
	assert_string_equal(contents(), "info event=a\ninfo event=b\n");
	log_warn("event=c"); /* still deferred after a flush: a new batch, a new wake */
	assert_int_equal(wakes, 2);
	assert_string_equal(contents(), "info event=a\ninfo event=b\n");
	/* a fatal line cannot wait: what is held goes first */
	log_write(LOG_FATAL, "event=d");
	assert_string_equal(contents(), "info event=a\ninfo event=b\nwarn event=c\nfatal event=d\n");
	/* more than the buffer takes: written on the way, in order, no wake in between */
	for (int i = 0; i < 2000; i++)
		log_info("event=line i=%04d padding=%s", i, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
	assert_int_equal(wakes, 3);
	log_info("event=e");
	/* ending it writes what is held and lines go out at once again */
	log_defer(NULL, NULL);
	const char *c = strstr(contents(), "i=1999 ");
	assert_non_null(c);
	assert_non_null(strstr(c, "info event=e\n"));
	log_info("event=f");
	assert_non_null(strstr(contents(), "info event=e\ninfo event=f\n"));
	assert_int_equal(wakes, 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hold_flush),
		cmocka_unit_test(test_hold_many),
		cmocka_unit_test(test_defer),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}

/*
 * Queue administration (queue_admin.c) on a crafted queue.db: hold,
 * release, flush, delete, bounce (the DSN and its rows), the busy path
 * that a running server takes for a message with a delivery in progress,
 * the request rows the CLI leaves for a server, and queue.lock.
 */
#include "lib/log.h"
#include "lib/xalloc.h"
#include "queue/queue-private.h"

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
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

static char tmpdir[] = "/tmp/postern-test-queue-admin-XXXXXX";
static char *spool_dir;

static sqlite3 *db_open(void)
{
	char *path = xasprintf("%s/queue.db", tmpdir);
	char *err = NULL;
	sqlite3 *db = queue_db_open(path, &err);
	if (db == NULL)
		fail_msg("queue_db_open: %s", err);
	free(path);
	return db;
}

static void exec(sqlite3 *db, const char *sql)
{
	assert_int_equal(queue_db_exec(db, sql), 0);
}

static int64_t count(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st = NULL;
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	int64_t n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return n;
}

static bool spool_exists(const char *id)
{
	char *p = xasprintf("%s/%s", spool_dir, id);
	bool e = access(p, F_OK) == 0;
	free(p);
	return e;
}

/* A message with a spool file and recipients "address:state:notify" rows. */
static void add_message(sqlite3 *db, const char *id, const char *sender, const char *const *rcpts)
{
	char *p = xasprintf("%s/%s", spool_dir, id);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	fprintf(f, "From: <%s>\r\nSubject: test %s\r\n\r\nbody\r\n", sender, id);
	fclose(f);
	free(p);
	char *sql = xasprintf("INSERT INTO messages(id, sender, received, size) VALUES ('%s', '%s',"
			      " 1000, 40)",
			      id, sender);
	exec(db, sql);
	free(sql);
	for (int i = 0; rcpts[i] != NULL; i++) {
		char addr[128], state[32];
		int notify = 0;
		assert_int_equal(sscanf(rcpts[i], "%127[^:]:%31[^:]:%d", addr, state, &notify), 3);
		sql = xasprintf("INSERT INTO recipients(queue_id, idx, address, notify, external, state,"
				" attempts, next_attempt, last_error) VALUES ('%s', %d, '%s', %d, 1,"
				" '%s', 1, 99999999999, '%s')",
				id, i, addr, notify, state,
				strcmp(state, "failed") == 0 ? "550 5.1.1 no such user"
							     : "450 4.2.0 later");
		exec(db, sql);
		free(sql);
	}
}

static void clear(sqlite3 *db)
{
	exec(db, "DELETE FROM recipients; DELETE FROM messages; DELETE FROM admin_requests;");
}

static struct admin_ctx ctx_for(sqlite3 *db)
{
	return (struct admin_ctx){.db = db, .spool_dir = spool_dir, .hostname = "mx.example.test"};
}

static void test_lock(void **state)
{
	(void)state;
	int fd = queue_lock_try(tmpdir);
	assert_true(fd >= 0);
	int fd2 = queue_lock_try(tmpdir);
	assert_int_equal(fd2, -1);
	assert_int_equal(errno, EWOULDBLOCK);
	close(fd);
	fd2 = queue_lock_try(tmpdir);
	assert_true(fd2 >= 0);
	close(fd2);
}

static void test_hold_release_flush(void **state)
{
	(void)state;
	sqlite3 *db = db_open();
	clear(db);
	add_message(db, "AAAA", "s@example.test",
		    (const char *const[]){"x@remote.test:deferred:0", "y@remote.test:delivered:0",
					  NULL});
	add_message(db, "BBBB", "s@example.test",
		    (const char *const[]){"z@remote.test:deferred:0", NULL});
	char *res = NULL;
	assert_int_equal(queue_admin_request(tmpdir, "h", QUEUE_ADMIN_HOLD, "AAAA", 0, &res), 1);
	assert_string_equal(res, "held AAAA");
	free(res);
	assert_int_equal(count(db, "SELECT held FROM messages WHERE id = 'AAAA'"), 1);
	/* a held message is not flushed */
	assert_int_equal(queue_admin_request(tmpdir, "h", QUEUE_ADMIN_FLUSH, "AAAA", 0, &res), -1);
	assert_non_null(strstr(res, "on hold"));
	free(res);
	assert_int_equal(queue_admin_request(tmpdir, "h", QUEUE_ADMIN_FLUSH, NULL, 0, &res), 1);
	assert_string_equal(res, "1 deferred recipient(s) due now");
	free(res);
	assert_int_equal(count(db, "SELECT next_attempt FROM recipients WHERE address ="
				   " 'z@remote.test'"),
			 0);
	assert_int_equal(count(db, "SELECT next_attempt FROM recipients WHERE address ="
				   " 'x@remote.test'"),
			 99999999999);
	assert_int_equal(queue_admin_request(tmpdir, "h", QUEUE_ADMIN_RELEASE, "AAAA", 0, &res), 1);
	assert_string_equal(res, "released AAAA");
	free(res);
	assert_int_equal(count(db, "SELECT held FROM messages WHERE id = 'AAAA'"), 0);
	/* released: try now; the delivered row is left alone */
	assert_int_equal(count(db, "SELECT next_attempt FROM recipients WHERE address ="
				   " 'x@remote.test'"),
			 0);
	assert_int_equal(count(db, "SELECT next_attempt FROM recipients WHERE address ="
				   " 'y@remote.test'"),
			 99999999999);
	/* unknown and malformed ids */
	assert_int_equal(queue_admin_request(tmpdir, "h", QUEUE_ADMIN_HOLD, "CCCC", 0, &res), -1);
	assert_non_null(strstr(res, "no such message"));
	free(res);
	assert_int_equal(queue_admin_request(tmpdir, "h", QUEUE_ADMIN_HOLD, "../x", 0, &res), -1);
	assert_non_null(strstr(res, "not a queue id"));
	free(res);
	assert_int_equal(queue_admin_request(tmpdir, "h", QUEUE_ADMIN_BOUNCE, NULL, 0, &res), -1);
	free(res);

	struct queue_info *list = NULL;
	size_t n = 0;
	char *err = NULL;
	assert_int_equal(queue_info_list(tmpdir, NULL, &list, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(list[0].id, "AAAA");
	assert_int_equal(list[0].nrcpts, 2);
	assert_string_equal(list[0].rcpts[1].state, "delivered");
	assert_string_equal(list[0].rcpts[0].last_error, "450 4.2.0 later");
	queue_info_free(&list, n);
	assert_int_equal(queue_info_list(tmpdir, "BBBB", &list, &n, &err), 0);
	assert_int_equal(n, 1);
	queue_info_free(&list, n);
	assert_int_equal(queue_info_list(tmpdir, "ZZZZ", &list, &n, &err), 0);
	assert_int_equal(n, 0);
	sqlite3_close_v2(db);
}

static void test_delete(void **state)
{
	(void)state;
	sqlite3 *db = db_open();
	clear(db);
	const char *const r[] = {"x@remote.test:deferred:0", NULL};
	add_message(db, "D1", "s@example.test", r);
	add_message(db, "D2", "s@example.test", r);
	add_message(db, "D3", "s@example.test", r);
	char *res = NULL;
	assert_int_equal(queue_admin_request(tmpdir, "h", QUEUE_ADMIN_DELETE, "D1", 0, &res), 1);
	assert_string_equal(res, "deleted 1 message(s)");
	free(res);
	assert_false(spool_exists("D1"));
	assert_int_equal(count(db, "SELECT count(*) FROM recipients WHERE queue_id = 'D1'"), 0);
	assert_int_equal(queue_admin_request(tmpdir, "h", QUEUE_ADMIN_DELETE, NULL, 0, &res), 1);
	assert_string_equal(res, "deleted 2 message(s)");
	free(res);
	assert_int_equal(count(db, "SELECT count(*) FROM messages"), 0);
	assert_false(spool_exists("D2"));
	assert_false(spool_exists("D3"));
	/* nothing was bounced */
	assert_int_equal(count(db, "SELECT count(*) FROM recipients"), 0);
	sqlite3_close_v2(db);
}

static char *read_spool(const char *id)
{
	char *p = xasprintf("%s/%s", spool_dir, id);
	FILE *f = fopen(p, "r");
	free(p);
	assert_non_null(f);
	char *buf = xcalloc(1, 65536);
	size_t n = fread(buf, 1, 65535, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static void test_bounce(void **state)
{
	(void)state;
	sqlite3 *db = db_open();
	clear(db);
	/* NOTIFY=SUCCESS (2): no failure DSN for that one; the failed one keeps its error */
	add_message(db, "B1", "s@example.test",
		    (const char *const[]){"x@remote.test:deferred:0", "q@remote.test:deferred:2",
					  "f@remote.test:failed:0", "d@remote.test:delivered:0",
					  NULL});
	char *res = NULL;
	assert_int_equal(queue_admin_request(tmpdir, "h", QUEUE_ADMIN_BOUNCE, "B1", 0, &res), 1);
	assert_non_null(strstr(res, "returned B1 to <s@example.test>: 2 recipient(s), DSN "));
	char dsn[QUEUE_ID_MAX];
	snprintf(dsn, sizeof(dsn), "%s", strstr(res, "DSN ") + 4);
	free(res);
	assert_false(spool_exists("B1"));
	assert_int_equal(count(db, "SELECT count(*) FROM recipients WHERE queue_id = 'B1'"), 0);
	/* the DSN: null sender, to the original sender, waiting for the delivery thread */
	char *sql = xasprintf("SELECT count(*) FROM messages m JOIN recipients r ON r.queue_id = m.id"
			      " WHERE m.id = '%s' AND m.sender = '' AND r.address = 's@example.test'"
			      " AND r.state = 'queued'",
			      dsn);
	assert_int_equal(count(db, sql), 1);
	free(sql);
	char *text = read_spool(dsn);
	assert_non_null(strstr(text, "Final-Recipient: rfc822; x@remote.test"));
	assert_non_null(strstr(text, "Status: 5.0.0"));
	assert_non_null(strstr(text, "administrator"));
	assert_non_null(strstr(text, "Final-Recipient: rfc822; f@remote.test"));
	assert_non_null(strstr(text, "Status: 5.1.1"));
	assert_null(strstr(text, "q@remote.test"));
	assert_null(strstr(text, "d@remote.test"));
	assert_non_null(strstr(text, "Subject: test B1"));
	free(text);

	/* never bounce a bounce */
	clear(db);
	add_message(db, "B2", "", (const char *const[]){"x@remote.test:deferred:0", NULL});
	assert_int_equal(queue_admin_request(tmpdir, "h", QUEUE_ADMIN_BOUNCE, "B2", 0, &res), 1);
	assert_non_null(strstr(res, "without a DSN (null sender)"));
	free(res);
	assert_int_equal(count(db, "SELECT count(*) FROM messages"), 0);
	sqlite3_close_v2(db);
}

/* ---- the server's side ---- */

struct fake_server {
	const char *busy_id; /* this message has a delivery in progress */
	unsigned dsns, flushes;
};

static bool fake_busy(void *arg, const char *id)
{
	struct fake_server *s = arg;
	return s->busy_id != NULL && strcmp(s->busy_id, id) == 0;
}

static void fake_dsn(void *arg, const char *id)
{
	(void)id;
	((struct fake_server *)arg)->dsns++;
}

static void fake_flushed(void *arg)
{
	((struct fake_server *)arg)->flushes++;
}

static void test_busy(void **state)
{
	(void)state;
	sqlite3 *db = db_open();
	clear(db);
	const char *const r[] = {"x@remote.test:deferred:0", NULL};
	add_message(db, "E1", "s@example.test", r);
	add_message(db, "E2", "s@example.test", r);
	struct fake_server fs = {.busy_id = "E1"};
	pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	struct admin_ctx ctx = ctx_for(db);
	ctx.write_lock = &lock;
	ctx.busy = fake_busy;
	ctx.dsn_queued = fake_dsn;
	ctx.flushed = fake_flushed;
	ctx.arg = &fs;
	int64_t n = 0;
	char *res = NULL;
	/* E1 busy: held and left for later; E2 deleted now */
	assert_int_equal(queue_admin_apply(&ctx, QUEUE_ADMIN_DELETE, NULL, &n, &res), 0);
	free(res);
	assert_int_equal(n, 1);
	assert_int_equal(count(db, "SELECT held FROM messages WHERE id = 'E1'"), 1);
	assert_false(spool_exists("E2"));
	assert_int_equal(queue_admin_apply(&ctx, QUEUE_ADMIN_BOUNCE, "E1", &n, &res), 0);
	free(res);
	assert_true(spool_exists("E1"));
	/* the attempt ended */
	fs.busy_id = NULL;
	assert_int_equal(queue_admin_apply(&ctx, QUEUE_ADMIN_BOUNCE, "E1", &n, &res), 1);
	free(res);
	assert_int_equal(fs.dsns, 1);
	assert_false(spool_exists("E1"));
	sqlite3_close_v2(db);
}

struct req_thread {
	enum queue_admin_action action;
	const char *id;
	unsigned wait_ms;
	int rc;
	char *res;
};

static void *request_main(void *arg)
{
	struct req_thread *t = arg;
	t->rc = queue_admin_request(tmpdir, "h", t->action, t->id, t->wait_ms, &t->res);
	return NULL;
}

static void test_requests_to_a_server(void **state)
{
	(void)state;
	sqlite3 *db = db_open();
	clear(db);
	const char *const r[] = {"x@remote.test:deferred:0", NULL};
	add_message(db, "R1", "s@example.test", r);
	add_message(db, "R2", "s@example.test", r);
	int server_lock = queue_lock_try(tmpdir); /* a server runs */
	assert_true(server_lock >= 0);

	/* nobody answers: the request stays for the server */
	char *res = NULL;
	assert_int_equal(queue_admin_request(tmpdir, "h", QUEUE_ADMIN_HOLD, "R1", 200, &res), 0);
	assert_non_null(strstr(res, "not applied yet"));
	free(res);
	assert_int_equal(count(db, "SELECT held FROM messages WHERE id = 'R1'"), 0);
	assert_int_equal(count(db, "SELECT count(*) FROM admin_requests WHERE done = 0"), 1);
	struct fake_server fs = {0};
	struct admin_ctx ctx = ctx_for(db);
	ctx.busy = fake_busy;
	ctx.flushed = fake_flushed;
	ctx.arg = &fs;
	queue_admin_process(&ctx);
	assert_int_equal(count(db, "SELECT held FROM messages WHERE id = 'R1'"), 1);
	assert_int_equal(count(db, "SELECT done FROM admin_requests"), 1);

	/* a CLI waiting while the server answers */
	struct req_thread t = {.action = QUEUE_ADMIN_FLUSH, .id = "R2", .wait_ms = 20000};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, request_main, &t), 0);
	for (int i = 0; i < 200 && count(db, "SELECT count(*) FROM admin_requests WHERE done = 0") == 0;
	     i++)
		usleep(10000);
	queue_admin_process(&ctx);
	pthread_join(th, NULL);
	assert_int_equal(t.rc, 1);
	assert_string_equal(t.res, "1 deferred recipient(s) due now");
	free(t.res);
	assert_int_equal(fs.flushes, 1);
	/* collected answers are removed */
	assert_int_equal(count(db, "SELECT count(*) FROM admin_requests WHERE queue_id = 'R2'"), 0);

	/* the server stops while the CLI waits: the CLI finishes the job itself */
	t = (struct req_thread){.action = QUEUE_ADMIN_DELETE, .id = "R2", .wait_ms = 20000};
	assert_int_equal(pthread_create(&th, NULL, request_main, &t), 0);
	usleep(300 * 1000);
	close(server_lock);
	pthread_join(th, NULL);
	assert_int_equal(t.rc, 1);
	assert_string_equal(t.res, "deleted 1 message(s)");
	free(t.res);
	assert_false(spool_exists("R2"));

	/* a request that waited for an attempt which then finished the message */
	add_message(db, "R3", "s@example.test", r);
	server_lock = queue_lock_try(tmpdir);
	assert_true(server_lock >= 0);
	assert_int_equal(queue_admin_request(tmpdir, "h", QUEUE_ADMIN_BOUNCE, "R3", 0, &res), 0);
	free(res);
	fs.busy_id = "R3";
	queue_admin_process(&ctx);
	assert_int_equal(count(db, "SELECT done FROM admin_requests WHERE queue_id = 'R3'"), 0);
	assert_int_equal(count(db, "SELECT held FROM messages WHERE id = 'R3'"), 1);
	exec(db, "DELETE FROM recipients WHERE queue_id = 'R3'; DELETE FROM messages WHERE id = 'R3'");
	fs.busy_id = NULL;
	queue_admin_process(&ctx);
	assert_int_equal(count(db, "SELECT done FROM admin_requests WHERE queue_id = 'R3'"), 2);
	assert_int_equal(count(db, "SELECT count(*) FROM admin_requests WHERE queue_id = 'R3' AND"
				   " result LIKE '%left the queue during the delivery attempt%'"),
			 1);
	close(server_lock);
	sqlite3_close_v2(db);
}

static int setup(void **state)
{
	(void)state;
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	spool_dir = xasprintf("%s/spool", tmpdir);
	log_set_level(LOG_ERROR);
	return mkdir(spool_dir, 0700);
}

static int teardown(void **state)
{
	(void)state;
	char *cmd = xasprintf("rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", tmpdir);
	free(cmd);
	free(spool_dir);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lock),
		cmocka_unit_test(test_hold_release_flush),
		cmocka_unit_test(test_delete),
		cmocka_unit_test(test_bounce),
		cmocka_unit_test(test_busy),
		cmocka_unit_test(test_requests_to_a_server),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}

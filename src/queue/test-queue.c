/*
 * The queue: ids, group commit from the loop and from threads, delivery
 * (aliases, lists, plus, external targets), crash recovery without
 * duplicates (crafted state and a real kill -9), orphan cleanup, and a
 * write failure (RLIMIT_FSIZE standing in for a full disk).
 */
#include "lib/config.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "queue/queue.h"
#include "store/directory.h"
#include "store/maildir.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static char tmpdir[] = "/tmp/postern-test-queue-XXXXXX";
static struct config *cfg;
static pthread_t loop_thread;

/* ---- helpers ---- */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct done_state {
	unsigned done, ok, failed;
	int last_errno;
	bool wrong_thread;
};

static void on_done(void *arg, bool ok, int error_number)
{
	struct done_state *d = arg;
	d->done++;
	if (ok)
		d->ok++;
	else {
		d->failed++;
		d->last_errno = error_number;
	}
	if (!pthread_equal(pthread_self(), loop_thread))
		d->wrong_thread = true;
}

static void run_until(struct event_base *base, struct done_state *d, unsigned n)
{
	double end = now_s() + 60;
	while (d->done < n && now_s() < end)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(1000);
	assert_int_equal(d->done, n);
}

static struct spool_msg *make_msg(const char *data_dir, const char *subject, size_t body_size)
{
	char id[QUEUE_ID_MAX];
	queue_id_new(id);
	struct spool_msg *m = spool_msg_new(data_dir, id);
	char *hdr = xasprintf("Subject: %s\r\nMessage-Id: <%s@test>\r\n\r\n", subject, id);
	assert_int_equal(spool_msg_write(m, hdr, strlen(hdr)), 0);
	free(hdr);
	char line[80];
	memset(line, 'x', 78);
	line[78] = '\r';
	line[79] = '\n';
	for (size_t n = 0; n < body_size; n += sizeof(line)) /* written in pieces, like DATA */
		assert_int_equal(spool_msg_write(m, line, sizeof(line)), 0);
	return m;
}

static void make_env(struct envelope *env, const char *sender, const char *const *rcpts)
{
	memset(env, 0, sizeof(*env));
	env->sender = xstrdup(sender);
	size_t n = 0;
	while (rcpts[n] != NULL)
		n++;
	env->rcpts = xcalloc(n, sizeof(*env->rcpts));
	for (size_t i = 0; i < n; i++) {
		env->rcpts[i].address = xstrdup(rcpts[i]);
		env->rcpts[i].local = true;
	}
	env->nrcpts = n;
	env->client_ip = xstrdup("127.0.0.1");
	env->client_helo = xstrdup("client.test");
	env->protocol = xstrdup("ESMTP");
}

/* Files in DIR (not dot files); with `needle`, only names containing it. */
static int count_files(const char *dir, const char *needle)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return -1;
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.' || strcmp(de->d_name, "tmp") == 0)
			continue;
		if (needle == NULL || strstr(de->d_name, needle) != NULL)
			n++;
	}
	closedir(d);
	return n;
}

static int mail_count(const char *address, const char *needle)
{
	char *p = maildir_path(tmpdir, address);
	char *nd = xasprintf("%s/new", p), *cd = xasprintf("%s/cur", p);
	int n = count_files(nd, needle) + count_files(cd, needle);
	free(nd);
	free(cd);
	free(p);
	return n;
}

static int spool_count(const char *data_dir)
{
	char *p = xasprintf("%s/spool", data_dir);
	int n = count_files(p, NULL);
	free(p);
	return n;
}

static void wait_delivered(struct queue *q, uint64_t n)
{
	struct queue_stats st;
	double end = now_s() + 60;
	do {
		queue_get_stats(q, &st);
		if (st.delivered >= n && st.pending == 0)
			return;
		usleep(5000);
	} while (now_s() < end);
	fail_msg("only %llu of %llu delivered", (unsigned long long)st.delivered,
		 (unsigned long long)n);
}

static int64_t account_id(const char *address)
{
	struct directory *dir = directory_thread(tmpdir);
	struct resolved r;
	assert_int_equal(directory_resolve(dir, address, &r), RESOLVE_OK);
	int64_t id = r.accounts[0].id;
	resolved_free(&r);
	return id;
}

static char *read_file(const char *path, size_t *len_r)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return NULL;
	char *buf = xmalloc(1 << 20);
	*len_r = fread(buf, 1, 1 << 20, f);
	fclose(f);
	return buf;
}

/* ---- tests ---- */

static void test_ids(void **state)
{
	char prev[QUEUE_ID_MAX] = "", id[QUEUE_ID_MAX];
	for (int i = 0; i < 20000; i++) {
		queue_id_new(id);
		assert_int_equal(strlen(id), 16);
		for (const char *p = id; *p != '\0'; p++)
			assert_true((*p >= '0' && *p <= '9') || (*p >= 'A' && *p <= 'Z'));
		if (strcmp(prev, id) >= 0)
			fail_msg("ids not increasing: %s then %s", prev, id);
		memcpy(prev, id, sizeof(id));
	}
	/* another process at the same moment gets different ids */
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	pid_t pid = fork();
	if (pid == 0) {
		char cid[QUEUE_ID_MAX];
		for (int i = 0; i < 1000; i++) {
			queue_id_new(cid);
			if (write(pfd[1], cid, 16) != 16)
				_exit(1);
		}
		_exit(0);
	}
	close(pfd[1]);
	char mine[1000][QUEUE_ID_MAX];
	for (int i = 0; i < 1000; i++)
		queue_id_new(mine[i]);
	char cid[17] = "";
	int n = 0;
	while (read(pfd[0], cid, 16) == 16) {
		for (int i = 0; i < 1000; i++)
			assert_string_not_equal(cid, mine[i]);
		n++;
	}
	close(pfd[0]);
	int status;
	waitpid(pid, &status, 0);
	assert_int_equal(n, 1000);
}

struct thread_arg {
	struct queue *q;
	struct done_state *d;
	int n;
};

static void *commit_thread(void *p)
{
	struct thread_arg *a = p;
	static const char *const rcpts[] = {"bob@example.test", NULL};
	for (int i = 0; i < a->n; i++) {
		struct envelope env;
		make_env(&env, "thread@remote.test", rcpts);
		queue_commit(a->q, make_msg(tmpdir, "from a thread", 1000), &env, on_done, a->d);
	}
	return NULL;
}

static void test_commit_and_deliver(void **state)
{
	struct event_base *base = event_base_new();
	char *err = NULL;
	struct queue *q = queue_open(base, cfg, &err);
	if (q == NULL)
		fail_msg("queue_open: %s", err);
	struct done_state d = {0};

	/* 50 concurrent commits from the loop: they must share commit transactions */
	static const char *const to_alice[] = {"Alice+news@example.test", NULL};
	for (int i = 0; i < 50; i++) {
		struct envelope env;
		make_env(&env, "sender@remote.test", to_alice);
		/* a few large enough to be spilled to spool/tmp while received */
		size_t size = i % 10 == 0 ? 300 * 1024 : 4096;
		queue_commit(q, make_msg(tmpdir, "hello", size), &env, on_done, &d);
		assert_null(env.sender); /* fields taken over */
		assert_int_equal(env.nrcpts, 0);
	}
	run_until(base, &d, 50);
	assert_int_equal(d.ok, 50);
	assert_false(d.wrong_thread);
	struct queue_stats st;
	queue_get_stats(q, &st);
	assert_int_equal(st.committed, 50);
	if (st.max_batch < 2)
		fail_msg("group commit did not group: max batch %llu in %llu batches",
			 (unsigned long long)st.max_batch, (unsigned long long)st.batches);
	print_message("50 commits in %llu batches, largest %llu\n", (unsigned long long)st.batches,
		      (unsigned long long)st.max_batch);

	/* from several threads too (done callbacks still on the loop thread) */
	struct done_state d2 = {0};
	pthread_t th[4];
	struct thread_arg ta = {q, &d2, 10};
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&th[i], NULL, commit_thread, &ta), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	run_until(base, &d2, 40);
	assert_int_equal(d2.ok, 40);
	assert_false(d2.wrong_thread);

	/* a list with a duplicate path to alice and an external member, and a relay rcpt */
	struct done_state d3 = {0};
	static const char *const to_team[] = {"team@example.test", "alice@example.test",
					      "someone@elsewhere.test", NULL};
	struct envelope env;
	make_env(&env, "list@remote.test", to_team);
	struct spool_msg *m = make_msg(tmpdir, "team", 100);
	char team_id[QUEUE_ID_MAX];
	snprintf(team_id, sizeof(team_id), "%s", spool_msg_id(m));
	queue_commit(q, m, &env, on_done, &d3);
	run_until(base, &d3, 1);
	assert_int_equal(d3.ok, 1);

	wait_delivered(q, 50 + 40 + 2);
	assert_int_equal(mail_count("alice@example.test", NULL), 51);
	assert_int_equal(mail_count("bob@example.test", NULL), 41);
	assert_int_equal(mail_count("alice@example.test", team_id), 1); /* once, not twice */

	/* headers on top, the body as spooled, CRLF kept */
	char *p = maildir_path(tmpdir, "bob@example.test");
	char *nd = xasprintf("%s/new", p);
	DIR *dd = opendir(nd);
	struct dirent *de;
	char *file = NULL;
	while ((de = readdir(dd)) != NULL)
		if (strstr(de->d_name, team_id) != NULL)
			file = xasprintf("%s/%s", nd, de->d_name);
	closedir(dd);
	assert_non_null(file);
	size_t len;
	char *data = read_file(file, &len);
	const char *want = "Return-Path: <list@remote.test>\r\nDelivered-To: team@example.test\r\n"
			   "Subject: team\r\n";
	assert_memory_equal(data, want, strlen(want));
	char sz[32];
	snprintf(sz, sizeof(sz), ",S=%zu", len);
	assert_non_null(strstr(file, sz));
	free(data);
	free(file);
	free(nd);
	free(p);

	/* only the message with external targets keeps its spool file, rows deferred */
	assert_int_equal(spool_count(tmpdir), 1);
	char *sp = xasprintf("%s/spool/%s", tmpdir, team_id);
	assert_int_equal(access(sp, F_OK), 0);
	free(sp);
	char *dbp = xasprintf("%s/queue.db", tmpdir);
	sqlite3 *db;
	assert_int_equal(sqlite3_open(dbp, &db), SQLITE_OK);
	sqlite3_stmt *s;
	assert_int_equal(sqlite3_prepare_v2(db,
					    "SELECT address, state, last_error, external FROM"
					    " recipients WHERE state != 'delivered' ORDER BY address",
					    -1, &s, NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(s, 0), "friend@remote.test");
	assert_string_equal((const char *)sqlite3_column_text(s, 1), "deferred");
	assert_string_equal((const char *)sqlite3_column_text(s, 2), "awaiting outbound delivery");
	assert_int_equal(sqlite3_column_int(s, 3), 1);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(s, 0), "someone@elsewhere.test");
	assert_string_equal((const char *)sqlite3_column_text(s, 1), "deferred");
	assert_int_equal(sqlite3_step(s), SQLITE_DONE);
	sqlite3_finalize(s);
	/* fully delivered messages are gone from queue.db */
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM messages", -1, &s, NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(s, 0), 1);
	sqlite3_finalize(s);
	sqlite3_close(db);
	free(dbp);

	/* usage counted */
	struct directory *dir = directory_thread(tmpdir);
	struct resolved r;
	assert_int_equal(directory_resolve(dir, "alice@example.test", &r), RESOLVE_OK);
	assert_true(r.accounts[0].used > 5 * 300 * 1024);
	resolved_free(&r);

	queue_close(&q);
	event_base_free(base);
}

static void test_unknown_at_delivery(void **state)
{
	struct event_base *base = event_base_new();
	char *err = NULL;
	struct queue *q = queue_open(base, cfg, &err);
	assert_non_null(q);
	struct done_state d = {0};
	/* accepted while the alias existed; gone before delivery: failed, with a note */
	static const char *const rcpts[] = {"gone@example.test", "bob@example.test", NULL};
	struct envelope env;
	make_env(&env, "x@remote.test", rcpts);
	struct queue_stats before;
	queue_get_stats(q, &before);
	queue_commit(q, make_msg(tmpdir, "gone", 10), &env, on_done, &d);
	run_until(base, &d, 1);
	wait_delivered(q, before.delivered + 1);
	struct queue_stats st;
	queue_get_stats(q, &st);
	assert_int_equal(st.failed, before.failed + 1);
	queue_close(&q);
	event_base_free(base);
}

static int message_rows(const char *id)
{
	char *dbp = xasprintf("%s/queue.db", tmpdir);
	sqlite3 *db;
	assert_int_equal(sqlite3_open(dbp, &db), SQLITE_OK);
	sqlite3_stmt *s;
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM messages WHERE id = ?1", -1,
					    &s, NULL),
			 SQLITE_OK);
	sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	int n = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	sqlite3_close(db);
	free(dbp);
	return n;
}

/*
 * Mail for local accounts only goes straight into the Maildirs: the copy is
 * durable in new/ when the commit answers, with no spool file and no rows.
 * A copy that cannot be written there takes the queue, which delivers it
 * once the Maildir is usable again.
 */
static void test_direct(void **state)
{
	struct event_base *base = event_base_new();
	char *err = NULL;
	struct queue *q = queue_open(base, cfg, &err);
	assert_non_null(q);
	int spooled = spool_count(tmpdir);
	struct queue_stats before;
	queue_get_stats(q, &before);

	/* two accounts (one written with a capital letter): one copy each */
	static const char *const rcpts[] = {"bob@example.test", "Alice@example.test", NULL};
	struct done_state d = {0};
	struct envelope env;
	make_env(&env, "direct@remote.test", rcpts);
	struct spool_msg *m = make_msg(tmpdir, "direct", 1000);
	char id[QUEUE_ID_MAX];
	snprintf(id, sizeof(id), "%s", spool_msg_id(m));
	queue_commit(q, m, &env, on_done, &d);
	run_until(base, &d, 1);
	assert_int_equal(d.ok, 1);
	/* at the answer, without waiting for the delivery thread */
	assert_int_equal(mail_count("bob@example.test", id), 1);
	assert_int_equal(mail_count("alice@example.test", id), 1);
	assert_int_equal(spool_count(tmpdir), spooled);
	assert_int_equal(message_rows(id), 0);
	struct queue_stats st;
	queue_get_stats(q, &st);
	assert_int_equal(st.delivered, before.delivered + 2);
	assert_int_equal(st.committed, before.committed + 1);

	/* bob's tmp/ unusable: the whole message takes the queue, each copy made once */
	char *bob = maildir_path(tmpdir, "bob@example.test");
	char *tmp = xasprintf("%s/tmp", bob), *saved = xasprintf("%s/tmp.saved", bob);
	assert_int_equal(rename(tmp, saved), 0);
	FILE *f = fopen(tmp, "w"); /* a file where the directory was: ENOTDIR */
	assert_non_null(f);
	fclose(f);
	make_env(&env, "direct@remote.test", rcpts);
	m = make_msg(tmpdir, "fallback", 1000);
	snprintf(id, sizeof(id), "%s", spool_msg_id(m));
	queue_commit(q, m, &env, on_done, &d);
	run_until(base, &d, 2);
	assert_int_equal(d.ok, 2);
	assert_int_equal(message_rows(id), 1); /* queued, bob deferred */
	assert_int_equal(mail_count("bob@example.test", id), 0);
	assert_int_equal(unlink(tmp), 0);
	assert_int_equal(rename(saved, tmp), 0);
	double end = now_s() + 60;
	while (message_rows(id) > 0 && now_s() < end) {
		queue_kick(q);
		usleep(20000);
	}
	assert_int_equal(message_rows(id), 0);
	assert_int_equal(mail_count("bob@example.test", id), 1);
	assert_int_equal(mail_count("alice@example.test", id), 1);
	assert_int_equal(spool_count(tmpdir), spooled);
	free(tmp);
	free(saved);
	free(bob);
	queue_close(&q);
	event_base_free(base);
}

/* Insert a message row and recipient rows in `state`, as a crash would leave them. */
static void craft_rows(const char *id, const char *state, const char *const *rcpts, size_t size)
{
	char *dbp = xasprintf("%s/queue.db", tmpdir);
	sqlite3 *db;
	assert_int_equal(sqlite3_open(dbp, &db), SQLITE_OK);
	char *sql = xasprintf("INSERT INTO messages(id, sender, received, size) VALUES"
			      " ('%s', 'crash@remote.test', %lld, %zu)",
			      id, (long long)time(NULL), size);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	free(sql);
	for (int i = 0; rcpts[i] != NULL; i++) {
		sql = xasprintf("INSERT INTO recipients(queue_id, idx, address, local, state)"
				" VALUES ('%s', %d, '%s', 1, '%s')",
				id, i, rcpts[i], state);
		assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
		free(sql);
	}
	sqlite3_close(db);
	free(dbp);
}

static void write_spool(const char *rel, const char *content)
{
	char *p = xasprintf("%s/spool/%s", tmpdir, rel);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	close(fd);
	free(p);
}

static void test_recovery(void **state)
{
	const char *body = "Subject: crash\r\n\r\nbody\r\n";
	char m1[QUEUE_ID_MAX], orphan[QUEUE_ID_MAX], partial[QUEUE_ID_MAX];
	queue_id_new(m1);
	queue_id_new(orphan);
	queue_id_new(partial);

	/* M1: committed, crash while delivering: alice's copy made, bob's not */
	static const char *const rcpts[] = {"alice@example.test", "bob@example.test", NULL};
	craft_rows(m1, "delivering", rcpts, strlen(body));
	write_spool(m1, body);
	char *alice = maildir_path(tmpdir, "alice@example.test");
	char unique[64];
	snprintf(unique, sizeof(unique), "%s.%lld", m1, (long long)account_id("alice@example.test"));
	uint64_t size;
	assert_int_equal(maildir_deliver(alice, unique, time(NULL), "Return-Path: <x>\r\n", body,
					 strlen(body), -1, &size),
			 0);
	/*
	 * M2: rows still 'queued' (rows are not marked 'delivering' before the
	 * Maildir writes), crash after bob's copy was made durable: recovery
	 * treats the row as maybe delivered and does not deliver it twice
	 */
	char m2[QUEUE_ID_MAX];
	queue_id_new(m2);
	craft_rows(m2, "queued", rcpts, strlen(body));
	write_spool(m2, body);
	char *bob = maildir_path(tmpdir, "bob@example.test");
	snprintf(unique, sizeof(unique), "%s.%lld", m2, (long long)account_id("bob@example.test"));
	assert_int_equal(maildir_deliver(bob, unique, time(NULL), "Return-Path: <x>\r\n", body,
					 strlen(body), -1, &size),
			 0);
	free(bob);
	free(alice);
	/*
	 * Rows committed but the spool file not durable (the commit fsyncs the
	 * file while it writes the rows, and acknowledges only when both are
	 * done): a missing file and a short one. Never acknowledged: removed.
	 */
	char lost[QUEUE_ID_MAX], shorter[QUEUE_ID_MAX];
	queue_id_new(lost);
	queue_id_new(shorter);
	craft_rows(lost, "queued", rcpts, strlen(body));
	craft_rows(shorter, "queued", rcpts, strlen(body));
	write_spool(shorter, "Subject: cr");
	/* an orphan: spool file written, crash before the commit (never acknowledged) */
	write_spool(orphan, body);
	/* a message still being received */
	char *tmpname = xasprintf("tmp/%s", partial);
	write_spool(tmpname, "Subject: partial");
	free(tmpname);

	struct event_base *base = event_base_new();
	char *err = NULL;
	struct queue *q = queue_open(base, cfg, &err);
	assert_non_null(q);
	char *op = xasprintf("%s/spool/%s", tmpdir, orphan);
	char *pp = xasprintf("%s/spool/tmp/%s", tmpdir, partial);
	assert_int_equal(access(op, F_OK), -1); /* removed at open, before any delivery */
	assert_int_equal(access(pp, F_OK), -1);
	free(op);
	free(pp);
	wait_delivered(q, 2); /* bob's copy of M1, alice's of M2 */
	assert_int_equal(mail_count("alice@example.test", m1), 1);
	assert_int_equal(mail_count("bob@example.test", m1), 1);
	assert_int_equal(mail_count("alice@example.test", m2), 1);
	assert_int_equal(mail_count("bob@example.test", m2), 1);
	assert_int_equal(mail_count("alice@example.test", lost), 0);
	assert_int_equal(mail_count("alice@example.test", shorter), 0);
	char *sh = xasprintf("%s/spool/%s", tmpdir, shorter);
	assert_int_equal(access(sh, F_OK), -1);
	free(sh);
	char *sp = xasprintf("%s/spool/%s", tmpdir, m1);
	double end = now_s() + 30;
	while (access(sp, F_OK) == 0 && now_s() < end)
		usleep(5000);
	assert_int_equal(access(sp, F_OK), -1);
	free(sp);
	queue_close(&q);
	event_base_free(base);
}

static void test_write_failure(void **state)
{
	/* a separate data dir; RLIMIT_FSIZE makes writes fail like a full disk would */
	char dd[] = "/tmp/postern-test-queue-full-XXXXXX";
	assert_non_null(mkdtemp(dd));
	struct config *c2 = config_load(NULL, &(char *){NULL});
	assert_non_null(c2);
	free(c2->data_dir);
	c2->data_dir = xstrdup(dd);
	struct event_base *base = event_base_new();
	char *err = NULL;
	struct queue *q = queue_open(base, c2, &err);
	assert_non_null(q);

	struct rlimit old, lim;
	getrlimit(RLIMIT_FSIZE, &old);
	signal(SIGXFSZ, SIG_IGN);
	lim = old;
	lim.rlim_cur = 100 * 1024;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	struct done_state d = {0};
	static const char *const rcpts[] = {"alice@example.test", NULL};
	struct envelope env;
	make_env(&env, "x@remote.test", rcpts);
	queue_commit(q, make_msg(dd, "big", 200 * 1024), &env, on_done, &d); /* kept in memory */
	run_until(base, &d, 1);
	assert_int_equal(d.failed, 1);
	assert_int_equal(d.last_errno, EFBIG);
	assert_int_equal(spool_count(dd), 0); /* nothing left behind */

	/* spilled while received: the write error shows at once, and the tmp file goes */
	char id[QUEUE_ID_MAX];
	queue_id_new(id);
	struct spool_msg *m = spool_msg_new(dd, id);
	char chunk[8192];
	memset(chunk, 'y', sizeof(chunk));
	int r = 0;
	for (int i = 0; i < 64 && r == 0; i++)
		r = spool_msg_write(m, chunk, sizeof(chunk));
	assert_int_equal(r, -1);
	assert_int_equal(errno, EFBIG);
	char *tp = xasprintf("%s/spool/tmp", dd);
	assert_int_equal(count_files(tp, NULL), 0);
	free(tp);
	spool_msg_free(&m);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_DFL);

	/* and the queue still works afterwards */
	make_env(&env, "x@remote.test", rcpts);
	queue_commit(q, make_msg(dd, "small", 100), &env, on_done, &d);
	run_until(base, &d, 2);
	assert_int_equal(d.ok, 1);
	queue_close(&q);
	event_base_free(base);
	config_free(&c2);
	char *cmd = xasprintf("rm -rf '%s'", dd);
	assert_int_equal(system(cmd), 0);
	free(cmd);
}

/* Child: commit messages as fast as possible, report each acknowledged id on `fd`. */
struct child_msg {
	int fd;
	char id[QUEUE_ID_MAX];
};

static void child_ack(void *arg, bool ok, int error_number)
{
	struct child_msg *cm = arg;
	if (!ok)
		_exit(3);
	char line[QUEUE_ID_MAX + 1];
	snprintf(line, sizeof(line), "%s\n", cm->id);
	if (write(cm->fd, line, strlen(line)) < 0)
		_exit(4);
	free(cm);
}

static void child_main(int fd)
{
	log_set_level(LOG_ERROR);
	loop_thread = pthread_self();
	struct event_base *base = event_base_new();
	char *err = NULL;
	struct queue *q = queue_open(base, cfg, &err);
	if (q == NULL)
		_exit(2);
	static const char *const rcpts[] = {"alice@example.test", "bob@example.test", NULL};
	for (int round = 0; round < 100; round++) {
		for (int i = 0; i < 8; i++) {
			struct envelope env;
			make_env(&env, "load@remote.test", rcpts);
			struct spool_msg *m = make_msg(tmpdir, "load", 2000);
			struct child_msg *cm = xcalloc(1, sizeof(*cm));
			cm->fd = fd;
			snprintf(cm->id, sizeof(cm->id), "%s", spool_msg_id(m));
			queue_commit(q, m, &env, child_ack, cm);
		}
		event_base_loop(base, EVLOOP_ONCE);
	}
	for (;;)
		event_base_loop(base, EVLOOP_ONCE);
}

static void test_kill9(void **state)
{
	int before_alice = mail_count("alice@example.test", NULL);
	int before_bob = mail_count("bob@example.test", NULL);
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(pfd[0]);
		child_main(pfd[1]);
		_exit(0);
	}
	close(pfd[1]);
	/* read acknowledgements; kill -9 the child in the middle of the load */
	char (*acked)[QUEUE_ID_MAX] = xcalloc(1000, QUEUE_ID_MAX);
	int nacked = 0;
	FILE *f = fdopen(pfd[0], "r");
	char line[64];
	while (nacked < 1000 && fgets(line, sizeof(line), f) != NULL) {
		line[strcspn(line, "\n")] = '\0';
		if (strlen(line) >= QUEUE_ID_MAX)
			fail_msg("bad id from child: %s", line);
		memcpy(acked[nacked++], line, strlen(line) + 1);
		if (nacked == 150)
			kill(pid, SIGKILL);
	}
	fclose(f);
	int status;
	waitpid(pid, &status, 0);
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	assert_true(nacked >= 150);

	/* restart: every acknowledged message ends up in both mailboxes exactly once */
	struct event_base *base = event_base_new();
	char *err = NULL;
	struct queue *q = queue_open(base, cfg, &err);
	assert_non_null(q);
	double end = now_s() + 60;
	int missing;
	do {
		missing = 0;
		for (int i = 0; i < nacked; i++)
			if (mail_count("alice@example.test", acked[i]) != 1 ||
			    mail_count("bob@example.test", acked[i]) != 1)
				missing++;
		if (missing > 0)
			usleep(20000);
	} while (missing > 0 && now_s() < end);
	for (int i = 0; i < nacked; i++) {
		assert_int_equal(mail_count("alice@example.test", acked[i]), 1);
		assert_int_equal(mail_count("bob@example.test", acked[i]), 1);
	}
	/* and nothing at all twice: both mailboxes got the same set of messages */
	struct queue_stats st;
	end = now_s() + 30;
	do {
		queue_get_stats(q, &st);
		usleep(5000);
	} while (st.pending > 0 && now_s() < end);
	int got_alice = mail_count("alice@example.test", NULL) - before_alice;
	int got_bob = mail_count("bob@example.test", NULL) - before_bob;
	assert_int_equal(got_alice, got_bob);
	assert_true(got_alice >= nacked);
	print_message("kill -9 after %d acks: %d delivered to each mailbox, none twice\n", nacked,
		      got_alice);
	queue_close(&q);
	event_base_free(base);
	free(acked);
}

static int setup(void **state)
{
	/* warnings (over_quota by design: alice's quota is tiny) would flood the output */
	log_set_level(LOG_ERROR);
	loop_thread = pthread_self();
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	char *err = NULL;
	cfg = config_load(NULL, &err);
	if (cfg == NULL)
		return -1;
	free(cfg->data_dir);
	cfg->data_dir = xstrdup(tmpdir);
	struct directory *dir;
	if (directory_open(tmpdir, true, &dir, &err) < 0)
		return -1;
	/* mkpasswd -m yescrypt */
	const char *h = "$y$j9T$usbHZZwhzzogXGzFZKsvw/$40EAOmX.j1VXmxoTHELtW9tBW/c6OH6dBdBf1tyEl46";
	if (directory_domain_add(dir, "example.test", &err) < 0 ||
	    directory_user_add(dir, "alice@example.test", h, NULL, 1024, &err) < 0 ||
	    directory_user_add(dir, "bob@example.test", h, NULL, 0, &err) < 0 ||
	    directory_alias_add(dir, "team@example.test",
				"alice@example.test bob@example.test friend@remote.test", &err) < 0 ||
	    directory_alias_add(dir, "gone@example.test", "alice@example.test", &err) < 0) {
		fprintf(stderr, "setup: %s\n", err);
		return -1;
	}
	directory_close(&dir);
	return 0;
}

static int teardown(void **state)
{
	config_free(&cfg);
	char *cmd = xasprintf("rm -rf '%s'", tmpdir);
	int r = system(cmd);
	free(cmd);
	return r == 0 ? 0 : -1;
}

static void remove_gone_alias(void)
{
	struct directory *dir = directory_thread(tmpdir);
	char *err = NULL;
	assert_int_equal(directory_alias_del(dir, "gone@example.test", &err), 0);
}

static void test_unknown(void **state)
{
	remove_gone_alias();
	test_unknown_at_delivery(state);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ids),      cmocka_unit_test(test_commit_and_deliver),
		cmocka_unit_test(test_unknown),  cmocka_unit_test(test_direct),
		cmocka_unit_test(test_recovery),
		cmocka_unit_test(test_write_failure), cmocka_unit_test(test_kill9),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}

/*
 * `postern queue list|show|flush|delete|hold|release|bounce`: look at and
 * steer the mail queue, while the server runs or not (src/queue/queue_admin.c
 * says how a change reaches a running server without racing a delivery).
 */
#include "cli/cli_common.h"
#include "lib/config.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "queue/queue.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* How long a change waits for the running server to apply it. */
#define QUEUE_CLI_WAIT_MS 30000
/* At most this much of a message's header is shown. */
#define QUEUE_SHOW_HEADER_MAX (64 * 1024)

/* "45s", "12m", "3h5m", "2d4h" */
static void duration(int64_t s, char *buf, size_t size)
{
	if (s < 0)
		s = 0;
	if (s < 60)
		snprintf(buf, size, "%llds", (long long)s);
	else if (s < 3600)
		snprintf(buf, size, "%lldm", (long long)(s / 60));
	else if (s < 86400)
		snprintf(buf, size, "%lldh%lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
	else
		snprintf(buf, size, "%lldd%lldh", (long long)(s / 86400),
			 (long long)(s % 86400 / 3600));
}

static void iso_time(int64_t t, char *buf, size_t size)
{
	struct tm tm;
	time_t tt = (time_t)t;
	gmtime_r(&tt, &tm);
	strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/*
 * The SMTP reply code ("451") and enhanced status ("4.3.0") at the start of
 * a recorded error ("451 4.3.0 text", or "4.4.1 connect to ..." for our
 * own), and the text after them.
 */
static const char *error_parts(const char *e, int *code_r, char status[16])
{
	*code_r = 0;
	status[0] = '\0';
	if (e == NULL)
		return NULL;
	const char *p = e;
	if (p[0] >= '2' && p[0] <= '5' && p[1] >= '0' && p[1] <= '9' && p[2] >= '0' &&
	    p[2] <= '9' && (p[3] == ' ' || p[3] == '-' || p[3] == '\0')) {
		*code_r = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
		p += p[3] != '\0' ? 4 : 3;
	}
	unsigned a, b, c;
	int used = 0;
	if (sscanf(p, "%1u.%3u.%3u%n", &a, &b, &c, &used) == 3 && (a == 2 || a == 4 || a == 5) &&
	    (p[used] == ' ' || p[used] == '\0')) {
		snprintf(status, 16, "%u.%u.%u", a, b, c);
		p += used;
		while (*p == ' ')
			p++;
	}
	return p;
}

static bool rcpt_pending(const struct queue_info_rcpt *r)
{
	return strcmp(r->state, "delivered") != 0;
}

static json_t *json_str(const char *s)
{
	return s != NULL ? json_string(s) : json_null();
}

static json_t *info_json(const struct queue_info *m, int64_t now, bool all_rcpts)
{
	char when[32];
	iso_time(m->received, when, sizeof(when));
	json_t *rcpts = json_array();
	for (size_t i = 0; i < m->nrcpts; i++) {
		const struct queue_info_rcpt *r = &m->rcpts[i];
		if (!all_rcpts && !rcpt_pending(r))
			continue;
		int code;
		char status[16];
		const char *text = error_parts(r->last_error, &code, status);
		json_t *o = json_object();
		json_object_set_new(o, "address", json_string(r->address));
		json_object_set_new(o, "orig_rcpt", json_str(r->orig_rcpt));
		json_object_set_new(o, "state", json_string(r->state));
		json_object_set_new(o, "remote", json_boolean(r->external));
		json_object_set_new(o, "attempts", json_integer(r->attempts));
		bool waiting = strcmp(r->state, "deferred") == 0;
		json_object_set_new(o, "next_attempt",
				    waiting && !m->held ? json_integer(r->next_attempt) : json_null());
		json_object_set_new(o, "next_attempt_in",
				    waiting && !m->held
					    ? json_integer(r->next_attempt > now ? r->next_attempt - now
										 : 0)
					    : json_null());
		json_object_set_new(o, "last_error", json_str(r->last_error));
		json_object_set_new(o, "last_error_code", code != 0 ? json_integer(code) : json_null());
		json_object_set_new(o, "last_error_status",
				    status[0] != '\0' ? json_string(status) : json_null());
		json_object_set_new(o, "last_error_text", json_str(text));
		json_array_append_new(rcpts, o);
	}
	json_t *o = json_object();
	json_object_set_new(o, "id", json_string(m->id));
	json_object_set_new(o, "sender", json_string(m->sender));
	json_object_set_new(o, "received", json_integer(m->received));
	json_object_set_new(o, "received_utc", json_string(when));
	json_object_set_new(o, "age", json_integer(now > m->received ? now - m->received : 0));
	json_object_set_new(o, "size", json_integer((json_int_t)m->size));
	json_object_set_new(o, "held", json_boolean(m->held));
	json_object_set_new(o, "delay_notice_sent", json_boolean(m->warned));
	json_object_set_new(o, "protocol", json_str(m->protocol));
	json_object_set_new(o, "client_ip", json_str(m->client_ip));
	json_object_set_new(o, "auth_user", json_str(m->auth_user));
	json_object_set_new(o, "recipients", rcpts);
	return o;
}

static void print_rcpt(const struct queue_info *m, const struct queue_info_rcpt *r, int64_t now)
{
	char next[64] = "";
	if (strcmp(r->state, "deferred") == 0) {
		if (m->held) {
			snprintf(next, sizeof(next), "  on hold");
		} else {
			char d[24];
			duration(r->next_attempt - now, d, sizeof(d));
			snprintf(next, sizeof(next), "  next attempt in %s", d);
		}
	}
	printf("    %s  %s%s  attempts=%d%s\n", r->address, r->state, r->external ? " (remote)" : "",
	       r->attempts, next);
	if (r->orig_rcpt != NULL)
		printf("        (expanded from %s)\n", r->orig_rcpt);
	if (r->last_error != NULL && strcmp(r->last_error, "awaiting outbound delivery") != 0)
		printf("        %s\n", r->last_error);
}

static void print_message(const struct queue_info *m, int64_t now, bool all_rcpts)
{
	char age[24], when[32];
	duration(now - m->received, age, sizeof(age));
	iso_time(m->received, when, sizeof(when));
	printf("%-16s %s %7llu  %s (%s ago)  <%s>\n", m->id, m->held ? "HELD" : "    ",
	       (unsigned long long)m->size, when, age, m->sender);
	for (size_t i = 0; i < m->nrcpts; i++)
		if (all_rcpts || rcpt_pending(&m->rcpts[i]))
			print_rcpt(m, &m->rcpts[i], now);
}

static struct config *load(struct cli *cli)
{
	return cli_config(cli);
}

static int run_list(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	bool json = false;
	const struct cli_opt opts[] = {{"--json", &json, NULL}, {0}};
	const char *pos[1];
	int npos, ret;
	if (!cli_parse(cli, cmd, argc, argv, opts, pos, 0, 0, &npos, &ret))
		return ret;
	struct config *cfg = load(cli);
	if (cfg == NULL)
		return CLI_EXIT_FAIL;
	struct queue_info *list = NULL;
	size_t n = 0;
	char *error = NULL;
	if (queue_info_list(cfg->data_dir, NULL, &list, &n, &error) < 0) {
		cli_error("%s", error);
		free(error);
		return CLI_EXIT_FAIL;
	}
	int64_t now = (int64_t)time(NULL);
	if (json) {
		json_t *arr = json_array();
		for (size_t i = 0; i < n; i++)
			json_array_append_new(arr, info_json(&list[i], now, false));
		json_dumpf(arr, stdout, JSON_INDENT(2));
		printf("\n");
		json_decref(arr);
	} else {
		uint64_t total = 0;
		size_t held = 0;
		for (size_t i = 0; i < n; i++) {
			print_message(&list[i], now, false);
			total += list[i].size;
			held += list[i].held;
		}
		if (n == 0)
			printf("the queue is empty\n");
		else
			printf("-- %zu message(s), %llu octets, %zu on hold\n", n,
			       (unsigned long long)total, held);
	}
	queue_info_free(&list, n);
	return CLI_EXIT_OK;
}

/* The header of the spool file, with CRLF turned into LF. */
static void print_header(const char *data_dir, const char *id)
{
	char *path = xasprintf("%s/spool/%s", data_dir, id);
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	free(path);
	if (fd < 0) {
		printf("(spool file unreadable: %s)\n", strerror(errno));
		return;
	}
	char *buf = xmalloc(QUEUE_SHOW_HEADER_MAX + 1);
	size_t len = 0;
	while (len < QUEUE_SHOW_HEADER_MAX) {
		ssize_t r = read(fd, buf + len, QUEUE_SHOW_HEADER_MAX - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	buf[len] = '\0';
	char *end = strstr(buf, "\r\n\r\n");
	char *end2 = strstr(buf, "\n\n");
	if (end == NULL || (end2 != NULL && end2 < end))
		end = end2;
	size_t hlen = end != NULL ? (size_t)(end - buf) : len;
	for (size_t i = 0; i < hlen; i++) {
		unsigned char c = (unsigned char)buf[i];
		if (c == '\r' && i + 1 < hlen && buf[i + 1] == '\n')
			continue;
		/* the terminal gets no control characters from a message */
		putchar(c == '\n' || c == '\t' || c >= 0x20 ? c : '?');
	}
	if (end == NULL && len >= QUEUE_SHOW_HEADER_MAX)
		printf("\n(header longer than %d octets, cut)", QUEUE_SHOW_HEADER_MAX);
	printf("\n");
	free(buf);
}

static int run_show(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	bool json = false;
	const struct cli_opt opts[] = {{"--json", &json, NULL}, {0}};
	const char *pos[1];
	int npos, ret;
	if (!cli_parse(cli, cmd, argc, argv, opts, pos, 1, 1, &npos, &ret))
		return ret;
	struct config *cfg = load(cli);
	if (cfg == NULL)
		return CLI_EXIT_FAIL;
	struct queue_info *list = NULL;
	size_t n = 0;
	char *error = NULL;
	if (queue_info_list(cfg->data_dir, pos[0], &list, &n, &error) < 0) {
		cli_error("%s", error);
		free(error);
		return CLI_EXIT_FAIL;
	}
	if (n == 0) {
		cli_error("no such message in the queue: %s", pos[0]);
		return CLI_EXIT_FAIL;
	}
	int64_t now = (int64_t)time(NULL);
	if (json) {
		json_t *o = info_json(&list[0], now, true);
		json_dumpf(o, stdout, JSON_INDENT(2));
		printf("\n");
		json_decref(o);
	} else {
		const struct queue_info *m = &list[0];
		print_message(m, now, true);
		printf("  protocol %s from %s%s%s\n", m->protocol ? m->protocol : "?",
		       m->client_ip ? m->client_ip : "?", m->auth_user ? ", authenticated as " : "",
		       m->auth_user ? m->auth_user : "");
		if (m->warned)
			printf("  a delay notice was sent\n");
		printf("\n");
		print_header(cfg->data_dir, m->id);
	}
	queue_info_free(&list, n);
	return CLI_EXIT_OK;
}

/* After the CLI changed the queue itself as root: the server's user must own what it made. */
static void give_back(struct cli *cli, const char *data_dir)
{
	static const char *const files[] = {"queue.db", "queue.db-wal", "queue.db-shm",
					    "queue.lock"};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		char *p = xasprintf("%s/%s", data_dir, files[i]);
		cli_chown(cli, p, false);
		free(p);
	}
	char *spool = xasprintf("%s/spool", data_dir);
	cli_chown(cli, spool, true);
	free(spool);
}

static int change(struct cli *cli, enum queue_admin_action action, const char *id)
{
	struct config *cfg = load(cli);
	if (cfg == NULL)
		return CLI_EXIT_FAIL;
	/* the outcome is printed below; the queue's event lines are for the server's log */
	log_set_level(LOG_WARN);
	char *result = NULL;
	int rc = queue_admin_request(cfg->data_dir, cfg->hostname, action, id, QUEUE_CLI_WAIT_MS,
				     &result);
	give_back(cli, cfg->data_dir);
	if (rc < 0) {
		cli_error("%s", result != NULL ? result : "failed");
		free(result);
		return CLI_EXIT_FAIL;
	}
	if (rc == 0) {
		cli_error("%s%s%s", id != NULL ? id : "", id != NULL ? ": " : "", result);
		free(result);
		return CLI_EXIT_FAIL;
	}
	printf("%s\n", result);
	free(result);
	return CLI_EXIT_OK;
}

static int run_one(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv,
		   enum queue_admin_action action)
{
	const char *pos[1];
	int npos, ret;
	if (!cli_parse(cli, cmd, argc, argv, NULL, pos, 1, 1, &npos, &ret))
		return ret;
	return change(cli, action, pos[0]);
}

static int run_flush(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	const char *pos[1];
	int npos, ret;
	if (!cli_parse(cli, cmd, argc, argv, NULL, pos, 0, 1, &npos, &ret))
		return ret;
	return change(cli, QUEUE_ADMIN_FLUSH, npos > 0 ? pos[0] : NULL);
}

static int run_delete(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	bool all = false;
	const struct cli_opt opts[] = {{"--all", &all, NULL}, {0}};
	const char *pos[1];
	int npos, ret;
	if (!cli_parse(cli, cmd, argc, argv, opts, pos, 0, 1, &npos, &ret))
		return ret;
	if (all == (npos > 0)) {
		cli_error("queue delete needs a queue id or --all (not both)");
		cli_usage(stderr, cmd);
		return CLI_EXIT_USAGE;
	}
	return change(cli, QUEUE_ADMIN_DELETE, all ? NULL : pos[0]);
}

static int run_hold(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	return run_one(cli, cmd, argc, argv, QUEUE_ADMIN_HOLD);
}

static int run_release(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	return run_one(cli, cmd, argc, argv, QUEUE_ADMIN_RELEASE);
}

static int run_bounce(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	return run_one(cli, cmd, argc, argv, QUEUE_ADMIN_BOUNCE);
}

const struct cli_cmd cmd_queue_cmds[] = {
	{"queue", "list", "[--json]",
	 "List the queued messages: age, size, sender, recipients with their state, next attempt"
	 " and last error",
	 run_list},
	{"queue", "show", "[--json] ID", "Show one message: its header and every recipient's status",
	 run_show},
	{"queue", "flush", "[ID]", "Try the deferred recipients (of one message, or all) now",
	 run_flush},
	{"queue", "delete", "ID|--all", "Remove messages from the queue, without notifying anyone",
	 run_delete},
	{"queue", "hold", "ID", "Make no more delivery attempts for a message until it is released",
	 run_hold},
	{"queue", "release", "ID", "Release a held message and try it now", run_release},
	{"queue", "bounce", "ID",
	 "Return a message to its sender now with a DSN (5.0.0) for every undelivered recipient",
	 run_bounce},
	{0},
};

#include "lib/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static _Atomic int cur_level = LOG_INFO;
static _Atomic int file_fd = -1;
static _Atomic int to_stderr = 1;

static const char *const level_names[] = {"debug", "info", "warn", "error", "fatal"};

void log_set_level(enum log_level level)
{
	cur_level = level;
}

enum log_level log_get_level(void)
{
	return (enum log_level)cur_level;
}

int log_level_parse(const char *s)
{
	for (int i = 0; i < LOG_FATAL; i++)
		if (strcmp(s, level_names[i]) == 0)
			return i;
	return -1;
}

int log_open_file(const char *path)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		return -1;
	int old = atomic_exchange(&file_fd, fd);
	if (old >= 0)
		close(old);
	return 0;
}

void log_close_file(void)
{
	int old = atomic_exchange(&file_fd, -1);
	if (old >= 0)
		close(old);
}

void log_set_stderr(int enabled)
{
	to_stderr = enabled;
}

/* log_hold(): this thread's lines waiting for log_flush() (allocated while any wait) */
static _Thread_local bool holding;
static _Thread_local char *held;
static _Thread_local size_t held_len, held_cap;
/* log_defer(): called when this thread's first line is held */
static _Thread_local void (*defer_wake)(void *);
static _Thread_local void *defer_arg;

#define LOG_HELD_MAX (64 * 1024)

static void write_sinks(const char *buf, size_t len)
{
	if (to_stderr && write(STDERR_FILENO, buf, len) < 0) {
		/* nothing sensible to do */
	}
	int fd = file_fd;
	if (fd >= 0 && write(fd, buf, len) < 0) {
		/* nothing sensible to do */
	}
}

void log_hold(void)
{
	holding = true;
}

void log_defer(void (*wake)(void *), void *arg)
{
	if (wake == NULL)
		log_flush();
	defer_wake = wake;
	defer_arg = arg;
}

void log_flush(void)
{
	holding = false;
	if (held == NULL)
		return;
	int saved = errno;
	write_sinks(held, held_len);
	errno = saved;
	free(held);
	held = NULL;
	held_len = held_cap = 0;
}

/* Append a line to the held ones; false if it must be written now. */
static bool hold_line(const char *line, size_t len)
{
	if (held_len + len > LOG_HELD_MAX) {
		bool was = holding;
		log_flush();
		holding = was;
	}
	if (held_len + len > held_cap) {
		size_t cap = held_cap == 0 ? 8192 : held_cap * 2;
		while (cap < held_len + len)
			cap *= 2;
		char *p = realloc(held, cap);
		if (p == NULL)
			return false;
		held = p;
		held_cap = cap;
	}
	memcpy(held + held_len, line, len);
	held_len += len;
	return true;
}

void log_vwrite(enum log_level level, const char *fmt, va_list ap)
{
	if ((int)level < cur_level)
		return;
	char line[4096];
	struct timeval tv;
	gettimeofday(&tv, NULL);
	/*
	 * "YYYY-MM-DDTHH:MM:SS" is formatted once per second per thread (gmtime_r
	 * and a seven-field snprintf were a third of the cost of a log line);
	 * the milliseconds and the level are put in by hand.
	 */
	static _Thread_local time_t stamp_sec = -1;
	static _Thread_local char stamp[32];
	static _Thread_local size_t stamp_len;
	if (tv.tv_sec != stamp_sec) {
		struct tm tm;
		gmtime_r(&tv.tv_sec, &tm);
		int k = snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d",
				 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
				 tm.tm_min, tm.tm_sec);
		stamp_len = k > 0 && (size_t)k < sizeof(stamp) ? (size_t)k : 0;
		stamp_sec = tv.tv_sec;
	}
	memcpy(line, stamp, stamp_len);
	int n = (int)stamp_len;
	int ms = (int)(tv.tv_usec / 1000);
	line[n++] = '.';
	line[n++] = (char)('0' + ms / 100);
	line[n++] = (char)('0' + ms / 10 % 10);
	line[n++] = (char)('0' + ms % 10);
	line[n++] = 'Z';
	line[n++] = ' ';
	size_t ll = strlen(level_names[level]);
	memcpy(line + n, level_names[level], ll);
	n += (int)ll;
	line[n++] = ' ';
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	if (m < 0)
		m = 0;
	size_t len = (size_t)n + (size_t)m;
	if (len > sizeof(line) - 5) {
		/* Cut long lines visibly rather than silently. */
		len = sizeof(line) - 5;
		memcpy(line + len, "...", 3);
		len += 3;
	}
	line[len++] = '\n';
	int saved = errno;
	if ((holding || defer_wake != NULL) && level < LOG_FATAL) {
		bool first = held_len == 0;
		if (hold_line(line, len)) {
			if (first && !holding && defer_wake != NULL)
				defer_wake(defer_arg);
			errno = saved;
			return;
		}
	}
	if (held != NULL) {
		/* a fatal line, or no memory: what is held goes first, in order */
		bool was = holding;
		log_flush();
		holding = was;
	}
	write_sinks(line, len);
	errno = saved;
}

void log_write(enum log_level level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vwrite(level, fmt, ap);
	va_end(ap);
}

const char *log_quote(char *buf, size_t bufsize, const char *s, size_t max)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0, i;
	int need_quotes = (s == NULL || *s == '\0');
	if (s == NULL)
		s = "";
	for (i = 0; s[i] != '\0' && i < max; i++)
		if (s[i] == ' ' || s[i] == '=' || s[i] == '"')
			need_quotes = 1;
	if (need_quotes)
		buf[o++] = '"';
	for (i = 0; s[i] != '\0'; i++) {
		unsigned char c = (unsigned char)s[i];
		if (o + 8 >= bufsize || i >= max) {
			memcpy(buf + o, "...", 3);
			o += 3;
			break;
		}
		if (c < 0x20 || c >= 0x7f) {
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = hex[c >> 4];
			buf[o++] = hex[c & 15];
		} else if (c == '"' || c == '\\') {
			buf[o++] = '\\';
			buf[o++] = (char)c;
		} else {
			buf[o++] = (char)c;
		}
	}
	if (need_quotes)
		buf[o++] = '"';
	buf[o] = '\0';
	return buf;
}

/*
 * Structured logging: one line per event, `key=value` pairs, written with a
 * single write(2) so lines from several threads never interleave. Lines go
 * to stderr and, once log_open_file() was called, to a file as well.
 *
 * Convention: the message starts with `event=NAME`, followed by the keys of
 * the event; a message that belongs to a queued mail carries `queue_id=ID`.
 * Values that may contain spaces or come from a peer go through log_quote().
 */
#ifndef POSTERN_LOG_H
#define POSTERN_LOG_H

#include <stdarg.h>
#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_FATAL };

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parse "debug|info|warn|error"; returns -1 if unknown. */
int log_level_parse(const char *s);
/* Also append log lines to `path` (created 0640). Returns -1 with errno. */
int log_open_file(const char *path);
void log_close_file(void);
/* Silence stderr output (the file, if open, still gets every line). */
void log_set_stderr(int enabled);

/*
 * Hold this thread's lines (below LOG_FATAL) in memory until log_flush(),
 * which writes them with one write() per sink instead of one per line. For
 * a thread that logs a batch of lines at once (the queue's commit thread);
 * a held line is lost if the process dies before the flush, so flush
 * before anything the lines describe becomes visible (the 250).
 */
void log_hold(void);
void log_flush(void);
/*
 * Hold this thread's lines for good, and call wake(arg) whenever the first
 * line is held after a flush: an event loop thread has wake() schedule a
 * log_flush() at the end of its current round of callbacks, so the lines of
 * every session served in that round go out in one write() per sink, before
 * the loop next waits (and so before any reply queued in the round is sent).
 * log_defer(NULL, NULL) writes what is held and ends it.
 */
void log_defer(void (*wake)(void *), void *arg);
void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vwrite(enum log_level level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

#define log_debug(...)                                                                             \
	do {                                                                                       \
		if (log_get_level() <= LOG_DEBUG)                                                  \
			log_write(LOG_DEBUG, __VA_ARGS__);                                         \
	} while (0)
#define log_info(...) log_write(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

/*
 * Make `s` safe as a log value: control characters and non-ASCII bytes are
 * escaped as \xNN, quotes and backslashes escaped, the result wrapped in
 * double quotes when it has spaces or is empty, and cut at `max` input bytes
 * with a trailing "...". Writes into buf (size >= 16) and returns it.
 */
const char *log_quote(char *buf, size_t bufsize, const char *s, size_t max);

#endif

/*
 * Counters keyed by short strings (client IPs, logins), kept on the event
 * loop thread only: concurrent connections per key, and events per key in
 * a fixed time window (messages per IP per minute, failed logins). Entries
 * that count nothing any more are pruned as the table grows, so a flood of
 * distinct IPs costs bounded memory per live entry.
 */
#ifndef POSTERN_SMTP_RATELIMIT_H
#define POSTERN_SMTP_RATELIMIT_H

#include <time.h>

struct ratelimit;

struct ratelimit *ratelimit_new(void);
void ratelimit_free(struct ratelimit **rl);

/* Add `delta` (+1/-1) to the concurrent count of `key`; returns the new count. */
unsigned ratelimit_active(struct ratelimit *rl, const char *key, int delta);

/* Events recorded for `key` in the current window of `window` seconds. */
unsigned ratelimit_count(struct ratelimit *rl, const char *key, time_t now, unsigned window);
/* Record one event for `key`; returns the count in the window including it. */
unsigned ratelimit_hit(struct ratelimit *rl, const char *key, time_t now, unsigned window);

#endif

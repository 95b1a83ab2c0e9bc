/*
 * Worker threads for everything that may block: SQLite, fsync, password
 * hashing, file delivery. The event loop never blocks on these.
 *
 * worker_submit() queues `work(arg)` for a worker thread; when it has run,
 * `done(arg)` is called on the event-loop thread (if done is not NULL).
 * Jobs run in no particular order across threads.
 */
#ifndef POSTERN_WORKER_H
#define POSTERN_WORKER_H

struct event_base;
struct worker_pool;

typedef void worker_fn(void *arg);

struct worker_pool *worker_pool_new(struct event_base *base, unsigned threads);
/* Wait for queued jobs, run their done callbacks, stop the threads. */
void worker_pool_free(struct worker_pool **pool);
void worker_submit(struct worker_pool *pool, worker_fn *work, worker_fn *done, void *arg);
/*
 * Called by every worker thread of the process after each job (set once,
 * before the first pool starts): gives back what the job's thread took for
 * it from a pool shared between threads.
 */
void worker_set_after_job(void (*fn)(void));
/* Jobs queued or running. */
unsigned worker_pool_pending(struct worker_pool *pool);

#endif

#include "lib/worker.h"
#include "lib/xalloc.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct job {
	struct job *next;
	worker_fn *work, *done;
	void *arg;
};

/*
 * Two locks, each held for a few instructions: `lock` for the jobs waiting to
 * run (and the condition idle workers sleep on), `done_lock` for the jobs run
 * and waiting for done() on the loop. No system call is made under either: a
 * worker is woken only when one sleeps, and the loop's eventfd is written
 * only when the done list goes from empty to not empty (the loop takes the
 * whole list at each wake-up).
 */
struct worker_pool {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct job *head, *tail; /* waiting to run */
	unsigned idle;           /* workers asleep on cond */
	bool stopping;
	pthread_mutex_t done_lock;
	struct job *done_head, *done_tail; /* ran, waiting for done() on the loop */
	atomic_uint pending;
	int efd;
	struct event *ev;
	pthread_t *threads;
	unsigned nthreads;
};

static void (*after_job)(void);

void worker_set_after_job(void (*fn)(void))
{
	after_job = fn;
}

static void *worker_main(void *p)
{
	struct worker_pool *pool = p;
	pthread_mutex_lock(&pool->lock);
	for (;;) {
		while (pool->head == NULL && !pool->stopping) {
			pool->idle++;
			pthread_cond_wait(&pool->cond, &pool->lock);
			pool->idle--;
		}
		if (pool->head == NULL)
			break;
		struct job *j = pool->head;
		pool->head = j->next;
		if (pool->head == NULL)
			pool->tail = NULL;
		pthread_mutex_unlock(&pool->lock);

		j->work(j->arg);
		if (after_job != NULL)
			after_job();

		j->next = NULL;
		pthread_mutex_lock(&pool->done_lock);
		bool was_empty = pool->done_head == NULL;
		if (pool->done_tail != NULL)
			pool->done_tail->next = j;
		else
			pool->done_head = j;
		pool->done_tail = j;
		pthread_mutex_unlock(&pool->done_lock);
		if (was_empty) {
			uint64_t one = 1;
			if (write(pool->efd, &one, sizeof(one)) < 0) {
				/* the counter cannot overflow in practice */
			}
		}
		pthread_mutex_lock(&pool->lock);
	}
	pthread_mutex_unlock(&pool->lock);
	return NULL;
}

static void run_done(struct worker_pool *pool)
{
	pthread_mutex_lock(&pool->done_lock);
	struct job *j = pool->done_head;
	pool->done_head = pool->done_tail = NULL;
	pthread_mutex_unlock(&pool->done_lock);
	while (j != NULL) {
		struct job *next = j->next;
		if (j->done != NULL)
			j->done(j->arg);
		atomic_fetch_sub(&pool->pending, 1);
		free(j);
		j = next;
	}
}

static void on_eventfd(evutil_socket_t fd, short what, void *p)
{
	uint64_t v;
	if (read(fd, &v, sizeof(v)) < 0) {
		/* spurious wakeup */
	}
	run_done(p);
}

struct worker_pool *worker_pool_new(struct event_base *base, unsigned threads)
{
	struct worker_pool *pool = xcalloc(1, sizeof(*pool));
	pthread_mutex_init(&pool->lock, NULL);
	pthread_cond_init(&pool->cond, NULL);
	pthread_mutex_init(&pool->done_lock, NULL);
	atomic_init(&pool->pending, 0);
	pool->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (pool->efd < 0)
		fatal("event=eventfd_failed");
	pool->ev = event_new(base, pool->efd, EV_READ | EV_PERSIST, on_eventfd, pool);
	event_add(pool->ev, NULL);
	pool->nthreads = threads ? threads : 1;
	pool->threads = xcalloc(pool->nthreads, sizeof(pthread_t));
	for (unsigned i = 0; i < pool->nthreads; i++) {
		if (pthread_create(&pool->threads[i], NULL, worker_main, pool) != 0)
			fatal("event=pthread_create_failed");
		pthread_setname_np(pool->threads[i], "worker"); /* top -H, perf */
	}
	return pool;
}

void worker_submit(struct worker_pool *pool, worker_fn *work, worker_fn *done, void *arg)
{
	struct job *j = xcalloc(1, sizeof(*j));
	j->work = work;
	j->done = done;
	j->arg = arg;
	atomic_fetch_add(&pool->pending, 1);
	pthread_mutex_lock(&pool->lock);
	if (pool->tail != NULL)
		pool->tail->next = j;
	else
		pool->head = j;
	pool->tail = j;
	/* a worker still busy takes it when done: wake one only if one sleeps */
	bool wake = pool->idle > 0;
	pthread_mutex_unlock(&pool->lock);
	if (wake)
		pthread_cond_signal(&pool->cond);
}

unsigned worker_pool_pending(struct worker_pool *pool)
{
	return atomic_load(&pool->pending);
}

void worker_pool_free(struct worker_pool **poolp)
{
	struct worker_pool *pool = *poolp;
	if (pool == NULL)
		return;
	pthread_mutex_lock(&pool->lock);
	pool->stopping = true;
	pthread_cond_broadcast(&pool->cond);
	pthread_mutex_unlock(&pool->lock);
	for (unsigned i = 0; i < pool->nthreads; i++)
		pthread_join(pool->threads[i], NULL);
	run_done(pool);
	event_free(pool->ev);
	close(pool->efd);
	pthread_mutex_destroy(&pool->lock);
	pthread_cond_destroy(&pool->cond);
	pthread_mutex_destroy(&pool->done_lock);
	free(pool->threads);
	free(pool);
	*poolp = NULL;
}

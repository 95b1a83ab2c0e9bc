#include "lib/worker.h"
#include "lib/xalloc.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct job {
	struct job *next;
	worker_fn *work, *done;
	void *arg;
};

struct worker_pool {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct job *head, *tail;    /* waiting to run */
	struct job *done_head, *done_tail; /* ran, waiting for done() on the loop */
	unsigned pending;
	bool stopping;
	int efd;
	struct event *ev;
	pthread_t *threads;
	unsigned nthreads;
};

static void *worker_main(void *p)
{
	struct worker_pool *pool = p;
	pthread_mutex_lock(&pool->lock);
	for (;;) {
		while (pool->head == NULL && !pool->stopping)
			pthread_cond_wait(&pool->cond, &pool->lock);
		if (pool->head == NULL)
			break;
		struct job *j = pool->head;
		pool->head = j->next;
		if (pool->head == NULL)
			pool->tail = NULL;
		pthread_mutex_unlock(&pool->lock);

		j->work(j->arg);

		pthread_mutex_lock(&pool->lock);
		j->next = NULL;
		if (pool->done_tail != NULL)
			pool->done_tail->next = j;
		else
			pool->done_head = j;
		pool->done_tail = j;
		uint64_t one = 1;
		if (write(pool->efd, &one, sizeof(one)) < 0) {
			/* the counter cannot overflow in practice */
		}
	}
	pthread_mutex_unlock(&pool->lock);
	return NULL;
}

static void run_done(struct worker_pool *pool)
{
	pthread_mutex_lock(&pool->lock);
	struct job *j = pool->done_head;
	pool->done_head = pool->done_tail = NULL;
	pthread_mutex_unlock(&pool->lock);
	while (j != NULL) {
		struct job *next = j->next;
		if (j->done != NULL)
			j->done(j->arg);
		pthread_mutex_lock(&pool->lock);
		pool->pending--;
		pthread_mutex_unlock(&pool->lock);
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
	pool->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (pool->efd < 0)
		fatal("event=eventfd_failed");
	pool->ev = event_new(base, pool->efd, EV_READ | EV_PERSIST, on_eventfd, pool);
	event_add(pool->ev, NULL);
	pool->nthreads = threads ? threads : 1;
	pool->threads = xcalloc(pool->nthreads, sizeof(pthread_t));
	for (unsigned i = 0; i < pool->nthreads; i++)
		if (pthread_create(&pool->threads[i], NULL, worker_main, pool) != 0)
			fatal("event=pthread_create_failed");
	return pool;
}

void worker_submit(struct worker_pool *pool, worker_fn *work, worker_fn *done, void *arg)
{
	struct job *j = xcalloc(1, sizeof(*j));
	j->work = work;
	j->done = done;
	j->arg = arg;
	pthread_mutex_lock(&pool->lock);
	if (pool->tail != NULL)
		pool->tail->next = j;
	else
		pool->head = j;
	pool->tail = j;
	pool->pending++;
	pthread_cond_signal(&pool->cond);
	pthread_mutex_unlock(&pool->lock);
}

unsigned worker_pool_pending(struct worker_pool *pool)
{
	pthread_mutex_lock(&pool->lock);
	unsigned n = pool->pending;
	pthread_mutex_unlock(&pool->lock);
	return n;
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
	free(pool->threads);
	free(pool);
	*poolp = NULL;
}

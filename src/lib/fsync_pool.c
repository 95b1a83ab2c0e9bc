/*
 * The fsync pool: persistent threads that flush descriptors side by side.
 *
 * A call queues one job (an array of descriptors with a claim cursor); idle
 * pool threads and the caller itself claim descriptors one at a time, so a
 * job never waits for a thread and a thread failing to start only costs
 * concurrency. The caller returns when every descriptor of its job is done.
 */
#include "lib/fsync_pool.h"
#include "lib/log.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

struct fsync_job {
	struct fsync_job *next;
	const int *fds;
	int *errors;
	size_t n;
	size_t claimed, finished;
	bool data_only;
	pthread_cond_t cond; /* finished == n */
};

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_cond = PTHREAD_COND_INITIALIZER; /* a job has unclaimed fds */
static struct fsync_job *jobs;                              /* with unclaimed fds */
static unsigned nthreads;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void atfork_prepare(void)
{
	pthread_mutex_lock(&pool_lock);
}

static void atfork_parent(void)
{
	pthread_mutex_unlock(&pool_lock);
}

static void atfork_child(void)
{
	/* the pool threads did not come along; the child starts its own */
	pthread_mutex_init(&pool_lock, NULL);
	pthread_cond_init(&pool_cond, NULL);
	jobs = NULL;
	nthreads = 0;
}

static void atfork_init(void)
{
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

static int sync_one(int fd, bool data_only)
{
	int r;
	do
		r = data_only ? fdatasync(fd) : fsync(fd);
	while (r < 0 && errno == EINTR);
	return r < 0 ? (errno != 0 ? errno : EIO) : 0;
}

/* Under pool_lock: claim the next descriptor of `job`; unlist the job when it has no more. */
static size_t claim(struct fsync_job *job)
{
	size_t i = job->claimed++;
	if (job->claimed == job->n) {
		for (struct fsync_job **p = &jobs; *p != NULL; p = &(*p)->next)
			if (*p == job) {
				*p = job->next;
				break;
			}
	}
	return i;
}

/* Under pool_lock; drops it while syncing. */
static void run_one(struct fsync_job *job)
{
	size_t i = claim(job);
	pthread_mutex_unlock(&pool_lock);
	int e = sync_one(job->fds[i], job->data_only);
	pthread_mutex_lock(&pool_lock);
	job->errors[i] = e;
	if (++job->finished == job->n)
		pthread_cond_signal(&job->cond);
}

static void *pool_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&pool_lock);
	for (;;) {
		while (jobs == NULL)
			pthread_cond_wait(&pool_cond, &pool_lock);
		run_one(jobs);
	}
	return NULL;
}

/* Under pool_lock. */
static void start_threads(void)
{
	if (nthreads > 0)
		return;
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old); /* signals stay with the other threads */
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	for (unsigned i = 0; i < FSYNC_POOL_THREADS; i++) {
		pthread_t t;
		if (pthread_create(&t, &attr, pool_main, NULL) != 0) {
			log_warn("event=fsync_pool_thread_failed started=%u", nthreads);
			break;
		}
		pthread_setname_np(t, "fsync");
		nthreads++;
	}
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

size_t fsync_all(const int *fds, size_t n, bool data_only, int *errors_r)
{
	return fsync_all_while(fds, n, data_only, errors_r, NULL, NULL);
}

size_t fsync_all_while(const int *fds, size_t n, bool data_only, int *errors_r,
		       void (*also)(void *arg), void *arg)
{
	size_t nfail = 0;
	if (n == 0 || (n == 1 && also == NULL)) {
		if (also != NULL)
			also(arg);
		for (size_t i = 0; i < n; i++)
			if ((errors_r[i] = sync_one(fds[i], data_only)) != 0)
				nfail++;
		return nfail;
	}
	pthread_once(&atfork_once, atfork_init);
	struct fsync_job job = {
		.fds = fds,
		.errors = errors_r,
		.n = n,
		.data_only = data_only,
	};
	pthread_cond_init(&job.cond, NULL);
	pthread_mutex_lock(&pool_lock);
	start_threads();
	struct fsync_job **tail = &jobs;
	while (*tail != NULL)
		tail = &(*tail)->next;
	*tail = &job;
	/* the caller takes a descriptor too, unless it is busy with also() first */
	size_t wake = also != NULL ? n : n - 1;
	if (wake >= nthreads)
		pthread_cond_broadcast(&pool_cond);
	else
		for (size_t i = 0; i < wake; i++)
			pthread_cond_signal(&pool_cond);
	if (also != NULL) {
		pthread_mutex_unlock(&pool_lock);
		also(arg);
		pthread_mutex_lock(&pool_lock);
	}
	/* the caller works too: the job finishes even with no pool thread at all */
	while (job.claimed < job.n)
		run_one(&job);
	while (job.finished < job.n)
		pthread_cond_wait(&job.cond, &pool_lock);
	pthread_mutex_unlock(&pool_lock);
	pthread_cond_destroy(&job.cond);
	for (size_t i = 0; i < n; i++)
		if (errors_r[i] != 0)
			nfail++;
	return nfail;
}

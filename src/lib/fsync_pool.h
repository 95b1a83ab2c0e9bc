/*
 * Flush many file descriptors to stable storage at once.
 *
 * One fsync costs a journal commit; a file system like ext4 folds
 * concurrent fsyncs into one commit, so n files flushed side by side cost
 * little more than one flushed alone. fsync_all() hands the descriptors to
 * a small set of persistent threads (at most FSYNC_POOL_THREADS, started on
 * first use) and works on them itself too, then waits until every one is
 * done. Callable from any thread, by several threads at once. Safe across
 * fork(): the child starts its own threads when it first needs them.
 */
#ifndef POSTERN_FSYNC_POOL_H
#define POSTERN_FSYNC_POOL_H

#include <stdbool.h>
#include <stddef.h>

#define FSYNC_POOL_THREADS 8

/*
 * fdatasync (data_only) or fsync every fds[i]. errors_r[i] gets 0 or the
 * errno of that descriptor's failure. Returns the number of failures.
 */
size_t fsync_all(const int *fds, size_t n, bool data_only, int *errors_r);

/*
 * fsync_all(), except that the calling thread first runs also(arg) while
 * the pool threads flush, then helps with what is left and waits. Lets a
 * database commit overlap the flushes of the files it refers to; the
 * caller must not treat either as durable before this returns.
 */
size_t fsync_all_while(const int *fds, size_t n, bool data_only, int *errors_r,
		       void (*also)(void *arg), void *arg);

#endif

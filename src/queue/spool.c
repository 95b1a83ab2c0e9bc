/*
 * Queue ids and the message being received (struct spool_msg).
 *
 * A queue id is 16 characters of Crockford base32 over 80 bits: 52 bits of
 * microseconds since the epoch, 22 bits of the process id and a 6-bit
 * counter. Within a process a logical clock keeps ids strictly increasing
 * (the counter overflowing moves the clock one microsecond ahead); two
 * processes differ in their pid bits (Linux pids fit in 22 bits). The
 * alphabet is in ASCII order, so ids sort by time.
 */
#include "lib/xalloc.h"
#include "lib/fileio.h"
#include "queue/queue-private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static void base32_40(uint64_t v, char *out)
{
	static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
	for (int i = 7; i >= 0; i--) {
		out[i] = alphabet[v & 31];
		v >>= 5;
	}
}

/* getpid() is a system call each time (glibc caches nothing): once per process */
static pid_t cached_pid; /* under queue_id_new's lock; 0 after a fork */

static void pid_forget(void)
{
	cached_pid = 0;
}

static void pid_once_init(void)
{
	pthread_atfork(NULL, NULL, pid_forget);
}

void queue_id_new(char id[QUEUE_ID_MAX])
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static pthread_once_t pid_once = PTHREAD_ONCE_INIT;
	static uint64_t last_us;
	static unsigned counter;
	pthread_once(&pid_once, pid_once_init);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;

	pthread_mutex_lock(&lock);
	if (us > last_us) {
		last_us = us;
		counter = 0;
	} else if (++counter >= 64) {
		last_us++;
		counter = 0;
	}
	us = last_us;
	unsigned c = counter;
	if (cached_pid == 0)
		cached_pid = getpid();
	uint64_t pid = (uint64_t)cached_pid & 0x3fffff;
	pthread_mutex_unlock(&lock);

	uint64_t hi = (us >> 12) & 0xffffffffffULL;
	uint64_t lo = ((us & 0xfff) << 28) | (pid << 6) | c;
	base32_40(hi, id);
	base32_40(lo, id + 8);
	id[16] = '\0';
}

struct spool_msg *spool_msg_new(const char *data_dir, const char *queue_id)
{
	struct spool_msg *msg = xcalloc(1, sizeof(*msg));
	msg->data_dir = xstrdup(data_dir);
	size_t n = strlen(queue_id);
	if (n >= QUEUE_ID_MAX)
		fatal("event=bad_queue_id len=%zu", n);
	memcpy(msg->id, queue_id, n + 1);
	msg->fd = -1;
	return msg;
}

static void spool_fail(struct spool_msg *msg, int error)
{
	msg->error = error;
	if (msg->fd >= 0) {
		close(msg->fd);
		msg->fd = -1;
	}
	if (msg->tmp_path != NULL) {
		unlink(msg->tmp_path);
		xfree(&msg->tmp_path);
	}
	xfree(&msg->buf);
	msg->cap = 0;
	errno = error;
}

int spool_msg_write(struct spool_msg *msg, const void *data, size_t len)
{
	if (msg->error != 0) {
		errno = msg->error;
		return -1;
	}
	if (len == 0)
		return 0;
	size_t held = (size_t)(msg->size - msg->prefix_len); /* in buf (the prefix is apart) */
	if (msg->fd < 0 && held + len <= SPOOL_MEM_MAX) {
		msg->buf = xgrow(msg->buf, &msg->cap, held + len, 1);
		memcpy(msg->buf + held, data, len);
		msg->size += len;
		return 0;
	}
	if (msg->fd < 0) {
		/* spill what we have to spool/tmp/ID; from here on write through */
		msg->tmp_path = xasprintf("%s/spool/tmp/%s", msg->data_dir, msg->id);
		msg->fd = open(msg->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (msg->fd < 0) {
			int e = errno;
			xfree(&msg->tmp_path); /* not ours: O_EXCL failed or nothing created */
			spool_fail(msg, e);
			return -1;
		}
		if (write_full(msg->fd, msg->buf, held) < 0) {
			spool_fail(msg, errno);
			return -1;
		}
		xfree(&msg->buf);
		msg->cap = 0;
	}
	if (write_full(msg->fd, data, len) < 0) {
		spool_fail(msg, errno);
		return -1;
	}
	msg->size += len;
	return 0;
}

void spool_msg_prepend(struct spool_msg *msg, const void *data, size_t len)
{
	if (len == 0)
		return;
	char *p = xmalloc(len + msg->prefix_len);
	memcpy(p, data, len);
	if (msg->prefix_len > 0)
		memcpy(p + len, msg->prefix, msg->prefix_len);
	free(msg->prefix);
	msg->prefix = p;
	msg->prefix_len += len;
	msg->size += len;
}

/* a, then b, to fd with one writev() (more only after a short write). 0 / -1 errno. */
static int write_two(int fd, const char *a, size_t alen, const char *b, size_t blen)
{
	struct iovec iov[2] = {{.iov_base = (void *)a, .iov_len = alen},
			       {.iov_base = (void *)b, .iov_len = blen}};
	struct iovec *v = iov;
	int n = 2;
	while (n > 0) {
		if (v->iov_len == 0) {
			v++;
			n--;
			continue;
		}
		ssize_t w = writev(fd, v, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		size_t left = (size_t)w;
		while (n > 0 && left >= v->iov_len) {
			left -= v->iov_len;
			v++;
			n--;
		}
		if (n > 0) {
			v->iov_base = (char *)v->iov_base + left;
			v->iov_len -= left;
		}
	}
	return 0;
}

/* Spilled message with a prefix: the final file is the prefix, then the spilled file. */
static int place_with_prefix(struct spool_msg *msg, const char *final)
{
	int out = open(final, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out < 0)
		return -1;
	int in = open(msg->tmp_path, O_RDONLY | O_CLOEXEC);
	if (in < 0 || write_full(out, msg->prefix, msg->prefix_len) < 0)
		goto fail;
	char *buf = xmalloc(65536);
	for (;;) {
		ssize_t n = read(in, buf, 65536);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || write_full(out, buf, (size_t)n) < 0) {
			int e = n == 0 ? 0 : errno;
			free(buf);
			if (n == 0)
				break;
			errno = e;
			goto fail;
		}
	}
	close(in);
	return out;
fail:;
	int e = errno;
	if (in >= 0)
		close(in);
	close(out);
	unlink(final);
	errno = e;
	return -1;
}

uint64_t spool_msg_size(const struct spool_msg *msg)
{
	return msg->size;
}

const char *spool_msg_id(const struct spool_msg *msg)
{
	return msg->id;
}

void spool_msg_free(struct spool_msg **msgp)
{
	struct spool_msg *msg = *msgp;
	if (msg == NULL)
		return;
	if (msg->fd >= 0)
		close(msg->fd);
	if (msg->tmp_path != NULL)
		unlink(msg->tmp_path);
	free(msg->tmp_path);
	free(msg->buf);
	free(msg->prefix);
	free(msg->data_dir);
	free(msg);
	*msgp = NULL;
}

int spool_msg_place(struct spool_msg *msg, const char *spool_dir)
{
	if (msg->error != 0) {
		errno = msg->error;
		return -1;
	}
	char *final = xasprintf("%s/%s", spool_dir, msg->id);
	int fd = -1, e = 0;
	if (msg->fd >= 0 && msg->prefix_len > 0) {
		/* spilled, with header fields to put on top: one copy, here on the commit thread */
		fd = place_with_prefix(msg, final);
		if (fd < 0) {
			e = errno;
			spool_fail(msg, e);
			goto out;
		}
		close(msg->fd);
		msg->fd = -1;
		unlink(msg->tmp_path);
		free(msg->tmp_path);
		msg->tmp_path = final; /* removed by spool_msg_placed() on failure */
		final = NULL;
	} else if (msg->fd >= 0) {
		/*
		 * Spilled: move it to its final name now and flush it with the
		 * others. Until its row is committed a crash leaves an orphan,
		 * which recovery removes.
		 */
		if (rename(msg->tmp_path, final) < 0) {
			e = errno;
			spool_fail(msg, e);
			goto out;
		}
		free(msg->tmp_path);
		msg->tmp_path = final; /* removed by spool_msg_placed() on failure */
		final = NULL;
		fd = msg->fd;
		msg->fd = -1;
	} else {
		fd = open(final, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0) {
			e = errno;
			goto out;
		}
		if (write_two(fd, msg->prefix, msg->prefix_len, msg->buf,
			      (size_t)(msg->size - msg->prefix_len)) < 0) {
			e = errno;
			close(fd);
			fd = -1;
			unlink(final);
			goto out;
		}
		msg->tmp_path = final; /* removed by spool_msg_placed() on failure */
		final = NULL;
	}
out:
	free(final);
	if (e != 0)
		errno = e;
	return fd;
}

int spool_msg_placed(struct spool_msg *msg, int fd, int sync_error)
{
	int e = sync_error;
	if (close(fd) < 0 && e == 0)
		e = errno;
	if (e != 0) {
		unlink(msg->tmp_path);
		xfree(&msg->tmp_path);
		msg->error = e;
		errno = e;
		return -1;
	}
	xfree(&msg->tmp_path); /* it is the spool file now */
	/* msg->buf stays: queue_deliver_push_msg() may hand it to the delivery thread */
	return 0;
}

void envelope_free_fields(struct envelope *env)
{
	if (env == NULL)
		return;
	xfree(&env->sender);
	for (size_t i = 0; i < env->nrcpts; i++) {
		free(env->rcpts[i].address);
		free(env->rcpts[i].orcpt);
	}
	xfree(&env->rcpts);
	env->nrcpts = 0;
	xfree(&env->dsn_ret);
	xfree(&env->dsn_envid);
	xfree(&env->auth_user);
	xfree(&env->client_ip);
	xfree(&env->client_helo);
	xfree(&env->protocol);
}

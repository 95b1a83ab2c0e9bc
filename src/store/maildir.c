/*
 * Maildir++ mailboxes: DATA_DIR/mail/DOMAIN/LOCAL with cur/ new/ tmp/ and
 * the standard folders as .Name subdirectories, readable by Dovecot, mutt
 * and friends.
 *
 * File names follow the Maildir convention Dovecot uses:
 *   <when>.<unique>.<hostname>,S=<size>
 * where <unique> is the caller's delivery id (QUEUEID.N), so a redelivery
 * after a crash can be detected (maildir_has), and '/' and ':' in the
 * hostname are written as \057 and \072 as Dovecot does.
 *
 * Messages are stored with CRLF line endings exactly as received over SMTP.
 * Dovecot itself stores LF; we keep CRLF so the bytes on disk are the bytes
 * that were accepted, and ",S=" is then simply the file size (which equals
 * the RFC 822 size an IMAP server reports).
 *
 * Durability: the message is written to tmp/ (O_EXCL), fsync'd, renamed into
 * new/, and new/ is fsync'd before success is reported. Anything written
 * partially is removed on error. maildir_finish() does this for many
 * deliveries at once: their fsyncs run side by side on the fsync pool, and
 * a directory shared by several of them is fsync'd once.
 */
#include "store/maildir.h"
#include "lib/fileio.h"
#include "lib/fsync_pool.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "mail/mutf7.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

static const char *const std_folders[] = {"Drafts", "Sent", "Junk", "Trash", "Archive"};

/* maildir_set_folders(): the configured list, replacing std_folders when set */
static pthread_mutex_t folders_lock = PTHREAD_MUTEX_INITIALIZER;
static char **cfg_folders;
static size_t ncfg_folders;
static bool cfg_set;

void maildir_set_folders(const char *const *names, size_t n)
{
	pthread_mutex_lock(&folders_lock);
	for (size_t i = 0; i < ncfg_folders; i++)
		free(cfg_folders[i]);
	free(cfg_folders);
	cfg_folders = xcalloc(n + 1, sizeof(*cfg_folders));
	for (size_t i = 0; i < n; i++)
		cfg_folders[i] = xstrdup(names[i]);
	ncfg_folders = n;
	cfg_set = true;
	pthread_mutex_unlock(&folders_lock);
}

/* The standard folder names (UTF-8), allocated. */
static char **folders_get(size_t *n_r)
{
	pthread_mutex_lock(&folders_lock);
	size_t n = cfg_set ? ncfg_folders : ARRAY_SIZE(std_folders);
	char **v = xcalloc(n + 1, sizeof(*v));
	for (size_t i = 0; i < n; i++)
		v[i] = xstrdup(cfg_set ? cfg_folders[i] : std_folders[i]);
	pthread_mutex_unlock(&folders_lock);
	*n_r = n;
	return v;
}

/* ".A.B" in modified UTF-7 for folder "A/B" (as Dovecot stores names); NULL if not UTF-8. */
static char *folder_dir_name(const char *name)
{
	char *enc = mutf7_encode(name);
	if (enc == NULL)
		return NULL;
	for (char *p = enc; *p != '\0'; p++)
		if (*p == '/')
			*p = '.';
	char *d = xasprintf(".%s", enc);
	free(enc);
	return d;
}

char *maildir_path(const char *data_dir, const char *address)
{
	const char *at = strrchr(address, '@');
	if (at == NULL)
		return xasprintf("%s/mail/%s", data_dir, address);
	return xasprintf("%s/mail/%s/%.*s", data_dir, at + 1, (int)(at - address), address);
}

static int mkdir_ok(const char *path, mode_t mode)
{
	if (mkdir(path, mode) == 0 || errno == EEXIST)
		return 0;
	return -1;
}

/* mkdir -p for the parents of `path` (not `path` itself). */
static int mkdir_parents(const char *path, mode_t mode)
{
	char *p = xstrdup(path);
	int ret = 0;
	for (char *s = strchr(p + 1, '/'); s != NULL; s = strchr(s + 1, '/')) {
		*s = '\0';
		if (mkdir_ok(p, mode) < 0) {
			ret = -1;
			break;
		}
		*s = '/';
	}
	int saved = errno;
	free(p);
	errno = saved;
	return ret;
}

static int make_maildir_dirs(const char *dir)
{
	static const char *const sub[] = {"cur", "new", "tmp"};
	if (mkdir_ok(dir, 0700) < 0)
		return -1;
	for (size_t i = 0; i < ARRAY_SIZE(sub); i++) {
		char *p = xasprintf("%s/%s", dir, sub[i]);
		int r = mkdir_ok(p, 0700);
		int saved = errno;
		free(p);
		if (r < 0) {
			errno = saved;
			return -1;
		}
	}
	return 0;
}

static int write_file_if_missing(const char *path, const char *content)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return errno == EEXIST ? 0 : -1;
	size_t len = strlen(content), off = 0;
	while (off < len) {
		ssize_t n = write(fd, content + off, len - off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int saved = errno;
			close(fd);
			unlink(path);
			errno = saved;
			return -1;
		}
		off += (size_t)n;
	}
	return close(fd);
}

int maildir_create(const char *path)
{
	if (mkdir_parents(path, 0700) < 0 || make_maildir_dirs(path) < 0)
		return -1;
	size_t n;
	char **names = folders_get(&n);
	size_t subs_len = 1;
	for (size_t i = 0; i < n; i++)
		subs_len += strlen(names[i]) + 1;
	char *subs = xcalloc(subs_len, 1);
	int ret = 0;
	for (size_t i = 0; i < n && ret == 0; i++) {
		char *dn = folder_dir_name(names[i]);
		if (dn == NULL)
			continue; /* refused when the knob was read */
		char *f = xasprintf("%s/%s", path, dn);
		free(dn);
		int r = make_maildir_dirs(f);
		if (r == 0) {
			/* Maildir++: marks a folder (Dovecot, Courier) */
			char *mf = xasprintf("%s/maildirfolder", f);
			r = write_file_if_missing(mf, "");
			free(mf);
		}
		int saved = errno;
		free(f);
		if (r < 0) {
			errno = saved;
			ret = -1;
			break;
		}
		strcat(subs, names[i]);
		strcat(subs, "\n");
	}
	if (ret == 0) {
		/* one folder name per line, the format Dovecot and Courier read */
		char *sp = xasprintf("%s/subscriptions", path);
		ret = write_file_if_missing(sp, subs);
		int saved = errno;
		free(sp);
		errno = saved;
	}
	int saved = errno;
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(subs);
	errno = saved;
	return ret;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	if (flag == FTW_DP || flag == FTW_D)
		return rmdir(path) < 0 && errno != ENOENT ? -1 : 0;
	return unlink(path) < 0 && errno != ENOENT ? -1 : 0;
}

int maildir_remove(const char *path)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -1;
	return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static pthread_once_t host_once = PTHREAD_ONCE_INIT;
static char host_escaped[256 * 4 + 1];

static void host_init(void)
{
	char h[256];
	if (gethostname(h, sizeof(h) - 1) < 0)
		strcpy(h, "localhost");
	h[sizeof(h) - 1] = '\0';
	char *o = host_escaped;
	for (const char *p = h; *p != '\0'; p++) {
		if (*p == '/') {
			memcpy(o, "\\057", 4);
			o += 4;
		} else if (*p == ':') {
			memcpy(o, "\\072", 4);
			o += 4;
		} else {
			*o++ = *p;
		}
	}
	*o = '\0';
}

static const char *maildir_hostname(void)
{
	pthread_once(&host_once, host_init);
	return host_escaped;
}

static int copy_fd(int out, int in, uint64_t *copied_r)
{
	char buf[65536];
	off_t off = 0;
	for (;;) {
		ssize_t n = pread(in, buf, sizeof(buf), off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0)
			break;
		if (write_full(out, buf, (size_t)n) < 0)
			return -1;
		off += n;
	}
	*copied_r = (uint64_t)off;
	return 0;
}

/* "WORD.WORD" (one dot, as QUEUEID.N), so that it can be found again in a name. */
static bool unique_ok(const char *unique)
{
	const char *dot = strchr(unique, '.');
	if (dot == NULL || dot == unique || dot[1] == '\0' || strchr(dot + 1, '.') != NULL)
		return false;
	for (const char *p = unique; *p != '\0'; p++)
		if (*p == '/' || *p == ':' || *p == ',' || *p == '\\' || (unsigned char)*p < 0x21 ||
		    (unsigned char)*p >= 0x7f)
			return false;
	return true;
}

/* All of iov[0..n) to fd, resuming after short writes. 0 / -1 errno. */
static int writev_full(int fd, struct iovec *iov, int n)
{
	while (n > 0) {
		ssize_t w = writev(fd, iov, n > IOV_MAX ? IOV_MAX : n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		size_t left = (size_t)w;
		while (n > 0 && left >= iov->iov_len) {
			left -= iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (char *)iov->iov_base + left;
			iov->iov_len -= left;
		}
	}
	return 0;
}

/*
 * The file in tmp/, then the data: iov[0..niov) when fd < 0 (written with
 * one writev(), the bytes of the parts one after the other), else iov[0]
 * followed by the contents of fd from offset 0.
 */
static int write_parts(struct maildir_delivery *d, const char *path, const char *unique,
		       time_t when, const struct iovec *iov, int niov, int fd)
{
	memset(d, 0, sizeof(*d));
	d->fd = -1;
	if (!unique_ok(unique)) {
		d->error = errno = EINVAL;
		return -1;
	}
	char *base = xasprintf("%lld.%s.%s", (long long)when, unique, maildir_hostname());
	d->tmp = xasprintf("%s/tmp/%s", path, base);
	d->newdir = xasprintf("%s/new", path);

	int out = open(d->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out < 0 && errno == EEXIST) {
		/*
		 * The name is derived from `unique`: a file there is what a crash
		 * left of an earlier attempt at this very delivery. Start over.
		 */
		log_info("event=maildir_stale_tmp_removed unique=%s", unique);
		if (unlink(d->tmp) == 0)
			out = open(d->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	}
	if (out < 0) {
		d->error = errno;
		goto out;
	}
	struct iovec v[MAILDIR_IOV_MAX];
	uint64_t size = 0;
	int nv = 0;
	for (int i = 0; i < niov && i < (fd >= 0 ? 1 : MAILDIR_IOV_MAX); i++)
		if (iov[i].iov_len > 0) {
			v[nv++] = iov[i];
			size += iov[i].iov_len;
		}
	if (writev_full(out, v, nv) < 0)
		goto fail_tmp;
	if (fd >= 0) {
		uint64_t copied;
		if (copy_fd(out, fd, &copied) < 0)
			goto fail_tmp;
		size += copied;
	}
	d->fd = out;
	d->size = size;
	d->final = xasprintf("%s/%s,S=%llu", d->newdir, base, (unsigned long long)size);
	goto out;

fail_tmp:
	d->error = errno;
	close(out);
	unlink(d->tmp);
out:
	free(base);
	if (d->error != 0) {
		errno = d->error;
		return -1;
	}
	return 0;
}

int maildir_write(struct maildir_delivery *d, const char *path, const char *unique, time_t when,
		  const char *prefix, const void *data, size_t len, int fd)
{
	struct iovec iov[2] = {
	    {.iov_base = (void *)prefix, .iov_len = prefix != NULL ? strlen(prefix) : 0},
	    {.iov_base = (void *)data, .iov_len = data != NULL ? len : 0},
	};
	if (data == NULL && fd < 0) {
		memset(d, 0, sizeof(*d));
		d->fd = -1;
		d->error = errno = EBADF;
		return -1;
	}
	return write_parts(d, path, unique, when, iov, data != NULL ? 2 : 1,
			   data != NULL ? -1 : fd);
}

int maildir_writev(struct maildir_delivery *d, const char *path, const char *unique, time_t when,
		   const struct iovec *iov, int niov)
{
	if (niov < 0 || niov > MAILDIR_IOV_MAX) {
		memset(d, 0, sizeof(*d));
		d->fd = -1;
		d->error = errno = EINVAL;
		return -1;
	}
	return write_parts(d, path, unique, when, iov, niov, -1);
}

static void delivery_fail(struct maildir_delivery *d, int error, const char *remove)
{
	if (d->fd >= 0) {
		close(d->fd);
		d->fd = -1;
	}
	if (remove != NULL)
		unlink(remove);
	d->error = error != 0 ? error : EIO;
}

size_t maildir_finish(struct maildir_delivery *d, size_t n)
{
	int *fds = xcalloc(n + 1, sizeof(*fds));
	int *errs = xcalloc(n + 1, sizeof(*errs));
	size_t *which = xcalloc(n + 1, sizeof(*which));
	size_t nfds = 0, nfail = 0;

	/* 1. the files, side by side */
	for (size_t i = 0; i < n; i++)
		if (d[i].error == 0 && d[i].fd >= 0) {
			fds[nfds] = d[i].fd;
			which[nfds++] = i;
		} else if (d[i].error == 0) {
			d[i].error = EBADF; /* never written */
		}
	fsync_all(fds, nfds, false, errs);

	/* 2. into new/ */
	for (size_t k = 0; k < nfds; k++) {
		struct maildir_delivery *m = &d[which[k]];
		if (errs[k] != 0) {
			delivery_fail(m, errs[k], m->tmp);
			continue;
		}
		int r = close(m->fd);
		m->fd = -1;
		if (r < 0) {
			delivery_fail(m, errno, m->tmp);
			continue;
		}
		if (rename(m->tmp, m->final) < 0)
			delivery_fail(m, errno, m->tmp);
	}

	/* 3. each distinct new/ once, side by side */
	size_t ndirs = 0;
	char **dirs = xcalloc(n + 1, sizeof(*dirs));
	for (size_t i = 0; i < n; i++) {
		if (d[i].error != 0)
			continue;
		size_t j = 0;
		while (j < ndirs && strcmp(dirs[j], d[i].newdir) != 0)
			j++;
		if (j < ndirs)
			continue;
		dirs[ndirs] = d[i].newdir;
		fds[ndirs] = open(d[i].newdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		errs[ndirs] = fds[ndirs] < 0 ? errno : 0;
		ndirs++;
	}
	int *derrs = xcalloc(ndirs + 1, sizeof(*derrs));
	size_t nopen = 0;
	for (size_t j = 0; j < ndirs; j++)
		if (fds[j] >= 0) {
			fds[nopen] = fds[j];
			which[nopen++] = j;
		} else {
			derrs[j] = errs[j];
		}
	fsync_all(fds, nopen, false, errs);
	for (size_t k = 0; k < nopen; k++) {
		derrs[which[k]] = errs[k];
		close(fds[k]);
	}
	for (size_t i = 0; i < n; i++) {
		if (d[i].error != 0) {
			nfail++;
			continue;
		}
		size_t j = 0;
		while (strcmp(dirs[j], d[i].newdir) != 0)
			j++;
		if (derrs[j] != 0) {
			delivery_fail(&d[i], derrs[j], d[i].final);
			nfail++;
		}
	}
	free(derrs);
	free(dirs);
	free(which);
	free(errs);
	free(fds);
	return nfail;
}

void maildir_delivery_clear(struct maildir_delivery *d)
{
	if (d->fd >= 0) {
		close(d->fd);
		unlink(d->tmp);
	}
	xfree(&d->tmp);
	xfree(&d->newdir);
	xfree(&d->final);
	d->fd = -1;
}

int maildir_deliver(const char *path, const char *unique, time_t when, const char *prefix,
		    const void *data, size_t len, int fd, uint64_t *size_r)
{
	struct maildir_delivery d;
	if (maildir_write(&d, path, unique, when, prefix, data, len, fd) < 0) {
		maildir_delivery_clear(&d);
		errno = d.error;
		return -1;
	}
	maildir_finish(&d, 1);
	int e = d.error;
	if (e == 0)
		*size_r = d.size;
	maildir_delivery_clear(&d);
	errno = e;
	return e == 0 ? 0 : -1;
}

/*
 * Does directory entry `name` ("<when>.<id>.<n>.<host>,S=...[:2,...]") carry
 * the delivery id `unique` ("<id>.<n>")? Compared field by field, so a
 * hostname (which may contain dots) can never complete a shorter id.
 */
static bool name_matches(const char *name, const char *unique, size_t ulen)
{
	const char *p = name;
	while (*p >= '0' && *p <= '9')
		p++;
	if (p == name || *p != '.')
		return false;
	p++;
	const char *dot1 = strchr(p, '.');
	if (dot1 == NULL)
		return false;
	const char *end = strchr(dot1 + 1, '.');
	if (end == NULL)
		return false;
	return (size_t)(end - p) == ulen && memcmp(p, unique, ulen) == 0;
}

static int dir_has(const char *dir, const char *unique)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return errno == ENOENT ? 0 : -1;
	size_t ulen = strlen(unique);
	int found = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (name_matches(de->d_name, unique, ulen)) {
			found = 1;
			break;
		}
	}
	closedir(d);
	return found;
}

int maildir_has(const char *path, const char *unique)
{
	static const char *const sub[] = {"new", "cur"};
	for (size_t i = 0; i < ARRAY_SIZE(sub); i++) {
		char *dir = xasprintf("%s/%s", path, sub[i]);
		int r = dir_has(dir, unique);
		free(dir);
		if (r != 0)
			return r;
	}
	return 0;
}

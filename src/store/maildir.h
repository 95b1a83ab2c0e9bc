/*
 * Maildir++ mailboxes: DATA_DIR/mail/DOMAIN/LOCAL/ with cur/ new/ tmp/ and
 * subfolders as .Name directories (Drafts, Sent, Junk, Trash, Archive are
 * created with every account). The IMAP index (a later part) is built on
 * top of these files and can always be rebuilt from them.
 */
#ifndef POSTERN_MAILDIR_H
#define POSTERN_MAILDIR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Path of the account's Maildir root (allocated). */
char *maildir_path(const char *data_dir, const char *address);

/* Create the Maildir root and the standard folders (mode 0700). 0 / -1 errno. */
int maildir_create(const char *path);

/*
 * The standard folders maildir_create() makes from now on (UTF-8 names,
 * "/" as hierarchy separator; stored as .A.B in modified UTF-7), in place
 * of the built-in Drafts, Sent, Junk, Trash, Archive. Set from the
 * [mailbox] folders knob (mbox_folders_configure()). Any thread.
 */
void maildir_set_folders(const char *const *names, size_t n);
/* Remove the whole Maildir tree. 0 / -1 errno. */
int maildir_remove(const char *path);

/*
 * Deliver one message durably into the INBOX of the Maildir at `path`:
 * write `prefix` (headers added for this recipient, e.g. Return-Path and
 * Delivered-To) followed by the `len` bytes of `data` (or, if data is NULL,
 * the contents of file descriptor `fd` from offset 0) into tmp/, fsync it,
 * link it into new/ and fsync new/. The file name is derived from
 * `unique` (a string that identifies this delivery, of the form WORD.WORD
 * with exactly one dot, e.g. "QUEUEID.N"; else EINVAL), so
 * that a redelivery after a crash can be detected with maildir_has().
 * On success *size_r gets the stored size. 0 / -1 with errno (ENOSPC, EDQUOT...).
 */
int maildir_deliver(const char *path, const char *unique, time_t when, const char *prefix,
		    const void *data, size_t len, int fd, uint64_t *size_r);

/*
 * The same delivery in phases, so that a caller delivering many messages
 * pays for one round of concurrent fsyncs and one fsync per directory:
 *
 *   maildir_write()   writes the file into tmp/ (no fsync); on success the
 *                     delivery holds an open descriptor and two paths
 *   maildir_finish()  for an array of them: every file fsync'd side by side
 *                     (lib/fsync_pool), renamed into new/, and every distinct
 *                     new/ fsync'd once. A delivery with error == 0 after it
 *                     is durable (file and directory entry); a failed one
 *                     has error set to the errno and left nothing behind
 *                     (tmp/ file and new/ entry removed).
 *   maildir_delivery_clear()  frees the paths (and closes, if still open).
 *
 * maildir_deliver() is maildir_write() + maildir_finish() for one message.
 */
struct maildir_delivery {
	char *tmp;    /* PATH/tmp/NAME */
	char *newdir; /* PATH/new */
	char *final;  /* PATH/new/NAME,S=SIZE */
	int fd;       /* open on tmp until maildir_finish(), else -1 */
	uint64_t size;
	int error;
};

/* 0 / -1 errno (d->error set too; nothing left behind). Arguments as for maildir_deliver(). */
int maildir_write(struct maildir_delivery *d, const char *path, const char *unique, time_t when,
		  const char *prefix, const void *data, size_t len, int fd);
/*
 * maildir_write() of the parts iov[0..niov) one after the other (at most
 * MAILDIR_IOV_MAX), with a single writev(): a message held in pieces in
 * memory costs no copy and one system call.
 */
#define MAILDIR_IOV_MAX 8
struct iovec;
int maildir_writev(struct maildir_delivery *d, const char *path, const char *unique, time_t when,
		   const struct iovec *iov, int niov);
/* Deliveries with error != 0 on entry are skipped. Returns how many failed (in all). */
size_t maildir_finish(struct maildir_delivery *d, size_t n);
void maildir_delivery_clear(struct maildir_delivery *d);

/* 1 if a message delivered with `unique` exists in new/ or cur/, 0 if not, -1 error. */
int maildir_has(const char *path, const char *unique);

#endif

/*
 * The mailbox store that IMAP and POP3 read: an account's Maildir++ folders
 * (maildir.h) plus an index that makes SELECT, FETCH FLAGS, SEARCH and SORT
 * work without opening message files.
 *
 * Truth and cache:
 *   - the files are the truth for which messages exist and their flags
 *     (Maildir ":2,FLAGS" suffix; keywords as letters a-z mapped by the
 *     folder's "postern-keywords" file, as Dovecot does);
 *   - each folder's "postern-uidlist" file is the truth for UIDVALIDITY,
 *     UIDNEXT and the UID of each message (by file base name, the part
 *     before ":2,"), so UIDs survive the loss of the index;
 *   - the index (SQLite, DATA_DIR/index/ACCOUNT-ID.db, one per account)
 *     caches per message: UID, base name, flags, keywords, MODSEQ, size, INTERNALDATE,
 *     save date, ENVELOPE, BODYSTRUCTURE and the header values SORT and
 *     SEARCH use; and per folder HIGHESTMODSEQ and the expunged UIDs with
 *     their MODSEQ (for QRESYNC). Deleting an index file loses nothing but
 *     MODSEQs (rebuilt as 1) and the expunge history.
 *
 * Synchronisation with the files happens in mbox_sync() (and in every call
 * documented as syncing): messages that appeared in new/ or cur/ (local
 * delivery, other programs) get UIDs, vanished files are expunged, changed
 * flag suffixes are taken over. It is cheap when nothing changed (the
 * stored mtimes of new/ and cur/ are compared first). Every change made
 * through this API or found by a sync raises the folder's HIGHESTMODSEQ and
 * sets the MODSEQ of the messages concerned, then wakes the watchers of the
 * folder (mbox_watch), so IDLE sessions and other sessions see it.
 *
 * Folder names in this API are UTF-8 with "/" as hierarchy separator;
 * "INBOX" (any case) is the Maildir root. On disk a folder "A/B" is the
 * Maildir++ directory ".A.B", names stored in modified UTF-7 as Dovecot
 * does; a name containing "." or a control character is refused.
 *
 * Threads: every call may block on disk and must run on a worker thread,
 * except mbox_watch/mbox_unwatch (any thread). A struct mbox_account and
 * the struct mbox objects opened from it are used by one thread at a time
 * (the IMAP session runs one command at a time); different accounts and
 * different sessions of the same account may run in parallel on different
 * threads: a thread uses one SQLite connection per account's index file
 * at a time, taken from a pool, and changes to one folder are serialised by
 * the folder lock and the index's write transaction.
 *
 * Errors: functions returning int give 0 on success, -1 with *error_r set
 * to an allocated human-readable text and errno set to one of:
 *   ENOENT  no such folder / message
 *   EEXIST  folder exists
 *   EINVAL  bad name or argument
 *   EDQUOT  the account's quota would be exceeded
 *   ENOSPC  disk full
 *   EPERM   operation not allowed (delete INBOX, ...)
 *   EIO     anything else (database, file system)
 */
#ifndef POSTERN_MAILBOX_H
#define POSTERN_MAILBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct mbox_store;
struct mbox_account;
struct mbox;

/* ---- the store (one per process) ---- */

/*
 * `data_dir` holds the index files (index/, made here); `folders` is the
 * [mailbox] folders knob ("Name=special, ..."), the folders every account
 * gets. NULL with *error_r if index/ cannot be made or `folders` is malformed.
 * An account's index file is made when first used; if DATA_DIR/index.db (the
 * one index of earlier versions) is there, the account's rows move from it,
 * MODSEQs and expunge history with them, and it is removed once empty.
 */
struct mbox_store *mbox_store_new(const char *data_dir, const char *folders, char **error_r);

void mbox_store_free(struct mbox_store **st);

/*
 * Check the [mailbox] folders knob and make maildir_create() (account
 * creation, `postern user add`) create those folders; mbox_store_new()
 * does the same. 0, or -1 with *error_r (EINVAL) if it is malformed.
 */
int mbox_folders_configure(const char *folders, char **error_r);

/* ---- accounts ---- */

/*
 * Open the mailboxes of an account (after login). `maildir` is the
 * Maildir++ root (struct account.maildir); it and the standard folders
 * are created if missing. `quota` in bytes, 0 = unlimited.
 */
struct mbox_account *mbox_account_open(struct mbox_store *st, int64_t account_id,
				       const char *address, const char *maildir, uint64_t quota,
				       char **error_r);
void mbox_account_close(struct mbox_account **acct);

/* Bytes stored in all folders (as counted for the quota) and the limit (0 = none). */
int mbox_quota(struct mbox_account *acct, uint64_t *used_r, uint64_t *limit_r, char **error_r);

/* ---- folders ---- */

/* SPECIAL-USE (RFC 6154) attributes */
#define MBOX_SPECIAL_DRAFTS 0x01
#define MBOX_SPECIAL_SENT 0x02
#define MBOX_SPECIAL_JUNK 0x04
#define MBOX_SPECIAL_TRASH 0x08
#define MBOX_SPECIAL_ARCHIVE 0x10

struct mbox_folder {
	char *name;        /* UTF-8, "/"-separated; "INBOX" for the root */
	unsigned special;  /* MBOX_SPECIAL_* */
	bool subscribed;
	bool has_children;
	bool nonexistent;  /* only a parent of existing folders, or only subscribed */
};

/* Every folder (INBOX first, then by name), and subscribed names that no longer exist. */
int mbox_folders(struct mbox_account *acct, struct mbox_folder **list_r, size_t *n_r,
		 char **error_r);
void mbox_folders_free(struct mbox_folder **list, size_t n);

/* Create a folder (parents as needed). special: MBOX_SPECIAL_* or 0 (CREATE-SPECIAL-USE). */
int mbox_folder_create(struct mbox_account *acct, const char *name, unsigned special,
		       char **error_r);
/* Delete a folder and its messages (EPERM for INBOX). Children stay (RFC 9051 6.3.4). */
int mbox_folder_delete(struct mbox_account *acct, const char *name, char **error_r);
/* Rename a folder and its children; renaming INBOX moves its messages (RFC 9051 6.3.6). */
int mbox_folder_rename(struct mbox_account *acct, const char *from, const char *to,
		       char **error_r);
int mbox_folder_subscribe(struct mbox_account *acct, const char *name, bool subscribe,
			  char **error_r);

/* ---- folder state ---- */

struct mbox_status {
	uint32_t uidvalidity;
	uint32_t uidnext;
	uint32_t messages;
	uint32_t unseen;  /* messages without \Seen */
	uint32_t deleted; /* messages with \Deleted */
	uint32_t recent;  /* messages no session has seen yet (IMAP4rev1 \Recent) */
	uint64_t size;    /* sum of message sizes (STATUS SIZE) */
	uint64_t highestmodseq;
};

/* STATUS of a folder without selecting it (syncs first). */
int mbox_folder_status(struct mbox_account *acct, const char *name, struct mbox_status *st_r,
		       char **error_r);

/* message flags */
#define MBOX_F_SEEN 0x01
#define MBOX_F_ANSWERED 0x02
#define MBOX_F_FLAGGED 0x04
#define MBOX_F_DELETED 0x08
#define MBOX_F_DRAFT 0x10
#define MBOX_F_RECENT 0x20 /* read-only: set in records for messages new to this session */

#define MBOX_MAX_KEYWORDS 26 /* Maildir keyword letters a-z */

struct mbox_msg {
	uint32_t uid;
	uint32_t flags;     /* MBOX_F_* */
	uint32_t keywords;  /* bit i: keyword i of mbox_keywords() */
	uint64_t modseq;
	uint64_t size;      /* RFC822.SIZE (CRLF line ends) */
	int64_t internaldate; /* seconds since the epoch */
	int64_t savedate;     /* when it entered this folder */
};

/* Open (select) a folder; syncs it. `readonly`: EXAMINE (no \Recent taken, no new->cur moves). */
int mbox_open(struct mbox_account *acct, const char *name, bool readonly, struct mbox **box_r,
	      char **error_r);
void mbox_close(struct mbox **box);

/* Bring the index up to date with the files. */
int mbox_sync(struct mbox *box, char **error_r);
/*
 * A sync that only reads, if that is all it takes: true when the folder's
 * directories are as the index last recorded them and no \Recent is left to
 * take (two stat() calls and one indexed read), the box then being synced as
 * by mbox_sync(). False (nothing done) when a sync would have to write: a
 * command that only reads may run on a thread that must not wait when true.
 */
bool mbox_sync_probe(struct mbox *box);
/*
 * Mark the calling thread as one that must not wait on the disk or on
 * writers (the event loop): the store then leaves optional writes (cache
 * records of lazily indexed messages) and WAL checkpoints to other threads,
 * and takes the folder and index locks only if they are free (SQLite's busy
 * timeout 0): a write that would have to wait fails with errno EWOULDBLOCK
 * before it changed anything, and the caller runs it again where it may wait.
 * Callers keep writes off this thread; this covers the races.
 */
void mbox_thread_nowait(bool on);
/*
 * The calling thread is done with the store for now (a worker between jobs,
 * the event loop after a command it ran): the index connections it took go
 * back to the pool for other threads. Optional (a thread that never calls it
 * keeps a few), never in the middle of a call into the store. On a thread
 * marked by mbox_thread_nowait() it closes nothing (the pool's surplus is
 * closed by the next thread that may wait).
 */
void mbox_thread_release(void);
/* State as of the last sync or change made through `box`. */
void mbox_get_status(struct mbox *box, struct mbox_status *st_r);

/* UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ as of the last sync or change, without the
   counting mbox_get_status() does (a scan of the folder's rows). */
void mbox_get_ids(const struct mbox *box, uint32_t *uidvalidity_r, uint32_t *uidnext_r,
                  uint64_t *highestmodseq_r);

/*
 * Every message, ascending UID (allocated array), without the dates
 * (internaldate and savedate 0: what SELECT needs; a folder copied in has
 * them read from its files only when asked for, by mbox_messages_get()).
 */
int mbox_messages(struct mbox *box, struct mbox_msg **msgs_r, size_t *n_r, char **error_r);

/*
 * The records of the messages with the given UIDs (ascending): msgs_r[i] for
 * uids[i], all zero (uid 0) for a UID that is not in the folder (expunged).
 * Does not sync. IMAP sessions keep only UIDs and flags per message and read
 * the rest (size, dates, MODSEQ) here when a command needs it.
 */
int mbox_messages_get(struct mbox *box, const uint32_t *uids, size_t n, struct mbox_msg *msgs_r,
                      char **error_r);

/*
 * What changed since MODSEQ `since`: messages with modseq > since (new or
 * with changed flags), ascending UID, and the UIDs expunged with a modseq
 * > since, ascending. Does not sync (call mbox_sync first). No dates, as
 * mbox_messages().
 */
int mbox_changes(struct mbox *box, uint64_t since, struct mbox_msg **changed_r,
		 size_t *nchanged_r, uint32_t **expunged_r, size_t *nexpunged_r, char **error_r);

/* Keyword names of the folder, index = bit in mbox_msg.keywords. Valid until the next call on box. */
const char *const *mbox_keywords(struct mbox *box, size_t *n_r);
/* Index of a keyword (case-insensitive), created if `create`; -1 if absent or
   (EMLINK) the folder has MBOX_MAX_KEYWORDS already. */
int mbox_keyword_index(struct mbox *box, const char *name, bool create);

enum mbox_store_mode { MBOX_STORE_SET, MBOX_STORE_ADD, MBOX_STORE_REMOVE };

/*
 * Change the flags of the messages with the given UIDs (ascending; UIDs
 * that no longer exist are ignored). `unchanged_since` (CONDSTORE; 0 =
 * no condition): a message whose modseq is greater is left alone and its
 * UID listed in *failed_r. The new records of the messages that changed
 * (without dates, as mbox_messages()) are returned in *changed_r (messages
 * already in the requested state
 * are not changed and not returned). Allocated arrays; may be NULL when
 * the caller does not want them.
 */
int mbox_store(struct mbox *box, const uint32_t *uids, size_t n, enum mbox_store_mode mode,
	       uint32_t flags, uint32_t keywords, uint64_t unchanged_since,
	       struct mbox_msg **changed_r, size_t *nchanged_r, uint32_t **failed_r,
	       size_t *nfailed_r, char **error_r);

/*
 * Remove the messages flagged \Deleted; if uids != NULL only those of them
 * in the list (UID EXPUNGE). The expunged UIDs are returned ascending.
 */
int mbox_expunge(struct mbox *box, const uint32_t *uids, size_t n, uint32_t **expunged_r,
		 size_t *n_r, char **error_r);

struct mbox_append {
	const void *data; /* the message as given (stored as is) */
	size_t len;
	uint32_t flags;           /* MBOX_F_* without RECENT */
	const char *const *keywords; /* names */
	size_t nkeywords;
	int64_t internaldate;     /* 0 = now */
};

/*
 * Append messages to a folder, all or none (MULTIAPPEND), durably (files
 * and uidlist fsync'd before return). Quota is checked (EDQUOT). The new
 * UIDs are written to uids_r[0..n) and the folder's UIDVALIDITY to
 * *uidvalidity_r (APPENDUID).
 */
int mbox_append(struct mbox_account *acct, const char *folder, const struct mbox_append *msgs,
		size_t n, uint32_t *uidvalidity_r, uint32_t *uids_r, char **error_r);

/*
 * Copy (or move) messages of `box` to folder `dest` (which may be the same
 * folder). Flags and keywords are kept. On success *n_r pairs of
 * (source UID, new UID) are returned in allocated arrays, in ascending
 * source order, for COPYUID; *dest_uidvalidity_r is the destination's
 * UIDVALIDITY. A move expunges the sources (they appear in
 * mbox_changes() as expunged). Quota checked for copies (EDQUOT).
 */
int mbox_copy(struct mbox *box, const uint32_t *uids, size_t n, const char *dest, bool move,
	      uint32_t *dest_uidvalidity_r, uint32_t **src_uids_r, uint32_t **dest_uids_r,
	      size_t *n_r, char **error_r);

/* ---- message content ---- */

/* Open a message file for reading. ENOENT if it has been expunged meanwhile. */
int mbox_msg_open(struct mbox *box, uint32_t uid, int *fd_r, char **error_r);

/* Cached per-message data (allocated strings, freed by mbox_cache_clear). */
struct mbox_cache {
	char *envelope;      /* IMAP ENVELOPE as sent on the wire */
	char *bodystructure; /* BODYSTRUCTURE (extensions) */
	char *body;          /* BODY (no extensions) */
	/* decoded (UTF-8) header values for SEARCH and SORT, "" when absent */
	char *subject, *from, *to, *cc, *bcc, *message_id, *in_reply_to, *references;
	char *sort_from, *sort_to, *sort_cc; /* first address's mailbox for SORT (RFC 5256) */
	char *display_from, *display_to;     /* SORT=DISPLAY */
	int64_t date;        /* Date: header in seconds since the epoch (0 if absent/bad) */
	int date_tz;         /* its zone offset in minutes */
	bool found;          /* filled from a cache row (mbox_msg_caches: false = no row) */
};
void mbox_cache_clear(struct mbox_cache *c);

/* Get the cache record of a message (parsing the file the first time). */
int mbox_msg_cache(struct mbox *box, uint32_t uid, struct mbox_cache *c_r, char **error_r);

/* mbox_msg_caches() fields */
#define MBOX_CACHE_ENVELOPE 0x01      /* envelope */
#define MBOX_CACHE_BODYSTRUCTURE 0x02 /* bodystructure and body */
#define MBOX_CACHE_HEADERS 0x04       /* the header values, sort keys and date */
#define MBOX_CACHE_DATE 0x08          /* only date and date_tz (SORT by DATE) */
/* single header values (SEARCH SUBJECT needs one column, not all of them) */
#define MBOX_CACHE_SUBJECT 0x10
#define MBOX_CACHE_FROM 0x20
#define MBOX_CACHE_TO 0x40
#define MBOX_CACHE_CC 0x80
#define MBOX_CACHE_BCC 0x100
#define MBOX_CACHE_MESSAGE_ID 0x200
#define MBOX_CACHE_IN_REPLY_TO 0x400
#define MBOX_CACHE_REFERENCES 0x800

/*
 * The cache records of many messages in one index scan (SEARCH, SORT,
 * THREAD, FETCH ENVELOPE over a range: ~10x faster than one
 * mbox_msg_cache() per message). `uids` ascending; caches_r[i] gets the
 * record of uids[i] with the `fields` asked for (a record just computed
 * from its file has them all); a message without a cache row yet (a large
 * scan leaves them for later) has it computed from its file and kept, in
 * one transaction; an expunged one gets all strings NULL and found false.
 * Free each with mbox_cache_clear().
 */
int mbox_msg_caches(struct mbox *box, const uint32_t *uids, size_t n, unsigned fields,
		    struct mbox_cache *caches_r, char **error_r);

/* ---- change notification ---- */

/*
 * Register `fn(arg)` to be called after any change to folder `name` of the
 * account with maildir root `maildir` (deliveries included: the local
 * delivery agent calls mbox_notify()). fn is called on whatever thread made
 * the change and must only schedule work (e.g. event_active()). Returns a
 * handle for mbox_unwatch().
 */
struct mbox_watch;
struct mbox_watch *mbox_watch(struct mbox_store *st, const char *maildir, const char *name,
			      void (*fn)(void *arg), void *arg);
void mbox_unwatch(struct mbox_store *st, struct mbox_watch **w);

/*
 * Tell the watchers of a folder that its files changed (local delivery
 * writes into new/ without going through the index). Cheap; any thread.
 * Works when no store exists (no-op) so the queue needs no store.
 */
void mbox_notify(const char *maildir, const char *name);

/* ---- maintenance ---- */

/*
 * Rebuild the index of an account from its files and uidlists (postern
 * reindex): UIDs and UIDVALIDITY are kept, caches recomputed.
 */
int mbox_reindex(struct mbox_store *st, int64_t account_id, const char *address,
		 const char *maildir, char **error_r);

/*
 * Retention: delete messages saved into the account's trash-special folder
 * more than `trash_age` seconds ago and into junk more than `junk_age`
 * (0 = keep). *deleted_r gets the count.
 */
int mbox_expire(struct mbox_store *st, int64_t account_id, const char *address,
		const char *maildir, uint64_t trash_age, uint64_t junk_age, size_t *deleted_r,
		char **error_r);

/*
 * mbox_expire() for every account of the directory in data_dir/postern.db
 * (the daemon calls it at start and hourly). Implemented by the lead in
 * src/store/mailbox-retention.c: H1 does not need to write it.
 */
int mbox_expire_all(struct mbox_store *st, const char *data_dir, uint64_t trash_age,
		    uint64_t junk_age, size_t *deleted_r, char **error_r);

/* Forget everything indexed about an account (the account was deleted). */
int mbox_forget(struct mbox_store *st, int64_t account_id, char **error_r);

#endif

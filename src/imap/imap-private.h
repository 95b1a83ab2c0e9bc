/*
 * What the IMAP session files share: the session, the selected-mailbox
 * view, and the job that runs one command on a worker thread.
 *
 * Threading: the session lives on the event-loop thread. A command that
 * touches the store runs as a job on a worker thread; while it runs the
 * session is suspended (no input is processed, no other job starts), so
 * the job may use the session's account, mailbox and view without locks.
 * The job writes its whole response into its own evbuffer; back on the
 * loop it is appended to the connection's output.
 */
#ifndef POSTERN_IMAP_PRIVATE_H
#define POSTERN_IMAP_PRIVATE_H

#include "imap/imap_parser.h"
#include "imap/imap_session.h"
#include "store/mailbox.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct bufferevent;
struct config;
struct event;
struct evbuffer;
struct smtp_conf;

enum imap_state {
	IMAP_NOT_AUTH,
	IMAP_AUTH,
	IMAP_SELECTED,
	IMAP_LOGOUT,
};

/*
 * The selected mailbox as this session has told the client about it.
 *
 * Per message it keeps what the session itself must know (8 bytes; an idle
 * session holds its view for as long as it idles): the UID (MSN <-> UID,
 * EXPUNGE by MSN) and the flags and keywords as last announced (FETCH
 * FLAGS for what changed since `modseq`, only when they did change;
 * \Recent, which is this session's). Sizes, dates and MODSEQs are read
 * from the index when a command needs them (imap_view_records).
 */
struct imap_view {
	char *name;              /* UTF-8 */
	struct mbox *box;
	bool readonly;           /* EXAMINE */
	uint32_t uidvalidity;
	uint32_t *uids;  /* MSN i+1 is uids[i]; ascending */
	uint32_t *flags; /* flags[i]: IMAP_VF_PACK(flags, keywords) of uids[i] */
	size_t n, cap;
	/* while idling (imap_view_pack), each when that is smaller: the UIDs as runs of
	   consecutive UIDs, runs[2k] first UID and runs[2k+1] count (uids NULL), and the
	   flags words as runs of equal words, fruns[2k] count and fruns[2k+1] word
	   (flags NULL) */
	bool packed;
	uint32_t *runs;
	size_t nruns;
	uint32_t *fruns;
	size_t nfruns;
	uint64_t modseq;         /* changes up to this MODSEQ have been taken in */
	uint32_t *expunged;      /* expunged in the store, not yet announced (MSNs still valid) */
	size_t nexpunged, expunged_cap;
	size_t nkeywords;        /* keywords announced in the last FLAGS */
	uint32_t saved_uids_n;   /* SEARCHRES: $ (unused when 0) */
	uint32_t *saved_uids;
};

/* A view's flags word: MBOX_F_* (\Recent included) in bits 0-5, keyword i in bit 6 + i. */
#define IMAP_VF_FLAG_BITS 6
_Static_assert(MBOX_F_RECENT < (1u << IMAP_VF_FLAG_BITS) &&
                   IMAP_VF_FLAG_BITS + MBOX_MAX_KEYWORDS <= 32,
               "flags and keywords fit in 32 bits");
#define IMAP_VF_PACK(flags, keywords)                                                              \
	(((flags) & ((1u << IMAP_VF_FLAG_BITS) - 1)) | ((keywords) << IMAP_VF_FLAG_BITS))
#define IMAP_VF_FLAGS(w) ((w) & ((1u << IMAP_VF_FLAG_BITS) - 1))
#define IMAP_VF_KEYWORDS(w) ((w) >> IMAP_VF_FLAG_BITS)

/* ENABLEd extensions */
#define IMAP_EN_CONDSTORE 0x01
#define IMAP_EN_QRESYNC 0x02
#define IMAP_EN_UTF8 0x04
#define IMAP_EN_REV2 0x08

struct imap_session {
	struct imap_session *next, *prev;
	struct imap_server *srv;
	struct smtp_conf *conf;
	const struct config *cfg;
	struct bufferevent *bev;
	struct event *wake;       /* IDLE: a watched folder changed */
	struct event *close_timer;
	struct event *login_timer; /* not logged in within idle_timeout: closed, however busy */
	unsigned close_tries;
	enum imap_state state;
	char ip[64];
	bool tls, implicit_tls;
	bool compressed; /* COMPRESS=DEFLATE active */
	bool suspended;  /* a job or TLS handshake in flight: input waits */
	bool here_off;   /* a command run on the loop was slow: none until the next SELECT */
	bool synced_before; /* the view's folder synced just before this command: no sync after */
	bool dead;       /* connection gone; freed when pending == 0 */
	unsigned pending;
	unsigned errors;
	unsigned enabled; /* IMAP_EN_* */
	bool condstore;   /* CONDSTORE active (enabled, or a CONDSTORE command was used) */
	struct imap_reader reader;

	/* authenticated */
	char *user;       /* account address */
	char *maildir;    /* its Maildir++ root (for watches) */
	int64_t account_id;
	struct mbox_account *acct;

	/* selected */
	struct imap_view view;
	bool selected;

	/* IDLE */
	bool idling;
	char *idle_tag;
	struct mbox_watch *watch;
	bool wake_pending;  /* a change arrived while a job ran */

	/* AUTHENTICATE waiting for the client's response line */
	char *auth_tag;
	char *auth_mech;
};

/* A command running on a worker thread. */
struct imap_job {
	struct imap_session *s;
	struct imap_command cmd;
	const char *tag;       /* cmd.tag, or tag_copy */
	char *tag_copy;        /* when the command is gone (AUTHENTICATE continuation) */
	bool uid;              /* UID prefix */
	const char *name;      /* command name (after UID) */
	const struct imap_arg *args; /* arguments (after the UID subcommand) */
	size_t nargs;
	struct evbuffer *out;  /* the response, built on the worker */
	void (*exec)(struct imap_job *j);
	/* allow EXPUNGE responses at the end of this command */
	bool expunge_ok;
	/* results for the loop side */
	bool close_after;      /* LOGOUT or fatal */
	int login_result;      /* LOGIN/AUTHENTICATE: 1 ok, 0 bad, -1 temporary */
	char *login;
	char *password;
	struct mbox_account *new_acct;
	char *new_user;
	char *new_maildir;
	int64_t new_account_id;
	bool watch_changed;    /* SELECT/CLOSE changed the watched folder */
	bool here;             /* run on the loop thread (runs_here()) */
	bool again;            /* here, it would have had to wait: run it on a worker */
};

/* ---- imap_session.c ---- */
void imap_reply(struct evbuffer *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "* CAPABILITY ..." text (without "* ") for the session's state. */
void imap_capability_string(struct imap_session *s, struct evbuffer *out);

/* ---- imap_mailbox.c: commands on folders ---- */
void imap_cmd_select(struct imap_job *j);
void imap_cmd_close(struct imap_job *j);   /* CLOSE and UNSELECT */
void imap_cmd_create(struct imap_job *j);
void imap_cmd_delete(struct imap_job *j);
void imap_cmd_rename(struct imap_job *j);
void imap_cmd_subscribe(struct imap_job *j); /* SUBSCRIBE and UNSUBSCRIBE */
void imap_cmd_list(struct imap_job *j);      /* LIST and LSUB */
void imap_cmd_status(struct imap_job *j);
void imap_cmd_append(struct imap_job *j);
void imap_cmd_namespace(struct imap_job *j);
void imap_cmd_getquota(struct imap_job *j);  /* GETQUOTA, GETQUOTAROOT */
void imap_cmd_noop(struct imap_job *j);      /* NOOP, CHECK, IDLE sync */

/* Folder name from the wire (mUTF-7 unless UTF8=ACCEPT) to UTF-8; NULL if invalid. */
char *imap_mailbox_name(struct imap_session *s, const struct imap_arg *a);
/* Write a folder name as an IMAP string (quoted or literal; mUTF-7 unless UTF8=ACCEPT). */
void imap_write_mailbox(struct imap_session *s, struct evbuffer *out, const char *utf8);
/* Write any string as quoted, or a literal when it needs one. */
void imap_write_string(struct evbuffer *out, const char *str, size_t len);
/* Announce store changes since the view's MODSEQ (EXISTS, FETCH FLAGS, EXPUNGE/VANISHED). */
void imap_view_sync(struct imap_session *s, struct evbuffer *out, bool expunge_ok);
void imap_view_clear(struct imap_view *v);
/*
 * IDLE: drop the arrays' growth slack, keep the UIDs as runs of consecutive UIDs
 * and the flags words as runs of equal words, each when that is smaller (a
 * mailbox with few UID gaps, mostly \Seen: 8 bytes a run instead of 4 a message).
 * imap_view_sync() unpacks and packs again by itself; everything else needs
 * imap_view_unpack() first (after DONE).
 */
void imap_view_pack(struct imap_view *v);
void imap_view_unpack(struct imap_view *v);
struct imap_seqset;
/* QRESYNC: VANISHED (EARLIER) and FETCH for what changed since modseq (see imap_mailbox.c). */
void imap_qresync_report(struct imap_session *s, struct evbuffer *out, uint64_t modseq,
			 const char *known, const struct imap_seqset *within);
/* FLAGS and PERMANENTFLAGS lines for the view. */
void imap_write_flags_list(struct imap_session *s, struct evbuffer *out, bool permanent);
/* "(\Seen \Answered kw)" for MBOX_F_* flags and keyword bits. */
void imap_write_msg_flags(struct imap_session *s, struct evbuffer *out, uint32_t flags,
                          uint32_t keywords);
/* Parse a flag list (or single flag) into flags + keywords (created if needed). 0 / -1. */
int imap_parse_flags(struct imap_session *s, const struct imap_arg *a, uint32_t *flags_r,
		     uint32_t *keywords_r, const char ***names_r, size_t *nnames_r,
		     const char **error_r);
/* Error of a store call as a tagged NO with a response code. */
void imap_store_error(struct imap_job *j, const char *what, char *err);

/* ---- imap_fetch.c: commands on messages ---- */
void imap_cmd_fetch(struct imap_job *j);
void imap_cmd_store(struct imap_job *j);
void imap_cmd_copy(struct imap_job *j);   /* COPY and MOVE */
void imap_cmd_expunge(struct imap_job *j);
void imap_cmd_search(struct imap_job *j); /* SEARCH, SORT, THREAD */

/* Resolve a sequence set (MSNs, or UIDs when uid) to view indexes; allocated, ascending. */
int imap_resolve_set(struct imap_session *s, const char *set, bool uid, size_t **idx_r,
		     size_t *n_r);
/* View index of a UID, or -1. */
long imap_view_find(const struct imap_view *v, uint32_t uid);
/* The view's own record of message idx: uid, flags and keywords (the rest 0). */
void imap_view_msg(const struct imap_view *v, size_t idx, struct mbox_msg *m_r);
/* Take a store record's flags and keywords as announced (the view's \Recent kept). */
void imap_view_set(struct imap_view *v, size_t idx, const struct mbox_msg *m);
/*
 * Full records (size, dates, MODSEQ) of view messages idx[0..n) (ascending) from
 * the index: allocated, recs[i] for idx[i]. A message expunged in the store but
 * not yet announced gets the view's record (size, dates and MODSEQ 0) and
 * gone[i] true when gone_r is given. A failed index read counts as all gone.
 */
struct mbox_msg *imap_view_records(struct imap_session *s, const size_t *idx, size_t n,
                                   bool **gone_r);

#endif

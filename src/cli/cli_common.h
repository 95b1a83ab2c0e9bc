/*
 * Shared pieces of the `postern` command line: the command tables, option
 * parsing (every command accepts `-c FILE` and `--help`), loading the
 * configuration, opening the directory, error printing and giving files to
 * the service user when run as root.
 *
 * Exit codes: 0 success, 1 failure, 2 usage error (sendmail uses sysexits.h).
 */
#ifndef POSTERN_CLI_COMMON_H
#define POSTERN_CLI_COMMON_H

#include <stdbool.h>
#include <stdio.h>
#include <sys/types.h>

#define CLI_EXIT_OK 0
#define CLI_EXIT_FAIL 1
#define CLI_EXIT_USAGE 2

struct config;
struct directory;

/* State of one invocation. */
struct cli {
	const char *config_path; /* -c FILE, NULL = config_find() */
	const char *progname;    /* how to invoke us in hints: argv[0] if it has a '/', else "postern" */
	struct config *cfg;      /* loaded by cli_config() */
	/* owner for new files, looked up once by cli_chown() */
	bool to_service_user; /* always the service user (init), not the data_dir owner */
	bool owner_looked_up;
	bool owner_known;
	uid_t owner_uid;
	gid_t owner_gid;
};

struct cli_cmd;
typedef int cli_run_fn(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv);

/*
 * One subcommand of a group. `name` is the word after the group
 * ("add"); NULL marks what runs when the group is given no subcommand
 * (`postern config`, `postern serve`). The table ends with run == NULL.
 */
struct cli_cmd {
	const char *group;   /* "domain" */
	const char *name;    /* "add", or NULL */
	const char *args;    /* synopsis of the arguments, "" if none */
	const char *summary; /* one line */
	cli_run_fn *run;
};

extern const struct cli_cmd cmd_serve_cmds[];
extern const struct cli_cmd cmd_init_cmds[];
extern const struct cli_cmd cmd_domain_cmds[];
extern const struct cli_cmd cmd_user_cmds[];
extern const struct cli_cmd cmd_alias_cmds[];
extern const struct cli_cmd cmd_config_cmds[];
extern const struct cli_cmd cmd_sendmail_cmds[];
extern const struct cli_cmd cmd_dkim_cmds[];
extern const struct cli_cmd cmd_dns_cmds[];
extern const struct cli_cmd cmd_queue_cmds[];
extern const struct cli_cmd cmd_reindex_cmds[];

/* Print "usage: postern [-c FILE] GROUP NAME ARGS" and the summary. */
void cli_usage(FILE *out, const struct cli_cmd *cmd);

/* An option of a command: a flag (`flag_r`) or one taking a value (`value_r`). */
struct cli_opt {
	const char *name; /* "--json" */
	bool *flag_r;
	const char **value_r;
};

/*
 * Parse the arguments of `cmd`: the options in `opts` (terminated by
 * name == NULL; "--opt VALUE" and "--opt=VALUE"), `-c FILE`, `--help`/`-h`
 * and between `min` and `max` positional arguments, stored in `pos`.
 * Returns true to go on; false when the caller must return *exit_r
 * (help printed: 0; usage error printed on stderr: 2).
 */
bool cli_parse(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv,
	       const struct cli_opt *opts, const char **pos, int min, int max, int *npos_r,
	       int *exit_r);

/* "postern: message" on stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cli_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The configuration (loaded once); NULL after printing the error. */
struct config *cli_config(struct cli *cli);

/*
 * Open the directory database of the configured data_dir (which must have
 * been created by `postern init`). As root, the database files are given
 * to the service user. NULL after printing the error.
 */
struct directory *cli_directory_open(struct cli *cli);
/* Close it, and as root give the database files to the service user. */
void cli_directory_close(struct cli *cli, struct directory **dir);
/*
 * Close `dir` as above, then report the result of a directory call: for
 * ret < 0 print `error` (NULL: "failed"), which is freed. Returns
 * CLI_EXIT_OK or CLI_EXIT_FAIL.
 */
int cli_directory_done(struct cli *cli, struct directory **dir, int ret, char *error);
/* `GROUP list [--json]` over one of the directory_*_list() functions. */
int cli_run_list(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv,
		 int (*list)(struct directory *, FILE *, bool, char **));

/*
 * As root, give `path` (and, if `recursive`, everything below it, without
 * following symbolic links) to the service user. Does nothing when not
 * root. The owner is the configured service user, except that a data
 * directory owned by another non-root user (a server run without root)
 * keeps that owner, unless cli->to_service_user is set. Returns the number
 * of entries whose owner changed, or -1 after printing an error. A missing
 * service user is a warning (once).
 */
int cli_chown(struct cli *cli, const char *path, bool recursive);

/* Give the database files (postern.db, -wal, -shm) to the service user. */
void cli_chown_db(struct cli *cli);

/*
 * Read a new password: the first line of stdin (without its newline) if
 * `from_stdin`, else prompted twice without echo when stdin is a terminal.
 * Never empty. Allocated; NULL after printing the error.
 */
char *cli_read_password(bool from_stdin);
/* Wipe and free. */
void cli_password_free(char **pw);

/* A growing list of distinct strings. */
struct cli_strlist {
	char **v;
	size_t n, cap;
};
void cli_strlist_free(struct cli_strlist *l);

/*
 * (cmd_sendmail.c) Parse an RFC 5322 address-list as found in To/Cc/Bcc or
 * a sendmail argument: display names, <angle-addr>, comments, quoted
 * strings, groups. Each mailbox is checked as an RFC 5321 address (a bare
 * local part gets @hostname) and added to `out` in canonical form, once.
 * ADDRESS_* flags of the addresses are or-ed into *flags_r.
 * 0 ok, -1 malformed (the error printed).
 */
int sendmail_address_list(const char *s, const char *hostname, struct cli_strlist *out,
			  unsigned *flags_r);

/* (cmd_dkim.c) Print "SELECTOR._domainkey.DOMAIN. IN TXT "..." ..." (255-octet strings). */
void dkim_txt_record_print(FILE *out, const char *domain, const char *selector, const char *txt);

/* (cmd_dns.c) Parsers of DNS answers, exposed for the tests and the fuzzer. */
/* A global unicast address (not private, loopback, link-local, CGNAT, documentation...). */
bool dnscmd_ip_global(int family, const unsigned char *addr);
/* SRV RDATA (RFC 2782, target uncompressed): the target as text (escaped like
   src/dns names, "." for none), or NULL when malformed. Allocated. */
char *dnscmd_srv_parse(const unsigned char *rdata, size_t len, unsigned *prio_r,
		       unsigned *weight_r, unsigned *port_r);
/* 1 if the TXT record is a DMARC record (RFC 7489 6.4), with *policy_r the
   p= right after v= ("none", "quarantine", "reject") or NULL; 0 if not. */
int dnscmd_dmarc_parse(const char *txt, size_t len, const char **policy_r);

#endif

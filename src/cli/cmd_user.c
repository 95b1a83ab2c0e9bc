/* `postern user add|del|list|passwd|quota`: mail accounts. */
#include "cli/cli_common.h"
#include "lib/config.h"
#include "lib/strutil.h"
#include "lib/xalloc.h"
#include "store/directory.h"
#include "store/mailbox.h"
#include "store/maildir.h"
#include "store/password.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static bool parse_quota(const char *s, uint64_t *quota_r)
{
	if (parse_size(s, quota_r) < 0) {
		cli_error("bad quota %s: expected a size such as 500M or 2G (0 = unlimited)", s);
		return false;
	}
	return true;
}

/*
 * The password hash for add/passwd: --password-hash as given (it must look
 * like a crypt(3) or {SCHEME} hash), else a new yescrypt hash of the
 * password read from stdin or the terminal.
 */
static char *get_hash(bool from_stdin, const char *given)
{
	if (given != NULL) {
		if (from_stdin) {
			cli_error("--password-stdin and --password-hash exclude each other");
			return NULL;
		}
		if (given[0] != '$' && given[0] != '{') {
			cli_error("--password-hash expects a crypt(3) hash ($y$..., $6$...) or a "
				  "{SCHEME} hash");
			return NULL;
		}
		return xstrdup(given);
	}
	char *pw = cli_read_password(from_stdin);
	if (pw == NULL)
		return NULL;
	char *hash = password_hash(pw);
	cli_password_free(&pw);
	if (hash == NULL)
		cli_error("hashing the password failed");
	return hash;
}

/* As root, give the new Maildir and the directories above it to the service user. */
static void chown_maildir(struct cli *cli, const char *address)
{
	if (geteuid() != 0)
		return;
	char *canon = str_lower(xstrdup(address));
	char *path = maildir_path(cli->cfg->data_dir, canon);
	free(canon);
	char *mail = xasprintf("%s/mail", cli->cfg->data_dir);
	if (access(path, F_OK) == 0) {
		cli_chown(cli, path, true);
		/* the parents this add may have created, up to DATA_DIR/mail */
		size_t ml = strlen(mail);
		char *slash;
		while ((slash = strrchr(path, '/')) != NULL && (size_t)(slash - path) > ml) {
			*slash = '\0';
			cli_chown(cli, path, false);
		}
		cli_chown(cli, mail, false);
	} else {
		cli_chown(cli, mail, true);
	}
	free(mail);
	free(path);
}

static int run_add(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	bool from_stdin = false;
	const char *hash_opt = NULL, *name = NULL, *quota_s = NULL;
	const struct cli_opt opts[] = {
		{"--password-stdin", &from_stdin, NULL},
		{"--password-hash", NULL, &hash_opt},
		{"--name", NULL, &name},
		{"--quota", NULL, &quota_s},
		{0},
	};
	const char *pos[1];
	int npos, ret;
	if (!cli_parse(cli, cmd, argc, argv, opts, pos, 1, 1, &npos, &ret))
		return ret;
	uint64_t quota = 0;
	if (quota_s != NULL && !parse_quota(quota_s, &quota))
		return CLI_EXIT_USAGE;
	if (cli_config(cli) == NULL)
		return CLI_EXIT_FAIL;
	/* open first: no point asking for a password without a database */
	struct directory *dir = cli_directory_open(cli);
	if (dir == NULL)
		return CLI_EXIT_FAIL;
	char *hash = get_hash(from_stdin, hash_opt);
	if (hash == NULL) {
		cli_directory_close(cli, &dir);
		return CLI_EXIT_FAIL;
	}
	char *error = NULL;
	/* the Maildir gets the folders of the [mailbox] folders knob */
	if (mbox_folders_configure(cli->cfg->mailbox_folders, &error) < 0) {
		cli_error("%s", error);
		free(error);
		free(hash);
		cli_directory_close(cli, &dir);
		return CLI_EXIT_FAIL;
	}
	ret = directory_user_add(dir, pos[0], hash, name ? name : "", quota, &error);
	free(hash);
	if (ret == 0)
		chown_maildir(cli, pos[0]);
	ret = cli_directory_done(cli, &dir, ret, error);
	if (ret == CLI_EXIT_OK)
		printf("added user %s\n", pos[0]);
	return ret;
}

static int run_del(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	const char *pos[1];
	int npos, ret;
	if (!cli_parse(cli, cmd, argc, argv, NULL, pos, 1, 1, &npos, &ret))
		return ret;
	struct directory *dir = cli_directory_open(cli);
	if (dir == NULL)
		return CLI_EXIT_FAIL;
	char *error = NULL;
	/* the account's id, for its rows in the mailbox index */
	int64_t id = 0;
	struct resolved r = {0};
	if (directory_resolve(dir, pos[0], &r) == RESOLVE_OK)
		for (size_t i = 0; i < r.naccounts; i++)
			if (strcasecmp(r.accounts[i].address, pos[0]) == 0)
				id = r.accounts[i].id;
	resolved_free(&r);
	ret = directory_user_del(dir, pos[0], &error);
	ret = cli_directory_done(cli, &dir, ret, error);
	if (ret == CLI_EXIT_OK && id > 0) {
		error = NULL;
		struct mbox_store *st =
			mbox_store_new(cli->cfg->data_dir, cli->cfg->mailbox_folders, &error);
		if (st == NULL || mbox_forget(st, id, &error) < 0)
			cli_warn("the mailbox index still holds rows of %s (harmless): %s", pos[0],
				 error != NULL ? error : "?");
		free(error);
		mbox_store_free(&st);
		/* the index files this run made, for the server's user */
		char *idx = xasprintf("%s/index", cli->cfg->data_dir);
		if (access(idx, F_OK) == 0)
			cli_chown(cli, idx, true);
		free(idx);
	}
	if (ret == CLI_EXIT_OK)
		printf("deleted user %s\n", pos[0]);
	return ret;
}

static int run_list(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	return cli_run_list(cli, cmd, argc, argv, directory_user_list);
}

static int run_passwd(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	bool from_stdin = false;
	const char *hash_opt = NULL;
	const struct cli_opt opts[] = {
		{"--password-stdin", &from_stdin, NULL},
		{"--password-hash", NULL, &hash_opt},
		{0},
	};
	const char *pos[1];
	int npos, ret;
	if (!cli_parse(cli, cmd, argc, argv, opts, pos, 1, 1, &npos, &ret))
		return ret;
	struct directory *dir = cli_directory_open(cli);
	if (dir == NULL)
		return CLI_EXIT_FAIL;
	char *hash = get_hash(from_stdin, hash_opt);
	if (hash == NULL) {
		cli_directory_close(cli, &dir);
		return CLI_EXIT_FAIL;
	}
	char *error = NULL;
	ret = directory_user_passwd(dir, pos[0], hash, &error);
	free(hash);
	ret = cli_directory_done(cli, &dir, ret, error);
	if (ret == CLI_EXIT_OK)
		printf("changed the password of %s\n", pos[0]);
	return ret;
}

static int run_quota(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	const char *pos[2];
	int npos, ret;
	if (!cli_parse(cli, cmd, argc, argv, NULL, pos, 2, 2, &npos, &ret))
		return ret;
	uint64_t quota;
	if (!parse_quota(pos[1], &quota))
		return CLI_EXIT_USAGE;
	struct directory *dir = cli_directory_open(cli);
	if (dir == NULL)
		return CLI_EXIT_FAIL;
	char *error = NULL;
	ret = directory_user_quota(dir, pos[0], quota, &error);
	ret = cli_directory_done(cli, &dir, ret, error);
	if (ret == CLI_EXIT_OK) {
		char buf[32];
		format_size(quota, buf, sizeof(buf));
		printf("quota of %s: %s\n", pos[0], quota == 0 ? "unlimited" : buf);
	}
	return ret;
}

const struct cli_cmd cmd_user_cmds[] = {
	{"user", "add",
	 "ADDRESS [--password-stdin | --password-hash HASH] [--name \"Real Name\"] [--quota SIZE]",
	 "Add a mail account (its domain must exist) and create its Maildir; the password is "
	 "read from stdin's first line, or prompted for twice on a terminal",
	 run_add},
	{"user", "del", "ADDRESS", "Delete an account and its Maildir", run_del},
	{"user", "list", "[--json]", "List the accounts with their quota and usage", run_list},
	{"user", "passwd", "ADDRESS [--password-stdin | --password-hash HASH]",
	 "Change an account's password", run_passwd},
	{"user", "quota", "ADDRESS SIZE", "Set an account's quota (500M, 2G; 0 = unlimited)",
	 run_quota},
	{0},
};

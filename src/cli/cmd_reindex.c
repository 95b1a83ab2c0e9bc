/*
 * `postern reindex ADDRESS...`: rebuild the mailbox index rows of accounts
 * from their Maildir files and uid lists (UIDVALIDITY and UIDs are kept;
 * MODSEQs restart and caches are recomputed). Safe while the server runs:
 * the index's write lock serialises it with the sessions, which see the
 * folders as they were (same UIDs).
 */
#include "cli/cli_common.h"
#include "lib/config.h"
#include "lib/xalloc.h"
#include "store/directory.h"
#include "store/mailbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static int reindex_one(struct cli *cli, struct directory *dir, struct mbox_store *st,
                       const char *address)
{
	struct resolved r = {0};
	enum resolve_result rr = directory_resolve(dir, address, &r);
	const struct account *a = NULL;
	for (size_t i = 0; rr == RESOLVE_OK && i < r.naccounts; i++)
		if (strcasecmp(r.accounts[i].address, address) == 0)
			a = &r.accounts[i];
	if (a == NULL) {
		cli_error("%s: no such account", address);
		resolved_free(&r);
		return CLI_EXIT_FAIL;
	}
	char *error = NULL;
	int ret = mbox_reindex(st, a->id, a->address, a->maildir, &error);
	if (ret < 0) {
		cli_error("%s: %s", a->address, error != NULL ? error : "failed");
		free(error);
	} else {
		/* the uid lists it may have written belong to the service user */
		cli_chown(cli, a->maildir, true);
		printf("reindexed %s\n", a->address);
	}
	resolved_free(&r);
	return ret < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

static int run_reindex(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	const char *pos[64];
	int npos, ret;
	if (!cli_parse(cli, cmd, argc, argv, NULL, pos, 1, 64, &npos, &ret))
		return ret;
	struct directory *dir = cli_directory_open(cli);
	if (dir == NULL)
		return CLI_EXIT_FAIL;
	char *error = NULL;
	struct mbox_store *st =
	    mbox_store_new(cli->cfg->data_dir, cli->cfg->mailbox_folders, &error);
	if (st == NULL) {
		cli_error("%s", error != NULL ? error : "cannot open the mailbox index");
		free(error);
		cli_directory_close(cli, &dir);
		return CLI_EXIT_FAIL;
	}
	ret = CLI_EXIT_OK;
	for (int i = 0; i < npos; i++)
		if (reindex_one(cli, dir, st, pos[i]) != CLI_EXIT_OK)
			ret = CLI_EXIT_FAIL;
	mbox_store_free(&st);
	/* the index files this run made, for the server's user */
	char *idx = xasprintf("%s/index", cli->cfg->data_dir);
	if (access(idx, F_OK) == 0)
		cli_chown(cli, idx, true);
	free(idx);
	cli_directory_close(cli, &dir);
	return ret;
}

const struct cli_cmd cmd_reindex_cmds[] = {
    {"reindex", NULL, "ADDRESS...",
     "Rebuild the mailbox index of accounts from their Maildir files (UIDs kept)", run_reindex},
    {0},
};

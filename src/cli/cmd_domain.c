/* `postern domain add|del|list|alias`: the mail domains this server serves. */
#include "cli/cli_common.h"
#include "store/directory.h"

#include <stdio.h>
#include <stdlib.h>

/* Open the directory, run `op`, report, close. */
static int domain_op(struct cli *cli, int (*op)(struct directory *, const char *, char **),
		     const char *name, const char *done)
{
	struct directory *dir = cli_directory_open(cli);
	if (dir == NULL)
		return CLI_EXIT_FAIL;
	char *error = NULL;
	int ret = op(dir, name, &error);
	ret = cli_directory_done(cli, &dir, ret, error);
	if (ret == CLI_EXIT_OK)
		printf("%s %s\n", done, name);
	return ret;
}

static int run_add(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	const char *pos[1];
	int npos, ret;
	if (!cli_parse(cli, cmd, argc, argv, NULL, pos, 1, 1, &npos, &ret))
		return ret;
	return domain_op(cli, directory_domain_add, pos[0], "added domain");
}

static int run_del(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	const char *pos[1];
	int npos, ret;
	if (!cli_parse(cli, cmd, argc, argv, NULL, pos, 1, 1, &npos, &ret))
		return ret;
	return domain_op(cli, directory_domain_del, pos[0], "deleted domain");
}

static int run_list(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	return cli_run_list(cli, cmd, argc, argv, directory_domain_list);
}

static int run_alias(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	const char *pos[2];
	int npos, ret;
	if (!cli_parse(cli, cmd, argc, argv, NULL, pos, 2, 2, &npos, &ret))
		return ret;
	struct directory *dir = cli_directory_open(cli);
	if (dir == NULL)
		return CLI_EXIT_FAIL;
	char *error = NULL;
	ret = directory_domain_alias(dir, pos[0], pos[1], &error);
	ret = cli_directory_done(cli, &dir, ret, error);
	if (ret == CLI_EXIT_OK)
		printf("added domain alias %s -> %s\n", pos[0], pos[1]);
	return ret;
}

const struct cli_cmd cmd_domain_cmds[] = {
	{"domain", "add", "NAME", "Add a mail domain served by this server", run_add},
	{"domain", "del", "NAME", "Delete a domain (it must have no accounts or aliases left)",
	 run_del},
	{"domain", "list", "[--json]", "List the domains and domain aliases", run_list},
	{"domain", "alias", "ALIAS_DOMAIN TARGET_DOMAIN",
	 "Make mail to anything@ALIAS_DOMAIN go to anything@TARGET_DOMAIN", run_alias},
	{0},
};

/* `postern alias add|del|list`: aliases, distribution lists and catch-alls. */
#include "cli/cli_common.h"
#include "store/directory.h"

#include <stdio.h>
#include <stdlib.h>

static int run_add(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	const char *pos[2];
	int npos, ret;
	if (!cli_parse(cli, cmd, argc, argv, NULL, pos, 2, 2, &npos, &ret))
		return ret;
	struct directory *dir = cli_directory_open(cli);
	if (dir == NULL)
		return CLI_EXIT_FAIL;
	char *error = NULL;
	ret = directory_alias_add(dir, pos[0], pos[1], &error);
	ret = cli_directory_done(cli, &dir, ret, error); /* not one expression: `error` is set by the call */
	if (ret == CLI_EXIT_OK)
		printf("added alias %s -> %s\n", pos[0], pos[1]);
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
	ret = directory_alias_del(dir, pos[0], &error);
	ret = cli_directory_done(cli, &dir, ret, error);
	if (ret == CLI_EXIT_OK)
		printf("deleted alias %s\n", pos[0]);
	return ret;
}

static int run_list(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	return cli_run_list(cli, cmd, argc, argv, directory_alias_list);
}

const struct cli_cmd cmd_alias_cmds[] = {
	{"alias", "add", "ADDRESS TARGET[,TARGET...]",
	 "Forward ADDRESS (local@domain, or @domain for a catch-all) to local or external "
	 "targets; several targets make a distribution list",
	 run_add},
	{"alias", "del", "ADDRESS", "Delete an alias", run_del},
	{"alias", "list", "[--json]", "List the aliases and their targets", run_list},
	{0},
};

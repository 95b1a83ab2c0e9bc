/* `postern alias add|del|list`: aliases, distribution lists and catch-alls. */
#include "cli/cli_common.h"
#include "store/directory.h"

#include <stdio.h>
#include <stdlib.h>

static int finish(struct cli *cli, struct directory **dir, int ret, char *error)
{
	cli_directory_close(cli, dir);
	if (ret < 0) {
		cli_error("%s", error ? error : "failed");
		free(error);
		return CLI_EXIT_FAIL;
	}
	return CLI_EXIT_OK;
}

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
	ret = finish(cli, &dir, ret, error); /* not one expression: `error` is set by the call */
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
	ret = finish(cli, &dir, ret, error);
	if (ret == CLI_EXIT_OK)
		printf("deleted alias %s\n", pos[0]);
	return ret;
}

static int run_list(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	bool json = false;
	const struct cli_opt opts[] = {{"--json", &json, NULL}, {0}};
	const char *pos[1];
	int npos, ret;
	if (!cli_parse(cli, cmd, argc, argv, opts, pos, 0, 0, &npos, &ret))
		return ret;
	struct directory *dir = cli_directory_open(cli);
	if (dir == NULL)
		return CLI_EXIT_FAIL;
	char *error = NULL;
	ret = directory_alias_list(dir, stdout, json, &error);
	return finish(cli, &dir, ret, error);
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

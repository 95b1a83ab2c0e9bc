/*
 * The `postern` command line: `postern [-c FILE] COMMAND [ARGS]`.
 * Exit codes follow sysexits.h where a caller may care (sendmail), else
 * 0 success, 1 failure, 2 usage error.
 */
#ifndef POSTERN_CLI_H
#define POSTERN_CLI_H

int cli_main(int argc, char **argv);

#endif

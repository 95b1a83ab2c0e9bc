/*
 * The daemon: `postern serve`. Binds every configured listener (as root,
 * before dropping to the service user), sets up TLS, opens the queue and
 * the worker pool, and runs the event loop until SIGTERM/SIGINT (drain:
 * stop accepting, let sessions finish their current transaction for up to
 * 30 s, finish commits, exit 0). SIGHUP reloads the configuration file
 * (limits, trusted networks, TLS certificate; listeners need a restart).
 */
#ifndef POSTERN_SERVER_H
#define POSTERN_SERVER_H

struct config;

/* Runs until shutdown. Takes over `cfg`. Returns the process exit code. */
int server_run(struct config *cfg);

#endif

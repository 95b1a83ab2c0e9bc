/* File helpers shared by the spool and the mailbox store. */
#ifndef POSTERN_FILEIO_H
#define POSTERN_FILEIO_H

#include <stddef.h>

/* write(2) all `len` bytes, retrying on EINTR and short writes. 0, or -1 with errno. */
int write_full(int fd, const void *data, size_t len);

#endif

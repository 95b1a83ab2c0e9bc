/*
 * Retention over all accounts: the daemon's hourly job. Each account is
 * expired on its own (mbox_expire); one failing account is logged and the
 * others still run.
 */
#include "store/directory.h"
#include "store/mailbox.h"

#include "lib/log.h"
#include "lib/xalloc.h"

#include <stdlib.h>

int mbox_expire_all(struct mbox_store *st, const char *data_dir, uint64_t trash_age,
		    uint64_t junk_age, size_t *deleted_r, char **error_r)
{
	*deleted_r = 0;
	struct directory *dir = directory_thread(data_dir);
	if (dir == NULL) {
		*error_r = xstrdup("cannot open the directory database");
		return -1;
	}
	struct account *accts;
	size_t n;
	if (directory_accounts(dir, &accts, &n, error_r) < 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		size_t deleted = 0;
		char *err = NULL;
		if (mbox_expire(st, accts[i].id, accts[i].address, accts[i].maildir, trash_age,
				junk_age, &deleted, &err) < 0) {
			char q[600];
			log_warn("event=retention_failed account=%s error=%s", accts[i].address,
				 log_quote(q, sizeof(q), err != NULL ? err : "?", 500));
			free(err);
			continue;
		}
		if (deleted > 0)
			log_info("event=retention_expired account=%s messages=%zu",
				 accts[i].address, deleted);
		*deleted_r += deleted;
	}
	directory_accounts_free(&accts, n);
	return 0;
}

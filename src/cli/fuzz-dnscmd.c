/*
 * libFuzzer target: the parsers `postern dns --check` applies to DNS
 * answers (SRV RDATA and DMARC records); the first byte picks one.
 */
#include "cli/cli_common.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	if (data[0] & 1) {
		unsigned prio, weight, port;
		char *t = dnscmd_srv_parse(data + 1, size - 1, &prio, &weight, &port);
		if (t != NULL) {
			/* lowercase, printable, escaped, at most 253 characters of 4 each */
			size_t len = strlen(t);
			if (len == 0 || len > 254 * 4 || prio > 65535 || port > 65535)
				abort();
			for (const char *p = t; *p != '\0'; p++)
				if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
				      *p == '-' || *p == '_' || *p == '.' || *p == '\\'))
					abort();
			free(t);
		}
	} else {
		const char *policy;
		int r = dnscmd_dmarc_parse((const char *)data + 1, size - 1, &policy);
		if (r != 0 && r != 1)
			abort();
		if (policy != NULL &&
		    (r != 1 || (strcmp(policy, "none") != 0 && strcmp(policy, "quarantine") != 0 &&
		                strcmp(policy, "reject") != 0)))
			abort();
	}
	return 0;
}

/* libFuzzer target: the RFC 5321 path parser with every option combination. */
#include "mail/address.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	for (unsigned opts = 0; opts < 8; opts++) {
		struct address a;
		size_t used;
		const char *err;
		if (address_parse_path((const char *)data, size, opts, &a, &used, &err) == 0) {
			if (used > size || used > ADDRESS_PATH_MAX)
				abort();
			if (strlen(a.local) > ADDRESS_LOCAL_MAX || strlen(a.domain) > ADDRESS_DOMAIN_MAX)
				abort();
			if (!(opts & ADDRESS_ALLOW_UTF8) && (a.flags & ADDRESS_UTF8))
				abort();
			char buf[ADDRESS_FORMAT_SIZE];
			address_format(&a, buf, sizeof(buf));
		}
	}
	utf8_valid(data, size);
	return 0;
}

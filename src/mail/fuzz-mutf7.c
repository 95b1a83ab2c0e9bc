/*
 * libFuzzer target: modified UTF-7 mailbox names (mail/mutf7.h) both ways.
 * Decoded input re-encodes to something that decodes to the same text; UTF-8
 * input encodes to something that decodes back to it.
 */
#include "mail/mutf7.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 4096)
		return 0;
	char *s = malloc(size + 1);
	if (s == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	char *dec = mutf7_decode(s);
	if (dec != NULL) {
		char *enc = mutf7_encode(dec);
		if (enc == NULL)
			abort();
		char *again = mutf7_decode(enc);
		if (again == NULL || strcmp(again, dec) != 0)
			abort();
		free(again);
		free(enc);
		free(dec);
	}
	char *enc = mutf7_encode(s);
	if (enc != NULL) {
		for (const char *p = enc; *p != '\0'; p++)
			if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
				abort();
		char *back = mutf7_decode(enc);
		if (back == NULL || strcmp(back, s) != 0)
			abort();
		free(back);
		free(enc);
	}
	free(s);
	return 0;
}

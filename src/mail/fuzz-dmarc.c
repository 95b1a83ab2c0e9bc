/*
 * libFuzzer target: the DMARC policy record parser, and the whole
 * evaluation over a resolver that answers every TXT query with the input
 * (so policy discovery, sp=, pct= and alignment run on hostile records).
 */
#include "mail/dmarc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct fuzz_ctx {
	const uint8_t *data;
	size_t size;
};

static int fuzz_txt(void *ctx, const char *name, struct dkim_txt *out)
{
	struct fuzz_ctx *f = ctx;
	if (strncmp(name, "_dmarc.", 7) != 0)
		abort(); /* only policy records are looked up */
	if (f->size > 0 && f->data[0] == 'T')
		return DKIM_DNS_TEMPFAIL;
	dkim_txt_add(out, (const char *)f->data, f->size);
	return DKIM_DNS_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dmarc_record rec;
	const char *err = NULL;
	if (dmarc_record_parse((const char *)data, size, &rec, &err) == 0) {
		if (rec.pct > 100)
			abort();
	} else if (err == NULL) {
		abort();
	}
	(void)dmarc_is_record((const char *)data, size);

	struct fuzz_ctx f = {data, size};
	struct dkim_key_resolver res = {fuzz_txt, &f};
	struct dmarc_dkim dk[2] = {{DKIM_PASS, "mail.example.com"}, {DKIM_FAIL, "example.com"}};
	struct dmarc_input in = {
	    .from_domain = "a.b.example.com",
	    .spf = SPF_PASS,
	    .spf_domain = "bounce.example.org",
	    .dkim = dk,
	    .ndkim = 2,
	    .sample = size % 100,
	};
	struct dmarc_outcome out;
	dmarc_evaluate(&res, &in, &out);
	if (out.result != DMARC_FAIL && out.disposition != DMARC_POLICY_NONE)
		abort();
	return 0;
}

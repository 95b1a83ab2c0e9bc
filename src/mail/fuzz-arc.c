/*
 * libFuzzer target: ARC chain validation of a hostile message. Every key
 * lookup answers with one fixed RSA key, so the structure checks, tag
 * parsing, canonicalization and the signature checks all run.
 */
#include "mail/arc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* the ValiMail suite's public test key (dummy._domainkey.example.org) */
static const char key[] =
    "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3id"
    "Y6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lx"
    "j+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB";

static int fuzz_txt(void *ctx, const char *name, struct dkim_txt *out)
{
	(void)ctx;
	if (strlen(name) > 253 + 64 + 12)
		abort();
	dkim_txt_add(out, key, strlen(key));
	return DKIM_DNS_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dkim_key_resolver res = {fuzz_txt, NULL};
	struct arc_verifier *v = arc_verifier_new(&res, 1500000000);
	/* two pushes, split in the middle, as a socket would deliver it */
	arc_verifier_push(v, data, size / 2);
	arc_verifier_push(v, data + size / 2, size - size / 2);
	struct arc_outcome o;
	enum arc_result r = arc_verifier_finish(v, &o);
	if (r != o.result || (r == ARC_NONE && o.instances != 0) || o.reason == NULL)
		abort();
	arc_outcome_clear(&o);
	arc_verifier_free(&v);
	return 0;
}

/*
 * libFuzzer target: RDATA decoding (bytes from DNS answers) for every type
 * we read, and the MX sort over records cut from the input.
 */
#include "dns/dns.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const uint16_t types[] = {DNS_T_A,   DNS_T_AAAA, DNS_T_MX,   DNS_T_PTR,
				 DNS_T_CNAME, DNS_T_TXT, DNS_T_TLSA, 99 /* SPF: kept raw */};

/* Names come out lowercase, printable, escaped, at most 255 wire octets. */
static void check_name(const char *n)
{
	size_t len = strlen(n);
	if (len == 0 || len > 255 * 4)
		abort();
	for (const char *p = n; *p != '\0'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' ||
		      *p == '_' || *p == '.' || *p == '\\'))
			abort();
}

static uint32_t below(uint32_t n)
{
	return n - 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dns_rr rr;

	for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
		if (dns_rr_parse(types[t], data, size, &rr) < 0)
			continue;
		if (rr.type != types[t] || rr.rdlen != size || memcmp(rr.rdata, data, size) != 0)
			abort();
		switch (rr.type) {
		case DNS_T_MX:
			check_name(rr.u.mx.host);
			break;
		case DNS_T_PTR:
		case DNS_T_CNAME:
			check_name(rr.u.name);
			break;
		case DNS_T_TXT:
			if (rr.u.txt.len >= size || rr.u.txt.text[rr.u.txt.len] != '\0')
				abort();
			break;
		case DNS_T_TLSA:
			if (rr.u.tlsa.len != size - 3)
				abort();
			break;
		}
		dns_rr_clear(&rr);
	}

	/* Records cut from the input by a leading length byte, parsed as MX and sorted. */
	struct dns_rr mx[64];
	size_t n = 0, pos = 0;
	while (pos < size && n < 64) {
		size_t len = data[pos++];
		if (len > size - pos)
			len = size - pos;
		if (dns_rr_parse(DNS_T_MX, data + pos, len, &mx[n]) == 0)
			n++;
		pos += len;
	}
	dns_mx_sort(mx, n, size % 2 ? below : NULL);
	for (size_t i = 0; i < n; i++) {
		if (i > 0 && mx[i].u.mx.preference < mx[i - 1].u.mx.preference)
			abort();
		dns_rr_clear(&mx[i]);
	}
	return 0;
}

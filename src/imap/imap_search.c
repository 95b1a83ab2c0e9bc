/*
 * IMAP SEARCH: the program parser, the i;unicode-casemap folding used for
 * string keys, and the evaluator. Search arguments are untrusted: the
 * program is bounded in keys and depth, and evaluation only reads what the
 * session hands over through struct imap_search_ctx.
 */
#include "imap/imap_search.h"

#include "lib/xalloc.h"
#include "mail/mime.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- i;unicode-casemap ---- */

struct fold_entry {
	uint32_t cp;
	char out[12];
};

/* Generated with Python 3 unicodedata (Unicode 14.0.0): for each code point in
   U+0080-052F, U+1E00-1FFF, U+2100-218F, U+FB00-FB06, U+FF01-FF5E whose image differs,
   NFKD(casefold(NFKD(c))) in UTF-8. */
static const struct fold_entry fold_table[] = {
	{0x00a0, "\x20"},
	{0x00a8, "\x20\xcc\x88"},
	{0x00aa, "\x61"},
	{0x00af, "\x20\xcc\x84"},
	{0x00b2, "\x32"},
	{0x00b3, "\x33"},
	{0x00b4, "\x20\xcc\x81"},
	{0x00b5, "\xce\xbc"},
	{0x00b8, "\x20\xcc\xa7"},
	{0x00b9, "\x31"},
	{0x00ba, "\x6f"},
	{0x00bc, "\x31\xe2\x81\x84\x34"},
	{0x00bd, "\x31\xe2\x81\x84\x32"},
	{0x00be, "\x33\xe2\x81\x84\x34"},
	{0x00c0, "\x61\xcc\x80"},
	{0x00c1, "\x61\xcc\x81"},
	{0x00c2, "\x61\xcc\x82"},
	{0x00c3, "\x61\xcc\x83"},
	{0x00c4, "\x61\xcc\x88"},
	{0x00c5, "\x61\xcc\x8a"},
	{0x00c6, "\xc3\xa6"},
	{0x00c7, "\x63\xcc\xa7"},
	{0x00c8, "\x65\xcc\x80"},
	{0x00c9, "\x65\xcc\x81"},
	{0x00ca, "\x65\xcc\x82"},
	{0x00cb, "\x65\xcc\x88"},
	{0x00cc, "\x69\xcc\x80"},
	{0x00cd, "\x69\xcc\x81"},
	{0x00ce, "\x69\xcc\x82"},
	{0x00cf, "\x69\xcc\x88"},
	{0x00d0, "\xc3\xb0"},
	{0x00d1, "\x6e\xcc\x83"},
	{0x00d2, "\x6f\xcc\x80"},
	{0x00d3, "\x6f\xcc\x81"},
	{0x00d4, "\x6f\xcc\x82"},
	{0x00d5, "\x6f\xcc\x83"},
	{0x00d6, "\x6f\xcc\x88"},
	{0x00d8, "\xc3\xb8"},
	{0x00d9, "\x75\xcc\x80"},
	{0x00da, "\x75\xcc\x81"},
	{0x00db, "\x75\xcc\x82"},
	{0x00dc, "\x75\xcc\x88"},
	{0x00dd, "\x79\xcc\x81"},
	{0x00de, "\xc3\xbe"},
	{0x00df, "\x73\x73"},
	{0x00e0, "\x61\xcc\x80"},
	{0x00e1, "\x61\xcc\x81"},
	{0x00e2, "\x61\xcc\x82"},
	{0x00e3, "\x61\xcc\x83"},
	{0x00e4, "\x61\xcc\x88"},
	{0x00e5, "\x61\xcc\x8a"},
	{0x00e7, "\x63\xcc\xa7"},
	{0x00e8, "\x65\xcc\x80"},
	{0x00e9, "\x65\xcc\x81"},
	{0x00ea, "\x65\xcc\x82"},
	{0x00eb, "\x65\xcc\x88"},
	{0x00ec, "\x69\xcc\x80"},
	{0x00ed, "\x69\xcc\x81"},
	{0x00ee, "\x69\xcc\x82"},
	{0x00ef, "\x69\xcc\x88"},
	{0x00f1, "\x6e\xcc\x83"},
	{0x00f2, "\x6f\xcc\x80"},
	{0x00f3, "\x6f\xcc\x81"},
	{0x00f4, "\x6f\xcc\x82"},
	{0x00f5, "\x6f\xcc\x83"},
	{0x00f6, "\x6f\xcc\x88"},
	{0x00f9, "\x75\xcc\x80"},
	{0x00fa, "\x75\xcc\x81"},
	{0x00fb, "\x75\xcc\x82"},
	{0x00fc, "\x75\xcc\x88"},
	{0x00fd, "\x79\xcc\x81"},
	{0x00ff, "\x79\xcc\x88"},
	{0x0100, "\x61\xcc\x84"},
	{0x0101, "\x61\xcc\x84"},
	{0x0102, "\x61\xcc\x86"},
	{0x0103, "\x61\xcc\x86"},
	{0x0104, "\x61\xcc\xa8"},
	{0x0105, "\x61\xcc\xa8"},
	{0x0106, "\x63\xcc\x81"},
	{0x0107, "\x63\xcc\x81"},
	{0x0108, "\x63\xcc\x82"},
	{0x0109, "\x63\xcc\x82"},
	{0x010a, "\x63\xcc\x87"},
	{0x010b, "\x63\xcc\x87"},
	{0x010c, "\x63\xcc\x8c"},
	{0x010d, "\x63\xcc\x8c"},
	{0x010e, "\x64\xcc\x8c"},
	{0x010f, "\x64\xcc\x8c"},
	{0x0110, "\xc4\x91"},
	{0x0112, "\x65\xcc\x84"},
	{0x0113, "\x65\xcc\x84"},
	{0x0114, "\x65\xcc\x86"},
	{0x0115, "\x65\xcc\x86"},
	{0x0116, "\x65\xcc\x87"},
	{0x0117, "\x65\xcc\x87"},
	{0x0118, "\x65\xcc\xa8"},
	{0x0119, "\x65\xcc\xa8"},
	{0x011a, "\x65\xcc\x8c"},
	{0x011b, "\x65\xcc\x8c"},
	{0x011c, "\x67\xcc\x82"},
	{0x011d, "\x67\xcc\x82"},
	{0x011e, "\x67\xcc\x86"},
	{0x011f, "\x67\xcc\x86"},
	{0x0120, "\x67\xcc\x87"},
	{0x0121, "\x67\xcc\x87"},
	{0x0122, "\x67\xcc\xa7"},
	{0x0123, "\x67\xcc\xa7"},
	{0x0124, "\x68\xcc\x82"},
	{0x0125, "\x68\xcc\x82"},
	{0x0126, "\xc4\xa7"},
	{0x0128, "\x69\xcc\x83"},
	{0x0129, "\x69\xcc\x83"},
	{0x012a, "\x69\xcc\x84"},
	{0x012b, "\x69\xcc\x84"},
	{0x012c, "\x69\xcc\x86"},
	{0x012d, "\x69\xcc\x86"},
	{0x012e, "\x69\xcc\xa8"},
	{0x012f, "\x69\xcc\xa8"},
	{0x0130, "\x69\xcc\x87"},
	{0x0132, "\x69\x6a"},
	{0x0133, "\x69\x6a"},
	{0x0134, "\x6a\xcc\x82"},
	{0x0135, "\x6a\xcc\x82"},
	{0x0136, "\x6b\xcc\xa7"},
	{0x0137, "\x6b\xcc\xa7"},
	{0x0139, "\x6c\xcc\x81"},
	{0x013a, "\x6c\xcc\x81"},
	{0x013b, "\x6c\xcc\xa7"},
	{0x013c, "\x6c\xcc\xa7"},
	{0x013d, "\x6c\xcc\x8c"},
	{0x013e, "\x6c\xcc\x8c"},
	{0x013f, "\x6c\xc2\xb7"},
	{0x0140, "\x6c\xc2\xb7"},
	{0x0141, "\xc5\x82"},
	{0x0143, "\x6e\xcc\x81"},
	{0x0144, "\x6e\xcc\x81"},
	{0x0145, "\x6e\xcc\xa7"},
	{0x0146, "\x6e\xcc\xa7"},
	{0x0147, "\x6e\xcc\x8c"},
	{0x0148, "\x6e\xcc\x8c"},
	{0x0149, "\xca\xbc\x6e"},
	{0x014a, "\xc5\x8b"},
	{0x014c, "\x6f\xcc\x84"},
	{0x014d, "\x6f\xcc\x84"},
	{0x014e, "\x6f\xcc\x86"},
	{0x014f, "\x6f\xcc\x86"},
	{0x0150, "\x6f\xcc\x8b"},
	{0x0151, "\x6f\xcc\x8b"},
	{0x0152, "\xc5\x93"},
	{0x0154, "\x72\xcc\x81"},
	{0x0155, "\x72\xcc\x81"},
	{0x0156, "\x72\xcc\xa7"},
	{0x0157, "\x72\xcc\xa7"},
	{0x0158, "\x72\xcc\x8c"},
	{0x0159, "\x72\xcc\x8c"},
	{0x015a, "\x73\xcc\x81"},
	{0x015b, "\x73\xcc\x81"},
	{0x015c, "\x73\xcc\x82"},
	{0x015d, "\x73\xcc\x82"},
	{0x015e, "\x73\xcc\xa7"},
	{0x015f, "\x73\xcc\xa7"},
	{0x0160, "\x73\xcc\x8c"},
	{0x0161, "\x73\xcc\x8c"},
	{0x0162, "\x74\xcc\xa7"},
	{0x0163, "\x74\xcc\xa7"},
	{0x0164, "\x74\xcc\x8c"},
	{0x0165, "\x74\xcc\x8c"},
	{0x0166, "\xc5\xa7"},
	{0x0168, "\x75\xcc\x83"},
	{0x0169, "\x75\xcc\x83"},
	{0x016a, "\x75\xcc\x84"},
	{0x016b, "\x75\xcc\x84"},
	{0x016c, "\x75\xcc\x86"},
	{0x016d, "\x75\xcc\x86"},
	{0x016e, "\x75\xcc\x8a"},
	{0x016f, "\x75\xcc\x8a"},
	{0x0170, "\x75\xcc\x8b"},
	{0x0171, "\x75\xcc\x8b"},
	{0x0172, "\x75\xcc\xa8"},
	{0x0173, "\x75\xcc\xa8"},
	{0x0174, "\x77\xcc\x82"},
	{0x0175, "\x77\xcc\x82"},
	{0x0176, "\x79\xcc\x82"},
	{0x0177, "\x79\xcc\x82"},
	{0x0178, "\x79\xcc\x88"},
	{0x0179, "\x7a\xcc\x81"},
	{0x017a, "\x7a\xcc\x81"},
	{0x017b, "\x7a\xcc\x87"},
	{0x017c, "\x7a\xcc\x87"},
	{0x017d, "\x7a\xcc\x8c"},
	{0x017e, "\x7a\xcc\x8c"},
	{0x017f, "\x73"},
	{0x0181, "\xc9\x93"},
	{0x0182, "\xc6\x83"},
	{0x0184, "\xc6\x85"},
	{0x0186, "\xc9\x94"},
	{0x0187, "\xc6\x88"},
	{0x0189, "\xc9\x96"},
	{0x018a, "\xc9\x97"},
	{0x018b, "\xc6\x8c"},
	{0x018e, "\xc7\x9d"},
	{0x018f, "\xc9\x99"},
	{0x0190, "\xc9\x9b"},
	{0x0191, "\xc6\x92"},
	{0x0193, "\xc9\xa0"},
	{0x0194, "\xc9\xa3"},
	{0x0196, "\xc9\xa9"},
	{0x0197, "\xc9\xa8"},
	{0x0198, "\xc6\x99"},
	{0x019c, "\xc9\xaf"},
	{0x019d, "\xc9\xb2"},
	{0x019f, "\xc9\xb5"},
	{0x01a0, "\x6f\xcc\x9b"},
	{0x01a1, "\x6f\xcc\x9b"},
	{0x01a2, "\xc6\xa3"},
	{0x01a4, "\xc6\xa5"},
	{0x01a6, "\xca\x80"},
	{0x01a7, "\xc6\xa8"},
	{0x01a9, "\xca\x83"},
	{0x01ac, "\xc6\xad"},
	{0x01ae, "\xca\x88"},
	{0x01af, "\x75\xcc\x9b"},
	{0x01b0, "\x75\xcc\x9b"},
	{0x01b1, "\xca\x8a"},
	{0x01b2, "\xca\x8b"},
	{0x01b3, "\xc6\xb4"},
	{0x01b5, "\xc6\xb6"},
	{0x01b7, "\xca\x92"},
	{0x01b8, "\xc6\xb9"},
	{0x01bc, "\xc6\xbd"},
	{0x01c4, "\x64\x7a\xcc\x8c"},
	{0x01c5, "\x64\x7a\xcc\x8c"},
	{0x01c6, "\x64\x7a\xcc\x8c"},
	{0x01c7, "\x6c\x6a"},
	{0x01c8, "\x6c\x6a"},
	{0x01c9, "\x6c\x6a"},
	{0x01ca, "\x6e\x6a"},
	{0x01cb, "\x6e\x6a"},
	{0x01cc, "\x6e\x6a"},
	{0x01cd, "\x61\xcc\x8c"},
	{0x01ce, "\x61\xcc\x8c"},
	{0x01cf, "\x69\xcc\x8c"},
	{0x01d0, "\x69\xcc\x8c"},
	{0x01d1, "\x6f\xcc\x8c"},
	{0x01d2, "\x6f\xcc\x8c"},
	{0x01d3, "\x75\xcc\x8c"},
	{0x01d4, "\x75\xcc\x8c"},
	{0x01d5, "\x75\xcc\x88\xcc\x84"},
	{0x01d6, "\x75\xcc\x88\xcc\x84"},
	{0x01d7, "\x75\xcc\x88\xcc\x81"},
	{0x01d8, "\x75\xcc\x88\xcc\x81"},
	{0x01d9, "\x75\xcc\x88\xcc\x8c"},
	{0x01da, "\x75\xcc\x88\xcc\x8c"},
	{0x01db, "\x75\xcc\x88\xcc\x80"},
	{0x01dc, "\x75\xcc\x88\xcc\x80"},
	{0x01de, "\x61\xcc\x88\xcc\x84"},
	{0x01df, "\x61\xcc\x88\xcc\x84"},
	{0x01e0, "\x61\xcc\x87\xcc\x84"},
	{0x01e1, "\x61\xcc\x87\xcc\x84"},
	{0x01e2, "\xc3\xa6\xcc\x84"},
	{0x01e3, "\xc3\xa6\xcc\x84"},
	{0x01e4, "\xc7\xa5"},
	{0x01e6, "\x67\xcc\x8c"},
	{0x01e7, "\x67\xcc\x8c"},
	{0x01e8, "\x6b\xcc\x8c"},
	{0x01e9, "\x6b\xcc\x8c"},
	{0x01ea, "\x6f\xcc\xa8"},
	{0x01eb, "\x6f\xcc\xa8"},
	{0x01ec, "\x6f\xcc\xa8\xcc\x84"},
	{0x01ed, "\x6f\xcc\xa8\xcc\x84"},
	{0x01ee, "\xca\x92\xcc\x8c"},
	{0x01ef, "\xca\x92\xcc\x8c"},
	{0x01f0, "\x6a\xcc\x8c"},
	{0x01f1, "\x64\x7a"},
	{0x01f2, "\x64\x7a"},
	{0x01f3, "\x64\x7a"},
	{0x01f4, "\x67\xcc\x81"},
	{0x01f5, "\x67\xcc\x81"},
	{0x01f6, "\xc6\x95"},
	{0x01f7, "\xc6\xbf"},
	{0x01f8, "\x6e\xcc\x80"},
	{0x01f9, "\x6e\xcc\x80"},
	{0x01fa, "\x61\xcc\x8a\xcc\x81"},
	{0x01fb, "\x61\xcc\x8a\xcc\x81"},
	{0x01fc, "\xc3\xa6\xcc\x81"},
	{0x01fd, "\xc3\xa6\xcc\x81"},
	{0x01fe, "\xc3\xb8\xcc\x81"},
	{0x01ff, "\xc3\xb8\xcc\x81"},
	{0x0200, "\x61\xcc\x8f"},
	{0x0201, "\x61\xcc\x8f"},
	{0x0202, "\x61\xcc\x91"},
	{0x0203, "\x61\xcc\x91"},
	{0x0204, "\x65\xcc\x8f"},
	{0x0205, "\x65\xcc\x8f"},
	{0x0206, "\x65\xcc\x91"},
	{0x0207, "\x65\xcc\x91"},
	{0x0208, "\x69\xcc\x8f"},
	{0x0209, "\x69\xcc\x8f"},
	{0x020a, "\x69\xcc\x91"},
	{0x020b, "\x69\xcc\x91"},
	{0x020c, "\x6f\xcc\x8f"},
	{0x020d, "\x6f\xcc\x8f"},
	{0x020e, "\x6f\xcc\x91"},
	{0x020f, "\x6f\xcc\x91"},
	{0x0210, "\x72\xcc\x8f"},
	{0x0211, "\x72\xcc\x8f"},
	{0x0212, "\x72\xcc\x91"},
	{0x0213, "\x72\xcc\x91"},
	{0x0214, "\x75\xcc\x8f"},
	{0x0215, "\x75\xcc\x8f"},
	{0x0216, "\x75\xcc\x91"},
	{0x0217, "\x75\xcc\x91"},
	{0x0218, "\x73\xcc\xa6"},
	{0x0219, "\x73\xcc\xa6"},
	{0x021a, "\x74\xcc\xa6"},
	{0x021b, "\x74\xcc\xa6"},
	{0x021c, "\xc8\x9d"},
	{0x021e, "\x68\xcc\x8c"},
	{0x021f, "\x68\xcc\x8c"},
	{0x0220, "\xc6\x9e"},
	{0x0222, "\xc8\xa3"},
	{0x0224, "\xc8\xa5"},
	{0x0226, "\x61\xcc\x87"},
	{0x0227, "\x61\xcc\x87"},
	{0x0228, "\x65\xcc\xa7"},
	{0x0229, "\x65\xcc\xa7"},
	{0x022a, "\x6f\xcc\x88\xcc\x84"},
	{0x022b, "\x6f\xcc\x88\xcc\x84"},
	{0x022c, "\x6f\xcc\x83\xcc\x84"},
	{0x022d, "\x6f\xcc\x83\xcc\x84"},
	{0x022e, "\x6f\xcc\x87"},
	{0x022f, "\x6f\xcc\x87"},
	{0x0230, "\x6f\xcc\x87\xcc\x84"},
	{0x0231, "\x6f\xcc\x87\xcc\x84"},
	{0x0232, "\x79\xcc\x84"},
	{0x0233, "\x79\xcc\x84"},
	{0x023a, "\xe2\xb1\xa5"},
	{0x023b, "\xc8\xbc"},
	{0x023d, "\xc6\x9a"},
	{0x023e, "\xe2\xb1\xa6"},
	{0x0241, "\xc9\x82"},
	{0x0243, "\xc6\x80"},
	{0x0244, "\xca\x89"},
	{0x0245, "\xca\x8c"},
	{0x0246, "\xc9\x87"},
	{0x0248, "\xc9\x89"},
	{0x024a, "\xc9\x8b"},
	{0x024c, "\xc9\x8d"},
	{0x024e, "\xc9\x8f"},
	{0x0370, "\xcd\xb1"},
	{0x0372, "\xcd\xb3"},
	{0x0374, "\xca\xb9"},
	{0x0376, "\xcd\xb7"},
	{0x037a, "\x20\xce\xb9"},
	{0x037e, "\x3b"},
	{0x037f, "\xcf\xb3"},
	{0x0384, "\x20\xcc\x81"},
	{0x0385, "\x20\xcc\x88\xcc\x81"},
	{0x0386, "\xce\xb1\xcc\x81"},
	{0x0387, "\xc2\xb7"},
	{0x0388, "\xce\xb5\xcc\x81"},
	{0x0389, "\xce\xb7\xcc\x81"},
	{0x038a, "\xce\xb9\xcc\x81"},
	{0x038c, "\xce\xbf\xcc\x81"},
	{0x038e, "\xcf\x85\xcc\x81"},
	{0x038f, "\xcf\x89\xcc\x81"},
	{0x0390, "\xce\xb9\xcc\x88\xcc\x81"},
	{0x0391, "\xce\xb1"},
	{0x0392, "\xce\xb2"},
	{0x0393, "\xce\xb3"},
	{0x0394, "\xce\xb4"},
	{0x0395, "\xce\xb5"},
	{0x0396, "\xce\xb6"},
	{0x0397, "\xce\xb7"},
	{0x0398, "\xce\xb8"},
	{0x0399, "\xce\xb9"},
	{0x039a, "\xce\xba"},
	{0x039b, "\xce\xbb"},
	{0x039c, "\xce\xbc"},
	{0x039d, "\xce\xbd"},
	{0x039e, "\xce\xbe"},
	{0x039f, "\xce\xbf"},
	{0x03a0, "\xcf\x80"},
	{0x03a1, "\xcf\x81"},
	{0x03a3, "\xcf\x83"},
	{0x03a4, "\xcf\x84"},
	{0x03a5, "\xcf\x85"},
	{0x03a6, "\xcf\x86"},
	{0x03a7, "\xcf\x87"},
	{0x03a8, "\xcf\x88"},
	{0x03a9, "\xcf\x89"},
	{0x03aa, "\xce\xb9\xcc\x88"},
	{0x03ab, "\xcf\x85\xcc\x88"},
	{0x03ac, "\xce\xb1\xcc\x81"},
	{0x03ad, "\xce\xb5\xcc\x81"},
	{0x03ae, "\xce\xb7\xcc\x81"},
	{0x03af, "\xce\xb9\xcc\x81"},
	{0x03b0, "\xcf\x85\xcc\x88\xcc\x81"},
	{0x03c2, "\xcf\x83"},
	{0x03ca, "\xce\xb9\xcc\x88"},
	{0x03cb, "\xcf\x85\xcc\x88"},
	{0x03cc, "\xce\xbf\xcc\x81"},
	{0x03cd, "\xcf\x85\xcc\x81"},
	{0x03ce, "\xcf\x89\xcc\x81"},
	{0x03cf, "\xcf\x97"},
	{0x03d0, "\xce\xb2"},
	{0x03d1, "\xce\xb8"},
	{0x03d2, "\xcf\x85"},
	{0x03d3, "\xcf\x85\xcc\x81"},
	{0x03d4, "\xcf\x85\xcc\x88"},
	{0x03d5, "\xcf\x86"},
	{0x03d6, "\xcf\x80"},
	{0x03d8, "\xcf\x99"},
	{0x03da, "\xcf\x9b"},
	{0x03dc, "\xcf\x9d"},
	{0x03de, "\xcf\x9f"},
	{0x03e0, "\xcf\xa1"},
	{0x03e2, "\xcf\xa3"},
	{0x03e4, "\xcf\xa5"},
	{0x03e6, "\xcf\xa7"},
	{0x03e8, "\xcf\xa9"},
	{0x03ea, "\xcf\xab"},
	{0x03ec, "\xcf\xad"},
	{0x03ee, "\xcf\xaf"},
	{0x03f0, "\xce\xba"},
	{0x03f1, "\xcf\x81"},
	{0x03f2, "\xcf\x83"},
	{0x03f4, "\xce\xb8"},
	{0x03f5, "\xce\xb5"},
	{0x03f7, "\xcf\xb8"},
	{0x03f9, "\xcf\x83"},
	{0x03fa, "\xcf\xbb"},
	{0x03fd, "\xcd\xbb"},
	{0x03fe, "\xcd\xbc"},
	{0x03ff, "\xcd\xbd"},
	{0x0400, "\xd0\xb5\xcc\x80"},
	{0x0401, "\xd0\xb5\xcc\x88"},
	{0x0402, "\xd1\x92"},
	{0x0403, "\xd0\xb3\xcc\x81"},
	{0x0404, "\xd1\x94"},
	{0x0405, "\xd1\x95"},
	{0x0406, "\xd1\x96"},
	{0x0407, "\xd1\x96\xcc\x88"},
	{0x0408, "\xd1\x98"},
	{0x0409, "\xd1\x99"},
	{0x040a, "\xd1\x9a"},
	{0x040b, "\xd1\x9b"},
	{0x040c, "\xd0\xba\xcc\x81"},
	{0x040d, "\xd0\xb8\xcc\x80"},
	{0x040e, "\xd1\x83\xcc\x86"},
	{0x040f, "\xd1\x9f"},
	{0x0410, "\xd0\xb0"},
	{0x0411, "\xd0\xb1"},
	{0x0412, "\xd0\xb2"},
	{0x0413, "\xd0\xb3"},
	{0x0414, "\xd0\xb4"},
	{0x0415, "\xd0\xb5"},
	{0x0416, "\xd0\xb6"},
	{0x0417, "\xd0\xb7"},
	{0x0418, "\xd0\xb8"},
	{0x0419, "\xd0\xb8\xcc\x86"},
	{0x041a, "\xd0\xba"},
	{0x041b, "\xd0\xbb"},
	{0x041c, "\xd0\xbc"},
	{0x041d, "\xd0\xbd"},
	{0x041e, "\xd0\xbe"},
	{0x041f, "\xd0\xbf"},
	{0x0420, "\xd1\x80"},
	{0x0421, "\xd1\x81"},
	{0x0422, "\xd1\x82"},
	{0x0423, "\xd1\x83"},
	{0x0424, "\xd1\x84"},
	{0x0425, "\xd1\x85"},
	{0x0426, "\xd1\x86"},
	{0x0427, "\xd1\x87"},
	{0x0428, "\xd1\x88"},
	{0x0429, "\xd1\x89"},
	{0x042a, "\xd1\x8a"},
	{0x042b, "\xd1\x8b"},
	{0x042c, "\xd1\x8c"},
	{0x042d, "\xd1\x8d"},
	{0x042e, "\xd1\x8e"},
	{0x042f, "\xd1\x8f"},
	{0x0439, "\xd0\xb8\xcc\x86"},
	{0x0450, "\xd0\xb5\xcc\x80"},
	{0x0451, "\xd0\xb5\xcc\x88"},
	{0x0453, "\xd0\xb3\xcc\x81"},
	{0x0457, "\xd1\x96\xcc\x88"},
	{0x045c, "\xd0\xba\xcc\x81"},
	{0x045d, "\xd0\xb8\xcc\x80"},
	{0x045e, "\xd1\x83\xcc\x86"},
	{0x0460, "\xd1\xa1"},
	{0x0462, "\xd1\xa3"},
	{0x0464, "\xd1\xa5"},
	{0x0466, "\xd1\xa7"},
	{0x0468, "\xd1\xa9"},
	{0x046a, "\xd1\xab"},
	{0x046c, "\xd1\xad"},
	{0x046e, "\xd1\xaf"},
	{0x0470, "\xd1\xb1"},
	{0x0472, "\xd1\xb3"},
	{0x0474, "\xd1\xb5"},
	{0x0476, "\xd1\xb5\xcc\x8f"},
	{0x0477, "\xd1\xb5\xcc\x8f"},
	{0x0478, "\xd1\xb9"},
	{0x047a, "\xd1\xbb"},
	{0x047c, "\xd1\xbd"},
	{0x047e, "\xd1\xbf"},
	{0x0480, "\xd2\x81"},
	{0x048a, "\xd2\x8b"},
	{0x048c, "\xd2\x8d"},
	{0x048e, "\xd2\x8f"},
	{0x0490, "\xd2\x91"},
	{0x0492, "\xd2\x93"},
	{0x0494, "\xd2\x95"},
	{0x0496, "\xd2\x97"},
	{0x0498, "\xd2\x99"},
	{0x049a, "\xd2\x9b"},
	{0x049c, "\xd2\x9d"},
	{0x049e, "\xd2\x9f"},
	{0x04a0, "\xd2\xa1"},
	{0x04a2, "\xd2\xa3"},
	{0x04a4, "\xd2\xa5"},
	{0x04a6, "\xd2\xa7"},
	{0x04a8, "\xd2\xa9"},
	{0x04aa, "\xd2\xab"},
	{0x04ac, "\xd2\xad"},
	{0x04ae, "\xd2\xaf"},
	{0x04b0, "\xd2\xb1"},
	{0x04b2, "\xd2\xb3"},
	{0x04b4, "\xd2\xb5"},
	{0x04b6, "\xd2\xb7"},
	{0x04b8, "\xd2\xb9"},
	{0x04ba, "\xd2\xbb"},
	{0x04bc, "\xd2\xbd"},
	{0x04be, "\xd2\xbf"},
	{0x04c0, "\xd3\x8f"},
	{0x04c1, "\xd0\xb6\xcc\x86"},
	{0x04c2, "\xd0\xb6\xcc\x86"},
	{0x04c3, "\xd3\x84"},
	{0x04c5, "\xd3\x86"},
	{0x04c7, "\xd3\x88"},
	{0x04c9, "\xd3\x8a"},
	{0x04cb, "\xd3\x8c"},
	{0x04cd, "\xd3\x8e"},
	{0x04d0, "\xd0\xb0\xcc\x86"},
	{0x04d1, "\xd0\xb0\xcc\x86"},
	{0x04d2, "\xd0\xb0\xcc\x88"},
	{0x04d3, "\xd0\xb0\xcc\x88"},
	{0x04d4, "\xd3\x95"},
	{0x04d6, "\xd0\xb5\xcc\x86"},
	{0x04d7, "\xd0\xb5\xcc\x86"},
	{0x04d8, "\xd3\x99"},
	{0x04da, "\xd3\x99\xcc\x88"},
	{0x04db, "\xd3\x99\xcc\x88"},
	{0x04dc, "\xd0\xb6\xcc\x88"},
	{0x04dd, "\xd0\xb6\xcc\x88"},
	{0x04de, "\xd0\xb7\xcc\x88"},
	{0x04df, "\xd0\xb7\xcc\x88"},
	{0x04e0, "\xd3\xa1"},
	{0x04e2, "\xd0\xb8\xcc\x84"},
	{0x04e3, "\xd0\xb8\xcc\x84"},
	{0x04e4, "\xd0\xb8\xcc\x88"},
	{0x04e5, "\xd0\xb8\xcc\x88"},
	{0x04e6, "\xd0\xbe\xcc\x88"},
	{0x04e7, "\xd0\xbe\xcc\x88"},
	{0x04e8, "\xd3\xa9"},
	{0x04ea, "\xd3\xa9\xcc\x88"},
	{0x04eb, "\xd3\xa9\xcc\x88"},
	{0x04ec, "\xd1\x8d\xcc\x88"},
	{0x04ed, "\xd1\x8d\xcc\x88"},
	{0x04ee, "\xd1\x83\xcc\x84"},
	{0x04ef, "\xd1\x83\xcc\x84"},
	{0x04f0, "\xd1\x83\xcc\x88"},
	{0x04f1, "\xd1\x83\xcc\x88"},
	{0x04f2, "\xd1\x83\xcc\x8b"},
	{0x04f3, "\xd1\x83\xcc\x8b"},
	{0x04f4, "\xd1\x87\xcc\x88"},
	{0x04f5, "\xd1\x87\xcc\x88"},
	{0x04f6, "\xd3\xb7"},
	{0x04f8, "\xd1\x8b\xcc\x88"},
	{0x04f9, "\xd1\x8b\xcc\x88"},
	{0x04fa, "\xd3\xbb"},
	{0x04fc, "\xd3\xbd"},
	{0x04fe, "\xd3\xbf"},
	{0x0500, "\xd4\x81"},
	{0x0502, "\xd4\x83"},
	{0x0504, "\xd4\x85"},
	{0x0506, "\xd4\x87"},
	{0x0508, "\xd4\x89"},
	{0x050a, "\xd4\x8b"},
	{0x050c, "\xd4\x8d"},
	{0x050e, "\xd4\x8f"},
	{0x0510, "\xd4\x91"},
	{0x0512, "\xd4\x93"},
	{0x0514, "\xd4\x95"},
	{0x0516, "\xd4\x97"},
	{0x0518, "\xd4\x99"},
	{0x051a, "\xd4\x9b"},
	{0x051c, "\xd4\x9d"},
	{0x051e, "\xd4\x9f"},
	{0x0520, "\xd4\xa1"},
	{0x0522, "\xd4\xa3"},
	{0x0524, "\xd4\xa5"},
	{0x0526, "\xd4\xa7"},
	{0x0528, "\xd4\xa9"},
	{0x052a, "\xd4\xab"},
	{0x052c, "\xd4\xad"},
	{0x052e, "\xd4\xaf"},
	{0x1e00, "\x61\xcc\xa5"},
	{0x1e01, "\x61\xcc\xa5"},
	{0x1e02, "\x62\xcc\x87"},
	{0x1e03, "\x62\xcc\x87"},
	{0x1e04, "\x62\xcc\xa3"},
	{0x1e05, "\x62\xcc\xa3"},
	{0x1e06, "\x62\xcc\xb1"},
	{0x1e07, "\x62\xcc\xb1"},
	{0x1e08, "\x63\xcc\xa7\xcc\x81"},
	{0x1e09, "\x63\xcc\xa7\xcc\x81"},
	{0x1e0a, "\x64\xcc\x87"},
	{0x1e0b, "\x64\xcc\x87"},
	{0x1e0c, "\x64\xcc\xa3"},
	{0x1e0d, "\x64\xcc\xa3"},
	{0x1e0e, "\x64\xcc\xb1"},
	{0x1e0f, "\x64\xcc\xb1"},
	{0x1e10, "\x64\xcc\xa7"},
	{0x1e11, "\x64\xcc\xa7"},
	{0x1e12, "\x64\xcc\xad"},
	{0x1e13, "\x64\xcc\xad"},
	{0x1e14, "\x65\xcc\x84\xcc\x80"},
	{0x1e15, "\x65\xcc\x84\xcc\x80"},
	{0x1e16, "\x65\xcc\x84\xcc\x81"},
	{0x1e17, "\x65\xcc\x84\xcc\x81"},
	{0x1e18, "\x65\xcc\xad"},
	{0x1e19, "\x65\xcc\xad"},
	{0x1e1a, "\x65\xcc\xb0"},
	{0x1e1b, "\x65\xcc\xb0"},
	{0x1e1c, "\x65\xcc\xa7\xcc\x86"},
	{0x1e1d, "\x65\xcc\xa7\xcc\x86"},
	{0x1e1e, "\x66\xcc\x87"},
	{0x1e1f, "\x66\xcc\x87"},
	{0x1e20, "\x67\xcc\x84"},
	{0x1e21, "\x67\xcc\x84"},
	{0x1e22, "\x68\xcc\x87"},
	{0x1e23, "\x68\xcc\x87"},
	{0x1e24, "\x68\xcc\xa3"},
	{0x1e25, "\x68\xcc\xa3"},
	{0x1e26, "\x68\xcc\x88"},
	{0x1e27, "\x68\xcc\x88"},
	{0x1e28, "\x68\xcc\xa7"},
	{0x1e29, "\x68\xcc\xa7"},
	{0x1e2a, "\x68\xcc\xae"},
	{0x1e2b, "\x68\xcc\xae"},
	{0x1e2c, "\x69\xcc\xb0"},
	{0x1e2d, "\x69\xcc\xb0"},
	{0x1e2e, "\x69\xcc\x88\xcc\x81"},
	{0x1e2f, "\x69\xcc\x88\xcc\x81"},
	{0x1e30, "\x6b\xcc\x81"},
	{0x1e31, "\x6b\xcc\x81"},
	{0x1e32, "\x6b\xcc\xa3"},
	{0x1e33, "\x6b\xcc\xa3"},
	{0x1e34, "\x6b\xcc\xb1"},
	{0x1e35, "\x6b\xcc\xb1"},
	{0x1e36, "\x6c\xcc\xa3"},
	{0x1e37, "\x6c\xcc\xa3"},
	{0x1e38, "\x6c\xcc\xa3\xcc\x84"},
	{0x1e39, "\x6c\xcc\xa3\xcc\x84"},
	{0x1e3a, "\x6c\xcc\xb1"},
	{0x1e3b, "\x6c\xcc\xb1"},
	{0x1e3c, "\x6c\xcc\xad"},
	{0x1e3d, "\x6c\xcc\xad"},
	{0x1e3e, "\x6d\xcc\x81"},
	{0x1e3f, "\x6d\xcc\x81"},
	{0x1e40, "\x6d\xcc\x87"},
	{0x1e41, "\x6d\xcc\x87"},
	{0x1e42, "\x6d\xcc\xa3"},
	{0x1e43, "\x6d\xcc\xa3"},
	{0x1e44, "\x6e\xcc\x87"},
	{0x1e45, "\x6e\xcc\x87"},
	{0x1e46, "\x6e\xcc\xa3"},
	{0x1e47, "\x6e\xcc\xa3"},
	{0x1e48, "\x6e\xcc\xb1"},
	{0x1e49, "\x6e\xcc\xb1"},
	{0x1e4a, "\x6e\xcc\xad"},
	{0x1e4b, "\x6e\xcc\xad"},
	{0x1e4c, "\x6f\xcc\x83\xcc\x81"},
	{0x1e4d, "\x6f\xcc\x83\xcc\x81"},
	{0x1e4e, "\x6f\xcc\x83\xcc\x88"},
	{0x1e4f, "\x6f\xcc\x83\xcc\x88"},
	{0x1e50, "\x6f\xcc\x84\xcc\x80"},
	{0x1e51, "\x6f\xcc\x84\xcc\x80"},
	{0x1e52, "\x6f\xcc\x84\xcc\x81"},
	{0x1e53, "\x6f\xcc\x84\xcc\x81"},
	{0x1e54, "\x70\xcc\x81"},
	{0x1e55, "\x70\xcc\x81"},
	{0x1e56, "\x70\xcc\x87"},
	{0x1e57, "\x70\xcc\x87"},
	{0x1e58, "\x72\xcc\x87"},
	{0x1e59, "\x72\xcc\x87"},
	{0x1e5a, "\x72\xcc\xa3"},
	{0x1e5b, "\x72\xcc\xa3"},
	{0x1e5c, "\x72\xcc\xa3\xcc\x84"},
	{0x1e5d, "\x72\xcc\xa3\xcc\x84"},
	{0x1e5e, "\x72\xcc\xb1"},
	{0x1e5f, "\x72\xcc\xb1"},
	{0x1e60, "\x73\xcc\x87"},
	{0x1e61, "\x73\xcc\x87"},
	{0x1e62, "\x73\xcc\xa3"},
	{0x1e63, "\x73\xcc\xa3"},
	{0x1e64, "\x73\xcc\x81\xcc\x87"},
	{0x1e65, "\x73\xcc\x81\xcc\x87"},
	{0x1e66, "\x73\xcc\x8c\xcc\x87"},
	{0x1e67, "\x73\xcc\x8c\xcc\x87"},
	{0x1e68, "\x73\xcc\xa3\xcc\x87"},
	{0x1e69, "\x73\xcc\xa3\xcc\x87"},
	{0x1e6a, "\x74\xcc\x87"},
	{0x1e6b, "\x74\xcc\x87"},
	{0x1e6c, "\x74\xcc\xa3"},
	{0x1e6d, "\x74\xcc\xa3"},
	{0x1e6e, "\x74\xcc\xb1"},
	{0x1e6f, "\x74\xcc\xb1"},
	{0x1e70, "\x74\xcc\xad"},
	{0x1e71, "\x74\xcc\xad"},
	{0x1e72, "\x75\xcc\xa4"},
	{0x1e73, "\x75\xcc\xa4"},
	{0x1e74, "\x75\xcc\xb0"},
	{0x1e75, "\x75\xcc\xb0"},
	{0x1e76, "\x75\xcc\xad"},
	{0x1e77, "\x75\xcc\xad"},
	{0x1e78, "\x75\xcc\x83\xcc\x81"},
	{0x1e79, "\x75\xcc\x83\xcc\x81"},
	{0x1e7a, "\x75\xcc\x84\xcc\x88"},
	{0x1e7b, "\x75\xcc\x84\xcc\x88"},
	{0x1e7c, "\x76\xcc\x83"},
	{0x1e7d, "\x76\xcc\x83"},
	{0x1e7e, "\x76\xcc\xa3"},
	{0x1e7f, "\x76\xcc\xa3"},
	{0x1e80, "\x77\xcc\x80"},
	{0x1e81, "\x77\xcc\x80"},
	{0x1e82, "\x77\xcc\x81"},
	{0x1e83, "\x77\xcc\x81"},
	{0x1e84, "\x77\xcc\x88"},
	{0x1e85, "\x77\xcc\x88"},
	{0x1e86, "\x77\xcc\x87"},
	{0x1e87, "\x77\xcc\x87"},
	{0x1e88, "\x77\xcc\xa3"},
	{0x1e89, "\x77\xcc\xa3"},
	{0x1e8a, "\x78\xcc\x87"},
	{0x1e8b, "\x78\xcc\x87"},
	{0x1e8c, "\x78\xcc\x88"},
	{0x1e8d, "\x78\xcc\x88"},
	{0x1e8e, "\x79\xcc\x87"},
	{0x1e8f, "\x79\xcc\x87"},
	{0x1e90, "\x7a\xcc\x82"},
	{0x1e91, "\x7a\xcc\x82"},
	{0x1e92, "\x7a\xcc\xa3"},
	{0x1e93, "\x7a\xcc\xa3"},
	{0x1e94, "\x7a\xcc\xb1"},
	{0x1e95, "\x7a\xcc\xb1"},
	{0x1e96, "\x68\xcc\xb1"},
	{0x1e97, "\x74\xcc\x88"},
	{0x1e98, "\x77\xcc\x8a"},
	{0x1e99, "\x79\xcc\x8a"},
	{0x1e9a, "\x61\xca\xbe"},
	{0x1e9b, "\x73\xcc\x87"},
	{0x1e9e, "\x73\x73"},
	{0x1ea0, "\x61\xcc\xa3"},
	{0x1ea1, "\x61\xcc\xa3"},
	{0x1ea2, "\x61\xcc\x89"},
	{0x1ea3, "\x61\xcc\x89"},
	{0x1ea4, "\x61\xcc\x82\xcc\x81"},
	{0x1ea5, "\x61\xcc\x82\xcc\x81"},
	{0x1ea6, "\x61\xcc\x82\xcc\x80"},
	{0x1ea7, "\x61\xcc\x82\xcc\x80"},
	{0x1ea8, "\x61\xcc\x82\xcc\x89"},
	{0x1ea9, "\x61\xcc\x82\xcc\x89"},
	{0x1eaa, "\x61\xcc\x82\xcc\x83"},
	{0x1eab, "\x61\xcc\x82\xcc\x83"},
	{0x1eac, "\x61\xcc\xa3\xcc\x82"},
	{0x1ead, "\x61\xcc\xa3\xcc\x82"},
	{0x1eae, "\x61\xcc\x86\xcc\x81"},
	{0x1eaf, "\x61\xcc\x86\xcc\x81"},
	{0x1eb0, "\x61\xcc\x86\xcc\x80"},
	{0x1eb1, "\x61\xcc\x86\xcc\x80"},
	{0x1eb2, "\x61\xcc\x86\xcc\x89"},
	{0x1eb3, "\x61\xcc\x86\xcc\x89"},
	{0x1eb4, "\x61\xcc\x86\xcc\x83"},
	{0x1eb5, "\x61\xcc\x86\xcc\x83"},
	{0x1eb6, "\x61\xcc\xa3\xcc\x86"},
	{0x1eb7, "\x61\xcc\xa3\xcc\x86"},
	{0x1eb8, "\x65\xcc\xa3"},
	{0x1eb9, "\x65\xcc\xa3"},
	{0x1eba, "\x65\xcc\x89"},
	{0x1ebb, "\x65\xcc\x89"},
	{0x1ebc, "\x65\xcc\x83"},
	{0x1ebd, "\x65\xcc\x83"},
	{0x1ebe, "\x65\xcc\x82\xcc\x81"},
	{0x1ebf, "\x65\xcc\x82\xcc\x81"},
	{0x1ec0, "\x65\xcc\x82\xcc\x80"},
	{0x1ec1, "\x65\xcc\x82\xcc\x80"},
	{0x1ec2, "\x65\xcc\x82\xcc\x89"},
	{0x1ec3, "\x65\xcc\x82\xcc\x89"},
	{0x1ec4, "\x65\xcc\x82\xcc\x83"},
	{0x1ec5, "\x65\xcc\x82\xcc\x83"},
	{0x1ec6, "\x65\xcc\xa3\xcc\x82"},
	{0x1ec7, "\x65\xcc\xa3\xcc\x82"},
	{0x1ec8, "\x69\xcc\x89"},
	{0x1ec9, "\x69\xcc\x89"},
	{0x1eca, "\x69\xcc\xa3"},
	{0x1ecb, "\x69\xcc\xa3"},
	{0x1ecc, "\x6f\xcc\xa3"},
	{0x1ecd, "\x6f\xcc\xa3"},
	{0x1ece, "\x6f\xcc\x89"},
	{0x1ecf, "\x6f\xcc\x89"},
	{0x1ed0, "\x6f\xcc\x82\xcc\x81"},
	{0x1ed1, "\x6f\xcc\x82\xcc\x81"},
	{0x1ed2, "\x6f\xcc\x82\xcc\x80"},
	{0x1ed3, "\x6f\xcc\x82\xcc\x80"},
	{0x1ed4, "\x6f\xcc\x82\xcc\x89"},
	{0x1ed5, "\x6f\xcc\x82\xcc\x89"},
	{0x1ed6, "\x6f\xcc\x82\xcc\x83"},
	{0x1ed7, "\x6f\xcc\x82\xcc\x83"},
	{0x1ed8, "\x6f\xcc\xa3\xcc\x82"},
	{0x1ed9, "\x6f\xcc\xa3\xcc\x82"},
	{0x1eda, "\x6f\xcc\x9b\xcc\x81"},
	{0x1edb, "\x6f\xcc\x9b\xcc\x81"},
	{0x1edc, "\x6f\xcc\x9b\xcc\x80"},
	{0x1edd, "\x6f\xcc\x9b\xcc\x80"},
	{0x1ede, "\x6f\xcc\x9b\xcc\x89"},
	{0x1edf, "\x6f\xcc\x9b\xcc\x89"},
	{0x1ee0, "\x6f\xcc\x9b\xcc\x83"},
	{0x1ee1, "\x6f\xcc\x9b\xcc\x83"},
	{0x1ee2, "\x6f\xcc\x9b\xcc\xa3"},
	{0x1ee3, "\x6f\xcc\x9b\xcc\xa3"},
	{0x1ee4, "\x75\xcc\xa3"},
	{0x1ee5, "\x75\xcc\xa3"},
	{0x1ee6, "\x75\xcc\x89"},
	{0x1ee7, "\x75\xcc\x89"},
	{0x1ee8, "\x75\xcc\x9b\xcc\x81"},
	{0x1ee9, "\x75\xcc\x9b\xcc\x81"},
	{0x1eea, "\x75\xcc\x9b\xcc\x80"},
	{0x1eeb, "\x75\xcc\x9b\xcc\x80"},
	{0x1eec, "\x75\xcc\x9b\xcc\x89"},
	{0x1eed, "\x75\xcc\x9b\xcc\x89"},
	{0x1eee, "\x75\xcc\x9b\xcc\x83"},
	{0x1eef, "\x75\xcc\x9b\xcc\x83"},
	{0x1ef0, "\x75\xcc\x9b\xcc\xa3"},
	{0x1ef1, "\x75\xcc\x9b\xcc\xa3"},
	{0x1ef2, "\x79\xcc\x80"},
	{0x1ef3, "\x79\xcc\x80"},
	{0x1ef4, "\x79\xcc\xa3"},
	{0x1ef5, "\x79\xcc\xa3"},
	{0x1ef6, "\x79\xcc\x89"},
	{0x1ef7, "\x79\xcc\x89"},
	{0x1ef8, "\x79\xcc\x83"},
	{0x1ef9, "\x79\xcc\x83"},
	{0x1efa, "\xe1\xbb\xbb"},
	{0x1efc, "\xe1\xbb\xbd"},
	{0x1efe, "\xe1\xbb\xbf"},
	{0x1f00, "\xce\xb1\xcc\x93"},
	{0x1f01, "\xce\xb1\xcc\x94"},
	{0x1f02, "\xce\xb1\xcc\x93\xcc\x80"},
	{0x1f03, "\xce\xb1\xcc\x94\xcc\x80"},
	{0x1f04, "\xce\xb1\xcc\x93\xcc\x81"},
	{0x1f05, "\xce\xb1\xcc\x94\xcc\x81"},
	{0x1f06, "\xce\xb1\xcc\x93\xcd\x82"},
	{0x1f07, "\xce\xb1\xcc\x94\xcd\x82"},
	{0x1f08, "\xce\xb1\xcc\x93"},
	{0x1f09, "\xce\xb1\xcc\x94"},
	{0x1f0a, "\xce\xb1\xcc\x93\xcc\x80"},
	{0x1f0b, "\xce\xb1\xcc\x94\xcc\x80"},
	{0x1f0c, "\xce\xb1\xcc\x93\xcc\x81"},
	{0x1f0d, "\xce\xb1\xcc\x94\xcc\x81"},
	{0x1f0e, "\xce\xb1\xcc\x93\xcd\x82"},
	{0x1f0f, "\xce\xb1\xcc\x94\xcd\x82"},
	{0x1f10, "\xce\xb5\xcc\x93"},
	{0x1f11, "\xce\xb5\xcc\x94"},
	{0x1f12, "\xce\xb5\xcc\x93\xcc\x80"},
	{0x1f13, "\xce\xb5\xcc\x94\xcc\x80"},
	{0x1f14, "\xce\xb5\xcc\x93\xcc\x81"},
	{0x1f15, "\xce\xb5\xcc\x94\xcc\x81"},
	{0x1f18, "\xce\xb5\xcc\x93"},
	{0x1f19, "\xce\xb5\xcc\x94"},
	{0x1f1a, "\xce\xb5\xcc\x93\xcc\x80"},
	{0x1f1b, "\xce\xb5\xcc\x94\xcc\x80"},
	{0x1f1c, "\xce\xb5\xcc\x93\xcc\x81"},
	{0x1f1d, "\xce\xb5\xcc\x94\xcc\x81"},
	{0x1f20, "\xce\xb7\xcc\x93"},
	{0x1f21, "\xce\xb7\xcc\x94"},
	{0x1f22, "\xce\xb7\xcc\x93\xcc\x80"},
	{0x1f23, "\xce\xb7\xcc\x94\xcc\x80"},
	{0x1f24, "\xce\xb7\xcc\x93\xcc\x81"},
	{0x1f25, "\xce\xb7\xcc\x94\xcc\x81"},
	{0x1f26, "\xce\xb7\xcc\x93\xcd\x82"},
	{0x1f27, "\xce\xb7\xcc\x94\xcd\x82"},
	{0x1f28, "\xce\xb7\xcc\x93"},
	{0x1f29, "\xce\xb7\xcc\x94"},
	{0x1f2a, "\xce\xb7\xcc\x93\xcc\x80"},
	{0x1f2b, "\xce\xb7\xcc\x94\xcc\x80"},
	{0x1f2c, "\xce\xb7\xcc\x93\xcc\x81"},
	{0x1f2d, "\xce\xb7\xcc\x94\xcc\x81"},
	{0x1f2e, "\xce\xb7\xcc\x93\xcd\x82"},
	{0x1f2f, "\xce\xb7\xcc\x94\xcd\x82"},
	{0x1f30, "\xce\xb9\xcc\x93"},
	{0x1f31, "\xce\xb9\xcc\x94"},
	{0x1f32, "\xce\xb9\xcc\x93\xcc\x80"},
	{0x1f33, "\xce\xb9\xcc\x94\xcc\x80"},
	{0x1f34, "\xce\xb9\xcc\x93\xcc\x81"},
	{0x1f35, "\xce\xb9\xcc\x94\xcc\x81"},
	{0x1f36, "\xce\xb9\xcc\x93\xcd\x82"},
	{0x1f37, "\xce\xb9\xcc\x94\xcd\x82"},
	{0x1f38, "\xce\xb9\xcc\x93"},
	{0x1f39, "\xce\xb9\xcc\x94"},
	{0x1f3a, "\xce\xb9\xcc\x93\xcc\x80"},
	{0x1f3b, "\xce\xb9\xcc\x94\xcc\x80"},
	{0x1f3c, "\xce\xb9\xcc\x93\xcc\x81"},
	{0x1f3d, "\xce\xb9\xcc\x94\xcc\x81"},
	{0x1f3e, "\xce\xb9\xcc\x93\xcd\x82"},
	{0x1f3f, "\xce\xb9\xcc\x94\xcd\x82"},
	{0x1f40, "\xce\xbf\xcc\x93"},
	{0x1f41, "\xce\xbf\xcc\x94"},
	{0x1f42, "\xce\xbf\xcc\x93\xcc\x80"},
	{0x1f43, "\xce\xbf\xcc\x94\xcc\x80"},
	{0x1f44, "\xce\xbf\xcc\x93\xcc\x81"},
	{0x1f45, "\xce\xbf\xcc\x94\xcc\x81"},
	{0x1f48, "\xce\xbf\xcc\x93"},
	{0x1f49, "\xce\xbf\xcc\x94"},
	{0x1f4a, "\xce\xbf\xcc\x93\xcc\x80"},
	{0x1f4b, "\xce\xbf\xcc\x94\xcc\x80"},
	{0x1f4c, "\xce\xbf\xcc\x93\xcc\x81"},
	{0x1f4d, "\xce\xbf\xcc\x94\xcc\x81"},
	{0x1f50, "\xcf\x85\xcc\x93"},
	{0x1f51, "\xcf\x85\xcc\x94"},
	{0x1f52, "\xcf\x85\xcc\x93\xcc\x80"},
	{0x1f53, "\xcf\x85\xcc\x94\xcc\x80"},
	{0x1f54, "\xcf\x85\xcc\x93\xcc\x81"},
	{0x1f55, "\xcf\x85\xcc\x94\xcc\x81"},
	{0x1f56, "\xcf\x85\xcc\x93\xcd\x82"},
	{0x1f57, "\xcf\x85\xcc\x94\xcd\x82"},
	{0x1f59, "\xcf\x85\xcc\x94"},
	{0x1f5b, "\xcf\x85\xcc\x94\xcc\x80"},
	{0x1f5d, "\xcf\x85\xcc\x94\xcc\x81"},
	{0x1f5f, "\xcf\x85\xcc\x94\xcd\x82"},
	{0x1f60, "\xcf\x89\xcc\x93"},
	{0x1f61, "\xcf\x89\xcc\x94"},
	{0x1f62, "\xcf\x89\xcc\x93\xcc\x80"},
	{0x1f63, "\xcf\x89\xcc\x94\xcc\x80"},
	{0x1f64, "\xcf\x89\xcc\x93\xcc\x81"},
	{0x1f65, "\xcf\x89\xcc\x94\xcc\x81"},
	{0x1f66, "\xcf\x89\xcc\x93\xcd\x82"},
	{0x1f67, "\xcf\x89\xcc\x94\xcd\x82"},
	{0x1f68, "\xcf\x89\xcc\x93"},
	{0x1f69, "\xcf\x89\xcc\x94"},
	{0x1f6a, "\xcf\x89\xcc\x93\xcc\x80"},
	{0x1f6b, "\xcf\x89\xcc\x94\xcc\x80"},
	{0x1f6c, "\xcf\x89\xcc\x93\xcc\x81"},
	{0x1f6d, "\xcf\x89\xcc\x94\xcc\x81"},
	{0x1f6e, "\xcf\x89\xcc\x93\xcd\x82"},
	{0x1f6f, "\xcf\x89\xcc\x94\xcd\x82"},
	{0x1f70, "\xce\xb1\xcc\x80"},
	{0x1f71, "\xce\xb1\xcc\x81"},
	{0x1f72, "\xce\xb5\xcc\x80"},
	{0x1f73, "\xce\xb5\xcc\x81"},
	{0x1f74, "\xce\xb7\xcc\x80"},
	{0x1f75, "\xce\xb7\xcc\x81"},
	{0x1f76, "\xce\xb9\xcc\x80"},
	{0x1f77, "\xce\xb9\xcc\x81"},
	{0x1f78, "\xce\xbf\xcc\x80"},
	{0x1f79, "\xce\xbf\xcc\x81"},
	{0x1f7a, "\xcf\x85\xcc\x80"},
	{0x1f7b, "\xcf\x85\xcc\x81"},
	{0x1f7c, "\xcf\x89\xcc\x80"},
	{0x1f7d, "\xcf\x89\xcc\x81"},
	{0x1f80, "\xce\xb1\xcc\x93\xce\xb9"},
	{0x1f81, "\xce\xb1\xcc\x94\xce\xb9"},
	{0x1f82, "\xce\xb1\xcc\x93\xcc\x80\xce\xb9"},
	{0x1f83, "\xce\xb1\xcc\x94\xcc\x80\xce\xb9"},
	{0x1f84, "\xce\xb1\xcc\x93\xcc\x81\xce\xb9"},
	{0x1f85, "\xce\xb1\xcc\x94\xcc\x81\xce\xb9"},
	{0x1f86, "\xce\xb1\xcc\x93\xcd\x82\xce\xb9"},
	{0x1f87, "\xce\xb1\xcc\x94\xcd\x82\xce\xb9"},
	{0x1f88, "\xce\xb1\xcc\x93\xce\xb9"},
	{0x1f89, "\xce\xb1\xcc\x94\xce\xb9"},
	{0x1f8a, "\xce\xb1\xcc\x93\xcc\x80\xce\xb9"},
	{0x1f8b, "\xce\xb1\xcc\x94\xcc\x80\xce\xb9"},
	{0x1f8c, "\xce\xb1\xcc\x93\xcc\x81\xce\xb9"},
	{0x1f8d, "\xce\xb1\xcc\x94\xcc\x81\xce\xb9"},
	{0x1f8e, "\xce\xb1\xcc\x93\xcd\x82\xce\xb9"},
	{0x1f8f, "\xce\xb1\xcc\x94\xcd\x82\xce\xb9"},
	{0x1f90, "\xce\xb7\xcc\x93\xce\xb9"},
	{0x1f91, "\xce\xb7\xcc\x94\xce\xb9"},
	{0x1f92, "\xce\xb7\xcc\x93\xcc\x80\xce\xb9"},
	{0x1f93, "\xce\xb7\xcc\x94\xcc\x80\xce\xb9"},
	{0x1f94, "\xce\xb7\xcc\x93\xcc\x81\xce\xb9"},
	{0x1f95, "\xce\xb7\xcc\x94\xcc\x81\xce\xb9"},
	{0x1f96, "\xce\xb7\xcc\x93\xcd\x82\xce\xb9"},
	{0x1f97, "\xce\xb7\xcc\x94\xcd\x82\xce\xb9"},
	{0x1f98, "\xce\xb7\xcc\x93\xce\xb9"},
	{0x1f99, "\xce\xb7\xcc\x94\xce\xb9"},
	{0x1f9a, "\xce\xb7\xcc\x93\xcc\x80\xce\xb9"},
	{0x1f9b, "\xce\xb7\xcc\x94\xcc\x80\xce\xb9"},
	{0x1f9c, "\xce\xb7\xcc\x93\xcc\x81\xce\xb9"},
	{0x1f9d, "\xce\xb7\xcc\x94\xcc\x81\xce\xb9"},
	{0x1f9e, "\xce\xb7\xcc\x93\xcd\x82\xce\xb9"},
	{0x1f9f, "\xce\xb7\xcc\x94\xcd\x82\xce\xb9"},
	{0x1fa0, "\xcf\x89\xcc\x93\xce\xb9"},
	{0x1fa1, "\xcf\x89\xcc\x94\xce\xb9"},
	{0x1fa2, "\xcf\x89\xcc\x93\xcc\x80\xce\xb9"},
	{0x1fa3, "\xcf\x89\xcc\x94\xcc\x80\xce\xb9"},
	{0x1fa4, "\xcf\x89\xcc\x93\xcc\x81\xce\xb9"},
	{0x1fa5, "\xcf\x89\xcc\x94\xcc\x81\xce\xb9"},
	{0x1fa6, "\xcf\x89\xcc\x93\xcd\x82\xce\xb9"},
	{0x1fa7, "\xcf\x89\xcc\x94\xcd\x82\xce\xb9"},
	{0x1fa8, "\xcf\x89\xcc\x93\xce\xb9"},
	{0x1fa9, "\xcf\x89\xcc\x94\xce\xb9"},
	{0x1faa, "\xcf\x89\xcc\x93\xcc\x80\xce\xb9"},
	{0x1fab, "\xcf\x89\xcc\x94\xcc\x80\xce\xb9"},
	{0x1fac, "\xcf\x89\xcc\x93\xcc\x81\xce\xb9"},
	{0x1fad, "\xcf\x89\xcc\x94\xcc\x81\xce\xb9"},
	{0x1fae, "\xcf\x89\xcc\x93\xcd\x82\xce\xb9"},
	{0x1faf, "\xcf\x89\xcc\x94\xcd\x82\xce\xb9"},
	{0x1fb0, "\xce\xb1\xcc\x86"},
	{0x1fb1, "\xce\xb1\xcc\x84"},
	{0x1fb2, "\xce\xb1\xcc\x80\xce\xb9"},
	{0x1fb3, "\xce\xb1\xce\xb9"},
	{0x1fb4, "\xce\xb1\xcc\x81\xce\xb9"},
	{0x1fb6, "\xce\xb1\xcd\x82"},
	{0x1fb7, "\xce\xb1\xcd\x82\xce\xb9"},
	{0x1fb8, "\xce\xb1\xcc\x86"},
	{0x1fb9, "\xce\xb1\xcc\x84"},
	{0x1fba, "\xce\xb1\xcc\x80"},
	{0x1fbb, "\xce\xb1\xcc\x81"},
	{0x1fbc, "\xce\xb1\xce\xb9"},
	{0x1fbd, "\x20\xcc\x93"},
	{0x1fbe, "\xce\xb9"},
	{0x1fbf, "\x20\xcc\x93"},
	{0x1fc0, "\x20\xcd\x82"},
	{0x1fc1, "\x20\xcc\x88\xcd\x82"},
	{0x1fc2, "\xce\xb7\xcc\x80\xce\xb9"},
	{0x1fc3, "\xce\xb7\xce\xb9"},
	{0x1fc4, "\xce\xb7\xcc\x81\xce\xb9"},
	{0x1fc6, "\xce\xb7\xcd\x82"},
	{0x1fc7, "\xce\xb7\xcd\x82\xce\xb9"},
	{0x1fc8, "\xce\xb5\xcc\x80"},
	{0x1fc9, "\xce\xb5\xcc\x81"},
	{0x1fca, "\xce\xb7\xcc\x80"},
	{0x1fcb, "\xce\xb7\xcc\x81"},
	{0x1fcc, "\xce\xb7\xce\xb9"},
	{0x1fcd, "\x20\xcc\x93\xcc\x80"},
	{0x1fce, "\x20\xcc\x93\xcc\x81"},
	{0x1fcf, "\x20\xcc\x93\xcd\x82"},
	{0x1fd0, "\xce\xb9\xcc\x86"},
	{0x1fd1, "\xce\xb9\xcc\x84"},
	{0x1fd2, "\xce\xb9\xcc\x88\xcc\x80"},
	{0x1fd3, "\xce\xb9\xcc\x88\xcc\x81"},
	{0x1fd6, "\xce\xb9\xcd\x82"},
	{0x1fd7, "\xce\xb9\xcc\x88\xcd\x82"},
	{0x1fd8, "\xce\xb9\xcc\x86"},
	{0x1fd9, "\xce\xb9\xcc\x84"},
	{0x1fda, "\xce\xb9\xcc\x80"},
	{0x1fdb, "\xce\xb9\xcc\x81"},
	{0x1fdd, "\x20\xcc\x94\xcc\x80"},
	{0x1fde, "\x20\xcc\x94\xcc\x81"},
	{0x1fdf, "\x20\xcc\x94\xcd\x82"},
	{0x1fe0, "\xcf\x85\xcc\x86"},
	{0x1fe1, "\xcf\x85\xcc\x84"},
	{0x1fe2, "\xcf\x85\xcc\x88\xcc\x80"},
	{0x1fe3, "\xcf\x85\xcc\x88\xcc\x81"},
	{0x1fe4, "\xcf\x81\xcc\x93"},
	{0x1fe5, "\xcf\x81\xcc\x94"},
	{0x1fe6, "\xcf\x85\xcd\x82"},
	{0x1fe7, "\xcf\x85\xcc\x88\xcd\x82"},
	{0x1fe8, "\xcf\x85\xcc\x86"},
	{0x1fe9, "\xcf\x85\xcc\x84"},
	{0x1fea, "\xcf\x85\xcc\x80"},
	{0x1feb, "\xcf\x85\xcc\x81"},
	{0x1fec, "\xcf\x81\xcc\x94"},
	{0x1fed, "\x20\xcc\x88\xcc\x80"},
	{0x1fee, "\x20\xcc\x88\xcc\x81"},
	{0x1fef, "\x60"},
	{0x1ff2, "\xcf\x89\xcc\x80\xce\xb9"},
	{0x1ff3, "\xcf\x89\xce\xb9"},
	{0x1ff4, "\xcf\x89\xcc\x81\xce\xb9"},
	{0x1ff6, "\xcf\x89\xcd\x82"},
	{0x1ff7, "\xcf\x89\xcd\x82\xce\xb9"},
	{0x1ff8, "\xce\xbf\xcc\x80"},
	{0x1ff9, "\xce\xbf\xcc\x81"},
	{0x1ffa, "\xcf\x89\xcc\x80"},
	{0x1ffb, "\xcf\x89\xcc\x81"},
	{0x1ffc, "\xcf\x89\xce\xb9"},
	{0x1ffd, "\x20\xcc\x81"},
	{0x1ffe, "\x20\xcc\x94"},
	{0x2100, "\x61\x2f\x63"},
	{0x2101, "\x61\x2f\x73"},
	{0x2102, "\x63"},
	{0x2103, "\xc2\xb0\x63"},
	{0x2105, "\x63\x2f\x6f"},
	{0x2106, "\x63\x2f\x75"},
	{0x2107, "\xc9\x9b"},
	{0x2109, "\xc2\xb0\x66"},
	{0x210a, "\x67"},
	{0x210b, "\x68"},
	{0x210c, "\x68"},
	{0x210d, "\x68"},
	{0x210e, "\x68"},
	{0x210f, "\xc4\xa7"},
	{0x2110, "\x69"},
	{0x2111, "\x69"},
	{0x2112, "\x6c"},
	{0x2113, "\x6c"},
	{0x2115, "\x6e"},
	{0x2116, "\x6e\x6f"},
	{0x2119, "\x70"},
	{0x211a, "\x71"},
	{0x211b, "\x72"},
	{0x211c, "\x72"},
	{0x211d, "\x72"},
	{0x2120, "\x73\x6d"},
	{0x2121, "\x74\x65\x6c"},
	{0x2122, "\x74\x6d"},
	{0x2124, "\x7a"},
	{0x2126, "\xcf\x89"},
	{0x2128, "\x7a"},
	{0x212a, "\x6b"},
	{0x212b, "\x61\xcc\x8a"},
	{0x212c, "\x62"},
	{0x212d, "\x63"},
	{0x212f, "\x65"},
	{0x2130, "\x65"},
	{0x2131, "\x66"},
	{0x2132, "\xe2\x85\x8e"},
	{0x2133, "\x6d"},
	{0x2134, "\x6f"},
	{0x2135, "\xd7\x90"},
	{0x2136, "\xd7\x91"},
	{0x2137, "\xd7\x92"},
	{0x2138, "\xd7\x93"},
	{0x2139, "\x69"},
	{0x213b, "\x66\x61\x78"},
	{0x213c, "\xcf\x80"},
	{0x213d, "\xce\xb3"},
	{0x213e, "\xce\xb3"},
	{0x213f, "\xcf\x80"},
	{0x2140, "\xe2\x88\x91"},
	{0x2145, "\x64"},
	{0x2146, "\x64"},
	{0x2147, "\x65"},
	{0x2148, "\x69"},
	{0x2149, "\x6a"},
	{0x2150, "\x31\xe2\x81\x84\x37"},
	{0x2151, "\x31\xe2\x81\x84\x39"},
	{0x2152, "\x31\xe2\x81\x84\x31\x30"},
	{0x2153, "\x31\xe2\x81\x84\x33"},
	{0x2154, "\x32\xe2\x81\x84\x33"},
	{0x2155, "\x31\xe2\x81\x84\x35"},
	{0x2156, "\x32\xe2\x81\x84\x35"},
	{0x2157, "\x33\xe2\x81\x84\x35"},
	{0x2158, "\x34\xe2\x81\x84\x35"},
	{0x2159, "\x31\xe2\x81\x84\x36"},
	{0x215a, "\x35\xe2\x81\x84\x36"},
	{0x215b, "\x31\xe2\x81\x84\x38"},
	{0x215c, "\x33\xe2\x81\x84\x38"},
	{0x215d, "\x35\xe2\x81\x84\x38"},
	{0x215e, "\x37\xe2\x81\x84\x38"},
	{0x215f, "\x31\xe2\x81\x84"},
	{0x2160, "\x69"},
	{0x2161, "\x69\x69"},
	{0x2162, "\x69\x69\x69"},
	{0x2163, "\x69\x76"},
	{0x2164, "\x76"},
	{0x2165, "\x76\x69"},
	{0x2166, "\x76\x69\x69"},
	{0x2167, "\x76\x69\x69\x69"},
	{0x2168, "\x69\x78"},
	{0x2169, "\x78"},
	{0x216a, "\x78\x69"},
	{0x216b, "\x78\x69\x69"},
	{0x216c, "\x6c"},
	{0x216d, "\x63"},
	{0x216e, "\x64"},
	{0x216f, "\x6d"},
	{0x2170, "\x69"},
	{0x2171, "\x69\x69"},
	{0x2172, "\x69\x69\x69"},
	{0x2173, "\x69\x76"},
	{0x2174, "\x76"},
	{0x2175, "\x76\x69"},
	{0x2176, "\x76\x69\x69"},
	{0x2177, "\x76\x69\x69\x69"},
	{0x2178, "\x69\x78"},
	{0x2179, "\x78"},
	{0x217a, "\x78\x69"},
	{0x217b, "\x78\x69\x69"},
	{0x217c, "\x6c"},
	{0x217d, "\x63"},
	{0x217e, "\x64"},
	{0x217f, "\x6d"},
	{0x2183, "\xe2\x86\x84"},
	{0x2189, "\x30\xe2\x81\x84\x33"},
	{0xfb00, "\x66\x66"},
	{0xfb01, "\x66\x69"},
	{0xfb02, "\x66\x6c"},
	{0xfb03, "\x66\x66\x69"},
	{0xfb04, "\x66\x66\x6c"},
	{0xfb05, "\x73\x74"},
	{0xfb06, "\x73\x74"},
	{0xff01, "\x21"},
	{0xff02, "\x22"},
	{0xff03, "\x23"},
	{0xff04, "\x24"},
	{0xff05, "\x25"},
	{0xff06, "\x26"},
	{0xff07, "\x27"},
	{0xff08, "\x28"},
	{0xff09, "\x29"},
	{0xff0a, "\x2a"},
	{0xff0b, "\x2b"},
	{0xff0c, "\x2c"},
	{0xff0d, "\x2d"},
	{0xff0e, "\x2e"},
	{0xff0f, "\x2f"},
	{0xff10, "\x30"},
	{0xff11, "\x31"},
	{0xff12, "\x32"},
	{0xff13, "\x33"},
	{0xff14, "\x34"},
	{0xff15, "\x35"},
	{0xff16, "\x36"},
	{0xff17, "\x37"},
	{0xff18, "\x38"},
	{0xff19, "\x39"},
	{0xff1a, "\x3a"},
	{0xff1b, "\x3b"},
	{0xff1c, "\x3c"},
	{0xff1d, "\x3d"},
	{0xff1e, "\x3e"},
	{0xff1f, "\x3f"},
	{0xff20, "\x40"},
	{0xff21, "\x61"},
	{0xff22, "\x62"},
	{0xff23, "\x63"},
	{0xff24, "\x64"},
	{0xff25, "\x65"},
	{0xff26, "\x66"},
	{0xff27, "\x67"},
	{0xff28, "\x68"},
	{0xff29, "\x69"},
	{0xff2a, "\x6a"},
	{0xff2b, "\x6b"},
	{0xff2c, "\x6c"},
	{0xff2d, "\x6d"},
	{0xff2e, "\x6e"},
	{0xff2f, "\x6f"},
	{0xff30, "\x70"},
	{0xff31, "\x71"},
	{0xff32, "\x72"},
	{0xff33, "\x73"},
	{0xff34, "\x74"},
	{0xff35, "\x75"},
	{0xff36, "\x76"},
	{0xff37, "\x77"},
	{0xff38, "\x78"},
	{0xff39, "\x79"},
	{0xff3a, "\x7a"},
	{0xff3b, "\x5b"},
	{0xff3c, "\x5c"},
	{0xff3d, "\x5d"},
	{0xff3e, "\x5e"},
	{0xff3f, "\x5f"},
	{0xff40, "\x60"},
	{0xff41, "\x61"},
	{0xff42, "\x62"},
	{0xff43, "\x63"},
	{0xff44, "\x64"},
	{0xff45, "\x65"},
	{0xff46, "\x66"},
	{0xff47, "\x67"},
	{0xff48, "\x68"},
	{0xff49, "\x69"},
	{0xff4a, "\x6a"},
	{0xff4b, "\x6b"},
	{0xff4c, "\x6c"},
	{0xff4d, "\x6d"},
	{0xff4e, "\x6e"},
	{0xff4f, "\x6f"},
	{0xff50, "\x70"},
	{0xff51, "\x71"},
	{0xff52, "\x72"},
	{0xff53, "\x73"},
	{0xff54, "\x74"},
	{0xff55, "\x75"},
	{0xff56, "\x76"},
	{0xff57, "\x77"},
	{0xff58, "\x78"},
	{0xff59, "\x79"},
	{0xff5a, "\x7a"},
	{0xff5b, "\x7b"},
	{0xff5c, "\x7c"},
	{0xff5d, "\x7d"},
	{0xff5e, "\x7e"},
};

/* Decode one UTF-8 sequence at s (n > 0 octets); 0 if invalid. */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp_r)
{
	unsigned char c = s[0];
	size_t len;
	uint32_t cp, min;
	if (c < 0x80) {
		*cp_r = c;
		return 1;
	} else if ((c & 0xe0) == 0xc0) {
		len = 2;
		cp = c & 0x1f;
		min = 0x80;
	} else if ((c & 0xf0) == 0xe0) {
		len = 3;
		cp = c & 0x0f;
		min = 0x800;
	} else if ((c & 0xf8) == 0xf0) {
		len = 4;
		cp = c & 0x07;
		min = 0x10000;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	*cp_r = cp;
	return len;
}

static const char *fold_lookup(uint32_t cp)
{
	size_t lo = 0, hi = ARRAY_SIZE(fold_table);
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (cp < fold_table[mid].cp)
			hi = mid;
		else if (cp > fold_table[mid].cp)
			lo = mid + 1;
		else
			return fold_table[mid].out;
	}
	return NULL;
}

char *imap_casemap(const char *s, size_t len)
{
	/* each character's image is at most 11 octets for at least 1 in */
	size_t cap = len + 1, n = 0;
	char *out = xmalloc(cap);
	const unsigned char *u = (const unsigned char *)s;
	for (size_t i = 0; i < len;) {
		if (n + 12 > cap)
			out = xgrow(out, &cap, n + 12, 1);
		unsigned char c = u[i];
		if (c < 0x80) {
			out[n++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
			i++;
			continue;
		}
		uint32_t cp;
		size_t l = utf8_decode(u + i, len - i, &cp);
		if (l == 0) {
			out[n++] = (char)c; /* not UTF-8: kept as is */
			i++;
			continue;
		}
		const char *f = fold_lookup(cp);
		if (f != NULL) {
			size_t fl = strlen(f);
			memcpy(out + n, f, fl);
			n += fl;
		} else {
			memcpy(out + n, s + i, l);
			n += l;
		}
		i += l;
	}
	out[n] = '\0';
	return out;
}

bool imap_casemap_contains(const char *haystack, size_t len, const char *needle_folded)
{
	if (needle_folded[0] == '\0')
		return true;
	char *f = imap_casemap(haystack, len);
	bool found = strstr(f, needle_folded) != NULL;
	free(f);
	return found;
}

/* ---- the program ---- */

enum key_type {
	K_ALL,
	K_AND,
	K_OR,
	K_NOT,
	K_MSNSET,
	K_UIDSET,
	K_FLAGS,   /* (flags & mask) == want */
	K_KEYWORD, /* negate for UNKEYWORD */
	K_DATE,
	K_LARGER,
	K_SMALLER,
	K_OLDER,
	K_YOUNGER,
	K_MODSEQ,
	K_HEADER, /* field + value; FROM/TO/... from the cache */
	K_BODY,
	K_TEXT,
};

enum date_kind { D_INTERNAL, D_SENT, D_SAVED };

/* header fields the cache holds */
enum cache_field { C_NONE, C_SUBJECT, C_FROM, C_TO, C_CC, C_BCC, C_MSGID, C_IRT, C_REFS };

/* evaluation cost classes: cheap keys run first */
enum { COST_RECORD = 0, COST_CACHE = 1, COST_CONTENT = 2 };

struct key {
	enum key_type type;
	int cost;
	struct key *kids;
	size_t nkids;
	uint32_t mask, want;
	bool negate;
	char *name;   /* KEYWORD name; HEADER field name */
	int kw;       /* KEYWORD index after prepare, -1 none */
	char *setstr; /* MSNSET/UIDSET as given */
	struct imap_seqset set;
	bool saved;   /* the set is "$" */
	enum date_kind date_kind;
	int date_op;  /* -1 BEFORE, 0 ON, 1 SINCE */
	int64_t day;
	uint64_t num;
	enum cache_field cfield;
	char *folded; /* HEADER/BODY/TEXT value, folded */
};

struct imap_search {
	struct key root; /* K_AND */
	bool has_modseq, uses_saved;
};

struct sparse {
	const struct imap_arg *args;
	size_t n, pos;
	unsigned nkeys;
	const char *error;
	struct imap_search *s;
};

static void key_free(struct key *k)
{
	for (size_t i = 0; i < k->nkids; i++)
		key_free(&k->kids[i]);
	free(k->kids);
	free(k->name);
	free(k->setstr);
	free(k->folded);
	imap_seqset_free(&k->set);
}

void imap_search_free(struct imap_search **search)
{
	if (*search == NULL)
		return;
	key_free(&(*search)->root);
	xfree(search);
}

static const struct imap_arg *next_arg(struct sparse *p)
{
	if (p->pos >= p->n) {
		p->error = "Missing search key argument";
		return NULL;
	}
	return &p->args[p->pos++];
}

static const char *next_astring(struct sparse *p)
{
	const struct imap_arg *a = next_arg(p);
	if (a == NULL)
		return NULL;
	const char *s = imap_arg_astring(a);
	if (s == NULL)
		p->error = "Invalid search key argument";
	return s;
}

static bool next_number(struct sparse *p, uint64_t *n_r)
{
	const struct imap_arg *a = next_arg(p);
	if (a == NULL)
		return false;
	if (a->type != IMAP_ARG_ATOM || a->len == 0 || a->len > 20)
		goto bad;
	uint64_t n = 0;
	for (size_t i = 0; i < a->len; i++) {
		if (a->str[i] < '0' || a->str[i] > '9')
			goto bad;
		unsigned d = (unsigned)(a->str[i] - '0');
		if (n > (UINT64_MAX - d) / 10)
			goto bad;
		n = n * 10 + d;
	}
	*n_r = n;
	return true;
bad:
	p->error = "Invalid number";
	return false;
}

/* Days since 1970-01-01 of a civil date (proleptic Gregorian). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

/* RFC 9051 date-text: date-day "-" date-month "-" date-year; day 1 or 2 digits. */
static bool parse_date(const char *s, int64_t *day_r)
{
	static const char months[12][4] = {"jan", "feb", "mar", "apr", "may", "jun",
					   "jul", "aug", "sep", "oct", "nov", "dec"};
	unsigned d = 0;
	size_t i = 0;
	while (i < 2 && s[i] >= '0' && s[i] <= '9')
		d = d * 10 + (unsigned)(s[i++] - '0');
	if (i == 0 || s[i] != '-')
		return false;
	s += i + 1;
	unsigned m = 0;
	for (unsigned k = 0; k < 12; k++) {
		if (strncasecmp(s, months[k], 3) == 0) {
			m = k + 1;
			break;
		}
	}
	if (m == 0 || s[3] != '-')
		return false;
	s += 4;
	unsigned y = 0;
	for (i = 0; i < 4; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		y = y * 10 + (unsigned)(s[i] - '0');
	}
	if (s[4] != '\0')
		return false;
	static const unsigned mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	if (d == 0 || d > mdays[m - 1])
		return false;
	if (m == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
		return false;
	*day_r = days_from_civil(y, m, d);
	return true;
}

static int key_cmp_cost(const void *a, const void *b)
{
	const struct key *x = a, *y = b;
	return x->cost - y->cost;
}

/* Order children cheapest first (insertion sort: stable, lists are short). */
static void order_kids(struct key *k)
{
	for (size_t i = 1; i < k->nkids; i++) {
		struct key t = k->kids[i];
		size_t j = i;
		while (j > 0 && key_cmp_cost(&k->kids[j - 1], &t) > 0) {
			k->kids[j] = k->kids[j - 1];
			j--;
		}
		k->kids[j] = t;
	}
	int cost = COST_RECORD;
	for (size_t i = 0; i < k->nkids; i++)
		if (k->kids[i].cost > cost)
			cost = k->kids[i].cost;
	k->cost = cost;
}

static bool parse_key(struct sparse *p, struct key *k, unsigned depth);

/* Keys until the end of args (top level) into an AND node. */
static bool parse_key_list(struct sparse *p, const struct imap_arg *args, size_t n, struct key *k,
			   unsigned depth)
{
	k->type = K_AND;
	if (n == 0) {
		p->error = "Missing search key";
		return false;
	}
	struct sparse sub = *p;
	sub.args = args;
	sub.n = n;
	sub.pos = 0;
	size_t cap = 0;
	while (sub.pos < sub.n) {
		k->kids = xgrow(k->kids, &cap, k->nkids + 1, sizeof(*k->kids));
		struct key *kid = &k->kids[k->nkids];
		memset(kid, 0, sizeof(*kid));
		k->nkids++;
		if (!parse_key(&sub, kid, depth)) {
			p->error = sub.error;
			p->nkeys = sub.nkeys;
			return false;
		}
	}
	p->nkeys = sub.nkeys;
	order_kids(k);
	return true;
}

static bool set_flag_key(struct key *k, uint32_t mask, uint32_t want)
{
	k->type = K_FLAGS;
	k->mask = mask;
	k->want = want;
	return true;
}

static bool string_key(struct sparse *p, struct key *k, enum key_type type, const char *field)
{
	const char *v = next_astring(p);
	if (v == NULL)
		return false;
	k->type = type;
	k->folded = imap_casemap(v, strlen(v));
	k->cost = COST_CONTENT;
	if (field != NULL) {
		static const struct {
			const char *name;
			enum cache_field f;
		} cached[] = {{"subject", C_SUBJECT}, {"from", C_FROM},
			      {"to", C_TO},           {"cc", C_CC},
			      {"bcc", C_BCC},         {"message-id", C_MSGID},
			      {"in-reply-to", C_IRT}, {"references", C_REFS}};
		k->name = xstrdup(field);
		for (size_t i = 0; i < ARRAY_SIZE(cached); i++) {
			/* an empty value asks whether the field exists: the cache cannot tell */
			if (strcasecmp(field, cached[i].name) == 0 && v[0] != '\0') {
				k->cfield = cached[i].f;
				k->cost = COST_CACHE;
			}
		}
	}
	return true;
}

static bool date_key(struct sparse *p, struct key *k, enum date_kind kind, int op)
{
	const char *v = next_astring(p);
	if (v == NULL)
		return false;
	if (!parse_date(v, &k->day)) {
		p->error = "Invalid date";
		return false;
	}
	k->type = K_DATE;
	k->date_kind = kind;
	k->date_op = op;
	k->cost = kind == D_SENT ? COST_CACHE : COST_RECORD;
	return true;
}

static bool parse_key(struct sparse *p, struct key *k, unsigned depth)
{
	if (depth > IMAP_SEARCH_MAX_DEPTH) {
		p->error = "Search program too deep";
		return false;
	}
	if (++p->nkeys > IMAP_SEARCH_MAX_KEYS) {
		p->error = "Too many search keys";
		return false;
	}
	const struct imap_arg *a = next_arg(p);
	if (a == NULL)
		return false;
	if (a->type == IMAP_ARG_LIST)
		return parse_key_list(p, a->list, a->nlist, k, depth + 1);
	if (a->type != IMAP_ARG_ATOM) {
		p->error = "Invalid search key";
		return false;
	}
	const char *w = a->str;
	k->kw = -1;
	if (imap_seqset_syntax(w)) {
		k->type = K_MSNSET;
		k->setstr = xstrdup(w);
		k->saved = strcmp(w, "$") == 0;
		p->s->uses_saved |= k->saved;
		return true;
	}
#define IS(word) (strcasecmp(w, word) == 0)
	if (IS("ALL") || IS("SAVEDATESUPPORTED")) {
		k->type = K_ALL;
		return true;
	}
	if (IS("ANSWERED"))
		return set_flag_key(k, MBOX_F_ANSWERED, MBOX_F_ANSWERED);
	if (IS("DELETED"))
		return set_flag_key(k, MBOX_F_DELETED, MBOX_F_DELETED);
	if (IS("DRAFT"))
		return set_flag_key(k, MBOX_F_DRAFT, MBOX_F_DRAFT);
	if (IS("FLAGGED"))
		return set_flag_key(k, MBOX_F_FLAGGED, MBOX_F_FLAGGED);
	if (IS("SEEN"))
		return set_flag_key(k, MBOX_F_SEEN, MBOX_F_SEEN);
	if (IS("RECENT"))
		return set_flag_key(k, MBOX_F_RECENT, MBOX_F_RECENT);
	if (IS("NEW"))
		return set_flag_key(k, MBOX_F_RECENT | MBOX_F_SEEN, MBOX_F_RECENT);
	if (IS("OLD"))
		return set_flag_key(k, MBOX_F_RECENT, 0);
	if (IS("UNANSWERED"))
		return set_flag_key(k, MBOX_F_ANSWERED, 0);
	if (IS("UNDELETED"))
		return set_flag_key(k, MBOX_F_DELETED, 0);
	if (IS("UNDRAFT"))
		return set_flag_key(k, MBOX_F_DRAFT, 0);
	if (IS("UNFLAGGED"))
		return set_flag_key(k, MBOX_F_FLAGGED, 0);
	if (IS("UNSEEN"))
		return set_flag_key(k, MBOX_F_SEEN, 0);
	if (IS("KEYWORD") || IS("UNKEYWORD")) {
		k->negate = IS("UNKEYWORD");
		const struct imap_arg *v = next_arg(p);
		if (v == NULL)
			return false;
		if (v->type != IMAP_ARG_ATOM || v->str[0] == '\\') {
			p->error = "Invalid keyword";
			return false;
		}
		k->type = K_KEYWORD;
		k->name = xstrdup(v->str);
		return true;
	}
	if (IS("BCC"))
		return string_key(p, k, K_HEADER, "bcc");
	if (IS("CC"))
		return string_key(p, k, K_HEADER, "cc");
	if (IS("FROM"))
		return string_key(p, k, K_HEADER, "from");
	if (IS("SUBJECT"))
		return string_key(p, k, K_HEADER, "subject");
	if (IS("TO"))
		return string_key(p, k, K_HEADER, "to");
	if (IS("BODY"))
		return string_key(p, k, K_BODY, NULL);
	if (IS("TEXT"))
		return string_key(p, k, K_TEXT, NULL);
	if (IS("HEADER")) {
		const char *field = next_astring(p);
		if (field == NULL)
			return false;
		if (field[0] == '\0' || strpbrk(field, ": \t") != NULL) {
			p->error = "Invalid header field name";
			return false;
		}
		char *copy = xstrdup(field);
		bool ok = string_key(p, k, K_HEADER, copy);
		free(copy);
		return ok;
	}
	if (IS("BEFORE"))
		return date_key(p, k, D_INTERNAL, -1);
	if (IS("ON"))
		return date_key(p, k, D_INTERNAL, 0);
	if (IS("SINCE"))
		return date_key(p, k, D_INTERNAL, 1);
	if (IS("SENTBEFORE"))
		return date_key(p, k, D_SENT, -1);
	if (IS("SENTON"))
		return date_key(p, k, D_SENT, 0);
	if (IS("SENTSINCE"))
		return date_key(p, k, D_SENT, 1);
	if (IS("SAVEDBEFORE"))
		return date_key(p, k, D_SAVED, -1);
	if (IS("SAVEDON"))
		return date_key(p, k, D_SAVED, 0);
	if (IS("SAVEDSINCE"))
		return date_key(p, k, D_SAVED, 1);
	if (IS("LARGER") || IS("SMALLER") || IS("OLDER") || IS("YOUNGER")) {
		k->type = IS("LARGER")    ? K_LARGER
			  : IS("SMALLER") ? K_SMALLER
			  : IS("OLDER")   ? K_OLDER
					  : K_YOUNGER;
		if (!next_number(p, &k->num))
			return false;
		/* RFC 5032: interval is nz-number */
		if ((k->type == K_OLDER || k->type == K_YOUNGER) && k->num == 0) {
			p->error = "Invalid interval";
			return false;
		}
		return true;
	}
	if (IS("UID")) {
		const struct imap_arg *v = next_arg(p);
		if (v == NULL)
			return false;
		if (v->type != IMAP_ARG_ATOM || !imap_seqset_syntax(v->str)) {
			p->error = "Invalid UID set";
			return false;
		}
		k->type = K_UIDSET;
		k->setstr = xstrdup(v->str);
		k->saved = strcmp(v->str, "$") == 0;
		p->s->uses_saved |= k->saved;
		return true;
	}
	if (IS("MODSEQ")) {
		/* RFC 7162 3.1.5: MODSEQ [entry-name entry-type-req] mod-sequence-valzer */
		if (p->pos < p->n && p->args[p->pos].type != IMAP_ARG_ATOM) {
			const char *entry = next_astring(p);
			if (entry == NULL)
				return false;
			const struct imap_arg *t = next_arg(p);
			if (t == NULL)
				return false;
			if (!imap_arg_atom_eq(t, "priv") && !imap_arg_atom_eq(t, "shared") &&
			    !imap_arg_atom_eq(t, "all")) {
				p->error = "Invalid MODSEQ entry type";
				return false;
			}
		}
		if (!next_number(p, &k->num))
			return false;
		if (k->num > INT64_MAX) {
			p->error = "Invalid mod-sequence";
			return false;
		}
		k->type = K_MODSEQ;
		p->s->has_modseq = true;
		return true;
	}
	if (IS("NOT")) {
		k->type = K_NOT;
		k->kids = xcalloc(1, sizeof(*k->kids));
		k->nkids = 1;
		if (!parse_key(p, &k->kids[0], depth + 1))
			return false;
		k->cost = k->kids[0].cost;
		return true;
	}
	if (IS("OR")) {
		k->type = K_OR;
		k->kids = xcalloc(2, sizeof(*k->kids));
		k->nkids = 2;
		if (!parse_key(p, &k->kids[0], depth + 1) || !parse_key(p, &k->kids[1], depth + 1))
			return false;
		order_kids(k);
		return true;
	}
#undef IS
	p->error = "Unknown search key";
	return false;
}

bool imap_search_charset_ok(const char *charset)
{
	return strcasecmp(charset, "UTF-8") == 0 || strcasecmp(charset, "US-ASCII") == 0 ||
	       strcasecmp(charset, "UTF8") == 0;
}

static int parse_program(const struct imap_arg *args, size_t n, struct imap_search **search_r,
			 const char **error_r)
{
	struct imap_search *s = xcalloc(1, sizeof(*s));
	struct sparse p = {.args = args, .n = n, .s = s};
	if (!parse_key_list(&p, args, n, &s->root, 0)) {
		*error_r = p.error;
		imap_search_free(&s);
		*search_r = NULL;
		return -1;
	}
	*search_r = s;
	return 0;
}

int imap_search_parse_keys(const struct imap_arg *args, size_t nargs,
			   struct imap_search **search_r, const char **error_r)
{
	return parse_program(args, nargs, search_r, error_r);
}

int imap_search_parse(const struct imap_arg *args, size_t nargs, struct imap_search **search_r,
		      struct imap_search_options *opts_r, const char **error_r,
		      enum imap_search_error *code_r)
{
	memset(opts_r, 0, sizeof(*opts_r));
	*search_r = NULL;
	*code_r = IMAP_SEARCH_ERR_SYNTAX;
	size_t i = 0;
	if (i < nargs && imap_arg_atom_eq(&args[i], "RETURN")) {
		if (i + 1 >= nargs || args[i + 1].type != IMAP_ARG_LIST) {
			*error_r = "Invalid RETURN options";
			return -1;
		}
		const struct imap_arg *l = args[i + 1].list;
		opts_r->esearch = true;
		for (size_t j = 0; j < args[i + 1].nlist; j++) {
			if (imap_arg_atom_eq(&l[j], "MIN"))
				opts_r->ret |= IMAP_SEARCH_RET_MIN;
			else if (imap_arg_atom_eq(&l[j], "MAX"))
				opts_r->ret |= IMAP_SEARCH_RET_MAX;
			else if (imap_arg_atom_eq(&l[j], "COUNT"))
				opts_r->ret |= IMAP_SEARCH_RET_COUNT;
			else if (imap_arg_atom_eq(&l[j], "ALL"))
				opts_r->ret |= IMAP_SEARCH_RET_ALL;
			else if (imap_arg_atom_eq(&l[j], "SAVE"))
				opts_r->ret |= IMAP_SEARCH_RET_SAVE;
			else {
				*error_r = "Unknown RETURN option";
				return -1;
			}
		}
		/* RFC 4731 3.1: an empty list means ALL */
		if (args[i + 1].nlist == 0)
			opts_r->ret = IMAP_SEARCH_RET_ALL;
		i += 2;
	}
	if (i < nargs && imap_arg_atom_eq(&args[i], "CHARSET")) {
		const char *cs = i + 1 < nargs ? imap_arg_astring(&args[i + 1]) : NULL;
		if (cs == NULL) {
			*error_r = "Missing charset";
			return -1;
		}
		if (!imap_search_charset_ok(cs)) {
			*error_r = "Unsupported charset";
			*code_r = IMAP_SEARCH_ERR_BADCHARSET;
			return -1;
		}
		i += 2;
	}
	return parse_program(i < nargs ? args + i : NULL, nargs - i, search_r, error_r);
}

static unsigned key_cache_fields(const struct key *k)
{
	unsigned f = 0;
	for (size_t i = 0; i < k->nkids; i++)
		f |= key_cache_fields(&k->kids[i]);
	if (k->type == K_DATE && k->date_kind == D_SENT)
		f |= MBOX_CACHE_DATE;
	if (k->type == K_HEADER) {
		static const unsigned bits[] = {
		    [C_SUBJECT] = MBOX_CACHE_SUBJECT,    [C_FROM] = MBOX_CACHE_FROM,
		    [C_TO] = MBOX_CACHE_TO,              [C_CC] = MBOX_CACHE_CC,
		    [C_BCC] = MBOX_CACHE_BCC,            [C_MSGID] = MBOX_CACHE_MESSAGE_ID,
		    [C_IRT] = MBOX_CACHE_IN_REPLY_TO,    [C_REFS] = MBOX_CACHE_REFERENCES,
		};
		if (k->cfield != C_NONE && (size_t)k->cfield < ARRAY_SIZE(bits))
			f |= bits[k->cfield];
	}
	return f;
}

unsigned imap_search_cache_fields(const struct imap_search *search)
{
	return key_cache_fields(&search->root);
}

bool imap_search_has_modseq(const struct imap_search *search)
{
	return search->has_modseq;
}

static bool key_needs_record(const struct key *k)
{
	switch (k->type) {
	case K_DATE: /* SENT* falls back to INTERNALDATE */
	case K_LARGER:
	case K_SMALLER:
	case K_OLDER:
	case K_YOUNGER:
	case K_MODSEQ:
		return true;
	default:
		break;
	}
	for (size_t i = 0; i < k->nkids; i++)
		if (key_needs_record(&k->kids[i]))
			return true;
	return false;
}

bool imap_search_needs_record(const struct imap_search *search)
{
	return key_needs_record(&search->root);
}

bool imap_search_uses_saved(const struct imap_search *search)
{
	return search->uses_saved;
}

static void prepare_key(struct key *k, const struct imap_search_ctx *ctx)
{
	for (size_t i = 0; i < k->nkids; i++)
		prepare_key(&k->kids[i], ctx);
	if ((k->type == K_MSNSET || k->type == K_UIDSET) && !k->saved) {
		const char *error;
		imap_seqset_free(&k->set);
		/* syntax checked at parse time; this cannot fail */
		if (imap_seqset_parse(k->setstr, k->type == K_MSNSET ? ctx->max_msn : ctx->max_uid,
				      &k->set, &error) < 0)
			memset(&k->set, 0, sizeof(k->set));
	} else if (k->type == K_KEYWORD) {
		k->kw = ctx->keyword_index != NULL ? ctx->keyword_index(ctx->arg, k->name) : -1;
		if (k->kw >= 32)
			k->kw = -1;
	}
}

void imap_search_prepare(struct imap_search *search, const struct imap_search_ctx *ctx)
{
	prepare_key(&search->root, ctx);
}

/* ---- evaluation ---- */

struct field {
	char *name;
	char *folded; /* decoded and folded value */
};

struct mstate {
	const struct imap_search_ctx *ctx;
	const struct mbox_msg *msg;
	uint32_t msn;
	bool cache_tried, content_tried, content_ok;
	const struct mbox_cache *cache;
	struct field *fields;
	size_t nfields, fields_cap;
	char *hdr_text, *body_text; /* folded */
};

struct sbuf {
	char *s;
	size_t len, cap;
};

static void sb_add(struct sbuf *b, const void *data, size_t n)
{
	b->s = xgrow(b->s, &b->cap, b->len + n + 1, 1);
	memcpy(b->s + b->len, data, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static void sb_adds(struct sbuf *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

static int b64val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Content-Transfer-Encoding decoding, lenient (RFC 2045 6.7, 6.8): in place. */
static size_t decode_cte(const char *encoding, unsigned char *s, size_t len)
{
	size_t o = 0;
	if (encoding != NULL && strcasecmp(encoding, "base64") == 0) {
		uint32_t acc = 0;
		int bits = 0;
		for (size_t i = 0; i < len; i++) {
			if (s[i] == '=')
				break;
			int v = b64val(s[i]);
			if (v < 0)
				continue; /* line breaks and junk */
			acc = acc << 6 | (uint32_t)v;
			bits += 6;
			if (bits >= 8) {
				bits -= 8;
				s[o++] = (unsigned char)(acc >> bits);
			}
		}
		return o;
	}
	if (encoding != NULL && strcasecmp(encoding, "quoted-printable") == 0) {
		for (size_t i = 0; i < len; i++) {
			if (s[i] != '=') {
				s[o++] = s[i];
				continue;
			}
			if (i + 2 < len && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
				s[o++] = (unsigned char)(hexval(s[i + 1]) << 4 | hexval(s[i + 2]));
				i += 2;
				continue;
			}
			/* soft line break: "=" [transport padding] CRLF */
			size_t j = i + 1;
			while (j < len && (s[j] == ' ' || s[j] == '\t'))
				j++;
			if (j < len && s[j] == '\r')
				j++;
			if (j < len && s[j] == '\n') {
				i = j;
				continue;
			}
			if (j >= len)
				break;
			s[o++] = '=';
		}
		return o;
	}
	return len;
}

static bool is_text_leaf(const struct mime_part *part)
{
	if (part->flags & (MIME_PART_MULTIPART | MIME_PART_MESSAGE))
		return false;
	/* RFC 2045 5.2: no (or an unparsable) Content-Type means text/plain */
	return part->type == NULL || part->type[0] == '\0' || strcasecmp(part->type, "text") == 0;
}

static void add_text_part(struct sbuf *body, const struct mime_part *part, struct sbuf *raw)
{
	if (raw->len == 0)
		return;
	size_t n = decode_cte(part->encoding, (unsigned char *)raw->s, raw->len);
	const char *cs = mime_param_get(part->params, part->nparams, "charset");
	char *utf8 = mime_charset_to_utf8(cs != NULL ? cs : "us-ascii", raw->s, n);
	sb_adds(body, utf8);
	sb_adds(body, "\n");
	free(utf8);
	raw->len = 0;
}

/* Parse the message once per match: root header fields, header text, body text. */
static void load_content(struct mstate *st)
{
	st->content_tried = true;
	if (st->ctx->content == NULL)
		return;
	const void *data;
	size_t len;
	if (st->ctx->content(st->ctx->arg, st->msg, &data, &len) < 0)
		return;
	struct mime_parser *p = mime_parser_new(NULL);
	mime_parser_push(p, data, len);
	mime_parser_push(p, NULL, 0);
	struct sbuf hdr = {0}, body = {0}, raw = {0};
	const struct mime_part *leaf = NULL;
	struct mime_event ev;
	while (mime_parser_next(p, &ev) == 1) {
		switch (ev.type) {
		case MIME_EVENT_HEADER: {
			char *v = mime_decode_header(ev.value, ev.value_len);
			struct sbuf *t = ev.part->depth == 0 ? &hdr : &body;
			sb_add(t, ev.name, ev.name_len);
			sb_adds(t, ": ");
			sb_adds(t, v);
			sb_adds(t, "\n");
			if (ev.part->depth == 0 && ev.name_len > 0) {
				st->fields = xgrow(st->fields, &st->fields_cap, st->nfields + 1,
						   sizeof(*st->fields));
				struct field *f = &st->fields[st->nfields++];
				f->name = xstrndup(ev.name, ev.name_len);
				f->folded = imap_casemap(v, strlen(v));
			}
			free(v);
			break;
		}
		case MIME_EVENT_HEADER_END:
			leaf = is_text_leaf(ev.part) ? ev.part : NULL;
			raw.len = 0;
			break;
		case MIME_EVENT_BODY:
			if (ev.part == leaf)
				sb_add(&raw, ev.data, ev.len);
			break;
		case MIME_EVENT_PART_END:
			if (ev.part == leaf) {
				add_text_part(&body, ev.part, &raw);
				leaf = NULL;
			}
			break;
		default:
			break;
		}
	}
	mime_parser_free(&p);
	st->hdr_text = imap_casemap(hdr.s != NULL ? hdr.s : "", hdr.len);
	st->body_text = imap_casemap(body.s != NULL ? body.s : "", body.len);
	free(hdr.s);
	free(body.s);
	free(raw.s);
	st->content_ok = true;
}

static const struct mbox_cache *get_cache(struct mstate *st)
{
	if (!st->cache_tried) {
		st->cache_tried = true;
		st->cache = st->ctx->cache != NULL ? st->ctx->cache(st->ctx->arg, st->msg) : NULL;
	}
	return st->cache;
}

static const char *cache_value(const struct mbox_cache *c, enum cache_field f)
{
	switch (f) {
	case C_SUBJECT:
		return c->subject;
	case C_FROM:
		return c->from;
	case C_TO:
		return c->to;
	case C_CC:
		return c->cc;
	case C_BCC:
		return c->bcc;
	case C_MSGID:
		return c->message_id;
	case C_IRT:
		return c->in_reply_to;
	case C_REFS:
		return c->references;
	default:
		return NULL;
	}
}

static int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;
	return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static bool match_date(struct mstate *st, const struct key *k)
{
	int64_t t = st->msg->internaldate;
	if (k->date_kind == D_SAVED && st->msg->savedate != 0) {
		t = st->msg->savedate;
	} else if (k->date_kind == D_SENT) {
		const struct mbox_cache *c = get_cache(st);
		if (c != NULL && c->date != 0)
			t = c->date + (int64_t)c->date_tz * 60;
	}
	int64_t day = floor_div(t, 86400);
	return k->date_op < 0 ? day < k->day : k->date_op == 0 ? day == k->day : day >= k->day;
}

static bool match_key(struct mstate *st, const struct key *k)
{
	const struct mbox_msg *m = st->msg;
	switch (k->type) {
	case K_ALL:
		return true;
	case K_AND:
		for (size_t i = 0; i < k->nkids; i++)
			if (!match_key(st, &k->kids[i]))
				return false;
		return true;
	case K_OR:
		return match_key(st, &k->kids[0]) || match_key(st, &k->kids[1]);
	case K_NOT:
		return !match_key(st, &k->kids[0]);
	case K_MSNSET:
	case K_UIDSET: {
		uint32_t n = k->type == K_MSNSET ? st->msn : m->uid;
		if (k->saved) /* RFC 5182: "$" is the saved set of messages, kept as UIDs */
			return st->ctx->saved != NULL && imap_seqset_contains(st->ctx->saved, m->uid);
		return imap_seqset_contains(&k->set, n);
	}
	case K_FLAGS:
		return (m->flags & k->mask) == k->want;
	case K_KEYWORD: {
		bool has = k->kw >= 0 && (m->keywords & (1u << k->kw)) != 0;
		return has != k->negate;
	}
	case K_DATE:
		return match_date(st, k);
	case K_LARGER:
		return m->size > k->num;
	case K_SMALLER:
		return m->size < k->num;
	case K_OLDER:
		return st->ctx->now - m->internaldate >= (int64_t)k->num;
	case K_YOUNGER:
		return st->ctx->now - m->internaldate <= (int64_t)k->num;
	case K_MODSEQ:
		return m->modseq >= k->num;
	case K_HEADER:
		if (k->cfield != C_NONE) {
			const struct mbox_cache *c = get_cache(st);
			const char *v = c != NULL ? cache_value(c, k->cfield) : NULL;
			return v != NULL && imap_casemap_contains(v, strlen(v), k->folded);
		}
		if (!st->content_tried)
			load_content(st);
		for (size_t i = 0; i < st->nfields; i++)
			if (strcasecmp(st->fields[i].name, k->name) == 0 &&
			    strstr(st->fields[i].folded, k->folded) != NULL)
				return true;
		return false;
	case K_BODY:
	case K_TEXT:
		if (!st->content_tried)
			load_content(st);
		if (!st->content_ok)
			return false;
		if (k->type == K_TEXT && strstr(st->hdr_text, k->folded) != NULL)
			return true;
		return strstr(st->body_text, k->folded) != NULL;
	}
	return false;
}

bool imap_search_match(struct imap_search *search, const struct imap_search_ctx *ctx,
		       uint32_t msn, const struct mbox_msg *msg)
{
	struct mstate st = {.ctx = ctx, .msg = msg, .msn = msn};
	bool r = match_key(&st, &search->root);
	for (size_t i = 0; i < st.nfields; i++) {
		free(st.fields[i].name);
		free(st.fields[i].folded);
	}
	free(st.fields);
	free(st.hdr_text);
	free(st.body_text);
	return r;
}

/* ---- responses ---- */

static void sb_printf_num(struct sbuf *b, const char *prefix, uint64_t v)
{
	char num[48];
	int w = snprintf(num, sizeof(num), "%s%" PRIu64, prefix, v);
	sb_add(b, num, (size_t)w);
}

char *imap_search_response(const uint32_t *nums, size_t n, uint64_t modseq)
{
	struct sbuf b = {0};
	sb_adds(&b, "* SEARCH");
	for (size_t i = 0; i < n; i++)
		sb_printf_num(&b, " ", nums[i]);
	if (modseq != 0 && n > 0) {
		sb_printf_num(&b, " (MODSEQ ", modseq);
		sb_adds(&b, ")");
	}
	return b.s;
}

char *imap_search_esearch_response(const char *tag, bool uid, unsigned ret, const uint32_t *nums,
				   size_t n, uint64_t modseq)
{
	if (ret == IMAP_SEARCH_RET_SAVE)
		return NULL;
	struct sbuf b = {0};
	sb_adds(&b, "* ESEARCH (TAG \"");
	sb_adds(&b, tag); /* a tag holds neither '"' nor '\\' */
	sb_adds(&b, "\")");
	if (uid)
		sb_adds(&b, " UID");
	if ((ret & IMAP_SEARCH_RET_MIN) && n > 0)
		sb_printf_num(&b, " MIN ", nums[0]);
	if ((ret & IMAP_SEARCH_RET_MAX) && n > 0)
		sb_printf_num(&b, " MAX ", nums[n - 1]);
	if (ret & IMAP_SEARCH_RET_COUNT)
		sb_printf_num(&b, " COUNT ", n);
	if ((ret & IMAP_SEARCH_RET_ALL) && n > 0) {
		char *set = imap_seqset_format(nums, n);
		sb_adds(&b, " ALL ");
		sb_adds(&b, set);
		free(set);
	}
	if (modseq != 0 && n > 0)
		sb_printf_num(&b, " MODSEQ ", modseq);
	return b.s;
}

void imap_search_save_result(unsigned ret, const uint32_t *uids, size_t n,
			     struct imap_seqset *saved_r)
{
	memset(saved_r, 0, sizeof(*saved_r));
	if (n == 0)
		return;
	bool only_ends = (ret & (IMAP_SEARCH_RET_MIN | IMAP_SEARCH_RET_MAX)) != 0 &&
			 (ret & (IMAP_SEARCH_RET_ALL | IMAP_SEARCH_RET_COUNT)) == 0;
	if (only_ends) {
		if (ret & IMAP_SEARCH_RET_MIN)
			imap_seqset_add(saved_r, uids[0], uids[0]);
		if (ret & IMAP_SEARCH_RET_MAX)
			imap_seqset_add(saved_r, uids[n - 1], uids[n - 1]);
		return;
	}
	/* runs of consecutive UIDs become one range */
	size_t cap = 0;
	for (size_t i = 0; i < n;) {
		size_t j = i;
		while (j + 1 < n && uids[j] != UINT32_MAX && uids[j + 1] == uids[j] + 1)
			j++;
		saved_r->ranges = xgrow(saved_r->ranges, &cap, saved_r->n + 1,
					sizeof(*saved_r->ranges));
		saved_r->ranges[saved_r->n].lo = uids[i];
		saved_r->ranges[saved_r->n].hi = uids[j];
		saved_r->n++;
		i = j + 1;
	}
}

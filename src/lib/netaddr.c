#include "lib/netaddr.h"
#include "lib/strutil.h"
#include "lib/xalloc.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int hostport_parse(const char *s, char **host_r, uint16_t *port_r)
{
	const char *colon;
	char *host;
	if (s[0] == '[') {
		const char *end = strchr(s, ']');
		if (end == NULL || end[1] != ':')
			return -1;
		host = xstrndup(s + 1, (size_t)(end - s - 1));
		colon = end + 1;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL || strchr(s, ':') != colon)
			return -1;
		host = xstrndup(s, (size_t)(colon - s));
	}
	uint64_t port;
	if (parse_uint64(colon + 1, &port) < 0 || port == 0 || port > 65535) {
		free(host);
		return -1;
	}
	*host_r = host;
	*port_r = (uint16_t)port;
	return 0;
}

static int cidr_parse(const char *s, struct cidr *c)
{
	char buf[INET6_ADDRSTRLEN + 8];
	if (strlen(s) >= sizeof(buf))
		return -1;
	strcpy(buf, s);
	char *slash = strchr(buf, '/');
	uint64_t prefix = 0;
	if (slash != NULL) {
		*slash = '\0';
		if (parse_uint64(slash + 1, &prefix) < 0)
			return -1;
	}
	memset(c, 0, sizeof(*c));
	if (inet_pton(AF_INET, buf, c->addr) == 1) {
		c->family = AF_INET;
		if (slash == NULL)
			prefix = 32;
		if (prefix > 32)
			return -1;
	} else if (inet_pton(AF_INET6, buf, c->addr) == 1) {
		c->family = AF_INET6;
		if (slash == NULL)
			prefix = 128;
		if (prefix > 128)
			return -1;
	} else {
		return -1;
	}
	c->prefix = (unsigned)prefix;
	return 0;
}

int netlist_parse(const char *s, struct netlist *list_r, const char **error_r)
{
	size_t n;
	char **v = strv_split_list(s, &n);
	struct netlist l = {.items = xcalloc(n ? n : 1, sizeof(struct cidr)), .count = 0};
	for (size_t i = 0; i < n; i++) {
		if (cidr_parse(v[i], &l.items[l.count]) < 0) {
			*error_r = "invalid network (expected address or address/prefix)";
			strv_free(&v);
			netlist_free(&l);
			return -1;
		}
		l.count++;
	}
	strv_free(&v);
	*list_r = l;
	return 0;
}

void netlist_free(struct netlist *list)
{
	free(list->items);
	list->items = NULL;
	list->count = 0;
}

static bool prefix_match(const unsigned char *a, const unsigned char *b, unsigned bits)
{
	unsigned bytes = bits / 8, rest = bits % 8;
	if (memcmp(a, b, bytes) != 0)
		return false;
	if (rest == 0)
		return true;
	unsigned char mask = (unsigned char)(0xff << (8 - rest));
	return (a[bytes] & mask) == (b[bytes] & mask);
}

bool netlist_match(const struct netlist *list, const struct sockaddr *sa)
{
	unsigned char addr[16];
	int family;
	if (sa->sa_family == AF_INET) {
		memcpy(addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		family = AF_INET;
	} else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a6)) {
			memcpy(addr, a6->s6_addr + 12, 4);
			family = AF_INET;
		} else {
			memcpy(addr, a6->s6_addr, 16);
			family = AF_INET6;
		}
	} else {
		return false;
	}
	for (size_t i = 0; i < list->count; i++) {
		const struct cidr *c = &list->items[i];
		if (c->family == family && prefix_match(c->addr, addr, c->prefix))
			return true;
	}
	return false;
}

const char *sockaddr_ntop(const struct sockaddr *sa, char *buf, size_t bufsize)
{
	if (sa->sa_family == AF_INET) {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf, bufsize);
	} else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a6))
			inet_ntop(AF_INET, a6->s6_addr + 12, buf, bufsize);
		else
			inet_ntop(AF_INET6, a6, buf, bufsize);
	} else if (sa->sa_family == AF_UNIX) {
		snprintf(buf, bufsize, "local");
	} else {
		snprintf(buf, bufsize, "unknown");
	}
	return buf;
}

/* Network address helpers: host:port strings, CIDR lists. */
#ifndef POSTERN_NETADDR_H
#define POSTERN_NETADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/*
 * Split "host:port", "[v6]:port" or ":port" (all addresses). *host_r is
 * allocated ("" for all addresses). 0 ok, -1 bad syntax or port.
 */
int hostport_parse(const char *s, char **host_r, uint16_t *port_r);

struct cidr {
	int family; /* AF_INET or AF_INET6 */
	unsigned char addr[16];
	unsigned prefix;
};

struct netlist {
	struct cidr *items;
	size_t count;
};

/* Parse a list "127.0.0.0/8, ::1, 10.1.2.3". 0 ok, -1 with *error_r. */
int netlist_parse(const char *s, struct netlist *list_r, const char **error_r);
void netlist_free(struct netlist *list);
/* True if `sa` (AF_INET/AF_INET6, v4-mapped v6 treated as v4) is in the list. */
bool netlist_match(const struct netlist *list, const struct sockaddr *sa);

/* Numeric text of an address without port; buf >= 64. */
const char *sockaddr_ntop(const struct sockaddr *sa, char *buf, size_t bufsize);

#endif

// The libnl-3 / libnl-route-3 headers the netlink mirror uses, plus small
// inline helpers for what Swift cannot import (function-like macros,
// anonymous enum constants).
#ifndef ANYGATE_CNETLINK_H
#define ANYGATE_CNETLINK_H

#include <netlink/netlink.h>
#include <netlink/cache.h>
#include <netlink/socket.h>
#include <netlink/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/addr.h>
#include <netlink/route/route.h>
#include <netlink/route/nexthop.h>
#include <netlink/route/neighbour.h>
#include <linux/if.h>
#include <linux/neighbour.h>

static const int ag_NL_ACT_NEW = NL_ACT_NEW;
static const int ag_NL_ACT_DEL = NL_ACT_DEL;
static const int ag_NL_ACT_CHANGE = NL_ACT_CHANGE;
static const int ag_NL_AUTO_PROVIDE = NL_AUTO_PROVIDE;
static const int ag_NLE_NOMEM = NLE_NOMEM;
static const int ag_NLE_DUMP_INTR = NLE_DUMP_INTR;
static const unsigned ag_IFF_UP = IFF_UP;
static const unsigned ag_IFF_RUNNING = IFF_RUNNING;
static const unsigned ag_IFF_LOWER_UP = IFF_LOWER_UP;
static const int ag_NUD_INCOMPLETE = NUD_INCOMPLETE;
static const int ag_NUD_FAILED = NUD_FAILED;
static const int ag_NUD_NOARP = NUD_NOARP;
static const int ag_NUD_PERMANENT = NUD_PERMANENT;

/// The object type name of a libnl object ("route/link", "route/addr", ...).
static inline const char *ag_object_type(struct nl_object *obj) { return nl_object_get_type(obj); }

#endif

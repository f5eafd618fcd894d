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
#include <netlink/route/rtnl.h>
#include <netlink/msg.h>
#include <linux/rtnetlink.h>
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
/// IPv6 addresses still under the host's duplicate address detection, or failed by it.
static const unsigned ag_IFA_F_TENTATIVE = IFA_F_TENTATIVE;
static const unsigned ag_IFA_F_DADFAILED = IFA_F_DADFAILED;
static const unsigned ag_IFA_F_NODAD = IFA_F_NODAD;

/// The object type name of a libnl object ("route/link", "route/addr", ...).
static inline const char *ag_object_type(struct nl_object *obj) { return nl_object_get_type(obj); }

/// Routes are not kept in a libnl cache (a million routes would cost
/// hundreds of MB there and hash chains that grow with the table): route
/// messages are parsed one by one into a transient libnl object handed to
/// `fn` with whether the message was a deletion.
typedef void (*ag_route_fn)(struct nl_object *obj, int removed, void *ctx);
struct ag_route_sink { ag_route_fn fn; void *ctx; int removed; };

static void ag_route_parsed(struct nl_object *obj, void *arg) {
    struct ag_route_sink *s = (struct ag_route_sink *)arg;
    s->fn(obj, s->removed, s->ctx);
}

static int ag_route_message(struct nl_msg *msg, void *arg) {
    struct ag_route_sink *s = (struct ag_route_sink *)arg;
    int type = nlmsg_hdr(msg)->nlmsg_type;
    if (type != RTM_NEWROUTE && type != RTM_DELROUTE) return NL_OK;
    s->removed = type == RTM_DELROUTE;
    nl_msg_parse(msg, ag_route_parsed, s);
    return NL_OK;
}

/// Joins the IPv4 and IPv6 route groups on `sk` (not yet connected) and
/// sends every route message to the sink.
static inline int ag_route_listen(struct nl_sock *sk, struct ag_route_sink *sink) {
    nl_socket_disable_seq_check(sk);
    nl_socket_disable_auto_ack(sk);
    int r = nl_socket_modify_cb(sk, NL_CB_VALID, NL_CB_CUSTOM, ag_route_message, sink);
    if (r < 0) return r;
    r = nl_connect(sk, NETLINK_ROUTE);
    if (r < 0) return r;
    r = nl_socket_add_memberships(sk, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE, 0);
    if (r < 0) return r;
    return nl_socket_set_nonblocking(sk);
}

/// Reads one batch of route messages; 0 when nothing was waiting,
/// positive when something was read, negative libnl error (-NLE_NOMEM for
/// lost messages).
static inline int ag_route_read(struct nl_sock *sk) {
    struct nl_cb *cb = nl_socket_get_cb(sk);
    int r = nl_recvmsgs_report(sk, cb);
    nl_cb_put(cb);
    if (r == -NLE_AGAIN) return 0;
    return r;
}

/// Dumps every IPv4 and IPv6 route into the sink through `sk` (a connected socket).
static inline int ag_route_dump(struct nl_sock *sk, struct ag_route_sink *sink) {
    struct nl_cb *own = nl_socket_get_cb(sk);
    struct nl_cb *cb = nl_cb_clone(own);
    nl_cb_put(own);
    if (!cb) return -NLE_NOMEM;
    nl_cb_set(cb, NL_CB_VALID, NL_CB_CUSTOM, ag_route_message, sink);
    int r = nl_rtgen_request(sk, RTM_GETROUTE, AF_UNSPEC, NLM_F_DUMP);
    if (r >= 0) r = nl_recvmsgs(sk, cb);
    nl_cb_put(cb);
    return r;
}

#endif

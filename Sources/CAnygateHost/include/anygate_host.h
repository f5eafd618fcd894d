// Linux constants and structs that Swift cannot import directly (ioctl
// numbers built by _IOW-style macros, struct ifreq field macros), wrapped
// as constants and tiny inline functions. No logic lives here.
#ifndef ANYGATE_HOST_H
#define ANYGATE_HOST_H

#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <signal.h>
#include <string.h>
#include <sys/random.h>
#include <sys/file.h>
#include <netinet/in.h>
#include <stdint.h>

static const unsigned long ag_TUNSETIFF = TUNSETIFF;
static const unsigned long ag_TUNSETCARRIER = TUNSETCARRIER;
static const unsigned long ag_TUNGETIFF = TUNGETIFF;
static const unsigned long ag_SIOCGIFFLAGS = SIOCGIFFLAGS;
static const unsigned long ag_SIOCSIFFLAGS = SIOCSIFFLAGS;
static const unsigned long ag_SIOCGIFINDEX = SIOCGIFINDEX;
static const unsigned long ag_SIOCGIFMTU = SIOCGIFMTU;
static const unsigned long ag_SIOCSIFMTU = SIOCSIFMTU;
static const unsigned long ag_SIOCGIFHWADDR = SIOCGIFHWADDR;
static const short ag_IFF_TAP = IFF_TAP;
static const short ag_IFF_TUN = IFF_TUN;
static const short ag_IFF_NO_PI = IFF_NO_PI;
static const short ag_IFF_VNET_HDR = IFF_VNET_HDR;
static const short ag_IFF_MULTI_QUEUE = IFF_MULTI_QUEUE;
/* TUN_F_* offload features; USO4/USO6 (Linux 6.2) are missing from older headers. */
static const unsigned int ag_TUN_F_CSUM = 0x01;
static const unsigned int ag_TUN_F_TSO4 = 0x02;
static const unsigned int ag_TUN_F_TSO6 = 0x04;
static const unsigned int ag_TUN_F_TSO_ECN = 0x08;
static const unsigned int ag_TUN_F_USO4 = 0x20;
static const unsigned int ag_TUN_F_USO6 = 0x40;
/// TUNSETOFFLOAD takes its flags by value; TUNSETVNETHDRSZ by pointer.
static inline int ag_tun_set_offload(int fd, unsigned int flags) { return ioctl(fd, TUNSETOFFLOAD, flags); }
static inline int ag_tun_set_vnet_header_size(int fd, int size) { return ioctl(fd, TUNSETVNETHDRSZ, &size); }
static const short ag_IFF_UP = IFF_UP;
static const short ag_IFF_RUNNING = IFF_RUNNING;
static const int ag_ETH_P_ALL = ETH_P_ALL;
static const int ag_PACKET_ADD_MEMBERSHIP = PACKET_ADD_MEMBERSHIP;
static const int ag_PACKET_DROP_MEMBERSHIP = PACKET_DROP_MEMBERSHIP;
static const int ag_PACKET_MR_MULTICAST = PACKET_MR_MULTICAST;
static const int ag_PACKET_MR_UNICAST = PACKET_MR_UNICAST;
static const int ag_PACKET_MR_PROMISC = PACKET_MR_PROMISC;
static const int ag_PACKET_IGNORE_OUTGOING = 23;  /* PACKET_IGNORE_OUTGOING, Linux 4.20 */
static const int ag_PACKET_OUTGOING = PACKET_OUTGOING;
static const int ag_SOL_PACKET = 263;
static const int ag_PACKET_STATISTICS = PACKET_STATISTICS;
static const int ag_PACKET_VNET_HDR = 15;
static const int ag_PACKET_AUXDATA = PACKET_AUXDATA;
/// Room for one PACKET_AUXDATA control message.
#define AG_AUXDATA_SPACE CMSG_SPACE(sizeof(struct tpacket_auxdata))
static const int ag_auxdata_space = AG_AUXDATA_SPACE;
/// Whether a received message's PACKET_AUXDATA says the checksum is not
/// filled in yet (TP_STATUS_CSUMNOTREADY: a frame the host itself sent,
/// checksum left to offload).
int ag_checksum_not_ready(const struct msghdr *message);
/// The cumulative receive-queue overflow count a message carries (SO_RXQ_OVFL), if any.
int ag_rxq_overflow(const struct msghdr *message, uint32_t *drops);  /* PACKET_VNET_HDR: a 10-byte virtio_net_hdr before each frame */

/// Sets the interface name of an ifreq (truncated to IFNAMSIZ-1).
static inline void ag_ifreq_set_name(struct ifreq *ifr, const char *name) {
    memset(ifr->ifr_name, 0, IFNAMSIZ);
    strncpy(ifr->ifr_name, name, IFNAMSIZ - 1);
}
static inline const char *ag_ifreq_name(const struct ifreq *ifr) { return ifr->ifr_name; }
static inline void ag_ifreq_set_flags(struct ifreq *ifr, short flags) { ifr->ifr_flags = flags; }
static inline short ag_ifreq_flags(const struct ifreq *ifr) { return ifr->ifr_flags; }
static inline int ag_ifreq_ifindex(const struct ifreq *ifr) { return ifr->ifr_ifindex; }
static inline int ag_ifreq_mtu(const struct ifreq *ifr) { return ifr->ifr_mtu; }
static inline void ag_ifreq_set_mtu(struct ifreq *ifr, int mtu) { ifr->ifr_mtu = mtu; }
static inline const unsigned char *ag_ifreq_hwaddr(const struct ifreq *ifr) {
    return (const unsigned char *)ifr->ifr_hwaddr.sa_data;
}

/// A signal set holding the given signals, for signalfd.
static inline void ag_sigset(sigset_t *set, int a, int b, int c) {
    sigemptyset(set); sigaddset(set, a); sigaddset(set, b); sigaddset(set, c);
}
/// Receives one datagram (recvmsg); when the kernel attaches the socket's
/// receive-queue overflow count (SO_RXQ_OVFL, cumulative), stores it in *drops.
ssize_t ag_recv_counting_drops(int fd, void *buffer, size_t length, struct sockaddr_storage *from, uint32_t *drops);
/* UDP GSO/GRO (Linux 4.18 / 5.0): SOL_UDP options, absent from older headers. */
#define AG_UDP_SEGMENT 103
#define AG_UDP_GRO 104
static const int ag_SOL_UDP = 17;
static const int ag_UDP_GRO = AG_UDP_GRO;
/// The same, with UDP_GRO: *segment gets the size of the datagrams the
/// kernel coalesced into the buffer (0 when it holds one datagram).
ssize_t ag_recv_gro(int fd, void *buffer, size_t length, struct sockaddr_storage *from, uint32_t *drops, int *segment);
/// Sends `length` bytes as datagrams of `segment` bytes each (the last may be shorter) with UDP_SEGMENT.
ssize_t ag_send_segmented(int fd, const void *buffer, size_t length, const struct sockaddr_storage *to, socklen_t tolen, uint16_t segment);
static const int ag_SO_RXQ_OVFL = SO_RXQ_OVFL;

/// recvmmsg/sendmmsg's message header (struct mmsghdr is hidden behind
/// _GNU_SOURCE in the system headers Swift imports); same layout.
struct ag_mmsghdr { struct msghdr msg_hdr; unsigned int msg_len; };
/// recvmmsg without waiting, and sendmmsg: messages done, or -1 with errno.
int ag_recvmmsg(int fd, struct ag_mmsghdr *messages, unsigned int count);
int ag_sendmmsg(int fd, struct ag_mmsghdr *messages, unsigned int count);

/// flock(2): Swift sees the name as `struct flock` first.
static inline int ag_flock(int fd, int operation) { return flock(fd, operation); }
static inline int ag_block_signals(const sigset_t *set) { return sigprocmask(SIG_BLOCK, set, NULL); }

/// PACKET_FANOUT's argument: group id in the low 16 bits, mode above
/// (hash: by the kernel's flow hash, so a flow stays on one socket).
static const int ag_PACKET_FANOUT = PACKET_FANOUT;
static inline int ag_fanout_hash(unsigned short group) { return (int)group | (PACKET_FANOUT_HASH << 16); }

/// A non-blocking, close-on-exec eventfd (a thread's doorbell).
int ag_eventfd(void);
/// Names the calling thread (pthread_setname_np, a GNU extension).
void ag_name_thread(const char *name);

/// Moves the calling thread into the network namespace at `path`
/// (setns with CLONE_NEWNET, a GNU extension); -1 with errno on failure.
int ag_enter_netns(const char *path);

/// CPUs in the calling thread's affinity mask (sched_getaffinity).
int ag_usable_cpus(void);

/// A socket filter that takes nothing (SO_ATTACH_FILTER, `ret #0`), and
/// its removal: a packet socket that will join a fanout group takes no
/// frame of its own before it has joined (those would be duplicates).
int ag_attach_drop_all(int fd);
int ag_detach_filter(int fd);

#endif

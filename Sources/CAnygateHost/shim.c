// Helpers that are plainer in C than through Swift's pointer APIs.
#define _GNU_SOURCE
#include "anygate_host.h"
#include <stdint.h>
#include <string.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sched.h>
#include <linux/filter.h>
#include <fcntl.h>
#include <unistd.h>

ssize_t ag_recv_counting_drops(int fd, void *buffer, size_t length, struct sockaddr_storage *from, uint32_t *drops) {
    int segment = 0;
    return ag_recv_gro(fd, buffer, length, from, drops, &segment);
}

ssize_t ag_recv_gro(int fd, void *buffer, size_t length, struct sockaddr_storage *from, uint32_t *drops, int *segment) {
    struct iovec iov = { buffer, length };
    union { char bytes[CMSG_SPACE(sizeof(uint32_t)) + CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } control;
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_name = from;
    msg.msg_namelen = sizeof *from;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.bytes;
    msg.msg_controllen = sizeof control.bytes;
    ssize_t r = recvmsg(fd, &msg, 0);
    if (r < 0) return r;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL && c->cmsg_len >= CMSG_LEN(sizeof(uint32_t))) {
            memcpy(drops, CMSG_DATA(c), sizeof(uint32_t));
        }
        if (c->cmsg_level == IPPROTO_UDP && c->cmsg_type == AG_UDP_GRO && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
            memcpy(segment, CMSG_DATA(c), sizeof(int));
        }
    }
    return r;
}

ssize_t ag_send_segmented(int fd, const void *buffer, size_t length, const struct sockaddr_storage *to, socklen_t tolen, uint16_t segment) {
    struct iovec iov = { (void *)buffer, length };
    union { char bytes[CMSG_SPACE(sizeof(uint16_t))]; struct cmsghdr align; } control;
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_name = (void *)to;
    msg.msg_namelen = tolen;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.bytes;
    msg.msg_controllen = sizeof control.bytes;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = IPPROTO_UDP;
    c->cmsg_type = AG_UDP_SEGMENT;
    c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    memcpy(CMSG_DATA(c), &segment, sizeof segment);
    return sendmsg(fd, &msg, 0);
}

int ag_recvmmsg(int fd, struct ag_mmsghdr *messages, unsigned int count) {
    return recvmmsg(fd, (struct mmsghdr *)messages, count, MSG_DONTWAIT, NULL);
}

int ag_sendmmsg(int fd, struct ag_mmsghdr *messages, unsigned int count) {
    return sendmmsg(fd, (struct mmsghdr *)messages, count, 0);
}

int ag_checksum_not_ready(const struct msghdr *message) {
    for (struct cmsghdr *c = CMSG_FIRSTHDR((struct msghdr *)message); c != NULL; c = CMSG_NXTHDR((struct msghdr *)message, c)) {
        if (c->cmsg_level == SOL_PACKET && c->cmsg_type == PACKET_AUXDATA && c->cmsg_len >= CMSG_LEN(sizeof(struct tpacket_auxdata))) {
            struct tpacket_auxdata aux;
            memcpy(&aux, CMSG_DATA(c), sizeof aux);
            return (aux.tp_status & TP_STATUS_CSUMNOTREADY) != 0;
        }
    }
    return 0;
}

int ag_rxq_overflow(const struct msghdr *message, uint32_t *drops) {
    for (struct cmsghdr *c = CMSG_FIRSTHDR((struct msghdr *)message); c != NULL; c = CMSG_NXTHDR((struct msghdr *)message, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL && c->cmsg_len >= CMSG_LEN(sizeof(uint32_t))) {
            memcpy(drops, CMSG_DATA(c), sizeof(uint32_t));
            return 1;
        }
    }
    return 0;
}

int ag_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

void ag_name_thread(const char *name) {
    char short_name[16];
    strncpy(short_name, name, 15);
    short_name[15] = 0;
    pthread_setname_np(pthread_self(), short_name);
}

int ag_enter_netns(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    int r = setns(fd, CLONE_NEWNET);
    close(fd);
    return r;
}

int ag_usable_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
    return CPU_COUNT(&set);
}

int ag_attach_drop_all(int fd) {
    struct sock_filter code[] = { BPF_STMT(BPF_RET | BPF_K, 0) };
    struct sock_fprog prog = { .len = 1, .filter = code };
    return setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog);
}

int ag_detach_filter(int fd) {
    int unused = 0;
    return setsockopt(fd, SOL_SOCKET, SO_DETACH_FILTER, &unused, sizeof unused);
}

// Helpers that are plainer in C than through Swift's pointer APIs.
#define _GNU_SOURCE
#include "anygate_host.h"
#include <stdint.h>
#include <string.h>

ssize_t ag_recv_counting_drops(int fd, void *buffer, size_t length, struct sockaddr_in *from, uint32_t *drops) {
    struct iovec iov = { buffer, length };
    union { char bytes[CMSG_SPACE(sizeof(uint32_t))]; struct cmsghdr align; } control;
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
    }
    return r;
}

int ag_recvmmsg(int fd, struct ag_mmsghdr *messages, unsigned int count) {
    return recvmmsg(fd, (struct mmsghdr *)messages, count, MSG_DONTWAIT, NULL);
}

int ag_sendmmsg(int fd, struct ag_mmsghdr *messages, unsigned int count) {
    return sendmmsg(fd, (struct mmsghdr *)messages, count, 0);
}

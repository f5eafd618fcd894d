/* tapfwd: the reference for any TAP-based forwarder on this machine.
 *
 * Opens two TAP devices with virtio-net headers and TSO/checksum offload
 * announced, and copies every frame read on one to the other, header
 * untouched: no parsing, one thread, epoll, up to 64 frames per wake-up.
 * A wire between two hosts on one subnet, at the speed TAPs allow.
 *
 * Usage: tapfwd TAP1 TAP2   (runs until killed; the TAPs go with it)
 */
#include <errno.h>
#include <sys/epoll.h>

#include "tap.h"

    return fd;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: tapfwd TAP1 TAP2\n"); return 2; }
    int fd[2] = { open_tap(argv[1], O_NONBLOCK), open_tap(argv[2], O_NONBLOCK) };
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < 2; i++) {
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (unsigned)i };
        epoll_ctl(ep, EPOLL_CTL_ADD, fd[i], &ev);
    }
    static unsigned char buf[12 + 65550];
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        struct epoll_event evs[2];
        int n = epoll_wait(ep, evs, 2, -1);
        if (n < 0 && errno != EINTR) { perror("epoll_wait"); return 1; }
        for (int k = 0; k < n; k++) {
            int from = (int)evs[k].data.u32, to = 1 - from;
            for (int j = 0; j < 64; j++) {
                ssize_t r = read(fd[from], buf, sizeof buf);
                if (r <= 0) break;
                (void)!write(fd[to], buf, (size_t)r);
            }
        }
    }
}

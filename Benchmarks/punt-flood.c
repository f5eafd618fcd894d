// A flood of TCP SYNs to one address and port at a set rate, for
// Benchmarks/e2e-punt.sh: what a host on a gateway's link can throw at the
// gateway's BGP port. A raw TCP socket (the kernel writes the IP header),
// batches of 64 with sendmmsg, paced by the monotonic clock; source ports
// vary. Prints the packets sent and the rate achieved.
// Usage: punt-flood SRC-IPV4 DST-IPV4 PORT PACKETS-PER-SECOND SECONDS
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static uint16_t checksum(const uint8_t *p, size_t n, uint32_t sum) {
    for (size_t i = 0; i + 1 < n; i += 2) sum += (uint32_t)p[i] << 8 | p[i + 1];
    if (n & 1) sum += (uint32_t)p[n - 1] << 8;
    while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
    return (uint16_t)~sum;
}

enum { BATCH = 64, LEN = 20 };

int main(int argc, char **argv) {
    if (argc != 6) { fprintf(stderr, "usage: %s SRC DST PORT PPS SECONDS\n", argv[0]); return 2; }
    struct in_addr src, dst;
    if (!inet_pton(AF_INET, argv[1], &src) || !inet_pton(AF_INET, argv[2], &dst)) { fprintf(stderr, "bad address\n"); return 2; }
    int port = atoi(argv[3]);
    double pps = atof(argv[4]), secs = atof(argv[5]);
    int fd = socket(AF_INET, SOCK_RAW, IPPROTO_TCP);
    if (fd < 0) { perror("socket"); return 1; }
    struct sockaddr_in to = { .sin_family = AF_INET, .sin_addr = dst };
    static uint8_t seg[BATCH][LEN];
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int k = 0; k < BATCH; k++) {
        iov[k].iov_base = seg[k];
        iov[k].iov_len = LEN;
        msgs[k].msg_hdr.msg_iov = &iov[k];
        msgs[k].msg_hdr.msg_iovlen = 1;
        msgs[k].msg_hdr.msg_name = &to;
        msgs[k].msg_hdr.msg_namelen = sizeof to;
    }
    const uint8_t *s = (const uint8_t *)&src, *d = (const uint8_t *)&dst;
    uint32_t pseudo = (s[0] << 8 | s[1]) + (s[2] << 8 | s[3]) + (d[0] << 8 | d[1]) + (d[2] << 8 | d[3]) + IPPROTO_TCP + LEN;
    unsigned long sent = 0, n = 0;
    double start = now();
    while (now() - start < secs) {
        // Ahead of schedule: wait.
        double due = start + (double)sent / pps;
        if (now() < due) { struct timespec z = { 0, 20000 }; nanosleep(&z, NULL); continue; }
        for (int k = 0; k < BATCH; k++, n++) {
            uint8_t *t = seg[k];
            memset(t, 0, LEN);
            uint16_t sp = 1024 + (uint16_t)(n % 60000);
            t[0] = sp >> 8; t[1] = sp & 0xFF; t[2] = port >> 8; t[3] = port & 0xFF;
            uint32_t seq = (uint32_t)n * 2654435761u;
            memcpy(t + 4, &seq, 4);
            t[12] = 5 << 4; t[13] = 0x02; t[14] = 0xFF; t[15] = 0xFF;  // SYN, window 65535
            uint16_t c = checksum(t, LEN, pseudo);
            t[16] = c >> 8; t[17] = c & 0xFF;
        }
        int r = sendmmsg(fd, msgs, BATCH, 0);
        if (r > 0) sent += r;
    }
    double took = now() - start;
    printf("%lu %.0f\n", sent, sent / took);
    return 0;
}

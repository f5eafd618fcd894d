/* Connection churn for Benchmarks/e2e-tcp.sh, speaking the bandwidth-test
 * responder's protocol (README, "The stack's own TCP").
 *
 *   churn client ADDR PORT SECONDS   connect, ask for 1 byte, read to EOF
 *                                    (the server closes first, so it holds
 *                                    TIME-WAIT), close; again, as fast as it
 *                                    goes. Prints "connections failures".
 *   churn server ADDR PORT           the same server for Linux: read the
 *                                    line, write 1 byte, close first.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: churn client ADDR PORT SECONDS | churn server ADDR PORT\n"); return 2; }
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[3])) };
    if (inet_pton(AF_INET, argv[2], &a.sin_addr) != 1) { fprintf(stderr, "bad address\n"); return 2; }
    static const char line[] = "anygate-bandwidth-test 1 download 1\n";
    char buf[256];
    if (strcmp(argv[1], "server") == 0) {
        int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1024)) { perror("listen"); return 1; }
        for (;;) {
            int c = accept(l, NULL, NULL);
            if (c < 0) continue;
            ssize_t n = 0, got = 0;
            while (got < (ssize_t)sizeof line - 1 && (n = read(c, buf + got, sizeof buf - got)) > 0) got += n;
            if (write(c, "x", 1) != 1) { /* the client went away */ }
            close(c);
        }
    }
    if (argc < 5) return 2;
    double end = now() + atof(argv[4]);
    struct sockaddr_in from = { .sin_family = AF_INET };
    long sources = 0, turn = 0;
    if (argc >= 7) {
        if (inet_pton(AF_INET, argv[5], &from.sin_addr) != 1) { fprintf(stderr, "bad source address\n"); return 2; }
        sources = atol(argv[6]);
    }
    uint32_t first = ntohl(from.sin_addr.s_addr);
    long done = 0, failed = 0;
    while (now() < end) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) { failed++; continue; }
        if (sources > 0) {
            from.sin_addr.s_addr = htonl(first + (uint32_t)(turn++ % sources));
            if (bind(s, (struct sockaddr *)&from, sizeof from) != 0) { failed++; close(s); continue; }
        }
        if (connect(s, (struct sockaddr *)&a, sizeof a) != 0 || write(s, line, sizeof line - 1) != (ssize_t)sizeof line - 1) {
            failed++; close(s); usleep(1000); continue;
        }
        ssize_t n, got = 0;
        while ((n = read(s, buf, sizeof buf)) > 0) got += n;
        close(s);
        if (got == 1) done++; else failed++;
    }
    printf("%ld %ld\n", done, failed);
    return 0;
}

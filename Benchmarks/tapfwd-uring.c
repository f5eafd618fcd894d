/* tapfwd-uring: tapfwd.c with io_uring instead of epoll + read/write.
 *
 * The same wire between two TAPs with virtio-net headers, but every read
 * and write is a submission queue entry: 32 reads stay posted on each TAP,
 * a completed read becomes a write to the other TAP, and a completed write
 * posts its buffer's read again; one io_uring_enter submits and reaps
 * them all. It answers one question for the daemon's data path: does
 * io_uring beat batched system calls for TAP I/O on this machine?
 *
 * Usage: tapfwd-uring TAP1 TAP2   (needs liburing; runs until killed)
 */
#include <liburing.h>

#include "tap.h"

#define DEPTH 32
#define SIZE (12 + 65550)

    return fd;
}

/* user_data: buffer index, and whether the entry is a write (bit 16). */
static unsigned char *buffers[2 * DEPTH];
static int fds[2];

static void post_read(struct io_uring *ring, int b) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    io_uring_prep_read(sqe, fds[b / DEPTH], buffers[b], SIZE, 0);
    io_uring_sqe_set_data64(sqe, (unsigned long long)b);
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: tapfwd-uring TAP1 TAP2\n"); return 2; }
    fds[0] = open_tap(argv[1], 0);
    fds[1] = open_tap(argv[2], 0);
    struct io_uring ring;
    if (io_uring_queue_init(4 * DEPTH, &ring, 0) < 0) { perror("io_uring_queue_init"); return 1; }
    for (int b = 0; b < 2 * DEPTH; b++) { buffers[b] = malloc(SIZE); post_read(&ring, b); }
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        io_uring_submit_and_wait(&ring, 1);
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            unsigned long long data = io_uring_cqe_get_data64(cqe);
            int b = (int)(data & 0xFFFF);
            if (data & 0x10000 || cqe->res <= 0) {
                post_read(&ring, b);  /* a write done (or a failed read): read into the buffer again */
            } else {
                struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
                io_uring_prep_write(sqe, fds[1 - b / DEPTH], buffers[b], (unsigned)cqe->res, 0);
                io_uring_sqe_set_data64(sqe, (unsigned long long)b | 0x10000);
            }
            seen++;
        }
        io_uring_cq_advance(&ring, seen);
    }
}

/*
 * connrate: opens TCP connections to ADDRESS:PORT as fast as it can for SECONDS, each
 * connect() to the end of the handshake then close(), from PROCESSES processes, and prints the
 * connections per second. The rig's measurement of the per-connection cost of enforcement
 * between real pods (integration/cluster/measure.sh; built static by images.sh into the
 * image knp.local/connrate:1).
 *   connrate ADDRESS PORT SECONDS PROCESSES
 * Output: "<connections> connections in <seconds> s: <rate>/s, <failures> failed".
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: connrate ADDRESS PORT SECONDS PROCESSES\n");
        return 2;
    }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &to.sin_addr) != 1) {
        fprintf(stderr, "connrate: bad IPv4 address %s\n", argv[1]);
        return 2;
    }
    double seconds = atof(argv[3]);
    int processes = atoi(argv[4]);
    /* One counter pair per process, shared with the parent. */
    long *counts = mmap(NULL, 2 * processes * sizeof(long), PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (counts == MAP_FAILED) {
        perror("connrate: mmap");
        return 1;
    }
    double start = now();
    for (int p = 0; p < processes; p++) {
        if (fork() == 0) {
            long ok = 0, failed = 0;
            while (now() - start < seconds) {
                int fd = socket(AF_INET, SOCK_STREAM, 0);
                if (fd < 0) {
                    failed++;
                    continue;
                }
                /* RST on close: no TIME_WAIT piling up on the client's ports. */
                struct linger lg = {.l_onoff = 1, .l_linger = 0};
                setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
                /* A dropped SYN fails the attempt after 1 s (connect honours SO_SNDTIMEO). */
                struct timeval timeout = {.tv_sec = 1};
                setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
                if (connect(fd, (struct sockaddr *)&to, sizeof to) == 0)
                    ok++;
                else
                    failed++;
                close(fd);
            }
            counts[2 * p] = ok;
            counts[2 * p + 1] = failed;
            _exit(0);
        }
    }
    while (wait(NULL) > 0) {
    }
    double elapsed = now() - start;
    long ok = 0, failed = 0;
    for (int p = 0; p < processes; p++) {
        ok += counts[2 * p];
        failed += counts[2 * p + 1];
    }
    printf("%ld connections in %.1f s: %.0f/s, %ld failed\n", ok, elapsed, ok / elapsed, failed);
    return 0;
}

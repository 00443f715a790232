/*
 * udpprobe: the UDP half of the ClusterNetworkPolicy conformance probes on the rig, in the
 * agnhost test image beside agnhost 2.25 (images.sh), whose `connect` knows only TCP and SCTP
 * and whose `netexec` cannot bind its UDP server to one address.
 *
 *   udpprobe connect IP PORT TIMEOUT_MS
 *       What agnhost 2.45's `connect --protocol=udp` does: a connected UDP socket sends
 *       "hostname\n" and waits up to TIMEOUT_MS for any reply. Exit 0 on a reply; otherwise
 *       prints TIMEOUT, REFUSED (an ICMP port unreachable came back) or OTHER on stderr and
 *       exits 1; UNKNOWN and exit 2 for bad arguments.
 *   udpprobe serve IP PORT
 *       Answers every datagram with the host name, from a socket bound to IP (upstream's
 *       host-network centaurs run `netexec --udp-listen-addresses $(HOST_IP)` for the same
 *       reason: a socket bound to every address answers a pod of its own node from the pod
 *       gateway's address, which the client's connected socket refuses).
 *
 * IPv4 and IPv6. Static (gcc -static), no library but libc.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int address(const char *ip, const char *port, struct sockaddr_storage *out, socklen_t *len) {
  char *end;
  long number = strtol(port, &end, 10);
  if (*end != '\0' || number < 1 || number > 65535) return -1;
  memset(out, 0, sizeof *out);
  struct sockaddr_in *v4 = (struct sockaddr_in *)out;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
  if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons((unsigned short)number);
    *len = sizeof *v4;
    return AF_INET;
  }
  if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons((unsigned short)number);
    *len = sizeof *v6;
    return AF_INET6;
  }
  return -1;
}

static int fail(const char *kind, const char *what) {
  fprintf(stderr, "%s: %s: %s\n", kind, what, strerror(errno));
  return 1;
}

static int probe(const char *ip, const char *port, const char *timeout) {
  struct sockaddr_storage peer;
  socklen_t len;
  int family = address(ip, port, &peer, &len);
  int ms = atoi(timeout);
  if (family < 0 || ms <= 0) {
    fprintf(stderr, "UNKNOWN: usage: udpprobe connect IP PORT TIMEOUT_MS\n");
    return 2;
  }
  int fd = socket(family, SOCK_DGRAM, 0);
  if (fd < 0) return fail("OTHER", "socket");
  if (connect(fd, (struct sockaddr *)&peer, len) < 0) return fail("OTHER", "connect");
  if (send(fd, "hostname\n", 9, 0) < 0) return fail(errno == ECONNREFUSED ? "REFUSED" : "OTHER", "send");
  struct pollfd wait = {.fd = fd, .events = POLLIN};
  int ready = poll(&wait, 1, ms);
  if (ready < 0) return fail("OTHER", "poll");
  if (ready == 0) {
    fprintf(stderr, "TIMEOUT: no reply from %s:%s in %d ms\n", ip, port, ms);
    return 1;
  }
  char reply[512];
  ssize_t got = recv(fd, reply, sizeof reply - 1, 0);
  if (got < 0) return fail(errno == ECONNREFUSED ? "REFUSED" : "OTHER", "recv");
  reply[got] = '\0';
  printf("%s\n", reply);
  return 0;
}

static int serve(const char *ip, const char *port) {
  struct sockaddr_storage local;
  socklen_t len;
  int family = address(ip, port, &local, &len);
  if (family < 0) {
    fprintf(stderr, "UNKNOWN: usage: udpprobe serve IP PORT\n");
    return 2;
  }
  char name[256] = "unknown";
  gethostname(name, sizeof name - 1);
  int fd = socket(family, SOCK_DGRAM, 0);
  if (fd < 0) return fail("OTHER", "socket");
  if (bind(fd, (struct sockaddr *)&local, len) < 0) return fail("OTHER", "bind");
  fprintf(stderr, "serving UDP on %s:%s\n", ip, port);
  for (;;) {
    char buffer[2048];
    struct sockaddr_storage from;
    socklen_t from_len = sizeof from;
    ssize_t got = recvfrom(fd, buffer, sizeof buffer, 0, (struct sockaddr *)&from, &from_len);
    if (got < 0) {
      if (errno == EINTR) continue;
      return fail("OTHER", "recvfrom");
    }
    sendto(fd, name, strlen(name), 0, (struct sockaddr *)&from, from_len);
  }
}

int main(int argc, char **argv) {
  if (argc == 5 && strcmp(argv[1], "connect") == 0) return probe(argv[2], argv[3], argv[4]);
  if (argc == 4 && strcmp(argv[1], "serve") == 0) return serve(argv[2], argv[3]);
  fprintf(stderr, "UNKNOWN: usage: udpprobe connect IP PORT TIMEOUT_MS | udpprobe serve IP PORT\n");
  return 2;
}

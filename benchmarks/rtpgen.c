/* RTP load for bench_relay.py: a paced sender and a counting sink with sendmmsg/recvmmsg, so
 * the load generator costs far less CPU than the relay it measures (built by the benchmark).
 *   rtpgen send PORT_FIRST NPORTS PPS SECONDS SIZE [key|-] [oneport]
 *                                                    (flows round-robin, SSRC = FIRST+2i; to port
 *                                                     FIRST+2i, or all to FIRST with "oneport")
 *   rtpgen sink PORT_FIRST NPORTS SECONDS            (prints: packets bytes seq_gaps)
 *   rtpgen relay PORT_FIRST NPORTS SINK_FIRST SECONDS (a bare C relay, the anchor: port FIRST+2i to
 *                                                      SINK_FIRST+2i with recvmmsg/sendmmsg; prints CPU s)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 32
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

static int do_send(int first, int n, double pps, double seconds, int size, int key, int oneport) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  int sndbuf = 4 << 20; setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  unsigned char *bufs = calloc(n, size);
  struct sockaddr_in *to = calloc(n, sizeof *to);
  uint16_t *seq = calloc(n, 2);
  for (int i = 0; i < n; i++) {
    unsigned char *b = bufs + (size_t)i * size;
    b[0] = 0x80; b[1] = 96; uint32_t ssrc = htonl(first + 2 * i); memcpy(b + 8, &ssrc, 4);
    memcpy(b + 12, "\x00\x00\x01\xba", 4);
    /* "key": a video PES opening with an SPS after the (MPEG-1 sized) pack header, so every new
       timestamp is a key frame and the relay keeps (copies) every packet for joining consumers */
    if (key) memcpy(b + 24, "\x00\x00\x01\xe0\x00\x20\x80\x00\x00\x00\x00\x00\x01\x67", 14);
    to[i].sin_family = AF_INET; to[i].sin_port = htons(oneport ? first : first + 2 * i); to[i].sin_addr.s_addr = htonl(0x7f000001);
  }
  /* each message of a batch its own 12-byte RTP header (iov 0) before its flow's payload (iov 1):
     with one flow, a batch that pointed every message at the flow's one buffer sent its last
     sequence number k times (duplicates, not a stream) */
  struct mmsghdr msgs[BATCH]; struct iovec iov[BATCH][2]; unsigned char hdr[BATCH][12];
  double start = now(), end = start + seconds; long sent = 0; int flow = 0;
  while (now() < end) {
    long due = (long)((now() - start) * pps);
    if (due <= sent) { struct timespec ts = {0, 50000}; nanosleep(&ts, NULL); continue; }
    int k = due - sent > BATCH ? BATCH : (int)(due - sent);
    for (int j = 0; j < k; j++) {
      unsigned char *b = bufs + (size_t)flow * size;
      memcpy(hdr[j], b, 12);
      uint16_t s = htons(seq[flow]++); memcpy(hdr[j] + 2, &s, 2);
      uint32_t ts = htonl(seq[flow] / 8 * 3600); memcpy(hdr[j] + 4, &ts, 4);
      iov[j][0].iov_base = hdr[j]; iov[j][0].iov_len = 12;
      iov[j][1].iov_base = b + 12; iov[j][1].iov_len = size - 12;
      memset(&msgs[j], 0, sizeof msgs[j]);
      msgs[j].msg_hdr.msg_iov = iov[j]; msgs[j].msg_hdr.msg_iovlen = 2;
      msgs[j].msg_hdr.msg_name = &to[flow]; msgs[j].msg_hdr.msg_namelen = sizeof to[flow];
      flow = (flow + 1) % n;
    }
    int r = sendmmsg(fd, msgs, k, 0);
    if (r > 0) sent += r; else sent += k;  /* a full socket buffer drops, as a camera's would */
  }
  printf("%ld\n", sent);
  return 0;
}

static int do_sink(int first, int n, double seconds) {
  int ep = epoll_create1(0);
  int *fds = calloc(n, sizeof *fds); int *last = calloc(n, sizeof *last);
  for (int i = 0; i < n; i++) {
    fds[i] = socket(AF_INET, SOCK_DGRAM, 0);
    int rcv = 8 << 20; setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    struct sockaddr_in a = {0}; a.sin_family = AF_INET; a.sin_port = htons(first + 2 * i); a.sin_addr.s_addr = htonl(0x7f000001);
    if (bind(fds[i], (struct sockaddr *)&a, sizeof a)) { perror("bind"); return 1; }
    struct epoll_event e = {.events = EPOLLIN, .data.u32 = i}; epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &e);
    last[i] = -1;
  }
  printf("ready\n"); fflush(stdout);
  static unsigned char data[BATCH][2048]; struct mmsghdr msgs[BATCH]; struct iovec iov[BATCH];
  long packets = 0, bytes = 0, gaps = 0; double end = now() + seconds;
  struct epoll_event ev[64];
  while (now() < end) {
    int k = epoll_wait(ep, ev, 64, 100);
    for (int e = 0; e < k; e++) {
      int i = ev[e].data.u32;
      for (;;) {
        for (int j = 0; j < BATCH; j++) { iov[j].iov_base = data[j]; iov[j].iov_len = 2048; memset(&msgs[j], 0, sizeof msgs[j]); msgs[j].msg_hdr.msg_iov = &iov[j]; msgs[j].msg_hdr.msg_iovlen = 1; }
        int r = recvmmsg(fds[i], msgs, BATCH, MSG_DONTWAIT, NULL);
        if (r <= 0) break;
        for (int j = 0; j < r; j++) {
          int s = (data[j][2] << 8) | data[j][3];
          if (last[i] >= 0 && s != ((last[i] + 1) & 0xffff)) gaps += ((s - last[i] - 1) & 0xffff);
          last[i] = s; packets++; bytes += msgs[j].msg_len;
        }
      }
    }
  }
  printf("%ld %ld %ld\n", packets, bytes, gaps);
  return 0;
}

/* The anchor relay: epoll, then recvmmsg of up to BATCH packets and one sendmmsg of them to the
 * flow's sink, straight from the receive buffers; nothing else (no checks, no statistics). */
static int do_relay(int first, int n, int sink, double seconds) {
  int ep = epoll_create1(0);
  int *fds = calloc(n, sizeof *fds);
  struct sockaddr_in *to = calloc(n, sizeof *to);
  for (int i = 0; i < n; i++) {
    fds[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    int rcv = 1 << 20; setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    struct sockaddr_in a = {0}; a.sin_family = AF_INET; a.sin_port = htons(first + 2 * i); a.sin_addr.s_addr = htonl(0x7f000001);
    if (bind(fds[i], (struct sockaddr *)&a, sizeof a)) { perror("bind"); return 1; }
    to[i].sin_family = AF_INET; to[i].sin_port = htons(sink + 2 * i); to[i].sin_addr.s_addr = htonl(0x7f000001);
    struct epoll_event e = {.events = EPOLLIN, .data.u32 = i}; epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &e);
  }
  printf("ready\n"); fflush(stdout);
  static unsigned char data[BATCH][2048]; struct mmsghdr msgs[BATCH]; struct iovec iov[BATCH];
  struct epoll_event ev[64]; double end = now() + seconds;
  while (now() < end) {
    int k = epoll_wait(ep, ev, 64, 100);
    for (int e = 0; e < k; e++) {
      int i = ev[e].data.u32;
      for (int round = 0; round < 8; round++) {
        for (int j = 0; j < BATCH; j++) { iov[j].iov_base = data[j]; iov[j].iov_len = 2048; memset(&msgs[j], 0, sizeof msgs[j]); msgs[j].msg_hdr.msg_iov = &iov[j]; msgs[j].msg_hdr.msg_iovlen = 1; }
        int r = recvmmsg(fds[i], msgs, BATCH, MSG_DONTWAIT, NULL);
        if (r <= 0) break;
        for (int j = 0; j < r; j++) { iov[j].iov_len = msgs[j].msg_len; msgs[j].msg_hdr.msg_name = &to[i]; msgs[j].msg_hdr.msg_namelen = sizeof to[i]; }
        sendmmsg(fds[i], msgs, r, MSG_DONTWAIT);
        if (r < BATCH) break;
      }
    }
  }
  struct rusage u; getrusage(RUSAGE_SELF, &u);
  printf("%f\n", u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 7 && !strcmp(argv[1], "send")) return do_send(atoi(argv[2]), atoi(argv[3]), atof(argv[4]), atof(argv[5]), atoi(argv[6]), argc >= 8 && !strcmp(argv[7], "key"), argc >= 9 && !strcmp(argv[8], "oneport"));
  if (argc >= 5 && !strcmp(argv[1], "sink")) return do_sink(atoi(argv[2]), atoi(argv[3]), atof(argv[4]));
  if (argc >= 6 && !strcmp(argv[1], "relay")) return do_relay(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), atof(argv[5]));
  fprintf(stderr, "usage: rtpgen send FIRST N PPS SECONDS SIZE | sink FIRST N SECONDS | relay FIRST N SINK SECONDS\n");
  return 2;
}

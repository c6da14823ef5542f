// Minimal C HTTP/1.1 pair: the machine's floor for N requests at W in flight, each answered
// LAT seconds after its last byte arrived (the LMServer's rule), on keep-alive TCP loopback.
// server: floor server PORT LAT_US      client: floor client PORT N W ROUNDS
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>
#define MAXC 1024
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
typedef struct { int fd; char buf[8192]; int len; double due; int pending; } Conn;
static Conn conns[MAXC];
static int complete(Conn *c) {  // length of a complete message at the buffer start, or 0
    c->buf[c->len] = 0;
    char *h = strstr(c->buf, "\r\n\r\n");
    if (!h) return 0;
    char *cl = strcasestr(c->buf, "content-length: ");
    int n = cl && cl < h ? atoi(cl + 16) : 0;
    int total = (int)(h - c->buf) + 4 + n;
    return c->len >= total ? total : 0;
}
static const char *BODY = "{\"id\":\"chatcmpl-0123456789abcdef01234567\",\"object\":\"chat.completion\",\"created\":1765000000,\"model\":\"test\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"[[ ## answer ## ]]\\nx\\n\\n[[ ## completed ## ]]\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":60,\"completion_tokens\":10,\"total_tokens\":70}}";
static void arm(int tfd) {
    double first = 0; int any = 0;
    for (int i = 0; i < MAXC; i++) if (conns[i].pending && (!any || conns[i].due < first)) { first = conns[i].due; any = 1; }
    struct itimerspec its = {0};
    if (any) { its.it_value.tv_sec = (time_t)first; its.it_value.tv_nsec = (long)((first - (time_t)first) * 1e9); if (!its.it_value.tv_sec && !its.it_value.tv_nsec) its.it_value.tv_nsec = 1; }
    timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
}
static int server(int port, double lat) {
    char reply[1024]; int rl = snprintf(reply, sizeof reply, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %zu\r\n\r\n%s", strlen(BODY), BODY);
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(ls, (void *)&a, sizeof a) || listen(ls, 1024)) { perror("bind"); return 1; }
    int ep = epoll_create1(0), tfd = timerfd_create(CLOCK_MONOTONIC, 0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls}; epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    ev.data.fd = tfd; epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
    printf("ready\n"); fflush(stdout);
    struct epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(ep, evs, 64, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) { int c = accept(ls, NULL, NULL); setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); conns[c].fd = c; conns[c].len = 0; ev.data.fd = c; epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev); continue; }
            if (fd == tfd) {
                unsigned long long x; read(tfd, &x, sizeof x); double t = now();
                for (int j = 0; j < MAXC; j++) if (conns[j].pending && conns[j].due <= t) { conns[j].pending = 0; write(j, reply, rl); }
                arm(tfd); continue;
            }
            Conn *c = &conns[fd];
            int r = read(fd, c->buf + c->len, sizeof c->buf - 1 - c->len);
            if (r <= 0) { close(fd); c->pending = 0; continue; }
            c->len += r;
            int m = complete(c);
            if (m) { memmove(c->buf, c->buf + m, c->len - m); c->len -= m; c->due = now() + lat; c->pending = 1; arm(tfd); }
        }
    }
}
static int client(int port, int total, int width, int rounds) {
    const char *body = "{\"model\":\"test\",\"messages\":[{\"role\":\"user\",\"content\":\"question 1\"}]}";
    char req[1024]; int ql = snprintf(req, sizeof req, "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:%d\r\naccept: */*\r\nuser-agent: floor\r\ncontent-type: application/json\r\nauthorization: Bearer k\r\ncontent-length: %zu\r\n\r\n%s", port, strlen(body), body);
    int ep = epoll_create1(0), one = 1, fds[256];
    for (int i = 0; i < width; i++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (connect(s, (void *)&a, sizeof a)) { perror("connect"); return 1; }
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = s}; epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev); fds[i] = s; conns[s].len = 0;
    }
    struct epoll_event evs[64];
    for (int r = 0; r < rounds + 1; r++) {
        int sent = 0, done = 0; double t0 = now();
        for (int i = 0; i < width && sent < total; i++, sent++) write(fds[i], req, ql);
        while (done < total) {
            int n = epoll_wait(ep, evs, 64, -1);
            for (int i = 0; i < n; i++) {
                Conn *c = &conns[evs[i].data.fd];
                int k = read(evs[i].data.fd, c->buf + c->len, sizeof c->buf - 1 - c->len);
                if (k <= 0) { fprintf(stderr, "closed\n"); return 1; }
                c->len += k;
                int m = complete(c);
                if (m) { memmove(c->buf, c->buf + m, c->len - m); c->len -= m; done++; if (sent < total) { write(evs[i].data.fd, req, ql); sent++; } }
            }
        }
        if (r) printf("%.3f\n", (now() - t0) * 1e3);  // round 0 is the warm-up
        fflush(stdout);
    }
    return 0;
}
int main(int argc, char **argv) {
    if (argc > 3 && !strcmp(argv[1], "server")) return server(atoi(argv[2]), atof(argv[3]) * 1e-6);
    if (argc > 5 && !strcmp(argv[1], "client")) return client(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
    fprintf(stderr, "usage: floor server PORT LAT_US | floor client PORT N W ROUNDS\n"); return 2;
}

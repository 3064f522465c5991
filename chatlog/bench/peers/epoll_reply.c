/*
 * REFERENCE PEER for python -m chatlog.bench -- not part of chatlog.
 *
 * A minimal single-threaded C epoll reply server, the floor for "server CPU
 * per message": every '\n'-terminated line gets "Server received: <line>\n",
 * with all replies to one read sent in one write, TCP_NODELAY on, no log.
 * It prints "listening on 127.0.0.1:PORT" once it listens.
 *
 * Build: gcc -O2 -o chatlog-epoll-reply epoll_reply.c
 * Usage: chatlog-epoll-reply [PORT]   (0, the default, picks a free port)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define PREFIX "Server received: "
#define PREFIX_LEN (sizeof PREFIX - 1)
#define READ_SIZE 65536
#define MAX_LINE 65536

typedef struct {
    int fd;
    char *partial;      /* an unfinished line carried over from the last read */
    size_t plen;
    char *out;          /* replies the kernel has not taken yet */
    size_t olen, ocap;
    int want_out;       /* registered for EPOLLOUT (only while replies wait) */
} client_t;

static int epfd;
static char rbuf[READ_SIZE];

static void drop(client_t *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->partial);
    free(c->out);
    free(c);
}

static void reserve(client_t *c, size_t more) {
    if (c->olen + more <= c->ocap) return;
    while (c->ocap < c->olen + more) c->ocap = c->ocap ? c->ocap * 2 : 8192;
    c->out = realloc(c->out, c->ocap);
    if (!c->out) abort();
}

static void reply(client_t *c, const char *line, size_t len) {
    reserve(c, PREFIX_LEN + len + 1);
    memcpy(c->out + c->olen, PREFIX, PREFIX_LEN);
    memcpy(c->out + c->olen + PREFIX_LEN, line, len);
    c->olen += PREFIX_LEN + len;
    c->out[c->olen++] = '\n';
}

/* Returns 0 when the client must be dropped. */
static int flush_out(client_t *c) {
    size_t off = 0;
    while (off < c->olen) {
        ssize_t n = send(c->fd, c->out + off, c->olen - off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            return 0;
        }
        off += (size_t)n;
    }
    memmove(c->out, c->out + off, c->olen - off);
    c->olen -= off;
    int want_out = c->olen > 0;
    if (want_out != c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = want_out;
    }
    return 1;
}

static int on_readable(client_t *c) {
    ssize_t n = recv(c->fd, rbuf, sizeof rbuf, 0);
    if (n == 0) return 0;
    if (n < 0) return errno == EAGAIN || errno == EINTR;
    char *p = rbuf, *end = rbuf + n;
    if (c->plen) {
        char *nl = memchr(p, '\n', (size_t)n);
        size_t take = nl ? (size_t)(nl - p) : (size_t)n;
        if (c->plen + take > MAX_LINE) return 0;
        c->partial = realloc(c->partial, c->plen + take);
        memcpy(c->partial + c->plen, p, take);
        c->plen += take;
        if (!nl) return 1;
        reply(c, c->partial, c->plen);
        c->plen = 0;
        p = nl + 1;
    }
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) {
            c->plen = (size_t)(end - p);
            c->partial = realloc(c->partial, c->plen);
            memcpy(c->partial, p, c->plen);
            break;
        }
        size_t len = (size_t)(nl - p);
        if (len && p[len - 1] == '\r') len--;
        reply(c, p, len);
        p = nl + 1;
    }
    return c->olen ? flush_out(c) : 1;
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 0;
    signal(SIGPIPE, SIG_IGN);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(ls, 4096) < 0) {
        perror("epoll-reply: bind/listen");
        return 1;
    }
    socklen_t alen = sizeof addr;
    getsockname(ls, (struct sockaddr *)&addr, &alen);
    printf("listening on 127.0.0.1:%d\n", ntohs(addr.sin_port));
    fflush(stdout);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, ls, &ev);
    struct epoll_event evs[1024];
    for (;;) {
        int n = epoll_wait(epfd, evs, 1024, -1);
        for (int i = 0; i < n; i++) {
            client_t *c = evs[i].data.ptr;
            if (!c) {
                for (;;) {
                    int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    client_t *nc = calloc(1, sizeof *nc);
                    nc->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            int ok = 1;
            if (evs[i].events & EPOLLOUT) ok = flush_out(c);
            if (ok && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) ok = on_readable(c);
            if (!ok) drop(c);
        }
    }
}

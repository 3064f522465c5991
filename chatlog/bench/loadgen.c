/*
 * chatlog-loadgen: a native load generator for line-reply servers.
 *
 * One thread, one epoll set, N TCP connections to HOST:PORT.  Every message
 * is SIZE bytes ending in '\n'; a reply is anything up to and including the
 * next '\n' (so "Server received: ...\n" and a bare echo both count).  A reply
 * line starting with 'E' ("ERROR ...") counts as an error.
 *
 * Closed loop (default): every connection keeps PIPELINE messages in flight;
 * each reply read is answered by as many new messages, sent with one write
 * per read.  Open loop (--rate R): R messages per second in all, spread over
 * the connections in turn, each timed from its *scheduled* send time, so a
 * server that falls behind shows it in the latency (no coordinated omission).
 *
 * The round trip of every message is recorded in a fixed log-linear
 * histogram (64 sub-buckets per power of two: < 1.6% error).  After --warmup
 * seconds the counters are reset and the measured window of --duration
 * seconds begins.  With --pid P (repeatable) the CPU time (utime + stime
 * from /proc/P/stat) of each server process over the window is reported too,
 * and the generator's own CPU use (getrusage), so a caller can tell when the
 * generator itself was the bottleneck.
 *
 * Output: one JSON object on stdout.  Exit 0 when every connection was made
 * and at least one reply arrived, 1 otherwise.
 *
 * Build: gcc -O2 -o chatlog-loadgen loadgen.c   (Linux, glibc >= 2.35)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SUB_BITS 6
#define SUB (1 << SUB_BITS)               /* 64 sub-buckets per power of two */
#define NBUCKETS ((64 - SUB_BITS) * SUB + SUB)
#define MAX_PIDS 8
#define READ_SIZE 65536

static uint64_t hist[NBUCKETS];
static uint64_t hist_count, hist_max, hist_min = UINT64_MAX;
static long double hist_sum;

static inline int bucket_of(uint64_t v) {
    if (v < 2 * SUB) return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - SUB_BITS;
    return shift * SUB + (int)(v >> shift);
}

static inline uint64_t bucket_mid(int i) {
    if (i < 2 * SUB) return (uint64_t)i;
    int shift = i / SUB - 1;
    uint64_t low = (uint64_t)(i - shift * SUB) << shift;
    return low + ((1ULL << shift) >> 1);
}

static inline void record(uint64_t ns) {
    hist[bucket_of(ns)]++;
    hist_count++;
    hist_sum += ns;
    if (ns > hist_max) hist_max = ns;
    if (ns < hist_min) hist_min = ns;
}

static double percentile_ms(double p) {
    if (hist_count == 0) return 0.0;
    uint64_t rank = (uint64_t)ceil(p / 100.0 * (double)hist_count);
    if (rank < 1) rank = 1;
    uint64_t seen = 0;
    for (int i = 0; i < NBUCKETS; i++) {
        seen += hist[i];
        if (seen >= rank) {
            uint64_t v = bucket_mid(i);
            if (v > hist_max) v = hist_max;
            if (v < hist_min) v = hist_min;
            return v / 1e6;
        }
    }
    return hist_max / 1e6;
}

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

typedef struct {
    int fd;
    int connected;
    int at_line_start;
    uint64_t *ring;          /* send (or scheduled) times of messages in flight */
    uint32_t head, tail;     /* ring[head % cap] is the oldest in flight */
    char *wbuf;              /* bytes not yet accepted by the kernel */
    size_t wlen, wcap;
    int want_out;
    int dirty;               /* open loop: has new messages to write this turn */
    uint32_t pending_new;    /* open loop: messages appended to wbuf this turn */
} conn_t;

static conn_t *conns;
static int nconns, pipeline_k = 1, msg_size = 16, epfd;
static uint32_t ring_cap;
static char *msg_block;      /* enough copies of the message for one burst */
static size_t msg_block_count;
static uint64_t replies, errors, sent, dropped, closed_early;
static int counting;

static void die(const char *what) {
    fprintf(stderr, "chatlog-loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void set_events(conn_t *c, int out) {
    if (c->want_out == out) return;
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl");
    c->want_out = out;
}

static void append(conn_t *c, size_t count) {
    size_t need = c->wlen + count * (size_t)msg_size;
    if (need > c->wcap) {
        while (c->wcap < need) c->wcap = c->wcap ? c->wcap * 2 : 4096;
        c->wbuf = realloc(c->wbuf, c->wcap);
        if (!c->wbuf) die("realloc");
    }
    while (count) {
        size_t n = count < msg_block_count ? count : msg_block_count;
        memcpy(c->wbuf + c->wlen, msg_block, n * (size_t)msg_size);
        c->wlen += n * (size_t)msg_size;
        count -= n;
    }
}

static void conn_dead(conn_t *c) {
    if (c->fd < 0) return;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    closed_early++;
}

/* Write what is buffered; fast path: send straight from the message block. */
static void flush_conn(conn_t *c) {
    if (c->fd < 0 || c->wlen == 0) return;
    ssize_t n = send(c->fd, c->wbuf, c->wlen, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) n = 0;
        else { conn_dead(c); return; }
    }
    if ((size_t)n < c->wlen) memmove(c->wbuf, c->wbuf + n, c->wlen - n);
    c->wlen -= (size_t)n;
    set_events(c, c->wlen > 0);
}

/* Queue `count` new messages on `c`, timestamped `stamp` (send or schedule time). */
static int push_messages(conn_t *c, uint32_t count, uint64_t stamp) {
    uint32_t room = ring_cap - (c->tail - c->head);
    if (count > room) {
        if (counting) dropped += count - room;
        count = room;
    }
    for (uint32_t i = 0; i < count; i++) c->ring[(c->tail + i) & (ring_cap - 1)] = stamp;
    c->tail += count;
    append(c, count);
    if (counting) sent += count;
    return (int)count;
}

static char rbuf[READ_SIZE];

/* Read replies; return how many complete reply lines arrived. */
static uint32_t read_replies(conn_t *c, uint64_t t) {
    uint32_t lines = 0;
    for (int round = 0; round < 4; round++) {
        ssize_t n = recv(c->fd, rbuf, sizeof rbuf, 0);
        if (n == 0) { conn_dead(c); break; }
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR) conn_dead(c);
            break;
        }
        char *p = rbuf, *end = rbuf + n;
        while (p < end) {
            if (c->at_line_start && *p == 'E' && counting) errors++;
            char *nl = memchr(p, '\n', (size_t)(end - p));
            if (!nl) { c->at_line_start = 0; break; }
            c->at_line_start = 1;
            p = nl + 1;
            lines++;
            if (c->head != c->tail) {
                uint64_t sent_at = c->ring[c->head & (ring_cap - 1)];
                c->head++;
                if (counting) record(t > sent_at ? t - sent_at : 0);
            }
        }
        if ((size_t)n < sizeof rbuf) break;
    }
    if (counting) replies += lines;
    return lines;
}

static long clk_tck;

static double proc_cpu_s(int pid) {
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1.0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1.0;
    buf[n] = 0;
    char *p = strrchr(buf, ')');  /* the command name may contain spaces */
    if (!p) return -1.0;
    /* after ") " come fields 3..: state(3) ... utime(14) stime(15) */
    unsigned long utime = 0, stime = 0;
    int field = 2;
    for (char *tok = strtok(p + 1, " "); tok; tok = strtok(NULL, " ")) {
        field++;
        if (field == 14) utime = strtoul(tok, NULL, 10);
        if (field == 15) { stime = strtoul(tok, NULL, 10); break; }
    }
    return (double)(utime + stime) / (double)clk_tck;
}

/* Busy and total ticks of one CPU, from /proc/stat ("cpuN user nice system idle iowait ..."). */
static int core_ticks(int cpu, unsigned long long *busy, unsigned long long *total) {
    char want[32], line[512];
    int wl = snprintf(want, sizeof want, "cpu%d ", cpu);
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return -1;
    int found = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, want, (size_t)wl)) continue;
        unsigned long long v[10] = {0};
        sscanf(line + wl, "%llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
               &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]);
        /* guest time (v[8], v[9]) is already counted in user */
        *total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
        /* Interrupt time (v[5], v[6]) is mostly the loopback traffic itself: not counted. */
        *busy = v[0] + v[1] + v[2] + v[7];
        found = 0;
        break;
    }
    fclose(f);
    return found;
}

static double self_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void usage(void) {
    fprintf(stderr,
            "usage: chatlog-loadgen --port P [--host 127.0.0.1] [--connections N]\n"
            "       [--pipeline K] [--rate R] [--duration S] [--warmup S] [--size B]\n"
            "       [--pid SERVER_PID ...] [--server-core CPU] [--loadgen-core CPU]\n"
            "       [--label TEXT]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *port = NULL, *label = "";
    double duration = 3.0, warmup = 1.0, rate = 0.0, connect_timeout = 15.0;
    int pids[MAX_PIDS], npids = 0;
    int cores[2] = {-1, -1};  /* the server's and the generator's CPU, to see who else ran there */
    nconns = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--port")) port = v;
        else if (!strcmp(a, "--connections")) nconns = atoi(v);
        else if (!strcmp(a, "--pipeline")) pipeline_k = atoi(v);
        else if (!strcmp(a, "--rate")) rate = atof(v);
        else if (!strcmp(a, "--duration")) duration = atof(v);
        else if (!strcmp(a, "--warmup")) warmup = atof(v);
        else if (!strcmp(a, "--size")) msg_size = atoi(v);
        else if (!strcmp(a, "--connect-timeout")) connect_timeout = atof(v);
        else if (!strcmp(a, "--label")) label = v;
        else if (!strcmp(a, "--server-core")) cores[0] = atoi(v);
        else if (!strcmp(a, "--loadgen-core")) cores[1] = atoi(v);
        else if (!strcmp(a, "--pid")) {
            if (npids == MAX_PIDS) usage();
            pids[npids++] = atoi(v);
        } else usage();
        i++;
    }
    if (!port || nconns < 1 || pipeline_k < 1 || msg_size < 2 || duration <= 0) usage();
    signal(SIGPIPE, SIG_IGN);
    clk_tck = sysconf(_SC_CLK_TCK);

    /* The message: printable, SIZE bytes, '\n'-terminated. */
    msg_block_count = 256;
    msg_block = malloc(msg_block_count * (size_t)msg_size);
    for (size_t m = 0; m < msg_block_count; m++) {
        char *s = msg_block + m * (size_t)msg_size;
        for (int j = 0; j < msg_size - 1; j++) s[j] = "chatlog-bench-0123456789abcdefghijklmnopqrstuvwxyz"[j % 50];
        s[msg_size - 1] = '\n';
    }
    uint32_t want = rate > 0 ? 65536 : (uint32_t)pipeline_k * 2;
    ring_cap = 16;
    while (ring_cap < want) ring_cap <<= 1;

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc) { fprintf(stderr, "chatlog-loadgen: %s: %s\n", host, gai_strerror(rc)); return 2; }

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll_create1");
    conns = calloc((size_t)nconns, sizeof *conns);
    for (int i = 0; i < nconns; i++) {
        conn_t *c = &conns[i];
        c->ring = malloc(ring_cap * sizeof(uint64_t));
        c->at_line_start = 1;
        c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0) die("socket");
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) die("connect");
        struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
        c->want_out = 1;
    }
    freeaddrinfo(ai);

    /* Wait until every connection is established (or failed). */
    struct epoll_event *evs = malloc(1024 * sizeof *evs);
    int connected = 0, failed = 0;
    uint64_t t_connect = now_ns(), connect_deadline = t_connect + (uint64_t)(connect_timeout * 1e9);
    while (connected + failed < nconns && now_ns() < connect_deadline) {
        int n = epoll_wait(epfd, evs, 1024, 100);
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (c->connected || c->fd < 0) continue;
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err) {
                epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
                failed++;
            } else {
                c->connected = 1;
                connected++;
                set_events(c, 0);
            }
        }
    }
    double connect_s = (now_ns() - t_connect) / 1e9;
    failed = nconns - connected;

    uint64_t start = now_ns();
    uint64_t window_start = start + (uint64_t)(warmup * 1e9);
    uint64_t window_end = window_start + (uint64_t)(duration * 1e9);
    double cpu0 = 0, srv0[MAX_PIDS] = {0};
    unsigned long long core_busy0[2] = {0}, core_total0[2] = {0};

    if (warmup <= 0) {
        counting = 1;
        cpu0 = self_cpu_s();
        for (int p = 0; p < npids; p++) srv0[p] = proc_cpu_s(pids[p]);
        for (int k = 0; k < 2; k++)
            if (cores[k] >= 0) core_ticks(cores[k], &core_busy0[k], &core_total0[k]);
    }

    /* Open loop: message j is due at start + j * interval, on connection j % live. */
    double interval_ns = rate > 0 ? 1e9 / rate : 0;
    uint64_t next_j = 0;
    conn_t **live = malloc((size_t)nconns * sizeof *live);
    int nlive = 0;
    for (int i = 0; i < nconns; i++)
        if (conns[i].connected) live[nlive++] = &conns[i];

    if (rate <= 0) {
        uint64_t t = now_ns();
        for (int i = 0; i < nlive; i++) {
            push_messages(live[i], (uint32_t)pipeline_k, t);
            flush_conn(live[i]);
        }
    }
    conn_t **dirty = malloc((size_t)nconns * sizeof *dirty);

    for (;;) {
        uint64_t t = now_ns();
        if (!counting && t >= window_start) {
            counting = 1;
            replies = errors = sent = dropped = 0;
            memset(hist, 0, sizeof hist);
            hist_count = hist_max = 0;
            hist_min = UINT64_MAX;
            hist_sum = 0;
            cpu0 = self_cpu_s();
            for (int p = 0; p < npids; p++) srv0[p] = proc_cpu_s(pids[p]);
            for (int k = 0; k < 2; k++)
                if (cores[k] >= 0) core_ticks(cores[k], &core_busy0[k], &core_total0[k]);
        }
        if (t >= window_end) break;
        if (nlive == 0) break;

        int ndirty = 0;
        struct timespec wait = {0, 0};
        if (rate > 0) {
            /* Send everything that is due, then sleep until the next one. */
            for (;;) {
                uint64_t due = start + (uint64_t)(next_j * interval_ns);
                if (due > t) {
                    uint64_t until = due - t;
                    if (until > 50000000ULL) until = 50000000ULL;
                    wait.tv_sec = (time_t)(until / 1000000000ULL);
                    wait.tv_nsec = (long)(until % 1000000000ULL);
                    break;
                }
                conn_t *c = live[next_j % (uint64_t)nlive];
                next_j++;
                if (c->fd < 0) continue;
                if (!c->dirty) { c->dirty = 1; dirty[ndirty++] = c; }
                push_messages(c, 1, due);
            }
            for (int i = 0; i < ndirty; i++) { dirty[i]->dirty = 0; flush_conn(dirty[i]); }
        } else {
            wait.tv_nsec = 50000000L;  /* 50 ms: check the clock now and then */
        }

        int n = epoll_pwait2(epfd, evs, 1024, &wait, NULL);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_pwait2");
        }
        uint64_t tr = now_ns();
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (c->fd < 0) continue;
            if (evs[i].events & EPOLLOUT) flush_conn(c);
            if (c->fd < 0) continue;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                uint32_t got = read_replies(c, tr);
                if (rate <= 0 && got && c->fd >= 0) {
                    uint32_t inflight = c->tail - c->head;
                    uint32_t more = inflight < (uint32_t)pipeline_k ? (uint32_t)pipeline_k - inflight : 0;
                    if (more) {
                        push_messages(c, more, tr);
                        flush_conn(c);
                    }
                }
            }
        }
    }

    uint64_t t_end = now_ns();
    double window = counting ? (t_end - window_start) / 1e9 : 0.0;
    if (window <= 0) window = 1e-9;
    double cpu = self_cpu_s() - cpu0;
    double srv_cpu = 0;
    int srv_ok = npids > 0;
    for (int p = 0; p < npids; p++) {
        double c1 = proc_cpu_s(pids[p]);
        if (c1 < 0 || srv0[p] < 0) srv_ok = 0;
        else srv_cpu += c1 - srv0[p];
    }
    /* How busy each core was, and how much of that was neither us nor the server:
       other processes on a shared machine make a run meaningless. */
    double core_busy_pct[2] = {-1, -1};
    for (int k = 0; k < 2; k++) {
        unsigned long long b, tot;
        if (cores[k] >= 0 && core_ticks(cores[k], &b, &tot) == 0 && tot > core_total0[k])
            core_busy_pct[k] = 100.0 * (double)(b - core_busy0[k]) / (double)(tot - core_total0[k]);
    }
    double other_server_core = core_busy_pct[0] >= 0 && srv_ok ? core_busy_pct[0] - 100.0 * srv_cpu / window : -1;
    double other_loadgen_core = core_busy_pct[1] >= 0 ? core_busy_pct[1] - 100.0 * cpu / window : -1;
    int alive = 0;
    for (int i = 0; i < nconns; i++) alive += conns[i].fd >= 0;

    printf("{\"label\": \"%s\", \"mode\": \"%s\", \"connections\": %d, \"pipeline\": %d, "
           "\"rate\": %.0f, \"size\": %d, \"duration_s\": %.6f, \"connect_s\": %.3f, "
           "\"connect_failed\": %d, \"closed_early\": %llu, \"alive\": %d, "
           "\"sent\": %llu, \"replies\": %llu, \"errors\": %llu, \"dropped\": %llu, "
           "\"msgs_per_s\": %.1f, \"mean_ms\": %.4f, \"min_ms\": %.4f, \"p50_ms\": %.4f, "
           "\"p90_ms\": %.4f, \"p99_ms\": %.4f, \"p999_ms\": %.4f, \"max_ms\": %.4f, "
           "\"loadgen_cpu_s\": %.4f, \"loadgen_cpu_pct\": %.1f, "
           "\"server_core_busy_pct\": %.1f, \"server_core_other_pct\": %.1f, "
           "\"loadgen_core_other_pct\": %.1f, ",
           label, rate > 0 ? "open" : "closed", nconns, pipeline_k, rate, msg_size, window,
           connect_s, failed, (unsigned long long)closed_early, alive,
           (unsigned long long)sent, (unsigned long long)replies,
           (unsigned long long)errors, (unsigned long long)dropped, replies / window,
           hist_count ? (double)(hist_sum / hist_count) / 1e6 : 0.0,
           hist_count ? hist_min / 1e6 : 0.0, percentile_ms(50), percentile_ms(90),
           percentile_ms(99), percentile_ms(99.9), hist_max / 1e6, cpu, 100.0 * cpu / window,
           core_busy_pct[0], other_server_core < 0 ? -1.0 : (other_server_core > 0 ? other_server_core : 0.0),
           other_loadgen_core < 0 ? -1.0 : (other_loadgen_core > 0 ? other_loadgen_core : 0.0));
    if (srv_ok)
        printf("\"server_cpu_s\": %.4f, \"server_cpu_pct\": %.1f, \"cpu_us_per_msg\": %.3f}\n",
               srv_cpu, 100.0 * srv_cpu / window, replies ? srv_cpu * 1e6 / (double)replies : 0.0);
    else
        printf("\"server_cpu_s\": null, \"server_cpu_pct\": null, \"cpu_us_per_msg\": null}\n");
    fflush(stdout);
    return (failed == 0 && replies > 0) ? 0 : 1;
}

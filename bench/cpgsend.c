/*
 * cpgsend: a Corosync CPG benchmark node, written for Walrus (not derived from cpgbench).
 *
 * Joins the CPG group "walrus-bench", waits until NODES members are in it, then one
 * sender thread multicasts AGREED messages of SIZE bytes (a send timestamp and a counter,
 * zero padded) for SECONDS (at RATE messages per second, or as fast as CPG accepts when
 * RATE is 0), while the main thread dispatches deliveries and records, for every message
 * sent inside the window by any member, the delay from its send time to its delivery
 * here. One second after sending stops it prints one JSON line:
 *   {"event":"bench","sent":..,"delivered":..,"secs":..,"p50_us":..,"p99_us":..}
 *
 * usage: cpgsend SIZE SECONDS NODES [RATE]
 * build: cc -O2 -o cpgsend cpgsend.c -lcpg -lqb -lpthread
 */
#include <corosync/cpg.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES (8u * 1024u * 1024u)

static cpg_handle_t handle;
static size_t size;
static double seconds, rate;
static unsigned nodes;
static volatile unsigned members;
static volatile int sending_done;
static uint64_t window_start, window_end;
static uint64_t sent_count, delivered;
static uint32_t *samples;
static size_t nsamples;

static uint64_t unix_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void on_deliver(cpg_handle_t h, const struct cpg_name *group, uint32_t nodeid,
                       uint32_t pid, void *msg, size_t len) {
    (void)h; (void)group; (void)nodeid; (void)pid;
    if (len < 16 || window_start == 0) return;
    uint64_t sent;
    memcpy(&sent, msg, 8);
    if (sent < window_start || sent > window_end) return;
    delivered++;
    uint64_t d = unix_us() - sent;
    if (nsamples < MAX_SAMPLES) samples[nsamples++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
}

static void on_confchg(cpg_handle_t h, const struct cpg_name *group,
                       const struct cpg_address *member_list, size_t member_entries,
                       const struct cpg_address *left, size_t left_entries,
                       const struct cpg_address *joined, size_t joined_entries) {
    (void)h; (void)group; (void)member_list; (void)left; (void)left_entries;
    (void)joined; (void)joined_entries;
    members = (unsigned)member_entries;
}

static void *sender(void *arg) {
    (void)arg;
    unsigned char *buf = calloc(1, size);
    struct iovec iov = { .iov_base = buf, .iov_len = size };
    uint64_t start = unix_us(), k = 0;
    while (unix_us() < window_end) {
        if (rate > 0) {
            uint64_t due = start + (uint64_t)((double)k * 1e6 / rate);
            uint64_t now = unix_us();
            if (due > now) usleep((useconds_t)(due - now));
        }
        uint64_t now = unix_us();
        memcpy(buf, &now, 8);
        memcpy(buf + 8, &k, 8);
        cs_error_t r;
        while ((r = cpg_mcast_joined(handle, CPG_TYPE_AGREED, &iov, 1)) == CS_ERR_TRY_AGAIN) {
            usleep(100);
            if (unix_us() >= window_end) break;
        }
        if (r != CS_OK) break;
        k++;
    }
    sent_count = k;
    sending_done = 1;
    free(buf);
    return NULL;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void dispatch_for(int fd, int ms) {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    if (poll(&p, 1, ms) > 0) cpg_dispatch(handle, CS_DISPATCH_ALL);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: cpgsend SIZE SECONDS NODES [RATE]\n");
        return 2;
    }
    size = (size_t)atol(argv[1]);
    if (size < 16) size = 16;
    seconds = atof(argv[2]);
    nodes = (unsigned)atoi(argv[3]);
    rate = argc > 4 ? atof(argv[4]) : 0;
    samples = malloc(sizeof(uint32_t) * MAX_SAMPLES);
    cpg_callbacks_t cb = { .cpg_deliver_fn = on_deliver, .cpg_confchg_fn = on_confchg };
    cs_error_t r;
    for (int tries = 0; (r = cpg_initialize(&handle, &cb)) != CS_OK; tries++) {
        if (tries > 200) { fprintf(stderr, "cpg_initialize: %d\n", r); return 1; }
        usleep(50000);
    }
    struct cpg_name group;
    strcpy(group.value, "walrus-bench");
    group.length = (uint32_t)strlen(group.value);
    while ((r = cpg_join(handle, &group)) == CS_ERR_TRY_AGAIN) usleep(10000);
    if (r != CS_OK) { fprintf(stderr, "cpg_join: %d\n", r); return 1; }
    int fd;
    cpg_fd_get(handle, &fd);
    uint64_t give_up = unix_us() + 60u * 1000000u;
    while (members < nodes) {
        dispatch_for(fd, 50);
        if (unix_us() > give_up) { fprintf(stderr, "only %u of %u members\n", members, nodes); return 1; }
    }
    window_start = unix_us();
    window_end = window_start + (uint64_t)(seconds * 1e6);
    pthread_t t;
    pthread_create(&t, NULL, sender, NULL);
    while (!sending_done) dispatch_for(fd, 50);
    uint64_t grace = unix_us() + 1000000u;
    while (unix_us() < grace) dispatch_for(fd, 50);
    pthread_join(t, NULL);
    qsort(samples, nsamples, sizeof(uint32_t), cmp_u32);
    uint32_t p50 = nsamples ? samples[(size_t)((double)(nsamples - 1) * 0.5 + 0.5)] : 0;
    uint32_t p99 = nsamples ? samples[(size_t)((double)(nsamples - 1) * 0.99 + 0.5)] : 0;
    printf("{\"event\":\"bench\",\"sent\":%llu,\"delivered\":%llu,\"secs\":%.3f,\"p50_us\":%u,\"p99_us\":%u}\n",
           (unsigned long long)sent_count, (unsigned long long)delivered, seconds, p50, p99);
    fflush(stdout);
    cpg_finalize(handle);
    return 0;
}

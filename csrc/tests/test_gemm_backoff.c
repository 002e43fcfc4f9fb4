/* test_gemm_backoff.c -- the busy-machine back-off of the GEMM engine (fd_gemm.c): the stall rule
 * (a stall: the region took over 50 us longer than its calling thread alone would have needed), the
 * back-off's length (50 ms, doubled up to 2 s for stalls soon after the last back-off, halved by
 * clean regions, 50 ms again after a long clean spell), a GEMM run on one thread while a back-off is in force,
 * fd_gemm_backoff's modes and counters.
 * It includes fd_gemm.c itself to reach the engine's internal functions (gemm_region_done,
 * gemm_team) with made-up region timings, which no real run can produce on demand.
 * Prints one line per failure and "N passed, N failed"; exit status 1 on failure.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "fd_gemm.c"

#include "fd_check.h"

#define MS 1000000LL

/* a region of a 2-thread team whose calling thread did `share` of the units in `work` ns and then
 * waited `wait` ns (until now) for the team */
static void region(int64_t work, int64_t wait, double share)
{
    const int64_t now = gemm_now();
    gemm_region_done(2, now - wait - work, now - wait, (int64_t)(share * 1000), 1000);
}

static void stats(int64_t out[5]) { fd_gemm_backoff_stats(out); }

int main(void)
{
    int64_t s[5];
    CHECK(fd_gemm_backoff(-1) == 1); /* on by default */
    CHECK(fd_gemm_backoff(2) == FD_ERR_ARG);
    CHECK(fd_gemm_backoff(-2) == FD_ERR_ARG);
    CHECK(fd_gemm_backoff(-1) == 1);
    fd_gemm_backoff_stats(NULL); /* ignored */
    stats(s);
    CHECK(s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0);
    CHECK(gemm_team(2) == 2 && gemm_team(1) == 1);

    /* no stall: the region took at most 50 us longer than the calling thread alone would have */
    region(1 * MS, 10000, 1.0);   /* it did everything, then waited 10 us */
    region(100000, 40000, 1.0);   /* 40 us */
    region(1 * MS, 900000, 0.5);  /* half the work: alone 2 ms, the region 1.9 ms */
    region(1 * MS, 5 * MS, 0.0);  /* it did no unit: it was the one held up */
    stats(s);
    CHECK(s[0] == 0 && s[3] == 4 && gemm_team(2) == 2 && G_LOAD(g_off_len) == 0);

    /* a stall: 50 ms on one thread */
    region(1 * MS, 1100000, 0.5); /* alone 2 ms, the region 2.1 ms */
    stats(s);
    CHECK(s[0] == 1 && s[3] == 5);
    CHECK(s[4] >= 1100000 && s[4] < 100 * MS); /* the wait (plus this test's own time) */
    CHECK(G_LOAD(g_off_len) == 50 * MS);
    CHECK(s[2] > 0 && s[2] <= 50 * MS);
    CHECK(gemm_team(4) == 1 && gemm_team(1) == 1);
    stats(s);
    CHECK(s[1] == 1); /* only the call that wanted threads counts */

    /* a GEMM big enough for two threads runs on one while the back-off lasts: no region */
    fd_set_num_threads(2);
    const int64_t n = 256;
    float *a = calloc(n * n, sizeof(float)), *b = calloc(n * n, sizeof(float)),
          *c = calloc(n * n, sizeof(float));
    CHECK(a && b && c);
    for (int64_t i = 0; i < n * n; i++) {
        a[i] = (float)urand();
        b[i] = (float)urand();
    }
    fd_gemm_args g = {0};
    g.batch = 1; g.m = n; g.n = n; g.k = n;
    g.a = a; g.rsa = n; g.csa = 1;
    g.b = b; g.rsb = n; g.csb = 1;
    g.c = c; g.ldc = n;
    fd_gemm_f32(&g);
    stats(s);
    CHECK(s[1] == 2 && s[3] == 5);
    CHECK(c[0] != 0.0f);

    /* stalls soon after the last back-off double the length, up to 2 s */
    region(200000, 100000, 1.0);
    CHECK(G_LOAD(g_off_len) == 100 * MS);
    for (int i = 0; i < 10; i++) region(200000, 100000, 1.0);
    CHECK(G_LOAD(g_off_len) == 2000 * MS);
    stats(s);
    CHECK(s[0] == 12 && s[2] > 1000 * MS);
    /* a clean region halves the length the next stall starts from; the back-off in force stays */
    region(10 * MS, 100000, 0.5);
    CHECK(G_LOAD(g_off_len) == 1000 * MS && gemm_team(2) == 1);
    /* a stall within 4 lengths of the last back-off's end: doubling */
    G_STORE(g_off_until, gemm_now() - 3 * 1000 * MS);
    CHECK(gemm_team(2) == 2); /* that one is over */
    region(200000, 100000, 1.0);
    CHECK(G_LOAD(g_off_len) == 2000 * MS && gemm_team(2) == 1);
    /* a stall after a longer clean spell: back to 50 ms */
    G_STORE(g_off_until, gemm_now() - 5 * 2000 * MS);
    region(200000, 100000, 1.0);
    CHECK(G_LOAD(g_off_len) == 50 * MS && gemm_team(2) == 1);
    stats(s);
    CHECK(s[0] == 14 && s[2] > 0 && s[2] <= 50 * MS);
    /* clean regions take the length to none (under 50 ms), and the next stall starts at 50 ms */
    G_STORE(g_off_len, 400 * MS);
    for (int i = 0; i < 3; i++) region(10 * MS, 100000, 0.5);
    CHECK(G_LOAD(g_off_len) == 50 * MS);
    region(10 * MS, 100000, 0.5);
    CHECK(G_LOAD(g_off_len) == 0);
    region(200000, 100000, 1.0);
    CHECK(G_LOAD(g_off_len) == 50 * MS);
    stats(s);
    CHECK(s[0] == 15);

    /* off: every GEMM gets its threads, the back-off in force is dropped */
    CHECK(fd_gemm_backoff(0) == 0);
    CHECK(fd_gemm_backoff(-1) == 0);
    CHECK(gemm_team(2) == 2);
    stats(s);
    CHECK(s[2] == 0);
    region(200000, 100000, 1.0); /* counted, but starts nothing while off */
    stats(s);
    CHECK(s[0] == 16 && s[2] == 0 && gemm_team(2) == 2);
    CHECK(fd_gemm_backoff(1) == 1);
    CHECK(gemm_team(2) == 2);

    free(a);
    free(b);
    free(c);
    fd_set_num_threads(0);
    return check_summary();
}

/* test_flush.c -- fd_set_flush_denormal / fd_get_flush_denormal through the public ABI: off by
 * default (IEEE subnormals), on: a kernel's subnormal results are zero and subnormal inputs read as
 * zero, on one thread and on the threads of a parallel region; the caller's MXCSR is the same after
 * each call; off again: subnormals again.
 * Prints one line per failure and "N passed, N failed"; exit status 1 on failure.
 */
#include <float.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

#include "fastdescent.h"

#include "fd_check.h"

/* one SGD step (lr 1) over n elements: p[i] = p0 - g0; returns 1 if every p[i] equals want */
static int sgd_gives(int64_t n, float p0, float g0, float want)
{
    float *p = malloc((size_t)n * sizeof *p), *g = malloc((size_t)n * sizeof *g);
    if (!p || !g) return 0;
    for (int64_t i = 0; i < n; i++) {
        p[i] = p0;
        g[i] = g0;
    }
    const int64_t sizes[1] = {n};
    float *pp[1] = {p};
    const float *gp[1] = {g};
    int ok = fd_sgd_f32(1, sizes, pp, NULL, gp, 1.0, 0.0, 0.0, 0.0, 0, 0, 1) == FD_OK;
    for (int64_t i = 0; ok && i < n; i++) ok = p[i] == want;
    free(p);
    free(g);
    return ok;
}

int main(void)
{
    const float tiny = 2e-38f, sub = 2e-38f - 1.5e-38f; /* sub: a subnormal */
    CHECK(sub > 0.0f && sub < FLT_MIN);
    CHECK(fd_get_flush_denormal() == 0);
    CHECK(fd_set_num_threads(2) == FD_OK);
    for (int k = 0; k < 2; k++) {
        const int64_t n = k ? (int64_t)1 << 18 : 7; /* one thread, then a parallel region */
        CHECK(sgd_gives(n, tiny, 1.5e-38f, sub));
#if defined(__x86_64__)
        const unsigned before = _mm_getcsr();
        CHECK(fd_set_flush_denormal(1) == 1);
        CHECK(fd_get_flush_denormal() == 1);
        CHECK(sgd_gives(n, tiny, 1.5e-38f, 0.0f));   /* FTZ */
        CHECK(sgd_gives(n, 0.0f, -sub, 0.0f));       /* DAZ: 0 - (-sub) reads sub as 0 */
        /* the caller keeps its mode (control bits; the low six are sticky exception flags that any
         * float arithmetic on this thread may set) */
        CHECK((_mm_getcsr() & ~0x3fu) == (before & ~0x3fu));
        CHECK(tiny - 1.5e-38f > 0.0f);
        CHECK(fd_set_flush_denormal(0) == 1);
        CHECK(fd_get_flush_denormal() == 0);
        CHECK(sgd_gives(n, tiny, 1.5e-38f, sub));
#endif
    }
    CHECK(fd_set_num_threads(0) == FD_OK);
    return check_summary();
}

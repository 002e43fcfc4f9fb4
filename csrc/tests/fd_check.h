/* fd_check.h -- the tiny harness shared by the C tests: pass/fail counters, CHECK, a seeded
 * xorshift generator, and the closing "N passed, N failed" line (exit status 1 on failure).
 * A test file defines FD_TEST_SEED before including this header if it needs its own sequence.
 */
#ifndef FD_CHECK_H
#define FD_CHECK_H

#include <stdint.h>
#include <stdio.h>

#ifndef FD_TEST_SEED
#define FD_TEST_SEED 0x9E3779B97F4A7C15ull
#endif

static int n_pass = 0, n_fail = 0;

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (cond) n_pass++;                                                  \
        else {                                                               \
            n_fail++;                                                        \
            printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);           \
        }                                                                    \
    } while (0)

static uint64_t rng = FD_TEST_SEED;
static inline double urand(void) /* in [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

static inline int check_summary(void)
{
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}

#endif

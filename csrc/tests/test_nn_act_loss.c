/* test_nn_act_loss.c -- C tests of the dense-layer activations (fd_act_*) and losses (fd_mse_*,
 * fd_xent_*): values against float64 libm, both code paths, f32 and f64, tails of every length,
 * in-place forward, bit-identical results for 1 and 2 threads, huge logits, error codes (a label out
 * of range writes nothing). Prints one line per failure and "N passed, N failed"; exit status 1 on
 * failure.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fastdescent.h"

#include "fd_check.h"

static double act_ref(int kind, double x, double *deriv)
{
    switch (kind) {
    case 0: *deriv = x > 0; return x < 0 ? 0 : x;
    case 1: { double t = tanh(x); *deriv = 1 - t * t; return t; }
    case 2: { double s = 1 / (1 + exp(-x)); *deriv = s * (1 - s); return s; }
    default: {
        double cdf = 0.5 * (1 + erf(x / sqrt(2.0)));
        *deriv = cdf + x * exp(-0.5 * x * x) / sqrt(2 * M_PI);
        return x * cdf;
    }
    }
}

/* |got - want| <= tol * (|want| + |x| [gelu cancellation]) */
static int act_close(int kind, double got, double want, double x, double tol)
{
    double scale = fabs(want) + (kind == 3 ? fabs(x) : 0) + 1e-37;
    return fabs(got - want) <= tol * scale || (isnan(got) && isnan(want));
}

#define DEFINE_ACT_TEST(T, SFX, TOL)                                                             \
    static void test_act_##SFX(int64_t n)                                                        \
    {                                                                                            \
        T *x = malloc(sizeof(T) * n), *y = malloc(sizeof(T) * n), *z = malloc(sizeof(T) * n);    \
        T *dy = malloc(sizeof(T) * n), *dx = malloc(sizeof(T) * n), *dx2 = malloc(sizeof(T) * n); \
        T *y2 = malloc(sizeof(T) * n);                                                           \
        for (int64_t i = 0; i < n; i++) {                                                        \
            x[i] = (T)(12 * urand());                                                            \
            dy[i] = (T)urand();                                                                  \
        }                                                                                        \
        if (n > 4) { x[0] = 0; x[1] = (T)95; x[2] = (T)-95; x[3] = (T)1e-4; }                     \
        for (int kind = 0; kind < 4; kind++) {                                                   \
            CHECK(fd_act_fwd_##SFX(n, y, x, kind) == FD_OK);                                     \
            int ok_f = 1, ok_b = 1;                                                              \
            for (int64_t i = 0; i < n; i++) {                                                    \
                double d, want = act_ref(kind, (double)x[i], &d);                                \
                if (!act_close(kind, y[i], want, x[i], TOL)) {                                   \
                    if (ok_f) printf("  act_fwd kind %d x=%.9g: %.9g, want %.9g\n", kind,         \
                                     (double)x[i], (double)y[i], want);                          \
                    ok_f = 0;                                                                    \
                }                                                                                \
            }                                                                                    \
            CHECK(ok_f);                                                                         \
            for (int64_t i = 0; i < n; i++) dx[i] = (T)0.5;                                      \
            CHECK(fd_act_bwd_##SFX(n, dx, dy, x, y, kind) == FD_OK);                             \
            for (int64_t i = 0; i < n; i++) {                                                    \
                double d;                                                                        \
                act_ref(kind, (double)x[i], &d);                                                 \
                double want = 0.5 + (double)dy[i] * d;                                           \
                double tol = 4 * TOL * (0.5 + fabs((double)dy[i]) * (1 + fabs((double)x[i])));  \
                if (!(fabs(dx[i] - want) <= tol)) {                                              \
                    if (ok_b) printf("  act_bwd kind %d x=%.9g: %.9g, want %.9g\n", kind,         \
                                     (double)x[i], (double)dx[i], want);                         \
                    ok_b = 0;                                                                    \
                }                                                                                \
            }                                                                                    \
            CHECK(ok_b);                                                                         \
            /* in place, and the same bits with the other thread count */                        \
            memcpy(z, x, sizeof(T) * n);                                                         \
            CHECK(fd_act_fwd_##SFX(n, z, z, kind) == FD_OK);                                     \
            CHECK(memcmp(z, y, sizeof(T) * n) == 0);                                             \
            int def = fd_get_num_threads();                                                      \
            fd_set_num_threads(def > 1 ? 1 : 2);                                                 \
            for (int64_t i = 0; i < n; i++) dx2[i] = (T)0.5;                                     \
            CHECK(fd_act_fwd_##SFX(n, y2, x, kind) == FD_OK);                                    \
            CHECK(fd_act_bwd_##SFX(n, dx2, dy, x, y, kind) == FD_OK);                            \
            fd_set_num_threads(0);                                                               \
            CHECK(memcmp(y2, y, sizeof(T) * n) == 0);                                            \
            CHECK(memcmp(dx2, dx, sizeof(T) * n) == 0);                                          \
        }                                                                                        \
        CHECK(fd_act_fwd_##SFX(n, y, x, 4) == FD_ERR_ARG);                                       \
        CHECK(fd_act_fwd_##SFX(n, y, x, -1) == FD_ERR_ARG);                                      \
        CHECK(fd_act_fwd_##SFX(-1, y, x, 0) == FD_ERR_SIZE);                                     \
        CHECK(fd_act_fwd_##SFX(n, NULL, x, 0) == FD_ERR_NULL);                                   \
        CHECK(fd_act_bwd_##SFX(n, dx, dy, NULL, y, 3) == FD_ERR_NULL);                           \
        CHECK(fd_act_bwd_##SFX(0, NULL, NULL, NULL, NULL, 1) == FD_OK);                          \
        free(x); free(y); free(z); free(dy); free(dx); free(dx2); free(y2);                      \
    }
DEFINE_ACT_TEST(float, f32, 5e-7)
DEFINE_ACT_TEST(double, f64, 1e-14)

#define DEFINE_LOSS_TEST(T, SFX, TOL)                                                              \
    static void test_loss_##SFX(int64_t R, int64_t C)                                              \
    {                                                                                              \
        const int64_t n = R * C;                                                                   \
        T *p = malloc(sizeof(T) * (n + 1)), *q = malloc(sizeof(T) * (n + 1));                      \
        T *g = malloc(sizeof(T) * (n + 1)), *g2 = malloc(sizeof(T) * (n + 1));                     \
        int64_t *lab = malloc(sizeof(int64_t) * (R + 1));                                          \
        for (int64_t i = 0; i < n; i++) p[i] = (T)(5 * urand()), q[i] = (T)urand(), g[i] = 0;      \
        for (int64_t r = 0; r < R; r++) lab[r] = (int64_t)((urand() + 1) * 0.5 * C) % C;           \
        /* mse */                                                                                  \
        double loss = -1, loss2 = -2, want = 0, scale = 1.0 / (double)n;                           \
        CHECK(fd_mse_fwd_bwd_##SFX(n, g, p, q, scale, &loss) == FD_OK);                            \
        int ok = 1;                                                                                \
        for (int64_t i = 0; i < n; i++) {                                                          \
            double d = (double)p[i] - (double)q[i];                                                \
            want += d * d;                                                                         \
            ok &= fabs(g[i] - 2 * scale * d) <= 4 * TOL * fabs(2 * scale * d) + 1e-300;            \
        }                                                                                          \
        CHECK(ok);                                                                                 \
        CHECK(fabs(loss - scale * want) <= 4 * TOL * scale * want);                                \
        /* xent */                                                                                 \
        for (int64_t i = 0; i < n; i++) g[i] = g2[i] = (T)0.25;                                    \
        CHECK(fd_xent_fwd_bwd_##SFX(R, C, g, p, lab, 1.0 / R, &loss) == FD_OK);                   \
        double total = 0;                                                                          \
        ok = 1;                                                                                    \
        for (int64_t r = 0; r < R; r++) {                                                          \
            const T *l = p + r * C;                                                                \
            double mx = l[0], s = 0;                                                               \
            for (int64_t j = 1; j < C; j++) mx = l[j] > mx ? l[j] : mx;                            \
            for (int64_t j = 0; j < C; j++) s += exp((double)l[j] - mx);                           \
            total += mx + log(s) - (double)l[lab[r]];                                              \
            for (int64_t j = 0; j < C; j++) {                                                      \
                double w = 0.25 + (exp((double)l[j] - mx) / s - (j == lab[r])) / (double)R;        \
                ok &= fabs(g[r * C + j] - w) <= 8 * TOL * (0.25 + 1.0 / (double)R);                \
            }                                                                                      \
        }                                                                                          \
        CHECK(ok);                                                                                 \
        CHECK(fabs(loss - total / R) <= 8 * TOL * (fabs(total / R) + 1));                          \
        int def = fd_get_num_threads();                                                            \
        fd_set_num_threads(def > 1 ? 1 : 2);                                                       \
        CHECK(fd_xent_fwd_bwd_##SFX(R, C, g2, p, lab, 1.0 / R, &loss2) == FD_OK);                 \
        fd_set_num_threads(0);                                                                     \
        CHECK(loss2 == loss);                                                                      \
        CHECK(memcmp(g, g2, sizeof(T) * n) == 0);                                                  \
        /* a label out of range: FD_ERR_ARG, nothing written */                                    \
        if (R > 1) {                                                                               \
            int64_t keep = lab[R - 1];                                                             \
            for (int bad = 0; bad < 2; bad++) {                                                    \
                lab[R - 1] = bad ? -1 : C;                                                         \
                loss2 = 42;                                                                        \
                memcpy(g2, g, sizeof(T) * n);                                                      \
                CHECK(fd_xent_fwd_bwd_##SFX(R, C, g2, p, lab, 1.0, &loss2) == FD_ERR_ARG);        \
                CHECK(loss2 == 42 && memcmp(g, g2, sizeof(T) * n) == 0);                           \
            }                                                                                      \
            lab[R - 1] = keep;                                                                     \
        }                                                                                          \
        free(p); free(q); free(g); free(g2); free(lab);                                            \
    }
DEFINE_LOSS_TEST(float, f32, 6e-7)
DEFINE_LOSS_TEST(double, f64, 1e-14)

static void test_xent_huge(void)
{
    float l[6] = {3e38f, 0.0f, -3e38f, -1e4f, -1e4f, -1e4f}, g[6] = {0};
    int64_t lab[2] = {0, 2};
    double loss = 0;
    CHECK(fd_xent_fwd_bwd_f32(2, 3, g, l, lab, 1.0, &loss) == FD_OK);
    CHECK(fabs(loss - log(3.0)) < 1e-6);
    CHECK(g[0] == 0 && g[1] == 0 && g[2] == 0);
    CHECK(fabs(g[3] - 1 / 3.0) < 1e-7 && fabs(g[5] + 2 / 3.0) < 1e-7);
    double ld[3] = {1e300, -1e300, 0}, gd[3] = {0};
    int64_t l0 = 1;
    CHECK(fd_xent_fwd_bwd_f64(1, 3, gd, ld, &l0, 1.0, &loss) == FD_OK);
    CHECK(loss == 2e300 && gd[0] == 1 && gd[1] == -1 && gd[2] == 0);
    CHECK(fd_xent_fwd_bwd_f64(1, 3, gd, ld, &l0, 1.0, NULL) == FD_ERR_NULL);
    CHECK(fd_xent_fwd_bwd_f64(-1, 3, gd, ld, &l0, 1.0, &loss) == FD_ERR_SIZE);
    CHECK(fd_mse_fwd_bwd_f64(0, NULL, NULL, NULL, 1.0, &loss) == FD_OK && loss == 0);
}

int main(void)
{
    const int paths[2] = {FD_PATH_AVX2_FMA, FD_PATH_GENERIC};
    static const int64_t sizes[] = {1, 7, 8, 9, 17, 1000, 70001};
    static const int64_t rc[][2] = {{1, 1}, {3, 7}, {64, 10}, {33, 17}, {5000, 40}, {2, 100000}};
    for (int i = 0; i < 2; i++) {
        if (fd_set_simd_path(paths[i]) != FD_OK) {
            printf("(path %d not available here: skipped)\n", paths[i]);
            continue;
        }
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            test_act_f32(sizes[s]);
            test_act_f64(sizes[s]);
        }
        for (size_t s = 0; s < sizeof rc / sizeof rc[0]; s++) {
            test_loss_f32(rc[s][0], rc[s][1]);
            test_loss_f64(rc[s][0], rc[s][1]);
        }
        test_xent_huge();
    }
    fd_set_simd_path(-1);
    return check_summary();
}

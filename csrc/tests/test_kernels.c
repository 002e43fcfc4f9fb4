/* test_kernels.c -- C tests of libfastdescent: hand-computed values, error codes, settings, and the
 * multi-tensor work distribution (many tiny tensors + a few large ones, 1 vs 2 threads, both code
 * paths). Prints one line per failure and "N passed, N failed" at the end; exit status 1 on failure.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fastdescent.h"

#include "fd_check.h"

#define CHECK_CLOSE(got, want, rtol)                                                        \
    do {                                                                                    \
        double g_ = (double)(got), w_ = (double)(want);                                     \
        if (fabs(g_ - w_) <= (rtol) * fabs(w_) + 1e-300 || (isnan(g_) && isnan(w_))) n_pass++; \
        else {                                                                              \
            n_fail++;                                                                       \
            printf("FAIL %s:%d: %s = %.17g, expected %.17g\n", __FILE__, __LINE__, #got, g_, w_); \
        }                                                                                   \
    } while (0)

/* ------------------------------------------------------------------ library information */
static void test_info(void)
{
    CHECK(strcmp(fd_version(), "0.1.0") == 0);
    CHECK(strlen(fd_build_info()) > 0);
    CHECK(strcmp(fd_strerror(FD_OK), "success") == 0);
    for (int s = FD_ERR_NULL; s <= FD_ERR_ALIGN; s++) {
        CHECK(fd_strerror(s) != NULL);
        CHECK(strcmp(fd_strerror(s), fd_strerror(FD_OK)) != 0);
        CHECK(strcmp(fd_strerror(s), fd_strerror(999)) != 0);
    }
    CHECK(strcmp(fd_strerror(-7), "unknown fastdescent status") == 0);

    int def = fd_get_num_threads();
    CHECK(def >= 1);
    CHECK(fd_set_num_threads(-1) == FD_ERR_ARG);
    CHECK(fd_set_num_threads(1) == FD_OK);
    CHECK(fd_get_num_threads() == 1);
    CHECK(fd_set_num_threads(3) == FD_OK);
    CHECK(fd_get_num_threads() == (fd_openmp_version() ? 3 : 1));
    CHECK(fd_set_num_threads(0) == FD_OK);
    CHECK(fd_get_num_threads() == def);

    CHECK(fd_get_parallel_grain() == 0);
    CHECK(fd_set_parallel_grain(-1) == FD_ERR_ARG);
    CHECK(fd_set_parallel_grain(1000) == FD_OK);
    CHECK(fd_get_parallel_grain() == 1000);
    CHECK(fd_set_parallel_grain(0) == FD_OK);

    unsigned int f = fd_cpu_features();
    int path = fd_get_simd_path();
    CHECK(path == FD_PATH_GENERIC || path == FD_PATH_AVX2_FMA);
    if (path == FD_PATH_AVX2_FMA) CHECK((f & FD_CPU_AVX2) && (f & FD_CPU_FMA));
    CHECK(fd_set_simd_path(7) == FD_ERR_ARG);
    CHECK(fd_set_simd_path(FD_PATH_GENERIC) == FD_OK);
    CHECK(fd_get_simd_path() == FD_PATH_GENERIC);
    CHECK(fd_set_simd_path(-1) == FD_OK);
    CHECK(fd_get_simd_path() == path);
    if (path == FD_PATH_GENERIC) CHECK(fd_set_simd_path(FD_PATH_AVX2_FMA) == FD_ERR_UNSUPPORTED);
}

/* ------------------------------------------------------------------ error codes */
static void test_errors(void)
{
    float a[2] = {1, 2}, b[2] = {0, 0}, c[2] = {0, 0}, d[2] = {0, 0}, g[2] = {1, 1};
    float *pa[1] = {a}, *pb[1] = {b}, *pc[1] = {c}, *pd[1] = {d}, *pnull[1] = {NULL};
    const float *pg[1] = {g};
    int64_t sz[1] = {2}, neg[1] = {-1}, zero[1] = {0};
    double out = 0;
    int ok = 0;

    CHECK(fd_adam_f32(-1, sz, pa, pb, pc, NULL, pg, .9, .999, 1e-8, 0, 1, 1e-3, 1, 0, 0) == FD_ERR_SIZE);
    CHECK(fd_adam_f32(1, NULL, pa, pb, pc, NULL, pg, .9, .999, 1e-8, 0, 1, 1e-3, 1, 0, 0) == FD_ERR_NULL);
    CHECK(fd_adam_f32(1, neg, pa, pb, pc, NULL, pg, .9, .999, 1e-8, 0, 1, 1e-3, 1, 0, 0) == FD_ERR_SIZE);
    CHECK(fd_adam_f32(1, sz, NULL, pb, pc, NULL, pg, .9, .999, 1e-8, 0, 1, 1e-3, 1, 0, 0) == FD_ERR_NULL);
    CHECK(fd_adam_f32(1, sz, pnull, pb, pc, NULL, pg, .9, .999, 1e-8, 0, 1, 1e-3, 1, 0, 0) == FD_ERR_NULL);
    CHECK(fd_adam_f32(1, sz, pa, pb, pc, NULL, pg, .9, .999, 1e-8, 0, 1, 1e-3, 1, 1, 0) == FD_ERR_NULL);
    CHECK(fd_adam_f32(1, zero, pnull, pnull, pnull, NULL, (const float *const *)pnull, .9, .999, 1e-8,
                      0, 1, 1e-3, 1, 0, 0) == FD_OK); /* size 0: NULL data is fine */
    CHECK(fd_adam_f32(0, NULL, NULL, NULL, NULL, NULL, NULL, .9, .999, 1e-8, 0, 1, 1e-3, 1, 0, 0) == FD_OK);
    CHECK(a[0] == 1 && a[1] == 2 && b[0] == 0); /* nothing written by failed calls */

    CHECK(fd_sgd_f32(1, sz, pa, NULL, pg, 0.1, 0.9, 0, 0, 0, 0, 0) == FD_ERR_NULL);
    CHECK(fd_sgd_f32(1, sz, pa, NULL, pg, 0.1, 0.0, 0, 0, 0, 0, 0) == FD_OK);
    CHECK(fd_rmsprop_f32(1, sz, pa, pb, NULL, NULL, pg, 0.1, .99, 1e-8, 0, 0, 1, 0) == FD_ERR_NULL);
    CHECK(fd_rmsprop_f32(1, sz, pa, pb, pc, NULL, pg, 0.1, .99, 1e-8, 0, 0.5, 1, 0) == FD_ERR_NULL);
    CHECK(fd_rmsprop_f32(1, sz, pa, pb, pc, pd, pg, 0.1, .99, 1e-8, 0, 0.5, 1, 0) == FD_OK);
    CHECK(fd_adagrad_f32(1, sz, pa, NULL, pg, 0.1, 1e-10, 0, 0) == FD_ERR_NULL);
    CHECK(fd_adagrad_f32(2, neg, pa, pb, pg, 0.1, 1e-10, 0, 0) == FD_ERR_SIZE);
    CHECK(fd_rprop_f32(1, sz, pa, pb, NULL, pg, 0.5, 1.2, 1e-6, 50, 0) == FD_ERR_NULL);
    CHECK(fd_rprop_f32(1, sz, pa, pb, pnull, pg, 0.5, 1.2, 1e-6, 50, 0) == FD_ERR_NULL);
    CHECK(fd_rprop_f32(1, sz, pa, pb, pc, pg, 0.5, 1.2, 1.0, 0.5, 0) == FD_ERR_ARG);
    const float a0 = a[0], b0 = b[0], c0 = c[0];
    CHECK(fd_adamax_f32(1, sz, pa, pb, NULL, pg, 0.1, 0, .999, 1e-8, 0, 0.02, 0) == FD_ERR_NULL);
    CHECK(fd_adamax_f32(1, sz, pa, pb, pnull, pg, 0.1, 0, .999, 1e-8, 0, 0.02, 0) == FD_ERR_NULL);
    CHECK(fd_adamax_f32(2, neg, pa, pb, pc, pg, 0.1, 0, .999, 1e-8, 0, 0.02, 0) == FD_ERR_SIZE);
    CHECK(fd_adadelta_f32(1, sz, pa, NULL, pc, pg, 1.0, .9, .1, 1e-6, 0, 0) == FD_ERR_NULL);
    CHECK(fd_adadelta_f32(1, sz, pa, pb, pc, NULL, 1.0, .9, .1, 1e-6, 0, 0) == FD_ERR_NULL);
    CHECK(fd_adadelta_f32(2, neg, pa, pb, pc, pg, 1.0, .9, .1, 1e-6, 0, 0) == FD_ERR_SIZE);
    CHECK(a[0] == a0 && b[0] == b0 && c[0] == c0); /* nothing written by failed calls */

    CHECK(fd_norm_pow_sum_f32(1, sz, pg, 2.0, NULL) == FD_ERR_NULL);
    CHECK(fd_norm_pow_sum_f32(1, sz, pg, 0.0, &out) == FD_ERR_ARG);
    CHECK(fd_norm_pow_sum_f32(1, sz, pg, -2.0, &out) == FD_ERR_ARG);
    CHECK(fd_norm_pow_sum_f32(1, sz, pg, NAN, &out) == FD_ERR_ARG);
    CHECK(fd_all_finite_f32(1, sz, pg, NULL) == FD_ERR_NULL);
    CHECK(fd_all_finite_f32(1, sz, NULL, &ok) == FD_ERR_NULL);
    CHECK(fd_scale_f64(-3, NULL, NULL, 1.0) == FD_ERR_SIZE);

    const float *src[1] = {g};
    float *dst[1] = {b};
    CHECK(fd_stream_f32(-1, 1, src, 1, dst) == FD_ERR_SIZE);
    CHECK(fd_stream_f32(2, -1, src, 1, dst) == FD_ERR_ARG);
    CHECK(fd_stream_f32(2, 1, NULL, 1, dst) == FD_ERR_NULL);
    CHECK(fd_stream_f32(2, 1, src, 1, pnull) == FD_ERR_NULL);
}

/* ------------------------------------------------------------------ hand-computed values (f64) */
static void test_sgd_values(void)
{
    double p[1], b[1], g[1] = {0.5};
    double *pp[1] = {p}, *pb[1] = {b};
    const double *pg[1] = {g};
    int64_t sz[1] = {1};

    p[0] = 1.0; /* plain: 1 - 0.1*0.5 */
    CHECK(fd_sgd_f64(1, sz, pp, NULL, pg, 0.1, 0, 0, 0, 0, 0, 0) == FD_OK);
    CHECK_CLOSE(p[0], 0.95, 1e-15);
    p[0] = 1.0; /* maximize */
    CHECK(fd_sgd_f64(1, sz, pp, NULL, pg, 0.1, 0, 0, 0, 0, 1, 0) == FD_OK);
    CHECK_CLOSE(p[0], 1.05, 1e-15);
    p[0] = 2.0; /* weight decay 0.25: g = 0.5 + 0.5 = 1 */
    CHECK(fd_sgd_f64(1, sz, pp, NULL, pg, 0.1, 0, 0, 0.25, 0, 0, 0) == FD_OK);
    CHECK_CLOSE(p[0], 1.9, 1e-15);
    p[0] = 1.0; b[0] = 123.0; /* momentum, first step: b = g */
    CHECK(fd_sgd_f64(1, sz, pp, pb, pg, 0.1, 0.9, 0, 0, 0, 0, 1) == FD_OK);
    CHECK_CLOSE(b[0], 0.5, 1e-15);
    CHECK_CLOSE(p[0], 0.95, 1e-15);
    /* second step, dampening 0.5: b = 0.9*0.5 + 0.5*0.5 = 0.7; p = 0.95 - 0.07 */
    CHECK(fd_sgd_f64(1, sz, pp, pb, pg, 0.1, 0.9, 0.5, 0, 0, 0, 0) == FD_OK);
    CHECK_CLOSE(b[0], 0.7, 1e-15);
    CHECK_CLOSE(p[0], 0.88, 1e-15);
    p[0] = 1.0; b[0] = 0.0; /* nesterov first step: b = 0.5; g = 0.5 + 0.9*0.5 = 0.95 */
    CHECK(fd_sgd_f64(1, sz, pp, pb, pg, 0.1, 0.9, 0, 0, 1, 0, 1) == FD_OK);
    CHECK_CLOSE(p[0], 0.905, 1e-15);
    CHECK_CLOSE(b[0], 0.5, 1e-15);
}

static void test_adam_values(void)
{
    double p[1], m[1], v[1], vmax[1], g[1];
    double *pp[1] = {p}, *pm[1] = {m}, *pv[1] = {v}, *pvm[1] = {vmax};
    const double *pg[1] = {g};
    int64_t sz[1] = {1};
    const double lr = 1e-3, b1 = 0.9, b2 = 0.999, eps = 1e-8;

    /* step 1 from zero state, g = 1: m = 0.1, v = 0.001, bias-corrected m/sqrt(v) = 1 */
    p[0] = 1.0; m[0] = 0.0; v[0] = 0.0; g[0] = 1.0;
    CHECK(fd_adam_f64(1, sz, pp, pm, pv, NULL, pg, b1, b2, eps, 0, 1, lr / (1 - b1), sqrt(1 - b2), 0,
                      0) == FD_OK);
    CHECK_CLOSE(m[0], 0.1, 1e-15);
    CHECK_CLOSE(v[0], 0.001, 1e-13);
    CHECK_CLOSE(p[0], 1.0 - lr / (1.0 + eps), 1e-15);

    /* maximize: the step goes up */
    p[0] = 1.0; m[0] = 0.0; v[0] = 0.0;
    CHECK(fd_adam_f64(1, sz, pp, pm, pv, NULL, pg, b1, b2, eps, 0, 1, lr / (1 - b1), sqrt(1 - b2), 0,
                      1) == FD_OK);
    CHECK_CLOSE(m[0], -0.1, 1e-15);
    CHECK_CLOSE(p[0], 1.0 + lr / (1.0 + eps), 1e-15);

    /* coupled weight decay 0.5, p = 2, g = 0: g' = 1, same as above from p = 2 */
    p[0] = 2.0; m[0] = 0.0; v[0] = 0.0; g[0] = 0.0;
    CHECK(fd_adam_f64(1, sz, pp, pm, pv, NULL, pg, b1, b2, eps, 0.5, 1, lr / (1 - b1), sqrt(1 - b2), 0,
                      0) == FD_OK);
    CHECK_CLOSE(p[0], 2.0 - lr / (1.0 + eps), 1e-15);

    /* AdamW: decay 1 - lr*wd = 0.5 applied first (lr = 0.25, wd = 2), g = 1 */
    p[0] = 2.0; m[0] = 0.0; v[0] = 0.0; g[0] = 1.0;
    CHECK(fd_adam_f64(1, sz, pp, pm, pv, NULL, pg, b1, b2, eps, 0, 0.5, 0.25 / (1 - b1), sqrt(1 - b2),
                      0, 0) == FD_OK);
    CHECK_CLOSE(p[0], 1.0 - 0.25 / (1.0 + eps), 1e-15);

    /* amsgrad: vmax = 0.004 > v = 0.001 is kept and used: denom = sqrt(4) + eps */
    p[0] = 1.0; m[0] = 0.0; v[0] = 0.0; vmax[0] = 0.004; g[0] = 1.0;
    CHECK(fd_adam_f64(1, sz, pp, pm, pv, pvm, pg, b1, b2, eps, 0, 1, lr / (1 - b1), sqrt(1 - b2), 1,
                      0) == FD_OK);
    CHECK_CLOSE(vmax[0], 0.004, 1e-15);
    CHECK_CLOSE(v[0], 0.001, 1e-13);
    CHECK_CLOSE(p[0], 1.0 - lr / (2.0 + eps), 1e-15);
    /* amsgrad: a smaller vmax is replaced by v */
    p[0] = 1.0; m[0] = 0.0; v[0] = 0.0; vmax[0] = 0.0;
    CHECK(fd_adam_f64(1, sz, pp, pm, pv, pvm, pg, b1, b2, eps, 0, 1, lr / (1 - b1), sqrt(1 - b2), 1,
                      0) == FD_OK);
    CHECK_CLOSE(vmax[0], 0.001, 1e-13);
    CHECK_CLOSE(p[0], 1.0 - lr / (1.0 + eps), 1e-15);
    /* amsgrad propagates NaN from the stored max */
    p[0] = 1.0; m[0] = 0.0; v[0] = 0.0; vmax[0] = NAN;
    CHECK(fd_adam_f64(1, sz, pp, pm, pv, pvm, pg, b1, b2, eps, 0, 1, lr / (1 - b1), sqrt(1 - b2), 1,
                      0) == FD_OK);
    CHECK(isnan(vmax[0]) && isnan(p[0]));

    /* float32: the same first step */
    float pf[3] = {1, 1, 1}, mf[3] = {0}, vf[3] = {0}, gf[3] = {1, -1, 0};
    float *ppf[1] = {pf}, *pmf[1] = {mf}, *pvf[1] = {vf};
    const float *pgf[1] = {gf};
    int64_t sz3[1] = {3};
    CHECK(fd_adam_f32(1, sz3, ppf, pmf, pvf, NULL, pgf, b1, b2, eps, 0, 1, lr / (1 - b1), sqrt(1 - b2),
                      0, 0) == FD_OK);
    CHECK_CLOSE(pf[0], 0.999, 1e-6);
    CHECK_CLOSE(pf[1], 1.001, 1e-6);
    CHECK(pf[2] == 1.0f);
}

static void test_rmsprop_adagrad_values(void)
{
    double p[1], v[1], a[1], b[1], g[1] = {1.0};
    double *pp[1] = {p}, *pv[1] = {v}, *pa[1] = {a}, *pb[1] = {b};
    const double *pg[1] = {g};
    int64_t sz[1] = {1};
    const double lr = 0.01, alpha = 0.99, eps = 1e-8;

    /* plain: v = 0.01, d = 0.1 + eps */
    p[0] = 1.0; v[0] = 0.0;
    CHECK(fd_rmsprop_f64(1, sz, pp, pv, NULL, NULL, pg, lr, alpha, eps, 0, 0, 0, 0) == FD_OK);
    CHECK_CLOSE(v[0], 0.01, 1e-14);
    CHECK_CLOSE(p[0], 1.0 - lr / (0.1 + eps), 1e-14);
    /* centered: a = 0.01, d = sqrt(0.01 - 0.0001) + eps */
    p[0] = 1.0; v[0] = 0.0; a[0] = 0.0;
    CHECK(fd_rmsprop_f64(1, sz, pp, pv, pa, NULL, pg, lr, alpha, eps, 0, 0, 1, 0) == FD_OK);
    CHECK_CLOSE(a[0], 0.01, 1e-14);
    CHECK_CLOSE(p[0], 1.0 - lr / (sqrt(0.0099) + eps), 1e-14);
    /* momentum 0.5 with b = 2: b = 1 + 1/(0.1 + eps); p -= lr*b */
    p[0] = 1.0; v[0] = 0.0; b[0] = 2.0;
    CHECK(fd_rmsprop_f64(1, sz, pp, pv, NULL, pb, pg, lr, alpha, eps, 0, 0.5, 0, 0) == FD_OK);
    CHECK_CLOSE(b[0], 1.0 + 1.0 / (0.1 + eps), 1e-14);
    CHECK_CLOSE(p[0], 1.0 - lr * (1.0 + 1.0 / (0.1 + eps)), 1e-14);
    /* weight decay 1 with p = 1, g = 1, maximize: g' = -1 + 1 = 0: nothing moves but v stays 0 */
    p[0] = 1.0; v[0] = 0.0;
    CHECK(fd_rmsprop_f64(1, sz, pp, pv, NULL, NULL, pg, lr, alpha, eps, 1.0, 0, 0, 1) == FD_OK);
    CHECK(p[0] == 1.0 && v[0] == 0.0);

    /* Adagrad: s = 0, g = 2: s = 4, p -= clr * 2/(2 + eps) */
    double s[1] = {0.0}, g2[1] = {2.0};
    double *ps[1] = {s};
    const double *pg2[1] = {g2};
    p[0] = 1.0;
    CHECK(fd_adagrad_f64(1, sz, pp, ps, pg2, 0.1, 1e-10, 0, 0) == FD_OK);
    CHECK_CLOSE(s[0], 4.0, 0);
    CHECK_CLOSE(p[0], 1.0 - 0.1 * 2.0 / (2.0 + 1e-10), 1e-15);
    /* with weight decay 0.5 (p = 1): g = 2.5 */
    s[0] = 0.0; p[0] = 1.0;
    CHECK(fd_adagrad_f64(1, sz, pp, ps, pg2, 0.1, 1e-10, 0.5, 0) == FD_OK);
    CHECK_CLOSE(s[0], 6.25, 0);
    CHECK_CLOSE(p[0], 1.0 - 0.1 * 2.5 / (2.5 + 1e-10), 1e-15);
}

static void test_lion_values(void)
{
    double p[4], m[4], g[4] = {2.0, -0.5, -1.0, 0.0};
    double *pp[1] = {p}, *pm[1] = {m};
    const double *pg[1] = {g};
    int64_t sz[1] = {4};
    /* c = 0.9*m + 0.1*g = (0.2, -0.05, 0.8, 0): p -= 0.1*sign(c); m = 0.99*m + 0.01*g */
    for (int i = 0; i < 4; i++) p[i] = 1.0, m[i] = i == 2 ? 1.0 : 0.0;
    CHECK(fd_lion_f64(1, sz, pp, pm, pg, 0.1, 0.9, 0.1, 0.99, 0.01, 1.0, 0) == FD_OK);
    CHECK_CLOSE(p[0], 0.9, 1e-15);
    CHECK_CLOSE(p[1], 1.1, 1e-15);
    CHECK_CLOSE(p[2], 0.9, 1e-15);
    CHECK(p[3] == 1.0); /* sign(0) = 0 */
    CHECK_CLOSE(m[0], 0.02, 1e-15);
    CHECK_CLOSE(m[1], -0.005, 1e-15);
    CHECK_CLOSE(m[2], 0.98, 1e-15);
    CHECK(m[3] == 0.0);
    /* decoupled decay 1 - lr*wd = 0.5 first, maximize flips g; a NaN momentum gives NaN */
    for (int i = 0; i < 4; i++) p[i] = 1.0, m[i] = 0.0;
    m[3] = NAN;
    CHECK(fd_lion_f64(1, sz, pp, pm, pg, 0.1, 0.9, 0.1, 0.99, 0.01, 0.5, 1) == FD_OK);
    CHECK_CLOSE(p[0], 0.6, 1e-15);
    CHECK_CLOSE(p[1], 0.4, 1e-15);
    CHECK_CLOSE(p[2], 0.4, 1e-15);
    CHECK(isnan(p[3]) && isnan(m[3]));
    CHECK_CLOSE(m[0], -0.02, 1e-15);
    /* float32: +-lr exactly */
    float pf[2] = {1.0f, 1.0f}, mf[2] = {0.0f, 0.0f}, gf[2] = {3.0f, -3.0f};
    float *ppf[1] = {pf}, *pmf[1] = {mf};
    const float *pgf[1] = {gf};
    int64_t sz2[1] = {2};
    CHECK(fd_lion_f32(1, sz2, ppf, pmf, pgf, 0.25, 0.9, 0.1, 0.99, 0.01, 1.0, 0) == FD_OK);
    CHECK(pf[0] == 0.75f && pf[1] == 1.25f);
    /* lr * sign(c) bit for bit on both code paths: lr = 0 with c < 0 is -0, so p = -0 becomes +0
     * (-0 - -0), with c > 0 it is +0 (p = -0 stays -0) */
    int paths[2] = {FD_PATH_GENERIC, FD_PATH_AVX2_FMA};
    for (int k = 0; k < 2; k++) {
        if (fd_set_simd_path(paths[k]) != FD_OK) continue;
        float pz[3] = {-0.0f, -0.0f, 2.0f}, mz[3] = {0, 0, 0}, gz[3] = {-1.0f, 1.0f, -1.0f};
        float *ppz[1] = {pz}, *pmz[1] = {mz};
        const float *pgz[1] = {gz};
        int64_t sz3[1] = {3};
        CHECK(fd_lion_f32(1, sz3, ppz, pmz, pgz, 0.0, 0.9, 0.1, 0.99, 0.01, 1.0, 0) == FD_OK);
        CHECK(pz[0] == 0.0f && !signbit(pz[0]) && pz[1] == 0.0f && signbit(pz[1]) && pz[2] == 2.0f);
    }
    fd_set_simd_path(-1);
}

static void test_lamb_values(void)
{
    /* three tensors, each with its own trust ratio:
     *   0: p = (3, 4), g = (1, -1): step 1 gives r = (1, -1) (m/bc1 = g, v/bc2 = g^2, eps = 0),
     *      ||p|| = 5, ||r|| = sqrt(2): p -= 0.1 * 5/sqrt(2) * r
     *   1: p = (1, 2), g = 0: r = 0 so ||r|| = 0: trust 1, and p - 0.1*1*0 = p
     *   2: p = 0, g = (2): ||p|| = 0: trust 1, p = -0.1 * r = -0.1 */
    double p0[2] = {3, 4}, p1[2] = {1, 2}, p2[1] = {0};
    double m0[2] = {0}, m1[2] = {0}, m2[1] = {0}, v0[2] = {0}, v1[2] = {0}, v2[1] = {0};
    double g0[2] = {1, -1}, g1[2] = {0, 0}, g2[1] = {2};
    double *pp[3] = {p0, p1, p2}, *pm[3] = {m0, m1, m2}, *pv[3] = {v0, v1, v2};
    const double *pg[3] = {g0, g1, g2};
    int64_t sz[3] = {2, 2, 1};
    const double b1 = 0.9, b2 = 0.999;
    CHECK(fd_lamb_f64(3, sz, pp, pm, pv, pg, 0.1, b1, 1 - b1, b2, 1 - b2, 1e-30, 0.0, 1 / (1 - b1),
                      1 / (1 - b2), 0) == FD_OK);
    const double s = 0.1 * 5.0 / sqrt(2.0);
    CHECK_CLOSE(p0[0], 3.0 - s, 1e-14);
    CHECK_CLOSE(p0[1], 4.0 + s, 1e-14);
    CHECK_CLOSE(m0[0], 0.1, 1e-15);
    CHECK_CLOSE(v0[1], 0.001, 1e-13);
    CHECK(p1[0] == 1.0 && p1[1] == 2.0);
    CHECK_CLOSE(p2[0], -0.1, 1e-14);
    /* weight decay 0.5 and no bias correction: r = m/(sqrt(v) + eps) + 0.5*p */
    double q[2] = {3, 4}, mq[2] = {0}, vq[2] = {0}, gq[2] = {1, -1};
    double *pq[1] = {q}, *pmq[1] = {mq}, *pvq[1] = {vq};
    const double *pgq[1] = {gq};
    int64_t szq[1] = {2};
    CHECK(fd_lamb_f64(1, szq, pq, pmq, pvq, pgq, 0.1, b1, 1 - b1, b2, 1 - b2, 0.0, 0.5, 1.0, 1.0,
                      0) == FD_OK);
    const double r0 = 0.1 / sqrt(0.001) + 1.5, r1 = -0.1 / sqrt(0.001) + 2.0;
    const double st = 0.1 * 5.0 / sqrt(r0 * r0 + r1 * r1);
    CHECK_CLOSE(q[0], 3.0 - st * r0, 1e-13);
    CHECK_CLOSE(q[1], 4.0 - st * r1, 1e-13);
    /* a NaN gradient: NaN norm, trust 1 (both norms must be > 0), NaN propagates (IEEE) */
    double n[2] = {1, 1}, mn[2] = {0}, vn[2] = {0}, gn[2] = {NAN, 1};
    double *pn[1] = {n}, *pmn[1] = {mn}, *pvn[1] = {vn};
    const double *pgn[1] = {gn};
    CHECK(fd_lamb_f64(1, szq, pn, pmn, pvn, pgn, 0.1, b1, 1 - b1, b2, 1 - b2, 1e-6, 0.0, 10.0,
                      1000.0, 0) == FD_OK);
    CHECK(isnan(n[0]) && isnan(mn[0]));
    CHECK_CLOSE(n[1], 1.0 - 0.1 * (1.0 / (1.0 + 1e-6)), 1e-12);
}

/* Rprop, float32, torch.optim.Rprop's rule element by element; etas (0.5, 1.2), step sizes
 * [1e-3, 0.5]. Row 0: the cases; row 1: the same cases with -g and maximize. */
static void test_rprop_values(void)
{
    enum { N = 8 };
    const float tiny = 1e-30f; /* tiny*tiny underflows to 0 in float: the factor is 1, as torch */
    const float p0[N] = {1, 1, 1, 1, -0.0f, 1, 1, 1};
    const float g0[N] = {2, 2, -2, NAN, 0, tiny, 1, -1};
    const float v0[N] = {3, -3, 0, 1, 5, tiny, 1, 1}; /* prev */
    const float s0[N] = {0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.45f, 1e-3f};
    float p[2][N], v[2][N], s[2][N], g[2][N];
    for (int t = 0; t < 2; t++)
        for (int i = 0; i < N; i++) {
            p[t][i] = p0[i]; v[t][i] = v0[i]; s[t][i] = s0[i];
            g[t][i] = t ? -g0[i] : g0[i]; /* row 1 runs with maximize: the same g' */
        }
    /* each row is passed as a table of two tensors (elements 0-2 and 3-7) */
    int64_t sz[2] = {3, N - 3};
    for (int t = 0; t < 2; t++) {
        float *pp[2] = {p[t], p[t] + 3}, *pv[2] = {v[t], v[t] + 3}, *ps[2] = {s[t], s[t] + 3};
        const float *pg[2] = {g[t], g[t] + 3};
        CHECK(fd_rprop_f32(2, sz, pp, pv, ps, pg, 0.5, 1.2, 1e-3, 0.5, t) == FD_OK);
    }
    const float up = 0.1f * 1.2f, down = 0.1f * 0.5f;
    for (int t = 0; t < 2; t++) {
        /* same sign: step grows, p moves against g */
        CHECK(s[t][0] == up && p[t][0] == 1.0f - up && v[t][0] == 2.0f);
        /* sign flip: step shrinks, g zeroed: p stays, prev = 0 */
        CHECK(s[t][1] == down && p[t][1] == 1.0f && v[t][1] == 0.0f);
        /* prev = 0: factor 1, p moves by the old step */
        CHECK(s[t][2] == 0.1f && p[t][2] == 1.0f + 0.1f && v[t][2] == -2.0f);
        /* NaN gradient: sign(NaN) = 0, so the factor is 1 and p does not move; prev holds NaN */
        CHECK(s[t][3] == 0.1f && p[t][3] == 1.0f && isnan(v[t][3]));
        /* g = 0 (-0 with maximize): p = -0 stays -0 */
        CHECK(s[t][4] == 0.1f && p[t][4] == 0.0f && signbit(p[t][4]) && v[t][4] == 0.0f);
        /* g*prev underflows to 0: factor 1 (not etaplus) */
        CHECK(s[t][5] == 0.1f && p[t][5] == 1.0f - 0.1f && v[t][5] == tiny);
        /* clamped to step_size_max, then to step_size_min */
        CHECK(s[t][6] == 0.5f && p[t][6] == 0.5f && v[t][6] == 1.0f);
        CHECK(s[t][7] == 1e-3f && p[t][7] == 1.0f && v[t][7] == 0.0f);
    }
    /* an etaminus that rounds to 0 in float: its factor becomes 1 (torch's sign.eq(0) -> 1) and
     * nothing is zeroed */
    p[0][1] = 1.0f; v[0][1] = -3.0f; s[0][1] = 0.1f;
    int64_t sz1[1] = {2};
    float *pp1[1] = {&p[0][1]}, *pv1[1] = {&v[0][1]}, *ps1[1] = {&s[0][1]};
    const float *pg1[1] = {&g[0][1]};
    g[0][2] = 2.0f; p[0][2] = 1.0f; v[0][2] = 3.0f; s[0][2] = 0.1f;
    CHECK(fd_rprop_f32(1, sz1, pp1, pv1, ps1, pg1, 1e-50, 1.2, 0.0, 0.5, 0) == FD_OK);
    CHECK(s[0][1] == 0.1f && p[0][1] == 1.0f - 0.1f && v[0][1] == 2.0f);
    CHECK(s[0][2] == up && p[0][2] == 1.0f - up && v[0][2] == 2.0f);
    /* float64: the same first case */
    double pd[1] = {1}, vd[1] = {3}, sd[1] = {0.1}, gd[1] = {2};
    double *ppd[1] = {pd}, *pvd[1] = {vd}, *psd[1] = {sd};
    const double *pgd[1] = {gd};
    int64_t one[1] = {1};
    CHECK(fd_rprop_f64(1, one, ppd, pvd, psd, pgd, 0.5, 1.2, 1e-6, 50, 0) == FD_OK);
    CHECK(sd[0] == 0.1 * 1.2 && pd[0] == 1.0 - 0.1 * 1.2 && vd[0] == 2.0);
}

static void test_adamax_adadelta_values(void)
{
    double p[2], m[2], u[2], g[2] = {0.5, -2.0};
    double *pp[1] = {p}, *pm[1] = {m}, *pu[1] = {u};
    const double *pg[1] = {g};
    int64_t sz[1] = {2};

    /* Adamax, beta1 = 0.9 (lerp weight 0.1), m = u = 0: m = 0.1*g, u = |g| + eps,
     * p -= clr*m/u with clr = 0.002/(1 - 0.9) */
    const double clr = 0.002 / (1.0 - 0.9);
    p[0] = p[1] = 1.0; m[0] = m[1] = 0.0; u[0] = u[1] = 0.0;
    CHECK(fd_adamax_f64(1, sz, pp, pm, pu, pg, 0.1, 0, 0.999, 1e-8, 0, clr, 0) == FD_OK);
    CHECK_CLOSE(m[0], 0.05, 1e-15);
    CHECK_CLOSE(u[1], 2.0 + 1e-8, 1e-15);
    CHECK_CLOSE(p[0], 1.0 - clr * 0.05 / (0.5 + 1e-8), 1e-15);
    CHECK_CLOSE(p[1], 1.0 + clr * 0.2 / (2.0 + 1e-8), 1e-15);
    /* second step with g' = -g (maximize): u = max(0.999*u, |g| + eps) keeps the old u for g[0]
     * (0.999*(2 + 1e-8) > 0.5 + 1e-8 is element 1's; element 0: 0.999*(0.5 + 1e-8) < 0.5 + 1e-8) */
    double u1 = u[1], m0 = m[0];
    CHECK(fd_adamax_f64(1, sz, pp, pm, pu, pg, 0.1, 0, 0.999, 1e-8, 0, clr, 1) == FD_OK);
    CHECK_CLOSE(m[0], m0 + 0.1 * (-0.5 - m0), 1e-15);
    CHECK_CLOSE(u[0], 0.5 + 1e-8, 1e-15);
    CHECK_CLOSE(u[1], u1 * 0.999 > 2.0 + 1e-8 ? u1 * 0.999 : 2.0 + 1e-8, 1e-15);
    /* beta1 = 0 (lerp weight 0, from grad): m = g exactly; NaN in u propagates */
    m[0] = m[1] = 7.0; u[0] = NAN; u[1] = 1.0;
    CHECK(fd_adamax_f64(1, sz, pp, pm, pu, pg, 0.0, 1, 0.999, 1e-8, 0, clr, 0) == FD_OK);
    CHECK(m[0] == 0.5 && m[1] == -2.0);
    CHECK(isnan(u[0]) && isnan(p[0]));
    CHECK_CLOSE(u[1], 2.0 + 1e-8, 1e-15);

    /* Adadelta, rho = 0.9, eps = 1e-6, v = a = 0, g = 0.5: v = 0.1*0.25,
     * d = sqrt(eps)/sqrt(v + eps)*g, a = 0.1*d*d, p -= lr*d */
    double v[1] = {0.0}, acc[1] = {0.0}, q[1] = {1.0}, h[1] = {0.5};
    double *pq[1] = {q}, *pv[1] = {v}, *pa[1] = {acc};
    const double *ph[1] = {h};
    int64_t one[1] = {1};
    CHECK(fd_adadelta_f64(1, one, pq, pv, pa, ph, 1.0, 0.9, 0.1, 1e-6, 0, 0) == FD_OK);
    const double d = sqrt(1e-6) / sqrt(0.025 + 1e-6) * 0.5;
    CHECK_CLOSE(v[0], 0.025, 1e-15);
    CHECK_CLOSE(acc[0], 0.1 * d * d, 1e-14);
    CHECK_CLOSE(q[0], 1.0 - d, 1e-15);
    /* weight decay 0.5 with maximize: g' = -0.5 + 0.5*q */
    double q0 = q[0], v0 = v[0], a0 = acc[0];
    CHECK(fd_adadelta_f64(1, one, pq, pv, pa, ph, 0.5, 0.9, 0.1, 1e-6, 0.5, 1) == FD_OK);
    const double g2 = -0.5 + 0.5 * q0, v2 = 0.9 * v0 + 0.1 * g2 * g2;
    const double d2 = sqrt(a0 + 1e-6) / sqrt(v2 + 1e-6) * g2;
    CHECK_CLOSE(v[0], v2, 1e-14);
    CHECK_CLOSE(acc[0], 0.9 * a0 + 0.1 * d2 * d2, 1e-14);
    CHECK_CLOSE(q[0], q0 - 0.5 * d2, 1e-15);
}

/* NAdam and RAdam, one element, float64, against the rule written out by hand */
static void test_nadam_radam_values(void)
{
    double p[1], m[1], v[1], g[1] = {0.5};
    double *pp[1] = {p}, *pm[1] = {m}, *pv[1] = {v};
    const double *pg[1] = {g};
    int64_t sz[1] = {1};
    const double b1 = 0.9, b2 = 0.999, lr = 0.002, eps = 1e-8, psi = 0.004;

    /* NAdam step 1 from mu_product = 1: m = 0.05, v = 0.00025 */
    const double mu = b1 * (1.0 - 0.5 * pow(0.96, psi)), mu1 = b1 * (1.0 - 0.5 * pow(0.96, 2 * psi));
    const double bc2 = 1.0 - b2, s = sqrt(bc2);
    const double sg = lr * (1.0 - mu) / (1.0 - mu) * s, sm = lr * mu1 / (1.0 - mu * mu1) * s;
    p[0] = 1.0; m[0] = 0.0; v[0] = 0.0;
    CHECK(fd_nadam_f64(1, sz, pp, pm, pv, pg, b1, 1.0 - b1, b2, 1.0 - b2, 0.0, 1.0, sg, sm, eps * s,
                       0) == FD_OK);
    CHECK_CLOSE(m[0], 0.05, 1e-15);
    CHECK_CLOSE(v[0], 0.00025, 1e-15);
    /* torch's form: p - lr*(1-mu)/(1-mu)*g/d - lr*mu1/(1-mu*mu1)*m/d, d = sqrt(v/bc2) + eps */
    const double d = sqrt(0.00025 / bc2) + eps;
    CHECK_CLOSE(p[0], 1.0 - lr * 0.5 / d - lr * mu1 / (1.0 - mu * mu1) * 0.05 / d, 1e-14);
    /* maximize and NAdamW decay 0.5: p = 0.5, g = -0.5 */
    p[0] = 1.0; m[0] = 0.0; v[0] = 0.0;
    CHECK(fd_nadam_f64(1, sz, pp, pm, pv, pg, b1, 1.0 - b1, b2, 1.0 - b2, 0.0, 0.5, sg, sm, eps * s,
                       1) == FD_OK);
    CHECK_CLOSE(m[0], -0.05, 1e-15);
    CHECK_CLOSE(p[0], 0.5 + lr * 0.5 / d + lr * mu1 / (1.0 - mu * mu1) * 0.05 / d, 1e-14);
    /* coupled weight decay 1 with p = 1: g' = 1.5 */
    p[0] = 1.0; m[0] = 0.0; v[0] = 0.0;
    CHECK(fd_nadam_f64(1, sz, pp, pm, pv, pg, b1, 1.0 - b1, b2, 1.0 - b2, 1.0, 1.0, sg, sm, eps * s,
                       0) == FD_OK);
    CHECK_CLOSE(m[0], 0.15, 1e-15);
    CHECK_CLOSE(v[0], 0.001 * 2.25, 1e-15);

    /* RAdam step 1 (rho_1 = 1: not rectified): p -= lr/bc1 * m = 0.001/0.1 * 0.05 */
    p[0] = 1.0; m[0] = 0.0; v[0] = 0.0;
    CHECK(fd_radam_f64(1, sz, pp, pm, pv, pg, b1, 1.0 - b1, b2, 1.0 - b2, eps, 0.0, 1.0,
                       0.001 / 0.1, 0, 0) == FD_OK);
    CHECK_CLOSE(m[0], 0.05, 1e-15);
    CHECK_CLOSE(v[0], 0.00025, 1e-15);
    CHECK_CLOSE(p[0], 1.0 - 0.01 * 0.05, 1e-15);
    /* rectified with step_size 0.25: p -= 0.25 * m/(sqrt(v) + eps) */
    p[0] = 1.0; m[0] = 0.0; v[0] = 0.0;
    CHECK(fd_radam_f64(1, sz, pp, pm, pv, pg, b1, 1.0 - b1, b2, 1.0 - b2, eps, 0.0, 1.0, 0.25, 1,
                       0) == FD_OK);
    CHECK_CLOSE(p[0], 1.0 - 0.25 * 0.05 / (sqrt(0.00025) + eps), 1e-14);
    /* errors: a NULL column, a bad scalar; nothing written */
    p[0] = 3.0;
    CHECK(fd_nadam_f64(1, sz, pp, NULL, pv, pg, b1, 1.0 - b1, b2, 1.0 - b2, 0.0, 1.0, sg, sm, eps,
                       0) == FD_ERR_NULL);
    CHECK(fd_radam_f64(1, sz, pp, pm, pv, pg, b1, 0.0, b2, 1.0 - b2, eps, 0.0, 1.0, 0.1, 1, 0) ==
          FD_ERR_ARG);
    CHECK(p[0] == 3.0);
}

static void test_clip_values(void)
{
    float x[3] = {3, -4, 0}, y[1] = {12};
    const float *px[2] = {x, y};
    int64_t sz[2] = {3, 1};
    double out = -1;
    int ok = -1;

    CHECK(fd_norm_pow_sum_f32(2, sz, px, 2.0, &out) == FD_OK);
    CHECK(out == 169.0);
    CHECK(fd_norm_pow_sum_f32(2, sz, px, 1.0, &out) == FD_OK);
    CHECK(out == 19.0);
    CHECK(fd_norm_pow_sum_f32(2, sz, px, INFINITY, &out) == FD_OK);
    CHECK(out == 12.0);
    CHECK(fd_norm_pow_sum_f32(2, sz, px, 3.0, &out) == FD_OK);
    CHECK_CLOSE(out, 27.0 + 64.0 + 1728.0, 1e-15);
    CHECK(fd_norm_pow_sum_f32(0, NULL, NULL, INFINITY, &out) == FD_OK);
    CHECK(out == 0.0);
    CHECK(fd_all_finite_f32(2, sz, px, &ok) == FD_OK);
    CHECK(ok == 1);

    float *wx[2] = {x, y};
    CHECK(fd_scale_f32(2, sz, wx, 0.5) == FD_OK);
    CHECK(x[0] == 1.5f && x[1] == -2.0f && x[2] == 0.0f && y[0] == 6.0f);

    double z[4] = {1, -2, INFINITY, 0};
    const double *pz[1] = {z};
    int64_t sz4[1] = {4};
    CHECK(fd_all_finite_f64(1, sz4, pz, &ok) == FD_OK);
    CHECK(ok == 0);
    CHECK(fd_norm_pow_sum_f64(1, sz4, pz, INFINITY, &out) == FD_OK);
    CHECK(isinf(out));
    z[2] = NAN;
    CHECK(fd_all_finite_f64(1, sz4, pz, &ok) == FD_OK);
    CHECK(ok == 0);
    CHECK(fd_norm_pow_sum_f64(1, sz4, pz, INFINITY, &out) == FD_OK);
    CHECK(isnan(out));
    CHECK(fd_norm_pow_sum_f64(1, sz4, pz, 2.0, &out) == FD_OK);
    CHECK(isnan(out));
}

static void test_stream_values(void)
{
    enum { N = 100003 };
    float *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b), *c = malloc(N * sizeof *c);
    for (int i = 0; i < N; i++) { a[i] = (float)i; b[i] = 1.0f; c[i] = -1.0f; }
    const float *src[2] = {a, b};
    float *dst[2] = {a, c}; /* in place on a, plus a separate output */
    CHECK(fd_stream_f32(N, 2, src, 2, dst) == FD_OK);
    int bad = 0;
    for (int i = 0; i < N; i++) bad += a[i] != (float)i + 1.0f || c[i] != (float)i + 1.0f;
    CHECK(bad == 0);
    CHECK(fd_stream_f32(N, 0, NULL, 1, dst) == FD_OK);
    CHECK(a[0] == 0.0f && a[N - 1] == 0.0f);
    /* more streams than the fused loops take: the block-buffer fallback */
    const float *many[7] = {b, b, b, b, b, b, a};
    float *out5[5] = {c, c, c, c, c};
    CHECK(fd_stream_f32(N, 7, many, 5, out5) == FD_OK); /* a is 0 now: c = 6 */
    bad = 0;
    for (int i = 0; i < N; i++) bad += c[i] != 6.0f;
    CHECK(bad == 0);
    double d[5] = {1, 2, 3, 4, 5}, e[5] = {0};
    const double *sd[1] = {d};
    double *dd[1] = {e};
    CHECK(fd_stream_f64(5, 1, sd, 1, dd) == FD_OK);
    CHECK(e[0] == 1 && e[4] == 5);
    free(a); free(b); free(c);
}

/* ------------------------------------------------------------------ multi-tensor distribution */
/* A table of many tiny tensors and a few large ones, updated with SGD+momentum on 1 and 2 threads
 * and both code paths, checked against a scalar loop in this file; norm_pow_sum must not depend on
 * the thread count. */
static double frand(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(*s >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

static void test_distribution(void)
{
    enum { NT = 3000 };
    int64_t sizes[NT];
    int64_t total = 0;
    for (int i = 0; i < NT; i++) {
        sizes[i] = (i % 1000 == 17) ? 70001 + i : (i % 7); /* zeros, tiny, and ~70k tensors */
        total += sizes[i];
    }
    float *pblock = malloc(total * sizeof(float)), *bblock = malloc(total * sizeof(float));
    float *gblock = malloc(total * sizeof(float)), *ref = malloc(total * sizeof(float));
    float *refb = malloc(total * sizeof(float));
    float *pp[NT], *pb[NT];
    const float *pg[NT];
    int64_t off = 0;
    for (int i = 0; i < NT; i++) {
        pp[i] = pblock + off; pb[i] = bblock + off; pg[i] = gblock + off;
        off += sizes[i];
    }
    uint64_t seed = 42;
    int paths[2] = {FD_PATH_GENERIC, FD_PATH_AVX2_FMA};
    /* grains: the defaults (the ~70k tensors are split), and a small one (pieces of ~1.6k elements
     * that also cut through runs of tiny tensors) */
    int64_t grains[2] = {0, 512};
    for (int pi = 0; pi < 2; pi++) {
        if (fd_set_simd_path(paths[pi]) != FD_OK) continue;
        for (int run = 0; run < 4; run++) {
            int threads = 1 + (run & 1);
            CHECK(fd_set_parallel_grain(grains[run >> 1]) == FD_OK);
            CHECK(fd_set_num_threads(threads) == FD_OK);
            for (int64_t i = 0; i < total; i++) {
                pblock[i] = ref[i] = (float)frand(&seed);
                gblock[i] = (float)frand(&seed);
                bblock[i] = refb[i] = (float)frand(&seed);
            }
            const float lr = 0.1f, mom = 0.9f, omd = 0.75f, wd = 0.01f;
            CHECK(fd_sgd_f32(NT, sizes, pp, pb, pg, 0.1, 0.9, 0.25, 0.01, 0, 0, 0) == FD_OK);
            int64_t bad = 0;
            for (int64_t i = 0; i < total; i++) {
                float gi = gblock[i] + wd * ref[i];
                float bi = refb[i] * mom + omd * gi;
                float pi2 = ref[i] - lr * bi;
                bad += fabsf(pblock[i] - pi2) > 1e-6f * (1 + fabsf(pi2)) ||
                       fabsf(bblock[i] - bi) > 1e-6f * (1 + fabsf(bi));
            }
            CHECK(bad == 0);
#if defined(__x86_64__) || defined(__i386__)
            { /* no multiply-add contraction on either path (nor here): bit-exact with the loop */
                int64_t diff = 0;
                for (int64_t i = 0; i < total; i++) {
                    float gi = gblock[i] + wd * ref[i];
                    float bi = refb[i] * mom + omd * gi;
                    diff += pblock[i] != ref[i] - lr * bi;
                }
                CHECK(diff == 0);
            }
#endif
        }
        /* norm_pow_sum: identical on 1 and 2 threads (small grain: the chunks really are spread
         * over the threads) and with the default grain, and close to a float64 scalar sum */
        double r1, r2, r0, rinf1, rinf2, want = 0;
        for (int64_t i = 0; i < total; i++) want += (double)gblock[i] * gblock[i];
        CHECK(fd_set_parallel_grain(0) == FD_OK);
        CHECK(fd_norm_pow_sum_f32(NT, sizes, pg, 2.0, &r0) == FD_OK);
        CHECK(fd_set_parallel_grain(512) == FD_OK);
        CHECK(fd_set_num_threads(1) == FD_OK);
        CHECK(fd_norm_pow_sum_f32(NT, sizes, pg, 2.0, &r1) == FD_OK);
        CHECK(fd_norm_pow_sum_f32(NT, sizes, pg, INFINITY, &rinf1) == FD_OK);
        CHECK(fd_set_num_threads(2) == FD_OK);
        CHECK(fd_norm_pow_sum_f32(NT, sizes, pg, 2.0, &r2) == FD_OK);
        CHECK(fd_norm_pow_sum_f32(NT, sizes, pg, INFINITY, &rinf2) == FD_OK);
        CHECK(r1 == r2);
        CHECK(r1 == r0);
        CHECK(rinf1 == rinf2);
        CHECK_CLOSE(r1, want, 1e-12);
        int ok = 0;
        gblock[total - 1] = INFINITY;
        CHECK(fd_all_finite_f32(NT, sizes, pg, &ok) == FD_OK);
        CHECK(ok == 0);
        gblock[total - 1] = 0.0f;
        CHECK(fd_all_finite_f32(NT, sizes, pg, &ok) == FD_OK);
        CHECK(ok == 1);
        CHECK(fd_set_parallel_grain(0) == FD_OK);
    }
    fd_set_num_threads(0);
    fd_set_simd_path(-1);
    fd_set_parallel_grain(0);
    free(pblock); free(bblock); free(gblock); free(ref); free(refb);
}

/* LAMB over a table of many tiny tensors and a few that span the kernel's chunks: every tensor
 * gets its own trust ratio (checked against a plain float64 loop here), and the bits do not depend
 * on the thread count, the grain or the code path. */
static void test_lamb_distribution(void)
{
    enum { NT = 2000 };
    int64_t sizes[NT];
    int64_t total = 0;
    for (int i = 0; i < NT; i++) {
        sizes[i] = (i % 500 == 3) ? 90001 + i : (i % 9); /* zeros, tiny, and ~90k tensors */
        total += sizes[i];
    }
    float *p = malloc(total * sizeof(float)), *m = malloc(total * sizeof(float));
    float *v = malloc(total * sizeof(float)), *g = malloc(total * sizeof(float));
    float *p0 = malloc(total * sizeof(float)), *m0 = malloc(total * sizeof(float));
    float *v0 = malloc(total * sizeof(float)), *first = malloc(total * sizeof(float));
    float *pp[NT], *pm[NT], *pv[NT];
    const float *pg[NT];
    int64_t off = 0;
    for (int i = 0; i < NT; i++) {
        pp[i] = p + off; pm[i] = m + off; pv[i] = v + off; pg[i] = g + off;
        off += sizes[i];
    }
    uint64_t seed = 7;
    for (int64_t i = 0; i < total; i++) {
        p0[i] = (float)frand(&seed);
        g[i] = (float)frand(&seed);
        m0[i] = 0.1f * (float)frand(&seed);
        v0[i] = 0.01f * (float)fabs(frand(&seed));
    }
    const double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-6, wd = 0.01;
    const double ibc1 = 1 / (1 - b1 * b1 * b1), ibc2 = 1 / (1 - b2 * b2 * b2); /* step 3 */
    int paths[2] = {FD_PATH_GENERIC, FD_PATH_AVX2_FMA};
    int64_t grains[2] = {0, 512};
    int runs = 0;
    for (int pi = 0; pi < 2; pi++) {
        if (fd_set_simd_path(paths[pi]) != FD_OK) continue;
        for (int run = 0; run < 4; run++) {
            CHECK(fd_set_parallel_grain(grains[run >> 1]) == FD_OK);
            CHECK(fd_set_num_threads(1 + (run & 1)) == FD_OK);
            memcpy(p, p0, total * sizeof(float));
            memcpy(m, m0, total * sizeof(float));
            memcpy(v, v0, total * sizeof(float));
            CHECK(fd_lamb_f32(NT, sizes, pp, pm, pv, pg, lr, b1, 1 - b1, b2, 1 - b2, eps, wd, ibc1,
                              ibc2, 0) == FD_OK);
            if (runs++ == 0) {
                memcpy(first, p, total * sizeof(float));
                /* each tensor against a plain loop (float32 elements, float64 norms) */
                int64_t bad = 0;
                const float fb1 = (float)b1, fc1 = (float)(1 - b1), fb2 = (float)b2;
                const float fc2 = (float)(1 - b2), fibc1 = (float)ibc1, fibc2 = (float)ibc2;
                const float feps = (float)eps, fwd = (float)wd;
                for (int t = 0; t < NT; t++) {
                    const float *q = p0 + (pp[t] - p), *gq = pg[t];
                    const float *mq = m0 + (pp[t] - p), *vq = v0 + (pp[t] - p);
                    double sp = 0, sr = 0;
                    for (int64_t i = 0; i < sizes[t]; i++) {
                        float mi = mq[i] * fb1 + fc1 * gq[i];
                        float vi = vq[i] * fb2 + (fc2 * gq[i]) * gq[i];
                        float ri = (mi * fibc1) / (sqrtf(vi * fibc2) + feps) + fwd * q[i];
                        sp += (double)q[i] * q[i];
                        sr += (double)ri * ri;
                        bad += pm[t][i] != mi || pv[t][i] != vi;
                    }
                    double pn = sqrt(sp), rn = sqrt(sr);
                    float step = (float)(lr * ((pn > 0 && rn > 0) ? pn / rn : 1.0));
                    for (int64_t i = 0; i < sizes[t]; i++) {
                        float mi = pm[t][i], vi = pv[t][i];
                        float ri = (mi * fibc1) / (sqrtf(vi * fibc2) + feps) + fwd * q[i];
                        float want = q[i] - step * ri;
                        bad += fabsf(pp[t][i] - want) > 1e-6f * (1 + fabsf(want));
                    }
                }
                CHECK(bad == 0);
            } else {
                CHECK(memcmp(first, p, total * sizeof(float)) == 0);
            }
        }
    }
    fd_set_num_threads(0);
    fd_set_simd_path(-1);
    fd_set_parallel_grain(0);
    free(p); free(m); free(v); free(g); free(p0); free(m0); free(v0); free(first);
}

static void test_prox_clip_value_noise_values(void)
{
    /* prox: threshold 0.5; thresholded elements are exactly +0.0, NaN and inf pass through */
    double p[8] = {1.0, -1.0, 0.25, -0.25, -0.0, NAN, -INFINITY, 0.5};
    double *pp[1] = {p};
    int64_t sz8[1] = {8};
    CHECK(fd_prox_f64(1, sz8, pp, 0.5) == FD_OK);
    CHECK(p[0] == 0.5 && p[1] == -0.5 && isnan(p[5]) && p[6] == -INFINITY);
    for (int i = 2; i < 5; i++) CHECK(p[i] == 0.0 && !signbit(p[i]));
    CHECK(p[7] == 0.0 && !signbit(p[7]));
    float q[3] = {0.75f, -0.75f, 0.125f};
    float *pq[1] = {q};
    int64_t sz3[1] = {3};
    CHECK(fd_prox_f32(1, sz3, pq, 0.25) == FD_OK);
    CHECK(q[0] == 0.5f && q[1] == -0.5f && q[2] == 0.0f && !signbit(q[2]));
    CHECK(fd_prox_f32(1, sz3, pq, -0.25) == FD_ERR_ARG);

    /* clip_value: torch.clamp_'s order, NaN kept, -0.0 kept */
    float g[9] = {-3, -0.5f, 0, -0.0f, 0.5f, 3, NAN, INFINITY, -INFINITY};
    float *pg[1] = {g};
    int64_t sz9[1] = {9};
    CHECK(fd_clip_value_f32(1, sz9, pg, 1.0) == FD_OK);
    const float want[9] = {-1, -0.5f, 0, -0.0f, 0.5f, 1, 0, 1, -1};
    for (int i = 0; i < 9; i++)
        if (i != 6) CHECK(g[i] == want[i] && signbit(g[i]) == signbit(want[i]));
    CHECK(isnan(g[6]));
    double h[3] = {-3, 2, -0.0};
    double *ph[1] = {h};
    CHECK(fd_clip_value_f64(1, sz3, ph, 0.0) == FD_OK);
    CHECK(h[0] == 0.0 && signbit(h[0]) && h[1] == 0.0 && !signbit(h[1]) && signbit(h[2]));
    CHECK(fd_clip_value_f64(1, sz3, ph, NAN) == FD_ERR_ARG);

    /* noise: known values (backends/numpy_ref/noise.py); seed 0, index 0, step 1 -> the tensor key
     * is the first half of Philox4x32-10's zero-vector answer (0x6627e8d5, 0xe169c58d) */
    double z[5] = {0, 0, 0, 0, 0};
    double *pz[1] = {z};
    int64_t sz5[1] = {5}, idx0[1] = {0};
    CHECK(fd_noise_f64(1, sz5, pz, idx0, 1.0, 0, 1) == FD_OK);
    CHECK_CLOSE(z[0], 1.6282105268991514, 1e-14);
    CHECK_CLOSE(z[1], 2.423377990741089, 1e-14);
    CHECK_CLOSE(z[2], -1.00329631821186, 1e-14);
    CHECK_CLOSE(z[3], -0.00835317992615369, 1e-12);
    CHECK_CLOSE(z[4], -0.10275376507117691, 1e-14);
    /* sigma scales; the same (seed, index, step) gives the same values in a two-tensor table
     * whose second tensor has index 0, and the first tensor (index 1) others */
    double a[5] = {0}, b[5] = {0};
    double *pab[2] = {a, b};
    int64_t sz55[2] = {5, 5}, idx10[2] = {1, 0};
    CHECK(fd_noise_f64(2, sz55, pab, idx10, 0.5, 0, 1) == FD_OK);
    for (int i = 0; i < 5; i++) CHECK_CLOSE(b[i], 0.5 * z[i], 1e-15);
    CHECK(a[0] != b[0] && a[1] != b[1]);
    /* large seed, index and step: the high words are used */
    double w[7] = {0};
    double *pw[1] = {w};
    int64_t sz7[1] = {7}, idxbig[1] = {(int64_t)1 << 40};
    CHECK(fd_noise_f64(1, sz7, pw, idxbig, 1.0, INT64_MAX, (int64_t)1 << 61) == FD_OK);
    CHECK_CLOSE(w[5], -0.34258567349461067, 1e-14);
    CHECK_CLOSE(w[6], -0.8229684596824595, 1e-14);
    /* float32: z rounded to float, then p + sigma*z in float */
    float f[2] = {1.0f, 1.0f};
    float *pf[1] = {f};
    int64_t sz2[1] = {2};
    CHECK(fd_noise_f32(1, sz2, pf, idx0, 1.0, 0, 1) == FD_OK);
    CHECK(f[0] == 1.0f + (float)1.6282105268991514 && f[1] == 1.0f + (float)2.423377990741089);
    /* domain */
    int64_t neg[1] = {-1};
    CHECK(fd_noise_f64(1, sz5, pz, idx0, 1.0, -1, 1) == FD_ERR_ARG);
    CHECK(fd_noise_f64(1, sz5, pz, idx0, 1.0, 0, 0) == FD_ERR_ARG);
    CHECK(fd_noise_f64(1, sz5, pz, neg, 1.0, 0, 1) == FD_ERR_ARG);
    CHECK(fd_noise_f64(1, sz5, pz, NULL, 1.0, 0, 1) == FD_ERR_NULL);
    CHECK(fd_noise_f64(1, sz5, pz, idx0, -1.0, 0, 1) == FD_ERR_ARG);
}

/* Noise, prox and clip_value over a table cut at odd offsets: 1 thread vs 3 threads with a tiny
 * grain (pieces start and end inside pairs of elements) give identical bits. */
static void test_noise_threads(void)
{
    enum { NT = 5 };
    int64_t sizes[NT] = {1, 7, 40001, 3, 20011};
    int64_t index[NT] = {4, 0, 2, 9, 1};
    int64_t total = 0;
    for (int i = 0; i < NT; i++) total += sizes[i];
    float *one = calloc((size_t)total, sizeof(float)), *many = calloc((size_t)total, sizeof(float));
    float *p1[NT], *p2[NT];
    int64_t off = 0;
    for (int i = 0; i < NT; i++) {
        p1[i] = one + off;
        p2[i] = many + off;
        off += sizes[i];
    }
    CHECK(fd_set_num_threads(1) == FD_OK);
    CHECK(fd_noise_f32(NT, sizes, p1, index, 0.3, 77, 5) == FD_OK);
    CHECK(fd_prox_f32(NT, sizes, p1, 0.1) == FD_OK);
    CHECK(fd_clip_value_f32(NT, sizes, p1, 0.5) == FD_OK);
    CHECK(fd_set_num_threads(3) == FD_OK);
    CHECK(fd_set_parallel_grain(101) == FD_OK);
    CHECK(fd_noise_f32(NT, sizes, p2, index, 0.3, 77, 5) == FD_OK);
    CHECK(fd_prox_f32(NT, sizes, p2, 0.1) == FD_OK);
    CHECK(fd_clip_value_f32(NT, sizes, p2, 0.5) == FD_OK);
    CHECK(memcmp(one, many, (size_t)total * sizeof(float)) == 0);
    int zeros = 0, clipped = 0;
    for (int64_t i = 0; i < total; i++) {
        zeros += one[i] == 0.0f;
        clipped += fabsf(one[i]) == 0.5f;
    }
    CHECK(zeros > total / 5 && clipped > total / 40); /* P(|z| <= 1/3) ~ 0.26, P(|z| >= 2) ~ 0.046 */
    fd_set_num_threads(0);
    fd_set_parallel_grain(0);
    free(one);
    free(many);
}

int main(void)
{
    test_info();
    test_errors();
    test_sgd_values();
    test_adam_values();
    test_rmsprop_adagrad_values();
    test_lion_values();
    test_lamb_values();
    test_rprop_values();
    test_adamax_adadelta_values();
    test_lamb_distribution();
    test_nadam_radam_values();
    test_clip_values();
    test_prox_clip_value_noise_values();
    test_noise_threads();
    test_stream_values();
    test_distribution();
    return check_summary();
}

/* test_hardening.c -- C tests of the argument checks that protect embedders: sizes whose
 * sum or product overflows int64 (FD_ERR_SIZE, never signed overflow), the thread-count bound
 * (FD_ERR_ARG above FD_MAX_THREADS), scalars outside each kernel's domain (FD_ERR_ARG, nothing
 * written), misaligned arrays (FD_ERR_ALIGN, nothing read or written), and fork() after a
 * multi-threaded kernel (the child runs the kernels on one thread instead of hanging in libgomp).
 * Prints one line per failure and "N passed, N failed"; exit status 1 on failure.
 */
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fastdescent.h"

#include "fd_check.h"

#define CHECK_RC(expr, want)                                                                    \
    do {                                                                                        \
        int rc_ = (expr);                                                                       \
        if (rc_ == (want)) n_pass++;                                                            \
        else {                                                                                  \
            n_fail++;                                                                           \
            printf("FAIL %s:%d: %s returned %d (%s), expected %d\n", __FILE__, __LINE__, #expr, \
                   rc_, fd_strerror(rc_), (int)(want));                                         \
        }                                                                                       \
    } while (0)

static const double NAN_ = NAN, INF_ = INFINITY;

/* ------------------------------------------------------------------ status codes */
static void test_codes(void)
{
    CHECK(FD_ERR_ALIGN == 6);
    CHECK(strstr(fd_strerror(FD_ERR_ALIGN), "aligned") != NULL);
    CHECK(strcmp(fd_strerror(FD_ERR_ALIGN), fd_strerror(999)) != 0);
}

/* ------------------------------------------------------------------ sizes */
static void test_size_overflow(void)
{
    /* the sum of the sizes is past INT64_MAX: FD_ERR_SIZE before the (NULL) columns are looked at */
    int64_t huge[2] = {INT64_MAX, INT64_MAX};
    int64_t over[2] = {INT64_MAX / 2 + 1, INT64_MAX / 2 + 1};
    float *nul32[2] = {NULL, NULL};
    const float *cnul32[2] = {NULL, NULL};
    double *nul64[2] = {NULL, NULL};
    double out = -1.0;
    int fin = -1;
    CHECK_RC(fd_scale_f32(2, huge, nul32, 0.5), FD_ERR_SIZE);
    CHECK_RC(fd_scale_f64(2, over, nul64, 0.5), FD_ERR_SIZE);
    CHECK_RC(fd_norm_pow_sum_f32(2, huge, cnul32, 2.0, &out), FD_ERR_SIZE);
    CHECK_RC(fd_all_finite_f32(2, over, cnul32, &fin), FD_ERR_SIZE);
    CHECK_RC(fd_sgd_f32(2, huge, nul32, NULL, cnul32, 0.1, 0.0, 0.0, 0.0, 0, 0, 0), FD_ERR_SIZE);
    CHECK_RC(fd_adam_f32(2, over, nul32, nul32, nul32, NULL, cnul32, 0.9, 0.999, 1e-8, 0.0, 1.0,
                         1e-3, 1.0, 0, 0),
             FD_ERR_SIZE);
    CHECK_RC(fd_lion_f32(2, huge, nul32, nul32, cnul32, 1e-4, 0.9, 0.1, 0.99, 0.01, 1.0, 0),
             FD_ERR_SIZE);
    CHECK_RC(fd_lamb_f32(2, over, nul32, nul32, nul32, cnul32, 1e-3, 0.9, 0.1, 0.999, 0.001, 1e-6,
                         0.0, 10.0, 1000.0, 0),
             FD_ERR_SIZE);
    CHECK_RC(fd_rprop_f32(2, huge, nul32, nul32, nul32, cnul32, 0.5, 1.2, 1e-6, 50.0, 0),
             FD_ERR_SIZE);
    CHECK_RC(fd_clip_value_f32(2, huge, nul32, 0.5), FD_ERR_SIZE);
    CHECK_RC(fd_prox_f64(2, over, nul64, 0.5), FD_ERR_SIZE);
    const int64_t idx2[2] = {0, 1};
    CHECK_RC(fd_noise_f32(2, huge, nul32, idx2, 0.5, 0, 1), FD_ERR_SIZE);
    CHECK(out == -1.0 && fin == -1);
    /* a total above 2^59 elements is refused even without overflow; 2^59 itself passes the size
     * check (then the NULL columns are reported) */
    int64_t big[2] = {(int64_t)1 << 58, ((int64_t)1 << 58) + 1};
    int64_t edge[2] = {(int64_t)1 << 58, (int64_t)1 << 58};
    CHECK_RC(fd_scale_f32(2, big, nul32, 0.5), FD_ERR_SIZE);
    CHECK_RC(fd_scale_f32(2, edge, nul32, 0.5), FD_ERR_NULL);

    /* matmul dimension products past INT64_MAX (2^96 wraps to 0 in int64) */
    const int64_t D = (int64_t)1 << 32;
    CHECK_RC(fd_matmul_fwd_f32(1, 1, D, D, D, NULL, NULL, NULL, NULL), FD_ERR_SIZE);
    CHECK_RC(fd_matmul_fwd_f64(D, 1, D, 1, D, NULL, NULL, NULL, NULL), FD_ERR_SIZE);
    CHECK_RC(fd_matmul_bwd_x_f32(1, 1, D, D, D, NULL, NULL, NULL), FD_ERR_SIZE);
    CHECK_RC(fd_matmul_bwd_w_f32(1, 1, D, D, D, NULL, NULL, NULL, NULL), FD_ERR_SIZE);
    CHECK_RC(fd_matmul_bwd_w_f64(D, D, 1, D, D, NULL, NULL, NULL, NULL), FD_ERR_SIZE);
    /* B*M rows too many even though K = N = 0 */
    CHECK_RC(fd_matmul_fwd_f32(D, 1, D, 0, 0, NULL, NULL, NULL, NULL), FD_ERR_SIZE);
    /* still fine: empty products */
    CHECK_RC(fd_matmul_fwd_f32(0, 0, D, D, D, NULL, NULL, NULL, NULL), FD_OK);
    /* cross-entropy R*C past INT64_MAX */
    double loss = -1.0;
    CHECK_RC(fd_xent_fwd_bwd_f32(D, D, NULL, NULL, NULL, 1.0, &loss), FD_ERR_SIZE);
    CHECK(loss == -1.0);
    CHECK_RC(fd_mse_fwd_bwd_f32(INT64_MAX, NULL, NULL, NULL, 1.0, &loss), FD_ERR_SIZE);
    CHECK_RC(fd_act_fwd_f32(INT64_MAX, NULL, NULL, 0), FD_ERR_SIZE);
    CHECK_RC(fd_stream_f32(INT64_MAX, 0, NULL, 0, NULL), FD_ERR_SIZE);
}

/* ------------------------------------------------------------------ threads */
static void test_thread_bound(void)
{
    CHECK(FD_MAX_THREADS == 1024);
    CHECK_RC(fd_set_num_threads(100000), FD_ERR_ARG);
    CHECK_RC(fd_set_num_threads(FD_MAX_THREADS + 1), FD_ERR_ARG);
    CHECK_RC(fd_set_num_threads(2147483647), FD_ERR_ARG);
    CHECK_RC(fd_set_num_threads(FD_MAX_THREADS), FD_OK);
    CHECK(fd_get_num_threads() == (fd_openmp_version() ? FD_MAX_THREADS : 1));
    CHECK_RC(fd_set_num_threads(0), FD_OK);
    CHECK(fd_get_num_threads() >= 1 && fd_get_num_threads() <= FD_MAX_THREADS);
}

/* ------------------------------------------------------------------ scalar domains */
/* One 3-element float32 and float64 table per column; `same` checks nothing was written. */
enum { NE = 3 };
static float p32[NE], b32[NE], m32[NE], v32[NE], w32[NE], g32[NE];
static double p64[NE], b64[NE], m64[NE], v64[NE], w64[NE], g64[NE];
static float *P32[1] = {p32}, *B32[1] = {b32}, *M32[1] = {m32}, *V32[1] = {v32}, *W32[1] = {w32};
static const float *G32[1] = {g32};
static double *P64[1] = {p64}, *B64[1] = {b64}, *M64[1] = {m64}, *V64[1] = {v64}, *W64[1] = {w64};
static const double *G64[1] = {g64};
static const int64_t SZ[1] = {NE};

static void fill(void)
{
    for (int i = 0; i < NE; i++) {
        p32[i] = (float)(p64[i] = 1.0 + i);
        b32[i] = (float)(b64[i] = 0.5);
        m32[i] = (float)(m64[i] = 0.25);
        v32[i] = (float)(v64[i] = 0.125);
        w32[i] = (float)(w64[i] = 0.2);
        g32[i] = (float)(g64[i] = 0.1 * (i + 1));
    }
}

static int untouched(void)
{
    int ok = 1;
    for (int i = 0; i < NE; i++) {
        ok &= p32[i] == (float)(1.0 + i) && p64[i] == 1.0 + i;
        ok &= b32[i] == 0.5f && b64[i] == 0.5 && m32[i] == 0.25f && m64[i] == 0.25;
        ok &= v32[i] == 0.125f && v64[i] == 0.125 && w32[i] == 0.2f && w64[i] == 0.2;
    }
    return ok;
}

static int sgd_both(double lr, double mom, double damp, double wd, int nesterov)
{
    int a = fd_sgd_f32(1, SZ, P32, B32, G32, lr, mom, damp, wd, nesterov, 0, 0);
    int b = fd_sgd_f64(1, SZ, P64, B64, G64, lr, mom, damp, wd, nesterov, 0, 0);
    return a == b ? a : -100;
}

static int adam_both(double b1, double b2, double eps, double wd, double decay, double step,
                     double bc2)
{
    int a = fd_adam_f32(1, SZ, P32, M32, V32, W32, G32, b1, b2, eps, wd, decay, step, bc2, 1, 0);
    int b = fd_adam_f64(1, SZ, P64, M64, V64, W64, G64, b1, b2, eps, wd, decay, step, bc2, 1, 0);
    return a == b ? a : -100;
}

static int rms_both(double lr, double alpha, double eps, double wd, double mom)
{
    int a = fd_rmsprop_f32(1, SZ, P32, V32, M32, B32, G32, lr, alpha, eps, wd, mom, 1, 0);
    int b = fd_rmsprop_f64(1, SZ, P64, V64, M64, B64, G64, lr, alpha, eps, wd, mom, 1, 0);
    return a == b ? a : -100;
}

static int adagrad_both(double clr, double eps, double wd)
{
    int a = fd_adagrad_f32(1, SZ, P32, V32, G32, clr, eps, wd, 0);
    int b = fd_adagrad_f64(1, SZ, P64, V64, G64, clr, eps, wd, 0);
    return a == b ? a : -100;
}

static int nadam_both(double b1, double c1, double b2, double c2, double wd, double decay,
                      double sg, double sm, double eps)
{
    int a = fd_nadam_f32(1, SZ, P32, M32, V32, G32, b1, c1, b2, c2, wd, decay, sg, sm, eps, 0);
    int b = fd_nadam_f64(1, SZ, P64, M64, V64, G64, b1, c1, b2, c2, wd, decay, sg, sm, eps, 0);
    return a == b ? a : -100;
}

static int radam_both(double b1, double c1, double b2, double c2, double eps, double wd,
                      double decay, double step)
{
    int a = fd_radam_f32(1, SZ, P32, M32, V32, G32, b1, c1, b2, c2, eps, wd, decay, step, 1, 0);
    int b = fd_radam_f64(1, SZ, P64, M64, V64, G64, b1, c1, b2, c2, eps, wd, decay, step, 1, 0);
    return a == b ? a : -100;
}

static int adamax_both(double lw, int from_grad, double b2, double eps, double wd, double clr)
{
    int a = fd_adamax_f32(1, SZ, P32, M32, V32, G32, lw, from_grad, b2, eps, wd, clr, 0);
    int b = fd_adamax_f64(1, SZ, P64, M64, V64, G64, lw, from_grad, b2, eps, wd, clr, 0);
    return a == b ? a : -100;
}

static int adadelta_both(double lr, double rho, double omr, double eps, double wd)
{
    int a = fd_adadelta_f32(1, SZ, P32, V32, W32, G32, lr, rho, omr, eps, wd, 0);
    int b = fd_adadelta_f64(1, SZ, P64, V64, W64, G64, lr, rho, omr, eps, wd, 0);
    return a == b ? a : -100;
}

static int rprop_both(double etam, double etap, double smin, double smax)
{
    int a = fd_rprop_f32(1, SZ, P32, M32, V32, G32, etam, etap, smin, smax, 0);
    int b = fd_rprop_f64(1, SZ, P64, M64, V64, G64, etam, etap, smin, smax, 0);
    return a == b ? a : -100;
}

static int lion_both(double lr, double b1, double c1, double b2, double c2, double decay)
{
    int a = fd_lion_f32(1, SZ, P32, M32, G32, lr, b1, c1, b2, c2, decay, 0);
    int b = fd_lion_f64(1, SZ, P64, M64, G64, lr, b1, c1, b2, c2, decay, 0);
    return a == b ? a : -100;
}

static int lamb_both(double lr, double b1, double c1, double b2, double c2, double eps, double wd,
                     double ibc1, double ibc2)
{
    int a = fd_lamb_f32(1, SZ, P32, M32, V32, G32, lr, b1, c1, b2, c2, eps, wd, ibc1, ibc2, 0);
    int b = fd_lamb_f64(1, SZ, P64, M64, V64, G64, lr, b1, c1, b2, c2, eps, wd, ibc1, ibc2, 0);
    return a == b ? a : -100;
}

#define BAD(call)                             \
    do {                                      \
        fill();                               \
        CHECK_RC(call, FD_ERR_ARG);           \
        CHECK(untouched());                   \
    } while (0)
#define GOOD(call)                            \
    do {                                      \
        fill();                               \
        CHECK_RC(call, FD_OK);                \
    } while (0)

static void test_domains(void)
{
    const double bad_real[] = {NAN_, INF_, -INF_};
    /* SGD: lr, momentum, weight_decay finite >= 0; dampening finite; nesterov needs momentum > 0
     * and dampening == 0 */
    GOOD(sgd_both(0.1, 0.9, 0.5, 0.01, 0));
    GOOD(sgd_both(0.0, 0.0, -2.0, 0.0, 0));
    GOOD(sgd_both(0.1, 0.9, 0.0, 0.0, 1));
    BAD(sgd_both(-0.1, 0.9, 0.0, 0.0, 0));
    BAD(sgd_both(0.1, -0.9, 0.0, 0.0, 0));
    BAD(sgd_both(0.1, 0.9, 0.0, -0.01, 0));
    BAD(sgd_both(0.1, 0.9, 0.5, 0.0, 1));
    BAD(sgd_both(0.1, 0.0, 0.0, 0.0, 1));
    for (int k = 0; k < 3; k++) {
        const double x = bad_real[k];
        BAD(sgd_both(x, 0.9, 0.0, 0.0, 0));
        BAD(sgd_both(0.1, x, 0.0, 0.0, 0));
        BAD(sgd_both(0.1, 0.9, x, 0.0, 0));
        BAD(sgd_both(0.1, 0.9, 0.0, x, 0));
    }
    /* Adam: 0 <= betas < 1; eps, wd, step_size finite >= 0; decay finite <= 1; bc2 in (0, 1] */
    GOOD(adam_both(0.9, 0.999, 1e-8, 0.0, 1.0, 1e-2, 0.0316));
    GOOD(adam_both(0.0, 0.0, 0.0, 0.5, -3.0, 0.0, 1.0)); /* decay = 1 - lr*wd < 0: lr*wd > 1 */
    BAD(adam_both(1.5, 0.999, 1e-8, 0.0, 1.0, 1e-2, 0.5)); /* the review's example */
    BAD(adam_both(1.0, 0.999, 1e-8, 0.0, 1.0, 1e-2, 0.5));
    BAD(adam_both(-0.1, 0.999, 1e-8, 0.0, 1.0, 1e-2, 0.5));
    BAD(adam_both(0.9, 1.0, 1e-8, 0.0, 1.0, 1e-2, 0.5));
    BAD(adam_both(0.9, -1e-9, 1e-8, 0.0, 1.0, 1e-2, 0.5));
    BAD(adam_both(0.9, 0.999, -1e-8, 0.0, 1.0, 1e-2, 0.5));
    BAD(adam_both(0.9, 0.999, 1e-8, -0.1, 1.0, 1e-2, 0.5));
    BAD(adam_both(0.9, 0.999, 1e-8, 0.0, 1.5, 1e-2, 0.5));
    BAD(adam_both(0.9, 0.999, 1e-8, 0.0, 1.0, -1e-2, 0.5));
    BAD(adam_both(0.9, 0.999, 1e-8, 0.0, 1.0, 1e-2, 0.0));
    BAD(adam_both(0.9, 0.999, 1e-8, 0.0, 1.0, 1e-2, 1.5));
    for (int k = 0; k < 3; k++) {
        const double x = bad_real[k];
        BAD(adam_both(x, 0.999, 1e-8, 0.0, 1.0, 1e-2, 0.5));
        BAD(adam_both(0.9, x, 1e-8, 0.0, 1.0, 1e-2, 0.5));
        BAD(adam_both(0.9, 0.999, x, 0.0, 1.0, 1e-2, 0.5));
        BAD(adam_both(0.9, 0.999, 1e-8, x, 1.0, 1e-2, 0.5));
        BAD(adam_both(0.9, 0.999, 1e-8, 0.0, x, 1e-2, 0.5));
        BAD(adam_both(0.9, 0.999, 1e-8, 0.0, 1.0, x, 0.5));
        BAD(adam_both(0.9, 0.999, 1e-8, 0.0, 1.0, 1e-2, x));
    }
    /* RMSprop: lr, alpha, eps, weight_decay, momentum finite >= 0 (alpha > 1 accepted, as torch) */
    GOOD(rms_both(0.01, 0.99, 1e-8, 0.1, 0.9));
    GOOD(rms_both(0.0, 1.5, 0.0, 0.0, 0.0));
    BAD(rms_both(-0.01, 0.99, 1e-8, 0.0, 0.0));
    BAD(rms_both(0.01, -0.5, 1e-8, 0.0, 0.0));
    BAD(rms_both(0.01, 0.99, -1e-8, 0.0, 0.0));
    BAD(rms_both(0.01, 0.99, 1e-8, -0.1, 0.0));
    BAD(rms_both(0.01, 0.99, 1e-8, 0.0, -0.9));
    for (int k = 0; k < 3; k++) {
        const double x = bad_real[k];
        BAD(rms_both(x, 0.99, 1e-8, 0.0, 0.0));
        BAD(rms_both(0.01, x, 1e-8, 0.0, 0.0));
        BAD(rms_both(0.01, 0.99, x, 0.0, 0.0));
        BAD(rms_both(0.01, 0.99, 1e-8, x, 0.0));
        BAD(rms_both(0.01, 0.99, 1e-8, 0.0, x));
    }
    /* Adagrad: clr, eps, weight_decay finite >= 0 */
    GOOD(adagrad_both(0.01, 1e-10, 0.1));
    GOOD(adagrad_both(0.0, 0.0, 0.0));
    BAD(adagrad_both(-0.01, 1e-10, 0.0));
    BAD(adagrad_both(0.01, -1e-10, 0.0));
    BAD(adagrad_both(0.01, 1e-10, -0.1));
    /* Rprop: 0 < etaminus < 1 < etaplus; 0 <= step_size_min <= step_size_max; all finite */
    GOOD(rprop_both(0.5, 1.2, 1e-6, 50.0));
    GOOD(rprop_both(1e-300, 1e300, 0.0, 0.0));
    GOOD(rprop_both(0.5, 1.2, 0.25, 0.25));
    BAD(rprop_both(0.0, 1.2, 1e-6, 50.0));
    BAD(rprop_both(1.0, 1.2, 1e-6, 50.0));
    BAD(rprop_both(-0.5, 1.2, 1e-6, 50.0));
    BAD(rprop_both(0.5, 1.0, 1e-6, 50.0));
    BAD(rprop_both(0.5, 0.9, 1e-6, 50.0));
    BAD(rprop_both(0.5, 1.2, -1e-6, 50.0));
    BAD(rprop_both(0.5, 1.2, 1.0, 0.5));
    BAD(rprop_both(0.5, 1.2, 0.0, -1.0));
    for (int k = 0; k < 3; k++) {
        const double x = bad_real[k];
        BAD(rprop_both(x, 1.2, 1e-6, 50.0));
        BAD(rprop_both(0.5, x, 1e-6, 50.0));
        BAD(rprop_both(0.5, 1.2, x, 50.0));
        BAD(rprop_both(0.5, 1.2, 1e-6, x));
    }
    for (int k = 0; k < 3; k++) {
        const double x = bad_real[k];
        BAD(adagrad_both(x, 1e-10, 0.0));
        BAD(adagrad_both(0.01, x, 0.0));
        BAD(adagrad_both(0.01, 1e-10, x));
        /* scale: any finite factor; losses: finite scale */
        BAD(fd_scale_f32(1, SZ, P32, x));
        BAD(fd_scale_f64(1, SZ, P64, x));
        double loss = -1.0;
        BAD(fd_mse_fwd_bwd_f32(NE, p32, m32, v32, x, &loss));
        BAD(fd_mse_fwd_bwd_f64(NE, p64, m64, v64, x, &loss));
        int64_t lab[1] = {1};
        BAD(fd_xent_fwd_bwd_f32(1, NE, p32, m32, lab, x, &loss));
        BAD(fd_xent_fwd_bwd_f64(1, NE, p64, m64, lab, x, &loss));
        CHECK(loss == -1.0);
    }
    /* Lion: lr finite >= 0; 0 <= betas < 1; 0 < 1 - beta <= 1; decay finite <= 1 */
    GOOD(lion_both(1e-4, 0.9, 0.1, 0.99, 0.01, 1.0));
    GOOD(lion_both(0.0, 0.0, 1.0, 0.0, 1.0, -2.0)); /* decay = 1 - lr*wd < 0: lr*wd > 1 */
    BAD(lion_both(-1e-4, 0.9, 0.1, 0.99, 0.01, 1.0));
    BAD(lion_both(1e-4, 1.0, 0.1, 0.99, 0.01, 1.0));
    BAD(lion_both(1e-4, -0.1, 0.1, 0.99, 0.01, 1.0));
    BAD(lion_both(1e-4, 0.9, 0.0, 0.99, 0.01, 1.0));
    BAD(lion_both(1e-4, 0.9, 1.5, 0.99, 0.01, 1.0));
    BAD(lion_both(1e-4, 0.9, 0.1, 1.0, 0.01, 1.0));
    BAD(lion_both(1e-4, 0.9, 0.1, 0.99, -0.01, 1.0));
    BAD(lion_both(1e-4, 0.9, 0.1, 0.99, 0.01, 1.5));
    /* LAMB: lr, eps, wd finite >= 0; 0 <= betas < 1; 0 < 1 - beta <= 1; 1/bias corrections >= 1 */
    GOOD(lamb_both(1e-3, 0.9, 0.1, 0.999, 0.001, 1e-6, 0.01, 10.0, 1000.0));
    GOOD(lamb_both(0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0));
    BAD(lamb_both(-1e-3, 0.9, 0.1, 0.999, 0.001, 1e-6, 0.0, 10.0, 1000.0));
    BAD(lamb_both(1e-3, 1.0, 0.1, 0.999, 0.001, 1e-6, 0.0, 10.0, 1000.0));
    BAD(lamb_both(1e-3, 0.9, 0.0, 0.999, 0.001, 1e-6, 0.0, 10.0, 1000.0));
    BAD(lamb_both(1e-3, 0.9, 0.1, 1.0, 0.001, 1e-6, 0.0, 10.0, 1000.0));
    BAD(lamb_both(1e-3, 0.9, 0.1, 0.999, 1.5, 1e-6, 0.0, 10.0, 1000.0));
    BAD(lamb_both(1e-3, 0.9, 0.1, 0.999, 0.001, -1e-6, 0.0, 10.0, 1000.0));
    BAD(lamb_both(1e-3, 0.9, 0.1, 0.999, 0.001, 1e-6, -0.1, 10.0, 1000.0));
    BAD(lamb_both(1e-3, 0.9, 0.1, 0.999, 0.001, 1e-6, 0.0, 0.5, 1000.0));
    BAD(lamb_both(1e-3, 0.9, 0.1, 0.999, 0.001, 1e-6, 0.0, 10.0, 0.0));
    for (int k = 0; k < 3; k++) {
        const double x = bad_real[k];
        BAD(lion_both(x, 0.9, 0.1, 0.99, 0.01, 1.0));
        BAD(lion_both(1e-4, x, 0.1, 0.99, 0.01, 1.0));
        BAD(lion_both(1e-4, 0.9, x, 0.99, 0.01, 1.0));
        BAD(lion_both(1e-4, 0.9, 0.1, x, 0.01, 1.0));
        BAD(lion_both(1e-4, 0.9, 0.1, 0.99, x, 1.0));
        BAD(lion_both(1e-4, 0.9, 0.1, 0.99, 0.01, x));
        BAD(lamb_both(x, 0.9, 0.1, 0.999, 0.001, 1e-6, 0.0, 10.0, 1000.0));
        BAD(lamb_both(1e-3, x, 0.1, 0.999, 0.001, 1e-6, 0.0, 10.0, 1000.0));
        BAD(lamb_both(1e-3, 0.9, x, 0.999, 0.001, 1e-6, 0.0, 10.0, 1000.0));
        BAD(lamb_both(1e-3, 0.9, 0.1, x, 0.001, 1e-6, 0.0, 10.0, 1000.0));
        BAD(lamb_both(1e-3, 0.9, 0.1, 0.999, x, 1e-6, 0.0, 10.0, 1000.0));
        BAD(lamb_both(1e-3, 0.9, 0.1, 0.999, 0.001, x, 0.0, 10.0, 1000.0));
        BAD(lamb_both(1e-3, 0.9, 0.1, 0.999, 0.001, 1e-6, x, 10.0, 1000.0));
        BAD(lamb_both(1e-3, 0.9, 0.1, 0.999, 0.001, 1e-6, 0.0, x, 1000.0));
        BAD(lamb_both(1e-3, 0.9, 0.1, 0.999, 0.001, 1e-6, 0.0, 10.0, x));
    }
    /* NAdam: 0 <= betas < 1; 1 - betas in (0, 1]; wd, step sizes, eps_scaled finite >= 0; decay
     * finite <= 1 */
    GOOD(nadam_both(0.9, 0.1, 0.999, 1e-3, 0.0, 1.0, 1e-3, 2e-3, 3e-10));
    GOOD(nadam_both(0.0, 1.0, 0.0, 1.0, 0.5, -3.0, 0.0, 0.0, 0.0));
    BAD(nadam_both(1.0, 0.1, 0.999, 1e-3, 0.0, 1.0, 1e-3, 2e-3, 3e-10));
    BAD(nadam_both(0.9, 0.0, 0.999, 1e-3, 0.0, 1.0, 1e-3, 2e-3, 3e-10));
    BAD(nadam_both(0.9, 1.5, 0.999, 1e-3, 0.0, 1.0, 1e-3, 2e-3, 3e-10));
    BAD(nadam_both(0.9, 0.1, -0.1, 1e-3, 0.0, 1.0, 1e-3, 2e-3, 3e-10));
    BAD(nadam_both(0.9, 0.1, 0.999, -1e-3, 0.0, 1.0, 1e-3, 2e-3, 3e-10));
    BAD(nadam_both(0.9, 0.1, 0.999, 1e-3, -0.1, 1.0, 1e-3, 2e-3, 3e-10));
    BAD(nadam_both(0.9, 0.1, 0.999, 1e-3, 0.0, 1.5, 1e-3, 2e-3, 3e-10));
    BAD(nadam_both(0.9, 0.1, 0.999, 1e-3, 0.0, 1.0, -1e-3, 2e-3, 3e-10));
    BAD(nadam_both(0.9, 0.1, 0.999, 1e-3, 0.0, 1.0, 1e-3, -2e-3, 3e-10));
    BAD(nadam_both(0.9, 0.1, 0.999, 1e-3, 0.0, 1.0, 1e-3, 2e-3, -3e-10));
    /* RAdam: the same, with eps and one step size */
    GOOD(radam_both(0.9, 0.1, 0.999, 1e-3, 1e-8, 0.0, 1.0, 1e-3));
    GOOD(radam_both(0.0, 1.0, 0.0, 1.0, 0.0, 0.5, -3.0, 0.0));
    BAD(radam_both(1.0, 0.1, 0.999, 1e-3, 1e-8, 0.0, 1.0, 1e-3));
    BAD(radam_both(0.9, 0.0, 0.999, 1e-3, 1e-8, 0.0, 1.0, 1e-3));
    BAD(radam_both(0.9, 0.1, 1.0, 1e-3, 1e-8, 0.0, 1.0, 1e-3));
    BAD(radam_both(0.9, 0.1, 0.999, 1.5, 1e-8, 0.0, 1.0, 1e-3));
    BAD(radam_both(0.9, 0.1, 0.999, 1e-3, -1e-8, 0.0, 1.0, 1e-3));
    BAD(radam_both(0.9, 0.1, 0.999, 1e-3, 1e-8, -0.1, 1.0, 1e-3));
    BAD(radam_both(0.9, 0.1, 0.999, 1e-3, 1e-8, 0.0, 1.5, 1e-3));
    BAD(radam_both(0.9, 0.1, 0.999, 1e-3, 1e-8, 0.0, 1.0, -1e-3));
    for (int k = 0; k < 3; k++) {
        const double x = bad_real[k];
        BAD(nadam_both(x, 0.1, 0.999, 1e-3, 0.0, 1.0, 1e-3, 2e-3, 3e-10));
        BAD(nadam_both(0.9, x, 0.999, 1e-3, 0.0, 1.0, 1e-3, 2e-3, 3e-10));
        BAD(nadam_both(0.9, 0.1, x, 1e-3, 0.0, 1.0, 1e-3, 2e-3, 3e-10));
        BAD(nadam_both(0.9, 0.1, 0.999, x, 0.0, 1.0, 1e-3, 2e-3, 3e-10));
        BAD(nadam_both(0.9, 0.1, 0.999, 1e-3, x, 1.0, 1e-3, 2e-3, 3e-10));
        BAD(nadam_both(0.9, 0.1, 0.999, 1e-3, 0.0, x, 1e-3, 2e-3, 3e-10));
        BAD(nadam_both(0.9, 0.1, 0.999, 1e-3, 0.0, 1.0, x, 2e-3, 3e-10));
        BAD(nadam_both(0.9, 0.1, 0.999, 1e-3, 0.0, 1.0, 1e-3, x, 3e-10));
        BAD(nadam_both(0.9, 0.1, 0.999, 1e-3, 0.0, 1.0, 1e-3, 2e-3, x));
        BAD(radam_both(x, 0.1, 0.999, 1e-3, 1e-8, 0.0, 1.0, 1e-3));
        BAD(radam_both(0.9, x, 0.999, 1e-3, 1e-8, 0.0, 1.0, 1e-3));
        BAD(radam_both(0.9, 0.1, x, 1e-3, 1e-8, 0.0, 1.0, 1e-3));
        BAD(radam_both(0.9, 0.1, 0.999, x, 1e-8, 0.0, 1.0, 1e-3));
        BAD(radam_both(0.9, 0.1, 0.999, 1e-3, x, 0.0, 1.0, 1e-3));
        BAD(radam_both(0.9, 0.1, 0.999, 1e-3, 1e-8, x, 1.0, 1e-3));
        BAD(radam_both(0.9, 0.1, 0.999, 1e-3, 1e-8, 0.0, x, 1e-3));
        BAD(radam_both(0.9, 0.1, 0.999, 1e-3, 1e-8, 0.0, 1.0, x));
    }
    GOOD(fd_scale_f32(1, SZ, P32, -2.0));
    /* Adamax: 0 < lerp_weight < 0.5 (lerp_from_grad 0) or -0.5 <= lerp_weight <= 0 (1);
     * 0 <= beta2 < 1; eps, weight_decay, clr finite >= 0 */
    GOOD(adamax_both(0.1, 0, 0.999, 1e-8, 0.1, 0.02));
    GOOD(adamax_both(0.0, 1, 0.0, 0.0, 0.0, 0.0));     /* beta1 = 0: m = g exactly */
    GOOD(adamax_both(-0.5, 1, 0.5, 1e-8, 0.0, 0.02));  /* beta1 = 0.5 */
    BAD(adamax_both(0.5, 0, 0.999, 1e-8, 0.0, 0.02));
    BAD(adamax_both(0.0, 0, 0.999, 1e-8, 0.0, 0.02));
    BAD(adamax_both(0.1, 1, 0.999, 1e-8, 0.0, 0.02));
    BAD(adamax_both(-0.6, 1, 0.999, 1e-8, 0.0, 0.02));
    BAD(adamax_both(0.1, 0, 1.0, 1e-8, 0.0, 0.02));
    BAD(adamax_both(0.1, 0, -0.1, 1e-8, 0.0, 0.02));
    BAD(adamax_both(0.1, 0, 0.999, -1e-8, 0.0, 0.02));
    BAD(adamax_both(0.1, 0, 0.999, 1e-8, -0.1, 0.02));
    BAD(adamax_both(0.1, 0, 0.999, 1e-8, 0.0, -0.02));
    /* Adadelta: lr, eps, weight_decay finite >= 0; rho, one_minus_rho in [0, 1] */
    GOOD(adadelta_both(1.0, 0.9, 0.1, 1e-6, 0.1));
    GOOD(adadelta_both(0.0, 1.0, 0.0, 0.0, 0.0));
    GOOD(adadelta_both(0.5, 0.0, 1.0, 1e-6, 0.0));
    BAD(adadelta_both(-1.0, 0.9, 0.1, 1e-6, 0.0));
    BAD(adadelta_both(1.0, 1.5, 0.1, 1e-6, 0.0));
    BAD(adadelta_both(1.0, -0.1, 0.1, 1e-6, 0.0));
    BAD(adadelta_both(1.0, 0.9, 1.1, 1e-6, 0.0));
    BAD(adadelta_both(1.0, 0.9, -0.1, 1e-6, 0.0));
    BAD(adadelta_both(1.0, 0.9, 0.1, -1e-6, 0.0));
    BAD(adadelta_both(1.0, 0.9, 0.1, 1e-6, -0.1));
    for (int k = 0; k < 3; k++) {
        const double x = bad_real[k];
        BAD(adamax_both(x, 0, 0.999, 1e-8, 0.0, 0.02));
        BAD(adamax_both(x, 1, 0.999, 1e-8, 0.0, 0.02));
        BAD(adamax_both(0.1, 0, x, 1e-8, 0.0, 0.02));
        BAD(adamax_both(0.1, 0, 0.999, x, 0.0, 0.02));
        BAD(adamax_both(0.1, 0, 0.999, 1e-8, x, 0.02));
        BAD(adamax_both(0.1, 0, 0.999, 1e-8, 0.0, x));
        BAD(adadelta_both(x, 0.9, 0.1, 1e-6, 0.0));
        BAD(adadelta_both(1.0, x, 0.1, 1e-6, 0.0));
        BAD(adadelta_both(1.0, 0.9, x, 1e-6, 0.0));
        BAD(adadelta_both(1.0, 0.9, 0.1, x, 0.0));
        BAD(adadelta_both(1.0, 0.9, 0.1, 1e-6, x));
    }
    /* prox: threshold finite >= 0; clip_value: finite >= 0; noise: sigma finite >= 0, seed >= 0,
     * step >= 1, every param_index >= 0 */
    const int64_t idx_ok[1] = {3}, idx_neg[1] = {-2};
    GOOD(fd_prox_f32(1, SZ, P32, 0.0));
    GOOD(fd_prox_f64(1, SZ, P64, 0.5));
    GOOD(fd_clip_value_f32(1, SZ, P32, 0.0));
    GOOD(fd_noise_f32(1, SZ, P32, idx_ok, 0.0, 0, 1));
    GOOD(fd_noise_f64(1, SZ, P64, idx_ok, 1.0, INT64_MAX, INT64_MAX));
    BAD(fd_prox_f32(1, SZ, P32, -0.5));
    BAD(fd_prox_f64(1, SZ, P64, -1e-300));
    BAD(fd_clip_value_f32(1, SZ, P32, -1.0));
    BAD(fd_clip_value_f64(1, SZ, P64, -0.5));
    BAD(fd_noise_f32(1, SZ, P32, idx_ok, -1.0, 0, 1));
    BAD(fd_noise_f64(1, SZ, P64, idx_ok, 1.0, -1, 1));
    BAD(fd_noise_f64(1, SZ, P64, idx_ok, 1.0, 0, 0));
    BAD(fd_noise_f64(1, SZ, P64, idx_ok, 1.0, 0, -5));
    BAD(fd_noise_f32(1, SZ, P32, idx_neg, 1.0, 0, 1));
    for (int k = 0; k < 3; k++) {
        const double x = bad_real[k];
        BAD(fd_prox_f32(1, SZ, P32, x));
        BAD(fd_prox_f64(1, SZ, P64, x));
        BAD(fd_clip_value_f32(1, SZ, P32, x));
        BAD(fd_clip_value_f64(1, SZ, P64, x));
        BAD(fd_noise_f32(1, SZ, P32, idx_ok, x, 0, 1));
        BAD(fd_noise_f64(1, SZ, P64, idx_ok, x, 0, 1));
    }
    fill();
    CHECK_RC(fd_noise_f32(1, SZ, P32, NULL, 1.0, 0, 1), FD_ERR_NULL);
    CHECK(untouched());
    /* the scalars are checked even for an empty table */
    const int64_t zero[1] = {0};
    CHECK_RC(fd_adam_f32(1, zero, P32, M32, V32, NULL, G32, 1.5, 0.999, 1e-8, 0.0, 1.0, 1e-3, 1.0,
                         0, 0),
             FD_ERR_ARG);
}

/* ------------------------------------------------------------------ alignment */
static void test_alignment(void)
{
    /* 8-byte aligned storage; +1 byte is misaligned for every element type */
    static double store64[6][16];
    char *raw[6];
    for (int k = 0; k < 6; k++) {
        for (int i = 0; i < 16; i++) store64[k][i] = 0.5;
        raw[k] = (char *)store64[k] + 1;
    }
    unsigned char before[sizeof store64];
    memcpy(before, store64, sizeof store64);
    const int64_t sizes[2] = {4, 3};
    double out = -1.0;
    int fin = -1;

    for (int mis = 0; mis < 2; mis++) { /* the misaligned tensor is the first or the second */
        float *a32[2], *b32_[2], *c32[2], *d32[2];
        double *a64[2], *b64_[2], *c64[2], *d64[2];
        for (int t = 0; t < 2; t++) {
            int off = t == mis ? 1 : 0;
            a32[t] = (float *)((char *)store64[0] + 64 * t + off);
            b32_[t] = (float *)((char *)store64[1] + 64 * t + off);
            c32[t] = (float *)((char *)store64[2] + 64 * t + off);
            d32[t] = (float *)((char *)store64[3] + 64 * t + off);
            a64[t] = (double *)((char *)store64[0] + 64 * t + off * 4); /* 4: aligned for float only */
            b64_[t] = (double *)((char *)store64[1] + 64 * t + off * 4);
            c64[t] = (double *)((char *)store64[2] + 64 * t + off * 4);
            d64[t] = (double *)((char *)store64[3] + 64 * t + off * 4);
        }
        const float *const *g32c = (const float *const *)d32;
        const double *const *g64c = (const double *const *)d64;
        CHECK_RC(fd_sgd_f32(2, sizes, a32, b32_, g32c, 0.1, 0.9, 0.0, 0.0, 0, 0, 0), FD_ERR_ALIGN);
        CHECK_RC(fd_sgd_f64(2, sizes, a64, b64_, g64c, 0.1, 0.9, 0.0, 0.0, 0, 0, 0), FD_ERR_ALIGN);
        CHECK_RC(fd_adam_f32(2, sizes, a32, b32_, c32, NULL, g32c, 0.9, 0.999, 1e-8, 0.0, 1.0, 1e-3,
                             1.0, 0, 0),
                 FD_ERR_ALIGN);
        CHECK_RC(fd_adam_f64(2, sizes, a64, b64_, c64, NULL, g64c, 0.9, 0.999, 1e-8, 0.0, 1.0, 1e-3,
                             1.0, 0, 0),
                 FD_ERR_ALIGN);
        CHECK_RC(fd_rmsprop_f32(2, sizes, a32, b32_, NULL, NULL, g32c, 0.01, 0.99, 1e-8, 0.0, 0.0,
                                0, 0),
                 FD_ERR_ALIGN);
        CHECK_RC(fd_rmsprop_f64(2, sizes, a64, b64_, NULL, NULL, g64c, 0.01, 0.99, 1e-8, 0.0, 0.0,
                                0, 0),
                 FD_ERR_ALIGN);
        CHECK_RC(fd_nadam_f32(2, sizes, a32, b32_, c32, g32c, 0.9, 0.1, 0.999, 1e-3, 0.0, 1.0,
                              1e-3, 1e-3, 1e-10, 0),
                 FD_ERR_ALIGN);
        CHECK_RC(fd_nadam_f64(2, sizes, a64, b64_, c64, g64c, 0.9, 0.1, 0.999, 1e-3, 0.0, 1.0,
                              1e-3, 1e-3, 1e-10, 0),
                 FD_ERR_ALIGN);
        CHECK_RC(fd_radam_f32(2, sizes, a32, b32_, c32, g32c, 0.9, 0.1, 0.999, 1e-3, 1e-8, 0.0, 1.0,
                              1e-3, 1, 0),
                 FD_ERR_ALIGN);
        CHECK_RC(fd_radam_f64(2, sizes, a64, b64_, c64, g64c, 0.9, 0.1, 0.999, 1e-3, 1e-8, 0.0, 1.0,
                              1e-3, 1, 0),
                 FD_ERR_ALIGN);
        CHECK_RC(fd_adagrad_f32(2, sizes, a32, b32_, g32c, 0.01, 1e-10, 0.0, 0), FD_ERR_ALIGN);
        CHECK_RC(fd_adagrad_f64(2, sizes, a64, b64_, g64c, 0.01, 1e-10, 0.0, 0), FD_ERR_ALIGN);
        CHECK_RC(fd_lion_f32(2, sizes, a32, b32_, g32c, 1e-4, 0.9, 0.1, 0.99, 0.01, 1.0, 0),
                 FD_ERR_ALIGN);
        CHECK_RC(fd_lion_f64(2, sizes, a64, b64_, g64c, 1e-4, 0.9, 0.1, 0.99, 0.01, 1.0, 0),
                 FD_ERR_ALIGN);
        CHECK_RC(fd_lamb_f32(2, sizes, a32, b32_, c32, g32c, 1e-3, 0.9, 0.1, 0.999, 0.001, 1e-6,
                             0.0, 10.0, 1000.0, 0),
                 FD_ERR_ALIGN);
        CHECK_RC(fd_lamb_f64(2, sizes, a64, b64_, c64, g64c, 1e-3, 0.9, 0.1, 0.999, 0.001, 1e-6,
                             0.0, 10.0, 1000.0, 0),
                 FD_ERR_ALIGN);
        CHECK_RC(fd_rprop_f32(2, sizes, a32, b32_, c32, g32c, 0.5, 1.2, 1e-6, 50.0, 0),
                 FD_ERR_ALIGN);
        CHECK_RC(fd_rprop_f64(2, sizes, a64, b64_, c64, g64c, 0.5, 1.2, 1e-6, 50.0, 0),
                 FD_ERR_ALIGN);
        CHECK_RC(fd_adamax_f32(2, sizes, a32, b32_, c32, g32c, 0.1, 0, 0.999, 1e-8, 0.0, 2e-2, 0),
                 FD_ERR_ALIGN);
        CHECK_RC(fd_adamax_f64(2, sizes, a64, b64_, c64, g64c, 0.1, 0, 0.999, 1e-8, 0.0, 2e-2, 0),
                 FD_ERR_ALIGN);
        CHECK_RC(fd_adadelta_f32(2, sizes, a32, b32_, c32, g32c, 1.0, 0.9, 0.1, 1e-6, 0.0, 0),
                 FD_ERR_ALIGN);
        CHECK_RC(fd_adadelta_f64(2, sizes, a64, b64_, c64, g64c, 1.0, 0.9, 0.1, 1e-6, 0.0, 0),
                 FD_ERR_ALIGN);
        CHECK_RC(fd_scale_f32(2, sizes, a32, 0.5), FD_ERR_ALIGN);
        CHECK_RC(fd_scale_f64(2, sizes, a64, 0.5), FD_ERR_ALIGN);
        CHECK_RC(fd_norm_pow_sum_f32(2, sizes, g32c, 2.0, &out), FD_ERR_ALIGN);
        CHECK_RC(fd_norm_pow_sum_f64(2, sizes, g64c, 2.0, &out), FD_ERR_ALIGN);
        CHECK_RC(fd_all_finite_f32(2, sizes, g32c, &fin), FD_ERR_ALIGN);
        CHECK_RC(fd_all_finite_f64(2, sizes, g64c, &fin), FD_ERR_ALIGN);
        CHECK_RC(fd_clip_value_f32(2, sizes, a32, 0.5), FD_ERR_ALIGN);
        CHECK_RC(fd_clip_value_f64(2, sizes, a64, 0.5), FD_ERR_ALIGN);
        CHECK_RC(fd_prox_f32(2, sizes, a32, 0.5), FD_ERR_ALIGN);
        CHECK_RC(fd_prox_f64(2, sizes, a64, 0.5), FD_ERR_ALIGN);
        const int64_t idx2[2] = {0, 1};
        CHECK_RC(fd_noise_f32(2, sizes, a32, idx2, 0.5, 0, 1), FD_ERR_ALIGN);
        CHECK_RC(fd_noise_f64(2, sizes, a64, idx2, 0.5, 0, 1), FD_ERR_ALIGN);
    }
    CHECK(out == -1.0 && fin == -1);

    /* an empty tensor's pointer is never dereferenced: not checked */
    {
        const int64_t sz0[1] = {0};
        float *e32[1] = {(float *)raw[0]};
        CHECK_RC(fd_scale_f32(1, sz0, e32, 0.5), FD_OK);
    }
    /* misaligned pointer arrays, sizes arrays and out pointers */
    {
        static int64_t sz_store[4] = {0, 3, 0, 0};
        const int64_t *sz_mis = (const int64_t *)((char *)sz_store + 4);
        float *ok32[1] = {(float *)store64[0]};
        static void *ptr_store[3];
        ptr_store[0] = store64[0];
        ptr_store[1] = store64[0];
        float *const *col_mis = (float *const *)((char *)ptr_store + 4);
        const int64_t n3[1] = {3};
        CHECK_RC(fd_scale_f32(1, sz_mis, ok32, 0.5), FD_ERR_ALIGN);
        CHECK_RC(fd_scale_f32(1, n3, col_mis, 0.5), FD_ERR_ALIGN);
        double *out_mis = (double *)((char *)store64[5] + 4);
        int *fin_mis = (int *)((char *)store64[5] + 1);
        CHECK_RC(fd_norm_pow_sum_f32(1, n3, (const float *const *)ok32, 2.0, out_mis), FD_ERR_ALIGN);
        CHECK_RC(fd_all_finite_f32(1, n3, (const float *const *)ok32, fin_mis), FD_ERR_ALIGN);
        const int64_t *idx_mis = (const int64_t *)((char *)sz_store + 4); /* a misaligned int64 */
        CHECK_RC(fd_noise_f32(1, n3, ok32, idx_mis, 0.5, 0, 1), FD_ERR_ALIGN);
    }

    /* array kernels */
    float *f0 = (float *)store64[0], *f1 = (float *)store64[1], *f2 = (float *)store64[2];
    float *fm = (float *)raw[3];
    double *d0 = store64[0], *d1 = store64[1], *d2 = store64[2];
    double *dm = (double *)((char *)store64[3] + 4);
    double loss = -1.0;
    CHECK_RC(fd_matmul_fwd_f32(1, 1, 2, 2, 2, fm, f1, f2, NULL), FD_ERR_ALIGN);
    CHECK_RC(fd_matmul_fwd_f32(1, 1, 2, 2, 2, f0, fm, f2, NULL), FD_ERR_ALIGN);
    CHECK_RC(fd_matmul_fwd_f32(1, 1, 2, 2, 2, f0, f1, fm, NULL), FD_ERR_ALIGN);
    CHECK_RC(fd_matmul_fwd_f32(1, 1, 2, 2, 2, f0, f1, f2, fm), FD_ERR_ALIGN);
    CHECK_RC(fd_matmul_fwd_f64(1, 1, 2, 2, 2, d0, d1, d2, dm), FD_ERR_ALIGN);
    CHECK_RC(fd_matmul_bwd_x_f32(1, 1, 2, 2, 2, f0, fm, f2), FD_ERR_ALIGN);
    CHECK_RC(fd_matmul_bwd_x_f64(1, 1, 2, 2, 2, dm, d1, d2), FD_ERR_ALIGN);
    CHECK_RC(fd_matmul_bwd_w_f32(1, 1, 2, 2, 2, f0, fm, f1, f2), FD_ERR_ALIGN);
    CHECK_RC(fd_matmul_bwd_w_f64(1, 1, 2, 2, 2, d0, NULL, dm, d2), FD_ERR_ALIGN);
    CHECK_RC(fd_act_fwd_f32(4, f0, fm, 1), FD_ERR_ALIGN);
    CHECK_RC(fd_act_fwd_f64(4, dm, d0, 1), FD_ERR_ALIGN);
    CHECK_RC(fd_act_bwd_f32(4, f0, f1, fm, f2, 0), FD_ERR_ALIGN);
    CHECK_RC(fd_act_bwd_f64(4, d0, d1, d2, dm, 1), FD_ERR_ALIGN);
    CHECK_RC(fd_mse_fwd_bwd_f32(4, f0, fm, f2, 1.0, &loss), FD_ERR_ALIGN);
    CHECK_RC(fd_mse_fwd_bwd_f64(4, d0, d1, dm, 1.0, &loss), FD_ERR_ALIGN);
    {
        static int64_t lab_store[4] = {0, 0, 0, 0};
        const int64_t *lab_mis = (const int64_t *)((char *)lab_store + 4);
        CHECK_RC(fd_xent_fwd_bwd_f32(2, 2, f0, f1, lab_mis, 1.0, &loss), FD_ERR_ALIGN);
        CHECK_RC(fd_xent_fwd_bwd_f64(2, 2, d0, dm, lab_store, 1.0, &loss), FD_ERR_ALIGN);
    }
    {
        const float *src[2] = {f1, fm};
        float *dst[1] = {f0};
        CHECK_RC(fd_stream_f32(4, 2, src, 1, dst), FD_ERR_ALIGN);
        const double *srcd[1] = {d1};
        double *dstd[1] = {dm};
        CHECK_RC(fd_stream_f64(4, 1, srcd, 1, dstd), FD_ERR_ALIGN);
    }
    CHECK(loss == -1.0);
    CHECK(memcmp(before, store64, sizeof store64) == 0);
}

/* ------------------------------------------------------------------ fused step */
/* One Linear 2 -> 2 (with bias), rows = 1, mse loss; nparams = 6 (w then b). */
static int fused_call(float *x, double loss_scale, double beta1, double *loss)
{
    static float param[6], m[6], v[6], grad[6], act[2], dact[2], target[2];
    for (int i = 0; i < 6; i++) param[i] = 0.1f * (float)(i + 1), m[i] = v[i] = grad[i] = 0.0f;
    target[0] = 1.0f, target[1] = -1.0f;
    int64_t desc[4] = {0, 2, 2, 0};
    float *w[1] = {param}, *b[1] = {param + 4}, *dw[1] = {grad}, *db[1] = {grad + 4};
    float *a[1] = {act}, *da[1] = {dact};
    return fd_mlp_step_f32(1, desc, w, b, dw, db, a, da, 1, x, 1, NULL, target, loss_scale, 6,
                           param, m, v, NULL, grad, dact, 2, beta1, 0.999, 1e-8, 0.0, 1.0, 1e-3,
                           0.0316, 0, 0, loss);
}

static void test_fused(void)
{
    static double xs[2] = {0.0, 0.0};
    float *x = (float *)xs;
    x[0] = 0.5f, x[1] = -0.25f;
    double loss = -1.0;
    CHECK_RC(fused_call(x, 0.5, 0.9, &loss), FD_OK);
    CHECK(loss > 0.0);
    loss = -1.0;
    CHECK_RC(fused_call(x, 0.5, 1.5, &loss), FD_ERR_ARG);
    CHECK_RC(fused_call(x, NAN_, 0.9, &loss), FD_ERR_ARG);
    CHECK_RC(fused_call((float *)((char *)xs + 1), 0.5, 0.9, &loss), FD_ERR_ALIGN);
    CHECK(loss == -1.0);
    /* widths whose products overflow */
    int64_t desc[4] = {0, (int64_t)1 << 40, (int64_t)1 << 40, 0};
    float *w[1] = {x}, *b[1] = {NULL}, *dw[1] = {x}, *db[1] = {NULL}, *a[1] = {x}, *da[1] = {x};
    CHECK_RC(fd_mlp_step_f32(1, desc, w, b, dw, db, a, da, (int64_t)1 << 40, x, 1, NULL, x, 1.0, 0,
                             NULL, NULL, NULL, NULL, NULL, x, 0, 0.9, 0.999, 1e-8, 0.0, 1.0, 1e-3,
                             0.5, 0, 0, &loss),
             FD_ERR_SIZE);
}

/* The same layer with fd_mlp_step_sgd: the fused step equals the separate kernels (forward, mse,
 * backward, fd_sgd) bit for bit; bad scalars / a missing momentum buffer write nothing. */
static int fused_sgd_call(float *param, float *buf, float *grad, double lr, double momentum,
                          int first, double *loss)
{
    static float act[2], dact[2], target[2] = {1.0f, -1.0f};
    static const float x[2] = {0.5f, -0.25f};
    int64_t desc[4] = {0, 2, 2, 0};
    float *w[1] = {param}, *b[1] = {param + 4}, *dw[1] = {grad}, *db[1] = {grad + 4};
    float *a[1] = {act}, *da[1] = {dact};
    return fd_mlp_step_sgd_f32(1, desc, w, b, dw, db, a, da, 1, x, 1, NULL, target, 0.5, 6, param,
                               buf, grad, dact, 2, lr, momentum, 0.0, 0.0, 0, 0, first, loss);
}

static void test_fused_sgd(void)
{
    float p[6], buf[6], g[6], pr[6], bufr[6], gr[6], y[2], dy[2];
    static const float x[2] = {0.5f, -0.25f}, target[2] = {1.0f, -1.0f};
    for (int i = 0; i < 6; i++) p[i] = pr[i] = 0.1f * (float)(i + 1), buf[i] = bufr[i] = 0.0f;
    for (int step = 0; step < 3; step++) {
        double loss = -1.0, lref = -2.0;
        CHECK_RC(fused_sgd_call(p, buf, g, 0.1, 0.9, step == 0, &loss), FD_OK);
        /* reference: the separate kernels, in the model's order */
        memset(gr, 0, sizeof gr);
        memset(dy, 0, sizeof dy);
        CHECK_RC(fd_matmul_fwd_f32(1, 1, 1, 2, 2, y, x, pr, pr + 4), FD_OK);
        CHECK_RC(fd_mse_fwd_bwd_f32(2, dy, y, target, 0.5, &lref), FD_OK);
        CHECK_RC(fd_matmul_bwd_w_f32(1, 1, 1, 2, 2, gr, gr + 4, x, dy), FD_OK);
        float *P[1] = {pr}, *B[1] = {bufr};
        const float *G[1] = {gr};
        const int64_t sz[1] = {6};
        CHECK_RC(fd_sgd_f32(1, sz, P, B, G, 0.1, 0.9, 0.0, 0.0, 0, 0, step == 0), FD_OK);
        CHECK(loss == lref);
        CHECK(memcmp(p, pr, sizeof p) == 0 && memcmp(buf, bufr, sizeof buf) == 0 &&
              memcmp(g, gr, sizeof g) == 0);
    }
    double loss = -1.0;
    memcpy(pr, p, sizeof p);
    memcpy(bufr, buf, sizeof buf);
    CHECK_RC(fused_sgd_call(p, buf, g, -0.1, 0.9, 0, &loss), FD_ERR_ARG);     /* lr < 0 */
    CHECK_RC(fused_sgd_call(p, NULL, g, 0.1, 0.9, 0, &loss), FD_ERR_NULL);    /* no buffer */
    CHECK(loss == -1.0);
    CHECK(memcmp(p, pr, sizeof p) == 0 && memcmp(buf, bufr, sizeof buf) == 0);
    CHECK_RC(fused_sgd_call(p, NULL, g, 0.1, 0.0, 0, &loss), FD_OK); /* momentum 0: none needed */
}

/* ------------------------------------------------------------------ fork */
/* Adam over n elements with a parallel grain of 1 (a team of 2+ threads when OpenMP is on). */
static int adam_run(float *p, float *m, float *v, const float *g, int64_t n)
{
    float *P[1] = {p}, *M[1] = {m}, *V[1] = {v};
    const float *G[1] = {g};
    const int64_t sz[1] = {n};
    return fd_adam_f32(1, sz, P, M, V, NULL, G, 0.9, 0.999, 1e-8, 0.0, 1.0, 1e-3, 0.0316, 0, 0);
}

static void test_fork(void)
{
    enum { N = 1 << 16 };
    static float p[N], m[N], v[N], g[N], pr[N], mr[N], vr[N];
    for (int i = 0; i < N; i++) p[i] = pr[i] = (float)urand(), g[i] = (float)urand(), m[i] = mr[i] = v[i] = vr[i] = 0;
    CHECK_RC(fd_set_num_threads(1), FD_OK);
    CHECK_RC(adam_run(pr, mr, vr, g, N), FD_OK); /* reference, one thread */
    CHECK_RC(fd_set_num_threads(4), FD_OK);
    CHECK_RC(fd_set_parallel_grain(1), FD_OK);
    CHECK_RC(adam_run(p, m, v, g, N), FD_OK); /* starts the OpenMP team in the parent */
    CHECK(memcmp(p, pr, sizeof p) == 0);
    for (int i = 0; i < N; i++) p[i] = pr[i], m[i] = mr[i], v[i] = vr[i];
    CHECK_RC(adam_run(pr, mr, vr, g, N), FD_OK); /* second step in the parent: the expected result */

    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(30); /* a hung child dies instead of hanging the test forever */
        int ok = fd_get_num_threads() == 1 || !fd_openmp_version();
        ok &= adam_run(p, m, v, g, N) == FD_OK;
        ok &= memcmp(p, pr, sizeof p) == 0 && memcmp(v, vr, sizeof v) == 0;
        /* the matmul engine and the reductions in the child too */
        static float x[64 * 64], w[64 * 64], y[64 * 64];
        for (int i = 0; i < 64 * 64; i++) x[i] = (float)urand(), w[i] = (float)urand();
        ok &= fd_matmul_fwd_f32(1, 1, 64, 64, 64, y, x, w, NULL) == FD_OK;
        double s = 0.0;
        const float *G[1] = {g};
        const int64_t sz[1] = {N};
        ok &= fd_norm_pow_sum_f32(1, sz, G, 2.0, &s) == FD_OK && s > 0.0;
        /* and a grandchild */
        pid_t pid2 = fork();
        if (pid2 == 0) {
            alarm(30);
            _exit(adam_run(p, m, v, g, N) == FD_OK ? 0 : 1);
        }
        int st2 = 0;
        ok &= pid2 > 0 && waitpid(pid2, &st2, 0) == pid2 && WIFEXITED(st2) && WEXITSTATUS(st2) == 0;
        _exit(ok ? 0 : 1);
    }
    CHECK(pid > 0);
    int status = 0, done = 0;
    for (int i = 0; i < 600 && !done; i++) { /* up to 60 s */
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) done = 1;
        else {
            struct timespec ts = {0, 100 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    if (!done) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        printf("FAIL %s:%d: the forked child hung in a kernel\n", __FILE__, __LINE__);
        n_fail++;
    } else {
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    /* the parent keeps its threads */
    CHECK(fd_get_num_threads() == (fd_openmp_version() ? 4 : 1));
    CHECK_RC(fd_set_parallel_grain(0), FD_OK);
    CHECK_RC(fd_set_num_threads(0), FD_OK);
}

int main(void)
{
    test_codes();
    test_size_overflow();
    test_thread_bound();
    test_domains();
    test_alignment();
    test_fused();
    test_fused_sgd();
    test_fork();
    return check_summary();
}

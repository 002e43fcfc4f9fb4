/* test_mixed.c -- fd_mixed_step, fd_grads_finite and the 8-bit helpers through the C ABI alone (the
 * Python tests compare them bit for bit with the NumPy reference; these run under the sanitizers):
 * argument errors leave everything untouched, a float32 master follows fd_adam_f32 exactly, the
 * parameter is the master rounded to nearest, results do not depend on the thread count or on the
 * SIMD path, stochastic rounding accumulates small updates, 8-bit state reads back within its bound.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fastdescent.h"
#include "fd_check.h"

#define N0 3000
#define N1 777
#define NT 2

static uint16_t bf16_rne(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

static float bf16_value(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

static const double ADAM_SC[9] = {0.9, 0.999, 1e-8, 0.0, 1.0, 1e-2, 1.0, 0, 0};

/* Adam on bf16 parameters with a master copy and int8 moments, against fd_adam_f32 on the master
 * (the moments differ, so only step 1 is compared bit for bit; later steps within tolerance). */
static void test_master_follows_fp32(void)
{
    int64_t sizes[NT] = {N0, N1};
    static uint16_t p0[N0], p1[N1];
    static float m0[N0], m1[N1], g0[N0], g1[N1], ref0[N0], ref1[N1];
    static float e0[N0], e1[N1], v0[N0], v1[N1], re0[N0], re1[N1], rv0[N0], rv1[N1];
    for (int i = 0; i < N0; i++) {
        m0[i] = ref0[i] = (float)urand();
        p0[i] = bf16_rne(m0[i]);
        g0[i] = (float)urand() * 1e-2f;
    }
    for (int i = 0; i < N1; i++) {
        m1[i] = ref1[i] = (float)urand();
        p1[i] = bf16_rne(m1[i]);
        g1[i] = (float)urand();
    }
    void *param[NT] = {p0, p1};
    float *master[NT] = {m0, m1};
    const void *grad[NT] = {g0, g1};
    int8_t gcodes[NT] = {FD_STORE_F32, FD_STORE_F32};
    void *state[3 * NT] = {e0, e1, v0, v1, NULL, NULL};
    int32_t scodes[3] = {FD_STORE_F32, FD_STORE_F32, FD_STORE_ABSENT};
    int64_t index[NT] = {0, 1};
    CHECK(fd_mixed_step(FD_RULE_ADAM, NT, sizes, param, FD_STORE_BF16, master, grad, gcodes, state,
                        NULL, scodes, index, 7, 1, 0, 1.0, ADAM_SC, 9) == FD_OK);
    float *rp[NT] = {ref0, ref1}, *rm[NT] = {re0, re1}, *rv[NT] = {rv0, rv1};
    const float *rg[NT] = {g0, g1};
    memset(re0, 0, sizeof re0);
    memset(re1, 0, sizeof re1);
    memset(rv0, 0, sizeof rv0);
    memset(rv1, 0, sizeof rv1);
    CHECK(fd_adam_f32(NT, sizes, rp, rm, rv, NULL, rg, 0.9, 0.999, 1e-8, 0.0, 1.0, 1e-2, 1.0, 0, 0) ==
          FD_OK);
    CHECK(memcmp(m0, ref0, sizeof m0) == 0 && memcmp(m1, ref1, sizeof m1) == 0);
    CHECK(memcmp(e0, re0, sizeof e0) == 0 && memcmp(v1, rv1, sizeof v1) == 0);
    int ok = 1;
    for (int i = 0; i < N0; i++) ok &= p0[i] == bf16_rne(m0[i]);
    for (int i = 0; i < N1; i++) ok &= p1[i] == bf16_rne(m1[i]);
    CHECK(ok);
}

/* bad arguments: an error, nothing written */
static void test_errors(void)
{
    int64_t sizes[1] = {300};
    static uint16_t p[300], p_before[300];
    static float g[300], e[300], v[300];
    for (int i = 0; i < 300; i++) {
        p[i] = bf16_rne((float)urand());
        g[i] = 1.0f;
    }
    memcpy(p_before, p, sizeof p);
    void *param[1] = {p};
    const void *grad[1] = {g};
    int8_t gcodes[1] = {FD_STORE_F32};
    void *state[3] = {e, v, NULL};
    int32_t scodes[3] = {FD_STORE_BF16, FD_STORE_F32, FD_STORE_ABSENT};
    int64_t index[1] = {0};
    double sc[9];
    memcpy(sc, ADAM_SC, sizeof sc);
#define STEP(rule, pc, sc_, nsc, gs) \
    fd_mixed_step(rule, 1, sizes, param, pc, NULL, grad, gcodes, state, NULL, scodes, index, 1, 1, \
                  1, gs, sc_, nsc)
    CHECK(STEP(7, FD_STORE_BF16, sc, 9, 1.0) == FD_ERR_ARG);            /* unknown rule */
    CHECK(STEP(FD_RULE_ADAM, 9, sc, 9, 1.0) == FD_ERR_ARG);             /* unknown code */
    CHECK(STEP(FD_RULE_ADAM, FD_STORE_BF16, sc, 8, 1.0) == FD_ERR_ARG); /* scalar count */
    CHECK(STEP(FD_RULE_ADAM, FD_STORE_BF16, sc, 9, 0.0) == FD_ERR_ARG); /* grad_scale */
    CHECK(STEP(FD_RULE_ADAM, FD_STORE_BF16, sc, 9, NAN) == FD_ERR_ARG);
    sc[0] = 1.0; /* beta1 */
    CHECK(STEP(FD_RULE_ADAM, FD_STORE_BF16, sc, 9, 1.0) == FD_ERR_ARG);
    sc[0] = 0.9;
    sc[7] = 1; /* amsgrad needs max_exp_avg_sq */
    CHECK(STEP(FD_RULE_ADAM, FD_STORE_BF16, sc, 9, 1.0) == FD_ERR_ARG);
    sc[7] = 0;
    scodes[0] = FD_STORE_Q8S; /* 8-bit without scales */
    CHECK(STEP(FD_RULE_ADAM, FD_STORE_BF16, sc, 9, 1.0) == FD_ERR_NULL);
    scodes[0] = FD_STORE_BF16;
    gcodes[0] = FD_STORE_F16; /* a float16 gradient for a bfloat16 parameter */
    CHECK(STEP(FD_RULE_ADAM, FD_STORE_BF16, sc, 9, 1.0) == FD_ERR_ARG);
    gcodes[0] = FD_STORE_F32;
    index[0] = -1;
    CHECK(STEP(FD_RULE_ADAM, FD_STORE_BF16, sc, 9, 1.0) == FD_ERR_ARG);
    index[0] = 0;
    param[0] = (char *)p + 1; /* misaligned */
    CHECK(STEP(FD_RULE_ADAM, FD_STORE_BF16, sc, 9, 1.0) == FD_ERR_ALIGN);
    param[0] = p;
    float *master[1] = {g}; /* a master copy of float32 parameters */
    CHECK(fd_mixed_step(FD_RULE_ADAM, 1, sizes, param, FD_STORE_F32, master, grad, gcodes, state,
                        NULL, scodes, index, 1, 1, 0, 1.0, sc, 9) == FD_ERR_ARG);
    CHECK(memcmp(p, p_before, sizeof p) == 0);
    CHECK(STEP(FD_RULE_ADAM, FD_STORE_BF16, sc, 9, 1.0) == FD_OK);
    CHECK(memcmp(p, p_before, sizeof p) != 0);
#undef STEP
}

/* SGD, lr 1, on a bfloat16 1.0 receiving 1000 updates of -1e-4 (p = p - 1e-4): ~0.9 with stochastic
 * rounding, unchanged to nearest; the same bits with 1 and 2 threads and either SIMD path. */
static void test_stochastic_rounding(void)
{
    enum { N = 4096 };
    static uint16_t p[4][N];
    static float g[N];
    for (int i = 0; i < N; i++) g[i] = 1e-4f;
    const double sc[7] = {1.0, 0.0, 0.0, 0.0, 0, 0, 1};
    int64_t sizes[1] = {N};
    int8_t gcodes[1] = {FD_STORE_F32};
    int32_t scodes[3] = {FD_STORE_ABSENT, FD_STORE_ABSENT, FD_STORE_ABSENT};
    int64_t index[1] = {3};
    const void *grad[1] = {g};
    for (int r = 0; r < 4; r++) {
        int sr = r != 3;
        fd_set_num_threads(r == 1 ? 2 : 1);
        fd_set_parallel_grain(r == 1 ? 256 : 0);
        if (r == 2) fd_set_simd_path(FD_PATH_GENERIC);
        for (int i = 0; i < N; i++) p[r][i] = 0x3F80; /* 1.0 */
        void *param[1] = {p[r]};
        for (int t = 1; t <= 1000; t++)
            CHECK(fd_mixed_step(FD_RULE_SGD, 1, sizes, param, FD_STORE_BF16, NULL, grad, gcodes,
                                NULL, NULL, scodes, index, 11, (uint64_t)t, sr, 1.0, sc, 7) == FD_OK);
        fd_set_simd_path(-1);
    }
    fd_set_num_threads(0);
    fd_set_parallel_grain(0);
    double mean = 0.0;
    for (int i = 0; i < N; i++) mean += bf16_value(p[0][i]);
    mean /= N;
    CHECK(mean > 0.891 && mean < 0.909);
    CHECK(memcmp(p[0], p[1], sizeof p[0]) == 0);
    CHECK(memcmp(p[0], p[2], sizeof p[0]) == 0);
    int same = 1;
    for (int i = 0; i < N; i++) same &= p[3][i] == 0x3F80;
    CHECK(same);
}

/* 8-bit helpers: relative error <= 2^-4 above the map's normal range, special blocks */
static void test_q8(void)
{
    enum { N = 1000 };
    static float x[N], y[N];
    static uint8_t codes[N];
    float scales[4];
    for (int code = FD_STORE_Q8S; code <= FD_STORE_Q8U; code++) {
        for (int i = 0; i < N; i++) {
            double u = urand();
            x[i] = (float)(code == FD_STORE_Q8U ? fabs(u) : u);
        }
        x[300] = NAN;
        for (int i = 512; i < 768; i++) x[i] = 0.0f;
        CHECK(fd_q8_quantize(N, x, code, codes, scales) == FD_OK);
        CHECK(fd_q8_dequantize(N, codes, scales, code, y) == FD_OK);
        CHECK(isnan(scales[1]) && isnan(y[256]) && isnan(y[511]));
        CHECK(scales[2] == 0.0f && y[600] == 0.0f);
        int ok = 1;
        for (int i = 0; i < 256; i++) {
            double a = fabs((double)x[i]);
            if (a >= scales[0] * 1.875 * 0x1p-14 / 1.875)
                ok &= fabs((double)y[i] - x[i]) <= a * 0x1p-4 * (1 + 0x1p-20);
        }
        CHECK(ok);
    }
    CHECK(fd_q8_quantize(N, x, FD_STORE_BF16, codes, scales) == FD_ERR_ARG);
    CHECK(fd_q8_quantize(-1, x, FD_STORE_Q8S, codes, scales) == FD_ERR_SIZE);
    CHECK(fd_q8_dequantize(N, codes, NULL, FD_STORE_Q8S, y) == FD_ERR_NULL);
}

static void test_grads_finite(void)
{
    enum { N = 40000 };
    static float g[N];
    static uint16_t h[300];
    for (int i = 0; i < N; i++) g[i] = (float)urand();
    for (int i = 0; i < 300; i++) h[i] = 0x3C00; /* float16 1.0 */
    int64_t sizes[2] = {N, 300};
    const void *grad[2] = {g, h};
    int8_t codes[2] = {FD_STORE_F32, FD_STORE_F16};
    int out = -1;
    CHECK(fd_grads_finite(2, sizes, grad, codes, &out) == FD_OK && out == 1);
    h[299] = 0x7C00; /* +inf */
    CHECK(fd_grads_finite(2, sizes, grad, codes, &out) == FD_OK && out == 0);
    codes[1] = FD_STORE_BF16; /* 0x7C00 is a finite bfloat16 */
    CHECK(fd_grads_finite(2, sizes, grad, codes, &out) == FD_OK && out == 1);
    g[N - 1] = NAN;
    CHECK(fd_grads_finite(2, sizes, grad, codes, &out) == FD_OK && out == 0);
    codes[1] = FD_STORE_Q8S;
    CHECK(fd_grads_finite(2, sizes, grad, codes, &out) == FD_ERR_ARG);
}

int main(void)
{
    test_master_follows_fp32();
    test_errors();
    test_stochastic_rounding();
    test_q8();
    test_grads_finite();
    return check_summary();
}

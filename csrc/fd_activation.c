/* fd_activation.c -- elementwise activations of the dense layers, forward and backward (contract
 * rows act_fwd, act_bwd).
 *
 * Shapes: n elements in every array (any logical shape, C-contiguous).
 *   fwd  y = f(x)                y may be x (in place)
 *   bwd  dx += dy * f'(x)        using y = f(x) where cheaper
 * kind (enum below): 0 relu, 1 tanh, 2 sigmoid, 3 gelu (exact, erf-based, torch's default).
 *
 * Per element, in the element type T (float32: the exp / tanh / erf of fd_nn_vmath.h, within 3 ulp,
 * 8 lanes at a time on the AVX2+FMA path; float64: libm):
 *   relu     y = x < 0 ? 0 : x  (NaN propagates)       f' = x > 0 ? 1 : 0
 *   tanh     y = tanh(x)                               f' = 1 - y*y
 *   sigmoid  y = (x < 0 ? e : 1) / (1 + e),            f' = y * (1 - y)
 *            e = exp(-|x|)  (no overflow; tiny results for x << 0 keep their relative accuracy)
 *   gelu     y = x * 0.5 * (1 + erf(x * sqrt(1/2)))    f' = 0.5 * (1 + erf(x * sqrt(1/2)))
 *                                                           + x * exp(-x*x/2) / sqrt(2 pi)
 * (gelu's 1 + erf cancels for x << 0 exactly as torch's formula does: absolute error ~ eps |x|.)
 * Threads: fd_run_segments over the n elements (contiguous ranges, one per thread). The AVX2 float32
 * path runs tails through the same vector code (masked loads and stores), so every element gets the
 * same bits whatever the thread split.
 * Errors: FD_ERR_SIZE (n < 0 or above FD_MAX_ELEMS), FD_ERR_NULL (NULL array with n > 0),
 * FD_ERR_ALIGN (an array not aligned to its element type), FD_ERR_ARG (unknown kind).
 */
#ifndef FD_T /* ------------------------------------------------------------ untyped part */
#include <math.h>

#include "fd_internal.h"
#include "fd_nn_vmath.h"

static int act_check(int64_t n, int kind)
{
    if (n < 0 || n > FD_MAX_ELEMS) return FD_ERR_SIZE;
    if (kind < FD_ACT_RELU || kind > FD_ACT_GELU) return FD_ERR_ARG;
    return FD_OK;
}

/* out: y (fwd) or dx (bwd); fy = f(x) (bwd) */
typedef struct {
    void *out;
    const void *x, *dy, *fy;
    int kind;
} act_ctx;

#define ACT_RSQRT2 0.70710678118654752440
#define ACT_RSQRT2PI 0.39894228040143267794

#if FD_X86_DISPATCH
/* float32, AVX2+FMA: 8 elements per step, the tail through masked loads / stores */
FD_TARGET_AVX2 static inline __m256i act_tail_mask(int64_t rem)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)rem), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

FD_TARGET_AVX2 static inline __m256 act_fwd8(__m256 x, int kind)
{
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    switch (kind) {
    case FD_ACT_RELU: return _mm256_blendv_ps(x, zero, _mm256_cmp_ps(x, zero, _CMP_LT_OQ));
    case FD_ACT_TANH: return fd_vtanhf8(x);
    case FD_ACT_SIGMOID: {
        __m256 e = fd_vexpf8(_mm256_or_ps(x, _mm256_set1_ps(-0.0f))); /* exp(-|x|) */
        __m256 num = _mm256_blendv_ps(one, e, _mm256_cmp_ps(x, zero, _CMP_LT_OQ));
        return _mm256_div_ps(num, _mm256_add_ps(one, e));
    }
    default: {
        __m256 e = fd_verff8(_mm256_mul_ps(x, _mm256_set1_ps((float)ACT_RSQRT2)));
        return _mm256_mul_ps(_mm256_mul_ps(x, _mm256_set1_ps(0.5f)), _mm256_add_ps(one, e));
    }
    }
}

/* dx + dy * f'(x) */
FD_TARGET_AVX2 static inline __m256 act_bwd8(__m256 dx, __m256 dy, __m256 x, __m256 y, int kind)
{
    const __m256 one = _mm256_set1_ps(1.0f), half = _mm256_set1_ps(0.5f);
    switch (kind) {
    case FD_ACT_RELU:
        return _mm256_add_ps(dx, _mm256_and_ps(dy, _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GT_OQ)));
    case FD_ACT_TANH: return _mm256_fmadd_ps(dy, _mm256_fnmadd_ps(y, y, one), dx);
    case FD_ACT_SIGMOID: return _mm256_fmadd_ps(dy, _mm256_mul_ps(y, _mm256_sub_ps(one, y)), dx);
    default: {
        __m256 e = fd_verff8(_mm256_mul_ps(x, _mm256_set1_ps((float)ACT_RSQRT2)));
        __m256 cdf = _mm256_mul_ps(half, _mm256_add_ps(one, e));
        __m256 g = fd_vexpf8(_mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(-0.5f), x), x));
        __m256 pdf = _mm256_mul_ps(g, _mm256_set1_ps((float)ACT_RSQRT2PI));
        return _mm256_fmadd_ps(dy, _mm256_fmadd_ps(x, pdf, cdf), dx);
    }
    }
}

FD_TARGET_AVX2 static void act_fwd_seg_f32_vec(const void *ctx, int64_t t, int64_t off, int64_t len)
{
    (void)t;
    const act_ctx *c = (const act_ctx *)ctx;
    float *y = (float *)c->out + off; /* may alias x */
    const float *x = (const float *)c->x + off;
    const int kind = c->kind;
    int64_t i = 0;
    for (; i + 8 <= len; i += 8) _mm256_storeu_ps(y + i, act_fwd8(_mm256_loadu_ps(x + i), kind));
    if (i < len) {
        __m256i m = act_tail_mask(len - i);
        _mm256_maskstore_ps(y + i, m, act_fwd8(_mm256_maskload_ps(x + i, m), kind));
    }
}

FD_TARGET_AVX2 static void act_bwd_seg_f32_vec(const void *ctx, int64_t t, int64_t off, int64_t len)
{
    (void)t;
    const act_ctx *c = (const act_ctx *)ctx;
    float *dx = (float *)c->out + off;
    const float *dy = (const float *)c->dy + off;
    /* relu and gelu read x, tanh and sigmoid read y (the other may be NULL): read only what is used */
    const int kind = c->kind, use_x = kind == FD_ACT_RELU || kind == FD_ACT_GELU;
    const float *v = (const float *)(use_x ? c->x : c->fy) + off;
    int64_t i = 0;
    for (; i + 8 <= len; i += 8) {
        __m256 a = _mm256_loadu_ps(v + i);
        _mm256_storeu_ps(dx + i, act_bwd8(_mm256_loadu_ps(dx + i), _mm256_loadu_ps(dy + i), a, a, kind));
    }
    if (i < len) {
        __m256i m = act_tail_mask(len - i);
        __m256 a = _mm256_maskload_ps(v + i, m);
        _mm256_maskstore_ps(dx + i, m, act_bwd8(_mm256_maskload_ps(dx + i, m),
                                                _mm256_maskload_ps(dy + i, m), a, a, kind));
    }
}
#endif /* FD_X86_DISPATCH */

#define FD_TYPED_FILE "fd_activation.c"
#include "fd_typed.h"

#else /* ------------------------------------------------------------------- typed part (FD_T) */

/* float: the approximations of fd_nn_vmath.h (the scalar twins of the AVX2 path); double: libm */
#define ACT_TANH_FN(v) (sizeof(FD_T) == 4 ? (FD_T)fd_vtanhf((float)(v)) : (FD_T)tanh((double)(v)))
#define ACT_EXP_FN(v) (sizeof(FD_T) == 4 ? (FD_T)fd_vexpf((float)(v)) : (FD_T)exp((double)(v)))
#define ACT_ERF_FN(v) (sizeof(FD_T) == 4 ? (FD_T)fd_verff((float)(v)) : (FD_T)erf((double)(v)))

FD_INLINE void FD_BODY(act_fwd_seg)(const void *ctx, int64_t t, int64_t off, int64_t len)
{
    (void)t;
    const act_ctx *c = (const act_ctx *)ctx;
    FD_T *y = (FD_T *)c->out + off; /* may alias x: no restrict */
    const FD_T *x = (const FD_T *)c->x + off;
    const FD_T half = (FD_T)0.5, rsqrt2 = (FD_T)ACT_RSQRT2;
    switch (c->kind) {
    case FD_ACT_RELU:
        for (int64_t i = 0; i < len; i++) {
            FD_T v = x[i];
            y[i] = v < 0 ? (FD_T)0 : v;
        }
        break;
    case FD_ACT_TANH:
        for (int64_t i = 0; i < len; i++) y[i] = ACT_TANH_FN(x[i]);
        break;
    case FD_ACT_SIGMOID:
        for (int64_t i = 0; i < len; i++) {
            FD_T v = x[i], e = ACT_EXP_FN(-FD_FABS(v));
            y[i] = (v < 0 ? e : FD_ONE) / (FD_ONE + e);
        }
        break;
    default: /* FD_ACT_GELU */
        for (int64_t i = 0; i < len; i++) {
            FD_T v = x[i];
            y[i] = v * half * (FD_ONE + ACT_ERF_FN(v * rsqrt2));
        }
        break;
    }
}

FD_INLINE void FD_BODY(act_bwd_seg)(const void *ctx, int64_t t, int64_t off, int64_t len)
{
    (void)t;
    const act_ctx *c = (const act_ctx *)ctx;
    FD_T *FD_RESTRICT dx = (FD_T *)c->out + off;
    const FD_T *FD_RESTRICT dy = (const FD_T *)c->dy + off;
    const FD_T half = (FD_T)0.5, rsqrt2 = (FD_T)ACT_RSQRT2, rsqrt2pi = (FD_T)ACT_RSQRT2PI;
    switch (c->kind) {
    case FD_ACT_RELU: {
        const FD_T *FD_RESTRICT x = (const FD_T *)c->x + off;
        for (int64_t i = 0; i < len; i++) dx[i] += x[i] > 0 ? dy[i] : (FD_T)0;
        break;
    }
    case FD_ACT_TANH: {
        const FD_T *FD_RESTRICT y = (const FD_T *)c->fy + off;
        for (int64_t i = 0; i < len; i++) dx[i] += dy[i] * (FD_ONE - y[i] * y[i]);
        break;
    }
    case FD_ACT_SIGMOID: {
        const FD_T *FD_RESTRICT y = (const FD_T *)c->fy + off;
        for (int64_t i = 0; i < len; i++) dx[i] += dy[i] * (y[i] * (FD_ONE - y[i]));
        break;
    }
    default: { /* FD_ACT_GELU */
        const FD_T *FD_RESTRICT x = (const FD_T *)c->x + off;
        for (int64_t i = 0; i < len; i++) {
            FD_T v = x[i];
            FD_T cdf = half * (FD_ONE + ACT_ERF_FN(v * rsqrt2));
            FD_T pdf = ACT_EXP_FN(-half * v * v) * rsqrt2pi;
            dx[i] += dy[i] * (cdf + v * pdf);
        }
        break;
    }
    }
}

FD_MULTIVERSION(FD_S(act_fwd_seg), (const void *ctx, int64_t t, int64_t off, int64_t len),
                (ctx, t, off, len))
FD_MULTIVERSION(FD_S(act_bwd_seg), (const void *ctx, int64_t t, int64_t off, int64_t len),
                (ctx, t, off, len))

#undef ACT_TANH_FN
#undef ACT_EXP_FN
#undef ACT_ERF_FN

/* elements per thread before going parallel: transcendental kinds are ~10x heavier than relu */
#define ACT_PAR_MIN(kind) ((kind) == FD_ACT_RELU ? FD_PAR_MIN_LIGHT : FD_PAR_MIN_HEAVY / 2)

/* defines fd_act_fwd_f32 and fd_act_fwd_f64 (FD_S appends the type suffix) */
int FD_S(fd_act_fwd)(int64_t n, FD_T *y, const FD_T *x, int kind)
{
    FD_CHECK(act_check(n, kind));
    if (n == 0) return FD_OK;
    if (!y || !x) return FD_ERR_NULL;
    if (!fd_aligned(y, sizeof(FD_T)) || !fd_aligned(x, sizeof(FD_T))) return FD_ERR_ALIGN;
    act_ctx c = {y, x, NULL, NULL, kind};
    fd_seg_fn fn = FD_PICK(FD_S(act_fwd_seg));
#if FD_X86_DISPATCH
    if (sizeof(FD_T) == 4 && fd_avx2_active()) fn = act_fwd_seg_f32_vec;
#endif
    fd_run_segments(1, &n, n, ACT_PAR_MIN(kind), fn, &c);
    return FD_OK;
}

/* defines fd_act_bwd_f32 and fd_act_bwd_f64 (FD_S appends the type suffix) */
int FD_S(fd_act_bwd)(int64_t n, FD_T *dx, const FD_T *dy, const FD_T *x, const FD_T *y, int kind)
{
    FD_CHECK(act_check(n, kind));
    if (n == 0) return FD_OK;
    if (!dx || !dy) return FD_ERR_NULL;
    if ((kind == FD_ACT_RELU || kind == FD_ACT_GELU) && !x) return FD_ERR_NULL;
    if ((kind == FD_ACT_TANH || kind == FD_ACT_SIGMOID) && !y) return FD_ERR_NULL;
    if (!fd_aligned(dx, sizeof(FD_T)) || !fd_aligned(dy, sizeof(FD_T)) ||
        !fd_aligned(x, sizeof(FD_T)) || !fd_aligned(y, sizeof(FD_T)))
        return FD_ERR_ALIGN;
    act_ctx c = {dx, x, dy, y, kind};
    fd_seg_fn fn = FD_PICK(FD_S(act_bwd_seg));
#if FD_X86_DISPATCH
    if (sizeof(FD_T) == 4 && fd_avx2_active()) fn = act_bwd_seg_f32_vec;
#endif
    fd_run_segments(1, &n, n, kind == FD_ACT_GELU ? ACT_PAR_MIN(kind) : FD_PAR_MIN_LIGHT, fn, &c);
    return FD_OK;
}

#undef ACT_PAR_MIN

#endif /* FD_T */

/* fd_adam.c -- Adam / AdamW, one fused pass per element.
 *
 * Shapes: a table of `ntensors` tensors, tensor i has sizes[i] elements in every column:
 *   param[i], exp_avg[i], exp_avg_sq[i]        written
 *   max_exp_avg_sq[i]                          written (amsgrad only; the column may be NULL otherwise)
 *   grad[i]                                    read
 * Scalars (float64 in, rounded once to the element type T): beta1, beta2, eps, weight_decay (coupled;
 * 0 for AdamW), decay (= 1 - lr*wd for AdamW, 1 for Adam), step_size (= lr/bc1),
 * bias_correction2_sqrt (= sqrt(bc2)); flags amsgrad, maximize. Domain (FD_ERR_ARG otherwise, as
 * optim.Adam and its derived scalars): 0 <= beta1, beta2 < 1; eps, weight_decay, step_size finite
 * and >= 0; decay finite and <= 1; 0 < bias_correction2_sqrt <= 1.
 *
 * Per element, in the NumPy reference's order (backends/numpy_ref/adam.py):
 *   g = maximize ? -g : g
 *   p = p * decay                          (exact when decay == 1, so it is always applied)
 *   g = g + weight_decay * p               (only if weight_decay != 0)
 *   m = m * beta1 + (1 - beta1) * g
 *   v = v * beta2 + ((1 - beta2) * g) * g
 *   vmax = max(vmax, v), NaN-propagating   (amsgrad; then used in place of v)
 *   p = p - step_size * (m / (sqrt(v) / bias_correction2_sqrt + eps))
 */
#ifndef FD_T /* ------------------------------------------------------------ untyped part */
#include "fd_internal.h"
#include "fd_subnormal.h"

FD_EXACT_FP

/* The scalars' domain (optim.Adam's checks, and what adam_scalars derives from them). */
int fd_adam_check_scalars(double beta1, double beta2, double eps, double weight_decay, double decay,
                          double step_size, double bias_correction2_sqrt)
{
    FD_REQUIRE(fd_unit(beta1) && fd_unit(beta2));
    FD_REQUIRE(fd_nonneg(eps) && fd_nonneg(weight_decay) && fd_nonneg(step_size));
    FD_REQUIRE(fd_finite(decay) && decay <= 1.0);
    FD_REQUIRE(bias_correction2_sqrt > 0.0 && bias_correction2_sqrt <= 1.0);
    return FD_OK;
}

#define FD_TYPED_FILE "fd_adam.c"
#include "fd_typed.h"

#else /* ------------------------------------------------------------------- typed part (FD_T) */

typedef struct {
    FD_T *const *p;
    FD_T *const *m;
    FD_T *const *v;
    FD_T *const *vmax;
    const FD_T *const *g;
    FD_T gsign, decay, wd, beta1, omb1, beta2, omb2, bc2, eps, step;
    int wd_on, amsgrad;
} FD_S(adam_ctx);

FD_INLINE void FD_S(adam_loop)(int64_t n, FD_T *FD_RESTRICT p, FD_T *FD_RESTRICT m,
                               FD_T *FD_RESTRICT v, FD_T *FD_RESTRICT vmax,
                               const FD_T *FD_RESTRICT g, const FD_S(adam_ctx) *c, const int wd_on,
                               const int ams)
{
    const FD_S(fd_signmask) neg = c->gsign < 0 ? FD_S(FD_SIGNBIT) : 0;
    const FD_T decay = c->decay, wd = c->wd, b1 = c->beta1, c1 = c->omb1;
    const FD_T b2 = c->beta2, c2 = c->omb2, bc2 = c->bc2, eps = c->eps, step = c->step;
    for (int64_t i = 0; i < n; i++) {
        FD_T gi = FD_S(fd_flip)(g[i], neg); /* maximize: -g */
        FD_T pi = p[i] * decay;
        if (wd_on) gi = gi + wd * pi;
        FD_T mi = m[i] * b1 + c1 * gi;
        FD_T vi = v[i] * b2 + (c2 * gi) * gi;
        m[i] = mi;
        v[i] = vi;
        if (ams) {
            FD_T a = vmax[i];
            vi = ((a > vi) | (a != a)) ? a : vi;
            vmax[i] = vi;
        }
        FD_T d = FD_SQRT(vi) / bc2 + eps;
        p[i] = pi - step * (mi / d);
    }
}

FD_INLINE void FD_BODY(adam_seg)(const void *ctx, int64_t t, int64_t off, int64_t len)
{
    const FD_S(adam_ctx) *c = (const FD_S(adam_ctx) *)ctx;
    FD_T *p = c->p[t] + off, *m = c->m[t] + off, *v = c->v[t] + off;
    const FD_T *g = c->g[t] + off;
    if (c->amsgrad) {
        FD_T *vmax = c->vmax[t] + off;
        if (c->wd_on) FD_S(adam_loop)(len, p, m, v, vmax, g, c, 1, 1);
        else FD_S(adam_loop)(len, p, m, v, vmax, g, c, 0, 1);
    } else {
        if (c->wd_on) FD_S(adam_loop)(len, p, m, v, NULL, g, c, 1, 0);
        else FD_S(adam_loop)(len, p, m, v, NULL, g, c, 0, 0);
    }
}

/* The element-type scalars of ctx c (everything but the column pointers). */
static void FD_S(adam_fill)(FD_S(adam_ctx) *c, double beta1, double beta2, double eps,
                            double weight_decay, double decay, double step_size,
                            double bias_correction2_sqrt, int amsgrad, int maximize)
{
    c->gsign = maximize ? -FD_ONE : FD_ONE;
    c->decay = (FD_T)decay;
    c->wd = (FD_T)weight_decay;
    c->beta1 = (FD_T)beta1;
    c->omb1 = (FD_T)(1.0 - beta1);
    c->beta2 = (FD_T)beta2;
    c->omb2 = (FD_T)(1.0 - beta2);
    c->bc2 = (FD_T)bias_correction2_sqrt;
    c->eps = (FD_T)eps;
    c->step = (FD_T)step_size;
    c->wd_on = weight_decay != 0.0;
    c->amsgrad = amsgrad != 0;
}

#if FD_IS_F32
/* The mixed-precision step's span (fd_internal.h): state columns exp_avg, exp_avg_sq,
 * max_exp_avg_sq. */
FD_INLINE void adam_span_body(const void *ctx, int64_t n, float *p, const float *g, float *s0,
                              float *s1, float *s2)
{
    const adam_ctx_f32 *c = (const adam_ctx_f32 *)ctx;
    if (c->amsgrad) {
        if (c->wd_on) adam_loop_f32(n, p, s0, s1, s2, g, c, 1, 1);
        else adam_loop_f32(n, p, s0, s1, s2, g, c, 0, 1);
    } else {
        if (c->wd_on) adam_loop_f32(n, p, s0, s1, NULL, g, c, 1, 0);
        else adam_loop_f32(n, p, s0, s1, NULL, g, c, 0, 0);
    }
}

FD_MULTIVERSION(adam_span, (const void *ctx, int64_t n, float *p, const float *g, float *s0,
                            float *s1, float *s2), (ctx, n, p, g, s0, s1, s2))

/* sc: beta1, beta2, eps, weight_decay, decay, step_size, bias_correction2_sqrt, amsgrad, maximize */
int fd_adam_mixed_setup(const double *sc, int64_t nsc, fd_mixed_rule *r)
{
    FD_REQUIRE(nsc == 9);
    FD_CHECK(fd_adam_check_scalars(sc[0], sc[1], sc[2], sc[3], sc[4], sc[5], sc[6]));
    _Static_assert(sizeof(adam_ctx_f32) <= sizeof(r->ctx), "fd_mixed_rule.ctx too small");
    adam_ctx_f32 *c = (adam_ctx_f32 *)(void *)r->ctx.bytes;
    c->p = c->m = c->v = c->vmax = NULL;
    c->g = NULL;
    adam_fill_f32(c, sc[0], sc[1], sc[2], sc[3], sc[4], sc[5], sc[6], sc[7] != 0.0, sc[8] != 0.0);
    r->apply = FD_PICK(adam_span);
    r->needs = 3u | (c->amsgrad ? 4u : 0u);
    return FD_OK;
}
#endif

#if FD_IS_F32 && FD_X86_DISPATCH
/* ---- float32 on AVX2: the same bits without the subnormal assists (fd_subnormal.h) ----
 * fd_sn_drive walks a segment in stretches; one that met subnormals on the last call runs
 * adam_sn_checked, which tests each 8-element vector's moments and gradient (and max_exp_avg_sq) for
 * a tiny value (0 < |x| < 2^-120) as they are loaded; any other stretch runs adam_loop, as before,
 * and MXCSR's DE/UE flags after it say whether it met one (then its hint is set for the next call).
 * adam_sn_vec performs adam_loop's operations in its order; each multiply, divide and
 * square root that may see a subnormal (from the vector's tiny moments or gradient) goes by
 * fd_subnormal.h's float64 route, the rest by float32 instructions, so its results are adam_loop's
 * bit for bit whatever the data and whichever path a vector takes: only the time differs. The tail
 * (n % 8 elements) runs adam_loop. Under FTZ/DAZ (fd_set_flush_denormal, or a caller's own MXCSR)
 * or a rounding mode other than to nearest, the segment runs adam_loop alone (flushed results are
 * then the definition). */
typedef struct {
    fd_sn_moment_k mk;
    __m256d step;
    float step_bound; /* step_size * 2^-90, a normal float, when `quick` */
    int quick;        /* adam_sn_quick may run: beta1 == 0 or >= 2^-60, step_bound normal */
} adam_sn_k;

/* The vectors of a stopped unit: some lanes' exp_avg subnormal, nothing else tiny (checked by the
 * caller). Those lanes' m * beta1 by fd_sn_submul (exact), the rest of the step by float32
 * instructions on values that are not subnormal. Where the new m is tiny (|m| < 2^-120) the parameter
 * keeps its value when step_size * 2^-90 < |p| * d: the update, < |p| * 2^-30 then, is below a quarter
 * of p's spacing, so p - update rounds to p. Returns 0, having written nothing, when a tiny lane does
 * not meet that bound (the caller then takes the general route). */
FD_TARGET_AVX2 FD_INLINE int adam_sn_quick(float *p, float *m, float *v, float *vmax, __m256 gi,
                                           __m256 mm, __m256 vv, __m256 pi, const adam_ctx_f32 *c,
                                           const adam_sn_k *k, const int ams)
{
    __m256 mi, vi;
    fd_sn_moments_quick(mm, vv, gi, &k->mk, &mi, &vi);
    const __m256 vnew = vi;
    if (ams) {
        const __m256 a = _mm256_loadu_ps(vmax);
        const __m256 take = _mm256_or_ps(_mm256_cmp_ps(a, vi, _CMP_GT_OQ),
                                         _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
        vi = _mm256_blendv_ps(vi, a, take);
    }
    const __m256 d = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), _mm256_set1_ps(c->bc2)),
                                   _mm256_set1_ps(c->eps));
    const __m256 tiny = fd_sn_tiny_lanes(mi);
    if (_mm256_movemask_ps(tiny) & ~fd_sn_bound_lt(k->step_bound, pi, d)) return 0;
    const __m256 q = _mm256_div_ps(_mm256_andnot_ps(tiny, mi), d);
    const __m256 pn = _mm256_sub_ps(pi, _mm256_mul_ps(_mm256_set1_ps(c->step), q));
    _mm256_storeu_ps(m, mi);
    _mm256_storeu_ps(v, vnew);
    if (ams) _mm256_storeu_ps(vmax, vi);
    _mm256_storeu_ps(p, _mm256_blendv_ps(pn, pi, tiny));
    return 1;
}

FD_TARGET_AVX2 FD_INLINE void adam_sn_vec(float *p, float *m, float *v, float *vmax, __m256 gi,
                                          __m256 mm, __m256 vv, const adam_ctx_f32 *c,
                                          const adam_sn_k *k, const int wd_on, const int ams)
{
    const __m256 pi = _mm256_mul_ps(_mm256_loadu_ps(p), _mm256_set1_ps(c->decay));
    if (wd_on) gi = _mm256_add_ps(gi, _mm256_mul_ps(_mm256_set1_ps(c->wd), pi));
    const int mt = fd_sn_tiny8(mm), gt = fd_sn_tiny8(gi);
    int vt = fd_sn_tiny8(vv);
    if (mt && !(vt | gt) && k->quick && !(ams && fd_sn_tiny8(_mm256_loadu_ps(vmax))) &&
        adam_sn_quick(p, m, v, vmax, gi, mm, vv, pi, c, k, ams))
        return;
    __m256 mi, vi; /* m = m * beta1 + (1 - beta1) * g; v = v * beta2 + ((1 - beta2) * g) * g */
    fd_sn_moments(mm, vv, gi, mt, vt, gt, &k->mk, &mi, &vi);
    _mm256_storeu_ps(m, mi);
    _mm256_storeu_ps(v, vi);
    if (ams) {
        const __m256 a = _mm256_loadu_ps(vmax);
        const __m256 take = _mm256_or_ps(_mm256_cmp_ps(a, vi, _CMP_GT_OQ),
                                         _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
        vi = _mm256_blendv_ps(vi, a, take);
        _mm256_storeu_ps(vmax, vi);
        vt |= fd_sn_tiny8(vi);
    }
    /* d = sqrt(v) / sqrt(bc2) + eps; p = p - step_size * (m / d) */
    const __m256 s = (vt | gt) ? fd_sn_sqrt(vi) : _mm256_sqrt_ps(vi);
    const __m256 d = _mm256_add_ps(_mm256_div_ps(s, _mm256_set1_ps(c->bc2)), _mm256_set1_ps(c->eps));
    const __m256 q = (mt | gt) ? fd_sn_div(mi, d) : _mm256_div_ps(mi, d);
    const __m256 u = (mt | gt) ? fd_sn_mulc(q, k->step) : _mm256_mul_ps(_mm256_set1_ps(c->step), q);
    _mm256_storeu_ps(p, _mm256_sub_ps(pi, u));
}

/* elements [lo, hi) of a tensor, checking every vector; returns nonzero if one had a tiny lane */
FD_TARGET_AVX2 FD_INLINE int adam_sn_checked(int64_t n, float *p, float *m, float *v, float *vmax,
                                             const float *g, const adam_ctx_f32 *c,
                                             const adam_sn_k *k, const int wd_on, const int ams)
{
    const __m256 gsgn = _mm256_set1_ps(c->gsign < 0 ? -0.0f : 0.0f);
    const int64_t nv = n & ~(int64_t)7;
    int64_t run = 0; /* start of the clean vectors not yet updated: they go to adam_loop in runs */
    int seen = 0;
    for (int64_t j = 0; j < nv; j += 8) {
        const __m256 gg = _mm256_loadu_ps(g + j), mm = _mm256_loadu_ps(m + j);
        const __m256 vv = _mm256_loadu_ps(v + j);
        __m256i key = _mm256_min_epu32(_mm256_min_epu32(fd_sn_key8(mm), fd_sn_key8(vv)),
                                       fd_sn_key8(gg));
        if (ams) key = _mm256_min_epu32(key, fd_sn_key8(_mm256_loadu_ps(vmax + j)));
        if (fd_sn_any(key)) {
            if (j > run)
                adam_loop_f32(j - run, p + run, m + run, v + run, ams ? vmax + run : NULL, g + run,
                              c, wd_on, ams);
            adam_sn_vec(p + j, m + j, v + j, ams ? vmax + j : NULL, _mm256_xor_ps(gg, gsgn), mm, vv,
                        c, k, wd_on, ams);
            run = j + 8;
            seen = 1;
        }
    }
    if (n > run)
        adam_loop_f32(n - run, p + run, m + run, v + run, ams ? vmax + run : NULL, g + run, c, wd_on,
                      ams);
    return seen;
}

static fd_sn_hints adam_sn_hints;

FD_TARGET_AVX2 static int adam_sn_stretch(const void *ctx, int64_t t, int64_t lo, int64_t n,
                                          int checked)
{
    const adam_ctx_f32 *c = (const adam_ctx_f32 *)ctx;
    if (!checked) {
        adam_seg_f32_body(ctx, t, lo, n);
        return 0;
    }
    float *p = c->p[t] + lo, *m = c->m[t] + lo, *v = c->v[t] + lo;
    float *w = c->amsgrad ? c->vmax[t] + lo : NULL;
    const float *g = c->g[t] + lo;
    adam_sn_k k;
    fd_sn_moment_k_fill(&k.mk, c->beta1, c->omb1, c->beta2, c->omb2);
    k.step = fd_sn_const(c->step);
    k.quick = fd_sn_quick_bound(c->beta1, c->step, &k.step_bound);
    if (c->amsgrad)
        return c->wd_on ? adam_sn_checked(n, p, m, v, w, g, c, &k, 1, 1)
                        : adam_sn_checked(n, p, m, v, w, g, c, &k, 0, 1);
    return c->wd_on ? adam_sn_checked(n, p, m, v, NULL, g, c, &k, 1, 0)
                    : adam_sn_checked(n, p, m, v, NULL, g, c, &k, 0, 0);
}

static void adam_seg_f32_generic(const void *ctx, int64_t t, int64_t off, int64_t len)
{
    adam_seg_f32_body(ctx, t, off, len);
}

FD_TARGET_AVX2 static void adam_seg_f32_avx2(const void *ctx, int64_t t, int64_t off, int64_t len)
{
    FD_SN_SEGMENT(adam_sn_hints, ((const adam_ctx_f32 *)ctx)->m[t], adam_seg_f32_body,
                  adam_sn_stretch, ctx, t, off, len);
}
#else
FD_MULTIVERSION(FD_S(adam_seg), (const void *ctx, int64_t t, int64_t off, int64_t len),
                (ctx, t, off, len))
#endif

/* defines fd_adam_f32 and fd_adam_f64 (FD_S appends the type suffix) */
int FD_S(fd_adam)(int64_t ntensors, const int64_t *sizes, FD_T *const *param, FD_T *const *exp_avg,
                  FD_T *const *exp_avg_sq, FD_T *const *max_exp_avg_sq, const FD_T *const *grad,
                  double beta1, double beta2, double eps, double weight_decay, double decay,
                  double step_size, double bias_correction2_sqrt, int amsgrad, int maximize)
{
    int64_t total;
    FD_CHECK(fd_check_sizes(ntensors, sizes, &total));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(param), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(exp_avg), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(exp_avg_sq), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(grad), sizeof(FD_T)));
    if (amsgrad)
        FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(max_exp_avg_sq), sizeof(FD_T)));
    FD_CHECK(fd_adam_check_scalars(beta1, beta2, eps, weight_decay, decay, step_size,
                                   bias_correction2_sqrt));
    if (total == 0) return FD_OK;

    FD_S(adam_ctx) c;
    c.p = param;
    c.m = exp_avg;
    c.v = exp_avg_sq;
    c.vmax = max_exp_avg_sq;
    c.g = grad;
    FD_S(adam_fill)(&c, beta1, beta2, eps, weight_decay, decay, step_size, bias_correction2_sqrt,
                    amsgrad, maximize);
    fd_run_segments(ntensors, sizes, total, FD_PAR_MIN_HEAVY, FD_PICK(FD_S(adam_seg)), &c);
    return FD_OK;
}

#endif /* FD_T */

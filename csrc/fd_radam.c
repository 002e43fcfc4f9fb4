/* fd_radam.c -- RAdam / RAdamW (torch.optim.RAdam), one fused pass per element.
 *
 * Shapes: a table of `ntensors` tensors, tensor i has sizes[i] elements in every column:
 *   param[i], exp_avg[i], exp_avg_sq[i]        written
 *   grad[i]                                    read
 * Scalars (float64 in, rounded once to the element type T; all derived in float64 by
 * fastdescent/rules/radam.py): beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay
 * (coupled; 0 for RAdamW), decay (= 1 - lr*wd for RAdamW, 1 for RAdam), step_size
 * (= lr*r_t*sqrt(bc2)/bc1 when rectified, lr/bc1 otherwise); flags rectify (rho_t > 5), maximize.
 * Domain (FD_ERR_ARG otherwise): 0 <= beta1, beta2 < 1; 0 < one_minus_beta1, one_minus_beta2 <= 1;
 * eps, weight_decay, step_size finite and >= 0; decay finite and <= 1.
 *
 * Per element, in the NumPy reference's order (backends/numpy_ref/radam.py):
 *   g = maximize ? -g : g
 *   p = p * decay                          (exact when decay == 1, so it is always applied)
 *   g = g + weight_decay * p               (only if weight_decay != 0)
 *   m = m * beta1 + one_minus_beta1 * g
 *   v = v * beta2 + (one_minus_beta2 * g) * g
 *   p = p - step_size * (m / (sqrt(v) + eps))     if rectify
 *   p = p - step_size * m                          otherwise
 */
#ifndef FD_T /* ------------------------------------------------------------ untyped part */
#include "fd_internal.h"
#include "fd_subnormal.h"

FD_EXACT_FP

/* 1 - beta, in (0, 1] */
static int fd_radam_omb(double x) { return x > 0.0 && x <= 1.0; }

static int fd_radam_check_scalars(double beta1, double one_minus_beta1, double beta2,
                                  double one_minus_beta2, double eps, double weight_decay,
                                  double decay, double step_size)
{
    FD_REQUIRE(fd_unit(beta1) && fd_unit(beta2));
    FD_REQUIRE(fd_radam_omb(one_minus_beta1) && fd_radam_omb(one_minus_beta2));
    FD_REQUIRE(fd_nonneg(eps) && fd_nonneg(weight_decay) && fd_nonneg(step_size));
    FD_REQUIRE(fd_finite(decay) && decay <= 1.0);
    return FD_OK;
}

#define FD_TYPED_FILE "fd_radam.c"
#include "fd_typed.h"

#else /* ------------------------------------------------------------------- typed part (FD_T) */

typedef struct {
    FD_T *const *p;
    FD_T *const *m;
    FD_T *const *v;
    const FD_T *const *g;
    FD_T gsign, decay, wd, beta1, omb1, beta2, omb2, eps, step;
    int wd_on, rectify;
} FD_S(radam_ctx);

FD_INLINE void FD_S(radam_loop)(int64_t n, FD_T *FD_RESTRICT p, FD_T *FD_RESTRICT m,
                                FD_T *FD_RESTRICT v, const FD_T *FD_RESTRICT g,
                                const FD_S(radam_ctx) *c, const int wd_on, const int rect)
{
    const FD_T gs = c->gsign, decay = c->decay, wd = c->wd, b1 = c->beta1, c1 = c->omb1;
    const FD_T b2 = c->beta2, c2 = c->omb2, eps = c->eps, step = c->step;
    for (int64_t i = 0; i < n; i++) {
        FD_T gi = g[i] * gs;
        FD_T pi = p[i] * decay;
        if (wd_on) gi = gi + wd * pi;
        FD_T mi = m[i] * b1 + c1 * gi;
        FD_T vi = v[i] * b2 + (c2 * gi) * gi;
        m[i] = mi;
        v[i] = vi;
        if (rect) p[i] = pi - step * (mi / (FD_SQRT(vi) + eps));
        else p[i] = pi - step * mi;
    }
}

FD_INLINE void FD_BODY(radam_seg)(const void *ctx, int64_t t, int64_t off, int64_t len)
{
    const FD_S(radam_ctx) *c = (const FD_S(radam_ctx) *)ctx;
    FD_T *p = c->p[t] + off, *m = c->m[t] + off, *v = c->v[t] + off;
    const FD_T *g = c->g[t] + off;
    if (c->rectify) {
        if (c->wd_on) FD_S(radam_loop)(len, p, m, v, g, c, 1, 1);
        else FD_S(radam_loop)(len, p, m, v, g, c, 0, 1);
    } else {
        if (c->wd_on) FD_S(radam_loop)(len, p, m, v, g, c, 1, 0);
        else FD_S(radam_loop)(len, p, m, v, g, c, 0, 0);
    }
}

#if FD_IS_F32 && FD_X86_DISPATCH
/* ---- float32 on AVX2: the same bits without the subnormal assists (fd_subnormal.h) ----
 * As fd_nadam.c's: fd_sn_drive runs a stretch that met subnormals on the last call through
 * radam_sn_checked, which sends each vector with a tiny moment or gradient lane (0 < |x| < 2^-120)
 * to radam_sn_vec; the others run radam_loop. radam_sn_vec performs radam_loop's operations in its
 * order (after radam_sn_quick for the vectors of stopped units), each multiply, divide and square
 * root that may see a subnormal by the float64 route, so its results are radam_loop's bit for bit
 * whatever the data; only the time differs. Under FTZ/DAZ or a rounding mode other than to nearest
 * the segment runs radam_loop alone. */
typedef struct {
    fd_sn_moment_k mk;
    __m256d gs, step;
    float step_bound; /* step_size * 2^-90, a normal float, when `quick` */
    int quick;        /* radam_sn_quick may run: beta1 == 0 or >= 2^-60, step_bound normal */
} radam_sn_k;

/* The vectors of a stopped unit: some lanes' exp_avg tiny, the gradient and exp_avg_sq not (checked
 * by the caller). Those lanes' m * beta1 by fd_sn_submul (exact), the rest of the step by float32
 * instructions on values that are not subnormal. Where the new m is tiny the parameter keeps its
 * value when step_size * 2^-90 < |p| * den (den = sqrt(v) + eps when rectified, else 1): the update,
 * < |p| * 2^-29 then, is below a quarter of p's spacing, so p - update rounds to p. Returns 0, having
 * written nothing, when a tiny lane does not meet that (the caller then takes the general route). */
FD_TARGET_AVX2 FD_INLINE int radam_sn_quick(float *p, float *m, float *v, __m256 gi, __m256 mm,
                                            __m256 vv, __m256 pi, const radam_ctx_f32 *c,
                                            const radam_sn_k *k, const int rect)
{
    __m256 mi, vi;
    fd_sn_moments_quick(mm, vv, gi, &k->mk, &mi, &vi);
    const __m256 den = rect ? _mm256_add_ps(_mm256_sqrt_ps(vi), _mm256_set1_ps(c->eps))
                            : _mm256_set1_ps(1.0f);
    const __m256 tiny = fd_sn_tiny_lanes(mi);
    if (_mm256_movemask_ps(tiny) & ~fd_sn_bound_lt(k->step_bound, pi, den)) return 0;
    const __m256 mk = _mm256_andnot_ps(tiny, mi);
    const __m256 q = rect ? _mm256_div_ps(mk, den) : mk;
    const __m256 pn = _mm256_sub_ps(pi, _mm256_mul_ps(_mm256_set1_ps(c->step), q));
    _mm256_storeu_ps(m, mi);
    _mm256_storeu_ps(v, vi);
    _mm256_storeu_ps(p, _mm256_blendv_ps(pn, pi, tiny));
    return 1;
}

FD_TARGET_AVX2 FD_INLINE void radam_sn_vec(float *p, float *m, float *v, const float *g,
                                           const radam_ctx_f32 *c, const radam_sn_k *k,
                                           const int wd_on, const int rect)
{
    const __m256 gg = _mm256_loadu_ps(g), mm = _mm256_loadu_ps(m), vv = _mm256_loadu_ps(v);
    int gt = fd_sn_tiny8(gg);
    const int mt = fd_sn_tiny8(mm), vt = fd_sn_tiny8(vv);
    __m256 gi = gt ? fd_sn_mulc(gg, k->gs) : _mm256_mul_ps(gg, _mm256_set1_ps(c->gsign));
    const __m256 pi = _mm256_mul_ps(_mm256_loadu_ps(p), _mm256_set1_ps(c->decay));
    if (wd_on) {
        gi = _mm256_add_ps(gi, _mm256_mul_ps(_mm256_set1_ps(c->wd), pi));
        gt |= fd_sn_tiny8(gi);
    }
    if (mt && !(vt | gt) && k->quick && radam_sn_quick(p, m, v, gi, mm, vv, pi, c, k, rect)) return;
    __m256 mi, vi; /* m = m * beta1 + (1 - beta1) * g; v = v * beta2 + ((1 - beta2) * g) * g */
    fd_sn_moments(mm, vv, gi, mt, vt, gt, &k->mk, &mi, &vi);
    _mm256_storeu_ps(m, mi);
    _mm256_storeu_ps(v, vi);
    const int mt2 = mt | gt | fd_sn_tiny8(mi);
    __m256 u;
    if (rect) { /* p = p - step_size * (m / (sqrt(v) + eps)) */
        const int vt2 = vt | gt | fd_sn_tiny8(vi);
        const __m256 s = vt2 ? fd_sn_sqrt(vi) : _mm256_sqrt_ps(vi);
        const __m256 den = _mm256_add_ps(s, _mm256_set1_ps(c->eps));
        const __m256 q = (mt2 | vt2) ? fd_sn_div(mi, den) : _mm256_div_ps(mi, den);
        u = (mt2 | vt2) ? fd_sn_mulc(q, k->step) : _mm256_mul_ps(_mm256_set1_ps(c->step), q);
    } else { /* p = p - step_size * m */
        u = mt2 ? fd_sn_mulc(mi, k->step) : _mm256_mul_ps(_mm256_set1_ps(c->step), mi);
    }
    _mm256_storeu_ps(p, _mm256_sub_ps(pi, u));
}

FD_TARGET_AVX2 FD_INLINE int radam_sn_checked(int64_t n, float *p, float *m, float *v,
                                              const float *g, const radam_ctx_f32 *c,
                                              const radam_sn_k *k, const int wd_on, const int rect)
{
    const int64_t nv = n & ~(int64_t)7;
    int64_t run = 0; /* start of the clean vectors not yet updated: they go to radam_loop in runs */
    int seen = 0;
    for (int64_t j = 0; j < nv; j += 8) {
        const __m256i key = _mm256_min_epu32(
            _mm256_min_epu32(fd_sn_key8(_mm256_loadu_ps(m + j)), fd_sn_key8(_mm256_loadu_ps(v + j))),
            fd_sn_key8(_mm256_loadu_ps(g + j)));
        if (fd_sn_any(key)) {
            if (j > run) radam_loop_f32(j - run, p + run, m + run, v + run, g + run, c, wd_on, rect);
            radam_sn_vec(p + j, m + j, v + j, g + j, c, k, wd_on, rect);
            run = j + 8;
            seen = 1;
        }
    }
    if (n > run) radam_loop_f32(n - run, p + run, m + run, v + run, g + run, c, wd_on, rect);
    return seen;
}

static fd_sn_hints radam_sn_hints;

FD_TARGET_AVX2 static int radam_sn_stretch(const void *ctx, int64_t t, int64_t lo, int64_t n,
                                           int checked)
{
    const radam_ctx_f32 *c = (const radam_ctx_f32 *)ctx;
    if (!checked) {
        radam_seg_f32_body(ctx, t, lo, n);
        return 0;
    }
    radam_sn_k k;
    k.gs = fd_sn_const(c->gsign);
    fd_sn_moment_k_fill(&k.mk, c->beta1, c->omb1, c->beta2, c->omb2);
    k.step = fd_sn_const(c->step);
    k.quick = fd_sn_quick_bound(c->beta1, c->step, &k.step_bound);
    float *p = c->p[t] + lo, *m = c->m[t] + lo, *v = c->v[t] + lo;
    const float *g = c->g[t] + lo;
    if (c->rectify)
        return c->wd_on ? radam_sn_checked(n, p, m, v, g, c, &k, 1, 1)
                        : radam_sn_checked(n, p, m, v, g, c, &k, 0, 1);
    return c->wd_on ? radam_sn_checked(n, p, m, v, g, c, &k, 1, 0)
                    : radam_sn_checked(n, p, m, v, g, c, &k, 0, 0);
}

static void radam_seg_f32_generic(const void *ctx, int64_t t, int64_t off, int64_t len)
{
    radam_seg_f32_body(ctx, t, off, len);
}

FD_TARGET_AVX2 static void radam_seg_f32_avx2(const void *ctx, int64_t t, int64_t off, int64_t len)
{
    FD_SN_SEGMENT(radam_sn_hints, ((const radam_ctx_f32 *)ctx)->m[t], radam_seg_f32_body,
                  radam_sn_stretch, ctx, t, off, len);
}
#else
FD_MULTIVERSION(FD_S(radam_seg), (const void *ctx, int64_t t, int64_t off, int64_t len),
                (ctx, t, off, len))
#endif

/* defines fd_radam_f32 and fd_radam_f64 (FD_S appends the type suffix) */
int FD_S(fd_radam)(int64_t ntensors, const int64_t *sizes, FD_T *const *param, FD_T *const *exp_avg,
                   FD_T *const *exp_avg_sq, const FD_T *const *grad, double beta1,
                   double one_minus_beta1, double beta2, double one_minus_beta2, double eps,
                   double weight_decay, double decay, double step_size, int rectify, int maximize)
{
    int64_t total;
    FD_CHECK(fd_check_sizes(ntensors, sizes, &total));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(param), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(exp_avg), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(exp_avg_sq), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(grad), sizeof(FD_T)));
    FD_CHECK(fd_radam_check_scalars(beta1, one_minus_beta1, beta2, one_minus_beta2, eps,
                                    weight_decay, decay, step_size));
    if (total == 0) return FD_OK;

    FD_S(radam_ctx) c;
    c.p = param;
    c.m = exp_avg;
    c.v = exp_avg_sq;
    c.g = grad;
    c.gsign = maximize ? -FD_ONE : FD_ONE;
    c.decay = (FD_T)decay;
    c.wd = (FD_T)weight_decay;
    c.beta1 = (FD_T)beta1;
    c.omb1 = (FD_T)one_minus_beta1;
    c.beta2 = (FD_T)beta2;
    c.omb2 = (FD_T)one_minus_beta2;
    c.eps = (FD_T)eps;
    c.step = (FD_T)step_size;
    c.wd_on = weight_decay != 0.0;
    c.rectify = rectify != 0;
    fd_run_segments(ntensors, sizes, total, FD_PAR_MIN_HEAVY, FD_PICK(FD_S(radam_seg)), &c);
    return FD_OK;
}

#endif /* FD_T */

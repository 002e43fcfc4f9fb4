/* fd_sgd.c -- SGD with coupled weight decay and (Nesterov) momentum, one fused pass per element.
 *
 * Shapes: a table of `ntensors` tensors, tensor i has sizes[i] elements in every column:
 *   param[i]             written
 *   momentum_buffer[i]   written (only when momentum != 0; the column may be NULL otherwise)
 *   grad[i]              read
 * Scalars (float64 in, rounded once to the element type T): lr, momentum, dampening, weight_decay;
 * flags nesterov, maximize, first_step. Domain (FD_ERR_ARG otherwise, as optim.SGD): lr, momentum,
 * weight_decay finite and >= 0, dampening finite, nesterov only with momentum > 0, dampening == 0.
 *
 * Per element, in the NumPy reference's order (backends/numpy_ref/sgd.py):
 *   g = maximize ? -g : g
 *   g = g + weight_decay * p                         (only if weight_decay != 0)
 *   if momentum != 0:
 *       b = first_step ? g : b * momentum + (1 - dampening) * g
 *       g = nesterov ? g + momentum * b : b
 *   p = p - lr * g
 */
#ifndef FD_T /* ------------------------------------------------------------ untyped part */
#include "fd_internal.h"
#include "fd_subnormal.h"

FD_EXACT_FP

/* The scalars' domain (optim.SGD's checks); shared with fd_fused.c. */
int fd_sgd_check_scalars(double lr, double momentum, double dampening, double weight_decay,
                         int nesterov)
{
    FD_REQUIRE(fd_nonneg(lr) && fd_nonneg(momentum) && fd_finite(dampening) &&
               fd_nonneg(weight_decay));
    FD_REQUIRE(!nesterov || (momentum > 0.0 && dampening == 0.0));
    return FD_OK;
}

#define FD_TYPED_FILE "fd_sgd.c"
#include "fd_typed.h"

#else /* ------------------------------------------------------------------- typed part (FD_T) */

typedef struct {
    FD_T *const *p;
    FD_T *const *b;
    const FD_T *const *g;
    FD_T gsign, lr, mom, omd, wd;
    int mode; /* bit 0: weight decay, bit 1: momentum, bit 2: nesterov, bit 3: first step */
} FD_S(sgd_ctx);

FD_INLINE void FD_S(sgd_loop)(int64_t n, FD_T *FD_RESTRICT p, FD_T *FD_RESTRICT b,
                              const FD_T *FD_RESTRICT g, const FD_S(sgd_ctx) *c, const int wd_on,
                              const int mom_on, const int nesterov, const int first)
{
    const FD_S(fd_signmask) neg = c->gsign < 0 ? FD_S(FD_SIGNBIT) : 0;
    const FD_T lr = c->lr, mom = c->mom, omd = c->omd, wd = c->wd;
    for (int64_t i = 0; i < n; i++) {
        FD_T gi = FD_S(fd_flip)(g[i], neg); /* maximize: -g */
        FD_T pi = p[i];
        if (wd_on) gi = gi + wd * pi;
        if (mom_on) {
            FD_T bi = first ? gi : b[i] * mom + omd * gi;
            b[i] = bi;
            gi = nesterov ? gi + mom * bi : bi;
        }
        p[i] = pi - lr * gi;
    }
}

#define FD_SGD_CASE(M)                                                                        \
    case M:                                                                                   \
        FD_S(sgd_loop)(len, p, b, g, c, (M) & 1, ((M) >> 1) & 1, ((M) >> 2) & 1, ((M) >> 3) & 1); \
        break;

FD_INLINE void FD_BODY(sgd_seg)(const void *ctx, int64_t t, int64_t off, int64_t len)
{
    const FD_S(sgd_ctx) *c = (const FD_S(sgd_ctx) *)ctx;
    FD_T *p = c->p[t] + off;
    FD_T *b = (c->mode & 2) ? c->b[t] + off : NULL;
    const FD_T *g = c->g[t] + off;
    switch (c->mode) {
        FD_SGD_CASE(0) FD_SGD_CASE(1) FD_SGD_CASE(2) FD_SGD_CASE(3)
        FD_SGD_CASE(6) FD_SGD_CASE(7) FD_SGD_CASE(10) FD_SGD_CASE(11)
        FD_SGD_CASE(14) FD_SGD_CASE(15)
    default: break; /* unreachable: fd_sgd_* only builds the modes above */
    }
}
#undef FD_SGD_CASE

/* The element-type scalars and mode of ctx c (everything but the column pointers). */
static void FD_S(sgd_fill)(FD_S(sgd_ctx) *c, double lr, double momentum, double dampening,
                           double weight_decay, int nesterov, int maximize, int first_step)
{
    int mom_on = momentum != 0.0;
    c->gsign = maximize ? -FD_ONE : FD_ONE;
    c->lr = (FD_T)lr;
    c->mom = (FD_T)momentum;
    c->omd = (FD_T)(1.0 - dampening);
    c->wd = (FD_T)weight_decay;
    c->mode = (weight_decay != 0.0) | (mom_on << 1) | ((mom_on && nesterov) << 2) |
              ((mom_on && first_step) << 3);
}

#if FD_IS_F32
/* The mixed-precision step's span (fd_internal.h): state column momentum_buffer. */
#define FD_SGD_SPAN_CASE(M)                                                                     \
    case M:                                                                                     \
        sgd_loop_f32(n, p, s0, g, c, (M) & 1, ((M) >> 1) & 1, ((M) >> 2) & 1, ((M) >> 3) & 1); \
        break;

FD_INLINE void sgd_span_body(const void *ctx, int64_t n, float *p, const float *g, float *s0,
                             float *s1, float *s2)
{
    const sgd_ctx_f32 *c = (const sgd_ctx_f32 *)ctx;
    (void)s1;
    (void)s2;
    switch (c->mode) {
        FD_SGD_SPAN_CASE(0) FD_SGD_SPAN_CASE(1) FD_SGD_SPAN_CASE(2) FD_SGD_SPAN_CASE(3)
        FD_SGD_SPAN_CASE(6) FD_SGD_SPAN_CASE(7) FD_SGD_SPAN_CASE(10) FD_SGD_SPAN_CASE(11)
        FD_SGD_SPAN_CASE(14) FD_SGD_SPAN_CASE(15)
    default: break; /* unreachable: sgd_fill only builds the modes above */
    }
}
#undef FD_SGD_SPAN_CASE

FD_MULTIVERSION(sgd_span, (const void *ctx, int64_t n, float *p, const float *g, float *s0,
                           float *s1, float *s2), (ctx, n, p, g, s0, s1, s2))

/* sc: lr, momentum, dampening, weight_decay, nesterov, maximize, first_step */
int fd_sgd_mixed_setup(const double *sc, int64_t nsc, fd_mixed_rule *r)
{
    FD_REQUIRE(nsc == 7);
    FD_CHECK(fd_sgd_check_scalars(sc[0], sc[1], sc[2], sc[3], sc[4] != 0.0));
    _Static_assert(sizeof(sgd_ctx_f32) <= sizeof(r->ctx), "fd_mixed_rule.ctx too small");
    sgd_ctx_f32 *c = (sgd_ctx_f32 *)(void *)r->ctx.bytes;
    c->p = c->b = NULL;
    c->g = NULL;
    sgd_fill_f32(c, sc[0], sc[1], sc[2], sc[3], sc[4] != 0.0, sc[5] != 0.0, sc[6] != 0.0);
    r->apply = FD_PICK(sgd_span);
    r->needs = (c->mode & 2) ? 1u : 0u;
    return FD_OK;
}
#endif

#if FD_IS_F32 && FD_X86_DISPATCH
/* ---- float32 on AVX2 with momentum: the same bits without the subnormal assists ----
 * As fd_adam.c's: fd_sn_drive runs a stretch that met subnormals on the last call through
 * sgd_sn_checked, which sends each vector with a tiny momentum buffer or gradient lane
 * (0 < |x| < 2^-120) to sgd_sn_vec; the others run sgd_loop. sgd_sn_vec's quick route (only buffer
 * lanes tiny): the subnormal lanes' b * momentum by fd_sn_submul, and where the step's direction g is
 * tiny the parameter keeps its value when lr * 2^-90 < |p| (the update, < |p| * 2^-30, is below a
 * quarter of p's spacing); otherwise each multiply that may see a subnormal goes by the float64 route.
 * Only the steps with a buffer to decay (momentum on, not the first step) take this path. */
typedef struct {
    __m256d mom, omd, lr;
    float lr_bound; /* lr * 2^-90, a normal float, when `quick` */
    int quick;      /* the quick route may run: 2^-60 <= momentum < 1, lr_bound normal */
} sgd_sn_k;

FD_TARGET_AVX2 FD_INLINE void sgd_sn_vec(float *p, float *b, const float *g, const sgd_ctx_f32 *c,
                                         const sgd_sn_k *k, const int wd_on, const int nesterov)
{
    const __m256 pi = _mm256_loadu_ps(p), bb = _mm256_loadu_ps(b);
    __m256 gi = _mm256_xor_ps(_mm256_loadu_ps(g), _mm256_set1_ps(c->gsign < 0 ? -0.0f : 0.0f));
    if (wd_on) gi = _mm256_add_ps(gi, _mm256_mul_ps(_mm256_set1_ps(c->wd), pi));
    const __m256 mom = _mm256_set1_ps(c->mom), lr = _mm256_set1_ps(c->lr);
    const __m256 omd = _mm256_set1_ps(c->omd);
    const int bt = fd_sn_tiny8(bb), gt = fd_sn_tiny8(gi);
    if (bt && !gt && k->quick) {
        const __m256 bi = _mm256_add_ps(fd_sn_mul_small(bb, mom), _mm256_mul_ps(omd, gi));
        const __m256 gu = nesterov ? _mm256_add_ps(gi, fd_sn_mul_small(bi, mom)) : bi;
        const __m256 tiny = fd_sn_tiny_lanes(gu);
        const __m256 ok = _mm256_cmp_ps(_mm256_set1_ps(k->lr_bound),
                                        _mm256_andnot_ps(_mm256_set1_ps(-0.0f), pi), _CMP_LT_OQ);
        if (!_mm256_movemask_ps(_mm256_andnot_ps(ok, tiny))) {
            _mm256_storeu_ps(b, bi);
            const __m256 pn = _mm256_sub_ps(pi, _mm256_mul_ps(lr, _mm256_andnot_ps(tiny, gu)));
            _mm256_storeu_ps(p, _mm256_blendv_ps(pn, pi, tiny));
            return;
        }
    }
    const int any = bt | gt;
    const __m256 bm = bt ? fd_sn_mulc(bb, k->mom) : _mm256_mul_ps(bb, mom);
    const __m256 bi = _mm256_add_ps(bm, gt ? fd_sn_mulc(gi, k->omd) : _mm256_mul_ps(omd, gi));
    _mm256_storeu_ps(b, bi);
    __m256 gu = bi;
    if (nesterov) gu = _mm256_add_ps(gi, any ? fd_sn_mulc(bi, k->mom) : _mm256_mul_ps(mom, bi));
    _mm256_storeu_ps(p, _mm256_sub_ps(pi, any ? fd_sn_mulc(gu, k->lr) : _mm256_mul_ps(lr, gu)));
}

FD_TARGET_AVX2 FD_INLINE int sgd_sn_checked(int64_t n, float *p, float *b, const float *g,
                                            const sgd_ctx_f32 *c, const sgd_sn_k *k,
                                            const int wd_on, const int nesterov)
{
    const int64_t nv = n & ~(int64_t)7;
    int64_t run = 0; /* start of the clean vectors not yet updated: they go to sgd_loop in runs */
    int seen = 0;
    for (int64_t j = 0; j < nv; j += 8) {
        const __m256i key = _mm256_min_epu32(fd_sn_key8(_mm256_loadu_ps(b + j)),
                                             fd_sn_key8(_mm256_loadu_ps(g + j)));
        if (fd_sn_any(key)) {
            if (j > run) sgd_loop_f32(j - run, p + run, b + run, g + run, c, wd_on, 1, nesterov, 0);
            sgd_sn_vec(p + j, b + j, g + j, c, k, wd_on, nesterov);
            run = j + 8;
            seen = 1;
        }
    }
    if (n > run) sgd_loop_f32(n - run, p + run, b + run, g + run, c, wd_on, 1, nesterov, 0);
    return seen;
}

static fd_sn_hints sgd_sn_hints;

FD_TARGET_AVX2 static int sgd_sn_stretch(const void *ctx, int64_t t, int64_t lo, int64_t n,
                                         int checked)
{
    const sgd_ctx_f32 *c = (const sgd_ctx_f32 *)ctx;
    if (!checked) {
        sgd_seg_f32_body(ctx, t, lo, n);
        return 0;
    }
    sgd_sn_k k;
    k.mom = fd_sn_const(c->mom);
    k.omd = fd_sn_const(c->omd);
    k.lr = fd_sn_const(c->lr);
    /* (momentum 0 never reaches here: no buffer; >= 1 is outside fd_sn_submul's domain) */
    k.quick = fd_sn_quick_bound(c->mom, c->lr, &k.lr_bound) && c->mom < 1.0f;
    float *p = c->p[t] + lo, *b = c->b[t] + lo;
    const float *g = c->g[t] + lo;
    switch (c->mode) {
    case 2: return sgd_sn_checked(n, p, b, g, c, &k, 0, 0);
    case 3: return sgd_sn_checked(n, p, b, g, c, &k, 1, 0);
    case 6: return sgd_sn_checked(n, p, b, g, c, &k, 0, 1);
    default: return sgd_sn_checked(n, p, b, g, c, &k, 1, 1); /* 7 (sgd_seg_f32_avx2) */
    }
}

static void sgd_seg_f32_generic(const void *ctx, int64_t t, int64_t off, int64_t len)
{
    sgd_seg_f32_body(ctx, t, off, len);
}

FD_TARGET_AVX2 static void sgd_seg_f32_avx2(const void *ctx, int64_t t, int64_t off, int64_t len)
{
    const sgd_ctx_f32 *c = (const sgd_ctx_f32 *)ctx;
    const int m = c->mode; /* with momentum, not the first step: 2, 3, 6, 7 */
    if (m == 2 || m == 3 || m == 6 || m == 7)
        FD_SN_SEGMENT(sgd_sn_hints, c->b[t], sgd_seg_f32_body, sgd_sn_stretch, ctx, t, off, len);
    else
        sgd_seg_f32_body(ctx, t, off, len);
}
#else
FD_MULTIVERSION(FD_S(sgd_seg), (const void *ctx, int64_t t, int64_t off, int64_t len),
                (ctx, t, off, len))
#endif

/* defines fd_sgd_f32 and fd_sgd_f64 (FD_S appends the type suffix) */
int FD_S(fd_sgd)(int64_t ntensors, const int64_t *sizes, FD_T *const *param,
                 FD_T *const *momentum_buffer, const FD_T *const *grad, double lr, double momentum,
                 double dampening, double weight_decay, int nesterov, int maximize, int first_step)
{
    int64_t total;
    int mom_on = momentum != 0.0;
    FD_CHECK(fd_check_sizes(ntensors, sizes, &total));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(param), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(grad), sizeof(FD_T)));
    if (mom_on)
        FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(momentum_buffer), sizeof(FD_T)));
    FD_CHECK(fd_sgd_check_scalars(lr, momentum, dampening, weight_decay, nesterov));
    if (total == 0) return FD_OK;

    FD_S(sgd_ctx) c;
    c.p = param;
    c.b = momentum_buffer;
    c.g = grad;
    FD_S(sgd_fill)(&c, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step);
    fd_run_segments(ntensors, sizes, total, FD_PAR_MIN_LIGHT, FD_PICK(FD_S(sgd_seg)), &c);
    return FD_OK;
}

#endif /* FD_T */

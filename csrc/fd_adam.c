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

FD_MULTIVERSION(FD_S(adam_seg), (const void *ctx, int64_t t, int64_t off, int64_t len),
                (ctx, t, off, len))

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

/* fd_nadam.c -- NAdam / NAdamW (torch.optim.NAdam), one fused pass per element.
 *
 * Shapes: a table of `ntensors` tensors, tensor i has sizes[i] elements in every column:
 *   param[i], exp_avg[i], exp_avg_sq[i]        written
 *   grad[i]                                    read
 * Scalars (float64 in, rounded once to the element type T; all derived in float64 by
 * fastdescent/rules/nadam.py): beta1, one_minus_beta1, beta2, one_minus_beta2, weight_decay (coupled;
 * 0 for NAdamW), decay (= 1 - lr*wd for NAdamW, 1 for NAdam), step_size_grad
 * (= lr*(1-mu_t)/(1-mu_product_t)*sqrt(bc2)), step_size_exp_avg
 * (= lr*mu_{t+1}/(1-mu_product_t*mu_{t+1})*sqrt(bc2)), eps_scaled (= eps*sqrt(bc2)); flag maximize.
 * Domain (FD_ERR_ARG otherwise): 0 <= beta1, beta2 < 1; 0 < one_minus_beta1, one_minus_beta2 <= 1;
 * weight_decay, step_size_grad, step_size_exp_avg, eps_scaled finite and >= 0; decay finite and <= 1.
 *
 * Per element, in the NumPy reference's order (backends/numpy_ref/nadam.py):
 *   g = maximize ? -g : g
 *   p = p * decay                          (exact when decay == 1, so it is always applied)
 *   g = g + weight_decay * p               (only if weight_decay != 0)
 *   m = m * beta1 + one_minus_beta1 * g
 *   v = v * beta2 + (one_minus_beta2 * g) * g
 *   p = p - (step_size_grad * g + step_size_exp_avg * m) / (sqrt(v) + eps_scaled)
 * which is torch's p - lr*(1-mu_t)/(1-mu_product_t) * g/d - lr*mu_{t+1}/(1-mu_product_{t+1}) * m/d
 * with d = sqrt(v/bc2) + eps, sqrt(bc2) moved into the scalars: one sqrt and one division.
 */
#ifndef FD_T /* ------------------------------------------------------------ untyped part */
#include "fd_internal.h"

FD_EXACT_FP

/* 1 - beta, in (0, 1] */
static int fd_nadam_omb(double x) { return x > 0.0 && x <= 1.0; }

static int fd_nadam_check_scalars(double beta1, double one_minus_beta1, double beta2,
                                  double one_minus_beta2, double weight_decay, double decay,
                                  double step_size_grad, double step_size_exp_avg,
                                  double eps_scaled)
{
    FD_REQUIRE(fd_unit(beta1) && fd_unit(beta2));
    FD_REQUIRE(fd_nadam_omb(one_minus_beta1) && fd_nadam_omb(one_minus_beta2));
    FD_REQUIRE(fd_nonneg(weight_decay) && fd_nonneg(eps_scaled));
    FD_REQUIRE(fd_nonneg(step_size_grad) && fd_nonneg(step_size_exp_avg));
    FD_REQUIRE(fd_finite(decay) && decay <= 1.0);
    return FD_OK;
}

#define FD_TYPED_FILE "fd_nadam.c"
#include "fd_typed.h"

#else /* ------------------------------------------------------------------- typed part (FD_T) */

typedef struct {
    FD_T *const *p;
    FD_T *const *m;
    FD_T *const *v;
    const FD_T *const *g;
    FD_T gsign, decay, wd, beta1, omb1, beta2, omb2, sg, sm, eps;
    int wd_on;
} FD_S(nadam_ctx);

FD_INLINE void FD_S(nadam_loop)(int64_t n, FD_T *FD_RESTRICT p, FD_T *FD_RESTRICT m,
                                FD_T *FD_RESTRICT v, const FD_T *FD_RESTRICT g,
                                const FD_S(nadam_ctx) *c, const int wd_on)
{
    const FD_T gs = c->gsign, decay = c->decay, wd = c->wd, b1 = c->beta1, c1 = c->omb1;
    const FD_T b2 = c->beta2, c2 = c->omb2, sg = c->sg, sm = c->sm, eps = c->eps;
    for (int64_t i = 0; i < n; i++) {
        FD_T gi = g[i] * gs;
        FD_T pi = p[i] * decay;
        if (wd_on) gi = gi + wd * pi;
        FD_T mi = m[i] * b1 + c1 * gi;
        FD_T vi = v[i] * b2 + (c2 * gi) * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - (sg * gi + sm * mi) / (FD_SQRT(vi) + eps);
    }
}

FD_INLINE void FD_BODY(nadam_seg)(const void *ctx, int64_t t, int64_t off, int64_t len)
{
    const FD_S(nadam_ctx) *c = (const FD_S(nadam_ctx) *)ctx;
    FD_T *p = c->p[t] + off, *m = c->m[t] + off, *v = c->v[t] + off;
    const FD_T *g = c->g[t] + off;
    if (c->wd_on) FD_S(nadam_loop)(len, p, m, v, g, c, 1);
    else FD_S(nadam_loop)(len, p, m, v, g, c, 0);
}

FD_MULTIVERSION(FD_S(nadam_seg), (const void *ctx, int64_t t, int64_t off, int64_t len),
                (ctx, t, off, len))

/* defines fd_nadam_f32 and fd_nadam_f64 (FD_S appends the type suffix) */
int FD_S(fd_nadam)(int64_t ntensors, const int64_t *sizes, FD_T *const *param, FD_T *const *exp_avg,
                   FD_T *const *exp_avg_sq, const FD_T *const *grad, double beta1,
                   double one_minus_beta1, double beta2, double one_minus_beta2,
                   double weight_decay, double decay, double step_size_grad,
                   double step_size_exp_avg, double eps_scaled, int maximize)
{
    int64_t total;
    FD_CHECK(fd_check_sizes(ntensors, sizes, &total));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(param), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(exp_avg), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(exp_avg_sq), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(grad), sizeof(FD_T)));
    FD_CHECK(fd_nadam_check_scalars(beta1, one_minus_beta1, beta2, one_minus_beta2, weight_decay,
                                    decay, step_size_grad, step_size_exp_avg, eps_scaled));
    if (total == 0) return FD_OK;

    FD_S(nadam_ctx) c;
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
    c.sg = (FD_T)step_size_grad;
    c.sm = (FD_T)step_size_exp_avg;
    c.eps = (FD_T)eps_scaled;
    c.wd_on = weight_decay != 0.0;
    fd_run_segments(ntensors, sizes, total, FD_PAR_MIN_HEAVY, FD_PICK(FD_S(nadam_seg)), &c);
    return FD_OK;
}

#endif /* FD_T */

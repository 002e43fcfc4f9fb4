/* fd_adamax.c -- Adamax (torch.optim.Adamax), one fused pass per element.
 *
 * Shapes: a table of `ntensors` tensors, tensor i has sizes[i] elements in every column:
 *   param[i], exp_avg[i], exp_inf[i]     written
 *   grad[i]                              read
 * Scalars (float64 in, rounded once to the element type T): lerp_weight, beta2, eps, weight_decay,
 * clr (= lr / (1 - beta1**t)); flags lerp_from_grad, maximize. lerp_weight and lerp_from_grad are
 * torch's lerp_(g, w = 1 - beta1): w and 0 when w < 0.5, else w - 1 and 1 (rules/adamax.py).
 * Domain (FD_ERR_ARG otherwise, as optim.Adamax and the rule's derived scalars):
 * 0 < lerp_weight < 0.5 when lerp_from_grad == 0, -0.5 <= lerp_weight <= 0 when it is 1;
 * 0 <= beta2 < 1; eps, weight_decay, clr finite and >= 0.
 *
 * Per element, in the NumPy reference's order (backends/numpy_ref/adamax.py):
 *   g = maximize ? -g : g
 *   g = g + weight_decay * p                       (only if weight_decay != 0)
 *   m = (lerp_from_grad ? g : m) + lerp_weight * (g - m)
 *   u = max(u * beta2, |g| + eps)                  (NaN from either side propagates)
 *   p = p - (clr * m) / u
 */
#ifndef FD_T /* ------------------------------------------------------------ untyped part */
#include "fd_internal.h"

FD_EXACT_FP

#define FD_TYPED_FILE "fd_adamax.c"
#include "fd_typed.h"

#else /* ------------------------------------------------------------------- typed part (FD_T) */

typedef struct {
    FD_T *const *p;
    FD_T *const *m;
    FD_T *const *u;
    const FD_T *const *g;
    FD_T gsign, lw, beta2, eps, wd, clr;
    int wd_on, from_grad;
} FD_S(adamax_ctx);

FD_INLINE void FD_S(adamax_loop)(int64_t n, FD_T *FD_RESTRICT p, FD_T *FD_RESTRICT m,
                                 FD_T *FD_RESTRICT u, const FD_T *FD_RESTRICT g,
                                 const FD_S(adamax_ctx) *c, const int wd_on, const int from_grad)
{
    const FD_T gs = c->gsign, lw = c->lw, b2 = c->beta2, eps = c->eps, wd = c->wd, clr = c->clr;
    for (int64_t i = 0; i < n; i++) {
        FD_T gi = g[i] * gs;
        FD_T pi = p[i];
        if (wd_on) gi = gi + wd * pi;
        FD_T mi = m[i];
        mi = (from_grad ? gi : mi) + lw * (gi - mi);
        FD_T ui = u[i] * b2;
        FD_T ai = FD_FABS(gi) + eps;
        ui = ((ui > ai) | (ui != ui)) ? ui : ai;
        m[i] = mi;
        u[i] = ui;
        p[i] = pi - (clr * mi) / ui;
    }
}

FD_INLINE void FD_BODY(adamax_seg)(const void *ctx, int64_t t, int64_t off, int64_t len)
{
    const FD_S(adamax_ctx) *c = (const FD_S(adamax_ctx) *)ctx;
    FD_T *p = c->p[t] + off, *m = c->m[t] + off, *u = c->u[t] + off;
    const FD_T *g = c->g[t] + off;
    if (c->from_grad) {
        if (c->wd_on) FD_S(adamax_loop)(len, p, m, u, g, c, 1, 1);
        else FD_S(adamax_loop)(len, p, m, u, g, c, 0, 1);
    } else {
        if (c->wd_on) FD_S(adamax_loop)(len, p, m, u, g, c, 1, 0);
        else FD_S(adamax_loop)(len, p, m, u, g, c, 0, 0);
    }
}

FD_MULTIVERSION(FD_S(adamax_seg), (const void *ctx, int64_t t, int64_t off, int64_t len),
                (ctx, t, off, len))

/* defines fd_adamax_f32 and fd_adamax_f64 (FD_S appends the type suffix) */
int FD_S(fd_adamax)(int64_t ntensors, const int64_t *sizes, FD_T *const *param,
                    FD_T *const *exp_avg, FD_T *const *exp_inf, const FD_T *const *grad,
                    double lerp_weight, int lerp_from_grad, double beta2, double eps,
                    double weight_decay, double clr, int maximize)
{
    int64_t total;
    FD_CHECK(fd_check_sizes(ntensors, sizes, &total));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(param), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(exp_avg), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(exp_inf), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(grad), sizeof(FD_T)));
    FD_REQUIRE(lerp_from_grad ? (lerp_weight >= -0.5 && lerp_weight <= 0.0)
                              : (lerp_weight > 0.0 && lerp_weight < 0.5));
    FD_REQUIRE(fd_unit(beta2));
    FD_REQUIRE(fd_nonneg(eps) && fd_nonneg(weight_decay) && fd_nonneg(clr));
    if (total == 0) return FD_OK;

    FD_S(adamax_ctx) c;
    c.p = param;
    c.m = exp_avg;
    c.u = exp_inf;
    c.g = grad;
    c.gsign = maximize ? -FD_ONE : FD_ONE;
    c.lw = (FD_T)lerp_weight;
    c.beta2 = (FD_T)beta2;
    c.eps = (FD_T)eps;
    c.wd = (FD_T)weight_decay;
    c.clr = (FD_T)clr;
    c.wd_on = weight_decay != 0.0;
    c.from_grad = lerp_from_grad != 0;
    fd_run_segments(ntensors, sizes, total, FD_PAR_MIN_HEAVY, FD_PICK(FD_S(adamax_seg)), &c);
    return FD_OK;
}

#endif /* FD_T */

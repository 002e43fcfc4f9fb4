/* fd_adadelta.c -- Adadelta (torch.optim.Adadelta), one fused pass per element.
 *
 * Shapes: a table of `ntensors` tensors, tensor i has sizes[i] elements in every column:
 *   param[i], square_avg[i], acc_delta[i]     written
 *   grad[i]                                   read
 * Scalars (float64 in, rounded once to the element type T): lr, rho, one_minus_rho (= 1 - rho),
 * eps, weight_decay; flag maximize. Domain (FD_ERR_ARG otherwise, as optim.Adadelta): lr, eps,
 * weight_decay finite and >= 0; 0 <= rho <= 1 and 0 <= one_minus_rho <= 1.
 *
 * Per element, in the NumPy reference's order (backends/numpy_ref/adadelta.py):
 *   g = maximize ? -g : g
 *   g = g + weight_decay * p                       (only if weight_decay != 0)
 *   v = v * rho + (one_minus_rho * g) * g
 *   d = sqrt(a + eps) / sqrt(v + eps) * g          (a: acc_delta before this step)
 *   a = a * rho + (one_minus_rho * d) * d
 *   p = p - lr * d
 */
#ifndef FD_T /* ------------------------------------------------------------ untyped part */
#include "fd_internal.h"

FD_EXACT_FP

#define FD_TYPED_FILE "fd_adadelta.c"
#include "fd_typed.h"

#else /* ------------------------------------------------------------------- typed part (FD_T) */

typedef struct {
    FD_T *const *p;
    FD_T *const *v;
    FD_T *const *a;
    const FD_T *const *g;
    FD_T gsign, lr, rho, omr, eps, wd;
    int wd_on;
} FD_S(adadelta_ctx);

FD_INLINE void FD_S(adadelta_loop)(int64_t n, FD_T *FD_RESTRICT p, FD_T *FD_RESTRICT v,
                                   FD_T *FD_RESTRICT a, const FD_T *FD_RESTRICT g,
                                   const FD_S(adadelta_ctx) *c, const int wd_on)
{
    const FD_T gs = c->gsign, lr = c->lr, rho = c->rho, omr = c->omr, eps = c->eps, wd = c->wd;
    for (int64_t i = 0; i < n; i++) {
        FD_T gi = g[i] * gs;
        FD_T pi = p[i];
        if (wd_on) gi = gi + wd * pi;
        FD_T vi = v[i] * rho + (omr * gi) * gi;
        FD_T ai = a[i];
        FD_T di = FD_SQRT(ai + eps) / FD_SQRT(vi + eps) * gi;
        v[i] = vi;
        a[i] = ai * rho + (omr * di) * di;
        p[i] = pi - lr * di;
    }
}

FD_INLINE void FD_BODY(adadelta_seg)(const void *ctx, int64_t t, int64_t off, int64_t len)
{
    const FD_S(adadelta_ctx) *c = (const FD_S(adadelta_ctx) *)ctx;
    FD_T *p = c->p[t] + off, *v = c->v[t] + off, *a = c->a[t] + off;
    const FD_T *g = c->g[t] + off;
    if (c->wd_on) FD_S(adadelta_loop)(len, p, v, a, g, c, 1);
    else FD_S(adadelta_loop)(len, p, v, a, g, c, 0);
}

FD_MULTIVERSION(FD_S(adadelta_seg), (const void *ctx, int64_t t, int64_t off, int64_t len),
                (ctx, t, off, len))

/* defines fd_adadelta_f32 and fd_adadelta_f64 (FD_S appends the type suffix) */
int FD_S(fd_adadelta)(int64_t ntensors, const int64_t *sizes, FD_T *const *param,
                      FD_T *const *square_avg, FD_T *const *acc_delta, const FD_T *const *grad,
                      double lr, double rho, double one_minus_rho, double eps, double weight_decay,
                      int maximize)
{
    int64_t total;
    FD_CHECK(fd_check_sizes(ntensors, sizes, &total));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(param), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(square_avg), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(acc_delta), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(grad), sizeof(FD_T)));
    FD_REQUIRE(rho >= 0.0 && rho <= 1.0 && one_minus_rho >= 0.0 && one_minus_rho <= 1.0);
    FD_REQUIRE(fd_nonneg(lr) && fd_nonneg(eps) && fd_nonneg(weight_decay));
    if (total == 0) return FD_OK;

    FD_S(adadelta_ctx) c;
    c.p = param;
    c.v = square_avg;
    c.a = acc_delta;
    c.g = grad;
    c.gsign = maximize ? -FD_ONE : FD_ONE;
    c.lr = (FD_T)lr;
    c.rho = (FD_T)rho;
    c.omr = (FD_T)one_minus_rho;
    c.eps = (FD_T)eps;
    c.wd = (FD_T)weight_decay;
    c.wd_on = weight_decay != 0.0;
    fd_run_segments(ntensors, sizes, total, FD_PAR_MIN_HEAVY, FD_PICK(FD_S(adadelta_seg)), &c);
    return FD_OK;
}

#endif /* FD_T */

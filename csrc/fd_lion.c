/* fd_lion.c -- Lion (Chen et al. 2023; optax.lion), one fused pass per element.
 *
 * Shapes: a table of `ntensors` tensors, tensor i has sizes[i] elements in every column:
 *   param[i], exp_avg[i]     written
 *   grad[i]                  read
 * Scalars (float64 in, rounded once to the element type T): lr, beta1, one_minus_beta1, beta2,
 * one_minus_beta2, decay (= 1 - lr*wd, the decoupled weight decay factor; 1 without decay); flag
 * maximize. Domain (FD_ERR_ARG otherwise, as optim.Lion and its derived scalars): lr finite, >= 0;
 * 0 <= beta1, beta2 < 1; 0 < one_minus_beta1, one_minus_beta2 <= 1; decay finite and <= 1.
 *
 * Per element, in the NumPy reference's order (backends/numpy_ref/lion.py):
 *   g = maximize ? -g : g
 *   c = m * beta1 + one_minus_beta1 * g
 *   p = p * decay                          (exact when decay == 1, so it is always applied)
 *   p = p - lr * sign(c)                   (sign: +1, -1, 0 for +-0, NaN for NaN; lr * sign(c) is
 *                                           formed from lr's and c's bits, the same value)
 *   m = m * beta2 + one_minus_beta2 * g
 * 20 bytes per float32 parameter: read p, g, m; write p, m.
 */
#ifndef FD_T /* ------------------------------------------------------------ untyped part */
#include "fd_internal.h"

FD_EXACT_FP

#include <string.h>

/* the unsigned integer type of each element type's bits (FD_LION_BITS(FD_SFX) in the typed part) */
#define FD_LION_BITS_f32 uint32_t
#define FD_LION_BITS_f64 uint64_t
#define FD_LION_BITS(sfx) FD_CAT(FD_LION_BITS, sfx)

#define FD_TYPED_FILE "fd_lion.c"
#include "fd_typed.h"

#else /* ------------------------------------------------------------------- typed part (FD_T) */

typedef struct {
    FD_T *const *p;
    FD_T *const *m;
    const FD_T *const *g;
    FD_T gsign, lr, b1, c1, b2, c2, decay;
} FD_S(lion_ctx);

FD_INLINE void FD_S(lion_loop)(int64_t n, FD_T *FD_RESTRICT p, FD_T *FD_RESTRICT m,
                               const FD_T *FD_RESTRICT g, const FD_S(lion_ctx) *c)
{
    typedef FD_LION_BITS(FD_SFX) bits_t;
    const bits_t signbit = (bits_t)1 << (8 * sizeof(FD_T) - 1);
    /* maximize folded into the gradient's coefficients: (c1 * -1) * g == c1 * (-g), exactly */
    const FD_T b1 = c->b1, c1 = c->c1 * c->gsign, b2 = c->b2, c2 = c->c2 * c->gsign;
    const FD_T decay = c->decay, zero = 0;
    bits_t lr;
    memcpy(&lr, &c->lr, sizeof lr);
    for (int64_t i = 0; i < n; i++) {
        FD_T gi = g[i];
        FD_T mi = m[i];
        FD_T ci = mi * b1 + c1 * gi;
        /* u = lr * sign(c), bit for bit (lr >= 0): lr with c's sign bit where c != 0, +0 where
         * c == +-0 (so p - u == p exactly), NaN where c is NaN. Bit operations and selects
         * only: branch-free, so the loop vectorises (branches on the sign of random data
         * mispredict half the time, 8 ns an element; 0/1 comparisons and a multiply by lr cost
         * 8% more than these at 20 B/element, measured). */
        bits_t cb, ub;
        memcpy(&cb, &ci, sizeof cb);
        ub = ((cb & signbit) | lr) & (ci != zero ? ~(bits_t)0 : (bits_t)0);
        FD_T u;
        memcpy(&u, &ub, sizeof u);
        u = ci != ci ? ci : u;
        FD_T pi = p[i] * decay;
        p[i] = pi - u;
        m[i] = mi * b2 + c2 * gi;
    }
}

FD_INLINE void FD_BODY(lion_seg)(const void *ctx, int64_t t, int64_t off, int64_t len)
{
    const FD_S(lion_ctx) *c = (const FD_S(lion_ctx) *)ctx;
    FD_S(lion_loop)(len, c->p[t] + off, c->m[t] + off, c->g[t] + off, c);
}

FD_MULTIVERSION(FD_S(lion_seg), (const void *ctx, int64_t t, int64_t off, int64_t len),
                (ctx, t, off, len))

int FD_S(fd_lion)(int64_t ntensors, const int64_t *sizes, FD_T *const *param,
                  FD_T *const *exp_avg, const FD_T *const *grad, double lr, double beta1,
                  double one_minus_beta1, double beta2, double one_minus_beta2, double decay,
                  int maximize)
{
    int64_t total;
    FD_CHECK(fd_check_sizes(ntensors, sizes, &total));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(param), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(exp_avg), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(grad), sizeof(FD_T)));
    FD_REQUIRE(fd_nonneg(lr) && fd_unit(beta1) && fd_unit(beta2));
    FD_REQUIRE(one_minus_beta1 > 0.0 && one_minus_beta1 <= 1.0);
    FD_REQUIRE(one_minus_beta2 > 0.0 && one_minus_beta2 <= 1.0);
    FD_REQUIRE(fd_finite(decay) && decay <= 1.0);
    if (total == 0) return FD_OK;

    FD_S(lion_ctx) c;
    c.p = param;
    c.m = exp_avg;
    c.g = grad;
    c.gsign = maximize ? -FD_ONE : FD_ONE;
    c.lr = (FD_T)lr;
    c.b1 = (FD_T)beta1;
    c.c1 = (FD_T)one_minus_beta1;
    c.b2 = (FD_T)beta2;
    c.c2 = (FD_T)one_minus_beta2;
    c.decay = (FD_T)decay;
    fd_run_segments(ntensors, sizes, total, FD_PAR_MIN_LIGHT, FD_PICK(FD_S(lion_seg)), &c);
    return FD_OK;
}

#endif /* FD_T */

/* fd_noise.c -- gradient noise after an SGD update: p <- p + sigma * z, z ~ N(0, 1), stateless.
 *
 * Shapes: a table of `ntensors` tensors, tensor i has sizes[i] elements:
 *   param[i]             written
 *   param_index[i]       (int64, one per tensor) the tensor's position in the optimizer's list
 * Scalars: sigma (float64 in, rounded once to the element type T; = noise_std * t**-noise_decay,
 * computed by the rule), seed and step (int64). Domain (FD_ERR_ARG otherwise): sigma finite and
 * >= 0, seed >= 0, step >= 1, every param_index[i] >= 0.
 *
 * z is a pure function of (seed, param_index[i], step, element index e) -- no state, the same for
 * every thread count and split of the table, and the same as backends/numpy_ref/noise.py up to the
 * last bits of log/sin/cos:
 *   philox(ctr[4], key[2])  Philox4x32-10 (Salmon et al. 2011, Random123's reference rounds)
 *   K = philox({idx_lo, idx_hi, 0, 0}, {seed_lo, seed_hi})[0..1]          once per tensor
 *   x = philox({j_lo, j_hi, step_lo, step_hi}, K),  j = e / 2             once per pair of elements
 *   u1 = (((x1 << 32 | x0) >> 11) + 1) * 2^-53     in (0, 1]
 *   u2 = ((x3 << 32 | x2) >> 11) * 2^-53           in [0, 1)
 *   r = sqrt(-2 * log(u1)),  a = u2 * 2pi          (float64; Box-Muller)
 *   z = r * cos(a) for even e, r * sin(a) for odd e, then rounded to T
 * Per element: p = p + sigma * z (in T).
 */
#ifndef FD_T /* ------------------------------------------------------------ untyped part */
#include "fd_internal.h"
#include "fd_philox.h"

FD_EXACT_FP

/* Noise costs ~20-40 ns per element (two Philox blocks per pair, log, sqrt, sin, cos), so a
 * thread pays off on far fewer elements than for the streaming updates. */
#define FD_PAR_MIN_NOISE 4096

/* The per-tensor key K from (seed, index): fd_philox.h. */
static inline void fd_noise_key(uint64_t seed, uint64_t index, uint32_t key[2])
{
    fd_philox_tensor_key(seed, index, key);
}

/* The two normals of pair j at step `step` under key `key`: *z0 (even element), *z1 (odd). */
static inline void fd_noise_pair(const uint32_t key[2], uint64_t step, uint64_t j, double *z0,
                                 double *z1)
{
    uint32_t x[4] = {(uint32_t)j, (uint32_t)(j >> 32), (uint32_t)step, (uint32_t)(step >> 32)};
    fd_philox4x32_10(x, key[0], key[1]);
    const double two53 = 1.0 / 9007199254740992.0; /* 2^-53 */
    uint64_t m1 = (((uint64_t)x[1] << 32) | x[0]) >> 11;
    uint64_t m2 = (((uint64_t)x[3] << 32) | x[2]) >> 11;
    double u1 = (double)(m1 + 1) * two53;
    double u2 = (double)m2 * two53;
    double r = sqrt(-2.0 * log(u1));
    double a = u2 * 6.283185307179586;
    *z0 = r * cos(a);
    *z1 = r * sin(a);
}

#define FD_TYPED_FILE "fd_noise.c"
#include "fd_typed.h"

#else /* ------------------------------------------------------------------- typed part (FD_T) */

typedef struct {
    FD_T *const *p;
    const int64_t *index;
    uint64_t seed, step;
    FD_T sigma;
} FD_S(noise_ctx);

/* elements [off, off+len) of tensor t; element e of the tensor is x[e - off] */
FD_INLINE void FD_BODY(noise_seg)(const void *ctx, int64_t t, int64_t off, int64_t len)
{
    const FD_S(noise_ctx) *c = (const FD_S(noise_ctx) *)ctx;
    FD_T *FD_RESTRICT x = c->p[t];
    const FD_T s = c->sigma;
    uint32_t key[2];
    fd_noise_key(c->seed, (uint64_t)c->index[t], key);
    int64_t e = off, end = off + len;
    double z0, z1;
    if (e & 1) { /* an odd first element: the second half of its pair */
        fd_noise_pair(key, c->step, (uint64_t)(e >> 1), &z0, &z1);
        x[e] = x[e] + s * (FD_T)z1;
        e++;
    }
    for (; e + 1 < end; e += 2) {
        fd_noise_pair(key, c->step, (uint64_t)(e >> 1), &z0, &z1);
        x[e] = x[e] + s * (FD_T)z0;
        x[e + 1] = x[e + 1] + s * (FD_T)z1;
    }
    if (e < end) { /* an even last element: the first half of its pair */
        fd_noise_pair(key, c->step, (uint64_t)(e >> 1), &z0, &z1);
        x[e] = x[e] + s * (FD_T)z0;
    }
}

FD_MULTIVERSION(FD_S(noise_seg), (const void *ctx, int64_t t, int64_t off, int64_t len),
                (ctx, t, off, len))

int FD_S(fd_noise)(int64_t ntensors, const int64_t *sizes, FD_T *const *param,
                   const int64_t *param_index, double sigma, int64_t seed, int64_t step)
{
    int64_t total;
    FD_CHECK(fd_check_sizes(ntensors, sizes, &total));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(param), sizeof(FD_T)));
    FD_CHECK(fd_check_ptr(param_index, ntensors, sizeof(int64_t)));
    FD_REQUIRE(fd_nonneg(sigma) && seed >= 0 && step >= 1);
    for (int64_t i = 0; i < ntensors; i++) FD_REQUIRE(param_index[i] >= 0);
    if (total == 0) return FD_OK;
    FD_S(noise_ctx) c;
    c.p = param;
    c.index = param_index;
    c.seed = (uint64_t)seed;
    c.step = (uint64_t)step;
    c.sigma = (FD_T)sigma;
    fd_run_segments(ntensors, sizes, total, FD_PAR_MIN_NOISE, FD_PICK(FD_S(noise_seg)), &c);
    return FD_OK;
}

#endif /* FD_T */

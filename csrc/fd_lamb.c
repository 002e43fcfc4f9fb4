/* fd_lamb.c -- LAMB (You et al. 2020; optax.lamb): Adam's direction plus decoupled weight decay,
 * scaled per tensor by the trust ratio ||p|| / ||r||; every tensor of the table in one call.
 *
 * Shapes: a table of `ntensors` tensors, tensor i has sizes[i] elements in every column:
 *   param[i], exp_avg[i], exp_avg_sq[i]      written
 *   grad[i]                                  read
 * Scalars (float64 in; all but lr rounded once to the element type T): lr, beta1, one_minus_beta1,
 * beta2, one_minus_beta2, eps, weight_decay, inv_bias_correction1, inv_bias_correction2
 * (= 1 / (1 - beta**t), or 1 without bias correction); flag maximize. Domain (FD_ERR_ARG otherwise,
 * as optim.LAMB and its derived scalars): lr, eps, weight_decay finite and >= 0;
 * 0 <= beta1, beta2 < 1; 0 < one_minus_beta1, one_minus_beta2 <= 1; inv_bias_correction1,
 * inv_bias_correction2 finite and >= 1.
 *
 * Per element, in the NumPy reference's order (backends/numpy_ref/lamb.py):
 *   g = maximize ? -g : g
 *   m = m * beta1 + one_minus_beta1 * g
 *   v = v * beta2 + (one_minus_beta2 * g) * g
 *   r = (m * inv_bias_correction1) / (sqrt(v * inv_bias_correction2) + eps)
 *   r = r + weight_decay * p                 (only if weight_decay != 0)
 * per tensor, over its elements, in float64 (p before the update):
 *   pn = sqrt(sum p*p), rn = sqrt(sum r*r)
 *   step = lr * (pn > 0 && rn > 0 ? pn / rn : 1)        (float64, then rounded once to T)
 * per element:
 *   p = p - step * r
 *
 * Passes and bytes. A tensor's norms are needed before any of its elements is updated, so it takes two
 * passes: pass 1 updates m and v and accumulates the norms (reads p, g, m, v; writes m, v); pass 2
 * rebuilds r from the updated m, v and p (the same code, so the same bits) and updates p (reads p, m,
 * v; writes p). The work is cut into the fixed chunks of fd_run_chunks. A tensor that lies within one
 * chunk takes both passes back to back on one thread, the second from cache: Adam's 28 bytes per
 * float32 parameter from memory. A tensor that spans chunks leaves per-chunk partial sums; once every
 * chunk has run pass 1 they are combined in chunk order, and its pass 2 runs in a second parallel
 * sweep: 40 bytes per float32 parameter (Adam's 28 plus a second read of p, m and v). No schedule does
 * better for a tensor larger than the cache: pass 2 must read p and, to rebuild r, 8 more bytes (m and
 * v, or an r written by pass 1 and read back: the same count).
 *
 * Compute. Each pass costs one division and one square root per element (the bias corrections are
 * multipliers, 1/(1 - beta**t) from the rule, as Adam's step_size is): with docs/update-rules.md's literal
 * m/bc1 and v/bc2 it was three divisions and a square root per pass, which made the kernel
 * compute-bound (about 80% of the two-pass roofline on 2 cores, measured). The results differ from
 * the literal divisions by about an ulp, inside the contract's tolerances.
 *
 * Determinism: the chunks depend only on the table; a piece of a tensor sums over 16 interleaved
 * float64 lanes in element order, combined pairwise; a spanning tensor's per-chunk partials are added
 * in chunk order. Results do not depend on the thread count or the code path (no contraction).
 */
#ifndef FD_T /* ------------------------------------------------------------ untyped part */
#include "fd_internal.h"

FD_EXACT_FP

#define FD_LAMB_LANES 16

/* lr * trust ratio from the squared norms, in float64 (docs/update-rules.md: 1 unless both norms are > 0,
 * which also makes it 1 when a norm is NaN). */
static inline double fd_lamb_step(double lr, double pn2, double rn2)
{
    double pn = sqrt(pn2), rn = sqrt(rn2);
    return lr * ((pn > 0.0 && rn > 0.0) ? pn / rn : 1.0);
}

#define FD_TYPED_FILE "fd_lamb.c"
#include "fd_typed.h"

#else /* ------------------------------------------------------------------- typed part (FD_T) */

typedef struct {
    FD_T *const *p;
    FD_T *const *m;
    FD_T *const *v;
    const FD_T *const *g;
    const int64_t *sizes;
    double lr;
    FD_T gsign, b1, c1, b2, c2, eps, wd, ibc1, ibc2;
    int wd_on;
    /* pass 2 of the tensors that span chunks: their indices (increasing) and rounded lr*trust */
    int64_t nspan;
    const int64_t *span_t;
    const FD_T *span_step;
} FD_S(lamb_ctx);

/* Pass 1 over n elements: update m, v; *pn2 = sum p*p, *rn2 = sum r*r (float64). */
FD_INLINE void FD_S(lamb_pass1)(int64_t n, const FD_T *FD_RESTRICT p, FD_T *FD_RESTRICT m,
                                FD_T *FD_RESTRICT v, const FD_T *FD_RESTRICT g,
                                const FD_S(lamb_ctx) *c, const int wd_on, double *pn2, double *rn2)
{
    /* maximize folded into c1: (c1 * -1) * g == c1 * (-g), and (c2 * -g) * -g == (c2 * g) * g,
     * exactly */
    const FD_T b1 = c->b1, c1 = c->c1 * c->gsign, b2 = c->b2, c2 = c->c2;
    const FD_T ibc1 = c->ibc1, ibc2 = c->ibc2, eps = c->eps, wd = c->wd;
    double lp[FD_LAMB_LANES] = {0}, lq[FD_LAMB_LANES] = {0};
    int64_t i = 0;
    for (; i + FD_LAMB_LANES <= n; i += FD_LAMB_LANES) {
        for (int k = 0; k < FD_LAMB_LANES; k++) {
            FD_T pi = p[i + k];
            FD_T gi = g[i + k];
            FD_T mi = m[i + k] * b1 + c1 * gi;
            FD_T vi = v[i + k] * b2 + (c2 * gi) * gi;
            m[i + k] = mi;
            v[i + k] = vi;
            FD_T ri = (mi * ibc1) / (FD_SQRT(vi * ibc2) + eps);
            if (wd_on) ri = ri + wd * pi;
            double pd = (double)pi, rd = (double)ri;
            lp[k] += pd * pd;
            lq[k] += rd * rd;
        }
    }
    for (int w = FD_LAMB_LANES / 2; w >= 1; w /= 2) /* pairwise combine of the lanes, fixed order */
        for (int k = 0; k < w; k++) {
            lp[k] += lp[k + w];
            lq[k] += lq[k + w];
        }
    double sp = lp[0], sq = lq[0];
    for (; i < n; i++) {
        FD_T pi = p[i];
        FD_T gi = g[i];
        FD_T mi = m[i] * b1 + c1 * gi;
        FD_T vi = v[i] * b2 + (c2 * gi) * gi;
        m[i] = mi;
        v[i] = vi;
        FD_T ri = (mi * ibc1) / (FD_SQRT(vi * ibc2) + eps);
        if (wd_on) ri = ri + wd * pi;
        double pd = (double)pi, rd = (double)ri;
        sp += pd * pd;
        sq += rd * rd;
    }
    *pn2 = sp;
    *rn2 = sq;
}

/* Pass 2 over n elements: p = p - step * r, r rebuilt from the updated m, v and p. */
FD_INLINE void FD_S(lamb_pass2)(int64_t n, FD_T *FD_RESTRICT p, const FD_T *FD_RESTRICT m,
                                const FD_T *FD_RESTRICT v, const FD_S(lamb_ctx) *c,
                                const int wd_on, const FD_T step)
{
    const FD_T ibc1 = c->ibc1, ibc2 = c->ibc2, eps = c->eps, wd = c->wd;
    for (int64_t i = 0; i < n; i++) {
        FD_T pi = p[i];
        FD_T ri = (m[i] * ibc1) / (FD_SQRT(v[i] * ibc2) + eps);
        if (wd_on) ri = ri + wd * pi;
        p[i] = pi - step * ri;
    }
}

/* Pass 1 of a piece; a tensor wholly inside this chunk is finished here (pass 2 from cache), a
 * piece of a tensor that spans chunks leaves its partial sums in the chunk's acc: acc[0..1] for the
 * chunk's first piece when it continues a tensor begun in an earlier chunk (off > 0), acc[2..3] for
 * its last piece when that begins a tensor which goes on into the next chunk (off == 0). */
FD_INLINE void FD_BODY(lamb_chunk)(const void *ctx, int64_t t, int64_t off, int64_t len, double *acc)
{
    const FD_S(lamb_ctx) *c = (const FD_S(lamb_ctx) *)ctx;
    FD_T *p = c->p[t] + off, *m = c->m[t] + off, *v = c->v[t] + off;
    const FD_T *g = c->g[t] + off;
    double pn2, rn2;
    if (c->wd_on) FD_S(lamb_pass1)(len, p, m, v, g, c, 1, &pn2, &rn2);
    else FD_S(lamb_pass1)(len, p, m, v, g, c, 0, &pn2, &rn2);
    if (off == 0 && len == c->sizes[t]) {
        FD_T step = (FD_T)fd_lamb_step(c->lr, pn2, rn2);
        if (c->wd_on) FD_S(lamb_pass2)(len, p, m, v, c, 1, step);
        else FD_S(lamb_pass2)(len, p, m, v, c, 0, step);
    } else if (off == 0) {
        acc[2] = pn2;
        acc[3] = rn2;
    } else {
        acc[0] = pn2;
        acc[1] = rn2;
    }
}

FD_MULTIVERSION(FD_S(lamb_chunk), (const void *ctx, int64_t t, int64_t off, int64_t len, double *acc),
                (ctx, t, off, len, acc))

/* Pass 2 of the pieces of the tensors that span chunks (the others were finished in pass 1). */
FD_INLINE void FD_BODY(lamb_apply)(const void *ctx, int64_t t, int64_t off, int64_t len, double *acc)
{
    const FD_S(lamb_ctx) *c = (const FD_S(lamb_ctx) *)ctx;
    (void)acc;
    if (off == 0 && len == c->sizes[t]) return;
    int64_t lo = 0, hi = c->nspan - 1; /* the spanning tensors are listed in increasing order */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (c->span_t[mid] < t) lo = mid + 1;
        else hi = mid;
    }
    FD_T *p = c->p[t] + off;
    const FD_T *m = c->m[t] + off, *v = c->v[t] + off;
    if (c->wd_on) FD_S(lamb_pass2)(len, p, m, v, c, 1, c->span_step[lo]);
    else FD_S(lamb_pass2)(len, p, m, v, c, 0, c->span_step[lo]);
}

FD_MULTIVERSION(FD_S(lamb_apply), (const void *ctx, int64_t t, int64_t off, int64_t len, double *acc),
                (ctx, t, off, len, acc))

int FD_S(fd_lamb)(int64_t ntensors, const int64_t *sizes, FD_T *const *param, FD_T *const *exp_avg,
                  FD_T *const *exp_avg_sq, const FD_T *const *grad, double lr, double beta1,
                  double one_minus_beta1, double beta2, double one_minus_beta2, double eps,
                  double weight_decay, double inv_bias_correction1,
                  double inv_bias_correction2, int maximize)
{
    int64_t total;
    FD_CHECK(fd_check_sizes(ntensors, sizes, &total));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(param), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(exp_avg), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(exp_avg_sq), sizeof(FD_T)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(grad), sizeof(FD_T)));
    FD_REQUIRE(fd_nonneg(lr) && fd_nonneg(eps) && fd_nonneg(weight_decay));
    FD_REQUIRE(fd_unit(beta1) && fd_unit(beta2));
    FD_REQUIRE(one_minus_beta1 > 0.0 && one_minus_beta1 <= 1.0);
    FD_REQUIRE(one_minus_beta2 > 0.0 && one_minus_beta2 <= 1.0);
    FD_REQUIRE(fd_finite(inv_bias_correction1) && inv_bias_correction1 >= 1.0);
    FD_REQUIRE(fd_finite(inv_bias_correction2) && inv_bias_correction2 >= 1.0);
    if (total == 0) return FD_OK;

    /* one reading of fd_set_flush_denormal for both passes and the trust ratios between them */
    const int flush = fd_flush_enter();
    const unsigned csr = fd_flush_begin(flush);
    FD_S(lamb_ctx) c;
    c.p = param;
    c.m = exp_avg;
    c.v = exp_avg_sq;
    c.g = grad;
    c.sizes = sizes;
    c.lr = lr;
    c.gsign = maximize ? -FD_ONE : FD_ONE;
    c.b1 = (FD_T)beta1;
    c.c1 = (FD_T)one_minus_beta1;
    c.b2 = (FD_T)beta2;
    c.c2 = (FD_T)one_minus_beta2;
    c.eps = (FD_T)eps;
    c.wd = (FD_T)weight_decay;
    c.ibc1 = (FD_T)inv_bias_correction1;
    c.ibc2 = (FD_T)inv_bias_correction2;
    c.wd_on = weight_decay != 0.0;
    c.nspan = 0;
    c.span_t = NULL;
    c.span_step = NULL;

    double acc[FD_MAX_CHUNKS * FD_ACC_WORDS];
    fd_run_chunks(ntensors, sizes, total, FD_PICK(FD_S(lamb_chunk)), &c, acc);

    /* Combine the partials of the tensors that span chunks, in chunk order: walk the chunks with a
     * cursor on the tensors (tensor t starts at flattened element `start`). */
    int64_t span_t[FD_MAX_CHUNKS];
    FD_T span_step[FD_MAX_CHUNKS];
    int64_t nspan = 0, nch = fd_nchunks(total), t = 0, start = 0;
    double sp = 0.0, sq = 0.0;
    for (int64_t k = 0; k < nch; k++) {
        int64_t lo = fd_chunk_start(total, k, nch), hi = fd_chunk_start(total, k + 1, nch);
        if (hi <= lo) continue;
        while (start + sizes[t] <= lo) start += sizes[t++]; /* t holds element lo */
        if (start < lo) { /* the chunk continues tensor t */
            sp += acc[k * FD_ACC_WORDS];
            sq += acc[k * FD_ACC_WORDS + 1];
            if (start + sizes[t] <= hi) { /* ... which ends in it */
                span_t[nspan] = t;
                span_step[nspan++] = (FD_T)fd_lamb_step(lr, sp, sq);
            }
        }
        while (start + sizes[t] <= hi - 1) start += sizes[t++]; /* t holds element hi - 1 */
        if (start >= lo && start + sizes[t] > hi) { /* a tensor begins here and goes on */
            sp = acc[k * FD_ACC_WORDS + 2];
            sq = acc[k * FD_ACC_WORDS + 3];
        }
    }
    if (nspan > 0) {
        c.nspan = nspan;
        c.span_t = span_t;
        c.span_step = span_step;
        double unused[FD_MAX_CHUNKS * FD_ACC_WORDS];
        fd_run_chunks(ntensors, sizes, total, FD_PICK(FD_S(lamb_apply)), &c, unused);
    }
    fd_flush_end(flush, csr);
    fd_flush_leave();
    return FD_OK;
}

#endif /* FD_T */

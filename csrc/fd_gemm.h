/* fd_gemm.h -- the GEMM engine behind the dense-layer kernels (internal; not part of the public ABI).
 *
 * One call computes, for each of `batch` items,
 *
 *     C(m x n) = [C +] A(m x k) . B(k x n) [+ bias(n), broadcast over rows]
 *     bsum(n) += column sums of B                       (optional; db of the weight gradient)
 *
 * with A(i, p) = a[i*rsa + p*csa] and B(p, j) = b[p*rsb + j*csb] (any strides: the transposes of
 * backprop, dy . w^T and x^T . dy, are read in place) and C(i, j) = c[i*ldc + j]. Item t adds
 * t*bsa, t*bsb, t*bsc, t*bsbias, t*bsbsum to the base pointers (0 = shared by all items).
 *
 * Code paths, chosen from the shapes and the thread count:
 *   - packed (BLIS style): B panels KC x NC and A blocks MC x KC are packed into aligned scratch,
 *     a register-blocked MR x NR micro-kernel (6x16 f32 / 6x8 f64 with AVX2+FMA) runs over them;
 *   - threaded (one item on several threads): no barrier inside the region; the threads take units
 *     (ranges of row panels, or of column strips when there are few rows) from a shared counter,
 *     packing each micro-panel of A and B once, on first use, into whole-operand scratch (a thread
 *     never waits for another's packing: it packs a private copy instead), so a descheduled thread
 *     holds up only its own unit; items too big for that scratch use the blocked packed path with
 *     a static 2-D split. A GEMM whose calling thread waits long for its team (a busy machine)
 *     makes the following GEMMs run on one thread for a while (the back-off, fd_gemm.c);
 *   - direct (no packing of whole operands): for small matrices, or when A is swept only once or
 *     twice, the micro-kernel reads A and B where they lie (a B strip that is transposed or narrower
 *     than NR, and a micro-panel of a transposed A reused by several strips, are copied to stack
 *     buffers);
 *   - batch-parallel: many small items are spread over threads, each item run by one thread;
 *   - k-split: a long reduction into a small output (dw of a shared weight over a big batch) is cut
 *     into chunks whose size depends only on the shapes; per-chunk partials are summed in chunk order.
 * Every output element is the same fused multiply-add chain over p (blocked by KC, block results
 * added to C in order, then the bias), whatever the path, thread count, partition or schedule, so
 * results are bit-identical from run to run and between thread counts. (The k-split, chosen from the
 * shapes alone, groups a long reduction differently from an unsplit product; it too is independent
 * of the thread count.)
 *
 * The packing scratch is the one allocation of the dense-layer kernels (as in any BLAS); if it
 * cannot be had, the direct path, which needs none, computes the same result.
 */
#ifndef FD_GEMM_H
#define FD_GEMM_H

#include <stdint.h>

typedef struct fd_gemm_args {
    int64_t batch, m, n, k;
    const void *a;
    int64_t rsa, csa, bsa;
    const void *b;
    int64_t rsb, csb, bsb;
    void *c;
    int64_t ldc, bsc;
    const void *bias; /* NULL, or bias[j] added once after the product */
    int64_t bsbias;
    void *bsum; /* NULL, or bsum[j] += sum_p B(p, j) */
    int64_t bsbsum;
    int accumulate; /* 0: C = A.B (+bias); 1: C += A.B (+bias) */
} fd_gemm_args;

/* Element type float / double; all pointers of `g` point to that type. */
void fd_gemm_f32(const fd_gemm_args *g);
void fd_gemm_f64(const fd_gemm_args *g);

#endif /* FD_GEMM_H */

/* fd_stream.c -- the memory-roofline kernel: a plain streaming pass moving chosen bytes.
 *
 * Shapes: n elements; src[k] (k < nsrc) read, dst[j] (j < ndst) written, each n elements.
 * dst[j][i] = src[0][i] + ... + src[nsrc-1][i] (0 if nsrc == 0). A dst may be one of the srcs (the
 * same pointer): element i of every src is read before element i of any dst is written, and no
 * element depends on another, so in-place use is well defined.
 *
 * Up to FD_STREAM_MAXS srcs and FD_STREAM_MAXD dsts (every optimizer's traffic) run as one fused
 * loop touching all the streams together, exactly as an update kernel does; more streams go through
 * an L1 block buffer (measured ~2x slower than fused, so not a roofline for those).
 *
 * Used to measure the roofline for "the same bytes" as a kernel: Adam fp32 reads p, g, m, v and
 * writes p, m, v in place = fd_stream_f32(n, 4, {p, g, m, v}, 3, {p, m, v}) = 28 B/element.
 * Same threading as the update kernels (fd_run_segments over one tensor of n elements).
 */
#ifndef FD_T /* ------------------------------------------------------------ untyped part */
#include "fd_internal.h"

/* elements per block of the many-streams fallback: 8 KiB of float32 (stays in L1) */
#define FD_STREAM_BLOCK 2048
#define FD_STREAM_MAXS 6
#define FD_STREAM_MAXD 4

/* "no dependence between iterations": dsts may be srcs, but only at the same index */
#if defined(__clang__)
#define FD_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define FD_IVDEP _Pragma("GCC ivdep")
#else
#define FD_IVDEP
#endif

#define FD_TYPED_FILE "fd_stream.c"
#include "fd_typed.h"

#else /* ------------------------------------------------------------------- typed part (FD_T) */

typedef struct {
    const FD_T *const *src;
    FD_T *const *dst;
    int nsrc, ndst;
} FD_S(stream_ctx);

/* One fused pass over [off, off+n) with ns srcs and nd dsts (constants after inlining). */
FD_INLINE void FD_S(stream_fused)(int64_t n, int64_t off, const FD_T *const *src, FD_T *const *dst,
                                  const int ns, const int nd)
{
    const FD_T *s[FD_STREAM_MAXS + 1];
    FD_T *d[FD_STREAM_MAXD + 1];
    for (int k = 0; k < ns; k++) s[k] = src[k] + off;
    for (int j = 0; j < nd; j++) d[j] = dst[j] + off;
    FD_IVDEP
    for (int64_t i = 0; i < n; i++) {
        FD_T acc = 0;
        if (ns > 0) acc = s[0][i];
        for (int k = 1; k < ns; k++) acc += s[k][i];
        for (int j = 0; j < nd; j++) d[j][i] = acc;
    }
}

#define FD_STREAM_CASE(NS, ND)                                               \
    case (NS) * (FD_STREAM_MAXD + 1) + (ND):                                 \
        FD_S(stream_fused)(len, off, c->src, c->dst, NS, ND);                \
        return;
#define FD_STREAM_CASES(NS)                                                  \
    FD_STREAM_CASE(NS, 0) FD_STREAM_CASE(NS, 1) FD_STREAM_CASE(NS, 2)        \
    FD_STREAM_CASE(NS, 3) FD_STREAM_CASE(NS, 4)

FD_INLINE void FD_BODY(stream_seg)(const void *ctx, int64_t t, int64_t off, int64_t len)
{
    const FD_S(stream_ctx) *c = (const FD_S(stream_ctx) *)ctx;
    (void)t;
    if (c->nsrc <= FD_STREAM_MAXS && c->ndst <= FD_STREAM_MAXD) {
        switch (c->nsrc * (FD_STREAM_MAXD + 1) + c->ndst) {
            FD_STREAM_CASES(0) FD_STREAM_CASES(1) FD_STREAM_CASES(2) FD_STREAM_CASES(3)
            FD_STREAM_CASES(4) FD_STREAM_CASES(5) FD_STREAM_CASES(6)
        default: break;
        }
    }
    FD_T buf[FD_STREAM_BLOCK];
    for (int64_t base = off; base < off + len; base += FD_STREAM_BLOCK) {
        int64_t m = off + len - base < FD_STREAM_BLOCK ? off + len - base : FD_STREAM_BLOCK;
        if (c->nsrc == 0) {
            for (int64_t i = 0; i < m; i++) buf[i] = 0;
        } else {
            const FD_T *FD_RESTRICT s = c->src[0] + base;
            for (int64_t i = 0; i < m; i++) buf[i] = s[i];
        }
        for (int k = 1; k < c->nsrc; k++) {
            const FD_T *FD_RESTRICT s = c->src[k] + base;
            for (int64_t i = 0; i < m; i++) buf[i] += s[i];
        }
        for (int j = 0; j < c->ndst; j++) {
            FD_T *FD_RESTRICT d = c->dst[j] + base;
            for (int64_t i = 0; i < m; i++) d[i] = buf[i];
        }
    }
}
#undef FD_STREAM_CASE
#undef FD_STREAM_CASES

FD_MULTIVERSION(FD_S(stream_seg), (const void *ctx, int64_t t, int64_t off, int64_t len),
                (ctx, t, off, len))

/* defines fd_stream_f32 and fd_stream_f64 (FD_S appends the type suffix) */
int FD_S(fd_stream)(int64_t n, int nsrc, const FD_T *const *src, int ndst, FD_T *const *dst)
{
    if (n < 0 || n > FD_MAX_ELEMS) return FD_ERR_SIZE;
    if (nsrc < 0 || ndst < 0) return FD_ERR_ARG;
    if ((nsrc > 0 && src == NULL) || (ndst > 0 && dst == NULL)) return FD_ERR_NULL;
    if (!fd_aligned(src, sizeof(void *)) || !fd_aligned(dst, sizeof(void *))) return FD_ERR_ALIGN;
    if (n == 0) return FD_OK;
    for (int k = 0; k < nsrc; k++)
        FD_CHECK(fd_check_ptr(src[k], n, sizeof(FD_T)));
    for (int j = 0; j < ndst; j++)
        FD_CHECK(fd_check_ptr(dst[j], n, sizeof(FD_T)));
    FD_S(stream_ctx) c;
    c.src = src;
    c.dst = dst;
    c.nsrc = nsrc;
    c.ndst = ndst;
    fd_run_segments(1, &n, n, FD_PAR_MIN_HEAVY, FD_PICK(FD_S(stream_seg)), &c);
    return FD_OK;
}

#endif /* FD_T */

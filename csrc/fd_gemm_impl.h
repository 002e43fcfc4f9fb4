/* fd_gemm_impl.h -- the GEMM engine, instantiated by fd_gemm.c once per (element type, code path).
 *
 * The includer defines:
 *   GT           element type (float / double)
 *   GSFX         name suffix (f32_avx2, f64_generic, ...): every function here is GF(name)
 *   G_MR, G_NR   micro-tile (rows x columns of C held in registers)
 *   G_MC, G_KC, G_NC   cache blocking (A block MC x KC in L2, B panel KC x NC in L3, KC x NR in L1)
 *   G_AVX2       1: AVX2+FMA micro-kernel (compiled inside a target("avx2,fma") region), 0: portable C
 *   G_AVX512     1 (with G_AVX2 1): the same micro-kernel on 512-bit vectors (6 x 32 f32, 6 x 16 f64;
 *                compiled inside a target("avx512f,avx2,fma") region)
 *   G_F64        1 if GT is double
 * See fd_gemm.h for what the engine computes and the paths it takes.
 */

#define GF_(a, b) a##_##b
#define GF__(a, b) GF_(a, b)
#define GF(name) GF__(name, GSFX)

#define G_ALIGN 64

#if G_MR != 6
#error "pack_a and the micro-kernels are written for MR = 6"
#endif

/* ------------------------------------------------------------------------------------------------
 * Micro-kernel: acc(MR x NR) = sum_{p < kc} A(r, p) B(p, 0..NR-1), as one multiply-add chain per
 * element starting from 0, then  C = (beta ? C + acc : acc)  and  C = C + bias  (if bias), for the
 * first mr rows and nr columns. A(r, p) = a[r*rsa + p*csa] (rows r >= mr read row 0 and are
 * discarded); B(p, j) = b[p*ldb + j], all NR columns readable.
 * ---------------------------------------------------------------------------------------------- */

/* store a finished MR x NR register tile (held in tile[]) into C, with the epilogue */
static inline void GF(store_tile)(const GT *tile, int64_t mr, int64_t nr, GT *c, int64_t ldc,
                                  int beta, const GT *bias)
{
    for (int64_t i = 0; i < mr; i++) {
        GT *ci = c + i * ldc;
        const GT *ti = tile + i * G_NR;
        for (int64_t j = 0; j < nr; j++) {
            GT v = ti[j];
            if (beta) v = ci[j] + v;
            if (bias) v = v + bias[j];
            ci[j] = v;
        }
    }
}

#if G_AVX2
#if G_AVX512 && G_F64
#define GV __m512d
#define GV_ZERO() _mm512_setzero_pd()
#define GV_LOAD(p) _mm512_load_pd(p)
#define GV_LOADU(p) _mm512_loadu_pd(p)
#define GV_STOREU(p, v) _mm512_storeu_pd(p, v)
#define GV_BCAST(p) _mm512_set1_pd(*(p))
#define GV_FMA(a, b, c) _mm512_fmadd_pd(a, b, c)
#define GV_ADD(a, b) _mm512_add_pd(a, b)
#define GV_L 8
#elif G_AVX512
#define GV __m512
#define GV_ZERO() _mm512_setzero_ps()
#define GV_LOAD(p) _mm512_load_ps(p)
#define GV_LOADU(p) _mm512_loadu_ps(p)
#define GV_STOREU(p, v) _mm512_storeu_ps(p, v)
#define GV_BCAST(p) _mm512_set1_ps(*(p))
#define GV_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define GV_ADD(a, b) _mm512_add_ps(a, b)
#define GV_L 16
#elif G_F64
#define GV __m256d
#define GV_ZERO() _mm256_setzero_pd()
#define GV_LOAD(p) _mm256_load_pd(p)
#define GV_LOADU(p) _mm256_loadu_pd(p)
#define GV_STOREU(p, v) _mm256_storeu_pd(p, v)
#define GV_BCAST(p) _mm256_broadcast_sd(p)
#define GV_FMA(a, b, c) _mm256_fmadd_pd(a, b, c)
#define GV_ADD(a, b) _mm256_add_pd(a, b)
#define GV_L 4
#else
#define GV __m256
#define GV_ZERO() _mm256_setzero_ps()
#define GV_LOAD(p) _mm256_load_ps(p)
#define GV_LOADU(p) _mm256_loadu_ps(p)
#define GV_STOREU(p, v) _mm256_storeu_ps(p, v)
#define GV_BCAST(p) _mm256_broadcast_ss(p)
#define GV_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define GV_ADD(a, b) _mm256_add_ps(a, b)
#define GV_L 8
#endif
#if G_MR != 6 || G_NR != 2 * GV_L
#error "the AVX2 micro-kernel is 6 x (2 vectors)"
#endif

#define GK_DECL(r) GV c##r##0 = GV_ZERO(), c##r##1 = GV_ZERO();
#define GK_ROW(r, aptr)                                  \
    {                                                    \
        GV av_ = GV_BCAST(aptr);                         \
        c##r##0 = GV_FMA(av_, b0, c##r##0);              \
        c##r##1 = GV_FMA(av_, b1, c##r##1);              \
    }
#define GK_STROW(r)                                                         \
    {                                                                       \
        GT *cr_ = c + (r) * ldc;                                            \
        GV v0_ = c##r##0, v1_ = c##r##1;                                    \
        if (beta) {                                                         \
            v0_ = GV_ADD(GV_LOADU(cr_), v0_);                               \
            v1_ = GV_ADD(GV_LOADU(cr_ + GV_L), v1_);                        \
        }                                                                   \
        if (bias) {                                                         \
            v0_ = GV_ADD(v0_, GV_LOADU(bias));                              \
            v1_ = GV_ADD(v1_, GV_LOADU(bias + GV_L));                       \
        }                                                                   \
        GV_STOREU(cr_, v0_);                                                \
        GV_STOREU(cr_ + GV_L, v1_);                                         \
    }
#define GK_TILEROW(r)                                   \
    {                                                   \
        GV_STOREU(tile + (r) * G_NR, c##r##0);          \
        GV_STOREU(tile + (r) * G_NR + GV_L, c##r##1);   \
    }
#define GK_EPILOGUE()                                                                        \
    if (nr == G_NR) { /* full-width rows: vector stores for the first mr rows */             \
        GK_STROW(0)                                                                          \
        if (mr > 1) GK_STROW(1)                                                              \
        if (mr > 2) GK_STROW(2)                                                              \
        if (mr > 3) GK_STROW(3)                                                              \
        if (mr > 4) GK_STROW(4)                                                              \
        if (mr > 5) GK_STROW(5)                                                              \
    } else {                                                                                 \
        GT tile[G_MR * G_NR] __attribute__((aligned(64)));                                   \
        GK_TILEROW(0) GK_TILEROW(1) GK_TILEROW(2) GK_TILEROW(3) GK_TILEROW(4) GK_TILEROW(5)  \
        GF(store_tile)(tile, mr, nr, c, ldc, beta, bias);                                    \
    }

/* packed operands: A micro-panel a[p*MR + r], B micro-panel b[p*NR + j] (64-byte aligned) */
static void GF(kern_packed)(int64_t kc, const GT *restrict a, const GT *restrict b, int64_t mr,
                            int64_t nr, GT *restrict c, int64_t ldc, int beta,
                            const GT *restrict bias)
{
    GK_DECL(0) GK_DECL(1) GK_DECL(2) GK_DECL(3) GK_DECL(4) GK_DECL(5)
    for (int64_t r = 0; r < mr; r++) {
        __builtin_prefetch(c + r * ldc, 1, 3);
        __builtin_prefetch(c + r * ldc + G_NR - 1, 1, 3);
    }
#pragma GCC unroll 4
    for (int64_t p = 0; p < kc; p++) {
        GV b0 = GV_LOAD(b), b1 = GV_LOAD(b + GV_L);
        GK_ROW(0, a + 0) GK_ROW(1, a + 1) GK_ROW(2, a + 2)
        GK_ROW(3, a + 3) GK_ROW(4, a + 4) GK_ROW(5, a + 5)
        a += G_MR;
        b += G_NR;
    }
    GK_EPILOGUE()
}

/* operands in place: A rows a + r*rsa stepping by csa, B rows b + p*ldb (unaligned) */
static void GF(kern_direct)(int64_t kc, const GT *a, int64_t rsa, int64_t csa,
                            const GT *restrict b, int64_t ldb, int64_t mr, int64_t nr,
                            GT *restrict c, int64_t ldc, int beta, const GT *restrict bias)
{
    GK_DECL(0) GK_DECL(1) GK_DECL(2) GK_DECL(3) GK_DECL(4) GK_DECL(5)
    const GT *a0 = a, *a1 = a + (mr > 1 ? rsa : 0), *a2 = a + (mr > 2 ? 2 * rsa : 0);
    const GT *a3 = a + (mr > 3 ? 3 * rsa : 0), *a4 = a + (mr > 4 ? 4 * rsa : 0);
    const GT *a5 = a + (mr > 5 ? 5 * rsa : 0);
#pragma GCC unroll 2
    for (int64_t p = 0; p < kc; p++) {
        GV b0 = GV_LOADU(b), b1 = GV_LOADU(b + GV_L);
        GK_ROW(0, a0) GK_ROW(1, a1) GK_ROW(2, a2) GK_ROW(3, a3) GK_ROW(4, a4) GK_ROW(5, a5)
        a0 += csa; a1 += csa; a2 += csa; a3 += csa; a4 += csa; a5 += csa;
        b += ldb;
    }
    GK_EPILOGUE()
}

/* dst[p*NR + j] = src[j*ld + p] for p < kc8 (a multiple of the vector length), j < NR: the
 * transposed B of dy . w^T, packed with in-register transposes of vector-length squares. */
static void GF(pack_bt_vec)(int64_t kc8, const GT *restrict src, int64_t ld, GT *restrict dst)
{
#if G_F64
    for (int64_t p = 0; p < kc8; p += 4)
        for (int jb = 0; jb < G_NR; jb += 4) {
            const GT *s0 = src + jb * ld + p;
            __m256d r0 = _mm256_loadu_pd(s0), r1 = _mm256_loadu_pd(s0 + ld);
            __m256d r2 = _mm256_loadu_pd(s0 + 2 * ld), r3 = _mm256_loadu_pd(s0 + 3 * ld);
            __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
            __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
            GT *d = dst + p * G_NR + jb;
            _mm256_storeu_pd(d, _mm256_permute2f128_pd(t0, t2, 0x20));
            _mm256_storeu_pd(d + G_NR, _mm256_permute2f128_pd(t1, t3, 0x20));
            _mm256_storeu_pd(d + 2 * G_NR, _mm256_permute2f128_pd(t0, t2, 0x31));
            _mm256_storeu_pd(d + 3 * G_NR, _mm256_permute2f128_pd(t1, t3, 0x31));
        }
#else
    for (int64_t p = 0; p < kc8; p += 8)
        for (int jb = 0; jb < G_NR; jb += 8) {
            const GT *s0 = src + jb * ld + p;
            __m256 r0 = _mm256_loadu_ps(s0), r1 = _mm256_loadu_ps(s0 + ld);
            __m256 r2 = _mm256_loadu_ps(s0 + 2 * ld), r3 = _mm256_loadu_ps(s0 + 3 * ld);
            __m256 r4 = _mm256_loadu_ps(s0 + 4 * ld), r5 = _mm256_loadu_ps(s0 + 5 * ld);
            __m256 r6 = _mm256_loadu_ps(s0 + 6 * ld), r7 = _mm256_loadu_ps(s0 + 7 * ld);
            __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
            __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
            __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
            __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
            __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
            __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
            __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
            __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
            GT *d = dst + p * G_NR + jb;
            _mm256_storeu_ps(d, _mm256_permute2f128_ps(u0, u4, 0x20));
            _mm256_storeu_ps(d + G_NR, _mm256_permute2f128_ps(u1, u5, 0x20));
            _mm256_storeu_ps(d + 2 * G_NR, _mm256_permute2f128_ps(u2, u6, 0x20));
            _mm256_storeu_ps(d + 3 * G_NR, _mm256_permute2f128_ps(u3, u7, 0x20));
            _mm256_storeu_ps(d + 4 * G_NR, _mm256_permute2f128_ps(u0, u4, 0x31));
            _mm256_storeu_ps(d + 5 * G_NR, _mm256_permute2f128_ps(u1, u5, 0x31));
            _mm256_storeu_ps(d + 6 * G_NR, _mm256_permute2f128_ps(u2, u6, 0x31));
            _mm256_storeu_ps(d + 7 * G_NR, _mm256_permute2f128_ps(u3, u7, 0x31));
        }
#endif
}
#define G_HAVE_PACK_BT_VEC 1

#undef GK_DECL
#undef GK_ROW
#undef GK_STROW
#undef GK_TILEROW
#undef GK_EPILOGUE
#undef GV
#undef GV_ZERO
#undef GV_LOAD
#undef GV_LOADU
#undef GV_STOREU
#undef GV_BCAST
#undef GV_FMA
#undef GV_ADD
#undef GV_L

#else /* portable micro-kernel: the compiler vectorises the j loops for the baseline target */

static inline void GF(kern_body)(int64_t kc, const GT *a, int64_t rsa, int64_t csa, const GT *b,
                                 int64_t ldb, int64_t mr, int64_t nr, GT *c, int64_t ldc, int beta,
                                 const GT *bias)
{
    GT acc[G_MR][G_NR];
    const GT *ar[G_MR];
    for (int r = 0; r < G_MR; r++) {
        ar[r] = a + (r < mr ? r : 0) * rsa;
        for (int j = 0; j < G_NR; j++) acc[r][j] = 0;
    }
    for (int64_t p = 0; p < kc; p++) {
        const GT *bp = b + p * ldb;
        for (int r = 0; r < G_MR; r++) {
            GT av = ar[r][p * csa];
            for (int j = 0; j < G_NR; j++) acc[r][j] += av * bp[j];
        }
    }
    GF(store_tile)(&acc[0][0], mr, nr, c, ldc, beta, bias);
}

static void GF(kern_packed)(int64_t kc, const GT *restrict a, const GT *restrict b, int64_t mr,
                            int64_t nr, GT *restrict c, int64_t ldc, int beta,
                            const GT *restrict bias)
{
    GF(kern_body)(kc, a, 1, G_MR, b, G_NR, mr, nr, c, ldc, beta, bias);
}

static void GF(kern_direct)(int64_t kc, const GT *a, int64_t rsa, int64_t csa,
                            const GT *restrict b, int64_t ldb, int64_t mr, int64_t nr,
                            GT *restrict c, int64_t ldc, int beta, const GT *restrict bias)
{
    GF(kern_body)(kc, a, rsa, csa, b, ldb, mr, nr, c, ldc, beta, bias);
}
#endif /* G_AVX2 */

/* ------------------------------------------------------------------------------------------------
 * Packing and column sums
 * ---------------------------------------------------------------------------------------------- */

/* One typed view of fd_gemm_args for one item. */
typedef struct {
    int64_t m, n, k;
    const GT *a;
    int64_t rsa, csa;
    const GT *b;
    int64_t rsb, csb;
    GT *c;
    int64_t ldc;
    const GT *bias;
    GT *bsum;
    int accumulate;
} GF(item);

/* A row-major A (csa == 1) is not packed: the micro-kernel reads its MR rows in place (each a
 * sequential stream, the whole of A in L2 for the shapes that reach the packed path with threads),
 * which saves the copy (about 14% of a 128 x 784 x 128 product) and gives the same chains. */
#ifndef G_A_IN_PLACE
#define G_A_IN_PLACE(g) ((g)->csa == 1)
#endif

/* bsum[j] += sum_{p < kc} B(p, j), j < nr: one sequential sum per column and KC block */
static void GF(colsum)(int64_t kc, int64_t nr, const GT *b, int64_t rsb, int64_t csb, GT *bsum)
{
    GT s[G_NR];
    for (int64_t j = 0; j < nr; j++) s[j] = 0;
    if (csb == 1 && nr == G_NR) {
        for (int64_t p = 0; p < kc; p++)
            for (int j = 0; j < G_NR; j++) s[j] += b[p * rsb + j];
    } else if (csb == 1) {
        for (int64_t p = 0; p < kc; p++)
            for (int64_t j = 0; j < nr; j++) s[j] += b[p * rsb + j];
    } else {
        for (int64_t j = 0; j < nr; j++)
            for (int64_t p = 0; p < kc; p++) s[j] += b[p * rsb + j * csb];
    }
    for (int64_t j = 0; j < nr; j++) bsum[j] += s[j];
}

/* B micro-panel (kc x nr, zero-padded to NR columns): dst[p*NR + j] = B(p, j) */
static void GF(pack_b)(int64_t kc, int64_t nr, const GT *restrict b, int64_t rsb, int64_t csb,
                       GT *restrict dst)
{
    if (csb == 1) {
        if (nr == G_NR) {
            for (int64_t p = 0; p < kc; p++)
                for (int j = 0; j < G_NR; j++) dst[p * G_NR + j] = b[p * rsb + j];
        } else {
            for (int64_t p = 0; p < kc; p++) {
                int64_t j = 0;
                for (; j < nr; j++) dst[p * G_NR + j] = b[p * rsb + j];
                for (; j < G_NR; j++) dst[p * G_NR + j] = 0;
            }
        }
    } else {
        /* transposed source (rsb == 1 for w^T): read each column contiguously */
        int64_t p0 = 0;
#ifdef G_HAVE_PACK_BT_VEC
        if (rsb == 1 && nr == G_NR) {
            p0 = kc - kc % (32 / (int64_t)sizeof(GT));
            GF(pack_bt_vec)(p0, b, csb, dst);
        }
#endif
        for (int64_t j = 0; j < nr; j++) {
            const GT *src = b + j * csb;
            for (int64_t p = p0; p < kc; p++) dst[p * G_NR + j] = src[p * rsb];
        }
        for (int64_t j = nr; j < G_NR; j++)
            for (int64_t p = 0; p < kc; p++) dst[p * G_NR + j] = 0;
    }
}

/* A block of a transposed A (rsa == 1, x^T of a weight gradient), mc >= MR, as micro-panels of MR
 * rows at dst + (i/MR)*pstride (the last one zero-padded): column p of the block is contiguous in
 * memory, so it is read once, whole, and its MR-row pieces go to the panels (reading each panel on
 * its own would touch every cache line of the block once per panel, MR elements at a time). */
static void GF(pack_at_block)(int64_t mc, int64_t kc, const GT *restrict a, int64_t csa,
                              GT *restrict dst, int64_t pstride)
{
    const int64_t full = mc / G_MR * G_MR, np = full / G_MR;
    for (int64_t p = 0; p < kc; p++) {
        const GT *s = a + p * csa;
        GT *d = dst + p * G_MR;
        for (int64_t q = 0; q < np; q++) {
            const GT *sq = s + q * G_MR;
            GT *dq = d + q * pstride;
            dq[0] = sq[0]; dq[1] = sq[1]; dq[2] = sq[2];
            dq[3] = sq[3]; dq[4] = sq[4]; dq[5] = sq[5];
        }
        if (full < mc) {
            GT *dq = d + np * pstride;
            int64_t r = 0;
            for (; r < mc - full; r++) dq[r] = s[full + r];
            for (; r < G_MR; r++) dq[r] = 0;
        }
    }
}

/* A block (mc x kc) as micro-panels of MR rows (zero-padded): dst[(i/MR)*MR*kc + p*MR + i%MR] */
static void GF(pack_a)(int64_t mc, int64_t kc, const GT *restrict a, int64_t rsa, int64_t csa,
                       GT *restrict dst)
{
    if (rsa == 1 && mc > G_MR) {
        GF(pack_at_block)(mc, kc, a, csa, dst, G_MR * kc);
        return;
    }
    for (int64_t i0 = 0; i0 < mc; i0 += G_MR) {
        int64_t mr = mc - i0 < G_MR ? mc - i0 : G_MR;
        GT *d = dst + i0 * kc;
        const GT *src = a + i0 * rsa;
        if (mr == G_MR && csa == 1) {
            /* row-major A: MR rows read side by side, one contiguous write stream */
            const GT *s0 = src, *s1 = src + rsa, *s2 = src + 2 * rsa, *s3 = src + 3 * rsa;
            const GT *s4 = src + 4 * rsa, *s5 = src + 5 * rsa;
            for (int64_t p = 0; p < kc; p++) {
                d[0] = s0[p]; d[1] = s1[p]; d[2] = s2[p];
                d[3] = s3[p]; d[4] = s4[p]; d[5] = s5[p];
                d += G_MR;
            }
        } else if (rsa == 1) {
            /* transposed A (x^T): mr contiguous elements per p */
            if (mr == G_MR) {
                for (int64_t p = 0; p < kc; p++) {
                    const GT *s = src + p * csa;
                    for (int r = 0; r < G_MR; r++) d[r] = s[r];
                    d += G_MR;
                }
            } else {
                for (int64_t p = 0; p < kc; p++) {
                    const GT *s = src + p * csa;
                    int64_t r = 0;
                    for (; r < mr; r++) d[r] = s[r];
                    for (; r < G_MR; r++) d[r] = 0;
                    d += G_MR;
                }
            }
        } else {
            for (int64_t p = 0; p < kc; p++) {
                int64_t r = 0;
                for (; r < mr; r++) d[r] = src[r * rsa + p * csa];
                for (; r < G_MR; r++) d[r] = 0;
                d += G_MR;
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------------
 * Drivers
 * ---------------------------------------------------------------------------------------------- */

/* Rows [i0, i1) (i0 a multiple of MR) x column strips [s0, s1) of NR, without packing whole
 * operands. With do_bsum set (one thread per strip) the strip's column sums of B go to bsum.
 * Row-major A (csa == 1): strips outer, so the k x NR strip of B stays in L1 while the rows of A
 * stream past it (a strip that is transposed or narrower than NR is first copied to a zero-padded
 * stack buffer). Transposed A (x^T): each MR x kc micro-panel of A would touch kc cache lines for
 * 24 bytes each, so when several strips use it, it is copied to a stack buffer once and the
 * strips of B sweep past it. */
static void GF(run_direct)(const GF(item) *g, int64_t i0, int64_t i1, int64_t s0, int64_t s1,
                           int do_bsum)
{
    GT bbuf[G_KC * G_NR] __attribute__((aligned(G_ALIGN)));
    const int64_t n = g->n, k = g->k;
    if (g->csa == 1 || i1 - i0 <= G_MR || s1 - s0 <= 1) {
        for (int64_t s = s0; s < s1; s++) {
            const int64_t j = s * G_NR, nr = n - j < G_NR ? n - j : G_NR;
            for (int64_t pc = 0; pc < k; pc += G_KC) {
                const int64_t kc = k - pc < G_KC ? k - pc : G_KC;
                const GT *bsrc = g->b + pc * g->rsb + j * g->csb;
                const GT *bp = bsrc;
                int64_t ldb = g->rsb;
                if (g->csb != 1 || nr < G_NR) {
                    GF(pack_b)(kc, nr, bsrc, g->rsb, g->csb, bbuf);
                    bp = bbuf;
                    ldb = G_NR;
                }
                if (do_bsum && g->bsum) GF(colsum)(kc, nr, bsrc, g->rsb, g->csb, g->bsum + j);
                const int beta = g->accumulate || pc > 0;
                const GT *bias = (g->bias && pc + kc == k) ? g->bias + j : NULL;
                for (int64_t i = i0; i < i1; i += G_MR) {
                    const int64_t mr = i1 - i < G_MR ? i1 - i : G_MR;
                    GF(kern_direct)(kc, g->a + i * g->rsa + pc * g->csa, g->rsa, g->csa, bp, ldb,
                                    mr, nr, g->c + i * g->ldc + j, g->ldc, beta, bias);
                }
            }
        }
        return;
    }
    GT abuf[G_MR * G_KC] __attribute__((aligned(G_ALIGN)));
    for (int64_t pc = 0; pc < k; pc += G_KC) {
        const int64_t kc = k - pc < G_KC ? k - pc : G_KC;
        const int beta = g->accumulate || pc > 0;
        const int last = pc + kc == k;
        for (int64_t i = i0; i < i1; i += G_MR) {
            const int64_t mr = i1 - i < G_MR ? i1 - i : G_MR;
            GF(pack_a)(mr, kc, g->a + i * g->rsa + pc * g->csa, g->rsa, g->csa, abuf);
            for (int64_t s = s0; s < s1; s++) {
                const int64_t j = s * G_NR, nr = n - j < G_NR ? n - j : G_NR;
                const GT *bsrc = g->b + pc * g->rsb + j * g->csb;
                const GT *bp = bsrc;
                int64_t ldb = g->rsb;
                if (g->csb != 1 || nr < G_NR) {
                    GF(pack_b)(kc, nr, bsrc, g->rsb, g->csb, bbuf);
                    bp = bbuf;
                    ldb = G_NR;
                }
                if (do_bsum && g->bsum && i == i0)
                    GF(colsum)(kc, nr, bsrc, g->rsb, g->csb, g->bsum + j);
                GF(kern_direct)(kc, abuf, 1, G_MR, bp, ldb, mr, nr, g->c + i * g->ldc + j, g->ldc,
                                beta, (g->bias && last) ? g->bias + j : NULL);
            }
        }
    }
}

/* The packed path for thread tid of nt (grid tm x tn over rows x column strips). bufa: this thread's
 * MC x KC block; bufb: the shared KC x NC panel. Called inside a parallel region of nt threads (or
 * with nt == 1 anywhere). */
static void GF(run_packed)(const GF(item) *g, GT *bufa, GT *bufb, int tid, int nt, int tm, int tn)
{
    const int64_t m = g->m, n = g->n, k = g->k;
    const int ti = tid / tn, tj = tid % tn;
    const int64_t mt = (m + G_MR - 1) / G_MR;
    const int64_t i0 = (mt * ti / tm) * G_MR;
    int64_t i1 = (mt * (ti + 1) / tm) * G_MR;
    if (i1 > m) i1 = m;
    for (int64_t jc = 0; jc < n; jc += G_NC) {
        const int64_t nc = n - jc < G_NC ? n - jc : G_NC;
        const int64_t ns = (nc + G_NR - 1) / G_NR;
        const int64_t s0 = ns * tj / tn, s1 = ns * (tj + 1) / tn;
        const int64_t p0 = ns * tid / nt, p1 = ns * (tid + 1) / nt;
        for (int64_t pc = 0; pc < k; pc += G_KC) {
            const int64_t kc = k - pc < G_KC ? k - pc : G_KC;
            if (nt > 1) {
                G_OMP(omp barrier)
            }
            /* pack this thread's share of the B panel (and its column sums) */
            for (int64_t s = p0; s < p1; s++) {
                const int64_t j = jc + s * G_NR, nr = n - j < G_NR ? n - j : G_NR;
                const GT *bsrc = g->b + pc * g->rsb + j * g->csb;
                GF(pack_b)(kc, nr, bsrc, g->rsb, g->csb, bufb + s * kc * G_NR);
                if (g->bsum) GF(colsum)(kc, nr, bsrc, g->rsb, g->csb, g->bsum + j);
            }
            if (nt > 1) {
                G_OMP(omp barrier)
            }
            const int beta = g->accumulate || pc > 0;
            const int last = pc + kc == k;
            for (int64_t ic = i0; ic < i1; ic += G_MC) {
                const int64_t mc = i1 - ic < G_MC ? i1 - ic : G_MC;
                const GT *ablk = g->a + ic * g->rsa + pc * g->csa;
                if (!G_A_IN_PLACE(g)) GF(pack_a)(mc, kc, ablk, g->rsa, g->csa, bufa);
                for (int64_t s = s0; s < s1; s++) {
                    const int64_t j = jc + s * G_NR, nr = n - j < G_NR ? n - j : G_NR;
                    const GT *bp = bufb + s * kc * G_NR;
                    const GT *bias = (g->bias && last) ? g->bias + j : NULL;
                    for (int64_t ir = 0; ir < mc; ir += G_MR) {
                        const int64_t mr = mc - ir < G_MR ? mc - ir : G_MR;
                        GT *cp = g->c + (ic + ir) * g->ldc + j;
                        if (G_A_IN_PLACE(g))
                            GF(kern_direct)(kc, ablk + ir * g->rsa, g->rsa, 1, bp, G_NR, mr, nr, cp,
                                            g->ldc, beta, bias);
                        else
                            GF(kern_packed)(kc, bufa + ir * kc, bp, mr, nr, cp, g->ldc, beta, bias);
                    }
                }
            }
        }
    }
}

/* Degenerate shapes: k == 0 (C = bias or 0 unless accumulating) and m == 0 (only bsum). */
static void GF(run_degenerate)(const GF(item) *g)
{
    if (g->k == 0) {
        if (!g->accumulate)
            for (int64_t i = 0; i < g->m; i++)
                for (int64_t j = 0; j < g->n; j++) g->c[i * g->ldc + j] = g->bias ? g->bias[j] : 0;
        else if (g->bias)
            for (int64_t i = 0; i < g->m; i++)
                for (int64_t j = 0; j < g->n; j++) g->c[i * g->ldc + j] += g->bias[j];
        return;
    }
    if (g->bsum) /* m == 0 */
        for (int64_t j = 0; j < g->n; j += G_NR)
            for (int64_t pc = 0; pc < g->k; pc += G_KC)
                GF(colsum)(g->k - pc < G_KC ? g->k - pc : G_KC, g->n - j < G_NR ? g->n - j : G_NR,
                           g->b + pc * g->rsb + j * g->csb, g->rsb, g->csb, g->bsum + j);
}

static int GF(is_degenerate)(const GF(item) *g) { return g->m == 0 || g->n == 0 || g->k == 0; }

/* Skip packing when A is swept only once or twice (one or two strips of B) or is small: up to
 * 128 KiB of A (in L2; each KC block of a B strip stays in L1 while the row tiles of A pass) when
 * both operands are read in place, 32 KiB when one is read transposed (x^T or w^T: the direct path
 * copies its pieces anyway). (Measured on Zen 3: e.g. 128^3 x^T . dy runs about 1.4x faster packed,
 * 128^3 x . w about as fast either way.) */
static int GF(want_direct)(const GF(item) *g)
{
    const int64_t ns = (g->n + G_NR - 1) / G_NR;
    const int64_t limit = g->csa == 1 && g->csb == 1 ? (128 << 10) : (32 << 10);
    return ns <= 2 || g->m * g->k * (int64_t)sizeof(GT) <= limit;
}

static void *GF(alloc)(int64_t count)
{
    void *p = NULL;
    if (count <= 0) count = 1;
    if (posix_memalign(&p, G_ALIGN, (size_t)count * sizeof(GT)) != 0) return NULL;
    return p;
}

static int64_t GF(panel_elems)(int64_t n)
{
    int64_t nc = n < G_NC ? n : G_NC;
    return G_KC * ((nc + G_NR - 1) / G_NR) * G_NR;
}

/* One item on the calling thread; bufa / bufb are this thread's scratch (NULL: allocate, or go
 * direct if that fails). */
static void GF(run_serial)(const GF(item) *g, GT **bufa, GT **bufb)
{
    if (GF(is_degenerate)(g)) {
        GF(run_degenerate)(g);
        return;
    }
    if (!GF(want_direct)(g)) {
        if (!*bufa) *bufa = (GT *)GF(alloc)(G_MC * G_KC);
        if (!*bufb) *bufb = (GT *)GF(alloc)(GF(panel_elems)(G_NC));
        if (*bufa && *bufb) {
            GF(run_packed)(g, *bufa, *bufb, 0, 1, 1, 1);
            return;
        }
    }
    GF(run_direct)(g, 0, g->m, 0, (g->n + G_NR - 1) / G_NR, 1);
}

/* the thread grid tm x tn (tm * tn == nt) that balances rows tiles and column strips best */
static void GF(grid)(int64_t m, int64_t n, int nt, int *tm, int *tn)
{
    const int64_t mt = (m + G_MR - 1) / G_MR;
    const int64_t nc = n < G_NC ? n : G_NC;
    const int64_t ns = (nc + G_NR - 1) / G_NR;
    double best = -1;
    for (int a = nt; a >= 1; a--) {
        if (nt % a) continue;
        const int b = nt / a;
        const double em = (double)mt / (double)(a * ((mt + a - 1) / a));
        const double en = (double)ns / (double)(b * ((ns + b - 1) / b));
        const double e = em * en;
        if (e > best + 1e-9) {
            best = e;
            *tm = a;
            *tn = b;
        }
    }
}

/* ---- the parallel path ---------------------------------------------------------------------
 * No barrier inside the region, and no fixed share per thread: the threads take units of work from
 * a shared counter, guided style (a unit is 1/nt of what is left, at most an MC block), so a thread
 * that the OS deschedules (another process on its core) holds up only the unit it is in and the
 * running threads do the rest. A unit is a range of row micro-panels with every column strip (the
 * B micro-panel in L1 is reused by all its rows), or, when there are few row panels, a range of
 * strips with every row. Packed: the operands are packed lazily into whole-operand buffers (A as
 * MR x KC micro-panels per KC block, B as KC x NR micro-panels) with one flag per micro-panel: the
 * first thread that needs a micro-panel claims and packs it; one that finds it claimed but not yet
 * ready packs a private copy rather than wait. A unit walks the KC blocks in order for each of its
 * C tiles, so every element gets the serial path's chain; a strip's column sums are taken by the
 * unit holding row 0, in KC order, as on the serial path. */

typedef struct {
    const GF(item) *g;
    int64_t mt, ns, nkb;       /* row micro-panels, column strips, KC blocks */
    int by_rows;               /* units are ranges of row panels (1) or of strips (0) */
    int64_t total, cap;        /* panels / strips to hand out; most per unit */
    int64_t next;              /* the first not yet handed out (atomic) */
    int nt;
    GT *pa, *pb;               /* packed A (ir, kb) at (ir*nkb + kb)*MR*KC; B (kb, s) at (kb*ns + s)*KC*NR */
    int *fa, *fb;              /* per micro-panel: 0 free, 1 being packed, 2 ready */
} GF(dyn);

/* claim (0 -> 1) a free micro-panel: 1 if this thread is to pack it */
static inline int GF(claim)(int *f)
{
    int expect = 0;
    return __atomic_load_n(f, __ATOMIC_ACQUIRE) == 0 &&
           __atomic_compare_exchange_n(f, &expect, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

/* A micro-panel (row panel ir, KC block kb): the shared copy, or a private one in priv */
static const GT *GF(dyn_a)(const GF(dyn) *d, int64_t ir, int64_t kb, int64_t kc, GT *priv)
{
    const int64_t at = ir * d->nkb + kb;
    GT *dst = d->pa + at * (G_MR * G_KC);
    int *f = d->fa + at;
    if (__atomic_load_n(f, __ATOMIC_ACQUIRE) == 2) return dst;
    const GF(item) *g = d->g;
    const int64_t i = ir * G_MR, mr = g->m - i < G_MR ? g->m - i : G_MR;
    const GT *src = g->a + i * g->rsa + kb * G_KC * g->csa;
    if (GF(claim)(f)) {
        GF(pack_a)(mr, kc, src, g->rsa, g->csa, dst);
        __atomic_store_n(f, 2, __ATOMIC_RELEASE);
        return dst;
    }
    if (__atomic_load_n(f, __ATOMIC_ACQUIRE) == 2) return dst;
    GF(pack_a)(mr, kc, src, g->rsa, g->csa, priv); /* being packed by a thread that may be stalled */
    return priv;
}

/* B micro-panel (KC block kb, strip s): the shared copy, or a private one in priv */
static const GT *GF(dyn_b)(const GF(dyn) *d, int64_t kb, int64_t s, int64_t kc, GT *priv)
{
    const int64_t at = kb * d->ns + s;
    GT *dst = d->pb + at * (G_KC * G_NR);
    int *f = d->fb + at;
    if (__atomic_load_n(f, __ATOMIC_ACQUIRE) == 2) return dst;
    const GF(item) *g = d->g;
    const int64_t j = s * G_NR, nr = g->n - j < G_NR ? g->n - j : G_NR;
    const GT *src = g->b + kb * G_KC * g->rsb + j * g->csb;
    if (GF(claim)(f)) {
        GF(pack_b)(kc, nr, src, g->rsb, g->csb, dst);
        __atomic_store_n(f, 2, __ATOMIC_RELEASE);
        return dst;
    }
    if (__atomic_load_n(f, __ATOMIC_ACQUIRE) == 2) return dst;
    GF(pack_b)(kc, nr, src, g->rsb, g->csb, priv);
    return priv;
}

/* Packed unit: row panels [ir0, ir1) x strips [s0, s1), the strips visited from s0 + rot (mod the
 * range: threads that start together pack different B micro-panels first). apriv / bpriv: this
 * thread's MR x KC and KC x NR scratch. */
static void GF(dyn_packed)(const GF(dyn) *d, int64_t ir0, int64_t ir1, int64_t s0, int64_t s1,
                           int64_t rot, GT *apriv, GT *bpriv)
{
    const GF(item) *g = d->g;
    const int64_t k = g->k, nsu = s1 - s0;
    for (int64_t kb = 0; kb < d->nkb; kb++) {
        const int64_t pc = kb * G_KC, kc = k - pc < G_KC ? k - pc : G_KC;
        const int beta = g->accumulate || pc > 0;
        const int last = pc + kc == k;
        for (int64_t q = 0; q < nsu; q++) {
            const int64_t s = s0 + (q + rot) % nsu;
            const int64_t j = s * G_NR, nr = g->n - j < G_NR ? g->n - j : G_NR;
            const GT *bp = GF(dyn_b)(d, kb, s, kc, bpriv);
            if (g->bsum && ir0 == 0)
                GF(colsum)(kc, nr, g->b + pc * g->rsb + j * g->csb, g->rsb, g->csb, g->bsum + j);
            const GT *bias = (g->bias && last) ? g->bias + j : NULL;
            for (int64_t ir = ir0; ir < ir1; ir++) {
                const int64_t i = ir * G_MR, mr = g->m - i < G_MR ? g->m - i : G_MR;
                GT *cp = g->c + i * g->ldc + j;
                if (G_A_IN_PLACE(g)) {
                    GF(kern_direct)(kc, g->a + i * g->rsa + pc, g->rsa, 1, bp, G_NR, mr, nr, cp,
                                    g->ldc, beta, bias);
                } else {
                    const GT *ap = GF(dyn_a)(d, ir, kb, kc, apriv);
                    GF(kern_packed)(kc, ap, bp, mr, nr, cp, g->ldc, beta, bias);
                }
            }
        }
    }
}

/* Take the next unit [*lo, *hi) of the axis: 1 if there was one. */
static int GF(dyn_take)(GF(dyn) *d, int64_t *lo, int64_t *hi)
{
    int64_t cur = __atomic_load_n(&d->next, __ATOMIC_RELAXED);
    while (cur < d->total) {
        int64_t q = (d->total - cur + d->nt - 1) / d->nt;
        if (q > d->cap) q = d->cap;
        if (__atomic_compare_exchange_n(&d->next, &cur, cur + q, 0, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {
            *lo = cur;
            *hi = cur + q;
            return 1;
        }
    }
    return 0;
}

/* Thread tid's share: units until none is left. Returns how many panels / strips it did. */
static int64_t GF(dyn_worker)(GF(dyn) *d, int packed, int tid)
{
    GT apriv[G_MR * G_KC] __attribute__((aligned(G_ALIGN)));
    GT bpriv[G_KC * G_NR] __attribute__((aligned(G_ALIGN)));
    const GF(item) *g = d->g;
    int64_t lo, hi, done = 0;
    while (GF(dyn_take)(d, &lo, &hi)) {
        done += hi - lo;
        int64_t ir0 = 0, ir1 = d->mt, s0 = 0, s1 = d->ns;
        if (d->by_rows) {
            ir0 = lo;
            ir1 = hi;
        } else {
            s0 = lo;
            s1 = hi;
        }
        if (packed) {
            GF(dyn_packed)(d, ir0, ir1, s0, s1, (s1 - s0) * tid / d->nt, apriv, bpriv);
        } else {
            const int64_t i1 = ir1 * G_MR < g->m ? ir1 * G_MR : g->m;
            GF(run_direct)(g, ir0 * G_MR, i1, s0, s1, ir0 == 0);
        }
    }
    return done;
}

/* Most elements of packing scratch the parallel packed path takes (whole A and B); above it, the
 * item goes to the blocked path with a static split (run_packed), whose regions are long anyway. */
#define G_DYN_MAX_ELEMS ((int64_t)1 << 22)

/* One item on up to nt threads. */
static void GF(run_parallel)(const GF(item) *g, int nt)
{
    if (nt <= 1 || GF(is_degenerate)(g)) {
        GT *bufa = NULL, *bufb = NULL;
        GF(run_serial)(g, &bufa, &bufb);
        free(bufa);
        free(bufb);
        return;
    }
    GF(dyn) d;
    memset(&d, 0, sizeof d);
    d.g = g;
    d.mt = (g->m + G_MR - 1) / G_MR;
    d.ns = (g->n + G_NR - 1) / G_NR;
    d.nkb = (g->k + G_KC - 1) / G_KC;
    int packed = !GF(want_direct)(g);
    if (packed) {
        const int64_t na = G_A_IN_PLACE(g) ? 0 : d.mt * d.nkb * G_MR * G_KC;
        const int64_t nb = d.nkb * d.ns * G_KC * G_NR;
        if (na + nb > G_DYN_MAX_ELEMS) {
            GT *bufa = (GT *)GF(alloc)((int64_t)nt * G_MC * G_KC);
            GT *bufb = (GT *)GF(alloc)(GF(panel_elems)(g->n));
            if (bufa && bufb) {
                const int64_t t0 = gemm_now();
                int64_t tmain = t0;
                const int flush = fd_flush_current(); /* this call's, for every thread */
                const unsigned spawn = fd_flush_spawn_begin(flush);
                G_OMP(omp parallel num_threads(nt))
                {
                    const unsigned csr = fd_flush_begin(flush);
#ifdef _OPENMP
                    const int tid = omp_get_thread_num(), ntr = omp_get_num_threads();
#else
                    const int tid = 0, ntr = 1;
#endif
                    int tm = ntr, tn = 1;
                    GF(grid)(g->m, g->n, ntr, &tm, &tn);
                    GF(run_packed)(g, bufa + (int64_t)tid * G_MC * G_KC, bufb, tid, ntr, tm, tn);
                    if (tid == 0) tmain = gemm_now();
                    fd_flush_end(flush, csr);
                }
                fd_flush_spawn_end(flush, spawn);
                gemm_region_done(nt, t0, tmain, 1, nt); /* static: equal shares */
            } else {
                packed = 0;
            }
            free(bufa);
            free(bufb);
            if (packed) return;
        } else {
            d.pa = (GT *)GF(alloc)(na);
            d.pb = (GT *)GF(alloc)(nb);
            d.fa = (int *)calloc((size_t)(d.mt * d.nkb), sizeof(int));
            d.fb = (int *)calloc((size_t)(d.nkb * d.ns), sizeof(int));
            packed = d.pa && d.pb && d.fa && d.fb;
        }
    }
    /* Units along the rows (each thread packs its rows of A, the B micro-panels are shared), or
     * along the column strips (each packs its strips of B, A is shared) when A is read in place or
     * packs smaller than B, and there are strips enough for the threads; along the strips too when
     * there are too few row panels for the threads. Sharing means reading what another core packed. */
    const int strips_cheaper = (G_A_IN_PLACE(g) || g->m < g->n) && d.ns >= 2 * (int64_t)nt;
    d.by_rows = !strips_cheaper && (d.mt >= 2 * (int64_t)nt || d.mt >= d.ns);
    d.total = d.by_rows ? d.mt : d.ns;
    d.cap = d.by_rows ? G_MC / G_MR : (G_NC / G_NR) / 4;
    if ((int64_t)nt > d.total) nt = (int)d.total;
    d.nt = nt;
    const int64_t t0 = gemm_now();
    int64_t tmain = t0, mine = 0;
    const int flush = fd_flush_current(); /* this call's, for every thread */
    const unsigned spawn = fd_flush_spawn_begin(flush);
    G_OMP(omp parallel num_threads(nt) if (nt > 1))
    {
        const unsigned csr = fd_flush_begin(flush);
        const int64_t done = GF(dyn_worker)(&d, packed, G_TID());
        if (G_TID() == 0) {
            tmain = gemm_now();
            mine = done;
        }
        fd_flush_end(flush, csr);
    }
    fd_flush_spawn_end(flush, spawn);
    gemm_region_done(nt, t0, tmain, mine, d.total);
    free(d.pa);
    free(d.pb);
    free(d.fa);
    free(d.fb);
}

static void GF(item_of)(const fd_gemm_args *a, int64_t t, GF(item) *g)
{
    g->m = a->m;
    g->n = a->n;
    g->k = a->k;
    g->a = (const GT *)a->a + t * a->bsa;
    g->rsa = a->rsa;
    g->csa = a->csa;
    g->b = (const GT *)a->b + t * a->bsb;
    g->rsb = a->rsb;
    g->csb = a->csb;
    g->c = (GT *)a->c + t * a->bsc;
    g->ldc = a->ldc;
    g->bias = a->bias ? (const GT *)a->bias + t * a->bsbias : NULL;
    g->bsum = a->bsum ? (GT *)a->bsum + t * a->bsbsum : NULL;
    g->accumulate = a->accumulate;
}

/* k-split of one accumulating item with few output tiles and a long k (shapes only decide). */
#define G_KSPLIT_MIN (4 * G_KC)
#define G_KSPLIT_MAX_CHUNKS 64
static int64_t GF(ksplit_chunk)(const GF(item) *g)
{
    if (!g->accumulate || g->bias || GF(is_degenerate)(g)) return 0;
    const int64_t tiles = ((g->m + G_MR - 1) / G_MR) * ((g->n + G_NR - 1) / G_NR);
    if (tiles > 8 || g->k < 2 * G_KSPLIT_MIN) return 0;
    int64_t ck = (g->k + G_KSPLIT_MAX_CHUNKS - 1) / G_KSPLIT_MAX_CHUNKS;
    ck = (ck + G_KC - 1) / G_KC * G_KC;
    if (ck < G_KSPLIT_MIN) ck = G_KSPLIT_MIN;
    return ck;
}

/* returns 0 if it did the work, -1 if the scratch could not be had */
static int GF(run_ksplit)(const GF(item) *g, int64_t ck, int nt)
{
    const int64_t m = g->m, n = g->n, nch = (g->k + ck - 1) / ck;
    const int64_t per = m * n + (g->bsum ? n : 0);
    GT *part = (GT *)GF(alloc)(nch * per);
    if (!part) return -1;
    if (nt > nch) nt = (int)nch;
    /* dynamic: a thread held up by another process does not hold up the others (any schedule gives
     * the same bits: each chunk is computed whole by one thread, and combined in chunk order) */
    const int64_t t0 = gemm_now();
    int64_t tmain = t0, mine = 0;
    const int flush = fd_flush_current(); /* this call's, for every thread */
    const unsigned spawn = fd_flush_spawn_begin(flush);
    G_OMP(omp parallel num_threads(nt) if (nt > 1))
    {
        const unsigned csr = fd_flush_begin(flush);
        GT *bufa = NULL, *bufb = NULL;
        int64_t done = 0;
        G_OMP(omp for schedule(dynamic, 1) nowait)
        for (int64_t ch = 0; ch < nch; ch++) {
            done++;
            GF(item) s = *g;
            const int64_t p0 = ch * ck;
            s.k = g->k - p0 < ck ? g->k - p0 : ck;
            s.a = g->a + p0 * g->csa;
            s.b = g->b + p0 * g->rsb;
            s.c = part + ch * per;
            s.ldc = n;
            s.accumulate = 0;
            s.bsum = NULL;
            if (g->bsum) {
                s.bsum = part + ch * per + m * n;
                for (int64_t j = 0; j < n; j++) s.bsum[j] = 0;
            }
            GF(run_serial)(&s, &bufa, &bufb);
        }
        free(bufa);
        free(bufb);
        if (G_TID() == 0) {
            tmain = gemm_now();
            mine = done;
        }
        fd_flush_end(flush, csr);
    }
    fd_flush_spawn_end(flush, spawn);
    gemm_region_done(nt, t0, tmain, mine, nch);
    /* fixed-order reduction of the chunk partials (the output is small by construction) */
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            GT t = part[i * n + j];
            for (int64_t ch = 1; ch < nch; ch++) t += part[ch * per + i * n + j];
            g->c[i * g->ldc + j] += t;
        }
    if (g->bsum)
        for (int64_t j = 0; j < n; j++) {
            GT t = part[m * n + j];
            for (int64_t ch = 1; ch < nch; ch++) t += part[ch * per + m * n + j];
            g->bsum[j] += t;
        }
    free(part);
    return 0;
}

/* Fewest multiply-adds per thread before a GEMM goes multi-threaded (2M: ~80 us of one core). On a
 * quiet machine smaller GEMMs gain little from a parallel region (the digits MLP's 1M-MAC layers: the
 * same epoch time on one thread as on two); on a machine whose other cores are busy every region can
 * wait a scheduler time slice for a descheduled thread (that epoch 2.6x slower with one of two cores
 * busy than on one thread). */
#define G_PAR_MIN_FMA (1 << 21)

static void GF(gemm)(const fd_gemm_args *args, int nthreads)
{
    const int64_t batch = args->batch;
    if (batch <= 0) return;
    const double work = (double)args->m * (double)args->n * (double)(args->k ? args->k : 1);
    double cap = work * (double)batch / G_PAR_MIN_FMA;
    int nt = nthreads;
    if ((double)nt > cap) nt = cap < 1 ? 1 : (int)cap;
    nt = gemm_team(nt);

    if (batch == 1) {
        GF(item) g;
        GF(item_of)(args, 0, &g);
        const int64_t ck = GF(ksplit_chunk)(&g);
        if (ck && GF(run_ksplit)(&g, ck, nt) == 0) return;
        GF(run_parallel)(&g, nt);
        return;
    }
    /* many items: one thread per item unless there are few big ones */
    if (nt > 1 && batch < 4 * (int64_t)nt && work >= (double)G_PAR_MIN_FMA * 64) {
        for (int64_t t = 0; t < batch; t++) {
            GF(item) g;
            GF(item_of)(args, t, &g);
            GF(run_parallel)(&g, nt);
        }
        return;
    }
    if (nt > batch) nt = (int)batch;
    /* dynamic in runs of items (about 16 runs per thread): as robust as the k-split to a busy core */
    int64_t run = batch / (16 * (int64_t)nt);
    if (run < 1) run = 1;
    const int64_t t0 = gemm_now();
    int64_t tmain = t0, mine = 0;
    const int flush = fd_flush_current(); /* this call's, for every thread */
    const unsigned spawn = fd_flush_spawn_begin(flush);
    G_OMP(omp parallel num_threads(nt) if (nt > 1))
    {
        const unsigned csr = fd_flush_begin(flush);
        GT *bufa = NULL, *bufb = NULL;
        int64_t done = 0;
        G_OMP(omp for schedule(dynamic, run) nowait)
        for (int64_t t = 0; t < batch; t++) {
            done++;
            GF(item) g;
            GF(item_of)(args, t, &g);
            GF(run_serial)(&g, &bufa, &bufb);
        }
        free(bufa);
        free(bufb);
        if (G_TID() == 0) {
            tmain = gemm_now();
            mine = done;
        }
        fd_flush_end(flush, csr);
    }
    fd_flush_spawn_end(flush, spawn);
    gemm_region_done(nt, t0, tmain, mine, batch);
}

#undef G_HAVE_PACK_BT_VEC
#undef G_KSPLIT_MIN
#undef G_KSPLIT_MAX_CHUNKS
#undef G_PAR_MIN_FMA
#undef G_DYN_MAX_ELEMS
#undef G_ALIGN
#undef GF
#undef GF_
#undef GF__

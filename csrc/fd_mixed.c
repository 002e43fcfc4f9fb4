/* fd_mixed.c -- the mixed-precision step: SGD / Adam / RMSprop over parameters and state stored in
 * float32, bfloat16, float16 or 8-bit blocks, with float32 arithmetic; the 8-bit block helpers; the
 * finiteness check of float32/bfloat16/float16 gradients.
 *
 * The formats are specified (in NumPy) by fastdescent/precision.py and docs/low-precision.md, and
 * this file reproduces fastdescent/backends/numpy_ref/mixed.py bit for bit:
 *
 * - each tensor is walked in spans of whole 256-element blocks from its start (a block, with its one
 *   scale, is never split between threads: fd_run_segments_aligned);
 * - per span, each column that is not float32 is decoded into a float32 staging buffer (bfloat16 and
 *   float16 exactly by bit arithmetic, an 8-bit code as its map's magnitude times the block scale,
 *   the sign bit flipped for negative codes); float32 columns are used in place; the gradient is
 *   divided by grad_scale (float32) when that is not 1;
 * - a master copy is re-read from the parameter where the parameter is not the master rounded to
 *   nearest (it was written from outside the optimizer);
 * - the rule's float32 element loop runs on the span (fd_<rule>_mixed_setup: the float32 kernel's
 *   own loop, hence its bits);
 * - the parameter (from the master copy when there is one) is stored rounded to nearest-even, or,
 *   bfloat16 with `stochastic`, rounded stochastically with random stream 0; bfloat16 state likewise
 *   (stream 1 + its column position); float16 always to nearest; 8-bit state is quantized block by
 *   block with the block's new absmax.
 *
 * Stochastic rounding: element e of a tensor gets the 16 bits number (e & 7) (little-endian halves
 * of the four words) of Philox4x32-10 at counter (e >> 3, step, 0x53520000 | stream) under the
 * tensor's key (fd_philox.h), so the result depends on neither the thread count nor the split.
 */
#include <math.h>
#include <string.h>

#include "fd_internal.h"
#include "fd_philox.h"

FD_EXACT_FP

#define FD_BLOCK 256
/* elements staged at once: one block (measured: 256 beats 1024 by ~10% and 4096 by ~15% on the
 * SR and 8-bit paths -- the short phases keep the hardware prefetchers ahead); a multiple of the
 * 128 elements sr_bits_avx2 writes at a time */
#define FD_SPAN 256
_Static_assert(FD_SPAN % 128 == 0 && FD_SPAN % FD_BLOCK == 0, "FD_SPAN: whole blocks, 128s");
#define FD_SR_TAG UINT32_C(0x53520000)
#define FD_NSTATE 3

enum { F32 = 0, BF16 = 1, F16 = 2, Q8S = 3, Q8U = 4, ABSENT = -1 };

/* ---------------------------------------------------------------------------- bit views */
static inline uint32_t fbits(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static inline float bitsf(uint32_t u)
{
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* ---------------------------------------------------------------------------- element formats */
/* bfloat16 bits of the float32 with bits u: nearest, ties to even; NaN -> 0x7FC0 */
static inline uint16_t bf16_rne(uint32_t u)
{
    uint32_t r = (u + UINT32_C(0x7FFF) + ((u >> 16) & 1u)) >> 16;
    return (u & UINT32_C(0x7FFFFFFF)) > UINT32_C(0x7F800000) ? (uint16_t)0x7FC0 : (uint16_t)r;
}

/* float16 bits of the float32 with bits u: nearest, ties to even (subnormals included); overflow
 * -> inf; NaN -> 0x7E00 */
static inline uint16_t f16_rne(uint32_t u)
{
    uint32_t sign = (u >> 16) & UINT32_C(0x8000);
    uint32_t a = u & UINT32_C(0x7FFFFFFF);
    /* normal half: drop 13 mantissa bits rounding to nearest even, rebias 127 -> 15 (a carry into
     * the exponent is the correct rounding, up to inf); only used for a >= 2^-14 */
    uint32_t hn = (a - (UINT32_C(112) << 23) + UINT32_C(0xFFF) + ((a >> 13) & 1u)) >> 13;
    /* subnormal half: adding 0.5 (float32, ties to even) leaves the magnitude rounded to a multiple
     * of 2^-24, the half's subnormal step, in the low mantissa bits */
    uint32_t hs = fbits(bitsf(a) + 0.5f) - UINT32_C(0x3F000000);
    uint32_t h = a < (UINT32_C(113) << 23) ? hs : hn;
    h = a >= (UINT32_C(143) << 23) ? UINT32_C(0x7C00) : h;
    return a > UINT32_C(0x7F800000) ? (uint16_t)0x7E00 : (uint16_t)(h | sign);
}

/* float32 value of float16 bits h (exact; NaN payloads kept) */
static inline float f16_value(uint32_t h)
{
    uint32_t o = (h & UINT32_C(0x7FFF)) << 13;
    uint32_t e = o & UINT32_C(0x0F800000);
    uint32_t normal = o + (UINT32_C(112) << 23);
    uint32_t special = o + (UINT32_C(224) << 23);
    uint32_t sub = fbits(bitsf(o + (UINT32_C(113) << 23)) - 0x1p-14f);
    uint32_t v = e == UINT32_C(0x0F800000) ? special : (e == 0 ? sub : normal);
    return bitsf(v | ((h & UINT32_C(0x8000)) << 16));
}

/* ---------------------------------------------------------------------------- 8-bit maps */
typedef struct {
    int bias;       /* exponent bias */
    uint32_t qmax;  /* largest magnitude code */
    uint32_t qmask; /* magnitude bits of a byte */
    uint32_t smask; /* sign bit of a byte (0: unsigned map) */
    float sub_lim;  /* magnitudes below this are subnormal codes */
    float sub_mul;  /* ... scaled to subnormal code units by this */
    float mag[256]; /* value of each magnitude code */
} q8map;

static void q8map_init(q8map *m, int code)
{
    int s = code == Q8S;
    m->bias = s ? 15 : 31;
    m->qmax = s ? 127u : 255u;
    m->qmask = s ? 0x7Fu : 0xFFu;
    m->smask = s ? 0x80u : 0u;
    m->sub_lim = s ? 0x1p-14f : 0x1p-30f;
    m->sub_mul = s ? 0x1p17f : 0x1p33f;
    float unit = s ? 0x1p-17f : 0x1p-33f;
    for (uint32_t q = 0; q < 256; q++) {
        uint32_t mq = q & m->qmask, e = mq >> 3, f = mq & 7u;
        m->mag[q] = e == 0 ? (float)f * unit
                           : bitsf(((e + (uint32_t)(127 - m->bias)) << 23) | (f << 20));
    }
}

/* x[i] = value of codes[i] times scale, i < n (one block) */
FD_INLINE void q8_load_block(const q8map *m, const uint8_t *FD_RESTRICT codes, float scale,
                             int64_t n, float *FD_RESTRICT x)
{
    const uint32_t smask = m->smask;
    for (int64_t i = 0; i < n; i++) {
        uint32_t c = codes[i];
        /* negation flips the sign bit (as NumPy's, NaN included) */
        x[i] = bitsf(fbits(m->mag[c] * scale) ^ ((c & smask) << 24));
    }
}

/* The scale of one block x[0..n) (fastdescent/precision.py): 0 with every code 0 when the block
 * is below the smallest normal scale, NaN with every code 0 when it holds a non-finite value; else
 * *inv = 1 / scale and 1 is returned (the codes are still to be written). */
static inline int q8_block_scale(const float *FD_RESTRICT x, int64_t n, uint8_t *codes,
                                 float *scale, float *inv)
{
    uint32_t top = 0; /* largest |x| as bits: NaN's exceed inf's, which exceed any finite's */
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = fbits(x[i]) & UINT32_C(0x7FFFFFFF);
        top = u > top ? u : top;
    }
    if (top >= UINT32_C(0x7F800000)) {
        *scale = bitsf(UINT32_C(0x7FC00000));
        memset(codes, 0, (size_t)n);
        return 0;
    }
    float s = bitsf(top) / 1.875f;
    if (!(s >= 0x1p-126f)) {
        *scale = 0.0f;
        memset(codes, 0, (size_t)n);
        return 0;
    }
    *scale = s;
    *inv = 1.0f / s;
    return 1;
}

/* codes of x[0..n) for a block of inverse scale inv on the signed (sgn) or unsigned map */
FD_INLINE void q8_encode_loop(const q8map *m, const float *FD_RESTRICT x, int64_t n, float inv,
                              uint8_t *FD_RESTRICT codes, const int sgn)
{
    const uint32_t rebias = (uint32_t)(127 - m->bias) << 3, qmax = m->qmax;
    const float sub_lim = m->sub_lim, sub_mul = m->sub_mul;
    for (int64_t i = 0; i < n; i++) {
        float xi = x[i];
        float ax = fabsf(xi);
        float y = ax * inv;
        y = y < 4.0f ? y : 4.0f;
        uint32_t u = fbits(y);
        uint32_t qn = ((u + UINT32_C(0x7FFFF) + ((u >> 20) & 1u)) >> 20) - rebias;
        float ys = y < sub_lim ? y : 0.0f; /* (in range of the conversion) */
        uint32_t qs = (uint32_t)(int32_t)((ys * sub_mul + 0x1p23f) - 0x1p23f);
        uint32_t q = y < sub_lim ? qs : qn;
        q = q < qmax ? q : qmax;
        if (sgn) q |= xi < 0.0f ? 0x80u : 0u;
        else q = (q == 0 && ax > 0.0f) ? 1u : q; /* a positive value never reads back as 0 */
        codes[i] = (uint8_t)q;
    }
}

/* codes of x[0..n) for a block of inverse scale inv (portable path) */
static void q8_encode_generic(const q8map *m, const float *FD_RESTRICT x, int64_t n, float inv,
                              uint8_t *FD_RESTRICT codes)
{
    if (m->smask) q8_encode_loop(m, x, n, inv, codes, 1);
    else q8_encode_loop(m, x, n, inv, codes, 0);
}

/* x[i] = value of codes[i] times scale, i < n (portable path) */
static void q8_load_generic(const q8map *m, const uint8_t *FD_RESTRICT codes, float scale,
                            int64_t n, float *FD_RESTRICT x)
{
    q8_load_block(m, codes, scale, n, x);
}

/* ---------------------------------------------------------------------------- random bits */
/* The 16 random bits of elements lo .. lo+n-1 (lo a multiple of 8) into r[0 .. n) (room for n
 * rounded up to 128): the little-endian halves of the 4 Philox words of counter e >> 3. Eight
 * counters at a time in lanes (vectorizes: the 32x32->64 products are the only wide operations). */
static void sr_bits_generic(uint16_t *FD_RESTRICT r, int64_t lo, int64_t n, const uint32_t key[2],
                            uint32_t step, uint32_t tag)
{
    int64_t nj = (n + 7) >> 3;
    uint64_t j0 = (uint64_t)lo >> 3;
    for (int64_t b = 0; b < nj; b += 8) {
        uint32_t c0[8], c1[8], c2[8], c3[8];
        for (int l = 0; l < 8; l++) {
            uint64_t j = j0 + (uint64_t)(b + l);
            c0[l] = (uint32_t)j;
            c1[l] = (uint32_t)(j >> 32);
            c2[l] = step;
            c3[l] = tag;
        }
        uint32_t k0 = key[0], k1 = key[1];
        for (int r = 0; r < 10; r++) {
            for (int l = 0; l < 8; l++) {
                uint64_t p0 = FD_PHILOX_M0 * (uint64_t)c0[l];
                uint64_t p1 = FD_PHILOX_M1 * (uint64_t)c2[l];
                uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1[l] ^ k0;
                uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3[l] ^ k1;
                c1[l] = (uint32_t)p1;
                c3[l] = (uint32_t)p0;
                c0[l] = n0;
                c2[l] = n2;
            }
            k0 += FD_PHILOX_W0;
            k1 += FD_PHILOX_W1;
        }
        for (int l = 0; l < 8; l++) { /* (r holds whole groups of 8 counters) */
            uint16_t *o = r + 8 * (b + l);
            o[0] = (uint16_t)c0[l];
            o[1] = (uint16_t)(c0[l] >> 16);
            o[2] = (uint16_t)c1[l];
            o[3] = (uint16_t)(c1[l] >> 16);
            o[4] = (uint16_t)c2[l];
            o[5] = (uint16_t)(c2[l] >> 16);
            o[6] = (uint16_t)c3[l];
            o[7] = (uint16_t)(c3[l] >> 16);
        }
    }
}


/* ---------------------------------------------------------------------------- AVX2 paths */
/* The same functions with AVX2 intrinsics (the autovectorizer leaves Philox and the 8-bit encoder
 * scalar); identical results, chosen at run time with the other AVX2 code (fd_avx2_active). */
#if FD_X86_DISPATCH
#include <immintrin.h>

/* high and low 32 bits of the eight 32x32 products a[l] * m */
FD_TARGET_AVX2 static inline void mulhilo8(__m256i a, __m256i m, __m256i *hi, __m256i *lo)
{
    __m256i pe = _mm256_mul_epu32(a, m);                        /* lanes 0, 2, 4, 6 */
    __m256i po = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m); /* lanes 1, 3, 5, 7 */
    *lo = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
    *hi = _mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA);
}

/* Philox4x32-10 of eight counters (c0, c1, step, tag), G groups at once (independent chains for the
 * multiplier's latency) */
#define FD_SR_GROUPS 2
FD_TARGET_AVX2 static inline void philox8(__m256i c[FD_SR_GROUPS][4], uint32_t k0, uint32_t k1)
{
    const __m256i m0 = _mm256_set1_epi64x((long long)FD_PHILOX_M0);
    const __m256i m1 = _mm256_set1_epi64x((long long)FD_PHILOX_M1);
    for (int rd = 0; rd < 10; rd++) {
        const __m256i vk0 = _mm256_set1_epi32((int)k0), vk1 = _mm256_set1_epi32((int)k1);
        for (int q = 0; q < FD_SR_GROUPS; q++) {
            __m256i hi0, lo0, hi1, lo1;
            mulhilo8(c[q][0], m0, &hi0, &lo0);
            mulhilo8(c[q][2], m1, &hi1, &lo1);
            c[q][0] = _mm256_xor_si256(_mm256_xor_si256(hi1, c[q][1]), vk0);
            c[q][2] = _mm256_xor_si256(_mm256_xor_si256(hi0, c[q][3]), vk1);
            c[q][1] = lo1;
            c[q][3] = lo0;
        }
        k0 += FD_PHILOX_W0;
        k1 += FD_PHILOX_W1;
    }
}

FD_TARGET_AVX2 static void sr_bits_avx2(uint16_t *FD_RESTRICT r, int64_t lo, int64_t n,
                                        const uint32_t key[2], uint32_t step, uint32_t tag)
{
    int64_t nj = (n + 7) >> 3;
    uint64_t j0 = (uint64_t)lo >> 3;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int64_t b = 0; b < nj; b += 8 * FD_SR_GROUPS) {
        __m256i c[FD_SR_GROUPS][4];
        for (int q = 0; q < FD_SR_GROUPS; q++) {
            uint64_t j = j0 + (uint64_t)(b + 8 * q);
            if ((uint32_t)j <= UINT32_C(0xFFFFFFF8)) {
                c[q][0] = _mm256_add_epi32(_mm256_set1_epi32((int)(uint32_t)j), lane);
                c[q][1] = _mm256_set1_epi32((int)(uint32_t)(j >> 32));
            } else { /* the low word wraps inside this group */
                uint32_t w0[8], w1[8];
                for (int l = 0; l < 8; l++) {
                    w0[l] = (uint32_t)(j + (uint64_t)l);
                    w1[l] = (uint32_t)((j + (uint64_t)l) >> 32);
                }
                c[q][0] = _mm256_loadu_si256((const __m256i *)w0);
                c[q][1] = _mm256_loadu_si256((const __m256i *)w1);
            }
            c[q][2] = _mm256_set1_epi32((int)step);
            c[q][3] = _mm256_set1_epi32((int)tag);
        }
        philox8(c, key[0], key[1]);
        for (int q = 0; q < FD_SR_GROUPS; q++) {
            /* transpose: counter l's four words consecutive (its eight halves, little-endian) */
            __m256i t0 = _mm256_unpacklo_epi32(c[q][0], c[q][1]);
            __m256i t1 = _mm256_unpackhi_epi32(c[q][0], c[q][1]);
            __m256i t2 = _mm256_unpacklo_epi32(c[q][2], c[q][3]);
            __m256i t3 = _mm256_unpackhi_epi32(c[q][2], c[q][3]);
            __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
            __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
            __m256i *o = (__m256i *)(r + 8 * (b + 8 * q));
            _mm256_storeu_si256(o, _mm256_permute2x128_si256(u0, u1, 0x20));
            _mm256_storeu_si256(o + 1, _mm256_permute2x128_si256(u2, u3, 0x20));
            _mm256_storeu_si256(o + 2, _mm256_permute2x128_si256(u0, u1, 0x31));
            _mm256_storeu_si256(o + 3, _mm256_permute2x128_si256(u2, u3, 0x31));
        }
    }
}

/* codes of eight values */
FD_TARGET_AVX2 static inline __m256i q8_encode8(__m256 x, __m256 inv, __m256i rebias, __m256i qmax,
                                                __m256 sub_lim, __m256 sub_mul, int sgn)
{
    const __m256i absmask = _mm256_set1_epi32(0x7FFFFFFF);
    __m256 ax = _mm256_castsi256_ps(_mm256_and_si256(_mm256_castps_si256(x), absmask));
    __m256 y = _mm256_min_ps(_mm256_mul_ps(ax, inv), _mm256_set1_ps(4.0f));
    __m256i u = _mm256_castps_si256(y);
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 20), _mm256_set1_epi32(1));
    __m256i qn = _mm256_sub_epi32(
        _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFFF)), odd),
                          20),
        rebias);
    __m256 sub = _mm256_cmp_ps(y, sub_lim, _CMP_LT_OQ);
    __m256 ys = _mm256_and_ps(y, sub);
    const __m256 two23 = _mm256_set1_ps(0x1p23f);
    __m256i qs = _mm256_cvttps_epi32(
        _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(ys, sub_mul), two23), two23));
    __m256i q = _mm256_blendv_epi8(qn, qs, _mm256_castps_si256(sub));
    q = _mm256_min_epu32(q, qmax);
    if (sgn) {
        __m256 neg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ);
        q = _mm256_or_si256(q, _mm256_and_si256(_mm256_castps_si256(neg), _mm256_set1_epi32(0x80)));
    } else {
        __m256i zero = _mm256_cmpeq_epi32(q, _mm256_setzero_si256());
        __m256 pos = _mm256_cmp_ps(ax, _mm256_setzero_ps(), _CMP_GT_OQ);
        __m256i up = _mm256_and_si256(zero, _mm256_castps_si256(pos));
        q = _mm256_or_si256(q, _mm256_and_si256(up, _mm256_set1_epi32(1)));
    }
    return q;
}

FD_TARGET_AVX2 static void q8_encode_avx2(const q8map *m, const float *FD_RESTRICT x, int64_t n,
                                          float inv, uint8_t *FD_RESTRICT codes)
{
    const __m256 vinv = _mm256_set1_ps(inv), sub_lim = _mm256_set1_ps(m->sub_lim);
    const __m256 sub_mul = _mm256_set1_ps(m->sub_mul);
    const __m256i rebias = _mm256_set1_epi32((127 - m->bias) << 3);
    const __m256i qmax = _mm256_set1_epi32((int)m->qmax);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const int sgn = m->smask != 0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i q0 = q8_encode8(_mm256_loadu_ps(x + i), vinv, rebias, qmax, sub_lim, sub_mul, sgn);
        __m256i q1 = q8_encode8(_mm256_loadu_ps(x + i + 8), vinv, rebias, qmax, sub_lim, sub_mul, sgn);
        __m256i q2 = q8_encode8(_mm256_loadu_ps(x + i + 16), vinv, rebias, qmax, sub_lim, sub_mul,
                                sgn);
        __m256i q3 = q8_encode8(_mm256_loadu_ps(x + i + 24), vinv, rebias, qmax, sub_lim, sub_mul,
                                sgn);
        __m256i a = _mm256_packus_epi32(q0, q1), b = _mm256_packus_epi32(q2, q3);
        __m256i c = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(a, b), order);
        _mm256_storeu_si256((__m256i *)(codes + i), c);
    }
    if (i < n) q8_encode_generic(m, x + i, n - i, inv, codes + i);
}

FD_TARGET_AVX2 static void q8_load_avx2(const q8map *m, const uint8_t *FD_RESTRICT codes,
                                        float scale, int64_t n, float *FD_RESTRICT x)
{
    const __m256 vs = _mm256_set1_ps(scale);
    const __m256i smask = _mm256_set1_epi32((int)m->smask);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + i)));
        __m256 mag = _mm256_i32gather_ps(m->mag, c, 4);
        __m256i v = _mm256_castps_si256(_mm256_mul_ps(mag, vs));
        v = _mm256_xor_si256(v, _mm256_slli_epi32(_mm256_and_si256(c, smask), 24));
        _mm256_storeu_ps(x + i, _mm256_castsi256_ps(v));
    }
    if (i < n) q8_load_block(m, codes + i, scale, n - i, x + i);
}
#endif

/* the paths of this CPU */
typedef struct {
    void (*sr)(uint16_t *, int64_t, int64_t, const uint32_t *, uint32_t, uint32_t);
    void (*enc)(const q8map *, const float *, int64_t, float, uint8_t *);
    void (*load)(const q8map *, const uint8_t *, float, int64_t, float *);
} mixed_paths;

static mixed_paths pick_paths(void)
{
    mixed_paths fp = {sr_bits_generic, q8_encode_generic, q8_load_generic};
#if FD_X86_DISPATCH
    if (fd_avx2_active()) {
        fp.sr = sr_bits_avx2;
        fp.enc = q8_encode_avx2;
        fp.load = q8_load_avx2;
    }
#endif
    return fp;
}

/* quantize one block x[0..n) into codes and *scale */
static inline void q8_store_block(const mixed_paths *fp, const q8map *m, const float *x, int64_t n,
                                  uint8_t *codes, float *scale)
{
    float inv;
    if (q8_block_scale(x, n, codes, scale, &inv)) fp->enc(m, x, n, inv, codes);
}

/* ---------------------------------------------------------------------------- the step */
typedef struct {
    fd_mixed_rule rule;
    void *const *param;
    float *const *master; /* NULL: no master copy */
    const void *const *grad;
    const int8_t *gcodes;
    void *const *state;    /* [FD_NSTATE * ntensors], column k of tensor t at k * ntensors + t */
    float *const *scales;  /* same layout; 8-bit columns only */
    int64_t ntensors;
    int scodes[FD_NSTATE]; /* ABSENT for an absent column */
    int pcode;
    const int64_t *index;
    uint64_t seed;
    uint32_t step;
    int psr, ssr; /* stochastic rounding of the parameter / of bfloat16 state */
    float gscale;
    int unscale;
    const q8map *maps[FD_NSTATE];
    mixed_paths fp;
} mixed_ctx;

/* float32 values of elements [lo, lo+n) of a column stored as `code`: the column itself when it
 * is float32, else decoded into buf. */
FD_INLINE float *stage(const mixed_paths *fp, int code, void *base, const float *scales,
                       const q8map *m, int64_t lo, int64_t n, float *FD_RESTRICT buf)
{
    if (code == F32) return (float *)base + lo;
    if (code == BF16) {
        const uint16_t *src = (const uint16_t *)base + lo;
        for (int64_t i = 0; i < n; i++) buf[i] = bitsf((uint32_t)src[i] << 16);
    } else if (code == F16) {
        const uint16_t *src = (const uint16_t *)base + lo;
        for (int64_t i = 0; i < n; i++) buf[i] = f16_value(src[i]);
    } else {
        const uint8_t *src = (const uint8_t *)base + lo;
        for (int64_t b = 0; b < n; b += FD_BLOCK) {
            int64_t k = n - b < FD_BLOCK ? n - b : FD_BLOCK;
            fp->load(m, src + b, scales[(lo + b) / FD_BLOCK], k, buf + b);
        }
    }
    return buf;
}

/* store float32 x[0..n) into elements [lo, lo+n) of a column stored as `code` (not float32) */
FD_INLINE void commit(const mixed_paths *fp, int code, const float *FD_RESTRICT x, void *base,
                      float *scales,
                      const q8map *m, int64_t lo, int64_t n, int sr, const uint32_t key[2],
                      uint32_t step, uint32_t stream, uint16_t *FD_RESTRICT rb)
{
    if (code == BF16) {
        uint16_t *dst = (uint16_t *)base + lo;
        if (sr) {
            fp->sr(rb, lo, n, key, step, FD_SR_TAG | stream);
            const uint16_t *r16 = rb;
            for (int64_t i = 0; i < n; i++) {
                uint32_t u = fbits(x[i]);
                uint32_t up = (u + (uint32_t)r16[i]) >> 16;
                dst[i] = (u & UINT32_C(0x7F800000)) != UINT32_C(0x7F800000) ? (uint16_t)up
                                                                              : bf16_rne(u);
            }
        } else {
            for (int64_t i = 0; i < n; i++) dst[i] = bf16_rne(fbits(x[i]));
        }
    } else if (code == F16) {
        uint16_t *dst = (uint16_t *)base + lo;
        for (int64_t i = 0; i < n; i++) dst[i] = f16_rne(fbits(x[i]));
    } else {
        uint8_t *dst = (uint8_t *)base + lo;
        for (int64_t b = 0; b < n; b += FD_BLOCK) {
            int64_t k = n - b < FD_BLOCK ? n - b : FD_BLOCK;
            q8_store_block(fp, m, x + b, k, dst + b, scales + (lo + b) / FD_BLOCK);
        }
    }
}

/* Re-read master elements whose parameter (bits h) is not the master rounded to nearest: the
 * parameter was written from outside (a model load, an in-place edit) and wins. */
FD_INLINE void resync(int pcode, const uint16_t *FD_RESTRICT h, float *FD_RESTRICT m, int64_t n)
{
    if (pcode == BF16) {
        for (int64_t i = 0; i < n; i++) {
            float d = bitsf((uint32_t)h[i] << 16);
            m[i] = bf16_rne(fbits(m[i])) != h[i] ? d : m[i];
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            float d = f16_value(h[i]);
            m[i] = f16_rne(fbits(m[i])) != h[i] ? d : m[i];
        }
    }
}

FD_INLINE void mixed_seg_body(const void *vctx, int64_t t, int64_t off, int64_t len)
{
    const mixed_ctx *c = (const mixed_ctx *)vctx;
    _Alignas(64) float buf[2 + FD_NSTATE][FD_SPAN];
    _Alignas(64) uint16_t rb[FD_SPAN];
    const int64_t nt = c->ntensors;
    const int pcode = c->pcode, gcode = c->gcodes[t];
    uint32_t key[2] = {0, 0};
    if (c->psr || c->ssr) fd_philox_tensor_key(c->seed, (uint64_t)c->index[t], key);
    void *sbase[FD_NSTATE];
    float *sscale[FD_NSTATE];
    for (int k = 0; k < FD_NSTATE; k++) {
        sbase[k] = c->scodes[k] == ABSENT ? NULL : c->state[k * nt + t];
        sscale[k] = (c->scodes[k] == Q8S || c->scodes[k] == Q8U) ? c->scales[k * nt + t] : NULL;
    }
    for (int64_t b = off; b < off + len; b += FD_SPAN) {
        int64_t n = off + len - b < FD_SPAN ? off + len - b : FD_SPAN;
        float *p = c->master ? c->master[t] + b
                             : stage(&c->fp, pcode, c->param[t], NULL, NULL, b, n, buf[0]);
        if (c->master) resync(pcode, (const uint16_t *)c->param[t] + b, p, n);
        float *g = stage(&c->fp, gcode, (void *)c->grad[t], NULL, NULL, b, n, buf[1]);
        if (c->unscale) {
            const float gs = c->gscale;
            float *FD_RESTRICT out = buf[1];
            for (int64_t i = 0; i < n; i++) out[i] = g[i] / gs;
            g = out;
        }
        float *s[FD_NSTATE];
        for (int k = 0; k < FD_NSTATE; k++)
            s[k] = sbase[k] ? stage(&c->fp, c->scodes[k], sbase[k], sscale[k], c->maps[k], b, n,
                                    buf[2 + k])
                            : NULL;
        c->rule.apply(c->rule.ctx.bytes, n, p, g, s[0], s[1], s[2]);
        if (pcode != F32)
            commit(&c->fp, pcode, p, c->param[t], NULL, NULL, b, n, c->psr, key, c->step, 0, rb);
        for (int k = 0; k < FD_NSTATE; k++)
            if (sbase[k] && c->scodes[k] != F32)
                commit(&c->fp, c->scodes[k], s[k], sbase[k], sscale[k], c->maps[k], b, n, c->ssr,
                       key, c->step, (uint32_t)(1 + k), rb);
    }
}

FD_MULTIVERSION(mixed_seg, (const void *ctx, int64_t t, int64_t off, int64_t len),
                (ctx, t, off, len))

static int elem_size(int code) { return code == F32 ? 4 : (code == BF16 || code == F16) ? 2 : 1; }

int fd_mixed_step(int rule, int64_t ntensors, const int64_t *sizes, void *const *param, int pcode,
                  float *const *master, const void *const *grad, const int8_t *gcodes,
                  void *const *state, float *const *scales, const int32_t *scodes,
                  const int64_t *param_index, uint64_t seed, uint64_t step, int stochastic,
                  double grad_scale, const double *scalars, int64_t nscalars)
{
    int64_t total;
    mixed_ctx c;
    FD_CHECK(fd_check_sizes(ntensors, sizes, &total));
    FD_CHECK(fd_check_ptr(scalars, nscalars, sizeof(double)));
    if (rule == FD_RULE_ADAM) FD_CHECK(fd_adam_mixed_setup(scalars, nscalars, &c.rule));
    else if (rule == FD_RULE_SGD) FD_CHECK(fd_sgd_mixed_setup(scalars, nscalars, &c.rule));
    else if (rule == FD_RULE_RMSPROP) FD_CHECK(fd_rmsprop_mixed_setup(scalars, nscalars, &c.rule));
    else return FD_ERR_ARG;
    FD_REQUIRE(pcode == F32 || pcode == BF16 || pcode == F16);
    FD_REQUIRE(!(master && pcode == F32)); /* a master copy is for low-precision parameters */
    FD_REQUIRE(isfinite(grad_scale) && grad_scale > 0.0);
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(param), (size_t)elem_size(pcode)));
    if (master) FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(master), sizeof(float)));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(grad), 2));
    FD_CHECK(fd_check_ptr(gcodes, ntensors, 1));
    FD_CHECK(fd_check_ptr(param_index, ntensors, sizeof(int64_t)));
    FD_CHECK(fd_check_ptr(scodes, FD_NSTATE, sizeof(int32_t)));
    for (int64_t t = 0; t < ntensors; t++) {
        FD_REQUIRE(gcodes[t] == F32 || gcodes[t] == pcode);
        FD_REQUIRE(param_index[t] >= 0);
        if (gcodes[t] == F32 && sizes[t] > 0 && !fd_aligned(grad[t], sizeof(float)))
            return FD_ERR_ALIGN;
    }
    int any_state = 0;
    for (int k = 0; k < FD_NSTATE; k++) {
        int code = scodes[k];
        FD_REQUIRE(code == ABSENT || (code >= F32 && code <= Q8U));
        if (code == ABSENT) {
            FD_REQUIRE(!(c.rule.needs & (1u << k))); /* a column the scalars need is missing */
            continue;
        }
        any_state = 1;
    }
    if (any_state) {
        if (ntensors > 0 && state == NULL) return FD_ERR_NULL;
        if (!fd_aligned(state, sizeof(void *))) return FD_ERR_ALIGN;
    }
    for (int k = 0; k < FD_NSTATE; k++) {
        int code = scodes[k];
        c.scodes[k] = code;
        if (code == ABSENT) continue;
        FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(state + k * ntensors),
                                 (size_t)elem_size(code)));
        if (code == Q8S || code == Q8U) {
            if (ntensors > 0 && scales == NULL) return FD_ERR_NULL;
            if (!fd_aligned(scales, sizeof(void *))) return FD_ERR_ALIGN;
            FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(scales + k * ntensors),
                                     sizeof(float)));
        }
    }
    if (total == 0) return FD_OK;

    q8map maps[2];
    q8map_init(&maps[0], Q8S);
    q8map_init(&maps[1], Q8U);
    for (int k = 0; k < FD_NSTATE; k++)
        c.maps[k] = c.scodes[k] == Q8S ? &maps[0] : c.scodes[k] == Q8U ? &maps[1] : NULL;
    c.param = param;
    c.master = master;
    c.grad = grad;
    c.gcodes = gcodes;
    c.state = state;
    c.scales = scales;
    c.ntensors = ntensors;
    c.pcode = pcode;
    c.index = param_index;
    c.seed = seed;
    c.step = (uint32_t)step;
    c.psr = stochastic && pcode == BF16;
    c.ssr = stochastic != 0;
    c.gscale = (float)grad_scale;
    c.unscale = c.gscale != 1.0f;
    c.fp = pick_paths();
    fd_run_segments_aligned(ntensors, sizes, total, FD_PAR_MIN_HEAVY / 2, FD_BLOCK,
                            FD_PICK(mixed_seg), &c);
    return FD_OK;
}

/* ---------------------------------------------------------------------------- finiteness */
typedef struct {
    const void *const *grad;
    const int8_t *gcodes;
} finite_ctx;

FD_INLINE void finite_chunk_body(const void *vctx, int64_t t, int64_t off, int64_t len,
                                 double *acc)
{
    const finite_ctx *c = (const finite_ctx *)vctx;
    int64_t bad = 0;
    if (c->gcodes[t] == F32) {
        const uint32_t *u = (const uint32_t *)c->grad[t] + off;
        for (int64_t i = 0; i < len; i++)
            bad += (u[i] & UINT32_C(0x7F800000)) == UINT32_C(0x7F800000);
    } else {
        const uint16_t *h = (const uint16_t *)c->grad[t] + off;
        const uint16_t mask = c->gcodes[t] == BF16 ? 0x7F80 : 0x7C00;
        for (int64_t i = 0; i < len; i++) bad += (h[i] & mask) == mask;
    }
    acc[0] += (double)(bad != 0);
}

static void finite_chunk_generic(const void *ctx, int64_t t, int64_t off, int64_t len,
                                 double *acc)
{
    finite_chunk_body(ctx, t, off, len, acc);
}
#if FD_X86_DISPATCH
FD_TARGET_AVX2 static void finite_chunk_avx2(const void *ctx, int64_t t, int64_t off, int64_t len,
                                             double *acc)
{
    finite_chunk_body(ctx, t, off, len, acc);
}
#define FINITE_CHUNK (fd_avx2_active() ? finite_chunk_avx2 : finite_chunk_generic)
#else
#define FINITE_CHUNK finite_chunk_generic
#endif

int fd_grads_finite(int64_t ntensors, const int64_t *sizes, const void *const *grad,
                    const int8_t *gcodes, int *out)
{
    int64_t total;
    FD_CHECK(fd_check_sizes(ntensors, sizes, &total));
    FD_CHECK(fd_check_column(ntensors, sizes, FD_COL(grad), 2));
    FD_CHECK(fd_check_ptr(gcodes, ntensors, 1));
    FD_CHECK(fd_check_ptr(out, 1, sizeof(int)));
    for (int64_t t = 0; t < ntensors; t++) {
        FD_REQUIRE(gcodes[t] == F32 || gcodes[t] == BF16 || gcodes[t] == F16);
        if (gcodes[t] == F32 && sizes[t] > 0 && !fd_aligned(grad[t], sizeof(float)))
            return FD_ERR_ALIGN;
    }
    if (total == 0) {
        *out = 1;
        return FD_OK;
    }
    double acc[FD_MAX_CHUNKS * FD_ACC_WORDS];
    finite_ctx c = {grad, gcodes};
    fd_run_chunks(ntensors, sizes, total, FINITE_CHUNK, &c, acc);
    int64_t nch = fd_nchunks(total);
    double bad = 0.0;
    for (int64_t i = 0; i < nch; i++) bad += acc[i * FD_ACC_WORDS];
    *out = bad == 0.0;
    return FD_OK;
}

/* ---------------------------------------------------------------------------- 8-bit helpers */
static int q8_args(int64_t n, const float *x, const uint8_t *codes, const float *scales, int code)
{
    FD_REQUIRE(code == Q8S || code == Q8U);
    if (n < 0 || n > FD_MAX_ELEMS) return FD_ERR_SIZE;
    FD_CHECK(fd_check_ptr(x, n, sizeof(float)));
    FD_CHECK(fd_check_ptr(codes, n, 1));
    return fd_check_ptr(scales, n, sizeof(float));
}

int fd_q8_quantize(int64_t n, const float *x, int code, uint8_t *codes, float *scales)
{
    FD_CHECK(q8_args(n, x, codes, scales, code));
    q8map m;
    q8map_init(&m, code);
    mixed_paths fp = pick_paths();
    const int flush = fd_flush_enter(); /* a kernel call like the others (fd_set_flush_denormal) */
    const unsigned csr = fd_flush_begin(flush);
    for (int64_t b = 0; b < n; b += FD_BLOCK) {
        int64_t k = n - b < FD_BLOCK ? n - b : FD_BLOCK;
        q8_store_block(&fp, &m, x + b, k, codes + b, scales + b / FD_BLOCK);
    }
    fd_flush_end(flush, csr);
    fd_flush_leave();
    return FD_OK;
}

int fd_q8_dequantize(int64_t n, const uint8_t *codes, const float *scales, int code, float *x)
{
    FD_CHECK(q8_args(n, x, codes, scales, code));
    q8map m;
    q8map_init(&m, code);
    mixed_paths fp = pick_paths();
    const int flush = fd_flush_enter();
    const unsigned csr = fd_flush_begin(flush);
    for (int64_t b = 0; b < n; b += FD_BLOCK) {
        int64_t k = n - b < FD_BLOCK ? n - b : FD_BLOCK;
        fp.load(&m, codes + b, scales[b / FD_BLOCK], k, x + b);
    }
    fd_flush_end(flush, csr);
    fd_flush_leave();
    return FD_OK;
}

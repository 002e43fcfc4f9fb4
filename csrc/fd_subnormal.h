/* fd_subnormal.h -- float32 arithmetic on subnormal values without the CPU's microcode assists
 * (AVX2; not part of the public ABI).
 *
 * On the x86 cores measured here (benchmarks/RESULTS.md, "Which float32 operations pay for
 * subnormals"), a float32 multiply, divide, square root or FMA whose input or result is subnormal
 * takes ~100x its normal time (a microcode assist per 8-lane instruction); additions, subtractions
 * and comparisons do not. Adam's moments of a parameter whose gradient has stopped (a dead ReLU unit,
 * an input feature that is always zero) decay geometrically into the subnormal range and stay there,
 * so a late training step can spend most of its update in assists.
 *
 * The helpers below give the IEEE float32 result of one multiply, divide or square root, bit for bit
 * (round to nearest even, or the current MXCSR rounding mode; subnormal inputs and results kept, not
 * flushed), computed in float64 where every such value is a normal number:
 *   - fd_sn_up4: a float32 -> its exact float64 value (subnormals from their integer mantissa, so the
 *     float32 unit never sees them);
 *   - fd_sn_dn4: a float64 -> float32, rounded once: normal results by cvtpd2ps, results below 2^-126
 *     by rounding x * 2^149 to an integer (the subnormal's bit pattern).
 * A float64 product of two float32 values is exact, so mul is rounded once. A float64 quotient or
 * square root is rounded twice (to float64, then to float32), which gives the correctly rounded
 * float32 result because float64 carries more than 2*24+2 bits (Figueroa, "When is double rounding
 * innocuous?", 1995) -- the same holds for the subnormal grid, which is coarser.
 * Whoever calls these must run with FTZ and DAZ clear (fd_sn_ieee_mode): under a flush the plain
 * float32 instructions give the flushed results, and so must the kernel. */
#ifndef FD_SUBNORMAL_H
#define FD_SUBNORMAL_H

#include "fd_internal.h"

#if FD_X86_DISPATCH
#include <immintrin.h>

/* 1 when the calling thread's MXCSR keeps subnormals (FTZ and DAZ both clear) and rounds to
 * nearest (the helpers' tie logic assumes it). */
static inline int fd_sn_ieee_mode(unsigned csr) { return (csr & 0xE040u) == 0u; }

/* FD_SN_FLAGS (fd_internal.h): MXCSR's DE and UE, the flags of the instructions that may have cost
 * an assist. */

/* Which 16 KiB stretches of a kernel's state met subnormals on the last call (a hint, by address:
 * fd_sn_drive runs a stretch whose hint is set by the kernel's checked loop, any other by its plain
 * loop, and sets the hint if MXCSR's flags say the plain loop met a subnormal). Two stretches that
 * share an entry only cost a wrong guess, never a wrong result; entries are relaxed atomic bytes.
 * One table per kernel. */
#define FD_SN_HINT_BITS 14
typedef unsigned char fd_sn_hints[1u << FD_SN_HINT_BITS];

static inline unsigned char *fd_sn_hint(fd_sn_hints tbl, const void *addr)
{
    return &tbl[((uintptr_t)addr >> 14) & ((1u << FD_SN_HINT_BITS) - 1u)];
}
static inline int fd_sn_hint_get(const unsigned char *h) { return __atomic_load_n(h, __ATOMIC_RELAXED); }
static inline void fd_sn_hint_set(unsigned char *h, int on)
{
    if (fd_sn_hint_get(h) != (on != 0)) __atomic_store_n(h, (unsigned char)(on != 0), __ATOMIC_RELAXED);
}

/* One segment [off, off + len) of tensor t of a kernel with a subnormal-aware AVX2 path, in stretches
 * of FD_SN_STRETCH elements counted from the tensor's start (a stretch is the same memory whatever the
 * thread split). stretch(ctx, t, lo, n, checked) runs elements [lo, lo + n): with `checked`, the
 * kernel's checked loop, returning nonzero if a vector had a tiny lane; without, the plain loop. The
 * hint of a stretch is looked up by the address of its first element in column `state`. csr0: the
 * calling thread's MXCSR on entry. MXCSR: the caller's mode and flags are kept; the flags the segment
 * raised are added to them.
 *
 * MXCSR is written only when it must be: DE/UE are cleared before a plain stretch when they may be set
 * (the caller's, or raised by a checked stretch's float32 instructions on tiny normal values, or by
 * the plain stretch before), so that a stretch's reading is its own; the flags seen at a clear are
 * kept in `met` and put back at the end. On clean data that is no write at all and one read per
 * stretch: a table of many small tensors pays ~1 ns per segment, not two MXCSR writes. */
#define FD_SN_STRETCH 4096
typedef int (*fd_sn_stretch_fn)(const void *ctx, int64_t t, int64_t lo, int64_t n, int checked);

/* A segment shorter than this reads no MXCSR flag: reading them waits for every float instruction
 * before it to finish, so one read per segment serialised the work of consecutive small tensors
 * (10,000 tensors of 8 elements, Adam: 0.40 ms a step against 0.21-0.27 ms without the route). The
 * kernels' segment functions (FD_SN_SEGMENT) run a short segment's plain loop directly unless
 * fd_sn_short_hinted (another segment set the hint of its stretch); then fd_sn_drive runs it checked. */
#define FD_SN_MIN_SEGMENT 512

static inline int fd_sn_short_hinted(unsigned char *tbl, const float *state, int64_t off,
                                     int64_t len)
{
    return off / FD_SN_STRETCH == (off + len - 1) / FD_SN_STRETCH &&
           fd_sn_hint_get(fd_sn_hint(tbl, state + off / FD_SN_STRETCH * FD_SN_STRETCH));
}

FD_TARGET_AVX2 static inline void fd_sn_drive(unsigned char *tbl, const float *state, int64_t off,
                                              int64_t len, fd_sn_stretch_fn stretch,
                                              const void *ctx, int64_t t, const unsigned csr0)
{
    unsigned met = 0, cur = csr0; /* cur: MXCSR as last read or written, while `known` */
    int known = 1, dirty = (csr0 & FD_SN_FLAGS) != 0; /* dirty: DE/UE may be set in MXCSR now */
    for (int64_t lo = off, end = off + len; lo < end;) {
        const int64_t first = lo / FD_SN_STRETCH * FD_SN_STRETCH;
        const int64_t hi = first + FD_SN_STRETCH < end ? first + FD_SN_STRETCH : end;
        unsigned char *h = fd_sn_hint(tbl, state + first);
        if (fd_sn_hint_get(h)) {
            fd_sn_hint_set(h, stretch(ctx, t, lo, hi - lo, 1));
            dirty = 1;
            known = 0;
        } else {
            if (dirty) {
                const unsigned now = known ? cur : _mm_getcsr();
                met |= now & 0x3fu; /* every flag raised so far, before DE/UE are cleared */
                if (now & FD_SN_FLAGS) _mm_setcsr(now & ~FD_SN_FLAGS);
            }
            stretch(ctx, t, lo, hi - lo, 0);
            cur = _mm_getcsr();
            known = 1;
            dirty = (cur & FD_SN_FLAGS) != 0;
            if (dirty) fd_sn_hint_set(h, 1);
        }
        lo = hi;
    }
    const unsigned now = known ? cur : _mm_getcsr(), want = now | (csr0 & 0x3fu) | met;
    if (want != now) _mm_setcsr(want);
}

/* The AVX2 segment function of a kernel with a subnormal route: a short segment whose stretch is
 * not hinted runs `plain` directly (no MXCSR read), a thread that flushes or rounds otherwise runs
 * `plain` too, and the rest goes to fd_sn_drive. Inlined into the kernel's FD_TARGET_AVX2 segment
 * function, with `plain` its always-inline body. */
#define FD_SN_SEGMENT(tbl, state, plain, stretch, ctx, t, off, len)                          \
    do {                                                                                     \
        if ((len) < FD_SN_MIN_SEGMENT && !fd_sn_short_hinted((tbl), (state), (off), (len))) { \
            plain((ctx), (t), (off), (len)); /* no MXCSR read */                             \
        } else {                                                                             \
            const unsigned fd_sn_csr_ = _mm_getcsr();                                        \
            if (fd_sn_ieee_mode(fd_sn_csr_))                                                 \
                fd_sn_drive((tbl), (state), (off), (len), (stretch), (ctx), (t), fd_sn_csr_); \
            else                                                                             \
                plain((ctx), (t), (off), (len));                                             \
        }                                                                                    \
    } while (0)

/* A lane is "tiny" when 0 < |x| < 2^-120: a subnormal, or a value whose product with a moment
 * coefficient may become one. key(x) = 2*bits(x) - 1 (unsigned: the sign bit drops out, +-0 wraps to
 * the maximum); tiny <=> key < 2*bits(2^-120) - 1. */
#define FD_SN_TINY_KEY 0x06FFFFFFu

FD_TARGET_AVX2 static inline __m256i fd_sn_key8(__m256 x)
{
    const __m256i b = _mm256_castps_si256(x);
    return _mm256_sub_epi32(_mm256_add_epi32(b, b), _mm256_set1_epi32(1));
}

/* nonzero when some lane of the accumulated minimum key is tiny */
FD_TARGET_AVX2 static inline int fd_sn_any(__m256i minkey)
{
    const __m256i lim = _mm256_set1_epi32((int)FD_SN_TINY_KEY);
    /* min(minkey, lim) == minkey <=> minkey <= lim (unsigned) */
    const __m256i le = _mm256_cmpeq_epi32(_mm256_min_epu32(minkey, lim), minkey);
    return _mm256_movemask_ps(_mm256_castsi256_ps(le));
}

FD_TARGET_AVX2 static inline int fd_sn_tiny8(__m256 x) { return fd_sn_any(fd_sn_key8(x)); }

/* the exact float64 values of four float32 lanes */
FD_TARGET_AVX2 static inline __m256d fd_sn_up4(__m128 x)
{
    const __m128i b = _mm_castps_si128(x);
    const __m128i mantmask = _mm_set1_epi32(0x007fffff);
    const __m128i e0 = _mm_cmpeq_epi32(_mm_and_si128(b, _mm_set1_epi32(0x7f800000)),
                                       _mm_setzero_si128());           /* zero or subnormal */
    const __m128i mant = _mm_and_si128(_mm_and_si128(b, mantmask), e0); /* subnormals' mantissas */
    /* the subnormal lanes as signed zeros for the converter; the others as they are */
    const __m256d big = _mm256_cvtps_pd(_mm_andnot_ps(_mm_castsi128_ps(mant), x));
    /* |subnormal| = mantissa * 2^-149 (exact), +0 in the other lanes */
    const __m256d sub = _mm256_mul_pd(_mm256_cvtepi32_pd(mant), _mm256_set1_pd(0x1p-149));
    return _mm256_or_pd(big, sub); /* in a subnormal lane, big's signed zero gives the sign */
}

/* four float64 lanes rounded to float32 (the MXCSR rounding mode), subnormal results included */
FD_TARGET_AVX2 static inline __m128 fd_sn_dn4(__m256d x)
{
    const __m256d sgn = _mm256_set1_pd(-0.0), zero = _mm256_setzero_pd();
    const __m256d ax = _mm256_andnot_pd(sgn, x);
    const __m256d small = _mm256_and_pd(_mm256_cmp_pd(ax, _mm256_set1_pd(0x1p-126), _CMP_LT_OQ),
                                        _mm256_cmp_pd(ax, zero, _CMP_GT_OQ));
    /* normal, zero, infinite and NaN lanes: the converter (small lanes as +0) */
    const __m128 big = _mm256_cvtpd_ps(_mm256_blendv_pd(x, zero, small));
    /* small lanes: round x * 2^149 to an integer k in [0, 2^23]; k is the result's magnitude bits
     * (2^23 being the smallest normal); other lanes 0 */
    const __m128i k = _mm256_cvtpd_epi32(
        _mm256_blendv_pd(zero, _mm256_mul_pd(x, _mm256_set1_pd(0x1p149)), small));
    const __m128 sign = _mm256_cvtpd_ps(_mm256_and_pd(x, sgn)); /* +-0 */
    const __m128 subn = _mm_or_ps(_mm_castsi128_ps(_mm_abs_epi32(k)), sign);
    return _mm_or_ps(big, subn); /* big is +0 in the small lanes, subn +-0 (x's sign) elsewhere */
}

typedef struct {
    __m256d lo, hi;
} fd_sn_d8;

FD_TARGET_AVX2 static inline fd_sn_d8 fd_sn_up8(__m256 x)
{
    fd_sn_d8 r;
    r.lo = fd_sn_up4(_mm256_castps256_ps128(x));
    r.hi = fd_sn_up4(_mm256_extractf128_ps(x, 1));
    return r;
}

FD_TARGET_AVX2 static inline __m256 fd_sn_dn8(__m256d lo, __m256d hi)
{
    return _mm256_set_m128(fd_sn_dn4(hi), fd_sn_dn4(lo));
}

/* IEEE float32 a * c, c a float32 value given as its exact float64 */
FD_TARGET_AVX2 static inline __m256 fd_sn_mulc(__m256 a, __m256d c)
{
    const fd_sn_d8 x = fd_sn_up8(a);
    return fd_sn_dn8(_mm256_mul_pd(x.lo, c), _mm256_mul_pd(x.hi, c));
}

/* IEEE float32 a * b */
FD_TARGET_AVX2 static inline __m256 fd_sn_mul(__m256 a, __m256 b)
{
    const fd_sn_d8 x = fd_sn_up8(a), y = fd_sn_up8(b);
    return fd_sn_dn8(_mm256_mul_pd(x.lo, y.lo), _mm256_mul_pd(x.hi, y.hi));
}

/* IEEE float32 a / b */
FD_TARGET_AVX2 static inline __m256 fd_sn_div(__m256 a, __m256 b)
{
    const fd_sn_d8 x = fd_sn_up8(a), y = fd_sn_up8(b);
    return fd_sn_dn8(_mm256_div_pd(x.lo, y.lo), _mm256_div_pd(x.hi, y.hi));
}

/* IEEE float32 sqrt(a) */
FD_TARGET_AVX2 static inline __m256 fd_sn_sqrt(__m256 a)
{
    const fd_sn_d8 x = fd_sn_up8(a);
    return fd_sn_dn8(_mm256_sqrt_pd(x.lo), _mm256_sqrt_pd(x.hi));
}

/* IEEE float32 x * c in the lanes where x is subnormal (others: garbage), for a float32 c in [0, 1)
 * with c == 0 or c >= 2^-60: the product is then subnormal or the smallest normal, i.e. the mantissa k
 * of x times c rounded to an integer, to nearest even. In float32: P = k*c rounded, E = k*c - P exactly
 * (FMA), R = P rounded to an integer; R is the answer unless P is a half-integer that the rounding of
 * k*c made (E != 0), then the exact product lies on E's side. Requires round-to-nearest (MXCSR). */
FD_TARGET_AVX2 static inline __m256 fd_sn_submul(__m256 x, __m256 c)
{
    const __m256i b = _mm256_castps_si256(x);
    const __m256 k = _mm256_cvtepi32_ps(_mm256_and_si256(b, _mm256_set1_epi32(0x007fffff)));
    const __m256 P = _mm256_mul_ps(k, c);
    const __m256 E = _mm256_fmsub_ps(k, c, P);
    const __m256 R = _mm256_round_ps(P, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 D = _mm256_sub_ps(P, R); /* exact, in [-0.5, 0.5] */
    const __m256 sgn = _mm256_set1_ps(-0.0f), zero = _mm256_setzero_ps();
    const __m256 tie = _mm256_cmp_ps(_mm256_andnot_ps(sgn, D), _mm256_set1_ps(0.5f), _CMP_EQ_OQ);
    /* D and E of one sign, E != 0 */
    const __m256 same = _mm256_andnot_ps(_mm256_cmp_ps(E, zero, _CMP_EQ_OQ),
                                         _mm256_castsi256_ps(_mm256_cmpgt_epi32(
                                             _mm256_setzero_si256(),
                                             _mm256_castps_si256(_mm256_xor_ps(_mm256_xor_ps(D, E),
                                                                               sgn)))));
    const __m256 r = _mm256_add_ps(R, _mm256_and_ps(_mm256_and_ps(tie, same), _mm256_add_ps(D, D)));
    const __m256i mag = _mm256_cvtps_epi32(r); /* an integer in [0, 2^23]: the result's bits */
    return _mm256_castsi256_ps(
        _mm256_or_si256(mag, _mm256_and_si256(b, _mm256_set1_epi32((int)0x80000000u))));
}

/* lanes of x that are subnormal (exponent field 0, nonzero) */
FD_TARGET_AVX2 static inline __m256 fd_sn_subnormal_lanes(__m256 x)
{
    const __m256i b = _mm256_castps_si256(x), z = _mm256_setzero_si256();
    const __m256i ex0 = _mm256_cmpeq_epi32(_mm256_and_si256(b, _mm256_set1_epi32(0x7f800000)), z);
    const __m256i zero = _mm256_cmpeq_epi32(_mm256_and_si256(b, _mm256_set1_epi32(0x7fffffff)), z);
    return _mm256_castsi256_ps(_mm256_andnot_si256(zero, ex0));
}

/* IEEE float32 x * c for a float32 c in [0, 1) with c == 0 or c >= 2^-60: the subnormal lanes of x
 * by fd_sn_submul, the others (as +0 where subnormal, so no assist) by the float32 multiply */
FD_TARGET_AVX2 static inline __m256 fd_sn_mul_small(__m256 x, __m256 c)
{
    const __m256 sub = fd_sn_subnormal_lanes(x);
    return _mm256_blendv_ps(_mm256_mul_ps(_mm256_andnot_ps(sub, x), c), fd_sn_submul(x, c), sub);
}

/* lanes of x that are tiny (fd_sn_key8) */
FD_TARGET_AVX2 static inline __m256 fd_sn_tiny_lanes(__m256 x)
{
    const __m256i key = fd_sn_key8(x), lim = _mm256_set1_epi32((int)FD_SN_TINY_KEY);
    return _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_min_epu32(key, lim), key));
}

/* Adam's moments of one vector, in the plain loops' order: m = m * beta1 + (1 - beta1) * g and
 * v = v * beta2 + ((1 - beta2) * g) * g, each product that may see a subnormal (mt, vt, gt: m, v or g
 * has a tiny lane) by the float64 route; k: beta1, 1 - beta1, beta2, 1 - beta2 as float64. Shared by
 * the Adam, NAdam and RAdam routes. */
typedef struct {
    float b1, c1, b2, c2; /* the float32 coefficients */
    __m256d kb1, kc1, kb2, kc2; /* the same, as float64 (fd_sn_const) */
} fd_sn_moment_k;

FD_TARGET_AVX2 static inline void fd_sn_moments(__m256 mm, __m256 vv, __m256 gi, int mt, int vt,
                                                int gt, const fd_sn_moment_k *k, __m256 *mi,
                                                __m256 *vi)
{
    const __m256 mb = mt ? fd_sn_mulc(mm, k->kb1) : _mm256_mul_ps(mm, _mm256_set1_ps(k->b1));
    const __m256 cg = gt ? fd_sn_mulc(gi, k->kc1) : _mm256_mul_ps(_mm256_set1_ps(k->c1), gi);
    *mi = _mm256_add_ps(mb, cg);
    const __m256 vb = vt ? fd_sn_mulc(vv, k->kb2) : _mm256_mul_ps(vv, _mm256_set1_ps(k->b2));
    const __m256 t = gt ? fd_sn_mulc(gi, k->kc2) : _mm256_mul_ps(_mm256_set1_ps(k->c2), gi);
    *vi = _mm256_add_ps(vb, gt ? fd_sn_mul(t, gi) : _mm256_mul_ps(t, gi));
}

/* The same for a stopped unit's vector (the quick routes: only m has tiny lanes, g and v have
 * none): the subnormal lanes' m * beta1 exactly by fd_sn_submul, the rest by float32 instructions
 * (needs beta1 == 0 or beta1 >= 2^-60). */
FD_TARGET_AVX2 static inline void fd_sn_moments_quick(__m256 mm, __m256 vv, __m256 gi,
                                                      const fd_sn_moment_k *k, __m256 *mi,
                                                      __m256 *vi)
{
    const __m256 mb = fd_sn_mul_small(mm, _mm256_set1_ps(k->b1));
    *mi = _mm256_add_ps(mb, _mm256_mul_ps(_mm256_set1_ps(k->c1), gi));
    const __m256 t = _mm256_mul_ps(_mm256_set1_ps(k->c2), gi);
    *vi = _mm256_add_ps(_mm256_mul_ps(vv, _mm256_set1_ps(k->b2)), _mm256_mul_ps(t, gi));
}

/* The lanes (a movemask) where bound < |p| * d, the product in float64: exact, so neither rounding
 * nor a flag the plain loop would not raise (a float32 product raised IE for p = 0 and d = inf, OE
 * past FLT_MAX, UE below FLT_MIN); a lane with a zero factor counts as 0 * 0 (0 * inf would raise
 * invalid; such a lane fails the test either way). The widening is the hardware's (exact; it may
 * raise DE on a subnormal factor, a flag the routes do not promise). p, d: float32 lanes; bound: a
 * positive float. */
FD_TARGET_AVX2 static inline int fd_sn_bound_lt(float bound, __m256 p, __m256 d)
{
    const __m256 zero = _mm256_setzero_ps();
    const __m256 ap = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), p);
    const __m256 z = _mm256_or_ps(_mm256_cmp_ps(ap, zero, _CMP_EQ_OQ),
                                  _mm256_cmp_ps(d, zero, _CMP_EQ_OQ));
    const __m256 pz = _mm256_andnot_ps(z, ap), dz = _mm256_andnot_ps(z, d);
    const __m256d b = _mm256_set1_pd((double)bound);
    const __m256d lo = _mm256_mul_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(pz)),
                                     _mm256_cvtps_pd(_mm256_castps256_ps128(dz)));
    const __m256d hi = _mm256_mul_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(pz, 1)),
                                     _mm256_cvtps_pd(_mm256_extractf128_ps(dz, 1)));
    return _mm256_movemask_pd(_mm256_cmp_pd(b, lo, _CMP_LT_OQ)) |
           (_mm256_movemask_pd(_mm256_cmp_pd(b, hi, _CMP_LT_OQ)) << 4);
}

/* The quick routes' bound for a step of size `step` (*bound = step * 2^-90, rounded to float) and
 * whether they may run: the decay coefficient `coef` (beta1, momentum) is 0 or >= 2^-60
 * (fd_sn_submul's domain) and the bound is a normal float not above 2^100. */
static inline int fd_sn_quick_bound(float coef, float step, float *bound)
{
    *bound = (float)((double)step * 0x1p-90);
    return (coef == 0.0f || coef >= 0x1p-60f) && *bound >= 0x1p-126f && *bound <= 0x1p100f;
}

/* the exact float64 value of a float32 scalar (subnormal or not), broadcast */
FD_TARGET_AVX2 static inline __m256d fd_sn_const(float c)
{
    return _mm256_broadcastsd_pd(_mm256_castpd256_pd128(fd_sn_up4(_mm_set1_ps(c))));
}

FD_TARGET_AVX2 static inline void fd_sn_moment_k_fill(fd_sn_moment_k *k, float b1, float c1,
                                                      float b2, float c2)
{
    k->b1 = b1;
    k->c1 = c1;
    k->b2 = b2;
    k->c2 = c2;
    k->kb1 = fd_sn_const(b1);
    k->kc1 = fd_sn_const(c1);
    k->kb2 = fd_sn_const(b2);
    k->kc2 = fd_sn_const(c2);
}

#endif /* FD_X86_DISPATCH */
#endif /* FD_SUBNORMAL_H */

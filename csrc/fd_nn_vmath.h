/* fd_nn_vmath.h -- float32 exp / tanh / erf for the dense-layer kernels (fd_activation.c, fd_loss.c).
 *
 * Branch-free (selects instead of branches, no libm calls), so that the compiler vectorises the
 * loops that call them: 8 lanes per instruction on the AVX2+FMA path, where libm's scalar expf /
 * tanhf / erff cost 5-20 ns per element. Accuracy against the exact functions (measured over
 * [-10, 10] in tests/test_c_nn.py and csrc/tests/test_nn_act_loss.c):
 *   fd_vexpf   Cephes expf: Cody-Waite reduction, degree-6 polynomial, 2^n applied in two halves so
 *              that subnormal results come out right; <= 2 ulp. +inf above 88.72, 0 below -104, NaN in
 *              NaN out.
 *   fd_vtanhf  Cephes tanhf: odd polynomial for |x| < 0.625, else 1 - 2/(exp(2|x|) + 1); <= 3 ulp.
 *   fd_verff   rational minimax x P(x^2) / Q(x^2) on [-4, 4] (Eigen's / XLA's float erf); absolute
 *              and relative error <= 1.3e-7 (about 2 ulp); +-1 beyond |x| = 4.
 * fd_vexpf8 / fd_vtanhf8 / fd_verff8 are the same algorithms on 8 lanes with AVX2+FMA intrinsics
 * (the compiler will not if-convert the selects of the scalar versions while -ftrapping-math, GCC's
 * default, is on); the kernels run every element, tails included (padded), through the same code
 * so that results do not depend on where a thread's range starts.
 * float64 kernels use libm (exp, tanh, erf). Include after fd_internal.h.
 */
#ifndef FD_NN_VMATH_H
#define FD_NN_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float fd_f32_from_bits(int32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static inline float fd_vexpf(float x)
{
    /* clamp (NaN goes to -104 here; restored at the end) so that n stays in int range */
    float xc = x >= -104.0f ? x : -104.0f;
    xc = xc <= 89.0f ? xc : 89.0f;
    /* n = round(x / ln 2) by the 1.5 * 2^23 trick (exact in float, no rounding call needed) */
    const float magic = 12582912.0f;
    float t = xc * 1.44269504088896341f + magic;
    float nf = t - magic;
    int32_t n = (int32_t)nf;
    float r = xc - nf * 0.693359375f;
    r = r - nf * -2.12194440e-4f;
    float r2 = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r2 + r + 1.0f;
    /* 2^n = 2^n1 * 2^n2 with both halves normal for n in [-150, 130] */
    int32_t n1 = n >> 1, n2 = n - n1;
    float y = p * fd_f32_from_bits((n1 + 127) << 23) * fd_f32_from_bits((n2 + 127) << 23);
    y = x > 88.72283935546875f ? INFINITY : y;
    return x != x ? x : y;
}

static inline float fd_vtanhf(float x)
{
    float ax = fabsf(x);
    float s = x * x;
    float small = -5.70498872745e-3f;
    small = small * s + 2.06390887954e-2f;
    small = small * s - 5.37397155531e-2f;
    small = small * s + 1.33314422036e-1f;
    small = small * s - 3.33332819422e-1f;
    small = small * s * x + x;
    float e = fd_vexpf(ax + ax);
    float big = 1.0f - 2.0f / (e + 1.0f);
    big = copysignf(big, x);
    return ax < 0.625f ? small : big;
}

static inline float fd_verff(float x)
{
    float xc = x < -4.0f ? -4.0f : x;
    xc = xc > 4.0f ? 4.0f : xc;
    float x2 = xc * xc;
    float p = -2.72614225801306e-10f;
    p = p * x2 + 2.77068142495902e-08f;
    p = p * x2 - 2.10102402082508e-06f;
    p = p * x2 - 5.69250639462346e-05f;
    p = p * x2 - 7.34990630326855e-04f;
    p = p * x2 - 2.95459980854025e-03f;
    p = p * x2 - 1.60960333262415e-02f;
    p = p * xc;
    float q = -1.45660718464996e-05f;
    q = q * x2 - 2.13374055278905e-04f;
    q = q * x2 - 1.68282697438203e-03f;
    q = q * x2 - 7.37332916720468e-03f;
    q = q * x2 - 1.42647390514189e-02f;
    return p / q;
}

#if FD_X86_DISPATCH
#include <immintrin.h>

FD_TARGET_AVX2 static inline __m256 fd_vexpf8(__m256 x)
{
    /* max/min return their second operand for NaN: the clamped value is finite; NaN restored below */
    __m256 xc = _mm256_max_ps(x, _mm256_set1_ps(-104.0f));
    xc = _mm256_min_ps(xc, _mm256_set1_ps(89.0f));
    __m256 nf = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(nf, _mm256_set1_ps(0.693359375f), xc);
    r = _mm256_fnmadd_ps(nf, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 r2 = _mm256_mul_ps(r, r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0f));
    __m256i n = _mm256_cvtps_epi32(nf);
    __m256i n1 = _mm256_srai_epi32(n, 1), n2 = _mm256_sub_epi32(n, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
    y = _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY),
                         _mm256_cmp_ps(x, _mm256_set1_ps(88.72283935546875f), _CMP_GT_OQ));
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

FD_TARGET_AVX2 static inline __m256 fd_vtanhf8(__m256 x)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 ax = _mm256_andnot_ps(sign, x);
    __m256 s = _mm256_mul_ps(x, x);
    __m256 q = _mm256_set1_ps(-5.70498872745e-3f);
    q = _mm256_fmadd_ps(q, s, _mm256_set1_ps(2.06390887954e-2f));
    q = _mm256_fmadd_ps(q, s, _mm256_set1_ps(-5.37397155531e-2f));
    q = _mm256_fmadd_ps(q, s, _mm256_set1_ps(1.33314422036e-1f));
    q = _mm256_fmadd_ps(q, s, _mm256_set1_ps(-3.33332819422e-1f));
    __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(q, s), x, x);
    __m256 e = fd_vexpf8(_mm256_add_ps(ax, ax));
    __m256 big = _mm256_sub_ps(_mm256_set1_ps(1.0f),
                               _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, _mm256_set1_ps(1.0f))));
    big = _mm256_or_ps(big, _mm256_and_ps(x, sign));
    return _mm256_blendv_ps(big, small, _mm256_cmp_ps(ax, _mm256_set1_ps(0.625f), _CMP_LT_OQ));
}

FD_TARGET_AVX2 static inline __m256 fd_verff8(__m256 x)
{
    __m256 xc = _mm256_max_ps(x, _mm256_set1_ps(-4.0f));
    xc = _mm256_min_ps(xc, _mm256_set1_ps(4.0f));
    __m256 x2 = _mm256_mul_ps(xc, xc);
    __m256 p = _mm256_set1_ps(-2.72614225801306e-10f);
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(2.77068142495902e-08f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-2.10102402082508e-06f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-5.69250639462346e-05f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-7.34990630326855e-04f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-2.95459980854025e-03f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-1.60960333262415e-02f));
    p = _mm256_mul_ps(p, xc);
    __m256 q = _mm256_set1_ps(-1.45660718464996e-05f);
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(-2.13374055278905e-04f));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(-1.68282697438203e-03f));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(-7.37332916720468e-03f));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(-1.42647390514189e-02f));
    __m256 y = _mm256_div_ps(p, q);
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}
#endif /* FD_X86_DISPATCH */

#endif /* FD_NN_VMATH_H */

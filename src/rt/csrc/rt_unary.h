/* Scalar math the compiler can vectorise (no libm calls, no branches), and the
 * unary op family as one X-macro list: X(name, expression in x). */
#ifndef RT_UNARY_H
#define RT_UNARY_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Forced inline: a plain inline function is not inlined into the per-ISA clones
 * (target mismatch), and a call inside a loop stops vectorisation. */
#define RT_INLINE static inline __attribute__((always_inline))

/* exp(x) = 2^n * e^r, |r| <= ln2/2 (Cephes polynomial, ~1 ulp). Branch-free so loops
 * vectorise. Results below 2^-125 flush to 0 (so -inf gives 0); 2^n is built as
 * 2^(n-1) * 2 so that n = 128 (x up to ln FLT_MAX) still has an exponent, and larger x
 * overflow to inf. NaN propagates through the polynomial. */
RT_INLINE float rt_expf(float x)
{
    float xc = x > 89.f ? 89.f : (x < -86.9f ? -86.9f : x);
    float n = (xc * 1.44269504088896341f + 12582912.f) - 12582912.f; /* round to nearest */
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.f;
    int32_t bits = ((int32_t)n + 126) << 23; /* n in [-125, 128] */
    float scale;
    memcpy(&scale, &bits, 4);
    float y = p * scale * 2.f;
    return x < -86.9f ? 0.f : y;
}

/* tanh via exp; an odd Taylor polynomial near 0 where 1 - 2/(e+1) cancels. */
RT_INLINE float rt_tanhf(float x)
{
    float x2 = x * x;
    float small = x * (1.f + x2 * (-1.f / 3.f + x2 * (2.f / 15.f + x2 * (-17.f / 315.f))));
    float big = 1.f - 2.f / (rt_expf(2.f * x) + 1.f);
    return fabsf(x) < 0.125f ? small : big;
}

/* erf by Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7), the same fit torch's
 * vectorised CPU erf uses; half the terms of an erfc-grade fit, which GELU does not need. */
RT_INLINE float rt_erff(float x)
{
    float z = fabsf(x);
    float t = 1.f / (1.f + 0.3275911f * z);
    float p = 1.061405429f;
    p = p * t - 1.453152027f;
    p = p * t + 1.421413741f;
    p = p * t - 0.284496736f;
    p = p * t + 0.254829592f;
    float r = 1.f - p * t * rt_expf(-z * z);
    return x < 0.f ? -r : r;
}

RT_INLINE float rt_gelu_tanhf(float x)
{
    return 0.5f * x * (1.f + rt_tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}

RT_INLINE float rt_gelu_erff(float x) { return 0.5f * x * (1.f + rt_erff(x * 0.7071067811865476f)); }

/* relu keeps NaN (x < 0 is false for NaN), as torch does. */
#define RT_UNARY_LIST(X)                      \
    X(relu, x < 0.f ? 0.f : x)                \
    X(gelu_tanh, rt_gelu_tanhf(x))            \
    X(gelu_erf, rt_gelu_erff(x))              \
    X(tanh, rt_tanhf(x))                      \
    X(sigmoid, 1.f / (1.f + rt_expf(-x)))     \
    X(neg, -x)                                \
    X(exp, rt_expf(x))                        \
    X(sqrt, sqrtf(x))                         \
    X(rsqrt, 1.f / sqrtf(x))

#endif

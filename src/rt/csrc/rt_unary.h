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

/* exp(x) = 2^n * e^r, |r| <= ln2/2 (Cephes polynomial, ~1 ulp). 2^n is applied as two
 * factors so the whole range down to denormals is exact; the clamp sends -inf to 0 and
 * +inf to inf, NaN propagates through the polynomial. */
RT_INLINE float rt_expf(float x)
{
    float xc = x > 89.f ? 89.f : (x < -104.f ? -104.f : x);
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
    int32_t ni = (int32_t)n, n1 = ni / 2, n2 = ni - n1;
    int32_t b1 = (n1 + 127) << 23, b2 = (n2 + 127) << 23;
    float s1, s2;
    memcpy(&s1, &b1, 4);
    memcpy(&s2, &b2, 4);
    return p * s1 * s2;
}

/* tanh via exp; an odd Taylor polynomial near 0 where 1 - 2/(e+1) cancels. */
RT_INLINE float rt_tanhf(float x)
{
    float x2 = x * x;
    float small = x * (1.f + x2 * (-1.f / 3.f + x2 * (2.f / 15.f + x2 * (-17.f / 315.f))));
    float big = 1.f - 2.f / (rt_expf(2.f * x) + 1.f);
    return fabsf(x) < 0.125f ? small : big;
}

/* erf from the Numerical Recipes erfc fit (relative error < 1.2e-7). */
RT_INLINE float rt_erff(float x)
{
    float z = fabsf(x);
    float t = 1.f / (1.f + 0.5f * z);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    p = p * t - 1.26551223f;
    float erfc = t * rt_expf(-z * z + p);
    float r = 1.f - erfc;
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

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
/* erfc(|x|) by that fit: exp(-x^2) times its polynomial (no cancellation for large |x|). */
RT_INLINE float rt_erfc_abs(float x)
{
    float z = fabsf(x);
    float t = 1.f / (1.f + 0.3275911f * z);
    float p = 1.061405429f;
    p = p * t - 1.453152027f;
    p = p * t + 1.421413741f;
    p = p * t - 0.284496736f;
    p = p * t + 0.254829592f;
    return p * t * rt_expf(-z * z);
}

RT_INLINE float rt_erff(float x)
{
    float r = 1.f - rt_erfc_abs(x);
    return x < 0.f ? -r : r;
}

RT_INLINE float rt_gelu_tanhf(float x)
{
    return 0.5f * x * (1.f + rt_tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}

RT_INLINE float rt_gelu_erff(float x) { return 0.5f * x * (1.f + rt_erff(x * 0.7071067811865476f)); }

/* log(x) for x > 0: x = m 2^e with m in [sqrt(1/2), sqrt(2)), then the Cephes polynomial in
 * m - 1 (~1 ulp); subnormals are scaled up first. 0 gives -inf, x < 0 NaN, inf inf, NaN NaN. */
RT_INLINE float rt_logf(float x)
{
    int sub = x < 1.17549435e-38f;
    float xs = sub ? x * 8388608.f : x;
    int32_t ix;
    memcpy(&ix, &xs, 4);
    float e = (float)(((ix >> 23) & 0xff) - 126) - (sub ? 23.f : 0.f);
    ix = (ix & 0x007fffff) | 0x3f000000;
    float m;
    memcpy(&m, &ix, 4); /* m in [0.5, 1) */
    int lo = m < 0.70710678f;
    e = lo ? e - 1.f : e;
    m = lo ? m + m - 1.f : m - 1.f;
    float z = m * m;
    float p = 7.0376836292e-2f;
    p = p * m - 1.1514610310e-1f;
    p = p * m + 1.1676998740e-1f;
    p = p * m - 1.2420140846e-1f;
    p = p * m + 1.4249322787e-1f;
    p = p * m - 1.6668057665e-1f;
    p = p * m + 2.0000714765e-1f;
    p = p * m - 2.4999993993e-1f;
    p = p * m + 3.3333331174e-1f;
    float y = p * m * z - 2.12194440e-4f * e - 0.5f * z;
    float r = m + y + 0.693359375f * e;
    r = x == 0.f ? -INFINITY : r;
    r = x < 0.f ? NAN : r;
    r = x == INFINITY ? INFINITY : r;
    return x != x ? x : r;
}

/* sin and cos: x = q pi/2 + z with |z| <= pi/4 (Cody-Waite in three parts, exact for |x| up to
 * ~8e3, degrading slowly above), Cephes polynomials for sin z and cos z, chosen and signed by q mod 4.
 * Float arithmetic throughout, so any x (inf, NaN give NaN) and the loops vectorise. */
RT_INLINE void rt_sincos_parts(float x, float *s, float *c, float *q)
{
    float ax = fabsf(x);
    float j = truncf(ax * 1.27323954473516f);
    j += j - 2.f * truncf(j * 0.5f); /* up to even: octants 2k-1, 2k reduce around k pi/2 */
    float z = ((ax - j * 0.78515625f) - j * 2.4187564849853515625e-4f) - j * 3.77489497744594108e-8f;
    float zz = z * z;
    *s = ((-1.9515295891e-4f * zz + 8.3321608736e-3f) * zz - 1.6666654611e-1f) * zz * z + z;
    *c = ((2.443315711809948e-5f * zz - 1.388731625493765e-3f) * zz + 4.166664568298827e-2f) * zz * zz -
         0.5f * zz + 1.f;
    float k = j * 0.5f;
    *q = k - 4.f * truncf(k * 0.25f); /* quadrant, 0..3 */
}

RT_INLINE float rt_sinf(float x)
{
    float s, c, q;
    rt_sincos_parts(x, &s, &c, &q);
    float r = (q == 1.f || q == 3.f) ? c : s;
    r = q >= 2.f ? -r : r;
    return x < 0.f ? -r : r;
}

RT_INLINE float rt_cosf(float x)
{
    float s, c, q;
    rt_sincos_parts(x, &s, &c, &q);
    float r = (q == 1.f || q == 3.f) ? s : c;
    return (q == 1.f || q == 2.f) ? -r : r;
}

/* log(1 + x) and exp(x) - 1 without cancellation near 0 (Goldberg's / Kahan's corrections). */
RT_INLINE float rt_log1pf(float x)
{
    float u = 1.f + x, d = u - 1.f;
    float r = rt_logf(u) * (x / (d == 0.f ? 1.f : d));
    r = d == 0.f ? x : r;
    return x == INFINITY ? x : r;
}

RT_INLINE float rt_expm1f(float x)
{
    float u = rt_expf(x), l = rt_logf(u);
    float r = (u - 1.f) * x / (l == 0.f ? 1.f : l);
    r = u == 1.f ? x : r;
    r = x > 80.f ? u : r;
    return x < -17.f ? -1.f : r;
}

/* x ** p: exp(p log|x|), signed for odd integer p, NaN for x < 0 and non-integer p; x ** 0 = 1. */
RT_INLINE float rt_powf(float x, float p)
{
    float r = rt_expf(p * rt_logf(fabsf(x)));
    int integer = p == truncf(p);
    int odd = integer && (p - 2.f * truncf(p * 0.5f)) != 0.f;
    r = x < 0.f ? (integer ? (odd ? -r : r) : NAN) : r;
    r = p == 0.f ? 1.f : r;
    return x != x && p != 0.f ? x : r;
}

/* x limited to [lo, hi]; NaN stays NaN (fminf/fmaxf would drop it). */
RT_INLINE float rt_clampf(float x, float lo, float hi) { return x < lo ? lo : (x > hi ? hi : x); }

RT_INLINE float rt_softplusf(float x, float beta, float threshold)
{
    return x * beta > threshold ? x : rt_log1pf(rt_expf(x * beta)) / beta;
}

/* atan(x): x reduced to [0, tan(pi/12)] through 1/x and the tan(pi/6) shift, then an odd polynomial
 * (Cephes atanf, ~1 ulp); branch-free. */
RT_INLINE float rt_atanf(float x)
{
    float ax = fabsf(x);
    int inv = ax > 1.f;
    float z = inv ? 1.f / ax : ax;
    int shift = z > 0.2679491924311227f;
    float zs = shift ? (z * 1.7320508075688772f - 1.f) / (z + 1.7320508075688772f) : z;
    float zz = zs * zs;
    float p = ((8.05374449538e-2f * zz - 1.38776856032e-1f) * zz + 1.99777106478e-1f) * zz - 3.33329491539e-1f;
    float r = p * zz * zs + zs;
    r = shift ? r + 0.5235987755982988f : r;
    r = inv ? 1.5707963267948966f - r : r;
    r = x != x ? x : r;
    return x < 0.f ? -r : r;
}

RT_INLINE float rt_atan2f(float y, float x)
{
    float r = rt_atanf(y / x);
    r = x < 0.f ? (y < 0.f || (y == 0.f && signbit(y)) ? r - 3.14159265358979f : r + 3.14159265358979f) : r;
    r = x == 0.f ? (y == 0.f ? (signbit(x) ? copysignf(3.14159265358979f, y) : y) : copysignf(1.5707963267948966f, y)) : r;
    r = (x == 0.f && y == 0.f && !signbit(x)) ? y : r;
    int bothinf = fabsf(x) == INFINITY && fabsf(y) == INFINITY;
    r = bothinf ? copysignf(x > 0.f ? 0.7853981633974483f : 2.356194490192345f, y) : r;
    return x != x || y != y ? x + y : r;
}

/* asin / acos through atan of x / sqrt(1 - x^2) (computed as (1-x)(1+x) to keep its precision); NaN
 * outside [-1, 1]. */
RT_INLINE float rt_asinf(float x)
{
    float d = sqrtf((1.f - x) * (1.f + x));
    float r = fabsf(x) == 1.f ? copysignf(1.5707963267948966f, x) : rt_atanf(x / d);
    return fabsf(x) > 1.f ? NAN : r;
}

RT_INLINE float rt_acosf(float x)
{
    /* acos x = 2 atan(sqrt((1 - x) / (1 + x))) */
    float r = 2.f * rt_atanf(sqrtf((1.f - x) / (1.f + x)));
    r = x == -1.f ? 3.14159265358979f : r;
    return fabsf(x) > 1.f ? NAN : r;
}

/* sinh / cosh from exp, with expm1 near 0 where exp(x) - exp(-x) cancels. */
RT_INLINE float rt_sinhf(float x)
{
    float ax = fabsf(x);
    float e = rt_expf(ax * 0.5f);   /* e^(x/2) squared later: no overflow below x = 2 ln FLT_MAX */
    float big = ax > 88.f ? 0.5f * e * e : 0.5f * (e * e - 1.f / (e * e));
    float m = rt_expm1f(ax);
    float small = 0.5f * (m + m / (m + 1.f));
    float r = ax < 1.f ? small : big;
    r = ax == INFINITY ? ax : r;
    return x < 0.f ? -r : r;
}

RT_INLINE float rt_coshf(float x)
{
    float ax = fabsf(x), e = rt_expf(ax * 0.5f);
    float r = ax > 88.f ? 0.5f * e * e : 0.5f * (e * e + 1.f / (e * e));
    return ax == INFINITY ? ax : r;
}

/* asinh x = sign(x) log1p(|x| + x^2 / (1 + sqrt(1 + x^2))); large |x|: log(2|x|). */
RT_INLINE float rt_asinhf(float x)
{
    float ax = fabsf(x);
    float r = ax > 1e18f ? rt_logf(ax) + 0.6931471805599453f
                         : rt_log1pf(ax + ax * ax / (1.f + sqrtf(1.f + ax * ax)));
    r = x != x ? x : r;
    return x < 0.f ? -r : r;
}

RT_INLINE float rt_acoshf(float x)
{
    float t = x - 1.f;
    float r = x > 1e18f ? rt_logf(x) + 0.6931471805599453f : rt_log1pf(t + sqrtf(2.f * t + t * t));
    return x < 1.f ? NAN : r;
}

RT_INLINE float rt_atanhf(float x)
{
    float ax = fabsf(x);
    float r = 0.5f * rt_log1pf(2.f * ax / (1.f - ax));
    r = ax > 1.f ? NAN : r;
    return x < 0.f ? -r : r;
}

/* erfc: 1 - erf for small x; exp(-x^2) times A&S 7.1.26's polynomial (no cancellation) for x > 0.5. */
RT_INLINE float rt_erfcf(float x)
{
    float tail = rt_erfc_abs(x);
    return x < 0.f ? 2.f - tail : tail;
}

/* log|gamma(x)|: Lanczos (g = 7, 9 terms; the sum in double, where its terms cancel) for x >= 0.5,
 * the reflection log(pi / |sin(pi x)|) - lgamma(1 - x) below; inf at the poles (0, -1, ...). */
RT_INLINE float rt_lgamma_pos(float x)
{
    double z = (double)x - 1.0, s = 0.99999999999980993;
    s += 676.5203681218851 / (z + 1.0);
    s += -1259.1392167224028 / (z + 2.0);
    s += 771.32342877765313 / (z + 3.0);
    s += -176.61502916214059 / (z + 4.0);
    s += 12.507343278686905 / (z + 5.0);
    s += -0.13857109526572012 / (z + 6.0);
    s += 9.9843695780195716e-6 / (z + 7.0);
    s += 1.5056327351493116e-7 / (z + 8.0);
    float t = x + 6.5f;
    return 0.9189385332046727f + (x - 0.5f) * rt_logf(t) - t + rt_logf((float)s);
}

RT_INLINE float rt_lgammaf(float x)
{
    float xr = x < 0.5f ? 1.f - x : x;
    float lg = rt_lgamma_pos(xr);
    float d = x - rintf(x); /* |sin(pi x)| = |sin(pi d)|, d in [-1/2, 1/2] exactly */
    float sn = fabsf(rt_sinf(3.14159265358979f * d));
    float refl = 1.1447298858494002f - rt_logf(sn) - lg; /* log(pi) */
    float r = x < 0.5f ? refl : lg;
    r = (x <= 0.f && d == 0.f) || fabsf(x) == INFINITY ? INFINITY : r;
    return x != x ? x : r;
}

RT_INLINE float rt_log_sigmoidf(float x)
{
    /* -log(1 + exp(-x)) = min(x, 0) - log1p(exp(-|x|)) */
    return (x < 0.f ? x : 0.f) - rt_log1pf(rt_expf(-fabsf(x)));
}

/* The unary family, X(name, expression in x and the op's parameters a, b); pow has its own
 * kernel (elementwise.c: a row function chosen by the exponent). NaN stays NaN through every op, as
 * torch has it (comparisons with NaN are false). */
#define RT_UNARY_LIST(X)                                                   \
    X(relu, x < 0.f ? 0.f : x)                                             \
    X(gelu_tanh, rt_gelu_tanhf(x))                                         \
    X(gelu_erf, rt_gelu_erff(x))                                           \
    X(tanh, rt_tanhf(x))                                                   \
    X(sigmoid, 1.f / (1.f + rt_expf(-x)))                                  \
    X(neg, -x)                                                             \
    X(exp, rt_expf(x))                                                     \
    X(sqrt, sqrtf(x))                                                      \
    X(rsqrt, 1.f / sqrtf(x))                                               \
    X(silu, x / (1.f + rt_expf(-x)))                                       \
    X(sin, rt_sinf(x))                                                     \
    X(cos, rt_cosf(x))                                                     \
    X(erf, rt_erff(x))                                                     \
    X(abs, fabsf(x))                                                       \
    X(log, rt_logf(x))                                                     \
    X(log1p, rt_log1pf(x))                                                 \
    X(expm1, rt_expm1f(x))                                                 \
    X(reciprocal, 1.f / x)                                                 \
    X(floor, floorf(x))                                                    \
    X(ceil, ceilf(x))                                                      \
    X(round, rintf(x))                                                     \
    X(trunc, truncf(x))                                                    \
    X(sign, x > 0.f ? 1.f : (x < 0.f ? -1.f : x))                          \
    X(hardswish, x * rt_clampf(x + 3.f, 0.f, 6.f) * (1.f / 6.f))           \
    X(hardsigmoid, rt_clampf(x * (1.f / 6.f) + 0.5f, 0.f, 1.f))            \
    X(mish, x * rt_tanhf(rt_softplusf(x, 1.f, 20.f)))                      \
    X(softplus, rt_softplusf(x, a, b))                                     \
    X(elu, x > 0.f ? x : a * rt_expm1f(x))                                 \
    X(leaky_relu, x > 0.f ? x : a * x)                                     \
    X(clamp, rt_clampf(x, a, b))                                           \
    X(tan, rt_sinf(x) / rt_cosf(x))                                        \
    X(asin, rt_asinf(x))                                                   \
    X(acos, rt_acosf(x))                                                   \
    X(atan, rt_atanf(x))                                                   \
    X(sinh, rt_sinhf(x))                                                   \
    X(cosh, rt_coshf(x))                                                   \
    X(asinh, rt_asinhf(x))                                                 \
    X(acosh, rt_acoshf(x))                                                 \
    X(atanh, rt_atanhf(x))                                                 \
    X(exp2, rt_expf(x * 0.6931471805599453f))                              \
    X(log2, rt_logf(x) * 1.4426950408889634f)                              \
    X(log10, rt_logf(x) * 0.4342944819032518f)                             \
    X(erfc, rt_erfcf(x))                                                   \
    X(log_sigmoid, rt_log_sigmoidf(x))                                     \
    X(frac, x - truncf(x))                                                 \
    X(lgamma, rt_lgammaf(x))

#endif

/* math.h for building an exported EdgeViT model as freestanding WebAssembly (no libc, no imports).
 *
 * The exported C needs exactly sqrtf, truncf, exp2f, INFINITY and NAN. WebAssembly has instructions
 * for the first two, so they are compiler builtins. exp2f has no instruction: it is computed here,
 * inline, so the softmax and GELU loops never call out to JavaScript (importing Math.pow made a
 * prediction 3-4x slower). It stays within one float ulp of glibc's exp2f (test_wasm.py), so
 * probabilities and attention match a native build of the same C within 5e-7.
 */
#ifndef EDGEVIT_WASM_MATH_H
#define EDGEVIT_WASM_MATH_H

#include <stdint.h>

#define INFINITY __builtin_inff()
#define NAN __builtin_nanf("")
#define sqrtf __builtin_sqrtf   /* f32.sqrt */
#define truncf __builtin_truncf /* f32.trunc */

#define EDGEVIT_EXP2F_OVERFLOW 128.0f   /* 2^128 is beyond the largest float */
#define EDGEVIT_EXP2F_UNDERFLOW -151.0f /* 2^-151 rounds to zero, below the smallest subnormal */

/* 2^x = 2^k * 2^r with k = round(x) and |r| <= 0.5. 2^r = e^(r ln 2) is a degree-9 Taylor polynomial
 * in double (truncation error below 1e-11, far under float's 6e-8 ulp), and scaling by 2^k is exact in
 * double, so the result is rounded to float only once. */
static inline float edgevit_exp2f(float x) {
  if (x != x) return x; /* NaN stays NaN */
  if (x >= EDGEVIT_EXP2F_OVERFLOW) return INFINITY;
  if (x < EDGEVIT_EXP2F_UNDERFLOW) return 0.0f;
  double k = __builtin_nearbyint((double)x);
  double t = ((double)x - k) * 0.69314718055994530942; /* r ln 2, |t| <= 0.347 */
  double p = 1.0 + t * (1.0 + t * (1.0 / 2 + t * (1.0 / 6 + t * (1.0 / 24 + t * (1.0 / 120 + t * (1.0 / 720
             + t * (1.0 / 5040 + t * (1.0 / 40320 + t * (1.0 / 362880)))))))));
  union { uint64_t bits; double value; } scale = { (uint64_t)((int64_t)k + 1023) << 52 }; /* 2^k */
  return (float)(p * scale.value);
}
#define exp2f edgevit_exp2f

#endif

// The vector helpers of the vectorised kernels (engine-private): loads and stores, whole and
// partial, broadcasts, horizontal sums and maxima, exp, erf and the activations, on GCC vector
// extensions of JME_WIDTH floats. Included by each simd_*.cpp file only.
//
// Every simd_*.cpp file is compiled twice: once with -mavx2 -mfma (JME_ISA=avx2,
// JME_WIDTH=8) and once with AVX-512 flags (JME_ISA=avx512, JME_WIDTH=16); runtime.cpp picks
// one copy at run time. Those files and the headers they include (this one and spec.h) must
// stay free of the C++ standard library and of any other inline function shared with other
// translation units: the linker keeps one copy of each inline function, and if that copy came
// from the AVX-512 build, an AVX2-only CPU would fault in it. Everything here is therefore in
// an anonymous namespace inside the instruction set's own namespace (internal to each
// translation unit), plain C-style code that becomes zmm code in one build and ymm code in the
// other.

#ifndef JME_NATIVE_SIMD_VEC_H
#define JME_NATIVE_SIMD_VEC_H

#include "spec.h"

#ifndef JME_ISA
#error "compile with -DJME_ISA=avx2 -DJME_WIDTH=8 or -DJME_ISA=avx512 -DJME_WIDTH=16"
#endif

namespace jme_native {
namespace JME_ISA {

namespace {

constexpr int64_t W = JME_WIDTH;  // floats per vector
typedef float vf __attribute__((vector_size(W * 4)));
typedef int32_t vi __attribute__((vector_size(W * 4)));

inline vf load(const float* p) {
  vf v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

inline void store(float* p, vf v) { __builtin_memcpy(p, &v, sizeof v); }

// Every lane x, written out so that the compiler sees one broadcast (from memory, in the
// products' tiles). Not vf{} + x: adding 0 is no identity for -0, so the addition stays, and a
// register broadcast after it, two more floating-point operations per use; nor a loop over
// the lanes, which becomes lane inserts.
inline vf splat(float x) {
#if JME_WIDTH == 8
  return vf{x, x, x, x, x, x, x, x};
#elif JME_WIDTH == 16
  return vf{x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x};
#else
#error "JME_WIDTH must be 8 or 16"
#endif
}

inline vf vmin(vf a, vf b) { return a < b ? a : b; }

inline vf vmax(vf a, vf b) { return a > b ? a : b; }

inline float hsum(vf v) {
  float s = 0.0f;
  for (int i = 0; i < W; ++i) s += v[i];
  return s;
}

inline float hmax(vf v) {
  float m = v[0];
  for (int i = 1; i < W; ++i) m = v[i] > m ? v[i] : m;
  return m;
}

// A partial vector: the first n floats of p, the rest filled with `fill`.
inline vf load_part(const float* p, int64_t n, float fill) {
  vf v = splat(fill);
  for (int64_t i = 0; i < n; ++i) v[i] = p[i];
  return v;
}

inline void store_part(float* p, vf v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) p[i] = v[i];
}

// exp(x) to about 2 ulp (Cephes' expf polynomial after a reduction by n*ln 2); inputs
// below -87.3 give about 1e-38 rather than 0, which callers mask where it matters.
inline vf vexp(vf x) {
  x = vmax(vmin(x, splat(88.37626f)), splat(-87.33654f));
  vf fx = x * 1.44269504088896341f + 0.5f;
  vf n = __builtin_convertvector(__builtin_convertvector(fx, vi), vf);
  n = n > fx ? n - 1.0f : n;  // floor (the conversion truncates towards zero)
  vf r = x - n * 0.693359375f + n * 2.12194440e-4f;
  vf r2 = r * r;
  vf y = 1.9875691500e-4f * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r2 + r + 1.0f;
  vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
  vf scale;
  __builtin_memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

// erf(x) as x * P(x^2) / Q(x^2) on [-4, 4] (the float32 rational approximation of Eigen
// and XLA; |erf(4)| rounds to 1 in float32).
inline vf verf(vf x) {
  x = vmax(vmin(x, splat(4.0f)), splat(-4.0f));
  vf x2 = x * x;
  vf p = -2.72614225801306e-10f * x2 + 2.77068142495902e-08f;
  p = p * x2 - 2.10102402082508e-06f;
  p = p * x2 - 5.69250639462346e-05f;
  p = p * x2 - 7.34990630326855e-04f;
  p = p * x2 - 2.95459980854025e-03f;
  p = p * x2 - 1.60960333262415e-02f;
  vf q = -1.45660718464996e-05f * x2 - 2.13374055278905e-04f;
  q = q * x2 - 1.68282697438203e-03f;
  q = q * x2 - 7.37332916720468e-03f;
  q = q * x2 - 1.42647390514189e-02f;
  return x * p / q;
}

inline vf vgelu(vf v) { return 0.5f * v * (1.0f + verf(v * 0.70710678118654752f)); }

// x * sigmoid(x); vexp's clamping keeps both tails finite (x, and -0 rather than NaN).
inline vf vsilu(vf v) { return v / (1.0f + vexp(-v)); }

// 0.5 x (1 + tanh(u)) with u = sqrt(2 / pi) (x + 0.044715 x^3), written as x * sigmoid(2u).
inline vf vgelu_tanh(vf v) {
  const vf u = 0.79788456080286536f * (v + 0.044715f * v * v * v);
  return v / (1.0f + vexp(-2.0f * u));
}

inline vf activate(vf v, int activation) {
  switch (activation) {
    case kGelu: return vgelu(v);
    case kSilu: return vsilu(v);
    case kGeluTanh: return vgelu_tanh(v);
    default: return v;
  }
}

}  // namespace
}  // namespace JME_ISA
}  // namespace jme_native

#endif  // JME_NATIVE_SIMD_VEC_H

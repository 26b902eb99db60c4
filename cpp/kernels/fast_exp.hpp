// fast_exp.hpp -- exp(x) written out in plain arithmetic.
//
// Exports:
//   exp_clamped(x)   e^x for x <= 0 (x below -700 gives e^-700), relative error < 2e-15
//
// Why not std::exp: a vectorised loop would call libmvec in its body and scalar libm in its
// remainder, two implementations that may differ in the last bit. The remainder length depends
// on the local extent, so chains would depend on the process grid. One formula for both keeps
// every rank count bit for bit identical.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace qftml {

inline double exp_clamped(double x) {
  x = x < -700.0 ? -700.0 : x;
  constexpr double log2e = 1.4426950408889634;
  constexpr double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
  const double n = std::floor(x * log2e + 0.5);
  const double r = (x - n * ln2_hi) - n * ln2_lo;  // |r| <= ln2/2
  // Taylor series of e^r to r^12: truncation < 3e-16 on |r| <= 0.347.
  double p = 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const int64_t e = static_cast<int64_t>(n) + 1023;
  const uint64_t bits = static_cast<uint64_t>(e) << 52;
  return p * __builtin_bit_cast(double, bits);  // memcpy here would block vectorisation
}

}  // namespace qftml

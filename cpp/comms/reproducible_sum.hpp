// reproducible_sum.hpp -- sums over the lattice whose bits do not depend on the decomposition.
//
// A floating-point sum depends on the order of its terms, and the order depends on how the
// lattice is split: observables would differ in the last bits between rank counts. Each term is
// instead cut into an integer part and 50 fractional bits (absolute error < 2^-50 per term, the
// same on every rank), and integers add associatively.
//
// Exports:
//   sum_fixed(x, n)                     fixed-point sum of n terms (vectorisable int64 partial sums)
//   to_fixed(x)                         one term in fixed point (the same cut as sum_fixed)
//   from_fixed(v)                       back to double (one rounding)
//   allreduce_fixed(values, n, comm)    sum over ranks, as three 43-bit limbs with MPI_SUM
#pragma once
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace qftml {

using fixed128 = __int128;
constexpr int kFixedFracBits = 50;

inline fixed128 sum_fixed(const double* __restrict x, int64_t n) {
  constexpr double scale = 1125899906842624.0;  // 2^50
  constexpr int64_t chunk = 8192;              // 8192 fractions < 2^50 each fit an int64
  fixed128 total = 0;
  for (int64_t k0 = 0; k0 < n; k0 += chunk) {
    const int64_t k1 = std::min(n, k0 + chunk);
    int64_t whole = 0, frac = 0;
    for (int64_t k = k0; k < k1; ++k) {
      const double w = std::floor(x[k]);
      whole += static_cast<int64_t>(w);
      frac += static_cast<int64_t>((x[k] - w) * scale);  // x - floor(x) is exact
    }
    total += static_cast<fixed128>(whole) * (static_cast<fixed128>(1) << kFixedFracBits) + frac;
  }
  return total;
}

inline fixed128 to_fixed(double x) {
  const double w = std::floor(x);
  return static_cast<fixed128>(static_cast<int64_t>(w)) * (static_cast<fixed128>(1) << kFixedFracBits) +
         static_cast<int64_t>((x - w) * 1125899906842624.0);
}

inline double from_fixed(fixed128 v) {
  const bool negative = v < 0;
  const unsigned __int128 m = negative ? -static_cast<unsigned __int128>(v) : static_cast<unsigned __int128>(v);
  const double hi = static_cast<double>(static_cast<uint64_t>(m >> kFixedFracBits));
  const double lo = static_cast<double>(static_cast<uint64_t>(m & ((static_cast<unsigned __int128>(1) << kFixedFracBits) - 1))) /
                    1125899906842624.0;
  const double r = hi + lo;
  return negative ? -r : r;
}

inline void allreduce_fixed(fixed128* values, int n, MPI_Comm comm) {
  constexpr int kBits = 43;
  const unsigned __int128 mask = (static_cast<unsigned __int128>(1) << kBits) - 1;
  std::vector<uint64_t> limbs(3 * static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    const unsigned __int128 u = static_cast<unsigned __int128>(values[i]);  // two's complement
    limbs[3 * i] = static_cast<uint64_t>(u & mask);
    limbs[3 * i + 1] = static_cast<uint64_t>((u >> kBits) & mask);
    limbs[3 * i + 2] = static_cast<uint64_t>(u >> (2 * kBits));
  }
  MPI_Allreduce(MPI_IN_PLACE, limbs.data(), 3 * n, MPI_UINT64_T, MPI_SUM, comm);
  for (int i = 0; i < n; ++i) {
    const unsigned __int128 u = static_cast<unsigned __int128>(limbs[3 * i]) +
                                (static_cast<unsigned __int128>(limbs[3 * i + 1]) << kBits) +
                                (static_cast<unsigned __int128>(limbs[3 * i + 2]) << (2 * kBits));
    values[i] = static_cast<fixed128>(u);  // modulo 2^128: the signed sum
  }
}

}  // namespace qftml

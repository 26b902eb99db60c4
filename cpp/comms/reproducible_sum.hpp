// reproducible_sum.hpp -- sums over the lattice whose bits do not depend on the decomposition.
//
// A floating-point sum depends on the order of its terms, and the order depends on how the
// lattice is split: observables would differ in the last bits between rank counts. Each term is
// instead converted to a 128-bit fixed-point number with 62 fractional bits (exact for |x| >=
// 2^-10, absolute error < 2^-62 otherwise, range 2^64), and integer addition is associative.
//
// Exports:
//   to_fixed(x)                         the fixed-point value of one term
//   from_fixed(v)                       back to double (one rounding)
//   allreduce_fixed(values, n, comm)    sum over ranks, as three 43-bit limbs with MPI_SUM
#pragma once
#include <mpi.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace qftml {

using fixed128 = __int128;

inline fixed128 to_fixed(double x) {
  const double whole = std::floor(x);
  const double frac = x - whole;  // exact, in [0, 1)
  return static_cast<fixed128>(static_cast<int64_t>(whole)) * (static_cast<fixed128>(1) << 62) +
         static_cast<fixed128>(static_cast<int64_t>(frac * 4611686018427387904.0));  // 2^62
}

inline double from_fixed(fixed128 v) {
  const bool negative = v < 0;
  const unsigned __int128 m = negative ? -static_cast<unsigned __int128>(v) : static_cast<unsigned __int128>(v);
  const double hi = static_cast<double>(static_cast<uint64_t>(m >> 62));
  const double lo = static_cast<double>(static_cast<uint64_t>(m & ((static_cast<unsigned __int128>(1) << 62) - 1))) *
                    2.168404344971009e-19;  // 2^-62
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

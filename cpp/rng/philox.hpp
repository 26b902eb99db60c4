// philox.hpp -- counter-based random numbers (Philox-4x32-10, Salmon et al., SC'11).
//
// Exports:
//   philox4x32_10(ctr, key)      four 32-bit words for a 128-bit counter and a 64-bit key
//   rng_key(seed, purpose)        the key of one stream purpose for one seed
//   uniform52(hi, lo)             a double in [0, 1) from two words (52 random mantissa bits)
//   uniform32_open(w)             a double in (0, 1) from one word
//
// The counter of a draw is (global site index lo, hi, sweep, draw), so a draw depends only on
// where and when it is made, never on which rank makes it: chains are decomposition independent.
#pragma once
#include <cstdint>
#include <cstring>

namespace qftml {

enum class RngPurpose : uint32_t {
  initial_field = 1,
  metropolis = 2,
  heatbath = 3,
  ising = 4,
  user = 100,  // purposes >= 100 are for the Python driver (e.g. RG tie-breaking)
};

struct PhiloxKey {
  uint32_t k0, k1;
};

inline PhiloxKey rng_key(uint64_t seed, uint32_t purpose) {
  return PhiloxKey{static_cast<uint32_t>(seed),
                   static_cast<uint32_t>(seed >> 32) ^ (purpose * 0x9E3779B9u)};
}

// One block of Philox-4x32 with 10 rounds; written branch-free so loops over sites vectorise.
inline void philox4x32_10(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3, uint32_t k0,
                          uint32_t k1) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
#pragma GCC unroll 10
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(M0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(M1) * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += W0;
    k1 += W1;
  }
}

inline double uniform52(uint32_t hi, uint32_t lo) {
  const uint64_t bits =
      0x3FF0000000000000ull | ((static_cast<uint64_t>(hi) << 20) ^ (static_cast<uint64_t>(lo) >> 12));
  return __builtin_bit_cast(double, bits) - 1.0;  // memcpy here would block vectorisation
}

inline double uniform32_open(uint32_t w) { return (static_cast<double>(w) + 0.5) * 2.3283064365386963e-10; }

}  // namespace qftml

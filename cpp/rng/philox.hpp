// philox.hpp -- counter-based random numbers (Philox-4x32-10, Salmon et al., SC'11).
//
// Exports:
//   philox4x32_10(ctr, key)      four 32-bit words for a 128-bit counter and a 64-bit key
//   rng_key(seed, purpose)        the key of one stream purpose for one seed
//   uniform52(hi, lo)             a double in [0, 1) from two words (52 random mantissa bits)
//   uniform32_open(w)             a double in (0, 1) from one word
//   SweepWords, sweep_words(sweep), site_counter(site, draw, sw, c)   the counter of a draw of
//                                 the site updates (layout below); kMaxCounterSites, kMaxDraws
//   Philox8, philox4x32_10_x8<U>, uniform52_x8   (AVX-512 builds only, QFTML_HAVE_AVX512) the
//                                 same blocks for U x 8 counters at once, one per 64-bit lane
//
// The counter of a draw depends only on where and when it is made (global site index, sweep,
// draw), never on which rank makes it: chains are decomposition independent. Site updates use
//     word 0 = site[0:32]   word 1 = site[32:48] | sweep[48:64] << 16
//     word 2 = sweep[0:32]  word 3 = draw[0:16]  | sweep[32:48] << 16
// (site < 2^48, draw < 2^16): all 64 bits of the sweep index, so streams never repeat. For
// sweep < 2^32 and site < 2^32 this is (site, 0, sweep, draw), the counter of ensemble format
// version 1 (which dropped sweep[32:64]), so every chain of version 1 continues bit for bit.
// The cluster updates use (index[0:48], draw in word 1's high half, sweep lo, sweep hi) under their
// own keys (cluster/bonds.hpp, cluster/wolff.cpp); the initial field (site, 0, 0, 0).
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__) && defined(__AVX512DQ__)
#include <immintrin.h>
#define QFTML_HAVE_AVX512 1
#endif

namespace qftml {

enum class RngPurpose : uint32_t {
  initial_field = 1,
  metropolis = 2,
  independence = 3,  // the independence sampler (called heatbath before format version 2)
  ising = 4,
  cluster_bonds = 5,  // embedded-Ising bonds: counter (link index, sweep)
  cluster_coins = 6,  // cluster flips: counter (cluster label, sweep)
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

// Global site indices and draws per site and sweep the counter layout has room for.
constexpr uint64_t kMaxCounterSites = uint64_t(1) << 48;
constexpr int64_t kMaxDraws = int64_t(1) << 16;

// The sweep-dependent parts of a site-update counter, computed once per row.
struct SweepWords {
  uint64_t site_bits;  // sweep[48:64] << 48: or-ed into the site index (lands in word 1's high half)
  uint32_t word2;      // sweep[0:32]
  uint32_t draw_bits;  // sweep[32:48] << 16: or-ed into the draw (word 3's high half)
};

inline SweepWords sweep_words(uint64_t sweep) {
  return SweepWords{(sweep >> 48) << 48, static_cast<uint32_t>(sweep),
                    static_cast<uint32_t>((sweep >> 32) & 0xFFFFu) << 16};
}

// The four counter words of draw `draw` at global site `site` in the sweep of `sw`.
inline void site_counter(uint64_t site, uint32_t draw, const SweepWords& sw, uint32_t c[4]) {
  const uint64_t s = site | sw.site_bits;
  c[0] = static_cast<uint32_t>(s);
  c[1] = static_cast<uint32_t>(s >> 32);
  c[2] = sw.word2;
  c[3] = draw | sw.draw_bits;
}

inline double uniform32_open(uint32_t w) { return (static_cast<double>(w) + 0.5) * 2.3283064365386963e-10; }

#ifdef QFTML_HAVE_AVX512
// Eight Philox blocks side by side. Lane i of word j holds word j of block i in its low 32 bits;
// the high 32 bits are don't-care (vpmuludq reads only the low halves, and uniform52_x8 masks
// them), which saves a mask per round. gcc maps the 32x32->64 products of the scalar code onto
// vpmullq (64x64, three uops) when it vectorises; vpmuludq is one uop. Same words as the scalar
// philox4x32_10 for every lane (integer arithmetic: exact).
struct Philox8 {
  __m512i c0, c1, c2, c3;
};

template <int U>
inline void philox4x32_10_x8(Philox8* x, uint32_t k0, uint32_t k1) {
  const __m512i m0 = _mm512_set1_epi64(0xD2511F53u), m1 = _mm512_set1_epi64(0xCD9E8D57u);
#pragma GCC unroll 10
  for (int round = 0; round < 10; ++round) {
    const __m512i key0 = _mm512_set1_epi64(k0), key1 = _mm512_set1_epi64(k1);
#pragma GCC unroll 8
    for (int u = 0; u < U; ++u) {  // U independent blocks interleaved: latency hiding
      const __m512i p0 = _mm512_mul_epu32(x[u].c0, m0);
      const __m512i p1 = _mm512_mul_epu32(x[u].c2, m1);
      // 0x96: three-way xor; the high halves pick up garbage that nothing reads.
      x[u].c0 = _mm512_ternarylogic_epi64(_mm512_srli_epi64(p1, 32), x[u].c1, key0, 0x96);
      x[u].c2 = _mm512_ternarylogic_epi64(_mm512_srli_epi64(p0, 32), x[u].c3, key1, 0x96);
      x[u].c1 = p1;
      x[u].c3 = p0;
    }
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
}

// uniform52(hi, lo) of every lane: (hi << 20) ^ (lo >> 12) with 1.0's exponent, minus 1.
inline __m512d uniform52_x8(__m512i hi, __m512i lo) {
  const __m512i h = _mm512_srli_epi64(_mm512_slli_epi64(hi, 32), 12);  // bits 20..51
  const __m512i l = _mm512_srli_epi64(_mm512_slli_epi64(lo, 32), 44);  // bits 0..19
  const __m512i bits = _mm512_ternarylogic_epi64(h, l, _mm512_set1_epi64(0x3FF0000000000000ll), 0x96);
  return _mm512_sub_pd(_mm512_castsi512_pd(bits), _mm512_set1_pd(1.0));
}
#endif

}  // namespace qftml

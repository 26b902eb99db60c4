// bonds.hpp -- embedded-Ising bonds of one checkerboard row (plain arrays).
//
// Write phi_x = s_x |phi_x|. For the link (x, y = x + e_l) with coupling w, the bond is set with
//     P = 1 - exp(-2 w phi_x phi_y)   if w phi_x phi_y > 0,   else never
// (Brower-Tamayo; for `ising` fields phi = +-1 and P = 1 - exp(-2 w)). Flipping the signs of a
// connected cluster of bonds leaves every term of S but the linear one unchanged.
//
// Random numbers: Philox under rng_key(seed, cluster_bonds), one block per link at counter
//     c0 = link index low 32 bits, c1 = link index bits 32..47 (draw 0), c2, c3 = sweep low, high,
// link index = (global site index of x) * n_links + l. The uniform is uniform52(c0, c1), so a
// bond depends only on (link, sweep, phi_x, phi_y, w): the same on every process grid.
//
// Exports:
//   BondRow                     one row segment: phi, forward neighbours, link couplings, indices
//   bond_probability_arg(...)   x = 2 w phi_x phi_y (the same IEEE operations everywhere)
//   bond_uniform(link, sweep, key)   the uniform of one link
//   bond_row(row, sweep, key, mask)  mask[k] |= 1 << l for every bond of site k (AVX-512 or portable,
//                               the same bits)
//   bond_row_portable(...)      the scalar reference
//   coin_flips(label, n, sweep, key, prob, flip)   flip[i] = u(label[i], sweep) < prob[i] (prob null:
//                               1/2), u from Philox under the coins key at counter (label, sweep)
#pragma once
#include <cstdint>

#include "kernels/fast_exp.hpp"
#include "kernels/site_updates.hpp"
#include "rng/philox.hpp"

namespace qftml {

constexpr int kMaxClusterLinks = 16;

struct BondRow {
  int64_t n = 0;
  const double* phi = nullptr;
  int n_links = 0;
  const double* nb[kMaxClusterLinks] = {};  // forward neighbour of site k at nb[l][k]
  const double* w[kMaxClusterLinks] = {};   // coupling of link (x, x + e_l) at w[l][k] (inhomogeneous)
  double w0[kMaxClusterLinks] = {};         // homogeneous couplings
  uint64_t gidx0 = 0;                       // global index of site k is gidx0 + 2 k
};

inline double bond_probability_arg(double phi_x, double phi_y, double w) { return 2.0 * (w * (phi_x * phi_y)); }

inline double bond_uniform(uint64_t link, uint64_t sweep, PhiloxKey key) {
  uint32_t c0 = static_cast<uint32_t>(link), c1 = static_cast<uint32_t>(link >> 32) & 0xFFFFu;
  uint32_t c2 = static_cast<uint32_t>(sweep), c3 = static_cast<uint32_t>(sweep >> 32);
  philox4x32_10(c0, c1, c2, c3, key.k0, key.k1);
  return uniform52(c0, c1);
}

// Bond iff u < 1 - exp(-x) with x > 0 (x <= 0: exp(0) = 1, never).
inline bool bond_accept(double x, double u) { return u < 1.0 - exp_clamped(x > 0.0 ? -x : 0.0); }

template <bool Homog>
inline void bond_row_portable(const BondRow& v, uint64_t sweep, PhiloxKey key, uint16_t* __restrict mask) {
  const uint64_t nl = static_cast<uint64_t>(v.n_links);
  for (int64_t k = 0; k < v.n; ++k) {
    const uint64_t g = v.gidx0 + 2 * static_cast<uint64_t>(k);
    uint16_t m = 0;
    for (int l = 0; l < v.n_links; ++l) {
      const double x = bond_probability_arg(v.phi[k], v.nb[l][k], Homog ? v.w0[l] : v.w[l][k]);
      if (bond_accept(x, bond_uniform(g * nl + static_cast<uint64_t>(l), sweep, key))) m |= static_cast<uint16_t>(1u << l);
    }
    mask[k] = m;
  }
}

#ifdef QFTML_HAVE_AVX512
// U groups of 8 sites per step (independent Philox chains keep the pipelines full), link by link;
// the tail is the same code with U = 1 and a lane mask.
template <bool Homog, int U>
inline void bond_groups_avx512(const BondRow& v, int64_t k, uint64_t sweep, PhiloxKey key, uint16_t* mask) {
  const __m512d zero = _mm512_setzero_pd(), one = _mm512_set1_pd(1.0), two = _mm512_set1_pd(2.0);
  const __m512i sweep_lo = _mm512_set1_epi64(static_cast<uint32_t>(sweep));
  const __m512i sweep_hi = _mm512_set1_epi64(static_cast<uint32_t>(sweep >> 32));
  const __m512i nl = _mm512_set1_epi64(v.n_links), lo16 = _mm512_set1_epi64(0xFFFF);
  __mmask8 m[U];
  __m512d phi[U];
  __m512i gl[U], acc[U];
#pragma GCC unroll 8
  for (int u = 0; u < U; ++u) {
    const int64_t left = v.n - (k + 8 * u);
    m[u] = left >= 8 ? static_cast<__mmask8>(0xFF) : static_cast<__mmask8>((1u << left) - 1u);
    phi[u] = _mm512_maskz_loadu_pd(m[u], v.phi + k + 8 * u);
    const __m512i g = _mm512_add_epi64(
        _mm512_set1_epi64(static_cast<long long>(v.gidx0 + 2 * static_cast<uint64_t>(k + 8 * u))),
        _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0));
    gl[u] = _mm512_mullo_epi64(g, nl);
    acc[u] = _mm512_setzero_si512();
  }
  for (int l = 0; l < v.n_links; ++l) {
    Philox8 x[U];
    __m512d arg[U];
#pragma GCC unroll 8
    for (int u = 0; u < U; ++u) {
      const __m512i link = _mm512_add_epi64(gl[u], _mm512_set1_epi64(l));
      x[u] = Philox8{link, _mm512_and_si512(_mm512_srli_epi64(link, 32), lo16), sweep_lo, sweep_hi};
      const __m512d w = Homog ? _mm512_set1_pd(v.w0[l]) : _mm512_maskz_loadu_pd(m[u], v.w[l] + k + 8 * u);
      const __m512d xb = _mm512_mul_pd(two, _mm512_mul_pd(w, _mm512_mul_pd(phi[u], _mm512_maskz_loadu_pd(m[u], v.nb[l] + k + 8 * u))));
      arg[u] = _mm512_maskz_sub_pd(_mm512_cmp_pd_mask(xb, zero, _CMP_GT_OQ), zero, xb);
    }
    philox4x32_10_x8<U>(x, key.k0, key.k1);
    exp_clamped_x8<U>(arg);
#pragma GCC unroll 8
    for (int u = 0; u < U; ++u) {
      const __mmask8 b = _mm512_mask_cmp_pd_mask(m[u], uniform52_x8(x[u].c0, x[u].c1), _mm512_sub_pd(one, arg[u]), _CMP_LT_OQ);
      acc[u] = _mm512_mask_or_epi64(acc[u], b, acc[u], _mm512_set1_epi64(1ll << l));
    }
  }
#pragma GCC unroll 8
  for (int u = 0; u < U; ++u) _mm_mask_storeu_epi16(mask + k + 8 * u, m[u], _mm512_cvtepi64_epi16(acc[u]));
}

template <bool Homog>
inline void bond_row_avx512(const BondRow& v, uint64_t sweep, PhiloxKey key, uint16_t* mask) {
  constexpr int U = 4;
  int64_t k = 0;
  for (; k + 8 * U <= v.n; k += 8 * U) bond_groups_avx512<Homog, U>(v, k, sweep, key, mask);
  for (; k < v.n; k += 8) bond_groups_avx512<Homog, 1>(v, k, sweep, key, mask);
}
#endif

template <bool Homog>
inline void bond_row(const BondRow& v, uint64_t sweep, PhiloxKey key, uint16_t* mask) {
#ifdef QFTML_HAVE_AVX512
  bond_row_avx512<Homog>(v, sweep, key, mask);
#else
  bond_row_portable<Homog>(v, sweep, key, mask);
#endif
}

inline double coin_uniform(int64_t label, uint64_t sweep, PhiloxKey key) { return bond_uniform(static_cast<uint64_t>(label), sweep, key); }

inline void coin_flips_portable(const int64_t* label, int64_t n, uint64_t sweep, PhiloxKey key, const double* prob,
                                uint8_t* flip) {
  for (int64_t i = 0; i < n; ++i) flip[i] = coin_uniform(label[i], sweep, key) < (prob ? prob[i] : 0.5);
}

inline void coin_flips(const int64_t* label, int64_t n, uint64_t sweep, PhiloxKey key, const double* prob, uint8_t* flip) {
#ifdef QFTML_HAVE_AVX512
  constexpr int U = 4;
  const __m512i sweep_lo = _mm512_set1_epi64(static_cast<uint32_t>(sweep));
  const __m512i sweep_hi = _mm512_set1_epi64(static_cast<uint32_t>(sweep >> 32));
  const __m512i lo16 = _mm512_set1_epi64(0xFFFF);
  int64_t i = 0;
  for (; i + 8 * U <= n; i += 8 * U) {
    Philox8 x[U];
#pragma GCC unroll 8
    for (int u = 0; u < U; ++u) {
      const __m512i lab = _mm512_loadu_si512(label + i + 8 * u);
      x[u] = Philox8{lab, _mm512_and_si512(_mm512_srli_epi64(lab, 32), lo16), sweep_lo, sweep_hi};
    }
    philox4x32_10_x8<U>(x, key.k0, key.k1);
#pragma GCC unroll 8
    for (int u = 0; u < U; ++u) {
      const __m512d p = prob ? _mm512_loadu_pd(prob + i + 8 * u) : _mm512_set1_pd(0.5);
      const __mmask8 f = _mm512_cmp_pd_mask(uniform52_x8(x[u].c0, x[u].c1), p, _CMP_LT_OQ);
      _mm_storel_epi64(reinterpret_cast<__m128i*>(flip + i + 8 * u), _mm512_cvtepi64_epi8(_mm512_maskz_set1_epi64(f, 1)));
    }
  }
  coin_flips_portable(label + i, n - i, sweep, key, prob ? prob + i : nullptr, flip + i);
#else
  coin_flips_portable(label, n, sweep, key, prob, flip);
#endif
}

}  // namespace qftml

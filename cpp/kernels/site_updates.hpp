// site_updates.hpp -- single-site updates of one contiguous row of one parity (plain arrays).
//
// The single-site conditional of the action (DESIGN 1.1) is
//     p(phi_x | rest) ~ exp(-a phi^2 - b phi^4 + (J - r) phi),  J = sum_links coupling * phi_nb,
// so every update needs only J, the site's (a, b, r) and random numbers.
//
// Exports:
//   RowStencil, RowSegment, row_view(stencil, segment) -> RowView   compact row descriptors: one
//                                     stencil per (parity, row offset), 24 bytes per stored segment
//   local_field<Homog>(row, J)        J[k] = sum over link terms of coupling * neighbour value
//   metropolis_row<Homog>(row, ...)   `hits` Metropolis hits per site, phi' = phi + step (2u - 1),
//                                     local field fused in; AVX-512 intrinsics, or the portable
//                                     metropolis_row_portable (the same bits on every target)
//   ising_row<Homog>(row, ...)        `hits` spin-flip Metropolis hits per site (phi = +-1), ditto
//   independence_row<Homog>(...)      `hits` independence Metropolis-Hastings steps per site with a
//                                     proposal fitted to the whole 1D conditional (exact for b = 0)
//   QuarticProposal, quartic_conditional_update   that 1D proposal and update
// Each returns the number of accepted proposals.
// Random numbers: Philox block at counter site_counter(global site index, hit, sweep_words(sweep))
// (rng/philox.hpp: all 64 bits of the sweep index).
#pragma once
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <type_traits>

#include "kernels/fast_exp.hpp"
#include "rng/philox.hpp"

namespace qftml {

constexpr int kMaxLinkTerms = 32;  // 2 * (d nearest-neighbour + extra offsets)

// What the updates of one class of rows read: the rows of parity p with offset c (every
// neighbour of such a row sits at the same flat offset from the row start), so one stencil
// serves all of them. Pointers are the arrays' starts; offsets are added per row segment.
struct RowStencil {
  double* phi = nullptr;                        // the parity array of these rows
  const double* a = nullptr;                    // per-site couplings (same flat index as phi)
  const double* b = nullptr;
  const double* r = nullptr;
  double a0 = 0, b0 = 0, r0 = 0;                // homogeneous couplings
  int n_terms = 0;
  const double* nb_phi[kMaxLinkTerms] = {};     // neighbour value of the site at flat i:
  int64_t nb_phi_delta[kMaxLinkTerms] = {};     //   nb_phi[t][i + nb_phi_delta[t]]
  const double* nb_coup[kMaxLinkTerms] = {};    // its link coupling:
  int64_t nb_coup_delta[kMaxLinkTerms] = {};    //   nb_coup[t][i + nb_coup_delta[t]]
  double coup0[kMaxLinkTerms] = {};             // homogeneous link couplings
};

// One stored row segment (24 bytes): n sites from flat index `at` of the rows of stencil `stencil`.
struct RowSegment {
  int64_t at = 0;
  uint64_t gidx0 = 0;  // global index of its first site; site k has gidx0 + 2 k
  int32_t n = 0;
  int32_t stencil = 0;
};

// One row segment as the kernels read it: n sites at stride 1 of one parity array. Built on the
// stack from a stencil and a segment just before its update (only n_terms entries are set).
struct RowView {
  int64_t n;
  double* phi;
  const double* a;  // per-site couplings at the segment start (inhomogeneous)
  const double* b;
  const double* r;
  double a0, b0, r0;     // homogeneous couplings
  int n_terms;
  const double* coup0;   // homogeneous link couplings, n_terms of them
  uint64_t gidx0;        // global index of site k is gidx0 + 2 k
  const double* nb_phi[kMaxLinkTerms];   // neighbour value of site k at nb_phi[t][k]
  const double* nb_coup[kMaxLinkTerms];  // its link coupling at nb_coup[t][k]
};

inline RowView row_view(const RowStencil& s, const RowSegment& g) {
  RowView v;
  v.n = g.n;
  v.phi = s.phi + g.at;
  v.a = s.a + g.at, v.b = s.b + g.at, v.r = s.r + g.at;
  v.a0 = s.a0, v.b0 = s.b0, v.r0 = s.r0;
  v.n_terms = s.n_terms;
  v.coup0 = s.coup0;
  v.gidx0 = g.gidx0;
  for (int t = 0; t < s.n_terms; ++t) {
    v.nb_phi[t] = s.nb_phi[t] + (g.at + s.nb_phi_delta[t]);
    v.nb_coup[t] = s.nb_coup[t] + (g.at + s.nb_coup_delta[t]);
  }
  return v;
}

// J of site k: sum_t coupling_t * neighbour_t as a chain of fused multiply-adds from 0, in term
// order (the AVX-512 kernels do the same operations lane by lane).
template <bool Homog>
inline double local_field_at(const RowView& v, int64_t k) {
  double J = 0.0;
  for (int t = 0; t < v.n_terms; ++t) J = std::fma(Homog ? v.coup0[t] : v.nb_coup[t][k], v.nb_phi[t][k], J);
  return J;
}

template <bool Homog>
inline void local_field(const RowView& v, double* __restrict J) {
  const int64_t n = v.n;
  for (int64_t k = 0; k < n; ++k) J[k] = 0.0;
  for (int t = 0; t < v.n_terms; ++t) {
    const double* __restrict nb = v.nb_phi[t];
    if (Homog) {
      const double c = v.coup0[t];
      for (int64_t k = 0; k < n; ++k) J[k] = std::fma(c, nb[k], J[k]);
    } else {
      const double* __restrict c = v.nb_coup[t];
      for (int64_t k = 0; k < n; ++k) J[k] = std::fma(c[k], nb[k], J[k]);
    }
  }
}

// The Metropolis change of the action for phi: old -> trial (the scalar path; the AVX-512 path
// spells out the same operations in the same order):
//   dS = (trial - old)(r - J) + a (trial^2 - old^2) + b (trial^4 - old^4)
inline double metropolis_dS(double old, double trial, double J, double a, double b, double r) {
  const double o2 = old * old, t2 = trial * trial;
  return (trial - old) * (r - J) + a * (t2 - o2) + b * (t2 * t2 - o2 * o2);
}

// Portable kernels (any target). Bitwise the same as the AVX-512 kernels below: same counters,
// same IEEE operations per site.
template <bool Homog>
inline int64_t metropolis_row_portable(const RowView& v, const SweepWords& sw, int hits, double step,
                                       PhiloxKey key) {
  double* __restrict phi = v.phi;
  const int64_t n = v.n;
  const uint64_t g0 = v.gidx0;
  const uint32_t k0 = key.k0, k1 = key.k1;
  int64_t accepted = 0;
  for (int64_t k = 0; k < n; ++k) {
    const double J = local_field_at<Homog>(v, k);
    const double a = Homog ? v.a0 : v.a[k];
    const double b = Homog ? v.b0 : v.b[k];
    const double r = Homog ? v.r0 : v.r[k];
    const uint64_t g = g0 + 2 * static_cast<uint64_t>(k);
    double cur = phi[k];
    for (int hit = 0; hit < hits; ++hit) {
      uint32_t c[4];
      site_counter(g, static_cast<uint32_t>(hit), sw, c);
      philox4x32_10(c[0], c[1], c[2], c[3], k0, k1);
      const double u_prop = uniform52(c[0], c[1]), u_acc = uniform52(c[2], c[3]);
      const double trial = cur + step * (2.0 * u_prop - 1.0);
      const double dS = metropolis_dS(cur, trial, J, a, b, r);
      const double x = dS > 0.0 ? -dS : 0.0;
      const bool accept = u_acc < exp_clamped(x);
      cur = accept ? trial : cur;
      accepted += accept ? 1 : 0;
    }
    phi[k] = cur;
  }
  return accepted;
}

template <bool Homog>
inline int64_t ising_row_portable(const RowView& v, const SweepWords& sw, int hits, PhiloxKey key) {
  double* __restrict phi = v.phi;
  const int64_t n = v.n;
  const uint64_t g0 = v.gidx0;
  int64_t accepted = 0;
  for (int64_t k = 0; k < n; ++k) {
    const double J = local_field_at<Homog>(v, k);
    const double r = Homog ? v.r0 : v.r[k];
    const uint64_t g = g0 + 2 * static_cast<uint64_t>(k);
    double s = phi[k];
    for (int hit = 0; hit < hits; ++hit) {
      uint32_t c[4];
      site_counter(g, static_cast<uint32_t>(hit), sw, c);
      philox4x32_10(c[0], c[1], c[2], c[3], key.k0, key.k1);
      const double u = uniform52(c[0], c[1]);
      const double dS = 2.0 * s * (J - r);
      const double x = dS > 0.0 ? -dS : 0.0;
      const bool accept = u < exp_clamped(x);
      s = accept ? -s : s;
      accepted += accept ? 1 : 0;
    }
    phi[k] = s;
  }
  return accepted;
}

#ifdef QFTML_HAVE_AVX512
// exp_clamped of U groups of 8 lanes, in place: the operations of fast_exp.hpp one for one.
#ifndef QFTML_AVX512_GROUPS
#define QFTML_AVX512_GROUPS 4
#endif
constexpr int kAvx512Groups = QFTML_AVX512_GROUPS;

template <int U>
inline void exp_clamped_x8(__m512d* x) {
  __m512d n[U], r[U], p[U];
#pragma GCC unroll 8
  for (int u = 0; u < U; ++u) {
    const __m512d xc = _mm512_max_pd(_mm512_set1_pd(-700.0), x[u]);  // = (x < -700 ? -700 : x), also NaN
    n[u] = _mm512_roundscale_pd(
        _mm512_add_pd(_mm512_mul_pd(xc, _mm512_set1_pd(1.4426950408889634)), _mm512_set1_pd(0.5)),
        _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    r[u] = _mm512_sub_pd(_mm512_sub_pd(xc, _mm512_mul_pd(n[u], _mm512_set1_pd(6.93147180369123816490e-01))),
                         _mm512_mul_pd(n[u], _mm512_set1_pd(1.90821492927058770002e-10)));
  }
  const auto c = [](double v) { return _mm512_set1_pd(v); };
#pragma GCC unroll 8
  for (int u = 0; u < U; ++u) {  // Estrin's scheme, as in fast_exp.hpp
    const __m512d r2 = _mm512_mul_pd(r[u], r[u]);
    const __m512d r4 = _mm512_mul_pd(r2, r2);
    const __m512d r8 = _mm512_mul_pd(r4, r4);
    const __m512d q01 = _mm512_fmadd_pd(c(1.0), r[u], c(1.0)), q23 = _mm512_fmadd_pd(c(1.0 / 6.0), r[u], c(0.5));
    const __m512d q45 = _mm512_fmadd_pd(c(1.0 / 120.0), r[u], c(1.0 / 24.0));
    const __m512d q67 = _mm512_fmadd_pd(c(1.0 / 5040.0), r[u], c(1.0 / 720.0));
    const __m512d q89 = _mm512_fmadd_pd(c(1.0 / 362880.0), r[u], c(1.0 / 40320.0));
    const __m512d q1011 = _mm512_fmadd_pd(c(1.0 / 39916800.0), r[u], c(1.0 / 3628800.0));
    const __m512d e0 = _mm512_fmadd_pd(q23, r2, q01), e1 = _mm512_fmadd_pd(q67, r2, q45);
    const __m512d e2 = _mm512_fmadd_pd(q1011, r2, q89);
    const __m512d f0 = _mm512_fmadd_pd(e1, r4, e0), f1 = _mm512_fmadd_pd(c(1.0 / 479001600.0), r4, e2);
    p[u] = _mm512_fmadd_pd(f1, r8, f0);
  }
#pragma GCC unroll 8
  for (int u = 0; u < U; ++u) {
    const __m512i e = _mm512_add_epi64(_mm512_cvtpd_epi64(n[u]), _mm512_set1_epi64(1023));
    x[u] = _mm512_mul_pd(p[u], _mm512_castsi512_pd(_mm512_slli_epi64(e, 52)));
  }
}

// Lanes k..k+7 of a row (mask m for the tail): J, the site couplings, the global site indices.
struct Lanes8 {
  __mmask8 m;
  __m512d J, a, b, r;
  __m512i g;  // global site index | site_bits per lane: counter word 0 = low half, word 1 = high half
};

template <bool Homog, int NT>
inline Lanes8 load_lanes8(const RowView& v, const double* const* nb, const double* const* cp, int64_t k,
                          uint64_t site_bits) {
  Lanes8 l;
  const int64_t left = v.n - k;
  l.m = left >= 8 ? static_cast<__mmask8>(0xFF) : static_cast<__mmask8>((1u << left) - 1u);
  l.J = _mm512_setzero_pd();
  const int n_terms = NT > 0 ? NT : v.n_terms;  // NT > 0: a compile-time count, loop unrolled
#pragma GCC unroll 8
  for (int t = 0; t < n_terms; ++t) {
    const __m512d c = Homog ? _mm512_set1_pd(v.coup0[t]) : _mm512_maskz_loadu_pd(l.m, cp[t] + k);
    l.J = _mm512_fmadd_pd(c, _mm512_maskz_loadu_pd(l.m, nb[t] + k), l.J);
  }
  if (Homog) {
    l.a = _mm512_set1_pd(v.a0), l.b = _mm512_set1_pd(v.b0), l.r = _mm512_set1_pd(v.r0);
  } else {
    l.a = _mm512_maskz_loadu_pd(l.m, v.a + k);
    l.b = _mm512_maskz_loadu_pd(l.m, v.b + k);
    l.r = _mm512_maskz_loadu_pd(l.m, v.r + k);
  }
  // site_bits (sweep[48:64] at bits 48..63) cannot carry into: sites < 2^48 (site_counter)
  l.g = _mm512_add_epi64(
      _mm512_set1_epi64(static_cast<long long>((v.gidx0 + 2 * static_cast<uint64_t>(k)) | site_bits)),
      _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0));
  return l;
}

// U groups of eight sites per step (independent dependency chains keep the pipelines full: one
// group is a ~150-cycle chain of Philox rounds and polynomial steps), local field fused in, all
// hits of a site in registers (sites of one colour are independent, so hit-inner order gives
// the same chain). The tail is the same code, U = 1 and masked, so every site takes the identical
// sequence of operations whatever the row length.
template <bool Homog, int NT, int U>
inline int64_t metropolis_groups_avx512(const RowView& v, const double* const* nb, const double* const* cp,
                                        int64_t k, const SweepWords& sw, int hits, double step, PhiloxKey key) {
  const __m512d zero = _mm512_setzero_pd(), one = _mm512_set1_pd(1.0), two = _mm512_set1_pd(2.0);
  const __m512d vstep = _mm512_set1_pd(step);
  const __m512i vsweep = _mm512_set1_epi64(sw.word2);
  Lanes8 l[U];
  __m512d cur[U], rJ[U];
  int64_t accepted = 0;
#pragma GCC unroll 8
  for (int u = 0; u < U; ++u) {
    l[u] = load_lanes8<Homog, NT>(v, nb, cp, k + 8 * u, sw.site_bits);
    cur[u] = _mm512_maskz_loadu_pd(l[u].m, v.phi + k + 8 * u);
    rJ[u] = _mm512_sub_pd(l[u].r, l[u].J);
  }
  for (int hit = 0; hit < hits; ++hit) {
    Philox8 x[U];
#pragma GCC unroll 8
    for (int u = 0; u < U; ++u) x[u] = Philox8{l[u].g, _mm512_srli_epi64(l[u].g, 32), vsweep, _mm512_set1_epi64(hit | sw.draw_bits)};
    philox4x32_10_x8<U>(x, key.k0, key.k1);
    __m512d trial[U], xarg[U];
#pragma GCC unroll 8
    for (int u = 0; u < U; ++u) {
      const __m512d u_prop = uniform52_x8(x[u].c0, x[u].c1);
      trial[u] = _mm512_add_pd(cur[u], _mm512_mul_pd(vstep, _mm512_sub_pd(_mm512_mul_pd(two, u_prop), one)));
      const __m512d o2 = _mm512_mul_pd(cur[u], cur[u]), t2 = _mm512_mul_pd(trial[u], trial[u]);
      const __m512d dS = _mm512_add_pd(
          _mm512_add_pd(_mm512_mul_pd(_mm512_sub_pd(trial[u], cur[u]), rJ[u]), _mm512_mul_pd(l[u].a, _mm512_sub_pd(t2, o2))),
          _mm512_mul_pd(l[u].b, _mm512_sub_pd(_mm512_mul_pd(t2, t2), _mm512_mul_pd(o2, o2))));
      xarg[u] = _mm512_maskz_sub_pd(_mm512_cmp_pd_mask(dS, zero, _CMP_GT_OQ), zero, dS);
    }
    exp_clamped_x8<U>(xarg);
#pragma GCC unroll 8
    for (int u = 0; u < U; ++u) {
      const __mmask8 acc = _mm512_mask_cmp_pd_mask(l[u].m, uniform52_x8(x[u].c2, x[u].c3), xarg[u], _CMP_LT_OQ);
      cur[u] = _mm512_mask_blend_pd(acc, cur[u], trial[u]);
      accepted += __builtin_popcount(static_cast<unsigned>(acc));
    }
  }
#pragma GCC unroll 8
  for (int u = 0; u < U; ++u) _mm512_mask_storeu_pd(v.phi + k + 8 * u, l[u].m, cur[u]);
  return accepted;
}

// A row segment in steps of U groups of 8 sites, then the tail: as many groups as needed, the
// last one masked. groups(std::integral_constant<int, U>{}, k) updates U groups from site k and
// returns the number accepted.
template <class Groups>
inline int64_t row_in_groups_avx512(int64_t n, Groups&& groups) {
  constexpr int U = kAvx512Groups;
  int64_t accepted = 0, k = 0;
  for (; k + 8 * U <= n; k += 8 * U) accepted += groups(std::integral_constant<int, U>{}, k);
  switch ((n - k + 7) / 8) {
    case 1: return accepted + groups(std::integral_constant<int, 1>{}, k);
    case 2: return accepted + groups(std::integral_constant<int, 2>{}, k);
    case 3: return accepted + groups(std::integral_constant<int, 3>{}, k);
    case 4: return accepted + groups(std::integral_constant<int, 4>{}, k);
    default:
      for (; k < n; k += 8) accepted += groups(std::integral_constant<int, 1>{}, k);
      return accepted;
  }
}

// kernel(std::integral_constant<int, NT>{}, nb, cp) with the row's neighbour and coupling pointers
// copied to the stack: the common link counts (2D, 3D, 4D nearest neighbours; 2D + nnn) get
// their own unrolled code, NT = 0 is any count.
template <class Kernel>
inline int64_t with_link_terms_avx512(const RowView& v, Kernel&& kernel) {
  const double* nb[kMaxLinkTerms];
  const double* cp[kMaxLinkTerms];
  for (int t = 0; t < v.n_terms; ++t) nb[t] = v.nb_phi[t], cp[t] = v.nb_coup[t];
  switch (v.n_terms) {
    case 4: return kernel(std::integral_constant<int, 4>{}, nb, cp);
    case 6: return kernel(std::integral_constant<int, 6>{}, nb, cp);
    case 8: return kernel(std::integral_constant<int, 8>{}, nb, cp);
    default: return kernel(std::integral_constant<int, 0>{}, nb, cp);
  }
}

template <bool Homog>
inline int64_t metropolis_row_avx512(const RowView& v, const SweepWords& sw, int hits, double step, PhiloxKey key) {
  return with_link_terms_avx512(v, [&](auto nt, const double* const* nb, const double* const* cp) {
    return row_in_groups_avx512(v.n, [&](auto u, int64_t k) {
      return metropolis_groups_avx512<Homog, decltype(nt)::value, decltype(u)::value>(v, nb, cp, k, sw, hits, step, key);
    });
  });
}

template <bool Homog, int NT, int U>
inline int64_t ising_groups_avx512(const RowView& v, const double* const* nb, const double* const* cp,
                                   int64_t k, const SweepWords& sw, int hits, PhiloxKey key) {
  const __m512d zero = _mm512_setzero_pd(), two = _mm512_set1_pd(2.0);
  const __m512i vsweep = _mm512_set1_epi64(sw.word2);
  Lanes8 l[U];
  __m512d s[U], Jr[U];
  int64_t accepted = 0;
#pragma GCC unroll 8
  for (int u = 0; u < U; ++u) {
    l[u] = load_lanes8<Homog, NT>(v, nb, cp, k + 8 * u, sw.site_bits);
    s[u] = _mm512_maskz_loadu_pd(l[u].m, v.phi + k + 8 * u);
    Jr[u] = _mm512_sub_pd(l[u].J, l[u].r);
  }
  for (int hit = 0; hit < hits; ++hit) {
    Philox8 x[U];
    __m512d xarg[U];
#pragma GCC unroll 8
    for (int u = 0; u < U; ++u) x[u] = Philox8{l[u].g, _mm512_srli_epi64(l[u].g, 32), vsweep, _mm512_set1_epi64(hit | sw.draw_bits)};
    philox4x32_10_x8<U>(x, key.k0, key.k1);
#pragma GCC unroll 8
    for (int u = 0; u < U; ++u) {
      const __m512d dS = _mm512_mul_pd(_mm512_mul_pd(two, s[u]), Jr[u]);
      xarg[u] = _mm512_maskz_sub_pd(_mm512_cmp_pd_mask(dS, zero, _CMP_GT_OQ), zero, dS);
    }
    exp_clamped_x8<U>(xarg);
#pragma GCC unroll 8
    for (int u = 0; u < U; ++u) {
      const __mmask8 acc = _mm512_mask_cmp_pd_mask(l[u].m, uniform52_x8(x[u].c0, x[u].c1), xarg[u], _CMP_LT_OQ);
      s[u] = _mm512_mask_sub_pd(s[u], acc, zero, s[u]);  // flip: 0 - s
      accepted += __builtin_popcount(static_cast<unsigned>(acc));
    }
  }
#pragma GCC unroll 8
  for (int u = 0; u < U; ++u) _mm512_mask_storeu_pd(v.phi + k + 8 * u, l[u].m, s[u]);
  return accepted;
}

template <bool Homog>
inline int64_t ising_row_avx512(const RowView& v, const SweepWords& sw, int hits, PhiloxKey key) {
  return with_link_terms_avx512(v, [&](auto nt, const double* const* nb, const double* const* cp) {
    return row_in_groups_avx512(v.n, [&](auto u, int64_t k) {
      return ising_groups_avx512<Homog, decltype(nt)::value, decltype(u)::value>(v, nb, cp, k, sw, hits, key);
    });
  });
}
#endif

// `hits` Metropolis hits of every site of the row; returns the number accepted.
template <bool Homog>
inline int64_t metropolis_row(const RowView& v, const SweepWords& sw, int hits, double step, PhiloxKey key) {
#ifdef QFTML_HAVE_AVX512
  return metropolis_row_avx512<Homog>(v, sw, hits, step, key);
#else
  return metropolis_row_portable<Homog>(v, sw, hits, step, key);
#endif
}

// `hits` spin-flip hits (phi = +-1); returns the number accepted.
template <bool Homog>
inline int64_t ising_row(const RowView& v, const SweepWords& sw, int hits, PhiloxKey key) {
#ifdef QFTML_HAVE_AVX512
  return ising_row_avx512<Homog>(v, sw, hits, key);
#else
  return ising_row_portable<Homog>(v, sw, hits, key);
#endif
}

// Gaussian-mixture fit of the 1D density f(x) ~ exp(-alpha x^2 - beta x^4 + j x) (beta >= 0;
// alpha > 0 if beta == 0): one Gaussian at each maximum of f (one or two; the stationary points
// solve 4 beta x^3 + 2 alpha x - j = 0), width from the curvature there, weight from its Laplace
// mass, plus a wide "defensive" Gaussian (weight 0.1) spanning both wells. Every Gaussian has
// heavier tails than the quartic, so f/g is bounded and the independence sampler is uniformly
// ergodic (no sticking between the wells). For beta = 0 the proposal is f itself.
struct QuarticProposal {
  int n = 1;
  double mean[3] = {0, 0, 0}, sd[3] = {1, 1, 1}, weight[3] = {1, 0, 0};

  QuarticProposal(double alpha, double beta, double j) {
    if (beta <= 0.0) {
      mean[0] = j / (2.0 * alpha), sd[0] = 1.0 / std::sqrt(2.0 * alpha);
      return;
    }
    // Depressed cubic x^3 + p x + q = 0.
    const double p = alpha / (2.0 * beta), q = -j / (4.0 * beta);
    const double disc = q * q / 4.0 + p * p * p / 27.0;
    int wells = 1;
    if (disc >= 0.0) {
      const double sq = std::sqrt(disc);
      mean[0] = std::cbrt(-q / 2.0 + sq) + std::cbrt(-q / 2.0 - sq);
    } else {  // three real roots (p < 0): the largest and smallest are maxima
      const double rad = 2.0 * std::sqrt(-p / 3.0);
      const double phase = std::acos(std::fmax(-1.0, std::fmin(1.0, 3.0 * q / (p * rad)))) / 3.0;
      mean[0] = rad * std::cos(phase);
      mean[1] = rad * std::cos(phase - 4.0 * 3.141592653589793 / 3.0);
      wells = 2;
    }
    double logmass[2], widest = 0.0;
    for (int i = 0; i < wells; ++i) {
      const double m = mean[i], curvature = 2.0 * alpha + 12.0 * beta * m * m;
      sd[i] = 1.0 / std::sqrt(curvature);
      widest = std::fmax(widest, sd[i]);
      logmass[i] = -alpha * m * m - beta * m * m * m * m + j * m + std::log(sd[i]);
    }
    const double w1 = wells == 2 ? 1.0 / (1.0 + std::exp(logmass[0] - logmass[1])) : 0.0;
    weight[0] = 0.9 * (1.0 - w1);
    weight[1] = 0.9 * w1;
    weight[2] = 0.1;
    mean[2] = wells == 2 ? 0.5 * (mean[0] + mean[1]) : mean[0];
    sd[2] = 2.0 * widest + (wells == 2 ? 0.5 * (mean[0] - mean[1]) : 0.0);
    n = 3;
  }

  double log_density(double x) const {
    double acc = 0.0;
    for (int i = 0; i < n; ++i) {
      const double z = (x - mean[i]) / sd[i];
      acc += weight[i] * std::exp(-0.5 * z * z) / sd[i];
    }
    return std::log(acc);
  }

  // A draw from the mixture with three uniforms in (0, 1).
  double draw(double u_component, double u1, double u2) const {
    const int i = u_component < weight[0] ? 0 : (u_component < weight[0] + weight[1] ? 1 : 2);
    const double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
    return mean[i] + sd[i] * z;
  }
};

// `hits` independence Metropolis-Hastings steps from the QuarticProposal at x; accepted with
// min(1, f(x') g(x) / (f(x) g(x'))). For beta = 0 the proposal is exact and always accepted.
inline double quartic_conditional_update(double x, double alpha, double beta, double j, int hits,
                                         uint64_t site, const SweepWords& sw, PhiloxKey key,
                                         int64_t* accepted) {
  const QuarticProposal g(alpha, beta, j);
  auto log_f = [&](double y) { const double y2 = y * y; return -alpha * y2 - beta * y2 * y2 + j * y; };
  double log_ratio_x = log_f(x) - g.log_density(x);
  for (int hit = 0; hit < hits; ++hit) {
    uint32_t c[4];
    site_counter(site, static_cast<uint32_t>(hit), sw, c);
    philox4x32_10(c[0], c[1], c[2], c[3], key.k0, key.k1);
    const double y = g.draw(uniform32_open(c[0]), uniform32_open(c[1]), uniform32_open(c[2]));
    const double log_ratio_y = log_f(y) - g.log_density(y);
    if (beta <= 0.0 || uniform32_open(c[3]) < std::exp(std::fmin(0.0, log_ratio_y - log_ratio_x))) {
      x = y;
      log_ratio_x = log_ratio_y;
      ++*accepted;
    }
  }
  return x;
}

template <bool Homog>
inline int64_t independence_row(const RowView& v, const double* __restrict J, const SweepWords& sw, int hits,
                                PhiloxKey key) {
  int64_t accepted = 0;
  for (int64_t k = 0; k < v.n; ++k) {
    const double a = Homog ? v.a0 : v.a[k];
    const double b = Homog ? v.b0 : v.b[k];
    const double r = Homog ? v.r0 : v.r[k];
    v.phi[k] = quartic_conditional_update(v.phi[k], a, b, J[k] - r, hits,
                                          v.gidx0 + 2 * static_cast<uint64_t>(k), sw, key, &accepted);
  }
  return accepted;
}

}  // namespace qftml

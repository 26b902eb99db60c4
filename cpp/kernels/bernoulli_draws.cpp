// bernoulli_draws.cpp -- bernoulli_draw_rows of bernoulli_draws.hpp (see there).
#include "kernels/bernoulli_draws.hpp"

namespace qftml {

void bernoulli_draw_rows(int64_t n, const double* p, uint64_t index0, uint32_t step, PhiloxKey key, double* out) {
  int64_t i = 0;
#ifdef QFTML_HAVE_AVX512
  constexpr int U = 4;
  const __m512i lane = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
  const __m512i vstep = _mm512_set1_epi64(step), zero = _mm512_setzero_si512();
  const __m512d one = _mm512_set1_pd(1.0);
  for (; i + 8 * U <= n; i += 8 * U) {
    Philox8 x[U];
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      const __m512i idx = _mm512_add_epi64(_mm512_set1_epi64(static_cast<int64_t>(index0 + i + 8 * u)), lane);
      x[u] = Philox8{idx, _mm512_srli_epi64(idx, 32), vstep, zero};
    }
    philox4x32_10_x8<U>(x, key.k0, key.k1);
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      const __mmask8 hit = _mm512_cmp_pd_mask(uniform52_x8(x[u].c0, x[u].c1), _mm512_loadu_pd(p + i + 8 * u),
                                              _CMP_LT_OQ);
      _mm512_storeu_pd(out + i + 8 * u, _mm512_maskz_mov_pd(hit, one));
    }
  }
#endif
  for (; i < n; ++i) {
    const uint64_t c = index0 + static_cast<uint64_t>(i);
    uint32_t w0 = static_cast<uint32_t>(c), w1 = static_cast<uint32_t>(c >> 32), w2 = step, w3 = 0;
    philox4x32_10(w0, w1, w2, w3, key.k0, key.k1);
    out[i] = uniform52(w0, w1) < p[i] ? 1.0 : 0.0;
  }
}

}  // namespace qftml

// kernel_check.cpp -- the AVX-512 site kernels against the portable scalar kernels, bit for bit.
//
// Chains are decomposition independent only if a site's update does not depend on where it
// sits in a vector (row lengths, and so the masked tails, change with the process grid). This
// program runs metropolis_row_avx512 / ising_row_avx512 and their portable twins on the same
// random rows of every length 1..80 (homogeneous and inhomogeneous couplings, 1..3 hits, phi
// scales from 1e-3 to 30 so that exp_clamped sees its whole range) and exits non-zero at the
// first differing bit. Built and run by benchmarks/run.py (same flags as the engine).
// Without AVX-512 there is only one code path and the check says so.
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/site_updates.hpp"

using namespace qftml;

#ifdef QFTML_HAVE_AVX512
struct Row {
  std::vector<double> phi, nbv, coup, a, b, r;
  RowView view(int n, int n_terms) {
    RowView v;
    v.n = n;
    v.phi = phi.data();
    v.a = a.data(), v.b = b.data(), v.r = r.data();
    v.a0 = a[0], v.b0 = b[0], v.r0 = r[0];
    v.n_terms = n_terms;
    for (int t = 0; t < n_terms; ++t) {
      v.nb_phi[t] = nbv.data() + t * 96;
      v.nb_coup[t] = coup.data() + t * 96;
      v.coup0[t] = coup[t * 96];
    }
    v.gidx0 = 0xFFFFFFF0ull + 7;  // crosses 2^32: exercises counter word 1
    return v;
  }
};

static uint64_t bits(double x) {
  uint64_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}

static bool same(const std::vector<double>& x, const std::vector<double>& y) {
  return std::memcmp(x.data(), y.data(), x.size() * sizeof(double)) == 0;
}
#endif

int main() {
#ifndef QFTML_HAVE_AVX512
  std::printf("kernel_check: no AVX-512 in this build, only the portable kernels exist: nothing to compare\n");
  return 0;
#else
  std::mt19937_64 gen(12345);
  std::uniform_real_distribution<double> unif(-1.0, 1.0);
  int cases = 0;
  for (int n = 1; n <= 80; ++n)
    for (int homog = 0; homog < 2; ++homog)
      for (int hits = 1; hits <= 3; ++hits)
        for (double scale : {1e-3, 1.0, 4.0, 30.0}) {
          const int n_terms = 2 + (n % 4) * 2;
          Row row;
          row.phi.resize(96), row.nbv.resize(96 * n_terms), row.coup.resize(96 * n_terms);
          row.a.resize(96), row.b.resize(96), row.r.resize(96);
          for (auto& x : row.phi) x = scale * unif(gen);
          for (auto& x : row.nbv) x = scale * unif(gen);
          for (auto& x : row.coup) x = homog ? 1.0 : 1.0 + 0.5 * unif(gen);
          for (auto& x : row.a) x = homog ? 1.52425 : 1.5 + 0.5 * unif(gen);
          for (auto& x : row.b) x = homog ? 0.175 : 0.2 + 0.1 * unif(gen);
          for (auto& x : row.r) x = homog ? 0.0 : 0.3 * unif(gen);
          const PhiloxKey key = rng_key(0x123456789ull + n, 2);
          const uint32_t sweep = 17u + static_cast<uint32_t>(n);
          Row vec = row, ref = row;
          RowView vv = vec.view(n, n_terms), rv = ref.view(n, n_terms);
          int64_t av, ar;
          if (homog) {
            av = metropolis_row_avx512<true>(vv, sweep, hits, 0.9 * scale + 0.1, key);
            ar = metropolis_row_portable<true>(rv, sweep, hits, 0.9 * scale + 0.1, key);
          } else {
            av = metropolis_row_avx512<false>(vv, sweep, hits, 0.9 * scale + 0.1, key);
            ar = metropolis_row_portable<false>(rv, sweep, hits, 0.9 * scale + 0.1, key);
          }
          if (av != ar || !same(vec.phi, ref.phi)) {
            std::printf("kernel_check: metropolis differs: n=%d homog=%d hits=%d scale=%g accepted %ld vs %ld\n", n,
                        homog, hits, scale, static_cast<long>(av), static_cast<long>(ar));
            return 1;
          }
          // Spins: phi = +-1 on the row, neighbours keep their real values (any J will do).
          for (int k = 0; k < 96; ++k) vec.phi[k] = ref.phi[k] = row.phi[k] < 0 ? -1.0 : 1.0;
          if (homog) {
            av = ising_row_avx512<true>(vv, sweep, hits, key);
            ar = ising_row_portable<true>(rv, sweep, hits, key);
          } else {
            av = ising_row_avx512<false>(vv, sweep, hits, key);
            ar = ising_row_portable<false>(rv, sweep, hits, key);
          }
          if (av != ar || !same(vec.phi, ref.phi)) {
            std::printf("kernel_check: ising differs: n=%d homog=%d hits=%d scale=%g\n", n, homog, hits, scale);
            return 1;
          }
          cases += 2;
        }
  // exp_clamped alone, over its whole range, lane by lane.
  for (int i = 0; i < 200000; ++i) {
    alignas(64) double x[8], y[8];
    for (int j = 0; j < 8; ++j) x[j] = -750.0 * std::ldexp(1.0, -(i % 40)) * (0.5 + 0.5 * unif(gen));
    __m512d v = _mm512_load_pd(x);
    exp_clamped_x8<1>(&v);
    _mm512_store_pd(y, v);
    for (int j = 0; j < 8; ++j)
      if (bits(y[j]) != bits(exp_clamped(x[j]))) {
        std::printf("kernel_check: exp_clamped differs at x=%.17g: %.17g vs %.17g\n", x[j], y[j], exp_clamped(x[j]));
        return 1;
      }
  }
  std::printf("kernel_check: AVX-512 and portable kernels agree bit for bit (%d rows, 1.6e6 exp values)\n", cases);
  return 0;
#endif
}

// kernel_check.cpp -- the AVX-512 site kernels against the portable scalar kernels, bit for bit.
//
// Chains are decomposition independent only if a site's update does not depend on where it
// sits in a vector (row lengths, and so the masked tails, change with the process grid). This
// program runs metropolis_row_avx512 / ising_row_avx512 and their portable twins on the same
// random rows of every length 1..80 (homogeneous and inhomogeneous couplings, 1..3 hits, phi
// scales from 1e-3 to 30 so that exp_clamped sees its whole range) and exits non-zero at the
// first differing bit. Built and run by benchmarks/run.py (same flags as the engine).
// The cluster kernels too: bond_row_avx512 (embedded-Ising bonds) and coin_flips against their
// portable twins, on rows of every length, with negative couplings, field signs and huge sweeps.
// Site-update sweeps set all 64 bits of the sweep index (counter layout of rng/philox.hpp).
// Without AVX-512 there is only one code path and the check says so.
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "cluster/bonds.hpp"
#include "kernels/site_updates.hpp"

using namespace qftml;

#ifdef QFTML_HAVE_AVX512
struct Row {
  std::vector<double> phi, nbv, coup, a, b, r, coup0;
  RowView view(int n, int n_terms) {
    RowView v;
    coup0.resize(n_terms);
    v.n = n;
    v.phi = phi.data();
    v.a = a.data(), v.b = b.data(), v.r = r.data();
    v.a0 = a[0], v.b0 = b[0], v.r0 = r[0];
    v.n_terms = n_terms;
    for (int t = 0; t < n_terms; ++t) {
      v.nb_phi[t] = nbv.data() + t * 96;
      v.nb_coup[t] = coup.data() + t * 96;
      coup0[t] = coup[t * 96];
    }
    v.coup0 = coup0.data();
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
          // every field of the sweep index in use: words 2, 3 (high half) and 1 (high half)
          const SweepWords sweep = sweep_words((uint64_t(0xA5C3 + n) << 48) | (uint64_t(0x1234 + n) << 32) | (17u + n));
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
  // Cluster bonds and coins: rows of every length, 1..6 links, couplings of both signs.
  for (int n = 1; n <= 80; ++n)
    for (int homog = 0; homog < 2; ++homog)
      for (double scale : {1e-3, 0.7, 3.0}) {
        const int n_links = 1 + n % 6;
        std::vector<double> phi(96), nb(96 * n_links), w(96 * n_links);
        for (auto& x : phi) x = scale * unif(gen);
        for (auto& x : nb) x = scale * unif(gen);
        for (auto& x : w) x = homog ? 0.8 : 0.3 + unif(gen);
        BondRow v;
        v.n = n, v.phi = phi.data(), v.n_links = n_links, v.gidx0 = (1ull << 40) - 9;  // link index past 2^32
        for (int l = 0; l < n_links; ++l) v.nb[l] = nb.data() + 96 * l, v.w[l] = w.data() + 96 * l, v.w0[l] = w[96 * l];
        const PhiloxKey key = rng_key(777 + n, 5);
        const uint64_t sweep = (3ull << 32) + 11 + n;
        std::vector<uint16_t> mv(96, 0), mr(96, 0);
        if (homog) bond_row_avx512<true>(v, sweep, key, mv.data()), bond_row_portable<true>(v, sweep, key, mr.data());
        else bond_row_avx512<false>(v, sweep, key, mv.data()), bond_row_portable<false>(v, sweep, key, mr.data());
        if (std::memcmp(mv.data(), mr.data(), sizeof(uint16_t) * n) != 0) {
          std::printf("kernel_check: cluster bonds differ: n=%d homog=%d scale=%g\n", n, homog, scale);
          return 1;
        }
        std::vector<int64_t> labels(n);
        std::vector<double> prob(n);
        for (int i = 0; i < n; ++i) labels[i] = static_cast<int64_t>((1ull << 45) * (0.5 + 0.5 * unif(gen))), prob[i] = 0.5 + 0.5 * unif(gen);
        std::vector<uint8_t> fv(n), fr(n);
        for (const double* p : {static_cast<const double*>(nullptr), static_cast<const double*>(prob.data())}) {
          coin_flips(labels.data(), n, sweep, key, p, fv.data());
          coin_flips_portable(labels.data(), n, sweep, key, p, fr.data());
          if (fv != fr) {
            std::printf("kernel_check: cluster coins differ: n=%d\n", n);
            return 1;
          }
        }
        cases += 2;
      }
  std::printf("kernel_check: AVX-512 and portable kernels agree bit for bit (%d rows, 1.6e6 exp values)\n", cases);
  return 0;
#endif
}

// network_bindings.cpp -- the quartic 1D density of cpp/kernels/quartic_density.hpp for Python
// (registered into qftml._core by module.cpp; wrapped by qftml.engine.quartic).
//
// Exports (into _core):
//   quartic_integral(alpha, beta, j) -> (logz, m1, m2, m4)   alpha, beta (units,), j (rows, units)
//   quartic_sample(alpha, beta, j, seed, purpose, index0, step) -> (x, attempts)
//       element (r, u) draws with the Philox counter (index0 + r * units + u, step, attempt) under
//       rng_key(seed, purpose): the draw depends on its global index, never on the caller's batch.
//   bernoulli_sample(p, seed, purpose, index0, step) -> x   x_i = 1 if uniform_i < p_i else 0, uniform_i of
//       the Philox counter (index0 + i, step, 0) (cpp/kernels/bernoulli_draws.hpp); x has p's shape
// All release the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "kernels/bernoulli_draws.hpp"
#include "kernels/quartic_density.hpp"
#include "rng/philox.hpp"

namespace py = pybind11;
using Arr = py::array_t<double, py::array::c_style | py::array::forcecast>;

namespace {

void check_args(const Arr& alpha, const Arr& beta, const Arr& j) {
  if (alpha.ndim() != 1 || beta.ndim() != 1 || j.ndim() != 2 || alpha.shape(0) != j.shape(1) ||
      beta.shape(0) != j.shape(1))
    throw py::value_error("quartic density: alpha and beta must have shape (units,), j (rows, units); got " +
                          std::to_string(alpha.size()) + ", " + std::to_string(beta.size()) + " and j with " +
                          std::to_string(j.ndim()) + " dimensions");
}

}  // namespace

void qftml_register_network(py::module_& m) {
  m.def(
      "quartic_integral",
      [](Arr alpha, Arr beta, Arr j) {
        check_args(alpha, beta, j);
        const py::ssize_t rows = j.shape(0), units = j.shape(1);
        Arr logz({rows, units}), m1({rows, units}), m2({rows, units}), m4({rows, units});
        const double *a = alpha.data(), *b = beta.data(), *jj = j.data();
        double *pz = logz.mutable_data(), *p1 = m1.mutable_data(), *p2 = m2.mutable_data(), *p4 = m4.mutable_data();
        {
          py::gil_scoped_release release;
          qftml::quartic_integral_rows(rows, units, a, b, jj, pz, p1, p2, p4);
        }
        return py::make_tuple(logz, m1, m2, m4);
      },
      py::arg("alpha"), py::arg("beta"), py::arg("j"),
      "ln of the integral of exp(-alpha x^2 - beta x^4 + j x) and <x>, <x^2>, <x^4> per element");
  m.def(
      "quartic_sample",
      [](Arr alpha, Arr beta, Arr j, uint64_t seed, uint32_t purpose, uint64_t index0, uint32_t step) {
        check_args(alpha, beta, j);
        const py::ssize_t rows = j.shape(0), units = j.shape(1);
        Arr x({rows, units});
        const double *a = alpha.data(), *b = beta.data(), *jj = j.data();
        double* px = x.mutable_data();
        int64_t attempts;
        {
          py::gil_scoped_release release;
          attempts = qftml::quartic_sample_rows(rows, units, a, b, jj, index0, step, qftml::rng_key(seed, purpose), px);
        }
        return py::make_tuple(x, attempts);
      },
      py::arg("alpha"), py::arg("beta"), py::arg("j"), py::arg("seed"), py::arg("purpose"), py::arg("index0"),
      py::arg("step"), "exact draws from exp(-alpha x^2 - beta x^4 + j x) per element: (x, proposals made)");
  m.def(
      "bernoulli_sample",
      [](Arr p, uint64_t seed, uint32_t purpose, uint64_t index0, uint32_t step) {
        std::vector<py::ssize_t> shape(p.shape(), p.shape() + p.ndim());
        Arr x(shape);
        const double* pp = p.data();
        double* px = x.mutable_data();
        const int64_t n = p.size();
        {
          py::gil_scoped_release release;
          qftml::bernoulli_draw_rows(n, pp, index0, step, qftml::rng_key(seed, purpose), px);
        }
        return x;
      },
      py::arg("p"), py::arg("seed"), py::arg("purpose"), py::arg("index0"), py::arg("step"),
      "binary draws x_i = [uniform_i < p_i], uniform_i of the Philox counter (index0 + i, step, 0)");
}

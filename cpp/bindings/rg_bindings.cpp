// rg_bindings.cpp -- the renormalisation-group kernels of qftml._core (registered by module.cpp).
//
// Exports (Python): block_constrained_sweep(padded, offset, global_shape, b, kappa, a, b4, r, seed,
//                   purpose, sweep, colour, step) -> accepted moves
// `padded` is one rank's block of one configuration in natural order with one ghost layer per
// side (float64, C order, updated in place); see cpp/kernels/block_constrained.hpp.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "kernels/block_constrained.hpp"

namespace py = pybind11;

namespace qftml {

void register_rg(py::module_& m) {
  m.def(
      "block_constrained_sweep",
      [](py::array_t<double, py::array::c_style> padded, std::vector<int64_t> offset,
         std::vector<int64_t> global_shape, int b, double kappa, double a, double b4, double r, uint64_t seed,
         uint32_t purpose, uint64_t sweep, int colour, double step) {
        const int d = static_cast<int>(padded.ndim());
        if (d < 1 || d > kMaxConstrainedDim || static_cast<int>(offset.size()) != d ||
            static_cast<int>(global_shape.size()) != d)
          throw py::value_error("block_constrained_sweep: padded, offset and global_shape need the same 1..4 dims");
        if (b < 2) throw py::value_error("block_constrained_sweep: b must be >= 2");
        if (colour != 0 && colour != 1) throw py::value_error("block_constrained_sweep: colour must be 0 or 1");
        ConstrainedView v;
        v.ndim = d;
        v.phi = padded.mutable_data();
        for (int mu = 0; mu < d; ++mu) {
          v.local[mu] = padded.shape(mu) - 2;
          v.offset[mu] = offset[mu];
          v.global[mu] = global_shape[mu];
          if (v.local[mu] < 1 || v.local[mu] % b || offset[mu] % b || global_shape[mu] % b)
            throw py::value_error("block_constrained_sweep: direction " + std::to_string(mu) +
                                  ": extents and offset must be multiples of b (blocks may not cross ranks)");
        }
        v.b = b;
        v.kappa = kappa, v.a = a, v.bq = b4, v.r = r;
        const PhiloxKey key = rng_key(seed, purpose);
        int64_t acc;
        {
          py::gil_scoped_release release;
          acc = block_constrained_colour(v, colour, key, sweep, step);
        }
        return acc;
      },
      py::arg("padded"), py::arg("offset"), py::arg("global_shape"), py::arg("b"), py::arg("kappa"), py::arg("a"),
      py::arg("b4"), py::arg("r"), py::arg("seed"), py::arg("purpose"), py::arg("sweep"), py::arg("colour"),
      py::arg("step"),
      "Block-constrained pair moves on the blocks of one colour of a padded local block (in place); accepted moves");
}

}  // namespace qftml

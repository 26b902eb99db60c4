// module.cpp -- qftml._core: the only C++ that knows Python.
//
// Exports the classes Lattice, Field, Action, Sampler, the function measure, the RG kernels of
// rg_bindings.cpp (block_constrained_sweep), the engine's Philox
// over arrays for the driver (philox_words, philox_uniform), and helpers for tests
// (philox4x32_10, quartic_chain). Communicators arrive as mpi4py objects and are unwrapped
// with mpi4py's C API (PyMPIComm_Get). Local fields cross as numpy arrays in natural order;
// parity_view gives zero-copy views of the checkerboard storage. Sweeps release the GIL.
#include <mpi.h>
#include <mpi4py/mpi4py.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>

#include "action/action.hpp"
#include "geometry/geometry.hpp"
#include "lattice/field.hpp"
#include "observables/observables.hpp"
#include "rng/philox.hpp"
#include "sampler/sampler.hpp"

namespace py = pybind11;
using namespace qftml;
namespace qftml { void register_rg(py::module_& m); }  // rg_bindings.cpp
using Array = py::array_t<double, py::array::c_style | py::array::forcecast>;

namespace {

MPI_Comm unwrap_comm(py::object comm) {
  if (comm.is_none()) return MPI_COMM_WORLD;
  MPI_Comm* c = PyMPIComm_Get(comm.ptr());
  if (c == nullptr) throw py::error_already_set();
  return *c;
}

std::vector<py::ssize_t> local_shape(const Geometry& g, int trailing = -1) {
  std::vector<py::ssize_t> s(g.local_shape().begin(), g.local_shape().end());
  if (trailing >= 0) s.push_back(trailing);
  return s;
}

void check_shape(const Array& a, const std::vector<py::ssize_t>& want, const char* name) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(want.size());
  for (size_t i = 0; ok && i < want.size(); ++i) ok = a.shape(i) == want[i];
  if (!ok) {
    std::string s = std::string("coupling array ") + name + " must have the local shape (";
    for (size_t i = 0; i < want.size(); ++i) s += (i ? ", " : "") + std::to_string(want[i]);
    s += "), got (";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    throw py::value_error(s + ")");
  }
}

FieldType parse_field_type(const std::string& s) {
  if (s == "real") return FieldType::real;
  if (s == "ising") return FieldType::ising;
  throw py::value_error("field type must be 'real' or 'ising', got '" + s + "'");
}

ClusterAlgorithm parse_cluster(const std::string& s) {
  if (s == "none") return ClusterAlgorithm::none;
  if (s == "swendsen-wang") return ClusterAlgorithm::swendsen_wang;
  if (s == "wolff") return ClusterAlgorithm::wolff;
  throw py::value_error("cluster update must be 'none', 'swendsen-wang' or 'wolff', got '" + s + "'");
}

Algorithm parse_algorithm(const std::string& s) {
  if (s == "metropolis") return Algorithm::metropolis;
  if (s == "independence" || s == "heatbath") return Algorithm::independence;  // heatbath: the old name
  throw py::value_error("sampler algorithm must be 'metropolis' or 'independence', got '" + s + "'");
}

using IndexArray = py::array_t<uint64_t, py::array::c_style | py::array::forcecast>;

// f(i, words) for the Philox block of counter (index[i] lo, hi, c2, c3) under rng_key(seed, purpose).
template <class F>
void philox_blocks(uint64_t seed, uint32_t purpose, const IndexArray& index, uint32_t c2, uint32_t c3, F&& f) {
  const PhiloxKey key = rng_key(seed, purpose);
  const uint64_t* idx = index.data();
  const py::ssize_t n = index.size();
  py::gil_scoped_release release;
  for (py::ssize_t i = 0; i < n; ++i) {
    uint32_t c[4] = {static_cast<uint32_t>(idx[i]), static_cast<uint32_t>(idx[i] >> 32), c2, c3};
    philox4x32_10(c[0], c[1], c[2], c[3], key.k0, key.k1);
    f(i, c);
  }
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  if (import_mpi4py() < 0) throw py::error_already_set();
  m.doc() = "qftml C++ engine: distributed lattice, phi^4 actions, samplers";
  register_rg(m);  // RG kernels: rg_bindings.cpp

  m.def("mpi_library_version", [] {
    char buf[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(buf, &len);
    return std::string(buf, len);
  });

  py::class_<Geometry, std::shared_ptr<Geometry>>(m, "Lattice")
      .def(py::init([](std::vector<int> shape, py::object comm, std::vector<int> grid) {
             return std::make_shared<Geometry>(shape, unwrap_comm(comm), grid);
           }),
           py::arg("shape"), py::arg("comm") = py::none(), py::arg("grid") = std::vector<int>{})
      .def_property_readonly("shape", &Geometry::shape)
      .def_property_readonly("grid", &Geometry::grid)
      .def_property_readonly("coords", &Geometry::coords)
      .def_property_readonly("local_shape", &Geometry::local_shape)
      .def_property_readonly("local_offset", &Geometry::local_offset)
      .def_property_readonly("volume", &Geometry::global_volume)
      .def_property_readonly("local_volume", &Geometry::local_volume)
      .def_property_readonly("rank", &Geometry::rank)
      .def_property_readonly("size", &Geometry::size)
      .def_property_readonly("ndim", &Geometry::dim);

  py::class_<Field, std::shared_ptr<Field>>(m, "Field")
      .def(py::init([](std::shared_ptr<Geometry> g) { return std::make_shared<Field>(*g); }),
           py::arg("lattice"), py::keep_alive<1, 2>())
      .def("set_local",
           [](Field& f, Array x) {
             check_shape(x, local_shape(f.geometry()), "field");
             f.set_local(x.data());
           })
      .def("get_local",
           [](const Field& f) {
             Array out(local_shape(f.geometry()));
             f.get_local(out.mutable_data());
             return out;
           })
      .def("exchange_halos", &Field::exchange_halos)
      .def_property_readonly("bytes", &Field::bytes)
      .def(
          "gather",
          [](const Field& f, int root) -> py::object {
            std::vector<double> all = f.gather(root);
            if (f.geometry().rank() != root) return py::none();
            std::vector<py::ssize_t> shape(f.geometry().shape().begin(), f.geometry().shape().end());
            Array out(shape);
            std::copy(all.begin(), all.end(), out.mutable_data());
            return out;
          },
          py::arg("root") = 0)
      .def(
          "scatter",
          [](Field& f, py::object global, int root) {
            if (f.geometry().rank() == root) {
              Array x = global.cast<Array>();
              std::vector<py::ssize_t> shape(f.geometry().shape().begin(), f.geometry().shape().end());
              check_shape(x, shape, "global field");
              f.scatter(x.data(), root);
            } else {
              f.scatter(nullptr, root);
            }
          },
          py::arg("global_field"), py::arg("root") = 0)
      .def(
          "parity_view",
          [](py::object self, int p) {
            Field& f = self.cast<Field&>();
            const CheckerboardLayout& l = f.layout();
            std::vector<py::ssize_t> shape, strides;
            for (int mu = 0; mu < l.dim(); ++mu)
              shape.push_back(l.padded(mu)), strides.push_back(l.stride(mu) * sizeof(double));
            return py::array_t<double>(shape, strides, f.parity(p & 1), self);
          },
          py::arg("parity"));

  py::class_<Action, std::shared_ptr<Action>>(m, "Action")
      .def(py::init([](std::shared_ptr<Geometry> g, const std::string& field_type,
                       std::vector<std::vector<int>> extra, Array w, Array gg, Array a, Array b,
                       Array r) {
             const int n_extra = static_cast<int>(extra.size());
             check_shape(w, local_shape(*g, g->dim()), "w");
             check_shape(gg, local_shape(*g, n_extra), "g");
             check_shape(a, local_shape(*g), "a");
             check_shape(b, local_shape(*g), "b");
             check_shape(r, local_shape(*g), "r");
             return std::make_shared<Action>(*g, parse_field_type(field_type), extra, w.data(),
                                             gg.data(), a.data(), b.data(), r.data());
           }),
           py::arg("lattice"), py::arg("field_type"), py::arg("extra_offsets"), py::arg("w"),
           py::arg("g"), py::arg("a"), py::arg("b"), py::arg("r"), py::keep_alive<1, 2>())
      .def_property_readonly("homogeneous", &Action::homogeneous)
      .def_property_readonly("bytes", &Action::bytes)
      .def_property_readonly("n_links", &Action::n_links)
      .def_property_readonly("field_type",
                             [](const Action& a) { return a.field_type() == FieldType::ising ? "ising" : "real"; })
      .def_property_readonly("offsets",
                             [](const Action& a) {
                               std::vector<std::vector<int>> o;
                               for (int l = 0; l < a.n_links(); ++l) o.push_back(a.offset(l));
                               return o;
                             })
      .def("action", &Action::action, py::arg("field"), py::call_guard<py::gil_scoped_release>())
      .def("local_action", &Action::local_action, py::arg("field"), py::call_guard<py::gil_scoped_release>())
      .def(
          "density_row",  // columns: [(family 0..4, tied, start)]; row: writable contiguous float64
          [](const Action& act, const Field& f, const std::vector<std::tuple<int, bool, int64_t>>& cols,
             py::array_t<double, py::array::c_style> row) {
            std::vector<DensityColumns> c;
            for (const auto& [fam, tied, start] : cols) c.push_back(DensityColumns{fam, tied, start});
            double* out = row.mutable_data();
            const int64_t size = row.size();
            py::gil_scoped_release release;
            return act.density_row(f, c, out, size);
          },
          py::arg("field"), py::arg("columns"), py::arg("row"))
      .def("gradient_densities",
           [](const Action& act, const Field& f) {
             const Geometry& g = act.geometry();
             Array dw(local_shape(g, g.dim())), dg(local_shape(g, act.n_extra())), da(local_shape(g)),
                 db(local_shape(g)), dr(local_shape(g));
             act.gradient_densities(f, dw.mutable_data(), dg.mutable_data(), da.mutable_data(),
                                    db.mutable_data(), dr.mutable_data());
             py::dict out;
             out["w"] = dw, out["g"] = dg, out["a"] = da, out["b"] = db, out["r"] = dr;
             return out;
           })
      .def("couplings", [](const Action& act) {
        const Geometry& g = act.geometry();
        Array w(local_shape(g, g.dim())), gg(local_shape(g, act.n_extra())), a(local_shape(g)),
            b(local_shape(g)), r(local_shape(g));
        act.get_couplings(w.mutable_data(), gg.mutable_data(), a.mutable_data(), b.mutable_data(),
                          r.mutable_data());
        py::dict out;
        out["w"] = w, out["g"] = gg, out["a"] = a, out["b"] = b, out["r"] = r;
        return out;
      });

  py::class_<Sampler, std::shared_ptr<Sampler>>(m, "Sampler")
      .def(py::init([](std::shared_ptr<Action> a, std::shared_ptr<Field> f, uint64_t seed,
                       const std::string& algorithm, int hits, double step, const std::string& cluster,
                       int cluster_every) {
             return std::make_shared<Sampler>(*a, *f, seed, parse_algorithm(algorithm), hits, step,
                                              parse_cluster(cluster), cluster_every);
           }),
           py::arg("action"), py::arg("field"), py::arg("seed"), py::arg("algorithm") = "metropolis",
           py::arg("hits") = 1, py::arg("step") = 1.0, py::arg("cluster") = "none", py::arg("cluster_every") = 1,
           py::keep_alive<1, 2>(), py::keep_alive<1, 3>())
      .def("randomize", &Sampler::randomize)
      .def("sweep", &Sampler::sweep, py::arg("n") = 1, py::call_guard<py::gil_scoped_release>())
      .def("thermalize", &Sampler::thermalize, py::arg("n"), py::arg("tune") = true,
           py::arg("target_acceptance") = 0.5, py::call_guard<py::gil_scoped_release>())
      .def("acceptance", &Sampler::acceptance)
      .def("reset_counters", &Sampler::reset_counters)
      .def("reset_timers", &Sampler::reset_timers)
      .def_property("sweep_index", &Sampler::sweep_index, &Sampler::set_sweep_index)
      .def_property("step", &Sampler::step, &Sampler::set_step)
      .def_property_readonly("seed", &Sampler::seed)
      .def_property_readonly("hits", &Sampler::hits)
      .def_property_readonly("n_colours", &Sampler::n_colours)
      .def_property("streaming", &Sampler::streaming, &Sampler::set_streaming)
      .def_property_readonly("update_seconds", &Sampler::update_seconds)
      .def_property_readonly("halo_wait_seconds", &Sampler::halo_wait_seconds)
      .def_property_readonly("halo_pack_seconds", &Sampler::halo_pack_seconds)
      // Cluster counters over all ranks as of the last sweep()/thermalize() (local read), its
      // timers (this rank), and the memory of its arrays per site; None without a cluster update.
      .def("cluster_counters",
           [](Sampler& s) -> py::object {
             if (!s.cluster()) return py::none();
             const ClusterCounters& c = s.cluster()->totals();
             py::dict out;
             out["updates"] = c.updates, out["clusters"] = c.clusters, out["flipped"] = c.flipped;
             out["sites"] = c.sites;
             return out;
           })
      .def("cluster_seconds",
           [](Sampler& s) -> py::object {
             if (!s.cluster()) return py::none();
             const ClusterSeconds& c = s.cluster()->seconds();
             py::dict out;
             out["bonds"] = c.bonds, out["labels"] = c.labels, out["merge"] = c.merge, out["flips"] = c.flips;
             return out;
           })
      // Tests: one cluster update alone with RNG counter `sweep` (the field's sweep index is not
      // advanced), counters reduced as after sweep().
      .def(
          "cluster_update",
          [](Sampler& s, uint64_t sweep) {
            if (!s.cluster()) throw py::value_error("this sampler has no cluster update");
            py::gil_scoped_release release;
            s.cluster()->update(sweep);
            s.cluster()->reduce_counters();
          },
          py::arg("sweep"))
      .def_property_readonly("cluster_bytes_per_site",
                             [](Sampler& s) { return s.cluster() ? s.cluster()->bytes_per_site() : 0.0; })
      // Tables and halo buffers of the sweeps on this rank, in bytes.
      .def("memory_bytes", [](const Sampler& s) {
        py::dict out;
        out["tables"] = s.table_bytes(), out["halo"] = s.halo_bytes();
        return out;
      });

  m.def(
      "measure",
      [](const Field& f, const Action& a) {
        Measurement r = measure(f, a);
        py::dict out;
        out["magnetisation"] = r.magnetisation;
        out["sum_phi2"] = r.sum_phi2;
        out["sum_phi4"] = r.sum_phi4;
        out["action"] = r.action;
        out["link_sums"] = py::array_t<double>(r.link_sums.size(), r.link_sums.data());
        out["slice_sums"] = py::array_t<double>(r.slice_sums.size(), r.slice_sums.data());
        return out;
      },
      py::arg("field"), py::arg("action"));

  m.def("philox4x32_10", [](std::array<uint32_t, 4> c, std::array<uint32_t, 2> k) {
    philox4x32_10(c[0], c[1], c[2], c[3], k[0], k[1]);
    return c;
  });
  // Counter (index lo, index hi, c2, c3), key rng_key(seed, purpose): the streams of qftml.engine.rng.
  m.def(
      "philox_words",
      [](uint64_t seed, uint32_t purpose, IndexArray index,
         uint32_t c2, uint32_t c3) {
        py::array_t<uint32_t> out({index.size(), static_cast<py::ssize_t>(4)});
        uint32_t* w = out.mutable_data();
        philox_blocks(seed, purpose, index, c2, c3, [w](py::ssize_t i, const uint32_t* c) {
          for (int j = 0; j < 4; ++j) w[4 * i + j] = c[j];
        });
        return out;
      },
      py::arg("seed"), py::arg("purpose"), py::arg("index"), py::arg("c2") = 0, py::arg("c3") = 0,
      "Philox-4x32-10 words (n, 4) for counters (index, c2, c3) under key (seed, purpose)");
  m.def(
      "philox_uniform",
      [](uint64_t seed, uint32_t purpose, IndexArray index,
         uint32_t c2, uint32_t c3) {
        py::array_t<double> out(index.size());
        double* u = out.mutable_data();
        philox_blocks(seed, purpose, index, c2, c3, [u](py::ssize_t i, const uint32_t* c) { u[i] = uniform52(c[0], c[1]); });
        return out;
      },
      py::arg("seed"), py::arg("purpose"), py::arg("index"), py::arg("c2") = 0, py::arg("c3") = 0,
      "uniform52 of words 0, 1 of the Philox block of each counter (index, c2, c3): doubles in [0, 1)");
  m.def(
      "quartic_chain",
      [](double alpha, double beta, double j, int64_t n, uint64_t seed) {
        py::array_t<double> out(n);
        auto x = out.mutable_unchecked<1>();
        const PhiloxKey key = rng_key(seed, static_cast<uint32_t>(RngPurpose::user));
        int64_t accepted = 0;
        double y = 0.0;
        for (int64_t i = 0; i < n; ++i)
          x(i) = y = quartic_conditional_update(y, alpha, beta, j, 1, 0, sweep_words(static_cast<uint64_t>(i)), key,
                                                &accepted);
        return py::make_tuple(out, double(accepted) / double(n));
      },
      py::arg("alpha"), py::arg("beta"), py::arg("j"), py::arg("n"), py::arg("seed") = 0,
      "n steps of the independence sampler's 1D update for exp(-alpha x^2 - beta x^4 + j x): (samples, acceptance)");
  { void qftml_register_network(py::module_&); qftml_register_network(m); }  // network_bindings.cpp
}

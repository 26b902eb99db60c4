# qftml: `make demo` and `make test` do all set-up on a fresh machine (.venv, MPI from the mpich
# wheel, mpi4py, the C++ build) and then run the flagship demo / the whole test suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
MPIEXEC := $(BIN)/mpiexec
# One MPI run may not outlive this (seconds): a failing rank cannot hang the suite.
MPI_TIMEOUT ?= 900
DEPS := mpich "mpi4py>=4.0" numpy h5py pyerrors tqdm matplotlib scipy pybind11 "scikit-build-core>=0.10" \
        pytest pytest-mpi pytest-timeout numba ruff mpmath scikit-learn
CPP_SOURCES := $(shell find cpp -name '*.cpp' -o -name '*.hpp')

.PHONY: all setup build demo lint test test-serial test-site-mpi site-mpi bench clean

all: build

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.stamp-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check $(DEPS)
	touch $@

$(VENV)/.stamp-build: $(VENV)/.stamp-deps CMakeLists.txt $(CPP_SOURCES)
	$(BIN)/pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
	touch $@

setup: $(VENV)/.stamp-deps
build: $(VENV)/.stamp-build

demo: build
	$(BIN)/python examples/demo.py

# ruff (configured in pyproject.toml) before the build and the tests: seconds, and a lint error fails `make test`
lint: setup
	$(BIN)/ruff check python tests benchmarks examples

test: lint build
	$(BIN)/python tests/run_all.py --timeout $(MPI_TIMEOUT)

test-serial: build
	$(BIN)/python -m pytest --with-mpi -q tests

# The cluster user's stack (README "Building against a site MPI"): Debian's MPICH and parallel HDF5
# (root: .ci/install-system-packages), mpi4py and h5py (HDF5_MPI=ON) from source, qftml with MPI_HOME,
# in $(SITE_VENV); then the ensemble, checkpoint, restart and fault tests on the collective mpio
# write path, serially and under mpiexec -n 2 and -n 4. QFTML_REQUIRE_MPIO: h5py without MPI fails the
# run (never a skip); QFTML_WRITE_PATH=mpio: every file is written collectively, also by one rank and
# by the `mpiexec -n 2 qftml ...` subprocesses of the fault tests (tests that compare both write
# paths choose each explicitly). .ci/run calls test-site-mpi (stage site-mpi).
SITE_VENV := .venv-site
SITE_TIMEOUT ?= 900
SITE_TESTS := tests/test_ensemble_io.py tests/test_checkpoint.py tests/test_sample_command.py \
              tests/test_faults_files.py tests/test_faults_input.py

$(SITE_VENV)/.stamp-site: README.md pyproject.toml CMakeLists.txt $(CPP_SOURCES) .ci/site-mpi-build
	PYTHON=$(PYTHON) .ci/site-mpi-build $(SITE_VENV)
	$(SITE_VENV)/bin/pip install -q --disable-pip-version-check pytest pytest-mpi pytest-timeout
	touch $@

site-mpi: $(SITE_VENV)/.stamp-site

test-site-mpi: site-mpi
	QFTML_REQUIRE_MPIO=1 QFTML_WRITE_PATH=mpio $(SITE_VENV)/bin/python tests/run_all.py --label site-mpi --timeout $(SITE_TIMEOUT) \
	    $(SITE_TESTS)

bench: build
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf build $(VENV) $(SITE_VENV) python/qftml/_core*.so

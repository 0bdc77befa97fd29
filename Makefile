# make demo  -- set up .venv, build hesskit, run the layerwise-eigenspectra study on the embedded MNIST sample
# make test  -- set up .venv, build hesskit, run the test suite
# make docs  -- set up .venv, build hesskit, build the HTML documentation (docs/_build/html)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEPS   := $(VENV)/.deps-installed
BUILT  := $(VENV)/.hesskit-built
DOCS_DEPS := $(VENV)/.docs-deps-installed
NATIVE_SOURCES := $(wildcard csrc/*.cpp csrc/cpu/*.cpp csrc/cuda/*.cpp csrc/cuda/*.cu csrc/*.h csrc/cpu/*.h)

.PHONY: all install demo test docs bench cuda-check clean

all: install

$(PY):
	$(PYTHON) -m venv $(VENV)

$(DEPS): requirements-dev.txt | $(PY)
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

# --no-build-isolation: compile hesskit._C against the torch in .venv.
$(BUILT): $(DEPS) setup.py pyproject.toml $(NATIVE_SOURCES)
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

install: $(BUILT)

demo: install
	$(PY) examples/layer_spectra.py

test: install
	$(PY) -m pytest -q -p no:cacheprovider

# Warnings are errors; the gallery scripts run on one thread (tiny models run fastest so).
$(DOCS_DEPS): requirements-docs.txt $(DEPS)
	$(PY) -m pip install -q -r requirements-docs.txt
	touch $@

docs: install $(DOCS_DEPS)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} MPLBACKEND=Agg $(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html
	@echo "documentation: docs/_build/html/index.html"

bench: install
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

# Compile every pure-CUDA kernel file with nvcc alone (sm_80, sm_90): no GPU needed.
cuda-check:
	cmake -S . -B build-cuda -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build build-cuda -j 2

clean:
	rm -rf build build-cuda *.egg-info hesskit/_C*.so
	rm -rf docs/_build docs/api/generated docs/auto_gallery docs/sg_execution_times.rst

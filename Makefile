# Two entry points, both self-installing on a fresh machine:
#   make run    -- the main job: a short offline baseline-vs-WC comparison
#   make test   -- the test suite (what CI runs)
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: install install-keras-oldest run test test-fast test-tensorflow test-jax test-torch test-keras-oldest bench lint docs dist clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-nodeps.txt setup.cfg setup.py pyproject.toml keras_wc/native/kernels.c
	@if [ -z "$$(ls /usr/share/datasets/fashion-mnist/*.gz 2>/dev/null)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
	      || echo "note: dataset-fashion-mnist not installed; Fashion-MNIST runs fall back"; \
	  else \
	    echo "note: run 'sudo apt-get install dataset-fashion-mnist' for offline Fashion-MNIST"; \
	  fi; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

run: install
	$(PY) -m train $(ARGS)

# The suite once per Keras backend (KERAS_BACKEND is fixed per process):
# TensorFlow and JAX in full, PyTorch on the backend-dependent core (the
# CLI parsing, report, data, lint and bench tests do not depend on it).
TORCH_TESTS := tests/layers tests/test_backends.py tests/test_companders.py \
	tests/test_conversion.py tests/test_folding.py tests/test_initialization.py \
	tests/test_native.py \
	tests/test_optimizers.py tests/test_optimizer_options.py tests/test_reach.py \
	tests/test_callbacks.py tests/test_export.py tests/models \
	tests/train/test_run.py tests/train/test_finetune.py \
	tests/test_round_trips.py tests/test_internals.py tests/test_distribution.py \
	tests/test_compose.py tests/test_saved_fixtures.py

# Each backend in turn, then the oldest supported Keras (stopping at the
# first that fails), then the time each took.
test: install
	@status=0; times=""; \
	for run in tensorflow jax torch keras-oldest; do \
	  start=$$(date +%s); \
	  $(MAKE) --no-print-directory test-$$run || status=$$?; \
	  times="$$times $$run $$(( $$(date +%s) - start ))"; \
	  [ $$status = 0 ] || break; \
	done; \
	echo "make test: seconds per run:$$times"; \
	exit $$status

# The inner loop: every module's tests on TensorFlow, without those marked
# slow (a few minutes). CI runs everything (`make test`).
test-fast: install
	KERAS_BACKEND=tensorflow $(PY) -m pytest -n 2 -m "not slow" $(ARGS)

test-tensorflow: install
	KERAS_BACKEND=tensorflow $(PY) -m pytest -n 2 $(ARGS)

test-jax: install
	KERAS_BACKEND=jax $(PY) -m pytest -n 2 $(ARGS)

test-torch: install
	KERAS_BACKEND=torch $(PY) -m pytest -n 2 $(TORCH_TESTS) $(ARGS)

# The oldest Keras keras-wc supports (setup.cfg's `keras>=`, README): a
# venv with only that Keras in it, seeing every other package of $(VENV)
# (its site-packages is added after its own), so it costs one small
# download. The contract tests of keras_wc.internals and a documented
# subset of the suite run on it (TensorFlow, about a minute): the `.keras`
# fixtures are left out, Keras not loading files saved by a newer Keras.
KERAS_OLDEST := 3.12.0
OLDEST_VENV := .venv-keras-oldest
OLDEST_TESTS := tests/test_internals.py tests/layers/test_wc_layers.py \
	tests/test_optimizers.py

install-keras-oldest: $(OLDEST_VENV)/.installed

$(OLDEST_VENV)/.installed: $(VENV)/.installed Makefile
	rm -rf $(OLDEST_VENV)
	$(PYTHON) -m venv $(OLDEST_VENV)
	base=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	own=$$($(OLDEST_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	echo "import site; site.addsitedir('$$base')" > $$own/keras_wc_base.pth
	$(OLDEST_VENV)/bin/python -m pip install -q --no-deps keras==$(KERAS_OLDEST)
	$(OLDEST_VENV)/bin/python -c 'import keras; assert keras.__version__ == "$(KERAS_OLDEST)", keras.__version__'
	touch $@

test-keras-oldest: install-keras-oldest
	KERAS_BACKEND=tensorflow $(OLDEST_VENV)/bin/python -m pytest -n 2 $(OLDEST_TESTS) $(ARGS)

bench: install
	for b in tensorflow jax torch; do KERAS_BACKEND=$$b $(PY) -m bench $(ARGS) || exit 1; done

lint: install
	$(PY) -m ruff check keras_wc models train bench tests pip_build.py setup.py

# The documentation site into site/ (mkdocs.yml), warnings as errors.
docs: install
	NO_MKDOCS_2_WARNING=1 TF_CPP_MIN_LOG_LEVEL=3 $(PY) -m mkdocs build --strict

# The sdist and the wheels, into dist/ (pip_build.py): the manylinux wheel
# with the fused C kernels and the pure-Python wheel for other platforms.
dist: install
	$(PY) pip_build.py

clean:
	rm -rf $(VENV) $(OLDEST_VENV) *.egg-info dist site

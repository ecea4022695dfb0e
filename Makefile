# Two entry points, both self-installing on a fresh machine:
#   make run    -- the main job: a short offline baseline-vs-WC comparison
#   make test   -- the test suite (what CI runs)
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: install run test bench lint clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-nodeps.txt setup.cfg pyproject.toml
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

test: install
	$(PY) -m pytest -n 2 $(ARGS)

bench: install
	for b in tensorflow jax torch; do KERAS_BACKEND=$$b $(PY) -m bench $(ARGS) || exit 1; done

lint: install
	$(PY) -m ruff check keras_wc models train bench tests

clean:
	rm -rf $(VENV) *.egg-info

# The two commands of the README: `make demo` and `make test`.
# Each creates the virtual environment and builds what it needs.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: venv image demo test stress bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3 -m venv failed; installing python3-venv"; \
	  apt-get install -y -qq python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); }
	@# compat mode: a plain path in a .pth file; the default editable mode installs an
	@# import hook that costs every `minicontainer` command ~15 ms at start-up
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]' --config-settings editable_mode=compat
	@touch $@

# The demo image: a docker-save archive built from rootfs/ and a static busybox.
build/demo.tar: $(VENV)/.installed $(shell find rootfs -type f 2>/dev/null) minicontainer/demo.py
	$(PY) -m minicontainer.demo build $@

image: build/demo.tar

demo: image
	$(PY) -m minicontainer.demo tour build/demo.tar

test: image
	$(PY) -m pytest -q tests

# The stress and fault suite in its long form (`make test` runs its short form):
# 200 sequential runs, more kill points, more execs. Bounded: killed after 30 minutes.
stress: image
	MINICONTAINER_STRESS=full timeout --signal=INT --kill-after=60 1800 \
	  $(PY) -m pytest -q -rxs tests/stress -m stress

# Side by side with runc, podman and the floors (results under build/bench/).
# runc and podman come from Debian's packages (bench/run.py installs them when
# missing); the chart needs matplotlib, the table does not.
bench: image
	@$(PY) -m pip install -q --disable-pip-version-check matplotlib \
	  || echo "matplotlib not installed: the benchmark prints its table without a chart"
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf build $(VENV)

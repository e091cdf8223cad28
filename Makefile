# The README's two commands. Both create .venv on first use and install raykd into it.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.raykd-installed
# torch is pinned to the release these machines carry on disk; a newer one downloads GBs.
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: quickstart test install bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "raykd needs Python >= 3.11; set PYTHON=python3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/raykd run conf/quickstart.yaml

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/step_overhead.py
	$(PY) bench/ray_overhead.py
	$(PY) bench/quickstart_time.py
	$(PY) bench/gpu_packing.py
	$(PY) bench/skd.py
	$(PY) bench/dtskd.py
	$(PY) bench/mtkd_ssr.py
	$(PY) bench/baselines.py
	$(PY) bench/stream.py

clean:
	rm -rf runs .pytest_cache

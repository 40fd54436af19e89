# tff-byz: `make demo` runs the main job, `make test` runs the test suite.
# Both create the pinned environment in .venv first (idempotent).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OUT ?= runs

.PHONY: install demo demo-compare test bench clean

install: $(STAMP)

# TFF 0.87 pins jax/jaxlib 0.4.14, which PyPI does not serve: install its
# dependencies from requirements.txt + constraints.txt (jax 0.4.13), then TFF
# itself with --no-deps. See BUILD_NOTES.md.
$(STAMP): requirements.txt constraints.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -c constraints.txt tensorflow-federated
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The headline: PDMM under a Byzantine attack (20% of 10 clients replace their message by
# Gaussian noise) on the embedded dataset, beside FedAvg on the same settings (its attackers
# corrupt the uploaded model, a model-sized message like PDMM's y).
demo: install
	$(PY) -m pipelines.train --aggregator=pdmm --baseline=mean --dataset=digits \
	  --num_clients=10 --byzantine_fraction=0.2 --attack=gaussian --attack_message=model \
	  --local_steps=10 --batch_size=64 --client_lr=0.05 --rounds=30 \
	  --output_dir=$(OUT)/demo --run_name=pdmm_digits --overwrite

# The comparison workflow: a grid (3 defences x 3 attacks x 2 seeds on the embedded dataset),
# resumable (rerun to continue), then tables and plots in $(OUT)/quick/report.
demo-compare: install
	$(PY) -m pipelines.compare examples/quick.toml --output_dir=$(OUT)/quick
	$(PY) -m pipelines.report $(OUT)/quick

# Two test processes (pytest-xdist), each with its own TFF worker, one per core of a
# 2-core machine; --dist loadfile keeps a file's tests (and its module fixtures) together.
test: install
	$(PY) -m pytest -q -n 2 --dist loadfile tests

bench: install
	$(PY) -m benchmarks.throughput

clean:
	rm -rf $(VENV) *.egg-info

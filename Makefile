# Two entry points (README): `make demo` runs the main job on the shipped defaults,
# `make test` runs the test suite. Both create or refresh .venv themselves.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# Offline, headless, loopback-only: the same environment for the demo, the tests and CI.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MUJOCO_GL := egl
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export PYTHONDONTWRITEBYTECODE := 1
PYTEST_ARGS ?=
# Caches written while running (Hugging Face datasets, Mesa shaders, matplotlib) stay in the
# checkout instead of the home folder; the set-up's pip cache is left where pip keeps it.
RUN := XDG_CACHE_HOME=$(CURDIR)/.cache MPLCONFIGDIR=$(CURDIR)/.cache/matplotlib

.PHONY: env demo test test-fast bench retrain-lift retrain-token-vla bench-steering-effect lock clean

env:
	@bash scripts/setup_env.sh

demo: env
	$(RUN) $(PY) -m embodied_steer.cli eval env=lift policy=lift_diffusion episodes=20 seed=1000 torch_threads=1 output_dir=outputs/demo

test: env
	$(RUN) $(PY) -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS)

test-fast: env
	$(RUN) $(PY) -m pytest -q -n 2 --dist loadfile -m "not slow" $(PYTEST_ARGS)

bench: env
	$(RUN) $(PY) benchmarks/bench_env_speed.py
	$(RUN) $(PY) benchmarks/bench_policy_inference.py
	$(RUN) $(PY) benchmarks/bench_base_policy_success.py

# Re-create the shipped base policy from scratch (demonstrations, then training); see README.
retrain-lift: env
	$(RUN) bash scripts/retrain_base_policy.sh lift

# Re-create the shipped small token VLA (300 demos ~2.5 min, then <= 4000 steps / 22 min on 1 thread).
retrain-token-vla: env
	$(RUN) bash scripts/retrain_token_vla.sh

# Steering effect on the token VLA against random-neuron controls (~45 min on a loaded 2-core machine).
bench-steering-effect: env
	$(RUN) $(PY) benchmarks/bench_steering_effect.py --episodes 30 --out outputs/bench_steering

lock: env
	$(PY) -m pip freeze --exclude-editable | grep -v '^embodied' > requirements/constraints.txt.new
	@echo "review and move requirements/constraints.txt.new over requirements/constraints.txt"

clean:
	rm -rf outputs .pytest_cache

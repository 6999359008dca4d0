# The two README commands: `make track` (the whole track, headless) and `make test`.
# Both create or reuse .venv and install what they need (scripts/setup_env.sh).
VENV    ?= .venv
PROFILE ?= tiny-cpu
RUN     ?= tiny
ARGS    ?=
LATEST  ?=
PY      := $(VENV)/bin/python

# The embedded profile never touches the network; hub profiles may download their model.
ifeq ($(PROFILE),tiny-cpu)
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
endif

.PHONY: setup track test test-unit bench clean-runs

setup:
	@LATEST=$(LATEST) bash scripts/setup_env.sh

track: setup
	$(OFFLINE) $(PY) -m course_lib.track --profile $(PROFILE) --name $(RUN) $(ARGS)

test: setup
	@bash scripts/install_browser.sh
	@bash scripts/run_tests.sh $(ARGS)

# Library tests only (seconds to a few minutes); no notebooks, no browser.
test-unit: setup
	@bash scripts/run_tests.sh -m "not notebooks and not slow and not browser" $(ARGS)

# The benchmark suite (about 10 minutes on 2 cores; PROFILE=gpu-qlora on a GPU):
# docs/results/benchmarks.json and docs/benchmarks.md. ARGS="--track-run runs/tiny" adds the track's time.
bench: setup
	$(OFFLINE) $(PY) benchmarks/run.py --profile $(PROFILE) $(ARGS)

clean-runs:
	rm -rf runs

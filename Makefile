# Two entry points, both self-installing into .venv (see README).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# CPU torch by default; on a GPU machine: make TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" ...
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.samzoo-installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, so nothing later can pull a CUDA build in (constraints.txt pins it).
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/samzoo demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache

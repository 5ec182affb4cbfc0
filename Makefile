# make demo: pre-train MAE briefly on Fashion-MNIST (CPU, minutes) and show k-NN before/after.
# make test: install everything and run the linters and the test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
FMNIST := /usr/share/datasets/fashion-mnist
DEMO   ?= runs/demo

.PHONY: setup data test lint demo bench clean

setup: $(VENV)/.installed data

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

# Fashion-MNIST comes from Debian's dataset-fashion-mnist package; installed when we are root.
data:
	@if [ -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "Fashion-MNIST is not in $(FMNIST): run 'sudo apt-get install -y dataset-fashion-mnist'" \
		     "or set data.source to a folder holding its IDX files." >&2; \
	fi

lint: $(VENV)/.installed
	$(BIN)/ruff check mim tests

test: setup lint
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BIN)/python -m pytest -q

demo: setup
	$(BIN)/mim pretrain --method mae --out $(DEMO)/mae
	$(BIN)/mim evaluate --encoder $(DEMO)/mae/encoder.safetensors --baseline --out $(DEMO)/mae/eval.json

bench: $(VENV)/.installed
	$(BIN)/mim bench pretrain --method mae --model tiny --image-size 32 --patch-size 4 --batch 64

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache

# make demo: `dvc repro` the default pipeline on Fashion-MNIST (CPU, minutes) and show the metrics.
# make bench-table: the bench-cpu params set (the demo's recipes, 3 seeds, fine-tuning, 95 % intervals) -> bench/.
# make test: install everything and run the linters and the test suite.
# make setup installs the library with every extra (pipeline, teacher, dev), at the versions constraints.txt pins.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
FMNIST := /usr/share/datasets/fashion-mnist
# dvc runs each stage's `mim ...` command through the shell: this environment's tools come first.
RUN    := PATH="$(CURDIR)/$(BIN):$$PATH"

.PHONY: setup data test lint demo bench bench-table up down clean

setup: $(VENV)/.installed data

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[pipeline,teacher,dev]'
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
	$(BIN)/ruff check mim flows tasks tests

test: setup lint
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BIN)/python -m pytest -q

demo: setup
	$(RUN) $(BIN)/mim params check
	$(RUN) $(BIN)/dvc repro
	@echo; echo "== reports/comparison.md (dvc metrics show has every value) =="
	@sed -n '/^| method/,/^$$/p' reports/comparison.md
	@echo; echo "Pictures: reports/*.png (accuracy, accuracy vs time, feature maps, reconstructions)," \
	     "plots/diversity/*.png, models/tokenizer/centroids.png; all charts: dvc plots show"

# The benchmark table: switch params/ to the bench-cpu set, `dvc repro`, keep the report in bench/ (with its wall
# time), then switch back to cpu-demo, which params/ must equal beforehand: edits of yours stop it rather than being
# replaced (commit or stash them, or run `mim params use bench-cpu && dvc repro` yourself). The two sets differ only
# in pipeline.yaml (seeds 0-2 and fine-tuning at each), so after `make demo` seed 0's pre-training and evaluation
# stay cached.
bench-table: setup
	@for f in params/sets/cpu-demo/*.yaml; do cmp -s $$f params/$$(basename $$f) || { \
		echo "params/$$(basename $$f) differs from params/sets/cpu-demo: commit or stash your edits first" >&2; \
		exit 1; }; done
	$(BIN)/mim params use bench-cpu
	@start=$$(date +%s); $(RUN) $(BIN)/dvc repro; status=$$?; \
	$(BIN)/mim params use cpu-demo; \
	if [ $$status -ne 0 ]; then echo "dvc repro failed; params/ is the cpu-demo set again" >&2; exit $$status; fi; \
	rm -rf bench && cp -r reports bench && \
	echo "Wall time of \`make bench-table\`: $$(( ($$(date +%s) - start) / 60 )) min on $$(nproc) CPU cores" \
		"($$(date -u +%Y-%m-%d))." >> bench/comparison.md
	@echo; echo "== bench/comparison.md =="; sed -n '/^| method/,/^$$/p' bench/comparison.md; tail -n 1 bench/comparison.md

up: $(VENV)/.installed
	$(BIN)/mim up

down: $(VENV)/.installed
	$(BIN)/mim down

bench: $(VENV)/.installed
	$(BIN)/mim bench pretrain --method mae --model tiny --image-size 32 --patch-size 4 --batch 64

clean:
	rm -rf runs .pytest_cache .ruff_cache

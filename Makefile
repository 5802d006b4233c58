# onnxprune: `make demo` and `make test` work from a fresh clone; both install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
OUT := out

# The edge pipeline: `make edge MODEL=path.onnx DATA=eval.npz` compresses and fails on a broken budget.
MODEL ?= fixtures/digits_cnn.onnx
DATA ?= fixtures/digits_cnn-eval.npz
SPARSITY ?= 0.5
MAX_DROP ?= 0.01

.PHONY: install test demo fixtures lint edge clean

install: $(STAMP)

# torch is pinned to the local CPU build (an unpinned torch pulls a multi-GB CUDA build).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

demo: install
	mkdir -p $(OUT)
	$(BIN)/onnxprune compress fixtures/digits_cnn.onnx --target-sparsity 0.5 --scope global \
		--data fixtures/digits_cnn-eval.npz -o $(OUT)/digits_cnn.pruned.onnx \
		--report $(OUT)/digits_cnn.report.json
	$(BIN)/onnxprune compress fixtures/adult_mlp.onnx --target-sparsity 0.5 \
		--data fixtures/adult_mlp-eval.npz -o $(OUT)/adult_mlp.pruned.onnx \
		--report $(OUT)/adult_mlp.report.json --max-accuracy-drop 0.02 --max-group-drop 0.03

edge: install
	mkdir -p $(OUT)
	$(BIN)/onnxprune compress $(MODEL) --target-sparsity $(SPARSITY) --data $(DATA) \
		-o $(OUT)/$(notdir $(basename $(MODEL))).edge.onnx \
		--report $(OUT)/$(notdir $(basename $(MODEL))).edge.report.json \
		--max-accuracy-drop $(MAX_DROP)

fixtures: install
	$(BIN)/python fixtures/build.py

lint: install
	$(BIN)/ruff check onnxprune cli tests fixtures

clean:
	rm -rf $(OUT) .pytest_cache

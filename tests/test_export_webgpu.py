"""The explorer's WebGPU graph (edgevit.export.webgpu) without a GPU: what the page is handed is
complete and fits WebGPU's limits. Its numbers are checked in Chromium (test_demo_browser_webgpu)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from edgevit.export import capture
from edgevit.export.webgpu import ALIGN, INPUTS, OUTPUTS, webgpu_graph
from edgevit.graph import probe_input
from edgevit.weights import ModelFile

WEBGPU_DEFAULT_STORAGE_BUFFERS = 8  # maxStorageBuffersPerShaderStage every WebGPU adapter has


@pytest.fixture(scope="module")
def model(tiny_weights) -> ModelFile:
    return ModelFile.open(tiny_weights)


@pytest.fixture(scope="module")
def gpu(model):
    return webgpu_graph(model)


def test_every_step_runs_a_wgsl_kernel_over_buffers_that_exist(gpu):
    m = gpu.manifest
    for step in m["steps"]:
        kernel = m["kernels"][step["kernel"]]
        assert re.search(rf"@compute @workgroup_size\([\d,]+\) fn {kernel['entry']}\(", kernel["source"])
        # binding 0 is the infinity uniform; then one storage buffer per step buffer, in order
        bindings = [int(b) for b in re.findall(r"@binding\((\d+)\)", kernel["source"])]
        assert bindings == list(range(len(step["buffers"]) + 1))
        assert all(0 <= b < len(m["buffers"]) for b in step["buffers"])
        assert len(step["workgroups"]) == 3 and min(step["workgroups"]) >= 1
        assert len(step["buffers"]) <= WEBGPU_DEFAULT_STORAGE_BUFFERS


def test_inputs_are_read_and_every_output_is_written(gpu):
    m = gpu.manifest
    assert set(m["roles"]) == {*INPUTS, *OUTPUTS}
    used = {b for step in m["steps"] for b in step["buffers"]}
    assert {m["roles"][r] for r in (*INPUTS, *OUTPUTS)} <= used
    # a step's first buffer is the one it writes: every output's last writer is a step of the graph
    written = {step["buffers"][0] for step in m["steps"]}
    assert {m["roles"][r] for r in OUTPUTS} <= written


def test_weights_keep_their_stored_bytes_at_aligned_offsets(gpu, model):
    m = gpu.manifest
    weights = [b for b in m["buffers"] if b["role"] == "weight"]
    assert len(gpu.weights) == m["weights_bytes"] == sum(b["bytes"] for b in weights)
    assert all(b["offset"] % ALIGN == 0 and b["bytes"] % ALIGN == 0 for b in m["buffers"] if "offset" in b)
    # the same constants the C export embeds, byte for byte
    graph = capture.capture(model, probe_input(model.config, 1), inspect=True)
    for entry, buf in zip(m["buffers"], graph.buffers, strict=True):
        if entry["role"] == "weight":
            stored = np.frombuffer(gpu.weights, buf.dtype, buf.count, entry["offset"])
            np.testing.assert_array_equal(stored, buf.data.reshape(-1)[: buf.count])


def test_normalisation_is_the_float32_one_of_the_c(gpu, model):
    scale, mean, std = np.float32([1 / 255, model.mean, model.std])
    assert gpu.manifest["normalize"] == {"scale": float(scale), "mean": float(mean), "std": float(std)}

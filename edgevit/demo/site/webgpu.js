// The WebGPU engine: the graph edgevit.wasm runs, as the WGSL kernels tinygrad compiled for WebGPU
// (edgevit/export/webgpu.py writes webgpu.json and webgpu.bin). Every buffer of the graph is a GPU
// buffer of its own and the weights are uploaded once; one image is one command buffer: the input and
// the knock-out mask written, every step dispatched in order in one compute pass (each dispatch sees
// the writes of the ones before it), the outputs copied into one buffer the page maps and reads.

const FORMAT = 1; // the manifest layout this file reads (edgevit/export/webgpu.py FORMAT)
const OUTPUTS = ["probs", "attention", "query", "key", "value", "scores"];
const UNIFORM_BYTES = 16; // binding 0 of every kernel: one f32, infinity (a uniform's smallest size)

/** The adapter this page would run on, or null: {adapter, name, fallback (a CPU emulation such as
 * SwiftShader, slower than WebAssembly)}. */
export async function findAdapter() {
  if (!navigator.gpu) return null; // no WebGPU in this browser, or the page is not a secure context
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" }).catch(() => null);
  if (!adapter) return null;
  const info = adapter.info ?? {};
  const name = [info.vendor, info.architecture, info.description].filter(Boolean).join(" ") || "unnamed adapter";
  return { adapter, name, fallback: Boolean(info.isFallbackAdapter ?? adapter.isFallbackAdapter) };
}

async function fetchOk(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response;
}

/** One bind group layout per kernel: the infinity uniform, then its storage buffers. */
function kernelLayout(device, storage) {
  const entries = [{ binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: "uniform" } }];
  for (let i = 1; i <= storage; i++) entries.push({ binding: i, visibility: GPUShaderStage.COMPUTE, buffer: { type: "storage" } });
  return device.createBindGroupLayout({ entries });
}

/** Everything the steps need on the device: buffers (weights uploaded), pipelines, bind groups. */
async function prepare(device, manifest, weights) {
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  const buffers = manifest.buffers.map((b) => device.createBuffer({ size: b.bytes, usage, label: b.name }));
  manifest.buffers.forEach((b, i) => {
    if (b.role === "weight") device.queue.writeBuffer(buffers[i], 0, weights, b.offset, b.bytes);
  });
  const infinity = device.createBuffer({ size: UNIFORM_BYTES, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(infinity, 0, new Float32Array([Infinity, 0, 0, 0]));
  const storage = manifest.kernels.map((_, k) => manifest.steps.find((s) => s.kernel === k)?.buffers.length ?? 0);
  const layouts = storage.map((n) => kernelLayout(device, n));
  // compiled in parallel; a kernel the browser's WGSL compiler refuses rejects here, by name
  const pipelines = await Promise.all(
    manifest.kernels.map((k, i) =>
      device.createComputePipelineAsync({
        label: k.entry,
        layout: device.createPipelineLayout({ bindGroupLayouts: [layouts[i]] }),
        compute: { module: device.createShaderModule({ code: k.source, label: k.entry }), entryPoint: k.entry },
      }),
    ),
  );
  const steps = manifest.steps.map((s) => ({
    pipeline: pipelines[s.kernel],
    workgroups: s.workgroups,
    group: device.createBindGroup({
      layout: layouts[s.kernel],
      entries: [{ binding: 0, resource: { buffer: infinity } }, ...s.buffers.map((b, i) => ({ binding: i + 1, resource: { buffer: buffers[b] } }))],
    }),
  }));
  return { buffers, steps };
}

/** The engine: run(pixels (784 on [0, 255]), mask (T floats, 1: knocked out)) -> Promise of the
 * outputs {probs, attention, query, key, value, scores (Float32Array), ms}. Runs one at a time. */
export async function loadWebGPU(config, adapter) {
  const [manifest, weights] = await Promise.all([
    fetchOk(config.webgpu.graph).then((r) => r.json()),
    fetchOk(config.webgpu.weights).then((r) => r.arrayBuffer()),
  ]);
  if (manifest.format !== FORMAT || manifest.model_id !== config.model_id || weights.byteLength !== manifest.weights_bytes) {
    throw new Error(`${config.webgpu.graph} does not belong to this model or this page`);
  }
  const widest = Math.max(...manifest.steps.map((s) => s.buffers.length));
  if (widest > adapter.limits.maxStorageBuffersPerShaderStage) {
    throw new Error(`a kernel binds ${widest} buffers; this adapter allows ${adapter.limits.maxStorageBuffersPerShaderStage}`);
  }
  const device = await adapter.requestDevice({ requiredLimits: { maxStorageBuffersPerShaderStage: widest } });
  device.pushErrorScope("validation");
  const { buffers, steps } = await prepare(device, manifest, weights);
  const error = await device.popErrorScope();
  if (error) throw new Error(`WebGPU refused the graph: ${error.message}`);

  const roles = manifest.roles;
  const outputs = OUTPUTS.map((role) => ({ role, buffer: buffers[roles[role]], ...manifest.buffers[roles[role]] }));
  let offset = 0;
  for (const out of outputs) [out.offset, offset] = [offset, offset + out.bytes];
  const readback = device.createBuffer({ size: offset, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const { scale, mean, std } = manifest.normalize;
  const f = Math.fround;
  const input = new Float32Array(manifest.buffers[roles.input].count);

  async function once(pixels, mask) {
    // the training normalisation in float32 steps, as edgevit_normalize in the C
    for (let i = 0; i < input.length; i++) input[i] = f(f(f(f(pixels[i]) * scale) - mean) / std);
    const start = performance.now();
    device.queue.writeBuffer(buffers[roles.input], 0, input);
    device.queue.writeBuffer(buffers[roles.knockout], 0, Float32Array.from(mask));
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    for (const s of steps) {
      pass.setPipeline(s.pipeline);
      pass.setBindGroup(0, s.group);
      pass.dispatchWorkgroups(...s.workgroups);
    }
    pass.end();
    for (const out of outputs) encoder.copyBufferToBuffer(out.buffer, 0, readback, out.offset, out.bytes);
    device.queue.submit([encoder.finish()]);
    await readback.mapAsync(GPUMapMode.READ);
    const mapped = readback.getMappedRange();
    const result = Object.fromEntries(outputs.map((o) => [o.role, new Float32Array(mapped.slice(o.offset, o.offset + 4 * o.count))]));
    readback.unmap();
    return { ...result, ms: performance.now() - start };
  }

  let queue = Promise.resolve(); // one readback buffer: runs wait for the one before
  let lost = null;
  device.lost.then((info) => (lost = info.message || "the GPU device was lost"));
  return {
    run(pixels, mask) {
      if (lost) return Promise.reject(new Error(`WebGPU: ${lost}`));
      const job = queue.then(() => once(pixels, mask));
      queue = job.catch(() => {});
      return job;
    },
  };
}

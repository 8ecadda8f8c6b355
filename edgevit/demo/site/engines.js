// What runs the model: WebAssembly (edgevit.wasm, the exported C) in every browser, WebGPU (webgpu.js,
// the same graph's kernels as WGSL) where the browser has a GPU adapter. Both compute the same graph;
// the answer rule (the "not a digit" threshold, the confidence) is the C's edgevit_answer for both.
//
// The engine at start: ?engine=wasm or ?engine=webgpu in the URL; otherwise WebGPU when the adapter is
// a real GPU, WebAssembly when it is a CPU emulation (slower than WebAssembly) or there is none.

import { findAdapter, loadWebGPU } from "./webgpu.js";

const MODEL_JSON = "model.json";
export const ENGINE_NAMES = { wasm: "WebAssembly", webgpu: "WebGPU" };
const OUTPUTS = ["probs", "attention", "query", "key", "value", "scores"];

/** The WebAssembly module: {run(pixels, mask) -> outputs (synchronously), answer(probs)}. */
async function loadWasm(config) {
  const wasm = fetch(config.wasm);
  // instantiateStreaming compiles while downloading, but needs the server's application/wasm type
  const { instance } = await WebAssembly.instantiateStreaming(wasm, {}).catch(async () =>
    WebAssembly.instantiate(await (await fetch(config.wasm)).arrayBuffer(), {}),
  );
  const exports = instance.exports;
  const t = config.tokens;
  const attentionSize = config.depth * config.heads * t * t;
  const qkvSize = config.depth * config.heads * t * config.head_dim;
  if (
    exports.edgevit_num_classes() !== config.num_classes ||
    exports.edgevit_attention_size() !== attentionSize ||
    exports.edgevit_qkv_size() !== qkvSize
  ) {
    throw new Error(`${config.wasm} does not match ${MODEL_JSON} (classes, attention or query shape)`);
  }
  // the module has no allocator, so its memory never grows and these views stay valid
  const view = (pointer, length) => new Float32Array(exports.memory.buffer, pointer, length);
  const b = {
    pixels: view(exports.edgevit_pixels_buffer(), config.image_size ** 2),
    knockout: new Uint8Array(exports.memory.buffer, exports.edgevit_knockout_buffer(), t),
    probs: view(exports.edgevit_probs_buffer(), config.num_classes),
    attention: view(exports.edgevit_attention_buffer(), attentionSize),
    query: view(exports.edgevit_query_buffer(), qkvSize),
    key: view(exports.edgevit_key_buffer(), qkvSize),
    value: view(exports.edgevit_value_buffer(), qkvSize),
    scores: view(exports.edgevit_scores_buffer(), attentionSize),
    confidence: view(exports.edgevit_confidence_buffer(), 1),
  };
  const notADigit = exports.edgevit_not_a_digit();
  return {
    run(pixels, mask) {
      b.pixels.set(pixels);
      b.knockout.set(mask);
      const start = performance.now();
      // WebAssembly takes the buffers' addresses in its memory
      exports.edgevit_inspect(b.pixels.byteOffset, b.knockout.byteOffset, ...OUTPUTS.map((n) => b[n].byteOffset));
      const ms = performance.now() - start;
      return { ...Object.fromEntries(OUTPUTS.map((n) => [n, Float32Array.from(b[n])])), ms };
    },
    /** probs -> {digit (null: not a digit), confidence}: the rule edgevit_inspect applies. */
    answer(probs) {
      b.probs.set(probs);
      const answer = exports.edgevit_answer(b.probs.byteOffset, b.confidence.byteOffset);
      return { digit: answer === notADigit ? null : answer, confidence: b.confidence[0] };
    },
  };
}

/** Why WebGPU cannot run here (null: it can), and the adapter it would use. */
async function webgpuChoice(config) {
  if (!config.webgpu) return { why: "this site was built without the WebGPU graph" };
  const found = await findAdapter();
  if (!found) return { why: navigator.gpu ? "the browser found no WebGPU adapter" : "this browser has no WebGPU" };
  return { found, why: null };
}

/** Fetch model.json and the WebAssembly module (and WebGPU's graph when it is the engine to start
 * with) -> the model: {config, engine, engines, use(name), run(pixels, knockout)}. */
export async function loadModel(requested = new URLSearchParams(location.search).get("engine")) {
  const response = await fetch(MODEL_JSON);
  if (!response.ok) throw new Error(`${MODEL_JSON}: HTTP ${response.status}`);
  const config = await response.json();
  const wasm = await loadWasm(config);
  const gpu = await webgpuChoice(config);
  const loaded = { wasm };
  const model = {
    config,
    engine: "wasm",
    /** Each engine: {label, why (null: it can run here)}. */
    engines: {
      wasm: { label: ENGINE_NAMES.wasm, why: null },
      webgpu: {
        label: gpu.found ? `WebGPU (${gpu.found.name}${gpu.found.fallback ? ", a CPU emulation" : ""})` : ENGINE_NAMES.webgpu,
        why: gpu.why,
      },
    },
    /** Switch engines (WebGPU's graph is loaded on first use); rejects, staying put, when it cannot run. */
    async use(name) {
      if (!(name in model.engines)) throw new Error(`unknown engine ${name}: wasm or webgpu`);
      if (model.engines[name].why) throw new Error(`${ENGINE_NAMES[name]}: ${model.engines[name].why}`);
      loaded[name] ??= await loadWebGPU(config, gpu.found.adapter).catch((error) => {
        model.engines[name].why = error.message;
        throw error;
      });
      model.engine = name;
    },
    run: (pixels, knockout = []) => runWith(loaded[model.engine], wasm, config, pixels, knockout, model.engine),
  };
  const start = requested === "wasm" || requested === "webgpu" ? requested : gpu.found && !gpu.found.fallback ? "webgpu" : "wasm";
  if (start === "webgpu") await model.use("webgpu").catch(() => {}); // stays on WebAssembly; engines.webgpu.why says why
  return model;
}

/** 784 pixels on [0, 255] and the patches knocked out as keys -> {digit (null: not a digit), confidence,
 * probs, attention, query, key, value, scores (flat copies), ms, engine}; a Promise from WebGPU. */
function runWith(engine, wasm, config, pixels, knockout, name) {
  const pixelCount = config.image_size ** 2;
  if (pixels.length !== pixelCount) throw new RangeError(`expected ${pixelCount} pixels, got ${pixels.length}`);
  const patches = config.tokens - 1;
  const mask = new Uint8Array(config.tokens);
  for (const p of knockout) {
    if (!Number.isInteger(p) || p < 0 || p >= patches) throw new RangeError(`knockout: ${p} is not a patch 0-${patches - 1}`);
    mask[p + 1] = 1; // token p + 1: token 0 is the class token
  }
  const finish = (out) => ({ ...wasm.answer(out.probs), ...out, engine: name });
  const out = engine.run(pixels, mask);
  return out instanceof Promise ? out.then(finish) : finish(out);
}

// The attention explorer: draw a digit, watch a Vision Transformer read it.
//
// The model is EdgeViT's exported C, compiled to WebAssembly (edgevit.wasm); model.json describes
// it. A 28x28 image is cut into a grid of patches (4x4 of 7x7 pixels); each patch becomes a token,
// plus one extra "class token" whose final state predicts the digit. In every layer, every head,
// each token spreads one unit of attention over all tokens: attention[layer][head][query][key].
// This page draws those numbers. Nothing here talks to a server beyond loading its own files.

import { NoDigitError, preprocess } from "./preprocess.js";

const MODEL_JSON = "model.json";
const PEN_WIDTH = 18; // pad pixels (of 280): about MNIST's stroke once the digit is scaled to 20x20
const HEAT_ALPHA = 0.55; // heat map over the digit: the digit must still show through
const GRID_COLOUR = "rgba(140, 140, 140, 0.9)";
const SELECTED_COLOUR = "#3ad1ff"; // the chosen patch's outline, also the focus ring in style.css
const TOP_LINKS = 3; // patches named in the Query/Key/Value explanation
const TIMES_KEPT = 200; // predictions in the running median shown on the page
// a perceptual dark-to-bright ramp (after matplotlib's inferno), the same as edgevit/attention.py
const RAMP = [
  [0, 0, 4],
  [66, 10, 104],
  [147, 38, 103],
  [221, 81, 58],
  [252, 165, 10],
  [252, 255, 164],
];
const MEAN = "mean"; // the head selector's value for the mean over heads
const CLS = 0; // the class token is token 0; patch p (0-based, row-major) is token p + 1
const DIGITS = 10; // classes 0-9 are the digits; a model's class for "not a digit" comes next
const NOT_A_DIGIT = "not a digit"; // the answer shown when the model takes the drawing for no digit

// --- the model ----------------------------------------------------------------------------------
/** Fetch model.json and the WebAssembly module; check they agree. */
async function loadModel() {
  const response = await fetch(MODEL_JSON);
  if (!response.ok) throw new Error(`${MODEL_JSON}: HTTP ${response.status}`);
  const config = await response.json();
  const wasm = fetch(config.wasm);
  // instantiateStreaming compiles while downloading, but needs the server's application/wasm type
  const { instance } = await WebAssembly.instantiateStreaming(wasm, {}).catch(async () =>
    WebAssembly.instantiate(await (await fetch(config.wasm)).arrayBuffer(), {}),
  );
  const exports = instance.exports;
  const attentionSize = config.depth * config.heads * config.tokens * config.tokens;
  if (exports.edgevit_num_classes() !== config.num_classes || exports.edgevit_attention_size() !== attentionSize) {
    throw new Error(`${config.wasm} does not match ${MODEL_JSON} (classes or attention shape)`);
  }
  // the module has no allocator, so its memory never grows and these views stay valid
  const view = (pointer, length) => new Float32Array(exports.memory.buffer, pointer, length);
  const buffers = {
    pixels: view(exports.edgevit_pixels_buffer(), config.image_size ** 2),
    probs: view(exports.edgevit_probs_buffer(), config.num_classes),
    attention: view(exports.edgevit_attention_buffer(), attentionSize),
    confidence: view(exports.edgevit_confidence_buffer(), 1),
  };
  const notADigit = exports.edgevit_not_a_digit();
  /** 784 pixels on [0, 255] -> {digit (null: not a digit), confidence, probs, attention (flat copy), ms}. */
  function run(pixels) {
    if (pixels.length !== buffers.pixels.length) {
      throw new RangeError(`expected ${buffers.pixels.length} pixels, got ${pixels.length}`);
    }
    buffers.pixels.set(pixels);
    const start = performance.now();
    const { pixels: p, probs, attention } = buffers; // WebAssembly takes their addresses in its memory
    exports.edgevit_classify_pixels(p.byteOffset, probs.byteOffset, attention.byteOffset);
    // the answer again, for its confidence: the same rule edgevit_classify_pixels applied
    const answer = exports.edgevit_answer(probs.byteOffset, buffers.confidence.byteOffset);
    const ms = performance.now() - start;
    const digit = answer === notADigit ? null : answer;
    const confidence = buffers.confidence[0];
    return { digit, confidence, probs: Float32Array.from(probs), attention: Float32Array.from(attention), ms };
  }
  return { config, run };
}

// --- attention maths (the same as edgevit/attention.py) -----------------------------------------
/** One query token's attention over all tokens, for one head or the mean over heads. */
function attentionRow(attention, config, layer, head, query) {
  const t = config.tokens;
  const rowOf = (h) => {
    const start = ((layer * config.heads + h) * t + query) * t; // flat (layer, head, query, key)
    return attention.subarray(start, start + t);
  };
  if (head !== MEAN) return Array.from(rowOf(head));
  const sum = new Array(t).fill(0);
  for (let h = 0; h < config.heads; h++) rowOf(h).forEach((v, key) => (sum[key] += v));
  return sum.map((v) => v / config.heads);
}

/** Attention rollout: each layer's head-mean matrix mixed half-and-half with the identity (the
 * residual connection), rows renormalised, layers multiplied; the class token's row over patches. */
function rollout(attention, config) {
  const t = config.tokens;
  let flow = Array.from({ length: t }, (_, i) => Array.from({ length: t }, (_, j) => +(i === j)));
  for (let layer = 0; layer < config.depth; layer++) {
    const mixed = Array.from({ length: t }, (_, q) => {
      const row = attentionRow(attention, config, layer, MEAN, q).map((a, k) => 0.5 * a + 0.5 * (q === k));
      const total = row.reduce((a, b) => a + b, 0);
      return row.map((v) => v / total);
    });
    flow = mixed.map((row) => flow[0].map((_, j) => row.reduce((sum, m, k) => sum + m * flow[k][j], 0)));
  }
  return flow[CLS].slice(1);
}

/** The flat attention as nested arrays [layer][head][query][key], for window.edgevit.classify. */
function nest(attention, config) {
  const t = config.tokens;
  let offset = 0;
  const take = () => Array.from(attention.subarray(offset, (offset += t)));
  return Array.from({ length: config.depth }, () =>
    Array.from({ length: config.heads }, () => Array.from({ length: t }, take)),
  );
}

// --- names -------------------------------------------------------------------------------------
/** Patches are named by row and column from 0 at the top left (r0c0 ... r3c3), as in explain.py. */
const patchName = (patch, grid) => `r${Math.floor(patch / grid)}c${patch % grid}`;
const tokenName = (token, grid) => (token === CLS ? "class token" : patchName(token - 1, grid));
const headLabel = (head) => (head === MEAN ? "mean over heads" : `head ${head + 1}`);
const percent = (v) => `${(100 * v).toFixed(1)}%`;

// --- small DOM helpers --------------------------------------------------------------------------
const $ = (id) => document.getElementById(id);

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  node.append(...children);
  return node;
}

// --- drawing ------------------------------------------------------------------------------------
function rampColour(value) {
  const pos = Math.min(1, Math.max(0, value)) * (RAMP.length - 1);
  const lo = Math.min(Math.floor(pos), RAMP.length - 2);
  const frac = pos - lo;
  return RAMP[lo].map((c, i) => Math.round(c * (1 - frac) + RAMP[lo + 1][i] * frac));
}

/** The 28x28 input as a small canvas, to be scaled up without smoothing. */
function inputBitmap(pixels, size) {
  const bitmap = document.createElement("canvas");
  bitmap.width = bitmap.height = size;
  const ctx = bitmap.getContext("2d");
  const data = ctx.createImageData(size, size);
  pixels.forEach((v, i) => {
    data.data.fill(Math.round(v), 4 * i, 4 * i + 3);
    data.data[4 * i + 3] = 255;
  });
  ctx.putImageData(data, 0, 0);
  return bitmap;
}

/** The input with a heat map over its patch grid (scaled to its own maximum) and each weight printed. */
function drawHeat(canvas, pixels, config, heat, selected = null) {
  const ctx = canvas.getContext("2d");
  const side = canvas.width;
  const step = side / config.grid;
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, side, side);
  if (pixels) ctx.drawImage(inputBitmap(pixels, config.image_size), 0, 0, side, side);
  if (!heat) return;
  const top = Math.max(...heat, 1e-9);
  const cell = (patch) => [(patch % config.grid) * step, Math.floor(patch / config.grid) * step];
  heat.forEach((value, patch) => {
    const [r, g, b] = rampColour(value / top);
    ctx.fillStyle = `rgba(${r}, ${g}, ${b}, ${HEAT_ALPHA})`;
    ctx.fillRect(...cell(patch), step, step);
  });
  ctx.strokeStyle = GRID_COLOUR;
  ctx.lineWidth = 1;
  for (let k = 1; k < config.grid; k++) {
    ctx.beginPath();
    ctx.moveTo(k * step + 0.5, 0);
    ctx.lineTo(k * step + 0.5, side);
    ctx.moveTo(0, k * step + 0.5);
    ctx.lineTo(side, k * step + 0.5);
    ctx.stroke();
  }
  if (selected !== null) {
    const [x, y] = cell(selected);
    ctx.strokeStyle = SELECTED_COLOUR;
    ctx.lineWidth = 4;
    ctx.strokeRect(x + 2, y + 2, step - 4, step - 4);
  }
  // the numbers last, so neither the grid nor the outline hides them
  ctx.font = `${Math.round(step / 4.5)}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  ctx.lineWidth = 3;
  heat.forEach((value, patch) => {
    const [x, y] = cell(patch);
    ctx.strokeStyle = "black";
    ctx.strokeText(value.toFixed(2), x + 8, y + 8);
    ctx.fillStyle = "white";
    ctx.fillText(value.toFixed(2), x + 8, y + 8);
  });
}

// --- the drawing pad ----------------------------------------------------------------------------
/** Pointer drawing (mouse, touch, pen) on the pad; onStroke runs after every change. */
function setupPad(pad, onStroke) {
  const ctx = pad.getContext("2d");
  let last = null;
  // the pad's bitmap keeps its size (Python's preprocessing sees the same pixels); CSS may scale it
  const point = (event) => {
    const box = pad.getBoundingClientRect(); // the border box: the bitmap starts inside the border
    return [
      ((event.clientX - box.left - pad.clientLeft) * pad.width) / pad.clientWidth,
      ((event.clientY - box.top - pad.clientTop) * pad.height) / pad.clientHeight,
    ];
  };
  const line = (from, to) => {
    ctx.lineWidth = PEN_WIDTH;
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.strokeStyle = "black";
    ctx.beginPath();
    ctx.moveTo(...from);
    ctx.lineTo(...to);
    ctx.stroke();
  };
  pad.addEventListener("pointerdown", (event) => {
    pad.setPointerCapture(event.pointerId);
    last = point(event);
    line(last, last); // a tap leaves a dot
    onStroke();
  });
  pad.addEventListener("pointermove", (event) => {
    if (!last) return;
    // coalesced events: every sample the pointer made since the last frame, for smooth curves
    for (const e of event.getCoalescedEvents?.() ?? [event]) {
      const next = point(e);
      line(last, next);
      last = next;
    }
    onStroke();
  });
  for (const type of ["pointerup", "pointercancel"]) pad.addEventListener(type, () => (last = null));
  return {
    clear: () => ctx.clearRect(0, 0, pad.width, pad.height),
    pixels: () => ctx.getImageData(0, 0, pad.width, pad.height).data,
  };
}

// --- the explanation ----------------------------------------------------------------------------
/** Query, Key and Value in plain words, with this drawing's numbers for one patch's attention row. */
function explainQKV(row, patch, layer, head, config) {
  const name = patchName(patch, config.grid);
  const headDim = config.dim / config.heads;
  const ranked = row.map((weight, token) => ({ weight, token })).sort((a, b) => b.weight - a.weight);
  const top = ranked.slice(0, TOP_LINKS);
  const rest = ranked.slice(TOP_LINKS).reduce((sum, r) => sum + r.weight, 0);
  const who = (token) => (token === patch + 1 ? "itself" : tokenName(token, config.grid));
  const weakest = ranked[ranked.length - 1];
  const heads = head === MEAN ? `averaged over its ${config.heads} heads` : `head ${head + 1}`;
  const where = `layer ${layer + 1}, ${heads}`;
  const listed = top.map((r) => `${who(r.token)} (${r.weight.toFixed(3)})`).join(", ");
  return [
    [
      el("strong", {}, "Query. "),
      `In ${where}, patch ${name} turns what it knows into a query: ${headDim} numbers (per head) saying what ` +
        `it is looking for. It queried ${listed} most.`,
    ],
    [
      el("strong", {}, "Key. "),
      `Every token, the ${config.grid ** 2} patches and the class token, shows a key: what it contains. ` +
        `The query is compared with each key (a dot product divided by \u221a${headDim}), and a softmax turns ` +
        `the ${config.tokens} scores into the weights in the table, which add up to 1. Here the best match was ` +
        `${who(top[0].token)} (${top[0].weight.toFixed(3)}), the weakest ${who(weakest.token)} (${weakest.weight.toFixed(3)}).`,
    ],
    [
      el("strong", {}, "Value. "),
      `Each token also offers a value: what it passes on. ${name}'s new value is the weighted mix: ` +
        `${top.map((r) => `${percent(r.weight)} from ${who(r.token)}`).join(", ")} ` +
        `and ${percent(rest)} from the other ${config.tokens - TOP_LINKS} tokens together.`,
    ],
  ];
}

// --- the page -----------------------------------------------------------------------------------
function setupPage(model) {
  const { config } = model;
  const state = {
    inked: false, // anything on the pad, even too little for a digit
    input: null, // the 784 pixels the model saw
    result: null, // its answer: {digit, probs, attention, ms}
    preprocessMs: 0,
    times: [], // ms of the latest predictions
    layer: config.depth - 1,
    head: MEAN,
    patch: null, // the patch chosen in the inspector
  };

  // selectors
  const layerSelect = $("layer");
  const headSelect = $("head");
  for (let l = 0; l < config.depth; l++) layerSelect.append(el("option", { value: l }, `Layer ${l + 1}`));
  headSelect.append(el("option", { value: MEAN }, "Mean over heads"));
  for (let h = 0; h < config.heads; h++) headSelect.append(el("option", { value: h }, `Head ${h + 1}`));
  layerSelect.value = state.layer;
  layerSelect.addEventListener("change", () => ((state.layer = +layerSelect.value), renderAttention()));
  headSelect.addEventListener("change", () => {
    state.head = headSelect.value === MEAN ? MEAN : +headSelect.value;
    renderAttention();
  });

  // probability bars, one per class; the label column as wide as the longest label ("not a digit")
  $("bars").style.setProperty("--label-width", `${Math.max(...config.labels.map((l) => l.length))}ch`);
  const bars = config.labels.map((label) => {
    const fill = el("span", { class: "fill" });
    const value = el("span", { class: "value" }, "");
    const name = el("span", { class: "label" }, label);
    const item = el("li", { "data-label": label }, name, el("span", { class: "bar" }, fill), value);
    $("bars").append(item);
    return { item, fill, value };
  });

  // one button per patch over the attention view: click, or Tab to it and press Enter
  $("patches").style.setProperty("--grid", config.grid);
  const patchButtons = Array.from({ length: config.grid ** 2 }, (_, patch) => {
    const button = el("button", { type: "button", class: "patch", "data-patch": patch, "aria-pressed": "false" });
    button.addEventListener("click", () => ((state.patch = patch), renderAttention()));
    button.addEventListener("keydown", (event) => movePatchFocus(event, patch));
    $("patches").append(button);
    return button;
  });
  function movePatchFocus(event, patch) {
    const moves = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -config.grid, ArrowDown: config.grid };
    const target = patch + (moves[event.key] ?? NaN);
    if (target >= 0 && target < patchButtons.length) {
      event.preventDefault();
      patchButtons[target].focus();
    }
  }

  function renderPrediction() {
    const { result } = state;
    $("prediction").textContent = result ? (result.digit === null ? NOT_A_DIGIT : config.labels[result.digit]) : "\u2013";
    const hint = state.inked ? "(not enough ink for a digit yet)" : "";
    $("confidence").textContent = result ? `(${percent(result.confidence)} sure)` : hint;
    // the bar behind the answer: its digit's, or for "not a digit" the model's class for it when it has one
    const best = result ? (result.digit ?? DIGITS) : -1;
    bars.forEach((bar, i) => {
      const p = result ? result.probs[i] : 0;
      bar.fill.style.width = `${(100 * p).toFixed(1)}%`;
      bar.value.textContent = result ? percent(p) : "";
      bar.item.classList.toggle("best", i === best);
    });
    const times = [...state.times].sort((a, b) => a - b);
    $("timing").textContent = result
      ? `This prediction took ${result.ms.toFixed(2)} ms in WebAssembly ` +
        `(median ${times[times.length >> 1].toFixed(2)} ms over the last ${times.length}); ` +
        `turning the drawing into the 28\u00d728 input took ${state.preprocessMs.toFixed(1)} ms in JavaScript.`
      : "";
    drawHeat($("input-view"), state.input, config, null);
  }

  function renderAttention() {
    const { result, input, layer, head, patch } = state;
    const where = `layer ${layer + 1}, ${headLabel(head)}`;
    const clsRow = result ? attentionRow(result.attention, config, layer, head, CLS).slice(1) : null;
    drawHeat($("attention-view"), input, config, clsRow, patch);
    $("attention-caption").textContent = `The class token's attention to each patch: ${where}.`;
    drawHeat($("rollout-view"), input, config, result ? rollout(result.attention, config) : null);
    patchButtons.forEach((button, p) => {
      const weight = clsRow ? `, class token's attention ${clsRow[p].toFixed(3)}` : "";
      button.setAttribute("aria-label", `Patch ${patchName(p, config.grid)}${weight}`);
      button.setAttribute("aria-pressed", String(p === patch));
    });
    renderInspector();
  }

  function renderInspector() {
    const { result, input, layer, head, patch } = state;
    const ready = result && patch !== null;
    $("inspector").hidden = !ready;
    $("inspector-hint").hidden = ready;
    if (!ready) return;
    const name = patchName(patch, config.grid);
    const row = attentionRow(result.attention, config, layer, head, patch + 1);
    const mean = attentionRow(result.attention, config, layer, MEAN, patch + 1);
    drawHeat($("patch-view"), input, config, row.slice(1), patch);
    $("patch-caption").textContent =
      `Patch ${name}'s attention to each patch (layer ${layer + 1}, ${headLabel(head)}); ` +
      `to the class token: ${row[CLS].toFixed(3)}.`;
    // the table: this head's weights and, beside them, the mean over heads
    const columns = head === MEAN ? [["Mean over heads", mean]] : [[`Head ${head + 1}`, row], ["Mean over heads", mean]];
    $("patch-table-caption").textContent = `How much patch ${name} attends to each token, layer ${layer + 1}`;
    const headings = ["Token", ...columns.map(([title]) => title)].map((title) => el("th", { scope: "col" }, title));
    $("patch-table-head").replaceChildren(el("tr", {}, ...headings));
    $("patch-table-body").replaceChildren(
      ...row.map((_, token) =>
        el(
          "tr",
          { "data-token": tokenName(token, config.grid), class: token === patch + 1 ? "self" : "" },
          el("th", { scope: "row" }, tokenName(token, config.grid)),
          ...columns.map(([, values]) => el("td", { "data-value": values[token] }, values[token].toFixed(3))),
        ),
      ),
    );
    $("qkv").replaceChildren(...explainQKV(row, patch, layer, head, config).map((parts) => el("p", {}, ...parts)));
  }

  /** Preprocess the pad, classify, redraw: at most once per animation frame while drawing. */
  let pending = false;
  function schedule() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      state.inked = true;
      try {
        const start = performance.now();
        state.input = preprocess(pad.pixels(), $("pad").width, $("pad").height);
        state.preprocessMs = performance.now() - start;
        state.result = model.run(state.input);
        state.times = [...state.times, state.result.ms].slice(-TIMES_KEPT);
      } catch (error) {
        if (!(error instanceof NoDigitError)) throw error;
        state.input = state.result = null; // a dot or a speck so far: renderPrediction says so
      }
      renderPrediction();
      renderAttention();
    });
  }

  const pad = setupPad($("pad"), schedule);
  $("clear").addEventListener("click", () => {
    pad.clear();
    state.inked = false;
    state.input = state.result = null;
    renderPrediction();
    renderAttention();
  });
  $("model-info").textContent =
    `${config.depth} layers \u00d7 ${config.heads} heads, ${config.tokens} tokens ` +
    `(${config.grid}\u00d7${config.grid} patches of ${config.patch_size}\u00d7${config.patch_size} pixels ` +
    `+ the class token), ` +
    `${config.scheme} weights, ${Math.round(config.wasm_bytes / 1024)} KiB of WebAssembly` +
    (config.temperature ? `; probabilities calibrated with temperature ${config.temperature.toPrecision(4)}` : "");
  renderPrediction();
  renderAttention();
  return { lastInput: () => (state.input ? Array.from(state.input) : null) };
}

// --- start, and the contract for tests and scripts -----------------------------------------------
let page = null;
let model = null;
const ready = loadModel().then((loaded) => {
  model = loaded;
  page = setupPage(model);
  $("status").textContent = "";
});
ready.catch((error) => ($("status").textContent = `The model could not be loaded: ${error.message}`));

window.edgevit = {
  /** Resolves when the model is loaded and the page is set up. */
  ready,
  /** 784 MNIST-style values (0-255, white on black) -> {digit (null: not a digit), confidence, probs,
   * attention[layer][head][query][key], ms}: what `edgevit-classify --json` reports. */
  classify(pixels) {
    if (!model) throw new Error("the model is not loaded yet: await window.edgevit.ready");
    const { digit, confidence, probs, attention, ms } = model.run(pixels);
    return { digit, confidence, probs: Array.from(probs), attention: nest(attention, model.config), ms };
  },
  /** The 784 values the model last saw from the pad (null before a digit was drawn). */
  lastInput: () => (page ? page.lastInput() : null),
};

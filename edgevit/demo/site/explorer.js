// The attention explorer: draw a digit, watch a Vision Transformer read it.
//
// The model is EdgeViT's exported C, compiled to WebAssembly (edgevit.wasm), or the same graph's
// kernels on the GPU through WebGPU (engines.js); model.json describes it. A 28x28 image is cut into a grid of patches (4x4 of 7x7 pixels); each patch becomes a token,
// plus one extra "class token" whose final state predicts the digit. In every layer, every head,
// each token spreads one unit of attention over all tokens: attention[layer][head][query][key].
// This page draws those numbers. Nothing here talks to a server beyond loading its own files.

import { $, drawHeat, el } from "./draw.js";
import { ENGINE_NAMES, loadModel } from "./engines.js";
import { CLS, nest, row } from "./heads.js";
import { renderHeads, setupHeads } from "./headview.js";
import { classifyInput, classifyWith, renderKnockout, setupKnockout } from "./knockout.js";
import { renderLesson, renderWeight } from "./lesson.js";
import { NoDigitError, preprocess } from "./preprocess.js";

const PEN_WIDTH = 18; // pad pixels (of 280): about MNIST's stroke once the digit is scaled to 20x20
const TOP_LINKS = 3; // patches named in the Query/Key/Value explanation
const TIMES_KEPT = 200; // predictions in the running median shown on the page
const MEAN = "mean"; // the head selector's value for the mean over heads
const DIGITS = 10; // classes 0-9 are the digits; a model's class for "not a digit" comes next
const NOT_A_DIGIT = "not a digit"; // the answer shown when the model takes the drawing for no digit

// --- attention maths (the same as edgevit/attention.py) -----------------------------------------
/** One query token's attention over all tokens, for one head or the mean over heads. */
function attentionRow(attention, config, layer, head, query) {
  const rowOf = (h) => row(attention, config, layer, h, query);
  if (head !== MEAN) return Array.from(rowOf(head));
  const sum = new Array(config.tokens).fill(0);
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

/** The weight the page takes apart: {layer, head, query, key} (tokens; head 1 while the table shows
 * the mean over heads; the query's strongest key until one is picked), and the knocked-out patches. */
function selection(state, config) {
  const head = state.head === MEAN ? 0 : state.head;
  const query = state.patch === null ? CLS : state.patch + 1;
  const knocked = [...state.knockout, ...state.blank];
  if (!state.result) return { layer: state.layer, head, query, key: CLS, knocked };
  const weights = Array.from(row(state.result.attention, config, state.layer, head, query));
  const key = state.key ?? weights.indexOf(Math.max(...weights));
  return { layer: state.layer, head, query, key, knocked };
}

// --- names -------------------------------------------------------------------------------------
/** Patches are named by row and column from 0 at the top left (r0c0 ... r3c3), as in explain.py. */
const patchName = (patch, grid) => `r${Math.floor(patch / grid)}c${patch % grid}`;
const tokenName = (token, grid) => (token === CLS ? "class token" : patchName(token - 1, grid));
const headLabel = (head) => (head === MEAN ? "mean over heads" : `head ${head + 1}`);
const percent = (v) => `${(100 * v).toFixed(1)}%`;

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
  const headDim = config.head_dim;
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

/** Section 4: the chosen patch's row of the attention table, as a map, as numbers and in words. */
function renderInspector(state, config) {
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

/** Section 2: the answer, the probability bars, the timing and the 28x28 input. */
function renderPrediction(state, config, bars) {
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
    ? `This prediction took ${result.ms.toFixed(2)} ms in ${ENGINE_NAMES[result.engine]} ` +
      `(median ${times[times.length >> 1].toFixed(2)} ms over the last ${times.length}); ` +
      `turning the drawing into the 28\u00d728 input took ${state.preprocessMs.toFixed(1)} ms in JavaScript.`
    : "";
  drawHeat($("input-view"), state.input, config, null);
}

/** The engine selector: every engine, those that cannot run here disabled and the reason said. */
function setupEngines(model, state, onChange) {
  const select = $("engine");
  const render = () => {
    const options = Object.entries(model.engines).map(([name, engine]) => {
      const attributes = engine.why && name !== model.engine ? { value: name, disabled: "" } : { value: name };
      return el("option", attributes, engine.why ? `${ENGINE_NAMES[name]} (not available)` : engine.label);
    });
    select.replaceChildren(...options);
    select.value = model.engine;
    const missing = Object.entries(model.engines).filter(([, engine]) => engine.why);
    $("engine-note").textContent = missing.map(([name, engine]) => `${ENGINE_NAMES[name]} cannot run here: ${engine.why}.`).join(" ");
  };
  select.addEventListener("change", async () => {
    await model.use(select.value).catch(() => {}); // stays on the engine it had; the note says why
    state.times = []; // the median is of one engine's predictions
    render();
    onChange(true);
  });
  render();
}

// --- the page -----------------------------------------------------------------------------------
function setupPage(model) {
  const { config } = model;
  const state = {
    inked: false, // anything on the pad, even too little for a digit
    input: null, // the 784 pixels the model saw
    result: null, // its answer, with the knock-outs: {digit, probs, attention, query, key, value, scores, ms}
    clean: null, // the answer without them
    preprocessMs: 0,
    times: [], // ms of the latest predictions
    layer: config.depth - 1,
    head: MEAN,
    patch: null, // the patch chosen in the inspector
    key: null, // the key token of the weight taken apart (null: the query's strongest)
    knockout: [], // patches removed as keys in every layer
    blank: [], // patches whose pixels are blanked
  };
  const names = { token: (t) => tokenName(t, config.grid), patch: (p) => patchName(p, config.grid) };

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
  const headCells = setupHeads(config, (layer, head) => {
    [state.layer, state.head] = [layer, head];
    [layerSelect.value, headSelect.value] = [layer, head];
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
    button.addEventListener("click", () => ((state.patch = patch), (state.key = null), renderAttention()));
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

  function renderAttention() {
    const { result, input, layer, head, patch } = state;
    const where = `layer ${layer + 1}, ${headLabel(head)}`;
    const clsRow = result ? attentionRow(result.attention, config, layer, head, CLS).slice(1) : null;
    drawHeat($("attention-view"), input, config, clsRow, patch, { knocked: [...state.knockout, ...state.blank] });
    $("attention-caption").textContent = `The class token's attention to each patch: ${where}.`;
    drawHeat($("rollout-view"), input, config, result ? rollout(result.attention, config) : null);
    patchButtons.forEach((button, p) => {
      const weight = clsRow ? `, class token's attention ${clsRow[p].toFixed(3)}` : "";
      button.setAttribute("aria-label", `Patch ${patchName(p, config.grid)}${weight}`);
      button.setAttribute("aria-pressed", String(p === patch));
    });
    renderInspector(state, config);
    renderMechanism();
    renderKnockout(state, names, answerText);
  }

  /** The weight taken apart, the lesson and the head view, for the chosen layer, head and patch. */
  function renderMechanism() {
    const { result } = state;
    for (const id of ["weight", "lesson", "heads"]) $(`${id}-panel`).hidden = !result;
    $("mechanism-hint").hidden = Boolean(result);
    const sel = selection(state, config);
    renderHeads(headCells, result, state.input, config, sel, names);
    if (!result) return;
    const pickKey = (token) => ((state.key = token), renderMechanism());
    const parts = renderWeight(result, config, sel, names, pickKey);
    renderLesson(result, config, sel, names, parts);
  }

  const answerText = (r) => (r.digit === null ? NOT_A_DIGIT : config.labels[r.digit]) + ` (${percent(r.confidence)} sure)`;
  setupKnockout(state, update);
  setupEngines(model, state, update);

  /** Classify again (the input or the knock-outs changed) and redraw everything; `timed`: a new
   * input, whose time joins the running median. */
  async function update(timed = false) {
    if (state.input) await classifyInput(model, state);
    if (timed && state.input) state.times = [...state.times, state.clean.ms].slice(-TIMES_KEPT);
    renderPrediction(state, config, bars);
    renderAttention();
  }

  /** Preprocess the pad, classify, redraw: at most once per animation frame while drawing, and never
   * two at once (a WebGPU answer arrives a little later: strokes drawn meanwhile are read together). */
  let busy = false;
  let dirty = false;
  async function schedule() {
    dirty = true;
    if (busy) return;
    busy = true;
    try {
      while (dirty) {
        dirty = false;
        await new Promise((resolve) => requestAnimationFrame(resolve));
        await readPad();
      }
    } finally {
      busy = false;
    }
  }
  async function readPad() {
    state.inked = true;
    try {
      const start = performance.now();
      state.input = preprocess(pad.pixels(), $("pad").width, $("pad").height);
      state.preprocessMs = performance.now() - start;
    } catch (error) {
      if (!(error instanceof NoDigitError)) throw error;
      state.input = state.result = state.clean = null; // a dot or a speck so far: renderPrediction says so
    }
    await update(true);
  }

  const pad = setupPad($("pad"), schedule);
  $("clear").addEventListener("click", () => {
    pad.clear();
    state.inked = false;
    state.input = state.result = state.clean = null;
    update();
  });
  $("model-info").textContent =
    `${config.depth} layers \u00d7 ${config.heads} heads, ${config.tokens} tokens ` +
    `(${config.grid}\u00d7${config.grid} patches of ${config.patch_size}\u00d7${config.patch_size} pixels ` +
    `+ the class token), ` +
    `${config.scheme} weights, ${Math.round(config.wasm_bytes / 1024)} KiB of WebAssembly` +
    (config.temperature ? `; probabilities calibrated with temperature ${config.temperature.toPrecision(4)}` : "");
  update();
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
  /** The engine answering: "wasm" or "webgpu" (null while loading). */
  get engine() {
    return model ? model.engine : null;
  },
  /** 784 MNIST-style values (0-255, white on black) and options {knockout: patches (0-15, row-major)
   * removed as keys in every layer and head, blank: patches whose pixels are set to 0} -> {digit (null:
   * not a digit), confidence, probs, attention[layer][head][query][key], query, key and value
   * [layer][head][token][d], scores[layer][head][query][key] (q.k/sqrt(d), -Infinity where knocked
   * out), ms, engine}: what `edgevit-classify --json` reports, and the numbers behind the attention.
   * From WebAssembly the result itself; from WebGPU a Promise of it. */
  classify(pixels, options = {}) {
    if (!model) throw new Error("the model is not loaded yet: await window.edgevit.ready");
    const { depth, heads, tokens, head_dim: d } = model.config;
    const [vectors, squares] = [[depth, heads, tokens, d], [depth, heads, tokens, tokens]];
    const shaped = (r) => ({
      digit: r.digit,
      confidence: r.confidence,
      probs: Array.from(r.probs),
      attention: nest(r.attention, squares),
      query: nest(r.query, vectors),
      key: nest(r.key, vectors),
      value: nest(r.value, vectors),
      scores: nest(r.scores, squares),
      ms: r.ms,
      engine: r.engine,
    });
    const r = classifyWith(model, pixels, options);
    return r instanceof Promise ? r.then(shaped) : shaped(r);
  },
  /** The 784 values the model last saw from the pad (null before a digit was drawn). */
  lastInput: () => (page ? page.lastInput() : null),
};

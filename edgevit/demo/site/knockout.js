// Knocking patches out: as keys in every layer and head (edgevit_inspect's mask: their scores are
// minus infinity before the softmax, so no token reads from them), or by blanking their pixels. The
// page's controls, and the runs behind them.

import { $ } from "./draw.js";

/** The input with the given patches' pixels set to the background (0: MNIST is white on black). */
function blankPatches(pixels, patches, config) {
  const out = Float32Array.from(pixels);
  const [size, side] = [config.image_size, config.patch_size];
  for (const p of patches) {
    const [top, left] = [Math.floor(p / config.grid) * side, (p % config.grid) * side];
    for (let y = top; y < top + side; y++) out.fill(0, y * size + left, y * size + left + side);
  }
  return out;
}

/** One run with knock-outs: {knockout: patches removed as keys, blank: patches whose pixels are blanked}. */
export function classifyWith(model, pixels, { knockout = [], blank = [] } = {}) {
  const patches = model.config.tokens - 1;
  for (const p of blank) {
    if (!Number.isInteger(p) || p < 0 || p >= patches) throw new RangeError(`blank: ${p} is not a patch 0-${patches - 1}`);
  }
  return model.run(blank.length ? blankPatches(pixels, blank, model.config) : pixels, knockout);
}

/** state.input classified as it is (state.clean) and with the page's knock-outs (state.result). */
export async function classifyInput(model, state) {
  const input = state.input;
  const clean = await model.run(input);
  const knocks = { knockout: state.knockout, blank: state.blank };
  const result = state.knockout.length || state.blank.length ? await classifyWith(model, input, knocks) : clean;
  if (state.input === input) [state.clean, state.result] = [clean, result]; // else a newer input is on its way
}

/** The buttons: knock the chosen patch out the way the radio buttons say, or restore every patch. */
export function setupKnockout(state, onChange) {
  $("knock").addEventListener("click", () => {
    const mode = document.querySelector("input[name='knockout-mode']:checked").value;
    const list = mode === "pixels" ? state.blank : state.knockout;
    if (state.patch !== null && !list.includes(state.patch)) list.push(state.patch);
    onChange();
  });
  $("restore").addEventListener("click", () => {
    state.knockout = [];
    state.blank = [];
    onChange();
  });
}

/** What is knocked out, and the answer before and after; answerText(result) names one answer. */
export function renderKnockout(state, names, answerText) {
  const named = (patches) => (patches.length ? patches.map(names.patch).join(", ") : "none");
  $("knock").disabled = state.patch === null || !state.result;
  $("restore").disabled = !(state.knockout.length || state.blank.length);
  $("knockout-summary").textContent = state.result
    ? `Knocked out as keys: ${named(state.knockout)}. Pixels blanked: ${named(state.blank)}. ` +
      `Before: ${answerText(state.clean)}. After: ${answerText(state.result)}.`
    : "";
}

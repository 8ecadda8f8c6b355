// Every layer x head at once: a small map per head of where the chosen token looks, the head's
// strongest patch-to-patch links as arrows over the digit, and a sentence made from its numbers.

import { drawHeat, drawLinks, el, $ } from "./draw.js";
import { headSentence, row, strongestLinks } from "./heads.js";

const ARROWS = 4; // strongest links drawn per head
const SIZE = 112; // each map's canvas, CSS pixels: the 28x28 input drawn 4x

/** Build the grid once: one button per head holding its canvas; onPick(layer, head) selects it. */
export function setupHeads(config, onPick) {
  const grid = $("head-grid");
  grid.style.setProperty("--heads", config.heads);
  const cells = [];
  for (let layer = 0; layer < config.depth; layer++) {
    for (let head = 0; head < config.heads; head++) {
      const canvas = el("canvas", { width: SIZE, height: SIZE });
      const button = el("button", { type: "button", class: "head-cell", "data-layer": layer, "data-head": head }, canvas);
      button.setAttribute("aria-label", `Layer ${layer + 1}, head ${head + 1}`);
      button.addEventListener("click", () => onPick(layer, head));
      grid.append(button);
      cells.push({ layer, head, canvas, button });
    }
  }
  return cells;
}

/** Redraw every head for the token `query` (0: the class token), with the selected head marked. */
export function renderHeads(cells, result, input, config, sel, names) {
  const sentences = [];
  for (const { layer, head, canvas, button } of cells) {
    const heat = result ? Array.from(row(result.attention, config, layer, head, sel.query)).slice(1) : null;
    const self = sel.query > 0 ? sel.query - 1 : null;
    drawHeat(canvas, input, config, heat, self, { numbers: false, knocked: sel.knocked });
    if (result) drawLinks(canvas, config, strongestLinks(result.attention, config, layer, head, ARROWS));
    button.setAttribute("aria-pressed", String(layer === sel.layer && head === sel.head));
    if (result) sentences.push(headSentence(result.attention, config, layer, head, names.patch));
  }
  $("head-sentences").replaceChildren(...sentences.map((s) => el("li", {}, s)));
  $("head-caption").textContent = result
    ? `Each map: where ${names.token(sel.query)} looks, in that layer and head. Arrows: the head's ${ARROWS} strongest ` +
      `links from one patch to another (a patch's link to itself left out), from the patch that looks to the patch it ` +
      `looks at. Click a map to choose its layer and head.`
    : "";
}

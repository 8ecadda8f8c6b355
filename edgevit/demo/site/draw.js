// Drawing for the explorer: DOM elements, the digit with a heat map over its patches, arrows
// between patches, bars of signed numbers. No model maths here (heads.js) and no page state
// (explorer.js).

const HEAT_ALPHA = 0.55; // heat map over the digit: the digit must still show through
const GRID_COLOUR = "rgba(140, 140, 140, 0.9)";
const SELECTED_COLOUR = "#3ad1ff"; // the chosen patch's outline, also the focus ring in style.css
const KNOCKED_COLOUR = "rgba(255, 60, 60, 0.95)"; // a knocked-out patch's cross
const ARROW_COLOUR = "#3ad1ff";

// a perceptual dark-to-bright ramp (after matplotlib's inferno), the same as edgevit/attention.py
const RAMP = [
  [0, 0, 4],
  [66, 10, 104],
  [147, 38, 103],
  [221, 81, 58],
  [252, 165, 10],
  [252, 255, 164],
];

export const $ = (id) => document.getElementById(id);

export function el(tag, attributes = {}, ...children) {
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

// each input's bitmap, made once: every map of the page (about 20 a frame while drawing) shows it
const bitmaps = new WeakMap();

/** The 28x28 input as a small canvas, to be scaled up without smoothing. */
function inputBitmap(pixels, size) {
  if (bitmaps.has(pixels)) return bitmaps.get(pixels);
  const bitmap = document.createElement("canvas");
  bitmap.width = bitmap.height = size;
  const ctx = bitmap.getContext("2d");
  const data = ctx.createImageData(size, size);
  pixels.forEach((v, i) => {
    data.data.fill(Math.round(v), 4 * i, 4 * i + 3);
    data.data[4 * i + 3] = 255;
  });
  ctx.putImageData(data, 0, 0);
  bitmaps.set(pixels, bitmap);
  return bitmap;
}

/** The input with a heat map over its patch grid (scaled to its own maximum) and each weight printed. */
export function drawHeat(canvas, pixels, config, heat, selected = null, { numbers = true, knocked = [] } = {}) {
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
  for (const patch of knocked) {
    const [x, y] = cell(patch);
    ctx.strokeStyle = KNOCKED_COLOUR;
    ctx.lineWidth = Math.max(2, step / 16);
    ctx.beginPath();
    ctx.moveTo(x + 4, y + 4);
    ctx.lineTo(x + step - 4, y + step - 4);
    ctx.moveTo(x + step - 4, y + 4);
    ctx.lineTo(x + 4, y + step - 4);
    ctx.stroke();
  }
  if (!numbers) return;
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

/** Arrows over the digit from each link's patch to the patch it looks at, thicker for more weight. */
export function drawLinks(canvas, config, links) {
  const ctx = canvas.getContext("2d");
  const step = canvas.width / config.grid;
  const centre = (patch) => [((patch % config.grid) + 0.5) * step, (Math.floor(patch / config.grid) + 0.5) * step];
  const top = Math.max(...links.map((l) => l.weight), 1e-9);
  ctx.strokeStyle = ctx.fillStyle = ARROW_COLOUR;
  for (const { from, to, weight } of links) {
    const [x0, y0] = centre(from);
    const [x1, y1] = centre(to);
    const angle = Math.atan2(y1 - y0, x1 - x0);
    const head = step / 5;
    const [xe, ye] = [x1 - Math.cos(angle) * step * 0.2, y1 - Math.sin(angle) * step * 0.2]; // stop short of the centre
    ctx.lineWidth = 1 + (4 * weight) / top;
    ctx.beginPath();
    ctx.moveTo(x0, y0);
    ctx.lineTo(xe, ye);
    ctx.stroke();
    ctx.beginPath();
    ctx.moveTo(xe, ye);
    ctx.lineTo(xe - head * Math.cos(angle - 0.45), ye - head * Math.sin(angle - 0.45));
    ctx.lineTo(xe - head * Math.cos(angle + 0.45), ye - head * Math.sin(angle + 0.45));
    ctx.closePath();
    ctx.fill();
  }
}

/** Signed numbers as a row of bars around a zero line, each with its value: an <ol> for a vector. */
export function bars(values, label, digits = 3) {
  const top = Math.max(...values.map(Math.abs), 1e-9);
  const items = values.map((v, i) => {
    const bar = el("span", { class: v < 0 ? "vbar negative" : "vbar" });
    bar.style.setProperty("--size", `${((50 * Math.abs(v)) / top).toFixed(1)}%`);
    return el("li", { "data-value": v, title: `${label}[${i}] = ${v}` }, bar, el("span", { class: "vvalue" }, v.toFixed(digits)));
  });
  return el("ol", { class: "vector", "aria-label": label }, ...items);
}

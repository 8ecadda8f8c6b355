// The numbers behind an attention weight, read from one WebAssembly run: no drawing here, only maths
// on the flat buffers edgevit_inspect fills. Layouts (row-major): query, key and value are
// (layer, head, token, d); scores (q.k/sqrt(d), before the softmax) and attention are
// (layer, head, query token, key token). Token 0 is the class token; patch p is token p + 1.

export const CLS = 0;
const LINK_SHARE = 0.3; // a head "does one job" when this share of the patches agree on it

/** A flat buffer as nested arrays, e.g. dims [layer, head, token, d] -> x[l][h][t][d]. */
export function nest(flat, dims) {
  let offset = 0;
  const build = (level) =>
    level === dims.length - 1
      ? Array.from(flat.subarray(offset, (offset += dims[level])))
      : Array.from({ length: dims[level] }, () => build(level + 1));
  return build(0);
}

/** One (layer, head, token) vector of query, key or value: head_dim numbers. */
export function vector(flat, config, layer, head, token) {
  const d = config.head_dim;
  const start = ((layer * config.heads + head) * config.tokens + token) * d;
  return flat.subarray(start, start + d);
}

/** One (layer, head, query) row of scores or attention: one number per key token. */
export function row(flat, config, layer, head, query) {
  const t = config.tokens;
  const start = ((layer * config.heads + head) * t + query) * t;
  return flat.subarray(start, start + t);
}

/** The score of one weight taken apart: q, k, their element-wise products, the sum, sqrt(d), and
 * the model's own score (from the scores buffer) and weight (from the attention buffer). */
export function scoreParts(result, config, layer, head, query, key) {
  const q = vector(result.query, config, layer, head, query);
  const k = vector(result.key, config, layer, head, key);
  const products = Array.from(q, (v, i) => v * k[i]);
  const sum = products.reduce((a, b) => a + b, 0);
  const root = Math.sqrt(config.head_dim);
  return {
    q: Array.from(q),
    k: Array.from(k),
    products,
    sum,
    root,
    score: row(result.scores, config, layer, head, query)[key],
    weight: row(result.attention, config, layer, head, query)[key],
  };
}

/** The softmax of one row of scores, step by step: exp(score - max), their total, the weights
 * (a knocked-out key's score is minus infinity: its weight is exactly 0). */
export function softmaxSteps(scores) {
  const top = Math.max(...scores);
  const exps = Array.from(scores, (s) => Math.exp(s - top));
  const total = exps.reduce((a, b) => a + b, 0);
  return { top, exps, total, weights: exps.map((e) => e / total) };
}

/** What the query token takes from every key: weight x value, summed into its new vector (before
 * the layer's output projection), and each key's share of it (by length). */
export function valueMix(result, config, layer, head, query) {
  const weights = row(result.attention, config, layer, head, query);
  const parts = Array.from(weights, (w, key) => Array.from(vector(result.value, config, layer, head, key), (v) => w * v));
  const mixed = parts[0].map((_, i) => parts.reduce((sum, p) => sum + p[i], 0));
  const lengths = parts.map((p) => Math.hypot(...p));
  const total = lengths.reduce((a, b) => a + b, 0) || 1;
  return { mixed, weights: Array.from(weights), shares: lengths.map((l) => l / total) };
}

/** The strongest patch-to-patch links of one head, [{from, to, weight}] (patches, not tokens),
 * a patch's link to itself left out (the page says so). */
export function strongestLinks(attention, config, layer, head, count) {
  const links = [];
  for (let q = 1; q < config.tokens; q++) {
    const r = row(attention, config, layer, head, q);
    for (let k = 1; k < config.tokens; k++) if (k !== q) links.push({ from: q - 1, to: k - 1, weight: r[k] });
  }
  return links.sort((a, b) => b.weight - a.weight).slice(0, count);
}

const DIRECTIONS = {
  "0,1": "their right neighbour",
  "0,-1": "their left neighbour",
  "-1,0": "the patch above them",
  "1,0": "the patch below them",
  "0,0": "themselves",
};

/** Where one patch looks hardest: "themselves", a neighbour, the class token, or a patch by name. */
function target(patch, key, grid, name) {
  if (key === CLS) return { kind: "the class token", patch: null };
  const [r, c, kr, kc] = [Math.floor(patch / grid), patch % grid, Math.floor((key - 1) / grid), (key - 1) % grid];
  const direction = DIRECTIONS[`${kr - r},${kc - c}`];
  return direction ? { kind: direction, patch: null } : { kind: `patch ${name(key - 1)}`, patch: key - 1 };
}

/** One sentence per head from its numbers: what most patches look at hardest, and the class
 * token's favourite, e.g. "layer 1, head 3: most patches (9 of 16) look at their right neighbour". */
export function headSentence(attention, config, layer, head, name) {
  const patches = config.tokens - 1;
  const counts = new Map();
  for (let p = 0; p < patches; p++) {
    const r = row(attention, config, layer, head, p + 1);
    const best = r.indexOf(Math.max(...r));
    const { kind } = target(p, best, config.grid, name);
    counts.set(kind, (counts.get(kind) ?? 0) + 1);
  }
  const ranked = [...counts].sort((a, b) => b[1] - a[1]);
  const [kind, n] = ranked[0];
  const where = `layer ${layer + 1}, head ${head + 1}: `;
  const cls = row(attention, config, layer, head, CLS);
  const favourite = Array.from(cls.subarray(1)).reduce((best, w, p, all) => (w > all[best] ? p : best), 0);
  const clsPart = `; the class token looks most at ${name(favourite)} (${cls[favourite + 1].toFixed(2)})`;
  if (n >= LINK_SHARE * patches) {
    const most = n > patches / 2 ? "most patches" : "many patches";
    return `${where}${most} (${n} of ${patches}) look hardest at ${kind}${clsPart}`;
  }
  const spread = ranked.slice(0, 3).map(([k, c]) => `${c} at ${k}`).join(", ");
  return `${where}the patches look in different directions (${spread})${clsPart}`;
}

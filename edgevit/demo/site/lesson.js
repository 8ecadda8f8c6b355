// One attention weight taken apart, and the lesson of Query, Key and Value told with it. Every number
// is read from the WebAssembly run behind the prediction (heads.js reads the buffers); only the
// element-wise products, their sum and the softmax's steps are redone here, to be shown beside the
// model's own score and weight.

import { bars, el, $ } from "./draw.js";
import { CLS, row, scoreParts, softmaxSteps, valueMix, vector } from "./heads.js";

const SHOWN = 4; // numbers of a vector written out in the lesson's sentences
const fixed = (v, digits = 3) => (Number.isFinite(v) ? v.toFixed(digits) : v < 0 ? "\u2212\u221e" : String(v));
const list = (values) => `[${Array.from(values.slice(0, SHOWN), (v) => fixed(v)).join(", ")}, \u2026]`;

/** A cell with its full-precision number behind the text, for tests and copy-paste. */
const cell = (value, digits = 3) => el("td", { "data-value": String(value) }, fixed(value, digits));

/** The query and key vectors, their products, the sum, sqrt(d) and the score, for one weight. */
function renderScore(parts, names) {
  $("weight-q").replaceChildren(bars(parts.q, `query of ${names.query}`));
  $("weight-k").replaceChildren(bars(parts.k, `key of ${names.key}`));
  $("weight-products").replaceChildren(bars(parts.products, "query \u00d7 key, element by element"));
  const mine = parts.sum / parts.root;
  $("weight-sum").replaceChildren(
    `Sum of the ${parts.q.length} products: `,
    el("output", { id: "weight-dot", "data-value": String(parts.sum) }, fixed(parts.sum, 4)),
    ` \u00f7 \u221a${parts.q.length} = ${fixed(parts.root, 0)} \u2192 ${fixed(mine, 4)}. The model's score: `,
    el("output", { id: "weight-score", "data-value": String(parts.score) }, fixed(parts.score, 4)),
    Number.isFinite(parts.score) ? "." : ` (${names.key} is knocked out as a key: no token reads from it).`,
  );
}

/** The query's row of scores, the softmax step by step, and the attention table's weights. */
function renderSoftmax(result, config, sel, names, onPickKey) {
  const scores = row(result.scores, config, sel.layer, sel.head, sel.query);
  const weights = row(result.attention, config, sel.layer, sel.head, sel.query);
  const steps = softmaxSteps(scores);
  $("softmax-caption").textContent =
    `Every score of ${names.query}'s query, and the softmax: e^(score \u2212 ${fixed(steps.top, 3)}) ` +
    `divided by their sum, ${fixed(steps.total, 4)}. The last column is the table's weight, from the model.`;
  $("softmax-body").replaceChildren(
    ...Array.from(scores, (score, token) => {
      const pick = el("button", { type: "button", class: "token-pick", "aria-pressed": String(token === sel.key) }, names.token(token));
      pick.addEventListener("click", () => onPickKey(token));
      return el(
        "tr",
        { "data-token": names.token(token), class: token === sel.key ? "self" : "" },
        el("th", { scope: "row" }, pick),
        cell(score),
        cell(steps.exps[token], 4),
        cell(steps.weights[token]),
        cell(weights[token]),
      );
    }),
  );
}

/** The weighted sum of the values: the query's new vector in this head, and each key's share. */
function renderValues(result, config, sel, names) {
  const mix = valueMix(result, config, sel.layer, sel.head, sel.query);
  $("value-mix").replaceChildren(bars(mix.mixed, `weighted sum of values for ${names.query}`));
  const ranked = mix.shares.map((share, token) => ({ share, token })).sort((a, b) => b.share - a.share);
  $("value-shares").replaceChildren(
    ...ranked.map(({ share, token }) =>
      el("tr", { "data-token": names.token(token) }, el("th", { scope: "row" }, names.token(token)), cell(mix.weights[token]), cell(share)),
    ),
  );
}

/** The weight panel for sel = {layer, head, query, key} (tokens); onPickKey(token) changes the key.
 * Returns the weight's parts (heads.scoreParts), which the lesson tells. */
export function renderWeight(result, config, sel, names, onPickKey) {
  const parts = scoreParts(result, config, sel.layer, sel.head, sel.query, sel.key);
  const named = { query: names.token(sel.query), key: names.token(sel.key), token: names.token };
  $("weight-title").textContent =
    `Layer ${sel.layer + 1}, head ${sel.head + 1}: the query of ${named.query} against the key of ${named.key}` +
    ` (choose the key in the table below).`;
  renderScore(parts, named);
  renderSoftmax(result, config, sel, named, onPickKey);
  renderValues(result, config, sel, named);
  return parts;
}

/** "How much patch A attends to B and C": A's weights to its two favourite other tokens, per head. */
function attendsTable(result, config, sel, names) {
  const r = Array.from(row(result.attention, config, sel.layer, sel.head, sel.query));
  const others = r.map((w, t) => ({ w, t })).filter(({ t }) => t !== sel.query);
  const [b, c] = others.sort((x, y) => y.w - x.w).map(({ t }) => t);
  const heads = Array.from({ length: config.heads }, (_, h) => row(result.attention, config, sel.layer, h, sel.query));
  const line = (label, w) => el("tr", {}, el("th", { scope: "row" }, label), cell(w[b]), cell(w[c]), cell(1 - w[b] - w[c]));
  const mean = (t) => heads.reduce((s, w) => s + w[t], 0) / config.heads;
  const meanRow = line("mean over heads", { [b]: mean(b), [c]: mean(c) });
  return el(
    "table",
    { id: "attends-table" },
    el("caption", {}, `How much ${names.token(sel.query)} attends to ${names.token(b)} and ${names.token(c)}, layer ${sel.layer + 1}`),
    el(
      "thead",
      {},
      el("tr", {}, ...["", names.token(b), names.token(c), "everything else"].map((t) => el("th", { scope: "col" }, t))),
    ),
    el("tbody", {}, ...heads.map((w, h) => line(`head ${h + 1}`, w)), meanRow),
  );
}

/** The lesson, step by step, with this digit's numbers for the selected weight (its `parts`). */
export function renderLesson(result, config, sel, names, parts) {
  const [a, b] = [names.token(sel.query), names.token(sel.key)];
  const v = vector(result.value, config, sel.layer, sel.head, sel.key);
  const weights = row(result.attention, config, sel.layer, sel.head, sel.query);
  const d = config.head_dim;
  const where = `layer ${sel.layer + 1}, head ${sel.head + 1}`;
  const steps = [
    [
      "A conference. ",
      `Every token is a guest at a conference: ${config.tokens - 1} patches and the class token. Each carries a question ` +
        `(its query: what am I looking for?), a badge (its key: what do I offer?) and what it will say when asked ` +
        `(its value: what I carry).`,
    ],
    [
      "Q = W_Q x. ",
      `In ${where}, ${a}'s ${config.dim} numbers x (after the layer's normalisation) are multiplied by W_Q, a ` +
        `${config.dim}\u00d7${d} matrix learned in training, plus its bias: its query is ${d} numbers, ${list(parts.q)}. ` +
        `W_K and W_V do the same for every token's key and value: ${b}'s key is ${list(parts.k)}.`,
    ],
    [
      "The dot product. ",
      `How well ${a}'s question fits ${b}'s badge: multiply them number by number and add up, ` +
        `${fixed(parts.q[0])}\u00d7${fixed(parts.k[0])} + ${fixed(parts.q[1])}\u00d7${fixed(parts.k[1])} + \u2026 = ${fixed(parts.sum, 4)}; ` +
        `divided by \u221a${d} = ${fixed(parts.root, 0)} so that longer vectors do not make the softmax sharper: a score of ${fixed(parts.score, 4)}.`,
    ],
    [
      "Softmax. ",
      `${a} scores every one of the ${config.tokens} tokens; e^score, divided by the total, turns the scores into weights ` +
        `that add up to 1: ${b} gets ${fixed(parts.weight)} of ${a}'s attention.`,
    ],
    [
      "The weighted sum of values. ",
      `${a}'s new vector in this head is the sum of every token's value times its weight: ${fixed(parts.weight)} \u00d7 ` +
        `${b}'s value ${list(v)} + ${fixed(weights[CLS])} \u00d7 the class token's value + \u2026 The heads' results, side by side, ` +
        `are projected back to ${config.dim} numbers and added to ${a}'s state.`,
    ],
  ];
  $("lesson-steps").replaceChildren(...steps.map(([title, text]) => el("li", {}, el("strong", {}, title), text)));
  $("lesson-table").replaceChildren(attendsTable(result, config, sel, names));
}

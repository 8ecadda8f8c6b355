// A drawing -> the 28x28 image the model expects: a step-by-step port of edgevit/preprocess.py.
//
// The model was trained on MNIST, whose digits are white on black, scaled to fit 20x20 and centred
// by their centre of mass in 28x28. Python brings any image to that convention; this file does the
// same to the drawing pad in the browser, so the page classifies exactly what `edgevit-classify`
// would classify from a PNG of the pad. Each function below names its Python original. Pillow's
// resampling filters (BOX, BILINEAR, LANCZOS) and rank filters are ported too, since their exact
// weights decide the pixels. Python works in float32 (numpy) and double (Pillow's accumulators);
// Math.fround marks the places where float32 rounding is reproduced.

// constants of edgevit/preprocess.py
const CANVAS = 28;
const BOX = 20;
const STROKE_SCALE = 4;
const MNIST_STROKE = 7.4;
const STROKE_RANGE = [5.5, 12.0];
const MIN_CONTRAST = 0.08;
const MAX_WORK = 512;
const COARSE = 96;
const PAPER = 32;
const PAPER_FILTER = 9;
const PAPER_BLUR = 3; // radius of _paper's box blur
const NOISE_FLOOR = 0.5;
const SPECK = 0.08;
const MIN_INK_PIXELS = 4;
const MAX_FILTER = 15; // the widest stroke filter (normalize_strokes)
const BLOB_LEVEL = 0.25; // ink above this counts as part of a stroke when finding the digit
const TRANSPARENT_SHARE = 0.05; // more of the picture than this transparent: ink is opacity
const OTSU_BINS = 64;
const IMPULSE_SHARE = 0.004; // _noisy: isolated specks above this share of the pixels...
const MIN_SPECKS = 8; // ...and at least this many
const SPECK_STEP = 0.25;
const GRAIN = 0.04;
const MEDIAN_STEPS = 0.6745 * 2 ** 0.5;
const DENOISE_PASSES = 2;
const LUMA = [0.299, 0.587, 0.114].map(Math.fround); // ITU-R 601, as numpy's float32 weights
const f32 = Math.fround;

/** No digit on the pad (blank, or only specks): Python raises EdgeViTError for the same image. */
export class NoDigitError extends Error {}

// An image is {w, h, data: Float32Array(w * h)}, row-major, like a numpy float32 array.
const image = (w, h, data = new Float32Array(w * h)) => ({ w, h, data });

/** Python's round(): halves go to the even neighbour (round(2.5) == 2). */
function pyRound(x) {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function maxOf(data) {
  let m = -Infinity;
  for (const v of data) if (v > m) m = v;
  return m;
}

// --- Pillow's resize (libImaging/Resample.c), for mode "F" images ------------------------------
function sinc(x) {
  if (x === 0) return 1;
  x *= Math.PI;
  return Math.sin(x) / x;
}

const FILTERS = {
  box: { support: 0.5, weight: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0) },
  bilinear: { support: 1, weight: (x) => Math.max(0, 1 - Math.abs(x)) },
  lanczos: { support: 3, weight: (x) => (x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0) },
};

/** For each output pixel, the first input pixel and the normalised weights (precompute_coeffs). */
function coefficients(inSize, outSize, filter) {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1); // when shrinking, the filter widens to average everything
  const support = filter.support * filterScale;
  const taps = [];
  for (let out = 0; out < outSize; out++) {
    const centre = (out + 0.5) * scale;
    const first = Math.max(0, Math.trunc(centre - support + 0.5));
    const end = Math.min(inSize, Math.trunc(centre + support + 0.5));
    const weights = [];
    const inverse = 1 / filterScale; // Pillow multiplies by the reciprocal: same rounding
    for (let x = first; x < end; x++) weights.push(filter.weight((x - centre + 0.5) * inverse));
    const total = weights.reduce((a, b) => a + b, 0);
    taps.push({ first, weights: total === 0 ? weights : weights.map((w) => w / total) });
  }
  return taps;
}

/** One pass along rows (horizontal) or columns; sums in double, stores float32, as Pillow. */
function resamplePass(src, outW, outH, taps, horizontal) {
  const dst = image(outW, outH);
  for (let y = 0; y < outH; y++) {
    for (let x = 0; x < outW; x++) {
      const { first, weights } = taps[horizontal ? x : y];
      let sum = 0;
      for (let i = 0; i < weights.length; i++) {
        sum += (horizontal ? src.data[y * src.w + first + i] : src.data[(first + i) * src.w + x]) * weights[i];
      }
      dst.data[y * outW + x] = sum;
    }
  }
  return dst;
}

/** Image.resize((w, h), filter) for a float image: horizontal pass, then vertical, each only if needed. */
export function resize(src, w, h, filterName) {
  const filter = FILTERS[filterName];
  let out = src;
  if (w !== src.w) out = resamplePass(out, w, out.h, coefficients(src.w, w, filter), true);
  if (h !== src.h) out = resamplePass(out, w, h, coefficients(src.h, h, filter), false);
  return out === src ? image(w, h, src.data.slice()) : out;
}

// --- Pillow's MaxFilter / MinFilter -----------------------------------------------------------
/** size x size max (or min) around each pixel, edges repeated (RankFilter expands by edge pixels). */
export function rankFilter(src, size, pick) {
  // a square window's max is the max over rows of the max over columns: two cheap 1-D passes
  const r = size >> 1;
  const line = (get, n, put) => {
    for (let i = 0; i < n; i++) {
      let m = get(i);
      for (let d = -r; d <= r; d++) m = pick(m, get(Math.min(n - 1, Math.max(0, i + d))));
      put(i, m);
    }
  };
  const { w, h } = src;
  const rows = image(w, h);
  for (let y = 0; y < h; y++) line((x) => src.data[y * w + x], w, (x, v) => (rows.data[y * w + x] = v));
  const out = image(w, h);
  for (let x = 0; x < w; x++) line((y) => rows.data[y * w + x], h, (y, v) => (out.data[y * w + x] = v));
  return out;
}

// --- numpy helpers ----------------------------------------------------------------------------
/** The k-th smallest of values (0-based) and the one after it, by quickselect: no full sort needed. */
function orderStatistics(values, k) {
  const a = Float32Array.from(values);
  let lo = 0;
  let hi = a.length - 1;
  while (lo < hi) {
    const pivot = a[(lo + hi) >> 1];
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i] < pivot) i++;
      while (a[j] > pivot) j--;
      if (i <= j) [a[i++], a[j--]] = [a[j], a[i]];
    }
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else break; // k landed among values equal to the pivot
  }
  // everything right of k is >= a[k], so the next order statistic is their minimum
  let next = k + 1 < a.length ? Infinity : a[k];
  for (let i = k + 1; i < a.length; i++) if (a[i] < next) next = a[i];
  return [a[k], next];
}

/** np.percentile(values, q) with numpy's default linear interpolation. */
function percentile(values, q) {
  const index = (q / 100) * (values.length - 1);
  const t = index - Math.floor(index);
  const [a, b] = orderStatistics(values, Math.floor(index));
  return f32(t >= 0.5 ? b - (b - a) * (1 - t) : a + (b - a) * t); // numpy's _lerp; the result is float32
}

/** np.median: the middle value, or the mean of the two middle values. */
function median(values) {
  const n = values.length;
  const [a, b] = orderStatistics(values, (n - 1) >> 1);
  return n % 2 ? a : f32((a + b) / 2);
}

/** Otsu's threshold on a 64-bin histogram of values on [0, 1] (_otsu). */
function otsu(values) {
  const hist = new Float64Array(OTSU_BINS);
  for (const v of values) hist[Math.min(OTSU_BINS - 1, Math.floor(v * OTSU_BINS))]++;
  const centre = (i) => (i + 0.5) / OTSU_BINS;
  let total = 0;
  let totalMoment = 0;
  for (let i = 0; i < OTSU_BINS; i++) {
    total += hist[i];
    totalMoment += hist[i] * centre(i);
  }
  let w0 = 0;
  let moment0 = 0;
  let best = -Infinity;
  let threshold = 0;
  for (let i = 0; i < OTSU_BINS; i++) {
    w0 += hist[i];
    moment0 += hist[i] * centre(i);
    const w1 = total - w0;
    const m0 = moment0 / Math.max(w0, 1);
    const m1 = (totalMoment - moment0) / Math.max(w1, 1);
    const between = w0 * w1 * (m0 - m1) ** 2; // between-class variance, up to a constant
    if (between > best) {
      best = between;
      threshold = centre(i);
    }
  }
  return threshold;
}

/** _box_blur: separable box blur with edge padding, by running sums in double. */
function boxBlur(src, radius) {
  const k = 2 * radius + 1;
  const pad = (i, n) => Math.min(n - 1, Math.max(0, i - radius));
  const W = src.w + 2 * radius;
  const H = src.h + 2 * radius;
  let a = new Float64Array(W * H);
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) a[y * W + x] = src.data[pad(y, src.h) * src.w + pad(x, src.w)];
  // rows first (numpy's axis 0), then columns; each: cumulative sum, then differences k apart
  const blur = (arr, w, h, alongY) => {
    const outW = alongY ? w : w - k + 1;
    const outH = alongY ? h - k + 1 : h;
    const out = new Float64Array(outW * outH);
    const n = alongY ? h : w;
    for (let j = 0; j < (alongY ? w : h); j++) {
      const at = (i) => (alongY ? arr[i * w + j] : arr[j * w + i]);
      const cum = new Float64Array(n + 1);
      for (let i = 0; i < n; i++) cum[i + 1] = cum[i] + at(i);
      for (let i = 0; i + k <= n; i++) out[alongY ? i * outW + j : j * outW + i] = (cum[i + k] - cum[i]) / k;
    }
    return out;
  };
  a = blur(a, W, H, true);
  a = blur(a, W, src.h, false);
  return image(src.w, src.h, Float32Array.from(a));
}

// --- step 2: ink --------------------------------------------------------------------------------
/** Opacity on [0, 1] from RGBA bytes (ImageData.data): _luminance_and_alpha's alpha. */
function opacity(rgba, w, h) {
  const alpha = image(w, h);
  for (let i = 0; i < w * h; i++) alpha.data[i] = f32(rgba[4 * i + 3] / 255);
  return alpha;
}

/** Grey level on [0, 1] from RGBA bytes, in numpy's float32 steps: _luminance_and_alpha's grey. */
function luminance(rgba, w, h) {
  const grey = image(w, h);
  const unit = (byte) => f32(byte / 255);
  for (let i = 0, p = 0; i < w * h; i++, p += 4) {
    const r = f32(unit(rgba[p]) * LUMA[0]);
    const g = f32(unit(rgba[p + 1]) * LUMA[1]);
    const b = f32(unit(rgba[p + 2]) * LUMA[2]);
    grey.data[i] = f32(f32(r + g) + b);
  }
  return grey;
}

/** _paper: the local background level, strokes filtered out at coarse scale, smoothed back up. */
function paper(grey, darkInk) {
  const scale = PAPER / Math.max(grey.h, grey.w);
  let small = grey;
  if (scale < 1) {
    small = resize(grey, Math.max(1, pyRound(grey.w * scale)), Math.max(1, pyRound(grey.h * scale)), "box");
  }
  const filtered = rankFilter(small, PAPER_FILTER, darkInk ? Math.max : Math.min);
  return resize(boxBlur(filtered, PAPER_BLUR), grey.w, grey.h, "bilinear");
}

/** ink_map: ink on [0, 1] (1 = full stroke), paper at 0. Throws NoDigitError when there is no ink. */
export function inkMap(rgba, w, h) {
  if (Math.max(w, h) > MAX_WORK) {
    // Python first shrinks such images (Image.thumbnail); the pad is smaller, so that step is not ported
    throw new RangeError(`images up to ${MAX_WORK} pixels a side`);
  }
  const alpha = opacity(rgba, w, h);
  let transparent = 0;
  for (const a of alpha.data) transparent += a < 0.5;
  // drawn on a transparent pad, ink is where the pen went; else it is contrast against the paper
  const ink = transparent / alpha.data.length > TRANSPARENT_SHARE ? alpha : contrastInk(luminance(rgba, w, h));
  const peak = ink.data.length > 1000 ? percentile(ink.data, 99.9) : maxOf(ink.data);
  if (peak < MIN_CONTRAST) throw new NoDigitError("no digit found (the image has no ink with enough contrast)");
  const scaled = ink.data.map((v) => Math.min(1, Math.max(0, f32(v / peak))));
  const floor = NOISE_FLOOR * otsu(scaled);
  const out = scaled.map((v) => Math.min(1, Math.max(0, f32(f32(v - floor) / f32(1 - floor)))));
  return image(w, h, out);
}

/** The 3x3 neighbourhood of (x, y), edges repeated, row by row: _neighbours' column at that pixel. */
function around(img, x, y) {
  const out = [];
  for (let dy = -1; dy <= 1; dy++) {
    const row = Math.min(img.h - 1, Math.max(0, y + dy)) * img.w;
    for (let dx = -1; dx <= 1; dx++) out.push(img.data[row + Math.min(img.w - 1, Math.max(0, x + dx))]);
  }
  return out;
}

/** noisy: impulse noise (isolated specks) or sensor grain. */
function noisy(grey) {
  const { w, h, data } = grey;
  if (Math.min(w, h) < 3) return false;
  let specks = 0;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const near = around(grey, x, y);
      const v = near.splice(4, 1)[0];
      if (f32(v - Math.max(...near)) > SPECK_STEP || f32(Math.min(...near) - v) > SPECK_STEP) specks++;
    }
  }
  const steps = [];
  for (let y = 0; y < h; y++) for (let x = 0; x + 1 < w; x++) steps.push(Math.abs(f32(data[y * w + x + 1] - data[y * w + x])));
  return (specks / data.length > IMPULSE_SHARE && specks >= MIN_SPECKS) || median(steps) / MEDIAN_STEPS > GRAIN;
}

/** denoise: a noisy image median-filtered (3x3) until it is not noisy, at most DENOISE_PASSES times. */
function denoise(grey) {
  for (let pass = 0; pass < DENOISE_PASSES && noisy(grey); pass++) {
    const out = image(grey.w, grey.h);
    for (let y = 0; y < grey.h; y++) {
      for (let x = 0; x < grey.w; x++) out.data[y * grey.w + x] = around(grey, x, y).sort((a, b) => a - b)[4];
    }
    grey = out;
  }
  return grey;
}

/** An opaque picture: ink is the distance from the local paper level, on the sparse side. */
function contrastInk(noisyGrey) {
  const grey = denoise(noisyGrey);
  const middle = median(grey.data);
  const darkTail = percentile(grey.data.map((g) => Math.max(0, middle - g)), 99.5);
  const lightTail = percentile(grey.data.map((g) => Math.max(0, g - middle)), 99.5);
  const darkInk = darkTail >= lightTail;
  const bg = paper(grey, darkInk);
  return image(grey.w, grey.h, grey.data.map((g, i) => Math.max(0, darkInk ? bg.data[i] - g : g - bg.data[i])));
}

// --- step 3: digit ------------------------------------------------------------------------------
/** _blobs: 8-connected components of a mask, as lists of flat indices. */
function blobs(mask, w, h) {
  const seen = new Uint8Array(w * h);
  const found = [];
  for (let start = 0; start < w * h; start++) {
    if (!mask[start] || seen[start]) continue;
    seen[start] = 1;
    const members = [start];
    for (let head = 0; head < members.length; head++) {
      const y = Math.floor(members[head] / w);
      const x = members[head] % w;
      for (let ny = y - 1; ny <= y + 1; ny++) {
        for (let nx = x - 1; nx <= x + 1; nx++) {
          const q = ny * w + nx;
          if (ny >= 0 && ny < h && nx >= 0 && nx < w && mask[q] && !seen[q]) {
            seen[q] = 1;
            members.push(q);
          }
        }
      }
    }
    found.push(members);
  }
  return found;
}

/** Rows and columns spanned by pixels above `level`: {top, bottom, left, right} inclusive, or null. */
function extent(img, level) {
  let top = Infinity;
  let bottom = -1;
  let left = Infinity;
  let right = -1;
  let count = 0;
  for (let y = 0; y < img.h; y++) {
    for (let x = 0; x < img.w; x++) {
      if (img.data[y * img.w + x] > level) {
        count++;
        top = Math.min(top, y);
        bottom = Math.max(bottom, y);
        left = Math.min(left, x);
        right = Math.max(right, x);
      }
    }
  }
  return count ? { top, bottom, left, right, count } : null;
}

/** Copy src into dst with its top-left corner at (top, left). */
function paste(dst, src, top, left) {
  for (let y = 0; y < src.h; y++) dst.data.set(src.data.subarray(y * src.w, (y + 1) * src.w), (y + top) * dst.w + left);
}

function cropImage(img, top, bottom, left, right) {
  const out = image(right - left, bottom - top);
  for (let y = top; y < bottom; y++) out.data.set(img.data.subarray(y * img.w + left, y * img.w + right), (y - top) * out.w);
  return out;
}

/** digit_crop: the digit's bounding box, specks far smaller than its strokes dropped. */
export function digitCrop(ink) {
  // blobs are found on a reduced copy: fast, and a broken stroke reconnects at coarse scale
  const scale = Math.min(1, COARSE / Math.max(ink.h, ink.w));
  const small =
    scale < 1 ? resize(ink, Math.max(1, pyRound(ink.w * scale)), Math.max(1, pyRound(ink.h * scale)), "box") : ink;
  const mask = small.data.map((v) => (v > BLOB_LEVEL ? 1 : 0));
  const found = blobs(mask, small.w, small.h);
  if (!found.length || mask.reduce((a, b) => a + b, 0) < MIN_INK_PIXELS) {
    throw new NoDigitError("no digit found (only specks of ink)");
  }
  const mass = found.map((b) => b.reduce((sum, p) => sum + small.data[p], 0));
  const heaviest = Math.max(...mass);
  const kept = found.filter((_, i) => mass[i] >= SPECK * heaviest).flat();
  const ys = kept.map((p) => Math.floor(p / small.w));
  const xs = kept.map((p) => p % small.w);
  // map the coarse box back to full resolution, with a one-pixel margin for rounding
  const y0 = Math.max(0, Math.trunc(Math.min(...ys) / scale) - 1);
  const y1 = Math.min(ink.h, Math.trunc((Math.max(...ys) + 1) / scale) + 1);
  const x0 = Math.max(0, Math.trunc(Math.min(...xs) / scale) - 1);
  const x1 = Math.min(ink.w, Math.trunc((Math.max(...xs) + 1) / scale) + 1);
  const crop = cropImage(ink, y0, y1, x0, x1);
  // drop what the coarse pass called specks but lies inside the box at full resolution
  const box = extent(crop, BLOB_LEVEL);
  if (!box || box.count < MIN_INK_PIXELS) throw new NoDigitError("no digit found (only specks of ink)");
  return cropImage(crop, box.top, box.bottom + 1, box.left, box.right + 1);
}

// --- step 4: strokes ----------------------------------------------------------------------------
/** stroke_width: 2 x area / perimeter of the shape where img > level. */
function strokeWidth(img, level) {
  const on = (x, y) => (x >= 0 && x < img.w && y >= 0 && y < img.h && img.data[y * img.w + x] > level ? 1 : 0);
  let area = 0;
  let perimeter = 0;
  for (let y = -1; y < img.h; y++) {
    for (let x = -1; x < img.w; x++) {
      area += on(x, y);
      perimeter += Math.abs(on(x + 1, y) - on(x, y)) + Math.abs(on(x, y + 1) - on(x, y));
    }
  }
  return (2 * area) / Math.max(1, perimeter);
}

/** _fit: scale to fit size x size keeping the aspect; LANCZOS when enlarging, BOX (area) when reducing. */
function fit(img, size) {
  const s = size / Math.max(img.w, img.h);
  const w = Math.max(1, pyRound(img.w * s));
  const h = Math.max(1, pyRound(img.h * s));
  return resize(img, w, h, s > 1 ? "lanczos" : "box");
}

/** Clip below at 0 (Lanczos rings negative), then scale so the brightest pixel is 1. */
function toUnitPeak(img) {
  const clipped = img.data.map((v) => Math.max(0, v));
  const peak = f32(Math.max(maxOf(clipped), 1e-6));
  return image(img.w, img.h, clipped.map((v) => Math.min(1, Math.max(0, f32(v / peak)))));
}

/** normalize_strokes: the crop at 4x MNIST scale, strokes thickened or thinned toward MNIST's pen. */
export function normalizeStrokes(crop) {
  const big = toUnitPeak(fit(crop, BOX * STROKE_SCALE)); // a hairline averages faint: restore its peak
  const width = strokeWidth(big, 0.5);
  const [lo, hi] = STROKE_RANGE;
  if (width >= lo && width <= hi) return big;
  // a k-wide filter changes the width by about k - 1
  const size = Math.min(2 * pyRound(Math.abs(MNIST_STROKE - width) / 2) + 1, MAX_FILTER);
  if (size < 3) return big;
  const pad = size; // room for the strokes to grow before the box is re-fitted
  const padded = image(big.w + 2 * pad, big.h + 2 * pad);
  paste(padded, big, pad, pad);
  const filtered = rankFilter(padded, size, width < lo ? Math.max : Math.min);
  const box = extent(filtered, BLOB_LEVEL);
  return box ? cropImage(filtered, box.top, box.bottom + 1, box.left, box.right + 1) : big;
}

// --- step 5: MNIST's box ------------------------------------------------------------------------
/** mnist_layout: fit 20x20 keeping aspect, centre of mass at the centre of 28x28, on [0, 255]. */
export function mnistLayout(digit) {
  const small = toUnitPeak(fit(digit, BOX));
  const canvas = image(CANVAS, CANVAS);
  paste(canvas, small, Math.floor((CANVAS - small.h) / 2), Math.floor((CANVAS - small.w) / 2));
  let total = 0;
  let sumY = 0;
  let sumX = 0;
  canvas.data.forEach((v, i) => {
    total += v;
    sumY += Math.floor(i / CANVAS) * v;
    sumX += (i % CANVAS) * v;
  });
  const centre = (CANVAS - 1) / 2;
  // sample each output pixel from the position shifted by the offset of the centre of mass
  return shiftBilinear(canvas.data, f32(sumX / f32(total) - centre), f32(sumY / f32(total) - centre));
}

/** warp_affine with a pure shift: out(x, y) = 255 * in(x + dx, y + dy), bilinear, black outside. */
function shiftBilinear(src, dx, dy) {
  const at = (x, y) => (x >= 0 && x < CANVAS && y >= 0 && y < CANVAS ? f32(src[y * CANVAS + x] * 255) : 0);
  const out = new Float32Array(CANVAS * CANVAS);
  const c = (CANVAS - 1) / 2;
  for (let y = 0; y < CANVAS; y++) {
    for (let x = 0; x < CANVAS; x++) {
      const sx = f32(f32(x - c + dx) + c);
      const sy = f32(f32(y - c + dy) + c);
      const x0 = Math.floor(sx);
      const y0 = Math.floor(sy);
      const fx = f32(sx - x0);
      const fy = f32(sy - y0);
      const gx = f32(1 - fx);
      const gy = f32(1 - fy);
      let v = f32(f32(at(x0, y0) * gx) * gy);
      v = f32(v + f32(f32(at(x0 + 1, y0) * fx) * gy));
      v = f32(v + f32(f32(at(x0, y0 + 1) * gx) * fy));
      v = f32(v + f32(f32(at(x0 + 1, y0 + 1) * fx) * fy));
      out[y * CANVAS + x] = Math.min(255, Math.max(0, v));
    }
  }
  return out;
}

/** preprocess: canvas RGBA bytes (ImageData.data) -> 784 floats on [0, 255], white digit on black. */
export function preprocess(rgba, width, height) {
  return mnistLayout(normalizeStrokes(digitCrop(inkMap(rgba, width, height))));
}

// Golden-vector check shared by the Node app and the browser page (plain ES module, no Node or DOM APIs).
//
// An export folder holds golden.json plus raw little-endian .bin arrays (see exporter/golden.py). An app
// runs the golden inputs through its own runtime, in chunks of `golden.batch` samples, and compares its
// first output with the PyTorch reference using the same figures and rules as the exporter's gate.

const TYPED = {
  float32: Float32Array,
  float16: Uint16Array, // raw half-precision bits; onnxruntime takes them as a 'float16' tensor
  int64: BigInt64Array,
  int32: Int32Array,
  uint8: Uint8Array,
  int8: Int8Array,
  bool: Uint8Array,
};

/** A typed array view of one golden array's bytes (an ArrayBuffer, or a Node Buffer). */
export function typedArray(bytes, entry) {
  const Type = TYPED[entry.dtype];
  if (!Type) throw new Error(`golden.json: unsupported dtype ${entry.dtype} for ${entry.name}`);
  const buffer = bytes instanceof ArrayBuffer ? bytes : bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  const array = new Type(buffer);
  const expected = entry.shape.reduce((a, b) => a * b, 1);
  if (array.length !== expected) {
    throw new Error(`${entry.file} holds ${array.length} values, golden.json says shape [${entry.shape}]`);
  }
  return array;
}

/** Outputs of `run(feeds) -> Float32Array` over every golden chunk, concatenated (samples first). */
export async function runGolden(golden, inputs, makeTensor, run) {
  const perSample = golden.reference.shape.slice(1).reduce((a, b) => a * b, 1);
  const out = new Float32Array(golden.samples * perSample);
  for (let start = 0; start < golden.samples; start += golden.batch) {
    const feeds = {};
    for (const entry of golden.inputs) {
      const size = entry.shape.slice(1).reduce((a, b) => a * b, 1);
      const data = inputs[entry.name].slice(start * size, (start + golden.batch) * size);
      feeds[entry.name] = makeTensor(entry.dtype, data, [golden.batch, ...entry.shape.slice(1)]);
    }
    const result = await run(feeds);
    out.set(result, start * perSample);
  }
  return out;
}

/** The gate's figures of `candidate` against `reference` (flat arrays, shape of golden.reference). */
export function figures(reference, candidate, shape) {
  const rows = shape[0];
  const cols = reference.length / rows;
  let maxAbs = 0, sumAbs = 0, signal = 0, noise = 0, cosSum = 0, agree = 0;
  for (let r = 0; r < rows; r++) {
    let dot = 0, nr = 0, nc = 0, refTop = 0, candTop = 0;
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      const a = reference[i], b = candidate[i], d = Math.abs(a - b);
      maxAbs = Math.max(maxAbs, d);
      sumAbs += d;
      signal += a * a;
      noise += (a - b) * (a - b);
      dot += a * b; nr += a * a; nc += b * b;
      if (a > reference[r * cols + refTop]) refTop = c;
      if (b > candidate[r * cols + candTop]) candTop = c;
    }
    const norms = Math.sqrt(nr) * Math.sqrt(nc);
    let same = true;
    for (let c = 0; c < cols && same; c++) same = reference[r * cols + c] === candidate[r * cols + c];
    cosSum += norms > 0 ? dot / norms : (same ? 1 : 0);
    if (refTop === candTop) agree += 1;
  }
  const result = {
    samples: rows,
    max_abs_error: maxAbs,
    mean_abs_error: sumAbs / reference.length,
    cosine: cosSum / rows,
    sqnr_db: noise === 0 ? Infinity : signal === 0 ? -Infinity : 10 * Math.log10(signal / noise),
    top1_agreement: null,
  };
  if (shape.length === 2 && shape[1] > 1) result.top1_agreement = agree / rows;
  return result;
}

/** Each tolerance rule of golden.json applied to `measured`: [{figure, rule, threshold, measured, passed}]. */
export function applyTolerance(measured, rules) {
  return rules
    .filter((t) => measured[t.figure] !== null && measured[t.figure] !== undefined)
    .map((t) => {
      const value = measured[t.figure];
      const passed = t.rule === '>=' ? value >= t.threshold : value <= t.threshold + 1e-12;
      return { figure: t.figure, rule: t.rule, threshold: t.threshold, measured: value, passed };
    });
}

/** JSON-safe copy (Infinity and NaN become strings, as in the exporter's report.json). */
export function jsonSafe(value) {
  return JSON.parse(JSON.stringify(value, (_, v) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v)));
}

/** One line per check, e.g. `cosine 0.9993 >= 0.98: pass`. */
export function describe(checks) {
  return checks.map((c) => `${c.figure} ${fmt(c.measured)} ${c.rule} ${fmt(c.threshold)}: ${c.passed ? 'pass' : 'FAIL'}`);
}

function fmt(x) {
  return Number.isFinite(x) ? Number(x.toPrecision(4)).toString() : String(x);
}

/** Softmax probabilities of one row of logits. */
export function softmax(logits) {
  const max = Math.max(...logits);
  const exp = Array.from(logits, (v) => Math.exp(v - max));
  const sum = exp.reduce((a, b) => a + b, 0);
  return exp.map((v) => v / sum);
}

/**
 * A model input from 8-bit pixels: `rgba` is width*height*4 bytes, `shape` the model's [N, C, H, W]
 * (or [N, H, W]). Resizes with bilinear sampling, converts to gray for one channel, scales to [0, 1],
 * then applies golden.preprocess mean/std when the export recorded them.
 */
export function pixelsToInput(rgba, width, height, shape, preprocess = {}) {
  const dims = shape.length === 4 ? shape.slice(1) : [1, ...shape.slice(1)];
  const [channels, outH, outW] = dims;
  const out = new Float32Array(channels * outH * outW);
  const mean = preprocess.mean || [], std = preprocess.std || [];
  for (let y = 0; y < outH; y++) {
    for (let x = 0; x < outW; x++) {
      const sx = Math.min(width - 1, Math.max(0, ((x + 0.5) * width) / outW - 0.5));
      const sy = Math.min(height - 1, Math.max(0, ((y + 0.5) * height) / outH - 0.5));
      const x0 = Math.floor(sx), y0 = Math.floor(sy), x1 = Math.min(width - 1, x0 + 1), y1 = Math.min(height - 1, y0 + 1);
      const fx = sx - x0, fy = sy - y0;
      const px = (xx, yy, c) => rgba[(yy * width + xx) * 4 + c];
      const sample = (c) =>
        (px(x0, y0, c) * (1 - fx) + px(x1, y0, c) * fx) * (1 - fy) + (px(x0, y1, c) * (1 - fx) + px(x1, y1, c) * fx) * fy;
      const rgb = [sample(0), sample(1), sample(2)];
      for (let c = 0; c < channels; c++) {
        // ITU-R 601 luma, as Pillow's convert('L')
        let v = channels === 1 ? (rgb[0] * 299 + rgb[1] * 587 + rgb[2] * 114) / 1000 : rgb[c];
        v /= 255;
        if (mean.length) v -= mean[c % mean.length];
        if (std.length) v /= std[c % std.length];
        out[c * outH * outW + y * outW + x] = v;
      }
    }
  }
  return out;
}

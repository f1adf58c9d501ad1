// The browser page: load an export folder, check its golden vectors on onnxruntime-web (WASM), classify images.
//
// Files come from the folder picker, or from URLs: index.html?out=/path/to/export/&image=/path/to/image.png
// (the tests use that, plus &report=/result to POST the page's result back). The WASM files are served
// from this sample's own node_modules: no CDN.
import * as ort from './node_modules/onnxruntime-web/dist/ort.wasm.min.mjs';
import { applyTolerance, describe, figures, jsonSafe, pixelsToInput, runGolden, softmax, typedArray } from '../common/golden.mjs';

ort.env.wasm.wasmPaths = new URL('./node_modules/onnxruntime-web/dist/', import.meta.url).href;
ort.env.wasm.numThreads = 1;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const state = { session: null, golden: null, result: { runtime: 'onnxruntime-web (wasm)', version: ort.env.versions?.web ?? null } };

/** Load model and golden vectors through `read(name) -> ArrayBuffer`, then check the golden vectors. */
async function loadExport(read) {
  const golden = JSON.parse(new TextDecoder().decode(await read('golden.json')));
  const session = await ort.InferenceSession.create(new Uint8Array(await read(golden.model)), { executionProviders: ['wasm'] });
  const inputs = {};
  for (const entry of golden.inputs) inputs[entry.name] = typedArray(await read(entry.file), entry);
  const reference = typedArray(await read(golden.reference.file), golden.reference);
  const makeTensor = (dtype, data, dims) => new ort.Tensor(dtype, data, dims);
  const run = async (feeds) => (await session.run(feeds))[session.outputNames[0]].data;
  const outputs = await runGolden(golden, inputs, makeTensor, run);
  const measured = figures(reference, outputs, golden.reference.shape);
  const checks = applyTolerance(measured, golden.tolerance);
  const passed = checks.every((c) => c.passed);
  Object.assign(state, { session, golden });
  Object.assign(state.result, { passed, figures: measured, checks, samples: golden.samples });
  if (params.get('report')) state.result.outputs = Array.from(outputs); // for `exporter verify --runtime browser`
  if (Number(params.get('time')) > 0) state.result.latency_ms = await timeFirstChunk(golden, inputs, makeTensor, session, Number(params.get('time')));
  $('verdict').textContent = `Golden vectors (${golden.samples} samples): ${passed ? 'PASS' : 'FAIL'}`;
  $('verdict').className = passed ? 'pass' : 'fail';
  $('checks').replaceChildren(...describe(checks).map((line) => Object.assign(document.createElement('li'), { textContent: line })));
  $('image').disabled = false;
}

/** Median batch-1 latency (ms) of the first golden chunk over `repeats` runs, after 5 warm-up runs. */
async function timeFirstChunk(golden, inputs, makeTensor, session, repeats) {
  const feeds = {};
  for (const entry of golden.inputs) {
    const size = entry.shape.slice(1).reduce((a, b) => a * b, 1);
    feeds[entry.name] = makeTensor(entry.dtype, inputs[entry.name].slice(0, golden.batch * size), [golden.batch, ...entry.shape.slice(1)]);
  }
  for (let i = 0; i < 5; i++) await session.run(feeds);
  const times = [];
  for (let i = 0; i < repeats; i++) {
    const start = performance.now();
    await session.run(feeds);
    times.push(performance.now() - start);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

/** Classify one image (any format the browser decodes) and show the top class. */
async function classify(blob, name) {
  const bitmap = await createImageBitmap(blob);
  const canvas = $('preview');
  canvas.width = bitmap.width; canvas.height = bitmap.height;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(bitmap, 0, 0);
  const rgba = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
  const entry = state.golden.inputs[0];
  const shape = [state.golden.batch, ...entry.shape.slice(1)];
  const one = pixelsToInput(rgba, bitmap.width, bitmap.height, [1, ...entry.shape.slice(1)], state.golden.preprocess);
  const data = new Float32Array(one.length * state.golden.batch);
  for (let i = 0; i < state.golden.batch; i++) data.set(one, i * one.length);
  const output = await state.session.run({ [entry.name]: new ort.Tensor('float32', data, shape) });
  const logits = Array.from(output[state.session.outputNames[0]].data).slice(0, output[state.session.outputNames[0]].dims.at(-1));
  const probs = softmax(logits);
  const label = probs.indexOf(Math.max(...probs));
  $('prediction').textContent = `${name}: class ${label} (${(probs[label] * 100).toFixed(1)}%)`;
  state.result.prediction = { image: name, label, probability: probs[label] };
}

async function publish() {
  $('result').textContent = JSON.stringify(jsonSafe(state.result), null, 2);
  document.body.dataset.state = 'done';
  if (params.get('report')) {
    await fetch(params.get('report'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(jsonSafe(state.result)) });
  }
}

async function guarded(work) {
  try {
    await work();
  } catch (error) {
    state.result.error = String(error?.message ?? error);
    $('verdict').textContent = `Error: ${state.result.error}`;
    $('verdict').className = 'fail';
  }
  await publish();
}

$('folder').addEventListener('change', (event) => guarded(async () => {
  const files = new Map([...event.target.files].map((f) => [f.name, f]));
  await loadExport(async (name) => {
    if (!files.has(name)) throw new Error(`${name} is not in the chosen folder: pick an exporter output folder`);
    return files.get(name).arrayBuffer();
  });
}));

$('image').addEventListener('change', (event) => guarded(async () => {
  const file = event.target.files[0];
  if (file) await classify(file, file.name);
}));

if (params.get('out')) {
  guarded(async () => {
    const base = new URL(params.get('out'), location.href);
    await loadExport(async (name) => {
      const response = await fetch(new URL(name, base));
      if (!response.ok) throw new Error(`${name}: HTTP ${response.status}`);
      return response.arrayBuffer();
    });
    if (params.get('image')) {
      const response = await fetch(params.get('image'));
      await classify(await response.blob(), params.get('image').split('/').pop());
    }
  });
}

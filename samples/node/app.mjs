#!/usr/bin/env node
// A minimal Node app that embeds an exported model with onnxruntime-node.
//
//   node app.mjs OUT_DIR [image.png ...] [--json] [--dump-outputs FILE] [--time N]
//
// It first proves the runtime computes what the exporter validated (the golden vectors in OUT_DIR,
// compared with the PyTorch reference under the gate's tolerance), then classifies each PNG given.
// Exit code: 0 golden vectors pass, 1 they do not, 2 bad input.
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { PNG } from 'pngjs';
import { applyTolerance, describe, figures, jsonSafe, pixelsToInput, runGolden, softmax, typedArray } from '../common/golden.mjs';

function parseArgs(argv) {
  const args = { images: [], json: false, dump: null, time: 0 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--json') args.json = true;
    else if (a === '--dump-outputs') args.dump = argv[++i];
    else if (a === '--time') args.time = Number(argv[++i]);
    else if (a.startsWith('--')) fail(`unknown option ${a}`);
    else if (!args.outDir) args.outDir = a;
    else args.images.push(a);
  }
  if (!args.outDir) fail('usage: node app.mjs OUT_DIR [image.png ...] [--json] [--dump-outputs FILE] [--time N]');
  return args;
}

function fail(message) {
  console.error(`error: ${message}`);
  process.exit(2);
}

function readGolden(outDir) {
  const path = join(outDir, 'golden.json');
  if (!existsSync(path)) fail(`${path} not found: pass an exporter output folder`);
  const golden = JSON.parse(readFileSync(path, 'utf8'));
  const inputs = {};
  for (const entry of golden.inputs) inputs[entry.name] = typedArray(readFileSync(join(outDir, entry.file)), entry);
  const reference = typedArray(readFileSync(join(outDir, golden.reference.file)), golden.reference);
  return { golden, inputs, reference };
}

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const { golden, inputs, reference } = readGolden(args.outDir);
  const session = await ort.InferenceSession.create(join(args.outDir, golden.model), {
    executionProviders: ['cpu'],
    intraOpNumThreads: 1,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
  });
  const outputName = session.outputNames[0];
  const run = async (feeds) => (await session.run(feeds))[outputName].data;
  const makeTensor = (dtype, data, dims) => new ort.Tensor(dtype === 'float16' ? 'float16' : dtype, data, dims);
  const outputs = await runGolden(golden, inputs, makeTensor, run);
  if (args.dump) writeFileSync(args.dump, Buffer.from(outputs.buffer));
  const measured = figures(reference, outputs, golden.reference.shape);
  const checks = applyTolerance(measured, golden.tolerance);
  const passed = checks.every((c) => c.passed);
  const result = { runtime: 'onnxruntime-node', version: ort.env.versions?.node ?? null, passed, figures: measured, checks };
  if (args.time > 0) {
    const first = {};
    for (const entry of golden.inputs) {
      const size = entry.shape.slice(1).reduce((a, b) => a * b, 1);
      first[entry.name] = makeTensor(entry.dtype, inputs[entry.name].slice(0, golden.batch * size), [golden.batch, ...entry.shape.slice(1)]);
    }
    for (let i = 0; i < 5; i++) await session.run(first);
    const times = [];
    for (let i = 0; i < args.time; i++) {
      const start = process.hrtime.bigint();
      await session.run(first);
      times.push(Number(process.hrtime.bigint() - start) / 1e6);
    }
    result.latency_ms = median(times);
  }
  result.predictions = args.images.map((file) => classify(file, golden, session, makeTensor));
  result.predictions = await Promise.all(result.predictions);
  if (args.json) {
    console.log(JSON.stringify(jsonSafe(result)));
  } else {
    console.log(`golden vectors (${golden.samples} samples, onnxruntime-node): ${passed ? 'PASS' : 'FAIL'}`);
    for (const line of describe(checks)) console.log(`  ${line}`);
    for (const p of result.predictions) console.log(`${p.file}: ${p.label} (${(p.probability * 100).toFixed(1)}%)`);
  }
  process.exit(passed ? 0 : 1);
}

async function classify(file, golden, session, makeTensor) {
  if (!existsSync(file)) fail(`image not found: ${file}`);
  const png = PNG.sync.read(readFileSync(file));
  const entry = golden.inputs[0];
  const one = pixelsToInput(png.data, png.width, png.height, [1, ...entry.shape.slice(1)], golden.preprocess);
  const data = new Float32Array(one.length * golden.batch); // a fixed-shape file takes exactly `batch` rows
  for (let i = 0; i < golden.batch; i++) data.set(one, i * one.length);
  const feeds = { [entry.name]: makeTensor('float32', data, [golden.batch, ...entry.shape.slice(1)]) };
  const output = (await session.run(feeds))[session.outputNames[0]];
  const logits = output.data.slice(0, output.dims.at(-1));
  const probs = softmax(logits);
  const label = probs.indexOf(Math.max(...probs));
  return { file, label, probability: probs[label] };
}

main().catch((error) => {
  console.error(`error: ${error.message}`);
  process.exit(2);
});

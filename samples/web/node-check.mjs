#!/usr/bin/env node
// The golden-vector check of the web sample, run on onnxruntime-web's WASM backend inside Node
// (the same kernels the page runs in a browser), for `exporter verify --runtime web` and the benchmarks.
//
//   node node-check.mjs OUT_DIR [--dump-outputs FILE] [--time N]
//
// Prints one JSON line; exit 0 golden vectors pass, 1 they do not, 2 bad input.
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-web';
import { applyTolerance, figures, jsonSafe, runGolden, typedArray } from '../common/golden.mjs';

ort.env.wasm.numThreads = 1;

async function main() {
  const argv = process.argv.slice(2);
  const outDir = argv.find((a, i) => !a.startsWith('--') && !['--dump-outputs', '--time'].includes(argv[i - 1]));
  const option = (name) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : null);
  if (!outDir || !existsSync(join(outDir, 'golden.json'))) {
    console.error(`error: ${outDir ?? 'OUT_DIR'}/golden.json not found: usage: node node-check.mjs OUT_DIR [--dump-outputs FILE] [--time N]`);
    process.exit(2);
  }
  const golden = JSON.parse(readFileSync(join(outDir, 'golden.json'), 'utf8'));
  const inputs = {};
  for (const entry of golden.inputs) inputs[entry.name] = typedArray(readFileSync(join(outDir, entry.file)), entry);
  const reference = typedArray(readFileSync(join(outDir, golden.reference.file)), golden.reference);
  const session = await ort.InferenceSession.create(new Uint8Array(readFileSync(join(outDir, golden.model))), { executionProviders: ['wasm'] });
  const makeTensor = (dtype, data, dims) => new ort.Tensor(dtype, data, dims);
  const run = async (feeds) => (await session.run(feeds))[session.outputNames[0]].data;
  const outputs = await runGolden(golden, inputs, makeTensor, run);
  if (option('--dump-outputs')) writeFileSync(option('--dump-outputs'), Buffer.from(outputs.buffer));
  const measured = figures(reference, outputs, golden.reference.shape);
  const checks = applyTolerance(measured, golden.tolerance);
  const result = { runtime: 'onnxruntime-web (wasm, node)', version: ort.env.versions?.web ?? null, passed: checks.every((c) => c.passed), figures: measured, checks };
  const repeats = Number(option('--time') ?? 0);
  if (repeats > 0) {
    const first = {};
    for (const entry of golden.inputs) {
      const size = entry.shape.slice(1).reduce((a, b) => a * b, 1);
      first[entry.name] = makeTensor(entry.dtype, inputs[entry.name].slice(0, golden.batch * size), [golden.batch, ...entry.shape.slice(1)]);
    }
    for (let i = 0; i < 5; i++) await session.run(first);
    const times = [];
    for (let i = 0; i < repeats; i++) {
      const start = process.hrtime.bigint();
      await session.run(first);
      times.push(Number(process.hrtime.bigint() - start) / 1e6);
    }
    times.sort((a, b) => a - b);
    result.latency_ms = times[Math.floor(times.length / 2)];
  }
  console.log(JSON.stringify(jsonSafe(result)));
  process.exit(result.passed ? 0 : 1);
}

main().catch((error) => {
  console.error(`error: ${error.message}`);
  process.exit(2);
});

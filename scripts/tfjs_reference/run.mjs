// Reference outputs of a TF.js graph model, computed by TF.js itself (pure-JS CPU backend).
//
// Not a test and not run in CI: scripts/check_tfjs_reference.py writes a request folder
// (model JSON + shard, raw int32 inputs, request.json) and then runs this script:
//
//   node scripts/tfjs_reference/run.mjs WORKDIR [TFJS_DIR]
//
// TFJS_DIR is a folder whose node_modules holds @tensorflow/tfjs (default: this script's
// folder; install there once with `npm ci` or `npm install`, see package.json for the
// pinned version). Nothing is downloaded at run time.
//
// request.json: {"model": "movenet-lightning.json", "nodes": [node names],
//                "inputs": [{"name", "file", "shape", "dtype": "int32"}]}
// Writes WORKDIR/tfjs/<input>.<k>.f32 (little-endian float32, NHWC, k = index into
// "nodes") and WORKDIR/tfjs/outputs.json (versions, backend, shapes, files).
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const work = process.argv[2];
if (!work) {
  console.error('usage: node run.mjs WORKDIR [TFJS_DIR]');
  process.exit(2);
}
const tfjsDir = path.resolve(process.argv[3] || here);
const require = createRequire(pathToFileURL(path.join(tfjsDir, 'package.json')).href);
const tf = require('@tensorflow/tfjs');
const tfjsPackage = require('@tensorflow/tfjs/package.json');

function readArrayBuffer(file) {
  const b = fs.readFileSync(file);
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
}

function concat(buffers) {
  const total = buffers.reduce((n, b) => n + b.byteLength, 0);
  const out = new Uint8Array(total);
  let off = 0;
  for (const b of buffers) {
    out.set(new Uint8Array(b), off);
    off += b.byteLength;
  }
  return out.buffer;
}

// An IOHandler that reads model.json and its shards from disk (file:// is not
// supported by tf.loadGraphModel in pure-JS node).
function fileHandler(modelPath) {
  const folder = path.dirname(modelPath);
  return {
    load: async () => {
      const m = JSON.parse(fs.readFileSync(modelPath, 'utf8'));
      const weightSpecs = [];
      const shards = [];
      for (const group of m.weightsManifest) {
        weightSpecs.push(...group.weights);
        for (const p of group.paths) shards.push(readArrayBuffer(path.join(folder, p)));
      }
      return {
        modelTopology: m.modelTopology,
        format: m.format,
        generatedBy: m.generatedBy,
        convertedBy: m.convertedBy,
        signature: m.signature,
        userDefinedMetadata: m.userDefinedMetadata,
        modelInitializer: m.modelInitializer,
        weightSpecs,
        weightData: concat(shards),
      };
    },
  };
}

async function main() {
  await tf.setBackend('cpu');
  await tf.ready();
  const req = JSON.parse(fs.readFileSync(path.join(work, 'request.json'), 'utf8'));
  const model = await tf.loadGraphModel(fileHandler(path.join(work, req.model)));
  const inputName = model.inputs[0].name;
  const outDir = path.join(work, 'tfjs');
  fs.mkdirSync(outDir, { recursive: true });
  const record = {
    tfjs: tfjsPackage.version, tfjs_core: tf.version_core, backend: tf.getBackend(),
    node: process.version, model: req.model, input_node: inputName, nodes: req.nodes,
    outputs: {},
  };
  for (const inp of req.inputs) {
    const raw = fs.readFileSync(path.join(work, inp.file));
    const data = new Int32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
    const x = tf.tensor(data, inp.shape, 'int32');
    const t0 = Date.now();
    const ys = model.execute({ [inputName]: x }, req.nodes);
    const outs = Array.isArray(ys) ? ys : [ys];
    record.outputs[inp.name] = [];
    for (let k = 0; k < outs.length; k++) {
      const v = outs[k].dataSync();
      const f32 = v instanceof Float32Array ? v : Float32Array.from(v);
      const file = `${inp.name}.${k}.f32`;
      fs.writeFileSync(path.join(outDir, file), Buffer.from(f32.buffer, f32.byteOffset, f32.byteLength));
      record.outputs[inp.name].push({ node: req.nodes[k], file, shape: outs[k].shape, dtype: outs[k].dtype });
    }
    console.log(`${inp.name}: ${outs.length} nodes in ${Date.now() - t0} ms`);
    tf.dispose([x, ...outs]);
  }
  fs.writeFileSync(path.join(outDir, 'outputs.json'), JSON.stringify(record, null, 1));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

// Loads a subfed export (model.json + weights) with tfjs in the browser and classifies
// images: each is drawn to a canvas at the model's input size, standardised as the
// export's metadata says (userDefinedMetadata.subfed.input), and run through the
// LayersModel. The results are shown and left in window.subfedResults (tests read them).
'use strict';

const params = new URLSearchParams(location.search);
const modelUrl = params.get('model') ?? 'model/model.json';
const imagesUrl = params.get('images');
const statusLine = document.getElementById('status');
document.getElementById('model-url').textContent = modelUrl;

function fail(message) {
  statusLine.textContent = `error: ${message}`;
  document.body.dataset.state = 'error';
  window.subfedError = message;
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`cannot load image ${src}`));
    img.src = src;
  });
}

/** The image as the model's input [1, h, w, c], standardised; the canvas shows it. */
function inputOf(img, canvas, [h, w, c], input) {
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(img, 0, 0, w, h);
  const rgba = ctx.getImageData(0, 0, w, h).data;
  const values = new Float32Array(h * w * c);
  for (let p = 0; p < h * w; p++) {
    for (let ch = 0; ch < c; ch++) {
      // One channel: the grey level (a grey PNG decodes to r = g = b); else r, g, b.
      const v = c === 1 ? Math.round(0.299 * rgba[4 * p] + 0.587 * rgba[4 * p + 1] + 0.114 * rgba[4 * p + 2]) : rgba[4 * p + ch];
      values[p * c + ch] = (v / 255 - input.mean[ch]) / input.std[ch];
    }
  }
  return tf.tensor4d(values, [1, h, w, c]);
}

async function classify(model, meta, items) {
  const shape = model.inputs[0].shape.slice(1);
  const results = [];
  const container = document.getElementById('results');
  for (const item of items) {
    const img = await loadImage(item.src);
    const figure = document.createElement('figure');
    const canvas = document.createElement('canvas');
    const x = inputOf(img, canvas, shape, meta.input);
    const logits = tf.tidy(() => model.predict(x).dataSync());
    x.dispose();
    let predicted = 0;
    for (let k = 1; k < logits.length; k++) if (logits[k] > logits[predicted]) predicted = k;
    const caption = document.createElement('figcaption');
    caption.textContent = `predicted ${predicted}` + (item.label === undefined ? '' : ` · label ${item.label}`);
    if (item.label !== undefined) figure.className = predicted === item.label ? 'right' : 'wrong';
    figure.append(canvas, caption);
    container.append(figure);
    results.push({ src: item.src, label: item.label, predicted, logits: Array.from(logits) });
  }
  return results;
}

async function main() {
  await tf.setBackend('cpu');
  statusLine.textContent = 'loading the model…';
  const model = await tf.loadLayersModel(modelUrl);
  const meta = model.getUserDefinedMetadata()?.subfed;
  if (meta === undefined || meta.input?.kind !== 'images') throw new Error('not a subfed export of an image model');
  document.getElementById('model-info').textContent =
    `${meta.family}, ${meta.parameters.toLocaleString('en-US')} parameters, ${meta.quantization} weights; ${meta.origin}`;
  window.subfedModel = { model, meta };
  document.getElementById('files').addEventListener('change', async (event) => {
    const items = [...event.target.files].map((file) => ({ src: URL.createObjectURL(file) }));
    await classify(model, meta, items);
  });
  if (imagesUrl === null) {
    statusLine.textContent = 'model loaded: choose images';
    document.body.dataset.state = 'ready';
    return;
  }
  const items = await (await fetch(imagesUrl)).json();
  statusLine.textContent = `classifying ${items.length} images…`;
  const results = await classify(model, meta, items);
  const labelled = results.filter((r) => r.label !== undefined);
  const right = labelled.filter((r) => r.label === r.predicted).length;
  statusLine.textContent =
    `${results.length} images classified` + (labelled.length ? `: ${right} of ${labelled.length} right` : '');
  window.subfedResults = results;
  document.body.dataset.state = 'done';
}

main().catch((err) => fail(err.message));

// fastsal's page: send one image to POST /v1/predict, draw the map and the overlay.
// The server sends the map once, as float32 .npy (map=npy); colouring, the overlay at any opacity and
// the downloads are all drawn here from that one answer, so moving the slider costs no request.
"use strict";

const KEY_STORE = "fastsal-api-key";
const $ = (id) => document.getElementById(id);
const state = { lut: null, map: null, npy: null, width: 0, height: 0, photo: null, candidates: [], name: "image" };

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORE);
  return key ? { "X-API-Key": key } : {};
}

function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  if (response.status === 401) {
    $("key-panel").hidden = false;
    $("api-key").focus();
    throw new Error("this server needs an API key: enter it above");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(`${response.status}: ${detail}`);
  }
  return response;
}

async function start() {
  try {
    const [colors, models] = await Promise.all([
      api("/v1/colormap").then((r) => r.json()),
      api("/v1/models").then((r) => r.json()),
    ]);
    state.lut = colors.colors;
    drawColorbar();
    const select = $("model");
    select.replaceChildren();
    for (const m of models.models) {
      const option = new Option(m.name + (m.default ? " (default)" : ""), m.name, m.default, m.default);
      select.append(option);
    }
    $("key-panel").hidden = true;
    setStatus("Drop an image or choose a file.");
  } catch (err) {
    setStatus(err.message, true);
  }
}

function drawColorbar() {
  const canvas = $("colorbar");
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(256, 1);
  for (let i = 0; i < 256; i++) {
    const [r, g, b] = state.lut[i];
    img.data.set([r, g, b, 255], i * 4);
  }
  ctx.putImageData(img, 0, 0);
}

// .npy (version 1-3, little-endian float32, C order) -> {shape, data}
function parseNpy(buffer) {
  const bytes = new Uint8Array(buffer);
  if (bytes[0] !== 0x93 || String.fromCharCode(...bytes.slice(1, 6)) !== "NUMPY") throw new Error("not an .npy file");
  const major = bytes[6];
  const view = new DataView(buffer);
  const headerLen = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder().decode(bytes.slice(start, start + headerLen));
  if (!header.includes("'<f4'") || header.includes("'fortran_order': True")) throw new Error("unexpected .npy layout");
  const shape = header.match(/'shape': \((\d+), (\d+)\)/).slice(1, 3).map(Number);
  return { shape, data: new Float32Array(buffer, start + headerLen, shape[0] * shape[1]) };
}

function base64ToBuffer(text) {
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out.buffer;
}

// The map min-max scaled to 0..255, as fastsal.viewing.to_png does.
function scaled(data) {
  let lo = Infinity, hi = -Infinity;
  for (const v of data) { if (v < lo) lo = v; if (v > hi) hi = v; }
  const out = new Uint8ClampedArray(data.length);
  if (!(hi > lo)) return { values: out, lo, hi };
  const k = 255 / (hi - lo);
  for (let i = 0; i < data.length; i++) out[i] = Math.floor((data[i] - lo) * k + 0.5);
  return { values: out, lo, hi };
}

function drawMap() {
  const { width, height } = state;
  const canvas = $("map");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(width, height);
  const v = state.map.values;
  for (let i = 0; i < v.length; i++) {
    const [r, g, b] = state.lut[v[i]];
    const j = i * 4;
    img.data[j] = r; img.data[j + 1] = g; img.data[j + 2] = b; img.data[j + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

function drawOverlay() {
  const { width, height } = state;
  const canvas = $("overlay");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  const alpha = Number($("opacity").value) / 100;
  ctx.globalAlpha = 1;
  ctx.drawImage(state.photo, 0, 0, width, height);  // the browser applies EXIF orientation, as the server does
  ctx.globalAlpha = alpha;  // (1 - alpha) * photo + alpha * colour map, like fastsal.viewing.blend
  ctx.drawImage($("map"), 0, 0);
  ctx.globalAlpha = 1;
  $("opacity-value").textContent = `${Math.round(alpha * 100)} %`;
  canvas.dataset.ready = "1";
}

function drawMarks() {
  const { width, height } = state;
  const canvas = $("marks");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  const r = Math.max(6, 0.05 * Math.hypot(width, height));
  ctx.lineWidth = Math.max(2, r / 12);
  ctx.font = `bold ${Math.max(12, Math.round(r / 2.5))}px system-ui, sans-serif`;
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  state.candidates.forEach((c, i) => {
    ctx.strokeStyle = "rgba(0, 255, 200, 0.95)";
    ctx.beginPath();
    ctx.arc(c.x + 0.5, c.y + 0.5, r, 0, 2 * Math.PI);
    ctx.stroke();
    ctx.fillStyle = "rgba(0, 0, 0, 0.6)";
    ctx.fillRect(c.x - r / 3, c.y - r / 3, (2 * r) / 3, (2 * r) / 3);
    ctx.fillStyle = "#fff";
    ctx.fillText(String(i + 1), c.x + 0.5, c.y + 0.5);
  });
  const list = $("candidates");
  list.replaceChildren(...state.candidates.map((c) => {
    const li = document.createElement("li");
    li.textContent = `x ${c.x}, y ${c.y}: ${(100 * c.probability).toFixed(1)} % of fixations nearby`;
    return li;
  }));
}

function loadPhoto(file) {
  return new Promise((resolve, reject) => {
    const url = URL.createObjectURL(file);
    const img = new Image();
    img.onload = () => resolve(img);  // the object URL stays alive while the photo is shown
    img.onerror = () => resolve(null);  // the browser cannot show it (e.g. TIFF): the map still works
    img.src = url;
  });
}

async function predict(file) {
  if (!file) return;
  state.name = (file.name || "image").replace(/\.[^.]*$/, "") || "image";
  setStatus(`Predicting ${file.name || "image"} …`);
  $("overlay").dataset.ready = "";
  const form = new FormData();
  form.append("image", file);
  const model = $("model").value;
  const query = new URLSearchParams({ output: "json", map: "npy", top_k: "5" });
  if (model) query.set("model", model);
  const t0 = performance.now();
  try {
    const [response, photo] = await Promise.all([
      api(`/v1/predict?${query}`, { method: "POST", body: form }), loadPhoto(file)]);
    const answer = await response.json();
    const roundTrip = performance.now() - t0;
    state.npy = base64ToBuffer(answer.npy);
    const parsed = parseNpy(state.npy);
    state.height = parsed.shape[0];
    state.width = parsed.shape[1];
    state.map = scaled(parsed.data);
    state.candidates = answer.candidates;
    state.photo = photo || $("map");
    $("result").hidden = false;
    drawMap();
    drawOverlay();
    drawMarks();
    const peak = state.map.hi * state.width * state.height;
    $("peak-label").textContent = `most looked at (peak: ${peak.toFixed(1)}× the image's average)`;
    const t = answer.timing_ms;
    $("timing").textContent = `Time: ${Math.round(roundTrip)} ms in all, ${t.total} ms on the server ` +
      `(decode ${t.decode}, network ${t.network}, encode ${t.encode}, queue ${t.queue} ms). ` +
      `${answer.width}×${answer.height} px, model ${answer.model}, ${answer.settings.backend} ${answer.settings.precision}.`;
    setStatus(`Done: ${file.name || "image"} in ${Math.round(roundTrip)} ms.`);
  } catch (err) {
    setStatus(`Could not predict: ${err.message}`, true);
  }
}

function download(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

function downloadMapPng() {  // greyscale, min-max scaled: the PNG `fastsal predict` writes
  const canvas = document.createElement("canvas");
  canvas.width = state.width;
  canvas.height = state.height;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(state.width, state.height);
  state.map.values.forEach((v, i) => img.data.set([v, v, v, 255], i * 4));
  ctx.putImageData(img, 0, 0);
  canvas.toBlob((blob) => download(blob, `${state.name}_map.png`), "image/png");
}

function wire() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => predict(e.target.files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    predict(e.dataTransfer.files[0]);
  });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
  $("opacity").addEventListener("input", () => { if (state.map) drawOverlay(); });
  $("dl-map").addEventListener("click", downloadMapPng);
  $("dl-overlay").addEventListener("click", () =>
    $("overlay").toBlob((blob) => download(blob, `${state.name}_overlay.png`), "image/png"));
  $("dl-npy").addEventListener("click", () =>
    download(new Blob([state.npy], { type: "application/octet-stream" }), `${state.name}.npy`));
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY_STORE, $("api-key").value.trim());
    $("api-key").value = "";
    start();
  });
  $("model").addEventListener("change", () => { const f = $("file").files[0]; if (f) predict(f); });
}

wire();
start();

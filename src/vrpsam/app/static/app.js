"use strict";
// The vrpsam app page: annotate a reference on a canvas, upload targets, run, show and download masks.
// The canvas holds the reference at its own pixel size (CSS scales it), so every coordinate sent to
// the server is in reference-image pixels, x to the right and y downwards, as vrpsam expects.

const $ = (id) => document.getElementById(id);
const canvas = $("reference-canvas");
const ctx = canvas.getContext("2d");
const COLOR = "rgb(30, 144, 255)";

const state = {
  file: null,          // the reference File, sent as it is
  image: null,         // its decoded <img>
  points: [],          // [[x, y], ...]
  box: null,           // [x1, y1, x2, y2]
  polylines: [],       // [[[x, y], ...], ...]
  mask: null,          // a canvas of the image's size: painted pixels are opaque
  maskPainted: false,
  drag: null,          // the gesture in progress
  targets: [],         // target Files
  limits: null,        // /api/info
};

const tool = () => document.querySelector('input[name="tool"]:checked').value;
const round1 = (v) => Math.round(v * 10) / 10;

// Reference-image pixels per CSS pixel, so brush sizes and markers look the same at any zoom.
function imageScale() {
  const width = canvas.getBoundingClientRect().width;
  return width > 0 ? canvas.width / width : 1;
}

function brushImagePx() {
  return Math.max(1, Number($("brush-size").value) * imageScale());
}

function toImage(event) {
  const r = canvas.getBoundingClientRect();
  const x = ((event.clientX - r.left) * canvas.width) / r.width;
  const y = ((event.clientY - r.top) * canvas.height) / r.height;
  return [round1(Math.min(Math.max(x, 0), canvas.width)), round1(Math.min(Math.max(y, 0), canvas.height))];
}

// Fit the canvas into its panel and 70% of the window height, keeping the image's aspect ratio.
function layoutCanvas() {
  const available = canvas.parentElement.clientWidth;
  const scale = Math.min(available / canvas.width, (window.innerHeight * 0.7) / canvas.height);
  canvas.style.width = `${Math.floor(canvas.width * scale)}px`;
  canvas.style.height = `${Math.floor(canvas.height * scale)}px`;
}

// ---- drawing ----------------------------------------------------------------------------------

function redraw() {
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!state.image) {
    return;
  }
  ctx.drawImage(state.image, 0, 0);
  const s = imageScale();
  const current = tool();
  ctx.save();
  ctx.strokeStyle = COLOR;
  ctx.fillStyle = COLOR;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  if (current === "mask") {
    ctx.globalAlpha = 0.5;
    ctx.drawImage(state.mask, 0, 0);
  } else if (current === "points") {
    for (const [x, y] of state.points) {
      ctx.beginPath();
      ctx.arc(x, y, 6 * s, 0, 2 * Math.PI);
      ctx.fill();
      ctx.lineWidth = 2 * s;
      ctx.strokeStyle = "#fff";
      ctx.stroke();
    }
  } else if (current === "box") {
    const box = state.drag && state.drag.end ? normalisedBox(state.drag.start, state.drag.end) : state.box;
    if (box) {
      const [x1, y1, x2, y2] = box;
      ctx.globalAlpha = 0.2;
      ctx.fillRect(x1, y1, x2 - x1, y2 - y1);
      ctx.globalAlpha = 1;
      ctx.lineWidth = 2 * s;
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    }
  } else {
    ctx.globalAlpha = 0.7;
    ctx.lineWidth = brushImagePx();
    for (const line of state.polylines) {
      ctx.beginPath();
      ctx.moveTo(...line[0]);
      for (const p of line.slice(1)) ctx.lineTo(...p);
      if (line.length === 1) ctx.arc(line[0][0], line[0][1], ctx.lineWidth / 2, 0, 2 * Math.PI);
      line.length === 1 ? ctx.fill() : ctx.stroke();
    }
  }
  ctx.restore();
  summarise();
}

function normalisedBox([ax, ay], [bx, by]) {
  return [Math.min(ax, bx), Math.min(ay, by), Math.max(ax, bx), Math.max(ay, by)];
}

function paintMask(from, to) {
  const m = state.mask.getContext("2d");
  const erase = $("erase").checked;
  const width = brushImagePx();
  m.globalCompositeOperation = erase ? "destination-out" : "source-over";
  m.strokeStyle = m.fillStyle = COLOR;
  m.lineWidth = width;
  m.lineCap = "round";
  m.beginPath();
  m.arc(to[0], to[1], width / 2, 0, 2 * Math.PI);
  m.fill();
  m.beginPath();
  m.moveTo(...from);
  m.lineTo(...to);
  m.stroke();
  if (!erase) state.maskPainted = true;
}

function summarise() {
  const text = {
    points: () => (state.points.length ? `${state.points.length} point(s) clicked.` : "Click on the object to add points."),
    box: () => (state.box ? `Box: (${state.box.slice(0, 2).join(", ")}) to (${state.box.slice(2).join(", ")}) in image pixels.`
                          : "Drag a box around the object."),
    scribble: () => (state.polylines.length ? `${state.polylines.length} stroke(s), ${Math.round(brushImagePx())} px wide.`
                                            : "Paint strokes over the object."),
    mask: () => (state.maskPainted ? "Mask painted (tick Erase to remove parts)." : "Paint over the whole object."),
  }[tool()];
  $("annotation-summary").textContent = state.image ? text() : "Upload a reference image to start.";
}

// ---- canvas gestures --------------------------------------------------------------------------

canvas.addEventListener("pointerdown", (event) => {
  if (!state.image || event.button !== 0) return;
  canvas.setPointerCapture(event.pointerId);
  const p = toImage(event);
  const current = tool();
  if (current === "points") {
    state.points.push(p);
  } else if (current === "box") {
    state.drag = { start: p, end: null };
  } else if (current === "scribble") {
    state.drag = { line: [p] };
    state.polylines.push(state.drag.line);
  } else {
    state.drag = { last: p };
    paintMask(p, p);
  }
  redraw();
});

canvas.addEventListener("pointermove", (event) => {
  if (!state.drag) return;
  const p = toImage(event);
  if (state.drag.line) {
    state.drag.line.push(p);
  } else if (state.drag.last) {
    paintMask(state.drag.last, p);
    state.drag.last = p;
  } else {
    state.drag.end = p;
  }
  redraw();
});

function endGesture() {
  const drag = state.drag;
  state.drag = null;
  if (drag && drag.start && drag.end) {
    const box = normalisedBox(drag.start, drag.end);
    if (box[2] - box[0] >= 1 && box[3] - box[1] >= 1) state.box = box;  // a click is not a box
  }
  redraw();
}
canvas.addEventListener("pointerup", endGesture);
canvas.addEventListener("pointercancel", endGesture);

// ---- controls ---------------------------------------------------------------------------------

function newMaskLayer() {
  const layer = document.createElement("canvas");
  layer.width = canvas.width;
  layer.height = canvas.height;
  return layer;
}

function clearTool(name) {
  if (name === "points") state.points = [];
  if (name === "box") state.box = null;
  if (name === "scribble") state.polylines = [];
  if (name === "mask") {
    state.mask = newMaskLayer();
    state.maskPainted = false;
  }
}

$("reference-input").addEventListener("change", () => {
  const file = $("reference-input").files[0];
  if (!file) return;
  const image = new Image();
  image.onload = () => {
    state.file = file;
    state.image = image;
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    for (const name of ["points", "box", "scribble", "mask"]) clearTool(name);
    layoutCanvas();
    redraw();
    hideError();
  };
  image.onerror = () => showError(`reference: the browser cannot read ${file.name} as an image`);
  image.src = URL.createObjectURL(file);
});

for (const radio of document.querySelectorAll('input[name="tool"]')) {
  radio.addEventListener("change", () => {
    $("erase").disabled = tool() !== "mask";
    redraw();
  });
}

$("brush-size").addEventListener("input", () => {
  $("brush-size-value").textContent = `${$("brush-size").value} px`;
  redraw();
});

$("clear").addEventListener("click", () => {
  clearTool(tool());
  redraw();
});

$("targets-input").addEventListener("change", () => {
  state.targets = Array.from($("targets-input").files);
  const list = $("target-list");
  list.replaceChildren(...state.targets.map((file) => {
    const item = document.createElement("li");
    item.textContent = file.name;
    return item;
  }));
});

window.addEventListener("resize", () => {
  if (state.image) {
    layoutCanvas();
    redraw();
  }
});

// ---- running ----------------------------------------------------------------------------------

// The annotation of the selected tool as the API's JSON, or null when nothing is drawn with it.
function annotation() {
  const current = tool();
  if (current === "points" && state.points.length) return { kind: "points", points: state.points };
  if (current === "box" && state.box) return { kind: "box", box: state.box };
  if (current === "scribble" && state.polylines.length) {
    return { kind: "scribble", polylines: state.polylines, width: round1(brushImagePx()) };
  }
  if (current === "mask" && state.maskPainted) return { kind: "mask" };
  return null;
}

// The painted layer as an opaque black-and-white PNG of the reference's size (anti-aliased edges cut at half).
function maskBlob() {
  const { width, height } = state.mask;
  const painted = state.mask.getContext("2d").getImageData(0, 0, width, height).data;
  const binary = new ImageData(width, height);
  for (let i = 0; i < painted.length; i += 4) {
    const v = painted[i + 3] >= 128 ? 255 : 0;
    binary.data[i] = binary.data[i + 1] = binary.data[i + 2] = v;
    binary.data[i + 3] = 255;
  }
  const out = document.createElement("canvas");
  out.width = width;
  out.height = height;
  out.getContext("2d").putImageData(binary, 0, 0);
  return new Promise((resolve) => out.toBlob(resolve, "image/png"));
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function hideError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function setStatus(message) {
  $("status").textContent = message;
}

function tooBig() {
  if (!state.limits) return null;
  const bytes = [state.file, ...state.targets].filter(Boolean).reduce((sum, f) => sum + f.size, 0);
  const limit = state.limits.max_upload_mb * 1024 * 1024;
  return bytes > limit ? `upload too large: ${(bytes / 1048576).toFixed(1)} MB, over the limit of ${state.limits.max_upload_mb} MB` : null;
}

async function run() {
  hideError();
  const problem = tooBig();
  if (problem) return showError(problem);
  const form = new FormData();
  if (state.file) form.append("reference", state.file, state.file.name);
  const spec = annotation();
  if (spec) form.append("annotation", JSON.stringify(spec));
  if (spec && spec.kind === "mask") form.append("mask", await maskBlob(), "mask.png");
  for (const file of state.targets) form.append("targets", file, file.name);
  $("run").disabled = true;
  setStatus(`Segmenting ${state.targets.length} target(s)…`);
  try {
    const response = await fetch("/api/segment", { method: "POST", body: form });
    let body;
    try {
      body = await response.json();
    } catch {
      body = { error: `the server answered ${response.status} ${response.statusText}` };
    }
    if (!response.ok) throw new Error(body.error || `the server answered ${response.status}`);
    showResults(body);
    setStatus(`Done: ${body.targets.length} target(s) segmented.`);
  } catch (error) {
    setStatus("");
    showError(error instanceof TypeError ? `request failed: ${error.message} (is vrpsam app still running?)` : error.message);
  } finally {
    $("run").disabled = false;
  }
}

function showResults(body) {
  const figures = body.targets.map((target) => {
    const label = target.name || `target ${target.number}`;
    const figure = document.createElement("figure");
    figure.className = "result";
    figure.id = `result-${target.number}`;
    const image = document.createElement("img");
    image.className = "overlay";
    image.src = target.overlay_url;
    image.alt = `Predicted mask over ${label}`;
    const caption = document.createElement("figcaption");
    const text = document.createElement("span");
    text.textContent = `${target.number}. ${label} (score ${target.score.toFixed(2)})`;
    const link = document.createElement("a");
    link.id = `mask-link-${target.number}`;
    link.className = "mask-link";
    link.href = target.mask_url;
    link.download = `mask-${target.number}.png`;
    link.textContent = "Download mask";
    caption.append(text, link);
    figure.append(image, caption);
    return figure;
  });
  $("results").replaceChildren(...figures);
  $("download-zip").href = body.zip_url;
  $("download-zip").hidden = false;
}

$("run").addEventListener("click", run);
$("erase").disabled = tool() !== "mask";

fetch("/api/info")
  .then((response) => response.json())
  .then((info) => {
    state.limits = info;
    const pixels = (info.max_pixels / 1e6).toFixed(info.max_pixels % 1e6 ? 1 : 0);
    $("limits").textContent = `Model: ${info.model || "?"} · up to ${info.max_upload_mb} MB per run, ` +
      `${pixels} megapixels per image, ${info.max_targets} targets.` +
      (info.model.includes("tiny-random") ? " Random weights: for trying the page, the masks mean nothing." : "");
  })
  .catch(() => {});

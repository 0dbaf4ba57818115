// The try-it page: upload a file with a labeling config to /ui/predict and draw what comes back.
// Plain script, no build step, nothing loaded from elsewhere (the page must work offline).
"use strict";

// The examples are the server's fixed list (GET /ui/examples, server/ui_examples.py): the first runs
// offline on the bundled shapes model and a sample image; each says which weight files it needs.
let EXAMPLES = {}; // name -> labeling config
let exampleInfo = {}; // name -> {sample, weights, ready, note}
let modelsInfo = null; // the last /ui/models answer

const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";
let answer = null; // the last /ui/predict answer
let media = null; // the <img> or <video> shown

function el(tag, attrs = {}, text = "") {
  const node = tag === "svg" || ["rect", "polygon", "circle", "text", "g", "image"].includes(tag)
    ? document.createElementNS(SVG_NS, tag) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text) node.textContent = text;
  return node;
}

function colorOf(label) {
  let hash = 0;
  for (const ch of String(label)) hash = (hash * 31 + ch.charCodeAt(0)) % 997;
  return `hsl(${(hash * 137) % 360}, 80%, 45%)`;
}

function say(kind, text) {
  $("messages").append(el("div", { class: kind }, text));
}

function labelOf(region) {
  const v = region.value || {};
  const labels = v.rectanglelabels || v.polygonlabels || v.brushlabels || v.keypointlabels || v.labels
    || v.timelinelabels || v.choices || (v.taxonomy || []).map((path) => path.join(" / "));
  return (labels || []).join(", ");
}

function visible(region) {
  const threshold = Number($("threshold").value);
  return region.score === undefined || region.score === null || region.score >= threshold;
}

// Label Studio's brush RLE (the rle-pack bit stream): 32 bits count, 5 bits word size - 1,
// four 4-bit run-length widths, then runs. Decodes to the flat RGBA bytes of the mask.
function decodeRLE(bytes) {
  let position = 0;
  const read = (bits) => {
    let value = 0;
    for (let i = 0; i < bits; i++, position++) {
      value = value * 2 + ((bytes[position >> 3] >> (7 - (position & 7))) & 1);
    }
    return value;
  };
  const count = read(32);
  const wordSize = read(5) + 1;
  const runWidths = [0, 1, 2, 3].map(() => read(4) + 1);
  const out = new Uint8ClampedArray(count);
  let i = 0;
  while (i < count) {
    const repeated = read(1);
    const end = Math.min(count, i + 1 + read(runWidths[read(2)]));
    if (repeated) {
      out.fill(read(wordSize), i, end);
      i = end;
    } else {
      while (i < end) out[i++] = read(wordSize);
    }
  }
  return out;
}

function brushImage(region, width, height) {
  const rgba = decodeRLE(region.value.rle);
  const canvas = el("canvas", { width, height });
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(width, height);
  const rgb = hslToRgb(...colorOf(labelOf(region)).match(/\d+/g).map(Number));
  for (let p = 0; p * 4 + 3 < rgba.length && p < width * height; p++) {
    if (!rgba[p * 4 + 3]) continue;
    pixels.data.set([rgb[0], rgb[1], rgb[2], 120], p * 4);
  }
  context.putImageData(pixels, 0, 0);
  return el("image", { href: canvas.toDataURL(), x: 0, y: 0, width, height, class: "region brush" });
}

function hslToRgb(h, s, l) {
  s /= 100; l /= 100;
  const f = (n) => {
    const k = (n + h / 30) % 12;
    return Math.round(255 * (l - s * Math.min(l, 1 - l) * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
  };
  return [f(0), f(8), f(4)];
}

function caption(region, x, y) {
  const score = region.score === undefined ? "" : ` ${Number(region.score).toFixed(2)}`;
  return el("text", { x, y: Math.max(y - 4, 12), fill: colorOf(labelOf(region)) }, labelOf(region) + score);
}

function box(region, v, W, H) {
  const [x, y] = [(v.x * W) / 100, (v.y * H) / 100];
  const group = el("g", { class: "region", "data-label": labelOf(region), "data-type": region.type,
    transform: `rotate(${v.rotation || 0} ${x} ${y})` });
  group.append(el("rect", { x, y, width: (v.width * W) / 100, height: (v.height * H) / 100, fill: "none",
    stroke: colorOf(labelOf(region)), "stroke-width": Math.max(W / 300, 2) }), caption(region, x, y));
  return group;
}

function drawImageRegion(svg, region, W, H) {
  const v = region.value || {};
  const tagged = (node) => {
    node.setAttribute("data-label", labelOf(region));
    node.setAttribute("data-type", region.type);
    node.classList.add("region");
    return node;
  };
  if (region.type === "rectanglelabels") svg.append(box(region, v, W, H));
  if (region.type === "polygonlabels") {
    const points = v.points.map(([x, y]) => `${(x * W) / 100},${(y * H) / 100}`).join(" ");
    const group = tagged(el("g"));
    group.append(el("polygon", { points, fill: colorOf(labelOf(region)), "fill-opacity": 0.3,
      stroke: colorOf(labelOf(region)), "stroke-width": 2 }),
      caption(region, (v.points[0][0] * W) / 100, (v.points[0][1] * H) / 100));
    svg.append(group);
  }
  if (region.type === "brushlabels") svg.append(tagged(brushImage(region, W, H)));
  if (region.type === "keypointlabels") {
    const group = tagged(el("g"));
    const [x, y] = [(v.x * W) / 100, (v.y * H) / 100];
    group.append(el("circle", { cx: x, cy: y, r: Math.max(((v.width || 0.5) * W) / 100, 3),
      fill: colorOf(labelOf(region)) }), caption(region, x, y));
    svg.append(group);
  }
}

function frameRegion(region, frame) {
  // The box of a track at `frame`: interpolated between keyframes, hidden after a disabled one.
  const sequence = region.value.sequence || [];
  let before = null;
  let after = null;
  for (const key of sequence) {
    if (key.frame <= frame) before = key;
    else if (!after) after = key;
  }
  if (!before || (before.frame < frame && before.enabled === false)) return null;
  if (!after || before.frame === frame) return before;
  const t = (frame - before.frame) / (after.frame - before.frame);
  const mix = (k) => before[k] + (after[k] - before[k]) * t;
  return { x: mix("x"), y: mix("y"), width: mix("width"), height: mix("height"), rotation: 0 };
}

function draw() {
  const svg = $("stage").querySelector("svg");
  if (!answer || !svg || !media) return;
  svg.replaceChildren();
  const shown = answer.result.filter(visible);
  const tracks = answer.result.filter((r) => r.type === "videorectangle");
  const frameRate = tracks.length ? tracks[0].value.framesCount / tracks[0].value.duration : configFrameRate();
  const frame = media.tagName === "VIDEO" ? Math.floor(media.currentTime * frameRate) + 1 : 0;
  const W = media.naturalWidth || media.videoWidth;
  const H = media.naturalHeight || media.videoHeight;
  svg.setAttribute("viewBox", `0 0 ${W || 100} ${H || 100}`);
  for (const region of W && H ? shown : []) { // no size yet (or a file the browser cannot show): lists only
    if (region.type === "videorectangle") {
      const v = frameRegion(region, frame);
      if (v) svg.append(box(region, v, W, H));
    } else drawImageRegion(svg, region, W, H);
  }
  drawTimeline(shown, media.tagName === "VIDEO" ? Math.round((media.duration || 0) * frameRate) : 0);
  $("classes").replaceChildren(...shown.filter((r) => ["choices", "taxonomy"].includes(r.type))
    .map((r) => el("li", { class: "region", "data-label": labelOf(r), "data-type": r.type },
      `${r.from_name}: ${labelOf(r)} (${Number(r.score).toFixed(2)})`)));
  $("regions").tBodies[0].replaceChildren(...shown.map((r) => {
    const row = el("tr");
    for (const text of [r.from_name, r.type, labelOf(r), r.score === undefined ? "" : Number(r.score).toFixed(3)]) {
      row.append(el("td", {}, text));
    }
    return row;
  }));
}

function configFrameRate() {
  const match = $("config").value.match(/frameRate="([\d.]+)"/i);
  return match ? Number(match[1]) : 24; // Label Studio's default
}

function drawTimeline(regions, framesCount) {
  const segments = regions.filter((r) => r.type === "timelinelabels");
  const total = Math.max(framesCount, ...segments.flatMap((r) => r.value.ranges.map((range) => range.end)), 1);
  $("timeline").replaceChildren(...segments.map((region) => {
    const row = el("div", { class: "row" });
    for (const range of region.value.ranges) {
      row.append(el("div", { class: "segment region", "data-label": labelOf(region), "data-type": region.type,
        style: `left:${((range.start - 1) / total) * 100}%;width:${((range.end - range.start + 1) / total) * 100}%`,
        title: `frames ${range.start}-${range.end}` }, labelOf(region)));
    }
    return row;
  }));
}

function showMedia(file) {
  const url = URL.createObjectURL(file);
  media = file.type.startsWith("video/") ? el("video", { src: url, controls: "", muted: "" }) : el("img", { src: url, alt: file.name });
  media.addEventListener(media.tagName === "VIDEO" ? "loadedmetadata" : "load", draw);
  media.addEventListener("error", () => say("warning", "This browser cannot show the file; the regions are listed below."));
  if (media.tagName === "VIDEO") {
    const follow = () => { draw(); media.requestVideoFrameCallback?.(follow); };
    media.addEventListener("seeked", draw);
    media.addEventListener("play", follow);
  }
  $("stage").replaceChildren(media, el("svg", { id: "overlay" }));
  draw();
}

async function predictSample() {
  const info = exampleInfo[$("example").value];
  if (!info || !info.sample) return;
  const response = await fetch(info.sample);
  if (!response.ok) return say("error", `the sample image could not be loaded (HTTP ${response.status})`);
  const blob = await response.blob();
  const chosen = new DataTransfer();
  chosen.items.add(new File([blob], info.sample.split("/").pop(), { type: blob.type }));
  $("file").files = chosen.files;
  $("config").value = EXAMPLES[$("example").value];
  await predict();
}

async function predict() {
  const file = $("file").files[0];
  $("messages").replaceChildren();
  if (!file) return say("error", "Choose an image or a video first.");
  const form = new FormData();
  form.append("label_config", $("config").value);
  form.append("file", file);
  say("info", "Predicting...");
  $("run").disabled = true;
  let data;
  let status;
  try {
    const response = await fetch("/ui/predict", { method: "POST", body: form });
    status = response.status;
    data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  } catch (error) {
    data = { error: `the backend could not be reached (${error})` };
  } finally {
    $("run").disabled = false;
  }
  $("messages").replaceChildren();
  $("raw").textContent = JSON.stringify(data, null, 2);
  if (data.error) {
    answer = null;
    say("error", `${status || ""} ${data.error}`.trim());
  } else {
    answer = data;
    $("version").textContent = `model_version ${data.model_version}`;
    if (data.task_error) say("error", data.task_error);
    for (const [name, text] of Object.entries(data.control_errors || {})) say("error", `${name}: ${text}`);
    for (const [name, text] of Object.entries(data.label_warnings || {})) say("warning", `${name}: ${text}`);
    say("info", `${data.result.length} region(s) predicted; ${data.result.filter(visible).length} over the threshold.`);
  }
  showMedia(file);
  loadModels();
}

async function loadModels() {
  const response = await fetch("/ui/models");
  if (!response.ok) return;
  const data = await response.json();
  modelsInfo = data;
  const list = el("ul");
  for (const file of data.files) {
    const loaded = data.loaded[file.name] ? ` (loaded: ${data.loaded[file.name]})` : "";
    const item = el("li", { class: "model" }, `${file.name}, ${(file.bytes / 1e6).toFixed(1)} MB${loaded} `);
    const use = el("button", { type: "button", class: "use-model", "data-model": file.name }, "use");
    use.title = `Set model_path="${file.name}" on the config's control tags`;
    use.addEventListener("click", () => useModel(file.name));
    item.append(use);
    if (file.metrics) item.append(el("code", {}, ` ${JSON.stringify(file.metrics)}`));
    list.append(item);
  }
  for (const [name, error] of Object.entries(data.errors)) list.append(el("li", { class: "error" }, `${name}: ${error}`));
  $("models").replaceChildren(el("div", {}, "Under MODEL_ROOT:"), list);
}

async function loadJobs() {
  // Training and prediction jobs of every project, newest first; refreshed every few seconds.
  const response = await fetch("/jobs").catch(() => null);
  if (!response || response.status !== 200) return;
  const data = await response.json().catch(() => null);
  const jobs = (data && data.jobs) || [];
  const list = el("ul");
  for (const job of jobs) list.append(jobItem(job));
  $("jobs").replaceChildren(jobs.length ? list : el("div", {}, "No jobs yet."));
  $("jobs-section").hidden = false;
}

const CONTROL_TAGS = ["RectangleLabels", "PolygonLabels", "BrushLabels", "Choices", "Taxonomy",
  "KeyPointLabels", "VideoRectangle", "TimelineLabels"];

function useModel(name) {
  // Names a weight file of MODEL_ROOT in every control tag of the config shown.
  const doc = new DOMParser().parseFromString($("config").value, "application/xml");
  $("messages").replaceChildren();
  if (doc.getElementsByTagName("parsererror").length) return say("error", "The config is not valid XML; fix it first.");
  const controls = CONTROL_TAGS.flatMap((tag) => [...doc.getElementsByTagName(tag)]);
  if (!controls.length) return say("error", "The config has no control tag to give a model to.");
  for (const control of controls) control.setAttribute("model_path", name);
  $("config").value = new XMLSerializer().serializeToString(doc);
  say("info", `model_path="${name}" set on ${controls.map((c) => c.getAttribute("name")).join(", ")}.`);
  if (modelsInfo && !modelsInfo.allow_custom_model_path) {
    say("warning", "This backend has ALLOW_CUSTOM_MODEL_PATH off: a config that names model_path is refused "
      + "(only the page's own examples may). Start it with ALLOW_CUSTOM_MODEL_PATH=true to use this file.");
  }
}

function showExample() {
  const name = $("example").value;
  const info = exampleInfo[name] || {};
  $("config").value = EXAMPLES[name] || "";
  $("sample").hidden = !info.sample;
  const weights = (info.weights || []).join(", ");
  $("example-note").className = info.ready ? "info" : "warning";
  $("example-note").textContent = info.ready ? `Uses ${weights} (in MODEL_ROOT).` : info.note || "";
}

async function loadExamples() {
  const response = await fetch("/ui/examples");
  if (!response.ok) return say("error", `the examples could not be loaded (HTTP ${response.status})`);
  const data = await response.json();
  EXAMPLES = Object.fromEntries(data.examples.map((example) => [example.name, example.config]));
  exampleInfo = Object.fromEntries(data.examples.map((example) => [example.name, example]));
  $("example").replaceChildren(...data.examples.map((example) => el("option", { value: example.name }, example.name)));
  showExample();
}

function jobItem(job) {
  const what = job.kind === "predict" ? "pre-label" : "train";
  const where = [`project ${job.project}`, job.control, job.version].filter(Boolean).join(" / ");
  const item = el("li", { class: "job", "data-state": job.state }, `${what} ${job.id} ${where}: ${job.state} ${job.phase ?? ""} `);
  const progress = job.progress || {};
  if (progress.total) {
    item.append(el("progress", { max: 1, value: Math.min(1, (progress.done + progress.failed + progress.skipped) / progress.total) }));
    const unit = job.kind === "predict" ? "tasks" : "epochs";
    let counts = ` ${progress.done}/${progress.total} ${unit}`;
    if (job.kind === "predict") counts += `, ${progress.failed} failed, ${progress.skipped} skipped`;
    if (job.rate) counts += `, ${job.rate}/s`;
    if (job.eta_s != null) counts += `, ~${Math.ceil(job.eta_s)} s left`;
    item.append(counts);
  }
  if (job.state === "queued" || job.state === "running") {
    const cancel = el("button", { type: "button", class: "cancel" }, "Cancel");
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      await fetch(`/jobs/${encodeURIComponent(job.id)}`, { method: "DELETE" }).catch(() => null);
      loadJobs();
    });
    item.append(" ", cancel);
  }
  if (job.message) item.append(el("div", {}, job.message));
  if (job.error) item.append(el("div", { class: "error" }, job.error));
  for (const error of job.task_errors || []) item.append(el("div", { class: "error" }, error));
  if (job.metrics && Object.keys(job.metrics).length) item.append(el("code", {}, JSON.stringify(job.metrics)));
  return item;
}

async function startPrelabel() {
  const project = $("job-project").value.trim();
  const response = await fetch("/jobs", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ kind: "predict", project, tasks: "all" }),
  }).catch(() => null);
  const data = response ? await response.json().catch(() => ({})) : { error: "the backend did not answer" };
  $("job-message").textContent = response && response.status === 202 ? `Started job ${data.id}.` : `Not started: ${data.error}`;
  loadJobs();
}

function init() {
  $("example").addEventListener("change", showExample);
  $("sample").addEventListener("click", predictSample);
  $("threshold").addEventListener("input", () => {
    $("threshold-value").textContent = Number($("threshold").value).toFixed(2);
    draw();
  });
  $("run").addEventListener("click", predict);
  $("job-start").addEventListener("click", startPrelabel);
  loadExamples().finally(loadModels); // the models list appears once the examples are there
  loadJobs();
  setInterval(() => { if (!$("jobs-section").hidden) loadJobs(); }, 5000);
}

init();

// The webcam page: camera -> /v1/stream -> boxes, labels, bars, timeline; and a file upload to /v1/classify.
import { classColour, drawBoxes, drawTimeline, legend, personCard } from "./charts.js";
import { StreamConnection, nowMs } from "./stream.js";

const $ = (id) => document.getElementById(id);
const TIMELINE_S = 30;
const params = new URLSearchParams(location.search);

const state = {
  conn: null,
  media: null, // MediaStream
  timer: null,
  classes: [],
  frame: null, // {width, height} of the frames the boxes refer to
  tracks: [], // latest tracks event's tracks
  tracksAt: 0,
  persons: new Map(), // track_id -> {shown, raw, history: [{t, probs}], element}
  latencies: [], // end-to-end ms, recent results
  sentTimes: [],
  results: 0,
  encoding: false,
};

// ---- settings and API key ----------------------------------------------------------------------------------------
$("api-key").value = params.get("key") ?? localStorage.getItem("s2d-api-key") ?? "";
$("api-key").addEventListener("change", () => { localStorage.setItem("s2d-api-key", $("api-key").value); loadModels(); });
const apiHeaders = () => ($("api-key").value ? { Authorization: `Bearer ${$("api-key").value}` } : {});

function log(line) {
  const el = $("log");
  el.textContent = `${new Date().toLocaleTimeString()} ${line}\n${el.textContent}`.slice(0, 4000);
}

function setConn(s, text) { $("conn").dataset.state = s; $("conn").textContent = text; }

async function errorText(response) {
  try { const body = await response.json(); return `${body.error.code}: ${body.error.message}`; }
  catch { return `HTTP ${response.status}`; }
}

// ---- model card --------------------------------------------------------------------------------------------------
async function loadModels() {
  const response = await fetch("/v1/models", { headers: apiHeaders() });
  if (!response.ok) {
    $("card-fields").innerHTML = `<dt>status</dt><dd class="error">${await errorText(response)}</dd>`;
    return;
  }
  const body = await response.json();
  $("model").replaceChildren(...body.models.map((m) => new Option(m.name, m.name, false, m.name === body.default)));
  showCard(body.models.find((m) => m.name === body.default) ?? body.models[0]);
  $("model").onchange = () => showCard(body.models.find((m) => m.name === $("model").value));
}

function showCard(model) {
  const card = model.card;
  const choice = model.variant_choice;
  const fields = {
    name: model.name, version: model.version, variant: `${model.variant} (${model.precision})`,
    // Which engine and precision serve, and why: chosen at warm-up on this machine, pinned, or the card's.
    engine: choice ? `${choice.candidate} (${choice.how}: ${choice.why})` : model.engine.name,
    provider: model.provider, classes: card.classes.join(", "),
    window: `${card.num_frames} frames over ${card.window_seconds} s`, licence: card.licence,
    metrics: card.metrics ? JSON.stringify(card.metrics) : "–", family: model.family_description,
    demo: model.demo ? "yes" : "no",
  };
  $("card-fields").replaceChildren(...Object.entries(fields).flatMap(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v; dd.dataset.field = k;
    return [dt, dd];
  }));
  showNotice(model);
  state.classes = card.classes;
  legend($("legend"), state.classes);
}

// The notice says what answers whenever it is not an S2D video model (the card's family).
function showNotice(model) {
  const notice = $("model-notice");
  let shown = false;
  for (const p of notice.querySelectorAll("[data-family]")) {
    p.hidden = p.dataset.family !== model.family;
    shown ||= !p.hidden;
  }
  notice.hidden = !shown;
  notice.dataset.family = model.family;
}

// ---- live stream -------------------------------------------------------------------------------------------------
async function start() {
  const [width, height] = $("resolution").value.split("x").map(Number);
  const fps = Number($("fps").value);
  $("start").disabled = true;
  try {
    state.media = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: fps } }, audio: false,
    });
  } catch (err) {
    setConn("error", `camera: ${err.name}`);
    log(`camera refused: ${err.message}`);
    $("start").disabled = false;
    return;
  }
  $("video").srcObject = state.media;
  await $("video").play().catch(() => {});
  state.persons.clear();
  $("persons").replaceChildren();
  setConn("connecting", "connecting…");
  const conn = new StreamConnection({ model: $("model").value || null, fps, smoothing: $("smoothing").value,
                                      tracks_fps: 15 }, $("api-key").value);
  state.conn = conn;
  conn.addEventListener("ready", (e) => {
    setConn("open", "live");
    state.classes = e.detail.classes;
    legend($("legend"), state.classes);
    showNotice(e.detail.model);
    log(`ready: ${e.detail.model.name} ${e.detail.model.version}, window ${e.detail.window.window_seconds} s`);
  });
  conn.addEventListener("tracks", (e) => {
    state.frame = { width: e.detail.width, height: e.detail.height };
    state.tracks = e.detail.tracks;
    state.tracksAt = performance.now();
  });
  conn.addEventListener("result", (e) => onResult(e.detail));
  conn.addEventListener("stats", (e) => onStats(e.detail));
  conn.addEventListener("end", (e) => onStats(e.detail));
  conn.addEventListener("error", (e) => log(`server: ${e.detail.code}: ${e.detail.message}`));
  conn.addEventListener("close", (e) => {
    setConn("closed", `closed ${e.detail.code}${e.detail.reason ? `: ${e.detail.reason}` : ""}`);
    log(`socket closed ${e.detail.code} ${e.detail.reason}`);
    stopCapture();
  });
  $("stop").disabled = false;
  const canvas = document.createElement("canvas");
  state.timer = setInterval(() => captureFrame(canvas, width), 1000 / fps);
}

function captureFrame(canvas, maxWidth) {
  const video = $("video");
  if (!state.conn?.open || state.encoding || !video.videoWidth) return;
  const scale = Math.min(1, maxWidth / video.videoWidth);
  canvas.width = Math.round(video.videoWidth * scale);
  canvas.height = Math.round(video.videoHeight * scale);
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  const ts = nowMs();
  state.encoding = true; // one frame encoding at a time: a slow machine sends fewer frames, never a backlog
  canvas.toBlob(async (blob) => {
    state.encoding = false;
    if (blob && state.conn?.sendFrame(await blob.arrayBuffer(), ts)) state.sentTimes.push(performance.now());
  }, "image/jpeg", 0.8);
}

function stopCapture() {
  clearInterval(state.timer);
  state.timer = null;
  state.media?.getTracks().forEach((t) => t.stop());
  state.media = null;
  $("start").disabled = false;
  $("stop").disabled = true;
}

function stop() {
  state.conn?.end(); // the server sends the last results, then closes
  stopCapture();
}

function onResult(r) {
  state.results += 1;
  document.body.dataset.results = state.results;
  if (r.frame_ts) {
    state.latencies.push(nowMs() - r.frame_ts);
    if (state.latencies.length > 30) state.latencies.shift();
  }
  const shown = r.smoothed ?? r;
  let person = state.persons.get(r.track_id);
  if (!person) {
    person = { history: [], element: document.createElement("div") };
    state.persons.set(r.track_id, person);
    $("persons").append(person.element);
  }
  person.shown = shown;
  person.raw = r;
  person.seenAt = performance.now();
  person.lastT = r.t_end;
  person.history.push({ t: (r.t_start + r.t_end) / 2, probs: shown.probs });
  while (person.history.length && person.history[0].t < r.t_end - TIMELINE_S) person.history.shift();
  personCard(person.element, state.classes, r.track_id, shown, r.smoothed ? r : null);
  state.focus = r.track_id;
}

function onStats(s) {
  const f = s.frames;
  const dropped = f.dropped_total + (state.conn?.skipped ?? 0);
  $("drops").textContent = `${dropped} of ${f.received + (state.conn?.skipped ?? 0)} frames`;
  $("drops").title = JSON.stringify({ server: f.dropped, windows: s.windows.dropped, client_skipped: state.conn?.skipped });
}

// ---- drawing loop ------------------------------------------------------------------------------------------------
const GONE_MS = 5000; // a person without results this long has left (or their track ended): drop the card

function render() {
  for (const [id, p] of state.persons) {
    if (performance.now() - p.seenAt > GONE_MS) { p.element.remove(); state.persons.delete(id); }
  }
  const fresh = performance.now() - state.tracksAt < 1000 ? state.tracks : [];
  drawBoxes($("overlay"), state.frame, fresh, (id) => {
    const p = state.persons.get(id);
    return p && { label: p.shown.label, confidence: p.shown.confidence, colour: classColour(state.classes, p.shown.label) };
  });
  const focus = state.persons.get(state.focus);
  if (focus) {
    $("timeline-who").textContent = `person ${state.focus}`;
    drawTimeline($("timeline"), state.classes, focus.history, Math.max(0, focus.lastT - TIMELINE_S), Math.max(focus.lastT, TIMELINE_S));
  }
  if (state.latencies.length) {
    const sorted = [...state.latencies].sort((a, b) => a - b);
    $("latency").textContent = `${sorted[Math.floor(sorted.length / 2)].toFixed(0)} ms`;
  }
  const now = performance.now();
  state.sentTimes = state.sentTimes.filter((t) => now - t < 2000);
  $("sent-fps").textContent = state.timer ? (state.sentTimes.length / 2).toFixed(1) : "–";
  requestAnimationFrame(render);
}

// ---- file upload -------------------------------------------------------------------------------------------------
async function classifyFile(event) {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) { $("upload-status").textContent = "choose a video file first"; return; }
  $("classify").disabled = true;
  $("upload-status").textContent = `uploading ${file.name} (${(file.size / 1e6).toFixed(1)} MB)…`;
  $("upload-results").replaceChildren();
  const form = new FormData();
  form.append("file", file);
  const query = new URLSearchParams({ mode: $("upload-mode").value, smoothing: "ema" });
  if ($("model").value) query.set("model", $("model").value);
  try {
    const response = await fetch(`/v1/classify?${query}`, { method: "POST", body: form, headers: apiHeaders() });
    if (!response.ok) { $("upload-status").innerHTML = `<span class="error">${await errorText(response)}</span>`; return; }
    showUpload(await response.json());
  } catch (err) {
    $("upload-status").innerHTML = `<span class="error">${err.message}</span>`;
  } finally {
    $("classify").disabled = false;
  }
}

function showUpload(body) {
  const classes = Object.keys(body.persons[0]?.windows[0]?.probs ?? {});
  const duration = body.video.duration_s ?? Math.max(...body.persons.map((p) => p.summary.t_last));
  $("upload-status").textContent = `${body.persons.length} person(s), ${body.video.width}×${body.video.height}, ` +
    `${duration.toFixed(1)} s, ${body.timings.total.toFixed(2)} s to classify (${body.model.name}${body.model.demo ? ", demo model" : ""})`;
  for (const person of body.persons) {
    const block = document.createElement("div");
    block.className = "upload-person";
    block.dataset.track = person.track_id;
    const share = Object.entries(person.summary.time_share).filter(([, v]) => v > 0)
      .map(([k, v]) => `${k} ${(100 * v).toFixed(0)}%`).join(", ");
    block.innerHTML = `<b>Person ${person.track_id}</b>: mostly <span class="dominant">${person.summary.dominant}</span>
      <small>(${share})</small>`;
    const canvas = document.createElement("canvas");
    canvas.className = "upload-chart";
    canvas.width = 600;
    canvas.height = 140;
    block.append(canvas);
    $("upload-results").append(block);
    const points = person.windows.map((w) => ({ t: (w.t_start + w.t_end) / 2, probs: (w.smoothed ?? w).probs }));
    drawTimeline(canvas, classes, points, 0, Math.max(duration, 1));
  }
  const key = document.createElement("div");
  key.className = "legend";
  legend(key, classes);
  $("upload-results").append(key);
}

// ---- wiring ------------------------------------------------------------------------------------------------------
$("start").addEventListener("click", start);
$("stop").addEventListener("click", stop);
$("upload-form").addEventListener("submit", classifyFile);
requestAnimationFrame(render);
loadModels().then(() => { if (params.get("autostart") === "1") start(); }).catch((err) => log(`models: ${err.message}`));

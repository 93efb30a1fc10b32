// Drawing: class colours, probability bars, a timeline chart (canvas), face boxes over the video.

const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563", "#65a30d"];

export const classColour = (classes, name) => PALETTE[Math.max(0, classes.indexOf(name)) % PALETTE.length];

export function legend(element, classes) {
  element.replaceChildren(...classes.map((c) => {
    const item = document.createElement("span");
    item.innerHTML = `<i style="background:${classColour(classes, c)}"></i>`;
    item.append(c);
    return item;
  }));
}

/** A person's card: label, confidence and one bar per class. */
export function personCard(element, classes, trackId, shown, raw) {
  element.dataset.track = trackId;
  element.className = "person";
  const bars = classes.map((c) => {
    const p = shown.probs[c] ?? 0;
    return `<div class="bar"><span>${c}</span><span class="track"><span class="fill" style="width:${(100 * p).toFixed(1)}%;
      background:${classColour(classes, c)}"></span></span><span class="value">${(100 * p).toFixed(0)}%</span></div>`;
  });
  const rawNote = raw && raw.label !== shown.label ? ` <small>(raw: ${raw.label})</small>` : "";
  element.innerHTML = `<div class="head"><span>Person ${trackId}</span><span><span class="label">${shown.label}</span>
    <span class="confidence">${(100 * shown.confidence).toFixed(0)}%</span>${rawNote}</span></div>${bars.join("")}`;
}

/**
 * Lines of per-class probabilities over time.
 * @param points [{t, probs: {class: p}}] sorted by t; the x axis spans [t0, t1] seconds.
 */
export function drawTimeline(canvas, classes, points, t0, t1) {
  const ctx = canvas.getContext("2d");
  const { width: w, height: h } = canvas;
  const pad = { l: 34, r: 8, t: 8, b: 20 };
  ctx.clearRect(0, 0, w, h);
  ctx.strokeStyle = "#e5e7eb";
  ctx.fillStyle = "#6b7280";
  ctx.font = "11px system-ui";
  ctx.lineWidth = 1;
  for (const p of [0, 0.5, 1]) {
    const y = pad.t + (1 - p) * (h - pad.t - pad.b);
    ctx.beginPath(); ctx.moveTo(pad.l, y); ctx.lineTo(w - pad.r, y); ctx.stroke();
    ctx.fillText(p.toFixed(1), 4, y + 4);
  }
  const span = Math.max(t1 - t0, 1e-6);
  const x = (t) => pad.l + ((t - t0) / span) * (w - pad.l - pad.r);
  const y = (p) => pad.t + (1 - p) * (h - pad.t - pad.b);
  const step = span > 60 ? 10 : span > 20 ? 5 : 1;
  for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) ctx.fillText(`${t.toFixed(0)} s`, x(t) - 8, h - 5);
  if (!points.length) return;
  ctx.lineWidth = 2;
  for (const c of classes) {
    ctx.strokeStyle = classColour(classes, c);
    ctx.beginPath();
    points.forEach((pt, i) => (i ? ctx.lineTo : ctx.moveTo).call(ctx, x(pt.t), y(pt.probs[c] ?? 0)));
    ctx.stroke();
  }
}

/** Face boxes with label and confidence, scaled from frame pixels to the overlay canvas. */
export function drawBoxes(canvas, frameSize, tracks, labelFor) {
  const rect = canvas.getBoundingClientRect();
  canvas.width = Math.round(rect.width);
  canvas.height = Math.round(rect.height);
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!frameSize) return;
  const sx = canvas.width / frameSize.width;
  const sy = canvas.height / frameSize.height;
  ctx.font = "bold 15px system-ui";
  for (const tr of tracks) {
    const [x1, y1, x2, y2] = tr.box;
    const text = labelFor(tr.track_id);
    ctx.strokeStyle = text ? text.colour : "#ffffff";
    ctx.lineWidth = 3;
    ctx.strokeRect(x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy);
    const caption = text ? `${text.label} ${(100 * text.confidence).toFixed(0)}%` : `person ${tr.track_id}`;
    const tw = ctx.measureText(caption).width + 8;
    ctx.fillStyle = text ? text.colour : "#374151";
    ctx.fillRect(x1 * sx, Math.max(0, y1 * sy - 20), tw, 20);
    ctx.fillStyle = "#fff";
    ctx.fillText(caption, x1 * sx + 4, Math.max(14, y1 * sy - 5));
  }
}

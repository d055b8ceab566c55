// The item view: before/after comparison, mask overlay, brush/eraser correction, tags, decisions.
// Everything has a key; "A" approves and moves on. The mask is painted at the display rendition's
// resolution (at most 1600 px a side); the server merges it into the full-size mask on save.
"use strict";
(function () {
  const taskId = document.getElementById("item").dataset.task;
  const $ = (id) => document.getElementById(id);
  const original = $("img-original"), composite = $("img-composite"), compositeSide = $("img-composite-side");
  const canvas = $("mask-canvas"), layers = $("layers"), panes = $("panes"), divider = $("divider");
  const cursor = $("brush-cursor"), message = $("message"), note = $("note");
  const sizeInput = $("brush-size"), sizeValue = $("brush-size-value");
  const started = performance.now();

  let task = null;
  let mask = null;           // offscreen canvas: alpha = foreground (display resolution)
  let maskCtx = null;
  let viewCtx = canvas.getContext("2d");
  let tool = null;           // null | "brush" | "eraser"
  let brush = 24;
  let overlay = true;
  let zoom = 1;
  let split = 0.5;           // slider position, 0..1
  let painting = false, lastPoint = null, dirty = false, busy = false;
  const undo = [];
  const tags = new Set();

  function say(text, seconds = 3) {
    message.textContent = text;
    if (seconds) setTimeout(() => { if (message.textContent === text) message.textContent = ""; }, seconds * 1000);
  }

  function loadImage(img, url) {
    return new Promise((resolve, reject) => {
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("could not load " + url));
      img.src = url;
    });
  }

  // -- mask ---------------------------------------------------------------------------------

  function render() {
    viewCtx.clearRect(0, 0, canvas.width, canvas.height);
    if (!mask) return;
    viewCtx.globalCompositeOperation = "source-over";
    viewCtx.drawImage(mask, 0, 0);
    viewCtx.globalCompositeOperation = "source-in";
    viewCtx.fillStyle = "rgba(255, 40, 90, 0.45)";
    viewCtx.fillRect(0, 0, canvas.width, canvas.height);
    viewCtx.globalCompositeOperation = "source-over";
  }

  async function initMask(url) {
    const img = await loadImage(new Image(), url);
    const w = task.display.width, h = task.display.height;
    mask = document.createElement("canvas");
    mask.width = w; mask.height = h;
    maskCtx = mask.getContext("2d", { willReadFrequently: true });
    maskCtx.drawImage(img, 0, 0, w, h);
    const data = maskCtx.getImageData(0, 0, w, h);
    const px = data.data;
    for (let i = 0; i < px.length; i += 4) {  // grey mask -> white with alpha = mask value
      const v = px[i];
      px[i] = 255; px[i + 1] = 255; px[i + 2] = 255; px[i + 3] = v;
    }
    maskCtx.putImageData(data, 0, 0);
    canvas.width = w; canvas.height = h;
    render();
  }

  function pushUndo() {
    undo.push(maskCtx.getImageData(0, 0, mask.width, mask.height));
    if (undo.length > 30) undo.shift();
  }

  function doUndo() {
    if (!undo.length) { say("Nothing to undo"); return; }
    maskCtx.putImageData(undo.pop(), 0, 0);
    dirty = undo.length > 0;
    render();
    say("Undone");
  }

  function point(event) {
    const rect = canvas.getBoundingClientRect();
    return { x: (event.clientX - rect.left) * canvas.width / rect.width, y: (event.clientY - rect.top) * canvas.height / rect.height };
  }

  function brushPixels() { return brush * canvas.width / canvas.getBoundingClientRect().width; }

  function stroke(from, to) {
    maskCtx.save();
    maskCtx.globalCompositeOperation = tool === "eraser" ? "destination-out" : "source-over";
    maskCtx.strokeStyle = "#fff"; maskCtx.fillStyle = "#fff";
    maskCtx.lineCap = "round"; maskCtx.lineJoin = "round";
    maskCtx.lineWidth = brushPixels();
    maskCtx.beginPath();
    if (from.x === to.x && from.y === to.y) {
      maskCtx.arc(to.x, to.y, brushPixels() / 2, 0, Math.PI * 2);
      maskCtx.fill();
    } else {
      maskCtx.moveTo(from.x, from.y); maskCtx.lineTo(to.x, to.y);
      maskCtx.stroke();
    }
    maskCtx.restore();
    render();
  }

  function moveCursor(event) {
    if (!tool) { cursor.style.display = "none"; return; }
    const rect = layers.getBoundingClientRect();
    cursor.style.display = "block";
    cursor.style.left = (event.clientX - rect.left) + "px";
    cursor.style.top = (event.clientY - rect.top) + "px";
    cursor.style.width = cursor.style.height = brush + "px";
  }

  canvas.addEventListener("pointerdown", (event) => {
    if (!tool || !mask || event.button !== 0) return;
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    pushUndo();
    painting = true; dirty = true;
    lastPoint = point(event);
    stroke(lastPoint, lastPoint);
  });
  canvas.addEventListener("pointermove", (event) => {
    moveCursor(event);
    if (!painting) return;
    const p = point(event);
    stroke(lastPoint, p);
    lastPoint = p;
  });
  const endStroke = () => { painting = false; lastPoint = null; };
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);
  canvas.addEventListener("pointerleave", () => { cursor.style.display = "none"; });

  function setTool(next) {
    tool = tool === next ? null : next;
    $("tool-brush").classList.toggle("active", tool === "brush");
    $("tool-eraser").classList.toggle("active", tool === "eraser");
    canvas.classList.toggle("painting", !!tool);
    canvas.style.pointerEvents = tool ? "auto" : "none";
    if (tool && !overlay) setOverlay(true);
    say(tool ? (tool === "brush" ? "Brush: paint what belongs to the product" : "Eraser: remove what is background") : "Tool off");
  }

  function setBrush(px) {
    brush = Math.max(2, Math.min(200, Math.round(px)));
    sizeInput.value = brush; sizeValue.textContent = brush;
    cursor.style.width = cursor.style.height = brush + "px";
  }

  function setOverlay(on) {
    overlay = on;
    canvas.classList.toggle("hidden", !overlay);
    $("toggle-mask").classList.toggle("active", overlay);
  }

  // The painted mask as an opaque 0/255 grey PNG at the preview's size (alpha >= 128 is product). The
  // server merges it into the full-resolution mask: untouched pixels keep their full-resolution outline,
  // changed ones are upsampled (see images.merge_preview_correction). A 20 MP photo never reaches the page.
  function paintedMask() {
    const w = mask.width, h = mask.height;
    const out = document.createElement("canvas");
    out.width = w; out.height = h;
    const ctx = out.getContext("2d", { willReadFrequently: true });
    const data = maskCtx.getImageData(0, 0, w, h);
    const px = data.data;
    for (let i = 0; i < px.length; i += 4) {
      const v = px[i + 3] >= 128 ? 255 : 0;
      px[i] = v; px[i + 1] = v; px[i + 2] = v; px[i + 3] = 255;
    }
    ctx.putImageData(data, 0, 0);
    return new Promise((resolve) => out.toBlob(resolve, "image/png"));
  }

  // -- view ---------------------------------------------------------------------------------

  function applyZoom() {
    const w = Math.round(task.display.width * zoom), h = Math.round(task.display.height * zoom);
    for (const el of [original, compositeSide]) { el.style.width = w + "px"; el.style.height = h + "px"; }
    $("zoom-value").textContent = Math.round(zoom * 100) + " %";
    moveDivider();
  }

  function fitZoom() {
    const viewer = $("viewer");
    const side = panes.dataset.mode === "side" ? 2 : 1;
    const availW = (viewer.clientWidth - 24 - (side - 1) * 12) / side, availH = viewer.clientHeight - 24;
    zoom = Math.min(availW / task.display.width, availH / task.display.height, 4);
    applyZoom();
  }

  function setZoom(next) { zoom = Math.max(0.1, Math.min(8, next)); applyZoom(); }

  function moveDivider() {
    composite.style.clipPath = `inset(0 0 0 ${split * 100}%)`;
    divider.style.left = (split * 100) + "%";
  }

  function toggleView() {
    panes.dataset.mode = panes.dataset.mode === "compare" ? "side" : "compare";
    fitZoom();
  }

  layers.addEventListener("pointermove", (event) => {
    if (tool || panes.dataset.mode !== "compare" || !(event.buttons & 1)) return;
    const rect = layers.getBoundingClientRect();
    split = Math.max(0, Math.min(1, (event.clientX - rect.left) / rect.width));
    moveDivider();
  });
  layers.addEventListener("pointerdown", (event) => {
    if (tool || panes.dataset.mode !== "compare") return;
    const rect = layers.getBoundingClientRect();
    split = Math.max(0, Math.min(1, (event.clientX - rect.left) / rect.width));
    moveDivider();
  });
  $("viewer").addEventListener("wheel", (event) => {
    if (!event.ctrlKey) return;
    event.preventDefault();
    setZoom(zoom * (event.deltaY < 0 ? 1.15 : 1 / 1.15));
  }, { passive: false });

  // -- tags, note, decisions ----------------------------------------------------------------

  function toggleTag(mode) {
    if (!task.failure_modes.includes(mode)) return;
    if (tags.has(mode)) tags.delete(mode); else tags.add(mode);
    document.querySelectorAll(".tag").forEach((b) => b.setAttribute("aria-pressed", tags.has(b.dataset.mode) ? "true" : "false"));
  }

  function seconds() { return Math.round((performance.now() - started) / 100) / 10; }

  function afterDecision(result) {
    if (!result.ok) {
      if (result.status === 423 && result.data && result.data.detail && result.data.detail.break) { showBreak(result.data.detail.break, null); return; }
      say("Not saved: " + HITL.detail(result), 6);
      return;
    }
    const data = result.data;
    say(`Saved: ${data.decision} (${data.decided} of ${data.total})`);
    const next = data.next_task_id ? "/tasks/" + data.next_task_id : "/";
    if (data.break && data.break.until) showBreak(data.break, next);
    else window.location.href = next;
  }

  async function decide(decision) {
    if (busy || !task) return;
    busy = true;
    try {
      const body = { decision, failure_modes: Array.from(tags), note: note.value, seconds: seconds(), request_id: HITL.newRequestId() };
      afterDecision(await HITL.post(`/api/tasks/${taskId}/decision`, body));
    } finally { busy = false; }
  }

  async function saveCorrection() {
    if (busy || !task || !mask) return;
    if (!dirty) { say("Paint the mask first (B brush, E eraser), then press C", 4); return; }
    busy = true;
    say("Saving the corrected mask…", 0);
    try {
      const blob = await paintedMask();
      const form = new FormData();
      form.append("mask", blob, "mask.png");
      form.append("failure_modes", Array.from(tags).join(","));
      form.append("note", note.value);
      form.append("seconds", String(seconds()));
      form.append("request_id", HITL.newRequestId());
      afterDecision(await HITL.post(`/api/tasks/${taskId}/correction`, form));
    } finally { busy = false; }
  }

  function showBreak(state, next) {
    const box = $("break");
    box.hidden = false;
    $("break-count").textContent = state.reviewed;
    const until = new Date(state.until).getTime();
    const tick = () => {
      const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      $("break-remaining").textContent = left;
      if (left <= 0) { clearInterval(timer); box.hidden = true; if (next) window.location.href = next; }
    };
    const timer = setInterval(tick, 250);
    tick();
  }

  function go(id) { if (id) window.location.href = "/tasks/" + id; }

  // -- keyboard -----------------------------------------------------------------------------

  document.addEventListener("keydown", (event) => {
    const help = $("help");
    if (event.key === "Escape") {
      if (!help.hidden) { help.hidden = true; return; }
      if (HITL.typing(event)) { event.target.blur(); return; }
    }
    if (HITL.typing(event) || !task || !$("break").hidden) return;
    if ((event.ctrlKey || event.metaKey) && (event.key === "z" || event.key === "Z")) { event.preventDefault(); doUndo(); return; }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    const handled = {
      a: () => decide("approve"), A: () => decide("approve"),
      r: () => decide("reject"), R: () => decide("reject"),
      c: () => saveCorrection(), C: () => saveCorrection(),
      b: () => setTool("brush"), B: () => setTool("brush"),
      e: () => setTool("eraser"), E: () => setTool("eraser"),
      z: doUndo, Z: doUndo,
      m: () => setOverlay(!overlay), M: () => setOverlay(!overlay),
      v: toggleView, V: toggleView,
      "[": () => setBrush(brush / 1.25), "]": () => setBrush(brush * 1.25 + 1),
      "+": () => setZoom(zoom * 1.25), "=": () => setZoom(zoom * 1.25), "-": () => setZoom(zoom / 1.25), "0": fitZoom,
      n: () => note.focus(), N: () => note.focus(),
      j: () => go(task.next_id), J: () => go(task.next_id), k: () => go(task.prev_id), K: () => go(task.prev_id),
      q: () => { window.location.href = "/"; }, Q: () => { window.location.href = "/"; },
      "?": () => { help.hidden = !help.hidden; },
      ArrowLeft: () => { split = Math.max(0, split - 0.05); moveDivider(); },
      ArrowRight: () => { split = Math.min(1, split + 0.05); moveDivider(); },
    }[key];
    if (handled) { event.preventDefault(); handled(); return; }
    if (/^[1-9]$/.test(key)) {
      const mode = task.failure_modes[Number(key) - 1];
      if (mode) { event.preventDefault(); toggleTag(mode); }
    }
  });

  // -- buttons ------------------------------------------------------------------------------

  $("btn-approve").addEventListener("click", () => decide("approve"));
  $("btn-reject").addEventListener("click", () => decide("reject"));
  $("btn-correct").addEventListener("click", saveCorrection);
  $("tool-brush").addEventListener("click", () => setTool("brush"));
  $("tool-eraser").addEventListener("click", () => setTool("eraser"));
  $("tool-undo").addEventListener("click", doUndo);
  $("toggle-mask").addEventListener("click", () => setOverlay(!overlay));
  $("toggle-view").addEventListener("click", toggleView);
  $("zoom-in").addEventListener("click", () => setZoom(zoom * 1.25));
  $("zoom-out").addEventListener("click", () => setZoom(zoom / 1.25));
  $("zoom-fit").addEventListener("click", fitZoom);
  sizeInput.addEventListener("input", () => setBrush(Number(sizeInput.value)));
  document.querySelectorAll(".tag").forEach((b) => b.addEventListener("click", () => toggleTag(b.dataset.mode)));
  setInterval(() => { $("timer").textContent = Math.round((performance.now() - started) / 1000) + " s"; }, 1000);

  // -- load ---------------------------------------------------------------------------------

  async function load() {
    const result = await HITL.get(`/api/tasks/${taskId}`);
    if (!result.ok) { $("loading").textContent = "This item is not yours or no longer exists. Q: back to the queue."; return; }
    task = result.data;
    $("position").textContent = `Item ${task.position || "–"} of ${task.total}`;
    $("progress-bar").style.width = (task.total ? 100 * task.decided / task.total : 0) + "%";
    $("meta").textContent = [task.sku, task.category, task.file, `${task.width}×${task.height}`].filter(Boolean).join(" · ");
    const chip = $("status-chip");
    chip.textContent = task.mine ? "decided: " + task.mine.decision : "to do";
    chip.className = "chip " + (task.mine ? task.mine.decision : "");
    const reasons = $("reasons");
    for (const r of task.reasons) {
      const span = document.createElement("span");
      span.className = "chip"; span.textContent = r.replace(/_/g, " ");
      reasons.appendChild(span);
    }
    const signals = $("signals");
    for (const [name, value] of Object.entries(task.signals)) {
      const row = signals.insertRow();
      row.insertCell().textContent = name.replace(/_/g, " ");
      row.insertCell().textContent = typeof value === "number" ? (Number.isInteger(value) ? value : value.toFixed(3)) : String(value);
    }
    if (task.mine) {
      task.mine.failure_modes.forEach(toggleTag);
      note.value = task.mine.note || "";
    }
    await Promise.all([
      loadImage(original, task.images.original),
      loadImage(composite, task.images.composite),
      loadImage(compositeSide, task.images.composite),
      initMask(task.images.corrected || task.images.mask),
    ]);
    canvas.style.pointerEvents = "none";
    setOverlay(true);
    fitZoom();
    $("loading").hidden = true;
    $("item").dataset.ready = "true";
  }

  load().catch((error) => { $("loading").textContent = "Could not load the item: " + error.message; });
})();

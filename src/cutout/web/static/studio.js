// The studio dialog: a large view of one record (zoom and pan by mouse, touch and keyboard;
// a backdrop to inspect edges; "show original"), its background shown live, the touch-up
// brush, and downloads composed by the server at full resolution.
import { BrushEditor } from "./brush.js";
import { dispositionName, saveBlob, send, sendJson } from "./util.js";

const MIN_ZOOM = 0.05;
const MAX_ZOOM = 16;
const BLUR_STEP = 0.005;  // of the long side per step of the slider; 4 steps = the CLI default
const $ = (id) => document.getElementById(id);

/** Mean over a (2r+1) window along x then y, normalised by the pixels inside the image
 * (cutout/imaging/refine.py box_filter). */
function boxBlur(src, w, h, r) {
  const tmp = new Float32Array(w * h);
  const out = new Float32Array(w * h);
  for (let y = 0; y < h; y += 1) {
    for (let x = 0; x < w; x += 1) {
      let sum = 0;
      const x0 = Math.max(0, x - r);
      const x1 = Math.min(w - 1, x + r);
      for (let k = x0; k <= x1; k += 1) sum += src[y * w + k];
      tmp[y * w + x] = sum / (x1 - x0 + 1);
    }
  }
  for (let x = 0; x < w; x += 1) {
    for (let y = 0; y < h; y += 1) {
      let sum = 0;
      const y0 = Math.max(0, y - r);
      const y1 = Math.min(h - 1, y + r);
      for (let k = y0; k <= y1; k += 1) sum += tmp[k * w + x];
      out[y * w + x] = sum / (y1 - y0 + 1);
    }
  }
  return out;
}

export function setupStudio({ renderCard }) {
  const dialog = $("studio");
  const stage = $("stage");
  const content = $("stage-content");
  const cutoutImg = $("stage-cutout");
  const originalImg = $("stage-original");
  const canvas = $("brush-canvas");
  const cursor = $("brush-cursor");
  const status = $("studio-status");
  const view = { scale: 1, x: 0, y: 0, w: 1, h: 1, fitted: true };
  const brush = { on: false, editor: null, pen: null, cursor: null };
  const pointers = new Map();
  let record = null;
  let opener = null;
  let pictureUrl = null;
  let photo = null;  // the original, decoded once per opening (blur preview, brush)

  const say = (message) => { status.textContent = message; };
  const radios = (name) => [...dialog.querySelectorAll(`input[name="${name}"]`)];
  const choice = (name) => radios(name).find((r) => r.checked).value;

  // -- opening and closing -------------------------------------------------------------------

  async function open(card, from) {
    opener = from;
    record = { id: card.dataset.id, name: card.dataset.name, original: card.dataset.original, processed: card.dataset.processed };
    $("studio-name").textContent = record.name;
    setBrush(false);
    showOriginal(false);
    dialog.showModal();
    stage.focus();
    await loadCutout(record.processed);
    applyBackground();
  }

  async function loadCutout(url) {
    say("Loading the full-size image…");
    cutoutImg.src = url;
    try {
      await cutoutImg.decode();
    } catch {
      say("The image could not be loaded.");
      return;
    }
    if (!record) return;  // closed while it loaded
    view.w = cutoutImg.naturalWidth;
    view.h = cutoutImg.naturalHeight;
    content.style.width = `${view.w}px`;
    content.style.height = `${view.h}px`;
    if (view.fitted || !record.loaded) fit();
    record.loaded = true;
    say(`${view.w} × ${view.h} px`);
  }

  function requestClose() {
    if (brush.editor?.dirty && !window.confirm("Discard the touch-up strokes you have not saved?")) return;
    dialog.close();
  }

  $("studio-close").addEventListener("click", requestClose);
  dialog.addEventListener("cancel", (event) => { event.preventDefault(); requestClose(); });
  dialog.addEventListener("close", () => {
    setBrush(false);
    brush.editor = null;
    record = null;
    cutoutImg.removeAttribute("src");
    originalImg.removeAttribute("src");
    photo = null;
    opener?.focus();
  });

  // -- zoom and pan ------------------------------------------------------------------------

  function apply() {
    content.style.transform = `translate(${view.x}px, ${view.y}px) scale(${view.scale})`;
    $("zoom-level").textContent = `${Math.round(view.scale * 100)}%`;
    stage.classList.toggle("pixelated", view.scale >= 3);
    placeCursor();
  }

  function fit() {
    const box = stage.getBoundingClientRect();
    view.scale = Math.min(box.width / view.w, box.height / view.h) || 1;
    view.x = (box.width - view.w * view.scale) / 2;
    view.y = (box.height - view.h * view.scale) / 2;
    view.fitted = true;
    apply();
  }

  function zoomAt(factor, cx, cy) {
    const scale = Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, view.scale * factor));
    view.x = cx - (cx - view.x) * (scale / view.scale);
    view.y = cy - (cy - view.y) * (scale / view.scale);
    view.scale = scale;
    view.fitted = false;
    clampPan();
    apply();
  }

  function zoomCentre(factor) {
    const box = stage.getBoundingClientRect();
    zoomAt(factor, box.width / 2, box.height / 2);
  }

  function panBy(dx, dy) {
    view.x += dx;
    view.y += dy;
    view.fitted = false;
    clampPan();
    apply();
  }

  /** Keep at least 40 px of the image inside the stage. */
  function clampPan() {
    const box = stage.getBoundingClientRect();
    const keep = 40;
    view.x = Math.min(box.width - keep, Math.max(keep - view.w * view.scale, view.x));
    view.y = Math.min(box.height - keep, Math.max(keep - view.h * view.scale, view.y));
  }

  $("zoom-in").addEventListener("click", () => zoomCentre(1.25));
  $("zoom-out").addEventListener("click", () => zoomCentre(0.8));
  $("zoom-fit").addEventListener("click", fit);
  $("zoom-actual").addEventListener("click", () => zoomCentre(1 / view.scale));
  new ResizeObserver(() => { if (record && view.fitted) fit(); }).observe(stage);

  stage.addEventListener("wheel", (event) => {
    event.preventDefault();
    const box = stage.getBoundingClientRect();
    zoomAt(Math.exp(-event.deltaY * 0.0015), event.clientX - box.left, event.clientY - box.top);
  }, { passive: false });

  /** Where a client point falls on the image, as fractions of its width and height. */
  function imagePoint(clientX, clientY) {
    const box = stage.getBoundingClientRect();
    return [(clientX - box.left - view.x) / view.scale / view.w, (clientY - box.top - view.y) / view.scale / view.h];
  }

  stage.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 && event.pointerType === "mouse") return;
    stage.setPointerCapture(event.pointerId);
    pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
    if (pointers.size === 2) {  // a second finger: pinch to zoom, never paint
      brush.editor?.end();
      return;
    }
    if (brush.on && brush.editor) {
      brush.cursor = imagePoint(event.clientX, event.clientY);
      brush.editor.begin(choice("brush-mode"), radiusFraction(), softness(), brush.cursor);
      refreshBrushButtons();
    } else {
      stage.classList.add("panning");
    }
  });

  stage.addEventListener("pointermove", (event) => {
    const previous = pointers.get(event.pointerId);
    if (brush.on) {
      brush.cursor = imagePoint(event.clientX, event.clientY);
      placeCursor();
    }
    if (!previous) return;
    const current = { x: event.clientX, y: event.clientY };
    if (pointers.size === 2) {
      const [other] = [...pointers].filter(([id]) => id !== event.pointerId).map(([, p]) => p);
      const before = Math.hypot(previous.x - other.x, previous.y - other.y);
      const after = Math.hypot(current.x - other.x, current.y - other.y);
      const box = stage.getBoundingClientRect();
      if (before > 0) zoomAt(after / before, (current.x + other.x) / 2 - box.left, (current.y + other.y) / 2 - box.top);
    } else if (brush.on && brush.editor?.current) {
      brush.editor.extend(brush.cursor);
    } else {
      panBy(current.x - previous.x, current.y - previous.y);
    }
    pointers.set(event.pointerId, current);
  });

  const release = (event) => {
    pointers.delete(event.pointerId);
    stage.classList.remove("panning");
    if (brush.editor?.end()) refreshBrushButtons();
  };
  stage.addEventListener("pointerup", release);
  stage.addEventListener("pointercancel", release);
  stage.addEventListener("pointerleave", () => { if (brush.on && !brush.pen) cursor.hidden = pointers.size === 0; });
  stage.addEventListener("pointerenter", () => { if (brush.on) cursor.hidden = false; });

  stage.addEventListener("keydown", (event) => {
    const step = event.shiftKey ? 200 : 40;
    const keys = {
      "+": () => zoomCentre(1.25), "=": () => zoomCentre(1.25), "-": () => zoomCentre(0.8),
      "0": fit, "1": () => zoomCentre(1 / view.scale),
      "[": () => nudgeSize(-4), "]": () => nudgeSize(4),
    };
    const arrows = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    if (keys[event.key]) {
      keys[event.key]();
    } else if (arrows[event.key] && brush.on && brush.editor) {
      moveKeyboardBrush(...arrows[event.key], event.shiftKey);
    } else if (arrows[event.key]) {
      panBy(-arrows[event.key][0] * step, -arrows[event.key][1] * step);
    } else if ((event.key === " " || event.key === "Enter") && brush.on && brush.editor) {
      togglePen();
    } else if (event.key === "Escape" && brush.pen) {
      togglePen();
    } else {
      return;
    }
    event.preventDefault();
    event.stopPropagation();
  });

  // -- backdrop, "show original" -------------------------------------------------------------

  function applyBackdrop() {
    const value = choice("backdrop");
    stage.classList.remove("backdrop-checker", "backdrop-white", "backdrop-black", "backdrop-color");
    stage.classList.add(`backdrop-${value}`);
    stage.style.setProperty("--backdrop", $("backdrop-color").value);
  }
  radios("backdrop").forEach((r) => r.addEventListener("change", applyBackdrop));
  $("backdrop-color").addEventListener("input", () => {
    radios("backdrop").find((r) => r.value === "color").checked = true;
    applyBackdrop();
  });

  function showOriginal(on) {
    $("show-original").setAttribute("aria-pressed", String(on));
    if (on && record && !originalImg.getAttribute("src")) originalImg.src = record.original;
    originalImg.hidden = !on;
  }
  $("show-original").addEventListener("click", () => showOriginal($("show-original").getAttribute("aria-pressed") !== "true"));

  // -- background (live here, applied by the server in downloads) ---------------------------

  function blurFraction() { return Number($("bg-blur-amount").value) * BLUR_STEP; }

  async function original() {
    if (!photo) {
      photo = new Image();
      photo.src = record.original;
      await photo.decode();
    }
    return photo;
  }

  /** The photo's own background, blurred with the subject masked out, as the server does it
   * (compose.blurred_background): a normalised box blur at a reduced size, scaled up. */
  async function drawBlur() {
    const source = await original().catch(() => null);
    if (!source || !cutoutImg.naturalWidth) return;
    const pixels = Math.max(2, blurFraction() * Math.max(view.w, view.h));
    const factor = Math.max(1, Math.floor(pixels / 4));
    const w = Math.max(1, Math.floor(view.w / factor));
    const h = Math.max(1, Math.floor(view.h / factor));
    const r = Math.max(1, Math.round(pixels / factor / 2));
    const canvas2d = $("bg-blur");
    canvas2d.width = w;
    canvas2d.height = h;
    const ctx = canvas2d.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(source, 0, 0, w, h);
    const rgb = ctx.getImageData(0, 0, w, h);
    ctx.clearRect(0, 0, w, h);
    ctx.drawImage(cutoutImg, 0, 0, w, h);
    const alpha = ctx.getImageData(0, 0, w, h).data;
    const weight = new Float32Array(w * h);
    const num = [0, 1, 2].map(() => new Float32Array(w * h));
    const mean = [0, 0, 0];
    for (let i = 0; i < w * h; i += 1) {
      weight[i] = 1 - alpha[i * 4 + 3] / 255;
      for (let c = 0; c < 3; c += 1) {
        num[c][i] = rgb.data[i * 4 + c] * weight[i];
        mean[c] += rgb.data[i * 4 + c] / (w * h);
      }
    }
    const den = boxBlur(boxBlur(weight, w, h, r), w, h, r);
    const blurred = num.map((channel) => boxBlur(boxBlur(channel, w, h, r), w, h, r));
    for (let i = 0; i < w * h; i += 1) {
      const d = den[i] + 1e-3;
      for (let c = 0; c < 3; c += 1) rgb.data[i * 4 + c] = den[i] + 1e-3 > 0.02 ? blurred[c][i] / d : mean[c];
      rgb.data[i * 4 + 3] = 255;
    }
    ctx.putImageData(rgb, 0, 0);
  }

  function applyBackground() {
    const kind = choice("background");
    $("bg-color-options").hidden = kind !== "color";
    $("bg-blur-options").hidden = kind !== "blur";
    $("bg-image-options").hidden = kind !== "image";
    const layer = $("bg-layer");
    const picture = pictureUrl && kind === "image";
    layer.hidden = kind === "transparent" || (kind === "image" && !picture);
    layer.style.setProperty("--bg-color", kind === "color" ? $("bg-color").value : "transparent");
    $("bg-blur").hidden = kind !== "blur";
    if (kind === "blur" && record) drawBlur();
    $("bg-blur-value").textContent = `${(blurFraction() * 100).toFixed(1)}% of the long side`;
    $("bg-picture").hidden = !picture;
    if (picture) $("bg-picture").src = pictureUrl;
    dialog.querySelectorAll(".swatch").forEach((s) => s.setAttribute("aria-pressed", String(s.dataset.color === $("bg-color").value)));
  }
  radios("background").forEach((r) => r.addEventListener("change", applyBackground));
  $("bg-color").addEventListener("input", applyBackground);
  $("bg-blur-amount").addEventListener("input", applyBackground);
  dialog.querySelectorAll(".swatch").forEach((swatch) => swatch.addEventListener("click", () => {
    $("bg-color").value = swatch.dataset.color;
    applyBackground();
  }));
  $("bg-file").addEventListener("change", () => {
    if (pictureUrl) URL.revokeObjectURL(pictureUrl);
    const file = $("bg-file").files[0];
    pictureUrl = file ? URL.createObjectURL(file) : null;
    applyBackground();
  });

  // -- the brush -----------------------------------------------------------------------------

  const radiusFraction = () => Number($("brush-size").value) / 2 / view.scale / view.w;
  const softness = () => Number($("brush-softness").value) / 100;

  async function setBrush(on) {
    if (brush.editor?.end()) refreshBrushButtons();  // a stroke in progress is kept
    brush.on = on;
    brush.pen = null;
    $("brush-toggle").setAttribute("aria-pressed", String(on));
    $("brush-toggle").textContent = on ? "Stop brushing" : "Use the brush";
    stage.classList.toggle("brushing", on);
    cursor.hidden = !on;
    if (on && !brush.editor) await startEditor();
    canvas.hidden = !on || !brush.editor;
    cutoutImg.hidden = on && Boolean(brush.editor);
    if (on && brush.editor) {
      brush.cursor = [0.5, 0.5];  // keyboard painting starts from the middle
      placeCursor();
      say("Brush on: drag over the image to paint.");
    }
    refreshBrushButtons();
  }

  async function startEditor() {
    say("Preparing the brush…");
    let source;
    try {
      [source] = await Promise.all([original(), cutoutImg.decode()]);
    } catch {
      say("The images for the brush could not be loaded.");
      return;
    }
    brush.editor = new BrushEditor(canvas, source, cutoutImg);
  }

  function placeCursor() {
    if (!brush.on || !brush.cursor) return;
    const size = Number($("brush-size").value);
    cursor.style.width = cursor.style.height = `${size}px`;
    cursor.style.left = `${view.x + brush.cursor[0] * view.w * view.scale}px`;
    cursor.style.top = `${view.y + brush.cursor[1] * view.h * view.scale}px`;
    cursor.classList.toggle("pen-down", Boolean(brush.pen));
  }

  /** Keyboard painting: arrows move the brush; while the pen is down, they paint. */
  function moveKeyboardBrush(dx, dy, big) {
    const step = (big ? 40 : 8) / view.scale;
    const [x, y] = brush.cursor;
    brush.cursor = [x + (dx * step) / view.w, y + (dy * step) / view.h];
    if (brush.pen) brush.editor.extend(brush.cursor);
    placeCursor();
  }

  function togglePen() {
    if (brush.pen) {
      brush.pen = null;
      brush.editor.end();
      say("Stroke finished.");
    } else {
      brush.pen = true;
      brush.editor.begin(choice("brush-mode"), radiusFraction(), softness(), brush.cursor);
      say(`${choice("brush-mode") === "erase" ? "Erasing" : "Restoring"}: move with the arrow keys, Space to finish.`);
    }
    placeCursor();
    refreshBrushButtons();
  }

  function nudgeSize(delta) {
    const input = $("brush-size");
    input.value = String(Number(input.value) + delta);
    input.dispatchEvent(new Event("input"));
  }

  function refreshBrushButtons() {
    const editor = brush.editor;
    $("brush-undo").disabled = !editor?.canUndo;
    $("brush-redo").disabled = !editor?.canRedo;
    $("brush-save").disabled = !editor?.dirty;
  }

  $("brush-toggle").addEventListener("click", () => setBrush(!brush.on));
  $("brush-size").addEventListener("input", () => { $("brush-size-value").textContent = `${$("brush-size").value} px`; placeCursor(); });
  $("brush-softness").addEventListener("input", () => { $("brush-softness-value").textContent = `${$("brush-softness").value}%`; });
  $("brush-undo").addEventListener("click", () => { brush.pen = null; brush.editor?.undo(); refreshBrushButtons(); placeCursor(); });
  $("brush-redo").addEventListener("click", () => { brush.pen = null; brush.editor?.redo(); refreshBrushButtons(); placeCursor(); });
  $("brush-save").addEventListener("click", () => saveStrokes());
  $("brush-reset").addEventListener("click", () => resetEdit());

  /** Send the strokes; the server applies them to the full-size alpha. */
  async function saveStrokes() {
    if (!brush.editor?.dirty) return true;
    say("Saving the touch-up at full size…");
    try {
      await sendJson("POST", `/records/${record.id}/edits`, brush.editor.toJSON());
    } catch (err) {
      say(err.message);
      return false;
    }
    await reloadRecord("Touch-up saved.");
    return true;
  }

  async function resetEdit() {
    say("Going back to the model's result…");
    try {
      await sendJson("DELETE", `/records/${record.id}/edits`);
    } catch (err) {
      say(err.message);
      return;
    }
    await reloadRecord("Back to the model's result.");
  }

  /** After a save or reset: the card, the large view and the brush start from the new cut-out. */
  async function reloadRecord(message) {
    const card = await renderCard(record.id);
    record.processed = card.dataset.processed;
    opener = card.querySelector('[data-action="open"]');
    const wasOn = brush.on;
    brush.editor = null;
    await loadCutout(record.processed);
    applyBackground();  // the blurred background depends on the subject's outline
    if (wasOn) await setBrush(true);
    refreshBrushButtons();
    say(message);
  }

  // -- downloads -------------------------------------------------------------------------------

  function syncDownloadOptions() {
    $("max-side").disabled = choice("size") !== "max";
    $("download-button").textContent = $("mask-only").checked ? "Download the mask" : `Download ${choice("format").toUpperCase().replace("WEBP", "WebP")}`;
  }
  [...radios("size"), ...radios("format"), $("mask-only")].forEach((el) => el.addEventListener("change", syncDownloadOptions));
  syncDownloadOptions();

  async function download() {
    if (!(await saveStrokes())) return;
    const body = new FormData();
    body.append("format", choice("format"));
    body.append("background", choice("background"));
    body.append("color", $("bg-color").value);
    body.append("blur", String(blurFraction()));
    body.append("max_side", choice("size") === "max" ? $("max-side").value : "original");
    if ($("mask-only").checked) body.append("mask", "1");
    if (choice("background") === "image" && $("bg-file").files[0]) body.append("background_image", $("bg-file").files[0]);
    say("Composing the download at full size…");
    $("download-button").disabled = true;
    try {
      const response = await send("POST", `/records/${record.id}/export`, { body });
      const name = dispositionName(response.headers.get("Content-Disposition"), "cutout");
      saveBlob(await response.blob(), name);
      say(`Downloaded ${name}.`);
    } catch (err) {
      say(err.message);
    } finally {
      $("download-button").disabled = false;
    }
  }
  $("download-button").addEventListener("click", download);

  applyBackdrop();
  return { open, isOpen: () => dialog.open };
}

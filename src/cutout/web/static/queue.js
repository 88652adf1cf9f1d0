// Getting photos in: several files from the picker or a drop (onto the zone or anywhere on the
// page), a pasted image, an image URL. Each becomes a queue item (waiting, processing, done,
// failed with the reason) and a record of its own, through the same endpoints as the seed's
// form (POST / as JSON) and the URL field (POST /from-url). Two run at once: the server admits
// one more removal than it has model slots, so the second one decodes while the first one runs.
// A drop of more photos than the server's threshold goes as one batch job (POST /jobs) instead,
// with the same rows, driven by the job's items.
import { RequestError, send, sleep } from "./util.js";

const CONCURRENCY = 2;
const BUSY_RETRIES = 4;
const STATES = { waiting: "Waiting", processing: "Removing the background…", done: "Done", failed: "Failed" };

const stem = (filename) => filename.replace(/\.[^.]+$/, "").trim().slice(0, 100) || "Image";

export function setupQueue({ quota, onStored, onLimit, studioOpen }) {
  const form = document.getElementById("upload-form");
  const input = document.getElementById("image");
  const nameInput = document.getElementById("name");
  const zone = document.getElementById("dropzone");
  const preview = document.getElementById("preview");
  const text = document.getElementById("dropzone-text");
  const submit = document.getElementById("submit");
  const urlForm = document.getElementById("url-form");
  const panel = document.getElementById("queue");
  const listEl = document.getElementById("queue-list");
  const summary = document.getElementById("queue-summary");
  const bar = document.getElementById("queue-progress");
  const limitMessage = panel.dataset.limitMessage;
  // More photos than this at once go to the server as one batch job (CUTOUT_PAGE_JOB_THRESHOLD).
  const jobThreshold = Number(panel.dataset.jobThreshold) || 20;
  const items = [];
  let running = 0;
  let serial = 0;

  // The seed's single-photo form becomes a picker for several photos; the name is optional.
  input.multiple = true;
  nameInput.required = false;
  document.getElementById("image-label").textContent = "Photos";
  const idleText = () => {
    text.innerHTML = "";
    text.append(Object.assign(document.createElement("strong"), { textContent: "Drop photos here" }),
                " or ", Object.assign(document.createElement("span"), { className: "link", textContent: "choose files" }));
  };
  idleText();

  function showSelection() {
    const files = [...(input.files || [])];
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.hidden = true;
    preview.removeAttribute("src");
    if (!files.length) { idleText(); setSubmitLabel(1); return; }
    text.innerHTML = "";
    if (files.length === 1) {
      if (!nameInput.value.trim()) nameInput.value = stem(files[0].name);
      text.append(Object.assign(document.createElement("strong"), { textContent: files[0].name }),
                  " · choose another or drop a new one");
      preview.src = URL.createObjectURL(files[0]);
      preview.hidden = false;  // HEIC/TIFF may not preview in this browser; the upload still works
      preview.onerror = () => { preview.hidden = true; };
    } else {
      text.append(Object.assign(document.createElement("strong"), { textContent: `${files.length} photos chosen` }));
      const names = Object.assign(document.createElement("ul"), { className: "chosen" });
      files.forEach((f) => names.append(Object.assign(document.createElement("li"), { textContent: f.name })));
      text.append(names, "Each is named after its file.");
    }
    setSubmitLabel(files.length);
  }

  function setSubmitLabel(count) {
    submit.querySelector(".button-label").textContent =
      count > 1 ? `Remove ${count} backgrounds` : "Remove background";
  }

  function takeFiles(fileList) {
    const images = [...fileList];
    if (!images.length) return;
    const transfer = new DataTransfer();
    images.forEach((f) => transfer.items.add(f));
    input.files = transfer.files;
    showSelection();
  }

  input.addEventListener("change", showSelection);
  // Drop onto the zone or anywhere on the page.
  let depth = 0;
  const hasFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
  document.addEventListener("dragenter", (event) => {
    if (!hasFiles(event) || studioOpen()) return;
    depth += 1;
    document.body.classList.add("page-dragover");
  });
  document.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) document.body.classList.remove("page-dragover");
  });
  document.addEventListener("dragover", (event) => { if (hasFiles(event) && !studioOpen()) event.preventDefault(); });
  document.addEventListener("drop", (event) => {
    depth = 0;
    document.body.classList.remove("page-dragover");
    if (!hasFiles(event) || studioOpen()) return;
    event.preventDefault();
    takeFiles(event.dataTransfer.files);
    zone.scrollIntoView({ block: "nearest" });
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const files = [...(input.files || [])];
    if (!files.length) return;
    const single = files.length === 1 && nameInput.value.trim();
    if (files.length > jobThreshold) {
      sendAsJob(files);  // one request; the server works through them, the tab may close
    } else {
      files.forEach((file) => enqueue({ file, name: single ? nameInput.value.trim() : stem(file.name), label: file.name }));
    }
    form.reset();
    showSelection();
  });

  urlForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const field = document.getElementById("image-url");
    const url = field.value.trim();
    if (!url) return;
    enqueue({ url, label: url });
    field.value = "";
  });

  // Ctrl/Cmd+V anywhere: images on the clipboard join the queue; text pastes as usual.
  document.addEventListener("paste", (event) => {
    if (studioOpen()) return;
    const files = [...(event.clipboardData?.files || [])].filter((f) => f.type.startsWith("image/"));
    if (!files.length) return;
    event.preventDefault();
    const time = new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
    files.forEach((file, i) => {
      const name = `Pasted image ${time}${files.length > 1 ? ` (${i + 1})` : ""}`;
      enqueue({ file, name, label: name });
    });
  });

  document.getElementById("queue-clear").addEventListener("click", () => {
    for (let i = items.length - 1; i >= 0; i -= 1) {
      if (items[i].state === "done" || items[i].state === "failed") {
        items[i].el.remove();
        items.splice(i, 1);
      }
    }
    render();
    if (!items.length) panel.hidden = true;
  });

  // A batch job: every photo gets its queue row at once, then the job's items drive them.
  async function sendAsJob(files) {
    const rows = files.map((file) => enqueue({ file, label: file.name, job: true }));
    rows.forEach((item) => setState(item, "processing"));
    const body = new FormData();
    files.forEach((file) => body.append("images", file, file.name));
    let job;
    try {
      job = await (await send("POST", "/jobs", { body })).json();
    } catch (err) {
      rows.forEach((item) => setState(item, "failed", err.message));
      return;
    }
    summary.dataset.job = job.id;
    const seen = new Set();
    for (;;) {
      try {
        job = await (await send("GET", `/jobs/${job.id}`)).json();
      } catch {
        await sleep(3000);  // the server restarts, say: the job goes on there; keep asking
        continue;
      }
      for (const it of job.items) {
        const item = rows[it.index];
        if (!item || seen.has(it.index)) continue;
        if (it.status === "done") {
          seen.add(it.index);
          setState(item, "done");
          onStored({ _id: it.image_id }).catch(() => {});
        } else if (it.status === "failed" || it.status === "cancelled") {
          seen.add(it.index);
          if (it.error === limitMessage) onLimit();
          setState(item, "failed", it.error || "Cancelled.");
        }
      }
      if (job.status === "done" || job.status === "cancelled") return;
      await sleep(1500);
    }
  }

  function enqueue(item) {
    serial += 1;
    Object.assign(item, { id: serial, state: "waiting", reason: "" });
    item.el = document.createElement("li");
    item.el.className = "queue-item";
    item.el.append(
      Object.assign(document.createElement("span"), { className: "queue-name", textContent: item.label }),
      Object.assign(document.createElement("span"), { className: "queue-state" }),
      Object.assign(document.createElement("p"), { className: "queue-reason", hidden: true }),
    );
    items.push(item);
    listEl.append(item.el);
    panel.hidden = false;
    setState(item, "waiting");
    if (!item.job) pump();
    return item;
  }

  function setState(item, state, reason = "") {
    Object.assign(item, { state, reason });
    item.el.dataset.state = state;
    item.el.querySelector(".queue-state").textContent = STATES[state];
    const why = item.el.querySelector(".queue-reason");
    why.textContent = reason;
    why.hidden = !reason;
    render();
  }

  function render() {
    const finished = items.filter((i) => i.state === "done" || i.state === "failed");
    const done = items.filter((i) => i.state === "done").length;
    const failed = finished.length - done;
    bar.max = Math.max(1, items.length);
    bar.value = finished.length;
    if (finished.length < items.length) {
      summary.textContent = `${finished.length} of ${items.length} finished` + (failed ? `, ${failed} failed` : "") + "…";
    } else if (!failed) {
      // The seed's words for one photo; a count for several.
      summary.textContent = done === 1 ? "Image generated successfully" : `All ${done} images generated successfully`;
    } else {
      summary.textContent = `${done} of ${items.length} images generated successfully; ${failed} failed (see below).`;
    }
  }

  function pump() {
    while (running < CONCURRENCY) {
      const next = items.find((i) => i.state === "waiting" && !i.job);
      if (!next) return;
      running += 1;
      setState(next, "processing");
      process(next).finally(() => { running -= 1; pump(); });
    }
  }

  async function process(item) {
    // The page's count can be behind (another tab), so a photo is only refused here when the
    // page knows the account is full; otherwise the server decides, with the same message.
    if (quota.used >= quota.limit) { setState(item, "failed", limitMessage); return; }
    for (let attempt = 0; ; attempt += 1) {
      try {
        const record = await (await upload(item)).json();
        setState(item, "done");
        // The record is stored: showing its card is extra, and a failure there is not the upload's.
        onStored(record).catch(() => {});
        return;
      } catch (err) {
        if (err instanceof RequestError && err.status === 503 && attempt < BUSY_RETRIES) {
          item.el.querySelector(".queue-state").textContent = "Server busy, trying again…";
          await sleep(1000 * (err.retryAfter || 3));
          continue;
        }
        if (err instanceof RequestError && err.status === 409) onLimit();
        setState(item, "failed", err.message);
        return;
      }
    }
  }

  function upload(item) {
    const quality = document.getElementById("quality")?.value || "";
    if (item.url) return send("POST", "/from-url", { json: { url: item.url, quality } });
    const body = new FormData();
    body.append("name", item.name);
    body.append("quality", quality);
    body.append("image", item.file, item.file.name || "pasted.png");
    return send("POST", "/", { body });
  }
}

// Getting photos in: several files from the picker or a drop (onto the zone or anywhere on the
// page), a pasted image, an image URL. Each becomes a queue item (waiting, processing, done,
// failed with the reason) and a record of its own, through the same endpoints as the seed's
// form (POST / as JSON) and the URL field (POST /from-url). Two run at once: the server admits
// one more removal than it has model slots, so the second one decodes while the first one runs.
// A drop of more photos than the server's threshold goes as one batch job (POST /jobs): the
// server works through it whether or not the tab stays open, the queue shows each photo's
// state from GET /jobs/<id>, and a reopened page picks the unfinished job up again.
import { RequestError, send, sleep } from "./util.js";

const CONCURRENCY = 2;
const BUSY_RETRIES = 4;
const STATES = { waiting: "Waiting", processing: "Removing the background…", done: "Done", failed: "Failed" };
const JOB_STATES = { queued: "waiting", running: "processing", done: "done", failed: "failed", cancelled: "failed" };
const JOB_KEY = "cutout.jobs";  // unfinished jobs of this browser, to show again after a reload
const POLL_MS = 1000;

const stem = (filename) => filename.replace(/\.[^.]+$/, "").trim().slice(0, 100) || "Image";

export function setupQueue({ quota, onStored, onLimit, studioOpen, hasRecord }) {
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
  const jobThreshold = Number(panel.dataset.jobThreshold || 20);
  const jobNote = document.getElementById("queue-job-note");
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
    if (files.length > jobThreshold) sendJob(files);
    else files.forEach((file) => enqueue({ file, name: single ? nameInput.value.trim() : stem(file.name), label: file.name }));
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

  // -- many photos: one job on the server -------------------------------------------------

  async function sendJob(files) {
    const members = files.map((file) => enqueue({ file, label: file.name, inJob: true }));
    members.forEach((item) => { item.el.querySelector(".queue-state").textContent = "Uploading…"; });
    const body = new FormData();
    body.append("quality", document.getElementById("quality")?.value || "");  // the page's mode
    files.forEach((file) => body.append("images", file, file.name));
    let job;
    try {
      job = await (await send("POST", "/jobs", { body })).json();
    } catch (err) {
      if (err instanceof RequestError && err.status === 409) onLimit();
      members.forEach((item) => setState(item, "failed", err.message));
      return;
    }
    remember(job.id);
    await follow(job.id, members);
  }

  /** Show the job's items in the queue until every one has finished. */
  async function follow(jobId, members) {
    jobNote.hidden = false;
    for (;;) {
      let job;
      try {
        job = await (await send("GET", `/jobs/${encodeURIComponent(jobId)}`)).json();
      } catch (err) {
        if (err instanceof RequestError && err.status === 404) { forget(jobId); break; }
        await sleep(POLL_MS * 3);  // the server restarting, the network away: the job goes on
        continue;
      }
      if (!members) members = job.items.map((i) => enqueue({ label: i.name, inJob: true }));
      job.items.forEach((it) => {
        const item = members[it.index];
        const state = JOB_STATES[it.status] || "waiting";
        if (!item || item.state === state || item.state === "done" || item.state === "failed") return;
        const reason = it.status === "cancelled" ? "Cancelled." : it.error || "";
        setState(item, state, state === "failed" ? reason : "");
        // A record already in the page is not stored again: one the page was rendered with
        // (picked up after a reload), or one the job reused for the same photo sent twice.
        if (state === "done" && !hasRecord(it.image_id)) {
          onStored({ _id: it.image_id }).catch(() => {});
        }
        if (state === "failed" && it.error === limitMessage) onLimit();
      });
      if (job.status === "done" || job.status === "cancelled") { forget(jobId); break; }
      await sleep(POLL_MS);
    }
    jobNote.hidden = !items.some((i) => i.inJob && i.state !== "done" && i.state !== "failed");
  }

  const remembered = () => { try { return JSON.parse(localStorage.getItem(JOB_KEY)) || []; } catch { return []; } };
  const store = (ids) => { try { localStorage.setItem(JOB_KEY, JSON.stringify(ids)); } catch { /* private mode */ } };
  const remember = (id) => store([...remembered().filter((j) => j !== id), id]);
  const forget = (id) => store(remembered().filter((j) => j !== id));

  // A job sent from this browser before a reload (or a closed tab) shows again until it ends.
  remembered().forEach((id) => follow(id, null));

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
    pump();
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
      const next = items.find((i) => i.state === "waiting" && !i.inJob);
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
        // the page's other uploads still running hold places too (the server counts them)
        if (err instanceof RequestError && err.status === 409) onLimit(running - 1);
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

// Cutout page behaviour: upload preview and progress, rename in place, delete with a
// confirmation, all without inline script (the Content-Security-Policy forbids it).
"use strict";

(() => {
  const csrfToken = () => document.querySelector('meta[name="csrf-token"]').content;

  async function sendJson(method, url, body) {
    const response = await fetch(url, {
      method,
      headers: { "Content-Type": "application/json", "Accept": "application/json",
                 "X-CSRFToken": csrfToken() },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.message || `Request failed (${response.status})`);
    return data;
  }

  function setupFlashes() {
    document.addEventListener("click", (event) => {
      const close = event.target.closest(".flash-close");
      if (close) close.closest(".flash").remove();
    });
  }

  function setupUpload() {
    const form = document.getElementById("upload-form");
    if (!form) return;
    const input = document.getElementById("image");
    const zone = document.getElementById("dropzone");
    const preview = document.getElementById("preview");
    const text = document.getElementById("dropzone-text");
    const nameInput = document.getElementById("name");

    const showPreview = () => {
      const file = input.files && input.files[0];
      if (!file) return;
      if (!nameInput.value.trim()) nameInput.value = file.name.replace(/\.[^.]+$/, "").slice(0, 100);
      text.innerHTML = "";
      text.append(Object.assign(document.createElement("strong"), { textContent: file.name }),
                  " · choose another or drop a new one");
      if (preview.src) URL.revokeObjectURL(preview.src);
      preview.src = URL.createObjectURL(file);
      preview.hidden = false;  // HEIC/TIFF may not preview in this browser; the upload still works
      preview.onerror = () => { preview.hidden = true; };
    };
    input.addEventListener("change", showPreview);
    ["dragenter", "dragover"].forEach((type) => zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("dragover");
    }));
    ["dragleave", "drop"].forEach((type) => zone.addEventListener(type, () => zone.classList.remove("dragover")));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      if (event.dataTransfer.files.length) {
        input.files = event.dataTransfer.files;
        showPreview();
      }
    });
    form.addEventListener("submit", () => {
      const button = document.getElementById("submit");
      button.disabled = true;
      button.classList.add("busy");
      button.querySelector(".button-label").textContent = "Removing background…";
      form.setAttribute("aria-busy", "true");
      document.getElementById("progress").hidden = false;
    });
  }

  function updateQuota(delta) {
    const quota = document.getElementById("quota");
    const used = Math.max(0, Number(quota.dataset.used) + delta);
    quota.dataset.used = String(used);
    document.getElementById("quota-used").textContent = String(used);
    quota.classList.toggle("full", used >= Number(quota.dataset.limit));
    const notice = document.getElementById("limit-notice");
    if (notice && used < Number(quota.dataset.limit)) notice.remove();
  }

  function startRename(card) {
    const form = card.querySelector(".rename-form");
    card.querySelector(".record-name").hidden = true;
    form.hidden = false;
    form.querySelector("input").focus();
    form.querySelector("input").select();
  }

  function endRename(card) {
    card.querySelector(".rename-form").hidden = true;
    card.querySelector(".record-name").hidden = false;
    card.querySelector('[data-action="rename"]').focus();
  }

  async function saveRename(card) {
    const input = card.querySelector(".rename-form input");
    const error = card.querySelector(".record-error");
    try {
      await sendJson("PUT", `/update/${card.dataset.id}`,
                     { record_id: card.dataset.id, record_name: input.value });
      const name = input.value.trim().replace(/\s+/g, " ");
      card.querySelector(".record-name").textContent = name;
      card.querySelectorAll("img").forEach((img) => {
        img.alt = img.alt.replace(/: .*$/, `: ${name}`);
      });
      error.hidden = true;
      endRename(card);
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    }
  }

  function setupRecords() {
    const list = document.getElementById("records");
    const dialog = document.getElementById("confirm-delete");
    if (!list) return;
    let pending = null;

    list.addEventListener("click", (event) => {
      const button = event.target.closest("[data-action]");
      if (!button) return;
      const card = button.closest(".record");
      const action = button.dataset.action;
      if (action === "rename") startRename(card);
      if (action === "cancel-rename") endRename(card);
      if (action === "delete") {
        pending = card;
        document.getElementById("confirm-name").textContent = card.querySelector(".record-name").textContent;
        dialog.showModal();
      }
    });
    list.addEventListener("submit", (event) => {
      event.preventDefault();
      saveRename(event.target.closest(".record"));
    });
    list.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && event.target.closest(".rename-form")) {
        event.preventDefault();
        endRename(event.target.closest(".record"));
      }
    });
    dialog.addEventListener("close", async () => {
      const card = pending;
      pending = null;
      if (!card || dialog.returnValue !== "delete") return;
      try {
        await sendJson("DELETE", `/remove/${card.dataset.id}`);
        card.remove();
        updateQuota(-1);
        document.getElementById("empty-state").hidden = list.children.length > 0;
        document.getElementById("history-title").focus();
      } catch (err) {
        const error = card.querySelector(".record-error");
        error.textContent = err.message;
        error.hidden = false;
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    setupFlashes();
    setupUpload();
    setupRecords();
    updateQuota(0);
  });
})();

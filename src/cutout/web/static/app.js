// Cutout page behaviour, without inline script (the Content-Security-Policy forbids it):
// the upload queue (several photos, drop, paste, URL), rename in place, delete with a
// confirmation, before/after sliders, and the studio. Without JavaScript the seed's form works.
import { send, sendJson } from "./util.js";
import { enhanceAll, enhanceCard } from "./compare.js";
import { setupQueue } from "./queue.js";
import { setupStudio } from "./studio.js";

document.documentElement.classList.add("js");

const list = document.getElementById("records");
// The records the page's count holds: the quota counts records, and a job gives a photo it has
// already cut the earlier record (the same bytes, the same options), so each counts once.
const counted = new Set([...list.querySelectorAll(".record")].map((card) => card.dataset.id));

function updateQuota(delta) {
  const quota = document.getElementById("quota");
  const used = Math.max(0, Number(quota.dataset.used) + delta);
  quota.dataset.used = String(used);
  document.getElementById("quota-used").textContent = String(used);
  quota.classList.toggle("full", used >= Number(quota.dataset.limit));
  const notice = document.getElementById("limit-notice");
  if (notice && used < Number(quota.dataset.limit)) notice.remove();
}

const quota = {
  get used() { return Number(document.getElementById("quota").dataset.used); },
  get limit() { return Number(document.getElementById("quota").dataset.limit); },
};

function showEmptyState() {
  document.getElementById("empty-state").hidden = list.children.length > 0;
}

/** Fetch a record's card from the server and put it in the list (new ones go first). */
async function renderCard(recordId) {
  const response = await send("GET", `/records/${recordId}/card`, { accept: "text/html" });
  const template = document.createElement("template");
  template.innerHTML = (await response.text()).trim();
  const card = template.content.firstElementChild;
  const old = list.querySelector(`.record[data-id="${recordId}"]`);
  if (old) old.replaceWith(card);
  else list.prepend(card);
  enhanceCard(card);
  showEmptyState();
  return card;
}

// -- flashes, rename, delete (as before) --------------------------------------------------

document.addEventListener("click", (event) => {
  const close = event.target.closest(".flash-close");
  if (close) close.closest(".flash").remove();
});

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

function showCardError(card, message) {
  const error = card.querySelector(".record-error");
  error.textContent = message;
  error.hidden = !message;
}

async function saveRename(card) {
  const input = card.querySelector(".rename-form input");
  try {
    await sendJson("PUT", `/update/${card.dataset.id}`,
                   { record_id: card.dataset.id, record_name: input.value });
    const name = input.value.trim().replace(/\s+/g, " ");
    card.querySelector(".record-name").textContent = name;
    card.dataset.name = name;
    card.querySelectorAll("img").forEach((img) => { img.alt = img.alt.replace(/: .*$/, `: ${name}`); });
    card.querySelector(".compare-range")?.setAttribute("aria-label", `Before and after: ${name}`);
    showCardError(card, "");
    endRename(card);
  } catch (err) {
    showCardError(card, err.message);
  }
}

function setupRecords(studio) {
  const dialog = document.getElementById("confirm-delete");
  let pending = null;

  list.addEventListener("click", (event) => {
    const button = event.target.closest("[data-action]");
    if (!button) return;
    const card = button.closest(".record");
    const action = button.dataset.action;
    if (action === "rename") startRename(card);
    if (action === "cancel-rename") endRename(card);
    if (action === "open") studio.open(card, button);
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
      if (counted.delete(card.dataset.id)) updateQuota(-1);
      showEmptyState();
      document.getElementById("history-title").focus();
    } catch (err) {
      showCardError(card, err.message);
    }
  });
}

const studio = setupStudio({ renderCard });
setupRecords(studio);
setupQueue({
  quota,
  onStored: async (record) => {
    counted.add(record._id);  // before the await: the queue asks hasRecord in the same loop
    updateQuota(1);
    await renderCard(record._id);
  },
  onLimit: (running) => {
    // The server knows best: a 409 means the page's count was behind (another tab, say), or
    // that this page's uploads still running take the last places: they count when stored.
    updateQuota(Math.max(0, quota.limit - running - quota.used));
  },
  studioOpen: () => studio.isOpen(),
  hasRecord: (id) => counted.has(id),
});
enhanceAll();
updateQuota(0);

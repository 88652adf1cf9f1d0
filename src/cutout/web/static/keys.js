// The API keys panel: list, create (shown once, with a copy button), revoke.
"use strict";
(() => {
  const panel = document.getElementById("api-keys");
  if (!panel) return;
  const url = panel.dataset.keysUrl;
  const token = document.querySelector('meta[name="csrf-token"]').content;
  const list = document.getElementById("key-list");
  const error = document.getElementById("key-error");
  const secretBox = document.getElementById("key-secret");

  async function call(method, path, body) {
    const response = await fetch(path, {
      method,
      headers: { "Accept": "application/json", "Content-Type": "application/json", "X-CSRFToken": token },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.message || "Something went wrong");
    return data;
  }

  function showError(message) {
    error.textContent = message;
    error.hidden = !message;
  }

  function row(key) {
    const item = document.createElement("li");
    item.className = "key" + (key.revoked_on ? " revoked" : "");
    item.dataset.id = key.id;
    const text = document.createElement("span");
    text.className = "key-text";
    const used = key.last_used_on ? `last used ${key.last_used_on} UTC` : "never used";
    const state = key.revoked_on ? `revoked ${key.revoked_on} UTC` : used;
    text.textContent = `${key.name} · ${key.prefix}… · created ${key.created_on} UTC · ${state}`;
    item.append(text);
    if (!key.revoked_on) {
      const revoke = document.createElement("button");
      revoke.type = "button";
      revoke.className = "button small danger";
      revoke.textContent = "Revoke";
      revoke.setAttribute("aria-label", `Revoke ${key.name}`);
      revoke.addEventListener("click", async () => {
        if (!window.confirm(`Revoke “${key.name}”? Programs using it stop working at once.`)) return;
        try {
          await call("DELETE", `${url}/${encodeURIComponent(key.id)}`);
          showError("");
          await refresh();
        } catch (e) { showError(e.message); }
      });
      item.append(revoke);
    }
    return item;
  }

  async function refresh() {
    const data = await call("GET", url);
    list.replaceChildren(...data.keys.map(row));
    document.getElementById("keys-empty").hidden = data.keys.length > 0;
  }

  document.getElementById("key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = document.getElementById("key-name");
    try {
      const data = await call("POST", url, { name: name.value });
      secretBox.value = data.secret;
      document.getElementById("key-new").hidden = false;
      document.getElementById("key-copied").hidden = true;
      name.value = "";
      showError("");
      await refresh();
    } catch (e) { showError(e.message); }
  });

  document.getElementById("key-copy").addEventListener("click", async () => {
    secretBox.select();
    try {
      await navigator.clipboard.writeText(secretBox.value);
    } catch {
      document.execCommand("copy");  // older browsers, or no clipboard permission
    }
    document.getElementById("key-copied").hidden = false;
  });

  refresh().catch((e) => showError(e.message));
})();

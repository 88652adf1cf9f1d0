// Small helpers shared by the page's modules: requests with the CSRF token, errors as messages.

export const csrfToken = () => document.querySelector('meta[name="csrf-token"]').content;

/** An error from the server: its message is meant for people; status/retryAfter for code. */
export class RequestError extends Error {
  constructor(message, status = 0, retryAfter = 0) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/** fetch() with the token and JSON errors turned into a RequestError. */
export async function send(method, url, { json, body, accept = "application/json" } = {}) {
  const headers = { "Accept": accept, "X-CSRFToken": csrfToken() };
  if (json !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method, headers, credentials: "same-origin",
      body: json !== undefined ? JSON.stringify(json) : body,
    });
  } catch {
    throw new RequestError("Could not reach the server. Check the connection and try again.");
  }
  if (!response.ok) {
    const data = await response.json().catch(() => ({}));
    throw new RequestError(data.message || `Request failed (HTTP ${response.status}).`,
                           response.status, Number(response.headers.get("Retry-After")) || 0);
  }
  return response;
}

export async function sendJson(method, url, json) {
  const response = await send(method, url, { json });
  return response.json().catch(() => ({}));
}

/** Save a Blob under *name* through a temporary link (how a fetched download is saved). */
export function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = Object.assign(document.createElement("a"), { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** The file name a Content-Disposition header gives (RFC 6266: filename* wins). */
export function dispositionName(header, fallback) {
  const star = /filename\*=UTF-8''([^;]+)/i.exec(header || "");
  if (star) return decodeURIComponent(star[1]);
  const plain = /filename="?([^";]+)"?/i.exec(header || "");
  return plain ? plain[1] : fallback;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Shared helpers: CSRF-protected fetch with retries under an idempotency key.
"use strict";
window.HITL = (function () {
  const csrf = document.body.dataset.csrf;

  function newRequestId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID().replace(/-/g, "");
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // POST with the session's CSRF token. Network failures (not HTTP errors) are retried with the same
  // body: decisions carry a request_id, so a retry after a lost answer is never recorded twice.
  async function post(url, body, attempts = 4) {
    const isForm = body instanceof FormData;
    let lastError;
    for (let attempt = 0; attempt < attempts; attempt++) {
      try {
        const response = await fetch(url, {
          method: "POST",
          credentials: "same-origin",
          headers: isForm ? { "X-CSRF-Token": csrf } : { "X-CSRF-Token": csrf, "Content-Type": "application/json" },
          body: isForm ? body : JSON.stringify(body || {}),
        });
        let data = null;
        try { data = await response.json(); } catch (e) { data = null; }
        if (response.status === 401) { window.location.href = "/login?next=" + encodeURIComponent(location.pathname); }
        return { ok: response.ok, status: response.status, data };
      } catch (error) {
        lastError = error;
        await new Promise((resolve) => setTimeout(resolve, 400 * (attempt + 1)));
      }
    }
    return { ok: false, status: 0, data: { detail: String(lastError) } };
  }

  async function get(url) {
    const response = await fetch(url, { credentials: "same-origin" });
    if (response.status === 401) { window.location.href = "/login?next=" + encodeURIComponent(location.pathname); }
    return { ok: response.ok, status: response.status, data: response.ok ? await response.json() : null };
  }

  function detail(result) {
    const d = result.data && result.data.detail;
    if (!d) return "HTTP " + result.status;
    return typeof d === "string" ? d : (d.message || JSON.stringify(d));
  }

  function typing(event) {
    const t = event.target;
    return t && (t.tagName === "TEXTAREA" || t.tagName === "INPUT" || t.isContentEditable);
  }

  return { csrf, newRequestId, post, get, detail, typing };
})();

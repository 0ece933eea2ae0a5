// The meeting's welcome page: what this browser can do (the room's live connection, a secure
// page) and, for a video meeting, a camera and microphone check that records nothing.
"use strict";

(() => {
  const block = document.getElementById("welcome-data");
  if (!block) return;
  const T = JSON.parse(block.textContent);
  const $ = (id) => document.getElementById(id);
  const fmt = (template, params) =>
    String(template).replace(/%\((\w+)\)s/g, (whole, key) => (key in params ? String(params[key]) : whole));

  function verdict(id, ok, good, bad) {
    const line = $(id);
    line.textContent = (ok ? "✓ " : "✗ ") + (ok ? good : bad);
    line.classList.toggle("field-error", !ok);
  }

  verdict("check-websocket", "WebSocket" in window, T.websocket_ok, T.websocket_missing);
  verdict("check-secure", window.isSecureContext, T.secure_ok, T.secure_missing);

  const check = $("check-media");
  if (!check) return;
  const stop = $("stop-media");
  const preview = $("media-preview");
  const result = $("media-result");
  let stream = null;

  function end() {
    if (stream) for (const track of stream.getTracks()) track.stop();
    stream = null;
    preview.srcObject = null;
    preview.hidden = true;
    stop.hidden = true;
  }

  check.addEventListener("click", async () => {
    end();
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      result.textContent = T.media_unavailable;
      return;
    }
    result.textContent = T.media_asking;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    } catch (error) {
      const name = (error && error.name) || "";
      if (name === "NotAllowedError" || name === "SecurityError") result.textContent = T.media_denied;
      else if (name === "NotFoundError" || name === "OverconstrainedError") result.textContent = T.media_missing;
      else if (name === "NotReadableError" || name === "AbortError") result.textContent = T.media_busy;
      else result.textContent = fmt(T.media_failed, { reason: name || String(error) });
      return;
    }
    const devices = stream.getTracks().map((track) => track.label || track.kind).join(", ");
    result.textContent = fmt(T.media_ok, { devices });
    preview.srcObject = stream;
    preview.hidden = false;
    preview.play().catch(() => {});
    stop.hidden = false;
  });

  stop.addEventListener("click", () => {
    end();
    result.textContent = T.media_stopped;
    check.focus();
  });

  window.addEventListener("pagehide", end);
})();

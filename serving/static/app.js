// Playground: one form -> POST /generate -> image, latency and seed. No dependencies, no network beyond
// this server. URLs are relative so the page also works behind a path-prefixing proxy.
"use strict";

(() => {
  const KEY_STORAGE = "edge-diffusion.api-key";
  const MAX_SEED = 4294967295;
  const $ = (id) => document.getElementById(id);

  const form = $("generate-form");
  const button = $("generate-button");
  const statusLine = $("status");
  const errorBox = $("error");
  const output = $("output");
  const image = $("result-image");
  const placeholder = $("placeholder");
  const caption = $("result-caption");
  const apiKey = $("api-key");
  const reuseSeed = $("reuse-seed");
  const download = $("download");

  let objectUrl = null;
  let lastSeed = null;
  let inFlight = null;

  // Session storage (not local storage): the key leaves with the tab and is never written to disk long-term.
  try {
    const saved = sessionStorage.getItem(KEY_STORAGE);
    if (saved) {
      apiKey.value = saved;
      $("auth").open = true;
    }
  } catch (_) {
    // Storage may be disabled (private mode policies); the field still works for this page view.
  }
  apiKey.addEventListener("input", () => {
    try {
      if (apiKey.value) sessionStorage.setItem(KEY_STORAGE, apiKey.value);
      else sessionStorage.removeItem(KEY_STORAGE);
    } catch (_) { /* see above */ }
  });

  $("random-seed").addEventListener("click", () => {
    const buf = new Uint32Array(1);
    crypto.getRandomValues(buf);
    $("seed").value = String(buf[0]);
  });

  reuseSeed.addEventListener("click", () => {
    if (lastSeed !== null) $("seed").value = lastSeed;
  });

  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  function setError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  function fieldInvalid(input, message) {
    input.setAttribute("aria-invalid", "true");
    input.focus();
    throw new Error(message);
  }

  // Client-side checks mirror the HTML constraints; the server stays the authority and its errors are shown.
  function readNumber(id, label, { integer, multipleOf } = {}) {
    const input = $(id);
    input.removeAttribute("aria-invalid");
    const raw = input.value.trim();
    if (raw === "") {
      if (input.validity.badInput) fieldInvalid(input, `${label} must be a number.`);
      return undefined;
    }
    const value = Number(raw);
    const min = input.min === "" ? -Infinity : Number(input.min);
    const max = input.max === "" ? Infinity : Number(input.max);
    if (!Number.isFinite(value) || (integer && !Number.isInteger(value))) {
      fieldInvalid(input, `${label} must be ${integer ? "a whole number" : "a number"}.`);
    }
    if (value < min || value > max) fieldInvalid(input, `${label} must be between ${min} and ${max}.`);
    if (multipleOf && value % multipleOf !== 0) fieldInvalid(input, `${label} must be a multiple of ${multipleOf}.`);
    return value;
  }

  function buildRequest() {
    const prompt = $("prompt");
    prompt.removeAttribute("aria-invalid");
    if (!prompt.value.trim()) fieldInvalid(prompt, "Enter a prompt.");
    const body = { prompt: prompt.value };
    const negative = $("negative-prompt").value;
    if (negative.trim()) body.negative_prompt = negative;
    const fields = [
      ["width", "width", "Width", { integer: true, multipleOf: 8 }],
      ["height", "height", "Height", { integer: true, multipleOf: 8 }],
      ["steps", "num_inference_steps", "Steps", { integer: true }],
      ["guidance", "guidance_scale", "Guidance", {}],
      ["seed", "seed", "Seed", { integer: true }],
    ];
    for (const [id, name, label, rules] of fields) {
      const value = readNumber(id, label, rules);
      if (value !== undefined) body[name] = value;
    }
    if (body.seed === undefined) {
      // A concrete seed is always sent, so every result can be reproduced from what the page shows.
      const buf = new Uint32Array(1);
      crypto.getRandomValues(buf);
      body.seed = buf[0] % (MAX_SEED + 1);
    }
    return body;
  }

  async function describeError(response) {
    let detail = "";
    let code = null;
    try {
      const data = await response.json();
      const err = data && data.error;
      if (err) code = err.code;
      if (err && err.message) {
        detail = err.message;
        if (err.param && !detail.includes(err.param)) detail += ` (field: ${err.param})`;
      }
    } catch (_) {
      // Not JSON (e.g. a proxy's HTML error page): fall back to the status line.
    }
    let hint = "";
    if (response.status === 401) {
      hint = code === "token_expired"
        ? " The device token has expired: paste a fresh one under “API key”."
        : " Open “API key” above and enter the server's key or a device token.";
    }
    if (response.status === 429) {
      const retry = response.headers.get("Retry-After");
      hint = ` The server is busy${retry ? `; retry in ${retry} s` : ""}.`;
    }
    return `${response.status} ${response.statusText || "error"}${detail ? `: ${detail}` : ""}.${hint}`;
  }

  function formatMs(ms) {
    if (ms === null || !Number.isFinite(ms)) return "–";
    return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
  }

  function showResult(blob, response, roundTripMs, body) {
    if (objectUrl) URL.revokeObjectURL(objectUrl);
    objectUrl = URL.createObjectURL(blob);
    const inferenceHeader = response.headers.get("X-Inference-Ms");
    const inferenceMs = inferenceHeader === null ? null : Number(inferenceHeader);
    lastSeed = response.headers.get("X-Seed") || String(body.seed);

    image.onload = () => {
      $("result-size").textContent = `${image.naturalWidth} × ${image.naturalHeight}`;
    };
    image.src = objectUrl;
    image.alt = `Generated image for the prompt: ${body.prompt}`;
    image.hidden = false;
    placeholder.hidden = true;
    caption.textContent = body.prompt;

    $("latency-server").textContent = formatMs(inferenceMs);
    $("latency-roundtrip").textContent = formatMs(roundTripMs);
    $("result-seed").textContent = lastSeed;
    reuseSeed.disabled = false;
    const ext = (blob.type.split("/")[1] || "png").replace("jpeg", "jpg");
    download.href = objectUrl;
    download.download = `edge-diffusion-${lastSeed}.${ext}`;
    download.hidden = false;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    setError("");
    let body;
    try {
      body = buildRequest();
    } catch (err) {
      setError(err.message);
      return;
    }

    if (inFlight) inFlight.abort();
    const controller = new AbortController();
    inFlight = controller;
    const headers = { "Content-Type": "application/json", Accept: "image/png" };
    if (apiKey.value) headers.Authorization = `Bearer ${apiKey.value}`;

    button.disabled = true;
    output.setAttribute("aria-busy", "true");
    statusLine.textContent = "Generating…";
    const started = performance.now();
    try {
      const response = await fetch("generate", {
        method: "POST", headers, body: JSON.stringify(body), signal: controller.signal,
      });
      if (!response.ok) {
        setError(await describeError(response));
        statusLine.textContent = "Failed.";
        return;
      }
      const blob = await response.blob();
      const roundTripMs = performance.now() - started;
      showResult(blob, response, roundTripMs, body);
      statusLine.textContent = `Done in ${formatMs(roundTripMs)}.`;
    } catch (err) {
      if (err.name === "AbortError") return;
      setError(`Could not reach the server: ${err.message}.`);
      statusLine.textContent = "Failed.";
    } finally {
      if (inFlight === controller) {
        inFlight = null;
        button.disabled = false;
        output.setAttribute("aria-busy", "false");
      }
    }
  });
})();

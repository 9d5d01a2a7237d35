// Camera mode: getUserMedia -> canvas -> JPEG frames over the WebSocket stream (/v1/stream) -> result image.
// Protocol (docs/serving.md, "Frame stream"): one JSON config message, then binary frames; per processed frame
// the server sends {"type": "frame", seq, inference_ms, dropped} followed by the image as a binary message.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  // Frames sent but not answered yet. Two keep the server busy (one running, one waiting) without a queue:
  // the server drops the waiting one when a newer frame arrives.
  const MAX_OUTSTANDING = 2;
  const FPS_WINDOW_MS = 2000;

  const startButton = $("camera-start");
  const stopButton = $("camera-stop");
  const video = $("camera-input");
  const output = $("camera-output");
  const statusLine = $("camera-status");
  const errorBox = $("camera-error");

  let session = null;

  function setError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  function config() {
    const prompt = $("prompt").value.trim() || "a watercolour painting";
    const message = { type: "config", prompt, output_format: "jpeg" };
    const strength = Number($("camera-strength").value);
    if (Number.isFinite(strength) && strength > 0) message.strength = strength;
    const steps = $("steps").value.trim();
    if (steps !== "") message.num_inference_steps = Number(steps);
    const seed = $("seed").value.trim();
    if (seed !== "") message.seed = Number(seed);
    const negative = $("negative-prompt").value.trim();
    if (negative) message.negative_prompt = negative;
    return message;
  }

  function streamUrl() {
    const url = new URL("v1/stream", document.baseURI);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url.href;
  }

  class Session {
    constructor(media, size) {
      this.media = media;
      this.size = size;
      this.canvas = document.createElement("canvas");
      this.canvas.width = this.canvas.height = size;
      this.context = this.canvas.getContext("2d");
      this.sent = new Map(); // seq -> performance.now() at send
      this.seq = 0;
      this.answered = 0;
      this.dropped = 0;
      this.received = [];
      this.header = null;
      this.objectUrl = null;
      this.timer = null;
      this.closed = false;
      const key = $("api-key").value;
      // Browsers cannot set an Authorization header on a WebSocket: the key (or device token) travels as the
      // subprotocol.
      this.ws = new WebSocket(streamUrl(), key ? [`bearer.${key}`] : []);
      this.ws.binaryType = "blob";
      this.ws.onopen = () => {
        this.ws.send(JSON.stringify(config()));
        statusLine.textContent = "Streaming…";
        this.schedule();
      };
      this.ws.onmessage = (event) => this.onMessage(event);
      this.ws.onclose = (event) => this.onClose(event);
    }

    outstanding() {
      return this.seq - this.answered - this.dropped;
    }

    schedule() {
      if (this.closed) return;
      const fps = Math.min(60, Math.max(1, Number($("camera-fps-target").value) || 30));
      this.timer = setTimeout(() => this.sendFrame(), 1000 / fps);
    }

    sendFrame() {
      if (this.closed) return;
      if (this.ws.readyState !== WebSocket.OPEN || this.outstanding() >= MAX_OUTSTANDING || video.readyState < 2) {
        this.schedule();
        return;
      }
      // Centre square crop of the camera picture, scaled to the stream size (a multiple of 8, as the server needs).
      const side = Math.min(video.videoWidth, video.videoHeight);
      const sx = (video.videoWidth - side) / 2;
      const sy = (video.videoHeight - side) / 2;
      this.context.drawImage(video, sx, sy, side, side, 0, 0, this.size, this.size);
      this.canvas.toBlob((blob) => {
        if (!blob || this.closed || this.ws.readyState !== WebSocket.OPEN) return;
        this.seq += 1;
        this.sent.set(this.seq, performance.now());
        this.ws.send(blob);
      }, "image/jpeg", 0.85);
      this.schedule();
    }

    onMessage(event) {
      if (typeof event.data === "string") {
        const message = JSON.parse(event.data);
        if (message.type === "frame") {
          this.header = message;
        } else if (message.type === "error") {
          const err = message.error || {};
          setError(`Stream error${err.field ? ` (${err.field})` : ""}: ${err.message}`);
        }
        return;
      }
      const header = this.header;
      this.header = null;
      if (!header) return;
      const now = performance.now();
      this.answered = header.seq - header.dropped;
      this.dropped = header.dropped;
      const sentAt = this.sent.get(header.seq);
      for (const seq of this.sent.keys()) if (seq <= header.seq) this.sent.delete(seq);
      if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
      this.objectUrl = URL.createObjectURL(event.data);
      output.src = this.objectUrl;
      output.hidden = false;
      this.received.push(now);
      while (this.received.length && now - this.received[0] > FPS_WINDOW_MS) this.received.shift();
      const span = this.received.length > 1 ? now - this.received[0] : FPS_WINDOW_MS;
      const fps = this.received.length > 1 ? ((this.received.length - 1) * 1000) / span : 0;
      $("camera-fps").textContent = fps.toFixed(1);
      $("camera-latency").textContent = sentAt === undefined ? "–" : `${Math.round(now - sentAt)} ms`;
      $("camera-inference").textContent = `${Math.round(header.inference_ms)} ms`;
      $("camera-frames").textContent = String(Number($("camera-frames").textContent) + 1);
      $("camera-dropped").textContent = String(header.dropped);
    }

    onClose(event) {
      const wasOpen = !this.closed;
      this.stop();
      if (wasOpen && event.code !== 1000) {
        // 4401: the device token expired mid-stream (serving/auth/credentials.py TOKEN_EXPIRED_CLOSE).
        const reason = event.code === 4401 ? "the device token expired; paste a fresh one and start again"
          : event.reason || (event.code === 1006 ? "refused or lost (check the API key or device token)" : "");
        setError(`Stream closed (${event.code})${reason ? `: ${reason}` : ""}.`);
      }
      statusLine.textContent = "Stopped.";
    }

    reconfigure() {
      if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(config()));
    }

    stop() {
      if (this.closed) return;
      this.closed = true;
      clearTimeout(this.timer);
      if (this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000, "stopped");
      for (const track of this.media.getTracks()) track.stop();
      video.srcObject = null;
      startButton.disabled = false;
      stopButton.disabled = true;
      if (session === this) session = null;
    }
  }

  startButton.addEventListener("click", async () => {
    setError("");
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      setError("This browser offers no camera here (camera access needs https or localhost).");
      return;
    }
    const size = Number($("camera-size").value);
    startButton.disabled = true;
    statusLine.textContent = "Opening the camera…";
    let media;
    try {
      media = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } } });
    } catch (err) {
      setError(`Camera unavailable: ${err.message}.`);
      startButton.disabled = false;
      statusLine.textContent = "";
      return;
    }
    video.srcObject = media;
    $("camera-frames").textContent = "0";
    stopButton.disabled = false;
    session = new Session(media, size);
  });

  stopButton.addEventListener("click", () => {
    if (session) session.stop();
  });

  // A changed prompt or strength applies to the next frame: the config message may be re-sent at any time.
  for (const id of ["prompt", "negative-prompt", "camera-strength", "steps", "seed"]) {
    $(id).addEventListener("change", () => {
      if (session) session.reconfigure();
    });
  }
})();

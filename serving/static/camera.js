// Camera mode: getUserMedia -> WebRTC (camera-rtc.js) when it connects, else canvas -> JPEG frames over the
// WebSocket stream (/v1/stream) -> result image. The page says which transport is in use.
// Protocol (docs/serving.md, "Frame stream"): one JSON config message, then binary frames; per processed frame
// the server sends {"type": "frame", seq, inference_ms, dropped} followed by the image as a binary message.
// The stream itself (window of two frames, latest frame wins, failover, bearer) is client.js's StreamSession.
import { EdgeClient } from "./client.js";

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

  class Session {
    constructor(media, size) {
      this.media = media;
      this.size = size;
      this.canvas = document.createElement("canvas");
      this.canvas.width = this.canvas.height = size;
      this.context = this.canvas.getContext("2d");
      this.sent = new Map(); // seq -> performance.now() at send
      this.seq = 0;
      this.received = [];
      this.objectUrl = null;
      this.timer = null;
      this.closed = false;
      this.stream = null;
      // The page's own server only: its CSP allows no other origin. The key field is the credential (a device
      // token minted by an app backend works the same way).
      const client = new EdgeClient({ seeds: [new URL(".", document.baseURI).href], discover: false,
        refreshIntervalMs: 0, credential: () => $("api-key").value || null });
      client.stream(config(), { maxInFlight: MAX_OUTSTANDING, onFrame: (frame) => this.onFrame(frame),
        onEvent: (event) => this.onEvent(event),
        onError: (err) => setError(`Stream error${err.field ? ` (${err.field})` : ""}: ${err.message}`),
      }).then((stream) => {
        if (this.closed) return stream.close();
        this.stream = stream;
        statusLine.textContent = "Streaming over WebSocket…";
        this.schedule();
      }, (err) => {
        setError(`Stream could not open (${err.message}; check the API key).`);
        this.stop();
      });
    }

    schedule() {
      if (this.closed) return;
      const fps = Math.min(60, Math.max(1, Number($("camera-fps-target").value) || 30));
      this.timer = setTimeout(() => this.sendFrame(), 1000 / fps);
    }

    sendFrame() {
      if (this.closed) return;
      if (!this.stream || this.stream.inFlight >= MAX_OUTSTANDING || video.readyState < 2) {
        this.schedule();
        return;
      }
      // Centre square crop of the camera picture, scaled to the stream size (a multiple of 8, as the server needs).
      const side = Math.min(video.videoWidth, video.videoHeight);
      const sx = (video.videoWidth - side) / 2;
      const sy = (video.videoHeight - side) / 2;
      this.context.drawImage(video, sx, sy, side, side, 0, 0, this.size, this.size);
      this.canvas.toBlob((blob) => {
        if (!blob || this.closed) return;
        this.seq += 1;
        this.sent.set(this.seq, performance.now());
        this.stream.submit(blob);
      }, "image/jpeg", 0.85);
      this.schedule();
    }

    onFrame({ header, data }) {
      const now = performance.now();
      const sentAt = this.sent.get(header.seq);
      for (const seq of this.sent.keys()) if (seq <= header.seq) this.sent.delete(seq);
      if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
      this.objectUrl = URL.createObjectURL(data);
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

    onEvent(event) {
      if (event.kind === "failover" || event.kind === "reconnect") {
        // seq restarts on the new connection: latencies of frames sent before it are unknown.
        this.sent.clear();
        this.seq = 0;
        statusLine.textContent = `Streaming over WebSocket… (${event.kind}: ${event.reason})`;
      } else if (event.kind === "failed") {
        setError(`Stream closed: ${event.reason}.`);
        this.stop();
      }
    }

    reconfigure() {
      if (this.stream) this.stream.reconfigure(config());
    }

    stop() {
      if (this.closed) return;
      this.closed = true;
      clearTimeout(this.timer);
      if (this.stream) this.stream.close();
      for (const track of this.media.getTracks()) track.stop();
      video.srcObject = null;
      startButton.disabled = false;
      stopButton.disabled = true;
      if (session === this) session = null;
      statusLine.textContent = "Stopped.";
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
    try {
      session = await window.EdgeCameraRtc.start(media, size, {
        $, config, setError, onStopped: () => {
          for (const track of media.getTracks()) track.stop();
          video.srcObject = null;
          startButton.disabled = false;
          stopButton.disabled = true;
          statusLine.textContent = "Stopped.";
          session = null;
        },
      });
      statusLine.textContent = "Streaming over WebRTC…";
      $("camera-transport").textContent = "WebRTC";
    } catch (err) {
      // No WebRTC here, the server refused it, or no UDP path: the WebSocket stream carries the same session.
      $("camera-transport").textContent = `WebSocket (WebRTC unavailable: ${err.message})`;
      $("camera-output-video").hidden = true;
      session = new Session(media, size);
    }
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

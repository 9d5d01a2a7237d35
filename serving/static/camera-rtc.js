// Camera mode over WebRTC (POST /v1/webrtc, docs/streaming.md): the square-cropped camera picture as a video
// track, the generated frames back as a video track, config and per-frame stats on the "config" data channel.
// camera.js tries this first and falls back to the WebSocket stream when it fails (no RTCPeerConnection, the
// server refuses the offer, or no ICE path: UDP blocked).
"use strict";

window.EdgeCameraRtc = (() => {
  // No STUN/TURN servers: the server's answer carries its reachable address; a client behind NAT is learned by
  // the server as a peer-reflexive candidate.
  const ICE_TIMEOUT_MS = 8000;

  async function waitForGathering(pc) {
    if (pc.iceGatheringState === "complete") return;
    await new Promise((resolve) => {
      const done = () => {
        if (pc.iceGatheringState === "complete") resolve();
      };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 2000); // host candidates are enough; do not wait on a slow interface
    });
  }

  // Opens a session; resolves once media flows both ways, rejects (after cleaning up) otherwise.
  // handlers: {onFrame(stats), onError(error), onClose(reason)}
  async function open({ track, key, config, outputVideo, handlers }) {
    if (typeof RTCPeerConnection === "undefined") throw new Error("this browser has no WebRTC");
    const pc = new RTCPeerConnection({ iceServers: [] });
    const channel = pc.createDataChannel("config");
    pc.addTransceiver(track, { direction: "sendrecv" });
    let location = null;
    const session = {
      transport: "webrtc",
      reconfigure(message) {
        if (channel.readyState === "open") channel.send(JSON.stringify(message));
      },
      async stop() {
        pc.close();
        if (location) {
          const headers = key ? { Authorization: `Bearer ${key}` } : {};
          fetch(location, { method: "DELETE", headers }).catch(() => {});
        }
      },
    };
    channel.onopen = () => channel.send(JSON.stringify(config()));
    channel.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "frame") handlers.onFrame(message);
      else if (message.type === "error") handlers.onError(message.error || {});
      else if (message.type === "closed") handlers.onClose(message.reason);
    };
    const remote = new Promise((resolve) => {
      pc.ontrack = (event) => {
        outputVideo.srcObject = new MediaStream([event.track]);
        resolve();
      };
    });
    await pc.setLocalDescription(await pc.createOffer());
    await waitForGathering(pc);
    const headers = { "Content-Type": "application/sdp" };
    if (key) headers.Authorization = `Bearer ${key}`;
    const response = await fetch(new URL("v1/webrtc", document.baseURI), {
      method: "POST", headers, body: pc.localDescription.sdp,
    });
    if (response.status !== 201) {
      pc.close();
      let detail = `HTTP ${response.status}`;
      try {
        detail = (await response.json()).error.message;
      } catch (err) { /* not JSON */ }
      const error = new Error(detail);
      error.status = response.status;
      throw error;
    }
    location = new URL(response.headers.get("Location"), document.baseURI).href;
    await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
    const connected = new Promise((resolve, reject) => {
      pc.onconnectionstatechange = () => {
        if (pc.connectionState === "connected") resolve();
        if (pc.connectionState === "failed" || pc.connectionState === "closed") {
          reject(new Error(`connection ${pc.connectionState}`));
        }
      };
      setTimeout(() => reject(new Error("no ICE path within 8 s (UDP blocked?)")), ICE_TIMEOUT_MS);
    });
    try {
      await Promise.all([connected, remote]);
    } catch (err) {
      await session.stop();
      throw err;
    }
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed" || pc.connectionState === "closed") handlers.onClose(pc.connectionState);
    };
    return session;
  }

  // The camera mode's WebRTC session: the centre square of the camera, scaled to `size` on a canvas whose
  // captureStream() is the sent track; the generated track plays in #camera-output-video. Same page controls and
  // counters as the WebSocket session in camera.js.
  async function start(media, size, { $, config, setError, onStopped }) {
    const video = $("camera-input");
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = size;
    const context = canvas.getContext("2d");
    const fps = Math.min(60, Math.max(1, Number($("camera-fps-target").value) || 30));
    let stopped = false;
    const draw = () => {
      if (stopped) return;
      if (video.readyState >= 2) {
        const side = Math.min(video.videoWidth, video.videoHeight);
        context.drawImage(video, (video.videoWidth - side) / 2, (video.videoHeight - side) / 2, side, side, 0, 0,
          size, size);
      }
      setTimeout(draw, 1000 / fps);
    };
    draw();
    const stream = canvas.captureStream(fps);
    const output = $("camera-output-video");
    const received = [];
    let rtc;
    const stop = async () => {
      if (stopped) return;
      stopped = true;
      for (const track of stream.getTracks()) track.stop();
      if (rtc) await rtc.stop();
      output.srcObject = null;
      output.hidden = true;
      onStopped();
    };
    try {
      rtc = await open({
        track: stream.getVideoTracks()[0], key: $("api-key").value, config, outputVideo: output,
        handlers: {
          onFrame(stats) {
            const now = performance.now();
            received.push(now);
            while (received.length && now - received[0] > 2000) received.shift();
            const fpsNow = received.length > 1 ? ((received.length - 1) * 1000) / (now - received[0]) : 0;
            $("camera-fps").textContent = fpsNow.toFixed(1);
            $("camera-latency").textContent = "–";
            $("camera-inference").textContent = `${Math.round(stats.inference_ms)} ms`;
            $("camera-frames").textContent = String(Number($("camera-frames").textContent) + 1);
            $("camera-dropped").textContent = String(stats.dropped);
          },
          onError(err) {
            setError(`Stream error${err.field ? ` (${err.field})` : ""}: ${err.message}`);
          },
          onClose(reason) {
            if (!stopped) setError(`Stream closed: ${reason}.`);
            stop();
          },
        },
      });
    } catch (err) {
      stopped = true;
      for (const track of stream.getTracks()) track.stop();
      throw err;
    }
    $("camera-output").hidden = true;
    output.hidden = false;
    return { transport: "WebRTC", stop, reconfigure: () => rtc.reconfigure(config()) };
  }

  return { open, start };
})();

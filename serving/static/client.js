// edge-diffusion device client for browsers and JS runtimes (ES module; the playground's camera mode uses it).
// The same behaviour as the Python package in clients/python (docs/streaming.md, "Device client"): discovery
// through GET /v1/endpoints, choice by measured GET /healthz round trip (ready first, sticky unless another is
// clearly faster), a bearer from a provider callback refreshed after a 401 or an expiry close, generate/edit with
// failover, and a frame stream with up to two frames in flight, latest frame wins, and failover on close 1001, a
// reset, a timeout or a refused upgrade. Browsers verify TLS with their own trust store: a page cannot pin a CA
// (ca_spki_sha256 is for native clients), and a WebSocket cannot carry headers, so the bearer travels as the
// subprotocol bearer.<token>.

export const SWITCH_RATIO = 0.7;
export const SWITCH_MIN_GAIN_MS = 5;
export const FAILED_COOLDOWN_MS = 15000;
const RETRY_ELSEWHERE = new Set([429, 502, 503, 504]);
const AUTH_CLOSE_CODES = new Set([1008, 4001, 4401]);
const CONFIG_FIELDS = new Set(["type", "prompt", "negative_prompt", "strength", "num_inference_steps",
  "guidance_scale", "seed", "output_format"]);

export function endpointFrom(item) {
  const url = String(item.url || "").replace(/\/+$/, "");
  if (!/^https?:\/\/[^/]+(\/.*)?$/.test(url)) throw new Error(`endpoint.url: expected http(s)://HOST:PORT, got ${item.url}`);
  return { ...item, url, stream_url: item.stream_url || `ws${url.slice(4)}/v1/stream`, ready: item.ready !== false };
}

const rttOf = (rtt, e) => (rtt.has(e.url) ? rtt.get(e.url) : Infinity);

export function rank(endpoints, rtt) {
  return [...endpoints].sort((a, b) => (a.ready === b.ready ? 0 : a.ready ? -1 : 1)
    || rttOf(rtt, a) - rttOf(rtt, b) || (a.url < b.url ? -1 : a.url > b.url ? 1 : 0));
}

// The current endpoint while it is usable and not clearly slower than the best, else the best ranked.
export function choose(endpoints, rtt, currentUrl, excluded = new Set()) {
  const ranked = rank(endpoints.filter((e) => !excluded.has(e.url) && Number.isFinite(rttOf(rtt, e))), rtt);
  if (!ranked.length) return null;
  const best = ranked[0];
  const now = ranked.find((e) => e.url === currentUrl);
  if (!now || (best.ready && !now.ready)) return best;
  const [nowRtt, bestRtt] = [rtt.get(now.url), rtt.get(best.url)];
  return bestRtt < nowRtt * SWITCH_RATIO && nowRtt - bestRtt > SWITCH_MIN_GAIN_MS ? best : now;
}

export class EdgeClient {
  // seeds: URLs of the deployment; credential: a string, or async (refresh) => token; discover: false uses the
  // seeds as the endpoint list (a page whose CSP allows only its own origin).
  constructor({ seeds, credential = null, probes = 3, refreshIntervalMs = 30000, discover = true, onEvent = () => {},
    fetchImpl = globalThis.fetch.bind(globalThis), WebSocketImpl = globalThis.WebSocket } = {}) {
    this.seeds = (Array.isArray(seeds) ? seeds : [seeds]).map((url) => endpointFrom({ url }));
    if (!this.seeds.length) throw new Error("seeds: give at least one URL");
    this.credential = credential;
    this.token = typeof credential === "string" ? credential : null;
    this.probes = probes;
    this.refreshIntervalMs = refreshIntervalMs;
    this.discover = discover;
    this.onEvent = onEvent;
    this.fetch = fetchImpl;
    this.WebSocket = WebSocketImpl;
    this.endpoints = [];
    this.rtt = new Map();
    this.current = null;
    this.failed = new Map();
    this.timer = null;
  }

  async currentToken() {
    if (this.token === null && typeof this.credential === "function") this.token = await this.credential(false);
    return this.token;
  }

  async refreshToken(stale) {
    if (typeof this.credential !== "function") return this.token;
    if (this.token === stale || this.token === null) this.token = await this.credential(true);
    return this.token;
  }

  emit(kind, fields = {}) {
    this.onEvent({ kind, at: performance.now(), ...fields });
  }

  async start() {
    await this.refresh();
    if (!this.current) throw new Error(`no endpoint answered GET /healthz: ${this.endpoints.map((e) => e.url)}`);
    if (this.refreshIntervalMs > 0 && !this.timer) {
      this.timer = setInterval(() => this.refresh().catch(() => {}), this.refreshIntervalMs);
    }
    return this;
  }

  close() {
    clearInterval(this.timer);
    this.timer = null;
  }

  async inventory() {
    if (!this.discover) return this.seeds;
    const errors = [];
    const known = new Set(this.endpoints.map((e) => e.url));
    for (const source of [...this.endpoints, ...this.seeds.filter((s) => !known.has(s.url))]) {
      try {
        const response = await this.send(source, "v1/endpoints", {});
        if (response.status === 404 && this.seeds.includes(source)) return [source];
        if (response.ok) return (await response.json()).map(endpointFrom);
        errors.push(`${source.url}: ${response.status}`);
      } catch (err) {
        errors.push(`${source.url}: ${err.message}`);
      }
    }
    throw new Error(`no seed listed the endpoints: ${errors.join("; ")}`);
  }

  async probe(endpoint) {
    const samples = [];
    for (let i = 0; i < this.probes; i += 1) {
      const started = performance.now();
      try {
        const response = await this.fetch(`${endpoint.url}/healthz`, { cache: "no-store" });
        if (!response.ok) return Infinity;
      } catch {
        return Infinity;
      }
      samples.push(performance.now() - started);
    }
    samples.sort((a, b) => a - b);
    return samples[Math.floor(samples.length / 2)];
  }

  async refresh() {
    const items = await this.inventory();
    const rtts = await Promise.all(items.map((e) => this.probe(e)));
    this.endpoints = items;
    this.rtt = new Map(items.map((e, i) => [e.url, rtts[i]]));
    const before = this.current;
    const now = performance.now();
    const excluded = new Set([...this.failed].filter(([, until]) => until > now).map(([url]) => url));
    this.current = choose(items, this.rtt, before && before.url, excluded);
    if (before && this.current && before.url !== this.current.url) {
      this.emit("endpoint_changed", { from_url: before.url, to_url: this.current.url, reason: "faster" });
    }
    return this.current;
  }

  markFailed(endpoint) {
    this.failed.set(endpoint.url, performance.now() + FAILED_COOLDOWN_MS);
    if (this.current && this.current.url === endpoint.url) this.current = null;
  }

  // The current choice, then the rest ranked; endpoints that failed recently last.
  candidates() {
    const now = performance.now();
    const failed = (e) => (this.failed.get(e.url) || 0) > now;
    const ranked = rank(this.endpoints, this.rtt);
    const first = this.current && !failed(this.current) ? [this.current] : [];
    const rest = ranked.filter((e) => !failed(e) && !first.some((f) => f.url === e.url));
    return [...first, ...rest, ...ranked.filter(failed)];
  }

  async send(endpoint, path, init) {
    let token = await this.currentToken();
    const attempt = (t) => this.fetch(`${endpoint.url}/${path}`, {
      ...init, headers: { ...(init.headers || {}), ...(t ? { Authorization: `Bearer ${t}` } : {}) } });
    let response = await attempt(token);
    if (response.status === 401 && typeof this.credential === "function") {
      token = await this.refreshToken(token);
      this.emit("credential_refreshed", { from_url: endpoint.url, to_url: endpoint.url, reason: "401" });
      response = await attempt(token);
    }
    return response;
  }

  // path relative to the endpoint ("generate"); a transport error, 429/502/503/504 moves to the next endpoint.
  async request(path, init) {
    if (!this.endpoints.length) await this.start();
    const errors = [];
    let previous = null;
    for (const endpoint of this.candidates()) {
      if (previous) this.emit("failover", { from_url: previous.url, to_url: endpoint.url, reason: errors.at(-1) });
      previous = endpoint;
      let response;
      try {
        response = await this.send(endpoint, path, init);
      } catch (err) {
        errors.push(`reset (${err.message})`);
        this.markFailed(endpoint);
        continue;
      }
      if (!RETRY_ELSEWHERE.has(response.status)) return response;
      errors.push(String(response.status));
      this.markFailed(endpoint);
    }
    throw new Error(`every endpoint failed: ${errors.join("; ") || "none known"}`);
  }

  generate(body, accept = "image/png") {
    return this.request("generate", { method: "POST", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", Accept: accept } });
  }

  edit(formData) {
    return this.request("v1/images/edits", { method: "POST", body: formData });
  }

  async stream(config, options = {}) {
    if (!this.endpoints.length) await this.start();
    const session = new StreamSession(this, config, options);
    await session.connect();
    return session;
  }
}

// onFrame({header, data, endpoint, receivedAt}), onEvent(event), onError(error object from the server).
export class StreamSession {
  constructor(client, config, { maxInFlight = 2, frameTimeoutMs = 10000, onFrame = () => {}, onEvent = null,
    onError = () => {} } = {}) {
    this.client = client;
    this.config = { ...config };
    this.maxInFlight = maxInFlight;
    this.frameTimeoutMs = frameTimeoutMs;
    this.onFrame = onFrame;
    this.onEvent = onEvent || ((event) => client.onEvent(event));
    this.onError = onError;
    this.ws = null;
    this.endpoint = null;
    this.pending = null;
    this.lastSent = null;
    this.resend = null;
    this.replaced = 0;
    this.closed = false;
    this.resumeFrom = null;
    this.watchdog = null;
    this.resetCounters();
  }

  resetCounters() {
    this.sent = 0;
    this.answered = 0;
    this.serverDropped = 0;
    this.lostToErrors = 0;
    this.header = null;
  }

  get inFlight() {
    return this.sent - this.answered - this.serverDropped - this.lostToErrors;
  }

  emit(kind, fields) {
    this.onEvent({ kind, at: performance.now(), ...fields });
  }

  // A frame (Blob or ArrayBuffer) replaces a submitted one not sent yet: the newest wins.
  submit(frame) {
    if (this.closed) throw new Error("the stream is closed");
    if (this.pending !== null) this.replaced += 1;
    this.pending = frame;
    this.pump();
  }

  reconfigure(config) {
    this.config = { ...config };
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(this.config));
  }

  pump() {
    while (this.ws && this.ws.readyState === 1 && this.pending !== null && this.inFlight < this.maxInFlight) {
      this.ws.send(this.pending);
      this.lastSent = this.pending;
      this.pending = null;
      this.sent += 1;
    }
    this.arm();
  }

  arm() {
    clearTimeout(this.watchdog);
    if (this.inFlight > 0 && !this.closed) {
      this.watchdog = setTimeout(() => this.lost("timeout", null, false), this.frameTimeoutMs);
    }
  }

  open(endpoint, token) {
    return new Promise((resolve, reject) => {
      const ws = new this.client.WebSocket(endpoint.stream_url, token ? [`bearer.${token}`] : []);
      ws.binaryType = "blob";
      ws.onopen = () => resolve(ws);
      // A refused upgrade (401, 429, 503) reaches a page only as a close before open.
      ws.onclose = (event) => reject(new Error(`upgrade refused or lost (${event.code})`));
      ws.onerror = () => {};
    });
  }

  // Try the preferred endpoint, then the others; a second failure on one endpoint refreshes the token once.
  async connect(prefer = null, exclude = null) {
    const order = this.client.candidates().filter((e) => e.url !== exclude);
    if (prefer) order.unshift(...[prefer].filter(Boolean));
    let refreshed = false;
    for (const endpoint of order) {
      let token = await this.client.currentToken();
      let ws = null;
      try {
        ws = await this.open(endpoint, token);
      } catch {
        // Browsers hide the status of a refused upgrade: one retry with a fresh token tells 401 from the rest.
        if (typeof this.client.credential === "function" && !refreshed) {
          refreshed = true;
          token = await this.client.refreshToken(token);
          try {
            ws = await this.open(endpoint, token);
          } catch {
            ws = null;
          }
        }
      }
      if (!ws) {
        this.client.markFailed(endpoint);
        continue;
      }
      if (this.closed) {
        ws.close(1000, "stopped");
        return;
      }
      this.install(ws, endpoint);
      return;
    }
    throw new Error("the stream found no endpoint to continue on");
  }

  install(ws, endpoint) {
    this.ws = ws;
    this.endpoint = endpoint;
    this.resetCounters();
    ws.onmessage = (event) => this.onMessage(ws, event);
    ws.onclose = (event) => this.onClose(ws, event);
    ws.send(JSON.stringify(this.config));
    if (this.pending === null && this.resend !== null) this.pending = this.resend;
    this.resend = null;
    this.pump();
  }

  onMessage(ws, event) {
    if (ws !== this.ws) return;
    if (typeof event.data === "string") {
      const message = JSON.parse(event.data);
      if (message.type === "frame") this.header = message;
      if (message.type === "error") {
        const error = message.error || {};
        if (!CONFIG_FIELDS.has(error.field)) this.lostToErrors += 1;
        this.onError(error);
        this.pump();
      }
      return;
    }
    const header = this.header;
    this.header = null;
    if (!header) return;
    this.answered += 1;
    this.serverDropped = header.dropped || 0;
    const receivedAt = performance.now();
    this.onFrame({ header, data: event.data, endpoint: this.endpoint.url, receivedAt });
    if (this.resumeFrom !== null) {
      this.emit("resumed", { to_url: this.endpoint.url, gap_s: (receivedAt - this.resumeFrom) / 1000 });
      this.resumeFrom = null;
    }
    this.pump();
  }

  onClose(ws, event) {
    if (ws !== this.ws || this.closed) return;
    const reason = (event.reason || "").toLowerCase();
    if (AUTH_CLOSE_CODES.has(event.code) || (reason.includes("token") && reason.includes("expir"))) {
      this.client.refreshToken(this.client.token).then(() => this.lost(`close ${event.code}`, event.code, true));
    } else if (event.code === 1000) {
      this.ws = null; // an idle close: the next submit reconnects
      this.lost("idle close", 1000, true);
    } else {
      this.lost(event.code === 1006 ? "reset" : `close ${event.code}`, event.code, false);
    }
  }

  lost(reason, code, same) {
    if (this.closed) return;
    const closedAt = performance.now();
    const old = this.endpoint;
    const ws = this.ws;
    this.resend = this.inFlight > 0 ? this.lastSent : null;
    this.ws = null;
    clearTimeout(this.watchdog);
    if (ws && ws.readyState <= 1) ws.close(1000, "moving on");
    if (!same) this.client.markFailed(old);
    this.connect(same ? old : null, same ? null : old.url).then(() => {
      this.resumeFrom = closedAt;
      this.emit(same ? "reconnect" : "failover", { from_url: old.url, to_url: this.endpoint.url, reason, code });
    }, (err) => {
      this.closed = true;
      this.emit("failed", { from_url: old.url, reason: err.message });
    });
  }

  close() {
    this.closed = true;
    clearTimeout(this.watchdog);
    if (this.ws && this.ws.readyState <= 1) this.ws.close(1000, "stopped");
    this.ws = null;
  }
}

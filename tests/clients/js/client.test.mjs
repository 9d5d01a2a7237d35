// serving/static/client.js under node:test, with a scripted fetch and WebSocket (no network): discovery and
// choice, the two-frame window with latest frame wins, failover on 1001 with the config and frame re-sent, and a
// token refresh on an expiry close. Run by tests/clients/js/test_client_js.py.
import assert from "node:assert/strict";
import { test } from "node:test";

import { EdgeClient, choose } from "../../../serving/static/client.js";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const until = async (predicate) => {
  for (let i = 0; i < 200 && !predicate(); i += 1) await sleep(5);
  assert.ok(predicate(), "condition not reached");
};

const A = "http://10.0.0.1:30080";
const B = "http://10.0.0.2:30080";
const C = "http://10.0.0.3:30080";

function fakeFetch({ delays, inventory, key = "k1" }) {
  return async (url, init = {}) => {
    const { origin, pathname } = new URL(url);
    await sleep(delays[origin] ?? 1);
    const body = (status, data) => ({ ok: status === 200, status, json: async () => data });
    if (pathname === "/healthz") return body(200, { status: "ok" });
    if ((init.headers || {}).Authorization !== `Bearer ${key}`) return body(401, { error: { code: "token_expired" } });
    if (pathname === "/v1/endpoints") return body(200, inventory);
    return body(404, {});
  };
}

class FakeSocket {
  static opened = [];
  static down = new Set();
  constructor(url, protocols) {
    Object.assign(this, { url, protocols, readyState: 0, sent: [] });
    FakeSocket.opened.push(this);
    setTimeout(() => {
      if (FakeSocket.down.has(new URL(url).host)) {
        this.readyState = 3;
        this.onclose({ code: 1006, reason: "" });
      } else {
        this.readyState = 1;
        this.onopen();
      }
    }, 1);
  }
  send(data) { this.sent.push(data); }
  close() { this.readyState = 3; }
  frames() { return this.sent.filter((m) => typeof m !== "string"); }
  answer(seq, data) {
    this.onmessage({ data: JSON.stringify({ type: "frame", seq, inference_ms: 1, dropped: 0 }) });
    this.onmessage({ data });
  }
  serverClose(code, reason = "") {
    this.readyState = 3;
    this.onclose({ code, reason });
  }
}

async function started(extra = {}) {
  FakeSocket.opened = [];
  FakeSocket.down = new Set();
  const inventory = [{ url: A }, { url: B }, { url: C, ready: false }];
  const events = [];
  const client = new EdgeClient({ seeds: [A], credential: "k1", refreshIntervalMs: 0, WebSocketImpl: FakeSocket,
    fetchImpl: fakeFetch({ delays: { [A]: 40, [B]: 5, [C]: 1 }, inventory, ...extra.fetch }),
    onEvent: (e) => events.push(e), ...extra.client });
  await client.start();
  return { client, events };
}

test("choice: ready first, sticky unless clearly faster", () => {
  const eps = [{ url: A, ready: true }, { url: B, ready: true }];
  assert.equal(choose(eps, new Map([[A, 10], [B, 9]]), A).url, A);
  assert.equal(choose(eps, new Map([[A, 30], [B, 12]]), A).url, B);
  assert.equal(choose([...eps, { url: C, ready: false }], new Map([[A, 30], [B, 12], [C, 1]]), null).url, B);
});

test("discovery lists the inventory and picks the ready endpoint with the shortest round trip", async () => {
  const { client } = await started();
  assert.deepEqual(client.endpoints.map((e) => e.url), [A, B, C]);
  assert.equal(client.current.url, B);
  assert.deepEqual(client.candidates().map((e) => e.url), [B, A, C]);
});

test("two frames in flight, the newest waiting frame wins, and the window refills on each answer", async () => {
  const { client } = await started();
  const outputs = [];
  const session = await client.stream({ prompt: "x" }, { onFrame: (f) => outputs.push(f) });
  const ws = FakeSocket.opened.at(-1);
  assert.equal(ws.url, `ws${B.slice(4)}/v1/stream`);
  assert.deepEqual(ws.protocols, ["bearer.k1"]);
  for (const frame of ["f1", "f2", "f3", "f4"]) session.submit(Buffer.from(frame));
  assert.equal(ws.sent[0], JSON.stringify({ prompt: "x" }));
  assert.deepEqual(ws.frames().map(String), ["f1", "f2"]);
  assert.equal(session.replaced, 1);
  ws.answer(1, Buffer.from("o1"));
  assert.deepEqual(ws.frames().map(String), ["f1", "f2", "f4"]);
  assert.equal(String(outputs[0].data), "o1");
  session.close();
});

test("close 1001 moves the stream to the next endpoint, re-sends config and the unanswered frame, reports it",
  async () => {
    const { client, events } = await started();
    const outputs = [];
    const session = await client.stream({ prompt: "x" }, { onFrame: (f) => outputs.push(f) });
    const first = FakeSocket.opened.at(-1);
    session.submit(Buffer.from("f1"));
    session.submit(Buffer.from("f2"));
    first.answer(1, Buffer.from("o1"));
    first.serverClose(1001, "server shutting down");
    await until(() => events.some((e) => e.kind === "failover"));
    const second = FakeSocket.opened.at(-1);
    assert.equal(new URL(second.url).host, new URL(A).host);
    assert.deepEqual(second.sent.map(String), [JSON.stringify({ prompt: "x" }), "f2"]);
    const failover = events.find((e) => e.kind === "failover");
    assert.deepEqual([failover.from_url, failover.to_url, failover.code], [B, A, 1001]);
    second.answer(1, Buffer.from("o2"));
    assert.deepEqual(outputs.map((o) => o.endpoint), [B, A]);
    assert.ok(events.find((e) => e.kind === "resumed").gap_s >= 0);
    session.close();
  });

test("an expiry close refreshes the token and reconnects to the same endpoint", async () => {
  let minted = 1;
  const credential = async (refresh) => `k${refresh ? ++minted : minted}`;
  const { client, events } = await started({ client: { credential } });
  const session = await client.stream({ prompt: "x" });
  FakeSocket.opened.at(-1).serverClose(4001, "token_expired");
  await until(() => events.some((e) => e.kind === "reconnect"));
  const again = FakeSocket.opened.at(-1);
  assert.equal(new URL(again.url).host, new URL(B).host);
  assert.deepEqual(again.protocols, ["bearer.k2"]);
  assert.ok(!events.some((e) => e.kind === "failover"));
  session.close();
});

test("a refused upgrade goes to the next endpoint", async () => {
  const { client } = await started();
  FakeSocket.down.add(new URL(B).host);
  const session = await client.stream({ prompt: "x" });
  assert.equal(session.endpoint.url, A);
  session.close();
});

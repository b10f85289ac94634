// A minimal browser for unit tests: the globals the SDK touches, a clock moved by hand, and a
// fetch answered by the test. (The real browser runs in the end-to-end tests, tests/sdk.)
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const vm = require("node:vm");

const SOURCE = fs.readFileSync(path.join(__dirname, "..", "src", "kairos.js"), "utf8");

function browser({ url = "https://shop.example/", storage = new Map(), answer = () => 202 } = {}) {
  let now = Date.parse("2026-11-26T10:00:00Z");
  let timers = [];
  const requests = [];
  const beacons = [];
  const listeners = {};
  const loc = new URL(url);
  const localStorage = {
    getItem: (k) => (storage.has(k) ? storage.get(k) : null),
    setItem: (k, v) => storage.set(k, String(v)),
    removeItem: (k) => storage.delete(k),
  };
  const document = {
    cookie: "",
    referrer: "https://www.google.com/",
    title: "Shop",
    readyState: "complete",
    documentElement: { attributes: {}, setAttribute(k, v) { this.attributes[k] = v; } },
    querySelectorAll: () => [],
    addEventListener() {},
    createElement: (tag) => ({ tag, async: 0, src: "" }),
    head: { appendChild() {} },
  };
  const window = {
    localStorage,
    location: loc,
    navigator: { userAgent: "node-test", language: "en-GB", onLine: true,
                 sendBeacon: (u, blob) => { beacons.push({ url: u, blob }); return true; } },
    screen: { width: 1280, height: 800 },
    history: { pushState(s, t, u) { loc.href = new URL(u, loc.href).href; },
               replaceState(s, t, u) { loc.href = new URL(u, loc.href).href; } },
    addEventListener: (name, fn) => { (listeners[name] = listeners[name] || []).push(fn); },
    setTimeout: (fn, ms) => { const t = { at: now + (ms || 0), fn }; timers.push(t); return t; },
    clearTimeout: (t) => { timers = timers.filter((x) => x !== t); },
    fetch: async (u, init) => {
      const request = { url: u, ...init, json: JSON.parse(init.body) };
      requests.push(request);
      const status = await answer(request);
      if (status instanceof Error) throw status;
      return { status, ok: status < 300, text: async () => "{}", json: async () => ({ decisions: {} }) };
    },
    crypto: globalThis.crypto,
    URLSearchParams, Promise, JSON, Math, Date: class extends Date {
      constructor(...a) { super(...(a.length ? a : [now])); }
      static now() { return now; }
    },
    Blob: class { constructor(parts, o) { this.text = parts.join(""); this.type = o.type; } },
    console: { warn() {} },
  };
  window.window = window;
  window.document = document;
  const context = vm.createContext(window);
  return {
    window, document, storage, requests, beacons,
    load(stub = []) {
      window.kairos = stub;
      vm.runInContext(SOURCE, context);
      return window.kairos;
    },
    fire(name) { (listeners[name] || []).forEach((fn) => fn({})); },
    async advance(ms) {
      const until = now + ms;
      for (;;) {
        await new Promise((r) => setImmediate(r));
        timers.sort((a, b) => a.at - b.at);
        const next = timers[0];
        if (!next || next.at > until) break;
        timers.shift();
        now = next.at;
        next.fn();
      }
      now = until;
      await new Promise((r) => setImmediate(r));
    },
    sent() { return requests.filter((r) => r.url.endsWith("/v1/batch")).flatMap((r) => r.json.batch); },
    queued() { return JSON.parse(storage.get("kairos.q") || "[]"); },
  };
}

function stub(host, key, opts, calls = []) {
  const k = calls.map(([m, a]) => [m, a]);
  k._host = host;
  k._key = key;
  k._opts = opts || {};
  return k;
}

module.exports = { browser, stub };

"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const { browser, stub } = require("./browser.js");

const HOST = "https://engine.example";

test("calls made before the script loaded are replayed, then the page view", async () => {
  const b = browser({ url: "https://shop.example/shoes?utm_source=news&utm_campaign=fall" });
  b.load(stub(HOST, "wk_1", {}, [["identify", ["u1", { plan: "pro" }]], ["track", ["Signed Up", { a: 1 }]]]));
  await b.advance(1000);
  const sent = b.sent();
  assert.deepEqual(sent.map((m) => m.type), ["identify", "track", "page"]);
  assert.equal(sent[1].event, "Signed Up");
  assert.ok(sent.every((m) => m.userId === "u1" && m.anonymousId === sent[0].anonymousId));
  assert.equal(new Set(sent.map((m) => m.messageId)).size, 3);
  assert.deepEqual(sent[2].context.campaign, { source: "news", name: "fall" });
  assert.equal(sent[2].context.firstTouch.referrer, "https://www.google.com/");
  assert.equal(sent[2].properties.path, "/shoes");
  const request = b.requests[0];
  assert.equal(request.url, HOST + "/v1/batch");
  assert.equal(request.headers["Content-Type"], "text/plain"); // no CORS preflight
  assert.equal(request.json.writeKey, "wk_1");
  assert.deepEqual(b.queued(), []);
  assert.match(b.document.cookie, /kairos_aid=/);
});

test("failures are retried with backoff and nothing leaves storage before a 2xx", async () => {
  let down = true;
  const b = browser({ answer: () => (down ? new TypeError("offline") : 200) });
  const k = b.load(stub(HOST, "wk", { page: false }));
  k.track("A");
  await b.advance(1000);
  assert.equal(b.requests.length, 1);
  assert.equal(b.queued().length, 1);
  await b.advance(999);
  assert.equal(b.requests.length, 1); // waits a second
  await b.advance(1);
  assert.equal(b.requests.length, 2);
  await b.advance(1999);
  assert.equal(b.requests.length, 2); // then two
  down = false;
  await b.advance(1);
  assert.equal(b.requests.length, 3);
  assert.deepEqual(b.queued(), []);
  const ids = b.requests.map((r) => r.json.batch[0].messageId);
  assert.equal(new Set(ids).size, 1); // the same message each time: the engine keeps one
});

test("a 5xx is retried, a 400 is not", async () => {
  const statuses = [503, 400];
  const b = browser({ answer: () => statuses.shift() ?? 200 });
  const k = b.load(stub(HOST, "wk", { page: false }));
  k.track("A");
  await b.advance(1000);
  await b.advance(1000);
  assert.equal(b.requests.length, 2);
  assert.deepEqual(b.queued(), []); // refused as bad: dropped, not retried forever
  await b.advance(60000);
  assert.equal(b.requests.length, 2);
});

test("the queue survives a reload and goes out on the next page", async () => {
  const storage = new Map();
  const first = browser({ storage, answer: () => new TypeError("offline") });
  first.load(stub(HOST, "wk", { page: false })).track("Queued offline");
  await first.advance(1000);
  const [waiting] = first.queued();
  const second = browser({ storage });
  second.load(stub(HOST, "wk", { page: false }));
  await second.advance(0);
  const sent = second.sent();
  assert.equal(sent.length, 1);
  assert.equal(sent[0].messageId, waiting.messageId);
  assert.deepEqual(second.queued(), []);
});

test("the queue is bounded: the oldest go first", async () => {
  const b = browser({ answer: () => new TypeError("offline") });
  const k = b.load(stub(HOST, "wk", { page: false, maxQueue: 5 }));
  for (let i = 0; i < 8; i++) k.track("E" + i);
  assert.deepEqual(b.queued().map((m) => m.event), ["E3", "E4", "E5", "E6", "E7"]);
});

test("with consent required nothing is sent until granted, then with the categories", async () => {
  const b = browser();
  const k = b.load(stub(HOST, "wk", { consent: "required" }));
  k.track("Before consent");
  await b.advance(10000);
  assert.equal(b.requests.length, 0);
  b.fire("pagehide");
  assert.equal(b.beacons.length, 0);
  k.consent({ Analytics: true, Advertising: false });
  await b.advance(0);
  const sent = b.sent();
  assert.deepEqual(sent.map((m) => m.type), ["page", "track"]);
  for (const m of sent) {
    assert.deepEqual(m.context.consent, { categoryPreferences: { Analytics: true, Advertising: false } });
  }
});

test("pagehide sends the queue by beacon and keeps it until acknowledged", async () => {
  const b = browser({ answer: () => new TypeError("offline") });
  b.load(stub(HOST, "wk", {})).track("Leaving");
  b.fire("pagehide");
  assert.equal(b.beacons.length, 1);
  assert.equal(b.beacons[0].blob.type, "text/plain");
  assert.deepEqual(JSON.parse(b.beacons[0].blob.text).batch.map((m) => m.type), ["page", "track"]);
  assert.equal(b.queued().length, 2); // resent later if the beacon was lost; dedup by messageId
});

test("SPA navigation sends a page view; reset forgets the person", async () => {
  const b = browser();
  const k = b.load(stub(HOST, "wk", {}));
  k.identify("u9");
  b.window.history.pushState({}, "", "/cart");
  await b.advance(1000);
  const pages = b.sent().filter((m) => m.type == "page");
  assert.deepEqual(pages.map((m) => m.properties.path), ["/", "/cart"]);
  const before = k.user();
  k.reset();
  const after = k.user();
  assert.equal(after.userId, null);
  assert.notEqual(after.anonymousId, before.anonymousId);
});

test("identify stores the userHash with the user id; decide sends both; reset forgets it", async () => {
  const b = browser();
  const k = b.load(stub(HOST, "wk", { page: false }));
  const asked = () => b.requests.filter((r) => r.url == HOST + "/v1/decide").map((r) => r.json);
  await k.decide(["home_hero"]);
  k.identify("u1", { first_name: "Ada" }, { userHash: "a1b2" });
  await k.decide(["home_hero"]);
  k.identify("u1", { plan: "pro" }); // the same person: the hash stays
  await k.decide(["home_hero"]);
  k.identify("u2", {}); // someone else, unsigned: u1's hash is not theirs
  await k.decide(["home_hero"]);
  k.identify("u2", {}, { userHash: "c3d4" });
  k.reset();
  await k.decide(["home_hero"]);
  const sent = asked().map((a) => [a.userId, a.userHash]);
  assert.deepEqual(sent, [[undefined, undefined], ["u1", "a1b2"], ["u1", "a1b2"], ["u2", undefined],
                          [undefined, undefined]]);
  assert.ok(asked().every((a) => a.anonymousId && a.writeKey == "wk"));
  await b.advance(1000);
  assert.ok(b.sent().every((m) => !("userHash" in m))); // events carry the user id only
  assert.equal(b.storage.get("kairos.uhash"), undefined);
});

test("a page rendered for a signed-in user passes userId and userHash in the snippet", async () => {
  const b = browser();
  const k = b.load(stub(HOST, "wk", { page: false, userId: "u7", userHash: "e5f6" },
                        [["decide", [["home_hero"]]]]));
  await b.advance(0);
  const asked = b.requests.filter((r) => r.url == HOST + "/v1/decide").map((r) => r.json);
  assert.deepEqual(asked.map((a) => [a.userId, a.userHash]), [["u7", "e5f6"]]); // the queued call
  assert.equal(k.user().userId, "u7");
});

/*! Kairos browser SDK 1.0.0 | MIT */
/* Events to /v1/batch, personalized slots from /v1/decide. No dependencies.
 *
 * Loaded by the snippet (sdk-js/snippet.html), which leaves `window.kairos` as a queue of calls
 * made before this file arrived: [method, args, resolve, reject]. They are replayed in order.
 *
 * Delivery: messages go into a queue kept in localStorage (bounded), sent to /v1/batch as
 * text/plain (no CORS preflight) every `flushInterval` ms, retried with exponential backoff, and
 * removed only once the engine answered 2xx (or 4xx: a bad message is not retried). On pagehide
 * the queue goes out by sendBeacon and stays stored: if the beacon was lost it is sent again on
 * the next page, and the engine drops repeats by messageId. So every message arrives once.
 *
 * Identity: `identify(userId, traits, {userHash})`, or `{userId, userHash}` in the snippet's
 * options, keeps the site server's signature of the user id beside it (localStorage, cleared by
 * reset()); decide() sends it with the userId. Without it the engine decides for this device.
 *
 * XSS stance: a slot receives HTML only from the engine's server-rendered, sandboxed and
 * autoescaped templates (a variant's `template`, a decision's `content.html`); everything else
 * (JSON content, recommended items without a template) is written as text nodes.
 */
(function (w, d) {
  "use strict";
  var VERSION = "1.0.0";
  var stub = w.kairos || [];
  if (stub.version) return; // loaded twice
  var opts = stub._opts || {};
  var host = (stub._host || "").replace(/\/$/, "");
  var writeKey = stub._key || "";
  var ls = storage();
  var P = "kairos.";
  var MAX_QUEUE = opts.maxQueue || 1000;
  var BATCH = 100;
  var flushInterval = opts.flushInterval || 1000;
  var slotTimeout = opts.slotTimeout || 300;
  var queue = load("q", []);
  var consent = load("consent", null);
  var backoff = 0;
  var timer = 0;
  var sending = false;
  var seen = {}; // decisionId -> true once viewed

  function storage() {
    try {
      var s = w.localStorage;
      s.setItem("kairos.t", "1");
      s.removeItem("kairos.t");
      return s;
    } catch (e) {
      var m = {};
      return { getItem: function (k) { return k in m ? m[k] : null; },
               setItem: function (k, v) { m[k] = String(v); }, removeItem: function (k) { delete m[k]; } };
    }
  }
  function load(k, dflt) {
    try { var v = ls.getItem(P + k); return v === null ? dflt : JSON.parse(v); } catch (e) { return dflt; }
  }
  function save(k, v) {
    try { v === null ? ls.removeItem(P + k) : ls.setItem(P + k, JSON.stringify(v)); } catch (e) { /* full */ }
  }
  function uuid() {
    if (w.crypto && w.crypto.randomUUID) return w.crypto.randomUUID();
    return "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".replace(/[xy]/g, function (c) {
      var r = (Math.random() * 16) | 0;
      return (c == "x" ? r : (r & 3) | 8).toString(16);
    });
  }
  function cookie(name, value) {
    if (value === undefined) {
      var m = d.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
      return m ? decodeURIComponent(m[1]) : null;
    }
    d.cookie = name + "=" + encodeURIComponent(value) + "; path=/; max-age=" + (value ? 31536000 : 0) +
      "; SameSite=Lax" + (location.protocol == "https:" ? "; Secure" : "");
  }

  // -- who --
  // The site's server signs a signed-in user's id (userHash, HMAC-SHA256 under the identity
  // secret); without it the engine decides for this device only. A hash is for one user id.
  function signIn(uid, hash) {
    if (uid != load("uid", null) || hash) save("uhash", hash ? String(hash) : null);
    save("uid", uid);
  }
  function anonymousId() {
    var id = cookie("kairos_aid") || load("aid", null);
    if (!id) id = uuid();
    cookie("kairos_aid", id);
    save("aid", id);
    return id;
  }
  function session() {
    var now = Date.now();
    var s = load("session", null);
    if (!s || now - s.at > 30 * 60 * 1000) s = { id: now, at: now };
    s.at = now;
    save("session", s);
    return s.id;
  }
  function campaign() {
    var found = {};
    var names = { utm_source: "source", utm_medium: "medium", utm_campaign: "name",
                  utm_term: "term", utm_content: "content" };
    new URLSearchParams(location.search).forEach(function (v, k) {
      if (names[k]) found[names[k]] = v;
    });
    return found;
  }
  function firstTouch() {
    var ft = load("ft", null);
    if (!ft) {
      ft = { referrer: d.referrer, landing: location.href, campaign: campaign() };
      save("ft", ft);
    }
    return ft;
  }
  function context() {
    var c = {
      library: { name: "kairos.js", version: VERSION },
      page: { path: location.pathname, url: location.href, referrer: d.referrer, title: d.title,
              search: location.search },
      userAgent: navigator.userAgent, locale: navigator.language,
      screen: { width: screen.width, height: screen.height },
      sessionId: session(), firstTouch: firstTouch()
    };
    var utm = campaign();
    for (var k in utm) { c.campaign = utm; break; }
    return c;
  }

  // -- delivery --
  function enqueue(type, fields) {
    var msg = { type: type, messageId: uuid(), timestamp: new Date().toISOString(),
                anonymousId: anonymousId(), context: context() };
    var uid = load("uid", null);
    if (uid) msg.userId = uid;
    for (var k in fields) if (fields[k] !== undefined) msg[k] = fields[k];
    queue.push(msg);
    if (queue.length > MAX_QUEUE) queue.splice(0, queue.length - MAX_QUEUE); // oldest go first
    save("q", queue);
    schedule(queue.length >= BATCH ? 0 : flushInterval);
  }
  function schedule(ms) {
    if (!timer) timer = setTimeout(function () { timer = 0; flush(); }, ms);
  }
  function withConsent(batch) {
    return batch.map(function (m) {
      if (consent && !(m.context && m.context.consent)) {
        m.context = m.context || {};
        m.context.consent = { categoryPreferences: consent };
      }
      return m;
    });
  }
  function body(batch) {
    return JSON.stringify({ batch: withConsent(batch), writeKey: writeKey, sentAt: new Date().toISOString() });
  }
  function held() { return opts.consent == "required" && !consent; }
  function flush() {
    if (sending || !queue.length || held()) return;
    if (navigator.onLine === false) return schedule(Math.max(flushInterval, 2000));
    var batch = queue.slice(0, BATCH);
    sending = true;
    fetch(host + "/v1/batch", { method: "POST", body: body(batch), keepalive: true,
                                headers: { "Content-Type": "text/plain" } })
      .then(function (r) {
        if (r.status >= 500 || r.status == 429 || r.status == 401) throw new Error("HTTP " + r.status);
        if (r.status >= 400) r.text().then(function (t) { console.warn("kairos: batch refused", t); });
        done(batch);
      })
      .catch(function () {
        sending = false;
        backoff = Math.min(backoff ? backoff * 2 : 1000, 60000);
        schedule(backoff);
      });
  }
  function done(batch) {
    var sent = {};
    batch.forEach(function (m) { sent[m.messageId] = 1; });
    queue = load("q", queue).filter(function (m) { return !sent[m.messageId]; }); // other tabs' too
    save("q", queue);
    sending = false;
    backoff = 0;
    if (queue.length) schedule(0);
  }
  function beacon() {
    if (!queue.length || held() || !navigator.sendBeacon) return;
    navigator.sendBeacon(host + "/v1/batch", new Blob([body(queue.slice(0, BATCH))], { type: "text/plain" }));
  }

  // -- the API --
  var api = {
    version: VERSION,
    page: function (name, properties) {
      if (typeof name == "object") { properties = name; name = undefined; }
      var p = { path: location.pathname, url: location.href, referrer: d.referrer, title: d.title,
                search: location.search };
      for (var k in properties || {}) p[k] = properties[k];
      enqueue("page", { name: name, properties: p });
    },
    track: function (event, properties) { enqueue("track", { event: event, properties: properties || {} }); },
    identify: function (userId, traits, options) {
      if (typeof userId == "object") { options = traits; traits = userId; userId = undefined; }
      if (userId) signIn(String(userId), options && options.userHash);
      else if (options && options.userHash) save("uhash", String(options.userHash));
      enqueue("identify", { traits: traits || {} });
    },
    alias: function (userId, previousId) {
      enqueue("alias", { userId: String(userId), previousId: previousId || load("uid", null) || anonymousId() });
    },
    group: function (groupId, traits) { enqueue("group", { groupId: String(groupId), traits: traits || {} }); },
    reset: function () {
      save("uid", null);
      save("uhash", null);
      save("session", null);
      cookie("kairos_aid", "");
      save("aid", null);
    },
    consent: function (categories) {
      consent = categories;
      save("consent", categories);
      schedule(0);
    },
    user: function () { return { anonymousId: anonymousId(), userId: load("uid", null) }; },
    flush: flush,
    decide: decide,
    slots: slots
  };

  function decide(placements, options) {
    var ask = { placements: placements, anonymousId: anonymousId(), context: context(), writeKey: writeKey };
    if (options && options.item) ask.context.item = String(options.item); // the product in view
    var uid = load("uid", null);
    if (uid) ask.userId = uid;
    var hash = uid && load("uhash", null);
    if (hash) ask.userHash = hash; // the engine uses the userId only with it
    var ms = (options && options.timeout) || slotTimeout;
    var ctl = w.AbortController ? new AbortController() : null;
    var t = setTimeout(function () { if (ctl) ctl.abort(); }, ms);
    return fetch(host + "/v1/decide", { method: "POST", body: JSON.stringify(ask),
                                        headers: { "Content-Type": "text/plain" }, signal: ctl && ctl.signal })
      .then(function (r) {
        if (!r.ok) throw new Error("kairos: decide answered " + r.status);
        return r.json();
      })
      .then(function (a) { return a.decisions || {}; })
      .finally(function () { clearTimeout(t); });
  }

  // -- slots --
  function render(el, key, dec) {
    el.setAttribute("data-kairos-decision", dec.decisionId);
    if (dec.items && !dec.items.length) return; // nothing to recommend: the default stays
    var c = dec.content;
    var html = typeof c == "string" ? c : c && typeof c.html == "string" ? c.html : null;
    if (html !== null) {
      el.innerHTML = html; // the engine's sandboxed, autoescaped template
    } else if (dec.items && dec.items.length) {
      var ul = d.createElement("ul");
      dec.items.forEach(function (item) {
        var li = d.createElement("li");
        var a = d.createElement("a");
        a.href = item.url;
        a.textContent = item.name;
        a.setAttribute("data-kairos-item", item.id);
        li.appendChild(a);
        ul.appendChild(li);
      });
      el.textContent = "";
      el.appendChild(ul);
    }
    el.dispatchEvent(new CustomEvent("kairos:decided", { detail: { placement: key, decision: dec } }));
    if (dec.fallback) return; // a default: nothing to learn from
    var props = { decisionId: dec.decisionId, placement: key, variant: dec.variant };
    el.addEventListener("click", function (e) {
      var p = {};
      for (var k in props) p[k] = props[k];
      var item = e.target.closest && e.target.closest("[data-kairos-item]");
      if (item) p.itemId = item.getAttribute("data-kairos-item");
      api.track("Decision Clicked", p);
      beacon(); // the click may leave the page
    });
    var view = function () {
      if (seen[dec.decisionId]) return;
      seen[dec.decisionId] = 1;
      api.track("Decision Viewed", props);
    };
    if (!w.IntersectionObserver) return view();
    var io = new IntersectionObserver(function (entries) {
      entries.forEach(function (en) { if (en.intersectionRatio >= 0.5) { view(); io.disconnect(); } });
    }, { threshold: [0.5] });
    io.observe(el);
  }
  function reveal() { d.documentElement.setAttribute("data-kairos-ready", ""); }
  function slots(deadline) {
    deadline = deadline || Date.now() + slotTimeout;
    var els = d.querySelectorAll("[data-kairos-slot]:not([data-kairos-decision])");
    var by = {};
    var item;
    for (var i = 0; i < els.length; i++) {
      var key = els[i].getAttribute("data-kairos-slot");
      (by[key] = by[key] || []).push(els[i]);
      item = item || els[i].getAttribute("data-kairos-product");
    }
    var keys = Object.keys(by);
    if (!keys.length) return Promise.resolve(reveal());
    return decide(keys, { timeout: Math.max(1, deadline - Date.now()), item: item }).then(function (decisions) {
      if (Date.now() > deadline) return; // the defaults are showing: do not swap them now
      keys.forEach(function (k) {
        if (decisions[k]) by[k].forEach(function (el) { render(el, k, decisions[k]); });
      });
    }).catch(function () { /* slow or down: the default content stays */ }).then(reveal);
  }

  // -- start --
  var last = location.href;
  function changed() {
    if (location.href == last) return;
    last = location.href;
    api.page();
    slots();
  }
  ["pushState", "replaceState"].forEach(function (m) {
    var orig = history[m];
    history[m] = function () { var r = orig.apply(this, arguments); changed(); return r; };
  });
  w.addEventListener("popstate", changed);
  w.addEventListener("pagehide", beacon);
  w.addEventListener("online", function () { backoff = 0; schedule(0); });
  w.kairos = api;
  if (opts.userId) signIn(String(opts.userId), opts.userHash); // a page rendered signed in
  for (var i = 0; i < stub.length; i++) {
    var call = stub[i];
    try {
      var r = api[call[0]].apply(api, call[1]);
      if (call[2]) Promise.resolve(r).then(call[2], call[3]);
    } catch (e) {
      if (call[3]) call[3](e);
    }
  }
  if (opts.page !== false) api.page();
  var go = function () { slots((stub._t || Date.now()) + slotTimeout); };
  d.readyState == "loading" ? d.addEventListener("DOMContentLoaded", go) : go();
  if (queue.length) schedule(0); // left from an earlier page
})(window, document);

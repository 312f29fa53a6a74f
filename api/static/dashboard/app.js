// The contact-monitor dashboard (docs/dashboard.md). Plain JavaScript, no build step, no
// dependency: it talks to this server's /graphql, over HTTP for queries and over a websocket
// (graphql-transport-ws) for the live feed, with the API key entered at sign-in.
//
// Everything shown comes from visitors' browsers (URLs, titles, form values): it is always put
// in the page as text (textContent), never as HTML.
"use strict";

const KEY_STORAGE = "contact-monitor.api-key"; // shared with the GraphiQL page
const VISITS_SHOWN = 50;
const state = { key: sessionStorage.getItem(KEY_STORAGE) || "", role: "", name: "" };

// ---------------------------------------------------------------------------------------------
// Small helpers

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const today = new Date().toDateString() === date.toDateString();
  return today ? date.toLocaleTimeString() : date.toLocaleString();
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

function canWrite() {
  return state.role === "write" || state.role === "admin";
}

// ---------------------------------------------------------------------------------------------
// GraphQL over HTTP

class SignedOut extends Error {}

async function gql(query, variables) {
  const response = await fetch("/graphql", {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: "Bearer " + state.key },
    body: JSON.stringify({ query, variables: variables || {} }),
  });
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    throw new Error("the server answered " + response.status + " without JSON");
  }
  if (response.status === 401) throw new SignedOut(messageOf(body) || "invalid API key");
  if (body.errors && body.errors.length) throw new Error(messageOf(body));
  return body.data;
}

function messageOf(body) {
  if (body && body.errors && body.errors.length) return body.errors.map((e) => e.message).join("; ");
  if (body && body.error) return body.error;
  return "";
}

// ---------------------------------------------------------------------------------------------
// GraphQL over a websocket (graphql-transport-ws): one socket, several subscriptions, resumed
// after a lost connection (the live feed from its last cursor).

class Live {
  constructor() {
    this.socket = null;
    this.subscriptions = new Map(); // id -> {query, variables(), onNext}
    this.nextId = 1;
    this.delay = 1000;
    this.onState = () => {};
    this.closed = false;
    this.retry = null; // the reconnection timer
  }

  subscribe(query, variables, onNext) {
    const id = String(this.nextId++);
    this.subscriptions.set(id, { query, variables, onNext });
    if (this.ready) this.send(id);
    return id;
  }

  send(id) {
    const sub = this.subscriptions.get(id);
    const payload = { query: sub.query, variables: sub.variables() };
    this.socket.send(JSON.stringify({ id, type: "subscribe", payload }));
  }

  connect() {
    this.retry = null;
    if (this.closed) return;
    this.ready = false;
    const url = location.origin.replace(/^http/, "ws") + "/graphql";
    const socket = new WebSocket(url, "graphql-transport-ws");
    this.socket = socket;
    this.onState("connecting...");
    socket.onopen = () => {
      socket.send(
        JSON.stringify({ type: "connection_init", payload: { authorization: "Bearer " + state.key } }),
      );
    };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "connection_ack") {
        this.ready = true;
        this.delay = 1000;
        this.onState("");
        for (const id of this.subscriptions.keys()) this.send(id);
      } else if (message.type === "ping") {
        socket.send(JSON.stringify({ type: "pong" }));
      } else if (message.type === "next") {
        const sub = this.subscriptions.get(message.id);
        if (sub) sub.onNext(message.payload);
      } else if (message.type === "error") {
        showError("live feed: " + (message.payload || []).map((e) => e.message).join("; "));
      }
    };
    socket.onclose = (event) => {
      this.ready = false;
      if (this.closed) return;
      if (event.code === 4403) {
        this.onState("refused: the key is no longer valid");
        return;
      }
      this.onState("connection lost; reconnecting...");
      this.retry = setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, 30000);
    };
  }

  close() {
    this.closed = true;
    clearTimeout(this.retry);
    this.subscriptions.clear();
    if (this.socket) this.socket.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Live: visits as they happen, visitors online, hits per minute

const VISIT_FIELDS = `cursor type occurredAt skipped
  contact { id email isAnonymous }
  hit { url title utm { source medium campaign }
        userAgent { browser os deviceType } device { trackingId } }`;

const live = {
  socket: null,
  cursor: null,
  minutes: [], // [{minute: Date ms, hits}]

  start() {
    this.stop(); // one feed at a time, whatever signed in before
    this.socket = new Live();
    this.socket.onState = (text) => ($("feed-state").textContent = text);
    this.socket.subscribe(
      `subscription($after: String) { liveVisits(after: $after) { ${VISIT_FIELDS} } }`,
      () => (this.cursor ? { after: this.cursor } : {}),
      (payload) => this.visit(payload),
    );
    this.socket.subscribe(
      "subscription { visitorsOnline(window: 300) }",
      () => ({}),
      (payload) => {
        if (payload.data) $("online").textContent = payload.data.visitorsOnline;
      },
    );
    this.socket.connect();
    this.loadChart();
    this.timer = setInterval(() => this.tick(), 10000);
  },

  stop() {
    if (this.socket) this.socket.close();
    this.socket = null;
    clearInterval(this.timer);
    this.cursor = null;
    this.minutes = [];
    $("visits").replaceChildren();
    $("no-visits").hidden = false;
    $("online").textContent = "-";
    $("chart").replaceChildren();
    $("chart-caption").textContent = "";
  },

  visit(payload) {
    if (payload.errors) {
      showError("live feed: " + payload.errors.map((e) => e.message).join("; "));
      return;
    }
    const event = payload.data.liveVisits;
    this.cursor = event.cursor;
    if (event.type === "GAP" || event.type === "LAGGED") {
      $("visits").prepend(
        el("tr", {}, el("td", { colspan: "5", class: "muted" }, "some visits were missed here (" + event.type + ")")),
      );
      return;
    }
    const hit = event.hit || {};
    const contact = event.contact;
    const who = contact
      ? el("a", { href: "#contact/" + encodeURIComponent(contact.id) }, contact.email || "anonymous")
      : "anonymous";
    const agent = hit.userAgent || {};
    const device = [agent.browser, agent.os, agent.deviceType].filter(Boolean).join(", ");
    const utm = hit.utm ? [hit.utm.source, hit.utm.medium, hit.utm.campaign].filter(Boolean).join(" / ") : "";
    const row = el(
      "tr",
      { class: "visit" },
      el("td", { class: "time" }, when(event.occurredAt)),
      el("td", {}, el("div", {}, hit.title || "(no title)"), el("div", { class: "muted" }, hit.url || "")),
      el("td", {}, who),
      el("td", {}, device),
      el("td", {}, utm),
    );
    const rows = $("visits");
    rows.prepend(row);
    while (rows.children.length > VISITS_SHOWN) rows.lastChild.remove();
    $("no-visits").hidden = true;
    this.count(new Date(event.occurredAt));
  },

  async loadChart() {
    try {
      const data = await gql("{ hitsPerMinute(minutes: 60) { minute hits } }");
      this.minutes = data.hitsPerMinute.map((m) => ({ minute: Date.parse(m.minute), hits: m.hits }));
      this.draw();
    } catch (err) {
      showError("hits per minute: " + err.message);
    }
  },

  count(date) {
    const minute = Math.floor(date.getTime() / 60000) * 60000;
    this.tick(minute); // the server's clock may be ahead of this browser's
    const slot = this.minutes.find((m) => m.minute === minute);
    if (slot) slot.hits += 1;
    this.draw();
  },

  tick(upTo) {
    // A new minute: the chart moves on (the oldest minute leaves it).
    const now = Math.max(Math.floor(Date.now() / 60000) * 60000, upTo || 0);
    if (!this.minutes.length) return;
    let last = this.minutes[this.minutes.length - 1].minute;
    while (last < now) {
      last += 60000;
      this.minutes.push({ minute: last, hits: 0 });
      this.minutes.shift();
    }
    this.draw();
  },

  draw() {
    const svg = $("chart");
    const most = Math.max(1, ...this.minutes.map((m) => m.hits));
    const width = 600 / Math.max(1, this.minutes.length);
    svg.replaceChildren(
      ...this.minutes.map((m, i) => {
        const height = (m.hits / most) * 115;
        const bar = document.createElementNS("http://www.w3.org/2000/svg", "rect");
        bar.setAttribute("x", String(i * width + 1));
        bar.setAttribute("width", String(Math.max(1, width - 2)));
        bar.setAttribute("y", String(120 - height));
        bar.setAttribute("height", String(height));
        const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
        title.textContent = new Date(m.minute).toLocaleTimeString() + ": " + m.hits;
        bar.append(title);
        return bar;
      }),
    );
    const total = this.minutes.reduce((sum, m) => sum + m.hits, 0);
    $("chart-caption").textContent = total + " hits in the last hour, at most " + most + " a minute";
  },
};

// ---------------------------------------------------------------------------------------------
// Contacts: search, and a contact's page

async function search(form) {
  const filter = {};
  const email = form.email.value.trim();
  const tag = form.tag.value.trim();
  const url = form.url.value.trim();
  if (email) filter.email = email;
  if (tag) filter.tag = tag;
  if (url) filter.urlContains = url;
  $("search-state").textContent = "searching...";
  try {
    const data = await gql(
      `query($filter: ContactFilter) { contacts(filter: $filter, first: 50) { totalCount
        edges { node { id email isAnonymous points tags lastActive } } } }`,
      { filter },
    );
    const found = data.contacts;
    $("search-state").textContent =
      found.totalCount + " contact" + (found.totalCount === 1 ? "" : "s") + (found.totalCount > 50 ? " (the 50 most recent shown)" : "");
    $("results").replaceChildren(
      ...found.edges.map(({ node }) =>
        el(
          "tr",
          { class: "contact-row" },
          el("td", {}, el("a", { href: "#contact/" + encodeURIComponent(node.id) }, node.email || "anonymous " + node.id.slice(-6))),
          el("td", { class: "number" }, node.points),
          el("td", {}, node.tags.map((t) => el("span", { class: "tag" }, t))),
          el("td", { class: "time" }, when(node.lastActive)),
        ),
      ),
    );
  } catch (err) {
    $("search-state").textContent = "";
    handle(err);
  }
}

const CONTACT_QUERY = `query($id: ID!) { contact(id: $id) {
  id email isAnonymous points tags fields createdAt identifiedAt lastActive ipAddresses
  devices { trackingId createdAt lastSeen userAgent { browser browserVersion os osVersion deviceType }
            fingerprint { hash resolution timezoneOffset platform adblock doNotTrack } }
  timeline(first: 100) { edges { node { __typename
    ... on PageHit { occurredAt url title timeOnPage }
    ... on UtmRecorded { occurredAt url utm { source medium campaign content term } }
    ... on TagsChanged { occurredAt added removed }
    ... on FieldsUpdated { occurredAt fields }
    ... on ContactIdentified { occurredAt fields }
    ... on ContactMerged { occurredAt mergedId hitsMoved }
    ... on ContactUnmerged { occurredAt separatedFrom hitsReturned }
    ... on FormSubmitted { occurredAt formId formName values }
    ... on CustomActivity { occurredAt type properties }
    ... on PointsChanged { occurredAt delta total rule { name } }
    ... on TriggerFired { occurredAt trigger rule { name } }
  } } } } }`;

function describe(entry) {
  const list = (values) =>
    Object.entries(values || {})
      .filter(([, v]) => v !== null && v !== "")
      .map(([k, v]) => k + ": " + (typeof v === "string" ? v : JSON.stringify(v)))
      .join(", ");
  switch (entry.__typename) {
    case "PageHit":
      return ["Visited", (entry.title || "(no title)") + " - " + entry.url + (entry.timeOnPage ? " (" + Math.round(entry.timeOnPage) + " s)" : "")];
    case "UtmRecorded":
      return ["Came from a campaign", [entry.utm.source, entry.utm.medium, entry.utm.campaign].filter(Boolean).join(" / ") + " on " + entry.url];
    case "TagsChanged":
      return ["Tags", [entry.added.length ? "added " + entry.added.join(", ") : "", entry.removed.length ? "removed " + entry.removed.join(", ") : ""].filter(Boolean).join("; ")];
    case "FieldsUpdated":
      return ["Fields updated", list(entry.fields)];
    case "ContactIdentified":
      return ["Identified", list(entry.fields)];
    case "ContactMerged":
      return ["Merged", "contact " + entry.mergedId + " joined this one (" + entry.hitsMoved + " hits moved)"];
    case "ContactUnmerged":
      return ["Merge undone", "contact " + entry.separatedFrom + " separated (" + entry.hitsReturned + " hits returned)"];
    case "FormSubmitted":
      return ["Submitted a form", (entry.formName || "form " + entry.formId) + ": " + list(entry.values)];
    case "CustomActivity":
      return ["Activity", entry.type + (Object.keys(entry.properties || {}).length ? " (" + list(entry.properties) + ")" : "")];
    case "PointsChanged":
      return ["Points", (entry.delta > 0 ? "+" : "") + entry.delta + " (total " + entry.total + ")" + (entry.rule ? " by rule " + entry.rule.name : "")];
    case "TriggerFired":
      return ["Trigger", entry.trigger + (entry.rule ? " by rule " + entry.rule.name : "")];
    default:
      return [entry.__typename, ""];
  }
}

let shownContact = 0; // the newest request wins when answers cross

async function showContact(id) {
  const mine = ++shownContact;
  $("contact-title").textContent = "Contact";
  const body = $("contact-body");
  body.replaceChildren(el("p", { class: "muted" }, "loading..."));
  let contact;
  try {
    contact = (await gql(CONTACT_QUERY, { id })).contact;
  } catch (err) {
    if (mine !== shownContact) return;
    body.replaceChildren();
    handle(err);
    return;
  }
  if (mine !== shownContact) return;
  if (!contact) {
    body.replaceChildren(el("p", {}, "No such contact (erased?)."));
    return;
  }
  $("contact-title").textContent = contact.email || "Anonymous visitor " + contact.id.slice(-6);
  const tags = el(
    "div",
    { id: "contact-tags" },
    contact.tags.length ? "" : el("span", { class: "muted" }, "none"),
    contact.tags.map((tag) =>
      el(
        "span",
        { class: "tag" },
        tag,
        canWrite() &&
          el("button", { type: "button", title: "Remove " + tag, "aria-label": "Remove tag " + tag, onclick: () => retag(contact.id, [], [tag]) }, "x"),
      ),
    ),
  );
  const addTag =
    canWrite() &&
    el(
      "form",
      { id: "add-tag", class: "search", onsubmit: (e) => { e.preventDefault(); const name = e.target.tag.value.trim(); if (name) retag(contact.id, [name], []); } },
      el("label", {}, "Add a tag", el("input", { name: "tag", required: "" })),
      el("button", { type: "submit" }, "Add"),
    );
  const fields = el(
    "dl",
    { class: "kv" },
    Object.entries(contact.fields || {}).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, typeof v === "string" ? v : JSON.stringify(v))]),
  );
  const summary = el(
    "dl",
    { class: "kv" },
    el("dt", {}, "Id"), el("dd", {}, contact.id),
    el("dt", {}, "Points"), el("dd", {}, contact.points),
    el("dt", {}, "Created"), el("dd", {}, when(contact.createdAt)),
    el("dt", {}, "Identified"), el("dd", {}, contact.identifiedAt ? when(contact.identifiedAt) : "no (anonymous)"),
    el("dt", {}, "Last active"), el("dd", {}, when(contact.lastActive)),
    el("dt", {}, "IP addresses"), el("dd", {}, contact.ipAddresses.join(", ") || "none kept"),
  );
  const devices = contact.devices.map((d) => {
    const fp = d.fingerprint || {};
    const ua = d.userAgent;
    return el(
      "dl",
      { class: "kv device" },
      el("dt", {}, "Device"), el("dd", {}, [ua.browser, ua.browserVersion, "on", ua.os, ua.osVersion, ua.deviceType && "(" + ua.deviceType + ")"].filter(Boolean).join(" ")),
      el("dt", {}, "Tracking id"), el("dd", {}, d.trackingId),
      el("dt", {}, "Seen"), el("dd", {}, when(d.createdAt) + " - " + when(d.lastSeen)),
      el("dt", {}, "Fingerprint"),
      el("dd", {}, fp.hash ? [fp.hash.slice(0, 12), fp.resolution, fp.platform, fp.timezoneOffset !== null && fp.timezoneOffset !== undefined ? "UTC offset " + fp.timezoneOffset : ""].filter(Boolean).join(", ") + " (evidence, not identity)" : "none sent"),
    );
  });
  const timeline = el(
    "table",
    { class: "list", id: "timeline" },
    el("thead", {}, el("tr", {}, el("th", {}, "When"), el("th", {}, "What"), el("th", {}, "Details"))),
    el(
      "tbody",
      {},
      contact.timeline.edges.map(({ node }) => {
        const [what, details] = describe(node);
        return el("tr", { class: "entry" }, el("td", { class: "time" }, when(node.occurredAt)), el("td", {}, what), el("td", {}, details));
      }),
    ),
  );
  body.replaceChildren(
    el(
      "div",
      { class: "grid" },
      el("div", {}, el("h3", {}, "Summary"), summary),
      el("div", {}, el("h3", {}, "Fields"), fields.children.length ? fields : el("p", { class: "muted" }, "none")),
      el("div", {}, el("h3", {}, "Tags"), tags, addTag),
      el("div", {}, el("h3", {}, "Devices"), devices.length ? devices : el("p", { class: "muted" }, "none")),
    ),
    el("h3", {}, "Timeline (newest first)"),
    timeline,
  );
}

async function retag(id, add, remove) {
  try {
    await gql("mutation($id: ID!, $add: [String!], $remove: [String!]) { tagContact(id: $id, add: $add, remove: $remove) { id } }", { id, add, remove });
    showError("");
    await showContact(id);
  } catch (err) {
    handle(err);
  }
}

// ---------------------------------------------------------------------------------------------
// Check your site: the snippet, and what the tracking endpoints received per site

function snippet() {
  return [
    "<script>",
    "    (function(w,d,t,u,n,a,m){w['MauticTrackingObject']=n;",
    "        w[n]=w[n]||function(){(w[n].q=w[n].q||[]).push(arguments)},a=d.createElement(t),",
    "        m=d.getElementsByTagName(t)[0];a.async=1;a.src=u;m.parentNode.insertBefore(a,m)",
    "    })(window,document,'script','" + location.origin + "/mtc.js','mt');",
    "",
    "    mt('send', 'pageview');",
    "</script>",
  ].join("\n");
}

const EXPLAIN = {
  cors: "origin not in CM_CORS_ORIGINS: recorded, but the page's script cannot read the answer (add the origin)",
};

async function loadSites() {
  try {
    const data = await gql("{ sites(first: 50) { origin lastHeardAt recorded outcomes { outcome count lastAt lastUrl } } }");
    $("no-sites").hidden = data.sites.length > 0;
    $("sites").replaceChildren(
      ...data.sites.map((site) =>
        el(
          "tr",
          { class: "site" },
          el("td", {}, site.origin),
          el("td", { class: "time" }, when(site.lastHeardAt)),
          el("td", { class: "number" }, site.recorded),
          el(
            "td",
            {},
            site.outcomes
              .filter((o) => o.outcome !== "recorded")
              .map((o) =>
                el("div", { class: o.outcome === "cors" ? "error" : "" }, o.count + " x " + (EXPLAIN[o.outcome] || o.outcome) + (o.lastUrl ? " (last: " + o.lastUrl + ")" : "")),
              ),
          ),
        ),
      ),
    );
  } catch (err) {
    handle(err);
  }
}

// ---------------------------------------------------------------------------------------------
// Views and sign-in

let siteTimer = null;

function route() {
  const hash = location.hash.slice(1) || "live";
  const [view, arg] = hash.split("/");
  for (const section of document.querySelectorAll(".view")) section.hidden = true;
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("current", link.dataset.view === view || (view === "contact" && link.dataset.view === "contacts"));
  }
  clearInterval(siteTimer);
  showError("");
  if (!state.role) {
    $("sign-in").hidden = false;
    return;
  }
  if (view === "contact" && arg) {
    $("contact").hidden = false;
    let id = "";
    try {
      id = decodeURIComponent(arg);
    } catch (err) {
      showError("not a contact id in the address: " + arg);
      return;
    }
    showContact(id);
  } else if (view === "contacts") {
    $("contacts").hidden = false;
    if (!$("results").children.length) search($("search")); // the most recent contacts first
  } else if (view === "site") {
    $("site").hidden = false;
    $("snippet").textContent = snippet();
    loadSites();
    siteTimer = setInterval(loadSites, 5000);
  } else {
    $("live").hidden = false;
  }
}

function handle(err) {
  if (err instanceof SignedOut) {
    signOut(err.message);
  } else {
    showError(err.message);
  }
}

let retrySignIn = null;

async function signIn(key) {
  clearTimeout(retrySignIn);
  const button = $("sign-in-button");
  button.disabled = true;
  state.key = key;
  try {
    const data = await gql("{ viewer { name role } }");
    state.role = data.viewer.role;
    state.name = data.viewer.name;
  } catch (err) {
    state.key = "";
    state.role = "";
    if (err instanceof SignedOut) {
      sessionStorage.removeItem(KEY_STORAGE);
      $("sign-in-error").textContent = "That key is not valid (revoked, or mistyped).";
    } else {
      // The server did not answer as it should (restarting?): the key is kept, tried again.
      $("sign-in-error").textContent = "Could not sign in: " + err.message + ". Trying again in 5 s...";
      if (sessionStorage.getItem(KEY_STORAGE) === key) retrySignIn = setTimeout(() => signIn(key), 5000);
    }
    button.disabled = false;
    return false;
  } finally {
    button.disabled = false;
  }
  sessionStorage.setItem(KEY_STORAGE, key);
  $("sign-in-error").textContent = "";
  $("nav").hidden = false;
  $("who").hidden = false;
  $("who-name").textContent = state.name + " (" + state.role + ")";
  document.body.dataset.role = state.role;
  live.start();
  route();
  return true;
}

function signOut(reason) {
  clearTimeout(retrySignIn);
  live.stop();
  // Nothing of this key's stays for the next one.
  $("results").replaceChildren();
  $("search-state").textContent = "";
  $("contact-body").replaceChildren();
  $("sites").replaceChildren();
  sessionStorage.removeItem(KEY_STORAGE);
  Object.assign(state, { key: "", role: "", name: "" });
  $("nav").hidden = true;
  $("who").hidden = true;
  delete document.body.dataset.role;
  $("sign-in-error").textContent = reason || "";
  route();
}

$("sign-in-button").disabled = false;
$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("api-key");
  if (await signIn(input.value.trim())) input.value = "";
});
$("sign-out").addEventListener("click", () => signOut(""));
$("search").addEventListener("submit", (event) => {
  event.preventDefault();
  search(event.target);
});
window.addEventListener("hashchange", route);

if (state.key) signIn(state.key);
else route();

// The live page: sign in, place an order, and watch it cross the seams.
//
// Plain JavaScript, no build step, no dependency: everything comes from this origin (the
// page's Content-Security-Policy allows nothing else). The page is a client of the public
// API like any other: a bearer token from POST /api/auth/token, kept in this tab's session
// storage and sent only in the Authorization header. The live stream is read with fetch()
// and a small text/event-stream parser, because EventSource cannot send that header.

const MAX_ROWS = 40; // rows in the live table: about two screens of it (a frame paints every row it has)
const RECENT = 1000; // observations kept in memory, for a journey that starts after they came
const HOP_SAMPLES = 50; // the live median of a hop is over its last 50 samples
const SAMPLE_CART = { currency: "EUR", items: [{ sku: "book", quantity: 2, unit_price: 1250 }] };
const TOKEN_KEY = "seams.token";
const SVG = "http://www.w3.org/2000/svg";

const state = {
  token: null,
  user: null, // {id, role, name}
  stream: null, // the AbortController of the open stream
  paused: false,
  unseen: 0,
  split: false, // an observation came from a module process: the bus is NATS
  edges: new Map(), // "Type→consumer" -> the SVG group of that edge
  nodes: new Map(), // module name -> its SVG group
  hops: new Map(), // "Type→consumer|where" -> {type, consumer, where, samples}
  bench: [], // the last bench run's hops, from /api/benchmarks
  journey: null, // the journey on show: {orderId, flows (correlation ids), seen, status, ...}
  recent: [], // the last observations the stream brought
  // The modules serving the API paths this page calls, from the topology's HTTP edges: the
  // one owning /api/orders changes an order's status, the one owning /api/notifications
  // sends the notice.
  owner: { orders: "orders", notifications: "notifications" },
  orders: new Map(), // order id -> order, for "Your orders"
  orderFlows: new Set(), // the correlation ids of the flows of those orders seen here
  shownOrders: "", // what "Your orders" shows now, to redraw it only when that changes
  watchTimer: null,
  contract: null, // the event type whose contract is shown
};

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- the API

class Problem extends Error {
  constructor(status, detail, retryAfter) {
    super(detail);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/** One call of the API as the signed-in user; the JSON answer, or a Problem. */
async function api(method, path, body, extraHeaders = {}) {
  const headers = { Accept: "application/json", ...extraHeaders };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { detail: text };
  }
  if (!response.ok) {
    if (response.status === 401 && state.token && path !== "/api/auth/token") {
      signOut("Your session ended: log in again.");
    }
    const detail = (data && (data.detail || data.title)) || `${response.status}`;
    throw new Problem(response.status, detail, Number(response.headers.get("Retry-After")) || 0);
  }
  return { data, headers: response.headers, status: response.status };
}

const get = async (path) => (await api("GET", path)).data;

/** Every item of a paged list, following next_cursor (at most `pages` pages). */
async function allPages(path, pages = 5) {
  const items = [];
  let cursor = null;
  for (let page = 0; page < pages; page += 1) {
    const separator = path.includes("?") ? "&" : "?";
    const query = `limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
    const answer = await get(`${path}${separator}${query}`);
    items.push(...answer.items);
    cursor = answer.next_cursor;
    if (!cursor) break;
  }
  return items;
}

// ---------------------------------------------------------------- signing in

/** What a token says about its holder (for the page's display only: the server decides). */
function claims(token) {
  const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  return JSON.parse(atob(payload.padEnd(payload.length + ((4 - (payload.length % 4)) % 4), "=")));
}

async function logIn(email, password) {
  const { data } = await api("POST", "/api/auth/token", { email, password });
  await signIn(data.access_token);
}

async function signIn(token) {
  state.token = token;
  const said = claims(token);
  const role = (said.extras && said.extras.role) || said.role || "user";
  state.user = { id: said.sub, role, name: said.sub };
  try {
    state.user.name = (await get(`/api/users/${encodeURIComponent(said.sub)}`)).name;
  } catch (error) {
    if (error.status === 401) return; // signOut has run
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  showSignedIn();
}

function signOut(why = "") {
  if (state.stream) state.stream.abort();
  clearInterval(state.watchTimer);
  Object.assign(state, { token: null, user: null, stream: null, journey: null, watchTimer: null, contract: null });
  $("contract-body").replaceChildren();
  state.orders.clear();
  state.orderFlows.clear();
  state.shownOrders = "";
  sessionStorage.removeItem(TOKEN_KEY);
  $("who").hidden = true;
  $("signed-in").hidden = true;
  $("sign-in").hidden = false;
  $("welcome").hidden = false;
  $("sign-in-answer").textContent = why;
}

function showSignedIn() {
  const admin = state.user.role === "admin";
  $("who-name").textContent = `Signed in as ${state.user.name}${admin ? " (admin: you see every flow)" : " (you see your own orders' flows)"}`;
  $("who").hidden = false;
  $("sign-in").hidden = true;
  $("welcome").hidden = true;
  $("signed-in").hidden = false;
  $("faults").hidden = !admin;
  $("sign-in-answer").textContent = "";
  clearStream();
  clearJourney();
  loadTopology();
  loadBenchmarks();
  refreshOrders();
  openStream();
  if (admin) {
    loadFaults();
    loadDeadLetters();
    refreshWatchState();
    state.watchTimer = setInterval(refreshWatchState, 1000);
  }
}

function wireSignIn() {
  $("log-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    try {
      await logIn(form.email.value, form.password.value);
      form.reset();
    } catch (error) {
      $("sign-in-answer").textContent = `Log in refused: ${error.message}`;
    }
  });
  $("register-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const user = { name: form.name.value, email: form.email.value, password: form.password.value };
    try {
      await api("POST", "/api/users", user);
      await logIn(user.email, user.password);
      form.reset();
    } catch (error) {
      $("sign-in-answer").textContent = `Registration refused: ${error.message}`;
    }
  });
  $("log-out").addEventListener("click", () => signOut("Logged out."));
}

// ---------------------------------------------------------------- the event stream

/**
 * A text/event-stream parser (the WHATWG "server-sent events" format): lines of
 * `field: value`, an empty line ends an event, a line starting with ":" is a comment.
 */
export class EventStreamParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = "";
    this.afterCarriageReturn = false;
    this.reset();
  }

  reset() {
    this.type = "";
    this.data = [];
  }

  push(text) {
    if (!text) return;
    // A line may end in "\r\n" cut between two chunks: the "\r" ends it at once, and the
    // "\n" that starts the next chunk is not a second, empty line.
    const chunk = this.afterCarriageReturn && text.startsWith("\n") ? text.slice(1) : text;
    this.afterCarriageReturn = text.endsWith("\r");
    this.buffer += chunk;
    const lines = this.buffer.split(/\r\n|\r|\n/);
    this.buffer = lines.pop();
    for (const line of lines) this.line(line);
  }

  line(line) {
    if (line === "") {
      if (this.data.length) {
        this.onEvent({ type: this.type || "message", data: this.data.join("\n"), id: this.id });
      }
      this.reset();
      return;
    }
    if (line.startsWith(":")) return; // a comment: the server's heartbeat
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.type = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id") this.id = value;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function setStreamState(text, live = false) {
  const shown = $("stream-state");
  shown.textContent = text;
  shown.classList.toggle("live", live);
}

/** Read the stream until signed out, reconnecting with a growing pause when it ends. */
async function openStream() {
  const controller = new AbortController();
  state.stream = controller;
  let pause = 500;
  while (!controller.signal.aborted) {
    try {
      const response = await fetch("/api/watch/stream", {
        headers: { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" },
        signal: controller.signal,
        cache: "no-store",
      });
      if (response.status === 401) {
        signOut("Your session ended: log in again.");
        return;
      }
      if (!response.ok) throw new Error(`the stream answered ${response.status}`);
      clearStream(); // the server replays its recent observations first
      setStreamState("live", true);
      pause = 500;
      await readStream(response.body.getReader(), new EventStreamParser(onServerEvent));
      setStreamState("reconnecting: the stream ended");
    } catch (error) {
      if (controller.signal.aborted) return;
      setStreamState(`reconnecting: ${error.message}`);
    }
    await sleep(pause);
    pause = Math.min(pause * 2, 10000);
  }
}

/** Every chunk of the stream through the parser, as it comes (one decoder, no pipe). */
async function readStream(reader, parser) {
  const decoder = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    received.chunks += 1;
    parser.push(decoder.decode(value, { stream: true }));
  }
}

// What the page received, for bench/page.py (read with page.evaluate; nothing shows it).
const received = { chunks: 0, events: 0 };
window.seamsPage = { received };

function onServerEvent({ type, data }) {
  let body;
  try {
    body = JSON.parse(data);
  } catch {
    return; // not an observation
  }
  received.events += 1;
  if (type === "dropped") {
    frame.dropped = body.dropped;
    scheduleRender();
    return;
  }
  body.kind = type;
  observe(body);
}

/** Everything one observation changes: numbers and queues here, the DOM at the next frame. */
function observe(observation) {
  state.recent.push(observation);
  if (state.recent.length > 2 * RECENT) state.recent = state.recent.slice(-RECENT);
  if (observation.process && observation.process !== "monolith" && !state.split) {
    state.split = true;
    const bus = document.querySelector("#diagram .bus-label");
    if (bus) bus.textContent = busLabel();
  }
  if (observation.kind === "published" && state.orders.has(observation.aggregate_id)) {
    state.orderFlows.add(observation.correlation_id);
  }
  addRow(observation);
  lightUp(observation);
  recordHop(observation);
  followJourney(observation);
  if (observation.kind === "dead_lettered" && state.user && state.user.role === "admin") {
    soon("letters", loadDeadLetters);
  }
  if (observation.kind === "handled" && observation.consumer === state.owner.orders && isMine(observation)) {
    soon("orders", refreshOrders); // the status of an order in "Your orders" may have changed
  }
}

// The page is drawn in one animation frame at most every RENDER_MS, whatever the rate of
// observations (docs/decisions/0034-page-cost.md): a busy bus sends thousands a second, and
// a page that laid itself out, painted and composited for each would take the CPU of the
// system it shows. Between frames only numbers and bounded queues change: the newest rows
// (nobody reads 100 rows a second), the edges to light, the hops whose median moved. No
// frame is drawn while the tab is hidden (the browser runs no animation frame then); the
// first one after it shows the newest.
const RENDER_MS = 500; // two frames a second: the table and the edges stay readable, the CPU stays free
const ROWS_PER_RENDER = 20;
const frame = {
  timer: 0,
  rows: [], // the newest observations not drawn yet, at most ROWS_PER_RENDER
  flashes: new Map(), // edge -> "sent" | "handled" | "failed"
  lit: new Map(), // edge -> when it goes dark (performance.now())
  price: false, // a hop's median changed
  dropped: 0, // what the server said this stream missed, in all
};

function scheduleRender() {
  if (!frame.timer) frame.timer = setTimeout(() => requestAnimationFrame(render), RENDER_MS);
}

function render() {
  frame.timer = 0;
  if (frame.rows.length) drawRows(frame.rows.splice(0));
  drawEdges(performance.now());
  if (frame.price) drawPrice();
  if (frame.dropped) showDropped(frame.dropped);
  if (state.paused) setText($("stream-note"), `${state.unseen} new while paused`);
  if (frame.lit.size) scheduleRender(); // to turn the lit edges off in time
}

/** Whether an observation is of the flow of an order in "Your orders" (a user's stream
 * carries nothing else; an admin's carries everyone's). */
function isMine(o) {
  if (state.user.role !== "admin") return true;
  return state.orderFlows.has(o.correlation_id) || state.orders.has(o.aggregate_id);
}

/** Set an element's text only when it changes (a write of the same text still costs a
 * layout). */
function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

function showDropped(count) {
  const dropped = $("dropped");
  dropped.hidden = false;
  setText(dropped, `${count} dropped: this page fell behind, the bus did not wait for it`);
}

/** Run `task` once within a second, however often it is asked for meanwhile. */
const throttled = new Map();
function soon(name, task, delay = 1000) {
  if (throttled.has(name)) return;
  throttled.set(name, setTimeout(() => {
    throttled.delete(name);
    task();
  }, delay));
}

// ---------------------------------------------------------------- the live table

const short = (id) => (id ? String(id).slice(-8) : "");
const ms = (value) => {
  if (value === null || value === undefined) return "";
  const n = Number(value);
  return n < 10 ? n.toFixed(2) : n.toFixed(1);
};

function fromTo(o) {
  if (o.kind === "request") return "client → gateway";
  if (o.kind === "published") return `${o.producer} → bus`;
  return `${o.producer || "?"} → ${o.consumer || "?"}`;
}

function outcome(o) {
  switch (o.kind) {
    case "request":
      return String(o.status ?? "");
    case "failed":
      return `failed, will retry: ${o.error || ""}`;
    case "dead_lettered":
      return `dead letter: ${o.error || ""}`;
    case "parked":
      return "parked behind a dead letter";
    default:
      return o.kind;
  }
}

function timing(o) {
  if (o.hop_ms !== null && o.hop_ms !== undefined) return `${ms(o.ms)} (hop ${ms(o.hop_ms)})`;
  return ms(o.ms);
}

function addRow(o) {
  if (state.paused) {
    state.unseen += 1;
  } else {
    frame.rows.push(o);
    if (frame.rows.length > 2 * ROWS_PER_RENDER) frame.rows.splice(0, ROWS_PER_RENDER);
  }
  scheduleRender();
}

const CELLS = 9; // #, kind, what, from → to, aggregate, correlation, outcome, attempt, ms
const WHAT = 2; // the cell naming the request or the event type (a button for an event)

/**
 * The newest rows on top. A table of MAX_ROWS rows reuses its rows: the oldest are taken
 * from the bottom, written over and put on top, so a busy stream creates no elements and
 * leaves no garbage, and each cell keeps its one text node.
 */
function drawRows(observations) {
  const rows = $("stream-rows");
  const newest = observations.slice(-ROWS_PER_RENDER).reverse();
  const fragment = document.createDocumentFragment();
  for (const o of newest) {
    const row = rows.childElementCount + fragment.childElementCount >= MAX_ROWS ? rows.lastElementChild : emptyRow();
    fillRow(row, o);
    fragment.append(row);
  }
  rows.prepend(fragment);
}

function emptyRow() {
  const row = document.createElement("tr");
  for (let i = 0; i < CELLS; i += 1) row.append(document.createElement("td"));
  const pick = document.createElement("button");
  pick.type = "button";
  pick.className = "pick";
  row.cells[WHAT].append(pick);
  return row;
}

function fillRow(row, o) {
  row.className = `kind-${o.kind}`;
  row.title = o.process ? `process: ${o.process}` : "";
  const texts = [o.seq, o.kind, null, fromTo(o), short(o.aggregate_id), short(o.correlation_id), outcome(o), o.attempt ?? "", timing(o)];
  for (let i = 0; i < CELLS; i += 1) if (i !== WHAT) setText(row.cells[i], String(texts[i] ?? ""));
  const pick = row.cells[WHAT].firstElementChild;
  const what = row.cells[WHAT].lastChild === pick ? null : row.cells[WHAT].lastChild;
  if (o.type) {
    pick.hidden = false;
    setText(pick, o.type);
    pick.dataset.type = o.type;
    if (what) what.remove();
  } else {
    pick.hidden = true;
    const text = `${o.method} ${o.path}`;
    if (what) what.nodeValue = text;
    else row.cells[WHAT].append(text);
  }
}

function clearStream() {
  frame.rows = [];
  $("stream-rows").replaceChildren();
  state.unseen = 0;
  $("stream-note").textContent = "";
}

function wireStream() {
  $("stream-pause").addEventListener("click", (event) => {
    state.paused = !state.paused;
    if (state.paused) render(); // what came before the pause is shown, then nothing more
    event.currentTarget.textContent = state.paused ? "Resume" : "Pause";
    event.currentTarget.setAttribute("aria-pressed", String(state.paused));
    if (!state.paused) {
      state.unseen = 0;
      $("stream-note").textContent = "";
    }
  });
  $("stream-clear").addEventListener("click", clearStream);
  // One listener for every row's event type: selecting it shows that event's contract.
  $("stream-rows").addEventListener("click", (event) => {
    const pick = event.target.closest("button.pick");
    if (pick) showContract(pick.dataset.type, pick);
  });
}

// ---------------------------------------------------------------- the topology

function node(tag, attributes = {}, parent = null, text = null) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  if (text !== null) element.textContent = text;
  if (parent) parent.append(element);
  return element;
}

function busLabel() {
  return state.split
    ? "event bus: NATS JetStream (each module in its own process)"
    : "event bus: in process (one process, the same envelopes)";
}

async function loadTopology() {
  try {
    const topology = await get("/api/topology");
    for (const path of Object.keys(state.owner)) {
      const edge = topology.edges.find((e) => e.kind === "http" && e.label === `/api/${path}`);
      if (edge) state.owner[path] = edge.target;
    }
    drawTopology(topology);
  } catch (error) {
    $("diagram").textContent = `The topology is not available here: ${error.message}`;
  }
}

/**
 * Columns from the data: the gateway over every module, each module over its store, and
 * below them the bus, one row per event edge (publisher → consumer), like a sequence
 * diagram, so labels never overlap and a fifth module simply adds a column.
 */
function drawTopology(topology) {
  const modules = topology.modules;
  const column = Object.fromEntries(modules.map((m, i) => [m.name, i]));
  const edges = topology.edges
    .filter((e) => e.kind === "event" && e.source in column && e.target in column)
    .sort((a, b) => column[a.source] - column[b.source] || a.label.localeCompare(b.label) || column[a.target] - column[b.target]);
  const width = Math.max(560, 40 + modules.length * 150);
  const step = (width - 40) / Math.max(modules.length, 1);
  const x = (name) => 20 + step * (column[name] + 0.5);
  const busTop = 214;
  const rowHeight = 26;
  const height = busTop + 40 + edges.length * rowHeight + 12;
  const svg = node("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": "diagram-title" });
  node("title", { id: "diagram-title" }, svg, "The gateway, the modules, their stores and the events between them");
  const defs = node("defs", {}, svg);
  const marker = node("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "9", markerHeight: "9", markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" }, defs);
  node("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow-head" }, marker);

  const gateway = node("g", { class: "gateway" }, svg);
  node("rect", { x: 20, y: 8, width: width - 40, height: 36, rx: 6 }, gateway);
  node("text", { x: width / 2, y: 31, "text-anchor": "middle" }, gateway, "API gateway: the one entry point (auth, limits, request ids)");

  node("rect", { x: 12, y: busTop, width: width - 24, height: height - busTop - 6, rx: 8, class: "bus" }, svg);
  node("text", { x: 22, y: busTop + 18, class: "bus-label" }, svg, busLabel());

  state.nodes.clear();
  for (const module of modules) {
    const cx = x(module.name);
    node("line", { x1: cx, y1: 44, x2: cx, y2: 78, class: "http" }, svg);
    node("line", { x1: cx, y1: 200, x2: cx, y2: height - 10, class: "lifeline" }, svg);
    const group = node("g", { class: "module", "data-module": module.name }, svg);
    node("rect", { x: cx - 62, y: 78, width: 124, height: 44, rx: 6 }, group);
    node("text", { x: cx, y: 97, "text-anchor": "middle", class: "name" }, group, module.name);
    node("text", { x: cx, y: 113, "text-anchor": "middle", class: "small" }, group, `/api/${module.name}`);
    node("text", { x: cx, y: 74, "text-anchor": "middle", class: "badge" }, group, "");
    state.nodes.set(module.name, group);
    const store = node("g", { class: "store" }, svg);
    node("line", { x1: cx, y1: 122, x2: cx, y2: 140, class: "http" }, svg);
    node("path", { d: `M ${cx - 55} 146 v 40 a 55 8 0 0 0 110 0 v -40`, class: "cylinder" }, store);
    node("ellipse", { cx, cy: 146, rx: 55, ry: 8, class: "cylinder" }, store);
    node("text", { x: cx, y: 171, "text-anchor": "middle", class: "small" }, store, `${module.name} store`);
    node("text", { x: cx, y: 185, "text-anchor": "middle", class: "small" }, store, module.store.kind);
  }

  state.edges.clear();
  edges.forEach((edge, row) => {
    const y = busTop + 44 + row * rowHeight;
    const from = x(edge.source);
    const to = x(edge.target);
    const direction = to > from ? 1 : -1;
    const group = node("g", {
      class: `edge${edge.label === state.contract ? " selected" : ""}`,
      "data-type": edge.label,
      "data-consumer": edge.target,
      tabindex: "0",
      role: "button",
      "aria-pressed": String(edge.label === state.contract),
      "aria-label": `${edge.label}, ${edge.source} to ${edge.target}: show its contract`,
    }, svg);
    node("line", { x1: from, y1: y, x2: to - direction * 4, y2: y, "marker-end": "url(#arrow)" }, group);
    node("line", { x1: from, y1: y - 4, x2: to, y2: y - 4, class: "hit" }, group); // easier to click
    node("text", { x: (from + to) / 2, y: y - 5, "text-anchor": "middle" }, group, edge.label);
    wireEdge(group);
    state.edges.set(`${edge.label}→${edge.target}`, group);
  });
  $("diagram").replaceChildren(svg);
}

const LIT_MS = 700; // how long an edge stays lit after the last event that crossed it
const LIT = ["lit-sent", "lit", "lit-failed"];

/**
 * Light an edge up for LIT_MS: a class on, then off at a later frame (no animation
 * running every frame, no timer per edge: on a busy bus every edge is crossed many times
 * a second, and repainting the drawing 60 times a second would take the CPU of the system
 * it shows). Crossed again while lit, it stays lit longer; its class changes only when its
 * colour does.
 */
function drawEdges(now) {
  for (const [edge, name] of frame.flashes) {
    const lit = name === "handled" ? "lit" : name === "failed" ? "lit-failed" : "lit-sent";
    if (!edge.classList.contains(lit)) {
      edge.classList.remove(...LIT);
      edge.classList.add(lit);
    }
    frame.lit.set(edge, now + LIT_MS);
  }
  frame.flashes.clear();
  for (const [edge, until] of frame.lit) {
    if (until > now) continue;
    edge.classList.remove(...LIT);
    frame.lit.delete(edge);
  }
}

function lightUp(o) {
  if (o.kind === "published") {
    for (const edge of state.edges.values()) {
      if (edge.dataset.type === o.type && !frame.flashes.has(edge)) frame.flashes.set(edge, "sent");
    }
    scheduleRender();
    return;
  }
  const edge = state.edges.get(`${o.type}→${o.consumer}`);
  if (!edge) return;
  if (o.kind === "handled") frame.flashes.set(edge, "handled");
  else if (o.kind === "failed" || o.kind === "dead_lettered" || o.kind === "parked") frame.flashes.set(edge, "failed");
  scheduleRender();
}

// ---------------------------------------------------------------- an event's contract

// The AsyncAPI document (docs/decisions/0026-event-versions.md), fetched once from this
// origin the first time an event type is selected, then kept: the contracts do not change
// while the server runs.
let asyncapi = null;

function loadContracts() {
  asyncapi ||= get("/schema/asyncapi.json").catch((error) => {
    asyncapi = null; // a later selection asks again
    throw error;
  });
  return asyncapi;
}

/** A schema with every local $ref replaced by what it points to (a cycle is left as a $ref). */
function resolved(schema, document, seen = new Set()) {
  if (Array.isArray(schema)) return schema.map((item) => resolved(item, document, seen));
  if (!schema || typeof schema !== "object") return schema;
  const ref = schema.$ref;
  if (typeof ref === "string" && ref.startsWith("#/") && !seen.has(ref)) {
    const target = ref.slice(2).split("/").reduce((node, key) => node?.[key], document);
    if (target !== undefined) return resolved(target, document, new Set([...seen, ref]));
  }
  return Object.fromEntries(Object.entries(schema).map(([key, value]) => [key, resolved(value, document, seen)]));
}

/** What the document says of one event type: its version, payload, producer and readers. */
function contractOf(document, type) {
  const message = document.components?.messages?.[type];
  if (!message) return null;
  const channel = `#/channels/${type}`;
  const operations = Object.entries(document.operations || {}).filter(([, op]) => op.channel?.$ref === channel);
  const module = (key, verb) => key.slice(0, key.indexOf(`_${verb}_`));
  const producer = operations.find(([, op]) => op.action === "send");
  return {
    type,
    version: message.headers?.properties?.version?.const,
    address: document.channels?.[type]?.address,
    producer: producer ? module(producer[0], "sends") : null,
    consumers: operations
      .filter(([, op]) => op.action === "receive")
      .map(([key, op]) => ({ name: module(key, "receives"), versions: op["x-seams-reads-versions"] || [] }))
      .sort((a, b) => a.name.localeCompare(b.name)),
    payload: resolved(message.payload, document),
    headers: message.headers,
  };
}

/** Show the contract of an event type; `from` is what was selected (an edge or a row). */
async function showContract(type, from = null) {
  state.contract = type;
  for (const edge of state.edges.values()) {
    const selected = edge.dataset.type === type;
    edge.classList.toggle("selected", selected);
    edge.setAttribute("aria-pressed", String(selected));
  }
  const body = $("contract-body");
  let contract;
  try {
    contract = contractOf(await loadContracts(), type);
  } catch (error) {
    body.replaceChildren(paragraph(`The contracts are not available: ${error.message}`));
    return;
  }
  if (state.contract !== type) return; // another was selected meanwhile
  body.replaceChildren(...(contract ? contractView(contract) : [paragraph(`${type} is not in /schema/asyncapi.json.`)]));
  if (from) $("contract").scrollIntoView({ block: "nearest" });
}

function paragraph(text, className = "note") {
  const p = document.createElement("p");
  p.className = className;
  p.textContent = text;
  return p;
}

function contractView(contract) {
  const title = document.createElement("h3");
  title.id = "contract-title";
  title.textContent = `${contract.type} v${contract.version}`;
  const who = contract.producer
    ? `Published by ${contract.producer}, through its outbox, always as v${contract.version} (the newest).`
    : "No module here publishes it.";
  const readers = document.createElement("ul");
  readers.className = "readers";
  for (const consumer of contract.consumers) {
    const item = document.createElement("li");
    const [first, last] = [consumer.versions[0], consumer.versions.at(-1)];
    const versions = first === last ? `v${first}` : `v${first} to v${last}`;
    item.textContent = `${consumer.name} reads ${versions}: an older version is upcast to the newest first; a newer one is parked until ${consumer.name} is upgraded, never misread`;
    readers.append(item);
  }
  if (!contract.consumers.length) readers.append(paragraph("No module here consumes it."));
  const payload = document.createElement("pre");
  payload.className = "schema";
  payload.setAttribute("aria-label", `${contract.type} payload JSON Schema`);
  payload.textContent = JSON.stringify(contract.payload, null, 2);
  const headers = document.createElement("details");
  const summary = document.createElement("summary");
  summary.textContent = "The envelope it travels in (headers)";
  const headerSchema = document.createElement("pre");
  headerSchema.className = "schema";
  headerSchema.textContent = JSON.stringify(contract.headers, null, 2);
  headers.append(summary, headerSchema);
  return [
    title,
    paragraph(who, ""),
    paragraph(contract.address ? `Channel ${contract.address} (the NATS subject in split mode).` : ""),
    heading("Read by"),
    readers,
    heading("Payload (JSON Schema)"),
    payload,
    headers,
  ];
}

function heading(text) {
  const h = document.createElement("h4");
  h.textContent = text;
  return h;
}

/** An edge of the topology is selected by a click, or by Enter or Space when focused. */
function wireEdge(group) {
  group.addEventListener("click", () => showContract(group.dataset.type, group));
  group.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" && event.key !== " ") return;
    event.preventDefault();
    showContract(group.dataset.type, group);
  });
}

// ---------------------------------------------------------------- the price of a boundary

function where(process) {
  return !process || process === "monolith" ? "in process" : "over NATS";
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

function recordHop(o) {
  if (o.kind !== "handled" || o.hop_ms === null || o.hop_ms === undefined) return;
  const place = where(o.process);
  const key = `${o.type}→${o.consumer}|${place}`;
  let hop = state.hops.get(key);
  if (!hop) {
    hop = { type: o.type, consumer: o.consumer, where: place, samples: [], seen: 0, row: null };
    state.hops.set(key, hop);
  }
  hop.samples[hop.seen % HOP_SAMPLES] = Number(o.hop_ms); // the last HOP_SAMPLES, in a ring
  hop.seen += 1;
  frame.price = true;
  scheduleRender();
}

function benchFor(hop) {
  const figures = state.bench.filter((b) => b.where === hop.where);
  return figures.find((b) => b.type === hop.type && b.consumer === hop.consumer) || figures.find((b) => !b.type) || null;
}

/** The price table: a row per hop, made once, its cells written only when they change. */
function drawPrice() {
  frame.price = false;
  const hops = [...state.hops.values()];
  const rows = $("price-rows");
  if (hops.some((hop) => !hop.row) || rows.childElementCount !== hops.length) {
    hops.sort((a, b) => a.type.localeCompare(b.type) || a.consumer.localeCompare(b.consumer) || a.where.localeCompare(b.where));
    for (const hop of hops) hop.row ||= priceRow();
    rows.replaceChildren(...hops.map((hop) => hop.row));
  }
  for (const hop of hops) {
    const bench = benchFor(hop);
    const texts = [`${hop.type} → ${hop.consumer}`, hop.where, ms(median(hop.samples)), String(hop.seen), bench ? `${ms(bench.p50_ms)} / ${ms(bench.p99_ms)}` : "—"];
    texts.forEach((text, i) => setText(hop.row.cells[i], text));
  }
}

function priceRow() {
  const row = document.createElement("tr");
  for (let i = 0; i < 5; i += 1) row.append(document.createElement("td"));
  return row;
}

async function loadBenchmarks() {
  try {
    const answer = await get("/api/benchmarks");
    state.bench = benchHops(answer);
    $("bench-note").textContent = benchNote(answer);
  } catch (error) {
    state.bench = [];
    $("bench-note").textContent = `No benchmark figures here (${error.message}): run bench/ with --record.`;
  }
  drawPrice();
}

/** The last bench run's hop figures (GET /api/benchmarks: {hops: {<transport>: figures}}). */
function benchHops(answer) {
  return Object.values((answer && answer.hops) || {}).map((figures) => ({
    ...figures,
    where: figures.transport === "nats" ? "over NATS" : "in process",
    type: null,
    consumer: null,
  }));
}

function benchNote(answer) {
  const runs = benchHops(answer);
  if (!runs.length) return "No bench run recorded yet: python bench/bus.py --record, python bench/split.py --record.";
  const lines = runs.map((run) => {
    const base = run.baseline ? `; ${run.baseline.name} in the same run: p50 ${ms(run.baseline.p50_ms)} ms` : "";
    return `${run.where}: p50 ${ms(run.p50_ms)} ms, p99 ${ms(run.p99_ms)} ms, ${Math.round(run.events_per_second)} events/s${base} (${run.recorded_at}, commit ${run.commit}, ${run.machine})`;
  });
  return `Last bench run, publish to a no-op handler (the live figures include each real handler's work): ${lines.join(" · ")}.`;
}

// ---------------------------------------------------------------- orders and their journeys

function orderLabel(order) {
  const total = (order.total / 100).toFixed(2);
  return `${short(order.id)} · ${order.status} · ${total} ${order.currency}`;
}

async function refreshOrders() {
  try {
    const orders = await allPages(`/api/orders?user_id=${encodeURIComponent(state.user.id)}`);
    state.orders = new Map(orders.map((o) => [o.id, o]));
    drawOrders();
  } catch (error) {
    state.shownOrders = "";
    $("orders").textContent = `Orders are not available: ${error.message}`;
  }
}

function drawOrders() {
  const newest = [...state.orders.values()].sort((a, b) => (a.id < b.id ? 1 : -1)).slice(0, 20);
  const shown = `${state.journey?.orderId}|${newest.map(orderLabel).join("|")}`;
  if (shown === state.shownOrders) return;
  state.shownOrders = shown;
  const items = newest.map((order) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = orderLabel(order);
    button.setAttribute("aria-pressed", String(state.journey?.orderId === order.id));
    button.addEventListener("click", () => showJourney(order.id, null));
    item.append(button);
    return item;
  });
  $("orders").replaceChildren(...items);
}

async function placeOrder(card) {
  const answer = $("order-answer");
  const body = { ...SAMPLE_CART, payment_token: card };
  const key = crypto.randomUUID(); // the same key on a retry: placed once, whatever happens
  for (let attempt = 1; ; attempt += 1) {
    try {
      const { data, headers, status } = await api("POST", "/api/orders", body, { "Idempotency-Key": key });
      answer.textContent = `${status}: order ${data.id} is ${data.status}, ${(data.total / 100).toFixed(2)} ${data.currency}. Payment follows through events, below.`;
      state.orders.set(data.id, data);
      state.orderFlows.add(headers.get("X-Request-ID"));
      drawOrders();
      await showJourney(data.id, headers.get("X-Request-ID"), data);
      return;
    } catch (error) {
      if (error.status === 409 && error.retryAfter && attempt < 4) {
        // Orders has not seen this user's UserRegistered yet: eventual consistency, live.
        answer.textContent = `409: ${error.message}\nRetrying in ${error.retryAfter} s (orders waits for its replica of users)…`;
        await sleep(error.retryAfter * 1000);
        continue;
      }
      answer.textContent = `${error.status || ""} ${error.message}`;
      return;
    }
  }
}

function clearJourney() {
  state.journey = null;
  $("journey-steps").replaceChildren();
}

/**
 * Show an order's journey: the steps the server kept, in causal order, then what the
 * stream adds. Observations that arrive while the kept steps load wait, so the order holds.
 * `placed` is the order as POST /api/orders answered it (its status then), when it was
 * placed here.
 */
async function showJourney(orderId, correlationId, placed = null) {
  const journey = {
    orderId,
    flows: new Set(correlationId ? [correlationId] : []),
    traceId: null,
    seen: new Set(),
    status: null,
    notified: false,
    note: "",
    loading: true,
    waiting: [], // observations that came while the kept steps loaded
    last: {}, // consumer -> the last step it handled (a status or notice goes after it)
    request: null, // the step of the request that placed the order
  };
  state.journey = journey;
  $("journey-steps").replaceChildren();
  drawOrders();
  journeyHead();
  try {
    const kept = await get(`/api/orders/${encodeURIComponent(orderId)}/journey`);
    if (state.journey !== journey) return;
    for (const flow of kept.correlation_ids || [kept.correlation_id]) journey.flows.add(flow);
    journey.traceId = kept.trace_id || journey.traceId;
    journey.note = kept.note || "";
    for (const step of kept.steps) addStep(journey, step);
  } catch (error) {
    if (state.journey !== journey) return;
    journey.missing = error.message;
  }
  // What the stream brought before the order was known here (over NATS the gateway may
  // learn of its events a moment after the page): the same steps, counted once.
  for (const o of state.recent) if (belongs(journey, o)) addStep(journey, o);
  if (journey.missing && !journey.seen.size) addNote(journey, `No journey kept for this order (${journey.missing}).`);
  journey.loading = false;
  journeyHead();
  if (placed) addStatus(journey, placed.status, journey.request, "written with its OrderPlaced event in one atomic write");
  for (const o of journey.waiting.splice(0)) followJourney(o);
  // A status shows after the step of orders that changed it; with none seen yet, the
  // stream brings it (the order may already be PAID while its event is on the way here).
  const ordered = journey.last[state.owner.orders];
  if (ordered) await checkStatus(journey, ordered);
  else if (!placed) await checkStatus(journey, null);
  await checkNotification(journey);
}

function journeyHead() {
  const journey = state.journey;
  const parts = [`Order ${journey.orderId}`];
  const flows = [...journey.flows];
  if (flows.length) parts.push(`correlation id (the id of the request that started it) ${flows.join(", ")}`);
  parts.push(journey.traceId ? `trace id ${journey.traceId}` : "no trace id (tracing is off: APP_TRACING)");
  $("journey-head").textContent = parts.join(" · ");
  $("journey-note").textContent = journey.note;
}

function belongs(journey, o) {
  return journey.flows.has(o.correlation_id) || o.aggregate_id === journey.orderId;
}

function followJourney(o) {
  const journey = state.journey;
  if (!journey || !belongs(journey, o)) return;
  if (journey.loading) {
    journey.waiting.push(o);
    return;
  }
  if (o.correlation_id && !journey.flows.has(o.correlation_id)) {
    journey.flows.add(o.correlation_id);
    journeyHead();
  }
  if (!journey.traceId && o.trace_id) {
    journey.traceId = o.trace_id;
    journeyHead();
  }
  const item = addStep(journey, o);
  if (item && o.kind === "handled" && o.consumer === state.owner.orders) checkStatus(journey, item);
  if (item && o.kind === "handled" && o.consumer === state.owner.notifications) checkNotification(journey);
}

function describe(o) {
  const where = o.process ? ` · process ${o.process}` : "";
  switch (o.kind) {
    case "request":
      return `HTTP ${o.method} ${o.path} → ${o.status} in ${ms(o.ms)} ms: the gateway checked the bearer token and asked users for the caller's current credentials${where}`;
    case "published":
      return `${o.producer} published ${o.type} (event ${short(o.event_id)}) on the bus${where}`;
    case "handled":
      return `${o.consumer} handled ${o.type} · attempt ${o.attempt ?? 1} · handler ${ms(o.ms)} ms${o.hop_ms !== undefined && o.hop_ms !== null ? ` · hop ${ms(o.hop_ms)} ms from publish` : ""}${where}`;
    case "failed":
      return `${o.consumer} failed ${o.type} on attempt ${o.attempt}: ${o.error || "?"}, it will retry${where}`;
    case "dead_lettered":
      return `${o.consumer} gave up on ${o.type} after attempt ${o.attempt}: a dead letter (${o.error || "?"})${where}`;
    case "parked":
      return `${o.consumer} parked ${o.type} behind a dead letter of the same aggregate${where}`;
    default:
      return `${o.kind} ${o.type || ""}${where}`;
  }
}

function stepKey(o) {
  return `${o.process || ""}|${o.seq}|${o.kind}|${o.event_id || o.request_id || ""}|${o.consumer || ""}`;
}

/**
 * A step of the journey: right after `after` (a status after its cause), else in the order
 * of the time it was observed (`at`, epoch ms; over NATS what one process saw can reach the
 * gateway after what another saw later), else at the end.
 */
function appendStep(kind, text, after = null, at = null) {
  const item = document.createElement("li");
  item.className = `step kind-${kind}`;
  item.dataset.at = String(at ?? (after && after.dataset.at) ?? Date.now());
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.textContent = kind.replace("_", " ");
  const body = document.createElement("span");
  body.textContent = text;
  item.append(badge, " ", body);
  const steps = $("journey-steps");
  const later = at === null ? null : [...steps.children].find((step) => Number(step.dataset.at) > at);
  if (after && after.isConnected) after.after(item);
  else if (later) later.before(item);
  else steps.append(item);
  return item;
}

/** When what an observation records began: a request is recorded when it ends, after the
 * events it caused may have been published. */
function startedAt(o) {
  if (typeof o.at !== "number") return null;
  return o.kind === "request" ? o.at - (o.ms || 0) : o.at;
}

function addStep(journey, o) {
  const key = stepKey(o);
  if (journey.seen.has(key) || state.journey !== journey) return null;
  journey.seen.add(key);
  const item = appendStep(o.kind, describe(o), null, startedAt(o));
  if (o.kind === "handled") journey.last[o.consumer] = item;
  if (o.kind === "request" && o.method === "POST" && !journey.request) journey.request = item;
  return item;
}

function addStatus(journey, status, after = null, why = "") {
  if (journey.status === status || state.journey !== journey) return;
  const before = journey.status;
  journey.status = status;
  const change = before ? `order status: ${before} → ${status}` : `order status: ${status}`;
  const item = appendStep("status", why ? `${change} (${why})` : change, after);
  if (after && after === journey.last[state.owner.orders]) journey.last[state.owner.orders] = item;
}

function addNote(journey, text) {
  if (state.journey === journey) appendStep("note", text);
}

/** The order's status now, shown after `after` (the step that may have changed it). */
async function checkStatus(journey, after) {
  try {
    const order = await get(`/api/orders/${encodeURIComponent(journey.orderId)}`);
    addStatus(journey, order.status, after);
    if (state.orders.has(order.id)) {
      state.orders.set(order.id, order);
      drawOrders();
    }
  } catch (error) {
    addNote(journey, `Could not read the order: ${error.message}`);
  }
}

async function checkNotification(journey) {
  if (journey.notified) return;
  try {
    const sent = await get(`/api/notifications?order_id=${encodeURIComponent(journey.orderId)}`);
    for (const notice of sent.items) {
      if (journey.notified || state.journey !== journey) return;
      journey.notified = true;
      const text = `notifications sent "${notice.subject}" to ${notice.to} (${notice.channel})`;
      appendStep("notification", text, journey.last[state.owner.notifications]);
    }
  } catch (error) {
    addNote(journey, `Could not read the notifications: ${error.message}`);
  }
}

function wireFaults() {
  $("faults-off").addEventListener("click", switchAllOff);
}

function wireOrders() {
  $("order-form").addEventListener("submit", (event) => {
    event.preventDefault();
    placeOrder($("card").value);
  });
}

// ---------------------------------------------------------------- faults (admins)

async function loadFaults() {
  try {
    const answer = await get("/api/admin/faults");
    drawSwitches(Array.isArray(answer) ? answer : answer.items || answer.switches || []);
  } catch (error) {
    $("switches").textContent = `No fault switches here: ${error.message}`;
  }
}

function drawSwitches(switches) {
  const rows = switches.map((s) => {
    const row = document.createElement("div");
    row.className = "switch";
    const id = `switch-${s.name.replace(/[^A-Za-z0-9_-]/g, "-")}`;
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = s.label;
    const input = document.createElement("input");
    input.id = id;
    if (s.kind === "on_off") {
      input.type = "checkbox";
      input.checked = Boolean(s.value);
    } else {
      input.type = "number";
      input.min = s.min;
      input.max = s.max;
      input.step = s.kind === "rate" ? "0.1" : "0.5";
      input.value = s.value;
    }
    input.addEventListener("change", () => setSwitch(s, input));
    const explain = document.createElement("p");
    explain.className = "note";
    const name = document.createElement("code");
    name.textContent = s.name;
    explain.append(name, ` (${s.module}): ${s.explain}`);
    row.append(input.type === "checkbox" ? input : label, input.type === "checkbox" ? label : input, explain);
    return row;
  });
  $("switches").replaceChildren(...rows);
}

async function setSwitch(s, input) {
  const value = input.type === "checkbox" ? input.checked : Number(input.value);
  try {
    const { data } = await api("PUT", `/api/admin/faults/${encodeURIComponent(s.name)}`, { value });
    $("faults-answer").textContent = `${data.label || s.label}: ${data.value}`;
  } catch (error) {
    $("faults-answer").textContent = `${s.label}: ${error.message}`;
  }
}

async function switchAllOff() {
  try {
    await api("DELETE", "/api/admin/faults");
    $("faults-answer").textContent = "Every fault switched off.";
  } catch (error) {
    $("faults-answer").textContent = error.message;
  }
  await loadFaults();
}

async function loadDeadLetters() {
  try {
    const letters = (await get("/api/admin/dead-letters")).items;
    const items = letters.map((letter) => {
      const item = document.createElement("li");
      const text = document.createElement("span");
      text.textContent = `${letter.event_type} → ${letter.consumer} · aggregate ${short(letter.aggregate_id)} · ${letter.attempts} attempts · ${letter.error}`;
      const replay = document.createElement("button");
      replay.type = "button";
      replay.textContent = "Replay";
      replay.addEventListener("click", () => letterAction("POST", `/api/admin/dead-letters/${encodeURIComponent(letter.id)}/replay`));
      const discard = document.createElement("button");
      discard.type = "button";
      discard.textContent = "Discard";
      discard.addEventListener("click", () => letterAction("DELETE", `/api/admin/dead-letters/${encodeURIComponent(letter.id)}`));
      item.append(text, " ", replay, " ", discard);
      return item;
    });
    if (!items.length) {
      const none = document.createElement("li");
      none.className = "note";
      none.textContent = "None.";
      items.push(none);
    }
    $("dead-letters").replaceChildren(...items);
  } catch (error) {
    $("dead-letters").textContent = `Dead letters are not available: ${error.message}`;
  }
}

async function letterAction(method, path) {
  try {
    await api(method, path);
  } catch (error) {
    $("faults-answer").textContent = error.message;
  }
  await loadDeadLetters();
}

/** Each consumer's backlog and switches, shown on its node of the topology. */
async function refreshWatchState() {
  if (document.visibilityState === "hidden") return; // nobody sees it: no request either
  let watched;
  try {
    watched = await get("/api/watch/state");
  } catch {
    return;
  }
  for (const [name, group] of state.nodes) {
    const consumer = consumerState(watched, name);
    const badge = group.querySelector(".badge");
    const words = [];
    if (consumer && consumer.paused) words.push("paused");
    if (consumer && consumer.broken) words.push("broken");
    if (consumer && (consumer.paused || consumer.backlog)) words.push(`backlog ${consumer.backlog}`);
    setText(badge, words.join(" · "));
    group.classList.toggle("paused", Boolean(consumer && consumer.paused));
    group.classList.toggle("broken", Boolean(consumer && consumer.broken));
  }
}

function consumerState(watched, name) {
  const consumers = watched.consumers || [];
  if (Array.isArray(consumers)) return consumers.find((c) => c.consumer === name || c.name === name) || null;
  return consumers[name] || null;
}

// ---------------------------------------------------------------- start

function start() {
  wireSignIn();
  wireStream();
  wireOrders();
  wireFaults();
  const kept = sessionStorage.getItem(TOKEN_KEY);
  if (kept) signIn(kept).catch(() => signOut());
}

start();

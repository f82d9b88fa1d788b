// The station dashboard: renders /api/events (Server-Sent Events) as it changes.
// Every value shown may come from a device: it is only ever set with textContent.
"use strict";

const cards = new Map();
let searchText = "";
let searchTimer = null;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function bytes(n) {
  if (n === null || n === undefined) return "?";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = n, unit = 0;
  while (value >= 1000 && unit < units.length - 1) { value /= 1000; unit += 1; }
  return (unit ? value.toFixed(value < 10 ? 2 : 1) : value) + " " + units[unit];
}

function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  const m = Math.floor(s / 60), rest = s % 60;
  return m ? m + "m " + String(rest).padStart(2, "0") + "s" : rest + "s";
}

function newCard(port) {
  const card = el("article", "card");
  card.dataset.port = port;
  const top = el("div", "top");
  top.append(el("span", "port", port), el("span", "badge"));
  const meta = el("div", "meta");
  meta.append(el("span", "chip-name"), document.createTextNode(" · "), el("span", "serial"),
              el("span", "board"));
  const step = el("div", "meta step");
  const bar = el("div", "progress");
  bar.append(el("div"));
  const numbers = el("div", "numbers");
  numbers.append(el("span", "done"), el("span", "rate"), el("span", "eta"));
  card.append(top, meta, step, bar, numbers, el("div", "error"));
  return card;
}

function renderCard(card, data) {
  card.className = "card " + data.state;
  const q = (selector) => card.querySelector(selector);
  const badge = { active: data.step || "working", ok: "done", failed: "failed", skipped: "skipped" };
  q(".badge").textContent = badge[data.state] || data.state;
  q(".chip-name").textContent = data.chip || "?";
  q(".serial").textContent = data.serial ? "serial " + data.serial : "serial unknown";
  q(".board").textContent = data.board ? " · " + data.board : "";
  const parts = data.state === "active" ? ["step: " + (data.step || "…")] : [];
  if (data.unit !== null && data.unit !== undefined) parts.push("unit " + data.unit);
  q(".step").textContent = parts.join(" · ");
  const fraction = data.state === "ok" ? 1 : (data.total ? Math.min(1, data.bytes / data.total) : 0);
  q(".progress > div").style.width = (fraction * 100).toFixed(1) + "%";
  q(".done").textContent = data.total ? bytes(data.bytes) + " / " + bytes(data.total)
                                      : (data.bytes ? bytes(data.bytes) : "");
  q(".rate").textContent = data.state === "active" && data.rate ? (data.rate / 1e6).toFixed(1) + " MB/s" : "";
  q(".eta").textContent = data.state === "active" && data.eta !== null ? "ETA " + duration(data.eta) : "";
  const error = data.state === "failed" ? data.code + ": " + data.message
              : (data.state === "skipped" ? data.message : "");
  q(".error").textContent = error;
}

function renderPorts(ports) {
  const container = document.getElementById("ports");
  document.getElementById("no-ports").hidden = ports.length > 0;
  const seen = new Set();
  for (const data of ports) {
    seen.add(data.port);
    let card = cards.get(data.port);
    if (!card) { card = newCard(data.port); cards.set(data.port, card); }
    container.append(card);  // keeps the server's port order
    renderCard(card, data);
  }
  for (const [port, card] of cards) {
    if (!seen.has(port)) { card.remove(); cards.delete(port); }
  }
}

function renderTotals(state) {
  const run = state.run;
  const today = state.ledger && state.ledger.today;
  document.getElementById("today-ok").textContent = today ? today.ok : run.ok;
  document.getElementById("today-failed").textContent = today ? today.failed : run.failed;
  document.getElementById("run-totals").textContent =
    run.ok + " ok · " + run.failed + " failed · " + run.active + " in progress";
  const rate = state.ports.filter((p) => p.state === "active").reduce((sum, p) => sum + (p.rate || 0), 0);
  document.getElementById("throughput").textContent = rate ? (rate / 1e6).toFixed(1) + " MB/s" : "idle";
  const failures = document.getElementById("failures");
  failures.replaceChildren();
  const byCode = (today && today.by_code) || run.failures;
  for (const [code, count] of Object.entries(byCode || {})) {
    failures.append(el("span", "chip", code + " × " + count));
  }
  document.getElementById("listening").textContent = state.listening ? "· listening" : "· run ended";
}

function when(text) {
  const date = new Date(text);
  if (!text || isNaN(date)) return text || "";
  const today = new Date().toDateString() === date.toDateString();
  return today ? date.toLocaleTimeString() : date.toLocaleString();
}

function renderBoards(boards) {
  const body = document.getElementById("boards");
  body.replaceChildren();
  if (!boards.length) {
    const cell = el("td", "empty", searchText ? "No board matches." : "No board recorded yet.");
    cell.colSpan = 9;
    const row = el("tr");
    row.append(cell);
    body.append(row);
  }
  for (const b of boards) {
    const row = el("tr");
    const ok = b.result === "ok";
    const cells = [when(b.finished || b.started), b.serial || "", b.chip || "", b.port || "",
                   b.unit ?? "", b.station || "", b.result || "", bytes(b.bytes_written || 0),
                   b.verified ? "yes" : "no"];
    cells.forEach((value, index) => {
      const cell = el("td", index === 6 ? (ok ? "result-ok" : "result-bad") : "", value);
      if (index === 6 && b.error) cell.title = b.error;
      row.append(cell);
    });
    body.append(row);
  }
}

function render(state) {
  document.getElementById("station").textContent = state.station || "";
  document.getElementById("profile").textContent = state.profile ? "profile " + state.profile : "";
  renderPorts(state.ports);
  renderTotals(state);
  const ledger = state.ledger;
  const error = document.getElementById("ledger-error");
  error.hidden = !(ledger && ledger.error);
  error.textContent = ledger && ledger.error ? ledger.error : "";
  if (!searchText && ledger && ledger.recent) renderBoards(ledger.recent);
}

async function search() {
  const query = searchText ? "?search=" + encodeURIComponent(searchText) : "";
  document.getElementById("csv").href = "/api/boards.csv" + query;
  if (!searchText) return;
  const response = await fetch("/api/boards" + query, { credentials: "same-origin" });
  if (response.ok) renderBoards(await response.json());
}

function connect() {
  const live = document.getElementById("live");
  const source = new EventSource("/api/events");
  source.addEventListener("state", (message) => {
    live.className = "live";
    live.textContent = "live";
    render(JSON.parse(message.data));
  });
  source.onerror = () => { live.className = "live off"; live.textContent = "reconnecting"; };
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("search").addEventListener("input", (event) => {
    searchText = event.target.value.trim();
    clearTimeout(searchTimer);
    searchTimer = setTimeout(search, 250);
  });
  setInterval(() => {
    document.getElementById("clock").textContent = new Date().toLocaleTimeString();
  }, 1000);
  connect();
});

// Scriptorium session viewer.
//
// Reads the registry's own endpoints: GET /sessions, GET /sessions/{id}, the SSE log
// GET /sessions/{id}/events (follow=false to read, follow=true to tail a live session) and
// GET /changes (to refresh the list). Every string that comes from a session log is
// untrusted: it enters the page as text (text nodes, textContent, attribute values set with
// setAttribute), never as markup.

const ROOT = (document.querySelector('meta[name="scriptorium-root"]')?.content ?? "").replace(
  /^__ROOT__$/,
  "",
);
// A registry with auth on needs a bearer token for its streams: `scriptorium up` prints the
// viewer's address with `#token=...` (a fragment: never sent to a server or logged). It is
// kept for this tab only and taken out of the address bar.
const TOKEN = (() => {
  const params = new URLSearchParams(location.hash.slice(1));
  const given = params.get("token");
  if (given) {
    sessionStorage.setItem("scriptorium-token", given);
    params.delete("token");
    history.replaceState(null, "", `${location.pathname}${location.search}#${params}`);
  }
  return sessionStorage.getItem("scriptorium-token");
})();
const CLOSING = new Set(["session.released", "session.expired"]);
const SVG_NS = "http://www.w3.org/2000/svg";
const LANE_H = 30;
const AXIS_H = 20;
const LABEL_W = 210; // the lane labels' column, as wide as style.css makes it
const ROLE_ORDER = ["retriever", "writer", "inference", "critic"];
const SKILLS = new Set(["answer", "search", "write", "generate", "critique", "ingest"]);
const SUMMARY_FETCHES = 3; // logs read at once for the list (plus two streams: six per host)
const WORD = /[\p{L}\p{N}]/u;

const ui = {
  sessions: [], // as GET /sessions answers, newest first
  summaries: new Map(), // session id -> summary of a closed session (it does not change)
  listToken: 0,
  view: null, // {session, events, expanded: Set<seq>, selected: seq|null, live: bool}
  follow: null, // AbortController of the live stream
};

// --- DOM helpers (text only) -----------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  return build(document.createElement(tag), attrs, children);
}

function s(tag, attrs = {}, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "on") {
      for (const [event, fn] of Object.entries(value)) el.addEventListener(event, fn);
    } else if (key === "data") {
      for (const [name, v] of Object.entries(value)) el.dataset[name] = String(v);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const $ = (selector) => document.querySelector(selector);

// Replace an element's children; null, undefined and false are skipped, strings become text.
function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

function str(value) {
  return typeof value === "string" ? value : "";
}

function num(value) {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

function list(value) {
  return Array.isArray(value) ? value : [];
}

function obj(value) {
  return value && typeof value === "object" && !Array.isArray(value) ? value : {};
}

function clip(text, n) {
  return text.length <= n ? text : `${text.slice(0, n - 1)}…`;
}

function cssToken(value) {
  return String(value).toLowerCase().replace(/[^a-z0-9_-]/g, "_");
}

// --- formatting ------------------------------------------------------------------------------

function fmtMs(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

function fmtOffset(ms) {
  return `+${(ms / 1000).toFixed(3)}s`;
}

function fmtClock(epochMs) {
  const d = new Date(epochMs);
  const today = new Date();
  const time = d.toLocaleTimeString([], { hour12: false });
  if (d.toDateString() === today.toDateString()) return time;
  return `${d.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
}

function isoTime(epochMs) {
  const d = new Date(epochMs);
  return Number.isNaN(d.getTime()) ? "" : d.toISOString();
}

function fmtScore(value) {
  const n = num(value);
  return n === null ? "" : n.toFixed(2);
}

// --- HTTP and Server-Sent Events ----------------------------------------------------------------

class HttpError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
  }
}

async function failure(response) {
  const body = await response.text();
  try {
    return new HttpError(response.status, str(JSON.parse(body).detail) || body);
  } catch {
    return new HttpError(response.status, body.slice(0, 300));
  }
}

function headers(accept) {
  return TOKEN ? { Accept: accept, Authorization: `Bearer ${TOKEN}` } : { Accept: accept };
}

async function getJSON(path) {
  const response = await fetch(ROOT + path, { headers: headers("application/json") });
  if (!response.ok) throw await failure(response);
  return response.json();
}

// Server-Sent Events over fetch (EventSource would only deliver the kinds it was told about,
// since the registry names each event after its kind).
async function* sse(path, signal) {
  const response = await fetch(ROOT + path, { signal, headers: headers("text/event-stream") });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let message = { id: null, event: "message", data: [] };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (message.data.length) yield { ...message, data: message.data.join("\n") };
          message = { id: null, event: "message", data: [] };
          continue;
        }
        if (line.startsWith(":")) continue; // comment (keep-alive ping)
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") message.data.push(value);
        else if (field === "id") message.id = value;
        else if (field === "event") message.event = value;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

async function readLog(sessionId, signal) {
  const events = [];
  const path = `/sessions/${encodeURIComponent(sessionId)}/events?follow=false`;
  for await (const message of sse(path, signal)) events.push(JSON.parse(message.data));
  return events;
}

function pause(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

// --- what a log says -----------------------------------------------------------------------------

function splitKind(kind) {
  const dot = kind.lastIndexOf(".");
  return dot < 0 ? [kind, ""] : [kind.slice(0, dot), kind.slice(dot + 1)];
}

function isFailure(kind) {
  return /\.(failed|unreachable|rebind_failed)$/.test(kind);
}

function category(kind) {
  if (isFailure(kind)) return "failure";
  if (kind.startsWith("session.")) return "session";
  const [base, phase] = splitKind(kind);
  if (base === "answer") return "answer";
  if (phase === "request") return "request";
  if (phase === "result") return "result";
  return "other";
}

function summarize(session, events) {
  const asked = events.find((e) => e.kind === "answer.request");
  const answered = [...events].reverse().find((e) => e.kind === "answer.result");
  const failed = events.find((e) => isFailure(e.kind));
  const a = obj(answered?.payload);
  const start = session.created ?? events[0]?.ts;
  const end = session.ended ?? events.at(-1)?.ts;
  let outcome;
  let tone;
  if (answered && (str(a.verdict) || answered.truncated)) {
    const parts = [str(a.verdict) || "answered"];
    if (num(a.rounds) !== null) parts.push(`${a.rounds} round${a.rounds === 1 ? "" : "s"}`);
    if (a.abstained === true) parts.push("abstained");
    else if (a.extractive === true) parts.push("extractive");
    outcome = parts.join(" · ");
    tone = a.verdict === "accept" && a.abstained !== true ? "good" : "warn";
  } else if (failed) {
    outcome = `${failed.kind}`;
    tone = "bad";
  } else {
    outcome = session.state === "active" ? "running" : "no answer";
    tone = session.state === "active" ? "live" : "muted";
  }
  return {
    question: str(obj(asked?.payload).question) || str(asked?.summary) || null,
    outcome,
    tone,
    duration: start && end ? end - start : null,
    events: events.length,
  };
}

function stepSummary(event) {
  const p = obj(event.payload);
  if (event.truncated) {
    const size = num(p.bytes) === null ? "" : ` (${Math.round(p.bytes / 1024)} KiB)`;
    return `payload too large${size}, kept a summary: ${str(event.summary)}`;
  }
  const count = (value, noun) => `${list(value).length} ${noun}${list(value).length === 1 ? "" : "s"}`;
  switch (event.kind) {
    case "session.opened":
      return Object.entries(obj(p.bindings))
        .map(([role, instance]) => `${role}=${instance}`)
        .join(", ");
    case "session.rebound":
      return `${str(p.role)}: ${str(p.old) || "none"} → ${str(p.new)}`;
    case "answer.request":
      return str(p.question);
    case "answer.result": {
      const rounds = num(p.rounds);
      const flags = [str(p.verdict), rounds === null ? "" : `${rounds} round${rounds === 1 ? "" : "s"}`];
      if (p.abstained === true) flags.push("abstained");
      if (p.extractive === true) flags.push("extractive");
      return `${flags.filter(Boolean).join(", ")}: ${str(p.text)}`;
    }
    case "search.request":
      return `“${str(p.query)}” k=${num(p.k) ?? "?"} in ${str(p.collection) || "default"}`;
    case "search.result": {
      const sources = list(p.passages).slice(0, 3).map((x) => str(obj(x).source));
      return `${count(p.passages, "passage")}${sources.length ? `: ${sources.join(", ")}` : ""}`;
    }
    case "write.request": {
      const revising = p.critique ? ", revising" : "";
      return `${str(p.mode) || "generate"} from ${count(p.passages, "passage")}${revising}`;
    }
    case "write.result": {
      const flags = [p.abstained === true ? "abstained" : "", p.extractive === true ? "extractive" : ""];
      const prefix = flags.filter(Boolean).join(", ");
      return `${prefix ? `${prefix}: ` : ""}${str(p.text)}`;
    }
    case "critique.request":
      return `${count(obj(p.draft).sentences, "sentence")} against ${count(p.passages, "passage")}`;
    case "critique.result": {
      const tally = new Map();
      for (const x of list(p.sentences)) {
        const v = str(obj(x).verdict) || "?";
        tally.set(v, (tally.get(v) ?? 0) + 1);
      }
      const parts = [...tally].map(([v, n]) => `${n} ${v}`);
      return `${str(p.verdict)}${parts.length ? `: ${parts.join(", ")}` : ""}`;
    }
    case "generate.request":
      return `${count(p.messages, "message")}, max ${num(p.max_tokens) ?? "?"} tokens`;
    case "generate.result": {
      const tokens = num(obj(p.usage).completion_tokens);
      return `${tokens === null ? "" : `${tokens} tokens: `}${str(p.text)}`;
    }
    default:
      break;
  }
  if (event.summary) return event.summary;
  for (const key of ["question", "query", "verdict", "text"]) if (str(p[key])) return p[key];
  return "";
}

// Lanes: one per participant. A bare role or agent name (a sender) is the instance the
// session binds to that role, so an agent's sends and receipts share one lane.
function laneModel(session, events) {
  const bindings = obj(session?.bindings);
  const roleOf = new Map(Object.entries(bindings).map(([role, instance]) => [instance, role]));
  const instances = Object.values(bindings).filter((v) => typeof v === "string");
  const resolve = (name) => {
    if (!name || name === "*") return null;
    if (typeof bindings[name] === "string") return bindings[name];
    const named = instances.filter((instance) => instance.startsWith(`${name}@`));
    return named.length === 1 ? named[0] : name;
  };
  const seen = new Map();
  const see = (key) => key !== null && !seen.has(key) && seen.set(key, seen.size);
  for (const event of events) {
    see(resolve(event.sender));
    see(resolve(event.recipient));
  }
  for (const instance of Object.values(bindings)) see(instance);
  const rank = (key) => {
    if (key === "registry") return [0, 0];
    const role = roleOf.get(key);
    if (role !== undefined) {
      const at = ROLE_ORDER.indexOf(role);
      return [2, at < 0 ? ROLE_ORDER.length : at];
    }
    return key.includes("@") ? [3, 0] : [1, 0];
  };
  const keys = [...seen.keys()].sort((a, b) => {
    const [ra, rb] = [rank(a), rank(b)];
    return ra[0] - rb[0] || ra[1] - rb[1] || seen.get(a) - seen.get(b);
  });
  const lanes = keys.map((key) => {
    const role = roleOf.get(key) ?? (key.includes("@") ? key.split("@")[0] : null);
    let detail = "";
    if (role && key !== role) detail = key.startsWith(`${role}@`) ? key.slice(role.length) : key;
    return { key, name: role ?? key, detail };
  });
  return { lanes, index: new Map(keys.map((k, i) => [k, i])), resolve };
}

// Request -> result (or failure) pairs: same step, same caller, same callee, in order.
function pairSteps(events) {
  const open = new Map();
  const pairs = [];
  for (const event of events) {
    const [base, phase] = splitKind(event.kind);
    if (!["request", "result", "failed", "unreachable"].includes(phase)) continue;
    const key = `${base}\u0000${event.sender}\u0000${event.recipient}`;
    if (phase === "request") {
      if (!open.has(key)) open.set(key, []);
      open.get(key).push(event);
      continue;
    }
    const request = open.get(key)?.shift();
    if (request) pairs.push({ skill: base, request, end: event, status: phase });
  }
  for (const waiting of open.values()) {
    for (const request of waiting) {
      pairs.push({ skill: splitKind(request.kind)[0], request, end: null, status: "open" });
    }
  }
  return pairs;
}

function took(event) {
  return num(obj(event?.payload).ms);
}

// The answer as the log tells it: the full Answer of answer.result when it is there, else
// rebuilt from the last draft, the critique of that draft and the passages it was written from.
function answerModel(events) {
  const final = [...events].reverse().find((e) => e.kind === "answer.result");
  const p = obj(final?.payload);
  if (Array.isArray(p.sentences) && Array.isArray(p.passages)) {
    return {
      from: "answer",
      final,
      text: str(p.text),
      verdict: str(p.verdict),
      rounds: num(p.rounds),
      extractive: p.extractive === true,
      abstained: p.abstained === true,
      timings: obj(p.timings_ms),
      passages: p.passages.map(obj),
      sentences: p.sentences.map((x) => {
        const sentence = obj(x);
        return {
          text: str(sentence.text),
          verdict: str(sentence.verdict) || null,
          support: num(sentence.support),
          citations: list(sentence.citations).map((c) => {
            const citation = obj(c);
            return { passage: num(citation.passage), snippet: str(citation.snippet), origin: str(citation.origin) };
          }),
        };
      }),
    };
  }
  const drafts = events.filter((e) => e.kind === "write.result" && e.payload);
  const draftEvent = drafts.at(-1);
  const draft = obj(draftEvent?.payload);
  const after = draftEvent ? events.slice(events.indexOf(draftEvent)) : [];
  const critique = obj(after.find((e) => e.kind === "critique.result" && e.payload)?.payload);
  const before = draftEvent ? events.slice(0, events.indexOf(draftEvent)).reverse() : [...events].reverse();
  const writeRequest = before.find((e) => e.kind === "write.request" && e.payload);
  const searchResult = before.find((e) => e.kind === "search.result" && e.payload);
  const passages = list(obj(writeRequest?.payload).passages ?? obj(searchResult?.payload).passages);
  const checks = list(critique.sentences).map(obj);
  return {
    from: draftEvent ? "draft" : "none",
    final,
    text: str(p.text) || str(draft.text),
    verdict: str(p.verdict) || str(critique.verdict),
    rounds: num(p.rounds),
    extractive: p.extractive === true || draft.extractive === true,
    abstained: p.abstained === true || draft.abstained === true,
    timings: obj(p.timings_ms),
    passages: (passages.length ? passages : list(obj(searchResult?.payload).passages)).map(obj),
    sentences: list(draft.sentences).map((x, i) => {
      const sentence = obj(x);
      const check = checks[i] ?? {};
      return {
        text: str(sentence.text),
        verdict: str(check.verdict) || null,
        support: num(check.support) ?? num(sentence.support),
        citations: list(sentence.citations)
          .filter((n) => num(n) !== null)
          .map((n) => ({
            passage: n,
            snippet: check.best_passage === n ? str(check.best_span) : "",
            origin: str(sentence.origin),
          })),
      };
    }),
  };
}

// Where ``snippet`` sits in ``text``, ignoring case and runs of white space: [start, end).
function findSpan(text, snippet) {
  const needle = snippet.trim().replace(/(…|\.\.\.)$/, "").split(/\s+/).join(" ").toLowerCase();
  if (!needle) return null;
  let flat = "";
  const at = [];
  let space = false;
  for (let i = 0; i < text.length; i += 1) {
    const ch = text[i];
    if (/\s/.test(ch)) {
      if (!space && flat) {
        flat += " ";
        at.push(i);
      }
      space = true;
      continue;
    }
    space = false;
    for (const c of ch.toLowerCase()) {
      flat += c;
      at.push(i);
    }
  }
  const found = flat.indexOf(needle);
  if (found < 0) return null;
  // A snippet clipped mid-word is shown to the end of that word.
  let start = at[found];
  let end = at[found + needle.length - 1] + 1;
  while (start > 0 && WORD.test(text[start - 1]) && WORD.test(text[start])) start -= 1;
  while (end < text.length && WORD.test(text[end]) && WORD.test(text[end - 1])) end += 1;
  return [start, end];
}

// --- sessions list ---------------------------------------------------------------------------------

async function loadList() {
  const token = ++ui.listToken;
  const state = $("#state-filter").value;
  const limit = Number($("#limit").value);
  const status = $("#list-status");
  try {
    ui.sessions = await getJSON(`/sessions${state ? `?state=${encodeURIComponent(state)}` : ""}`);
    setRegistryStatus(true);
  } catch (error) {
    setRegistryStatus(false, error);
    return;
  }
  if (token !== ui.listToken) return;
  const shown = ui.sessions.slice(0, limit);
  const more = ui.sessions.length - shown.length;
  fill(status,
    `${ui.sessions.length} session${ui.sessions.length === 1 ? "" : "s"}${more > 0 ? ` (newest ${shown.length} shown)` : ""}`,
    h("span", { class: "updated" }, ` · ${fmtClock(Date.now())}`),
  );
  renderList(shown);
  // Each row's question and outcome come from its log; read a few logs at a time.
  const queue = shown.filter((session) => session.state === "active" || !ui.summaries.has(session.id));
  const worker = async () => {
    while (queue.length && token === ui.listToken) {
      const session = queue.shift();
      try {
        const summary = summarize(session, await readLog(session.id));
        if (session.state !== "active") ui.summaries.set(session.id, summary);
        fillRow(session, summary);
      } catch (error) {
        fillRow(session, { question: null, outcome: `log unreadable: ${error.message}`, tone: "bad" });
      }
    }
  };
  await Promise.all(Array.from({ length: SUMMARY_FETCHES }, worker));
}

function renderList(sessions) {
  const selected = route().session;
  const rows = sessions.map((session) =>
    h(
      "li",
      {
        class: `session-row${session.id === selected ? " selected" : ""}`,
        data: { session: session.id, state: session.state },
      },
      h(
        "a",
        { href: `#${routeHash({ session: session.id })}` },
        h("div", { class: "q" }, "…"),
        h(
          "div",
          { class: "meta" },
          h("span", { class: `badge state-${cssToken(session.state)}` }, session.state),
          h("span", { class: "when", title: isoTime(session.created) }, fmtClock(session.created)),
          h("span", { class: "dur" }),
          h("span", { class: "outcome" }),
        ),
        h("div", { class: "sid" }, session.id),
      ),
    ),
  );
  if (!rows.length) rows.push(h("li", { class: "none" }, "No sessions recorded (or all past retention)."));
  fill($("#sessions"), ...rows);
  for (const session of sessions) {
    const summary = ui.summaries.get(session.id);
    if (summary) fillRow(session, summary);
  }
}

function fillRow(session, summary) {
  const row = [...document.querySelectorAll("#sessions li[data-session]")].find(
    (li) => li.dataset.session === session.id,
  );
  if (!row) return;
  const q = row.querySelector(".q");
  q.textContent = summary.question ?? "(no question recorded)";
  q.title = summary.question ?? "";
  q.classList.toggle("missing", !summary.question);
  row.querySelector(".dur").textContent = summary.duration === null || summary.duration === undefined ? "" : fmtMs(summary.duration);
  const outcome = row.querySelector(".outcome");
  outcome.textContent = summary.outcome;
  outcome.className = `outcome tone-${summary.tone}`;
}

function setRegistryStatus(ok, error) {
  const el = $("#registry-status");
  el.className = `registry-status ${ok ? "ok" : "down"}`;
  el.textContent = ok ? `registry ${location.host}` : `registry unreachable: ${error?.message ?? ""}`;
}

// Refresh the list when sessions open or close (the registry's change feed). A hidden tab
// lets go of the stream: browsers allow only six connections to one host.
async function watchChanges(signal) {
  let after = null;
  let timer = null;
  while (!signal.aborted) {
    try {
      const path = `/changes${after ? `?after=${encodeURIComponent(after)}` : ""}`;
      for await (const message of sse(path, signal)) {
        if (message.id) after = message.id;
        if (!message.event.startsWith("session.")) continue;
        clearTimeout(timer);
        timer = setTimeout(loadList, 300);
      }
    } catch (error) {
      if (signal.aborted) return;
      setRegistryStatus(false, error);
    }
    await pause(3000, signal);
    if (!signal.aborted) loadList();
  }
}

function watchWhileVisible() {
  let changes = null;
  const toggle = () => {
    if (document.hidden) {
      changes?.abort();
      changes = null;
    } else if (!changes) {
      changes = new AbortController();
      watchChanges(changes.signal);
      return true;
    }
    return false;
  };
  document.addEventListener("visibilitychange", () => toggle() && loadList());
  toggle();
}

// --- one session -------------------------------------------------------------------------------------

async function openSession(sessionId) {
  ui.follow?.abort();
  ui.follow = null;
  for (const li of document.querySelectorAll("#sessions li[data-session]")) {
    li.classList.toggle("selected", li.dataset.session === sessionId);
  }
  if (!sessionId) {
    ui.view = null;
    $("#view").hidden = true;
    $("#empty").hidden = false;
    return;
  }
  $("#empty").hidden = true;
  $("#view").hidden = false;
  const controller = new AbortController();
  ui.follow = controller;
  let session;
  try {
    session = await getJSON(`/sessions/${encodeURIComponent(sessionId)}`);
  } catch (error) {
    if (error.status !== 404) return showViewError(sessionId, error);
    session = null; // past retention, or only the log is left
  }
  if (controller.signal.aborted) return;
  ui.view = { id: sessionId, session, events: [], expanded: new Set(), selected: null, live: false };
  if (session?.state === "active") {
    ui.view.live = true;
    render();
    follow(ui.view, controller.signal);
    return;
  }
  try {
    ui.view.events = await readLog(sessionId, controller.signal);
  } catch (error) {
    if (!controller.signal.aborted) showViewError(sessionId, error);
    return;
  }
  if (!controller.signal.aborted) render();
}

// Tail a live session: everything recorded, then each event as it arrives, resuming after
// the last one if the stream drops, until the session closes.
async function follow(view, signal) {
  let delay = 500;
  while (!signal.aborted) {
    try {
      const after = view.events.at(-1)?.id;
      const query = after ? `?follow=true&after=${encodeURIComponent(after)}` : "?follow=true";
      for await (const message of sse(`/sessions/${encodeURIComponent(view.id)}/events${query}`, signal)) {
        const event = JSON.parse(message.data);
        view.events.push(event);
        delay = 500;
        if (CLOSING.has(event.kind)) {
          view.live = false;
          view.session = await getJSON(`/sessions/${encodeURIComponent(view.id)}`).catch(() => view.session);
        }
        schedule();
        if (!view.live) return;
      }
      // The stream ended without a closing event: closed meanwhile, or the registry restarted.
      const session = await getJSON(`/sessions/${encodeURIComponent(view.id)}`);
      if (session.state !== "active") {
        view.session = session;
        view.live = false;
        schedule();
        return;
      }
    } catch (error) {
      if (signal.aborted) return;
      view.error = error.message;
      if (error.status === 404) view.live = false; // gone: nothing more will come
      schedule();
      if (!view.live) return;
    }
    await pause(delay, signal);
    delay = Math.min(delay * 2, 10_000);
  }
}

let pending = false;
function schedule() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => {
    pending = false;
    render();
  });
}

function showViewError(sessionId, error) {
  fill($("#session-header"),
    h("div", { class: "title" }, h("span", { class: "label" }, "session"), h("code", {}, sessionId)),
    h("div", { class: "error" }, error.message),
  );
  for (const id of ["#question-panel", "#timeline", "#legend", "#answer", "#passages"]) fill($(id));
  fill($("#steps tbody"));
}

function render() {
  const view = ui.view;
  if (!view) return;
  renderHeader(view);
  renderQuestion(view);
  renderTimeline(view);
  renderAnswer(view);
  renderSteps(view);
}

function renderHeader(view) {
  const { session, events } = view;
  const state = session?.state ?? "unknown";
  const start = session?.created ?? events[0]?.ts;
  const end = session?.ended ?? events.at(-1)?.ts;
  const field = (label, ...value) => h("div", { class: "field" }, h("span", { class: "label" }, label), ...value);
  const bindings = Object.entries(obj(session?.bindings)).map(([role, instance]) =>
    h("span", { class: "binding", title: `${role} is bound to ${instance}` }, h("b", {}, role), " ", instance),
  );
  fill($("#session-header"),
    h(
      "div",
      { class: "title" },
      h("span", { class: "label" }, "session"),
      h("code", { class: "sid" }, view.id),
      h("span", { class: `badge state-${cssToken(state)}` }, state),
      view.live ? h("span", { class: "live", title: "Following the session as it happens" }, "live") : null,
      view.error ? h("span", { class: "error" }, view.error) : null,
    ),
    h(
      "div",
      { class: "fields" },
      field("trace", h("code", { class: "trace", id: "trace-id" }, session?.trace_id ?? "unknown")),
      field("started", start ? fmtClock(start) : "?"),
      field(view.live ? "running for" : "took", start && end ? fmtMs(end - start) : "?"),
      field("events", String(events.length)),
      session ? null : field("note", "the session record is gone; showing its log"),
    ),
    bindings.length ? h("div", { class: "bindings" }, ...bindings) : null,
  );
}

function renderQuestion(view) {
  const asked = view.events.find((e) => e.kind === "answer.request");
  const panel = $("#question-panel");
  if (!asked) {
    fill(panel, h("div", { class: "muted" }, view.live ? "Waiting for the question…" : "No question recorded in this log."));
    return;
  }
  const p = obj(asked.payload);
  const options = [];
  for (const key of ["collection", "k", "max_rounds", "max_tokens"]) {
    if (p[key] !== undefined) options.push(h("span", { class: "opt" }, `${key} `, h("b", {}, String(p[key]))));
  }
  if (Object.keys(obj(p.filters)).length) options.push(h("span", { class: "opt" }, "filters ", h("code", {}, JSON.stringify(p.filters))));
  fill(panel,
    h("div", { class: "question", id: "question" }, str(p.question) || str(asked.summary) || "(question not kept)"),
    options.length ? h("div", { class: "options" }, ...options) : null,
  );
}

// --- timeline -------------------------------------------------------------------------------------------

function niceStep(raw) {
  const power = 10 ** Math.floor(Math.log10(Math.max(raw, 1e-3)));
  for (const m of [1, 2, 5, 10]) if (m * power >= raw) return m * power;
  return 10 * power;
}

function renderTimeline(view) {
  const container = $("#timeline");
  const { events } = view;
  if (!events.length) {
    fill(container, h("div", { class: "muted" }, "No events yet."));
    fill($("#legend"));
    return;
  }
  const { lanes, index, resolve } = laneModel(view.session, events);
  const t0 = events[0].ts;
  const tEnd = Math.max(events.at(-1).ts, view.session?.ended ?? 0);
  const span = Math.max(tEnd - t0, 1);
  const width = Math.max(container.clientWidth - LABEL_W, 200);
  const pad = 8; // px either side, so the first and last marks are whole
  const xPx = (ts) => pad + ((ts - t0) / span) * (width - 2 * pad);
  // Each lane has two rows: marks (what this participant logged) above, bars (the time it
  // spent on a request) below, so neither hides the other.
  const top = (lane) => AXIS_H + lane * LANE_H;
  const markY = (lane) => top(lane) + 8;
  const barY = (lane) => top(lane) + 14;
  const height = AXIS_H + lanes.length * LANE_H;

  const plot = s("svg", { class: "plot", width, height, role: "img", "aria-label": "Timeline of the session" });
  lanes.forEach((lane, i) =>
    plot.append(s("rect", { class: `lane-bg${i % 2 ? " odd" : ""}`, x: 0, y: top(i), width, height: LANE_H })),
  );
  // time axis and grid
  const step = Math.max(1, niceStep(span / Math.max(2, Math.floor(width / 90))));
  for (let t = 0; t <= span + 1e-9; t += step) {
    const x = xPx(t0 + t);
    const anchor = t === 0 ? "start" : x > width - 30 ? "end" : "middle";
    plot.append(s("line", { class: "grid", x1: x, x2: x, y1: AXIS_H - 4, y2: height }));
    plot.append(s("text", { class: "tick", x, y: AXIS_H - 7, "text-anchor": anchor }, t === 0 ? "0" : fmtMs(t)));
  }
  // request -> result bars on the callee's lane, labelled inside or, when there is room, after
  const bars = [];
  for (const pair of pairSteps(events)) {
    const lane = index.get(resolve(pair.request.recipient));
    if (lane === undefined) continue;
    const x1 = xPx(pair.request.ts);
    const x2 = Math.max(xPx(pair.end ? pair.end.ts : tEnd), x1 + 2);
    bars.push({ pair, lane, x1, x2 });
  }
  for (const bar of bars) {
    const { pair, lane, x1, x2 } = bar;
    const ms = pair.end ? (took(pair.end) ?? pair.end.ts - pair.request.ts) : null;
    const skill = SKILLS.has(pair.skill) ? pair.skill : "other";
    const label = `${pair.skill} ${ms === null ? (view.live ? "…" : "no result") : fmtMs(ms)}`;
    const title =
      `${pair.request.kind} #${pair.request.seq} → ${pair.end ? `${pair.end.kind} #${pair.end.seq}` : "no result yet"}` +
      `${ms === null ? "" : ` · ${fmtMs(ms)}`}\n${pair.request.sender} → ${pair.request.recipient}`;
    const g = s(
      "g",
      { class: `bar skill-${skill} status-${pair.status}`, data: { seq: pair.request.seq, end: pair.end?.seq ?? "" } },
      s("title", {}, title),
      s("rect", { x: x1, y: barY(lane), width: x2 - x1, height: LANE_H - 17, rx: 2 }),
    );
    const need = label.length * 5.6 + 8;
    const next = Math.min(width, ...bars.filter((b) => b.lane === lane && b.x1 >= x2).map((b) => b.x1));
    const previous = Math.max(0, ...bars.filter((b) => b.lane === lane && b.x2 <= x1).map((b) => b.x2));
    const y = barY(lane) + 9.5;
    if (x2 - x1 >= need) g.append(s("text", { x: x1 + 4, y }, label));
    else if (next - x2 >= need) g.append(s("text", { class: "outside", x: x2 + 3, y }, label));
    else if (x1 - previous >= need) g.append(s("text", { class: "outside", x: x1 - 3, y, "text-anchor": "end" }, label));
    plot.append(g);
  }
  // connectors: from the mark of whoever logged a step down to the lane of the agent it called
  for (const event of events) {
    const from = index.get(resolve(event.sender));
    const to = index.get(resolve(event.recipient));
    if (from === undefined || to === undefined || from === to) continue;
    const x = xPx(event.ts);
    const y2 = to > from ? barY(to) : barY(to) + LANE_H - 17;
    plot.append(s("line", { class: `link cat-${category(event.kind)}`, x1: x, x2: x, y1: markY(from), y2 }));
  }
  // one mark per event, on the lane of whoever logged it
  for (const event of events) {
    const lane = index.get(resolve(event.sender));
    if (lane === undefined) continue;
    const cat = category(event.kind);
    const offset = event.ts - t0;
    const mark = s(
      "g",
      {
        class: `mark cat-${cat}${view.selected === event.seq ? " selected" : ""}`,
        data: { seq: event.seq, kind: event.kind, offset },
        transform: `translate(${xPx(event.ts).toFixed(2)},${markY(lane)})`,
        on: { click: () => selectStep(event.seq, true) },
      },
      s("title", {}, `#${event.seq} ${event.kind} at ${fmtOffset(offset)}\n${event.sender} → ${event.recipient}\n${clip(stepSummary(event), 300)}`),
      cat === "failure"
        ? s("path", { d: "M-4,-4L4,4M-4,4L4,-4" })
        : cat === "session"
          ? s("rect", { x: -3.5, y: -3.5, width: 7, height: 7, transform: "rotate(45)" })
          : s("circle", { r: 3.8 }),
    );
    plot.append(mark);
  }

  const labels = h(
    "div",
    { class: "lane-labels" },
    h("div", { class: "axis-label" }, "offset"),
    ...lanes.map((lane) =>
      h(
        "div",
        { class: "lane-label", data: { lane: lane.key }, title: lane.key },
        h("b", {}, lane.name),
        lane.detail ? h("span", { class: "instance" }, lane.detail) : null,
      ),
    ),
  );
  fill(container, labels, plot);
  fill($("#legend"),
    ...[
      ["cat-request", "request"],
      ["cat-result", "result"],
      ["cat-failure", "failure"],
      ["cat-session", "registry"],
      ["cat-answer", "question / answer"],
    ].map(([cls, text]) => h("span", { class: `key ${cls}` }, h("i"), text)),
    h("span", { class: "sep" }),
    ...["search", "write", "generate", "critique", "answer"].map((skill) =>
      h("span", { class: `key bar-key skill-${skill}` }, h("i"), skill),
    ),
    h("span", { class: "sep" }),
    h("span", { class: "span-note" }, `${fmtMs(span)} from first to last event`),
  );
}

// --- answer and passages ---------------------------------------------------------------------------------

const VERDICT_LABEL = {
  supported: "supported",
  unsupported: "unsupported",
  uncited: "uncited",
  bad_citation: "bad citation",
};

function renderAnswer(view) {
  const model = answerModel(view.events);
  const box = $("#answer");
  const passagesBox = $("#passages");
  if (model.from === "none" && !model.final) {
    const failed = view.events.find((e) => isFailure(e.kind));
    fill(box,
      failed
        ? h("div", { class: "failure" }, h("b", {}, failed.kind), " ", stepSummary(failed))
        : h("div", { class: "muted" }, view.live ? "No answer yet…" : "No answer recorded."),
    );
    fill(passagesBox, h("div", { class: "muted" }, "No passages recorded."));
    return;
  }
  const flags = [];
  if (model.verdict) flags.push(h("span", { class: `badge verdict-${cssToken(model.verdict)}`, id: "answer-verdict" }, model.verdict));
  if (model.rounds !== null) flags.push(h("span", { class: "flag" }, `${model.rounds} round${model.rounds === 1 ? "" : "s"}`));
  if (model.extractive) flags.push(h("span", { class: "flag" }, "extractive"));
  if (model.abstained) flags.push(h("span", { class: "flag warn" }, "abstained"));
  const timings = Object.entries(model.timings)
    .filter(([, v]) => num(v) !== null)
    .sort(([a], [b]) => (b === "total") - (a === "total"))
    .map(([k, v]) => h("span", { class: "timing" }, `${k} `, h("b", {}, fmtMs(v))));
  const notes = [];
  if (model.final?.truncated) notes.push(`answer.result was too large to keep; its summary: ${str(model.final.summary)}`);
  if (model.from === "draft") notes.push("this log's answer.result holds no sentences: shown from the last draft and its critique");
  if (!model.final) notes.push(view.live ? "still working: the latest draft so far" : "no answer.result recorded: the latest draft");

  const sentences = model.sentences.map((sentence, i) =>
    h(
      "li",
      { class: "sentence", data: { verdict: sentence.verdict ?? "none", index: i } },
      h(
        "span",
        { class: `verdict v-${cssToken(sentence.verdict ?? "none")}`, title: "the critic's verdict on this sentence" },
        VERDICT_LABEL[sentence.verdict] ?? sentence.verdict ?? "not checked",
      ),
      h("span", { class: "support", title: "support of its best cited passage" }, fmtScore(sentence.support)),
      h(
        "span",
        { class: "text" },
        sentence.text,
        ...sentence.citations.map((citation) =>
          h(
            "button",
            {
              type: "button",
              class: "cite",
              data: { passage: citation.passage ?? "" },
              title: `passage ${citation.passage}${citation.origin ? ` (${citation.origin})` : ""}: ${clip(citation.snippet, 200)}`,
              on: {
                click: () => focusPassage(citation.passage),
                mouseenter: () => hoverPassage(citation.passage, i, true),
                mouseleave: () => hoverPassage(citation.passage, i, false),
              },
            },
            `[${citation.passage ?? "?"}]`,
          ),
        ),
      ),
    ),
  );
  fill(box,
    h("div", { class: "answer-flags" }, ...flags, ...timings),
    ...notes.map((note) => h("div", { class: "note" }, note)),
    sentences.length
      ? h("ol", { class: "sentences", id: "sentences" }, ...sentences)
      : h("p", { class: "answer-text", id: "answer-text" }, model.text || "(empty)"),
  );
  renderPassages(model, passagesBox);
}

function renderPassages(model, box) {
  if (!model.passages.length) {
    fill(box, h("div", { class: "muted" }, "No passages recorded."));
    return;
  }
  // passage number -> [{sentence index, verdict, snippet}]
  const citedBy = new Map();
  model.sentences.forEach((sentence, i) => {
    for (const citation of sentence.citations) {
      if (citation.passage === null) continue;
      if (!citedBy.has(citation.passage)) citedBy.set(citation.passage, []);
      citedBy.get(citation.passage).push({ sentence: i, verdict: sentence.verdict, snippet: citation.snippet });
    }
  });
  const items = model.passages.map((passage, i) => {
    const n = i + 1;
    const cites = citedBy.get(n) ?? [];
    const text = str(passage.text);
    return h(
      "li",
      { class: `passage${cites.length ? " cited" : " uncited"}`, id: `passage-${n}`, data: { passage: n } },
      h(
        "div",
        { class: "passage-head" },
        h("span", { class: "pn" }, `[${n}]`),
        h("span", { class: "source", title: str(passage.document_id) }, str(passage.source) || str(passage.document_id)),
        num(passage.score) !== null ? h("span", { class: "score", title: "retrieval score" }, fmtScore(passage.score)) : null,
        cites.length
          ? h("span", { class: "cited-by" }, `cited by ${[...new Set(cites.map((c) => `s${c.sentence + 1}`))].join(", ")}`)
          : h("span", { class: "cited-by none" }, "not cited"),
      ),
      h("div", { class: "passage-text" }, ...highlight(text, cites)),
    );
  });
  fill(box, h("ol", { class: "passages" }, ...items));
}

// The passage text as nodes, each cited span inside a <mark> (text nodes only).
function highlight(text, cites) {
  const ranges = [];
  for (const cite of cites) {
    const span = cite.snippet ? findSpan(text, cite.snippet) : null;
    if (span) ranges.push({ start: span[0], end: span[1], cites: [cite] });
  }
  ranges.sort((a, b) => a.start - b.start);
  const merged = [];
  for (const range of ranges) {
    const last = merged.at(-1);
    if (last && range.start < last.end) {
      last.end = Math.max(last.end, range.end);
      last.cites.push(...range.cites);
    } else merged.push({ ...range, cites: [...range.cites] });
  }
  const nodes = [];
  let at = 0;
  for (const range of merged) {
    if (range.start > at) nodes.push(text.slice(at, range.start));
    const worst = range.cites.some((c) => c.verdict && c.verdict !== "supported") ? "weak" : "ok";
    nodes.push(
      h(
        "mark",
        {
          class: `cited-span ${worst}`,
          data: { sentences: range.cites.map((c) => c.sentence).join(" ") },
          title: range.cites.map((c) => `sentence ${c.sentence + 1}: ${c.verdict ?? "not checked"}`).join("\n"),
        },
        text.slice(range.start, range.end),
      ),
    );
    at = range.end;
  }
  if (at < text.length) nodes.push(text.slice(at));
  return nodes;
}

function focusPassage(n) {
  const el = document.getElementById(`passage-${n}`);
  if (!el) return;
  el.scrollIntoView({ block: "nearest", behavior: "smooth" });
  el.classList.remove("flash");
  void el.offsetWidth; // restart the animation
  el.classList.add("flash");
}

function hoverPassage(n, sentence, on) {
  const el = document.getElementById(`passage-${n}`);
  el?.classList.toggle("hover", on);
  for (const mark of el?.querySelectorAll("mark") ?? []) {
    if (mark.dataset.sentences.split(" ").includes(String(sentence))) mark.classList.toggle("hover", on);
  }
}

// --- steps table ---------------------------------------------------------------------------------------------

function renderSteps(view) {
  const { events } = view;
  const t0 = events[0]?.ts ?? 0;
  const rows = [];
  for (const event of events) {
    const cat = category(event.kind);
    const summary = stepSummary(event);
    const ms = isFailure(event.kind) || splitKind(event.kind)[1] === "result" ? took(event) : null;
    rows.push(
      h(
        "tr",
        {
          class: `step cat-${cat}${view.selected === event.seq ? " selected" : ""}${view.expanded.has(event.seq) ? " open" : ""}`,
          data: { seq: event.seq, kind: event.kind },
          on: { click: () => toggleStep(event.seq) },
        },
        h("td", { class: "n" }, String(event.seq)),
        h("td", { class: "offset" }, fmtOffset(event.ts - t0)),
        h("td", { class: "route" }, event.sender, h("span", { class: "arrow" }, " → "), event.recipient),
        h("td", { class: "kind" }, h("span", { class: `kind-tag cat-${cat}` }, event.kind)),
        h("td", { class: "summary", title: clip(summary, 2000) }, event.truncated ? h("span", { class: "flag warn" }, "truncated") : null, clip(summary, 400)),
        h("td", { class: "took" }, fmtMs(ms)),
      ),
    );
    if (view.expanded.has(event.seq)) {
      const details = {
        id: event.id,
        task_id: event.task_id,
        ts: event.ts,
        ...(event.summary ? { summary: event.summary } : {}),
        ...(event.truncated ? { truncated: true } : {}),
        payload: event.payload,
      };
      rows.push(h("tr", { class: "details" }, h("td", { colspan: 6 }, h("pre", {}, JSON.stringify(details, null, 2)))));
    }
  }
  fill($("#steps tbody"), ...rows);
}

function toggleStep(seq) {
  const view = ui.view;
  if (!view) return;
  if (view.expanded.has(seq)) view.expanded.delete(seq);
  else view.expanded.add(seq);
  view.selected = seq;
  render();
}

function selectStep(seq, reveal) {
  const view = ui.view;
  if (!view) return;
  view.selected = seq;
  view.expanded.add(seq);
  render();
  if (reveal) {
    const row = [...document.querySelectorAll("#steps tr.step")].find((tr) => tr.dataset.seq === String(seq));
    row?.scrollIntoView({ block: "center", behavior: "smooth" });
  }
}

// --- routing: #session=ID&state=S --------------------------------------------------------------------------

function route() {
  const params = new URLSearchParams(location.hash.slice(1));
  return { session: params.get("session"), state: params.get("state") ?? "" };
}

function routeHash(change) {
  const params = new URLSearchParams(location.hash.slice(1));
  for (const [key, value] of Object.entries(change)) {
    if (value) params.set(key, value);
    else params.delete(key);
  }
  return params.toString();
}

function applyRoute() {
  const { session, state } = route();
  if ($("#state-filter").value !== state) {
    $("#state-filter").value = state;
    loadList();
  }
  if (session !== (ui.view?.id ?? null)) openSession(session);
}

function start() {
  $("#state-filter").value = route().state;
  $("#state-filter").addEventListener("change", (e) => {
    location.hash = routeHash({ state: e.target.value });
    loadList();
  });
  $("#limit").addEventListener("change", loadList);
  $("#refresh").addEventListener("click", loadList);
  window.addEventListener("hashchange", applyRoute);
  let resize = null;
  new ResizeObserver(() => {
    clearTimeout(resize);
    resize = setTimeout(() => ui.view && renderTimeline(ui.view), 100);
  }).observe($("#timeline"));
  loadList();
  openSession(route().session);
  watchWhileVisible();
}

start();

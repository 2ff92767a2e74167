// pointhub operator console: live points over the JSON WebSocket API, nodes, keys and audit
// over the REST API. No external scripts.
"use strict";
const $ = (s) => document.querySelector(s);
const points = new Map();   // name -> record
const history = new Map();  // name -> [[t, v], ...] for the trend
let selected = null;
let me = null;

function qclass(q) {
  if (q === "Good") return "q-good";
  if (q && q.startsWith("Uncertain")) return "q-uncertain";
  return "q-bad";
}
function fmt(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(3);
  return String(v);
}
function age(ts) {
  if (!ts) return "—";
  const s = (Date.now() - Date.parse(ts)) / 1000;
  return s < 60 ? s.toFixed(1) + " s" : s < 3600 ? (s / 60).toFixed(1) + " min" : (s / 3600).toFixed(1) + " h";
}
function esc(s) {
  return String(s ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
}
// The console session's CSRF token (from /api/v1/me): every change request carries it.
let csrf = "";
async function api(path, opts) {
  const r = await fetch(path, Object.assign({ headers: { "content-type": "application/json", "x-csrf-token": csrf } }, opts));
  if (r.status === 401) { location.href = "/login"; throw new Error("logged out"); }
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

// Tabs
document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => {
  document.querySelectorAll("nav button").forEach((x) => x.classList.toggle("active", x === b));
  document.querySelectorAll(".tab").forEach((t) => (t.hidden = t.id !== b.dataset.tab));
  refresh();
}));

// Points: the WebSocket keeps the table live.
function matchFilter(name) {
  const f = $("#filter").value.trim();
  if (!f) return true;
  if (f.includes("*")) {
    const re = new RegExp("^" + f.split("/").map((s) => s === "**" ? "\u0000" : s === "*" ? "[^/]+" : s.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join("/").replace(/\/?\u0000\/?/g, "(/.*)?/?") + "$");
    return re.test(name);
  }
  return name.includes(f);
}
function renderPoints() {
  const rows = [];
  const names = [...points.keys()].sort();
  for (const n of names) {
    if (!matchFilter(n)) continue;
    const p = points.get(n);
    rows.push(`<tr data-point="${esc(n)}" class="${n === selected ? "sel" : ""}"><td>${esc(n)}</td><td class="num value">${esc(fmt(p.value))}</td><td>${esc(p.unit || "")}</td><td class="quality ${qclass(p.quality)}">${esc(p.quality)}</td><td>${esc(p.source_ts || "—")}</td><td class="num">${age(p.hub_ts)}</td></tr>`);
  }
  $("#points-table tbody").innerHTML = rows.join("");
}
$("#points-table tbody").addEventListener("click", (e) => {
  const tr = e.target.closest("tr");
  if (!tr) return;
  selected = tr.dataset.point;
  $("#trend").hidden = false;
  drawTrend();
  renderPoints();
});
$("#filter").addEventListener("input", renderPoints);
function drawTrend() {
  if (!selected) return;
  $("#trend-name").textContent = selected;
  const c = $("#trend-canvas"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const h = (history.get(selected) || []).filter((x) => typeof x[1] === "number");
  const p = points.get(selected);
  $("#trend-info").textContent = p ? `${fmt(p.value)} ${p.unit || ""} · ${p.quality}` : "";
  if (h.length < 2) return;
  const t0 = h[0][0], t1 = h[h.length - 1][0];
  let lo = Math.min(...h.map((x) => x[1])), hi = Math.max(...h.map((x) => x[1]));
  if (hi === lo) { hi += 1; lo -= 1; }
  g.strokeStyle = "#1d4ed8"; g.lineWidth = 2; g.beginPath();
  h.forEach(([t, v], i) => {
    const x = 10 + (c.width - 20) * (t - t0) / Math.max(1, t1 - t0);
    const y = c.height - 10 - (c.height - 20) * (v - lo) / (hi - lo);
    i ? g.lineTo(x, y) : g.moveTo(x, y);
  });
  g.stroke();
}
function connect() {
  const ws = new WebSocket(`wss://${location.host}/api/v1/ws`);
  ws.onopen = () => {
    $("#conn").textContent = "live"; $("#conn").className = "pill ok";
    ws.send(JSON.stringify({ op: "subscribe", patterns: ["**"] }));
  };
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    if (m.type === "updates") {
      for (const u of m.updates) {
        const prev = points.get(u.point) || {};
        points.set(u.point, Object.assign(prev, u));
        if (!history.has(u.point)) history.set(u.point, []);
        const h = history.get(u.point);
        h.push([Date.parse(u.source_ts || u.hub_ts) || Date.now(), u.value]);
        if (h.length > 300) h.shift();
      }
      scheduleRender();
    }
  };
  ws.onclose = () => {
    // The console's own link is gone: everything it shows is no longer live.
    $("#conn").textContent = "disconnected"; $("#conn").className = "pill down";
    for (const p of points.values()) {
      if (p.quality === "Good") p.quality = "UncertainNoCommunicationLastUsableValue";
    }
    renderPoints();
    setTimeout(connect, 1000);
  };
}
let pendingRender = false;
function scheduleRender() {
  if (pendingRender) return;
  pendingRender = true;
  requestAnimationFrame(() => { pendingRender = false; renderPoints(); drawTrend(); });
}

// Nodes, keys, audit: polled while their tab is open.
async function refreshNodes() {
  const nodes = await api("/api/v1/nodes");
  $("#nodes-table tbody").innerHTML = nodes.map((n) => `<tr data-node="${esc(n.name)}"><td>${esc(n.name)}</td><td>${esc(n.role)}</td><td class="state"><span class="pill ${n.connected ? "ok" : "down"}">${n.connected ? "connected" : "disconnected"}</span></td><td>${esc(n.remote || "—")}</td><td class="num">${n.rtt_ms == null ? "—" : n.rtt_ms.toFixed(2) + " ms"}</td><td>${esc(n.version || "—")}</td><td class="num">${n.points}</td><td>${esc(n.last_seen || "—")}</td></tr>`).join("");
}
async function refreshKeys() {
  if (!me || !me.admin) { $("#keys").innerHTML = "<p class='muted'>Only an unrestricted admin manages keys.</p>"; return; }
  const k = await api("/api/v1/keys");
  $("#pending-table tbody").innerHTML = k.pending.map((p) => `<tr data-fp="${esc(p.fingerprint)}"><td><code>${esc(p.fingerprint)}</code></td><td>${esc(p.role || "?")} “${esc(p.name)}”</td><td>${esc(p.addr)}</td><td class="num">${p.attempts}</td><td>${esc(p.last_attempt)}</td><td><button class="approve" data-fp="${esc(p.fingerprint)}" data-role="${esc(p.role || "edge")}" data-name="${esc(p.name)}">Approve</button></td></tr>`).join("") || "<tr><td colspan=6 class='muted'>No pending keys.</td></tr>";
  $("#keys-table tbody").innerHTML = k.keys.map((x) => `<tr><td>${esc(x.name)}</td><td>${esc(x.role)}</td><td>${esc(x.state)}</td><td><code>${esc(x.fingerprint)}</code></td><td>${esc(x.approved_by)}</td><td>${esc(x.last_seen || "—")}</td><td>${x.state === "approved" ? `<button class="danger revoke" data-fp="${esc(x.fingerprint)}">Revoke</button>` : ""}</td></tr>`).join("");
  $("#tokens-table tbody").innerHTML = k.tokens.map((t) => `<tr><td>${esc(t.id)}</td><td>${esc(t.role)}</td><td>${esc(t.name)}</td><td>${new Date(t.expires / 1000).toISOString()}</td><td>${esc(t.used_by || "—")}</td></tr>`).join("");
}
document.addEventListener("click", async (e) => {
  const b = e.target;
  if (b.classList.contains("approve")) {
    // The role is the operator's choice: what the key asked for is only shown, never taken.
    const role = prompt(`Role (edge, client or hub) — the key asked to be ${b.dataset.role}:`, "edge");
    if (!role) return;
    const name = prompt("Approve as name:", b.dataset.name || "");
    if (!name) return;
    const grant = { role: role.trim(), name };
    if (grant.role === "hub") {
      const ns = prompt("Namespace the child hub may publish under (* for any):", name);
      if (!ns) return;
      grant.namespace = ns;
    }
    await api(`/api/v1/keys/${encodeURIComponent(b.dataset.fp)}/approve`, { method: "POST", body: JSON.stringify(grant) }).catch((x) => alert(x.message));
    refreshKeys();
  } else if (b.classList.contains("revoke")) {
    if (!confirm("Revoke this key? Its sessions end at once.")) return;
    await api(`/api/v1/keys/${encodeURIComponent(b.dataset.fp)}/revoke`, { method: "POST", body: "{}" }).catch((x) => alert(x.message));
    refreshKeys();
  }
});
$("#token-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const t = await api("/api/v1/tokens", { method: "POST", body: JSON.stringify({ role: $("#token-role").value, name: $("#token-name").value, ttl_s: Number($("#token-ttl").value) }) }).catch((x) => alert(x.message));
  if (t) $("#token-out").textContent = t.token + " (shown once)";
  refreshKeys();
});
async function refreshAudit() {
  const rows = await api("/api/v1/audit?last=300");
  const f = $("#audit-filter").value.trim();
  $("#audit-table tbody").innerHTML = rows.reverse().filter((r) => !f || JSON.stringify(r).includes(f)).map((r) => {
    const { ts, event, name, ...rest } = r;
    return `<tr><td>${esc(ts)}</td><td>${esc(event)}</td><td>${esc(name || rest.user || "")}</td><td><code>${esc(JSON.stringify(rest))}</code></td></tr>`;
  }).join("");
}
$("#audit-filter").addEventListener("input", refreshAudit);
function refresh() {
  const tab = document.querySelector("nav button.active").dataset.tab;
  const f = { nodes: refreshNodes, keys: refreshKeys, audit: refreshAudit }[tab];
  if (f) f().catch(() => {});
}
setInterval(refresh, 1000);
setInterval(() => { if (!$("#points").hidden) renderPoints(); }, 1000);
api("/api/v1/me").then((m) => {
  me = m;
  csrf = m.csrf || "";
  $("#me").textContent = `${m.name} (${m.role})`;
  $("#hub").textContent = `hub ${m.hub}`;
  if (!m.admin) $("#tab-keys").hidden = true;
  connect();
});

/* #/status: the box, storage health, the ingest queue, index stats and wanted titles; refreshed every 2 s. */

import { api } from "./api.js";
import { errorBox, h, show } from "./dom.js";
import { duration, human, scalar } from "./format.js";
import { refreshEvery } from "./nav.js";
import { kvTable, listTable, missing, progressBar, section, stat, stateBadge, wantedTable } from "./widgets.js";

function overview(st) {
  const rec = st.reconcile || {};
  return section("Box", "status-box", [
    h("div", { class: "stats" },
      stat("version", st.version), stat("up", duration(st.uptime_s)),
      stat("reconcile", rec.last_result || "–"), stat("pending actions", rec.pending ?? "–")),
    st.config ? h("p", { class: "small muted" }, "config ", h("code", {}, st.config.path), " · ",
      h("code", {}, String(st.config.digest || "").slice(0, 19))) : h("p", { class: "notice" }, "No harbor.yaml applied yet."),
    h("h3", {}, "Conditions"),
    listTable(st.conditions || [], [
      { title: "type", render: c => c.type },
      // Ready is good when true; every other condition (Degraded, IngestFailing...) is a problem when true.
      { title: "status", render: c => c.type === "Ready"
        ? stateBadge(c.status ? "ready" : "not ready", c.status ? "ok" : "bad")
        : stateBadge(c.status ? "true" : "false", c.status ? "bad" : "ok") },
      { title: "reason", render: c => c.reason || "" }]),
  ]);
}

function storageSection(s) {
  if (!s) return section("Storage health", "status-storage", missing("storage"));
  const pools = s.pools || s.healths || [];
  const parts = [];
  if (Array.isArray(pools) && pools.length) {
    parts.push(listTable(pools, [
      { title: "pool", render: p => p.name || p.pool || "–" },
      { title: "state", render: p => stateBadge(p.state || p.health || (p.ok === false ? "degraded" : "ok")) },
      { title: "mount", render: p => p.mount || "–" },
      { title: "used", render: p => (p.total_bytes || p.size_bytes)
        ? progressBar(p.used_bytes || 0, p.total_bytes || p.size_bytes,
          `${human(p.used_bytes)} of ${human(p.total_bytes || p.size_bytes)}`) : "–" },
      { title: "notes", render: p => scalar(p.reason || p.problems || p.detail || "") }]));
  } else if (Array.isArray(pools)) {
    parts.push(h("p", { class: "muted small" }, "No storage pools declared: media lives on the system disk."));
  }
  const rest = Object.fromEntries(Object.entries(s).filter(([k]) => !["pools", "healths"].includes(k)));
  if (Object.keys(rest).length) parts.push(kvTable(rest));
  parts.push(h("p", { class: "small" }, h("a", { href: "#/storage" }, "Disks, arrays and mounts →")));
  return section("Storage health", "status-storage", parts);
}

function ingestSection(s) {
  if (!s) return section("Ingest queue", "status-ingest", missing("ingest"));
  const depth = Number(s.depth || 0);
  const totals = s.totals || {};
  const done = Number(totals.done || 0);
  const queue = s.queue || {};
  const parts = [
    h("div", { class: "stats" }, stat("waiting", depth), stat("done", done),
      stat("per second", s.rate_per_s ?? "–"), stat("ETA", s.eta_s ? duration(s.eta_s) : "–")),
    h("div", { id: "ingest-progress" }, progressBar(done, done + depth,
      depth ? `${done} of ${done + depth} items done` : "queue empty")),
  ];
  if (s.paused) parts.push(h("p", { class: "notice small" }, `Paused: ${s.paused}`));
  if (s.worker_error) parts.push(h("div", { class: "error small" }, s.worker_error));
  const stages = Object.entries(queue);
  if (stages.length) {
    parts.push(h("h3", {}, "In the pipeline"), listTable(stages.map(([stage, n]) => ({ stage, n })), [
      { title: "stage", render: r => stateBadge(r.stage) },
      { title: "items", render: r => String(r.n) },
      { title: "share", render: r => progressBar(r.n, depth || 1) }]));
  }
  if (Array.isArray(s.jobs) && s.jobs.length) {
    parts.push(h("h3", {}, "Active"), listTable(s.jobs, [
      { title: "file", render: j => j.path || j.source_path || "" },
      { title: "stage", render: j => stateBadge(j.stage) },
      { title: "progress", render: j => progressBar(j.progress ?? 0, 1) }]));
  }
  if (Array.isArray(s.failures) && s.failures.length) {
    parts.push(h("h3", {}, "Recent failures"), listTable(s.failures, ["path", "error"]));
  }
  return section("Ingest queue", "status-ingest", parts);
}

function indexSection(s) {
  if (!s) return section("Index", "status-index", missing("search"));
  const flat = {};
  for (const [k, v] of Object.entries(s)) {
    if (v && typeof v === "object" && !Array.isArray(v)) {
      for (const [k2, v2] of Object.entries(v)) flat[`${k} ${k2}`] = v2;
    } else flat[k] = v;
  }
  const entries = Object.entries(flat);
  const half = Math.ceil(entries.length / 2);
  return section("Index", "status-index", entries.length > 8
    ? h("div", { class: "cols" }, kvTable(Object.fromEntries(entries.slice(0, half))),
      kvTable(Object.fromEntries(entries.slice(half))))
    : kvTable(flat));
}

function catalogSection(s) {
  if (!s) return section("Wanted titles", "status-wanted", missing("catalog"));
  const counts = s.counts || {};
  return section("Wanted titles", "status-wanted", [
    h("div", { class: "stats" }, Object.entries(counts).map(([k, v]) => stat(k, v))),
    s.last_error ? h("div", { class: "error small" }, s.last_error) : null,
    wantedTable(s.entries || []),
  ]);
}

export async function statusPage(_, __, current) {
  const stamp = h("span", { class: "updated small muted" });
  const body = h("div", { id: "status" }, h("p", { class: "muted" }, "Loading…"));
  show(h("h1", {}, "Status ", stamp), body);
  const load = async () => {
    try {
      const st = await api("GET", "/v1/status");
      if (!current()) return;
      const sv = st.services || {};
      body.replaceChildren(overview(st),
        h("div", { class: "cards" }, storageSection(sv.storage), ingestSection(sv.ingest)),
        indexSection(sv.search || sv.index), catalogSection(sv.catalog));
      stamp.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      if (current()) body.replaceChildren(errorBox(err));
    }
  };
  await load();
  if (current()) refreshEvery(2000, load);
}

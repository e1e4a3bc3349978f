/* The pieces pages are built of: key/value and list tables, state badges, progress bars, panels, stats, and the
 * wanted-titles table the status and catalog pages share. */

import { h } from "./dom.js";
import { human, label, scalar } from "./format.js";

export function kvTable(obj, skip) {
  const rows = Object.entries(obj || {}).filter(([k, v]) => !(skip || []).includes(k) && v !== undefined);
  if (!rows.length) return h("p", { class: "muted small" }, "nothing reported");
  return h("table", { class: "kv" }, h("tbody", {}, rows.map(([k, v]) =>
    h("tr", {}, h("th", {}, label(k)), h("td", {}, scalar(v, k))))));
}

export function listTable(items, columns) {
  if (!items || !items.length) return h("p", { class: "muted small" }, "none");
  const cols = columns || [...new Set(items.flatMap(i => Object.keys(i)))].slice(0, 8);
  return h("table", { class: "list" },
    h("thead", {}, h("tr", {}, cols.map(c => h("th", {}, label(typeof c === "string" ? c : c.title))))),
    h("tbody", {}, items.map(item => h("tr", {}, cols.map(c =>
      h("td", {}, typeof c === "string" ? scalar(item[c], c) : c.render(item)))))));
}

export function stateBadge(state, forced) {
  const s = String(state || "unknown");
  const cls = forced !== undefined ? forced : /^(ok|done|healthy|clean|active|ingested|available|true|converged|mounted|ready)$/i.test(s) ? "ok"
    : /(fail|error|missing|degraded|bad|false|unavailable|faulty)/i.test(s) ? "bad"
      : /(download|search|queue|wait|pending|resync|recover|rebuild|paused)/i.test(s) ? "warn" : "";
  return h("span", { class: `badge ${cls}` }, s);
}

export function progressBar(done, total, text) {
  const value = total ? Math.max(0, Math.min(Number(done) / Number(total), 1)) : 0;
  return h("div", { class: "progress" },
    h("progress", { max: 1, value, "aria-label": text || "progress" }),
    h("span", { class: "small muted" }, text || `${Math.round(value * 100)}%`));
}

export function section(title, id, body) {
  return h("section", { class: "panel", id }, h("h2", {}, title), body);
}

export function missing(name) {
  return h("p", { class: "muted small" }, `The ${name} service reports nothing (not installed or not started).`);
}

export function stat(name, value) {
  return h("div", { class: "stat" }, h("span", { class: "big" }, scalar(value)), h("span", { class: "muted small" }, name));
}

export function wantedTable(entries) {
  return listTable(entries, [
    { title: "wanted", render: e => h("span", {}, e.title ? `${e.title}${e.year ? ` (${e.year})` : ""}` : (e.label || e.key),
      e.title && e.label ? h("div", { class: "small muted" }, e.label) : null) },
    { title: "state", render: e => stateBadge(e.state) },
    { title: "progress", render: e => e.progress
      ? progressBar(e.progress.bytes || 0, e.progress.total || 0,
        e.progress.percent !== null && e.progress.percent !== undefined ? `${e.progress.percent}%` : human(e.progress.bytes))
      : (e.media_ids && e.media_ids.length ? h("a", { href: `#/item/${e.media_ids[0]}` }, "open") : "–") },
    { title: "source", render: e => e.identifier || e.source || "–" },
    { title: "note", render: e => e.error || "" }]);
}

/* BitHarbor web UI: one plain script, no build step, no dependencies. Talks only to this daemon's /v1 API.
 *
 * Pages (hash routes): #/login, #/search?q=&type=, #/item/<id>, #/status, #/storage, #/catalog.
 * The token from POST /v1/auth/login is kept in sessionStorage and sent as a Bearer header; the daemon also
 * sets an HttpOnly cookie at login that GET requests accept, which is what <img> and <video> use.
 * Every service's data is optional: a page shows what the daemon reports and says what is missing.
 */
"use strict";

(() => {
  const TOKEN_KEY = "bitharbor.token";
  const NAME_KEY = "bitharbor.name";
  const MEDIA_TYPES = ["personal", "movie", "tv", "music", "podcast", "online_video", "other"];
  const view = document.getElementById("view");
  let refreshTimer = null;
  let renderSeq = 0;

  // ------------------------------------------------------------------ DOM helpers (no innerHTML: no injection)

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
      else if (key === "class") el.className = value;
      else if (key === "style") el.style.cssText = value; // CSSOM: allowed by the CSP, unlike style attributes
      else if (key in el && typeof value !== "string") el[key] = value;
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function show(...nodes) {
    view.replaceChildren(...nodes);
  }

  function errorBox(err) {
    const code = err && err.code ? `${err.code}: ` : "";
    return h("div", { class: "error", role: "alert" }, code + (err && err.message ? err.message : String(err)));
  }

  function human(bytes) {
    if (bytes === null || bytes === undefined || isNaN(bytes)) return "–";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let n = Number(bytes);
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${n.toFixed(n < 10 && i ? 1 : 0)} ${units[i]}`;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || isNaN(seconds)) return "–";
    const s = Math.round(Number(seconds));
    const hh = Math.floor(s / 3600);
    const mm = Math.floor((s % 3600) / 60);
    const ss = String(s % 60).padStart(2, "0");
    return hh ? `${hh}:${String(mm).padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
  }

  function when(ts) {
    if (!ts) return "–";
    const d = typeof ts === "number" ? new Date(ts * 1000) : new Date(ts);
    return isNaN(d.getTime()) ? String(ts) : d.toLocaleString();
  }

  function label(key) {
    return String(key).replace(/_/g, " ");
  }

  function scalar(value, key) {
    if (value === null || value === undefined || value === "") return "–";
    if (typeof value === "boolean") return value ? "yes" : "no";
    if (typeof value === "number" && key && /(_at|_time|timestamp)$/.test(key) && value > 1e9) return when(value);
    if (Array.isArray(value)) return value.map(v => scalar(v)).join(", ") || "–";
    if (typeof value === "object") {
      return Object.entries(value).map(([k, v]) => `${label(k)}: ${typeof v === "object" && v !== null
        ? JSON.stringify(v) : scalar(v, k)}`).join(" · ") || "–";
    }
    return String(value);
  }

  function kvTable(obj, skip) {
    const rows = Object.entries(obj || {}).filter(([k, v]) => !(skip || []).includes(k) && v !== undefined);
    if (!rows.length) return h("p", { class: "muted small" }, "nothing reported");
    return h("table", { class: "kv" }, h("tbody", {}, rows.map(([k, v]) =>
      h("tr", {}, h("th", {}, label(k)), h("td", {}, scalar(v, k))))));
  }

  function listTable(items, columns) {
    if (!items || !items.length) return h("p", { class: "muted small" }, "none");
    const cols = columns || [...new Set(items.flatMap(i => Object.keys(i)))].slice(0, 8);
    return h("table", { class: "list" },
      h("thead", {}, h("tr", {}, cols.map(c => h("th", {}, label(typeof c === "string" ? c : c.title))))),
      h("tbody", {}, items.map(item => h("tr", {}, cols.map(c =>
        h("td", {}, typeof c === "string" ? scalar(item[c], c) : c.render(item)))))));
  }

  function stateBadge(state, forced) {
    const s = String(state || "unknown");
    const cls = forced !== undefined ? forced : /^(ok|done|healthy|clean|active|ingested|available|true|converged|mounted|ready)$/i.test(s) ? "ok"
      : /(fail|error|missing|degraded|bad|false|unavailable|faulty)/i.test(s) ? "bad"
        : /(download|search|queue|wait|pending|resync|recover|rebuild|paused)/i.test(s) ? "warn" : "";
    return h("span", { class: `badge ${cls}` }, s);
  }

  function progressBar(done, total, text) {
    const value = total ? Math.max(0, Math.min(Number(done) / Number(total), 1)) : 0;
    return h("div", { class: "progress" },
      h("progress", { max: 1, value, "aria-label": text || "progress" }),
      h("span", { class: "small muted" }, text || `${Math.round(value * 100)}%`));
  }

  // ------------------------------------------------------------------ the API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body, { quiet401 = false } = {}) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    let payload;
    if (body instanceof FormData) payload = body;
    else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
    } catch (e) {
      throw new ApiError(0, "unreachable", `bitharbord did not answer: ${e.message}`);
    }
    const ctype = res.headers.get("Content-Type") || "";
    const data = ctype.includes("json") ? await res.json().catch(() => null) : null;
    if (!res.ok) {
      const err = (data && data.error) || {};
      if (res.status === 401 && !quiet401) {
        forget();
        go("#/login");
      }
      throw new ApiError(res.status, err.code || `http_${res.status}`, err.message || res.statusText);
    }
    return data;
  }

  function forget() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(NAME_KEY);
  }

  // ------------------------------------------------------------------ routing

  function go(hash) {
    if (location.hash === hash) render();
    else location.hash = hash;
  }

  function parseHash() {
    const raw = location.hash.replace(/^#\/?/, "");
    const [path, query] = raw.split("?");
    return { parts: path.split("/").filter(Boolean), params: new URLSearchParams(query || "") };
  }

  async function render() {
    const seq = ++renderSeq;
    clearInterval(refreshTimer);
    refreshTimer = null;
    const { parts, params } = parseHash();
    const page = parts[0] || "search";
    const loggedIn = Boolean(sessionStorage.getItem(TOKEN_KEY));
    document.getElementById("top").hidden = !loggedIn || page === "login";
    document.getElementById("who").textContent = sessionStorage.getItem(NAME_KEY) || "";
    for (const a of document.querySelectorAll("[data-nav]")) {
      a.classList.toggle("active", a.dataset.nav === page || (page === "item" && a.dataset.nav === "search"));
    }
    if (!loggedIn && page !== "login") {
      go("#/login");
      return;
    }
    const pages = { login: loginPage, search: searchPage, item: itemPage, status: statusPage, storage: storagePage,
      catalog: catalogPage };
    const fn = pages[page];
    if (!fn) {
      show(h("div", { class: "notice" }, "No such page. ", h("a", { href: "#/search" }, "Go to search")));
      return;
    }
    document.title = `BitHarbor · ${page[0].toUpperCase()}${page.slice(1)}`;
    try {
      await fn(parts.slice(1), params, () => seq === renderSeq);
    } catch (err) {
      if (seq === renderSeq) show(errorBox(err));
    }
  }

  // ------------------------------------------------------------------ login

  async function loginPage() {
    const message = h("div");
    const name = h("input", { type: "text", id: "name", name: "name", autocomplete: "username", required: true,
      autofocus: true });
    const password = h("input", { type: "password", id: "password", name: "password",
      autocomplete: "current-password", required: true });
    const submit = h("button", { type: "submit", class: "primary", id: "login-submit" }, "Log in");
    const form = h("form", { class: "panel login", id: "login-form", onsubmit: async (ev) => {
      ev.preventDefault();
      submit.disabled = true;
      message.replaceChildren();
      try {
        const data = await api("POST", "/v1/auth/login", { name: name.value.trim(), password: password.value },
          { quiet401: true });
        sessionStorage.setItem(TOKEN_KEY, data.token);
        sessionStorage.setItem(NAME_KEY, data.name);
        go("#/search");
      } catch (err) {
        const text = err.code === "rate_limited" ? err.message
          : err.code === "bad_credentials" ? "Wrong name or password." : null;
        message.replaceChildren(text ? h("div", { class: "error", role: "alert" }, text) : errorBox(err));
        password.value = "";
        password.focus();
      } finally {
        submit.disabled = false;
      }
    } },
    h("div", { class: "logo" }, h("img", { src: "/ui/favicon.svg", alt: "", width: 36, height: 36 }),
      h("h1", {}, "BitHarbor")),
    h("p", { class: "muted small" }, "Sign in with an admin account of this box."),
    message,
    h("label", { for: "name" }, "Name"), name,
    h("label", { for: "password" }, "Password"), password,
    submit);
    show(h("div", { class: "login-wrap" }, form));
    name.focus();
  }

  // ------------------------------------------------------------------ search

  function normalizeHits(data) {
    const list = Array.isArray(data) ? data : (data && (data.results || data.hits || data.items)) || [];
    return list.map((r) => {
      const item = r.item || r.media || r;
      const id = r.media_id ?? r.id ?? item.id;
      return {
        id,
        score: typeof r.score === "number" ? r.score : (typeof r.similarity === "number" ? r.similarity : null),
        title: item.title || item.file_name || `Item ${id}`,
        type: item.type || r.type || "",
        kind: item.kind || r.kind || "",
        thumb: (item.urls && item.urls.thumbnail) || r.thumbnail_url || r.thumbnail
          || (id !== undefined ? `/v1/media/${id}/thumbnail` : null),
      };
    }).filter(x => x.id !== undefined && x.id !== null);
  }

  function card(hit) {
    const icon = { video: "▶", audio: "♪", image: "▣" }[hit.kind] || "◆";
    const thumb = h("div", { class: "thumb" }, icon);
    if (hit.thumb) {
      const img = h("img", { src: hit.thumb, alt: "", loading: "lazy" });
      img.addEventListener("error", () => { thumb.textContent = icon; }); // no thumbnail: the kind's icon
      thumb.replaceChildren(img);
    }
    const score = hit.score === null ? null : Math.max(0, Math.min(hit.score, 1));
    return h("a", { class: "card", href: `#/item/${encodeURIComponent(hit.id)}`, "data-id": hit.id },
      thumb,
      h("div", { class: "body" },
        h("div", { class: "title", title: hit.title }, hit.title),
        h("div", { class: "meta" }, hit.type ? h("span", { class: "badge" }, label(hit.type)) : null,
          hit.kind ? h("span", { class: "muted" }, hit.kind) : null,
          hit.score !== null ? h("span", { class: "score", title: "similarity score" },
            `score ${hit.score.toFixed(3)}`) : null),
        score !== null ? h("div", { class: "scorebar" }, h("span", { style: `width:${(score * 100).toFixed(1)}%` }))
          : null));
  }

  async function searchPage(_, params, current) {
    const q = params.get("q") || "";
    const type = params.get("type") || "";
    const input = h("input", { type: "search", id: "q", name: "q", value: q, placeholder: "Describe what you look for…",
      "aria-label": "search" });
    const select = h("select", { id: "type", name: "type", "aria-label": "type" },
      h("option", { value: "" }, "All types"),
      MEDIA_TYPES.map(t => h("option", { value: t, selected: t === type }, label(t))));
    const file = h("input", { type: "file", id: "image", accept: "image/*", "aria-label": "image to search by" });
    const results = h("div", { id: "results" }, h("p", { class: "muted" }, "Loading…"));
    const form = h("form", { class: "panel", id: "search-form", onsubmit: (ev) => {
      ev.preventDefault();
      const p = new URLSearchParams();
      if (input.value.trim()) p.set("q", input.value.trim());
      if (select.value) p.set("type", select.value);
      go(`#/search${p.toString() ? "?" + p : ""}`);
    } },
    h("div", { class: "searchbar" }, input, select, h("button", { type: "submit", class: "primary" }, "Search")),
    h("div", { class: "imagesearch small" }, h("span", { class: "muted" }, "Or search by image:"), file,
      h("button", { type: "button", class: "secondary", onclick: () => imageSearch(file, select.value, results) },
        "Search by image")));
    show(h("h1", {}, "Search"), form, results);
    if (!q) input.focus();

    try {
      let hits;
      let info;
      if (q) {
        const p = new URLSearchParams({ q });
        if (type) p.set("type", type);
        const data = await api("GET", `/v1/search?${p}`);
        hits = normalizeHits(data);
        info = `${hits.length} result${hits.length === 1 ? "" : "s"} for “${q}”${type ? ` in ${label(type)}` : ""}`;
      } else {
        const p = new URLSearchParams({ limit: "60" });
        if (type) p.set("type", type);
        const data = await api("GET", `/v1/media?${p}`);
        hits = normalizeHits(data);
        info = `Recently added${type ? ` · ${label(type)}` : ""} (${data.total} in the library)`;
      }
      if (!current()) return;
      results.replaceChildren(h("p", { class: "resultinfo muted" }, info),
        hits.length ? h("div", { class: "grid" }, hits.map(card)) : h("div", { class: "notice" }, "Nothing found."));
    } catch (err) {
      if (!current()) return;
      results.replaceChildren(err.status === 404 && q
        ? h("div", { class: "notice" }, "Search is not available on this box yet (no search service).")
        : errorBox(err));
    }
  }

  async function imageSearch(file, type, results) {
    if (!file.files || !file.files.length) {
      results.replaceChildren(h("div", { class: "notice" }, "Choose an image first."));
      return;
    }
    const form = new FormData();
    form.append("image", file.files[0]);
    if (type) form.append("type", type);
    results.replaceChildren(h("p", { class: "muted" }, "Searching…"));
    try {
      const data = await api("POST", `/v1/search/image${type ? `?type=${encodeURIComponent(type)}` : ""}`, form);
      const hits = normalizeHits(data);
      results.replaceChildren(h("p", { class: "resultinfo muted" }, `${hits.length} result(s) like ${file.files[0].name}`),
        hits.length ? h("div", { class: "grid" }, hits.map(card)) : h("div", { class: "notice" }, "Nothing found."));
    } catch (err) {
      results.replaceChildren(errorBox(err));
    }
  }

  // ------------------------------------------------------------------ item

  function player(item) {
    const src = item.urls.content;
    const kind = item.kind || (item.mime || "").split("/")[0];
    if (kind === "video") {
      return h("video", { id: "player", controls: true, preload: "metadata", src,
        poster: item.urls.thumbnail || null });
    }
    if (kind === "audio") return h("audio", { id: "player", controls: true, preload: "metadata", src });
    if (kind === "image") return h("img", { id: "player", src, alt: item.title || "" });
    return h("p", { class: "notice" }, "No preview for this kind of file. ", h("a", { href: src }, "Open the file"));
  }

  async function itemPage(parts, _, current) {
    const id = parts[0] || "";
    if (!/^[0-9]+$/.test(id)) {
      show(errorBox({ code: "bad_id", message: `not an item id: ${id}` }));
      return;
    }
    show(h("p", { class: "muted" }, "Loading…"));
    const item = await api("GET", `/v1/media/${id}`);
    if (!current()) return;
    const facts = {
      type: label(item.type), kind: item.kind, mime: item.mime, size: human(item.size),
      duration: item.duration_s ? duration(item.duration_s) : undefined,
      dimensions: item.width && item.height ? `${item.width} × ${item.height}` : undefined,
      created: item.created_at || undefined, added: item.added_at, "file name": item.file_name,
      refreshed: item.refreshed_at || undefined,
      hash: item.file_hash ? h("code", {}, item.file_hash) : undefined,
    };
    const factRows = Object.entries(facts).filter(([, v]) => v !== undefined && v !== null);
    const paths = item.paths || {};
    show(
      h("p", {}, h("a", { href: "#/search", id: "back", onclick: (ev) => {
        if (history.length > 1) {
          ev.preventDefault();
          history.back();
        }
      } }, "← Back")),
      h("h1", { id: "item-title" }, item.title || item.file_name || `Item ${item.id}`),
      h("div", { class: "item" },
        h("div", {}, h("div", { class: "player" }, player(item)),
          Object.keys(item.details || {}).length
            ? h("div", { class: "panel", style: "margin-top:1.25rem" }, h("h2", {}, "Details"), kvTable(item.details))
            : null,
          Object.keys(item.metadata || {}).length
            ? h("details", { class: "panel" }, h("summary", {}, "Technical metadata"),
              h("pre", { class: "mono small" }, JSON.stringify(item.metadata, null, 2)))
            : null),
        h("div", {},
          h("div", { class: "panel" }, h("h2", {}, "About"),
            h("table", { class: "kv" }, h("tbody", {}, factRows.map(([k, v]) =>
              h("tr", {}, h("th", {}, k), h("td", {}, v)))))),
          h("div", { class: "panel" }, h("h2", {}, "On the box"),
            kvTable({ stored: paths.blob, thumbnail: paths.thumbnail, "preview clip": paths.preview_clip }),
            h("h3", {}, "Found at"),
            paths.sources && paths.sources.length
              ? h("ul", { class: "small mono" }, paths.sources.map(s => h("li", {}, s)))
              : h("p", { class: "muted small" }, "no source paths recorded"),
            h("p", { class: "small" }, h("a", { href: item.urls.content, download: item.file_name || "" }, "Download"),
              item.urls.preview ? [" · ", h("a", { href: item.urls.preview }, "Preview clip")] : null)))));
  }

  // ------------------------------------------------------------------ status

  function section(title, id, body) {
    return h("section", { class: "panel", id }, h("h2", {}, title), body);
  }

  function missing(name) {
    return h("p", { class: "muted small" }, `The ${name} service reports nothing (not installed or not started).`);
  }

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

  function stat(name, value) {
    return h("div", { class: "stat" }, h("span", { class: "big" }, scalar(value)), h("span", { class: "muted small" }, name));
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

  function wantedTable(entries) {
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

  function catalogSection(s) {
    if (!s) return section("Wanted titles", "status-wanted", missing("catalog"));
    const counts = s.counts || {};
    return section("Wanted titles", "status-wanted", [
      h("div", { class: "stats" }, Object.entries(counts).map(([k, v]) => stat(k, v))),
      s.last_error ? h("div", { class: "error small" }, s.last_error) : null,
      wantedTable(s.entries || []),
    ]);
  }

  async function statusPage(_, __, current) {
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
    if (current()) refreshTimer = setInterval(load, 2000);
  }

  // ------------------------------------------------------------------ storage

  // The storage service's conditions (pools/service.py); any other type naming a disk, pool, array or mount too.
  const STORAGE_CONDITIONS = ["Degraded", "DiskMissing", "MountMissing", "DiskFull", "StorageUnknown"];
  const isStorageCondition = c => STORAGE_CONDITIONS.includes(c.type) || /(disk|pool|array|mount|storage|raid)/i.test(c.type);
  // Ready is good when true; every other condition is a problem when true.
  const isProblem = c => (c.type === "Ready" ? !c.status : Boolean(c.status));

  function problemBox(c) {
    return h("div", { class: "condition bad", role: "alert", "data-type": c.type },
      h("strong", {}, c.type === "Ready" ? "Not ready" : c.type), h("span", {}, c.reason || "(no reason given)"),
      c.since ? h("span", { class: "small muted" }, `since ${when(c.since)}`) : null);
  }

  function storageConditions(st) {
    const all = st.conditions || [];
    const ours = all.filter(isStorageCondition);
    const elsewhere = all.filter(c => !isStorageCondition(c) && isProblem(c));
    const parts = [];
    if (!ours.length) {
      parts.push(h("p", { class: "muted small", id: "storage-no-conditions" },
        "The storage service reports no conditions: with no pool declared there is no disk, array or mount to watch."));
    } else {
      const bad = ours.filter(isProblem);
      parts.push(bad.length ? bad.map(problemBox)
        : h("p", { class: "condition good" }, h("strong", {}, "All clear"), h("span", {}, `${ours.length} storage conditions, none true`)));
      parts.push(listTable(ours, [
        { title: "condition", render: c => c.type },
        { title: "status", render: c => stateBadge(isProblem(c) ? "true" : "false", isProblem(c) ? "bad" : "ok") },
        { title: "reason", render: c => c.reason || "" }]));
    }
    if (elsewhere.length) {
      parts.push(h("h3", {}, "Elsewhere on this box"), elsewhere.map(problemBox),
        h("p", { class: "small" }, h("a", { href: "#/status" }, "Status page →")));
    }
    return section("Conditions", "storage-conditions", parts);
  }

  function usage(fs) {
    if (!fs || !fs.size) return h("span", { class: "muted" }, "not mounted: size unknown");
    const pct = fs.used_percent ?? (fs.used !== null ? Math.round(100 * fs.used / fs.size) : null);
    const bar = progressBar(fs.used || 0, (fs.used || 0) + (fs.avail ?? (fs.size - (fs.used || 0))),
      `${human(fs.used)} of ${human(fs.size)} used${pct !== null ? ` (${pct}%)` : ""} · ${human(fs.avail)} free`);
    if (pct !== null && pct >= 95) bar.classList.add("full");
    return bar;
  }

  function arrayState(a) {
    if (!a) return h("span", { class: "muted" }, "no array (a single disk)");
    const text = a.sync_action ? `${a.state}, ${a.sync_action}${a.progress !== null && a.progress !== undefined
      ? ` ${Number(a.progress).toFixed(1)}%` : ""}` : a.state;
    return h("span", {}, stateBadge(text, a.degraded || ["inactive", "stopped"].includes(a.state) ? "bad"
      : a.state === "clean" ? "ok" : a.state === "absent" ? "" : "warn"),
    a.raid_devices !== null && a.working !== null && a.raid_devices !== undefined
      ? h("span", { class: "small muted" }, ` ${a.working}/${a.raid_devices} members`) : null);
  }

  function poolsSection(sv) {
    if (!sv) return section("Pools", "storage-pools", missing("storage"));
    const pools = sv.pools || [];
    const parts = [];
    if (sv.error) parts.push(h("div", { class: "error small" }, sv.error));
    if (!pools.length) {
      parts.push(h("p", { class: "notice", id: "storage-no-pools" },
        "No storage pools are declared in harbor.yaml (storage.pools): media lives on the system disk. ",
        "Add a pool to have BitHarbor build the array, make the filesystem and mount it."));
    } else {
      parts.push(listTable(pools, [
        { title: "pool", render: p => h("span", {}, h("strong", {}, p.pool), h("div", { class: "small muted" }, p.raid && p.raid !== "none" ? `raid${p.raid}` : "no RAID")) },
        { title: "array", render: p => arrayState(p.array) },
        { title: "disks", render: p => h("ul", { class: "plain small" }, (p.disks || []).map(d => h("li", {},
          d.present ? stateBadge("present", "ok") : stateBadge("missing", "bad"), " ", h("code", {}, d.path),
          d.device && d.device !== d.path ? h("span", { class: "muted" }, ` → ${d.device}`) : null))) },
        { title: "mount", render: p => h("span", {}, h("code", {}, p.mount), " ",
          p.mounted ? stateBadge("mounted", "ok") : stateBadge("not mounted", "bad"),
          !p.mounted && p.mount_source ? h("div", { class: "small muted" }, `${p.mount_source} is mounted there instead`) : null) },
        { title: "space", render: p => usage(p.filesystem) }]));
    }
    const ready = sv.media_ready || {};
    if (ready.reason) {
      parts.push(h("p", { class: ready.ok ? "small muted" : "condition bad" },
        ready.ok ? `Ingest may write: ${ready.reason}` : [h("strong", {}, "Ingest paused"), h("span", {}, ready.reason)]));
    }
    return section("Pools", "storage-pools", parts);
  }

  function byId(ids) {
    const named = (ids || []).filter(i => i.includes("/by-id/"));
    const shown = named.length ? named : ids || [];
    return shown.length ? h("ul", { class: "plain mono small" }, shown.map(i => h("li", {}, i.replace(/^\/dev\/disk\//, ""))))
      : h("span", { class: "muted small" }, "no /dev/disk/by-id name");
  }

  function diskHealth(d) {
    if (d.missing) return stateBadge("missing", "bad");
    if (d.md && d.md.role === "faulty") return stateBadge(`faulty in ${d.md.array || d.md.name}`, "bad");
    if (d.unreadable) return h("span", {}, stateBadge("unreadable", "warn"), h("div", { class: "small muted" }, d.unreadable));
    if (d.md) return stateBadge(`${d.md.role} of ${d.md.array || d.md.name || "an array"}`, d.md.active ? "ok" : "warn");
    return stateBadge(d.size ? "present" : "no space", d.size ? "ok" : "warn");
  }

  function disksSection(dev, sv) {
    if (dev.error) {
      return section("Disks", "storage-disks", dev.error.status === 404 ? missing("storage") : errorBox(dev.error));
    }
    const devices = [...(dev.data.devices || [])];
    // a pool disk that is not there at all: a row of its own, so it is not silently absent from the list
    for (const p of (sv && sv.pools) || []) {
      for (const d of p.disks || []) {
        if (!d.present) devices.push({ path: d.path, missing: true, pool: p.pool, ids: [], mountpoints: [] });
      }
    }
    if (!devices.length) return section("Disks", "storage-disks", h("p", { class: "notice" }, "lsblk lists no block devices."));
    return section("Disks", "storage-disks", listTable(devices, [
      { title: "device", render: d => h("span", {}, h("code", {}, d.path),
        d.model || d.serial ? h("div", { class: "small muted" }, [d.model, d.serial].filter(Boolean).join(" · ")) : null,
        d.root ? h("div", {}, stateBadge("system disk (/)", "")) : null) },
      { title: "by-id", render: d => byId(d.ids) },
      { title: "size", render: d => d.missing ? "–" : h("span", {}, human(d.size),
        d.type ? h("div", { class: "small muted" }, `${d.type}${d.rotational ? ", rotational" : d.rotational === false ? ", solid state" : ""}`) : null) },
      { title: "health", render: diskHealth },
      { title: "use", render: d => d.missing ? h("span", {}, `pool ${d.pool}: `, h("strong", {}, "not present"))
        : h("span", {}, stateBadge(d.verdict ? d.verdict.state : "unknown", d.verdict && d.verdict.state === "free" ? "ok" : ""),
          d.pool ? h("span", { class: "badge" }, ` pool ${d.pool}`) : null,
          d.verdict && d.verdict.reason ? h("div", { class: "small muted" }, d.verdict.reason) : null,
          (d.partitions || []).length ? h("ul", { class: "plain small mono" }, d.partitions.map(pt => h("li", {},
            `${pt.path} ${human(pt.size)}${pt.fstype ? ` ${pt.fstype}` : ""}${(pt.mountpoints || []).length ? ` on ${pt.mountpoints.join(", ")}` : ""}`)))
            : null) }]));
  }

  function arraysSection(dev, sv) {
    const fromPools = ((sv && sv.pools) || []).filter(p => p.array);
    const arrays = dev.data ? dev.data.arrays || [] : [];
    const parts = [];
    if (dev.data && dev.data.md_driver === false) {
      parts.push(h("p", { class: "muted small", id: "storage-no-md" },
        "The md RAID driver is not loaded (no /proc/mdstat): there are no arrays on this box."));
    }
    if (arrays.length) {
      parts.push(listTable(arrays, [
        { title: "array", render: a => h("span", {}, h("code", {}, a.device), a.name ? h("div", { class: "small muted" }, a.name) : null) },
        { title: "level", render: a => a.level || "–" },
        { title: "state", render: a => stateBadge(!a.active ? "inactive" : a.degraded ? "degraded" : "active",
          !a.active || a.degraded ? "bad" : "ok") },
        { title: "members", render: a => h("span", { class: "small mono" }, (a.members || []).join(" ") || "–") },
        { title: "faulty / spares", render: a => [
          (a.faulty || []).length ? stateBadge(`faulty: ${a.faulty.join(" ")}`, "bad") : null,
          (a.spares || []).length ? h("span", { class: "small" }, ` spares: ${a.spares.join(" ")}`) : null,
          !(a.faulty || []).length && !(a.spares || []).length ? "–" : null] }]));
    } else if (dev.data && dev.data.md_driver !== false) {
      parts.push(h("p", { class: "muted small" }, "No md arrays are assembled."));
    }
    for (const p of fromPools) {
      if (p.array.state === "absent") parts.push(h("p", { class: "small" }, `Pool ${p.pool}'s array (raid${p.raid}) is not created yet.`));
    }
    return section("Arrays", "storage-arrays", parts.length ? parts : h("p", { class: "muted small" }, "Nothing reported."));
  }

  function mountsSection(dev, sv) {
    const rows = ((sv && sv.pools) || []).map(p => ({ mount: p.mount, what: `pool ${p.pool}`, fs: p.filesystem, mounted: p.mounted,
      source: p.mount_source }));
    const poolMounts = new Set(rows.map(r => r.mount));
    for (const d of (dev.data && dev.data.devices) || []) {
      for (const node of [d, ...(d.partitions || [])]) {
        for (const m of node.mountpoints || []) {
          if (!poolMounts.has(m)) rows.push({ mount: m, what: node.path, fs: null, mounted: true, other: true });
        }
      }
    }
    if (!rows.length) return section("Mounts and free space", "storage-mounts", h("p", { class: "muted small" }, "No mounts reported."));
    return section("Mounts and free space", "storage-mounts", [listTable(rows, [
      { title: "mount point", render: r => h("code", {}, r.mount) },
      { title: "from", render: r => h("span", {}, r.what, r.source && !r.other ? h("div", { class: "small muted" }, r.source) : null) },
      { title: "state", render: r => r.mounted ? stateBadge("mounted", "ok") : stateBadge("not mounted", "bad") },
      { title: "free space", render: r => r.other
        ? h("span", { class: "muted small" }, "not watched (not a pool)") : usage(r.fs) }])]);
  }

  async function storagePage(_, __, current) {
    const stamp = h("span", { class: "updated small muted" });
    const body = h("div", { id: "storage" }, h("p", { class: "muted" }, "Loading…"));
    show(h("h1", {}, "Storage ", stamp), body);
    const load = async () => {
      const [st, devices] = await Promise.allSettled([api("GET", "/v1/status"), api("GET", "/v1/devices")]);
      if (!current()) return;
      if (st.status === "rejected") {
        body.replaceChildren(errorBox(st.reason));
        return;
      }
      const sv = (st.value.services || {}).storage;
      const dev = devices.status === "fulfilled" ? { data: devices.value } : { error: devices.reason };
      body.replaceChildren(storageConditions(st.value), poolsSection(sv), disksSection(dev, sv),
        h("div", { class: "cards" }, arraysSection(dev, sv), mountsSection(dev, sv)));
      if (st.value.sandbox) {
        body.prepend(h("p", { class: "small muted", id: "storage-sandbox" }, "Sandboxed (--state-dir ",
          h("code", {}, st.value.sandbox), "): BitHarbor only ever touches loop devices here."));
      }
      stamp.textContent = `updated ${new Date().toLocaleTimeString()}`;
    };
    await load();
    if (current()) refreshTimer = setInterval(load, 10000);
  }

  // ------------------------------------------------------------------ catalog

  function wantedBody(film) {
    if (film.tmdb && film.tmdb.id) return { tmdb: film.tmdb.id };
    if (film.best && film.best.identifier) return { archive: film.best.identifier };
    const body = { title: film.title };
    if (film.year) body.year = film.year;
    return body;
  }

  function filmRow(film) {
    const button = h("button", { type: "button", class: "secondary add-wanted" }, "Add to wanted");
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const res = await api("POST", "/v1/catalog/ingest", wantedBody(film));
        const state = res && res.entry ? res.entry.state : "added";
        button.textContent = res && res.created === false ? `Already wanted (${state})` : `Added (${state})`;
        loadWanted();
      } catch (err) {
        button.disabled = false;
        button.after(errorBox(err));
      }
    });
    const best = film.best;
    const tmdb = film.tmdb || {};
    return h("div", { class: "film" },
      h("div", { class: "what" },
        h("div", { class: "title" }, `${film.title}${film.year ? ` (${film.year})` : ""}`),
        h("div", { class: "meta muted" },
          film.runtime_min ? h("span", {}, `${film.runtime_min} min`) : null,
          film.directors && film.directors.length ? h("span", {}, `by ${film.directors.join(", ")}`) : null,
          tmdb.id ? h("span", { class: "badge" }, `TMDB ${tmdb.id}`) : null,
          best ? h("span", { class: "badge ok" }, `copy: ${best.identifier || best.item?.identifier || "found"}`)
            : h("span", { class: "badge warn" }, "no free copy found")),
        tmdb.overview ? h("p", { class: "small" }, tmdb.overview) : null),
      button);
  }

  function candidateRows(e) {
    const chosen = e.identifier;
    return h("table", { class: "list candidates" },
      h("thead", {}, h("tr", {}, ["#", "copy", "score", "verdict", "video", "reasons"].map(t => h("th", {}, t)))),
      h("tbody", {}, e.candidates.map((c, i) => {
        const isChosen = c.identifier === chosen && c.accepted;
        return h("tr", { class: isChosen ? "chosen" : c.accepted ? "accepted" : "rejected", "data-identifier": c.identifier },
          h("td", { class: "num" }, String(i + 1)),
          h("td", {}, h("code", {}, c.identifier), h("div", { class: "small" }, c.title || "untitled",
            c.year && !String(c.title || "").includes(String(c.year)) ? ` (${c.year})` : "")),
          h("td", { class: "num score" }, typeof c.score === "number" ? c.score.toFixed(1) : "–"),
          h("td", {}, isChosen ? stateBadge("chosen", "ok") : c.accepted ? stateBadge("accepted", "")
            : stateBadge("rejected", "bad")),
          h("td", { class: "small" }, c.video ? [c.video.format || "?", h("div", { class: "muted" }, human(c.video.size))]
            : h("span", { class: "muted" }, "no usable video")),
          h("td", { class: "small" }, (c.reasons || []).length
            ? h("ul", { class: "reasons" }, c.reasons.map(r => h("li", { class: /^rejected/.test(r) ? "rejected" : "" }, r)))
            : "–"));
      })));
  }

  const VIDEO_HOST_KINDS = ["youtube", "youtube_playlist", "youtube_channel"];

  function whyBody(e) {
    const kept = Array.isArray(e.candidates) ? e.candidates : null;
    const notes = (e.notes || []).length ? h("ul", { class: "notes small" }, e.notes.map(n => h("li", {}, n))) : null;
    if (VIDEO_HOST_KINDS.includes(e.kind)) {
      return h("p", { class: "muted small" }, "A video host entry: yt-dlp picks the copy, nothing is ranked.");
    }
    if (kept === null) {
      return h("p", { class: "muted small not-recorded" }, e.attempts
        ? "Candidates not recorded; searched before this version (they are kept from its next search on)."
        : "Not searched yet.");
    }
    if (!kept.length) return [notes, h("p", { class: "notice small" }, e.error || "The Internet Archive had no candidate at all.")];
    const more = (e.candidates_total || kept.length) - kept.length;
    return [
      h("p", { class: "small muted" }, `${kept.length} candidate${kept.length === 1 ? "" : "s"} from the search of `,
        when(e.searched_at), ", best first", more > 0 ? ` (${more} more not kept)` : "", "."),
      notes,
      !e.identifier && e.error ? h("p", { class: "notice small" }, e.error) : null,
      candidateRows(e)];
  }

  // The list (GET /v1/catalog) is lean; an entry's candidates are fetched when its title is opened.
  function whyEntry(e, open) {
    const name = e.title ? `${e.title}${e.year ? ` (${e.year})` : ""}` : (e.label || e.key);
    const body = h("div", { class: "why-body" }, h("p", { class: "muted small" }, "Loading…"));
    const details = h("details", { class: "why", "data-key": e.key },
      h("summary", {}, h("span", { class: "title" }, name), stateBadge(e.state),
        e.identifier ? h("span", { class: "small" }, "chosen ", h("code", {}, e.identifier),
          typeof e.score === "number" ? ` · score ${e.score.toFixed(1)}` : "")
          : h("span", { class: "small muted" }, "no copy chosen")),
      body);
    let loading = null;
    const load = () => {
      if (VIDEO_HOST_KINDS.includes(e.kind)) {
        body.replaceChildren(...[whyBody(e)].flat().filter(Boolean));
        return;
      }
      loading = loading || api("GET", `/v1/catalog/entries/${encodeURIComponent(e.key)}`).then(data => {
        body.replaceChildren(...[whyBody(data.entry)].flat().filter(Boolean));
        details.dataset.loaded = "true";
      }, err => {
        loading = null; // opening it again tries again
        body.replaceChildren(errorBox(err));
      });
    };
    details.addEventListener("toggle", () => { if (details.open) load(); });
    if (open) {
      details.open = true;
      load();
    }
    return details;
  }

  function whyList(entries) {
    if (!entries.length) return h("p", { class: "muted small" }, "Nothing wanted yet.");
    return entries.map(e => whyEntry(e, entries.length <= 5));
  }

  let loadWanted = () => {};

  async function catalogPage(_, params, current) {
    const q = params.get("q") || "";
    const year = params.get("year") || "";
    const input = h("input", { type: "search", id: "catalog-q", value: q, placeholder: "A film title",
      "aria-label": "title" });
    const yearInput = h("input", { type: "number", id: "catalog-year", value: year, placeholder: "Year",
      min: 1870, max: 2100, style: "width:7rem", "aria-label": "year" });
    const results = h("div", { id: "catalog-results" });
    const wanted = h("div", { id: "wanted" }, h("p", { class: "muted" }, "Loading…"));
    const why = h("div", { id: "why" });
    show(h("h1", {}, "Catalog"),
      h("form", { class: "panel", id: "catalog-form", onsubmit: (ev) => {
        ev.preventDefault();
        const p = new URLSearchParams();
        if (input.value.trim()) p.set("q", input.value.trim());
        if (yearInput.value) p.set("year", yearInput.value);
        go(`#/catalog?${p}`);
      } }, h("p", { class: "muted small" }, "Find a film (TMDB and the Internet Archive) and add it to the wanted list."),
      h("div", { class: "searchbar" }, input, yearInput, h("button", { type: "submit", class: "primary" }, "Find"))),
      results,
      h("section", { class: "panel" }, h("h2", {}, "Wanted"), wanted),
      h("section", { class: "panel", id: "why-this-copy" }, h("h2", {}, "Why this copy"),
        h("p", { class: "muted small" }, "Per wanted title: every Internet Archive candidate its last search ranked, "
          + "with its score, whether it was accepted, and the reasons."), why));
    loadWanted = async () => {
      try {
        const data = await api("GET", "/v1/catalog");
        if (!current()) return;
        const list = (data && data.entries) || [];
        const opened = new Set([...why.querySelectorAll("details.why")].filter(d => d.open).map(d => d.dataset.key));
        wanted.replaceChildren(wantedTable(list));
        why.replaceChildren(...[whyList(list)].flat());
        if (opened.size) for (const d of why.querySelectorAll("details.why")) d.open = d.open || opened.has(d.dataset.key);
      } catch (err) {
        if (current()) wanted.replaceChildren(err.status === 404 ? missing("catalog") : errorBox(err));
      }
    };
    loadWanted();
    if (!q) return;
    results.replaceChildren(h("p", { class: "muted" }, "Searching…"));
    try {
      const p = new URLSearchParams({ q });
      if (year) p.set("year", year);
      const data = await api("GET", `/v1/catalog/search?${p}`);
      if (!current()) return;
      const films = (data && (data.films || data.results)) || [];
      results.replaceChildren(h("section", { class: "panel" }, h("h2", {}, `${films.length} match(es) for “${q}”`),
        films.length ? films.map(filmRow) : h("p", { class: "muted" }, "Nothing found.")));
    } catch (err) {
      if (current()) results.replaceChildren(errorBox(err));
    }
  }

  // ------------------------------------------------------------------ start

  document.getElementById("logout").addEventListener("click", async () => {
    try {
      await api("POST", "/v1/auth/logout", undefined, { quiet401: true });
    } catch (_) { /* logged out either way */ }
    forget();
    go("#/login");
  });
  window.addEventListener("hashchange", render);
  render();
})();

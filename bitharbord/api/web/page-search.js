/* #/search?q=&type=: text search, recent items without a query, search by image; results as cards with scores. */

import { api } from "./api.js";
import { errorBox, h, show } from "./dom.js";
import { label } from "./format.js";
import { go } from "./nav.js";

const MEDIA_TYPES = ["personal", "movie", "tv", "music", "podcast", "online_video", "other"];

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

export async function searchPage(_, params, current) {
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

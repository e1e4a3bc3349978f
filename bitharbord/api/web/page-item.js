/* #/item/<id>: one item with its player, facts, details and where it is on the box. */

import { api } from "./api.js";
import { errorBox, h, show } from "./dom.js";
import { duration, human, label } from "./format.js";
import { kvTable } from "./widgets.js";

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

export async function itemPage(parts, _, current) {
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

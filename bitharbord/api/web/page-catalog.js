/* #/catalog?q=&year=: find a film and add it to the wanted list; the wanted list; per wanted title "why this copy"
 * (every candidate of its last search with score, verdict and reasons, fetched when the title is opened). */

import { api } from "./api.js";
import { errorBox, h, show } from "./dom.js";
import { human, when } from "./format.js";
import { go } from "./nav.js";
import { missing, stateBadge, wantedTable } from "./widgets.js";

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

export async function catalogPage(_, params, current) {
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

/* BitHarbor web UI: plain ES modules, no build step, no dependencies. Talks only to this daemon's /v1 API.
 *
 * Pages (hash routes): #/login, #/search?q=&type=, #/item/<id>, #/status, #/storage, #/catalog.
 * The token from POST /v1/auth/login is kept in sessionStorage and sent as a Bearer header; the daemon also
 * sets an HttpOnly cookie at login that GET requests accept, which is what <img> and <video> use.
 * Every service's data is optional: a page shows what the daemon reports and says what is missing.
 *
 * This module is the router and the boot only. The rest, all in this directory (served as /ui/<file>):
 * dom.js (h(), show, errorBox), format.js (sizes, durations, dates, values), widgets.js (tables, badges, progress
 * bars, panels), api.js (token, fetch, ApiError), nav.js (go, the page's refresh timer), and one module per page:
 * page-login.js, page-search.js, page-item.js, page-status.js, page-storage.js, page-catalog.js.
 */

import { api, forget, loggedIn, userName } from "./api.js";
import { errorBox, h, show } from "./dom.js";
import { go, onRender, stopRefreshing } from "./nav.js";
import { catalogPage } from "./page-catalog.js";
import { itemPage } from "./page-item.js";
import { loginPage } from "./page-login.js";
import { searchPage } from "./page-search.js";
import { statusPage } from "./page-status.js";
import { storagePage } from "./page-storage.js";

const pages = { login: loginPage, search: searchPage, item: itemPage, status: statusPage, storage: storagePage,
  catalog: catalogPage };
let renderSeq = 0;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query] = raw.split("?");
  return { parts: path.split("/").filter(Boolean), params: new URLSearchParams(query || "") };
}

async function render() {
  const seq = ++renderSeq;
  stopRefreshing();
  const { parts, params } = parseHash();
  const page = parts[0] || "search";
  const signedIn = loggedIn();
  document.getElementById("top").hidden = !signedIn || page === "login";
  document.getElementById("who").textContent = userName();
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", a.dataset.nav === page || (page === "item" && a.dataset.nav === "search"));
  }
  if (!signedIn && page !== "login") {
    go("#/login");
    return;
  }
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

// ------------------------------------------------------------------ start

onRender(render);
document.getElementById("logout").addEventListener("click", async () => {
  try {
    await api("POST", "/v1/auth/logout", undefined, { quiet401: true });
  } catch (_) { /* logged out either way */ }
  forget();
  go("#/login");
});
window.addEventListener("hashchange", render);
render();

/* Where the page goes: go(hash) moves to a page (or renders it again when it is already there), and the refresh
 * timer of the page on screen (status, storage), stopped by the router before it renders the next page.
 * app.js registers the router with onRender; this module imports nothing, so every page can use it. */

let renderer = () => {};
let refreshTimer = null;

export function onRender(fn) {
  renderer = fn;
}

export function go(hash) {
  if (location.hash === hash) renderer();
  else location.hash = hash;
}

export function refreshEvery(ms, fn) {
  refreshTimer = setInterval(fn, ms);
}

export function stopRefreshing() {
  clearInterval(refreshTimer);
  refreshTimer = null;
}

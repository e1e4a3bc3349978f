/* The h() helper that builds elements (no innerHTML: no injection), and how a page shows its content and errors. */

const view = document.getElementById("view");

export function h(tag, attrs, ...children) {
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

export function show(...nodes) {
  view.replaceChildren(...nodes);
}

export function errorBox(err) {
  const code = err && err.code ? `${err.code}: ` : "";
  return h("div", { class: "error", role: "alert" }, code + (err && err.message ? err.message : String(err)));
}

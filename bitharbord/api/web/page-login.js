/* #/login: name and password; POST /v1/auth/login keeps the token and goes to search. */

import { api, remember } from "./api.js";
import { errorBox, h, show } from "./dom.js";
import { go } from "./nav.js";

export async function loginPage() {
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
      remember(data.token, data.name);
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

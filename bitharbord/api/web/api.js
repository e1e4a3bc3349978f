/* The daemon's /v1 API: the token kept in sessionStorage (sent as a Bearer header), fetch with JSON in and out,
 * errors as ApiError (status, code, message). A 401 forgets the token and goes to the login page. */

import { go } from "./nav.js";

const TOKEN_KEY = "bitharbor.token";
const NAME_KEY = "bitharbor.name";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function api(method, path, body, { quiet401 = false } = {}) {
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

export function remember(token, name) {
  sessionStorage.setItem(TOKEN_KEY, token);
  sessionStorage.setItem(NAME_KEY, name);
}

export function forget() {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(NAME_KEY);
}

export function loggedIn() {
  return Boolean(sessionStorage.getItem(TOKEN_KEY));
}

export function userName() {
  return sessionStorage.getItem(NAME_KEY) || "";
}

/* How values read on a page: sizes, durations, dates, field names and any scalar the API reports. */

export function human(bytes) {
  if (bytes === null || bytes === undefined || isNaN(bytes)) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let n = Number(bytes);
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(n < 10 && i ? 1 : 0)} ${units[i]}`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || isNaN(seconds)) return "–";
  const s = Math.round(Number(seconds));
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return hh ? `${hh}:${String(mm).padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
}

export function when(ts) {
  if (!ts) return "–";
  const d = typeof ts === "number" ? new Date(ts * 1000) : new Date(ts);
  return isNaN(d.getTime()) ? String(ts) : d.toLocaleString();
}

export function label(key) {
  return String(key).replace(/_/g, " ");
}

export function scalar(value, key) {
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

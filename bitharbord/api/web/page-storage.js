/* #/storage: storage conditions, pools with their array state, disks by id, arrays, mounts and free space (from
 * /v1/status and /v1/devices); refreshed every 10 s. */

import { api } from "./api.js";
import { errorBox, h, show } from "./dom.js";
import { human, when } from "./format.js";
import { refreshEvery } from "./nav.js";
import { listTable, missing, progressBar, section, stateBadge } from "./widgets.js";


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

export async function storagePage(_, __, current) {
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
  if (current()) refreshEvery(10000, load);
}

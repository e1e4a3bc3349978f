"""How the catalog shows itself: each entry as the status and GET /v1/catalog list it (lean: polled every few
seconds), one entry with why its copy was chosen (GET /v1/catalog/entries/{key}), the one-line summary for
`bitharborctl status`, and the CatalogFailing and TmdbKeyUnusable conditions. Pure: rows in, data out."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bitharbord.catalog.entries import file_line
from bitharbord.catalog.runtime import TmdbProblem
from bitharbord.services import Condition
from bitharbord.store.catalog import EntryRow
from bitharbord.store.wanted import DOWNLOADED, DOWNLOADING, FAILED, STATES


def entry_json(row: EntryRow, progress: tuple[int, int | None] | None = None) -> dict[str, Any]:
    """One entry as listed; `progress` is (bytes, total) of a download in flight (else what the row last
    recorded). `reasons` are the chosen copy's; every candidate is in `entry_detail`."""
    done, total = progress if progress is not None else (row.progress_bytes, row.total_bytes)
    out: dict[str, Any] = {
        "key": row.key, "kind": row.kind, "label": row.entry.label, "origin": row.origin, "state": row.state,
        "title": row.title, "year": row.year, "tmdb_id": row.tmdb_id, "source": row.source,
        "identifier": row.identifier, "size": row.size, "score": row.score, "attempts": row.attempts,
        "next_try_at": row.next_try_at, "error": row.error, "media_ids": row.media_ids,
        "download": [file_line(row.identifier or "", f) for f in row.files], "reasons": list(row.reasons),
    }
    if row.state in (DOWNLOADING, DOWNLOADED):
        percent = round(100 * done / total, 1) if total else None
        out["progress"] = {"bytes": done, "total": total, "percent": percent}
    return out


def entry_detail(row: EntryRow, progress: tuple[int, int | None] | None = None) -> dict[str, Any]:
    """One entry with why its copy was chosen: the listed entry plus `why(row)`."""
    return {**entry_json(row, progress), **why(row)}


def why(row: EntryRow) -> dict[str, Any]:
    """Why this copy: every candidate of the entry's last search, ranked, and its notes (kept since candidates
    were recorded; `candidates` is None for an entry searched before, or never searched)."""
    kept = row.details.get("candidates")
    if not isinstance(kept, list):
        return why_unrecorded()
    notes = row.details.get("notes")
    return {
        "candidates": list(kept),
        "candidates_total": row.details.get("candidates_total"),
        "searched_at": row.details.get("searched_at"),
        "notes": [str(n) for n in notes] if isinstance(notes, list) else [],
    }


def why_unrecorded() -> dict[str, Any]:
    """`why` of an entry whose candidates were never recorded."""
    return {"candidates": None, "candidates_total": None, "searched_at": None, "notes": []}


def summary(entries_: Sequence[Mapping[str, Any]], phase: str) -> str:
    """One line for `bitharborctl status`: counts by state, then each download in flight."""
    if not entries_:
        return "no wanted titles" if phase == "running" else phase
    counts: dict[str, int] = {}
    for e in entries_:
        counts[e["state"]] = counts.get(e["state"], 0) + 1
    text = f"{len(entries_)} wanted: " + ", ".join(
        f"{counts[s]} {s.replace('_', ' ')}" for s in STATES if counts.get(s))
    for e in entries_:
        p = e.get("progress")
        if e["state"] == DOWNLOADING and p:
            pct = f" {p['percent']:.0f}%" if p.get("percent") is not None else ""
            text += f"; {e['key']} downloading{pct}"
    return text


def conditions(rows: Iterable[EntryRow]) -> Sequence[Condition]:
    failed = sorted((r for r in rows if r.state == FAILED), key=lambda r: r.key)
    if not failed:
        return [Condition("CatalogFailing", False, "no failed entries")]

    def short(text: str | None, limit: int = 100) -> str:
        text = " ".join(str(text or "").split())
        return text if len(text) <= limit else text[:limit - 1] + "…"

    # one line for status and the condition log; every entry's whole error is in `catalog list`
    reason = f"{len(failed)} failed: " + "; ".join(f"{r.key}: {short(r.error)}" for r in failed[:2])
    if len(failed) > 2:
        reason += f"; and {len(failed) - 2} more (bitharborctl catalog list)"
    return [Condition("CatalogFailing", True, reason)]


def tmdb_condition(problem: TmdbProblem | None) -> Condition:
    """TmdbKeyUnusable: a key file is named but cannot be read, or TMDB rejected its key; films are found on the
    Internet Archive alone meanwhile. No key file at all is the owner's choice, not a condition."""
    if problem is None:
        return Condition("TmdbKeyUnusable", False, "no problem with the TMDB API key seen")
    if not problem.owner_asked:
        return Condition("TmdbKeyUnusable", False, f"{problem.message}: films are found on the Internet Archive alone")
    return Condition("TmdbKeyUnusable", True, f"{problem.message}; films are found on the Internet Archive alone "
                                              "until the key file changes")

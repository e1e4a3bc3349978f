"""harbor.yaml validation: every bad input names file, line, column, field and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from bitharbord.config import ConfigError, Harbor, load, parse

ROOT = Path(__file__).resolve().parents[1]

BASE = """\
apiVersion: bitharbor/v1
paths:
  media_root: /srv/media
  index_root: /srv/index
  config_root: /etc/bitharbor
"""


def problems(text: str) -> list[tuple[int, int, str, str]]:
    with pytest.raises(ConfigError) as info:
        parse(text, "h.yaml")
    return [(p.line, p.column, p.field, p.message) for p in info.value.problems]


# (name, yaml, line, column, field, words the message must contain)
CASES = [
    ("malformed yaml", BASE + "library:\n  watch: [\n", 8, 1, "", "malformed YAML"),
    ("tab indentation", BASE + "library:\n\twatch: []\n", 7, 1, "", "malformed YAML"),
    ("empty file", "", 1, 1, "", "empty"),
    ("top level list", "- a\n- b\n", 1, 1, "", "mapping"),
    ("wrong apiVersion", BASE.replace("bitharbor/v1", "bitharbor/v2"), 1, 13, "apiVersion", "bitharbor/v1"),
    ("unknown top key", BASE + "storgae: {}\n", 6, 1, "storgae", "unknown field"),
    ("unknown nested key", BASE + "  medai_root: /x\n", 6, 3, "paths.medai_root", "unknown field"),
    ("missing section", "apiVersion: bitharbor/v1\nlibrary: {}\n", 1, 1, "paths", "required"),
    ("missing field", BASE.replace("  config_root: /etc/bitharbor\n", ""), 3, 3, "paths.config_root", "required"),
    ("relative path", BASE.replace("/srv/media", "srv/media"), 3, 15, "paths.media_root", "absolute path"),
    ("dotdot path", BASE.replace("/srv/media", "/srv/../media"), 3, 15, "paths.media_root", "'..'"),
    ("unquoted mode", BASE + "  mode: 0750\n", 6, 9, "paths.mode", "quoted octal"),
    ("bad mode", BASE + "  mode: \"0799\"\n", 6, 9, "paths.mode", "octal mode"),
    ("wrong type bool", BASE + "library:\n  watch:\n    - {path: /in, type: personal, recursive: maybe}\n",
     8, 46, "library.watch[0].recursive", "boolean"),
    ("bad media type", BASE + "library:\n  watch:\n    - path: /in\n      type: films\n",
     9, 13, "library.watch[0].type", "'personal'"),
    ("duplicate watch path", BASE + "library:\n  watch:\n    - {path: /in, type: movie}\n"
     "    - {path: /in, type: personal}\n", 1, 1, "", "listed twice"),
    ("watch inside a root", BASE + "library:\n  watch:\n    - {path: /srv/media/in, type: movie}\n",
     1, 1, "", "overlaps paths.media_root"),
    ("same root twice", BASE.replace("/srv/index", "/srv/media"), 1, 1, "", "same directory"),
    ("duplicate key", BASE + "paths: {}\n", 6, 1, "paths", "duplicate key (first given on line 2)"),
    ("raid too few disks", BASE + "storage:\n  pools:\n    - name: p\n      disks: [/dev/vdb]\n"
     "      raid: 1\n      mount: /mnt/p\n", 8, 7, "storage.pools[0]", "at least 2 disks"),
    ("raid10 odd", BASE + "storage:\n  pools:\n    - name: p\n      disks: [/dev/a, /dev/b, /dev/c, /dev/d, /dev/e]\n"
     "      raid: 10\n      mount: /mnt/p\n", 8, 7, "storage.pools[0]", "even number"),
    ("bad raid level", BASE + "storage:\n  pools:\n    - name: p\n      disks: [/dev/vdb]\n"
     "      raid: 5\n      mount: /mnt/p\n", 10, 13, "storage.pools[0].raid", "0, 1 or 10"),
    ("disk not in /dev", BASE + "storage:\n  pools:\n    - name: p\n      disks: [/tmp/disk.img]\n"
     "      mount: /mnt/p\n", 9, 15, "storage.pools[0].disks[0]", "under /dev"),
    ("bad filesystem", BASE + "storage:\n  pools:\n    - name: p\n      disks: [/dev/vdb]\n"
     "      filesystem: ntfs\n      mount: /mnt/p\n", 10, 19, "storage.pools[0].filesystem", "'ext4'"),
    ("inline password", BASE + "admins:\n  - name: admin\n    password: hunter2\n", 7, 5, "admins[0]",
     "password_file"),
    ("no password at all", BASE + "admins:\n  - name: admin\n", 7, 5, "admins[0]", "exactly one"),
    ("wanted without a key", BASE + "catalog:\n  wanted:\n    - name: Nosferatu\n", 8, 7, "catalog.wanted[0]",
     "title, tmdb, archive"),
    ("wanted bad year", BASE + "catalog:\n  wanted:\n    - {title: Nosferatu, year: 1492}\n", 8, 32,
     "catalog.wanted[0].year", "greater than or equal to 1870"),
    ("imagebind without checkpoint", BASE + "embedding:\n  backend: imagebind\n", 7, 3, "embedding",
     "checkpoint"),
    ("bad listen", BASE + "server:\n  http:\n    listen: localhost\n", 8, 13, "server.http.listen", "HOST:PORT"),
    ("negative interval", BASE + "reconcile:\n  interval: 0\n", 7, 13, "reconcile.interval", "greater than"),
]


@pytest.mark.parametrize(("name", "text", "line", "column", "field", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_config_is_located(name: str, text: str, line: int, column: int, field: str, words: str) -> None:
    found = problems(text)
    assert any(
        (p_line, p_col, p_field) == (line, column, field) and words in msg for p_line, p_col, p_field, msg in found
    ), f"{name}: expected {line}:{column} {field!r} ~ {words!r}, got {found}"


def test_error_text_names_file_line_column_and_field() -> None:
    with pytest.raises(ConfigError) as info:
        parse(BASE.replace("/srv/media", "srv/media"), "/etc/bitharbor/harbor.yaml")
    assert str(info.value).startswith("/etc/bitharbor/harbor.yaml:3:15: paths.media_root: expected an absolute")


def test_every_problem_is_reported_at_once() -> None:
    text = BASE.replace("/srv/media", "srv/media").replace("/srv/index", "index") + "bogus: 1\n"
    fields = {p[2] for p in problems(text)}
    assert {"paths.media_root", "paths.index_root", "bogus"} <= fields


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load(tmp_path / "bin.yaml")


HARBORS = sorted(p for p in (ROOT / "examples").glob("*.yaml") if p.name != "alerts.yaml")  # alerts: Prometheus


@pytest.mark.parametrize("example", HARBORS, ids=lambda p: p.name)
def test_examples_validate(example: Path) -> None:
    harbor = load(example)
    assert harbor.apiVersion == "bitharbor/v1"


def test_example_documents_every_field() -> None:
    """Every field of every model appears in examples/harbor.yaml (as a key or in a comment)."""
    text = (ROOT / "examples" / "harbor.yaml").read_text()

    def fields(model: type) -> set[str]:
        out: set[str] = set()
        for name, info in model.model_fields.items():  # type: ignore[attr-defined]
            out.add(name)
            for arg in (*getattr(info.annotation, "__args__", ()), info.annotation):
                if isinstance(arg, type) and hasattr(arg, "model_fields"):
                    out |= fields(arg)
        return out

    from bitharbord import config

    names = fields(Harbor) | fields(config.Pool) | fields(config.WantedTitle) | fields(config.WantedPlaylist)
    names |= fields(config.WantedTmdb) | fields(config.WantedArchive) | fields(config.WantedYoutube)
    names |= fields(config.WantedChannel) | fields(config.Admin)
    missing = sorted(n for n in names if f"{n}:" not in text)
    assert not missing, f"examples/harbor.yaml does not document: {missing}"


def test_defaults_and_digest_are_stable() -> None:
    a = parse(BASE, "a.yaml")
    b = parse(BASE + "# a comment changes nothing\n", "b.yaml")
    assert a.digest == b.digest
    assert a.paths.mode == "0750"
    assert a.index.backend == "hnsw" and a.embedding.backend == "minilm"
    assert parse(BASE + "  mode: \"750\"\n").paths.mode == "0750"
    assert parse(BASE.replace("/srv/media", "/srv/media/")).paths.media_root == "/srv/media"


def test_rebased_moves_managed_paths_only(tmp_path: Path) -> None:
    harbor = parse(BASE + "library:\n  watch:\n    - {path: /in, type: movie}\n"
                   "catalog:\n  tmdb: {key_file: /etc/tmdb.key}\n", "h.yaml")
    moved = harbor.rebased(tmp_path)
    assert moved.paths.media_root == f"{tmp_path}/srv/media"
    assert moved.library.watch[0].path == f"{tmp_path}/in"
    assert moved.catalog.tmdb.key_file == "/etc/tmdb.key"  # inputs it only reads stay put
    assert moved.paths.owner is None


def test_problem_without_a_yaml_location() -> None:
    from bitharbord.config import Problem

    assert str(Problem("h.yaml", 0, 0, "storage.pools[0].disks[0]", "no such disk")) == \
        "h.yaml: storage.pools[0].disks[0]: no such disk"

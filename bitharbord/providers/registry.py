"""The providers, in the order a fresh box needs them (the planner also orders by `requires`)."""

from __future__ import annotations

from bitharbord.providers.arrays import Arrays
from bitharbord.providers.catalog import Catalog
from bitharbord.providers.database import Database
from bitharbord.providers.directories import Directories
from bitharbord.providers.disks import Disks
from bitharbord.providers.filesystems import Filesystems
from bitharbord.providers.index import IndexStore
from bitharbord.providers.library import Library
from bitharbord.providers.mounts import Mounts
from bitharbord.reconcile.provider import Provider


def providers() -> list[Provider]:
    return [Disks(), Arrays(), Filesystems(), Mounts(), Directories(), Database(), IndexStore(), Library(), Catalog()]

"""The providers, in the order a fresh box needs them (the planner also orders by `requires`)."""

from __future__ import annotations

from bitharbord.providers.base import Provider
from bitharbord.providers.catalog import Catalog
from bitharbord.providers.database import Database
from bitharbord.providers.directories import Directories
from bitharbord.providers.index import IndexStore


def providers() -> list[Provider]:
    return [Directories(), Database(), IndexStore(), Catalog()]

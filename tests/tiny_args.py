"""Tiny constructor arguments per model family, so zoo-wide tests run in seconds on two cores.

Families not listed here are made tiny by each test file's own argument-name table.
"""

from __future__ import annotations

FAMILY_TINY: dict[str, dict] = {}

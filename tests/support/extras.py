"""Packages only an extra installs, imported when a test first uses them.

A test file that needs one still collects without it (the rest of the suite
runs), and each test that uses it fails, naming the extra to install: a
missing dependency fails loudly, never skips.
"""

from __future__ import annotations

import importlib
import types
import typing as t

import pytest


class Extra:
    """Stands for the module ``name`` until an attribute of it is read."""

    def __init__(self, name: str, extra: str) -> None:
        self._name = name
        self._extra = extra
        self._module: types.ModuleType | None = None

    def __getattr__(self, attr: str) -> t.Any:
        if attr.startswith("_"):  # pytest looks over a module's names as it collects it
            raise AttributeError(attr)
        if self._module is None:
            try:
                self._module = importlib.import_module(self._name)
            except ImportError as exc:
                pytest.fail(
                    f"{self._name} cannot be imported ({exc}); the {self._extra!r} extra installs what it needs:"
                    f' `make test` installs every extra the suite needs (pip install -e ".[test,{self._extra}]").',
                    pytrace=False,
                )
        return getattr(self._module, attr)


redis = Extra("redis", "redis")
prometheus_client = Extra("prometheus_client", "metrics")
prometheus_parser = Extra("prometheus_client.parser", "metrics")
asyncws_metrics = Extra("flask_asyncws.metrics", "metrics")
playwright_api = Extra("playwright.sync_api", "browser")

"""Hooks tests: receivers on loopback are allowed (as `make run` allows them), and the embedded
store's stream is read the way `make run` reads it (scripts/stream_pump.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hooks.receiver import Receiver


@pytest.fixture(autouse=True)
def local_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERRORTRACKING_ALLOW_LOCAL_HOOKS", "true")
    monkeypatch.setenv("ERRORTRACKING_HOOK_TIMEOUT", "1")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()

"""The `tiny` synthetic world, written once per session (seconds)."""

from __future__ import annotations

import pytest

from hpcdiff.data.synth import World, load_world, write_world


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = write_world(tmp_path_factory.mktemp("synth") / "world", preset="tiny", seed=0, progress=False)
    return load_world(root)

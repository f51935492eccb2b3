"""The command line's plumbing: the registry of command modules, what `vitrina index SOURCE` means
(``IndexTarget``), `vitrina sync` through ``Collection.sync``, and the evaluation driver."""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from vitrina import Item, ModelFingerprint, open_collection
from vitrina.cli import COMMAND_MODULES, cli
from vitrina.runs import BadArgument, IndexTarget

FP = ModelFingerprint(spec="hf:test/random", revision="r1", dim=8, preprocessing="none")


def _collection(path: Path, n: int = 12):  # type: ignore[no-untyped-def]
    coll = open_collection(path, create=True)
    ids = [f"it-{i:03d}" for i in range(n)]
    with coll.writer():
        coll.add_items([Item(id=i, image=f"/x/{i}.jpg", fingerprint="1", source="s") for i in ids])
        coll.import_vectors(ids, np.random.default_rng(0).standard_normal((n, 8)).astype(np.float32), fingerprint=FP, space="v")  # fmt: skip
    return coll


def test_every_command_module_is_registered_once_and_stays_small() -> None:
    names: list[str] = []
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"vitrina.cli.{name}")
        assert module.COMMANDS, name
        for command in module.COMMANDS:
            assert cli.commands[command.name] is command
            names.append(command.name)
        assert len(Path(str(module.__file__)).read_text().splitlines()) <= 420, name
    assert sorted(names) == sorted(cli.commands) and len(set(names)) == len(names)


def test_index_target_tells_folders_collections_and_names_apart(tmp_path: Path, vitrina_home: Path) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    assert IndexTarget.resolve(str(scans)) == IndexTarget("scans", str(scans))
    assert IndexTarget.resolve(str(scans), "maps") == IndexTarget("maps", str(scans))
    assert IndexTarget.resolve(f"folder:{scans}") == IndexTarget("scans", f"folder:{scans}")
    coll = _collection(tmp_path / "maps")
    assert IndexTarget.resolve(str(coll.path)) == IndexTarget(str(coll.path), None)
    assert IndexTarget.resolve(str(coll.path), str(coll.path)) == IndexTarget(str(coll.path), None)
    assert IndexTarget.resolve(f"folder:{coll.path}", "other") == IndexTarget("other", f"folder:{coll.path}")
    _collection(vitrina_home / "named")
    assert IndexTarget.resolve("named") == IndexTarget("named", None)
    with pytest.raises(BadArgument, match="is a collection, not a folder of images") as wrong:
        IndexTarget.resolve(str(coll.path), "other")
    assert wrong.value.argument == "SOURCE"
    with pytest.raises(BadArgument, match="neither a folder nor an existing collection"):
        IndexTarget.resolve("nothing-here")
    with pytest.raises(BadArgument) as remote:
        IndexTarget.resolve("locgov:https://www.loc.gov/maps/?q=x")
    assert remote.value.argument == "--collection"
    # On the command line, each is a usage error (exit 2) that names the argument.
    out = CliRunner().invoke(cli, ["index", "locgov:https://www.loc.gov/maps/?q=x"])
    assert out.exit_code == 2 and "Invalid value for --collection: give --collection NAME" in out.output


@pytest.mark.skipif(importlib.util.find_spec("ray") is not None, reason="Ray is installed")
def test_index_on_ray_without_ray_is_a_usage_error_before_anything_is_ingested(tmp_path: Path) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    out = CliRunner().invoke(cli, ["index", str(scans), "-c", str(tmp_path / "c"), "--ray", "local"])
    assert out.exit_code == 2 and "--ray needs Ray" in out.output
    assert len(open_collection(tmp_path / "c")) == 0


def test_sync_command_goes_through_collection_sync(tmp_path: Path) -> None:
    pytest.importorskip("qdrant_client")
    coll = _collection(tmp_path / "c")
    target = f"qdrant:{tmp_path / 'q'}#maps"
    out = CliRunner().invoke(cli, ["sync", str(coll.path), target, "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) | {"target": None} == {"target": None, "collection": "maps", "space": "v", "new": 12,
                                                         "changed": 0, "removed": 0, "unchanged": 0, "points": 12}  # fmt: skip
    again = coll.sync(target, space="v")
    assert (again.new, again.unchanged, again.points) == (0, 12, 12)

"""A server's worker threads each open the collection; the vector file is still mapped once per
process (vectors.py ``_shared_map``): a page resident through N mappings counts N times in RSS."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from vitrina import Item, ModelFingerprint, open_collection

FP = ModelFingerprint(spec="hf:test/random", revision="r1", dim=16, preprocessing="none")


def _mappings(path: Path) -> int:
    name = str(path.resolve())
    return sum(1 for line in Path("/proc/self/maps").read_text().splitlines() if line.endswith(name))


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="counts mappings through /proc")
def test_every_thread_s_collection_reads_one_mapping_of_the_vector_file(tmp_path: Path) -> None:
    coll = open_collection(tmp_path / "c", create=True)
    ids = [f"it-{i:04d}" for i in range(500)]
    vectors = np.random.default_rng(0).standard_normal((500, 16)).astype(np.float32)
    with coll.writer():
        coll.add_items([Item(id=i, image=f"/x/{i}.jpg", fingerprint="1", source="s") for i in ids])
        coll.import_vectors(ids, vectors, fingerprint=FP, space="v")
    files = list((coll.path / "spaces").glob("v.*.f32"))
    assert len(files) == 1
    results: list[list[str]] = []
    held = []  # the threads' collections stay open, as a server's do
    barrier = threading.Barrier(8)

    def serve(k: int) -> None:
        mine = open_collection(coll.path, index="exact")
        held.append(mine)
        barrier.wait()
        results.append([h.id for h in mine.search_vectors(vectors[k], limit=3)[0]])

    threads = [threading.Thread(target=serve, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r[0] for r in results) == sorted(ids[:8])
    assert _mappings(files[0]) == 1


def test_stores_of_one_process_share_the_row_map_and_see_appends(tmp_path: Path) -> None:
    from vitrina.store import Store

    coll = open_collection(tmp_path / "c", create=True)
    ids = [f"it-{i:04d}" for i in range(300)]
    vectors = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    with coll.writer():
        coll.add_items([Item(id=i, image=f"/x/{i}.jpg", fingerprint="1", source="s") for i in ids])
        coll.import_vectors(ids[:200], vectors[:200], fingerprint=FP, space="v")
    a, b = Store(coll.path).space_view("v"), Store(coll.path).space_view("v")
    sp, rows_a = a.current()
    _, rows_b = b.current()
    assert rows_a is rows_b and len(rows_a) == 200  # one copy per process, not one per store (thread)
    with coll.writer():
        coll.import_vectors(ids[200:], vectors[200:], fingerprint=FP, space="v")
        coll.import_vectors(ids[:1], vectors[:1] * 2, fingerprint=FP, space="v")  # re-embedded: row 0 dies
    _, rows_b = b.current()
    _, rows_a = a.current()
    assert rows_a is rows_b and len(rows_a) == 301 and rows_a[0] == -1 and (rows_a[1:] >= 0).all()
    assert [h.id for h in open_collection(coll.path, index="exact").search_vectors(vectors[0], limit=1)[0]] == [ids[0]]

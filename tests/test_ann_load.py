"""The approximate index memory-mapped for serving (index/ann_load.py): same hits as an index read
into memory, its large arrays inside the file's mapping, and a clean fall-back to a plain read."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

from vitrina import Item, ModelFingerprint, open_collection
from vitrina.index import ann
from vitrina.index.ann import AnnIndex, AnnParams, read_ann
from vitrina.index.ann_load import is_mapped, mapping_of, read_index_at
from vitrina.store import Store

faiss = pytest.importorskip("faiss")

DIM = 32
FP = ModelFingerprint(spec="hf:test/random", revision="r1", dim=DIM, preprocessing="none")


def _collection(path: Path, n: int = 3000):  # type: ignore[no-untyped-def]
    coll = open_collection(path, create=True)
    ids = [f"it-{i:05d}" for i in range(n)]
    vectors = np.random.default_rng(0).standard_normal((n, DIM)).astype(np.float32)
    with coll.writer():
        coll.add_items([Item(id=i, image=f"/x/{i}.jpg", fingerprint="1", source="s") for i in ids])
        coll.import_vectors(ids, vectors, fingerprint=FP, space="v")
    return coll, vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _inside(index, mapping: np.ndarray) -> bool:  # type: ignore[no-untyped-def]
    """Whether the index's codes live in the mapping (not in a copy)."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        lists = ivf.invlists
        first = next(i for i in range(lists.nlist) if lists.list_size(i))
        ptr = lists.get_codes(first)
    else:
        ptr = faiss.downcast_index(index.storage).codes.data()
    address = faiss.rev_swig_ptr(ptr, 1).__array_interface__["data"][0]
    start = mapping.__array_interface__["data"][0]
    return bool(start <= address < start + mapping.size)


@pytest.mark.parametrize(("structure", "codes"), [("ivf", "sq8"), ("ivf", "flat"), ("hnsw", "sq8")])
def test_a_mapped_index_returns_the_same_hits_from_inside_the_file(tmp_path: Path, structure: str, codes: str) -> None:
    coll, unit = _collection(tmp_path / "c")
    coll.build_ann(structure=structure, codes=codes, nlist=16, threads=1, target_recall=None)
    path = coll.path / "spaces" / "v.ann"
    assert path.exists()
    _, plain = read_ann(path)
    stamp, mapped = read_ann(path, mapped=True)
    assert is_mapped(mapped) and not is_mapped(plain)
    assert _inside(mapped, mapping_of(mapped))
    queries = unit[:40].copy()
    d0, i0 = plain.search(queries, 10)
    d1, i1 = mapped.search(queries, 10)
    assert (i0 == i1).all() and np.array_equal(d0, d1)

    # What serving uses: the process-wide shared index is the mapped one, and searches through it.
    ann._SHARED.clear()
    index = AnnIndex(
        Store(coll.path), "v", AnnParams(structure=structure, codes=codes, nlist=16, exact_below=0, selective=0.0)
    )
    hits = index.search(queries[:3], limit=5)
    assert is_mapped(next(iter(ann._SHARED.values())).index)
    assert [m.ids[0] for m in hits] == [f"it-{i:05d}" for i in range(3)]
    ann._SHARED.clear()


def test_falls_back_to_a_plain_read_when_the_index_cannot_be_mapped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    coll, unit = _collection(tmp_path / "c", n=1000)
    coll.build_ann(nlist=16, threads=1, target_recall=None)
    path = coll.path / "spaces" / "v.ann"
    _, reference = read_ann(path)
    want = reference.search(unit[:5].copy(), 10)[1]

    # A faiss build without a zero-copy reader (faiss < 1.12): the real faiss, minus that reader.
    older = types.SimpleNamespace(read_index=faiss.read_index, PyCallbackIOReader=faiss.PyCallbackIOReader)
    index = read_index_at(older, path, ann.HEADER_SIZE)
    assert not is_mapped(index) and (index.search(unit[:5].copy(), 10)[1] == want).all()

    # A type whose reader fails through the zero-copy reader: read whole instead.
    def refuses(*args: object) -> None:
        raise RuntimeError("this index type needs a file reader")

    failing = types.SimpleNamespace(read_index=faiss.read_index, PyCallbackIOReader=faiss.PyCallbackIOReader,
                                    ZeroCopyIOReader=refuses, swig_ptr=faiss.swig_ptr)  # fmt: skip
    index = read_index_at(failing, path, ann.HEADER_SIZE)
    assert not is_mapped(index) and (index.search(unit[:5].copy(), 10)[1] == want).all()

    # Switched off by the environment.
    monkeypatch.setenv("VITRINA_ANN_MMAP", "0")
    _, index = read_ann(path, mapped=True)
    assert not is_mapped(index) and (index.search(unit[:5].copy(), 10)[1] == want).all()

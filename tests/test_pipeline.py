"""The indexing pipeline's stages: decoding in processes gives the vectors of decoding in threads
(uint8 pixels normalised on the model's device equal the float32 path), a decoding process that
dies costs a retry and not an item, the decoded-bytes budget holds across processes, and remote
images are fetched in this process (one Fetcher) and decoded in the others."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_images
from tests.heritage_server import HeritageServer, picture
from vitrina import open_collection
from vitrina.embedding import PreparedEmbedder, get_embedder
from vitrina.http import Fetcher


def folder_of_scans(folder: Path) -> Path:
    make_images(folder, 10, size=(90, 60))
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (300, 200), dtype=np.uint8), "L").save(
        folder / "grey.png"
    )
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return folder


def vectors_by_id(coll) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    ids, vectors = coll.vectors()
    return dict(zip(ids, vectors, strict=True))


def test_uint8_pixels_normalised_by_torch_equal_the_float32_path(tiny_clip: str, tiny_siglip: str) -> None:
    import torch

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (70 + 9 * i, 50 + 13 * i, 3), dtype=np.uint8)) for i in range(5)]
    for spec in (tiny_clip, tiny_siglip):
        embedder = get_embedder(spec)
        assert isinstance(embedder, PreparedEmbedder)
        prepared = np.stack([embedder.prep.prepare(im) for im in images])
        assert prepared.dtype == np.uint8 and prepared.shape[1:] == (embedder.prep.height, embedder.prep.width, 3)
        floats = np.stack(
            [embedder.preprocess(im) for im in images]
        )  # checked against the checkpoint's processor in test_embedding
        # torch on the device widens and normalises the uint8 pixels as numpy does on the host
        np.testing.assert_allclose(
            embedder.prep.normalise_on(torch, prepared, "cpu", torch.float32).numpy(), floats, atol=1e-6
        )
        np.testing.assert_allclose(embedder.embed_prepared(prepared), embedder.embed_pixels(floats), atol=1e-5)


@pytest.mark.slow
def test_decoding_in_processes_gives_the_vectors_of_threads(tmp_path: Path, tiny_clip: str) -> None:
    folder = folder_of_scans(tmp_path / "scans")
    threads = open_collection("threads", create=True)
    a = threads.index(str(folder), model=tiny_clip, decode="threads", batch_size=4)
    args = [
        "index",
        str(folder),
        "-c",
        "procs",
        "-m",
        tiny_clip,
        "--decode",
        "processes",
        "--workers",
        "2",
        "--batch-size",
        "4",
        "--json",
    ]
    run = subprocess.run([sys.executable, "-m", "vitrina", *args], capture_output=True, text=True, timeout=240)
    assert run.returncode == 3, run.stderr  # 3: some images failed (the broken one)
    b = json.loads(run.stdout)
    assert a.settings["decode"] == "threads" and b["settings"] == {
        "device": "cpu",
        "batch_size": 4,
        "workers": 2,
        "decode": "processes",
    }
    assert a.embedded == b["embedded"] == 11 and dict(a.failed) == b["failed_by_reason"] == {"truncated": 1}
    assert b["failures"][0]["detail"] == a.failures[0][2]  # the error crosses back from the process intact
    va, vb = vectors_by_id(threads), vectors_by_id(open_collection("procs"))
    assert va.keys() == vb.keys()
    assert min(float(va[k] @ vb[k]) for k in va) >= 0.9999


def test_a_killed_decoding_process_costs_a_retry_not_an_item(
    tmp_path: Path, tiny_clip: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = make_images(tmp_path / "scans", 12, size=(80, 60))[0].parent
    arm = tmp_path / "arm"
    arm.touch()  # the first decoding process to take an image dies (as the OOM killer would kill it)
    monkeypatch.setenv("VITRINA_FAULT", f"decode:{arm}")
    coll = open_collection("crashy", create=True)
    report = coll.index(str(folder), model=tiny_clip, decode="processes", workers=2, batch_size=4)
    assert not arm.exists() and report.decoder_crashes == 1
    assert report.embedded == 12 and not report.failed, report.to_dict()
    ids, _ = coll.vectors()
    assert len(ids) == len(set(ids)) == 12


def test_the_decoded_bytes_budget_is_shared_by_processes() -> None:
    from vitrina.images import shared_decode_budget

    context = multiprocessing.get_context("spawn")
    budget, start, spans = shared_decode_budget(context), context.Barrier(2), context.Queue()
    workers = [context.Process(target=_hold_most_of_the_budget, args=(budget, start, spans)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    (a0, a1), (b0, b1) = sorted(spans.get(timeout=5) for _ in range(2))
    assert b0 >= a1 - 0.01  # both asked at once; the second got its bytes only when the first gave them back


def _hold_most_of_the_budget(budget: tuple, start, spans) -> None:  # type: ignore[no-untyped-def, type-arg]
    from vitrina import images

    images.use_shared_decode_budget(*budget)
    start.wait(30)  # both processes ask at the same moment, however late each started
    with images.hold_decoded(), images._reserve(int(images.MAX_DECODE_BYTES * 0.6)):
        begun = time.time()
        time.sleep(0.4)
        end = time.time()
    spans.put((begun, end))


def test_remote_images_are_fetched_here_and_decoded_in_processes(
    tmp_path: Path, tiny_clip: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VITRINA_ALLOW_PRIVATE_URLS", "1")  # the "remote" host is on loopback
    with HeritageServer() as server:
        services = [server.add_image(f"p{i}", picture(i, (1500, 1000))) for i in range(6)]
        listing = tmp_path / "urls.txt"
        listing.write_text(
            "\n".join(f"{svc}/full/full/0/default.jpg" for svc in services) + f"\n{server.url}/missing.jpg\n"
        )
        runs = {}
        for mode in ("threads", "processes"):
            with Fetcher(cache_dir=tmp_path / f"cache-{mode}", allow_private=True, requests_per_second=0) as fetcher:
                coll = open_collection(f"remote-{mode}", create=True)
                report = coll.index(
                    f"urls:{listing}", model=tiny_clip, decode=mode, workers=2, batch_size=3, fetcher=fetcher
                )
                assert report.embedded == 6 and dict(report.failed) == {"not_found": 1}, (
                    report.to_dict(),
                    report.ingest,
                )
                assert fetcher.requests >= 12  # info.json and the derivative of each, through the one fetcher
                runs[mode] = vectors_by_id(coll)
    assert all(float(runs["threads"][k] @ runs["processes"][k]) >= 0.9999 for k in runs["threads"])
    asked = [p for p in server.requests("/iiif/") if not p.endswith("info.json")]
    assert asked and not any("/full/full/" in p for p in asked)  # the derivative at the model's size, never the master

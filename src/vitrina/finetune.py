"""Contrastive fine-tuning of a CLIP or SigLIP checkpoint on caption pairs from the collection.

    vitrina captions maps > pairs.jsonl
    vitrina finetune maps --pairs pairs.jsonl --epochs 8 --batch-size 32 --lr 1e-5 --out ./ft
    vitrina index maps --model hf:./ft --space ft          # a new space beside the old one
    vitrina eval maps --pairs pairs.jsonl                   # before and after, side by side

The loss is the model's own: CLIP's symmetric InfoNCE, SigLIP's sigmoid loss. Pairs marked
``"split": "held_out"`` (as `vitrina captions` writes them) are never trained on; a further
slice of the training ids (by hash, stable) is the validation set. Each epoch is validated by
retrieval on it (each caption ranks the validation images, at most ``val_candidates`` of them:
recall@k and MRR), which, unlike a contrastive loss, does not depend on the batch size; the
best MRR picks the saved epoch and drives early stopping. After every epoch a checkpoint
(weights, optimizer, scheduler, history, the run's settings) is written atomically; an
interrupted run resumes from the last one, and a resume with other settings is refused. The best
epoch is saved to ``out`` with the base model's processor and tokenizer, so `--model hf:OUT`
loads it like any other checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .collection import Collection
from .embedding import parse_spec, require_torch
from .embedding.preprocess import Preprocess
from .errors import ConfigError, ModelError, QueryError
from .faults import fault_point
from .images import read_image

FREEZE = ("none", "vision", "text", "towers")  # towers: only the projections and the temperature train


@dataclass
class FinetuneConfig:
    epochs: int = 8
    batch_size: int = 32
    lr: float = 1e-5
    weight_decay: float = 0.1
    warmup: float = 0.1  # share of the steps with a linear warm-up
    freeze: str = "none"
    patience: int = 2  # epochs without a better validation MRR before stopping
    val_percent: int = 10
    val_candidates: int = 500  # validation captions rank this many validation images (fewer if the slice is smaller)
    seed: int = 0
    max_steps_per_epoch: int | None = None
    min_val_images: int = 50  # a validation slice smaller than this is refused (see validation_refusal)
    allow_small_validation: bool = False  # train anyway, with a warning, on a slice below min_val_images


@dataclass
class FinetuneReport:
    base: str
    out: str
    train_pairs: int
    val_pairs: int
    held_out_excluded: int
    epochs_run: int = 0
    best_epoch: int = 0
    best_score: float | None = None
    selected_by: str = "val_mrr"  # or "train_loss" when there are fewer than two validation pairs
    val_candidates: int = 0
    resumed_from: int | None = None
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    val_chance: dict[str, float] = field(default_factory=dict)  # what ranking the validation images at random scores
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


MIN_VAL = 50  # validation slices smaller than this say little: recall@10 of 10 images is 100 % by construction


def validation_warning(size: int) -> str:
    from .evaluate import chance

    c = chance(size)
    return (f"The validation slice has only {size} images (fewer than {MIN_VAL}): chance alone scores recall@10 {c['recall@10']:.0%} and "
            f"MRR {c['mrr']:.3f} on it, so its figures say little; give more pairs or a larger --val-percent.")  # fmt: skip


def validation_refusal(size: int, config: FinetuneConfig) -> str:
    """Why a validation slice of ``size`` images is refused, and how to change that."""
    from .evaluate import chance

    c = chance(max(size, 1))
    return (f"The validation slice would have {size} images, fewer than the minimum of {config.min_val_images}: chance alone scores recall@10 "
            f"{c['recall@10']:.0%} and MRR {c['mrr']:.3f} on it, so the epoch it picks is a guess. Give more pairs, a larger --val-percent "
            f"(now {config.val_percent}), lower the minimum with --min-val-images N, or train anyway with --allow-small-validation "
            "(--val-percent 0: no validation, the epoch with the lowest training loss is kept).")  # fmt: skip


def split_pairs(
    pairs: list[dict[str, Any]], val_percent: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    held = [p for p in pairs if p.get("split") == "held_out"]
    usable = [p for p in pairs if p.get("split") != "held_out"]
    # By group where the pairs file has one (vitrina captions writes it): sheets of one map stay on one side.
    val = [
        p
        for p in usable
        if int(hashlib.md5(("val:" + (p.get("group") or p["id"])).encode()).hexdigest(), 16) % 100 < val_percent
    ]
    train = [p for p in usable if p not in val]
    return train, val, len(held)


def read_pairs_with_split(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            if row.get("id") and row.get("caption"):
                rows.append(
                    {
                        "id": str(row["id"]),
                        "caption": str(row["caption"]),
                        "split": row.get("split", "train"),
                        "group": row.get("group"),
                    }
                )
    return rows


# Settings that shape the run's weights or the meaning of its history: a resume must keep them.
RUN_KEYS = (
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "warmup",
    "freeze",
    "val_percent",
    "val_candidates",
    "seed",
    "max_steps_per_epoch",
)


def run_settings(
    base: str, config: FinetuneConfig, train: list[dict[str, Any]], val: list[dict[str, Any]]
) -> dict[str, Any]:
    """What a checkpoint must have been trained with to be resumed: the base, the settings, and a
    hash of the training and validation pairs."""
    digest = hashlib.sha256(
        json.dumps(
            [[p["id"], p["caption"]] for p in train] + [["val"]] + [[p["id"], p["caption"]] for p in val]
        ).encode()
    ).hexdigest()
    return {"base": base, **{k: getattr(config, k) for k in RUN_KEYS}, "pairs_sha256": digest[:16]}


def _check_resume(saved: dict[str, Any] | None, now: dict[str, Any], folder: Path) -> None:
    """Refuse to continue a run under other settings: a new batch size changes what its history
    measured, a new learning rate would be silently replaced by the saved schedule."""
    if saved is None:
        raise ConfigError(
            f"The checkpoint in {folder} does not record its settings (an older vitrina); start a new run with --restart, or use another --out."
        )
    differ = [f"{k}: {saved.get(k)!r} then, {now[k]!r} now" for k in now if saved.get(k) != now[k]]
    if differ:
        raise ConfigError(f"{folder} holds a run with other settings ({'; '.join(differ)}). Resume it with the same settings, "
                          "start a new run there with --restart, or choose another --out.")  # fmt: skip


def finetune(coll: Collection, pairs: list[dict[str, Any]], out: Path, *, model: str | None = None, config: FinetuneConfig | None = None,
             device: str | None = None, resume: bool = True, progress: Any = None) -> FinetuneReport:  # fmt: skip
    config = config or FinetuneConfig()
    if config.freeze not in FREEZE:
        raise ConfigError(f"--freeze must be one of {', '.join(FREEZE)}")
    torch = require_torch("hf")
    from transformers import AutoModel, AutoTokenizer, get_cosine_schedule_with_warmup

    base = model or (coll.spaces()[0].fingerprint.spec if coll.spaces() else None)
    backend, name = parse_spec(base) if base else ("", "")
    if base is None or backend != "hf":
        raise ConfigError(f"Fine-tuning needs a CLIP or SigLIP checkpoint (--model hf:...), not {base!r}.")
    out = Path(out).expanduser().resolve()
    checkpoints = out / "checkpoints"
    train, val, held = split_pairs(pairs, config.val_percent)
    items = coll.items([p["id"] for p in train + val])
    train = [p for p in train if p["id"] in items]
    val = [p for p in val if p["id"] in items]
    if len(train) < 2:
        raise QueryError(
            "Fewer than two training pairs whose ids are in the collection; check the pairs file (vitrina captions writes one)."
        )
    val_size = min(len(val), max(2, config.val_candidates))
    if config.val_percent > 0 and val_size < config.min_val_images and not config.allow_small_validation:
        raise QueryError(validation_refusal(val_size, config))
    report = FinetuneReport(base=base, out=str(out), train_pairs=len(train), val_pairs=len(val), held_out_excluded=held)
    started = time.perf_counter()

    settings = run_settings(base, config, train, val)
    latest = _latest_checkpoint(checkpoints) if resume else None
    if latest:
        _check_resume(json.loads((latest / "state.json").read_text()).get("settings"), settings, out)
    elif checkpoints.exists():
        shutil.rmtree(checkpoints)  # a new run: another run's checkpoints must not be mistaken for its own
    torch.manual_seed(config.seed)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    from .embedding.hf import processor_config

    try:
        net = AutoModel.from_pretrained(str(latest / "model") if latest else name).to(dev)
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as e:
        raise ModelError(
            f"Could not load {base} to fine-tune: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
        ) from e
    if net.config.model_type not in ("clip", "siglip"):
        raise ModelError(f"{base} is a {net.config.model_type!r} model; fine-tuning supports CLIP and SigLIP.")
    preprocess = Preprocess.from_processor_config(processor_config(name, None))
    _freeze(net, config.freeze)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = (len(train) + config.batch_size - 1) // config.batch_size
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    total = steps_per_epoch * config.epochs
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(config.warmup * total), max(1, total))
    state: dict[str, Any] = {
        "epoch": 0,
        "best_score": None,
        "best_epoch": 0,
        "history": [],
        "bad_epochs": 0,
        "settings": settings,
    }
    if latest:
        optimizer.load_state_dict(torch.load(latest / "optimizer.pt", weights_only=True, map_location=dev))
        scheduler.load_state_dict(torch.load(latest / "scheduler.pt", weights_only=True))
        state = json.loads((latest / "state.json").read_text())
        report.resumed_from = state["epoch"]

    pool = ThreadPoolExecutor(2)

    def batch_tensors(batch: list[dict[str, Any]]) -> dict[str, Any]:
        images = list(
            pool.map(lambda p: preprocess(read_image(items[p["id"]].image, min_side=preprocess.min_side)), batch)
        )
        text = tokenizer([p["caption"] for p in batch], padding="max_length" if net.config.model_type == "siglip" else True, truncation=True,
                         max_length=min(64 if net.config.model_type == "siglip" else 77, tokenizer.model_max_length or 77), return_tensors="pt")  # fmt: skip
        out_t = {
            "pixel_values": torch.from_numpy(np.stack(images)).to(dev),
            "input_ids": text["input_ids"].to(dev),
            "return_loss": True,
        }
        if net.config.model_type == "clip":
            out_t["attention_mask"] = text["attention_mask"].to(dev)
        return out_t

    # Validation by retrieval: a fixed set of validation pairs, embedded in fixed chunks, so the
    # figures do not depend on --batch-size (a contrastive loss does: more negatives, higher loss).
    val_set = val[: max(2, config.val_candidates)]
    report.val_candidates = len(val_set) if len(val_set) >= 2 else 0
    if report.val_candidates:
        from .evaluate import chance

        report.val_chance = {f"val_{k}": v for k, v in chance(len(val_set)).items()}
        if len(val_set) < max(MIN_VAL, config.min_val_images):  # allowed with allow_small_validation
            report.warnings.append(validation_warning(len(val_set)))

    def validate() -> dict[str, float] | None:
        if len(val_set) < 2:
            return None
        from .embedding.hf import pooled_features
        from .evaluate import mrr, rank_of, recall_at_k

        net.eval()
        images, texts = [], []
        with torch.inference_mode():
            for i in range(0, len(val_set), 32):
                t = batch_tensors(val_set[i : i + 32])
                images.append(pooled_features(net.get_image_features(pixel_values=t["pixel_values"])))
                text_args = {
                    "input_ids": t["input_ids"],
                    **({"attention_mask": t["attention_mask"]} if "attention_mask" in t else {}),
                }
                texts.append(pooled_features(net.get_text_features(**text_args)))
        net.train()
        im = torch.nn.functional.normalize(torch.cat(images).float(), dim=-1).cpu().numpy()
        tx = torch.nn.functional.normalize(torch.cat(texts).float(), dim=-1).cpu().numpy()
        ranks = [int(r) for r in rank_of(im @ tx.T, np.arange(len(val_set)))]
        return {
            "val_recall@1": recall_at_k(ranks, 1),
            "val_recall@5": recall_at_k(ranks, 5),
            "val_recall@10": recall_at_k(ranks, 10),
            "val_mrr": mrr(ranks),
        }

    net.train()
    try:
        for epoch in range(state["epoch"], config.epochs):
            order = train[:]
            random.Random(config.seed + epoch).shuffle(order)
            losses = []
            for step in range(steps_per_epoch):
                chunk = order[step * config.batch_size : (step + 1) * config.batch_size]
                if len(chunk) < 2:
                    continue
                loss = net(**batch_tensors(chunk)).loss
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                losses.append(float(loss.detach()))
                if progress:
                    progress(epoch * steps_per_epoch + step + 1, total)
            v = validate()
            entry = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else float("nan"), **(v or {})}
            state["history"].append(entry)
            state["epoch"] = epoch + 1
            # Higher is better: the validation MRR, or (no validation pairs) the negated training loss.
            score = v["val_mrr"] if v is not None else -entry["train_loss"]
            if state["best_score"] is None or score > state["best_score"]:
                state["best_score"], state["best_epoch"], state["bad_epochs"] = score, epoch + 1, 0
                _save_model(
                    net,
                    name,
                    out,
                    {
                        "collection": str(coll.path),
                        "settings": settings,
                        "epoch": epoch + 1,
                        "validation": v,
                        "train_ids": sorted({p["id"] for p in train}),
                        "val_ids": sorted({p["id"] for p in val}),
                    },
                )
            else:
                state["bad_epochs"] += 1
            _checkpoint(net, optimizer, scheduler, state, checkpoints, torch)
            fault_point("after_checkpoint")
            if state["bad_epochs"] >= config.patience:
                report.stopped_early = True
                break
    finally:
        pool.shutdown()
    report.epochs_run, report.best_epoch, report.best_score, report.history = (
        state["epoch"],
        state["best_epoch"],
        state["best_score"],
        state["history"],
    )
    report.selected_by = "val_mrr" if report.val_candidates else "train_loss"
    report.seconds = time.perf_counter() - started
    return report


def _freeze(net: Any, how: str) -> None:
    towers = {"vision": ["vision_model"], "text": ["text_model"], "towers": ["vision_model", "text_model"], "none": []}[
        how
    ]
    for tower in towers:
        for p in getattr(net, tower).parameters():
            p.requires_grad = False


# The base's files a saved model needs beside its weights. transformers 5 writes the image
# processor's settings into processor_config.json and no preprocessor_config.json: copy both.
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "spiece.model")  # fmt: skip


def _save_model(net: Any, base: str, out: Path, record: dict[str, Any] | None = None) -> None:
    """The model plus the base's processor and tokenizer files, written then swapped in."""
    tmp = out.with_name(out.name + ".saving")
    shutil.rmtree(tmp, ignore_errors=True)
    net.save_pretrained(tmp)
    base_dir = Path(base)
    if base_dir.is_dir():
        sources = [p for p in base_dir.iterdir() if p.suffix in (".json", ".txt", ".model") and p.name != "config.json"]
    else:
        from transformers.utils import cached_file

        sources = [Path(f) for f in (cached_file(base, n, _raise_exceptions_for_missing_entries=False) for n in
                   PROCESSOR_FILES) if f]  # fmt: skip
    for src in sources:
        if not (tmp / src.name).exists():
            shutil.copy(src, tmp / src.name)
    from .embedding.hf import processor_config

    processor_config(str(tmp), None)  # a model that could not prepare images is never swapped in
    # What it was trained on: `vitrina eval` warns when evaluated items are among these.
    (tmp / "vitrina-finetune.json").write_text(
        json.dumps({"base": f"hf:{base}", "saved": time.strftime("%Y-%m-%d %H:%M:%S"), **(record or {})})
    )
    out.mkdir(parents=True, exist_ok=True)
    for f in tmp.iterdir():
        os.replace(f, out / f.name)
    tmp.rmdir()


def _checkpoint(net: Any, optimizer: Any, scheduler: Any, state: dict[str, Any], folder: Path, torch: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"epoch-{state['epoch']:03d}"
    tmp = folder / f".epoch-{state['epoch']:03d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    net.save_pretrained(tmp / "model")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    (tmp / "state.json").write_text(json.dumps(state))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)  # a checkpoint is there whole, or not at all
    for old in sorted(folder.glob("epoch-*"))[:-2]:  # keep the last two
        shutil.rmtree(old, ignore_errors=True)


def _latest_checkpoint(folder: Path) -> Path | None:
    done = sorted(p for p in folder.glob("epoch-*") if (p / "state.json").exists())
    return done[-1] if done else None

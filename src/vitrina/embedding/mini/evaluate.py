"""Held-out metrics for the mini model, shared by the build script and the tests."""

from __future__ import annotations

import numpy as np

CATEGORY_PROMPT = "clip art of {}"


def category_prompts(categories: list[str]) -> list[str]:
    return [CATEGORY_PROMPT.format(c.replace("_", " ")) for c in categories]


def held_out_metrics(
    img: np.ndarray, txt: np.ndarray, categories: list[str], prompts: np.ndarray, prompt_names: list[str]
) -> dict[str, float]:
    """img[i] and txt[i] are a pair (unit vectors). Returns text->image recall@1/5/10,
    zero-shot category balanced accuracy and image->image top-10 same-category precision."""
    sims = txt @ img.T
    target = np.diag(sims)
    rank = (sims > target[:, None]).sum(1)  # 0 = the right image came first
    out = {f"text_to_image_recall@{k}": float((rank < k).mean()) for k in (1, 5, 10)}
    predicted = np.asarray(prompt_names)[np.argmax(img @ prompts.T, axis=1)]
    truth = np.asarray(categories)
    per_class = [float((predicted[truth == c] == c).mean()) for c in sorted(set(categories))]
    out["zero_shot_balanced_accuracy"] = float(np.mean(per_class))
    out["zero_shot_classes"] = len(set(categories))
    nn = img @ img.T
    np.fill_diagonal(nn, -np.inf)
    top = np.argsort(-nn, axis=1)[:, :10]
    out["image_to_image_precision@10"] = float((truth[top] == truth[:, None]).mean())
    out["pairs"] = len(img)
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}

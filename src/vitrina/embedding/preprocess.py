"""Model input preprocessing without torch or torchvision.

``Preprocess`` reproduces what a transformers image processor does (resize, centre crop,
rescale, normalise) with Pillow and numpy, so that the indexer can run it in worker threads and
feed it images that were decoded at reduced size. tests/test_embedding.py checks it against the
checkpoint's own processor, pixel for pixel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# transformers' PILImageResampling values are Pillow's.
_RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@dataclass(frozen=True)
class Preprocess:
    height: int
    width: int
    shortest_edge: int | None = None  # None: resize straight to height x width
    crop: bool = False
    resample: int = Image.Resampling.BICUBIC
    rescale: float = 1 / 255
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @classmethod
    def from_processor_config(cls, config: dict) -> Preprocess:
        """From the image processor settings of a CLIP, SigLIP or ViT checkpoint: a
        ``preprocessor_config.json``, or a ``processor_config.json`` holding them under
        "image_processor" (what transformers 5 saves)."""
        if isinstance(config.get("image_processor"), dict):
            config = config["image_processor"]
        size = config.get("size", {"height": 224, "width": 224})
        if isinstance(size, int):
            size = {"shortest_edge": size}
        crop = bool(config.get("do_center_crop", False))
        crop_size = config.get("crop_size", size)
        if isinstance(crop_size, int):
            crop_size = {"height": crop_size, "width": crop_size}
        if "shortest_edge" in size:
            edge = int(size["shortest_edge"])
            out_h, out_w = (crop_size["height"], crop_size["width"]) if crop else (edge, edge)
            return cls(
                height=int(out_h), width=int(out_w), shortest_edge=edge, crop=crop,
                resample=int(config.get("resample", 3)), rescale=float(config.get("rescale_factor", 1 / 255)),
                mean=tuple(config.get("image_mean", (0.5,) * 3)), std=tuple(config.get("image_std", (0.5,) * 3)),
            )  # fmt: skip
        h, w = int(size["height"]), int(size["width"])
        if crop:
            h, w = int(crop_size["height"]), int(crop_size["width"])
        return cls(
            height=h, width=w, shortest_edge=None, crop=crop and (h, w) != (int(size["height"]), int(size["width"])),
            resample=int(config.get("resample", 2)), rescale=float(config.get("rescale_factor", 1 / 255)),
            mean=tuple(config.get("image_mean", (0.5,) * 3)), std=tuple(config.get("image_std", (0.5,) * 3)),
        )  # fmt: skip

    @classmethod
    def from_file(cls, path: str | Path) -> Preprocess:
        return cls.from_processor_config(json.loads(Path(path).read_text()))

    @property
    def min_side(self) -> int:
        """Decode at least this large: twice the model input keeps resampling close to full decode."""
        return 2 * max(self.height, self.width)

    def describe(self) -> str:
        how = f"shortest-edge {self.shortest_edge}" if self.shortest_edge else f"{self.height}x{self.width}"
        crop = f", centre-crop {self.height}x{self.width}" if self.crop else ""
        mean = ",".join(f"{m:.4g}" for m in self.mean)
        std = ",".join(f"{s:.4g}" for s in self.std)
        return f"resize {how} {_RESAMPLE_NAMES.get(self.resample, self.resample)}{crop}, scale {self.rescale:.6g}, mean {mean}, std {std}"

    def __call__(self, image: Image.Image) -> np.ndarray:
        """RGB image -> the float32 CHW array the model takes (``normalise(prepare(image))``)."""
        return self.normalise(self.prepare(image))

    def prepare(self, image: Image.Image) -> np.ndarray:
        """Resize and crop: RGB image -> uint8 HWC pixels of the model's input size. This is the
        part that needs the image; it is a quarter of the bytes of the float input, so it is what
        decoding processes hand back and what crosses to a GPU (``normalise_on``)."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        if self.shortest_edge:
            w, h = image.size
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
            size = (new_short, new_long) if w <= h else (new_long, new_short)
        else:
            size = (self.width, self.height)
        if image.size != size:
            image = image.resize(size, resample=self.resample)
        arr = np.asarray(image, dtype=np.uint8)
        if self.crop:
            h, w = arr.shape[:2]
            top, left = (h - self.height) // 2, (w - self.width) // 2
            arr = arr[max(top, 0) : max(top, 0) + self.height, max(left, 0) : max(left, 0) + self.width]
        return np.ascontiguousarray(arr)

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 HWC (or NHWC) -> float32 CHW (NCHW): rescale, subtract the mean, divide by the std."""
        x = pixels.astype(np.float32)
        x = np.asarray(
            (x * np.float32(self.rescale) - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32),
            np.float32,
        )
        axes = (2, 0, 1) if x.ndim == 3 else (0, 3, 1, 2)
        return np.ascontiguousarray(x.transpose(axes), dtype=np.float32)

    def normalise_on(self, torch: Any, pixels: np.ndarray, device: str, dtype: Any) -> Any:
        """``normalise`` for a batch (uint8 NHWC), done by torch on ``device``: the uint8 pixels
        cross (from pinned memory, without blocking the host, on CUDA) and are widened there.
        The same float32 operations in the same order as ``normalise``, then cast to ``dtype``."""
        x = torch.from_numpy(np.ascontiguousarray(pixels))
        if str(device).startswith("cuda"):
            x = x.pin_memory().to(device, non_blocking=True)
        elif str(device) != "cpu":
            x = x.to(device)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device)
        x = (x.to(torch.float32) * float(np.float32(self.rescale)) - mean) / std
        return x.permute(0, 3, 1, 2).to(dtype).contiguous()

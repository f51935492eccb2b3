"""IIIF: Image API URLs (sizes that honour info.json) and Presentation 2.1 / 3.0 manifests.

Parsing is tolerant dict-walking, not strict models: real manifests deviate (LoC's `type:
sc:Canvas`, nb.no's `@none`, services as objects or lists, v2 services inside v3 manifests).
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from typing import Any

IMAGE_URL = re.compile(r"^(https?://.+?)/(full|square|pct:[\d.,]+|\d+,\d+,\d+,\d+)/([^/]+)/(!?\d+(?:\.\d+)?)/(default|color|gray|grey|bitonal|native)\.(jpg|jpeg|png|webp|gif|tif)(#.*)?$")


def split_image_url(url: str) -> tuple[str, str] | None:
    """(service base, region) of a IIIF Image API URL, or None if it is not one."""
    m = IMAGE_URL.match(url)
    return (m.group(1), m.group(2)) if m else None


def sized(url: str, size: int) -> str | None:
    """The same IIIF image at most ``size`` px on a side (``!w,h`` works in 2.1 and 3.0 level 2)."""
    m = IMAGE_URL.match(url)
    if not m:
        return None
    base, region, _, rotation, quality, fmt, _ = m.groups()
    return f"{base}/{region}/!{size},{size}/{rotation}/{quality}.{fmt}"


@dataclass(frozen=True)
class ImageService:
    base: str
    version: int  # 2 or 3
    level: int  # 0, 1 or 2
    width: int
    height: int
    max_width: int | None = None
    max_height: int | None = None
    max_area: int | None = None
    sizes: tuple[tuple[int, int], ...] = ()

    @classmethod
    def from_info(cls, info: dict[str, Any], base: str | None = None) -> ImageService:
        context = info.get("@context", "")
        contexts = context if isinstance(context, list) else [context]
        v3 = info.get("type") == "ImageService3" or any("image/3" in str(c) for c in contexts) or isinstance(info.get("profile"), str) and "level" in info["profile"] and "/2/" not in info["profile"]
        profile = info.get("profile")
        extras: dict[str, Any] = dict(info) if v3 else {}
        if isinstance(profile, list):
            level_uri = next((p for p in profile if isinstance(p, str)), "")
            for p in profile:
                if isinstance(p, dict):
                    extras.update(p)
        else:
            level_uri = str(profile or "")
        m = re.search(r"level\s*([012])", level_uri)
        max_w = extras.get("maxWidth")
        return cls(
            base=(base or info.get("id") or info.get("@id") or "").rstrip("/"),
            version=3 if v3 else 2,
            level=int(m.group(1)) if m else 0,
            width=int(info["width"]), height=int(info["height"]),
            max_width=int(max_w) if max_w else None,
            max_height=int(extras.get("maxHeight") or max_w or 0) or None,
            max_area=int(extras["maxArea"]) if extras.get("maxArea") else None,
            sizes=tuple((int(s["width"]), int(s["height"])) for s in info.get("sizes", []) if "width" in s and "height" in s),
        )  # fmt: skip

    def region_box(self, region: str) -> tuple[int, int, int, int]:
        if region == "full":
            return 0, 0, self.width, self.height
        if region == "square":
            side = min(self.width, self.height)
            return (self.width - side) // 2, (self.height - side) // 2, side, side
        if region.startswith("pct:"):
            x, y, w, h = (float(v) for v in region[4:].split(","))
            return round(x * self.width / 100), round(y * self.height / 100), round(w * self.width / 100), round(h * self.height / 100)
        x, y, w, h = (int(v) for v in region.split(","))
        x, y = max(0, x), max(0, y)
        return x, y, max(1, min(w, self.width - x)), max(1, min(h, self.height - y))

    def url_for(self, region: str, min_side: int) -> tuple[str, tuple[int, int, int, int] | None]:
        """A URL for ``region`` whose short side is at least ``min_side`` (never upscaled, within
        maxWidth / maxHeight / maxArea), and a box to crop locally when the server cannot
        (level 0 serves only the whole image at its listed sizes)."""
        x, y, w, h = self.region_box(region)
        if self.level == 0:
            full = [(self.width, self.height), *self.sizes]
            fitting = sorted((s for s in full if min(s) * min(w, h) / min(self.width, self.height) >= min_side), key=lambda s: s[0])
            sw, sh = fitting[0] if fitting else max(full, key=lambda s: s[0])
            if (sw, sh) == (self.width, self.height):
                size = "max" if self.version == 3 else "full"  # always available, even at level 0
            else:
                size = f"{sw},{sh}" if self.version == 3 else f"{sw},"
            crop = None if (x, y, w, h) == (0, 0, self.width, self.height) else (x * sw // self.width, y * sh // self.height, w * sw // self.width, h * sh // self.height)
            return f"{self.base}/full/{size}/0/default.jpg", crop
        scale = min(1.0, min_side / min(w, h))
        out_w = max(1, math.ceil(w * scale))
        if self.max_width:
            out_w = min(out_w, self.max_width)
        if self.max_height:
            out_w = min(out_w, max(1, int(self.max_height * w / h)))
        if self.max_area:
            out_w = min(out_w, max(1, int(math.sqrt(self.max_area * w / h))))
        region_part = "full" if (x, y, w, h) == (0, 0, self.width, self.height) else f"{x},{y},{w},{h}"
        return f"{self.base}/{region_part}/{out_w},/0/default.jpg", None


# -- Presentation API ---------------------------------------------------------------------------


def text(value: Any, prefer: tuple[str, ...] = ("en", "none", "@none")) -> str:
    """A display string from any IIIF text form: str, list, {"@value"}, or a v3 language map."""
    if value is None:
        return ""
    if isinstance(value, str):
        return _strip_html(value)
    if isinstance(value, list):
        return "; ".join(t for t in (text(v, prefer) for v in value) if t)
    if isinstance(value, dict):
        if "@value" in value:
            return _strip_html(str(value["@value"]))
        for lang in prefer:
            if lang in value:
                return text(value[lang], prefer)
        for v in value.values():
            return text(v, prefer)
    return str(value)


def _strip_html(s: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", s)).strip() if "<" in s or "&" in s else s.strip()


def ident(obj: Any) -> str:
    if isinstance(obj, str):
        return obj
    if isinstance(obj, dict):
        return str(obj.get("id") or obj.get("@id") or "")
    return ""


def kind(obj: dict[str, Any]) -> str:
    t = obj.get("type") or obj.get("@type") or ""
    return str(t[0] if isinstance(t, list) and t else t).split(":")[-1]


def version(doc: dict[str, Any]) -> int:
    context = doc.get("@context", "")
    contexts = context if isinstance(context, list) else [context]
    return 3 if any("presentation/3" in str(c) for c in contexts) or ("id" in doc and "@id" not in doc) else 2


def children(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Sub-collections and manifests referenced by a collection (v2 collections/manifests/members, v3 items)."""
    out: list[dict[str, Any]] = []
    for key in ("collections", "manifests", "members", "items"):
        for entry in doc.get(key) or []:
            if isinstance(entry, dict) and kind(entry) in ("Collection", "Manifest"):
                out.append(entry)
            elif isinstance(entry, str):
                out.append({"@id": entry, "@type": "sc:Manifest" if key == "manifests" else "sc:Collection"})
    return out


def _service_of(resource: dict[str, Any]) -> dict[str, Any] | None:
    services = resource.get("service")
    for s in services if isinstance(services, list) else [services]:
        if isinstance(s, dict) and ident(s) and "image" in (str(s.get("profile", "")) + kind(s) + str(s.get("@context", ""))).lower():
            return s
    for s in services if isinstance(services, list) else [services]:
        if isinstance(s, dict) and ident(s):
            return s
    return None


def _painted(canvas: dict[str, Any], v: int) -> dict[str, Any] | None:
    """The image resource painted on a canvas (first one; Choice -> its default / first item)."""
    if v == 2 or "images" in canvas:
        for anno in canvas.get("images") or []:
            resource = anno.get("resource") if isinstance(anno, dict) else None
            if isinstance(resource, dict):
                if kind(resource) == "Choice":
                    resource = resource.get("default") or (resource.get("item") or [None])[0]
                elif kind(resource) == "SpecificResource":
                    resource = resource.get("full") or resource
                if isinstance(resource, dict):
                    return resource
        return None
    for page in canvas.get("items") or []:
        for anno in page.get("items") or [] if isinstance(page, dict) else []:
            body = anno.get("body") if isinstance(anno, dict) else None
            body = body[0] if isinstance(body, list) and body else body
            if isinstance(body, dict) and kind(body) == "Choice":
                body = (body.get("items") or [None])[0]
            if isinstance(body, dict):
                return body
    return None


def canvases(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    if version(manifest) == 2 or "sequences" in manifest:
        seqs = manifest.get("sequences") or []
        return list((seqs[0] if seqs else {}).get("canvases") or [])
    return [c for c in manifest.get("items") or [] if isinstance(c, dict)]


def metadata_pairs(obj: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in obj.get("metadata") or []:
        if isinstance(entry, dict):
            label, value = text(entry.get("label")), text(entry.get("value"))
            if label and value and label not in out:
                out[label] = value
    return out


def manifest_images(manifest: dict[str, Any], manifest_url: str) -> list[dict[str, Any]]:
    """One record per canvas with an image: ids, image URL, service, labels and metadata."""
    v = version(manifest)
    title = text(manifest.get("label"))
    meta = metadata_pairs(manifest)
    common: dict[str, Any] = {"title": title, "manifest": manifest_url or ident(manifest)}
    for key, value in meta.items():
        common.setdefault(key.lower(), value)
    if "date" not in common:
        nav = manifest.get("navDate")
        if nav:
            common["date"] = str(nav)[:10]
    rights = manifest.get("rights") or manifest.get("license")
    if rights:
        common["rights"] = text(rights) if not isinstance(rights, list) else text(rights[0])
    statement = manifest.get("requiredStatement")
    attribution = text(statement.get("value")) if isinstance(statement, dict) else text(manifest.get("attribution"))
    if attribution:
        common["attribution"] = attribution
    homepage = manifest.get("homepage") or manifest.get("related")
    link = ident(homepage[0] if isinstance(homepage, list) and homepage else homepage)
    if link:
        common["link"] = link
    summary = text(manifest.get("summary") or manifest.get("description"))
    records = []
    for i, canvas in enumerate(canvases(manifest)):
        resource = _painted(canvas, v)
        if resource is None:
            continue
        service = _service_of(resource)
        canvas_id = ident(canvas) or f"{common['manifest']}#canvas-{i + 1}"
        label = text(canvas.get("label"))
        image_url = ident(resource)
        service_base = ident(service).rstrip("/") if service else ""
        if service_base.endswith("/info.json"):
            service_base = service_base[: -len("/info.json")]
        service_version = 3 if service and (kind(service) == "ImageService3" or str(service.get("profile", "")).startswith("level")) and kind(service) != "ImageService2" else 2
        if service_base:
            image_url = f"{service_base}/full/{'max' if service_version == 3 else 'full'}/0/default.jpg"
        if not image_url:
            continue
        records.append({
            "id": canvas_id, "image": image_url, "service": service_base, "canvas_label": label, "index": i + 1,
            "metadata": {**common, "title": f"{title} — {label}" if label and title and label != title else (title or label),
                         "canvas": canvas_id, "page": i + 1},
            "context": summary,
        })  # fmt: skip
    return records

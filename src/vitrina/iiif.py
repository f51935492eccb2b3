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

# Bodies and files that are not still images: stored as items they would be downloaded whole at
# index time and then fail.
NOT_IMAGE_TYPES = {
    "sound": "audio",
    "audio": "audio",
    "video": "video",
    "model": "3d",
    "physicalobject": "3d",
    "text": "text",
    "dataset": "text",
}
NOT_IMAGE_SUFFIXES = {".mp4": "video", ".m4v": "video", ".webm": "video", ".mov": "video", ".mpd": "video", ".m3u8": "video", ".ogv": "video",
                      ".mp3": "audio", ".m4a": "audio", ".wav": "audio", ".ogg": "audio", ".flac": "audio", ".glb": "3d", ".gltf": "3d",
                      ".obj": "3d", ".ply": "3d", ".stl": "3d", ".pdf": "pdf", ".epub": "text", ".txt": "text", ".xml": "text", ".zip": "archive"}  # fmt: skip


def not_image_kind(url: str = "", media_type: str = "", format_: str = "") -> str | None:
    """What a resource is when it is not a still image ("video", "audio", "3d", "pdf", ...), else None."""
    f = format_.lower()
    if f == "application/pdf":
        return "pdf"
    t = media_type.lower().split(":")[-1]
    if t in NOT_IMAGE_TYPES:
        return NOT_IMAGE_TYPES[t]
    if f.startswith(("video/", "audio/", "model/")) or "dash+xml" in f or "mpegurl" in f:
        return {"video": "video", "audio": "audio", "model": "3d"}.get(f.split("/")[0], "video")
    path = url.split("#")[0].split("?")[0].lower()
    dot = path.rfind(".")
    return NOT_IMAGE_SUFFIXES.get(path[dot:]) if dot > path.rfind("/") else None


IMAGE_URL = re.compile(
    r"^(https?://.+?)/(full|square|pct:[\d.,]+|\d+,\d+,\d+,\d+)/([^/]+)/(!?\d+(?:\.\d+)?)/(default|color|gray|grey|bitonal|native)\.(jpg|jpeg|png|webp|gif|tif)(#.*)?$"
)


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
    version: int  # 1 (Image API 1.1), 2 or 3
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
        v3 = (
            info.get("type") == "ImageService3"
            or any("image/3" in str(c) for c in contexts)
            or str(info.get("profile", "")).startswith("level")
        )
        profile = info.get("profile")
        extras: dict[str, Any] = dict(info) if v3 else {}
        if isinstance(profile, list):
            level_uri = next((p for p in profile if isinstance(p, str)), "")
            for p in profile:
                if isinstance(p, dict):
                    extras.update(p)
        else:
            level_uri = str(profile or "")
        # The @context names the version; the profile only when there is none (Loris servers
        # pair an Image API 2 context with a 1.1 compliance profile: that is version 2).
        v1 = not v3 and (
            any("image/1" in str(c) or "image-api/1" in str(c) for c in contexts)
            or ("image-api/1" in level_uri and context_version(info) is None)
        )
        m = re.search(r"level\s*([012])", level_uri)
        max_w = extras.get("maxWidth")
        return cls(
            base=(base or info.get("id") or info.get("@id") or "").rstrip("/"),
            version=3 if v3 else 1 if v1 else 2,
            level=int(m.group(1)) if m else 0,
            width=int(info["width"]), height=int(info["height"]),
            max_width=int(max_w) if max_w else None,
            max_height=int(extras.get("maxHeight") or max_w or 0) or None,
            max_area=int(extras["maxArea"]) if extras.get("maxArea") else None,
            sizes=tuple((int(s["width"]), int(s["height"])) for s in info.get("sizes", []) if "width" in s and "height" in s),
        )  # fmt: skip

    @property
    def quality(self) -> str:
        return "native" if self.version == 1 else "default"  # 1.1 has no "default" quality

    def region_box(self, region: str) -> tuple[int, int, int, int]:
        if region == "full":
            return 0, 0, self.width, self.height
        if region == "square":
            side = min(self.width, self.height)
            return (self.width - side) // 2, (self.height - side) // 2, side, side
        if region.startswith("pct:"):
            x, y, w, h = (float(v) for v in region[4:].split(","))
            return (
                round(x * self.width / 100),
                round(y * self.height / 100),
                round(w * self.width / 100),
                round(h * self.height / 100),
            )
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
            fitting = sorted(
                (s for s in full if min(s) * min(w, h) / min(self.width, self.height) >= min_side), key=lambda s: s[0]
            )
            sw, sh = fitting[0] if fitting else max(full, key=lambda s: s[0])
            if (sw, sh) == (self.width, self.height):
                size = "max" if self.version == 3 else "full"  # always available, even at level 0
            else:
                size = f"{sw},{sh}" if self.version == 3 else f"{sw},"
            crop = (
                None
                if (x, y, w, h) == (0, 0, self.width, self.height)
                else (x * sw // self.width, y * sh // self.height, w * sw // self.width, h * sh // self.height)
            )
            return f"{self.base}/full/{size}/0/{self.quality}.jpg", crop
        short = min(w, h)
        # Integer arithmetic: a float ceil asks for 449 px where 448 was meant (448/525*525 > 448).
        out_w = max(1, w if short <= min_side else -(-w * min_side // short))
        if self.max_width:
            out_w = min(out_w, self.max_width)
        if self.max_height:
            out_w = min(out_w, max(1, int(self.max_height * w / h)))
        if self.max_area:
            out_w = min(out_w, max(1, int(math.sqrt(self.max_area * w / h))))
        region_part = "full" if (x, y, w, h) == (0, 0, self.width, self.height) else f"{x},{y},{w},{h}"
        return f"{self.base}/{region_part}/{out_w},/0/{self.quality}.jpg", None


# -- Presentation API ---------------------------------------------------------------------------


def _lang_rank(lang: str, prefer: str) -> int:
    """0: the user's language (``en`` matches ``en-GB``), 1: no language, 2: any other."""
    lang = lang.lower()
    if lang and (lang == prefer or lang.split("-")[0] == prefer.split("-")[0]):
        return 0
    return 1 if lang in ("", "none", "@none") else 2


def text(value: Any, lang: str = "en") -> str:
    """One display string from any IIIF text form: str, list, {"@value", "@language"}, or a v3
    language map. Where the value is given in several languages, one is chosen: ``lang``
    (``en`` matches ``en-GB``), then no language, then the first; values of that language are
    joined with "; ". Plain strings in a list are all kept."""
    lang = (lang or "en").lower()
    if value is None:
        return ""
    if isinstance(value, str):
        return _strip_html(value)
    if isinstance(value, dict) and "@value" not in value:  # a v3 language map
        entries = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, (dict, list)):
        entries = []
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, dict) and "@value" in v:
                entries.append((str(v.get("@language") or ""), v["@value"]))
            elif isinstance(v, dict):
                entries.extend((str(k), vv) for k, vv in v.items())
            else:
                entries.append(("", v))
    else:
        return str(value)
    if not entries:
        return ""
    best = min(_lang_rank(k, lang) for k, _ in entries)
    if best == 2:  # none in the user's language nor without one: the first language given
        first = entries[0][0]
        chosen = [v for k, v in entries if k == first]
    else:
        chosen = [v for k, v in entries if _lang_rank(k, lang) == best]
    parts: list[str] = []
    for v in chosen:
        for piece in v if isinstance(v, list) else [v]:
            t = _strip_html(str(piece)) if not isinstance(piece, (dict, list)) else text(piece, lang)
            if t and t not in parts:
                parts.append(t)
    return "; ".join(parts)


def _strip_html(s: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", s)).strip() if "<" in s or "&" in s else s.strip()


def as_list(value: Any) -> list[Any]:
    """A IIIF "list" property, tolerating one object where a list belongs (a frequent mistake)."""
    if isinstance(value, list):
        return value
    return [] if value is None or value == "" else [value]


def ident(obj: Any) -> str:
    if isinstance(obj, str):
        return obj
    if isinstance(obj, dict):
        return str(obj.get("id") or obj.get("@id") or "")
    if isinstance(obj, list) and obj:
        return ident(obj[0])
    return ""


def kind(obj: Any) -> str:
    if not isinstance(obj, dict):
        return ""
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
        for entry in as_list(doc.get(key)):
            if isinstance(entry, dict) and kind(entry) in ("Collection", "Manifest") and ident(entry):
                out.append(entry)
            elif isinstance(entry, str):
                out.append({"@id": entry, "@type": "sc:Manifest" if key == "manifests" else "sc:Collection"})
    return out


def _profile_text(s: dict[str, Any]) -> str:
    profile = s.get("profile", "")
    profiles = profile if isinstance(profile, list) else [profile]
    return " ".join(str(p) for p in profiles if isinstance(p, str)) + " " + kind(s) + " " + str(s.get("@context", ""))


def is_image_service(s: Any) -> bool:
    """An Image API service; auth (login, token, logout), search, GeoJSON and other services are not."""
    if not isinstance(s, dict) or not ident(s):
        return False
    about = _profile_text(s).lower()
    if "auth" in about or "search" in about or "autocomplete" in about:
        return False
    return (
        kind(s).startswith("ImageService")
        or "/image/" in about
        or "image-api" in about
        or re.search(r"\blevel[012]\b", about) is not None
    )


def needs_auth(s: dict[str, Any]) -> bool:
    """Whether an image service declares an auth service (login/clickthrough/kiosk/external)."""
    return any(isinstance(a, dict) and "auth" in _profile_text(a).lower() for a in as_list(s.get("service")))


def image_service(resource: Any) -> dict[str, Any] | None:
    """The resource's Image API service (never an auth or search service)."""
    if not isinstance(resource, dict):
        return None
    return next((s for s in as_list(resource.get("service")) if is_image_service(s)), None)


def painted(canvas: dict[str, Any], v: int) -> dict[str, Any] | None:
    """The resource painted on a canvas (first one; Choice -> its default / first item)."""
    if v == 2 or "images" in canvas:
        for anno in as_list(canvas.get("images")):
            resource = anno.get("resource") if isinstance(anno, dict) else None
            resource = resource[0] if isinstance(resource, list) and resource else resource
            if isinstance(resource, dict):
                if kind(resource) in ("Choice", "oa:Choice"):
                    resource = resource.get("default") or (as_list(resource.get("item")) or [None])[0]
                elif kind(resource) == "SpecificResource":
                    resource = resource.get("full") or resource
                if isinstance(resource, dict):
                    return resource
        return None
    for page in as_list(canvas.get("items")):
        for anno in as_list(page.get("items")) if isinstance(page, dict) else []:
            body = anno.get("body") if isinstance(anno, dict) else None
            body = body[0] if isinstance(body, list) and body else body
            if isinstance(body, dict) and kind(body) == "Choice":
                body = (as_list(body.get("items")) or [None])[0]
            elif isinstance(body, dict) and kind(body) == "SpecificResource":
                body = body.get("source") if isinstance(body.get("source"), dict) else body
            if isinstance(body, dict):
                return body
    return None


PLACEHOLDER_HINT = "displayIfContentUnsupported"


def is_placeholder(obj: Any) -> bool:
    """Whether ``obj`` says it is shown only by viewers that cannot show the real content
    (``compatibilityHint: displayIfContentUnsupported``: the generic picture of an AV wrapper)."""
    return isinstance(obj, dict) and PLACEHOLDER_HINT in {str(h) for h in as_list(obj.get("compatibilityHint"))}


def placeholder_sequence(manifest: dict[str, Any]) -> bool:
    """Whether the sequence ``canvases`` reads is a placeholder (an IxIF audio/video wrapper
    manifest: the real content is in ``mediaSequences``)."""
    seqs = [s for s in as_list(manifest.get("sequences")) if isinstance(s, dict)]
    return bool(seqs) and is_placeholder(seqs[0])


def canvases(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The canvases of a manifest; ``sequences`` or ``items`` given as one object are accepted."""
    if version(manifest) == 2 or "sequences" in manifest:
        seqs = [s for s in as_list(manifest.get("sequences")) if isinstance(s, dict)]
        return [c for c in as_list(seqs[0].get("canvases") if seqs else None) if isinstance(c, dict)]
    return [c for c in as_list(manifest.get("items")) if isinstance(c, dict)]


def metadata_pairs(obj: dict[str, Any], lang: str = "en") -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in as_list(obj.get("metadata")):
        if isinstance(entry, dict):
            label, value = text(entry.get("label"), lang), text(entry.get("value"), lang)
            if label and value and label not in out:
                out[label] = value
    return out


def context_version(service: dict[str, Any]) -> int | None:
    """The Image API version the service's ``@context`` names (1, 2 or 3), or None."""
    context = service.get("@context", "")
    for c in context if isinstance(context, list) else [context]:
        m = re.search(r"iiif\.io/api/image/([123])/|stanford\.edu/iiif/image-api/(1)", str(c))
        if m:
            return int(m.group(1) or m.group(2))
    return None


def _service_base(service: dict[str, Any]) -> tuple[str, int]:
    """The service's base URL and Image API version: its type, else its ``@context``, else its
    profile (a Loris server's Image API 2 context with a 1.1 profile is version 2: default.jpg)."""
    base = ident(service).rstrip("/")
    if base.endswith("/info.json"):
        base = base[: -len("/info.json")]
    about = _profile_text(service)
    v = (
        3
        if (kind(service) == "ImageService3" or str(service.get("profile", "")).startswith("level"))
        and kind(service) != "ImageService2"
        else 2
    )
    if kind(service) == "ImageService1" or "image/1" in about or "image-api/1" in about:
        v = 1
    typed = {"ImageService1": 1, "ImageService2": 2, "ImageService3": 3}.get(kind(service))
    return base, typed or context_version(service) or v


def _thumbnail(*holders: dict[str, Any]) -> tuple[str, str] | None:
    """(image URL, service base) of the first open thumbnail / poster image of these objects."""
    for holder in holders:
        for thumb in as_list(holder.get("thumbnail") or holder.get("posterCanvas") or holder.get("placeholderCanvas")):
            if isinstance(thumb, dict) and kind(thumb) == "Canvas":  # a v3 poster / placeholder canvas
                thumb = painted(thumb, 3)
            if isinstance(thumb, str):
                thumb = {"id": thumb}
            if not isinstance(thumb, dict) or not_image_kind(ident(thumb), kind(thumb), str(thumb.get("format") or "")):
                continue
            service = image_service(thumb)
            if service is not None and not needs_auth(service):
                base, v = _service_base(service)
                return f"{base}/full/{'max' if v == 3 else 'full'}/0/{'native' if v == 1 else 'default'}.jpg", base
            if ident(thumb).startswith(("http://", "https://")):
                return ident(thumb), ""
    return None


def manifest_images(
    manifest: dict[str, Any], manifest_url: str, *, lang: str = "en", skipped: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    """One record per canvas with an image: ids, image URL, service, labels and metadata.

    A canvas whose painted resource is not a still image (audio, video, 3D, PDF) uses the
    canvas's or manifest's thumbnail / poster image if it has one, else it is skipped and counted
    in ``skipped`` by kind. An image service that requires auth gives way to an open thumbnail."""
    skipped = skipped if skipped is not None else {}
    v = version(manifest)
    title = text(manifest.get("label"), lang)
    meta = metadata_pairs(manifest, lang)
    common: dict[str, Any] = {"title": title, "manifest": manifest_url or ident(manifest)}
    for key, value in meta.items():
        common.setdefault(key.lower(), value)
    if "date" not in common:
        nav = manifest.get("navDate")
        if isinstance(nav, str) and nav:
            common["date"] = nav[:10]
    rights = manifest.get("rights") or manifest.get("license")
    if rights:
        common["rights"] = text(rights, lang) if not isinstance(rights, list) else text(rights[0], lang)
    statement = manifest.get("requiredStatement")
    attribution = (
        text(statement.get("value"), lang) if isinstance(statement, dict) else text(manifest.get("attribution"), lang)
    )
    if attribution:
        common["attribution"] = attribution
    link = ident(manifest.get("homepage") or manifest.get("related"))
    if link:
        common["link"] = link
    summary = text(manifest.get("summary") or manifest.get("description"), lang)
    records = []
    all_canvases = canvases(manifest)
    if placeholder_sequence(manifest):  # an audio/video wrapper's stand-in picture, not the item
        skipped["placeholder"] = skipped.get("placeholder", 0) + len(all_canvases)
        return []
    for i, canvas in enumerate(all_canvases):
        resource = painted(canvas, v)
        if is_placeholder(canvas) or is_placeholder(resource):
            skipped["placeholder"] = skipped.get("placeholder", 0) + 1
            continue
        canvas_id = ident(canvas) or f"{common['manifest']}#canvas-{i + 1}"
        label = text(canvas.get("label"), lang)
        other = (
            not_image_kind(ident(resource), kind(resource), str(resource.get("format") or ""))
            if resource is not None
            else None
        )
        service = image_service(resource) if other is None else None
        image_url = ident(resource) if other is None and resource is not None else ""
        service_base, service_version = _service_base(service) if service else ("", 2)
        if service_base:
            image_url = f"{service_base}/full/{'max' if service_version == 3 else 'full'}/0/{'native' if service_version == 1 else 'default'}.jpg"
        if other is not None or not image_url or (service is not None and needs_auth(service)):
            # The canvas's own poster / thumbnail (or the resource's); the manifest's only when
            # it has this one canvas (else every canvas would become the same picture).
            holders = [
                canvas,
                *([resource] if resource is not None else []),
                *([manifest] if len(all_canvases) == 1 else []),
            ]
            thumb = _thumbnail(*holders)
            if thumb is not None:
                image_url, service_base = thumb
            elif other is not None:
                skipped[other] = skipped.get(other, 0) + 1
                continue
            elif not image_url:
                if resource is not None:
                    skipped["no image"] = skipped.get("no image", 0) + 1
                continue
        records.append({
            "id": canvas_id, "image": image_url, "service": service_base, "canvas_label": label, "index": i + 1, "canvas": canvas,
            "metadata": {**common, "title": f"{title} — {label}" if label and title and label != title else (title or label),
                         "canvas": canvas_id, "page": i + 1},
            "context": summary,
        })  # fmt: skip
    return records

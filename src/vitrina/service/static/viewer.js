// The item page's deep-zoom viewer (OpenSeadragon, vendored): the item's image from its IIIF
// Image API, or tiles cut by this server; the matched region outlined; "Find this detail".
//
// Boxes are in the item's own pixels (x, y from its top-left), as hits give them. Other scripts
// draw on the image with window.vitrinaViewer.outline(boxes, className): boxes are
// [{x, y, w, h, label?}] or [[x, y, w, h]]; a later call with the same className replaces those.
(() => {
  const el = document.getElementById("viewer");
  if (!el || !window.OpenSeadragon) return;
  const $ = (id) => document.getElementById(id);
  const src = JSON.parse(el.dataset.source);
  const itemId = el.dataset.id;
  const box = el.dataset.box ? el.dataset.box.split(",").map(Number) : null;
  const offset = src.offset || [0, 0];
  const bar = $("viewer-bar");
  const preview = $("preview");
  const hint = $("viewer-hint");

  let tileSources;
  if (src.type === "iiif") tileSources = src.info;
  else if (src.type === "image") tileSources = { type: "image", url: src.url, buildPyramid: false };
  else tileSources = {
    width: src.width, height: src.height, tileSize: src.tileSize, tileOverlap: 0,
    minLevel: src.minLevel, maxLevel: src.maxLevel,
    getTileUrl: (level, x, y) => `${src.url}&level=${level}&x=${x}&y=${y}`,
  };

  el.hidden = false;
  bar.hidden = false;
  const viewer = OpenSeadragon({
    element: el,
    prefixUrl: "/static/vendor/openseadragon/images/",
    tileSources,
    drawer: "canvas",
    toolbar: "viewer-bar",
    zoomInButton: "zoom-in", zoomOutButton: "zoom-out", homeButton: "home", fullPageButton: "full-page",
    showNavigator: true, navigatorPosition: "BOTTOM_RIGHT",
    visibilityRatio: 0.5, minZoomImageRatio: 0.8, maxZoomPixelRatio: 3,
    gestureSettingsMouse: { clickToZoom: false },
  });

  let opened = false;
  const waiting = [];
  const groups = {};

  function item() { return viewer.world.getItemAt(0); }
  // Item pixels -> the tiled image's pixels (the deepest level served may be smaller).
  function scale() {
    const size = item().getContentSize();
    return src.sourceWidth ? size.x / src.sourceWidth : 1;
  }
  function toViewport(x, y, w, h) {
    const k = scale();
    return item().imageToViewportRectangle((x + offset[0]) * k, (y + offset[1]) * k, w * k, h * k);
  }
  // A point of the viewer element (CSS pixels) -> item pixels.
  function toItem(px, py) {
    const p = item().viewerElementToImageCoordinates(new OpenSeadragon.Point(px, py));
    const k = scale();
    return { x: p.x / k - offset[0], y: p.y / k - offset[1] };
  }
  function itemSize() {
    const size = item().getContentSize();
    const k = scale();
    return { w: Math.round(src.sourceWidth || size.x / k), h: Math.round(src.sourceHeight || size.y / k) };
  }

  function outline(boxes, className = "outline") {
    if (!opened) { waiting.push(() => outline(boxes, className)); return []; }
    for (const old of groups[className] || []) viewer.removeOverlay(old);
    groups[className] = [];
    for (const b of boxes) {
      const [x, y, w, h] = Array.isArray(b) ? b : [b.x, b.y, b.w, b.h];
      const div = document.createElement("div");
      div.className = `vitrina-box ${className}`;
      if (b.label) div.title = b.label;
      viewer.addOverlay({ element: div, location: toViewport(x, y, w, h) });
      groups[className].push(div);
    }
    return groups[className];
  }

  function zoomTo(x, y, w, h, immediately) {
    const r = toViewport(x, y, w, h);
    const m = Math.max(r.width, r.height) * 0.6; // some of the surroundings too
    viewer.viewport.fitBounds(new OpenSeadragon.Rect(r.x - m, r.y - m, r.width + 2 * m, r.height + 2 * m), immediately);
  }

  viewer.addHandler("open", () => {
    opened = true;
    preview.hidden = true;
    if (box) {
      outline([{ x: box[0], y: box[1], w: box[2], h: box[3], label: "Matched region" }], "region");
      zoomTo(...box, true);
      $("to-region").addEventListener("click", () => zoomTo(...box, false));
    } else if (src.crop) {  // the item is a part of a larger IIIF image (a picture on a page)
      outline([{ x: 0, y: 0, w: src.crop[2], h: src.crop[3], label: "This item" }], "crop");
      zoomTo(0, 0, src.crop[2], src.crop[3], true);
    }
    const local = src.type === "tiles";  // a detail can be cut from local images only
    $("find-detail").hidden = !local;
    $("search-view").hidden = !local;
    for (const f of waiting.splice(0)) f();
    window.vitrinaViewer.opened = true;
  });
  viewer.addHandler("open-failed", () => {
    el.hidden = true;
    bar.hidden = true;
    preview.hidden = false;
  });

  // Find this detail: drag a box on the image, and search for what is in it.
  function search(x, y, w, h) {
    const size = itemSize();
    const x0 = Math.max(0, Math.round(x)), y0 = Math.max(0, Math.round(y));
    const x1 = Math.min(size.w, Math.round(x + w)), y1 = Math.min(size.h, Math.round(y + h));
    if (x1 - x0 < 4 || y1 - y0 < 4) { hint.textContent = "That box is outside the image or too small."; return; }
    const params = new URLSearchParams();
    params.append("like", `${itemId}#xywh=${x0},${y0},${x1 - x0},${y1 - y0}`);
    location.href = "/?" + params.toString();
  }

  let drawing = false;
  let start = null;
  const band = document.createElement("div");
  band.className = "vitrina-band";
  band.hidden = true;

  function setDrawing(on) {
    drawing = on;
    viewer.setMouseNavEnabled(!on);
    el.classList.toggle("drawing", on);
    $("find-detail").setAttribute("aria-pressed", String(on));
    hint.textContent = on ? "Drag a box around the detail to search for it (Esc cancels)." : "";
    if (!on) { band.hidden = true; start = null; }
  }

  $("find-detail").addEventListener("click", () => setDrawing(!drawing));
  $("search-view").addEventListener("click", () => {
    const b = viewer.viewport.getBounds();
    const tl = viewer.viewport.viewportToViewerElementCoordinates(b.getTopLeft());
    const br = viewer.viewport.viewportToViewerElementCoordinates(b.getBottomRight());
    const a = toItem(tl.x, tl.y), z = toItem(br.x, br.y);
    search(a.x, a.y, z.x - a.x, z.y - a.y);
  });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && drawing) setDrawing(false); });

  const canvas = viewer.canvas;
  canvas.appendChild(band);
  const local = (e) => { const r = el.getBoundingClientRect(); return { x: e.clientX - r.left, y: e.clientY - r.top }; };
  canvas.addEventListener("pointerdown", (e) => {
    if (!drawing) return;
    e.preventDefault();
    canvas.setPointerCapture(e.pointerId);
    start = local(e);
    Object.assign(band.style, { left: `${start.x}px`, top: `${start.y}px`, width: "0px", height: "0px" });
    band.hidden = false;
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!drawing || !start) return;
    const p = local(e);
    Object.assign(band.style, {
      left: `${Math.min(p.x, start.x)}px`, top: `${Math.min(p.y, start.y)}px`,
      width: `${Math.abs(p.x - start.x)}px`, height: `${Math.abs(p.y - start.y)}px`,
    });
  });
  canvas.addEventListener("pointerup", (e) => {
    if (!drawing || !start) return;
    const p = local(e);
    const a = toItem(Math.min(p.x, start.x), Math.min(p.y, start.y));
    const z = toItem(Math.max(p.x, start.x), Math.max(p.y, start.y));
    start = null;
    search(a.x, a.y, z.x - a.x, z.y - a.y);
  });

  // Run fn once the image is open (at once if it is).
  function onOpen(fn) { if (opened) fn(); else waiting.push(fn); }

  window.vitrinaViewer = { viewer, outline, zoomTo, toViewport, toItem, itemSize, onOpen, opened: false };
})();

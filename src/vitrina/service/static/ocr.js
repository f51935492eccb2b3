// Outlines of the words read from an item's image (OCR) that the search matched, drawn on the
// deep-zoom viewer (viewer.js) from the JSON in #viewer's data-ocr:
//   {width, height, words: [{text, box: [x, y, w, h]}]}
// The boxes are in the item's own pixels (width x height: the file's, or a IIIF image's region at
// full resolution), which the viewer may show smaller (a preview); words read before boxes were
// stored at full resolution are in the pixels of the IIIF image fetched. Either way they are
// scaled here from width x height to the item's pixels as the viewer counts them.
"use strict";
(function () {
  const el = document.getElementById("viewer");
  const v = window.vitrinaViewer;
  if (!el || !el.dataset.ocr || !v) return;
  const data = JSON.parse(el.dataset.ocr);
  v.onOpen(() => {
    const src = JSON.parse(el.dataset.source || "{}");
    const k = data.width ? (src.crop ? src.crop[2] : v.itemSize().w) / data.width : 1;
    const boxes = (data.words || []).map((w) => (
      { x: w.box[0] * k, y: w.box[1] * k, w: w.box[2] * k, h: w.box[3] * k, label: w.text }));
    v.outline(boxes, "ocr-word");
    if (!el.dataset.box && boxes.length) {  // no matched region to show: show the words
      const x0 = Math.min(...boxes.map((b) => b.x)), y0 = Math.min(...boxes.map((b) => b.y));
      const x1 = Math.max(...boxes.map((b) => b.x + b.w)), y1 = Math.max(...boxes.map((b) => b.y + b.h));
      const size = v.itemSize();
      // Only zoom in when the words are small in the image: a word across a small image reads as is.
      if ((x1 - x0) * (y1 - y0) < size.w * size.h / 16) v.zoomTo(x0, y0, x1 - x0, y1 - y0, true);
    }
  });
})();

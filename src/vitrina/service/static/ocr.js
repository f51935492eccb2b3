// Outlines of the words read from an item's image (OCR) that the search matched.
// outlineWords(frame, image, data) draws one absolutely positioned box per word over the image,
// placed in percent of the source image's size (data.width x data.height, the pixels the boxes
// are in), so the outlines follow the image at whatever size it is shown. A deep-zoom viewer can
// call it with its own overlay element and the same JSON: {width, height, words: [{text, box: [x, y, w, h]}]}.
"use strict";
function outlineWords(frame, data) {
  for (const old of frame.querySelectorAll(".ocr-word")) old.remove();
  if (!data || !data.width || !data.height) return [];
  const made = [];
  for (const word of data.words || []) {
    const [x, y, w, h] = word.box;
    const box = document.createElement("span");
    box.className = "ocr-word";
    box.title = word.text;
    box.style.left = (100 * x / data.width) + "%";
    box.style.top = (100 * y / data.height) + "%";
    box.style.width = (100 * w / data.width) + "%";
    box.style.height = (100 * h / data.height) + "%";
    frame.appendChild(box);
    made.push(box);
  }
  return made;
}

(function () {
  for (const frame of document.querySelectorAll(".ocr-frame[data-ocr]")) {
    outlineWords(frame, JSON.parse(frame.dataset.ocr));
  }
})();

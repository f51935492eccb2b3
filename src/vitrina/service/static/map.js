// The Map view: every item of the collection placed by similarity (built by `vitrina map`),
// drawn on a canvas. Data: GET /api/map (a 4096-byte JSON header, uint16 x,y pairs, the ids).
"use strict";
(function () {
  const canvas = document.getElementById("map");
  if (!canvas) return;
  const ctx = canvas.getContext("2d");
  const status = document.getElementById("map-status");
  const searchLink = document.getElementById("map-search");
  const clearButton = document.getElementById("map-clear");
  const list = document.getElementById("map-selection");
  const HEADER = 4096, SPAN = 65535, THUMBS_BELOW = 150;
  let ids = [], xy = null, n = 0;
  let shown = null; // Int32Array of point indices after a selection; null = all
  let hits = new Set();
  let codes = null; // per point: index into PALETTE (colour by a key), -1 = no value
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#444444"];
  let scale = 1, tx = 0, ty = 0; // screen = world * scale + t
  const thumbs = new Map();

  function fit() {
    const m = 20;
    scale = Math.min((canvas.width - 2 * m) / SPAN, (canvas.height - 2 * m) / SPAN);
    tx = (canvas.width - SPAN * scale) / 2;
    ty = (canvas.height - SPAN * scale) / 2;
  }
  // Where the item page's "Back" goes: this map, with its colouring.
  function here() { return window.location.pathname + window.location.search; }
  function sx(i) { return xy[2 * i] * scale + tx; }
  function sy(i) { return (SPAN - xy[2 * i + 1]) * scale + ty; } // y up, like a plot
  function each(f) {
    if (shown) { for (let k = 0; k < shown.length; k++) f(shown[k]); } else { for (let i = 0; i < n; i++) f(i); }
  }
  function visible() {
    const out = [];
    each(function (i) {
      const x = sx(i), y = sy(i);
      if (x >= 0 && y >= 0 && x <= canvas.width && y <= canvas.height) out.push(i);
    });
    return out;
  }
  function thumb(i) {
    const id = ids[i];
    let img = thumbs.get(id);
    if (!img) {
      img = new Image();
      img.onload = draw;
      img.src = "/api/thumbnails?" + new URLSearchParams({ id: id, size: "64" });
      thumbs.set(id, img);
    }
    return img;
  }
  function draw() {
    if (!xy) return;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const inView = visible();
    const close = inView.length <= THUMBS_BELOW;
    if (!close) pixels(inView); // many points: write pixels, far cheaper than a path of rects
    const groups = close ? (codes ? PALETTE.length + 1 : 1) : 0;
    for (let g = 0; g < groups; g++) {
    ctx.fillStyle = codes ? (g < PALETTE.length ? PALETTE[g] : "#cccccc") : "#3b6ea5";
    ctx.beginPath();
    for (const i of inView) {
      if (codes && (codes[i] < 0 ? PALETTE.length : codes[i]) !== g) continue;
      if (close) {
        const img = thumb(i);
        if (img.complete && img.naturalWidth) {
          const s = 48 / Math.max(img.naturalWidth, img.naturalHeight);
          ctx.drawImage(img, sx(i) - img.naturalWidth * s / 2, sy(i) - img.naturalHeight * s / 2, img.naturalWidth * s, img.naturalHeight * s);
          continue;
        }
      }
      ctx.rect(sx(i) - 1.5, sy(i) - 1.5, 3, 3);
    }
    ctx.fill();
    }
    if (hits.size) {
      ctx.strokeStyle = "#d0312d";
      ctx.lineWidth = 2;
      ctx.beginPath();
      for (const i of inView) if (hits.has(ids[i])) { ctx.moveTo(sx(i) + 6, sy(i)); ctx.arc(sx(i), sy(i), 6, 0, 2 * Math.PI); }
      ctx.stroke();
    }
    canvas.dataset.shown = String(shown ? shown.length : n);
    canvas.dataset.inView = String(inView.length);
  }
  const RGBA = PALETTE.concat(["#cccccc", "#3b6ea5"]).map(function (hex) {
    const v = parseInt(hex.slice(1), 16); // little-endian RGBA as one uint32: 0xAABBGGRR
    return (0xff000000 | ((v & 0xff) << 16) | (v & 0xff00) | (v >> 16)) >>> 0;
  });
  let image = null;
  function pixels(inView) {
    const w = canvas.width, h = canvas.height;
    if (!image || image.width !== w || image.height !== h) image = ctx.createImageData(w, h);
    const buf = new Uint32Array(image.data.buffer);
    buf.fill(0);
    for (const i of inView) {
      const x = Math.round(sx(i)) - 1, y = Math.round(sy(i)) - 1;
      const c = codes ? RGBA[codes[i] < 0 ? PALETTE.length : codes[i]] : RGBA[PALETTE.length + 1];
      for (let dy = 0; dy < 3; dy++) {
        const row = y + dy;
        if (row < 0 || row >= h) continue;
        for (let dx = 0; dx < 3; dx++) { const col = x + dx; if (col >= 0 && col < w) buf[row * w + col] = c; }
      }
    }
    ctx.putImageData(image, 0, 0);
  }
  function nearest(px, py, radius) {
    let best = -1, bestD = radius * radius;
    each(function (i) {
      const dx = sx(i) - px, dy = sy(i) - py, d = dx * dx + dy * dy;
      if (d <= bestD) { bestD = d; best = i; }
    });
    return best;
  }
  function point(e) {
    const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height];
  }
  function select(x0, y0, x1, y1) {
    const lx = Math.min(x0, x1), hx = Math.max(x0, x1), ly = Math.min(y0, y1), hy = Math.max(y0, y1);
    const picked = [];
    each(function (i) { const x = sx(i), y = sy(i); if (x >= lx && x <= hx && y >= ly && y <= hy) picked.push(i); });
    shown = Int32Array.from(picked);
    list.replaceChildren();
    const links = new Map();
    for (const i of picked.slice(0, LISTED)) {
      const li = document.createElement("li"), a = document.createElement("a");
      a.href = "/item?" + new URLSearchParams({ id: ids[i], back: here() });
      a.textContent = fileName(ids[i]); // until its title comes
      a.title = ids[i];
      li.append(a);
      list.append(li);
      links.set(ids[i], a);
    }
    titles(links, ++selection);
    const like = new URLSearchParams();
    for (const i of picked.slice(0, 20)) like.append("like", ids[i]);
    searchLink.href = "/?" + like;
    searchLink.hidden = picked.length === 0;
    clearButton.hidden = false;
    status.textContent = picked.length + " of " + n + " items selected";
    draw();
  }

  // The selection list shows titles (GET /api/titles, a few dozen ids a request), the full
  // title and id on hover; a list replaced meanwhile ignores the answers for the old one.
  const LISTED = 100, PER_REQUEST = 50, URL_BUDGET = 6000;
  let selection = 0;
  function fileName(id) { return id.replace(/\/+$/, "").split("/").pop() || id; }
  function titles(links, generation) {
    let batch = [], length = 0;
    const send = function (part) {
      const q = new URLSearchParams();
      for (const id of part) q.append("id", id);
      fetch("/api/titles?" + q).then(function (r) { return r.ok ? r.json() : null; }).then(function (body) {
        if (!body || generation !== selection) return;
        for (const [id, title] of Object.entries(body.titles)) {
          const a = links.get(id);
          if (!a) continue;
          a.textContent = title;
          a.title = title + "\n" + id;
        }
        list.dataset.titled = String(Number(list.dataset.titled || 0) + Object.keys(body.titles).length);
      }).catch(function () { /* the file names stay */ });
    };
    list.dataset.titled = "0";
    for (const id of links.keys()) {
      const cost = encodeURIComponent(id).length + 4;
      if (batch.length && (batch.length >= PER_REQUEST || length + cost > URL_BUDGET)) { send(batch); batch = []; length = 0; }
      batch.push(id);
      length += cost;
    }
    if (batch.length) send(batch);
  }

  let drag = null;
  canvas.addEventListener("pointerdown", function (e) {
    const [x, y] = point(e);
    drag = { x: x, y: y, box: e.shiftKey, moved: false, tx: tx, ty: ty };
    canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener("pointermove", function (e) {
    if (!drag) return;
    const [x, y] = point(e);
    if (Math.abs(x - drag.x) + Math.abs(y - drag.y) > 3) drag.moved = true;
    if (drag.box) {
      draw();
      ctx.strokeStyle = "#222";
      ctx.setLineDash([4, 3]);
      ctx.strokeRect(drag.x, drag.y, x - drag.x, y - drag.y);
      ctx.setLineDash([]);
    } else if (drag.moved) {
      tx = drag.tx + x - drag.x;
      ty = drag.ty + y - drag.y;
      draw();
    }
  });
  canvas.addEventListener("pointerup", function (e) {
    if (!drag) return;
    const [x, y] = point(e);
    const d = drag;
    drag = null;
    if (d.box && d.moved) { select(d.x, d.y, x, y); return; }
    if (!d.moved) {
      const i = nearest(x, y, 8);
      if (i >= 0) window.location.href = "/item?" + new URLSearchParams({ id: ids[i], back: here() });
    }
  });
  canvas.addEventListener("wheel", function (e) {
    e.preventDefault();
    const [x, y] = point(e);
    const f = Math.exp(-e.deltaY * 0.0015);
    tx = x - (x - tx) * f;
    ty = y - (y - ty) * f;
    scale *= f;
    draw();
  }, { passive: false });
  clearButton.addEventListener("click", function () {
    shown = null;
    list.replaceChildren();
    searchLink.hidden = clearButton.hidden = true;
    status.textContent = n + " items";
    draw();
  });

  // For tests and scripts: where an item is drawn, in CSS pixels of the page.
  window.vitrinaMap = {
    screenOf: function (id) {
      const i = ids.indexOf(id);
      if (i < 0) return null;
      const r = canvas.getBoundingClientRect();
      return { x: r.left + sx(i) * r.width / canvas.width, y: r.top + sy(i) * r.height / canvas.height };
    },
  };

  fetch("/api/map").then(function (r) {
    if (!r.ok) return r.json().then(function (b) { throw new Error(b.error ? b.error.message : "HTTP " + r.status); });
    return r.arrayBuffer();
  }).then(function (buf) {
    const head = new TextDecoder().decode(new Uint8Array(buf, 0, HEADER));
    const stamp = JSON.parse(head.slice(head.indexOf("\n") + 1).trim());
    n = stamp.points;
    xy = new Uint16Array(buf, HEADER, 2 * n);
    const tail = n ? new TextDecoder().decode(new Uint8Array(buf, HEADER + 4 * n)) : "";
    ids = !n ? [] : (stamp.format || 1) >= 2 ? JSON.parse(tail) : tail.split("\n");  // format 2: a JSON array
    canvas.dataset.points = String(n);
    status.textContent = n + " items, laid out by " + stamp.method;
    fit();
    draw();
    const key = canvas.dataset.colour;
    if (key) {
      fetch("/api/map/colours?" + new URLSearchParams({ key: key })).then(function (r) { return r.json(); }).then(function (body) {
        if (!body.codes) {  // no item has that key (an old link): say so, draw uncoloured
          status.textContent += " — " + (body.error ? body.error.message : "cannot colour by " + key);
          return;
        }
        codes = Int8Array.from(body.codes);
        const legend = document.getElementById("map-legend");
        legend.replaceChildren();
        body.values.concat(body.codes.some(function (c) { return c === body.values.length; }) ? ["other"] : []).forEach(function (v, k) {
          const li = document.createElement("li"), sw = document.createElement("span");
          sw.className = "swatch";
          sw.style.background = PALETTE[k];
          li.append(sw, document.createTextNode(" " + v));
          legend.append(li);
        });
        canvas.dataset.coloured = String(body.values.length);
        draw();
      });
    }
    const q = canvas.dataset.q;
    if (q) {
      return fetch("/api/search?" + new URLSearchParams({ q: q, limit: "100" })).then(function (r) { return r.json(); }).then(function (body) {
        hits = new Set((body.hits || []).map(function (h) { return h.id; }));
        canvas.dataset.hits = String(hits.size);
        status.textContent += " · " + hits.size + " hits of “" + q + "” circled";
        draw();
      });
    }
  }).catch(function (err) { status.textContent = String(err.message || err); canvas.dataset.error = "1"; });
})();

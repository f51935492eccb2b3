// The curator's tools on every page (docs/workbench.md): the write token (kept in this tab's
// sessionStorage, sent as a bearer header, never in an address), "add to set" boxes on the search
// results, and corrections of tags on the item page. Shown only once the token is given.
(() => {
  const KEY = "vitrina.token";
  const api = async (path, body) => {
    const headers = {};
    const token = sessionStorage.getItem(KEY);
    if (token) headers.Authorization = "Bearer " + token;
    const init = { headers };
    if (body !== undefined) {
      init.method = "POST";
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response = await fetch(path, init);
    for (let wait = 250; response.status === 503 && wait <= 1000; wait *= 2) {
      await new Promise((done) => setTimeout(done, wait)); // busy (another write, a model loading): try again
      response = await fetch(path, init);
    }
    const json = (response.headers.get("content-type") || "").includes("json");
    const data = json ? await response.json() : await response.text();
    if (!response.ok) {
      const error = new Error((data && data.error && data.error.message) || "The server answered " + response.status + ".");
      error.status = response.status;
      throw error;
    }
    return data;
  };
  window.vitrina = Object.assign(window.vitrina || {}, {
    api,
    token: () => sessionStorage.getItem(KEY) || "",
    setToken: (t) => (t ? sessionStorage.setItem(KEY, t) : sessionStorage.removeItem(KEY)),
    el(tag, props = {}, ...children) {
      const node = document.createElement(tag);
      for (const [k, v] of Object.entries(props)) {
        if (k === "class") node.className = v;
        else if (k.startsWith("data-") || k.startsWith("aria-") || k === "role") node.setAttribute(k, v);
        else node[k] = v;
      }
      for (const c of children) if (c !== null && c !== undefined) node.append(c);
      return node;
    },
  });
  const { el } = window.vitrina;
  if (!sessionStorage.getItem(KEY)) return;

  // -- search results: tick hits, add them to a named set ----------------------------------
  const results = document.getElementById("results");
  if (results && document.getElementById("search")) {
    const status = el("span", { class: "pick-status", role: "status" });
    const name = el("input", { id: "pick-set", maxLength: 80, placeholder: "set name", autocomplete: "off" });
    name.setAttribute("list", "pick-sets");
    name.value = localStorage.getItem("vitrina.wb.set") || "";
    const names = el("datalist", { id: "pick-sets" });
    const add = el("button", { type: "button", id: "pick-add" }, "Add ticked to set");
    const all = el("button", { type: "button", id: "pick-all" }, "Tick all on this page");
    const bar = el("div", { class: "pick-bar", id: "pick-bar", role: "group", "aria-label": "Keep hits in a set" },
      el("label", { htmlFor: "pick-set" }, "Set"), name, names, add, all, status, el("a", { href: "/workbench" }, "Workbench"));
    results.before(bar);
    api("/api/sets").then((sets) => names.replaceChildren(...sets.map((s) => el("option", { value: s.name })))).catch(() => {});
    const decorate = () => {
      for (const hit of results.querySelectorAll(".hit:not([data-pick])")) {
        hit.dataset.pick = "1";
        const box = el("input", { type: "checkbox", class: "pick" });
        box.setAttribute("aria-label", "Tick " + (hit.querySelector(".title") || {}).textContent);
        hit.prepend(el("label", { class: "pick-label" }, box, " Tick"));
      }
      bar.hidden = !results.querySelector(".hit");
    };
    new MutationObserver(decorate).observe(results, { childList: true, subtree: true });
    decorate();
    all.addEventListener("click", () => results.querySelectorAll(".hit .pick").forEach((b) => { b.checked = true; }));
    add.addEventListener("click", async () => {
      const ticked = [...results.querySelectorAll(".hit")].filter((h) => h.querySelector(".pick:checked"));
      const setName = name.value.trim();
      if (!setName) { status.textContent = "Name the set first."; name.focus(); return; }
      if (!ticked.length) { status.textContent = "Tick some results first."; return; }
      const params = new URLSearchParams(location.search);
      const scores = {};
      for (const h of ticked) scores[h.dataset.id] = Number((h.querySelector(".score") || {}).textContent) || 0;
      const query = { text: params.get("q") || "", keywords: params.get("kw") || "", where: (params.get("where") || "").split("\n").filter(Boolean), address: location.search };
      try {
        const out = await api("/api/sets/" + encodeURIComponent(setName) + "/items", { ids: ticked.map((h) => h.dataset.id), scores, query });
        localStorage.setItem("vitrina.wb.set", setName);
        status.textContent = `${out.added} added to “${out.set}” (${out.items} in all).`;
        ticked.forEach((h) => { h.querySelector(".pick").checked = false; h.classList.add("in-set"); });
      } catch (e) { status.textContent = e.message; }
    });
  }

  // -- item page: correct a classifier's tag ------------------------------------------------
  const tags = document.getElementById("item-tags");
  if (tags) {
    const itemId = tags.dataset.item;
    const msg = tags.querySelector(".tag-msg");
    for (const locked of tags.querySelectorAll(".tags-locked")) locked.hidden = true;
    for (const form of tags.querySelectorAll(".tag-fix")) {
      form.hidden = false;
      const tag = form.closest(".tag").dataset.tag;
      const send = async (value) => {
        try {
          await api("/api/corrections", { tag, id: itemId, value });
          location.reload();
        } catch (e) { msg.textContent = e.message; }
      };
      form.addEventListener("submit", (e) => { e.preventDefault(); send(form.elements.value.value.trim() || null); });
      const clear = form.querySelector(".clear-fix");
      if (clear) clear.addEventListener("click", () => send(null));
    }
  }

  // -- item page: people's verdicts on a duplicate group (workbench/review.py) ----------------
  const dups = document.getElementById("duplicates");
  if (dups) {
    const itemId = dups.dataset.item;
    const msg = dups.querySelector(".dup-msg");
    const send = async (body) => {
      try { await api("/api/duplicates/review", { id: itemId, ...body }); location.reload(); }
      catch (e) { msg.textContent = e.message; }
    };
    for (const b of dups.querySelectorAll(".not-dup, .undo-dup, .dup-review")) b.hidden = false;
    for (const b of dups.querySelectorAll(".not-dup")) {
      const li = b.closest("li");
      b.setAttribute("aria-label", "Not a duplicate: " + li.dataset.id);
      b.addEventListener("click", () => send({ verdict: "different", ids: [li.dataset.id] }));
    }
    for (const b of dups.querySelectorAll(".undo-dup")) b.addEventListener("click", () => send({ verdict: "machine", ids: [b.dataset.id] }));
    const confirm = dups.querySelector(".confirm-dup");
    if (confirm) confirm.addEventListener("click", () => send({ verdict: "same" }));
  }

  // -- item page: correct a word read from the image (OCR) -----------------------------------
  const words = document.getElementById("item-words");
  if (words) {
    const itemId = words.dataset.item;
    const form = words.querySelector(".word-fix"), msg = words.querySelector(".word-msg");
    words.querySelector(".words-locked").hidden = true;
    words.querySelector(".words-how").hidden = false;
    let chosen = null;
    for (const b of words.querySelectorAll(".word")) {
      b.disabled = false;
      b.addEventListener("click", () => {
        if (chosen) chosen.classList.remove("editing");
        chosen = b;
        b.classList.add("editing");
        form.querySelector(".word-n").textContent = String(Number(b.dataset.n) + 1);
        form.elements.text.value = b.dataset.text;
        form.hidden = false;
        form.elements.text.focus();
        form.elements.text.select();
      });
    }
    const send = async (text) => {
      try { await api("/api/words", { id: itemId, n: Number(chosen.dataset.n), text }); location.reload(); }
      catch (e) { msg.textContent = e.message; }
    };
    form.addEventListener("submit", (e) => { e.preventDefault(); if (chosen) send(form.elements.text.value.trim() || null); });
    form.querySelector(".word-reset").addEventListener("click", () => { if (chosen) send(null); });
    form.querySelector(".word-cancel").addEventListener("click", () => { form.hidden = true; if (chosen) chosen.classList.remove("editing"); });
  }
})();

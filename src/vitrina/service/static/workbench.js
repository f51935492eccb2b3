// The curator's workbench (templates/workbench.html, docs/workbench.md): a question, a grid to
// answer it by keyboard (Y / N / S, arrows), train a probe on the answers, review the items it is
// least sure of (each answer retrains), keep items in sets, find similar ones, export.
// Everything from users is put into the page as text (el() / textContent), never as HTML.
(() => {
  const root = document.getElementById("wb");
  if (!root || !window.vitrina) return;
  const { api, el } = window.vitrina;
  const $ = (id) => document.getElementById(id);
  const PAGE = 24;
  const ANSWER = { y: "yes", n: "no", s: "skip" };
  const SHOWN = { yes: "Yes", no: "No", skip: "Skipped" };
  const CLASS = { yes: "yes", no: "no", skip: "skipped" }; // not "skip": the skip link's class
  const writable = root.dataset.writable === "yes";
  const state = { question: "", labels: new Map(), recent: new Map(), counts: { yes: 0, no: 0, skip: 0 }, curve: [], tag: "",
    source: { kind: "browse", offset: 0 }, cards: [], total: 0, focus: 0, training: null, again: false };
  const canWrite = () => writable && !!window.vitrina.token();

  // -- the token ------------------------------------------------------------------------------
  const WHO = "vitrina.who"; // the person a named token belongs to (sessionStorage, like the token)
  function showLock() {
    if (!writable) return;
    const unlocked = !!window.vitrina.token();
    $("token-form").hidden = unlocked;
    $("read-note").hidden = unlocked;
    $("token-ok").hidden = !unlocked;
    const who = unlocked ? sessionStorage.getItem(WHO) || "" : "";
    $("token-who").textContent = who ? ` as ${who}` : ""; // a named token's person: what they write is signed so
    root.classList.toggle("locked", !unlocked);
  }
  if (writable) {
    $("token-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      window.vitrina.setToken($("token").value.trim());
      $("token").value = "";
      try {
        const data = await api("/api/labels?question=" + encodeURIComponent(state.question || "?"));
        if (data.signed_in_as) sessionStorage.setItem(WHO, data.signed_in_as);
        else sessionStorage.removeItem(WHO);
        $("token-msg").textContent = "";
      } catch (err) {
        window.vitrina.setToken("");
        sessionStorage.removeItem(WHO);
        $("token-msg").textContent = err.status === 403 ? "That is not the server's token." : err.message;
      }
      showLock();
      start();
    });
    $("token-forget").addEventListener("click", () => {
      window.vitrina.setToken("");
      sessionStorage.removeItem(WHO);
      showLock();
      start();
    });
  }
  if (!writable) root.classList.add("locked");

  // -- the question ---------------------------------------------------------------------------
  async function loadQuestion(question) {
    if (question !== state.question) state.recent = new Map();
    state.question = question;
    $("question").value = question;
    localStorage.setItem("vitrina.wb.question", question);
    const url = new URL(location.href);
    url.searchParams.set("question", question);
    history.replaceState(null, "", url);
    if (!canWrite()) {
      $("counts").textContent = "Unlock with the write token to answer this question.";
      return;
    }
    const data = await api("/api/labels?question=" + encodeURIComponent(question));
    // Answers given while this was loading are newer than the server's list: they win.
    state.labels = new Map([...data.labels.map((l) => [l.id, l.answer]), ...state.recent]);
    tally();
    state.curve = data.curve;
    const known = data.questions.find((q) => q.question === question);
    state.tag = known ? known.tag : "";
    $("questions").replaceChildren(...data.questions.map((q) => el("option", { value: q.question })));
    showCounts();
    showModel(state.curve.length ? state.curve[state.curve.length - 1] : null);
    refreshBadges();
  }

  // Counted here from every answer, so that replies arriving out of order cannot show old counts.
  function tally() {
    state.counts = { yes: 0, no: 0, skip: 0 };
    for (const a of state.labels.values()) state.counts[a] += 1;
  }

  function showCounts() {
    const c = state.counts;
    const chips = () => [el("span", { class: "chip yes" }, `${c.yes} yes`), " ", el("span", { class: "chip no" }, `${c.no} no`), " ",
      el("span", { class: "chip skipped" }, `${c.skip} skipped`)];
    if (canWrite()) $("counts").replaceChildren(...chips());
    else $("counts").textContent = writable ? "Unlock with the write token (above) to answer questions." : "Answering questions needs a server started with a write token.";
    $("side-counts").replaceChildren("Answers so far: ", ...chips());
    const ready = c.yes >= 2 && c.no >= 2;
    $("train").disabled = !ready || !canWrite();
    $("train-need").hidden = ready;
  }

  $("question-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const q = $("question").value.trim();
    if (q) loadQuestion(q).then(() => loadSource()).then(() => { root.dataset.loaded = q; }).catch(fail);
  });

  // -- training and the learning curve --------------------------------------------------------
  function showModel(point) {
    $("src-review").disabled = !point || !canWrite();
    $("f1").hidden = !point;
    $("curve-figure").hidden = state.curve.length < 1;
    if (!point) { $("tag-use").hidden = true; return; }
    $("f1-value").textContent = point.f1.toFixed(2);
    const [lo, hi] = point.ci95 || [point.f1, point.f1];
    $("f1-ci").textContent = `95% interval ${lo.toFixed(2)}–${hi.toFixed(2)}`;
    // Review picks the hardest items, so F1 over all labels runs low; the random picks are a fair sample.
    const fair = point.random_labels ? ` On the ${point.random_labels} drawn at random (a fair sample): F1 ${point.f1_random.toFixed(2)}.` : "";
    $("f1-note").textContent = `cross-validated on ${point.labels} labels (${point.yes} yes, ${point.no} no). ` +
      `Items from the review queue are the hardest ones, so this figure runs low.${fair}`;
    drawCurve();
    if (state.tag) {
      const link = el("a", { href: "/?" + new URLSearchParams({ q: "", where: `${state.tag}=yes` }).toString().replace("q=&", "") }, `${state.tag}=yes`);
      $("tag-use").replaceChildren("Every item is now tagged: filter with ", link, ", or ", el("code", {}, `--where ${state.tag}=yes`), ".");
      $("tag-use").hidden = false;
    }
  }

  function drawCurve() {
    const svg = $("curve");
    const ns = "http://www.w3.org/2000/svg";
    const node = (tag, attrs, text) => {
      const n = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
      if (text !== undefined) n.textContent = text;
      return n;
    };
    const points = state.curve;
    const W = 320, H = 170, L = 34, R = 10, T = 10, B = 28;
    const maxX = Math.max(10, ...points.map((p) => p.labels));
    const x = (v) => L + (v / maxX) * (W - L - R);
    const y = (v) => T + (1 - v) * (H - T - B);
    const parts = [svg.querySelector("title")];
    for (const v of [0, 0.25, 0.5, 0.75, 1]) {
      parts.push(node("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid-line" }));
      parts.push(node("text", { x: L - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" }, v.toFixed(2).replace(/0$/, "")));
    }
    for (const v of [0, Math.round(maxX / 2), maxX]) parts.push(node("text", { x: x(v), y: H - 12, class: "tick", "text-anchor": "middle" }, String(v)));
    parts.push(node("text", { x: (L + W - R) / 2, y: H - 1, class: "axis", "text-anchor": "middle" }, "labels"));
    if (points.length) {
      const upper = points.map((p) => `${x(p.labels)},${y((p.ci95 || [p.f1, p.f1])[1])}`);
      const lower = points.map((p) => `${x(p.labels)},${y((p.ci95 || [p.f1, p.f1])[0])}`).reverse();
      parts.push(node("polygon", { points: [...upper, ...lower].join(" "), class: "band" }));
      parts.push(node("polyline", { points: points.map((p) => `${x(p.labels)},${y(p.f1)}`).join(" "), class: "line" }));
      for (const p of points) {
        const dot = node("circle", { cx: x(p.labels), cy: y(p.f1), r: 3.5, class: "dot" });
        dot.append(node("title", {}, `${p.labels} labels: F1 ${p.f1.toFixed(2)}`));
        parts.push(dot);
      }
    }
    svg.replaceChildren(...parts);
  }

  async function train() {
    if (!canWrite() || $("train").disabled) return;
    if (state.training) { state.again = true; return state.training; }
    $("train").textContent = "Training…";
    $("train").disabled = true;
    root.classList.add("busy");
    state.training = (async () => {
      try {
        const report = await serial(() => api("/api/train", { question: state.question }));
        state.curve = report.curve;
        state.tag = report.tag;
        showModel(report.curve[report.curve.length - 1]);
        $("train-need").hidden = true;
      } catch (err) {
        $("train-need").hidden = false;
        $("train-need").textContent = err.message;
      } finally {
        $("train").textContent = "Train";
        root.classList.remove("busy");
        state.training = null;
        showCounts();
      }
      if (state.again) { state.again = false; await train(); }
    })();
    return state.training;
  }
  $("train").addEventListener("click", async () => {
    await train();
    if (state.source.kind !== "review" && !$("src-review").disabled) setSource({ kind: "review", offset: 0 });
  });

  // -- the grid -------------------------------------------------------------------------------
  async function cardsFor(ids) {
    if (!ids.length) return [];
    const params = new URLSearchParams(ids.map((i) => ["id", i]));
    return (await api("/api/workbench/items?" + params)).items;
  }

  async function loadSource() {
    const s = state.source;
    $("grid-status").textContent = "Loading…";
    let cards = [], total = 0, title = "";
    if (s.kind === "browse") {
      const data = await api(`/api/workbench/items?offset=${s.offset}&limit=${PAGE}`);
      cards = data.items; total = data.total; title = "· all items";
    } else if (s.kind === "search") {
      const data = await api("/api/search?" + new URLSearchParams({ q: s.text, limit: PAGE, offset: s.offset }));
      cards = data.hits; total = data.considered; title = `· found for “${s.text}”`;
    } else if (s.kind === "review") {
      const queue = await api("/api/review?" + new URLSearchParams({ question: state.question, limit: PAGE }));
      const extra = new Map(queue.map((q) => [q.id, q]));
      cards = (await cardsFor(queue.map((q) => q.id))).map((c) => ({ ...c, ...extra.get(c.id) }));
      total = cards.length; title = "· review: the least sure first, a quarter at random";
    } else if (s.kind === "set") {
      const found = await api(`/api/sets/${encodeURIComponent(s.name)}?limit=10000`);
      const ids = found.members.map((m) => m.id);
      cards = await cardsFor(ids.slice(s.offset, s.offset + PAGE)); total = ids.length; title = `· set “${s.name}”`;
    } else if (s.kind === "similar") {
      const hits = await api(`/api/sets/${encodeURIComponent(s.name)}/similar?limit=${PAGE}`);
      cards = await cardsFor(hits.map((h) => h.id)); total = cards.length;
      title = `· similar to “${s.name}”`;
    }
    state.cards = cards; state.total = total; state.focus = 0;
    $("source-name").textContent = title;
    for (const b of document.querySelectorAll(".source-bar .src[aria-pressed]")) b.setAttribute("aria-pressed", String(b.id === "src-" + s.kind));
    const paged = ["browse", "search", "set"].includes(s.kind);
    $("prev").hidden = !paged || s.offset === 0;
    $("next").hidden = !paged || s.offset + PAGE >= total;
    $("grid-status").textContent = !cards.length ? (s.kind === "review" ? "Every item has an answer: nothing left to review." : "Nothing here.")
      : paged ? `${s.offset + 1}–${s.offset + cards.length} of ${total}` : s.kind === "review" ? `${cards.length} items to review` : `${cards.length} items`;
    renderGrid();
  }

  function setSource(source) { state.source = source; loadSource().catch(fail); }
  $("src-browse").addEventListener("click", () => setSource({ kind: "browse", offset: 0 }));
  $("src-review").addEventListener("click", () => setSource({ kind: "review", offset: 0 }));
  $("src-search").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("find").value.trim();
    if (text) setSource({ kind: "search", text, offset: 0 });
  });
  $("prev").addEventListener("click", () => setSource({ ...state.source, offset: Math.max(0, state.source.offset - PAGE) }));
  $("next").addEventListener("click", () => setSource({ ...state.source, offset: state.source.offset + PAGE }));

  function badge(card) {
    const answer = state.labels.get(card.id);
    return el("span", { class: "answer " + (CLASS[answer] || "none") }, answer ? SHOWN[answer] : "—");
  }

  function renderGrid() {
    const grid = $("wb-grid");
    const write = canWrite();
    grid.replaceChildren(...state.cards.map((card, n) => {
      const buttons = write ? el("div", { class: "answers", role: "group", "aria-label": "Answer" },
        ...["yes", "no", "skip"].map((a) => el("button", { type: "button", class: "ans " + CLASS[a], tabIndex: -1, "data-answer": a, title: `${SHOWN[a]} (${a[0].toUpperCase()})` }, a === "skip" ? "Skip" : SHOWN[a])),
        el("button", { type: "button", class: "ans add", tabIndex: -1, "data-add": "1", title: "Add to the current set (A)" }, "+ set")) : null;
      const guess = card.machine ? el("span", { class: "guess", title: "The probe's answer, and its probability of yes" }, `probe: ${card.machine} · p ${card.p_yes.toFixed(2)}`) : null;
      return el("li", { class: "card", tabIndex: n === state.focus ? 0 : -1, "data-id": card.id, "data-n": String(n) },
        el("div", { class: "thumb" }, el("img", { src: card.thumbnail, alt: "", loading: "lazy" })),
        el("div", { class: "card-line" }, el("bdi", { class: "title", title: card.title }, card.title), badge(card)),
        guess,
        el("a", { class: "open", href: "/item?" + new URLSearchParams({ id: card.id }), tabIndex: -1 }, "open"),
        buttons,
        write && state.source.kind === "set" ? el("button", { type: "button", class: "link remove", tabIndex: -1, "data-remove": "1", title: `Take it out of “${state.source.name}”` }, "Remove from set") : null);
    }));
    for (const li of grid.children) label(li);
  }

  function label(li) {
    const card = state.cards[Number(li.dataset.n)];
    const answer = state.labels.get(card.id);
    li.setAttribute("aria-label", `${card.title}: ${answer ? SHOWN[answer] : "no answer yet"}`);
    li.classList.remove("yes", "no", "skipped");
    if (answer) li.classList.add(CLASS[answer]);
  }

  function refreshBadges() {
    for (const li of $("wb-grid").children) {
      const card = state.cards[Number(li.dataset.n)];
      li.querySelector(".answer").replaceWith(badge(card));
      label(li);
    }
  }

  function focusCard(n) {
    const items = $("wb-grid").children;
    if (!items.length) return;
    state.focus = Math.max(0, Math.min(items.length - 1, n));
    for (const li of items) li.tabIndex = -1;
    items[state.focus].tabIndex = 0;
    items[state.focus].focus();
  }

  function columns() {
    const items = [...$("wb-grid").children];
    if (!items.length) return 1;
    const top = items[0].offsetTop;
    const n = items.findIndex((li) => li.offsetTop !== top);
    return n === -1 ? items.length : n;
  }

  // One write at a time, in order: the collection takes one writer at once (another gets a 503).
  let writes = Promise.resolve();
  const serial = (work) => (writes = writes.then(work, work));

  function showAnswer(n, card) {
    const li = $("wb-grid").children[n];
    if (!li || li.dataset.id !== card.id) return;
    li.querySelector(".answer").replaceWith(badge(card));
    label(li);
  }

  function remember(id, value) {
    for (const map of [state.labels, state.recent]) {
      if (value === undefined) map.delete(id);
      else map.set(id, value);
    }
    tally();
    showCounts();
  }

  async function answer(n, value) {
    const card = state.cards[n];
    if (!card || !canWrite()) return;
    if (!state.question) { $("question").focus(); $("counts").textContent = "Type the question first."; return; }
    const before = state.labels.get(card.id);
    remember(card.id, value); // shown at once; taken back if the server refuses it
    showAnswer(n, card);
    const question = state.question;
    try {
      await serial(() => api("/api/labels", { question, ids: [card.id], answer: value }));
    } catch (err) {
      remember(card.id, before);
      showAnswer(n, card);
      return fail(err);
    }
    if (state.source.kind === "review" && $("auto-train").checked) train();
    if (state.source.kind === "review" && state.cards.every((c) => state.labels.has(c.id))) {
      if (state.training) await state.training;
      return loadSource().then(() => focusCard(0));
    }
  }

  async function addToSet(n) {
    const card = state.cards[n];
    const name = $("set-name").value.trim();
    if (!card || !canWrite()) return;
    if (!name) { $("set-msg").textContent = "Name the current set first."; $("set-name").focus(); return; }
    try {
      const query = state.source.kind === "search" ? { text: state.source.text } : { question: state.question };
      const out = await serial(() => api("/api/sets/" + encodeURIComponent(name) + "/items", { ids: [card.id], query }));
      localStorage.setItem("vitrina.wb.set", name);
      $("set-msg").textContent = out.added ? `Added to “${out.set}” (${out.items} items).` : `Already in “${out.set}”.`;
      refreshSets();
    } catch (err) { $("set-msg").textContent = err.message; }
  }

  $("wb-grid").addEventListener("keydown", (e) => {
    const li = e.target.closest(".card");
    if (!li || e.ctrlKey || e.metaKey || e.altKey) return;
    const n = Number(li.dataset.n);
    const key = e.key.toLowerCase();
    const moves = { arrowright: 1, arrowleft: -1, arrowdown: columns(), arrowup: -columns(), home: -n, end: state.cards.length };
    if (key in moves) { e.preventDefault(); focusCard(n + moves[key]); }
    else if (key in ANSWER) { e.preventDefault(); answer(n, ANSWER[key]); focusCard(n + 1); }
    else if (key === "a") { e.preventDefault(); addToSet(n); }
    else if (key === "t") { e.preventDefault(); $("train").click(); }
    else if (key === "enter") { e.preventDefault(); li.querySelector("a.open").click(); }
  });
  $("wb-grid").addEventListener("click", (e) => {
    const li = e.target.closest(".card");
    if (!li) return;
    const n = Number(li.dataset.n);
    const button = e.target.closest("button");
    if (button && button.dataset.answer) { answer(n, button.dataset.answer); focusCard(n + 1); }
    else if (button && button.dataset.add) { addToSet(n); focusCard(n); }
    else if (button && button.dataset.remove) removeFromSet(n);
    else if (!e.target.closest("a")) focusCard(n);
  });
  $("wb-grid").addEventListener("focusin", (e) => {
    const li = e.target.closest(".card");
    if (li) state.focus = Number(li.dataset.n);
  });

  // -- sets -----------------------------------------------------------------------------------
  async function refreshSets() {
    const response = await fetch("/fragments/sets");
    $("sets-list").innerHTML = await response.text(); // server-rendered, escaped by the template
    const sets = await api("/api/sets");
    $("set-names").replaceChildren(...sets.map((s) => el("option", { value: s.name })));
  }
  $("sets-list").addEventListener("click", (e) => {
    const set = e.target.closest(".set");
    if (!set) return;
    if (e.target.closest(".show-set")) setSource({ kind: "set", name: set.dataset.name, offset: 0 });
    else if (e.target.closest(".similar-set")) setSource({ kind: "similar", name: set.dataset.name, offset: 0 });
    else return;
    $("wb-label").scrollIntoView({ behavior: "smooth", block: "start" });
  });
  // Rename, save as a collection, delete (asked first, in the page), take one item out.
  async function removeFromSet(n) {
    const card = state.cards[n], name = state.source.name;
    try {
      await serial(() => api("/api/sets/" + encodeURIComponent(name) + "/remove", { ids: [card.id] }));
      await refreshSets();
      await loadSource();
      $("set-msg").textContent = `Took “${card.title}” out of “${name}”.`;
    } catch (err) { $("set-msg").textContent = err.message; }
  }
  function ask(set, danger, ...children) {
    const box = set.querySelector(".set-ask");
    const cancel = el("button", { type: "button", class: "small cancel" }, "Cancel");
    cancel.addEventListener("click", () => { box.hidden = true; box.replaceChildren(); });
    box.className = "set-ask" + (danger ? " danger" : "");
    box.replaceChildren(...children, cancel);
    box.hidden = false;
    return box;
  }
  async function change(run, done) {
    try { const out = await serial(run); await refreshSets(); $("set-msg").textContent = done(out); }
    catch (err) { $("set-msg").textContent = err.message; }
  }
  $("sets-list").addEventListener("click", (e) => {
    const set = e.target.closest(".set");
    if (!set || !canWrite()) return;
    const name = set.dataset.name, count = set.querySelector(".set-count").textContent;
    const path = "/api/sets/" + encodeURIComponent(name);
    if (e.target.closest(".delete-set")) {
      const yes = el("button", { type: "button", class: "small danger confirm-delete" }, "Delete it");
      ask(set, true, el("span", {}, `Delete the set “${name}” (${count})? The items stay in the collection.`), yes).querySelector(".confirm-delete").focus();
      yes.addEventListener("click", () => change(() => api(path + "/remove", {}), () => {
        if (state.source.kind === "set" && state.source.name === name) setSource({ kind: "browse", offset: 0 });
        if ($("set-name").value.trim() === name) { $("set-name").value = ""; localStorage.removeItem("vitrina.wb.set"); }
        return `Deleted the set “${name}”.`;
      }));
    } else if (e.target.closest(".rename-set")) {
      const input = el("input", { maxLength: 80, value: name, "aria-label": `New name for ${name}` });
      const go = el("button", { type: "button", class: "small" }, "Rename");
      ask(set, false, el("span", {}, "New name"), input, go);
      input.focus(); input.select();
      const run = () => change(() => api(path + "/rename", { to: input.value.trim() }), (out) => {
        if (state.source.kind === "set" && state.source.name === name) setSource({ ...state.source, name: out.set });
        if ($("set-name").value.trim() === name) { $("set-name").value = out.set; localStorage.setItem("vitrina.wb.set", out.set); }
        return `Renamed “${name}” to “${out.set}”.`;
      });
      go.addEventListener("click", run);
      input.addEventListener("keydown", (k) => { if (k.key === "Enter") { k.preventDefault(); run(); } });
    } else if (e.target.closest(".as-collection")) {
      const input = el("input", { maxLength: 80, value: name.replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^[^A-Za-z0-9]+/, ""), "aria-label": "Name of the new collection" });
      const go = el("button", { type: "button", class: "small" }, "Save");
      ask(set, false, el("span", {}, "New collection (beside this one), vectors reused:"), input, go);
      input.focus();
      go.addEventListener("click", () => change(() => api(path + "/collection", { collection: input.value.trim() }),
        (out) => `Saved “${name}” as the collection “${out.collection}”: ${out.items} item${out.items === 1 ? "" : "s"}, searchable now (vitrina serve ${out.collection}).`));
    }
  });
  $("set-form").addEventListener("submit", (e) => e.preventDefault());
  $("set-name").addEventListener("change", () => localStorage.setItem("vitrina.wb.set", $("set-name").value.trim()));

  function fail(err) { $("grid-status").textContent = err.message || String(err); }

  async function start() {
    showLock();
    $("set-name").value = localStorage.getItem("vitrina.wb.set") || "";
    const question = new URLSearchParams(location.search).get("question") || localStorage.getItem("vitrina.wb.question") || "";
    try {
      if (question) await loadQuestion(question);
      else if (canWrite()) {
        const data = await api("/api/labels?question=" + encodeURIComponent("?"));
        $("questions").replaceChildren(...data.questions.map((q) => el("option", { value: q.question })));
      }
      showCounts();
      await loadSource();
    } catch (err) { fail(err); }
  }
  start();
})();

// vitrina's page: keeps the query in the address and swaps in result fragments.
// Without JavaScript the form and links work as plain GETs.
(() => {
  const form = document.getElementById("search");
  const results = document.getElementById("results");
  if (!form || !results) return;
  const $ = (id) => document.getElementById(id);
  let timer = null;
  let controller = null;

  function queryFromForm() {
    const params = new URLSearchParams();
    for (const [key, value] of new FormData(form)) {
      if (typeof value === "string" && value.trim() !== "") params.append(key, value);
    }
    return params;
  }

  // The address fully determines the form (Back/Forward too): a field absent from it is cleared.
  function syncForm(params) {
    for (const [id, name] of [["q", "q"], ["upload", "upload"], ["image_url", "image_url"], ["from", "from"], ["to", "to"], ["min_score", "min_score"], ["where", "where"], ["kw", "kw"]]) {
      $(id).value = params.get(name) || "";
    }
    $("alpha").value = params.get("alpha") || "0.5";
    $("alpha-out").value = Number($("alpha").value).toFixed(2);
    if (params.get("from") || params.get("to") || params.get("min_score") || params.get("where")) form.querySelector("details").open = true;
    $("upload-note").hidden = !$("upload").value;
    if (!$("upload").value) $("image-status").textContent = "";
    const refine = $("refine");
    refine.replaceChildren();
    for (const name of ["like", "unlike"]) {
      for (const id of params.getAll(name)) {
        const input = document.createElement("input");
        Object.assign(input, { type: "hidden", name, value: id });
        refine.appendChild(input);
      }
    }
    $("clear-image").hidden = !($("upload").value || $("image_url").value);
  }

  async function load(params, push) {
    if (controller) controller.abort();
    controller = new AbortController();
    const url = "/?" + params.toString();
    if (push) history.pushState(null, "", url);
    results.setAttribute("aria-busy", "true");
    try {
      const response = await fetch("/fragments/results?" + params.toString(), { signal: controller.signal });
      results.innerHTML = await response.text();
    } catch (e) {
      if (e.name !== "AbortError") results.innerHTML = '<p class="error" role="alert">The server did not answer. Try again.</p>';
    } finally {
      results.setAttribute("aria-busy", "false");
    }
  }

  function submit(push = true) {
    const params = queryFromForm();
    params.delete("offset");
    load(params, push);
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); submit(); });
  for (const id of ["q", "kw"]) $(id).addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => submit(false), 350); });
  $("alpha").addEventListener("input", () => { $("alpha-out").value = Number($("alpha").value).toFixed(2); });
  $("alpha").addEventListener("change", () => submit());
  for (const id of ["from", "to", "min_score", "where", "image_url"]) $(id).addEventListener("change", () => submit());

  results.addEventListener("click", (e) => {
    const link = e.target.closest("a[data-nav]");
    if (!link || e.ctrlKey || e.metaKey || e.shiftKey) return;
    e.preventDefault();
    const params = new URL(link.href, location.href).searchParams;
    syncForm(params);
    load(params, true);
  });
  window.addEventListener("popstate", () => { const p = new URLSearchParams(location.search); syncForm(p); load(p, false); });

  async function uploadImage(file) {
    if (!file || !file.type.startsWith("image/")) { $("image-status").textContent = "That is not an image file."; return; }
    $("image-status").textContent = "Reading the image…";
    const body = new FormData();
    body.append("image", file);
    const response = await fetch("/api/uploads", { method: "POST", body });
    const data = await response.json();
    if (!response.ok) { $("image-status").textContent = data.error ? data.error.message : "The image could not be used."; return; }
    $("upload").value = data.upload;
    $("image-status").textContent = "Searching with " + file.name + ".";
    $("upload-note").hidden = false;
    $("clear-image").hidden = false;
    submit();
  }

  $("image-file").addEventListener("change", (e) => uploadImage(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); uploadImage(e.dataTransfer.files[0]); });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("image-file").click(); } });
  document.addEventListener("paste", (e) => {
    const file = [...(e.clipboardData || {}).files || []].find((f) => f.type.startsWith("image/"));
    if (file) uploadImage(file);
  });
  $("clear-image").addEventListener("click", () => {
    $("upload").value = ""; $("image_url").value = ""; $("image-file").value = "";
    $("image-status").textContent = ""; $("clear-image").hidden = true; $("upload-note").hidden = true;
    submit();
  });
})();

// The gan_dist demo page: asks the HTTP API (api/info, api/generate, api/walk) and shows what it answers.
// Plain JavaScript, no libraries. URLs are relative so that the page works under any path prefix.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const DISPLAY_PX = 480;  // Grids are enlarged by a whole factor to about this size.
  let info = null;
  let gridRequest = 0;  // Number of the latest grid request: answers to older ones are dropped.
  let walkRequest = 0;
  let walkTimer = null;

  function showError(element, message) {
    element.textContent = message || "";
    element.hidden = !message;
  }

  function randomSeed() {
    const value = new Uint32Array(1);
    crypto.getRandomValues(value);
    return value[0];
  }

  // Fetches `url`; returns the body as a Blob, or throws an Error carrying the API's one-line message.
  async function fetchBlob(url) {
    let response;
    try {
      response = await fetch(url);
    } catch (error) {
      throw new Error("the server cannot be reached: is it still running?");
    }
    if (!response.ok) {
      let message = `HTTP ${response.status}`;
      try {
        const body = await response.json();
        if (body.error) message = body.error;
      } catch (error) { /* Not JSON: keep the status. */ }
      throw new Error(message);
    }
    return response.blob();
  }

  // Loads `blob` into `img`; resolves once decoded (the previous picture stays until then).
  function loadInto(img, blob) {
    return new Promise((resolve, reject) => {
      const url = URL.createObjectURL(blob);
      const probe = new Image();
      probe.onload = () => {
        const old = img.dataset.objectUrl;
        img.src = url;
        img.dataset.objectUrl = url;
        if (old) URL.revokeObjectURL(old);
        const factor = Math.max(1, Math.floor(DISPLAY_PX / Math.max(probe.naturalWidth, probe.naturalHeight)));
        img.style.width = `${probe.naturalWidth * factor}px`;
        resolve(probe);
      };
      probe.onerror = () => reject(new Error("the server sent an image the browser cannot decode"));
      probe.src = url;
    });
  }

  function addFact(list, name, value) {
    const row = document.createElement("div");
    const term = document.createElement("dt");
    const detail = document.createElement("dd");
    term.textContent = name;
    detail.textContent = value;
    row.append(term, detail);
    list.append(row);
  }

  // "3" or "3 (smiling)": label k with its name where the run's data named its classes (class folders, TFDS).
  function className(k) {
    const name = (info.class_names || [])[Number(k)];
    return name ? `${k} (${name})` : String(k);
  }

  function renderFacts() {
    const list = $("facts");
    list.replaceChildren();
    const [h, w, c] = info.image_shape;
    let dataset = info.dataset;
    if (info.class_filter !== undefined) dataset += ` (class ${className(info.class_filter)} only)`;
    addFact(list, "Architecture", info.arch);
    addFact(list, "Dataset", dataset);
    addFact(list, "Step", Number(info.step).toLocaleString("en"));
    addFact(list, "EMA weights", info.ema ? `yes (decay ${info.ema_decay})` : "no");
    addFact(list, "Images", `${h}×${w}, ${c === 1 ? "grayscale" : c === 3 ? "color" : `${c} channels`}`);
    addFact(list, "Classes", info.conditional ? `${info.num_classes} (conditional)` : "unconditional");
    addFact(list, "Latent size", String(info.latent_dim));
    addFact(list, "Run's truncation", info.truncation > 0 ? `±${info.truncation}` : "none");
    addFact(list, "Loaded from", info.source === "saved_model" ? "a SavedModel export" : "a training workdir");
  }

  function setUpControls() {
    const select = $("class");
    select.replaceChildren();
    const any = document.createElement("option");
    any.value = "any";
    any.textContent = info.conditional ? "any" : "any (unconditional)";
    any.title = info.conditional ? "Every class: one column per class" : "This model takes no class";
    select.append(any);
    if (info.conditional) {
      for (let k = 0; k < info.num_classes; k++) {
        const option = document.createElement("option");
        option.value = String(k);
        option.textContent = className(k);
        select.append(option);
      }
    }
    select.disabled = !info.conditional;
    $("walk-class-note").hidden = !info.conditional;
    $("num").max = String(info.max_images);
    $("frames").max = String(info.max_frames);
    for (const id of ["seed", "seed-a", "seed-b"]) $(id).max = String(info.max_seed);

    // A shared link (?class=3&num=16&seed=42) shows the same grid.
    const query = new URLSearchParams(window.location.search);
    if (query.has("num")) $("num").value = query.get("num");
    if (query.has("seed")) $("seed").value = query.get("seed");
    // The run's own --truncation unless the link names one (the API's default is the same).
    $("truncation").value = query.has("truncation") ? query.get("truncation") : String(info.truncation ?? 0);
    $("truncation").max = String(info.max_truncation);
    if (query.has("class") && [...select.options].some((o) => o.value === query.get("class"))) {
      select.value = query.get("class");
    }
  }

  async function showGrid() {
    const params = {
      num: $("num").value.trim(), seed: $("seed").value.trim(), class: $("class").value,
      truncation: $("truncation").value.trim(),
    };
    const id = ++gridRequest;
    const figure = $("grid-figure");
    const img = $("grid");
    figure.setAttribute("aria-busy", "true");
    img.dataset.state = img.dataset.state === "empty" ? "empty" : "loading";
    try {
      const blob = await fetchBlob(`api/generate?${new URLSearchParams(params)}`);
      if (id !== gridRequest) return;
      const picture = await loadInto(img, blob);
      if (id !== gridRequest) return;
      img.dataset.seed = params.seed;
      img.dataset.class = params.class;
      img.dataset.num = params.num;
      img.dataset.truncation = params.truncation;
      img.dataset.state = "ready";
      const what = (params.class === "any" ? "" : ` of class ${className(params.class)}`) +
        (Number(params.truncation) > 0 ? `, noise truncated to ±${params.truncation}` : "");
      img.alt = `${params.num} generated images${what}, seed ${params.seed}`;
      $("caption").textContent = `${params.num} image${params.num === "1" ? "" : "s"}${what}, seed ${params.seed} ` +
        `(${picture.naturalWidth}×${picture.naturalHeight} px). The same seed always gives the same images.`;
      const download = $("download");
      download.href = `api/generate?${new URLSearchParams({ ...params, scale: 4 })}`;
      download.download = `${info.arch}_seed${params.seed}_class-${params.class}.png`;
      window.history.replaceState(null, "", `?${new URLSearchParams(params)}`);
      showError($("error"), "");
    } catch (error) {
      if (id !== gridRequest) return;
      if (img.dataset.state === "loading") img.dataset.state = "ready";
      showError($("error"), error.message);
    } finally {
      if (id === gridRequest) figure.removeAttribute("aria-busy");
    }
  }

  function animate(strip, frames) {
    const canvas = $("walk-animation");
    const size = strip.naturalWidth / frames;
    const factor = Math.max(1, Math.floor(160 / Math.max(size, strip.naturalHeight)));
    canvas.width = size * factor;
    canvas.height = strip.naturalHeight * factor;
    const context = canvas.getContext("2d");
    context.imageSmoothingEnabled = false;
    let frame = 0;
    let direction = 1;
    if (walkTimer !== null) clearInterval(walkTimer);
    const draw = () => {
      context.drawImage(strip, frame * size, 0, size, strip.naturalHeight, 0, 0, canvas.width, canvas.height);
      if (frames > 1) {
        if (frame + direction < 0 || frame + direction >= frames) direction = -direction;
        frame += direction;
      }
    };
    draw();
    walkTimer = setInterval(draw, 120);
  }

  async function showWalk() {
    const params = {
      seed_a: $("seed-a").value.trim(), seed_b: $("seed-b").value.trim(), frames: $("frames").value.trim(),
      class: $("class").value, truncation: $("truncation").value.trim(),
    };
    const id = ++walkRequest;
    const strip = $("walk-strip");
    $("walk").setAttribute("aria-busy", "true");
    try {
      const blob = await fetchBlob(`api/walk?${new URLSearchParams(params)}`);
      if (id !== walkRequest) return;
      const picture = await loadInto(strip, blob);
      if (id !== walkRequest) return;
      strip.dataset.state = "ready";
      strip.dataset.frames = params.frames;
      animate(picture, Number(params.frames));
      showError($("walk-error"), "");
    } catch (error) {
      if (id === walkRequest) showError($("walk-error"), error.message);
    } finally {
      if (id === walkRequest) $("walk").removeAttribute("aria-busy");
    }
  }

  async function start() {
    try {
      const response = await fetch("api/info");
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      info = await response.json();
    } catch (error) {
      showError($("error"), `cannot read the model's facts (${error.message}): is the server running?`);
      return;
    }
    renderFacts();
    setUpControls();
    $("controls").addEventListener("submit", (event) => {
      event.preventDefault();
      showGrid();
    });
    $("new-samples").addEventListener("click", () => {
      $("seed").value = String(randomSeed());
      showGrid();
    });
    for (const id of ["class", "truncation"]) {
      $(id).addEventListener("change", () => {
        if (!$(id).checkValidity()) return;  // A truncation being typed: wait for a valid number.
        showGrid();
        showWalk();
      });
    }
    $("walk-controls").addEventListener("submit", (event) => {
      event.preventDefault();
      showWalk();
    });
    $("seed-a").value = $("seed").value;
    $("seed-b").value = String((Number($("seed").value) + 1) % (info.max_seed + 1));
    await showGrid();
    showWalk();
  }

  document.addEventListener("DOMContentLoaded", start);
})();

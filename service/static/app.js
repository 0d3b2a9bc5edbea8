// The web page: draw or upload images, send them to the public API, show what the model thinks.
// Plain ES2020, no dependencies, no build step. The page is a client like any other: it only uses
// GET /v1/models (or V2 metadata), POST /v1/models/<name>/predict (one digit per picture) and
// POST /v1/models/<name>/read (a number: the string and a box per digit, "number" mode). feedback.js adds
// the "Wrong? It is:" buttons under each prediction (POST /v1/models/<name>/feedback).
"use strict";

(() => {
  const INK = "#111";
  const LINE_WIDTH = 20; // MNIST strokes are ~2 px of 28 -> ~20 px of 280
  const DEBOUNCE_MS = 350;
  const KNOWN_MODELS = ["mnist", "fashion-mnist"];
  const TITLES = { "mnist": "MNIST digits", "fashion-mnist": "Fashion-MNIST clothing" };

  const $ = (id) => document.getElementById(id);
  const el = {
    model: $("model"), pad: $("pad"), predict: $("predict"), clear: $("clear"),
    files: $("files"), dropzone: $("dropzone"), uploads: $("uploads"),
    error: $("error"), prediction: $("prediction"), confidence: $("confidence"),
    answeredBy: $("answered-by"), latency: $("latency"), source: $("source"), bars: $("bars"),
  };
  const num = {
    card: $("number-card"), pad: $("number-pad"), read: $("read"), clear: $("number-clear"),
    file: $("number-file"), error: $("number-error"), text: $("number-text"), summary: $("number-summary"),
    view: $("number-view"), digits: $("number-digits"), answeredBy: $("number-answered-by"),
    latency: $("number-latency"), source: $("number-source"),
  };
  const digitCards = [document.querySelector(".draw"), document.querySelector(".result"),
    document.querySelector(".upload")];

  const state = {
    models: [],        // [{name, versions, defaultVersion, labels}]
    mode: "digit",     // "digit" | "number"
    lastSource: null,  // "canvas" | {files: File[]} — what a model switch re-sends
    numberSource: null, // the same for number mode: "canvas" | {file: File}
    seq: 0,            // request counter: only the newest answer is shown
    timer: 0,
  };

  // ---- Models ---------------------------------------------------------------------------------

  /**
   * The models the service serves: [{name, versions, defaultVersion, labels}].
   * One place to change if the listing API changes. Prefers GET /v1/models; without it, asks
   * V2 metadata (GET /v2/models/<name>) for each known name and keeps those that answer.
   */
  async function listModels() {
    const listing = await fetch("/v1/models", { headers: { Accept: "application/json" } });
    if (listing.ok) {
      const body = await listing.json();
      return body.models.map((m) => ({
        name: m.name, versions: m.versions, defaultVersion: m.default_version, labels: m.labels,
      }));
    }
    const found = await Promise.all(KNOWN_MODELS.map(async (name) => {
      const res = await fetch(`/v2/models/${encodeURIComponent(name)}`);
      if (!res.ok) return null;
      const meta = await res.json();
      return {
        name: meta.name, versions: meta.versions,
        defaultVersion: meta.parameters.version, labels: meta.parameters.labels,
      };
    }));
    return found.filter(Boolean);
  }

  async function loadModels() {
    try {
      state.models = await listModels();
    } catch (err) {
      showError(`Could not load the list of models: ${err.message}`);
      return;
    }
    if (state.models.length === 0) {
      el.model.replaceChildren(new Option("No models loaded", ""));
      showError("The service has no models loaded yet. Reload the page once they are.");
      return;
    }
    el.model.replaceChildren(...state.models.map((m) => {
      const title = TITLES[m.name] || m.name;
      return new Option(`${title} (v${m.defaultVersion})`, m.name);
    }));
    // ?model=<name> picks one; otherwise MNIST (the service's default model) when it is served.
    const wanted = new URLSearchParams(location.search).get("model") || "mnist";
    if (state.models.some((m) => m.name === wanted)) el.model.value = wanted;
    el.model.disabled = false;
    renderBars(currentModel().labels, null);
  }

  function currentModel() {
    return state.models.find((m) => m.name === el.model.value) || state.models[0];
  }

  // ---- Drawing --------------------------------------------------------------------------------

  /**
   * A drawing pad on a canvas: white paper, round black strokes of LINE_WIDTH in backing-store pixels
   * (CSS may show the canvas at any size). ``onStroke`` runs when a stroke ends.
   */
  function makePad(canvas, onStroke) {
    const g = canvas.getContext("2d", { willReadFrequently: false });
    const pad = { canvas, hasInk: false };
    let last = null; // the previous point of the current stroke, or null between strokes

    pad.reset = () => {
      g.fillStyle = "#fff";
      g.fillRect(0, 0, canvas.width, canvas.height);
      pad.hasInk = false;
    };

    function point(event) {
      const rect = canvas.getBoundingClientRect();
      return {
        x: ((event.clientX - rect.left) * canvas.width) / rect.width,
        y: ((event.clientY - rect.top) * canvas.height) / rect.height,
      };
    }

    function lineTo(p) {
      g.beginPath();
      g.moveTo(last.x, last.y);
      g.lineTo(p.x, p.y);
      g.stroke();
      last = p;
    }

    canvas.addEventListener("pointerdown", (event) => {
      if (event.button !== 0) return;
      event.preventDefault();
      canvas.setPointerCapture(event.pointerId);
      clearTimeout(state.timer);
      g.strokeStyle = INK;
      g.fillStyle = INK;
      g.lineWidth = LINE_WIDTH;
      g.lineCap = "round";
      g.lineJoin = "round";
      last = point(event);
      g.beginPath(); // a dot, so a tap leaves ink too
      g.arc(last.x, last.y, LINE_WIDTH / 2, 0, Math.PI * 2);
      g.fill();
      pad.hasInk = true;
    });

    canvas.addEventListener("pointermove", (event) => {
      if (!last) return;
      const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
      for (const e of events.length ? events : [event]) lineTo(point(e));
    });

    function endStroke() {
      if (!last) return;
      last = null;
      onStroke();
    }
    canvas.addEventListener("pointerup", endStroke);
    canvas.addEventListener("pointercancel", endStroke);

    pad.blob = () => new Promise((resolve, reject) => {
      canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("the canvas is empty"))), "image/png");
    });
    pad.reset();
    return pad;
  }

  const digitPad = makePad(el.pad, () => {
    state.lastSource = "canvas";
    clearTimeout(state.timer);
    state.timer = setTimeout(predictCanvas, DEBOUNCE_MS);
  });

  el.clear.addEventListener("click", () => {
    clearTimeout(state.timer);
    state.seq += 1; // an answer still on its way is for the old drawing: drop it
    digitPad.reset();
    clearError();
    if (state.lastSource === "canvas") showIdle();
  });

  el.predict.addEventListener("click", () => {
    clearTimeout(state.timer);
    predictCanvas();
  });

  async function predictCanvas() {
    state.lastSource = "canvas";
    if (!digitPad.hasInk) {
      clearError();
      showIdle("The pad is empty: draw something first.");
      return;
    }
    const seq = ++state.seq;
    const model = currentModel();
    const blob = await digitPad.blob();
    const answer = await callPredict(model, blob, { "Content-Type": "image/png" });
    if (seq !== state.seq) return;
    if (answer.error) {
      showError(answer.error);
      showIdle("No answer: see the message above.");
      return;
    }
    clearError();
    selectUpload(null);
    showPrediction(answer.body.predictions[0], answer, "your drawing", blob);
  }

  // ---- Uploads --------------------------------------------------------------------------------

  el.files.addEventListener("change", () => {
    const files = Array.from(el.files.files);
    if (files.length) predictFiles(files);
  });

  ["dragenter", "dragover"].forEach((type) => el.dropzone.addEventListener(type, (event) => {
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    el.dropzone.classList.add("dragging");
  }));
  ["dragleave", "dragend"].forEach((type) => el.dropzone.addEventListener(type, (event) => {
    if (!el.dropzone.contains(event.relatedTarget)) el.dropzone.classList.remove("dragging");
  }));
  el.dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    el.dropzone.classList.remove("dragging");
    const files = Array.from(event.dataTransfer.files);
    if (files.length) predictFiles(files);
    else showError("Nothing to upload: drop image files, not text or links.");
  });
  // A file dropped next to the box must not make the browser leave the page to show it.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());

  async function predictFiles(files) {
    state.lastSource = { files };
    const seq = ++state.seq;
    const model = currentModel();
    const items = files.map((file) => addUploadItem(file));
    el.uploads.replaceChildren(...items.map((item) => item.li));

    const form = new FormData();
    files.forEach((file) => form.append("file", file, file.name));
    let answer = await callPredict(model, form, {});
    if (seq !== state.seq) return;

    if (answer.error && files.length > 1 && answer.status && answer.status < 500) {
      // One bad file fails the whole batch: send each file alone so the good ones still get answers.
      const singles = await Promise.all(files.map((file) => callPredict(model, file, {
        "Content-Type": file.type && file.type.startsWith("image/") ? file.type : "application/octet-stream",
      })));
      if (seq !== state.seq) return;
      singles.forEach((single, i) => fillUploadItem(items[i], single, single.body && single.body.predictions[0]));
      const failed = singles.filter((s) => s.error).length;
      const firstGood = items.findIndex((_, i) => !singles[i].error);
      if (failed) showError(`${failed} of ${files.length} files could not be classified; the upload list says why.`);
      if (firstGood >= 0) {
        if (!failed) clearError();
        items[firstGood].select();
      } else {
        showIdle("No answer: see the messages above.");
      }
      return;
    }
    if (answer.error) {
      items.forEach((item) => fillUploadItem(item, answer, null));
      showError(files.length === 1 ? `${files[0].name}: ${answer.error}` : answer.error);
      showIdle("No answer: see the message above.");
      return;
    }
    clearError();
    answer.body.predictions.forEach((pred, i) => fillUploadItem(items[i], answer, pred));
    items[0].select();
  }

  function addUploadItem(file) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "upload-item";
    button.setAttribute("aria-pressed", "false");
    const thumb = document.createElement("canvas");
    thumb.width = 56;
    thumb.height = 56;
    thumb.className = "thumb";
    thumb.setAttribute("aria-hidden", "true");
    drawThumbnail(file, thumb);
    const text = document.createElement("span");
    text.className = "upload-text";
    const name = document.createElement("span");
    name.className = "upload-name";
    name.textContent = file.name || "image";
    const verdict = document.createElement("span");
    verdict.className = "upload-verdict";
    verdict.textContent = "Classifying…";
    text.append(name, verdict);
    button.append(thumb, text);
    li.append(button);
    const item = { li, button, verdict, file, answer: null, prediction: null };
    item.select = () => {
      if (!item.prediction) return;
      selectUpload(item);
      showPrediction(item.prediction, item.answer, item.file.name || "uploaded image", item.file);
    };
    button.addEventListener("click", item.select);
    return item;
  }

  function fillUploadItem(item, answer, prediction) {
    item.answer = answer;
    item.prediction = prediction;
    if (prediction) {
      item.verdict.textContent = `${prediction.label} · ${percent(prediction.probability)}`;
      item.li.classList.remove("failed");
    } else {
      item.verdict.textContent = answer.error || "No answer";
      item.li.classList.add("failed");
      item.button.disabled = true;
    }
  }

  function selectUpload(selected) {
    for (const button of el.uploads.querySelectorAll(".upload-item")) {
      button.setAttribute("aria-pressed", String(selected !== null && button === selected.button));
    }
  }

  async function drawThumbnail(file, canvas) {
    const g = canvas.getContext("2d");
    g.fillStyle = "#fff";
    g.fillRect(0, 0, canvas.width, canvas.height);
    try {
      const bitmap = await createImageBitmap(file);
      const scale = Math.min(canvas.width / bitmap.width, canvas.height / bitmap.height);
      const w = bitmap.width * scale;
      const h = bitmap.height * scale;
      g.imageSmoothingEnabled = bitmap.width > canvas.width; // keep 28x28 pixels crisp
      g.drawImage(bitmap, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
      bitmap.close();
    } catch {
      // The browser cannot show it (the server may still read it): a neutral placeholder.
      g.fillStyle = "#cbd5e1";
      g.font = "bold 22px system-ui, sans-serif";
      g.textAlign = "center";
      g.textBaseline = "middle";
      g.fillText("?", canvas.width / 2, canvas.height / 2);
    }
  }

  // ---- Talking to the service -----------------------------------------------------------------

  /** POST one body to the model's predict; never throws: {body, status, ms, error?}. */
  async function callPredict(model, body, headers) {
    const answer = await post(`/v1/models/${encodeURIComponent(model.name)}/predict?top_k=10`, body, headers);
    if (!answer.error && !Array.isArray(answer.body.predictions)) {
      return { error: "The server sent an answer this page does not understand.", status: answer.status, ms: answer.ms };
    }
    return answer;
  }

  /** POST one body; never throws: {body, status, ms} or {error, status, ms} with a readable error. */
  async function post(url, body, headers) {
    const started = performance.now();
    let res;
    try {
      res = await fetch(url, { method: "POST", body, headers: { Accept: "application/json", ...headers } });
    } catch (err) {
      return { error: `Could not reach the service (${err.message}). Is it running?`, status: 0 };
    }
    let payload = null;
    let text = "";
    try {
      text = await res.text();
      payload = JSON.parse(text);
    } catch {
      payload = null;
    }
    const ms = performance.now() - started;
    if (!res.ok) {
      const detail = payload && typeof payload.error === "string" ? payload.error
        : text.trim().slice(0, 200) || res.statusText;
      const kind = res.status >= 500 ? "The server failed" : "The request was refused";
      return { error: `${kind} (HTTP ${res.status}): ${detail}`, status: res.status, ms };
    }
    if (!payload || typeof payload !== "object") {
      return { error: "The server sent an answer this page does not understand.", status: res.status, ms };
    }
    return { body: payload, status: res.status, ms };
  }

  // ---- Showing results ------------------------------------------------------------------------

  /** 0.4213 -> "42.1%"; never rounds a near-certainty up to 100% or a small chance down to 0%. */
  function percent(p) {
    const value = p * 100;
    if (value >= 99.95 && value < 100) return ">99.9%";
    if (value > 0 && value < 0.05) return "<0.1%";
    return `${value === 0 || value === 100 ? value.toFixed(0) : value.toFixed(1)}%`;
  }

  // Tells feedback.js (the "Wrong? It is:" buttons) which picture the shown prediction is about.
  function announce(detail) {
    document.dispatchEvent(new CustomEvent("prediction-shown", { detail }));
  }

  function showPrediction(prediction, answer, sourceName, picture) {
    const model = state.models.find((m) => m.name === answer.body.model_name) || currentModel();
    el.prediction.textContent = prediction.label;
    el.prediction.classList.remove("idle");
    el.confidence.textContent = `${percent(prediction.probability)} sure`;
    el.answeredBy.textContent = `${answer.body.model_name} v${answer.body.model_version}`;
    el.latency.textContent = `${Math.round(answer.ms)} ms`;
    el.source.textContent = sourceName;
    const probabilities = new Array(model.labels.length).fill(0);
    for (const entry of prediction.top_k) probabilities[entry.index] = entry.probability;
    renderBars(model.labels, probabilities, prediction.index);
    announce({
      model: answer.body.model_name, version: answer.body.model_version, labels: model.labels,
      predicted: prediction.label, picture,
    });
  }

  function showIdle(message = "Draw something or upload an image.") {
    el.prediction.textContent = "–";
    el.prediction.classList.add("idle");
    el.confidence.textContent = message;
    el.answeredBy.textContent = "–";
    el.latency.textContent = "–";
    el.source.textContent = "–";
    renderBars(currentModel() ? currentModel().labels : [], null);
    announce(null);
  }

  function renderBars(labels, probabilities, best = -1) {
    el.bars.replaceChildren(...labels.map((label, i) => {
      const p = probabilities ? probabilities[i] : 0;
      const li = document.createElement("li");
      li.className = i === best ? "bar best" : "bar";
      const name = document.createElement("span");
      name.className = "bar-label";
      name.id = `bar-label-${i}`;
      name.textContent = label;
      const track = document.createElement("span");
      track.className = "bar-track";
      track.setAttribute("role", "progressbar");
      track.setAttribute("aria-labelledby", name.id);
      track.setAttribute("aria-valuemin", "0");
      track.setAttribute("aria-valuemax", "100");
      track.setAttribute("aria-valuenow", (p * 100).toFixed(1));
      track.setAttribute("aria-valuetext", probabilities ? percent(p) : "no prediction yet");
      const fill = document.createElement("span");
      fill.className = "bar-fill";
      fill.style.width = `${(p * 100).toFixed(2)}%`; // CSSOM, allowed by the CSP (no inline styles)
      track.append(fill);
      const value = document.createElement("span");
      value.className = "bar-value";
      value.textContent = probabilities ? percent(p) : "–";
      li.append(name, track, value);
      return li;
    }));
  }

  function showError(message) {
    el.error.textContent = message;
  }

  function clearError() {
    el.error.textContent = "";
  }

  // ---- Numbers ("number" mode) ---------------------------------------------------------------

  const numberPad = makePad(num.pad, () => {
    state.numberSource = "canvas";
    clearTimeout(state.timer);
    state.timer = setTimeout(readDrawnNumber, DEBOUNCE_MS);
  });

  num.read.addEventListener("click", () => {
    clearTimeout(state.timer);
    readDrawnNumber();
  });

  num.clear.addEventListener("click", () => {
    clearTimeout(state.timer);
    state.seq += 1;
    numberPad.reset();
    num.error.textContent = "";
    if (state.numberSource === "canvas") showNumberIdle();
  });

  num.file.addEventListener("change", () => {
    const file = num.file.files[0];
    if (file) readNumberFile(file);
  });

  async function readDrawnNumber() {
    state.numberSource = "canvas";
    if (!numberPad.hasInk) {
      num.error.textContent = "";
      showNumberIdle("The pad is empty: write a number first.");
      return;
    }
    const blob = await numberPad.blob();
    await readNumber(blob, "image/png", "your writing", () => createImageBitmap(num.pad));
  }

  async function readNumberFile(file) {
    state.numberSource = { file };
    const type = file.type && file.type.startsWith("image/") ? file.type : "application/octet-stream";
    await readNumber(file, type, file.name || "uploaded image", () => createImageBitmap(file));
  }

  function rereadNumber() {
    const source = state.numberSource;
    if (source === "canvas" && numberPad.hasInk) readDrawnNumber();
    else if (source && source.file) readNumberFile(source.file);
    else showNumberIdle();
  }

  /** Send one picture to /read and show the string, a box and a probability per digit. */
  async function readNumber(body, type, sourceName, bitmap) {
    const seq = ++state.seq;
    const model = currentModel();
    const url = `/v1/models/${encodeURIComponent(model.name)}/read?top_k=3`;
    const answer = await post(url, body, { "Content-Type": type });
    if (seq !== state.seq) return;
    if (!answer.error && !(typeof answer.body.text === "string" && Array.isArray(answer.body.digits))) {
      answer.error = "The server sent an answer this page does not understand.";
    }
    if (answer.error) {
      num.error.textContent = `${sourceName}: ${answer.error}`;
      showNumberIdle("No answer: see the message above.");
      return;
    }
    num.error.textContent = "";
    const { text, digits } = answer.body;
    num.text.textContent = text || "–";
    num.text.classList.toggle("idle", !text);
    num.summary.textContent = text
      ? `${digits.length} digit${digits.length === 1 ? "" : "s"}, least sure ${percent(Math.min(...digits.map((d) => d.probability)))}`
      : "No ink found: nothing to read.";
    num.answeredBy.textContent = `${answer.body.model_name} v${answer.body.model_version}`;
    num.latency.textContent = `${Math.round(answer.ms)} ms`;
    num.source.textContent = sourceName;
    num.digits.replaceChildren(...digits.map((digit, i) => {
      const li = document.createElement("li");
      li.className = "digit-item";
      const labelEl = document.createElement("span");
      labelEl.className = "digit-label";
      labelEl.textContent = digit.label;
      const prob = document.createElement("span");
      prob.className = "digit-probability";
      prob.textContent = percent(digit.probability);
      const box = document.createElement("span");
      box.className = "digit-box";
      const [x0, y0, x1, y1] = digit.box;
      box.textContent = `#${i + 1} · x ${x0}–${x1}, y ${y0}–${y1}`;
      li.append(labelEl, prob, box);
      return li;
    }));
    try {
      const image = await bitmap();
      if (seq !== state.seq) return;
      drawBoxes(image, digits);
      image.close();
    } catch {
      num.view.hidden = true; // the browser cannot show this picture; the list still says it all
    }
  }

  /**
   * The picture read, with each digit's box, label and probability on it. A photo with a small number
   * in it is cropped around the digits (boxes are in the picture's pixels, EXIF orientation applied,
   * as createImageBitmap draws it), so the boxes are big enough to see.
   */
  function drawBoxes(image, digits) {
    const view = num.view;
    let [left, top, right, bottom] = [0, 0, image.width, image.height];
    if (digits.length) {
      const lineHeight = Math.max(...digits.map((d) => d.box[3] - d.box[1]));
      const margin = lineHeight * 0.6;
      const x0 = Math.max(0, Math.min(...digits.map((d) => d.box[0])) - margin);
      const y0 = Math.max(0, Math.min(...digits.map((d) => d.box[1])) - margin);
      const x1 = Math.min(image.width, Math.max(...digits.map((d) => d.box[2])) + margin);
      const y1 = Math.min(image.height, Math.max(...digits.map((d) => d.box[3])) + margin);
      if ((x1 - x0) < 0.6 * image.width || (y1 - y0) < 0.6 * image.height) [left, top, right, bottom] = [x0, y0, x1, y1];
    }
    const width = right - left;
    const height = bottom - top;
    const scale = Math.min(view.width / width, 360 / height, 4);
    view.height = Math.max(1, Math.round(height * scale));
    const offset = (view.width - width * scale) / 2;
    const g = view.getContext("2d");
    g.fillStyle = "#fff";
    g.fillRect(0, 0, view.width, view.height);
    g.drawImage(image, left, top, width, height, offset, 0, width * scale, height * scale);
    g.lineWidth = 3;
    g.textBaseline = "top";
    for (const digit of digits) {
      const [x0, y0, x1, y1] = digit.box;
      const x = (x0 - left) * scale + offset;
      const y = (y0 - top) * scale;
      const w = (x1 - x0) * scale;
      const h = (y1 - y0) * scale;
      g.strokeStyle = "#1d4ed8";
      g.strokeRect(x, y, w, h);
      g.font = "bold 16px system-ui, sans-serif"; // the label on a tab above the box
      const tab = g.measureText(digit.label).width + 10;
      const tabTop = Math.max(0, y - 22);
      g.fillStyle = "#1d4ed8";
      g.fillRect(x - 1.5, tabTop, tab, 22);
      g.fillStyle = "#fff";
      g.fillText(digit.label, x + 3.5, tabTop + 3);
      g.font = "12px system-ui, sans-serif"; // the probability under it, when there is room
      const chance = percent(digit.probability);
      if (g.measureText(chance).width <= w + 16 && y + h + 16 <= view.height) {
        g.fillStyle = "#0f172a";
        g.fillText(chance, x, y + h + 3);
      }
    }
    view.hidden = false;
  }

  function showNumberIdle(message = "Write a number or upload a photo of one.") {
    num.text.textContent = "–";
    num.text.classList.add("idle");
    num.summary.textContent = message;
    num.answeredBy.textContent = "–";
    num.latency.textContent = "–";
    num.source.textContent = "–";
    num.digits.replaceChildren();
    num.view.hidden = true;
  }

  // ---- Mode: one digit or a number ------------------------------------------------------------

  function setMode(mode) {
    state.mode = mode === "number" ? "number" : "digit";
    const number = state.mode === "number";
    for (const card of digitCards) card.hidden = number;
    num.card.hidden = !number;
    document.body.classList.toggle("number-mode", number);
    $(number ? "mode-number" : "mode-digit").checked = true;
    clearTimeout(state.timer);
    const url = new URL(location.href);
    if (number) url.searchParams.set("mode", "number");
    else url.searchParams.delete("mode");
    history.replaceState(null, "", url);
  }

  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.addEventListener("change", () => setMode(radio.value));
  }
  setMode(new URLSearchParams(location.search).get("mode"));

  // ---- Model switch ---------------------------------------------------------------------------

  el.model.addEventListener("change", () => {
    clearError();
    const source = state.lastSource;
    if (state.mode === "number") {
      rereadNumber();
    } else if (source === "canvas" && digitPad.hasInk) {
      predictCanvas();
    } else if (source && source.files) {
      predictFiles(source.files);
    } else {
      showIdle();
    }
  });

  loadModels();
})();

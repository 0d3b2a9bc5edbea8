// "Wrong? It is: 0 1 2 ... 9" under each prediction: sends the drawn or uploaded picture, with the
// label the user picks, to POST /v1/models/<name>/feedback, and says what happened. Hidden unless the
// server stores feedback (GET /v1/feedback; a server that wants a token gets no buttons: the page has
// no way to hold one). app.js announces each shown prediction with a "prediction-shown" event.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const box = $("feedback");
  const buttons = $("feedback-labels");
  const status = $("feedback-status");
  let enabled = false;
  let current = null; // {model, version, labels, predicted, picture}

  async function checkEnabled() {
    try {
      const res = await fetch("/v1/feedback", { headers: { Accept: "application/json" } });
      if (!res.ok) return false;
      const body = await res.json();
      return Boolean(body.enabled) && !body.token_required;
    } catch (_) {
      return false;
    }
  }

  function render() {
    if (!enabled || !current || !current.picture) {
      box.hidden = true;
      return;
    }
    buttons.replaceChildren(...current.labels.map((label, index) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "feedback-label";
      button.textContent = label;
      button.setAttribute("aria-label", `It is ${label}: send this picture as ${label}`);
      button.addEventListener("click", () => send(index, label));
      return button;
    }));
    status.textContent = "";
    box.hidden = false;
  }

  async function send(index, label) {
    const about = current;
    const query = new URLSearchParams({ label: String(index), predicted: about.predicted, version: about.version });
    const type = about.picture.type && about.picture.type.startsWith("image/") ? about.picture.type
      : "application/octet-stream";
    status.textContent = `Sending as ${label}…`;
    let message;
    try {
      const res = await fetch(`/v1/models/${encodeURIComponent(about.model)}/feedback?${query}`, {
        method: "POST", body: about.picture, headers: { "Content-Type": type, Accept: "application/json" },
      });
      const body = await res.json().catch(() => ({}));
      if (res.status === 201) message = `Thanks: saved as ${body.label} for the next training.`;
      else if (res.status === 200) message = `Already saved as ${body.label}; thanks.`;
      else message = `Not saved: ${body.error || `the server answered ${res.status}`}`;
    } catch (_) {
      message = "Not saved: the server could not be reached.";
    }
    if (current === about) status.textContent = message;
  }

  document.addEventListener("prediction-shown", (event) => {
    current = event.detail;
    render();
  });

  checkEnabled().then((on) => {
    enabled = on;
    render();
  });
})();

// The upload page: pick or drop an image, send it to /predict, show the ranked labels.
"use strict";

const MAX_LABELS = 5;
let labelsToShow = 3;
let classCount = 0;
let previewUrl = null;

const element = (id) => document.getElementById(id);

// Show the model's name and version, and rank as many labels as it has (up to MAX_LABELS).
async function describeModel() {
  try {
    const response = await fetch("/model");
    const body = await response.json();
    if (!response.ok) {
      element("model").textContent = body.error ? body.error.message : "No model is ready yet.";
      setTimeout(describeModel, 3000);
      return;
    }
    classCount = body.classes.length;
    labelsToShow = Math.min(MAX_LABELS, classCount);
    showModel(body.name, body.version);
  } catch (error) {
    element("model").textContent = "The service cannot be reached.";
  }
}

function showModel(name, version) {
  const classes = classCount ? ` · ${classCount} classes` : "";
  element("model").textContent = `Model ${name} · version ${version}${classes}`;
}

function showPreview(file) {
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  const preview = element("preview");
  const fileName = element("file-name");
  fileName.textContent = file.name;
  fileName.hidden = false;
  const hint = element("hint");
  hint.classList.add("again");
  hint.innerHTML = "<strong>Drop another image</strong> or click to choose one";
  previewUrl = URL.createObjectURL(file);
  preview.hidden = false;
  preview.onerror = () => { preview.hidden = true; };
  preview.src = previewUrl;
  preview.alt = `Preview of ${file.name}`;
}

function showStatus(text) {
  element("status").textContent = text;
  element("status").hidden = !text;
}

function showError(title, message) {
  element("error-title").textContent = title;
  element("error-message").textContent = message;
  element("error").hidden = false;
  element("labels").hidden = true;
  element("verdict").hidden = true;
}

// Below the model's threshold the answer has no label: say "not sure", then the top guesses.
function showVerdict(prediction) {
  const verdict = element("verdict");
  verdict.hidden = !prediction.unknown;
  const best = prediction.top_k[0];
  verdict.textContent = prediction.unknown
    ? `Not sure: this may be none of the things the model knows `
      + `(${(best.confidence * 100).toFixed(1)}% at most). Its top guesses:`
    : "";
}

function showLabels(prediction) {
  showVerdict(prediction);
  const list = element("labels");
  list.classList.toggle("guesses", Boolean(prediction.unknown));
  list.replaceChildren(...prediction.top_k.map((ranked, index) => {
    const percent = `${(ranked.confidence * 100).toFixed(1)}%`;
    const item = document.createElement("li");
    item.className = index === 0 ? "best" : "";
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = ranked.label;
    const value = document.createElement("span");
    value.className = "confidence";
    value.textContent = percent;
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = percent;
    bar.append(fill);
    item.append(label, value, bar);
    return item;
  }));
  list.hidden = false;
}

// Send the file as a multipart upload and show the answer or the service's own error message.
async function classify(file) {
  showPreview(file);
  element("error").hidden = true;
  element("labels").hidden = true;
  element("verdict").hidden = true;
  showStatus(`Classifying ${file.name}…`);
  const form = new FormData();
  form.append("file", file, file.name);
  const headers = {};
  const apiKey = element("api-key");
  if (apiKey && apiKey.value) headers.Authorization = `Bearer ${apiKey.value}`;
  let response;
  let body = null;
  try {
    response = await fetch(`/predict?top_k=${labelsToShow}`, { method: "POST", body: form, headers });
    body = await response.json().catch(() => null);
  } catch (error) {
    showStatus("");
    showError("The service cannot be reached", "Check that it is running, then try again.");
    return;
  }
  showStatus("");
  if (!response.ok) {
    const message = body && body.error ? body.error.message
      : `The service answered ${response.status} without saying why.`;
    const title = response.status === 401 ? "This service needs a valid API key"
      : `Could not classify ${file.name}`;
    showError(title, message);
    return;
  }
  showModel(body.model.name, body.model.version);
  showLabels(body.predictions[0]);
}

function pick(files) {
  if (files && files.length) classify(files[0]);
}

document.addEventListener("DOMContentLoaded", () => {
  const drop = element("drop");
  const input = element("file");
  input.addEventListener("change", () => {
    pick(input.files);
    // Let the same file be picked again, e.g. after a wrong API key.
    input.value = "";
  });
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => { event.preventDefault(); pick(event.dataTransfer.files); });
  // Keep a dropped file from replacing the page when it misses the drop zone.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  element("upload").addEventListener("submit", (event) => event.preventDefault());
  describeModel();
});

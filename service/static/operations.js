// The operator view: every model's versions, labels, canary, live accuracy, shadow agreement
// and drift, read from /operations/models and drawn again every few seconds. Every figure is
// shown with its counts, and every text from the server is set as text, never as markup.
"use strict";

const REFRESH_MS = 3000;
let timer = null;

const element = (id) => document.getElementById(id);

function node(tag, text, className) {
  const made = document.createElement(tag);
  if (text !== undefined && text !== null) made.textContent = String(text);
  if (className) made.className = className;
  return made;
}

const percent = (share) => `${(share * 100).toFixed(1)}%`;

// "stable: 8 of 10 right (80.0%; 95% interval 49.0–94.3%)": never a rate without its counts.
function accuracyText(entry) {
  const [low, high] = entry.interval_95 || [];
  const interval = entry.interval_95
    ? `; 95% interval ${(low * 100).toFixed(1)}–${percent(high)}` : "";
  return `${entry.version_label}: ${entry.correct} of ${entry.labelled} right `
    + `(${percent(entry.correct / entry.labelled)}${interval})`;
}

function accuracyCell(version, store) {
  const cell = node("td", null, "accuracy");
  if (version.live_accuracy === null) {
    cell.textContent = store === "off" ? "prediction store off" : "prediction store unavailable";
  } else if (!version.live_accuracy.length) {
    cell.textContent = "no feedback yet";
  } else {
    for (const entry of version.live_accuracy) cell.append(node("div", accuracyText(entry)));
  }
  return cell;
}

function shadowCell(version) {
  const cell = node("td", null, "shadow");
  if (!version.shadow_agreement.length) cell.textContent = "—";
  for (const entry of version.shadow_agreement) {
    cell.append(node("div", `${entry.agreed} of ${entry.compared} agreed with version `
      + `${entry.stable_version} (${percent(entry.agreed / entry.compared)})`));
  }
  return cell;
}

function driftCell(version) {
  const drift = version.drift;
  return node("td", drift ? `class mix PSI ${drift.class_mix_psi.toFixed(3)}, confidence PSI `
    + `${drift.confidence_psi.toFixed(3)} over ${drift.window} answers` : "—", "drift");
}

function versionRow(version, store) {
  const row = node("tr");
  row.dataset.version = version.version;
  const state = node("td", version.state, "state");
  if (version.reason) state.append(node("div", version.reason, "reason"));
  row.append(node("td", version.version, "version"),
    node("td", version.labels.join(", ") || "—", "labels-cell"), state,
    accuracyCell(version, store), shadowCell(version), driftCell(version));
  return row;
}

function canaryText(model) {
  const stable = model.labels.stable ? `stable: version ${model.labels.stable}` : "no stable";
  if (!model.canary) return `${stable} · no canary`;
  const share = model.canary.mode === "shadow" ? "sees a copy of" : "answers";
  return `${stable} · canary: version ${model.canary.version} ${share} `
    + `${model.canary.percent}% of requests (${model.canary.mode})`;
}

function modelSection(model, store) {
  const section = node("section", null, "operations-model");
  section.dataset.model = model.name;
  section.append(node("h2", `${model.name} · ${model.state}`));
  section.append(node("p", canaryText(model), "canary"));
  for (const problem of [model.reason, model.policy_problem]) {
    if (problem) section.append(node("p", problem, "reason"));
  }
  const table = node("table", null, "versions");
  const head = node("tr");
  for (const title of ["Version", "Labels", "State", "Live accuracy (feedback)",
    "Shadow agreement", "Drift"]) head.append(node("th", title));
  table.append(node("thead"), node("tbody"));
  table.tHead.append(head);
  table.tBodies[0].append(...model.versions.map((version) => versionRow(version, store)));
  section.append(table);
  return section;
}

function showError(title, message) {
  element("error-title").textContent = title;
  element("error-message").textContent = message;
  element("error").hidden = false;
}

async function refresh() {
  clearTimeout(timer);
  const headers = {};
  const key = element("api-key");
  if (key && key.value) headers.Authorization = `Bearer ${key.value}`;
  try {
    const response = await fetch("/operations/models", { headers, cache: "no-store" });
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      const message = body && body.error ? body.error.message
        : `The service answered ${response.status} without saying why.`;
      showError(response.status === 403 || response.status === 401
        ? "This view is not open to you" : "Cannot show the models", message);
      element("models").replaceChildren();
    } else {
      element("error").hidden = true;
      element("models").replaceChildren(
        ...body.models.map((model) => modelSection(model, body.prediction_store)));
      const count = body.models.length;
      element("summary").textContent = `${count} model${count === 1 ? "" : "s"} · prediction store `
        + `${body.prediction_store} · updated ${new Date().toLocaleTimeString()} · `
        + `refreshed every ${REFRESH_MS / 1000} s`;
    }
  } catch (error) {
    showError("The service cannot be reached", "Check that it is running; this view retries.");
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  const form = element("key-form");
  if (form) {
    form.addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
    element("api-key").addEventListener("change", refresh);
  }
  refresh();
});

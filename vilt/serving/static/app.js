// The demo page: pick or upload an image, ask, show the answers and the heatmap.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { image: null, task: null };

// easy-VQA-like pictures drawn here, so the page needs no image files
const SAMPLES = [
  { name: "red circle", colour: "#d62728", shape: "circle" },
  { name: "blue rectangle", colour: "#1f5fbf", shape: "rectangle" },
  { name: "green triangle", colour: "#2ca02c", shape: "triangle" },
  { name: "yellow circle", colour: "#e8c200", shape: "circle" },
];

function drawSample(sample, size) {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = size;
  const g = canvas.getContext("2d");
  g.fillStyle = "#f4f1ea";
  g.fillRect(0, 0, size, size);
  g.fillStyle = sample.colour;
  const m = size * 0.2;
  if (sample.shape === "circle") {
    g.beginPath();
    g.arc(size / 2, size / 2, size / 2 - m, 0, 2 * Math.PI);
    g.fill();
  } else if (sample.shape === "rectangle") {
    g.fillRect(m, m * 1.5, size - 2 * m, size - 3 * m);
  } else {
    g.beginPath();
    g.moveTo(size / 2, m);
    g.lineTo(size - m, size - m);
    g.lineTo(m, size - m);
    g.closePath();
    g.fill();
  }
  return canvas;
}

function choose(blob) {
  state.image = blob;
  const preview = $("preview");
  preview.src = URL.createObjectURL(blob);
  preview.hidden = false;
  $("ask").disabled = !state.task;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function render(items, key) {
  const list = $("answers");
  list.replaceChildren();
  for (const item of items) {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = item[key];
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.round(item.score * 100)}%`;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `${(item.score * 100).toFixed(1)}%`;
    li.append(name, bar, score);
    list.append(li);
  }
}

async function ask(event) {
  event.preventDefault();
  if (!state.image || !state.task) return;
  showError("");
  const form = new FormData();
  form.append("image", state.image, "image.png");
  form.append("top_k", "5");
  form.append("heatmap", "true");
  if (state.task === "vqa") form.append("question", $("question").value);
  $("ask").disabled = true;
  const started = performance.now();
  try {
    const response = await fetch(`/v1/${state.task}`, { method: "POST", body: form });
    const body = await response.json();
    if (!response.ok) {
      showError(body.error || `HTTP ${response.status}`);
      return;
    }
    render(state.task === "vqa" ? body.answers : body.labels,
           state.task === "vqa" ? "answer" : "label");
    $("timing").textContent = `answered in ${Math.round(performance.now() - started)} ms`;
    if (body.heatmap) {
      $("heatmap").src = body.heatmap.png;
      $("heatmap").hidden = false;
    }
  } catch (err) {
    showError(`the server did not answer: ${err}`);
  } finally {
    $("ask").disabled = false;
  }
}

async function init() {
  for (const sample of SAMPLES) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "sample";
    button.title = sample.name;
    button.setAttribute("aria-label", sample.name);
    button.append(drawSample(sample, 56));
    button.addEventListener("click", () => drawSample(sample, 192).toBlob(choose, "image/png"));
    $("samples").append(button);
  }
  $("file").addEventListener("change", (e) => e.target.files[0] && choose(e.target.files[0]));
  $("form").addEventListener("submit", ask);
  try {
    const health = await (await fetch("/health")).json();
    const endpoints = health.endpoints || [];
    if (endpoints.includes("/v1/vqa")) {
      state.task = "vqa";
    } else if (endpoints.includes("/v1/classify")) {
      state.task = "classify";
      $("ask-title").textContent = "2. Classify it";
      $("question").hidden = true;
      $("ask").textContent = "Classify";
    }
    $("model").textContent = state.task
      ? `${health.model} on ${health.device}`
      : `${health.model} serves ${endpoints.join(", ")}: nothing this page shows (see /docs)`;
  } catch (err) {
    showError(`cannot reach the server: ${err}`);
  }
  $("ask").disabled = !(state.task && state.image);
  document.body.dataset.ready = "true";
}

init();

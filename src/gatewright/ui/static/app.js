// gatewright control plane UI: one page over the REST API (docs/control-api.md), no build step.
// Everything the server sends is put into the page as text (textContent), never parsed as HTML.

const API = "api/v1"; // relative: the page also works behind a path prefix
const POLL_MS = 2000;
const RETRY_LOG_MS = 3000;
const BUILDING = new Set(["Pending", "Fetching", "Building", "Loading"]);
const NAME_RE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const MODEL_SCHEMES = /^(file|s3|oci|https?):\/\//;
const TEMPLATE_MAX_ELEMENTS = 4096;

const $ = (id) => document.getElementById(id);

const state = {
  authed: false,
  timer: null,
  deployments: [],
  targetsLoaded: false,
  log: null, // the log panel (emptyLog())
  // the prediction editor: which deployment its text was made for, and whether the user edited it
  editor: { name: null, dirty: false },
};

// ---------------------------------------------------------------- API

class Unauthorized extends Error {}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, { method = "GET", json, body } = {}) {
  const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  const res = await fetch(`${API}/${path}`, init);
  if (res.status === 401 && path !== "login") {
    showLogin();
    throw new Unauthorized("not logged in");
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      // not JSON: a proxy's page or a plain message; show the message only when it is short plain text
      const plain = (res.headers.get("Content-Type") ?? "").startsWith("text/plain") && text.length < 500;
      data = { error: plain ? text.trim() : `${res.status} ${res.statusText} from ${res.url}` };
    }
  }
  if (!res.ok) throw new ApiError(res.status, data?.error ?? `${res.status} ${res.statusText}`);
  return data;
}

const enc = encodeURIComponent;

// ---------------------------------------------------------------- small DOM helpers

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false).map(asNode));
  return node;
}

function asNode(child) {
  return child instanceof Node ? child : document.createTextNode(String(child));
}

const dash = (value) => (value === null || value === undefined || value === "" ? "—" : value);

function badge(text, title) {
  return el("span", { class: `badge badge-${String(text).toLowerCase()}`, title }, text);
}

function time(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return el("time", { datetime: iso, title: date.toLocaleString() }, date.toLocaleTimeString());
}

function duration(start, end) {
  if (!start) return "—";
  const seconds = ((end ? new Date(end) : new Date()) - new Date(start)) / 1000;
  if (!Number.isFinite(seconds)) return "—";
  const text = seconds < 90 ? `${seconds.toFixed(1)} s` : `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return end ? text : `${text} so far`;
}

/** Keep a table body's rows in step with ITEMS, one row per key; a row is rebuilt only when its
 * item changed, so focus and selection survive the polling. CELLS(item) gives [column, content] pairs. */
function syncRows(tbody, items, key, cells) {
  const old = new Map([...tbody.rows].map((row) => [row.dataset.key, row]));
  let previous = null;
  for (const item of items) {
    const k = key(item);
    let row = old.get(k);
    old.delete(k);
    if (!row) row = el("tr", { dataset: { key: k } });
    const signature = JSON.stringify(item);
    if (row.dataset.signature !== signature) {
      row.dataset.signature = signature;
      row.replaceChildren(...cells(item).map(([col, content]) => el("td", { dataset: { col } }, content)));
    }
    const wanted = previous ? previous.nextSibling : tbody.firstChild;
    if (row !== wanted) tbody.insertBefore(row, wanted);
    previous = row;
  }
  for (const row of old.values()) row.remove();
}

function setError(id, error) {
  $(id).textContent = error ? (error instanceof Error ? error.message : String(error)) : "";
}

// ---------------------------------------------------------------- login

function showLogin() {
  const wasAuthed = state.authed;
  state.authed = false;
  stopPolling();
  closeLog();
  clearData();
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("connection").textContent = wasAuthed ? "Signed out." : "Not signed in.";
  $("login-token").focus();
}

function showApp() {
  state.authed = true;
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  setError("login-error", "");
  if (!state.targetsLoaded) loadTargets();
  startPolling();
}

/** Forget everything the API told us, so that nothing stays on the page after signing out. */
function clearData() {
  state.deployments = [];
  state.targetsLoaded = false;
  $("devices-problems").dataset.signature = "";
  for (const id of ["deployments-body", "devices-body", "devices-problems", "jobs-body", "p-outputs", "d-target", "device-uris"]) {
    $(id).replaceChildren();
  }
  for (const id of ["deployments-empty", "devices-empty", "jobs-empty"]) $(id).hidden = false;
  $("p-name").replaceChildren(el("option", { value: "" }, "choose a Ready deployment"));
  $("p-request").value = "";
  $("p-response").textContent = "";
  $("p-latency").textContent = "—";
  $("p-outputs-wrap").hidden = true;
  for (const id of ["deploy-error", "deployments-error", "p-error", "deploy-progress"]) setError(id, "");
  state.editor = { name: null, dirty: false };
}

async function login(event) {
  event.preventDefault();
  const token = $("login-token").value.trim();
  if (!token) {
    setError("login-error", "Enter the token.");
    return;
  }
  try {
    await api("login", { method: "POST", json: { token } });
  } catch (error) {
    const message = error instanceof ApiError && error.status === 401
      ? `Wrong token${/^wrong token\.?$/i.test(error.message) ? "" : ` (${error.message})`}: use the one gatewright control printed or keeps in DATA/token.`
      : error.message;
    setError("login-error", message);
    $("login-token").select();
    return;
  }
  $("login-token").value = "";
  showApp();
}

async function logout() {
  try {
    await api("logout", { method: "POST" });
  } catch (error) {
    if (!(error instanceof Unauthorized)) console.warn("logout:", error);
  }
  showLogin();
}

// ---------------------------------------------------------------- polling

function startPolling() {
  stopPolling();
  refresh();
}

function stopPolling() {
  clearTimeout(state.timer);
  state.timer = null;
}

async function refresh() {
  clearTimeout(state.timer);
  const [deployments, devices, jobs] = await Promise.allSettled([api("deployments"), api("devices"), api("jobs")]);
  if (!state.authed) return; // a 401 above showed the login form
  const problems = [];
  if (deployments.status === "fulfilled") renderDeployments(deployments.value.deployments ?? []);
  else problems.push(`deployments: ${deployments.reason.message}`);
  if (devices.status === "fulfilled") renderDevices(devices.value.devices ?? [], devices.value.problems);
  else problems.push(`devices: ${devices.reason.message}`);
  if (jobs.status === "fulfilled") renderJobs(jobs.value.jobs ?? []);
  else problems.push(`jobs: ${jobs.reason.message}`);
  $("connection").textContent = problems.length
    ? `Cannot refresh ${problems.join("; ")}`
    : `Updated ${new Date().toLocaleTimeString()}`;
  $("connection").classList.toggle("bad", problems.length > 0);
  state.timer = setTimeout(refresh, POLL_MS);
}

// ---------------------------------------------------------------- deployments

function renderDeployments(list) {
  state.deployments = list;
  syncRows($("deployments-body"), list, (d) => d.name, deploymentCells);
  $("deployments-empty").hidden = list.length > 0;
  for (const row of $("deployments-body").rows) {
    if (row.dataset.key === state.log.deployment) row.setAttribute("aria-current", "true");
    else row.removeAttribute("aria-current");
  }
  renderPredictChoices(list);
  const log = state.log;
  const shown = list.find((d) => d.name === log.deployment);
  if (shown) {
    log.seen = true;
    log.generation ??= shown.generation; // the log may have opened before the list showed it
    // a re-applied deployment builds again: follow its new log
    if (log.ended && shown.generation !== log.generation && BUILDING.has(shown.phase)) openDeploymentLog(shown.name);
  } else if (log.deployment && log.seen && !log.gone) {
    // deleted: keep its last lines on screen, say so, and stop listening
    log.gone = true;
    log.ended = true;
    clearTimeout(log.retry);
    log.source?.close();
    setLogState("deleted", "ended");
  }
}

function deploymentCells(d) {
  const spec = d.spec?.spec ?? d.spec ?? {};
  const endpoints = d.endpoints ?? {};
  const actions = [
    el("button", { type: "button", class: "small secondary", "aria-label": `Logs of ${d.name}`,
      onclick: () => openDeploymentLog(d.name) }, "Logs"),
  ];
  if (d.phase === "Ready") {
    actions.push(el("button", { type: "button", class: "small secondary", "aria-label": `Predict with ${d.name}`,
      onclick: () => choosePrediction(d.name) }, "Predict"));
  }
  if (d.phase !== "Deleting") {
    actions.push(el("button", { type: "button", class: "small danger", "aria-label": `Delete ${d.name}`,
      onclick: () => deleteDeployment(d.name) }, "Delete"));
  }
  return [
    ["name", el("button", { type: "button", class: "link", title: "Show its log", onclick: () => openDeploymentLog(d.name) }, d.name)],
    ["engine", dash(spec.engine)],
    ["target", spec.engine === "onnx" ? "—" : dash(spec.target)], // the normalized spec names one either way
    ["phase", badge(d.phase ?? "Unknown", d.updated ? `since ${new Date(d.updated).toLocaleString()}` : undefined)],
    ["device", dash(d.device ?? spec.device?.uri ?? spec.device?.kind)],
    ["rest", endpoints.rest ? el("a", { href: `${endpoints.rest}`, target: "_blank", rel: "noopener", title: "The model's v2 metadata" }, endpoints.rest) : "—"],
    ["grpc", endpoints.grpc ? el("code", {}, endpoints.grpc) : "—"],
    ["reason", el("span", { class: "reason" }, dash(d.reason))],
    ["actions", el("div", { class: "row-actions" }, actions)],
  ];
}

async function deleteDeployment(name) {
  if (!window.confirm(`Delete the deployment ${name}? It is unloaded from its device; its firmware stays in the store.`)) return;
  try {
    await api(`deployments/${enc(name)}`, { method: "DELETE" });
    setError("deployments-error", "");
  } catch (error) {
    if (error instanceof Unauthorized) return;
    setError("deployments-error", `Delete ${name}: ${error.message}`);
  }
  refresh();
}

// ---------------------------------------------------------------- new deployment

function specFromForm(modelUri, calibrationUri) {
  const form = $("deploy-form");
  const engine = form.engine.value;
  const spec = { model: { uri: modelUri }, engine };
  if (engine === "fpga") {
    if (calibrationUri) spec.model.calibration = calibrationUri;
    if (form.target.value) spec.target = form.target.value;
    const bits = form.bits.value.trim(); // 8, or as `gatewright build --bits`: weight=6
    if (bits) spec.quantization = { bits: /^\d+$/.test(bits) ? Number(bits) : bits };
    if (form.arch.value) spec.architecture = { arch: form.arch.value };
  }
  const device = {};
  if (form.device.value) device.kind = form.device.value;
  if (form["device-uri"].value.trim()) device.uri = form["device-uri"].value.trim();
  if (Object.keys(device).length) spec.device = device;
  return { apiVersion: "gatewright/v1", kind: "Deployment", metadata: { name: form.name.value.trim() }, spec };
}

/** The model (or calibration) source: an uploaded file or a URL, exactly one for the model. */
function source(fileInput, urlInput, what, required) {
  const file = fileInput.files?.[0] ?? null;
  const url = urlInput.value.trim();
  if (file && url) throw new Error(`Give the ${what} as a file or as a URL, not both.`);
  if (!file && !url && required) throw new Error(`Choose a ${what} file to upload, or give its URL.`);
  if (url && !MODEL_SCHEMES.test(url)) {
    throw new Error(`The ${what} URL must start with file://, s3://, oci:// or https:// (got ${url}).`);
  }
  return { file, url };
}

function updateSpecPreview() {
  const form = $("deploy-form");
  const model = form["model-file"].files?.[0];
  const calib = form["calibration-file"].files?.[0];
  const spec = specFromForm(
    model ? `(uploaded on deploy: ${model.name})` : form["model-url"].value.trim(),
    calib ? `(uploaded on deploy: ${calib.name})` : form["calibration-url"].value.trim(),
  );
  $("spec-preview").textContent = JSON.stringify(spec, null, 2);
}

function updateEngine() {
  const fpga = $("d-engine").value === "fpga";
  $("fpga-options").disabled = !fpga;
  $("fpga-options").hidden = !fpga;
  updateSpecPreview();
}

async function upload(file, what) {
  $("deploy-progress").textContent = `Uploading ${what} ${file.name} (${formatBytes(file.size)})…`;
  const body = new FormData();
  body.append("file", file, file.name);
  try {
    const answer = await api("uploads", { method: "POST", body });
    return answer.uri;
  } catch (error) {
    if (error instanceof ApiError) throw new ApiError(error.status, `Upload of ${file.name} failed: ${error.message}`);
    throw error;
  }
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

async function deploy(event) {
  event.preventDefault();
  const form = $("deploy-form");
  setError("deploy-error", "");
  const name = form.name.value.trim();
  let model;
  let calibration;
  try {
    if (!NAME_RE.test(name)) {
      throw new Error("The name must be a DNS label: lower-case letters, digits and dashes, starting and ending with a letter or digit, at most 63 characters.");
    }
    model = source(form["model-file"], form["model-url"], "model", true);
    calibration = form.engine.value === "fpga"
      ? source(form["calibration-file"], form["calibration-url"], "calibration", false)
      : { file: null, url: "" };
    if (form.engine.value === "fpga" && !form.target.value) throw new Error("Choose a target.");
  } catch (error) {
    setError("deploy-error", error);
    return;
  }
  const button = $("deploy-submit");
  button.disabled = true;
  try {
    const modelUri = model.file ? await upload(model.file, "model") : model.url;
    const calibrationUri = calibration.file ? await upload(calibration.file, "calibration") : calibration.url;
    const spec = specFromForm(modelUri, calibrationUri || null);
    $("spec-preview").textContent = JSON.stringify(spec, null, 2);
    $("deploy-progress").textContent = `Applying ${name}…`;
    const status = await api("deployments", { method: "POST", json: spec });
    $("deploy-progress").textContent = `Applied ${status.name ?? name}: ${status.phase ?? "accepted"}.`;
    openDeploymentLog(status.name ?? name);
    refresh();
  } catch (error) {
    if (!(error instanceof Unauthorized)) {
      $("deploy-progress").textContent = "";
      setError("deploy-error", error);
    }
  } finally {
    button.disabled = false;
  }
}

async function loadTargets() {
  try {
    const answer = await api("targets");
    const select = $("d-target");
    const previous = select.value || "generic";
    select.replaceChildren(
      ...(answer.targets ?? []).map((t) => {
        const notes = [t.family, t.place_and_route === false ? "RTL and simulation only" : null].filter(Boolean);
        return el("option", { value: t.name }, notes.length ? `${t.name} (${notes.join(", ")})` : t.name);
      }),
    );
    if ([...select.options].some((o) => o.value === previous)) select.value = previous;
    state.targetsLoaded = true;
    updateSpecPreview();
  } catch (error) {
    if (!(error instanceof Unauthorized)) setError("deploy-error", `Cannot list the targets: ${error.message}`);
  }
}

// ---------------------------------------------------------------- log panel

function closeLog() {
  const log = state.log;
  clearTimeout(log.retry);
  log.source?.close();
  state.log = emptyLog();
}

function emptyLog() {
  // what the log panel shows, its EventSource, whether the stream ended, whether its deployment was
  // listed since (and is gone now)
  return { key: null, url: null, deployment: null, generation: null, source: null, ended: false, retry: null,
    seen: false, gone: false };
}

function openDeploymentLog(name) {
  const status = state.deployments.find((d) => d.name === name);
  openLog({
    key: `deployment/${name}`,
    url: `${API}/deployments/${enc(name)}/logs?follow=true`,
    title: `deployment ${name}`,
    deployment: name,
    generation: status?.generation ?? null,
  });
  for (const row of $("deployments-body").rows) {
    if (row.dataset.key === name) row.setAttribute("aria-current", "true");
    else row.removeAttribute("aria-current");
  }
}

function openJobLog(job) {
  openLog({
    key: `job/${job.id}`,
    url: `${API}/jobs/${enc(job.id)}/logs?follow=true`,
    title: `job ${job.id} (${job.deployment})`,
    deployment: null,
    generation: null,
  });
}

function openLog({ key, url, title, deployment, generation }) {
  closeLog();
  $("log").replaceChildren();
  $("log-title").textContent = title;
  setLogState("connecting…", "connecting");
  const source = new EventSource(url);
  state.log = { ...emptyLog(), key, url, deployment, generation, source };
  source.onopen = () => setLogState("live", "live");
  source.onmessage = (event) => appendLog(event.data);
  source.addEventListener("end", (event) => {
    source.close();
    if (state.log.source !== source) return;
    state.log.ended = true;
    setLogState(`finished: ${event.data}`, "ended");
  });
  source.onerror = () => {
    if (state.log.source !== source || state.log.ended) return;
    // EventSource would reconnect by itself and replay the log from the start: reopen it cleanly instead
    source.close();
    setLogState("connection lost, retrying…", "lost");
    state.log.retry = setTimeout(() => {
      if (state.log.source !== source || !state.authed) return;
      if (deployment && !state.deployments.some((d) => d.name === deployment)) {
        setLogState("the deployment is gone", "ended");
        return;
      }
      openLog({ key, url, title, deployment, generation });
    }, RETRY_LOG_MS);
  };
}

function appendLog(text) {
  const pane = $("log");
  const atBottom = pane.scrollHeight - pane.scrollTop - pane.clientHeight < 24;
  pane.append(`${text}\n`);
  if (atBottom) pane.scrollTop = pane.scrollHeight;
}

function setLogState(text, kind) {
  const node = $("log-state");
  node.textContent = text;
  node.dataset.state = kind;
}

// ---------------------------------------------------------------- prediction

function renderPredictChoices(list) {
  const select = $("p-name");
  const ready = list.filter((d) => d.phase === "Ready").map((d) => d.name);
  const current = [...select.options].slice(1).map((o) => o.value);
  if (JSON.stringify(ready) !== JSON.stringify(current)) {
    const value = select.value;
    select.replaceChildren(
      el("option", { value: "" }, ready.length ? "choose a Ready deployment" : "no Ready deployment yet"),
      ...ready.map((name) => el("option", { value: name }, name)),
    );
    select.value = ready.includes(value) ? value : "";
  }
  if (!select.value && ready.length === 1) choosePrediction(ready[0]);
}

function choosePrediction(name) {
  $("p-name").value = name;
  if (!state.editor.dirty || state.editor.name !== name) fillTemplate();
}

/** Input metadata where a status carries it (names, shapes, datatypes), else null. */
function modelInputs(status) {
  const candidates = [status?.inputs, status?.model?.inputs, status?.metadata?.inputs, status?.endpoints?.inputs];
  return candidates.find((c) => Array.isArray(c) && c.length && c.every((i) => i && typeof i.name === "string")) ?? null;
}

const DATATYPES = {
  float32: "FP32", float: "FP32", float64: "FP64", double: "FP64", float16: "FP16",
  int8: "INT8", int16: "INT16", int32: "INT32", int64: "INT64", uint8: "UINT8", bool: "BOOL", string: "BYTES",
};

function v2Datatype(dtype) {
  if (!dtype) return "FP32";
  const upper = String(dtype).toUpperCase();
  if (/^(FP|INT|UINT|BF)\d+$|^BOOL$|^BYTES$/.test(upper)) return upper;
  return DATATYPES[String(dtype).toLowerCase().replace(/^tensor\(|\)$/g, "")] ?? "FP32";
}

function requestTemplate(status) {
  const inputs = modelInputs(status);
  if (inputs) {
    const tensors = inputs.map((input) => {
      const shape = (input.shape ?? [1]).map((dim) => (Number.isInteger(dim) && dim > 0 ? dim : 1));
      const count = shape.reduce((a, b) => a * b, 1);
      const datatype = v2Datatype(input.datatype ?? input.dtype);
      const zero = datatype === "BOOL" ? false : datatype === "BYTES" ? "" : 0;
      return { name: input.name, shape, datatype, data: count <= TEMPLATE_MAX_ELEMENTS ? new Array(count).fill(zero) : [] };
    });
    return { request: { inputs: tensors }, hint: "Template from the model's inputs: replace the data with your sample." };
  }
  return {
    request: { inputs: [{ name: "input", shape: [1, 4], datatype: "FP32", data: [0, 0, 0, 0] }] },
    hint: "The control plane does not report this model's inputs: set the input name, shape, datatype and data as "
      + "the model declares them (its REST endpoint's metadata lists them). Ctrl+Enter sends.",
  };
}

function fillTemplate() {
  const name = $("p-name").value;
  if (!name) return;
  const status = state.deployments.find((d) => d.name === name);
  const { request, hint } = requestTemplate(status);
  $("p-request").value = tensorJson(request);
  $("p-hint").textContent = hint;
  state.editor = { name, dirty: false };
}

/** JSON with each tensor's shape and data on one line (v2 "inputs" and "outputs"), so that a batch
 * of numbers stays readable. */
function tensorJson(message) {
  const placeholders = [];
  const inline = (value) => {
    placeholders.push(JSON.stringify(value));
    return `\u0000${placeholders.length - 1}\u0000`;
  };
  const copy = structuredClone(message);
  for (const list of [copy?.inputs, copy?.outputs]) {
    if (!Array.isArray(list)) continue;
    for (const tensor of list) {
      for (const key of ["shape", "data"]) if (Array.isArray(tensor?.[key])) tensor[key] = inline(tensor[key]);
    }
  }
  return JSON.stringify(copy, null, 2).replace(/"\\u0000(\d+)\\u0000"/g, (_, i) => placeholders[Number(i)]);
}

async function predict(event) {
  event?.preventDefault();
  const name = $("p-name").value;
  setError("p-error", "");
  if (!name) {
    setError("p-error", "Choose a Ready deployment.");
    return;
  }
  let request;
  try {
    request = JSON.parse($("p-request").value);
  } catch (error) {
    setError("p-error", `The request is not valid JSON: ${error.message}`);
    return;
  }
  const button = $("p-send");
  button.disabled = true;
  $("p-latency").textContent = "…";
  try {
    const answer = await api(`deployments/${enc(name)}/infer`, { method: "POST", json: request });
    showPrediction(answer);
  } catch (error) {
    if (!(error instanceof Unauthorized)) {
      $("p-latency").textContent = "—";
      setError("p-error", error);
    }
  } finally {
    button.disabled = false;
  }
}

function showPrediction(answer) {
  const latency = Number(answer?.latency_ms);
  $("p-latency").textContent = Number.isFinite(latency) ? `${latency.toFixed(2)} ms` : "—";
  const response = answer?.response ?? {};
  $("p-response").textContent = tensorJson(response);
  const status = answer?.status ?? 200;
  if (status >= 400 || response.error) {
    setError("p-error", `The model answered ${status}: ${response.error ?? "error"}`);
  }
  const outputs = Array.isArray(response.outputs) ? response.outputs : [];
  syncRows($("p-outputs"), outputs, (o) => o.name, (o) => [
    ["name", o.name],
    ["datatype", dash(o.datatype)],
    ["shape", JSON.stringify(o.shape ?? [])],
    ["data", el("code", {}, preview(o.data))],
  ]);
  $("p-outputs-wrap").hidden = outputs.length === 0;
  if (!outputs.length) $("p-response-wrap").open = true;
}

function preview(data, limit = 12) {
  if (!Array.isArray(data)) return JSON.stringify(data);
  const flat = data.flat(Infinity);
  const shown = flat.slice(0, limit).map((v) => (typeof v === "number" && !Number.isInteger(v) ? Number(v.toPrecision(4)) : v));
  return `[${shown.join(", ")}${flat.length > limit ? `, … ${flat.length - limit} more` : ""}]`;
}

// ---------------------------------------------------------------- devices and jobs

function renderDevices(list, problems) {
  syncRows($("devices-body"), list, (d) => d.uri, (d) => [
    ["uri", el("code", {}, d.uri)],
    ["kind", dash(d.kind)],
    ["description", dash(d.description)],
    ["agent", dash(d.agent)],
    ["deployments", (d.deployments ?? []).length
      ? `${d.deployments.join(", ")}${d.max_models ? ` (${d.deployments.length}/${d.max_models})` : ""}`
      : el("span", { class: "subtle" }, "idle")],
  ]);
  $("devices-empty").hidden = list.length > 0;
  $("device-uris").replaceChildren(...list.map((d) => el("option", { value: d.uri }, d.description ?? d.kind)));
  // devices that could not be opened or listed (an agent down, a board unplugged), where the API says
  const entries = Array.isArray(problems) ? problems.map((p) => ["", p]) : Object.entries(problems ?? {});
  const text = entries.map(([where, what]) => (where ? `${where}: ${what}` : String(what)));
  const box = $("devices-problems");
  if (JSON.stringify(text) !== box.dataset.signature) {
    box.dataset.signature = JSON.stringify(text);
    box.replaceChildren(...text.map((t) => el("li", {}, t)));
  }
}

function renderJobs(list) {
  const newest = [...list].sort((a, b) => String(b.created ?? "").localeCompare(String(a.created ?? "")));
  syncRows($("jobs-body"), newest, (j) => j.id, (j) => {
    const actions = [
      el("button", { type: "button", class: "small secondary", "aria-label": `Log of job ${j.id}`, onclick: () => openJobLog(j) }, "Log"),
    ];
    if (j.state === "queued" || j.state === "running") {
      actions.push(el("button", { type: "button", class: "small danger", "aria-label": `Cancel job ${j.id}`, onclick: () => cancelJob(j) }, "Cancel"));
    }
    return [
      ["id", el("code", { title: j.id }, String(j.id).slice(0, 12))],
      ["deployment", dash(j.deployment)],
      ["state", badge(j.state ?? "unknown")],
      ["created", time(j.created)],
      ["duration", j.state === "queued" ? "—" : duration(j.started, j.finished)],
      ["reason", el("span", { class: "reason" }, dash(j.reason))],
      ["actions", el("div", { class: "row-actions" }, actions)],
    ];
  });
  $("jobs-empty").hidden = list.length > 0;
}

async function cancelJob(job) {
  try {
    await api(`jobs/${enc(job.id)}/cancel`, { method: "POST" });
  } catch (error) {
    if (!(error instanceof Unauthorized)) setError("deployments-error", `Cancel job ${job.id}: ${error.message}`);
  }
  refresh();
}

// ---------------------------------------------------------------- start

function start() {
  state.log = emptyLog();
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("deploy-form").addEventListener("submit", deploy);
  $("deploy-form").addEventListener("input", updateSpecPreview);
  $("deploy-form").addEventListener("change", updateSpecPreview);
  $("d-engine").addEventListener("change", updateEngine);
  $("predict-form").addEventListener("submit", predict);
  $("p-name").addEventListener("change", () => {
    state.editor.dirty = false;
    fillTemplate();
  });
  $("p-template").addEventListener("click", fillTemplate);
  $("p-request").addEventListener("input", () => {
    state.editor.dirty = true;
  });
  $("p-request").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) predict(event);
  });
  updateEngine();
  probe();
}

/** The first request tells whether the cookie is there: data, or a 401 and the login form. */
async function probe() {
  try {
    await api("deployments");
  } catch (error) {
    if (error instanceof Unauthorized) return;
    $("connection").textContent = `Cannot reach the control plane: ${error.message}`;
    $("connection").classList.add("bad");
    state.timer = setTimeout(probe, POLL_MS);
    return;
  }
  showApp();
}

start();

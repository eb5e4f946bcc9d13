// bulkio's web page: a client of the public HTTP API, like curl or the `bulkio` command.
// No build step, no library. Every request goes to this page's own origin (the server's
// Content-Security-Policy allows nothing else) with the token in an Authorization header; the
// token lives in sessionStorage (this tab only) and never in a URL.
"use strict";

const TOKEN_KEY = "bulkio.token";
const EVENT_TYPES = ["queued", "started", "progress", "warning", "retrying",
  "completed", "failed", "cancelled"];
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const ERRORS_PER_PAGE = 50;
const JOBS_PER_PAGE = 20;
/** Polling (when the event stream is not available): first and longest wait, in ms. */
const POLL_FIRST = 500;
const POLL_MAX = 5000;
/** Event stream errors in a row (without an event between) before falling back to polling. */
const STREAM_RETRIES = 3;

const catalog = JSON.parse(document.getElementById("catalog").textContent);
const $ = (id) => document.getElementById(id);
const number = new Intl.NumberFormat();

// ------------------------------------------------------------------ messages

/** Say something to screen readers (a polite live region), once per call. */
function announce(text) {
  const region = $("announce");
  region.textContent = "";
  window.setTimeout(() => { region.textContent = text; }, 50);
}

function showAlert(text) {
  const box = $("alert");
  box.textContent = text;
  box.hidden = !text;
}

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

/** The `detail` of a problem+json answer, or a sentence about the status. */
async function problemOf(res) {
  let detail = "";
  try {
    const body = await res.json();
    detail = body.detail || body.title || "";
  } catch { /* not JSON */ }
  return new ApiError(res.status, detail || `the server answered ${res.status} ${res.statusText}`);
}

// ------------------------------------------------------------------ session

function token() {
  return window.sessionStorage.getItem(TOKEN_KEY);
}

/** An API path of this origin from a URL the server built (it uses BULKIO_PUBLIC_URL, which
 * need not be the host name this page was loaded from). */
function local(url) {
  const parsed = new URL(url, window.location.href);
  return parsed.pathname + parsed.search;
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  headers.set("Authorization", `Bearer ${token()}`);
  const res = await fetch(path, { ...options, headers, cache: "no-store" });
  if (res.status === 401) {
    signOut("The server refused the token (unknown, revoked or missing): sign in again.");
    throw await problemOf(res);
  }
  if (!res.ok) throw await problemOf(res);
  return res;
}

async function apiJson(path, options) {
  return (await api(path, options)).json();
}

async function signIn(event) {
  event.preventDefault();
  const value = $("token").value.trim();
  const error = $("signin-error");
  error.textContent = "";
  if (!value) {
    error.textContent = "Paste an API token first.";
    $("token").focus();
    return;
  }
  // Any route that needs a token tells whether it is known.
  const res = await fetch("/v1/jobs?limit=1", {
    headers: { Authorization: `Bearer ${value}` }, cache: "no-store",
  });
  if (res.status === 401) {
    error.textContent = (await problemOf(res)).message;
    $("token").focus();
    return;
  }
  window.sessionStorage.setItem(TOKEN_KEY, value);
  $("token").value = "";
  enter();
  announce("Signed in.");
}

function enter() {
  $("signin").hidden = true;
  $("app").hidden = false;
  $("session").hidden = false;
  showAlert("");
  loadJobs();
  $("import-form").querySelector("input, select, button").focus();
}

function signOut(reason) {
  window.sessionStorage.removeItem(TOKEN_KEY);
  monitor.stop();
  monitor.job = null;
  $("app").hidden = true;
  $("session").hidden = true;
  $("signin").hidden = false;
  $("job").hidden = true;
  $("errors").hidden = true;
  $("jobs-table").tBodies[0].replaceChildren();
  $("signin-error").textContent = typeof reason === "string" ? reason : "";
  $("token").focus();
  announce(typeof reason === "string" ? reason : "Signed out.");
}

// ------------------------------------------------------------------ forms from the catalog

function options(select, values, labels = {}) {
  for (const value of values) {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = labels[value] || value;
    select.append(option);
  }
}

function fillForms() {
  const resources = Object.keys(catalog.resources);
  options($("import-resource"), resources);
  options($("import-mode"), catalog.modes);
  options($("import-format"), catalog.import_formats);
  const names = catalog.import_formats.map((f) => (f === "parquet" ? "Parquet" : f.toUpperCase()));
  $("file-formats").textContent = names.length > 1
    ? `${names.slice(0, -1).join(", ")} or ${names[names.length - 1]}` : names.join("");
  options($("jobs-resource"), resources);
  options($("export-resource"), resources);
  options($("export-format"), catalog.export_formats);
  exportResourceChanged();
}

// ------------------------------------------------------------------ import: upload

/** A button that is working: still focusable (a disabled one would drop the keyboard focus),
 * announced as unavailable, and ignored until done. */
function setBusy(button, busy) {
  button.setAttribute("aria-disabled", String(busy));
}

function isBusy(button) {
  return button.getAttribute("aria-disabled") === "true";
}

function upload(event) {
  event.preventDefault();
  if (isBusy($("import-submit"))) return;
  const file = $("file").files[0];
  if (!file) {
    showAlert("Choose a file to import first.");
    $("file").focus();
    return;
  }
  showAlert("");
  const form = new FormData();
  form.append("resource", $("import-resource").value);
  form.append("mode", $("import-mode").value);
  if ($("import-format").value) form.append("format", $("import-format").value);
  form.append("file", file, file.name);

  const bar = $("upload-progress");
  const text = $("upload-text");
  $("upload").hidden = false;
  bar.value = 0;
  text.textContent = `0 of ${bytes(file.size)}`;
  setBusy($("import-submit"), true);
  announce(`Uploading ${file.name}.`);

  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/v1/imports");
  xhr.setRequestHeader("Authorization", `Bearer ${token()}`);
  xhr.responseType = "json";
  xhr.upload.addEventListener("progress", (e) => {
    if (!e.lengthComputable) return;
    bar.value = (e.loaded / e.total) * 100;
    text.textContent = `${bytes(e.loaded)} of ${bytes(e.total)}`;
  });
  xhr.addEventListener("load", () => {
    setBusy($("import-submit"), false);
    const body = xhr.response || {};
    if (xhr.status === 401) {
      signOut("The server refused the token: sign in again.");
      return;
    }
    if (xhr.status !== 202) {
      text.textContent = "Upload refused";
      showAlert(`Upload refused: ${body.detail || `${xhr.status} ${xhr.statusText}`}`);
      return;
    }
    bar.value = 100;
    text.textContent = `${bytes(file.size)} uploaded`;
    announce("Upload complete; the import job is queued.");
    monitor.watch(body);
    loadJobs();
  });
  for (const name of ["error", "abort", "timeout"]) {
    xhr.addEventListener(name, () => {
      setBusy($("import-submit"), false);
      text.textContent = "Upload failed";
      showAlert("The upload did not reach the server (network error). Try again.");
    });
  }
  xhr.send(form);
}

function bytes(n) {
  const units = ["bytes", "KB", "MB", "GB", "TB"];
  let i = 0;
  let value = n;
  while (value >= 1000 && i < units.length - 1) { value /= 1000; i += 1; }
  return i === 0 ? `${n} bytes` : `${value.toFixed(1)} ${units[i]}`;
}

function setupDrop() {
  const zone = $("drop");
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files.length) {
      $("file").files = e.dataTransfer.files;
      announce(`${e.dataTransfer.files[0].name} chosen.`);
    }
  });
}

// ------------------------------------------------------------------ a job, live

/** Follows one job: its event stream (EventSource on the signed events_url), or polling
 * `GET /v1/jobs/{id}` when the stream cannot be used. */
const monitor = {
  job: null,
  source: null,
  timer: null,
  announced: null,
  via: null, // how the job was followed: "stream" or "polling"

  stop() {
    if (this.source) this.source.close();
    if (this.timer) window.clearTimeout(this.timer);
    this.source = null;
    this.timer = null;
  },

  watch(job) {
    this.stop();
    this.job = job;
    this.announced = null;
    this.via = null;
    $("job-feed").textContent = "";
    delete $("job").dataset.eventSeq;
    $("job").hidden = false;
    $("errors").hidden = true;
    $("job-download").hidden = true;
    $("job-message").textContent = "";
    render(job);
    if (TERMINAL.has(job.status)) {
      this.finish(job.job_id);
    } else if (job.events_url && "EventSource" in window) {
      this.stream(job);
    } else {
      this.poll(job.job_id, POLL_FIRST);
    }
  },

  stream(job) {
    const source = new EventSource(local(job.events_url));
    this.source = source;
    let failures = 0;
    this.via = "stream";
    $("job-feed").textContent = "Live: following the job's event stream.";
    const onEvent = (message) => {
      failures = 0;
      const event = JSON.parse(message.data);
      this.apply(event);
      if (TERMINAL.has(event.type)) {
        source.close();
        this.finish(job.job_id);
      }
    };
    for (const type of EVENT_TYPES) source.addEventListener(type, onEvent);
    source.addEventListener("error", () => {
      if (source !== this.source) return;
      failures += 1;
      // CLOSED: the server refused the stream (e.g. the signed URL expired) or it ended;
      // CONNECTING: the browser retries by itself, from Last-Event-ID, a few times.
      if (source.readyState === EventSource.CLOSED || failures >= STREAM_RETRIES) {
        source.close();
        this.source = null;
        this.poll(job.job_id, POLL_FIRST);
      }
    });
  },

  poll(jobId, wait) {
    this.via = "polling";
    $("job-feed").textContent = "Checking the job's status every few seconds (no live stream).";
    this.timer = window.setTimeout(async () => {
      try {
        const job = await apiJson(`/v1/jobs/${encodeURIComponent(jobId)}`);
        if (!this.job || this.job.job_id !== jobId) return;
        this.job = job;
        render(job);
        if (TERMINAL.has(job.status)) {
          this.finish(jobId);
          return;
        }
      } catch (err) {
        if (err.status === 401) return;
        $("job-message").textContent = `Could not read the job: ${err.message}`;
      }
      if (this.job && this.job.job_id === jobId) {
        this.poll(jobId, Math.min(wait * 2, POLL_MAX));
      }
    }, wait);
  },

  /** One event of the stream: its counters onto the view. */
  apply(event) {
    const data = event.data || {};
    $("job").dataset.eventSeq = String(event.seq); // the last event shown (tests read it)
    const job = { ...this.job };
    if (event.type === "started" || event.type === "retrying") job.status = "running";
    if (TERMINAL.has(event.type)) job.status = event.type;
    for (const name of ["processed", "successful", "failed", "error_count", "total_records"]) {
      if (data[name] !== undefined) job[name] = data[name];
    }
    if (data.inserted !== undefined) job.inserted_records = data.inserted;
    if (data.updated !== undefined) job.updated_records = data.updated;
    if (data.rows_per_sec !== undefined) job.rows_per_sec = data.rows_per_sec;
    if (data.bytes_read !== undefined) {
      const total = data.total_bytes ?? job.progress.total_bytes;
      job.progress = { bytes_read: data.bytes_read, total_bytes: total, percent: null };
    }
    if (event.type === "warning" && data.message) {
      job.warnings = [...(job.warnings || []), data.message];
    }
    if (event.type === "failed" && data.error) job.error = data.error;
    this.job = job;
    render(job);
  },

  /** The job has ended: its final view (download link, errors), then its error table. */
  async finish(jobId) {
    this.stop();
    const via = {
      stream: "Followed to its end through the job's event stream.",
      polling: "Followed to its end by checking its status every few seconds (no live stream).",
    };
    $("job-feed").textContent = via[this.via] || "";
    try {
      const job = await apiJson(`/v1/jobs/${encodeURIComponent(jobId)}`);
      if (!this.job || this.job.job_id !== jobId) return;
      this.job = job;
      render(job);
      if (job.kind === "import" && job.error_count > 0) await errors.open(job);
      if (job.kind === "export" && job.download_url) offerDownload(job);
    } catch (err) {
      if (err.status !== 401) $("job-message").textContent = `Could not read the job: ${err.message}`;
    }
    loadJobs();
  },
};

const STATUS_TEXT = {
  queued: "Queued: waiting for a worker.",
  running: "Running.",
  completed: "Completed.",
  failed: "Failed.",
  cancelled: "Cancelled.",
};

function render(job) {
  $("job-kind").textContent = job.kind === "export" ? `Export of ${job.resource}` : `Import into ${job.resource}`;
  $("job-id").textContent = job.job_id;
  $("job-file").textContent = job.file_name ? `(${job.file_name})` : "";
  let status = STATUS_TEXT[job.status] || job.status;
  if (job.status === "completed" && job.kind === "import") {
    status = `Completed: ${number.format(job.successful)} accepted, ${number.format(job.failed)} rejected.`;
  }
  if (job.status !== monitor.announced) {
    // The status region (role=status) is announced when its text changes: only on a new status,
    // not on every progress event.
    $("job-status").textContent = status;
    $("job-status").dataset.status = job.status;
    monitor.announced = job.status;
  }
  $("c-processed").textContent = number.format(job.processed || 0);
  $("c-successful").textContent = number.format(job.successful || 0);
  $("c-failed").textContent = number.format(job.failed || 0);
  $("c-inserted").textContent = number.format(job.inserted_records || 0);
  $("c-updated").textContent = number.format(job.updated_records || 0);
  $("c-rate").textContent = job.rows_per_sec ? number.format(Math.round(job.rows_per_sec)) : "–";
  const progress = job.progress || {};
  let percent = null;
  if (job.status === "completed") percent = 100;
  else if (progress.total_bytes) percent = Math.min(100, (progress.bytes_read / progress.total_bytes) * 100);
  const bar = $("job-progress");
  if (percent === null) {
    bar.removeAttribute("value");
    $("job-percent").textContent = "";
  } else {
    bar.value = percent;
    $("job-percent").textContent = `${percent.toFixed(0)} %`;
  }
  const message = job.error || (job.warnings && job.warnings.length ? job.warnings.join(" ") : "");
  $("job-message").textContent = message;
  $("job-cancel").hidden = TERMINAL.has(job.status);
}

async function cancelJob() {
  const job = monitor.job;
  if (!job) return;
  try {
    await api(`/v1/jobs/${encodeURIComponent(job.job_id)}/cancel`, { method: "POST" });
    announce("Cancellation requested.");
  } catch (err) {
    if (err.status !== 401) showAlert(`Could not cancel: ${err.message}`);
  }
}

function offerDownload(job) {
  const url = new URL(job.download_url, window.location.href);
  if (url.protocol !== "https:" && url.protocol !== "http:") return;
  for (const link of [$("job-download"), $("export-link")]) {
    // Our own signed /v1/downloads URL by path; a presigned S3 URL as it is (a plain link).
    link.href = url.origin === window.location.origin || url.pathname.startsWith("/v1/downloads/")
      ? url.pathname + url.search : url.href;
    link.textContent = `Download ${job.file_name || "the export"} (${bytes(job.result_bytes || 0)})`;
    link.setAttribute("download", job.file_name || "");
    link.hidden = false;
  }
  $("export-status").textContent = `Export job completed: ${job.file_name || ""} is ready.`;
}

// ------------------------------------------------------------------ the error table

const errors = {
  job: null,
  counts: [],
  pages: [], // the URLs of the pages before the current one (for "Previous")
  current: null,
  next: null,

  async open(job) {
    this.job = job;
    $("errors").hidden = false;
    const summary = await apiJson(`/v1/imports/${job.job_id}/errors/summary`);
    this.counts = summary.counts;
    let text = `${number.format(job.failed)} records rejected, ${number.format(summary.stored_errors)} error rows.`;
    if (summary.errors_truncated) {
      text += ` Only the first ${number.format(summary.stored_errors)} of ${number.format(summary.error_count)} were kept.`;
    }
    $("errors-summary").textContent = text;
    this.fillFilter("errors-field", "Any field", (c) => c.field);
    this.fillFilter("errors-code", "Any code", (c) => c.code);
    await this.first();
  },

  fillFilter(id, any, key) {
    const totals = new Map();
    for (const c of this.counts) {
      const name = key(c);
      if (name === null) continue;
      totals.set(name, (totals.get(name) || 0) + c.count);
    }
    const select = $(id);
    const kept = select.value;
    select.replaceChildren();
    options(select, [""], { "": any });
    for (const [name, count] of [...totals].sort((a, b) => a[0].localeCompare(b[0]))) {
      options(select, [name], { [name]: `${name} (${number.format(count)})` });
    }
    select.value = totals.has(kept) ? kept : "";
  },

  /** How many stored error rows the current filter matches. */
  matching() {
    const field = $("errors-field").value;
    const code = $("errors-code").value;
    return this.counts
      .filter((c) => (!field || c.field === field) && (!code || c.code === code))
      .reduce((sum, c) => sum + c.count, 0);
  },

  async first() {
    const query = new URLSearchParams({ limit: String(ERRORS_PER_PAGE) });
    if ($("errors-field").value) query.set("field", $("errors-field").value);
    if ($("errors-code").value) query.set("code", $("errors-code").value);
    this.pages = [];
    await this.load(`/v1/imports/${this.job.job_id}/errors/page?${query}`);
  },

  async load(url) {
    const page = await apiJson(url);
    this.current = url;
    this.next = page.next ? local(page.next) : null;
    const body = $("errors-table").tBodies[0];
    body.replaceChildren(...page.errors.map(errorRow));
    const start = this.pages.length * ERRORS_PER_PAGE;
    const total = this.matching();
    const shown = page.errors.length
      ? `Rows ${number.format(start + 1)}–${number.format(start + page.errors.length)} of ${number.format(total)}`
      : "No rejected records match";
    const filtered = $("errors-field").value || $("errors-code").value ? " (filtered)" : "";
    $("errors-page").textContent = `Page ${this.pages.length + 1}`;
    $("errors-caption").textContent = `Rejected records: ${shown}${filtered}`;
    const focused = document.activeElement;
    $("errors-prev").disabled = this.pages.length === 0;
    $("errors-next").disabled = !this.next;
    // A pager button that just became disabled would drop the keyboard focus: keep it nearby.
    if (focused && focused.disabled) {
      const other = focused === $("errors-next") ? $("errors-prev") : $("errors-next");
      (other.disabled ? $("errors-table").closest(".scroll") : other).focus();
    }
    announce(`${shown}${filtered}.`);
  },

  async forward() {
    if (!this.next) return;
    this.pages.push(this.current);
    await this.load(this.next);
  },

  async back() {
    if (!this.pages.length) return;
    await this.load(this.pages.pop());
  },

  async download(format) {
    const name = `errors-${this.job.job_id}.${format}`;
    await save(`/v1/imports/${this.job.job_id}/errors?format=${format}`, name);
  },
};

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) td.className = className;
  return td;
}

function errorRow(e) {
  const tr = document.createElement("tr");
  const row = document.createElement("th");
  row.scope = "row";
  row.className = "num";
  row.textContent = e.row;
  tr.append(row, cell(e.line, "num"), cell(e.field ?? "(record)"), cell(e.code),
    cell(e.message), cell(e.value, "value"));
  return tr;
}

/** GET `path` with the token, then save the body as a file (a Blob: the token never goes
 * into a URL). The name is the server's (Content-Disposition), else `fallback`. */
async function save(path, fallback) {
  const res = await api(path);
  const blob = await res.blob();
  const disposition = res.headers.get("Content-Disposition") || "";
  const match = /filename="?([^";]+)"?/.exec(disposition);
  const name = match ? match[1] : fallback;
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  window.setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
  announce(`${name} downloaded (${bytes(blob.size)}).`);
  return name;
}

// ------------------------------------------------------------------ jobs list

let jobsNext = null;

async function loadJobs(event, more = false) {
  if (event) event.preventDefault();
  let url;
  if (more && jobsNext) {
    url = jobsNext;
  } else {
    const query = new URLSearchParams({ limit: String(JOBS_PER_PAGE) });
    for (const name of ["kind", "status", "resource"]) {
      const value = $(`jobs-${name}`).value;
      if (value) query.set(name, value);
    }
    url = `/v1/jobs?${query}`;
  }
  try {
    const page = await apiJson(url);
    const body = $("jobs-table").tBodies[0];
    const rows = page.jobs.map(jobRow);
    if (more) body.append(...rows); else body.replaceChildren(...rows);
    jobsNext = page.next ? local(page.next) : null;
    $("jobs-more").hidden = !jobsNext;
    $("jobs-caption").textContent = `Jobs, newest first: ${body.rows.length} shown${jobsNext ? ", more available" : ""}`;
    if (event) announce(`${body.rows.length} jobs shown.`);
  } catch (err) {
    if (err.status !== 401) showAlert(`Could not list the jobs: ${err.message}`);
  }
}

function jobRow(job) {
  const tr = document.createElement("tr");
  tr.dataset.jobId = job.job_id;
  const created = new Date(job.created);
  const when = document.createElement("td");
  const time = document.createElement("time");
  time.dateTime = job.created;
  time.textContent = created.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
  when.append(time);
  const status = cell(job.status, `badge ${job.status}`);
  const actions = document.createElement("td");
  const show = document.createElement("button");
  show.type = "button";
  show.className = "quiet";
  show.textContent = "Show";
  show.setAttribute("aria-label", `Show ${job.kind} job ${job.job_id} (${job.resource}, ${job.status})`);
  show.addEventListener("click", () => showJob(job.job_id));
  actions.append(show);
  tr.append(when, cell(job.kind), cell(job.resource), status,
    cell(number.format(job.processed), "num"), cell(number.format(job.failed), "num"), actions);
  return tr;
}

async function showJob(jobId) {
  try {
    const job = await apiJson(`/v1/jobs/${encodeURIComponent(jobId)}`);
    monitor.watch(job);
    $("job").scrollIntoView({ block: "start" });
    $("job-title").setAttribute("tabindex", "-1");
    $("job-title").focus();
  } catch (err) {
    if (err.status !== 401) showAlert(`Could not read job ${jobId}: ${err.message}`);
  }
}

// ------------------------------------------------------------------ export

function exportResourceChanged() {
  const resource = catalog.resources[$("export-resource").value];
  const checks = $("export-fields").querySelector(".checks");
  checks.replaceChildren(...resource.fields.map((name) => {
    const box = document.createElement("div");
    box.className = "check";
    const input = document.createElement("input");
    input.type = "checkbox";
    input.id = `export-field-${name}`;
    input.value = name;
    const label = document.createElement("label");
    label.htmlFor = input.id;
    label.textContent = name;
    box.append(input, label);
    return box;
  }));
  const grid = $("export-filters").querySelector(".grid");
  grid.replaceChildren(...resource.filters.map(({ name, hint }) => {
    const box = document.createElement("div");
    box.className = "field";
    const label = document.createElement("label");
    label.htmlFor = `export-filter-${name}`;
    label.textContent = name;
    const input = document.createElement("input");
    input.type = "text";
    input.id = `export-filter-${name}`;
    input.name = name;
    input.autocomplete = "off";
    box.append(label, input);
    if (hint) {
      const help = document.createElement("p");
      help.className = "hint";
      help.id = `${input.id}-hint`;
      help.textContent = hint;
      input.setAttribute("aria-describedby", help.id);
      box.append(help);
    }
    return box;
  }));
}

function exportRequest() {
  const fields = [...$("export-fields").querySelectorAll("input:checked")].map((i) => i.value);
  const filters = {};
  for (const input of $("export-filters").querySelectorAll("input")) {
    if (input.value.trim()) filters[input.name] = input.value.trim();
  }
  return {
    resource: $("export-resource").value,
    format: $("export-format").value,
    fields,
    filters,
    gzip: $("export-gzip").checked,
  };
}

async function runExport(event) {
  event.preventDefault();
  if (isBusy($("export-submit"))) return;
  const request = exportRequest();
  const status = $("export-status");
  $("export-link").hidden = true;
  setBusy($("export-submit"), true);
  showAlert("");
  try {
    if ($("export-now").checked) {
      const query = new URLSearchParams({ resource: request.resource, format: request.format });
      if (request.fields.length) query.set("fields", request.fields.join(","));
      if (request.gzip) query.set("compression", "gzip");
      for (const [name, value] of Object.entries(request.filters)) query.set(name, value);
      status.textContent = `Exporting ${request.resource}…`;
      const name = await save(`/v1/exports?${query}`, `${request.resource}.${request.format}`);
      status.textContent = `Export downloaded: ${name}.`;
    } else {
      const body = { resource: request.resource, format: request.format };
      if (request.fields.length) body.fields = request.fields;
      if (Object.keys(request.filters).length) body.filters = request.filters;
      if (request.gzip) body.compression = "gzip";
      const job = await apiJson("/v1/exports", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      status.textContent = "Export job started; its file will be offered here when it is ready.";
      monitor.watch(job);
      loadJobs();
    }
  } catch (err) {
    status.textContent = "Export failed.";
    if (err.status !== 401) showAlert(`Export failed: ${err.message}`);
  } finally {
    setBusy($("export-submit"), false);
  }
}

// ------------------------------------------------------------------ wiring

/** Runs an async handler; shows what went wrong instead of losing it in the console. */
function guarded(handler) {
  return async (...args) => {
    try {
      await handler(...args);
    } catch (err) {
      if (err.status !== 401) showAlert(err.message || String(err));
    }
  };
}

function start() {
  fillForms();
  setupDrop();
  $("signin-form").addEventListener("submit", guarded(signIn));
  $("sign-out").addEventListener("click", () => signOut());
  $("import-form").addEventListener("submit", upload);
  $("job-cancel").addEventListener("click", guarded(cancelJob));
  $("errors-filter").addEventListener("submit", guarded(async (e) => {
    e.preventDefault();
    await errors.first();
  }));
  $("errors-filter").addEventListener("reset", () => {
    window.setTimeout(guarded(() => errors.first()), 0); // after the form reset its selects
  });
  $("errors-next").addEventListener("click", guarded(() => errors.forward()));
  $("errors-prev").addEventListener("click", guarded(() => errors.back()));
  for (const button of document.querySelectorAll("[data-report]")) {
    button.addEventListener("click", guarded(() => errors.download(button.dataset.report)));
  }
  $("jobs-filter").addEventListener("submit", (e) => loadJobs(e));
  $("jobs-more").addEventListener("click", () => loadJobs(null, true));
  $("export-resource").addEventListener("change", exportResourceChanged);
  $("export-form").addEventListener("submit", runExport);
  if (token()) enter();
  else $("token").focus();
}

start();

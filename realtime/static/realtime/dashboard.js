// Keeps the dashboard and task pages live over /ws/tasks/.
// Protocol: docs/websocket-protocol.md. Reconnects by itself with capped,
// jittered backoff, and re-syncs from the snapshot every subscribe returns.
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("page-config").textContent);
  const staff = document.body.dataset.staff === "1";
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const stateEl = document.getElementById("connection-state");
  const rows = document.getElementById("task-rows");
  const table = document.getElementById("task-table");
  const SYMBOLS = { queued: "…", running: "▶", retrying: "↻", succeeded: "✓", dead: "✗", cancelled: "⊘" };
  const LABELS = { queued: "queued", running: "running", retrying: "waiting to retry", succeeded: "succeeded", dead: "dead", cancelled: "cancelled" };
  const FINAL = ["succeeded", "dead", "cancelled"];
  let socket = null;
  let failures = 0;
  const pings = new Map();
  let nextPing = 1;

  function esc(text) {
    return String(text == null ? "" : text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  function number(value) {
    return Number.isInteger(value) ? String(value) : String(Math.round(value * 100) / 100);
  }

  function setState(state, text) {
    if (!stateEl) return;
    stateEl.dataset.state = state;
    stateEl.textContent = text;
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + "/ws/tasks/");
    socket.addEventListener("open", () => {
      failures = 0;
      setState("open", "connected");
    });
    socket.addEventListener("message", (event) => handle(JSON.parse(event.data)));
    socket.addEventListener("close", () => {
      failures += 1;
      const delay = Math.min(30000, 500 * 2 ** Math.min(failures, 6)) * (0.5 + Math.random() / 2);
      setState("closed", "disconnected, reconnecting in " + Math.ceil(delay / 1000) + " s");
      setTimeout(connect, delay);
    });
  }

  function send(frame) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(frame));
  }

  function handle(frame) {
    switch (frame.type) {
      case "hello":
        if (config.page === "detail") send({ action: "subscribe", tasks: [config.task] });
        else send({ action: "subscribe", scope: config.scope });
        break;
      case "snapshot":
      case "update":
        frame.tasks.forEach(upsert);
        break;
      case "stats":
        showStats(frame);
        break;
      case "pong":
        showPong(frame);
        break;
      case "error":
        showError(frame);
        break;
    }
  }

  function matchesFilters(task) {
    const status = table.dataset.filterStatus, channel = table.dataset.filterChannel;
    const q = (table.dataset.filterQ || "").toLowerCase();
    if (status && task.status !== status) return false;
    if (channel && task.channel !== channel) return false;
    if (q) {
      const text = [task.type, task.id, task.error && task.error.message, task.progress.message].join(" ").toLowerCase();
      if (!text.includes(q)) return false;
    }
    return true;
  }

  function upsert(task) {
    let row = rows.querySelector('tr[data-task-id="' + task.id + '"]');
    if (!row) {
      if (config.page !== "dashboard" || !matchesFilters(task)) return;
      row = document.createElement("tr");
      row.dataset.taskId = task.id;
      row.dataset.created = task.created_at;
      rows.prepend(row);
      const empty = document.getElementById("no-tasks");
      if (empty) empty.hidden = true;
    }
    fillRow(row, task);
  }

  function fillRow(row, task) {
    row.dataset.status = task.status;
    row.dataset.channel = task.channel;
    const detail = config.urls.detail.replace("00000000-0000-0000-0000-000000000000", task.id);
    const cells = [
      '<td><a href="' + esc(detail) + '" class="task-type">' + esc(task.type) + '</a><br><small class="muted">' + esc(task.channel) + " · <code>" + esc(task.id.slice(0, 8)) + "…</code></small></td>",
      '<td class="status" data-field="status"><span class="badge status-' + esc(task.status) + '"><span aria-hidden="true">' + SYMBOLS[task.status] + "</span> " + esc(LABELS[task.status]) + "</span></td>",
      '<td data-field="attempt">' + attemptHtml(task) + "</td>",
      '<td data-field="progress">' + progressHtml(task.progress) + "</td>",
      '<td data-field="error">' + errorHtml(task) + "</td>",
    ];
    if (staff) cells.push('<td class="actions">' + actionsHtml(task) + "</td>");
    row.innerHTML = cells.join("");
    tick();
  }

  function attemptHtml(task) {
    if (!task.attempt) return "not started";
    let html = "attempt " + task.attempt + (task.max_attempts ? " of " + task.max_attempts : "");
    if (task.status === "retrying" && task.next_attempt_at) {
      html += '<br><small>next try <time data-countdown datetime="' + esc(task.next_attempt_at) + '"></time></small>';
    }
    return html;
  }

  function progressHtml(progress) {
    if (progress.current == null && progress.total == null) return '<span class="muted">—</span>';
    const current = progress.current || 0;
    const total = progress.total || 1;
    let text = number(current) + (progress.total ? " of " + number(progress.total) : "");
    if (progress.message) text += " — " + progress.message;
    return '<label class="progress-label"><progress max="' + total + '" value="' + current + '">' + esc(text) + "</progress> <span>" + esc(text) + "</span></label>";
  }

  function errorHtml(task) {
    let html = "";
    if (task.error) {
      const recovered = task.status === "succeeded";
      html += '<span class="' + (recovered ? "muted" : "error-text") + '">' + (recovered ? "recovered from " : "") +
        esc(task.error.class) + ": " + esc((task.error.message || "").slice(0, 120)) + "</span>";
    }
    if (task.reason && task.status !== "retrying") html += "<br><small>" + esc(task.reason) + "</small>";
    return html;
  }

  function actionForm(task, action, label, disabled, cls) {
    const url = config.urls.action.replace("00000000-0000-0000-0000-000000000000", task.id).replace("ACTION", action);
    const next = action === "delete" ? "" : '<input type="hidden" name="next" value="' + esc(location.pathname + location.search) + '">';
    const confirm = action === "delete" ? ' data-confirm="Delete this task and its history?"' : "";
    return '<form method="post" action="' + esc(url) + '" class="inline"' + confirm + '><input type="hidden" name="csrfmiddlewaretoken" value="' + esc(csrf) + '">' + next +
      '<button type="submit" data-action="' + action + '"' + (cls ? ' class="' + cls + '"' : "") + (disabled ? " disabled" : "") + ">" + label + "</button></form>";
  }

  function actionsHtml(task) {
    return actionForm(task, "retry", "Retry now", task.status === "running" || task.status === "succeeded", "") + " " +
      actionForm(task, "cancel", "Cancel", FINAL.includes(task.status), "secondary") + " " +
      actionForm(task, "delete", "Delete", false, "danger");
  }

  function showStats(stats) {
    Object.entries(stats.counters).forEach(([status, n]) => {
      const dd = document.querySelector('[data-counter="' + status + '"] dd');
      if (dd) dd.textContent = n;
    });
    const backlog = document.getElementById("backlog");
    if (backlog) {
      const entries = Object.entries(stats.backlog);
      backlog.innerHTML = entries.length
        ? entries.map(([channel, c]) => '<tr><th scope="row">' + esc(channel) + "</th><td>" + (c.queued || 0) + "</td><td>" + (c.running || 0) + "</td><td>" + (c.retrying || 0) + "</td></tr>").join("")
        : '<tr><td colspan="4" class="muted">Nothing waiting.</td></tr>';
    }
    const workers = document.getElementById("workers");
    if (workers) {
      workers.innerHTML = stats.workers.length
        ? stats.workers.map((w) => '<tr><th scope="row">' + esc(w.id) + "</th><td>" + esc(w.channels.join(", ")) + "</td><td>" + w.running.length + " of " + w.concurrency + "</td></tr>").join("")
        : '<tr><td colspan="3" class="muted">No live worker.</td></tr>';
    }
    drawChart(stats.throughput);
  }

  function drawChart(throughput) {
    const svg = document.getElementById("throughput");
    if (!svg) return;
    const values = throughput.per_second;
    const peak = Math.max(1, ...values);
    const width = 300 / values.length;
    svg.innerHTML = values.map((v, i) => {
      const h = (v / peak) * 72;
      return '<rect x="' + (i * width + 0.5) + '" y="' + (78 - h) + '" width="' + (width - 1) + '" height="' + h + '"><title>' + v + " per second</title></rect>";
    }).join("") + '<line x1="0" y1="78.5" x2="300" y2="78.5"></line>';
    const last = values[values.length - 1];
    document.getElementById("throughput-now").textContent = number(last) + " per second now, peak " + number(Math.max(...values));
  }

  function showPong(frame) {
    const started = pings.get(frame.id);
    pings.delete(frame.id);
    const out = document.getElementById("ping-result");
    if (out) out.textContent = "answered by worker " + frame.worker + (started ? " in " + Math.round(performance.now() - started) + " ms" : "");
  }

  function showError(frame) {
    const out = document.getElementById("ping-result") || stateEl;
    if (out) out.textContent = "error: " + frame.detail;
  }

  function tick() {
    const now = Date.now();
    document.querySelectorAll("time[data-countdown]").forEach((el) => {
      const seconds = Math.round((Date.parse(el.getAttribute("datetime")) - now) / 1000);
      el.textContent = seconds > 0 ? "in " + seconds + " s" : "due now";
    });
  }

  document.addEventListener("submit", (event) => {
    const message = event.target.dataset && event.target.dataset.confirm;
    if (message && !window.confirm(message)) event.preventDefault();
  });
  const pingButton = document.getElementById("ping-button");
  if (pingButton) {
    pingButton.addEventListener("click", () => {
      const id = String(nextPing++);
      pings.set(id, performance.now());
      document.getElementById("ping-result").textContent = "waiting for a worker…";
      send({ action: "ping", id: id });
    });
  }
  setInterval(tick, 1000);
  tick();
  connect();
})();

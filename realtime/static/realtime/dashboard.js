// Keeps the dashboard and task pages live over /ws/tasks/.
// Protocol: docs/websocket-protocol.md. Reconnects by itself with capped,
// jittered backoff, marks the page stale meanwhile, and re-reads the list from
// the server when it is back. Rows are patched cell by cell, never rebuilt, so
// a button keeps its focus and a click on it lands; rows are never added by
// events: tasks that would join the page are counted as "N new tasks".
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("page-config").textContent);
  const dashboard = config.page === "dashboard";
  const stateEl = document.getElementById("connection-state");
  const SYMBOLS = { queued: "…", running: "▶", retrying: "↻", succeeded: "✓", dead: "✗", cancelled: "⊘" };
  const LABELS = { queued: "queued", running: "running", retrying: "waiting to retry", succeeded: "succeeded", dead: "dead", cancelled: "cancelled" };
  const FINAL = ["succeeded", "dead", "cancelled"];
  let rows = document.getElementById("task-rows");
  let socket = null;
  let opened = false;
  let everOpened = false;
  let failures = 0;
  let retryAt = 0;
  let staleSince = null;
  let chartRange = "5m";
  let chartTimer = null;
  let total = config.total || 0;
  let loadedAt = Date.parse(config.loaded_at || "") || Date.now();
  const fresh = new Set(); // matching tasks created after the page was read
  const changed = new Set(); // matching tasks that moved into or within the page's order
  const pings = new Map();
  let nextPing = 1;

  function esc(text) {
    return String(text == null ? "" : text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  function number(value) {
    return Number.isInteger(value) ? String(value) : String(Math.round(value * 100) / 100);
  }

  function age(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) return seconds + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min";
    if (seconds < 86400) return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
    return Math.floor(seconds / 86400) + " d";
  }

  function setState(state, text) {
    if (!stateEl) return;
    stateEl.dataset.state = state;
    stateEl.textContent = text;
  }

  // Connection ---------------------------------------------------------------

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    opened = false;
    socket = new WebSocket(scheme + location.host + "/ws/tasks/");
    socket.addEventListener("open", () => {
      opened = true;
      failures = 0;
      setState("open", "connected");
      markStale(false);
      if (everOpened && dashboard) refreshList();
      everOpened = true;
    });
    socket.addEventListener("message", (event) => handle(JSON.parse(event.data)));
    socket.addEventListener("close", () => {
      failures += 1;
      if (!opened) checkSession(); // the handshake was refused: logged out?
      const delay = Math.min(30000, 500 * 2 ** Math.min(failures, 6)) * (0.5 + Math.random() / 2);
      retryAt = Date.now() + delay;
      markStale(true);
      setTimeout(connect, delay);
      tick();
    });
  }

  function checkSession() {
    // A websocket refused with 403 looks like any failed handshake to a
    // script; ask a page that needs a session whether ours is still valid.
    const probe = (config.urls && config.urls.chart) || location.href;
    fetch(probe, { redirect: "manual", credentials: "same-origin", cache: "no-store" }).then((response) => {
      if (response.type === "opaqueredirect" || response.status === 401 || response.status === 403) {
        const login = (config.urls && config.urls.login) || "/accounts/login/";
        location.assign(login + "?next=" + encodeURIComponent(location.pathname + location.search));
      }
    }, () => {});
  }

  function markStale(stale) {
    const banner = document.getElementById("stale-banner");
    if (stale && staleSince === null) staleSince = new Date();
    if (!stale) staleSince = null;
    document.body.classList.toggle("stale", stale);
    document.body.dataset.stale = stale ? "1" : "0";
    if (banner) {
      banner.hidden = !stale;
      const since = document.getElementById("stale-since");
      if (since && staleSince) {
        since.setAttribute("datetime", staleSince.toISOString());
        since.textContent = staleSince.toLocaleTimeString();
      }
    }
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
        frame.tasks.forEach(apply);
        showNew();
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

  // The list -----------------------------------------------------------------

  function rowOf(id) {
    return rows.querySelector('tr[data-task-id="' + id + '"]');
  }

  function matches(task) {
    const f = config.filters || {};
    if (f.status && task.status !== f.status) return false;
    if (f.channel && task.channel !== f.channel) return false;
    if (f.error && !(task.error && task.error.class === f.error)) return false;
    const q = (f.q || "").trim().toLowerCase();
    if (q) {
      const error = task.error || {};
      const text = [task.type, task.channel, task.id, task.id.replace(/-/g, ""), error.class, error.message, task.progress && task.progress.message].join(" ").toLowerCase();
      if (!text.includes(q.replace(/…$/, ""))) return false;
    }
    return true;
  }

  function sortKey(task) {
    switch (config.sort) {
      case "finished": return task.finished_at || "";
      case "next": return task.next_attempt_at || "";
      case "duration": return task.finished_at || "";
      default: return task.created_at || "";
    }
  }

  function apply(task) {
    const row = rowOf(task.id);
    if (task.deleted) {
      fresh.delete(task.id);
      changed.delete(task.id);
      if (row && dashboard) dropRow(row, true);
      return;
    }
    if (row) {
      if (stale(row, task)) return;
      if (dashboard && !matches(task)) {
        dropRow(row, false);
        return;
      }
      if (dashboard && config.sort !== "created" && row.dataset.key !== undefined && row.dataset.key !== sortKey(task)) {
        changed.add(task.id); // its place in the order moved: offered, not done
      }
      patchRow(row, task);
      row.dataset.key = sortKey(task);
      return;
    }
    if (!dashboard || !matches(task)) {
      fresh.delete(task.id);
      changed.delete(task.id);
      return;
    }
    if (Date.parse(task.created_at) > loadedAt) fresh.add(task.id);
    else if (config.sort !== "created") changed.add(task.id);
  }

  function stale(row, task) {
    // Events of one task come from several processes and may cross: a
    // worker's progress of a task that a person has just cancelled can arrive
    // after the cancellation. A finished task only leaves its final state for
    // a newer change (a retry).
    const shown = Date.parse(row.dataset.updated || "");
    const incoming = Date.parse(task.updated_at || "");
    if (FINAL.includes(row.dataset.status) && !FINAL.includes(task.status) && incoming <= shown) return true;
    if (!(incoming <= shown)) row.dataset.updated = task.updated_at || "";
    return false;
  }

  function dropRow(row, deleted) {
    row.remove();
    if (deleted) total = Math.max(0, total - 1);
    else total = Math.max(0, total - 1); // left the filter
    showSummary();
  }

  function showSummary() {
    const range = document.getElementById("list-range");
    const totalEl = document.getElementById("list-total");
    const shown = rows.children.length;
    const first = (config.number - 1) * config.size + 1;
    if (range) range.textContent = shown ? first + "–" + (first + shown - 1) : "0";
    if (totalEl) totalEl.textContent = total;
    const empty = document.getElementById("no-tasks");
    if (empty) empty.hidden = shown > 0;
  }

  function showNew() {
    const button = document.getElementById("new-tasks");
    if (!button) return;
    const n = fresh.size, m = changed.size;
    button.hidden = n + m === 0;
    const parts = [];
    if (n) parts.push(n + " new task" + (n === 1 ? "" : "s"));
    if (m) parts.push(m + " changed");
    button.textContent = parts.join(", ") + " — show";
  }

  function refreshList() {
    return fetch(location.href, { credentials: "same-origin", cache: "no-store" }).then((response) => {
      if (response.redirected && !response.url.startsWith(location.origin + location.pathname)) {
        location.assign(response.url);
        return;
      }
      return response.text().then((html) => {
        const doc = new DOMParser().parseFromString(html, "text/html");
        const newRows = doc.getElementById("task-rows");
        const newConfig = doc.getElementById("page-config");
        if (!newRows || !newConfig) return;
        const cfg = JSON.parse(newConfig.textContent);
        rows.replaceWith(document.importNode(newRows, true));
        rows = document.getElementById("task-rows");
        ["list-summary", "no-tasks"].forEach((id) => {
          const mine = document.getElementById(id), theirs = doc.getElementById(id);
          if (mine && theirs) mine.replaceWith(document.importNode(theirs, true));
        });
        const pager = document.querySelector("nav.pager"), newPager = doc.querySelector("nav.pager");
        if (pager && newPager) pager.replaceWith(document.importNode(newPager, true));
        initKeys();
        total = cfg.total;
        config.number = cfg.number;
        loadedAt = Date.parse(cfg.loaded_at) || Date.now();
        fresh.clear();
        changed.clear();
        showNew();
        tick();
      });
    }, () => {});
  }

  function initKeys() {
    rows.querySelectorAll("tr[data-task-id]").forEach((row) => {
      const d = row.dataset;
      d.key = config.sort === "next" ? d.next || "" : config.sort === "created" ? d.created || "" : d.finished || "";
    });
  }

  function patchRow(row, task) {
    row.dataset.status = task.status;
    row.dataset.channel = task.channel;
    const cell = (name) => row.querySelector('[data-field="' + name + '"]');
    setHtml(cell("status"), '<span class="badge status-' + esc(task.status) + '"><span aria-hidden="true">' + SYMBOLS[task.status] + "</span> " + esc(LABELS[task.status]) + "</span>");
    setHtml(cell("attempt"), attemptHtml(task));
    patchProgress(cell("progress"), task.progress);
    setHtml(cell("error"), errorHtml(task));
    if ((row.dataset.finished || "") !== (task.finished_at || "")) {
      // Rewritten only when the task finished (or started again): the event
      // has no start time, so the server's "took" stays until then.
      row.dataset.finished = task.finished_at || "";
      setHtml(cell("time"), timeHtml(task));
    }
    const actions = row.querySelector("td.actions");
    if (actions) {
      const retry = actions.querySelector('[data-action="retry"]');
      const cancel = actions.querySelector('[data-action="cancel"]');
      const focused = actions.contains(document.activeElement) ? document.activeElement : null;
      if (retry) retry.disabled = task.status === "running" || task.status === "succeeded";
      if (cancel) cancel.disabled = FINAL.includes(task.status);
      if (focused && focused.disabled) {
        // A disabled button drops focus to <body>: keep it in the row.
        const next = actions.querySelector("button:not(:disabled)") || row.querySelector("a");
        if (next) next.focus();
      }
    }
  }

  function setHtml(el, html) {
    // Only cells without controls are rewritten, and only when they changed.
    if (el && el.dataset.html !== html) {
      el.innerHTML = html;
      el.dataset.html = html;
    }
  }

  function patchProgress(el, progress) {
    if (!el) return;
    if (progress.current == null && progress.total == null) {
      setHtml(el, '<span class="muted">—</span>');
      return;
    }
    const current = progress.current || 0;
    let text = number(current) + (progress.total ? " of " + number(progress.total) : "");
    if (progress.message) text += " — " + progress.message;
    let bar = el.querySelector("progress");
    if (!bar) {
      el.innerHTML = '<label class="progress-label"><progress></progress> <span></span></label>';
      delete el.dataset.html;
      bar = el.querySelector("progress");
    }
    bar.setAttribute("max", String(progress.total || 1));
    bar.setAttribute("value", String(current));
    bar.textContent = text;
    const label = bar.parentElement.querySelector("span");
    if (label.textContent !== text) label.textContent = text;
  }

  function attemptHtml(task) {
    if (!task.attempt) return "not started";
    let html = "attempt " + task.attempt + (task.max_attempts ? " of " + task.max_attempts : "");
    if (task.status === "retrying" && task.next_attempt_at) {
      html += '<br><small>next try <time data-countdown datetime="' + esc(task.next_attempt_at) + '">' + countdownText(task.next_attempt_at) + "</time></small>";
    }
    return html;
  }

  function errorHtml(task) {
    let html = "";
    if (task.error) {
      const recovered = task.status === "succeeded";
      const message = task.error.message || "";
      html += '<span class="' + (recovered ? "muted" : "error-text") + '">' + (recovered ? "recovered from " : "") +
        esc(task.error.class) + ": " + esc(message.length > 120 ? message.slice(0, 119) + "…" : message) + "</span>";
    }
    if (task.reason && task.status !== "retrying") html += "<br><small>" + esc(task.reason) + "</small>";
    return html;
  }

  function timeHtml(task) {
    let html = '<small>created <time data-ago datetime="' + esc(task.created_at) + '">' + agoText(task.created_at) + "</time>";
    if (task.finished_at) html += '<br>finished <time data-ago datetime="' + esc(task.finished_at) + '">' + agoText(task.finished_at) + "</time>";
    return html + "</small>";
  }

  function countdownText(iso) {
    const seconds = Math.round((Date.parse(iso) - Date.now()) / 1000);
    return seconds > 0 ? "in " + seconds + " s" : "due now";
  }

  function agoText(iso) {
    return age((Date.now() - Date.parse(iso)) / 1000) + " ago";
  }

  // Actions on rows: sent without leaving the page, so focus stays put --------

  document.addEventListener("submit", (event) => {
    const form = event.target;
    const button = event.submitter || null;
    const message = (button && button.dataset.confirm) || (form.dataset && form.dataset.confirm);
    if (message && !window.confirm(message)) {
      event.preventDefault();
      return;
    }
    // Row actions post the shared form to the button's formaction.
    if (!dashboard || !button || !button.closest("#task-rows")) return;
    event.preventDefault();
    const out = document.getElementById("action-result");
    fetch(button.formAction, {
      method: "POST",
      body: new FormData(form),
      credentials: "same-origin",
      headers: { "X-Requested-With": "fetch", Accept: "application/json" },
    }).then((response) => response.json().then((body) => {
      if (out) out.textContent = body.message || (response.ok ? "done" : "refused");
      button.dataset.result = response.ok ? "ok" : "error";
    }, () => {
      if (out) out.textContent = response.ok ? "done" : "refused (" + response.status + ")";
    }), () => {
      if (out) out.textContent = "not sent: no connection";
    });
  });

  // Counters, backlog, workers, chart ------------------------------------------

  function showStats(stats) {
    Object.entries(stats.counters).forEach(([status, n]) => {
      const dd = document.querySelector('[data-counter="' + status + '"] dd');
      if (dd) dd.textContent = n;
      const view = document.querySelector('[data-view-count="' + status + '"]');
      if (view) view.textContent = n;
    });
    const backlog = document.getElementById("backlog");
    if (backlog) {
      const entries = Object.entries(stats.backlog);
      backlog.innerHTML = entries.length
        ? entries.map(([channel, c]) => {
          const warn = c.served === false ? '<br><strong class="warning" data-unserved>⚠ no live worker serves this channel</strong>' : "";
          const oldest = c.oldest_queued_seconds == null ? "—" : age(c.oldest_queued_seconds);
          return "<tr" + (c.served === false ? ' class="unserved"' : "") + ' data-channel="' + esc(channel) + '"><th scope="row">' + esc(channel) + warn + "</th><td>" + (c.queued || 0) + "</td><td>" + (c.running || 0) + "</td><td>" + (c.retrying || 0) + '</td><td data-age="' + (c.oldest_queued_seconds == null ? "" : c.oldest_queued_seconds) + '">' + oldest + "</td></tr>";
        }).join("")
        : '<tr><td colspan="5" class="muted">Nothing waiting.</td></tr>';
    }
    const workers = document.getElementById("workers");
    if (workers) {
      workers.innerHTML = stats.workers.length
        ? stats.workers.map((w) => '<tr><th scope="row">' + esc(w.id) + "</th><td>" + esc(w.channels.join(", ")) + "</td><td>" + (w.busy == null ? w.running.length : w.busy) + " of " + w.concurrency + "</td></tr>").join("")
        : '<tr><td colspan="3" class="muted">No live worker.</td></tr>';
    }
    if (chartRange === "5m") drawChart(stats.throughput);
  }

  function drawChart(data) {
    const svg = document.getElementById("throughput");
    if (!svg || !data) return;
    const ok = data.succeeded || data.per_second.map((v) => v * data.bucket_seconds);
    const dead = data.dead || ok.map(() => 0);
    const totals = ok.map((v, i) => v + dead[i]);
    const peak = Math.max(1, ...totals);
    const left = 34, right = 316, top = 6, bottom = 96;
    const width = (right - left) / totals.length;
    const y = (v) => bottom - (v / peak) * (bottom - top);
    const parts = [];
    [0, peak / 2, peak].forEach((v) => {
      parts.push('<line class="grid" x1="' + left + '" x2="' + right + '" y1="' + y(v) + '" y2="' + y(v) + '"></line>');
      parts.push('<text class="axis" x="' + (left - 4) + '" y="' + (y(v) + 3) + '" text-anchor="end">' + number(v) + "</text>");
    });
    totals.forEach((_, i) => {
      const x = left + i * width + 0.5, w = Math.max(0.5, width - 1);
      const hs = (ok[i] / peak) * (bottom - top), hd = (dead[i] / peak) * (bottom - top);
      const title = "<title>" + ok[i] + " succeeded, " + dead[i] + " dead</title>";
      if (ok[i]) parts.push('<rect class="succeeded" x="' + x + '" y="' + (bottom - hs) + '" width="' + w + '" height="' + hs + '">' + title + "</rect>");
      if (dead[i]) parts.push('<rect class="dead" x="' + x + '" y="' + (bottom - hs - hd) + '" width="' + w + '" height="' + hd + '">' + title + "</rect>");
    });
    parts.push('<line class="axis" x1="' + left + '" x2="' + right + '" y1="' + bottom + '" y2="' + bottom + '"></line>');
    parts.push('<line class="axis" x1="' + left + '" x2="' + left + '" y1="' + top + '" y2="' + bottom + '"></line>');
    const span = data.window_seconds || totals.length * data.bucket_seconds;
    [[left, "−" + age(span)], [(left + right) / 2, "−" + age(span / 2)], [right, "now"]].forEach(([x, label], i) => {
      parts.push('<text class="axis" x="' + x + '" y="112" text-anchor="' + ["start", "middle", "end"][i] + '">' + esc(label) + "</text>");
    });
    svg.innerHTML = parts.join("");
    svg.dataset.range = data.range || "5m";
    const out = document.getElementById("throughput-now");
    const sum = (list) => list.reduce((a, b) => a + b, 0);
    if (out) out.textContent = sum(ok) + " succeeded, " + sum(dead) + " dead in the last " + age(span) + "; bars of " + age(data.bucket_seconds) + ", peak " + number(peak);
  }

  function loadChart() {
    if (!config.urls || !config.urls.chart) return;
    fetch(config.urls.chart + "?range=" + encodeURIComponent(chartRange), { credentials: "same-origin", cache: "no-store" })
      .then((r) => (r.ok ? r.json() : null))
      .then((data) => { if (data && data.range === chartRange) drawChart(data); }, () => {});
  }

  document.querySelectorAll("[data-range]").forEach((button) => {
    button.addEventListener("click", () => {
      chartRange = button.dataset.range;
      document.querySelectorAll("[data-range]").forEach((b) => b.setAttribute("aria-pressed", String(b === button)));
      clearInterval(chartTimer);
      loadChart();
      if (chartRange !== "5m") chartTimer = setInterval(loadChart, 30000);
    });
  });

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
    document.querySelectorAll("time[data-countdown]").forEach((el) => {
      el.textContent = countdownText(el.getAttribute("datetime"));
    });
    document.querySelectorAll("time[data-ago]").forEach((el) => {
      el.textContent = agoText(el.getAttribute("datetime"));
    });
    if (staleSince) {
      const seconds = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
      const text = seconds > 0 ? "disconnected, reconnecting in " + seconds + " s" : "reconnecting…";
      setState("closed", text);
      const retry = document.getElementById("stale-retry");
      if (retry) retry.textContent = seconds > 0 ? "Reconnecting in " + seconds + " s." : "Reconnecting…";
    }
  }

  const newButton = document.getElementById("new-tasks");
  if (newButton) newButton.addEventListener("click", () => refreshList());
  const pingButton = document.getElementById("ping-button");
  if (pingButton) {
    pingButton.addEventListener("click", () => {
      const id = String(nextPing++);
      pings.set(id, performance.now());
      document.getElementById("ping-result").textContent = "waiting for a worker…";
      send({ action: "ping", id: id });
    });
  }
  if (dashboard) {
    initKeys();
  }
  setInterval(tick, 1000);
  tick();
  connect();
})();

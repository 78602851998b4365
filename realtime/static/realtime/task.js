// The task page, kept live: subscribes to its task over /ws/tasks/ and, when the
// task changes, fetches the server-rendered fragment of the page (the same
// template a reload renders) and patches it in place. Progress alone is patched
// from the event itself. Buttons are never replaced, only enabled or disabled, so
// a click always lands; open tracebacks stay open.
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("page-config").textContent);
  const stateEl = document.getElementById("connection-state");
  let socket = null;
  let failures = 0;
  let lastSignature = null;
  let fetching = false;
  let again = false;
  let gone = false;

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

  function handle(frame) {
    if (frame.type === "hello") {
      socket.send(JSON.stringify({ action: "subscribe", tasks: [config.task], id: "task" }));
    } else if (frame.type === "snapshot") {
      // Connected or reconnected: whatever was missed meanwhile, fetch it.
      lastSignature = null;
      (frame.tasks || []).forEach(changed);
      if (!(frame.tasks || []).length) refresh();
    } else if (frame.type === "update") {
      (frame.tasks || []).forEach(changed);
    }
  }

  // Everything but progress: a change here means new attempts, times, result,
  // reason or trail entries, which only the server renders.
  function signature(task) {
    return JSON.stringify([task.status, task.attempt, task.max_attempts, task.reason,
      task.error, task.finished_at, task.next_attempt_at]);
  }

  function changed(task) {
    if (task.id !== config.task) return;
    if (task.deleted) {
      markGone();
      return;
    }
    const sig = signature(task);
    if (sig !== lastSignature) {
      lastSignature = sig;
      refresh();
    } else {
      showProgress(task.progress);
    }
  }

  function showProgress(progress) {
    const cell = document.querySelector('[data-live="progress"]');
    if (!cell || !progress || (progress.current == null && progress.total == null)) return;
    const current = progress.current || 0;
    let text = number(current) + (progress.total ? " of " + number(progress.total) : "");
    if (progress.message) text += " — " + progress.message;
    let bar = cell.querySelector("progress");
    if (!bar) {
      cell.innerHTML = '<label class="progress-label"><progress></progress> <span></span></label>';
      bar = cell.querySelector("progress");
    }
    bar.max = progress.total || 1;
    bar.value = current;
    bar.textContent = text;
    cell.querySelector("span").textContent = text;
  }

  function number(value) {
    return Number.isInteger(value) ? String(value) : String(Math.round(value * 100) / 100);
  }

  // One fetch at a time; changes during it cause one more fetch after it.
  async function refresh() {
    if (fetching) {
      again = true;
      return;
    }
    fetching = true;
    try {
      do {
        again = false;
        const response = await fetch(config.urls.live, { credentials: "same-origin", headers: { Accept: "text/html" } });
        if (response.status === 404) {
          markGone();
          return;
        }
        if (response.ok) patch(await response.text());
      } while (again);
    } catch (err) {
      setState("closed", "could not refresh: " + err.message);
    } finally {
      fetching = false;
    }
  }

  function patch(html) {
    const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("task-live");
    const live = document.getElementById("task-live");
    if (!fresh || !live) return;
    live.dataset.status = fresh.dataset.status;
    live.dataset.updated = fresh.dataset.updated;
    fresh.querySelectorAll("[data-live]").forEach((node) => {
      const here = live.querySelector('[data-live="' + node.dataset.live + '"]');
      if (!here) return;
      if (here.innerHTML !== node.innerHTML) here.innerHTML = node.innerHTML;
      here.hidden = node.hidden;
    });
    fresh.querySelectorAll("[data-live-list]").forEach((list) => {
      const here = live.querySelector('[data-live-list="' + list.dataset.liveList + '"]');
      if (here) patchList(here, list);
    });
    const buttons = live.querySelector("[data-live-actions]");
    if (buttons) {
      fresh.querySelectorAll("[data-live-actions] button[data-action]").forEach((button) => {
        const mine = buttons.querySelector('button[data-action="' + button.dataset.action + '"]');
        if (mine) mine.disabled = button.disabled;
      });
    }
    tick();
  }

  // Items are added, or replaced when their version changed; a traceback the
  // reader opened stays open.
  function patchList(here, fresh) {
    Array.from(fresh.children).forEach((item) => {
      const mine = item.id ? document.getElementById(item.id) : null;
      if (!mine) {
        here.appendChild(document.importNode(item, true));
      } else if (mine.dataset.version !== item.dataset.version) {
        const open = new Set(Array.from(mine.querySelectorAll("details")).map((d, i) => (d.open ? i : -1)));
        const copy = document.importNode(item, true);
        copy.querySelectorAll("details").forEach((d, i) => { if (open.has(i)) d.open = true; });
        mine.replaceWith(copy);
      }
    });
  }

  function markGone() {
    gone = true;
    const note = document.getElementById("task-gone");
    if (note) note.hidden = false;
    document.querySelectorAll("[data-live-actions] button").forEach((b) => { b.disabled = true; });
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
    if (gone || (message && !window.confirm(message))) event.preventDefault();
  });
  setInterval(tick, 1000);
  tick();
  connect();
})();

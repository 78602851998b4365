// Live task progress over /ws/tasks/, for any page. No build step, no framework.
//
// - Elements rendered by {% task_progress %} (data-rc-progress data-task-id=...)
//   are found and kept live by themselves.
// - TaskProgress.watch(ids, handlers) is the same client without the element.
//
// API and events: docs/progress-widget.md. Protocol: docs/websocket-protocol.md.
// One socket per endpoint for the whole page, however many tasks it watches;
// it reconnects with capped, jittered backoff and re-syncs from the snapshot
// that every subscribe returns.
(function () {
  "use strict";

  const DEFAULT_URL = "/ws/tasks/";
  const MAX_IDS_PER_FRAME = 200;
  const FINAL = ["succeeded", "dead", "cancelled"];
  const LABELS = {
    queued: "Waiting to start",
    running: "Running",
    retrying: "Waiting to retry",
    succeeded: "Done",
    dead: "Failed",
    cancelled: "Cancelled",
    unavailable: "Not available",
  };

  function absoluteUrl(url) {
    const resolved = new URL(url || DEFAULT_URL, window.location.href);
    if (resolved.protocol === "http:") resolved.protocol = "ws:";
    if (resolved.protocol === "https:") resolved.protocol = "wss:";
    return resolved.href;
  }

  function backoff(failures) {
    const ceiling = Math.min(30000, 500 * 2 ** Math.min(failures, 6));
    return ceiling * (0.5 + Math.random() / 2);
  }

  function call(handler, ...args) {
    if (typeof handler !== "function") return;
    try {
      handler(...args);
    } catch (err) {
      // One broken handler must not stop the others or the socket.
      setTimeout(() => { throw err; });
    }
  }

  // --- The client: one socket, many task ids ---------------------------------

  class Client {
    constructor(url) {
      this.url = absoluteUrl(url);
      this.watchers = new Map(); // task id -> Set of handler objects
      this.seen = new Map(); // task id -> what was last delivered
      this.requests = new Map(); // request id -> task ids asked for
      this.nextRequest = 1;
      this.failures = 0;
      this.socket = null;
      this.timer = null;
      this.state = "idle";
    }

    watch(ids, handlers) {
      const list = (Array.isArray(ids) ? ids : [ids]).map(String);
      const entry = Object.assign({}, handlers || {});
      const fresh = [];
      for (const id of list) {
        if (!this.watchers.has(id)) {
          this.watchers.set(id, new Set());
          fresh.push(id);
        }
        this.watchers.get(id).add(entry);
        const last = this.seen.get(id);
        if (last) this.replay(entry, last);
      }
      if (this.state === "ready") this.subscribe(fresh);
      else this.open();
      return {
        ids: list,
        close: () => this.unwatch(list, entry),
      };
    }

    unwatch(ids, entry) {
      const gone = [];
      for (const id of ids) {
        const set = this.watchers.get(id);
        if (!set) continue;
        set.delete(entry);
        if (set.size === 0) {
          this.watchers.delete(id);
          this.seen.delete(id);
          gone.push(id);
        }
      }
      if (this.watchers.size === 0) {
        this.shut();
      } else {
        for (let i = 0; i < gone.length; i += MAX_IDS_PER_FRAME) {
          this.send({ action: "unsubscribe", tasks: gone.slice(i, i + MAX_IDS_PER_FRAME) });
        }
      }
    }

    open() {
      if (this.socket || this.timer) return;
      this.setState("connecting");
      const socket = new WebSocket(this.url);
      this.socket = socket;
      socket.addEventListener("message", (event) => {
        let frame;
        try {
          frame = JSON.parse(event.data);
        } catch (err) {
          return;
        }
        this.handle(frame);
      });
      socket.addEventListener("close", () => {
        if (this.socket !== socket) return;
        this.socket = null;
        this.requests.clear();
        if (this.watchers.size === 0) {
          this.setState("idle");
          return;
        }
        this.failures += 1;
        const delay = backoff(this.failures);
        this.setState("closed", { retryIn: delay });
        this.timer = setTimeout(() => {
          this.timer = null;
          this.open();
        }, delay);
      });
    }

    shut() {
      clearTimeout(this.timer);
      this.timer = null;
      const socket = this.socket;
      this.socket = null;
      if (socket) socket.close();
      this.requests.clear();
      this.setState("idle");
    }

    send(frame) {
      if (this.socket && this.socket.readyState === WebSocket.OPEN) {
        this.socket.send(JSON.stringify(frame));
      }
    }

    subscribe(ids) {
      for (let i = 0; i < ids.length; i += MAX_IDS_PER_FRAME) {
        const chunk = ids.slice(i, i + MAX_IDS_PER_FRAME);
        const id = this.nextRequest++;
        this.requests.set(id, chunk);
        this.send({ action: "subscribe", tasks: chunk, id: id });
      }
    }

    handle(frame) {
      if (frame.type === "hello") {
        this.failures = 0;
        this.setState("ready");
        this.subscribe(Array.from(this.watchers.keys()));
      } else if (frame.type === "snapshot" && this.requests.has(frame.id)) {
        const asked = this.requests.get(frame.id);
        this.requests.delete(frame.id);
        const found = new Set();
        for (const task of frame.tasks || []) {
          found.add(task.id);
          this.deliver(task);
        }
        // Unknown ids and other people's tasks get the same answer.
        for (const id of asked) if (!found.has(id)) this.unavailable(id);
      } else if (frame.type === "update") {
        for (const task of frame.tasks || []) this.deliver(task);
      }
    }

    deliver(task) {
      const set = this.watchers.get(task.id);
      if (!set) return;
      const last = this.seen.get(task.id);
      if (task.status === "succeeded" && !("result" in task)) {
        // Updates carry no result; the snapshot of a subscribe by id does.
        if (!last || last.status !== "succeeded") this.subscribe([task.id]);
        if (last && last.status === "succeeded") return;
      }
      if (last && last.status === "succeeded" && "result" in last && !("result" in task)) {
        task = Object.assign({}, task, { result: last.result });
      }
      this.seen.set(task.id, task);
      for (const entry of set) notify(entry, task, last);
    }

    unavailable(id) {
      const set = this.watchers.get(id);
      if (!set) return;
      const task = { id: id, status: "unavailable" };
      this.seen.set(id, task);
      for (const entry of set) call(entry.onUnavailable, id);
    }

    replay(entry, task) {
      if (task.status === "unavailable") call(entry.onUnavailable, task.id);
      else notify(entry, task, null);
    }

    setState(state, detail) {
      this.state = state;
      for (const set of this.watchers.values()) {
        for (const entry of set) call(entry.onConnection, state, detail || {});
      }
    }
  }

  // Calls a watcher's handlers for one task state. ``last`` is the state it
  // replaces (null for the first), so that retry, success and failure fire once
  // per attempt or ending, not again on a re-sync that changes nothing.
  function notify(entry, task, last) {
    call(entry.onUpdate, task);
    const changed = !last || last.status !== task.status || last.attempt !== task.attempt;
    if (task.status === "running" || task.status === "queued") {
      call(entry.onProgress, task);
    } else if (task.status === "retrying") {
      if (changed || last.next_attempt_at !== task.next_attempt_at) call(entry.onRetry, task);
    } else if (task.status === "succeeded") {
      if ("result" in task && (changed || !("result" in last))) call(entry.onSuccess, task, task.result);
    } else if (FINAL.includes(task.status) && changed) {
      call(entry.onFailure, task);
    }
  }

  const clients = new Map();

  function client(url) {
    const key = absoluteUrl(url);
    if (!clients.has(key)) clients.set(key, new Client(key));
    return clients.get(key);
  }

  // --- The element rendered by {% task_progress %} ----------------------------

  function percentOf(task) {
    if (task.status === "succeeded") return 100;
    const progress = task.progress || {};
    const total = progress.total;
    const current = progress.current;
    if (!total || total <= 0 || current == null) return task.status === "running" ? null : 0;
    return Math.max(0, Math.min(100, Math.floor((100 * current) / total)));
  }

  function part(element, name) {
    return element.querySelector('[data-part="' + name + '"]');
  }

  function show(node, text) {
    if (!node) return;
    node.textContent = text || "";
    node.hidden = !text;
  }

  function countdownText(time) {
    const due = Date.parse(time.getAttribute("datetime"));
    if (Number.isNaN(due)) return "";
    const seconds = Math.ceil((due - Date.now()) / 1000);
    return seconds > 0 ? "in " + seconds + " s" : "now";
  }

  function render(element, task) {
    const status = task.status;
    element.dataset.status = status;
    const percent = status === "unavailable" ? 0 : percentOf(task);
    const message = (task.progress && task.progress.message) || "";
    const label = LABELS[status] || status;
    const bar = element.querySelector('[role="progressbar"]');
    const fill = element.querySelector(".rc-progress-fill");
    if (bar) {
      if (percent === null) bar.removeAttribute("aria-valuenow");
      else bar.setAttribute("aria-valuenow", String(percent));
      const valueText = percent === null ? message || label : percent + "%" + (message ? ", " + message : "");
      bar.setAttribute("aria-valuetext", valueText);
    }
    if (fill) fill.style.width = percent === null ? "" : percent + "%";
    show(part(element, "status"), label);
    show(part(element, "percent"), percent === null || status === "unavailable" ? "" : percent + "%");
    show(part(element, "message"), status === "unavailable" ? "" : message);
    const attempt = task.attempt ? "attempt " + task.attempt + (task.max_attempts ? " of " + task.max_attempts : "") : "";
    show(part(element, "attempt"), attempt);
    const error = task.error && (status === "dead" || status === "retrying") ? task.error.class + ": " + task.error.message : "";
    show(part(element, "error"), error);
    const retry = part(element, "retry");
    const time = part(element, "countdown");
    if (retry && time) {
      const waiting = status === "retrying" && task.next_attempt_at;
      retry.hidden = !waiting;
      if (waiting) {
        time.setAttribute("datetime", task.next_attempt_at);
        time.textContent = countdownText(time);
        startTicking();
      }
    }
  }

  let ticker = null;

  function startTicking() {
    if (ticker) return;
    ticker = setInterval(() => {
      const times = document.querySelectorAll('[data-rc-progress][data-status="retrying"] time[data-part="countdown"]');
      if (times.length === 0) {
        clearInterval(ticker);
        ticker = null;
      }
      times.forEach((time) => { time.textContent = countdownText(time); });
    }, 1000);
  }

  function emit(element, name, detail) {
    element.dispatchEvent(new CustomEvent("task-progress:" + name, { bubbles: true, detail: detail }));
  }

  const mounted = new WeakSet();

  function mount(root) {
    const scope = root || document;
    const found = Array.from(scope.querySelectorAll("[data-rc-progress][data-task-id]"));
    if (scope.matches && scope.matches("[data-rc-progress][data-task-id]")) found.push(scope);
    const watches = [];
    for (const element of found) {
      if (mounted.has(element)) continue;
      mounted.add(element);
      startTicking();
      const id = element.dataset.taskId;
      watches.push(client(element.dataset.wsUrl).watch([id], {
        onUpdate: (task) => { render(element, task); emit(element, "update", { task: task }); },
        onProgress: (task) => emit(element, "progress", { task: task }),
        onRetry: (task) => emit(element, "retry", { task: task }),
        onSuccess: (task, result) => emit(element, "success", { task: task, result: result }),
        onFailure: (task) => emit(element, "failure", { task: task }),
        onUnavailable: () => {
          render(element, { id: id, status: "unavailable" });
          emit(element, "unavailable", { id: id });
        },
        onConnection: (state) => { element.dataset.connection = state; },
      }));
    }
    return watches;
  }

  function start() {
    mount(document);
    new MutationObserver((changes) => {
      for (const change of changes) {
        for (const node of change.addedNodes) if (node.nodeType === 1) mount(node);
      }
    }).observe(document.documentElement, { childList: true, subtree: true });
  }

  window.TaskProgress = {
    watch: (ids, handlers, options) => client((options || {}).url).watch(ids, handlers),
    mount: mount,
    labels: LABELS,
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();

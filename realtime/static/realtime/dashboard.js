// Live connection to /ws/tasks/ (protocol in docs/websocket-protocol.md).
// Reconnects by itself with capped, jittered backoff.
(function () {
  "use strict";
  const stateEl = document.getElementById("connection-state");
  const pingButton = document.getElementById("ping-button");
  const pingResult = document.getElementById("ping-result");
  let socket = null;
  let failures = 0;
  let pingSentAt = new Map();
  let nextPingId = 1;

  function setState(state, text) {
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
    if (frame.type === "pong") {
      const started = pingSentAt.get(frame.id);
      pingSentAt.delete(frame.id);
      const ms = started ? Math.round(performance.now() - started) : "?";
      pingResult.textContent = "answered by worker " + frame.worker + " in " + ms + " ms";
    } else if (frame.type === "error") {
      pingResult.textContent = "error: " + frame.detail;
    }
  }

  pingButton.addEventListener("click", () => {
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      pingResult.textContent = "not connected";
      return;
    }
    const id = String(nextPingId++);
    pingSentAt.set(id, performance.now());
    pingResult.textContent = "waiting for a worker…";
    socket.send(JSON.stringify({ action: "ping", id: id }));
  });

  connect();
})();

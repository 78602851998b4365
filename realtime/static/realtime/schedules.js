// The schedules page: refresh the table from ?format=json every few seconds.
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("schedules-config").textContent);
  const rows = document.getElementById("schedule-rows");
  const problem = document.getElementById("schedules-problem");
  const state = document.getElementById("connection-state");

  function esc(text) {
    const div = document.createElement("div");
    div.textContent = text == null ? "" : String(text);
    return div.innerHTML;
  }

  function when(iso, none) {
    if (!iso) return esc(none);
    return '<time datetime="' + esc(iso) + '">' + esc(new Date(iso).toLocaleString()) + "</time>";
  }

  function lastTask(s) {
    if (!s.last_task_id) return "-";
    const url = config.detail.replace("00000000-0000-0000-0000-000000000000", s.last_task_id);
    const status = s.last_status || "deleted";
    return '<a href="' + esc(url) + '"><span class="badge status-' + esc(status) + '">' + esc(status) + "</span></a>";
  }

  function show(data) {
    problem.hidden = !data.problem;
    problem.textContent = data.problem || "";
    data.schedules.forEach((s) => {
      const row = rows.querySelector('tr[data-schedule="' + CSS.escape(s.name) + '"]');
      if (!row) return; // a schedule declared since: the next reload shows it
      row.querySelector('[data-field="next_run"]').innerHTML = when(s.next_run, "never");
      row.querySelector('[data-field="last_tick"]').innerHTML = when(s.last_tick, "not yet");
      row.querySelector('[data-field="last_task"]').innerHTML = lastTask(s);
    });
  }

  function setState(name, text) {
    if (!state) return;
    state.dataset.state = name;
    state.textContent = text;
  }

  async function refresh() {
    try {
      const response = await fetch("?format=json", { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error("HTTP " + response.status);
      show(await response.json());
      setState("open", "refreshed " + new Date().toLocaleTimeString());
    } catch (err) {
      setState("closed", "could not refresh: " + err.message);
    }
    setTimeout(refresh, config.refresh * 1000);
  }

  document.querySelectorAll("#schedule-rows time").forEach((el) => {
    el.textContent = new Date(el.getAttribute("datetime")).toLocaleString();
  });
  refresh();
})();

/* The live run view's script (the admin's /runs/<id>/live and the member pages' /app/runs/<id>/live/):
 * the server renders the state once; this polls the element's data-state-url every data-interval ms
 * and redraws the rows until the run is final. See workflows/live.py for why polling.
 */
(function () {
  "use strict";
  var root = document.getElementById("pf-live");
  var url = root.dataset.stateUrl;
  var interval = parseInt(root.dataset.interval, 10) || 1000;
  var failures = 0;

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }
  function badge(status) {
    return el("span", {"class": "pf-badge pf-status-" + status, "data-status": status}, status);
  }
  // Same wording as workflows.admin.widgets.human_duration: 850 ms, 23.2 s, 3 min 12 s, 2 h 5 min.
  function ms(value) {
    if (value === null || value === undefined) return "–";
    if (value < 1000) return Math.round(value) + " ms";
    if (value < 60000) return (value / 1000).toFixed(1) + " s";
    var seconds = Math.round(value / 1000), minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min " + (seconds % 60) + " s";
    return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  }
  // Answers that retrying cannot fix: logged out (401), no access any more (403), run gone (404).
  var ACCESS_LOST = {
    401: "your session has ended.",
    403: "you no longer have access to this run.",
    404: "this run is no longer visible to you."
  };
  function stop(status) {
    root.dataset.stopped = String(status);
    document.getElementById("pf-poll-note").textContent = "Not updating (HTTP " + status + ").";
    var box = document.getElementById("pf-access-lost");
    box.querySelector(".pf-access-reason").textContent = ACCESS_LOST[status];
    box.hidden = false;
  }
  function jsonBlock(label, value, open) {
    var d = el("details", {"class": "pf-json pf-json-" + label.replace(/\W+/g, "-").toLowerCase()});
    if (open) d.open = true;
    d.appendChild(el("summary", {}, label));
    d.appendChild(el("pre", {}, JSON.stringify(value, null, 2)));
    return d;
  }
  function setBadge(cell, status) {
    cell.replaceChildren(badge(status));
  }
  // Keep <details> the user opened open across redraws.
  function openLabels(cell) {
    var open = {};
    cell.querySelectorAll("details[open] > summary").forEach(function (s) { open[s.textContent] = true; });
    return open;
  }

  function draw(state) {
    var status = document.getElementById("pf-run-status");
    status.className = "pf-badge pf-status-" + state.status;
    status.dataset.status = state.status;
    status.textContent = state.status;
    document.getElementById("pf-run-duration").textContent = ms(state.duration_ms);
    document.getElementById("pf-run-dead").textContent = state.dead_lettered ? "yes" : "no";
    document.getElementById("pf-run-error").textContent = state.error || "";
    var body = document.querySelector("#pf-steps tbody");
    state.steps.forEach(function (step) {
      var row = document.getElementById("pf-step-" + step.position);
      if (!row) {
        row = el("tr", {"id": "pf-step-" + step.position, "data-key": step.key});
        row.appendChild(el("td", {}, String(step.position)));
        var key = el("td"); key.appendChild(el("code", {}, step.key)); row.appendChild(key);
        row.appendChild(el("td", {}, step.action_type));
        ["status", "attempts", "duration", "details"].forEach(function (c) { row.appendChild(el("td", {"class": "pf-step-" + c})); });
        body.appendChild(row);
      }
      setBadge(row.querySelector(".pf-step-status"), step.status);
      row.querySelector(".pf-step-attempts").textContent = String(step.attempts);
      row.querySelector(".pf-step-duration").textContent = ms(step.duration_ms);
      var details = row.querySelector(".pf-step-details");
      var open = openLabels(details);
      var parts = [];
      if (step.error) parts.push(el("div", {"class": "pf-error"}, step.error));
      if (step.attempt_log && step.attempt_log.length) {
        var list = el("ol", {"class": "pf-attempts"});
        step.attempt_log.forEach(function (a) {
          var outcome = a.outcome || "running";
          var text = "attempt " + a.number + ": " + outcome.replace(/_/g, " ") +
            (a.duration_ms !== null ? " · " + ms(a.duration_ms) : "") + (a.error ? " — " + a.error : "");
          list.appendChild(el("li", {"class": "pf-attempt", "data-outcome": outcome}, text));
        });
        parts.push(list);
      }
      if (step.status === "retrying" && step.next_attempt_at) {
        parts.push(el("div", {"class": "pf-next-attempt"}, "next attempt at " + new Date(step.next_attempt_at).toLocaleTimeString()));
      }
      if (step.reused) parts.push(el("div", {}, "output reused from the replayed run"));
      if (step.output !== null) parts.push(jsonBlock("output", step.output, open["output"]));
      if (step.rendered_config !== null) parts.push(jsonBlock("rendered config", step.rendered_config, open["rendered config"]));
      details.replaceChildren.apply(details, parts);
    });
    document.getElementById("pf-poll-note").textContent =
      state.finished ? "This run is final." : "Updating live…";
    root.dataset.finished = state.finished ? "true" : "false";
    var replay = document.getElementById("pf-replay");
    if (replay) replay.hidden = !state.replayable;  // Run.is_replayable, from live.json
  }

  function poll() {
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}, cache: "no-store"})
      .then(function (response) {
        if (ACCESS_LOST[response.status]) { stop(response.status); return null; }
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (state) {
        if (state === null) return;  // stopped: no further polls
        failures = 0;
        draw(state);
        if (!state.finished) setTimeout(poll, interval);
      })
      .catch(function (err) {
        // A restarting web process, a 5xx or a dropped connection: keep trying, more slowly.
        failures += 1;
        document.getElementById("pf-poll-note").textContent = "Connection problem (" + err.message + "), retrying…";
        setTimeout(poll, Math.min(interval * Math.pow(2, failures), 15000));
      });
  }

  var initial = JSON.parse(document.getElementById("pf-initial-state").textContent);
  draw(initial);
  if (!initial.finished) setTimeout(poll, interval);
})();

/* The run page: the flow drawn with each box coloured by what happened (flowview.js), the path
 * taken highlighted, loops with their items; approve/refuse for a waiting run. While the run is
 * not final it polls live.json about once a second and recolours the boxes in place; once the
 * run is final (or the set of step instances changed) it reloads to show outputs and errors. */
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var root = document.getElementById("pf-run");
    var source = document.getElementById("pf-run-data");
    if (!root || !source) return;
    var data = JSON.parse(source.textContent);
    var canvas = document.getElementById("pf-run-flow");
    var filterNote = document.getElementById("pf-iteration-filter");
    var currentIteration = null;

    function index(instances) {
      var byPath = {}, byKey = {};
      instances.forEach(function (i) { byPath[i.path || i.key] = i; if (!(i.path || "").match(/\[\d+\]\//)) byKey[i.key] = i; });
      return {byPath: byPath, byKey: byKey, status: data.status};
    }
    function cards() { return Array.prototype.slice.call(document.querySelectorAll(".pf-steprun")); }
    function showIteration(prefix, label) {
      currentIteration = prefix;
      cards().forEach(function (card) {
        card.hidden = prefix !== null && (card.dataset.path || "").indexOf(prefix) !== 0;
      });
      filterNote.replaceChildren();
      if (prefix !== null) {
        filterNote.appendChild(document.createTextNode("Showing " + label + " only. "));
        var all = document.createElement("button");
        all.type = "button"; all.className = "pf-button pf-small"; all.id = "pf-show-all-steps"; all.textContent = "Show all steps";
        all.addEventListener("click", function () { showIteration(null); draw(); all.remove(); });
        filterNote.appendChild(all);
      }
    }
    function draw() {
      if (!canvas || !window.PotaFlowView) return;
      PotaFlowView.render(canvas, {trigger: data.trigger, steps: data.steps, on_failure: data.on_failure}, {
        run: index(data.instances),
        onSelect: function (step, ctx, inst) {
          var path = inst ? inst.path : null;
          var card = cards().filter(function (c) { return c.dataset.path === path || (!path && c.dataset.key === step.key); })[0];
          if (!card) return;
          if (card.hidden) showIteration(null);
          card.scrollIntoView({block: "start"});
          card.focus();
          var attempts = card.querySelector(".pf-attempts");
          if (attempts) attempts.classList.add("pf-highlight");
        },
        onIteration: function (step, i, prefix) {
          showIteration(prefix, "item " + i + " of " + step.key);
          canvas.querySelectorAll(".pf-iteration").forEach(function (b) { b.setAttribute("aria-pressed", String(b.textContent === String(i) && b.closest(".pf-loop-frame").contains(canvas.querySelector('[data-step-key="' + CSS.escape(step.key) + '"]')))); });
          var first = cards().filter(function (c) { return !c.hidden; })[0];
          if (first) { first.scrollIntoView({block: "start"}); first.focus(); }
        }
      });
      root.dataset.drawn = String(data.instances.length) + ":" + data.status;
    }
    draw();

    // Approve / refuse (editors and above see the buttons; the API decides again).
    var approveUrl = root.dataset.approveUrl;
    var csrf = document.querySelector("input[name=csrfmiddlewaretoken]");
    document.querySelectorAll(".pf-approve, .pf-refuse").forEach(function (button) {
      button.addEventListener("click", function () {
        var approved = button.dataset.approved === "true";
        var note = document.getElementById("pf-approval-status");
        document.querySelectorAll(".pf-approve, .pf-refuse").forEach(function (b) { b.disabled = true; });
        note.textContent = approved ? "Approving…" : "Refusing…";
        fetch(approveUrl, {method: "POST", credentials: "same-origin",
          headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": csrf ? csrf.value : ""},
          body: JSON.stringify({step: button.dataset.step, approved: approved})})
          .then(function (r) { return r.json().catch(function () { return {}; }).then(function (b) { return {ok: r.ok, body: b, status: r.status}; }); })
          .then(function (r) {
            if (r.ok) { note.textContent = approved ? "Approved: the run goes on." : "Refused."; poll(); return; }
            note.textContent = "Not recorded: " + ((r.body && r.body.detail) || "HTTP " + r.status);
            document.querySelectorAll(".pf-approve, .pf-refuse").forEach(function (b) { b.disabled = false; });
          });
      });
    });

    if (root.dataset.finished === "true") return;
    // The run's instances as the API lists them (GET /api/runs/<id>/: path, status, attempts, loop).
    var url = root.dataset.detailUrl;
    var note = document.getElementById("pf-poll-note");
    var count = data.instances.length;
    var FINAL = {succeeded: 1, failed: 1, filtered: 1};
    function poll() {
      fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}, cache: "no-store"})
        .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
        .then(function (state) {
          var steps = state.steps || [];
          if (FINAL[state.status] || steps.length !== count || (state.status !== data.status && (state.status === "waiting" || data.status === "waiting"))) {
            window.location.reload();
            return;
          }
          data.status = state.status;
          var known = {};
          data.instances.forEach(function (i) { known[i.path || i.key] = i; });
          steps.forEach(function (s) {
            var path = s.path || s.key;
            var inst = known[path];
            if (!inst) return;
            inst.status = s.status; inst.attempts = s.attempts;
            if (s.loop) {
              inst.loop_total = s.loop.total; inst.loop_finished = s.loop.finished;
              inst.iterations = (s.loop.iterations || []).map(function (it) { return {index: it.index, status: it.status}; });
            }
            if (s.action_type === "branch") inst.output = s.output;
            var card = cards().filter(function (c) { return c.dataset.path === path; })[0];
            if (card && card.dataset.status !== s.status) {
              card.dataset.status = s.status;
              var badge = card.querySelector(".pf-steprun-head .pf-badge");
              if (badge) { badge.className = "pf-badge pf-status-" + s.status; badge.textContent = s.status; }
            }
            var attempts = card ? card.querySelector(".pf-attempt-count") : null;
            if (attempts) attempts.textContent = s.attempts + " attempt" + (s.attempts === 1 ? "" : "s");
          });
          if (state.status === "running") document.getElementById("pf-run-summary").textContent = "Running now — this page updates by itself.";
          var badge = document.getElementById("pf-run-status");
          badge.className = "pf-badge pf-status-" + state.status; badge.textContent = state.status; badge.dataset.status = state.status;
          draw();
          setTimeout(poll, 1000);
        })
        .catch(function (e) { note.textContent = "Not updating (" + e.message + "). Reload the page to try again."; });
    }
    setTimeout(poll, 1000);
  });
})();

/* The run page follows its run: it polls live.json about once a second and
 * reloads itself when a status or an attempt count changed, until the run is final. */
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var root = document.getElementById("pf-run");
    if (!root || root.dataset.finished === "true") return;
    var url = root.dataset.stateUrl;
    var seen = root.dataset.signature;
    var note = document.getElementById("pf-poll-note");
    function signature(state) {
      return state.status + state.steps.map(function (s) { return "|" + s.status + ":" + s.attempts; }).join("");
    }
    function poll() {
      fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}, cache: "no-store"})
        .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
        .then(function (state) {
          if (signature(state) !== seen) { window.location.reload(); return; }
          setTimeout(poll, 1000);
        })
        .catch(function (e) { note.textContent = "Not updating (" + e.message + "). Reload the page to try again."; });
    }
    setTimeout(poll, 1000);
  });
})();

/* Test data from the real world, on the builder page: "Listen for a test event" on the trigger
 * card (POST /api/workflows/<id>/listen/: the next webhook is kept as a sample and not run),
 * and the workflow's samples (GET /api/workflows/<id>/samples/) offered in the test panel:
 * choosing one puts its body in the sample box and its headers and query in the data picker
 * (window.PotaflowSampleTrigger, read by builder.js). "Save as sample" keeps the typed body.
 */
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("pf-builder-data").textContent);
  var listenBox = document.getElementById("pf-listen");
  var pickBox = document.getElementById("pf-samples");
  if (!data.urls.samples || !pickBox) return;
  var csrf = document.querySelector("#pf-csrf input[name=csrfmiddlewaretoken]").value;
  var sampleArea = document.getElementById("pf-sample");
  var known = [];
  var timer = null;

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) return;
      if (k === "className") node.className = v;
      else if (k.slice(0, 2) === "on") node.addEventListener(k.slice(2), v);
      else if (v === true) node.setAttribute(k, "");
      else node.setAttribute(k, v);
    });
    (children || []).forEach(function (c) { if (c !== null && c !== undefined) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return node;
  }
  function call(method, url, body) {
    return fetch(url, {method: method, credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": csrf},
      body: body === undefined ? undefined : JSON.stringify(body)
    }).then(function (r) { return r.json().then(function (b) { return {ok: r.ok, body: b}; }); });
  }
  function use(sample) {
    window.PotaflowSampleTrigger = sample.payload;
    var body = sample.payload.body;
    sampleArea.value = typeof body === "string" ? JSON.stringify(body) : JSON.stringify(body === undefined ? {} : body, null, 2);
    sampleArea.dispatchEvent(new Event("input", {bubbles: true}));
  }
  function drawPicker() {
    pickBox.replaceChildren();
    if (!known.length) return;
    var select = el("select", {id: "pf-sample-choice", onchange: function () {
      var chosen = known.filter(function (s) { return String(s.id) === select.value; })[0];
      if (chosen) use(chosen);
    }}, [el("option", {value: ""}, ["Choose a sample…"])].concat(known.map(function (s) {
      return el("option", {value: String(s.id)}, [s.name + (s.source === "captured" ? " (captured)" : "")]);
    })));
    pickBox.appendChild(el("label", {"for": "pf-sample-choice"}, ["Samples of this workflow"]));
    pickBox.appendChild(select);
  }
  function load() {
    return call("GET", data.urls.samples).then(function (r) {
      if (r.ok) { known = r.body.results; drawPicker(); }
      return r.body;
    });
  }
  function stopListening(message) {
    clearInterval(timer); timer = null;
    var status = document.getElementById("pf-listen-status");
    if (status) status.textContent = message;
    var button = document.getElementById("pf-listen-button");
    if (button) button.disabled = false;
    listenBox.dataset.listening = "false";
  }
  function listen() {
    var button = document.getElementById("pf-listen-button");
    button.disabled = true;
    var before = known.length ? known[0].id : 0;
    call("POST", data.urls.listen).then(function (r) {
      var status = document.getElementById("pf-listen-status");
      if (!r.ok) { stopListening("Cannot listen: " + (r.body.detail || "error")); return; }
      var until = new Date(r.body.listening_until);
      listenBox.dataset.listening = "true";
      status.replaceChildren("Listening until " + until.toLocaleTimeString() + "… Send one request to the webhook URL now, e.g.:",
        el("pre", {className: "pf-code pf-listen-example"}, ["curl -X POST -H 'Content-Type: application/json' \\\n  -d '{\"hello\": \"world\"}' " + r.body.webhook_url]),
        "It is kept as a sample and not run.");
      timer = setInterval(function () {
        load().then(function (body) {
          var fresh = known.length && known[0].id !== before && known[0].source === "captured" ? known[0] : null;
          if (fresh) {
            use(fresh);
            document.getElementById("pf-sample-choice").value = String(fresh.id);
            stopListening("Got it (“" + fresh.name + "”): its fields are in the sample box and the data picker (Insert data).");
            listenBox.dataset.captured = String(fresh.id);
          } else if (!body.listening_until || new Date(body.listening_until) < new Date()) {
            stopListening("Stopped listening: nothing arrived in time.");
          }
        });
      }, 1000);
    });
  }
  function saveSample() {
    var name = window.prompt("Name this sample:", "Sample " + new Date().toLocaleString());
    if (!name) return;
    var body;
    try { body = sampleArea.value.trim() ? JSON.parse(sampleArea.value) : {}; } catch (e) { document.getElementById("pf-sample-error").textContent = "The sample body is not valid JSON."; return; }
    call("POST", data.urls.samples, {name: name, body: body}).then(function (r) {
      if (r.ok) load(); else document.getElementById("pf-sample-error").textContent = "Not saved: " + (r.body.detail || "error");
    });
  }

  if (listenBox && data.can_edit && data.urls.listen) {
    listenBox.appendChild(el("button", {type: "button", className: "pf-button", id: "pf-listen-button", onclick: listen}, ["Listen for a test event"]));
    listenBox.appendChild(el("div", {id: "pf-listen-status", className: "pf-help", "aria-live": "polite"}));
    listenBox.hidden = data.workflow.trigger_type !== "webhook";
    document.addEventListener("change", function (e) {
      if (e.target && e.target.name === "pf-trigger-type") listenBox.hidden = e.target.value !== "webhook" || !data.workflow.webhook_url;
    });
  }
  if (data.can_edit) {
    var save = el("button", {type: "button", className: "pf-button pf-small", id: "pf-save-sample", onclick: saveSample}, ["Keep as a named sample"]);
    sampleArea.parentNode.insertBefore(save, document.getElementById("pf-sample-error"));
  }
  load();
})();

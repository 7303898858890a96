/* "Add a step": a searchable list of the actions, each with its icon and one line saying what
 * it does, the common ones first. Choosing one adds the step through the builder's own
 * "Add step" control (builder.js), which this replaces on screen.
 */
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("pf-builder-data").textContent);
  var SVG = "http://www.w3.org/2000/svg";
  // Common first; anything else after, alphabetically; a handler written in Python last.
  var ORDER = ["http.request", "filter", "slack.message", "email.send", "transform", "sheets.append_row",
    "branch", "for_each", "delay", "wait", "stop"];
  var LAST = ["custom"];
  var ONE_LINE = {
    "http.request": "Call any web API or URL (GET, POST…) and use its answer.",
    "filter": "Continue only when a condition holds; otherwise stop here.",
    "slack.message": "Post a message to a Slack channel.",
    "email.send": "Send an e-mail through your SMTP server or SendGrid.",
    "transform": "Reshape data: build new fields from earlier ones.",
    "sheets.append_row": "Add a row to a Google Sheets worksheet.",
    "branch": "Take different paths depending on conditions.",
    "for_each": "Repeat steps for each item of a list.",
    "delay": "Wait for a while, or until a time, then go on.",
    "wait": "Pause until an outside event or someone's approval.",
    "stop": "End the run here, with a status and a message.",
    "custom": "Run a Python handler installed on the server (for developers)."
  };
  // 24×24 outline icons (paths), drawn with SVG elements: no inline style, no image request.
  var ICONS = {
    "http.request": ["M3 12h18", "M12 3a15 15 0 0 1 0 18", "M12 3a15 15 0 0 0 0 18", "M12 3a9 9 0 1 1 0 18a9 9 0 1 1 0-18"],
    "filter": ["M3 5h18l-7 8v6l-4 2v-8z"],
    "slack.message": ["M4 5h16v11H9l-5 4z", "M8 9h8", "M8 12h5"],
    "email.send": ["M3 6h18v12H3z", "M3 6l9 7l9-7"],
    "transform": ["M4 7h12", "M13 4l3 3l-3 3", "M20 17H8", "M11 14l-3 3l3 3"],
    "sheets.append_row": ["M4 4h16v16H4z", "M4 10h16", "M4 15h16", "M10 4v16"],
    "branch": ["M6 3v18", "M6 8c0 4 12 2 12 8", "M18 16v5"],
    "for_each": ["M4 12a8 8 0 0 1 14-5", "M18 3v4h-4", "M20 12a8 8 0 0 1-14 5", "M6 21v-4h4"],
    "delay": ["M12 3a9 9 0 1 1 0 18a9 9 0 1 1 0-18", "M12 7v5l3 3"],
    "wait": ["M8 5v14", "M16 5v14"],
    "stop": ["M6 6h12v12H6z"],
    "custom": ["M9 7l-5 5l5 5", "M15 7l5 5l-5 5"],
    "_": ["M12 3a9 9 0 1 1 0 18a9 9 0 1 1 0-18", "M12 8v8", "M8 12h8"]
  };

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
  function icon(name) {
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("class", "pf-action-icon");
    svg.setAttribute("aria-hidden", "true");
    (ICONS[name] || ICONS._).forEach(function (d) {
      var path = document.createElementNS(SVG, "path");
      path.setAttribute("d", d);
      svg.appendChild(path);
    });
    return svg;
  }
  function oneLine(name, action) {
    if (ONE_LINE[name]) return ONE_LINE[name];
    var first = String(action.description || "").split(/(?<=\.)\s/)[0];
    return first.length > 90 ? first.slice(0, 89) + "…" : first;
  }
  function rank(name) {
    var i = ORDER.indexOf(name);
    if (i >= 0) return i;
    return LAST.indexOf(name) >= 0 ? 1000 : 100;
  }
  var names = Object.keys(data.actions).sort(function (a, b) { return rank(a) - rank(b) || a.localeCompare(b); });
  // For other pickers of the page (the flow view's insert menu): the same order and one-line descriptions.
  window.PotaflowActions = {ordered: function () { return names.slice(); }, oneLine: oneLine};

  var box = document.querySelector(".pf-add-step");
  var select = document.getElementById("pf-add-action");
  var addButton = document.getElementById("pf-add-step");
  if (!box || !select || !addButton) return;

  // The builder's own select and button stay the way a step is added; the list drives them.
  Array.prototype.forEach.call(box.children, function (child) { child.hidden = true; });
  var open = el("button", {type: "button", className: "pf-button pf-primary", id: "pf-open-actions", "aria-expanded": "false",
    "aria-controls": "pf-action-panel"}, ["+ Add a step"]);
  var search = el("input", {type: "search", id: "pf-action-search", placeholder: "Search: e-mail, Slack, condition…", autocomplete: "off"});
  var list = el("ul", {className: "pf-action-list", id: "pf-action-list", role: "listbox", "aria-label": "Actions"});
  var panel = el("div", {className: "pf-action-panel", id: "pf-action-panel", hidden: true}, [
    el("label", {"for": "pf-action-search"}, ["Find an action"]), search, list]);
  box.appendChild(open);
  box.appendChild(panel);
  box.classList.add("pf-add-step-picker");

  function choose(name) {
    select.value = name;
    toggle(false);
    addButton.click();
  }
  function draw() {
    var q = search.value.trim().toLowerCase();
    list.replaceChildren();
    names.forEach(function (name) {
      var action = data.actions[name];
      var text = (name + " " + (action.title || "") + " " + oneLine(name, action) + " " + (action.description || "")).toLowerCase();
      if (q && q.split(/\s+/).some(function (w) { return text.indexOf(w) < 0; })) return;
      var item = el("li", {role: "option", "aria-selected": "false"}, [el("button", {type: "button", className: "pf-action-choice", "data-action": name,
        onclick: function () { choose(name); }}, [icon(name), el("span", {className: "pf-action-text"}, [
          el("strong", {}, [action.title || name]), el("span", {className: "pf-quiet pf-small-text"}, [oneLine(name, action)])])])]);
      list.appendChild(item);
    });
    if (!list.children.length) list.appendChild(el("li", {className: "pf-quiet"}, ["No action matches “" + search.value + "”."]));
  }
  function toggle(show) {
    panel.hidden = !show;
    open.setAttribute("aria-expanded", show ? "true" : "false");
    if (show) { search.value = ""; draw(); search.focus(); }
  }
  open.addEventListener("click", function () { toggle(panel.hidden); });
  search.addEventListener("input", draw);
  search.addEventListener("keydown", function (e) {
    if (e.key === "Enter") { e.preventDefault(); var first = list.querySelector(".pf-action-choice"); if (first) first.click(); }
    if (e.key === "ArrowDown") { e.preventDefault(); var b = list.querySelector(".pf-action-choice"); if (b) b.focus(); }
  });
  panel.addEventListener("keydown", function (e) {
    if (e.key === "Escape") { e.preventDefault(); toggle(false); open.focus(); }
    if ((e.key === "ArrowDown" || e.key === "ArrowUp") && e.target.classList.contains("pf-action-choice")) {
      e.preventDefault();
      var all = Array.prototype.slice.call(list.querySelectorAll(".pf-action-choice"));
      var next = all[all.indexOf(e.target) + (e.key === "ArrowDown" ? 1 : -1)];
      if (next) next.focus(); else if (e.key === "ArrowUp") search.focus();
    }
  });
})();

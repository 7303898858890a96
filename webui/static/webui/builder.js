/* The workflow builder: a trigger card and step cards whose forms are generated
 * from each action's config_schema. Plain JavaScript, no library, no inline
 * handlers (works under a strict script-src 'self' Content-Security-Policy).
 * Saving PATCHes/POSTs /api/workflows/ (session + CSRF header), so the server's
 * validation is the only one; its errors ("steps[1].config.url") are shown on
 * the field with the same data-path.
 */
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("pf-builder-data").textContent);
  var root = document.getElementById("pf-builder");
  var canEdit = data.can_edit;
  var csrf = document.querySelector("#pf-csrf input[name=csrfmiddlewaretoken]").value;
  var wf = data.workflow;
  var uid = 0;
  var steps = [];  // the top-level steps (filled once fromSpec is defined, below)
  var onFailure = [];  // the error path
  var testOutputs = {};  // step key -> output from the latest test
  var pendingMove = null;  // [from, to] of a drop, applied when the drag ends
  var secrets = {webhook_secret: null, webhook_secret_previous: null};
  var LONG_TEXT = {text: 1, html: 1, condition: 1, message: 1};
  var CONDITION_FIELDS = {condition: true, when: true};  // expression fields that are true/false
  // Flow control steps (issue 19) as the builder shows them when the server does not describe
  // them itself; the server's descriptions (GET /api/actions/) win when present.
  var STEP_LIST = {type: "array", items: {type: "object"}};
  var CONTROL_ACTIONS = {
    branch: {title: "Branch", description: "Chooses a path: each path has a name, a condition and steps; “otherwise” runs when no condition holds.",
      config_schema: {type: "object", properties: {mode: {"enum": ["first", "all"], "default": "first", description: "first: the first path whose condition holds; all: every one."},
        paths: {type: "array", items: {type: "object"}}, otherwise: STEP_LIST}, required: ["paths"]}},
    for_each: {title: "For each item", description: "Runs its steps once per item of a list, with item and index in the templates.",
      config_schema: {type: "object", properties: {items: {description: "A template giving a list, e.g. {{ trigger.body.lines }}."}, steps: STEP_LIST,
        parallel: {type: "integer", minimum: 1, description: "Iterations at once (default 1)."}, on_item_failure: {"enum": ["stop", "continue"], "default": "stop"},
        max_items: {type: "integer", minimum: 1}}, required: ["items", "steps"]}},
    delay: {title: "Delay", description: "Pauses the run for a number of seconds or until a time; durable.",
      config_schema: {type: "object", properties: {seconds: {type: "number"}, until: {type: "string", description: "An ISO 8601 time."}}}},
    wait: {title: "Wait", description: "Pauses until a POST to the run's resume URL, or until an editor approves or refuses.",
      config_schema: {type: "object", properties: {kind: {"enum": ["webhook", "approval"], "default": "webhook"}, timeout_seconds: {type: "number"},
        on_timeout: {"enum": ["fail", "continue"], "default": "fail"}}}},
    stop: {title: "Stop", description: "Ends the run now as succeeded, filtered or failed, with a message.",
      config_schema: {type: "object", properties: {status: {"enum": ["succeeded", "filtered", "failed"], "default": "succeeded"}, message: {type: "string"}}}}
  };
  var LABELS = {url: "URL", html: "HTML", cc: "Cc", bcc: "Bcc", from_email: "From address", thread_ts: "Thread (ts)",
    reply_to: "Reply to", body_type: "Body type", expected_status: "Expected status codes"};

  // -- small DOM helpers -------------------------------------------------------
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) return;
      if (k === "text") node.textContent = v;
      else if (k === "className") node.className = v;
      else if (k.slice(0, 2) === "on") node.addEventListener(k.slice(2), v);
      else if (v === true) node.setAttribute(k, "");
      else node.setAttribute(k, v);
    });
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }
  function nextId(prefix) { uid += 1; return prefix + "-" + uid; }
  function clone(v) { return v === undefined ? undefined : JSON.parse(JSON.stringify(v)); }
  function isPlainObject(v) { return v !== null && typeof v === "object" && !Array.isArray(v); }
  function api(method, url, body) {
    return fetch(url, {
      method: method,
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": csrf},
      body: body === undefined ? undefined : JSON.stringify(body)
    }).then(function (r) {
      return r.text().then(function (t) {
        var parsed = null;
        try { parsed = t ? JSON.parse(t) : null; } catch (e) { parsed = {detail: t.slice(0, 200)}; }
        return {ok: r.ok, status: r.status, body: parsed};
      });
    });
  }
  function status(text) { document.getElementById("pf-save-status").textContent = text; }

  // -- step model ----------------------------------------------------------------
  // The definition is a tree of step lists (issue 19): the top-level steps, nested lists in a
  // branch's config (paths[i].steps, otherwise) and a for_each's (steps), and the workflow's
  // on_failure (the error path). While editing, nested lists hold the same step objects as the
  // top level, so the flow view and the form editor edit one document.
  var NESTED = {branch: 1, for_each: 1};
  function fromSpec(s) {
    uid += 1;
    var step = {
      uid: uid, key: s.key, action_type: s.action_type, config: clone(s.config) || {},
      credential: s.credential === undefined ? null : s.credential,
      max_retries: s.max_retries, backoff_seconds: s.backoff_seconds,
      backoff_max_seconds: s.backoff_max_seconds, timeout_seconds: s.timeout_seconds,
      on_in_doubt: s.on_in_doubt || "", continue_on_error: !!s.continue_on_error, raw: false, anyModes: {}
    };
    childLists(step).forEach(function (c) { c.set(c.list.map(fromSpec)); });
    return step;
  }
  function toSpec(s) {
    var config = Object.assign({}, s.config);
    if (s.action_type === "branch" && Array.isArray(config.paths)) {
      config.paths = config.paths.map(function (p) { return Object.assign({}, p, {steps: (p.steps || []).map(toSpec)}); });
      if (Array.isArray(config.otherwise)) config.otherwise = config.otherwise.map(toSpec);
    }
    if (s.action_type === "for_each" && Array.isArray(config.steps)) config.steps = config.steps.map(toSpec);
    var spec = {key: s.key, action_type: s.action_type, config: config, credential: s.credential || null,
      on_in_doubt: s.on_in_doubt || ""};
    if (s.continue_on_error) spec.continue_on_error = true;
    ["max_retries", "backoff_seconds", "backoff_max_seconds", "timeout_seconds"].forEach(function (f) {
      spec[f] = (s[f] === "" || s[f] === null || s[f] === undefined) ? data.step_defaults[f] : Number(s[f]);
    });
    return spec;
  }
  /* The nested step lists of a control step: [{slot, name, list, set}] ("paths[0]", "otherwise", "steps"). */
  function childLists(step) {
    var c = step.config || {};
    var out = [];
    if (step.action_type === "branch") {
      (Array.isArray(c.paths) ? c.paths : []).forEach(function (p, i) {
        if (!Array.isArray(p.steps)) p.steps = [];
        out.push({slot: "paths[" + i + "]", name: p.name, list: p.steps, set: function (v) { p.steps = v; }, specPath: ".config.paths[" + i + "].steps"});
      });
      if (Array.isArray(c.otherwise)) out.push({slot: "otherwise", name: "otherwise", list: c.otherwise, set: function (v) { c.otherwise = v; }, specPath: ".config.otherwise"});
    }
    if (step.action_type === "for_each") {
      if (!Array.isArray(c.steps)) c.steps = [];
      out.push({slot: "steps", name: "steps", list: c.steps, set: function (v) { c.steps = v; }, specPath: ".config.steps"});
    }
    return out;
  }
  /* Every list of the document, outermost first: {ref, list, path (as the server names it), owner, ancestors}. */
  function allLists() {
    var out = [];
    function visit(list, ref, path, ancestors) {
      out.push({ref: ref, list: list, path: path, ancestors: ancestors});
      list.forEach(function (step, i) {
        childLists(step).forEach(function (c) {
          visit(c.list, {id: step.uid + ":" + c.slot, owner: step, slot: c.slot}, path + "[" + i + "]" + c.specPath,
            ancestors.concat([{step: step, list: list, index: i, slot: c.slot}]));
        });
      });
    }
    visit(steps, {id: "root", owner: null, slot: "root"}, "steps", []);
    visit(onFailure, {id: "on_failure", owner: null, slot: "on_failure"}, "on_failure", []);
    return out;
  }
  function listFor(ref) {
    return allLists().filter(function (l) { return l.ref.id === ref.id; })[0] || null;
  }
  /* Where a step is: its list, index, the server's path ("steps[1].config.paths[0].steps[2]"),
   * the steps sure to have run before it, and whether it is inside a loop or the error path. */
  function locate(step) {
    var lists = allLists();
    for (var i = 0; i < lists.length; i++) {
      var index = lists[i].list.indexOf(step);
      if (index >= 0) return locFor(lists[i], index);
    }
    return null;
  }
  function locFor(entry, index) {
    var earlier = [];
    entry.ancestors.forEach(function (a) { earlier = earlier.concat(a.list.slice(0, a.index)); });
    earlier = earlier.concat(entry.list.slice(0, index));
    return {
      list: entry.list, ref: entry.ref, index: index, path: entry.path + "[" + index + "]", earlier: earlier,
      inLoop: entry.ancestors.some(function (a) { return a.step.action_type === "for_each"; }),
      errorPath: entry.ref.id === "on_failure" || entry.path.indexOf("on_failure") === 0,
      ancestors: entry.ancestors
    };
  }
  function everyStep() {
    var out = [];
    allLists().forEach(function (l) { out = out.concat(l.list); });
    return out;
  }
  function newKey(actionType) {
    var base = actionType.replace(/[^a-z0-9]+/g, "_").replace(/^_+|_+$/g, "") || "step";
    if (!/^[a-z]/.test(base)) base = "s_" + base;
    var keys = everyStep().map(function (s) { return s.key; });
    var key = base, n = 2;
    while (keys.indexOf(key) >= 0) { key = base + "_" + n; n += 1; }
    return key;
  }
  /* The keys a step's templates read (steps.<key>, steps["key"]). */
  function readsOf(step) {
    var text = JSON.stringify(toSpec(step).config);
    var found = {};
    var re = /steps\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*\\?["']([^"'\\]+)\\?["']\s*\])/g;
    var m;
    while ((m = re.exec(text)) !== null) found[m[1] || m[2]] = true;
    return Object.keys(found);
  }
  /* Why the document as it is now cannot be right: a template reading a step that is not sure to
   * run before it (the same rule the server applies at save). "" when none. */
  function orderProblem() {
    var lists = allLists();
    for (var i = 0; i < lists.length; i++) {
      for (var j = 0; j < lists[i].list.length; j++) {
        var step = lists[i].list[j];
        var before = locFor(lists[i], j).earlier.map(function (s) { return s.key; });
        var own = [step].concat(descendants(step)).map(function (s) { return s.key; });
        var bad = readsOf(step).filter(function (k) { return before.indexOf(k) < 0 && own.indexOf(k) < 0 && everyStep().some(function (s) { return s.key === k; }); });
        if (bad.length) return step.key + " reads steps." + bad[0] + ".output, and " + bad[0] + " would not be sure to run before it";
      }
    }
    return "";
  }
  function descendants(step) {
    var out = [];
    childLists(step).forEach(function (c) { c.list.forEach(function (s) { out.push(s); out = out.concat(descendants(s)); }); });
    return out;
  }
  var CONTROL_DEFAULTS = {
    branch: function () { return {paths: [{name: "path_1", when: "", steps: []}]}; },
    for_each: function () { return {items: "", steps: []}; },
    delay: function () { return {seconds: 60}; },
    wait: function () { return {kind: "approval"}; },
    stop: function () { return {status: "succeeded", message: ""}; }
  };
  function defaultsFor(actionType) {
    if (CONTROL_DEFAULTS[actionType] && !data.actions[actionType]) return CONTROL_DEFAULTS[actionType]();
    var config = {};
    var schema = actionOf(actionType).config_schema || {};
    var props = schema.properties || {};
    (schema.required || []).forEach(function (name) {
      var p = props[name] || {};
      if (p.enum) config[name] = p.default || p.enum[0];
      else if (p.type === "string") config[name] = "";
    });
    if (CONTROL_DEFAULTS[actionType]) config = Object.assign(CONTROL_DEFAULTS[actionType](), config);
    return config;
  }

  // -- field kinds from the JSON Schema ------------------------------------------
  function typesOf(p) {
    if (Array.isArray(p.type)) return p.type;
    if (p.type) return [p.type];
    if (p.oneOf || p.anyOf) {
      var t = [];
      (p.oneOf || p.anyOf).forEach(function (o) { t = t.concat(typesOf(o)); });
      return t;
    }
    return [];
  }
  function fieldKind(actionType, name, p) {
    if ((data.expression_fields[actionType] || (actionType === "for_each" ? ["items"] : [])).indexOf(name) >= 0) return "expr";
    if (p.enum) return "enum";
    var t = typesOf(p);
    if (t.length === 0) return "any";
    if (t[0] === "string") return "text";
    if (t[0] === "integer" || t[0] === "number") return "number";
    if (t[0] === "boolean") return "bool";
    if (t[0] === "object" && p.additionalProperties && typeof p.additionalProperties === "object") return "map";
    if (t[0] === "array" && p.items && typesOf(p.items).length && typesOf(p.items)[0] !== "object") return "list";
    return "json";
  }

  // -- data picker -----------------------------------------------------------------
  var lastSelection = new WeakMap();
  function remember(input) {
    ["keyup", "click", "select", "blur", "input"].forEach(function (ev) {
      input.addEventListener(ev, function () {
        lastSelection.set(input, [input.selectionStart, input.selectionEnd]);
      });
    });
  }
  function samplePayload() {
    var text = document.getElementById("pf-sample").value.trim();
    if (!text) return {};
    try { return JSON.parse(text); } catch (e) { return undefined; }
  }
  function triggerTree() {
    var body = samplePayload();
    // A sample chosen in the test panel (samples.js) brings its headers and query; else the latest run's.
    var chosen = window.PotaflowSampleTrigger || data.sample.trigger;
    var base = isPlainObject(chosen) ? clone(chosen) : {method: "POST", headers: {}, query: {}};
    if (body !== undefined) base.body = body;
    return base;
  }
  function pathPart(parent, key) {
    if (typeof key === "number") return parent + "[" + key + "]";
    return /^[A-Za-z_][A-Za-z0-9_]*$/.test(key) ? parent + "." + key : parent + "[" + JSON.stringify(key) + "]";
  }
  function preview(v) {
    var t = JSON.stringify(v);
    if (t === undefined) return "";
    return t.length > 40 ? t.slice(0, 39) + "…" : t;
  }
  function treeNode(label, path, value, insert, depth) {
    var li = el("li", {className: "pf-tree-item"});
    var pick = el("button", {type: "button", className: "pf-pick", "data-path": path,
      "aria-label": "Insert " + path, onclick: function () { insert(path); }}, [label]);
    if (isPlainObject(value) || Array.isArray(value)) {
      var keys = Array.isArray(value) ? value.map(function (_, i) { return i; }) : Object.keys(value);
      var details = el("details", depth < 2 ? {open: true} : {});
      var summary = el("summary", {}, [label + (Array.isArray(value) ? " [" + value.length + "]" : "")]);
      details.appendChild(summary);
      var ul = el("ul", {className: "pf-tree"});
      ul.appendChild(el("li", {className: "pf-tree-item"}, [el("button", {type: "button", className: "pf-pick pf-pick-all",
        "data-path": path, "aria-label": "Insert all of " + path, onclick: function () { insert(path); }}, ["(all of " + label + ")"])]));
      keys.slice(0, 100).forEach(function (k) {
        ul.appendChild(treeNode(String(k), pathPart(path, k), value[k], insert, depth + 1));
      });
      details.appendChild(ul);
      li.appendChild(details);
    } else {
      li.appendChild(pick);
      li.appendChild(el("span", {className: "pf-quiet pf-tree-value"}, [" " + preview(value)]));
    }
    return li;
  }
  function openPicker(input, loc, bare, wrap) {
    var existing = wrap.querySelector(".pf-picker");
    if (existing) { existing.remove(); return; }
    document.querySelectorAll(".pf-picker").forEach(function (p) { p.remove(); });
    var panel = el("div", {className: "pf-picker", role: "dialog", "aria-label": "Insert data into " + (input.getAttribute("aria-label") || input.id)});
    function insert(path) {
      var text = bare ? path : "{{ " + path + " }}";
      var sel = lastSelection.get(input) || [input.value.length, input.value.length];
      input.value = input.value.slice(0, sel[0]) + text + input.value.slice(sel[1]);
      var at = sel[0] + text.length;
      input.dispatchEvent(new Event("input", {bubbles: true}));
      panel.remove();
      input.focus();
      input.setSelectionRange(at, at);
      lastSelection.set(input, [at, at]);
      checkTemplate(input, loc, bare);
    }
    panel.addEventListener("keydown", function (e) {
      if (e.key === "Escape") { e.preventDefault(); panel.remove(); input.focus(); }
    });
    panel.appendChild(el("p", {className: "pf-picker-head"}, ["Pick a value to insert at the cursor ", el("span", {className: "pf-quiet"}, ["(Esc closes)"])]));
    var tree = el("ul", {className: "pf-tree"});
    tree.appendChild(treeNode("trigger", "trigger", triggerTree(), insert, 0));
    var extras = [];
    if (loc.inLoop) extras.push(["item", "the current item of the loop"], ["index", "its position, from 0"]);
    if (loc.errorPath) extras.push(["failure.step", "the step that failed"], ["failure.error", "its error"], ["failure.attempts", "its attempts"]);
    extras.forEach(function (x) {
      tree.appendChild(el("li", {className: "pf-tree-item"}, [el("button", {type: "button", className: "pf-pick", "data-path": x[0],
        onclick: function () { insert(x[0]); }}, [x[0]]), el("span", {className: "pf-quiet"}, [" " + x[1]])]));
    });
    var earlier = loc.earlier;
    earlier.forEach(function (s) {
      var out = Object.prototype.hasOwnProperty.call(testOutputs, s.key) ? testOutputs[s.key] : data.sample.outputs[s.key];
      var path = "steps." + s.key + ".output";
      if (out === undefined || out === null) {
        tree.appendChild(el("li", {className: "pf-tree-item"}, [el("button", {type: "button", className: "pf-pick", "data-path": path,
          onclick: function () { insert(path); }}, [path]), el("span", {className: "pf-quiet"}, [" no output yet: test the workflow to see its fields"])]));
      } else {
        tree.appendChild(treeNode(path, path, out, insert, 1));
      }
    });
    panel.appendChild(tree);
    panel.appendChild(el("button", {type: "button", className: "pf-button pf-small", onclick: function () { panel.remove(); input.focus(); }}, ["Close"]));
    wrap.appendChild(panel);
    var first = panel.querySelector("summary, button");
    if (first) first.focus();
  }
  // Every leaf of the data the picker shows, as {path, value} (the condition builder's field list).
  function flatFields(loc) {
    var out = [];
    function walk(path, value, depth) {
      if ((isPlainObject(value) || Array.isArray(value)) && depth < 6) {
        (Array.isArray(value) ? value.map(function (_, i) { return i; }).slice(0, 20) : Object.keys(value)).forEach(function (k) {
          walk(pathPart(path, k), value[k], depth + 1);
        });
        if (Array.isArray(value) || !Object.keys(value).length) out.push({path: path, value: value});
      } else out.push({path: path, value: value});
    }
    walk("trigger.body", triggerTree().body, 0);
    if (loc.inLoop) { out.push({path: "item", value: undefined}); out.push({path: "index", value: 0}); }
    loc.earlier.forEach(function (s) {
      var o = Object.prototype.hasOwnProperty.call(testOutputs, s.key) ? testOutputs[s.key] : data.sample.outputs[s.key];
      if (o !== undefined && o !== null) walk("steps." + s.key + ".output", o, 0);
    });
    return out.slice(0, 500);
  }
  function checkTemplate(input, loc, bare) {
    var value = input.value;
    var msg = input.parentNode.parentNode.querySelector(":scope > .pf-inline-check") ||
      (input.closest(".pf-field") || input.parentNode).querySelector(".pf-inline-check");
    if (!msg) return;
    if (bare && value.trim() && value.indexOf("{{") < 0 && value.indexOf("{%") < 0) value = "{{ " + value + " }}";
    if (value.indexOf("{{") < 0 && value.indexOf("{%") < 0) { msg.textContent = ""; input.removeAttribute("aria-invalid"); return; }
    var earlier = loc.earlier.map(function (s) { return s.key; });
    // What the save check knows here: item/index in a loop body, failure in the error path, and
    // the other steps of the tree (readable with a default).
    var names = (loc.inLoop ? ["item", "index"] : []).concat(loc.errorPath ? ["failure"] : []);
    var others = everyStep().map(function (s) { return s.key; });
    api("POST", data.urls.check_template, {template: value, earlier_steps: earlier, names: names, other_steps: others}).then(function (r) {
      if (!r.ok) return;
      msg.textContent = r.body.valid ? "" : "Template problem: " + r.body.error;
      if (r.body.valid) input.removeAttribute("aria-invalid"); else input.setAttribute("aria-invalid", "true");
    });
  }
  // A text input that takes templates: the "Insert data" button and the check on blur.
  function templated(input, loc, bare) {
    var wrap = el("div", {className: "pf-templated"});
    var row = el("div", {className: "pf-templated-row"}, [input]);
    wrap.appendChild(row);
    remember(input);
    if (canEdit) {
      row.appendChild(el("button", {type: "button", className: "pf-button pf-small pf-insert-data",
        "aria-label": "Insert data into " + (input.getAttribute("aria-label") || "this field"),
        onclick: function () { openPicker(input, loc, bare, wrap); }}, ["Insert data"]));
      input.addEventListener("blur", function () { checkTemplate(input, loc, bare); });
    }
    wrap.appendChild(el("p", {className: "pf-inline-check pf-error", "aria-live": "polite"}));
    return wrap;
  }

  // -- inputs generated from the schema -------------------------------------------
  function textInput(value, attrs, long) {
    var input = el(long ? "textarea" : "input", Object.assign({type: long ? null : "text", rows: long ? 3 : null, disabled: !canEdit}, attrs));
    input.value = value === undefined || value === null ? "" : (typeof value === "string" ? value : JSON.stringify(value));
    return input;
  }
  function setConfig(step, name, value) {
    if (value === undefined) delete step.config[name]; else step.config[name] = value;
  }
  function mapEditor(step, loc, name, value, path, labelText) {
    var box = el("div", {className: "pf-map", "data-path": path});
    var rows = isPlainObject(value) ? Object.keys(value).map(function (k) { return [k, value[k]]; }) : [];
    function sync() {
      var obj = {};
      rows.forEach(function (r) { if (r[0] !== "") obj[r[0]] = r[1]; });
      setConfig(step, name, rows.length ? obj : undefined);
    }
    function draw() {
      box.replaceChildren();
      rows.forEach(function (r, i) {
        var k = textInput(r[0], {"aria-label": labelText + " " + (i + 1) + " name", className: "pf-map-key", "data-path": path + "." + r[0]});
        k.addEventListener("input", function () { r[0] = k.value; sync(); });
        var v = textInput(typeof r[1] === "string" ? r[1] : JSON.stringify(r[1]), {"aria-label": labelText + " " + (i + 1) + " value", className: "pf-map-value"});
        v.addEventListener("input", function () { r[1] = v.value; sync(); });
        var line = el("div", {className: "pf-map-row"}, [k, templated(v, loc, false)]);
        if (canEdit) line.appendChild(el("button", {type: "button", className: "pf-button pf-small", "aria-label": "Remove " + labelText + " " + (i + 1),
          onclick: function () { rows.splice(i, 1); sync(); draw(); }}, ["Remove"]));
        box.appendChild(line);
      });
      if (canEdit) box.appendChild(el("button", {type: "button", className: "pf-button pf-small pf-map-add",
        onclick: function () { rows.push(["", ""]); draw(); box.querySelectorAll(".pf-map-key")[rows.length - 1].focus(); }}, ["Add " + labelText.toLowerCase() + " field"]));
    }
    draw();
    return box;
  }
  function listEditor(step, loc, name, value, path, labelText, itemType) {
    var box = el("div", {className: "pf-list", "data-path": path});
    var items = Array.isArray(value) ? value.slice() : [];
    function coerce(v) {
      if ((itemType === "integer" || itemType === "number") && v.trim() !== "" && !isNaN(Number(v))) return Number(v);
      return v;
    }
    function sync() { setConfig(step, name, items.length ? items.map(function (v) { return typeof v === "string" ? coerce(v) : v; }) : undefined); }
    function draw() {
      box.replaceChildren();
      items.forEach(function (item, i) {
        var input = textInput(item, {"aria-label": labelText + " item " + (i + 1), "data-path": path + "[" + i + "]"});
        input.addEventListener("input", function () { items[i] = input.value; sync(); });
        var line = el("div", {className: "pf-map-row"}, [itemType === "string" || !itemType ? templated(input, loc, false) : input]);
        if (canEdit) line.appendChild(el("button", {type: "button", className: "pf-button pf-small", "aria-label": "Remove item " + (i + 1),
          onclick: function () { items.splice(i, 1); sync(); draw(); }}, ["Remove"]));
        box.appendChild(line);
      });
      if (canEdit) box.appendChild(el("button", {type: "button", className: "pf-button pf-small",
        onclick: function () { items.push(""); draw(); var all = box.querySelectorAll("input"); all[all.length - 1].focus(); }}, ["Add item"]));
    }
    draw();
    return box;
  }
  function jsonEditor(step, name, value, id, path) {
    var area = textInput(value === undefined ? "" : JSON.stringify(value, null, 2), {id: id, "data-path": path, className: "pf-code", spellcheck: "false"}, true);
    var msg = el("p", {className: "pf-error"});
    area.addEventListener("input", function () {
      if (!area.value.trim()) { setConfig(step, name, undefined); msg.textContent = ""; return; }
      try { setConfig(step, name, JSON.parse(area.value)); msg.textContent = ""; }
      catch (e) { msg.textContent = "Not valid JSON yet: " + e.message; }
    });
    return el("div", {}, [area, msg]);
  }
  function anyField(step, loc, name, value, id, path, labelText) {
    // "Any JSON value": a set of named fields (the usual case), one text template, or raw JSON.
    var mode = step.anyModes[name] || (value === undefined || isPlainObject(value) && Object.keys(value).every(function (k) { return typeof value[k] !== "object" || value[k] === null; })
      ? "fields" : (typeof value === "string" ? "text" : "json"));
    step.anyModes[name] = mode;
    var holder = el("div", {className: "pf-any"});
    var select = el("select", {"aria-label": labelText + ": how to enter it", className: "pf-any-mode", disabled: !canEdit,
      onchange: function () { step.anyModes[name] = select.value; redrawStep(step); }},
    [["fields", "Named fields"], ["text", "Text"], ["json", "JSON"]].map(function (o) {
      return el("option", {value: o[0], selected: mode === o[0]}, [o[1]]);
    }));
    holder.appendChild(select);
    if (mode === "fields") holder.appendChild(mapEditor(step, loc, name, isPlainObject(value) ? value : {}, path, labelText));
    else if (mode === "text") {
      var input = textInput(typeof value === "string" ? value : "", {id: id, "data-path": path}, true);
      input.addEventListener("input", function () { setConfig(step, name, input.value === "" ? undefined : input.value); });
      holder.appendChild(templated(input, loc, false));
    } else holder.appendChild(jsonEditor(step, name, value, id, path));
    return holder;
  }
  function configField(step, loc, name, p, required) {
    var kind = fieldKind(step.action_type, name, p);
    var id = nextId("pf-f");
    var path = loc.path + ".config." + name;
    var labelText = LABELS[name] || name.replace(/_/g, " ").replace(/^./, function (c) { return c.toUpperCase(); });
    var label = el("label", {"for": id}, [labelText]);
    if (required) { label.appendChild(el("span", {className: "pf-req", "aria-hidden": "true"}, [" *"])); label.appendChild(el("span", {className: "pf-visually-hidden"}, [" (required)"])); }
    var value = step.config[name];
    var help = p.description ? el("p", {className: "pf-help", id: id + "-help"}, [p.description]) : null;
    var control;
    if (kind === "enum") {
      control = el("select", {id: id, "data-path": path, disabled: !canEdit, "aria-describedby": help ? id + "-help" : null,
        onchange: function () { setConfig(step, name, control.value === "" ? undefined : control.value); }});
      if (!required) control.appendChild(el("option", {value: ""}, [p.default !== undefined ? "Default (" + p.default + ")" : "—"]));
      p.enum.forEach(function (v) { control.appendChild(el("option", {value: v, selected: value === v}, [String(v)])); });
    } else if (kind === "expr" && CONDITION_FIELDS[name] && window.PotaflowConditions) {
      // The condition builder (condition_builder.js): field, operator, value; or the expression itself.
      // Only for conditions: a loop's items is an expression giving a list, typed with the data picker.
      control = el("div", {className: "pf-cond-field-wrap", "data-path": path});
      window.PotaflowConditions.mount(control, {expression: value, disabled: !canEdit, label: labelText, dataPath: path,
        fields: function () { return flatFields(loc); },
        onChange: function (expr) { setConfig(step, name, expr === "" && !required ? undefined : expr); }});
    } else if (kind === "text" || kind === "expr") {
      var input = textInput(value, {id: id, "data-path": path, "aria-describedby": help ? id + "-help" : null, required: required,
        placeholder: kind === "expr" ? (name === "items" ? "e.g. trigger.body.lines" : "e.g. trigger.body.amount > 100") : null}, !!LONG_TEXT[name] && kind !== "expr");
      input.addEventListener("input", function () { setConfig(step, name, input.value === "" && !required ? undefined : input.value); });
      control = templated(input, loc, kind === "expr");
    } else if (kind === "number") {
      control = el("input", {type: "number", id: id, "data-path": path, step: "any", disabled: !canEdit, "aria-describedby": help ? id + "-help" : null});
      control.value = value === undefined ? "" : value;
      control.addEventListener("input", function () { setConfig(step, name, control.value === "" ? undefined : Number(control.value)); });
    } else if (kind === "bool") {
      control = el("select", {id: id, "data-path": path, disabled: !canEdit,
        onchange: function () { setConfig(step, name, control.value === "" ? undefined : control.value === "true"); }},
      [el("option", {value: ""}, [p.default !== undefined ? "Default (" + (p.default ? "yes" : "no") + ")" : "—"]),
        el("option", {value: "true", selected: value === true}, ["Yes"]), el("option", {value: "false", selected: value === false}, ["No"])]);
    } else if (kind === "map") {
      label = el("span", {className: "pf-label", id: id}, [label.textContent]);
      control = mapEditor(step, loc, name, value, path, labelText);
    } else if (kind === "list") {
      label = el("span", {className: "pf-label", id: id}, [label.textContent]);
      control = listEditor(step, loc, name, value, path, labelText, typesOf(p.items)[0]);
    } else if (kind === "any") {
      control = anyField(step, loc, name, value, id, path, labelText);
    } else {
      control = jsonEditor(step, name, value, id, path);
    }
    return el("div", {className: "pf-field pf-field-" + kind, "data-field": name}, [label, help, control,
      el("p", {className: "pf-field-error pf-error", "data-error-for": path, role: "alert"})]);
  }
  function credentialField(step, loc, action) {
    var kinds = action.credential_kind ? [].concat(action.credential_kind) : [];
    if (!kinds.length) return null;
    var id = nextId("pf-cred");
    var path = loc.path + ".credential";
    var options = data.credentials.filter(function (c) { return kinds.indexOf(c.kind) >= 0; });
    var select = el("select", {id: id, "data-path": path, disabled: !canEdit,
      onchange: function () { step.credential = select.value ? Number(select.value) : null; }},
    [el("option", {value: ""}, [action.credential_required ? "Choose a credential" : "No credential"])].concat(options.map(function (c) {
      return el("option", {value: String(c.id), selected: step.credential === c.id}, [c.name + " (" + c.kind + ")"]);
    })));
    var label = el("label", {"for": id}, ["Credential"]);
    if (action.credential_required) { label.appendChild(el("span", {className: "pf-req", "aria-hidden": "true"}, [" *"])); label.appendChild(el("span", {className: "pf-visually-hidden"}, [" (required)"])); }
    return el("div", {className: "pf-field"}, [label,
      el("p", {className: "pf-help"}, [options.length ? "Only credentials of kind " + kinds.join(" or ") + " are listed." :
        "No " + kinds.join(" or ") + " credential in this organization yet: an admin of the organization adds one under Credentials."]),
      select, el("p", {className: "pf-field-error pf-error", "data-error-for": path, role: "alert"})]);
  }
  function advanced(step, loc) {
    var d = el("details", {className: "pf-advanced"}, [el("summary", {}, ["Advanced: retries, timeout, unknown outcomes, continue on error"])]);
    var grid = el("div", {className: "pf-advanced-grid"});
    [["max_retries", "Retries after a failure", "1"], ["backoff_seconds", "First wait between retries (s)", "any"],
      ["backoff_max_seconds", "Longest wait (s)", "any"], ["timeout_seconds", "Timeout per attempt (s)", "any"]].forEach(function (f) {
      var id = nextId("pf-adv");
      var lim = data.step_limits[f[0]];
      var input = el("input", {type: "number", id: id, step: f[2], min: lim[0], max: lim[1], disabled: !canEdit,
        "data-path": loc.path + "." + f[0], placeholder: String(data.step_defaults[f[0]])});
      input.value = step[f[0]] === undefined || step[f[0]] === null ? "" : step[f[0]];
      input.addEventListener("input", function () { step[f[0]] = input.value; });
      grid.appendChild(el("div", {className: "pf-field"}, [el("label", {"for": id}, [f[1]]), input,
        el("p", {className: "pf-field-error pf-error", "data-error-for": loc.path + "." + f[0], role: "alert"})]));
    });
    var id = nextId("pf-adv");
    var sel = el("select", {id: id, disabled: !canEdit, "data-path": loc.path + ".on_in_doubt",
      onchange: function () { step.on_in_doubt = sel.value; }}, data.in_doubt_choices.map(function (c) {
      return el("option", {value: c[0], selected: (step.on_in_doubt || "") === c[0]}, [c[1]]);
    }));
    grid.appendChild(el("div", {className: "pf-field"}, [el("label", {"for": id}, ["If a worker dies mid-call"]), sel]));
    var coeId = nextId("pf-coe");
    grid.appendChild(el("div", {className: "pf-field"}, [el("label", {"for": coeId, className: "pf-check"}, [
      el("input", {type: "checkbox", id: coeId, className: "pf-continue-on-error", checked: !!step.continue_on_error, disabled: !canEdit,
        "data-path": loc.path + ".continue_on_error", onchange: function (e) { step.continue_on_error = e.target.checked; flowSoon(); }}),
      " Continue the run when this step fails for good"])]));
    if (step.continue_on_error) d.open = true;
    d.appendChild(grid);
    return d;
  }

  // -- step cards (the form editor) ------------------------------------------------
  function actionOf(type) {
    return data.actions[type] || CONTROL_ACTIONS[type] || {title: type, config_schema: {}};
  }
  function focusCard(step, selector) {
    var card = document.getElementById("pf-card-" + step.uid);
    if (!card) return;
    // Keep the focus on the button that was used; at the top or bottom, on the one that still moves.
    var target = card.querySelector(selector || ".pf-step-title");
    if ((!target || target.disabled) && (selector === ".pf-up" || selector === ".pf-down")) target = card.querySelector(selector === ".pf-up" ? ".pf-down" : ".pf-up");
    if (!target || target.disabled) target = card.querySelector(".pf-step-title");
    target.focus();
  }
  function moveWithin(step, delta, focusSelector) {
    var loc = locate(step);
    var to = loc.index + delta;
    if (to < 0 || to >= loc.list.length) return false;
    loc.list.splice(loc.index, 1);
    loc.list.splice(to, 0, step);
    var problem = orderProblem();
    if (problem) {  // put it back and say why
      loc.list.splice(to, 1);
      loc.list.splice(loc.index, 0, step);
      status("Cannot move " + step.key + " there: " + problem + ".");
      return false;
    }
    changed("Moved " + step.key + " " + (delta < 0 ? "up" : "down") + ".");
    if (focusSelector) focusCard(step, focusSelector);
    return true;
  }
  var undoStack = [];
  function removeStep(step) {
    var loc = locate(step);
    loc.list.splice(loc.index, 1);
    undoStack.push({step: step, list: loc.list, index: loc.index});
    changed("Deleted " + step.key + ".");
    showUndo(step.key);
  }
  function showUndo(key) {
    var bar = document.getElementById("pf-undo");
    bar.replaceChildren(el("span", {}, ["Deleted " + key + ". "]), el("button", {type: "button", className: "pf-button pf-small", id: "pf-undo-button",
      onclick: function () {
        var last = undoStack.pop();
        if (!last) return;
        last.list.splice(Math.min(last.index, last.list.length), 0, last.step);
        bar.hidden = true;
        changed("Restored " + last.step.key + ".");
        var box = document.querySelector('#pf-flow [data-step-key="' + CSS.escape(last.step.key) + '"] .pf-node-main');
        if (box && mode === "flow") box.focus(); else focusCard(last.step);
      }}, ["Undo"]));
    bar.hidden = false;
    var undoButton = document.getElementById("pf-undo-button");
    if (mode !== "flow") undoButton.focus();
  }
  function addStep(list, index, type) {
    var s = fromSpec({key: newKey(type), action_type: type, config: defaultsFor(type)});
    list.splice(index, 0, s);
    changed("Added step " + s.key + ".");
    return s;
  }
  /* Actions first, then the flow control steps, each group in its own <optgroup>. */
  // The action picker's one order (common ones first, "custom" last), then any it does not list.
  function orderedNames(actions) {
    var first = window.PotaflowActions ? window.PotaflowActions.ordered().filter(function (n) { return actions[n]; }) : [];
    return first.concat(Object.keys(actions).filter(function (n) { return first.indexOf(n) < 0; }).sort());
  }
  function fillActions(select) {
    var actions = allActions();
    var names = orderedNames(actions);
    [["Actions", names.filter(function (n) { return !CONTROL_ACTIONS[n]; })],
      ["Flow control", names.filter(function (n) { return CONTROL_ACTIONS[n]; })]].forEach(function (group) {
      var optgroup = el("optgroup", {label: group[0]});
      group[1].forEach(function (name) { optgroup.appendChild(el("option", {value: name}, [(actions[name].title || name) + " (" + name + ")"])); });
      select.appendChild(optgroup);
    });
    return select;
  }
  function actionSelect(id, label) {
    return fillActions(el("select", {id: id, "aria-label": label || null}));
  }
  function allActions() {
    var out = {};
    Object.keys(CONTROL_ACTIONS).forEach(function (k) { out[k] = actionOf(k); });
    Object.keys(data.actions).forEach(function (k) { out[k] = data.actions[k]; });
    return out;
  }
  function nestedList(list, owner, slotLabel) {
    var box = el("div", {className: "pf-nested"});
    var ol = el("ol", {className: "pf-steps pf-steps-nested", "aria-label": slotLabel});
    var entry = allLists().filter(function (l) { return l.list === list; })[0];
    list.forEach(function (s, i) { ol.appendChild(stepCard(s, locFor(entry, i))); });
    if (!list.length) ol.appendChild(el("li", {className: "pf-empty pf-quiet"}, ["No steps here yet."]));
    box.appendChild(ol);
    if (canEdit) {
      var id = nextId("pf-add-in");
      var select = actionSelect(id);
      box.appendChild(el("div", {className: "pf-add-step pf-add-nested"}, [el("label", {"for": id}, ["New step in " + slotLabel]), select,
        el("button", {type: "button", className: "pf-button pf-small", "aria-label": "Add it to " + slotLabel, onclick: function () {
          var s = addStep(list, list.length, select.value);
          focusCard(s, ".pf-step-key");
        }}, ["Add"])]));
    }
    return box;
  }
  function pathsEditor(step, loc) {
    var c = step.config;
    if (!Array.isArray(c.paths)) c.paths = [];
    var box = el("div", {className: "pf-paths-editor", "data-path": loc.path + ".config.paths"});
    c.paths.forEach(function (p, i) {
      var base = loc.path + ".config.paths[" + i + "]";
      var fs = el("fieldset", {className: "pf-path-edit", "data-path-name": p.name}, [el("legend", {}, ["Path " + (i + 1) + ": " + (p.name || "(no name)")])]);
      var nameId = nextId("pf-pname");
      var name = textInput(p.name, {id: nameId, "data-path": base + ".name", className: "pf-path-name"});
      name.addEventListener("input", function () { p.name = name.value; flowSoon(); });
      fs.appendChild(el("div", {className: "pf-field"}, [el("label", {"for": nameId}, ["Name"]), name,
        el("p", {className: "pf-field-error pf-error", "data-error-for": base + ".name", role: "alert"})]));
      var whenId = nextId("pf-pwhen");
      var when = textInput(p.when, {id: whenId, "data-path": base + ".when", className: "pf-path-when-input", placeholder: "e.g. trigger.body.amount > 100"});
      when.addEventListener("input", function () { p.when = when.value; flowSoon(); });
      var whenField = el("div", {className: "pf-field"}, [el("label", {"for": whenId}, ["Take this path when"]), templated(when, loc, true),
        el("p", {className: "pf-field-error pf-error", "data-error-for": base + ".when", role: "alert"})]);
      if (canEdit && window.PotaflowConditions) {
        // The condition builder edits the same expression: the input stays as the expert's view of it.
        var whenBuilder = el("div", {className: "pf-when-builder", hidden: true});
        var whenToggle = el("button", {type: "button", className: "pf-button pf-small pf-when-toggle", "aria-expanded": "false",
          "aria-label": "Build the condition of path " + (p.name || i + 1), onclick: function () {
            var opening = whenBuilder.hidden;
            whenBuilder.hidden = !opening;
            whenToggle.setAttribute("aria-expanded", String(opening));
            if (!opening) return;
            whenBuilder.replaceChildren();
            window.PotaflowConditions.mount(whenBuilder, {expression: when.value, label: "Take this path when", dataPath: base + ".when",
              fields: function () { return flatFields(loc); },
              onChange: function (expr) { when.value = expr; p.when = expr; flowSoon(); }});
          }}, ["Condition builder"]);
        whenField.appendChild(whenToggle);
        whenField.appendChild(whenBuilder);
      }
      fs.appendChild(whenField);
      if (canEdit) fs.appendChild(el("button", {type: "button", className: "pf-button pf-small pf-danger", "aria-label": "Remove path " + (p.name || i + 1),
        onclick: function () { c.paths.splice(i, 1); changed("Removed path " + p.name + " (and its steps)."); }}, ["Remove path"]));
      fs.appendChild(loc.shallow ? shallowNote(p.steps) : nestedList(p.steps, step, "path " + (p.name || i + 1)));
      box.appendChild(fs);
    });
    if (canEdit) box.appendChild(el("button", {type: "button", className: "pf-button pf-small pf-add-path-form", onclick: function () {
      addPath(step);
    }}, ["+ path"]));
    var hasOtherwise = Array.isArray(c.otherwise);
    var oid = nextId("pf-other");
    box.appendChild(el("label", {"for": oid, className: "pf-check"}, [el("input", {type: "checkbox", id: oid, checked: hasOtherwise, disabled: !canEdit,
      onchange: function (e) { if (e.target.checked) c.otherwise = c.otherwise || []; else delete c.otherwise; changed(e.target.checked ? "Added the otherwise path." : "Removed the otherwise path."); }}),
      " An “otherwise” path (when no condition holds)"]));
    if (hasOtherwise) box.appendChild(el("fieldset", {className: "pf-path-edit"}, [el("legend", {}, ["Otherwise"]), loc.shallow ? shallowNote(c.otherwise) : nestedList(c.otherwise, step, "the otherwise path")]));
    return box;
  }
  function shallowNote(list) {
    return el("p", {className: "pf-quiet pf-small-text"}, [list.length ? list.length + " step(s): " + list.map(function (s) { return s.key; }).join(", ") + " — edit them on the flow." : "No steps yet: add them with + on the flow."]);
  }
  function addPath(step) {
    var c = step.config;
    if (!Array.isArray(c.paths)) c.paths = [];
    var names = c.paths.map(function (p) { return p.name; });
    var n = c.paths.length + 1, name = "path_" + n;
    while (names.indexOf(name) >= 0) { n += 1; name = "path_" + n; }
    c.paths.push({name: name, when: "", steps: []});
    changed("Added path " + name + " to " + step.key + ": give it a condition.");
    return name;
  }
  function stepCard(step, loc) {
    var action = actionOf(step.action_type);
    var index = loc.index;
    var card = el("li", {className: "pf-card pf-step", id: "pf-card-" + step.uid, "data-key": step.key, "data-index": String(index)});
    var keyId = nextId("pf-key");
    var head = el("div", {className: "pf-step-head"});
    if (canEdit) {
      // Only the handle drags (inputs inside a draggable card could not select text); keyboard: Up/Down.
      var handle = el("span", {className: "pf-drag", title: "Drag to reorder (or use Up/Down)", "aria-hidden": "true", draggable: "true"}, ["⠿"]);
      handle.addEventListener("dragstart", function (e) {
        e.stopPropagation(); e.dataTransfer.setData("text/plain", "card:" + step.uid); e.dataTransfer.effectAllowed = "move"; card.classList.add("pf-dragging");
      });
      // The move happens once the drag has ended: redrawing during "drop" would remove the
      // element being dragged before the browser has finished with it.
      handle.addEventListener("dragend", function () {
        card.classList.remove("pf-dragging");
        var move = pendingMove;
        pendingMove = null;
        if (move && move[0] === step) moveWithin(step, move[1] - locate(step).index, ".pf-step-title");
      });
      head.appendChild(handle);
    }
    var where = loc.ancestors.length ? loc.ancestors.map(function (a) { return a.step.key; }).join(" › ") + " › " : (loc.errorPath ? "If the run fails › " : "");
    head.appendChild(el("h3", {className: "pf-step-title", tabindex: "-1"}, [
      el("span", {className: "pf-step-num"}, [where + "Step " + (index + 1)]), " ", action.title || step.action_type]));
    var keyInput = el("input", {id: keyId, className: "pf-step-key", type: "text", "data-path": loc.path + ".key", disabled: !canEdit,
      "aria-describedby": keyId + "-help"});
    keyInput.value = step.key;
    keyInput.addEventListener("input", function () { step.key = keyInput.value; card.dataset.key = step.key; flowSoon(); });
    head.appendChild(el("div", {className: "pf-field pf-key-field"}, [el("label", {"for": keyId}, ["Key"]), keyInput]));
    if (canEdit) {
      var tools = el("div", {className: "pf-step-tools", role: "group", "aria-label": "Step " + step.key + " tools"});
      var named = loc.ancestors.length || loc.errorPath ? step.key : String(index + 1);  // top level: by position, as numbered
      tools.appendChild(el("button", {type: "button", className: "pf-button pf-small pf-up", disabled: index === 0,
        "aria-label": "Move step " + named + " up", onclick: function () { moveWithin(step, -1, ".pf-up"); }}, ["↑ Up"]));
      tools.appendChild(el("button", {type: "button", className: "pf-button pf-small pf-down", disabled: index === loc.list.length - 1,
        "aria-label": "Move step " + named + " down", onclick: function () { moveWithin(step, 1, ".pf-down"); }}, ["↓ Down"]));
      tools.appendChild(el("button", {type: "button", className: "pf-button pf-small pf-duplicate",
        "aria-label": "Duplicate step " + named, onclick: function () {
          var copy = fromSpec(toSpec(step));
          renameAll(copy);
          loc.list.splice(loc.list.indexOf(step) + 1, 0, copy);
          changed("Duplicated " + step.key + " as " + copy.key + ".");
          focusCard(copy, ".pf-step-key");
        }}, ["Duplicate"]));
      tools.appendChild(el("button", {type: "button", className: "pf-button pf-small pf-danger pf-remove",
        "aria-label": "Remove step " + named, onclick: function () { removeStep(step); }}, ["Remove"]));
      head.appendChild(tools);
    }
    card.appendChild(head);
    card.appendChild(el("p", {className: "pf-field-error pf-error", "data-error-for": loc.path, role: "alert"}));
    if (action.description) card.appendChild(el("p", {className: "pf-help"}, [action.description]));
    var body = el("div", {className: "pf-step-body"});
    var structural = {branch: {paths: 1, otherwise: 1}, for_each: {steps: 1}}[step.action_type] || {};
    var rawToggle = el("button", {type: "button", className: "pf-linkbutton pf-raw-toggle", "aria-pressed": step.raw ? "true" : "false",
      onclick: function () {
        if (step.raw) {
          var area = card.querySelector(".pf-raw");
          try { setRawConfig(step, JSON.parse(area.value || "{}")); } catch (e) {
            card.querySelector(".pf-raw-error").textContent = "Fix the JSON before leaving raw mode: " + e.message; return;
          }
        }
        step.raw = !step.raw; step.anyModes = {}; redrawStep(step);
        card = document.getElementById("pf-card-" + step.uid);
        card.querySelector(".pf-raw-toggle").focus();
      }}, [step.raw ? "Back to the form" : "Edit as JSON"]);
    if (canEdit) body.appendChild(rawToggle);  // a viewer sees no control that edits
    if (step.raw) {
      var rawId = nextId("pf-raw");
      var area = el("textarea", {id: rawId, className: "pf-raw pf-code", rows: 10, spellcheck: "false", disabled: !canEdit, "data-path": loc.path + ".config"});
      area.value = JSON.stringify(toSpec(step).config, null, 2);
      area.addEventListener("input", function () {
        try { setRawConfig(step, JSON.parse(area.value || "{}")); card.querySelector(".pf-raw-error").textContent = ""; }
        catch (e) { card.querySelector(".pf-raw-error").textContent = "Not valid JSON yet: " + e.message; }
      });
      body.appendChild(el("label", {"for": rawId}, ["Config (JSON)"]));
      body.appendChild(area);
      body.appendChild(el("p", {className: "pf-raw-error pf-error", role: "alert"}));
    } else {
      var schema = action.config_schema || {};
      var props = schema.properties || {};
      var required = schema.required || [];
      // The fields most steps need are shown; the rest wait under "More options" (opened when one is set).
      var more = el("details", {className: "pf-more"});
      var moreNames = [];
      Object.keys(props).forEach(function (name, i) {
        if (structural[name]) return;
        var p = props[name];
        var kind = fieldKind(step.action_type, name, p);
        var isRequired = required.indexOf(name) >= 0;
        var primary = isRequired || step.config[name] !== undefined || i === 0 || kind === "any" || kind === "expr" ||
          (kind === "text" && p.default === undefined) || PotaFlowView.CONTROL[step.action_type];
        var node = configField(step, loc, name, p, isRequired);
        if (primary) body.appendChild(node); else { more.appendChild(node); moreNames.push(name.replace(/_/g, " ")); }
      });
      if (moreNames.length) {
        more.insertBefore(el("summary", {}, ["More options: " + moreNames.join(", ")]), more.firstChild);
        body.appendChild(more);
      }
      if (schema.anyOf) body.appendChild(el("p", {className: "pf-help"}, ["Needs one of: " + schema.anyOf.map(function (a) { return (a.required || []).join(" + "); }).join(" or ") + "."]));
      var unknown = Object.keys(step.config).filter(function (k) { return !props[k] && !structural[k]; });
      if (unknown.length) body.appendChild(el("p", {className: "pf-note"}, ["Also set (edit as JSON to change): " + unknown.join(", ")]));
      if (step.action_type === "branch") body.appendChild(pathsEditor(step, loc));
      if (step.action_type === "for_each") body.appendChild(el("fieldset", {className: "pf-path-edit"}, [el("legend", {}, ["For each item, do"]),
        loc.shallow ? shallowNote(step.config.steps) : nestedList(step.config.steps, step, "the loop " + step.key)]));
    }
    body.appendChild(el("p", {className: "pf-field-error pf-error", "data-error-for": loc.path + ".config", role: "alert"}));
    var cred = credentialField(step, loc, action);
    if (cred) body.appendChild(cred);
    body.appendChild(advanced(step, loc));
    body.appendChild(el("div", {className: "pf-step-test", "aria-live": "polite"}));
    card.appendChild(body);
    if (canEdit) {
      card.addEventListener("dragover", function (e) { e.preventDefault(); e.stopPropagation(); card.classList.add("pf-drop-target"); });
      card.addEventListener("dragleave", function () { card.classList.remove("pf-drop-target"); });
      card.addEventListener("drop", function (e) {
        e.preventDefault(); e.stopPropagation(); card.classList.remove("pf-drop-target");
        var from = e.dataTransfer.getData("text/plain");
        var moved = everyStep().filter(function (s) { return "card:" + s.uid === from; })[0];
        if (moved && locate(moved).list === loc.list) pendingMove = [moved, loc.list.indexOf(step)];
      });
    }
    return card;
  }
  /* Raw JSON for a step's config: nested step specs become step objects again. */
  function setRawConfig(step, config) {
    step.config = config;
    childLists(step).forEach(function (c) { c.set(c.list.map(function (s) { return s && s.uid ? s : fromSpec(s); })); });
    flowSoon();
  }
  function renameAll(step) {
    step.key = newKey(step.key);
    descendants(step).forEach(function (s) { s.key = newKey(s.key); });
  }
  function renderSteps() {
    var list = document.getElementById("pf-steps");
    var errorBox = document.getElementById("pf-error-path-form");
    if (mode !== "form") { list.replaceChildren(); errorBox.replaceChildren(); return; }
    var entry = allLists()[0];
    list.replaceChildren.apply(list, steps.map(function (s, i) { return stepCard(s, locFor(entry, i)); }));
    if (!steps.length) list.appendChild(el("li", {className: "pf-empty pf-quiet"}, ["No steps yet." + (canEdit ? " Add one below." : "")]));
    errorBox.replaceChildren(nestedList(onFailure, null, "the error path"));
  }
  function redrawStep(step) {
    var old = document.getElementById("pf-card-" + step.uid);
    if (old) old.replaceWith(stepCard(step, locate(step)));
  }

  // -- trigger card ------------------------------------------------------------------
  function renderTrigger() {
    var body = document.getElementById("pf-trigger-body");
    body.replaceChildren();
    var fs = el("fieldset", {className: "pf-radios", "data-path": "trigger_type"}, [el("legend", {}, ["Trigger"])]);
    [["webhook", "A web request arrives (webhook)"], ["schedule", "On a schedule"], ["manual", "Someone presses Run now (manual)"]].forEach(function (t) {
      var id = "pf-trigger-" + t[0];
      var radio = el("input", {type: "radio", name: "pf-trigger-type", id: id, value: t[0], checked: wf.trigger_type === t[0], disabled: !canEdit,
        onchange: function () { wf.trigger_type = t[0]; renderTrigger(); document.getElementById(id).focus(); }});
      fs.appendChild(el("label", {"for": id, className: "pf-radio"}, [radio, " " + t[1]]));
    });
    body.appendChild(fs);
    body.appendChild(el("p", {className: "pf-field-error pf-error", "data-error-for": "trigger_type", role: "alert"}));
    if (wf.trigger_type === "webhook") body.appendChild(webhookSection());
    else if (wf.trigger_type === "schedule") body.appendChild(scheduleSection());
    else body.appendChild(manualSection());
  }
  function field(labelText, control, path, help) {
    var id = control.id || nextId("pf-t");
    control.id = id;
    if (path) control.setAttribute("data-path", path);
    return el("div", {className: "pf-field"}, [el("label", {"for": id}, [labelText]), help ? el("p", {className: "pf-help"}, [help]) : null, control,
      el("p", {className: "pf-field-error pf-error", "data-error-for": path || "", role: "alert"})]);
  }
  function webhookSection() {
    var box = el("div", {className: "pf-webhook"});
    if (wf.webhook_url) {
      var url = el("input", {type: "text", readonly: true, id: "pf-webhook-url", className: "pf-code"});
      url.value = wf.webhook_url;
      var copyNote = el("span", {id: "pf-copy-status", "aria-live": "polite", className: "pf-quiet"});
      var row = el("div", {className: "pf-templated-row"}, [url,
        el("button", {type: "button", className: "pf-button pf-small", id: "pf-copy-webhook", onclick: function () {
          url.select();
          var done = function () { copyNote.textContent = "Copied."; };
          if (navigator.clipboard) navigator.clipboard.writeText(url.value).then(done, function () { document.execCommand("copy"); done(); });
          else { document.execCommand("copy"); done(); }
        }}, ["Copy"])]);
      if (canEdit) row.appendChild(el("button", {type: "button", className: "pf-button pf-small", id: "pf-rotate", onclick: function () {
        if (!root.dataset.rotateArmed) { root.dataset.rotateArmed = "1"; this.textContent = "Really rotate? The old URL stops at once"; return; }
        delete root.dataset.rotateArmed;
        api("POST", data.urls.rotate).then(function (r) {
          if (r.ok) { wf.webhook_url = r.body.webhook_url; wf.version = r.body.version; renderTrigger(); showVersion(); status("New webhook URL: the old one no longer works."); }
          else status("Could not rotate: " + (r.body && r.body.detail));
        });
      }}, ["Rotate URL"]));
      box.appendChild(el("div", {className: "pf-field"}, [el("label", {"for": "pf-webhook-url"}, ["Webhook URL"]), row, copyNote,
        el("p", {className: "pf-help"}, ["POST JSON, a form or any body here. Templates see trigger.body, trigger.headers, trigger.query."])]));
    } else if (wf.id) {
      box.appendChild(el("p", {className: "pf-help", id: "pf-webhook-hidden"}, ["Only editors see the webhook URL: it lets whoever holds it start runs."]));
    } else {
      box.appendChild(el("p", {className: "pf-help"}, ["The webhook URL appears once the workflow is saved."]));
    }
    var signing = el("details", {className: "pf-advanced", open: !!wf.has_webhook_secret}, [el("summary", {}, ["Signing " + (wf.has_webhook_secret ? "(on: requests must be signed)" : "(off)")])]);
    var scheme = el("select", {disabled: !canEdit, onchange: function () { wf.signature_scheme = scheme.value; renderTrigger(); }},
      data.signature_schemes.map(function (s) { return el("option", {value: s[0], selected: wf.signature_scheme === s[0]}, [s[1]]); }));
    signing.appendChild(field("Signature scheme", scheme, "signature_scheme"));
    [["webhook_secret", "Secret", wf.has_webhook_secret], ["webhook_secret_previous", "Previous secret (accepted during rotation)", wf.has_webhook_secret_previous]].forEach(function (f) {
      var input = el("input", {type: "password", autocomplete: "new-password", disabled: !canEdit,
        placeholder: f[2] ? "set — type a new one to replace it" : "not set"});
      input.value = secrets[f[0]] || "";
      input.addEventListener("input", function () { secrets[f[0]] = input.value; });
      var wrap = field(f[1], input, f[0], "At least 16 characters; never shown again.");
      if (f[2] && canEdit) {
        var clearId = nextId("pf-clear");
        wrap.appendChild(el("label", {"for": clearId, className: "pf-check"}, [el("input", {type: "checkbox", id: clearId,
          onchange: function (e) { secrets[f[0]] = e.target.checked ? "" : null; input.disabled = e.target.checked; }}), " Remove it"]));
      }
      signing.appendChild(wrap);
    });
    if (wf.signature_scheme === "hmac") {
      [["hmac_header", "Signature header", "text"], ["hmac_prefix", "Prefix before the digest", "text"]].forEach(function (f) {
        var input = el("input", {type: "text", disabled: !canEdit});
        input.value = wf[f[0]] || "";
        input.addEventListener("input", function () { wf[f[0]] = input.value; });
        signing.appendChild(field(f[1], input, f[0]));
      });
      [["hmac_algorithm", "Algorithm", ["sha256", "sha1"]], ["hmac_encoding", "Encoding", ["hex", "base64"]]].forEach(function (f) {
        var sel = el("select", {disabled: !canEdit, onchange: function () { wf[f[0]] = sel.value; }},
          f[2].map(function (v) { return el("option", {value: v, selected: wf[f[0]] === v}, [v]); }));
        signing.appendChild(field(f[1], sel, f[0]));
      });
    }
    box.appendChild(signing);
    return box;
  }
  function scheduleSection() {
    var box = el("div", {className: "pf-schedule"});
    var cron = el("input", {type: "text", id: "pf-cron", className: "pf-code", disabled: !canEdit, placeholder: "*/15 * * * *"});
    cron.value = wf.schedule || "";
    var tz = el("input", {type: "text", id: "pf-tz", disabled: !canEdit, placeholder: "Europe/Paris"});
    tz.value = wf.timezone || "UTC";
    var out = el("div", {className: "pf-cron-preview", id: "pf-cron-preview", "aria-live": "polite"});
    var timer = null;
    function refresh() {
      wf.schedule = cron.value; wf.timezone = tz.value;
      clearTimeout(timer);
      timer = setTimeout(function () {
        if (!cron.value.trim()) { out.replaceChildren(); return; }
        fetch(data.urls.schedule_preview + "?cron=" + encodeURIComponent(cron.value) + "&tz=" + encodeURIComponent(tz.value), {credentials: "same-origin"})
          .then(function (r) { return r.json(); }).then(function (p) {
            if (!p.valid) { out.replaceChildren(el("p", {className: "pf-error"}, [p.error])); return; }
            out.replaceChildren(el("p", {}, [el("strong", {className: "pf-cron-description"}, [p.description])]),
              el("p", {}, ["Next firings:"]), el("ul", {}, p.next.map(function (t) { return el("li", {}, [t]); })));
          });
      }, 250);
    }
    cron.addEventListener("input", refresh);
    tz.addEventListener("input", refresh);
    box.appendChild(field("Cron expression (minute hour day month weekday)", cron, "schedule"));
    box.appendChild(field("Time zone", tz, "timezone"));
    box.appendChild(out);
    refresh();
    return box;
  }
  function manualSection() {
    var box = el("div", {}, [el("p", {className: "pf-help"}, ["Runs when someone presses Run now here, in the admin, or calls POST /api/workflows/<id>/run/. The sample body (on the right) is its trigger body."])]);
    if (canEdit && data.urls.run) {
      box.appendChild(el("button", {type: "button", className: "pf-button", id: "pf-run-now", onclick: function () {
        var payload = samplePayload();
        if (payload === undefined) { document.getElementById("pf-sample-error").textContent = "The sample body is not valid JSON."; return; }
        api("POST", data.urls.run, {payload: payload}).then(function (r) {
          if (r.ok) window.location.href = data.urls.run_page.replace("00000000-0000-0000-0000-000000000000", r.body.run_id);
          else status("Could not start: " + (r.body && r.body.detail));
        });
      }}, ["Run now with the sample body"]));
    }
    return box;
  }

  // -- saving and errors -------------------------------------------------------------
  function flatten(errors, prefix, out) {
    Object.keys(errors || {}).forEach(function (k) {
      var v = errors[k];
      var path = prefix ? prefix + "." + k : k;
      if (Array.isArray(v) && v.length && typeof v[0] === "object" && v[0] !== null) {
        v.forEach(function (item, i) { flatten(item, (prefix ? prefix + "." : "") + k + "[" + i + "]", out); });
      } else if (isPlainObject(v)) flatten(v, path, out);
      else out[path] = [].concat(v);
    });
    return out;
  }
  function clearErrors() {
    document.querySelectorAll(".pf-field-error").forEach(function (p) { p.textContent = ""; });
    document.querySelectorAll("[aria-invalid]").forEach(function (n) { n.removeAttribute("aria-invalid"); });
    var box = document.getElementById("pf-error-summary");
    box.hidden = true; box.replaceChildren();
  }
  /* The deepest step whose server path ("steps[1].config.paths[0].steps[2]") starts ``path``. */
  function stepAtPath(path) {
    var found = null, longest = -1;
    allLists().forEach(function (l) {
      l.list.forEach(function (step, i) {
        var p = l.path + "[" + i + "]";
        if ((path === p || path.indexOf(p + ".") === 0 || path.indexOf(p + "[") === 0) && p.length > longest) { found = step; longest = p.length; }
      });
    });
    return found;
  }
  function showErrors(errors) {
    var flat = flatten(errors, "", {});
    if (mode === "flow") {  // open the first step named in the side panel, mark every box named
      var named = Object.keys(flat).map(stepAtPath).filter(Boolean);
      if (named.length) { selected = named[0]; renderFlow(); renderPanel(); }
      named.forEach(function (step) {
        var box = document.querySelector('#pf-flow [data-step-key="' + CSS.escape(step.key) + '"]');
        if (box) box.classList.add("pf-node-invalid");
      });
    }
    var box = document.getElementById("pf-error-summary");
    var list = el("ul");
    Object.keys(flat).forEach(function (path) {
      var p = path, target = null, slot = null;
      while (p) {
        target = root.querySelector('[data-path="' + CSS.escape(p) + '"]');
        slot = root.querySelector('[data-error-for="' + CSS.escape(p) + '"]');
        if (target || slot) break;
        var cut = Math.max(p.lastIndexOf("."), p.lastIndexOf("["));
        p = cut > 0 ? p.slice(0, cut) : "";
      }
      if (!slot && target) slot = (target.closest(".pf-field") || target.parentNode).querySelector(".pf-field-error");
      if (slot) slot.textContent = (slot.textContent ? slot.textContent + " " : "") + flat[path].join(" ");
      if (target) {
        target.setAttribute("aria-invalid", "true");
        var details = target.closest("details");
        if (details) details.open = true;
      }
      var link = el("a", {href: "#", onclick: function (e) {
        e.preventDefault();
        var step = mode === "flow" ? stepAtPath(path) : null;
        if (step && step !== selected) { selectStep(step, false); }
        var now = document.querySelector('#pf-panel [data-path="' + CSS.escape(path) + '"]') || target;
        if (now) now.focus();
      }}, [path + ": " + flat[path].join(" ")]);
      list.appendChild(el("li", {}, [link]));
    });
    box.replaceChildren(el("p", {}, ["The workflow was not saved. Fix these:"]), list);
    box.hidden = false;
    box.focus();
  }
  function showVersion() {
    document.getElementById("pf-version").textContent = wf.id ? "Version " + wf.version : "Not saved yet";
  }
  function collect() {
    var body = {name: document.getElementById("pf-wf-name").value, description: document.getElementById("pf-wf-description").value,
      is_active: document.getElementById("pf-wf-active").checked, trigger_type: wf.trigger_type,
      notify_on_failure: document.getElementById("pf-wf-notify").checked,
      schedule: wf.trigger_type === "schedule" ? (wf.schedule || "") : (wf.schedule || ""), timezone: wf.timezone || "UTC",
      signature_scheme: wf.signature_scheme || "standard", steps: steps.map(toSpec), on_failure: onFailure.map(toSpec)};
    if (wf.trigger_type !== "schedule") body.schedule = "";
    ["hmac_header", "hmac_prefix", "hmac_algorithm", "hmac_encoding"].forEach(function (f) { if (wf[f] !== undefined) body[f] = wf[f]; });
    Object.keys(secrets).forEach(function (f) { if (secrets[f] !== null) body[f] = secrets[f]; });
    if (!wf.id) body.organization = data.organization;
    return body;
  }
  function save() {
    clearErrors();
    status("Saving…");
    var body = collect();
    var request = wf.id ? api("PATCH", data.urls.api_detail, body) : api("POST", data.urls.api_list, body);
    return request.then(function (r) {
      if (r.ok) {
        if (!wf.id) {
          // The sample typed before the first save comes along to the saved workflow's page.
          try { window.localStorage.setItem("pf-sample-" + r.body.id, document.getElementById("pf-sample").value); } catch (e) { /* private mode */ }
          window.location.href = data.urls.builder + r.body.id + "/?saved=1"; return;
        }
        var changed = r.body.version !== wf.version;
        wf = Object.assign(wf, r.body);
        secrets = {webhook_secret: null, webhook_secret_previous: null};
        showVersion();
        renderTrigger();
        status(changed ? "Saved as version " + wf.version + "." : "Saved (nothing changed, still version " + wf.version + ").");
        root.dataset.saved = String(wf.version);
      } else if (r.status === 400 && r.body && r.body.errors) {
        status("Not saved: " + r.body.detail);
        showErrors(r.body.errors);
      } else {
        status("Not saved: " + (r.body && r.body.detail ? r.body.detail : "HTTP " + r.status));
      }
    }).catch(function (e) { status("Not saved: " + e.message); });
  }

  // -- testing ---------------------------------------------------------------------------
  function kv(obj) {
    var dl = el("dl", {className: "pf-kv"});
    Object.keys(obj || {}).forEach(function (k) { dl.appendChild(el("dt", {}, [k])); dl.appendChild(el("dd", {}, [String(obj[k])])); });
    return dl;
  }
  // A step's preview, as its action's ``preview`` returns it (integrations.base.Action.preview):
  // ``request`` (one line), ``rows`` (label/value; an object value shows as rows of its own),
  // ``body`` (text), ``notes`` (what the real run would object to). Nothing here knows an action type.
  function previewValue(v) {
    if (v !== null && typeof v === "object" && !Array.isArray(v)) return kv(v);
    return typeof v === "string" ? v : JSON.stringify(v);
  }
  function wouldSend(ws) {
    var box = el("div", {className: "pf-would-send"});
    if (!ws) return box;
    box.appendChild(el("p", {className: "pf-would-head"}, ["Would send (nothing was sent):"]));
    var shown = false;
    if (ws.request) { box.appendChild(el("p", {className: "pf-code pf-would-request"}, [ws.request])); shown = true; }
    if (ws.rows && ws.rows.length) {
      var dl = el("dl", {className: "pf-kv pf-would-rows"});
      ws.rows.forEach(function (r) { dl.appendChild(el("dt", {}, [String(r.label)])); dl.appendChild(el("dd", {}, [previewValue(r.value)])); });
      box.appendChild(dl);
      shown = true;
    }
    if (ws.body !== null && ws.body !== undefined && ws.body !== "") { box.appendChild(el("pre", {className: "pf-would-body"}, [String(ws.body)])); shown = true; }
    (ws.notes || []).forEach(function (n) { box.appendChild(el("p", {className: "pf-error"}, [n])); });
    if (!shown) box.appendChild(el("pre", {}, [JSON.stringify(ws, null, 2)]));
    return box;
  }
  function runTest(sendStep) {
    var payload = samplePayload();
    var err = document.getElementById("pf-sample-error");
    if (payload === undefined) { err.textContent = "The sample body is not valid JSON."; return; }
    err.textContent = "";
    var testUrl = data.urls.test || data.urls.test_unsaved;  // a new workflow is tested unsaved
    var results = document.getElementById("pf-test-results");
    results.replaceChildren(el("p", {}, [sendStep ? "Sending " + sendStep + " for real…" : "Testing…"]));
    clearErrors();
    var body = {payload: payload, steps: steps.map(toSpec), on_failure: onFailure.map(toSpec)};
    if (!wf.id) body.organization = data.organization;
    if (sendStep) body.send_step = sendStep;
    // A test runs on a worker: a long one answers 202 with the URL to poll until it answers 200.
    function settled(r, polls) {
      if (r.status !== 202 || !r.body || !r.body.url || polls > 600) return r;
      return new Promise(function (resolve) { window.setTimeout(resolve, 1000); }).then(function () {
        return api("GET", r.body.url).then(function (next) { return settled(next, polls + 1); });
      });
    }
    api("POST", testUrl, body).then(function (r) { return settled(r, 0); }).then(function (r) {
      if (!r.ok || r.status === 202) {
        results.replaceChildren(el("p", {className: "pf-error"}, ["Cannot test: " + (r.body && r.body.detail)]));
        if (r.body && r.body.errors) showErrors(r.body.errors);
        return;
      }
      var res = r.body;
      try { window.localStorage.setItem("pf-sample-" + wf.id, document.getElementById("pf-sample").value); } catch (e) { /* private mode */ }
      var words = {completed: "Every step went through.", filtered: "A filter stopped the run (later steps would be skipped).", error: "A step failed."};
      results.replaceChildren(el("p", {className: "pf-test-outcome", "data-outcome": res.outcome}, [el("strong", {}, [words[res.outcome] || res.outcome])]));
      var list = el("ol", {className: "pf-test-list"});
      res.steps.forEach(function (s) {
        if (s.output !== null && s.output !== undefined) testOutputs[s.key] = s.output;
        var item = el("li", {className: "pf-test-step", "data-key": s.key, "data-status": s.status}, [
          el("strong", {}, [s.key]), " ", el("span", {className: "pf-badge pf-test-" + s.status}, [{ok: "ran", preview: "preview", sent: "sent", filtered: "filtered", error: "error", skipped: "skipped"}[s.status] || s.status])]);
        if (s.error) item.appendChild(el("p", {className: "pf-error"}, [s.error]));
        if (s.status === "filtered") item.appendChild(el("p", {}, ["Condition was false: the run would end here as filtered."]));
        if (s.would_send) item.appendChild(wouldSend(s.would_send));
        if (s.output !== null && s.output !== undefined) {
          var d = el("details", {className: "pf-json", open: s.status === "ok"}, [el("summary", {}, [s.output_source ? "Output (from the " + s.output_source + ")" : "Output"]), el("pre", {}, [JSON.stringify(s.output, null, 2)])]);
          item.appendChild(d);
        }
        if (s.status === "preview" && canEdit) {
          var btn = el("button", {type: "button", className: "pf-button pf-small pf-send-real", onclick: function () {
            if (btn.dataset.armed !== "1") { btn.dataset.armed = "1"; btn.textContent = "Really send " + s.key + " now?"; return; }
            runTest(s.key);
          }}, ["Send this step for real"]);
          item.appendChild(btn);
        }
        list.appendChild(item);
        var card = document.querySelector('.pf-step[data-key="' + CSS.escape(s.key) + '"] .pf-step-test');
        if (card) card.replaceChildren(el("p", {className: "pf-quiet"}, ["Last test: " + s.status + (s.error ? " — " + s.error : "")]));
      });
      results.appendChild(list);
      root.dataset.tested = res.outcome;
    });
  }

  // -- the flow view: the same document drawn as boxes, edited in a side panel ---------------
  var mode = "flow";  // "flow" | "form" | "json"
  var selected = null;  // the step shown in the side panel
  var flowTimer = null;
  var zoom = 1;
  function changed(message) {
    renderAll();
    if (message) status(message);
  }
  function flowSoon() {
    clearTimeout(flowTimer);
    var canvas = document.getElementById("pf-flow");
    if (canvas && mode === "flow") canvas.dataset.pending = "redraw";  // tests wait for the redraw to land
    flowTimer = setTimeout(function () { renderFlow(); mirrorDefinition(); }, 120);
  }
  function triggerSummary() {
    if (wf.trigger_type === "schedule") return {label: "Schedule", summary: wf.schedule ? wf.schedule + " (" + (wf.timezone || "UTC") + ")" : "no schedule yet"};
    if (wf.trigger_type === "manual") return {label: "Manual", summary: "someone presses Run now"};
    return {label: "Webhook", summary: wf.webhook_url ? "POST " + wf.webhook_url.replace(/^https?:\/\//, "").replace(/\/hooks\/.{6}.*$/, "/hooks/…") : "a web request arrives"};
  }
  function renderFlow() {
    var canvas = document.getElementById("pf-flow");
    if (!canvas) return;
    clearTimeout(flowTimer);  // this drawing is the one a scheduled redraw would have made
    delete canvas.dataset.pending;
    if (mode !== "flow") { canvas.replaceChildren(); return; }
    // A redraw keeps the keyboard focus where it was (the same control of the same box).
    var active = document.activeElement;
    var memo = active && active !== canvas && canvas.contains(active) ? {label: active.getAttribute("aria-label"),
      key: (active.closest("[data-step-key]") || {dataset: {}}).dataset.stepKey} : null;
    var inner = PotaFlowView.render(canvas, {trigger: triggerSummary(), steps: steps, on_failure: onFailure}, {
      editable: canEdit,
      selectedUid: selected ? selected.uid : null,
      onSelect: function (step) { selectStep(step, true); },
      onSelectTrigger: function () { document.getElementById("pf-trigger").scrollIntoView(); document.querySelector("#pf-trigger input, #pf-trigger select").focus(); },
      onInsert: openInsert,
      onAddPath: function (step) {
        var name = addPath(step);
        selectStep(step, false);
        var input = document.querySelector('#pf-panel fieldset[data-path-name="' + CSS.escape(name) + '"] .pf-path-when-input');
        if (input) input.focus();
      },
      onSelectPath: function (step, index) {
        selectStep(step, false);
        var inputs = document.querySelectorAll("#pf-panel .pf-path-name");
        if (index >= 0 && inputs[index]) inputs[index].focus();
      },
      onMove: moveFromView,
      onDelete: function (step) {
        var loc = locate(step);
        if (selected === step || descendants(step).indexOf(selected) >= 0) selected = null;
        removeStep(step);
        var next = loc.list[Math.min(loc.index, loc.list.length - 1)];
        focusBox(next) || document.getElementById("pf-undo-button").focus();
      },
      onDrop: function (uid, listRef, index) {
        var step = everyStep().filter(function (s) { return s.uid === uid; })[0];
        if (step) moveTo(step, listRef, index);
      }
    });
    if (memo) {
      var again = memo.label ? canvas.querySelector('[aria-label="' + CSS.escape(memo.label) + '"]') : null;
      again = again || (memo.key ? canvas.querySelector('[data-step-key="' + CSS.escape(memo.key) + '"] .pf-node-main') : null);
      if (again) again.focus();
    }
    inner.style.transform = zoom === 1 ? "" : "scale(" + zoom + ")";
    document.getElementById("pf-zoom-level").textContent = Math.round(zoom * 100) + " %";
  }
  function focusBox(step) {
    if (!step) return false;
    var box = document.querySelector('#pf-flow [data-step-key="' + CSS.escape(step.key) + '"] .pf-node-main');
    if (box) box.focus();
    return !!box;
  }
  function renderPanel() {
    var panel = document.getElementById("pf-panel");
    if (!panel) return;
    if (!selected || !locate(selected) || mode !== "flow") { panel.hidden = true; panel.replaceChildren(); return; }
    var loc = locate(selected);
    loc.shallow = true;
    var step = selected;
    panel.hidden = false;
    panel.replaceChildren(
      el("div", {className: "pf-panel-head"}, [el("h2", {id: "pf-panel-h"}, ["Edit " + step.key]),
        el("button", {type: "button", className: "pf-button pf-small", id: "pf-panel-close", onclick: function () {
          selected = null; renderPanel(); renderFlow(); focusBox(step);
        }}, ["Close"])]),
      el("ol", {className: "pf-steps pf-panel-steps", "aria-labelledby": "pf-panel-h"}, [stepCard(step, loc)]));
  }
  function selectStep(step, focusPanel) {
    selected = step;
    renderFlow();
    renderPanel();
    if (focusPanel) {
      var first = document.querySelector("#pf-panel .pf-step-body input:not([type=hidden]):not([type=checkbox]), #pf-panel .pf-step-body select, #pf-panel .pf-step-body textarea");
      (first || document.querySelector("#pf-panel .pf-step-key")).focus();
    }
  }
  /* "+" between two boxes: a searchable list of actions with their icons. */
  function openInsert(listRef, index, button) {
    closePopovers();
    var again = '.pf-insert[data-list="' + listRef.id + '"][data-index="' + index + '"]';
    var entry = listFor(listRef);
    if (!entry) return;
    var pop = el("div", {className: "pf-popover pf-insert-menu", role: "dialog", "aria-label": "Add a step"});
    var searchId = nextId("pf-search");
    var search = el("input", {type: "search", id: searchId, className: "pf-action-search", placeholder: "Search actions", autocomplete: "off"});
    var list = el("ul", {className: "pf-action-list", role: "listbox", "aria-label": "Actions"});
    function pick(type) {
      pop.remove();
      var s = addStep(entry.list, index, type);
      selectStep(s, true);
    }
    function draw() {
      var q = search.value.trim().toLowerCase();
      list.replaceChildren();
      var actions = allActions();
      orderedNames(actions).forEach(function (name) {
        var a = actions[name];
        var text = (a.title || name) + " " + name + " " + (a.description || "");
        if (q && text.toLowerCase().indexOf(q) < 0) return;
        var fam = PotaFlowView.family(name);
        list.appendChild(el("li", {}, [el("button", {type: "button", className: "pf-action-choice", "data-action": name, onclick: function () { pick(name); }}, [
          PotaFlowView.iconNode(fam), " ", el("strong", {}, [a.title || name]), " ",
          el("span", {className: "pf-quiet"}, [name])])]));
      });
      if (!list.children.length) list.appendChild(el("li", {className: "pf-quiet"}, ["No action matches “" + search.value + "”."]));
    }
    search.addEventListener("input", draw);
    search.addEventListener("keydown", function (e) {
      if (e.key === "Enter") { e.preventDefault(); var first = list.querySelector(".pf-action-choice"); if (first) first.click(); }
      if (e.key === "ArrowDown") { e.preventDefault(); var f = list.querySelector(".pf-action-choice"); if (f) f.focus(); }
    });
    pop.addEventListener("keydown", function (e) {
      if (e.key === "Escape") { e.preventDefault(); pop.remove(); refocus(again); }
      if ((e.key === "ArrowDown" || e.key === "ArrowUp") && e.target.classList.contains("pf-action-choice")) {
        e.preventDefault();
        var all = Array.prototype.slice.call(list.querySelectorAll(".pf-action-choice"));
        var i = all.indexOf(e.target) + (e.key === "ArrowDown" ? 1 : -1);
        if (i < 0) search.focus(); else if (all[i]) all[i].focus();
      }
    });
    pop.appendChild(el("label", {"for": searchId}, ["Add a step: search actions"]));
    pop.appendChild(search);
    pop.appendChild(list);
    pop.appendChild(el("button", {type: "button", className: "pf-button pf-small", onclick: function () { pop.remove(); refocus(again); }}, ["Cancel"]));
    draw();
    placePopover(pop, button);
    search.focus();
  }
  function closePopovers() { document.querySelectorAll(".pf-popover").forEach(function (p) { p.remove(); }); }
  /* Popovers live on the page, not in the flow (which redraws and scrolls): placed under their anchor. */
  function placePopover(pop, anchor) {
    document.body.appendChild(pop);
    var r = anchor.getBoundingClientRect();
    var left = Math.min(Math.max(r.left + window.scrollX + r.width / 2 - 160, 8), window.scrollX + document.documentElement.clientWidth - 336);
    pop.style.top = (r.bottom + window.scrollY + 4) + "px";
    pop.style.left = left + "px";
  }
  function refocus(selector, fallback) {
    var node = document.querySelector(selector);
    (node || fallback || document.getElementById("pf-flow")).focus();
  }
  /* Where a step may go: every list but its own descendants', labelled as a person reads it. */
  function destinations(step) {
    var own = descendants(step).concat([step]);
    return allLists().filter(function (l) {
      return !l.ancestors.some(function (a) { return own.indexOf(a.step) >= 0; });
    }).map(function (l) {
      var label;
      if (l.ref.id === "root") label = "The main flow";
      else if (l.ref.id === "on_failure") label = "The error path (if the run fails)";
      else if (l.ref.slot === "steps") label = "Inside the loop " + l.ref.owner.key;
      else if (l.ref.slot === "otherwise") label = "Path otherwise of " + l.ref.owner.key;
      else label = "Path " + l.ref.owner.config.paths[parseInt(l.ref.slot.slice(6), 10)].name + " of " + l.ref.owner.key;
      return {entry: l, label: label};
    });
  }
  function moveTo(step, listRef, index) {
    var from = locate(step);
    var target = listFor(listRef);
    if (!target) return false;
    if (destinations(step).every(function (d) { return d.entry.ref.id !== listRef.id; })) {
      status("Cannot move " + step.key + " into itself.");
      return false;
    }
    from.list.splice(from.index, 1);
    var at = Math.min(target.list === from.list && index > from.index ? index - 1 : index, target.list.length);
    target.list.splice(at, 0, step);
    var problem = orderProblem();
    if (problem) {
      target.list.splice(at, 1);
      from.list.splice(from.index, 0, step);
      var message = "Cannot move " + step.key + " there: " + problem + ".";
      status(message);
      return message;
    }
    changed("Moved " + step.key + ".");
    return true;
  }
  function moveFromView(step, how, box) {
    if (how === "up" || how === "down") {
      moveWithin(step, how === "up" ? -1 : 1);
      focusBox(step);
      return;
    }
    closePopovers();
    var pop = el("div", {className: "pf-popover pf-move-menu", role: "dialog", "aria-label": "Move " + step.key + " to"});
    var note = el("p", {className: "pf-error", role: "alert"});
    pop.appendChild(el("p", {className: "pf-popover-head"}, ["Move " + step.key + " to the end of:"]));
    var ul = el("ul", {className: "pf-plain-list"});
    destinations(step).forEach(function (d) {
      var here = d.entry.list === locate(step).list;
      ul.appendChild(el("li", {}, [el("button", {type: "button", className: "pf-button pf-small pf-destination", disabled: here,
        "data-list": d.entry.ref.id, onclick: function () {
          var result = moveTo(step, d.entry.ref, d.entry.list.length);
          if (result === true) { pop.remove(); focusBox(step); } else if (result) note.textContent = result;
        }}, [d.label + (here ? " (it is there)" : "")])]));
    });
    pop.appendChild(ul);
    pop.appendChild(note);
    pop.appendChild(el("button", {type: "button", className: "pf-button pf-small", onclick: function () { pop.remove(); focusBox(step); }}, ["Cancel"]));
    pop.addEventListener("keydown", function (e) { if (e.key === "Escape") { e.preventDefault(); pop.remove(); focusBox(step); } });
    placePopover(pop, box);
    var first = pop.querySelector(".pf-destination:not([disabled])");
    if (first) first.focus();
  }
  /* The definition as the server will get it: what the JSON view shows and tests compare. */
  function definition() {
    return {steps: steps.map(toSpec), on_failure: onFailure.map(toSpec)};
  }
  function mirrorDefinition() {
    root.dataset.definition = JSON.stringify(definition());
  }
  function renderAll() {
    closePopovers();
    renderSteps();
    renderFlow();
    renderPanel();
    mirrorDefinition();
  }
  function setMode(next) {
    mode = next;
    ["flow", "form", "json"].forEach(function (m) {
      document.getElementById("pf-" + m + "-view").hidden = m !== mode;
      document.getElementById("pf-mode-" + m).setAttribute("aria-pressed", String(m === mode));
    });
    root.dataset.mode = mode;
    try { window.localStorage.setItem("pf-builder-mode", mode === "json" ? "flow" : mode); } catch (e) { /* private mode */ }
    if (mode === "json") {
      document.getElementById("pf-json").value = JSON.stringify(definition(), null, 2);
      document.getElementById("pf-json-error").textContent = "";
    }
    renderAll();
  }
  function applyJson() {
    var area = document.getElementById("pf-json");
    var out = document.getElementById("pf-json-error");
    var parsed;
    try { parsed = JSON.parse(area.value); } catch (e) { out.textContent = "Not valid JSON: " + e.message; return false; }
    if (!isPlainObject(parsed) || !Array.isArray(parsed.steps) || (parsed.on_failure !== undefined && !Array.isArray(parsed.on_failure))) {
      out.textContent = "Expected {\"steps\": [...], \"on_failure\": [...]}."; return false;
    }
    steps = parsed.steps.map(fromSpec);
    onFailure = (parsed.on_failure || []).map(fromSpec);
    selected = null;
    out.textContent = "";
    changed("Applied the JSON: " + everyStep().length + " step(s).");
    return true;
  }
  function setZoom(z, exact) {
    // −/+ move in tenths; Fit takes the largest zoom (to the hundredth) at which the flow fits.
    zoom = Math.min(Math.max(exact ? Math.floor(z * 100) / 100 : Math.round(z * 10) / 10, 0.3), 1.5);
    renderFlow();
  }

  // -- start -------------------------------------------------------------------------------
  document.getElementById("pf-wf-name").value = wf.name || "";
  document.getElementById("pf-wf-description").value = wf.description || "";
  document.getElementById("pf-wf-active").checked = !!wf.is_active;
  document.getElementById("pf-wf-notify").checked = wf.notify_on_failure !== false;
  ["pf-wf-name", "pf-wf-description", "pf-wf-active", "pf-wf-notify"].forEach(function (id) { document.getElementById(id).disabled = !canEdit; });
  var sample = document.getElementById("pf-sample");
  // The last sample tested here (this browser), else the latest real trigger body.
  var latestBody = data.sample.trigger && data.sample.trigger.body !== undefined ? data.sample.trigger.body : {};
  var stored = null;
  try { stored = wf.id ? window.localStorage.getItem("pf-sample-" + wf.id) : null; } catch (e) { stored = null; }
  sample.value = stored || JSON.stringify(latestBody, null, 2);
  sample.readOnly = !canEdit;
  steps = (wf.steps || []).map(fromSpec);
  onFailure = (wf.on_failure || []).map(fromSpec);
  ["flow", "form", "json"].forEach(function (m) {
    document.getElementById("pf-mode-" + m).addEventListener("click", function () { setMode(m); });
  });
  document.getElementById("pf-zoom-in").addEventListener("click", function () { setZoom(zoom + 0.1); });
  document.getElementById("pf-zoom-out").addEventListener("click", function () { setZoom(zoom - 0.1); });
  document.getElementById("pf-zoom-fit").addEventListener("click", function () {
    var canvas = document.getElementById("pf-flow");
    zoom = 1; renderFlow();
    var inner = canvas.querySelector(".pf-flow-inner");  // the drawing at 100 %
    setZoom(Math.min(1, (canvas.clientWidth - 8) / Math.max(inner.scrollWidth, 1)), true);
  });
  document.getElementById("pf-flow").addEventListener("wheel", function (e) {
    if (!e.ctrlKey) return;
    e.preventDefault();
    setZoom(zoom + (e.deltaY < 0 ? 0.1 : -0.1));
  }, {passive: false});
  if (canEdit) {
    var addSelect = fillActions(document.getElementById("pf-add-action"));
    document.getElementById("pf-add-step").addEventListener("click", function () {
      var s = addStep(steps, steps.length, addSelect.value);
      var first = document.querySelector("#pf-card-" + s.uid + " .pf-step-body input:not([type=hidden]), #pf-card-" + s.uid + " .pf-step-body select, #pf-card-" + s.uid + " .pf-step-body textarea");
      (first || document.querySelector("#pf-card-" + s.uid + " .pf-step-key")).focus();
    });
    document.getElementById("pf-json-apply").addEventListener("click", applyJson);
    var saveButton = document.getElementById("pf-save");
    if (saveButton) saveButton.addEventListener("click", save);
    var testButton = document.getElementById("pf-run-test");
    if (testButton) testButton.addEventListener("click", function () { runTest(null); });
    document.addEventListener("keydown", function (e) {
      if ((e.ctrlKey || e.metaKey) && e.key === "s") { e.preventDefault(); save(); }
    });
  }
  if (/[?&]saved=1/.test(window.location.search)) status("Saved as version " + wf.version + ".");
  document.getElementById("pf-json").readOnly = !canEdit;
  // Any edit in a form (the side panel or the form editor) shows on the flow and in the definition.
  ["input", "change"].forEach(function (type) {
    root.addEventListener(type, function (e) {
      if (e.target.id === "pf-json" || e.target.id === "pf-sample" || e.target.classList.contains("pf-action-search")) return;
      mirrorDefinition();
      flowSoon();
    });
  });
  showVersion();
  renderTrigger();
  var remembered = null;
  try { remembered = window.localStorage.getItem("pf-builder-mode"); } catch (e) { remembered = null; }
  setMode((/[?&]view=(form|flow)/.exec(window.location.search) || [])[1] || (remembered === "form" ? "form" : "flow"));
  root.dataset.ready = "true";
})();

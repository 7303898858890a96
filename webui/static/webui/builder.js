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
  var steps = (wf.steps || []).map(fromSpec);
  var testOutputs = {};  // step key -> output from the latest test
  var pendingMove = null;  // [from, to] of a drop, applied when the drag ends
  var secrets = {webhook_secret: null, webhook_secret_previous: null};
  var LONG_TEXT = {text: 1, html: 1, condition: 1};
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
  function fromSpec(s) {
    uid += 1;
    return {
      uid: uid, key: s.key, action_type: s.action_type, config: clone(s.config) || {},
      credential: s.credential === undefined ? null : s.credential,
      max_retries: s.max_retries, backoff_seconds: s.backoff_seconds,
      backoff_max_seconds: s.backoff_max_seconds, timeout_seconds: s.timeout_seconds,
      on_in_doubt: s.on_in_doubt || "", raw: false, anyModes: {}
    };
  }
  function toSpec(s) {
    var spec = {key: s.key, action_type: s.action_type, config: s.config, credential: s.credential || null,
      on_in_doubt: s.on_in_doubt || ""};
    ["max_retries", "backoff_seconds", "backoff_max_seconds", "timeout_seconds"].forEach(function (f) {
      spec[f] = (s[f] === "" || s[f] === null || s[f] === undefined) ? data.step_defaults[f] : Number(s[f]);
    });
    return spec;
  }
  function newKey(actionType) {
    var base = actionType.replace(/[^a-z0-9]+/g, "_").replace(/^_+|_+$/g, "") || "step";
    if (!/^[a-z]/.test(base)) base = "s_" + base;
    var keys = steps.map(function (s) { return s.key; });
    var key = base, n = 2;
    while (keys.indexOf(key) >= 0) { key = base + "_" + n; n += 1; }
    return key;
  }
  function defaultsFor(actionType) {
    var config = {};
    var schema = (data.actions[actionType] || {}).config_schema || {};
    var props = schema.properties || {};
    (schema.required || []).forEach(function (name) {
      var p = props[name] || {};
      if (p.enum) config[name] = p.default || p.enum[0];
      else if (p.type === "string") config[name] = "";
    });
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
    if ((data.expression_fields[actionType] || []).indexOf(name) >= 0) return "expr";
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
  function openPicker(input, stepIndex, bare, wrap) {
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
      checkTemplate(input, stepIndex, bare);
    }
    panel.addEventListener("keydown", function (e) {
      if (e.key === "Escape") { e.preventDefault(); panel.remove(); input.focus(); }
    });
    panel.appendChild(el("p", {className: "pf-picker-head"}, ["Pick a value to insert at the cursor ", el("span", {className: "pf-quiet"}, ["(Esc closes)"])]));
    var tree = el("ul", {className: "pf-tree"});
    tree.appendChild(treeNode("trigger", "trigger", triggerTree(), insert, 0));
    var earlier = steps.slice(0, stepIndex);
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
  function flatFields(stepIndex) {
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
    steps.slice(0, stepIndex).forEach(function (s) {
      var o = Object.prototype.hasOwnProperty.call(testOutputs, s.key) ? testOutputs[s.key] : data.sample.outputs[s.key];
      if (o !== undefined && o !== null) walk("steps." + s.key + ".output", o, 0);
    });
    return out.slice(0, 500);
  }
  function checkTemplate(input, stepIndex, bare) {
    var value = input.value;
    var msg = input.parentNode.parentNode.querySelector(":scope > .pf-inline-check") ||
      (input.closest(".pf-field") || input.parentNode).querySelector(".pf-inline-check");
    if (!msg) return;
    if (bare && value.trim() && value.indexOf("{{") < 0 && value.indexOf("{%") < 0) value = "{{ " + value + " }}";
    if (value.indexOf("{{") < 0 && value.indexOf("{%") < 0) { msg.textContent = ""; input.removeAttribute("aria-invalid"); return; }
    var earlier = steps.slice(0, stepIndex).map(function (s) { return s.key; });
    api("POST", data.urls.check_template, {template: value, earlier_steps: earlier}).then(function (r) {
      if (!r.ok) return;
      msg.textContent = r.body.valid ? "" : "Template problem: " + r.body.error;
      if (r.body.valid) input.removeAttribute("aria-invalid"); else input.setAttribute("aria-invalid", "true");
    });
  }
  // A text input that takes templates: the "Insert data" button and the check on blur.
  function templated(input, stepIndex, bare) {
    var wrap = el("div", {className: "pf-templated"});
    var row = el("div", {className: "pf-templated-row"}, [input]);
    wrap.appendChild(row);
    remember(input);
    if (canEdit) {
      row.appendChild(el("button", {type: "button", className: "pf-button pf-small pf-insert-data",
        "aria-label": "Insert data into " + (input.getAttribute("aria-label") || "this field"),
        onclick: function () { openPicker(input, stepIndex, bare, wrap); }}, ["Insert data"]));
      input.addEventListener("blur", function () { checkTemplate(input, stepIndex, bare); });
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
  function mapEditor(step, index, name, value, path, labelText) {
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
        var line = el("div", {className: "pf-map-row"}, [k, templated(v, index, false)]);
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
  function listEditor(step, index, name, value, path, labelText, itemType) {
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
        var line = el("div", {className: "pf-map-row"}, [itemType === "string" || !itemType ? templated(input, index, false) : input]);
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
  function anyField(step, index, name, value, id, path, labelText) {
    // "Any JSON value": a set of named fields (the usual case), one text template, or raw JSON.
    var mode = step.anyModes[name] || (value === undefined || isPlainObject(value) && Object.keys(value).every(function (k) { return typeof value[k] !== "object" || value[k] === null; })
      ? "fields" : (typeof value === "string" ? "text" : "json"));
    step.anyModes[name] = mode;
    var holder = el("div", {className: "pf-any"});
    var select = el("select", {"aria-label": labelText + ": how to enter it", className: "pf-any-mode", disabled: !canEdit,
      onchange: function () { step.anyModes[name] = select.value; redrawStep(index); }},
    [["fields", "Named fields"], ["text", "Text"], ["json", "JSON"]].map(function (o) {
      return el("option", {value: o[0], selected: mode === o[0]}, [o[1]]);
    }));
    holder.appendChild(select);
    if (mode === "fields") holder.appendChild(mapEditor(step, index, name, isPlainObject(value) ? value : {}, path, labelText));
    else if (mode === "text") {
      var input = textInput(typeof value === "string" ? value : "", {id: id, "data-path": path}, true);
      input.addEventListener("input", function () { setConfig(step, name, input.value === "" ? undefined : input.value); });
      holder.appendChild(templated(input, index, false));
    } else holder.appendChild(jsonEditor(step, name, value, id, path));
    return holder;
  }
  function configField(step, index, name, p, required) {
    var kind = fieldKind(step.action_type, name, p);
    var id = nextId("pf-f");
    var path = "steps[" + index + "].config." + name;
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
    } else if (kind === "expr" && window.PotaflowConditions) {
      // The condition builder (condition_builder.js): field, operator, value; or the expression itself.
      control = el("div", {className: "pf-cond-field-wrap", "data-path": path});
      window.PotaflowConditions.mount(control, {expression: value, disabled: !canEdit, label: labelText, dataPath: path,
        fields: function () { return flatFields(index); },
        onChange: function (expr) { setConfig(step, name, expr === "" && !required ? undefined : expr); }});
    } else if (kind === "text" || kind === "expr") {
      var input = textInput(value, {id: id, "data-path": path, "aria-describedby": help ? id + "-help" : null, required: required,
        placeholder: kind === "expr" ? "e.g. trigger.body.amount > 100" : null}, !!LONG_TEXT[name] && kind !== "expr");
      input.addEventListener("input", function () { setConfig(step, name, input.value === "" && !required ? undefined : input.value); });
      control = templated(input, index, kind === "expr");
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
      control = mapEditor(step, index, name, value, path, labelText);
    } else if (kind === "list") {
      label = el("span", {className: "pf-label", id: id}, [label.textContent]);
      control = listEditor(step, index, name, value, path, labelText, typesOf(p.items)[0]);
    } else if (kind === "any") {
      control = anyField(step, index, name, value, id, path, labelText);
    } else {
      control = jsonEditor(step, name, value, id, path);
    }
    return el("div", {className: "pf-field pf-field-" + kind, "data-field": name}, [label, help, control,
      el("p", {className: "pf-field-error pf-error", "data-error-for": path, role: "alert"})]);
  }
  function credentialField(step, index, action) {
    var kinds = action.credential_kind ? [].concat(action.credential_kind) : [];
    if (!kinds.length) return null;
    var id = nextId("pf-cred");
    var path = "steps[" + index + "].credential";
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
  function advanced(step, index) {
    var d = el("details", {className: "pf-advanced"}, [el("summary", {}, ["Advanced: retries, timeout, unknown outcomes"])]);
    var grid = el("div", {className: "pf-advanced-grid"});
    [["max_retries", "Retries after a failure", "1"], ["backoff_seconds", "First wait between retries (s)", "any"],
      ["backoff_max_seconds", "Longest wait (s)", "any"], ["timeout_seconds", "Timeout per attempt (s)", "any"]].forEach(function (f) {
      var id = nextId("pf-adv");
      var lim = data.step_limits[f[0]];
      var input = el("input", {type: "number", id: id, step: f[2], min: lim[0], max: lim[1], disabled: !canEdit,
        "data-path": "steps[" + index + "]." + f[0], placeholder: String(data.step_defaults[f[0]])});
      input.value = step[f[0]] === undefined || step[f[0]] === null ? "" : step[f[0]];
      input.addEventListener("input", function () { step[f[0]] = input.value; });
      grid.appendChild(el("div", {className: "pf-field"}, [el("label", {"for": id}, [f[1]]), input,
        el("p", {className: "pf-field-error pf-error", "data-error-for": "steps[" + index + "]." + f[0], role: "alert"})]));
    });
    var id = nextId("pf-adv");
    var sel = el("select", {id: id, disabled: !canEdit, "data-path": "steps[" + index + "].on_in_doubt",
      onchange: function () { step.on_in_doubt = sel.value; }}, data.in_doubt_choices.map(function (c) {
      return el("option", {value: c[0], selected: (step.on_in_doubt || "") === c[0]}, [c[1]]);
    }));
    grid.appendChild(el("div", {className: "pf-field"}, [el("label", {"for": id}, ["If a worker dies mid-call"]), sel]));
    d.appendChild(grid);
    return d;
  }

  // -- step cards ------------------------------------------------------------------
  function moveStep(from, to, focusSelector) {
    if (to < 0 || to >= steps.length || from === to) return;
    var s = steps.splice(from, 1)[0];
    steps.splice(to, 0, s);
    renderSteps();
    status("Moved step " + s.key + " to position " + (to + 1) + ".");
    var card = document.getElementById("pf-card-" + s.uid);
    if (!card) return;
    // Keep the focus on the button that was used; at the top or bottom, on the one that still moves.
    var target = card.querySelector(focusSelector);
    if (!target || target.disabled) target = card.querySelector(focusSelector === ".pf-up" ? ".pf-down" : ".pf-up");
    if (!target || target.disabled) target = card.querySelector(".pf-step-title");
    target.focus();
  }
  function stepCard(step, index) {
    var action = data.actions[step.action_type] || {title: step.action_type, config_schema: {}};
    var card = el("li", {className: "pf-card pf-step", id: "pf-card-" + step.uid, "data-key": step.key, "data-index": String(index)});
    var keyId = nextId("pf-key");
    var head = el("div", {className: "pf-step-head"});
    if (canEdit) {
      // Only the handle drags (inputs inside a draggable card could not select text); keyboard: Up/Down.
      var handle = el("span", {className: "pf-drag", title: "Drag to reorder (or use Up/Down)", "aria-hidden": "true", draggable: "true"}, ["⠿"]);
      handle.addEventListener("dragstart", function (e) {
        e.dataTransfer.setData("text/plain", String(index)); e.dataTransfer.effectAllowed = "move"; card.classList.add("pf-dragging");
      });
      // The move happens once the drag has ended: redrawing during "drop" would remove the
      // element being dragged before the browser has finished with it.
      handle.addEventListener("dragend", function () {
        card.classList.remove("pf-dragging");
        var move = pendingMove;
        pendingMove = null;
        if (move) moveStep(move[0], move[1], ".pf-step-title");
      });
      head.appendChild(handle);
    }
    head.appendChild(el("h3", {className: "pf-step-title", tabindex: "-1"}, [
      el("span", {className: "pf-step-num"}, ["Step " + (index + 1)]), " ", action.title || step.action_type]));
    var keyInput = el("input", {id: keyId, className: "pf-step-key", type: "text", "data-path": "steps[" + index + "].key", disabled: !canEdit,
      "aria-describedby": keyId + "-help"});
    keyInput.value = step.key;
    keyInput.addEventListener("input", function () { step.key = keyInput.value; card.dataset.key = step.key; });
    head.appendChild(el("div", {className: "pf-field pf-key-field"}, [el("label", {"for": keyId}, ["Key"]), keyInput]));
    if (canEdit) {
      var tools = el("div", {className: "pf-step-tools", role: "group", "aria-label": "Step " + (index + 1) + " tools"});
      tools.appendChild(el("button", {type: "button", className: "pf-button pf-small pf-up", disabled: index === 0,
        "aria-label": "Move step " + (index + 1) + " up", onclick: function () { moveStep(index, index - 1, ".pf-up"); }}, ["↑ Up"]));
      tools.appendChild(el("button", {type: "button", className: "pf-button pf-small pf-down", disabled: index === steps.length - 1,
        "aria-label": "Move step " + (index + 1) + " down", onclick: function () { moveStep(index, index + 1, ".pf-down"); }}, ["↓ Down"]));
      tools.appendChild(el("button", {type: "button", className: "pf-button pf-small pf-duplicate",
        "aria-label": "Duplicate step " + (index + 1), onclick: function () {
          var copy = fromSpec(toSpec(step)); copy.key = newKey(step.key); steps.splice(index + 1, 0, copy); renderSteps();
          document.querySelector("#pf-card-" + copy.uid + " .pf-step-key").focus(); status("Duplicated " + step.key + " as " + copy.key + ".");
        }}, ["Duplicate"]));
      tools.appendChild(el("button", {type: "button", className: "pf-button pf-small pf-danger pf-remove",
        "aria-label": "Remove step " + (index + 1), onclick: function () {
          steps.splice(index, 1); renderSteps(); status("Removed step " + step.key + ".");
          var next = document.querySelectorAll(".pf-step-title")[Math.min(index, steps.length - 1)];
          (next || document.getElementById("pf-add-action")).focus();
        }}, ["Remove"]));
      head.appendChild(tools);
    }
    card.appendChild(head);
    card.appendChild(el("p", {className: "pf-field-error pf-error", "data-error-for": "steps[" + index + "]", role: "alert"}));
    if (action.description) card.appendChild(el("p", {className: "pf-help"}, [action.description]));
    var body = el("div", {className: "pf-step-body"});
    var rawToggle = el("button", {type: "button", className: "pf-linkbutton pf-raw-toggle", "aria-pressed": step.raw ? "true" : "false",
      onclick: function () {
        if (step.raw) {
          var area = card.querySelector(".pf-raw");
          try { step.config = JSON.parse(area.value || "{}"); } catch (e) {
            card.querySelector(".pf-raw-error").textContent = "Fix the JSON before leaving raw mode: " + e.message; return;
          }
        }
        step.raw = !step.raw; step.anyModes = {}; redrawStep(index);
        card = document.getElementById("pf-card-" + step.uid);
        card.querySelector(".pf-raw-toggle").focus();
      }}, [step.raw ? "Back to the form" : "Edit as JSON"]);
    body.appendChild(rawToggle);
    if (step.raw) {
      var rawId = nextId("pf-raw");
      var area = el("textarea", {id: rawId, className: "pf-raw pf-code", rows: 10, spellcheck: "false", disabled: !canEdit, "data-path": "steps[" + index + "].config"});
      area.value = JSON.stringify(step.config, null, 2);
      area.addEventListener("input", function () {
        try { step.config = JSON.parse(area.value || "{}"); card.querySelector(".pf-raw-error").textContent = ""; }
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
        var p = props[name];
        var kind = fieldKind(step.action_type, name, p);
        var isRequired = required.indexOf(name) >= 0;
        var primary = isRequired || step.config[name] !== undefined || i === 0 || kind === "any" || kind === "expr" ||
          (kind === "text" && p.default === undefined);
        var node = configField(step, index, name, p, isRequired);
        if (primary) body.appendChild(node); else { more.appendChild(node); moreNames.push(name.replace(/_/g, " ")); }
      });
      if (moreNames.length) {
        more.insertBefore(el("summary", {}, ["More options: " + moreNames.join(", ")]), more.firstChild);
        body.appendChild(more);
      }
      if (schema.anyOf) body.appendChild(el("p", {className: "pf-help"}, ["Needs one of: " + schema.anyOf.map(function (a) { return (a.required || []).join(" + "); }).join(" or ") + "."]));
      var unknown = Object.keys(step.config).filter(function (k) { return !props[k]; });
      if (unknown.length) body.appendChild(el("p", {className: "pf-note"}, ["Also set (edit as JSON to change): " + unknown.join(", ")]));
    }
    body.appendChild(el("p", {className: "pf-field-error pf-error", "data-error-for": "steps[" + index + "].config", role: "alert"}));
    var cred = credentialField(step, index, action);
    if (cred) body.appendChild(cred);
    body.appendChild(advanced(step, index));
    body.appendChild(el("div", {className: "pf-step-test", "aria-live": "polite"}));
    card.appendChild(body);
    if (canEdit) {
      card.addEventListener("dragover", function (e) { e.preventDefault(); card.classList.add("pf-drop-target"); });
      card.addEventListener("dragleave", function () { card.classList.remove("pf-drop-target"); });
      card.addEventListener("drop", function (e) {
        e.preventDefault(); card.classList.remove("pf-drop-target");
        var from = parseInt(e.dataTransfer.getData("text/plain"), 10);
        if (!isNaN(from)) pendingMove = [from, index];
      });
    }
    return card;
  }
  function renderSteps() {
    var list = document.getElementById("pf-steps");
    list.replaceChildren.apply(list, steps.map(stepCard));
    if (!steps.length) list.appendChild(el("li", {className: "pf-empty pf-quiet"}, ["No steps yet." + (canEdit ? " Add one below." : "")]));
  }
  function redrawStep(index) {
    var list = document.getElementById("pf-steps");
    var old = list.children[index];
    list.replaceChild(stepCard(steps[index], index), old);
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
  function showErrors(errors) {
    var flat = flatten(errors, "", {});
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
      var link = el("a", {href: "#", onclick: function (e) { e.preventDefault(); if (target) target.focus(); }}, [path + ": " + flat[path].join(" ")]);
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
      signature_scheme: wf.signature_scheme || "standard", steps: steps.map(toSpec)};
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
  function wouldSend(ws) {
    var box = el("div", {className: "pf-would-send"});
    if (!ws) return box;
    box.appendChild(el("p", {className: "pf-would-head"}, ["Would send (nothing was sent):"]));
    if (ws.kind === "http") {
      box.appendChild(el("p", {className: "pf-code pf-would-request"}, [ws.method + " " + ws.url]));
      box.appendChild(el("p", {className: "pf-small-text"}, ["Headers"]));
      box.appendChild(kv(ws.headers));
      if (ws.body !== null && ws.body !== undefined) { box.appendChild(el("p", {className: "pf-small-text"}, ["Body"])); box.appendChild(el("pre", {className: "pf-would-body"}, [ws.body])); }
      (ws.notes || []).forEach(function (n) { box.appendChild(el("p", {className: "pf-error"}, [n])); });
    } else if (ws.kind === "email") {
      box.appendChild(kv({To: ws.to, Cc: ws.cc || "", From: ws.from || "(the credential's)", Subject: ws.subject}));
      box.appendChild(el("pre", {}, [ws.text || ws.html || ""]));
    } else if (ws.kind === "slack") {
      box.appendChild(kv({Channel: ws.channel, Text: ws.text || "", Blocks: ws.blocks ? ws.blocks.length + " block(s)" : "none"}));
    } else if (ws.kind === "sheets") {
      box.appendChild(kv({Spreadsheet: ws.spreadsheet, Worksheet: ws.worksheet, Row: JSON.stringify(ws.row)}));
    } else box.appendChild(el("pre", {}, [JSON.stringify(ws, null, 2)]));
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
    var body = {payload: payload, steps: steps.map(toSpec)};
    if (!wf.id) body.organization = data.organization;
    if (sendStep) body.send_step = sendStep;
    api("POST", testUrl, body).then(function (r) {
      if (!r.ok) {
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
  if (canEdit) {
    var addSelect = document.getElementById("pf-add-action");
    Object.keys(data.actions).forEach(function (name) {
      addSelect.appendChild(el("option", {value: name}, [(data.actions[name].title || name) + " (" + name + ")"]));
    });
    document.getElementById("pf-add-step").addEventListener("click", function () {
      var type = addSelect.value;
      var s = fromSpec({key: newKey(type), action_type: type, config: defaultsFor(type)});
      steps.push(s);
      renderSteps();
      status("Added step " + s.key + ".");
      var first = document.querySelector("#pf-card-" + s.uid + " .pf-step-body input:not([type=hidden]), #pf-card-" + s.uid + " .pf-step-body select, #pf-card-" + s.uid + " .pf-step-body textarea");
      (first || document.querySelector("#pf-card-" + s.uid + " .pf-step-key")).focus();
    });
    var saveButton = document.getElementById("pf-save");
    if (saveButton) saveButton.addEventListener("click", save);
    var testButton = document.getElementById("pf-run-test");
    if (testButton) testButton.addEventListener("click", function () { runTest(null); });
    document.addEventListener("keydown", function (e) {
      if ((e.ctrlKey || e.metaKey) && e.key === "s") { e.preventDefault(); save(); }
    });
  }
  if (/[?&]saved=1/.test(window.location.search)) status("Saved as version " + wf.version + ".");
  showVersion();
  renderTrigger();
  renderSteps();
  root.dataset.ready = "true";
})();

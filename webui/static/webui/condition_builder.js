/* The condition builder: field (from the sample data), operator by the field's type, value;
 * all/any groups; "Switch to expression" for experts, round-tripping when the expression
 * has the builder's shape. A reusable widget taking and returning an expression string
 * (the filter step's condition, a branch path's `when`):
 *
 *   var widget = PotaflowConditions.mount(container, {
 *     expression: "trigger.body.amount > 100",
 *     fields: function () { return [{path: "trigger.body.amount", value: 150}, ...]; },
 *     onChange: function (expression) { ... },
 *     disabled: false, label: "Condition", dataPath: "steps[0].config.condition"
 *   });
 *   widget.expression();  // the current expression
 *
 * PotaflowConditions.parse(expression) -> model or null; .serialize(model) -> expression.
 * The expressions are the server's (workflows/templating.py): comparisons of text with
 * numbers compare numbers; `is empty`, `is matching(...)`, `is startingwith(...)` are its tests.
 */
(function () {
  "use strict";

  var OPERATORS = [
    {id: "eq", label: "equals", types: ["text", "number", "boolean", "any"]},
    {id: "ne", label: "does not equal", types: ["text", "number", "boolean", "any"]},
    {id: "contains", label: "contains", types: ["text", "list", "any"]},
    {id: "notcontains", label: "does not contain", types: ["text", "list", "any"]},
    {id: "starts", label: "starts with", types: ["text", "any"]},
    {id: "ends", label: "ends with", types: ["text", "any"]},
    {id: "gt", label: "is greater than", types: ["number", "any"]},
    {id: "gte", label: "is at least", types: ["number", "any"]},
    {id: "lt", label: "is less than", types: ["number", "any"]},
    {id: "lte", label: "is at most", types: ["number", "any"]},
    {id: "inlist", label: "is one of (comma-separated)", types: ["text", "number", "any"]},
    {id: "matches", label: "matches the pattern", types: ["text", "any"]},
    {id: "exists", label: "exists", unary: true, types: ["text", "number", "boolean", "list", "object", "any"]},
    {id: "notexists", label: "does not exist", unary: true, types: ["text", "number", "boolean", "list", "object", "any"]},
    {id: "empty", label: "is empty", unary: true, types: ["text", "list", "object", "any"]},
    {id: "notempty", label: "is not empty", unary: true, types: ["text", "list", "object", "any"]},
    {id: "true", label: "is true", unary: true, types: ["boolean", "any"]},
    {id: "false", label: "is false", unary: true, types: ["boolean", "any"]}
  ];
  var BY_ID = {};
  OPERATORS.forEach(function (o) { BY_ID[o.id] = o; });
  var COMPARE = {"==": "eq", "!=": "ne", ">": "gt", ">=": "gte", "<": "lt", "<=": "lte"};
  var COMPARE_OUT = {eq: "==", ne: "!=", gt: ">", gte: ">=", lt: "<", lte: "<="};
  var TESTS = {defined: ["exists", "notexists"], empty: ["empty", "notempty"], "true": ["true", null], "false": ["false", null],
    matching: ["matches", null], startingwith: ["starts", null], endingwith: ["ends", null]};
  var TESTS_OUT = {exists: "is defined", notexists: "is not defined", empty: "is empty", notempty: "is not empty",
    "true": "is true", "false": "is false", matches: "is matching", starts: "is startingwith", ends: "is endingwith"};

  // -- values -----------------------------------------------------------------------------
  var NUMBER = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?$/;
  function literal(text, op) {
    var t = String(text === undefined || text === null ? "" : text);
    if (op !== "contains" && op !== "notcontains" && op !== "starts" && op !== "ends" && op !== "matches" && NUMBER.test(t.trim())) return t.trim();
    if (op === "eq" || op === "ne") {
      if (t === "true" || t === "false") return t;
      if (t === "null") return "none";
    }
    return JSON.stringify(t);
  }
  function literalText(token) {
    if (token.type === "string") return token.value;
    if (token.type === "number") return token.text;
    if (token.type === "name" && (token.value === "true" || token.value === "false")) return token.value;
    if (token.type === "name" && (token.value === "none" || token.value === "None")) return "null";
    return null;
  }

  // -- serializing ---------------------------------------------------------------------------
  function serializeCondition(c) {
    var field = String(c.field || "").trim();
    var op = c.op;
    if (!field || !BY_ID[op]) return "";
    if (COMPARE_OUT[op]) return field + " " + COMPARE_OUT[op] + " " + literal(c.value, op);
    if (op === "contains") return literal(c.value, op) + " in " + field;
    if (op === "notcontains") return literal(c.value, op) + " not in " + field;
    if (op === "inlist") {
      var items = String(c.value || "").split(",").map(function (v) { return v.trim(); }).filter(function (v) { return v !== ""; });
      return field + " in [" + items.map(function (v) { return literal(v, "eq"); }).join(", ") + "]";
    }
    if (op === "matches" || op === "starts" || op === "ends") return field + " " + TESTS_OUT[op] + "(" + JSON.stringify(String(c.value || "")) + ")";
    return field + " " + TESTS_OUT[op];
  }
  function serializeGroup(g, nested) {
    var parts = (g.items || []).map(function (item) {
      return item.items ? serializeGroup(item, true) : serializeCondition(item);
    }).filter(function (p) { return p !== ""; });
    var joined = parts.join(g.join === "any" ? " or " : " and ");
    return nested && parts.length > 1 ? "(" + joined + ")" : joined;
  }
  function serialize(model) { return serializeGroup(model, false); }

  // -- parsing -------------------------------------------------------------------------------
  function tokenize(text) {
    var tokens = [], i = 0, m;
    var re = {space: /^\s+/, number: /^-?[0-9]+(\.[0-9]+)?/, name: /^[A-Za-z_][A-Za-z0-9_]*/, op: /^(==|!=|>=|<=|>|<|\(|\)|\[|\]|\.|,)/};
    while (i < text.length) {
      var rest = text.slice(i);
      if ((m = re.space.exec(rest))) { i += m[0].length; continue; }
      var q = rest[0];
      if (q === '"' || q === "'") {
        var j = 1, out = "";
        while (j < rest.length && rest[j] !== q) {
          if (rest[j] === "\\") {
            var n = rest[j + 1];
            if (n === "u") { out += String.fromCharCode(parseInt(rest.slice(j + 2, j + 6), 16)); j += 6; continue; }
            out += {n: "\n", t: "\t", r: "\r"}[n] || n; j += 2; continue;
          }
          out += rest[j]; j += 1;
        }
        if (j >= rest.length) return null;
        tokens.push({type: "string", value: out}); i += j + 1; continue;
      }
      if ((m = re.number.exec(rest)) && !(tokens.length && tokens[tokens.length - 1].value === ".")) {
        tokens.push({type: "number", text: m[0]}); i += m[0].length; continue;
      }
      if ((m = re.name.exec(rest))) { tokens.push({type: "name", value: m[0]}); i += m[0].length; continue; }
      if ((m = re.op.exec(rest))) { tokens.push({type: "op", value: m[0]}); i += m[0].length; continue; }
      return null;
    }
    return tokens;
  }
  function Parser(tokens) { this.t = tokens; this.i = 0; }
  Parser.prototype.peek = function (k) { return this.t[this.i + (k || 0)]; };
  Parser.prototype.is = function (value, k) { var t = this.peek(k); return !!t && (t.type === "op" || t.type === "name") && t.value === value; };
  Parser.prototype.take = function (value) { if (!this.is(value)) throw new Error("expected " + value); this.i += 1; };
  Parser.prototype.or = function () {
    var items = [this.and()];
    while (this.is("or")) { this.i += 1; items.push(this.and()); }
    return items.length === 1 ? items[0] : {join: "any", items: items};
  };
  Parser.prototype.and = function () {
    var items = [this.atom()];
    while (this.is("and")) { this.i += 1; items.push(this.atom()); }
    return items.length === 1 ? items[0] : {join: "all", items: items};
  };
  Parser.prototype.atom = function () {
    if (this.is("(")) { this.i += 1; var inner = this.or(); this.take(")"); return inner.items ? {join: inner.join, items: inner.items, paren: true} : inner; }
    return this.condition();
  };
  Parser.prototype.path = function () {
    var t = this.peek();
    if (!t || t.type !== "name" || ["and", "or", "not", "in", "is"].indexOf(t.value) >= 0) throw new Error("expected a field");
    var text = t.value;
    this.i += 1;
    for (;;) {
      if (this.is(".") && this.peek(1) && this.peek(1).type === "name") { text += "." + this.peek(1).value; this.i += 2; }
      else if (this.is("[") && this.peek(1) && (this.peek(1).type === "string" || this.peek(1).type === "number") && this.is("]", 2)) {
        var key = this.peek(1);
        text += "[" + (key.type === "string" ? JSON.stringify(key.value) : key.text) + "]";
        this.i += 3;
      } else break;
    }
    return text;
  };
  Parser.prototype.literal = function () {
    var t = this.peek();
    var text = t ? literalText(t) : null;
    if (text === null) throw new Error("expected a value");
    this.i += 1;
    return text;
  };
  Parser.prototype.condition = function () {
    var t = this.peek();
    if (t && (t.type === "string" || t.type === "number")) {  // "x" in field, "x" not in field
      var value = this.literal();
      var negated = false;
      if (this.is("not")) { negated = true; this.i += 1; }
      this.take("in");
      return {field: this.path(), op: negated ? "notcontains" : "contains", value: value};
    }
    var field = this.path();
    var next = this.peek();
    if (next && next.type === "op" && COMPARE[next.value]) { this.i += 1; return {field: field, op: COMPARE[next.value], value: this.literal()}; }
    if (this.is("in") && this.is("[", 1)) {
      this.i += 2;
      var values = [];
      while (!this.is("]")) { values.push(this.literal()); if (this.is(",")) this.i += 1; else break; }
      this.take("]");
      return {field: field, op: "inlist", value: values.join(", ")};
    }
    if (this.is("is")) {
      this.i += 1;
      var not = false;
      if (this.is("not")) { not = true; this.i += 1; }
      var test = this.peek();
      if (!test || test.type !== "name" || !TESTS[test.value]) throw new Error("unknown test");
      this.i += 1;
      var op = TESTS[test.value][not ? 1 : 0];
      if (!op) throw new Error("negated test");
      if (op === "matches" || op === "starts" || op === "ends") {
        this.take("(");
        var arg = this.peek();
        if (!arg || arg.type !== "string") throw new Error("expected text");
        this.i += 1;
        this.take(")");
        return {field: field, op: op, value: arg.value};
      }
      return {field: field, op: op, value: ""};
    }
    throw new Error("not a condition");
  };
  function parse(expression) {
    var text = String(expression || "").trim();
    var braces = /^\{\{([\s\S]*)\}\}$/.exec(text);
    if (braces) text = braces[1].trim();
    if (!text) return {join: "all", items: []};
    if (/\{\{|\{%|\}\}/.test(text)) return null;
    var tokens = tokenize(text);
    if (!tokens) return null;
    var parser = new Parser(tokens), tree;
    try { tree = parser.or(); } catch (e) { return null; }
    if (parser.i !== tokens.length) return null;
    var top = tree.items ? tree : {join: "all", items: [tree]};
    for (var k = 0; k < top.items.length; k += 1) {  // one level of groups inside the top one
      var item = top.items[k];
      if (item.items) {
        if (item.items.some(function (x) { return !!x.items; })) return null;
        delete item.paren;
      }
    }
    delete top.paren;
    return top;
  }

  // -- field types from the sample data ---------------------------------------------------------
  function typeOf(value) {
    if (value === undefined) return "any";
    if (value === null) return "any";
    if (Array.isArray(value)) return "list";
    if (typeof value === "object") return "object";
    if (typeof value === "boolean") return "boolean";
    if (typeof value === "number") return "number";
    if (typeof value === "string" && NUMBER.test(value.trim())) return "number";  // form fields are text
    return "text";
  }

  // -- the widget ------------------------------------------------------------------------------
  var uid = 0;
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
    (children || []).forEach(function (c) { if (c !== null && c !== undefined) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return node;
  }

  function mount(container, opts) {
    uid += 1;
    var id = "pf-cond-" + uid;
    var disabled = !!opts.disabled;
    var expression = String(opts.expression || "");
    var model = parse(expression);
    var mode = model ? "builder" : "expression";
    if (!model) model = {join: "all", items: []};
    if (!model.items.length && !expression.trim()) model.items.push({field: "", op: "eq", value: ""});
    var listId = id + "-fields";
    var root = el("div", {className: "pf-cond", id: id, "data-mode": mode});
    container.appendChild(root);

    function fields() { try { return (opts.fields && opts.fields()) || []; } catch (e) { return []; } }
    function sampleOf(path) {
      var found = fields().filter(function (f) { return f.path === path; })[0];
      return found ? found.value : undefined;
    }
    function changed() {
      expression = serialize(model);
      root.dataset.expression = expression;
      var preview = root.querySelector(".pf-cond-expression");
      if (preview) preview.textContent = expression || "(none yet)";
      if (opts.onChange) opts.onChange(expression);
    }
    function conditionRow(c, list, index, depth) {
      var row = el("div", {className: "pf-cond-row", role: "group", "aria-label": "Condition " + (index + 1)});
      var fieldInput = el("input", {type: "text", className: "pf-cond-field pf-code", list: listId, disabled: disabled,
        "aria-label": "Field of condition " + (index + 1), placeholder: "trigger.body.amount"});
      fieldInput.value = c.field || "";
      var type = typeOf(sampleOf(c.field));
      var opSelect = el("select", {className: "pf-cond-op", disabled: disabled, "aria-label": "Operator of condition " + (index + 1)});
      var typeNote = el("span", {className: "pf-quiet pf-small-text pf-cond-type"});
      function operatorsFor() {
        // The operators that make sense for the field's type in the sample data (all when unknown).
        type = typeOf(sampleOf(c.field));
        opSelect.replaceChildren();
        OPERATORS.forEach(function (o) {
          if (o.types.indexOf(type) < 0 && o.id !== c.op) return;
          opSelect.appendChild(el("option", {value: o.id, selected: o.id === c.op}, [o.label]));
        });
        typeNote.textContent = type === "any" ? "" : type;
        valueInput.placeholder = type === "number" ? "100" : "value";
      }
      var valueInput = el("input", {type: "text", className: "pf-cond-value", disabled: disabled,
        "aria-label": "Value of condition " + (index + 1), placeholder: type === "number" ? "100" : "value"});
      valueInput.value = c.value || "";
      valueInput.hidden = !!(BY_ID[c.op] && BY_ID[c.op].unary);
      operatorsFor();
      fieldInput.addEventListener("input", function () { c.field = fieldInput.value.trim(); changed(); });
      fieldInput.addEventListener("change", operatorsFor);
      opSelect.addEventListener("change", function () {
        c.op = opSelect.value; valueInput.hidden = !!BY_ID[c.op].unary; changed();
      });
      valueInput.addEventListener("input", function () { c.value = valueInput.value; changed(); });
      row.appendChild(fieldInput);
      row.appendChild(opSelect);
      row.appendChild(valueInput);
      if (!disabled) row.appendChild(el("button", {type: "button", className: "pf-button pf-small pf-cond-remove",
        "aria-label": "Remove condition " + (index + 1), onclick: function () { list.items.splice(index, 1); draw(); changed(); }}, ["Remove"]));
      row.appendChild(typeNote);
      return row;
    }
    function groupBox(group, depth) {
      var box = el("div", {className: depth ? "pf-cond-group pf-cond-subgroup" : "pf-cond-group"});
      var joinSelect = el("select", {className: "pf-cond-join", disabled: disabled, "aria-label": depth ? "Group: all or any" : "All or any of the conditions",
        onchange: function () { group.join = joinSelect.value; changed(); }},
      [el("option", {value: "all", selected: group.join !== "any"}, ["all"]), el("option", {value: "any", selected: group.join === "any"}, ["any"])]);
      box.appendChild(el("p", {className: "pf-cond-head"}, [depth ? "Group: " : "Continue when ", joinSelect, " of these are true:"]));
      group.items.forEach(function (item, index) {
        if (item.items) {
          var sub = groupBox(item, depth + 1);
          if (!disabled) sub.appendChild(el("button", {type: "button", className: "pf-button pf-small pf-cond-remove-group",
            onclick: function () { group.items.splice(index, 1); draw(); changed(); }}, ["Remove group"]));
          box.appendChild(sub);
        } else box.appendChild(conditionRow(item, group, index, depth));
      });
      if (!disabled) {
        var tools = el("div", {className: "pf-cond-tools"});
        tools.appendChild(el("button", {type: "button", className: "pf-button pf-small pf-cond-add", onclick: function () {
          group.items.push({field: "", op: "eq", value: ""}); draw(); focusIn(".pf-cond-field", group, group.items.length - 1);
        }}, [depth ? "Add condition to group" : "Add condition"]));
        if (!depth) tools.appendChild(el("button", {type: "button", className: "pf-button pf-small pf-cond-add-group", onclick: function () {
          group.items.push({join: group.join === "any" ? "all" : "any", items: [{field: "", op: "eq", value: ""}]}); draw();
        }}, ["Add group"]));
        box.appendChild(tools);
      }
      return box;
    }
    function focusIn(selector, list, index) {
      var all = root.querySelectorAll(selector);
      var target = all[Math.min(index, all.length - 1)];
      if (target) target.focus();
    }
    function draw() {
      root.replaceChildren();
      root.dataset.mode = mode;
      var datalist = el("datalist", {id: listId});
      fields().forEach(function (f) { datalist.appendChild(el("option", {value: f.path})); });
      root.appendChild(datalist);
      var toggle = el("button", {type: "button", className: "pf-linkbutton pf-cond-mode", disabled: disabled && mode === "builder" && false,
        onclick: function () { switchMode(); }}, [mode === "builder" ? "Switch to expression" : "Switch to the builder"]);
      if (mode === "builder") {
        root.appendChild(groupBox(model, 0));
        root.appendChild(el("p", {className: "pf-help pf-cond-preview"}, ["Expression: ", el("code", {className: "pf-cond-expression"}, [serialize(model) || "(none yet)"])]));
      } else {
        var area = el("textarea", {className: "pf-code pf-cond-text", rows: 2, spellcheck: "false", disabled: disabled,
          "aria-label": (opts.label || "Condition") + " as an expression", "data-path": opts.dataPath || null});
        area.value = expression;
        area.addEventListener("input", function () { expression = area.value; root.dataset.expression = expression; if (opts.onChange) opts.onChange(expression); });
        root.appendChild(area);
        root.appendChild(el("p", {className: "pf-help"}, ["A template expression, e.g. trigger.body.amount > 100 and \"vip\" in trigger.body.tags."]));
      }
      root.appendChild(toggle);
      root.appendChild(el("p", {className: "pf-error pf-cond-message", role: "status"}));
      root.dataset.expression = expression;
    }
    function switchMode() {
      var message;
      if (mode === "builder") { expression = serialize(model); mode = "expression"; }
      else {
        var parsed = parse(expression);
        if (!parsed) {
          message = "This expression has parts the builder cannot show (only field–operator–value conditions in all/any groups): keep editing it here.";
        } else {
          model = parsed;
          if (!model.items.length) model.items.push({field: "", op: "eq", value: ""});
          mode = "builder";
        }
      }
      draw();
      if (message) root.querySelector(".pf-cond-message").textContent = message;
      var focus = root.querySelector(".pf-cond-mode");
      if (focus) focus.focus();
    }
    draw();
    return {
      element: root,
      expression: function () { return mode === "builder" ? serialize(model) : expression; },
      refreshFields: function () { if (mode === "builder") draw(); }
    };
  }

  window.PotaflowConditions = {parse: parse, serialize: serialize, mount: mount, operators: OPERATORS, typeOf: typeOf};
})();

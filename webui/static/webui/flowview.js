/* The flow view: a workflow definition drawn as boxes, top to bottom. Shared by the builder
 * (editable) and the run page (each box coloured by what happened).
 *
 * Layout: the definition is a tree of step lists (a series-parallel flow), so it is drawn as
 * nested DOM lists and laid out by the browser's own flexbox: a list is a column, a branch's
 * paths are columns side by side (otherwise last), a for_each is a frame around its column, the
 * error path a column apart. No layout library and no absolute positions: it reflows with the
 * text, scrolls when wide, and every box is a real focusable element with a label for screen
 * readers. Connectors are CSS borders. Nothing inline: works under the strict CSP.
 *
 * Names outside checks use: data-step-key="<key>" on each box (the trigger: "trigger"),
 * data-path="<branch key>/<path name>" on each branch path, data-status on run pages.
 */
(function () {
  "use strict";

  var ICONS = {
    "http": ["⇄", "HTTP"], "slack": ["#", "Slack"], "email": ["✉", "Email"], "sheets": ["▦", "Google Sheets"],
    "transform": ["ƒ", "Transform"], "filter": ["⏷", "Filter"], "custom": ["{}", "Custom code"],
    "branch": ["⑂", "Branch"], "for_each": ["↻", "Loop"], "delay": ["⏱", "Delay"], "wait": ["✋", "Wait"],
    "stop": ["■", "Stop"], "trigger": ["⚡", "Trigger"]
  };
  var CONTROL = {branch: 1, for_each: 1, delay: 1, wait: 1, stop: 1};
  var STATUS_WORDS = {
    succeeded: "succeeded", failed: "failed", retrying: "retrying", running: "running", pending: "not run yet",
    skipped: "skipped", filtered: "filtered", waiting: "waiting", in_doubt: "in doubt", queued: "queued", not_taken: "path not taken"
  };

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
  // Drawn icons where a font may lack the glyph (the others are plain characters).
  var SVG_ICONS = {
    branch: ["M7 4v16", "M7 13c0-4 3-6 9-6", "M13 4l3 3-3 3"],
    delay: ["M12 3a9 9 0 1 0 0.01 0", "M12 7v5l3 2"],
    wait: ["M9 6v12", "M15 6v12"]
  };
  function iconNode(fam) {
    var holder = el("span", {className: "pf-icon pf-icon-" + fam, "aria-hidden": "true"});
    if (SVG_ICONS[fam]) {
      var ns = "http://www.w3.org/2000/svg";
      var svg = document.createElementNS(ns, "svg");
      svg.setAttribute("viewBox", "0 0 24 24");
      SVG_ICONS[fam].forEach(function (d) {
        var path = document.createElementNS(ns, "path");
        path.setAttribute("d", d);
        svg.appendChild(path);
      });
      holder.appendChild(svg);
    } else holder.textContent = (ICONS[fam] || ["•"])[0];
    return holder;
  }
  function family(actionType) {
    if (actionType === "trigger") return "trigger";
    if (CONTROL[actionType]) return actionType;
    return actionType.split(".")[0];
  }
  function short(text, n) {
    text = text === undefined || text === null ? "" : (typeof text === "string" ? text : JSON.stringify(text));
    text = text.replace(/\s+/g, " ").trim();
    return text.length > n ? text.slice(0, n - 1) + "…" : text;
  }
  function bare(expr) {
    var t = typeof expr === "string" ? expr.trim() : JSON.stringify(expr);
    var m = /^\{\{\s*([\s\S]*?)\s*\}\}$/.exec(t || "");
    return m ? m[1] : t;
  }
  function hostPath(url) {
    if (typeof url !== "string") return "";
    if (url.indexOf("{{") >= 0) return url;
    return url.replace(/^https?:\/\//, "");
  }
  /* One line saying what a step does, from its config (readable without opening it). */
  function summary(step) {
    var c = step.config || {};
    switch (step.action_type) {
      case "http.request": return ((c.method || "GET").toUpperCase() + " " + hostPath(c.url)).trim();
      case "slack.message": return (c.channel ? c.channel + ": " : "") + short(c.text || (c.blocks ? "blocks" : ""), 40);
      case "email.send": return "to " + short(c.to, 30) + (c.subject ? " · " + short(c.subject, 30) : "");
      case "sheets.append_row": return "append a row" + (c.worksheet ? " to " + c.worksheet : "");
      case "transform": return "build " + (c.value && typeof c.value === "object" && !Array.isArray(c.value) ? "{" + Object.keys(c.value).slice(0, 4).join(", ") + "}" : short(c.value, 40));
      case "filter": return "only if " + short(bare(c.condition), 50);
      case "custom": return "handler " + short(c.handler, 40);
      case "branch": {
        var n = (c.paths || []).length + (c.otherwise ? 1 : 0);
        return (c.mode === "all" ? "every matching path" : "first matching path") + " of " + n;
      }
      case "for_each": return "for each in " + short(bare(c.items), 40) + (c.parallel > 1 ? " · " + c.parallel + " at once" : "");
      case "delay": return c.until ? "until " + short(c.until, 40) : "wait " + (c.seconds === undefined ? "?" : humanSeconds(c.seconds));
      case "wait": return (c.kind === "approval" ? "for an approval" : "for a POST to its resume URL") +
        (c.timeout_seconds ? " · " + humanSeconds(c.timeout_seconds) + " then " + (c.on_timeout || "fail") : "");
      case "stop": return "end as " + (c.status || "succeeded") + (c.message ? ": " + short(c.message, 30) : "");
      default: return short(JSON.stringify(c), 50);
    }
  }
  function humanSeconds(s) {
    s = Number(s);
    if (isNaN(s)) return "?";
    if (s < 120) return s + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    if (s < 172800) return Math.round(s / 3600) + " h";
    return Math.round(s / 86400) + " days";
  }
  function pathsOf(step) {
    var c = step.config || {};
    var out = (c.paths || []).map(function (p, i) { return {name: p.name, when: p.when, steps: p.steps || [], index: i}; });
    if (c.otherwise) out.push({name: "otherwise", when: null, steps: c.otherwise, index: -1});
    return out;
  }

  /* Draw ``model`` ({trigger: {label, summary}, steps: [...], on_failure: [...]}) into ``container``.
   * ``opt``: {editable, onSelect(step), onInsert(listRef, index), onAddPath(step), onMove(step, how),
   *           onDelete(step), selectedUid, run: {byPath: {path: instance}, status}} */
  function render(container, model, opt) {
    opt = opt || {};
    var run = opt.run || null;

    function node(step, ctx) {
      var fam = family(step.action_type);
      var icon = ICONS[fam] || ["•", step.action_type];
      var inst = run ? instanceFor(step, ctx) : null;
      var status = run ? statusOf(step, ctx, inst) : null;
      var label = step.key + ", " + (icon[1] || step.action_type) + " step: " + summary(step) +
        (status ? ". " + (STATUS_WORDS[status] || status) : "") +
        (inst && inst.attempts > 1 ? ", " + inst.attempts + " attempts" : "");
      var isSelected = opt.selectedUid !== undefined && opt.selectedUid !== null && opt.selectedUid === step.uid;
      var box = el("div", {className: "pf-node pf-node-" + fam + (isSelected ? " pf-selected" : ""),
        "data-step-key": step.key, "data-action": step.action_type, "data-status": status || null});
      var main = el(opt.editable || run ? "button" : "div", {type: opt.editable || run ? "button" : null, className: "pf-node-main", title: summary(step),
        "aria-label": label, "aria-pressed": opt.editable ? String(isSelected) : null,
        onclick: opt.onSelect ? function () { opt.onSelect(step, ctx, inst); } : null}, [
        iconNode(fam),
        el("span", {className: "pf-node-text"}, [
          el("span", {className: "pf-node-key"}, [step.key]),
          el("span", {className: "pf-node-type"}, [" " + (icon[1] || step.action_type) + (step.continue_on_error ? " · continues on error" : "")]),
          el("span", {className: "pf-node-summary"}, [summary(step)])
        ])
      ]);
      box.appendChild(main);
      if (run && status) {
        var facts = [STATUS_WORDS[status] || status];
        if (inst && inst.attempts > 1) facts.push(inst.attempts + " attempts");
        if (step.action_type === "for_each") {
          var loop = loopFacts(step, ctx);
          if (loop) facts.push(loop.text);
        }
        box.appendChild(el("span", {className: "pf-node-status pf-badge pf-status-" + status, "aria-hidden": "true"}, [facts.join(" · ")]));
      }
      if (opt.editable) {
        var tools = el("span", {className: "pf-node-tools"});
        tools.appendChild(el("button", {type: "button", className: "pf-node-tool pf-move-up", "aria-label": "Move " + step.key + " up",
          title: "Move up (Alt+↑)", onclick: function () { opt.onMove(step, "up"); }}, ["↑"]));
        tools.appendChild(el("button", {type: "button", className: "pf-node-tool pf-move-down", "aria-label": "Move " + step.key + " down",
          title: "Move down (Alt+↓)", onclick: function () { opt.onMove(step, "down"); }}, ["↓"]));
        tools.appendChild(el("button", {type: "button", className: "pf-node-tool pf-move-to", "aria-label": "Move " + step.key + " to…",
          title: "Move into or out of a path or loop", onclick: function () { opt.onMove(step, "menu", box); }}, ["⇆"]));
        tools.appendChild(el("button", {type: "button", className: "pf-node-tool pf-delete", "aria-label": "Delete " + step.key,
          title: "Delete (undo follows)", onclick: function () { opt.onDelete(step); }}, ["✕"]));
        box.appendChild(tools);
        main.addEventListener("keydown", function (e) {
          if (e.altKey && (e.key === "ArrowUp" || e.key === "ArrowDown")) { e.preventDefault(); opt.onMove(step, e.key === "ArrowUp" ? "up" : "down"); }
          else if (e.key === "Delete") { e.preventDefault(); opt.onDelete(step); }
        });
        main.draggable = true;
        main.addEventListener("dragstart", function (e) { e.dataTransfer.setData("text/plain", String(step.uid)); e.dataTransfer.effectAllowed = "move"; box.classList.add("pf-dragging"); });
        main.addEventListener("dragend", function () { box.classList.remove("pf-dragging"); });
      }
      return box;
    }
    function instanceFor(step, ctx) {
      var path = (ctx.prefix || "") + step.key;
      return run.byPath[path] || run.byKey[step.key] || null;
    }
    function statusOf(step, ctx, inst) {
      if (ctx.notTaken) return "not_taken";
      if (inst) return inst.status === "failed" && inst.outcome === "in_doubt" ? "in_doubt" : inst.status;
      if (ctx.iterations) {  // inside a loop: the worst outcome over its iterations
        var seen = ctx.iterations.map(function (i) { return run.byPath[ctx.loopKey + "[" + i + "]/" + step.key]; }).filter(Boolean);
        if (!seen.length) return "pending";
        var order = ["failed", "in_doubt", "retrying", "running", "waiting", "succeeded", "filtered", "skipped", "pending"];
        for (var k = 0; k < order.length; k++) {
          if (seen.some(function (s) { return s.status === order[k]; })) return order[k];
        }
      }
      return "pending";
    }
    function loopFacts(step, ctx) {
      var inst = instanceFor(step, ctx);
      var prefix = (ctx.prefix || "") + step.key + "[";
      var indexes = {};
      var failed = {};
      Object.keys(run.byPath).forEach(function (p) {
        if (p.indexOf(prefix) !== 0) return;
        var i = parseInt(p.slice(prefix.length), 10);
        if (isNaN(i)) return;
        indexes[i] = true;
        if (run.byPath[p].status === "failed") failed[i] = true;
      });
      (inst && inst.iterations ? inst.iterations : []).forEach(function (it) {  // the engine's own record of each item
        if (it.status !== "pending") indexes[it.index] = true;
        if (it.status === "failed") failed[it.index] = true;
      });
      var total = inst && inst.loop_total !== undefined && inst.loop_total !== null ? inst.loop_total : Object.keys(indexes).length;
      var done = inst && inst.loop_finished !== undefined && inst.loop_finished !== null ? inst.loop_finished : Object.keys(indexes).length;
      var nFailed = Object.keys(failed).length;
      if (!total && !done) return null;
      return {text: done + " of " + total + " items" + (nFailed ? ", " + nFailed + " failed" : ""), indexes: Object.keys(indexes).map(Number).sort(function (a, b) { return a - b; }), failed: failed};
    }
    function gap(listRef, index, after) {
      if (!opt.editable) return el("li", {className: "pf-gap", "aria-hidden": "true"});
      var li = el("li", {className: "pf-gap"});
      li.appendChild(el("button", {type: "button", className: "pf-insert", "aria-label": "Insert a step " + (after ? "after " + after : "here"),
        title: "Add a step here", "data-list": listRef.id, "data-index": String(index),
        onclick: function (e) { opt.onInsert(listRef, index, e.currentTarget); }}, ["+"]));
      li.addEventListener("dragover", function (e) { e.preventDefault(); li.classList.add("pf-drop-target"); });
      li.addEventListener("dragleave", function () { li.classList.remove("pf-drop-target"); });
      li.addEventListener("drop", function (e) {
        e.preventDefault(); li.classList.remove("pf-drop-target");
        var uid = parseInt(e.dataTransfer.getData("text/plain"), 10);
        if (!isNaN(uid) && opt.onDrop) opt.onDrop(uid, listRef, index);
      });
      return li;
    }
    function sequence(list, listRef, ctx, leading) {
      var ol = el("ol", {className: "pf-seq", "data-list": listRef.id});
      if (leading) ol.appendChild(el("li", {className: "pf-seq-item"}, [leading]));
      ol.appendChild(gap(listRef, 0, leading ? (leading.getAttribute("data-step-key") || "") : ""));
      list.forEach(function (step, i) {
        var li = el("li", {className: "pf-seq-item"});
        li.appendChild(node(step, ctx));
        if (step.action_type === "branch") li.appendChild(branchPaths(step, ctx));
        if (step.action_type === "for_each") {
          li.classList.add("pf-loop-item");
          var frame = el("div", {className: "pf-loop-frame", role: "group", "aria-label": "Loop " + step.key + ": for each item of " + bare((step.config || {}).items)});
          frame.appendChild(li.firstChild);
          var inner = {prefix: ctx.prefix, notTaken: ctx.notTaken};
          if (run) {
            var facts = loopFacts(step, ctx);
            inner = {prefix: ctx.prefix, notTaken: ctx.notTaken, loopKey: (ctx.prefix || "") + step.key, iterations: facts ? facts.indexes : []};
            if (facts && facts.indexes.length && opt.onIteration) {
              var pick = el("div", {className: "pf-iterations", role: "group", "aria-label": "Iterations of " + step.key});
              pick.appendChild(el("span", {className: "pf-small-text"}, ["Items: "]));
              facts.indexes.forEach(function (i) {
                pick.appendChild(el("button", {type: "button", className: "pf-iteration" + (facts.failed[i] ? " pf-iteration-failed" : ""),
                  "aria-label": "Open item " + i + " of " + step.key + (facts.failed[i] ? " (failed)" : ""),
                  onclick: function () { opt.onIteration(step, i, (ctx.prefix || "") + step.key + "[" + i + "]/"); }}, [String(i)]));
              });
              frame.appendChild(pick);
            }
          }
          frame.appendChild(sequence((step.config || {}).steps || [], {id: step.uid + ":steps", owner: step, slot: "steps"}, inner));
          li.appendChild(frame);
        }
        ol.appendChild(li);
        if (opt.editable || i < list.length - 1) ol.appendChild(gap(listRef, i + 1, step.key));  // read-only: no line after the last
      });
      return ol;
    }
    function branchPaths(step, ctx) {
      var holder = el("div", {className: "pf-paths", role: "group", "aria-label": "Paths of " + step.key});
      var taken = run ? takenPaths(step, ctx) : null;
      pathsOf(step).forEach(function (p) {
        var notTaken = !!ctx.notTaken || (taken !== null && taken.indexOf(p.name) < 0);
        var col = el("div", {className: "pf-path" + (p.index < 0 ? " pf-path-otherwise" : "") + (notTaken && run ? " pf-not-taken" : "") + (taken && !notTaken ? " pf-taken" : ""),
          "data-path": step.key + "/" + p.name, role: "group", "aria-label": "Path " + p.name + (p.when ? " when " + bare(p.when) : " (when no other path matches)") + (run ? (notTaken ? ", not taken" : ", taken") : "")});
        var head = el("div", {className: "pf-path-head"}, [el("strong", {}, [p.name]), " ",
          el("span", {className: "pf-path-when"}, [p.when !== null ? "if " + short(bare(p.when), 40) : "no other path matched"])]);
        if (opt.editable && opt.onSelectPath) {
          head.appendChild(el("button", {type: "button", className: "pf-node-tool", "aria-label": "Edit path " + p.name + " of " + step.key,
            onclick: function () { opt.onSelectPath(step, p.index); }}, ["✎"]));
        }
        col.appendChild(head);
        var slot = p.index < 0 ? "otherwise" : "paths[" + p.index + "]";
        col.appendChild(sequence(p.steps, {id: step.uid + ":" + slot, owner: step, slot: slot}, {prefix: ctx.prefix, notTaken: notTaken, loopKey: ctx.loopKey, iterations: ctx.iterations}));
        holder.appendChild(col);
      });
      if (opt.editable) {
        holder.appendChild(el("div", {className: "pf-path-add"}, [el("button", {type: "button", className: "pf-button pf-small pf-add-path",
          "aria-label": "Add a path to " + step.key, onclick: function () { opt.onAddPath(step); }}, ["+ path"])]));
      }
      return holder;
    }
    function takenPaths(step, ctx) {
      var inst = instanceFor(step, ctx);
      if (ctx.iterations && !inst) {
        if (!ctx.iterations.length) return null;
        var names = [];
        ctx.iterations.forEach(function (i) {
          var it = run.byPath[ctx.loopKey + "[" + i + "]/" + step.key];
          takenFrom(it).forEach(function (n) { if (names.indexOf(n) < 0) names.push(n); });
        });
        return names;
      }
      if (!inst || (["succeeded", "failed"].indexOf(inst.status) < 0 && !inst.output)) return null;  // not decided yet
      return takenFrom(inst);
    }
    function takenFrom(inst) {
      if (!inst || !inst.output) return [];
      var o = inst.output;
      var taken = o.taken || o.paths || o.path;
      if (typeof taken === "string") return [taken];
      return Array.isArray(taken) ? taken : [];
    }

    var trigger = el("div", {className: "pf-node pf-node-trigger", "data-step-key": "trigger", "data-status": run ? "succeeded" : null}, [
      el(opt.onSelectTrigger ? "button" : "div", {type: opt.onSelectTrigger ? "button" : null, className: "pf-node-main",
        "aria-label": "Trigger: " + model.trigger.summary, onclick: opt.onSelectTrigger || null}, [
        el("span", {className: "pf-icon pf-icon-trigger", "aria-hidden": "true"}, [ICONS.trigger[0]]),
        el("span", {className: "pf-node-text"}, [el("span", {className: "pf-node-key"}, ["trigger"]), el("span", {className: "pf-node-type"}, [" " + model.trigger.label]),
          el("span", {className: "pf-node-summary"}, [model.trigger.summary])])])]);
    var inner = el("div", {className: "pf-flow-inner"});
    inner.appendChild(sequence(model.steps, {id: "root", owner: null, slot: "root"}, {prefix: ""}, trigger));
    if ((model.on_failure && model.on_failure.length) || opt.editable) {
      var errorPath = el("section", {className: "pf-error-path", "aria-label": "Error path: runs once when a run fails"}, [
        el("h3", {}, ["If the run fails"]), el("p", {className: "pf-quiet pf-small-text"}, ["Runs once, with failure.step, failure.error and failure.attempts."])]);
      errorPath.appendChild(sequence(model.on_failure || [], {id: "on_failure", owner: null, slot: "on_failure"}, {prefix: ""}));
      inner.appendChild(errorPath);
    }
    container.replaceChildren(inner);
    return inner;
  }

  window.PotaFlowView = {render: render, iconNode: iconNode, summary: summary, family: family, ICONS: ICONS, CONTROL: CONTROL, pathsOf: pathsOf};
})();

/* Insights charts: uPlot (vendored, MIT) draws the numbers the page already shows in its tables.
 * Stacked bars are drawn as cumulative bars, the tallest first, each covering the one before;
 * the legend shows each status's own count. No inline code or style: works under the strict CSP. */
(function () {
  "use strict";
  var COLORS = {succeeded: "#1a7f37", failed: "#cf222e", filtered: "#8250df", p50: "#0b5cad", p95: "#bc4c00"};
  function width(node) { return Math.max(node.clientWidth - 4, 300); }
  function timeLabel(grain) {
    return function (self, ticks) {
      return ticks.map(function (t) {
        var d = new Date(t * 1000);
        var pad = function (n) { return (n < 10 ? "0" : "") + n; };
        return grain === "hour" ? pad(d.getHours()) + ":00" : (d.getMonth() + 1) + "/" + d.getDate();
      });
    };
  }
  function durationText(ms) {
    if (ms === null || ms === undefined) return "–";
    if (ms < 1000) return Math.round(ms) + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
    return (ms / 60000).toFixed(1) + " min";
  }
  document.addEventListener("DOMContentLoaded", function () {
    var source = document.getElementById("pf-insights-data");
    if (!source || typeof uPlot === "undefined") return;
    var data = JSON.parse(source.textContent);
    var xs = data.buckets.map(function (b) { return b.t; });
    var step = data.grain === "hour" ? 3600 : 86400;
    var bars = uPlot.paths.bars({size: [0.7, 40], align: 1});
    // Cumulative series, drawn tallest first so each shorter one covers the bottom of the one before.
    var runsEl = document.getElementById("pf-chart-runs");
    var cumulative = [];
    var running = data.buckets.map(function () { return 0; });
    data.statuses.forEach(function (status) {
      running = running.map(function (v, i) { return v + data.buckets[i][status]; });
      cumulative.push({status: status, values: running.slice()});
    });
    cumulative.reverse();
    var runsChart = new uPlot({
      width: width(runsEl), height: 240,
      scales: {x: {time: true, range: function (u, min, max) { return [min, max + step]; }}, y: {range: function (u, min, max) { return [0, Math.max(max, 1) * 1.1]; }}},
      axes: [{values: timeLabel(data.grain)}, {label: "Runs", size: 50}],
      legend: {live: true},
      series: [{label: data.grain === "hour" ? "Hour" : "Day", value: function (u, v) { return v === null ? "" : new Date(v * 1000).toLocaleString(); }}].concat(cumulative.map(function (c) {
        return {label: c.status, fill: COLORS[c.status], stroke: COLORS[c.status], width: 0, paths: bars, points: {show: false},
          value: function (u, v, si, idx) { return idx === null || idx === undefined ? "" : String(data.buckets[idx][c.status]); }};
      }))
    }, [xs].concat(cumulative.map(function (c) { return c.values; })), runsEl);
    var durEl = document.getElementById("pf-chart-durations");
    var durChart = new uPlot({
      width: width(durEl), height: 220,
      scales: {x: {time: true, range: function (u, min, max) { return [min, max + step]; }}},
      axes: [{values: timeLabel(data.grain)}, {label: "Duration", size: 70, values: function (u, ticks) { return ticks.map(durationText); }}],
      series: [{label: data.grain === "hour" ? "Hour" : "Day", value: function (u, v) { return v === null ? "" : new Date(v * 1000).toLocaleString(); }},
        {label: "p50", stroke: COLORS.p50, width: 2, spanGaps: true, value: function (u, v) { return durationText(v); }},
        {label: "p95", stroke: COLORS.p95, width: 2, dash: [6, 4], spanGaps: true, value: function (u, v) { return durationText(v); }}]
    }, [xs.map(function (x) { return x + step / 2; }), data.buckets.map(function (b) { return b.p50_ms; }), data.buckets.map(function (b) { return b.p95_ms; })], durEl);
    window.addEventListener("resize", function () {
      runsChart.setSize({width: width(runsEl), height: 240});
      durChart.setSize({width: width(durEl), height: 220});
    });
    document.getElementById("pf-insights-cards").dataset.charts = "ready";
  });
})();

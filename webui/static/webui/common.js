/* Shared by every member page: times in the browser's time zone. No inline handlers (CSP). */
(function () {
  "use strict";
  var pad = function (n) { return (n < 10 ? "0" : "") + n; };
  function local(d) {
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }
  function ago(d) {
    var s = Math.round((Date.now() - d.getTime()) / 1000);
    if (s < 60) return s <= 1 ? "just now" : s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 86400) return Math.floor(s / 3600) + " h ago";
    return Math.floor(s / 86400) + " d ago";
  }
  function localise() {
    var zone = "";
    try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { zone = ""; }
    document.querySelectorAll("time[datetime]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (isNaN(d.getTime())) return;
      t.title = local(d) + (zone ? " (" + zone + ")" : "");
      t.textContent = t.hasAttribute("data-relative") ? ago(d) : local(d);
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    localise();
  });
})();

/* LotoOps page behaviour: SLA countdowns, copy buttons, form resets, and the
   live timeline's replay bookkeeping. No inline scripts (CSP). */
(function () {
  "use strict";

  function fmt(seconds) {
    seconds = Math.floor(Math.abs(seconds));
    if (seconds < 60) return seconds + "s";
    var m = Math.floor(seconds / 60), s = seconds % 60;
    if (m < 60) return m + "m " + (s < 10 ? "0" : "") + s + "s";
    var h = Math.floor(m / 60); m = m % 60;
    if (h < 48) return h + "h " + (m < 10 ? "0" : "") + m + "m";
    return Math.floor(h / 24) + "d " + (h % 24) + "h";
  }

  // The server renders each clock's seconds left (incidents/rules/sla.py decides
  // the verdict); the browser only counts down from that number since it arrived.
  function tickSla() {
    var now = Date.now();
    document.querySelectorAll(".sla[data-seconds-left]").forEach(function (el) {
      if (!el.dataset.renderedAt) el.dataset.renderedAt = String(now);
      var left = Number(el.dataset.secondsLeft) - (now - Number(el.dataset.renderedAt)) / 1000;
      if (left >= 0) {
        el.textContent = fmt(left) + " left to acknowledge";
        el.classList.remove("breached");
      } else {
        el.textContent = "SLA breached " + fmt(left) + " ago";
        el.classList.add("breached");
      }
    });
  }
  // Regulatory clocks (incidents/rules/regulatory.py): the same countdown.
  function tickRegulatory() {
    var now = Date.now();
    document.querySelectorAll(".regclock[data-seconds-left]").forEach(function (el) {
      if (!el.dataset.renderedAt) el.dataset.renderedAt = String(now);
      var left = Number(el.dataset.secondsLeft) - (now - Number(el.dataset.renderedAt)) / 1000;
      var what = el.dataset.obligation || "";
      if (left >= 0) {
        el.textContent = fmt(left) + " left: " + what;
        el.classList.remove("overdue");
      } else {
        el.textContent = what + ": overdue by " + fmt(left);
        el.classList.add("overdue");
      }
    });
  }
  setInterval(tickSla, 1000);
  setInterval(tickRegulatory, 1000);
  document.addEventListener("DOMContentLoaded", tickRegulatory);
  document.addEventListener("DOMContentLoaded", tickSla);

  document.addEventListener("click", function (e) {
    var button = e.target.closest("[data-copy]");
    if (!button) return;
    var source = document.querySelector(button.dataset.copy);
    if (!source) return;
    var text = source.textContent.trim();
    var done = function () { button.textContent = "Copied"; setTimeout(function () { button.textContent = "Copy"; }, 1500); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done);
    } else {
      var range = document.createRange();
      range.selectNodeContents(source);
      var sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range);
      try { document.execCommand("copy"); done(); } catch (err) { /* selected: copy by hand */ }
    }
  });

  document.addEventListener("htmx:afterRequest", function (e) {
    var form = e.target.closest && e.target.closest("form[data-reset-on-success]");
    if (form && e.detail.successful) form.reset();
    if (e.detail.successful) {
      var flash = document.getElementById("flash");
      if (flash && e.detail.xhr.status < 300) flash.innerHTML = "";
    }
  });

  /* Live timeline. SSE ids are the events' per-incident sequence numbers (seq:
     1, 2, 3, ... in commit order, see incidents/timeline.py). The SSE extension
     re-creates its EventSource after a drop without the Last-Event-ID header, so
     the URL it reconnects to carries ?after=<last seq seen>; messages already on
     the page are never swapped in twice. */
  var lastSeen = 0;
  function installSse() {
    if (!window.htmx) return;
    var live = document.getElementById("live");
    if (live) lastSeen = parseInt(live.dataset.lastEventId || "0", 10) || 0;
    htmx.createEventSource = function (url) {
      var u = new URL(url, window.location.href);
      if (lastSeen > 0) u.searchParams.set("after", String(lastSeen));
      return new EventSource(u.toString(), { withCredentials: true });
    };
  }
  installSse();
  document.addEventListener("htmx:sseBeforeMessage", function (e) {
    if (e.detail.type !== "timeline") return;  // run output: idempotent swaps, no id
    var id = parseInt(e.detail.lastEventId || "0", 10);
    if (id && (id <= lastSeen || document.querySelector('#timeline [data-seq="' + id + '"]'))) {
      e.preventDefault();
      return;
    }
    if (id) lastSeen = id;
  });
  document.addEventListener("htmx:sseMessage", function () {
    var live = document.getElementById("live");
    if (live) live.dataset.lastEventId = String(lastSeen);
    tickSla();
    tickRegulatory();
  });
  document.addEventListener("htmx:sseOpen", function () {
    document.body.classList.remove("sse-down");
    document.body.dataset.live = "open";
  });
  document.addEventListener("htmx:sseError", function () {
    document.body.classList.add("sse-down");
    document.body.dataset.live = "reconnecting";
  });
})();

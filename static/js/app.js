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

  /* Text typed while a note was on its way is kept: on success only what was sent
     is cleared (a form.reset() would erase the rest). */
  var TEXT_FIELDS = "textarea, input[type=text]";
  document.addEventListener("htmx:beforeRequest", function (e) {
    var form = e.target.closest && e.target.closest("form[data-reset-on-success]");
    if (!form) return;
    form.querySelectorAll(TEXT_FIELDS).forEach(function (field) { field.dataset.sent = field.value; });
  });
  document.addEventListener("htmx:afterRequest", function (e) {
    var form = e.target.closest && e.target.closest("form[data-reset-on-success]");
    if (form) {
      form.querySelectorAll(TEXT_FIELDS).forEach(function (field) {
        var sent = field.dataset.sent;
        delete field.dataset.sent;
        if (!e.detail.successful || sent === undefined || sent === "") return;
        if (field.value === sent) field.value = "";
        else if (field.value.indexOf(sent) === 0) field.value = field.value.slice(sent.length).replace(/^\s+/, "");
      });
    }
    if (e.detail.successful) {
      var flash = document.getElementById("flash");
      if (flash && e.detail.xhr.status < 300) flash.innerHTML = "";
    }
  });

  /* Focus stays on the control after an HTMX swap redraws it (a checklist tick, Run,
     a note), or goes to the region it was in when the control is gone (Acknowledge:
     the header). Only when the swap or the request took the focus away: a responder
     who moved on is never pulled back. */
  var lastFocus = null, pendingFocus = null;
  function focusRegion(el) {
    var region = el.closest && el.closest("[tabindex='-1'][id]");
    return region ? region.id : "";
  }
  document.addEventListener("focusin", function (e) {
    if (e.target === document.body) return;
    lastFocus = { el: e.target, id: e.target.id || "", region: focusRegion(e.target) };
  });
  function holdFocus(container) {
    var active = document.activeElement;
    if (lastFocus && active && active !== document.body && container && container.contains(active)) pendingFocus = lastFocus;
  }
  function restoreFocus() {
    var held = pendingFocus;
    if (!held) return;
    var active = document.activeElement;
    if (active && active !== document.body && active.isConnected) { pendingFocus = null; return; }
    pendingFocus = null;
    var el = (held.el.isConnected && !held.el.disabled) ? held.el : (held.id && document.getElementById(held.id));
    if (!el || el.disabled) el = held.region && document.getElementById(held.region);
    if (el) el.focus({ preventScroll: true });
  }
  /* The live stream may have redrawn a panel (the runbook after a check run it queued)
     while its request was in flight: the answer then goes to the redrawn element, not to
     the detached one the request started from. */
  /* htmx then fires the answer's events on the detached control and target, where no
     document listener hears them: listen on them directly. */
  function retarget(e) {
    var target = e.detail.target;
    if (target && !target.isConnected && target.id) {
      var fresh = document.getElementById(target.id);
      if (fresh) e.detail.target = fresh;
    }
  }
  document.addEventListener("htmx:beforeRequest", function (e) {
    var elt = e.detail.elt;
    holdFocus(elt);
    [elt, e.detail.target].forEach(function (el) {
      if (!el || el.lotoopsHooked) return;
      el.lotoopsHooked = true;
      el.addEventListener("htmx:beforeSwap", function (ev) {
        if (!el.isConnected) retarget(ev);
      });
      el.addEventListener("htmx:afterRequest", function () {
        if (!el.isConnected) setTimeout(restoreFocus, 0);
      });
    });
  });
  document.addEventListener("htmx:beforeSwap", function (e) { holdFocus(e.detail.target); });
  document.addEventListener("htmx:oobBeforeSwap", function (e) { holdFocus(e.detail.target); });
  document.addEventListener("htmx:afterRequest", function () { setTimeout(restoreFocus, 0); });
  document.addEventListener("htmx:afterSettle", restoreFocus);
  document.addEventListener("htmx:oobAfterSwap", function () { setTimeout(restoreFocus, 0); });

  /* A message drawn next to the control just pressed: scrolled into view if it is not,
     and read out through the page's live regions (a region drawn with its message is
     not announced by every screen reader). */
  function showMessages() {
    document.querySelectorAll("[data-announce]").forEach(function (msg) {
      var level = msg.getAttribute("data-announce");
      msg.removeAttribute("data-announce");
      var region = document.getElementById(level === "error" ? "announcer-alert" : "announcer");
      if (region) {
        region.textContent = "";
        setTimeout(function () { region.textContent = msg.textContent.replace(/\s+/g, " ").trim(); }, 50);
      }
      reveal(msg);
    });
  }
  function reveal(el) {
    // Not under the sticky incident header, not below the fold (the page's
    // scroll-padding-top, the header's height, keeps scrollIntoView clear of it).
    var header = document.getElementById("incident-header");
    var top = header ? Math.max(0, header.getBoundingClientRect().bottom) : 0;
    var box = el.getBoundingClientRect();
    if (box.top < top || box.top + Math.min(box.height, 40) > window.innerHeight) {
      el.scrollIntoView({ block: box.top < top ? "start" : "nearest" });
    }
  }
  document.addEventListener("htmx:afterSettle", function (e) {
    showMessages();
    var target = e.detail.target;
    if (!target || !target.isConnected) return;
    if (target.classList.contains("msg-slot") && target.textContent.trim()) reveal(target);
    if (target.classList.contains("action-slot")) {
      // The review opened next to its button: show it, and take the responder to it.
      var review = target.querySelector(".action-review");
      if (review) {
        reveal(review);
        var plan = review.querySelector(".plan");
        var first = plan || review.querySelector("select, input:not([type=hidden]), textarea, button");
        if (plan) plan.setAttribute("tabindex", "-1");
        if (first) first.focus({ preventScroll: true });
        pendingFocus = null;
      }
    }
  });

  /* The sticky incident header's height, as the CSS variable --sticky-header: the page's
     scroll-padding-top (app.css), so a control reached with Tab or Shift+Tab, or a message
     scrolled into view, is never left under the header (WCAG 2.2 SC 2.4.11). The header
     wraps to more lines on a phone, and is redrawn by the live stream: watched, not
     measured once. */
  var headerWatched = null;
  var headerObserver = window.ResizeObserver && new ResizeObserver(function (entries) {
    entries.forEach(function (entry) {
      var height = entry.target.isConnected ? entry.target.getBoundingClientRect().height : 0;
      document.documentElement.style.setProperty("--sticky-header", Math.ceil(height) + "px");
    });
  });
  function watchHeader() {
    var header = document.getElementById("incident-header");
    if (!headerObserver || header === headerWatched) return;
    if (headerWatched) headerObserver.unobserve(headerWatched);
    headerWatched = header;
    if (header) headerObserver.observe(header);
    else document.documentElement.style.removeProperty("--sticky-header");
  }
  document.addEventListener("DOMContentLoaded", watchHeader);
  document.addEventListener("htmx:afterSettle", watchHeader);
  document.addEventListener("htmx:oobAfterSwap", watchHeader);

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

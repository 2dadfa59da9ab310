// Marks htmx live polls (an `every …` trigger on the requesting element) with X-Evpay-Poll, so
// the server does not count them as staff activity: an open tab alone must not keep a session
// alive past the idle timeout (evpay/security.py). A file, not inline, for the CSP.
document.addEventListener("htmx:configRequest", function (event) {
  var trigger = event.detail.elt.getAttribute("hx-trigger") || "";
  if (/^\s*every\s/.test(trigger)) {
    event.detail.headers["X-Evpay-Poll"] = "1";
  }
});

// Print buttons (receipts): a listener here, as the CSP refuses inline onclick handlers.
document.addEventListener("click", function (event) {
  if (event.target.closest("[data-print]")) {
    window.print();
  }
});

// Conditions on htmx requests, here rather than as hx-trigger filters (`every 10s [...]`),
// which htmx compiles with Function(): the CSP has no 'unsafe-eval' and htmx.config.allowEval
// is off (templates/base.html). htmx:confirm comes before anything else of the request, so a
// cancelled one leaves no trace (no sync, no indicator, no X-Evpay-Poll request).
//   data-poll-visible          a live poll that runs only while the tab is visible ...
//   data-poll-hidden-every="6" ... or, while hidden, on one tick in 6 (`every 10s` polls every
//                              60 s): ticks are counted from the element's first, as the two
//                              timers of `every 10s [visible], every 60s [hidden]` did.
//   data-skip-if-editing="sel" not while something in the element matches sel (an action
//                              form open, a note typed).
//   data-skip-if-filled="sel"  not while the field sel on the page has a value.
var pollTicks = new WeakMap();

function evpaySkipsRequest(elt, triggeringEvent) {
  if (elt.hasAttribute("data-poll-visible") && !triggeringEvent) {
    var tick = (pollTicks.get(elt) || 0) + 1;
    pollTicks.set(elt, tick);
    if (document.visibilityState !== "visible") {
      var every = parseInt(elt.getAttribute("data-poll-hidden-every"), 10);
      if (!(every > 0 && tick % every === 0)) {
        return true;
      }
    }
  }
  var editing = elt.getAttribute("data-skip-if-editing");
  if (editing && elt.querySelector(editing)) {
    return true;
  }
  var filled = elt.getAttribute("data-skip-if-filled");
  if (filled) {
    var field = document.querySelector(filled);
    if (field && field.value) {
      return true;
    }
  }
  return false;
}

document.addEventListener("htmx:confirm", function (event) {
  if (evpaySkipsRequest(event.detail.elt, event.detail.triggeringEvent)) {
    event.preventDefault();
  }
});

// Live polls ask "has it changed?": each sends the ETag of the fragment its element shows as
// If-None-Match, and an unchanged fragment comes back as an empty 304 that htmx does not swap
// (responseHandling in templates/base.html). Set here because a browser adds If-None-Match by
// itself only from its cache, and then hands the script a 200 with the cached body, which
// htmx would swap in again. Kept by element id: an outerHTML swap replaces the element.
var pollEtags = {};

document.addEventListener("htmx:configRequest", function (event) {
  var elt = event.detail.elt;
  if (elt.id && pollEtags[elt.id] && event.detail.headers["X-Evpay-Poll"]) {
    event.detail.headers["If-None-Match"] = pollEtags[elt.id];
  }
});

document.addEventListener("htmx:afterRequest", function (event) {
  // The requesting element: after an outerHTML swap it is detached and the event's own elt
  // is an ancestor htmx fired it on instead.
  var elt = (event.detail.requestConfig || {}).elt || event.detail.elt;
  var xhr = event.detail.xhr;
  if (!elt.id || !xhr || xhr.status === 304) {
    return;
  }
  var etag = xhr.getResponseHeader("ETag");
  if (etag && xhr.status === 200) {
    pollEtags[elt.id] = etag;
  } else {
    delete pollEtags[elt.id];
  }
});

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

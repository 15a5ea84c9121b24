// Callplane portal behaviour that cannot be inline (the CSP forbids inline
// script): open dialogs that htmx swaps in, close them, copy to clipboard.
(function () {
  "use strict";
  function openDialogs(root) {
    (root || document).querySelectorAll("dialog[data-autoopen]").forEach(function (d) {
      if (!d.open) { d.showModal(); }
    });
  }
  document.addEventListener("htmx:afterSettle", function (e) { openDialogs(e.target); });
  document.addEventListener("DOMContentLoaded", function () { openDialogs(document); });
  document.addEventListener("click", function (e) {
    var close = e.target.closest("[data-close-dialog]");
    if (close) {
      var d = close.closest("dialog");
      if (d) { d.close(); d.remove(); }
      e.preventDefault();
      return;
    }
    var copy = e.target.closest("[data-copy]");
    if (copy) {
      var src = document.getElementById(copy.getAttribute("data-copy"));
      if (src && navigator.clipboard) {
        navigator.clipboard.writeText(src.textContent.trim()).then(function () { copy.textContent = "Copied"; });
      }
      e.preventDefault();
    }
  });
  // A dialog whose form succeeded closes itself when htmx swaps the result.
  document.addEventListener("htmx:beforeSwap", function (e) {
    var d = e.detail.requestConfig && e.detail.requestConfig.elt && e.detail.requestConfig.elt.closest("dialog");
    if (d && e.detail.xhr.status < 400) { d.close(); d.remove(); }
  });
})();

// Callplane portal behaviour that cannot be inline (the CSP forbids inline
// script): open dialogs that htmx swaps in or that a button names, close
// them, copy to the clipboard.
(function () {
  "use strict";
  function openDialogs(root) {
    (root || document).querySelectorAll("dialog[data-autoopen]").forEach(function (d) {
      if (!d.open) { d.showModal(); }
    });
  }
  // closeDialog closes a dialog; one swapped in for a single use is
  // removed, a persistent one (rendered with the page) stays to reopen.
  function closeDialog(d) {
    d.close();
    if (!d.hasAttribute("data-persistent")) { d.remove(); }
  }
  function copyText(btn, text) {
    function done(ok) {
      btn.textContent = ok ? "Copied" : "Select and copy";
      btn.classList.toggle("copied", ok);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(false); });
      return;
    }
    done(false);
  }
  document.addEventListener("htmx:afterSettle", function (e) { openDialogs(e.target); });
  document.addEventListener("DOMContentLoaded", function () {
    openDialogs(document);
    // A persistent dialog rendered open (after a plain form post) becomes modal.
    document.querySelectorAll("dialog[data-persistent][open]").forEach(function (d) {
      d.close(); d.showModal();
    });
  });
  document.addEventListener("click", function (e) {
    var open = e.target.closest("[data-open-dialog]");
    if (open) {
      var target = document.getElementById(open.getAttribute("data-open-dialog"));
      if (target && !target.open) { target.showModal(); }
      e.preventDefault();
      return;
    }
    var close = e.target.closest("[data-close-dialog]");
    if (close) {
      var d = close.closest("dialog");
      if (d) { closeDialog(d); }
      e.preventDefault();
      return;
    }
    var copy = e.target.closest("[data-copy]");
    if (copy) {
      var src = document.getElementById(copy.getAttribute("data-copy"));
      if (src) { copyText(copy, src.textContent.trim()); }
      e.preventDefault();
    }
  });
  // A dialog whose form succeeded closes itself when htmx swaps the
  // result. Answers to htmx that carry X-Callplane-Status are handled
  // refusals (a form with errors): the dialog stays to show them.
  document.addEventListener("htmx:beforeSwap", function (e) {
    var d = e.detail.requestConfig && e.detail.requestConfig.elt && e.detail.requestConfig.elt.closest("dialog");
    var refused = e.detail.xhr.getResponseHeader("X-Callplane-Status");
    if (d && !d.hasAttribute("data-persistent") && e.detail.xhr.status < 400 && !refused) { closeDialog(d); }
  });
})();

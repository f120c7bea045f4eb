/* The text inbox, live: new texts appear without a reload, and a reply is sent once.
 * - Polls the JSON endpoint named in data-live-url (the thread list, or one thread) every few
 *   seconds with the fingerprint of what the page shows; when the server says it changed, the
 *   server-rendered (escaped) HTML replaces the list and a polite live region says so.
 * - Counts the reply's SMS segments as staff type (GSM-7 160/153, UCS-2 70/67).
 * - Disables the send button once the form is submitted (the server's idempotency key is what
 *   really prevents a double send; this only spares a second request).
 * Plain JS from our own origin (CSP script-src 'self'); the pages work without it. */
(function () {
  "use strict";

  var POLL_MS = 4000;
  var GSM = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡" +
            "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
  var GSM_EXT = "^{}\\[~]|€\f";

  function live(box, status, message) {
    var url = box.getAttribute("data-live-url");
    if (!url) { return; }
    function poll() {
      var v = encodeURIComponent(box.getAttribute("data-fingerprint") || "");
      var sep = url.indexOf("?") === -1 ? "?" : "&";
      fetch(url + sep + "v=" + v, {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (response) {
          if (!response.ok) { throw new Error(String(response.status)); }
          return response.json();
        })
        .then(function (data) {
          if (data.changed) {
            box.innerHTML = data.html;
            box.setAttribute("data-fingerprint", data.v);
            var state = document.getElementById("thread-state");
            if (state && data.state) { state.textContent = data.state; }
            if (status) { status.textContent = message + " (" + new Date().toLocaleTimeString() + ")"; }
          }
          window.setTimeout(poll, POLL_MS);
        })
        .catch(function () { window.setTimeout(poll, POLL_MS * 3); });
    }
    window.setTimeout(poll, POLL_MS);
  }

  function segments(text) {
    var gsm = true, septets = 0, units = 0, i, c;
    for (i = 0; i < text.length; i++) {
      c = text.charAt(i);
      if (GSM.indexOf(c) !== -1) { septets += 1; }
      else if (GSM_EXT.indexOf(c) !== -1) { septets += 2; }
      else { gsm = false; }
    }
    if (gsm) { return {count: septets <= 160 ? 1 : Math.ceil(septets / 153), encoding: "plain"}; }
    units = text.length;  // UTF-16 code units, as carriers count UCS-2
    return {count: units <= 70 ? 1 : Math.ceil(units / 67), encoding: "UCS-2 (emoji or special characters)"};
  }

  function counter() {
    var body = document.getElementById("reply-body");
    var out = document.getElementById("reply-count");
    if (!body || !out) { return; }
    var max = parseInt(body.getAttribute("data-max-segments"), 10) || 4;
    function update() {
      var text = body.value.replace(/^\s+|\s+$/g, "");
      if (!text) { out.textContent = ""; return; }
      var s = segments(text);
      out.textContent = text.length + " characters, " + s.count + " of at most " + max + " segments (" + s.encoding + ")" +
        (s.count > max ? ": too long to send" : "");
    }
    body.addEventListener("input", update);
    update();
  }

  function singleSubmit() {
    var forms = document.querySelectorAll("form[data-single-submit]");
    Array.prototype.forEach.call(forms, function (form) {
      form.addEventListener("submit", function () {
        var button = form.querySelector("button[type=submit]");
        if (button) { window.setTimeout(function () { button.disabled = true; button.textContent = "Sending…"; }, 0); }
      });
    });
  }

  function ready() {
    var threads = document.getElementById("inbox-threads");
    if (threads) { live(threads, document.getElementById("inbox-live"), "The list was updated"); }
    var entries = document.getElementById("thread-entries");
    if (entries) { live(entries, document.getElementById("thread-live"), "New activity on this thread"); }
    counter();
    singleSubmit();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", ready);
  } else {
    ready();
  }
})();

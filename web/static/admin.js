/* Staff UI enhancements. Every page works without this file; it adds:
 * - confirmation before destructive actions (forms with data-confirm),
 * - the template editor's live preview (debounced POST, CSRF token in a header),
 * - the CSV import progress bar (polls the job's status),
 * - the menu button on a phone and closing the Admin group on a click elsewhere or Escape.
 * Plain JS, no dependencies, loaded from our own origin (CSP: script-src 'self'). */
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  // -- the menu on a phone, and the Admin group ---------------------------------------------
  document.addEventListener("click", function (event) {
    var toggle = event.target.closest && event.target.closest(".nav-toggle");
    if (toggle) {
      var bar = toggle.closest(".topbar");
      var open = bar.classList.toggle("nav-open");
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
      return;
    }
    // a click elsewhere closes the Admin group, as a menu does
    document.querySelectorAll(".nav-group details[open]").forEach(function (group) {
      if (!group.contains(event.target)) { group.removeAttribute("open"); }
    });
  });
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") { return; }
    document.querySelectorAll(".nav-group details[open]").forEach(function (group) {
      group.removeAttribute("open");
      group.querySelector("summary").focus();
    });
  });

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // -- confirmations -----------------------------------------------------------------------
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var message = form.getAttribute && form.getAttribute("data-confirm");
    if (message && !window.confirm(message)) {
      event.preventDefault();
    }
  });

  // -- template editor live preview --------------------------------------------------------
  function setupEditor() {
    var form = document.getElementById("editor-form");
    if (!form) { return; }
    var url = form.getAttribute("data-preview-url");
    var source = document.getElementById("source");
    var firstName = document.getElementById("first_name");
    var target = document.getElementById("preview");
    var state = document.getElementById("live-state");
    var timer = null;
    var sequence = 0;

    function refresh() {
      var mine = ++sequence;
      state.textContent = "Updating preview…";
      fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrfToken()},
        body: JSON.stringify({source: source.value, first_name: firstName ? firstName.value : null})
      }).then(function (response) {
        if (response.status === 401) { throw new Error("Your session has ended: sign in again (copy your text first)."); }
        if (!response.ok) { throw new Error("Preview failed (" + response.status + ")."); }
        return response.json();
      }).then(function (data) {
        if (mine !== sequence) { return; }  // a newer request is on its way
        target.innerHTML = data.fragment;
        state.textContent = data.ok ? "Preview updated." : "Preview updated: " + data.problems.length + " problem(s).";
        form.setAttribute("data-preview-ok", data.ok ? "true" : "false");
      }).catch(function (error) {
        if (mine === sequence) { state.textContent = error.message; }
      });
    }

    function schedule() {
      window.clearTimeout(timer);
      timer = window.setTimeout(refresh, 450);
    }

    source.addEventListener("input", schedule);
    if (firstName) { firstName.addEventListener("input", schedule); }

    // "line 12" links in the problem list put the cursor on that line of the source.
    target.addEventListener("click", function (event) {
      var link = event.target.closest ? event.target.closest(".line-ref") : null;
      if (!link) { return; }
      event.preventDefault();
      var line = parseInt(link.getAttribute("data-line"), 10) || 1;
      var editor = window.dripTemplateEditor;  // the highlighting editor (template_editor.js), if loaded
      if (editor) {
        editor.focus();
        editor.setSelection({line: line - 1, ch: 0}, {line: line - 1, ch: editor.getLine(line - 1) ? editor.getLine(line - 1).length : 0});
        editor.scrollIntoView({line: line - 1, ch: 0}, 80);
        return;
      }
      var lines = source.value.split("\n");
      var start = 0;
      for (var i = 0; i < line - 1 && i < lines.length; i++) { start += lines[i].length + 1; }
      var end = start + (lines[line - 1] || "").length;
      source.focus();
      source.setSelectionRange(start, end);
      var lineHeight = source.scrollHeight / Math.max(lines.length, 1);
      source.scrollTop = Math.max(0, (line - 5) * lineHeight);
    });
  }

  // -- CSV import progress -----------------------------------------------------------------
  function setupImport() {
    var box = document.getElementById("import-progress");
    if (!box) { return; }
    var running = box.getAttribute("data-state");
    if (running !== "ready" && running !== "running") { return; }
    var url = box.getAttribute("data-status-url");
    var bar = document.getElementById("import-bar");
    var text = document.getElementById("import-text");

    function poll() {
      fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (response) { return response.json(); })
        .then(function (status) {
          bar.max = Math.max(status.total, 1);
          bar.value = status.processed;
          bar.textContent = status.percent + "%";
          if (status.state === "done" || status.state === "failed") {
            text.textContent = status.state === "done" ? "Finished. Loading the report…" : "The import stopped.";
            window.location.reload();
            return;
          }
          text.textContent = "Importing… " + status.processed + " of " + status.total + " rows (" + status.percent + "%).";
          window.setTimeout(poll, 700);
        })
        .catch(function () { window.setTimeout(poll, 2000); });
    }
    window.setTimeout(poll, 300);
  }

  function ready() {
    setupEditor();
    setupImport();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", ready);
  } else {
    ready();
  }
})();

/* The template editor: syntax highlighting (the vendored CodeMirror 5, HTML with Jinja tags marked on
 * top) and the "Insert a variable" buttons. The page works without this file: the plain textarea
 * stays, and the buttons insert into it.
 *
 * The live preview in admin.js reads the textarea: every change is copied back to it and announced
 * with an "input" event, so the preview does not need to know which editor is in use. */
(function () {
  "use strict";

  // Jinja on top of HTML: {{ variables }}, {% tags %} and {# comments #} get their own classes
  // (cm-jinja-variable, cm-jinja-tag, cm-jinja-comment), whatever the HTML around them.
  var jinjaOverlay = {
    token: function (stream) {
      var pairs = [["{{", "}}", "jinja-variable"], ["{%", "%}", "jinja-tag"], ["{#", "#}", "jinja-comment"]];
      for (var i = 0; i < pairs.length; i++) {
        if (stream.match(pairs[i][0])) {
          if (!stream.skipTo(pairs[i][1])) { stream.skipToEnd(); return pairs[i][2]; }
          stream.match(pairs[i][1]);
          return pairs[i][2];
        }
      }
      while (stream.next() != null && !stream.match(/^\{[{%#]/, false)) { /* plain text */ }
      return null;
    }
  };

  function setup() {
    var source = document.getElementById("source");
    if (!source) { return; }
    var editor = null;
    if (window.CodeMirror && CodeMirror.overlayMode) {
      var base = source.getAttribute("data-language") === "html" ? "htmlmixed" : "text/plain";
      CodeMirror.defineMode("jinja-" + base, function (config) {
        return CodeMirror.overlayMode(CodeMirror.getMode(config, base), jinjaOverlay);
      });
      editor = CodeMirror.fromTextArea(source, {
        mode: "jinja-" + base, lineNumbers: true, lineWrapping: true, indentUnit: 2, viewportMargin: 50,
        screenReaderLabel: "Template source"
      });
      editor.getWrapperElement().classList.add(source.classList.contains("tall") ? "tall" : "short");
      editor.on("change", function () {
        editor.save();
        source.dispatchEvent(new Event("input"));
      });
      source.form.addEventListener("submit", function () { editor.save(); });
      window.dripTemplateEditor = editor;  // admin.js moves the cursor to a problem's line with it
    }

    document.querySelectorAll("[data-insert]").forEach(function (button) {
      button.addEventListener("click", function () {
        var text = button.getAttribute("data-insert");
        if (editor) {
          editor.replaceSelection(text);
          editor.focus();
        } else {
          source.setRangeText(text, source.selectionStart, source.selectionEnd, "end");
          source.focus();
          source.dispatchEvent(new Event("input"));
        }
      });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setup);
  } else {
    setup();
  }
})();

// Fill the hidden time zone so messages respect the person's own quiet hours.
(function () {
  var field = document.getElementById("timezone");
  try {
    if (field && !field.value) field.value = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  } catch (e) { /* older browsers: the server derives the zone from the phone number */ }
})();
// Choosing the other language before typing anything shows the form in it (the consent wording
// too); once something is typed, the choice only sets the language of our messages.
(function () {
  var shown = document.querySelector('input[name="wording_language"]');
  var boxes = document.querySelectorAll('input[type="text"], input[type="email"], input[type="tel"]');
  Array.prototype.forEach.call(document.querySelectorAll('input[name="language"]'), function (radio) {
    radio.addEventListener("change", function () {
      var typed = Array.prototype.some.call(boxes, function (box) { return box.id !== "website" && box.value; });
      if (!typed && shown && radio.value !== shown.value) window.location.search = "?lang=" + radio.value;
    });
  });
})();

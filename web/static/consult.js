// Fill the hidden time zone so messages respect the person's own quiet hours.
(function () {
  var field = document.getElementById("timezone");
  try {
    if (field && !field.value) field.value = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  } catch (e) { /* older browsers: the server derives the zone from the phone number */ }
})();

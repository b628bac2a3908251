// Auto-refresh of dashboard pages (the only script): reload every data-refresh seconds while
// the box is ticked, the tab is visible and no form has focus; the choice is kept per browser.
(function () {
  "use strict";
  var key = "bnnbench.autorefresh";
  var box = document.getElementById("autorefresh");
  var secs = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
  if (!box || !secs) { return; }
  box.checked = window.localStorage.getItem(key) !== "off";
  box.addEventListener("change", function () {
    window.localStorage.setItem(key, box.checked ? "on" : "off");
  });
  window.setInterval(function () {
    if (box.checked && document.visibilityState === "visible" &&
        !document.querySelector("form:focus-within")) {
      window.location.reload();
    }
  }, secs * 1000);
})();

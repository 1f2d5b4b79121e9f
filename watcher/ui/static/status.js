// The status page's one behaviour beyond htmx: say so when the watcher stops answering, and stop saying so when it
// answers again (htmx keeps asking on its own).
(function () {
  "use strict";
  function offline(shown) {
    var banner = document.getElementById("offline");
    if (banner) banner.hidden = !shown;
  }
  document.addEventListener("htmx:sendError", function () { offline(true); });
  document.addEventListener("htmx:responseError", function () { offline(true); });
  document.addEventListener("htmx:afterSwap", function () { offline(false); });
})();

// Loads the dashboard's live script once the first page of the list has been
// painted (an external file: the pages' Content-Security-Policy allows no
// inline script). The script's address comes from the tag's data-live-script.
(function () {
  "use strict";
  var me = document.currentScript;
  var src = me && me.getAttribute("data-live-script");
  if (!src) return;
  requestAnimationFrame(function () {
    setTimeout(function () {
      var script = document.createElement("script");
      script.src = src;
      document.body.appendChild(script);
    }, 0);
  });
})();

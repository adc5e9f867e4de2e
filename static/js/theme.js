// Sets light or dark before the page is painted: the user's saved choice (the toggle in the
// sidebar, static/js/library.js), else the system's preference. app.css styles [data-theme].
(function () {
  "use strict";
  var saved = null;
  try { saved = localStorage.getItem("theme"); } catch (error) { /* storage blocked */ }
  var dark = saved ? saved === "dark" : window.matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.dataset.theme = dark ? "dark" : "light";
})();

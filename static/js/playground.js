// The text-completion playground: Ctrl+Enter (Cmd+Enter) in the prompt runs it, and the list of
// runs follows a streaming completion unless the reader has scrolled up.
// Token shading and the alternatives shown on hover come from the shared _logprobs.html.
(function () {
  "use strict";

  document.addEventListener("keydown", function (event) {
    if (event.target.id !== "prompt" || event.key !== "Enter" || !(event.ctrlKey || event.metaKey)) return;
    event.preventDefault();
    var run = document.getElementById("run");
    if (run && !run.disabled) document.getElementById("playground-form").requestSubmit();
  });

  var following = true;
  function runs() { return document.getElementById("runs"); }
  document.addEventListener("scroll", function (event) {
    var el = runs();
    if (el && event.target === el) following = el.scrollHeight - el.scrollTop - el.clientHeight < 80;
  }, true);
  function follow() {
    var el = runs();
    if (el && following) el.scrollTop = el.scrollHeight;
  }
  document.addEventListener("htmx:wsAfterMessage", follow);
  document.addEventListener("DOMContentLoaded", follow);
})();

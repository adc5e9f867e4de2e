// Token probabilities (templates/conversations/_logprobs.html): one tab stop per reply; the arrow
// keys, Home and End move between its tokens, and the focused token shows its alternatives.
(function () {
  "use strict";
  var KEYS = {ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1};
  document.addEventListener("keydown", function (event) {
    var token = event.target;
    if (!token.classList || !token.classList.contains("lp")) return;
    var tokens = Array.prototype.slice.call(token.parentNode.querySelectorAll(":scope > .lp"));
    var at = tokens.indexOf(token);
    var next = null;
    if (event.key in KEYS) next = tokens[at + KEYS[event.key]];
    else if (event.key === "Home") next = tokens[0];
    else if (event.key === "End") next = tokens[tokens.length - 1];
    if (!next) return;
    event.preventDefault();
    token.tabIndex = -1;
    next.tabIndex = 0;
    next.focus();
  });
})();

// Replies rendered by conversations/rendering.py: copy a code block; load an image only when asked.
(function () {
  "use strict";

  // Also used by library.js (copy a message). Plain-http deployments have no clipboard API: the
  // old way still works from a click.
  function copy(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    return new Promise(function (resolve, reject) {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "fixed";
      area.style.opacity = "0";
      document.body.appendChild(area);
      area.select();
      var ok = document.execCommand("copy");
      area.remove();
      if (ok) resolve(); else reject(new Error("copy failed"));
    });
  }
  window.chatCopy = copy;

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button.copy-code, button.md-image");
    if (!button || !button.closest(".markdown")) return;
    if (button.classList.contains("copy-code")) {
      var code = button.closest(".code-block").querySelector("pre code");
      copy(code ? code.textContent : "").then(function () {
        button.classList.add("copied");
        setTimeout(function () { button.classList.remove("copied"); }, 1500);
      }, function () { /* the button stays as it was */ });
      return;
    }
    // Only now does the browser ask the image's host for it (and without a Referer).
    var url;
    try { url = new URL(button.dataset.src); } catch (error) { return; }
    if (url.protocol !== "https:" && url.protocol !== "http:") return;
    var img = document.createElement("img");
    img.referrerPolicy = "no-referrer";
    img.alt = button.dataset.alt || "";
    img.src = url.href;
    button.replaceWith(img);
  });
})();

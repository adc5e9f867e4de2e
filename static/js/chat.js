// The little JavaScript the chat page needs; everything else is htmx and server-rendered HTML.
(function () {
  "use strict";

  function composer() { return document.getElementById("composer"); }
  function input() { return document.getElementById("composer-input"); }

  document.addEventListener("keydown", function (event) {
    var box = input();
    if (!box || event.target !== box) return;
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      var send = document.getElementById("send");
      if (send && !send.disabled && box.value.trim()) composer().requestSubmit();
    } else if (event.key === "Escape") {
      var stop = document.getElementById("stop");
      if (stop) { event.preventDefault(); stop.click(); }
    }
  });

  // The server empties the box (by swapping in a new one) once it has saved the message.
  document.addEventListener("htmx:oobAfterSwap", function (event) {
    if (event.detail.target && event.detail.target.id === "composer-input") input().focus();
  });

  // After a reconnect, ask the server to redraw the conversation: replies may have moved on.
  var opens = 0;
  var retries = 0;
  function status(text) {
    var el = document.getElementById("connection");
    if (el) { el.textContent = text; el.hidden = !text; }
  }
  // The messages come translated from the page (data-lost, data-gone on #connection).
  function said(name, english) {
    var el = document.getElementById("connection");
    return (el && el.dataset[name]) || english;
  }
  document.addEventListener("htmx:wsOpen", function (event) {
    opens += 1;
    retries = 0;
    status("");
    if (opens > 1) event.detail.socketWrapper.sendImmediately(JSON.stringify({action: "sync"}), event.target);
  });
  document.addEventListener("htmx:wsClose", function (event) {
    var code = event.detail.event.code;
    if (code === 4401 || code === 4404) { status(said("gone", "You no longer have access to this conversation. Reload the page.")); return; }
    status(said("lost", "Connection lost. Reconnecting…"));
    // The extension itself retries after 1006/1011/1012/1013; a clean close (server restart) is ours to retry.
    if ([1006, 1011, 1012, 1013].indexOf(code) < 0) {
      var wrapper = event.detail.socketWrapper;
      setTimeout(function () { retries += 1; wrapper.reconnect(); }, Math.min(500 * Math.pow(2, retries), 10000));
    }
  });

  // Follow the stream unless the reader has scrolled up.
  var following = true;
  function scroller() { return document.getElementById("messages"); }
  document.addEventListener("scroll", function (event) {
    var el = scroller();
    if (el && event.target === el) following = el.scrollHeight - el.scrollTop - el.clientHeight < 80;
  }, true);
  function follow() {
    var el = scroller();
    if (el && following) el.scrollTop = el.scrollHeight;
  }
  document.addEventListener("htmx:wsAfterMessage", follow);
  document.addEventListener("DOMContentLoaded", function () {
    follow();
    var box = input();
    if (box) box.focus();
  });
})();

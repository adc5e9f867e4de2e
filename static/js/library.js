// The page around the chat: light/dark toggle, the sidebar as a drawer at phone width, the New chat
// shortcut, copy buttons, older pages that keep the reading position, and replies read out
// sentence by sentence to screen readers while they stream.
(function () {
  "use strict";

  var root = document.documentElement;

  // -- light / dark: follows the system until the user picks one here --------------------------
  // (static/js/theme.js applied it before the first paint.)
  var systemDark = window.matchMedia("(prefers-color-scheme: dark)");
  function isDark() { return root.dataset.theme === "dark"; }
  function showTheme() {
    var toggle = document.getElementById("theme-toggle");
    if (toggle) toggle.setAttribute("aria-pressed", String(isDark()));
  }
  function saved() {
    try { return localStorage.getItem("theme"); } catch (error) { return null; }
  }
  systemDark.addEventListener("change", function () {
    if (!saved()) { root.dataset.theme = systemDark.matches ? "dark" : "light"; showTheme(); }
  });
  document.addEventListener("DOMContentLoaded", showTheme);
  function toggleTheme() {
    var theme = isDark() ? "light" : "dark";
    root.dataset.theme = theme;
    try { localStorage.setItem("theme", theme); } catch (error) { /* not saved, still applied */ }
    showTheme();
  }

  // -- the sidebar as a drawer (only at phone width) -------------------------------------------
  var narrow = window.matchMedia("(max-width: 700px)");
  function sidebar() { return document.getElementById("sidebar"); }
  function drawerIsOpen() { return document.body.classList.contains("drawer-open"); }
  function setDrawer(open) {
    var toggle = document.getElementById("sidebar-toggle");
    var backdrop = document.querySelector(".sidebar-backdrop");
    var side = sidebar();
    if (!side) return;
    var hadFocus = side.contains(document.activeElement);
    document.body.classList.toggle("drawer-open", open);
    if (toggle) toggle.setAttribute("aria-expanded", String(open));
    if (backdrop) backdrop.hidden = !open;
    // A closed drawer is off screen: keep it out of the tab order and away from screen readers.
    side.inert = narrow.matches && !open;
    if (open) {
      var search = document.getElementById("sidebar-q");
      if (search) search.focus();
    } else if (hadFocus && toggle && narrow.matches) {
      toggle.focus();
    }
  }
  narrow.addEventListener("change", function () { setDrawer(false); });
  document.addEventListener("DOMContentLoaded", function () { setDrawer(false); });

  // -- copy a message ----------------------------------------------------------------------------
  // markdown.js (loaded first) owns copying to the clipboard, with its plain-http fallback.
  function copyText(text) { return window.chatCopy(text); }

  function copy(button) {
    var source = document.getElementById(button.dataset.copy);
    if (!source) return;
    var label = button.dataset.label || button.textContent;
    button.dataset.label = label;
    copyText(source.content.textContent).then(function () {
      button.textContent = button.dataset.copied || "✓";
    }, function () {
      button.textContent = button.dataset.failed || "✗";
    }).then(function () {
      announce(button.textContent);
      setTimeout(function () { button.textContent = label; }, 1500);
    });
  }

  document.addEventListener("click", function (event) {
    var target = event.target;
    if (!(target instanceof Element)) return;
    if (target.closest("#theme-toggle")) { toggleTheme(); return; }
    if (target.closest("#sidebar-toggle")) { setDrawer(!drawerIsOpen()); return; }
    if (target.closest("[data-drawer-close]")) { setDrawer(false); return; }
    var copyButton = target.closest("button[data-copy]");
    if (copyButton) { copy(copyButton); return; }
    // Following a link in the drawer closes it (the next page starts closed anyway).
    if (drawerIsOpen() && target.closest("#sidebar a")) setDrawer(false);
    // A click outside an open menu closes it, and so does choosing a link in it (a download stays on the page).
    var chosen = target.closest("details.menu a");
    document.querySelectorAll("details.menu[open]").forEach(function (menu) {
      if (!menu.contains(target) || menu.contains(chosen)) menu.open = false;
    });
  });

  document.addEventListener("keydown", function (event) {
    // Ctrl+Shift+O (Cmd+Shift+O on a Mac) starts a new chat, as in ChatGPT.
    if ((event.ctrlKey || event.metaKey) && event.shiftKey && !event.altKey && event.code === "KeyO") {
      var button = document.getElementById("new-chat");
      if (button && button.form) { event.preventDefault(); button.form.requestSubmit(button); }
      return;
    }
    if (event.key !== "Escape") return;
    var menu = document.querySelector("details.menu[open]");
    if (menu) { menu.open = false; menu.querySelector("summary").focus(); return; }
    if (drawerIsOpen()) { setDrawer(false); return; }
    var search = document.getElementById("sidebar-q");
    if (search && event.target === search && search.value) { search.value = ""; search.dispatchEvent(new Event("search")); }
  });

  // -- reading replies out while they stream ------------------------------------------------------
  var announced = {};  // message id -> how much of its text has been read out
  function announce(text) {
    var region = document.getElementById("announcer");
    text = text.trim();
    if (!region || !text) return;
    var line = document.createElement("p");
    line.textContent = text;
    region.appendChild(line);
    while (region.childNodes.length > 3) region.removeChild(region.firstChild);
  }
  // Where a sentence ends: . ! ? : ; or a line break followed by a space, or CJK end punctuation.
  var SENTENCE_END = /[.!?…:;\n](?=\s)|[。！？]/g;
  function lastSentenceEnd(text) {
    var last = -1;
    var match;
    SENTENCE_END.lastIndex = 0;
    while ((match = SENTENCE_END.exec(text))) last = match.index;
    return last;
  }
  function readOut(id, text, finished) {
    var done = announced[id] || 0;
    var fresh = text.slice(done);
    if (!finished) {
      // Only whole sentences while it streams; the rest when the reply ends.
      var end = lastSentenceEnd(fresh);
      if (end < 0) return;
      fresh = fresh.slice(0, end + 1);
    }
    announced[id] = done + fresh.length;
    announce(fresh);
  }
  document.addEventListener("htmx:wsAfterMessage", function () {
    var streaming = {};
    document.querySelectorAll('.msg-assistant[data-status="streaming"]').forEach(function (article) {
      var text = document.getElementById(article.id + "-text");
      if (!text) return;
      streaming[article.id] = true;
      if (!(article.id in announced)) announced[article.id] = 0;
      readOut(article.id, text.innerText, false);  // innerText: blocks end in line breaks
    });
    Object.keys(announced).forEach(function (id) {
      if (streaming[id]) return;
      var text = document.getElementById(id + "-text");
      if (text) readOut(id, text.innerText, true);
      delete announced[id];
    });
  });

  // -- older messages load above without moving what the reader is looking at -----------------------
  var keep = null;
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    if (!target || target.id !== "older-messages") return;
    var scroller = document.getElementById("messages");
    keep = {scroller: scroller, fromBottom: scroller.scrollHeight - scroller.scrollTop, focused: document.activeElement === target};
  });
  document.addEventListener("htmx:afterSwap", function () {
    if (!keep) return;
    var state = keep;
    keep = null;
    state.scroller.scrollTop = state.scroller.scrollHeight - state.fromBottom;
    if (state.focused) {
      var next = document.getElementById("older-messages") || state.scroller.querySelector(".msg");
      if (next) next.focus({preventScroll: true});
    }
  });

  // After pin/archive the menu is drawn again: keep the keyboard where it was.
  document.addEventListener("htmx:afterSwap", function (event) {
    if (event.target.id === "conversation-actions") {
      var summary = event.target.querySelector("summary");
      if (summary) summary.focus();
    }
  });

  // The window title follows the conversation title (renamed here, or named by the model).
  document.addEventListener("htmx:oobAfterSwap", function (event) {
    var target = event.detail.target;
    if (target && target.id === "title-form") {
      var input = document.getElementById("conv-title");
      if (input && input.value) document.title = document.title.replace(/^.*?( · [^·]*)$/, input.value + "$1");
    }
  });
})();

// The operator console's only script: the board follows its server-sent events and
// swaps in the columns the server renders; a region marked data-poll refreshes itself
// until the result it waits for arrives. Everything works without it, by reloading.
"use strict";

function swap(id, url) {
  return fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
    .then(function (response) { return response.ok ? response.text() : null; })
    .then(function (text) {
      if (text === null) { return; }
      var target = document.getElementById(id);
      if (!target) { return; }
      var doc = new DOMParser().parseFromString(text, "text/html");
      var fresh = doc.getElementById(id) || doc.body;
      var active = document.activeElement;
      // Do not pull a half-typed reply from under the person typing it.
      if (active && target.contains(active) && active.tagName === "TEXTAREA" && active.value) {
        return;
      }
      target.innerHTML = fresh.innerHTML;
    });
}

function followBoard(board) {
  var pending = null;
  function refresh() {
    if (pending) { return; }
    pending = setTimeout(function () {
      pending = null;
      fetch(board.dataset.fragment, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (text) {
          var active = document.activeElement;
          if (text === null) { return; }
          if (active && board.contains(active) && active.tagName === "TEXTAREA" && active.value) {
            refresh();
            return;
          }
          board.innerHTML = text;
          board.dataset.updated = String(Date.now());
        });
    }, 150);
  }
  var source = new EventSource(board.dataset.stream);
  source.addEventListener("board", refresh);
  source.addEventListener("move", refresh);
  source.addEventListener("open", function () { board.dataset.live = "yes"; });
}

function poll(region) {
  var seconds = Number(region.dataset.poll) || 5;
  var url = location.pathname + location.search;
  setInterval(function () { swap(region.id, url); }, seconds * 1000);
}

document.addEventListener("DOMContentLoaded", function () {
  var board = document.getElementById("board");
  if (board && board.dataset.stream && window.EventSource) { followBoard(board); }
  document.querySelectorAll("[data-poll]").forEach(poll);
});

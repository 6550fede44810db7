// Tasklane dashboard: dates in the browser's time zone (UTC on hover) and
// the overview's self-refresh. Plain JavaScript, no dependencies; the pages
// work without it.
(function () {
  "use strict";
  function localize(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d.getTime())) {
        el.textContent = d.toLocaleString();
      }
    });
  }
  localize(document);

  var live = document.getElementById("live");
  if (!live || !live.dataset.refresh) {
    return;
  }
  var paused = false;
  var button = document.getElementById("pause");
  if (button) {
    button.addEventListener("click", function () {
      paused = !paused;
      button.textContent = paused ? "Resume updates" : "Pause updates";
      button.setAttribute("aria-pressed", String(paused));
    });
  }
  setInterval(function () {
    if (paused || document.hidden) {
      return;
    }
    var url = new URL(window.location.href);
    url.searchParams.set("partial", "1");
    fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) {
        if (!r.ok) {
          throw new Error("status " + r.status);
        }
        return r.text();
      })
      .then(function (html) {
        // Server-rendered by html/template: every value is escaped.
        live.innerHTML = html;
        localize(live);
      })
      .catch(function () { /* keep the last view; the next tick retries */ });
  }, Number(live.dataset.refresh));
})();

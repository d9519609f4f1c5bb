// overnight's dashboard: the little script it needs, and nothing from elsewhere.
//
// 1. The element marked data-live="MS" is refreshed every MS milliseconds:
//    the page is fetched again with `x-overnight-live: 1`, and the server
//    answers only that element's contents; once those contents hold a
//    [data-live-end] marker (the batch ended), refreshing stops.
// 2. A form marked data-confirm="..." asks before it is sent.
"use strict";

(function () {
  const live = document.querySelector("[data-live]");
  if (live) {
    const every = Math.max(500, parseInt(live.dataset.live, 10) || 2000);
    const refresh = async function () {
      if (!document.hidden) {
        try {
          const answer = await fetch(window.location.href, {
            headers: { "x-overnight-live": "1" },
            credentials: "same-origin",
            cache: "no-store",
          });
          if (answer.ok) {
            live.innerHTML = await answer.text();
            if (live.querySelector("[data-live-end]")) {
              return;
            }
          } else if (answer.status === 401) {
            window.location.reload();
            return;
          }
        } catch (error) {
          // The server is restarting or the network dropped: try again later.
        }
      }
      window.setTimeout(refresh, every);
    };
    window.setTimeout(refresh, every);
  }

  document.addEventListener("submit", function (event) {
    const message = event.target.dataset && event.target.dataset.confirm;
    if (message && !window.confirm(message)) {
      event.preventDefault();
    }
  });
})();

// background-tasks dashboard: a select-all box, a confirmation before
// destructive actions, and live updates. Everything works without it.
"use strict";

// Listeners sit on the document, not on the elements: live updates
// replace the tables that hold the select-all boxes.
document.addEventListener("change", (event) => {
  const all = event.target;
  if (!all.matches("input.select-all")) return;
  for (const box of all.form.querySelectorAll("input[type=checkbox][name=id]")) {
    box.checked = all.checked;
  }
});
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-confirm]");
  if (button && !window.confirm(button.dataset.confirm)) event.preventDefault();
});

// Live updates. While the tab is visible, the page is fetched again every
// LIVE_EVERY ms, and each element marked data-live="<name>" is replaced by
// the element of the same name in the new copy. The server renders both
// copies with the same code. A region is left as it is, until a later
// round, while a person is using it: a control in it has the focus, text
// in it is selected, or (data-live-hold="hover") the pointer is on it.
// Ticked boxes stay ticked across a replacement.
const LIVE_EVERY = 2000;

const live = {
  timer: null,
  // A fetch is under way: no second one starts beside it.
  busy: false,
  // Set when the server answers that the page is no more (a finished
  // task's page answers 404): it is not asked again.
  stopped: false,
  status: null,
};

function showStatus(text, title) {
  if (!live.status) return;
  live.status.textContent = text;
  live.status.dataset.state = text;
  live.status.title = title || "";
}

function inUse(region) {
  const focused = document.activeElement;
  if (focused && focused !== document.body && region.contains(focused)) return true;
  const selection = window.getSelection();
  if (selection && !selection.isCollapsed && region.contains(selection.anchorNode)) return true;
  return region.dataset.liveHold === "hover" && region.matches(":hover");
}

function replaceRegions(fresh) {
  for (const old of document.querySelectorAll("[data-live]")) {
    const name = old.dataset.live;
    const next = fresh.querySelector(`[data-live="${CSS.escape(name)}"]`);
    if (!next || next.innerHTML === old.innerHTML || inUse(old)) continue;
    const ticked = new Set(
      Array.from(old.querySelectorAll("input[type=checkbox]:checked"), (box) => box.name + "=" + box.value),
    );
    const adopted = document.adoptNode(next);
    for (const box of adopted.querySelectorAll("input[type=checkbox]")) {
      if (ticked.has(box.name + "=" + box.value)) box.checked = true;
    }
    old.replaceWith(adopted);
  }
}

async function refresh() {
  live.timer = null;
  if (live.stopped || document.hidden) return;
  live.busy = true;
  try {
    const response = await fetch(window.location.href, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "text/html" },
    });
    const text = await response.text();
    // A page answers HTML, also under a 400 (a list whose filters do not
    // parse says so on the page); an error of its own answers text.
    if ((response.headers.get("Content-Type") || "").startsWith("text/html")) {
      replaceRegions(new DOMParser().parseFromString(text, "text/html"));
      showStatus("live", `updated at ${new Date().toLocaleTimeString()}; updates every ${LIVE_EVERY / 1000} s`);
    } else if (response.status >= 400 && response.status < 500) {
      // The page is gone (a finished task's page answers 404) or refused:
      // saying why beats showing old data as current.
      live.stopped = true;
      showStatus("not updating", text.trim());
      const note = document.createElement("p");
      note.className = "problem";
      note.setAttribute("role", "alert");
      note.textContent = `This page stopped updating: ${text.trim()}`;
      document.querySelector("main").prepend(note);
    } else {
      showStatus("retrying", `the server answered ${response.status}; trying again`);
    }
  } catch (error) {
    showStatus("offline", `the dashboard could not be reached (${error.message}); trying again`);
  }
  live.busy = false;
  schedule();
}

function schedule() {
  if (live.timer === null && !live.busy && !live.stopped && !document.hidden) {
    live.timer = window.setTimeout(refresh, LIVE_EVERY);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  if (!document.querySelector("[data-live]")) return;
  live.status = document.getElementById("live");
  showStatus("live", `updates every ${LIVE_EVERY / 1000} s`);
  schedule();
});

document.addEventListener("visibilitychange", () => {
  if (document.hidden) {
    window.clearTimeout(live.timer);
    live.timer = null;
    showStatus("paused", "the tab is hidden");
  } else if (!live.stopped && live.timer === null && !live.busy) {
    // Back in view: catch up at once.
    live.timer = window.setTimeout(refresh, 0);
  }
});

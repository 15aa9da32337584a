// background-tasks dashboard: a select-all box and a confirmation before
// destructive actions. Everything works without it.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const all of document.querySelectorAll("input.select-all")) {
    all.addEventListener("change", () => {
      const form = all.closest("form");
      for (const box of form.querySelectorAll('input[type=checkbox][name=id]')) {
        box.checked = all.checked;
      }
    });
  }
  for (const button of document.querySelectorAll("button[data-confirm]")) {
    button.addEventListener("click", (event) => {
      if (!window.confirm(button.dataset.confirm)) event.preventDefault();
    });
  }
});

// smartprice page niceties; every form works without this file.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Say that work is under way, and stop a second submit of the same form.
  for (const form of document.querySelectorAll("form.busy-on-submit")) {
    form.addEventListener("submit", () => {
      const button = form.querySelector("button[type=submit]");
      button.dataset.label = button.textContent;
      button.textContent = "Working…";
      setTimeout(() => { button.disabled = true; }, 0);  // after the browser has taken the form's data
      setTimeout(() => { button.disabled = false; button.textContent = button.dataset.label; }, 15000);  // a download leaves the page as it is
    });
  }
});

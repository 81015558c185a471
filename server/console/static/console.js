// Progressive enhancement only: every page works without JavaScript.
// - a select marked data-autosubmit submits its form when changed;
document.addEventListener("change", (event) => {
  const target = event.target;
  if (target instanceof HTMLSelectElement && target.dataset.autosubmit !== undefined && target.form) {
    target.form.requestSubmit();
  }
});

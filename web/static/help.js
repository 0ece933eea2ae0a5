// Field help ("?"): show or hide the help text next to a field. Works without the UI kit's JS,
// and with the keyboard (it is a real <button>).
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-help]");
  if (!button) return;
  const help = document.getElementById(button.dataset.help);
  if (!help) return;
  const open = help.hasAttribute("hidden");
  help.toggleAttribute("hidden", !open);
  button.setAttribute("aria-expanded", String(open));
});

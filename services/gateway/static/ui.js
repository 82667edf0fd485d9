// Page-wide helpers shared by the views: navigation, one-shot messages, screen-reader announcements.
import { notice } from "./dom.js";

let pending = null;

export function navigate(hash) {
  if (location.hash === hash) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else location.hash = hash;
}

/** Show a message at the top of the next view that renders. */
export function flash(kind, text) {
  pending = { kind, text };
}

export function takeFlash() {
  const message = pending;
  pending = null;
  return message ? notice(message.kind, message.text) : null;
}

/** Say something to screen-reader users without moving focus. */
export function announce(text) {
  const live = document.getElementById("live");
  live.textContent = "";
  // A fresh text node after a tick makes screen readers repeat an identical message.
  setTimeout(() => {
    live.textContent = text;
  }, 50);
}

/** Disable a button while an async action runs; returns the action's result. */
export async function busy(button, action) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await action();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

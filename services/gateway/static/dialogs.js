// Accessible confirmation dialogs built on <dialog> (focus trap and Escape come with it).
import { h } from "./dom.js";
import { t } from "./i18n.js";

/**
 * Ask before something that cannot be undone. Resolves true when confirmed.
 * With `acknowledge`, the confirm button stays disabled until that checkbox is ticked.
 */
export function confirmDialog({ title, body, confirmLabel, acknowledge = null, danger = true }) {
  return new Promise((resolve) => {
    const ok = h(
      "button",
      { type: "submit", class: danger ? "btn btn-danger" : "btn", value: "ok" },
      confirmLabel,
    );
    const check = acknowledge ? h("input", { type: "checkbox", id: "confirm-ack" }) : null;
    if (check) {
      ok.disabled = true;
      check.addEventListener("change", () => {
        ok.disabled = !check.checked;
      });
    }
    const titleId = "confirm-title";
    const dialog = h(
      "dialog",
      { class: "dialog", "aria-labelledby": titleId },
      h(
        "form",
        { method: "dialog" },
        h("h2", { id: titleId }, title),
        h("p", {}, body),
        check ? h("p", { class: "check" }, check, h("label", { for: "confirm-ack" }, acknowledge)) : null,
        h(
          "div",
          { class: "actions" },
          h("button", { type: "submit", class: "btn btn-quiet", value: "cancel" }, t("common.cancel")),
          ok,
        ),
      ),
    );
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok");
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

// The account: settings, and deleting photos, the likeness model or everything.
import { api, getList } from "../api.js";
import { fill, h, notice } from "../dom.js";
import { confirmDialog } from "../dialogs.js";
import { formatDate, LOCALES, locale, setLocale, t } from "../i18n.js";
import * as session from "../session.js";
import { loadMe, state } from "../state.js";
import { announce, busy, flash, navigate } from "../ui.js";

export async function render(root) {
  root.append(h("h1", {}, t("nav.account")));
  try {
    await loadMe();
  } catch (error) {
    root.append(notice("error", error.message));
    return;
  }
  const me = state.me;
  const status = h("div", { role: "status" });

  // Profile
  root.append(
    h("section", { class: "card", "aria-labelledby": "acct-profile" },
      h("h2", { id: "acct-profile" }, t("account.profile")),
      h("dl", { class: "facts" },
        h("dt", {}, t("field.email")), h("dd", { id: "acct-email" }, me.email),
        h("dt", {}, t("account.verified")),
        h("dd", {}, me.email_verified ? t("common.yes") : t("account.not_verified")),
        h("dt", {}, t("account.consent")),
        h("dd", { id: "acct-consent" }, me.face_consent_at ? formatDate(me.face_consent_at) : t("account.no_consent")),
        h("dt", {}, t("account.since")), h("dd", {}, formatDate(me.created_at))),
      h("p", {}, h("a", { href: "#/reset" }, t("account.change_password"))),
    ),
  );

  // Settings
  const emailBox = h("input", { type: "checkbox", id: "email-results", checked: Boolean(me.email_results) });
  emailBox.addEventListener("change", async () => {
    emailBox.disabled = true;
    try {
      state.me = await api("/v1/me", { method: "PATCH", json: { email_results: emailBox.checked } });
      announce(emailBox.checked ? t("account.email_on") : t("account.email_off"));
    } catch (error) {
      emailBox.checked = !emailBox.checked;
      fill(status, notice("error", error.message));
    }
    emailBox.disabled = false;
  });
  const lang = h("select", { id: "acct-lang" },
    LOCALES.map((l) => h("option", { value: l, selected: l === locale() }, t(`lang.${l}`))));
  lang.addEventListener("change", async () => {
    try {
      state.me = await api("/v1/me", { method: "PATCH", json: { locale: lang.value } });
    } catch (error) {
      fill(status, notice("error", error.message));
    }
    setLocale(lang.value); // re-renders this view in the new language
  });
  root.append(
    h("section", { class: "card stack", "aria-labelledby": "acct-settings" },
      h("h2", { id: "acct-settings" }, t("account.settings")),
      h("p", { class: "check" }, emailBox, h("label", { for: "email-results" }, t("account.email_results"))),
      h("div", { class: "field" }, h("label", { for: "acct-lang" }, t("nav.language")), lang),
    ),
  );

  // Data
  const delPhotos = h("button", { type: "button", class: "btn btn-quiet", id: "delete-photos" }, t("account.delete_photos"));
  const delModel = h("button", { type: "button", class: "btn btn-quiet", id: "delete-model" }, t("account.delete_model"));
  const delAll = h("button", { type: "button", class: "btn btn-danger", id: "delete-all" }, t("account.delete_all"));

  /** On a click: ask with `dialog`; once confirmed, run `work` with the button busy, then `done`
   * with its result; a failure is shown in the status line. */
  function confirmThen(button, dialog, work, done) {
    button.addEventListener("click", async () => {
      if (!(await confirmDialog(dialog))) return;
      try {
        done(await busy(button, work));
      } catch (error) {
        fill(status, notice("error", error.message));
      }
    });
  }

  /** Ask, then delete every item of a list, one DELETE each (the API has no bulk delete). */
  function deleteEach(button, { title, body, path, key, done }) {
    confirmThen(button, { title: t(title), body: t(body), confirmLabel: t("common.delete") }, async () => {
      const items = await getList(path, key);
      for (const item of items) await api(`${path}/${item.id}`, { method: "DELETE" });
      return items.length;
    }, (n) => fill(status, notice("ok", t(done, { n }))));
  }
  deleteEach(delPhotos, { title: "account.delete_photos", body: "account.delete_photos_body", path: "/v1/photos", key: "photos",
    done: "account.photos_deleted" });
  deleteEach(delModel, { title: "account.delete_model", body: "account.delete_model_body", path: "/v1/likenesses", key: "likenesses",
    done: "account.models_deleted" });

  // Withdrawing the consent deletes the face data (photos, pose photos, likeness models); the rest stays.
  const withdraw = h("button", { type: "button", class: "btn btn-quiet", id: "withdraw-consent" }, t("account.withdraw_consent"));
  withdraw.hidden = !me.face_consent_at;
  confirmThen(withdraw, {
    title: t("account.withdraw_consent_title"),
    body: t("account.withdraw_consent_body"),
    confirmLabel: t("account.withdraw_consent_confirm"),
  }, () => api("/v1/me/consent", { method: "DELETE" }), () => {
    state.me = { ...state.me, face_consent_at: null };
    fill(root.querySelector("#acct-consent"), t("account.no_consent"));
    withdraw.hidden = true;
    fill(status, notice("ok", t("account.consent_withdrawn")));
  });

  confirmThen(delAll, {
    title: t("account.delete_all_title"),
    body: t("account.delete_all_body"),
    confirmLabel: t("account.delete_all_confirm"),
    acknowledge: t("account.delete_all_ack"),
  }, () => api("/v1/me", { method: "DELETE" }), () => {
    session.clear();
    state.me = null;
    flash("ok", t("account.deleted"));
    navigate("#/");
  });

  root.append(
    h("section", { class: "card stack", "aria-labelledby": "acct-data" },
      h("h2", { id: "acct-data" }, t("account.data")),
      h("p", {}, t("account.data_intro")),
      h("div", { class: "actions" }, delPhotos, delModel, withdraw),
      h("hr"),
      h("p", {}, t("account.delete_all_intro")),
      h("div", { class: "actions" }, delAll),
    ),
    status,
  );
}

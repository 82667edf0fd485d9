// Sign up, log in, email verification and password reset.
import { api } from "../api.js";
import { field, fill, h, notice } from "../dom.js";
import { locale, setLocale, t } from "../i18n.js";
import * as session from "../session.js";
import { loadMe, state } from "../state.js";
import { busy, flash, navigate } from "../ui.js";

const MIN_PASSWORD = 10; // the gateway refuses shorter ones (SignupIn)

function emailInput() {
  return h("input", { type: "email", name: "email", autocomplete: "email", required: true });
}

function passwordInput(autocomplete) {
  return h("input", {
    type: "password",
    name: "password",
    autocomplete,
    required: true,
    minlength: autocomplete === "new-password" ? MIN_PASSWORD : null,
  });
}

function errorText(error) {
  return error.status === 0 ? t("error.network") : error.message;
}

/** A form whose submit runs `action`; errors land in its message slot. */
function authForm(children, submitLabel, action) {
  const slot = h("div", { class: "form-message" });
  const submit = h("button", { type: "submit", class: "btn" }, submitLabel);
  const form = h("form", { class: "stack", novalidate: false }, slot, children, submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    fill(slot);
    try {
      await busy(submit, () => action(form, slot));
    } catch (error) {
      fill(slot, notice("error", errorText(error)));
      slot.querySelector('[role="alert"]').focus?.();
    }
  });
  return form;
}

export function login(root, { query }) {
  const email = emailInput();
  const password = passwordInput("current-password");
  const form = authForm(
    [field(t("field.email"), email), field(t("field.password"), password)],
    t("login.submit"),
    async () => {
      const tokens = await api("/v1/auth/login", {
        method: "POST",
        auth: false,
        json: { email: email.value.trim(), password: password.value },
      });
      session.save(tokens);
      const me = await loadMe();
      if (me && me.locale) setLocale(me.locale, { silent: true });
      const next = query.get("next");
      navigate(next && next.startsWith("/") ? `#${next}` : "#/");
    },
  );
  root.append(
    h("section", { class: "card narrow" },
      h("h1", {}, t("login.title")),
      form,
      h("p", {}, h("a", { href: "#/reset" }, t("login.forgot"))),
      h("p", {}, t("login.no_account"), " ", h("a", { href: "#/signup" }, t("nav.signup"))),
    ),
  );
}

export function signup(root) {
  const email = emailInput();
  const password = passwordInput("new-password");
  const form = authForm(
    [
      field(t("field.email"), email),
      field(t("field.password"), password, t("field.password_hint", { n: MIN_PASSWORD })),
    ],
    t("signup.submit"),
    async (formEl, slot) => {
      const body = await api("/v1/auth/signup", {
        method: "POST",
        auth: false,
        json: { email: email.value.trim(), password: password.value, locale: locale() },
      });
      formEl.replaceChildren(
        notice("ok", h("strong", {}, t("signup.sent_title")), " ", (body && body.detail) || ""),
        h("p", {}, t("signup.sent_next")),
        h("p", {}, h("a", { class: "btn", href: "#/login" }, t("nav.login"))),
      );
      slot.remove();
    },
  );
  root.append(
    h("section", { class: "card narrow" },
      h("h1", {}, t("signup.title")),
      h("p", {}, t("signup.intro")),
      form,
      h("p", {}, t("signup.have_account"), " ", h("a", { href: "#/login" }, t("nav.login"))),
    ),
  );
}

export async function verify(root, { query }) {
  const token = query.get("token");
  const card = h("section", { class: "card narrow" }, h("h1", {}, t("verify.title")));
  root.append(card);
  if (!token) {
    card.append(notice("error", t("verify.missing")));
    return;
  }
  const status = h("p", { role: "status" }, t("verify.working"));
  card.append(status);
  try {
    await api("/v1/auth/verify-email", { method: "POST", auth: false, json: { token } });
    if (session.loggedIn()) await loadMe().catch(() => null);
    status.replaceWith(
      notice("ok", t("verify.done")),
      h("p", {}, h("a", { class: "btn", href: session.loggedIn() ? "#/photos" : "#/login" },
        session.loggedIn() ? t("home.next_photos") : t("nav.login"))),
    );
  } catch (error) {
    status.replaceWith(notice("error", errorText(error)));
  }
}

export function reset(root, { query }) {
  const token = query.get("token");
  const card = h("section", { class: "card narrow" }, h("h1", {}, t("reset.title")));
  root.append(card);
  if (!token) {
    const email = emailInput();
    if (state.me) email.value = state.me.email;
    card.append(
      h("p", {}, t("reset.intro")),
      authForm([field(t("field.email"), email)], t("reset.send"), async (form, slot) => {
        const body = await api("/v1/auth/password-reset", {
          method: "POST",
          auth: false,
          json: { email: email.value.trim() },
        });
        form.replaceChildren(notice("ok", (body && body.detail) || t("reset.sent")));
        slot.remove();
      }),
    );
    return;
  }
  const password = passwordInput("new-password");
  const again = passwordInput("new-password");
  card.append(
    authForm(
      [
        field(t("reset.new_password"), password, t("field.password_hint", { n: MIN_PASSWORD })),
        field(t("reset.repeat"), again),
      ],
      t("reset.save"),
      async () => {
        if (password.value !== again.value) throw { status: 400, message: t("reset.mismatch") };
        await api("/v1/auth/password-reset/confirm", {
          method: "POST",
          auth: false,
          json: { token, password: password.value },
        });
        session.clear(); // a reset ends every session; log in with the new password
        state.me = null;
        flash("ok", t("reset.done"));
        navigate("#/login");
      },
    ),
  );
}

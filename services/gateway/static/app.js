// The page: a hash router over the views, the top bar, the demo banner and the language switch.
import { api } from "./api.js";
import { h, fill } from "./dom.js";
import { initLocale, locale, onLocaleChange, setLocale, t } from "./i18n.js";
import * as session from "./session.js";
import { loadMe, loadSystem, state } from "./state.js";
import { announce, flash, navigate, takeFlash } from "./ui.js";
import * as account from "./views/account.js";
import * as auth from "./views/auth.js";
import * as gallery from "./views/gallery.js";
import * as home from "./views/home.js";
import * as photos from "./views/photos.js";
import * as styles from "./views/styles.js";
import * as train from "./views/train.js";

// needs: "auth" = signed in, "guest" = signed out.
const ROUTES = {
  "/": { view: home.render, title: "nav.home" },
  "/login": { view: auth.login, title: "login.title", needs: "guest" },
  "/signup": { view: auth.signup, title: "signup.title", needs: "guest" },
  "/verify": { view: auth.verify, title: "verify.title" },
  "/reset": { view: auth.reset, title: "reset.title" },
  "/photos": { view: photos.render, title: "nav.photos", needs: "auth" },
  "/train": { view: train.render, title: "nav.train", needs: "auth" },
  "/styles": { view: styles.render, title: "nav.styles", needs: "auth" },
  "/gallery": { view: gallery.render, title: "nav.gallery", needs: "auth" },
  "/account": { view: account.render, title: "nav.account", needs: "auth" },
};
const NAV_AUTH = ["/photos", "/train", "/styles", "/gallery", "/account"];
const NAV_GUEST = ["/login", "/signup"];
const NAV_LABEL = { "/login": "nav.login", "/signup": "nav.signup" };

const main = document.getElementById("main");
let dispose = null;
let renderCount = 0;
let firstRender = true;

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, search = ""] = raw.split("?");
  return { path: path || "/", query: new URLSearchParams(search) };
}

function renderNav(path) {
  const items = session.loggedIn() ? NAV_AUTH : NAV_GUEST;
  fill(
    document.getElementById("nav"),
    h(
      "ul",
      {},
      items.map((p) =>
        h(
          "li",
          {},
          h(
            "a",
            { href: `#${p}`, "aria-current": p === path ? "page" : null },
            t(NAV_LABEL[p] || `nav.${p.slice(1)}`),
          ),
        ),
      ),
    ),
  );
  const logout = document.getElementById("logout");
  logout.hidden = !session.loggedIn();
  logout.textContent = t("nav.logout");
}

function renderChrome() {
  document.documentElement.lang = locale();
  document.getElementById("lang").value = locale();
  document.querySelector('label[for="lang"]').textContent = t("nav.language");
  document.getElementById("skip-link").textContent = t("nav.skip");
  fill(document.getElementById("footer"), h("p", {}, t("footer.privacy")));
  const banner = document.getElementById("banner");
  const demo = state.system && state.system.demo;
  banner.hidden = !demo;
  if (demo) fill(banner, h("strong", {}, t("banner.demo")), " ", t("banner.demo_detail"));
}

async function render() {
  const mine = ++renderCount;
  if (dispose) dispose();
  dispose = null;
  const { path, query } = parseHash();
  const route = ROUTES[path];
  if (route && route.needs === "auth" && !session.loggedIn()) {
    navigate(`#/login?next=${encodeURIComponent(path)}`);
    return;
  }
  if (route && route.needs === "guest" && session.loggedIn()) {
    navigate("#/");
    return;
  }
  if (session.loggedIn() && !state.me) {
    try {
      await loadMe();
      if (picked && state.me && picked !== state.me.locale) {
        // Picked on this page before the account was read: the pick wins and is saved.
        state.me = await api("/v1/me", { method: "PATCH", json: { locale: picked } });
      } else if (state.me && state.me.locale) setLocale(state.me.locale, { silent: true });
    } catch {
      // The API is unreachable or the session is over; the view shows what it can.
    }
    if (mine !== renderCount) return;
  }
  renderChrome();
  renderNav(path);
  document.title = `${t(route ? route.title : "notfound.title")} · Portrait Studio`;
  const container = h("div", { class: "view" });
  const message = takeFlash();
  fill(main, message, container);
  if (!route) {
    container.append(h("h1", {}, t("notfound.title")), h("p", {}, h("a", { href: "#/" }, t("nav.home"))));
  } else {
    const result = await route.view(container, { query, path });
    if (mine !== renderCount) {
      if (typeof result === "function") result();
      return;
    }
    dispose = typeof result === "function" ? result : null;
  }
  // Move focus to the new heading so keyboard and screen-reader users land on the new view.
  if (!firstRender) {
    const heading = main.querySelector("h1");
    if (heading) {
      heading.tabIndex = -1;
      heading.focus({ preventScroll: false });
    }
  }
  firstRender = false;
}

async function logout() {
  const token = session.refreshToken();
  try {
    if (token) await api("/v1/auth/logout", { method: "POST", json: { refresh_token: token } });
  } catch {
    // The server may already consider the token spent; we forget it either way.
  }
  session.clear();
  state.me = null;
  flash("ok", t("logout.done"));
  navigate("#/login");
}

window.addEventListener("session-ended", () => {
  state.me = null;
  flash("info", t("session.ended"));
  navigate("#/login");
});

let picked = null; // the language chosen on this page, if any (it outranks the account's)

async function start() {
  initLocale();
  document.getElementById("lang").addEventListener("change", async (event) => {
    picked = event.target.value;
    setLocale(event.target.value);
    announce(t("nav.language_changed"));
    if (session.loggedIn() && state.me) {
      try {
        state.me = await api("/v1/me", { method: "PATCH", json: { locale: locale() } });
      } catch {
        // The choice still applies to this browser.
      }
    }
  });
  document.getElementById("logout").addEventListener("click", logout);
  onLocaleChange(() => render());
  window.addEventListener("hashchange", render);
  await loadSystem();
  await render();
}

start();

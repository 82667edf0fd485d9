// The front page: what the service does (signed out), or the next step (signed in).
import { getList } from "../api.js";
import { h } from "../dom.js";
import { t } from "../i18n.js";
import * as session from "../session.js";
import { state } from "../state.js";

const STEPS = ["photos", "train", "styles", "gallery"];

export async function render(root) {
  if (!session.loggedIn() || !state.me) {
    root.append(
      h("section", { class: "hero" },
        h("h1", {}, t("home.title")),
        h("p", { class: "lead" }, t("home.lead")),
        h("ol", { class: "steps" }, STEPS.map((s) => h("li", {}, h("strong", {}, t(`nav.${s}`)), " — ", t(`home.step_${s}`)))),
        h("p", { class: "actions" },
          h("a", { class: "btn", href: "#/signup" }, t("nav.signup")),
          h("a", { class: "btn btn-quiet", href: "#/login" }, t("nav.login"))),
      ),
    );
    return;
  }
  root.append(h("h1", {}, t("home.welcome")));
  // Each check is optional: an endpoint that is down only hides its line.
  const [photos, likenesses, jobs] = await Promise.all([
    getList("/v1/photos", "photos").catch(() => null),
    getList("/v1/likenesses", "likenesses").catch(() => null),
    getList("/v1/jobs?kind=generate_portraits", "jobs").catch(() => null),
  ]);
  const accepted = photos ? photos.filter((p) => p.status === "accepted").length : 0;
  const ready = likenesses ? likenesses.some((l) => l.status === "ready") : false;
  const training = likenesses ? likenesses.some((l) => l.status === "training") : false;
  const done = {
    photos: accepted >= state.minPhotos,
    train: ready,
    styles: Boolean(jobs && jobs.length),
    gallery: Boolean(jobs && jobs.some((j) => j.status === "succeeded")),
  };
  const detail = {
    photos: t("photos.accepted_of", { n: accepted, min: state.minPhotos }),
    train: training ? t("home.training_now") : ready ? t("home.model_ready") : t("home.step_train"),
    styles: t("home.step_styles"),
    gallery: t("home.step_gallery"),
  };
  const next = STEPS.find((s) => !done[s]) || "gallery";
  root.append(
    h("ol", { class: "steps steps-status" },
      STEPS.map((s) => h("li", { class: done[s] ? "done" : s === next ? "current" : "" },
        h("a", { href: `#/${s}` }, t(`nav.${s}`)), " — ",
        detail[s], done[s] ? h("span", { class: "visually-hidden" }, ` (${t("home.done")})`) : null))),
    h("p", {}, h("a", { class: "btn", href: `#/${next}` }, t(`home.next_${next}`))),
  );
  if (state.me && !state.me.email_verified) {
    root.append(h("p", { class: "hint" }, t("home.verify_email")));
  }
}

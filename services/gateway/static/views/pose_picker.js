// The styles step's pose choice: each style's own pose, or the pose of a photo the user uploads
// (POST /v1/poses; the photos worker finds the skeleton; the preview shows it over the photo).
import { api } from "../api.js";
import { fill, h, notice } from "../dom.js";
import { t } from "../i18n.js";
import { followJob } from "../jobs.js";

/** A fieldset of radio options; chosen() is the picked pose id or null; stop() ends a follow. */
export function posePicker(poses) {
  const list = h("ul", { class: "pose-grid" });
  const status = h("div", { role: "status" });
  // The input stays out of sight (but focusable); its label is the button a person sees and clicks.
  const file = h("input", { type: "file", accept: "image/jpeg,image/png,image/webp,image/heic,image/heif,.heic,.heif", class: "pose-file visually-hidden" });
  let stopFollow = () => {};

  const option = (pose, checked) => {
    const id = pose ? `pose-${pose.id}` : "pose-style";
    return h(
      "li",
      { class: "pose", dataset: pose ? { poseId: pose.id } : {} },
      h("input", { type: "radio", name: "pose", id, value: pose ? pose.id : "", checked, class: "style-check" }),
      h(
        "label",
        { for: id },
        pose
          ? h("img", { src: pose.preview_url, alt: t("pose.preview_alt"), class: "pose-preview" })
          : h("span", { class: "pose-own" }, t("pose.own")),
      ),
    );
  };
  fill(list, option(null, true), poses.filter((p) => p.status === "ready").map((p) => option(p, false)));

  const uploaded = async (poseId) => {
    const pose = await api(`/v1/poses/${encodeURIComponent(poseId)}`);
    if (pose.status === "ready") {
      list.append(option(pose, true));
      // Several people: the reason says whose pose is used (the preview draws it over the photo).
      fill(status, notice("ok", pose.reason ? `${t("pose.ready")} ${pose.reason}` : t("pose.ready")));
    } else {
      fill(status, notice("error", pose.reason || t("pose.failed")));
    }
  };

  file.addEventListener("change", async () => {
    const picked = file.files[0];
    if (!picked) return;
    stopFollow();
    fill(status, notice("info", t("pose.finding")));
    const form = new FormData();
    form.append("file", picked, picked.name);
    try {
      const body = await api("/v1/poses", { method: "POST", form });
      stopFollow = followJob(body.job.id, (job) => {
        if (job.status === "succeeded") uploaded(body.pose.id).catch((e) => fill(status, notice("error", e.message)));
        else if (job.status === "failed" || job.status === "canceled") {
          fill(status, notice("error", job.error_message || t("pose.failed")));
        }
      }, { job: body.job });
    } catch (error) {
      fill(status, notice("error", error.message));
    } finally {
      file.value = "";
    }
  });

  const element = h(
    "fieldset",
    { class: "stack" },
    h("legend", {}, t("pose.legend")),
    h("p", { class: "hint" }, t("pose.hint")),
    list,
    h("div", { class: "field pose-upload" },
      Object.assign(file, { id: "pose-file" }),
      h("label", { for: "pose-file", class: "btn btn-quiet" }, t("pose.upload")),
      h("p", { class: "hint" }, t("pose.upload_hint"))),
    status,
  );
  const chosen = () => list.querySelector("input:checked")?.value || null;
  return { element, chosen, stop: () => stopFollow() };
}

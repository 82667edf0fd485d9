// Train the likeness model: class word, start, live progress; the state always comes from the API,
// so a reload or a closed tab finds the running job again.
import { api, byNewest, getList, idempotencyKey } from "../api.js";
import { fill, h, notice } from "../dom.js";
import { formatDate, t } from "../i18n.js";
import { state } from "../state.js";
import { busy } from "../ui.js";
import { jobPanel } from "./progress.js";

const CLASS_WORDS = ["woman", "man", "person"];

export async function render(root) {
  root.append(h("h1", {}, t("train.title")), h("p", {}, t("train.intro")));
  const body = h("div", { class: "stack" });
  root.append(body);
  let stop = null;

  async function refresh() {
    if (stop) stop();
    stop = null;
    let likenesses;
    let photos;
    try {
      [likenesses, photos] = await Promise.all([
        getList("/v1/likenesses", "likenesses"),
        getList("/v1/photos", "photos"),
      ]);
    } catch (error) {
      fill(body, notice("error", error.message));
      return;
    }
    const accepted = photos.filter((p) => p.status === "accepted").length;
    const latest = likenesses.sort(byNewest)[0] || null;
    fill(body);

    if (latest && latest.status === "training" && latest.job_id) {
      const job = await api(`/v1/jobs/${latest.job_id}`).catch(() => null);
      if (job) {
        const panel = jobPanel(job, { label: t("train.progress_title"), onDone: () => setTimeout(refresh, 300) });
        stop = panel.stop;
        body.append(panel.el, h("p", { class: "hint" }, t("train.leave_ok")));
        return;
      }
    }
    if (latest && latest.status === "ready") {
      body.append(
        h("section", { class: "card", dataset: { likenessId: latest.id } },
          h("h2", {}, t("train.ready_title")),
          notice("ok", t("train.ready", { date: formatDate(latest.created_at) })),
          h("p", {}, h("a", { class: "btn", href: "#/styles" }, t("train.to_styles"))),
          downloads(latest),
        ),
      );
    }
    if (latest && latest.status === "failed") {
      const job = latest.job_id ? await api(`/v1/jobs/${latest.job_id}`).catch(() => null) : null;
      body.append(
        notice("error", h("strong", {}, t("train.failed_title")), " ",
          (job && job.error_message) || t("job.failed_unknown")),
      );
    }
    if (latest && latest.status === "canceled") {
      body.append(notice("info", h("strong", {}, t("train.canceled_title")), " ", t("train.canceled")));
    }
    const form = startForm(accepted, async (classWord, button) => {
      await busy(button, () =>
        api("/v1/likenesses", {
          method: "POST",
          json: { class_word: classWord },
          headers: { "Idempotency-Key": idempotencyKey() },
        }),
      );
      await refresh();
    });
    if (latest && latest.status === "ready") {
      body.append(h("details", { class: "card" }, h("summary", {}, t("train.again")), form));
    } else {
      body.append(form);
    }
  }

  await refresh();
  return () => stop && stop();
}

// The LoRA in both formats: the API hands out a short-lived link that S3 answers as a download.
function downloads(likeness) {
  const status = h("div", { role: "status" });
  const button = (format) => {
    const b = h("button", { type: "button", class: "btn btn-quiet", dataset: { format } },
      t(`train.download_${format}`));
    b.addEventListener("click", async () => {
      fill(status);
      try {
        const { url } = await busy(b, () =>
          api(`/v1/likenesses/${encodeURIComponent(likeness.id)}/download?format=${format}`));
        const a = h("a", { href: url, hidden: true });
        document.body.append(a);
        a.click();
        a.remove();
      } catch (error) {
        fill(status, notice("error", error.message));
      }
    });
    return b;
  };
  return h("div", { class: "stack likeness-download" },
    h("h3", {}, t("train.download_title")),
    h("p", { class: "hint" }, t("train.download_hint")),
    h("div", { class: "actions" }, button("kohya"), button("diffusers")),
    status);
}

function startForm(accepted, start) {
  const min = state.minPhotos;
  const enough = accepted >= min;
  const slot = h("div");
  const radios = CLASS_WORDS.map((word, i) =>
    h("p", { class: "check" },
      h("input", { type: "radio", name: "class_word", value: word, id: `cw-${word}`, checked: i === 2 }),
      h("label", { for: `cw-${word}` }, t(`train.class.${word}`)),
    ),
  );
  const button = h("button", { type: "submit", class: "btn", disabled: !enough }, t("train.start"));
  const form = h(
    "form",
    { class: "card stack" },
    h("fieldset", {},
      h("legend", {}, t("train.class_legend")),
      h("p", { class: "hint" }, t("train.class_hint")),
      radios,
    ),
    enough
      ? h("p", {}, t("train.photos_ok", { n: accepted }))
      : notice("info", t("train.photos_short", { n: accepted, min }), " ",
          h("a", { href: "#/photos" }, t("train.to_photos"))),
    slot,
    button,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    fill(slot);
    const word = form.querySelector('input[name="class_word"]:checked').value;
    try {
      await start(word, button);
    } catch (error) {
      fill(slot, notice("error", error.message));
    }
  });
  return form;
}

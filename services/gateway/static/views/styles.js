// Pick styles and how many portraits, then start a generation job.
import { api, byNewest, getList, idempotencyKey } from "../api.js";
import { field, fill, h, notice } from "../dom.js";
import { formatDate, localized, t } from "../i18n.js";
import { busy, navigate } from "../ui.js";
import { posePicker } from "./pose_picker.js";

const MAX_COUNT = 8;

export async function render(root) {
  root.append(h("h1", {}, t("styles.title")));
  let styles;
  let likenesses;
  let poses;
  try {
    [styles, likenesses, poses] = await Promise.all([
      getList("/v1/styles", "styles"),
      getList("/v1/likenesses", "likenesses"),
      getList("/v1/poses", "poses"),
    ]);
  } catch (error) {
    root.append(notice("error", error.message));
    return;
  }
  const ready = likenesses.filter((l) => l.status === "ready").sort(byNewest);
  if (!ready.length) {
    root.append(notice("info", t("styles.no_model"), " ", h("a", { href: "#/train" }, t("nav.train"))));
  }
  root.append(h("p", {}, t("styles.intro")), h("p", { class: "hint" }, t("styles.cards")));

  const grid = h(
    "ul",
    { class: "style-grid" },
    styles.map((style) => {
      const id = `style-${style.id}`;
      return h(
        "li",
        { class: "style" },
        h("input", { type: "checkbox", id, name: "styles", value: style.id, class: "style-check" }),
        h(
          "label",
          { for: id },
          h("span", { class: "style-preview", "aria-hidden": "true" },
            style.preview_url
              ? h("img", { src: style.preview_url, alt: "", loading: "lazy" })
              : h("span", { class: "style-initial" }, localized(style.name).slice(0, 1))),
          h("span", { class: "style-name" }, localized(style.name)),
          h("span", { class: "style-desc" }, localized(style.description)),
        ),
      );
    }),
  );
  const count = h("input", { type: "number", min: 1, max: MAX_COUNT, value: 2, required: true, inputmode: "numeric" });
  const modelSelect = ready.length > 1
    ? h("select", {}, ready.map((l, i) =>
        h("option", { value: l.id, selected: i === 0 }, `${t(`train.class.${l.class_word}`)} · ${formatDate(l.created_at)}`)))
    : null;
  const poseChoice = posePicker(poses);
  const slot = h("div");
  const selectedNote = h("p", { class: "hint", role: "status" });
  const submit = h("button", { type: "submit", class: "btn", disabled: !ready.length }, t("styles.start"));
  const form = h(
    "form",
    { class: "stack" },
    h("fieldset", {}, h("legend", {}, t("styles.pick")), grid),
    selectedNote,
    poseChoice.element,
    h("div", { class: "row" },
      field(t("styles.count"), count, t("styles.count_hint", { max: MAX_COUNT })),
      modelSelect ? field(t("styles.model"), modelSelect) : null,
    ),
    slot,
    submit,
  );
  const chosen = () => [...grid.querySelectorAll("input:checked")].map((i) => i.value);
  const updateNote = () => {
    const n = chosen().length;
    const per = Number(count.value) || 0;
    const total = n * per;
    selectedNote.textContent = n
      ? `${t(n === 1 ? "styles.selected_one" : "styles.selected", { n })} ${t(total === 1 ? "styles.total_one" : "styles.total", { total })}`
      : t("styles.none_selected");
  };
  grid.addEventListener("change", updateNote);
  count.addEventListener("input", updateNote);
  updateNote();

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    fill(slot);
    const picked = chosen();
    if (!picked.length) {
      fill(slot, notice("error", t("styles.pick_one")));
      return;
    }
    const n = Number(count.value);
    if (!Number.isInteger(n) || n < 1 || n > MAX_COUNT) {
      fill(slot, notice("error", t("styles.count_bad", { max: MAX_COUNT })));
      count.focus();
      return;
    }
    try {
      const body = await busy(submit, () =>
        api("/v1/portraits", {
          method: "POST",
          json: {
            likeness_id: modelSelect ? modelSelect.value : ready[0].id,
            styles: picked,
            count: n,
            pose_id: poseChoice.chosen() || undefined,
          },
          headers: { "Idempotency-Key": idempotencyKey() },
        }),
      );
      navigate(`#/gallery?job=${encodeURIComponent(body.job.id)}`);
    } catch (error) {
      fill(slot, notice("error", error.message));
    }
  });
  root.append(form);
  return poseChoice.stop;
}

// Consent, then uploads: one request per file so each preview gets its own result.
import { api, ApiError, getList, listOf } from "../api.js";
import { fill, formatBytes, h, notice } from "../dom.js";
import { t, tOr } from "../i18n.js";
import { loadMe, state } from "../state.js";
import { announce, busy } from "../ui.js";

const PARALLEL_UPLOADS = 3;
const POLL_MS = 1500;

function consentPanel(onAccepted) {
  const box = h("input", { type: "checkbox", id: "consent-accept" });
  const slot = h("div");
  const submit = h("button", { type: "submit", class: "btn" }, t("consent.submit"));
  const form = h(
    "form",
    { class: "card consent", "aria-labelledby": "consent-title" },
    h("h2", { id: "consent-title" }, t("consent.title")),
    h("p", {}, t("consent.lead")),
    h("ul", { class: "plain-list" },
      ["consent.use", "consent.private", "consent.delete", "consent.never"].map((k) => h("li", {}, t(k))),
    ),
    h("p", { class: "check" }, box, h("label", { for: box.id }, t("consent.accept"))),
    slot,
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!box.checked) {
      fill(slot, notice("error", t("consent.required")));
      box.focus();
      return;
    }
    try {
      await busy(submit, () => api("/v1/me/consent", { method: "POST", json: { accept: true } }));
      await loadMe();
      onAccepted();
    } catch (error) {
      fill(slot, notice("error", error.message));
    }
  });
  return form;
}

/** The uploader's state: one entry per card, keyed locally (server ids arrive later). */
class PhotoBoard {
  constructor(root) {
    this.items = [];
    this.timer = null;
    this.queue = [];
    this.active = 0;
    this.disposed = false;
    this.counter = h("div", { class: "counter", role: "status" });
    this.grid = h("ul", { class: "photo-grid", "aria-label": t("photos.list") });
    this.input = h("input", {
      type: "file",
      id: "photo-input",
      multiple: true,
      // .heic/.heif too: some systems give iPhone photos no MIME type the picker would match.
      accept: "image/jpeg,image/png,image/webp,image/heic,image/heif,.heic,.heif,image/*",
      class: "visually-hidden",
      onchange: () => {
        this.add([...this.input.files]);
        this.input.value = "";
      },
    });
    // A real button opens the picker; the input itself stays out of sight and out of the tab order.
    this.input.tabIndex = -1;
    this.input.setAttribute("aria-hidden", "true");
    const pick = h("button", { type: "button", class: "btn", id: "photo-pick",
      onclick: () => this.input.click() }, t("photos.pick"));
    const zone = h(
      "div",
      { class: "dropzone", id: "dropzone" },
      h("p", { class: "dropzone-title" }, t("photos.drop")),
      h("p", {}, pick, this.input),
      h("p", { class: "hint" }, t("photos.formats")),
    );
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("dragging");
      this.add([...event.dataTransfer.files]);
    });
    root.append(
      h("p", {}, t("photos.intro", { n: state.minPhotos })),
      h("ul", { class: "tips" }, ["photos.tip1", "photos.tip2", "photos.tip3"].map((k) => h("li", {}, t(k)))),
      this.counter,
      zone,
      this.grid,
    );
  }

  async load() {
    try {
      for (const photo of await getList("/v1/photos", "photos")) this.items.push({ key: photo.id, photo });
    } catch (error) {
      this.grid.before(notice("error", error.message));
    }
    this.render();
  }

  add(files) {
    // New photos go last, in the order chosen: the same order the API lists them after a reload.
    for (const file of files) {
      const item = { key: crypto.randomUUID ? crypto.randomUUID() : String(Math.random()), file,
        preview: URL.createObjectURL(file), uploading: true };
      this.items.push(item);
      this.queue.push(item);
    }
    if (files.length) announce(t("photos.adding", { n: files.length }));
    this.render();
    this.pump();
  }

  pump() {
    while (this.active < PARALLEL_UPLOADS && this.queue.length) {
      const item = this.queue.shift();
      this.active += 1;
      this.upload(item).finally(() => {
        this.active -= 1;
        this.pump();
      });
    }
  }

  async upload(item) {
    const form = new FormData();
    form.append("files", item.file, item.file.name);
    try {
      const body = await api("/v1/photos", { method: "POST", form });
      item.photo = listOf(body, "photos")[0];
      if (item.photo) item.key = item.photo.id;
    } catch (error) {
      item.error = error.status === 0 ? t("error.network") : error.message;
    }
    item.uploading = false;
    this.render();
    this.schedulePoll();
  }

  schedulePoll() {
    if (this.timer || this.disposed) return;
    if (!this.items.some((i) => i.photo && i.photo.status === "checking")) return;
    this.timer = setTimeout(async () => {
      this.timer = null;
      try {
        const fresh = new Map((await getList("/v1/photos", "photos")).map((p) => [p.id, p]));
        for (const item of this.items) {
          if (!item.photo || !fresh.has(item.photo.id)) continue;
          const before = item.photo.status;
          item.photo = fresh.get(item.photo.id);
          if (before === "checking" && item.photo.status !== "checking") {
            announce(`${this.name(item)}: ${this.statusText(item)}`);
          }
        }
        this.render();
      } catch {
        /* try again on the next tick */
      }
      this.schedulePoll();
    }, POLL_MS);
  }

  name(item) {
    return item.file ? item.file.name : t("photos.photo");
  }

  statusOf(item) {
    if (item.uploading) return "uploading";
    if (item.error) return "failed";
    return item.photo.status;
  }

  statusText(item) {
    const status = this.statusOf(item);
    if (this.isOtherPerson(item)) return `${t("status.other_person")}: ${this.reason(item.photo)}`;
    if (status === "rejected") return `${t("status.rejected")}: ${this.reason(item.photo)}`;
    return t(`status.${status}`);
  }

  reason(photo) {
    // The API words the reason in the page's language (Accept-Language), with its numbers.
    if (photo.reason) return photo.reason;
    return photo.reason_code ? tOr(`reason.${photo.reason_code}`, "") : "";
  }

  /** A photo of someone else than the rest of the set (the photos worker's identity check). */
  isOtherPerson(item) {
    return Boolean(item.photo && item.photo.reason_code === "identity_mismatch");
  }

  async remove(item, button) {
    if (item.photo && !item.error) {
      try {
        await busy(button, () => api(`/v1/photos/${item.photo.id}`, { method: "DELETE" }));
      } catch (error) {
        if (!(error instanceof ApiError && error.status === 404)) {
          item.removeError = error.message;
          this.render();
          return;
        }
      }
    }
    if (item.preview) URL.revokeObjectURL(item.preview);
    this.items = this.items.filter((i) => i !== item);
    announce(t("photos.removed"));
    this.render();
    this.counter.tabIndex = -1;
    this.counter.focus();
  }

  card(item) {
    const status = this.statusOf(item);
    // Keep the first URL: presigned URLs change on every list call and would reload the image.
    item.src ||= item.preview || (item.photo && item.photo.url);
    const src = item.src;
    const name = this.name(item);
    const other = this.isOtherPerson(item);
    const removeBtn = h("button", {
      type: "button",
      // Someone else's photo: removing it is the thing to do, so the button says so plainly.
      class: other ? "btn btn-small" : "btn btn-quiet btn-small",
      "aria-label": t("photos.remove_named", { name }),
    }, t("photos.remove"));
    removeBtn.addEventListener("click", () => this.remove(item, removeBtn));
    let detail = null;
    if (status === "rejected") detail = this.reason(item.photo);
    if (status === "failed") detail = item.error;
    // A browser that cannot show the picked file (HEIC in Chromium) shows the stored JPEG instead.
    const fallback = (event) => {
      const url = item.photo && item.photo.url;
      if (url && event.target.src !== url) {
        item.src = url;
        event.target.src = url;
      } else {
        event.target.remove();
      }
    };
    return h(
      "li",
      { class: `photo status-${status}${other ? " other-person" : ""}`,
        dataset: { status, photoId: item.photo ? item.photo.id : "", reason: item.photo?.reason_code || "" } },
      h("div", { class: "thumb" }, src ? h("img", { src, alt: t("photos.preview_of", { name }), loading: "lazy",
        onerror: fallback }) : null),
      h("div", { class: "photo-body" },
        h("p", { class: "badge" }, h("span", { class: "dot", "aria-hidden": "true" }),
          other ? t("status.other_person") : t(`status.${status}`)),
        detail ? h("p", { class: "reason" }, detail) : null,
        item.file ? h("p", { class: "meta" }, `${name} · ${formatBytes(item.file.size)}`) : null,
        item.removeError ? h("p", { class: "reason" }, item.removeError) : null,
        removeBtn,
      ),
    );
  }

  render() {
    if (this.disposed) return;
    const accepted = this.items.filter((i) => !i.error && i.photo && i.photo.status === "accepted").length;
    const checking = this.items.filter((i) => i.uploading || (i.photo && i.photo.status === "checking")).length;
    const need = Math.max(0, state.minPhotos - accepted);
    const meter = h("progress", { max: state.minPhotos, value: Math.min(accepted, state.minPhotos),
      "aria-label": t("photos.meter") });
    fill(
      this.counter,
      h("p", { class: "counter-line" },
        h("strong", {}, t(accepted > state.minPhotos ? "photos.accepted_all" : "photos.accepted_of",
          { n: accepted, min: state.minPhotos })), " ",
        need > 0 ? t("photos.need_more", { n: need }) : t("photos.enough")),
      meter,
      checking ? h("p", { class: "hint" }, t("photos.checking_n", { n: checking })) : null,
      need === 0 ? h("p", {}, h("a", { class: "btn", href: "#/train" }, t("photos.to_train"))) : null,
    );
    this.counter.dataset.accepted = String(accepted);
    this.renderGrid();
  }

  /** Rebuild only the cards whose state changed, so focus and images stay put. */
  renderGrid() {
    const wanted = this.items.map((item) => {
      const sig = [this.statusOf(item), item.photo && item.photo.reason, item.error, item.removeError].join("|");
      if (!item.el || item.sig !== sig) {
        const el = this.card(item);
        const hadFocus = item.el && item.el.contains(document.activeElement);
        if (item.el) item.el.replaceWith(el);
        item.el = el;
        item.sig = sig;
        if (hadFocus) el.querySelector("button").focus();
      }
      return item.el;
    });
    for (const el of [...this.grid.children]) if (!wanted.includes(el)) el.remove();
    wanted.forEach((el, i) => {
      if (this.grid.children[i] !== el) this.grid.insertBefore(el, this.grid.children[i] || null);
    });
  }

  dispose() {
    this.disposed = true;
    clearTimeout(this.timer);
    for (const item of this.items) if (item.preview) URL.revokeObjectURL(item.preview);
  }
}

export async function render(root) {
  root.append(h("h1", {}, t("photos.title")));
  const body = h("div");
  root.append(body);
  let board = null;
  const showBoard = async () => {
    fill(body);
    board = new PhotoBoard(body);
    await board.load();
  };
  if (!state.me) {
    // The start of the page could not read the account (a slow or unreachable API): read it here,
    // and say so if it still fails, rather than asking someone who agreed long ago to agree again.
    try {
      await loadMe();
    } catch (error) {
      body.append(notice("error", error.message));
      return () => {};
    }
  }
  if (!state.me.face_consent_at) {
    body.append(consentPanel(() => showBoard().then(() => body.querySelector("#photo-pick").focus())));
  } else {
    await showBoard();
  }
  return () => board && board.dispose();
}

// Portraits of one generation job: they appear as they finish, best likeness first.
import { api, ApiError, byNewest, getList, listOf } from "../api.js";
import { fill, h, notice } from "../dom.js";
import { confirmDialog } from "../dialogs.js";
import { formatDate, localized, t } from "../i18n.js";
import { TERMINAL } from "../jobs.js";
import { state } from "../state.js";
import { announce, busy, navigate } from "../ui.js";
import { jobPanel } from "./progress.js";

// No score (no face to compare) is not a score of 0: it ranks last and shows as a dash.
function scoreOf(portrait) {
  const s = portrait.identity_score;
  return s === null || s === undefined ? -Infinity : Number(s);
}

function byScore(a, b) {
  return scoreOf(b) - scoreOf(a) || 0;
}

function score(portrait) {
  const s = scoreOf(portrait);
  return Number.isFinite(s) ? s.toFixed(2) : "–";
}

function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export async function render(root, { query }) {
  root.append(h("h1", {}, t("gallery.title")));
  root.append(
    h("p", { class: "hint" },
      state.me && state.me.email_results ? t("gallery.emailed") : t("gallery.email_off"), " ",
      state.me && !state.me.email_results ? h("a", { href: "#/account" }, t("nav.account")) : null),
  );
  let jobs;
  try {
    jobs = (await getList("/v1/jobs?kind=generate_portraits", "jobs")).sort(byNewest);
  } catch (error) {
    root.append(notice("error", error.message));
    return;
  }
  // Style ids -> names, for the captions (a missing list only shows the ids).
  const styleNames = await getList("/v1/styles", "styles")
    .then((styles) => Object.fromEntries(styles.map((st) => [st.id, st.name])))
    .catch(() => ({}));
  const styleName = (id) => localized(styleNames[id]) || id;
  const jobId = query.get("job") || (jobs[0] && jobs[0].id);
  if (!jobId) {
    root.append(notice("info", t("gallery.empty"), " ", h("a", { href: "#/styles" }, t("gallery.to_styles"))));
    return;
  }
  // The list above already holds the recent jobs; only an older (or foreign) one is read again.
  let job = jobs.find((j) => j.id === jobId);
  try {
    job ||= await api(`/v1/jobs/${encodeURIComponent(jobId)}`);
    if (job.kind !== "generate_portraits") throw new ApiError(404, "not a portrait job");
  } catch (error) {
    const gone = error instanceof ApiError && [403, 404].includes(error.status);
    root.append(notice("error", gone ? t("gallery.not_found") : error.message));
    return;
  }
  if (jobs.length > 1) {
    const select = h("select", { id: "job-select" },
      jobs.map((j) => h("option", { value: j.id, selected: j.id === job.id },
        `${formatDate(j.created_at)} · ${t(`jobstatus.${j.status}`)}`)));
    select.addEventListener("change", () => navigate(`#/gallery?job=${encodeURIComponent(select.value)}`));
    root.append(h("div", { class: "field" }, h("label", { for: "job-select" }, t("gallery.session")), select));
  }

  const tools = h("div", { class: "actions" });
  const grid = h("ul", { class: "gallery-grid", "aria-label": t("gallery.list") });
  const status = h("div", { role: "status" });
  const viewer = h("dialog", { class: "dialog viewer", "aria-label": t("gallery.full") });
  const shown = new Map(); // portrait id -> element, so finished ones are not re-rendered
  // The newest copy of each portrait: its presigned URLs (valid `urls_expire_in` s) replace older ones,
  // so a page left open for hours still downloads (issue 23: "Request has expired" after 5 minutes).
  const latest = new Map();
  let linksUntil = 0; // Date.now() past which the URLs held are (nearly) expired
  let refresher = null;
  let loading = null;

  async function loadPortraits() {
    loading ||= api(`/v1/portraits?job_id=${encodeURIComponent(job.id)}`)
      .then((body) => {
        const portraits = listOf(body, "portraits").sort(byScore);
        keepLinks(portraits);
        drawGrid(portraits);
      })
      .catch((error) => fill(status, notice("error", error.message)))
      .finally(() => {
        loading = null;
      });
    return loading;
  }

  function keepLinks(portraits) {
    for (const p of portraits) latest.set(p.id, p);
    const ttl = Math.min(...portraits.map((p) => Number(p.urls_expire_in) || 300), 3600);
    if (!portraits.length) return;
    linksUntil = Date.now() + ttl * 1000;
    // Read the list again before the URLs expire (a thumbnail not yet loaded, the viewer's image).
    clearTimeout(refresher);
    refresher = setTimeout(() => loadPortraits(), Math.max(ttl * 800, 1000));
  }

  // The portrait with URLs good for a while yet: read again from the API when they are about to expire.
  async function fresh(portrait) {
    if (Date.now() > linksUntil - 2000) await loadPortraits();
    return latest.get(portrait.id) || portrait;
  }

  async function download(portrait, link) {
    try {
      const p = await busy(link, () => fresh(portrait));
      // S3 answers this URL with `Content-Disposition: attachment`: the browser saves the file and
      // stays on the page (no new tab, no image shown instead).
      const a = h("a", { href: p.download_url, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
    } catch (error) {
      fill(status, notice("error", error.message));
    }
  }

  function downloadButton(portrait, attrs = {}) {
    const button = h("button", { type: "button", class: "btn", ...attrs }, t("gallery.download"));
    button.addEventListener("click", () => download(portrait, button));
    return button;
  }

  async function openViewer(portrait, index) {
    portrait = await fresh(portrait);
    fill(
      viewer,
      h("figure", {},
        h("img", { src: portrait.url, alt: t("gallery.alt", { style: styleName(portrait.style), rank: index + 1 }) }),
        h("figcaption", {}, `${styleName(portrait.style)} · ${t("gallery.score", { s: score(portrait) })}`)),
      h("div", { class: "actions" },
        downloadButton(portrait),
        h("button", { type: "button", class: "btn btn-quiet", onclick: () => viewer.close() }, t("common.close"))),
    );
    viewer.showModal();
  }

  async function remove(portrait, button) {
    const ok = await confirmDialog({
      title: t("gallery.delete_title"),
      body: t("gallery.delete_body"),
      confirmLabel: t("common.delete"),
    });
    if (!ok) return;
    try {
      await busy(button, () => api(`/v1/portraits/${portrait.id}`, { method: "DELETE" }));
      announce(t("gallery.deleted"));
      await loadPortraits();
    } catch (error) {
      fill(status, notice("error", error.message));
    }
  }

  function card(portrait, index) {
    const del = h("button", { type: "button", class: "btn btn-quiet btn-small",
      "aria-label": t("gallery.delete_named", { rank: index + 1 }) }, t("common.delete"));
    del.addEventListener("click", () => remove(portrait, del));
    return h(
      "li",
      { class: "portrait", dataset: { portraitId: portrait.id } },
      h("button", { type: "button", class: "portrait-open", onclick: () => openViewer(portrait, index),
        "aria-label": t("gallery.open", { rank: index + 1, style: styleName(portrait.style) }) },
        h("img", { src: portrait.thumb_url || portrait.url, alt: "", loading: "lazy",
          onerror: (event) => retryImage(event.target, portrait) }),
        h("span", { class: "rank" }, `#${index + 1}`)),
      h("div", { class: "portrait-body" },
        h("p", { class: "style-name" }, styleName(portrait.style)),
        h("p", { class: "hint" },
          portrait.face_found === false ? t("gallery.no_face") : t("gallery.score", { s: score(portrait) })),
        h("div", { class: "actions" },
          downloadButton(portrait, { class: "btn btn-small",
            "aria-label": t("gallery.download_named", { rank: index + 1 }) }),
          del)),
    );
  }

  // A thumbnail first loaded after its URL expired (lazy loading): once, with a fresh URL.
  async function retryImage(img, portrait) {
    if (img.dataset.retried) return;
    img.dataset.retried = "1";
    const p = await fresh(portrait).catch(() => null);
    if (p) img.src = p.thumb_url || p.url;
  }

  let drawn = null;
  function drawGrid(portraits) {
    if (!portraits.length && TERMINAL.has(job.status)) {
      fill(status, notice("info", t("gallery.none")));
    }
    const sig = portraits.map((p) => p.id).join(",");
    if (sig === drawn) return; // same portraits: keep the images (their presigned URLs change)
    drawn = sig;
    const fresh = portraits.filter((p) => !shown.has(p.id)).length;
    // Ranks change as new portraits arrive, so the grid is redrawn; images are cached by the browser.
    shown.clear();
    fill(grid, portraits.map((p, i) => {
      const el = card(p, i);
      shown.set(p.id, el);
      return el;
    }));
    grid.dataset.count = String(portraits.length);
    zipButton.disabled = !portraits.length;
    if (fresh && job.status === "running") announce(t("gallery.arrived", { n: portraits.length }));
  }

  const zipButton = h("button", { type: "button", class: "btn", disabled: true }, t("gallery.zip"));
  zipButton.addEventListener("click", async () => {
    try {
      const response = await busy(zipButton, () =>
        api(`/v1/portraits/zip?job_id=${encodeURIComponent(job.id)}`, { raw: true }));
      saveBlob(await response.blob(), `portraits-${job.id}.zip`);
    } catch (error) {
      fill(status, notice("error", error.message));
    }
  });
  tools.append(zipButton);

  let stop = null;
  if (job.status !== "succeeded") {
    const panel = jobPanel(job, {
      label: t("gallery.progress_title"),
      onUpdate: (next) => {
        job = next;
        loadPortraits();
      },
    });
    stop = panel.stop;
    root.append(panel.el);
  }
  root.append(tools, status, grid, viewer);
  await loadPortraits();
  return () => {
    clearTimeout(refresher);
    if (stop) stop();
    if (viewer.open) viewer.close();
  };
}

// A live job panel: stage, percent, time left, and the error in words when it fails.
import { api } from "../api.js";
import { fill, h, notice } from "../dom.js";
import { formatDuration, formatPercent, t } from "../i18n.js";
import { etaSeconds, followJob, TERMINAL } from "../jobs.js";
import { busy } from "../ui.js";

/**
 * Render `job` into a panel and keep it live. onDone(job) runs once at a terminal status.
 * Returns {el, stop}.
 */
export function jobPanel(job, { label, onDone, onUpdate } = {}) {
  const el = h("section", { class: "card job", "aria-label": label, dataset: { jobId: job.id } });
  const bar = h("progress", { max: 100, value: 0, "aria-label": label });
  const stageEl = h("p", { class: "stage" });
  const percentEl = h("strong", { class: "percent" });
  const etaEl = h("span", { class: "eta" });
  const statusEl = h("div", { role: "status", class: "job-status" });
  const cancel = h("button", { type: "button", class: "btn btn-quiet btn-small" }, t("job.cancel"));
  cancel.addEventListener("click", async () => {
    try {
      update(await busy(cancel, () => api(`/v1/jobs/${job.id}/cancel`, { method: "POST" })));
    } catch (error) {
      fill(statusEl, notice("error", error.message));
    }
  });
  el.append(
    h("h2", {}, label),
    stageEl,
    h("div", { class: "bar-row" }, bar, percentEl),
    h("p", { class: "hint" }, etaEl),
    statusEl,
    h("div", { class: "actions" }, cancel),
  );
  let done = false;

  function update(next) {
    job = next;
    el.dataset.status = job.status;
    const p = Number(job.progress) || 0;
    bar.value = Math.round(p * 100);
    bar.setAttribute("aria-valuetext", formatPercent(p));
    percentEl.textContent = formatPercent(p);
    const ended = TERMINAL.has(job.status);
    // The server's phrase in the page's language ("learning your likeness (step 2 of 36)"), never the
    // worker's label; "Done", not "Done · finished".
    const stage = !ended ? job.stage_text || "" : "";
    stageEl.textContent = `${t(`jobstatus.${job.status}`)}${stage ? ` · ${stage}` : ""}`;
    const eta = job.status === "running" ? formatDuration(etaSeconds(job)) : null;
    etaEl.textContent = eta ? t("job.eta", { time: eta }) : job.status === "queued" ? t("job.queued_hint") : "";
    cancel.hidden = !["queued", "running"].includes(job.status);
    if (job.status === "failed") {
      fill(statusEl, notice("error", h("strong", {}, t("job.failed")), " ",
        job.error_message || t("job.failed_unknown")));
    } else if (job.status === "canceled") {
      fill(statusEl, notice("info", t("job.canceled")));
    }
    if (onUpdate) onUpdate(job);
    if (!done && ended) {
      done = true;
      if (onDone) onDone(job);
    }
  }

  const stop = followJob(job.id, update, {
    job, // just read by the caller: shown at once, not read again
    onError: (error) => fill(statusEl, notice("error", error.message)),
    onRecover: () => fill(statusEl), // the job is live again: the outage notice goes
  });
  return { el, stop };
}

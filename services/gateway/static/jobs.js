// Follow a job live: server-sent events from /v1/jobs/{id}/events, with the state re-read from
// the API whenever the stream drops (expired token, network, gateway restart, a dependency down).
import { api, ApiError } from "./api.js";
import { locale } from "./i18n.js";
import * as session from "./session.js";

export const TERMINAL = new Set(["succeeded", "failed", "canceled"]);

/**
 * Call onJob(job) with the current job and on every change until it reaches a terminal status.
 * Returns stop(). EventSource cannot send an Authorization header, so the access token
 * travels as ?access_token= (the gateway accepts it on this route only).
 * `job`: the job as the caller just read it from the API; it is delivered at once instead of
 * being read again. onError(error) on a failed read or an `unavailable` event (error.message is a
 * sentence); onRecover() before the next job delivered after one.
 */
export function followJob(jobId, onJob, { onError, onRecover, job } = {}) {
  let source = null;
  let stopped = false;
  let failures = 0;
  let timer = null;
  let troubled = false; // onError was called: the next job delivered calls onRecover first

  const report = (error) => {
    troubled = true;
    if (onError) onError(error);
  };

  const stop = () => {
    stopped = true;
    clearTimeout(timer);
    if (source) source.close();
  };

  const deliver = (job) => {
    if (stopped) return;
    if (troubled) {
      troubled = false;
      if (onRecover) onRecover();
    }
    onJob(job);
    if (TERMINAL.has(job.status)) stop();
  };

  // Read the state from the API: renders at once, and refreshes an expired access token.
  const sync = async () => {
    try {
      deliver(await api(`/v1/jobs/${encodeURIComponent(jobId)}`));
      return true;
    } catch (error) {
      report(error);
      if (error instanceof ApiError && [401, 403, 404].includes(error.status)) stop();
      return false;
    }
  };

  const open = () => {
    if (stopped) return;
    const token = encodeURIComponent(session.accessToken() || "");
    // ?lang=: EventSource sends the browser's Accept-Language, not the page's language.
    source = new EventSource(
      `/v1/jobs/${encodeURIComponent(jobId)}/events?access_token=${token}&lang=${locale()}`);
    source.addEventListener("job", (event) => {
      failures = 0;
      try {
        deliver(JSON.parse(event.data));
      } catch {
        /* a malformed event: the next one or the re-sync repairs the view */
      }
    });
    // The server could not read the job (a dependency is down): it says so in words and ends the
    // stream; the retry below resumes it.
    source.addEventListener("unavailable", (event) => {
      let detail = "";
      try {
        detail = JSON.parse(event.data).detail;
      } catch {
        /* no sentence: the status code says enough */
      }
      report(new ApiError(503, detail || "The service is not answering; try again in a minute."));
    });
    source.onerror = async () => {
      source.close();
      if (stopped) return;
      failures += 1;
      await sync();
      timer = setTimeout(open, Math.min(500 * 2 ** failures, 15000));
    };
  };

  if (job) {
    deliver(job);
    open();
  } else {
    sync().then(() => open());
  }
  return stop;
}

/** Seconds left, estimated from the progress rate since the job started; null if unknown. */
export function etaSeconds(job, now = Date.now()) {
  if (typeof job.eta_seconds === "number") return job.eta_seconds;
  const p = Number(job.progress) || 0;
  if (!job.started_at || p < 0.02 || p >= 1) return null;
  const elapsed = (now - Date.parse(job.started_at)) / 1000;
  if (!(elapsed > 5)) return null; // too early to say: no "about 0 s left" in the first seconds
  return Math.max(0, Math.round((elapsed * (1 - p)) / p));
}

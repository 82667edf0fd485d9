// What the page knows about the signed-in person and the service, shared by all views.
import { api } from "./api.js";
import * as session from "./session.js";

// Accepted photos needed before training can start. The trainer may send its own number
// in GET /v1/system as `min_photos`; until then this is the documented minimum.
const DEFAULT_MIN_PHOTOS = 8;

export const state = {
  me: null,
  system: null,
  get minPhotos() {
    return (this.system && this.system.min_photos) || DEFAULT_MIN_PHOTOS;
  },
};

export async function loadMe() {
  state.me = session.loggedIn() ? await api("/v1/me") : null;
  return state.me;
}

export async function loadSystem() {
  try {
    state.system = await api("/v1/system", { auth: false });
  } catch {
    state.system = null; // the banner is optional; the page works without it
  }
  return state.system;
}

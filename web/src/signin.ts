// Signing in: who the browser is (GET /api/me), the sign-in page, and the user's name, role
// and "Sign out" in the header. The session is an HttpOnly cookie the page never reads; the
// CSRF token the server answers with goes on every state-changing request (api.ts).

import "./signin.css";
import type { Api, Me } from "./api";
import { ApiError } from "./api";
import { h } from "./dom";

/** Who this browser is (its session cookie or kept token), or null when it must sign in.
 * A server that cannot be reached counts as open: the app then shows its own banner. */
export async function whoAmI(api: Api): Promise<Me | null> {
  try {
    const me = await api.me();
    api.csrf = me.csrf;
    return me;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return null;
    return { name: "", role: "viewer", via: "open", id: null, csrf: null };
  }
}

/** The sign-in page, in place of the app; resolves once the server has set the session. */
export function signInPage(root: HTMLElement, api: Api, useToken: () => void): Promise<void> {
  return new Promise((resolve) => {
    const name = h("input", { type: "text", name: "username", autocomplete: "username",
                              required: true, "aria-label": "User name" });
    const password = h("input", { type: "password", name: "password", required: true,
                                  autocomplete: "current-password", "aria-label": "Password" });
    const error = h("p", { class: "field-error", role: "alert" });
    const submit = h("button", { class: "primary", type: "submit" }, "Sign in");
    const form = h("form", { class: "signin stack", "aria-label": "Sign in" },
      h("h1", null, h("span", { class: "logo" }, "◆"), " stable-core"),
      h("label", null, "User name", name),
      h("label", null, "Password", password),
      error, submit,
      h("button", { class: "link", type: "button", onclick: useToken },
        "Use an access token instead"));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      submit.disabled = true;
      error.textContent = "";
      try {
        const answer = await api.login(name.value.trim(), password.value);
        api.csrf = answer.csrf;
        api.token = null; // a kept token would be sent instead of the new session
        resolve();
      } catch (err) {
        error.textContent = err instanceof Error ? err.message : String(err);
        password.select();
      } finally {
        submit.disabled = false;
      }
    });
    root.replaceChildren(h("main", { class: "signin-page" }, form));
    name.focus();
  });
}

/** The header's "name (role)" and, for a web session, its "Sign out" button; nothing on an
 * open server (loopback, no users). */
export function userBadge(me: Me, api: Api): HTMLElement | string {
  if (me.via === "open") return "";
  const signOut = async () => {
    try {
      await api.logout();
    } finally {
      location.reload();
    }
  };
  return h("div", { class: "user-badge", "data-role": me.role },
    h("span", { class: "user-name", title: `signed in by ${me.via}` }, me.name),
    h("span", { class: "user-role muted" }, me.role),
    me.via === "session"
      ? h("button", { class: "ghost", type: "button", onclick: signOut }, "Sign out") : null);
}

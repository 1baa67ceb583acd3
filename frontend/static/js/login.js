// /login: trade an API token for an HttpOnly session cookie, then go back where we came from.

import { api, clearError, showError } from "./api.js";

const $ = (id) => document.getElementById(id);

/** Only a path on this site: a crafted ?next= must not send the user elsewhere. */
function nextPath() {
  const next = new URLSearchParams(location.search).get("next") || "/";
  return next.startsWith("/") && !next.startsWith("//") ? next : "/";
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = $("login-btn");
  button.disabled = true;
  try {
    await api("/api/session", { method: "POST", body: { token: $("token").value.trim() } });
    clearError($("page-error"));
    location.assign(nextPath());
  } catch (err) {
    showError($("page-error"), err, "Could not log in.");
  } finally {
    button.disabled = false;
  }
});

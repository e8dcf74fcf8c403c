"use strict";
// Says why the last login was refused (the server redirects with ?refused=...).
document.addEventListener("DOMContentLoaded", () => {
  const why = new URLSearchParams(location.search).get("refused");
  const text = {
    password: "Wrong password.",
    wait: "Too many failed logins: wait a few minutes and try again.",
  }[why];
  if (text) document.getElementById("login-error").textContent = text;
});

"""Who may see the dashboard: Streamlit's own sign-in (`st.login`, OpenID Connect), configured
by STYLEDROP_OIDC_* (`styledrop dashboard` writes Streamlit's `[auth]` secrets from them), and
an allow-list of e-mail addresses and @domains (STYLEDROP_SIGNIN_ALLOWED).

Without sign-in configured every visitor may use it; `styledrop dashboard` then binds to
loopback only (flows/network.py).
"""

from __future__ import annotations

import streamlit as st

from flows.settings import Settings


def allowed(email: str | None, allow_list: str, verified: object = True) -> bool:
    """True when ``email`` is on ``allow_list`` (addresses and @domains, comma-separated;
    empty: everyone). An address the provider says it has not verified never matches: anyone
    can type any address into some providers' profiles."""
    if not email or str(verified).strip().lower() == "false":  # a bool or a string
        return False
    entries = [e.strip().lower() for e in allow_list.split(",") if e.strip()]
    if not entries:
        return True
    email = email.strip().lower()
    domain = "@" + email.rpartition("@")[2]
    return email in entries or domain in entries


def require_sign_in(settings: Settings) -> str | None:
    """Stop the page here unless the visitor may use the dashboard; return their e-mail
    (None without sign-in configured)."""
    if not settings.sign_in:
        return None
    if not st.user.is_logged_in:
        st.title("styledrop")
        st.write("Sign in to see the runs, submit photos and download results.")
        st.button("Sign in", type="primary", icon=":material/login:", on_click=st.login)
        st.stop()
    email = str(st.user.get("email") or "")
    if not allowed(email, settings.signin_allowed, st.user.get("email_verified", True)):
        st.title("Not allowed")
        who = email or "This account (the provider gave no e-mail address)"
        st.write(f"{who} is not allowed to use this dashboard. Ask its administrator.")
        sign_out_button()
        st.stop()
    return email


def sign_out_button() -> None:
    st.button("Sign out", icon=":material/logout:", on_click=st.logout, key="sign_out")


def signed_in_bar(email: str) -> None:
    """Who is signed in, and the way out, above every page."""
    who, out = st.columns([6, 1], vertical_alignment="center")
    who.caption(f"Signed in as {email}")
    with out:
        sign_out_button()


def submitter(settings: Settings) -> str | None:
    """The signed-in user's e-mail, recorded on the runs they start; None without sign-in."""
    if not settings.sign_in or not st.user.is_logged_in:
        return None
    return str(st.user.get("email") or "") or None

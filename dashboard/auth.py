"""Sign-in for study leads: a shared secret from Streamlit secrets (`[dashboard] password = "..."` in
`.streamlit/secrets.toml`) or the CARDIACFL_DASHBOARD_PASSWORD environment variable. Nothing about a study
is shown before it is presented, in the form or as `?token=` (for kiosk screens and the browser test).
Put the dashboard behind the lab's TLS reverse proxy for anything beyond loopback (see README)."""

from __future__ import annotations

import hmac
import os

import streamlit as st

PASSWORD_ENV = "CARDIACFL_DASHBOARD_PASSWORD"


def configured_secret() -> str | None:
    try:
        secret = st.secrets.get("dashboard", {}).get("password")
    except (FileNotFoundError, KeyError, AttributeError):
        secret = None
    except Exception:  # no secrets file at all
        secret = None
    return secret or os.environ.get(PASSWORD_ENV) or None


def _matches(candidate: str, secret: str) -> bool:
    return hmac.compare_digest(candidate.encode(), secret.encode())


def signed_in() -> bool:
    """True once the study lead has presented the credential in this session (form or `?token=`)."""
    if st.session_state.get("signed_in"):
        return True
    secret = configured_secret()
    token = st.query_params.get("token")
    if secret is not None and token and _matches(token, secret):
        st.session_state.signed_in = True
        return True
    return False


def sign_in_page() -> None:
    """The only page shown before sign-in."""
    secret = configured_secret()
    if secret is None:
        st.error(f"The dashboard has no credential configured: set {PASSWORD_ENV} or `[dashboard] password` in "
                 "Streamlit secrets. No study data is shown without one.")
        return
    with st.form("sign-in"):
        st.subheader("Sign in")
        password = st.text_input("Study password", type="password")
        if st.form_submit_button("Sign in"):
            if _matches(password, secret):
                st.session_state.signed_in = True
                st.rerun()
            st.error("Wrong password.")

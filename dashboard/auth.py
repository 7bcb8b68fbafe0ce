"""Sign-in for study leads: a shared secret from Streamlit secrets (`[dashboard] password = "..."` in
`.streamlit/secrets.toml`), a file named by CARDIACFL_DASHBOARD_PASSWORD_FILE (a container's secret: the
password never appears in its environment) or the CARDIACFL_DASHBOARD_PASSWORD environment variable. Nothing about a study
is shown before it is presented in the form. Wrong guesses are throttled and locked out (dashboard/throttle.py),
per client and server-wide, and compared in constant time.

`?token=` in the address is accepted only when CARDIACFL_DASHBOARD_URL_TOKEN=1 (kiosk screens): a secret in a
URL ends up in browser history and proxy logs, so it is removed from the address bar once used.
Put the dashboard behind the lab's TLS reverse proxy for anything beyond loopback (see README)."""

from __future__ import annotations

import hmac
import os

import streamlit as st

from dashboard.throttle import SignInThrottle

PASSWORD_ENV = "CARDIACFL_DASHBOARD_PASSWORD"
PASSWORD_FILE_ENV = "CARDIACFL_DASHBOARD_PASSWORD_FILE"
URL_TOKEN_ENV = "CARDIACFL_DASHBOARD_URL_TOKEN"


@st.cache_resource
def throttle() -> SignInThrottle:
    """One throttle for the whole server process: every session's failures count."""
    return SignInThrottle()


def _client() -> str:
    address = st.context.ip_address  # the proxy's address behind a reverse proxy: the server-wide limit still holds
    return address if isinstance(address, str) and address else "unknown"


def configured_secret() -> str | None:
    try:
        secret = st.secrets.get("dashboard", {}).get("password")
    except (FileNotFoundError, KeyError, AttributeError):
        secret = None
    except Exception:  # no secrets file at all
        secret = None
    return secret or password_from_file() or os.environ.get(PASSWORD_ENV) or None


def password_from_file() -> str | None:
    """The first line of the file CARDIACFL_DASHBOARD_PASSWORD_FILE names; an unreadable file is an error (a
    dashboard that silently signs nobody in would look like a wrong password)."""
    path = os.environ.get(PASSWORD_FILE_ENV, "")
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.readline().strip() or None
    except OSError as err:
        raise RuntimeError(f"{PASSWORD_FILE_ENV}={path}: cannot read the dashboard password ({err.strerror})") from err


def _matches(candidate: str, secret: str) -> bool:
    return hmac.compare_digest(candidate.encode(), secret.encode())


def _attempt(candidate: str, secret: str) -> str | None:
    """None when the credential is right, else what to tell the user. Throttled before it is even compared."""
    client = _client()
    wait = throttle().wait_s(client)
    if wait > 0:
        return f"Too many failed sign-ins. Try again in {wait:.0f} s."
    if _matches(candidate, secret):
        throttle().succeeded(client)
        return None
    throttle().failed(client)
    return "Wrong password."


def signed_in() -> bool:
    """True once the study lead has presented the credential in this session."""
    if st.session_state.get("signed_in"):
        return True
    secret = configured_secret()
    token = st.query_params.get("token")
    if token:
        del st.query_params["token"]  # out of the address bar and the browser history at once
        if secret is not None and os.environ.get(URL_TOKEN_ENV) == "1" and _attempt(token, secret) is None:
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
            problem = _attempt(password, secret)
            if problem is None:
                st.session_state.signed_in = True
                st.rerun()
            st.error(problem)

"""The app's side of access control: who is using this session, which pages they see, what every page says.

Three ways to run, decided per script run:

* ``[auth]`` in ``.streamlit/secrets.toml``: people sign in with ``st.login`` (OpenID Connect); their
  roles come from the roles file (:mod:`access`). Signed out, only the sign-in page exists.
* no ``[auth]``, serving on loopback (the bundled config): a laptop demo; one local user holds every
  role, and the sidebar says so.
* no ``[auth]`` but reachable from the network (``server.address`` beyond loopback, or requests arriving
  through a proxy): every page says so, and visitors are readers, so nothing that changes shared state
  is offered (and xraycore refuses it anyway).

Pages a role may not use are left out of the navigation; their URLs still resolve, to a refusal. Each
page also calls :func:`require` first. Imports Streamlit, never torch: app.py imports this first, and
importing it tells :mod:`xraycore.access.policy` how to recognise an app session (:func:`in_script_run`), so
that an action app code starts without saying who asks is refused rather than run as the terminal user.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlparse

import streamlit as st
from streamlit import config as st_config

from xraycore.access import policy as access

FORWARDING_HEADERS = ("x-forwarded-for", "x-forwarded-host", "forwarded", "x-real-ip")
DEFAULT_PAGE_SUFFIX = "_first"  # the default page's own (unused) URL name: its file name is an alias (navigation)


def in_script_run() -> bool:
    """True inside a Streamlit script run (a page, a fragment, a callback): there, who asks must be given."""
    from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

    return get_script_run_ctx(suppress_warning=True) is not None


access.set_app_session_probe(in_script_run)  # at import: before any page can act


@dataclass(frozen=True)
class PageSpec:
    """One page of the app and the permission it needs."""

    path: str
    title: str
    icon: str
    permission: str

    @property
    def url_path(self) -> str:
        """What Streamlit infers for a page file: its name without the folder and suffix."""
        return self.path.rsplit("/", 1)[-1].removesuffix(".py")


def auth_configured() -> bool:
    """True when ``.streamlit/secrets.toml`` has an ``[auth]`` section (sign-in with st.login)."""
    secrets = st.secrets
    return bool(secrets.load_if_toml_exists() and secrets.get("auth"))


def reachable_beyond_loopback() -> bool:
    """True when the server listens beyond loopback, or this request came through a proxy or from a page
    whose address is not loopback (a reverse proxy makes a loopback server reachable too)."""
    return beyond_loopback(st_config.get_option("server.address"), dict(st.context.headers or {}))


def beyond_loopback(address: str | None, headers: dict[str, str]) -> bool:
    """The pure decision behind :func:`reachable_beyond_loopback`, from the configured address and the
    request's headers."""
    if not access.is_loopback(address):
        return True
    headers = {key.lower(): value for key, value in headers.items()}
    if any(headers.get(name) for name in FORWARDING_HEADERS):
        return True
    host, origin = headers.get("host"), headers.get("origin")
    if host and not access.is_loopback(_hostname(host)):
        return True
    # A proxy may rewrite Host, but the browser's Origin still names the address people typed.
    return bool(origin) and origin != "null" and not access.is_loopback(urlparse(origin).hostname)


def _hostname(host: str) -> str:
    """'[::1]:8501' → '::1', '127.0.0.1:8501' → '127.0.0.1', 'localhost' → 'localhost'."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def identify() -> access.Identity | None:
    """Who uses this session; None when sign-in is configured and nobody is signed in yet."""
    if auth_configured():
        if not st.user.is_logged_in:
            return None
        try:
            roles = access.load_roles()
        except ValueError as error:  # a broken roles file gives nobody a role, and says why
            st.error(f"The roles file {access.roles_file()} cannot be used: {error}", icon=":material/error:")
            roles = access.RoleConfig()
        return access.identity_from_claims(st.user.to_dict(), roles)
    if reachable_beyond_loopback():
        return access.anonymous_identity()
    return access.local_identity()


def refusal_text(identity: access.Identity | None) -> str:
    if identity is None:
        return "Please sign in to use this page."
    if identity.via == access.ANONYMOUS:
        return f"Access refused: {access.ANONYMOUS_REFUSAL}"
    return (f"Access refused: your role ({identity.role or 'none'}) does not include this page. "
            "Ask an administrator if you need it.")


def require(permission: str) -> access.Identity:
    """For the top of a page: who is signed in, if they may use the page; otherwise a refusal and stop."""
    _leave_pages_directory_mode()
    identity = identify()
    if not access.can(identity, permission):
        st.error(refusal_text(identity), icon=":material/block:")
        st.stop()
    assert identity is not None
    return identity


def _leave_pages_directory_mode() -> None:
    """On a fresh server, until app.py has once called st.navigation, Streamlit treats pages/ in its old
    way: a request for a page's URL runs that file alone and lists every file in the sidebar, with no
    sign-in banner and no role filter. Switch that mode off and rerun through app.py, which then
    resolves the same URL through the navigation of the signed-in person's role. (streamlit.testing
    starts every run in that mode and would lose each click to the rerun: left alone there.)"""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory and not st_config.get_option("global.appTest"):
        PagesManager.uses_pages_directory = False
        st.rerun()


def _refusal_page(spec: PageSpec, identity: access.Identity | None) -> Callable[[], None]:
    def refused() -> None:
        st.title(spec.title)
        st.error(refusal_text(identity), icon=":material/block:")
    refused.__name__ = f"refused_{spec.url_path}"
    return refused


def _alias_page(target: Any, spec: PageSpec) -> Callable[[], None]:
    """The default page under its own URL too (``/diagnose`` as well as ``/``), so a bookmark or a link works."""
    def alias() -> None:
        st.switch_page(target)
    alias.__name__ = f"alias_{spec.url_path}"
    return alias


def _sign_in_page() -> None:
    st.title("Chest X-ray workbench")
    st.write("Sign in with your hospital account to continue.")
    if st.button("Sign in", type="primary", key="sign_in"):
        st.login()


def _no_role_page(identity: access.Identity) -> Callable[[], None]:
    def no_role() -> None:
        st.title("No access yet")
        st.warning(f"You are signed in as {identity.name} ({identity.email or 'no e-mail'}), but no role has been "
                   "given to you. Ask an administrator to add you to the roles file.")
    return no_role


def _one_page_everywhere(page: Callable[[], None], title: str, url_path: str, specs: list[PageSpec]) -> list[Any]:
    """``page`` at the root and, hidden, under every page's URL: a link to /site before signing in shows the sign-in,
    not Streamlit's "page not found"."""
    return [st.Page(page, title=title, url_path=url_path, default=True)] + [
        st.Page(page, title=title, url_path=spec.url_path, visibility="hidden") for spec in specs]


def navigation(specs: list[PageSpec], identity: access.Identity | None):
    """st.navigation over the pages ``identity`` may use (the first one the default); the others stay
    reachable by URL but show a refusal and are not listed."""
    if identity is None:
        return st.navigation(_one_page_everywhere(_sign_in_page, "Sign in", "sign_in", specs), position="hidden")
    allowed = [spec for spec in specs if identity.can(spec.permission)]
    if not allowed:
        return st.navigation(_one_page_everywhere(_no_role_page(identity), "No access", "no_access", specs),
                             position="hidden")
    pages = []
    for spec in specs:
        if spec is allowed[0]:
            # Streamlit serves the default page at "/" and answers its own URL with "page not found", yet reserves that
            # URL for it: the page takes another (never shown) name, and a hidden alias answers under its own.
            pages.append(st.Page(spec.path, title=spec.title, icon=spec.icon, default=True,
                                 url_path=f"{spec.url_path}{DEFAULT_PAGE_SUFFIX}"))
            pages.append(st.Page(_alias_page(pages[-1], spec), title=spec.title, url_path=spec.url_path,
                                 visibility="hidden"))
        elif spec in allowed:
            pages.append(st.Page(spec.path, title=spec.title, icon=spec.icon))
        else:
            pages.append(st.Page(_refusal_page(spec, identity), title=spec.title, icon=spec.icon,
                                 url_path=spec.url_path, visibility="hidden"))
    return st.navigation(pages)


def banner(identity: access.Identity | None) -> None:
    """On every page: who is signed in (with sign-out), or that this is a local demo, or the warning
    that the server is reachable without sign-in."""
    if identity is None:
        return
    if identity.via == access.ANONYMOUS:
        st.error("This server is reachable from the network and nobody signs in: it is read-only (scoring only). "
                 "Configure sign-in ([auth] in .streamlit/secrets.toml) and roles before using it on a hospital "
                 "network.", icon=":material/lock_open:")
    with st.sidebar:
        if identity.via == access.SIGNED_IN:
            st.markdown(f"Signed in as **{identity.name}**  \nrole: {identity.role or 'none'}")
            if st.button("Sign out", key="sign_out", icon=":material/logout:"):
                st.logout()
        elif identity.via == access.LOCAL:
            st.info("Local demo without sign-in: you hold every role (reader, researcher, admin).",
                    icon=":material/person:")

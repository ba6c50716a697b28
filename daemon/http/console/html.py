"""HTML for the console: escaping and the page layout, with no template library.

Every value that reaches a page goes through :func:`esc` (or :func:`attrs`); a
``Markup`` is text already built from escaped parts. Pages carry no inline script
or style: the Content-Security-Policy (``headers.py``) forbids them.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

from daemon.http.console.session import Session


class Markup(str):
    """HTML that is safe as it is (built from escaped parts)."""


def esc(value: Any) -> Markup:
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


def join(parts: Iterable[str]) -> Markup:
    return Markup("".join(esc(p) for p in parts))


def tag(element: str, /, *children: Any, **attributes: Any) -> Markup:
    """``<name attrs>children</name>``; attribute names: ``class_`` -> ``class``,
    ``aria_label`` -> ``aria-label``; True is a bare attribute, None/False none."""
    return Markup(f"<{element}{attrs(**attributes)}>{join(children)}</{element}>")


def void(element: str, /, **attributes: Any) -> Markup:
    return Markup(f"<{element}{attrs(**attributes)}>")


def attrs(**attributes: Any) -> str:
    out = []
    for key, value in attributes.items():
        if value is None or value is False:
            continue
        name = key.rstrip("_").replace("_", "-")
        out.append(f" {name}" if value is True else f' {name}="{esc(value)}"')
    return "".join(out)


def csrf_field(session: Session) -> Markup:
    return void("input", type="hidden", name="csrf", value=session.csrf)


def action(path: str, label: str, session: Session, *, fields: dict[str, str] | None = None,
           class_: str | None = None) -> Markup:
    """A one-button form posting to ``path`` with the session's CSRF token."""
    hidden = [void("input", type="hidden", name=k, value=v) for k, v in (fields or {}).items()]
    return tag("form", csrf_field(session), *hidden, tag("button", label, type="submit"),
               method="post", action=path, class_=class_ or "inline")


NAV = (("/", "Status"), ("/board", "Board"), ("/history", "History"),
       ("/failures", "Failures"), ("/tickets", "Tickets"), ("/integration", "Integration"),
       ("/replay", "Replay"))


def page(title: str, body: Any, *, session: Session | None, current: str = "",
         notice: str | None = None, error: str | None = None) -> Markup:
    """A whole page: landmarks (banner, navigation, main), a skip link, the title."""
    head = join([
        Markup('<meta charset="utf-8">'),
        void("meta", name="viewport", content="width=device-width, initial-scale=1"),
        void("meta", name="csrf-token", content=session.csrf if session else ""),
        tag("title", f"{title} · syncd console"),
        void("link", rel="stylesheet", href="/console/static/console.css"),
        tag("script", src="/console/static/console.js", defer=True),
    ])
    banner: list[Any] = [tag("span", "syncd console", class_="brand")]
    if session is not None:
        links = [tag("li", tag("a", label, href=href,
                                aria_current="page" if href == current else None))
                 for href, label in NAV]
        banner.append(tag("nav", tag("ul", *links), aria_label="Console"))
        banner.append(tag("div", tag("span", f"{session.name} ({session.role})",
                                     class_="who"),
                          action("/logout", "Log out", session), class_="account"))
    messages: list[Any] = []
    if notice:
        messages.append(tag("p", notice, class_="notice", role="status"))
    if error:
        messages.append(tag("p", error, class_="error", role="alert"))
    main = tag("main", tag("h1", title), *messages, body, id="main", tabindex="-1")
    skip = tag("a", "Skip to content", href="#main", class_="skip")
    return Markup("<!doctype html>" + tag(
        "html", tag("head", head), tag("body", skip, tag("header", *banner), main),
        lang="en"))


def table(caption: str, headings: list[str], rows: list[list[Any]], *,
          empty: str = "Nothing to show.") -> Markup:
    if not rows:
        return tag("p", empty, class_="empty")
    head = tag("thead", tag("tr", *(tag("th", h, scope="col") for h in headings)))
    body = tag("tbody", *(tag("tr", *(tag("td", cell) for cell in row)) for row in rows))
    return tag("div", tag("table", tag("caption", caption), head, body), class_="scroll")

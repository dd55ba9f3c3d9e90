"""The routes of an application: every handler class and the pattern that reaches it."""
from __future__ import annotations

import tornado.web
from tornado.routing import RuleRouter


def routed_handlers(router):
    """Every RequestHandler class reachable from ``router``, with the pattern that routes to it."""
    found = []
    for rule in getattr(router, "rules", []):
        target = rule.target
        if isinstance(target, RuleRouter):
            found.extend(routed_handlers(target))
        elif isinstance(target, type) and issubclass(target, tornado.web.RequestHandler):
            found.append((getattr(rule.matcher, "regex", None) and rule.matcher.regex.pattern, target))
    return found

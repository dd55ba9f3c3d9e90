"""The fast token check (``AuthService._fast_claims``) accepts only what PyJWT accepts.

Every token below goes through both: whenever the fast path returns claims, PyJWT must
accept the token with the same claims; and ``verify_access`` answers the same as PyJWT
alone would (the fast path never turns a refusal into an acceptance, or the reverse).
"""
import time

import jwt
import pytest

from tornado_app.errors import Unauthorized
from tornado_app.services.identity.auth import _REQUIRED, ALGORITHM, AuthService

SECRET = "fast-path-secret-0123456789abcdef0123456789"
OTHER = "another-secret-0123456789abcdef0123456789xx"


def claims(**changes):
    now = int(time.time())
    body = {"typ": "access", "sub": "7", "sid": "s1", "jti": "j1", "ver": 2, "iss": "squall:test",
            "iat": now, "nbf": now, "exp": now + 600}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def tokens():
    now = int(time.time())
    yield "valid", jwt.encode(claims(), SECRET, algorithm=ALGORITHM)
    yield "expired", jwt.encode(claims(exp=now - 1), SECRET, algorithm=ALGORITHM)
    yield "expires now", jwt.encode(claims(exp=now), SECRET, algorithm=ALGORITHM)
    yield "not yet valid", jwt.encode(claims(nbf=now + 60), SECRET, algorithm=ALGORITHM)
    yield "issued in the future", jwt.encode(claims(iat=now + 60), SECRET, algorithm=ALGORITHM)
    yield "float times", jwt.encode(claims(exp=now + 600.5), SECRET, algorithm=ALGORITHM)
    yield "other secret", jwt.encode(claims(), OTHER, algorithm=ALGORITHM)
    yield "HS512", jwt.encode(claims(), SECRET, algorithm="HS512")
    yield "extra header", jwt.encode(claims(), SECRET, algorithm=ALGORITHM, headers={"kid": "x"})
    yield "alg none", jwt.encode(claims(), None, algorithm="none")
    yield "ticket kind", jwt.encode(claims(typ="ticket"), SECRET, algorithm=ALGORITHM)
    yield "other issuer", jwt.encode(claims(iss="squall:elsewhere"), SECRET, algorithm=ALGORITHM)
    yield "string sub", jwt.encode(claims(sub="abc"), SECRET, algorithm=ALGORITHM)
    for name in _REQUIRED:
        yield f"without {name}", jwt.encode(claims(**{name: None}), SECRET, algorithm=ALGORITHM)
    good = jwt.encode(claims(), SECRET, algorithm=ALGORITHM)
    head, body, sig = good.split(".")
    yield "bad signature", f"{head}.{body}.{sig[:-4]}AAAA"
    yield "swapped body", f"{head}.{jwt.encode(claims(sub='8'), OTHER).split('.')[1]}.{sig}"
    yield "two parts", f"{head}.{body}"
    yield "garbage", "not-a-token"
    yield "non-ascii", good + "é"
    yield "padding", f"{head}==.{body}.{sig}"


def pyjwt_outcome(auth, token):
    try:
        c = jwt.decode(token, SECRET, algorithms=[ALGORITHM], options={"require": _REQUIRED})
    except jwt.ExpiredSignatureError:
        return "token_expired"
    except jwt.InvalidTokenError:
        return "invalid_token"
    if c.get("typ") != "access" or c.get("iss") != auth.issuer:
        return "invalid_token"
    try:
        return (int(c["sub"]), str(c["sid"]), int(c["ver"]), int(c["exp"]), str(c["jti"]))
    except (TypeError, ValueError):
        return "invalid_token"


@pytest.mark.parametrize("name,token", list(tokens()))
def test_fast_path_agrees_with_pyjwt(name, token):
    auth = AuthService(SECRET, 600, profile="fast")
    auth.issuer = "squall:test"
    fast = auth._fast_claims(token)
    if fast is not None:
        assert fast == jwt.decode(token, SECRET, algorithms=[ALGORITHM], options={"require": _REQUIRED}), name
    try:
        c = auth.verify_access(token)
        got = (c.user_id, c.sid, c.version, c.exp, c.jti)
    except Unauthorized as exc:
        got = exc.code
    assert got == pyjwt_outcome(auth, token), name
    auth.close()


def test_fast_path_takes_the_tokens_squall_issues():
    auth = AuthService(SECRET, 600, profile="fast")
    auth.issuer = "squall:test"
    token, _ = auth.issue_access(7, "s1", 2)
    assert auth._fast_claims(token)["sub"] == "7"
    auth.close()

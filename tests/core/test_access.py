"""Tokens and roles without I/O: the order of roles, what an Authorization header may be, digests, names."""

from __future__ import annotations

import pytest

from gb28181gw.access import (
    PREFIX,
    Role,
    Token,
    check_name,
    digest_of,
    looks_like_token,
    new_secret,
    parse_authorization,
    same_digest,
)
from gb28181gw.errors import TokenError


def test_each_role_allows_the_ones_below_it_and_none_above() -> None:
    order = [Role.VIEWER, Role.OPERATOR, Role.ADMIN]
    for i, holder in enumerate(order):
        for j, needed in enumerate(order):
            assert holder.allows(needed) == (i >= j), (holder, needed)


@pytest.mark.parametrize("text", ["viewer", "OPERATOR", " admin "])
def test_role_parse_is_lenient_about_case_and_space(text: str) -> None:
    assert Role.parse(text).value == text.strip().lower()


def test_an_unknown_role_names_the_roles_there_are() -> None:
    with pytest.raises(TokenError, match="viewer, operator, admin"):
        Role.parse("root")


def test_a_new_secret_has_the_token_form_and_is_new_each_time() -> None:
    a, b = new_secret(), new_secret()
    assert a.startswith(PREFIX) and looks_like_token(a) and looks_like_token(b)
    assert a != b


def test_the_digest_is_sha256_hex_and_compares_equal_only_to_itself() -> None:
    secret = new_secret()
    digest = digest_of(secret)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert same_digest(digest, digest_of(secret))
    assert not same_digest(digest, digest_of(new_secret()))


def test_a_bearer_header_gives_its_token() -> None:
    secret = new_secret()
    assert parse_authorization(f"Bearer {secret}") == secret
    assert parse_authorization(f"bearer   {secret}  ") == secret


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Token gbgw_" + "a" * 43,
        "Bearer gbgw_" + "a" * 42,  # one short
        "Bearer gbgw_" + "a" * 44,  # one long
        "Bearer xxxx_" + "a" * 43,  # another prefix
        "Bearer gbgw_" + "a" * 42 + "!",  # a character no token has
        "Bearer gbgw_" + "a" * 42 + "\u00e9",  # not ASCII
        "Bearer gbgw_" + "a" * 43 + " gbgw_" + "b" * 43,  # two tokens
        "Bearer gbgw_" + "a" * 20 + "\r\nX-Evil: 1",
    ],
)
def test_a_forged_or_malformed_header_is_refused_without_quoting_it(header: str) -> None:
    with pytest.raises(TokenError) as caught:
        parse_authorization(header)
    text = str(caught.value)
    assert "aaaaaaaaaa" not in text and "dXNlcjpwYXNz" not in text


@pytest.mark.parametrize("name", ["admin", "nvr-team", "zhang.wei", "grafana_1", "ops@site", "a" * 64])
def test_usable_token_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", ".hidden", "a b", "a/b", "名字", "a" * 65, "x\n"])
def test_unusable_token_names_are_refused_with_the_rule(name: str) -> None:
    with pytest.raises(TokenError, match="1 to 64"):
        check_name(name)


def test_a_token_is_active_until_revoked() -> None:
    token = Token("grafana", Role.VIEWER, digest_of(new_secret()), 1000.0)
    assert token.active
    assert not Token("grafana", Role.VIEWER, token.digest, 1000.0, revoked=2000.0).active

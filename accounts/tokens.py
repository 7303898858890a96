"""JWT refresh tokens grouped into families (one per login), revoked as a whole.

The writes live in ``accounts.services`` (``token_family_*``, ``user_tokens_revoke``);
this module holds the token class, the serializers' shared helpers and the
authentication class that refuses access tokens of revoked families.
"""

from typing import Any, cast

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken, Token, UntypedToken

from . import services
from .models import TokenFamily, User

FAMILY_CLAIM = "fam"


class FamilyRefreshToken(RefreshToken):
    """A refresh token that starts a new family (a login); rotation keeps the claim."""

    @classmethod
    # simplejwt's signature also admits its stateless TokenUser; a login here is always an accounts.User.
    def for_user(cls, user: User) -> "FamilyRefreshToken":  # type: ignore[override]
        token = cast("FamilyRefreshToken", super().for_user(user))  # simplejwt builds cls(), this class
        token[FAMILY_CLAIM] = services.token_family_start(user=user)
        # The outstanding row was written before the claim was added: store the token as issued.
        OutstandingToken.objects.filter(jti=token["jti"]).update(token=str(token))
        return token


def replayed_family(raw: str) -> str | None:
    """The family of ``raw`` when it is a genuine refresh token that was already used (blacklisted)."""
    try:
        # simplejwt annotates the argument as Token | None; it takes the encoded token (str or bytes).
        payload = UntypedToken(raw).payload  # type: ignore[arg-type]  # signature, expiry checked; no blacklist check
    except TokenError:
        return None
    if payload.get("token_type") != "refresh" or not payload.get(FAMILY_CLAIM):
        return None
    if not BlacklistedToken.objects.filter(token__jti=payload.get("jti")).exists():
        return None
    return payload[FAMILY_CLAIM]


def lock_family(raw: str) -> str | None:
    """Lock the family row of ``raw`` for this transaction; raise ``TokenError`` for a revoked family.

    Call inside ``transaction.atomic()`` before rotating: concurrent rotations
    of one family then run one after the other (SQLite serializes writers itself).
    """
    try:
        payload = UntypedToken(raw).payload  # type: ignore[arg-type]  # the encoded token, as above
    except TokenError:
        return None  # simplejwt reports what is wrong with it
    family = payload.get(FAMILY_CLAIM)
    if not family:
        return None
    row = TokenFamily.objects.select_for_update().filter(pk=family).first()
    if row is None or row.revoked_at is not None:
        raise TokenError("Token has been revoked")
    return family


def family_revoked(token: Token | dict[str, Any]) -> bool:
    family = token.get(FAMILY_CLAIM)
    return bool(family) and TokenFamily.objects.filter(pk=family, revoked_at__isnull=False).exists()


class FamilyJWTAuthentication(JWTAuthentication):
    """simplejwt's bearer authentication; an access token of a revoked family is a 401 at once."""

    def get_user(self, validated_token: Token) -> User:  # type: ignore[override]  # see below
        # simplejwt's return type is an unbound TypeVar (AbstractBaseUser or TokenUser); with
        # USER_ID_CLAIM on the user model it returns AUTH_USER_MODEL's instance, accounts.User.
        user = cast(User, super().get_user(validated_token))
        if family_revoked(validated_token):
            raise InvalidToken({"detail": "Token has been revoked", "code": "token_not_valid"})
        return user


class FamilyJWTScheme(SimpleJWTScheme):
    """The OpenAPI security scheme of our bearer authentication: simplejwt's, under the same name."""

    target_class = "accounts.tokens.FamilyJWTAuthentication"

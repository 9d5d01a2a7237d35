"""The preflight's result rows, how an AWS error becomes "could not check", the table and the exit code."""
from __future__ import annotations

import enum
import textwrap
from dataclasses import dataclass
from typing import Iterable

from botocore.exceptions import BotoCoreError, ClientError


class Status(str, enum.Enum):
    OK = "ok"
    BLOCKER = "BLOCKER"
    WARNING = "warning"
    UNCHECKED = "could not check"


@dataclass(frozen=True)
class Row:
    check: str
    status: Status
    detail: str
    fix: str = ""


# Exit codes: a blocker means the deploy would fail (or leave pools that can never launch); an unchecked row means
# the answer is unknown, which must not read as a pass in a script either.
EXIT_OK = 0
EXIT_BLOCKER = 1
EXIT_UNCHECKED = 2


def error_text(exc: BaseException) -> str:
    """The AWS error code and message (ClientError), or the SDK's own error class and message."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'ClientError')}: {error.get('Message', '')}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"


def error_code(exc: BaseException) -> str:
    return exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""


def unchecked(check: str, exc: BaseException, permission: str) -> Row:
    """A call that was denied, unknown to the region or never reached AWS: unknown, never a pass."""
    fix = f"allow {permission} to the caller" if _denied(exc) else "rerun once the call succeeds"
    if (isinstance(exc, BotoCoreError) and "Credential" in type(exc).__name__) or error_code(exc) in _BAD_CREDENTIALS:
        fix = "configure valid AWS credentials (AWS_PROFILE, `aws sso login`, or environment variables)"
    return Row(check, Status.UNCHECKED, error_text(exc), fix)


_BAD_CREDENTIALS = {"ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId", "SignatureDoesNotMatch",
                    "UnrecognizedClientException"}


def _denied(exc: BaseException) -> bool:
    code = error_code(exc)
    return code in {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnauthorizedException"} or (
        "AccessDenied" in code)


def exit_code(rows: Iterable[Row]) -> int:
    statuses = {row.status for row in rows}
    if Status.BLOCKER in statuses:
        return EXIT_BLOCKER
    if Status.UNCHECKED in statuses:
        return EXIT_UNCHECKED
    return EXIT_OK


HEADERS = ("check", "status", "detail", "fix")
DETAIL_WIDTH = 64
FIX_WIDTH = 56


def render_table(rows: list[Row]) -> str:
    """A plain-text table; long details and fixes wrap inside their column."""
    check_w = max(len(HEADERS[0]), *(len(r.check) for r in rows)) if rows else len(HEADERS[0])
    status_w = max(len(s.value) for s in Status)

    def line(cells: tuple[str, str, str, str]) -> str:
        return (f"{cells[0]:<{check_w}}  {cells[1]:<{status_w}}  {cells[2]:<{DETAIL_WIDTH}}  {cells[3]}").rstrip()

    out = [line(HEADERS), line(("-" * check_w, "-" * status_w, "-" * DETAIL_WIDTH, "-" * FIX_WIDTH))]
    for row in rows:
        detail = textwrap.wrap(row.detail, DETAIL_WIDTH, break_on_hyphens=False) or [""]
        fix = textwrap.wrap(row.fix, FIX_WIDTH, break_on_hyphens=False) or [""]
        for i in range(max(len(detail), len(fix))):
            out.append(line((row.check if i == 0 else "", row.status.value if i == 0 else "",
                             detail[i] if i < len(detail) else "", fix[i] if i < len(fix) else "")))
    return "\n".join(out)


def summary(rows: list[Row]) -> str:
    counts = {status: sum(1 for r in rows if r.status is status) for status in Status}
    verdict = {EXIT_OK: "nothing blocks a deploy", EXIT_BLOCKER: "a deploy would fail or leave pools that cannot launch",
               EXIT_UNCHECKED: "no blocker found, but some checks could not run"}[exit_code(rows)]
    return (f"{counts[Status.OK]} ok, {counts[Status.WARNING]} warning(s), {counts[Status.BLOCKER]} blocker(s), "
            f"{counts[Status.UNCHECKED]} could not check: {verdict}")

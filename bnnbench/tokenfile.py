"""Bearer tokens from files and the warning for tokens on a command line.

A token given as an option (``--token``, ``--admin-token``) is visible to every user of the
machine (``ps``, ``/proc/PID/cmdline``); the environment (``BNNBENCH_*TOKEN``) and token
files (``--token-file``, ``--admin-token-file``) are not. Options keep working, with a
warning on stderr.

Light on purpose: the agent imports it.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
from pathlib import Path

log = logging.getLogger("bnnbench.tokens")

MAX_TOKEN_FILE_BYTES = 4096  # a token is ~43 characters; a bigger file is the wrong file


class TokenFileError(ValueError):
    """A token file that cannot be used; the message names the file and the cause."""


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The token held by ``path``: its only word, surrounding white space and a final newline
    stripped. A file other users may read gets a warning (chmod 600)."""
    p = Path(path)
    try:
        st = p.stat()
        if not stat.S_ISREG(st.st_mode):
            raise TokenFileError(f"token file {p} is not a regular file")
        if st.st_size > MAX_TOKEN_FILE_BYTES:
            raise TokenFileError(
                f"token file {p} is {st.st_size} bytes: it must hold the token alone"
            )
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TokenFileError(f"token file {p} does not exist") from None
    except PermissionError:
        raise TokenFileError(f"token file {p} is not readable by this user") from None
    except UnicodeDecodeError:
        raise TokenFileError(f"token file {p} is not text (UTF-8)") from None
    except OSError as exc:
        raise TokenFileError(f"cannot read token file {p}: {exc.strerror or exc}") from None
    words = text.split()
    if not words:
        raise TokenFileError(f"token file {p} is empty")
    if len(words) > 1:
        raise TokenFileError(
            f"token file {p} holds {len(words)} words: it must hold the token alone "
            "(no KEY=value, no comments)"
        )
    if st.st_mode & 0o077:
        log.warning(
            "token file %s can be read by other users (mode %o): chmod 600 %s",
            p,
            stat.S_IMODE(st.st_mode),
            p,
        )
    return words[0]


def command_line_warning(option: str, instead: str) -> str:
    return (
        f"warning: {option} on the command line is visible to every user of this machine "
        f"(ps, /proc/PID/cmdline); use {instead} instead"
    )


def warn_command_line_token(option: str, instead: str) -> None:
    """Say on stderr that a token was given as a command-line option (still accepted)."""
    print(command_line_warning(option, instead), file=sys.stderr, flush=True)


def client_token(
    token: str | None,
    token_file: str | os.PathLike[str] | None,
    env_token: str = "",
    env_token_file: str | os.PathLike[str] | None = None,
) -> str:
    """The token a user command sends: ``--token`` (with the warning) or ``--token-file``,
    else BNNBENCH_TOKEN or BNNBENCH_TOKEN_FILE (``env_*``). Raises :class:`TokenFileError`
    for an unusable file and ValueError when both of a pair are given."""
    if token is not None and token_file is not None:
        raise ValueError("give --token or --token-file, not both")
    if token is not None:
        warn_command_line_token("--token", "BNNBENCH_TOKEN or --token-file")
        return token
    if token_file is not None:
        return read_token_file(token_file)
    if env_token and env_token_file is not None:
        raise ValueError("both BNNBENCH_TOKEN and BNNBENCH_TOKEN_FILE are set: give one")
    if env_token_file is not None:
        return read_token_file(env_token_file)
    return env_token

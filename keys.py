"""The installation's keys, kept out of the database.

One master secret — `DRIP_SECRET_KEY`, or else the key file (`DRIP_SECRET_KEY_FILE`; by default
`<database file>.key` beside a SQLite database, created 0600 on first run) — and one key derived
from it per purpose with HKDF-SHA256 and a distinct label: staff session cookies, link tokens and
the suppression hash. Whoever reads the database (a copied file, a dump, a backup) learns none of
them: they cannot forge a staff cookie, and cannot brute-force a suppressed phone from its hash.

Upgrade from an installation that kept `secret_key` / `suppression_key` in the key/value table:
the first start moves both into the key file (as `legacy_…` entries, written and fsynced before
the rows are deleted), then deletes them from the table. After that:
- staff sessions are signed with the new derived key: everyone signs in once more;
- link tokens are signed with the new derived key and still verified with the legacy secret (and
  with a raw `DRIP_SECRET_KEY`, which signed them before), so booking and unsubscribe links in
  messages already sent keep working;
- the suppression hash keeps the legacy suppression key (now only in the key file): a keyed hash
  cannot be re-keyed without the address it hides, and every existing suppression must keep
  matching. A database backup taken before the upgrade still holds that key; destroy such backups.

May import `settings`, `db` and `models` only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from patient_drip.models import KeyValue
from patient_drip.settings import Settings, SettingsError

log = logging.getLogger("drip.keys")

# The key/value rows where installations before this change kept their keys.
LEGACY_ROWS = ("secret_key", "suppression_key")
# A fingerprint of the keys (not the keys): every process must use the same ones.
KEY_CHECK_ROW = "key_check"
KEY_FILE_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Keys:
    """The keys a runtime uses, each for one purpose only."""

    session: str  # signs staff session cookies
    link_tokens: str  # signs new booking and preference link tokens
    link_token_fallbacks: tuple[str, ...]  # also accepted when verifying older link tokens
    suppression: str  # keys the suppression list's HMAC


def derive(master: str, purpose: str) -> str:
    """A 256-bit key for `purpose` from the master secret (HKDF-SHA256, the label as `info`), hex.
    Distinct labels give independent keys: knowing one tells nothing about another."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"patient-drip/{purpose}/v1".encode())
    return hkdf.derive(master.encode()).hex()


def key_file_path(settings: Settings) -> Path | None:
    """Where the key file is: `DRIP_SECRET_KEY_FILE`, else `<database file>.key` beside a SQLite
    file database, else None (PostgreSQL or an in-memory database: no place that every process
    shares, so the operator must give one)."""
    if settings.secret_key_file is not None:
        return settings.secret_key_file
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        path = Path(url.database)
        return path.with_name(path.name + ".key")
    return None


def load_keys(settings: Settings, sessions: sessionmaker[Session], now: datetime) -> Keys:
    """The runtime's keys, from `DRIP_SECRET_KEY` or the key file (created on first run), after
    moving any key still stored in the database into the key file (see the module docstring).

    Raises `SettingsError` naming the variable when no key can be had: PostgreSQL without
    `DRIP_SECRET_KEY` or `DRIP_SECRET_KEY_FILE`, or a key file that cannot be read."""
    with sessions() as session:
        legacy = {row.key: row.value for row in session.scalars(select(KeyValue).where(KeyValue.key.in_(LEGACY_ROWS)))
                  if row.value}
    configured = settings.secret_key.get_secret_value() if settings.secret_key is not None else None
    stored: dict[str, str] = {}
    if configured is None or legacy:
        path = key_file_path(settings)
        if path is None:
            need = ("the keys stored in the database must be moved out of it" if legacy
                    else "no key file can be placed beside a PostgreSQL database")
            raise SettingsError(
                f"DRIP_SECRET_KEY_FILE: required here ({need}); set it to a path every process can read "
                "(created 0600 on first run), or set DRIP_SECRET_KEY to a long random secret shared by every process")
        stored = _key_file(path, {f"legacy_{name}": value for name, value in legacy.items()})
        if legacy:
            with sessions() as session:
                session.execute(delete(KeyValue).where(KeyValue.key.in_(list(legacy))))
                session.commit()
            log.warning("moved %s from the database to the key file %s", ", ".join(sorted(legacy)), path)
    master = configured if configured is not None else stored["secret"]
    fallbacks = [value for value in (stored.get("legacy_secret_key"), configured) if value]
    keys = Keys(
        session=derive(master, "session"),
        link_tokens=derive(master, "link-tokens"),
        link_token_fallbacks=tuple(dict.fromkeys(fallbacks)),
        suppression=stored.get("legacy_suppression_key") or derive(master, "suppression"),
    )
    _check_same_keys(sessions, keys, "DRIP_SECRET_KEY" if configured is not None else "DRIP_SECRET_KEY_FILE", now)
    return keys


def key_check(keys: Keys) -> str:
    """A fingerprint of the keys that reveals nothing of them (HMAC outputs of a fixed text)."""
    return ":".join(hmac.new(key.encode(), b"patient-drip key check", hashlib.sha256).hexdigest()[:32]
                    for key in (keys.session, keys.suppression))


def _check_same_keys(sessions: sessionmaker[Session], keys: Keys, variable: str, now: datetime) -> None:
    """Refuse to start with keys other than the ones the database was used with. A `drip` command
    run without the server's DRIP_SECRET_KEY would otherwise get a key file of its own and hash
    addresses with another suppression key: a suppressed person would no longer match, and could
    be texted again. The first start records the fingerprint."""
    expected = key_check(keys)
    with sessions() as session:
        stored = session.scalar(select(KeyValue.value).where(KeyValue.key == KEY_CHECK_ROW))
        if stored is None:
            session.add(KeyValue(key=KEY_CHECK_ROW, value=expected, updated_at=now))
            try:
                session.commit()
                return
            except IntegrityError:  # another process recorded it first: compare with theirs
                session.rollback()
                stored = session.scalar(select(KeyValue.value).where(KeyValue.key == KEY_CHECK_ROW))
    if stored != expected:
        raise SettingsError(
            f"{variable}: these are not the keys this database is used with (another DRIP_SECRET_KEY or key file "
            "than the other processes?); suppressions, links and sessions would not match. Give every process the "
            "same DRIP_SECRET_KEY, or the same key file (DRIP_SECRET_KEY_FILE)")


def _key_file(path: Path, legacy: dict[str, str]) -> dict[str, str]:
    """The key file's entries, creating it (0600, with a fresh secret) when it does not exist and
    adding `legacy` entries it lacks. Safe with several processes starting at once: the file
    appears whole (hard link of a finished temporary file) or not at all, and the secret in it is
    never replaced."""
    while True:
        try:
            data = _read(path)
        except FileNotFoundError:
            data = {"format": KEY_FILE_FORMAT, "secret": secrets.token_urlsafe(48), **legacy}
            try:
                _write(path, data, replace=False)
                return data
            except FileExistsError:  # another process made it first: use theirs
                continue
        missing = {name: value for name, value in legacy.items() if data.get(name) != value}
        if missing:
            data.update(missing)
            _write(path, data, replace=True)
        return data


def _read(path: Path) -> dict[str, str]:
    try:
        mode = path.stat().st_mode
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise SettingsError(f"DRIP_SECRET_KEY_FILE: cannot read {path}: {exc.strerror}") from None
    if mode & 0o077:
        # Written by hand or copied with a loose mode: the keys are as secret as the database.
        os.chmod(path, 0o600)
        log.warning("key file %s was readable by others; its mode is now 0600", path)
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("secret"), str) or len(data["secret"]) < 32:
        raise SettingsError(f"DRIP_SECRET_KEY_FILE: {path} is not a patient-drip key file (a JSON object with a "
                            "\"secret\" of at least 32 characters); restore it from your backup")
    return {name: value for name, value in data.items() if isinstance(value, str)}


def _write(path: Path, data: dict[str, object], *, replace: bool) -> None:
    """Write `data` to a temporary file created 0600 in the same folder, fsync it, then put it in
    place: `os.link` (fails if the file exists) for a new file, `os.replace` to update one."""
    if not path.parent.is_dir():
        raise SettingsError(f"DRIP_SECRET_KEY_FILE: the folder {path.parent} does not exist")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)
        _fsync_folder(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)

"""TLS for fleet connections (``distributed.security.Security``) and the address checks that go with it.

Without TLS, anyone who can reach the scheduler's port or an agent's port can run code on that machine
(Dask runs the functions it is sent): use plain tcp:// only on a network you trust.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.fleet import FleetError


def make_security(address: str, ca: str | None, cert: str | None, key: str | None, role: str) -> Any:
    """A ``Security`` for ``role`` ("client" or "worker") from PEM files, or None for plain tcp://.

    Raises:
        FleetError: TLS files given with a tcp:// address (or the reverse), a file missing, or only some of
            the three files given.
    """
    given = [x for x in (ca, cert, key) if x]
    scheme = address.split("://", 1)[0] if "://" in address else "tcp"
    if not given:
        if scheme == "tls":
            raise FleetError(f"{address} is a tls:// address: pass --tls-ca, --tls-cert and --tls-key")
        return None
    if len(given) != 3:
        raise FleetError("TLS needs all three of --tls-ca, --tls-cert and --tls-key")
    if scheme != "tls":
        raise FleetError(f"--tls-* given but {address} is not a tls:// address: use tls://{address.split('://')[-1]}")
    for flag, path in (("--tls-ca", ca), ("--tls-cert", cert), ("--tls-key", key)):
        if not Path(path).is_file():
            raise FleetError(f"{flag} {path}: no such file")
    from distributed.security import Security

    if role == "worker":
        return Security(tls_ca_file=ca, tls_worker_cert=cert, tls_worker_key=key, require_encryption=True)
    return Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key, require_encryption=True)

"""Which PostgreSQL failures are the rows' own (they fail again: set them aside) and which are
of the moment (the rows wait and are written again)."""

from __future__ import annotations

import asyncpg

# A failure of the rows themselves (a value PostgreSQL or the driver cannot take, a violated
# constraint): writing them again fails again, so they are isolated and set aside. Anything
# else PostgreSQL says (down, read-only, too many connections, shutting down) is of the moment.
ROW_FAULTS = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
    asyncpg.exceptions.InterfaceError,  # includes the driver's refusal of an argument
    OverflowError,
    ValueError,
    TypeError,
)
STORE_FAULTS = (OSError, TimeoutError, asyncpg.exceptions.PostgresError)


def is_row_fault(exc: BaseException, conn: asyncpg.Connection) -> bool:
    """True unless PostgreSQL itself failed or refused (then the rows wait and are retried).
    Whatever fails on a connection that was lost is not the rows' fault."""
    return (isinstance(exc, ROW_FAULTS) or not isinstance(exc, STORE_FAULTS)) and usable(conn)


def usable(conn: asyncpg.Connection) -> bool:
    """False once the connection was lost: every call on it then fails with InterfaceError,
    as if its arguments were at fault (and a pool's connection goes back to its pool)."""
    try:
        return not conn.is_closed()
    except asyncpg.exceptions.InterfaceError:
        return False

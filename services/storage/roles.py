"""Who may set up the least-privilege roles of migration 0006 (and the grants of later ones).

Two migrators do: the superuser, and the schema's owner role that deploy/'s bootstrap makes
(``deploy/postgres/initdb/15-owner.sh``), which owns every table and so may grant on it. Any
other role (``urbanpulse up`` migrates as the one role owning its embedded database) keeps doing
everything itself. The roles are cluster-wide, so their mere existence says nothing about a
database: what counts is who migrates it.
"""

from __future__ import annotations

import sqlalchemy as sa

OWNER = "urbanpulse_owner"

# pg_has_role raises on a role that does not exist, so the owner is looked up first.
_MIGRATOR_SETS_UP_ROLES = sa.text(
    "SELECT r.rolsuper OR EXISTS (SELECT FROM pg_roles o WHERE o.rolname = :owner "
    "AND pg_has_role(r.oid, o.oid, 'USAGE')) FROM pg_roles r WHERE r.rolname = current_user"
).bindparams(owner=OWNER)


def sets_up_roles(connection: sa.Connection) -> bool:
    """True when the role migrating ``connection`` is the superuser or the schema's owner."""
    return bool(connection.scalar(_MIGRATOR_SETS_UP_ROLES))


def is_superuser(connection: sa.Connection) -> bool:
    """Event triggers and new roles are the superuser's alone, even for the owner."""
    return bool(
        connection.scalar(sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))
    )

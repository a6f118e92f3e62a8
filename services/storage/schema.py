"""The relational schema (SQLAlchemy Core metadata).

The registry tables are ordinary tables. The time-series relations (``readings``,
``readings_extra`` and the rollups ``readings_1m``, ``readings_1h``, ``readings_1d``) are declared
here for querying only: the migrations create them per storage mode (hypertables and continuous
aggregates with TimescaleDB, range-partitioned tables and rollup tables without), and both modes
expose the same names and columns, so nothing above this package knows which mode runs.

The hot table is narrow on purpose: (time, int4 sensor key, int2 quantity key, float8 value) is
22 bytes of data a row, which keeps COPY fast and the indexes small. Non-numeric SenML values
(strings, booleans, data, sums) go to ``readings_extra`` under the same key.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

# Constraint names are deterministic so that migrations can refer to them.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

TIMESERIES_TABLES = frozenset(
    {"readings", "readings_extra", "readings_1m", "readings_1h", "readings_1d"}
)


def _ts() -> Column[object]:
    return Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now())


districts = Table(
    "districts",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("population", Integer, CheckConstraint("population >= 0", name="population")),
    Column("households", Integer, CheckConstraint("households >= 0", name="households")),
    Column("area_km2", Double, CheckConstraint("area_km2 > 0", name="area")),
    Column("boundary", JSONB, comment="GeoJSON Polygon or MultiPolygon"),
    # Reference data the KPIs need and that no sensor measures (customers served, km of mains,
    # the grid's renewable fraction, peak periods, target overrides...).
    Column("reference", JSONB, nullable=False, server_default="{}"),
    _ts(),
)

gateways = Table(
    "gateways",
    metadata,
    Column("id", Text, primary_key=True),
    Column("district_id", Text, ForeignKey("districts.id")),
    Column("description", Text),
    Column("online", Boolean, nullable=False, server_default="false"),
    Column("last_seen", DateTime(timezone=True)),
    Column("status", Text, nullable=False, server_default="active"),
    Column("metadata", JSONB, nullable=False, server_default="{}"),
    CheckConstraint("status IN ('active', 'retired')", name="status"),
    _ts(),
)

sensors = Table(
    "sensors",
    metadata,
    # The small integer key the readings carry; the text id is what gateways send.
    Column("key", Integer, Identity(always=False), primary_key=True),
    Column("id", Text, nullable=False, unique=True),
    Column("kind", Text, nullable=False),
    Column("domain", Text, nullable=False),
    Column("gateway_id", Text, ForeignKey("gateways.id")),
    Column("district_id", Text, ForeignKey("districts.id")),
    Column("latitude", Double, CheckConstraint("latitude BETWEEN -90 AND 90", name="latitude")),
    Column(
        "longitude", Double, CheckConstraint("longitude BETWEEN -180 AND 180", name="longitude")
    ),
    Column("unit", Text, comment="the unit the device sends, when not the canonical one"),
    Column("interval_s", Double, nullable=False, server_default="60"),
    Column("installed_at", DateTime(timezone=True)),
    Column("retired_at", DateTime(timezone=True)),
    Column("status", Text, nullable=False, server_default="active"),
    # What the KPIs need per sensor.
    Column("feeder", Text, comment="feeder this meter hangs off (ENE-1/2)"),
    Column("customers_served", Integer, comment="customers behind a feeder meter (SAIFI)"),
    Column("dma", Text, comment="district metered area of a water meter (WAT-1)"),
    Column("segment_length_m", Double, comment="road segment length (TRA-1, TRA-2)"),
    Column("free_flow_speed", Double, comment="segment free-flow speed, m/s (TRA-1)"),
    Column("road_class", Text, comment="major, minor... (TRA-2)"),
    Column("lanes", SmallInteger, comment="lanes a traffic counter covers"),
    Column("rated_max", Double, comment="rated maximum in the canonical unit, when set"),
    Column(
        "smart",
        Boolean,
        comment="a meter that reports by itself (ICT-1); null: the kind's default",
    ),
    Column("metadata", JSONB, nullable=False, server_default="{}"),
    CheckConstraint("status IN ('active', 'pending', 'maintenance', 'retired')", name="status"),
    CheckConstraint("interval_s > 0", name="interval"),
    _ts(),
)
Index("ix_sensors_district_kind", sensors.c.district_id, sensors.c.kind)
Index("ix_sensors_gateway", sensors.c.gateway_id)

quantities = Table(
    "quantities",
    metadata,
    Column("key", SmallInteger, primary_key=True, autoincrement=False),
    Column("name", Text, nullable=False, unique=True),
    Column("unit", Text, nullable=False),
    Column("cumulative", Boolean, nullable=False, server_default="false"),
    Column("description", Text, nullable=False, server_default=""),
)

readings = Table(
    "readings",
    metadata,
    Column("time", DateTime(timezone=True), nullable=False),
    Column("sensor_key", Integer, nullable=False),
    Column("quantity_key", SmallInteger, nullable=False),
    Column("value", Double, nullable=False),
    # Key order serves both the idempotent insert and per-sensor range reads.
    PrimaryKeyConstraint("sensor_key", "quantity_key", "time"),
)

readings_extra = Table(
    "readings_extra",
    metadata,
    Column("time", DateTime(timezone=True), nullable=False),
    Column("sensor_key", Integer, nullable=False),
    Column("quantity_key", SmallInteger, nullable=False),
    Column("value_string", Text),
    Column("value_bool", Boolean),
    Column("value_data", LargeBinary),
    Column("value_sum", Double),
    PrimaryKeyConstraint("sensor_key", "quantity_key", "time"),
)


def _rollup(name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("bucket", DateTime(timezone=True), nullable=False),
        Column("sensor_key", Integer, nullable=False),
        Column("quantity_key", SmallInteger, nullable=False),
        Column("count", BigInteger, nullable=False),
        Column("sum", Double, nullable=False),
        Column("min", Double, nullable=False),
        Column("max", Double, nullable=False),
        Column("first", Double, nullable=False),
        Column("last", Double, nullable=False),
        Column("first_time", DateTime(timezone=True), nullable=False),
        Column("last_time", DateTime(timezone=True), nullable=False),
        PrimaryKeyConstraint("sensor_key", "quantity_key", "bucket"),
    )


readings_1m = _rollup("readings_1m")
readings_1h = _rollup("readings_1h")
readings_1d = _rollup("readings_1d")

# Migration 0004: a quarantined message's bytes are stored once, in quarantine_messages; each
# rejected record (or whole message) is a quarantine row referring to them.
quarantine_messages = Table(
    "quarantine_messages",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("topic", Text, nullable=False),
    Column(
        "bytes",
        Integer,
        nullable=False,
        comment="length of the message as it arrived (payload keeps at most the pack limit)",
    ),
    Column("payload", LargeBinary, nullable=False, comment="the raw message bytes"),
    comment="the raw bytes of each quarantined message, once; quarantine rows refer to them",
)
Index("ix_quarantine_messages_received_at", quarantine_messages.c.received_at)

quarantine = Table(
    "quarantine",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("topic", Text, nullable=False),
    Column("gateway_id", Text),
    Column("sensor_id", Text),
    Column("record_index", Integer, comment="index in the pack; null: the whole message"),
    Column("reason", Text, nullable=False, comment="machine-readable reason code"),
    Column("detail", Text, nullable=False, server_default=""),
    Column("replayed_at", DateTime(timezone=True)),
    Column(
        "message_id",
        BigInteger,
        ForeignKey("quarantine_messages.id", ondelete="CASCADE"),
        nullable=False,
        comment="the message the entry comes from (its raw bytes)",
    ),
)
Index("ix_quarantine_reason_time", quarantine.c.reason, quarantine.c.received_at)
Index("ix_quarantine_sensor", quarantine.c.sensor_id)
Index("ix_quarantine_message_id", quarantine.c.message_id)

# Migration 0005: numbered packs stored, so a pack seen again writes nothing (issue 15;
# services/storage/ledger.py).
pack_ledger = Table(
    "pack_ledger",
    metadata,
    Column("gateway_id", Text, nullable=False),
    Column("stream", Text, nullable=False, comment="the gateway outbox file's random id"),
    Column("seq", BigInteger, nullable=False),
    Column(
        "oldest",
        BigInteger,
        nullable=False,
        comment="lowest seq the gateway still held when it sent this pack: rows below are pruned",
    ),
    Column("stored_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("gateway_id", "stream", "seq", name="pk_pack_ledger"),
    comment="numbered packs stored (readings or quarantine), so a pack seen again writes nothing",
)
Index("ix_pack_ledger_stored_at", pack_ledger.c.stored_at)

# Migration 0007: history imports, their checkpoint and counts (issue 16; services/dataio).
import_runs = Table(
    "import_runs",
    metadata,
    Column(
        "id", Text, primary_key=True, comment="sha256 of the file's bytes and the import options"
    ),
    Column("source", Text, nullable=False),
    Column("format", Text, nullable=False),
    Column(
        "position",
        BigInteger,
        nullable=False,
        server_default="0",
        comment="last line (or row) committed: a resume starts after it",
    ),
    *(
        Column(name, BigInteger, nullable=False, server_default="0")
        for name in ("units", "records", "stored", "duplicates", "conflicts", "quarantined")
    ),
    Column("span_lo", DateTime(timezone=True)),
    Column("span_hi", DateTime(timezone=True)),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column(
        "finished_at",
        DateTime(timezone=True),
        comment="rollups and KPIs refreshed: the import is complete",
    ),
    comment="history imports (urbanpulse import): checkpoint and counts",
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Text, primary_key=True, comment="public key id, the part before the secret"),
    Column("name", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("secret_hash", Text, nullable=False, comment="scrypt hash of the secret"),
    Column("revoked_at", DateTime(timezone=True)),
    Column("last_used_at", DateTime(timezone=True)),
    CheckConstraint("role IN ('operator', 'engineer', 'service', 'admin')", name="role"),
    _ts(),
)

rollup_watermarks = Table(
    "rollup_watermarks",
    metadata,
    Column("name", Text, primary_key=True),
    Column("watermark", DateTime(timezone=True), nullable=False),
    Column("refreshed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Time ranges written below the watermark since the last refresh (late data, replays): the
# next refresh recomputes the rollup buckets they touch. Partition mode only.
rollup_invalidations = Table(
    "rollup_invalidations",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("lo", DateTime(timezone=True), nullable=False),
    Column("hi", DateTime(timezone=True), nullable=False),
)

storage_settings = Table(
    "storage_settings",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

# --- Business and application layers (migration 0002) ------------------------------------------

city_settings = Table(
    "city_settings",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", JSONB, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    comment="city-wide reference data the KPIs need: peak periods, grid renewable fraction, "
    "timezone...",
)

kpi_targets = Table(
    "kpi_targets",
    metadata,
    Column("kpi_id", Text, nullable=False),
    Column(
        "scope",
        Text,
        nullable=False,
        comment="city: the whole city and every district without its own",
    ),
    Column("target", Double, nullable=False),
    Column("warning", Double, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("kpi_id", "scope"),
)

kpi_baselines = Table(
    "kpi_baselines",
    metadata,
    Column("kpi_id", Text, nullable=False),
    Column("scope", Text, nullable=False, comment="city or a district id"),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("value", Double),
    Column("coverage", Double),
    Column("quality", Text, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("recorded_by", Text),
    PrimaryKeyConstraint("kpi_id", "scope"),
    CheckConstraint("period_end > period_start", name="period"),
)

kpi_current = Table(
    "kpi_current",
    metadata,
    Column("kpi_id", Text, nullable=False),
    Column("scope", Text, nullable=False),
    Column("period", Text, nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("value", Double),
    Column("rating", Text, nullable=False),
    Column("body", JSONB, nullable=False, comment="the whole KPI value as the API serves it"),
    Column("computed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("kpi_id", "scope", "period"),
    comment="the current periods' KPI values, kept fresh by the monitor",
)

alert_rules = Table(
    "alert_rules",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("subject", Text, nullable=False),
    Column("kind", Text),
    Column("quantity", Text),
    Column("kpi_id", Text),
    Column("district_id", Text, ForeignKey("districts.id")),
    Column("condition", Text, nullable=False),
    Column("threshold", Double),
    Column("clear_threshold", Double, comment="hysteresis: the value that clears a raised alert"),
    Column("duration_s", Double, nullable=False, server_default="0"),
    Column("severity", Text, nullable=False, server_default="warning"),
    Column("enabled", Boolean, nullable=False, server_default="true"),
    Column("builtin", Boolean, nullable=False, server_default="false"),
    Column("params", JSONB, nullable=False, server_default="{}"),
    _ts(),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("subject IN ('sensor', 'gateway', 'kpi')", name="subject"),
    CheckConstraint("severity IN ('info', 'warning', 'critical')", name="severity"),
    CheckConstraint("duration_s >= 0", name="duration"),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("rule_id", Text, ForeignKey("alert_rules.id"), nullable=False),
    Column("subject_id", Text, nullable=False),
    Column("district_id", Text),
    Column("domain", Text),
    Column("state", Text, nullable=False, server_default="raised"),
    Column("severity", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("value", Double),
    Column("raised_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("acknowledged_at", DateTime(timezone=True)),
    Column("acknowledged_by", Text),
    Column("ack_comment", Text),
    Column("cleared_at", DateTime(timezone=True)),
    Column("cleared_by", Text, comment="who cleared it; null when the condition itself cleared"),
    Column("clear_comment", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("state IN ('raised', 'acknowledged', 'cleared')", name="state"),
)
Index(
    "uq_alerts_open",
    alerts.c.rule_id,
    alerts.c.subject_id,
    unique=True,
    postgresql_where=alerts.c.state != "cleared",
)
Index("ix_alerts_state_raised_at", alerts.c.state, alerts.c.raised_at)

alert_conditions = Table(
    "alert_conditions",
    metadata,
    Column("rule_id", Text, ForeignKey("alert_rules.id", ondelete="CASCADE"), nullable=False),
    Column("subject_id", Text, nullable=False),
    Column("since", DateTime(timezone=True), nullable=False),
    Column("value", Double),
    PrimaryKeyConstraint("rule_id", "subject_id"),
    comment="conditions true now but not yet for the rule's minimum duration",
)

# The live stream's log (services.storage.events).
events = Table(
    "events",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("type", Text, nullable=False),
    Column("district_id", Text),
    Column("domain", Text),
    Column("sensor_id", Text),
    Column("data", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column(
        "sensor_keys",
        ARRAY(Integer),
        comment="readings events: the new rows as parallel arrays (native types cost the "
        "writer least)",
    ),
    Column("quantity_keys", ARRAY(SmallInteger)),
    Column("times", ARRAY(DateTime(timezone=True))),
    Column("readings", ARRAY(Double)),
    CheckConstraint("type IN ('readings', 'kpi', 'alert')", name="type"),
)
Index("ix_events_time", events.c.time)

# Notifications (services.storage.notifications, migration 0010): subscriptions, the notifier's
# outbox (one row per alert transition, subscription and channel) and its cursor over events.
notification_subscriptions = Table(
    "notification_subscriptions",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("name", Text, nullable=False),
    Column("channel", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("secret", Text),
    Column("rule_ids", ARRAY(Text)),
    Column("district_ids", ARRAY(Text)),
    Column("min_severity", Text, nullable=False, server_default="info"),
    Column(
        "transitions",
        ARRAY(Text),
        nullable=False,
        server_default=text("ARRAY['raised', 'acknowledged', 'cleared']"),
    ),
    Column("escalate_after_s", Double),
    Column("escalate_to", Text),
    Column("enabled", Boolean, nullable=False, server_default="true"),
    _ts(),
    CheckConstraint("channel IN ('webhook', 'email')", name="channel"),
    CheckConstraint("min_severity IN ('info', 'warning', 'critical')", name="severity"),
    CheckConstraint("channel <> 'webhook' OR secret IS NOT NULL", name="secret"),
    CheckConstraint("escalate_after_s IS NULL OR escalate_after_s > 0", name="escalation"),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("alert_id", BigInteger, nullable=False),
    Column("transition", Text, nullable=False),
    Column("event_id", BigInteger),
    Column(
        "subscription_id",
        BigInteger,
        ForeignKey("notification_subscriptions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("channel", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_error", Text),
    _ts(),
    Column("sent_at", DateTime(timezone=True)),
    Column("dead_at", DateTime(timezone=True)),
    UniqueConstraint("alert_id", "transition", "subscription_id", "channel"),
    CheckConstraint("status IN ('pending', 'sent', 'dead')", name="status"),
    CheckConstraint(
        "transition IN ('raised', 'acknowledged', 'cleared', 'escalated')", name="transition"
    ),
)
Index(
    "ix_notifications_due",
    notifications.c.next_attempt_at,
    postgresql_where=notifications.c.status == "pending",
)
Index(
    "ix_notifications_dead",
    notifications.c.dead_at,
    postgresql_where=notifications.c.status == "dead",
)

notify_cursor = Table(
    "notify_cursor",
    metadata,
    Column("name", Text, primary_key=True),
    Column("last_event_id", BigInteger, nullable=False),
)

# --- Retention and erasure (migration 0012, issue 16) ----------------------------------------

retention_policies = Table(
    "retention_policies",
    metadata,
    Column("scope", Text, primary_key=True),
    Column(
        "name",
        Text,
        primary_key=True,
        server_default="",
        comment="the domain, kind or quantity; empty for the default",
    ),
    Column("raw_days", Integer, nullable=False),
    Column("rollup_1m_years", Integer),
    Column("rollup_1h_years", Integer),
    Column("rollup_1d_years", Integer),
    Column("updated_by", Text, nullable=False, server_default=text("CURRENT_USER")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("scope IN ('default', 'domain', 'kind', 'quantity')", name="scope"),
    CheckConstraint("raw_days >= 1", name="raw_days"),
    comment="how long raw readings and rollups are kept, per selector",
)

erasures = Table(
    "erasures",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("requested_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("actor", Text, nullable=False, comment="API key name (key id) or the CLI's user"),
    Column("sensor_id", Text, nullable=False, index=True),
    Column("range_start", DateTime(timezone=True), nullable=False),
    Column("range_end", DateTime(timezone=True), nullable=False),
    Column("reason", Text, nullable=False),
    Column("rollups", Text, nullable=False),
    Column("rows_erased", BigInteger, nullable=False, server_default="0"),
    Column("buckets_recomputed", BigInteger, nullable=False, server_default="0"),
    Column("finished_at", DateTime(timezone=True)),
    CheckConstraint("rollups IN ('keep', 'recompute')", name="rollups"),
    CheckConstraint("range_end > range_start", name="range"),
    comment="audit of erasures of a sensor's raw readings",
)

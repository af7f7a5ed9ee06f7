"""Typed values from HA's string state: numbers, booleans, text, timestamps, and normalised units.

Home Assistant stores every state as a string. ``typed_values`` adds:

- ``value_num``: the state as a finite number (the collector's ``state_num``).
- ``value_bool``: HA's on/off notion of the state, after the on/off states HA's group integration
  uses per domain (``homeassistant/components/<domain>/group.py``): lights, switches and other
  toggles ``on``/``off``; covers and valves open (``open``, ``opening``, ``closing``) vs ``closed``;
  locks *unlocked* (``unlocked``, ``open``, ``opening``, ``unlocking``, ``locking``) vs ``locked``
  (HA counts an unlocked lock as "on", like a ``lock`` binary sensor); people and device trackers
  ``home`` vs ``not_home`` (a named zone is neither); media players playing/paused/idle/on vs
  ``off``/``standby``; climate any HVAC mode vs ``off``; water heaters any mode vs ``off``; alarm
  panels armed/triggered vs ``disarmed``; vacuums cleaning/returning vs docked/idle/paused/off;
  timers ``active`` vs ``idle``/``paused``; ``sun`` above vs below the horizon. Any other domain
  maps ``on``/``true`` and ``off``/``false``, except free-text domains (``input_text``, ``text``,
  ``input_select``, ``select``), whose text is never read as a flag.
- ``value_str``: the state when it is not a number, ``unknown``, ``unavailable`` or a removal.
- ``value_ts``: the state as a UTC instant for states that are ISO 8601 times: sensors with
  ``device_class: timestamp`` and the stateless domains whose state is the time of their last
  activation (button, input_button, scene, event, notify, ...), ``datetime`` entities; for an
  ``input_datetime`` with a date, its ``timestamp`` attribute (unix seconds, so HA's time zone is
  already applied).
- ``unit``, ``value_num_normalized``, ``unit_normalized``: ``attributes.unit_of_measurement`` and the
  value converted to one canonical unit per quantity (``UNIT_CONVERSIONS``), so a sensor whose unit
  changes from °C to °F mid-stream still has one unit in ``value_num_normalized``. Units outside the
  table pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

SENTINEL_STATES = ("unknown", "unavailable")

# Attributes read from the attributes JSON (as text: numbers and booleans arrive as their JSON text).
ATTRIBUTE_FIELDS = ("unit_of_measurement", "device_class", "has_date", "timestamp")
ATTRIBUTES_DTYPE = pl.Struct({name: pl.String for name in ATTRIBUTE_FIELDS})

_DECODED = "_decoded_attributes"

_TOGGLE = ({"on"}, {"off"})
_OPEN_CLOSED = ({"open", "opening", "closing"}, {"closed"})
BOOLEAN_STATES: dict[str, tuple[set[str], set[str]]] = {
    **{
        domain: _TOGGLE
        for domain in (
            "automation",
            "binary_sensor",
            "calendar",
            "fan",
            "humidifier",
            "input_boolean",
            "light",
            "remote",
            "schedule",
            "script",
            "siren",
            "switch",
            "update",
        )
    },
    "cover": _OPEN_CLOSED,
    "valve": _OPEN_CLOSED,
    "lock": ({"unlocked", "open", "opening", "unlocking", "locking"}, {"locked"}),
    "person": ({"home"}, {"not_home"}),
    "device_tracker": ({"home"}, {"not_home"}),
    "media_player": ({"on", "playing", "paused", "idle", "buffering"}, {"off", "standby"}),
    "climate": ({"heat", "cool", "heat_cool", "auto", "dry", "fan_only"}, {"off"}),
    "water_heater": ({"eco", "electric", "performance", "high_demand", "heat_pump", "gas"}, {"off"}),
    "alarm_control_panel": (
        {"armed_away", "armed_custom_bypass", "armed_home", "armed_night", "armed_vacation", "triggered"},
        {"disarmed"},
    ),
    "vacuum": ({"cleaning", "returning", "on"}, {"docked", "idle", "paused", "off"}),
    "timer": ({"active"}, {"idle", "paused"}),
    "sun": ({"above_horizon"}, {"below_horizon"}),
}
GENERIC_BOOLEAN_STATES: dict[str, bool] = {"on": True, "true": True, "off": False, "false": False}
FREE_TEXT_DOMAINS = ("input_text", "text", "input_select", "select")

# Domains whose state is the ISO time of their last activation or their value.
TIMESTAMP_STATE_DOMAINS = (
    "button",
    "input_button",
    "scene",
    "event",
    "notify",
    "conversation",
    "stt",
    "tts",
    "wake_word",
    "image",
    "datetime",
)
HA_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%:z"

# unit -> (canonical unit, factor, offset): normalized = value * factor + offset.
UNIT_CONVERSIONS: dict[str, tuple[str, float, float]] = {
    # temperature
    "°C": ("°C", 1.0, 0.0),
    "°F": ("°C", 5 / 9, -32 * 5 / 9),
    "K": ("°C", 1.0, -273.15),
    # power
    "W": ("W", 1.0, 0.0),
    "mW": ("W", 1e-3, 0.0),
    "kW": ("W", 1e3, 0.0),
    "MW": ("W", 1e6, 0.0),
    "GW": ("W", 1e9, 0.0),
    "BTU/h": ("W", 0.29307107, 0.0),
    # energy
    "kWh": ("kWh", 1.0, 0.0),
    "Wh": ("kWh", 1e-3, 0.0),
    "mWh": ("kWh", 1e-6, 0.0),
    "MWh": ("kWh", 1e3, 0.0),
    "GWh": ("kWh", 1e6, 0.0),
    "J": ("kWh", 1 / 3.6e6, 0.0),
    "kJ": ("kWh", 1 / 3600, 0.0),
    "MJ": ("kWh", 1 / 3.6, 0.0),
    "GJ": ("kWh", 1e3 / 3.6, 0.0),
    # apparent and reactive power, current, voltage, frequency
    "VA": ("VA", 1.0, 0.0),
    "kVA": ("VA", 1e3, 0.0),
    "var": ("var", 1.0, 0.0),
    "kvar": ("var", 1e3, 0.0),
    "A": ("A", 1.0, 0.0),
    "mA": ("A", 1e-3, 0.0),
    "V": ("V", 1.0, 0.0),
    "mV": ("V", 1e-3, 0.0),
    "µV": ("V", 1e-6, 0.0),
    "kV": ("V", 1e3, 0.0),
    "Hz": ("Hz", 1.0, 0.0),
    "kHz": ("Hz", 1e3, 0.0),
    "MHz": ("Hz", 1e6, 0.0),
    "GHz": ("Hz", 1e9, 0.0),
    # pressure
    "hPa": ("hPa", 1.0, 0.0),
    "Pa": ("hPa", 0.01, 0.0),
    "kPa": ("hPa", 10.0, 0.0),
    "mbar": ("hPa", 1.0, 0.0),
    "cbar": ("hPa", 10.0, 0.0),
    "bar": ("hPa", 1e3, 0.0),
    "mmHg": ("hPa", 1.33322387415, 0.0),
    "inHg": ("hPa", 33.8638866667, 0.0),
    "psi": ("hPa", 68.9475729, 0.0),
    # volume (gas, water)
    "m³": ("m³", 1.0, 0.0),
    "L": ("m³", 1e-3, 0.0),
    "mL": ("m³", 1e-6, 0.0),
    "ft³": ("m³", 0.028316846592, 0.0),
    "CCF": ("m³", 2.8316846592, 0.0),
    "MCF": ("m³", 28.316846592, 0.0),
    "gal": ("m³", 0.003785411784, 0.0),
    "fl. oz.": ("m³", 2.95735295625e-5, 0.0),
    # length, speed, mass, duration
    "m": ("m", 1.0, 0.0),
    "km": ("m", 1e3, 0.0),
    "cm": ("m", 1e-2, 0.0),
    "mm": ("m", 1e-3, 0.0),
    "mi": ("m", 1609.344, 0.0),
    "yd": ("m", 0.9144, 0.0),
    "ft": ("m", 0.3048, 0.0),
    "in": ("m", 0.0254, 0.0),
    "km/h": ("km/h", 1.0, 0.0),
    "m/s": ("km/h", 3.6, 0.0),
    "mph": ("km/h", 1.609344, 0.0),
    "ft/s": ("km/h", 1.09728, 0.0),
    "kn": ("km/h", 1.852, 0.0),
    "kg": ("kg", 1.0, 0.0),
    "g": ("kg", 1e-3, 0.0),
    "mg": ("kg", 1e-6, 0.0),
    "µg": ("kg", 1e-9, 0.0),
    "lb": ("kg", 0.45359237, 0.0),
    "oz": ("kg", 0.028349523125, 0.0),
    "st": ("kg", 6.35029318, 0.0),
    "s": ("s", 1.0, 0.0),
    "ms": ("s", 1e-3, 0.0),
    "µs": ("s", 1e-6, 0.0),
    "min": ("s", 60.0, 0.0),
    "h": ("s", 3600.0, 0.0),
    "d": ("s", 86400.0, 0.0),
    "w": ("s", 604800.0, 0.0),
}


def decode_attributes(text: pl.Expr, *, strict: bool) -> pl.Expr:
    """The attribute fields ``typed_values`` needs from the attributes JSON ``text``, as a struct of strings.

    ``strict=False`` decodes each text once for all fields and fails on the first invalid one (which
    proves that all are valid); ``strict=True`` extracts each field on its own, null for invalid text.
    """
    if not strict:
        return text.str.json_decode(ATTRIBUTES_DTYPE)
    return pl.struct([text.str.json_path_match(f"$.{name}").alias(name) for name in ATTRIBUTE_FIELDS])


def with_decoded_attributes(
    states: pl.LazyFrame, alias: str, *, decodable: pl.Expr | None = None, strict: bool = False
) -> pl.LazyFrame:
    """``states`` plus ``alias``: ``decode_attributes`` of its ``attributes`` where ``decodable`` (an
    expression of ``attributes`` alone) holds.

    Each distinct text is decoded once and joined back to its rows: HA repeats an entity's attributes
    from one state to the next (its recorder stores each distinct set once), so a day holds far fewer
    distinct texts than rows, and a hash join costs a fraction of parsing every row.
    """
    text = pl.col("attributes")
    parse = text if decodable is None else pl.when(decodable).then(text)
    distinct = states.select(text).unique().with_columns(decode_attributes(parse, strict=strict).alias(alias))
    return states.join(distinct, on="attributes", how="left", maintain_order="left")


def _boolean_lookup() -> dict[str, bool]:
    lookup: dict[str, bool] = {}
    for domain, (on_states, off_states) in BOOLEAN_STATES.items():
        lookup.update({f"{domain}.{state}": True for state in on_states})
        lookup.update({f"{domain}.{state}": False for state in off_states})
    return lookup


_BOOLEAN_LOOKUP = _boolean_lookup()


def value_bool() -> pl.Expr:
    state, domain = pl.col("state"), pl.col("domain")
    specific = (domain + "." + state).replace_strict(_BOOLEAN_LOOKUP, default=None, return_dtype=pl.Boolean)
    generic = state.replace_strict(GENERIC_BOOLEAN_STATES, default=None, return_dtype=pl.Boolean)
    return (
        pl.when(domain.is_in(list(BOOLEAN_STATES)))
        .then(specific)
        .when(domain.is_in(FREE_TEXT_DOMAINS))
        .then(pl.lit(None, pl.Boolean))
        .otherwise(generic)
    )


def value_ts(attributes: pl.Expr) -> pl.Expr:
    state, domain = pl.col("state"), pl.col("domain")
    parsed = state.str.to_datetime(HA_TIME_FORMAT, strict=False, time_zone="UTC", time_unit="us")
    from_attribute = (
        (attributes.struct.field("timestamp").cast(pl.Float64, strict=False) * 1e6)
        .cast(pl.Int64, strict=False)
        .cast(pl.Datetime("us", "UTC"))
    )
    is_timestamp_state = domain.is_in(TIMESTAMP_STATE_DOMAINS) | (
        (domain == "sensor") & (attributes.struct.field("device_class") == "timestamp")
    )
    return (
        pl.when(is_timestamp_state)
        .then(parsed)
        .when((domain == "input_datetime") & (attributes.struct.field("has_date") == "true"))
        .then(from_attribute)
    )


def _conversion(index: int, table: Mapping[str, tuple[str, float, float]]) -> dict[str, object]:
    return {unit: spec[index] for unit, spec in table.items()}


def normalized_value() -> tuple[pl.Expr, pl.Expr]:
    unit = pl.col("unit")
    factor = unit.replace_strict(_conversion(1, UNIT_CONVERSIONS), default=1.0, return_dtype=pl.Float64)
    offset = unit.replace_strict(_conversion(2, UNIT_CONVERSIONS), default=0.0, return_dtype=pl.Float64)
    canonical = unit.replace_strict(_conversion(0, UNIT_CONVERSIONS), default=unit, return_dtype=pl.String)
    return pl.col("value_num") * factor + offset, canonical


def typed_values(states: pl.LazyFrame, attributes: pl.Expr | None = None) -> pl.LazyFrame:
    """Add the typed value columns to ``states`` rows (see the module docstring).

    ``attributes`` is the struct from ``decode_attributes``; by default the ``attributes`` column is
    decoded here.
    """
    if attributes is None:
        return typed_values(with_decoded_attributes(states, _DECODED), pl.col(_DECODED)).drop(_DECODED)
    is_sentinel = pl.col("state").is_null() | pl.col("state").is_in(SENTINEL_STATES)
    value_num_normalized, unit_normalized = normalized_value()
    return states.with_columns(
        attributes.struct.field("unit_of_measurement").alias("unit"),
        pl.col("state_num").alias("value_num"),
        pl.when(is_sentinel).then(None).otherwise(value_bool()).alias("value_bool"),
        pl.when(is_sentinel | pl.col("state_num").is_not_null())
        .then(None)
        .otherwise(pl.col("state"))
        .alias("value_str"),
        pl.when(is_sentinel).then(None).otherwise(value_ts(attributes)).alias("value_ts"),
    ).with_columns(
        value_num_normalized.alias("value_num_normalized"),
        pl.when(pl.col("value_num").is_not_null()).then(unit_normalized).alias("unit_normalized"),
    )

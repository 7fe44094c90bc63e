"""The OCPI 2.2.1 side of our OpenAPI document (/api/schema/, /api/docs/): the objects as components, the
request bodies, the response envelope and the `Token` security scheme.

Hand-written OpenAPI, not DRF serializers. Each object below is its table in the OCPI 2.2.1 specification
(branch release-2.2.1-bugfixes) transcribed row by row — property, type, cardinality, description — and
turned into JSON Schema by `_object_schema()`, so it can be checked against the spec line by line and
says "CiString(36)" or "+" (one or more) as plainly as the spec does. Serializers would have needed some
forty classes, would have invited being used as a second parser next to `ocpi.normalize` (which is what
reads bodies, leniently), and drf-spectacular would have split each into request and response components.
Nothing here validates anything at runtime.

The OCPI views read the raw body (parser_classes = []), so drf-spectacular finds no media type for their
request bodies: `json_body()` names application/json explicitly. `postprocess_schema` (a drf-spectacular
POSTPROCESSING_HOOK, emsp/settings.py) adds the components and the security scheme to the document.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse

from ocpi.enums import (
    AUTH_METHODS,
    CAPABILITIES,
    CDR_DIMENSION_TYPES,
    COMMAND_RESULT_TYPES,
    CONNECTOR_FORMATS,
    CONNECTOR_TYPES,
    DAYS_OF_WEEK,
    ENERGY_SOURCE_CATEGORIES,
    ENVIRONMENTAL_IMPACT_CATEGORIES,
    EVSE_STATUSES,
    FACILITIES,
    IMAGE_CATEGORIES,
    PARKING_RESTRICTIONS,
    PARKING_TYPES,
    POWER_TYPES,
    RESERVATION_RESTRICTION_TYPES,
    SESSION_STATUSES,
    TARIFF_DIMENSION_TYPES,
    TARIFF_TYPES,
    TOKEN_TYPES,
)

SCHEMA_PREFIX = "Ocpi"  # every OCPI component is Ocpi<SpecName>: Beckn has a Location too
SPEC = "https://github.com/ocpi/ocpi/blob/release-2.2.1-bugfixes"

TOKEN_SCHEME = {
    "type": "apiKey",
    "in": "header",
    "name": "Authorization",
    "description": (
        "OCPI 2.2.1 transport §'Authorization header': `Token <base64 of the token>` (the plain token is "
        "accepted too, as OCPI 2.1.1 sent it). Token A (from our console) for /ocpi/versions, version details "
        "and the credentials POST; the token we issued at registration (Token C) for everything else."
    ),
}
# Per operation: `@extend_schema(auth=TOKEN_AUTH)` (our views authenticate in OcpiView, not through DRF
# authentication classes, so drf-spectacular cannot discover it).
TOKEN_AUTH: list[dict[str, list[str]]] = [{"Token": []}]

# Enums: the value sets ocpi.enums already holds (copied from the spec), the others transcribed here.
ENUMS: dict[str, tuple[str, frozenset[str] | tuple[str, ...]]] = {
    "AllowedType": ("mod_tokens", ("ALLOWED", "BLOCKED", "EXPIRED", "NO_CREDIT", "NOT_ALLOWED")),
    "AuthMethod": ("mod_cdrs", AUTH_METHODS),
    "Capability": ("mod_locations", CAPABILITIES),
    "CdrDimensionType": ("mod_cdrs", CDR_DIMENSION_TYPES),
    "CommandResponseType": ("mod_commands", ("ACCEPTED", "NOT_SUPPORTED", "REJECTED", "UNKNOWN_SESSION")),
    "CommandResultType": ("mod_commands", COMMAND_RESULT_TYPES),
    "CommandType": (
        "mod_commands",
        ("CANCEL_RESERVATION", "RESERVE_NOW", "START_SESSION", "STOP_SESSION", "UNLOCK_CONNECTOR"),
    ),
    "ConnectionStatus": ("mod_hub_client_info", ("CONNECTED", "OFFLINE", "PLANNED", "SUSPENDED")),
    "ConnectorFormat": ("mod_locations", CONNECTOR_FORMATS),
    "ConnectorType": ("mod_locations", CONNECTOR_TYPES),
    "DayOfWeek": ("mod_tariffs", DAYS_OF_WEEK),
    "EnergySourceCategory": ("mod_locations", ENERGY_SOURCE_CATEGORIES),
    "EnvironmentalImpactCategory": ("mod_locations", ENVIRONMENTAL_IMPACT_CATEGORIES),
    "Facility": ("mod_locations", FACILITIES),
    "ImageCategory": ("mod_locations", IMAGE_CATEGORIES),
    "InterfaceRole": ("version_information_endpoint", ("RECEIVER", "SENDER")),
    "ModuleID": (
        "version_information_endpoint",
        (
            "cdrs",
            "chargingprofiles",
            "commands",
            "credentials",
            "hubclientinfo",
            "locations",
            "sessions",
            "tariffs",
            "tokens",
        ),
    ),
    "ParkingRestriction": ("mod_locations", PARKING_RESTRICTIONS),
    "ParkingType": ("mod_locations", PARKING_TYPES),
    "PowerType": ("mod_locations", POWER_TYPES),
    "ProfileType": ("mod_sessions", ("CHEAP", "FAST", "GREEN", "REGULAR")),
    "ReservationRestrictionType": ("mod_tariffs", RESERVATION_RESTRICTION_TYPES),
    "Role": ("types", ("CPO", "EMSP", "HUB", "NAP", "NSP", "OTHER", "SCSP")),
    "SessionStatus": ("mod_sessions", SESSION_STATUSES),
    "Status": ("mod_locations", EVSE_STATUSES),
    "TariffDimensionType": ("mod_tariffs", TARIFF_DIMENSION_TYPES),
    "TariffType": ("mod_tariffs", TARIFF_TYPES),
    "TokenType": ("mod_tokens", TOKEN_TYPES),
    # The spec's VersionNumber (2.0 … 2.2.1) plus 2.3.0, which /ocpi/versions lists too.
    "VersionNumber": ("version_information_endpoint", ("2.0", "2.1", "2.1.1", "2.2", "2.2.1", "2.3.0")),
    "WhitelistType": ("mod_tokens", ("ALLOWED", "ALLOWED_OFFLINE", "ALWAYS", "NEVER")),
}

# Objects and classes: (spec file, rows); a row is (property, spec type, cardinality, description) as in the
# spec's table. Cardinality: 1 required, ? optional, * a list (optional), + a list of at least one (required).
OBJECTS: dict[str, tuple[str, list[tuple[str, str, str, str]]]] = {
    "DisplayText": (
        "types",
        [
            ("language", "string(2)", "1", "Language Code ISO 639-1."),
            ("text", "string(512)", "1", "Text to be displayed to a end user."),
        ],
    ),
    "Price": (
        "types",
        [
            ("excl_vat", "number", "1", "Price/Cost excluding VAT."),
            ("incl_vat", "number", "?", "Price/Cost including VAT."),
        ],
    ),
    "Location": (
        "mod_locations",
        [
            ("country_code", "CiString(2)", "1", "ISO-3166 alpha-2 country code of the CPO that 'owns' this Location."),
            ("party_id", "CiString(3)", "1", "ID of the CPO that 'owns' this Location."),
            ("id", "CiString(36)", "1", "Uniquely identifies the location within the CPOs platform."),
            ("publish", "boolean", "1", "Defines if a Location may be published on an website or app etc."),
            ("publish_allowed_to", "PublishTokenType", "*", "Only with publish false: who may be shown it."),
            ("name", "string(255)", "?", "Display name of the location."),
            ("address", "string(255)", "1", "Street/block name and house number if available."),
            ("city", "string(45)", "1", "City or town."),
            ("postal_code", "string(10)", "?", "Postal code; may be omitted only where the location has none."),
            ("state", "string(45)", "?", "State or province of the location, only to be used when relevant."),
            ("country", "string(3)", "1", "ISO 3166-1 alpha-3 code for the country of this location."),
            ("coordinates", "GeoLocation", "1", "Coordinates of the location."),
            ("related_locations", "AdditionalGeoLocation", "*", "Related points relevant to the user."),
            ("parking_type", "ParkingType", "?", "The general type of parking at the charge point location."),
            ("evses", "EVSE", "*", "List of EVSEs that belong to this Location."),
            ("directions", "DisplayText", "*", "Human-readable directions on how to reach the location."),
            ("operator", "BusinessDetails", "?", "Information of the operator."),
            ("suboperator", "BusinessDetails", "?", "Information of the suboperator if available."),
            ("owner", "BusinessDetails", "?", "Information of the owner if available."),
            ("facilities", "Facility", "*", "Optional list of facilities this charging location directly belongs to."),
            ("time_zone", "string(255)", "1", "IANA tzdata TZ value, e.g. Europe/Oslo."),
            ("opening_times", "Hours", "?", "The times when the EVSEs at the location can be accessed for charging."),
            ("charging_when_closed", "boolean", "?", "Charging goes on outside opening hours (default true)."),
            ("images", "Image", "*", "Links to images related to the location such as photos or logos."),
            ("energy_mix", "EnergyMix", "?", "Details on the energy supplied at this location."),
            ("last_updated", "DateTime", "1", "When this Location, or one of its EVSEs or Connectors, last changed."),
        ],
    ),
    "EVSE": (
        "mod_locations",
        [
            ("uid", "CiString(36)", "1", "Uniquely identifies the EVSE within the CPOs platform."),
            ("evse_id", "CiString(48)", "?", "EVSE ID (eMI3 V1.0 'Part 2: business objects')."),
            ("status", "Status", "1", "Indicates the current status of the EVSE."),
            ("status_schedule", "StatusSchedule", "*", "Indicates a planned status update of the EVSE."),
            ("capabilities", "Capability", "*", "List of functionalities that the EVSE is capable of."),
            ("connectors", "Connector", "+", "List of available connectors on the EVSE."),
            ("floor_level", "string(4)", "?", "Level on which the Charge Point is located."),
            ("coordinates", "GeoLocation", "?", "Coordinates of the EVSE."),
            ("physical_reference", "string(16)", "?", "Number/string printed on the EVSE for visual identification."),
            ("directions", "DisplayText", "*", "Directions from the Location to this EVSE."),
            ("parking_restrictions", "ParkingRestriction", "*", "The restrictions that apply to the parking spot."),
            ("images", "Image", "*", "Links to images related to the EVSE such as photos or logos."),
            ("last_updated", "DateTime", "1", "Timestamp when this EVSE or one of its Connectors was last updated."),
        ],
    ),
    "Connector": (
        "mod_locations",
        [
            ("id", "CiString(36)", "1", "Identifier of the Connector within the EVSE."),
            ("standard", "ConnectorType", "1", "The standard of the installed connector."),
            ("format", "ConnectorFormat", "1", "The format (socket/cable) of the installed connector."),
            ("power_type", "PowerType", "1", ""),
            ("max_voltage", "int", "1", "Maximum voltage (line to neutral for AC_3_PHASE), in V."),
            ("max_amperage", "int", "1", "Maximum amperage of the connector, in ampere [A]."),
            ("max_electric_power", "int", "?", "Maximum electric power the connector delivers, in W."),
            ("tariff_ids", "CiString(36)", "*", "Identifiers of the currently valid charging tariffs."),
            ("terms_and_conditions", "URL", "?", "URL to the operator's terms and conditions."),
            ("last_updated", "DateTime", "1", "Timestamp when this Connector was last updated (or created)."),
        ],
    ),
    "AdditionalGeoLocation": (
        "mod_locations",
        [
            ("latitude", "string(10)", "1", "Latitude of the point in decimal degree."),
            ("longitude", "string(11)", "1", "Longitude of the point in decimal degree."),
            ("name", "DisplayText", "?", "Name of the point in local language or as written at the location."),
        ],
    ),
    "BusinessDetails": (
        "mod_locations",
        [
            ("name", "string(100)", "1", "Name of the operator."),
            ("website", "URL", "?", "Link to the operator's website."),
            ("logo", "Image", "?", "Image link to the operator's logo."),
        ],
    ),
    "EnergyMix": (
        "mod_locations",
        [
            ("is_green_energy", "boolean", "1", "True if 100% from regenerative sources."),
            ("energy_sources", "EnergySource", "*", "Energy sources of this location's tariff (category, percentage)."),
            ("environ_impact", "EnvironmentalImpact", "*", "Nuclear waste and CO2 of this location's tariff."),
            ("supplier_name", "string(64)", "?", "Name of the energy supplier for this location or tariff."),
            ("energy_product_name", "string(64)", "?", "Energy supplier's product/tariff plan used here."),
        ],
    ),
    "EnergySource": (
        "mod_locations",
        [
            ("source", "EnergySourceCategory", "1", "The type of energy source."),
            ("percentage", "number", "1", "Percentage of this source (0-100) in the mix."),
        ],
    ),
    "EnvironmentalImpact": (
        "mod_locations",
        [
            ("category", "EnvironmentalImpactCategory", "1", "The environmental impact category of this value."),
            ("amount", "number", "1", "Amount of this portion in g/kWh."),
        ],
    ),
    "ExceptionalPeriod": (
        "mod_locations",
        [
            ("period_begin", "DateTime", "1", "Begin of the exception."),
            ("period_end", "DateTime", "1", "End of the exception."),
        ],
    ),
    "GeoLocation": (
        "mod_locations",
        [
            ("latitude", "string(10)", "1", "Latitude of the point in decimal degree."),
            ("longitude", "string(11)", "1", "Longitude of the point in decimal degree."),
        ],
    ),
    "Hours": (
        "mod_locations",
        [
            ("twentyfourseven", "boolean", "1", "True: open 24/7, except the given exceptions."),
            ("regular_hours", "RegularHours", "*", "Regular hours, weekday-based."),
            ("exceptional_openings", "ExceptionalPeriod", "*", "Exceptional opening periods (date-time ranges)."),
            ("exceptional_closings", "ExceptionalPeriod", "*", "Exceptional closing periods (date-time ranges)."),
        ],
    ),
    "Image": (
        "mod_locations",
        [
            ("url", "URL", "1", "URL from where the image data can be fetched through a web browser."),
            ("thumbnail", "URL", "?", "URL from where a thumbnail of the image can be fetched through a webbrowser."),
            ("category", "ImageCategory", "1", "Describes what the image is used for."),
            ("type", "CiString(4)", "1", "Image type like: gif, jpeg, png, svg."),
            ("width", "int(5)", "?", "Width of the full scale image."),
            ("height", "int(5)", "?", "Height of the full scale image."),
        ],
    ),
    "PublishTokenType": (
        "mod_locations",
        [
            ("uid", "CiString(36)", "?", "Unique ID by which this Token can be identified."),
            ("type", "TokenType", "?", "Type of the token."),
            ("visual_number", "string(64)", "?", "Number/identification as printed on the token (RFID card)."),
            ("issuer", "string(64)", "?", "Issuing company, usually the name printed on the token."),
            ("group_id", "CiString(36)", "?", "This ID groups a couple of tokens."),
        ],
    ),
    "RegularHours": (
        "mod_locations",
        [
            ("weekday", "int(1)", "1", "Number of day in the week, from Monday (1) till Sunday (7)"),
            ("period_begin", "string(5)", "1", 'Begin of the regular period, local time, HH:MM ("18:15").'),
            ("period_end", "string(5)", "1", "End of the regular period, in local time, syntax as for `period_begin`."),
        ],
    ),
    "StatusSchedule": (
        "mod_locations",
        [
            ("period_begin", "DateTime", "1", "Begin of the scheduled period."),
            ("period_end", "DateTime", "?", "End of the scheduled period, if known."),
            ("status", "Status", "1", "Status value during the scheduled period."),
        ],
    ),
    "Session": (
        "mod_sessions",
        [
            ("country_code", "CiString(2)", "1", "ISO-3166 alpha-2 country code of the CPO that 'owns' this Session."),
            ("party_id", "CiString(3)", "1", "ID of the CPO that 'owns' this Session."),
            ("id", "CiString(36)", "1", "The unique id that identifies the charging session in the CPO platform."),
            ("start_date_time", "DateTime", "1", "The timestamp when the session became ACTIVE in the Charge Point."),
            ("end_date_time", "DateTime", "?", "The timestamp when the session was completed/finished."),
            ("kwh", "number", "1", "How many kWh were charged."),
            ("cdr_token", "CdrToken", "1", "Token used to start this charging session."),
            ("auth_method", "AuthMethod", "1", "Method used for authentication."),
            ("authorization_reference", "CiString(36)", "?", "Reference to the authorization given by the eMSP."),
            ("location_id", "CiString(36)", "1", "Location.id of the Location where the session is/was happening."),
            ("evse_uid", "CiString(36)", "1", "EVSE.uid of the EVSE where the session is/was happening."),
            ("connector_id", "CiString(36)", "1", "Connector.id of the Connector where the session is/was happening."),
            ("meter_id", "string(255)", "?", "Optional identification of the kWh meter."),
            ("currency", "string(3)", "1", "ISO 4217 code of the currency used for this session."),
            ("charging_periods", "ChargingPeriod", "*", "Charging Periods to calculate and verify the total cost."),
            ("total_cost", "Price", "?", "The total cost of the session in the specified currency."),
            ("status", "SessionStatus", "1", "The status of the session."),
            ("last_updated", "DateTime", "1", "Timestamp when this Session was last updated (or created)."),
        ],
    ),
    "CDR": (
        "mod_cdrs",
        [
            ("country_code", "CiString(2)", "1", "ISO-3166 alpha-2 country code of the CPO that 'owns' this CDR."),
            ("party_id", "CiString(3)", "1", "ID of the CPO that 'owns' this CDR (following the ISO-15118 standard)."),
            ("id", "CiString(39)", "1", "Uniquely identifies the CDR."),
            ("start_date_time", "DateTime", "1", "Start of the session (or of the reservation before it)."),
            ("end_date_time", "DateTime", "1", "The timestamp when the session was completed/finished."),
            ("session_id", "CiString(36)", "?", "Unique ID of the Session for which this CDR is sent."),
            ("cdr_token", "CdrToken", "1", "Token used to start this charging session."),
            ("auth_method", "AuthMethod", "1", "Method used for authentication."),
            ("authorization_reference", "CiString(36)", "?", "Reference to the authorization given by the eMSP."),
            ("cdr_location", "CdrLocation", "1", "Where the session took place: the EVSE and connector used."),
            ("meter_id", "string(255)", "?", "Identification of the Meter inside the Charge Point."),
            ("currency", "string(3)", "1", "Currency of the CDR in ISO 4217 Code."),
            ("tariffs", "Tariff", "*", "List of relevant Tariffs, see: Tariff."),
            ("charging_periods", "ChargingPeriod", "+", "List of Charging Periods that make up this charging session."),
            ("signed_data", "SignedData", "?", "Signed data that belongs to this charging Session."),
            ("total_cost", "Price", "1", "Total sum of all the costs of this transaction in the specified currency."),
            ("total_fixed_cost", "Price", "?", "Total sum of all the fixed costs in the specified currency."),
            ("total_energy", "number", "1", "Total energy charged, in kWh."),
            ("total_energy_cost", "Price", "?", "Cost of all the energy used."),
            ("total_time", "number", "1", "Total duration of the charging session."),
            ("total_time_cost", "Price", "?", "Cost related to the duration of charging."),
            ("total_parking_time", "number", "?", "Duration in hours where the EV was not charging."),
            ("total_parking_cost", "Price", "?", "Total sum of all the cost related to parking of this transaction."),
            ("total_reservation_cost", "Price", "?", "Cost of a reservation, fixed price components included."),
            ("remark", "string(255)", "?", "Human-readable remark, e.g. why a transaction was stopped."),
            ("invoice_reference_id", "CiString(39)", "?", "Reference to an invoice sent later for this CDR."),
            ("credit", "boolean", "?", "When set to `true`, this is a Credit CDR."),
            ("credit_reference_id", "CiString(39)", "?", "Is required to be set for a Credit CDR."),
            ("home_charging_compensation", "boolean", "?", "Home charging whose energy cost is paid back."),
            ("last_updated", "DateTime", "1", "Timestamp when this CDR was last updated (or created)."),
        ],
    ),
    "CdrDimension": (
        "mod_cdrs",
        [
            ("type", "CdrDimensionType", "1", "Type of CDR dimension."),
            ("volume", "number", "1", "Volume of the dimension consumed, measured according to the dimension type."),
        ],
    ),
    "CdrLocation": (
        "mod_cdrs",
        [
            ("id", "CiString(36)", "1", "Uniquely identifies the location within the CPO's platform."),
            ("name", "string(255)", "?", "Display name of the location."),
            ("address", "string(45)", "1", "Street/block name and house number if available."),
            ("city", "string(45)", "1", "City or town."),
            ("postal_code", "string(10)", "?", "Postal code; may be omitted only where the location has none."),
            ("state", "string(20)", "?", "State only to be used when relevant."),
            ("country", "string(3)", "1", "ISO 3166-1 alpha-3 code for the country of this location."),
            ("coordinates", "GeoLocation", "1", "Coordinates of the location."),
            ("evse_uid", "CiString(36)", "1", "Uniquely identifies the EVSE within the CPO's platform."),
            ("evse_id", "CiString(48)", "1", "EVSE ID (eMI3 V1.0 'Part 2: business objects')."),
            ("connector_id", "CiString(36)", "1", "Identifier of the connector within the EVSE."),
            ("connector_standard", "ConnectorType", "1", "The standard of the installed connector."),
            ("connector_format", "ConnectorFormat", "1", "The format (socket/cable) of the installed connector."),
            ("connector_power_type", "PowerType", "1", "Power type of the connector used."),
        ],
    ),
    "CdrToken": (
        "mod_cdrs",
        [
            ("country_code", "CiString(2)", "1", "ISO-3166 alpha-2 country code of the MSP that 'owns' this Token."),
            ("party_id", "CiString(3)", "1", "ID of the eMSP that 'owns' this Token."),
            ("uid", "CiString(36)", "1", "Unique ID by which this Token can be identified."),
            ("type", "TokenType", "1", "Type of the token"),
            ("contract_id", "CiString(36)", "1", "Uniquely identifies the EV driver contract token."),
        ],
    ),
    "ChargingPeriod": (
        "mod_cdrs",
        [
            ("start_date_time", "DateTime", "1", "Start timestamp of the charging period."),
            ("dimensions", "CdrDimension", "+", "List of relevant values for this charging period."),
            ("tariff_id", "CiString(36)", "?", "The Tariff relevant for this Charging Period."),
        ],
    ),
    "SignedData": (
        "mod_cdrs",
        [
            ("encoding_method", "CiString(36)", "1", "The name of the encoding used in the SignedData field."),
            ("encoding_method_version", "int", "?", "Version of the EncodingMethod (when applicable)"),
            ("public_key", "string(512)", "?", "Public key used to sign the data, base64 encoded."),
            ("signed_values", "SignedValue", "+", "One or more signed values."),
            ("url", "string(512)", "?", "URL that can be shown to an EV driver."),
        ],
    ),
    "SignedValue": (
        "mod_cdrs",
        [
            ("nature", "CiString(32)", "1", "Nature of the value, in other words, the event this value belongs to."),
            ("plain_data", "string(5000)", "1", "The un-encoded string of data."),
            ("signed_data", "string(5000)", "1", "Blob of signed data, base64 encoded."),
        ],
    ),
    "Tariff": (
        "mod_tariffs",
        [
            ("country_code", "CiString(2)", "1", "ISO-3166 alpha-2 country code of the CPO that _owns_ this Tariff."),
            ("party_id", "CiString(3)", "1", "ID of the CPO that 'owns' this Tariff."),
            ("id", "CiString(36)", "1", "Uniquely identifies the tariff within the CPO's platform."),
            ("currency", "string(3)", "1", "ISO-4217 code of the currency of this tariff."),
            ("type", "TariffType", "?", "Defines the type of the tariff."),
            ("tariff_alt_text", "DisplayText", "*", "List of multi-language alternative tariff info texts."),
            ("tariff_alt_url", "URL", "?", "Web page explaining the tariff in human-readable form."),
            ("min_price", "Price", "?", "A session with this tariff costs at least this."),
            ("max_price", "Price", "?", "A session with this tariff costs no more than this."),
            ("elements", "TariffElement", "+", "List of Tariff Elements."),
            ("start_date_time", "DateTime", "?", "The time when this tariff becomes active, in UTC."),
            ("end_date_time", "DateTime", "?", "The time after which this tariff is no longer valid, in UTC."),
            ("energy_mix", "EnergyMix", "?", "Details on the energy supplied with this tariff."),
            ("last_updated", "DateTime", "1", "Timestamp when this Tariff was last updated (or created)."),
        ],
    ),
    "TariffElement": (
        "mod_tariffs",
        [
            ("price_components", "PriceComponent", "+", "How each dimension is priced."),
            ("restrictions", "TariffRestrictions", "?", "When the price components of this element apply."),
        ],
    ),
    "PriceComponent": (
        "mod_tariffs",
        [
            ("type", "TariffDimensionType", "1", "The dimension that is being priced"),
            ("price", "number", "1", "Price per unit (excl."),
            ("vat", "number", "?", "Applicable VAT percentage for this tariff dimension."),
            ("step_size", "int", "1", "Minimum amount to be billed."),
        ],
    ),
    "TariffRestrictions": (
        "mod_tariffs",
        [
            ("start_time", "string(5)", "?", "Start time of day in local time."),
            ("end_time", "string(5)", "?", "End time of day, local time (time_zone of the Location), HH:MM."),
            ("start_date", "string(10)", "?", "Start date, local time, YYYY-MM-DD (inclusive)."),
            ("end_date", "string(10)", "?", "End date, local time, YYYY-MM-DD (exclusive)."),
            ("min_kwh", "number", "?", "Valid from this consumed energy in kWh (inclusive)."),
            ("max_kwh", "number", "?", "Valid until this consumed energy in kWh (exclusive)."),
            ("min_current", "number", "?", "Sum of the minimum current (in Amperes) over all phases, for example 5."),
            ("max_current", "number", "?", "Sum of the maximum current (in Amperes) over all phases, for example 20."),
            ("min_power", "number", "?", "Minimum power in kW, for example 5."),
            ("max_power", "number", "?", "Maximum power in kW, for example 20."),
            ("min_duration", "int", "?", "Minimum duration in seconds the Charging Session MUST last (inclusive)."),
            ("max_duration", "int", "?", "Maximum duration in seconds the Charging Session MUST last (exclusive)."),
            ("day_of_week", "DayOfWeek", "*", "Which day(s) of the week this TariffElement is active."),
            ("reservation", "ReservationRestrictionType", "?", "Present: this element describes reservation costs."),
        ],
    ),
    "Token": (
        "mod_tokens",
        [
            ("country_code", "CiString(2)", "1", "ISO-3166 alpha-2 country code of the MSP that 'owns' this Token."),
            ("party_id", "CiString(3)", "1", "ID of the eMSP that 'owns' this Token."),
            ("uid", "CiString(36)", "1", "Unique ID of this Token, together with its type."),
            ("type", "TokenType", "1", "Type of the token"),
            ("contract_id", "CiString(36)", "1", "Uniquely identifies the EV Driver contract token."),
            ("visual_number", "string(64)", "?", "Number/identification as printed on the token (RFID card)."),
            ("issuer", "string(64)", "1", "Issuing company, usually the name printed on the token."),
            ("group_id", "CiString(36)", "?", "This ID groups a couple of tokens."),
            ("valid", "boolean", "1", "Is this Token valid"),
            ("whitelist", "WhitelistType", "1", "Indicates what type of white-listing is allowed."),
            ("language", "string(2)", "?", "Language Code ISO 639-1."),
            ("default_profile_type", "ProfileType", "?", "The default Charging Preference."),
            ("energy_contract", "EnergyContract", "?", "The driver's own energy supplier/contract."),
            ("last_updated", "DateTime", "1", "Timestamp when this Token was last updated (or created)."),
        ],
    ),
    "AuthorizationInfo": (
        "mod_tokens",
        [
            ("allowed", "AllowedType", "1", "Whether charging is allowed (at the given location, if any)."),
            ("token", "Token", "1", "The complete Token object for which this authorization was requested."),
            ("location", "LocationReferences", "?", "The location of the request, if the driver may charge there."),
            ("authorization_reference", "CiString(36)", "?", "eMSP's reference, repeated in Session and CDR."),
            ("info", "DisplayText", "?", "Optional display text, additional information to the EV driver."),
        ],
    ),
    "LocationReferences": (
        "mod_tokens",
        [
            ("location_id", "CiString(36)", "1", "Unique identifier for the location."),
            ("evse_uids", "CiString(36)", "*", "EVSE uids within the given location."),
        ],
    ),
    "EnergyContract": (
        "mod_tokens",
        [
            ("supplier_name", "string(64)", "1", "Name of the energy supplier for this token."),
            ("contract_id", "string(64)", "?", "Contract ID at the energy supplier of the token's owner."),
        ],
    ),
    "CommandResponse": (
        "mod_commands",
        [
            ("result", "CommandResponseType", "1", "Response from the CPO on the command request."),
            ("timeout", "int", "1", "Timeout for this command in seconds."),
            ("message", "DisplayText", "*", "Human-readable description of the result (if one can be provided)."),
        ],
    ),
    "CommandResult": (
        "mod_commands",
        [
            ("result", "CommandResultType", "1", "Result of the command as the Charge Point reported it to the CPO."),
            ("message", "DisplayText", "*", "Human-readable description of the reason (if one can be provided)."),
        ],
    ),
    "StartSession": (
        "mod_commands",
        [
            ("response_url", "URL", "1", "URL that the CommandResult POST should be sent to."),
            ("token", "Token", "1", "Token object the Charge Point has to use to start a new session."),
            ("location_id", "CiString(36)", "1", "Location.id of the Location on which a session is to be started."),
            ("evse_uid", "CiString(36)", "?", "EVSE.uid on which to start the session, if one was chosen."),
            ("connector_id", "CiString(36)", "?", "Connector.id on which to start the session, if one was chosen."),
            ("authorization_reference", "CiString(36)", "?", "eMSP's reference, repeated in Session and CDR."),
        ],
    ),
    "StopSession": (
        "mod_commands",
        [
            ("response_url", "URL", "1", "URL that the CommandResult POST should be sent to."),
            ("session_id", "CiString(36)", "1", "Session.id of the Session that is requested to be stopped."),
        ],
    ),
    "ReserveNow": (
        "mod_commands",
        [
            ("response_url", "URL", "1", "URL that the CommandResult POST should be sent to."),
            ("token", "Token", "1", "Token object for how to reserve this Charge Point (and specific EVSE)."),
            ("expiry_date", "DateTime", "1", "The Date/Time when this reservation ends, in UTC."),
            ("reservation_id", "CiString(36)", "1", "Reservation id, unique for this reservation."),
            ("location_id", "CiString(36)", "1", "Location.id of the Location for which to reserve an EVSE."),
            ("evse_uid", "CiString(36)", "?", "EVSE.uid to reserve, if a specific EVSE is to be reserved."),
            ("authorization_reference", "CiString(36)", "?", "eMSP's reference, repeated in Session and CDR."),
        ],
    ),
    "CancelReservation": (
        "mod_commands",
        [
            ("response_url", "URL", "1", "URL that the CommandResult POST should be sent to."),
            ("reservation_id", "CiString(36)", "1", "Reservation id, unique for this reservation."),
        ],
    ),
    "UnlockConnector": (
        "mod_commands",
        [
            ("response_url", "URL", "1", "URL that the CommandResult POST should be sent to."),
            ("location_id", "CiString(36)", "1", "Location.id of the connector to unlock."),
            ("evse_uid", "CiString(36)", "1", "EVSE.uid of the connector to unlock."),
            ("connector_id", "CiString(36)", "1", "Connector.id of the connector to unlock."),
        ],
    ),
    "Credentials": (
        "credentials",
        [
            ("token", "string(64)", "1", "The credentials token for the other party to authenticate in your system."),
            ("url", "URL", "1", "The URL to your API versions endpoint."),
            ("roles", "CredentialsRole", "+", "List of the roles this party provides."),
        ],
    ),
    "CredentialsRole": (
        "credentials",
        [
            ("role", "Role", "1", "Type of role."),
            ("business_details", "BusinessDetails", "1", "Details of this party."),
            ("party_id", "CiString(3)", "1", "CPO, eMSP (or other role) ID of this party."),
            ("country_code", "CiString(2)", "1", "ISO-3166 alpha-2 country code this party operates in."),
        ],
    ),
    "Version": (
        "version_information_endpoint",
        [
            ("version", "VersionNumber", "1", "The version number."),
            ("url", "URL", "1", "URL to the endpoint containing version specific information."),
        ],
    ),
    "VersionDetails": (
        "version_information_endpoint",
        [
            ("version", "VersionNumber", "1", "The version number."),
            ("endpoints", "Endpoint", "+", "A list of supported endpoints for this version."),
        ],
    ),
    "Endpoint": (
        "version_information_endpoint",
        [
            ("identifier", "ModuleID", "1", "Endpoint identifier."),
            ("role", "InterfaceRole", "1", "Interface role this endpoint implements."),
            ("url", "URL", "1", "URL to the endpoint."),
        ],
    ),
    "ClientInfo": (
        "mod_hub_client_info",
        [
            ("party_id", "CiString(3)", "1", "CPO or eMSP ID of this party (following the 15118 ISO standard)."),
            ("country_code", "CiString(2)", "1", "Country code this party operates in, as in its credentials."),
            ("role", "Role", "1", "The role of the connected party."),
            ("status", "ConnectionStatus", "1", "Status of the connection to the party."),
            ("last_updated", "DateTime", "1", "Timestamp when this ClientInfo object was last updated."),
        ],
    ),
}

# Patterns the spec gives in prose (GeoLocation, RegularHours, TariffRestrictions).
_TIME = "^([0-1][0-9]|2[0-3]):[0-5][0-9]$"
_DATE = "^([12][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"
PATTERNS: dict[tuple[str, str], str] = {
    ("GeoLocation", "latitude"): r"^-?[0-9]{1,2}\.[0-9]{5,7}$",
    ("GeoLocation", "longitude"): r"^-?[0-9]{1,3}\.[0-9]{5,7}$",
    ("RegularHours", "period_begin"): _TIME,
    ("RegularHours", "period_end"): _TIME,
    ("TariffRestrictions", "start_time"): _TIME,
    ("TariffRestrictions", "end_time"): _TIME,
    ("TariffRestrictions", "start_date"): _DATE,
    ("TariffRestrictions", "end_date"): _DATE,
}


def ref(name: str) -> dict[str, str]:
    """A reference to the component of the OCPI object, class or enum the spec calls `name`."""
    return {"$ref": f"#/components/schemas/{SCHEMA_PREFIX}{name}"}


def _bounded(kind: str, spec_type: str) -> dict[str, Any]:
    size = spec_type[spec_type.index("(") + 1 : -1] if "(" in spec_type else ""
    schema: dict[str, Any] = {"type": kind}
    if size and kind == "string":
        schema["maxLength"] = int(size)
    elif size:
        schema["maximum"] = 10 ** int(size) - 1
    return schema


def _type(spec_type: str) -> dict[str, Any]:
    """JSON Schema of one of the spec's types (types.asciidoc) or of one of its objects, classes or enums."""
    base = spec_type.split("(")[0]
    if base in ("CiString", "string"):
        return _bounded("string", spec_type)
    if base == "int":
        return _bounded("integer", spec_type)
    simple = {
        "boolean": {"type": "boolean"},
        "number": {"type": "number"},
        "DateTime": {"type": "string", "format": "date-time", "maxLength": 25},
        "URL": {"type": "string", "format": "uri", "maxLength": 255},
    }
    if base in simple:
        return dict(simple[base])
    if base not in OBJECTS and base not in ENUMS:
        raise KeyError(f"unknown OCPI type {spec_type!r}")
    return ref(base)


def _property(name: str, prop: str, spec_type: str, card: str, description: str) -> dict[str, Any]:
    schema = _type(spec_type)
    if (name, prop) in PATTERNS:
        schema["pattern"] = PATTERNS[(name, prop)]
    if card in ("*", "+"):
        schema = {"type": "array", "items": schema}
        if card == "+":
            schema["minItems"] = 1
    if "$ref" in schema:  # OpenAPI 3.0: siblings of $ref are ignored, so wrap it to keep the description
        schema = {"allOf": [schema]}
    return {**schema, "description": f"{spec_type} ({card}). {description}"}


def _object_schema(name: str) -> dict[str, Any]:
    spec_file, rows = OBJECTS[name]
    schema: dict[str, Any] = {
        "type": "object",
        "description": f"OCPI 2.2.1 {name} ({spec_file}: {SPEC}/{spec_file}.asciidoc).",
        "properties": {prop: _property(name, prop, t, card, text) for prop, t, card, text in rows},
    }
    required = [prop for prop, _, card, _ in rows if card in ("1", "+")]
    if required:  # OpenAPI 3.0: `required` may not be empty (PublishTokenType has no required field)
        schema["required"] = required
    return schema


def _patch_schema(name: str) -> dict[str, Any]:
    """The body of a PATCH of `name`: any of its fields, and last_updated (transport §"PATCH")."""
    schema = _object_schema(name)
    return {
        **schema,
        "description": f"PATCH of a {name}: only the fields that changed, always with last_updated.",
        "required": ["last_updated"],
    }


def _enum_schema(name: str) -> dict[str, Any]:
    spec_file, values = ENUMS[name]
    return {
        "type": "string",
        "enum": sorted(values),
        "description": f"OCPI 2.2.1 {name} enum ({spec_file}: {SPEC}/{spec_file}.asciidoc).",
    }


def components() -> dict[str, dict[str, Any]]:
    """Every OCPI component of the document, by component name."""
    found: dict[str, dict[str, Any]] = {f"{SCHEMA_PREFIX}{name}": _enum_schema(name) for name in ENUMS}
    found.update({f"{SCHEMA_PREFIX}{name}": _object_schema(name) for name in OBJECTS})
    for name in PATCHABLE:
        found[f"{SCHEMA_PREFIX}{name}Patch"] = _patch_schema(name)
    found[f"{SCHEMA_PREFIX}Response"] = RESPONSE_ENVELOPE
    return found


PATCHABLE = ("Location", "EVSE", "Connector", "Session")
RESPONSE_ENVELOPE: dict[str, Any] = {
    "type": "object",
    "description": "Every OCPI answer, errors too (transport_and_format §'Response format').",
    "required": ["status_code", "timestamp"],
    "properties": {
        "data": {"description": "The payload: an object, a list of objects, or absent."},
        "status_code": {
            "type": "integer",
            "description": "1000 success; 2xxx client errors (2001 invalid or missing parameters, 2004 unknown "
            "token …); 3xxx server errors (status_codes.asciidoc).",
        },
        "status_message": {"type": "string"},
        "timestamp": {"type": "string", "format": "date-time"},
    },
}


def patch_ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{SCHEMA_PREFIX}{name}Patch"}


def json_body(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`extend_schema(request=...)` for a view without parsers: the body, as application/json."""
    return {"application/json": schema}


def list_of(name: str) -> dict[str, Any]:
    return {"type": "array", "items": ref(name)}


def response(data: dict[str, Any] | None = None, description: str = "") -> OpenApiResponse:
    """The OCPI envelope around `data` (or without data) as an operation's response."""
    envelope = {"$ref": f"#/components/schemas/{SCHEMA_PREFIX}Response"}
    schema = envelope if data is None else {"allOf": [envelope, {"type": "object", "properties": {"data": data}}]}
    return OpenApiResponse(schema, description=description or ("OK" if data is None else "OK, with data"))


def error_response(description: str) -> OpenApiResponse:
    return response(description=f"{description} (status_code and status_message say why)")


PAGINATION_PARAMETERS = [
    OpenApiParameter("date_from", type=str, location=OpenApiParameter.QUERY, description="RFC 3339, inclusive"),
    OpenApiParameter("date_to", type=str, location=OpenApiParameter.QUERY, description="RFC 3339, exclusive"),
    OpenApiParameter("offset", type=int, location=OpenApiParameter.QUERY),
    OpenApiParameter("limit", type=int, location=OpenApiParameter.QUERY, description="capped by X-Limit"),
    OpenApiParameter(
        "after",
        type=str,
        location=OpenApiParameter.QUERY,
        description="Set in our Link to the next page: where the last page ended. Follow the Link as it is.",
    ),
]

# The one OCPI operation whose body may be absent: real-time authorization without LocationReferences.
OPTIONAL_BODIES = frozenset({"ocpi_token_authorize"})


def postprocess_schema(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular hook: add the OCPI components and the Token scheme; mark OCPI request bodies required
    (drf-spectacular leaves a body given as a plain schema dict optional)."""
    parts = result.setdefault("components", {})
    parts.setdefault("schemas", {}).update(components())
    parts.setdefault("securitySchemes", {})["Token"] = TOKEN_SCHEME
    for path, operations in result.get("paths", {}).items():
        if not path.startswith("/ocpi/"):
            continue
        for operation in operations.values():
            body = operation.get("requestBody") if isinstance(operation, dict) else None
            if body is not None and operation.get("operationId") not in OPTIONAL_BODIES:
                body["required"] = True
    return result

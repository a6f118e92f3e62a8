"""A DCAT-AP description (JSON-LD) of an open-data bundle, as a CKAN portal harvests it
(ckanext-dcat reads ``dcat:Dataset`` with its ``dcat:Distribution`` s).

Pure: the facts in, a JSON-ready dict out. The mandatory and recommended properties of a
DCAT-AP 2.1 dataset are filled: title, description, publisher, licence (per distribution too),
temporal coverage (``dct:temporal``, a ``dct:PeriodOfTime``), spatial coverage (``dct:spatial``
with the districts' names and the sensors' bounding box as GeoJSON), keywords, themes (EU
data themes), and each distribution's access URL, media type, format, size and checksum.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

CONTEXT = {
    "dcat": "http://www.w3.org/ns/dcat#",
    "dct": "http://purl.org/dc/terms/",
    "foaf": "http://xmlns.com/foaf/0.1/",
    "locn": "http://www.w3.org/ns/locn#",
    "spdx": "http://spdx.org/rdf/terms#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
}
# EU Publications Office vocabularies that DCAT-AP asks for.
_THEMES = {
    "energy": "ENER",
    "water": "ENVI",
    "environment": "ENVI",
    "waste": "ENVI",
    "traffic": "TRAN",
    "ict": "TECH",
}
_THEME = "http://publications.europa.eu/resource/authority/data-theme/"
_FILE_TYPE = "http://publications.europa.eu/resource/authority/file-type/"
_FILE_TYPES = {
    "text/csv": "CSV",
    "application/json": "JSON",
    "application/vnd.apache.parquet": "PARQUET",
}


BBox = tuple[float, float, float, float]  # west, south, east, north (WGS 84 degrees)


@dataclass(frozen=True, slots=True)
class Distribution:
    title: str
    url: str  # an absolute URL, or a file name relative to the description
    media_type: str
    size: int | None = None
    sha256: str | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class Bundle:
    identifier: str
    title: str
    description: str
    publisher: str
    licence: str
    start: datetime
    end: datetime
    districts: Sequence[str]  # names
    domains: Sequence[str]
    bbox: BBox | None
    distributions: Sequence[Distribution]
    issued: datetime | None = None


def describe(bundle: Bundle) -> dict[str, Any]:
    """The bundle as a DCAT-AP JSON-LD document (a catalogue record of one dataset)."""
    issued = (bundle.issued or datetime.now(UTC)).isoformat()
    spatial: dict[str, Any] = {
        "@type": "dct:Location",
        "locn:geographicName": ", ".join(bundle.districts) or "the whole city",
    }
    if bundle.bbox is not None:
        west, south, east, north = bundle.bbox
        polygon = {
            "type": "Polygon",
            "coordinates": [
                [[west, south], [east, south], [east, north], [west, north], [west, south]]
            ],
        }
        spatial["dcat:bbox"] = {"@value": json.dumps(polygon), "@type": "locn:GeoJSON"}
    dataset: dict[str, Any] = {
        "@id": f"urn:urbanpulse:dataset:{bundle.identifier}",
        "@type": "dcat:Dataset",
        "dct:identifier": bundle.identifier,
        "dct:title": bundle.title,
        "dct:description": bundle.description,
        "dct:publisher": {"@type": "foaf:Agent", "foaf:name": bundle.publisher},
        "dct:license": {"@id": bundle.licence},
        "dct:issued": {"@value": issued, "@type": "xsd:dateTime"},
        "dct:temporal": {
            "@type": "dct:PeriodOfTime",
            "dcat:startDate": {"@value": bundle.start.isoformat(), "@type": "xsd:dateTime"},
            "dcat:endDate": {"@value": bundle.end.isoformat(), "@type": "xsd:dateTime"},
        },
        "dct:spatial": spatial,
        "dcat:keyword": ["smart city", "sensors", "KPI", *bundle.domains],
        "dcat:theme": [
            {"@id": _THEME + theme}
            for theme in sorted({_THEMES.get(d, "ENVI") for d in bundle.domains} or {"ENVI"})
        ],
        "dcat:distribution": [_distribution(d, bundle.licence) for d in bundle.distributions],
    }
    return {"@context": CONTEXT, **dataset}


def _distribution(distribution: Distribution, licence: str) -> dict[str, Any]:
    item: dict[str, Any] = {
        "@type": "dcat:Distribution",
        "dct:title": distribution.title,
        "dcat:accessURL": {"@id": distribution.url},
        "dcat:downloadURL": {"@id": distribution.url},
        "dcat:mediaType": distribution.media_type,
        "dct:license": {"@id": licence},
    }
    if distribution.description:
        item["dct:description"] = distribution.description
    file_type = _FILE_TYPES.get(distribution.media_type)
    if file_type:
        item["dct:format"] = {"@id": _FILE_TYPE + file_type}
    if distribution.size is not None:
        item["dcat:byteSize"] = {"@value": str(distribution.size), "@type": "xsd:decimal"}
    if distribution.sha256 is not None:
        item["spdx:checksum"] = {
            "@type": "spdx:Checksum",
            "spdx:algorithm": {"@id": "spdx:checksumAlgorithm_sha256"},
            "spdx:checksumValue": distribution.sha256,
        }
    return item

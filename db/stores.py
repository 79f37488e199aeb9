"""Everything storage is built from one MongoDB URI.

The LaunchPad collections, the jobflow JobStore (``outputs`` + GridFS ``outputs_blobs``)
and the campaign collections (``candidates``, ``materials``, ``rounds`` and the GridFS
buckets ``frames`` and ``models``) share one database, so switching from the local
server to a production MongoDB is one setting.
"""

from __future__ import annotations

import gzip
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flywheel.db.uri import split_uri, with_database

if TYPE_CHECKING:
    from collections.abc import Iterable

    from fireworks import LaunchPad
    from jobflow import JobStore
    from pymongo.database import Database

logger = logging.getLogger(__name__)

# Indexes for the queries users run (docs/user_guide.md, "Querying results").
INDEXES: dict[str, list[list[tuple[str, int]] | tuple[list[tuple[str, int]], dict]]] = {
    "materials": [
        ([("campaign", 1), ("material_id", 1)], {"unique": True}),
        [("campaign", 1), ("chemsys", 1), ("e_above_hull", 1)],
        [("campaign", 1), ("stable", 1), ("round", 1)],
        [("campaign", 1), ("formula", 1)],
        [("campaign", 1), ("nelements", 1)],
        [("campaign", 1), ("novelty", 1), ("discovery", 1)],
    ],
    "candidates": [
        ([("campaign", 1), ("candidate_id", 1)], {"unique": True}),
        [("campaign", 1), ("status", 1), ("round", 1)],
        [("campaign", 1), ("selected_round", 1)],
        [("campaign", 1), ("formula", 1)],
        [("campaign", 1), ("chemsys", 1)],
    ],
    "rounds": [([("campaign", 1), ("round", 1)], {"unique": True})],
    "fidelity": [
        ([("campaign", 1), ("material_id", 1), ("fidelity", 1)], {"unique": True}),
    ],
    "rechecks": [([("campaign", 1), ("fidelity", 1)], {"unique": True})],
    "md_runs": [
        ([("campaign", 1), ("material_id", 1), ("key", 1), ("temperature", 1)],
         {"unique": True}),
    ],
    "conductivity": [
        ([("campaign", 1), ("material_id", 1), ("key", 1)], {"unique": True}),
        [("campaign", 1), ("conductivity_target", -1)],
    ],
    "references": [
        ([("campaign", 1), ("entry_id", 1)], {"unique": True}),
        [("campaign", 1), ("chemsys", 1)],
        [("campaign", 1), ("formula", 1)],
    ],
}


_CLIENTS: dict[tuple[int, str], Any] = {}


def get_client(uri: str, timeout_ms: int = 5000):
    """A MongoClient per (process, URI): pymongo clients must not cross a fork."""
    from pymongo import MongoClient

    key = (os.getpid(), uri)
    if key not in _CLIENTS:
        _CLIENTS[key] = MongoClient(uri, serverSelectionTimeoutMS=timeout_ms, tz_aware=True)
    return _CLIENTS[key]


def get_database(uri: str) -> Database:
    """The database named in ``uri``."""
    uri, name = split_uri(uri)
    return get_client(uri)[name]


def make_launchpad(uri: str, strm_lvl: str = "WARNING") -> LaunchPad:
    """A FireWorks LaunchPad on the database named in ``uri``."""
    from fireworks import LaunchPad

    uri, name = split_uri(uri)
    return LaunchPad(
        host=with_database(uri, name), name=name, uri_mode=True, strm_lvl=strm_lvl
    )


def jobstore_spec(uri: str) -> dict[str, Any]:
    """The ``JOB_STORE`` mapping of a jobflow config file for ``uri``."""
    uri, name = split_uri(uri)
    return {
        "docs_store": {
            "type": "MongoStore",
            "uri": uri,
            "database": name,
            "collection_name": "outputs",
        },
        "additional_stores": {
            "data": {
                "type": "GridFSStore",
                "uri": uri,
                "database": name,
                "collection_name": "outputs_blobs",
            }
        },
    }


def make_jobstore(uri: str) -> JobStore:
    """A jobflow JobStore with docs in ``outputs`` and large data in GridFS."""
    from jobflow import JobStore
    from maggma.stores import GridFSStore, MongoStore

    uri, name = split_uri(uri)
    return JobStore(
        MongoStore(name, "outputs", uri=uri),
        additional_stores={
            "data": GridFSStore(name, "outputs_blobs", uri=uri)
        },
    )


#: ``references.energy_scale`` of MP entries with MP2020 corrections and of the GNoME
#: release.
SCALE_MP2020 = "MP2020"
#: ``references.energy_scale`` of energies a user supplied with CIFs (level of theory
#: unknown: such energies never join a hull).
SCALE_USER = "user"


@dataclass
class CampaignDB:
    """The campaign's own collections and GridFS buckets for one campaign name."""

    uri: str
    campaign: str

    @property
    def db(self) -> Database:
        return get_database(self.uri)

    @property
    def candidates(self):
        return self.db["candidates"]

    @property
    def materials(self):
        return self.db["materials"]

    @property
    def rounds(self):
        return self.db["rounds"]

    @property
    def fidelity(self):
        """Higher-fidelity (r²SCAN) results, one per material and fidelity."""
        return self.db["fidelity"]

    @property
    def rechecks(self):
        """One summary document per fidelity re-check."""
        return self.db["rechecks"]

    @property
    def references(self):
        """Known entries (MP, GNoME, the user's) that shape the hull but are not
        campaign results; see ``hull.references``."""
        return self.db["references"]

    @property
    def md_runs(self):
        """One document per MD run (material, settings key, temperature); the
        displacements themselves are in the GridFS bucket ``md``."""
        return self.db["md_runs"]

    @property
    def conductivity(self):
        """One document per material and settings key: Arrhenius fit and the
        extrapolated room-temperature conductivity."""
        return self.db["conductivity"]

    def ensure_indexes(self) -> None:
        """Create the indexes (idempotent)."""
        for coll, specs in INDEXES.items():
            for spec in specs:
                keys, opts = spec if isinstance(spec, tuple) else (spec, {})
                self.db[coll].create_index(keys, **opts)

    def q(self, **query: Any) -> dict[str, Any]:
        """A query restricted to this campaign."""
        return {"campaign": self.campaign, **query}

    def bulk_write(self, collection: str, ops: list[Any], batch: int = 500) -> None:
        """Unordered ``bulk_write`` of ``ops`` in batches (none: no call)."""
        for k in range(0, len(ops), batch):
            self.db[collection].bulk_write(ops[k : k + batch], ordered=False)

    # -- GridFS -------------------------------------------------------------------
    def _bucket(self, name: str):
        import gridfs

        return gridfs.GridFSBucket(self.db, bucket_name=name)

    def put_file(self, bucket: str, filename: str, data: bytes, **metadata: Any) -> Any:
        """Store ``data`` gzip-compressed in a GridFS bucket; return the file id."""
        meta = {"campaign": self.campaign, **metadata}
        return self._bucket(bucket).upload_from_stream(
            filename, gzip.compress(data, compresslevel=5), metadata=meta
        )

    def find_files(self, bucket: str, **metadata: Any) -> list[dict[str, Any]]:
        """File documents of a bucket matching metadata, oldest first."""
        query = {f"metadata.{k}": v for k, v in self.q(**metadata).items()}
        return list(self.db[f"{bucket}.files"].find(query).sort("uploadDate", 1))

    def get_file(self, bucket: str, file_id: Any) -> bytes:
        """Read and decompress one GridFS file."""
        return gzip.decompress(self._bucket(bucket).open_download_stream(file_id).read())

    def hull_entries(self, references: bool) -> list[tuple[str, str, float]]:
        """``(id, formula, energy per atom)`` of every oracle result and, with
        ``references``, of every reference with an energy on a known scale (ids
        prefixed ``ref:``, never colliding with material ids; :data:`SCALE_USER`
        energies excluded)."""
        entries = [
            (d["material_id"], d["formula"], d["energy_per_atom"])
            for d in self.materials.find(
                self.q(), {"material_id": 1, "formula": 1, "energy_per_atom": 1})
        ]
        if references:
            entries += [
                (f"ref:{d['entry_id']}", d["formula_full"], d["energy_per_atom"])
                for d in self.references.find(
                    self.q(energy_per_atom={"$ne": None},
                           energy_scale={"$ne": SCALE_USER}),
                    {"entry_id": 1, "formula_full": 1, "energy_per_atom": 1})
            ]
        return entries

    def fetch_models(self, round_index: int, workdir: Path) -> list[Path]:
        """Write the ensemble trained at the end of ``round_index`` to ``workdir``
        (``member<i>.model``, in member order).
        """
        files = self.find_files("models", round=round_index)
        if not files:
            raise RuntimeError(
                f"campaign {self.campaign!r}: no models stored for round {round_index}"
            )
        latest: dict[int, Any] = {}
        for f in files:  # a rerun of training may have stored a member twice
            latest[f["metadata"]["member"]] = f
        paths = []
        for member, f in sorted(latest.items()):
            path = Path(workdir) / f"member{member}.model"
            path.write_bytes(self.get_file("models", f["_id"]))
            paths.append(path)
        return paths

    def delete_files(self, bucket: str, file_ids: Iterable[Any]) -> None:
        """Delete GridFS files (used when a rerun replaces a partial upload)."""
        b = self._bucket(bucket)
        for fid in file_ids:
            b.delete(fid)

"""Recovery of lost and fizzled fireworks, built on FireWorks' own lost-run detection.

A worker killed by SIGKILL, by the walltime's SIGTERM or by a database outage leaves
its firework RUNNING with a ping that stops advancing. ``LaunchPad.detect_lostruns``
finds those and reruns them; the oracle chunks skip candidates that already have a
result, so a rerun never duplicates an oracle calculation.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from flywheel.db.tags import tag_query

if TYPE_CHECKING:
    from fireworks import LaunchPad

logger = logging.getLogger(__name__)

# Rockets ping their launch this often (FW_config.yaml written by flywheel); a run
# whose last ping is older than a few pings is lost.
PING_TIME_SECS = 60
DEFAULT_EXPIRATION_SECS = 4 * PING_TIME_SECS


def find_lost(
    lp: LaunchPad,
    *,
    campaign: str | None = None,
    expiration_secs: float = DEFAULT_EXPIRATION_SECS,
    fworker: str | None = None,
) -> list[int]:
    """Firework ids that are RUNNING but whose launch stopped pinging (no change)."""
    launch_query = {"fworker.name": fworker} if fworker else None
    _, fw_ids, _ = lp.detect_lostruns(
        expiration_secs=expiration_secs, query=tag_query(campaign),
        launch_query=launch_query,
    )
    return sorted(fw_ids)


def recover(
    lp: LaunchPad,
    *,
    campaign: str | None = None,
    expiration_secs: float = DEFAULT_EXPIRATION_SECS,
    fworker: str | None = None,
    fizzled: bool = False,
) -> dict[str, list[int]]:
    """Rerun lost fireworks (and, with ``fizzled``, fizzled ones).

    Parameters
    ----------
    expiration_secs
        A RUNNING firework whose last ping is older than this is lost. Use 0 only when
        no worker of the selection can still be alive (e.g. right after the local
        worker with that fworker name died).
    fworker
        Restrict to launches of this fworker name.
    """
    launch_query = {"fworker.name": fworker} if fworker else None
    _, lost, inconsistent = lp.detect_lostruns(
        expiration_secs=expiration_secs, rerun=True, query=tag_query(campaign),
        launch_query=launch_query, refresh=True,
    )
    # Reserved but never started (a queue job that died before rlaunch ran).
    unreserved = lp.detect_unreserved(expiration_secs=expiration_secs, rerun=True)
    rerun_fizzled: list[int] = []
    if fizzled:
        query = {**tag_query(campaign), "state": "FIZZLED"}
        for fw_id in lp.get_fw_ids(query):
            lp.rerun_fw(fw_id)
            rerun_fizzled.append(fw_id)
    out = {"lost": sorted(lost), "inconsistent": sorted(inconsistent),
           "unreserved": sorted(unreserved), "fizzled": sorted(rerun_fizzled)}
    if any(out.values()):
        logger.warning("recovered fireworks: %s", out)
    return out

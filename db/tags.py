"""The FireWorks side of a flywheel job: its worker category and its campaign tag.

Every flywheel job carries a FireWorks ``_category`` (:data:`CPU` or :data:`GPU`, the
fworkers' ``category``) and a tag in its spec, ``spec.flywheel = {campaign, round,
stage}``, from which ``flywheel status``, recovery and resumption find a campaign's
fireworks on the LaunchPad. :func:`tag_job` writes both; :func:`fw_tag` and
:func:`tag_query` are the only readers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobflow import Job

#: FireWorks category of the jobs run on CPU nodes (seeds, generation, oracle, hull).
CPU = "cpu"
#: FireWorks category of the jobs run on GPU nodes (ML filter, training).
GPU = "gpu"
#: The spec key of the campaign tag.
TAG = "flywheel"


def tag_job(
    job: Job, category: str, campaign: str | None = None,
    round_index: int | None = None, stage: str | None = None, *,
    name: str | None = None, tolerate_failed_parents: bool = False,
) -> Job:
    """Give a job its FireWorks category, its campaign tag and (optionally) its name.

    With ``campaign`` the spec gets ``flywheel: {campaign, round, stage}``. With
    ``tolerate_failed_parents`` the job runs even if a parent fizzled, receiving None
    for that parent's output (the hull job: a failed oracle chunk must not block the
    round).
    """
    from jobflow import OnMissing

    manager: dict = {"_category": category}
    if campaign is not None:
        manager[TAG] = {"campaign": campaign, "round": round_index, "stage": stage}
    config: dict = {"manager_config": manager, "pass_manager_config": False}
    if tolerate_failed_parents:
        manager["_allow_fizzled_parents"] = True
        config["on_missing_references"] = OnMissing.NONE
    # dynamic=False and pass_manager_config=False: jobflow would otherwise stamp this
    # job's category and round onto every job it adds at run time (the next round's
    # gpu jobs included).
    job.update_config(config, dynamic=False)
    if name is not None:
        job.name = name
    return job


def fw_tag(fw: dict[str, Any]) -> dict[str, Any] | None:
    """The campaign tag (``campaign``, ``round``, ``stage``) of a firework document,
    None for a firework flywheel did not make."""
    return (fw.get("spec") or {}).get(TAG)


def tag_query(campaign: str | None = None, **fields: Any) -> dict[str, Any]:
    """A LaunchPad ``fireworks`` filter: the fireworks of ``campaign`` (every flywheel
    firework if None), optionally with given tag fields (``stage="recheck select"``)."""
    query: dict[str, Any] = {}
    if campaign is None and not fields:
        query[f"spec.{TAG}"] = {"$exists": True}
    if campaign is not None:
        query[f"spec.{TAG}.campaign"] = campaign
    for key, value in fields.items():
        query[f"spec.{TAG}.{key}"] = value
    return query

"""The generation stage of rounds ≥ 1: every enabled generator, then one admission."""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobflow import Maker, job

from flywheel.makers.common import campaign_db

if TYPE_CHECKING:
    from pymatgen.core import Structure

    from flywheel.config import CampaignConfig
    from flywheel.db.stores import CampaignDB
    from flywheel.makers.generate.composition_model import CompositionRanking
    from flywheel.makers.generate.core import Candidate
    from flywheel.makers.schemas import GenerateOutput

logger = logging.getLogger(__name__)


def known_formula_counts(db: CampaignDB, before_round: int) -> Counter[str]:
    """Count structures per reduced formula from rounds before ``before_round``.

    Results and candidates; earlier rounds only, so a rerun of the job sees the
    same counts.
    """
    counts: Counter[str] = Counter()
    for coll in (db.materials, db.candidates):
        for row in coll.aggregate([
            {"$match": db.q(round={"$lt": before_round})},
            {"$group": {"_id": "$formula", "n": {"$sum": 1}}},
        ]):
            counts[row["_id"]] += row["n"]
    return counts


def tuned_for_novelty(
    candidates: list[Candidate], known: Counter[str], max_known: int
) -> list[Candidate]:
    """Drop outcomes whose formula is already well covered.

    Formulas with ``max_known`` or more known structures are dropped, so the budget
    goes to compositions the campaign has not explored.
    """
    return [c for c in candidates if known[c.formula] < max_known]


def choose_rss_compositions(
    config: CampaignConfig,
    known: Counter[str],
    round_index: int,
    db: CampaignDB | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """Choose this round's random-search compositions and say how.

    Candidates: every composition :func:`enumerate_compositions` admits (relaxed
    oxidation-state rule, 2 to ``chemistry.max_elements`` elements, at most
    ``random_search.max_atoms`` atoms per formula unit) not yet in the database.
    With ``random_search.rank_by_composition_model`` and at least
    ``min_training_materials`` compositions with oracle formation energies in
    ``db``, the ``compositions_per_round`` with the lowest predicted
    decomposition energy
    (:func:`~flywheel.makers.generate.composition_model.rank_compositions`); otherwise a
    seeded random choice.

    Returns
    -------
    (list of str, dict)
        The compositions, and the record of the choice: ``method``
        (``"composition_model"`` or ``"random"``), ``reason``, ``n_candidates``
        and, when ranked, ``n_train``, ``train_seconds``, ``val_mae`` and
        ``chosen``: reduced formula → ``{"rank", "decomposition", "formation"}``
        (predicted, eV/atom; rank 0 = best of all candidates).
    """
    from flywheel.makers.generate.compositions import enumerate_compositions

    rs = config.generate.random_search
    comps = [
        c.formula.replace(" ", "")
        for c in enumerate_compositions(
            config.chemistry.elements,
            max_elements=config.chemistry.max_elements,
            max_atoms=rs.max_atoms,
            min_elements=2,
        )
        if c.reduced_formula not in known
    ]
    n = min(rs.compositions_per_round, len(comps))
    info: dict[str, Any] = {"method": "random", "n_candidates": len(comps)}
    if not rs.rank_by_composition_model:
        info["reason"] = "random_search.rank_by_composition_model is off"
    elif db is None or not comps:
        info["reason"] = "no database" if db is None else "no candidate compositions"
    else:
        ranking, reason = rank_by_composition_model(config, comps, round_index, db)
        info["reason"] = reason
        if ranking is not None:
            from pymatgen.core import Composition

            summary = ranking.summary(top=0)
            info.update(
                method="composition_model", n_train=summary["n_train"],
                train_seconds=summary["train_seconds"], val_mae=summary["val_mae"],
                chosen={
                    Composition(c).reduced_formula: {
                        "rank": k, "decomposition": float(ranking.decomposition[k]),
                        "formation": float(ranking.formation[k])}
                    for k, c in enumerate(ranking.compositions[:n])
                },
            )
            return ranking.compositions[:n], info
    rng = random.Random(config.generate.seed * 7919 + round_index)
    return rng.sample(comps, n), info


def rank_by_composition_model(
    config: CampaignConfig, comps: list[str], round_index: int, db: CampaignDB
) -> tuple[CompositionRanking | None, str]:
    """Rank ``comps`` with a composition model trained on the oracle results.

    Results from rounds before ``round_index`` only (a rerun ranks alike).  The
    ranking is None, logged, when fewer than ``min_training_materials``
    compositions have a formation energy; the string says why or what was done.
    """
    from flywheel.makers.generate.composition_model import (
        formation_energy_data,
        rank_compositions,
    )

    rs = config.generate.random_search
    rows = [(d["formula"], d.get("energy_per_atom"))
            for d in db.materials.find(db.q(round={"$lt": round_index}),
                                       {"formula": 1, "energy_per_atom": 1})]
    names, targets, refs = formation_energy_data(rows)
    if len(names) < rs.min_training_materials:
        reason = (
            f"{len(names)} compositions with formation energies ({len(rows)} "
            f"results, references for {sorted(refs)}) < min_training_materials="
            f"{rs.min_training_materials}: seeded random choice"
        )
        logger.info("rss compositions, round %d: %s", round_index, reason)
        return None, reason
    ranking = rank_compositions(comps, names, targets,
                                seed=config.generate.seed + round_index)
    logger.info("rss compositions, round %d, ranked by composition model: %s",
                round_index, json.dumps(ranking.summary(
                    top=max(5, rs.compositions_per_round))))
    return ranking, f"ranked by a composition model trained on {len(names)}"


def run_generators(
    config: CampaignConfig,
    round_index: int,
    parents: list[tuple[str, Structure]],
    known: Counter[str],
    db: CampaignDB | None = None,
    notes: dict[str, Any] | None = None,
) -> list[Candidate]:
    """Every enabled generator's raw candidates (before checks and deduplication).

    ``db`` gives the random search the oracle results its composition model
    learns from (None: random compositions); ``notes["rss"]`` receives the record
    of its composition choice (:func:`choose_rss_compositions`).
    """
    gen = config.generate
    chem = config.chemistry
    out: list[Candidate] = []
    if gen.substitution.enabled and gen.substitution.budget > 0:
        from flywheel.makers.generate.core import substitution_candidates

        subs = substitution_candidates(
            parents, chem.elements, threshold=gen.substitution.threshold,
            max_elements=chem.max_elements, max_sites=chem.max_sites,
        )
        out += tuned_for_novelty(subs, known, gen.substitution.max_known_per_formula)
    if gen.saps.enabled and gen.saps.budget > 0:
        from flywheel.makers.generate.saps import saps_candidates

        out += saps_candidates(
            parents, None, chem.elements, threshold=gen.saps.threshold,
            max_candidates_per_parent=gen.saps.max_candidates_per_parent,
            max_sites=chem.max_sites, max_elements=chem.max_elements,
        )
    if gen.prototypes.enabled and gen.prototypes.budget > 0 and round_index == 1:
        from flywheel.makers.generate.prototypes import prototype_candidates

        out += prototype_candidates(
            chem.elements, max_elements=chem.max_elements, max_sites=chem.max_sites,
            max_candidates=4 * gen.prototypes.budget, seed=gen.seed,
        )
    rs = gen.random_search
    if rs.enabled and rs.budget > 0:
        from flywheel.makers.generate.rss import random_structures

        comps, info = choose_rss_compositions(config, known, round_index, db)
        if notes is not None:
            notes["rss"] = info
        for i, comp in enumerate(comps):
            out += random_structures(
                comp, n=rs.trials, seed=gen.seed + 1000 * round_index + i,
                max_atoms=min(rs.max_atoms, chem.max_sites),
            )
    return out


@dataclass
class GenerateMaker(Maker):
    """Generate this round's candidates from the campaign's stable materials.

    Parameters
    ----------
    name
        Job name.
    """

    name: str = "generate"

    @job
    def make(
        self, config: CampaignConfig, round_index: int, previous: Any = None
    ) -> GenerateOutput:
        """Run every enabled generator, then check, dedup and store the candidates.

        ``previous`` is the output of the job this one must follow (it orders the
        graph; its value is not used).
        """
        from pymatgen.core import Structure

        from flywheel.makers.generate.admit import admit_candidates

        db = campaign_db(config)
        parents = [
            (doc["material_id"], Structure.from_dict(doc["structure"]))
            for doc in db.materials.find(
                db.q(stable=True), {"material_id": 1, "structure": 1}
            ).sort("material_id", 1)
        ]
        known = known_formula_counts(db, round_index)
        notes: dict[str, Any] = {}
        candidates = run_generators(config, round_index, parents, known, db, notes)
        logger.info("round %d: %d parents → %d raw candidates",
                    round_index, len(parents), len(candidates))
        gen = config.generate
        output = admit_candidates(
            db, round_index, candidates,
            max_sites=config.chemistry.max_sites,
            budget={"substitution": gen.substitution.budget, "saps": gen.saps.budget,
                    "prototype": gen.prototypes.budget,
                    "rss": gen.random_search.budget},
            seed=gen.seed,
        )
        if "rss" in notes:
            record_rss_choice(db, round_index, notes["rss"])
        return output


def record_rss_choice(db: CampaignDB, round_index: int, info: dict[str, Any]) -> None:
    """Store how the random search chose its compositions on its candidates.

    Every ``rss`` candidate of the round gets ``rss_composition``: the method and
    reason, the number of candidate (and training) compositions and, when ranked,
    the composition's rank and predicted decomposition and formation energies.
    """
    common = {k: v for k, v in info.items() if k != "chosen"}
    chosen = info.get("chosen", {})
    for formula in db.candidates.distinct(
        "formula", db.q(round=round_index, generator="rss")
    ):
        db.candidates.update_many(
            db.q(round=round_index, generator="rss", formula=formula),
            {"$set": {"rss_composition": {**common, **chosen.get(formula, {})}}},
        )

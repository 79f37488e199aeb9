"""The generation stage of rounds ≥ 1: every enabled generator, then one admission."""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flywheel.makers.common import campaign_db
from jobflow import Maker, job

if TYPE_CHECKING:
    from flywheel.db.stores import CampaignDB
    from flywheel.makers.generate.core import Candidate
    from flywheel.makers.schemas import GenerateOutput
    from pymatgen.core import Structure

    from flywheel.config import CampaignConfig

logger = logging.getLogger(__name__)


def known_formula_counts(db: CampaignDB, before_round: int) -> Counter[str]:
    """Structures per reduced formula from rounds before ``before_round`` (results and
    candidates); earlier rounds only, so a rerun of the job sees the same counts.
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
    """Drop outcomes whose formula is already well covered (≥ ``max_known`` structures
    known), so the budget goes to compositions the campaign has not explored.
    """
    return [c for c in candidates if known[c.formula] < max_known]


def rss_compositions(
    config: CampaignConfig, known: Counter[str], round_index: int
) -> list[str]:
    """Compositions for random search: admissible (relaxed oxidation-state rule) and
    not yet in the database, a seeded random choice per round.
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
    rng = random.Random(config.generate.seed * 7919 + round_index)
    return rng.sample(comps, min(rs.compositions_per_round, len(comps)))


def run_generators(
    config: CampaignConfig,
    round_index: int,
    parents: list[tuple[str, Structure]],
    known: Counter[str],
) -> list[Candidate]:
    """Every enabled generator's raw candidates (before checks and deduplication)."""
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

        for i, comp in enumerate(rss_compositions(config, known, round_index)):
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
        from flywheel.makers.generate.admit import admit_candidates
        from pymatgen.core import Structure

        db = campaign_db(config)
        parents = [
            (doc["material_id"], Structure.from_dict(doc["structure"]))
            for doc in db.materials.find(
                db.q(stable=True), {"material_id": 1, "structure": 1}
            ).sort("material_id", 1)
        ]
        known = known_formula_counts(db, round_index)
        candidates = run_generators(config, round_index, parents, known)
        logger.info("round %d: %d parents → %d raw candidates",
                    round_index, len(parents), len(candidates))
        gen = config.generate
        return admit_candidates(
            db, round_index, candidates,
            max_sites=config.chemistry.max_sites,
            budget={"substitution": gen.substitution.budget, "saps": gen.saps.budget,
                    "prototype": gen.prototypes.budget,
                    "rss": gen.random_search.budget},
            seed=gen.seed,
        )

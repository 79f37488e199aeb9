"""Layered and Li-ion conductor screens on textbook structures."""

from __future__ import annotations

from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure

from flywheel.makers.screen.core import (
    layered,
    li_conductor,
    li_sublattice_dimensionality,
)

ROOT = Path(__file__).resolve().parents[1]


def graphite() -> Structure:
    return Structure.from_spacegroup("P6_3/mmc", Lattice.hexagonal(2.464, 6.711),
                                     ["C", "C"], [[0, 0, 0.25], [1 / 3, 2 / 3, 0.25]])


def mos2() -> Structure:  # 2H-MoS2
    return Structure.from_spacegroup("P6_3/mmc", Lattice.hexagonal(3.16, 12.29),
                                     ["Mo", "S"], [[1 / 3, 2 / 3, 0.25],
                                                   [1 / 3, 2 / 3, 0.621]])


def rock_salt(a: float = 5.64, cation: str = "Na") -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [cation, "Cl"],
                                     [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.mark.parametrize("structure", [graphite(), mos2()], ids=["graphite", "MoS2"])
def test_layered_structures_are_layered(structure):
    v = layered(structure)
    assert v["layered"] and v["dimensionality_cheon"] == "2D"
    assert v["layered_larsen"] and v["larsen_components"] == {"2D": 2}


@pytest.mark.parametrize("cation", ["Na", "Li"])
def test_rock_salt_is_not_layered(cation):
    v = layered(rock_salt(cation=cation))
    assert not v["layered"] and not v["layered_larsen"]
    assert v["dimensionality_larsen"] == 3


def test_li_conductor_criteria():
    lgps = Structure.from_file(ROOT / "examples" / "structures" / "Li10GeP2S12.cif")
    v = li_conductor(lgps, stable=True)
    assert v["candidate"] and v["li_sublattice_dimensionality"] == 3
    assert v["not_evaluated"] == ["band_gap"]
    assert not li_conductor(lgps, stable=True, band_gap=0.3)["candidate"]
    assert li_conductor(lgps, stable=True, band_gap=3.0)["candidate"]
    assert li_conductor(lgps, stable=False)["failed"] == ["stable"]
    li_metal = Structure(Lattice.cubic(3.44), ["Li", "Li"], [[0, 0, 0], [0.5] * 3])
    assert li_conductor(li_metal, stable=True)["failed"] == ["has_framework"]
    g = li_conductor(graphite(), stable=True)
    assert set(g["failed"]) == {"contains_li", "has_framework", "li_sublattice_connected"}
    licoo2 = Structure.from_spacegroup("R-3m", Lattice.hexagonal(2.82, 14.05),
                                       ["Li", "Co", "O"],
                                       [[0, 0, 0.5], [0, 0, 0], [0, 0, 0.2604]])
    v = li_conductor(licoo2, stable=True)
    assert v["failed"] == ["no_redox_active_tm"] and v["redox_active_tm"] == ["Co"]
    assert v["li_sublattice_dimensionality"] == 2  # Li layers between CoO2 sheets


def test_isolated_li_is_not_a_network():
    s = rock_salt()
    s.make_supercell([2, 2, 2])
    s.replace(0, "Li")  # one Li per 11.3 Å cube: no Li-Li path
    assert li_sublattice_dimensionality(s) == 0
    assert "li_sublattice_connected" in li_conductor(s, stable=True)["failed"]


def test_oxidation_states_do_not_hide_the_li_network():
    s = rock_salt(5.14, "Li")
    assert li_sublattice_dimensionality(s) == 3
    s.add_oxidation_state_by_guess()
    assert li_sublattice_dimensionality(s) == 3

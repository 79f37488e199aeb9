"""Small hand-built test structures shared by the generation tests."""

from __future__ import annotations

from pymatgen.core import Lattice, Structure


# Built by hand: Structure.from_spacegroup costs ~1 s per call here.
def fcc(a: float) -> Lattice:
    return Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])


def rocksalt(a: float = 5.64, species: tuple[str, str] = ("Na", "Cl")) -> Structure:
    return Structure(fcc(a), list(species), [[0, 0, 0], [0.5, 0.5, 0.5]])


def rocksalt_conventional(a: float = 5.64) -> Structure:
    sites = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]
    shifted = [[(x + 0.5) % 1, y, z] for x, y, z in sites]
    return Structure(Lattice.cubic(a), ["Na"] * 4 + ["Cl"] * 4, sites + shifted)


def cscl(a: float = 3.4) -> Structure:
    return Structure(Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def zincblende(a: float = 6.0) -> Structure:
    return Structure(fcc(a), ["Na", "Cl"], [[0, 0, 0], [0.25, 0.25, 0.25]])

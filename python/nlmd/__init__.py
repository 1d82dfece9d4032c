"""nlmd: production molecular dynamics with SevenNet graph-neural-network potentials in LAMMPS."""

__version__ = "0.1.0"

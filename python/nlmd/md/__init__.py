"""The MD driver behind ``nlmd run``: a LAMMPS input run in-process, its final run streamed to H5MD.

One module per job, in the order the data flows (ASE's ``Dynamics`` + observers is the shape)::

    script.py    the input as text: its commands, its final ``run``, the variables it names (no LAMMPS)
    inspect.py   what the input left in LAMMPS when the final run starts, as a plain dataclass (RunSetup)
    sampler.py   the sampling fixes, and the frame assembled from them on rank 0 (AtomOrder: the id
                 order, plain numpy; extensions add experiment observables)
    loop.py      StreamedRun: the small run loop -- set-up, the final run, the per-step callback --
                 and the Observer hooks it calls
    stopping.py  stopping early: the request, its agreement across ranks (in the final run and in the
                 commands before it), SIGINT/SIGTERM
    failures.py  LAMMPS's errors made ours; an error on one of several ranks
    stream.py    TrajectoryStream: the observer that writes frames to the H5MD file
    progress.py  ProgressBar: the observer that draws the progress line
    driver.py    stream_trajectory(): what ``nlmd run`` does around the loop (checks, file, summary)

The fixed-core experiment's rules (groups core/center, ``f_center``) are not here but in
:mod:`nlmd.fixed_core`, beside the :class:`~nlmd.fixed_core.FixedCore` record the file layer stores: the
loop only knows them as a sampler extension.

Why a package rather than flat modules: these nine modules serve one command and import one another
in one direction only (script <- inspect <- sampler <- loop <- stream/progress <- driver; stopping and
failures below them all); as ``nlmd.md.<job>`` their names say both what they are and whose they are,
while ``nlmd/`` keeps one module per product responsibility. Import a name from its module
(``from nlmd.md.driver import stream_trajectory``, ``from nlmd.md.loop import StreamedRun``): this file
imports nothing, since re-exporting here would make every submodule import the package that imports it
back (tests/test_layout.py).
"""

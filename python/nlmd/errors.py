"""The exceptions nlmd raises on purpose.

The CLI turns any :class:`NlmdError` into one line on stderr and exit status 1.
Each message is one sentence that names the file (or object), the field and what was expected.
"""


class NlmdError(Exception):
    """Base class: an error nlmd detected and can explain in one sentence."""


class InputError(NlmdError):
    """Raised when a file, option or argument given by the user is missing, malformed or inconsistent."""


class ModelError(NlmdError):
    """Raised when a model or potential directory cannot be loaded, deployed or verified."""


class SimulationError(NlmdError):
    """Raised when LAMMPS (or the plugin inside it) reports an error while setting up or running."""


class DataMismatchError(NlmdError):
    """Raised when two trajectory files that must describe the same frames do not (ids, species, positions, units)."""


class DiskFullError(NlmdError):
    """Raised when the file system of an output file has no room left for it (the next block of frames, or
    the file itself): the file keeps every frame written before, and the message says how many."""


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process gets SIGTERM (the CLI installs the handler), so that the
    clean-up that Ctrl-C gets (temporary files and directories removed) runs too; exit status 143."""

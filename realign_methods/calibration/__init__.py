"""The calibration stage: statistics of a model on data that a method declares in its ``MethodInfo``.

A method sets ``MethodInfo(calibration=CalibrationSpec(...))``; the merge engine then runs
:func:`calibrate` once before ``prepare`` (cached by content under ``cache_dir()/calibration``)
and hands the :class:`Statistics` to the method as ``PrepareContext.calibration``.
"""

from realign_methods.calibration._data import DATA_KINDS, DEFAULT_SETS, Example, load_examples, resolve_data
from realign_methods.calibration._run import Statistics, calibrate, calibration_key
from realign_methods.calibration._spec import STATISTICS, CalibrationSpec

__all__ = [
    "DATA_KINDS",
    "DEFAULT_SETS",
    "STATISTICS",
    "CalibrationSpec",
    "Example",
    "Statistics",
    "calibrate",
    "calibration_key",
    "load_examples",
    "resolve_data",
]

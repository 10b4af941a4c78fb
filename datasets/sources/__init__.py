"""Readers for the source formats, each yielding :class:`~.base.Unit` records.

==========  =========================================================  =========================
format      files                                                      reader
==========  =========================================================  =========================
pubchemqcr  ``*.lmdb`` (gzip-compressed pickled dicts per CID)         :class:`PubChemQCRSource`
oc20        ``*.extxyz[.xz]`` + ``.txt[.xz]``, or ``*.lmdb`` of Data   :class:`OC20Source`
oc22        ``*.lmdb`` of pickled Data, total energies                 :class:`OC22Source`
extxyz      ``*.xyz``/``*.extxyz[.xz|.gz|.bz2]``, or any ASE format    :class:`ExtxyzSource`
asedb       ASE databases ``*.db``/``*.json``, ASE-LMDB ``*.aselmdb``  :class:`AseDBSource`
==========  =========================================================  =========================
"""

from .asedb import AseDBSource
from .base import Source, SourceOptions, Unit
from .extxyz import ExtxyzSource
from .oc20 import OC20Source, OC22Source
from .pubchemqcr import PubChemQCRSource

SOURCES: dict[str, type[Source]] = {
    "pubchemqcr": PubChemQCRSource,
    "oc20": OC20Source,
    "oc22": OC22Source,
    "extxyz": ExtxyzSource,
    "asedb": AseDBSource,
}

__all__ = ["SOURCES", "Source", "SourceOptions", "Unit", "PubChemQCRSource", "OC20Source",
           "OC22Source", "ExtxyzSource", "AseDBSource"]

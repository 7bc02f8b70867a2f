"""Scaling profiles: ``hpcdiff profile train | comm | sample``.

Pure arithmetic (:mod:`~hpcdiff.profile.metrics`, :mod:`~hpcdiff.profile.commfit`,
:mod:`~hpcdiff.profile.projection`) imports numpy at most; what runs inside a job
(:mod:`~hpcdiff.profile.instrument`, :mod:`~hpcdiff.profile.commbench`) imports torch; the drivers
(:mod:`~hpcdiff.profile.runner`, :mod:`~hpcdiff.profile.sampling`) submit through
:mod:`hpcdiff.launch` exactly as ``hpcdiff submit`` does, and :mod:`~hpcdiff.profile.report` writes
``PROFILE/``.
"""

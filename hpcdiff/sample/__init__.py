"""Ensemble sampling: the job config (``job``), date selection (``dates``), conditions of single dates
(``conditions``), a trained run as sampling needs it (``run``), the sampling loop (``ensemble``), part
files (``parts``) and the merge into one CF NetCDF (``merge``)."""

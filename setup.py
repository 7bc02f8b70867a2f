from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="hpcdiff",
    version="0.1.0",
    description="Generative statistical downscaling of climate fields with conditional diffusion, on HPC",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["hpcdiff", "hpcdiff.*"]),
    # the demo's jobs and recipe (jobs/demo_*.yaml and preprocess/synthetic.yaml link to them)
    package_data={"hpcdiff": ["defaults/*.yaml", "profile/interconnects/*.yaml"]},
    # torch is not pinned: on a cluster the site's CUDA build is used as it is. Install it before this
    # package (tools/setup_env.sh does), or pip may resolve a different build.
    install_requires=[
        "torch>=2.1",
        "numpy>=1.24",
        "scipy>=1.10",
        "xarray>=2023.1",
        "netCDF4>=1.6",
        "h5netcdf>=1.1",
        "h5py>=3.8",
        "hdf5plugin>=4.1",
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "global-land-mask>=1.0",
        "pandas>=2.0",
        "matplotlib>=3.7",
        "submitit>=1.5",
        "tensorboard>=2.12",
        # real inputs: GRIB through cfgrib on ecCodes' PyPI wheels, DANRA as Zarr, units through pint
        "cfgrib>=0.9.14",
        "eccodes>=2.37",
        "zarr>=2.18",
        "pint>=0.23",
        "cf-xarray>=0.9",  # pint's registry with CF unit spellings
        "pyproj>=3.4",  # rotated-pole (CORDEX) coordinates
        # the field's verification and indices
        "xsdba>=0.5",
        "scores>=2.0",
        "xclim>=0.55",
    ],
    extras_require={
        "mpi": ["mpi4py>=3.1", "mpich"],
        "deepspeed": ["deepspeed>=0.14"],
        # trace analysis for hpcdiff profile (it brings jupyterlab, hence optional)
        "profile": ["HolisticTraceAnalysis>=0.5"],
        "test": ["pytest>=7", "pytest-timeout>=2", "ruff>=0.5", "compliance-checker>=5.1"],
    },
    entry_points={"console_scripts": ["hpcdiff = hpcdiff.cli:main"]},
)

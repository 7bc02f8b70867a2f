"""Lambert conformal conic projection on a sphere (Snyder 1987, eqs. 15-1 to 15-5, 14-4) and the
regular projected grids built on it.

The DANRA-like target grid is regular in projection coordinates ``x``/``y`` (m) and curvilinear in
``lat``/``lon``. One or two standard parallels (equal values give the tangent cone); spherical earth
of radius ``earth_radius_m`` (default 6 371 229 m, HARMONIE's; DANRA's own grid mapping, the synthetic
``danra`` preset's, says 6 367 470 m and central meridian 25 E). Longitudes come back in [-180, 180).
"""

from __future__ import annotations

import dataclasses

import numpy as np

EARTH_RADIUS_M = 6_371_229.0


def _t(lat_rad: np.ndarray) -> np.ndarray:
    return np.tan(np.pi / 4 + lat_rad / 2)


@dataclasses.dataclass(frozen=True)
class LambertConformal:
    """A spherical Lambert conformal conic projection; angles in degrees."""

    standard_parallels: tuple[float, float] = (56.7, 56.7)
    central_meridian: float = 8.0
    origin_lat: float = 56.7
    earth_radius_m: float = EARTH_RADIUS_M

    @property
    def cone(self) -> float:
        """The cone constant ``n`` (dimensionless)."""
        p1, p2 = np.deg2rad(self.standard_parallels)
        if np.isclose(p1, p2):
            return float(np.sin(p1))
        return float(np.log(np.cos(p1) / np.cos(p2)) / np.log(_t(p2) / _t(p1)))

    def _rf(self) -> float:
        """``R * F`` of Snyder's eq. 15-2 (m)."""
        n = self.cone
        p1 = np.deg2rad(self.standard_parallels[0])
        return float(self.earth_radius_m * np.cos(p1) * _t(p1) ** n / n)

    def _rho0(self) -> float:
        return self._rf() / _t(np.deg2rad(self.origin_lat)) ** self.cone

    def forward(self, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Degrees ``lat``/``lon`` (any equal shapes) → projection ``x``, ``y`` (m), same shape."""
        n = self.cone
        rho = self._rf() / _t(np.deg2rad(np.asarray(lat, np.float64))) ** n
        dlon = (np.asarray(lon, np.float64) - self.central_meridian + 180.0) % 360.0 - 180.0
        theta = n * np.deg2rad(dlon)
        return rho * np.sin(theta), self._rho0() - rho * np.cos(theta)

    def inverse(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Projection ``x``, ``y`` (m, equal shapes) → ``lat``, ``lon`` (degrees, lon in [-180, 180))."""
        n = self.cone
        sign = np.sign(n)
        dx = np.asarray(x, np.float64)
        dy = self._rho0() - np.asarray(y, np.float64)
        rho = sign * np.hypot(dx, dy)
        theta = np.arctan2(sign * dx, sign * dy)
        lat = np.rad2deg(2 * np.arctan((self._rf() / rho) ** (1 / n)) - np.pi / 2)
        lon = self.central_meridian + np.rad2deg(theta / n)
        return lat, (lon + 180.0) % 360.0 - 180.0

    def cf_attributes(self) -> dict:
        """The CF grid-mapping attributes (for a ``lambert_conformal_conic`` variable)."""
        return {"grid_mapping_name": "lambert_conformal_conic",
                "standard_parallel": [float(p) for p in self.standard_parallels],
                "longitude_of_central_meridian": float(self.central_meridian),
                "latitude_of_projection_origin": float(self.origin_lat),
                "false_easting": 0.0, "false_northing": 0.0,
                "earth_radius": float(self.earth_radius_m)}

    @classmethod
    def from_cf(cls, attrs: dict) -> LambertConformal:
        """Inverse of :meth:`cf_attributes` (a scalar ``standard_parallel`` means the tangent cone)."""
        parallels = np.atleast_1d(np.asarray(attrs["standard_parallel"], np.float64))
        return cls(standard_parallels=(float(parallels[0]), float(parallels[-1])),
                   central_meridian=float(attrs["longitude_of_central_meridian"]),
                   origin_lat=float(attrs["latitude_of_projection_origin"]),
                   earth_radius_m=float(attrs.get("earth_radius", EARTH_RADIUS_M)))


@dataclasses.dataclass(frozen=True)
class ProjectedGrid:
    """A regular grid in projection coordinates: ``x`` ``[W]``, ``y`` ``[H]`` (m, increasing), cell
    centres; ``lat``/``lon`` ``[H, W]`` in degrees follow from the projection."""

    projection: LambertConformal
    x: np.ndarray
    y: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return (self.y.size, self.x.size)

    @property
    def dx_m(self) -> float:
        return float(self.x[1] - self.x[0])

    def latlon(self) -> tuple[np.ndarray, np.ndarray]:
        """``lat``, ``lon`` ``[H, W]`` (degrees) of the cell centres."""
        xx, yy = np.meshgrid(self.x, self.y)
        return self.projection.inverse(xx, yy)


def centred_grid(projection: LambertConformal, *, centre_lat: float, centre_lon: float,
                 shape: tuple[int, int], dx_m: float) -> ProjectedGrid:
    """A ``shape`` = ``(H, W)`` grid of spacing ``dx_m`` whose centre is the point (``centre_lat``,
    ``centre_lon``) rounded so that every coordinate is a multiple of ``dx_m`` (within ``dx_m / 2``
    of the requested centre)."""
    height, width = shape
    xc, yc = projection.forward(np.array(centre_lat), np.array(centre_lon))
    x0 = np.round(float(xc) / dx_m - (width - 1) / 2)
    y0 = np.round(float(yc) / dx_m - (height - 1) / 2)
    return ProjectedGrid(projection=projection, x=(x0 + np.arange(width)) * dx_m,
                         y=(y0 + np.arange(height)) * dx_m)

"""Street-level photos: facade parsing and per-building street attributes from camera geometry.

Height, floors, facade width and window-to-wall ratio are measured against the footprints (see ``geometry``
for the method).
"""

from bldgseg.street.aggregate import aggregate_observations, join_street
from bldgseg.street.cameras import Camera
from bldgseg.street.exif import exif_pose
from bldgseg.street.geometry import ClassRoles, FacadeObservation, measure_photo
from bldgseg.street.job import StreetConfig, StreetResult, run_street
from bldgseg.street.parsing import FacadeParser
from bldgseg.street.poses import CameraPose, read_pose_table, resolve_pose
from bldgseg.street.walls import Footprints

__all__ = [
    "Camera",
    "CameraPose",
    "ClassRoles",
    "FacadeObservation",
    "FacadeParser",
    "Footprints",
    "StreetConfig",
    "StreetResult",
    "aggregate_observations",
    "exif_pose",
    "join_street",
    "measure_photo",
    "read_pose_table",
    "resolve_pose",
    "run_street",
]

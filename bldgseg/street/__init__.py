"""Street-level photos: facade parsing, and building height, floors, facade width and window-to-wall ratio
from camera geometry against the footprints (see ``geometry`` for the method)."""

from bldgseg.street.aggregate import aggregate_observations, join_street
from bldgseg.street.cameras import Camera, CameraPose, exif_pose, read_pose_table, resolve_pose
from bldgseg.street.geometry import ClassRoles, FacadeObservation, Footprints, measure_photo
from bldgseg.street.job import StreetConfig, StreetResult, run_street
from bldgseg.street.parsing import FacadeParser

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

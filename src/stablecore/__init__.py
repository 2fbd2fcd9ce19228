"""stable-core: a server for AI art and media synthesis. What a plugin author imports."""

from pydantic import Field

from stablecore.context import Context
from stablecore.errors import JobCancelled
from stablecore.media import Audio, Image, Mask, Numbers, Text, Video
from stablecore.modelfiles import ModelFile, models_folder
from stablecore.spec import job

__version__ = "0.1.0"
__all__ = ["Audio", "Context", "Field", "Image", "JobCancelled", "Mask", "ModelFile", "Numbers",
           "Text", "Video", "__version__", "job", "models_folder"]

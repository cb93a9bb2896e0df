"""Import the published ARAS400k release (folders of PNGs, or its zips) into shard sets.

The release layout (``ROOT/{train,val,test,synth}/{images,masks}/*.png``, optional
``class_percentages/`` and ``captions/`` CSVs) and the zips' MD5 table are in
``docs/preparing-data.md``. Each split folder becomes the shard set ``OUT/{split}``.
The import is loud, never lossy: every file that cannot be imported (an image without
a mask, a mask without an image, a size mismatch, an unknown mask colour, a corrupt
PNG, two names giving one key) is a *problem* named with its file. With
``on_error="fail"`` the first one stops the import before anything is written; with
``"skip"`` the file is skipped and listed in the :class:`ImportReport`. Warnings (a CSV
row for a missing file, a CSV composition that disagrees with the mask) skip nothing.

The modules, in the order an import uses them: ``importer`` (:func:`import_release`:
checks the arguments, writes the shard sets), ``zips`` (MD5 check, zips read in place),
``layout`` (split folders, image-mask pairs and keys), ``tables`` (percentage and
caption CSVs), ``pictures`` (images, and masks as class indices) and ``problems``.
"""

from aras400k.data.release.importer import ImportReport, import_release
from aras400k.data.release.problems import ReleaseImportError
from aras400k.data.release.zips import RELEASE_MD5, md5_of_file

__all__ = ["RELEASE_MD5", "ImportReport", "ReleaseImportError", "import_release", "md5_of_file"]

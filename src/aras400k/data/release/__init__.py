"""Import the published ARAS400k release (folders of PNGs, or its zips) into shard sets.

The release layout (``ROOT/{train,val,test,synth}/{images,masks}/*.png``, optional
``class_percentages/`` and ``captions/`` CSVs), the zips' MD5 table and the *problems*
(files that cannot be imported: ``on_error`` fails or skips them) are in
``docs/preparing-data.md``. Each split folder becomes the shard set ``OUT/{split}``.

The modules, in the order an import uses them: ``importer``, ``zips``, ``layout``,
``tables``, ``pictures`` and ``problems``.
"""

from aras400k.data.release.importer import ImportReport, import_release
from aras400k.data.release.problems import ReleaseImportError
from aras400k.data.release.zips import RELEASE_MD5, md5_of_file

__all__ = ["RELEASE_MD5", "ImportReport", "ReleaseImportError", "import_release", "md5_of_file"]
